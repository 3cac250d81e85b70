package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// expectContinue sends a request with `Expect: 100-continue` and holds the
// body back until the interim 100 arrives (as curl does for large uploads),
// then wants the body echoed in the final response.
func (c *Client) expectContinue(ctx context.Context) Result {
	conn, err := c.dial(ctx, c.Ports.HTTP)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	body := "continued body"
	req := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", c.Host, len(body))
	if _, err := io.WriteString(conn, req); err != nil {
		return failed("write headers", err)
	}
	br := bufio.NewReader(idleReader{conn})
	interim, err := http.ReadResponse(br, nil)
	switch {
	case err != nil:
		return failed("100 Continue", err)
	case interim.StatusCode != http.StatusContinue:
		return Result{Outcome: "answered " + interim.Status + " before the body", Detail: "no 100 Continue"}
	}
	if _, err := io.WriteString(conn, body); err != nil {
		return failed("write body", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return failed("response", err)
	}
	got, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return failed("response body", err)
	case resp.StatusCode != http.StatusOK || string(got) != body:
		return Result{Outcome: "HTTP " + resp.Status, Detail: cut(string(got))}
	}
	return Result{Outcome: OK, Detail: "100 Continue, then " + resp.Status + " with the body echoed"}
}

// trailers sends a chunked request whose trailer carries the body's
// checksum and wants the server to have seen it, and a response trailer
// with the server's checksum of what it received.
func (c *Client) trailers(ctx context.Context) Result {
	body := bytes.Repeat([]byte("trailer "), 20000)
	sum := sha256.Sum256(body)
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/trailers"), pr)
	req.Trailer = http.Header{"X-Body-Sha256": nil}
	go func() {
		pw.Write(body)
		// Trailer values are read once the body has ended.
		req.Trailer.Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
		pw.Close()
	}()
	client := c.httpClient(nil, false)
	defer client.CloseIdleConnections()
	resp, got, fail := client.roundTrip(req)
	if fail != nil {
		return *fail
	}
	want := hex.EncodeToString(sum[:])
	switch {
	case resp.StatusCode != http.StatusOK:
		return Result{Outcome: "HTTP " + resp.Status, Detail: cut(string(got))}
	case strings.TrimSpace(string(got)) != "request trailer "+want:
		return Result{Outcome: "request trailer lost", Detail: cut(string(got))}
	case resp.Trailer.Get("X-Body-Sha256") != want:
		return Result{Outcome: "response trailer lost", Detail: fmt.Sprintf("response trailers %v", resp.Trailer)}
	}
	return Result{Outcome: OK, Detail: "checksum trailers arrived both ways"}
}

// serveTrailers answers /trailers: the request trailer it saw in the body,
// and the checksum of the body it received in a response trailer.
func serveTrailers(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	if _, err := io.Copy(h, r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Trailer", "X-Body-Sha256")
	fmt.Fprintf(w, "request trailer %s\n", r.Trailer.Get("X-Body-Sha256"))
	http.NewResponseController(w).Flush()
	w.Header().Set("X-Body-Sha256", hex.EncodeToString(h.Sum(nil)))
}

// grpcOrHTTP sends HTTP/2 requests with a gRPC content type to g and
// everything else to h.
func grpcOrHTTP(g, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
