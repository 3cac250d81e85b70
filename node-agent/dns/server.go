package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Server limits: what one client, and all of them, can hold open.
const (
	maxTCPPerClient = 16
	maxTCPConns     = 512
	// maxUDPInFlight bounds the datagrams being handled at once; beyond
	// it a datagram is dropped and the client's resolver retries.
	maxUDPInFlight = 1024
	tcpIdle        = 10 * time.Second
)

// Server owns the proxy's sockets: UDP and TCP on the same address, both
// transparent so that queries the capture programs steer here keep their
// original destination.
type Server struct {
	Handler *Handler
	// Mark is the SO_MARK of the sockets (the agent's skip mark): answers
	// leave from the original destination's address and must not be
	// captured or tracked (see bpf.Notrack).
	Mark int
	Log  *slog.Logger

	udp   *net.UDPConn
	tcp   net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[netip.Addr]int
	total int

	warnOnce sync.Once
}

// replyFailed logs a UDP answer that could not be sent: once as a warning
// (it usually means every answer fails, e.g. without CAP_NET_BIND_SERVICE
// to bind <resolver>:53), then at debug level.
func (s *Server) replyFailed(client, from netip.AddrPort, err error) {
	warned := false
	s.warnOnce.Do(func() {
		warned = true
		s.Log.Warn("dns: cannot answer from the resolver's address (binding port 53 needs CAP_NET_BIND_SERVICE); pods' queries time out", "client", client, "from", from, "err", err)
	})
	if !warned {
		s.Log.Debug("dns: udp reply", "client", client, "from", from, "err", err)
	}
}

// Listen opens the UDP and TCP sockets on addr (e.g. 127.0.0.1:15053).
// They have no SO_REUSEPORT: the capture looks the DNS proxy up by
// address, and a reuseport group would hand enrolled pods' queries to any
// member, such as a root hostNetwork process that binds the port too. An
// address in use fails with an error that wraps unix.EADDRINUSE (a
// successor agent then listens on another port).
//
// With port 0 the UDP socket picks a free port, which TCP may have in use
// (a connection's local port): then another UDP port is tried.
func (s *Server) Listen(ctx context.Context, addr string) error {
	ephemeral := strings.HasSuffix(addr, ":0")
	for attempt := 1; ; attempt++ {
		err := s.listen(ctx, addr)
		if err == nil || !ephemeral || !errors.Is(err, unix.EADDRINUSE) || attempt == ephemeralAttempts {
			return err
		}
	}
}

// ephemeralAttempts bounds Listen's tries for a port free for both UDP and
// TCP.
const ephemeralAttempts = 8

func (s *Server) listen(ctx context.Context, addr string) error {
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		return control(c, func(fd int) error { return s.sockopts(fd, network) })
	}}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("dns: listen udp %s (needs CAP_NET_ADMIN): %w", addr, err)
	}
	ln, err := lc.Listen(ctx, "tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listen tcp %s (needs CAP_NET_ADMIN): %w", addr, err)
	}
	s.udp, s.tcp, s.conns = pc.(*net.UDPConn), ln, map[netip.Addr]int{}
	return nil
}

// Addr is the UDP (and TCP) address listened on.
func (s *Server) Addr() netip.AddrPort { return s.udp.LocalAddr().(*net.UDPAddr).AddrPort() }

func (s *Server) sockopts(fd int, network string) error {
	v6 := network == "udp6" || network == "tcp6"
	lvl, transparent, origDst := unix.SOL_IP, unix.IP_TRANSPARENT, unix.IP_RECVORIGDSTADDR
	if v6 {
		lvl, transparent, origDst = unix.SOL_IPV6, unix.IPV6_TRANSPARENT, unix.IPV6_RECVORIGDSTADDR
	}
	if err := unix.SetsockoptInt(fd, lvl, transparent, 1); err != nil {
		return fmt.Errorf("IP_TRANSPARENT: %w", err)
	}
	if network == "udp4" || network == "udp6" || network == "udp" {
		if err := unix.SetsockoptInt(fd, lvl, origDst, 1); err != nil {
			return fmt.Errorf("IP_RECVORIGDSTADDR: %w", err)
		}
	}
	if s.Mark != 0 {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, s.Mark)
	}
	return nil
}

func control(c syscall.RawConn, f func(fd int) error) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = f(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// Serve answers until ctx ends, then closes the sockets and waits for the
// requests in flight.
func (s *Server) Serve(ctx context.Context) {
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.serveUDP(ctx) }()
	go func() { defer s.wg.Done(); s.serveTCP(ctx) }()
	<-ctx.Done()
	s.udp.Close()
	s.tcp.Close()
	s.wg.Wait()
}

func (s *Server) serveUDP(ctx context.Context) {
	local := s.Addr()
	sem := make(chan struct{}, maxUDPInFlight)
	buf := make([]byte, MaxMessage+1)
	oob := make([]byte, 128)
	for {
		n, oobn, flags, client, err := s.udp.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.Log.Warn("dns: udp read", "err", err)
			continue
		}
		dst, ok := origDst(oob[:oobn])
		if !ok {
			dst = local
		}
		msg := append([]byte(nil), buf[:n]...)
		if flags&unix.MSG_TRUNC != 0 || n > MaxMessage {
			msg = msg[:min(n, 12)] // over the limit: FORMERR from its header
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // overloaded: the resolver retries
		}
		s.wg.Add(1)
		go func() {
			defer func() { <-sem; s.wg.Done() }()
			client := netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
			reply := s.Handler.Serve(ctx, Request{Client: client, Dst: dst, Msg: msg})
			if reply != nil {
				if err := s.replyUDP(local, dst, client, reply); err != nil {
					s.replyFailed(client, dst, err)
				}
			}
		}()
	}
}

// origDst reads IP_ORIGDSTADDR from a datagram's control messages.
func origDst(oob []byte) (netip.AddrPort, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.AddrPort{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_ORIGDSTADDR && len(m.Data) >= unix.SizeofSockaddrInet4:
			port := uint16(m.Data[2])<<8 | uint16(m.Data[3])
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Data[4:8])), port), true
		case m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_ORIGDSTADDR && len(m.Data) >= unix.SizeofSockaddrInet6:
			port := uint16(m.Data[2])<<8 | uint16(m.Data[3])
			return netip.AddrPortFrom(netip.AddrFrom16([16]byte(m.Data[8:24])).Unmap(), port), true
		}
	}
	return netip.AddrPort{}, false
}

// replyUDP answers from the address and port the client asked (its
// resolver ignores datagrams from anywhere else): from the listener when
// it was asked directly (captured queries are to port 53), else from a transparent socket bound to the
// original destination for this one datagram.
func (s *Server) replyUDP(local, from, client netip.AddrPort, reply []byte) error {
	if from.Port() == local.Port() {
		_, err := s.udp.WriteToUDPAddrPort(reply, client)
		return err
	}
	family, lvl, transparent := unix.AF_INET, unix.SOL_IP, unix.IP_TRANSPARENT
	if from.Addr().Is6() {
		family, lvl, transparent = unix.AF_INET6, unix.SOL_IPV6, unix.IPV6_TRANSPARENT
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, o := range []struct{ lvl, opt, v int }{
		{lvl, transparent, 1},
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1}, // concurrent answers from the same server
		{unix.SOL_SOCKET, unix.SO_MARK, s.Mark},
	} {
		if err := unix.SetsockoptInt(fd, o.lvl, o.opt, o.v); err != nil {
			return fmt.Errorf("setsockopt %d: %w", o.opt, err)
		}
	}
	if err := unix.Bind(fd, sockaddr(from)); err != nil {
		return fmt.Errorf("bind %s: %w", from, err)
	}
	return unix.Sendto(fd, reply, 0, sockaddr(client))
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func (s *Server) serveTCP(ctx context.Context) {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.Log.Warn("dns: tcp accept", "err", err)
			continue
		}
		client := addrPort(c.RemoteAddr())
		if !s.admit(client.Addr()) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() { s.release(client.Addr()); c.Close(); s.wg.Done() }()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			s.serveConn(ctx, c, client, addrPort(c.LocalAddr()))
		}()
	}
}

// admit counts a TCP connection against its client's and the total limit.
func (s *Server) admit(ip netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= maxTCPConns || s.conns[ip] >= maxTCPPerClient {
		return false
	}
	s.total++
	s.conns[ip]++
	return true
}

func (s *Server) release(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.conns[ip]--; s.conns[ip] <= 0 {
		delete(s.conns, ip)
	}
}

// serveConn answers the queries of one TCP connection, one at a time,
// until the client closes it, idles, or sends more than MaxMessage.
func (s *Server) serveConn(ctx context.Context, c net.Conn, client, dst netip.AddrPort) {
	for {
		_ = c.SetDeadline(time.Now().Add(tcpIdle))
		msg, err := readTCPMessage(c, MaxMessage)
		if err != nil {
			return
		}
		reply := s.Handler.Serve(ctx, Request{Client: client, Dst: dst, TCP: true, Msg: msg})
		if reply == nil || writeTCPMessage(c, reply) != nil {
			return
		}
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
