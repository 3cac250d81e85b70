package route

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Path normalization is what Envoy's HttpConnectionManager does to :path
// before routing and before any HTTP filter (ConnectionManagerUtility::
// maybeNormalizePath), set by the HCM's normalize_path, merge_slashes and
// path_with_escaped_slashes_action. Routes and RBAC match the result and
// the router forwards it, so the upstream gets the path policy was checked
// on; a path matched raw could be spelled so that policy and upstream
// disagree ("/./deny", "/x/../deny", "/%64eny").

// pathNormalization is the compiled HCM path handling.
type pathNormalization struct {
	normalize bool // normalize_path: RFC 3986 dot segments and unreserved escapes
	merge     bool // merge_slashes
	escaped   hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction
}

type pathVerdict uint8

const (
	pathForward  pathVerdict = iota
	pathReject               // 400 path_normalization_failed
	pathRedirect             // 307 to the normalized path
)

func compilePathNormalization(hcm *hcmv3.HttpConnectionManager) (pathNormalization, error) {
	n := pathNormalization{
		// Unset normalize_path is false, Envoy's runtime default.
		normalize: hcm.GetNormalizePath().GetValue(),
		merge:     hcm.GetMergeSlashes(),
		escaped:   hcm.GetPathWithEscapedSlashesAction(),
	}
	switch n.escaped {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT:
		// Envoy's runtime default is KEEP_UNCHANGED.
		n.escaped = hcmv3.HttpConnectionManager_KEEP_UNCHANGED
	case hcmv3.HttpConnectionManager_KEEP_UNCHANGED, hcmv3.HttpConnectionManager_REJECT_REQUEST,
		hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT, hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
	default:
		return n, fmt.Errorf("unknown path_with_escaped_slashes_action %d", n.escaped)
	}
	return n, nil
}

// apply normalizes an origin-form request target in Envoy's order:
// escaped slashes, then RFC 3986 normalization, then merging slashes. The
// fragment is dropped (Istio runs Envoy with
// http_reject_path_with_fragment=false, which strips it); the query is
// never changed.
func (n pathNormalization) apply(target string) (string, pathVerdict) {
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	path, query := target, ""
	if i := strings.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	orig, verdict := path, pathForward
	if n.escaped != hcmv3.HttpConnectionManager_KEEP_UNCHANGED {
		var found bool
		if path, found = unescapeSlashes(path); found {
			switch n.escaped {
			case hcmv3.HttpConnectionManager_REJECT_REQUEST:
				return target, pathReject
			case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
				verdict = pathRedirect
			}
		}
	}
	if n.normalize {
		var ok bool
		if path, ok = canonicalPath(path); !ok {
			return target, pathReject
		}
	}
	if n.merge {
		path = mergeSlashes(path)
	}
	if path == orig {
		return target, verdict
	}
	return path + query, verdict
}

// unescapeSlashes decodes %2F and %5C (either case) in path, as Envoy's
// PathUtil::unescapeSlashes; found reports whether there was any.
func unescapeSlashes(path string) (string, bool) {
	if !strings.Contains(path, "%") {
		return path, false
	}
	var b []byte
	for i := 0; i < len(path); i++ {
		if path[i] == '%' && i+2 < len(path) {
			var c byte
			switch path[i+1 : i+3] {
			case "2F", "2f":
				c = '/'
			case "5C", "5c":
				c = '\\'
			}
			if c != 0 {
				if b == nil {
					b = append(make([]byte, 0, len(path)), path[:i]...)
				}
				b = append(b, c)
				i += 2
				continue
			}
		}
		if b != nil {
			b = append(b, path[i])
		}
	}
	if b == nil {
		return path, false
	}
	return string(b), true
}

// mergeSlashes collapses each run of '/' into one, as Envoy's merge_slashes
// does, except that an all-slash path becomes "/" (Envoy keeps "//").
func mergeSlashes(path string) string {
	if !strings.Contains(path, "//") {
		return path
	}
	b := make([]byte, 0, len(path))
	for i := 0; i < len(path); i++ {
		if path[i] == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, path[i])
	}
	return string(b)
}

// canonicalPath is Envoy's normalize_path (PathUtil::canonicalPath, its
// snapshot of Chromium's URL path canonicalizer): "." and ".." segments
// (also spelled %2e) are resolved and never climb above the root, '\' is a
// '/', escaped unreserved characters (ALPHA DIGIT - _ ~) are decoded, other
// escapes are kept as sent (hex case too), characters a path may not carry
// raw are percent-encoded, and a missing leading '/' is added. ok is false
// for an escaped or raw NUL, which Envoy rejects.
func canonicalPath(path string) (string, bool) {
	if isCanonical(path) {
		return path, true
	}
	c := canonicalizer{in: path, out: make([]byte, 0, len(path)+4), pct: -1}
	ok := true
	if path == "" || !isSlash(path[0]) {
		c.out = append(c.out, '/')
	}
	for i := 0; i < len(path); i++ {
		ch := path[i]
		if n := dotLen(path, i); n > 0 {
			i = c.dot(i, n)
			continue
		}
		switch {
		case ch == '\\':
			c.out = append(c.out, '/')
		case ch == '%':
			var valid bool
			i, valid = c.escape(i)
			ok = ok && valid
		case ch == 0:
			c.out = append(c.out, "%00"...)
			ok = false
		case mustEscape(ch):
			c.out = append(c.out, '%', upperHex[ch>>4], upperHex[ch&15])
		default:
			c.out = append(c.out, ch)
		}
	}
	return string(c.out), ok
}

type canonicalizer struct {
	in  string
	out []byte
	pct int // index in out of the last '%' that began no valid escape; -1: none
}

// dot handles a dot of n input bytes ("." or "%2e") at in[i] and returns
// the index of the last input byte it consumed.
func (c *canonicalizer) dot(i, n int) int {
	if len(c.out) == 0 || c.out[len(c.out)-1] != '/' {
		c.out = append(c.out, '.') // part of a name: "a.b"
		return i + n - 1
	}
	after := i + n
	switch {
	case after == len(c.in): // "/." at the end
		return after - 1
	case isSlash(c.in[after]): // "/./"
		return after
	}
	if m := dotLen(c.in, after); m > 0 {
		end := after + m
		if end == len(c.in) { // "/.." at the end
			c.up()
			return end - 1
		}
		if isSlash(c.in[end]) { // "/../"
			c.up()
			return end
		}
	}
	c.out = append(c.out, '.') // "/.x", "/..x"
	return i + n - 1
}

// up drops the last segment of out (which ends with '/'), never the root.
func (c *canonicalizer) up() {
	i := len(c.out) - 1
	if i == 0 {
		return
	}
	for i--; i > 0 && c.out[i] != '/'; i-- {
	}
	c.out = c.out[:i+1]
	if c.pct >= len(c.out) {
		c.pct = -1
	}
}

// escape handles the '%' at in[i]; it returns the index of the last input
// byte it consumed, and false for an escaped NUL.
func (c *canonicalizer) escape(i int) (int, bool) {
	v, ok := unhex2(c.in, i+1)
	if !ok {
		// Not an escape: kept as it is (Chromium's permissive choice).
		c.pct = len(c.out)
		c.out = append(c.out, '%')
		return i, true
	}
	if unreserved(v) {
		c.out = append(c.out, v)
		c.fixNested(i + 3)
		return i + 2, true
	}
	c.out = append(c.out, c.in[i:i+3]...)
	return i + 2, v != 0
}

// fixNested stops a decoded byte from completing an escape with an earlier
// literal '%': "%%34%31" must not become "%41", which a second decoding
// (the upstream's, or ours on a re-sent request) would read as "A". That
// '%' becomes "%25", as Chromium's CheckForNestedEscapes does; next is the
// input index after the decoded escape.
func (c *canonicalizer) fixNested(next int) {
	p := c.pct
	if p < 0 {
		return
	}
	switch len(c.out) - p {
	case 2: // "%X" + the next input byte
		if next >= len(c.in) || !isHex(c.out[p+1]) || !isHex(c.in[next]) {
			return
		}
	case 3: // "%XY"
		if !isHex(c.out[p+1]) || !isHex(c.out[p+2]) {
			return
		}
	default:
		return
	}
	c.out = slices.Insert(c.out, p+1, '2', '5')
	c.pct = -1
}

// isCanonical reports, without allocating, that canonicalPath would return
// path unchanged: the common case.
func isCanonical(path string) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	for i := 1; i < len(path); i++ {
		switch ch := path[i]; {
		case ch == '.' && path[i-1] == '/', ch == '%', ch == '\\', ch == 0, mustEscape(ch):
			return false
		}
	}
	return true
}

// dotLen is the length of a dot at s[i]: 1 for ".", 3 for "%2e"/"%2E", else 0.
func dotLen(s string, i int) int {
	switch {
	case s[i] == '.':
		return 1
	case s[i] == '%' && i+2 < len(s) && s[i+1] == '2' && (s[i+2] == 'e' || s[i+2] == 'E'):
		return 3
	}
	return 0
}

func isSlash(c byte) bool { return c == '/' || c == '\\' }

// unreserved: RFC 3986 unreserved characters except '.', which dotLen
// handles. Escaped, they are decoded.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '~'
}

// mustEscape: bytes Chromium's path table percent-encodes (controls, space,
// " # < > ? ^ ` { | } DEL and non-ASCII). NUL, '%' and '\' have their own
// handling.
func mustEscape(c byte) bool {
	switch c {
	case ' ', '"', '#', '<', '>', '?', '^', '`', '{', '|', '}':
		return true
	}
	return c < 0x20 || c >= 0x7f
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex2(s string, i int) (byte, bool) {
	if i+1 >= len(s) || !isHex(s[i]) || !isHex(s[i+1]) {
		return 0, false
	}
	return unhex(s[i])<<4 | unhex(s[i+1]), true
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

const upperHex = "0123456789ABCDEF"

// requestTarget is the request's target in origin-form (path and query) as
// Envoy's codec gives it: absolute-form ("http://host/p?q", from proxies)
// keeps its path and query ("/" when it has none). Anything else that is
// not origin-form ("*" of OPTIONS) is returned as it is and answered 404,
// as Envoy does.
func requestTarget(r *http.Request) string {
	t := r.RequestURI
	switch {
	case strings.HasPrefix(t, "/"):
		return t
	case t == "" || r.Method == http.MethodConnect:
		// Requests built in-process, and CONNECT's authority-form (no path).
		return r.URL.RequestURI()
	}
	if _, rest, ok := strings.Cut(t, "://"); ok {
		if i := strings.IndexAny(rest, "/?#"); i >= 0 && rest[i] == '/' {
			return rest[i:]
		} else if i >= 0 {
			return "/" + rest[i:]
		}
		return "/"
	}
	return t
}

// setTarget points u at the origin-form target p so that the upstream gets
// p's bytes: the (normalized, rewritten) path that was matched. Nothing is
// decoded on the way: net/url would rebuild a path it cannot send as
// given from its decoded form (turning "%2F" into "/"), so the bytes a URL
// path may not carry raw (only NONE leaves any, e.g. '\') are
// percent-encoded instead.
func setTarget(u *url.URL, p string) {
	if u.RequestURI() == p {
		return // sent as p already; a CONNECT keeps its authority-form
	}
	path, query, hasQuery := strings.Cut(p, "?")
	raw := escapeUnsafe(path)
	dec, err := url.PathUnescape(raw)
	if err != nil {
		// Invalid escaping: only a request built in-process can carry it
		// here (the HTTP servers reject it).
		dec, raw = path, ""
	}
	u.Opaque, u.Path, u.RawPath = "", dec, raw
	u.RawQuery, u.ForceQuery = query, hasQuery && query == ""
	u.Fragment, u.RawFragment = "", ""
}

// escapeUnsafe percent-encodes the bytes net/url refuses raw in a path,
// keeping everything else, escapes included, as it is.
func escapeUnsafe(path string) string {
	var b []byte
	for i := 0; i < len(path); i++ {
		c := path[i]
		safe := unreserved(c) || c == '.' || c == '%' || strings.IndexByte("/!$&'()*+,:;=@[]", c) >= 0
		switch {
		case !safe:
			if b == nil {
				b = append(make([]byte, 0, len(path)+8), path[:i]...)
			}
			b = append(b, '%', upperHex[c>>4], upperHex[c&15])
		case b != nil:
			b = append(b, c)
		}
	}
	if b == nil {
		return path
	}
	return string(b)
}
