package kubeapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// apiServer answers GET /api/v1/namespaces/<name> from namespaces, to the
// bearer token "secret" only and when asked for metadata only, and
// records the paths asked.
func apiServer(t *testing.T, namespaces map[string]string) (*Client, *[]string) {
	t.Helper()
	var asked []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.EscapedPath())
		if r.Header.Get("Authorization") != "Bearer secret" {
			http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
			return
		}
		if r.Header.Get("Accept") != metadataOnly {
			http.Error(w, `{"kind":"Status","code":406}`, http.StatusNotAcceptable)
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
	return New(srv.URL, writeToken(t, "secret\n"), srv.Client().Transport.(*http.Transport).TLSClientConfig), &asked
}

// writeToken is a token file holding token.
func writeToken(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
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

func TestPodLabels(t *testing.T) {
	c, asked := apiServer(t, map[string]string{
		"shop/pods/web":     `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web","uid":"u-1","labels":{"istio.io/dataplane-mode":"none"}}}`,
		"shop/pods/bare":    `{"kind":"Pod","metadata":{"name":"bare","uid":"u-2"}}`,
		"shop/pods/liar":    `{"kind":"Pod","metadata":{"name":"web","uid":"u-1"}}`,
		"shop/pods/ns":      `{"kind":"Namespace","metadata":{"name":"ns"}}`,
		"shop/pods/garbage": `{"kind":`,
	})
	ctx := context.Background()
	if l, uid, err := c.PodLabels(ctx, "shop", "web"); err != nil || uid != "u-1" || l["istio.io/dataplane-mode"] != "none" {
		t.Errorf("web: %v %q %v", l, uid, err)
	}
	if l, uid, err := c.PodLabels(ctx, "shop", "bare"); err != nil || uid != "u-2" || len(l) != 0 {
		t.Errorf("bare: %v %q %v", l, uid, err)
	}
	for _, name := range []string{"missing", "liar", "ns", "garbage", "../../web"} {
		if l, _, err := c.PodLabels(ctx, "shop", name); err == nil {
			t.Errorf("%q: labels %v, want an error", name, l)
		}
	}
	if _, _, err := c.PodLabels(ctx, "shop/pods", "web"); err == nil {
		t.Error("a namespace with a slash reached another path")
	}
	if last := (*asked)[len(*asked)-1]; last != "/api/v1/namespaces/shop%2Fpods/pods/web" {
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

// nodeServer holds one Node, answers GET and JSON Patch PATCH on it as the
// API server does (a failed test op is 422 and changes nothing), and lets
// a test change the node between two requests (meddle).
type nodeServer struct {
	node    []byte
	patches int
	meddle  func(node []byte) []byte
}

func (s *nodeServer) start(t *testing.T) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/nodes/node-1" {
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
			return
		}
		if r.Method == http.MethodPatch {
			s.patches++
			if s.meddle != nil {
				s.node, s.meddle = s.meddle(s.node), nil
			}
			body, _ := io.ReadAll(r.Body)
			patch, err := jsonpatch.DecodePatch(body)
			if err != nil || r.Header.Get("Content-Type") != "application/json-patch+json" {
				http.Error(w, `{"kind":"Status","code":415}`, http.StatusUnsupportedMediaType)
				return
			}
			patched, err := patch.Apply(s.node)
			if err != nil {
				http.Error(w, `{"kind":"Status","code":422}`, http.StatusUnprocessableEntity)
				return
			}
			s.node = patched
		}
		w.Write(s.node)
	}))
	t.Cleanup(srv.Close)
	return New(srv.URL, writeToken(t, "secret"), srv.Client().Transport.(*http.Transport).TLSClientConfig)
}

func (s *nodeServer) taints(t *testing.T) []Taint {
	t.Helper()
	var n object
	if err := json.Unmarshal(s.node, &n); err != nil {
		t.Fatal(err)
	}
	return n.Spec.Taints
}

func TestRemoveNodeTaintRemovesOnlyItsKey(t *testing.T) {
	s := &nodeServer{node: []byte(`{"kind":"Node","metadata":{"name":"node-1","labels":{"a":"b"}},"spec":{"taints":[
		{"key":"other","effect":"NoSchedule"},
		{"key":"weft.io/agent-not-ready","value":"true","effect":"NoSchedule"},
		{"key":"keep","value":"weft.io/agent-not-ready","effect":"PreferNoSchedule"},
		{"key":"weft.io/agent-not-ready","effect":"NoExecute"}]}}`)}
	c := s.start(t)
	ctx := context.Background()
	removed, err := c.RemoveNodeTaint(ctx, "node-1", "weft.io/agent-not-ready")
	if err != nil || !removed {
		t.Fatalf("removed %v, %v", removed, err)
	}
	want := []Taint{{Key: "other", Effect: "NoSchedule"}, {Key: "keep", Value: "weft.io/agent-not-ready", Effect: "PreferNoSchedule"}}
	if got := s.taints(t); !reflect.DeepEqual(got, want) {
		t.Errorf("taints %+v, want %+v", got, want)
	}
	// Gone: nothing more is patched.
	if removed, err := c.RemoveNodeTaint(ctx, "node-1", "weft.io/agent-not-ready"); err != nil || removed || s.patches != 1 {
		t.Errorf("again: removed %v, %v, %d patches", removed, err, s.patches)
	}
	if _, err := c.RemoveNodeTaint(ctx, "node-2", "weft.io/agent-not-ready"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("another node: %v", err)
	}
}

// TestRemoveNodeTaintLosesARace: the taints change between the read and
// the patch (someone inserts one in front); the patch fails rather than
// remove the newcomer, and the next call removes the right one.
func TestRemoveNodeTaintLosesARace(t *testing.T) {
	s := &nodeServer{node: []byte(`{"kind":"Node","metadata":{"name":"node-1"},"spec":{"taints":[{"key":"weft.io/agent-not-ready","effect":"NoSchedule"}]}}`)}
	s.meddle = func([]byte) []byte {
		return []byte(`{"kind":"Node","metadata":{"name":"node-1"},"spec":{"taints":[{"key":"admin","effect":"NoSchedule"},{"key":"weft.io/agent-not-ready","effect":"NoSchedule"}]}}`)
	}
	c := s.start(t)
	if _, err := c.RemoveNodeTaint(context.Background(), "node-1", "weft.io/agent-not-ready"); err == nil || !strings.Contains(err.Error(), "422") {
		t.Fatalf("patch after a concurrent change: %v, want a 422", err)
	}
	if removed, err := c.RemoveNodeTaint(context.Background(), "node-1", "weft.io/agent-not-ready"); err != nil || !removed {
		t.Fatalf("retry: removed %v, %v", removed, err)
	}
	if got := s.taints(t); !reflect.DeepEqual(got, []Taint{{Key: "admin", Effect: "NoSchedule"}}) {
		t.Errorf("taints %+v, want only the admin's", got)
	}
}
