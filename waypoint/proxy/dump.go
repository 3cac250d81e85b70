package proxy

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// ConfigDump is the active configuration as the admin endpoint shows it:
// names, matches and endpoint state, never key material.
type ConfigDump struct {
	Version  uint64            `json:"version"`
	Synced   bool              `json:"synced"`
	Chains   []ChainDump       `json:"filterChains"`
	Routes   []string          `json:"routeConfigurations"`
	Clusters []ClusterDump     `json:"clusters"`
	Rejected map[string]string `json:"rejected,omitempty"`
}

// ChainDump is one filter chain.
type ChainDump struct {
	Name     string   `json:"name"`
	Port     uint32   `json:"destinationPort,omitempty"`
	Prefixes []string `json:"prefixRanges,omitempty"`
	Kind     string   `json:"kind"` // http or tcp
	Route    string   `json:"routeConfiguration,omitempty"`
	Ready    bool     `json:"ready"`
	Clusters []string `json:"clusters,omitempty"`
}

// ClusterDump is one cluster with its runtime state.
type ClusterDump struct {
	Name               string         `json:"name"`
	Type               string         `json:"type"`
	LBPolicy           string         `json:"lbPolicy"`
	MaxConnections     int64          `json:"maxConnections"`
	MaxPendingRequests int64          `json:"maxPendingRequests"`
	MaxRequests        int64          `json:"maxRequests"`
	MaxRequestsPerConn int            `json:"maxRequestsPerConnection,omitempty"`
	OutlierDetection   bool           `json:"outlierDetection"`
	Active             int64          `json:"activeRequests"`
	Overflows          uint64         `json:"overflows"`
	Ejections          uint64         `json:"ejections"`
	Endpoints          []EndpointDump `json:"endpoints"`
	// DNS: the names a STRICT_DNS or LOGICAL_DNS cluster resolves.
	DNS []DNSDump `json:"dns,omitempty"`
}

// EndpointDump is one endpoint.
type EndpointDump struct {
	Address      netip.AddrPort `json:"address"`
	Tunnel       string         `json:"tunnel"`
	TunnelTarget netip.AddrPort `json:"tunnelTarget,omitzero"` // the CONNECT's, when not Address
	Identity     string         `json:"identity,omitempty"`
	Workload     string         `json:"workload,omitempty"`
	Namespace    string         `json:"namespace,omitempty"`
	Version      string         `json:"version,omitempty"`
	Healthy      bool           `json:"healthy"`
	EjectedUntil time.Time      `json:"ejectedUntil,omitzero"`
	Active       int64          `json:"activeRequests"`
}

// Dump describes the current configuration.
func (s *Store) Dump() ConfigDump {
	snap := s.Snapshot()
	d := ConfigDump{Version: snap.Version, Synced: s.Synced(), Routes: snap.Routes, Rejected: s.Rejected()}
	for _, c := range snap.chains.all {
		cd := ChainDump{Name: c.name, Port: c.port, Kind: "http", Route: c.rcName, Ready: c.handler != nil}
		for _, p := range c.prefixes {
			cd.Prefixes = append(cd.Prefixes, p.String())
		}
		if c.isTCP() {
			cd.Kind, cd.Ready = "tcp", true
			for _, w := range c.tcp {
				cd.Clusters = append(cd.Clusters, w.name)
			}
		}
		d.Chains = append(d.Chains, cd)
	}
	now := time.Now()
	s.mu.Lock()
	dnsClusters := maps.Clone(s.dns)
	s.mu.Unlock()
	for _, name := range snap.Clusters {
		c := snap.clusters[name]
		if c == nil {
			continue
		}
		st := c.settings.Load()
		cd := ClusterDump{Name: name, Type: "EDS", LBPolicy: st.lb.String(), MaxConnections: st.maxConnections,
			MaxPendingRequests: st.maxPending, MaxRequests: st.maxRequests, MaxRequestsPerConn: st.maxRequestsPerConn,
			OutlierDetection: st.outlier != nil, Active: c.requests.Load(), Overflows: c.stats.Overflow.Load(),
			Ejections: c.stats.Ejections.Load(), Endpoints: []EndpointDump{}}
		switch {
		case st.originalDst:
			cd.Type, cd.LBPolicy = "ORIGINAL_DST", "CLUSTER_PROVIDED"
		case st.dns != nil && st.dns.logical:
			cd.Type = "LOGICAL_DNS"
		case st.dns != nil:
			cd.Type = "STRICT_DNS"
		}
		if dc := dnsClusters[name]; dc != nil {
			cd.DNS = dc.dump()
		}
		for _, e := range *c.eps.Load() {
			ed := EndpointDump{Address: e.addr, Tunnel: "NONE", TunnelTarget: e.meta.TunnelTarget, Identity: idString(e.meta.Identity), Workload: e.meta.Workload,
				Namespace: e.meta.Namespace, Version: e.meta.Version, Healthy: e.healthy, Active: e.st.active.Load()}
			if e.meta.HBONE {
				ed.Tunnel = mesh.HBONEProtocol
			}
			e.st.mu.Lock()
			if now.Before(e.st.ejectedUntil) {
				ed.EjectedUntil = e.st.ejectedUntil
			}
			e.st.mu.Unlock()
			cd.Endpoints = append(cd.Endpoints, ed)
		}
		d.Clusters = append(d.Clusters, cd)
	}
	slices.SortFunc(d.Chains, func(a, b ChainDump) int { return strings.Compare(a.Name, b.Name) })
	return d
}
