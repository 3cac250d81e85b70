package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/gorilla/websocket"

	"github.com/weft-mesh/weft/internal/await"
)

// wsEcho is a gorilla/websocket server answering every message with
// prefix and the message.
func wsEcho(up websocket.Upgrader, prefix string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte(prefix), msg...)); err != nil {
				return
			}
		}
	})
}

// wsBackend is a WebSocket server on its own "pod IP" naming itself in
// its answers: one version of the service.
func wsBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(podIP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := httpServer(wsEcho(websocket.Upgrader{}, name+": "))(ln)
	t.Cleanup(func() { srv.Close() })
	return &backend{name: name, addr: netip.MustParseAddrPort(ln.Addr().String())}
}

// TestUpgradeRoutedAndReported: the upgrade request is routed like any
// request (a header match picks v2), and reported once its connection
// ends: response code 101, the destination, and the bytes of the
// upgraded connection in the access log.
func TestUpgradeRoutedAndReported(t *testing.T) {
	e := newEnv(t)
	e.subsets(map[string]*backend{"v1": wsBackend(t, "chat-v1"), "v2": wsBackend(t, "chat-v2")})
	canary := routeTo("default/chat.0", clusterName("v2"))
	canary.Match.Headers = []*routev3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "yes"}}}}}
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, canary, routeTo("default/chat.1", clusterName("v1"))))

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return e.dialConn(ctx, vipAuthority()) }}
	c, _, err := d.DialContext(ctx, "ws://"+svcHostPort+"/chat", http.Header{"X-Canary": {"yes"}})
	if err != nil {
		t.Fatalf("websocket through the waypoint: %v", err)
	}
	msg := strings.Repeat("m", 1000)
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.ReadMessage(); err != nil || string(got) != "chat-v2: "+msg {
		t.Fatalf("reply %.20q... (%v), want it from chat-v2", got, err)
	}
	c.Close()

	want := map[string]string{"response_code": "101", "destination_workload": "chat-v2", "request_protocol": "http"}
	await.True(t, "the upgrade counted", func() bool { return counterValue(t, e, want) == 1 })
	await.True(t, "the 101 in the access log", func() bool { return strings.Contains(e.accessLog(), `"response_code":101`) }) // logged after the metrics
	var line map[string]any
	sc := bufio.NewScanner(strings.NewReader(e.accessLog()))
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("access log line is not JSON: %q", sc.Text())
		}
	}
	if line["route_name"] != "default/chat.0" || line["response_code"] != float64(101) ||
		line["bytes_received"].(float64) < float64(len(msg)) || line["bytes_sent"].(float64) < float64(len(msg)) {
		t.Fatalf("access log line %v: want route default/chat.0, 101 and the upgraded bytes both ways", line)
	}
}
