package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/weft-mesh/weft/pkg/netns"
)

// editionHost is the external host of testServiceEntryDNS: a name only the
// test's DNS server on the fabric knows, which the cluster's CoreDNS
// forwards its zone to, as a cluster forwards to its site's DNS.
const (
	editionHost = "edition.example.net"
	editionZone = "example.net"
	// editionTTL is the TTL of the A record: short, so the test sees the
	// gateway follow a changed answer.
	editionTTL = 2
)

// editionManifests are Istio's "Egress gateway with TLS origination" task
// (edition.cnn.com -> editionHost): a ServiceEntry with resolution DNS and
// neither endpoints nor addresses, the egress Gateway, the VirtualService
// through it and the DestinationRule originating TLS on 443. Adapted to
// ambient as TestEgressGateway's manifests are: the ServiceEntry uses the
// namespace waypoint, the mesh route goes to the Weft egress gateway
// Service, and the DestinationRule names the test CA (%s), where Istio
// relies on the public roots.
const editionManifests = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: edition
  labels:
    istio.io/use-waypoint: waypoint
spec:
  hosts:
  - ` + editionHost + `
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - ` + editionHost + `
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-edition-through-egress-gateway
spec:
  hosts:
  - ` + editionHost + `
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: weft-egress.weft-egress.svc.cluster.local
        port:
          number: 80
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: ` + editionHost + `
        port:
          number: 443
      weight: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: originate-tls-for-edition
spec:
  host: ` + editionHost + `
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: SIMPLE
        caCertificates: %s
`

// testServiceEntryDNS: Istio's egress TLS-origination task with
// resolution DNS and no --resolve. The curl pod resolves editionHost
// through its node agent's DNS proxy (capture turned on by the DNS proxy
// subtest) to the entry's auto-allocated VIP; the waypoint sends the
// request to the egress gateway, which resolves editionHost itself through
// the cluster's DNS (CoreDNS, forwarding editionZone to the test's DNS
// server on the fabric) and originates TLS to the address it got. When the
// answer changes, the gateway follows it within the TTL; while the zone
// fails, it keeps the last answer. Without the waypoint label, the node
// agent resolves the host and connects to it.
func testServiceEntryDNS(t *testing.T, e *env, gatewayIP string) {
	ca := newExternalCA(t)
	a := serveExternal(t, e, "edition-a", "10.250.11.201", editionHost, ca)
	b := serveExternal(t, e, "edition-b", "10.250.11.202", editionHost, ca)
	zone := startZoneServer(t, e, "10.250.11.53", editionHost, netip.MustParseAddr(a.addr))
	e.forwardZone(t, editionZone, zone.addr)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := e.kubectl("-n", "weft-egress", "logs", "deploy/weft-egress", "--tail=60")
			t.Logf("egress gateway logs:\n%s\nqueries the zone server saw: %v", out, zone.seen())
			// A flake seen twice: the gateway's lookups never reached the
			// zone server. CoreDNS's view and its pods say where they went.
			out, _ = e.kubectl("-n", "kube-system", "logs", "-l", "k8s-app=kube-dns", "--tail=40", "--prefix")
			pods, _ := e.kubectl("-n", "kube-system", "get", "pods,endpointslices", "-o", "wide")
			t.Logf("CoreDNS logs:\n%s\nkube-system pods and endpoints:\n%s", out, pods)
		}
	})

	e.mustKubectl(t, "delete", "--ignore-not-found", "virtualservice", "direct-external-through-egress-gateway")
	e.applyYAML(t, fmt.Sprintf(editionManifests, ca.file))
	curl := func() error {
		out, err := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "-m", "10", "-w", "|%{http_code}", "http://"+editionHost+"/")
		body, code, _ := strings.Cut(out, "|")
		if err != nil || code != "200" || body != bodyTLS {
			return fmt.Errorf("status %s %q (%v), want 200 %q", code, body, err, bodyTLS)
		}
		return nil
	}
	// lastTLS wants the last TLS request s saw to come from the egress
	// gateway with SNI editionHost.
	lastTLS := func(s *externalServer) error {
		seen, _ := s.snapshot()
		if len(seen) == 0 {
			return fmt.Errorf("%s saw no TLS request", s.addr)
		}
		if r := seen[len(seen)-1]; r.sni != editionHost || r.client != gatewayIP {
			return fmt.Errorf("%s: TLS request with SNI %q from %s; want SNI %s from the egress gateway pod %s", s.addr, r.sni, r.client, editionHost, gatewayIP)
		}
		return nil
	}
	start := time.Now()
	eventually(t, "curl http://"+editionHost+"/ through the egress gateway", 120*time.Second, func() error {
		if err := curl(); err != nil {
			return err
		}
		return lastTLS(a)
	})
	t.Logf("%s reached over TLS at %s (the zone's answer) from the egress gateway %s after %s", editionHost, a.addr, gatewayIP,
		time.Since(start).Round(100*time.Millisecond))
	// The gateway resolved through the cluster's DNS: the queries came
	// from CoreDNS, never from the gateway pod itself.
	coredns := strings.Fields(e.mustKubectl(t, "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns",
		"-o", "jsonpath={.items[*].status.podIP}"))
	if q := zone.seen(); len(q) == 0 || slices.ContainsFunc(q, func(c string) bool { return !slices.Contains(coredns, c) }) {
		t.Errorf("the zone server saw queries from %v, want them all from CoreDNS %v", q, coredns)
	}

	// The answer moves to b: the gateway follows it once the TTL runs out.
	zone.set(netip.MustParseAddr(b.addr))
	moved := time.Now()
	eventually(t, "requests follow the new answer", 60*time.Second, func() error {
		if err := curl(); err != nil {
			return err
		}
		return lastTLS(b)
	})
	t.Logf("after the A record moved to %s (TTL %d s), requests reached it after %s", b.addr, editionTTL, time.Since(moved).Round(100*time.Millisecond))
	tlsB, _ := b.snapshot()
	for range 3 {
		if err := curl(); err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := b.snapshot(); len(after)-len(tlsB) != 3 {
		t.Errorf("%d of 3 requests reached the new address", len(after)-len(tlsB))
	}

	// The zone fails (SERVFAIL): the gateway keeps its last answer.
	failedBefore := zone.setFailing(true)
	// The gateway's own gauge: its lookup of the name failed and it keeps
	// the last answer.
	eventually(t, "the egress gateway's name stale", 30*time.Second, func() error {
		m, err := e.podMetricsIn("weft-egress", "istio=egressgateway")
		if err != nil {
			return err
		}
		if !strings.Contains(m, `weft_waypoint_dns_hosts{state="stale"} 1`) {
			return fmt.Errorf("%d failed queries; the gateway's weft_waypoint_dns_hosts: %s", zone.failedQueries()-failedBefore, grepLines(m, "weft_waypoint_dns_hosts{"))
		}
		return nil
	})
	if err := curl(); err != nil {
		t.Fatalf("while the zone fails: %v (the last answer should be kept)", err)
	}
	if err := lastTLS(b); err != nil {
		t.Fatalf("while the zone fails: %v", err)
	}
	t.Logf("with the zone failing (%d SERVFAIL answers), requests still reach %s: the last answer is kept", zone.failedQueries()-failedBefore, b.addr)
	zone.setFailing(false)

	// Without a waypoint the curl pod's node agent resolves the host itself
	// (as ztunnel resolves Workload.hostname) and connects to port 80.
	e.mustKubectl(t, "label", "serviceentry", "edition", "istio.io/use-waypoint-")
	nodeIP := strings.TrimSpace(e.mustKubectl(t, "get", "node", e.podNode(t, "default", "app=curl"),
		"-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`))
	eventually(t, "the node agent resolves the host and connects to it", 60*time.Second, func() error {
		out, err := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "-m", "10", "-w", "|%{http_code}", "http://"+editionHost+"/")
		body, code, _ := strings.Cut(out, "|")
		if err != nil || code != "200" || body != bodyPlain {
			return fmt.Errorf("status %s %q (%v), want 200 %q", code, body, err, bodyPlain)
		}
		if _, plain := b.snapshot(); len(plain) == 0 || plain[len(plain)-1].client != nodeIP {
			return fmt.Errorf("%s saw plain requests %v, want the last from the curl pod's node %s", b.addr, plain, nodeIP)
		}
		return nil
	})
	t.Logf("without a waypoint: the node agent on %s resolved %s and reached %s:80", nodeIP, editionHost, b.addr)
}

// zoneServer is an authoritative DNS server on the fabric for one name,
// whose A record the test moves, or which fails (SERVFAIL) on demand.
type zoneServer struct {
	addr    netip.AddrPort
	mu      sync.Mutex
	answer  netip.Addr
	clients []string
	failing bool
	failed  int // SERVFAIL answers given
}

// setFailing makes queries for the name fail (or answer again) and
// returns how many have failed so far.
func (z *zoneServer) setFailing(f bool) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.failing = f
	return z.failed
}

func (z *zoneServer) failedQueries() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.failed
}

func (z *zoneServer) set(a netip.Addr) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.answer = a
}

// seen lists the client address of every query for the name.
func (z *zoneServer) seen() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]string(nil), z.clients...)
}

// startZoneServer serves name's A record (answer, TTL editionTTL) on
// addr:53, UDP and TCP, in a host of its own on the fabric; other names
// in the zone are NXDOMAIN.
func startZoneServer(t *testing.T, e *env, addr, name string, answer netip.Addr) *zoneServer {
	t.Helper()
	z := &zoneServer{addr: netip.AddrPortFrom(netip.MustParseAddr(addr), 53), answer: answer}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		q := req.Question[0]
		if !strings.EqualFold(q.Name, dns.Fqdn(name)) {
			m.Rcode = dns.RcodeNameError
			w.WriteMsg(m)
			return
		}
		z.mu.Lock()
		host, _, _ := net.SplitHostPort(w.RemoteAddr().String())
		z.clients = append(z.clients, host)
		a, failing := z.answer, z.failing
		if failing {
			z.failed++
		}
		z.mu.Unlock()
		if failing {
			m.Rcode = dns.RcodeServerFailure
			w.WriteMsg(m)
			return
		}
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: editionTTL}, A: a.AsSlice()})
		}
		w.WriteMsg(m)
	})
	ns := e.externalHost(t, "dns", addr)
	var pc net.PacketConn
	var ln net.Listener
	if err := netns.Do("/run/netns/"+ns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp", z.addr.String()); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", z.addr.String())
		return err
	}); err != nil {
		t.Fatalf("DNS server in netns %s: %v", ns, err)
	}
	udp, tcp := &dns.Server{PacketConn: pc, Handler: handler}, &dns.Server{Listener: ln, Handler: handler}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return z
}

// forwardZone makes the cluster's CoreDNS forward zone to server (a server
// block added to its Corefile) and restarts it so the change is in effect
// when this returns.
func (e *env) forwardZone(t *testing.T, zone string, server netip.AddrPort) {
	t.Helper()
	corefile := e.mustKubectl(t, "-n", "kube-system", "get", "configmap", "coredns", "-o", "jsonpath={.data.Corefile}")
	block := fmt.Sprintf("%s:53 {\n    errors\n    forward . %s\n}\n", zone, server)
	if !strings.Contains(corefile, block) {
		corefile = strings.TrimRight(corefile, "\n") + "\n" + block
	}
	patch, err := json.Marshal(map[string]any{"data": map[string]string{"Corefile": corefile}})
	if err != nil {
		t.Fatal(err)
	}
	e.mustKubectl(t, "-n", "kube-system", "patch", "configmap", "coredns", "--type=merge", "-p", string(patch))
	e.mustKubectl(t, "-n", "kube-system", "rollout", "restart", "deployment/coredns")
	e.mustKubectl(t, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s")
}
