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

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	c := probe.Client{Ports: probe.DefaultPorts}
	fs.Int64Var(&c.BulkBytes, "bulk-bytes", probe.DefaultBulkBytes, "bytes the bulk behaviour sends each way")
	fs.IntVar(&c.Conns, "conns", probe.DefaultConns, "connections the concurrent behaviour holds open at once")
	fs.IntVar(&c.Requests, "requests", probe.DefaultRequests, "requests of the keep-alive-off load")
	fs.IntVar(&c.Streams, "streams", probe.DefaultStreams, "gRPC streams the grpc-streams behaviour holds open at once")
	fs.Parse(args)
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
