package waypoint

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/waypoint/route"
)

// EnvoyFilters, as far as Weft's waypoints and gateways run what they
// patch: Istio's rate-limit task shapes. Patches Weft applies:
//   - HTTP_FILTER INSERT_BEFORE / INSERT_AFTER / INSERT_FIRST of an HTTP
//     filter of httpFilterTypes (envoy.filters.http.local_ratelimit),
//     typed_config a udpa.type.v1 / xds.type.v3 TypedStruct or the
//     message itself (@type); into every HTTP connection manager the
//     listener match selects, never after the router;
//   - ROUTE_CONFIGURATION, VIRTUAL_HOST and HTTP_ROUTE MERGE of
//     typed_per_filter_config entries of those types; VIRTUAL_HOST MERGE of
//     rate_limits.
//
// Targets: targetRefs to a waypoint or ingress Gateway
// (gateway.networking.k8s.io), or a workloadSelector of ingress gateway
// pods (in the EnvoyFilter's namespace, any namespace from the root
// namespace). Contexts: a waypoint takes every context but GATEWAY (Istio's
// task writes SIDECAR_INBOUND and SIDECAR_OUTBOUND for the same inbound
// routes), a gateway ANY and GATEWAY.
//
// Every other patch (applyTo, operation, filter, match field, value
// field) is left out with a Problem on the EnvoyFilter, so it never
// changes traffic in a way it does not say; a patch that matches nothing
// is reported too. A value is validated as the waypoint would compile it.
//
// Global rate limiting: envoy.filters.http.ratelimit is an httpFilterTypes
// entry whose rate limit service cluster ("outbound|<port>||<host>") is
// resolved to a mesh service and added to the snapshots the filter goes
// into; VIRTUAL_HOST MERGE of rate_limits appends the descriptors'
// actions.

const kindEF = "EnvoyFilter"

const (
	typedStructV1 = "type.googleapis.com/udpa.type.v1.TypedStruct"
	typedStructV3 = "type.googleapis.com/xds.type.v3.TypedStruct"
	// hcmName is the HTTP connection manager's name, which an HTTP_FILTER
	// match may give.
	hcmName = "envoy.filters.network.http_connection_manager"
)

// oldFilterNames are deprecated names Istio's manifests still use.
var oldFilterNames = map[string]string{
	"envoy.http_connection_manager": hcmName,
	"envoy.router":                  "envoy.filters.http.router",
	"envoy.cors":                    "envoy.filters.http.cors",
	"envoy.fault":                   "envoy.filters.http.fault",
}

func filterName(n string) string { return cmp.Or(oldFilterNames[n], n) }

// envoyFilter is an EnvoyFilter's targets and the patches Weft applies.
type envoyFilter struct {
	obj      *networkingv1alpha3.EnvoyFilter
	gateways []string        // targetRefs "<ns>/<name>": waypoints or ingress Gateways
	selector labels.Selector // workloadSelector of gateway pods; nil: none
	patches  []*efPatch
	targeted bool // some waypoint or gateway took it
}

func (ef *envoyFilter) problem(t *translator, format string, args ...any) {
	t.problem(kindEF, ef.obj.Namespace, ef.obj.Name, format, args...)
}

// efPatch is one configPatch Weft applies.
type efPatch struct {
	path    string // "spec.configPatches[<i>]"
	applyTo networkingapi.EnvoyFilter_ApplyTo
	context networkingapi.EnvoyFilter_PatchContext
	// HTTP_FILTER
	op       networkingapi.EnvoyFilter_Patch_Operation
	listener *networkingapi.EnvoyFilter_ListenerMatch
	filter   *hcmv3.HttpFilter
	// ROUTE_CONFIGURATION, VIRTUAL_HOST, HTTP_ROUTE
	rc        *networkingapi.EnvoyFilter_RouteConfigurationMatch
	perFilter map[string]*anypb.Any
	// rateLimits (VIRTUAL_HOST) are appended to a virtual host's
	// rate_limits, as Istio's MERGE appends to a repeated field.
	rateLimits []*routev3.RateLimit
	// rls is the cluster of the rate limit service an inserted
	// envoy.filters.http.ratelimit calls, added to the snapshots the
	// filter goes into.
	rls *clusterRef
	// applied counts the objects patched; skipped: a target's context
	// was not the patch's (reported then).
	applied int
	skipped bool
}

// indexEnvoyFilters translates every EnvoyFilter's targets and patches,
// in Istio's order of application (priority, then oldest first).
func (t *translator) indexEnvoyFilters(efs []*networkingv1alpha3.EnvoyFilter) {
	efs = slices.DeleteFunc(slices.Clone(efs), func(e *networkingv1alpha3.EnvoyFilter) bool { return e == nil })
	slices.SortFunc(efs, func(a, b *networkingv1alpha3.EnvoyFilter) int {
		return cmp.Or(cmp.Compare(a.Spec.Priority, b.Spec.Priority), olderFirst(&a.ObjectMeta, &b.ObjectMeta))
	})
	for _, obj := range efs {
		ef := &envoyFilter{obj: obj}
		if !t.envoyFilterTargets(ef) {
			continue
		}
		for i, cp := range obj.Spec.ConfigPatches {
			path := fmt.Sprintf("spec.configPatches[%d]", i)
			p, err := newEFPatch(path, cp)
			if err == nil {
				err = t.resolveRateLimitService(p)
			}
			if err != nil {
				ef.problem(t, "%s: %v; patch not applied", path, err)
				continue
			}
			ef.patches = append(ef.patches, p)
		}
		if len(ef.patches) == 0 {
			ef.problem(t, "no patch Weft supports (docs/rate-limiting.md): the EnvoyFilter has no effect")
			continue
		}
		t.envoyFilters = append(t.envoyFilters, ef)
	}
}

// envoyFilterTargets reads ef's targetRefs or workloadSelector; false
// (reported) when it has no target Weft serves.
func (t *translator) envoyFilterTargets(ef *envoyFilter) bool {
	spec := &ef.obj.Spec
	sel := spec.WorkloadSelector.GetLabels()
	switch {
	case len(spec.TargetRefs) > 0 && len(sel) > 0:
		ef.problem(t, "spec: targetRefs and workloadSelector cannot both be set; not applied")
		return false
	case len(spec.TargetRefs) == 0 && len(sel) == 0:
		ef.problem(t, "spec: Weft applies EnvoyFilters with targetRefs (a waypoint or ingress Gateway) or a workloadSelector of ingress gateway pods; without them Istio patches sidecars, which ambient workloads do not have; not applied")
		return false
	case len(sel) > 0:
		ef.selector = labels.SelectorFromSet(sel)
		return true
	}
	for i, ref := range spec.TargetRefs {
		path := fmt.Sprintf("spec.targetRefs[%d]", i)
		switch {
		case ref.Namespace != "" && ref.Namespace != ef.obj.Namespace:
			ef.problem(t, "%s.namespace: must be the EnvoyFilter's namespace; target ignored", path)
		case ref.Group == "gateway.networking.k8s.io" && ref.Kind == "Gateway":
			ef.gateways = append(ef.gateways, ef.obj.Namespace+"/"+ref.Name)
		default:
			ef.problem(t, "%s: %s/%s targets are not supported (a waypoint or ingress Gateway of gateway.networking.k8s.io); target ignored", path, ref.Group, ref.Kind)
		}
	}
	return len(ef.gateways) > 0
}

// newEFPatch reads one configPatch; an error says why Weft does not apply
// it.
func newEFPatch(path string, cp *networkingapi.EnvoyFilter_EnvoyConfigObjectPatch) (*efPatch, error) {
	if cp == nil || cp.Patch == nil {
		return nil, fmt.Errorf("patch is required")
	}
	m := cp.Match
	switch {
	case m.GetProxy() != nil:
		return nil, fmt.Errorf("match.proxy is not supported (Weft's proxies have no Istio proxy version)")
	case m.GetWaypoint() != nil:
		return nil, fmt.Errorf("match.waypoint is not supported")
	case m.GetCluster() != nil:
		return nil, fmt.Errorf("match.cluster is not supported")
	case cp.Patch.FilterClass != networkingapi.EnvoyFilter_Patch_UNSPECIFIED:
		return nil, fmt.Errorf("patch.filterClass is not supported")
	}
	p := &efPatch{path: path, applyTo: cp.ApplyTo, context: m.GetContext(), op: cp.Patch.Operation}
	switch cp.ApplyTo {
	case networkingapi.EnvoyFilter_HTTP_FILTER:
		return p, p.readHTTPFilter(m, cp.Patch)
	case networkingapi.EnvoyFilter_ROUTE_CONFIGURATION, networkingapi.EnvoyFilter_VIRTUAL_HOST, networkingapi.EnvoyFilter_HTTP_ROUTE:
		return p, p.readRouteMerge(m, cp.Patch)
	}
	return nil, fmt.Errorf("applyTo %s is not supported (Weft applies HTTP_FILTER, ROUTE_CONFIGURATION, VIRTUAL_HOST and HTTP_ROUTE patches of envoy.filters.http.local_ratelimit and envoy.filters.http.ratelimit)", cp.ApplyTo)
}

// readHTTPFilter reads an HTTP_FILTER patch: where the filter goes and the
// filter.
func (p *efPatch) readHTTPFilter(m *networkingapi.EnvoyFilter_EnvoyConfigObjectMatch, patch *networkingapi.EnvoyFilter_Patch) error {
	switch patch.Operation {
	case networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, networkingapi.EnvoyFilter_Patch_INSERT_FIRST:
	case networkingapi.EnvoyFilter_Patch_INSERT_AFTER:
		if m.GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName() == "" {
			return fmt.Errorf("INSERT_AFTER without match.listener.filterChain.filter.subFilter appends after the router, where a filter never runs")
		}
	case networkingapi.EnvoyFilter_Patch_ADD:
		return fmt.Errorf("operation ADD appends after the router, where a filter never runs; use INSERT_BEFORE")
	default:
		return fmt.Errorf("operation %s of HTTP_FILTER is not supported (INSERT_BEFORE, INSERT_AFTER, INSERT_FIRST)", patch.Operation)
	}
	if m.GetRouteConfiguration() != nil {
		return fmt.Errorf("match.routeConfiguration does not select HTTP filters")
	}
	if err := checkListenerMatch(m.GetListener()); err != nil {
		return err
	}
	p.listener = m.GetListener()
	value := patch.GetValue().AsMap()
	name, _ := value["name"].(string)
	if name == "" {
		return fmt.Errorf("patch.value.name is required")
	}
	for k := range value {
		if k != "name" && k != "typed_config" && k != "typedConfig" {
			return fmt.Errorf("patch.value.%s is not supported", k)
		}
	}
	msg, err := typedConfig(cmp.Or(value["typed_config"], value["typedConfig"]), false)
	if err != nil {
		return fmt.Errorf("patch.value.typed_config: %w", err)
	}
	p.filter = &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(msg)}}
	return nil
}

// checkListenerMatch refuses the listener match fields Weft does not
// evaluate: a patch must not apply more widely than it says.
func checkListenerMatch(l *networkingapi.EnvoyFilter_ListenerMatch) error {
	fc := l.GetFilterChain()
	var field string
	switch {
	case l.GetPortName() != "":
		field = "portName"
	case l.GetListenerFilter() != "":
		field = "listenerFilter"
	case fc.GetSni() != "":
		field = "filterChain.sni"
	case fc.GetTransportProtocol() != "":
		field = "filterChain.transportProtocol"
	case len(fc.GetApplicationProtocols()) > 0:
		field = "filterChain.applicationProtocols"
	case fc.GetDestinationPort() != 0:
		field = "filterChain.destinationPort"
	case fc.GetFilter() != nil && filterName(fc.GetFilter().GetName()) != hcmName:
		return fmt.Errorf("match.listener.filterChain.filter.name %q: HTTP filters are in %s", fc.GetFilter().GetName(), hcmName)
	default:
		return nil
	}
	return fmt.Errorf("match.listener.%s is not supported", field)
}

// readRouteMerge reads a ROUTE_CONFIGURATION, VIRTUAL_HOST or HTTP_ROUTE
// MERGE of typed_per_filter_config.
func (p *efPatch) readRouteMerge(m *networkingapi.EnvoyFilter_EnvoyConfigObjectMatch, patch *networkingapi.EnvoyFilter_Patch) error {
	if patch.Operation != networkingapi.EnvoyFilter_Patch_MERGE {
		return fmt.Errorf("operation %s of %s is not supported (MERGE)", patch.Operation, p.applyTo)
	}
	rc := m.GetRouteConfiguration()
	switch {
	case m.GetListener() != nil:
		return fmt.Errorf("match.listener does not select route configurations")
	case rc.GetPortName() != "":
		return fmt.Errorf("match.routeConfiguration.portName is not supported")
	case rc.GetGateway() != "":
		return fmt.Errorf("match.routeConfiguration.gateway is not supported")
	}
	p.rc = rc
	for k, v := range patch.GetValue().AsMap() {
		switch k {
		case "typed_per_filter_config", "typedPerFilterConfig":
			entries, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("patch.value.%s: not a map", k)
			}
			if err := p.readPerFilter(entries); err != nil {
				return fmt.Errorf("patch.value.%s: %w", k, err)
			}
		case "rate_limits", "rateLimits":
			if p.applyTo != networkingapi.EnvoyFilter_VIRTUAL_HOST {
				return fmt.Errorf("patch.value.%s: Weft merges rate_limits into virtual hosts (applyTo VIRTUAL_HOST), not %s", k, p.applyTo)
			}
			var err error
			if p.rateLimits, err = readRateLimits(v); err != nil {
				return fmt.Errorf("patch.value.%s: %w", k, err)
			}
		default:
			return fmt.Errorf("patch.value.%s is not supported (typed_per_filter_config, rate_limits)", k)
		}
	}
	if len(p.perFilter) == 0 && len(p.rateLimits) == 0 {
		return fmt.Errorf("patch.value has no typed_per_filter_config or rate_limits")
	}
	return nil
}

// readRateLimits decodes a rate_limits list, strictly, and checks it as
// the waypoint will compile it.
func readRateLimits(v any) ([]*routev3.RateLimit, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("not a list")
	}
	out := make([]*routev3.RateLimit, 0, len(list))
	for i, e := range list {
		j, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		rl := &routev3.RateLimit{}
		if err := protojson.Unmarshal(j, rl); err != nil {
			return nil, fmt.Errorf("[%d]: %s", i, strings.ReplaceAll(err.Error(), "\u00a0", " "))
		}
		out = append(out, rl)
	}
	if err := route.ValidateRateLimits(out); err != nil {
		return nil, err
	}
	return out, nil
}

// resolveRateLimitService resolves the cluster of the rate limit service
// a patch's envoy.filters.http.ratelimit calls: Istio's cluster name
// "outbound|<port>||<host>" of a mesh service (a Kubernetes Service or
// ServiceEntry host), which the waypoint or gateway then reaches as any
// other destination of the mesh.
func (t *translator) resolveRateLimitService(p *efPatch) error {
	if p.filter == nil {
		return nil
	}
	rl := &ratelimitv3.RateLimit{}
	if !p.filter.GetTypedConfig().MessageIs(rl) {
		return nil
	}
	if err := p.filter.GetTypedConfig().UnmarshalTo(rl); err != nil {
		return err
	}
	name := rl.GetRateLimitService().GetGrpcService().GetEnvoyGrpc().GetClusterName()
	host, port, subset, ok := mesh.ParseOutboundCluster(name)
	switch {
	case !ok || port == 0:
		return fmt.Errorf("rate_limit_service cluster_name %q: want Istio's outbound|<port>||<service host>", name)
	case subset != "":
		return fmt.Errorf("rate_limit_service cluster_name %q: subsets are not supported", name)
	}
	ref, err := t.providerService(host, port)
	if err != nil {
		return fmt.Errorf("rate_limit_service cluster_name %q: %w", name, err)
	}
	p.rls = &ref
	return nil
}

func (p *efPatch) readPerFilter(entries map[string]any) error {
	p.perFilter = map[string]*anypb.Any{}
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		msg, err := typedConfig(entries[name], true)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		p.perFilter[name] = mustAny(msg)
	}
	return nil
}

// filterType is an HTTP filter config Weft's proxies run.
type filterType struct {
	new      func() proto.Message
	validate func(m proto.Message, perRoute bool) error
}

// httpFilterTypes are the typed configs EnvoyFilters may add, by type URL.
var httpFilterTypes = map[string]filterType{
	"type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit": {
		new: func() proto.Message { return &ratelimitv3.RateLimit{} },
		validate: func(m proto.Message, perRoute bool) error {
			if perRoute {
				return fmt.Errorf("not a per-route config (that is RateLimitPerRoute, not supported)")
			}
			return route.ValidateGlobalRateLimit(m.(*ratelimitv3.RateLimit))
		},
	},
	"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit": {
		new: func() proto.Message { return &localratelimitv3.LocalRateLimit{} },
		validate: func(m proto.Message, perRoute bool) error {
			return route.ValidateLocalRateLimit(m.(*localratelimitv3.LocalRateLimit), perRoute)
		},
	},
}

// notYetTypes are typed configs of Istio's tasks Weft will run later.
var notYetTypes = map[string]string{
	"type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute": "RateLimitPerRoute (vh_rate_limits, per-route rate_limits and domain of envoy.filters.http.ratelimit) is not supported yet",
}

// typedConfig decodes a typed_config value: a TypedStruct (type_url and
// value) or the message itself (@type and its fields), strictly, and
// checks it as the waypoint will.
func typedConfig(v any, perRoute bool) (proto.Message, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("required, an object with @type")
	}
	url, _ := obj["@type"].(string)
	fields := withoutKey(obj, "@type")
	if url == typedStructV1 || url == typedStructV3 {
		url, _ = cmp.Or(obj["type_url"], obj["typeUrl"]).(string)
		fields, _ = obj["value"].(map[string]any)
	}
	if msg, ok := notYetTypes[url]; ok {
		return nil, fmt.Errorf("%s", msg)
	}
	ft, ok := httpFilterTypes[url]
	if !ok {
		return nil, fmt.Errorf("type %q is not supported (Weft runs envoy.filters.http.local_ratelimit and envoy.filters.http.ratelimit from EnvoyFilters)", url)
	}
	j, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	msg := ft.new()
	if err := protojson.Unmarshal(j, msg); err != nil {
		// protojson varies its messages' spaces on purpose; a status
		// message must not change between builds.
		return nil, fmt.Errorf("%s: %s", strings.TrimPrefix(url, "type.googleapis.com/"), strings.ReplaceAll(err.Error(), "\u00a0", " "))
	}
	if err := ft.validate(msg, perRoute); err != nil {
		return nil, fmt.Errorf("%s: %v", strings.TrimPrefix(url, "type.googleapis.com/"), err)
	}
	return msg, nil
}

func withoutKey(m map[string]any, key string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}
