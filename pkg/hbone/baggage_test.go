package hbone

import (
	"testing"
	"unicode"
)

func TestBaggage(t *testing.T) {
	b := Baggage{Cluster: "Kubernetes", Namespace: "default", WorkloadType: "deployment", Workload: "productpage-v1", Service: "productpage", Version: "v1"}
	const want = "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=productpage-v1,service.name=productpage,service.version=v1"
	if got := b.String(); got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	if got := ParseBaggage(want); got != b {
		t.Errorf("ParseBaggage(%q) = %+v", want, got)
	}
	if got := (Baggage{Namespace: "a", Workload: "x-1"}).String(); got != "k8s.namespace.name=a,k8s.pod.name=x-1" {
		t.Errorf("String = %q (pod by default, empty members left out)", got)
	}
	// ztunnel's and OpenTelemetry's variants: properties, app.*, the first
	// workload name, cluster and node names not taken for the workload.
	got := ParseBaggage(" k8s.cluster.name=c, k8s.node.name=n,k8s.namespace.name=ns;p=1, k8s.pod.name=p-1,k8s.deployment.name=d,app.name=a,app.version=v2,junk")
	if want := (Baggage{Cluster: "c", Namespace: "ns", WorkloadType: "pod", Workload: "p-1", Service: "a", Version: "v2"}); got != want {
		t.Errorf("ParseBaggage = %+v, want %+v", got, want)
	}
	if got := ParseBaggage(""); got != (Baggage{}) {
		t.Errorf("ParseBaggage(\"\") = %+v", got)
	}
}

// FuzzParseBaggage: any header parses without panic, and what String
// writes parses back to the same fields.
func FuzzParseBaggage(f *testing.F) {
	f.Add("k8s.namespace.name=default,k8s.deployment.name=productpage-v1", "default", "deployment", "productpage-v1", "productpage", "v1")
	f.Fuzz(func(t *testing.T, h, ns, typ, w, svc, ver string) {
		ParseBaggage(h)
		cluster := svc + "-cluster"
		for _, s := range []string{ns, typ, w, svc, ver} {
			for _, c := range s {
				if c == ',' || c == '=' || c == ';' || c == '.' || unicode.IsSpace(c) {
					return
				}
			}
		}
		if typ == "" || typ == "cluster" || typ == "node" || w == "" {
			typ = "pod"
			if w == "" {
				typ = ""
			}
		}
		b := Baggage{Cluster: cluster, Namespace: ns, WorkloadType: typ, Workload: w, Service: svc, Version: ver}
		if got := ParseBaggage(b.String()); got != b {
			t.Fatalf("ParseBaggage(%q) = %+v, want %+v", b.String(), got, b)
		}
	})
}
