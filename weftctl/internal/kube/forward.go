package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
)

// PodGet GETs http://127.0.0.1:<port><path> inside a pod (for hostNetwork
// pods: on the node) through the API server's pods/portforward subresource,
// as `kubectl port-forward` does: WebSocket first, SPDY when the API server
// cannot upgrade. Nothing connects to pod or node addresses directly, so it
// works from anywhere the API server is reachable, and ports bound to the
// pod's loopback (the admin endpoints) are reachable too.
func (c *Client) PodGet(ctx context.Context, ns, pod string, port int, path string) ([]byte, error) {
	stop := make(chan struct{})
	defer close(stop)
	fw, err := c.PortForward(ctx, ns, pod, 0, port, stop)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(rctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", fw.Port, path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("GET %s on pod %s/%s port %d (through port-forward): %w", path, ns, pod, port, cmpErr(err, fw.errOut.String()))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s on pod %s/%s port %d: %s: %s", path, ns, pod, port, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// PortForward listens on 127.0.0.1:local (0: a free port) and forwards
// its connections to port of the pod through the API server, as PodGet
// describes, until stop is closed.
func (c *Client) PortForward(ctx context.Context, ns, pod string, local, port int, stop <-chan struct{}) (*Forward, error) {
	req := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward")
	transport, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return nil, err
	}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, req.URL())
	if ws, err := portforward.NewSPDYOverWebsocketDialerForStreaming(req.URL(), c.Config); err == nil {
		dialer = portforward.NewFallbackDialerForStreaming(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	ready := make(chan struct{})
	errOut := &syncBuilder{}
	fw, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("%d:%d", local, port)}, stop, ready, io.Discard, errOut)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmpErr(fw.ForwardPorts(), errOut.String()) }()
	select {
	case <-ready:
	case err := <-done:
		return nil, fmt.Errorf("port-forward to pod %s/%s port %d: %w", ns, pod, port, err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		return nil, fmt.Errorf("port-forward to pod %s/%s: no local port: %v", ns, pod, err)
	}
	return &Forward{Port: int(ports[0].Local), Done: done, errOut: errOut}, nil
}

// Forward is a running port-forward.
type Forward struct {
	Port int // on 127.0.0.1
	// Done yields the forwarder's end: the pod went away, the connection
	// to the API server broke, or stop was closed.
	Done   <-chan error
	errOut *syncBuilder
}

// syncBuilder collects the forwarder's error output, written from its
// goroutines.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func cmpErr(err error, stderr string) error {
	if s := strings.TrimSpace(stderr); s != "" {
		return errors.Join(err, errors.New(s))
	}
	return err
}
