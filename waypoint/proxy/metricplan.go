package proxy

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"
	statsapi "istio.io/api/envoy/extensions/stats"

	"github.com/weft-mesh/weft/pkg/istiolabels"
	"github.com/weft-mesh/weft/pkg/statsexpr"
)

// A metricPlan is the shape of the Istio standard metrics that Istio's stats
// filter configuration (stats.PluginConfig, the Telemetry API's metric
// overrides) asks for: per metric, whether it is dropped, and its labels,
// each either a standard label's value or an expression over the request's
// attributes. A waypoint keeps one plan: Prometheus wants one label set
// per metric name.
type metricPlan struct {
	cfg    *statsapi.PluginConfig // nil: the standard metrics
	shapes []metricShape          // by index in istiolabels.StandardMetrics
}

// metricShape is one metric's labels.
type metricShape struct {
	drop   bool
	labels []string
	from   []int                // per label: the index of its standard value, or -1 (exprs)
	exprs  []*statsexpr.Program // per label: its expression where from is -1
	// standard: the labels are the standard ones in order (no expression).
	standard bool
}

// standardPlan is the plan without a stats filter.
var standardPlan = func() *metricPlan {
	p, err := compileMetricPlan(nil)
	if err != nil {
		panic(err)
	}
	return p
}()

// compileMetricPlan applies cfg's metric configurations in order to the
// standard metrics. Unknown metric names, bad label names and expressions
// are errors: the configuration is refused rather than partly applied.
func compileMetricPlan(cfg *statsapi.PluginConfig) (*metricPlan, error) {
	p := &metricPlan{cfg: cfg}
	for _, m := range istiolabels.StandardMetrics {
		std := istiolabels.HTTP
		if m.TCP {
			std = istiolabels.TCP
		}
		s := metricShape{labels: slices.Clone(std), from: make([]int, len(std)), exprs: make([]*statsexpr.Program, len(std)), standard: true}
		for i := range s.from {
			s.from[i] = i
		}
		p.shapes = append(p.shapes, s)
	}
	var errs []error
	for i, mc := range cfg.GetMetrics() {
		if err := p.apply(mc); err != nil {
			errs = append(errs, fmt.Errorf("metrics[%d] (%q): %w", i, mc.GetName(), err))
		}
	}
	if len(cfg.GetDefinitions()) > 0 {
		errs = append(errs, errors.New("definitions: custom metrics are not supported"))
	}
	return p, errors.Join(errs...)
}

// apply applies one metric configuration to the metrics it names (all of
// them without a name).
func (p *metricPlan) apply(mc *statsapi.MetricConfig) error {
	if mc.GetMatch() != "" {
		return errors.New("match is not supported")
	}
	i := slices.IndexFunc(istiolabels.StandardMetrics, func(m istiolabels.StandardMetric) bool { return m.Name == mc.GetName() })
	if mc.GetName() != "" && i < 0 {
		return errors.New("not a standard metric the waypoint reports")
	}
	progs := map[string]*statsexpr.Program{}
	for tag, expr := range mc.GetDimensions() {
		if err := statsexpr.CheckTagName(tag); err != nil {
			return err
		}
		prg, err := statsexpr.Compile(expr)
		if err != nil {
			return fmt.Errorf("dimension %q: %w", tag, err)
		}
		progs[tag] = prg
	}
	for j := range p.shapes {
		if i < 0 || i == j {
			p.shapes[j].apply(mc, progs)
		}
	}
	return nil
}

func (s *metricShape) apply(mc *statsapi.MetricConfig, progs map[string]*statsexpr.Program) {
	s.drop = s.drop || mc.GetDrop()
	for _, tag := range slices.Sorted(maps.Keys(progs)) {
		s.standard = false
		if k := slices.Index(s.labels, tag); k >= 0 {
			s.from[k], s.exprs[k] = -1, progs[tag]
			continue
		}
		s.labels = append(s.labels, tag)
		s.from = append(s.from, -1)
		s.exprs = append(s.exprs, progs[tag])
	}
	for _, tag := range mc.GetTagsToRemove() {
		if k := slices.Index(s.labels, tag); k >= 0 {
			s.standard = false
			s.labels = slices.Delete(s.labels, k, k+1)
			s.from = slices.Delete(s.from, k, k+1)
			s.exprs = slices.Delete(s.exprs, k, k+1)
		}
	}
}

// values are the shape's label values: std (the standard labels' values)
// itself when the shape is standard, else computed, evaluating the
// expressions on attrs() (called at most once).
func (s *metricShape) values(std []string, attrs func() *statsexpr.Attributes) []string {
	if s.standard {
		return std
	}
	out := make([]string, len(s.labels))
	var a *statsexpr.Attributes
	for i, from := range s.from {
		if from >= 0 {
			out[i] = std[from]
			continue
		}
		if a == nil {
			a = attrs()
		}
		out[i] = s.exprs[i].Eval(a)
	}
	return out
}

// checkStats requires a listener's chains to agree on the stats filter
// (the waypoint has one set of metrics) and its configuration to compile.
func checkStats(chains []*chain) error {
	for _, c := range chains[min(1, len(chains)):] {
		if !proto.Equal(c.stats, chains[0].stats) {
			return fmt.Errorf("filter chains %q and %q configure istio.stats differently; the waypoint keeps one set of metrics", chains[0].name, c.name)
		}
	}
	if len(chains) == 0 || chains[0].stats == nil {
		return nil
	}
	if _, err := compileMetricPlan(chains[0].stats); err != nil {
		return fmt.Errorf("istio.stats: %w", err)
	}
	return nil
}

// applyStats makes the first chain's stats filter configuration the
// metric plan (listeners that disagree are logged: each listener's chains
// agree, checkStats). Called with s.mu held.
func (s *Store) applyStats(chains []*chain) {
	var cfg *statsapi.PluginConfig
	if len(chains) > 0 {
		cfg = chains[0].stats
	}
	for _, c := range chains {
		if !proto.Equal(c.stats, cfg) {
			s.log.Warn("listeners configure istio.stats differently; the first chain's configuration applies", "chain", chains[0].name, "other", c.name)
			break
		}
	}
	if proto.Equal(cfg, s.plan.cfg) {
		return
	}
	plan, err := compileMetricPlan(cfg)
	if err != nil { // checked when the listener arrived
		s.log.Error("istio.stats configuration does not compile; metrics unchanged", "err", err)
		return
	}
	s.plan = plan
	s.usePlan(plan)
}
