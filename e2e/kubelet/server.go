package kubelet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/weft-mesh/weft/pkg/netns"
)

const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
)

// errNotFound is rendered as 404.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// logSource locates the log files of a container; running reports whether
// the instance writing the newest file is still alive (for follow).
type logSource func(ns, pod, container string) (dir string, running func() bool, err error)

// newHandler builds the kubelet API mux. k may be nil in tests that only
// exercise the logs endpoint.
func newHandler(k *Kubelet, logs logSource) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		serveContainerLogs(w, r, logs)
	})
	if k != nil {
		for _, p := range []string{"/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"} {
			mux.HandleFunc(p, k.serveExec)
		}
		for _, p := range []string{"/attach/{ns}/{pod}/{container}", "/attach/{ns}/{pod}/{uid}/{container}"} {
			mux.HandleFunc(p, k.serveAttach)
		}
		for _, p := range []string{"/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"} {
			mux.HandleFunc(p, k.servePortForward)
		}
		mux.HandleFunc("GET /pods", k.servePods)
		mux.HandleFunc("GET /pods/", k.servePods)
	}
	return mux
}

func writeHTTPError(w http.ResponseWriter, err error) {
	var he *httpError
	if errors.As(err, &he) {
		http.Error(w, he.msg, he.code)
		return
	}
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

// serveContainerLogs implements GET /containerLogs (kubectl logs [-f]).
func serveContainerLogs(w http.ResponseWriter, r *http.Request, logs logSource) {
	q := r.URL.Query()
	ns, pod, ctr := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	dir, running, err := logs(ns, pod, ctr)
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	files := logFiles(dir)
	if len(files) == 0 {
		http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start: no logs yet", ctr, pod), http.StatusBadRequest)
		return
	}
	boolParam := func(n string) bool { b, _ := strconv.ParseBool(q.Get(n)); return b }
	var opts LogOptions
	opts.Follow = boolParam("follow")
	opts.Timestamps = boolParam("timestamps")
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "invalid tailLines", http.StatusBadRequest)
			return
		}
		opts.TailLines = &n
	}
	if v := q.Get("limitBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			http.Error(w, "invalid limitBytes", http.StatusBadRequest)
			return
		}
		opts.LimitBytes = &n
	}
	if v := q.Get("sinceSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			http.Error(w, "invalid sinceSeconds", http.StatusBadRequest)
			return
		}
		t := time.Now().Add(-time.Duration(n) * time.Second)
		opts.SinceTime = &t
	} else if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			http.Error(w, "invalid sinceTime", http.StatusBadRequest)
			return
		}
		opts.SinceTime = &t
	}
	path := files[len(files)-1]
	stillWriting := running
	if boolParam("previous") {
		if len(files) < 2 {
			http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", ctr, pod), http.StatusBadRequest)
			return
		}
		path = files[len(files)-2]
		opts.Follow = false
		stillWriting = nil
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	out := &flushWriter{w: w}
	if fl, ok := w.(http.Flusher); ok {
		out.f = fl
	}
	_ = writeLogs(path, opts, out, stillWriting, r.Context().Done())
}

type flushWriter struct {
	w io.Writer
	f http.Flusher
}

func (f *flushWriter) Write(p []byte) (int, error) { return f.w.Write(p) }
func (f *flushWriter) Flush() {
	if f.f != nil {
		f.f.Flush()
	}
}

// logFiles lists <dir>/<n>.log sorted by n.
func logFiles(dir string) []string {
	entries, _ := os.ReadDir(dir)
	type lf struct {
		n    int
		path string
	}
	var fs []lf
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		fs = append(fs, lf{n, filepath.Join(dir, e.Name())})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].n < fs[j].n })
	var out []string
	for _, f := range fs {
		out = append(out, f.path)
	}
	return out
}

// kubeletLogSource finds logs of pods this kubelet runs.
func (k *Kubelet) logSource(ns, pod, container string) (string, func() bool, error) {
	ps := k.findPod(ns, pod, "")
	if ps == nil {
		return "", nil, &httpError{http.StatusNotFound, fmt.Sprintf("pod %s/%s not found on node %s", ns, pod, k.cfg.NodeName)}
	}
	ps.mu.Lock()
	cs, ok := ps.containers[container]
	var cur *Container
	if ok {
		cur = cs.cur
	}
	ps.mu.Unlock()
	if !ok {
		return "", nil, &httpError{http.StatusBadRequest, fmt.Sprintf("container %q in pod %q is not available", container, pod)}
	}
	running := func() bool {
		if cur == nil {
			return false
		}
		select {
		case <-cur.Done:
			return false
		default:
			return true
		}
	}
	return filepath.Join(ps.dir, container), running, nil
}

// runningContainer finds the live instance for exec/attach.
func (k *Kubelet) runningContainer(ns, pod string, uid types.UID, container string) (*podState, *Container, error) {
	ps := k.findPod(ns, pod, uid)
	if ps == nil {
		return nil, nil, &httpError{http.StatusNotFound, fmt.Sprintf("pod %s/%s not found on node %s", ns, pod, k.cfg.NodeName)}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	cs, ok := ps.containers[container]
	if !ok || cs.cur == nil {
		return nil, nil, &httpError{http.StatusBadRequest, fmt.Sprintf("container %q in pod %q is not running", container, pod)}
	}
	return ps, cs.cur, nil
}

type execAdapter struct {
	k   *Kubelet
	ctr *Container
}

func (a execAdapter) ExecInContainer(ctx context.Context, name, uid, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	eio := ExecIO{TTY: tty, Resize: resize}
	if in != nil {
		eio.Stdin = in
	}
	if out != nil {
		eio.Stdout = out
	}
	if errw != nil {
		eio.Stderr = errw
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return a.k.rt.Exec(ctx, &a.ctr.State, cmd, eio)
}

func (a execAdapter) AttachContainer(ctx context.Context, name, uid, container string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return errors.New("attach is not supported by weft-kubelet (container output goes to its log file: use kubectl logs -f)")
}

func (k *Kubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	ns, pod, uid, ctrName := r.PathValue("ns"), r.PathValue("pod"), types.UID(r.PathValue("uid")), r.PathValue("container")
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "missing command", http.StatusBadRequest)
		return
	}
	_, ctr, err := k.runningContainer(ns, pod, uid, ctrName)
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	remotecommand.ServeExec(w, r, execAdapter{k, ctr}, pod, string(uid), ctrName, cmd, opts, streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (k *Kubelet) serveAttach(w http.ResponseWriter, r *http.Request) {
	ns, pod, uid, ctrName := r.PathValue("ns"), r.PathValue("pod"), types.UID(r.PathValue("uid")), r.PathValue("container")
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, ctr, err := k.runningContainer(ns, pod, uid, ctrName)
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	remotecommand.ServeAttach(w, r, execAdapter{k, ctr}, pod, string(uid), ctrName, opts, streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

type portForwarder struct {
	netns string // "" = the kubelet's (node) netns
}

// PortForward connects to localhost:port inside the pod's netns, like a
// CRI runtime does, so ports bound to 127.0.0.1 work too.
func (p portForwarder) PortForward(ctx context.Context, name, uid string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	conn, err := netns.Dial(ctx, p.netns, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("port-forward to pod %s port %d: %w", name, port, err)
	}
	defer conn.Close()
	errc := make(chan error, 2)
	go func() { _, err := io.Copy(conn, stream); errc <- err }()
	go func() { _, err := io.Copy(stream, conn); errc <- err }()
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	return err
}

func (k *Kubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	ns, pod, uid := r.PathValue("ns"), r.PathValue("pod"), types.UID(r.PathValue("uid"))
	ps := k.findPod(ns, pod, uid)
	if ps == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, pod, k.cfg.NodeName), http.StatusNotFound)
		return
	}
	ps.mu.Lock()
	netns := ""
	if ps.sandbox != nil {
		netns = ps.sandbox.Netns
	}
	ps.mu.Unlock()
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, portForwarder{netns: netns}, pod, string(ps.uid), opts, streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

func (k *Kubelet) servePods(w http.ResponseWriter, r *http.Request) {
	pods, err := k.podLister.List(everything())
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	list := v1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
	for _, p := range pods {
		pp := p.DeepCopy()
		pp.Kind, pp.APIVersion = "Pod", "v1"
		list.Items = append(list.Items, *pp)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&list)
}

// serve runs the HTTPS server until ctx is done.
func (k *Kubelet) serve(ctx context.Context) error {
	tlsCfg, err := k.serverTLS()
	if err != nil {
		return err
	}
	srv := &http.Server{
		Addr:              net.JoinHostPort("", strconv.Itoa(k.cfg.Port)),
		Handler:           k.logRequests(newHandler(k, k.logSource)),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 30 * time.Second,
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("kubelet server: %w", err)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close()
	}()
	k.log.Info("kubelet server listening", "addr", ln.Addr().String(), "clientAuth", k.cfg.ClientCAFile != "")
	err = srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (k *Kubelet) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.log.Debug("request", "method", r.Method, "path", r.URL.Path)
		h.ServeHTTP(w, r)
	})
}

func (k *Kubelet) serverTLS() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if k.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(k.cfg.TLSCertFile, k.cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading serving certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	} else {
		cert, err := selfSignedCert(k.cfg.NodeName, k.cfg.NodeIP)
		if err != nil {
			return nil, err
		}
		k.log.Warn("no --tls-cert-file: serving with a self-signed certificate")
		cfg.Certificates = []tls.Certificate{cert}
	}
	if k.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(k.cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificates in %s", k.cfg.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	} else {
		k.log.Warn("no --client-ca-file: the kubelet API accepts any client")
	}
	return cfg, nil
}

func selfSignedCert(name, ip string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	if p := net.ParseIP(ip); p != nil {
		tmpl.IPAddresses = []net.IP{p}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
