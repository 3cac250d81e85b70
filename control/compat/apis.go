package compat

var otherAPIs = Section{
	Title: "Ingress, egress and other Istio APIs",
	Entries: []Entry{
		{
			Feature: "Istio `Gateway` (`networking.istio.io`) with `selector`, HTTP servers",
			Status:  Supported,
			Notes:   "`charts/gateway`; VirtualServices bound with `gateways:` ([ingress.md](ingress.md))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts: ["*"]
`)},
		},
		{
			Feature: "Gateway server HTTPS, `tls.mode: SIMPLE` with `credentialName`",
			Status:  Supported,
			Notes:   "Secret (`kubernetes.io/tls` or generic `cert`/`key`) read by the gateway from its own namespace, renewals picked up; SNI by `hosts`",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts: [bookinfo.example.com]
    tls:
      mode: SIMPLE
      credentialName: bookinfo-cert
`)},
		},
		{
			Feature: "Gateway server TLS, `tls.mode: PASSTHROUGH` + VirtualService `tls` routes by `sniHosts`",
			Status:  Supported,
			Notes:   "forwarded over HBONE by SNI; unknown SNI closed",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    hosts: [bookinfo.example.com]
    tls:
      mode: PASSTHROUGH
`)},
		},
		{
			Feature: "Gateway server HTTPS, `tls.mode: MUTUAL` and `OPTIONAL_MUTUAL` with `credentialName`, `subjectAltNames`",
			Status:  Supported,
			Notes: "client CA from the Secret `<credentialName>-cacert` (key `ca.crt` or `cacert`), else key `ca.crt` of the credential's Secret, as Istio's gateways; no CA bundle: handshakes refused; " +
				"`subjectAltNames` exact DNS or URI SANs; the client's own `X-Forwarded-Client-Cert` dropped, set from the verified certificate (Istio's gateway default `SANITIZE_SET`); " +
				"`caCertificates`/`caCrl` file paths and `verifyCertificateSpki`/`verifyCertificateHash` reported, server ignored ([ingress.md](ingress.md#mutual-tls-tlsmode-mutual))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts: [bookinfo.example.com]
    tls:
      mode: MUTUAL
      credentialName: bookinfo-cert
      subjectAltNames: [client.example.com]
`)},
		},
		{
			Feature: "Gateway server TCP (also MONGO, REDIS, MYSQL) + VirtualService `tcp` routes",
			Status:  Supported,
			Notes: "the first tcp route that applies (match `port`, `gateways`) among the bound VirtualServices, oldest first, weighted destinations and subsets; later ones reported as shadowed; " +
				"source matches (`sourceLabels`, `sourceNamespace`, `sourceSubnet`, `destinationSubnets`) reported, never applied; `tls` on a TCP server reported, server ignored ([ingress.md](ingress.md#tcp-servers))",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 31400
      name: tcp
      protocol: TCP
    hosts: ["*"]
`)},
		},
		{
			Feature: "Gateway `tls.mode` ISTIO_MUTUAL, AUTO_PASSTHROUGH",
			Status:  NotYet,
			Notes:   "reported, server ignored",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    hosts: ["*"]
    tls:
      mode: AUTO_PASSTHROUGH
`, "spec.servers[0].tls.mode: only PASSTHROUGH"),
				reported(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts: [bookinfo.example.com]
    tls:
      mode: ISTIO_MUTUAL
`, "ISTIO_MUTUAL")},
		},
		{
			Feature: "Gateway HTTP server `tls.httpsRedirect`",
			Status:  Supported,
			Notes:   "every host of the server answers `301` to `https://` with the same host and path, whether or not a VirtualService is bound to it (Istio's `require_tls: ALL`); other `tls` fields of an HTTP server are ignored (reported)",
			Probes: []*Probe{clean(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts: ["*"]
    tls:
      httpsRedirect: true
`),
				reported(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts: ["*"]
    tls:
      httpsRedirect: true
      minProtocolVersion: TLSV1_3
`, "spec.servers[0].tls")},
		},
		{
			Feature: "Gateway API `Gateway`/`HTTPRoute` for ingress (GatewayClass `weft`)",
			Status:  Partial,
			Notes: "HTTP and HTTPS listeners. Each Gateway gets a gateway of its own, as with Istio's deployment controller: ServiceAccount, Deployment and LoadBalancer Service `<name>-weft` in its namespace, owned by it, with its `spec.infrastructure` labels and annotations, the listeners' ports, only its own configuration, and never adopting objects it did not make (`spec.addresses` and Istio's service-type annotation not read); with the annotation `weft.io/gateway-selector` it is served by the pods that selects instead (charts/gateway's `istio=ingress`, shared). `allowedRoutes.namespaces` `Same`, `All` and `Selector`; Accepted/Programmed, `status.addresses` (the gateway Service's) and `status.listeners` (Accepted, Programmed, ResolvedRefs, Conflicted, attachedRoutes) written. " +
				"HTTPS: `tls.mode: Terminate` with one `certificateRefs` Secret (`kubernetes.io/tls`), which must be in a namespace the gateway reads Secrets of (a deployed gateway: the Gateway's and those a ReferenceGrant lets its certificateRefs point to, through RoleBindings weft-control makes; the chart's: its own and `credentialNamespaces`), with a `ReferenceGrant` there when the Gateway is elsewhere; `ResolvedRefs=False` with `RefNotPermitted` or `InvalidCertificateRef` (missing, malformed, not a Secret, outside those namespaces) and the listener is not served; Passthrough, `tls.options`, several certificateRefs and `spec.tls.frontend` are `UnsupportedValue`; HTTP and HTTPS on one port are `Conflicted` (`ProtocolConflict`). " +
				"TLS/TCP/UDP listeners not yet (`UnsupportedProtocol`). A Gateway with a listener not served stays `Accepted` (`ListenersNotValid`) and is `Programmed=False`, naming it ([ingress.md](ingress.md#gateway-api-gatewayclass-weft)); upstream conformance suite results in [conformance/README.md](conformance/README.md)",
			Probes: []*Probe{reported(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  gatewayClassName: weft
  listeners:
  - name: tls
    port: 443
    protocol: TLS
    tls:
      mode: Passthrough
`, "spec.listeners[0].protocol: TLS is not supported"),
				reported(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  gatewayClassName: weft
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs:
      - name: cert
        namespace: weft-ingress
`, "no ReferenceGrant in namespace weft-ingress"),
				clean(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  gatewayClassName: weft
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: bookinfo.example.com
    tls:
      mode: Terminate
      certificateRefs:
      - name: bookinfo-credential
`),
				clean(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  gatewayClassName: weft
  listeners:
  - name: http
    port: 80
    protocol: HTTP
`)},
		},
		{
			Feature: "ServiceEntry",
			Status:  Partial,
			Notes:   "hosts become Services (VIPs from `addresses`, else auto-allocated from 240.240.0.0/16 into `status.addresses` as istiod does; ports, `istio.io/use-waypoint`), endpoints become workloads outside the mesh; `STATIC`, `NONE`, `DNS` and `DNS_ROUND_ROBIN`: endpoint names, or the host itself without endpoints, are resolved through the cluster's DNS (TTL honoured, re-resolved in the background) by waypoints and egress gateways as Envoy's `STRICT_DNS`/`LOGICAL_DNS` clusters, and by node agents as ztunnel resolves `Workload.hostname`; the node agents' DNS proxy (chart `ambient.dnsCapture`, off by default) resolves hosts to their VIPs; wildcard hosts, CIDR addresses and `workloadSelector` reported ([egress.md](egress.md))",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: default
spec:
  hosts: ["*.example.com"]
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: NONE
`, "*.example.com"),
				clean(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: default
spec:
  hosts: [api.example.com]
  addresses: ["240.240.0.1"]
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: STATIC
  endpoints:
  - address: 203.0.113.10
`),
				reported(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: default
spec:
  hosts: [api.example.com]
  addresses: ["240.240.0.0/16"]
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: NONE
`, "240.240.0.0/16"),
				reported(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: default
spec:
  hosts: [api.example.com]
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: STATIC
  workloadSelector:
    labels:
      app: api
`, "workloadSelector"),
				clean(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: default
spec:
  hosts: [api.example.com]
  addresses: ["240.240.0.1"]
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: DNS
  endpoints:
  - address: api.internal.example.com
`),
				clean(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: cnn
  namespace: default
spec:
  hosts: [edition.cnn.com]
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
`),
				clean(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: cnn
  namespace: default
  labels:
    istio.io/use-waypoint: none
spec:
  hosts: [edition.cnn.com]
  ports:
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
`),
				reported(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: wildcard
  namespace: default
spec:
  hosts: ["*.wikipedia.org"]
  ports:
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
`, "*.wikipedia.org")},
		},
		{
			Feature: "Egress gateway (`charts/gateway` with `labels.istio=egressgateway`), VirtualService `gateways: [mesh, <gateway>]`, DestinationRule TLS origination",
			Status:  Supported,
			Notes:   "Istio's egress-gateway-with-TLS-origination shape; the mesh-side route needs a waypoint for the ServiceEntry, as in Istio ambient ([egress.md](egress.md))",
		},
		{
			Feature: "WorkloadEntry, WorkloadGroup",
			Status:  NotYet,
			Notes:   "`WeftAccepted=False` (`Unsupported`); WorkloadEntry's CRD is installed, WorkloadGroup's is not",
		},
		{
			Feature: "Sidecar",
			Status:  NotApplicable,
			Notes:   "sidecar-only API; `WeftAccepted=False` (`Unsupported`) if its CRD is installed by another chart",
		},
		{
			Feature: "EnvoyFilter",
			Status:  Partial,
			Notes:   "waypoints and gateways are not Envoy: only the patches of Istio's rate-limit task apply (local rate limiting, see Traffic management), with `targetRefs` to a waypoint or ingress Gateway or a `workloadSelector` of ingress gateway pods. Every other patch (`applyTo`, operation, filter, match or value field) is reported in `WeftAccepted=False` (`PartiallyInvalid`) and not applied; an EnvoyFilter selecting sidecars (no `targetRefs`, a `workloadSelector` of application pods) is reported and has no effect",
			Probes: []*Probe{reported(`
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: lua
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
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
`, "is not supported"),
				reported(`
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: sidecar
  namespace: default
spec:
  workloadSelector:
    labels:
      app: reviews
  configPatches:
  - applyTo: CLUSTER
    patch:
      operation: MERGE
      value: {}
`, "applyTo CLUSTER is not supported")},
		},
		{
			Feature: "WasmPlugin",
			Status:  NotYet,
			Notes:   "CRD not installed; `WeftAccepted=False` (`Unsupported`) if another chart installs it",
		},
		{
			Feature:   "Telemetry API (`telemetry.istio.io`): `accessLogging`",
			Status:    Supported,
			Qualifier: "(waypoint, ingress gateway)",
			Notes:     "root namespace, namespace, and `selector` or `targetRefs` (kind `Gateway`) levels; the most specific that sets it wins; providers `envoy` and `envoyFileAccessLog` to `/dev/stdout` (the JSON access log), `disabled`. Reported and not applied: other providers; `filter` (every request is logged) and `match` (all traffic) are reported. Node agents keep their access log ([guides/telemetry.md](guides/telemetry.md))",
			Probes: []*Probe{clean(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: no-logs
  namespace: default
spec:
  accessLogging:
  - providers:
    - name: envoy
    disabled: true
`), reported(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: errors-only
  namespace: default
spec:
  accessLogging:
  - filter:
      expression: response.code >= 400
`, "filter: not supported")},
		},
		{
			Feature:   "Telemetry API: `tracing`",
			Status:    Supported,
			Qualifier: "(waypoint, ingress gateway)",
			Notes:     "`randomSamplingPercentage` (Istio's 1% when a level enables tracing without it; requests that carry a sampling decision keep it), `disableSpanReporting`, `customTags` (literal, environment, header), one extension provider: `opentelemetry` (OTLP over gRPC, or HTTP with `http`) or `zipkin` (Zipkin v2 JSON posted to `http://<service>:<port><path>`, `path` default `/api/v2/spans`; 128-bit trace ids unless `enable64bitTraceId`; spans named after the proxy, `<gateway>.<namespace>`); without a provider, spans go to `waypoint.tracing.otlpEndpoint`. Merged field by field from the root namespace to the proxy. Both providers' spans propagate W3C and B3 (`traceContextOption` makes no difference). Reported: other provider types (spans not reported), `maxTagLength`, zipkin `timeout` and `headers`, `useRequestIdForTraceSampling`, `enableIstioTags`, `disableContextPropagation`, `match`",
			Probes: []*Probe{clean(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: weft-system
spec:
  tracing:
  - providers:
    - name: otel
    randomSamplingPercentage: 100
    customTags:
      cluster:
        literal:
          value: east
`), clean(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: zipkin
  namespace: default
spec:
  tracing:
  - providers:
    - name: zipkin
`), reported(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: ext-authz-tracer
  namespace: default
spec:
  tracing:
  - providers:
    - name: ext-authz-grpc
`, "neither an opentelemetry nor a zipkin provider")},
		},
		{
			Feature:   "Telemetry API: `metrics`",
			Status:    Supported,
			Qualifier: "(waypoint, ingress gateway)",
			Notes:     "overrides of the Istio standard metrics as istiod merges them from the root namespace to the proxy (a waypoint takes `SERVER` and an ingress gateway `CLIENT` overrides): `disabled` per metric or for all, `tagOverrides` `UPSERT` (a new tag or a standard one recomputed) and `REMOVE`. Tag values are CEL over the attributes `request.{host,method,path,url_path,scheme,protocol,headers,id,useragent}`, `response.{code,grpc_status}`, `source.address`, `destination.{address,port}`, `upstream.{address,port}`, `connection.mtls`, `xds.{cluster_name,route_name}`; an expression that fails for a request gives `unknown`. Providers: `prometheus` (or a prometheus extension provider); naming only others turns the metrics off. Reported and not applied: other providers, `customMetric`, `GRPC_REQUEST_MESSAGES`/`GRPC_RESPONSE_MESSAGES` (not reported by Weft), `reportingInterval`, invalid tag names and expressions. Node agents keep the standard labels, as ztunnel ([guides/telemetry.md](guides/telemetry.md#metric-overrides))",
			Probes: []*Probe{clean(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: no-request-count
  namespace: default
spec:
  metrics:
  - overrides:
    - match:
        metric: REQUEST_COUNT
      disabled: true
    - tagOverrides:
        request_host:
          value: request.host
        request_protocol:
          operation: REMOVE
`), reported(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: bad-tag
  namespace: default
spec:
  metrics:
  - overrides:
    - tagOverrides:
        peer:
          value: upstream_peer.app
`, "undeclared reference")},
		},
		{
			Feature: "ProxyConfig",
			Status:  NotYet,
			Notes:   "configuration is Helm values and flags; CRD not installed, `WeftAccepted=False` (`Unsupported`) if another chart installs it",
		},
		{
			Feature: "MeshConfig",
			Status:  Partial,
			Notes:   "not read from a ConfigMap; what Weft has of it is weft-control Helm values: `trustDomain`, `rootNamespace`, `meshConfig.pathNormalization`, `meshConfig.extensionProviders` (ext-authz, opentelemetry, zipkin, prometheus and envoyFileAccessLog providers)",
		},
	},
}
