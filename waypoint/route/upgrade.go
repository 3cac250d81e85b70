package route

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/weft-mesh/weft/pkg/hbone"
)

// HTTP upgrades (WebSocket), as Envoy's HCM and router do them; see doc.go
// for the rules.

// upgrades maps lower-case upgrade types to whether they are enabled.
type upgrades map[string]bool

// compileUpgrades reads the HCM's upgrade_configs (hcm) or a route's
// (route): types, and enabled (default true).
func compileUpgrades(hcm []*hcmv3.HttpConnectionManager_UpgradeConfig, route []*routev3.RouteAction_UpgradeConfig) (upgrades, error) {
	m := upgrades{}
	add := func(typ string, enabled bool) error {
		t := strings.ToLower(typ)
		if _, dup := m[t]; dup {
			return fmt.Errorf("upgrade_configs: %q is listed twice", typ)
		}
		switch t {
		case "":
			return fmt.Errorf("upgrade_configs: upgrade_type is empty")
		case "connect":
			return fmt.Errorf("upgrade_configs: CONNECT is not supported (neither terminated nor forwarded)")
		}
		m[t] = enabled
		return nil
	}
	for _, uc := range hcm {
		if len(uc.GetFilters()) > 0 {
			return nil, fmt.Errorf("upgrade_configs %q: custom filter chains are not supported", uc.GetUpgradeType())
		}
		if err := add(uc.GetUpgradeType(), uc.GetEnabled() == nil || uc.GetEnabled().GetValue()); err != nil {
			return nil, err
		}
	}
	for _, uc := range route {
		if uc.GetConnectConfig() != nil {
			return nil, fmt.Errorf("upgrade_configs %q: connect_config is not supported", uc.GetUpgradeType())
		}
		if err := add(uc.GetUpgradeType(), uc.GetEnabled() == nil || uc.GetEnabled().GetValue()); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// upgradeType is what r asks to switch to: the Upgrade header of an
// HTTP/1.1 request that lists "upgrade" in Connection, or "CONNECT" for
// the CONNECT method; "" for anything else, including an "h2c" offer,
// which Envoy's HTTP/1 codec drops (with its Connection and
// HTTP2-Settings headers, as removeHopHeaders does) to serve the request
// as plain HTTP/1.1.
func upgradeType(r *http.Request) string {
	if r.Method == http.MethodConnect {
		return "CONNECT"
	}
	if r.ProtoMajor != 1 || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		return ""
	}
	if u := r.Header.Get("Upgrade"); !strings.EqualFold(u, "h2c") {
		return u
	}
	return ""
}

// upgradeAllowed applies Envoy's rule: the route's setting for the type
// if it has one, else the HCM's; a type neither lists is refused.
func (x *exchange) upgradeAllowed() bool {
	t := strings.ToLower(x.upgrade)
	if on, ok := x.rt.upgrades[t]; ok {
		return on
	}
	return x.p.upgrades[t]
}

// refuseUpgrade is Envoy's answer to an upgrade its route does not allow:
// 403 with no body, and the connection closes (whatever the client sends
// next could be the upgraded protocol, not a request).
func (x *exchange) refuseUpgrade() {
	if x.r.ProtoMajor == 1 {
		x.w.Header().Set("Connection", "close")
	}
	x.localReply(http.StatusForbidden, "", "upgrade_failed", -1, false, nil)
}

// upgradeHeaders puts the upgrade offer back on the request headers h
// after the hop-by-hop headers were removed.
func upgradeHeaders(h, orig http.Header) {
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = orig.Values("Upgrade")
}

// tunnel completes an upgrade the upstream accepted with a 101: the 101
// goes downstream (after the response header mutations and the encoders),
// then bytes are piped both ways, each half-close passed on, until both
// directions ended. The route timeout no longer applies.
func (x *exchange) tunnel(resp *http.Response, wc *weightedCluster) {
	up, ok := resp.Body.(hbone.Stream)
	if x.upgrade == "" || !ok {
		// A 101 the client did not ask for, or with no connection to switch
		// to: an upstream protocol error (Envoy resets the stream too).
		resp.Body.Close()
		x.failReply(failReset, wc)
		return
	}
	h := resp.Header.Clone()
	proto := h.Values("Upgrade")
	removeHopHeaders(h)
	h["Connection"], h["Upgrade"] = []string{"Upgrade"}, proto
	x.finalizeResponse(h, wc)
	x.info.Details = "via_upstream"
	x.encodeHeader(http.StatusSwitchingProtocols, h)
	conn, brw, err := http.NewResponseController(x.w).Hijack()
	if err == nil {
		err = (&http.Response{StatusCode: http.StatusSwitchingProtocols, ProtoMajor: 1, ProtoMinor: 1, Header: h}).Write(brw)
		if err == nil {
			err = brw.Flush()
		}
		if err != nil {
			conn.Close()
		}
	}
	if err != nil {
		up.Close()
		x.info.addFlag(flagDC)
		return
	}
	x.info.TunnelReceived, x.info.TunnelSent, _ = hbone.Pipe(&hijacked{Conn: conn, r: brw.Reader}, up)
}

// hijacked is the client's connection after the 101: first what the server
// had read ahead, then the connection itself.
type hijacked struct {
	net.Conn
	r *bufio.Reader
}

func (c *hijacked) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the client's connection; one that cannot makes
// hbone.Pipe close both ends instead.
func (c *hijacked) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
