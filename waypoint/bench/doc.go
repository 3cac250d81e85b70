// Package bench measures the waypoint's L7 data path (package
// waypoint/proxy) against a direct connection and against nginx and HAProxy,
// all in one run on loopback, so every figure is reported next to its
// baseline.
//
// The code is test-only. Four paths to the same HTTP/1.1 backend (1 KB
// responses, in the test process):
//
//	direct:  client ───────────────────────────────────────────────> backend
//	weft:    client ─HBONE─> waypoint ─HBONE─> stand-in node agent ─> backend
//	nginx:   client ─HTTP──> nginx ─HTTP/1.1 keep-alive─────────────> backend
//	haproxy: client ─HTTP──> HAProxy ─HTTP/1.1 keep-alive───────────> backend
//
// The waypoint is configured from hand-written xDS resources (one service
// chain, one route, one EDS cluster with one HBONE endpoint) exactly as
// waypoint/proxy's tests build it, with SPIFFE certificates from a test CA
// (pkg/spiffetest). The client side is what a node agent does: one pooled
// mTLS HTTP/2 connection to the waypoint, one CONNECT stream per HTTP/1.1
// connection. The stand-in node agent (an hbone.Server in the test process)
// terminates the waypoint's upstream tunnels as the backend's identity and
// pipes each stream to its :authority, like waypoint/proxy's tests.
//
// The proxy under test runs in its own process so that its CPU
// (utime+stime from /proc/<pid>/stat) and memory (VmRSS) are measured the
// same way for every proxy: the waypoint is the test binary re-executed
// from TestMain in "waypoint" mode (configured by a JSON file naming the
// PEM files), nginx is the Debian binary started with a generated config
// (master plus workers, summed), HAProxy likewise (haproxy -db: one
// process, a thread per core). The load generator, the backend and the
// stand-in node agent share the test process.
//
// The load generators, the /proc readings and the proxy processes' start
// and stop are internal/benchkit's, shared with node-agent/nodebench.
//
// BenchmarkWaypoint/{direct,weft,nginx,haproxy}/{fixed-1000rps,max}: an open-loop
// 1000 req/s phase (latency percentiles, latency added over direct, proxy
// vCPU and RSS per 1000 req/s) and a closed-loop phase with N concurrent
// clients (maximum req/s). nginx and haproxy cases skip when their proxy is
// not installed (`apt-get install nginx-light haproxy`). TestWaypointHarness (part of `make
// test`, no nginx needed) proves the harness sends what it measures through
// the waypoint. docs/benchmarks.md has the figures; run with `make bench` or
//
//	go test ./waypoint/bench/ -run '^$' -bench . -benchmem
package bench
