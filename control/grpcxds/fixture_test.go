package grpcxds

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/control/ca"
	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/control/xds"
)

// Names of the fixture: weft-control as deployed by the chart, the greeter
// Service and the client's service account.
const (
	controlNamespace = "weft-system"
	controlService   = "weft-control"
	controlPort      = "15012"
	caAudience       = "weft-ca" // weft-control's --ca-audience default
	clientSA         = "system:serviceaccount:default:greeter-client"

	greeterHost = "greeter.default.svc.cluster.local"
	greeterPort = 50051
	greeterVIP  = "10.96.0.50"
)

// backend is one greeter pod: a real grpc-go server on a loopback address
// that answers grpc.testing.TestService/UnaryCall with its version.
type backend struct {
	version string
	addr    netip.AddrPort
}

type greeter struct {
	testgrpc.UnimplementedTestServiceServer
	version, addr string
}

func (g *greeter) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: g.version, Hostname: g.addr}, nil
}

// startBackends serves one greeter per version on 127.0.0.2, 127.0.0.3, ...,
// all on the same (ephemeral) port, since the Service has one targetPort.
// They are plaintext: gRPC's CLAs list plain addresses (no HBONE).
func startBackends(t *testing.T, versions ...string) []backend {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		var lns []net.Listener
		port := 0
		for i := range versions {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", i+2, port))
			if err != nil {
				break
			}
			port = ln.Addr().(*net.TCPAddr).Port
			lns = append(lns, ln)
		}
		if len(lns) < len(versions) {
			for _, ln := range lns {
				ln.Close()
			}
			continue
		}
		var out []backend
		for i, ln := range lns {
			addr := netip.MustParseAddrPort(ln.Addr().String())
			g := grpc.NewServer()
			testgrpc.RegisterTestServiceServer(g, &greeter{version: versions[i], addr: addr.String()})
			go g.Serve(ln)
			t.Cleanup(g.Stop)
			out = append(out, backend{version: versions[i], addr: addr})
		}
		return out
	}
	t.Fatalf("no common free port on 127.0.0.2-%d", len(versions)+1)
	return nil
}

// registry is the cluster state the workload translation reads: namespace
// default in ambient mode, Service greeter (port 50051 "grpc" -> the
// backends' port) and one Ready pod per backend labelled app=greeter and
// version=<its version>.
func registry(backends []backend) workload.Inputs {
	in := workload.Inputs{
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "default",
			Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}},
		Services: []*corev1.Service{{
			ObjectMeta: metav1.ObjectMeta{Name: "greeter", Namespace: "default"},
			Spec: corev1.ServiceSpec{
				ClusterIP: greeterVIP, ClusterIPs: []string{greeterVIP},
				Selector: map[string]string{"app": "greeter"},
				Ports: []corev1.ServicePort{{Name: "grpc", Port: greeterPort,
					TargetPort: intstr.FromInt32(int32(backends[0].addr.Port()))}},
			},
		}},
	}
	for _, b := range backends {
		ip := b.addr.Addr().String()
		in.Pods = append(in.Pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "greeter-" + b.version, Namespace: "default", UID: k8stypes.UID("uid-greeter-" + b.version),
				Labels: map[string]string{"app": "greeter", "version": b.version}},
			Spec: corev1.PodSpec{ServiceAccountName: "greeter", NodeName: "node-1",
				Containers: []corev1.Container{{Name: "app", Image: "weft/sample"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		})
	}
	return in
}

const destinationRule = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: greeter
  namespace: default
spec:
  host: greeter
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`

// jasonToV2 is Istio's "route a user to v2" rule for greeter.
const jasonToV2 = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: greeter
  namespace: default
spec:
  hosts:
  - greeter
  http:
  - match:
    - headers:
        x-user:
          exact: jason
    route:
    - destination:
        host: greeter
        subset: v2
  - route:
    - destination:
        host: greeter
        subset: v1
`

// fiftyFifty keeps jason on v2 and splits everyone else 50/50.
const fiftyFifty = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: greeter
  namespace: default
spec:
  hosts:
  - greeter
  http:
  - match:
    - headers:
        x-user:
          exact: jason
    route:
    - destination:
        host: greeter
        subset: v2
  - route:
    - destination:
        host: greeter
        subset: v1
      weight: 50
    - destination:
        host: greeter
        subset: v2
      weight: 50
`

func decode[T any](t *testing.T, doc string) *T {
	t.Helper()
	obj := new(T)
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// translate runs weft-control's translation pipeline on the fixture:
// control/workload, then control/waypoint, and returns the gRPC node
// group of Output.Groups, as control/server serves it. Any Problem fails the test: the fixture is valid input.
func translate(t *testing.T, reg workload.Inputs, virtualService string) xds.Resources {
	t.Helper()
	wout := workload.Translate(workload.Config{}, reg)
	if len(wout.Problems) > 0 {
		t.Fatalf("workload translation problems: %v", wout.Problems)
	}
	out := waypoint.Translate(waypoint.Config{}, waypoint.Inputs{
		Addresses:        wout.Addresses,
		Services:         reg.Services,
		Pods:             reg.Pods,
		VirtualServices:  []*networkingv1.VirtualService{decode[networkingv1.VirtualService](t, virtualService)},
		DestinationRules: []*networkingv1.DestinationRule{decode[networkingv1.DestinationRule](t, destinationRule)},
	})
	if len(out.Problems) > 0 {
		t.Fatalf("waypoint translation problems: %v", out.Problems)
	}
	r, ok := out.Groups()[xds.GroupGRPC]
	if !ok {
		t.Fatal("no gRPC snapshot")
	}
	if n := incompleteLocalities(r.Endpoints); n > 0 {
		t.Fatalf("%d gRPC LocalityLbEndpoints without locality or load_balancing_weight: grpc-go NACKs the first and drops the second", n)
	}
	return r
}

// incompleteLocalities counts LocalityLbEndpoints without a locality
// (grpc-go rejects the CLA: "EDS response contains a locality without ID")
// or a load_balancing_weight (grpc-go ignores a locality of weight 0).
func incompleteLocalities(clas []*endpointv3.ClusterLoadAssignment) int {
	n := 0
	for _, cla := range clas {
		for _, l := range cla.GetEndpoints() {
			if l.GetLocality() == nil || l.GetLoadBalancingWeight().GetValue() == 0 {
				n++
			}
		}
	}
	return n
}

// logBuffer collects the control plane's logs (it keeps logging after the
// test returns, so not through t.Log).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// controlPlane is weft-control's xDS endpoint as control/server.Run builds
// it: an xds.Server on a gRPC server with TLS (a serving certificate for
// weft-control's Service names from the CA's root) and every stream
// authenticated by a service-account bearer token (TokenReview, audience
// weft-ca), here against a fake API server that knows one token.
type controlPlane struct {
	xds       *xds.Server
	target    string // the bootstrap's server_uri
	caFile    string // the CA bundle (trust anchor of the serving certificate)
	tokenFile string // the client's projected service-account token
	bundle    []byte
	logs      *logBuffer

	mu      sync.Mutex
	callers []string // authenticated xDS streams
}

func startControlPlane(t *testing.T, ctx context.Context) *controlPlane {
	t.Helper()
	cp := &controlPlane{logs: &logBuffer{}}
	log := slog.New(slog.NewTextHandler(cp.logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("weft-control logs:\n%s", cp.logs.String())
		}
	})
	// grpc-go keeps the bootstrap it read (and the credentials built from
	// the files it names) for the whole process: the files live next to the
	// bootstrap file and keep their content across runs (-count=N).
	dir := filepath.Dir(os.Getenv(bootstrapEnv))
	kube, token := apiServer()
	cp.tokenFile = filepath.Join(dir, "token")
	writeFile(t, cp.tokenFile, []byte(token))
	authn := ca.NewTokenReviewAuthenticator(kube, ca.TokenReviewOptions{Audience: caAudience})

	authority, err := ca.LoadOrCreateRoot(ctx, kube, controlNamespace, ca.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cp.bundle = authority.BundlePEM()
	cp.caFile = filepath.Join(dir, "root-cert.pem")
	writeFile(t, cp.caFile, cp.bundle)
	// control/server.servingNames("weft-control", "weft-system", "cluster.local").
	names := []string{controlService, controlService + "." + controlNamespace, controlService + "." + controlNamespace + ".svc",
		controlService + "." + controlNamespace + ".svc.cluster.local"}
	rotator, err := ca.NewServingRotator(authority, names, ca.ServingRotatorOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}

	cp.xds = xds.New(ctx, log, prometheus.NewRegistry())
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(rotator.TLSConfig())),
		grpc.StreamInterceptor(cp.requireToken(authn, log)),
		grpc.MaxRecvMsgSize(16<<20),
	)
	cp.xds.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)

	name := controlService + "." + controlNamespace + ".svc:" + controlPort
	clusterDNS.Store(name, ln.Addr().String())
	t.Cleanup(func() { clusterDNS.Delete(name) })
	cp.target = clusterDNSScheme + ":///" + name
	return cp
}

// requireToken is control/server's interceptor of the same name (not
// exported), recording who was let in.
func (cp *controlPlane) requireToken(authn ca.Authenticator, log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		caller, err := ca.AuthenticateContext(ss.Context(), authn)
		if err != nil {
			log.Warn("xds stream rejected", "method", info.FullMethod, "err", err)
			return err
		}
		cp.mu.Lock()
		cp.callers = append(cp.callers, caller.Username)
		cp.mu.Unlock()
		return handler(srv, ss)
	}
}

func (cp *controlPlane) authenticated() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.callers)
}

// apiServer is the fake Kubernetes API server, one per process (see
// startControlPlane): it holds weft-control's CA root Secret and answers
// TokenReviews, accepting one service-account token (returned) for audience
// weft-ca.
var apiServer = sync.OnceValues(func() (*fake.Clientset, string) {
	token := fakeJWT(time.Now().Add(time.Hour))
	kube := fake.NewClientset()
	kube.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		if tr.Spec.Token != token || !slices.Equal(tr.Spec.Audiences, []string{caAudience}) {
			tr.Status = authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}
			return true, tr, nil
		}
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{caAudience},
			User: authenticationv1.UserInfo{Username: clientSA}}
		return true, tr, nil
	})
	return kube, token
})

// fakeJWT is a well-formed, unsigned JWT shaped like a projected
// service-account token (grpc-go reads its exp claim); only the fake
// TokenReview judges it.
func fakeJWT(exp time.Time) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	header := enc(map[string]string{"alg": "RS256", "typ": "JWT"})
	claims := enc(map[string]any{"aud": []string{caAudience}, "exp": exp.Unix(), "iat": time.Now().Unix(),
		"iss": "https://kubernetes.default.svc.cluster.local", "sub": clientSA})
	return header + "." + claims + "." + base64.RawURLEncoding.EncodeToString([]byte("not-a-signature"))
}

// writeFile replaces path atomically (grpc-go may be reading it).
func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// bootstrap is a proxyless gRPC client's xDS bootstrap for the control
// plane: TLS verified against the CA bundle, the token file as call
// credentials, node ID grpc~... (the "grpc" node group).
func (cp *controlPlane) bootstrap(t *testing.T, nodeID string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      cp.target,
			"channel_creds":   []any{map[string]any{"type": "tls", "config": map[string]any{"ca_certificate_file": cp.caFile}}},
			"call_creds":      []any{map[string]any{"type": "jwt_token_file", "config": map[string]any{"jwt_token_file": cp.tokenFile}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": nodeID, "locality": map[string]any{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
