package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/weft-mesh/weft/pkg/atomicfile"
)

// InstallOptions place weft-cni on a node. The agent DaemonSet mounts the
// node's CNI directories (hostPath) and passes their paths in the container.
type InstallOptions struct {
	// BinDir is the node's CNI plugin directory (e.g. /host/opt/cni/bin).
	BinDir string
	// ConfDir is the node's CNI configuration directory (e.g.
	// /host/etc/cni/net.d). The runtime uses the first .conflist in name
	// order; weft-cni is appended to that one.
	ConfDir string
	// PluginSource is the weft-cni binary to copy into BinDir.
	PluginSource string

	// AgentSocket, SpoolDir, EnrolledNamespaces and LogLevel go into the
	// conflist entry, as the plugin will see them: paths on the node, not in
	// the agent's container. Empty: the plugin's defaults
	// (DefaultAgentSocket, DefaultSpoolDir, DefaultEnrolledNamespaces).
	AgentSocket        string
	SpoolDir           string
	EnrolledNamespaces string
	LogLevel           string

	// Interval is Watch's polling period (default 3 s).
	Interval time.Duration
	// Logf reports what Watch changed or failed to do (default: silent).
	Logf func(format string, args ...any)
	// Installed, if set, is called once, when Watch has installed the
	// plugin for the first time.
	Installed func()
}

// PluginConfEntry is weft-cni's entry in a conflist's "plugins".
type PluginConfEntry struct {
	Type               string `json:"type"`
	AgentSocket        string `json:"agentSocket,omitempty"`
	SpoolDir           string `json:"spoolDir,omitempty"`
	EnrolledNamespaces string `json:"enrolledNamespaces,omitempty"`
	LogLevel           string `json:"logLevel,omitempty"`
}

func (o InstallOptions) entry() PluginConfEntry {
	return PluginConfEntry{Type: PluginType, AgentSocket: o.AgentSocket, SpoolDir: o.SpoolDir,
		EnrolledNamespaces: o.EnrolledNamespaces, LogLevel: o.LogLevel}
}

func (o InstallOptions) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// ErrNoConflist is returned (wrapped) when ConfDir holds no .conflist.
var ErrNoConflist = errors.New("no CNI network configuration list")

// FirstConflist returns the .conflist the runtime uses: the first in name
// order in dir (as libcni.ConfFiles sorts). Single-plugin .conf files cannot
// be chained onto and are not considered.
func FirstConflist(dir string) (string, error) {
	all, err := conflists(dir)
	if err != nil {
		return "", err
	}
	if len(all) == 0 {
		return "", fmt.Errorf("%w (*.conflist) in %s: weft-cni is a chained plugin and is appended to the node's main CNI network (e.g. ptp or bridge) in its .conflist, which the cluster's network plugin must write first; single-plugin .conf files are not supported", ErrNoConflist, dir)
	}
	return all[0], nil
}

func conflists(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("CNI config dir: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".conflist" {
			continue
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	sort.Strings(out)
	return out, nil
}

// Install copies the weft-cni binary into BinDir (atomically, skipped when
// it is already identical) and makes weft-cni the last plugin of the first
// .conflist in ConfDir (atomic rewrite that keeps every other byte; a no-op
// when the entry is already there and last). Safe to call any number of
// times.
func Install(opts InstallOptions) error {
	if err := opts.validate(); err != nil {
		return err
	}
	if _, err := installBinary(opts, false); err != nil {
		return err
	}
	_, _, err := ensureConf(opts)
	return err
}

func (o InstallOptions) validate() error {
	var errs []error
	if o.BinDir == "" {
		errs = append(errs, errors.New("BinDir is empty"))
	}
	if o.ConfDir == "" {
		errs = append(errs, errors.New("ConfDir is empty"))
	}
	if o.PluginSource == "" {
		errs = append(errs, errors.New("PluginSource is empty"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cni install options: %w", errors.Join(errs...))
	}
	return nil
}

// Watch keeps weft-cni installed until ctx ends, polling every
// opts.Interval: when another tool rewrites the conflist without weft-cni,
// a new first .conflist appears, or the binary goes missing, it puts them
// back. It runs Install first and returns its error if that fails.
func Watch(ctx context.Context, opts InstallOptions) error {
	if err := Install(opts); err != nil {
		return err
	}
	if opts.Installed != nil {
		opts.Installed()
	}
	interval := opts.Interval
	if interval <= 0 {
		interval = 3 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		changedBin, err := installBinary(opts, true)
		if err == nil && changedBin {
			opts.logf("weft-cni: reinstalled %s", filepath.Join(opts.BinDir, PluginType))
		}
		var path string
		var changed bool
		if err == nil {
			changed, path, err = ensureConf(opts)
		}
		switch {
		case err != nil:
			if err.Error() != lastErr {
				opts.logf("weft-cni: keeping the plugin installed: %v", err)
			}
			lastErr = err.Error()
		case changed:
			opts.logf("weft-cni: re-inserted weft-cni into %s", path)
			lastErr = ""
		default:
			lastErr = ""
		}
	}
}

// Uninstall removes weft-cni's entry from every .conflist in ConfDir (the
// rest of each file is left byte for byte as it was before Install added it)
// and the binary from BinDir. What is already gone is not an error.
func Uninstall(opts InstallOptions) error {
	var errs []error
	if opts.ConfDir != "" {
		files, err := conflists(opts.ConfDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		for _, f := range files {
			data, mode, err := readConf(f)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out, n, err := removeEntries(data, PluginType)
			if err != nil {
				// Not a conflist we can edit: it cannot hold our entry as
				// the runtime would see it either; leave it alone.
				continue
			}
			if n == 0 {
				continue
			}
			if err := atomicfile.Write(f, out, mode); err != nil {
				errs = append(errs, fmt.Errorf("rewrite %s: %w", f, err))
			}
		}
	}
	if opts.BinDir != "" {
		if err := os.Remove(filepath.Join(opts.BinDir, PluginType)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func readConf(path string) ([]byte, fs.FileMode, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	return data, fi.Mode().Perm(), nil
}

// ensureConf makes weft-cni the last plugin of the first conflist.
func ensureConf(opts InstallOptions) (changed bool, path string, err error) {
	path, err = FirstConflist(opts.ConfDir)
	if err != nil {
		return false, "", err
	}
	data, mode, err := readConf(path)
	if err != nil {
		return false, path, err
	}
	doc, err := parseConflist(data)
	if err != nil {
		return false, path, fmt.Errorf("CNI config %s: %w", path, err)
	}
	want := opts.entry()
	if ok, err := entryInPlace(doc, want); err != nil || ok {
		return false, path, err
	}
	out, _, err := removeEntries(data, PluginType)
	if err != nil {
		return false, path, fmt.Errorf("CNI config %s: %w", path, err)
	}
	if out, err = appendEntry(out, want); err != nil {
		return false, path, fmt.Errorf("CNI config %s: %w", path, err)
	}
	// Whoever rewrote the file since we read it wins; we see it next poll.
	if cur, err := os.ReadFile(path); err != nil || !bytes.Equal(cur, data) {
		return false, path, fmt.Errorf("CNI config %s changed while being edited; will retry", path)
	}
	if err := atomicfile.Write(path, out, mode); err != nil {
		return false, path, fmt.Errorf("rewrite %s: %w", path, err)
	}
	return true, path, nil
}

// entryInPlace: weft-cni appears exactly once, last, with the wanted fields.
func entryInPlace(doc *conflistDoc, want PluginConfEntry) (bool, error) {
	count := 0
	for _, t := range doc.types {
		if t == PluginType {
			count++
		}
	}
	last := len(doc.types) - 1
	if count != 1 || doc.types[last] != PluginType {
		return false, nil
	}
	var have, wantMap map[string]any
	e := doc.entries[last]
	if err := json.Unmarshal(doc.data[e.start:e.end], &have); err != nil {
		return false, err
	}
	b, _ := json.Marshal(want)
	_ = json.Unmarshal(b, &wantMap)
	return reflect.DeepEqual(have, wantMap), nil
}

// installBinary copies PluginSource to BinDir/weft-cni unless an identical
// file is already there. quick compares only size and mode (for polling).
func installBinary(opts InstallOptions, quick bool) (bool, error) {
	src, err := os.Open(opts.PluginSource)
	if err != nil {
		return false, fmt.Errorf("weft-cni binary to install: %w", err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("weft-cni binary to install: %s is not a regular file", opts.PluginSource)
	}
	dst := filepath.Join(opts.BinDir, PluginType)
	if quick {
		if di, err := os.Stat(dst); err == nil && di.Mode().IsRegular() && di.Size() == fi.Size() && di.Mode().Perm()&0o111 != 0 {
			return false, nil
		}
	}
	if same, err := sameContent(src, fi.Size(), dst); err == nil && same {
		return false, nil
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	if err := os.MkdirAll(opts.BinDir, 0o755); err != nil {
		return false, fmt.Errorf("CNI bin dir: %w", err)
	}
	if err := atomicfile.Copy(dst, src, 0o755); err != nil {
		return false, fmt.Errorf("install %s: %w", dst, err)
	}
	return true, nil
}

func sameContent(src *os.File, size int64, dst string) (bool, error) {
	fi, err := os.Stat(dst)
	if err != nil || fi.Size() != size || fi.Mode().Perm()&0o111 == 0 {
		return false, err
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	a, err := io.ReadAll(src)
	if err != nil {
		return false, err
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		return false, err
	}
	return bytes.Equal(a, b), nil
}

// conflistHasPlugin reports whether the conflist at path lists typ.
func conflistHasPlugin(path, typ string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	doc, err := parseConflist(data)
	if err != nil {
		return false, err
	}
	for _, t := range doc.types {
		if strings.EqualFold(t, typ) {
			return true, nil
		}
	}
	return false, nil
}
