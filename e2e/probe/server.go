package probe

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is the probe's server side.
type Server struct {
	ports Ports
	lns   []net.Listener
	http  *http.Server
	log   *slog.Logger

	mu sync.Mutex
	// seen is what the server observed on connections that cannot report
	// it back themselves (a reset, or after its own FIN), by the client's
	// id; clients ask for it at /seen.
	seen map[string]Result
	acks map[string]chan struct{} // SSE acknowledgements, by stream id
}

// Listen opens the server's listeners on host (a port 0 picks a free one;
// Ports tells which). Serve starts serving them. log may be nil.
func Listen(host string, p Ports, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: log, seen: map[string]Result{}, acks: map[string]chan struct{}{}}
	for _, port := range p.listening() {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(*port)))
		if err != nil {
			s.Close()
			return nil, err
		}
		*port = ln.Addr().(*net.TCPAddr).Port
		s.lns = append(s.lns, ln)
	}
	s.ports = p
	return s, nil
}

// Ports are the ports the server listens on.
func (s *Server) Ports() Ports { return s.ports }

// Serve serves every listener until Close.
func (s *Server) Serve() {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s.http = &http.Server{Handler: s.handler(), Protocols: protocols, ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(s.lns[0])
	for i, handle := range []func(*net.TCPConn){s.halfClose, s.banner, s.serverReset, s.clientReset, s.bulk, s.echo, s.serverHalfClose} {
		go s.accept(s.lns[i+1], handle)
	}
}

// Close stops the listeners.
func (s *Server) Close() {
	for _, ln := range s.lns {
		ln.Close()
	}
}

func (s *Server) accept(ln net.Listener, handle func(*net.TCPConn)) {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors under the concurrent load: wait
			// for connections to close, as net/http's server does.
			s.log.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			handle(c.(*net.TCPConn))
		}()
	}
}

// halfClose reads to EOF, then replies with the byte count and sha256.
func (s *Server) halfClose(c *net.TCPConn) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		s.log.Info("half-close: read", "err", err)
		return
	}
	fmt.Fprintf(c, "%d %x\n", n, h.Sum(nil))
}

// banner is a server-first protocol: it writes and closes at once.
func (s *Server) banner(c *net.TCPConn) {
	io.WriteString(c, bannerText)
}

const bannerText = "weft-probe banner\n"

// serverReset says ready, waits for one byte and resets the connection.
func (s *Server) serverReset(c *net.TCPConn) {
	io.WriteString(c, "ready\n")
	if _, err := c.Read(make([]byte, 1)); err != nil {
		s.log.Info("server-reset: read", "err", err)
	}
	c.SetLinger(0)
}

// clientReset reads the client's id, says ready and records how the
// client's reset arrived (the client asks for it at /seen).
func (s *Server) clientReset(c *net.TCPConn) {
	id, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	io.WriteString(c, "ready\n")
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil {
		err = fmt.Errorf("the client sent data instead of a reset")
	}
	s.record(id, Result{Class: Classify(err), Detail: err.Error(), Millis: ms(time.Since(start))})
}

// record keeps what the server saw on the connection of id (a line read
// from the client, newline included).
func (s *Server) record(id string, r Result) {
	s.mu.Lock()
	s.seen[strings.TrimSuffix(id, "\n")] = r
	s.mu.Unlock()
}

// serverHalfClose reads the client's id, writes a greeting and half-closes
// (FIN), then reads what the client still sends to EOF and records its
// size and sha256: a server-first half-close, where the client's direction
// must stay open after the server's FIN.
func (s *Server) serverHalfClose(c *net.TCPConn) {
	r := bufio.NewReader(c)
	id, err := r.ReadString('\n')
	if err != nil {
		return
	}
	if _, err := io.WriteString(c, greetingText); err != nil {
		return
	}
	if err := c.CloseWrite(); err != nil {
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		s.record(id, Result{Class: Classify(err), Detail: fmt.Sprintf("after %d bytes: %v", n, err)})
		return
	}
	s.record(id, Result{Detail: fmt.Sprintf("%d %x", n, h.Sum(nil))})
}

const greetingText = "weft-probe greeting, then FIN\n"

// bulk reads the stream's size, then at once sends that many bytes of its
// own stream and hashes what it receives; after the client's EOF it sends
// the received bytes' sha256 and closes.
func (s *Server) bulk(c *net.TCPConn) {
	var size int64
	if err := binary.Read(c, binary.BigEndian, &size); err != nil {
		return
	}
	sent := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, rand.NewChaCha8(serverSeed), size)
		sent <- err
	}()
	h := sha256.New()
	_, rerr := io.Copy(h, c)
	if err := <-sent; err != nil || rerr != nil {
		s.log.Info("bulk", "write", err, "read", rerr)
		return
	}
	c.Write(h.Sum(nil))
}

// Seeds of the bulk streams: both sides can compute what the other sends.
var (
	serverSeed = [32]byte{'s', 'e', 'r', 'v', 'e', 'r'}
	clientSeed = [32]byte{'c', 'l', 'i', 'e', 'n', 't'}
)

// echo echoes with a buffer of its own: io.Copy(c, c) would splice through
// a pipe, two more descriptors per connection, which caps the concurrent
// behaviour at a third of the process's descriptor limit. Its deadline is
// longer than the idle behaviour's silence.
func (s *Server) echo(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(echoDeadline))
	io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 4096))
}

// echoDeadline bounds an echo connection's life; see Full.Idle.
const echoDeadline = 30 * time.Minute

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
