package agent

import (
	"encoding/json"
	"net/http"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/node-agent/identity"
	"github.com/weft-mesh/weft/node-agent/proxy"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

// admin serves what an operator (and weftctl) reads from a node agent.
// Nothing here holds key material: certificates are listed by identity,
// serial and validity only.
type admin struct {
	store    *config.Store
	ids      *identity.Manager
	xds      *xdsclient.Client
	enroller *Enroller
	metrics  *proxy.Metrics
	ready    *readiness
}

// ConfigDump is /config_dump's body.
type ConfigDump struct {
	XDS          XDSStatus             `json:"xds"`
	Config       *config.Snapshot      `json:"config"`
	Certificates []identity.CertStatus `json:"certificates"`
	Enrolled     []netip.Addr          `json:"enrolled"`
}

// XDSStatus says whether the agent has (had) its configuration.
type XDSStatus struct {
	Synced   bool `json:"synced"`
	Connects int  `json:"connects"`
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, ConfigDump{
			XDS:          XDSStatus{Synced: a.xds.Synced(), Connects: a.xds.Connects()},
			Config:       a.store.Snapshot(),
			Certificates: a.ids.Status(),
			Enrolled:     a.enroller.Enrolled(),
		})
	})
	mux.HandleFunc("GET /connections", func(w http.ResponseWriter, _ *http.Request) {
		conns := a.metrics.Connections()
		if conns == nil {
			conns = []proxy.Connection{}
		}
		writeJSON(w, conns)
	})
	return mux
}

// healthHandler: live while the process serves; ready once the listeners
// are up and the first complete configuration arrived (a restarted agent
// with the control plane away stays unready, which holds a rolling update).
func (a *admin) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/live", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "waiting for configuration from the control plane", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /stats/prometheus", h) // Istio's path, for existing scrape configs
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
