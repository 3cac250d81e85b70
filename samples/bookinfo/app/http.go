package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// writeJSON is the single way every service answers with JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client is gone if this fails
}

// productID parses the {id} path value; like upstream, ids are numeric.
func productID(w http.ResponseWriter, r *http.Request) (int, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"please provide numeric product ID"})
		return 0, false
	}
	return id, true
}

type errorBody struct {
	Error string `json:"error"`
}

// upstreamClient opens a new connection per call, as upstream productpage
// (Python requests without a session) and reviews do: each call is load
// balanced afresh, so refreshing the page rotates the reviews versions and
// a newly applied routing rule takes effect on the next request.
var upstreamClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// getJSON GETs url with hdr, bounded by timeout, and decodes a 200 body into out.
// The status is the upstream's, or 500 when there was no usable response — the
// same convention upstream productpage uses for its error replies.
func getJSON(ctx context.Context, url string, hdr http.Header, timeout time.Duration, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return http.StatusInternalServerError, err
	}
	req.Header = hdr.Clone()
	resp, err := upstreamClient.Do(req)
	if err != nil {
		return http.StatusInternalServerError, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		return resp.StatusCode, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return http.StatusInternalServerError, fmt.Errorf("GET %s: decoding body: %w", url, err)
	}
	return http.StatusOK, nil
}

// logRequests writes one JSON log line per request.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", rec.status),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			slog.String("remote", r.RemoteAddr),
			slog.String("request_id", r.Header.Get("X-Request-Id")),
			slog.String("user_agent", r.UserAgent()),
		)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
