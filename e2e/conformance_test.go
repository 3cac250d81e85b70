//go:build conformance

// The upstream Gateway API conformance suite against Weft (make
// conformance, docs/conformance/README.md). Behind the build tag
// conformance: it runs for tens of minutes and fails until Weft passes the
// suite, so `make test` does not build it (rather than skip it silently).

package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/apis/v1alpha2"
	"sigs.k8s.io/gateway-api/apis/v1alpha3"
	xv1alpha1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"sigs.k8s.io/yaml"
)

// conformanceFeatures are the extended features Weft claims for the
// GATEWAY-HTTP profile (the profile's core features, Gateway, HTTPRoute
// and ReferenceGrant, are always tested): those control/waypoint
// translates (httproute.go). The profile's other extended features are
// reported as unsupported (their tests skipped and listed in the report):
// HTTPS/TLS listeners and frontend client certificates, static addresses,
// infrastructure (labels and annotations are propagated and a parametersRef
// is refused, so GatewayInfrastructureMetadata and GatewayInvalidParametersRef
// pass; claimed, their parallel run stalls GatewayObservedGenerationBump,
// see docs/conformance/README.md), HTTP listener isolation, ListenerSet, BackendTLSPolicy, destination port
// matching, CORS, retries (HTTPRouteRetry is an experimental-channel
// feature: the standard-channel CRDs charts/base ships prune a rule's
// retry, so the rule keeps the default policy, 503 only, and the test
// fails; httproute.go translates the field where the CRDs keep it). The redirect codes 303, 307 and 308 are HTTPRoute features that
// the mesh tests of them need too (MESH-HTTP counts those tests in neither
// part: results.md lists them).
var conformanceFeatures = []features.FeatureName{
	features.SupportGatewayPort8080,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteBackendRequestHeaderModification,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRouteRequestMirror,
	features.SupportHTTPRouteRequestMultipleMirrors,
	features.SupportHTTPRouteRequestPercentageMirror,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRouteBackendProtocolH2C,
	features.SupportHTTPRouteBackendProtocolWebSocket,
	features.SupportHTTPRouteNamedRouteRule,
}

// meshConformanceFeatures are what Weft claims for the MESH-HTTP profile:
// its core feature Mesh (HTTPRoute is core in both profiles) and the
// extended features a waypoint's GAMMA translation implements
// (control/waypoint httproute.go): MeshClusterIPMatching since a waypoint
// picks a Service's routes by the connection's destination (the Service
// VIP and port), not the Host header. Not claimed: MeshConsumerRoute (waypoints serve only
// producer routes, in the Service's namespace: a consumer route is ignored
// and reported).
var meshConformanceFeatures = []features.FeatureName{
	features.SupportMesh,
	features.SupportMeshClusterIPMatching,
	features.SupportMeshHTTPRouteRewritePath,
	features.SupportMeshHTTPRouteSchemeRedirect,
	features.SupportMeshHTTPRouteRedirectPort,
	features.SupportMeshHTTPRouteRedirectPath,
	features.SupportMeshHTTPRouteBackendRequestHeaderModification,
	features.SupportMeshHTTPRouteQueryParamMatching,
	features.SupportMeshHTTPRouteNamedRouteRule,
}

// meshNamespaces are the namespaces of the suite's mesh manifests, enrolled
// in the mesh after the suite applied them; the first also gets the
// waypoint its Services use (the GAMMA routes' parents live there).
var meshNamespaces = []string{"gateway-conformance-mesh", "gateway-conformance-mesh-consumer"}

// conformanceTimeouts are the suite's defaults with shorter waits for
// Gateways to become ready, which the tests using HTTPS listeners wait
// out in full (5 minutes each, so the run would take hours): on the local
// cluster Weft writes a Gateway's status within seconds, and the base
// manifests' pods are ready in about a minute. Passing tests wait no
// less than they need.
func conformanceTimeouts() config.TimeoutConfig {
	c := config.DefaultTimeoutConfig()
	c.NamespacesMustBeReady = 120 * time.Second
	c.GatewayMustHaveAddress = 90 * time.Second
	c.GatewayMustHaveCondition = 90 * time.Second
	return c
}

// TestGatewayAPIConformance runs the Gateway API conformance suite of the
// Gateway API version the charts' CRDs come from (go.mod pins both) for
// GatewayClass weft (profile GATEWAY-HTTP) and for the mesh (MESH-HTTP:
// GAMMA routes served by a namespace waypoint), and writes the suite's
// report to WEFT_CONFORMANCE_REPORT (make conformance: docs/conformance/),
// else into the cluster's state directory.
func TestGatewayAPIConformance(t *testing.T) {
	// Index 12: indexes 0-11 have suites; the conformance Gateways need
	// load balancer addresses of their own.
	e := startCluster(t, "e2econf", 2, 12)
	root := repoRoot()
	// No charts/gateway: weft-control deploys a gateway (Deployment and
	// LoadBalancer Service) for each of the suite's Gateways, which the
	// local cluster's load balancer exposes on the host at the Gateway's
	// status address.
	e.installControlPlane(t)
	e.installNodeAgent(t)

	report := os.Getenv("WEFT_CONFORMANCE_REPORT")
	if report == "" {
		report = filepath.Join(root, "_output/e2e/e2econf/conformance-report.yaml")
	}
	if err := os.MkdirAll(filepath.Dir(report), 0o755); err != nil {
		t.Fatal(err)
	}
	version, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
	if err != nil {
		t.Fatalf("git describe (the report's implementation version): %v", err)
	}

	log.SetLogger(zap.New(zap.WriteTo(os.Stdout), zap.UseDevMode(true)))
	cfg, err := clientcmd.BuildConfigFromFlags("", e.c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, install := range []func(*runtime.Scheme) error{v1alpha3.Install, v1alpha2.Install, xv1alpha1.Install, gatewayv1.Install, apiextensionsv1.AddToScheme} {
		if err := install(c.Scheme()); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Every test's outcome, for the summary (the report lists only the
	// failed and skipped tests).
	var mu sync.Mutex
	var results []testOutcome
	hook := func(t *testing.T, test suite.ConformanceTest, _ *suite.ConformanceTestSuite) {
		o := testOutcome{name: test.ShortName, features: test.Features, result: "passed"}
		switch {
		case t.Failed():
			o.result = "failed"
		case t.Skipped():
			o.result = "skipped"
		}
		mu.Lock()
		defer mu.Unlock()
		results = append(results, o)
	}
	if path := os.Getenv("WEFT_CONFORMANCE_SUMMARY"); path != "" {
		// Registered before the suite's cleanup that writes the report, so
		// it runs after it.
		t.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			if err := writeConformanceSummary(report, path, results); err != nil {
				t.Errorf("conformance summary: %v", err)
			}
		})
	}
	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName: "weft",
			// The cluster is deleted at the end.
			CleanupBaseResources: false,
			CleanupTestResources: true,
			SupportedFeatures:    slices.Concat(conformanceFeatures, meshConformanceFeatures),
			TimeoutConfig:        conformanceTimeouts(),
			ConformanceProfiles: []suite.ConformanceProfileName{
				suite.GatewayHTTPConformanceProfileName,
				suite.MeshHTTPConformanceProfileName,
			},
			ReportOutputPath: report,
			Implementation: confv1.Implementation{
				Organization: "weft-mesh",
				Project:      "weft",
				URL:          "https://github.com/weft-mesh/weft",
				Version:      strings.TrimSpace(string(version)),
				Contact:      []string{"https://github.com/weft-mesh/weft/issues"},
			},
		},
		Hook:       hook,
		Client:     c,
		Clientset:  cs,
		RestConfig: cfg,
		ManifestFS: []fs.FS{&conformance.Manifests},
	}
	runConformance(t, e, opts)
}

// runConformance is conformance.RunConformanceWithOptions with a step
// between the suite's setup and its tests: the mesh namespaces the setup
// created are enrolled and get their waypoint (enrolMeshNamespaces), as
// Istio's ambient conformance run does. The suite's namespace labels
// (ConformanceOptions.NamespaceLabels) would enrol every namespace, the
// GATEWAY-HTTP ones too.
func runConformance(t *testing.T, e *env, opts suite.ConformanceOptions) {
	cs, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatalf("conformance suite: %v", err)
	}
	t.Cleanup(func() {
		r, err := cs.Report()
		if err != nil {
			t.Errorf("conformance report: %v", err)
			return
		}
		data, err := yaml.Marshal(r)
		if err == nil {
			err = os.WriteFile(opts.ReportOutputPath, data, 0o644)
		}
		if err != nil {
			t.Errorf("conformance report: %v", err)
		}
		t.Logf("conformance report (%s):\n%s", opts.ReportOutputPath, data)
	})
	cs.Setup(t, tests.ConformanceTests)
	e.enrolMeshNamespaces(t)
	if err := cs.Run(t, tests.ConformanceTests); err != nil {
		t.Fatal(err)
	}
}

// enrolMeshNamespaces enrols the suite's mesh namespaces
// (istio.io/dataplane-mode=ambient) and gives the first a namespace
// waypoint (samples/waypoint/waypoint.yaml, istio.io/use-waypoint), which
// serves the GAMMA HTTPRoutes of its Services.
func (e *env) enrolMeshNamespaces(t *testing.T) {
	t.Helper()
	for _, ns := range meshNamespaces {
		e.mustKubectl(t, "label", "--overwrite", "namespace", ns, "istio.io/dataplane-mode=ambient")
	}
	ns := meshNamespaces[0]
	e.mustKubectl(t, "-n", ns, "apply", "-f", filepath.Join(repoRoot(), "samples/waypoint/waypoint.yaml"))
	e.mustKubectl(t, "label", "--overwrite", "namespace", ns, "istio.io/use-waypoint=waypoint")
	e.mustKubectl(t, "-n", ns, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	// The mesh manifests' three echo pods.
	e.waitEnrolled(t, 3)
}

// testOutcome is one conformance test's result, from the suite's hook.
type testOutcome struct {
	name     string
	features []features.FeatureName
	result   string // passed, failed or skipped
}

// writeConformanceSummary writes the markdown summary of the report at
// reportPath (docs/conformance/results.md): per profile the core and
// extended results with their counts, failed and skipped tests and
// unsupported features, then every test's outcome.
func writeConformanceSummary(reportPath, path string, outcomes []testOutcome) error {
	data, err := os.ReadFile(reportPath)
	if err != nil {
		return err
	}
	var r confv1.ConformanceReport
	if err := yaml.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", reportPath, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Gateway API conformance results\n\n")
	fmt.Fprintf(&b, "Generated by `make conformance` from [%s](%s) (do not edit): ", filepath.Base(reportPath), filepath.Base(reportPath))
	fmt.Fprintf(&b, "Gateway API %s (%s channel), %s %s, %s, mode `%s`.\n\n", r.GatewayAPIVersion, r.GatewayAPIChannel, r.Project, r.Version, r.Date, r.Mode)
	b.WriteString("| Profile | Part | Result | Passed | Failed | Skipped |\n|---|---|---|---|---|---|\n")
	for _, p := range r.ProfileReports {
		fmt.Fprintf(&b, "| %s | core | %s | %d | %d | %d |\n", p.Name, p.Core.Result, p.Core.Passed, p.Core.Failed, p.Core.Skipped)
		if p.Extended != nil {
			fmt.Fprintf(&b, "| %s | extended | %s | %d | %d | %d |\n", p.Name, p.Extended.Result, p.Extended.Passed, p.Extended.Failed, p.Extended.Skipped)
		}
	}
	list := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(&b, "\n%s:\n\n", title)
		for _, i := range items {
			fmt.Fprintf(&b, "- %s\n", i)
		}
	}
	for _, p := range r.ProfileReports {
		fmt.Fprintf(&b, "\n## %s\n", p.Name)
		list("Core tests failed", p.Core.FailedTests)
		list("Core tests skipped", p.Core.SkippedTests)
		if p.Extended != nil {
			list("Extended features claimed (tested)", p.Extended.SupportedFeatures)
			list("Extended features not supported (their tests skipped)", p.Extended.UnsupportedFeatures)
			list("Extended tests failed", p.Extended.FailedTests)
			list("Extended tests skipped", p.Extended.SkippedTests)
		}
	}
	slices.SortFunc(outcomes, func(a, b testOutcome) int { return strings.Compare(a.name, b.name) })
	b.WriteString("\n## Every test\n\nSkipped: a feature of the test is not claimed (or the test is provisional).\n\n| Test | Features | Result |\n|---|---|---|\n")
	for _, o := range outcomes {
		var fs []string
		for _, f := range o.features {
			fs = append(fs, string(f))
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", o.name, strings.Join(fs, ", "), o.result)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
