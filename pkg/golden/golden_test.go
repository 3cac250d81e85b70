package golden

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestDiffNamesFirstDifferingLines(t *testing.T) {
	d := Diff([]byte("a\nb\nc"), []byte("a\nB\nc\nd"))
	for _, want := range []string{"line 2:", `"b"`, `"B"`, "line 4:"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %s:\n%s", want, d)
		}
	}
	if Diff([]byte("x"), []byte("x")) != "(same lines)" {
		t.Error("equal input reported as different")
	}
}

func TestAssertFailsOnMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.txt")
	*update = true
	Assert(t, path, []byte("one"))
	*update = false
	Assert(t, path, []byte("one"))
	ft := &fakeT{TB: t}
	Assert(ft, path, []byte("two"))
	if !ft.failed {
		t.Fatal("a mismatch did not fail")
	}
}

type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Helper()               {}
