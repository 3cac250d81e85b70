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
// Half-close is exact in both directions: either side's END_STREAM ends
// only its own direction, and the stream is done when both ended. Both ends
// are an HTTP/2 implementation of our own (h2*.go, on x/net/http2's Framer
// and hpack): x/net/http2's Server cannot end a response while the client
// still sends without resetting the stream, and its Transport holds a send
// buffer as large as the server's frames (up to 512 KiB) and a goroutine
// for every open stream. Ours writes each DATA frame from the goroutine that
// calls Write, so an open stream holds only what it received and not yet
// read.
//
// Flow control windows follow ztunnel: 4 MiB stream window, 16 MiB
// connection window; frames are 256 KiB, not ztunnel's 1 MiB (see
// Options). Both ends bound what a peer can make them hold or do; the
// server, whose peers are not yet authorized for any stream when their
// frames arrive, also bounds concurrent streams and handlers, header list
// size, streams reset before an answer (CVE-2023-44487), floods of frames
// that carry nothing (h2limits.go).
package hbone
