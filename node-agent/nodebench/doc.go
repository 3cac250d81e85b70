// Package nodebench measures the node agent's data path against a direct
// connection in the same run: real eBPF capture (package bpf) in real
// network namespaces steering pods' connections to the real proxy (package
// node-agent/proxy), same node and cross node.
//
// The code is test-only (see topo_test.go for the topology). Two "node"
// network namespaces are joined by a veth pair (the fabric; each end is its
// node's uplink); pods hang off their node on ptp-style veths (a /32 route
// per pod on the node, the pod's default route via the host-side address):
//
//	client 10.10.1.2 ─┐                               ┌─ server-b 10.10.2.3
//	                  node-a ══ 192.168.77.1 ── .2 ══ node-b
//	server-a 10.10.1.3┘
//
// Each node's proxy runs in its own process (the test binary re-executed
// from TestMain, started inside the node's netns), because a netns belongs
// to an OS thread and the proxy opens sockets from arbitrary goroutines.
// The test process loads and attaches the capture programs in each node's
// netns, enrols the pods, and runs the load generator and the servers in
// the pod namespaces (a socket keeps the netns it was created in).
//
// "Direct" is the same client -> server path with the pods not enrolled
// (the programs stay attached), measured in the same run just before the
// enrolled ("mesh") phase, so every figure is reported as a ratio against
// it. Cross node, a third phase goes through the stunnel peer
// (stunnel_test.go): the conventional mTLS tunnel a user would put between
// two nodes without a mesh, one stunnel per node, pods not enrolled. Same
// node, it goes through HAProxy relaying TCP in node-a (relay_test.go):
// the agent's same-node hop without the mesh's work.
// Run with `make bench` or
//
//	go test ./node-agent/nodebench/ -run '^$' -bench . -benchmem
//
// The load generator, the /proc readings and the proxy processes'
// start and stop are internal/benchkit's, shared with waypoint/bench. The
// synthetic mesh of BenchmarkNodeAgentScale is package synth's; the
// shipped weft-node-agent holding it is measured by package shipped.
//
// It needs root (network namespaces, BPF, bpffs) and iproute2; without them
// it skips, or fails under WEFT_E2E_REQUIRE=1.
package nodebench
