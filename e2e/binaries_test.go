package e2e

import (
	"debug/elf"
	"path/filepath"
	"strings"
	"testing"
)

// The binaries make build ships link no golang.org/x/net/trace: built with
// the grpcnotrace tag (Makefile GO_TAGS), gRPC leaves it out. Its
// html/template turns off the linker's dead-code elimination of methods:
// weft-waypoint was 49 MB instead of 32 with it, its RSS 5-7 MiB larger.
func TestShippedBinariesLinkNoTracePackage(t *testing.T) {
	requireE2E(t)
	for _, name := range []string{"weft-control", "weft-node-agent", "weft-waypoint", "weft-gateway"} {
		f, err := elf.Open(filepath.Join(binDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		syms, err := f.Symbols()
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, s := range syms {
			if strings.HasPrefix(s.Name, "golang.org/x/net/trace.") {
				t.Errorf("%s links %s: built without -tags=grpcnotrace (make build sets it)", name, s.Name)
				break
			}
		}
	}
}
