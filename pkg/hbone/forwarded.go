package hbone

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// SetForwarded sets the Forwarded header HBONE uses to carry the original
// client address.
func SetForwarded(h http.Header, client net.IP) { SetForwardedHost(h, client, "") }

// SetForwardedHost is SetForwarded with the hostname of the Service the
// client addressed (";host=", as ztunnel sends it) when host is not "":
// the destination only sees a pod address and reports that Service in its
// telemetry if it is one the pod serves.
func SetForwardedHost(h http.Header, client net.IP, host string) {
	v := "for=" + client.String()
	if client.To4() == nil {
		v = `for="[` + client.String() + `]"`
	}
	if host != "" {
		v += ";host=" + host
	}
	h.Set("Forwarded", v)
}

// ParseForwarded extracts the client address from a Forwarded header
// ("for=10.0.0.1", "for=\"[::1]:80\"", possibly several elements: the first
// address wins). Whether to believe it is the caller's decision.
func ParseForwarded(h string) (netip.Addr, bool) {
	for _, elem := range strings.Split(h, ",") {
		for _, pair := range strings.Split(elem, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok || !strings.EqualFold(k, "for") {
				continue
			}
			v = strings.Trim(v, `"`)
			if ap, err := netip.ParseAddrPort(v); err == nil {
				return ap.Addr().Unmap(), true
			}
			v = strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")
			if a, err := netip.ParseAddr(v); err == nil {
				return a.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// ParseForwardedHost extracts the host of a Forwarded header (the first
// element's, unquoted); "" if none.
func ParseForwardedHost(h string) string {
	elem, _, _ := strings.Cut(h, ",")
	for _, pair := range strings.Split(elem, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && strings.EqualFold(k, "host") {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}
