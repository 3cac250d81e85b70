package dns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
)

// startServer serves the test mesh on 127.0.0.1 with 127.0.0.1 as an
// enrolled pod of node-a.
func startServer(t *testing.T) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "needs CAP_NET_ADMIN (IP_TRANSPARENT)")
	}
	store := onePodStore(t, "127.0.0.1")
	s := &Server{Handler: &Handler{Snapshot: store.Snapshot, Node: "node-a", Forwarder: NewUpstream(0, 4)}, Log: discard()}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Listen(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// TestServerPortCannotBeJoined: no other socket can bind the DNS proxy's
// UDP or TCP address, not even with SO_REUSEPORT and SO_REUSEADDR (issue
// #13 M4: a root hostNetwork process in the group would get a share of the
// enrolled pods' queries and answer them), and a second server on the same
// address fails with EADDRINUSE, which the agent takes to listen elsewhere.
func TestServerPortCannotBeJoined(t *testing.T) {
	s := startServer(t)
	port := int(s.Addr().Port())
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_STREAM} {
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, opt := range []int{unix.SO_REUSEPORT, unix.SO_REUSEADDR} {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
				t.Fatal(err)
			}
		}
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		unix.Close(fd)
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("socket type %d with SO_REUSEPORT bound the DNS proxy's port %d: %v, want EADDRINUSE", typ, port, err)
		}
	}
	second := &Server{Handler: s.Handler, Log: discard()}
	if err := second.Listen(context.Background(), s.Addr().String()); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("a second server on %s: %v, want EADDRINUSE", s.Addr(), err)
	}
}

func TestServerUDPAndTCP(t *testing.T) {
	s := startServer(t)
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: 5 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("api.example.com.", dns.TypeA)
		r, _, err := c.Exchange(m, s.Addr().String())
		if err != nil || !slices.Equal(answers(r), []string{"240.240.44.61"}) {
			t.Errorf("%s: %v %v, want the VIP", network, r, err)
		}
		// Asked directly, not captured: nowhere to forward.
		m.SetQuestion("www.example.org.", dns.TypeA)
		if r, _, err := c.Exchange(m, s.Addr().String()); err != nil || r.Rcode != dns.RcodeRefused {
			t.Errorf("%s: %v %v, want REFUSED", network, r, err)
		}
	}
}

// A client holds at most maxTCPPerClient connections; an oversized TCP
// message closes its connection.
func TestServerTCPLimits(t *testing.T) {
	s := startServer(t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range maxTCPPerClient {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// A round trip proves the server admitted it.
		if err := writeTCPMessage(c, query("api.example.com.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
		if _, err := readTCPMessage(c, 65535); err != nil {
			t.Fatal(err)
		}
	}
	extra, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = writeTCPMessage(extra, query("api.example.com.", dns.TypeA))
	if _, err := readTCPMessage(extra, 65535); err == nil {
		t.Errorf("connection %d of one client was served", maxTCPPerClient+1)
	}
	conns[0].Write([]byte{0xff, 0xff}) // announces 65535 bytes: over MaxMessage
	if _, err := readTCPMessage(conns[0], 65535); err == nil {
		t.Errorf("an oversized message got an answer")
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// onePodStore is a mesh of one enrolled pod of node-a at podIP and the
// mesh host api.example.com (240.240.44.61).
func onePodStore(t *testing.T, podIP string) *config.Store {
	t.Helper()
	res := map[string]proto.Message{}
	k, p := pod("pod", "default", "node-a", podIP, workloadv1.TunnelProtocol_HBONE)
	res[k] = p
	k, p = service("default", "api.example.com", "240.240.44.61")
	res[k] = p
	store := config.NewStore(config.Options{})
	if err := store.Handle(config.AddressType, res, nil); err != nil {
		t.Fatal(err)
	}
	return store
}
