package waypoint

import (
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// serviceEntryProtocols gives the ports of ServiceEntry hosts (services in
// the registry without a Kubernetes Service) their protocol: the port's
// protocol field, chosen like a Service port's name (HTTPS and TLS are TCP
// to the waypoint; an unknown value is sniffed). Keyed by "<ns>/<host>".
func serviceEntryProtocols(ses []*networkingv1.ServiceEntry) map[string]map[uint32]protocol {
	out := map[string]map[uint32]protocol{}
	for _, se := range ses {
		if se == nil {
			continue
		}
		ports := map[uint32]protocol{}
		for _, p := range se.Spec.Ports {
			if pr, ok := protocolName(p.GetProtocol()); ok {
				ports[p.GetNumber()] = pr
			}
		}
		for _, h := range se.Spec.Hosts {
			if _, taken := out[se.Namespace+"/"+h]; !taken {
				out[se.Namespace+"/"+h] = ports
			}
		}
	}
	return out
}

// setServiceEntryProtocols applies serviceEntryProtocols to a service that
// has no Kubernetes Service.
func (s *service) setServiceEntryProtocols(byHost map[string]map[uint32]protocol) {
	ports := byHost[s.namespace+"/"+s.fqdn]
	for _, p := range s.ports {
		if pr, ok := ports[p.number]; ok {
			p.protocol = pr
		}
	}
}
