package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/spiffetest"
)

// respSize is the backend's response body.
const respSize = 1024

// harness is one benchmark world on loopback: backend, stand-in node
// agent, the waypoint process, optionally nginx and HAProxy, and a client
// per path.
type harness struct {
	dir  string
	opts options

	backend     *http.Server
	backendAddr string
	backendHits atomic.Int64

	agent        *hbone.Server
	agentStreams atomic.Int64 // CONNECTs the stand-in node agent accepted

	waypoint   *benchkit.Child
	waypointLn string // HBONE address
	accessLog  string
	dialer     *hbone.Dialer

	nginx     *benchkit.Child // nil: not installed
	nginxAddr string

	haproxy     *benchkit.Child // nil: not installed
	haproxyAddr string
}

// options vary the setup for experiments (docs/benchmarks.md); the
// zero value is the benchmark's default and what TestWaypointHarness checks.
type options struct {
	plainUpstream bool // the waypoint reaches the backend over plain TCP (a NONE endpoint), no node agent
	noAccessLog   bool // neither proxy writes an access log
	cpuProfile    string
	memProfile    string
}

func envOptions() options {
	return options{
		plainUpstream: os.Getenv("WEFT_WAYPOINTBENCH_UPSTREAM") == "none",
		noAccessLog:   os.Getenv("WEFT_WAYPOINTBENCH_ACCESS_LOG") == "off",
		cpuProfile:    os.Getenv("WEFT_WAYPOINTBENCH_CPUPROFILE"),
		memProfile:    os.Getenv("WEFT_WAYPOINTBENCH_MEMPROFILE"),
	}
}

// newHarness starts everything but nginx and HAProxy (see startNginx,
// startHAProxy). Cleanup stops every process it started (by PID) and
// t.TempDir removes the files.
func newHarness(tb testing.TB, o options) *harness {
	tb.Helper()
	h := &harness{dir: tb.TempDir(), opts: o}
	ca := spiffetest.NewCA(tb, td)
	bundle := ca.Bundle()

	// Backend: HTTP/1.1, 1 KB per response.
	body := []byte(strings.Repeat("x", respSize))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	h.backendAddr = ln.Addr().String()
	h.backend = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.backendHits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})}
	go h.backend.Serve(ln)
	tb.Cleanup(func() { h.backend.Close() })

	// Stand-in destination node agent: terminates the waypoint's tunnels as
	// the backend's identity and pipes each stream to its :authority.
	h.agent = &hbone.Server{
		TLS: hbone.ServerTLSConfig(ca.Issue(tb, backendID), bundle, tlsconfig.AuthorizeID(waypointID)),
		Handler: func(ctx context.Context, req *hbone.Request) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", req.Authority)
			if err != nil {
				return hbone.Refuse(http.StatusServiceUnavailable, err.Error())
			}
			st, err := req.Accept()
			if err != nil {
				c.Close()
				return err
			}
			h.agentStreams.Add(1)
			hbone.Pipe(st, c.(*net.TCPConn))
			return nil
		},
	}
	agentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go h.agent.Serve(agentLn)
	tb.Cleanup(func() { h.agent.Close() })

	// The waypoint process.
	cert, key := h.writeSVID(tb, ca.Issue(tb, waypointID), "waypoint")
	pem, err := bundle.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	cfg := waypointConfig{
		Cert: cert, Key: key, Bundle: h.write(tb, "bundle.pem", pem),
		Agent: agentLn.Addr().String(), Backend: h.backendAddr, Tunnel: "HBONE",
		CPUProfile: o.cpuProfile, MemProfile: o.memProfile,
	}
	if !o.noAccessLog {
		cfg.AccessLog = filepath.Join(h.dir, "waypoint-access.log")
	}
	if o.plainUpstream {
		cfg.Tunnel = "NONE"
	}
	h.accessLog = cfg.AccessLog
	raw, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := benchkit.SelfCommand(waypointEnv, h.write(tb, "waypoint.json", raw))
	h.waypoint, h.waypointLn = startChild(tb, cmd, filepath.Join(h.dir, "waypoint.stderr"), benchkit.ReadyLine(readyPrefix))

	// The client side: what a node agent does, one pooled mTLS h2
	// connection to the waypoint, a CONNECT stream per HTTP/1.1 connection.
	h.dialer = &hbone.Dialer{SVID: ca.Issue(tb, clientID), Bundle: bundle}
	tb.Cleanup(func() { h.dialer.Close() })
	return h
}

func (h *harness) write(tb testing.TB, name string, b []byte) string {
	tb.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func (h *harness) writeSVID(tb testing.TB, s *x509svid.SVID, name string) (cert, key string) {
	tb.Helper()
	c, k, err := s.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return h.write(tb, name+"-cert.pem", c), h.write(tb, name+"-key.pem", k)
}

// path is one way from the client to the backend.
type path struct {
	name  string
	url   string
	dial  func(ctx context.Context, network, addr string) (net.Conn, error) // nil: plain TCP to the URL's host
	proxy *benchkit.Child                                                   // nil: direct
}

func (h *harness) direct() path {
	return path{name: "direct", url: "http://" + h.backendAddr + "/"}
}

func (h *harness) weft() path {
	return path{name: "weft", url: "http://" + svcHost + ":" + strconv.Itoa(vipPort) + "/", proxy: h.waypoint,
		dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			hdr := http.Header{}
			hbone.SetForwarded(hdr, net.ParseIP("10.0.0.7"))
			hdr.Set("Baggage", "k8s.namespace.name=default,k8s.deployment.name=productpage-v1,service.name=productpage,service.version=v1")
			st, err := h.dialer.Dial(ctx, h.waypointLn, tlsconfig.AuthorizeID(waypointID), net.JoinHostPort(vip, strconv.Itoa(vipPort)), hdr)
			if err != nil {
				return nil, err
			}
			return &streamConn{ClientStream: st}, nil
		}}
}

func (h *harness) nginxPath() path {
	return path{name: "nginx", url: "http://" + h.nginxAddr + "/", proxy: h.nginx}
}

func (h *harness) haproxyPath() path {
	return path{name: "haproxy", url: "http://" + h.haproxyAddr + "/", proxy: h.haproxy}
}

// client is an HTTP/1.1 keep-alive client for p.
func (p path) client(conns int) *http.Client {
	return benchkit.HTTPClient(p.dial, conns+16)
}

// streamConn presents an HBONE client stream as a net.Conn (deadlines are
// no-ops; the client's Timeout bounds requests).
type streamConn struct{ *hbone.ClientStream }

func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (c *streamConn) Close() error {
	c.ClientStream.CloseWrite()
	return c.ClientStream.Close()
}

// ---- proxy processes ----

// startChild starts a proxy process (benchkit.StartChild) that also gets
// SIGTERM should the test process die without running its cleanups.
func startChild(tb testing.TB, cmd *exec.Cmd, stderrPath string, ready benchkit.Ready) (*benchkit.Child, string) {
	tb.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return benchkit.StartChild(tb, cmd, benchkit.ChildOptions{Stderr: stderrPath, Ready: ready})
}

// ---- nginx ----

// nginxBinary is the installed nginx, "" when there is none.
func nginxBinary() string { return benchkit.Binary("nginx", "/usr/local/nginx/sbin/nginx") }

// nginxConf makes nginx a reverse proxy to the backend over HTTP/1.1
// keep-alive, one worker per core, access log on (as the waypoint's)
// unless WEFT_WAYPOINTBENCH_ACCESS_LOG=off.
const nginxConf = `daemon off;
master_process on;
worker_processes auto;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log {{access_log}};
  client_body_temp_path {{dir}}/nginx-client-body;
  proxy_temp_path {{dir}}/nginx-proxy;
  fastcgi_temp_path {{dir}}/nginx-fastcgi;
  uwsgi_temp_path {{dir}}/nginx-uwsgi;
  scgi_temp_path {{dir}}/nginx-scgi;
  keepalive_requests 1000000;
  upstream backend {
    server {{backend}};
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen {{listen}};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`

// startNginx starts nginx with a generated config, or returns false when
// nginx is not installed.
func (h *harness) startNginx(tb testing.TB) bool {
	tb.Helper()
	bin := nginxBinary()
	if bin == "" {
		return false
	}
	addr := freeAddr(tb)
	alog := filepath.Join(h.dir, "nginx-access.log")
	if h.opts.noAccessLog {
		alog = "off"
	}
	conf := strings.NewReplacer("{{access_log}}", alog, "{{dir}}", h.dir, "{{backend}}", h.backendAddr, "{{listen}}", addr).Replace(nginxConf)
	confPath := h.write(tb, "nginx.conf", []byte(conf))
	cmd := exec.Command(bin, "-p", h.dir, "-c", confPath, "-e", filepath.Join(h.dir, "nginx-error.log"))
	h.nginx, h.nginxAddr = startChild(tb, cmd, filepath.Join(h.dir, "nginx.stderr"), listening(addr, filepath.Join(h.dir, "nginx-error.log")))
	return true
}

// freeAddr is a loopback address with a port free a moment ago, for a
// proxy that cannot report the port it bound (nginx, HAProxy).
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// listening is the Ready of a proxy that reports nothing on stdout
// (StartChild discards it): it polls addr until it accepts, and on
// failure quotes the log at errLog.
func listening(addr, errLog string) benchkit.Ready {
	return func(io.Reader) (string, error) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return addr, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return "", fmt.Errorf("not listening on %s: %s", addr, benchkit.FileText(errLog))
	}
}

// ---- HAProxy ----

// haproxyBinary is the installed HAProxy, "" when there is none.
func haproxyBinary() string { return benchkit.Binary("haproxy") }

// haproxyConf makes HAProxy what nginxConf makes nginx: a reverse proxy to
// the backend with keep-alive on both sides (idle backend connections
// shared by all clients, as nginx's upstream keepalive pool), one thread
// per core (nbthread's default, as nginx's worker_processes auto) and an
// access log line per request unless WEFT_WAYPOINTBENCH_ACCESS_LOG=off.
// HAProxy logs only to syslog targets or file descriptors: fd 3 is the
// access log file (one unbuffered write per request, like nginx's
// access_log), or {{log}} and {{httplog}} are "" with the log off.
// dontlognull: like nginx, no line for a connection that sent nothing
// (the readiness probe's, see listening). maxconn matches nginx's
// worker_connections.
const haproxyConf = `global
  maxconn 4096
  {{log}}
defaults
  mode http
  log global
  {{httplog}}
  option dontlognull
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind {{listen}}
  default_backend be
backend be
  server backend {{backend}}
`

// startHAProxy starts HAProxy in the foreground with a generated config,
// or returns false when HAProxy is not installed. With -db it stays one
// process (its threads are inside it), so Child.Stats is all of it.
func (h *harness) startHAProxy(tb testing.TB) bool {
	tb.Helper()
	bin := haproxyBinary()
	if bin == "" {
		return false
	}
	addr := freeAddr(tb)
	logTarget, httplog := "log fd@3 format raw local0", "option httplog"
	if h.opts.noAccessLog {
		logTarget, httplog = "", ""
	}
	conf := strings.NewReplacer("{{log}}", logTarget, "{{httplog}}", httplog, "{{backend}}", h.backendAddr, "{{listen}}", addr).Replace(haproxyConf)
	cmd := exec.Command(bin, "-db", "-f", h.write(tb, "haproxy.cfg", []byte(conf)))
	alog, err := os.Create(filepath.Join(h.dir, "haproxy-access.log"))
	if err != nil {
		tb.Fatal(err)
	}
	defer alog.Close() // HAProxy has its own copy once started
	cmd.ExtraFiles = []*os.File{alog}
	stderr := filepath.Join(h.dir, "haproxy.stderr")
	h.haproxy, h.haproxyAddr = startChild(tb, cmd, stderr, listening(addr, stderr))
	return true
}
