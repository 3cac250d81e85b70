package prereqs

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Use is one place that executes (or looks up in PATH) a host command.
type Use struct {
	Command string // base name: /usr/bin/curl is curl
	Where   string // file:line relative to the scanned root
}

// Result is what Scan found.
type Result struct {
	Uses []Use
	// Own are the project's own binaries: the directories of main packages.
	Own []string
	// Dynamic are the exec sites whose command is not a constant, e.g. a
	// path found with exec.LookPath (which is itself a Use) or os.Args[0].
	Dynamic []string
}

// skipDirs are not the project's code: build output, third-party wrapper
// modules, test fixtures.
var skipDirs = map[string]bool{".git": true, "_output": true, "testdata": true, "node_modules": true, "vendor": true, "hack/tools": true}

// Scan finds the commands that the Go sources under root (os/exec calls,
// the helpers that wrap them, exec.LookPath), its shell scripts (*.sh and
// files with a shell #!) and its image maps (*images.yaml: the local
// cluster's kubelet runs an image's entrypoint as a host binary) execute.
func Scan(root string) (Result, error) {
	var res Result
	var goFiles []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if skipDirs[d.Name()] || skipDirs[rel] {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasSuffix(p, ".go"):
			goFiles = append(goFiles, p)
		case strings.HasSuffix(p, "images.yaml"):
			uses, err := scanImageMap(p, rel)
			res.Uses = append(res.Uses, uses...)
			return err
		case isShellScript(p):
			uses, err := scanShellFile(p, rel)
			res.Uses = append(res.Uses, uses...)
			return err
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	g, err := scanGo(root, goFiles)
	if err != nil {
		return res, err
	}
	res.Uses = append(res.Uses, g.Uses...)
	res.Own, res.Dynamic = g.Own, g.Dynamic
	sort.Slice(res.Uses, func(i, j int) bool { return res.Uses[i].Where < res.Uses[j].Where })
	return res, nil
}

// isShellScript: *.sh, or an extensionless file starting with a sh/bash #!.
func isShellScript(p string) bool {
	if strings.HasSuffix(p, ".sh") {
		return true
	}
	if filepath.Ext(p) != "" {
		return false
	}
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 64)
	n, _ := f.Read(head)
	line, _, _ := bytes.Cut(head[:n], []byte("\n"))
	return bytes.HasPrefix(line, []byte("#!")) && (bytes.HasSuffix(line, []byte("bash")) || bytes.HasSuffix(line, []byte("/sh")))
}

// scanImageMap reads an image map's entrypoints. ${BIN}/x is a project
// binary (x, covered by Own).
func scanImageMap(p, rel string) ([]Use, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var m struct {
		Images []struct {
			Image      string   `json:"image"`
			Entrypoint []string `json:"entrypoint"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	var uses []Use
	for _, im := range m.Images {
		if len(im.Entrypoint) > 0 {
			uses = append(uses, Use{Command: path.Base(im.Entrypoint[0]), Where: rel + " (image " + im.Image + ")"})
		}
	}
	return uses, nil
}

// goPackage is the parsed files of one directory.
type goPackage struct {
	dir, importPath string
	files           []*ast.File
	consts          map[string]string // package-level string constants and variables
}

func parseGoPackages(root string, files []string) (*token.FileSet, map[string]*goPackage, error) {
	fset := token.NewFileSet()
	module := ""
	if data, err := os.ReadFile(filepath.Join(root, "go.mod")); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if m, ok := strings.CutPrefix(l, "module "); ok {
				module = strings.TrimSpace(m)
			}
		}
	}
	pkgs := map[string]*goPackage{} // by import path
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, nil, err
		}
		dir := filepath.Dir(f)
		rel, _ := filepath.Rel(root, dir)
		ip := path.Join(module, filepath.ToSlash(rel))
		if strings.HasSuffix(af.Name.Name, "_test") {
			ip += "_test" // an external test package: its own scope
		}
		p := pkgs[ip]
		if p == nil {
			p = &goPackage{dir: dir, importPath: ip, consts: map[string]string{}}
			pkgs[ip] = p
		}
		p.files = append(p.files, af)
		collectConsts(af, p.consts)
	}
	return fset, pkgs, nil
}

// collectConsts records package-level `name = "literal"` constants and
// variables (e.g. NsenterPath = "/usr/bin/nsenter").
func collectConsts(f *ast.File, into map[string]string) {
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || (gd.Tok != token.CONST && gd.Tok != token.VAR) {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i < len(vs.Values) {
					if v, ok := stringLit(vs.Values[i]); ok {
						into[n.Name] = v
					}
				}
			}
		}
	}
}
