package dns

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkHandler is the request path's cost without sockets: a mesh
// host answered from the snapshot, and a name forwarded (to a fake
// upstream that answers at once).
func BenchmarkHandler(b *testing.B) {
	h, _ := newHandler(b, &fakeUpstream{answer: upstreamAnswer})
	client := netip.MustParseAddrPort(clientIP + ":40000")
	dst := netip.MustParseAddrPort(upstreamIP + ":53")
	for _, c := range []struct{ name, qname string }{
		{"answered", "api.example.com."},
		{"wildcard", "x.a.wild.example.com."},
		{"forwarded", "www.example.org."},
	} {
		msg := query(c.qname, dns.TypeA)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.Forwarder = &fakeUpstream{answer: upstreamAnswer}
				if h.Serve(context.Background(), Request{Client: client, Dst: dst, Msg: msg}) == nil {
					b.Fatal("no reply")
				}
			}
		})
	}
}
