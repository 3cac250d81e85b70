package compat

import (
	"testing"

	"github.com/weft-mesh/weft/pkg/golden"
)

// TestCompatibilityPage keeps docs/compatibility.md what the registry
// generates; -update rewrites it.
func TestCompatibilityPage(t *testing.T) {
	page, err := Page()
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "../../docs/compatibility.md", page)
}
