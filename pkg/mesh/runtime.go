package mesh

// ProxyGODEBUG is the GODEBUG environment of Weft's proxies (the node
// agent, waypoints, ingress gateways): the charts and the waypoint
// Deployments set it, and the benchmarks run their proxies with it.
//
// Go's sysmon thread sleeps deeply while every P is idle, and the next
// system call (any socket read or write) wakes it: a futex wake, a thread
// switch, and sysmon polling every 20 us until it finds every P idle again
// and goes back to sleep (golang/go#18236). A proxy below full load is idle
// between requests, so it paid that on most of its system calls: 17% of the
// node agent's CPU at 1000 req/s in a profile, plus sysmon's own wake-ups.
// With schedtrace set, sysmon never sleeps deeply: while idle it backs off
// to polling every 10 ms, and system calls do not wake it. The interval is
// the largest Go accepts (2^31-1 ms, 24.8 days), counted from the node's
// boot (the monotonic clock): the runtime prints one "SCHED" line to
// stderr at start on a node up longer than that, then one every 24.8
// days, and nothing else. docs/operations.md#go-runtime has the figures
// and the chart values that turn it off.
const ProxyGODEBUG = "schedtrace=2147483647"
