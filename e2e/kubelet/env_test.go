package kubelet

import (
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

type fakeGetter struct {
	cms     map[string]*v1.ConfigMap
	secrets map[string]*v1.Secret
}

func (f fakeGetter) getConfigMap(ns, name string) (*v1.ConfigMap, error) {
	if cm, ok := f.cms[ns+"/"+name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (f fakeGetter) getSecret(ns, name string) (*v1.Secret, error) {
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func testPod() *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-0", Namespace: "shop", UID: "uid-1",
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"note": "a \"quoted\" value"},
		},
		Spec: v1.PodSpec{NodeName: "node-0", ServiceAccountName: "web-sa"},
	}
}

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	for in, want := range map[string]string{
		"$(A)":           "1",
		"x$(A)y$(B)z":    "x1ytwoz",
		"$$(A)":          "$(A)",
		"$(UNKNOWN)":     "$(UNKNOWN)",
		"$(A":            "$(A",
		"$A":             "$A",
		"a$":             "a$",
		"$$$$":           "$$",
		"no vars":        "no vars",
		"$($(A))":        "$($(A))",
		"$(A)$(B)$(A)$$": "1two1$",
	} {
		if got := expandVars(in, mappingFor(vars)); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildEnv(t *testing.T) {
	pod := testPod()
	getter := fakeGetter{
		cms: map[string]*v1.ConfigMap{"shop/cfg": {ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
			Data: map[string]string{"MODE": "prod", "LEVEL": "debug"}}},
		secrets: map[string]*v1.Secret{"shop/creds": {ObjectMeta: metav1.ObjectMeta{Name: "creds"},
			Data: map[string][]byte{"password": []byte("s3cret"), "USER": []byte("admin")}}},
	}
	c := &v1.Container{
		Name: "app",
		Resources: v1.ResourceRequirements{
			Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m"), v1.ResourceMemory: resource.MustParse("64Mi")},
			Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("100m")},
		},
		EnvFrom: []v1.EnvFromSource{
			{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}, Prefix: "CFG_"},
			{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}}},
			{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "absent"}, Optional: ptrTo(true)}},
		},
		Env: []v1.EnvVar{
			{Name: "PLAIN", Value: "v"},
			{Name: "EXPANDED", Value: "$(PLAIN)-$(CFG_MODE)-$(NOPE)-$$(PLAIN)"},
			{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NS", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "POD_UID", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
			{Name: "APP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "NOTE", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.annotations['note']"}}},
			{Name: "NODE", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "SA", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
			{Name: "HOST_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "POD_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "POD_IPS", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIPs"}}},
			{Name: "CPU_LIMIT", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "CPU_REQ_M", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
			{Name: "MEM_MI", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "PASSWORD", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
			{Name: "LEVEL", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "LEVEL"}}},
			{Name: "OPT_MISSING", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "nope", Optional: ptrTo(true)}}},
			{Name: "FOO", Value: "from-pod"},
		},
	}
	services := []*v1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "product-page", Namespace: "shop"},
			Spec: v1.ServiceSpec{ClusterIP: "10.96.0.50", Ports: []v1.ServicePort{{Name: "http", Port: 9080, Protocol: v1.ProtocolTCP}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: "shop"}, Spec: v1.ServiceSpec{ClusterIP: "None", Ports: []v1.ServicePort{{Port: 1}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other-ns", Namespace: "elsewhere"}, Spec: v1.ServiceSpec{ClusterIP: "10.96.0.9", Ports: []v1.ServicePort{{Port: 1}}}},
	}
	master := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Spec: v1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []v1.ServicePort{{Name: "https", Port: 443, Protocol: v1.ProtocolTCP}}}}
	info := podRuntimeInfo{PodIPs: []string{"10.244.0.5", "fd00::5"}, HostIP: "10.250.0.10"}
	env, mapping, err := buildEnv(pod, c, []string{"FOO=image", "IMAGE_ONLY=1"}, services, master, info, getter)
	if err != nil {
		t.Fatal(err)
	}
	got := envMap(env)
	want := map[string]string{
		"PLAIN": "v", "EXPANDED": "v-prod-$(NOPE)-$(PLAIN)",
		"CFG_MODE": "prod", "CFG_LEVEL": "debug", "USER": "admin", "password": "s3cret",
		"POD_NAME": "web-0", "POD_NS": "shop", "POD_UID": "uid-1", "APP": "web", "NOTE": `a "quoted" value`,
		"NODE": "node-0", "SA": "web-sa", "HOST_IP": "10.250.0.10", "POD_IP": "10.244.0.5", "POD_IPS": "10.244.0.5,fd00::5",
		"CPU_LIMIT": "1", "CPU_REQ_M": "100", "MEM_MI": "64", "PASSWORD": "s3cret", "LEVEL": "debug",
		"FOO": "from-pod", "IMAGE_ONLY": "1", "HOSTNAME": "web-0", "HOME": "/root",
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp", "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
		"PRODUCT_PAGE_SERVICE_HOST": "10.96.0.50", "PRODUCT_PAGE_SERVICE_PORT": "9080", "PRODUCT_PAGE_SERVICE_PORT_HTTP": "9080",
		"PRODUCT_PAGE_PORT": "tcp://10.96.0.50:9080",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"OPT_MISSING", "HEADLESS_SERVICE_HOST", "OTHER_NS_SERVICE_HOST"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s should not be set", k)
		}
	}
	if !strings.HasPrefix(got["PATH"], "/usr/local/sbin") {
		t.Errorf("PATH = %q", got["PATH"])
	}
	if v := expandVars("--name=$(POD_NAME)", mapping); v != "--name=web-0" {
		t.Errorf("command expansion = %q", v)
	}

	// enableServiceLinks=false keeps only the master service.
	pod.Spec.EnableServiceLinks = ptrTo(false)
	env, _, err = buildEnv(pod, &v1.Container{Name: "x"}, nil, services, master, info, getter)
	if err != nil {
		t.Fatal(err)
	}
	got = envMap(env)
	if got["KUBERNETES_SERVICE_HOST"] != "10.96.0.1" || got["PRODUCT_PAGE_SERVICE_HOST"] != "" {
		t.Errorf("enableServiceLinks=false: %v", got)
	}
}

func TestBuildEnvErrors(t *testing.T) {
	pod := testPod()
	getter := fakeGetter{cms: map[string]*v1.ConfigMap{"shop/cfg": {ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"a": "b"}}}}
	tests := []struct {
		name string
		env  v1.EnvVar
		want string
	}{
		{"missing secret", v1.EnvVar{Name: "X", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}, Key: "k"}}}, `secret "nope"`},
		{"missing key", v1.EnvVar{Name: "X", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "zz"}}}, "couldn't find key zz in ConfigMap shop/cfg"},
		{"bad fieldRef", v1.EnvVar{Name: "X", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.bogus"}}}, "unsupported fieldRef"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := buildEnv(pod, &v1.Container{Name: "c", Env: []v1.EnvVar{tt.env}}, nil, nil, nil, podRuntimeInfo{}, getter)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
	// Optional missing secret is skipped.
	env, _, err := buildEnv(pod, &v1.Container{Name: "c", Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{
		SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}, Key: "k", Optional: ptrTo(true)}}}}},
		nil, nil, nil, podRuntimeInfo{}, getter)
	if err != nil || envMap(env)["X"] != "" {
		t.Errorf("optional secret: %v %v", env, err)
	}
}

func TestDownwardAPIFormatting(t *testing.T) {
	pod := testPod()
	v, err := podFieldValue(pod, "metadata.labels", podRuntimeInfo{})
	if err != nil || v != "app=\"web\"\ntier=\"front\"" {
		t.Errorf("labels = %q, %v", v, err)
	}
	files := map[string]fileContent{}
	err = addDownwardFiles(files, pod, []v1.DownwardAPIVolumeFile{
		{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
		{Path: "sub/name", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}, Mode: ptrTo[int32](0o600)},
	}, 0o644, podRuntimeInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if string(files["sub/name"].data) != "web-0" || files["sub/name"].mode != 0o600 || files["labels"].mode != 0o644 {
		t.Errorf("files = %+v", files)
	}
	if !reflect.DeepEqual(sortedKeys(map[string]string{"b": "", "a": ""}), []string{"a", "b"}) {
		t.Error("sortedKeys")
	}
}
