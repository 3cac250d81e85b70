package install

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// ParseValues merges -f files (in order) and then --set expressions into
// one value tree per component. Both are keyed by component first
// (`control.replicaCount=3`, or a file with top-level `control:`); the rest
// is that chart's values, as helm reads them.
func ParseValues(files [][]byte, sets []string) (map[Component]map[string]any, error) {
	all := map[string]any{}
	for i, f := range files {
		var v map[string]any
		if err := yaml.Unmarshal(f, &v); err != nil {
			return nil, fmt.Errorf("values file %d: %w", i+1, err)
		}
		mergeInto(all, v)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, all); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	out := map[Component]map[string]any{}
	for _, k := range slices.Sorted(maps.Keys(all)) {
		c := Component(k)
		if !slices.Contains(Components, c) {
			return nil, fmt.Errorf("unknown component %q in values: want %s", k, componentList())
		}
		m, ok := all[k].(map[string]any)
		if !ok && all[k] != nil {
			return nil, fmt.Errorf("values for %s: want a map of that chart's values, got %T", k, all[k])
		}
		out[c] = m
	}
	return out, nil
}

// mergeInto deep-merges src over dst: maps merge, anything else replaces.
func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeInto(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func componentList() string {
	s := make([]string, len(Components))
	for i, c := range Components {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}
