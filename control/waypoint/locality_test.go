package waypoint

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/control/xds"
)

// reload runs the workload translation again on tc's changed inputs.
func reload(t *testing.T, tc testCase) testCase {
	t.Helper()
	tc.in.Addresses = workload.Translate(workload.Config{}, tc.workload).Addresses
	tc.in.Pods = tc.workload.Pods
	return tc
}

// priorities renders the load assignment of cluster as
// "priority:region/zone/subzone=weight" per locality.
func priorities(t *testing.T, res *xds.Resources, cluster string) []string {
	t.Helper()
	for _, cla := range res.Endpoints {
		if cla.ClusterName != cluster {
			continue
		}
		var out []string
		for _, l := range cla.Endpoints {
			out = append(out, fmt.Sprintf("%d:%s=%d", l.Priority, localityString(l.Locality), l.LoadBalancingWeight.GetValue()))
		}
		return out
	}
	t.Fatalf("no load assignment for %s", cluster)
	return nil
}

// TestLocalityPriorities: the waypoint's load assignments carry priorities
// relative to the zone of its pod, and none when its replicas run in
// different zones (reported).
func TestLocalityPriorities(t *testing.T) {
	tc := loadFiles(t, "testdata/bookinfo.yaml", "testdata/locality/input.yaml")
	const cluster = "outbound|9080||zonal-failover.default.svc.cluster.local"
	out := Translate(Config{}, tc.in)
	want := []string{"0:r1/z1/=1", "1:r1/z2/=1", "2:r3/z4/=2", "3:r2/z3/=1"}
	if got := priorities(t, out.Waypoints["default/waypoint"], cluster); !slices.Equal(got, want) {
		t.Fatalf("waypoint in r1/z1: %v, want %v", got, want)
	}

	// A second replica in r1/z2: one snapshot cannot serve both.
	var second *corev1.Pod
	for _, p := range tc.workload.Pods {
		if strings.HasPrefix(p.Name, "waypoint-") {
			second = p.DeepCopy()
		}
	}
	second.Name, second.Labels["topology.kubernetes.io/zone"] = "waypoint-5d8f7c-bbbbb", "z2"
	second.Status.PodIP, second.Status.PodIPs = "10.244.2.20", []corev1.PodIP{{IP: "10.244.2.20"}}
	tc.workload.Pods = append(tc.workload.Pods, second)
	tc = reload(t, tc)
	out = Translate(Config{}, tc.in)
	want = []string{"0:r1/z1/=1", "0:r1/z2/=1", "0:r2/z3/=1", "0:r3/z4/=2"}
	if got := priorities(t, out.Waypoints["default/waypoint"], cluster); !slices.Equal(got, want) {
		t.Fatalf("waypoint replicas in r1/z1 and r1/z2: %v, want %v", got, want)
	}
	msg := "localityLbSetting of cluster " + cluster + ": the replicas of waypoint default/waypoint run in different localities (r1/z1/, r1/z2/)"
	if !slices.ContainsFunc(out.Problems, func(p workload.Problem) bool { return strings.HasPrefix(p.Message, msg) }) {
		t.Fatalf("problems %v, want one starting %q", out.Problems, msg)
	}
}
