package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/mesh"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const image = "ghcr.io/weft-mesh/waypoint:v1.2.3"

func gateway(name string, mutate ...func(*gatewayv1.Gateway)) *gatewayv1.Gateway {
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), Generation: 3},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: ClassName,
			Listeners:        []gatewayv1.Listener{{Name: ListenerName, Port: mesh.HBONEPort, Protocol: HBONE}},
		},
	}
	for _, m := range mutate {
		m(gw)
	}
	return gw
}

// typed decodes an apply configuration into its API type.
func typed[T any](t *testing.T, ac any) *T {
	t.Helper()
	b, err := json.Marshal(ac)
	if err != nil {
		t.Fatal(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name     string
		mutate   func(*gatewayv1.Gateway)
		accepted bool
		reason   gatewayv1.GatewayConditionReason
		replicas int32
	}{
		{"default", func(*gatewayv1.Gateway) {}, true, gatewayv1.GatewayReasonAccepted, 1},
		{"replicas annotation", func(g *gatewayv1.Gateway) { g.Annotations = map[string]string{AnnotationReplicas: "3"} }, true, gatewayv1.GatewayReasonAccepted, 3},
		{"zero replicas", func(g *gatewayv1.Gateway) { g.Annotations = map[string]string{AnnotationReplicas: "0"} }, true, gatewayv1.GatewayReasonAccepted, 0},
		{"bad replicas", func(g *gatewayv1.Gateway) { g.Annotations = map[string]string{AnnotationReplicas: "many"} }, false, gatewayv1.GatewayReasonInvalidParameters, 0},
		{"negative replicas", func(g *gatewayv1.Gateway) { g.Annotations = map[string]string{AnnotationReplicas: "-1"} }, false, gatewayv1.GatewayReasonInvalidParameters, 0},
		{"parametersRef", func(g *gatewayv1.Gateway) {
			g.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{ParametersRef: &gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "x"}}
		}, false, gatewayv1.GatewayReasonInvalidParameters, 0},
		{"HTTP listener", func(g *gatewayv1.Gateway) { g.Spec.Listeners[0].Protocol = gatewayv1.HTTPProtocolType }, false, ReasonUnsupportedValue, 0},
		{"wrong port", func(g *gatewayv1.Gateway) { g.Spec.Listeners[0].Port = 15009 }, false, ReasonUnsupportedValue, 0},
		{"extra listener", func(g *gatewayv1.Gateway) {
			g.Spec.Listeners = append(g.Spec.Listeners, gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType})
		}, false, ReasonUnsupportedValue, 0},
		{"no listener", func(g *gatewayv1.Gateway) { g.Spec.Listeners = nil }, false, ReasonUnsupportedValue, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Validate(gateway("wp", c.mutate))
			if v.Accepted != c.accepted || v.Reason != c.reason || v.Replicas != c.replicas || v.Message == "" {
				t.Errorf("Validate = %+v, want accepted=%v reason=%s replicas=%d", v, c.accepted, c.reason, c.replicas)
			}
		})
	}
}

func TestDesired(t *testing.T) {
	gw := gateway("wp", func(g *gatewayv1.Gateway) {
		g.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{
			Labels:      map[gatewayv1.LabelKey]gatewayv1.LabelValue{"team": "a", LabelAppName: "overridden"},
			Annotations: map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"note": "x"},
		}
	})
	objs := Desired(Config{Image: image}, gw, 2)
	sa := typed[corev1.ServiceAccount](t, objs.ServiceAccount)
	dep := typed[appsv1.Deployment](t, objs.Deployment)
	svc := typed[corev1.Service](t, objs.Service)

	wantOwner := metav1.OwnerReference{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Name: "wp", UID: "uid-wp", Controller: ptr.To(true)}
	for _, m := range []metav1.Object{sa, dep, svc} {
		if m.GetNamespace() != "default" || m.GetName() != "wp" {
			t.Errorf("%T named %s/%s", m, m.GetNamespace(), m.GetName())
		}
		if refs := m.GetOwnerReferences(); len(refs) != 1 || refs[0] != wantOwner {
			if len(refs) != 1 || refs[0].UID != wantOwner.UID || !ptr.Deref(refs[0].Controller, false) || refs[0].Kind != "Gateway" || refs[0].APIVersion != wantOwner.APIVersion {
				t.Errorf("%T owner refs %+v", m, refs)
			}
		}
		l := m.GetLabels()
		if l[LabelGatewayName] != "wp" || l[LabelAppName] != AppName || l["team"] != "a" {
			t.Errorf("%T labels %v", m, l)
		}
		// Scrape annotations go on the pods only: on the Service they would
		// make Istio's kubernetes-service-endpoints job scrape them twice.
		if a := m.GetAnnotations(); a["note"] != "x" || a["prometheus.io/scrape"] != "" {
			t.Errorf("%T annotations %v", m, a)
		}
	}

	if ptr.Deref(dep.Spec.Replicas, 0) != 2 {
		t.Errorf("replicas %v", dep.Spec.Replicas)
	}
	if sel := dep.Spec.Selector.MatchLabels; len(sel) != 1 || sel[LabelGatewayName] != "wp" {
		t.Errorf("selector %v", sel)
	}
	pl := dep.Spec.Template.Labels
	if pl[LabelGatewayName] != "wp" || pl[LabelDataplaneMode] != "none" || pl[LabelAppName] != AppName {
		t.Errorf("pod labels %v", pl)
	}
	wantPodAnnotations := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/metrics", "note": "x"}
	if pa := dep.Spec.Template.Annotations; !maps.Equal(pa, wantPodAnnotations) {
		t.Errorf("pod annotations %v, want %v", pa, wantPodAnnotations)
	}
	overridden := typed[appsv1.Deployment](t, Desired(Config{Image: image}, gateway("wp", func(g *gatewayv1.Gateway) {
		g.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{
			Annotations: map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"prometheus.io/scrape": "false"},
		}
	}), 1).Deployment)
	if a := overridden.Spec.Template.Annotations; a["prometheus.io/scrape"] != "false" || a["prometheus.io/port"] != "15020" {
		t.Errorf("pod annotations %v: the Gateway's infrastructure annotations must win", a)
	}
	ps := dep.Spec.Template.Spec
	if ps.ServiceAccountName != "wp" || ptr.Deref(ps.AutomountServiceAccountToken, true) {
		t.Errorf("pod SA %q automount %v", ps.ServiceAccountName, ps.AutomountServiceAccountToken)
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("containers %v", ps.Containers)
	}
	c := ps.Containers[0]
	if c.Image != image || !slices.Equal(c.Args, []string{"--gateway=default/wp"}) {
		t.Errorf("image %s args %v", c.Image, c.Args)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = "field:" + e.ValueFrom.FieldRef.FieldPath
		} else {
			env[e.Name] = e.Value
		}
	}
	wantEnv := map[string]string{"POD_NAME": "field:metadata.name", "POD_NAMESPACE": "field:metadata.namespace",
		"SERVICE_ACCOUNT": "field:spec.serviceAccountName", "GATEWAY_NAME": "wp"}
	if fmt.Sprint(env) != fmt.Sprint(wantEnv) {
		t.Errorf("env %v, want %v", env, wantEnv)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["hbone"] != 15008 || ports["metrics"] != 15020 || ports["readiness"] != 15021 {
		t.Errorf("ports %v", ports)
	}
	if g := c.ReadinessProbe.HTTPGet; g == nil || g.Path != "/healthz/ready" || g.Port.IntValue() != 15021 {
		t.Errorf("readiness probe %+v", c.ReadinessProbe)
	}
	sc := c.SecurityContext
	if !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.RunAsUser, 0) != 1337 || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		!ptr.Deref(sc.ReadOnlyRootFilesystem, false) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("security context %+v", sc)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	tok := vols["weft-token"].Projected
	if mounts["weft-token"] != "/var/run/secrets/weft" || tok == nil || len(tok.Sources) != 1 {
		t.Fatalf("token volume %+v mounted at %q", vols["weft-token"], mounts["weft-token"])
	}
	if p := tok.Sources[0].ServiceAccountToken; p.Audience != "weft-ca" || p.Path != "token" || ptr.Deref(p.ExpirationSeconds, 0) != 3600 {
		t.Errorf("token projection %+v", p)
	}
	if cm := vols["weft-ca-root"].ConfigMap; cm == nil || cm.Name != "weft-ca-root-cert" || mounts["weft-ca-root"] != "/etc/weft/ca-root" {
		t.Errorf("root cert volume %+v at %q", vols["weft-ca-root"], mounts["weft-ca-root"])
	}

	if svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "mesh" ||
		svc.Spec.Ports[0].Port != 15008 || svc.Spec.Ports[0].TargetPort.IntValue() != 15008 {
		t.Errorf("service spec %+v", svc.Spec)
	}
	if sel := svc.Spec.Selector; len(sel) != 1 || sel[LabelGatewayName] != "wp" {
		t.Errorf("service selector %v", sel)
	}
}

// containerEnv is the plain-value environment of every container of dep.
func containerEnv(t *testing.T, dep *appsv1.Deployment) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, c := range dep.Spec.Template.Spec.Containers {
		env := map[string]string{}
		for _, e := range c.Env {
			if _, dup := env[e.Name]; dup {
				t.Errorf("container %s: env %s set twice", c.Name, e.Name)
			}
			env[e.Name] = e.Value
		}
		out = append(out, env)
	}
	if len(out) == 0 {
		t.Fatal("no containers")
	}
	return out
}

func TestDesiredTracing(t *testing.T) {
	gw := gateway("wp", func(g *gatewayv1.Gateway) { g.Namespace = "shop" })
	t.Run("off by default", func(t *testing.T) {
		dep := typed[appsv1.Deployment](t, Desired(Config{Image: image}, gw, 1).Deployment)
		for _, env := range containerEnv(t, dep) {
			for k := range env {
				if strings.HasPrefix(k, "OTEL_") {
					t.Errorf("tracing not configured but env has %s=%q", k, env[k])
				}
			}
		}
	})
	t.Run("endpoint and service name on every container", func(t *testing.T) {
		const ep = "http://otel-collector.observability:4318"
		dep := typed[appsv1.Deployment](t, Desired(Config{Image: image, TracingEndpoint: ep}, gw, 1).Deployment)
		for _, env := range containerEnv(t, dep) {
			if env[EnvOTLPEndpoint] != ep || env[EnvServiceName] != "wp.shop" {
				t.Errorf("env %v, want %s=%s and %s=wp.shop", env, EnvOTLPEndpoint, ep, EnvServiceName)
			}
			if env["GATEWAY_NAME"] != "wp" {
				t.Errorf("env %v lost GATEWAY_NAME", env)
			}
		}
	})
}

// TestDesiredGODEBUG: the containers get Config.GODEBUG (weft-control's
// --waypoint-godebug), and none when it is empty.
func TestDesiredGODEBUG(t *testing.T) {
	gw := gateway("wp", func(g *gatewayv1.Gateway) { g.Namespace = "shop" })
	for _, v := range []string{mesh.ProxyGODEBUG, ""} {
		dep := typed[appsv1.Deployment](t, Desired(Config{Image: image, GODEBUG: v}, gw, 1).Deployment)
		for _, env := range containerEnv(t, dep) {
			got, set := env["GODEBUG"]
			if got != v || set != (v != "") {
				t.Errorf("Config.GODEBUG %q: env GODEBUG %q (set: %v)", v, got, set)
			}
		}
	}
}

// TestDesiredGOMAXPROCS: Config.GOMAXPROCS (weft-control's
// --waypoint-gomaxprocs) pins the containers' GOMAXPROCS; 0 sets none, so
// they follow their load (pkg/gomaxprocs).
func TestDesiredGOMAXPROCS(t *testing.T) {
	gw := gateway("wp", func(g *gatewayv1.Gateway) { g.Namespace = "shop" })
	for v, want := range map[int]string{0: "", 2: "2"} {
		dep := typed[appsv1.Deployment](t, Desired(Config{Image: image, GOMAXPROCS: v}, gw, 1).Deployment)
		for _, env := range containerEnv(t, dep) {
			got, set := env["GOMAXPROCS"]
			if got != want || set != (want != "") {
				t.Errorf("Config.GOMAXPROCS %d: env GOMAXPROCS %q (set: %v)", v, got, set)
			}
		}
	}
}

func cond(st gatewayv1.GatewayStatus, typ gatewayv1.GatewayConditionType) string {
	c := meta.FindStatusCondition(st.Conditions, string(typ))
	if c == nil {
		return "missing"
	}
	return fmt.Sprintf("%s/%s/%d", c.Status, c.Reason, c.ObservedGeneration)
}

func TestStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	gw := gateway("wp")
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}}}
	unavailable := &appsv1.Deployment{}
	available := &appsv1.Deployment{Status: appsv1.DeploymentStatus{AvailableReplicas: 1, ReadyReplicas: 1}}
	ok := Validate(gw)
	bad := Validate(gateway("wp", func(g *gatewayv1.Gateway) { g.Spec.Listeners[0].Port = 80 }))

	cases := []struct {
		name                 string
		v                    Validation
		dep                  *appsv1.Deployment
		svc                  *corev1.Service
		accepted, programmed string
		addrs                []string
	}{
		{"nothing yet", ok, nil, nil, "True/Accepted/3", "False/Pending/3", nil},
		{"service, no ready pod", ok, unavailable, svc, "True/Accepted/3", "False/Pending/3", []string{"10.96.0.10"}},
		{"available", ok, available, svc, "True/Accepted/3", "True/Programmed/3", []string{"10.96.0.10"}},
		{"available, no service", ok, available, nil, "True/Accepted/3", "False/AddressNotAssigned/3", nil},
		{"bad listener", bad, available, svc, "False/UnsupportedValue/3", "False/Invalid/3", []string{"10.96.0.10"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := Status(gw, c.v, c.dep, c.svc, nil, now)
			if a, p := cond(st, gatewayv1.GatewayConditionAccepted), cond(st, gatewayv1.GatewayConditionProgrammed); a != c.accepted || p != c.programmed {
				t.Errorf("Accepted %s Programmed %s, want %s %s", a, p, c.accepted, c.programmed)
			}
			var addrs []string
			for _, a := range st.Addresses {
				if ptr.Deref(a.Type, "") != gatewayv1.IPAddressType {
					t.Errorf("address type %v", a.Type)
				}
				addrs = append(addrs, a.Value)
			}
			if !slices.Equal(addrs, c.addrs) {
				t.Errorf("addresses %v, want %v", addrs, c.addrs)
			}
		})
	}

	// Recomputing from a written status changes nothing, timestamps included.
	gw.Status = Status(gw, ok, available, svc, nil, now)
	again := Status(gw, ok, available, svc, nil, now.Add(time.Hour))
	if !StatusEqual(gw.Status, again) {
		t.Error("status not stable")
	}
	if c := meta.FindStatusCondition(again.Conditions, "Programmed"); !c.LastTransitionTime.Time.Equal(now) {
		t.Errorf("transition time moved to %v", c.LastTransitionTime)
	}
	// Conditions of others are kept.
	gw.Status.Conditions = append(gw.Status.Conditions, metav1.Condition{Type: "Other", Status: "True", Reason: "X"})
	if st := Status(gw, ok, available, svc, nil, now); meta.FindStatusCondition(st.Conditions, "Other") == nil {
		t.Error("foreign condition dropped")
	}
	if StatusEqual(gw.Status, Status(gw, ok, unavailable, svc, nil, now)) {
		t.Error("a lost replica is not a status change")
	}
}

func TestControllerWithFakeClients(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wp := gateway("wp")
	other := gateway("istio-gw", func(g *gatewayv1.Gateway) {
		g.Spec.GatewayClassName = "istio"
		g.Spec.Listeners = []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}
	})
	bad := gateway("bad", func(g *gatewayv1.Gateway) { g.Spec.Listeners[0].Protocol = gatewayv1.TCPProtocolType })
	kube := fake.NewClientset()
	// Created through the API: the fake's tracker files constructor objects
	// under v1beta1 (the same Go type), where v1 lists do not see them; and
	// NewClientset (field-managed) has no type converter for Gateways.
	gws := gatewayfake.NewSimpleClientset()
	for _, g := range []*gatewayv1.Gateway{wp, other, bad} {
		if _, err := gws.GatewayV1().Gateways(g.Namespace).Create(ctx, g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	factory := gatewayinformers.NewSharedInformerFactory(gws, 0)
	inf := factory.Gateway().V1().Gateways().Informer()
	factory.Start(ctx.Done())

	c := &Controller{Kube: kube, Gateway: gws, Gateways: inf, Config: Config{Image: image}, Log: quiet}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	await.NoError(t, "objects applied", func() error {
		if _, err := kube.CoreV1().ServiceAccounts("default").Get(ctx, "wp", metav1.GetOptions{}); err != nil {
			return err
		}
		if _, err := kube.CoreV1().Services("default").Get(ctx, "wp", metav1.GetOptions{}); err != nil {
			return err
		}
		d, err := kube.AppsV1().Deployments("default").Get(ctx, "wp", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Spec.Template.Spec.Containers[0].Image != image || d.OwnerReferences[0].UID != wp.UID {
			return fmt.Errorf("deployment %+v", d)
		}
		return nil
	})
	// Give the fake Service an IP (no allocator) and make the Deployment available.
	svc, _ := kube.CoreV1().Services("default").Get(ctx, "wp", metav1.GetOptions{})
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "10.96.0.10", []string{"10.96.0.10"}
	if _, err := kube.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	await.NoError(t, "accepted with an address, not yet programmed", func() error {
		g, err := gws.GatewayV1().Gateways("default").Get(ctx, "wp", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if a, p := cond(g.Status, "Accepted"), cond(g.Status, "Programmed"); a != "True/Accepted/3" || p != "False/Pending/3" {
			return fmt.Errorf("accepted %s programmed %s", a, p)
		}
		if len(g.Status.Addresses) != 1 || g.Status.Addresses[0].Value != "10.96.0.10" {
			return fmt.Errorf("addresses %v", g.Status.Addresses)
		}
		return nil
	})
	d, _ := kube.AppsV1().Deployments("default").Get(ctx, "wp", metav1.GetOptions{})
	d.Status.AvailableReplicas, d.Status.ReadyReplicas = 1, 1
	if _, err := kube.AppsV1().Deployments("default").UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	await.NoError(t, "programmed", func() error {
		g, _ := gws.GatewayV1().Gateways("default").Get(ctx, "wp", metav1.GetOptions{})
		if p := cond(g.Status, "Programmed"); p != "True/Programmed/3" {
			return fmt.Errorf("programmed %s", p)
		}
		if p := listenerCond(g.Status, ListenerName, "Programmed"); p != "True/Programmed/3" {
			return fmt.Errorf("listener %s programmed %s", ListenerName, p)
		}
		return nil
	})
	await.NoError(t, "bad gateway rejected", func() error {
		g, _ := gws.GatewayV1().Gateways("default").Get(ctx, "bad", metav1.GetOptions{})
		if a := cond(g.Status, "Accepted"); a != "False/UnsupportedValue/3" {
			return fmt.Errorf("accepted %s", a)
		}
		return nil
	})

	// Another class: untouched. The bad one: nothing deployed.
	g, _ := gws.GatewayV1().Gateways("default").Get(ctx, "istio-gw", metav1.GetOptions{})
	if len(g.Status.Conditions) != 0 {
		t.Errorf("other class got status %v", g.Status)
	}
	for _, name := range []string{"istio-gw", "bad"} {
		if _, err := kube.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{}); err == nil {
			t.Errorf("deployment created for %s", name)
		}
	}
	// Applied with Weft's field manager.
	if mf := d.ManagedFields; !slices.ContainsFunc(mf, func(m metav1.ManagedFieldsEntry) bool {
		return m.Manager == FieldManager && m.Operation == metav1.ManagedFieldsOperationApply
	}) {
		var managers []string
		for _, m := range mf {
			managers = append(managers, m.Manager+":"+string(m.Operation))
		}
		t.Errorf("managed fields %s", strings.Join(managers, ","))
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestWaypointListenerStatus: a waypoint's HBONE listener is accepted and
// programmed with its Gateway, and supports no route kind (routes bind to
// Services); listeners a waypoint cannot serve say why.
func TestWaypointListenerStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10"}}
	available := &appsv1.Deployment{Status: appsv1.DeploymentStatus{AvailableReplicas: 1, ReadyReplicas: 1}}
	extra := func(l gatewayv1.Listener) func(*gatewayv1.Gateway) {
		return func(g *gatewayv1.Gateway) { g.Spec.Listeners = append(g.Spec.Listeners, l) }
	}
	type want struct{ accepted, programmed, resolvedRefs, kinds string }
	for _, c := range []struct {
		name     string
		gw       *gatewayv1.Gateway
		dep      *appsv1.Deployment
		applyErr error
		want     map[gatewayv1.SectionName]want
	}{
		{"available", gateway("wp"), available, nil,
			map[gatewayv1.SectionName]want{ListenerName: {"True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3", ""}}},
		{"no Deployment yet", gateway("wp"), nil, nil,
			map[gatewayv1.SectionName]want{ListenerName: {"True/Accepted/3", "False/Pending/3", "True/ResolvedRefs/3", ""}}},
		{"apply failed", gateway("wp"), nil, errors.New("forbidden"),
			map[gatewayv1.SectionName]want{ListenerName: {"True/Accepted/3", "False/Pending/3", "True/ResolvedRefs/3", ""}}},
		{"HTTP listener next to HBONE", gateway("wp", extra(gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType})), available, nil,
			map[gatewayv1.SectionName]want{
				ListenerName: {"False/Invalid/3", "False/Invalid/3", "True/ResolvedRefs/3", ""},
				"http":       {"False/UnsupportedProtocol/3", "False/Invalid/3", "True/ResolvedRefs/3", ""}}},
		{"wrong port, route kinds", gateway("wp", func(g *gatewayv1.Gateway) {
			g.Spec.Listeners[0].Port = 15009
			g.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Kinds: []gatewayv1.RouteGroupKind{{Kind: "HTTPRoute"}}}
		}), available, nil,
			map[gatewayv1.SectionName]want{ListenerName: {"False/PortUnavailable/3", "False/Invalid/3", "False/InvalidRouteKinds/3", ""}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := Status(c.gw, Validate(c.gw), c.dep, svc, c.applyErr, now)
			if len(st.Listeners) != len(c.gw.Spec.Listeners) {
				t.Fatalf("listener statuses %+v, want one per listener", st.Listeners)
			}
			for name, w := range c.want {
				got := want{listenerCond(st, name, gatewayv1.ListenerConditionAccepted), listenerCond(st, name, gatewayv1.ListenerConditionProgrammed),
					listenerCond(st, name, gatewayv1.ListenerConditionResolvedRefs), listenerKinds(st, name)}
				if got != w {
					t.Errorf("listener %s: %+v, want %+v", name, got, w)
				}
			}
			if c.applyErr != nil && cond(st, gatewayv1.GatewayConditionProgrammed) != "False/NoResources/3" {
				t.Errorf("Programmed %s after a failed apply", cond(st, gatewayv1.GatewayConditionProgrammed))
			}
		})
	}
}

// TestNoAdoption: a Deployment named like a new waypoint that someone else
// made is neither changed nor adopted; the Gateway says why it is not
// programmed.
func TestNoAdoption(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wp := gateway("wp")
	foreign := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "wp", Labels: map[string]string{LabelAppName: AppName}},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "tenant", Image: "tenant/sidecar"}}}}}}
	kube := fake.NewClientset(foreign)
	gws := gatewayfake.NewSimpleClientset()
	if _, err := gws.GatewayV1().Gateways(wp.Namespace).Create(ctx, wp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	factory := gatewayinformers.NewSharedInformerFactory(gws, 0)
	inf := factory.Gateway().V1().Gateways().Informer()
	factory.Start(ctx.Done())
	c := &Controller{Kube: kube, Gateway: gws, Gateways: inf, Config: Config{Image: image}, Log: quiet}
	go c.Run(ctx)

	await.NoError(t, "the Gateway says it is not programmed, and why", func() error {
		g, err := gws.GatewayV1().Gateways("default").Get(ctx, "wp", metav1.GetOptions{})
		if err != nil {
			return err
		}
		p := meta.FindStatusCondition(g.Status.Conditions, "Programmed")
		if p == nil || p.Status != metav1.ConditionFalse || !strings.Contains(p.Message, "Deployment default/wp exists and is not this Gateway's") {
			return fmt.Errorf("programmed %+v", p)
		}
		return nil
	})
	d, err := kube.AppsV1().Deployments("default").Get(ctx, "wp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.OwnerReferences) != 0 || len(d.Spec.Template.Spec.Containers) != 1 || d.Spec.Template.Spec.Containers[0].Image != "tenant/sidecar" {
		t.Errorf("the foreign Deployment was changed: owners %v, containers %v", d.OwnerReferences, d.Spec.Template.Spec.Containers)
	}
	if _, err := kube.CoreV1().ServiceAccounts("default").Get(ctx, "wp", metav1.GetOptions{}); err == nil {
		t.Error("a ServiceAccount was created for a waypoint that cannot be deployed")
	}
}
