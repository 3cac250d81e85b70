package kubelet

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// objectGetter fetches ConfigMaps and Secrets (cached by the kubelet).
type objectGetter interface {
	getConfigMap(namespace, name string) (*v1.ConfigMap, error)
	getSecret(namespace, name string) (*v1.Secret, error)
}

// podRuntimeInfo is what env/downward API need beyond the pod spec.
type podRuntimeInfo struct {
	PodIPs []string
	HostIP string
	// NodeAllocatable backs resourceFieldRef limits that are not set.
	NodeCPU    resource.Quantity
	NodeMemory resource.Quantity
}

// buildEnv computes the container's environment like the kubelet
// (service links < envFrom < env, with $(VAR) expansion) and merges it over
// the image env. It also returns the expansion mapping for command/args.
func buildEnv(pod *v1.Pod, c *v1.Container, imageEnv []string, services []*v1.Service, masterSvc *v1.Service, info podRuntimeInfo, getter objectGetter) ([]string, func(string) string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range serviceEnv(pod, services, masterSvc) {
		set(kv[0], kv[1])
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := getter.getConfigMap(pod.Namespace, ef.ConfigMapRef.Name)
			if err != nil {
				if isOptional(ef.ConfigMapRef.Optional) && isNotFound(err) {
					continue
				}
				return nil, nil, fmt.Errorf("configmap %q: %w", ef.ConfigMapRef.Name, err)
			}
			keys := sortedKeys(cm.Data)
			for _, k := range keys {
				set(ef.Prefix+k, cm.Data[k])
			}
		case ef.SecretRef != nil:
			s, err := getter.getSecret(pod.Namespace, ef.SecretRef.Name)
			if err != nil {
				if isOptional(ef.SecretRef.Optional) && isNotFound(err) {
					continue
				}
				return nil, nil, fmt.Errorf("secret %q: %w", ef.SecretRef.Name, err)
			}
			var keys []string
			for k := range s.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				set(ef.Prefix+k, string(s.Data[k]))
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, mappingFor(vars)))
			continue
		}
		v, ok, err := envValueFrom(pod, c, e.ValueFrom, info, getter)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	// Image env underneath, like a runtime merging image config.
	var out []string
	seen := map[string]bool{}
	for _, k := range order {
		seen[k] = true
	}
	for _, kv := range imageEnv {
		k, _, _ := strings.Cut(kv, "=")
		if !seen[k] {
			seen[k] = true
			out = append(out, kv)
		}
	}
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	hostname, _ := podHostname(pod)
	defaults := [][2]string{
		{"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		{"HOSTNAME", hostname},
		{"HOME", "/root"},
	}
	for _, d := range defaults {
		if !seen[d[0]] {
			seen[d[0]] = true
			out = append(out, d[0]+"="+d[1])
		}
	}
	return out, mappingFor(vars), nil
}

func isOptional(b *bool) bool { return b != nil && *b }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// envValueFrom resolves a valueFrom; ok=false means "optional and missing".
func envValueFrom(pod *v1.Pod, c *v1.Container, src *v1.EnvVarSource, info podRuntimeInfo, getter objectGetter) (string, bool, error) {
	switch {
	case src.FieldRef != nil:
		v, err := podFieldValue(pod, src.FieldRef.FieldPath, info)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		target := c
		if src.ResourceFieldRef.ContainerName != "" {
			target = findContainer(pod, src.ResourceFieldRef.ContainerName)
			if target == nil {
				return "", false, fmt.Errorf("resourceFieldRef: no container %q", src.ResourceFieldRef.ContainerName)
			}
		}
		v, err := resourceFieldValue(target, src.ResourceFieldRef, info)
		return v, err == nil, err
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := getter.getConfigMap(pod.Namespace, ref.Name)
		if err != nil {
			if isOptional(ref.Optional) && isNotFound(err) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("configmap %q: %w", ref.Name, err)
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if isOptional(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := getter.getSecret(pod.Namespace, ref.Name)
		if err != nil {
			if isOptional(ref.Optional) && isNotFound(err) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("secret %q: %w", ref.Name, err)
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if isOptional(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
	}
	return "", false, fmt.Errorf("unsupported valueFrom")
}

func findContainer(pod *v1.Pod, name string) *v1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// podFieldValue implements fieldRef for env and downward API volumes.
func podFieldValue(pod *v1.Pod, path string, info podRuntimeInfo) (string, error) {
	if k, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return info.HostIP, nil
	case "status.hostIPs":
		return info.HostIP, nil
	case "status.podIP":
		if len(info.PodIPs) > 0 {
			return info.PodIPs[0], nil
		}
		return "", nil
	case "status.podIPs":
		return strings.Join(info.PodIPs, ","), nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return "", false
	}
	rest = strings.TrimSuffix(rest, "]")
	if len(rest) >= 2 && (rest[0] == '\'' || rest[0] == '"') && rest[len(rest)-1] == rest[0] {
		return rest[1 : len(rest)-1], true
	}
	return "", false
}

// formatMap renders labels/annotations like the downward API: k="v" lines.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(m) {
		fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(m[k]))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func resourceFieldValue(c *v1.Container, ref *v1.ResourceFieldSelector, info podRuntimeInfo) (string, error) {
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	var q resource.Quantity
	var ok bool
	switch ref.Resource {
	case "limits.cpu":
		if q, ok = c.Resources.Limits[v1.ResourceCPU]; !ok {
			q = info.NodeCPU
		}
	case "limits.memory":
		if q, ok = c.Resources.Limits[v1.ResourceMemory]; !ok {
			q = info.NodeMemory
		}
	case "limits.ephemeral-storage":
		q = c.Resources.Limits[v1.ResourceEphemeralStorage]
	case "requests.cpu":
		if q, ok = c.Resources.Requests[v1.ResourceCPU]; !ok {
			q = c.Resources.Limits[v1.ResourceCPU]
		}
	case "requests.memory":
		if q, ok = c.Resources.Requests[v1.ResourceMemory]; !ok {
			q = c.Resources.Limits[v1.ResourceMemory]
		}
	case "requests.ephemeral-storage":
		q = c.Resources.Requests[v1.ResourceEphemeralStorage]
	default:
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	if strings.HasSuffix(ref.Resource, ".cpu") {
		// CPU rounds up in millicores: limits.cpu=250m with divisor 1 -> 1.
		v := int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))
		return strconv.FormatInt(v, 10), nil
	}
	v := int64(math.Ceil(float64(q.Value()) / float64(divisor.Value())))
	return strconv.FormatInt(v, 10), nil
}

// serviceEnv is the docker-links style environment for services.
func serviceEnv(pod *v1.Pod, services []*v1.Service, master *v1.Service) [][2]string {
	byName := map[string]*v1.Service{}
	if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		for _, s := range services {
			if s.Namespace == pod.Namespace && v1helperIsServiceIPSet(s) {
				byName[s.Name] = s
			}
		}
	}
	// The master service is always there, overriding any local "kubernetes".
	if master != nil {
		byName["kubernetes"] = master
	}
	var names []string
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var out [][2]string
	for _, n := range names {
		s := byName[n]
		if len(s.Spec.Ports) == 0 {
			continue
		}
		prefix := strings.ToUpper(strings.ReplaceAll(n, "-", "_"))
		ip := s.Spec.ClusterIP
		first := s.Spec.Ports[0]
		out = append(out, [2]string{prefix + "_SERVICE_HOST", ip}, [2]string{prefix + "_SERVICE_PORT", strconv.Itoa(int(first.Port))})
		for _, p := range s.Spec.Ports {
			if p.Name != "" {
				out = append(out, [2]string{prefix + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), strconv.Itoa(int(p.Port))})
			}
		}
		proto := strings.ToLower(string(first.Protocol))
		if proto == "" {
			proto = "tcp"
		}
		hostPort := ip
		if strings.Contains(ip, ":") {
			hostPort = "[" + ip + "]"
		}
		out = append(out, [2]string{prefix + "_PORT", fmt.Sprintf("%s://%s:%d", proto, hostPort, first.Port)})
		for _, p := range s.Spec.Ports {
			pr := strings.ToLower(string(p.Protocol))
			if pr == "" {
				pr = "tcp"
			}
			pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(pr))
			out = append(out,
				[2]string{pp, fmt.Sprintf("%s://%s:%d", pr, hostPort, p.Port)},
				[2]string{pp + "_PROTO", pr},
				[2]string{pp + "_PORT", strconv.Itoa(int(p.Port))},
				[2]string{pp + "_ADDR", ip})
		}
	}
	return out
}

func v1helperIsServiceIPSet(s *v1.Service) bool {
	return s.Spec.ClusterIP != "" && s.Spec.ClusterIP != v1.ClusterIPNone
}

// mappingFor returns a $(VAR) mapping that leaves unknown references as is.
func mappingFor(vars map[string]string) func(string) string {
	return func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		return "$(" + name + ")"
	}
}

// expandVars implements Kubernetes $(VAR) expansion: $$ escapes a $,
// unknown or unterminated references are kept verbatim.
func expandVars(input string, mapping func(string) string) string {
	var buf bytes.Buffer
	checkpoint := 0
	for cursor := 0; cursor < len(input); cursor++ {
		if input[cursor] != '$' || cursor+1 >= len(input) {
			continue
		}
		buf.WriteString(input[checkpoint:cursor])
		read, isVar, advance := readVariableName(input[cursor+1:])
		if isVar {
			buf.WriteString(mapping(read))
		} else {
			buf.WriteString(read)
		}
		cursor += advance
		checkpoint = cursor + 1
	}
	return buf.String() + input[checkpoint:]
}

func readVariableName(input string) (string, bool, int) {
	switch input[0] {
	case '$':
		return "$", false, 1
	case '(':
		for i := 1; i < len(input); i++ {
			if input[i] == ')' {
				return input[1:i], true, i + 1
			}
		}
		return "$(", false, 1
	default:
		return "$" + input[:1], false, 1
	}
}
