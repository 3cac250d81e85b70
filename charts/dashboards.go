package charts

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
)

// DashboardDir holds the Grafana dashboards the control chart ships as
// ConfigMaps (templates/dashboards.yaml).
const DashboardDir = "control/dashboards"

// Dashboard is the part of a Grafana dashboard's JSON model the tests read.
type Dashboard struct {
	File          string `json:"-"`
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	Panels []Panel `json:"panels"`
}

// Variable is a dashboard template variable.
type Variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Query      any         `json:"query"`      // "prometheus" for a datasource variable
	Definition string      `json:"definition"` // the query of a query variable
	Datasource *Datasource `json:"datasource"`
}

// Datasource is a panel's, target's or variable's data source reference.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Panel is a dashboard panel; a row's Panels are those it collapses.
type Panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *Datasource `json:"datasource"`
	Targets    []Target    `json:"targets"`
	Panels     []Panel     `json:"panels"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *Datasource `json:"datasource"`
}

// Dashboards parses every dashboard JSON file in DashboardDir, by file name.
func Dashboards() ([]Dashboard, error) {
	files, err := fs.Glob(FS, path.Join(DashboardDir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no dashboards in %s", DashboardDir)
	}
	var out []Dashboard
	for _, f := range files {
		b, err := fs.ReadFile(FS, f)
		if err != nil {
			return nil, err
		}
		var d Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		d.File = path.Base(f)
		out = append(out, d)
	}
	return out, nil
}

// AllPanels returns the dashboard's panels, those inside rows included, in
// order.
func (d Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// variableRef matches a template variable reference: $name, ${name} or
// ${name:format}.
var variableRef = regexp.MustCompile(`\$(?:\{([A-Za-z0-9_]+)(?::[^}]*)?\}|([A-Za-z0-9_]+))`)

// VariableRefs returns the names of the template variables s refers to, in
// order of first use.
func VariableRefs(s string) []string {
	var out []string
	for _, m := range variableRef.FindAllStringSubmatch(s, -1) {
		name := m[1] + m[2]
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// Substitute replaces the template variable references in s by their
// values; a name without a value stays as it is.
func Substitute(s string, values map[string]string) string {
	return variableRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := variableRef.FindStringSubmatch(ref)
		if v, ok := values[m[1]+m[2]]; ok {
			return v
		}
		return ref
	})
}
