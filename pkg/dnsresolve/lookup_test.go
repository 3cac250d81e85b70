package dnsresolve

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// serveZone runs a DNS server on loopback answering from records (by
// question name and type); other names get NXDOMAIN, "fail." SERVFAIL.
func serveZone(t *testing.T, records map[string][]dns.RR) *dns.ClientConfig {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		switch {
		case q.Name == "fail.example.com.":
			m.Rcode = dns.RcodeServerFailure
		case records[q.Name] == nil:
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range records[q.Name] {
			if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	host, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	return &dns.ClientConfig{Servers: []string{host}, Port: port, Search: []string{"ns.svc.cluster.local"}, Ndots: 2, Timeout: 2}
}

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLookup(t *testing.T) {
	conf := serveZone(t, map[string][]dns.RR{
		"api.example.com.": {rr(t, "api.example.com. 30 IN A 10.0.0.1"), rr(t, "api.example.com. 20 IN A 10.0.0.2"),
			rr(t, "api.example.com. 60 IN AAAA fd00::1")},
		"www.example.com.":                      {rr(t, "www.example.com. 10 IN CNAME api.example.com."), rr(t, "api.example.com. 30 IN A 10.0.0.1")},
		"v6.example.com.":                       {rr(t, "v6.example.com. 60 IN AAAA fd00::2")},
		"short.ns.svc.cluster.local.":           {rr(t, "short.ns.svc.cluster.local. 5 IN A 10.96.0.9")},
		"v4only.example.com.":                   {rr(t, "v4only.example.com. 60 IN A 10.0.0.4")},
		"svc.example.com.ns.svc.cluster.local.": nil,
	})
	c := NewClientFrom(conf)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		f     Family
		addrs []string
		ttl   time.Duration
	}{
		{"api.example.com", V4Only, []string{"10.0.0.1", "10.0.0.2"}, 20 * time.Second},
		{"api.example.com", V6Only, []string{"fd00::1"}, time.Minute},
		{"api.example.com", All, []string{"10.0.0.1", "10.0.0.2", "fd00::1"}, 20 * time.Second},
		{"api.example.com", Auto, []string{"fd00::1"}, time.Minute},
		{"v4only.example.com", Auto, []string{"10.0.0.4"}, time.Minute},
		{"v6.example.com", V4Preferred, []string{"fd00::2"}, time.Minute},
		{"www.example.com", V4Only, []string{"10.0.0.1"}, 10 * time.Second}, // the CNAME's TTL is the smaller
		{"short", V4Only, []string{"10.96.0.9"}, 5 * time.Second},           // the search list
		{"10.1.2.3", V4Only, []string{"10.1.2.3"}, Forever},
	} {
		a, err := c.Lookup(ctx, tc.name, tc.f)
		if err != nil {
			t.Errorf("%s %s: %v", tc.name, tc.f, err)
			continue
		}
		if !slices.Equal(a.Addrs, addrs(tc.addrs...)) || a.TTL != tc.ttl {
			t.Errorf("%s %s: %v ttl %v, want %v ttl %v", tc.name, tc.f, a.Addrs, a.TTL, tc.addrs, tc.ttl)
		}
	}
	if _, err := c.Lookup(ctx, "nowhere.example.com", V4Only); !errors.Is(err, ErrNotFound) {
		t.Errorf("NXDOMAIN: %v, want ErrNotFound", err)
	}
	if _, err := c.Lookup(ctx, "v6.example.com", V4Only); !errors.Is(err, ErrNotFound) {
		t.Errorf("no A record: %v, want ErrNotFound", err)
	}
	if _, err := c.Lookup(ctx, "fail.example.com", V4Only); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("SERVFAIL: %v, want an error other than ErrNotFound", err)
	}
}
