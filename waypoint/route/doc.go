package route

// Semantic choices, with the Envoy behaviour they follow.
//
// Path (before routing and the filters; pathnorm.go)
//   - The request target in absolute-form keeps only its path and query;
//     anything else not origin-form ("*") is 404, details absolute_path.
//     The fragment is dropped (Istio's Envoy strips it).
//   - HCM path_with_escaped_slashes_action (unset = KEEP_UNCHANGED): %2F and
//     %5C in the path are decoded and the request is forwarded, redirected
//     (307, Location = the normalized path; gRPC: 400) or rejected (400,
//     details path_normalization_failed).
//   - normalize_path (unset = false): Envoy's Chromium canonicalizer: dot
//     segments (also %2e) resolved, '\' as '/', escaped unreserved
//     characters decoded, other escapes kept as sent, %00 rejected (400).
//   - merge_slashes: runs of '/' collapse (an all-slash path becomes "/";
//     Envoy keeps "//").
//   - Routes, RBAC url_path and :path headers match the result; the router
//     forwards it (rewrites apply to it). The query is never changed.
//
// Matching
//   - Virtual host: exact domain, then the longest "*suffix" wildcard, then
//     the longest "prefix*" wildcard, then "*"; wildcards match at least one
//     character; case-insensitive; the port is part of the host unless the
//     HCM sets strip_any_host_port or the RouteConfiguration sets
//     ignore_port_in_host_matching. Duplicate domains are a compile error.
//   - Routes in order, first match wins. prefix matches the start of :path
//     including the query; path and safe_regex match :path without the query;
//     safe_regex is a full match (RE2 via Go regexp, compiled once);
//     case_sensitive=false applies to prefix/path only (ignored for regex, as
//     Envoy documents). path_separated_prefix, grpc and runtime_fraction
//     (default_value) are supported too.
//   - Headers: Envoy's HeaderUtility::matchHeaders: multi-valued headers are
//     joined with ","; a missing header matches only present_match:false (or,
//     inverted, present_match:true) unless treat_missing_header_as_empty;
//     invert_match negates the result. :method, :authority (Host), :scheme
//     and :path are matched as headers.
//   - query_parameters: first occurrence of the raw (not percent-decoded)
//     name; string_match on its raw value or present_match.
//   - No route: 404, empty body, flag NR, details route_not_found. The
//     filters before the router still run first (an RBAC denial wins over
//     NR, as in Envoy).
//
// Router
//   - weighted_clusters: rand % total_weight walked cumulatively (Envoy's
//     pick); per-cluster request/response header ops and host_rewrite_literal.
//   - Header mutations: each level removes first, then adds. Order: weighted
//     cluster, route, virtual host, route configuration (Envoy's default;
//     reversed below the cluster level with most_specific_header_mutations_wins).
//     APPEND_IF_EXISTS_OR_ADD appends, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD,
//     OVERWRITE_IF_EXISTS; deprecated append=false means overwrite; empty
//     values are skipped unless keep_empty_value. Values are literal: Envoy's
//     %COMMAND% substitutions are not interpreted (gap). Route response
//     header ops also apply to the router's local replies (504/503), direct
//     responses and redirects, as Envoy's finalizeResponseHeaders does.
//   - prefix_rewrite replaces the matched part of :path (the prefix; the whole
//     path for path/regex routes), the query is kept ("/prefix" -> "/" on
//     "/prefix/etc" gives "//etc", as Envoy). regex_rewrite substitutes in the
//     path without query (RE2 \1 references). Both add x-envoy-original-path
//     unless the router sets suppress_envoy_headers. host_rewrite_literal sets
//     :authority (after the header ops); append_x_forwarded_host is honoured.
//   - timeout: unset = Envoy's 15 s, 0 = none. It covers all attempts,
//     backoffs and the response body: before the response started -> 504
//     "upstream request timeout", flag UT; after -> the downstream stream is
//     reset (panic(http.ErrAbortHandler)), flag UT.
//   - retry_policy: num_retries defaults to 1; 5xx (any 5xx or no response:
//     connect failure, reset, per-try timeout), gateway-error (502/503/504 or
//     no response), reset, connect-failure, refused-stream (ErrRefusedStream),
//     retriable-4xx (409), retriable-status-codes, and the gRPC conditions
//     cancelled(1), deadline-exceeded(4), internal(13), resource-exhausted(8),
//     unavailable(14) read from grpc-status in the response headers
//     (trailers-only responses). ErrOverflow and ErrNoHealthyUpstream are
//     never retried (Envoy never retries overflow; no-host is a local reply).
//     When a retriable outcome meets an exhausted budget the last response is
//     forwarded (or the failure reply sent) with flag URX. per_try_timeout
//     covers an attempt until its response headers. Backoff is Envoy's
//     jittered exponential: rand % ((2^n - 1) * base), base 25 ms, max 10x
//     base (retry_back_off overrides). Unknown retry_on tokens are ignored.
//   - Request bodies stream to the first attempt (gRPC streaming works) while
//     up to Options.BodyBufferLimit (1 MiB) is kept; retries and mirrors
//     replay the kept bytes; larger bodies are not retried and their mirrors
//     fail.
//   - request_mirror_policies: sampled by runtime_fraction.default_value
//     (unset = 100 %), sent concurrently and fire-and-forget to the mirror
//     cluster with the final upstream headers, Host + "-shadow" before any
//     port ("foo:80" -> "foo-shadow:80") unless
//     disable_shadow_host_suffix_append; the route timeout applies, the
//     client's cancellation does not; responses are discarded.
//   - hash_policy: xxHash64 per policy combined as Envoy (rotl1(old) ^ new,
//     terminal stops once a hash exists): header (all values), cookie (value
//     without quotes; absent + ttl -> generated value hex(xxHash64(remote +
//     local address)) and Set-Cookie `name="v"; Max-Age=ttl; Path=p; HttpOnly`;
//     absent without ttl -> no hash), connection_properties.source_ip
//     (Peer.Addr, else RemoteAddr), query_parameter.
//   - redirect: scheme (scheme_redirect/https_redirect, original scheme from
//     x-forwarded-proto else :scheme), host_redirect, port_redirect (the
//     request host's port is dropped when a port is given or when the scheme
//     changes from its default port), path_redirect (keeps the query unless
//     strip_query or it has its own), prefix_rewrite, regex_rewrite,
//     response_code MOVED_PERMANENTLY=301 (default), FOUND=302, SEE_OTHER=303,
//     TEMPORARY_REDIRECT=307, PERMANENT_REDIRECT=308; empty body.
//   - direct_response: status and inline body (text/plain).
//   - Upstream failures: UF 503 "...reset reason: connection failure", UO 503
//     "...overflow", UH 503 "no healthy upstream", NC 503 (ErrClusterNotFound),
//     UR 503 (refused stream), UC 503 "...connection termination" (any other
//     error); client gone: flag DC, nothing written.
//   - Local replies to gRPC requests (content-type application/grpc*) with
//     status >= 400 become trailers-only gRPC replies (HTTP 200, grpc-status
//     from Envoy's httpToGrpcStatus: 400->13, 401->16, 403->7, 404->12,
//     429/502/503/504->14, else 2; grpc-message = body).
//   - Responses stream: hop-by-hop headers removed, body flushed per read,
//     upstream trailers forwarded (http.TrailerPrefix), so gRPC over h2 works;
//     request trailers go upstream too. Content-Length is dropped only when
//     trailers need chunked framing (an HTTP/1.x client).
//   - "Expect: 100-continue": with the HCM's proxy_100_continue the header
//     goes upstream and the client's 100 Continue follows the server's: the
//     body is read (which makes net/http answer 100) only when the
//     Upstream sends it (waypoint/proxy: after the server's 100). Without,
//     Envoy's default: the header is dropped and the client gets 100 as
//     soon as the body is read.
//
// Upgrades (upgrade.go)
//   - An upgrade request is an HTTP/1.1 request with "upgrade" in Connection
//     and an Upgrade header, whose value is its type; CONNECT requests are
//     upgrades of type CONNECT. "Upgrade: h2c" is not one: Envoy's HTTP/1
//     codec drops the offer (Upgrade, Connection, HTTP2-Settings) and serves
//     the request as HTTP/1.1, and so does the hop-by-hop header removal.
//   - Allowed types: the HCM's upgrade_configs (enabled defaults to true),
//     overridden per type by the route action's upgrade_configs. Once a route
//     matched, an upgrade it does not allow gets 403 with no body, details
//     upgrade_failed, and the connection closes (Envoy); no route: 404 NR.
//   - An allowed upgrade goes through the filters and the router like any
//     request (routing, RBAC, fault, retries, telemetry), upstream over
//     HTTP/1.1 whatever the cluster's protocol, with "Connection: Upgrade"
//     and its Upgrade header; it is not mirrored. A 101 goes downstream
//     with the response header mutations; then bytes flow both ways, each
//     half-close passed on (hbone.Pipe), until both directions ended; the
//     route timeout stops at the 101 (Envoy starts it at the end of the
//     request, which an upgraded stream reaches only when it closes). Any
//     other answer is an ordinary response. A 101 to a request that did
//     not ask for an upgrade is an upstream error (503 UC).
//   - Not supported (compile error): the CONNECT type (Envoy terminating or
//     forwarding CONNECT), upgrade filter chains, connect_config. WebSocket
//     over HTTP/2 (extended CONNECT, RFC 8441) is not offered: the waypoint
//     does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL, as Envoy does
//     not without allow_connect, so h2 clients use HTTP/1.1 for WebSocket.
//
// Filters (run only when present in the HCM's http_filters; per-route config
// is the most specific of route, virtual host, route configuration
// typed_per_filter_config under the filter's name or its canonical name;
// envoy.config.route.v3.FilterConfig{disabled:true} turns a filter off)
//   - fault: delay (fixed_delay, percentage) then abort (http_status or
//     grpc_status, percentage, body "fault filter abort"), flags DI / FI.
//     FractionalPercent HUNDRED / TEN_THOUSAND / MILLION, sampled as
//     rand % denominator < numerator; an unset percentage is 0 % (Envoy).
//     headers and upstream_cluster conditions are honoured. The delay happens
//     before the router, so the route timeout does not include it: a 7 s
//     delay with a 3 s route timeout returns the upstream response after
//     ~7 s (the 504 in Istio's Bookinfo task comes from the calling app).
//   - cors: see corsFilter.
//   - rbac: see rbacFilter. Denial: 403 "RBAC: access denied", details
//     rbac_access_denied_matched_policy[<name>|none], no response flag (Envoy
//     sets none). ALLOW with no matching policy denies; no ALLOW filter
//     allows; a filter without rules does not enforce. principal
//     authenticated.principal_name matches the peer's SPIFFE URI; remote_ip,
//     direct_remote_ip and source_ip match Peer.Addr; destination_port/ip
//     match Peer.Dest (else the connection's local address). metadata
//     principals/permissions read the istio_authn metadata jwt_authn
//     publishes (authn.go). shadow_rules are evaluated before the rules,
//     never enforced; their decision is Info.DryRun.
//   - jwt_authn: see jwtFilter. The first rule whose prefix or path
//     matches gives the requirement (provider_name, requires_any,
//     requires_all, allow_missing, allow_missing_or_failed); a failed one
//     is 401 with Envoy's status message as body, details
//     jwt_authn_access_denied{<message with _>}, www-authenticate Bearer.
//     Tokens from the provider's from_headers (value_prefix), from_params,
//     from_cookies (default: Authorization "Bearer ", access_token);
//     removed when verified unless forward (headers only, as Envoy).
//     Asymmetric algorithms only (go-jose); exp/nbf with clock_skew_seconds
//     (default 60); remote_jwks fetched by the proxy (JWKSCache), never
//     accepted unverified. Not supported: requirement_map,
//     filter_state_rules, subjects, require_expiration, max_lifetime,
//     claim_to_headers, per-route config.
//   - local_ratelimit: see localRateLimitFilter. Token buckets live in the
//     compiled Pipeline, so a new config (any xDS update of the chain)
//     starts them full again, as Envoy does on a filter or route update.
//     Not supported (compile error): descriptors, rate_limits,
//     local_rate_limit_per_downstream_connection, local_cluster_rate_limit;
//     runtime keys and stat_prefix are not read.
//   - ratelimit (global): see globalRateLimitFilter. Descriptors come from
//     the rate_limits of the route action and virtual host (actions
//     request_headers, generic_key, header_value_match, remote_address,
//     destination_cluster); the service is asked with one unary gRPC call
//     over the Upstream (grpcUnary). Not supported (compile error): stage
//     other than 0, request_type other than both,
//     enable_x_ratelimit_headers, enable_retry_after_header,
//     failure_mode_deny_percent, the filter's own rate_limits,
//     metadata_namespace, RateLimitPerRoute, and in rate_limits
//     disable_key, limit, hits_addend, apply_on_stream_done,
//     x_ratelimit_option and the other actions.
//
// Not implemented (compile error when configured, unless noted): cluster_header,
// cluster_specifier_plugin, auto/regex host rewrites, header_delay/abort,
// RBAC matcher API and CEL conditions, route-config level mirror policies,
// retry host predicates/priorities/budgets (ignored), x-envoy-* request
// headers (ignored), CONNECT (see Upgrades),
// x-forwarded-for/x-request-id generation (the proxy's job), per-route
// RBACPerRoute overrides (ignored: the listener's RBAC filters always apply).
