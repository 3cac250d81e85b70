// Command images builds Weft's container images without a container engine:
// for each component (control, node-agent, waypoint) a docker-archive
// tarball per platform (`docker load`, `kind load image-archive`,
// `ctr images import`) and an OCI layout holding a multi-arch index, tagged
// <hub>/<component>:<chart appVersion> like the charts' image references.
// Base is scratch plus /etc/passwd, /etc/group, a CA bundle and /tmp; all
// timestamps are SOURCE_DATE_EPOCH (default: the last commit's time), so the
// same commit gives the same digests. See docs/images.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("root", "../..", "repository root")
	out := flag.String("out", "", "output directory (default <root>/_output/images)")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "platforms, comma-separated; the first one's docker archive has no arch suffix")
	hub := flag.String("hub", "", "registry and repository prefix (default: image.hub of charts/control/values.yaml)")
	tag := flag.String("tag", "", "image tag (default: appVersion of charts/control/Chart.yaml)")
	revision := flag.String("revision", "", "org.opencontainers.image.revision (default: git HEAD)")
	flag.Parse()

	r, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(r, "_output", "images")
	}
	plats, err := ParsePlatforms(*platforms)
	if err != nil {
		return err
	}
	chart, err := ReadChart(r, "control")
	if err != nil {
		return err
	}
	o := Options{Root: r, Out: *out, Platforms: plats, Hub: chart.Hub, Tag: chart.AppVersion, BinDirs: map[string]string{}}
	if *hub != "" {
		o.Hub = *hub
	}
	if *tag != "" {
		o.Tag = *tag
	}
	rev, epoch, dirty, gitErr := GitInfo(r)
	o.Revision = rev
	if *revision != "" {
		o.Revision = *revision
	} else if gitErr != nil {
		return fmt.Errorf("%w (pass -revision and SOURCE_DATE_EPOCH outside a git checkout)", gitErr)
	} else if dirty {
		fmt.Fprintf(os.Stderr, "images: warning: uncommitted changes; labels say revision %s\n", rev)
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if epoch, err = strconv.ParseInt(s, 10, 64); err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
	} else if gitErr != nil {
		return gitErr
	}
	o.Created = time.Unix(epoch, 0).UTC()

	for _, p := range plats {
		dir := filepath.Join(o.Out, "bin", p.OS+"_"+p.Arch)
		fmt.Fprintf(os.Stderr, "images: building binaries for %s\n", p)
		if err := BuildBinaries(r, dir, p); err != nil {
			return err
		}
		o.BinDirs[p.String()] = dir
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	res, err := Build(o)
	if err != nil {
		return err
	}
	fmt.Printf("images: revision %s, created %s\n", o.Revision, o.Created.Format(time.RFC3339))
	for _, x := range res {
		fmt.Printf("%s\n  index %s  %s\n", x.Ref, x.Index, rel(r, x.Layout))
		for i, p := range plats {
			st, err := os.Stat(x.Tarballs[i])
			if err != nil {
				return err
			}
			fmt.Printf("  %-12s %s  %s (%.1f MiB)\n", p, x.Images[i], rel(r, x.Tarballs[i]), float64(st.Size())/(1<<20))
		}
	}
	return nil
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil {
		return r
	}
	return p
}
