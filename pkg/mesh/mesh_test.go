package mesh

import (
	"testing"

	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

func TestNodeID(t *testing.T) {
	for _, c := range []struct {
		id   NodeID
		want string
	}{
		{NodeAgentID("node-0"), "node-agent~node-0"},
		{WaypointID("tenant-a", "waypoint", "waypoint-0"), "waypoint~tenant-a/waypoint~waypoint-0"},
		{GatewayID("istio-system", "ingress", "ingress-0"), "gateway~istio-system/ingress~ingress-0"},
		{NodeID{Kind: KindGRPC, Name: "test"}, "grpc~test"},
	} {
		if got := c.id.String(); got != c.want {
			t.Errorf("%#v.String() = %q, want %q", c.id, got, c.want)
		}
		got, err := ParseNodeID(c.want)
		if err != nil || got != c.id {
			t.Errorf("ParseNodeID(%q) = %#v, %v, want %#v", c.want, got, err, c.id)
		}
		if k := KindOf(c.want); k != c.id.Kind {
			t.Errorf("KindOf(%q) = %q, want %q", c.want, k, c.id.Kind)
		}
	}
	// A waypoint's pod may be missing (the group is what matters).
	if got, err := ParseNodeID("waypoint~ns/gw"); err != nil || got.Key() != "ns/gw" || got.Pod != "" {
		t.Errorf("ParseNodeID(waypoint~ns/gw) = %#v, %v", got, err)
	}
	for _, bad := range []string{"", "node-a", "sidecar~x", "waypoint~", "waypoint~ns", "waypoint~/gw~p", "waypoint~ns/~p", "gateway~ns/a/b~p", "Waypoint~ns/gw~p"} {
		if got, err := ParseNodeID(bad); err == nil {
			t.Errorf("ParseNodeID(%q) = %#v, want an error", bad, got)
		}
	}
	if k := KindOf("waypoint~garbage"); k != KindWaypoint {
		t.Errorf("KindOf(waypoint~garbage) = %q", k)
	}
	if k := KindOf("sidecar~x"); k != "" {
		t.Errorf("KindOf(sidecar~x) = %q", k)
	}
}

// FuzzParseNodeID: whatever parses renders to an ID that parses the same.
func FuzzParseNodeID(f *testing.F) {
	for _, s := range []string{"node-agent~n", "waypoint~a/b~c", "gateway~a/b~c~d", "grpc~", "waypoint~a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNodeID(s)
		if err != nil {
			return
		}
		again, err := ParseNodeID(n.String())
		if err != nil || again != n {
			t.Fatalf("ParseNodeID(%q) = %#v; its String %q parses as %#v, %v", s, n, n.String(), again, err)
		}
	})
}

func TestTypeURLs(t *testing.T) {
	if want := string((&httpv3.HttpProtocolOptions{}).ProtoReflect().Descriptor().FullName()); HTTPProtocolOptionsKey != want {
		t.Errorf("HTTPProtocolOptionsKey %q, want %q", HTTPProtocolOptionsKey, want)
	}
	for url, m := range map[string]proto.Message{AddressType: &workloadv1.Address{}, AuthorizationType: &workloadv1.Authorization{}} {
		if want := "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()); url != want {
			t.Errorf("type URL %q, want %q", url, want)
		}
	}
}

func TestOutboundCluster(t *testing.T) {
	name := OutboundCluster("reviews.default.svc.cluster.local", 9080, "v2")
	if name != "outbound|9080|v2|reviews.default.svc.cluster.local" {
		t.Fatalf("OutboundCluster = %q", name)
	}
	host, port, subset, ok := ParseOutboundCluster(name)
	if !ok || host != "reviews.default.svc.cluster.local" || port != 9080 || subset != "v2" {
		t.Errorf("ParseOutboundCluster(%q) = %q %d %q %v", name, host, port, subset, ok)
	}
	for _, bad := range []string{"passthrough", "outbound|80|v1", "outbound|80|v1|a|b"} {
		if _, _, _, ok := ParseOutboundCluster(bad); ok {
			t.Errorf("ParseOutboundCluster(%q) ok", bad)
		}
	}
	if h, p, s, ok := ParseOutboundCluster("outbound|80||a.b"); !ok || h != "a.b" || p != 80 || s != "" {
		t.Errorf("no subset: %q %d %q %v", h, p, s, ok)
	}
	if n := testing.AllocsPerRun(100, func() { ParseOutboundCluster(name) }); n != 0 {
		t.Errorf("ParseOutboundCluster allocates %v times", n)
	}
}

func TestAddr(t *testing.T) {
	if got := Addr("", MetricsPort); got != ":15020" {
		t.Errorf("Addr = %q", got)
	}
	if got := ControlAddress(); got != "weft-control.weft-system.svc:15012" {
		t.Errorf("ControlAddress = %q", got)
	}
}
