package compat

var traffic = Section{
	Title: "Traffic management (waypoints)",
	Entries: []Entry{
		{
			Feature: "VirtualService `http` match: `uri` exact/prefix/regex, `headers` exact/prefix/regex/present, `withoutHeaders`, `method`, `authority`, `scheme`, `queryParams`, `port`, `ignoreUriCase`",
			Status:  Supported,
			Notes:   "regexes are RE2",
		},
		{
			Feature: "VirtualService `http` match: `sourceLabels`, `sourceNamespace`",
			Status:  NotYet,
			Notes:   "the match never applies (reported)",
		},
		{
			Feature: "VirtualService `http` route: subsets, weights, `redirect`, `directResponse`, `rewrite` (`uri`, `uriRegexRewrite`, `authority`), `timeout`, `retries` (`attempts`, `perTryTimeout`, `retryOn`), `fault` delay/abort with percentage, `mirror`/`mirrors` + percentage, `headers` set/add/remove (also per destination), `corsPolicy`",
			Status:  Supported,
			Notes:   "Bookinfo's tutorial files run unchanged (e2e `TestWaypointBookinfo`). `retryOn` conditions acted on: `5xx`, `gateway-error`, `reset`, `connect-failure`, `retriable-4xx`, `refused-stream`, `retriable-status-codes`, status codes, and gRPC `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`; `retriable-headers`, `reset-before-request`, `envoy-ratelimited`, `http3-post-connect-failure` are dropped (reported), and a `retryOn` left empty keeps the default conditions. Reported: negative `attempts` (no retries), `attempts: 0` with other retry settings, negative `timeout`/`perTryTimeout` (ignored), `fault.delay.fixedDelay` not positive (no delay), abort `httpStatus` outside 200-599 (no abort), fault and mirror percentages outside 0-100 (clamped), negative weights or weights not adding up to 100 (VirtualService ignored)",
		},
		{
			Feature: "VirtualService `redirect.derivePort: FROM_REQUEST_PORT`",
			Status:  NotYet,
			Notes:   "the port is kept (reported)",
		},
		{
			Feature: "VirtualService `delegate`",
			Status:  NotYet,
			Notes:   "gateways only in Istio too; route ignored",
		},
		{
			Feature: "VirtualService `tcp`",
			Status:  Partial,
			Notes:   "routes by `match.port` with weights; other match fields never apply",
		},
		{
			Feature: "VirtualService `tls`",
			Status:  NotYet,
			Notes:   "ignored (reported)",
		},
		{
			Feature: "VirtualService wildcard hosts, hosts that are neither Services nor ServiceEntry hosts",
			Status:  NotYet,
			Notes:   "ignored (reported)",
		},
		{
			Feature: "VirtualService `gateways`",
			Status:  Supported,
			Notes:   "`mesh` (or none) for waypoints, Istio Gateways for ingress gateways ([ingress.md](ingress.md))",
		},
		{
			Feature: "VirtualService `exportTo`",
			Status:  NotYet,
			Notes:   "a restriction is reported (status, `weftctl analyze`); the VirtualService applies to every namespace",
		},
		{
			Feature: "two VirtualServices for one host",
			Status:  Partial,
			Notes:   "Istio merges them; Weft uses the oldest and reports the other",
		},
		{
			Feature: "DestinationRule `subsets` with per-subset `trafficPolicy`",
			Status:  Supported,
		},
		{
			Feature: "DestinationRule `loadBalancer.simple`: `ROUND_ROBIN`, `LEAST_REQUEST` (also the deprecated `LEAST_CONN`), `RANDOM`",
			Status:  Supported,
			Notes:   "`PASSTHROUGH` and unknown values fall back to ROUND_ROBIN (reported)",
		},
		{
			Feature: "DestinationRule `loadBalancer.consistentHash`: `httpHeaderName`, `httpCookie`, `useSourceIp`",
			Status:  Supported,
			Notes:   "not hashed (reported): `httpQueryParameterName`, an empty or invalid `httpHeaderName`, an empty `httpCookie.name`, `useSourceIp: false`, no key; a negative `httpCookie.ttl` is ignored (no cookie generated); `maglev` uses a ring hash and `minimumRingSize` is ignored (Envoy's default ring, reported)",
		},
		{
			Feature: "DestinationRule `loadBalancer.localityLbSetting`, warmup",
			Status:  NotYet,
			Notes:   "ignored (reported)",
		},
		{
			Feature: "DestinationRule `connectionPool`",
			Status:  Partial,
			Notes:   "`tcp.maxConnections`, `tcp.connectTimeout`, `http.http1MaxPendingRequests`, `http.http2MaxRequests`, `http.maxRequestsPerConnection`; a negative limit means no limit and a `connectTimeout` under 1ms the default 10s (reported; a limit of 0 is the same as unset, no limit, as in Istio); the rest (`idleTimeout`, `maxRetries`, `tcpKeepalive`, `h2UpgradePolicy`, `maxConcurrentStreams`, `http2KeepAlive`, ...) is ignored and reported on the DestinationRule's status",
		},
		{
			Feature: "DestinationRule `outlierDetection`",
			Status:  Partial,
			Notes:   "`consecutive5xxErrors`, `interval`, `baseEjectionTime`, `maxEjectionPercent`; an `interval` or `baseEjectionTime` under 1ms and a `maxEjectionPercent` outside 0-100 are ignored for Envoy's defaults (10s, 30s, 10%; reported); the rest ignored (reported)",
		},
		{
			Feature: "DestinationRule `tls`",
			Status:  Partial,
			Notes:   "`ISTIO_MUTUAL` and `DISABLE` accepted (the mesh always uses HBONE mTLS); `SIMPLE` originates TLS on HTTP routes of waypoints and gateways (`sni`, `caCertificates` as a file path in the proxy, else system roots; always verified); `MUTUAL`, `credentialName`, `subjectAltNames`, `insecureSkipVerify` reported, not applied ([egress.md](egress.md))",
		},
		{
			Feature: "DestinationRule `portLevelSettings`",
			Status:  Supported,
			Notes:   "load balancer, connection pool, outlier detection per port",
		},
		{
			Feature: "DestinationRule `tunnel`, `proxyProtocol`, `retryBudget`",
			Status:  NotYet,
			Notes:   "ignored (reported)",
		},
		{
			Feature:   "DestinationRule `workloadSelector`",
			Status:    NotYet,
			Qualifier: "(sidecar-only in Istio)",
			Notes:     "ignored (reported)",
		},
		{
			Feature: "DestinationRule `exportTo`",
			Status:  NotYet,
			Notes:   "a restriction is reported; the DestinationRule applies to every namespace",
		},
		{
			Feature: "HTTPRoute (GAMMA, `parentRefs` a Service): path Exact/PathPrefix/RegularExpression, headers, queryParams, method, weighted `backendRefs`, filters RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror, `timeouts`, `retry`",
			Status:  Supported,
			Notes:   "an HTTPRoute takes precedence over a VirtualService for the same Service",
		},
		{
			Feature: "HTTPRoute: other filters (ExtensionRef, CORS), backend filters",
			Status:  Partial,
			Notes:   "the rule answers 500 / the filter is ignored (reported)",
		},
		{
			Feature: "HTTPRoute: consumer routes (parent Service in another namespace), cross-namespace `backendRefs` (ReferenceGrant)",
			Status:  NotYet,
			Notes:   "ignored (reported)",
		},
		{
			Feature: "HTTPRoute with a Gateway parent (ingress)",
			Status:  Partial,
			Notes:   "Gateways of class `weft`, HTTP listeners; the listeners' `attachedRoutes` are not counted yet (always 0)",
		},
		{
			Feature: "GRPCRoute",
			Status:  NotYet,
			Notes:   "CRD installed, not translated: each parent (Service, or Gateway of class `weft`) gets `Accepted=False` (`UnsupportedValue`). gRPC through a waypoint works with VirtualService/HTTPRoute on the HTTP/2 port",
		},
		{
			Feature: "TCPRoute, TLSRoute",
			Status:  NotYet,
			Notes:   "not installed by `weft-base`, not translated",
		},
		{
			Feature: "proxyless gRPC (`xds:///` clients)",
			Status:  Partial,
			Notes:   "same translation served to node IDs `grpc~...`; tested with grpc-go; load assignments lack the locality grpc-go requires (see [waypoints.md](waypoints.md#proxyless-grpc))",
		},
	},
}
