package addons_test

import (
	"net"
	"path"
	"slices"
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// jaegerAddon is samples/addons/jaeger.yaml, decoded strictly.
type jaegerAddon struct {
	namespaces []*corev1.Namespace
	configMap  *corev1.ConfigMap
	services   map[string]*corev1.Service
	deployment *appsv1.Deployment
}

func decodeJaeger(t *testing.T) jaegerAddon {
	t.Helper()
	a := jaegerAddon{services: map[string]*corev1.Service{}}
	for _, obj := range decode(t, "jaeger.yaml") {
		switch o := obj.(type) {
		case *corev1.Namespace:
			a.namespaces = append(a.namespaces, o)
		case *corev1.ConfigMap:
			a.configMap = o
		case *corev1.Service:
			a.services[o.Name] = o
		case *appsv1.Deployment:
			a.deployment = o
		default:
			t.Fatalf("jaeger.yaml: unexpected %T", obj)
		}
	}
	if a.configMap == nil || a.deployment == nil || len(a.services) != 3 {
		t.Fatalf("jaeger.yaml lacks an object: %+v", a)
	}
	return a
}

// jaegerConfig is the part of the jaeger binary's configuration (an
// OpenTelemetry Collector's) the test reads.
type jaegerConfig struct {
	Service struct {
		Extensions []string
		Pipelines  map[string]struct{ Receivers, Processors, Exporters []string }
	}
	Extensions map[string]struct {
		BasePath string                    `json:"base_path"`
		HTTP     struct{ Endpoint string } `json:"http"`
		Storage  struct{ Traces string }   `json:"storage"`
		Backends map[string]map[string]any `json:"backends"`
	}
	Receivers map[string]struct {
		Endpoint  string
		Protocols map[string]struct{ Endpoint string }
	}
	Exporters map[string]struct {
		TraceStorage string `json:"trace_storage"`
	}
}

// TestJaegerAddonObjects: Istio's names, namespace and Service ports (the
// tracing tasks send to zipkin.istio-system:9411 and
// jaeger-collector.istio-system:4317/4318 and open svc/tracing:80), each
// Service selecting the pod, whose probes and --config are served by it.
func TestJaegerAddonObjects(t *testing.T) {
	a := decodeJaeger(t)
	const ns = "istio-system"
	if len(a.namespaces) != 1 || a.namespaces[0].Name != ns {
		t.Errorf("namespaces %v, want the manifest to create %s", a.namespaces, ns)
	}
	if a.deployment.Name != "jaeger" || a.deployment.Namespace != ns || a.configMap.Namespace != ns {
		t.Errorf("Deployment %s/%s, ConfigMap in %s; want istio-system/jaeger", a.deployment.Namespace, a.deployment.Name, a.configMap.Namespace)
	}
	pod := a.deployment.Spec.Template
	want := map[string]map[int32]int{ // Service -> port -> container port
		"tracing":          {80: 16686},
		"zipkin":           {9411: 9411},
		"jaeger-collector": {9411: 9411, 4317: 4317, 4318: 4318},
	}
	for name, ports := range want {
		s := a.services[name]
		if s == nil || s.Namespace != ns {
			t.Errorf("no Service %s in %s", name, ns)
			continue
		}
		for k, v := range s.Spec.Selector {
			if pod.Labels[k] != v {
				t.Errorf("Service %s selector %v does not select the pod %v", name, s.Spec.Selector, pod.Labels)
			}
		}
		for port, target := range ports {
			i := slices.IndexFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port })
			if i < 0 || targetPort(s.Spec.Ports[i]) != target {
				t.Errorf("Service %s ports %+v: want %d to the container's %d", name, s.Spec.Ports, port, target)
			}
		}
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want one", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if len(c.VolumeMounts) != 1 || len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].ConfigMap == nil ||
		pod.Spec.Volumes[0].ConfigMap.Name != a.configMap.Name || c.VolumeMounts[0].Name != pod.Spec.Volumes[0].Name {
		t.Fatalf("the pod does not mount the ConfigMap: %+v %+v", c.VolumeMounts, pod.Spec.Volumes)
	}
	if want := []string{"--config", path.Join(c.VolumeMounts[0].MountPath, "config.yaml")}; !slices.Equal(c.Args, want) {
		t.Errorf("args %v, want %v (the ConfigMap's config.yaml)", c.Args, want)
	}
	health := strconv.Itoa(listenPort(t, jaegerConfigOf(t, a).Extensions["healthcheckv2"].HTTP.Endpoint))
	for what, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != health || p.HTTPGet.Path != "/status" {
			t.Errorf("%s probe %+v, want GET /status on healthcheckv2's %s", what, p, health)
		}
	}
}

// TestJaegerAddonReceivesAndServes: one traces pipeline from the OTLP
// (gRPC 4317, HTTP 4318) and Zipkin (9411) receivers into the storage the
// query service reads, on all addresses (the pod's, not loopback), the
// query HTTP API on 16686 under Istio's /jaeger base path.
func TestJaegerAddonReceivesAndServes(t *testing.T) {
	cfg := jaegerConfigOf(t, decodeJaeger(t))
	traces, ok := cfg.Service.Pipelines["traces"]
	if !ok || !slices.Contains(traces.Receivers, "otlp") || !slices.Contains(traces.Receivers, "zipkin") ||
		!slices.Equal(traces.Exporters, []string{"jaeger_storage_exporter"}) {
		t.Fatalf("traces pipeline %+v: want otlp and zipkin into jaeger_storage_exporter", traces)
	}
	for endpoint, port := range map[string]int{
		cfg.Receivers["otlp"].Protocols["grpc"].Endpoint: 4317,
		cfg.Receivers["otlp"].Protocols["http"].Endpoint: 4318,
		cfg.Receivers["zipkin"].Endpoint:                 9411,
		cfg.Extensions["jaeger_query"].HTTP.Endpoint:     16686,
		cfg.Extensions["healthcheckv2"].HTTP.Endpoint:    13133,
	} {
		if host, _, _ := net.SplitHostPort(endpoint); host != "0.0.0.0" || listenPort(t, endpoint) != port {
			t.Errorf("endpoint %q, want 0.0.0.0:%d", endpoint, port)
		}
	}
	storage := cfg.Exporters["jaeger_storage_exporter"].TraceStorage
	query := cfg.Extensions["jaeger_query"]
	if query.Storage.Traces != storage || cfg.Extensions["jaeger_storage"].Backends[storage] == nil {
		t.Errorf("exporter writes %q, query reads %q, backends %v: want one declared storage", storage, query.Storage.Traces, cfg.Extensions["jaeger_storage"].Backends)
	}
	if query.BasePath != "/jaeger" {
		t.Errorf("query base_path %q, want Istio's /jaeger", query.BasePath)
	}
	for _, ext := range []string{"jaeger_storage", "jaeger_query", "healthcheckv2"} {
		if !slices.Contains(cfg.Service.Extensions, ext) {
			t.Errorf("service.extensions %v lacks %s", cfg.Service.Extensions, ext)
		}
	}
}

func jaegerConfigOf(t *testing.T, a jaegerAddon) jaegerConfig {
	t.Helper()
	var cfg jaegerConfig
	if err := yaml.Unmarshal([]byte(a.configMap.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	return cfg
}

func listenPort(t *testing.T, endpoint string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(endpoint)
	if err != nil {
		t.Errorf("endpoint %q: %v", endpoint, err)
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// targetPort is a Service port's numeric target (its port when unset).
func targetPort(p corev1.ServicePort) int {
	if p.TargetPort == (intstr.IntOrString{}) {
		return int(p.Port)
	}
	return p.TargetPort.IntValue()
}
