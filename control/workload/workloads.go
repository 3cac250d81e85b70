package workload

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/mesh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels read for telemetry names and locality.
const (
	labelCanonicalName     = "service.istio.io/canonical-name"
	labelCanonicalRevision = "service.istio.io/canonical-revision"
	labelPodTemplateHash   = "pod-template-hash"
	labelTopologyRegion    = "topology.kubernetes.io/region"
	labelTopologyZone      = "topology.kubernetes.io/zone"
	labelTopologySubzone   = "topology.istio.io/subzone"
)

// podWorkload translates a pod, nil when it is not a workload. As in Istio
// (podWorkloadBuilder), only Running pods and Pending pods that already have
// an IP (init containers running) are workloads, and hostNetwork pods never
// are: their IP is the node's, so it cannot identify the pod. Pods outside
// the mesh are still workloads, with tunnel protocol NONE, so that node
// agents know the destination takes plain TCP.
func (t *translator) podWorkload(pod *corev1.Pod) *workloadv1.Workload {
	if pod == nil || pod.Spec.HostNetwork ||
		(pod.Status.Phase != corev1.PodRunning && pod.Status.Phase != corev1.PodPending) {
		return nil
	}
	addrs := t.podIPs(pod)
	if len(addrs) == 0 {
		return nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	w := &workloadv1.Workload{
		Uid:                   t.cfg.ClusterID + "//Pod/" + pod.Namespace + "/" + pod.Name,
		Name:                  pod.Name,
		Namespace:             pod.Namespace,
		Addresses:             addrs,
		Node:                  pod.Spec.NodeName,
		ServiceAccount:        sa,
		TrustDomain:           t.cfg.TrustDomain,
		Waypoint:              t.workloadWaypoint(pod),
		Services:              t.podServices(pod),
		Locality:              t.podLocality(pod),
		Status:                podStatus(pod),
		AuthorizationPolicies: t.podPolicies(pod),
		ClusterId:             t.cfg.ClusterID,
	}
	if mesh.Enrolled(pod.Labels, t.namespaceLabels(pod.Namespace)) {
		w.TunnelProtocol = workloadv1.TunnelProtocol_HBONE
	}
	w.WorkloadName, w.WorkloadType = workloadNameAndType(pod)
	w.CanonicalName, w.CanonicalRevision = canonicalNameRevision(pod.Labels, w.WorkloadName)
	return w
}

// podIPs returns the pod's IPs in canonical form (status.podIPs, else
// status.podIP); a pod without any is not addressable yet.
// usableIP parses an address a workload or service can have, the way node
// agents do (node-agent/config): no zone, not unspecified, an IPv4-mapped
// IPv6 address as IPv4. Anything else is refused here, because one address
// a node agent cannot use makes it reject the whole Address update (and
// keep its previous configuration for every workload).
func usableIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("%q is not a usable address", s)
	}
	return a.Unmap(), nil
}

func (t *translator) podIPs(pod *corev1.Pod) []string {
	raw := pod.Status.PodIPs
	if len(raw) == 0 && pod.Status.PodIP != "" {
		raw = []corev1.PodIP{{IP: pod.Status.PodIP}}
	}
	out := make([]string, 0, len(raw))
	for _, pip := range raw {
		ip := pip.IP
		addr, err := usableIP(ip)
		if err != nil {
			t.problem("Pod", pod.Namespace, pod.Name, "status.podIPs: %v; ignored", err)
			continue
		}
		out = append(out, addr.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// podStatus is HEALTHY iff the Ready condition is True and the pod is not
// terminating. Istio looks at the Ready condition only; Weft also marks a
// terminating pod (deletionTimestamp set) UNHEALTHY, as the EndpointSlice
// controller does (ready=false): new connections go elsewhere, while the
// workload stays known so that its open connections keep their identity
// and policy until it is gone.
func podStatus(pod *corev1.Pod) workloadv1.WorkloadStatus {
	if pod.DeletionTimestamp != nil {
		return workloadv1.WorkloadStatus_UNHEALTHY
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return workloadv1.WorkloadStatus_HEALTHY
			}
			break
		}
	}
	return workloadv1.WorkloadStatus_UNHEALTHY
}

// canonicalNameRevision returns the telemetry service name and revision, in
// Istio's order of preference: the canonical labels, the recommended
// app.kubernetes.io labels, the app/version labels; else the workload name
// and "latest".
func canonicalNameRevision(lbls map[string]string, workloadName string) (name, revision string) {
	name = firstLabel(lbls, labelCanonicalName, "app.kubernetes.io/name", "app")
	if name == "" {
		name = workloadName
	}
	revision = firstLabel(lbls, labelCanonicalRevision, "app.kubernetes.io/version", "version")
	if revision == "" {
		revision = "latest"
	}
	return name, revision
}

func firstLabel(lbls map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := lbls[k]; v != "" {
			return v
		}
	}
	return ""
}

// workloadNameAndType derives the owning workload from the pod's controller
// (else first) owner reference, like Istio's GetDeployMetaFromPod: a
// ReplicaSet whose name ends in the pod-template-hash belongs to the
// Deployment named by the rest; a Job named "<name>-<8-10 digits>" was made
// by CronJob <name>; any other owner is itself the workload; a bare pod is
// its own workload of type "pod". Types are lower-case kinds.
func workloadNameAndType(pod *corev1.Pod) (name, typ string) {
	ref := ownerRef(pod.OwnerReferences)
	if ref == nil || ref.Name == "" || ref.Kind == "" {
		return pod.Name, "pod"
	}
	switch ref.Kind {
	case "ReplicaSet":
		if h := pod.Labels[labelPodTemplateHash]; h != "" && strings.HasSuffix(ref.Name, "-"+h) && len(ref.Name) > len(h)+1 {
			return strings.TrimSuffix(ref.Name, "-"+h), "deployment"
		}
	case "Job":
		if cron, ok := cronJobName(ref.Name); ok {
			return cron, "cronjob"
		}
	}
	return ref.Name, strings.ToLower(ref.Kind)
}

func ownerRef(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	if len(refs) > 0 {
		return &refs[0]
	}
	return nil
}

// cronJobName recognises the Job names the CronJob controller makes:
// "<cronjob>-<scheduled time in minutes>", 8 to 10 digits.
func cronJobName(job string) (string, bool) {
	i := strings.LastIndexByte(job, '-')
	if i <= 0 {
		return "", false
	}
	digits := job[i+1:]
	if len(digits) < 8 || len(digits) > 10 {
		return "", false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return job[:i], true
}
