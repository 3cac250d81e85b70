package nodebench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/pkg/netns"
	"github.com/weft-mesh/weft/pkg/spiffetest"
)

// The stunnel peer is what a user builds between two nodes without a
// mesh: a client-mode stunnel in node-a's netns wraps every TCP connection
// it accepts in its own TLS 1.3 connection, with a client certificate, to
// a server-mode stunnel in node-b's netns, which verifies that certificate
// against the test CA and connects to the server pod. The cross-node
// leaves measure it as a third phase with the pods not enrolled, so the
// mesh does not capture it.

// stunnelServices are the tunnelled server ports. stunnel forwards each
// service to one fixed address, so every server port gets its own service
// and its own port on both nodes.
var stunnelServices = []struct {
	name         string
	port, tunnel uint16 // server pod's port, stunnel's port on both nodes
}{{"bulk", bulkPort, 16001}, {"echo", echoPort, 16002}, {"http", httpPort, 16080}}

// stunnelGlobal is the start of both instances' configuration. Service
// options in the global section are every service's defaults: TLS 1.3
// only, a certificate of our own, the peer's chain verified against the
// test CA (a peer without a certificate is refused). The certificates
// carry only a SPIFFE URI, which stunnel cannot match, so the chain is
// the whole check, as for a private CA issuing only node tunnels.
const stunnelGlobal = `foreground = yes
syslog = no
pid =
cert = {{cert}}
key = {{key}}
CAfile = {{ca}}
verifyChain = yes
sslVersion = TLSv1.3
`

// stunnel is the two running instances.
type stunnel struct {
	client, server *benchkit.Child // in node-a's and node-b's netns
}

// addr is where the client pod dials to reach the server pod's port
// through the tunnel: node-a's fabric address (the node's IP, which the
// capture bypasses anyway).
func (s *stunnel) addr(port uint16) netip.AddrPort {
	for _, svc := range stunnelServices {
		if svc.port == port {
			return netip.AddrPortFrom(netip.MustParseAddr(fabricA), svc.tunnel)
		}
	}
	panic(fmt.Sprintf("no stunnel service for port %d", port))
}

func (*stunnel) name() string { return "stunnel" }

// procs are both instances, whose CPU the HTTP leaf sums as it sums the
// mesh's two proxies.
func (s *stunnel) procs() []*benchkit.Child { return []*benchkit.Child{s.client, s.server} }

// accepted counts the connections node-a's instance has accepted so far
// (one TLS connection to node-b each), from its log.
func (s *stunnel) accepted() int {
	return strings.Count(benchkit.FileText(s.client.Stderr), "accepted connection from")
}

// stunnelConf is the configuration of the client (node-a) or the server
// (node-b) instance.
func stunnelConf(client bool, cert, key, ca string) string {
	var b strings.Builder
	b.WriteString(strings.NewReplacer("{{cert}}", cert, "{{key}}", key, "{{ca}}", ca).Replace(stunnelGlobal))
	if client {
		b.WriteString("client = yes\n")
	}
	for _, svc := range stunnelServices {
		tunnel := netip.AddrPortFrom(netip.MustParseAddr(fabricB), svc.tunnel)
		accept, connect := tunnel, netip.AddrPortFrom(netip.MustParseAddr(serverBIP), svc.port)
		if client {
			accept, connect = netip.AddrPortFrom(netip.MustParseAddr(fabricA), svc.tunnel), tunnel
		}
		fmt.Fprintf(&b, "\n[%s]\naccept = %s\nconnect = %s\n", svc.name, accept, connect)
	}
	return b.String()
}

// startStunnel starts the server instance in node-b's netns, then the
// client in node-a's, each with a certificate of the test CA; nil when
// stunnel is not installed. StartChild's cleanup stops them by PID.
func (h *harness) startStunnel(tb testing.TB, ca *spiffetest.CA, dir, bundleFile string) *stunnel {
	tb.Helper()
	bin, err := exec.LookPath("stunnel")
	if err != nil {
		tb.Log("stunnel is not installed (Debian: stunnel4): the stunnel peer is skipped")
		return nil
	}
	s := &stunnel{}
	ports := make([]uint16, len(stunnelServices))
	for i, svc := range stunnelServices {
		ports[i] = svc.tunnel
	}
	for _, x := range []struct {
		n      *node
		client bool
		c      **benchkit.Child
	}{{h.b, false, &s.server}, {h.a, true, &s.client}} {
		name := x.n.name + "-stunnel"
		id := spiffeid.RequireFromPath(ca.TrustDomain, "/node/"+x.n.name+"/stunnel")
		cert, key := writeSVID(tb, ca.Issue(tb, id), dir, name)
		conf := filepath.Join(dir, name+".conf")
		writeFile(tb, conf, []byte(stunnelConf(x.client, cert, key, bundleFile)))
		cmd := exec.Command(bin, conf)
		// stunnel does not watch its stdin as our proxies do: should the
		// test process die before its cleanups, this ends it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		nsPath := x.n.ns
		*x.c, _ = benchkit.StartChild(tb, cmd, benchkit.ChildOptions{
			Name:   x.n.name + " stunnel",
			Stderr: filepath.Join(dir, name+".log"), // foreground = yes logs to stderr
			Start:  func(cmd *exec.Cmd) error { return netns.Start(cmd, nsPath) },
			Ready:  listeningOn(cmd, ports),
		})
	}
	return s
}

// listeningOn waits until the started cmd listens on all ports. stunnel
// logs nothing when it has bound, and a probe connection would show up in
// its log as a failed handshake (in HAProxy's as a connection), so it
// reads the listeners of cmd's netns from /proc.
func listeningOn(cmd *exec.Cmd, ports []uint16) benchkit.Ready {
	return func(io.Reader) (string, error) {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", cmd.Process.Pid))
			if err != nil {
				return "", fmt.Errorf("exited: %w", err)
			}
			ok := true
			for _, port := range ports {
				ok = ok && tcpListening(string(raw), port)
			}
			if ok {
				return "", nil
			}
		}
		return "", errors.New("not listening on its ports after 10 s")
	}
}

// tcpListening reports whether the /proc/net/tcp table has a socket in
// state LISTEN (0A) on port.
func tcpListening(table string, port uint16) bool {
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], suffix) && f[3] == "0A" {
			return true
		}
	}
	return false
}

// writeSVID writes s as PEM files dir/name.crt and dir/name.key.
func writeSVID(tb testing.TB, s *x509svid.SVID, dir, name string) (cert, key string) {
	tb.Helper()
	certPEM, keyPEM, err := s.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeFile(tb, cert, certPEM)
	writeFile(tb, key, keyPEM)
	return cert, key
}

// checkStunnel proves the stunnel peer measures what it claims: with the
// pods not enrolled, one request from the client pod to node-a's stunnel
// is one connection accepted there and reaches server-b from node-b's
// address (stunnel's connection, not the client's) and no proxy; and
// node-b's stunnel enforces its TLS settings (checkStunnelRefuses).
func (h *harness) checkStunnel(t *testing.T) {
	t.Helper()
	h.enroll(t, false)
	na, nb := len(accessLog(t, h.a)), len(accessLog(t, h.b))
	fromNode, fromClient := h.srvB.srv.seen(netip.MustParseAddr(gatewayB)), h.srvB.srv.seen(h.client.ip)
	accepted := h.tunnel.accepted()
	url := fmt.Sprintf("http://%s/", h.tunnel.addr(httpPort))
	c := httpClient(h.client.ns)
	defer c.CloseIdleConnections()
	if err := benchkit.Get(c, url, respSize); err != nil {
		t.Fatalf("client -> %s: %v\nnode-a stunnel log:\n%s\nnode-b stunnel log:\n%s",
			url, err, benchkit.FileText(h.tunnel.client.Stderr), benchkit.FileText(h.tunnel.server.Stderr))
	}
	if got := h.tunnel.accepted() - accepted; got != 1 {
		t.Fatalf("node-a's stunnel logged %d new connections, want 1:\n%s", got, benchkit.FileText(h.tunnel.client.Stderr))
	}
	// node-b reaches its pods from the host-side address of their veth.
	if got := h.srvB.srv.seen(netip.MustParseAddr(gatewayB)) - fromNode; got != 1 {
		t.Fatalf("server-b saw %d new connections from node-b (%s), want 1 (stunnel's)", got, gatewayB)
	}
	if got := h.srvB.srv.seen(h.client.ip) - fromClient; got != 0 {
		t.Fatalf("server-b saw %d new connections from the client's IP: the request bypassed stunnel", got)
	}
	if a, b := accessLog(t, h.a), accessLog(t, h.b); len(a) != na || len(b) != nb {
		t.Fatalf("the stunnel request reached a proxy:\nnode-a %v\nnode-b %v", a[na:], b[nb:])
	}
	h.checkStunnelRefuses(t)
	if got := h.srvB.srv.seen(netip.MustParseAddr(gatewayB)) - fromNode; got != 2 {
		t.Fatalf("server-b saw %d new connections from node-b after the direct TLS clients, want 2 (the tunnelled request, the served client)", got)
	}
}

// checkStunnelRefuses connects from node-a to node-b's stunnel as TLS
// clients that trust the test CA and must be refused: one without a
// certificate, one with a certificate of another CA, and one with a good
// certificate that offers at most TLS 1.2. A TLS 1.3 client with the good
// certificate, first, is served: the refusals are not a wrong address.
func (h *harness) checkStunnelRefuses(t *testing.T) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("intruder.example")
	foreign := spiffetest.NewCA(t, td).Issue(t, spiffeid.RequireFromPath(td, "/node/node-a/stunnel"))
	good := h.ca.Issue(t, spiffeid.RequireFromPath(h.ca.TrustDomain, "/node/node-a/stunnel"))
	tls13 := func(cfg *tls.Config) *tls.Config { cfg.MinVersion = tls.VersionTLS13; return cfg }
	old := tlsconfig.MTLSClientConfig(good, h.ca.Bundle(), tlsconfig.AuthorizeAny())
	old.MaxVersion = tls.VersionTLS12
	if err := h.stunnelGet(t, tls13(tlsconfig.MTLSClientConfig(good, h.ca.Bundle(), tlsconfig.AuthorizeAny()))); err != nil {
		t.Fatalf("node-b's stunnel refused a TLS 1.3 client with a certificate of the test CA: %v", err)
	}
	for _, c := range []struct {
		what string
		cfg  *tls.Config
	}{
		{"no client certificate", tls13(tlsconfig.TLSClientConfig(h.ca.Bundle(), tlsconfig.AuthorizeAny()))},
		{"a client certificate of another CA", tls13(tlsconfig.MTLSClientConfig(foreign, h.ca.Bundle(), tlsconfig.AuthorizeAny()))},
		{"TLS 1.2 at most", old},
	} {
		if err := h.stunnelGet(t, c.cfg); err == nil {
			t.Fatalf("node-b's stunnel served a client with %s", c.what)
		} else {
			t.Logf("node-b's stunnel refused a client with %s: %v", c.what, err)
		}
	}
}

// stunnelGet sends an HTTP request straight to node-b's stunnel over TLS
// with cfg and reads the first byte of the answer. With TLS 1.3 the
// server judges the client certificate after the client's side of the
// handshake is done, so a refusal shows up on that read.
func (h *harness) stunnelGet(t *testing.T, cfg *tls.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := netip.AddrPortFrom(netip.MustParseAddr(fabricB), h.tunnel.addr(httpPort).Port())
	raw, err := netns.Dial(ctx, h.a.ns, addr.String())
	if err != nil {
		t.Fatal(err) // not a refusal: TCP to stunnel must work
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}
