package bpf

import (
	"fmt"
	"os"
	"strings"
)

// tcpEarlyDemux is the sysctl net.ipv4.tcp_early_demux of the calling
// thread's network namespace.
const tcpEarlyDemux = "/proc/sys/net/ipv4/tcp_early_demux"

// DisableTCPEarlyDemux turns net.ipv4.tcp_early_demux off in the calling
// thread's network namespace (the node's).
//
// The proxy's inbound delivery sockets live in the node's namespace but are
// bound to the client's address (IP_TRANSPARENT), and keep its 4-tuple for
// 60 s in TIME_WAIT after the proxy closed first. Early demux looks up every
// received TCP segment in the established table before routing, so a
// forwarded segment of another connection with that tuple (a pod's direct
// connection once the pod is released or the mesh uninstalled, ports being
// picked independently on each side) gets the TIME_WAIT socket attached, and
// ip_forward drops any segment that carries a socket: the connection hangs
// until the socket expires. With early demux off, segments are routed first
// and only local ones are looked up. The cost is one route lookup per
// segment of the node's own TCP connections. (The same trade is made by AWS
// VPC CNI and Cilium's L7 proxy for their transparent sockets.)
func DisableTCPEarlyDemux() error {
	if err := os.WriteFile(tcpEarlyDemux, []byte("0\n"), 0o644); err != nil {
		return fmt.Errorf("sysctl net.ipv4.tcp_early_demux=0: %w", err)
	}
	return nil
}

// TCPEarlyDemux reports whether net.ipv4.tcp_early_demux is on in the
// calling thread's network namespace.
func TCPEarlyDemux() (bool, error) {
	b, err := os.ReadFile(tcpEarlyDemux)
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) != "0", nil
}
