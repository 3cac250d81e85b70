package prereqs

import (
	"fmt"
	"go/ast"
	"go/token"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The Go scan follows command lines: an os/exec call's arguments become a
// line of items, constant or standing for a parameter of the function that
// makes the call. A line whose command depends on parameters is a template
// of that function (a helper such as `ip(args ...string)`); each call of
// the function substitutes its arguments, until no new template appears.
// Commands run through `ip netns exec NS`, `nsenter ... --`, `kubectl ... --`
// and `sh -c SCRIPT` are followed too.

// item is one element of a command line.
type item struct {
	lits   []string // its possible constant values, nil if not constant
	param  int      // the index of the function's parameter it stands for, -1 if none
	spread bool     // all elements of param (or of an unknown slice): zero or more items
}

type line []item

func unknown() item { return item{param: -1} }

func (l line) String() string {
	var b strings.Builder
	for _, it := range l {
		fmt.Fprintf(&b, "%q/%d/%v ", it.lits, it.param, it.spread)
	}
	return b.String()
}

// scope is a function declaration or literal.
type scope struct {
	pkg       *goPackage
	file      *ast.File
	parent    *scope // the enclosing function of a literal
	params    []string
	variadic  bool
	body      *ast.BlockStmt
	locals    map[string][]string // names bound to constants in the body
	closures  map[string][]*scope // named function literals, shared by a declaration and its literals
	templates map[string]line
}

type goScan struct {
	root    string
	fset    *token.FileSet
	pkgs    map[string]*goPackage
	funcs   map[string][]*scope // "importpath.Name" and "importpath.(method)Name"
	scopes  []*scope
	uses    map[Use]bool
	dynamic map[string]bool
}

func scanGo(root string, files []string) (Result, error) {
	fset, pkgs, err := parseGoPackages(root, files)
	if err != nil {
		return Result{}, err
	}
	g := &goScan{root: root, fset: fset, pkgs: pkgs, funcs: map[string][]*scope{}, uses: map[Use]bool{}, dynamic: map[string]bool{}}
	var res Result
	for _, p := range pkgs {
		for _, f := range p.files {
			if f.Name.Name == "main" && !strings.HasSuffix(p.importPath, "_test") {
				res.Own = append(res.Own, filepath.Base(p.dir))
			}
			g.addScopes(p, f)
		}
	}
	for round := 0; round < 10; round++ {
		changed := false
		for _, s := range g.scopes {
			changed = g.analyse(s) || changed
		}
		if !changed {
			break
		}
	}
	for u := range g.uses {
		res.Uses = append(res.Uses, u)
	}
	for d := range g.dynamic {
		res.Dynamic = append(res.Dynamic, d)
	}
	sort.Strings(res.Own)
	res.Own = compactStrings(res.Own)
	sort.Strings(res.Dynamic)
	return res, nil
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// addScopes registers a file's functions and their function literals.
func (g *goScan) addScopes(p *goPackage, f *ast.File) {
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		s := g.newScope(p, f, nil, fd.Type, fd.Body)
		s.closures = map[string][]*scope{}
		key := p.importPath + "." + fd.Name.Name
		if fd.Recv != nil {
			key = p.importPath + ".(method)" + fd.Name.Name
		}
		g.funcs[key] = append(g.funcs[key], s)
		g.addLiterals(s)
	}
}

// addLiterals registers the function literals directly inside s (and,
// recursively, theirs); `name := func(...)` makes a callable closure.
func (g *goScan) addLiterals(s *scope) {
	walkBody(s.body, func(n ast.Node) {
		var name string
		var lit *ast.FuncLit
		switch n := n.(type) {
		case *ast.AssignStmt:
			if len(n.Lhs) == 1 && len(n.Rhs) == 1 {
				lit, _ = n.Rhs[0].(*ast.FuncLit)
				if id, ok := n.Lhs[0].(*ast.Ident); ok && lit != nil {
					name = id.Name
				}
			}
		case *ast.FuncLit:
			lit = n
		}
		if lit == nil || s.hasLiteral(lit) {
			return
		}
		c := g.newScope(s.pkg, s.file, s, lit.Type, lit.Body)
		c.closures = s.closures
		if name != "" {
			s.closures[name] = append(s.closures[name], c)
		}
		g.addLiterals(c)
	})
}

func (s *scope) hasLiteral(lit *ast.FuncLit) bool {
	for _, list := range s.closures {
		for _, c := range list {
			if c.body == lit.Body {
				return true
			}
		}
	}
	return false
}

func (g *goScan) newScope(p *goPackage, f *ast.File, parent *scope, ft *ast.FuncType, body *ast.BlockStmt) *scope {
	s := &scope{pkg: p, file: f, parent: parent, body: body, locals: map[string][]string{}, templates: map[string]line{}}
	for _, fl := range ft.Params.List {
		_, s.variadic = fl.Type.(*ast.Ellipsis)
		if len(fl.Names) == 0 {
			s.params = append(s.params, "_")
		}
		for _, n := range fl.Names {
			s.params = append(s.params, n.Name)
		}
	}
	walkBody(body, func(n ast.Node) { s.bindLocal(n) })
	g.scopes = append(g.scopes, s)
	return s
}

// walkBody visits the nodes of a function body, not those of the function
// literals inside it (each is a scope of its own), but the literals
// themselves.
func walkBody(body *ast.BlockStmt, visit func(ast.Node)) {
	ast.Inspect(body, func(n ast.Node) bool {
		if n == nil {
			return false
		}
		visit(n)
		_, isLit := n.(*ast.FuncLit)
		return !isLit
	})
}

// bindLocal records `x := "lit"` and `for _, x := range []string{"a", "b"}`.
func (s *scope) bindLocal(n ast.Node) {
	switch n := n.(type) {
	case *ast.AssignStmt:
		for i, l := range n.Lhs {
			id, ok := l.(*ast.Ident)
			if ok && len(n.Lhs) == len(n.Rhs) {
				if v, ok := stringLit(n.Rhs[i]); ok {
					s.locals[id.Name] = []string{v}
				}
			}
		}
	case *ast.RangeStmt:
		id, ok := n.Value.(*ast.Ident)
		cl, isLit := n.X.(*ast.CompositeLit)
		if !ok || !isLit {
			return
		}
		var vals []string
		for _, e := range cl.Elts {
			if v, ok := stringLit(e); ok {
				vals = append(vals, v)
			}
		}
		if len(vals) == len(cl.Elts) && len(vals) > 0 {
			s.locals[id.Name] = vals
		}
	}
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	v, err := strconv.Unquote(bl.Value)
	return v, err == nil
}
