package route

import (
	"fmt"
	"net/http"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// corsFilter is envoy.filters.http.cors with per-route CorsPolicy
// (typed_per_filter_config, most specific wins). Envoy semantics:
//   - no policy, filter_enabled sampled off, or no Origin header: pass.
//   - the Origin must match one of allow_origin_string_match, else pass
//     without CORS headers (preflights are forwarded when
//     forward_not_matching_preflights is unset/true, else answered 200
//     without CORS headers).
//   - preflight (OPTIONS + Origin + Access-Control-Request-Method): 200 with
//     Access-Control-Allow-Origin (the request's origin), -Allow-Credentials
//     "true" if set, -Allow-Methods, -Allow-Headers, -Max-Age when non-empty.
//   - other requests: the response gets Access-Control-Allow-Origin,
//     -Allow-Credentials and -Expose-Headers.
type corsFilter struct{ name string }

type corsPolicy struct {
	origins          []stringMatcher
	allowMethods     string
	allowHeaders     string
	exposeHeaders    string
	maxAge           string
	allowCredentials bool
	privateNetwork   bool
	enabled          fraction
	forwardNoMatch   bool
}

func compileCors(c *corsv3.CorsPolicy) (*corsPolicy, error) {
	cp := &corsPolicy{
		allowMethods:     c.GetAllowMethods(),
		allowHeaders:     c.GetAllowHeaders(),
		exposeHeaders:    c.GetExposeHeaders(),
		maxAge:           c.GetMaxAge(),
		allowCredentials: c.GetAllowCredentials().GetValue(),
		privateNetwork:   c.GetAllowPrivateNetworkAccess().GetValue(),
		enabled:          compileFraction(c.GetFilterEnabled().GetDefaultValue(), 100),
		forwardNoMatch:   true,
	}
	if c.GetFilterEnabled() == nil {
		cp.enabled = fraction{num: 100, den: 100}
	}
	if f := c.GetForwardNotMatchingPreflights(); f != nil {
		cp.forwardNoMatch = f.GetValue()
	}
	for _, o := range c.GetAllowOriginStringMatch() {
		sm, err := compileStringMatcher(o)
		if err != nil {
			return nil, fmt.Errorf("cors allow_origin_string_match: %w", err)
		}
		cp.origins = append(cp.origins, sm)
	}
	return cp, nil
}

func (f *corsFilter) decode(x *exchange) bool {
	pf, ok := x.perFilter(f.name, wellknown.CORS)
	if !ok || pf.disabled || pf.cors == nil {
		return true
	}
	cp := pf.cors
	if !cp.enabled.sample(x.p.rnd) {
		return true
	}
	ov := x.r.Header["Origin"]
	if len(ov) == 0 || ov[0] == "" {
		return true
	}
	origin := ov[0]
	matched := false
	for i := range cp.origins {
		if cp.origins[i].match(origin) {
			matched = true
			break
		}
	}
	preflight := x.r.Method == http.MethodOptions && len(x.r.Header["Access-Control-Request-Method"]) > 0 &&
		x.r.Header["Access-Control-Request-Method"][0] != ""
	if !matched {
		if preflight && !cp.forwardNoMatch {
			x.info.Details = "cors_response"
			x.writeHeader(http.StatusOK, make(http.Header))
			return false
		}
		return true
	}
	if preflight {
		h := make(http.Header, 6)
		h["Access-Control-Allow-Origin"] = []string{origin}
		if cp.allowCredentials {
			h["Access-Control-Allow-Credentials"] = []string{"true"}
		}
		if cp.allowMethods != "" {
			h["Access-Control-Allow-Methods"] = []string{cp.allowMethods}
		}
		if cp.allowHeaders != "" {
			h["Access-Control-Allow-Headers"] = []string{cp.allowHeaders}
		}
		if cp.maxAge != "" {
			h["Access-Control-Max-Age"] = []string{cp.maxAge}
		}
		if cp.privateNetwork && x.r.Header.Get("Access-Control-Request-Private-Network") == "true" {
			h["Access-Control-Allow-Private-Network"] = []string{"true"}
		}
		x.info.Details = "cors_response"
		x.writeHeader(http.StatusOK, h)
		return false
	}
	x.cors, x.corsOrigin = cp, origin
	return true
}

func (f *corsFilter) encode(x *exchange, h http.Header) {
	cp := x.cors
	if cp == nil {
		return
	}
	h["Access-Control-Allow-Origin"] = []string{x.corsOrigin}
	if cp.allowCredentials {
		h["Access-Control-Allow-Credentials"] = []string{"true"}
	}
	if cp.exposeHeaders != "" {
		h["Access-Control-Expose-Headers"] = []string{cp.exposeHeaders}
	}
}
