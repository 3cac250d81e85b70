package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy is returned when MaxInFlight forwards are already waiting.
var ErrBusy = errors.New("dns: too many forwards in flight")

// Upstream forwards queries over the node's network, from sockets with the
// agent's skip mark so that the capture programs never steer them back.
type Upstream struct {
	// Mark is the SO_MARK of upstream sockets (the agent's skip mark).
	Mark int
	// Timeout of one forward, default 5 s (a resolver's own retry is
	// usually sooner).
	Timeout time.Duration
	// sem bounds forwards in flight: a flood of queries for unknown names
	// costs bounded sockets and goroutines.
	sem chan struct{}
}

// NewUpstream returns an Upstream with at most maxInFlight forwards at once.
func NewUpstream(mark, maxInFlight int) *Upstream {
	return &Upstream{Mark: mark, Timeout: 5 * time.Second, sem: make(chan struct{}, maxInFlight)}
}

// Forward sends query to server and returns the first answer with the
// query's id (over UDP, other datagrams are ignored).
func (u *Upstream) Forward(ctx context.Context, server netip.AddrPort, tcp bool, query []byte) ([]byte, error) {
	select {
	case u.sem <- struct{}{}:
		defer func() { <-u.sem }()
	default:
		return nil, ErrBusy
	}
	ctx, cancel := context.WithTimeout(ctx, u.Timeout)
	defer cancel()
	network := "udp"
	if tcp {
		network = "tcp"
	}
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, u.Mark) }); err != nil {
			return err
		}
		return serr
	}}
	if u.Mark == 0 {
		d.Control = nil
	}
	conn, err := d.DialContext(ctx, network, server.String())
	if err != nil {
		return nil, fmt.Errorf("dns: dial %s %s: %w", network, server, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if tcp {
		return exchangeTCP(conn, query)
	}
	return exchangeUDP(conn, query)
}

func exchangeUDP(conn net.Conn, query []byte) ([]byte, error) {
	if _, err := conn.Write(query); err != nil {
		return nil, err
	}
	id := binary.BigEndian.Uint16(query)
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		if validAnswer(buf[:n], id) {
			return buf[:n:n], nil
		}
	}
}

func exchangeTCP(conn net.Conn, query []byte) ([]byte, error) {
	if err := writeTCPMessage(conn, query); err != nil {
		return nil, err
	}
	return readTCPMessage(conn, 65535)
}

// writeTCPMessage writes one length-prefixed DNS message (RFC 1035 4.2.2).
func writeTCPMessage(w io.Writer, msg []byte) error {
	if len(msg) > 65535 {
		return errors.New("dns: message too long")
	}
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[2:], msg)
	_, err := w.Write(b)
	return err
}

// errTooLong: a TCP message over the limit; the connection is closed.
var errTooLong = errors.New("dns: message over the size limit")

// readTCPMessage reads one length-prefixed message of at most limit bytes.
func readTCPMessage(r io.Reader, limit int) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n > limit {
		return nil, errTooLong
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}
