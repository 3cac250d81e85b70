package cni

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/weft-mesh/weft/internal/await"
)

const ptpConflist = `{
  "cniVersion": "1.0.0",
  "name": "weft-pod-network",
  "plugins": [
    {
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.0.0/24"}]]
      },
      "mtu": 1500,
      "type": "ptp"
    },
    {
      "capabilities": {"portMappings": true},
      "type": "portmap"
    }
  ]
}
`

var conflistCases = []struct{ name, content string }{
	{"ptp+portmap indented", ptpConflist},
	{"single plugin", "{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"n\",\n  \"plugins\": [\n    {\"type\": \"bridge\", \"bridge\": \"cni0\"}\n  ]\n}\n"},
	{"compact one line", `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"ptp"},{"type":"portmap","capabilities":{"portMappings":true}}],"x-extra":1}`},
	{"tabs, plugins first", "{\n\t\"plugins\": [\n\t\t{\n\t\t\t\"type\": \"ptp\"\n\t\t}\n\t],\n\t\"name\": \"n\",\n\t\"cniVersion\": \"1.0.0\"\n}"},
}

type installEnv struct {
	opts InstallOptions
	conf string
}

func newInstallEnv(t *testing.T, content string) installEnv {
	t.Helper()
	root := t.TempDir()
	opts := InstallOptions{
		BinDir:       filepath.Join(root, "opt/cni/bin"),
		ConfDir:      filepath.Join(root, "etc/cni/net.d"),
		PluginSource: filepath.Join(root, "build/weft-cni"),
		AgentSocket:  filepath.Join(root, "var/run/weft/cni.sock"),
		SpoolDir:     filepath.Join(root, "var/run/weft/cni-spool"),
		LogLevel:     "info",
	}
	for _, d := range []string{opts.BinDir, opts.ConfDir, filepath.Dir(opts.PluginSource)} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(opts.PluginSource, []byte("#!/bin/sh\necho weft-cni v1\n"), 0o755)
	conf := filepath.Join(opts.ConfDir, "10-weft.conflist")
	if content != "" {
		os.WriteFile(conf, []byte(content), 0o644)
	}
	return installEnv{opts: opts, conf: conf}
}

func pluginTypes(t *testing.T, path string) []string {
	t.Helper()
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatalf("libcni cannot load %s: %v", path, err)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	return types
}

func TestInstallAddsOnceAndUninstallRestores(t *testing.T) {
	for _, tc := range conflistCases {
		t.Run(tc.name, func(t *testing.T) {
			env := newInstallEnv(t, tc.content)
			if err := Install(env.opts); err != nil {
				t.Fatalf("Install: %v", err)
			}
			after, _ := os.ReadFile(env.conf)
			types := pluginTypes(t, env.conf)
			if types[len(types)-1] != PluginType || strings.Count(string(after), `"weft-cni"`) != 1 {
				t.Fatalf("plugins after install %v:\n%s", types, after)
			}
			// Every other byte is kept: removing the inserted text gives the
			// original back (checked again through Uninstall below).
			if !strings.Contains(string(after), env.opts.AgentSocket) || !strings.Contains(string(after), env.opts.SpoolDir) {
				t.Errorf("entry lacks agentSocket/spoolDir:\n%s", after)
			}
			list, _ := libcni.ConfListFromBytes(after)
			last := string(list.Plugins[len(list.Plugins)-1].Bytes)
			for _, want := range []string{`"agentSocket"`, `"spoolDir"`, `"logLevel":"info"`} {
				if !strings.Contains(strings.ReplaceAll(last, " ", ""), want) {
					t.Errorf("entry %s lacks %s", last, want)
				}
			}
			if fi, _ := os.Stat(env.conf); fi.Mode().Perm() != 0o644 {
				t.Errorf("conflist mode changed to %o", fi.Mode().Perm())
			}
			bin := filepath.Join(env.opts.BinDir, PluginType)
			if fi, err := os.Stat(bin); err != nil || fi.Mode().Perm() != 0o755 {
				t.Fatalf("binary: %v %v", fi, err)
			}
			t.Logf("after install:\n%s", after)

			// Idempotent: nothing changes, not even the mtime.
			st1, _ := os.Stat(env.conf)
			// Not a wait: lets a rewrite show in the mtime.
			time.Sleep(10 * time.Millisecond)
			if err := Install(env.opts); err != nil {
				t.Fatal(err)
			}
			again, _ := os.ReadFile(env.conf)
			st2, _ := os.Stat(env.conf)
			if !bytes.Equal(again, after) || !st1.ModTime().Equal(st2.ModTime()) {
				t.Fatalf("second Install rewrote the file:\n%s", again)
			}

			if err := Uninstall(env.opts); err != nil {
				t.Fatalf("Uninstall: %v", err)
			}
			restored, _ := os.ReadFile(env.conf)
			if string(restored) != tc.content {
				t.Fatalf("Uninstall did not restore the original:\n got: %q\nwant: %q", restored, tc.content)
			}
			if _, err := os.Stat(bin); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("binary still there: %v", err)
			}
			if err := Uninstall(env.opts); err != nil {
				t.Errorf("second Uninstall: %v", err)
			}
			if left := spoolFiles(t, env.opts.ConfDir); len(left) != 1 {
				t.Errorf("conf dir has %v (temp files left?)", left)
			}
		})
	}
}

func TestInstallMovesEntryLastAndDedupes(t *testing.T) {
	content := `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"weft-cni"},{"type":"ptp"},{"type":"weft-cni","logLevel":"debug"},{"type":"portmap"}]}`
	env := newInstallEnv(t, content)
	if err := Install(env.opts); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pluginTypes(t, env.conf), ","); got != "ptp,portmap,weft-cni" {
		t.Fatalf("plugins %s", got)
	}
	// Changed options (e.g. a new log level) update the entry in place.
	env.opts.LogLevel = "debug"
	if err := Install(env.opts); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(env.conf)
	if !strings.Contains(string(data), `"logLevel":"debug"`) || strings.Count(string(data), "weft-cni") != 1 {
		t.Fatalf("after option change:\n%s", data)
	}
}

func TestInstallUsesFirstConflist(t *testing.T) {
	env := newInstallEnv(t, ptpConflist)
	other := filepath.Join(env.opts.ConfDir, "99-other.conflist")
	os.WriteFile(other, []byte(ptpConflist), 0o644)
	os.WriteFile(filepath.Join(env.opts.ConfDir, "05-single.conf"), []byte(`{"type":"bridge"}`), 0o644)
	if err := Install(env.opts); err != nil {
		t.Fatal(err)
	}
	if ok, _ := conflistHasPlugin(env.conf, PluginType); !ok {
		t.Error("first conflist not patched")
	}
	if ok, _ := conflistHasPlugin(other, PluginType); ok {
		t.Error("second conflist patched")
	}
}

func TestInstallErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		mutate        func(*installEnv)
		want          string
	}{
		{"no conflist", "", nil, "no CNI network configuration list (*.conflist) in"},
		{"only .conf", "", func(e *installEnv) {
			os.WriteFile(filepath.Join(e.opts.ConfDir, "10-x.conf"), []byte(`{"type":"ptp"}`), 0o644)
		}, "single-plugin .conf files are not supported"},
		{"missing conf dir", "", func(e *installEnv) { e.opts.ConfDir = filepath.Join(e.opts.ConfDir, "nope") }, "CNI config dir"},
		{"bad JSON", `{"plugins": [`, nil, "10-weft.conflist: not a JSON object"},
		{"no plugins key", `{"cniVersion":"1.0.0","type":"ptp"}`, nil, `no "plugins" list`},
		{"plugins not a list", `{"plugins":{"type":"ptp"}}`, nil, `"plugins" is not a list`},
		{"empty plugins", `{"plugins":[]}`, nil, "no main plugin to chain onto"},
		{"plugin without type", `{"plugins":[{"name":"x"}]}`, nil, `plugins[0] has no "type"`},
		{"trailing garbage", `{"plugins":[{"type":"ptp"}]} {}`, nil, "trailing data"},
		{"missing binary", ptpConflist, func(e *installEnv) { e.opts.PluginSource += ".missing" }, "weft-cni binary to install"},
		{"empty options", ptpConflist, func(e *installEnv) { e.opts = InstallOptions{} }, "BinDir is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newInstallEnv(t, tc.content)
			if tc.mutate != nil {
				tc.mutate(&env)
			}
			err := Install(env.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Install error = %v, want it to mention %q", err, tc.want)
			}
			if tc.content != "" {
				if data, _ := os.ReadFile(env.conf); string(data) != tc.content {
					t.Errorf("conflist modified despite the error: %s", data)
				}
			}
		})
	}
	env := newInstallEnv(t, "")
	if err := Install(env.opts); !errors.Is(err, ErrNoConflist) {
		t.Errorf("err %v is not ErrNoConflist", err)
	}
}

func TestWatchReinserts(t *testing.T) {
	env := newInstallEnv(t, ptpConflist)
	env.opts.Interval = 20 * time.Millisecond
	logs := make(chan string, 100)
	env.opts.Logf = func(f string, a ...any) {
		select {
		case logs <- f:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, env.opts) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		await.True(t, what, cond)
	}
	has := func() bool { ok, _ := conflistHasPlugin(env.conf, PluginType); return ok }
	waitFor("initial install", has)

	// Another tool rewrites the conflist without weft-cni (atomic rename, as
	// most do).
	rewritten := strings.Replace(ptpConflist, `"mtu": 1500`, `"mtu": 1450`, 1)
	tmp := env.conf + ".new"
	os.WriteFile(tmp, []byte(rewritten), 0o644)
	os.Rename(tmp, env.conf)
	waitFor("re-insert", func() bool {
		data, _ := os.ReadFile(env.conf)
		return has() && strings.Contains(string(data), `"mtu": 1450`)
	})
	// The binary is deleted: it comes back.
	os.Remove(filepath.Join(env.opts.BinDir, PluginType))
	waitFor("binary back", func() bool { _, err := os.Stat(filepath.Join(env.opts.BinDir, PluginType)); return err == nil })

	// A new first conflist appears: it gets the entry too.
	first := filepath.Join(env.opts.ConfDir, "00-new.conflist")
	os.WriteFile(first, []byte(ptpConflist), 0o644)
	waitFor("entry in the new first conflist", func() bool { ok, _ := conflistHasPlugin(first, PluginType); return ok })

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch: %v", err)
	}
	done <- nil
	if err := Uninstall(env.opts); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{env.conf, first} {
		if ok, _ := conflistHasPlugin(f, PluginType); ok {
			t.Errorf("%s still has weft-cni after Uninstall", f)
		}
	}
	if data, _ := os.ReadFile(env.conf); string(data) != rewritten {
		t.Errorf("Uninstall changed the rewritten file:\n%s", data)
	}
}
