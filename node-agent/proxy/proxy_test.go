package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/connlimit"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/spiffetest"
)

// Loopback stand-ins: node-a runs pods A and C, node-b runs B and E, D is a
// plain (NONE) workload, 127.0.0.9 is outside the mesh.
var (
	podA = pod{name: "a", ns: "default", sa: "a", node: "node-a", ip: "127.0.0.2"}
	podB = pod{name: "b", ns: "b", sa: "b", node: "node-b", ip: "127.0.0.3"}
	podC = pod{name: "c", ns: "default", sa: "c", node: "node-a", ip: "127.0.0.4"}
	podD = pod{name: "d", ns: "default", sa: "d", node: "node-c", ip: "127.0.0.5", plain: true}
	podE = pod{name: "e", ns: "b", sa: "e", node: "node-b", ip: "127.0.0.6"}
)

const vip = "10.96.0.10"

type node struct {
	env       *Env
	reg       *prometheus.Registry
	log       *syncBuffer
	inbound   *Inbound
	outbound  *Outbound
	plaintext *InboundPlaintext
	outLn     net.Listener
	plainLn   net.Listener
}

type mesh struct {
	ca                                *spiffetest.CA
	store                             *config.Store
	a, b                              *node
	echoB, echoC, echoD, echoE, echoX *echo
	dsts                              *origDsts
	tunnelPort                        uint16
}

// listen opens a listener the way the agent does (Capped), so every test
// runs on the connection type production hands the proxies.
func listen(tb testing.TB, addr string) net.Listener {
	tb.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	return connlimit.Capped(l.(*net.TCPListener), 1024)
}

// newMesh builds the test mesh; envOpts adjust both nodes' Env before
// their proxies serve.
func newMesh(t *testing.T, envOpts ...func(*Env)) *mesh {
	t.Helper()
	m := &mesh{ca: spiffetest.NewCA(t, td), dsts: &origDsts{}}
	m.echoB, m.echoC, m.echoD = startEcho(t, podB.ip), startEcho(t, podC.ip), startEcho(t, podD.ip)
	m.echoE, m.echoX = startEcho(t, podE.ip), startEcho(t, "127.0.0.9")
	b := podB
	b.svcPorts = map[uint32]uint32{80: uint32(m.echoB.addr.Port())}
	m.store = newStore(t, []pod{podA, b, podC, podD, podE}, vip, 80, 8080)

	// One tunnel port shared by every "pod IP" (the real one is 15008).
	var tunB, tunE net.Listener
	for range 20 {
		tunB = listen(t, podB.ip+":0")
		port := addrPort(tunB.Addr()).Port()
		var err error
		if tunE, err = net.Listen("tcp", podE.ip+":"+itoa(port)); err == nil {
			m.tunnelPort = port
			break
		}
		tunB.Close()
	}
	if m.tunnelPort == 0 {
		t.Fatal("no common free tunnel port")
	}

	mk := func(name string, held ...pod) *node {
		n := &node{reg: prometheus.NewRegistry(), log: &syncBuffer{}}
		ids := &fakeIdentities{svids: map[spiffeid.ID]*x509svid.SVID{}, bundle: m.ca.Bundle()}
		for _, p := range held {
			ids.svids[p.id()] = m.ca.Issue(t, p.id())
		}
		metrics, err := NewMetrics(n.reg)
		if err != nil {
			t.Fatal(err)
		}
		n.env = &Env{Store: m.store, Identities: ids, NodeName: name, Metrics: metrics,
			AccessLog: slog.New(slog.NewJSONHandler(n.log, nil)), DialTimeout: 3 * time.Second}
		for _, f := range envOpts {
			f(n.env)
		}
		n.inbound = &Inbound{Env: n.env}
		n.outbound = &Outbound{Env: n.env, OriginalDst: m.dsts.lookup, TunnelPort: m.tunnelPort, Local: n.inbound}
		n.plaintext = &InboundPlaintext{Env: n.env, OriginalDst: m.dsts.lookup}
		n.outLn, n.plainLn = listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
		go n.outbound.Serve(n.outLn)
		go n.plaintext.Serve(n.plainLn)
		t.Cleanup(func() { n.outbound.Close(); n.plaintext.Close(); n.inbound.Close() })
		return n
	}
	m.a = mk("node-a", podA, podC)
	m.b = mk("node-b", podB, podE)
	go m.b.inbound.Serve(tunB)
	go m.b.inbound.Serve(tunE)
	return m
}

func ap(ip string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), port)
}

func (m *mesh) fromA(t *testing.T, dst netip.AddrPort) *net.TCPConn {
	return m.dsts.connect(t, m.a.outLn.Addr(), podA.ip, dst)
}

func TestOutboundHBONEEndToEnd(t *testing.T) {
	m := newMesh(t)
	got, err := roundTrip(m.fromA(t, m.echoB.addr), "hello over hbone")
	if err != nil || got != "hello over hbone" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if srcs := m.echoB.sources(); len(srcs) != 1 || srcs[0] != netip.MustParseAddr(podA.ip) {
		t.Fatalf("destination saw sources %v, want the original client %s", srcs, podA.ip)
	}
	principalA := "spiffe://cluster.local/ns/default/sa/a"
	// The client addressed b's pod IP: the source reports no service; the
	// destination guesses it from the target port (as ztunnel does).
	dstLabels := map[string]string{"reporter": "destination", "destination_service": svcHost, "source_principal": principalA, "source_workload": "a",
		"source_workload_namespace": "default", "destination_workload": "b", "destination_workload_namespace": "b",
		"destination_principal": "spiffe://cluster.local/ns/b/sa/b", "connection_security_policy": "mutual_tls", "response_flags": "-"}
	await.True(t, "inbound close counted", func() bool {
		return counter(t, m.b.reg, "istio_tcp_connections_closed_total", dstLabels) == 1
	})
	if v := counter(t, m.b.reg, "istio_tcp_connections_opened_total", dstLabels); v != 1 {
		t.Errorf("inbound opened = %v", v)
	}
	n := float64(len("hello over hbone"))
	if v := counter(t, m.b.reg, "istio_tcp_received_bytes_total", dstLabels); v != n {
		t.Errorf("inbound received bytes = %v, want %v", v, n)
	}
	if v := counter(t, m.b.reg, "istio_tcp_sent_bytes_total", dstLabels); v != n {
		t.Errorf("inbound sent bytes = %v, want %v", v, n)
	}
	srcLabels := map[string]string{"reporter": "source", "source_principal": principalA, "destination_workload": "b",
		"destination_service": "unknown", "connection_security_policy": "mutual_tls", "response_flags": "-"}
	await.True(t, "outbound close counted", func() bool {
		return counter(t, m.a.reg, "istio_tcp_connections_closed_total", srcLabels) == 1
	})
	if v := counter(t, m.a.reg, "istio_tcp_sent_bytes_total", srcLabels); v != n {
		t.Errorf("outbound sent bytes = %v", v)
	}
	await.True(t, "access log", func() bool { return strings.Contains(m.b.log.String(), `"direction":"inbound"`) })
	logB := m.b.log.String()
	for _, want := range []string{`"src.identity":"` + principalA, `"dst.identity":"spiffe://cluster.local/ns/b/sa/b"`,
		`"policy.decision":"allow"`, `"bytes_received":16`, `"direction":"inbound"`} {
		if !strings.Contains(logB, want) {
			t.Errorf("node-b access log lacks %s:\n%s", want, logB)
		}
	}
}

func TestOutboundServiceVIP(t *testing.T) {
	m := newMesh(t)
	for i := range 3 {
		got, err := roundTrip(m.fromA(t, ap(vip, 80)), "via vip")
		if err != nil || got != "via vip" {
			t.Fatalf("round %d: echo = %q, %v", i, got, err)
		}
	}
	await.True(t, "service label", func() bool {
		return counter(t, m.a.reg, "istio_tcp_connections_closed_total",
			map[string]string{"destination_service": svcHost, "destination_workload": "b", "reporter": "source"}) == 3
	})
	// The destination only sees b's address (the tunnel's :authority) and
	// reports the same service.
	await.True(t, "service label at the destination", func() bool {
		return counter(t, m.b.reg, "istio_tcp_connections_closed_total",
			map[string]string{"destination_service": svcHost, "destination_workload": "b", "reporter": "destination"}) == 3
	})
	// A declared service port nobody serves: no endpoint, connection reset.
	if got, err := roundTrip(m.fromA(t, ap(vip, 8080)), "x"); err == nil && got != "" {
		t.Fatalf("no-endpoint port echoed %q", got)
	}
	await.True(t, "NR counted", func() bool {
		return counter(t, m.a.reg, "istio_tcp_connections_closed_total", map[string]string{"destination_service": svcHost, "response_flags": "NR"}) == 1
	})
}

func TestDenyPolicyRefuses(t *testing.T) {
	m := newMesh(t)
	setPolicies(t, m.store, principalDeny("b", "deny-a", "cluster.local/ns/default/sa/a"))
	got, err := roundTrip(m.fromA(t, m.echoB.addr), "should not pass")
	if err == nil && got != "" {
		t.Fatalf("denied connection echoed %q", got)
	}
	if len(m.echoB.sources()) != 0 {
		t.Fatal("destination pod was connected despite DENY")
	}
	await.True(t, "denial counted", func() bool {
		return counter(t, m.b.reg, "istio_tcp_connections_closed_total", map[string]string{"reporter": "destination", "response_flags": "DENY"}) == 1 &&
			counter(t, m.a.reg, "istio_tcp_connections_closed_total", map[string]string{"reporter": "source", "response_flags": "DENY"}) == 1
	})
	await.True(t, "node-b access log with the policy decision", func() bool {
		l := m.b.log.String()
		return strings.Contains(l, `"policy.name":"b/deny-a"`) && strings.Contains(l, `"policy.decision":"deny"`)
	})
	await.True(t, "node-a access log with the 403 and the policy name", func() bool {
		l := m.a.log.String()
		return strings.Contains(l, "b/deny-a") && strings.Contains(l, "403")
	})
	// Another source identity is still allowed (pod C, node-a).
	got, err = roundTrip(m.dsts.connect(t, m.a.outLn.Addr(), podC.ip, m.echoB.addr), "c passes")
	if err != nil || got != "c passes" {
		t.Fatalf("pod C: echo = %q, %v", got, err)
	}
}

// TestDryRunDenyPasses: a dry-run DENY that matches lets the connection
// through; its would-be denial is in the access log and counted.
func TestDryRunDenyPasses(t *testing.T) {
	m := newMesh(t)
	dry := principalDeny("b", "dry-deny-a", "cluster.local/ns/default/sa/a")
	dry.DryRun = &workloadv1.DryRun{Action: dry.Action, Rules: dry.Rules}
	dry.Rules = nil
	setPolicies(t, m.store, dry)
	if got, err := roundTrip(m.fromA(t, m.echoB.addr), "passes"); err != nil || got != "passes" {
		t.Fatalf("dry-run DENY: echo = %q, %v; want the connection through", got, err)
	}
	await.True(t, "would-be denial logged and counted", func() bool {
		return strings.Contains(m.b.log.String(), `"policy.dry_run":"denied[b/dry-deny-a]"`) &&
			counter(t, m.b.reg, "weft_node_agent_rbac_dry_run_total", map[string]string{"decision": "denied"}) == 1
	})
}

func TestPlaintextStrictAndPermissive(t *testing.T) {
	m := newMesh(t)
	// PERMISSIVE (no policy): plaintext from outside the mesh is admitted.
	got, err := roundTrip(m.dsts.connect(t, m.b.plainLn.Addr(), "127.0.0.9", m.echoB.addr), "plain")
	if err != nil || got != "plain" {
		t.Fatalf("permissive: echo = %q, %v", got, err)
	}
	if srcs := m.echoB.sources(); len(srcs) != 1 || srcs[0] != netip.MustParseAddr("127.0.0.9") {
		t.Fatalf("destination saw %v, want 127.0.0.9", srcs)
	}
	// STRICT: refused, the pod never sees the connection.
	setPolicies(t, m.store, strictPolicy("b"))
	got, err = roundTrip(m.dsts.connect(t, m.b.plainLn.Addr(), "127.0.0.9", m.echoB.addr), "plain")
	if err == nil && got != "" {
		t.Fatalf("strict: plaintext echoed %q", got)
	}
	if n := len(m.echoB.sources()); n != 1 {
		t.Fatalf("strict: destination saw %d connections, want still 1", n)
	}
	await.True(t, "strict denial counted", func() bool {
		return counter(t, m.b.reg, "istio_tcp_connections_closed_total", map[string]string{"connection_security_policy": "none", "response_flags": "DENY"}) == 1
	})
	// ... while mTLS through HBONE is still admitted.
	if got, err := roundTrip(m.fromA(t, m.echoB.addr), "mtls"); err != nil || got != "mtls" {
		t.Fatalf("strict: HBONE echo = %q, %v", got, err)
	}
}

func TestPassthrough(t *testing.T) {
	m := newMesh(t)
	for _, dst := range []*echo{m.echoX, m.echoD} { // unknown IP, NONE workload
		if got, err := roundTrip(m.fromA(t, dst.addr), "out of mesh"); err != nil || got != "out of mesh" {
			t.Fatalf("passthrough to %s: %q, %v", dst.addr, got, err)
		}
		if srcs := dst.sources(); len(srcs) != 1 {
			t.Fatalf("%s saw %v", dst.addr, srcs)
		}
	}
	await.True(t, "passthrough counted", func() bool {
		return counter(t, m.a.reg, "istio_tcp_connections_closed_total", map[string]string{"connection_security_policy": "none", "response_flags": "-"}) == 2 &&
			counter(t, m.a.reg, "istio_tcp_connections_closed_total", map[string]string{"destination_workload": "d"}) == 1
	})
	await.True(t, "passthrough access log", func() bool { return strings.Contains(m.a.log.String(), `"direction":"passthrough"`) })
}

func TestUnknownSourceClosed(t *testing.T) {
	m := newMesh(t)
	for _, ip := range []string{"127.0.0.7", podB.ip} { // unknown, and a pod of another node
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", m.a.outLn.Addr().String())
		if err != nil {
			continue // reset so early that connect already saw it
		}
		m.dsts.record(c.LocalAddr().String(), m.echoB.addr)
		got, err := roundTrip(c.(*net.TCPConn), "who am i")
		c.Close()
		if err == nil && got != "" {
			t.Fatalf("from %s: got %q", ip, got)
		}
	}
	if len(m.echoB.sources()) != 0 {
		t.Fatal("destination reached from an unknown source")
	}
}

func TestSameNodeLocal(t *testing.T) {
	m := newMesh(t)
	if got, err := roundTrip(m.fromA(t, m.echoC.addr), "neighbour"); err != nil || got != "neighbour" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if srcs := m.echoC.sources(); len(srcs) != 1 || srcs[0] != netip.MustParseAddr(podA.ip) {
		t.Fatalf("C saw %v", srcs)
	}
	await.True(t, "both reporters", func() bool {
		l := map[string]string{"source_principal": "spiffe://cluster.local/ns/default/sa/a", "destination_workload": "c"}
		l["reporter"] = "source"
		s := counter(t, m.a.reg, "istio_tcp_connections_closed_total", l)
		l["reporter"] = "destination"
		return s == 1 && counter(t, m.a.reg, "istio_tcp_connections_closed_total", l) == 1
	})
	// Policy applies on the local path too.
	setPolicies(t, m.store, principalDeny("default", "deny-a", "cluster.local/ns/default/sa/a"))
	if got, err := roundTrip(m.fromA(t, m.echoC.addr), "neighbour"); err == nil && got != "" {
		t.Fatalf("denied local connection echoed %q", got)
	}
	if len(m.echoC.sources()) != 1 {
		t.Fatal("C reached despite DENY")
	}
}

func TestInboundPresentsDestinationIdentity(t *testing.T) {
	m := newMesh(t)
	idA := podA.id()
	d := &hbone.Dialer{SVID: m.ca.Issue(t, idA), Bundle: m.ca.Bundle()}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tunB := ap(podB.ip, m.tunnelPort).String()
	// Expecting someone else's identity at B's IP fails: B presents B.
	_, err := d.Dial(ctx, tunB, tlsconfig.AuthorizeID(podE.id()), m.echoB.addr.String(), nil)
	if !errors.Is(err, hbone.ErrUnauthorizedPeer) {
		t.Fatalf("dial expecting E at B's IP: %v", err)
	}
	// Using B's tunnel to reach E (another identity on the same node): 403.
	_, err = d.Dial(ctx, tunB, tlsconfig.AuthorizeID(podB.id()), m.echoE.addr.String(), nil)
	var re *hbone.RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusForbidden {
		t.Fatalf("authority of another identity: %v", err)
	}
	// A destination not on this node: 503.
	_, err = d.Dial(ctx, tunB, tlsconfig.AuthorizeID(podB.id()), m.echoC.addr.String(), nil)
	if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable {
		t.Fatalf("authority on another node: %v", err)
	}
	// E's own IP presents E.
	s, err := d.Dial(ctx, ap(podE.ip, m.tunnelPort).String(), tlsconfig.AuthorizeID(podE.id()), m.echoE.addr.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestGarbageOnTunnelPort(t *testing.T) {
	m := newMesh(t)
	tun := ap(podB.ip, m.tunnelPort).String()
	for _, junk := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\x16\x03\x01\x00\x05hello", strings.Repeat("\x00", 4096)} {
		c, err := net.Dial("tcp", tun)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(junk))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		for {
			_, err := c.Read(buf)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("%q: the tunnel port left the connection open", junk)
			}
			if err != nil {
				break
			}
		}
		c.Close()
	}
	// An idle connection that never speaks, held open during real traffic.
	idle, err := net.Dial("tcp", tun)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if got, err := roundTrip(m.fromA(t, m.echoB.addr), "still works"); err != nil || got != "still works" {
		t.Fatalf("after garbage: %q, %v", got, err)
	}
}

func TestOpenConnectionsListed(t *testing.T) {
	m := newMesh(t)
	c := m.fromA(t, m.echoB.addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	b := netip.MustParseAddr(podB.ip)
	await.True(t, "both ends list the open connection", func() bool {
		return m.a.env.Metrics.OpenFor(b) == 1 && m.b.env.Metrics.OpenFor(b) == 1
	})
	conns := m.b.env.Metrics.Connections()
	if len(conns) != 1 || conns[0].Direction != "inbound" || conns[0].SourcePrincipal != "spiffe://cluster.local/ns/default/sa/a" ||
		conns[0].Dst != m.echoB.addr || conns[0].Security != SecurityMutualTLS {
		t.Fatalf("node-b connections = %+v", conns)
	}
	if n := m.a.env.Metrics.OpenFor(netip.MustParseAddr(podE.ip)); n != 0 {
		t.Errorf("connections for an unrelated pod = %d", n)
	}
	c.Close()
	await.True(t, "closed connections leave the list", func() bool {
		return len(m.a.env.Metrics.Connections()) == 0 && len(m.b.env.Metrics.Connections()) == 0
	})
}

// A client outside the mesh on node-b reaches service echo (VIP) whose
// endpoint B is enrolled on node-b: capture hands it to node-b's outbound
// listener, which must police it as inbound plaintext.
func TestPlaintextClientToLocalServiceEndpoint(t *testing.T) {
	m := newMesh(t)
	viaVIP := func() (string, error) {
		return roundTrip(m.dsts.connect(t, m.b.outLn.Addr(), "127.0.0.9", ap(vip, 80)), "plain via vip")
	}
	if got, err := viaVIP(); err != nil || got != "plain via vip" {
		t.Fatalf("permissive: echo = %q, %v", got, err)
	}
	if srcs := m.echoB.sources(); len(srcs) != 1 || srcs[0] != netip.MustParseAddr("127.0.0.9") {
		t.Fatalf("destination saw %v, want the client 127.0.0.9", srcs)
	}
	await.True(t, "counted as inbound plaintext for the service", func() bool {
		return counter(t, m.b.reg, "istio_tcp_connections_closed_total", map[string]string{"reporter": "destination",
			"connection_security_policy": "none", "destination_workload": "b", "destination_service": svcHost}) == 1
	})
	setPolicies(t, m.store, strictPolicy("b"))
	if got, err := viaVIP(); err == nil && got != "" {
		t.Fatalf("strict: plaintext via the VIP echoed %q", got)
	}
	if n := len(m.echoB.sources()); n != 1 {
		t.Fatalf("strict: destination saw %d connections, want still 1", n)
	}
}

// A waypoint's or gateway's pooled tunnel carries no baggage: the
// destination then names the peer itself as the source, from its workload
// entry, but only if the tunnel's identity is that workload's.
func TestInboundSourceWithoutBaggageIsThePeer(t *testing.T) {
	m := newMesh(t)
	for _, tc := range []struct {
		name     string
		id       spiffeid.ID
		workload string
	}{{"the workload at the source IP", podD.id(), "d"}, {"an identity that is not the source IP's", podC.id(), "unknown"}} {
		t.Run(tc.name, func(t *testing.T) {
			d := &hbone.Dialer{SVID: m.ca.Issue(t, tc.id), Bundle: m.ca.Bundle(),
				DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(podD.ip)}}).DialContext}
			t.Cleanup(func() { d.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := d.Dial(ctx, ap(podB.ip, m.tunnelPort).String(), tlsconfig.AuthorizeID(podB.id()), m.echoB.addr.String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			labels := map[string]string{"reporter": "destination", "source_principal": tc.id.String(), "source_workload": tc.workload, "destination_workload": "b"}
			await.True(t, "inbound connection counted with source_workload="+tc.workload, func() bool {
				return counter(t, m.b.reg, "istio_tcp_connections_opened_total", labels) == 1
			})
		})
	}
}

// TestPolicyChangeClosesDeniedConnections: a policy that now denies an open
// connection closes it (both ends, as an RST), recorded as denied; one it
// still allows stays open; a connection opened after the change is refused.
func TestPolicyChangeClosesDeniedConnections(t *testing.T) {
	m := newMesh(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.b.env.RecheckOnChange(ctx)

	fromA := m.fromA(t, m.echoB.addr)                                   // default/sa/a: to be denied
	fromC := m.dsts.connect(t, m.a.outLn.Addr(), podC.ip, m.echoB.addr) // default/sa/c: still allowed
	echoLine(t, fromA, "before")
	echoLine(t, fromC, "before")
	await.True(t, "both connections admitted at node-b", func() bool { return len(m.b.env.admitted.list()) == 2 })

	setPolicies(t, m.store, principalDeny("b", "deny-a", "cluster.local/ns/default/sa/a"))
	fromA.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := fromA.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("a's connection to b after the deny policy: read %d, %v; want a reset", n, err)
	}
	await.True(t, "closed as denied", func() bool {
		return counter(t, m.b.reg, "istio_tcp_connections_closed_total",
			map[string]string{"reporter": "destination", "destination_workload": "b", "response_flags": FlagDenied}) == 1
	})
	// Recheck counts the revocation after resetting the connection.
	await.True(t, "the revoked connection counted", func() bool {
		return counter(t, m.b.reg, "weft_node_agent_policy_revoked_connections_total", nil) == 1
	})
	await.True(t, "the access log says why", func() bool {
		log := m.b.log.String()
		return strings.Contains(log, "since a policy change") && strings.Contains(log, `"policy.decision":"deny"`)
	})
	echoLine(t, fromC, "still allowed")
	if got, err := roundTrip(m.fromA(t, m.echoB.addr), "after"); err == nil && got == "after" {
		t.Fatal("a new connection from a passed the deny policy")
	}
}

// TestTunnelToAPodLeavingTheMesh: this node's snapshot already says B is
// no longer in the mesh (NONE) while another node, not told yet, still
// tunnels to it. The capture still steers that tunnel here, so the agent
// delivers it: refusing would reset the client's request during every
// unenrolment (seen in e2e TestNodeAgent).
func TestTunnelToAPodLeavingTheMesh(t *testing.T) {
	m := newMesh(t)
	b := podB
	b.plain = true
	if err := m.store.Handle(config.AddressType, map[string]proto.Message{"Kubernetes//Pod/b/b": b.address()}, nil); err != nil {
		t.Fatal(err)
	}
	if w := m.store.Snapshot().WorkloadByIP(netip.MustParseAddr(podB.ip)); w == nil || w.Proto.GetTunnelProtocol() != workloadv1.TunnelProtocol_NONE {
		t.Fatalf("b in the snapshot: %v, want NONE", w)
	}
	d := &hbone.Dialer{SVID: m.ca.Issue(t, podA.id()), Bundle: m.ca.Bundle()}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := d.Dial(ctx, ap(podB.ip, m.tunnelPort).String(), tlsconfig.AuthorizeID(podB.id()), m.echoB.addr.String(), nil)
	if err != nil {
		t.Fatalf("tunnel to b while it leaves the mesh: %v", err)
	}
	defer s.Close()
	if _, err := io.WriteString(s, "still delivered"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("still delivered"))
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "still delivered" {
		t.Fatalf("echo through the tunnel: %q, %v", got, err)
	}
}

// A Service endpoint listed by address only (an EndpointSlice workload
// without a Pod targetRef: plain TCP) at a mesh pod's IP goes to that pod
// over HBONE, as a connection to the pod IP would: the destination's
// node agent sees it (a plain connection would bypass it, and a STRICT
// pod would refuse it).
func TestAddressOnlyEndpointOfAMeshPod(t *testing.T) {
	m := newMesh(t)
	const manualVIP, manualHost = "10.96.0.77", "manual.b.svc.cluster.local"
	w := &workloadv1.Workload{Uid: "Kubernetes/discovery.k8s.io/EndpointSlice/b/manual-1/" + podB.ip, Name: "manual-1", Namespace: "b",
		Addresses: []string{podB.ip}, TunnelProtocol: workloadv1.TunnelProtocol_NONE, WorkloadType: "endpointslice", ClusterId: "Kubernetes",
		Services: map[string]*workloadv1.PortList{"b/" + manualHost: {Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: uint32(m.echoB.addr.Port())}}}}}
	svc := &workloadv1.Service{Name: "manual", Namespace: "b", Hostname: manualHost, Addresses: []string{manualVIP},
		Ports: []*workloadv1.Port{{ServicePort: 80}}}
	if err := m.store.Handle(config.AddressType, map[string]proto.Message{
		w.Uid:             &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}},
		"b/" + manualHost: &workloadv1.Address{Type: &workloadv1.Address_Service{Service: svc}},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(m.fromA(t, ap(manualVIP, 80)), "to the pod behind the slice"); err != nil || got != "to the pod behind the slice" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	await.True(t, "the destination node agent saw the connection", func() bool {
		return counter(t, m.b.reg, "istio_tcp_connections_closed_total",
			map[string]string{"destination_workload": "b", "reporter": "destination"}) == 1
	})
}
