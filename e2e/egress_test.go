package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-mesh/weft/pkg/testpki"

	"github.com/weft-mesh/weft/pkg/netns"
)

const (
	egressHost = "external.example.com"
	egressVIP  = "240.240.0.10" // the ServiceEntry's address: what the pod connects to
)

// TestEgressGateway is Istio's "egress gateway with TLS origination" on the
// ambient mesh: a ServiceEntry for external.example.com (a VIP, a STATIC
// endpoint, labelled to use the namespace waypoint), charts/gateway
// installed as an egress gateway (labels.istio=egressgateway, ClusterIP), a
// VirtualService bound to the mesh (-> the egress gateway) and to the
// gateway (-> external.example.com:443) and a DestinationRule originating
// TLS on 443. The external server is an HTTPS (443) and HTTP (80) server of
// this test in a network namespace of its own on the fabric, outside the
// nodes. A curl pod's plain-HTTP request reaches it over TLS (SNI
// external.example.com, certificate verified against the test CA) from
// the egress gateway pod's address; without the VirtualService it goes
// from the waypoint straight to the endpoint's port 80 in plaintext and
// never through the gateway; without the waypoint label the curl pod's
// node agent sends it to the endpoint itself.
func TestEgressGateway(t *testing.T) {
	e := startCluster(t, "e2eegr", 2, 11)
	root := repoRoot()
	ext := startExternalServer(t, e, "10.250.11.200")

	e.installControlPlane(t)
	e.installNodeAgent(t)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/curl/curl.yaml"))
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/waypoint/waypoint.yaml"))
	e.mustRun(t, "helm", "install", "weft-egress", filepath.Join(root, "charts/gateway"), "-n", "weft-egress", "--create-namespace",
		"--set", "labels.istio=egressgateway", "--set", "service.type=ClusterIP")
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/curl", "--timeout=180s")
	e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	e.mustKubectl(t, "-n", "weft-egress", "wait", "--for=condition=Available", "deployment/weft-egress", "--timeout=120s")
	gatewayIP := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-egress", "get", "pods", "-l", "istio=egressgateway", "-o", "jsonpath={.items[0].status.podIP}"))
	waypointIP := strings.TrimSpace(e.mustKubectl(t, "get", "pods", "-l", "gateway.networking.k8s.io/gateway-name=waypoint", "-o", "jsonpath={.items[0].status.podIP}"))

	manifests := fmt.Sprintf(egressManifests, egressVIP, ext.addr, ext.caFile)
	e.applyYAML(t, manifests)
	vs := fmt.Sprintf(egressVirtualService, "weft-egress.weft-egress.svc.cluster.local")
	e.applyYAML(t, vs)
	// curl asks for http://external.example.com/ from the ambient pod (the
	// host resolved to the ServiceEntry's VIP) and wants 200 with body.
	curl := func(want string) error {
		out, err := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "-m", "10", "-w", "|%{http_code}",
			"--resolve", egressHost+":80:"+egressVIP, "http://"+egressHost+"/")
		body, code, _ := strings.Cut(out, "|")
		if err != nil || code != "200" || body != want {
			return fmt.Errorf("status %s %q (%v), want 200 %q", code, body, err, want)
		}
		return nil
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, target := range [][]string{{"-n", "weft-egress", "deploy/weft-egress"}, {"-n", "default", "deploy/waypoint"}, {"-n", controlNS, "deploy/weft-control"}} {
			out, _ := e.kubectl(append([]string{"logs", "--tail=40"}, target...)...)
			t.Logf("logs of %s:\n%s", target[2], out)
		}
	})

	t.Run("through the egress gateway with TLS originated", func(t *testing.T) {
		start := time.Now()
		eventually(t, "curl http://"+egressHost+"/ from the ambient pod", 90*time.Second, func() error { return curl(bodyTLS) })
		t.Logf("external server reached through the egress gateway %s after applying the configuration", time.Since(start).Round(100*time.Millisecond))
		// Converged (a request sent while the configuration was still
		// arriving may have taken the ServiceEntry's default route): every
		// request now goes through the gateway over TLS.
		tlsBefore, plainBefore := ext.snapshot()
		const n = 5
		for range n {
			if err := curl(bodyTLS); err != nil {
				t.Fatal(err)
			}
		}
		tlsSeen, plainSeen := ext.snapshot()
		if got := len(tlsSeen) - len(tlsBefore); got != n {
			t.Fatalf("%d of %d requests reached the TLS port", got, n)
		}
		for _, r := range tlsSeen[len(tlsBefore):] {
			if r.sni != egressHost || r.client != gatewayIP {
				t.Fatalf("TLS request with SNI %q from %s; want SNI %s from the egress gateway pod %s", r.sni, r.client, egressHost, gatewayIP)
			}
		}
		if len(plainSeen) != len(plainBefore) {
			t.Errorf("the plain port saw %d requests (last from %s): traffic went around the gateway", len(plainSeen)-len(plainBefore), plainSeen[len(plainSeen)-1].client)
		}
		t.Logf("%d requests: all over TLS with SNI %s from the egress gateway pod %s, none on the plain port (%d plain before convergence)",
			n, egressHost, gatewayIP, len(plainBefore))
	})

	t.Run("mutual TLS origination with credentialName", func(t *testing.T) { testEgressMutualTLS(t, e, ext, manifests) })

	t.Run("without the VirtualService, not through the gateway", func(t *testing.T) {
		e.mustKubectl(t, "delete", "virtualservice", "direct-external-through-egress-gateway")
		tlsBefore, _ := ext.snapshot()
		// The ServiceEntry's default route: port 80 straight from the waypoint.
		eventually(t, "the request no longer goes through the gateway", 60*time.Second, func() error { return curl(bodyPlain) })
		// Settled: a few more requests, none through the gateway.
		tlsSettled, _ := ext.snapshot()
		for range 3 {
			if err := curl(bodyPlain); err != nil {
				t.Fatal(err)
			}
		}
		tlsAfter, plainAfter := ext.snapshot()
		if len(tlsAfter) != len(tlsSettled) {
			t.Errorf("%d TLS requests through the gateway after the VirtualService was deleted", len(tlsAfter)-len(tlsSettled))
		}
		for _, r := range plainAfter {
			if r.client != waypointIP {
				t.Errorf("plain request from %s, want the waypoint pod %s", r.client, waypointIP)
			}
		}
		t.Logf("TLS requests before deletion %d, while routes converged %d, after %d; plain requests %d, all from the waypoint %s",
			len(tlsBefore), len(tlsSettled)-len(tlsBefore), len(tlsAfter)-len(tlsSettled), len(plainAfter), waypointIP)
	})

	t.Run("without a waypoint, the node agent sends the VIP to the endpoint", func(t *testing.T) {
		e.mustKubectl(t, "label", "serviceentry", "external", "istio.io/use-waypoint-")
		// The node agent's passthrough leaves from the node's address.
		nodeIP := strings.TrimSpace(e.mustKubectl(t, "get", "node", e.podNode(t, "default", "app=curl"),
			"-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`))
		_, plainBefore := ext.snapshot()
		eventually(t, "the request reaches the endpoint without the waypoint", 60*time.Second, func() error {
			if err := curl(bodyPlain); err != nil {
				return err
			}
			_, plain := ext.snapshot()
			if last := plain[len(plain)-1]; last.client != nodeIP {
				return fmt.Errorf("from %s, want the curl pod's node %s (waypoint %s, gateway %s)", last.client, nodeIP, waypointIP, gatewayIP)
			}
			return nil
		})
		_, plainAfter := ext.snapshot()
		t.Logf("ServiceEntry without a waypoint: port 80 reached from the curl pod's node %s (%d requests until converged)",
			nodeIP, len(plainAfter)-len(plainBefore))
	})

	t.Run("DNS proxy: names resolve through the node agent", func(t *testing.T) { testDNSProxy(t, e, ext) })

	// After the DNS proxy subtest: it turned the node agents' DNS capture on.
	t.Run("resolution DNS: the egress gateway (TLS originated) and the node agent resolve the host", func(t *testing.T) { testServiceEntryDNS(t, e, gatewayIP) })
}

const (
	bodyTLS   = "external server over TLS"
	bodyPlain = "external server over plain HTTP"
)

// egressManifests: the ServiceEntry (VIP, STATIC endpoint, waypoint), the
// egress Gateway and the TLS-originating DestinationRule. %[1]s VIP,
// %[2]s endpoint address, %[3]s CA file.
const egressManifests = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  labels:
    istio.io/use-waypoint: waypoint
spec:
  hosts:
  - external.example.com
  addresses:
  - %[1]s
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: https
    protocol: HTTPS
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: %[2]s
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
    - external.example.com
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: originate-tls-for-external
spec:
  host: external.example.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: SIMPLE
        sni: external.example.com
        caCertificates: %[3]s
`

// egressVirtualService: from the mesh to the egress gateway Service (%s),
// from the gateway to the external host's TLS port.
const egressVirtualService = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-external-through-egress-gateway
spec:
  hosts:
  - external.example.com
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
        host: %s
        port:
          number: 80
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: external.example.com
        port:
          number: 443
`

// seenRequest: the SNI, the client's address and the first DNS name of
// the client certificate (mutual TLS origination) of a request.
type seenRequest struct{ sni, client, clientCert string }

type externalServer struct {
	addr, caFile string
	ca           externalCA // of startExternalServer
	mu           sync.Mutex
	tls, plain   []seenRequest
}

func (s *externalServer) snapshot() (tlsSeen, plainSeen []seenRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.tls...), append([]seenRequest(nil), s.plain...)
}

// startExternalServer runs HTTPS on addr:443 (certificate for
// external.example.com from a CA of this test, whose certificate is written
// world-readable for the gateway's uid) and HTTP on addr:80, in a network namespace of its
// own attached to the cluster's fabric bridge; everything is removed in
// t.Cleanup.
func startExternalServer(t *testing.T, e *env, addr string) *externalServer {
	t.Helper()
	ca := newExternalCA(t)
	s := serveExternal(t, e, "external", addr, egressHost, ca)
	s.ca = ca
	return s
}

// externalCA issues the external servers' certificates; file is its
// certificate where the gateway process can read it.
type externalCA struct {
	ca   *testpki.CA
	file string
}

func (c externalCA) pool(t *testing.T) *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(c.ca.CertPEM()) {
		t.Fatal("external CA: no PEM certificate")
	}
	return p
}

func newExternalCA(t *testing.T) externalCA {
	t.Helper()
	ca := testpki.New(t)
	// Not under /tmp: pods get a tmpfs there; the host's /var/tmp is
	// visible to the gateway process (the local cluster's containers share
	// the host's root filesystem).
	dir, err := os.MkdirTemp("/var/tmp", "weft-e2e-egress-ca-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return externalCA{ca: ca, file: caFile}
}

// serveExternal runs HTTPS (a certificate for host from ca; a client
// certificate of ca is verified, not required) on addr:443 and HTTP on
// addr:80 in a host "name" of its own on the fabric
// (externalHost).
func serveExternal(t *testing.T, e *env, name, addr, host string, ca externalCA) *externalServer {
	t.Helper()
	certFile, keyFile := ca.ca.IssueFiles(t, t.TempDir(), host)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	name = e.externalHost(t, name, addr)
	s := &externalServer{addr: addr, caFile: ca.file}
	var lnTLS, lnPlain net.Listener
	if err := netns.Do("/run/netns/"+name, func() error {
		var err error
		if lnTLS, err = net.Listen("tcp", addr+":443"); err != nil {
			return err
		}
		lnPlain, err = net.Listen("tcp", addr+":80")
		return err
	}); err != nil {
		t.Fatalf("listen in netns %s: %v", name, err)
	}
	record := func(list *[]seenRequest, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			req := seenRequest{client: host}
			if r.TLS != nil {
				req.sni = r.TLS.ServerName
			}
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].DNSNames) > 0 {
				req.clientCert = r.TLS.PeerCertificates[0].DNSNames[0]
			}
			s.mu.Lock()
			*list = append(*list, req)
			s.mu.Unlock()
			io.WriteString(w, body)
		}
	}
	srvTLS := &http.Server{Handler: record(&s.tls, bodyTLS), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			// A client certificate of ca is verified and recorded.
			ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.pool(t)}}
	srvPlain := &http.Server{Handler: record(&s.plain, bodyPlain), ReadHeaderTimeout: 10 * time.Second}
	go srvTLS.ServeTLS(lnTLS, "", "")
	go srvPlain.Serve(lnPlain)
	t.Cleanup(func() { srvTLS.Close(); srvPlain.Close() })
	return s
}

// externalHost makes a network namespace "weft-<cluster>-<name>" with addr
// (on the fabric's /24) attached to the cluster's fabric bridge: a host
// outside the nodes. It is removed in t.Cleanup.
func (e *env) externalHost(t *testing.T, name, addr string) string {
	t.Helper()
	ns, port := "weft-"+e.c.Config.Name+"-"+name, "x-"+name
	fabric := e.c.FabricNetns()
	ipCmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "netns", "del", ns).Run() // a leftover of an interrupted run
	ipCmd("netns", "add", ns)
	t.Cleanup(func() {
		exec.Command("ip", "-n", fabric, "link", "del", port).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	ipCmd("-n", ns, "link", "set", "lo", "up")
	ipCmd("-n", fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	ipCmd("-n", fabric, "link", "set", port, "master", "br0", "up")
	ipCmd("-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
	ipCmd("-n", ns, "link", "set", "eth0", "up")
	// Replies to pod addresses go via the fabric, which routes pod CIDRs.
	ipCmd("-n", ns, "route", "add", "default", "via", e.c.FabricGateway().String())
	return ns
}
