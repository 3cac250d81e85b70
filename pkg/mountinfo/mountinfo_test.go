package mountinfo

import (
	"slices"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a/b`: "/a/b", `/a\040b`: "/a b", `/x\011y\134z`: "/x\ty\\z", `/trailing\04`: `/trailing\04`} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnderIncludesRootAndIsDeepestFirst(t *testing.T) {
	got, err := Under("/")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, "/") {
		t.Fatalf("Under(/) lacks / itself: %v", got)
	}
	for i := 1; i < len(got); i++ {
		if len(got[i]) > len(got[i-1]) {
			t.Fatalf("not deepest first at %d: %v", i, got)
		}
	}
	if got, _ := Under("/no/such/dir"); len(got) != 0 {
		t.Errorf("Under(/no/such/dir) = %v", got)
	}
}
