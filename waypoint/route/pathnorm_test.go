package route

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestCanonicalPath is Envoy's normalize_path on the examples of its
// test/common/http/path_utility_test.cc.
func TestCanonicalPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/xyz", "/xyz"},
		{"/x/y/z", "/x/y/z"},
		{"/a/b/../c", "/a/c"},
		{"/a/b/./c", "/a/b/c"},
		{"a/b/../c", "/a/c"},
		{"/a/b/../../../../c", "/c"},
		{`/a/..\c`, "/c"},
		{"/%c0%af", "/%c0%af"},
		{"/%5c%25", "/%5c%25"},
		{"/a/b/%2E%2E/c", "/a/c"},
		{"/a/b/%2E./c", "/a/c"},
		{"/a/b/%2E/c", "/a/b/c"},
		{"..", "/"},
		{"/../a/b", "/a/b"},
		{"/./a/b", "/a/b"},
		{"/A/B/C", "/A/B/C"},
		{"/a/b/%2e%2e/c", "/a/c"},
		{"/a/%2F%2f/c", "/a/%2F%2f/c"},
		// Chromium's table beyond Envoy's examples: raw bytes a path may not
		// carry are escaped (upper-case hex), escaped unreserved bytes are
		// decoded, and a literal '%' cannot pair with decoded hex digits.
		{"", "/"},
		{"/a b\"<>^`{|}", "/a%20b%22%3C%3E%5E%60%7B%7C%7D"},
		{"/caf\xc3\xa9", "/caf%C3%A9"},
		{"/%41%7a%2D%5f%7E%30", "/Az-_~0"},
		{"/%zz%4", "/%zz%4"},
		{"/%%30%30", "/%2500"},
		{"/%%341", "/%2541"},
		{"/%4%31", "/%2541"},
		{"/.well-known/x..y/.z", "/.well-known/x..y/.z"},
		{"/a/.../b", "/a/.../b"},
		{"/a/..", "/"},
		{"/a/.", "/a/"},
	} {
		got, ok := canonicalPath(tc.in)
		if !ok || got != tc.want {
			t.Errorf("canonicalPath(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
	for _, in := range []string{"/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc", "/a\x00b"} {
		if got, ok := canonicalPath(in); ok {
			t.Errorf("canonicalPath(%q) = %q, accepted; Envoy rejects it", in, got)
		}
	}
}

// TestPathNormalizationModes runs Istio's normalization integration test
// table (tests/integration/security/normalization_test.go) for each
// meshConfig.pathNormalization mode.
func TestPathNormalizationModes(t *testing.T) {
	type exp struct{ in, out string } // out "400": rejected
	cases := map[string][]exp{
		"NONE": {
			{"/", "/"}, {"/app#foo", "/app"}, {"/app/", "/app/"}, {"/app/../admin", "/app/../admin"}, {"/app", "/app"},
			{"/app//", "/app//"}, {"/app/%2f", "/app/%2f"}, {"/app%2f/", "/app%2f/"}, {"/xyz%30..//abc", "/xyz%30..//abc"},
			{"/app/%2E./admin", "/app/%2E./admin"}, {`/app\admin`, `/app\admin`}, {`/app/\/\/\admin`, `/app/\/\/\admin`},
			{`/%2Fapp%5cadmin%5Cabc`, `/%2Fapp%5cadmin%5Cabc`},
			{`/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`, `/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`},
			{`/app//../admin`, `/app//../admin`}, {`/app//../../admin`, `/app//../../admin`},
		},
		"BASE": {
			{"/", "/"}, {"/app#foo", "/app"}, {"/app/", "/app/"}, {"/app/../admin", "/admin"}, {"/app", "/app"},
			{"/app//", "/app//"}, {"/app/%2f", "/app/%2f"}, {"/app%2f/", "/app%2f/"}, {"/xyz%30..//abc", "/xyz0..//abc"},
			{"/app/%2E./admin", "/admin"}, {`/app\admin`, `/app/admin`}, {`/app/\/\/\admin`, `/app//////admin`},
			{`/%2Fapp%5cadmin%5Cabc`, `/%2Fapp%5cadmin%5Cabc`},
			{`/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`, `/%5Capp%2f%5c%2F..%2fadmin%5c/abc`},
			{`/app//../admin`, `/app/admin`}, {`/app//../../admin`, `/admin`}, {"/admin%00", "400"},
		},
		"MERGE_SLASHES": {
			{"/", "/"}, {"/app#foo", "/app"}, {"/app/", "/app/"}, {"/app/../admin", "/admin"}, {"/app", "/app"},
			{"/app//", "/app/"}, {"/app/%2f", "/app/%2f"}, {"/app%2f/", "/app%2f/"}, {"/xyz%30..//abc", "/xyz0../abc"},
			{"/app/%2E./admin", "/admin"}, {`/app\admin`, `/app/admin`}, {`/app/\/\/\admin`, `/app/admin`},
			{`/%2Fapp%5cadmin%5Cabc`, `/%2Fapp%5cadmin%5Cabc`},
			{`/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`, `/%5Capp%2f%5c%2F..%2fadmin%5c/abc`},
			{`/app//../admin`, `/app/admin`}, {`/app//../../admin`, `/admin`},
		},
		"DECODE_AND_MERGE_SLASHES": {
			{"/", "/"}, {"/app#foo", "/app"}, {"/app/", "/app/"}, {"/app/../admin", "/admin"}, {"/app", "/app"},
			{"/app//", "/app/"}, {"/app/%2f", "/app/"}, {"/app%2f/", "/app/"}, {"/xyz%30..//abc", "/xyz0../abc"},
			{"/app/%2E./admin", "/admin"}, {`/app\admin`, `/app/admin`}, {`/app/\/\/\admin`, `/app/admin`},
			{`/%2Fapp%5cadmin%5Cabc`, `/app/admin/abc`}, {`/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`, `/app/admin/abc`},
			{`/app//../admin`, `/app/admin`}, {`/app//../../admin`, `/admin`},
			{`/%c0%2e%c0%2e/admin`, `/%c0.%c0./admin`}, {`/%c0%2fadmin`, `/%c0/admin`},
			// "NotNormalized": look-alikes and double encodings stay.
			{`/0x2e0x2e/admin`, `/0x2e0x2e/admin`}, {`/%25c0%25ae%25c1%259cadmin`, `/%25c0%25ae%25c1%259cadmin`},
			{`/%252e%252e%252fadmin`, `/%252e%252e%252fadmin`}, {`/%c0%ae%c0%ae/admin`, `/%c0%ae%c0%ae/admin`},
			{`/.../admin`, `/.../admin`}, {`/..;/admin`, `/..;/admin`}, {`/admin;a=b/xyz`, `/admin;a=b/xyz`},
			{`/Admin`, `/Admin`}, {"/admin%00", "400"},
		},
	}
	// "PercentEncoded": %01..%ff; only unreserved characters, '.', '/' and
	// '\' (as '/') are decoded, the rest is kept as sent.
	for i := 1; i <= 0xff; i++ {
		in, out := fmt.Sprintf("/admin%%%.2x", i), fmt.Sprintf("/admin%%%.2x", i)
		if c := byte(i); unreserved(c) || c == '.' || c == '/' || c == '\\' {
			out = strings.ReplaceAll("/admin"+string(c), `\`, "/")
		}
		cases["DECODE_AND_MERGE_SLASHES"] = append(cases["DECODE_AND_MERGE_SLASHES"], exp{in, out})
	}
	for mode, exps := range cases {
		n, err := compilePathNormalization(istioMode(&hcmv3.HttpConnectionManager{}, mode))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range exps {
			got, verdict := n.apply(e.in)
			if verdict == pathReject {
				got = "400"
			}
			if got != e.out || verdict == pathRedirect {
				t.Errorf("%s: %q -> %q (verdict %d), want %q", mode, e.in, got, verdict, e.out)
			}
		}
	}
}

// TestPathNormalizationDefaults: an HCM without the fields normalizes
// nothing (Envoy's defaults); an unknown escaped-slash action is refused.
func TestPathNormalizationDefaults(t *testing.T) {
	n, err := compilePathNormalization(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, v := n.apply("/a/../%2F%64//b?q=/../#f"); got != "/a/../%2F%64//b?q=/../" || v != pathForward {
		t.Errorf("defaults: %q %d", got, v)
	}
	hcm := &hcmv3.HttpConnectionManager{PathWithEscapedSlashesAction: 42}
	if _, err := CompileWithOptions(hcm, rcOf(), newFake(nil), Options{}); err == nil || !strings.Contains(err.Error(), "path_with_escaped_slashes_action") {
		t.Errorf("unknown action: %v", err)
	}
}

// TestPathNormalizationLocalReplies: the answers the HCM gives before
// routing and filters, and the path the upstream gets.
func TestPathNormalizationLocalReplies(t *testing.T) {
	withAction := func(a hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction) *hcmv3.HttpConnectionManager {
		hcm := hcmWith(t)
		hcm.NormalizePath, hcm.MergeSlashes, hcm.PathWithEscapedSlashesAction = wrapperspb.Bool(true), true, a
		return hcm
	}
	rc := rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c")))
	grpc := []string{"content-type", "application/grpc"}
	for _, tc := range []struct {
		name     string
		action   hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction
		r        *http.Request
		status   int
		details  string
		location string
		upstream string
	}{
		{"reject", hcmv3.HttpConnectionManager_REJECT_REQUEST, req("GET", "/a%2fb"), 400, "path_normalization_failed", "", ""},
		{"reject needs a slash", hcmv3.HttpConnectionManager_REJECT_REQUEST, req("GET", "/a/./b%41"), 200, "via_upstream", "", "/a/bA"},
		{"redirect", hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT, req("GET", "/a%2F.%5C/b?x=%2F"), 307, "path_normalization_failed", "/a/b?x=%2F", ""},
		{"redirect gRPC", hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT, req("POST", "/a%2Fb", grpc...), 200, "path_normalization_failed", "", ""},
		{"forward", hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD, req("GET", "/a%2F%2fb"), 200, "via_upstream", "", "/a/b"},
		{"OPTIONS *", hcmv3.HttpConnectionManager_KEEP_UNCHANGED, req("OPTIONS", "*"), 404, "absolute_path", "", ""},
		{"absolute-form", hcmv3.HttpConnectionManager_KEEP_UNCHANGED, req("GET", "http://svc:80/x/../y?q"), 200, "via_upstream", "", "/y?q"},
		{"absolute-form without path", hcmv3.HttpConnectionManager_KEEP_UNCHANGED, req("GET", "http://svc?q"), 200, "via_upstream", "", "/?q"},
	} {
		up := newFake(nil)
		w, info := serve(compile(t, withAction(tc.action), rc, up), tc.r, nil)
		var got string
		if calls := up.Calls(); len(calls) > 0 {
			got = calls[0].URI
		}
		if w.Code != tc.status || info.Details != tc.details || w.Header().Get("Location") != tc.location || got != tc.upstream {
			t.Errorf("%s: %d %q Location %q upstream %q; want %d %q %q %q", tc.name, w.Code, info.Details,
				w.Header().Get("Location"), got, tc.status, tc.details, tc.location, tc.upstream)
		}
		if tc.name == "redirect gRPC" && w.Header().Get("Grpc-Status") != "13" {
			t.Errorf("%s: grpc-status %q, want 13 (INTERNAL, as Envoy)", tc.name, w.Header().Get("Grpc-Status"))
		}
	}
}

// TestConnectIsNotABadPath: a CONNECT (authority-form, no path) has no
// path for normalization to fail; it reaches the upgrade check, which
// refuses it as Envoy does without a CONNECT upgrade config (upgrade.go).
func TestConnectIsNotABadPath(t *testing.T) {
	up := newFake(nil)
	p := compile(t, istioMode(hcmWith(t), "MERGE_SLASHES"), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), up)
	r := req("CONNECT", "/")
	r.RequestURI, r.URL = "db.example:5432", &url.URL{Host: "db.example:5432"}
	if w, info := serve(p, r, nil); w.Code != 403 || info.Details != "upgrade_failed" || len(up.Calls()) != 0 {
		t.Errorf("CONNECT: %d details %q, %d upstream calls; want 403 upgrade_failed and none", w.Code, info.Details, len(up.Calls()))
	}
}

// TestRewriteOfNormalizedPath: prefix_rewrite works on the normalized path
// and x-envoy-original-path carries it.
func TestRewriteOfNormalizedPath(t *testing.T) {
	a := clusterAction("c")
	a.PrefixRewrite = "/v2/"
	hcm := istioMode(hcmWith(t), "MERGE_SLASHES")
	up := newFake(nil)
	p := compile(t, hcm, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/api/"), a))), up)
	if w, _ := serve(p, req("GET", "//x/..//api/%61/./b?c=./"), nil); w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	c := up.Calls()[0]
	if c.URI != "/v2/a/b?c=./" || c.Header.Get("X-Envoy-Original-Path") != "/api/a/b?c=./" {
		t.Errorf("upstream %q, original path %q", c.URI, c.Header.Get("X-Envoy-Original-Path"))
	}
}

// fuzzModes are the HCM settings FuzzNormalizePath checks: Istio's four
// modes and the two escaped-slash actions Istio does not use.
var fuzzModes = func() map[string]pathNormalization {
	m := map[string]pathNormalization{}
	for _, mode := range []string{"NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"} {
		m[mode], _ = compilePathNormalization(istioMode(&hcmv3.HttpConnectionManager{}, mode))
	}
	m["REJECT"] = pathNormalization{normalize: true, merge: true, escaped: hcmv3.HttpConnectionManager_REJECT_REQUEST}
	m["REDIRECT"] = pathNormalization{normalize: true, escaped: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT}
	return m
}()

// FuzzNormalizePath checks the normalizer's invariants on any target: no
// panic; idempotence (a normalized path normalizes to itself and is
// forwarded); no dot segments, NUL or escaped NUL after RFC 3986
// normalization; no "//" when merging; a leading '/'; no fragment; the
// query untouched.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{
		"/", "/a/b/../c", "/./deny/x", "/x/../deny/x", "//deny/x", "/%64eny/x", "/deny%2Fx", "/%2e/deny",
		"/deny/..%2f..", "/deny%00", `/a\..\b`, "/%%30%30", "/%4%31", "/a/.%2E/b?q=/../#f", "a/b", "..", "/%c0%2e%c0%2e/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		frag := strings.IndexByte(target, '#')
		query := ""
		if i := strings.IndexByte(target, '?'); i >= 0 && (frag < 0 || i < frag) {
			query = target[i:]
			if frag >= 0 {
				query = target[i:frag]
			}
		}
		for name, n := range fuzzModes {
			out, verdict := n.apply(target)
			if verdict == pathReject {
				continue
			}
			if again, v := n.apply(out); again != out || v != pathForward {
				t.Fatalf("%s: %q -> %q -> %q (verdict %d): not idempotent", name, target, out, again, v)
			}
			path, q, _ := strings.Cut(out, "?")
			if strings.ContainsRune(out, '#') || (query != "" && "?"+q != query) {
				t.Fatalf("%s: %q -> %q: fragment kept or query changed", name, target, out)
			}
			if n.normalize {
				checkCanonical(t, name, target, path)
			}
			checkUpstream(t, name, target, out, n.normalize)
			if n.merge && strings.Contains(path, "//") {
				t.Fatalf("%s: %q -> %q: slashes not merged", name, target, out)
			}
		}
	})
}

func checkCanonical(t *testing.T, mode, target, path string) {
	t.Helper()
	seg := "/" + path + "/"
	switch {
	case !strings.HasPrefix(path, "/"):
		t.Fatalf("%s: %q -> %q: no leading slash", mode, target, path)
	case strings.Contains(seg, "/./") || strings.Contains(seg, "/../"):
		t.Fatalf("%s: %q -> %q: dot segment left", mode, target, path)
	case strings.ContainsRune(path, 0) || strings.Contains(path, "%00"):
		t.Fatalf("%s: %q -> %q: NUL", mode, target, path)
	}
}

// checkUpstream: the request-target the upstream gets decodes to the same
// bytes as the normalized target (and is the same string after RFC 3986
// normalization, which leaves nothing to escape).
func checkUpstream(t *testing.T, mode, target, out string, exact bool) {
	t.Helper()
	op, oq, _ := strings.Cut(out, "?")
	if _, err := url.PathUnescape(op); err != nil || !strings.HasPrefix(op, "/") {
		return // the HTTP servers reject it, or the pipeline answers 404
	}
	var u url.URL
	setTarget(&u, out)
	sent := u.RequestURI()
	if exact && sent != out {
		t.Fatalf("%s: %q -> %q: sent upstream as %q", mode, target, out, sent)
	}
	sp, sq, _ := strings.Cut(sent, "?")
	ds, _ := url.PathUnescape(sp)
	do, _ := url.PathUnescape(op)
	if ds != do || sq != oq {
		t.Fatalf("%s: %q -> %q: sent upstream as %q", mode, target, out, sent)
	}
}
