package agent

import (
	"context"
	"errors"
	"net"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/proxy"
	"github.com/weft-mesh/weft/pkg/connlimit"
)

// proxySockets are the four proxy listeners' sockets, bound when the agent
// starts and listening once its configuration is synced. Each is on its
// configured port unless that port is held: by the agent this one succeeds
// (a rolling upgrade with surge runs both for a while) or by anything else,
// which then gets nothing: the capture programs steer to the ports these
// sockets really have, and no other socket can share them (see
// proxy.TransparentSocket on why there is no SO_REUSEPORT).
type proxySockets struct {
	outbound, plaintext, nat, hbone *proxy.TransparentSocket
}

// bindProxySockets binds the four sockets; Close releases what Listen did
// not take. All but the NAT one carry the agent's mark (see
// proxy.TransparentSocket).
func (a *agent) bindProxySockets() (*proxySockets, error) {
	var s proxySockets
	for _, b := range []struct {
		name   string
		port   uint16
		sock   **proxy.TransparentSocket
		marked bool
	}{{"outbound", a.cfg.OutboundPort, &s.outbound, true}, {"inbound-plaintext", a.cfg.InboundPlaintextPort, &s.plaintext, true},
		{"inbound-nat", a.cfg.InboundNATPort, &s.nat, false}, {"hbone", a.cfg.HBONEPort, &s.hbone, true}} {
		sock, err := proxy.BindTransparent(b.port, b.marked)
		if errors.Is(err, unix.EADDRINUSE) {
			a.log.Info("proxy port in use (the node agent this one succeeds, or another process): listening on another port, where the capture will steer",
				"listener", b.name, "port", b.port)
			sock, err = proxy.BindTransparent(0, b.marked)
		}
		if err != nil {
			s.Close()
			return nil, err
		}
		*b.sock = sock
	}
	return &s, nil
}

// Close releases the sockets that are not listening.
func (s *proxySockets) Close() {
	for _, sock := range []*proxy.TransparentSocket{s.outbound, s.plaintext, s.nat, s.hbone} {
		if sock != nil {
			sock.Close()
		}
	}
}

// captureListeners is where the capture programs must steer to reach this
// agent's proxies.
func (a *agent) captureListeners() bpf.ProxyListeners {
	return bpf.ProxyListeners{Outbound: a.sockets.outbound.Port, Inbound: a.sockets.plaintext.Port, NAT: a.sockets.nat.Port,
		HBONE: a.sockets.hbone.Port, HBONEDestination: a.cfg.HBONEPort}
}

// listen opens the proxies' listeners and serves them until ctx ends.
func (a *agent) listen(ctx context.Context) error {
	for _, l := range []struct {
		sock  *proxy.TransparentSocket
		serve func(net.Listener) error
	}{{a.sockets.outbound, a.outbound.Serve}, {a.sockets.plaintext, a.plaintext.Serve}, {a.sockets.nat, a.plaintext.Serve},
		{a.sockets.hbone, a.hbone.Serve}} {
		ln, err := listenProxy(l.sock, a.cfg.MaxConnections)
		if err != nil {
			return err
		}
		go l.serve(ln)
	}
	return a.serveDNS(ctx)
}

// listenProxy has sock listen, holding at most max connections at a time.
func listenProxy(sock *proxy.TransparentSocket, max int) (net.Listener, error) {
	ln, err := sock.Listen()
	if err != nil || max <= 0 {
		return ln, err
	}
	return connlimit.Capped(ln.(*net.TCPListener), max), nil
}
