package install

import (
	"context"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Uninstall removes the trust bundle weft-control published in every
// namespace, and with purge the root CA it created, and nothing else: not a
// ConfigMap it did not write, not the user's plug-in CA.
func TestRemovePublished(t *testing.T) {
	managed := map[string]string{"app.kubernetes.io/managed-by": "weft-control"}
	cm := func(ns, name string, labels map[string]string) runtime.Object {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	}
	secret := func(name string, labels map[string]string) runtime.Object {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: name, Labels: labels}}
	}
	for _, tc := range []struct {
		purge   bool
		secrets []string
	}{{false, []string{"cacerts", "weft-ca-root"}}, {true, []string{"cacerts"}}} {
		kube := fake.NewClientset(
			cm("a", "weft-ca-root-cert", managed), cm("b", "weft-ca-root-cert", managed),
			cm("a", "other", managed), cm("c", "weft-ca-root-cert", nil),
			secret("weft-ca-root", managed), secret("cacerts", nil))
		in := Installer{Kube: kube, Namespace: "weft-system", Progress: func(string) {}}
		if err := in.removePublished(context.Background(), tc.purge); err != nil {
			t.Fatal(err)
		}
		var cms []string
		list, _ := kube.CoreV1().ConfigMaps("").List(context.Background(), metav1.ListOptions{})
		for _, c := range list.Items {
			cms = append(cms, c.Namespace+"/"+c.Name)
		}
		slices.Sort(cms)
		if want := []string{"a/other", "c/weft-ca-root-cert"}; !slices.Equal(cms, want) {
			t.Errorf("purge=%v: ConfigMaps left %v, want %v", tc.purge, cms, want)
		}
		var secrets []string
		sl, _ := kube.CoreV1().Secrets("weft-system").List(context.Background(), metav1.ListOptions{})
		for _, s := range sl.Items {
			secrets = append(secrets, s.Name)
		}
		slices.Sort(secrets)
		if !slices.Equal(secrets, tc.secrets) {
			t.Errorf("purge=%v: Secrets left %v, want %v", tc.purge, secrets, tc.secrets)
		}
	}
}

// The first step of an uninstall switches the agents to release mode on
// their own container, and is a no-op when no agents are left.
func TestReleasePods(t *testing.T) {
	in := Installer{Kube: fake.NewClientset(), Namespace: "weft-system", Progress: func(string) {}}
	if err := in.releasePods(context.Background()); err != nil {
		t.Fatalf("without agents: %v", err)
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: AgentDaemonSet},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: agentContainer, Env: []corev1.EnvVar{{Name: "NODE_NAME", Value: "x"}}}, {Name: "other"}}}}},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 2, UpdatedNumberScheduled: 2, NumberAvailable: 2},
	}
	in.Kube = fake.NewClientset(ds)
	if err := in.releasePods(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := in.Kube.AppsV1().DaemonSets("weft-system").Get(context.Background(), AgentDaemonSet, metav1.GetOptions{})
	cs := got.Spec.Template.Spec.Containers
	if len(cs) != 2 || len(cs[0].Env) != 2 || !slices.Contains(cs[0].Env, corev1.EnvVar{Name: mesh.ReleasePodsEnv, Value: "true"}) ||
		!slices.Contains(cs[0].Env, corev1.EnvVar{Name: "NODE_NAME", Value: "x"}) || len(cs[1].Env) != 0 {
		t.Fatalf("containers after the patch: %+v", cs)
	}
}
