package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	var errOut strings.Builder
	fw, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		return nil, fmt.Errorf("port-forward to pod %s/%s port %d: %w", ns, pod, port, cmpErr(err, errOut.String()))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		return nil, fmt.Errorf("port-forward to pod %s/%s: no local port: %v", ns, pod, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(rctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", ports[0].Local, path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("GET %s on pod %s/%s port %d (through port-forward): %w", path, ns, pod, port, cmpErr(err, errOut.String()))
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

func cmpErr(err error, stderr string) error {
	if s := strings.TrimSpace(stderr); s != "" {
		return errors.Join(err, errors.New(s))
	}
	return err
}
