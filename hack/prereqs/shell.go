package prereqs

import (
	"fmt"
	"os"
	"path"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// shellBuiltins are bash's builtins and keywords that can start a command.
var shellBuiltins = map[string]bool{}

func init() {
	for _, b := range strings.Fields(`. : [ alias bg bind break builtin caller cd command compgen complete
		continue declare dirs disown echo enable eval exec exit export false fc fg getopts hash help
		history jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly return
		set shift shopt source suspend test times trap true type typeset ulimit umask unalias unset wait`) {
		shellBuiltins[b] = true
	}
}

// shellCommand is a command a script runs, with its line in the script.
type shellCommand struct {
	name string
	line uint
}

// shellCommands parses a bash script and returns the external commands its
// simple commands start (through `command`, `exec` and `command -v` too),
// leaving out builtins, the script's own functions, commands given by a
// variable ("$kubectl") and the project's files run by a relative path.
func shellCommands(src, name string) ([]shellCommand, error) {
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(src), name)
	if err != nil {
		return nil, err
	}
	defined := map[string]bool{}
	syntax.Walk(f, func(n syntax.Node) bool {
		if fd, ok := n.(*syntax.FuncDecl); ok {
			defined[fd.Name.Value] = true
		}
		return true
	})
	var out []shellCommand
	syntax.Walk(f, func(n syntax.Node) bool {
		call, ok := n.(*syntax.CallExpr)
		if !ok {
			return true
		}
		words := make([]string, len(call.Args))
		for i, w := range call.Args {
			words[i] = w.Lit()
		}
		// `command -v x`, `command x`, `exec x`: x is the command.
		for len(words) > 1 && (words[0] == "command" || words[0] == "exec") {
			words = words[1:]
			if words[0] == "-v" && len(words) > 1 {
				words = words[1:]
			}
		}
		// ./hack/x.sh is the project's own, run by its path.
		own := len(words) > 0 && strings.Contains(words[0], "/") && !strings.HasPrefix(words[0], "/")
		if len(words) > 0 && words[0] != "" && !own && !shellBuiltins[words[0]] && !defined[words[0]] {
			out = append(out, shellCommand{name: path.Base(words[0]), line: call.Pos().Line()})
		}
		return true
	})
	return out, nil
}

func scanShellFile(p, rel string) ([]Use, error) {
	src, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	cmds, err := shellCommands(string(src), rel)
	if err != nil {
		return nil, err
	}
	uses := make([]Use, len(cmds))
	for i, c := range cmds {
		uses[i] = Use{Command: c.name, Where: fmt.Sprintf("%s:%d", rel, c.line)}
	}
	return uses, nil
}
