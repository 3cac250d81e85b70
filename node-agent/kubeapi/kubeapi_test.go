package kubeapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// apiServer answers GET /api/v1/namespaces/<name> from namespaces, to the
// bearer token "secret" only, and records the paths asked.
func apiServer(t *testing.T, namespaces map[string]string) (*Client, *[]string) {
	t.Helper()
	var asked []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.EscapedPath())
		if r.Header.Get("Authorization") != "Bearer secret" {
			http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
			return
		}
		body, ok := namespaces[strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/")]
		if !ok {
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
			return
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return New(srv.URL, token, srv.Client().Transport.(*http.Transport).TLSClientConfig), &asked
}

func TestNamespaceLabels(t *testing.T) {
	c, asked := apiServer(t, map[string]string{
		"shop":    `{"kind":"Namespace","metadata":{"name":"shop","labels":{"istio.io/dataplane-mode":"ambient"}}}`,
		"bare":    `{"kind":"Namespace","metadata":{"name":"bare"}}`,
		"liar":    `{"kind":"Namespace","metadata":{"name":"shop","labels":{"istio.io/dataplane-mode":"ambient"}}}`,
		"pod":     `{"kind":"Pod","metadata":{"name":"pod"}}`,
		"garbage": `{"kind":`,
	})
	ctx := context.Background()
	if l, err := c.NamespaceLabels(ctx, "shop"); err != nil || l["istio.io/dataplane-mode"] != "ambient" {
		t.Errorf("shop: %v %v", l, err)
	}
	if l, err := c.NamespaceLabels(ctx, "bare"); err != nil || len(l) != 0 {
		t.Errorf("bare: %v %v", l, err)
	}
	for _, name := range []string{"missing", "liar", "pod", "garbage", "../../api/v1/namespaces/shop"} {
		if l, err := c.NamespaceLabels(ctx, name); err == nil {
			t.Errorf("%q: labels %v, want an error", name, l)
		}
	}
	// A name cannot leave the namespaces collection.
	if last := (*asked)[len(*asked)-1]; last != "/api/v1/namespaces/..%2F..%2Fapi%2Fv1%2Fnamespaces%2Fshop" {
		t.Errorf("asked %s", last)
	}
}

func TestNamespaceLabelsRereadsTheToken(t *testing.T) {
	c, _ := apiServer(t, map[string]string{"shop": `{"kind":"Namespace","metadata":{"name":"shop"}}`})
	if err := os.WriteFile(c.tokenFile, []byte("rotated-away"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NamespaceLabels(context.Background(), "shop"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("with a token the server refuses: %v", err)
	}
	if err := os.WriteFile(c.tokenFile, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NamespaceLabels(context.Background(), "shop"); err != nil {
		t.Errorf("after the kubelet rotated the token back: %v", err)
	}
}

func TestInClusterNeedsItsEnvironment(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := InCluster("", ""); err == nil {
		t.Error("InCluster outside a pod succeeded")
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	if _, err := InCluster(filepath.Join(t.TempDir(), "token"), filepath.Join(t.TempDir(), "ca.crt")); err == nil {
		t.Error("InCluster without a CA file succeeded")
	}
}
