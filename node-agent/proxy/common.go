package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sys/unix"

	weftmesh "github.com/weft-mesh/weft/pkg/mesh" // the tests have a type mesh
)

// Ports of the node agent, the same numbers as Istio's
// (docs/reference/ports.md).
const (
	TunnelPort         = weftmesh.HBONEPort
	DefaultPassthrough = weftmesh.MarkSkip // SO_MARK on passthrough sockets: capture skips them
	defaultDialTimeout = 10 * time.Second
)

// Identities is what the proxy needs from identity.Manager (which implements
// it): a certificate source per local workload identity and the trust
// bundles.
type Identities interface {
	Source(id spiffeid.ID) x509svid.Source
	Bundles() x509bundle.Source
}

// TransparentSocket is a proxy listener's socket: bound, with IP_TRANSPARENT
// set (accept() of a connection steered by the capture programs sees the
// original destination as the local address) and the agent's mark, but
// not yet listening. Bound first, listening later: the port is the agent's
// from the start, so the capture can point at it (and drop SYNs while it
// does not listen: fail closed) before the configuration is synced.
//
// It has no SO_REUSEPORT, on purpose: the capture looks the listener up by
// address, and a port shared by a reuseport group hands captured
// connections to any member, such as a root hostNetwork process that binds
// the port with SO_REUSEPORT too. Without it nothing else can bind the
// address while the agent holds it, so a successor agent (rolling upgrade
// with surge) binds another port and points the capture there once ready.
type TransparentSocket struct {
	fd   int
	Port uint16 // the bound port
}

// BindTransparent binds a TransparentSocket to 127.0.0.1:port (0: an
// ephemeral port). An address in use fails with an error that wraps
// unix.EADDRINUSE. marked sets the agent's mark, which every listener needs
// but the one for DNATed connections (bpf.NATSteering): those stay in
// conntrack, which must see the answers to undo the DNAT on them.
func BindTransparent(port uint16, marked bool) (*TransparentSocket, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("proxy: socket: %w", err)
	}
	s := &TransparentSocket{fd: fd}
	if err := s.bind(port, marked); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

func (s *TransparentSocket) bind(port uint16, marked bool) error {
	if err := unix.SetsockoptInt(s.fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1); err != nil {
		return fmt.Errorf("proxy: IP_TRANSPARENT (needs CAP_NET_ADMIN): %w", err)
	}
	// Accepted sockets inherit the agent's mark: they answer from the
	// original destination (not the node's address), so the notrack table
	// (bpf.Notrack) keeps their packets out of conntrack, as the captured
	// packets they answer are. Not so the DNATed ones (see BindTransparent).
	if marked {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_MARK, DefaultPassthrough); err != nil {
			return fmt.Errorf("proxy: SO_MARK (needs CAP_NET_ADMIN): %w", err)
		}
	}
	if err := unix.Bind(s.fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fmt.Errorf("proxy: bind 127.0.0.1:%d: %w", port, err)
	}
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return fmt.Errorf("proxy: getsockname: %w", err)
	}
	s.Port = uint16(sa.(*unix.SockaddrInet4).Port)
	return nil
}

// Listen starts listening (the kernel caps the backlog at somaxconn) and
// hands the socket to a net.Listener; s is spent either way.
func (s *TransparentSocket) Listen() (net.Listener, error) {
	defer s.Close()
	if err := unix.Listen(s.fd, 1<<16-1); err != nil {
		return nil, fmt.Errorf("proxy: listen on 127.0.0.1:%d: %w", s.Port, err)
	}
	f := os.NewFile(uintptr(s.fd), fmt.Sprintf("proxy listener 127.0.0.1:%d", s.Port))
	s.fd = -1
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("proxy: listener on 127.0.0.1:%d: %w", s.Port, err)
	}
	return ln, nil
}

// Close releases the socket unless Listen took it.
func (s *TransparentSocket) Close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

func setSockopt(c syscall.RawConn, f func(fd int) error) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = f(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// addrPort converts a TCP address to netip form (IPv4-mapped unmapped).
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// LocalAddrOriginalDst is the default OriginalDst: on a transparent listener
// the accepted connection's local address is the original destination.
func LocalAddrOriginalDst(c net.Conn) netip.AddrPort { return addrPort(c.LocalAddr()) }

// dialMarked dials addr with SO_MARK mark (0 = no mark).
func dialMarked(ctx context.Context, addr netip.AddrPort, mark int, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: timeout}
	if mark != 0 {
		d.Control = func(network, address string, c syscall.RawConn) error {
			return setSockopt(c, func(fd int) error {
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, mark); err != nil {
					return fmt.Errorf("SO_MARK %#x (needs CAP_NET_ADMIN): %w", mark, err)
				}
				return nil
			})
		}
	}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialFrom dials dst from a socket bound to src (port 0) with IP_TRANSPARENT
// and IP_FREEBIND, keeping the client's source IP. When that fails (no
// CAP_NET_ADMIN, source not routable here) it falls back to an ordinary
// dial; spoofed reports whether the source IP was kept. A pod reaching
// itself (a Service that picked the client's own pod) is dialed the
// ordinary way at once: the pod's kernel drops a packet from its own
// address arriving on its interface (a martian source), so the connection
// comes from the node, as kube-proxy's hairpin masquerade makes it.
func dialFrom(ctx context.Context, log *slog.Logger, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (c *net.TCPConn, spoofed bool, err error) {
	if src.IsValid() && src != dst.Addr() && src.Is4() == dst.Addr().Is4() {
		d := net.Dialer{
			Timeout:   timeout,
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
			Control: func(network, address string, rc syscall.RawConn) error {
				return setSockopt(rc, func(fd int) error {
					lvl, tr, fb := unix.SOL_IP, unix.IP_TRANSPARENT, unix.IP_FREEBIND
					if src.Is6() {
						lvl, tr, fb = unix.SOL_IPV6, unix.IPV6_TRANSPARENT, unix.IPV6_FREEBIND
					}
					if err := unix.SetsockoptInt(fd, lvl, tr, 1); err != nil {
						return fmt.Errorf("IP_TRANSPARENT: %w", err)
					}
					if err := unix.SetsockoptInt(fd, lvl, fb, 1); err != nil {
						return err
					}
					// The agent's own mark: with a source that is not the
					// node's, the notrack table (bpf.Notrack) keeps the
					// delivery out of conntrack, whose replies are captured.
					return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, DefaultPassthrough)
				})
			},
		}
		nc, derr := d.DialContext(ctx, "tcp", dst.String())
		if derr == nil {
			return nc.(*net.TCPConn), true, nil
		}
		if ctx.Err() != nil {
			return nil, false, derr
		}
		if errors.Is(derr, syscall.ECONNREFUSED) {
			return nil, false, derr // the destination itself refused: no point retrying
		}
		log.Debug("source-preserving dial failed, falling back to an ordinary dial", "src", src, "dst", dst, "err", derr)
	}
	nc, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, false, err
	}
	return nc.(*net.TCPConn), false, nil
}

// reset closes c with an RST, the TCP way of saying "refused".
func reset(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// connSet tracks live connections and listeners so Close can end them.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	lns    map[net.Listener]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (s *connSet) addListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.lns == nil {
		s.lns = map[net.Listener]struct{}{}
	}
	s.lns[ln] = struct{}{}
	return true
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *connSet) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *connSet) close() {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// drain stops accepting and waits for the open connections to end; when
// ctx ends first, the rest are closed and ctx's error returned.
func (s *connSet) drain(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.close()
		return ctx.Err()
	}
}

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("proxy: closed")

// serve accepts on ln and runs handle per connection until closed.
func (s *connSet) serve(ln net.Listener, log *slog.Logger, handle func(net.Conn)) error {
	if !s.addListener(ln) {
		ln.Close()
		return ErrClosed
	}
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("accept failed, retrying", "listener", ln.Addr(), "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("proxy: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		if !s.add(c) {
			c.Close()
			return ErrClosed
		}
		go func() {
			defer s.remove(c)
			defer c.Close()
			handle(c)
		}()
	}
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
