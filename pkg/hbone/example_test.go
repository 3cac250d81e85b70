package hbone_test

import (
	"context"
	"net"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/pkg/hbone"
)

// Inbound (port 15008): authorize, dial the destination, then splice.
func ExampleServer() {
	var svid x509svid.Source     // e.g. the node agent's certificate cache
	var bundle x509bundle.Source // mesh trust bundle
	srv := &hbone.Server{
		TLS: hbone.ServerTLSConfig(svid, bundle, nil),
		Handler: func(ctx context.Context, req *hbone.Request) error {
			if req.Peer.TrustDomain().Name() != "cluster.local" { // real policy goes here
				return hbone.Refuse(http.StatusForbidden, "RBAC: access denied")
			}
			var d net.Dialer
			up, err := d.DialContext(ctx, "tcp", req.Authority)
			if err != nil {
				return hbone.Refuse(http.StatusServiceUnavailable, err.Error())
			}
			st, err := req.Accept()
			if err != nil {
				up.Close()
				return err
			}
			_, _, err = hbone.Pipe(st, up.(*net.TCPConn))
			return err
		},
	}
	ln, _ := net.Listen("tcp", ":15008")
	go srv.Serve(ln)
}

// Outbound (port 15001): tunnel a captured connection to the destination's
// node, checking that node's identity.
func ExampleDialer() {
	var svid x509svid.Source // the source workload's SVID
	var bundle x509bundle.Source
	d := &hbone.Dialer{SVID: svid, Bundle: bundle}
	var captured *net.TCPConn // from the IP_TRANSPARENT listener
	h := http.Header{}
	hbone.SetForwarded(h, captured.RemoteAddr().(*net.TCPAddr).IP)
	node := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-node")
	st, err := d.Dial(context.Background(), "10.0.1.7:15008", tlsconfig.AuthorizeID(node), "10.0.1.23:8080", h)
	if err != nil {
		captured.Close()
		return
	}
	hbone.Pipe(captured, st)
}
