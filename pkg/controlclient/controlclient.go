// Package controlclient connects Weft's data-plane processes (node agents,
// waypoints) to weft-control: gRPC over TLS verified against the mesh root
// (ConfigMap weft-ca-root-cert), authenticated with the caller's projected
// service-account token.
package controlclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/weft-mesh/weft/pkg/identity"
)

// Dial returns a connection to address (host:port; the host names the
// server certificate). Streams (xDS) carry the token read from tokenFile at
// each stream start, since the kubelet rotates it; unary certificate
// requests carry it from identity.Manager (gRPC rejects two authorization
// values on one call).
func Dial(address, caRootFile, tokenFile string) (*grpc.ClientConn, error) {
	pem, err := os.ReadFile(caRootFile)
	if err != nil {
		return nil, fmt.Errorf("control plane trust anchors (ConfigMap weft-ca-root-cert, published by weft-control): %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caRootFile)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(address, append(Options(),
		grpc.WithTransportCredentials(creds),
		grpc.WithStreamInterceptor(StreamToken(identity.FileTokenSource(tokenFile))))...)
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", address, err)
	}
	return conn, nil
}

// Options are the dial options of every connection to weft-control but its
// credentials and token, which tests replace.
//
// A full state is large (tens of MB at 10,000 pods), hence the message
// size. Fixed flow-control windows turn off gRPC's bandwidth-delay
// estimation, which sends a PING, and reads its acknowledgement, for
// nearly every response received (control/xds.ServerOptions has what that
// cost a push). 4 MiB lets a full
// state stream at 4 MiB per round trip, 4 GB/s at 1 ms.
//
// No service config from DNS: gRPC's resolver would otherwise look up a
// TXT record (_grpc_config.<host>) before every connection, and where
// the cluster's DNS does not answer it (a node whose resolver is down, a
// netns without one) each resolution waits for that query's timeouts: an
// agent started 10 s late. Weft sets no service config.
func Options() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
		grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(4 << 20),
		grpc.WithDisableServiceConfig(),
	}
}

// StreamToken adds "authorization: Bearer <token>" to every stream.
func StreamToken(tokens identity.TokenSource) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		tok, err := tokens.Token(ctx)
		if err != nil {
			return nil, err
		}
		return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), desc, cc, method, opts...)
	}
}
