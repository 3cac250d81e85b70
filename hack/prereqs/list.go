// Package prereqs keeps hack/prereqs.txt, the host commands that
// hack/prereqs.sh installs, in step with what Weft's code and scripts
// execute: Scan finds the executed commands, Uncovered those that are
// neither listed nor Allowed.
package prereqs

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Entry is one line of hack/prereqs.txt: `command package  # why`.
type Entry struct {
	Command string
	Package string // Debian package
	Why     string // the comment: who runs it
}

// ReadList parses a prerequisites list.
func ReadList(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var list []Entry
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, why, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want `command package  # why`, got %q", path, n, sc.Text())
		}
		if seen[fields[0]] {
			return nil, fmt.Errorf("%s:%d: command %s listed twice", path, n, fields[0])
		}
		seen[fields[0]] = true
		list = append(list, Entry{Command: fields[0], Package: fields[1], Why: strings.TrimSpace(why)})
	}
	return list, sc.Err()
}

// Allowed are the commands that the project executes but hack/prereqs.sh
// does not install, with the reason.
var Allowed = map[string]string{
	"go":       "the Go toolchain (hack/prereqs.sh checks its version)",
	"protoc":   "make generate only: hack/gen-proto.sh names the package when it is missing",
	"xdg-open": "weftctl dashboard --browser, on a desktop; without it the URL is printed",
	// Built by hack/kube-assets.sh into _output/kube-assets/bin.
	"kubectl": "kube asset", "helm": "kube asset", "etcd": "kube asset", "coredns": "kube asset",
	"kube-apiserver": "kube asset", "kube-controller-manager": "kube asset", "kube-scheduler": "kube asset",
	"kube-proxy": "kube asset", "bridge": "kube asset (CNI)", "host-local": "kube asset (CNI)",
	"loopback": "kube asset (CNI)", "ptp": "kube asset (CNI)", "portmap": "kube asset (CNI)",
	"jaeger": "kube asset (samples/addons/jaeger.yaml)",
	// Debian's base system: Essential or Priority required packages.
	"sh": "base", "bash": "base", "env": "base", "sleep": "base", "readlink": "base", "cat": "base",
	"mkdir": "base", "rm": "base", "mv": "base", "cp": "base", "date": "base", "id": "base",
	"dirname": "base", "mktemp": "base", "sha256sum": "base", "cut": "base", "sort": "base",
	"head": "base", "tail": "base", "seq": "base", "paste": "base", "grep": "base", "sed": "base",
	"awk": "base", "find": "base", "true": "base", "false": "base", "stat": "base", "uniq": "base",
	"nohup": "base", "dpkg": "base", "apt-get": "base", "getent": "base",
}

// Uncovered returns the uses of commands that are neither in list, nor
// Allowed, nor one of own (the project's own binaries).
func Uncovered(uses []Use, list []Entry, own []string) []Use {
	known := map[string]bool{}
	for _, e := range list {
		known[e.Command] = true
	}
	for _, o := range own {
		known[o] = true
	}
	var out []Use
	for _, u := range uses {
		if !known[u.Command] && Allowed[u.Command] == "" {
			out = append(out, u)
		}
	}
	return out
}

// Table renders the list as README.md's Markdown table: one row per
// package, with its commands and the first command's reason.
func Table(list []Entry) string {
	var b strings.Builder
	b.WriteString("| Debian package | commands | needed by |\n|---|---|---|\n")
	for i := 0; i < len(list); {
		j := i
		var cmds []string
		for ; j < len(list) && list[j].Package == list[i].Package; j++ {
			cmds = append(cmds, "`"+list[j].Command+"`")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", list[i].Package, strings.Join(cmds, " "), list[i].Why)
		i = j
	}
	return b.String()
}

// ShellComment renders the list as comment lines for .ci/run, so that the
// CI script itself says what its prerequisites step installs: one line per
// package, "#   <package>: <commands>".
func ShellComment(list []Entry) string {
	var b strings.Builder
	for i := 0; i < len(list); {
		j := i
		var cmds []string
		for ; j < len(list) && list[j].Package == list[i].Package; j++ {
			cmds = append(cmds, list[j].Command)
		}
		fmt.Fprintf(&b, "#   %s: %s\n", list[i].Package, strings.Join(cmds, " "))
		i = j
	}
	return b.String()
}
