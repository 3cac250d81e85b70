package kubelet

import (
	"context"
	"maps"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
)

func numCPU() int { return runtime.NumCPU() }

func everything() labels.Selector { return labels.Everything() }

// desiredNodeStatus is the status this kubelet reports.
func (k *Kubelet) desiredNodeStatus(old *v1.NodeStatus) v1.NodeStatus {
	now := metav1.Now()
	capacity := v1.ResourceList{
		v1.ResourceCPU:              k.nodeCPU,
		v1.ResourceMemory:           k.nodeMemory,
		v1.ResourcePods:             *resource.NewQuantity(110, resource.DecimalSI),
		v1.ResourceEphemeralStorage: *resource.NewQuantity(diskSize(k.cfg.RootDir), resource.BinarySI),
	}
	st := v1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity.DeepCopy(),
		Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: k.cfg.NodeIP},
			{Type: v1.NodeHostName, Address: k.cfg.NodeName},
		},
		DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(k.cfg.Port)}},
		NodeInfo: v1.NodeSystemInfo{
			MachineID:               k.cfg.NodeName,
			SystemUUID:              k.cfg.NodeName,
			BootID:                  bootID(),
			KernelVersion:           kernelVersion(),
			OSImage:                 "weft e2e node",
			ContainerRuntimeVersion: RuntimeVersion,
			KubeletVersion:          KubeletVersion,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
		},
	}
	conds := []v1.NodeCondition{
		{Type: v1.NodeMemoryPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: v1.NodeDiskPressure, Status: v1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: v1.NodePIDPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
		{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
	}
	for i := range conds {
		conds[i].LastHeartbeatTime = now
		conds[i].LastTransitionTime = now
		if old != nil {
			for _, o := range old.Conditions {
				if o.Type == conds[i].Type && o.Status == conds[i].Status {
					conds[i].LastTransitionTime = o.LastTransitionTime
				}
			}
		}
	}
	st.Conditions = conds
	if old != nil {
		st.Images = old.Images
		st.VolumesInUse = old.VolumesInUse
		st.VolumesAttached = old.VolumesAttached
	}
	return st
}

func diskSize(dir string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0
	}
	return int64(st.Blocks) * int64(st.Bsize)
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return string(trimNL(b))
}

func kernelVersion() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return string(trimNL(b))
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// registerNode creates the Node, or updates it when it already exists
// (re-registration after a restart), retrying until the apiserver answers.
func (k *Kubelet) registerNode(ctx context.Context) error {
	return wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := k.tryRegisterNode(ctx); err != nil {
			k.log.Warn("registering node", "err", err)
			return false, nil
		}
		k.log.Info("node registered", "node", k.cfg.NodeName)
		return true, nil
	})
}

func (k *Kubelet) tryRegisterNode(ctx context.Context) error {
	nodes := k.client.CoreV1().Nodes()
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: k.cfg.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname":  k.cfg.NodeName,
				"kubernetes.io/os":        "linux",
				"kubernetes.io/arch":      runtime.GOARCH,
				"beta.kubernetes.io/os":   "linux",
				"beta.kubernetes.io/arch": runtime.GOARCH,
			},
		},
		Spec: v1.NodeSpec{PodCIDR: k.cfg.PodCIDR},
	}
	maps.Copy(node.Labels, k.cfg.NodeLabels)
	if k.cfg.PodCIDR != "" {
		node.Spec.PodCIDRs = []string{k.cfg.PodCIDR}
	}
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if err == nil {
		created.Status = k.desiredNodeStatus(nil)
		_, err = nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	}
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	existing, err := nodes.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	changed := false
	if existing.Labels == nil {
		existing.Labels = map[string]string{}
	}
	for kk, v := range node.Labels {
		if existing.Labels[kk] != v {
			existing.Labels[kk] = v
			changed = true
		}
	}
	// podCIDR is immutable once set: only fill it in.
	if existing.Spec.PodCIDR == "" && k.cfg.PodCIDR != "" {
		existing.Spec.PodCIDR, existing.Spec.PodCIDRs = k.cfg.PodCIDR, node.Spec.PodCIDRs
		changed = true
	} else if existing.Spec.PodCIDR != "" && k.cfg.PodCIDR != "" && existing.Spec.PodCIDR != k.cfg.PodCIDR {
		k.log.Warn("node already has a different podCIDR; keeping it", "existing", existing.Spec.PodCIDR, "flag", k.cfg.PodCIDR)
	}
	if changed {
		if existing, err = nodes.Update(ctx, existing, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	existing.Status = k.desiredNodeStatus(&existing.Status)
	_, err = nodes.UpdateStatus(ctx, existing, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node Lease every LeaseInterval and posts the node
// status every NodeStatusInterval.
func (k *Kubelet) heartbeat(ctx context.Context) {
	leaseTick := time.NewTicker(k.cfg.LeaseInterval)
	statusTick := time.NewTicker(k.cfg.NodeStatusInterval)
	defer leaseTick.Stop()
	defer statusTick.Stop()
	k.renewLease(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-leaseTick.C:
			k.renewLease(ctx)
		case <-statusTick.C:
			if err := k.updateNodeStatus(ctx); err != nil {
				k.log.Warn("updating node status", "err", err)
			}
		}
	}
}

func (k *Kubelet) updateNodeStatus(ctx context.Context) error {
	nodes := k.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// Someone deleted the Node: register again.
		return k.tryRegisterNode(ctx)
	}
	if err != nil {
		return err
	}
	node.Status = k.desiredNodeStatus(&node.Status)
	_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

func (k *Kubelet) renewLease(ctx context.Context) {
	leases := k.client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	dur := int32(40)
	holder := k.cfg.NodeName
	lease, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Namespace: v1.NamespaceNodeLease},
			Spec:       coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &now},
		}
		k.setLeaseOwner(ctx, lease)
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err != nil {
			k.log.Warn("creating node lease", "err", err)
		}
		return
	}
	if err != nil {
		k.log.Warn("getting node lease", "err", err)
		return
	}
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds, lease.Spec.RenewTime = &holder, &dur, &now
	if len(lease.OwnerReferences) == 0 {
		k.setLeaseOwner(ctx, lease)
	}
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		k.log.Warn("renewing node lease", "err", err)
	}
}

// setLeaseOwner makes the Node own its Lease (garbage collected with it).
func (k *Kubelet) setLeaseOwner(ctx context.Context, lease *coordv1.Lease) {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return
	}
	lease.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
	}}
}
