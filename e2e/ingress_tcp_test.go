package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A TCP server on the ingress gateway (Istio's TCP traffic shifting task,
// port 31400), routed by a VirtualService tcp route to Redis in the mesh:
// the client speaks Redis' protocol through the gateway. The gateway's
// Service gets the task's "tcp" port as the task's instructions add it.
const ingressTCPYAML = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
spec:
  selector:
    matchLabels: {app: redis}
  template:
    metadata:
      labels: {app: redis}
    spec:
      containers:
      - name: redis
        image: redis:alpine
        ports:
        - {name: redis, containerPort: 6379}
---
apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  selector: {app: redis}
  ports:
  - {name: tcp-redis, port: 6379}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: redis-gateway
spec:
  selector:
    istio: ingress
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: redis
spec:
  hosts: ["*"]
  gateways: [redis-gateway]
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: redis.default.svc.cluster.local
        port: {number: 6379}
`

func testIngressTCP(t *testing.T, e *env, host string) {
	t.Run("TCP server: Redis through the gateway's port 31400", func(t *testing.T) {
		e.applyYAML(t, ingressTCPYAML)
		e.mustKubectl(t, "-n", "weft-ingress", "patch", "service", "weft-ingress", "--type=json",
			"-p", `[{"op":"add","path":"/spec/ports/-","value":{"name":"tcp","port":31400,"targetPort":31400,"protocol":"TCP"}}]`)
		e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/redis", "--timeout=120s")
		port := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "service", "weft-ingress",
			"-o", `jsonpath={.spec.ports[?(@.name=="tcp")].nodePort}`))
		if !regexp.MustCompile(`^[0-9]+$`).MatchString(port) {
			t.Fatalf("tcp nodePort %q", port)
		}
		eventually(t, "PING through the gateway's TCP port", 90*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := e.c.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("PING\r\nECHO through-the-gateway\r\n")); err != nil {
				return err
			}
			r := bufio.NewReader(c)
			var got []string
			for range 3 { // +PONG, then the bulk string $19 and its value
				l, err := r.ReadString('\n')
				if err != nil {
					return fmt.Errorf("after %q: %w", got, err)
				}
				got = append(got, strings.TrimSpace(l))
			}
			if want := []string{"+PONG", "$19", "through-the-gateway"}; strings.Join(got, " ") != strings.Join(want, " ") {
				return fmt.Errorf("Redis answered %q, want %q", got, want)
			}
			return nil
		})
	})
}
