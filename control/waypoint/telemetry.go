package waypoint

import (
	"cmp"
	"fmt"
	"iter"
	"net"
	"slices"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"
	statsapi "istio.io/api/envoy/extensions/stats"
	meshapi "istio.io/api/mesh/v1alpha1"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// The Telemetry API (telemetry.istio.io) configures the access log and
// tracing of waypoints and ingress gateways, as Istio applies it to its
// proxies: a Telemetry in the root namespace (no selector, no targetRefs)
// is the mesh default, one in a proxy's namespace overrides it, and one
// that selects the proxy (targetRefs to its Gateway, or a selector
// matching its pods' labels) overrides both. Access logging is taken whole
// from the most specific level that sets it; tracing field by field.
// Metric overrides are in telemetry_metrics.go. Node agents keep their own
// access log and metrics and make no spans, as ztunnel.
const (
	kindTelemetry = "Telemetry"
	// stdoutAccessLogger is the logger of Istio's built-in "envoy"
	// access log provider, the waypoint's JSON access log.
	stdoutAccessLogger = "envoy.access_loggers.stdout"
	otelTracer         = "envoy.tracers.opentelemetry"
	zipkinTracer       = "envoy.tracers.zipkin"
	// zipkinEndpoint is Istio's default path of a zipkin provider (v2 API).
	zipkinEndpoint = "/api/v2/spans"
	// defaultSamplingPercentage is Istio's meshConfig default
	// (defaultConfig.tracing.sampling) for a Telemetry that enables tracing
	// without a randomSamplingPercentage.
	defaultSamplingPercentage = 1.0
	// waypointNameLabel is the label of a waypoint's pods naming it.
	waypointNameLabel = "gateway.networking.k8s.io/gateway-name"
)

// telemetryPolicy is one Telemetry, as far as Weft applies it.
type telemetryPolicy struct {
	ns, name string
	selector labels.Selector // nil: none
	gateways []string        // targetRefs to Gateways, "<ns>/<name>"
	// accessLog is nil when the Telemetry does not set access logging.
	accessLog *bool
	tracing   *tracingPolicy // nil: not set
	metrics   []*telemetryapi.Metrics
	applied   bool
}

// tracingPolicy is a Telemetry's tracing; nil fields are not set.
type tracingPolicy struct {
	provider        *tracev3.Tracing_Http // from the named extension provider
	providerSet     bool
	disableSpans    *bool
	samplingPercent *float64
	tags            map[string]*tracingv3.CustomTag
}

func (p *telemetryPolicy) workloadLevel() bool { return p.selector != nil || len(p.gateways) > 0 }

// indexTelemetries translates the Telemetries, oldest first (the oldest
// wins at a level), reporting what Weft does not apply.
func (t *translator) indexTelemetries(ts []*telemetryv1.Telemetry) {
	ts = slices.DeleteFunc(slices.Clone(ts), func(x *telemetryv1.Telemetry) bool { return x == nil })
	slices.SortFunc(ts, func(a, b *telemetryv1.Telemetry) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, x := range ts {
		spec := &x.Spec
		p := func(format string, args ...any) { t.problem(kindTelemetry, x.Namespace, x.Name, format, args...) }
		pol := &telemetryPolicy{ns: x.Namespace, name: x.Name}
		refs := targetRefs(spec.TargetRefs, spec.TargetRef)
		if spec.Selector != nil && len(refs) > 0 {
			p("spec.selector and spec.targetRefs cannot both be set; not applied")
			continue
		}
		if spec.Selector != nil {
			pol.selector = labels.SelectorFromSet(spec.Selector.MatchLabels)
		}
		for i, ref := range refs {
			switch {
			case ref.Namespace != "" && ref.Namespace != x.Namespace:
				p("spec.targetRefs[%d].namespace: must be the Telemetry's namespace; target ignored", i)
			case ref.Group == "gateway.networking.k8s.io" && ref.Kind == "Gateway":
				pol.gateways = append(pol.gateways, x.Namespace+"/"+ref.Name)
			default:
				p("spec.targetRefs[%d]: %s/%s targets are not supported (a waypoint's or ingress gateway's Gateway); target ignored", i, cmp.Or(ref.Group, "core"), ref.Kind)
			}
		}
		if len(refs) > 0 && len(pol.gateways) == 0 {
			continue
		}
		pol.metrics = t.telemetryMetrics(spec.Metrics, p)
		pol.accessLog = t.telemetryAccessLog(spec.AccessLogging, p)
		pol.tracing = t.telemetryTracing(spec.Tracing, p)
		t.telemetries = append(t.telemetries, pol)
	}
}

// telemetryAccessLog is whether the access logging entries turn the access
// log on (nil: not set). Istio's "envoy" provider (or an envoyFileAccessLog
// provider writing to /dev/stdout) is the waypoint's JSON access log.
func (t *translator) telemetryAccessLog(entries []*telemetryapi.AccessLogging, p func(string, ...any)) *bool {
	var on *bool
	for i, e := range entries {
		path := fmt.Sprintf("spec.accessLogging[%d]", i)
		if m := e.GetMatch().GetMode(); m != telemetryapi.WorkloadMode_CLIENT_AND_SERVER {
			p("%s.match.mode %s: waypoints and gateways log all their traffic alike; applied to all of it", path, m)
		}
		if e.Filter != nil {
			p("%s.filter: not supported; every request is logged", path)
		}
		supported := len(e.Providers) == 0 // the default provider
		for j, ref := range e.Providers {
			if err := t.accessLogProvider(ref.GetName()); err != nil {
				p("%s.providers[%d]: %v; ignored", path, j, err)
				continue
			}
			supported = true
		}
		if !supported {
			continue
		}
		v := !e.GetDisabled().GetValue()
		on = &v
	}
	return on
}

// accessLogProvider checks that the named provider is one the waypoint
// writes: "envoy", or an envoyFileAccessLog provider on /dev/stdout.
func (t *translator) accessLogProvider(name string) error {
	if name == "envoy" {
		return nil
	}
	prov := t.extensionProvider(name)
	if prov == nil {
		return fmt.Errorf("%q is not in meshConfig.extensionProviders", name)
	}
	f := prov.GetEnvoyFileAccessLog()
	if f == nil {
		return fmt.Errorf("provider %q is not an envoyFileAccessLog provider (the waypoint writes only its JSON access log)", name)
	}
	if path := f.GetPath(); path != "" && path != "/dev/stdout" {
		return fmt.Errorf("provider %q writes to %s: the waypoint logs to /dev/stdout only", name, path)
	}
	return nil
}

func (t *translator) extensionProvider(name string) *meshapi.MeshConfig_ExtensionProvider {
	i := slices.IndexFunc(t.cfg.ExtensionProviders, func(p *meshapi.MeshConfig_ExtensionProvider) bool { return p.Name == name })
	if i < 0 {
		return nil
	}
	return t.cfg.ExtensionProviders[i]
}

// telemetryTracing translates the first tracing entry (Istio uses only
// one); nil when there is none.
func (t *translator) telemetryTracing(entries []*telemetryapi.Tracing, p func(string, ...any)) *tracingPolicy {
	if len(entries) == 0 {
		return nil
	}
	if len(entries) > 1 {
		p("spec.tracing: only the first entry is applied")
	}
	e := entries[0]
	if m := e.GetMatch().GetMode(); m != telemetryapi.WorkloadMode_CLIENT_AND_SERVER {
		p("spec.tracing[0].match.mode %s: waypoints and gateways trace all their traffic alike; applied to all of it", m)
	}
	reportIgnored(p, "spec.tracing[0].", setting{e.UseRequestIdForTraceSampling != nil, "useRequestIdForTraceSampling"},
		setting{e.EnableIstioTags != nil, "enableIstioTags"}, setting{e.DisableContextPropagation != nil, "disableContextPropagation"})
	tp := &tracingPolicy{}
	if v := e.GetRandomSamplingPercentage(); v != nil {
		if pct := v.GetValue(); pct >= 0 && pct <= 100 {
			tp.samplingPercent = &pct
		} else {
			p("spec.tracing[0].randomSamplingPercentage %v: want 0-100; ignored", pct)
		}
	}
	if v := e.GetDisableSpanReporting(); v != nil {
		b := v.GetValue()
		tp.disableSpans = &b
	}
	if len(e.Providers) > 1 {
		p("spec.tracing[0].providers: only the first provider is applied")
	}
	if len(e.Providers) > 0 {
		prov, err := t.tracingProvider(e.Providers[0].GetName(), p)
		if err != nil {
			p("spec.tracing[0].providers[0]: %v; spans are not reported", err)
		}
		tp.provider, tp.providerSet = prov, true
	}
	tp.tags = customTags(e.CustomTags, p)
	return tp
}

// tracingProvider renders an opentelemetry or zipkin extension provider;
// p reports the provider's settings the waypoint does not apply.
func (t *translator) tracingProvider(name string, p func(string, ...any)) (*tracev3.Tracing_Http, error) {
	prov := t.extensionProvider(name)
	if prov == nil {
		return nil, fmt.Errorf("%q is not in meshConfig.extensionProviders", name)
	}
	ignoredPrefix := fmt.Sprintf("spec.tracing[0].providers[0]: provider %q's ", name)
	if otel := prov.GetOpentelemetry(); otel != nil {
		reportIgnored(p, ignoredPrefix, setting{otel.GetMaxTagLength() != 0, "maxTagLength"})
		return otelProvider(name, otel)
	}
	if z := prov.GetZipkin(); z != nil {
		reportIgnored(p, ignoredPrefix, setting{z.GetMaxTagLength() != 0, "maxTagLength"},
			setting{z.GetTimeout() != nil, "timeout"}, setting{len(z.GetHeaders()) > 0, "headers"})
		return zipkinProvider(name, z)
	}
	return nil, fmt.Errorf("provider %q is neither an opentelemetry nor a zipkin provider (the tracers waypoints run)", name)
}

// providerHost is the host of a provider's service ("[<namespace>/]<host>",
// as Istio names it) if it and port are set.
func providerHost(name, service string, port uint32) (string, error) {
	if i := strings.IndexByte(service, '/'); i >= 0 {
		service = service[i+1:]
	}
	if service == "" || port == 0 || port > 65535 {
		return "", fmt.Errorf("provider %q: want a service and a port", name)
	}
	return service, nil
}

// otelProvider renders an opentelemetry provider: OTLP over gRPC to
// <service>:<port>, or over HTTP when the provider has http.
func otelProvider(name string, otel *meshapi.MeshConfig_ExtensionProvider_OpenTelemetryTracingProvider) (*tracev3.Tracing_Http, error) {
	host, err := providerHost(name, otel.GetService(), otel.GetPort())
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(otel.GetPort())))
	cfg := &tracev3.OpenTelemetryConfig{}
	if h := otel.GetHttp(); h != nil {
		cfg.HttpService = &corev3.HttpService{HttpUri: &corev3.HttpUri{
			Uri:              "http://" + addr + cmp.Or(h.GetPath(), "/v1/traces"),
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: name},
		}}
	} else {
		cfg.GrpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{
			GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: addr, StatPrefix: name}}}
	}
	return &tracev3.Tracing_Http{Name: otelTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(cfg)}}, nil
}

// zipkinProvider renders a zipkin provider as Istio does for its proxies
// (before 1.29's collector_service): Zipkin v2 JSON posted to <path>
// (/api/v2/spans) on the outbound cluster of <service>:<port>, 128-bit
// trace ids unless enable64bitTraceId. The span's service is the proxy's
// own (Envoy's local service cluster): ZipkinConfig has no service name.
func zipkinProvider(name string, z *meshapi.MeshConfig_ExtensionProvider_ZipkinTracingProvider) (*tracev3.Tracing_Http, error) {
	host, err := providerHost(name, z.GetService(), z.GetPort())
	if err != nil {
		return nil, err
	}
	cfg := &tracev3.ZipkinConfig{
		CollectorCluster:         mesh.OutboundCluster(host, z.GetPort(), ""),
		CollectorEndpoint:        cmp.Or(z.GetPath(), zipkinEndpoint),
		CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
		CollectorHostname:        host,
		TraceId_128Bit:           !z.GetEnable_64BitTraceId(),
		SharedSpanContext:        wrapperspb.Bool(false),
	}
	if z.GetTraceContextOption() == meshapi.MeshConfig_ExtensionProvider_ZipkinTracingProvider_USE_B3_WITH_W3C_PROPAGATION {
		cfg.TraceContextOption = tracev3.ZipkinConfig_USE_B3_WITH_W3C_PROPAGATION
	}
	return &tracev3.Tracing_Http{Name: zipkinTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(cfg)}}, nil
}

// setting is a field of the configuration and whether it is set.
type setting struct {
	set  bool
	what string
}

// reportIgnored reports the settings that are set as not supported.
func reportIgnored(p func(string, ...any), prefix string, settings ...setting) {
	for _, s := range settings {
		if s.set {
			p("%s%s: not supported; ignored", prefix, s.what)
		}
	}
}

// customTags translates literal, environment and header tags.
func customTags(tags map[string]*telemetryapi.Tracing_CustomTag, p func(string, ...any)) map[string]*tracingv3.CustomTag {
	if len(tags) == 0 {
		return nil
	}
	out := map[string]*tracingv3.CustomTag{}
	for name, tag := range tags {
		ct := &tracingv3.CustomTag{Tag: name}
		switch {
		case tag.GetLiteral() != nil:
			ct.Type = &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: tag.GetLiteral().GetValue()}}
		case tag.GetEnvironment() != nil:
			ct.Type = &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{
				Name: tag.GetEnvironment().GetName(), DefaultValue: tag.GetEnvironment().GetDefaultValue()}}
		case tag.GetHeader() != nil && tag.GetHeader().GetName() != "":
			ct.Type = &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{
				Name: tag.GetHeader().GetName(), DefaultValue: tag.GetHeader().GetDefaultValue()}}
		default:
			p("spec.tracing[0].customTags[%s]: want a literal, an environment variable or a request header; ignored", name)
			continue
		}
		out[name] = ct
	}
	return out
}

// telemetryTarget is a proxy the Telemetry API configures.
type telemetryTarget struct {
	namespace   string
	labels      labels.Set // its pods' labels, for selectors
	gateways    []string   // the Gateways it serves, "<ns>/<name>", for targetRefs
	serviceName string     // its spans' service name ("": the proxy's own)
	// mode is the Telemetry match mode whose metric overrides apply:
	// SERVER for a waypoint, CLIENT for an ingress gateway (as istiod).
	mode telemetryapi.WorkloadMode
}

// gatewayTelemetryTarget is the ingress gateway deployment of pod serving gws.
func gatewayTelemetryTarget(pod *corev1.Pod, gws []*networkingv1.Gateway) telemetryTarget {
	tg := telemetryTarget{namespace: pod.Namespace, labels: labels.Set(pod.Labels), mode: telemetryapi.WorkloadMode_CLIENT}
	for _, g := range gws {
		tg.gateways = append(tg.gateways, g.Namespace+"/"+g.Name)
	}
	return tg
}

// waypointTelemetryTarget is the waypoint "<ns>/<name>"; its spans are
// "<name>.<ns>"'s, as the service name weft-control gives its pods.
func waypointTelemetryTarget(key string) telemetryTarget {
	ns, name, _ := strings.Cut(key, "/")
	return telemetryTarget{namespace: ns, labels: labels.Set{waypointNameLabel: name}, gateways: []string{key}, serviceName: name + "." + ns,
		mode: telemetryapi.WorkloadMode_SERVER}
}

// applies: the policy is at tg's root, namespace or workload level.
func (p *telemetryPolicy) applies(tg telemetryTarget, root string) bool {
	if !p.workloadLevel() {
		return p.ns == root || p.ns == tg.namespace
	}
	if p.selector != nil {
		return p.ns == tg.namespace && p.selector.Matches(tg.labels)
	}
	return slices.ContainsFunc(p.gateways, func(g string) bool { return slices.Contains(tg.gateways, g) })
}

// level orders the levels: root 0, namespace 1, workload 2.
func (p *telemetryPolicy) level(root string) int {
	switch {
	case p.workloadLevel():
		return 2
	case p.ns == root:
		return 0
	}
	return 1
}

// applyTelemetry sets the access log, tracing and metric overrides of every
// HTTP connection manager and tcp_proxy of res from the Telemetries that
// apply to tg.
func (t *translator) applyTelemetry(res *xds.Resources, tg telemetryTarget) {
	accessLog, tracing, stats := t.telemetryFor(tg)
	var logs []*accesslogv3.AccessLog
	if accessLog {
		logs = []*accesslogv3.AccessLog{{Name: stdoutAccessLogger,
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&streamv3.StdoutAccessLog{})}}}
	}
	var tcpChains []*listenerv3.FilterChain
	for fc, f := range networkFilters(res) {
		switch f.Name {
		case wellknown.HTTPConnectionManager:
			hcm := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().UnmarshalTo(hcm) != nil {
				continue
			}
			hcm.AccessLog, hcm.Tracing = logs, tracing
			withStatsFilter(hcm, stats)
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
		case wellknown.TCPProxy:
			tp := &tcpproxyv3.TcpProxy{}
			if f.GetTypedConfig().UnmarshalTo(tp) != nil {
				continue
			}
			tp.AccessLog = logs
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}
			tcpChains = append(tcpChains, fc)
		}
	}
	if stats != nil {
		for _, fc := range tcpChains { // a filter each: EnvoyFilter patches apply per chain
			f := &listenerv3.Filter{Name: statsFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(stats)}}
			fc.Filters = slices.Insert(fc.Filters, len(fc.Filters)-1, f) // tcp_proxy is last
		}
	}
}

// networkFilters yields every network filter of res's listeners with its
// filter chain.
func networkFilters(res *xds.Resources) iter.Seq2[*listenerv3.FilterChain, *listenerv3.Filter] {
	return func(yield func(*listenerv3.FilterChain, *listenerv3.Filter) bool) {
		for _, l := range res.Listeners {
			for _, fc := range l.FilterChains {
				for _, f := range fc.Filters {
					if !yield(fc, f) {
						return
					}
				}
			}
		}
	}
}

// telemetryFor merges the Telemetries that apply to tg, least specific
// first: whether it writes the access log (on unless turned off), its
// connection managers' tracing (nil: the proxy's default, set up from its
// environment) and its stats filter configuration (nil: none).
func (t *translator) telemetryFor(tg telemetryTarget) (bool, *hcmv3.HttpConnectionManager_Tracing, *statsapi.PluginConfig) {
	var byLevel [3]*telemetryPolicy
	for _, p := range t.telemetries { // oldest first: the first at a level wins
		if lvl := p.level(t.cfg.RootNamespace); byLevel[lvl] == nil && p.applies(tg, t.cfg.RootNamespace) {
			byLevel[lvl] = p
		}
	}
	accessLog := true
	var tr *tracingPolicy
	var metrics [][]*telemetryapi.Metrics
	for _, p := range byLevel {
		if p == nil {
			continue
		}
		p.applied = true
		metrics = append(metrics, p.metrics)
		if p.accessLog != nil {
			accessLog = *p.accessLog
		}
		if p.tracing != nil {
			tr = tr.merge(p.tracing)
		}
	}
	overrides, dropAll := t.mergeMetrics(metrics, tg.mode)
	return accessLog, t.renderTracing(tr, tg), statsConfig(overrides, dropAll, tg.mode == telemetryapi.WorkloadMode_SERVER)
}

// merge overrides tp's fields with the ones more specific sets.
func (tp *tracingPolicy) merge(more *tracingPolicy) *tracingPolicy {
	out := &tracingPolicy{}
	if tp != nil {
		*out = *tp
	}
	if more.providerSet {
		out.provider, out.providerSet = more.provider, true
	}
	if more.disableSpans != nil {
		out.disableSpans = more.disableSpans
	}
	if more.samplingPercent != nil {
		out.samplingPercent = more.samplingPercent
	}
	if len(more.tags) > 0 {
		tags := make(map[string]*tracingv3.CustomTag, len(out.tags)+len(more.tags))
		for k, v := range out.tags {
			tags[k] = v
		}
		for k, v := range more.tags {
			tags[k] = v
		}
		out.tags = tags
	}
	return out
}

// renderTracing is the connection managers' tracing for tr: its sampling
// (Istio's 1% default), its provider or else the mesh's tracing endpoint
// (the chart's waypoint.tracing.otlpEndpoint), none when span reporting is
// off, and its custom tags.
func (t *translator) renderTracing(tr *tracingPolicy, tg telemetryTarget) *hcmv3.HttpConnectionManager_Tracing {
	if tr == nil {
		return nil
	}
	out := &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: defaultSamplingPercentage}}
	if tr.samplingPercent != nil {
		out.RandomSampling.Value = *tr.samplingPercent
	}
	switch {
	case tr.disableSpans != nil && *tr.disableSpans:
	case tr.providerSet:
		out.Provider = withServiceName(tr.provider, tg.serviceName)
	case t.cfg.TracingEndpoint != "":
		out.Provider = withServiceName(&tracev3.Tracing_Http{Name: otelTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{
			TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{HttpService: &corev3.HttpService{HttpUri: &corev3.HttpUri{
				Uri: strings.TrimSuffix(t.cfg.TracingEndpoint, "/") + "/v1/traces", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "tracing"}}}})}}, tg.serviceName)
	}
	for _, name := range sortedKeys(tr.tags) {
		out.CustomTags = append(out.CustomTags, tr.tags[name])
	}
	return out
}

// withServiceName is p with its OpenTelemetry service name set (nil p: none).
func withServiceName(p *tracev3.Tracing_Http, name string) *tracev3.Tracing_Http {
	if p == nil || name == "" {
		return p
	}
	cfg := &tracev3.OpenTelemetryConfig{}
	if p.GetTypedConfig().UnmarshalTo(cfg) != nil {
		return p
	}
	cfg.ServiceName = name
	return &tracev3.Tracing_Http{Name: p.Name, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// reportTelemetries reports the Telemetries that configure no waypoint or
// gateway.
func (t *translator) reportTelemetries() {
	for _, p := range t.telemetries {
		if !p.applied {
			t.problem(kindTelemetry, p.ns, p.name, "applies to no waypoint or ingress gateway Weft serves (node agents do not read Telemetry, as ztunnel), or another Telemetry at the same level is older and wins; not applied")
		}
	}
}
