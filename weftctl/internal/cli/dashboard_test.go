package cli

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/weftctl/internal/kube"
)

func controlPod(name string, ready bool) corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "weft-system"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}}
}

func TestDashboardFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"dashboard"}, errNoCluster.Error()},
		{[]string{"dashboard", "--port", "0", "--browser"}, errNoCluster.Error()},
		{[]string{"dashboard", "--port", "-1"}, "--port -1"},
		{[]string{"dashboard", "--port", "70000"}, "--port 70000"},
		{[]string{"dashboard", "x"}, "unknown command"},
	} {
		_, err := run(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
}

func TestPickControlPod(t *testing.T) {
	deleting := controlPod("weft-control-a", true)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	for _, tc := range []struct {
		name  string
		pods  []corev1.Pod
		avoid string
		want  string
	}{
		{"none", nil, "", ""},
		{"not ready", []corev1.Pod{controlPod("weft-control-a", false)}, "", ""},
		{"deleting", []corev1.Pod{deleting, controlPod("weft-control-b", true)}, "", "weft-control-b"},
		{"first by name", []corev1.Pod{controlPod("weft-control-c", true), controlPod("weft-control-b", true)}, "", "weft-control-b"},
		{"another than the lost one", []corev1.Pod{controlPod("weft-control-c", true), controlPod("weft-control-b", true)}, "weft-control-b", "weft-control-c"},
		{"the lost one if it is the only one", []corev1.Pod{controlPod("weft-control-b", true)}, "weft-control-b", "weft-control-b"},
	} {
		if got := pickControlPod(tc.pods, tc.avoid); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDashboardSessionReconnects: the URL is printed once; when the
// replica's forward ends, the session forwards to the other replica on the
// same local port; interrupting ends it without an error.
func TestDashboardSessionReconnects(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type call struct {
		pod   string
		local int
	}
	var calls []call
	lost := make(chan error, 1)
	var out, errOut bytes.Buffer
	s := &dashboardSession{ns: "weft-system", out: &out, errOut: &errOut, retry: time.Millisecond, check: time.Hour,
		pods: func(context.Context) ([]corev1.Pod, error) {
			return []corev1.Pod{controlPod("weft-control-a", true), controlPod("weft-control-b", true)}, nil
		},
		forward: func(_ context.Context, pod string, local int, _ <-chan struct{}) (*kube.Forward, error) {
			calls = append(calls, call{pod, local})
			switch len(calls) {
			case 1:
				lost <- errors.New("lost connection to pod")
				return &kube.Forward{Port: 41234, Done: lost}, nil
			default:
				cancel()
				return &kube.Forward{Port: local, Done: make(chan error)}, nil
			}
		},
	}
	if err := s.run(ctx); err != nil {
		t.Fatal(err)
	}
	want := []call{{"weft-control-a", 0}, {"weft-control-b", 41234}}
	if len(calls) != 2 || calls[0] != want[0] || calls[1] != want[1] {
		t.Fatalf("forwards %v, want %v", calls, want)
	}
	if got := out.String(); got != "Weft dashboard: http://127.0.0.1:41234/dashboard\n" {
		t.Errorf("stdout %q", got)
	}
	if !strings.Contains(errOut.String(), "lost weft-system/weft-control-a") {
		t.Errorf("stderr does not say the replica was lost:\n%s", errOut.String())
	}
}

func TestDashboardSessionFailsFirstConnect(t *testing.T) {
	s := &dashboardSession{ns: "weft-system", out: &bytes.Buffer{}, errOut: &bytes.Buffer{}, retry: time.Millisecond, check: time.Hour,
		pods: func(context.Context) ([]corev1.Pod, error) {
			return []corev1.Pod{controlPod("weft-control-a", false)}, nil
		}}
	err := s.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no ready weft-control pod") {
		t.Fatalf("err = %v", err)
	}
}

// TestDashboardSessionLeavesADeletedReplica: the forward itself may not
// notice that its pod is gone; the session does, by looking.
func TestDashboardSessionLeavesADeletedReplica(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	pods := []corev1.Pod{controlPod("weft-control-a", true), controlPod("weft-control-b", true)}
	var forwards []string
	var errOut bytes.Buffer
	s := &dashboardSession{ns: "weft-system", out: &bytes.Buffer{}, errOut: &errOut, retry: time.Millisecond, check: time.Millisecond,
		pods: func(context.Context) ([]corev1.Pod, error) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(pods), nil
		},
		forward: func(_ context.Context, pod string, _ int, _ <-chan struct{}) (*kube.Forward, error) {
			forwards = append(forwards, pod)
			mu.Lock()
			defer mu.Unlock()
			if len(forwards) == 1 {
				pods = pods[1:] // weft-control-a is deleted; its forward never ends by itself
			} else {
				cancel()
			}
			return &kube.Forward{Port: 1234, Done: make(chan error)}, nil
		},
	}
	if err := s.run(ctx); err != nil {
		t.Fatal(err)
	}
	if len(forwards) != 2 || forwards[1] != "weft-control-b" {
		t.Fatalf("forwards %v, want weft-control-a then weft-control-b", forwards)
	}
	if !strings.Contains(errOut.String(), "weft-system/weft-control-a is gone or not ready") {
		t.Errorf("stderr:\n%s", errOut.String())
	}
}
