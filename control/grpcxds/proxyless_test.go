package grpcxds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and its balancers

	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/internal/await"
)

// TestProxylessGRPCClientRoutesByTranslatedConfig is the issue's
// requirement end to end: a grpc-go client with the xds:/// resolver, whose
// xDS server is weft-control's (TLS + service-account token), resolves
// greeter and routes its calls by the translated VirtualService and
// DestinationRule. The gRPC group is pushed only once the client asked for
// it (GRPCWanted), as the control plane does. Everything is in one test:
// grpc-go reads its bootstrap once per process.
func TestProxylessGRPCClientRoutesByTranslatedConfig(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	backends := startBackends(t, "v1", "v2")
	reg := registry(backends)
	cp := startControlPlane(t, ctx)
	// No gRPC client yet: the control plane leaves the gRPC group out of
	// its pushes, and pushes it when a client asks (control/xds/grpcgroup.go).
	first := translate(t, reg, jasonToV2)
	cp.xds.SetWaypointSnapshots("0", map[string]xds.Resources{})
	go func() {
		select {
		case <-cp.xds.GRPCWanted():
			cp.xds.SetWaypointSnapshots("1", map[string]xds.Resources{xds.GroupGRPC: first})
		case <-ctx.Done():
		}
	}()

	t.Run("xDS stream without a token is rejected", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(cp.bundle)
		conn, err := grpc.NewClient(cp.target, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(cctx)
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("ADS without a token: %v, want Unauthenticated", err)
		}
	})

	// The bootstrap file TestMain pointed GRPC_XDS_BOOTSTRAP at.
	if !strings.EqualFold(os.Getenv(callCredsEnv), "true") || os.Getenv(bootstrapEnv) == "" {
		t.Fatalf("%s and %s must be set before the process starts (TestMain does it)", callCredsEnv, bootstrapEnv)
	}
	if err := os.WriteFile(os.Getenv(bootstrapEnv), []byte(cp.bootstrap(t, "grpc~test")), 0o600); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+greeterHost+":50051", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testgrpc.NewTestServiceClient(conn)

	call := func(user string) (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		if user != "" {
			cctx = metadata.AppendToOutgoingContext(cctx, "x-user", user)
		}
		resp, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			return "", err
		}
		return resp.GetServerId(), nil
	}
	// count makes n calls as user and counts the answers per version.
	count := func(t *testing.T, user string, n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			v, err := call(user)
			if err != nil {
				t.Fatalf("call as %q: %v", user, err)
			}
			got[v]++
		}
		return got
	}

	t.Run("jason to v2, everyone else to v1", func(t *testing.T) {
		if got := count(t, "", 50); got["v1"] != 50 {
			t.Errorf("without x-user: %v, want all 50 from v1", got)
		}
		if got := count(t, "jason", 50); got["v2"] != 50 {
			t.Errorf("x-user: jason: %v, want all 50 from v2", got)
		}
		if got := count(t, "alice", 50); got["v1"] != 50 {
			t.Errorf("x-user: alice: %v, want all 50 from v1", got)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("50/50 after the VirtualService changes", func(t *testing.T) {
		if n := cp.xds.SetWaypointSnapshots("2", map[string]xds.Resources{xds.GroupGRPC: translate(t, reg, fiftyFifty)}); n != 1 {
			t.Fatalf("SetWaypointSnapshots changed %d groups, want 1", n)
		}
		// The push reached the client once v2 answers a call without x-user.
		await.NoErrorWithin(t, 20*time.Second, "the 50/50 route to reach the client", func() error {
			v, err := call("")
			if err != nil {
				t.Fatal(err)
			}
			if v != "v2" {
				return fmt.Errorf("a call without x-user still answered by %s", v)
			}
			return nil
		})
		const n = 200
		got := count(t, "", n)
		// Binomial(200, 1/2): mean 100, sd sqrt(50) ~ 7.1; allow 4 sd.
		tolerance := 4 * math.Sqrt(n*0.5*0.5)
		if got["v1"]+got["v2"] != n || math.Abs(float64(got["v1"])-n/2) > tolerance {
			t.Errorf("%d calls without x-user: %v, want v1 and v2 each %d +- %.0f", n, got, n/2, tolerance)
		}
		t.Logf("%d calls: %v", n, got)
		if got := count(t, "jason", 20); got["v2"] != 20 {
			t.Errorf("x-user: jason after the change: %v, want all 20 from v2", got)
		}
	})

	t.Run("control plane saw an authenticated grpc~ client and no NACK", func(t *testing.T) {
		callers := cp.authenticated()
		if len(callers) == 0 {
			t.Fatal("no authenticated xDS stream")
		}
		for _, c := range callers {
			if c != clientSA {
				t.Errorf("xDS stream authenticated as %q, want %q", c, clientSA)
			}
		}
		logs := cp.logs.String()
		if !strings.Contains(logs, "node=grpc~test") {
			t.Errorf("no xDS subscription from node grpc~test in the logs")
		}
		if strings.Contains(logs, "xds NACK") {
			t.Errorf("the client rejected configuration:\n%s", grepLines(logs, "xds NACK"))
		}
	})
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
