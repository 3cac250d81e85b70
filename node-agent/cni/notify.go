package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// NotifyConfig says where the plugin finds the agent and its spool.
type NotifyConfig struct {
	AgentSocket string // default DefaultAgentSocket
	SpoolDir    string // default DefaultSpoolDir
	// EnrolledNamespaces is the agent's enrolled-namespaces file; default
	// DefaultEnrolledNamespaces.
	EnrolledNamespaces string
	Timeout            time.Duration // one delivery attempt; default DefaultNotifyTimeout
}

func (c NotifyConfig) withDefaults() NotifyConfig {
	if c.AgentSocket == "" {
		c.AgentSocket = DefaultAgentSocket
	}
	if c.SpoolDir == "" {
		c.SpoolDir = DefaultSpoolDir
	}
	if c.EnrolledNamespaces == "" {
		c.EnrolledNamespaces = DefaultEnrolledNamespaces
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultNotifyTimeout
	}
	return c
}

// NotifyResult says how an event reached the agent.
type NotifyResult struct {
	Delivered bool   // the agent accepted it
	SpoolPath string // set when it was spooled instead
	// AgentErr is why direct delivery failed (nil when Delivered).
	AgentErr error
}

// Notify sends ev to the agent over its unix socket (HTTP POST EventPath),
// bounded by cfg.Timeout. When the agent is unreachable or answers with an
// error, the event is written to cfg.SpoolDir for the agent to replay
// (DrainSpool) and the result says so. The error is non-nil only if the
// event was neither delivered nor spooled, or if it is the ADD of a pod
// that must not start uncaptured (wrapping ErrNotCaptured): the agent said
// so (409), or no agent answered and cfg.EnrolledNamespaces lists the pod's
// namespace. Such an ADD is not spooled: the kubelet retries it.
func Notify(ctx context.Context, cfg NotifyConfig, ev Event) (NotifyResult, error) {
	cfg = cfg.withDefaults()
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if err := ev.Validate(); err != nil {
		return NotifyResult{}, fmt.Errorf("invalid event: %w", err)
	}
	if ev.Op == OpDel {
		// Before the agent sees this DEL, make sure a replay can never bring
		// back an ADD of the same container that it has not seen yet.
		_ = removeSpooledAdd(cfg.SpoolDir, ev.ContainerID)
	}
	agentErr := send(ctx, cfg, ev)
	if agentErr == nil {
		return NotifyResult{Delivered: true}, nil
	}
	if errors.Is(agentErr, ErrNotCaptured) {
		return NotifyResult{AgentErr: agentErr}, agentErr
	}
	if enrolledAtAdd(cfg.EnrolledNamespaces, ev) {
		return NotifyResult{AgentErr: agentErr}, fmt.Errorf("%w: no node agent answers (%v) and namespace %s is enrolled (%s)",
			ErrNotCaptured, agentErr, ev.PodNamespace, cfg.EnrolledNamespaces)
	}
	path, err := Spool(cfg.SpoolDir, ev)
	if err != nil {
		return NotifyResult{AgentErr: agentErr}, fmt.Errorf("agent at %s: %w; and spooling failed: %w", cfg.AgentSocket, agentErr, err)
	}
	return NotifyResult{SpoolPath: path, AgentErr: agentErr}, nil
}

func send(ctx context.Context, cfg NotifyConfig, ev Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	client := unixClient(cfg.AgentSocket)
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://weft-agent"+EventPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusConflict:
		return fmt.Errorf("%w: the node agent answered: %s", ErrNotCaptured, bytes.TrimSpace(msg))
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("agent answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// unixClient is an HTTP client whose every connection goes to socket.
func unixClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
}
