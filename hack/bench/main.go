// Command bench runs the benchmarks several times and records every figure
// (make bench), judges the performance targets from such a record (make
// bench-compare) and writes docs/benchmarks.md's generated sections from
// it (make bench-docs). See docs/benchmarks.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		err = runCmd(args)
	case "compare":
		err = compareCmd(args)
	case "docs":
		err = docsCmd(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  bench run [-count N] [-bench regexp] [-out results.json] packages...
      go test -bench, N times; every figure with min/median/max to results.json,
      then the targets as compare prints them
  bench compare [-in results.json]
      the performance targets: measured ratio, limit, met or not
  bench docs [-in results.json] [-store docs/benchmarks/results.json] [-doc docs/benchmarks.md]
      copies the results to -store, draws the charts next to it and rewrites
      the doc's generated sections from them
`)
	os.Exit(2)
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	count := fs.Int("count", 5, "runs of every benchmark")
	bench := fs.String("bench", ".", "benchmarks to run (go test -bench)")
	out := fs.String("out", "_output/bench/results.json", "results file")
	fs.Parse(args)
	res, err := run(*count, *bench, fs.Args())
	if err != nil {
		return err
	}
	if err := save(res, *out); err != nil {
		return err
	}
	fmt.Printf("\n%d benchmarks, %d runs each: %s\n\n", len(res.Leaves), *count, *out)
	return printTargets(os.Stdout, res)
}

func compareCmd(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	in := fs.String("in", "_output/bench/results.json", "results file")
	fs.Parse(args)
	res, err := load(*in)
	if err != nil {
		return err
	}
	return printTargets(os.Stdout, res)
}

func docsCmd(args []string) error {
	fs := flag.NewFlagSet("docs", flag.ExitOnError)
	in := fs.String("in", "_output/bench/results.json", "results file")
	store := fs.String("store", "docs/benchmarks/results.json", "where the doc's results are kept")
	doc := fs.String("doc", "docs/benchmarks.md", "the benchmarks page")
	fs.Parse(args)
	res, err := load(*in)
	if err != nil {
		return err
	}
	if *in != *store {
		if err := save(res, *store); err != nil {
			return err
		}
	}
	if err := writeCharts(filepath.Dir(*store), res); err != nil {
		return err
	}
	return rewriteDoc(*doc, res)
}
