package ca

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func namespace(name string, terminating bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
	if terminating {
		now := metav1.Now()
		ns.DeletionTimestamp = &now
		ns.Status.Phase = corev1.NamespaceTerminating
	}
	return ns
}

func writes(actions []k8stesting.Action) []string {
	var out []string
	for _, a := range actions {
		if v := a.GetVerb(); v == "create" || v == "update" || v == "patch" || v == "delete" {
			out = append(out, v+" "+a.GetNamespace())
		}
	}
	return out
}

func TestBundlePublisherSync(t *testing.T) {
	ctx := context.Background()
	bundle := newTestAuthority(t, Options{}).BundlePEM()
	stale := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMapName, Namespace: "stale"},
		Data:       map[string]string{BundleConfigMapKey: "old root", "extra": "kept"},
	}
	current := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMapName, Namespace: "current"},
		Data:       map[string]string{BundleConfigMapKey: string(bundle)},
	}
	client := fake.NewClientset(stale, current)
	nsInformer := informers.NewSharedInformerFactory(client, 0).Core().V1().Namespaces().Informer()
	for _, ns := range []*corev1.Namespace{namespace("default", false), namespace("stale", false), namespace("current", false), namespace("going", true)} {
		if err := nsInformer.GetStore().Add(ns); err != nil {
			t.Fatal(err)
		}
	}
	p, err := NewBundlePublisher(client, nsInformer, bundle, BundlePublisherOptions{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		ns     string
		writes []string
	}{
		{"default", []string{"create default"}},
		{"default", nil}, // idempotent
		{"stale", []string{"update stale"}},
		{"stale", nil},
		{"current", nil},
		{"going", nil},   // terminating
		{"unknown", nil}, // not in the informer (deleted)
	}
	for i, tc := range tests {
		client.ClearActions()
		if err := p.Sync(ctx, tc.ns); err != nil {
			t.Fatalf("step %d: Sync(%s): %v", i, tc.ns, err)
		}
		got := writes(client.Actions())
		if len(got) != len(tc.writes) || (len(got) > 0 && got[0] != tc.writes[0]) {
			t.Fatalf("step %d: Sync(%s) wrote %v, want %v", i, tc.ns, got, tc.writes)
		}
	}
	for _, ns := range []string{"default", "stale", "current"} {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, BundleConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data[BundleConfigMapKey] != string(bundle) {
			t.Errorf("%s: wrong bundle", ns)
		}
	}
	if cm, _ := client.CoreV1().ConfigMaps("stale").Get(ctx, BundleConfigMapName, metav1.GetOptions{}); cm.Data["extra"] != "kept" {
		t.Error("other keys must be left alone")
	}
	if _, err := client.CoreV1().ConfigMaps("going").Get(ctx, BundleConfigMapName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("terminating namespace got a ConfigMap: %v", err)
	}
}

func TestBundlePublisherRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bundle := newTestAuthority(t, Options{}).BundlePEM()
	client := fake.NewClientset(namespace("default", false), namespace("kube-system", false), namespace("going", true))

	factory := informers.NewSharedInformerFactory(client, 0)
	cmFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(BundleConfigMapListOptions))
	nsInformer := factory.Core().V1().Namespaces().Informer()
	cmInformer := cmFactory.Core().V1().ConfigMaps().Informer()
	p, err := NewBundlePublisher(client, nsInformer, bundle, BundlePublisherOptions{ConfigMaps: cmInformer, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	waitFor := func(ns string, want bool) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, BundleConfigMapName, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return !want, nil
			}
			return want && err == nil && cm.Data[BundleConfigMapKey] == string(bundle), nil
		})
		if err != nil {
			t.Fatalf("ConfigMap in %s present=%v: %v", ns, want, err)
		}
	}
	waitFor("default", true)
	waitFor("kube-system", true)

	// New namespace.
	if _, err := client.CoreV1().Namespaces().Create(ctx, namespace("bookinfo", false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("bookinfo", true)

	// Someone deletes or edits it: repaired.
	if err := client.CoreV1().ConfigMaps("default").Delete(ctx, BundleConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("default", true)
	cm, _ := client.CoreV1().ConfigMaps("bookinfo").Get(ctx, BundleConfigMapName, metav1.GetOptions{})
	cm.Data[BundleConfigMapKey] = "tampered"
	if _, err := client.CoreV1().ConfigMaps("bookinfo").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("bookinfo", true)
	waitFor("going", false)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}
