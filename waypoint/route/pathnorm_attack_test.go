package route

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// istioMode sets the HCM fields the way Istio maps
// meshConfig.pathNormalization.normalization (and control/waypoint does).
func istioMode(hcm *hcmv3.HttpConnectionManager, mode string) *hcmv3.HttpConnectionManager {
	hcm.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_KEEP_UNCHANGED
	switch mode {
	case "NONE":
		hcm.NormalizePath = wrapperspb.Bool(false)
	case "BASE":
		hcm.NormalizePath = wrapperspb.Bool(true)
	case "MERGE_SLASHES":
		hcm.NormalizePath, hcm.MergeSlashes = wrapperspb.Bool(true), true
	case "DECODE_AND_MERGE_SLASHES":
		hcm.NormalizePath, hcm.MergeSlashes = wrapperspb.Bool(true), true
		hcm.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
	default:
		panic(mode)
	}
	return hcm
}

// pathPolicy is an RBAC filter with one policy on url_path prefix, as
// Istio translates `paths: ["<prefix>*"]`.
func pathPolicy(action rbaccfgv3.RBAC_Action, prefix string) *rbacv3.RBAC {
	perm := &rbaccfgv3.Permission{Rule: &rbaccfgv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: prefixSM(prefix)}}}}
	return &rbacv3.RBAC{Rules: &rbaccfgv3.RBAC{Action: action, Policies: map[string]*rbaccfgv3.Policy{
		"ns[default]-policy[paths]-rule[0]": {
			Permissions: []*rbaccfgv3.Permission{perm},
			Principals:  []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_Any{Any: true}}},
		},
	}}}
}

// wireBackend is a real HTTP server that records the request-target each
// request arrived with.
type wireBackend struct {
	*httptest.Server
	mu   sync.Mutex
	got  []string
	host string
}

func newWireBackend(t *testing.T) *wireBackend {
	b := &wireBackend{}
	b.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.got = append(b.got, r.RequestURI)
		b.mu.Unlock()
	}))
	t.Cleanup(b.Close)
	u, _ := url.Parse(b.URL)
	b.host = u.Host
	return b
}

// last returns the request-target of the latest request ("" when none
// reached the backend since the previous call).
func (b *wireBackend) last() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.got) == 0 {
		return ""
	}
	s := b.got[len(b.got)-1]
	b.got = nil
	return s
}

// rawRequest writes an HTTP/1.1 request with a verbatim request-target (no
// client library cleans it) and returns the response status.
func rawRequest(t *testing.T, addr, method, target string, header ...string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: svc.default.svc.cluster.local\r\nConnection: close\r\n%s\r\n", method, target, strings.Join(header, ""))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	resp.Body.Close()
	return resp
}

type attack struct {
	mode     string
	target   string
	status   int
	upstream string // request-target the backend got ("" = none)
}

// runAttacks serves policy's pipeline in each case's mode on a real HTTP/1
// listener in front of a real backend.
func runAttacks(t *testing.T, policy *rbacv3.RBAC, name string, cases []attack) {
	backend := newWireBackend(t)
	up := &httpUpstream{rt: backend.Client().Transport, host: backend.host}
	rc := rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c")))
	servers := map[string]string{}
	for _, mode := range []string{"NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"} {
		p := compile(t, istioMode(hcmWith(t, rbacF(t, name, policy)), mode), rc, up)
		s := httptest.NewServer(p)
		t.Cleanup(s.Close)
		servers[mode] = s.Listener.Addr().String()
	}
	for _, a := range cases {
		resp := rawRequest(t, servers[a.mode], "GET", a.target)
		got := backend.last()
		if resp.StatusCode != a.status || got != a.upstream {
			t.Errorf("%s %q: status %d, backend got %q; want %d, %q", a.mode, a.target, resp.StatusCode, got, a.status, a.upstream)
		}
	}
}

// TestPathNormalizationAttacks sends the paths that reached the backend
// past a DENY /deny* policy (issue 13, H2) and past an ALLOW /public/*
// policy, in each of Istio's pathNormalization modes.
func TestPathNormalizationAttacks(t *testing.T) {
	t.Run("deny", func(t *testing.T) {
		runAttacks(t, pathPolicy(rbaccfgv3.RBAC_DENY, "/deny"), "rbac-deny", []attack{
			{"BASE", "/deny/x", 403, ""},
			{"BASE", "/./deny/x", 403, ""},
			{"BASE", "/x/../deny/x", 403, ""},
			{"BASE", "/%64eny/x", 403, ""},
			{"BASE", "/%2e/deny", 403, ""},
			{"BASE", "/%2E%2e/deny", 403, ""},
			{"BASE", `/x\..\deny`, 403, ""},
			{"BASE", "/deny/..%2f..", 403, ""},
			{"BASE", "http://svc/./deny/x", 403, ""}, // absolute-form
			{"BASE", "/ok%00", 400, ""},
			{"BASE", "/deny%00", 400, ""},
			{"BASE", "/ok/./a/../b?q=/../deny&r=%2e", 200, "/ok/b?q=/../deny&r=%2e"}, // query untouched
			{"BASE", "/ok#/../../deny", 200, "/ok"},                                  // fragment dropped
			{"BASE", "/%7Eu/%41", 200, "/~u/A"},                                      // unreserved decoded
			{"BASE", "/a%2Fb%3f", 200, "/a%2Fb%3f"},                                  // reserved kept, case kept
			{"BASE", "//deny/x", 200, "//deny/x"},                                    // BASE keeps slashes, as Istio
			{"MERGE_SLASHES", "//deny/x", 403, ""},
			{"MERGE_SLASHES", "/.//deny", 403, ""},
			{"MERGE_SLASHES", "/ok//a///b/", 200, "/ok/a/b/"},
			{"MERGE_SLASHES", "/%2Fdeny", 200, "/%2Fdeny"}, // escaped slash kept (KEEP_UNCHANGED)
			{"DECODE_AND_MERGE_SLASHES", "/deny%2Fx", 403, ""},
			{"DECODE_AND_MERGE_SLASHES", "/%2Fdeny/x", 403, ""},
			{"DECODE_AND_MERGE_SLASHES", "/x%2F..%2Fdeny", 403, ""},
			{"DECODE_AND_MERGE_SLASHES", "/x%5c..%5Cdeny", 403, ""},
			{"DECODE_AND_MERGE_SLASHES", "/deny/..%2f..", 200, "/"},
			{"DECODE_AND_MERGE_SLASHES", "/deny%00", 400, ""},
			{"NONE", "/./deny/x", 200, "/./deny/x"}, // NONE: policy sees what the backend sees
			{"NONE", "/deny/x", 403, ""},
		})
	})
	t.Run("allow", func(t *testing.T) {
		runAttacks(t, pathPolicy(rbaccfgv3.RBAC_ALLOW, "/public/"), "rbac-allow", []attack{
			{"BASE", "/public/x", 200, "/public/x"},
			{"BASE", "/public/../admin", 403, ""},
			{"BASE", "/public/%2e%2e/admin", 403, ""},
			{"BASE", "/public/.%2E/admin", 403, ""},
			{"BASE", `/public\..\admin`, 403, ""},
			{"BASE", "/%70ublic/x", 200, "/public/x"},
			{"BASE", "/public/..%2fadmin", 200, "/public/..%2fadmin"}, // KEEP_UNCHANGED, as Istio
			{"DECODE_AND_MERGE_SLASHES", "/public/..%2fadmin", 403, ""},
			{"DECODE_AND_MERGE_SLASHES", "/public%2F..%2F..%2Fadmin", 403, ""},
			{"DECODE_AND_MERGE_SLASHES", "/public%2Fx", 200, "/public/x"},
			// NONE forwards what policy saw; the proxy must not decode %2F
			// while escaping the '' Go will not send raw.
			{"NONE", `/public/..%2F..%2Fadmin\`, 200, "/public/..%2F..%2Fadmin%5C"},
		})
	})
}
