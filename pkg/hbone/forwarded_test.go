package hbone

import (
	"net"
	"net/http"
	"net/netip"
	"testing"
)

func TestParseForwarded(t *testing.T) {
	for in, want := range map[string]string{
		"for=10.0.0.1":                 "10.0.0.1",
		`for="[2001:db8::1]:4711"`:     "2001:db8::1",
		`for="[2001:db8::1]"`:          "2001:db8::1",
		"proto=https;for=10.1.2.3:80":  "10.1.2.3",
		"for=unknown, for=192.168.0.1": "192.168.0.1",
		"FOR=::ffff:10.0.0.2":          "10.0.0.2",
	} {
		got, ok := ParseForwarded(in)
		if !ok || got.String() != want {
			t.Errorf("ParseForwarded(%q) = %v %v, want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "by=x", "for=", "for=_hidden", "for=10.0.0.256"} {
		if a, ok := ParseForwarded(in); ok {
			t.Errorf("ParseForwarded(%q) = %v, want no address", in, a)
		}
	}
}

func TestForwardedHost(t *testing.T) {
	h := http.Header{}
	SetForwardedHost(h, net.ParseIP("2001:db8::1"), "reviews.default.svc.cluster.local")
	if got := h.Get("Forwarded"); got != `for="[2001:db8::1]";host=reviews.default.svc.cluster.local` {
		t.Fatalf("Forwarded = %q", got)
	}
	if a, ok := ParseForwarded(h.Get("Forwarded")); !ok || a.String() != "2001:db8::1" {
		t.Errorf("ParseForwarded = %v %v", a, ok)
	}
	for in, want := range map[string]string{
		h.Get("Forwarded"):                    "reviews.default.svc.cluster.local",
		`for=10.0.0.1;HOST="a.b"`:             "a.b",
		"for=10.0.0.1":                        "",
		"for=10.0.0.1, for=10.0.0.2;host=a.b": "", // another hop's
		"":                                    "",
	} {
		if got := ParseForwardedHost(in); got != want {
			t.Errorf("ParseForwardedHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseForwarded: any header parses without panic, and what SetForwarded
// writes parses back to the same address.
func FuzzParseForwarded(f *testing.F) {
	for _, s := range []string{"for=10.0.0.1", `for="[::1]:80"`, "for=unknown, for=1.2.3.4;proto=http", ";;,,=", `for="[`} {
		f.Add(s, []byte{10, 0, 0, 1})
	}
	f.Fuzz(func(t *testing.T, h string, ip []byte) {
		ParseForwarded(h)
		if len(ip) != 4 && len(ip) != 16 {
			return
		}
		hdr := http.Header{}
		SetForwarded(hdr, net.IP(ip))
		got, ok := ParseForwarded(hdr.Get("Forwarded"))
		want, _ := netip.AddrFromSlice(ip)
		want = want.Unmap()
		if !ok || got != want {
			t.Fatalf("SetForwarded(%v) = %q parsed as %v %v", net.IP(ip), hdr.Get("Forwarded"), got, ok)
		}
	})
}
