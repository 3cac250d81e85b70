package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// echoService is a gRPC service with one bidirectional streaming method
// that echoes every message. It is described by hand (no generated code):
// the messages are wrapperspb.BytesValue, so the default proto codec works.
var echoService = grpc.ServiceDesc{
	ServiceName: "weft.probe.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Stream", ServerStreams: true, ClientStreams: true,
		Handler: func(_ any, s grpc.ServerStream) error {
			for {
				m := new(wrapperspb.BytesValue)
				if err := s.RecvMsg(m); errors.Is(err, io.EOF) {
					return nil
				} else if err != nil {
					return err
				}
				if err := s.SendMsg(m); err != nil {
					return err
				}
			}
		},
	}},
}

const echoStreamMethod = "/weft.probe.Echo/Stream"

// newGRPCServer serves echoService; the HTTP server hands it HTTP/2
// requests with a gRPC content type (grpc.Server.ServeHTTP), so gRPC shares
// the probe's HTTP port as it would an application's.
func newGRPCServer() *grpc.Server {
	s := grpc.NewServer()
	s.RegisterService(&echoService, struct{}{})
	return s
}

// grpcMessages is how many messages each stream of the gRPC behaviour
// sends (and reads back) before it half-closes.
const grpcMessages = 5

// grpcStreams opens c.Streams bidirectional streams at once on one gRPC
// connection (h2c), sends grpcMessages messages of 1 KiB on each, wants each
// echoed byte-exact, half-closes and wants the server's clean end: HTTP/2
// flow control and stream concurrency under load, trailers (grpc-status)
// and half-close on every stream.
func (c *Client) grpcStreams(ctx context.Context) Result {
	// gRPC reports a failed dial or a reset connection as a status; the
	// network's own first error says how it failed (refused, reset).
	netErr := &httpProbe{}
	// The target names the host (the :authority, as for the HTTP
	// behaviours); the dialer connects to its resolved address.
	conn, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(c.Host, strconv.Itoa(c.Ports.HTTP)),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			conn, err := c.dialHTTP(ctx, "tcp", a)
			if err != nil {
				causeConn{h: netErr}.note(0, err)
				return nil, err
			}
			return causeConn{conn, netErr}, nil
		}))
	if err != nil {
		return failed("client", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg       sync.WaitGroup
		echoed   atomic.Int64 // messages echoed on every stream: progress
		ok       atomic.Int64
		firstErr error
		once     sync.Once
	)
	go cancelOnStall(ctx, &echoed, cancel, hangTimeout)
	for i := range c.Streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoStream(ctx, conn, i, &echoed); err != nil {
				once.Do(func() { firstErr = err; cancel(err) })
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
			firstErr = fmt.Errorf("%w (%v)", cause, firstErr)
		}
		r := netErr.failed("stream", firstErr)
		r.Detail = fmt.Sprintf("%d of %d streams echoed; first failure: %v", ok.Load(), c.Streams, firstErr)
		return r
	}
	return Result{Outcome: OK, Detail: fmt.Sprintf("%d streams x %d messages echoed", c.Streams, grpcMessages)}
}

var errStalled = errors.New("no stream echoed a message for a whole hang timeout")

// cancelOnStall cancels ctx when no message is echoed (progress does not
// move) for a whole hang timeout (read by the caller: the goroutine may
// outlive the behaviour, and the unit tests change hangTimeout). A stall fails the behaviour, slowness does
// not: a loaded machine that echoes slowly but steadily passes, and timings
// belong to the benchmarks.
func cancelOnStall(ctx context.Context, progress *atomic.Int64, cancel context.CancelCauseFunc, hang time.Duration) {
	tick := time.NewTicker(hang)
	defer tick.Stop()
	last := int64(-1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n := progress.Load()
			if n == last {
				cancel(errStalled)
				return
			}
			last = n
		}
	}
}

// echoStream runs one stream of grpcStreams.
func echoStream(ctx context.Context, conn *grpc.ClientConn, id int, echoed *atomic.Int64) error {
	s, err := conn.NewStream(ctx, &echoService.Streams[0], echoStreamMethod)
	if err != nil {
		return err
	}
	for n := range grpcMessages {
		want := bytes.Repeat([]byte{byte(id + n)}, 1024)
		if err := s.SendMsg(wrapperspb.Bytes(want)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		got := new(wrapperspb.BytesValue)
		if err := s.RecvMsg(got); err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if !bytes.Equal(got.GetValue(), want) {
			return fmt.Errorf("message %d differs", n)
		}
		echoed.Add(1)
	}
	if err := s.CloseSend(); err != nil {
		return fmt.Errorf("half-close: %w", err)
	}
	if err := s.RecvMsg(new(wrapperspb.BytesValue)); !errors.Is(err, io.EOF) {
		return fmt.Errorf("end of stream: %v, want the server's clean end", err)
	}
	echoed.Add(1)
	return nil
}
