package workload

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// TestTranslatorMatchesTranslate walks every golden case through random
// changes (pods added, removed, made ready or unready, moved in or out of
// the mesh; other objects removed, re-added, replaced by an identical copy
// or changed) and checks after each that a Translator that saw every step
// gives exactly what Translate gives from scratch, and that a step that
// changed one pod and nothing else translated at most that pod.
func TestTranslatorMatchesTranslate(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden cases found: %v", err)
	}
	for _, input := range inputs {
		t.Run(filepath.Base(filepath.Dir(input)), func(t *testing.T) {
			w := walk{r: rand.New(rand.NewPCG(7, uint64(len(input)))), in: readInputs(t, input)}
			tr := NewTranslator(Config{})
			reused := 0
			for step := range 100 {
				onePod := w.step()
				got := renderOutput(t, tr.Translate(w.in))
				if want := renderOutput(t, Translate(Config{}, w.in)); !bytes.Equal(got, want) {
					t.Fatalf("step %d (%s): the translator's output differs from a fresh translation:\n%s\nwant:\n%s", step, w.last, got, want)
				}
				if step > 0 && onePod && tr.Translated() > 1 {
					t.Fatalf("step %d (%s) changed one pod and nothing else, yet %d pods were translated", step, w.last, tr.Translated())
				}
				reused += len(w.in.Pods) - tr.Translated()
			}
			if len(w.in.Pods)+len(w.removedPods) > 1 && reused == 0 {
				t.Errorf("no pod kept its workload in 100 steps: the walk never tried reuse")
			}
		})
	}
}

// walk changes a cluster snapshot one step at a time.
type walk struct {
	r    *rand.Rand
	in   Inputs
	last string // what the last step did
	// removedPods can come back (the same object, as an informer that
	// missed nothing would never do, but a translator must not care).
	removedPods []*corev1.Pod
}

// step changes one random thing; onePod says it was a single pod.
func (w *walk) step() (onePod bool) {
	if w.r.IntN(10) < 6 && len(w.in.Pods)+len(w.removedPods) > 0 {
		w.stepPod()
		return true
	}
	in := &w.in
	switch w.r.IntN(9) {
	case 0:
		in.Namespaces = changeOne(w, "namespace", in.Namespaces, func(ns *corev1.Namespace) {
			ns.Labels = flip(ns.Labels, labelDataplaneMode, dataplaneAmbient)
		})
	case 1:
		in.Nodes = changeOne(w, "node", in.Nodes, func(n *corev1.Node) { n.Labels = flip(n.Labels, labelTopologyZone, "zone-b") })
	case 2:
		in.Services = changeOne(w, "service", in.Services, func(s *corev1.Service) { s.Labels = flip(s.Labels, labelUseWaypoint, "none") })
	case 3:
		in.EndpointSlices = changeOne(w, "slice", in.EndpointSlices, func(es *discoveryv1.EndpointSlice) {
			for i := range es.Endpoints {
				ready := es.Endpoints[i].Conditions.Ready == nil || !*es.Endpoints[i].Conditions.Ready
				es.Endpoints[i].Conditions.Ready = &ready
			}
		})
	case 4:
		in.AuthorizationPolicies = changeOne(w, "authorization policy", in.AuthorizationPolicies, nil)
	case 5:
		in.PeerAuthentications = changeOne(w, "peer authentication", in.PeerAuthentications, nil)
	case 6:
		in.Gateways = changeOne(w, "gateway", in.Gateways, nil)
	case 7:
		in.ServiceEntries = changeOne(w, "service entry", in.ServiceEntries, nil)
	default:
		w.last = "nothing"
		return true // no change at all: nothing may be translated
	}
	return false
}

func (w *walk) stepPod() {
	pods := &w.in.Pods
	if len(*pods) == 0 || (len(w.removedPods) > 0 && w.r.IntN(4) == 0) {
		i := w.r.IntN(len(w.removedPods))
		w.last = "pod " + w.removedPods[i].Name + " back"
		*pods = append(*pods, w.removedPods[i])
		w.removedPods = slices.Delete(w.removedPods, i, i+1)
		return
	}
	i := w.r.IntN(len(*pods))
	old := (*pods)[i]
	p := old.DeepCopy()
	switch w.r.IntN(3) {
	case 0:
		w.last = "pod " + old.Name + " removed"
		*pods = slices.Delete(*pods, i, i+1)
		w.removedPods = append(w.removedPods, old)
		return
	case 1:
		w.last = "pod " + old.Name + " readiness"
		ready := corev1.ConditionTrue
		if podStatus(old) == workloadv1.WorkloadStatus_HEALTHY {
			ready = corev1.ConditionFalse
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
	default:
		w.last = "pod " + old.Name + " dataplane mode"
		p.Labels = flip(p.Labels, labelDataplaneMode, dataplaneNone)
	}
	(*pods)[i] = p
}

// changeOne removes one object of list, or replaces it with a copy that
// change (when set) modified, or with an identical copy.
func changeOne[T any, P interface {
	*T
	metav1.Object
	DeepCopy() P
}](w *walk, kind string, list []P, change func(P)) []P {
	if len(list) == 0 {
		w.last = "no " + kind
		return list
	}
	i := w.r.IntN(len(list))
	old := list[i]
	list = slices.Clone(list)
	switch {
	case w.r.IntN(4) == 0:
		w.last = fmt.Sprintf("%s %s/%s removed", kind, old.GetNamespace(), old.GetName())
		return slices.Delete(list, i, i+1)
	case change != nil && w.r.IntN(2) == 0:
		w.last = fmt.Sprintf("%s %s/%s changed", kind, old.GetNamespace(), old.GetName())
		list[i] = old.DeepCopy()
		change(list[i])
	default:
		w.last = fmt.Sprintf("%s %s/%s copied", kind, old.GetNamespace(), old.GetName())
		list[i] = old.DeepCopy()
	}
	return list
}

// flip sets key to value in a copy of labels, or removes it if it had
// that value.
func flip(labels map[string]string, key, value string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	if out[key] == value {
		delete(out, key)
	} else {
		out[key] = value
	}
	return out
}

// TestTranslatorReusesUnchangedPods counts what a Translator translates
// when one pod changes, when a node only reports its status, and when
// something every pod reads changes.
func TestTranslatorReusesUnchangedPods(t *testing.T) {
	const pods = 200
	in := scaleInputs(pods, 10, 20, 10)
	in.Nodes = []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "node-0", Labels: map[string]string{labelTopologyZone: "a"}}}}
	tr := NewTranslator(Config{})
	steps := []struct {
		name   string
		change func()
		want   int
	}{
		{"first call", func() {}, pods},
		{"nothing changed", func() {}, 0},
		{"one pod unready", func() {
			p := in.Pods[3].DeepCopy()
			p.Status.Conditions = nil
			in.Pods = append(slices.Clone(in.Pods[:3]), append([]*corev1.Pod{p}, in.Pods[4:]...)...)
		}, 1},
		{"one pod gone", func() { in.Pods = in.Pods[1:] }, 0},
		{"a node's status rewritten", func() {
			n := in.Nodes[0].DeepCopy()
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
			in.Nodes = []*corev1.Node{n}
		}, 0},
		{"a node moved zone", func() {
			n := in.Nodes[0].DeepCopy()
			n.Labels = map[string]string{labelTopologyZone: "b"}
			in.Nodes = []*corev1.Node{n}
		}, pods - 1},
		{"a selecting Service's EndpointSlice", func() {
			in.EndpointSlices = append(in.EndpointSlices, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{
				Name: "app-0-x", Namespace: "ns-000", Labels: map[string]string{discoveryv1.LabelServiceName: "app-0"}}})
		}, 0},
		{"a Service replaced", func() {
			in.Services = slices.Clone(in.Services)
			in.Services[0] = in.Services[0].DeepCopy()
		}, pods - 1},
	}
	for _, s := range steps {
		s.change()
		out := tr.Translate(in)
		if got := tr.Translated(); got != s.want {
			t.Errorf("%s: %d pods translated, want %d", s.name, got, s.want)
		}
		if got, want := renderOutput(t, out), renderOutput(t, Translate(Config{}, in)); !bytes.Equal(got, want) {
			t.Fatalf("%s: output differs from a fresh translation", s.name)
		}
	}
}
