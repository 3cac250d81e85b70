package app

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
)

// ratingsReply is the ratings service's reply; Ratings maps reviewer to stars
// unless a client POSTed something else.
type ratingsReply struct {
	ID      int `json:"id"`
	Ratings any `json:"ratings"`
}

var defaultRatings = map[string]int{"Reviewer1": 5, "Reviewer2": 4}

// ratings keeps POSTed ratings in memory, like upstream's v1 (no database).
type ratings struct {
	mu    sync.Mutex
	added map[int]json.RawMessage
}

func newRatings() *ratings { return &ratings{added: map[int]json.RawMessage{}} }

func (s *ratings) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "Ratings is healthy"})
	})
	mux.HandleFunc("GET /ratings/{id}", s.get)
	mux.HandleFunc("POST /ratings/{id}", s.post)
}

func (s *ratings) get(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	added, found := s.added[id]
	s.mu.Unlock()
	if found {
		writeJSON(w, http.StatusOK, ratingsReply{id, added})
		return
	}
	writeJSON(w, http.StatusOK, ratingsReply{id, defaultRatings})
}

func (s *ratings) post(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil || !json.Valid(body) {
		writeJSON(w, http.StatusBadRequest, errorBody{"please provide valid ratings JSON"})
		return
	}
	s.mu.Lock()
	s.added[id] = body
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, ratingsReply{id, json.RawMessage(body)})
}
