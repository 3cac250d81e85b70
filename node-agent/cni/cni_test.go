package cni

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/await"
)

// recorder is a Handler that remembers what it saw.
type recorder struct {
	mu     sync.Mutex
	events []Event
	err    error
}

func (r *recorder) handle(_ context.Context, ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) got() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func startServer(t *testing.T, socket string, h Handler) *Server {
	t.Helper()
	s := NewServer(socket, h)
	if err := s.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addEvent(id string) Event {
	return Event{
		Op: OpAdd, PodNamespace: "default", PodName: "p-" + id, PodUID: "uid-" + id,
		Netns: "/var/run/netns/" + id, HostInterface: "veth" + id, HostIfindex: 7,
		IPs: []string{"10.244.0.5", "fd00::5"}, ContainerID: id,
	}
}

func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestNotifyDeliversToLiveServer(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "run", "cni.sock")
	rec := &recorder{}
	startServer(t, socket, rec.handle)

	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %o, want 600", perm)
	}

	cfg := NotifyConfig{AgentSocket: socket, SpoolDir: filepath.Join(dir, "spool")}
	ev := addEvent("c1")
	res, err := Notify(context.Background(), cfg, ev)
	if err != nil || !res.Delivered || res.SpoolPath != "" {
		t.Fatalf("Notify = %+v, %v; want delivered", res, err)
	}
	got := rec.got()
	if len(got) != 1 {
		t.Fatalf("server got %d events, want 1", len(got))
	}
	if got[0].Time.IsZero() {
		t.Error("event time not set")
	}
	got[0].Time = time.Time{}
	if !reflect.DeepEqual(got[0], ev) {
		t.Errorf("server got %+v, want %+v", got[0], ev)
	}
	if files := spoolFiles(t, cfg.SpoolDir); len(files) != 0 {
		t.Errorf("spool has %v after a delivery", files)
	}
}

func TestNotifySpoolsWhenAgentUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, socket string)
	}{
		{"no socket", func(*testing.T, string) {}},
		{"stale socket file", func(t *testing.T, socket string) {
			s := NewServer(socket, func(context.Context, Event) error { return nil })
			if err := s.Listen(); err != nil {
				t.Fatal(err)
			}
			s.ln.Close() // file stays, nobody listens
		}},
		{"handler error", func(t *testing.T, socket string) {
			startServer(t, socket, func(context.Context, Event) error { return errors.New("bpf map full") })
		}},
		{"handler hangs past the timeout", func(t *testing.T, socket string) {
			startServer(t, socket, func(ctx context.Context, _ Event) error { <-ctx.Done(); return ctx.Err() })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			socket := filepath.Join(dir, "cni.sock")
			tc.setup(t, socket)
			cfg := NotifyConfig{AgentSocket: socket, SpoolDir: filepath.Join(dir, "spool"), Timeout: 300 * time.Millisecond}
			start := time.Now()
			res, err := Notify(context.Background(), cfg, addEvent("c1"))
			if err != nil {
				t.Fatalf("Notify: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Notify took %v", d)
			}
			if res.Delivered || res.SpoolPath == "" || res.AgentErr == nil {
				t.Fatalf("Notify = %+v; want spooled with the agent's error", res)
			}
			data, err := os.ReadFile(res.SpoolPath)
			if err != nil {
				t.Fatal(err)
			}
			var ev Event
			if err := json.Unmarshal(data, &ev); err != nil || ev.ContainerID != "c1" || ev.Op != OpAdd {
				t.Fatalf("spool file %s = %s (%v)", res.SpoolPath, data, err)
			}
			if files := spoolFiles(t, cfg.SpoolDir); len(files) != 1 {
				t.Errorf("spool files %v, want exactly one (no temp files left)", files)
			}
		})
	}
}

func TestNotifyErrorsWhenSpoolUnwritable(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o600)
	_, err := Notify(context.Background(), NotifyConfig{AgentSocket: filepath.Join(dir, "none.sock"), SpoolDir: filepath.Join(blocker, "spool")}, addEvent("c1"))
	if err == nil || !strings.Contains(err.Error(), "spooling failed") {
		t.Fatalf("err = %v, want spooling failure", err)
	}
}

func TestNotifyRejectsInvalidEvent(t *testing.T) {
	_, err := Notify(context.Background(), NotifyConfig{SpoolDir: t.TempDir()}, Event{Op: "UPDATE"})
	if err == nil {
		t.Fatal("want an error")
	}
}

func TestDrainSpoolReplaysInOrderAndRemoves(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	evs := []Event{addEvent("b"), addEvent("a"), {Op: OpDel, ContainerID: "c"}, addEvent("d")}
	for i, ev := range evs {
		path, err := Spool(dir, ev)
		if err != nil {
			t.Fatal(err)
		}
		mt := base.Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(path, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	// Junk that must be ignored or cleaned up.
	os.WriteFile(filepath.Join(dir, ".x.json.tmp-1"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, "garbage.json"), []byte("{not json"), 0o600)

	rec := &recorder{}
	n, err := DrainSpool(dir, rec.handle)
	if n != 4 {
		t.Fatalf("handled %d, want 4 (err %v)", n, err)
	}
	if err == nil || !strings.Contains(err.Error(), "garbage.json") {
		t.Errorf("err = %v, want the bad file reported", err)
	}
	var order []string
	for _, ev := range rec.got() {
		order = append(order, string(ev.Op)+":"+ev.ContainerID)
	}
	if want := []string{"ADD:b", "ADD:a", "DEL:c", "ADD:d"}; !reflect.DeepEqual(order, want) {
		t.Errorf("replay order %v, want %v", order, want)
	}
	if files := spoolFiles(t, dir); !reflect.DeepEqual(files, []string{".x.json.tmp-1"}) {
		t.Errorf("spool after drain: %v", files)
	}
	// Nothing left: a second drain is a no-op; a missing dir too.
	if n, err := DrainSpool(dir, rec.handle); n != 0 || err != nil {
		t.Errorf("second drain = %d, %v", n, err)
	}
	if n, err := DrainSpool(filepath.Join(dir, "missing"), rec.handle); n != 0 || err != nil {
		t.Errorf("drain of missing dir = %d, %v", n, err)
	}
}

func TestDrainSpoolStopsOnErrorAndKeepsOrder(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	for i, id := range []string{"a", "b", "c"} {
		path, _ := Spool(dir, addEvent(id))
		mt := base.Add(time.Duration(i) * time.Second)
		os.Chtimes(path, mt, mt)
	}
	calls := 0
	n, err := DrainSpool(dir, func(_ context.Context, ev Event) error {
		calls++
		if ev.ContainerID == "b" {
			return errors.New("not ready")
		}
		return nil
	})
	if n != 1 || err == nil || calls != 2 {
		t.Fatalf("drain = %d, %v after %d calls; want 1 handled, error at b", n, err, calls)
	}
	if files := spoolFiles(t, dir); len(files) != 2 {
		t.Fatalf("files left %v, want b and c", files)
	}
	// A permanent failure is dropped and the drain goes on.
	n, err = DrainSpool(dir, func(_ context.Context, ev Event) error {
		if ev.ContainerID == "b" {
			return errors.Join(ErrDiscard, errors.New("pod unknown"))
		}
		return nil
	})
	if n != 1 || err == nil {
		t.Fatalf("drain = %d, %v; want c handled, b discarded", n, err)
	}
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Fatalf("files left %v", files)
	}
}

func TestDelDropsSpooledAdd(t *testing.T) {
	dir := t.TempDir()
	cfg := NotifyConfig{AgentSocket: filepath.Join(dir, "none.sock"), SpoolDir: filepath.Join(dir, "spool")}
	if _, err := Notify(context.Background(), cfg, addEvent("c1")); err != nil {
		t.Fatal(err)
	}
	// The agent is back and gets the DEL directly: the spooled ADD must not
	// be replayed after it.
	rec := &recorder{}
	srv := startServer(t, filepath.Join(dir, "agent.sock"), rec.handle)
	cfg.AgentSocket = srv.Socket()
	for range 2 { // DEL is idempotent
		if res, err := Notify(context.Background(), cfg, Event{Op: OpDel, ContainerID: "c1"}); err != nil || !res.Delivered {
			t.Fatalf("DEL = %+v, %v", res, err)
		}
	}
	if n, err := srv.Drain(context.Background(), cfg.SpoolDir); n != 0 || err != nil {
		t.Fatalf("drain = %d, %v; want nothing to replay", n, err)
	}
	if got := rec.got(); len(got) != 2 || got[0].Op != OpDel {
		t.Fatalf("agent saw %v", got)
	}
}

func TestServerDrainThenLive(t *testing.T) {
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	cfg := NotifyConfig{AgentSocket: filepath.Join(dir, "cni.sock"), SpoolDir: spool}
	// Agent down: two pods spooled.
	for _, id := range []string{"a", "b"} {
		if res, err := Notify(context.Background(), cfg, addEvent(id)); err != nil || res.Delivered {
			t.Fatalf("Notify = %+v, %v", res, err)
		}
	}
	rec := &recorder{}
	srv := startServer(t, cfg.AgentSocket, rec.handle)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.DrainLoop(ctx, spool, 50*time.Millisecond, nil); close(done) }()
	if res, err := Notify(context.Background(), cfg, addEvent("c")); err != nil || !res.Delivered {
		t.Fatalf("Notify = %+v, %v", res, err)
	}
	await.True(t, "the spooled events and the new one delivered and unspooled", func() bool {
		return len(rec.got()) >= 3 && len(spoolFiles(t, spool)) == 0
	})
	cancel()
	<-done
	seen := map[string]bool{}
	for _, ev := range rec.got() {
		seen[ev.ContainerID] = true
	}
	if len(seen) != 3 || len(spoolFiles(t, spool)) != 0 {
		t.Fatalf("agent saw %v, spool %v", seen, spoolFiles(t, spool))
	}
}

func TestServerRejectsBadRequests(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, filepath.Join(dir, "cni.sock"), (&recorder{}).handle)
	client := unixClient(srv.Socket())
	for _, body := range []string{"{", `{"op":"ADD"}`, `{"op":"X","containerID":"c"}`} {
		resp, err := client.Post("http://x"+EventPath, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: status %d, want 400", body, resp.StatusCode)
		}
	}
	resp, err := client.Get("http://x/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestServerRefusesNonSocketPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cni.sock")
	os.WriteFile(path, []byte("precious"), 0o644)
	if err := NewServer(path, (&recorder{}).handle).Listen(); err == nil {
		t.Fatal("want an error for a regular file at the socket path")
	}
	if data, _ := os.ReadFile(path); string(data) != "precious" {
		t.Fatal("file at the socket path was clobbered")
	}
}

func TestSpoolNameIsSafe(t *testing.T) {
	for _, id := range []string{"abc123", "../../etc/passwd", ".hidden", strings.Repeat("x", 300), "a/b"} {
		name := spoolName(id, OpAdd)
		if strings.ContainsRune(name, '/') || strings.HasPrefix(name, ".") || len(name) > 200 || !strings.HasSuffix(name, "-ADD.json") {
			t.Errorf("spoolName(%q) = %q", id, name)
		}
	}
}

// During a rolling upgrade the successor binds the socket path while the old
// agent still runs; the old agent's Close must leave the successor's socket
// in place, or pods created afterwards could only spool.
func TestCloseLeavesSuccessorsSocket(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "cni.sock")
	old := NewServer(socket, (&recorder{}).handle)
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	startServer(t, socket, rec.handle) // the successor
	if err := old.Close(); err != nil {
		t.Fatalf("old Close: %v", err)
	}
	cfg := NotifyConfig{AgentSocket: socket, SpoolDir: filepath.Join(dir, "spool")}
	res, err := Notify(context.Background(), cfg, addEvent("after"))
	if err != nil || !res.Delivered {
		t.Fatalf("Notify after the old agent closed = %+v, %v; want delivered to the successor", res, err)
	}
	if len(rec.got()) != 1 {
		t.Errorf("successor got %d events, want 1", len(rec.got()))
	}
}
