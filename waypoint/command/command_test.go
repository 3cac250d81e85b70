package command

import (
	"strings"
	"testing"

	"github.com/weft-mesh/weft/waypoint/daemon"
)

func TestGatewayFlag(t *testing.T) {
	cmd := New("weft-waypoint", "", daemon.ModeWaypoint, nil)
	cmd.SetArgs([]string{"--gateway", "nope", "--pod-name", "p"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--gateway") {
		t.Fatalf("bad --gateway: %v", err)
	}
}
