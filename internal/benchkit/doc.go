// Package benchkit is the machinery the data-path benchmarks share
// (node-agent/nodebench and waypoint/bench): the HTTP load generators and
// their latency result, CPU and memory readings of a process from /proc,
// and the child processes the proxies under test run in (the test binary
// re-executed from TestMain).
//
//   - load.go: Get, AtRate (open loop, fixed rate), ClosedLoop (maximum
//     rate) and HTTPClient.
//   - result.go: Result, one load phase (sorted latencies, errors,
//     percentiles, req/s).
//   - proc.go: ProcStats from /proc/<pid>/stat (utime+stime) and
//     /proc/<pid>/status (VmRSS), Children.
//   - child.go: SelfCommand, StartChild and Child on the test side; Main,
//     ReadConfig and ChildContext on the child side.
//   - wait.go: Eventually and FileText, small test helpers.
//   - netns.go: RequireRoot, Run and SweepStale, for the tests that build
//     network namespaces (also bpf's and node-agent/proxy's).
//
// It is used by tests only but is a normal package so that both benchmark
// packages can import it; it needs Linux (/proc) for the process parts.
package benchkit
