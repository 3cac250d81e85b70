package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// TestDumpHoldsEveryResource: the streamed admin dump is one JSON document
// with the snapshot's state and every resource by name, each equal to the
// resource held, in name order.
func TestDumpHoldsEveryResource(t *testing.T) {
	store := NewStore(Options{})
	var ws []*workloadv1.Address
	for i := range 30 {
		ws = append(ws, workload(wl{name: fmt.Sprintf("w-%02d", i), node: "node-a", ips: []string{fmt.Sprintf("10.1.0.%d", i+1)},
			ports: map[uint32]uint32{9080: 0}}))
	}
	name, pol := authz("default", `allow "<quoted>"`, workloadv1.Scope_NAMESPACE, "10.0.0.0/8")
	for _, in := range []struct {
		typ string
		res map[string]proto.Message
	}{
		{AddressType, addresses(append(ws, service("10.96.0.10", 9080))...)},
		{AuthorizationType, map[string]proto.Message{name: pol}},
		{EnrolledNamespaceType, map[string]proto.Message{"default": &workloadv1.EnrolledNamespace{Name: "default"}}},
	} {
		if err := store.Handle(in.typ, in.res, nil); err != nil {
			t.Fatal(err)
		}
	}
	snap := store.Snapshot()
	var b bytes.Buffer
	if err := snap.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Version                               uint64
		AddressesSynced, AuthorizationsSynced bool
		EnrolledNamespaces                    []string
		Workloads, Services, Authorizations   map[string]json.RawMessage
	}
	if err := json.Unmarshal(b.Bytes(), &dump); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b.Bytes())
	}
	if dump.Version != snap.Version || !dump.AddressesSynced || !dump.AuthorizationsSynced || fmt.Sprint(dump.EnrolledNamespaces) != "[default]" {
		t.Errorf("state: %+v", dump)
	}
	same := func(kind string, raw map[string]json.RawMessage, held map[string]proto.Message) {
		t.Helper()
		if len(raw) != len(held) {
			t.Errorf("%s: %d dumped, %d held", kind, len(raw), len(held))
		}
		for n, m := range held {
			got := m.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal(raw[n], got); err != nil || !proto.Equal(got, m) {
				t.Errorf("%s %q: dumped %s (%v), held %v", kind, n, raw[n], err, m)
			}
		}
	}
	workloads, services, authorizations := map[string]proto.Message{}, map[string]proto.Message{}, map[string]proto.Message{}
	for n, w := range snap.Workloads() {
		workloads[n] = w.Proto
	}
	for n, svc := range snap.Services() {
		services[n] = svc.Proto
	}
	for n, a := range snap.Authorizations() {
		authorizations[n] = a
	}
	same("workloads", dump.Workloads, workloads)
	same("services", dump.Services, services)
	same("authorizations", dump.Authorizations, authorizations)
	if i, j := bytes.Index(b.Bytes(), []byte(`"Kubernetes//Pod/default/w-03"`)), bytes.Index(b.Bytes(), []byte(`"Kubernetes//Pod/default/w-12"`)); i < 0 || j < i {
		t.Errorf("workloads not in name order (w-03 at %d, w-12 at %d)", i, j)
	}
}
