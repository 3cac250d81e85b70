package controlclient

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/weft-mesh/weft/pkg/identity"
)

func TestStreamTokenAddsBearer(t *testing.T) {
	tokens := identity.TokenSourceFunc(func(context.Context) (string, error) { return "tok-1", nil })
	var got []string
	streamer := func(ctx context.Context, _ *grpc.StreamDesc, _ *grpc.ClientConn, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
		md, _ := metadata.FromOutgoingContext(ctx)
		got = md.Get("authorization")
		return nil, nil
	}
	StreamToken(tokens)(context.Background(), &grpc.StreamDesc{}, nil, "/x", streamer)
	if len(got) != 1 || got[0] != "Bearer tok-1" {
		t.Fatalf("authorization = %q", got)
	}
}

func TestDialNeedsTrustAnchors(t *testing.T) {
	_, err := Dial("weft-control.weft-system.svc:15012", filepath.Join(t.TempDir(), "missing.pem"), "tok")
	if err == nil || !strings.Contains(err.Error(), "weft-ca-root-cert") {
		t.Fatalf("err = %v, want a hint about the trust bundle ConfigMap", err)
	}
}

// TestNoServiceConfigLookup: resolving weft-control's name asks DNS for
// its addresses only, not for a TXT service config, whose unanswered
// query once held a starting agent for 10 s.
func TestNoServiceConfigLookup(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan string, 64) // more than a resolution asks
	dnsSrv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		select {
		case asked <- dns.TypeToString[q.Question[0].Qtype] + " " + q.Question[0].Name:
		default:
		}
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A: net.IPv4(127, 0, 0, 1)})
		}
		_ = w.WriteMsg(m)
	})}
	go dnsSrv.ActivateAndServe()
	t.Cleanup(func() { _ = dnsSrv.Shutdown() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	go g.Serve(ln)
	t.Cleanup(g.Stop)

	target := fmt.Sprintf("dns://%s/weft-control.test:%d", pc.LocalAddr(), ln.Addr().(*net.TCPAddr).Port)
	conn, err := grpc.NewClient(target, append(Options(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatalf("not connected: %s", s)
		}
	}
	var queries []string
	for len(asked) > 0 {
		q := <-asked
		queries = append(queries, q)
		if strings.HasPrefix(q, "TXT ") {
			t.Errorf("asked DNS for %s", q)
		}
	}
	if !slices.Contains(queries, "A weft-control.test.") {
		t.Errorf("queries %q: the server's name was not resolved through the test DNS", queries)
	}
}
