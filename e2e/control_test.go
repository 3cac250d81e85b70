package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

const (
	addressType       = "type.googleapis.com/weft.workload.v1.Address"
	authorizationType = "type.googleapis.com/weft.workload.v1.Authorization"
)

// trustBundle reads the CA's published bundle from a namespace.
func (e *env) trustBundle(t *testing.T, ns string) *x509.CertPool {
	t.Helper()
	var pemData string
	eventually(t, "trust bundle ConfigMap in "+ns, 30*time.Second, func() error {
		cm, err := e.c.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), "weft-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		pemData = cm.Data["root-cert.pem"]
		if pemData == "" {
			return errors.New("empty root-cert.pem")
		}
		return nil
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pemData)) {
		t.Fatalf("bundle in %s is not PEM", ns)
	}
	return pool
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// controlConn dials weft-control at addr (VIP or pod IP) from inside the
// cluster, verifying its certificate against the trust bundle.
func (e *env) controlConn(t *testing.T, addr string, roots *x509.CertPool, token string) *grpc.ClientConn {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "weft-control." + controlNS + ".svc", MinVersion: tls.VersionTLS13})
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return e.c.DialContext(ctx, "tcp", a) }),
		grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(bearer(token)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// workloadsByIP indexes the Address snapshot's workloads by pod IP.
func workloadsByIP(snap map[string]proto.Message) map[string]*workloadv1.Workload {
	out := map[string]*workloadv1.Workload{}
	for _, m := range snap {
		if w := m.(*workloadv1.Address).GetWorkload(); w != nil {
			for _, a := range w.GetAddresses() {
				out[a] = w
			}
		}
	}
	return out
}

// TestControlPlane installs the control plane with Helm and checks it as a
// node agent would use it: workload discovery over delta xDS and the CA.
func TestControlPlane(t *testing.T) {
	e := startCluster(t, "e2ectl", 2, 2)
	e.installControlPlane(t)
	root := repoRoot()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ready := strings.TrimSpace(e.mustKubectl(t, "-n", controlNS, "get", "deployment", "weft-control", "-o", "jsonpath={.status.readyReplicas}"))
	if ready != "2" {
		t.Fatalf("weft-control ready replicas = %q, want 2", ready)
	}

	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")

	roots := e.trustBundle(t, "default")
	e.mustKubectl(t, "create", "serviceaccount", "xds-test")
	conn := e.controlConn(t, net.JoinHostPort(e.serviceIP(t, controlNS, "weft-control"), "15012"), roots, e.token(t, "default", "xds-test", ""))
	client := xdsclient.NewMirror(nil)
	go xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "e2e-node-agent"}, Types: []string{addressType, authorizationType}},
		client.Handle).Run(ctx)

	t.Run("node agent subscription receives Bookinfo with identities and VIPs", func(t *testing.T) {
		out := e.mustKubectl(t, "get", "pod", "-o", `jsonpath={range .items[*]}{.status.podIP}{" "}{.spec.serviceAccountName}{" "}{.metadata.labels.app}{"\n"}{end}`)
		eventually(t, "every Bookinfo pod as an HBONE workload", 30*time.Second, func() error {
			byIP := workloadsByIP(client.Snapshot(addressType))
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				w := byIP[f[0]]
				if w == nil {
					return fmt.Errorf("no workload for %s (%s)", f[0], f[2])
				}
				if w.GetServiceAccount() != f[1] || w.GetTrustDomain() != "cluster.local" || w.GetTunnelProtocol() != workloadv1.TunnelProtocol_HBONE {
					return fmt.Errorf("workload %s: sa=%s td=%s tunnel=%s, want %s cluster.local HBONE", w.GetName(), w.GetServiceAccount(), w.GetTrustDomain(), w.GetTunnelProtocol(), f[1])
				}
				if _, ok := w.GetServices()["default/"+f[2]+".default.svc.cluster.local"]; !ok {
					return fmt.Errorf("workload %s not linked to service %s: %v", w.GetName(), f[2], w.GetServices())
				}
			}
			return nil
		})
		for _, svc := range []string{"productpage", "reviews", "ratings", "details"} {
			vip := e.serviceIP(t, "default", svc)
			name := "default/" + svc + ".default.svc.cluster.local"
			m, ok := client.Snapshot(addressType)[name]
			if !ok {
				t.Fatalf("service %s missing", name)
			}
			s := m.(*workloadv1.Address).GetService()
			if len(s.GetAddresses()) == 0 || s.GetAddresses()[0] != vip || len(s.GetPorts()) != 1 || s.GetPorts()[0].GetServicePort() != 9080 {
				t.Errorf("service %s = %v, want VIP %s port 9080", name, s, vip)
			}
		}
	})

	t.Run("scale-up and scale-down reach subscribers", func(t *testing.T) {
		e.mustKubectl(t, "scale", "deployment/ratings-v1", "--replicas=2")
		checkPropagation(t, e, client, "app=ratings", true)
		e.mustKubectl(t, "scale", "deployment/ratings-v1", "--replicas=1")
		checkPropagation(t, e, client, "app=ratings", false)
	})

	t.Run("a workload certificate from a pod-bound token verifies against the bundle", func(t *testing.T) {
		pod := strings.TrimSpace(e.mustKubectl(t, "get", "pod", "-l", "app=productpage", "-o", "jsonpath={.items[0].metadata.name}"))
		ca := cav1.NewCertificateServiceClient(e.controlConn(t, net.JoinHostPort(e.serviceIP(t, controlNS, "weft-control"), "15012"), roots, e.token(t, "default", "bookinfo-productpage", pod)))
		id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bookinfo-productpage")
		resp, err := ca.CreateCertificate(ctx, &cav1.CreateCertificateRequest{Csr: string(csrFor(t, id))})
		if err != nil {
			t.Fatalf("CreateCertificate: %v", err)
		}
		var chain []*x509.Certificate
		for _, p := range resp.GetCertChain() {
			chain = append(chain, parsePEMCert(t, p))
		}
		bundle := x509bundle.New(spiffeid.RequireTrustDomainFromString("cluster.local"))
		for _, p := range resp.GetTrustBundle() {
			bundle.AddX509Authority(parsePEMCert(t, p))
		}
		got, _, err := x509svid.Verify(chain, bundle)
		if err != nil || got != id {
			t.Fatalf("x509svid.Verify = %v, %v; want %v", got, err, id)
		}
		// The bundle in the response is the published one.
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("certificate does not verify against the published ConfigMap bundle: %v", err)
		}

		other := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
		_, err = ca.CreateCertificate(ctx, &cav1.CreateCertificateRequest{Csr: string(csrFor(t, other))})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("productpage asking for reviews' identity: %v, want PermissionDenied", err)
		}
	})

	t.Run("a node agent gets identities only for pods on its own node", func(t *testing.T) {
		e.mustKubectl(t, "-n", controlNS, "create", "serviceaccount", "weft-node-agent")
		agentNode := strings.TrimSpace(e.mustKubectl(t, "get", "pod", "-l", "app=details", "-o", "jsonpath={.items[0].spec.nodeName}"))
		e.mustKubectl(t, "-n", controlNS, "run", "fake-agent", "--image=curlimages/curl", "--restart=Never",
			"--overrides", fmt.Sprintf(`{"spec":{"nodeName":%q,"serviceAccountName":"weft-node-agent"}}`, agentNode), "--command", "--", "/bin/sleep", "infinity")
		e.mustKubectl(t, "-n", controlNS, "wait", "--for=condition=Ready", "pod/fake-agent", "--timeout=60s")
		ca := cav1.NewCertificateServiceClient(e.controlConn(t, net.JoinHostPort(e.serviceIP(t, controlNS, "weft-control"), "15012"), roots, e.token(t, controlNS, "weft-node-agent", "fake-agent")))

		local := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bookinfo-details")
		if _, err := ca.CreateCertificate(ctx, &cav1.CreateCertificateRequest{Csr: string(csrFor(t, local))}); err != nil {
			t.Fatalf("node agent on %s asking for details (a pod on its node): %v", agentNode, err)
		}
		// An identity with no pod on the agent's node is refused.
		e.mustKubectl(t, "create", "serviceaccount", "elsewhere")
		otherNode := "node-0"
		if agentNode == "node-0" {
			otherNode = "node-1"
		}
		e.mustKubectl(t, "run", "elsewhere", "--image=curlimages/curl", "--restart=Never",
			"--overrides", fmt.Sprintf(`{"spec":{"nodeName":%q,"serviceAccountName":"elsewhere"}}`, otherNode), "--command", "--", "/bin/sleep", "infinity")
		e.mustKubectl(t, "wait", "--for=condition=Ready", "pod/elsewhere", "--timeout=60s")
		remote := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/elsewhere")
		_, err := ca.CreateCertificate(ctx, &cav1.CreateCertificateRequest{Csr: string(csrFor(t, remote))})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("node agent on %s asking for an identity only on %s: %v, want PermissionDenied", agentNode, otherNode, err)
		}
		// Garbage is rejected cleanly.
		_, err = ca.CreateCertificate(ctx, &cav1.CreateCertificateRequest{Csr: "not a csr"})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("garbage CSR: %v, want InvalidArgument", err)
		}
	})

	t.Run("policies are translated, and bad ones reported on their status", func(t *testing.T) {
		e.mustKubectl(t, "apply", "-f", filepath.Join(root, "e2e/testdata/authz-policies.yaml"))
		eventually(t, "the valid policy in the xDS snapshot", 10*time.Second, func() error {
			m, ok := client.Snapshot(authorizationType)["default/ratings-from-reviews"]
			if !ok {
				return errors.New("missing")
			}
			if a := m.(*workloadv1.Authorization); a.GetAction() != workloadv1.Action_ALLOW || a.GetScope() != workloadv1.Scope_WORKLOAD_SELECTOR {
				return fmt.Errorf("got %v", a)
			}
			return nil
		})
		cond := func(name string) string {
			out, _ := e.kubectl("get", "authorizationpolicy", name, "-o",
				`jsonpath={.status.conditions[?(@.type=="WeftAccepted")].status} {.status.conditions[?(@.type=="WeftAccepted")].reason}: {.status.conditions[?(@.type=="WeftAccepted")].message}`)
			return out
		}
		for name, want := range map[string][]string{
			"ratings-from-reviews": {"True Accepted"},
			"deny-admin-path":      {"False PartiallyInvalid", "paths"},
			"bad-cidr":             {"False PartiallyInvalid", "10.0.0.0/33"},
		} {
			eventually(t, "status of "+name, 20*time.Second, func() error {
				got := cond(name)
				for _, w := range want {
					if !strings.Contains(got, w) {
						return fmt.Errorf("condition %q lacks %q", got, w)
					}
				}
				return nil
			})
		}
	})

	t.Run("every kind weft-base installs says on its status what Weft did with it", func(t *testing.T) {
		checkStatusProblems(t, e, filepath.Join(root, "e2e/testdata/status-problems.yaml"))
	})

	t.Run("weft-control writes only the RoleBindings it manages (admission policy), attacked as weft-control", func(t *testing.T) {
		testRoleBindingPolicy(t, e)
	})

	t.Run("killing the leader keeps xDS serving and a new leader takes over", func(t *testing.T) {
		leader := e.leader(t)
		survivor := strings.TrimSpace(e.mustKubectl(t, "-n", controlNS, "get", "pod", "-l", "app=weft-control",
			"-o", fmt.Sprintf(`jsonpath={range .items[?(@.metadata.name!="%s")]}{.status.podIP}{end}`, leader)))
		if survivor == "" {
			t.Fatal("no second replica")
		}
		directState := xdsclient.NewMirror(nil)
		direct := xdsclient.New(xdsclient.Config{Conn: e.controlConn(t, net.JoinHostPort(survivor, "15012"), roots, e.token(t, "default", "xds-test", "")),
			Node: &core.Node{Id: "e2e-direct"}, Types: []string{addressType}}, directState.Handle)
		go direct.Run(ctx)
		eventually(t, "subscription to the surviving replica", 20*time.Second, func() error {
			if !direct.Synced() {
				return errors.New("not synced")
			}
			return nil
		})
		e.mustKubectl(t, "-n", controlNS, "delete", "pod", leader, "--wait=false")
		eventually(t, "a new leader", 30*time.Second, func() error {
			if l := e.leader(t); l == leader || l == "" {
				return fmt.Errorf("leader still %q", l)
			}
			return nil
		})
		connects := direct.Connects()
		e.mustKubectl(t, "scale", "deployment/ratings-v1", "--replicas=2")
		checkPropagation(t, e, directState, "app=ratings", true)
		if direct.Connects() != connects {
			t.Errorf("the surviving replica's stream was interrupted (%d -> %d connects)", connects, direct.Connects())
		}
	})
}

// leader returns the pod holding the control plane's leader lease.
func (e *env) leader(t *testing.T) string {
	t.Helper()
	l, err := e.c.Client.CoordinationV1().Leases(controlNS).Get(context.Background(), "weft-control", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// checkPropagation waits for the set of pod IPs matching selector to change
// (added: one more; removed: one fewer) and asserts that the xDS snapshot
// follows (within 10 s: an event the control plane missed would wait for
// a resync); it logs how long that took.
func checkPropagation(t *testing.T, e *env, c *xdsclient.Mirror, selector string, added bool) {
	t.Helper()
	ips := func() map[string]bool {
		pods, err := e.c.Client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, p := range pods.Items {
			if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
				out[p.Status.PodIP] = true
			}
		}
		return out
	}
	before := workloadsByIP(c.Snapshot(addressType))
	var changedIP string
	var apiAt time.Time
	deadline := time.Now().Add(90 * time.Second)
	for changedIP == "" && time.Now().Before(deadline) {
		now := ips()
		for ip := range now {
			if added && before[ip] == nil {
				changedIP, apiAt = ip, time.Now()
			}
		}
		if !added {
			for ip, w := range before {
				if !now[ip] && strings.HasPrefix(w.GetName(), "ratings-") {
					changedIP, apiAt = ip, time.Now()
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if changedIP == "" {
		t.Fatalf("the API never showed the change (%s, added=%v)", selector, added)
	}
	for {
		_, present := workloadsByIP(c.Snapshot(addressType))[changedIP]
		if present == added {
			break
		}
		if time.Since(apiAt) > 10*time.Second {
			t.Fatalf("xDS never reflected %s (added=%v)", changedIP, added)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A timing, not a verdict: the lag includes the kubelet's work (a
	// deleted pod leaves the mesh when it stops being ready, after the API
	// marks it), and a busy machine's scheduling.
	t.Logf("pod %s (added=%v) reached the subscriber %s after the API showed it", changedIP, added, time.Since(apiAt).Round(time.Millisecond))
}

func csrFor(t *testing.T, id spiffeid.ID) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id.String())
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parsePEMCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		t.Fatalf("not PEM: %q", p)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Status columns, as kubectl jsonpath: Weft's condition and analysis
// codes on Istio kinds, Weft's parent conditions on routes, Accepted on
// GatewayClasses.
const (
	istioStatusPath = `jsonpath={range .status.conditions[?(@.type=="WeftAccepted")]}{.status} {.reason}: {.message}{end}` +
		` {range .status.validationMessages[*]}{.type.code} {.level}{end}`
	routeStatusPath = `jsonpath={range .status.parents[?(@.controllerName=="weft.io/waypoint-controller")].conditions[*]}` +
		`{.type}={.status} {.reason}: {.message}; {end}`
	classStatusPath = `jsonpath={range .status.conditions[?(@.type=="Accepted")]}{.status} {.reason}: {.message}{end}`
	// gatewayStatusPath: the Gateway's Accepted, then each listener's.
	gatewayStatusPath = `jsonpath={range .status.conditions[?(@.type=="Accepted")]}{.status} {.reason}; {end}` +
		`{range .status.listeners[*]}{.name}: {range .conditions[?(@.type=="Accepted")]}{.status} {.reason}; {end}` +
		`{range .conditions[?(@.type=="ResolvedRefs")]}ResolvedRefs={.status} {.reason}; {end}{end}`
)

// checkStatusProblems applies one object with a problem per kind and
// wants each status to name its problem. The control plane has no resync,
// so a status that waits on anything but the object's own event never
// comes; the 15 s window only absorbs a loaded CI machine (one polling
// pass is fifteen kubectl runs).
func checkStatusProblems(t *testing.T, e *env, manifest string) {
	type want struct {
		path string
		has  []string
	}
	wants := map[string]want{
		"authorizationpolicy/bad-cidr":             {istioStatusPath, []string{"False PartiallyInvalid", "10.0.0.0/33", "WEFT0001 WARNING"}},
		"peerauthentication/b-conflict":            {istioStatusPath, []string{"False PartiallyInvalid", "a-strict", "WEFT0001"}},
		"peerauthentication/a-strict":              {istioStatusPath, []string{"True Accepted"}},
		"requestauthentication/jwt":                {istioStatusPath, []string{"False PartiallyInvalid", "outputClaimToHeaders", "WEFT0001 WARNING"}},
		"telemetry/access-logs":                    {istioStatusPath, []string{"False PartiallyInvalid", "reportingInterval: not supported", "WEFT0001"}},
		"workloadentry/vm":                         {istioStatusPath, []string{"False Unsupported", "ServiceEntry", "WEFT0002"}},
		"serviceentry/by-dns":                      {istioStatusPath, []string{"False PartiallyInvalid", "wildcard hosts are not supported"}},
		"virtualservice/wildcard":                  {istioStatusPath, []string{"False PartiallyInvalid", "wildcard host"}},
		"destinationrule/nosuch":                   {istioStatusPath, []string{"False PartiallyInvalid", "not a Service of the mesh"}},
		"gateways.networking.istio.io/no-selector": {istioStatusPath, []string{"False PartiallyInvalid", "spec.selector: empty"}},
		"gatewayclass/weft-custom":                 {classStatusPath, []string{"False Unsupported", "not served"}},
		"gatewayclass/weft":                        {classStatusPath, []string{"True Accepted"}},
		"httproute/no-service":                     {routeStatusPath, []string{"Accepted=True", "PartiallyInvalid=True UnsupportedValue", "not in the mesh"}},
		// HTTPS is served, but the listener's Secret does not exist.
		"gateways.gateway.networking.k8s.io/https-ingress": {gatewayStatusPath, []string{"True ListenersNotValid",
			"http: True Accepted", "https: True Accepted; ResolvedRefs=False InvalidCertificateRef"}},
		"grpcroute/grpc": {routeStatusPath, []string{"Accepted=False UnsupportedValue", "GRPCRoute is not supported"}},
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := e.kubectl("-n", controlNS, "logs", "-l", "app.kubernetes.io/name=weft-control", "--tail=60", "--prefix")
			t.Logf("weft-control logs at the failure:\n%s", out)
			out, _ = e.kubectl("get", "serviceentries,peerauthentications", "-A", "-o", "yaml")
			t.Logf("objects at the failure:\n%s", out)
		}
	})
	e.mustKubectl(t, "apply", "-f", manifest)
	eventually(t, "every status naming its problem", 15*time.Second, func() error {
		var missing []string
		for obj, w := range wants {
			got, err := e.kubectl("-n", "status-test", "get", obj, "-o", w.path)
			if err != nil {
				return err
			}
			for _, s := range w.has {
				if !strings.Contains(got, s) {
					missing = append(missing, fmt.Sprintf("%s: %q lacks %q", obj, got, s))
					break
				}
			}
		}
		if len(missing) > 0 {
			return errors.New(strings.Join(missing, "\n"))
		}
		return nil
	})
}
