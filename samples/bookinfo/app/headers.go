package app

import (
	"net/http"
	"slices"
	"strings"
)

// endUserHeader carries the signed-in user; Istio's request-routing task matches
// on it to send jason to reviews-v2.
const endUserHeader = "End-User"

// propagated are the headers each service copies from its incoming request onto
// the calls that request causes, so the mesh can join spans into one trace and
// route on end-user. Same list as upstream Bookinfo, except cookie: productpage's
// login cookie stays at the edge and travels only as end-user.
var propagated = canonicalSet(
	"x-request-id",
	"x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3",
	"traceparent", "tracestate", "baggage",
	"x-ot-span-context", "x-cloud-trace-context", "grpc-trace-bin", "sw8",
	"user-agent", "authorization", "jwt",
	endUserHeader,
)

// datadogPrefix covers x-datadog-trace-id, -parent-id, -sampling-priority, -tags, ...
const datadogPrefix = "X-Datadog-"

func canonicalSet(keys ...string) map[string]bool {
	set := make(map[string]bool, len(keys))
	for _, k := range keys {
		set[http.CanonicalHeaderKey(k)] = true
	}
	return set
}

// propagate returns the subset of in that must be forwarded downstream.
// in must have canonical keys, as net/http's server provides.
func propagate(in http.Header) http.Header {
	out := make(http.Header)
	for k, v := range in {
		if propagated[k] || strings.HasPrefix(k, datadogPrefix) {
			out[k] = slices.Clone(v)
		}
	}
	return out
}
