package workload

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

const kindServiceEntry = "ServiceEntry"

// translateServiceEntries represents ServiceEntries as Istio ambient's
// workload API does: one Service per host (hostname, spec.addresses as
// VIPs, ports, waypoint from istio.io/use-waypoint) and one Workload per
// endpoint address, outside the mesh (no tunnel, no identity), so node
// agents and waypoints pick endpoints for them like for any Service.
//
// Resolution: STATIC and DNS endpoints written as IP addresses become
// workloads; NONE has no endpoints (clients keep their original
// destination). Names to resolve (DNS endpoints given as names, and each
// host itself when DNS lists no endpoints) become workloads with a
// hostname and no address, as istiod gives ztunnel: node agents resolve
// them; waypoints and gateways resolve the names of their DNS clusters
// themselves (control/waypoint). Without
// spec.addresses each host gets the VIP AllocateAddresses gives it (the
// one the control plane writes to status.addresses), which node agents'
// DNS proxies answer for, so captured connections to it are recognised.
func (t *translator) translateServiceEntries(ses []*networkingv1.ServiceEntry) {
	ses = slices.DeleteFunc(slices.Clone(ses), func(se *networkingv1.ServiceEntry) bool { return se == nil })
	t.allocated = AllocateAddresses(ses)
	// A host defined twice in a namespace: the first by namespace/name wins.
	slices.SortFunc(ses, func(a, b *networkingv1.ServiceEntry) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, se := range ses {
		t.translateServiceEntry(se)
	}
}

func (t *translator) translateServiceEntry(se *networkingv1.ServiceEntry) {
	spec := &se.Spec
	p := func(format string, args ...any) { t.problem(kindServiceEntry, se.Namespace, se.Name, format, args...) }
	if len(spec.WorkloadSelector.GetLabels()) > 0 {
		p("spec.workloadSelector: selecting pods is not supported; use spec.endpoints")
	}
	ports := make([]*workloadv1.Port, 0, len(spec.Ports))
	for _, sp := range spec.Ports {
		if sp.GetNumber() == 0 || sp.GetNumber() > 65535 {
			p("spec.ports: port %d is out of range; ignored", sp.GetNumber())
			continue
		}
		if strings.EqualFold(sp.GetProtocol(), "UDP") {
			continue // the node tunnel carries TCP only
		}
		if slices.ContainsFunc(ports, func(x *workloadv1.Port) bool { return x.ServicePort == sp.GetNumber() }) {
			continue
		}
		ports = append(ports, &workloadv1.Port{ServicePort: sp.GetNumber(), TargetPort: sp.GetTargetPort()})
	}
	slices.SortFunc(ports, func(a, b *workloadv1.Port) int { return cmp.Compare(a.ServicePort, b.ServicePort) })
	vips := make([]string, 0, len(spec.Addresses))
	for _, a := range spec.Addresses {
		ip, err := usableIP(a)
		if err != nil {
			p("spec.addresses: %v (CIDRs are not supported); ignored", err)
			continue
		}
		vips = append(vips, ip.String())
	}
	slices.Sort(vips)
	vips = slices.Compact(vips)
	waypoint := t.waypointFor(kindServiceEntry, &se.ObjectMeta, true)

	var hosts []string
	for _, h := range spec.Hosts {
		if h == "" || strings.Contains(h, "*") {
			p("spec.hosts: %q: wildcard hosts are not supported; ignored", h)
			continue
		}
		k := key(se.Namespace, h)
		if _, taken := t.addresses[k]; taken {
			p("spec.hosts: %q is already defined in namespace %s; ignored", h, se.Namespace)
			continue
		}
		hosts = append(hosts, h)
		t.addresses[k] = &workloadv1.Address{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{
			Name: se.Name, Namespace: se.Namespace, Hostname: h,
			Addresses: t.hostVIPs(se, h, vips), Ports: ports, Waypoint: waypoint,
		}}}
	}
	if len(hosts) == 0 {
		return
	}

	t.addServiceEntryEndpoints(se, hosts, p)
}

// addServiceEntryEndpoints adds the workloads of the entry's endpoints by
// its resolution and reports what node agents cannot use.
func (t *translator) addServiceEntryEndpoints(se *networkingv1.ServiceEntry, hosts []string, p func(string, ...any)) {
	spec := &se.Spec
	switch spec.Resolution {
	case networkingapi.ServiceEntry_NONE:
		if len(spec.Endpoints) > 0 {
			p("spec.endpoints: ignored with resolution NONE")
		}
		return
	case networkingapi.ServiceEntry_STATIC, networkingapi.ServiceEntry_DNS, networkingapi.ServiceEntry_DNS_ROUND_ROBIN:
	default:
		p("spec.resolution: %s is not supported; the hosts have no endpoints", spec.Resolution)
		return
	}
	dns := spec.Resolution != networkingapi.ServiceEntry_STATIC
	if dns && len(spec.Endpoints) == 0 {
		// The hosts themselves are resolved: one workload per host.
		for _, h := range hosts {
			t.addServiceEntryEndpoint(se, netip.Addr{}, h, nil, []string{h})
		}
		return
	}
	for i, ep := range spec.Endpoints {
		if dns && !isIP(ep.GetAddress()) {
			if !DNSResolvable(ep.GetAddress()) {
				p("spec.endpoints[%d].address: %q is neither an IP address nor a DNS name; ignored", i, ep.GetAddress())
				continue
			}
			t.addServiceEntryEndpoint(se, netip.Addr{}, ep.GetAddress(), ep, hosts)
			continue
		}
		ip, err := usableIP(ep.GetAddress())
		if err != nil {
			p("spec.endpoints[%d].address: %v; ignored", i, err)
			continue
		}
		t.addServiceEntryEndpoint(se, ip, "", ep, hosts)
	}
}

// DNSResolvable is whether a ServiceEntry endpoint address of resolution
// DNS is a name the proxies resolve: a DNS subdomain (RFC 1123), not an
// IP address nor a unix socket.
func DNSResolvable(address string) bool {
	return !isIP(address) && len(validation.IsDNS1123Subdomain(strings.TrimSuffix(address, "."))) == 0
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// addServiceEntryEndpoint adds the workload of one endpoint, with istiod's
// uid for it, serving hosts on the entry's ports (an endpoint's ports map
// overrides the target port by port name): at address ip, or, for
// resolution DNS, at what hostname resolves to (node agents resolve it).
func (t *translator) addServiceEntryEndpoint(se *networkingv1.ServiceEntry, ip netip.Addr, hostname string, ep *networkingapi.WorkloadEntry, hosts []string) {
	address := hostname
	if hostname == "" {
		address = ip.String()
	}
	uid := t.cfg.ClusterID + "/networking.istio.io/ServiceEntry/" + se.Namespace + "/" + se.Name + "/" + address
	if _, dup := t.addresses[uid]; dup {
		return // the same address listed twice
	}
	pl := &workloadv1.PortList{}
	for _, sp := range se.Spec.Ports {
		if sp.GetNumber() == 0 || sp.GetNumber() > 65535 || strings.EqualFold(sp.GetProtocol(), "UDP") {
			continue
		}
		target := cmp.Or(ep.GetPorts()[sp.GetName()], sp.GetTargetPort(), sp.GetNumber())
		pl.Ports = append(pl.Ports, &workloadv1.Port{ServicePort: sp.GetNumber(), TargetPort: target})
	}
	services := make(map[string]*workloadv1.PortList, len(hosts))
	for _, h := range hosts {
		services[key(se.Namespace, h)] = pl
	}
	w := &workloadv1.Workload{
		Uid: uid, Name: se.Name, Namespace: se.Namespace,
		Hostname:       hostname,
		TunnelProtocol: workloadv1.TunnelProtocol_NONE,
		Services:       services,
		WorkloadName:   se.Name,
		WorkloadType:   "serviceentry",
		Status:         workloadv1.WorkloadStatus_HEALTHY,
		ClusterId:      t.cfg.ClusterID,
	}
	if hostname == "" {
		w.Addresses = []string{ip.String()}
	}
	w.CanonicalName, w.CanonicalRevision = canonicalNameRevision(ep.GetLabels(), se.Name)
	t.addresses[uid] = &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}}
}

// hostVIPs are the VIPs of one host: spec.addresses, or the one allocated
// to the host when the entry has none.
func (t *translator) hostVIPs(se *networkingv1.ServiceEntry, host string, vips []string) []string {
	if len(se.Spec.Addresses) > 0 {
		return vips
	}
	for _, a := range t.allocated[key(se.Namespace, se.Name)] {
		if a.GetHost() == host {
			return []string{a.GetValue()}
		}
	}
	return vips
}
