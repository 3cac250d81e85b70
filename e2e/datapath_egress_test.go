package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/e2e/probe"
	"github.com/weft-mesh/weft/pkg/netns"
)

// The matrix's external server: a probe server on a host of the fabric
// outside the nodes, known to the mesh by a ServiceEntry (no DNS proxy
// yet: clients use the VIP for the name, as curl --resolve).
const (
	externalProbeHost = "probe.external.test"
	externalProbeVIP  = "240.240.0.20"
)

// startEgressPath runs the external probe server and the egress gateway
// (charts/gateway as Istio's egress task installs it) and routes mx-wp's
// HTTP to the external host through it: the ServiceEntry uses mx-wp's
// waypoint, whose VirtualService sends the mesh's requests to the gateway,
// and the gateway's to the external server.
func (e *env) startEgressPath(t *testing.T) {
	t.Helper()
	gw := e.c.FabricGateway().As4()
	addr := fmt.Sprintf("%d.%d.%d.200", gw[0], gw[1], gw[2])
	ns := e.externalHost(t, "probe-ext", addr)
	var s *probe.Server
	if err := netns.Do("/run/netns/"+ns, func() (err error) {
		s, err = probe.Listen(addr, probe.DefaultPorts, nil)
		return err
	}); err != nil {
		t.Fatalf("external probe server: %v", err)
	}
	s.Serve()
	t.Cleanup(s.Close)
	e.mustRun(t, "helm", "install", "weft-egress", filepath.Join(repoRoot(), "charts/gateway"), "-n", "weft-egress",
		"--create-namespace", "--set", "labels.istio=egressgateway", "--set", "service.type=ClusterIP")
	e.applyYAML(t, fmt.Sprintf(egressPathYAML, externalProbeHost, externalProbeVIP, probe.DefaultPorts.HTTP, addr))
}

// waitEgressPath waits until the external host's requests pass the egress
// gateway.
func (e *env) waitEgressPath(t *testing.T, p matrixPath) {
	t.Helper()
	e.mustKubectl(t, "-n", "weft-egress", "wait", "--for=condition=Available", "deployment/weft-egress", "--timeout=120s")
	eventually(t, "requests to "+externalProbeHost+" pass the egress gateway", 60*time.Second, func() error {
		if r := e.runBehaviour(t, p, "source-ip"); r.Class != "" {
			return fmt.Errorf("source-ip: %s (%s)", r.Outcome, r.Detail)
		}
		m, err := e.podMetricsIn("weft-egress", "istio=egressgateway")
		if err != nil {
			return err
		}
		if !strings.Contains(m, `destination_service="`+externalProbeHost+`"`) {
			return fmt.Errorf("the egress gateway counted no request to %s", externalProbeHost)
		}
		return nil
	})
}

// egressPathYAML: %[1]s host, %[2]s VIP, %[3]d HTTP port, %[4]s endpoint.
const egressPathYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: probe-external, namespace: mx-wp, labels: {istio.io/use-waypoint: waypoint}}
spec:
  hosts: [%[1]s]
  addresses: [%[2]s]
  ports:
  - {number: %[3]d, name: http, protocol: HTTP}
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: %[4]s
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: probe-egress, namespace: mx-wp}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [%[1]s]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: probe-external-through-egress-gateway, namespace: mx-wp}
spec:
  hosts: [%[1]s]
  gateways: [probe-egress, mesh]
  http:
  - match:
    - {gateways: [mesh], port: %[3]d}
    route:
    - destination: {host: weft-egress.weft-egress.svc.cluster.local, port: {number: 80}}
  - match:
    - {gateways: [probe-egress], port: 80}
    route:
    - destination: {host: %[1]s, port: {number: %[3]d}}
`
