package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// sseAckWait is how long the SSE handler waits for the client to confirm
// event 1 before it writes event 2 anyway (marked unacked): shorter than
// the client's hangTimeout, so a buffering path is told apart from a hang.
func sseAckWait() time.Duration { return hangTimeout * 2 / 3 }

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", r.URL.Query().Get("n"))
	})
	mux.HandleFunc("GET /proto", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})
	mux.HandleFunc("GET /ip", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	})
	mux.HandleFunc("POST /echo", s.echoHTTP)
	mux.HandleFunc("POST /trailers", serveTrailers)
	mux.HandleFunc("GET /ws", s.websocket)
	mux.HandleFunc("GET /sse", s.sse)
	mux.HandleFunc("POST /sse-ack", func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.ack(r.URL.Query().Get("id")) <- struct{}{}:
		default:
		}
	})
	mux.HandleFunc("GET /seen", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		res, ok := s.seen[r.URL.Query().Get("id")]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(res)
	})
	return grpcOrHTTP(newGRPCServer(), mux)
}

// echoHTTP answers with the request body in three flushed parts (so the
// response is chunked) and names the request's transfer encoding.
func (s *Server) echoHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Request-Transfer-Encoding", strings.Join(r.TransferEncoding, ","))
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	third := len(body) / 3
	for _, part := range [][]byte{body[:third], body[third : 2*third], body[2*third:]} {
		w.Write(part)
		http.NewResponseController(w).Flush()
	}
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	for {
		kind, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if err := ws.WriteMessage(kind, msg); err != nil {
			return
		}
	}
}

// sse writes event 1, waits until the client says it read it, then writes
// event 2 ("acked", or "unacked" if the client never confirmed).
func (s *Server) sse(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	ack := s.ack(id)
	defer func() {
		s.mu.Lock()
		delete(s.acks, id)
		s.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	io.WriteString(w, "data: 1\n\n")
	http.NewResponseController(w).Flush()
	second := "data: 2 acked\n\n"
	select {
	case <-ack:
	case <-time.After(sseAckWait()):
		second = "data: 2 unacked\n\n"
	case <-r.Context().Done():
		return
	}
	io.WriteString(w, second)
}

func (s *Server) ack(id string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acks[id] == nil {
		s.acks[id] = make(chan struct{}, 1)
	}
	return s.acks[id]
}
