package main

import (
	"strings"
	"testing"
)

func TestGatewayFlag(t *testing.T) {
	cmd := command()
	cmd.SetArgs([]string{"--gateway", "nope", "--pod-name", "p"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--gateway") {
		t.Fatalf("bad --gateway: %v", err)
	}
}
