package bpf

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// TestMarksMatchCaptureC: the mark bits capture.c sets and honours are
// pkg/mesh's (the Go side has one definition; the C side must agree).
func TestMarksMatchCaptureC(t *testing.T) {
	src, err := os.ReadFile("capture.c")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{"WEFT_MARK_CAPTURE": mesh.MarkCapture, "WEFT_MARK_SKIP": mesh.MarkSkip} {
		m := regexp.MustCompile(`(?m)^#define ` + name + `\s+(0x[0-9a-fA-F]+|\d+)\b`).FindSubmatch(src)
		if m == nil {
			t.Errorf("capture.c defines no %s", name)
			continue
		}
		got, err := strconv.ParseUint(string(m[1]), 0, 32)
		if err != nil || uint32(got) != want {
			t.Errorf("capture.c: %s is %s, pkg/mesh says %#x", name, m[1], want)
		}
	}
}
