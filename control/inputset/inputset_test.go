package inputset

import "testing"

type obj struct{ name string }

func TestEqual(t *testing.T) {
	a, b, c := &obj{"a"}, &obj{"b"}, &obj{"a"}
	set := func(put func(*Set)) *Set { s := New(); put(s); return s }
	base := set(func(s *Set) { Add(s, []*obj{a, nil, b}); s.Put("node-x") })
	cases := []struct {
		name string
		set  *Set
		want bool
	}{
		{"same objects, other order", set(func(s *Set) { s.Put("node-x"); Add(s, []*obj{b, a}) }), true},
		{"an equal object that is another pointer", set(func(s *Set) { Add(s, []*obj{c, b}); s.Put("node-x") }), false},
		{"one object missing", set(func(s *Set) { Add(s, []*obj{a}); s.Put("node-x") }), false},
		{"one object twice", set(func(s *Set) { Add(s, []*obj{a, b, b}); s.Put("node-x") }), false},
		{"another key", set(func(s *Set) { Add(s, []*obj{a, b}); s.Put("node-y") }), false},
		{"nothing translated yet", nil, false},
	}
	for _, tc := range cases {
		if got := base.Equal(tc.set); got != tc.want {
			t.Errorf("%s: Equal = %v, want %v", tc.name, got, tc.want)
		}
		if got := tc.set.Equal(base); got != tc.want {
			t.Errorf("%s (reversed): Equal = %v, want %v", tc.name, got, tc.want)
		}
	}
}
