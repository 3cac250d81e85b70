package route

import (
	"net/http"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func upgradeConfig(typ string, enabled *bool) *hcmv3.HttpConnectionManager_UpgradeConfig {
	uc := &hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: typ}
	if enabled != nil {
		uc.Enabled = wrapperspb.Bool(*enabled)
	}
	return uc
}

func routeUpgrade(typ string, enabled bool) *routev3.RouteAction_UpgradeConfig {
	return &routev3.RouteAction_UpgradeConfig{UpgradeType: typ, Enabled: wrapperspb.Bool(enabled)}
}

// TestUpgrades: which upgrade requests are forwarded (with their upgrade
// headers) and which are refused as Envoy refuses them (403, no body,
// upgrade_failed, connection closed, upstream untouched).
func TestUpgrades(t *testing.T) {
	off, on := false, true
	websocket := []string{"Connection", "keep-alive, Upgrade", "Upgrade", "websocket"}
	tests := []struct {
		name    string
		hcm     []*hcmv3.HttpConnectionManager_UpgradeConfig
		route   []*routev3.RouteAction_UpgradeConfig
		method  string
		headers []string
		want    int    // status
		upgrade string // Upgrade header the upstream got ("" for none)
	}{
		{name: "websocket enabled", hcm: []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("websocket", nil)},
			headers: websocket, want: 200, upgrade: "websocket"},
		{name: "type matched case-insensitively", hcm: []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("WebSocket", nil)},
			headers: websocket, want: 200, upgrade: "websocket"},
		{name: "no upgrade_configs", headers: websocket, want: 403},
		{name: "type not listed", hcm: []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("websocket", nil)},
			headers: []string{"Connection", "upgrade", "Upgrade", "foo/1"}, want: 403},
		{name: "disabled in the HCM", hcm: []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("websocket", &off)},
			headers: websocket, want: 403},
		{name: "disabled in the HCM, enabled by the route", hcm: []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("websocket", &off)},
			route: []*routev3.RouteAction_UpgradeConfig{routeUpgrade("websocket", true)}, headers: websocket, want: 200, upgrade: "websocket"},
		{name: "enabled in the HCM, disabled by the route", hcm: []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("websocket", &on)},
			route: []*routev3.RouteAction_UpgradeConfig{routeUpgrade("websocket", false)}, headers: websocket, want: 403},
		{name: "Upgrade without Connection: upgrade is a plain request", headers: []string{"Upgrade", "websocket"}, want: 200},
		{name: "h2c offer dropped", headers: []string{"Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"},
			want: 200},
		{name: "CONNECT refused", hcm: []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("websocket", nil)},
			method: http.MethodConnect, want: 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := newFake(nil)
			action := clusterAction("c")
			action.UpgradeConfigs = tc.route
			h := hcmWith(t)
			h.UpgradeConfigs = tc.hcm
			p := compile(t, h, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), action))), up)
			r := req("GET", "/chat", append([]string{"host", "svc"}, tc.headers...)...)
			if tc.method == http.MethodConnect {
				r = req(http.MethodConnect, "svc:443", "host", "svc:443")
			}
			w, info := serve(p, r, nil)
			if w.Code != tc.want {
				t.Fatalf("status %d (details %q), want %d", w.Code, info.Details, tc.want)
			}
			calls := up.Calls()
			if tc.want == 403 {
				if len(calls) != 0 || info.Details != "upgrade_failed" || w.Body.Len() != 0 || w.Header().Get("Connection") != "close" {
					t.Fatalf("refusal: %d upstream calls, details %q, body %q, headers %v", len(calls), info.Details, w.Body.String(), w.Header())
				}
				return
			}
			got := calls[0].Header
			wantConn := ""
			if tc.upgrade != "" {
				wantConn = "Upgrade"
			}
			if got.Get("Upgrade") != tc.upgrade || got.Get("Connection") != wantConn || got.Get("Http2-Settings") != "" || got.Get("Keep-Alive") != "" {
				t.Fatalf("upstream headers %v, want Upgrade %q Connection %q and no other hop-by-hop header", got, tc.upgrade, wantConn)
			}
		})
	}
}

// TestUpgradeResponses: an upstream 101 the client did not ask for is an
// upstream protocol error, not a tunnel; a refusal of an upgrade (any
// status but 101) goes back as an ordinary response.
func TestUpgradeResponses(t *testing.T) {
	up := newFake(func(_ int, req *http.Request, _ string) (*http.Response, error) {
		if req.Header.Get("Upgrade") == "" {
			return resp(http.StatusSwitchingProtocols, "", "Connection", "Upgrade", "Upgrade", "websocket"), nil
		}
		return resp(http.StatusBadRequest, "not a websocket endpoint"), nil
	})
	h := hcmWith(t)
	h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("websocket", nil)}
	p := compile(t, h, rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), up)

	w, info := serve(p, req("GET", "/", "host", "svc"), nil)
	if w.Code != 503 || info.ResponseFlags != "UC" {
		t.Fatalf("unrequested 101: %d flags %q, want 503 UC", w.Code, info.ResponseFlags)
	}
	w, _ = serve(p, req("GET", "/", "host", "svc", "Connection", "upgrade", "Upgrade", "websocket"), nil)
	if w.Code != 400 || w.Body.String() != "not a websocket endpoint" {
		t.Fatalf("refused upgrade: %d %q", w.Code, w.Body.String())
	}
}

// TestExpectContinue: Envoy's default drops "Expect: 100-continue" (the
// proxy answers 100 itself); proxy_100_continue forwards it.
func TestExpectContinue(t *testing.T) {
	for _, proxy := range []bool{false, true} {
		up := newFake(nil)
		h := hcmWith(t)
		h.Proxy_100Continue = proxy
		p := compile(t, h, rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), up)
		r := reqBody("PUT", "/", "body")
		r.Header.Set("Expect", "100-continue")
		serve(p, r, nil)
		if got := up.Calls()[0].Header.Get("Expect"); (got != "") != proxy {
			t.Errorf("proxy_100_continue %v: upstream Expect %q", proxy, got)
		}
	}
}

func TestUpgradeCompileErrors(t *testing.T) {
	rc := rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c")))
	for _, tc := range []struct {
		name string
		ucs  []*hcmv3.HttpConnectionManager_UpgradeConfig
		want string
	}{
		{"CONNECT", []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("CONNECT", nil)}, "CONNECT is not supported"},
		{"custom filters", []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket", Filters: []*hcmv3.HttpFilter{{Name: "x"}}}},
			"custom filter chains"},
		{"duplicate", []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("websocket", nil), upgradeConfig("WebSocket", nil)}, "twice"},
		{"empty type", []*hcmv3.HttpConnectionManager_UpgradeConfig{upgradeConfig("", nil)}, "empty"},
	} {
		h := hcmWith(t)
		h.UpgradeConfigs = tc.ucs
		if _, err := Compile(h, rc, newFake(nil)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
	action := clusterAction("c")
	action.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "CONNECT", ConnectConfig: &routev3.RouteAction_UpgradeConfig_ConnectConfig{}}}
	if _, err := Compile(hcmWith(t), rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), action))), newFake(nil)); err == nil ||
		!strings.Contains(err.Error(), "connect_config is not supported") {
		t.Errorf("route connect_config: %v", err)
	}
}
