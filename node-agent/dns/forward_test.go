package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// fakeServer answers every query with 192.0.2.1, over UDP and TCP on one
// loopback port.
func fakeServer(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
		b, _ := m.Pack()
		r, _ := upstreamAnswer(b)
		w.Write(r)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestUpstream(t *testing.T) {
	server := fakeServer(t)
	u := NewUpstream(0, 1)
	for _, tcp := range []bool{false, true} {
		b, err := u.Forward(context.Background(), server, tcp, query("www.example.org.", dns.TypeA))
		r := new(dns.Msg)
		if err != nil || r.Unpack(b) != nil || r.Id != 4242 || !slices.Equal(answers(r), []string{"192.0.2.1"}) {
			t.Errorf("tcp %v: %v %v", tcp, r, err)
		}
	}
	// In flight at the bound: the next forward is refused at once.
	u.sem <- struct{}{}
	if _, err := u.Forward(context.Background(), server, false, query("x.", dns.TypeA)); !errors.Is(err, ErrBusy) {
		t.Errorf("forward beyond the bound: %v, want ErrBusy", err)
	}
}
