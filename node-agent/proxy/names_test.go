package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/dnsresolve"
)

// TestOutboundResolvesWorkloadHostname: a ServiceEntry host of resolution
// DNS reaches the node agent as a Service whose endpoint is a workload
// reached by name; the agent connects to the address the name resolved
// to in the background, and refuses connections while it has none.
func TestOutboundResolvesWorkloadHostname(t *testing.T) {
	const host, seVIP = "api.example.com", "240.240.0.5"
	var mu sync.Mutex
	answers := map[string][]netip.Addr{}
	lookup := func(_ context.Context, name string, _ dnsresolve.Family) (dnsresolve.Answer, error) {
		mu.Lock()
		defer mu.Unlock()
		if a := answers[name]; len(a) > 0 {
			return dnsresolve.Answer{Addrs: a, TTL: time.Second}, nil
		}
		return dnsresolve.Answer{}, fmt.Errorf("%s: NXDOMAIN: %w", name, dnsresolve.ErrNotFound)
	}
	names := dnsresolve.NewSet(lookup, dnsresolve.V4Only, dnsresolve.Options{RespectTTL: true, MinRefresh: 10 * time.Millisecond, Refresh: 20 * time.Millisecond}, nil)
	t.Cleanup(names.Close)
	m := newMesh(t, func(e *Env) { e.Names = names })

	// The ServiceEntry as control/workload translates it.
	target := uint32(m.echoX.addr.Port())
	svc := &workloadv1.Service{Name: "api", Namespace: "b", Hostname: host, Addresses: []string{seVIP},
		Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: target}}}
	w := &workloadv1.Workload{Uid: "Kubernetes/networking.istio.io/ServiceEntry/b/api/" + host, Name: "api", Namespace: "b",
		Hostname: host, TunnelProtocol: workloadv1.TunnelProtocol_NONE, WorkloadType: "serviceentry",
		Services: map[string]*workloadv1.PortList{"b/" + host: {Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: target}}}}}
	if err := m.store.Handle(config.AddressType, map[string]proto.Message{
		"b/" + host: &workloadv1.Address{Type: &workloadv1.Address_Service{Service: svc}},
		w.Uid:       &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}},
	}, nil); err != nil {
		t.Fatal(err)
	}
	names.Sync([]string{host})
	dst := netip.AddrPortFrom(netip.MustParseAddr(seVIP), 80)

	// Not resolvable: refused, and the log says why. The first lookup
	// runs in the background: until it has failed, a refusal says "not
	// resolved yet" instead.
	await.True(t, "the lookup failed", func() bool { st, _ := names.State(host); return st.Err != nil })
	if got, err := roundTrip(m.fromA(t, dst), "nowhere"); err == nil && got != "" {
		t.Fatalf("connection to an unresolved name: %q, want refused", got)
	}
	await.True(t, "the refusal logged with the DNS error", func() bool {
		return strings.Contains(m.a.log.String(), "DNS "+host) && strings.Contains(m.a.log.String(), "NXDOMAIN")
	})

	mu.Lock()
	answers[host] = []netip.Addr{m.echoX.addr.Addr()}
	mu.Unlock()
	await.True(t, "the name resolved", func() bool { st, _ := names.State(host); return len(st.Addrs) == 1 })
	if got, err := roundTrip(m.fromA(t, dst), "by name"); err != nil || got != "by name" {
		t.Fatalf("connection to the resolved name: %q, %v", got, err)
	}
	if srcs := m.echoX.sources(); len(srcs) != 1 {
		t.Fatalf("the resolved address saw %v, want one connection", srcs)
	}
}
