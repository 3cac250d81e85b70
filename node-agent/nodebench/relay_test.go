package nodebench

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/pkg/netns"
)

// The same-node peer is HAProxy relaying TCP in node-a's netns, between
// the client pod and server-a: the hop the node agent makes for a
// same-node connection (accept, connect, copy both ways), in a mature
// user-space proxy, with none of the mesh's work (no capture, identity,
// policy or metrics; a log line per connection, as the agent's access
// log). It shows what any user-space relay costs on this machine. The
// same-node leaves measure it as a third phase with the pods not
// enrolled; it connects to server-a from node-a's address.

// relayServices are the relayed server ports, each on its own port of
// node-a's fabric address.
var relayServices = []struct {
	name        string
	port, relay uint16 // server-a's port, HAProxy's on node-a
}{{"bulk", bulkPort, 17001}, {"echo", echoPort, 17002}, {"http", httpPort, 17080}}

// relayConf: one thread per core (nbthread's default), a log line per
// connection to fd 3 (a file) as the agent logs each connection; timeouts
// longer than any phase.
const relayConf = `global
  maxconn 4096
  log fd@3 format raw local0
defaults
  mode tcp
  log global
  option tcplog
  option dontlognull
  timeout connect 5s
  timeout client 10m
  timeout server 10m
`

// relay is the running HAProxy.
type relay struct{ proc *benchkit.Child }

func (*relay) name() string { return "haproxy" }

// addr is where the client pod dials to reach server-a's port through
// the relay.
func (r *relay) addr(port uint16) netip.AddrPort {
	for _, svc := range relayServices {
		if svc.port == port {
			return netip.AddrPortFrom(netip.MustParseAddr(fabricA), svc.relay)
		}
	}
	panic(fmt.Sprintf("no relayed service for port %d", port))
}

func (r *relay) procs() []*benchkit.Child { return []*benchkit.Child{r.proc} }

func relayConfig() string {
	var b strings.Builder
	b.WriteString(relayConf)
	for _, svc := range relayServices {
		fmt.Fprintf(&b, "listen %s\n  bind %s\n  server %s %s\n", svc.name,
			netip.AddrPortFrom(netip.MustParseAddr(fabricA), svc.relay), svc.name, netip.AddrPortFrom(netip.MustParseAddr(serverAIP), svc.port))
	}
	return b.String()
}

// startRelay starts HAProxy in node-a's netns; nil when HAProxy is not
// installed. StartChild's cleanup stops it by PID.
func (h *harness) startRelay(tb testing.TB, dir string) *relay {
	tb.Helper()
	bin := benchkit.Binary("haproxy")
	if bin == "" {
		tb.Log("HAProxy is not installed (Debian: haproxy): the same-node relay peer is skipped")
		return nil
	}
	conf := filepath.Join(dir, "relay.cfg")
	writeFile(tb, conf, []byte(relayConfig()))
	alog, err := os.Create(filepath.Join(dir, "relay-access.log"))
	if err != nil {
		tb.Fatal(err)
	}
	defer alog.Close() // HAProxy has its own copy once started
	cmd := exec.Command(bin, "-db", "-f", conf)
	cmd.ExtraFiles = []*os.File{alog}
	// HAProxy does not watch its stdin as our proxies do: should the test
	// process die before its cleanups, this ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	ports := make([]uint16, len(relayServices))
	for i, svc := range relayServices {
		ports[i] = svc.relay
	}
	nsPath := h.a.ns
	proc, _ := benchkit.StartChild(tb, cmd, benchkit.ChildOptions{
		Name:   "node-a haproxy relay",
		Stderr: filepath.Join(dir, "relay.stderr"),
		Start:  func(cmd *exec.Cmd) error { return netns.Start(cmd, nsPath) },
		Ready:  listeningOn(cmd, ports),
	})
	return &relay{proc: proc}
}

// checkRelay proves the relay peer measures what it claims: with the pods
// not enrolled, one request from the client pod to the relay reaches
// server-a from node-a's address (HAProxy's connection, not the
// client's) and no proxy.
func (h *harness) checkRelay(t *testing.T) {
	t.Helper()
	h.enroll(t, false)
	na := len(accessLog(t, h.a))
	fromNode, fromClient := h.srvA.srv.seen(netip.MustParseAddr(gatewayA)), h.srvA.srv.seen(h.client.ip)
	url := fmt.Sprintf("http://%s/", h.relay.addr(httpPort))
	c := httpClient(h.client.ns)
	defer c.CloseIdleConnections()
	if err := benchkit.Get(c, url, respSize); err != nil {
		t.Fatalf("client -> %s: %v\nHAProxy log:\n%s", url, err, benchkit.FileText(h.relay.proc.Stderr))
	}
	if got := h.srvA.srv.seen(netip.MustParseAddr(gatewayA)); got != fromNode+1 {
		t.Fatalf("server-a saw %d new connections from node-a's address %s through the relay, want 1", got-fromNode, gatewayA)
	}
	if got := h.srvA.srv.seen(h.client.ip); got != fromClient {
		t.Fatalf("server-a saw %d connections from the client's own IP through the relay, want none", got-fromClient)
	}
	if a := accessLog(t, h.a); len(a) != na {
		t.Fatalf("the relayed request reached node-a's proxy: %v", a[na:])
	}
}
