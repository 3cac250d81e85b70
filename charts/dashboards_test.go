package charts

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// wantDashboards are the dashboards issue #16 asks for, by uid.
var wantDashboards = []string{"weft-control-plane", "weft-mesh", "weft-node-agent", "weft-service", "weft-waypoint", "weft-workload"}

// grafanaBuiltins are the variables Grafana itself defines.
var grafanaBuiltins = []string{"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}

func TestDashboardsStructure(t *testing.T) {
	ds, err := Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	var uids []string
	for _, d := range ds {
		uids = append(uids, d.UID)
		t.Run(d.File, func(t *testing.T) { checkDashboard(t, d) })
	}
	slices.Sort(uids)
	if !slices.Equal(uids, wantDashboards) {
		t.Errorf("dashboard uids %v, want %v", uids, wantDashboards)
	}
}

// checkDashboard checks one dashboard's model: schema version, the
// ${datasource} variable and its use by every panel and target, unique
// panel ids, an expression in every target, and variables that are defined
// before they are used (a query variable may use the ones above it).
func checkDashboard(t *testing.T, d Dashboard) {
	if d.UID == "" || d.Title == "" || d.SchemaVersion != 39 {
		t.Errorf("uid %q title %q schemaVersion %d; want both set and 39", d.UID, d.Title, d.SchemaVersion)
	}
	defined := slices.Clone(grafanaBuiltins)
	for i, v := range d.Templating.List {
		switch {
		case i == 0 && (v.Name != "datasource" || v.Type != "datasource" || v.Query != "prometheus"):
			t.Errorf("first variable %+v; want the Prometheus datasource variable", v)
		case v.Type == "query":
			checkDatasource(t, "variable "+v.Name, v.Datasource)
			checkRefs(t, "variable "+v.Name, v.Definition, defined)
			if !strings.HasPrefix(v.Definition, "label_values(") {
				t.Errorf("variable %s: query %q; want label_values(...)", v.Name, v.Definition)
			}
		}
		defined = append(defined, v.Name)
	}
	ids := map[int]string{}
	targets := 0
	for _, p := range d.AllPanels() {
		if other, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q has id %d, as %q", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		checkDatasource(t, "panel "+p.Title, p.Datasource)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no target", p.Title)
		}
		for _, tg := range p.Targets {
			targets++
			where := fmt.Sprintf("panel %q target %s", p.Title, tg.RefID)
			checkDatasource(t, where, tg.Datasource)
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s has no expr", where)
			}
			checkRefs(t, where, tg.Expr, defined)
			checkPromQL(t, where, tg.Expr)
		}
	}
	t.Logf("%d panels, %d queries", len(ids), targets)
}

func checkDatasource(t *testing.T, where string, ds *Datasource) {
	t.Helper()
	if ds == nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
		t.Errorf("%s: datasource %+v; want prometheus ${datasource}", where, ds)
	}
}

// checkRefs fails on a variable reference that is not among defined.
func checkRefs(t *testing.T, where, s string, defined []string) {
	t.Helper()
	for _, name := range VariableRefs(s) {
		if !slices.Contains(defined, name) {
			t.Errorf("%s: $%s is not a variable defined before it (%v)", where, name, defined)
		}
	}
}

// metricSelector matches a metric name before its label matchers.
var metricSelector = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)\{`)

// checkPromQL is the syntax check this package can do without
// Prometheus's parser (whose module graph is too heavy a dependency for
// it; e2e TestPrometheus has the real server parse every expression):
// balanced brackets and quotes, and metrics that the code exports as
// docs/reference/metrics.md lists them, or the Go and process collectors'.
func checkPromQL(t *testing.T, where, expr string) {
	t.Helper()
	if err := balanced(expr); err != nil {
		t.Errorf("%s: %v: %s", where, err, expr)
	}
	for _, m := range metricSelector.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if !slices.Contains(documentedMetrics(t), strings.TrimSuffix(name, "_bucket")) {
			t.Errorf("%s: metric %s is not in docs/reference/metrics.md", where, name)
		}
	}
}

// balanced reports unbalanced (), {}, [] or an unterminated string.
func balanced(s string) error {
	var stack []rune
	pairs := map[rune]rune{')': '(', '}': '{', ']': '['}
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'' || r == '`':
			quote = r
		case r == '(' || r == '{' || r == '[':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return fmt.Errorf("unbalanced %q", r)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if quote != 0 || len(stack) > 0 {
		return fmt.Errorf("unclosed %q %q", quote, stack)
	}
	return nil
}

var metricsDoc []string

// documentedMetrics are the metric names in backquotes in the metrics
// reference.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	if metricsDoc == nil {
		b, err := os.ReadFile(filepath.Join("..", "docs", "reference", "metrics.md"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile("`((?:istio|weft)_[a-z_]+)").FindAllStringSubmatch(string(b), -1) {
			metricsDoc = append(metricsDoc, m[1])
		}
	}
	return metricsDoc
}

// TestDashboardConfigMaps: off by default; on, one ConfigMap per dashboard
// file in the release namespace, with the sidecar's label, the configured
// annotations and the file's JSON as is.
func TestDashboardConfigMaps(t *testing.T) {
	for k := range decode(t, render(t, "control")) {
		if strings.HasPrefix(k, "ConfigMap/") {
			t.Errorf("default render has %s; dashboards are off by default", k)
		}
	}
	objs := decode(t, render(t, "control", "--values", customValues))
	ds, err := Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		cm := get[corev1.ConfigMap](t, objs, "ConfigMap", strings.TrimSuffix(d.File, ".json")+"-dashboard")
		if cm.Labels["grafana_dashboard"] != "1" || cm.Labels["team"] != "observability" || cm.Annotations["grafana_folder"] != "Weft" {
			t.Errorf("%s: labels %v annotations %v", cm.Name, cm.Labels, cm.Annotations)
		}
		want, err := os.ReadFile(path.Join(DashboardDir, d.File))
		if err != nil {
			t.Fatal(err)
		}
		if got := cm.Data[d.File]; got != strings.TrimSuffix(string(want), "\n") || len(cm.Data) != 1 {
			t.Errorf("%s: data keys %d, %s differs from the file", cm.Name, len(cm.Data), d.File)
		}
	}
}
