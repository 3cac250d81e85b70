package waypoint

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

func TestCompleteDefaultsAndValidation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       ApplyOptions
		wantName string
		wantFor  string
		wantErr  string
	}{
		{name: "istioctl defaults", in: ApplyOptions{}, wantName: "waypoint", wantFor: "service"},
		{name: "explicit", in: ApplyOptions{Name: "reviews-wp", For: "workload"}, wantName: "reviews-wp", wantFor: "workload"},
		{name: "service account", in: ApplyOptions{ServiceAccount: "bookinfo-reviews"}, wantName: "bookinfo-reviews-waypoint", wantFor: "all"},
		{name: "service account, services only", in: ApplyOptions{ServiceAccount: "sa", For: "service"}, wantName: "sa-waypoint", wantFor: "service"},
		{name: "bad for", in: ApplyOptions{For: "pods"}, wantErr: `--for "pods"`},
		{name: "bad name", in: ApplyOptions{Name: "Way_Point"}, wantErr: `--name "Way_Point"`},
		{name: "reserved name", in: ApplyOptions{Name: "none"}, wantErr: "reserved"},
		{name: "sa and enroll", in: ApplyOptions{ServiceAccount: "sa", EnrollNamespace: true}, wantErr: "exclude each other"},
		{name: "sa and none", in: ApplyOptions{ServiceAccount: "sa", For: "none"}, wantErr: "serve nothing"},
		{name: "name is the sa", in: ApplyOptions{ServiceAccount: "sa", Name: "sa"}, wantErr: "identity"},
		{name: "enroll with none", in: ApplyOptions{For: "none", EnrollNamespace: true}, wantErr: "serve nothing"},
		{name: "bad sa", in: ApplyOptions{ServiceAccount: "A B"}, wantErr: "--service-account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.in
			err := o.Complete()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Name != tc.wantName || o.For != tc.wantFor {
				t.Fatalf("name %q for %q, want %q %q", o.Name, o.For, tc.wantName, tc.wantFor)
			}
		})
	}
}

// The Gateway is istioctl's, with Weft's class: the same YAML as
// samples/waypoint/waypoint.yaml.
func TestGatewayMatchesIstioctl(t *testing.T) {
	o := ApplyOptions{Namespace: "default"}
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(Gateway(o))
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: default
spec:
  gatewayClassName: weft-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`
	if string(b) != want {
		t.Fatalf("gateway:\n%s\nwant\n%s", b, want)
	}
	sa := ApplyOptions{Namespace: "default", ServiceAccount: "bookinfo-reviews"}
	_ = sa.Complete()
	g := Gateway(sa)
	if *g.Name != "bookinfo-reviews-waypoint" || g.Labels[LabelWaypointFor] != "all" || g.Annotations[AnnotationServiceAccount] != "bookinfo-reviews" {
		t.Fatalf("per-service-account gateway: %+v", g)
	}
}

func pod(name, sa string, labels map[string]string) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
}

func service(name string, selector map[string]string) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.ServiceSpec{Selector: selector}}
}

func TestServiceAccountTargets(t *testing.T) {
	pods := []corev1.Pod{
		pod("reviews-v1", "bookinfo-reviews", map[string]string{"app": "reviews", "version": "v1"}),
		pod("reviews-v2", "bookinfo-reviews", map[string]string{"app": "reviews", "version": "v2"}),
		pod("ratings", "bookinfo-ratings", map[string]string{"app": "ratings"}),
		pod("legacy", "", map[string]string{"tier": "web"}), // runs as default
		pod("wp", "bookinfo-reviews-waypoint", map[string]string{LabelGatewayName: "bookinfo-reviews-waypoint", "tier": "web"}),
	}
	done := pod("job", "bookinfo-reviews", map[string]string{"app": "reviews"})
	done.Status.Phase = corev1.PodSucceeded
	pods = append(pods, done)
	svcs := []corev1.Service{
		service("reviews", map[string]string{"app": "reviews"}),
		service("reviews-v2", map[string]string{"app": "reviews", "version": "v2"}),
		service("ratings", map[string]string{"app": "ratings"}),
		service("web", map[string]string{"tier": "web"}),
		service("external", nil), // no selector: never
	}
	pods = append(pods, pod("ratings-2", "bookinfo-ratings", map[string]string{"app": "reviews", "canary": "x"}))
	o := ApplyOptions{ServiceAccount: "bookinfo-reviews"}
	_ = o.Complete()
	got := ServiceAccountTargets("bookinfo-reviews", o, pods, svcs)
	// ratings-2 (another account) carries app=reviews: reviews is mixed now.
	if strings.Join(got.Services, ",") != "reviews-v2" {
		t.Fatalf("services %v", got.Services)
	}
	if strings.Join(got.Pods, ",") != "reviews-v1,reviews-v2" {
		t.Fatalf("pods %v", got.Pods)
	}
	if len(got.Skipped) != 1 || !strings.Contains(got.Skipped[0], "service reviews: also selects pods of service account bookinfo-ratings") {
		t.Fatalf("skipped %v", got.Skipped)
	}
	// Services only: no pod labels.
	o.For = ForService
	if got := ServiceAccountTargets("bookinfo-reviews", o, pods, svcs); len(got.Pods) != 0 || len(got.Services) != 1 {
		t.Fatalf("--for service: %+v", got)
	}
	// The default account matches pods without serviceAccountName.
	o = ApplyOptions{ServiceAccount: "default"}
	_ = o.Complete()
	if got := ServiceAccountTargets("default", o, pods, svcs); strings.Join(got.Pods, ",") != "legacy" || strings.Join(got.Services, ",") != "web" {
		t.Fatalf("default account: %+v", got)
	}
}

func TestRowsAndUses(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	gw := func(ns, name, class, forLabel string, programmed metav1.ConditionStatus, gen int64) gatewayv1.Gateway {
		g := gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: gen, Labels: map[string]string{}},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: gatewayv1.ObjectName(class)}}
		if forLabel != "" {
			g.Labels[LabelWaypointFor] = forLabel
		}
		if programmed != "" {
			g.Status.Conditions = []metav1.Condition{
				{Type: "Accepted", Status: "True", Reason: "Accepted", ObservedGeneration: 2, LastTransitionTime: metav1.NewTime(now.Add(-time.Minute))},
				{Type: "Programmed", Status: programmed, Reason: "Programmed", Message: "ok", ObservedGeneration: 2, LastTransitionTime: metav1.NewTime(now.Add(-30 * time.Second))},
			}
			g.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Value: "10.96.0.20"}}
		}
		return g
	}
	gws := []gatewayv1.Gateway{
		gw("default", "waypoint", ClassName, "", "True", 2),
		gw("default", "old", ClassName, "all", "True", 3), // condition of an older generation
		gw("default", "ingress", "istio", "", "", 1),
		gw("apps", "wp", ClassName, "workload", "False", 2),
	}
	objs := []Labelled{
		{Kind: "Namespace", Name: "default", Labels: map[string]string{LabelUseWaypoint: "waypoint"}},
		{Kind: "Namespace", Name: "other", Labels: map[string]string{LabelUseWaypoint: "waypoint", LabelUseWaypointNamespace: "default"}},
		{Kind: "Namespace", Name: "third", Labels: map[string]string{LabelUseWaypoint: "waypoint"}}, // third/waypoint: not ours
		{Kind: "Service", Namespace: "default", Name: "reviews", Labels: map[string]string{LabelUseWaypoint: "waypoint"}},
		{Kind: "Pod", Namespace: "apps", Name: "p", Labels: map[string]string{LabelUseWaypoint: "wp"}},
	}
	l := Rows(gws, objs)
	if len(l) != 3 || l[0].Namespace != "apps" || l[1].Name != "old" || l[2].Name != "waypoint" {
		t.Fatalf("rows %+v", l)
	}
	if l[1].Programmed != "Unknown" || l[2].Programmed != "True" || l[2].For != "service" || l[0].Programmed != "False" {
		t.Fatalf("programmed/for: %+v", l)
	}
	if got := useStrings(l[2].UsedBy); got != "namespace/default,namespace/other,service/reviews" {
		t.Fatalf("used by %s", got)
	}
	var b strings.Builder
	for _, r := range l.Rows() {
		b.WriteString(strings.Join(r, "|") + "\n")
	}
	want := "apps|wp|workload|False|10.96.0.20|pod/p\n" +
		"default|old|all|Unknown|10.96.0.20|\n" +
		"default|waypoint|service|True|10.96.0.20|namespace/default,namespace/other,service/reviews\n"
	if b.String() != want {
		t.Fatalf("table rows:\n%s\nwant\n%s", b.String(), want)
	}
	j, _ := json.Marshal(Rows(nil, nil))
	if string(j) != "[]" {
		t.Fatalf("empty list JSON %s", j)
	}

	s := StatusOf(&gws[1], now)
	rows := s.Rows()
	if len(rows) != 2 || rows[1][1] != "Programmed" || !strings.Contains(rows[1][2], "stale: generation 2 of 3") || rows[1][5] != "30s" {
		t.Fatalf("status rows %v", rows)
	}
}

func useStrings(us []Use) string {
	var s []string
	for _, u := range us {
		s = append(s, u.String())
	}
	return strings.Join(s, ",")
}
