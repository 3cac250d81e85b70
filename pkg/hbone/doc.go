// Package hbone implements HBONE, Istio's "HTTP-Based Overlay Network
// Environment": TCP streams tunnelled as HTTP/2 CONNECT requests over mutual
// TLS 1.3 (ALPN "h2") between SPIFFE identities. The node agent and the
// waypoint both use it, as client (Dialer) and server (Server).
//
// Wire contract (same as ztunnel, so Weft interoperates with Istio ambient):
//
//   - :method CONNECT, :authority = original destination "ip:port";
//   - Forwarded: for=<client address>, baggage, traceparent request headers;
//   - 200 accepts the stream, any other status refuses it before data flows;
//   - END_STREAM is a TCP half-close, RST_STREAM is a TCP reset.
//
// Flow control defaults follow ztunnel: 4 MiB stream window, 16 MiB
// connection window, 1 MiB frames (see Options).
package hbone
