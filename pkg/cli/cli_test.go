package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := Logger(&buf, "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", "v")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown","k":"v"`) {
		t.Fatalf("log output %q", out)
	}
	if _, err := Logger(&buf, "loud"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("bad level: %v", err)
	}
}

func TestRunUntilSignal(t *testing.T) {
	if err := RunUntilSignal(func(context.Context) error { return context.Canceled }); err != nil {
		t.Fatalf("a canceled run is a clean exit: %v", err)
	}
	boom := errors.New("boom")
	if err := RunUntilSignal(func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("errors pass through: %v", err)
	}
}
