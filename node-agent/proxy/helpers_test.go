package proxy

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// fakeIdentities is an Identities holding fixed SVIDs.
type fakeIdentities struct {
	svids  map[spiffeid.ID]*x509svid.SVID
	bundle *x509bundle.Bundle
}

type svidSource struct{ s *x509svid.SVID }

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	if s.s == nil {
		return nil, fmt.Errorf("no SVID held")
	}
	return s.s, nil
}

func (f *fakeIdentities) Source(id spiffeid.ID) x509svid.Source { return svidSource{f.svids[id]} }
func (f *fakeIdentities) Bundles() x509bundle.Source            { return f.bundle }

// pod describes a test workload.
type pod struct {
	name, ns, sa, node, ip string
	plain                  bool
	svcPorts               map[uint32]uint32 // service port -> target port, for svcName
	policies               []string
}

const svcHost = "echo.b.svc.cluster.local"

func (p pod) id() spiffeid.ID { return spiffeid.RequireFromPath(td, "/ns/"+p.ns+"/sa/"+p.sa) }

func (p pod) address() *workloadv1.Address {
	w := &workloadv1.Workload{
		Uid: "Kubernetes//Pod/" + p.ns + "/" + p.name, Name: p.name, Namespace: p.ns, Addresses: []string{p.ip},
		Node: p.node, ServiceAccount: p.sa, TrustDomain: "cluster.local", TunnelProtocol: workloadv1.TunnelProtocol_HBONE,
		WorkloadName: p.name, WorkloadType: "deployment", CanonicalName: p.name, CanonicalRevision: "v1",
		AuthorizationPolicies: p.policies, ClusterId: "Kubernetes",
	}
	if p.plain {
		w.TunnelProtocol = workloadv1.TunnelProtocol_NONE
	}
	if p.svcPorts != nil {
		pl := &workloadv1.PortList{}
		for sp, tp := range p.svcPorts {
			pl.Ports = append(pl.Ports, &workloadv1.Port{ServicePort: sp, TargetPort: tp})
		}
		w.Services = map[string]*workloadv1.PortList{"b/" + svcHost: pl}
	}
	return &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}}
}

func newStore(tb testing.TB, pods []pod, vip string, ports ...uint32) *config.Store {
	tb.Helper()
	s := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	m := map[string]proto.Message{}
	for _, p := range pods {
		a := p.address()
		m[a.GetWorkload().GetUid()] = a
	}
	svc := &workloadv1.Service{Name: "echo", Namespace: "b", Hostname: svcHost, Addresses: []string{vip}}
	for _, p := range ports {
		svc.Ports = append(svc.Ports, &workloadv1.Port{ServicePort: p})
	}
	m["b/"+svcHost] = &workloadv1.Address{Type: &workloadv1.Address_Service{Service: svc}}
	if err := s.Handle(config.AddressType, m, nil); err != nil {
		tb.Fatal(err)
	}
	if err := s.Handle(config.AuthorizationType, map[string]proto.Message{}, nil); err != nil {
		tb.Fatal(err)
	}
	return s
}

// echo is a TCP echo server that records the source IPs it sees.
type echo struct {
	addr netip.AddrPort
	mu   sync.Mutex
	srcs []netip.Addr
}

func startEcho(tb testing.TB, ip string) *echo {
	tb.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	e := &echo{addr: addrPort(l.Addr())}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.srcs = append(e.srcs, addrPort(c.RemoteAddr()).Addr())
			e.mu.Unlock()
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return e
}

func (e *echo) sources() []netip.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]netip.Addr(nil), e.srcs...)
}

// origDsts maps a client's local address to the destination it "meant":
// the stand-in for a transparent listener's local address. The proxy may
// accept a connection before connect has recorded it, so lookup waits for
// the record.
type origDsts struct {
	mu       sync.Mutex
	dsts     map[string]netip.AddrPort
	recorded map[string]chan struct{} // closed once dsts has the key
}

// unknownConnWait bounds lookup's wait for a connection connect did not
// make (the proxy then sees no original destination).
const unknownConnWait = time.Second

func (o *origDsts) recordedChan(key string) chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.recorded == nil {
		o.dsts, o.recorded = map[string]netip.AddrPort{}, map[string]chan struct{}{}
	}
	ch, ok := o.recorded[key]
	if !ok {
		ch = make(chan struct{})
		o.recorded[key] = ch
	}
	return ch
}

func (o *origDsts) lookup(c net.Conn) netip.AddrPort {
	key := c.RemoteAddr().String()
	select {
	case <-o.recordedChan(key):
	case <-time.After(unknownConnWait):
		return netip.AddrPort{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dsts[key]
}

func (o *origDsts) record(key string, dst netip.AddrPort) {
	ch := o.recordedChan(key)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dsts[key] = dst
	select {
	case <-ch: // a reused local port, recorded before
	default:
		close(ch)
	}
}

// connect dials proxy from srcIP, pretending the destination was dst.
func (o *origDsts) connect(tb testing.TB, proxy net.Addr, srcIP string, dst netip.AddrPort) *net.TCPConn {
	tb.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcIP)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", proxy.String())
	if err != nil {
		tb.Fatal(err)
	}
	o.record(c.LocalAddr().String(), dst)
	tb.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip writes msg, half-closes and reads everything back.
func roundTrip(c *net.TCPConn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := c.CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// counter sums metric name over series whose labels include want.
func counter(tb testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func denyPolicy(ns, name string, m *workloadv1.Match) *workloadv1.Authorization {
	return &workloadv1.Authorization{Name: name, Namespace: ns, Scope: workloadv1.Scope_NAMESPACE, Action: workloadv1.Action_DENY,
		Rules: []*workloadv1.Rule{{Clauses: []*workloadv1.Clause{{Matches: []*workloadv1.Match{m}}}}}}
}

func strictPolicy(ns string) *workloadv1.Authorization {
	return denyPolicy(ns, "strict", &workloadv1.Match{NotPrincipals: []*workloadv1.StringMatch{{MatchType: &workloadv1.StringMatch_Presence{Presence: true}}}})
}

func principalDeny(ns, name, principal string) *workloadv1.Authorization {
	return denyPolicy(ns, name, &workloadv1.Match{Principals: []*workloadv1.StringMatch{{MatchType: &workloadv1.StringMatch_Exact{Exact: principal}}}})
}

// setPolicies replaces every Authorization in s with auths.
func setPolicies(tb testing.TB, s *config.Store, auths ...*workloadv1.Authorization) {
	tb.Helper()
	m := map[string]proto.Message{}
	for _, a := range auths {
		m[a.GetNamespace()+"/"+a.GetName()] = a
	}
	var removed []string
	for name := range s.Snapshot().Authorizations() {
		if _, ok := m[name]; !ok {
			removed = append(removed, name)
		}
	}
	if err := s.Handle(config.AuthorizationType, m, removed); err != nil {
		tb.Fatal(err)
	}
}

func itoa(p uint16) string { return fmt.Sprint(p) }
