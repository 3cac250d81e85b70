package grpcxds

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc/resolver"
)

// grpc-go reads its xDS environment once, in package initializers, before
// TestMain runs: the bootstrap's location (GRPC_XDS_BOOTSTRAP; the file
// itself is read when the first xds:/// channel is created) and the switch
// that enables "call_creds" in the bootstrap (gRFC A97).
const (
	bootstrapEnv = "GRPC_XDS_BOOTSTRAP"
	callCredsEnv = "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS"
	childEnv     = "WEFT_GRPCXDS_TEST_CHILD"
)

// TestMain re-runs the test binary with the environment a proxyless gRPC
// workload would have in its pod spec: GRPC_XDS_BOOTSTRAP naming a file
// (written by the test once weft-control is up) and the call-credentials
// switch.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

func runChild() int {
	dir, err := os.MkdirTemp("", "grpcxds-bootstrap-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"=1", callCredsEnv+"=true", bootstrapEnv+"="+filepath.Join(dir, "bootstrap.json"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "running the tests with the xDS environment: %v\n", err)
		return 1
	}
}

// clusterDNS stands in for cluster DNS: "cluster-dns:///<name>:<port>"
// resolves to the loopback address registered for "<name>:<port>". The
// bootstrap's server_uri can then name weft-control by its Service DNS name
// (the name on its serving certificate, which TLS verifies) while the test
// serves it on an ephemeral loopback port.
const clusterDNSScheme = "cluster-dns"

var clusterDNS sync.Map // "<name>:<port>" -> "127.0.0.1:<port>"

func init() { resolver.Register(clusterDNSBuilder{}) }

type clusterDNSBuilder struct{}

func (clusterDNSBuilder) Scheme() string { return clusterDNSScheme }

func (clusterDNSBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	r := &clusterDNSResolver{name: target.Endpoint(), cc: cc}
	r.ResolveNow(resolver.ResolveNowOptions{})
	return r, nil
}

// clusterDNSResolver looks its name up again whenever the channel asks (a
// later test run in the same process serves weft-control on another port).
type clusterDNSResolver struct {
	name string
	cc   resolver.ClientConn
}

func (r *clusterDNSResolver) ResolveNow(resolver.ResolveNowOptions) {
	addr, ok := clusterDNS.Load(r.name)
	if !ok {
		r.cc.ReportError(fmt.Errorf("cluster-dns: no address for %q", r.name))
		return
	}
	r.cc.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: addr.(string)}}})
}

func (*clusterDNSResolver) Close() {}
