// Package dns is the node agent's DNS proxy (Istio ambient's DNS
// capture): enrolled pods' queries to port 53, steered to it by the capture
// programs, are answered from the node agent's mesh state for Kubernetes
// Service hostnames and ServiceEntry hosts (with their VIPs, auto-allocated
// by the control plane when the entry has none), and forwarded unchanged to
// the server the pod asked (the original destination) for everything else.
//
// The request path is split as in ztunnel's src/dns: Handler decides
// (parse, who asks, answer or forward), names.go finds the service,
// forward.go talks to upstream, server.go owns the sockets. Every request
// is untrusted input: sizes are bounded, a malformed query gets FORMERR,
// and nothing in it can make the proxy forward anywhere but to a port-53
// destination the pod itself chose.
package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"

	"github.com/miekg/dns"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
)

// Port is where the proxy listens (UDP and TCP), Istio's DNS capture port.
const Port = 15053

// Limits on untrusted input and on what the proxy holds for it.
const (
	// MaxMessage bounds a query (UDP datagram or TCP message): real
	// queries are a few hundred bytes at most.
	MaxMessage = 4096
	// maxUDPAnswer caps the EDNS payload size the proxy honours.
	maxUDPAnswer = 4096
	// TTL of the records the proxy answers with, ztunnel's: short enough
	// that a changed VIP is seen soon, long enough to spare the proxy.
	TTL = 30
)

// Results of a request (the result label of the requests metric).
const (
	ResultAnswered       = "answered"        // records from the mesh
	ResultEmpty          = "empty"           // a mesh host without records of that type: NOERROR, no answer
	ResultForwarded      = "forwarded"       // upstream's answer relayed
	ResultForwardFailed  = "forward_failed"  // upstream did not answer: SERVFAIL
	ResultRefused        = "refused"         // nothing to forward to: REFUSED
	ResultMalformed      = "malformed"       // FORMERR, or dropped when not even a header
	ResultNotImplemented = "not_implemented" // not a QUERY: NOTIMP
)

// Request is one query as received.
type Request struct {
	// Client is the source of the query.
	Client netip.AddrPort
	// Dst is where the client sent it (the original destination).
	Dst netip.AddrPort
	// TCP: the query came over TCP (no truncation, forwarded over TCP).
	TCP bool
	// Msg is the wire-format query.
	Msg []byte
}

// Forwarder sends a query, unchanged, to a server and returns its answer.
type Forwarder interface {
	Forward(ctx context.Context, server netip.AddrPort, tcp bool, query []byte) ([]byte, error)
}

// Handler answers queries. Safe for concurrent use.
type Handler struct {
	// Snapshot is the node agent's current mesh state.
	Snapshot func() *config.Snapshot
	// Node is this node's name: only enrolled pods on it get answers from
	// the mesh.
	Node      string
	Forwarder Forwarder
	Metrics   *Metrics // nil: none
	Log       *slog.Logger

	names namesCache
}

// Serve handles one query and returns the reply to send (nil: send none).
func (h *Handler) Serve(ctx context.Context, r Request) []byte {
	reply, result := h.serve(ctx, r)
	h.Metrics.count(result)
	if h.Log != nil && h.Log.Enabled(ctx, slog.LevelDebug) {
		h.Log.Debug("dns request", "client", r.Client, "dst", r.Dst, "tcp", r.TCP, "result", result)
	}
	return reply
}

func (h *Handler) serve(ctx context.Context, r Request) ([]byte, string) {
	if len(r.Msg) < 12 || len(r.Msg) > MaxMessage {
		return formErr(r.Msg), ResultMalformed
	}
	req := new(dns.Msg)
	if err := req.Unpack(r.Msg); err != nil {
		return formErr(r.Msg), ResultMalformed
	}
	if req.Response {
		return nil, ResultMalformed // never answer an answer: no reflection loops
	}
	if req.Opcode != dns.OpcodeQuery {
		return h.fail(req, dns.RcodeNotImplemented, r.TCP), ResultNotImplemented
	}
	if len(req.Question) != 1 {
		return h.fail(req, dns.RcodeFormatError, r.TCP), ResultMalformed
	}
	if q := req.Question[0]; q.Qclass == dns.ClassINET && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA) {
		if ns, ok := h.client(r.Client.Addr()); ok {
			if svc := h.names.get(h.Snapshot()).find(q.Name, ns); svc != nil {
				return h.answer(req, svc, r.TCP)
			}
		}
	}
	return h.forward(ctx, req, r)
}

// client is the namespace of an enrolled pod on this node with address ip.
func (h *Handler) client(ip netip.Addr) (string, bool) {
	w := h.Snapshot().WorkloadByIP(ip)
	if w == nil || w.Proto.GetNode() != h.Node || w.Proto.GetTunnelProtocol() != workloadv1.TunnelProtocol_HBONE {
		return "", false
	}
	return w.Proto.GetNamespace(), true
}

// forward relays the query, unchanged, to where the client sent it. Only
// to port 53, and never to the proxy itself: a query sent to the proxy
// directly (not captured) has nowhere else to go.
func (h *Handler) forward(ctx context.Context, req *dns.Msg, r Request) ([]byte, string) {
	if r.Dst.Port() != 53 || !r.Dst.Addr().IsValid() || r.Dst.Addr().IsUnspecified() {
		return h.fail(req, dns.RcodeRefused, r.TCP), ResultRefused
	}
	resp, err := h.Forwarder.Forward(ctx, r.Dst, r.TCP, r.Msg)
	if err != nil || !validAnswer(resp, req.Id) {
		if h.Log != nil {
			h.Log.Debug("dns forward failed", "server", r.Dst, "err", err)
		}
		return h.fail(req, dns.RcodeServerFailure, r.TCP), ResultForwardFailed
	}
	return resp, ResultForwarded
}

// validAnswer: an answer to our query (same id, QR set), so a stray or
// spoofed datagram is not relayed.
func validAnswer(b []byte, id uint16) bool {
	return len(b) >= 12 && binary.BigEndian.Uint16(b) == id && b[2]&0x80 != 0
}

// errTruncated is returned when even a truncated answer does not fit.
var errTruncated = errors.New("answer does not fit")

// answer builds the authoritative reply for a mesh host.
func (h *Handler) answer(req *dns.Msg, svc *config.Service, tcp bool) ([]byte, string) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative, resp.RecursionAvailable = true, true
	q := req.Question[0]
	for _, ip := range h.addresses(svc, q.Qtype) {
		hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: TTL}
		if ip.Is4() {
			resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr, A: ip.AsSlice()})
		} else {
			resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
		}
	}
	result := ResultAnswered
	if len(resp.Answer) == 0 {
		result = ResultEmpty // the host exists: NOERROR without records, not NXDOMAIN
	}
	b, err := pack(req, resp, tcp)
	if err != nil {
		return h.fail(req, dns.RcodeServerFailure, tcp), ResultForwardFailed
	}
	return b, result
}

// addresses are the service's VIPs of the query's family.
func (h *Handler) addresses(svc *config.Service, qtype uint16) []netip.Addr {
	var out []netip.Addr
	for _, ip := range svc.VIPs {
		if ip.Is4() == (qtype == dns.TypeA) {
			out = append(out, ip)
		}
	}
	return out
}

// fail is an empty reply with rcode.
func (h *Handler) fail(req *dns.Msg, rcode int, tcp bool) []byte {
	resp := new(dns.Msg)
	resp.SetRcode(req, rcode)
	resp.RecursionAvailable = true
	b, err := pack(req, resp, tcp)
	if err != nil {
		return nil
	}
	return b
}

// pack encodes resp for the transport: over UDP, truncated (TC set) to 512
// bytes, or to the size the client's EDNS option offers (at most 4096).
func pack(req, resp *dns.Msg, tcp bool) ([]byte, error) {
	size := dns.MaxMsgSize
	if !tcp {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPAnswer)
			resp.SetEdns0(uint16(size), false)
		}
	}
	resp.Truncate(size)
	b, err := resp.Pack()
	if err == nil && len(b) > size {
		return nil, errTruncated
	}
	return b, err
}

// formErr is a FORMERR reply to a message that did not parse, if it has a
// header to answer (id and opcode kept); nil otherwise.
func formErr(msg []byte) []byte {
	if len(msg) < 12 || msg[2]&0x80 != 0 {
		return nil
	}
	resp := dns.Msg{MsgHdr: dns.MsgHdr{
		Id: binary.BigEndian.Uint16(msg), Response: true,
		Opcode: int(msg[2]>>3) & 0xf, Rcode: dns.RcodeFormatError,
	}}
	b, err := resp.Pack()
	if err != nil {
		return nil
	}
	return b
}
