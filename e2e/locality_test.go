package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// testLocality is issue #17's locality proof, run inside TestNodeAgent
// (namespace default enrolled): the curl client on clientNode sends every
// request of a Service with trafficDistribution PreferClose (and of one
// with Istio's networking.istio.io/traffic-distribution annotation) to the
// endpoint in its own zone while that one is there, and every request to
// the other zone's once it is gone.
func testLocality(t *testing.T, e *env, clientNode, farNode string) {
	nearZone, farZone := e.nodeZone(t, clientNode), e.nodeZone(t, farNode)
	if nearZone == "" || farZone == "" || nearZone == farZone {
		t.Fatalf("zones of %s and %s: %q and %q; want two different zones (weft-cluster labels its nodes)", clientNode, farNode, nearZone, farZone)
	}
	e.applyYAML(t, fmt.Sprintf(zonalDeployment, "near", clientNode)+"---\n"+fmt.Sprintf(zonalDeployment, "far", farNode)+"---\n"+zonalServices)
	t.Cleanup(func() {
		e.kubectl("delete", "deployment,service", "-l", "e2e=locality", "--wait=true", "--timeout=60s")
	})
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "-l", "e2e=locality", "--timeout=120s")
	agent := nodeIndex(t, clientNode)
	services := []string{"zonal", "zonal-istio"}

	// The client's agent knows both Services' preference and every
	// endpoint's zone before any request counts.
	e.awaitAgentView(t, agent, func(v agentView) error {
		return v.wantZonal(services, map[string]string{"near": nearZone, "far": farZone, "curl": nearZone})
	})
	for _, svc := range services {
		if got := e.zonalAnswers(t, svc, 40); got["near"] != 40 {
			t.Errorf("%s with both zones' endpoints: answers by endpoint %v, want all 40 from near (%s, the client's zone)", svc, got, nearZone)
		} else {
			t.Logf("%s: client in %s, endpoints in %s and %s: answers %v", svc, nearZone, nearZone, farZone, got)
		}
	}

	// Zone near loses its endpoint: its pod is gone, and the client's
	// agent knows it, before any request counts.
	e.mustKubectl(t, "scale", "deployment/zonal-near", "--replicas=0")
	e.mustKubectl(t, "wait", "--for=delete", "pod", "-l", "app=zonal,zone=near", "--timeout=120s")
	e.awaitAgentView(t, agent, func(v agentView) error {
		return v.wantZonal(services, map[string]string{"far": farZone, "curl": nearZone})
	})
	for _, svc := range services {
		if got := e.zonalAnswers(t, svc, 40); got["far"] != 40 {
			t.Errorf("%s after zone %s lost its endpoint: answers by endpoint %v, want all 40 from far (%s)", svc, nearZone, got, farZone)
		} else {
			t.Logf("%s: zone %s without endpoints: answers %v", svc, nearZone, got)
		}
	}
}

// nodeZone is the node's topology.kubernetes.io/zone label.
func (e *env) nodeZone(t *testing.T, node string) string {
	t.Helper()
	return strings.TrimSpace(e.mustKubectl(t, "get", "node", node, "-o", `jsonpath={.metadata.labels.topology\.kubernetes\.io/zone}`))
}

// zonalAnswers asks svc's reviews API n times from the curl pod, each on a
// new connection, and counts the answers by the zone label ("near", "far")
// of the pod that answered (reviews reports its pod name); failures count
// under their error.
func (e *env) zonalAnswers(t *testing.T, svc string, n int) map[string]int {
	t.Helper()
	pods := map[string]string{}
	out := e.mustKubectl(t, "get", "pods", "-l", "app=zonal", "-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.zone} {end}`)
	for _, f := range strings.Fields(out) {
		name, zone, _ := strings.Cut(f, "=")
		pods[name] = zone
	}
	out, err := e.kubectl("exec", "deploy/curl", "--", "sh", "-c",
		fmt.Sprintf(`for i in $(seq 1 %d); do curl -sS -m 5 http://%s:9080/reviews/0 2>&1; echo; done`, n, svc))
	if err != nil {
		t.Logf("requests to %s: %v", svc, err)
	}
	got := map[string]int{}
	for line := range strings.Lines(out) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r struct {
			PodName string `json:"podname"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil || pods[r.PodName] == "" {
			got["failed: "+strings.TrimSpace(line)]++
			continue
		}
		got[pods[r.PodName]]++
	}
	return got
}

// agentView is the part of a node agent's /config_dump that locality
// needs: workloads' names, zones and health, services' locality mode.
type agentView struct {
	Config struct {
		Workloads map[string]struct {
			Name     string
			Status   string
			Locality struct{ Zone string }
		}
		Services map[string]struct {
			Name          string
			LoadBalancing struct {
				LocalityMode      string
				RoutingPreference []string
			}
		}
	}
}

// wantZonal checks that services prefer the client's zone and that the
// healthy zonal workloads and the client are exactly want (name prefix ->
// zone; "zonal-" is implied for near and far).
func (v agentView) wantZonal(services []string, want map[string]string) error {
	for _, name := range services {
		found := false
		for _, s := range v.Config.Services {
			if s.Name == name {
				found = true
				if lb := s.LoadBalancing; lb.LocalityMode != "FAILOVER" || strings.Join(lb.RoutingPreference, ",") != "NETWORK,REGION,ZONE" {
					return fmt.Errorf("service %s: load balancing %+v, want FAILOVER over NETWORK,REGION,ZONE", name, lb)
				}
			}
		}
		if !found {
			return fmt.Errorf("service %s not known yet", name)
		}
	}
	got := map[string]string{}
	for _, w := range v.Config.Workloads {
		if w.Status != "" && w.Status != "HEALTHY" {
			continue
		}
		for prefix := range want {
			p := prefix + "-"
			if prefix != "curl" {
				p = "zonal-" + p
			}
			if strings.HasPrefix(w.Name, p) {
				got[prefix] = w.Locality.Zone
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("healthy workloads' zones %v, want %v", got, want)
	}
	return nil
}

// awaitAgentView waits until node agent i's configuration passes check.
func (e *env) awaitAgentView(t *testing.T, i int, check func(agentView) error) {
	t.Helper()
	eventually(t, fmt.Sprintf("node-%d's agent configuration", i), 60*time.Second, func() error {
		dump, err := e.agentAdmin(i, "/config_dump")
		if err != nil {
			return err
		}
		var v agentView
		if err := json.Unmarshal([]byte(dump), &v); err != nil {
			return err
		}
		return check(v)
	})
}

// zonalDeployment is reviews v1 (which answers with its pod name) on one
// node: zone %[1]s ("near", the client's, or "far"), node %[2]s.
const zonalDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: zonal-%[1]s
  labels: {e2e: locality}
spec:
  selector: {matchLabels: {app: zonal, zone: %[1]s}}
  template:
    metadata:
      labels: {app: zonal, zone: %[1]s}
    spec:
      nodeSelector: {kubernetes.io/hostname: %[2]s}
      terminationGracePeriodSeconds: 0
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.3
        ports: [{containerPort: 9080}]
`

// zonalServices select both zones' reviews: one with trafficDistribution
// PreferClose, one with Istio's annotation.
const zonalServices = `apiVersion: v1
kind: Service
metadata:
  name: zonal
  labels: {e2e: locality}
spec:
  trafficDistribution: PreferClose
  selector: {app: zonal}
  ports: [{port: 9080}]
---
apiVersion: v1
kind: Service
metadata:
  name: zonal-istio
  labels: {e2e: locality}
  annotations:
    networking.istio.io/traffic-distribution: PreferClose
spec:
  selector: {app: zonal}
  ports: [{port: 9080}]
`
