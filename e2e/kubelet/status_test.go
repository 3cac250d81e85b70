package kubelet

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func running(name string, ready bool) v1.ContainerStatus {
	return v1.ContainerStatus{Name: name, Ready: ready, Started: ptrTo(true),
		State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}}
}

func terminated(name string, code int32) v1.ContainerStatus {
	return v1.ContainerStatus{Name: name, State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: code}}}
}

func waiting(name, reason string, lastExit *int32) v1.ContainerStatus {
	s := v1.ContainerStatus{Name: name, State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason}}}
	if lastExit != nil {
		s.LastTerminationState.Terminated = &v1.ContainerStateTerminated{ExitCode: *lastExit}
	}
	return s
}

func statusPod(policy v1.RestartPolicy, inits []v1.Container, ctrs ...string) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: v1.PodSpec{RestartPolicy: policy, InitContainers: inits}}
	for _, c := range ctrs {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: c})
	}
	return p
}

func TestComputePhase(t *testing.T) {
	one := int32(1)
	zero := int32(0)
	always := v1.ContainerRestartPolicyAlways
	tests := []struct {
		name string
		pod  *v1.Pod
		obs  podObservation
		want v1.PodPhase
	}{
		{"nothing started", statusPod(v1.RestartPolicyAlways, nil, "a"), podObservation{}, v1.PodPending},
		{"creating", statusPod(v1.RestartPolicyAlways, nil, "a", "b"),
			podObservation{Containers: []v1.ContainerStatus{running("a", true), waiting("b", "ErrImagePull", nil)}}, v1.PodPending},
		{"running", statusPod(v1.RestartPolicyAlways, nil, "a", "b"),
			podObservation{Containers: []v1.ContainerStatus{running("a", true), running("b", false)}}, v1.PodRunning},
		{"crashloop is running", statusPod(v1.RestartPolicyAlways, nil, "a"),
			podObservation{Containers: []v1.ContainerStatus{waiting("a", "CrashLoopBackOff", &one)}}, v1.PodRunning},
		{"job succeeded", statusPod(v1.RestartPolicyNever, nil, "a", "b"),
			podObservation{Containers: []v1.ContainerStatus{terminated("a", 0), terminated("b", 0)}}, v1.PodSucceeded},
		{"job failed", statusPod(v1.RestartPolicyNever, nil, "a", "b"),
			podObservation{Containers: []v1.ContainerStatus{terminated("a", 0), terminated("b", 2)}}, v1.PodFailed},
		{"never with one still running", statusPod(v1.RestartPolicyNever, nil, "a", "b"),
			podObservation{Containers: []v1.ContainerStatus{running("a", true), terminated("b", 2)}}, v1.PodRunning},
		{"onfailure retrying", statusPod(v1.RestartPolicyOnFailure, nil, "a"),
			podObservation{Containers: []v1.ContainerStatus{waiting("a", "CrashLoopBackOff", &one)}}, v1.PodRunning},
		{"onfailure done", statusPod(v1.RestartPolicyOnFailure, nil, "a"),
			podObservation{Containers: []v1.ContainerStatus{terminated("a", 0)}}, v1.PodSucceeded},
		{"always with a completed container", statusPod(v1.RestartPolicyAlways, nil, "a"),
			podObservation{Containers: []v1.ContainerStatus{waiting("a", "CrashLoopBackOff", &zero)}}, v1.PodRunning},
		{"init running", statusPod(v1.RestartPolicyAlways, []v1.Container{{Name: "init"}}, "a"),
			podObservation{Init: []v1.ContainerStatus{running("init", false)}}, v1.PodPending},
		{"init failed never", statusPod(v1.RestartPolicyNever, []v1.Container{{Name: "init"}}, "a"),
			podObservation{Init: []v1.ContainerStatus{terminated("init", 1)}}, v1.PodFailed},
		{"init failed always retries", statusPod(v1.RestartPolicyAlways, []v1.Container{{Name: "init"}}, "a"),
			podObservation{Init: []v1.ContainerStatus{terminated("init", 1)}}, v1.PodPending},
		{"init done", statusPod(v1.RestartPolicyAlways, []v1.Container{{Name: "init"}}, "a"),
			podObservation{Init: []v1.ContainerStatus{terminated("init", 0)}, Containers: []v1.ContainerStatus{running("a", true)}}, v1.PodRunning},
		{"sidecar started", statusPod(v1.RestartPolicyNever, []v1.Container{{Name: "side", RestartPolicy: &always}}, "a"),
			podObservation{Init: []v1.ContainerStatus{running("side", true)}, Containers: []v1.ContainerStatus{terminated("a", 0)}}, v1.PodSucceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := computePhase(tt.pod, &tt.obs); got != tt.want {
				t.Errorf("phase = %s, want %s", got, tt.want)
			}
		})
	}
}

func condition(st v1.PodStatus, typ v1.PodConditionType) *v1.PodCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			return &st.Conditions[i]
		}
	}
	return nil
}

func TestComputePodStatus(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	earlier := metav1.NewTime(now.Add(-time.Hour))
	pod := statusPod(v1.RestartPolicyAlways, []v1.Container{{Name: "init"}}, "a", "b")
	pod.Status.Conditions = []v1.PodCondition{
		{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: earlier},
		{Type: v1.PodReadyToStartContainers, Status: v1.ConditionTrue, LastTransitionTime: earlier},
		{Type: "weft.io/custom", Status: v1.ConditionTrue},
	}
	pod.Status.QOSClass = v1.PodQOSBestEffort
	start := metav1.NewTime(now.Add(-time.Minute))
	obs := &podObservation{
		SandboxReady: true, PodIPs: []string{"10.244.0.5"}, HostIP: "10.250.0.10", StartTime: &start,
		Init:       []v1.ContainerStatus{terminated("init", 0)},
		Containers: []v1.ContainerStatus{running("a", true), running("b", false)},
	}
	st := computePodStatus(pod, obs, now)
	if st.Phase != v1.PodRunning || st.PodIP != "10.244.0.5" || len(st.PodIPs) != 1 || st.HostIP != "10.250.0.10" ||
		len(st.HostIPs) != 1 || st.StartTime != &start || st.QOSClass != v1.PodQOSBestEffort {
		t.Errorf("status = %+v", st)
	}
	checks := []struct {
		typ    v1.PodConditionType
		status v1.ConditionStatus
		reason string
	}{
		{v1.PodReadyToStartContainers, v1.ConditionTrue, ""},
		{v1.PodInitialized, v1.ConditionTrue, ""},
		{v1.ContainersReady, v1.ConditionFalse, "ContainersNotReady"},
		{v1.PodReady, v1.ConditionFalse, "ContainersNotReady"},
		{v1.PodScheduled, v1.ConditionTrue, ""},
		{"weft.io/custom", v1.ConditionTrue, ""},
	}
	for _, c := range checks {
		got := condition(st, c.typ)
		if got == nil || got.Status != c.status || got.Reason != c.reason {
			t.Errorf("condition %s = %+v, want %s/%s", c.typ, got, c.status, c.reason)
		}
	}
	if c := condition(st, v1.PodReady); c.Message != "containers with unready status: [b]" {
		t.Errorf("Ready message %q", c.Message)
	}
	if c := condition(st, v1.PodReadyToStartContainers); !c.LastTransitionTime.Equal(&earlier) {
		t.Errorf("unchanged condition lost its transition time: %v", c.LastTransitionTime)
	}
	if c := condition(st, v1.PodReady); !c.LastTransitionTime.Time.Equal(now) {
		t.Errorf("new condition transition time %v", c.LastTransitionTime)
	}

	// All ready -> Ready, unless a readiness gate is missing.
	obs.Containers[1].Ready = true
	st = computePodStatus(pod, obs, now)
	if c := condition(st, v1.PodReady); c.Status != v1.ConditionTrue {
		t.Errorf("Ready = %+v", c)
	}
	pod.Spec.ReadinessGates = []v1.PodReadinessGate{{ConditionType: "weft.io/missing"}}
	st = computePodStatus(pod, obs, now)
	if c := condition(st, v1.PodReady); c.Status != v1.ConditionFalse || c.Reason != "ReadinessGatesNotReady" {
		t.Errorf("Ready with a missing gate = %+v", c)
	}
	if c := condition(st, v1.ContainersReady); c.Status != v1.ConditionTrue {
		t.Errorf("ContainersReady = %+v", c)
	}

	// Initialization pending.
	obs.Init = []v1.ContainerStatus{running("init", false)}
	obs.Containers = nil
	st = computePodStatus(statusPod(v1.RestartPolicyAlways, []v1.Container{{Name: "init"}}, "a"), obs, now)
	if c := condition(st, v1.PodInitialized); c.Status != v1.ConditionFalse || c.Message != "containers with incomplete status: [init]" {
		t.Errorf("Initialized = %+v", c)
	}

	// Completed job.
	job := statusPod(v1.RestartPolicyNever, nil, "a")
	st = computePodStatus(job, &podObservation{Containers: []v1.ContainerStatus{terminated("a", 0)}}, now)
	if c := condition(st, v1.PodReady); st.Phase != v1.PodSucceeded || c.Status != v1.ConditionFalse || c.Reason != "PodCompleted" {
		t.Errorf("completed job: phase %s Ready %+v", st.Phase, c)
	}
}

func TestTerminatedFrom(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		es     ExitStatus
		reason string
	}{
		{ExitStatus{ExitCode: 0, StartedAt: now, FinishedAt: now}, "Completed"},
		{ExitStatus{ExitCode: 143, Signal: "SIGTERM"}, "Error"},
		{ExitStatus{ExitCode: 128, StartError: "exec: \"x\": executable file not found in $PATH"}, "StartError"},
	} {
		got := terminatedFrom(&tt.es, "weft://abc")
		if got.Reason != tt.reason || got.ExitCode != int32(tt.es.ExitCode) || got.ContainerID != "weft://abc" {
			t.Errorf("terminatedFrom(%+v) = %+v", tt.es, got)
		}
	}
}
