package agent

import (
	"context"
	"log/slog"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/dnsresolve"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// nameRefresh bounds retries after failed lookups (Istio's default
// dnsRefreshRate); answers are re-resolved on their TTL.
const nameRefresh = 60 * time.Second

// newNames keeps the hostnames of the current snapshot's workloads
// (ServiceEntry endpoints of resolution DNS, and such entries' hosts)
// resolved in the background, as ztunnel resolves Workload.hostname:
// through the agent's resolv.conf, which is the cluster's DNS (the chart
// sets dnsPolicy ClusterFirstWithHostNet), from sockets with the skip mark
// so that DNS capture never steers the agent's own queries back to it.
func (a *agent) newNames(ctx context.Context) *dnsresolve.Set {
	var lookup dnsresolve.LookupFunc
	if c, err := dnsresolve.NewClient("/etc/resolv.conf"); err != nil {
		a.log.Error("no resolver: workloads reached by name (ServiceEntry resolution DNS) get no address", "err", err)
		lookup = func(context.Context, string, dnsresolve.Family) (dnsresolve.Answer, error) {
			return dnsresolve.Answer{}, err
		}
	} else {
		c.SetDialer(&net.Dialer{Control: markSkip})
		lookup = c.Lookup
	}
	names := dnsresolve.NewSet(lookup, dnsresolve.V4Only, dnsresolve.Options{RespectTTL: true, Refresh: nameRefresh},
		func(name string, st dnsresolve.State) { logName(a.log, name, st) })
	a.onClose(names.Close)
	// A name without an address refuses its connections: alert on
	// state="unresolved".
	a.reg.MustRegister(dnsresolve.Collector("weft_node_agent_dns_hosts",
		"Names of workloads reached by name (ServiceEntry resolution DNS) by state: resolved, stale (lookups failing, the last answer kept), unresolved (no address: connections are refused).",
		names.Counts))
	updates, unsubscribe := a.store.Subscribe()
	go func() {
		defer unsubscribe()
		for {
			names.Sync(hostnames(a.store.Snapshot()))
			select {
			case <-ctx.Done():
				return
			case <-updates:
			}
		}
	}()
	return names
}

// hostnames are the names the snapshot's workloads are reached by, but
// for workloads whose every service has a waypoint: the agent never
// connects to those (the waypoint resolves them), so every node need not
// ask the cluster's DNS for them every TTL.
func hostnames(snap *config.Snapshot) []string {
	var out []string
	for _, w := range snap.Workloads() {
		h := w.Proto.GetHostname()
		if h == "" {
			continue
		}
		for name := range w.Proto.GetServices() {
			if svc := snap.Service(name); svc == nil || svc.Proto.GetWaypoint() == nil {
				out = append(out, h)
				break
			}
		}
	}
	return out
}

func logName(log *slog.Logger, name string, st dnsresolve.State) {
	switch {
	case st.Err != nil && st.Stale:
		log.Warn("DNS lookup failed; keeping the last answer", "host", name, "addresses", st.Addrs, "resolved", st.Resolved, "err", st.Err)
	case st.Err != nil:
		log.Error("DNS lookup failed; connections to the host are refused", "host", name, "err", st.Err)
	default:
		log.Debug("DNS answer", "host", name, "addresses", st.Addrs)
	}
}

// markSkip sets the agent's skip mark on a socket.
func markSkip(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mesh.MarkSkip) }); err != nil {
		return err
	}
	return serr
}
