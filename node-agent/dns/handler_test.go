package dns

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
)

const (
	clientIP   = "10.244.1.5" // enrolled pod on node-a, namespace default
	plainIP    = "10.244.1.6" // pod on node-a outside the mesh
	remoteIP   = "10.244.2.5" // enrolled pod on another node
	upstreamIP = "10.96.0.10"
)

func service(ns, host string, vips ...string) (string, proto.Message) {
	return ns + "/" + host, &workloadv1.Address{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{
		Name: strings.Split(host, ".")[0], Namespace: ns, Hostname: host, Addresses: vips,
		Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: 8080}},
	}}}
}

func pod(name, ns, node, ip string, tunnel workloadv1.TunnelProtocol, services ...string) (string, proto.Message) {
	svcs := map[string]*workloadv1.PortList{}
	for _, s := range services {
		svcs[s] = &workloadv1.PortList{Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: 8080}}}
	}
	return "Kubernetes//Pod/" + ns + "/" + name, &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: &workloadv1.Workload{
		Uid: "Kubernetes//Pod/" + ns + "/" + name, Name: name, Namespace: ns, Node: node, Addresses: []string{ip},
		ServiceAccount: "default", TrustDomain: "cluster.local", TunnelProtocol: tunnel,
		Status: workloadv1.WorkloadStatus_HEALTHY, Services: svcs,
	}}}
}

func testStore(t testing.TB) *config.Store {
	t.Helper()
	res := map[string]proto.Message{}
	add := func(k string, m proto.Message) { res[k] = m }
	add(pod("client", "default", "node-a", clientIP, workloadv1.TunnelProtocol_HBONE))
	add(pod("plain", "default", "node-a", plainIP, workloadv1.TunnelProtocol_NONE))
	add(pod("remote", "default", "node-b", remoteIP, workloadv1.TunnelProtocol_HBONE))
	add(pod("db-0", "default", "node-b", "10.244.2.9", workloadv1.TunnelProtocol_HBONE, "default/db.default.svc.cluster.local"))
	add(service("default", "reviews.default.svc.cluster.local", "10.96.1.1"))
	add(service("default", "db.default.svc.cluster.local")) // headless
	add(service("default", "api.example.com", "240.240.44.61"))
	add(service("other", "api.example.com", "240.240.9.9"))
	add(service("other", "only-other.example.com", "240.240.9.10"))
	add(service("default", "dual.example.com", "240.240.1.2", "2001:db8::2"))
	add(service("default", "*.wild.example.com", "240.240.3.3"))
	add(service("default", "novip.example.com"))
	s := config.NewStore(config.Options{})
	if err := s.Handle(config.AddressType, res, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

type fakeUpstream struct {
	calls  []netip.AddrPort
	answer func(q []byte) ([]byte, error)
}

func (f *fakeUpstream) Forward(_ context.Context, server netip.AddrPort, _ bool, q []byte) ([]byte, error) {
	f.calls = append(f.calls, server)
	if f.answer == nil {
		return nil, errors.New("unreachable")
	}
	return f.answer(q)
}

// upstreamAnswer answers every query with 192.0.2.1.
func upstreamAnswer(q []byte) ([]byte, error) {
	m := new(dns.Msg)
	if err := m.Unpack(q); err != nil {
		return nil, err
	}
	r := new(dns.Msg)
	r.SetReply(m)
	r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 7},
		A: netip.MustParseAddr("192.0.2.1").AsSlice()})
	return r.Pack()
}

func newHandler(t testing.TB, up Forwarder) (*Handler, *Metrics) {
	store := testStore(t)
	m := NewMetrics(prometheus.NewRegistry())
	return &Handler{Snapshot: store.Snapshot, Node: "node-a", Forwarder: up, Metrics: m}, m
}

func query(name string, qtype uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 4242
	b, _ := m.Pack()
	return b
}

func ask(t *testing.T, h *Handler, from string, msg []byte, tcp bool) *dns.Msg {
	t.Helper()
	out := h.Serve(context.Background(), Request{
		Client: netip.AddrPortFrom(netip.MustParseAddr(from), 40000),
		Dst:    netip.MustParseAddrPort(upstreamIP + ":53"), TCP: tcp, Msg: msg,
	})
	if out == nil {
		return nil
	}
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return r
}

func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestHandlerAnswers(t *testing.T) {
	for _, c := range []struct {
		name, from, qname string
		qtype             uint16
		want              []string
		forwarded         bool
	}{
		{name: "kubernetes service", from: clientIP, qname: "reviews.default.svc.cluster.local.", qtype: dns.TypeA, want: []string{"10.96.1.1"}},
		{name: "case insensitive", from: clientIP, qname: "Reviews.Default.SVC.cluster.local.", qtype: dns.TypeA, want: []string{"10.96.1.1"}},
		{name: "AAAA of a v4 service: empty NOERROR", from: clientIP, qname: "reviews.default.svc.cluster.local.", qtype: dns.TypeAAAA},
		{name: "headless: forwarded to the cluster DNS", from: clientIP, qname: "db.default.svc.cluster.local.", qtype: dns.TypeA, want: []string{"192.0.2.1"}, forwarded: true},
		{name: "service entry, client's namespace wins", from: clientIP, qname: "api.example.com.", qtype: dns.TypeA, want: []string{"240.240.44.61"}},
		{name: "service entry of another namespace", from: clientIP, qname: "only-other.example.com.", qtype: dns.TypeA, want: []string{"240.240.9.10"}},
		{name: "dual stack A", from: clientIP, qname: "dual.example.com.", qtype: dns.TypeA, want: []string{"240.240.1.2"}},
		{name: "dual stack AAAA", from: clientIP, qname: "dual.example.com.", qtype: dns.TypeAAAA, want: []string{"2001:db8::2"}},
		{name: "wildcard", from: clientIP, qname: "a.wild.example.com.", qtype: dns.TypeA, want: []string{"240.240.3.3"}},
		{name: "wildcard, deeper", from: clientIP, qname: "x.a.wild.example.com.", qtype: dns.TypeA, want: []string{"240.240.3.3"}},
		{name: "wildcard does not match its own base", from: clientIP, qname: "wild.example.com.", qtype: dns.TypeA, want: []string{"192.0.2.1"}, forwarded: true},
		{name: "service entry without VIP: forwarded", from: clientIP, qname: "novip.example.com.", qtype: dns.TypeA, want: []string{"192.0.2.1"}, forwarded: true},
		{name: "unknown: forwarded", from: clientIP, qname: "www.example.org.", qtype: dns.TypeA, want: []string{"192.0.2.1"}, forwarded: true},
		{name: "other types: forwarded", from: clientIP, qname: "api.example.com.", qtype: dns.TypeMX, want: []string{"192.0.2.1"}, forwarded: true},
		{name: "pod outside the mesh: forwarded", from: plainIP, qname: "api.example.com.", qtype: dns.TypeA, want: []string{"192.0.2.1"}, forwarded: true},
		{name: "pod of another node: forwarded", from: remoteIP, qname: "api.example.com.", qtype: dns.TypeA, want: []string{"192.0.2.1"}, forwarded: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := &fakeUpstream{answer: upstreamAnswer}
			h, _ := newHandler(t, up)
			r := ask(t, h, c.from, query(c.qname, c.qtype), false)
			if r == nil || r.Rcode != dns.RcodeSuccess || r.Id != 4242 || !r.Response {
				t.Fatalf("reply %v, want NOERROR to id 4242", r)
			}
			if got := answers(r); !slices.Equal(got, c.want) {
				t.Errorf("answers %v, want %v", got, c.want)
			}
			if c.forwarded != (len(up.calls) == 1) || r.Authoritative == c.forwarded {
				t.Errorf("forwarded %v (authoritative %v), want forwarded %v", up.calls, r.Authoritative, c.forwarded)
			}
			if c.forwarded && up.calls[0] != netip.MustParseAddrPort(upstreamIP+":53") {
				t.Errorf("forwarded to %v, want the original destination", up.calls)
			}
			for _, rr := range r.Answer {
				if !c.forwarded && (rr.Header().Ttl != TTL || rr.Header().Name != c.qname) {
					t.Errorf("record %v: want TTL %d and the name asked", rr, TTL)
				}
			}
		})
	}
}

func TestHandlerFailures(t *testing.T) {
	h, m := newHandler(t, &fakeUpstream{})
	// Upstream unreachable: SERVFAIL.
	if r := ask(t, h, clientIP, query("www.example.org.", dns.TypeA), false); r == nil || r.Rcode != dns.RcodeServerFailure {
		t.Errorf("upstream down: %v, want SERVFAIL", r)
	}
	// Sent to the proxy itself (not captured): nowhere to forward.
	out := h.Serve(context.Background(), Request{Client: netip.MustParseAddrPort(clientIP + ":1"),
		Dst: netip.MustParseAddrPort("10.0.0.1:15053"), Msg: query("www.example.org.", dns.TypeA)})
	if r := new(dns.Msg); out == nil || r.Unpack(out) != nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("direct query: %v, want REFUSED", r)
	}
	// Garbage with a header: FORMERR with its id; without: nothing.
	bad := append([]byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}, 0xff, 0xff)
	if r := ask(t, h, clientIP, bad, false); r == nil || r.Rcode != dns.RcodeFormatError || r.Id != 0x1234 {
		t.Errorf("garbage: %v, want FORMERR to id 0x1234", r)
	}
	if r := ask(t, h, clientIP, []byte{1, 2, 3}, false); r != nil {
		t.Errorf("a 3-byte message got a reply %v", r)
	}
	// A response is never answered.
	resp := new(dns.Msg)
	resp.SetQuestion("api.example.com.", dns.TypeA)
	resp.Response = true
	b, _ := resp.Pack()
	if r := ask(t, h, clientIP, b, false); r != nil {
		t.Errorf("a response got a reply %v", r)
	}
	// Not a query: NOTIMP.
	upd := new(dns.Msg)
	upd.SetUpdate("example.com.")
	b, _ = upd.Pack()
	if r := ask(t, h, clientIP, b, false); r == nil || r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("update: %v, want NOTIMP", r)
	}
	for result, want := range map[string]float64{ResultForwardFailed: 1, ResultRefused: 1, ResultMalformed: 3, ResultNotImplemented: 1} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(result)); got != want {
			t.Errorf("requests{result=%s} = %v, want %v", result, got, want)
		}
	}
}

// Over UDP an answer is truncated to 512 bytes without EDNS, to the
// client's EDNS size with it; TCP is never truncated.
func TestHandlerTruncation(t *testing.T) {
	res := map[string]proto.Message{}
	k, p := pod("client", "default", "node-a", clientIP, workloadv1.TunnelProtocol_HBONE)
	res[k] = p
	var vips []string
	for i := range 60 {
		vips = append(vips, netip.AddrFrom4([4]byte{240, 240, 10, byte(i + 1)}).String())
	}
	k, p = service("default", "big.example.com", vips...)
	res[k] = p
	store := config.NewStore(config.Options{})
	if err := store.Handle(config.AddressType, res, nil); err != nil {
		t.Fatal(err)
	}
	h := &Handler{Snapshot: store.Snapshot, Node: "node-a", Forwarder: &fakeUpstream{}}
	udp := ask(t, h, clientIP, query("big.example.com.", dns.TypeA), false)
	if udp == nil || !udp.Truncated || len(udp.Answer) >= 60 {
		t.Fatalf("UDP without EDNS: %v, want truncated", udp)
	}
	raw := h.Serve(context.Background(), Request{Client: netip.MustParseAddrPort(clientIP + ":1"),
		Dst: netip.MustParseAddrPort(upstreamIP + ":53"), Msg: query("big.example.com.", dns.TypeA)})
	if len(raw) > 512 {
		t.Errorf("UDP answer of %d bytes", len(raw))
	}
	m := new(dns.Msg)
	m.SetQuestion("big.example.com.", dns.TypeA)
	m.SetEdns0(4096, false)
	q, _ := m.Pack()
	if r := ask(t, h, clientIP, q, false); r == nil || r.Truncated || len(r.Answer) != 60 || r.IsEdns0() == nil {
		t.Errorf("UDP with EDNS 4096: truncated %v, %d answers", r.Truncated, len(r.Answer))
	}
	if r := ask(t, h, clientIP, query("big.example.com.", dns.TypeA), true); r == nil || r.Truncated || len(r.Answer) != 60 {
		t.Errorf("TCP: %v, want all 60 answers", r)
	}
}
