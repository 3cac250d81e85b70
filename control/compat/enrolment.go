package compat

var enrolment = Section{
	Title: "Enrolment and waypoints",
	Entries: []Entry{
		{
			Feature: "`istio.io/dataplane-mode=ambient` on a Namespace",
			Status:  Supported,
			Notes:   "no pod restart; pods enrolled within about a second",
		},
		{
			Feature: "`istio.io/dataplane-mode=ambient` / `none` on a Pod",
			Status:  Supported,
			Notes:   "the pod's label wins over its namespace's, from the pod's first packet (the node agent reads the pod at CNI ADD: `get pods`); hostNetwork pods are never enrolled",
		},
		{
			Feature: "removing the label (unenrolment)",
			Status:  Supported,
			Notes:   "new connections go direct at once; proxied ones drain (`--drain-timeout`, 5 min)",
		},
		{
			Feature: "Gateway with `gatewayClassName: istio-waypoint`",
			Status:  Supported,
			Notes:   "served like Weft's own class `weft-waypoint` (chart value `gatewayClass.istioWaypoint`)",
		},
		{
			Feature: "`istioctl waypoint apply/list/status/delete`",
			Status:  Supported,
			Notes:   "as `weftctl waypoint ...` ([reference/weftctl.md](reference/weftctl.md))",
		},
		{
			Feature: "`istio.io/use-waypoint` on Namespace, Service, Pod; value `none`",
			Status:  Supported,
			Notes:   "an object's own label wins over its namespace's",
		},
		{
			Feature: "`istio.io/use-waypoint-namespace` (waypoint in another namespace)",
			Status:  Supported,
			Notes:   "the waypoint's HBONE listener must allow it: `allowedRoutes.namespaces.from` `Same` (default), `All` or `Selector`",
		},
		{
			Feature: "`istio.io/waypoint-for`: `service`, `workload`, `all`, `none`",
			Status:  Supported,
		},
		{
			Feature: "per service account waypoints",
			Status:  Supported,
			Notes:   "`weftctl waypoint apply --service-account SA` labels that account's Services and pods; pods created later need the label in their template",
		},
		{
			Feature: "waypoint replicas / resources",
			Status:  Partial,
			Notes:   "replicas with the annotation `weft.io/waypoint-replicas`; `spec.infrastructure.labels`/`annotations` are applied; `spec.infrastructure.parametersRef` is refused (`Accepted=False, InvalidParameters`), so no resources/HPA customization",
		},
		{
			Feature: "DNS capture (`cni.ambient.dnsCapture`)",
			Status:  Partial,
			Notes:   "node-agent chart value `ambient.dnsCapture`, off by default: enrolled pods' DNS (UDP and TCP to port 53) goes to the node agent, which answers `A`/`AAAA` for Services and ServiceEntry hosts with VIPs (auto-allocated ones included, wildcard hosts as ztunnel matches them) and forwards the rest to the pod's resolver; fails open when the agent is away; no `ambient.istio.io/bypass-dns-capture` annotation, no CNAME for search-domain suffixes, IPv4 capture only ([node-agent.md](node-agent.md#dns-proxy-dns-capture))",
		},
		{
			Feature: "`istio.io/ingress-use-waypoint`",
			Status:  Supported,
			Notes: "`true` (any case) on a Service, or on its namespace (the Service's own label wins): ingress gateways (Istio Gateway and Gateway API class `weft`) send the Service's traffic to its waypoint's pods over HBONE, CONNECT to the Service's VIP, so the waypoint's routes and policies apply; " +
				"a Service without a VIP (headless) goes to its endpoints, as in Istio; a waypoint without ready pods gives 503, never a way around it ([ingress.md](ingress.md#through-the-destinations-waypoint))",
		},
		{
			Feature:   "connections opened before enrolment or before a waypoint existed",
			Status:    Supported,
			Qualifier: "(same as Istio)",
			Notes:     "they keep their old path until they close",
		},
		{
			Feature: "workload locality from the node's `topology.kubernetes.io/region`, `topology.kubernetes.io/zone`, `topology.istio.io/subzone` labels",
			Status:  Supported,
			Notes:   "a pod's own labels of the same names override its node's, field by field (istiod ambient reads the node's only); a node's label change moves its workloads",
		},
		{
			Feature: "Service `spec.trafficDistribution` (`PreferClose`, `PreferSameZone`, `PreferSameNode`); annotation `networking.istio.io/traffic-distribution` on a Service or its Namespace",
			Status:  Partial,
			Notes: "node agents prefer the client's zone (`PreferSameNode`: its node) while it has a healthy endpoint, then the region, then anywhere, as ztunnel; " +
				"the field wins over the annotation, the Service's annotation over the Namespace's; an unknown annotation value is reported and means no preference; " +
				"one network, so Istio's `NETWORK` scope always matches; not yet on ServiceEntries. See [node-agent.md](node-agent.md#locality-aware-load-balancing)",
		},
		{
			Feature:   "Service `internalTrafficPolicy: Local`",
			Status:    Supported,
			Qualifier: "(as Istio)",
			Notes:     "node agents send to endpoints on the client's node only; none there: the connection fails",
		},
	},
}
