// Package waypoint translates Istio traffic management (VirtualService,
// DestinationRule), Gateway API GAMMA HTTPRoutes and L7
// AuthorizationPolicies, together with the service registry produced by
// control/workload, into standard Envoy v3 resources: one set per waypoint,
// one per ingress gateway deployment (Istio Gateways, gateway.go) and one
// for proxyless gRPC clients. waypoint/README.md is the contract for
// resource names and the Envoy fields used.
//
// The translation is a pure function of its inputs: no clients, no I/O, no
// clock. It follows Istio semantics (istiod's pilot/pkg/networking/core
// route and cluster builders) so that existing manifests behave the same
// way. Bad input never aborts the translation: it becomes a Problem naming
// the object and field, and only the affected part is left out.
//
// Protocol selection per service port (Istio's, adapted to a sniffing
// waypoint): the port's appProtocol, else the prefix of its name before
// "-", decides. http, http2, grpc, grpc-web, h2c (and kubernetes.io/h2c,
// kubernetes.io/ws, kubernetes.io/wss) are HTTP; tcp, tls, https, mongo,
// mysql, redis, udp and the like are TCP (the waypoint cannot see inside
// them). An unnamed port or an unknown name is HTTP, because the waypoint
// sniffs, unless a VirtualService has a tcp route for that port and no http
// route, which makes it TCP.
//
// Istio semantics kept: a VirtualService or HTTPRoute replaces the default
// route of the ports it applies to, so a request no route matches gets 404
// (a port no route applies to keeps the default route); routes without
// retries get Istio's default retry policy (2 attempts on
// connect-failure, refused-stream, unavailable, cancelled and 503); route
// timeouts are 0 (none) unless set; a fault without percentage injects
// nothing; a DestinationRule subset's policy overrides the top-level one
// field by field, and portLevelSettings override both; circuit breaker
// limits Istio does not get from the DestinationRule are lifted to the
// maximum; clusters exist for every port and subset of a served service.
//
// Where Weft departs from istiod, on purpose or for simplicity:
//   - two VirtualServices (or DestinationRules) for the same host are not
//     merged: the oldest (creationTimestamp, then namespace/name) wins and
//     the others get a Problem;
//   - a VirtualService and an HTTPRoute for the same Service: the HTTPRoute
//     wins (as Istio documents for waypoints), the VirtualService gets a
//     Problem; only producer HTTPRoutes (in the Service's namespace) apply;
//   - a route destination naming an unknown host or subset is left out of
//     the route (Istio keeps it and the requests fail with 503); a route
//     left without destinations answers 503 directly (500 for HTTPRoutes,
//     as the Gateway API says);
//   - a match that cannot be translated (bad regex, sourceLabels,
//     sourceNamespace at a Gateway) never applies, and a route whose
//     matches all fail is dropped instead of becoming a catch-all;
//   - sourceNamespace matches the namespace of the client's verified
//     identity (Istio's waypoints compare it with their own namespace);
//   - consistent hashing uses the hash key of the first destination of a
//     route that has one;
//   - an L7 AuthorizationPolicy attribute the waypoint cannot evaluate
//     (requestPrincipals, ipBlocks, request.auth.*, ...) drops the ALLOW
//     rule, or just that attribute from a DENY rule (which then denies
//     more); CUSTOM policies are treated as DENY (fail closed);
//   - endpoint metadata "workload" is the workload's owner name (e.g. the
//     Deployment), falling back to the pod name;
//   - in the gRPC snapshot, per-route fault and CORS configs are dropped
//     (API listeners only have the router filter) and RANDOM load
//     balancing becomes ROUND_ROBIN (gRPC has no RANDOM).
package waypoint

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	meshapi "istio.io/api/mesh/v1alpha1"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/control/xds"
)

// Config holds the mesh-wide settings the translation depends on:
// control/workload's, with the same defaults, and the waypoint-only ones.
type Config struct {
	workload.Config
	// PathNormalization of the waypoints' and gateways' HTTP connection
	// managers (Istio's meshConfig.pathNormalization); default BASE.
	PathNormalization PathNormalization
	// ExtensionProviders are Istio's meshConfig.extensionProviders: the
	// external authorizers of CUSTOM AuthorizationPolicies
	// (ParseExtensionProviders).
	ExtensionProviders []*meshapi.MeshConfig_ExtensionProvider
	// TracingEndpoint is the mesh's OTLP/HTTP endpoint (the chart's
	// waypoint.tracing.otlpEndpoint): where a Telemetry that enables
	// tracing without naming a provider has spans sent; "": nowhere.
	TracingEndpoint string
}

// Inputs is a snapshot of what the translation reads. Nil entries are
// ignored. Translate never modifies its inputs.
type Inputs struct {
	// Addresses is control/workload's Output.Addresses: services (VIPs,
	// ports, waypoint) and workloads (IPs, identity, services with target
	// ports, waypoint, canonical revision, status).
	Addresses map[string]*workloadv1.Address
	// Services give the port names and appProtocols (protocol selection).
	Services []*corev1.Service
	// Pods give the labels DestinationRule subsets select on.
	Pods             []*corev1.Pod
	VirtualServices  []*networkingv1.VirtualService
	DestinationRules []*networkingv1.DestinationRule
	// HTTPRoutes attached to a Service (GAMMA); others are ignored.
	HTTPRoutes []*gatewayv1.HTTPRoute
	// AuthorizationPolicies with targetRefs to a waypoint Gateway or to a
	// Service; selector and namespace-wide policies are enforced at L4 by
	// the node agents and ignored here.
	AuthorizationPolicies []*securityv1.AuthorizationPolicy
	// RequestAuthentications with targetRefs to a waypoint Gateway or to
	// a Service; others are reported and ignored.
	RequestAuthentications []*securityv1.RequestAuthentication
	// IstioGateways are Istio (networking.istio.io) Gateways: ingress
	// gateway deployments (gateway.go).
	IstioGateways []*networkingv1.Gateway
	// IngressGateways are Gateway API Gateways; those of class "weft" are
	// served by ingress gateway deployments (gateway_api.go).
	IngressGateways []*gatewayv1.Gateway
	// Namespaces give the labels that the allowedRoutes namespace
	// selectors of Gateway API listeners select on (gateway_api.go).
	Namespaces []*corev1.Namespace
	// ServiceEntries give their hosts' ports a protocol (the hosts
	// themselves come with Addresses).
	ServiceEntries []*networkingv1.ServiceEntry
	// EnvoyFilters patch the waypoints and ingress gateways they target,
	// as far as Weft runs the patch (envoyfilter.go); others are reported.
	EnvoyFilters []*networkingv1alpha3.EnvoyFilter
	// Telemetries configure the access log and tracing of waypoints and
	// ingress gateways (telemetry.go).
	Telemetries []*telemetryv1.Telemetry
	// ReferenceGrants allow HTTPRoute backendRefs and Gateway listener
	// certificateRefs to other namespaces (control/refgrant).
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant
	// SkipGRPC leaves out the proxyless gRPC snapshot (Output.GRPC nil):
	// the control plane builds it only while a gRPC client is connected,
	// since it is every HTTP Service port's listener, route, clusters and
	// endpoints, about half of the whole translation. Nothing else in the
	// output, problems included, depends on it.
	SkipGRPC bool
}

// Output is the translated snapshot: the Envoy resources of each node group
// the xDS server serves, each list sorted by resource name.
type Output struct {
	// Waypoints by "<namespace>/<gateway-name>": every waypoint some service
	// or workload uses.
	Waypoints map[string]*xds.Resources
	// GRPC is the snapshot of proxyless gRPC clients: an API listener for
	// every HTTP service port of the mesh; nil with Inputs.SkipGRPC.
	GRPC *xds.Resources
	// GatewayProxies by "<namespace>/<service account>" of the gateway
	// pods an Istio Gateway selects: their listeners, routes and clusters.
	GatewayProxies map[string]*xds.Resources
	// Problems found in the input, sorted; at most one per object and
	// message.
	Problems []workload.Problem
}

// Groups are the resources by the xDS server's node group (xds.NodeGroup):
// each waypoint under its own key, each gateway deployment under
// xds.GatewayGroup and proxyless gRPC under xds.GroupGRPC.
func (o Output) Groups() map[string]xds.Resources {
	groups := make(map[string]xds.Resources, len(o.Waypoints)+len(o.GatewayProxies)+1)
	for name, r := range o.Waypoints {
		groups[name] = *r
	}
	for nsSA, r := range o.GatewayProxies {
		groups[xds.GatewayGroup(nsSA)] = *r
	}
	if o.GRPC != nil {
		groups[xds.GroupGRPC] = *o.GRPC
	}
	return groups
}

// Names shared with the contract (waypoint/README.md).
const (
	passthroughCluster  = "passthrough"
	workloadChainPrefix = "workload|"

	rbacDeny       = "rbac-deny"
	rbacAllow      = "rbac-allow"
	rbacAudit      = "rbac-audit"
	jwtAuthnFilter = "envoy.filters.http.jwt_authn"
)

// Translate converts the snapshot into Envoy resources. The result depends
// only on the inputs, not on their order. A Translator does the same,
// again only what changed when that can be told (incremental.go).
func Translate(cfg Config, in Inputs) Output {
	_, out := translate(withDefaults(cfg), in)
	return out
}

// translate is Translate with cfg's defaults set; it returns the
// translator too, whose indexes rebuild load assignments (incremental.go).
func translate(cfg Config, in Inputs) (*translator, Output) {
	t := newTranslator(cfg)
	t.referenceGrants = in.ReferenceGrants
	t.indexRegistry(in)
	t.indexDestinationRules(in.DestinationRules)
	t.indexHTTPRoutes(in.HTTPRoutes)
	in.VirtualServices = t.expandDelegates(in.VirtualServices) // delegate.go
	t.indexVirtualServices(in.VirtualServices)
	t.indexIngressNames(in.IngressGateways)
	t.indexAuthorizationPolicies(in.AuthorizationPolicies)
	t.indexRequestAuthentications(in.RequestAuthentications)
	t.indexEnvoyFilters(in.EnvoyFilters)
	t.indexTelemetries(in.Telemetries)
	t.buildServicePorts()
	out := Output{
		Waypoints:      t.buildWaypoints(),
		GatewayProxies: t.buildGatewayProxies(in),
	}
	if !in.SkipGRPC {
		out.GRPC = t.buildGRPC()
	}
	t.reportEnvoyFilters()
	t.reportTelemetries()
	t.reportUnusedRequestAuthentications()
	t.reportUnenforcedSelectorPolicies()
	out.Problems = t.sortedProblems()
	return t, out
}

func withDefaults(cfg Config) Config {
	cfg.Config = cfg.Config.WithDefaults()
	if cfg.PathNormalization == "" {
		cfg.PathNormalization = PathNormalizationBase
	}
	return cfg
}

// translator carries the indexes of one Translate call.
type translator struct {
	cfg Config

	telemetries []*telemetryPolicy // oldest first

	services     map[string]*service // by FQDN
	servicesByIP map[string]*service // by VIP
	workloads    []*workloadv1.Workload
	podLabels    map[string]map[string]string // by workload uid
	// endpoints by "<fqdn>:<service port>", sorted by workload uid.
	endpoints map[string][]endpoint

	destinationRules map[string]*destinationRule // by FQDN
	virtualServices  map[string]*virtualService  // by FQDN
	httpRoutes       map[string][]*gammaRoute    // by FQDN
	gatewayPolicies  map[string][]*authzPolicy   // by waypoint "<ns>/<name>"
	servicePolicies  map[string][]*authzPolicy   // by FQDN
	gatewayJWT       map[string][]*jwtPolicy     // by waypoint "<ns>/<name>"
	// Every policy, sorted, and their translations for ingress gateways
	// (gatewayAuthz), made when a gateway takes them.
	authzPolicies []*securityv1.AuthorizationPolicy
	requestAuthns []*securityv1.RequestAuthentication
	gatewayAPs    map[*securityv1.AuthorizationPolicy]*authzPolicy
	jwtPolicies   map[*securityv1.RequestAuthentication]*jwtPolicy
	usedByGateway map[any]bool            // policies an ingress gateway applies
	ingressNames  map[string]bool         // Gateway API Gateways of class weft, "<ns>/<name>"
	serviceJWT    map[string][]*jwtPolicy // by FQDN
	envoyFilters  []*envoyFilter          // in order of application

	// ports translated per service port, by chain name "<fqdn>:<port>".
	ports map[string]*portConfig
	// clusters named in routes, by cluster name.
	clusterRefs map[string]clusterRef

	problems map[workload.Problem]struct{}

	// claSources: how each load assignment of the output was made, to make
	// it again when only its endpoints' health changed (incremental.go).
	claSources map[*endpointv3.ClusterLoadAssignment]claSource

	// HTTPRoutes attached to the servers made of Gateway API listeners.
	ingressRoutes map[*networkingapi.Server][]*gammaRoute
	// gatewayNamespaces: the only namespace whose pods serve a Gateway
	// made of a Gateway API Gateway whose gateway Weft deploys
	// (deploy.IngressNamespace); the others select pods anywhere.
	gatewayNamespaces map[*networkingv1.Gateway]string
	// referenceGrants of the input (control/refgrant).
	referenceGrants []*gatewayv1beta1.ReferenceGrant
}

func newTranslator(cfg Config) *translator {
	return &translator{
		cfg:               cfg,
		services:          map[string]*service{},
		servicesByIP:      map[string]*service{},
		podLabels:         map[string]map[string]string{},
		endpoints:         map[string][]endpoint{},
		destinationRules:  map[string]*destinationRule{},
		virtualServices:   map[string]*virtualService{},
		httpRoutes:        map[string][]*gammaRoute{},
		gatewayPolicies:   map[string][]*authzPolicy{},
		servicePolicies:   map[string][]*authzPolicy{},
		gatewayJWT:        map[string][]*jwtPolicy{},
		gatewayAPs:        map[*securityv1.AuthorizationPolicy]*authzPolicy{},
		jwtPolicies:       map[*securityv1.RequestAuthentication]*jwtPolicy{},
		usedByGateway:     map[any]bool{},
		ingressNames:      map[string]bool{},
		serviceJWT:        map[string][]*jwtPolicy{},
		ports:             map[string]*portConfig{},
		clusterRefs:       map[string]clusterRef{},
		problems:          map[workload.Problem]struct{}{},
		claSources:        map[*endpointv3.ClusterLoadAssignment]claSource{},
		ingressRoutes:     map[*networkingapi.Server][]*gammaRoute{},
		gatewayNamespaces: map[*networkingv1.Gateway]string{},
	}
}

func (t *translator) problem(kind, ns, name, format string, args ...any) {
	t.problems[workload.Problem{Kind: kind, Namespace: ns, Name: name, Message: fmt.Sprintf(format, args...)}] = struct{}{}
}

func (t *translator) sortedProblems() []workload.Problem {
	if len(t.problems) == 0 {
		return nil
	}
	out := make([]workload.Problem, 0, len(t.problems))
	for p := range t.problems {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b workload.Problem) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name), cmp.Compare(a.Message, b.Message))
	})
	return out
}

// olderFirst orders objects by creationTimestamp, then namespace/name: the
// order in which Istio resolves conflicts.
func olderFirst(a, b *metav1.ObjectMeta) int {
	if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// resolveHost turns a host as written in an Istio object of namespace ns
// (short name, "<svc>.<ns>", "<svc>.<ns>.svc", FQDN or VIP) into a known
// service, nil if there is none.
func (t *translator) resolveHost(host, ns string) *service {
	if s := t.servicesByIP[host]; s != nil {
		return s
	}
	return t.services[t.fqdn(host, ns)]
}

// fqdn expands a Kubernetes short name relative to namespace ns.
func (t *translator) fqdn(host, ns string) string {
	host = strings.TrimSuffix(host, ".")
	suffix := ".svc." + t.cfg.DomainSuffix
	switch {
	case strings.HasSuffix(host, suffix):
		return host
	case strings.HasSuffix(host, ".svc"):
		return host + "." + t.cfg.DomainSuffix
	case strings.Count(host, ".") == 0:
		return host + "." + ns + suffix
	case strings.Count(host, ".") == 1:
		return host + suffix
	}
	return host
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
