package route

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// fraction is a FractionalPercent: enabled when rand % denominator < numerator
// (Envoy's featureEnabled with the default_value; runtime overrides are not
// supported).
type fraction struct {
	num, den uint64
}

func compileFraction(p *typev3.FractionalPercent, defaultNum uint64) fraction {
	if p == nil {
		return fraction{num: defaultNum, den: 100}
	}
	f := fraction{num: uint64(p.GetNumerator()), den: 100}
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		f.den = 10_000
	case typev3.FractionalPercent_MILLION:
		f.den = 1_000_000
	}
	return f
}

func (f fraction) sample(rnd func() uint64) bool {
	if f.num >= f.den {
		return true
	}
	if f.num == 0 {
		return false
	}
	return rnd()%f.den < f.num
}

// ---- header mutations (HeaderValueOption lists + *_headers_to_remove) ----

type appendAction uint8

const (
	appendAdd               appendAction = iota // APPEND_IF_EXISTS_OR_ADD
	appendIfAbsent                              // ADD_IF_ABSENT
	appendOverwrite                             // OVERWRITE_IF_EXISTS_OR_ADD
	appendOverwriteIfExists                     // OVERWRITE_IF_EXISTS
)

type headerAdd struct {
	canon     string
	authority bool // :authority / host
	value     string
	action    appendAction
	keepEmpty bool
}

// headerOps is one level's mutation set (weighted cluster, route, virtual
// host or route configuration). Envoy's HeaderParser removes first, then
// adds.
type headerOps struct {
	remove []string // canonical keys
	add    []headerAdd
}

// headerMutator is an xDS object with request and response header
// mutations: a route configuration, virtual host, route or weighted
// cluster.
type headerMutator interface {
	GetRequestHeadersToAdd() []*corev3.HeaderValueOption
	GetRequestHeadersToRemove() []string
	GetResponseHeadersToAdd() []*corev3.HeaderValueOption
	GetResponseHeadersToRemove() []string
}

// compileHeaderMutations compiles m's request and response header
// mutations.
func compileHeaderMutations(m headerMutator) (req, resp *headerOps, err error) {
	if req, err = compileHeaderOps(m.GetRequestHeadersToAdd(), m.GetRequestHeadersToRemove()); err != nil {
		return nil, nil, fmt.Errorf("request headers: %w", err)
	}
	if resp, err = compileHeaderOps(m.GetResponseHeadersToAdd(), m.GetResponseHeadersToRemove()); err != nil {
		return nil, nil, fmt.Errorf("response headers: %w", err)
	}
	return req, resp, nil
}

func compileHeaderOps(add []*corev3.HeaderValueOption, remove []string) (*headerOps, error) {
	if len(add) == 0 && len(remove) == 0 {
		return nil, nil
	}
	o := &headerOps{}
	for _, name := range remove {
		o.remove = append(o.remove, textproto.CanonicalMIMEHeaderKey(name))
	}
	for _, h := range add {
		hv := h.GetHeader()
		if hv == nil || hv.GetKey() == "" {
			return nil, fmt.Errorf("header to add has no key")
		}
		a := headerAdd{value: hv.GetValue(), keepEmpty: h.GetKeepEmptyValue()}
		if hv.GetValue() == "" && len(hv.GetRawValue()) > 0 {
			a.value = string(hv.GetRawValue())
		}
		switch k := strings.ToLower(hv.GetKey()); k {
		case ":authority", "host":
			a.authority = true
		default:
			if strings.HasPrefix(k, ":") {
				return nil, fmt.Errorf("header %q: pseudo headers other than :authority cannot be added", hv.GetKey())
			}
			a.canon = textproto.CanonicalMIMEHeaderKey(hv.GetKey())
		}
		switch {
		case h.GetAppend() != nil && h.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			// Deprecated `append`: true = append, false = overwrite.
			if h.GetAppend().GetValue() {
				a.action = appendAdd
			} else {
				a.action = appendOverwrite
			}
		default:
			switch h.GetAppendAction() {
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				a.action = appendIfAbsent
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				a.action = appendOverwrite
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				a.action = appendOverwriteIfExists
			default:
				a.action = appendAdd
			}
		}
		o.add = append(o.add, a)
	}
	return o, nil
}

// apply mutates h (and *host for :authority on requests; host may be nil).
func (o *headerOps) apply(h http.Header, host *string) {
	if o == nil {
		return
	}
	for _, k := range o.remove {
		delete(h, k)
	}
	for i := range o.add {
		a := &o.add[i]
		if a.value == "" && !a.keepEmpty {
			continue
		}
		if a.authority {
			if host == nil {
				continue
			}
			switch a.action {
			case appendIfAbsent:
				if *host == "" {
					*host = a.value
				}
			case appendOverwriteIfExists:
				if *host != "" {
					*host = a.value
				}
			default: // :authority is single-valued: add == set
				*host = a.value
			}
			continue
		}
		_, exists := h[a.canon]
		switch a.action {
		case appendAdd:
			h[a.canon] = append(h[a.canon], a.value)
		case appendIfAbsent:
			if !exists {
				h[a.canon] = []string{a.value}
			}
		case appendOverwrite:
			h[a.canon] = []string{a.value}
		case appendOverwriteIfExists:
			if exists {
				h[a.canon] = []string{a.value}
			}
		}
	}
}

// hopHeaders are the hop-by-hop headers a proxy must not forward (RFC 9110
// 7.6.1); Envoy's HCM strips them too. "Te: trailers" survives (gRPC).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	if c := h["Connection"]; len(c) > 0 {
		for _, v := range c {
			for _, f := range strings.Split(v, ",") {
				if f = textproto.TrimString(f); f != "" {
					delete(h, textproto.CanonicalMIMEHeaderKey(f))
				}
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if te, ok := h["Te"]; ok {
		keep := false
		for _, v := range te {
			if strings.Contains(strings.ToLower(v), "trailers") {
				keep = true
			}
		}
		if keep {
			h["Te"] = []string{"trailers"}
		} else {
			delete(h, "Te")
		}
	}
}
