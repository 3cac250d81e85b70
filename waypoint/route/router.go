package route

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// routerFilter is envoy.filters.http.router: the terminal filter that acts
// on the selected route.
type routerFilter struct {
	suppressEnvoyHeaders bool
}

func (*routerFilter) encode(*exchange, http.Header) {}

func (f *routerFilter) decode(x *exchange) bool {
	rt := x.rt
	if rt == nil {
		// Envoy: 404, empty body, flag NR, details route_not_found.
		x.info.addFlag(flagNR)
		x.localReply(http.StatusNotFound, "", "route_not_found", -1, false, nil)
		return false
	}
	switch rt.kind {
	case actionDirect:
		x.localReply(rt.directStatus, rt.directBody, "direct_response", -1, true, nil)
	case actionRedirect:
		x.redirect()
	default:
		x.forward(f.suppressEnvoyHeaders)
	}
	return false
}

var (
	errRouteTimeout  = errors.New("upstream request timeout")
	errPerTryTimeout = errors.New("upstream per-try timeout")
)

type failKind uint8

const (
	failReset failKind = iota
	failConnect
	failRefused
	failOverflow
	failNoHealthy
	failNoCluster
	failPerTry
	failRouteTimeout
	failDownstream
)

// ---- response flags, rendered in Envoy's CoreResponseFlag order ----

const (
	flagUH = "UH"
	flagUT = "UT"
	flagUR = "UR"
	flagUF = "UF"
	flagUC = "UC"
	flagUO = "UO"
	flagNR = "NR"
	flagDI = "DI"
	flagFI = "FI"
	flagRL = "RL"
	// flagRLSE: the rate limit service could not be asked (failure_mode_deny).
	flagRLSE = "RLSE"
	flagDC   = "DC"
	flagURX  = "URX"
	flagNC   = "NC"
)

var flagOrder = []string{flagUH, flagUT, flagUR, flagUF, flagUC, flagUO, flagNR, flagDI, flagFI, flagRL, flagUAEX, flagRLSE, flagDC, flagURX, flagNC}

func (i *Info) addFlag(f string) {
	if i.ResponseFlags == "" {
		i.ResponseFlags = f
		return
	}
	have := strings.Split(i.ResponseFlags, ",")
	for _, h := range have {
		if h == f {
			return
		}
	}
	have = append(have, f)
	out := make([]string, 0, len(have))
	for _, o := range flagOrder {
		for _, h := range have {
			if h == o {
				out = append(out, o)
			}
		}
	}
	i.ResponseFlags = strings.Join(out, ",")
}

// ---- redirect ----

func (x *exchange) redirect() {
	ra := x.rt.redirect
	v := &x.v
	origScheme := v.scheme
	if xfp := x.r.Header["X-Forwarded-Proto"]; len(xfp) > 0 && xfp[0] != "" {
		origScheme = xfp[0]
	}
	scheme := origScheme
	if ra.scheme != "" {
		scheme = ra.scheme
	}
	port := ""
	if ra.port != 0 {
		port = ":" + strconv.FormatUint(uint64(ra.port), 10)
	}
	host := ra.host
	if host == "" {
		host = requestHostForRedirect(v.host, origScheme, scheme, port)
	}
	query := v.path[len(v.pathOnly):] // "?..." (may be "")
	var path string
	switch {
	case ra.hasPath:
		path = ra.path
		if !ra.pathHasQuery && !ra.stripQuery {
			path += query
		}
	case ra.hasPrefixRw:
		path = ra.prefixRewrite + v.path[min(x.matched, len(v.path)):]
	case ra.regex != nil:
		path = ra.regex.ReplaceAllString(v.pathOnly, ra.regexSub) + query
	default:
		path = v.path
	}
	if ra.stripQuery && !ra.hasPath {
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
	}
	h := make(http.Header, 2)
	h.Set("Location", scheme+"://"+host+port+path)
	x.info.Details = "direct_response"
	x.finalizeResponse(h, nil)
	x.writeHeader(ra.code, h)
}

// requestHostForRedirect is Envoy's processRequestHost: keep the request's
// host, dropping its port when a port_redirect is given or when the scheme
// changes away from the scheme's default port.
func requestHostForRedirect(host, origScheme, newScheme, newPort string) string {
	if host == "" {
		return host
	}
	var end int
	if host[0] == '[' {
		end = strings.LastIndex(host, "]:")
		if end >= 0 {
			end++
		}
	} else {
		end = strings.LastIndexByte(host, ':')
	}
	if end < 0 {
		return host
	}
	reqPort := host[end:]
	remove := newPort != ""
	if newScheme != origScheme {
		remove = remove || (origScheme == "https" && reqPort == ":443") || (origScheme == "http" && reqPort == ":80")
	}
	if remove {
		return host[:end]
	}
	return host
}

// ---- forward ----

func (x *exchange) pickWeighted() *weightedCluster {
	rt := x.rt
	v := x.p.rnd() % rt.totalWeight
	var end uint64
	for i := range rt.weighted {
		end += rt.weighted[i].weight
		if v < end {
			return &rt.weighted[i]
		}
	}
	return &rt.weighted[len(rt.weighted)-1]
}

// rewrittenPath returns the upstream :path: the normalized :path after
// prefix_rewrite / regex_rewrite (Envoy: the matched prefix of :path is
// replaced; for exact-path and regex routes the matched part is the whole
// path without the query; regex_rewrite substitutes in the path without
// the query). false: no rewrite.
func (x *exchange) rewrittenPath() (string, bool) {
	rt := x.rt
	v := &x.v
	switch {
	case rt.hasPrefixRw:
		n := min(x.matched, len(v.path))
		return rt.prefixRewrite + v.path[n:], true
	case rt.regexRewrite != nil:
		return rt.regexRewrite.ReplaceAllString(v.pathOnly, rt.regexSub) + v.path[len(v.pathOnly):], true
	}
	return v.path, false
}

// upstreamHeaders are the request headers and :authority the upstream
// gets: the client's minus hop-by-hop headers (an allowed upgrade keeps
// its offer), after the header mutations, host rewrites and
// x-forwarded-host.
func (x *exchange) upstreamHeaders(wc *weightedCluster) (http.Header, string) {
	r, rt := x.r, x.rt
	h := r.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	removeHopHeaders(h)
	if x.upgrade != "" {
		upgradeHeaders(h, r.Header)
	}
	if !x.p.proxy100 {
		// Envoy's default: the client's 100 Continue comes from the proxy
		// (net/http's server sends it when the body is first read).
		delete(h, "Expect")
	}
	host := r.Host
	x.finalizeRequest(h, &host, wc)
	switch {
	case wc != nil && wc.hostRewrite != "":
		host = wc.hostRewrite
	case rt.hostRewrite != "":
		host = rt.hostRewrite
	}
	if rt.appendXFH && host != r.Host && r.Host != "" {
		if prev := h["X-Forwarded-Host"]; len(prev) > 0 {
			last := prev[len(prev)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = strings.TrimSpace(last[i+1:])
			}
			if last != r.Host {
				h["X-Forwarded-Host"] = []string{strings.Join(prev, ",") + "," + r.Host}
			}
		} else {
			h["X-Forwarded-Host"] = []string{r.Host}
		}
	}
	return h, host
}

// forwarding is one request on its way upstream: what every attempt sends
// and how many retries are left.
type forwarding struct {
	x           *exchange
	ctx         context.Context  // the request's, bounded by the route timeout
	wc          *weightedCluster // nil: the route names one cluster
	cluster     string
	base        http.Request // URL, body and context are set per attempt
	url         url.URL
	body        *bodyBuf // nil: no request body
	hash        uint64
	hashed      bool
	retry       *retryPolicy // nil: no retries
	retriesLeft int
}

func (x *exchange) forward(suppressEnvoyHeaders bool) {
	f := x.newForwarding(suppressEnvoyHeaders)
	if f.body != nil {
		defer f.body.close()
	}
	// The route timeout covers all attempts and the response body (Envoy).
	f.ctx = x.r.Context()
	if x.rt.timeout > 0 {
		var cancel context.CancelFunc
		f.ctx, cancel = context.WithTimeoutCause(f.ctx, x.rt.timeout, errRouteTimeout)
		defer cancel()
	}
	if len(x.rt.mirrors) > 0 && x.upgrade == "" { // a mirror cannot switch protocols
		x.mirror(&f.base, f.url, f.body, f.hash, f.hashed)
	}
	for attempt := 1; ; attempt++ {
		if !f.try(attempt) {
			return
		}
	}
}

// newForwarding picks the cluster and prepares what every attempt sends:
// the upstream headers, the URL with the rewritten path, the hash key and
// the buffered request body.
func (x *exchange) newForwarding(suppressEnvoyHeaders bool) *forwarding {
	rt, r := x.rt, x.r
	f := &forwarding{x: x, cluster: rt.cluster, retry: rt.retry}
	if len(rt.weighted) > 0 {
		f.wc = x.pickWeighted()
		f.cluster = f.wc.name
	}
	x.info.Cluster = f.cluster

	h, host := x.upstreamHeaders(f.wc)
	f.url = *r.URL
	f.url.Host = host
	np, rewritten := x.rewrittenPath()
	setTarget(&f.url, np)
	if rewritten && !suppressEnvoyHeaders {
		h["X-Envoy-Original-Path"] = []string{x.v.path}
	}
	if len(rt.hash) > 0 {
		f.hash, f.hashed = x.computeHash(rt.hash, h)
		x.info.Hash, x.info.Hashed = f.hash, f.hashed
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		f.body = newBodyBuf(r.Body, x.p.bodyLimit)
	}
	f.base = http.Request{
		Method:        r.Method,
		Proto:         r.Proto,
		ProtoMajor:    r.ProtoMajor,
		ProtoMinor:    r.ProtoMinor,
		Header:        h,
		ContentLength: r.ContentLength,
		Host:          host,
		Trailer:       r.Trailer,
		RemoteAddr:    r.RemoteAddr,
	}
	if f.body == nil {
		f.base.ContentLength = 0
	}
	if f.retry != nil {
		f.retriesLeft = f.retry.numRetries
	}
	return f
}

// try sends attempt number n upstream and answers the client with its
// outcome, unless the retry policy retries it; true: retry (the backoff
// has passed).
func (f *forwarding) try(n int) bool {
	x, rp := f.x, f.retry
	x.info.Attempts = n
	t := f.startTry()
	resp, err := x.p.up.RoundTrip(f.request(t.ctx), f.cluster, f.hash, f.hashed)
	if t.expired() {
		if resp != nil {
			resp.Body.Close()
			resp = nil
		}
		if err == nil {
			err = errPerTryTimeout
		}
	}
	canRetry := f.retriesLeft > 0 && (f.body == nil || f.body.replayable())
	if err == nil {
		if rp != nil && rp.retriableResponse(resp) {
			if canRetry {
				discard(resp)
				t.cancel(nil)
				return f.backoff(n)
			}
			f.retriesExhausted()
		}
		x.respond(f.ctx, resp, f.wc)
		t.cancel(nil)
		return false
	}
	kind := classify(err, f.ctx, t.ctx)
	t.cancel(nil)
	if rp != nil && rp.retriableFailure(kind) {
		if canRetry {
			return f.backoff(n)
		}
		f.retriesExhausted()
	}
	x.failReply(kind, f.wc)
	return false
}

// backoff spends a retry and waits before it; false when the wait ended
// the request (route timeout, client gone).
func (f *forwarding) backoff(n int) bool {
	f.retriesLeft--
	return f.x.backoff(f.ctx, f.retry, n)
}

// retriesExhausted flags a retriable outcome that is answered because no
// retry is left (URX); a body too large to replay is not flagged.
func (f *forwarding) retriesExhausted() {
	if f.retriesLeft == 0 {
		f.x.info.addFlag(flagURX)
	}
}

// request is one attempt's upstream request: its own URL (the Upstream may
// set Scheme and Host) and a fresh reader of the buffered body.
func (f *forwarding) request(ctx context.Context) *http.Request {
	req := f.base.WithContext(ctx)
	u := f.url
	req.URL = &u
	if b := f.body; b != nil {
		req.Body = b.reader()
		req.GetBody = func() (io.ReadCloser, error) {
			if !b.replayable() {
				return nil, errBodyNotReplayable
			}
			return b.reader(), nil
		}
	}
	return req
}

// tryContext is one attempt's context. A per-try timeout cancels only its
// attempt, and only until the response headers arrive (Envoy ignores it
// once the downstream response started).
type tryContext struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer // the per-try timeout; nil: none
}

func (f *forwarding) startTry() tryContext {
	if rp := f.retry; rp != nil && rp.perTry > 0 {
		ctx, cancel := context.WithCancelCause(f.ctx)
		timer := time.AfterFunc(rp.perTry, func() { cancel(errPerTryTimeout) })
		return tryContext{ctx: ctx, cancel: cancel, timer: timer}
	}
	return tryContext{ctx: f.ctx, cancel: func(error) {}}
}

// expired stops the per-try timer; true when it fired before the response
// headers arrived.
func (t tryContext) expired() bool {
	return t.timer != nil && !t.timer.Stop() && context.Cause(t.ctx) == errPerTryTimeout
}

// backoff waits before retry number n; false when the route timeout fired
// (504 sent) or the client went away.
func (x *exchange) backoff(ctx context.Context, rp *retryPolicy, n int) bool {
	d := rp.backoff(n, x.p.rnd)
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if ctx.Err() != nil {
		if context.Cause(ctx) == errRouteTimeout {
			x.failReply(failRouteTimeout, nil)
		} else {
			x.info.addFlag(flagDC)
		}
		return false
	}
	return true
}

func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

func classify(err error, ctx, actx context.Context) failKind {
	if context.Cause(actx) == errPerTryTimeout || errors.Is(err, errPerTryTimeout) {
		return failPerTry
	}
	if ctx.Err() != nil {
		if context.Cause(ctx) == errRouteTimeout {
			return failRouteTimeout
		}
		return failDownstream
	}
	switch {
	case errors.Is(err, ErrOverflow):
		return failOverflow
	case errors.Is(err, ErrNoHealthyUpstream):
		return failNoHealthy
	case errors.Is(err, ErrClusterNotFound):
		return failNoCluster
	case errors.Is(err, ErrConnectFailure):
		return failConnect
	case errors.Is(err, ErrRefusedStream):
		return failRefused
	}
	return failReset
}

const resetPrefix = "upstream connect error or disconnect/reset before headers. reset reason: "

// failReply sends the router's local reply for an upstream failure, as
// Envoy's Router::onUpstreamAbort / sendNoHealthyHostResponse do; a client
// that went away gets none.
func (x *exchange) failReply(k failKind, wc *weightedCluster) {
	if k == failDownstream {
		x.info.addFlag(flagDC)
		x.info.Details = "downstream_remote_disconnect"
		return
	}
	r := failReplies[k]
	x.info.addFlag(r.flag)
	x.localReply(r.status, r.body, r.details, -1, true, wc)
}

// failResponse is the local reply to one kind of upstream failure.
type failResponse struct {
	flag, body, details string
	status              int
}

var failReplies = [...]failResponse{
	failPerTry:       {flagUT, "upstream request timeout", "upstream_per_try_timeout", http.StatusGatewayTimeout},
	failRouteTimeout: {flagUT, "upstream request timeout", "upstream_response_timeout", http.StatusGatewayTimeout},
	failConnect:      {flagUF, resetPrefix + "connection failure", "upstream_reset_before_response_started{connection_failure}", http.StatusServiceUnavailable},
	failOverflow:     {flagUO, resetPrefix + "overflow", "upstream_reset_before_response_started{overflow}", http.StatusServiceUnavailable},
	failNoHealthy:    {flagUH, "no healthy upstream", "no_healthy_upstream", http.StatusServiceUnavailable},
	failNoCluster:    {flagNC, "", "cluster_not_found", http.StatusServiceUnavailable},
	failRefused:      {flagUR, resetPrefix + "remote refused stream reset", "upstream_reset_before_response_started{remote_refused_stream_reset}", http.StatusServiceUnavailable},
	failReset:        {flagUC, resetPrefix + "connection termination", "upstream_reset_before_response_started{connection_termination}", http.StatusServiceUnavailable},
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// respond streams the upstream response downstream: headers (after the
// response header mutations and the filters' encoders), the body flushed
// as it arrives, then the trailers (gRPC status).
func (x *exchange) respond(ctx context.Context, resp *http.Response, wc *weightedCluster) {
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		x.tunnel(resp, wc)
		return
	}
	defer resp.Body.Close()
	h := resp.Header
	if h == nil {
		h = http.Header{}
	}
	removeHopHeaders(h)
	x.finalizeResponse(h, wc)
	if len(resp.Trailer) > 0 && x.r.ProtoMajor == 1 {
		// Trailers need chunked framing on HTTP/1.1 (h2 has both).
		delete(h, "Content-Length")
	} else if _, ok := h["Content-Length"]; !ok && resp.ContentLength >= 0 && bodyAllowed(resp.StatusCode) && x.r.Method != http.MethodHead {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	x.info.Details = "via_upstream"
	x.writeHeader(resp.StatusCode, h)

	rc := http.NewResponseController(x.w)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := x.w.Write(buf[:n]); werr != nil {
				x.info.addFlag(flagDC)
				return
			}
			_ = rc.Flush()
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			switch {
			case x.r.Context().Err() != nil:
				x.info.addFlag(flagDC)
				return
			case context.Cause(ctx) == errRouteTimeout:
				x.info.addFlag(flagUT)
				x.info.Details = "upstream_response_timeout"
			default:
				x.info.addFlag(flagUR)
				x.info.Details = "upstream_reset_after_response_started"
			}
			// Envoy resets the downstream stream once the response started.
			panic(http.ErrAbortHandler)
		}
	}
	if len(resp.Trailer) > 0 {
		dst := x.w.Header()
		for k, vv := range resp.Trailer {
			dst[http.TrailerPrefix+k] = vv
		}
	}
}

func bodyAllowed(status int) bool {
	return !(status >= 100 && status < 200) && status != 204 && status != 304
}

// mirror sends fire-and-forget copies of the request (Envoy
// request_mirror_policies): Host gets "-shadow" appended, responses are
// discarded, the route timeout applies, the client's cancellation does not.
func (x *exchange) mirror(base *http.Request, baseURL url.URL, bb *bodyBuf, hash uint64, hashed bool) {
	rt := x.rt
	for i := range rt.mirrors {
		m := &rt.mirrors[i]
		if !m.frac.sample(x.p.rnd) {
			continue
		}
		x.info.Mirrored = true
		host := base.Host
		if m.hostRewrite != "" {
			host = m.hostRewrite
		}
		if !m.noSuffix {
			host = shadowHost(host)
		}
		u := new(url.URL)
		*u = baseURL
		u.Host = host
		ctx := context.WithoutCancel(x.r.Context())
		cancel := context.CancelFunc(func() {})
		if rt.timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, rt.timeout)
		}
		mreq := base.WithContext(ctx)
		mreq.URL = u
		mreq.Host = host
		mreq.Header = base.Header.Clone()
		mreq.Trailer = nil
		if bb != nil {
			mreq.Body = bb.reader()
		}
		up, cluster := x.p.up, m.cluster
		go func() {
			defer cancel()
			resp, err := up.RoundTrip(mreq, cluster, hash, hashed)
			if err == nil && resp != nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
}
