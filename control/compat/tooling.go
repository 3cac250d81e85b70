package compat

var tooling = Section{
	Title:       "Tooling",
	FirstColumn: "istioctl",
	Equivalent:  "weftctl",
	Entries: []Entry{
		{
			Feature: "`istioctl install`",
			Status:  Supported,
			Notes:   "`weftctl install` or the Helm charts",
		},
		{
			Feature: "`istioctl uninstall`",
			Status:  Supported,
			Notes:   "`weftctl uninstall [--purge]`",
		},
		{
			Feature: "`istioctl waypoint apply/list/status/delete`",
			Status:  Supported,
			Notes:   "`weftctl waypoint apply/list/status/delete`",
		},
		{
			Feature: "`istioctl ztunnel-config workloads/services/policies/certificates/connections/all`",
			Status:  Supported,
			Notes:   "`weftctl node-config workloads/services/policies/certificates/connections/dump`",
		},
		{
			Feature: "`istioctl proxy-status`",
			Status:  Supported,
			Notes:   "`weftctl proxy-status`",
		},
		{
			Feature: "`istioctl analyze`",
			Status:  Supported,
			Notes:   "`weftctl analyze` (Weft's own checks; Istio's analyzer codes such as IST0101 are not used)",
		},
		{
			Feature: "`istioctl version`",
			Status:  Supported,
			Notes:   "`weftctl version`",
		},
		{
			Feature: "`istioctl dashboard kiali`",
			Status:  Supported,
			Notes:   "`weftctl dashboard` (Weft's own service graph)",
		},
		{
			Feature: "`istioctl proxy-config` (waypoint)",
			Status:  NotYet,
			Notes:   "`kubectl port-forward deploy/<waypoint> 15000` and read `/config_dump`",
		},
		{
			Feature:   "`istioctl x precheck`, `bug-report`, `tag`, `kube-inject`",
			Status:    NotYet,
			Qualifier: "/ not applicable",
		},
	},
}

var platform = Section{
	Title: "Platform",
	Entries: []Entry{
		{
			Feature: "IPv4",
			Status:  Supported,
		},
		{
			Feature: "IPv6, dual-stack",
			Status:  NotYet,
			Notes:   "the capture programs and policy routing are IPv4 only. An enrolled pod's IPv6 fails closed: its TCP and anything but ICMPv6 and UDP are dropped at its veth both ways, leaving (its SYNs and its answers) and entering (every segment, a TCP Fast Open SYN's data included) (`weft_node_agent_capture_ipv6_dropped_total`; the agent logs which enrolled pods have IPv6 addresses); IPv6 UDP passes, as IPv4 UDP does",
		},
		{
			Feature: "multicluster, multi-network, east-west gateway",
			Status:  NotYet,
			Notes:   "`clusterID` is only a name",
		},
		{
			Feature: "Traffic to a NodePort, LoadBalancer or externalIPs Service, or a hostPort, of an enrolled pod",
			Status:  Supported,
			Notes:   "DNATed on another node: captured on the pod's node as any plaintext. DNATed on the pod's own node (after the tc capture): steered by an nftables tproxy rule right after the DNAT to the agent's listener on 15007 and served as plaintext inbound (STRICT refuses it; fails closed while the agent is away); the pod sees the client's address rather than the node's. Host-network clients on the pod's node are not captured, as in Istio ([node-agent.md](node-agent.md#how-traffic-flows))",
		},
		{
			Feature: "CNI: chaining into the node's primary conflist",
			Status:  Supported,
			Notes:   "tested with the reference ptp/bridge plugins (the local cluster); other primary CNIs untested",
		},
		{
			Feature:   "Kubernetes version",
			Status:    Tested,
			Qualifier: "on v1.37",
		},
	},
}
