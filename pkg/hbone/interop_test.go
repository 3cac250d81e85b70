package hbone

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// TestClientAgainstAnotherServer: the Dialer speaks plain HTTP/2 CONNECT
// to a server that is not ours (net/http's HTTP/2 server, as a stand-in
// for ztunnel or Envoy): a stream's bytes both ways, its end, and a
// refusal's status and reason.
func TestClientAgainstAnotherServer(t *testing.T) {
	e := newEnv(t, Options{})
	srv := &http.Server{TLSConfig: e.srv.TLS.Clone(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != "10.0.0.1:80" {
			http.Error(w, "not this stream", http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		rc.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush()
			}
			if err != nil {
				return // the client's END_STREAM (or reset): ours follows
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	ctx := context.Background()

	s, err := e.dialer.Dial(ctx, addr, tlsconfig.AuthorizeID(serverID), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("Dial through net/http's HTTP/2 server: %v", err)
	}
	echoOn(t, s, "hello")
	echoOn(t, s, "again")
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(s); err != nil || len(rest) != 0 {
		t.Errorf("after our END_STREAM: read %q, %v; want EOF", rest, err)
	}
	s.Close()

	_, err = e.dialer.Dial(ctx, addr, tlsconfig.AuthorizeID(serverID), "10.0.0.2:80", nil)
	if !isRefused(err, http.StatusForbidden) || err.(*RefusedError).Reason != "not this stream" {
		t.Errorf("Dial of a stream the server refuses: %v; want 403 with its reason", err)
	}
}
