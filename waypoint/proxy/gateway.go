package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/istiolabels"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Gateway mode (an ingress gateway, charts/gateway): downstream is plain
// HTTP on the ports of the Listeners "0.0.0.0_<port>" instead of HBONE;
// routing, clusters and the upstream side (HBONE with the proxy's own
// identity) are the waypoint's. Requests are reported with
// reporter="source" and the gateway as the source, as Istio's ingress
// gateway reports them, and get an x-request-id when they come without.

// Source is the gateway itself as the source of the requests it forwards.
type Source struct {
	// ID is the gateway's SPIFFE identity (source_principal).
	ID spiffeid.ID
	// Baggage describes the gateway workload (source_workload,
	// source_workload_namespace, source_canonical_service and _revision,
	// source_app, source_version, source_cluster), in the form node agents
	// send.
	Baggage string
}

// meta is the gateway's own description of itself: configuration, not a
// claim of a peer, so taken as it is (namespace defaulting to the ID's).
func (s Source) meta() istiolabels.Peer {
	b := hbone.ParseBaggage(s.Baggage)
	return istiolabels.Peer{Workload: b.Workload, Namespace: cmp.Or(b.Namespace, mesh.NamespaceOf(s.ID)), Principal: idString(s.ID),
		CanonicalService: b.Service, CanonicalRevision: b.Version, Cluster: b.Cluster}
}

// ServePlain serves plain HTTP client connections accepted on ln until ln
// is closed. The chain is chosen by the connection's local port.
func (p *Proxy) ServePlain(ln net.Listener, src Source) error {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go p.servePlainConn(conn, src)
	}
}

func (p *Proxy) servePlainConn(conn net.Conn, src Source) {
	defer conn.Close()
	dst, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil {
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	snap := p.Store.Snapshot()
	if snap.chains.needsSNI(dst) {
		p.serveTLSConn(conn, dst, src, snap)
		return
	}
	c := snap.chains.match(dst)
	if c == nil {
		p.log.Debug("no filter chain for gateway port", "local", dst, "client", conn.RemoteAddr())
		return
	}
	rs := &requestState{origDst: dst, peer: src.ID, clientIP: addrOf(conn.RemoteAddr()), baggage: src.Baggage, source: src.meta(), edge: true}
	if c.isTCP() { // a TCP server: the connection's bytes go to the route's cluster
		stream := &replayConn{Conn: conn, r: conn}
		if err := p.proxyTCP(context.Background(), c, snap, rs, "", "", func() (hbone.Stream, error) { return stream, nil }); err != nil {
			p.log.Debug("gateway TCP port failed", "chain", c.name, "client", conn.RemoteAddr(), "err", err)
		}
		return
	}
	p.serveHTTP(conn, c, rs)
}

// PlainListeners keeps one TCP listener open per port the configuration
// lists (Snapshot.ListenPorts) and serves each with ServePlain.
type PlainListeners struct {
	Proxy  *Proxy
	Source Source
	// Host to bind ("" = all addresses); Listen defaults to net.Listen.
	Host   string
	Listen func(network, addr string) (net.Listener, error)

	mu   sync.Mutex
	open map[uint16]net.Listener
}

// Sync opens the listeners of ports that lack one and closes those no
// longer listed; existing connections of a closed listener drain on their
// own. It returns the ports it could not open.
func (l *PlainListeners) Sync(ports []uint16) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open == nil {
		l.open = map[uint16]net.Listener{}
	}
	want := map[uint16]bool{}
	var errs []error
	for _, port := range ports {
		want[port] = true
		if l.open[port] != nil {
			continue
		}
		listen := l.Listen
		if listen == nil {
			listen = net.Listen
		}
		ln, err := listen("tcp", net.JoinHostPort(l.Host, strconv.Itoa(int(port))))
		if err != nil {
			errs = append(errs, fmt.Errorf("gateway listener on port %d: %w", port, err))
			continue
		}
		l.open[port] = ln
		l.Proxy.log.Info("gateway listener open", "address", ln.Addr().String())
		go func() {
			if err := l.Proxy.ServePlain(ln, l.Source); err != nil {
				l.Proxy.log.Error("gateway listener stopped", "address", ln.Addr().String(), "err", err)
			}
		}()
	}
	for port, ln := range l.open {
		if !want[port] {
			ln.Close()
			delete(l.open, port)
			l.Proxy.log.Info("gateway listener closed", "port", port)
		}
	}
	return errors.Join(errs...)
}

// Ports lists the ports listened on.
func (l *PlainListeners) Ports() []uint16 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]uint16, 0, len(l.open))
	for p := range l.open {
		out = append(out, p)
	}
	return out
}

// Close closes every listener.
func (l *PlainListeners) Close() {
	_ = l.Sync(nil)
}
