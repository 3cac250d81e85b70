package compat

var httpBehaviour = Section{
	Title:       "HTTP through waypoints and gateways",
	FirstColumn: "behaviour",
	Entries: []Entry{
		{
			Feature: "WebSocket (`Connection: Upgrade`, `Upgrade: websocket`)",
			Status:  Supported,
			Notes:   "allowed by the listener's `upgrade_configs`, as Istio configures it; the upgrade request is routed, authorized and reported (`response_code` 101, bytes of the whole connection) like any request, and goes upstream over HTTP/1.1; after the 101 bytes flow both ways with half-closes passed on, until both sides are done; route timeouts end at the 101; not mirrored",
		},
		{
			Feature:   "other `Upgrade` protocols",
			Status:    NotYet,
			Qualifier: "(as Istio)",
			Notes:     "`403`, empty body, connection closed (Envoy's answer to an upgrade type the listener does not list)",
		},
		{
			Feature:   "WebSocket over HTTP/2 (extended CONNECT, RFC 8441)",
			Status:    NotYet,
			Qualifier: "(as Istio)",
			Notes:     "not offered to h2 clients (no `SETTINGS_ENABLE_CONNECT_PROTOCOL`), so they use HTTP/1.1 for WebSocket",
		},
		{
			Feature:   "`Upgrade: h2c` offers",
			Status:    Supported,
			Qualifier: "(as Envoy)",
			Notes:     "the offer is dropped (`Upgrade`, `Connection`, `HTTP2-Settings`) and the request served as HTTP/1.1; a server that would have switched to h2 answers in HTTP/1.1 instead",
		},
		{
			Feature:   "`CONNECT` method",
			Status:    NotYet,
			Qualifier: "(as Istio)",
			Notes:     "`403` (`404` where no route matches); neither forwarded nor terminated",
		},
		{
			Feature: "h2c with prior knowledge",
			Status:  Supported,
			Notes:   "through a waypoint the server gets HTTP/2; a gateway sends HTTP/1.1 upstream unless the request is gRPC (Istio's gateway uses the service port's protocol)",
		},
		{
			Feature: "`Expect: 100-continue`",
			Status:  Supported,
			Notes:   "forwarded (`proxy_100_continue`): the client's `100 Continue` is the server's, and a server that answers without reading the body never gets it; a server that ignores `Expect` receives the body after 1 s, as curl and Go clients wait",
		},
		{
			Feature: "trailers (HTTP/1.1 chunked, h2, gRPC)",
			Status:  Supported,
			Notes:   "both ways; an HTTP/1.1 client gets a response with trailers chunked (no `Content-Length`)",
		},
		{
			Feature: "chunked bodies, HTTP/1.1 pipelining",
			Status:  Supported,
		},
		{
			Feature: "server closes first (`Connection: close` read to EOF, HTTP/1.0, close-delimited bodies)",
			Status:  Supported,
		},
		{
			Feature: "server-sent events, gRPC streaming",
			Status:  Supported,
			Notes:   "every chunk is flushed as it arrives",
		},
		{
			Feature: "large bodies",
			Status:  Supported,
			Notes:   "streamed; up to 1 MiB of a request is kept for retries and mirrors",
		},
		{
			Feature:   "request header size limit",
			Status:    Supported,
			Qualifier: "(Envoy's default)",
			Notes:     "60 KiB (`max_request_headers_kb`); more gets `431`; not configurable",
		},
		{
			Feature:   "stream and connection idle timeouts",
			Status:    Supported,
			Qualifier: "(Envoy's defaults)",
			Notes:     "a request with no byte either way for 5 min (`stream_idle_timeout`; long polls and quiet gRPC streams included, as with Envoy) gets `408` or a reset; an idle mesh connection closes after 1 h; a WebSocket (upgraded) or TCP-proxied stream with no byte either way for 1 h is reset at both ends (`tcp_proxy` `idle_timeout` default); not configurable (Istio's `ProxyConfig`/EnvoyFilter overrides are not read)",
		},
		{
			Feature: "half-close after an upgrade, server side first",
			Status:  Supported,
			Notes:   "the server's half-close reaches the client and the client's direction stays open: what it sends afterwards, and its own half-close, reach the server, across HBONE too (`pkg/hbone` ends each direction of a stream on its own)",
		},
	},
}
