package kubelet

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type probeKind string

const (
	probeStartup   probeKind = "Startup"
	probeReadiness probeKind = "Readiness"
	probeLiveness  probeKind = "Liveness"
)

// startProbes runs the container's probes until ctx is cancelled (the
// instance exited or the pod is stopping). Results go to cs under ps.mu and
// trigger a pod sync.
func (k *Kubelet) startProbes(ctx context.Context, ps *podState, pod *v1.Pod, c *v1.Container, cs *ctrState, ctr *Container) {
	startedCh := make(chan struct{})
	if c.StartupProbe == nil {
		close(startedCh)
	} else {
		go k.probeLoop(ctx, ps, pod, c, cs, ctr, probeStartup, c.StartupProbe, nil, func(ok bool) bool {
			if ok {
				ps.mu.Lock()
				cs.started = true
				if c.ReadinessProbe == nil {
					cs.ready = !cs.isInit || isSidecar(c)
				}
				ps.mu.Unlock()
				close(startedCh)
				return false // stop the startup probe
			}
			return true
		})
	}
	if c.ReadinessProbe != nil {
		go k.probeLoop(ctx, ps, pod, c, cs, ctr, probeReadiness, c.ReadinessProbe, startedCh, func(ok bool) bool {
			ps.mu.Lock()
			cs.ready = ok
			ps.mu.Unlock()
			return true
		})
	}
	if c.LivenessProbe != nil {
		go k.probeLoop(ctx, ps, pod, c, cs, ctr, probeLiveness, c.LivenessProbe, startedCh, func(ok bool) bool { return true })
	}
}

// probeLoop applies periods/thresholds. onResult is called on every change
// of the thresholded result and returns whether to keep probing.
func (k *Kubelet) probeLoop(ctx context.Context, ps *podState, pod *v1.Pod, c *v1.Container, cs *ctrState, ctr *Container, kind probeKind, p *v1.Probe, after <-chan struct{}, onResult func(bool) bool) {
	if after != nil {
		select {
		case <-after:
		case <-ctx.Done():
			return
		}
	}
	period := time.Duration(defaultInt(p.PeriodSeconds, 10)) * time.Second
	timeout := time.Duration(defaultInt(p.TimeoutSeconds, 1)) * time.Second
	successTh := int(defaultInt(p.SuccessThreshold, 1))
	failureTh := int(defaultInt(p.FailureThreshold, 3))
	// Initial delay counts from container start.
	if d := time.Duration(p.InitialDelaySeconds)*time.Second - time.Since(ctr.State.StartedAt); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return
		}
	}
	var successes, failures int
	var last *bool
	for {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := k.runProbe(pctx, ps, pod, c, p, ctr)
		cancel()
		if ctx.Err() != nil {
			return
		}
		var result *bool
		if err == nil {
			successes, failures = successes+1, 0
			if successes >= successTh {
				result = ptrTo(true)
			}
		} else {
			failures, successes = failures+1, 0
			k.recorder.Eventf(pod, v1.EventTypeWarning, "Unhealthy", "%s probe failed: %v", kind, err)
			if failures >= failureTh {
				result = ptrTo(false)
			}
		}
		if result != nil && (last == nil || *last != *result) {
			last = result
			keep := onResult(*result)
			k.enqueue(podKey(pod.Namespace, pod.Name))
			if !keep {
				return
			}
		}
		if result != nil && !*result && (kind == probeLiveness || kind == probeStartup) {
			k.recorder.Eventf(pod, v1.EventTypeNormal, "Killing", "Container %s failed %s probe, will be restarted", c.Name, strings.ToLower(string(kind)))
			k.log.Info("probe failed, restarting container", "pod", ps.key(), "container", c.Name, "probe", kind, "err", err)
			grace := time.Duration(defaultInt64(pod.Spec.TerminationGracePeriodSeconds, 30)) * time.Second
			if p.TerminationGracePeriodSeconds != nil {
				grace = time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
			}
			k.rt.Stop(ctr, grace)
			return
		}
		select {
		case <-time.After(period):
		case <-ctx.Done():
			return
		}
	}
}

func defaultInt(v int32, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

func defaultInt64(v *int64, def int64) int64 {
	if v == nil {
		return def
	}
	return *v
}

// probeHost is where the kubelet reaches the pod: its IP, or loopback for
// hostNetwork pods (the kubelet is in the node's netns).
func (k *Kubelet) probeHost(ps *podState) string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.sandbox == nil || ps.sandbox.HostNetwork || len(ps.sandbox.PodIPs) == 0 {
		return "127.0.0.1"
	}
	return ps.sandbox.PodIPs[0]
}

func (k *Kubelet) runProbe(ctx context.Context, ps *podState, pod *v1.Pod, c *v1.Container, p *v1.Probe, ctr *Container) error {
	switch {
	case p.Exec != nil:
		return k.execProbe(ctx, ctr, p.Exec.Command)
	case p.HTTPGet != nil:
		return httpProbe(ctx, k.probeHost(ps), c, p.HTTPGet)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = k.probeHost(ps)
		}
		return tcpProbe(ctx, host, port)
	case p.GRPC != nil:
		// No gRPC health client here: a TCP connect stands in for it.
		return tcpProbe(ctx, k.probeHost(ps), int(p.GRPC.Port))
	}
	return errors.New("probe has no handler")
}

func resolvePort(port intstr.IntOrString, c *v1.Container) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("no port named %q in container %s", port.StrVal, c.Name)
}

func tcpProbe(ctx context.Context, host string, port int) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return conn.Close()
}

func httpProbe(ctx context.Context, defaultHost string, c *v1.Container, h *v1.HTTPGetAction) error {
	port, err := resolvePort(h.Port, c)
	if err != nil {
		return err
	}
	host := h.Host
	if host == "" {
		host = defaultHost
	}
	scheme := strings.ToLower(string(h.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := h.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	u, err = u.Parse(path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	req.Header.Set("Accept", "*/*")
	for _, hd := range h.HTTPHeaders {
		if strings.EqualFold(hd.Name, "Host") {
			req.Host = hd.Value
			continue
		}
		req.Header.Add(hd.Name, hd.Value)
	}
	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			DisableKeepAlives: true,
			Proxy:             nil,
		},
		// Like the kubelet: follow redirects to the same host only.
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if r.URL.Hostname() != u.Hostname() || len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 10*1024))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d (%s)", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

func (k *Kubelet) execProbe(ctx context.Context, ctr *Container, cmd []string) error {
	var out bytes.Buffer
	err := k.rt.Exec(ctx, &ctr.State, cmd, ExecIO{Stdout: &out, Stderr: &out})
	if err != nil {
		msg := strings.TrimSpace(out.String())
		if ctx.Err() != nil {
			return fmt.Errorf("command %q timed out", strings.Join(cmd, " "))
		}
		if msg != "" {
			return fmt.Errorf("%v: %s", err, msg)
		}
		return err
	}
	return nil
}

// runHook runs a preStop/postStart handler.
func (k *Kubelet) runHook(ctx context.Context, ps *podState, pod *v1.Pod, h *v1.LifecycleHandler, ctr *Container) error {
	c := findContainer(pod, ctr.State.Name)
	if c == nil {
		return nil
	}
	switch {
	case h.Exec != nil:
		return k.execProbe(ctx, ctr, h.Exec.Command)
	case h.HTTPGet != nil:
		return httpProbe(ctx, k.probeHost(ps), c, h.HTTPGet)
	case h.Sleep != nil:
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		case <-ctx.Done():
		}
	}
	return nil
}
