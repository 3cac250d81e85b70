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
// transparent listener on 15001).
type Outbound struct {
	*Env
	// OriginalDst returns the destination the pod connected to; default
	// LocalAddrOriginalDst (right for a transparent listener).
	OriginalDst func(net.Conn) netip.AddrPort
	// TunnelPort is the HBONE port dialed at the destination pod's IP
	// (default 15008).
	TunnelPort uint16
	// PassthroughMark is the SO_MARK set on passthrough connections so
	// capture skips them (default 0x2000; negative: no mark).
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
// agent opens yields connections that half-close (TCP, CappedConn); one that
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

// reset closes c with an RST, the TCP way of saying "refused".
func reset(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

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
	if srcW == nil {
		o.plaintextClient(ctx, c, snap, src, dst)
		return
	}
	rec := &connRecord{Direction: "outbound", Reporter: ReporterSource, Src: src, Dst: dst, Source: workloadInfo(srcW), Start: time.Now()}
	defer func() { finish(o.Metrics, o.AccessLog, rec) }()

	target := dst
	var dstW *config.Workload
	if svc := snap.ServiceByVIP(dst); svc != nil {
		rec.Service = svc.Proto.GetHostname()
		if g := svc.Proto.GetWaypoint(); g != nil {
			o.viaWaypoint(ctx, c, snap, rec, srcW, src, g, dst)
			return
		}
		w, port, err := o.Store.PickEndpoint(svc, dst.Port())
		if err != nil {
			rec.Flags, rec.Err, rec.Security = FlagNoEndpoint, fmt.Errorf("service %s port %d: %w", svc.Name, dst.Port(), err), SecurityNone
			reset(c)
			return
		}
		ip, ok := pickAddr(w, dst.Addr())
		if !ok {
			rec.Flags, rec.Err, rec.Security = FlagNoEndpoint, fmt.Errorf("endpoint %s of service %s has no address", w.Name, svc.Name), SecurityNone
			reset(c)
			return
		}
		dstW, target = w, netip.AddrPortFrom(ip, port)
	} else {
		dstW = snap.WorkloadByIP(dst.Addr())
	}
	rec.Dst = target
	if enrolled(dstW) && dstW.Proto.GetWaypoint() != nil {
		o.viaWaypoint(ctx, c, snap, rec, srcW, src, dstW.Proto.GetWaypoint(), target)
		return
	}

	if !enrolled(dstW) {
		o.passthrough(ctx, c, rec, dstW, target)
		return
	}
	rec.Dest = workloadInfo(dstW)
	rec.Security = SecurityMutualTLS

	if o.Local != nil && dstW.Proto.GetNode() == o.NodeName {
		o.Metrics.open(rec)
		rec.Tunnel = "local"
		var err error
		rec.RecvBytes, rec.SentBytes, err = o.Local.serveLocal(ctx, snap, stream(c), srcW, src, target, rec)
		if err != nil {
			rec.Err = err
			if rec.Flags == FlagDenied || rec.Flags == FlagUpstreamFailure {
				reset(c)
			}
		}
		return
	}

	port := o.TunnelPort
	if port == 0 {
		port = TunnelPort
	}
	o.tunnel(ctx, c, rec, srcW, src, netip.AddrPortFrom(target.Addr(), port), dstW.Identity, target)
}

// tunnel carries c over HBONE to tunnelAddr, authorizing the server as
// peer, with CONNECT :authority authority (the destination the far end
// connects to: a pod for a node agent, the original Service VIP or pod
// address for a waypoint).
func (o *Outbound) tunnel(ctx context.Context, c net.Conn, rec *connRecord, srcW *config.Workload, src, tunnelAddr netip.AddrPort, peer spiffeid.ID, authority netip.AddrPort) {
	tunnel := tunnelAddr.String()
	rec.Tunnel = tunnel
	d, err := o.dialer(srcW.Identity)
	if err != nil {
		rec.Flags, rec.Err = FlagUpstreamFailure, err
		reset(c)
		return
	}
	h := http.Header{}
	hbone.SetForwarded(h, src.Addr().AsSlice())
	h.Set("Baggage", baggage(srcW))
	dctx, dcancel := context.WithTimeout(ctx, o.dialTimeout())
	st, err := d.Dial(dctx, tunnel, tlsconfig.AuthorizeID(peer), authority.String(), h)
	dcancel()
	if err != nil {
		var re *hbone.RefusedError
		if errors.As(err, &re) && re.Status == http.StatusForbidden {
			rec.Flags, rec.Decision = FlagDenied, "deny"
		} else {
			rec.Flags = FlagUpstreamFailure
		}
		rec.Err = fmt.Errorf("HBONE to %s via %s as %s: %w", authority, tunnel, srcW.Identity, err)
		reset(c)
		return
	}
	o.Metrics.open(rec)
	rec.RecvBytes, rec.SentBytes, rec.Err = hbone.Pipe(stream(c), st)
}

// waypoint resolves a Service's or workload's waypoint to one of its pods
// (the waypoint's own Service picks it, like any service endpoint) and the
// HBONE address to reach it. ok=false: no usable waypoint right now.
func (o *Outbound) waypoint(snap *config.Snapshot, g *workloadv1.GatewayAddress) (w *config.Workload, tunnel netip.AddrPort, err error) {
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
	w, p, err := o.Store.PickEndpoint(svc, port)
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
func (o *Outbound) viaWaypoint(ctx context.Context, c net.Conn, snap *config.Snapshot, rec *connRecord, srcW *config.Workload, src netip.AddrPort, g *workloadv1.GatewayAddress, authority netip.AddrPort) {
	rec.Security = SecurityMutualTLS
	w, tunnel, err := o.waypoint(snap, g)
	if err != nil {
		rec.Flags, rec.Err = FlagNoEndpoint, err
		reset(c)
		return
	}
	rec.Dest = workloadInfo(w)
	o.tunnel(ctx, c, rec, srcW, src, tunnel, w.Identity, authority)
}

// passthrough sends a connection to a destination outside the mesh as plain
// TCP, marked so capture does not take it again.
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
	rec := &connRecord{Direction: "outbound", Reporter: ReporterSource, Src: src, Dst: dst, Service: svc.Proto.GetHostname(), Start: time.Now()}
	w, port, err := o.Store.PickEndpoint(svc, dst.Port())
	var ip netip.Addr
	if err == nil {
		var ok bool
		if ip, ok = pickAddr(w, dst.Addr()); !ok {
			err = fmt.Errorf("endpoint %s has no address", w.Name)
		}
	}
	if err != nil {
		rec.Flags, rec.Err, rec.Security = FlagNoEndpoint, fmt.Errorf("service %s port %d: %w", svc.Name, dst.Port(), err), SecurityNone
		finish(o.Metrics, o.AccessLog, rec)
		reset(c)
		return
	}
	target := netip.AddrPortFrom(ip, port)
	if o.localWorkload(snap, ip) != nil {
		o.servePlaintext(c, snap, src, target, rec.Service)
		return
	}
	if sw := snap.WorkloadByIP(src.Addr()); sw != nil {
		rec.Source = workloadInfo(sw)
	}
	rec.Dst = target
	defer func() { finish(o.Metrics, o.AccessLog, rec) }()
	o.passthrough(ctx, c, rec, w, target)
}

func (o *Outbound) passthrough(ctx context.Context, c net.Conn, rec *connRecord, dstW *config.Workload, target netip.AddrPort) {
	rec.Direction, rec.Security = "passthrough", SecurityNone
	rec.Dest = workloadInfo(dstW)
	mark := o.PassthroughMark
	if mark == 0 {
		mark = DefaultPassthrough
	} else if mark < 0 {
		mark = 0
	}
	up, err := dialMarked(ctx, target, mark, o.dialTimeout())
	if err != nil {
		rec.Flags, rec.Err = FlagUpstreamFailure, fmt.Errorf("passthrough to %s: %w", target, err)
		reset(c)
		return
	}
	o.Metrics.open(rec)
	rec.RecvBytes, rec.SentBytes, rec.Err = hbone.Pipe(stream(c), up)
}
