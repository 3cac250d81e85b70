package config

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/node-agent/nodebench/synth"
)

// BenchmarkLoadMesh: what a node agent does with its first response at
// the benchmarks' large scale (10,000 workloads, 1,000 services, 1,000
// policies): decode every resource from its wire form, as the xDS client
// does, and apply it to an empty store. Part of the shipped agent's
// ready_ms (node-agent/nodebench/shipped).
func BenchmarkLoadMesh(b *testing.B) {
	s := synth.Scale{Workloads: 10_000, Services: 1_000, Policies: 1_000}
	addresses, authorizations := encodeAll(b, s.Addresses()), encodeAll(b, s.Authorizations())
	b.ReportAllocs()
	for b.Loop() {
		store := NewStore(Options{Logger: quiet})
		if err := store.Handle(AddressType, decodeAll(b, addresses), nil); err != nil {
			b.Fatal(err)
		}
		if err := store.Handle(AuthorizationType, decodeAll(b, authorizations), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func encodeAll(tb testing.TB, msgs map[string]proto.Message) map[string][]byte {
	out := make(map[string][]byte, len(msgs))
	for name, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			tb.Fatal(err)
		}
		if out[name], err = proto.Marshal(a); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// decodeAll decodes as pkg/xdsclient does: each name and resource apart.
func decodeAll(tb testing.TB, encoded map[string][]byte) map[string]proto.Message {
	out := make(map[string]proto.Message, len(encoded))
	for name, b := range encoded {
		var a anypb.Any
		if err := proto.Unmarshal(b, &a); err != nil {
			tb.Fatal(err)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			tb.Fatal(err)
		}
		out[string([]byte(name))] = m
	}
	return out
}
