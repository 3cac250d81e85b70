package workload

import (
	"testing"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestStringMatch(t *testing.T) {
	presence := &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Presence{Presence: true}}
	prefix := func(s string) *workloadv1.StringMatch {
		return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Prefix{Prefix: s}}
	}
	suffix := func(s string) *workloadv1.StringMatch {
		return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Suffix{Suffix: s}}
	}
	for _, tc := range []struct {
		in   string
		want *workloadv1.StringMatch
	}{
		{"cluster.local/ns/default/sa/sleep", exact("cluster.local/ns/default/sa/sleep")},
		{"*", presence},
		{"cluster.local/ns/default/*", prefix("cluster.local/ns/default/")},
		{"*/sa/sleep", suffix("/sa/sleep")},
		{"*-sandbox", suffix("-sandbox")},
		{"team-*", prefix("team-")},
		{"**", suffix("*")},
		{"", exact("")},
	} {
		if got := stringMatch(tc.in); !proto.Equal(got, tc.want) {
			t.Errorf("stringMatch(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestStringMatchesSortedAndDeduplicated(t *testing.T) {
	got := stringMatches([]string{"b", "*", "a*", "b", "*x", "a"})
	want := []*workloadv1.StringMatch{exact("a"), exact("b"), stringMatch("a*"), stringMatch("*x"), stringMatch("*")}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestServiceAccountsToPrincipals(t *testing.T) {
	b := ruleBuilder{policyNamespace: "default", trustDomain: "example.org"}
	got := b.serviceAccounts("f", []string{"sleep", "other/curl"})
	if len(got) != 2 || got[0].GetExact() != "example.org/ns/default/sa/sleep" || got[1].GetExact() != "example.org/ns/other/sa/curl" {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{"a/b/c", "ns/*", "/sa", "ns/"} {
		b := ruleBuilder{policyNamespace: "default", trustDomain: "example.org"}
		if got := b.serviceAccounts("f", []string{bad}); got != nil || len(b.invalid) != 1 {
			t.Errorf("serviceAccounts(%q) = %v, problems %v; want nil and one problem", bad, got, b.invalid)
		}
	}
}

func TestPortsAndIPs(t *testing.T) {
	b := ruleBuilder{}
	if got := b.ports("p", []string{"9080", "80", "9080"}); len(got) != 2 || got[0] != 80 || got[1] != 9080 || len(b.invalid) != 0 {
		t.Errorf("ports = %v, problems %v", got, b.invalid)
	}
	for _, bad := range []string{"0", "65536", "http", "-1", " 80"} {
		b := ruleBuilder{}
		if got := b.ports("p", []string{"80", bad}); got != nil || len(b.invalid) != 1 {
			t.Errorf("ports(%q) = %v, problems %v; want the field dropped", bad, got, b.invalid)
		}
	}
	b = ruleBuilder{}
	got := b.ips("i", []string{"10.1.2.3/8", "192.168.0.1", "fd00::1/64", "::ffff:1.2.3.4"})
	want := []string{"10.0.0.0/8", "192.168.0.1", "::ffff:1.2.3.4", "fd00::/64"}
	if len(b.invalid) != 0 || len(got) != len(want) {
		t.Fatalf("ips = %v, problems %v", got, b.invalid)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ips[%d] = %q, want %q", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "10.0.0", "example.com", "10.0.0.1/"} {
		b := ruleBuilder{}
		if got := b.ips("i", []string{bad}); got != nil || len(b.invalid) != 1 {
			t.Errorf("ips(%q) = %v, problems %v; want the field dropped", bad, got, b.invalid)
		}
	}
}

func TestWorkloadNameAndType(t *testing.T) {
	yes := true
	owner := func(kind, name string, controller bool) metav1.OwnerReference {
		r := metav1.OwnerReference{Kind: kind, Name: name}
		if controller {
			r.Controller = &yes
		}
		return r
	}
	for _, tc := range []struct {
		name     string
		labels   map[string]string
		owners   []metav1.OwnerReference
		wantName string
		wantType string
	}{
		{"bare pod", nil, nil, "mypod", "pod"},
		{"deployment", map[string]string{"pod-template-hash": "68557ddf7c"},
			[]metav1.OwnerReference{owner("ReplicaSet", "reviews-v2-68557ddf7c", true)}, "reviews-v2", "deployment"},
		{"replicaset without hash label", nil,
			[]metav1.OwnerReference{owner("ReplicaSet", "reviews-v2-68557ddf7c", true)}, "reviews-v2-68557ddf7c", "replicaset"},
		{"replicaset with other hash", map[string]string{"pod-template-hash": "abc"},
			[]metav1.OwnerReference{owner("ReplicaSet", "web-xyz", true)}, "web-xyz", "replicaset"},
		{"replicaset named only the hash", map[string]string{"pod-template-hash": "abc"},
			[]metav1.OwnerReference{owner("ReplicaSet", "-abc", true)}, "-abc", "replicaset"},
		{"statefulset", nil, []metav1.OwnerReference{owner("StatefulSet", "db", true)}, "db", "statefulset"},
		{"daemonset", nil, []metav1.OwnerReference{owner("DaemonSet", "agent", true)}, "agent", "daemonset"},
		{"job", nil, []metav1.OwnerReference{owner("Job", "migrate", true)}, "migrate", "job"},
		{"cronjob", nil, []metav1.OwnerReference{owner("Job", "report-28391040", true)}, "report", "cronjob"},
		{"job with short number", nil, []metav1.OwnerReference{owner("Job", "migrate-123", true)}, "migrate-123", "job"},
		{"controller wins over first owner", nil,
			[]metav1.OwnerReference{owner("ConfigMap", "x", false), owner("StatefulSet", "db", true)}, "db", "statefulset"},
		{"first owner without controller", nil, []metav1.OwnerReference{owner("CustomThing", "c1", false)}, "c1", "customthing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "mypod", Labels: tc.labels, OwnerReferences: tc.owners}}
			name, typ := workloadNameAndType(pod)
			if name != tc.wantName || typ != tc.wantType {
				t.Errorf("got %s/%s, want %s/%s", name, typ, tc.wantName, tc.wantType)
			}
		})
	}
}

func TestCanonicalNameRevision(t *testing.T) {
	for _, tc := range []struct {
		name         string
		labels       map[string]string
		wantName     string
		wantRevision string
	}{
		{"nothing", nil, "reviews-v2", "latest"},
		{"app/version", map[string]string{"app": "reviews", "version": "v2"}, "reviews", "v2"},
		{"recommended labels win over app", map[string]string{
			"app": "a", "version": "1", "app.kubernetes.io/name": "b", "app.kubernetes.io/version": "2",
		}, "b", "2"},
		{"canonical labels win", map[string]string{
			"app": "a", "app.kubernetes.io/name": "b", "service.istio.io/canonical-name": "c",
			"version": "1", "service.istio.io/canonical-revision": "3",
		}, "c", "3"},
		{"empty values are skipped", map[string]string{"service.istio.io/canonical-name": "", "app": "a"}, "a", "latest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, r := canonicalNameRevision(tc.labels, "reviews-v2")
			if n != tc.wantName || r != tc.wantRevision {
				t.Errorf("got %s/%s, want %s/%s", n, r, tc.wantName, tc.wantRevision)
			}
		})
	}
}

func TestResolveTargetPort(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "app", Ports: []corev1.ContainerPort{
			{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			{Name: "http", ContainerPort: 8080},
		}},
		{Name: "sidecar", Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 9999},
			{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolTCP},
		}},
	}}}
	for _, tc := range []struct {
		name   string
		port   corev1.ServicePort
		want   uint32
		wantOK bool
	}{
		{"numeric", corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8081)}, 8081, true},
		{"unset means the service port", corev1.ServicePort{Port: 80}, 80, true},
		{"named: first container port wins", corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http")}, 8080, true},
		{"named: TCP only", corev1.ServicePort{Port: 53, TargetPort: intstr.FromString("dns")}, 5353, true},
		{"named: missing", corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("grpc")}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := resolveTargetPort(pod, tc.port)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("got %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestSelects(t *testing.T) {
	lbls := map[string]string{"app": "a", "version": "v1"}
	for _, tc := range []struct {
		sel  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{}, false},
		{map[string]string{"app": "a"}, true},
		{map[string]string{"app": "a", "version": "v1"}, true},
		{map[string]string{"app": "b"}, false},
		{map[string]string{"app": "a", "x": ""}, false},
	} {
		if got := selects(tc.sel, lbls); got != tc.want {
			t.Errorf("selects(%v) = %v, want %v", tc.sel, got, tc.want)
		}
	}
}
