// Command weftctl operates a Weft mesh: waypoints, node agent
// configuration dumps and proxy status (weftctl/README.md).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"k8s.io/klog/v2"

	"github.com/weft-mesh/weft/weftctl/internal/cli"
)

func main() {
	// client-go's own logging (port-forward chatter) stays quiet: every
	// error weftctl cares about is returned and printed once.
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := cli.NewRoot(os.Stdout, os.Stderr).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
