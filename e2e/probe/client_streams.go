package probe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// streamSum is the sha256 of the first size bytes of a seeded stream.
func streamSum(seed [32]byte, size int64) []byte {
	h := sha256.New()
	io.CopyN(h, rand.NewChaCha8(seed), size)
	return h.Sum(nil)
}

// bulk sends BulkBytes while receiving as many, then the server's digest of
// what it received, then EOF.
func (c *Client) bulk(ctx context.Context) Result {
	conn, err := c.dial(ctx, c.Ports.Bulk)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	size := c.BulkBytes
	conn.SetWriteDeadline(time.Now().Add(2 * time.Minute))
	if err := binary.Write(conn, binary.BigEndian, size); err != nil {
		return failed("write", err)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := io.CopyN(conn, rand.NewChaCha8(clientSeed), size)
		if err == nil {
			err = conn.CloseWrite()
		}
		sent <- err
	}()
	wantDown, wantUp := streamSum(serverSeed, size), streamSum(clientSeed, size)
	h := sha256.New()
	if n, err := io.CopyN(h, idleReader{conn}, size); err != nil {
		conn.Close()
		// A socket reports a reset to one call only: if the sender met
		// it, the receiver sees EOF after it.
		if serr := <-sent; Classify(err) == "eof" && serr != nil && !errors.Is(serr, net.ErrClosed) {
			err = fmt.Errorf("%w (then reading: %v)", serr, err)
		}
		return failed(fmt.Sprintf("receiving (%d of %d bytes)", n, size), err)
	}
	if err := <-sent; err != nil {
		return failed("sending", err)
	}
	got, err := readToEOF(conn)
	r := replied(got, err, func(digest []byte) error {
		switch {
		case !bytes.Equal(h.Sum(nil), wantDown):
			return fmt.Errorf("server->client bytes differ")
		case !bytes.Equal(digest, wantUp):
			return fmt.Errorf("client->server bytes differ (server's digest %x)", digest)
		}
		return nil
	})
	if r.Outcome == OK {
		r.Detail = fmt.Sprintf("%d MiB each way, both sha256 equal, then EOF", size>>20)
	}
	return r
}

// concurrent opens Conns connections, each echoing one line, and holds
// them all open until the last one echoed.
func (c *Client) concurrent(ctx context.Context) Result {
	n := c.Conns
	errs := make([]error, n)
	conns := make([]net.Conn, n)
	dialing := make(chan struct{}, 100) // at most 100 connections opening at once
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			dialing <- struct{}{}
			defer func() { <-dialing }()
			conn, err := c.dial(ctx, c.Ports.Echo)
			if err == nil {
				err = echoOnce(conn)
			}
			conns[i], errs[i] = conn, err
		})
	}
	wg.Wait()
	ok, first := 0, error(nil)
	for i, err := range errs {
		if err == nil {
			ok++
			conns[i].Close()
		} else if first == nil {
			first = err
		}
	}
	detail := fmt.Sprintf("%d of %d connections open at once, each echoed", ok, n)
	if first != nil {
		class := Classify(first)
		return Result{Outcome: "not all echoed: " + class, Class: class, Detail: fmt.Sprintf("%s; first failure: %v", detail, first)}
	}
	return Result{Outcome: OK, Detail: detail}
}

// echoOnce sends a line on conn and wants it back within hangTimeout
// (closing conn if not).
func echoOnce(conn net.Conn) error {
	buf := make([]byte, 5)
	conn.SetDeadline(time.Now().Add(hangTimeout))
	_, err := conn.Write([]byte("ping\n"))
	if err == nil {
		_, err = io.ReadFull(conn, buf)
	}
	if err == nil && string(buf) != "ping\n" {
		err = fmt.Errorf("echo %q", buf)
	}
	if err != nil {
		conn.Close()
	}
	return err
}
