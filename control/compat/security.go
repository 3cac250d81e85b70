package compat

var security = Section{
	Title: "Security",
	Entries: []Entry{
		{
			Feature: "mTLS between workloads, SPIFFE identities `spiffe://<td>/ns/<ns>/sa/<sa>`",
			Status:  Supported,
			Notes:   "HBONE on 15008, TLS 1.3; certificates from weft-control's CA (24 h, renewed at half-life)",
		},
		{
			Feature: "plug-in CA (`cacerts` Secret: `ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`)",
			Status:  Supported,
			Notes:   "read at start-up",
		},
		{
			Feature: "external CA, cert-manager istio-csr, SPIRE",
			Status:  NotYet,
		},
		{
			Feature: "PeerAuthentication STRICT, PERMISSIVE",
			Status:  Supported,
			Notes:   "enforced by the destination's node agent: STRICT refuses plaintext from outside the mesh",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: reviews
  namespace: default
spec:
  mtls:
    mode: STRICT
`)},
		},
		{
			Feature:   "PeerAuthentication DISABLE",
			Status:    Supported,
			Qualifier: "(as Istio ambient)",
			Notes:     "same as PERMISSIVE: an ambient node agent always accepts both",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: reviews
  namespace: default
spec:
  mtls:
    mode: DISABLE
`)},
		},
		{
			Feature: "PeerAuthentication UNSET, mesh / namespace / workload (selector) precedence",
			Status:  Supported,
			Notes:   "mesh-wide = root namespace (`rootNamespace`, default `weft-system`); the oldest policy wins at each level",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  mtls:
    mode: UNSET
`)},
		},
		{
			Feature: "PeerAuthentication `portLevelMtls`",
			Status:  Supported,
			Notes:   "needs a selector (as Istio); without one it is ignored and reported",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: reviews
  namespace: default
spec:
  portLevelMtls:
    9080:
      mode: DISABLE
`, "portLevelMtls"),
				clean(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  mtls:
    mode: STRICT
  portLevelMtls:
    9080:
      mode: PERMISSIVE
`)},
		},
		{
			Feature:   "PeerAuthentication with a selector in the root namespace",
			Status:    Partial,
			Qualifier: "(differs from Istio)",
			Notes:     "Weft applies it to the root namespace's own workloads (sidecar-mode behaviour); Istio ambient ignores it",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict-gateways
  namespace: weft-system
spec:
  selector:
    matchLabels:
      app: weft-gateway
  mtls:
    mode: STRICT
`)},
		},
		{
			Feature: "AuthorizationPolicy `ALLOW`, `DENY` at L4 (selector, namespace, mesh-wide)",
			Status:  Supported,
			Notes:   "node agent at the destination",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  action: DENY
  rules:
  - from:
    - source:
        namespaces: [attacker]
`)},
		},
		{
			Feature: "AuthorizationPolicy `ALLOW`, `DENY` at L7 (`targetRefs` to the waypoint Gateway or a Service)",
			Status:  Supported,
			Notes:   "waypoint; denied requests get `403 RBAC: access denied`",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: [GET]
        paths: ["/reviews/*"]
`),
				clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: waypoint
  namespace: default
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  action: DENY
  rules:
  - from:
    - source:
        notNamespaces: [default]
`)},
		},
		{
			Feature: "AuthorizationPolicy with `targetRefs` on a waypoint's TCP ports (`tcp*`, `tls`, `https`, `mysql`, `redis`, `mongo`, ... port names, `tcp` VirtualService routes)",
			Status:  Supported,
			Notes:   "waypoint, `envoy.filters.network.rbac` (DENY, then ALLOW) before `tcp_proxy`, decided before the stream is accepted: a denied client's HBONE CONNECT gets 403 and no byte reaches the backend; access log `connection_termination_details` `rbac_access_denied_matched_policy[...]`, metric `weft_waypoint_tcp_rbac_denied_total`. L4 attributes only: principals, namespaces, serviceAccounts, trustDomains, ports, `when` source.principal, source.namespace, destination.port",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: db
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: db
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-reviews"]
    to:
    - operation:
        ports: ["3306"]
`)},
		},
		{
			Feature:   "HTTP-only attributes (hosts, methods, paths, `request.headers`) of a policy applied to a TCP port",
			Status:    Supported,
			Qualifier: "(as Istio)",
			Notes:     "an ALLOW rule using one is dropped (matches nothing, so it may deny), a DENY rule applies without it (denies more); reported on the policy's `WeftAccepted` (`PartiallyInvalid`) and by `weftctl analyze` (`L7PolicyOnTCPPort`, warning)",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: db
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: db
  rules:
  - to:
    - operation:
        methods: [GET]
`, "methods")},
		},
		{
			Feature: "`targetRef` (singular, deprecated)",
			Status:  Supported,
			Notes:   "treated as one more `targetRefs` entry",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRef:
    kind: Service
    group: ""
    name: reviews
  rules:
  - to:
    - operation:
        methods: [GET]
`)},
		},
		{
			Feature:   "L7 policy with a `selector` on workloads that use a waypoint",
			Status:    NotYet,
			Qualifier: "(as Istio)",
			Notes:     "waypoints enforce `targetRefs` policies only; `weftctl analyze` warns (`L7PolicyWithSelector`)",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  rules:
  - to:
    - operation:
        methods: [GET]
`, "L7 attributes (methods)")},
		},
		{
			Feature: "`from.source`: `principals`, `notPrincipals`, `namespaces`, `notNamespaces`, `serviceAccounts`, `notServiceAccounts`",
			Status:  Supported,
			Notes:   "L4 and L7",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
        notNamespaces: [attacker]
        serviceAccounts: [default/bookinfo-productpage]
`)},
		},
		{
			Feature: "`from.source`: `ipBlocks`, `notIpBlocks`",
			Status:  Partial,
			Notes:   "L4 (node agent): supported. Ingress gateway: the downstream peer's address. Waypoint: not supported (an ALLOW rule using them is dropped, a DENY rule ignores them)",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - from:
    - source:
        ipBlocks: ["10.0.0.0/8"]
`, "ipBlocks"),
				clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  rules:
  - from:
    - source:
        ipBlocks: ["10.244.0.0/16"]
        notIpBlocks: ["10.244.9.0/24"]
`)},
		},
		{
			Feature: "`from.source`: `remoteIpBlocks`, `notRemoteIpBlocks`",
			Status:  Partial,
			Notes:   "ingress gateway: the client's address, which is the downstream peer's (no proxy in front is trusted: Istio's default `numTrustedProxies: 0`; `X-Forwarded-For` is not read). Treated as L7 at the node agent; not supported by waypoints",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  rules:
  - from:
    - source:
        remoteIpBlocks: ["10.0.0.0/8"]
`, "remoteIpBlocks")},
		},
		{
			Feature: "`from.source`: `trustDomains`, `notTrustDomains`",
			Status:  Partial,
			Notes:   "waypoint only (L4 treats them as L7 attributes)",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  rules:
  - from:
    - source:
        trustDomains: ["cluster.local"]
`, "trustDomains"),
				clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - from:
    - source:
        trustDomains: ["cluster.local"]
`)},
		},
		{
			Feature:   "`from.source`: `requestPrincipals`, `notRequestPrincipals` (JWT)",
			Status:    Supported,
			Qualifier: "(waypoint)",
			Notes:     "the principal `<iss>/<sub>` of the JWT a RequestAuthentication validated, with Istio's forms (`*` = any principal, `prefix*`, `*suffix`); rendered as Istio does, RBAC metadata matchers on `istio_authn`. A request without a valid token has no principal. HTTP-only: on a TCP port, as other HTTP-only attributes (reported)",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - from:
    - source:
        requestPrincipals: ["https://issuer.example.com/*"]
        notRequestPrincipals: ["*/blocked"]
`),
				reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  rules:
  - from:
    - source:
        requestPrincipals: ["issuer/subject"]
`, "requestPrincipals")},
		},
		{
			Feature: "`to.operation`: `ports`, `notPorts`",
			Status:  Supported,
			Notes:   "L4 and L7",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  rules:
  - to:
    - operation:
        ports: ["9080"]
`)},
		},
		{
			Feature:   "`to.operation`: `hosts`, `methods`, `paths` and not-variants",
			Status:    Supported,
			Qualifier: "at the waypoint",
			Notes:     "at L4 they are L7 attributes: ALLOW rule dropped, DENY rule without them",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - to:
    - operation:
        hosts: [reviews]
        notMethods: [DELETE]
        paths: ["/reviews/*"]
`)},
		},
		{
			Feature: "`when`: `source.ip`, `destination.ip`",
			Status:  Partial,
			Notes:   "L4 only; waypoints refuse them",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - when:
    - key: source.ip
      values: ["10.0.0.1"]
`, "source.ip"),
				clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  rules:
  - when:
    - key: source.ip
      values: ["10.244.0.0/16"]
    - key: destination.ip
      values: ["10.244.1.12"]
`)},
		},
		{
			Feature: "`when`: `destination.port`, `source.principal`, `source.namespace`",
			Status:  Supported,
			Notes:   "L4 and L7",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - when:
    - key: destination.port
      values: ["9080"]
    - key: source.namespace
      values: [default]
`)},
		},
		{
			Feature:   "`when`: `request.headers[...]`",
			Status:    Supported,
			Qualifier: "at the waypoint",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - when:
    - key: request.headers[x-user]
      values: [jason]
`)},
		},
		{
			Feature:   "`when`: `request.auth.principal`, `request.auth.audiences`, `request.auth.presenter`, `request.auth.claims[...]`",
			Status:    Supported,
			Qualifier: "(waypoint)",
			Notes:     "from the JWT a RequestAuthentication validated; nested claims as `request.auth.claims[a][b]`; a list claim matches when any element does (Istio's metadata `list_match`). A request without a valid token matches none. Node agents: L7 attribute (reported)",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - when:
    - key: request.auth.claims[realm_access][roles]
      values: [admin]
    - key: request.auth.claims[groups]
      notValues: [blocked]
    - key: request.auth.audiences
      values: [bookinfo]
    - key: request.auth.presenter
      values: ["web-*"]
    - key: request.auth.principal
      values: ["https://issuer.example.com/*"]
`),
				reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - when:
    - key: request.auth.claims[]
      values: [x]
`, "request.auth.claims[]")},
		},
		{
			Feature: "`when`: `connection.sni`, `destination.labels`, `experimental.*`, `source.labels`",
			Status:  NotYet,
			Notes:   "reported; fail-closed handling as above",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - when:
    - key: connection.sni
      values: [reviews.example.com]
`, "connection.sni"),
				reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - when:
    - key: source.labels[app]
      values: [productpage]
`, "source.labels[app]")},
		},
		{
			Feature: "action `CUSTOM` (ext-authz)",
			Status:  Partial,
			Notes: "waypoints: providers `envoyExtAuthzGrpc` and `envoyExtAuthzHttp` of Helm value `meshConfig.extensionProviders` (Istio's format), with Envoy's ext_authz semantics " +
				"(headers to and from the authorizer, `failOpen`, `statusOnError`, `timeout`, `pathPrefix`, `includeRequestBodyInCheck`); CUSTOM runs before DENY and ALLOW; " +
				"one provider per waypoint chain (Istio: per workload); `clearRouteCache` is ignored (reported). A provider that is missing, of another type or whose service is not in the mesh: the rules **deny** (fail closed), as on TCP ports. " +
				"Ingress gateways: the same, for policies selecting their pods. Node agent: the policy is ignored, as in Istio's ztunnel ([guides/security.md](guides/security.md#external-authorization))",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: CUSTOM
  provider:
    name: ext-authz-grpc
  rules:
  - to:
    - operation:
        paths: ["/admin/*"]
`), reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: CUSTOM
  provider:
    name: not-configured
  rules:
  - {}
`, "meshConfig.extensionProviders"),
				reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  action: CUSTOM
  provider:
    name: ext-authz
  rules:
  - {}
`, "CUSTOM")},
		},
		{
			Feature: "action `AUDIT`",
			Status:  Partial,
			Notes:   "waypoint (HTTP ports): an RBAC filter with action `LOG`, first in the chain; a matching request is marked in the access log (`rbac_audit`: the matched policy) and never denied. Waypoint TCP ports: ignored (reported). Node agent: ignored and reported, as in Istio's ztunnel",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  action: AUDIT
  rules:
  - {}
`, "AUDIT"),
				clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: [GET]
`)},
		},
		{
			Feature: "annotation `istio.io/dry-run`",
			Status:  Partial,
			Notes:   "waypoint (HTTP ports): evaluated as RBAC `shadow_rules`, never enforced; the would-be decision is in the access log (`rbac_dry_run`: `allowed`, `denied[<policy>]`) and in `weft_waypoint_rbac_dry_run_total{filter_chain,decision}`. Node agent: evaluated, never enforced; the would-be decision is in the connection log (`policy.dry_run`: `allowed`, `denied[<ns>/<name>]`, `denied[none]`) and in `weft_node_agent_rbac_dry_run_total{decision}`; a node agent older than this sees a DENY policy without rules (nothing enforced). Waypoint TCP ports: not enforced, decision not logged (reported). Not with CUSTOM (enforced, reported)",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
  annotations:
    istio.io/dry-run: "true"
spec:
  selector:
    matchLabels:
      app: reviews
  action: DENY
  rules:
  - {}
`),
				clean(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: default
  annotations:
    istio.io/dry-run: "true"
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: DENY
  rules:
  - to:
    - operation:
        methods: [DELETE]
`)},
		},
		{
			Feature:   "RequestAuthentication: `targetRefs` (the waypoint Gateway, a Service); `issuer`, `audiences`, `jwks`, `jwksUri`, `timeout`, `fromHeaders`, `fromParams`, `fromCookies`, `outputPayloadToHeader`, `forwardOriginalToken`",
			Status:    Supported,
			Qualifier: "(waypoint)",
			Notes:     "rendered as Istio's `envoy.filters.http.jwt_authn` (a provider per rule; a request without a token passes, one with an invalid token gets 401 `Jwt verification fails`, `Jwt issuer is not configured`, `Jwt is expired`, ...); RS256/384/512, PS256/384/512, ES256/384/512, EdDSA; `exp`/`nbf` with 60 s clock skew; the token header is removed unless `forwardOriginalToken`. `jwksUri`: the waypoint fetches it (timeout default 5 s, at most 1 MiB), keeps it 20 min (Istio's refresh interval); while it cannot be fetched, tokens of the issuer are refused, never accepted. A rule without `jwks`/`jwksUri` (OpenID discovery) or with unusable keys refuses its issuer's tokens (reported) ([guides/security.md](guides/security.md#end-user-authentication))",
			Probes: []*Probe{clean(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: default
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json
    audiences: [bookinfo]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    timeout: 2s
`),
				reported(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  jwtRules:
  - issuer: https://issuer.example.com
`, "OpenID discovery")},
		},
		{
			Feature: "RequestAuthentication: `selector`, namespace-wide and mesh-wide (no `targetRefs`)",
			Status:  Partial,
			Notes:   "ingress gateways apply those that select their pods, and namespace- and mesh-wide ones of their namespace or the root namespace; waypoints apply only those with `targetRefs`; one that configures no gateway is reported (`WeftAccepted=False`)",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: https://issuer.example.com/jwks
`, "spec.selector"),
				reported(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: default
spec:
  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: https://issuer.example.com/jwks
`, "no targetRefs")},
		},
		{
			Feature:   "AuthorizationPolicy and RequestAuthentication on ingress gateways: `selector` on the gateway pods, namespace- and mesh-wide, `targetRefs` to a Gateway of class `weft`",
			Status:    Supported,
			Qualifier: "(ingress gateway)",
			Notes: "the gateway, a workload outside the mesh, applies them as Istio's gateways do (node agents do not: its pods are not enrolled): ALLOW, DENY, AUDIT and CUSTOM with every L7 attribute, JWT validation, `ipBlocks`/`remoteIpBlocks` on the client's address; HTTP, HTTPS and TLS passthrough servers (L4 attributes only). " +
				"A selector policy that picks only pods outside the mesh and no gateway is reported: nothing enforces it ([ingress.md](ingress.md#authorization))",
		},
		{
			Feature: "RequestAuthentication: `outputClaimToHeaders`, `spaceDelimitedClaims`",
			Status:  NotYet,
			Notes:   "ignored (reported); the rest of the rule applies",
			Probes: []*Probe{reported(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: default
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: https://issuer.example.com/jwks
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
`, "outputClaimToHeaders")},
		},
		{
			Feature: "MeshConfig `pathNormalization`: `NONE`, `BASE` (= `DEFAULT`), `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES`",
			Status:  Supported,
			Notes:   "Helm value `meshConfig.pathNormalization.normalization`, default `BASE` as in Istio; waypoints and ingress gateways normalize the path with Envoy's rules before routing and AuthorizationPolicy and forward the result; `%00` gets 400 (except with `NONE`); the `#fragment` is dropped in every mode, the query never changes. Differs from Envoy only for a path of slashes only, which merges to `/` ([guides/security.md](guides/security.md#request-paths-normalization))",
		},
	},
}
