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
		},
		{
			Feature:   "PeerAuthentication DISABLE",
			Status:    Supported,
			Qualifier: "(as Istio ambient)",
			Notes:     "same as PERMISSIVE: an ambient node agent always accepts both",
		},
		{
			Feature: "PeerAuthentication UNSET, mesh / namespace / workload (selector) precedence",
			Status:  Supported,
			Notes:   "mesh-wide = root namespace (`rootNamespace`, default `weft-system`); the oldest policy wins at each level",
		},
		{
			Feature: "PeerAuthentication `portLevelMtls`",
			Status:  Supported,
			Notes:   "needs a selector (as Istio); without one it is ignored and reported",
		},
		{
			Feature:   "PeerAuthentication with a selector in the root namespace",
			Status:    Partial,
			Qualifier: "(differs from Istio)",
			Notes:     "Weft applies it to the root namespace's own workloads (sidecar-mode behaviour); Istio ambient ignores it",
		},
		{
			Feature: "AuthorizationPolicy `ALLOW`, `DENY` at L4 (selector, namespace, mesh-wide)",
			Status:  Supported,
			Notes:   "node agent at the destination",
		},
		{
			Feature: "AuthorizationPolicy `ALLOW`, `DENY` at L7 (`targetRefs` to the waypoint Gateway or a Service)",
			Status:  Supported,
			Notes:   "waypoint; denied requests get `403 RBAC: access denied`",
		},
		{
			Feature: "AuthorizationPolicy with `targetRefs` on a waypoint's TCP ports (`tcp*`, `tls`, `https`, `mysql`, `redis`, `mongo`, ... port names, `tcp` VirtualService routes)",
			Status:  Supported,
			Notes:   "waypoint, `envoy.filters.network.rbac` (DENY, then ALLOW) before `tcp_proxy`, decided before the stream is accepted: a denied client's HBONE CONNECT gets 403 and no byte reaches the backend; access log `connection_termination_details` `rbac_access_denied_matched_policy[...]`, metric `weft_waypoint_tcp_rbac_denied_total`. L4 attributes only: principals, namespaces, serviceAccounts, trustDomains, ports, `when` source.principal, source.namespace, destination.port",
		},
		{
			Feature:   "HTTP-only attributes (hosts, methods, paths, `request.headers`) of a policy applied to a TCP port",
			Status:    Supported,
			Qualifier: "(as Istio)",
			Notes:     "an ALLOW rule using one is dropped (matches nothing, so it may deny), a DENY rule applies without it (denies more); reported on the policy's `WeftAccepted` (`PartiallyInvalid`) and by `weftctl analyze` (`L7PolicyOnTCPPort`, warning)",
		},
		{
			Feature: "`targetRef` (singular, deprecated)",
			Status:  Supported,
			Notes:   "treated as one more `targetRefs` entry",
		},
		{
			Feature:   "L7 policy with a `selector` on workloads that use a waypoint",
			Status:    NotYet,
			Qualifier: "(as Istio)",
			Notes:     "waypoints enforce `targetRefs` policies only; `weftctl analyze` warns (`L7PolicyWithSelector`)",
		},
		{
			Feature: "`from.source`: `principals`, `notPrincipals`, `namespaces`, `notNamespaces`, `serviceAccounts`, `notServiceAccounts`",
			Status:  Supported,
			Notes:   "L4 and L7",
		},
		{
			Feature: "`from.source`: `ipBlocks`, `notIpBlocks`",
			Status:  Partial,
			Notes:   "L4 (node agent): supported. Waypoint: not supported (an ALLOW rule using them is dropped, a DENY rule ignores them)",
		},
		{
			Feature: "`from.source`: `remoteIpBlocks`, `notRemoteIpBlocks`",
			Status:  NotYet,
			Notes:   "treated as L7 at the node agent; not supported by waypoints",
		},
		{
			Feature: "`from.source`: `trustDomains`, `notTrustDomains`",
			Status:  Partial,
			Notes:   "waypoint only (L4 treats them as L7 attributes)",
		},
		{
			Feature: "`from.source`: `requestPrincipals`, `notRequestPrincipals` (JWT)",
			Status:  NotYet,
			Notes:   "no RequestAuthentication / JWT validation anywhere",
		},
		{
			Feature: "`to.operation`: `ports`, `notPorts`",
			Status:  Supported,
			Notes:   "L4 and L7",
		},
		{
			Feature:   "`to.operation`: `hosts`, `methods`, `paths` and not-variants",
			Status:    Supported,
			Qualifier: "at the waypoint",
			Notes:     "at L4 they are L7 attributes: ALLOW rule dropped, DENY rule without them",
		},
		{
			Feature: "`when`: `source.ip`, `destination.ip`",
			Status:  Partial,
			Notes:   "L4 only; waypoints refuse them",
		},
		{
			Feature: "`when`: `destination.port`, `source.principal`, `source.namespace`",
			Status:  Supported,
			Notes:   "L4 and L7",
		},
		{
			Feature:   "`when`: `request.headers[...]`",
			Status:    Supported,
			Qualifier: "at the waypoint",
		},
		{
			Feature: "`when`: `request.auth.*`, `connection.sni`, `destination.labels`, `experimental.*`, `source.labels`",
			Status:  NotYet,
			Notes:   "reported; fail-closed handling as above",
		},
		{
			Feature: "action `CUSTOM` (ext-authz)",
			Status:  NotYet,
			Notes:   "waypoint: the policy's rules **deny** (fail closed). Node agent: the policy is ignored, as in Istio's ztunnel",
		},
		{
			Feature: "action `AUDIT`",
			Status:  NotYet,
			Notes:   "ignored and reported, at L4 and L7",
		},
		{
			Feature: "annotation `istio.io/dry-run`",
			Status:  Partial,
			Notes:   "node agent: the policy is not enforced (reported). Waypoint: the annotation is not read, **the policy is enforced**",
		},
		{
			Feature: "RequestAuthentication",
			Status:  NotYet,
			Notes:   "CRD installed; the object gets `WeftAccepted=False` (`Unsupported`): no JWT is validated, so an invalid token is not refused",
		},
		{
			Feature: "MeshConfig `pathNormalization`: `NONE`, `BASE` (= `DEFAULT`), `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES`",
			Status:  Supported,
			Notes:   "Helm value `meshConfig.pathNormalization.normalization`, default `BASE` as in Istio; waypoints and ingress gateways normalize the path with Envoy's rules before routing and AuthorizationPolicy and forward the result; `%00` gets 400 (except with `NONE`); the `#fragment` is dropped in every mode, the query never changes. Differs from Envoy only for a path of slashes only, which merges to `/` ([guides/security.md](guides/security.md#request-paths-normalization))",
		},
	},
}
