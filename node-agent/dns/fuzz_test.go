package dns

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandler feeds arbitrary bytes to the request path as a pod's query:
// it must never panic, and any reply must parse, answer the query's id and
// fit the UDP limit. The seed corpus runs with go test.
func FuzzHandler(f *testing.F) {
	edns := new(dns.Msg)
	edns.SetQuestion("api.example.com.", dns.TypeA)
	edns.SetEdns0(1232, true)
	ednsQ, _ := edns.Pack()
	for _, seed := range [][]byte{
		query("reviews.default.svc.cluster.local.", dns.TypeA),
		query("api.example.com.", dns.TypeAAAA),
		query("a.wild.example.com.", dns.TypeA),
		query("www.example.org.", dns.TypeTXT),
		ednsQ,
		{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c}, // compression loop
		{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{},
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	h, _ := newHandler(f, &fakeUpstream{answer: upstreamAnswer})
	client := netip.MustParseAddrPort(clientIP + ":40000")
	dst := netip.MustParseAddrPort(upstreamIP + ":53")
	f.Fuzz(func(t *testing.T, msg []byte, tcp bool) {
		h.Forwarder = &fakeUpstream{answer: upstreamAnswer} // per call: fakeUpstream is not concurrent
		out := h.Serve(context.Background(), Request{Client: client, Dst: dst, TCP: tcp, Msg: msg})
		if out == nil {
			return
		}
		r := new(dns.Msg)
		if err := r.Unpack(out); err != nil {
			t.Fatalf("reply %x does not parse: %v", out, err)
		}
		if len(msg) < 2 || binary.BigEndian.Uint16(out) != binary.BigEndian.Uint16(msg) {
			t.Fatalf("reply id %x for query %x", out[:2], msg)
		}
		if !tcp && len(out) > maxUDPAnswer {
			t.Fatalf("UDP reply of %d bytes", len(out))
		}
	})
}
