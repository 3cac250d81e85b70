// Package xdstest serves an xds.Server on loopback for tests of its
// clients (node agents' config store, the control plane's push loop).
package xdstest

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/pkg/controlclient"
)

// Dial serves s's ADS on a loopback listener, without authentication,
// until the test ends, and returns a client connection to it. Both ends
// have the production options but credentials (xds.ServerOptions,
// controlclient.Options).
func Dial(tb testing.TB, s *xds.Server) *grpc.ClientConn {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g := grpc.NewServer(xds.ServerOptions()...)
	s.Register(g)
	go g.Serve(ln)
	tb.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), append(controlclient.Options(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}
