// Package cni is the contract between the weft-cni plugin and the node agent:
// the enrolment Event, the agent's HTTP server on a unix socket, the
// plugin-side Notify with its on-disk spool for when the agent is away, and
// the installer that puts weft-cni into the node's CNI configuration.
package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Op is what happened to a pod sandbox.
type Op string

const (
	// OpAdd: the sandbox was wired by the main plugin (ptp/bridge); enrol it.
	OpAdd Op = "ADD"
	// OpDel: the sandbox is being torn down; forget it (idempotent).
	OpDel Op = "DEL"
)

// Defaults for the plugin's configuration (the conflist entry's fields).
const (
	DefaultAgentSocket = "/var/run/weft/cni.sock"
	DefaultSpoolDir    = "/var/run/weft/cni-spool"
	// DefaultNotifyTimeout bounds one delivery attempt to the agent. The
	// plugin runs inside the runtime's pod-creation path: keep it short.
	DefaultNotifyTimeout = 2 * time.Second
	// PluginType is the "type" of weft-cni's entry in a conflist and the
	// name of its binary.
	PluginType = "weft-cni"
	// EventPath is the agent's HTTP endpoint for events.
	EventPath = "/v1/cni"
)

// Event is one CNI ADD or DEL as the plugin saw it, sent to the node agent
// (JSON over HTTP on a unix socket) or spooled to disk when the agent is
// unreachable.
type Event struct {
	Op           Op     `json:"op"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
	// Netns is the sandbox's network namespace path as the runtime gave it.
	Netns string `json:"netns,omitempty"`
	// HostInterface/HostIfindex: the pod's host-side interface (the ptp or
	// bridge veth peer) in the node's network namespace, where the agent
	// attaches its outbound capture program. Ifindex 0: not resolved.
	HostInterface string `json:"hostInterface,omitempty"`
	HostIfindex   int    `json:"hostIfindex,omitempty"`
	// IPs are the pod's addresses (no prefix length), as in prevResult.
	IPs         []string `json:"ips,omitempty"`
	ContainerID string   `json:"containerID"`
	// Time is when the plugin saw the event (informational; spool replay
	// order is by file mtime).
	Time time.Time `json:"time,omitzero"`
}

// Validate reports whether the event can be acted on.
func (e *Event) Validate() error {
	var errs []error
	switch e.Op {
	case OpAdd, OpDel:
	default:
		errs = append(errs, fmt.Errorf("op %q: want %q or %q", e.Op, OpAdd, OpDel))
	}
	if e.ContainerID == "" {
		errs = append(errs, errors.New("containerID is empty"))
	}
	for _, ip := range e.IPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			errs = append(errs, fmt.Errorf("ips: %w", err))
		}
	}
	if e.HostIfindex < 0 {
		errs = append(errs, fmt.Errorf("hostIfindex %d is negative", e.HostIfindex))
	}
	return errors.Join(errs...)
}

// String is a short description for logs.
func (e *Event) String() string {
	return fmt.Sprintf("%s %s/%s (container %s, host if %s/%d, ips %v)",
		e.Op, e.PodNamespace, e.PodName, e.ContainerID, e.HostInterface, e.HostIfindex, e.IPs)
}
