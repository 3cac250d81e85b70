package nodebench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/benchkit"
)

// accessEntry is the part of a proxy access-log line the test checks.
type accessEntry struct {
	Direction string `json:"direction"`
	Reporter  string `json:"reporter"`
	Src       string `json:"src.addr"`
	Dst       string `json:"dst.addr"`
	Security  string `json:"security"`
	Flags     string `json:"response_flags"`
}

func accessLog(t *testing.T, n *node) []accessEntry {
	t.Helper()
	f, err := os.Open(n.accessLog())
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	defer f.Close()
	var out []accessEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e accessEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s access log: %v: %s", n.name, err, sc.Text())
		}
		out = append(out, e)
	}
	return out
}

// matching are the entries from the client pod to dst.
func matching(es []accessEntry, dst netip.AddrPort) []accessEntry {
	var out []accessEntry
	for _, e := range es {
		src, _ := netip.ParseAddrPort(e.Src)
		if src.Addr().String() == clientIP && e.Dst == dst.String() {
			out = append(out, e)
		}
	}
	return out
}

// TestNodeDataPath sends one HTTP request per path (direct and enrolled,
// same node and cross node) and proves where it went: the server sees the
// client's own IP on every path, the enrolled paths leave access-log lines
// in the proxy processes on the way (and bump the capture counters), the
// direct ones leave none. Last, one request through the stunnel peer
// reaches server-b from node-b's stunnel (checkStunnel), and one through
// the HAProxy relay server-a from node-a (checkRelay).
func TestNodeDataPath(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root, network namespaces and BPF (make unit runs -short)")
	}
	h := newHarness(t, scale{})
	one := func(dst *pod) {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialer(h.client.ns), DisableKeepAlives: true}}
		before := dst.srv.seen(h.client.ip)
		url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(dst.ip, httpPort))
		if err := benchkit.Get(c, url, respSize); err != nil {
			t.Fatalf("client -> %s (enrolled=%v): %v\nnode-a proxy log:\n%s\nnode-b proxy log:\n%s",
				dst.spec.Name, h.enrolled, err, benchkit.FileText(h.a.stderrLog()), benchkit.FileText(h.b.stderrLog()))
		}
		if got := dst.srv.seen(h.client.ip); got != before+1 {
			t.Fatalf("%s saw %d new connections from the client's IP %s, want 1", dst.spec.Name, got-before, h.client.ip)
		}
	}
	captured := func() uint64 {
		var sum uint64
		for _, n := range []*node{h.a, h.b} {
			c, _, err := n.capture.Counters()
			if err != nil {
				t.Fatal(err)
			}
			sum += c
		}
		return sum
	}
	dstA := netip.AddrPortFrom(h.srvA.ip, httpPort)
	dstB := netip.AddrPortFrom(h.srvB.ip, httpPort)

	t.Log("direct (not enrolled): no proxy on the way")
	c0 := captured()
	one(h.srvA)
	one(h.srvB)
	if n := captured(); n != c0 {
		t.Fatalf("direct requests were captured (%d new)", n-c0)
	}
	if a, b := accessLog(t, h.a), accessLog(t, h.b); len(a)+len(b) != 0 {
		t.Fatalf("direct requests reached a proxy: node-a %v, node-b %v", a, b)
	}

	h.enroll(t, true)
	t.Log("same node, enrolled: node-a's proxy carries it")
	one(h.srvA)
	benchkit.Eventually(t, 5*time.Second, "node-a access log of the same-node request", func() bool { return len(matching(accessLog(t, h.a), dstA)) >= 2 })
	// Same node: outbound hands the connection in-process to the local
	// inbound side (reporter=destination, direction inbound_local).
	expectDirections(t, h.a, matching(accessLog(t, h.a), dstA), "outbound", "inbound_local")

	t.Log("cross node, enrolled: node-a's outbound, HBONE, node-b's inbound")
	one(h.srvB)
	benchkit.Eventually(t, 5*time.Second, "node-a and node-b access logs of the cross-node request", func() bool {
		return len(matching(accessLog(t, h.a), dstB)) > 0 && len(matching(accessLog(t, h.b), dstB)) > 0
	})
	expectDirections(t, h.a, matching(accessLog(t, h.a), dstB), "outbound")
	expectDirections(t, h.b, matching(accessLog(t, h.b), dstB), "inbound")
	if n := captured(); n < c0+2 {
		t.Fatalf("capture counters rose by %d, want at least 2 (client's outbound SYNs)", n-c0)
	}

	h.enroll(t, false)
	t.Log("unenrolled again: direct, no new access-log lines")
	na, nb := len(accessLog(t, h.a)), len(accessLog(t, h.b))
	one(h.srvA)
	one(h.srvB)
	// Nothing to wait for: a proxy that wrongly got the requests would
	// log them within this window.
	time.Sleep(100 * time.Millisecond)
	if a, b := accessLog(t, h.a), accessLog(t, h.b); len(a) != na || len(b) != nb {
		t.Fatalf("requests after unenrolment reached a proxy:\nnode-a %v\nnode-b %v", a[na:], b[nb:])
	}
	for _, p := range []struct {
		installed     bool
		path, missing string
		check         func(*testing.T)
	}{
		{h.tunnel != nil, "the stunnel peer (not enrolled): node-b's stunnel connects to server-b", "stunnel (Debian: stunnel4)", h.checkStunnel},
		{h.relay != nil, "the HAProxy relay (not enrolled): HAProxy in node-a connects to server-a", "HAProxy (Debian: haproxy)", h.checkRelay},
	} {
		switch {
		case p.installed:
			t.Logf("through %s, no proxy on the way", p.path)
			p.check(t)
		case os.Getenv("WEFT_E2E_REQUIRE") == "1":
			t.Fatalf("WEFT_E2E_REQUIRE=1 but %s is not installed: its peer is unchecked", p.missing)
		}
	}
	for _, n := range []*node{h.a, h.b} {
		if log := benchkit.FileText(n.stderrLog()); strings.TrimSpace(log) != "" {
			t.Logf("%s proxy log:\n%s", n.name, log)
		}
	}
}

// expectDirections checks that es (one node's entries for one request) are
// clean mTLS connections, one per wanted direction.
func expectDirections(t *testing.T, n *node, es []accessEntry, want ...string) {
	t.Helper()
	got := map[string]int{}
	for _, e := range es {
		if e.Security != "mutual_tls" || e.Flags != "-" {
			t.Fatalf("%s access log: not a clean mTLS connection: %+v", n.name, e)
		}
		got[e.Direction]++
	}
	for _, d := range want {
		if got[d] != 1 {
			t.Fatalf("%s access log: %d %q entries for the request, want 1 (all: %+v)", n.name, got[d], d, es)
		}
	}
	if len(es) != len(want) {
		t.Fatalf("%s access log: %d entries for the request, want %v: %+v", n.name, len(es), want, es)
	}
}
