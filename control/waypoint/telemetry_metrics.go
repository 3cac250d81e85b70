package waypoint

import (
	"fmt"
	"maps"
	"slices"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	statsapi "istio.io/api/envoy/extensions/stats"
	telemetryapi "istio.io/api/telemetry/v1alpha1"

	"github.com/weft-mesh/weft/pkg/istiolabels"
	"github.com/weft-mesh/weft/pkg/statsexpr"
)

// The Telemetry API's metrics overrides reach waypoints and gateways as
// Istio sends them to its proxies: an "istio.stats" filter
// (stats.PluginConfig) on every HTTP connection manager and before every
// tcp_proxy, listing per metric whether it is dropped, the tags to add or
// recompute (CEL over request attributes) and the tags to remove. Levels
// merge as in istiod: overrides apply from the root namespace to the
// workload, later ones on top; the last level naming providers decides
// whether Prometheus is in scope. A waypoint takes the SERVER overrides
// and an ingress gateway the CLIENT ones, as istiod does for them. Without
// a filter the proxies report the standard metrics unchanged.
const (
	// statsFilter is the name of Istio's stats filter, HTTP and network.
	statsFilter = "istio.stats"
	// prometheusProvider is Istio's built-in metrics provider (meshConfig
	// defaultProviders.metrics).
	prometheusProvider = "prometheus"
)

// telemetryMetrics checks a Telemetry's metrics entries, reporting and
// leaving out what Weft does not apply.
func (t *translator) telemetryMetrics(entries []*telemetryapi.Metrics, p func(string, ...any)) []*telemetryapi.Metrics {
	var out []*telemetryapi.Metrics
	for i, m := range entries {
		path := fmt.Sprintf("spec.metrics[%d]", i)
		if m.ReportingInterval != nil {
			p("%s.reportingInterval: not supported; TCP metrics are reported when a stream opens and closes", path)
		}
		for j, ref := range m.Providers {
			if !t.prometheusProvider(ref.GetName()) {
				p("%s.providers[%d]: %q is not a prometheus provider (the only metrics waypoints and gateways export); it gets no metrics", path, j, ref.GetName())
			}
		}
		c := &telemetryapi.Metrics{Providers: m.Providers}
		for j, o := range m.Overrides {
			if o = t.checkOverride(o, fmt.Sprintf("%s.overrides[%d]", path, j), p); o != nil {
				c.Overrides = append(c.Overrides, o)
			}
		}
		out = append(out, c)
	}
	return out
}

// checkOverride is o without the tag overrides Weft cannot apply; nil when
// it selects no metric Weft reports.
func (t *translator) checkOverride(o *telemetryapi.MetricsOverrides, path string, p func(string, ...any)) *telemetryapi.MetricsOverrides {
	if c := o.GetMatch().GetCustomMetric(); c != "" {
		p("%s.match.customMetric %q: waypoints and gateways report only the Istio standard metrics; ignored", path, c)
		return nil
	}
	if len(metricNames(o.GetMatch())) == 0 {
		p("%s.match.metric %s: not reported by waypoints and gateways; ignored", path, o.GetMatch().GetMetric())
		return nil
	}
	out := &telemetryapi.MetricsOverrides{Match: o.Match, Disabled: o.Disabled, TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{}}
	for _, tag := range sortedKeys(o.TagOverrides) {
		to := o.TagOverrides[tag]
		switch {
		case statsexpr.CheckTagName(tag) != nil:
			p("%s.tagOverrides[%s]: %v; ignored", path, tag, statsexpr.CheckTagName(tag))
			continue
		case to.GetOperation() == telemetryapi.MetricsOverrides_TagOverride_UPSERT && to.GetValue() == "":
			p("%s.tagOverrides[%s]: UPSERT needs a value; ignored", path, tag)
			continue
		case to.GetOperation() == telemetryapi.MetricsOverrides_TagOverride_UPSERT:
			if _, err := statsexpr.Compile(to.GetValue()); err != nil {
				p("%s.tagOverrides[%s].value: %v; ignored", path, tag, err)
				continue
			}
		}
		out.TagOverrides[tag] = to
	}
	return out
}

// prometheusProvider: name is Istio's built-in "prometheus" provider or a
// prometheus extension provider.
func (t *translator) prometheusProvider(name string) bool {
	if name == prometheusProvider {
		return true
	}
	return t.extensionProvider(name).GetPrometheus() != nil
}

// metricNames are the names of the standard metrics a selector matches
// (all of them without a selector or with ALL_METRICS).
func metricNames(sel *telemetryapi.MetricSelector) []string {
	var out []string
	for _, m := range istiolabels.StandardMetrics {
		if sel.GetMetricMatch() == nil || sel.GetMetric() == telemetryapi.MetricSelector_ALL_METRICS || sel.GetMetric().String() == m.Selector {
			out = append(out, m.Name)
		}
	}
	return out
}

// metricOverride is the merged override of one metric.
type metricOverride struct {
	disabled bool
	tags     map[string]*telemetryapi.MetricsOverrides_TagOverride
}

// mergeMetrics merges the metrics entries of the levels that apply, least
// specific first, for the proxy's mode as istiod's mergeMetrics does for
// its Prometheus provider; dropAll when every metric is off (disabled
// with ALL_METRICS, or Prometheus out of scope).
func (t *translator) mergeMetrics(levels [][]*telemetryapi.Metrics, mode telemetryapi.WorkloadMode) (overrides map[string]*metricOverride, dropAll bool) {
	providers := []string{prometheusProvider}
	overrides = map[string]*metricOverride{}
	for _, entries := range levels {
		for _, m := range entries {
			if len(m.Providers) > 0 {
				providers = providerNames(m.Providers)
			}
			if !slices.ContainsFunc(providers, t.prometheusProvider) {
				continue
			}
			for _, o := range m.Overrides {
				if o.GetMatch().GetMode() != telemetryapi.WorkloadMode_CLIENT_AND_SERVER && o.GetMatch().GetMode() != mode {
					continue
				}
				all := o.GetMatch().GetMetricMatch() == nil || o.GetMatch().GetMetric() == telemetryapi.MetricSelector_ALL_METRICS
				if dropAll = all && o.GetDisabled().GetValue(); dropAll {
					continue
				}
				for _, name := range metricNames(o.GetMatch()) {
					mo := overrides[name]
					if mo == nil {
						mo = &metricOverride{tags: map[string]*telemetryapi.MetricsOverrides_TagOverride{}}
						overrides[name] = mo
					}
					if o.Disabled != nil {
						mo.disabled = o.Disabled.GetValue()
					}
					maps.Copy(mo.tags, o.TagOverrides)
				}
			}
		}
	}
	return overrides, dropAll || !slices.ContainsFunc(providers, t.prometheusProvider)
}

func providerNames(refs []*telemetryapi.ProviderRef) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.GetName())
	}
	return out
}

// statsConfig is the stats filter configuration of the merged overrides;
// nil when the standard metrics apply unchanged.
func statsConfig(overrides map[string]*metricOverride, dropAll, waypoint bool) *statsapi.PluginConfig {
	cfg := &statsapi.PluginConfig{}
	if waypoint {
		cfg.Reporter = statsapi.Reporter_SERVER_GATEWAY
	}
	if dropAll {
		cfg.Metrics = []*statsapi.MetricConfig{{Drop: true}}
		return cfg
	}
	for _, m := range istiolabels.StandardMetrics {
		o := overrides[m.Name]
		if o == nil {
			continue
		}
		mc := &statsapi.MetricConfig{Name: m.Name, Drop: o.disabled, Dimensions: map[string]string{}}
		for _, tag := range sortedKeys(o.tags) {
			if o.tags[tag].GetOperation() == telemetryapi.MetricsOverrides_TagOverride_REMOVE {
				mc.TagsToRemove = append(mc.TagsToRemove, tag)
			} else {
				mc.Dimensions[tag] = o.tags[tag].GetValue()
			}
		}
		if mc.Drop || len(mc.Dimensions) > 0 || len(mc.TagsToRemove) > 0 {
			cfg.Metrics = append(cfg.Metrics, mc)
		}
	}
	if len(cfg.Metrics) == 0 {
		return nil
	}
	return cfg
}

// withStatsFilter is hcm with the stats filter before its router (nil cfg:
// hcm unchanged).
func withStatsFilter(hcm *hcmv3.HttpConnectionManager, cfg *statsapi.PluginConfig) {
	if cfg == nil {
		return
	}
	f := &hcmv3.HttpFilter{Name: statsFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
	hcm.HttpFilters = slices.Insert(hcm.HttpFilters, max(len(hcm.HttpFilters)-1, 0), f) // the router is last
}
