package route

import (
	"fmt"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// authn is a request's end-user authentication: Istio's istio_authn
// filter metadata, which RBAC metadata matchers read (filter
// "istio_authn"): request.auth.principal ("<iss>/<sub>"),
// request.auth.audiences and request.auth.presenter (azp), and
// request.auth.claims, where every string becomes a list of one string
// (so that a ListMatcher matches string and list claims alike), nested
// objects included.
type authn struct {
	meta map[string]any
}

func newAuthn(claims map[string]any) *authn {
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	meta := map[string]any{mesh.AuthnClaims: normalizeClaim(claims)}
	if iss != "" && sub != "" {
		meta[mesh.AuthnPrincipal] = iss + "/" + sub
	}
	if aud := claimStrings(claims["aud"]); len(aud) > 0 {
		l := make([]any, len(aud))
		for i, a := range aud {
			l[i] = a
		}
		meta[mesh.AuthnAudiences] = l
	}
	if azp, ok := claims["azp"].(string); ok {
		meta[mesh.AuthnPresenter] = azp
	}
	return &authn{meta: meta}
}

// normalizeClaim turns strings into lists of one string, recursively.
func normalizeClaim(v any) any {
	switch t := v.(type) {
	case string:
		return []any{t}
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = normalizeClaim(e)
		}
		return out
	}
	return v
}

// lookup is the value at path in the metadata.
func (a *authn) lookup(path []string) (any, bool) {
	if a == nil || len(path) == 0 {
		return nil, false
	}
	v, ok := a.meta[path[0]]
	for _, k := range path[1:] {
		if !ok {
			break
		}
		m, isMap := v.(map[string]any)
		if !isMap {
			return nil, false
		}
		v, ok = m[k]
	}
	return v, ok
}

// metadataM is Envoy's MetadataMatcher on the istio_authn metadata.
type metadataM struct {
	path   []string
	value  valueMatcher
	invert bool
}

func (m *metadataM) match(x *exchange) bool {
	v, ok := x.authn.lookup(m.path)
	return (ok && m.value.match(v)) != m.invert
}

// valueMatcher is Envoy's ValueMatcher: string_match, present_match,
// bool_match and list_match (one_of: any element matches).
type valueMatcher struct {
	kind    uint8 // 's' string, 'p' present, 'b' bool, 'l' list
	sm      stringMatcher
	boolean bool
	oneOf   *valueMatcher
}

func (m *valueMatcher) match(v any) bool {
	switch m.kind {
	case 'p':
		return v != nil
	case 's':
		s, ok := v.(string)
		return ok && m.sm.match(s)
	case 'b':
		b, ok := v.(bool)
		return ok && b == m.boolean
	case 'l':
		l, ok := v.([]any)
		if !ok {
			return false
		}
		for _, e := range l {
			if m.oneOf.match(e) {
				return true
			}
		}
	}
	return false
}

func compileMetadataMatcher(mm *matcherv3.MetadataMatcher) (matcher, error) {
	if mm.GetFilter() != mesh.AuthnFilter {
		return nil, fmt.Errorf("metadata: only filter %q is supported, not %q", mesh.AuthnFilter, mm.GetFilter())
	}
	m := &metadataM{invert: mm.GetInvert()}
	for _, s := range mm.GetPath() {
		if s.GetKey() == "" {
			return nil, fmt.Errorf("metadata: empty path segment")
		}
		m.path = append(m.path, s.GetKey())
	}
	if len(m.path) == 0 {
		return nil, fmt.Errorf("metadata: path missing")
	}
	vm, err := compileValueMatcher(mm.GetValue())
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	m.value = *vm
	return m, nil
}

func compileValueMatcher(v *matcherv3.ValueMatcher) (*valueMatcher, error) {
	switch p := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := compileStringMatcher(p.StringMatch)
		if err != nil {
			return nil, err
		}
		return &valueMatcher{kind: 's', sm: sm}, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		if !p.PresentMatch {
			return nil, fmt.Errorf("present_match false is not supported")
		}
		return &valueMatcher{kind: 'p'}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		return &valueMatcher{kind: 'b', boolean: p.BoolMatch}, nil
	case *matcherv3.ValueMatcher_ListMatch:
		one, err := compileValueMatcher(p.ListMatch.GetOneOf())
		if err != nil {
			return nil, fmt.Errorf("list_match: %w", err)
		}
		return &valueMatcher{kind: 'l', oneOf: one}, nil
	}
	return nil, fmt.Errorf("value matcher %T is not supported", v.GetMatchPattern())
}
