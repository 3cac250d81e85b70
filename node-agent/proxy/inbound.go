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
)

// Inbound is the HBONE server on 15008. Per connection it presents the
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
			w := in.localWorkload(in.Store.Snapshot(), dst)
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

// Serve serves HBONE on ln (a transparent listener on 15008 in production)
// until Close.
func (in *Inbound) Serve(ln net.Listener) error {
	in.init()
	return in.srv.Serve(ln)
}

// Stats are the tunnel server's counters.
func (in *Inbound) Stats() *hbone.ServerStats {
	in.init()
	return &in.srv.Stats
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

func (in *Inbound) handle(ctx context.Context, req *hbone.Request) error {
	rec := &connRecord{Direction: "inbound", Reporter: ReporterDestination, Security: SecurityMutualTLS, Start: time.Now()}
	snap := in.Store.Snapshot()
	src, srcW := in.tunnelSource(snap, req)
	rec.Source = workloadInfo(srcW)
	rec.Source.Principal = spiffeString(req.Peer)
	if rec.Source.Namespace == "" {
		rec.Source.Namespace = namespaceOf(req.Peer)
	}
	rec.Src = netip.AddrPortFrom(src, 0)
	dst, err := netip.ParseAddrPort(req.Authority)
	if err != nil {
		return hbone.Refuse(http.StatusBadRequest, fmt.Sprintf(":authority %q is not ip:port", req.Authority))
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	rec.Dst = dst
	rec.Tunnel = addrPort(req.LocalAddr).String()

	w := in.localWorkload(snap, dst.Addr())
	if w == nil {
		rec.Flags, rec.Err = FlagUpstreamFailure, fmt.Errorf("destination %s is not an enrolled workload on node %q", dst.Addr(), in.NodeName)
		finish(in.Metrics, in.AccessLog, rec)
		return hbone.Refuse(http.StatusServiceUnavailable, rec.Err.Error())
	}
	rec.Dest = workloadInfo(w)
	// The client authorized the identity presented on this connection; the
	// stream may only reach a workload with that identity.
	if presented := in.localWorkload(snap, addrPort(req.LocalAddr).Addr()); presented == nil || presented.Identity != w.Identity {
		rec.Flags, rec.Err = FlagDenied, fmt.Errorf("tunnel was opened to %s but :authority %s belongs to %s", req.LocalAddr, dst, w.Identity)
		finish(in.Metrics, in.AccessLog, rec)
		return hbone.Refuse(http.StatusForbidden, rec.Err.Error())
	}
	up, status, err := in.admit(ctx, snap, rec, w, src, dst, req.Peer)
	if err != nil {
		finish(in.Metrics, in.AccessLog, rec)
		return hbone.Refuse(status, err.Error())
	}
	st, err := req.Accept()
	if err != nil {
		up.Close()
		rec.Flags, rec.Err = FlagUpstreamFailure, err
		finish(in.Metrics, in.AccessLog, rec)
		return err
	}
	in.Metrics.open(rec)
	rec.RecvBytes, rec.SentBytes, rec.Err = hbone.Pipe(st, up)
	finish(in.Metrics, in.AccessLog, rec)
	return nil
}

// admit checks policy for a connection from src (authenticated as peer,
// zero for plaintext) to the local workload w at dst and dials the pod. On
// failure it fills rec and returns the HBONE status and the reason.
func (e *Env) admit(ctx context.Context, snap *config.Snapshot, rec *connRecord, w *config.Workload, src netip.Addr, dst netip.AddrPort, peer spiffeid.ID) (*net.TCPConn, int, error) {
	ns := ""
	if !peer.IsZero() {
		ns = namespaceOf(peer)
	}
	d := check(snap, w, src, dst, principal(peer), ns)
	rec.Decision, rec.Policy, rec.Reason = decisionWord(d), d.Policy, d.Reason
	if !d.Allowed {
		rec.Flags = FlagDenied
		if d.Policy != "" {
			rec.Err = fmt.Errorf("denied by policy %s: %s", d.Policy, d.Reason)
		} else {
			rec.Err = fmt.Errorf("denied: %s", d.Reason)
		}
		return nil, http.StatusForbidden, rec.Err
	}
	dctx, cancel := context.WithTimeout(ctx, e.dialTimeout())
	defer cancel()
	up, _, err := dialFrom(dctx, e.log(), src, dst, e.dialTimeout())
	if err != nil {
		rec.Flags, rec.Err = FlagUpstreamFailure, fmt.Errorf("connecting to %s: %w", dst, err)
		return nil, http.StatusServiceUnavailable, rec.Err
	}
	return up, 0, nil
}

// serveLocal is the in-process inbound half for a connection from a pod on
// this node (src, identity from capture) to a pod on this node: the same
// checks and delivery as a tunnelled stream. It returns the bytes copied
// each way and the refusal or pipe error.
func (in *Inbound) serveLocal(ctx context.Context, snap *config.Snapshot, down hbone.Stream, srcW *config.Workload, src netip.AddrPort, dst netip.AddrPort, rec *connRecord) (recv, sent int64, err error) {
	r := &connRecord{Direction: "inbound_local", Reporter: ReporterDestination, Security: SecurityMutualTLS, Start: time.Now(),
		Src: src, Dst: dst, Source: workloadInfo(srcW), Service: rec.Service}
	defer func() { finish(in.Metrics, in.AccessLog, r) }()
	w := in.localWorkload(snap, dst.Addr())
	if w == nil {
		r.Flags, r.Err = FlagUpstreamFailure, fmt.Errorf("destination %s is not an enrolled workload on node %q", dst.Addr(), in.NodeName)
		rec.Flags = r.Flags
		return 0, 0, r.Err
	}
	r.Dest = workloadInfo(w)
	up, _, aerr := in.admit(ctx, snap, r, w, src.Addr(), dst, srcW.Identity)
	rec.Decision, rec.Policy, rec.Reason = r.Decision, r.Policy, r.Reason
	if aerr != nil {
		rec.Flags = r.Flags
		return 0, 0, aerr
	}
	in.Metrics.open(r)
	r.RecvBytes, r.SentBytes, r.Err = hbone.Pipe(down, up)
	return r.RecvBytes, r.SentBytes, r.Err
}
