package controlclient

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
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
