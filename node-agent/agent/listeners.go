package agent

import (
	"context"
	"errors"
	"net"

	"github.com/prometheus/client_golang/prometheus"
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

// proxyListener is one proxy listener: its socket, what one source may
// hold of it, and the proxy that serves it.
type proxyListener struct {
	name      string
	sock      *proxy.TransparentSocket
	perSource int
	serve     func(net.Listener) error
}

// proxyListeners are the four listeners. Only the outbound and plaintext
// ones, whose sources are pods and clients each with an address of its
// own, cap what one source address holds. Not the NAT one: netfilter may
// have masqueraded all its clients to one address. Not HBONE: a node
// agent's tunnels all come from its node's address, one connection per
// local identity and destination, so a busy node may rightly hold
// thousands; there each source's unfinished handshakes are limited
// (hbone.Options.MaxHandshakesPerSource) and each peer identity's
// established connections (MaxConnectionsPerPeer, set by wire).
func (a *agent) proxyListeners() []proxyListener {
	perSource := a.cfg.MaxConnectionsPerSource
	return []proxyListener{{"outbound", a.sockets.outbound, perSource, a.outbound.Serve},
		{"inbound-plaintext", a.sockets.plaintext, perSource, a.plaintext.Serve},
		{"inbound-nat", a.sockets.nat, 0, a.plaintext.Serve}, {"hbone", a.sockets.hbone, 0, a.hbone.Serve}}
}

// listen opens the proxies' listeners and serves them until ctx ends.
func (a *agent) listen(ctx context.Context) error {
	for _, l := range a.proxyListeners() {
		ln, err := listenProxy(l.sock, a.cfg.MaxConnections, l.perSource, a.shed.WithLabelValues(l.name).Inc)
		if err != nil {
			return err
		}
		go l.serve(ln)
	}
	return a.serveDNS(ctx)
}

// listenProxy has sock listen, holding at most max connections at a time
// and perSource of one source (0: no cap), and calling shed for each
// connection reset because its source held perSource.
func listenProxy(sock *proxy.TransparentSocket, max, perSource int, shed func()) (net.Listener, error) {
	ln, err := sock.Listen()
	if err != nil || max <= 0 {
		return ln, err
	}
	return connlimit.CappedPerSource(ln.(*net.TCPListener), max, perSource, shed), nil
}

// newShedCounter counts the connections each listener reset because their
// source held MaxConnectionsPerSource.
func newShedCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_node_agent_connections_shed_total",
		Help: "Connections a proxy listener reset at once because their source address held --max-connections-per-source of its connections.",
	}, []string{"listener"})
	reg.MustRegister(c)
	return c
}
