package route

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"google.golang.org/protobuf/proto"
)

// maxGRPCReply bounds what is read of a service's unary gRPC answer
// (an authorizer's, a rate limit service's).
const maxGRPCReply = 1 << 20

// grpcUnary makes one unary gRPC call (path "/<service>/<method>") to
// cluster over the Upstream's HTTP/2, framed here rather than through a
// gRPC client: the Upstream owns the connections (HBONE, pools, circuit
// breakers), so the call gets the mesh's mTLS and load balancing. who
// names the service in errors.
func grpcUnary(ctx context.Context, up Upstream, cluster, authority, path, who string, in, out proto.Message) error {
	msg, err := proto.Marshal(in)
	if err != nil {
		return err
	}
	frame := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
	copy(frame[5:], msg)
	req := (&http.Request{
		Method: http.MethodPost, URL: &url.URL{Scheme: "http", Host: authority, Path: path},
		Proto: "HTTP/2.0", ProtoMajor: 2, Host: authority,
		Header:        http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}},
		Body:          io.NopCloser(bytes.NewReader(frame)),
		ContentLength: int64(len(frame)),
	}).WithContext(ctx)
	resp, err := up.RoundTrip(req, cluster, 0, false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readGRPCReply(resp, who, out)
}

// readGRPCReply reads a unary gRPC response into out: one uncompressed
// message and grpc-status 0 (in the trailers, or in the headers of a
// trailers-only reply).
func readGRPCReply(resp *http.Response, who string, out proto.Message) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered HTTP %d", who, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxGRPCReply))
	if err != nil {
		return err
	}
	st := resp.Trailer.Get("Grpc-Status")
	if st == "" {
		st = resp.Header.Get("Grpc-Status")
	}
	if st != "0" {
		return fmt.Errorf("%s grpc-status %q: %s", who, st, resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"))
	}
	if len(data) < 5 || data[0] != 0 || int(binary.BigEndian.Uint32(data[1:5])) != len(data)-5 {
		return fmt.Errorf("%s reply is not one uncompressed gRPC message (%d bytes)", who, len(data))
	}
	if err := proto.Unmarshal(data[5:], out); err != nil {
		return fmt.Errorf("%s reply: %w", who, err)
	}
	return nil
}
