// Package funclen holds a test that keeps every hand-written function in the
// repository at most MaxLines long (issue 14, item 5: "No function outside
// e2e and generated code is longer than 80 lines"). A long function mixes
// wiring with loops and concerns; the limit makes the seams visible.
package funclen

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// MaxLines is the longest a function may be, counted from the line of
// `func` to the line of its closing brace, both included.
const MaxLines = 80

// allowed lists the functions that may still be longer than MaxLines, as
// "path/from/repo/root.go FuncName" (methods by their name alone). They are
// in waypoint/, which another change is reworking at the same time; splitting
// them here would only collide with it. This list must only shrink: remove an
// entry once its function is split, never add one.
var allowed = map[string]bool{
	"waypoint/cmd/weft-waypoint/run.go Run": true,
}

// generated matches the marker of generated Go files
// (https://go.dev/s/generatedcode).
var generated = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

func TestFunctionLength(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	long, err := longFunctions(root)
	if err != nil {
		t.Fatal(err)
	}
	var over []string
	seen := map[string]bool{}
	for _, f := range long {
		seen[f.key()] = true
		if !allowed[f.key()] {
			over = append(over, f.String())
		}
	}
	for key := range allowed {
		if !seen[key] {
			t.Errorf("%s is allowed to be longer than %d lines but is not (or no longer exists): remove it from allowed", key, MaxLines)
		}
	}
	if len(over) > 0 {
		t.Errorf("%d functions are longer than %d lines; split them along their seams:\n%s",
			len(over), MaxLines, strings.Join(over, "\n"))
	}
}

// function is one function longer than MaxLines.
type function struct {
	path  string // slash-separated, relative to the repository root
	name  string
	lines int
}

func (f function) key() string { return f.path + " " + f.name }

func (f function) String() string { return fmt.Sprintf("%4d %s %s", f.lines, f.path, f.name) }

// longFunctions parses every non-test, hand-written Go file under root except
// those in e2e/ and returns its functions longer than MaxLines, longest first.
func longFunctions(root string) ([]function, error) {
	var long []function
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if skipDir(rel, d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if generated.Match(src) {
			return nil
		}
		file, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, decl := range file.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
			if lines > MaxLines {
				long = append(long, function{path: rel, name: fn.Name.Name, lines: lines})
			}
		}
		return nil
	})
	sort.Slice(long, func(i, j int) bool {
		if long[i].lines != long[j].lines {
			return long[i].lines > long[j].lines
		}
		return long[i].key() < long[j].key()
	})
	return long, err
}

// skipDir reports whether the walk leaves out a directory: e2e/ (exempt by
// the rule), build output, hidden directories and testdata.
func skipDir(rel, name string) bool {
	switch {
	case rel == ".":
		return false
	case rel == "e2e", rel == "_output":
		return true
	case strings.HasPrefix(name, "."), name == "testdata", name == "vendor":
		return true
	}
	return false
}
