package config

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/policy"
)

// naturalName is the resource name control gives m (uid, or
// "<namespace>/<hostname|name>").
func naturalName(m proto.Message) string {
	switch m := m.(type) {
	case *workloadv1.Address:
		if w := m.GetWorkload(); w != nil {
			return w.GetUid()
		}
		return m.GetService().GetNamespace() + "/" + m.GetService().GetHostname()
	case *workloadv1.Authorization:
		return m.GetNamespace() + "/" + m.GetName()
	}
	return ""
}

func mustMarshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzStoreHandle decodes arbitrary bytes as the Address and Authorization
// resources xDS delivers (what a compromised or buggy control plane, or a
// corrupted stream, can send) and applies them to a Store under their own
// name and under an arbitrary one. Properties: no panic (validation,
// indexing, policy compilation, Authorize, the admin dump); a rejected
// update leaves the snapshot exactly as it was; an accepted resource is
// found by every index it claims; and what was accepted, re-encoded and
// sent to a fresh store, is accepted again (validated output
// re-validates).
func FuzzStoreHandle(f *testing.F) {
	seedAddrs := []*workloadv1.Address{
		workload(wl{name: "r1", node: "n1", ips: []string{"10.244.0.5"}, ports: map[uint32]uint32{9080: 9080}}),
		workload(wl{name: "r2", ips: []string{"10.244.0.6", "fd00::6"}, plain: true, unhealthy: true}),
		service("10.96.0.10", 9080, 9090),
		{Type: &workloadv1.Address_Workload{Workload: &workloadv1.Workload{Uid: "u", Namespace: "ns", Addresses: []string{"::ffff:10.0.0.1"},
			Waypoint:              &workloadv1.GatewayAddress{Destination: &workloadv1.GatewayAddress_Hostname{Hostname: "ns/waypoint"}, HboneMtlsPort: 15008},
			AuthorizationPolicies: []string{"ns/deny"}}}},
		{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{Namespace: "ns", Hostname: "h", Addresses: []string{"0.0.0.0"},
			Waypoint: &workloadv1.GatewayAddress{Destination: &workloadv1.GatewayAddress_Address{Address: "10.0.0.9"}}}}},
		{},
	}
	_, a1 := authz("default", "allow", workloadv1.Scope_NAMESPACE, "10.0.0.0/8", "10.1.2.3")
	seedAuthz := []*workloadv1.Authorization{
		a1.(*workloadv1.Authorization),
		{Name: "deny", Namespace: "ns", Scope: workloadv1.Scope_WORKLOAD_SELECTOR, Action: workloadv1.Action_DENY,
			Rules: []*workloadv1.Rule{{Clauses: []*workloadv1.Clause{{Matches: []*workloadv1.Match{{
				Principals:          []*workloadv1.StringMatch{{MatchType: &workloadv1.StringMatch_Prefix{Prefix: "cluster.local/ns/x/"}}},
				NotNamespaces:       []*workloadv1.StringMatch{{MatchType: &workloadv1.StringMatch_Presence{Presence: true}}},
				NotDestinationPorts: []uint32{0, 70000},
			}}}}}}},
		{Name: "g", Namespace: "weft-system", Scope: workloadv1.Scope_GLOBAL, Action: workloadv1.Action_DENY,
			Rules: []*workloadv1.Rule{{}, {Clauses: []*workloadv1.Clause{{}}}}},
		{},
	}
	for _, a := range seedAddrs {
		for _, z := range seedAuthz {
			f.Add(mustMarshal(f, a), mustMarshal(f, z), "")
		}
	}
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00}, []byte{0xff, 0xff}, "default/x")

	f.Fuzz(func(t *testing.T, addrBytes, authzBytes []byte, name string) {
		s := NewStore(Options{Logger: quiet})
		try := func(typeURL string, m proto.Message) bool {
			before := s.Snapshot()
			for _, n := range []string{naturalName(m), name} {
				err := s.Handle(typeURL, map[string]proto.Message{n: m}, nil)
				if err != nil {
					if s.Snapshot() != before {
						t.Fatalf("rejected update (%v) changed the snapshot", err)
					}
					continue
				}
				check(t, s.Snapshot(), n, m)
				revalidate(t, typeURL, n, m)
				return true
			}
			return false
		}

		a := &workloadv1.Address{}
		if proto.Unmarshal(addrBytes, a) == nil {
			try(AddressType, a)
		}
		z := &workloadv1.Authorization{}
		if proto.Unmarshal(authzBytes, z) == nil {
			try(AuthorizationType, z)
		}
		snap := s.Snapshot()
		if _, err := snap.MarshalJSON(); err != nil {
			t.Fatalf("admin dump: %v", err)
		}
		for _, w := range snap.Workloads() {
			snap.AuthorizationsFor(w)
			for _, ip := range append(w.Addresses, netip.MustParseAddr("10.0.0.1")) {
				for _, port := range []uint16{0, 9080} {
					snap.Authorize(w, policy.Conn{SourceIP: ip, DestIP: ip, DestPort: port, Principal: "cluster.local/ns/x/sa/y", Namespace: "x"})
					snap.Authorize(w, policy.Conn{SourceIP: ip, DestIP: ip, DestPort: port})
				}
			}
		}
		for _, svc := range snap.Services() {
			for _, p := range svc.Proto.GetPorts() {
				if _, _, err := s.PickEndpoint(svc, uint16(p.GetServicePort()), nil); err != nil && len(svc.Endpoints(uint16(p.GetServicePort()))) > 0 {
					t.Fatalf("PickEndpoint: %v with endpoints", err)
				}
			}
		}
	})
}

// check: an accepted resource is in every index it claims.
func check(t *testing.T, snap *Snapshot, name string, m proto.Message) {
	t.Helper()
	switch m := m.(type) {
	case *workloadv1.Address:
		if m.GetWorkload() != nil {
			w := snap.Workload(name)
			if w == nil {
				t.Fatalf("accepted workload %q not in the snapshot", name)
			}
			if len(w.Addresses) != len(m.GetWorkload().GetAddresses()) {
				t.Fatalf("workload %q: %d addresses parsed from %q", name, len(w.Addresses), m.GetWorkload().GetAddresses())
			}
			for _, ip := range w.Addresses {
				if snap.WorkloadByIP(ip) != w {
					t.Fatalf("workload %q not found by its address %v", name, ip)
				}
				if !ip.IsValid() || ip.Is4In6() || ip.Zone() != "" {
					t.Fatalf("workload %q: address %v not normalized", name, ip)
				}
			}
			if node := m.GetWorkload().GetNode(); node != "" && len(snap.WorkloadsOnNode(node)) != 1 {
				t.Fatalf("workload %q not listed on node %q", name, node)
			}
			if m.GetWorkload().GetTunnelProtocol() == workloadv1.TunnelProtocol_HBONE && w.Identity.IsZero() {
				t.Fatalf("HBONE workload %q accepted without an identity", name)
			}
			return
		}
		svc := snap.Service(name)
		if svc == nil {
			t.Fatalf("accepted service %q not in the snapshot", name)
		}
		for _, vip := range svc.VIPs {
			for _, p := range m.GetService().GetPorts() {
				if snap.ServiceByVIP(netip.AddrPortFrom(vip, uint16(p.GetServicePort()))) != svc {
					t.Fatalf("service %q not found by %v:%d", name, vip, p.GetServicePort())
				}
			}
		}
	case *workloadv1.Authorization:
		if snap.Authorizations()[name] == nil {
			t.Fatalf("accepted authorization %q not in the snapshot", name)
		}
	}
}

// revalidate: the accepted message, re-encoded, is accepted by a fresh store.
func revalidate(t *testing.T, typeURL, name string, m proto.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("re-encode accepted %q: %v", name, err)
	}
	again := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(b, again); err != nil {
		t.Fatalf("decode re-encoded %q: %v", name, err)
	}
	if err := NewStore(Options{Logger: quiet}).Handle(typeURL, map[string]proto.Message{name: again}, nil); err != nil {
		t.Fatalf("accepted %q, but not once re-encoded: %v", name, err)
	}
}
