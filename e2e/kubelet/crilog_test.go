package kubelet

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestFormatAndParseCRILine(t *testing.T) {
	ts := time.Date(2026, 3, 4, 5, 6, 7, 120000000, time.UTC)
	for _, tt := range []struct {
		stream  string
		partial bool
		line    string
		want    string
	}{
		{"stdout", false, "hello world", "2026-03-04T05:06:07.120000000Z stdout F hello world\n"},
		{"stderr", true, "part", "2026-03-04T05:06:07.120000000Z stderr P part\n"},
		{"stdout", false, "", "2026-03-04T05:06:07.120000000Z stdout F \n"},
	} {
		got := string(formatCRILine(ts, tt.stream, tt.partial, []byte(tt.line)))
		if got != tt.want {
			t.Errorf("formatCRILine = %q, want %q", got, tt.want)
		}
		c, err := parseCRILine([]byte(got))
		if err != nil || !c.ts.Equal(ts) || c.stream != tt.stream || c.partial != tt.partial || string(c.content) != tt.line {
			t.Errorf("parse(%q) = %+v, %v", got, c, err)
		}
	}
	// Kubelet-written lines with trimmed nanoseconds parse too.
	if c, err := parseCRILine([]byte("2016-10-06T00:17:09.669794202Z stdout F log line")); err != nil || string(c.content) != "log line" {
		t.Errorf("parse upstream sample: %+v %v", c, err)
	}
	if _, err := parseCRILine([]byte("garbage")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestPumpCRILog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := openCRILog(path)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", maxCRILine+10)
	pumpCRILog(strings.NewReader("one\ntwo\n"+long+"\nno-newline"), "stdout", w)
	w.Close()
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var tags []string
	for _, l := range lines {
		c, err := parseCRILine([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		tag := "F"
		if c.partial {
			tag = "P"
		}
		tags = append(tags, tag+":"+string(c.content[:min(len(c.content), 10)]))
	}
	want := []string{"F:one", "F:two", "P:xxxxxxxxxx", "F:xxxxxxxxxx", "P:no-newline"}
	if strings.Join(tags, ",") != strings.Join(want, ",") {
		t.Errorf("records = %v, want %v", tags, want)
	}
}

// writeTestLog writes a CRI log with lines l0..l(n-1), one second apart.
func writeTestLog(t *testing.T, path string, base time.Time, lines ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i, l := range lines {
		stream := "stdout"
		if strings.HasPrefix(l, "err:") {
			stream = "stderr"
		}
		b.Write(formatCRILine(base.Add(time.Duration(i)*time.Second), stream, false, []byte(l)))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestContainerLogsHandler(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "app")
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	writeTestLog(t, filepath.Join(dir, "0.log"), base, "old-1", "old-2")
	writeTestLog(t, filepath.Join(dir, "1.log"), base.Add(10*time.Minute), "a", "err:b", "c", "d")
	var live atomic.Bool
	src := func(ns, pod, ctr string) (string, func() bool, error) {
		if ns != "shop" || pod != "web" {
			return "", nil, &httpError{http.StatusNotFound, "pod not found"}
		}
		if ctr == "nologs" {
			return filepath.Join(dir, "..", "nologs"), nil, nil
		}
		return dir, live.Load, nil
	}
	srv := httptest.NewServer(newHandler(nil, src))
	defer srv.Close()
	get := func(q string) (int, string) {
		resp, err := http.Get(srv.URL + "/containerLogs/shop/web/app" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ts1 := base.Add(10 * time.Minute).Format(time.RFC3339Nano)
	tests := []struct {
		q    string
		code int
		want string
	}{
		{"", 200, "a\nerr:b\nc\nd\n"},
		{"?tailLines=2", 200, "c\nd\n"},
		{"?tailLines=0", 200, ""},
		{"?tailLines=100", 200, "a\nerr:b\nc\nd\n"},
		{"?previous=true", 200, "old-1\nold-2\n"},
		{"?previous=true&tailLines=1", 200, "old-2\n"},
		{"?timestamps=true&tailLines=4&limitBytes=100", 200, ts1 + " a\n"},
		{"?limitBytes=3", 200, "a\ne"},
		{"?sinceSeconds=1", 200, ""},
		{"?tailLines=-1", 400, ""},
	}
	for _, tt := range tests {
		code, body := get(tt.q)
		if tt.q == "?timestamps=true&tailLines=4&limitBytes=100" {
			if code != 200 || !strings.HasPrefix(body, tt.want) || !strings.Contains(body, " err:b\n") {
				t.Errorf("%s: %d %q", tt.q, code, body)
			}
			continue
		}
		if code != tt.code || (tt.code == 200 && body != tt.want) {
			t.Errorf("GET %q = %d %q, want %d %q", tt.q, code, body, tt.code, tt.want)
		}
	}
	if resp, _ := http.Get(srv.URL + "/containerLogs/other/web/app"); resp.StatusCode != 404 {
		t.Errorf("unknown pod: %d", resp.StatusCode)
	}
	if resp, _ := http.Get(srv.URL + "/containerLogs/shop/web/nologs?previous=true"); resp.StatusCode != 400 {
		t.Errorf("no logs: %d", resp.StatusCode)
	}

	// follow streams appended lines until the container stops.
	live.Store(true)
	resp, err := http.Get(srv.URL + "/containerLogs/shop/web/app?follow=true&tailLines=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.OpenFile(filepath.Join(dir, "1.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := io.ReadAtLeast(resp.Body, buf, 2)
	if got := string(buf[:n]); got != "d\n" {
		t.Errorf("follow first chunk %q", got)
	}
	f.Write(formatCRILine(time.Now(), "stdout", false, []byte("e")))
	f.Close()
	n, _ = io.ReadAtLeast(resp.Body, buf, 2)
	if got := string(buf[:n]); got != "e\n" {
		t.Errorf("follow appended chunk %q", got)
	}
	live.Store(false)
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follow end: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("follow did not end after the container stopped")
	}
}

func TestHealthz(t *testing.T) {
	srv := httptest.NewServer(newHandler(nil, nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("healthz = %d %q", resp.StatusCode, b)
	}
}
