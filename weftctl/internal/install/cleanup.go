package install

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// CleanupLabel marks the node cleanup pods (value: the node).
const CleanupLabel = "weft.io/node-cleanup"

// AgentSpec is what a node cleanup pod copies from the node agents: their
// image and where their host directories are.
type AgentSpec struct {
	Image            string
	PullPolicy       corev1.PullPolicy
	ImagePullSecrets []corev1.LocalObjectReference
	CNIBinDir        string // host path
	CNIConfDir       string // host path
	BPFFSDir         string // host path of the bpffs
	RunDir           string // host path of the agent's socket, spool and lease
}

// The agent's host volumes, by their names in the node-agent chart.
const (
	volBPFFS   = "bpffs"
	volCNIBin  = "cni-bin"
	volCNIConf = "cni-conf"
	volRun     = "run"
)

// AgentSpecFromDaemonSet reads the running agents' image and host paths, so
// the cleanup touches exactly the directories the agents used.
func AgentSpecFromDaemonSet(ds *appsv1.DaemonSet) (AgentSpec, error) {
	pod := ds.Spec.Template.Spec
	var s AgentSpec
	for _, c := range pod.Containers {
		if c.Name == agentContainer {
			s.Image, s.PullPolicy = c.Image, c.ImagePullPolicy
		}
	}
	if s.Image == "" {
		return s, fmt.Errorf("daemonset %s/%s has no container node-agent", ds.Namespace, ds.Name)
	}
	s.ImagePullSecrets = pod.ImagePullSecrets
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			continue
		}
		switch v.Name {
		case volBPFFS:
			s.BPFFSDir = v.HostPath.Path
		case volCNIBin:
			s.CNIBinDir = v.HostPath.Path
		case volCNIConf:
			s.CNIConfDir = v.HostPath.Path
		case volRun:
			s.RunDir = v.HostPath.Path
		}
	}
	if s.BPFFSDir == "" || s.CNIBinDir == "" || s.CNIConfDir == "" || s.RunDir == "" {
		return s, fmt.Errorf("daemonset %s/%s lacks one of the hostPath volumes %s, %s, %s, %s", ds.Namespace, ds.Name, volBPFFS, volCNIBin, volCNIConf, volRun)
	}
	return s, nil
}

// DefaultAgentSpec is the node-agent chart's defaults, for when no agent
// DaemonSet is left to copy (a second uninstall after a partial one).
func DefaultAgentSpec(image string) AgentSpec {
	return AgentSpec{Image: image, PullPolicy: corev1.PullIfNotPresent,
		CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d", BPFFSDir: "/sys/fs/bpf", RunDir: "/var/run/weft"}
}

// CleanupPod is the one-shot pod that runs `weft-node-agent uninstall` on
// node. It has the least the command needs: the host network namespace
// (policy routing rule and nftables table: NET_ADMIN only, as root to own
// the root-owned files) and the four host directories the agent writes.
// No service account token, no privileged mode, no other capability.
func CleanupPod(ns, node string, s AgentSpec) *corev1.Pod {
	hostDir := func(name, path string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: path, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "weft-node-cleanup-",
			Namespace:    ns,
			Labels: map[string]string{
				CleanupLabel:                   node,
				"app.kubernetes.io/name":       "weft-node-cleanup",
				"app.kubernetes.io/managed-by": "weftctl",
				// Never captured by the mesh it removes.
				mesh.LabelDataplaneMode: mesh.DataplaneNone,
			},
		},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			HostNetwork:                  true,
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			ImagePullSecrets:             s.ImagePullSecrets,
			// Every node, whatever its taints: state left behind anywhere
			// breaks pods there.
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			ActiveDeadlineSeconds:         ptr.To[int64](300),
			Containers: []corev1.Container{{
				Name:            "uninstall",
				Image:           s.Image,
				ImagePullPolicy: s.PullPolicy,
				Args: []string{"uninstall",
					"--bpf-dir=/sys/fs/bpf/weft",
					"--cni-bin-dir=/host/opt/cni/bin",
					"--cni-conf-dir=/host/etc/cni/net.d",
					// The same path as on the host, like the agent's.
					"--run-dir=/var/run/weft"},
				SecurityContext: &corev1.SecurityContext{
					Privileged:               ptr.To(false),
					RunAsUser:                ptr.To[int64](0),
					RunAsNonRoot:             ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{
						Drop: []corev1.Capability{"ALL"},
						// ip rule/route and nftables deletions.
						Add: []corev1.Capability{"NET_ADMIN"},
					},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					// Default AppArmor profiles deny writes under /sys/fs/,
					// which unpinning is (as in the agent's DaemonSet).
					AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: volBPFFS, MountPath: "/sys/fs/bpf", MountPropagation: ptr.To(corev1.MountPropagationHostToContainer)},
					{Name: volCNIBin, MountPath: "/host/opt/cni/bin"},
					{Name: volCNIConf, MountPath: "/host/etc/cni/net.d"},
					{Name: volRun, MountPath: "/var/run/weft"},
				},
			}},
			Volumes: []corev1.Volume{
				hostDir(volBPFFS, s.BPFFSDir),
				hostDir(volCNIBin, s.CNIBinDir),
				hostDir(volCNIConf, s.CNIConfDir),
				hostDir(volRun, s.RunDir),
			},
		},
	}
}
