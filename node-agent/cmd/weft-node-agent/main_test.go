package main

import (
	"testing"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/node-agent/agent"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// TestInboundPlaintextPortFlag checks the plaintext inbound listener's port
// flag, its default, and that the flag's old name still sets it.
func TestInboundPlaintextPortFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want uint16
	}{
		{nil, mesh.InboundPlaintextPort},
		{[]string{"--inbound-plaintext-port=16006"}, 16006},
		{[]string{"--inbound-port=17006"}, 17006},
	} {
		var cfg agent.Config
		cmd := &cobra.Command{}
		agentFlags(cmd, &cfg)
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if cfg.InboundPlaintextPort != c.want {
			t.Errorf("%v: InboundPlaintextPort = %d, want %d", c.args, cfg.InboundPlaintextPort, c.want)
		}
	}
}
