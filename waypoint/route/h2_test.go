package route

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// httpUpstream is a minimal real Upstream: every cluster is one backend.
type httpUpstream struct {
	rt   http.RoundTripper
	host string
}

func (u *httpUpstream) RoundTrip(req *http.Request, _ string, _ uint64, _ bool) (*http.Response, error) {
	req.URL.Scheme = "https"
	req.URL.Host = u.host
	return u.rt.RoundTrip(req)
}

// TestHTTP2EndToEnd runs real h2 servers on both sides of the pipeline:
// streamed responses, full-duplex request bodies, gRPC trailers and
// grpc-status retries.
func TestHTTP2EndToEnd(t *testing.T) {
	release := make(chan struct{})
	var flaky atomic.Int32
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("backend got %s", r.Proto)
		}
		switch r.URL.Path {
		case "/stream":
			io.WriteString(w, "chunk1\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "chunk2\n")
		case "/echo":
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			br := bufio.NewReader(r.Body)
			for {
				line, err := br.ReadString('\n')
				if line != "" {
					io.WriteString(w, "echo:"+line)
					w.(http.Flusher).Flush()
				}
				if err != nil {
					return
				}
			}
		case "/pkg.Svc/Unary":
			if flaky.Add(1) == 1 {
				// trailers-only UNAVAILABLE
				w.Header().Set("Content-Type", "application/grpc")
				w.Header().Set("Grpc-Status", "14")
				w.WriteHeader(200)
				return
			}
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
			w.WriteHeader(200)
			w.Write([]byte{0, 0, 0, 0, 1, 'x'})
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set("Grpc-Message", "fine")
		}
	}))
	backend.EnableHTTP2 = true
	backend.StartTLS()
	defer backend.Close()
	bu, _ := url.Parse(backend.URL)

	a := clusterAction("c")
	a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "unavailable", NumRetries: u32(2)}
	up := &httpUpstream{rt: backend.Client().Transport, host: bu.Host}
	p := compile(t, hcmWith(t), rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
	var lastInfo atomic.Pointer[Info]
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, info := WithInfo(r.Context())
		defer lastInfo.Store(info)
		p.ServeHTTP(w, r.WithContext(ctx))
	}))
	proxy.EnableHTTP2 = true
	proxy.StartTLS()
	defer proxy.Close()
	client := proxy.Client()

	t.Run("streamed response", func(t *testing.T) {
		res, err := client.Get(proxy.URL + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		br := bufio.NewReader(res.Body)
		got := make(chan string, 1)
		go func() { l, _ := br.ReadString('\n'); got <- l }()
		select {
		case l := <-got:
			if l != "chunk1\n" {
				t.Fatalf("first chunk %q", l)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("first chunk not streamed before the upstream finished")
		}
		close(release)
		rest, _ := io.ReadAll(br)
		if string(rest) != "chunk2\n" {
			t.Fatalf("rest %q", rest)
		}
	})

	t.Run("full-duplex request body", func(t *testing.T) {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", proxy.URL+"/echo", pr)
		done := make(chan *http.Response, 1)
		go func() {
			res, err := client.Do(req)
			if err != nil {
				t.Error(err)
				close(done)
				return
			}
			done <- res
		}()
		io.WriteString(pw, "ping\n")
		var res *http.Response
		select {
		case res = <-done:
		case <-time.After(3 * time.Second):
			t.Fatal("no response headers while the body is still open")
		}
		if res == nil {
			return
		}
		br := bufio.NewReader(res.Body)
		line := make(chan string, 1)
		go func() { l, _ := br.ReadString('\n'); line <- l }()
		select {
		case l := <-line:
			if l != "echo:ping\n" {
				t.Fatalf("echo %q", l)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("request body was not streamed")
		}
		pw.Close()
		res.Body.Close()
	})

	t.Run("grpc trailers and grpc-status retry", func(t *testing.T) {
		req, _ := http.NewRequest("POST", proxy.URL+"/pkg.Svc/Unary", nil)
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if len(body) != 6 || res.Trailer.Get("Grpc-Status") != "0" || res.Trailer.Get("Grpc-Message") != "fine" {
			t.Fatalf("body %q trailer %v header %v", body, res.Trailer, res.Header)
		}
		if info := lastInfo.Load(); info == nil || info.Attempts != 2 {
			t.Fatalf("info %+v", info)
		}
	})
}
