package proxy

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/istiolabels"
)

// InboundPlaintext handles plaintext connections from outside the mesh to
// enrolled pods (the transparent listener on mesh.InboundPlaintextPort). They carry no identity:
// policy sees Principal "", so STRICT PeerAuthentication refuses them.
type InboundPlaintext struct {
	*Env
	// OriginalDst returns the pod address the client connected to; default
	// LocalAddrOriginalDst.
	OriginalDst func(net.Conn) netip.AddrPort

	conns connSet
}

// Serve handles connections accepted on ln until Close.
func (p *InboundPlaintext) Serve(ln net.Listener) error {
	return p.conns.serve(ln, p.log(), p.handle)
}

// Close stops the listeners and closes every proxied connection.
func (p *InboundPlaintext) Close() error {
	p.conns.close()
	return nil
}

// Drain stops accepting and lets the open connections finish (see
// connSet.drain).
func (p *InboundPlaintext) Drain(ctx context.Context) error { return p.conns.drain(ctx) }

func (p *InboundPlaintext) handle(c net.Conn) {
	f := p.OriginalDst
	if f == nil {
		f = LocalAddrOriginalDst
	}
	dst := f(c)
	p.servePlaintext(c, p.Store.Snapshot(), addrPort(c.RemoteAddr()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), "")
}

// servePlaintext delivers a plaintext connection from src to the enrolled
// local pod at dst after the policy check, with snap's policies and no
// identity (so STRICT refuses it). service names the Service the client
// addressed, if any.
func (e *Env) servePlaintext(c net.Conn, snap *config.Snapshot, src, dst netip.AddrPort, service string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &connRecord{Direction: "inbound_plaintext", Reporter: ReporterDestination, Security: SecurityNone, Src: src, Dst: dst,
		Service: istiolabels.Service{Host: service}, Start: time.Now()}
	if sw := snap.WorkloadByIP(src.Addr()); sw != nil {
		info := workloadInfo(sw)
		info.Principal = "" // not authenticated
		rec.Source = info
	}
	var err error
	defer func() { e.end(c, rec, err) }()
	err = e.deliverPlaintext(ctx, c, snap, rec, src, dst)
}

// deliverPlaintext is servePlaintext's check and delivery; it returns the
// connection's result.
func (e *Env) deliverPlaintext(ctx context.Context, c net.Conn, snap *config.Snapshot, rec *connRecord, src, dst netip.AddrPort) error {
	w := e.inboundWorkload(snap, dst.Addr())
	if w == nil {
		return e.notHere(dst.Addr())
	}
	rec.Dest = workloadInfo(w)
	rec.Service = servingService(snap, w, dst.Port(), rec.Service.Host)
	a, v, err := e.admit(ctx, snap, w, src.Addr(), dst, spiffeid.ID{})
	rec.verdict = v
	if err != nil {
		return err
	}
	defer e.admitted.remove(a)
	e.Metrics.open(rec)
	rec.RecvBytes, rec.SentBytes, err = hbone.Pipe(stream(c), a.up)
	return a.result(err)
}
