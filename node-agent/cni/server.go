package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Handler acts on one event. It must be idempotent: an event may arrive
// twice (delivered, then replayed after a crash) and DEL may come for a pod
// the agent never saw. Return an error wrapping ErrDiscard for an event that
// can never succeed.
type Handler func(ctx context.Context, ev Event) error

// Server is the agent's end of the plugin's socket: HTTP on a unix socket
// (mode 0600), POST EventPath with an Event as JSON, GET /healthz. Handler
// calls, from the socket or from Drain, are serialized so that a spool replay
// and a live event for the same pod are applied in the order they happened.
type Server struct {
	socket  string
	handler Handler
	// HandlerTimeout bounds one handler call (default 10 s).
	HandlerTimeout time.Duration

	mu     sync.Mutex // serializes handler calls
	ln     *net.UnixListener
	bound  os.FileInfo // the socket file we created
	srv    *http.Server
	closed chan struct{}
}

// NewServer returns a server for socket that calls handler for every event.
func NewServer(socket string, handler Handler) *Server {
	return &Server{socket: socket, handler: handler, HandlerTimeout: 10 * time.Second}
}

// Socket is the path the server listens on.
func (s *Server) Socket() string { return s.socket }

// Listen binds the socket: a stale socket file from an earlier run is
// replaced; anything else at the path is an error. The socket is created
// under a temporary name, made 0600 and renamed into place, so no other user
// can ever connect.
func (s *Server) Listen() error {
	dir := filepath.Dir(s.socket)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("agent socket dir: %w", err)
	}
	if fi, err := os.Lstat(s.socket); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return fmt.Errorf("agent socket %s exists and is not a socket", s.socket)
		}
		if err := os.Remove(s.socket); err != nil {
			return fmt.Errorf("remove stale agent socket: %w", err)
		}
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d", filepath.Base(s.socket), os.Getpid()))
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on agent socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // the path changes below; Close removes it
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return fmt.Errorf("chmod agent socket: %w", err)
	}
	if err := os.Rename(tmp, s.socket); err != nil {
		ln.Close()
		os.Remove(tmp)
		return fmt.Errorf("agent socket: %w", err)
	}
	s.bound, _ = os.Lstat(s.socket)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+EventPath, s.serveEvent)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.ln = ln
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.closed = make(chan struct{})
	return nil
}

// Serve answers requests until Close; Listen must have succeeded.
func (s *Server) Serve() error {
	if s.ln == nil {
		return errors.New("cni server: Serve before Listen")
	}
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Start is Listen, then Serve in a goroutine.
func (s *Server) Start() error {
	if err := s.Listen(); err != nil {
		return err
	}
	go func() { _ = s.Serve() }()
	return nil
}

// Close stops the server (in-flight requests get up to 5 s) and removes the
// socket file.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	// Only our own socket: a successor agent may have bound the path anew.
	if fi, lerr := os.Lstat(s.socket); lerr == nil && s.bound != nil && os.SameFile(fi, s.bound) {
		_ = os.Remove(s.socket)
	}
	return err
}

// Drain replays dir's spool (DrainSpool) through the server's handler,
// serialized with live events: a DEL that arrives while the spool is being
// replayed waits for it, so it can never be overtaken by a replayed ADD.
func (s *Server) Drain(ctx context.Context, dir string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return drainSpool(ctx, dir, s.callLocked)
}

func (s *Server) call(ctx context.Context, ev Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callLocked(ctx, ev)
}

func (s *Server) callLocked(ctx context.Context, ev Event) error {
	if s.HandlerTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.HandlerTimeout)
		defer cancel()
	}
	return s.handler(ctx, ev)
}

func (s *Server) serveEvent(w http.ResponseWriter, r *http.Request) {
	var ev Event
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&ev); err != nil {
		http.Error(w, "decode event: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := ev.Validate(); err != nil {
		http.Error(w, "invalid event: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.call(r.Context(), ev); err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrDiscard):
			code = http.StatusUnprocessableEntity
		case errors.Is(err, ErrNotCaptured):
			code = http.StatusConflict
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`+"\n")
}

// DrainLoop drains dir at once and then every interval until ctx ends,
// reporting errors to onErr (may be nil). Events spooled while the agent was
// down, or while a drain held up a live event past the plugin's timeout, are
// applied within one interval.
func (s *Server) DrainLoop(ctx context.Context, dir string, interval time.Duration, onErr func(error)) {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.Drain(ctx, dir); err != nil && onErr != nil && ctx.Err() == nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
