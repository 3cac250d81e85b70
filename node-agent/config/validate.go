package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/util/validation"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// parsedAddress is a validated Address resource: exactly one of w and s.
type parsedAddress struct {
	w *Workload
	s *Service
}

// parseAddress validates one Address resource named name.
func parseAddress(name string, m proto.Message) (parsedAddress, error) {
	a, ok := m.(*workloadv1.Address)
	if !ok {
		return parsedAddress{}, fmt.Errorf("address %q: resource is a %T, not a weft.workload.v1.Address", name, m)
	}
	switch t := a.GetType().(type) {
	case *workloadv1.Address_Workload:
		w, err := parseWorkload(name, t.Workload)
		if err != nil {
			return parsedAddress{}, fmt.Errorf("address %q (workload): %w", name, err)
		}
		return parsedAddress{w: w}, nil
	case *workloadv1.Address_Service:
		s, err := parseService(name, t.Service)
		if err != nil {
			return parsedAddress{}, fmt.Errorf("address %q (service): %w", name, err)
		}
		return parsedAddress{s: s}, nil
	default:
		return parsedAddress{}, fmt.Errorf("address %q: neither workload nor service is set", name)
	}
}

func parseWorkload(name string, w *workloadv1.Workload) (*Workload, error) {
	if w == nil {
		return nil, errors.New("empty workload")
	}
	if w.GetUid() == "" {
		return nil, errors.New("uid is empty")
	}
	if w.GetUid() != name {
		return nil, fmt.Errorf("uid %q differs from the resource name", w.GetUid())
	}
	if w.GetNamespace() == "" {
		return nil, errors.New("namespace is empty")
	}
	out := &Workload{Name: name, Proto: w}
	addrs, err := parseIPs("addresses", w.GetAddresses())
	if err != nil {
		return nil, err
	}
	out.Addresses = addrs
	if err := checkHostname(w); err != nil {
		return nil, err
	}
	if err := knownEnum("tunnel_protocol", w.GetTunnelProtocol()); err != nil {
		return nil, err
	}
	if err := knownEnum("status", w.GetStatus()); err != nil {
		return nil, err
	}
	if err := checkGateway(w.GetWaypoint()); err != nil {
		return nil, err
	}
	for svc, pl := range w.GetServices() {
		if err := checkKey("services key", svc); err != nil {
			return nil, err
		}
		if err := checkPorts("services["+svc+"]", pl.GetPorts()); err != nil {
			return nil, err
		}
	}
	for _, p := range w.GetAuthorizationPolicies() {
		if err := checkKey("authorization_policies entry", p); err != nil {
			return nil, err
		}
	}
	out.services = internWorkload(name, w)
	if w.GetServiceAccount() != "" && w.GetTrustDomain() != "" {
		td, err := spiffeid.TrustDomainFromString(w.GetTrustDomain())
		if err != nil {
			return nil, fmt.Errorf("trust_domain %q: %w", w.GetTrustDomain(), err)
		}
		id, err := mesh.WorkloadID(td, w.GetNamespace(), w.GetServiceAccount())
		if err != nil {
			return nil, fmt.Errorf("identity of namespace %q, service account %q: %w", w.GetNamespace(), w.GetServiceAccount(), err)
		}
		out.Identity = internID(id)
	} else if w.GetTunnelProtocol() == workloadv1.TunnelProtocol_HBONE {
		return nil, errors.New("HBONE workload without service_account and trust_domain (no SPIFFE identity)")
	}
	return out, nil
}

// checkHostname: a workload reached by name (a ServiceEntry endpoint of
// resolution DNS) has a valid DNS name, no address and no tunnel (it is
// outside the mesh).
func checkHostname(w *workloadv1.Workload) error {
	h := w.GetHostname()
	if h == "" {
		return nil
	}
	if len(validation.IsDNS1123Subdomain(strings.TrimSuffix(h, "."))) > 0 {
		return fmt.Errorf("hostname %q is not a DNS name", h)
	}
	if len(w.GetAddresses()) > 0 {
		return fmt.Errorf("hostname %q with addresses: a workload is reached by address or by name, not both", h)
	}
	if w.GetTunnelProtocol() != workloadv1.TunnelProtocol_NONE {
		return fmt.Errorf("hostname %q with tunnel %s: workloads reached by name are outside the mesh", h, w.GetTunnelProtocol())
	}
	return nil
}

func parseService(name string, s *workloadv1.Service) (*Service, error) {
	if s == nil {
		return nil, errors.New("empty service")
	}
	if s.GetNamespace() == "" || s.GetHostname() == "" {
		return nil, errors.New("namespace and hostname are required")
	}
	if want := s.GetNamespace() + "/" + s.GetHostname(); name != want {
		return nil, fmt.Errorf("resource name differs from %q (<namespace>/<hostname>)", want)
	}
	vips, err := parseIPs("addresses", s.GetAddresses())
	if err != nil {
		return nil, err
	}
	if err := checkPorts("ports", s.GetPorts()); err != nil {
		return nil, err
	}
	if err := checkGateway(s.GetWaypoint()); err != nil {
		return nil, err
	}
	if err := checkLoadBalancing(s.GetLoadBalancing()); err != nil {
		return nil, err
	}
	return &Service{Name: name, Proto: s, VIPs: vips}, nil
}

func checkLoadBalancing(lb *workloadv1.LoadBalancing) error {
	if err := knownEnum("load_balancing.mode", lb.GetMode()); err != nil {
		return err
	}
	if err := knownEnum("load_balancing.locality_mode", lb.GetLocalityMode()); err != nil {
		return err
	}
	for i, s := range lb.GetRoutingPreference() {
		field := fmt.Sprintf("load_balancing.routing_preference[%d]", i)
		if err := knownEnum(field, s); err != nil {
			return err
		}
		if s == workloadv1.LoadBalancing_UNSPECIFIED_SCOPE {
			return fmt.Errorf("%s: UNSPECIFIED_SCOPE is no scope", field)
		}
	}
	return nil
}

func parseAuthorization(name string, m proto.Message) (*workloadv1.Authorization, error) {
	a, ok := m.(*workloadv1.Authorization)
	if !ok {
		return nil, fmt.Errorf("authorization %q: resource is a %T, not a weft.workload.v1.Authorization", name, m)
	}
	if err := checkAuthorization(name, a); err != nil {
		return nil, fmt.Errorf("authorization %q: %w", name, err)
	}
	return a, nil
}

func checkAuthorization(name string, a *workloadv1.Authorization) error {
	if a.GetName() == "" || a.GetNamespace() == "" {
		return errors.New("name and namespace are required")
	}
	if want := a.GetNamespace() + "/" + a.GetName(); name != want {
		return fmt.Errorf("resource name differs from %q (<namespace>/<name>)", want)
	}
	if err := knownEnum("scope", a.GetScope()); err != nil {
		return err
	}
	if err := knownEnum("action", a.GetAction()); err != nil {
		return err
	}
	for ri, r := range a.GetRules() {
		for ci, c := range r.GetClauses() {
			for mi, m := range c.GetMatches() {
				at := fmt.Sprintf("rules[%d].clauses[%d].matches[%d]", ri, ci, mi)
				for field, list := range map[string][]string{
					"source_ips": m.GetSourceIps(), "not_source_ips": m.GetNotSourceIps(),
					"destination_ips": m.GetDestinationIps(), "not_destination_ips": m.GetNotDestinationIps(),
				} {
					for _, s := range list {
						if _, err := ParsePrefix(s); err != nil {
							return fmt.Errorf("%s.%s: %w", at, field, err)
						}
					}
				}
				for field, list := range map[string][]uint32{
					"destination_ports": m.GetDestinationPorts(), "not_destination_ports": m.GetNotDestinationPorts(),
				} {
					for _, p := range list {
						if p == 0 || p > 65535 {
							return fmt.Errorf("%s.%s: port %d is outside 1-65535", at, field, p)
						}
					}
				}
				for field, list := range map[string][]*workloadv1.StringMatch{
					"principals": m.GetPrincipals(), "not_principals": m.GetNotPrincipals(),
					"namespaces": m.GetNamespaces(), "not_namespaces": m.GetNotNamespaces(),
				} {
					for i, sm := range list {
						if sm.GetMatchType() == nil {
							return fmt.Errorf("%s.%s[%d]: no match type set", at, field, i)
						}
					}
				}
			}
		}
	}
	return nil
}

// ParsePrefix parses a CIDR ("10.0.0.0/8") or a single IP as a prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid IP or CIDR %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parseIPs(field string, in []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(in))
	for _, s := range in {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s: unparsable IP %q", field, s)
		}
		if a.Zone() != "" || a.IsUnspecified() {
			return nil, fmt.Errorf("%s: %q is not a usable IP", field, s)
		}
		a = a.Unmap()
		for _, seen := range out {
			if seen == a {
				return nil, fmt.Errorf("%s: %q is listed twice", field, s)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func checkPorts(field string, ports []*workloadv1.Port) error {
	seen := map[uint32]bool{}
	for _, p := range ports {
		if p.GetServicePort() == 0 || p.GetServicePort() > 65535 {
			return fmt.Errorf("%s: service_port %d is outside 1-65535", field, p.GetServicePort())
		}
		if p.GetTargetPort() > 65535 {
			return fmt.Errorf("%s: target_port %d is outside 0-65535", field, p.GetTargetPort())
		}
		if seen[p.GetServicePort()] {
			return fmt.Errorf("%s: service_port %d is listed twice", field, p.GetServicePort())
		}
		seen[p.GetServicePort()] = true
	}
	return nil
}

func checkGateway(g *workloadv1.GatewayAddress) error {
	if g == nil {
		return nil
	}
	switch d := g.GetDestination().(type) {
	case *workloadv1.GatewayAddress_Address:
		if _, err := netip.ParseAddr(d.Address); err != nil {
			return fmt.Errorf("waypoint: unparsable IP %q", d.Address)
		}
	case *workloadv1.GatewayAddress_Hostname:
		if err := checkKey("waypoint hostname", d.Hostname); err != nil {
			return err
		}
	default:
		return errors.New("waypoint: neither hostname nor address is set")
	}
	if g.GetHboneMtlsPort() > 65535 {
		return fmt.Errorf("waypoint: hbone_mtls_port %d is outside 0-65535", g.GetHboneMtlsPort())
	}
	return nil
}

// checkKey checks a "<namespace>/<name>" reference.
func checkKey(field, s string) error {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("%s %q is not <namespace>/<name>", field, s)
	}
	return nil
}

type protoEnum interface {
	protoreflect.Enum
	String() string
}

func knownEnum(field string, e protoEnum) error {
	if e.Descriptor().Values().ByNumber(e.Number()) == nil {
		return fmt.Errorf("%s: unknown value %d", field, e.Number())
	}
	return nil
}
