package output

import (
	"bytes"
	"testing"
	"time"
)

type rows []struct {
	Name string `json:"name"`
	N    int    `json:"count"`
}

func (r rows) Header() []string { return []string{"NAME", "N"} }
func (r rows) Rows() [][]string {
	var out [][]string
	for _, x := range r {
		out = append(out, []string{x.Name, ""})
	}
	return out
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": Table, "table": Table, "JSON": JSON, "yaml": YAML} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("wide"); err == nil {
		t.Error("wide accepted")
	}
}

func TestPrint(t *testing.T) {
	v := rows{{"a", 1}, {"bb", 2}}
	for f, want := range map[Format]string{
		Table: "NAME  N\na     -\nbb    -\n",
		JSON:  "[\n  {\n    \"name\": \"a\",\n    \"count\": 1\n  },\n  {\n    \"name\": \"bb\",\n    \"count\": 2\n  }\n]\n",
		YAML:  "- count: 1\n  name: a\n- count: 2\n  name: bb\n",
	} {
		var b bytes.Buffer
		if err := Print(&b, f, v, v); err != nil {
			t.Fatal(err)
		}
		if b.String() != want {
			t.Errorf("%s:\n%q\nwant\n%q", f, b.String(), want)
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		9 * time.Second: "9s", 252 * time.Second: "4m12s", 5*time.Hour + 10*time.Minute: "5h10m",
		51 * time.Hour: "2d3h", -90 * time.Second: "-1m30s",
	} {
		if got := Age(d); got != want {
			t.Errorf("Age(%s) = %s, want %s", d, got, want)
		}
	}
}
