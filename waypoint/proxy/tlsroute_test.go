package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// clientHello is the first TLS record a client asking for serverName
// sends (the handshake goes no further: nobody answers it).
func clientHello(t *testing.T, serverName string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		// Never verified: nobody answers; an empty ServerName needs it.
		tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
		c.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// startDigestBackend is a TCP backend on a pod IP that answers each
// connection, once the client closes its side, with its name and the
// SHA-256 of what it read: which backend got the bytes, and whether they
// arrived unchanged.
func startDigestBackend(t *testing.T, name string) netip.AddrPort {
	ln := startReplyBackend(t, nil, func(b []byte) []byte { return []byte(digest(name, b)) })
	return mustAddrPort(ln.Addr().String())
}

func digest(name string, b []byte) string { return fmt.Sprintf("%s:%x", name, sha256.Sum256(b)) }

// TestTLSRouteBySNI: a service port with VirtualService tls routes picks
// the chain by the ClientHello's SNI (exact name, then wildcard, then the
// port's own chain) and forwards the ClientHello unchanged, without
// answering it; bytes that are no ClientHello take the port's own chain.
func TestTLSRouteBySNI(t *testing.T) {
	e := newEnv(t)
	const tlsVIP, tlsPort = "10.96.0.40", 443
	base := "secure.default.svc.cluster.local:443"
	for _, name := range []string{"a", "b", "default"} {
		cl := "outbound|443|" + name + "|secure.default.svc.cluster.local"
		e.mustPush(resourcev3.ClusterType, edsCluster(cl))
		e.mustPush(resourcev3.EndpointType, cla(cl, epSpec{addr: startDigestBackend(t, name), tunnel: "HBONE",
			identity: backendID.String(), workload: "secure-" + name, health: corev3.HealthStatus_HEALTHY}))
	}
	sniChain := func(name, cluster string, names ...string) *listenerv3.FilterChain {
		fc := tcpChain(t, base+"|"+name, tlsVIP, tlsPort, "outbound|443|"+cluster+"|secure.default.svc.cluster.local")
		fc.FilterChainMatch.ServerNames = names
		return fc
	}
	e.mustPush(resourcev3.ListenerType, listener(
		sniChain("tls.0", "a", "a.example.com"),
		sniChain("tls.1", "b", "*.b.example.com", "*.example.com"),
		tcpChain(t, base, tlsVIP, tlsPort, "outbound|443|default|secure.default.svc.cluster.local")))
	for _, tc := range []struct {
		name string
		sent []byte
		want string
	}{
		{"exact name", clientHello(t, "a.example.com"), "a"},
		{"exact name, another case", clientHello(t, "A.Example.com"), "a"},
		{"longest wildcard", clientHello(t, "x.b.example.com"), "b"},
		{"shorter wildcard", clientHello(t, "z.example.com"), "b"},
		{"no route names it", clientHello(t, "other.test"), "default"},
		{"no SNI", clientHello(t, ""), "default"},
		{"not TLS", []byte("PING\r\n"), "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			st, err := e.dial(ctx, net.JoinHostPort(tlsVIP, "443"))
			if err != nil {
				t.Fatalf("CONNECT: %v", err)
			}
			defer st.Close()
			st.Write(tc.sent)
			st.CloseWrite()
			got, err := io.ReadAll(st)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if want := digest(tc.want, tc.sent); string(got) != want {
				t.Fatalf("got %q, want %q (backend %s, bytes unchanged)", got, want, tc.want)
			}
		})
	}
}

// TestTranslatedTLSRouteChains runs the listener control/waypoint renders
// for the golden case tls-route through this proxy's chain parser and SNI
// selection: the translation and the runtime agree on the contract.
func TestTranslatedTLSRouteChains(t *testing.T) {
	cs := newChainSet(translatedChains(t, "tls-route"))
	for _, tc := range []struct {
		dst, sni, chain string
	}{
		{"10.96.0.40:443", "a.example.com", "secure.default.svc.cluster.local:443|tls.0"},
		{"10.96.0.40:443", "x.b.example.com", "secure.default.svc.cluster.local:443|tls.1"},
		{"10.96.0.40:443", "c.example.com", "secure.default.svc.cluster.local:443"}, // its match has sourceNamespace
		{"10.96.0.40:8443", "a.example.com", "secure.default.svc.cluster.local:8443"},
		{"10.96.0.41:7443", "tls.example.com", "tls-only.default.svc.cluster.local:7443|tls.0"},
		{"10.96.0.41:7443", "", "tls-only.default.svc.cluster.local:7443"},
	} {
		dst := netip.MustParseAddrPort(tc.dst)
		if want := strings.Contains(tc.chain, "|tls.") || tc.dst != "10.96.0.40:8443"; cs.needsSNI(dst) != want {
			t.Errorf("%s: needsSNI = %v, want %v", tc.dst, !want, want)
		}
		c := cs.matchSNI(dst, tc.sni)
		if c == nil || c.name != tc.chain || !c.isTCP() {
			t.Errorf("%s SNI %q: chain %v, want TCP chain %q", tc.dst, tc.sni, c, tc.chain)
		}
		if m := cs.match(dst); m == nil || strings.Contains(m.name, "|tls.") {
			t.Errorf("%s: match (no SNI) = %v, want the port's own chain", tc.dst, m)
		}
	}
}
