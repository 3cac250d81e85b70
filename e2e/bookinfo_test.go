package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const bookinfoTitle = "<title>Simple Bookstore App</title>"

const productpageLB = `apiVersion: v1
kind: Service
metadata:
  name: productpage-lb
spec:
  type: LoadBalancer
  selector:
    app: productpage
  ports:
  - name: http2
    port: 80
    targetPort: 9080
`

// TestLocalClusterBookinfo is the local cluster's proof: a two-node cluster
// runs Bookinfo exactly as Istio's tutorial deploys it, pods on both nodes
// reach each other through cluster DNS and Service VIPs, Deployments heal,
// and tear-down leaves nothing behind on the machine.
func TestLocalClusterBookinfo(t *testing.T) {
	e := startCluster(t, "e2ebook", 2, 1)
	root := repoRoot()

	start := time.Now()
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/curl/curl.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")
	e.mustKubectl(t, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s")
	t.Logf("Bookinfo ready in %s", time.Since(start).Round(100*time.Millisecond))

	pods := e.podsByNode(t)
	if len(pods) < 2 {
		t.Fatalf("want pods on both nodes, got %v", pods)
	}

	t.Run("tutorial curl from the ratings pod", func(t *testing.T) {
		// The tutorial's command, verbatim but for the kubectl path.
		ratings := strings.TrimSpace(e.mustKubectl(t, "get", "pod", "-l", "app=ratings", "-o", "jsonpath={.items[0].metadata.name}"))
		out := e.mustKubectl(t, "exec", ratings, "-c", "ratings", "--", "curl", "-sS", "productpage:9080/productpage")
		if got := regexp.MustCompile(`<title>.*</title>`).FindString(out); got != bookinfoTitle {
			t.Fatalf("title = %q, want %q", got, bookinfoTitle)
		}
	})

	t.Run("every node reaches productpage through DNS and the Service VIP", func(t *testing.T) {
		for node, names := range pods {
			out := e.mustKubectl(t, "exec", names[0], "--", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://productpage:9080/productpage")
			if out != "200" {
				t.Errorf("from %s on %s: HTTP %q, want 200", names[0], node, out)
			}
		}
	})

	t.Run("all reviews versions answer", func(t *testing.T) {
		seen := map[string]int{}
		eventually(t, "reviews v1, v2 and v3 all answer", 60*time.Second, func() error {
			out, err := e.kubectl("exec", "deploy/curl", "--", "sh", "-c",
				`for i in $(seq 1 20); do curl -sS reviews.default.svc.cluster.local:9080/reviews/0; echo; done`)
			if err != nil {
				return err
			}
			dec := json.NewDecoder(strings.NewReader(out)) // one JSON object per reply
			for dec.More() {
				var r struct {
					Version string `json:"version"`
				}
				if err := dec.Decode(&r); err != nil {
					return fmt.Errorf("reviews replies %q: %w", out, err)
				}
				seen[r.Version]++
			}
			for _, v := range []string{"v1", "v2", "v3"} {
				if seen[v] == 0 {
					return fmt.Errorf("seen so far: %v", seen)
				}
			}
			return nil
		})
	})

	t.Run("kubectl logs shows the service's log", func(t *testing.T) {
		out := e.mustKubectl(t, "logs", "deploy/productpage-v1", "--tail=50")
		if !strings.Contains(out, "/productpage") {
			t.Fatalf("productpage log has no request line:\n%s", out)
		}
	})

	t.Run("exec propagates the exit code", func(t *testing.T) {
		_, err := e.kubectl("exec", "deploy/curl", "--", "sh", "-c", "exit 3")
		if err == nil || !strings.Contains(err.Error(), "exit status 3") {
			t.Fatalf("want exit status 3, got %v", err)
		}
	})

	t.Run("a deleted pod is replaced by its Deployment", func(t *testing.T) {
		old := strings.TrimSpace(e.mustKubectl(t, "get", "pod", "-l", "app=productpage", "-o", "jsonpath={.items[0].metadata.name}"))
		e.mustKubectl(t, "delete", "pod", old, "--wait=true", "--timeout=60s")
		eventually(t, "a new productpage pod is Ready", 90*time.Second, func() error {
			out, err := e.kubectl("get", "pod", "-l", "app=productpage", "-o",
				`jsonpath={range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
			if err != nil {
				return err
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) == 2 && f[0] != old && f[1] == "True" {
					return nil
				}
			}
			return fmt.Errorf("pods: %q", out)
		})
		// The Service follows once the EndpointSlice and kube-proxy catch up.
		eventually(t, "the Service serves the page from the replacement", 30*time.Second, func() error {
			out, err := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "productpage:9080/productpage")
			if err != nil {
				return err
			}
			if !strings.Contains(out, bookinfoTitle) {
				return fmt.Errorf("no title in %q", out)
			}
			return nil
		})
	})

	t.Run("an unknown image is reported on the pod", func(t *testing.T) {
		e.mustKubectl(t, "run", "ghost", "--image=example.invalid/no-such-image:1", "--restart=Never")
		eventually(t, "ErrImagePull on the pod", 60*time.Second, func() error {
			out, err := e.kubectl("get", "pod", "ghost", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "ImagePull") || !strings.Contains(out, "image map") {
				return fmt.Errorf("waiting state %q", out)
			}
			return nil
		})
		e.mustKubectl(t, "delete", "pod", "ghost", "--wait=true", "--timeout=60s")
	})

	t.Run("hostNetwork DaemonSet pods see their own node's root", func(t *testing.T) {
		e.mustKubectl(t, "apply", "-f", filepath.Join(root, "e2e/testdata/node-probe-daemonset.yaml"))
		e.mustKubectl(t, "-n", "kube-system", "rollout", "status", "daemonset/node-probe", "--timeout=60s")
		out := e.mustKubectl(t, "-n", "kube-system", "get", "pod", "-l", "app=node-probe", "-o",
			`jsonpath={range .items[*]}{.metadata.name}{" "}{.spec.nodeName}{" "}{.status.podIP}{" "}{.status.hostIP}{"\n"}{end}`)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("want one pod per node, got %q", out)
		}
		cidrs := map[string]bool{}
		for _, line := range lines {
			f := strings.Fields(line)
			pod, node, podIP, hostIP := f[0], f[1], f[2], f[3]
			if podIP != hostIP {
				t.Errorf("%s on %s: hostNetwork pod IP %s != node IP %s", pod, node, podIP, hostIP)
			}
			// The pod runs in the node's network namespace...
			if addrs := e.mustKubectl(t, "-n", "kube-system", "exec", pod, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, hostIP+"/") {
				t.Errorf("%s: eth0 is not the node uplink: %s", pod, addrs)
			}
			// ...sees its node's CNI config through hostPath...
			conf := e.mustKubectl(t, "-n", "kube-system", "exec", pod, "--", "cat", "/host/etc/cni/net.d/10-weft.conflist")
			cidr := regexp.MustCompile(`"subnet": "([0-9./]+)"`).FindStringSubmatch(conf)
			if cidr == nil {
				t.Fatalf("%s: no subnet in CNI config:\n%s", pod, conf)
			}
			cidrs[cidr[1]] = true
			// ...and the node's own bpffs.
			if fs := strings.TrimSpace(e.mustKubectl(t, "-n", "kube-system", "exec", pod, "--", "stat", "-f", "-c", "%T", "/sys/fs/bpf")); fs != "bpf_fs" {
				t.Errorf("%s: /sys/fs/bpf is %q, want bpf_fs", pod, fs)
			}
		}
		if len(cidrs) != 2 {
			t.Errorf("both DaemonSet pods read the same node's CNI config: %v", cidrs)
		}
	})

	t.Run("a LoadBalancer Service is reachable from the host at its status address", func(t *testing.T) {
		e.applyYAML(t, productpageLB)
		var host string
		eventually(t, "the load balancer address in the Service status", 20*time.Second, func() error {
			host = strings.TrimSpace(e.mustKubectl(t, "get", "service", "productpage-lb", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"))
			if host == "" {
				return fmt.Errorf("no address yet")
			}
			return nil
		})
		port := strings.TrimSpace(e.mustKubectl(t, "get", "service", "productpage-lb", "-o", `jsonpath={.spec.ports[?(@.name=="http2")].port}`))
		url := "http://" + net.JoinHostPort(host, port) + "/productpage"
		eventually(t, "GET "+url+" from the host", 20*time.Second, func() error {
			resp, err := http.Get(url)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(body), bookinfoTitle) {
				return fmt.Errorf("HTTP %d, %d bytes", resp.StatusCode, len(body))
			}
			return nil
		})
		e.mustKubectl(t, "delete", "service", "productpage-lb")
		eventually(t, "the host address released", 20*time.Second, func() error {
			if c, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), time.Second); err == nil {
				c.Close()
				return fmt.Errorf("%s:%s still accepts connections", host, port)
			}
			return nil
		})
	})

	t.Run("tear-down leaves nothing behind", func(t *testing.T) {
		state := e.c.Config.StateDir
		if err := e.c.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		assertNoLeftovers(t, "e2ebook", state)
	})
}

// podsByNode maps node name to the names of the default namespace's pods on it.
func (e *env) podsByNode(t *testing.T) map[string][]string {
	out := e.mustKubectl(t, "get", "pod", "-o", `jsonpath={range .items[*]}{.spec.nodeName}{" "}{.metadata.name}{"\n"}{end}`)
	byNode := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			byNode[f[0]] = append(byNode[f[0]], f[1])
		}
	}
	return byNode
}

// assertNoLeftovers checks the machine for anything the named cluster made:
// network namespaces, mounts below its state dir, live processes in its
// cgroup.
func assertNoLeftovers(t *testing.T, name, state string) {
	t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "weft-"+name+"-") {
			t.Errorf("network namespace %s left behind", en.Name())
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], state) {
			t.Errorf("mount left behind: %s", f[4])
		}
	}
	for _, root := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(root, "weft-"+name)); err == nil {
			t.Errorf("cgroup %s left behind", filepath.Join(root, "weft-"+name))
		}
	}
	left, _ := os.ReadDir(state)
	var names []string
	for _, en := range left {
		names = append(names, en.Name())
	}
	if slices.ContainsFunc(names, func(n string) bool { return n != "logs" }) {
		t.Errorf("state dir %s keeps %v, want only logs/", state, names)
	}
}
