package e2e

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// testWaypointLocality is issue #17's proof of DestinationRule
// localityLbSetting on a waypoint, run inside TestWaypointBookinfo
// (namespace default uses the waypoint): with outlier detection, the
// waypoint sends every request to the endpoint in its own zone while there
// is one, and every request to the other zone once it is gone; distribute
// splits requests 80/20 between the zones.
func testWaypointLocality(t *testing.T, e *env) {
	nodes := strings.Fields(e.mustKubectl(t, "get", "pods", "-l", "gateway.networking.k8s.io/gateway-name=waypoint",
		"-o", "jsonpath={.items[*].spec.nodeName}"))
	if len(nodes) != 1 {
		t.Fatalf("waypoint pods on nodes %v; want one replica", nodes)
	}
	nearNode, farNode := nodes[0], "node-1"
	if nearNode == farNode {
		farNode = "node-0"
	}
	nearZone, farZone := e.nodeZone(t, nearNode), e.nodeZone(t, farNode)
	region := strings.TrimSpace(e.mustKubectl(t, "get", "node", nearNode, "-o", `jsonpath={.metadata.labels.topology\.kubernetes\.io/region}`))
	if nearZone == "" || farZone == "" || nearZone == farZone || region == "" {
		t.Fatalf("zones of %s and %s: %q and %q, region %q; want two zones of a region", nearNode, farNode, nearZone, farZone, region)
	}
	e.applyYAML(t, fmt.Sprintf(zonalDeployment, "near", nearNode)+"---\n"+fmt.Sprintf(zonalDeployment, "far", farNode)+"---\n"+
		zonalWaypointService+"---\n"+zonalFailoverRule)
	t.Cleanup(func() {
		e.kubectl("delete", "deployment,service,destinationrule", "-l", "e2e=locality", "--wait=true", "--timeout=60s")
	})
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "-l", "e2e=locality", "--timeout=120s")
	const svc = "zonal-wp"

	// Round robin over the two endpoints would alternate; 40 of 40 from
	// near is the waypoint's priority for its own zone.
	eventually(t, "every request to zone "+nearZone, 90*time.Second, func() error {
		if got := e.zonalAnswers(t, svc, 40); got["near"] != 40 {
			return fmt.Errorf("answers by endpoint %v, want all 40 from near (%s, the waypoint's zone)", got, nearZone)
		}
		return nil
	})
	t.Logf("waypoint in %s, endpoints in %s and %s: all 40 from near", nearZone, nearZone, farZone)

	e.mustKubectl(t, "scale", "deployment/zonal-near", "--replicas=0")
	e.mustKubectl(t, "wait", "--for=delete", "pod", "-l", "app=zonal,zone=near", "--timeout=120s")
	eventually(t, "every request to zone "+farZone, 60*time.Second, func() error {
		if got := e.zonalAnswers(t, svc, 40); got["far"] != 40 {
			return fmt.Errorf("answers by endpoint %v, want all 40 from far (%s)", got, farZone)
		}
		return nil
	})
	t.Logf("zone %s without endpoints: all 40 from far", nearZone)

	e.mustKubectl(t, "scale", "deployment/zonal-near", "--replicas=1")
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/zonal-near", "--timeout=120s")
	e.applyYAML(t, fmt.Sprintf(zonalDistributeRule, region, nearZone, farZone))
	// The failover rule sends everything to near; distribute some to far.
	eventually(t, "both zones answer", 90*time.Second, func() error {
		if got := e.zonalAnswers(t, svc, 40); got["near"] == 0 || got["far"] == 0 || got["near"]+got["far"] != 40 {
			return fmt.Errorf("answers by endpoint %v, want both zones and no failures", got)
		}
		return nil
	})
	const n = 200
	got := e.zonalAnswers(t, svc, n)
	// Binomial(200, 0.8): sd 5.66; 4 sd (a false failure ~6e-5).
	if got["near"]+got["far"] != n || math.Abs(float64(got["near"])-0.8*n) > 4*math.Sqrt(n*0.8*0.2) {
		t.Fatalf("distribute 80/20: answers %v of %d, want near within 4 sd of 160", got, n)
	}
	t.Logf("distribute 80/20 over %d requests: %v", n, got)
}

// zonalWaypointService selects both zones' reviews, through the
// namespace's waypoint.
const zonalWaypointService = `apiVersion: v1
kind: Service
metadata:
  name: zonal-wp
  labels: {e2e: locality}
spec:
  selector: {app: zonal}
  ports: [{name: http, port: 9080}]
`

// zonalFailoverRule turns locality failover on: Istio's default
// (proximity) needs outlier detection.
const zonalFailoverRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: zonal-wp
  labels: {e2e: locality}
spec:
  host: zonal-wp
  trafficPolicy:
    loadBalancer:
      localityLbSetting: {enabled: true}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 10s
      baseEjectionTime: 30s
`

// zonalDistributeRule: from the waypoint's zone (region %[1]s, zone
// %[2]s), 80% stays, 20% goes to zone %[3]s.
const zonalDistributeRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: zonal-wp
  labels: {e2e: locality}
spec:
  host: zonal-wp
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: "%[1]s/%[2]s/*"
          to:
            "%[1]s/%[2]s/*": 80
            "%[1]s/%[3]s/*": 20
`
