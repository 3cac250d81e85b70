package proxystatus

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/control/server"
	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/weftctl/internal/output"
)

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

const (
	addr  = "type.googleapis.com/weft.workload.v1.Address"
	authz = "type.googleapis.com/weft.workload.v1.Authorization"
	lds   = "type.googleapis.com/envoy.config.listener.v3.Listener"
	cds   = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
)

func agent(node, pod string, ready bool) Expected {
	return Expected{Kind: NodeAgent, Namespace: "weft-system", Pod: pod, Node: node, Ready: ready}
}

func TestBuild(t *testing.T) {
	expected := []Expected{
		agent("node-0", "weft-node-agent-a", true),
		agent("node-1", "weft-node-agent-b", true),
		agent("node-2", "weft-node-agent-c", false),
		{Kind: Waypoint, Namespace: "default", Pod: "waypoint-1", Node: "node-1", Gateway: "waypoint", Ready: true},
		{Kind: Waypoint, Namespace: "default", Pod: "waypoint-2", Node: "node-0", Gateway: "waypoint", Ready: true},
		{Kind: Gateway, Namespace: "weft-ingress", Pod: "weft-ingress-1", Node: "node-0", ServiceAccount: "weft-ingress", Ready: true},
	}
	connected := now.Add(-time.Minute)
	replicas := []Replica{
		{Pod: "weft-control-1", Syncz: &Syncz{Pod: "weft-control-1", Clients: []ClientStatus{
			{Node: "node-agent~node-0", Connected: connected, Synced: true, Types: []TypeStatus{
				{Type: addr, Acked: "9", Latest: "9"}, {Type: authz, Acked: "0", Latest: "0"}}},
			// An older stream of the same agent (reconnect in progress): the synced one wins.
			{Node: "node-agent~node-0", Connected: connected.Add(-time.Hour), Types: []TypeStatus{{Type: addr, Acked: "3", Latest: "9"}}},
			{Node: "waypoint~default/waypoint~waypoint-1", Connected: connected, Synced: false, Types: []TypeStatus{
				{Type: lds, Acked: "4-aaa", Latest: "5-bbb"}, {Type: cds, Acked: "4-aaa", Latest: "5-bbb", NACK: "bad cluster"}}},
		}}},
		{Pod: "weft-control-2", Syncz: &Syncz{Pod: "weft-control-2", Clients: []ClientStatus{
			{Node: "node-agent~node-1", Connected: connected, Types: []TypeStatus{{Type: addr, Acked: "7", Latest: "9"}}},
			{Node: "grpc~client-1", Connected: connected, Synced: true, Types: []TypeStatus{{Type: lds, Acked: "5-x", Latest: "5-x"}}},
			{Node: "gateway~weft-ingress/weft-ingress~weft-ingress-1", Connected: connected, Synced: true, Types: []TypeStatus{{Type: lds, Acked: "6-y", Latest: "6-y"}}},
		}}},
	}
	r := Build(expected, replicas, now)
	var b strings.Builder
	if err := output.WriteTable(&b, r.Header(), r.Rows()); err != nil {
		t.Fatal(err)
	}
	want := `KIND        NAME                           NODE    STATUS                         VERSIONS (ACKED/LATEST)     CONTROL PLANE   CONNECTED
gateway     weft-ingress/weft-ingress-1    node-0  SYNCED                         LDS 6-y                     weft-control-2  1m0s
node-agent  weft-system/weft-node-agent-a  node-0  SYNCED                         Address 9, Authorization 0  weft-control-1  1m0s
node-agent  weft-system/weft-node-agent-b  node-1  STALE                          Address 7/9                 weft-control-2  1m0s
node-agent  weft-system/weft-node-agent-c  node-2  NOT CONNECTED (pod not ready)  -                           -               -
other       grpc~client-1                  -       SYNCED (no matching pod)       LDS 5-x                     weft-control-2  1m0s
waypoint    default/waypoint-1             node-1  NACK (CDS: bad cluster)        CDS,LDS 4-aaa/5-bbb         weft-control-1  1m0s
waypoint    default/waypoint-2             node-0  NOT CONNECTED                  -                           -               -
`
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant\n%s", b.String(), want)
	}

	// A replica that cannot be asked makes the missing ones UNKNOWN, not
	// NOT CONNECTED.
	r = Build(expected[:1], []Replica{{Pod: "weft-control-1", Err: errors.New("port-forward failed")}}, now)
	if r.Proxies[0].Status != Unknown || len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "port-forward failed") {
		t.Fatalf("with a failed replica: %+v", r)
	}
	j, _ := json.Marshal(Build(nil, nil, now))
	if string(j) != `{"proxies":[]}` {
		t.Fatalf("empty report JSON %s", j)
	}
}

// The JSON weft-control serves (control/server.Syncz) decodes into the
// mirror types weftctl uses, field for field.
func TestSynczContract(t *testing.T) {
	in := server.Syncz{Pod: "weft-control-1", Clients: []xds.ClientStatus{{
		Node: "node-agent~node-0", Stream: 3, Delta: true, Connected: now, Synced: true,
		Types: []xds.TypeStatus{{Type: addr, Sent: "2", Acked: "2", Latest: "2", Pending: 1, NACK: "x"}},
	}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Syncz
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("weftctl's Syncz lacks a field of control/server.Syncz: %v", err)
	}
	back, _ := json.Marshal(out)
	var a, c any
	_ = json.Unmarshal(b, &a)
	_ = json.Unmarshal(back, &c)
	if !reflect.DeepEqual(a, c) {
		t.Fatalf("round trip:\n%s\n%s", b, back)
	}
}

func TestNodeID(t *testing.T) {
	if got := agent("node-3", "p", true).NodeID(); got != "node-agent~node-3" {
		t.Fatal(got)
	}
	w := Expected{Kind: Waypoint, Namespace: "ns", Pod: "wp-1", Gateway: "wp"}
	if got := w.NodeID(); got != "waypoint~ns/wp~wp-1" || xds.NodeGroup(got) != "ns/wp" {
		t.Fatal(got)
	}
}
