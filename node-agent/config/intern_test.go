package config

import (
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/await"
)

// TestInternedWorkloadsShare: two replicas decoded separately hold one copy
// of their repeated strings, their identity and their services map, and
// each its uid once (its resource name's copy); a
// workload with other services gets a map of its own; the content of each
// stays what the control plane sent.
func TestInternedWorkloadsShare(t *testing.T) {
	decode := func(a *workloadv1.Address) *workloadv1.Address {
		b, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		out := &workloadv1.Address{}
		if err := proto.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	a := workload(wl{name: "a", node: "n1", ips: []string{"10.0.0.1"}, ports: map[uint32]uint32{9080: 9080}})
	b := workload(wl{name: "b", node: "n1", ips: []string{"10.0.0.2"}, ports: map[uint32]uint32{9080: 9080}})
	c := workload(wl{name: "c", node: "n1", ips: []string{"10.0.0.3"}, ports: map[uint32]uint32{9080: 8080}})
	// Resource names decoded apart from the resources, as the xDS client's.
	updated := map[string]proto.Message{}
	for name, m := range addresses(decode(a), decode(b), decode(c)) {
		updated[strings.Clone(name)] = m
	}
	s := NewStore(Options{Logger: quiet})
	if err := s.Handle(AddressType, updated, nil); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	wa, wb, wc := snap.Workload("Kubernetes//Pod/default/a"), snap.Workload("Kubernetes//Pod/default/b"), snap.Workload("Kubernetes//Pod/default/c")
	for want, got := range map[*workloadv1.Address]*Workload{a: wa, b: wb, c: wc} {
		if !proto.Equal(got.Proto, want.GetWorkload()) {
			t.Errorf("%s holds %v, want %v", got.Name, got.Proto, want.GetWorkload())
		}
	}
	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	for field, pair := range map[string][2]string{
		"namespace":             {wa.Proto.GetNamespace(), wb.Proto.GetNamespace()},
		"node":                  {wa.Proto.GetNode(), wb.Proto.GetNode()},
		"service account":       {wa.Proto.GetServiceAccount(), wb.Proto.GetServiceAccount()},
		"trust domain":          {wa.Proto.GetTrustDomain(), wb.Proto.GetTrustDomain()},
		"identity":              {wa.Identity.String(), wb.Identity.String()},
		"uid and resource name": {wa.Proto.GetUid(), wa.Name},
	} {
		if !same(pair[0], pair[1]) {
			t.Errorf("%s %q: two copies", field, pair[0])
		}
	}
	mapOf := func(w *Workload) uintptr { return reflect.ValueOf(w.Proto.GetServices()).Pointer() }
	if mapOf(wa) != mapOf(wb) {
		t.Error("replicas with the same services hold two maps")
	}
	if mapOf(wa) == mapOf(wc) {
		t.Error("workloads with different target ports share a services map")
	}
}

// TestSharedServicesLeaveTheCache: once no workload holds a services map,
// its cache entry goes (the cache does not grow with every content ever
// seen).
func TestSharedServicesLeaveTheCache(t *testing.T) {
	s := NewStore(Options{Logger: quiet})
	var as []*workloadv1.Address
	for i := range 20 {
		as = append(as, workload(wl{name: fmt.Sprintf("gone-%d", i), node: "n1", ips: []string{fmt.Sprintf("10.9.0.%d", i+1)},
			ports: map[uint32]uint32{uint32(20000 + i): 80}}))
	}
	if err := s.Handle(AddressType, addresses(as...), nil); err != nil {
		t.Fatal(err)
	}
	// The cache entries of these workloads' maps (other tests' may come
	// and go meanwhile).
	held := map[*sharedServices]bool{}
	for _, w := range s.Snapshot().Workloads() {
		held[w.services] = true
	}
	var contents []string
	servicesCache.Lock()
	for content, wp := range servicesCache.byContent {
		if held[wp.Value()] {
			contents = append(contents, content)
		}
	}
	servicesCache.Unlock()
	if len(contents) != 20 {
		t.Fatalf("%d cache entries for 20 distinct services maps", len(contents))
	}
	var names []string
	for _, a := range as {
		names = append(names, a.GetWorkload().GetUid())
	}
	if err := s.Handle(AddressType, nil, names); err != nil {
		t.Fatal(err)
	}
	as, held = nil, nil
	await.NoError(t, "the removed workloads' services maps leave the cache", func() error {
		runtime.GC()
		servicesCache.Lock()
		defer servicesCache.Unlock()
		left := 0
		for _, content := range contents {
			if _, ok := servicesCache.byContent[content]; ok {
				left++
			}
		}
		if left > 0 {
			return fmt.Errorf("%d of 20 entries left", left)
		}
		return nil
	})
}
