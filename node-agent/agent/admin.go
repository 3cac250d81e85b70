package agent

import (
	"encoding/json"
	"fmt"
	"io"
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

// ConfigDump is /config_dump's body but its first member, "config" (the
// configuration, config.Snapshot.WriteJSON), which writeConfigDump streams
// ahead of it.
type ConfigDump struct {
	XDS          XDSStatus             `json:"xds"`
	Certificates []identity.CertStatus `json:"certificates"`
	Enrolled     []netip.Addr          `json:"enrolled"`
	// Listeners are this agent's proxy listener ports, where the capture
	// steers once it is ready: the configured ones, or others if those
	// were held (by the agent it succeeds).
	Listeners bpf.ProxyListeners `json:"listeners"`
}

// writeConfigDump writes {"config": <configuration>, <ConfigDump's
// members>}: the configuration streamed first, since it may be tens of MB,
// which encoding/json would build whole in memory; the rest is small.
func (a *admin) writeConfigDump(w io.Writer) error {
	rest, err := json.Marshal(ConfigDump{
		XDS:          XDSStatus{Synced: a.xds.Synced(), Connects: a.xds.Connects()},
		Certificates: a.ids.Status(),
		Enrolled:     a.enroller.Enrolled(),
		Listeners:    a.ports,
	})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, `{"config":`); err != nil {
		return err
	}
	if err := a.store.Snapshot().WriteJSON(w); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, ",%s\n", rest[1:])
	return err
}

// XDSStatus says whether the agent has (had) its configuration.
type XDSStatus struct {
	Synced   bool `json:"synced"`
	Connects int  `json:"connects"`
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = a.writeConfigDump(w) // the client went away
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
