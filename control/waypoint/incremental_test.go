package waypoint

import (
	"bytes"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/pkg/golden"
)

// TestTranslatorMatchesTranslate turns every pod of every golden case
// unready and ready again, as the control plane sees it (its incremental
// workload translation, then this one), and checks that a Translator's
// output is Translate's each time, that a change of health alone rebuilt
// load assignments rather than everything, and that any other change
// translated everything.
func TestTranslatorMatchesTranslate(t *testing.T) {
	for _, dir := range caseDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			tc := loadCase(t, dir)
			cfg := caseConfig(t, dir)
			wt, tr := workload.NewTranslator(workload.Config{}), NewTranslator(cfg)
			in := tc.in
			in.SkipGRPC = false
			translateBoth := func(wl workload.Inputs) (full bool, rebuilt int) {
				t.Helper()
				in.Addresses, in.Pods = wt.Translate(wl).Addresses, wl.Pods
				got, want := render(t, tr.Translate(in), true), render(t, Translate(cfg, in), true)
				if !bytes.Equal(got, want) {
					t.Fatalf("Translator and Translate differ:\n%s", golden.Diff(want, got))
				}
				rebuilt, full = tr.Rebuilt()
				return full, rebuilt
			}
			if full, _ := translateBoth(tc.workload); !full {
				t.Fatal("the first translation was not a full one")
			}
			checkLoadAssignmentSources(t, tr)
			if full, n := translateBoth(tc.workload); full || n != 0 {
				t.Errorf("nothing changed: full %v, %d load assignments rebuilt", full, n)
			}
			incremental := 0
			for i, pod := range tc.workload.Pods {
				wl := tc.workload
				wl.Pods = slices.Clone(wl.Pods)
				wl.Pods[i] = unready(pod)
				full, n := translateBoth(wl)
				if !full && n > 0 {
					incremental++
				}
				translateBoth(tc.workload)
			}
			if incremental == 0 {
				t.Error("no pod's readiness was translated incrementally")
			}
			relabelled := tc.workload
			relabelled.Pods = slices.Clone(relabelled.Pods)
			relabelled.Pods[0] = relabelled.Pods[0].DeepCopy()
			relabelled.Pods[0].Labels["weft-test"] = "relabelled"
			if full, _ := translateBoth(relabelled); !full {
				t.Error("a pod's new label was translated incrementally")
			}
			fewer := tc.workload
			fewer.Services = fewer.Services[1:]
			in.Services = fewer.Services
			if full, _ := translateBoth(fewer); !full {
				t.Error("a Service removed was translated incrementally")
			}
		})
	}
}

// unready is pod without its conditions (not Ready).
func unready(pod *corev1.Pod) *corev1.Pod {
	p := pod.DeepCopy()
	p.Status.Conditions = nil
	return p
}

// checkLoadAssignmentSources: every load assignment of tr's last output
// can be made again (a builder that does not record one would leave
// endpoints stale).
func checkLoadAssignmentSources(t *testing.T, tr *Translator) {
	t.Helper()
	for _, cla := range tr.last.out.endpoints() {
		if _, ok := tr.last.t.claSources[cla]; !ok {
			t.Errorf("load assignment %s: how it was made is not recorded", cla.ClusterName)
		}
	}
}
