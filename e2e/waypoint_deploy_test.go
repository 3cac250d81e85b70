package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

const waypointGatewayYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: %s
  namespace: default
spec:
  gatewayClassName: %s
  listeners:
  - name: %s
    port: %d
    protocol: %s
`

// TestWaypointDeployment checks the waypoint deployment controller on a
// real cluster: a Gateway of class weft-waypoint gets its ServiceAccount,
// Deployment and Service (server-side applied by weft-control, owned by the
// Gateway) and a status with Accepted and the Service's address; deleting
// the Gateway garbage-collects them. Gateways of another class, and
// waypoint Gateways with a listener other than HBONE 15008, get nothing.
func TestWaypointDeployment(t *testing.T) {
	e := startCluster(t, "e2ewpd", 2, 6)
	e.installControlPlane(t)
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := e.kubectl("-n", controlNS, "logs", "-l", "app=weft-control", "--tail=40", "--prefix")
			t.Logf("weft-control logs:\n%s", logs)
		}
	})
	ctx := context.Background()
	kube := e.c.Client
	gw, err := gatewayclient.NewForConfig(e.c.REST)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	e.applyYAML(t, fmt.Sprintf(waypointGatewayYAML, "wpd", "weft-waypoint", "mesh", 15008, "HBONE"))
	e.applyYAML(t, fmt.Sprintf(waypointGatewayYAML, "bad-listener", "weft-waypoint", "http", 80, "HTTP"))
	e.applyYAML(t, fmt.Sprintf(waypointGatewayYAML, "other-class", "some-other-class", "http", 80, "HTTP"))
	g, err := gw.GatewayV1().Gateways("default").Get(ctx, "wpd", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid := g.UID

	var dep *appsv1.Deployment
	var svc *corev1.Service
	var sa *corev1.ServiceAccount
	eventually(t, "ServiceAccount, Deployment and Service of the waypoint", 30*time.Second, func() error {
		var err error
		if sa, err = kube.CoreV1().ServiceAccounts("default").Get(ctx, "wpd", metav1.GetOptions{}); err != nil {
			return err
		}
		if dep, err = kube.AppsV1().Deployments("default").Get(ctx, "wpd", metav1.GetOptions{}); err != nil {
			return err
		}
		svc, err = kube.CoreV1().Services("default").Get(ctx, "wpd", metav1.GetOptions{})
		return err
	})
	t.Logf("waypoint objects created %s after apply", time.Since(start).Round(100*time.Millisecond))

	t.Run("objects are owned by the Gateway, labelled and applied by weft-control", func(t *testing.T) {
		for _, o := range []metav1.Object{sa, dep, svc} {
			if err := ownedBy(o, uid); err != nil {
				t.Errorf("%T: %v", o, err)
			}
			if l := o.GetLabels(); l["gateway.networking.k8s.io/gateway-name"] != "wpd" || l["app.kubernetes.io/name"] != "weft-waypoint" {
				t.Errorf("%T labels %v", o, l)
			}
			if !slices.ContainsFunc(o.GetManagedFields(), func(m metav1.ManagedFieldsEntry) bool {
				return m.Manager == "weft-control" && m.Operation == metav1.ManagedFieldsOperationApply
			}) {
				t.Errorf("%T not server-side applied by weft-control: %v", o, managers(o))
			}
		}
		pl := dep.Spec.Template.Labels
		if pl["gateway.networking.k8s.io/gateway-name"] != "wpd" || pl["istio.io/dataplane-mode"] != "none" || pl["app.kubernetes.io/name"] != "weft-waypoint" {
			t.Errorf("pod labels %v", pl)
		}
		ps := dep.Spec.Template.Spec
		if ps.ServiceAccountName != "wpd" || ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Errorf("pod service account %q automount %v", ps.ServiceAccountName, ps.AutomountServiceAccountToken)
		}
		c := ps.Containers[0]
		if c.Image != "ghcr.io/weft-mesh/waypoint:0.1.0" || !slices.Equal(c.Args, []string{"--gateway=default/wpd"}) {
			t.Errorf("image %s args %v (want the chart's version tag)", c.Image, c.Args)
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
			t.Errorf("replicas %v", dep.Spec.Replicas)
		}
		if svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "mesh" || svc.Spec.Ports[0].Port != 15008 ||
			svc.Spec.Selector["gateway.networking.k8s.io/gateway-name"] != "wpd" {
			t.Errorf("service spec %+v", svc.Spec)
		}
	})

	t.Run("Gateway status: Accepted, the Service's ClusterIP as address", func(t *testing.T) {
		eventually(t, "Accepted=True with the address", 30*time.Second, func() error {
			g, err := gw.GatewayV1().Gateways("default").Get(ctx, "wpd", metav1.GetOptions{})
			if err != nil {
				return err
			}
			c := meta.FindStatusCondition(g.Status.Conditions, "Accepted")
			if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != g.Generation {
				return fmt.Errorf("Accepted = %+v", c)
			}
			if p := meta.FindStatusCondition(g.Status.Conditions, "Programmed"); p == nil || p.ObservedGeneration != g.Generation {
				return fmt.Errorf("Programmed = %+v", p)
			}
			if len(g.Status.Addresses) != 1 || g.Status.Addresses[0].Value != svc.Spec.ClusterIP ||
				g.Status.Addresses[0].Type == nil || *g.Status.Addresses[0].Type != gatewayv1.IPAddressType {
				return fmt.Errorf("addresses %+v, want IPAddress %s", g.Status.Addresses, svc.Spec.ClusterIP)
			}
			return nil
		})
	})

	t.Run("Programmed once the waypoint pod is available", func(t *testing.T) {
		// Needs weft-waypoint (another component) to start, get its
		// certificate and xDS, and pass its readiness probe.
		start := time.Now()
		var last string
		deadline := time.Now().Add(90 * time.Second)
		for {
			g, err := gw.GatewayV1().Gateways("default").Get(ctx, "wpd", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p := meta.FindStatusCondition(g.Status.Conditions, "Programmed")
			last = fmt.Sprintf("%s/%s: %s", p.Status, p.Reason, p.Message)
			if p.Status == metav1.ConditionTrue {
				break
			}
			if !strings.HasPrefix(last, "False/Pending") {
				t.Fatalf("Programmed = %s, want False/Pending until a replica is available", last)
			}
			if time.Now().After(deadline) {
				pods, _ := e.kubectl("get", "pod", "-l", "gateway.networking.k8s.io/gateway-name=wpd", "-o", "wide")
				logs, _ := e.kubectl("logs", "-l", "gateway.networking.k8s.io/gateway-name=wpd", "--tail=20")
				t.Fatalf("Programmed still %s after 90s; waypoint pods:\n%s\nlogs:\n%s", last, pods, logs)
			}
			time.Sleep(500 * time.Millisecond)
		}
		d, err := kube.AppsV1().Deployments("default").Get(ctx, "wpd", metav1.GetOptions{})
		if err != nil || d.Status.AvailableReplicas < 1 {
			t.Fatalf("Programmed while the Deployment has %d available replicas (%v)", d.Status.AvailableReplicas, err)
		}
		t.Logf("%s after %s", last, time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("a listener other than HBONE 15008 is not accepted and gets nothing", func(t *testing.T) {
		eventually(t, "Accepted=False", 30*time.Second, func() error {
			g, err := gw.GatewayV1().Gateways("default").Get(ctx, "bad-listener", metav1.GetOptions{})
			if err != nil {
				return err
			}
			c := meta.FindStatusCondition(g.Status.Conditions, "Accepted")
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "UnsupportedValue" {
				return fmt.Errorf("Accepted = %+v", c)
			}
			return nil
		})
		for _, name := range []string{"bad-listener", "other-class"} {
			if _, err := kube.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("Deployment for %s: %v, want none", name, err)
			}
		}
		g, err := gw.GatewayV1().Gateways("default").Get(ctx, "other-class", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range g.Status.Conditions {
			if c.Reason != "Pending" || c.Status != metav1.ConditionUnknown { // the CRD's defaults
				t.Errorf("Gateway of another class got condition %+v", c)
			}
		}
	})

	t.Run("deleting the Gateway garbage-collects its objects", func(t *testing.T) {
		e.mustKubectl(t, "delete", "gateway", "wpd", "--wait=true")
		start := time.Now()
		eventually(t, "objects gone", 60*time.Second, func() error {
			var left []string
			if _, err := kube.CoreV1().ServiceAccounts("default").Get(ctx, "wpd", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, fmt.Sprintf("ServiceAccount (%v)", err))
			}
			if _, err := kube.AppsV1().Deployments("default").Get(ctx, "wpd", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, fmt.Sprintf("Deployment (%v)", err))
			}
			if _, err := kube.CoreV1().Services("default").Get(ctx, "wpd", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, fmt.Sprintf("Service (%v)", err))
			}
			if len(left) > 0 {
				return errors.New(strings.Join(left, ", "))
			}
			return nil
		})
		t.Logf("garbage-collected %s after delete", time.Since(start).Round(100*time.Millisecond))
	})

	// weft-control never logged a failed apply or status write (RBAC).
	logs := e.mustKubectl(t, "-n", controlNS, "logs", "-l", "app=weft-control", "--tail=-1")
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "waypoint reconcile failed") || strings.Contains(line, "forbidden") {
			t.Errorf("weft-control: %s", line)
		}
	}
}

func ownedBy(o metav1.Object, uid types.UID) error {
	refs := o.GetOwnerReferences()
	if len(refs) != 1 {
		return fmt.Errorf("owner references %+v", refs)
	}
	r := refs[0]
	if r.APIVersion != "gateway.networking.k8s.io/v1" || r.Kind != "Gateway" || r.Name != "wpd" || r.UID != uid || r.Controller == nil || !*r.Controller {
		return fmt.Errorf("owner reference %+v, want controller Gateway wpd %s", r, uid)
	}
	return nil
}

func managers(o metav1.Object) []string {
	var out []string
	for _, m := range o.GetManagedFields() {
		out = append(out, m.Manager+"/"+string(m.Operation))
	}
	return out
}
