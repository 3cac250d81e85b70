package xdsclient

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestMirrorKeepsWhatTheHandlerAccepted: updates and removals apply, a
// response its handler rejects leaves the mirror as it was, and types are
// kept apart.
func TestMirrorKeepsWhatTheHandlerAccepted(t *testing.T) {
	reject := false
	m := NewMirror(func(string, map[string]proto.Message, []string) error {
		if reject {
			return errors.New("bad")
		}
		return nil
	})
	names := func(typ string) []string { return slices.Sorted(maps.Keys(m.Snapshot(typ))) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(m.Handle("A", map[string]proto.Message{"x": wrapperspb.String("1"), "y": wrapperspb.String("2")}, nil))
	must(m.Handle("B", map[string]proto.Message{"z": wrapperspb.String("3")}, nil))
	must(m.Handle("A", map[string]proto.Message{"y": wrapperspb.String("2b")}, []string{"x"}))
	reject = true
	if err := m.Handle("A", map[string]proto.Message{"w": wrapperspb.String("4")}, []string{"y"}); err == nil {
		t.Fatal("a rejected response was accepted")
	}
	if got := names("A"); !slices.Equal(got, []string{"y"}) {
		t.Errorf("A = %v, want [y]", got)
	}
	if got := m.Snapshot("A")["y"].(*wrapperspb.StringValue).GetValue(); got != "2b" {
		t.Errorf("A/y = %q, want the update 2b", got)
	}
	if got := names("B"); !slices.Equal(got, []string{"z"}) {
		t.Errorf("B = %v, want [z]", got)
	}
}
