package compat

var traffic = Section{
	Title: "Traffic management (waypoints)",
	Entries: []Entry{
		{
			Feature: "VirtualService `http` match: `uri` exact/prefix/regex, `headers` exact/prefix/regex/present, `withoutHeaders`, `method`, `authority`, `scheme`, `queryParams`, `port`, `ignoreUriCase`",
			Status:  Supported,
			Notes:   "regexes are RE2",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        regex: "/reviews/[0-9]+"
      headers:
        end-user:
          exact: jason
      withoutHeaders:
        x-test:
          prefix: a
      method:
        exact: GET
      queryParams:
        v:
          exact: "2"
      port: 9080
      ignoreUriCase: true
    route:
    - destination:
        host: reviews
`)},
		},
		{
			Feature: "VirtualService `http` match: `sourceNamespace`",
			Status:  Partial,
			Notes:   "at waypoints: matches the namespace of the client's verified HBONE identity (the SPIFFE ID AuthorizationPolicy trusts; headers such as `x-forwarded-client-cert` or `baggage` are never read), rendered as a route `filter_state` match on `io.istio.peer_principal`; a client without a mesh identity never matches. Istio's waypoints compare it with the waypoint's own namespace instead. At a Gateway the match never applies (reported; Istio documents the field for the mesh only), nor for proxyless gRPC clients (their routes leave it out: gRPC cannot evaluate a peer match); a value that is not a namespace name is reported ([waypoints.md](waypoints.md#source-namespace))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceNamespace: default
    route:
    - destination:
        host: reviews
`)},
		},
		{
			Feature: "VirtualService `http` match: `sourceLabels`",
			Status:  NotYet,
			Notes:   "the match never applies (reported): a waypoint knows its client's identity, not its pod labels (the workload index it receives carries none, and labels sent in headers could be forged)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceLabels:
        app: productpage
    route:
    - destination:
        host: reviews
`, "sourceLabels")},
		},
		{
			Feature: "VirtualService `http` route: subsets, weights, `redirect`, `directResponse`, `rewrite` (`uri`, `uriRegexRewrite`, `authority`), `timeout`, `retries` (`attempts`, `perTryTimeout`, `retryOn`), `fault` delay/abort with percentage, `mirror`/`mirrors` + percentage, `headers` set/add/remove (also per destination), `corsPolicy`",
			Status:  Supported,
			Notes:   "Bookinfo's tutorial files run unchanged (e2e `TestWaypointBookinfo`). `retryOn` conditions acted on: `5xx`, `gateway-error`, `reset`, `connect-failure`, `retriable-4xx`, `refused-stream`, `retriable-status-codes`, status codes, and gRPC `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`; `retriable-headers`, `reset-before-request`, `envoy-ratelimited`, `http3-post-connect-failure` are dropped (reported), and a `retryOn` left empty keeps the default conditions. Reported: negative `attempts` (no retries), `attempts: 0` with other retry settings, negative `timeout`/`perTryTimeout` (ignored), `fault.delay.fixedDelay` not positive (no delay), abort `httpStatus` outside 200-599 (no abort), fault and mirror percentages outside 0-100 (clamped), negative weights or weights not adding up to 100 (VirtualService ignored)",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,reset,retriable-status-codes,503
    fault:
      abort:
        httpStatus: 503
        percentage:
          value: 10
    mirror:
      host: reviews
    mirrorPercentage:
      value: 50
    headers:
      request:
        set:
          x-weft: "1"
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
    rewrite:
      uri: /
    route:
    - destination:
        host: reviews
      weight: 100
      headers:
        response:
          remove: [x-internal]
`),
				reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - retries:
      attempts: 3
      retryOn: 5xx,retriable-headers
    route:
    - destination:
        host: reviews
`, "retriable-headers")},
		},
		{
			Feature: "VirtualService `redirect.derivePort: FROM_REQUEST_PORT`",
			Status:  Supported,
			Notes:   "as istiod: the redirect names the port the route is made for (the service port on a waypoint, the Gateway server's port on an ingress gateway)",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - redirect:
      uri: /v2
      derivePort: FROM_REQUEST_PORT
`)},
		},
		{
			Feature: "VirtualService `delegate`",
			Status:  Supported,
			Notes: "on waypoints and gateways, merged as istiod merges: the delegate's routes replace the delegating route, their matches narrowed by the root's (a match not narrower than any root match: route dropped, reported) and the root's rewrite, timeout, retries, fault, mirrors, CORS and headers inherited; " +
				"one level (nested delegation reported); the delegate's short hosts are of its own namespace; a missing delegate, or one with hosts, reported and the route dropped; `exportTo` of the delegate not checked ([waypoints.md](waypoints.md#delegation))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-delegate
  namespace: default
spec:
  http:
  - route:
    - destination: {host: reviews}
`), reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - delegate:
      name: reviews-delegate
`, "spec.http[0].delegate: VirtualService default/reviews-delegate not found")},
		},
		{
			Feature: "VirtualService `tcp`",
			Status:  Partial,
			Notes:   "routes by `match.port` with weights; other match fields never apply (reported); `tcp` routes for an HTTP port are ignored, as in Istio (reported)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-tcp
  namespace: default
spec:
  hosts: [reviews]
  tcp:
  - route:
    - destination:
        host: reviews
`, "tcp and tls routes apply to TCP ports only"), reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [db]
  tcp:
  - match:
    - port: 3306
      sourceLabels:
        app: productpage
    route:
    - destination:
        host: db
`, "spec.tcp[0].match[0]: only port and gateways are supported"),
				clean(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: db
  namespace: default
spec:
  hosts: [db]
  tcp:
  - match:
    - port: 3306
    route:
    - destination:
        host: db
      weight: 90
    - destination:
        host: db
      weight: 10
`)},
		},
		{
			Feature: "VirtualService `tls` (waypoints)",
			Status:  Partial,
			Notes:   "on a TCP service port (protocol TCP, TLS or HTTPS, or a port only `tcp`/`tls` routes address): routes by `match.sniHosts` (names, `*.<domain>`) and `match.port` with weights; the waypoint reads the ClientHello without terminating TLS and forwards it unchanged; other SNI, and connections that are not TLS, take the port's `tcp` route, else the service. Reported, never applying: `sniHosts: [\"*\"]` (a tcp route), `destinationSubnets`, `sourceLabels`, `sourceNamespace`; `tls` routes on an HTTP port are ignored (reported) ([waypoints.md](waypoints.md#tls-routes))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: db
  namespace: default
spec:
  hosts: [db]
  tls:
  - match:
    - port: 3306
      sniHosts: [db.example.com, "*.db.example.com"]
    route:
    - destination:
        host: db
      weight: 90
    - destination:
        host: db
      weight: 10
`), reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: db
  namespace: default
spec:
  hosts: [db]
  tls:
  - match:
    - sniHosts: [db.example.com]
      sourceNamespace: default
    route:
    - destination:
        host: db
`, "only sniHosts, port and gateways are supported"), reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  tls:
  - match:
    - sniHosts: [reviews]
    route:
    - destination:
        host: reviews
`, "tcp and tls routes apply to TCP ports only")},
		},
		{
			Feature: "VirtualService wildcard hosts, hosts that are neither Services nor ServiceEntry hosts",
			Status:  NotYet,
			Notes:   "ignored (reported)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: ["*.example.com"]
  http:
  - route:
    - destination:
        host: reviews
`, "*.example.com")},
		},
		{
			Feature: "VirtualService `gateways`",
			Status:  Supported,
			Notes:   "`mesh` (or none) for waypoints, Istio Gateways for ingress gateways ([ingress.md](ingress.md))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  gateways: [mesh]
  http:
  - route:
    - destination:
        host: reviews
`)},
		},
		{
			Feature: "VirtualService `exportTo`",
			Status:  NotYet,
			Notes:   "a restriction is reported (status, `weftctl analyze`); the VirtualService applies to every namespace",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  exportTo: ["."]
  http:
  - route:
    - destination:
        host: reviews
`, "exportTo")},
		},
		{
			Feature: "two VirtualServices for one host",
			Status:  Partial,
			Notes:   "Istio merges them; Weft uses the oldest and reports the other",
		},
		{
			Feature: "DestinationRule `subsets` with per-subset `trafficPolicy`",
			Status:  Supported,
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
    trafficPolicy:
      loadBalancer:
        simple: LEAST_REQUEST
`)},
		},
		{
			Feature: "DestinationRule `loadBalancer.simple`: `ROUND_ROBIN`, `LEAST_REQUEST` (also the deprecated `LEAST_CONN`), `RANDOM`",
			Status:  Supported,
			Notes:   "`PASSTHROUGH` and unknown values fall back to ROUND_ROBIN (reported)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: PASSTHROUGH
`, "PASSTHROUGH")},
		},
		{
			Feature: "DestinationRule `loadBalancer.consistentHash`: `httpHeaderName`, `httpCookie`, `httpQueryParameterName`, `useSourceIp`",
			Status:  Supported,
			Notes:   "not hashed (reported): an empty or invalid `httpHeaderName`, an empty `httpCookie.name` or `httpQueryParameterName`, `useSourceIp: false`, no key; a negative `httpCookie.ttl` is ignored (no cookie generated); `maglev` uses a ring hash and `minimumRingSize` is ignored (Envoy's default ring, reported)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpQueryParameterName: ""
`, "httpQueryParameterName: empty"),
				clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpQueryParameterName: user
`),
				clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
`),
				reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          ttl: 0s
        maglev:
          tableSize: 65537
`, "maglev")},
		},
		{
			Feature: "DestinationRule `loadBalancer.localityLbSetting`: `distribute`, `failover`, `failoverPriority`, `enabled`",
			Status:  Partial,
			Notes:   "waypoints apply istiod's priorities and weights relative to the waypoint pod's locality; with `outlierDetection`, Istio's default proximity failover applies without a setting; reported and not applied: `failover`/`failoverPriority` without `outlierDetection` (as in Istio), a waypoint whose replicas run in different localities, ingress gateways; proxyless gRPC gets no priorities; Envoy's panic mode is not implemented (see [waypoints.md](waypoints.md#locality-load-balancing))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover:
        - {from: r1, to: r2}
    outlierDetection:
      consecutive5xxErrors: 3
`),
				reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        failover:
        - {from: r1, to: r2}
`, "need outlierDetection")},
		},
		{
			Feature: "DestinationRule `loadBalancer` warmup, `zoneAwareLbSetting`",
			Status:  NotYet,
			Notes:   "ignored (reported)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmup:
        duration: 10s
`, "zone-aware and warmup settings are not supported")},
		},
		{
			Feature: "DestinationRule `connectionPool`",
			Status:  Partial,
			Notes:   "`tcp.maxConnections`, `tcp.connectTimeout`, `http.http1MaxPendingRequests`, `http.http2MaxRequests`, `http.maxRequestsPerConnection`; a negative limit means no limit and a `connectTimeout` under 1ms the default 10s (reported; a limit of 0 is the same as unset, no limit, as in Istio); the rest (`idleTimeout`, `maxRetries`, `tcpKeepalive`, `h2UpgradePolicy`, `maxConcurrentStreams`, `http2KeepAlive`, ...) is ignored and reported on the DestinationRule's status",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        idleTimeout: 30s
`, "idleTimeout"),
				clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 1s
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 100
        maxRequestsPerConnection: 1
`)},
		},
		{
			Feature: "DestinationRule `outlierDetection`",
			Status:  Partial,
			Notes:   "`consecutive5xxErrors`, `interval`, `baseEjectionTime`, `maxEjectionPercent`; an `interval` or `baseEjectionTime` under 1ms and a `maxEjectionPercent` outside 0-100 are ignored for Envoy's defaults (10s, 30s, 10%; reported); the rest ignored (reported)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
      consecutiveGatewayErrors: 3
`, "spec.trafficPolicy.outlierDetection: only consecutive5xxErrors"),
				clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
`)},
		},
		{
			Feature: "DestinationRule `tls`",
			Status:  Partial,
			Notes:   "`ISTIO_MUTUAL` and `DISABLE` accepted (the mesh always uses HBONE mTLS); `SIMPLE` and `MUTUAL` originate TLS on HTTP routes of waypoints and gateways: `sni` (default the host), the server verified against `credentialName`'s CA bundle (`<credentialName>-cacert`, or key `ca.crt`), else `caCertificates` (a file in the proxy), else the system roots, for `subjectAltNames` (exact) or else the SNI name; `MUTUAL` presents the certificate of Secret `credentialName` (read by gateways from their own namespace; a waypoint has no Secret access and fails such connections) or the files `clientCertificate`/`privateKey`. Reported: `insecureSkipVerify` (always verified), `caCrl`, `MUTUAL` without a certificate ([egress.md](egress.md#mutual-tls-origination))",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: MUTUAL
`, "needs clientCertificate and privateKey"),
				clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: SIMPLE
      sni: reviews.example.com
`),
				reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: SIMPLE
      insecureSkipVerify: true
`, "insecureSkipVerify"),
				clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: MUTUAL
      credentialName: client-credential
      subjectAltNames:
      - reviews.example.com
`)},
		},
		{
			Feature: "DestinationRule `portLevelSettings`",
			Status:  Supported,
			Notes:   "load balancer, connection pool, outlier detection per port",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 9080
      loadBalancer:
        simple: RANDOM
      connectionPool:
        http:
          http2MaxRequests: 100
      outlierDetection:
        consecutive5xxErrors: 5
`)},
		},
		{
			Feature: "DestinationRule `tunnel`, `proxyProtocol`, `retryBudget`",
			Status:  NotYet,
			Notes:   "ignored (reported)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    proxyProtocol:
      version: V1
`, "proxyProtocol"),
				reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    retryBudget:
      percent: 20
`, "retryBudget")},
		},
		{
			Feature:   "DestinationRule `workloadSelector`",
			Status:    NotYet,
			Qualifier: "(sidecar-only in Istio)",
			Notes:     "ignored (reported)",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  workloadSelector:
    matchLabels:
      app: productpage
`, "workloadSelector")},
		},
		{
			Feature: "DestinationRule `exportTo`",
			Status:  NotYet,
			Notes:   "a restriction is reported; the DestinationRule applies to every namespace",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  exportTo: ["."]
`, "exportTo")},
		},
		{
			Feature: "HTTPRoute (GAMMA, `parentRefs` a Service): path Exact/PathPrefix/RegularExpression, headers, queryParams, method, weighted `backendRefs`, filters RequestHeaderModifier, ResponseHeaderModifier (also per backend), RequestRedirect, URLRewrite, RequestMirror, `timeouts`, `retry`",
			Status:  Supported,
			Notes:   "an HTTPRoute takes precedence over a VirtualService for the same Service; producer routes only (a route in another namespace than its Service is ignored, reported); upstream conformance MESH-HTTP core and extended pass, with a waypoint ([conformance/README.md](conformance/README.md))",
			Probes: []*Probe{clean(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /reviews
      headers:
      - name: end-user
        value: jason
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-weft
          value: "1"
    backendRefs:
    - name: reviews
      port: 9080
      weight: 100
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          remove: [x-internal]
    timeouts:
      request: 10s
`)},
		},
		{
			Feature: "HTTPRoute: other filters (ExtensionRef, CORS), other backend filters",
			Status:  Partial,
			Notes:   "the rule answers 500 / the filter is ignored (reported)",
			Probes: []*Probe{reported(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - filters:
    - type: ExtensionRef
      extensionRef:
        group: example.com
        kind: Filter
        name: f
    backendRefs:
    - name: reviews
      port: 9080
`, "ExtensionRef"),
				reported(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - backendRefs:
    - name: reviews
      port: 9080
      filters:
      - type: RequestMirror
        requestMirror:
          backendRef:
            name: reviews
            port: 9080
`, "backend filter RequestMirror is not supported")},
		},
		{
			Feature: "HTTPRoute: cross-namespace `backendRefs` (ReferenceGrant)",
			Status:  Supported,
			Notes:   "a backendRef (or RequestMirror backendRef) to a Service of another namespace is routed when a `ReferenceGrant` (`gateway.networking.k8s.io/v1beta1`) there allows HTTPRoutes of the route's namespace; otherwise it is left out (reported) and the route's `ResolvedRefs` is False (`RefNotPermitted`)",
			Probes: []*Probe{reported(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - backendRefs:
    - name: ratings
      namespace: other
      port: 9080
`, "no ReferenceGrant in namespace other")},
		},
		{
			Feature: "HTTPRoute: consumer routes (parent Service in another namespace)",
			Status:  NotYet,
			Notes:   "ignored (reported)",
			Probes: []*Probe{reported(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: weft-system
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    namespace: default
    port: 9080
  rules:
  - backendRefs:
    - name: reviews
      namespace: default
      port: 9080
`, "parentRefs[0]")},
		},
		{
			Feature: "HTTPRoute with a Gateway parent (ingress)",
			Status:  Partial,
			Notes:   "Gateways of class `weft`, HTTP and HTTPS listeners, counted in the listeners' `attachedRoutes`; a parentRef that attaches to no listener gets `Accepted=False` with `NoMatchingParent` (no listener of that `sectionName`/`port`), `NotAllowedByListeners` (`allowedRoutes` namespaces or kinds, or a listener protocol that serves no HTTPRoute) or `NoMatchingListenerHostname`",
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
			Feature:   "Local rate limiting: EnvoyFilter with `envoy.filters.http.local_ratelimit` (Istio's rate-limit task), `targetRefs` to the waypoint",
			Status:    Supported,
			Qualifier: "(waypoint, ingress gateway)",
			Notes:     "`HTTP_FILTER` `INSERT_BEFORE`/`INSERT_AFTER`/`INSERT_FIRST` of the filter (`TypedStruct` or `@type`), `ROUTE_CONFIGURATION`/`VIRTUAL_HOST`/`HTTP_ROUTE` `MERGE` of its `typed_per_filter_config`; token bucket per filter, virtual host or route, shared by all connections of a proxy replica; `filter_enabled`/`filter_enforced` (`default_value`; runtime keys not read), `status` (default 429), `response_headers_to_add`, `request_headers_to_add_when_not_enforced`, `enable_x_ratelimit_headers: DRAFT_VERSION_03`, `enable_retry_after_header`, `rate_limited_as_resource_exhausted`. Not supported (the patch is reported and not applied): `descriptors`, `rate_limits`, `local_rate_limit_per_downstream_connection`, `local_cluster_rate_limit`. Buckets start full again when the proxy gets a new configuration of the chain ([rate-limiting.md](rate-limiting.md))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: reviews-ratelimit
  namespace: default
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
  - applyTo: HTTP_ROUTE
    match:
      routeConfiguration:
        vhost:
          name: reviews.default.svc.cluster.local
          route:
            action: ANY
    patch:
      operation: MERGE
      value:
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 1s}
              filter_enabled: {runtime_key: local_rate_limit_enabled, default_value: {numerator: 100, denominator: HUNDRED}}
              filter_enforced: {runtime_key: local_rate_limit_enforced, default_value: {numerator: 100, denominator: HUNDRED}}
`),
				reported(`
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: per-connection
  namespace: default
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: rl
          token_bucket: {max_tokens: 10, fill_interval: 1s}
          local_rate_limit_per_downstream_connection: true
`, "local_rate_limit_per_downstream_connection is not supported")},
		},
		{
			Feature:   "Global rate limiting: EnvoyFilter with `envoy.filters.http.ratelimit` and `rate_limits` actions (rate limit service)",
			Status:    Partial,
			Qualifier: "(waypoint, ingress gateway)",
			Notes: "Istio's task's EnvoyFilters: `HTTP_FILTER` insert of the filter, whose `rate_limit_service` cluster `outbound|<port>||<host>` (a mesh service) the proxy reaches as any mesh destination, and `VIRTUAL_HOST` `MERGE` of `rate_limits`. " +
				"`ShouldRateLimit` over gRPC (`envoy.service.ratelimit.v3`); actions `request_headers` (`skip_if_absent`), `generic_key`, `header_value_match`, `remote_address`, `destination_cluster`; " +
				"`OVER_LIMIT`: 429 (`rate_limited_status`) with `x-envoy-ratelimited: true`; service error or `timeout` (default 20 ms): allowed, or `status_on_error` (500) with `failure_mode_deny`; `filter_enabled`/`filter_enforced`, `response_headers_to_add`, `rate_limited_as_resource_exhausted`. " +
				"Not supported (the patch is reported and not applied): `enable_x_ratelimit_headers`, `enable_retry_after_header`, `stage` other than 0, `request_type` other than `both`, `failure_mode_deny_percent`, the filter's own `rate_limits`, `RateLimitPerRoute`, other actions (`query_parameters`, `source_cluster`, metadata, ...), `rate_limits` on routes (`HTTP_ROUTE`), a service that is not in the mesh, the `CLUSTER` patch of older versions of the task ([rate-limiting.md](rate-limiting.md#global-rate-limiting))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-ratelimit
  namespace: default
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter:
              name: envoy.filters.http.router
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: ratelimit
          failure_mode_deny: true
          timeout: 10s
          rate_limit_service:
            grpc_service:
              envoy_grpc:
                cluster_name: outbound|9080||reviews.default.svc.cluster.local
            transport_api_version: V3
  - applyTo: VIRTUAL_HOST
    match:
      routeConfiguration:
        vhost:
          name: ""
          route:
            action: ANY
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions:
          - request_headers:
              header_name: ":path"
              descriptor_key: "PATH"
`), reported(`
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-ratelimit
  namespace: default
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      listener:
        filterChain:
          filter:
            name: envoy.http_connection_manager
            subFilter:
              name: envoy.router
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: ratelimit
          enable_x_ratelimit_headers: DRAFT_VERSION_03
          rate_limit_service:
            grpc_service:
              envoy_grpc:
                cluster_name: outbound|9080||reviews.default.svc.cluster.local
            transport_api_version: V3
`, "enable_x_ratelimit_headers is not supported")},
		},
		{
			Feature: "proxyless gRPC (`xds:///` clients)",
			Status:  Partial,
			Notes:   "same translation served to node IDs `grpc~...`; tested with grpc-go; load assignments carry each endpoint's locality and weight but no locality priorities (`localityLbSetting` failover does not apply to gRPC clients) (see [waypoints.md](waypoints.md#proxyless-grpc))",
		},
	},
}
