package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// run runs go test -bench count times over pkgs, showing its output as it
// comes, and parses it. A failed benchmark fails the run: a record with a
// leaf missing would judge targets on what did not run.
func run(count int, bench string, pkgs []string) (*Results, error) {
	if len(pkgs) == 0 {
		pkgs = []string{"./..."}
	}
	goTool := os.Getenv("GO")
	if goTool == "" {
		goTool = "go"
	}
	// -p 1: go test runs benchmark binaries one at a time but goes on
	// compiling, vetting and linking the next packages meanwhile, which took
	// CPU from the benchmarks running (a translation benchmark took twice
	// its time alone); one action at a time, and no vet, which benchmarks
	// do not need.
	args := append([]string{"test", "-p", "1", "-vet=off", "-run", "^$", "-bench", bench, "-benchmem", "-count", fmt.Sprint(count), "-timeout", "0"}, pkgs...)
	var out bytes.Buffer
	cmd := exec.Command(goTool, args...)
	// Static, as `make build` builds what ships: a cgo test binary maps
	// libc, which the proxies' RSS figures (node agent, waypoint: the test
	// binary re-executed) would count and the shipped binaries never have.
	// The build tags come from GOFLAGS, which make sets (GO_TAGS) and the
	// results record: run outside make, they are the environment's.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout = io.MultiWriter(os.Stdout, &out)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", goTool, strings.Join(args, " "), err)
	}
	res, err := parse(&out)
	if err != nil {
		return nil, err
	}
	res.Date, res.Count = time.Now().UTC().Format(time.RFC3339), count
	res.GoFlags = strings.TrimSpace(os.Getenv("GOFLAGS"))
	res.Machine["cores"] = fmt.Sprint(runtime.NumCPU())
	if head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		res.Commit = strings.TrimSpace(string(head))
	}
	return res, nil
}

func save(res *Results, path string) error {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func load(path string) (*Results, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w (make bench writes it)", err)
	}
	res := &Results{}
	if err := json.Unmarshal(data, res); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return res, nil
}
