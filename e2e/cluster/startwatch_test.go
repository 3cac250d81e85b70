package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A component that crash-loops while the cluster starts ends the start at
// its second exit with its name, exit status and the end of its log, not
// with a timeout on what waits downstream (kube-proxy without iptables: no
// cluster DNS).
func TestComponentCrashLoopEndsTheStartWithItsLog(t *testing.T) {
	w := newStartWatch(context.Background())
	defer w.done()
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	script := `for i in $(seq 1 30); do echo "line $i"; done; echo "iptables is not available on this host" >&2; exit 3`
	p := &process{name: "kube-proxy-node-0", path: "/bin/sh", args: []string{"-c", script}, logDir: t.TempDir(), onExit: w.exited}
	start := time.Now()
	if err := p.start(slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	defer p.stop(time.Second)
	err := poll(ctx, "cluster DNS (kube-system/coredns) available", func(context.Context) error {
		return errors.New("coredns: 0/1 replicas available")
	})
	if err == nil {
		t.Fatal("the wait succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the wait took %s after the component exited", took)
	}
	msg := err.Error()
	for _, want := range []string{"kube-proxy-node-0 exited again (exit status 3; first exit status 3) while the cluster was starting", "kube-proxy-node-0.log",
		"    line 12\n", "    iptables is not available on this host"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "line 11\n") || strings.Contains(msg, "timed out") {
		t.Errorf("error has more than the last %d log lines, or a timeout:\n%s", logTailLines, msg)
	}
	if exitCause(w.ctx) == nil {
		t.Error("the start's context does not carry the component exit")
	}
}

// A component that exits once and then runs (kube-proxy 1.37's start-up
// race) is restarted, as a kubelet would, and does not fail the start.
func TestOneExitIsRestartedNotFatal(t *testing.T) {
	w := newStartWatch(context.Background())
	defer w.done()
	dir := t.TempDir()
	// Exits 2 the first time, then stays up (until stop's SIGTERM).
	script := `if [ ! -e ` + dir + `/ran ]; then touch ` + dir + `/ran; echo panic >&2; exit 2; fi; echo up; exec sleep 600`
	p := &process{name: "kube-proxy-node-0", path: "/bin/sh", args: []string{"-c", script}, logDir: dir, onExit: w.exited}
	if err := p.start(slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	defer p.stop(time.Second)
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	err := poll(ctx, "the restarted component up", func(context.Context) error {
		if log, _ := os.ReadFile(p.logPath()); !strings.Contains(string(log), "up\n") {
			return errors.New("not up yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for the restart: %v", err)
	}
	if err := exitCause(w.ctx); err != nil {
		t.Errorf("one exit ended the start: %v", err)
	}
}

// Once the cluster is up, an exit is restarted like before and fails nothing.
func TestExitAfterStartIsNotAFailure(t *testing.T) {
	w := newStartWatch(context.Background())
	w.done()
	p := &process{name: "kube-proxy-node-0", path: "/bin/sh", args: []string{"-c", "exit 1"}, logDir: t.TempDir()}
	w.exited(p, nil)
	if err := exitCause(w.ctx); err != nil {
		t.Errorf("an exit after the start became %v", err)
	}
}

// A crashing CoreDNS container fails the DNS wait with its exit and log.
func TestPodFailureNamesTheContainerAndItsLog(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns-abc", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: "coredns", RestartCount: 2,
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}},
		}}},
	}
	c := &Cluster{Client: fake.NewClientset(pod)}
	err := podFailure(context.Background(), c, "kube-system", "k8s-app=kube-dns")
	var f fatal
	if !errors.As(err, &f) {
		t.Fatalf("podFailure = %v, want a fatal error", err)
	}
	for _, want := range []string{"kube-system/coredns-abc container coredns exited (exit code 1, Error)", "fake logs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	pod.Status.ContainerStatuses[0] = corev1.ContainerStatus{Name: "coredns", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	if err := podFailure(context.Background(), &Cluster{Client: fake.NewClientset(pod)}, "kube-system", "k8s-app=kube-dns"); err != nil {
		t.Errorf("a running container is a failure: %v", err)
	}
}
