// Command weft-probe is the data-path conformance probe of the e2e suite
// (package github.com/weft-mesh/weft/e2e/probe):
//
//	weft-probe server
//	weft-probe client [flags] <behaviour[,behaviour...]|all> <host>
//
// The client prints one JSON Result per behaviour, one per line.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/weft-mesh/weft/e2e/probe"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "server":
		server()
	case "client":
		client(os.Args[2:])
	default:
		usage()
	}
}

func usage() {
	var ids []string
	for _, b := range probe.Behaviours {
		ids = append(ids, b.ID)
	}
	fmt.Fprintf(os.Stderr, "usage: weft-probe server\n       weft-probe client [flags] <behaviour[,...]|all> <host>\nbehaviours: %s\n", strings.Join(ids, " "))
	os.Exit(2)
}

func server() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := probe.Listen("", probe.DefaultPorts, log)
	if err != nil {
		log.Error("listen", "err", err)
		os.Exit(1)
	}
	s.Serve()
	log.Info("serving", "ports", s.Ports())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	s.Close()
}

// withDefaults fills the sizes not set by a flag from probe.Fast or
// probe.Full.
func withDefaults(s probe.Sizes, full bool) probe.Sizes {
	d := probe.Fast
	if full {
		d = probe.Full
	}
	if s.BulkBytes == 0 {
		s.BulkBytes = d.BulkBytes
	}
	if s.Conns == 0 {
		s.Conns = d.Conns
	}
	if s.Requests == 0 {
		s.Requests = d.Requests
	}
	if s.Streams == 0 {
		s.Streams = d.Streams
	}
	if s.Idle == 0 {
		s.Idle = d.Idle
	}
	return s
}

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	c := probe.Client{Ports: probe.DefaultPorts}
	full := fs.Bool("full", false, "the whole matrix's sizes (probe.Full) instead of the fast subset's")
	fs.Int64Var(&c.BulkBytes, "bulk-bytes", 0, "bytes the bulk behaviour sends each way (0: the sizes' default)")
	fs.IntVar(&c.Conns, "conns", 0, "connections the concurrent behaviour holds open at once (0: default)")
	fs.IntVar(&c.Requests, "requests", 0, "requests of the keep-alive-off load (0: default)")
	fs.IntVar(&c.Streams, "streams", 0, "gRPC streams the grpc-streams behaviour holds open at once (0: default)")
	fs.DurationVar(&c.Idle, "idle", 0, "how long the idle behaviour stays silent (0: default)")
	fs.StringVar(&c.Addr, "resolve", "", "the host's address instead of a DNS lookup (HTTP requests still name the host)")
	fs.IntVar(&c.Ports.HTTP, "http-port", probe.DefaultPorts.HTTP, "the server's HTTP port (another for a proxy in front of it)")
	fs.Parse(args)
	c.Sizes = withDefaults(c.Sizes, *full)
	if fs.NArg() != 2 {
		usage()
	}
	c.Host = fs.Arg(1)
	ids := strings.Split(fs.Arg(0), ",")
	if fs.Arg(0) == "all" {
		ids = nil
		for _, b := range probe.Behaviours {
			ids = append(ids, b.ID)
		}
	}
	ctx := context.Background()
	enc := json.NewEncoder(os.Stdout)
	if err := c.Resolve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "resolve:", err)
		os.Exit(1)
	}
	for _, id := range ids {
		enc.Encode(c.Run(ctx, id))
	}
}
