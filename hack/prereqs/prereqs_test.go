package prereqs

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const root = "../.."

func readList(t *testing.T) []Entry {
	t.Helper()
	list, err := ReadList(filepath.Join(root, "hack/prereqs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// TestEveryExecutedCommandIsAPrerequisite: a command that Weft's code or
// scripts execute and that hack/prereqs.sh does not install is a failure on
// a fresh machine; add it to hack/prereqs.txt (or to Allowed, with why).
func TestEveryExecutedCommandIsAPrerequisite(t *testing.T) {
	res, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	list := readList(t)
	for _, u := range Uncovered(res.Uses, list, res.Own) {
		t.Errorf("%s executes %q, which is not in hack/prereqs.txt (command package) nor allowed in hack/prereqs/list.go", u.Where, u.Command)
	}
	// The scan must see what the list names for the project's own code;
	// kube-proxy's and the CNI plugins' commands are their needs, not ours.
	found := map[string]bool{}
	for _, u := range res.Uses {
		found[u.Command] = true
	}
	for _, e := range list {
		if !found[e.Command] && !strings.Contains(e.Why, "kube-proxy") {
			t.Errorf("hack/prereqs.txt lists %s, which nothing executes: remove it, or say which third-party component needs it", e.Command)
		}
	}
	t.Logf("%d uses of %d commands; %d exec sites with a command computed at run time:\n  %s",
		len(res.Uses), len(found), len(res.Dynamic), strings.Join(res.Dynamic, "\n  "))
}

// TestScanFindsNewCommands proves the check fails when code starts to run
// a command the list lacks: directly, through a helper, through a wrapper
// (ip netns exec), by exec.LookPath (directly or in a helper), from a
// script, and from an image map.
func TestScanFindsNewCommands(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "go.mod", "module example.com/m\n\ngo 1.26\n")
	write(t, dir, "tool/main.go", `package main

import (
	"context"
	"os"
	"os/exec"

	"example.com/m/lib"
)

const probe = "/usr/sbin/probe-cmd"

func run(args ...string) error { return exec.Command(args[0], args[1:]...).Run() }

func main() {
	exec.Command("direct-cmd", "-x").Run()
	exec.CommandContext(context.Background(), probe).Run()
	run("helper-cmd", "a")
	inNetns := func(ns string, args ...string) error {
		return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).Run()
	}
	inNetns("ns1", "wrapped-cmd", "list")
	exec.LookPath("looked-up-cmd")
	for _, tool := range []string{"ranged-cmd", "ip"} {
		exec.LookPath(tool)
	}
	lib.Run("other-package-cmd")
	lib.Find("found-by-helper-cmd")
	exec.Command("sh", "-c", "inline-script-cmd | grep x").Run()
	exec.Command(os.Args[0]).Run() // computed at run time: not a command name
}
`)
	write(t, dir, "lib/lib.go", `package lib

import "os/exec"

func Run(name string) error { return exec.Command(name).Run() }

func Find(name string) string { p, _ := exec.LookPath(name); return p }
`)
	write(t, dir, "hack/build.sh", "#!/usr/bin/env bash\nset -e\nf() { script-cmd --flag | sort; }\nf\ncommand -v checked-cmd >/dev/null\n\"$var\" x\n./hack/own.sh\n/opt/bin/absolute-cmd\n")
	write(t, dir, "images.yaml", "images:\n- image: x\n  entrypoint: [\"/usr/bin/image-cmd\"]\n")
	res, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	list := []Entry{{Command: "ip", Package: "iproute2"}}
	var got []string
	for _, u := range Uncovered(res.Uses, list, res.Own) {
		got = append(got, u.Command)
	}
	slices.Sort(got)
	got = slices.Compact(got)
	want := []string{"absolute-cmd", "checked-cmd", "direct-cmd", "found-by-helper-cmd", "helper-cmd", "image-cmd", "inline-script-cmd", "looked-up-cmd",
		"other-package-cmd", "probe-cmd", "ranged-cmd", "script-cmd", "wrapped-cmd"}
	if !slices.Equal(got, want) {
		t.Errorf("uncovered commands:\n got %v\nwant %v", got, want)
	}
	if !slices.Equal(res.Own, []string{"tool"}) {
		t.Errorf("own binaries %v, want [tool]", res.Own)
	}
	if len(res.Dynamic) != 1 || !strings.HasPrefix(res.Dynamic[0], "tool/main.go:") {
		t.Errorf("dynamic exec sites %v, want the os.Args[0] one", res.Dynamic)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

var update = flag.Bool("update", false, "rewrite README.md's prerequisites table and .ci/run's list from hack/prereqs.txt")

// README.md's prerequisites table is hack/prereqs.txt's.
func TestREADMEListsThePrerequisites(t *testing.T) {
	checkBlock(t, "README.md", "<!-- prereqs: hack/prereqs.txt; go test ./hack/prereqs -update rewrites it -->\n", "<!-- /prereqs -->",
		Table(readList(t)))
}

// .ci/run names every package its prerequisites step installs.
func TestCIScriptListsThePrerequisites(t *testing.T) {
	checkBlock(t, ".ci/run", "# prereqs: hack/prereqs.txt; go test ./hack/prereqs -update rewrites it\n", "# /prereqs",
		ShellComment(readList(t)))
}

// checkBlock wants want between begin and end in file (relative to the
// repository root); -update rewrites it.
func checkBlock(t *testing.T, file, begin, end, want string) {
	t.Helper()
	path := filepath.Join(root, file)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q ... %q block", file, begin, end)
	}
	if got := text[i+len(begin) : j]; got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(text[:i+len(begin)]+want+text[j:]), 0o755); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's prerequisites list differs from hack/prereqs.txt; run go test ./hack/prereqs -update. Want:\n%s", file, want)
}
