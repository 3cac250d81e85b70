package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// weftControlUser is weft-control's service account, as the API server
// names it; kubectl --as impersonates it.
const weftControlUser = "system:serviceaccount:" + controlNS + ":weft-control"

// roleBinding is a RoleBinding in default, labelled as weft-control's own
// when managed, of ClusterRole role to ServiceAccount subject
// ("<namespace>/<name>").
func roleBinding(name, role, subject string, managed bool) string {
	ns, sa, _ := strings.Cut(subject, "/")
	labels := ""
	if managed {
		labels = "\n  labels:\n    app.kubernetes.io/managed-by: weft-control"
	}
	return fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: %s
  namespace: default%s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: %s
subjects:
- kind: ServiceAccount
  name: %s
  namespace: %s
`, name, labels, role, sa, ns)
}

// kubectlAs runs kubectl as user with doc on its stdin (when not empty).
func (e *env) kubectlAs(t *testing.T, user, doc string, args ...string) error {
	t.Helper()
	args = append([]string{"--as=" + user}, args...)
	if doc != "" {
		f, err := os.CreateTemp("", "weft-e2e-*.yaml")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(f.Name())
		f.WriteString(doc)
		f.Close()
		args = append(args, "-f", f.Name())
	}
	out, err := e.kubectl(args...)
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// testRoleBindingPolicy attacks weft-control's RoleBinding rights as weft-control
// itself (impersonated): RBAC lets it create, patch and delete
// RoleBindings everywhere (deployed gateways' certificate access), and the
// chart's admission policy must keep it to the bindings it manages. The
// roles in the attacks grant nothing weft-control lacks, so the API
// server's own escalation check lets them through and only the policy
// stands in the way.
func testRoleBindingPolicy(t *testing.T, e *env) {
	e.applyYAML(t, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: e2e-nothing\nrules: []\n")
	e.applyYAML(t, roleBinding("tenant-view", "e2e-nothing", "default/default", false))
	const secrets, check = "weft-control-gateway-secrets", "weft-control-gateway-secret-check"
	for _, attack := range []struct {
		what, doc string
		args      []string
		want      string
	}{
		{"delete another's RoleBinding", "", []string{"-n", "default", "delete", "rolebinding", "tenant-view"}, "managed-by=weft-control"},
		{"take another's RoleBinding over by labelling it", "", []string{"-n", "default", "label", "rolebinding", "tenant-view",
			"app.kubernetes.io/managed-by=weft-control"}, "managed-by=weft-control"},
		{"bind the Secrets role to any service account", roleBinding("steal", secrets, "default/default", true), []string{"apply"}, "one ServiceAccount"},
		{"bind the check role to another service account", roleBinding("steal", check, "default/x-weft", true), []string{"apply"}, "one ServiceAccount"},
		{"bind a role of its own choosing", roleBinding("steal", "e2e-nothing", "default/x-weft", true), []string{"apply"}, "only its gateway Secret roles"},
	} {
		err := e.kubectlAs(t, weftControlUser, attack.doc, attack.args...)
		if err == nil || !strings.Contains(err.Error(), attack.want) {
			t.Errorf("%s as weft-control: %v; want it denied by the admission policy (%q)", attack.what, err, attack.want)
		}
	}
	if got := e.mustKubectl(t, "-n", "default", "get", "rolebinding", "tenant-view", "-o", "jsonpath={.metadata.labels}"); got != "" {
		t.Errorf("tenant-view labels %s after the attacks", got)
	}
	// What weft-control does for a deployed gateway still works.
	ok := roleBinding("gw-weft.default-secrets", secrets, "default/gw-weft", true)
	if err := e.kubectlAs(t, weftControlUser, ok, "apply", "--server-side", "--field-manager=weft-control"); err != nil {
		t.Fatalf("a deployed gateway's binding as weft-control: %v", err)
	}
	if err := e.kubectlAs(t, weftControlUser, "", "-n", "default", "delete", "rolebinding", "gw-weft.default-secrets"); err != nil {
		t.Fatalf("deleting it as weft-control: %v", err)
	}
}
