package workload

import (
	corev1 "k8s.io/api/core/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/inputset"
)

// Translator translates the cluster call after call, re-translating only
// the pods that changed while nothing else did. A pod's workload is a
// function of its own object and of the other kinds (namespaces, nodes'
// localities, waypoints, Services, selectorless Services' EndpointSlices,
// ServiceEntries, policies), never of another pod. So when none of those
// changed since the last call, a pod whose object is the same keeps the
// workload it got then; when any of them changed, every pod is translated
// again. The output is the same as Translate's on the same inputs
// (TestTranslatorMatchesTranslate).
//
// "The same object" is the same pointer: informer caches hand out one
// object until it changes and replace it when it does, so callers must
// never modify an input in place. A node counts by its locality labels
// alone, since kubelets rewrite Node status all the time.
//
// A Translator is not safe for concurrent use.
type Translator struct {
	cfg Config
	// context is what the pods' workloads read besides the pods, at the
	// last call; pods is what each pod became then.
	context *inputset.Set
	pods    map[*corev1.Pod]podTranslation
	// translated counts the pods the last call translated.
	translated int
}

// podTranslation is what one pod became: its Address (nil when it is not
// a workload) and the problems its translation found.
type podTranslation struct {
	address  *workloadv1.Address
	problems []Problem
}

// nodeLocality is how a Node enters a translator's context.
type nodeLocality struct{ name, region, zone, subzone string }

// NewTranslator returns a Translator with nothing translated yet.
func NewTranslator(cfg Config) *Translator {
	return &Translator{cfg: cfg.WithDefaults()}
}

// Translate converts the cluster snapshot into workload-discovery
// resources, as the package's Translate does. The Addresses it returns
// for unchanged pods are the ones it returned before: treat them as
// read-only.
func (tr *Translator) Translate(in Inputs) Output {
	t := newTranslator(tr.cfg, in)
	t.indexNamespaces(in.Namespaces)
	t.indexNodes(in.Nodes)
	t.indexWaypoints(in.Gateways)
	t.translateServices(in.Services)
	t.translateServiceEntries(in.ServiceEntries)
	t.translateEndpointSlices(in.EndpointSlices)
	t.translateAuthorizationPolicies(in.AuthorizationPolicies, in.Pods)
	t.translatePeerAuthentications(in.PeerAuthentications)
	t.readContext(in)
	last := tr.pods
	if !t.context.Equal(tr.context) {
		last = nil
	}
	tr.pods, tr.translated = t.translatePods(in.Pods, last)
	tr.context = t.context
	t.translateUntakenSliceEndpoints()
	return Output{
		Addresses:          t.addresses,
		Authorizations:     t.authorizations,
		EnrolledNamespaces: enrolledNamespaces(in.Namespaces),
		Problems:           t.sortedProblems(),
	}
}

// Translated is the number of pods the last Translate translated; the
// others kept their workload.
func (tr *Translator) Translated() int { return tr.translated }

// readContext adds to t.context every input other than pods that a pod's
// workload may read (translateEndpointSlices has added the slices it
// kept).
func (t *translator) readContext(in Inputs) {
	inputset.Add(t.context, in.Namespaces)
	inputset.Add(t.context, in.Gateways)
	inputset.Add(t.context, in.Services)
	inputset.Add(t.context, in.ServiceEntries)
	inputset.Add(t.context, in.AuthorizationPolicies)
	inputset.Add(t.context, in.PeerAuthentications)
	for _, n := range in.Nodes {
		if n != nil {
			t.context.Put(nodeLocality{n.Name, n.Labels[labelTopologyRegion], n.Labels[labelTopologyZone], n.Labels[labelTopologySubzone]})
		}
	}
}

// translatePods adds the workload of every pod, the one in last when the
// pod is there, and returns what each pod became and how many it
// translated.
func (t *translator) translatePods(pods []*corev1.Pod, last map[*corev1.Pod]podTranslation) (map[*corev1.Pod]podTranslation, int) {
	out := make(map[*corev1.Pod]podTranslation, len(pods))
	translated := 0
	for _, pod := range pods {
		if pod == nil {
			continue
		}
		pt, ok := last[pod]
		if ok {
			if pt.address != nil {
				// The endpoints of selectorless Services at its IPs are
				// its own again (podServices), not endpoint workloads.
				t.takeSlicePodServices(pod)
			}
			t.problems = append(t.problems, pt.problems...)
		} else {
			pt = t.translatePod(pod)
			translated++
		}
		out[pod] = pt
		if pt.address != nil {
			t.addresses[pt.address.GetWorkload().GetUid()] = pt.address
		}
	}
	return out, translated
}

func (t *translator) translatePod(pod *corev1.Pod) podTranslation {
	n := len(t.problems)
	var pt podTranslation
	if w := t.podWorkload(pod); w != nil {
		pt.address = &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}}
	}
	if len(t.problems) > n {
		pt.problems = t.problems[n:len(t.problems):len(t.problems)]
	}
	return pt
}
