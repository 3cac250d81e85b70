package route

import (
	"fmt"
	"net/http"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// faultFilter is envoy.filters.http.fault. Its own HTTPFault is the default;
// the most specific typed_per_filter_config (route, virtual host, route
// configuration) under the filter's name replaces it. Envoy order: the delay
// first (flag DI), then the abort (flag FI, body "fault filter abort").
//
// The delay runs in the filter, before the router, so the route timeout
// (which starts in the router once the request is decoded) does not cover
// it: a 7 s delay with a 3 s route timeout waits 7 s and then forwards
// normally (Envoy docs: the route timeout "spans between the point at which
// the entire downstream request has been processed [by the router] and
// when the upstream response has been completely processed"). In Istio's
// Bookinfo fault task the 504/error comes from productpage's own client
// timeout, not from the waypoint.
type faultFilter struct {
	name string
	def  *faultConfig
}

type faultConfig struct {
	hasDelay    bool
	delay       time.Duration
	delayPct    fraction
	hasAbort    bool
	abortStatus int
	abortGRPC   int // -1: none
	abortPct    fraction
	abortBody   string
	cluster     string
	headers     []headerMatcher
}

func compileFault(c *faultv3.HTTPFault) (*faultConfig, error) {
	fc := &faultConfig{cluster: c.GetUpstreamCluster(), abortGRPC: -1}
	if d := c.GetDelay(); d != nil {
		if d.GetHeaderDelay() != nil {
			return nil, fmt.Errorf("fault delay: header_delay is not supported")
		}
		fc.hasDelay = true
		fc.delay = d.GetFixedDelay().AsDuration()
		// Envoy: an unset percentage is 0 %, i.e. never.
		fc.delayPct = compileFraction(d.GetPercentage(), 0)
	}
	if a := c.GetAbort(); a != nil {
		fc.hasAbort = true
		switch e := a.ErrorType.(type) {
		case *faultv3.FaultAbort_HttpStatus:
			if e.HttpStatus < 200 || e.HttpStatus >= 600 {
				return nil, fmt.Errorf("fault abort: http_status %d out of range [200, 600)", e.HttpStatus)
			}
			fc.abortStatus = int(e.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			fc.abortStatus = http.StatusOK
			fc.abortGRPC = int(e.GrpcStatus)
		default:
			return nil, fmt.Errorf("fault abort: unsupported error type %T", a.ErrorType)
		}
		fc.abortPct = compileFraction(a.GetPercentage(), 0)
		fc.abortBody = a.GetResponseBody()
		if fc.abortBody == "" {
			fc.abortBody = "fault filter abort"
		}
	}
	for _, h := range c.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("fault headers: %w", err)
		}
		fc.headers = append(fc.headers, hm)
	}
	if len(c.GetDownstreamNodes()) > 0 {
		return nil, fmt.Errorf("fault downstream_nodes is not supported")
	}
	return fc, nil
}

func (f *faultFilter) encode(*exchange, http.Header) {}

func (f *faultFilter) decode(x *exchange) bool {
	fc := f.def
	if pf, ok := x.perFilter(f.name, wellknown.Fault); ok {
		if pf.disabled {
			return true
		}
		if pf.fault != nil {
			fc = pf.fault
		}
	}
	if fc == nil || (!fc.hasDelay && !fc.hasAbort) {
		return true
	}
	if fc.cluster != "" && (x.rt == nil || !x.rt.usesCluster(fc.cluster)) {
		return true
	}
	for i := range fc.headers {
		if !fc.headers[i].match(&x.v) {
			return true
		}
	}
	if fc.hasDelay && fc.delay > 0 && fc.delayPct.sample(x.p.rnd) {
		x.info.addFlag(flagDI)
		t := time.NewTimer(fc.delay)
		select {
		case <-t.C:
		case <-x.r.Context().Done():
			t.Stop()
			x.info.addFlag(flagDC)
			return false
		}
	}
	if fc.hasAbort && fc.abortPct.sample(x.p.rnd) {
		x.info.addFlag(flagFI)
		if fc.abortGRPC >= 0 {
			x.grpcLocalReply(fc.abortGRPC, fc.abortBody, "fault_filter_abort")
			return false
		}
		x.localReply(fc.abortStatus, fc.abortBody, "fault_filter_abort", -1, false, nil)
		return false
	}
	return true
}

func (rt *route) usesCluster(c string) bool {
	if rt.cluster == c {
		return true
	}
	for i := range rt.weighted {
		if rt.weighted[i].name == c {
			return true
		}
	}
	return false
}
