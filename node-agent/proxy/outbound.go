package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/hbone"
)

// Outbound handles connections captured from enrolled local pods (the
// transparent listener on mesh.OutboundPort).
type Outbound struct {
	*Env
	// OriginalDst returns the destination the pod connected to; default
	// LocalAddrOriginalDst (right for a transparent listener).
	OriginalDst func(net.Conn) netip.AddrPort
	// TunnelPort is the HBONE port dialed at the destination pod's IP
	// (default mesh.HBONEPort).
	TunnelPort uint16
	// PassthroughMark is the SO_MARK set on passthrough connections so
	// capture skips them (default mesh.MarkSkip; negative: no mark).
	PassthroughMark int
	// Local, if set, serves destinations on this node in-process (see the
	// package documentation); nil tunnels them like remote ones.
	Local *Inbound
	// HBONE are the tunnel client's HTTP/2 knobs.
	HBONE hbone.Options

	conns   connSet
	mu      sync.Mutex
	dialers map[spiffeid.ID]*hbone.Dialer
	closed  bool
}

// Serve handles connections accepted on ln until Close.
func (o *Outbound) Serve(ln net.Listener) error {
	return o.conns.serve(ln, o.log(), o.handle)
}

// Close stops the listeners, closes every proxied connection and the tunnel
// pool.
func (o *Outbound) Close() error {
	o.conns.close()
	o.mu.Lock()
	o.closed = true
	ds := o.dialers
	o.dialers = nil
	o.mu.Unlock()
	for _, d := range ds {
		d.Close()
	}
	return nil
}

// Drain stops accepting and lets the proxied connections finish (see
// connSet.drain), then closes the tunnel pool.
func (o *Outbound) Drain(ctx context.Context) error {
	err := o.conns.drain(ctx)
	o.Close()
	return err
}

// dialer returns the tunnel client holding the certificate of id.
func (o *Outbound) dialer(id spiffeid.ID) (*hbone.Dialer, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	if d := o.dialers[id]; d != nil {
		return d, nil
	}
	if o.dialers == nil {
		o.dialers = map[spiffeid.ID]*hbone.Dialer{}
	}
	d := &hbone.Dialer{SVID: o.Identities.Source(id), Bundle: o.Identities.Bundles(), Options: o.HBONE, Logger: o.log(),
		DialContext: (&net.Dialer{Timeout: o.dialTimeout(), KeepAlive: 30 * time.Second}).DialContext}
	o.dialers[id] = d
	return d, nil
}

func (o *Outbound) originalDst(c net.Conn) netip.AddrPort {
	f := o.OriginalDst
	if f == nil {
		f = LocalAddrOriginalDst
	}
	ap := f(c)
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// stream adapts an accepted connection to hbone.Stream. Every listener the
// agent opens yields connections that half-close (TCP, connlimit.Conn); one that
// cannot is closed whole at the end of the stream, so the peer still sees
// the end instead of waiting forever for a FIN that a no-op CloseWrite
// would never send.
func stream(c net.Conn) hbone.Stream {
	if s, ok := c.(hbone.Stream); ok {
		return s
	}
	return closeAtEOF{c}
}

type closeAtEOF struct{ net.Conn }

func (c closeAtEOF) CloseWrite() error { return c.Close() }

// pickAddr chooses the workload address of the same family as want.
func pickAddr(w *config.Workload, want netip.Addr) (netip.Addr, bool) {
	for _, a := range w.Addresses {
		if a.Is4() == want.Is4() {
			return a, true
		}
	}
	if len(w.Addresses) > 0 {
		return w.Addresses[0], true
	}
	return netip.Addr{}, false
}

func (o *Outbound) handle(c net.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := addrPort(c.RemoteAddr())
	snap := o.Store.Snapshot()
	srcW := o.localWorkload(snap, src.Addr())
	dst := o.originalDst(c)
	if srcW == nil && o.held(src.Addr()) {
		rec := &connRecord{Direction: "outbound", Reporter: ReporterSource, Src: src, Dst: dst, Start: time.Now()}
		o.end(c, rec, notConfigured(src.Addr()))
		return
	}
	if srcW == nil {
		o.plaintextClient(ctx, c, snap, src, dst)
		return
	}
	rec := &connRecord{Direction: "outbound", Reporter: ReporterSource, Src: src, Dst: dst, Source: workloadInfo(srcW), Start: time.Now()}
	var err error
	defer func() { o.end(c, rec, err) }()
	err = o.route(ctx, c, snap, rec, srcW, src, dst)
}

// route sends an enrolled local pod's connection to dst on its way: through
// the waypoint of the Service or workload addressed, in-process to a pod on
// this node, over HBONE to a pod elsewhere, or passed through when the
// destination is not in the mesh. A Service VIP is resolved to an endpoint
// first.
func (o *Outbound) route(ctx context.Context, c net.Conn, snap *config.Snapshot, rec *connRecord, srcW *config.Workload, src, dst netip.AddrPort) error {
	target := dst
	var dstW *config.Workload
	if svc := snap.ServiceByVIP(dst); svc != nil {
		rec.Service = serviceInfo(svc)
		if g := svc.Proto.GetWaypoint(); g != nil {
			return o.viaWaypoint(ctx, c, snap, rec, srcW, src, g, dst)
		}
		var err error
		if dstW, target, err = o.endpoint(svc, dst, srcW); err != nil {
			rec.Security = SecurityNone
			return err
		}
		// An endpoint known by its address only (an EndpointSlice
		// without a Pod targetRef) at a mesh pod's IP is that pod: reach
		// it over HBONE with its identity, as a connection to the IP itself
		// would, not in plain text it may refuse (STRICT).
		if owner := snap.WorkloadByIP(target.Addr()); !enrolled(dstW) && enrolled(owner) {
			dstW = owner
		}
	} else {
		dstW = snap.WorkloadByIP(dst.Addr())
	}
	rec.Dst = target
	switch {
	case enrolled(dstW) && dstW.Proto.GetWaypoint() != nil:
		return o.viaWaypoint(ctx, c, snap, rec, srcW, src, dstW.Proto.GetWaypoint(), target)
	case !enrolled(dstW):
		return o.passthrough(ctx, c, rec, dstW, target)
	}
	rec.Dest = workloadInfo(dstW)
	rec.Security = SecurityMutualTLS
	if o.Local != nil && dstW.Proto.GetNode() == o.NodeName {
		return o.local(ctx, c, snap, rec, srcW, src, target)
	}
	port := o.TunnelPort
	if port == 0 {
		port = TunnelPort
	}
	return o.tunnel(ctx, c, rec, srcW, src, netip.AddrPortFrom(target.Addr(), port), dstW.Identity, target)
}

// endpoint picks the endpoint of svc for a connection from srcW (nil: a
// client outside the mesh) to dst, and its address of dst's family; no
// usable one is a refusal (FlagNoEndpoint).
func (o *Outbound) endpoint(svc *config.Service, dst netip.AddrPort, srcW *config.Workload) (*config.Workload, netip.AddrPort, error) {
	w, port, err := o.Store.PickEndpoint(svc, dst.Port(), srcW)
	if err != nil {
		return nil, dst, &refusal{Flag: FlagNoEndpoint, Cause: fmt.Errorf("service %s port %d: %w", svc.Name, dst.Port(), err)}
	}
	ip, ok := pickAddr(w, dst.Addr())
	if !ok && w.Proto.GetHostname() != "" {
		if ip, err = o.resolved(w, dst.Addr()); err != nil {
			return nil, dst, &refusal{Flag: FlagNoEndpoint, Cause: fmt.Errorf("endpoint %s of service %s: %w", w.Name, svc.Name, err)}
		}
		ok = true
	}
	if !ok {
		return nil, dst, &refusal{Flag: FlagNoEndpoint, Cause: fmt.Errorf("endpoint %s of service %s has no address", w.Name, svc.Name)}
	}
	return w, netip.AddrPortFrom(ip, port), nil
}

// local hands a connection to a pod on this node to the in-process inbound
// half (Inbound.serveLocal, which records its own reporter=destination
// side) and reports its verdict and bytes on the source side.
func (o *Outbound) local(ctx context.Context, c net.Conn, snap *config.Snapshot, rec *connRecord, srcW *config.Workload, src, target netip.AddrPort) error {
	o.Metrics.open(rec)
	rec.Tunnel = "local"
	res := o.Local.serveLocal(ctx, snap, stream(c), srcW, src, target, rec.Service.Host)
	rec.verdict, rec.RecvBytes, rec.SentBytes = res.verdict, res.recv, res.sent
	return res.err
}

// tunnel carries c over HBONE to tunnelAddr, authorizing the server as
// peer, with CONNECT :authority authority (the destination the far end
// connects to: a pod for a node agent, the original Service VIP or pod
// address for a waypoint).
func (o *Outbound) tunnel(ctx context.Context, c net.Conn, rec *connRecord, srcW *config.Workload, src, tunnelAddr netip.AddrPort, peer spiffeid.ID, authority netip.AddrPort) error {
	tunnel := tunnelAddr.String()
	rec.Tunnel = tunnel
	d, err := o.dialer(srcW.Identity)
	if err != nil {
		return &refusal{Flag: FlagUpstreamFailure, Cause: err}
	}
	h := http.Header{}
	hbone.SetForwardedHost(h, src.Addr().AsSlice(), rec.Service.Host)
	h.Set("Baggage", baggage(srcW))
	dctx, dcancel := context.WithTimeout(ctx, o.dialTimeout())
	st, err := d.Dial(dctx, tunnel, tlsconfig.AuthorizeID(peer), authority.String(), h)
	dcancel()
	if err != nil {
		r := &refusal{Flag: FlagUpstreamFailure, Cause: fmt.Errorf("HBONE to %s via %s as %s: %w", authority, tunnel, srcW.Identity, err)}
		var re *hbone.RefusedError
		if errors.As(err, &re) && re.Status == http.StatusForbidden {
			r.Flag, rec.verdict = FlagDenied, verdict{Decision: "deny"}
		}
		return r
	}
	o.Metrics.open(rec)
	rec.RecvBytes, rec.SentBytes, err = hbone.Pipe(stream(c), st)
	return err
}

// waypoint resolves a Service's or workload's waypoint to one of its pods
// (the waypoint's own Service picks it, like any service endpoint) and the
// HBONE address to reach it, closest to srcW when the waypoint's Service
// prefers locality (as ztunnel does). An error: no usable waypoint right
// now.
func (o *Outbound) waypoint(snap *config.Snapshot, g *workloadv1.GatewayAddress, srcW *config.Workload) (w *config.Workload, tunnel netip.AddrPort, err error) {
	port := uint16(g.GetHboneMtlsPort())
	if port == 0 {
		port = TunnelPort
	}
	var svc *config.Service
	switch {
	case g.GetHostname() != "":
		svc = snap.Service(g.GetHostname())
	case g.GetAddress() != "":
		ip, perr := netip.ParseAddr(g.GetAddress())
		if perr != nil {
			return nil, tunnel, fmt.Errorf("waypoint address %q: %w", g.GetAddress(), perr)
		}
		if svc = snap.ServiceByVIP(netip.AddrPortFrom(ip, port)); svc == nil {
			if w = snap.WorkloadByIP(ip); w == nil {
				return nil, tunnel, fmt.Errorf("waypoint address %s is neither a service nor a workload", ip)
			}
			return w, netip.AddrPortFrom(ip, port), nil
		}
	}
	if svc == nil {
		return nil, tunnel, fmt.Errorf("waypoint %s%s not known (yet)", g.GetHostname(), g.GetAddress())
	}
	w, p, err := o.Store.PickEndpoint(svc, port, srcW)
	if err != nil {
		return nil, tunnel, fmt.Errorf("waypoint %s: %w", svc.Name, err)
	}
	ip, ok := pickAddr(w, netip.IPv4Unspecified())
	if !ok {
		return nil, tunnel, fmt.Errorf("waypoint pod %s has no address", w.Name)
	}
	return w, netip.AddrPortFrom(ip, p), nil
}

// viaWaypoint sends c to a waypoint, which routes it at L7 and then
// tunnels to the destination's node agent itself. authority is what the
// client addressed (Service VIP:port, or pod IP:port for a workload
// waypoint). No usable waypoint: the connection is refused, never sent
// around the waypoint's policies.
func (o *Outbound) viaWaypoint(ctx context.Context, c net.Conn, snap *config.Snapshot, rec *connRecord, srcW *config.Workload, src netip.AddrPort, g *workloadv1.GatewayAddress, authority netip.AddrPort) error {
	rec.Security = SecurityMutualTLS
	w, tunnel, err := o.waypoint(snap, g, srcW)
	if err != nil {
		return &refusal{Flag: FlagNoEndpoint, Cause: err}
	}
	rec.Dest = workloadInfo(w)
	return o.tunnel(ctx, c, rec, srcW, src, tunnel, w.Identity, authority)
}

// plaintextClient handles a client on this node that is not enrolled.
// Capture sends it here only for a Service VIP with an enrolled endpoint on
// this node (kube-proxy would DNAT it after tc, out of the inbound capture's
// sight): the agent picks the endpoint itself, polices a local enrolled one
// as inbound plaintext and passes anything else through unchanged.
func (o *Outbound) plaintextClient(ctx context.Context, c net.Conn, snap *config.Snapshot, src, dst netip.AddrPort) {
	svc := snap.ServiceByVIP(dst)
	if svc == nil {
		o.log().Debug("outbound connection from an address that is not an enrolled workload on this node; closing", "src", src, "dst", dst, "node", o.NodeName)
		reset(c)
		return
	}
	w, target, err := o.endpoint(svc, dst, nil)
	if err == nil && o.localWorkload(snap, target.Addr()) != nil {
		o.servePlaintext(c, snap, src, target, svc.Proto.GetHostname())
		return
	}
	rec := &connRecord{Direction: "outbound", Reporter: ReporterSource, Src: src, Dst: dst, Service: serviceInfo(svc), Start: time.Now()}
	defer func() { o.end(c, rec, err) }()
	if err != nil {
		rec.Security = SecurityNone
		return
	}
	if sw := snap.WorkloadByIP(src.Addr()); sw != nil {
		rec.Source = workloadInfo(sw)
	}
	rec.Dst = target
	err = o.passthrough(ctx, c, rec, w, target)
}

// passthrough sends a connection to a destination outside the mesh as plain
// TCP, marked so capture does not take it again.
func (o *Outbound) passthrough(ctx context.Context, c net.Conn, rec *connRecord, dstW *config.Workload, target netip.AddrPort) error {
	rec.Direction, rec.Security = "passthrough", SecurityNone
	rec.Dest = workloadInfo(dstW)
	if o.held(target.Addr()) {
		return notConfigured(target.Addr())
	}
	mark := o.PassthroughMark
	if mark == 0 {
		mark = DefaultPassthrough
	} else if mark < 0 {
		mark = 0
	}
	up, err := dialMarked(ctx, target, mark, o.dialTimeout())
	if err != nil {
		return &refusal{Flag: FlagUpstreamFailure, Cause: fmt.Errorf("passthrough to %s: %w", target, err)}
	}
	o.Metrics.open(rec)
	rec.RecvBytes, rec.SentBytes, err = hbone.Pipe(stream(c), up)
	return err
}
