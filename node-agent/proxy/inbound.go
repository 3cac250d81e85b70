package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/istiolabels"
	weftmesh "github.com/weft-mesh/weft/pkg/mesh" // the tests have a type mesh
)

// Inbound is the HBONE server on mesh.HBONEPort. Per connection it presents the
// certificate of the workload whose IP the connection was addressed to (see
// the package documentation); per CONNECT it checks the destination and the
// authorization policy and delivers the stream to the pod.
type Inbound struct {
	*Env
	// HBONE are the HTTP/2 knobs.
	HBONE hbone.Options
	// HandshakeTimeout bounds the TLS handshake (default 10 s).
	HandshakeTimeout time.Duration

	once sync.Once
	srv  *hbone.Server
}

func (in *Inbound) init() {
	in.once.Do(func() {
		in.srv = &hbone.Server{
			TLS:              in.tlsConfig(),
			Handler:          in.handle,
			Options:          in.HBONE,
			HandshakeTimeout: in.HandshakeTimeout,
			Logger:           in.log(),
		}
	})
}

// tlsConfig picks, per connection, the SVID of the local workload whose IP
// is the connection's local (original destination) address.
func (in *Inbound) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			dst := addrPort(hello.Conn.LocalAddr()).Addr()
			w := in.inboundWorkload(in.Store.Snapshot(), dst)
			if w == nil {
				return nil, fmt.Errorf("proxy: tunnel connection from %s addressed to %s, which is not an enrolled workload on node %q", hello.Conn.RemoteAddr(), dst, in.NodeName)
			}
			c := hbone.ServerTLSConfig(in.Identities.Source(w.Identity), in.Identities.Bundles(), tlsconfig.AuthorizeAny())
			c.MinVersion = tls.VersionTLS13
			c.NextProtos = []string{hbone.ALPN}
			return c, nil
		},
	}
}

// Serve serves HBONE on ln (a transparent listener on mesh.HBONEPort in production)
// until Close.
func (in *Inbound) Serve(ln net.Listener) error {
	in.init()
	return in.srv.Serve(ln)
}

// Server is the HBONE server (for its handshake metrics).
func (in *Inbound) Server() *hbone.Server {
	in.init()
	return in.srv
}

// Close stops the listeners and resets every stream.
func (in *Inbound) Close() error {
	in.init()
	return in.srv.Close()
}

// Drain hands the tunnels over: listeners close, peers get GOAWAY and open
// their next streams elsewhere, streams in flight run to their end (see
// hbone.Server.Shutdown).
func (in *Inbound) Drain(ctx context.Context) error {
	in.init()
	return in.srv.Shutdown(ctx)
}

// tunnelSource is the client address of a tunnelled stream and the
// workload there whose identity the peer proved (nil: none did). The
// tunnel's TCP source is what the network vouches for. The Forwarded header
// may name another address only when the tunnel comes from a node, not a
// pod (a pod, a waypoint or gateway included, speaks for itself, as in
// Istio ambient), and the peer proved the identity of the workload at that
// address: the source node's agent on behalf of its pod. Any other claim is
// ignored and counted, so a tenant holding a certificate of its own service
// account cannot pass an ipBlocks rule, take another pod's source IP on
// delivery or falsify telemetry by claiming an address.
func (in *Inbound) tunnelSource(snap *config.Snapshot, req *hbone.Request) (netip.Addr, *config.Workload) {
	remote := addrPort(req.RemoteAddr).Addr()
	provenAt := func(a netip.Addr) *config.Workload {
		if w := snap.WorkloadByIP(a); w != nil && w.Identity == req.Peer {
			return w
		}
		return nil
	}
	claimed, ok := hbone.ParseForwarded(req.Forwarded)
	if !ok || claimed == remote {
		return remote, provenAt(remote)
	}
	if snap.WorkloadByIP(remote) == nil {
		if w := provenAt(claimed); w != nil {
			return claimed, w
		}
	}
	in.Metrics.forwardedIgnored()
	in.log().Debug("ignoring a Forwarded address the tunnel's peer may not speak for", "peer", req.Peer, "remote", remote, "forwarded", claimed)
	return remote, provenAt(remote)
}

func (in *Inbound) handle(ctx context.Context, req *hbone.Request) (err error) {
	start := time.Now()
	snap := in.Store.Snapshot()
	src, srcW := in.tunnelSource(snap, req)
	dst, perr := netip.ParseAddrPort(req.Authority)
	if perr != nil { // addressed to nobody: refused, not recorded
		return hbone.Refuse(http.StatusBadRequest, fmt.Sprintf(":authority %q is not ip:port", req.Authority))
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	rec := &connRecord{Direction: "inbound", Reporter: ReporterDestination, Security: SecurityMutualTLS, Start: start,
		Src: netip.AddrPortFrom(src, 0), Dst: dst, Source: workloadInfo(srcW), Tunnel: addrPort(req.LocalAddr).String()}
	rec.Source.Principal = spiffeString(req.Peer)
	if rec.Source.Namespace == "" {
		rec.Source.Namespace = weftmesh.NamespaceOf(req.Peer)
	}
	defer func() { err = in.answer(rec, err) }()
	return in.serveStream(ctx, snap, req, rec, src, dst)
}

// answer records a stream's result and turns it into what the HBONE server
// does: a refusal with a status is sent as that status, one without (the
// stream could not be accepted) ends the stream with its cause, and a
// stream that ran has been answered already.
func (in *Inbound) answer(rec *connRecord, err error) error {
	in.record(rec, err)
	rf, ok := refused(err)
	switch {
	case !ok:
		return nil
	case rf.Status != 0:
		return hbone.Refuse(rf.Status, rf.Error())
	default:
		return rf.Cause
	}
}

// serveStream checks a tunnelled stream from src to dst and delivers it.
func (in *Inbound) serveStream(ctx context.Context, snap *config.Snapshot, req *hbone.Request, rec *connRecord, src netip.Addr, dst netip.AddrPort) error {
	w := in.inboundWorkload(snap, dst.Addr())
	if w == nil {
		return in.notHere(dst.Addr())
	}
	rec.Dest = workloadInfo(w)
	rec.Service = servingService(snap, w, dst.Port(), hbone.ParseForwardedHost(req.Forwarded))
	// The client authorized the identity presented on this connection; the
	// stream may only reach a workload with that identity.
	if presented := in.inboundWorkload(snap, addrPort(req.LocalAddr).Addr()); presented == nil || presented.Identity != w.Identity {
		return &refusal{Flag: FlagDenied, Status: http.StatusForbidden,
			Cause: fmt.Errorf("tunnel was opened to %s but :authority %s belongs to %s", req.LocalAddr, dst, w.Identity)}
	}
	a, v, err := in.admit(ctx, snap, w, src, dst, req.Peer)
	rec.verdict = v
	if err != nil {
		return err
	}
	defer in.admitted.remove(a)
	st, err := req.Accept()
	if err != nil {
		a.up.Close()
		return &refusal{Flag: FlagUpstreamFailure, Cause: err}
	}
	in.Metrics.open(rec)
	rec.RecvBytes, rec.SentBytes, err = hbone.Pipe(st, a.up)
	return a.result(err)
}

// admit checks policy, with the snapshot w was found in, for a connection
// from src (authenticated as peer, zero for plaintext) to the local
// workload w at dst and dials the pod. It returns the policy verdict and,
// on failure, a refusal carrying the HBONE status. An admitted connection
// is rechecked on policy changes (Recheck) until the caller removes it
// from e.admitted.
func (e *Env) admit(ctx context.Context, snap *config.Snapshot, w *config.Workload, src netip.Addr, dst netip.AddrPort, peer spiffeid.ID) (*admitted, verdict, error) {
	ns := ""
	if !peer.IsZero() {
		ns = weftmesh.NamespaceOf(peer)
	}
	d := check(snap, w, src, dst, principal(peer), ns)
	e.Metrics.dryRun(d.DryRun)
	v := verdictOf(d)
	if !d.Allowed {
		cause := fmt.Errorf("denied: %s", d.Reason)
		if d.Policy != "" {
			cause = fmt.Errorf("denied by policy %s: %s", d.Policy, d.Reason)
		}
		return nil, v, &refusal{Flag: FlagDenied, Status: http.StatusForbidden, Cause: cause}
	}
	dctx, cancel := context.WithTimeout(ctx, e.dialTimeout())
	defer cancel()
	up, _, err := dialFrom(dctx, e.log(), src, dst, e.dialTimeout())
	if err != nil {
		return nil, v, &refusal{Flag: FlagUpstreamFailure, Status: http.StatusServiceUnavailable, Cause: fmt.Errorf("connecting to %s: %w", dst, err)}
	}
	a := &admitted{up: up, dst: w.Name, src: src, dstAP: dst, principal: principal(peer), namespace: ns}
	e.admitted.add(a)
	return a, v, nil
}

// localResult is what the in-process inbound half tells the outbound one:
// the policy verdict, the bytes copied each way and how it ended (a
// refusal, or the pipe's error).
type localResult struct {
	verdict
	recv, sent int64
	err        error
}

// serveLocal is the in-process inbound half for a connection from a pod on
// this node (src, identity from capture) to a pod on this node: the same
// checks and delivery as a tunnelled stream, recorded as such
// (inbound_local), with the caller's snapshot. service is the Service the
// client addressed, if any.
func (in *Inbound) serveLocal(ctx context.Context, snap *config.Snapshot, down hbone.Stream, srcW *config.Workload, src, dst netip.AddrPort, service string) (res localResult) {
	r := &connRecord{Direction: "inbound_local", Reporter: ReporterDestination, Security: SecurityMutualTLS, Start: time.Now(),
		Src: src, Dst: dst, Source: workloadInfo(srcW), Service: istiolabels.Service{Host: service}}
	defer func() { in.record(r, res.err) }()
	w := in.localWorkload(snap, dst.Addr())
	if w == nil {
		res.err = in.notHere(dst.Addr())
		return res
	}
	r.Dest = workloadInfo(w)
	r.Service = servingService(snap, w, dst.Port(), service)
	var a *admitted
	a, res.verdict, res.err = in.admit(ctx, snap, w, src.Addr(), dst, srcW.Identity)
	r.verdict = res.verdict
	if res.err != nil {
		return res
	}
	defer in.admitted.remove(a)
	in.Metrics.open(r)
	res.recv, res.sent, res.err = hbone.Pipe(down, a.up)
	res.err = a.result(res.err)
	r.RecvBytes, r.SentBytes = res.recv, res.sent
	return res
}
