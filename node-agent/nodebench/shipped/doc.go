// Package shipped measures weft-node-agent as `make build` ships it
// (BenchmarkShippedNodeAgent): the binary itself, in a node network
// namespace of its own, holding the synthetic mesh of package synth
// received over TLS from weft-control's xDS server (control/xds) in the
// test process. It is a package of its own so that node-agent/nodebench's
// test binary, re-executed as the node proxy there, does not link the xDS
// server: its code pages would count in that proxy's memory.
//
// It needs root (network namespaces, BPF, bpffs), iproute2 and the built
// binary (WEFT_BIN_DIR, else _output/bin); without them it skips, or fails
// under WEFT_E2E_REQUIRE=1.
package shipped
