// Package mesh is the vocabulary weft-control, the node agent, the waypoint
// and weftctl must agree on: well-known ports, packet marks, xDS node IDs,
// the form of workload SPIFFE IDs, cluster names, Weft's xDS type URLs and
// the names the control plane's output shares with the waypoint. The peer
// metadata HBONE carries (Forwarded, baggage) is pkg/hbone's. Each value
// is defined here once; the binaries refer to these names instead of
// repeating the values (bpf's constants, which capture.c must match, are
// defined from these).
//
// Envoy's own names (filter and transport socket names, Envoy type URLs) are
// not repeated here: use go-control-plane's pkg/wellknown and
// pkg/resource/v3.
package mesh

import (
	"net"
	"strconv"
)

// Ports (the same numbers as Istio's ambient mode). They are untyped so
// that each use site keeps its own integer type.
const (
	// OutboundPort is the node agent's transparent listener for enrolled
	// pods' outbound traffic.
	OutboundPort = 15001
	// InboundPlaintextPort is the node agent's transparent listener for
	// plaintext traffic to enrolled pods (no tunnel, no peer identity).
	InboundPlaintextPort = 15006
	// InboundNATPort is the node agent's transparent listener for plaintext
	// connections that netfilter DNATed to enrolled pods (NodePort,
	// LoadBalancer, hostPort; bpf.NATSteering). Weft's own: Istio captures
	// these inside the pod.
	InboundNATPort = 15007
	// HBONEPort is where node agents and waypoints accept HBONE (HTTP/2
	// CONNECT over mutual TLS).
	HBONEPort = 15008
	// AdminPort is the node agent's and waypoint's admin endpoint
	// (/config_dump, ...), on loopback only.
	AdminPort = 15000
	// XDSPort is weft-control's gRPC over TLS port: xDS and the CA.
	XDSPort = 15012
	// MonitoringPort is weft-control's HTTP port: /metrics, /ready,
	// /healthz, /debug/syncz, /dashboard.
	MonitoringPort = 15014
	// MetricsPort is the node agent's and waypoint's Prometheus endpoint.
	MetricsPort = 15020
	// ReadinessPort is the node agent's and waypoint's /healthz/ready and
	// /healthz/live.
	ReadinessPort = 15021
)

// ControlService is weft-control's Service in its default namespace.
const ControlService = "weft-control." + SystemNamespace + ".svc"

// Addr joins host and port ("" host: all addresses, ":15020").
func Addr(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// ControlAddress is the default xDS and CA endpoint of node agents and
// waypoints: ControlService on XDSPort.
func ControlAddress() string { return Addr(ControlService, XDSPort) }

// Packet marks (skb->mark bits). They avoid kube-proxy's 0x4000/0x8000 and
// Cilium's 0xf00. bpf/capture.c defines the same values (WEFT_MARK_*); the
// bpf package's tests check that.
const (
	// MarkCapture is set by the capture programs on every packet they
	// steer to a proxy listener; policy routing delivers such packets
	// locally.
	MarkCapture = 0x1000
	// MarkSkip on a packet means "never capture": the node agent sets it
	// (SO_MARK) on its own passthrough connections.
	MarkSkip = 0x2000
)

// Policy routing of captured packets: the node agent's rule
// "fwmark MarkCapture/MarkCapture lookup PolicyTable priority
// PolicyPriority" (after the local table at 0, before main at 32766).
const (
	PolicyTable    = 1500
	PolicyPriority = 1500
)

// ReleasePodsEnv is the node agent's environment variable that makes it
// release every pod (enrol none, unenrol all: the first step of an
// uninstall); weftctl uninstall sets it to "true".
const ReleasePodsEnv = "WEFT_RELEASE_PODS"
