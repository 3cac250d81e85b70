package kubelet

import (
	"fmt"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podObservation is what the kubelet knows about a pod, from which the
// API status is derived (pure, so it is unit tested).
type podObservation struct {
	SandboxReady bool
	PodIPs       []string
	HostIP       string
	StartTime    *metav1.Time
	Init         []v1.ContainerStatus
	Containers   []v1.ContainerStatus
	// Message/Reason for the pod (e.g. sandbox creation failures).
	Reason, Message string
}

func isSidecar(c *v1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
}

// initDone reports whether init container i is done for the purpose of
// starting the next one: succeeded, or (sidecar) started.
func initDone(c *v1.Container, st *v1.ContainerStatus) bool {
	if st == nil {
		return false
	}
	if isSidecar(c) {
		return st.Started != nil && *st.Started
	}
	return st.State.Terminated != nil && st.State.Terminated.ExitCode == 0
}

func statusByName(sts []v1.ContainerStatus, name string) *v1.ContainerStatus {
	for i := range sts {
		if sts[i].Name == name {
			return &sts[i]
		}
	}
	return nil
}

// computePhase follows the kubelet's getPhase.
func computePhase(pod *v1.Pod, obs *podObservation) v1.PodPhase {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		st := statusByName(obs.Init, c.Name)
		if initDone(c, st) {
			continue
		}
		if !isSidecar(c) && st != nil && st.State.Terminated != nil && st.State.Terminated.ExitCode != 0 &&
			pod.Spec.RestartPolicy == v1.RestartPolicyNever {
			return v1.PodFailed
		}
		return v1.PodPending
	}
	var running, waiting, stopped, succeeded int
	for i := range pod.Spec.Containers {
		st := statusByName(obs.Containers, pod.Spec.Containers[i].Name)
		switch {
		case st == nil:
			waiting++
		case st.State.Running != nil:
			running++
		case st.State.Terminated != nil:
			stopped++
			if st.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case st.LastTerminationState.Terminated != nil:
			stopped++
			if st.LastTerminationState.Terminated.ExitCode == 0 {
				succeeded++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return v1.PodPending
	case running > 0:
		return v1.PodRunning
	case stopped > 0:
		if pod.Spec.RestartPolicy == v1.RestartPolicyAlways {
			return v1.PodRunning
		}
		if stopped == succeeded {
			return v1.PodSucceeded
		}
		if pod.Spec.RestartPolicy == v1.RestartPolicyNever {
			return v1.PodFailed
		}
		return v1.PodRunning
	}
	return v1.PodPending
}

// computePodStatus builds the status to post, keeping condition transition
// times and conditions owned by others from old.
func computePodStatus(pod *v1.Pod, obs *podObservation, now time.Time) v1.PodStatus {
	old := pod.Status
	st := v1.PodStatus{
		Phase:                 computePhase(pod, obs),
		HostIP:                obs.HostIP,
		StartTime:             obs.StartTime,
		QOSClass:              old.QOSClass,
		InitContainerStatuses: obs.Init,
		ContainerStatuses:     obs.Containers,
		Reason:                obs.Reason,
		Message:               obs.Message,
		NominatedNodeName:     old.NominatedNodeName,
	}
	if obs.HostIP != "" {
		st.HostIPs = []v1.HostIP{{IP: obs.HostIP}}
	}
	if len(obs.PodIPs) > 0 {
		st.PodIP = obs.PodIPs[0]
		for _, ip := range obs.PodIPs {
			st.PodIPs = append(st.PodIPs, v1.PodIP{IP: ip})
		}
	}
	mt := metav1.NewTime(now)
	cond := func(t v1.PodConditionType, ok bool, reason, msg string) v1.PodCondition {
		c := v1.PodCondition{Type: t, Status: v1.ConditionFalse, Reason: reason, Message: msg, LastTransitionTime: mt}
		if ok {
			c.Status, c.Reason, c.Message = v1.ConditionTrue, "", ""
		}
		return c
	}
	var notInit, notReady []string
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := statusByName(obs.Init, c.Name)
		if !initDone(c, cs) {
			notInit = append(notInit, c.Name)
		}
		if isSidecar(c) && (cs == nil || !cs.Ready) {
			notReady = append(notReady, c.Name)
		}
	}
	for i := range pod.Spec.Containers {
		cs := statusByName(obs.Containers, pod.Spec.Containers[i].Name)
		if cs == nil || !cs.Ready {
			notReady = append(notReady, pod.Spec.Containers[i].Name)
		}
	}
	terminal := st.Phase == v1.PodSucceeded || st.Phase == v1.PodFailed
	initialized := cond(v1.PodInitialized, len(notInit) == 0, "ContainersNotInitialized",
		fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " ")))
	if terminal && st.Phase == v1.PodSucceeded {
		initialized = cond(v1.PodInitialized, true, "", "")
	}
	ctrReady := cond(v1.ContainersReady, len(notReady) == 0 && !terminal, "ContainersNotReady",
		fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " ")))
	ready := cond(v1.PodReady, len(notReady) == 0 && !terminal, "ContainersNotReady", ctrReady.Message)
	if terminal {
		ctrReady.Reason, ctrReady.Message = "PodCompleted", ""
		ready.Reason, ready.Message = "PodCompleted", ""
	}
	if ready.Status == v1.ConditionTrue {
		var missing []string
		for _, g := range pod.Spec.ReadinessGates {
			ok := false
			for _, c := range old.Conditions {
				if c.Type == g.ConditionType && c.Status == v1.ConditionTrue {
					ok = true
				}
			}
			if !ok {
				missing = append(missing, string(g.ConditionType))
			}
		}
		if len(missing) > 0 {
			ready = cond(v1.PodReady, false, "ReadinessGatesNotReady",
				fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", strings.Join(missing, ", ")))
		}
	}
	ours := []v1.PodCondition{
		cond(v1.PodReadyToStartContainers, obs.SandboxReady, "", ""),
		initialized,
		ready,
		ctrReady,
	}
	owned := map[v1.PodConditionType]bool{}
	for _, c := range ours {
		owned[c.Type] = true
	}
	scheduled := false
	for _, c := range old.Conditions {
		if c.Type == v1.PodScheduled {
			scheduled = true
		}
		if !owned[c.Type] {
			st.Conditions = append(st.Conditions, c)
		}
	}
	if !scheduled {
		st.Conditions = append(st.Conditions, v1.PodCondition{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: mt})
	}
	for _, c := range ours {
		for _, o := range old.Conditions {
			if o.Type == c.Type && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		st.Conditions = append(st.Conditions, c)
	}
	order := map[v1.PodConditionType]int{v1.PodReadyToStartContainers: 0, v1.PodInitialized: 1, v1.PodReady: 2, v1.ContainersReady: 3, v1.PodScheduled: 4}
	sort.SliceStable(st.Conditions, func(i, j int) bool {
		oi, ok := order[st.Conditions[i].Type]
		if !ok {
			oi = 10
		}
		oj, ok := order[st.Conditions[j].Type]
		if !ok {
			oj = 10
		}
		return oi < oj
	})
	return st
}

// statusEqual compares statuses ignoring nothing but pointer identity.
func statusEqual(a, b *v1.PodStatus) bool {
	return apiequality.Semantic.DeepEqual(a, b)
}

// terminatedFrom renders an ExitStatus as the API's terminated state.
func terminatedFrom(es *ExitStatus, containerID string) *v1.ContainerStateTerminated {
	t := &v1.ContainerStateTerminated{
		ExitCode:    int32(es.ExitCode),
		StartedAt:   metav1.NewTime(es.StartedAt),
		FinishedAt:  metav1.NewTime(es.FinishedAt),
		ContainerID: containerID,
	}
	switch {
	case es.StartError != "":
		t.Reason = "StartError"
		t.Message = es.StartError
	case es.ExitCode == 0:
		t.Reason = "Completed"
	default:
		t.Reason = "Error"
	}
	return t
}
