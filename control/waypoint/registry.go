package waypoint

import (
	"cmp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// protocol of a service port as far as the waypoint is concerned.
type protocol int

const (
	// protoSniffed: unnamed or unknown; HTTP unless a VirtualService only
	// has tcp routes for the port.
	protoSniffed protocol = iota
	protoHTTP
	protoTCP
)

// service is a mesh service from the registry (a workloadv1.Service).
type service struct {
	name, namespace, fqdn string
	vips                  []string
	ports                 []*servicePort // sorted by number
	// waypoint "<ns>/<name>" the service uses, "" for none.
	waypoint string
	// ingressViaWaypoint: ingress gateways send to the waypoint too
	// (mesh.LabelIngressUseWaypoint).
	ingressViaWaypoint bool
	// dns: a ServiceEntry host with resolution DNS (the proxies resolve
	// its endpoints); nil for the rest.
	dns *dnsEntry
}

type servicePort struct {
	number   uint32
	protocol protocol
	// http2: an HTTP/2 protocol (http2, grpc, grpc-web, h2c), which goes
	// upstream over HTTP/2 whatever the client spoke, as istiod sets
	// http2_protocol_options on such ports' clusters.
	http2 bool
}

func (s *service) port(n uint32) *servicePort {
	for _, p := range s.ports {
		if p.number == n {
			return p
		}
	}
	return nil
}

// endpoint is one workload serving one service port.
type endpoint struct {
	workload *workloadv1.Workload
	ip       string
	port     uint32
}

func endpointKey(fqdn string, port uint32) string { return fqdn + ":" + itoa(port) }

// indexRegistry reads services, workloads and pod labels.
func (t *translator) indexRegistry(in Inputs) {
	kubeServices := map[string]*corev1.Service{}
	for _, s := range in.Services {
		if s != nil {
			kubeServices[s.Namespace+"/"+s.Name] = s
		}
	}
	for _, pod := range in.Pods {
		if pod != nil {
			t.podLabels[t.cfg.ClusterID+"//Pod/"+pod.Namespace+"/"+pod.Name] = pod.Labels
		}
	}
	nsLabels := map[string]map[string]string{}
	for _, ns := range in.Namespaces {
		if ns != nil {
			nsLabels[ns.Name] = ns.Labels
		}
	}
	keys := make([]string, 0, len(in.Addresses))
	for k := range in.Addresses {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	seProtocols := serviceEntryProtocols(in.ServiceEntries)
	seDNS := serviceEntryDNS(in.ServiceEntries)
	for _, k := range keys {
		a := in.Addresses[k]
		if svc := a.GetService(); svc != nil {
			kube := kubeServices[svc.Namespace+"/"+svc.Name]
			if kube != nil && svc.Hostname != svc.Name+"."+svc.Namespace+".svc."+t.cfg.DomainSuffix {
				kube = nil // a ServiceEntry host named like a Service
			}
			s := t.addService(svc, kube)
			if kube != nil {
				s.ingressViaWaypoint = ingressUseWaypoint(kube.Labels, nsLabels[kube.Namespace])
			} else {
				s.setServiceEntryProtocols(seProtocols)
				s.dns = seDNS[s.namespace+"/"+s.fqdn]
			}
		} else if w := a.GetWorkload(); w != nil {
			t.workloads = append(t.workloads, w)
		}
	}
	slices.SortFunc(t.workloads, func(a, b *workloadv1.Workload) int { return cmp.Compare(a.Uid, b.Uid) })
	for _, w := range t.workloads {
		ip := workloadIP(w)
		if ip == "" {
			continue
		}
		for key, pl := range w.Services {
			_, fqdn, ok := strings.Cut(key, "/")
			s := t.services[fqdn]
			if !ok || s == nil {
				continue
			}
			for _, p := range pl.GetPorts() {
				if s.port(p.ServicePort) == nil {
					continue
				}
				target := p.TargetPort
				if target == 0 {
					target = p.ServicePort
				}
				ek := endpointKey(fqdn, p.ServicePort)
				t.endpoints[ek] = append(t.endpoints[ek], endpoint{workload: w, ip: ip, port: target})
			}
		}
	}
}

func (t *translator) addService(svc *workloadv1.Service, kube *corev1.Service) *service {
	s := &service{
		name:      svc.Name,
		namespace: svc.Namespace,
		fqdn:      svc.Hostname,
		vips:      slices.Sorted(slices.Values(svc.Addresses)),
		waypoint:  t.waypointKey(svc.Waypoint),
	}
	for _, p := range svc.Ports {
		if p.ServicePort == 0 || s.port(p.ServicePort) != nil {
			continue
		}
		name := portProtocolName(kube, p.ServicePort)
		s.ports = append(s.ports, &servicePort{number: p.ServicePort, protocol: protocolOf(name), http2: http2Protocol(name)})
	}
	slices.SortFunc(s.ports, func(a, b *servicePort) int { return cmp.Compare(a.number, b.number) })
	t.services[s.fqdn] = s
	for _, ip := range s.vips {
		t.servicesByIP[ip] = s
	}
	return s
}

// waypointKey turns a GatewayAddress hostname
// "<ns>/<name>.<ns>.svc.<suffix>" into "<ns>/<name>".
func (t *translator) waypointKey(g *workloadv1.GatewayAddress) string {
	host := g.GetHostname()
	ns, rest, ok := strings.Cut(host, "/")
	if !ok {
		return ""
	}
	name, ok := strings.CutSuffix(rest, "."+ns+".svc."+t.cfg.DomainSuffix)
	if !ok || name == "" {
		return ""
	}
	return ns + "/" + name
}

// workloadIP is the address endpoints use: the first IPv4 address, else the
// first address.
func workloadIP(w *workloadv1.Workload) string { return preferIPv4(w.Addresses) }

// preferIPv4 is the first IPv4 address of addrs, else the first address.
func preferIPv4(addrs []string) string {
	for _, a := range addrs {
		if isIP(a) && !strings.Contains(a, ":") {
			return a
		}
	}
	for _, a := range addrs {
		if isIP(a) {
			return a
		}
	}
	return ""
}

// portProtocolName implements the protocol selection documented on the
// package: the name of the port's protocol, its appProtocol when that
// names one, else its name's prefix; "" when neither does.
func portProtocolName(kube *corev1.Service, number uint32) string {
	if kube == nil {
		return ""
	}
	for _, p := range kube.Spec.Ports {
		if uint32(p.Port) != number {
			continue
		}
		if p.AppProtocol != nil {
			if _, ok := protocolName(*p.AppProtocol); ok {
				return *p.AppProtocol
			}
		}
		name, _, _ := strings.Cut(p.Name, "-")
		if _, ok := protocolName(name); ok {
			return name
		}
		return ""
	}
	return ""
}

func protocolOf(name string) protocol {
	pr, _ := protocolName(name)
	return pr
}

// http2Protocol: name is one of Istio's HTTP/2 protocols.
func http2Protocol(name string) bool {
	switch strings.ToLower(name) {
	case "http2", "grpc", "grpc-web", "h2c", "kubernetes.io/h2c":
		return true
	}
	return false
}

func protocolName(s string) (protocol, bool) {
	switch strings.ToLower(s) {
	case "http", "http2", "grpc", "grpc-web", "h2c", "kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss":
		return protoHTTP, true
	case "tcp", "tls", "https", "mongo", "mysql", "redis", "udp", "sctp":
		return protoTCP, true
	}
	return protoSniffed, false
}
