package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/spiffetest"
)

// fakeWaypoint is an HBONE server with the waypoint's identity that
// records what it was asked for and forwards to a fixed backend.
type fakeWaypoint struct {
	mu          sync.Mutex
	authorities []string
	peers       []spiffeid.ID
}

func (f *fakeWaypoint) seen() ([]string, []spiffeid.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.authorities...), append([]spiffeid.ID(nil), f.peers...)
}

// TestServiceWithWaypointGoesThroughIt: a Service whose Address names a
// waypoint is sent over HBONE to a waypoint pod (verified by its own
// identity), with the original VIP:port as the CONNECT authority; without
// the waypoint it would have gone straight to the endpoint.
func TestServiceWithWaypointGoesThroughIt(t *testing.T) {
	ca := spiffetest.NewCA(t, td)
	backend := startEcho(t, podB.ip)
	wpID := spiffeid.RequireFromPath(td, "/ns/b/sa/waypoint")
	ln := listen(t, "127.0.0.8:0")
	wpPort := addrPort(ln.Addr()).Port()
	fw := &fakeWaypoint{}
	srv := &hbone.Server{
		TLS: hbone.ServerTLSConfig(x509svid.Source(svidSource{ca.Issue(t, wpID)}), ca.Bundle(), tlsconfig.AuthorizeAny()),
		Handler: func(ctx context.Context, req *hbone.Request) error {
			fw.mu.Lock()
			fw.authorities, fw.peers = append(fw.authorities, req.Authority), append(fw.peers, req.Peer)
			fw.mu.Unlock()
			up, err := net.Dial("tcp", backend.addr.String())
			if err != nil {
				return err
			}
			st, err := req.Accept()
			if err != nil {
				up.Close()
				return err
			}
			hbone.Pipe(st, up.(*net.TCPConn))
			return nil
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// The mesh view: B serves echo, echo uses waypoint b/waypoint, whose
	// Service has one endpoint, the waypoint pod at 127.0.0.8.
	const wpHost = "waypoint.b.svc.cluster.local"
	b := podB
	b.svcPorts = map[uint32]uint32{80: uint32(backend.addr.Port())}
	wpPod := &workloadv1.Workload{Uid: "Kubernetes//Pod/b/waypoint-0", Name: "waypoint-0", Namespace: "b", Addresses: []string{"127.0.0.8"},
		Node: "node-b", ServiceAccount: "waypoint", TrustDomain: "cluster.local", TunnelProtocol: workloadv1.TunnelProtocol_NONE,
		Services: map[string]*workloadv1.PortList{"b/" + wpHost: {Ports: []*workloadv1.Port{{ServicePort: 15008, TargetPort: uint32(wpPort)}}}}}
	res := map[string]proto.Message{}
	for _, p := range []pod{podA, b} {
		a := p.address()
		res[a.GetWorkload().GetUid()] = a
	}
	res[wpPod.Uid] = &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: wpPod}}
	res["b/"+svcHost] = &workloadv1.Address{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{
		Name: "echo", Namespace: "b", Hostname: svcHost, Addresses: []string{vip}, Ports: []*workloadv1.Port{{ServicePort: 80}},
		Waypoint: &workloadv1.GatewayAddress{Destination: &workloadv1.GatewayAddress_Hostname{Hostname: "b/" + wpHost}, HboneMtlsPort: 15008},
	}}}
	res["b/"+wpHost] = &workloadv1.Address{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{
		Name: "waypoint", Namespace: "b", Hostname: wpHost, Addresses: []string{"10.96.0.20"}, Ports: []*workloadv1.Port{{ServicePort: 15008}}}}}
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := store.Handle(config.AddressType, res, nil); err != nil {
		t.Fatal(err)
	}
	store.Handle(config.AuthorizationType, map[string]proto.Message{}, nil)

	ids := &fakeIdentities{svids: map[spiffeid.ID]*x509svid.SVID{podA.id(): ca.Issue(t, podA.id())}, bundle: ca.Bundle()}
	metrics, _ := NewMetrics(prometheus.NewRegistry())
	dsts := &origDsts{}
	out := &Outbound{Env: &Env{Store: store, Identities: ids, NodeName: "node-a", Metrics: metrics, DialTimeout: 3 * time.Second},
		OriginalDst: dsts.lookup}
	outLn := listen(t, "127.0.0.1:0")
	go out.Serve(outLn)
	t.Cleanup(func() { out.Close() })

	got, err := roundTrip(dsts.connect(t, outLn.Addr(), podA.ip, ap(vip, 80)), "via the waypoint")
	if err != nil || got != "via the waypoint" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	auths, peers := fw.seen()
	if len(auths) != 1 || auths[0] != netip.AddrPortFrom(netip.MustParseAddr(vip), 80).String() {
		t.Fatalf("waypoint saw CONNECT %v, want the original VIP:port", auths)
	}
	if peers[0] != podA.id() {
		t.Fatalf("waypoint saw client %s, want %s", peers[0], podA.id())
	}

	// A waypoint presenting another identity is not trusted.
	impostor := spiffeid.RequireFromPath(td, "/ns/b/sa/not-the-waypoint")
	ln2 := listen(t, "127.0.0.8:0")
	srv2 := &hbone.Server{TLS: hbone.ServerTLSConfig(x509svid.Source(svidSource{ca.Issue(t, impostor)}), ca.Bundle(), tlsconfig.AuthorizeAny()),
		Handler: srv.Handler}
	go srv2.Serve(ln2)
	t.Cleanup(func() { srv2.Close() })
	wpPod.Services["b/"+wpHost].Ports[0].TargetPort = uint32(addrPort(ln2.Addr()).Port())
	if err := store.Handle(config.AddressType, map[string]proto.Message{wpPod.Uid: &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: wpPod}}}, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(dsts.connect(t, outLn.Addr(), podA.ip, ap(vip, 80)), "x"); err == nil && got != "" {
		t.Fatalf("a waypoint with the wrong identity was used: %q", got)
	}
	if auths, _ := fw.seen(); len(auths) != 1 {
		t.Fatalf("the impostor waypoint got the stream: %v", auths)
	}
}
