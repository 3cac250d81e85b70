// Package proxy is the node agent's L4 data path, split by direction like
// ztunnel (a reader finds a packet's path by file name):
//
//   - outbound.go: Outbound, the transparent listener on mesh.OutboundPort. A connection
//     from an enrolled local pod is sent over HBONE to its destination (a
//     Service VIP is first resolved to an endpoint), or passed through as
//     plain TCP, marked so capture skips it, when the destination is not in
//     the mesh.
//   - inbound.go: Inbound, the HBONE server on mesh.HBONEPort. Each CONNECT is checked
//     (destination is a workload on this node, L4 authorization with the
//     peer's principal) and delivered to the pod from a socket bound to the
//     original client IP.
//   - inbound_plaintext.go: InboundPlaintext, the transparent listener on
//     mesh.InboundPlaintextPort for plaintext traffic to enrolled pods (principal "": STRICT
//     PeerAuthentication refuses it, PERMISSIVE admits it).
//   - telemetry.go: Istio's istio_tcp_* metrics and one JSON access-log line
//     per connection; the connection record and its result.
//
// # One record per connection
//
// Each handler (Outbound.handle, Inbound.handle, servePlaintext, and
// serveLocal for the in-process inbound half) creates its connRecord, defers
// ONE call that records it (Env.end on a transparent listener, which first
// resets a refused client; Inbound.answer for an HBONE stream, which turns
// a refusal into the CONNECT's status) and returns its result from the
// functions below it: nil when the connection ran to its end, the pipe's
// error when it ended badly, or a *refusal (response flag, HBONE status,
// cause) when no byte crossed it, modelled on ztunnel's ConnectionResult.
// The functions below fill in what they learn (peers, service, tunnel,
// policy verdict, bytes) but never how the connection ended; serveLocal
// returns its verdict, bytes and result to the outbound half instead of
// writing into the outbound record.
//
// # Which identity the inbound side presents (design decision)
//
// The HBONE server presents the certificate of the DESTINATION WORKLOAD, as
// ztunnel does, and the client authorizes exactly that identity. The server
// knows which workload is meant from the local address of the accepted
// connection (tls.Config.GetConfigForClient): the client dials the tunnel at
// "<destination pod IP>:<TunnelPort>", and on a real node the inbound
// capture steers that flow to the agent's transparent HBONE listener, so
// accept() sees the pod IP as the local address. This is ztunnel's wire
// behaviour, so Weft and Istio ambient nodes interoperate in both directions.
//
// The alternatives were rejected: TLS SNI cannot carry it (hbone.Dialer does
// not set ServerName, and SNI cannot hold an IP anyway), and presenting a
// node-agent identity is impossible because the CA issues a node agent only
// the identities of pods on its node. A consequence is that the client pools
// one tunnel connection per (source identity, destination pod) rather than
// per destination node, and the NodeAddress of the destination node is not
// needed to reach it.
//
// Every CONNECT must name (in :authority) a workload on this node whose
// identity is the one presented on the connection; anything else is refused
// (503 for a destination that is not here, 403 for an identity mismatch), so
// a client cannot use one pod's tunnel to reach another pod.
//
// # Same-node destinations
//
// Traffic the agent originates is never captured, so the agent cannot reach
// its own transparent HBONE listener by dialing a local pod's IP. A connection whose
// destination workload is on this node is therefore handed in-process to the
// local Inbound (Outbound.Local) and goes through exactly the same checks as
// a tunnelled stream (destination lookup, the policy of the connection's
// snapshot with the source workload's principal, source-IP-preserving
// delivery, reporter=destination telemetry) without a TLS round trip. The source principal is trustworthy
// there for the same reason the outbound side picks the source certificate:
// the connection was captured on the source pod's own veth. Without
// Outbound.Local, same-node destinations are tunnelled like remote ones.
//
// # Source IP
//
// Inbound delivery binds the socket to the client IP with IP_TRANSPARENT and
// IP_FREEBIND; when that bind fails (no CAP_NET_ADMIN, or the address is not
// routable back to us) it falls back to an ordinary dial and logs at debug.
// The client IP is the peer address for plaintext, and for HBONE the
// tunnel's TCP source, as in ztunnel. Because Weft's agents dial tunnels
// from the node's address, not the pod's, the Forwarded header may name the
// pod instead, but only when the tunnel comes from a node address and its
// peer proved the identity of the workload at the named address
// (Inbound.tunnelSource); through a waypoint or gateway the destination
// sees the proxy's address, as in Istio ambient.
package proxy
