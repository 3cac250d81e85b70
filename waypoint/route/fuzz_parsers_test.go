package route

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzRequestParsers covers the small parsers the router runs on request
// data (header values for range matches, the raw query, the Host header)
// against reference implementations: no panic, parseInt64 agrees with
// strconv wherever it accepts (and accepts every value below 2^62),
// firstQueryValue finds what a plain split finds, and stripPort only ever
// removes a ":..." suffix (it does not validate the port).
func FuzzRequestParsers(f *testing.F) {
	for _, s := range []string{"0", "-1", "+42", "9223372036854775807", "-9223372036854775808", "4611686018427387904",
		"", "-", "+", "1e3", " 1", "a=1&b=2&a=3", "a&a=1", "=x&&b", "[::1]:80", "::1", "example.com:8080", "[::1]", "host:"} {
		f.Add(s, "a")
	}
	f.Fuzz(func(t *testing.T, s, name string) {
		n, err := parseInt64(s)
		ref, rerr := strconv.ParseInt(s, 10, 64)
		if err == nil && (rerr != nil || n != ref) {
			t.Fatalf("parseInt64(%q) = %d, strconv: %d %v", s, n, ref, rerr)
		}
		if err != nil && rerr == nil && ref > -(1<<62) && ref < 1<<62 {
			t.Fatalf("parseInt64(%q) refused %d", s, ref)
		}

		val, ok := firstQueryValue(s, name)
		var rval string
		rok := false
		for _, kv := range strings.Split(s, "&") {
			if k, v, _ := strings.Cut(kv, "="); k == name {
				rval, rok = v, true
				break
			}
		}
		// Envoy requires a query parameter name (min_len 1).
		if name != "" && (ok != rok || val != rval) {
			t.Fatalf("firstQueryValue(%q, %q) = %q %v, want %q %v", s, name, val, ok, rval, rok)
		}

		host := stripPort(s)
		if !strings.HasPrefix(s, host) {
			t.Fatalf("stripPort(%q) = %q", s, host)
		}
		if rest := s[len(host):]; rest != "" && rest[0] != ':' {
			t.Fatalf("stripPort(%q) = %q removed %q, not a port", s, host, rest)
		}
	})
}
