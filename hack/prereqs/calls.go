package prereqs

import (
	"fmt"
	"go/ast"
	"go/token"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// analyse follows the calls in s's body; it reports whether s got a new
// template.
func (g *goScan) analyse(s *scope) bool {
	changed := false
	walkBody(s.body, func(n ast.Node) {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return
		}
		pos := call.Pos()
		switch fn := s.execFunc(call); fn {
		case "Command":
			changed = g.commandLine(s, s.lineOf(call.Args, call.Ellipsis.IsValid()), pos) || changed
		case "CommandContext":
			if len(call.Args) > 1 {
				changed = g.commandLine(s, s.lineOf(call.Args[1:], call.Ellipsis.IsValid()), pos) || changed
			}
		case "LookPath":
			if it := s.resolve(call.Args[0]); it.param >= 0 { // a helper that finds the program its caller names
				changed = s.addTemplate(line{it}) || changed
			} else {
				g.emit(it, pos)
			}
		case "":
			for _, callee := range g.callees(s, call) {
				for _, t := range callee.templates {
					changed = g.commandLine(s, substitute(t, callee, s, call), pos) || changed
				}
			}
		}
	})
	return changed
}

// execFunc is the name of the os/exec function call calls, if it is one.
func (s *scope) execFunc(call *ast.CallExpr) string {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	x, ok := sel.X.(*ast.Ident)
	if !ok || importPathOf(s.file, x.Name) != "os/exec" {
		return ""
	}
	switch sel.Sel.Name {
	case "Command", "CommandContext", "LookPath":
		return sel.Sel.Name
	}
	return ""
}

// importPathOf is the path of the package that file imports as name.
func importPathOf(f *ast.File, name string) string {
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		if (im.Name != nil && im.Name.Name == name) || (im.Name == nil && path.Base(p) == name) {
			return p
		}
	}
	return ""
}

// callees are the project functions call may call: a closure of the
// enclosing declaration, a function of the package, a function of an
// imported project package, or a method of that name in the package.
func (g *goScan) callees(s *scope, call *ast.CallExpr) []*scope {
	switch fun := call.Fun.(type) {
	case *ast.Ident:
		if c := s.closures[fun.Name]; len(c) > 0 {
			return c
		}
		return g.funcs[s.pkg.importPath+"."+fun.Name]
	case *ast.SelectorExpr:
		if x, ok := fun.X.(*ast.Ident); ok {
			if ip := importPathOf(s.file, x.Name); ip != "" {
				return g.funcs[ip+"."+fun.Sel.Name]
			}
		}
		return g.funcs[s.pkg.importPath+".(method)"+fun.Sel.Name]
	}
	return nil
}

// lineOf is the command line of an exec call's arguments (name, args...).
func (s *scope) lineOf(args []ast.Expr, ellipsis bool) line {
	// exec.Command(args[0], args[1:]...): all of args.
	if len(args) == 2 && ellipsis {
		ix, ok1 := args[0].(*ast.IndexExpr)
		sl, ok2 := args[1].(*ast.SliceExpr)
		if ok1 && ok2 && sameIdent(ix.X, sl.X) && isIntLit(ix.Index, "0") && isIntLit(sl.Low, "1") && sl.High == nil {
			return s.spreadOf(ix.X)
		}
	}
	var l line
	for i, a := range args {
		if ellipsis && i == len(args)-1 {
			l = append(l, s.spreadOf(a)...)
		} else {
			l = append(l, s.resolve(a))
		}
	}
	return l
}

func sameIdent(a, b ast.Expr) bool {
	x, ok1 := a.(*ast.Ident)
	y, ok2 := b.(*ast.Ident)
	return ok1 && ok2 && x.Name == y.Name
}

func isIntLit(e ast.Expr, v string) bool {
	bl, ok := e.(*ast.BasicLit)
	return ok && bl.Kind == token.INT && bl.Value == v
}

// resolve is the item of a single expression.
func (s *scope) resolve(e ast.Expr) item {
	if v, ok := stringLit(e); ok {
		return item{lits: []string{v}, param: -1}
	}
	switch e := e.(type) {
	case *ast.Ident:
		if i := s.paramIndex(e.Name); i >= 0 {
			return item{param: i}
		}
		for p := s; p != nil; p = p.parent {
			if v, ok := p.locals[e.Name]; ok {
				return item{lits: v, param: -1}
			}
		}
		if v, ok := s.pkg.consts[e.Name]; ok {
			return item{lits: []string{v}, param: -1}
		}
	case *ast.CallExpr:
		// filepath.Join(dir, "name"): the command is name; fmt.Sprintf(format, ...)
		// counts as its format (for `sh -c` scripts).
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && len(e.Args) > 0 {
			switch fn := importPathOf(s.file, identName(sel.X)) + "." + sel.Sel.Name; fn {
			case "path/filepath.Join", "path.Join":
				return s.resolve(e.Args[len(e.Args)-1])
			case "fmt.Sprintf":
				return s.resolve(e.Args[0])
			}
		}
	}
	return unknown()
}

func identName(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

func (s *scope) paramIndex(name string) int {
	for i, p := range s.params {
		if p == name && p != "_" {
			return i
		}
	}
	return -1
}

// spreadOf is the items of a slice expanded with `...`.
func (s *scope) spreadOf(e ast.Expr) line {
	switch e := e.(type) {
	case *ast.Ident:
		if i := s.paramIndex(e.Name); i >= 0 {
			return line{{param: i, spread: true}}
		}
	case *ast.CompositeLit:
		var l line
		for _, el := range e.Elts {
			l = append(l, s.resolve(el))
		}
		return l
	case *ast.CallExpr:
		if identName(e.Fun) == "append" && len(e.Args) > 0 {
			l := s.spreadOf(e.Args[0])
			return append(l, s.lineOf(e.Args[1:], e.Ellipsis.IsValid())...)
		}
	}
	return line{{param: -1, spread: true}}
}

// substitute replaces the callee's parameters in template t by the items
// of call's arguments in the caller s.
func substitute(t line, callee, s *scope, call *ast.CallExpr) line {
	args := call.Args
	var out line
	for _, it := range t {
		k := it.param
		switch {
		case k < 0:
			out = append(out, it)
		case callee.variadic && k == len(callee.params)-1 && !call.Ellipsis.IsValid():
			// f(a, b, c) for f(x string, rest ...string): rest is b, c.
			for i := k; i < len(args); i++ {
				out = append(out, s.resolve(args[i]))
			}
		case k >= len(args):
			out = append(out, unknown())
		case it.spread:
			out = append(out, s.spreadOf(args[k])...)
		default:
			out = append(out, s.resolve(args[k]))
		}
	}
	return out
}

// commandLine emits the commands of l made at pos. A command (or a wrapper
// decision) that depends on s's parameters makes l a template of s; it
// reports whether that template is new.
func (g *goScan) commandLine(s *scope, l line, pos token.Pos) bool {
	for i := 0; i >= 0 && i < len(l); {
		if l[i].param >= 0 {
			return s.addTemplate(l)
		}
		if l[i].lits == nil {
			g.dynamic[g.where(pos)] = true
			return false
		}
		g.emit(l[i], pos)
		next, needParams := g.wrapped(l, i, pos)
		if needParams {
			return s.addTemplate(l)
		}
		i = next
	}
	return false
}

func (s *scope) addTemplate(l line) bool {
	k := l.String()
	if _, ok := s.templates[k]; ok {
		return false
	}
	s.templates[k] = l
	return true
}

// wrapped is the index of the command that the command at i runs (-1 if
// none), or needParams when that depends on parameters.
func (g *goScan) wrapped(l line, i int, pos token.Pos) (next int, needParams bool) {
	at := func(j int) (string, bool) { // the constant at j; false: not known here
		if j >= len(l) || l[j].spread || len(l[j].lits) != 1 {
			return "", false
		}
		return l[j].lits[0], true
	}
	dependsOnParams := func(to int) bool {
		for j := i + 1; j <= to && j < len(l); j++ {
			if l[j].param >= 0 {
				return true
			}
		}
		return false
	}
	switch path.Base(l[i].lits[0]) {
	case "ip": // ip netns exec NS CMD...
		a, ok1 := at(i + 1)
		b, ok2 := at(i + 2)
		if ok1 && ok2 && a == "netns" && b == "exec" && !dependsOnParams(i+3) {
			return i + 4, false
		}
		return -1, dependsOnParams(i + 3)
	case "nsenter", "kubectl": // ... -- CMD...
		for j := i + 1; j < len(l); j++ {
			if v, ok := at(j); ok && v == "--" {
				return j + 1, false
			}
			if l[j].spread || l[j].param >= 0 {
				return -1, dependsOnParams(j)
			}
		}
	case "sh", "bash": // sh -c SCRIPT
		if c, ok := at(i + 1); ok && c == "-c" && i+2 < len(l) {
			if l[i+2].param >= 0 {
				return -1, true
			}
			for _, script := range l[i+2].lits {
				g.emitScript(script, pos)
			}
		}
		return -1, dependsOnParams(i + 2)
	}
	return -1, false
}

// emit records the commands an item names; a name built at run time (a
// format verb, a variable) is dynamic.
func (g *goScan) emit(it item, pos token.Pos) {
	for _, v := range it.lits {
		name := path.Base(v)
		if name == "" || strings.ContainsAny(name, "%$ ") {
			g.dynamic[g.where(pos)] = true
			continue
		}
		g.uses[Use{Command: name, Where: g.where(pos)}] = true
	}
}

// emitScript records the commands of a `sh -c` script.
func (g *goScan) emitScript(script string, pos token.Pos) {
	cmds, err := shellCommands(script, g.where(pos))
	if err != nil {
		g.dynamic[g.where(pos)+" (sh -c script: "+err.Error()+")"] = true
		return
	}
	for _, c := range cmds {
		g.emit(item{lits: []string{c.name}, param: -1}, pos)
	}
}

func (g *goScan) where(pos token.Pos) string {
	p := g.fset.Position(pos)
	rel, err := filepath.Rel(g.root, p.Filename)
	if err != nil {
		rel = p.Filename
	}
	return fmt.Sprintf("%s:%d", filepath.ToSlash(rel), p.Line)
}
