package app

import (
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// reviewsReply is the reviews service's reply; productpage decodes the same type.
type reviewsReply struct {
	ID          string   `json:"id"` // a string, as upstream sends it
	PodName     string   `json:"podname"`
	ClusterName string   `json:"clustername"`
	Version     string   `json:"version,omitempty"` // Weft addition, so tests can count versions
	Reviews     []review `json:"reviews"`
}

type review struct {
	Reviewer string  `json:"reviewer"`
	Text     string  `json:"text"`
	Rating   *rating `json:"rating,omitempty"` // absent in v1
}

type rating struct {
	Stars int    `json:"stars,omitempty"`
	Color string `json:"color,omitempty"`
	Error string `json:"error,omitempty"`
}

// Empty is the number of empty stars to draw after the full ones.
func (r *rating) Empty() int { return max(0, 5-r.Stars) }

const ratingsServiceUnavailable = "Ratings service is currently unavailable"

// starColors maps each reviews version to its star color; v1 shows no ratings.
var starColors = map[string]string{"v1": "", "v2": "black", "v3": "red"}

var bookReviews = []review{
	{Reviewer: "Reviewer1", Text: "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"},
	{Reviewer: "Reviewer2", Text: "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."},
}

type reviews struct {
	cfg     Config
	color   string
	timeout time.Duration
	log     *slog.Logger
}

func newReviews(cfg Config, log *slog.Logger) *reviews {
	s := &reviews{cfg: cfg, color: starColors[cfg.Version], log: log}
	s.timeout = cfg.timeout(RedRatingTimeout)
	if s.color == "black" {
		s.timeout = cfg.timeout(BlackRatingTimeout)
	}
	return s
}

func (s *reviews) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "Reviews is healthy"})
	})
	mux.HandleFunc("GET /reviews/{id}", s.get)
}

func (s *reviews) get(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	reply := reviewsReply{
		ID:          strconv.Itoa(id),
		PodName:     s.cfg.PodName,
		ClusterName: s.cfg.ClusterName,
		Version:     s.cfg.Version,
		Reviews:     slices.Clone(bookReviews),
	}
	if s.color != "" {
		stars := s.ratings(r, id)
		for i := range reply.Reviews {
			if n, ok := stars[reply.Reviews[i].Reviewer]; ok {
				reply.Reviews[i].Rating = &rating{Stars: n, Color: s.color}
			} else {
				reply.Reviews[i].Rating = &rating{Error: ratingsServiceUnavailable}
			}
		}
	}
	writeJSON(w, http.StatusOK, reply)
}

// ratings returns stars per reviewer, or nil when ratings cannot be reached.
func (s *reviews) ratings(r *http.Request, id int) map[string]int {
	var reply struct {
		Ratings map[string]int `json:"ratings"`
	}
	url := s.cfg.RatingsURL + "/ratings/" + strconv.Itoa(id)
	if status, err := getJSON(r.Context(), url, propagate(r.Header), s.timeout, &reply); err != nil {
		s.log.Warn("ratings unavailable", "url", url, "status", status, "error", err)
		return nil
	}
	return reply.Ratings
}
