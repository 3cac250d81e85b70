package agent

import (
	"net/http"
	"net/netip"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/node-agent/proxy"
	weftadmin "github.com/weft-mesh/weft/pkg/admin"
	"github.com/weft-mesh/weft/pkg/identity"
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
	ports    bpf.ProxyListeners
}

// ConfigDump is /config_dump's body.
type ConfigDump struct {
	XDS          XDSStatus             `json:"xds"`
	Config       *config.Snapshot      `json:"config"`
	Certificates []identity.CertStatus `json:"certificates"`
	Enrolled     []netip.Addr          `json:"enrolled"`
	// Listeners are this agent's proxy listener ports, where the capture
	// steers once it is ready: the configured ones, or others if those
	// were held (by the agent it succeeds).
	Listeners bpf.ProxyListeners `json:"listeners"`
}

// XDSStatus says whether the agent has (had) its configuration.
type XDSStatus struct {
	Synced   bool `json:"synced"`
	Connects int  `json:"connects"`
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		weftadmin.WriteJSON(w, ConfigDump{
			XDS:          XDSStatus{Synced: a.xds.Synced(), Connects: a.xds.Connects()},
			Config:       a.store.Snapshot(),
			Certificates: a.ids.Status(),
			Enrolled:     a.enroller.Enrolled(),
			Listeners:    a.ports,
		})
	})
	mux.HandleFunc("GET /connections", func(w http.ResponseWriter, _ *http.Request) {
		conns := a.metrics.Connections()
		if conns == nil {
			conns = []proxy.Connection{}
		}
		weftadmin.WriteJSON(w, conns)
	})
	return mux
}

// healthHandler: ready once the listeners are up and the first complete
// configuration arrived (a restarted agent with the control plane away stays
// unready, which holds a rolling update).
func (a *admin) healthHandler() http.Handler {
	return weftadmin.Health(func() string {
		if !a.ready.Load() {
			return "waiting for configuration from the control plane"
		}
		return ""
	})
}
