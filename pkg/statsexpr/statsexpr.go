// Package statsexpr compiles and evaluates the tag value expressions of
// Istio's stats filter (the Telemetry API's metric tagOverrides): CEL over
// Envoy's request attributes, the subset Weft's proxies provide. The
// control plane compiles them to report bad ones in the Telemetry's status;
// the waypoint compiles them again from its configuration and evaluates
// them per request.
package statsexpr

import (
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"
	"github.com/prometheus/common/model"
)

// Attributes are the attributes a proxy knows of one request or TCP stream
// (Request nil for TCP). Names and types follow Envoy's attributes.
type Attributes struct {
	Request *Request
	// ResponseCode is the HTTP status sent downstream (0: TCP).
	ResponseCode int
	// GRPCStatus is the gRPC status ("" unless gRPC).
	GRPCStatus string
	// Source is the authenticated client's address (no port: the tunnel
	// carries only the address).
	Source netip.Addr
	// Destination is the original destination; Upstream the endpoint used.
	Destination, Upstream netip.AddrPort
	Cluster, Route        string
	// MutualTLS: the stream came over the mesh's mTLS (HBONE), not as a
	// gateway's plain client connection.
	MutualTLS bool
}

// Request is an HTTP request's attributes.
type Request struct {
	Host, Method, Path, Scheme, Protocol, ID, UserAgent string
	Header                                              http.Header
}

// attributes lists, per variable, the fields Weft provides. An expression
// selecting another is refused when compiled rather than always evaluating
// to "unknown".
var attributes = map[string][]string{
	"request":     {"host", "method", "path", "url_path", "scheme", "protocol", "headers", "id", "useragent"},
	"response":    {"code", "grpc_status"},
	"source":      {"address"},
	"destination": {"address", "port"},
	"upstream":    {"address", "port"},
	"connection":  {"mtls"},
	"xds":         {"cluster_name", "route_name"},
}

var env = func() *cel.Env {
	opts := []cel.EnvOption{}
	for _, name := range slices.Sorted(maps.Keys(attributes)) {
		opts = append(opts, cel.Variable(name, cel.MapType(cel.StringType, cel.DynType)))
	}
	e, err := cel.NewEnv(opts...)
	if err != nil {
		panic(err)
	}
	return e
}()

// Program is one compiled expression.
type Program struct {
	src string
	prg cel.Program
}

// String is the expression's source.
func (p *Program) String() string { return p.src }

// Compile parses and checks expr, refusing attributes Weft does not provide.
func Compile(expr string) (*Program, error) {
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		e := iss.Errors()[0] // the first, in one line: it goes into a status
		return nil, fmt.Errorf("expression %q: column %d: %s", expr, e.Location.Column()+1, e.Message)
	}
	if err := checkAttributes(ast.NativeRep()); err != nil {
		return nil, fmt.Errorf("expression %q: %w", expr, err)
	}
	prg, err := env.Program(ast)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", expr, err)
	}
	return &Program{src: expr, prg: prg}, nil
}

// checkAttributes refuses a field selection on an attribute variable that
// names no attribute Weft provides.
func checkAttributes(a *celast.AST) error {
	for _, e := range celast.MatchDescendants(celast.NavigateAST(a), celast.KindMatcher(celast.SelectKind)) {
		sel := e.AsSelect()
		if sel.Operand().Kind() != celast.IdentKind {
			continue
		}
		v := sel.Operand().AsIdent()
		if fields, ok := attributes[v]; ok && !slices.Contains(fields, sel.FieldName()) {
			return fmt.Errorf("attribute %s.%s is not provided (%s has %s)", v, sel.FieldName(), v, strings.Join(fields, ", "))
		}
	}
	return nil
}

// Unknown is the value of an expression that fails to evaluate, such as a
// header the request lacks or a request attribute of a TCP stream, as
// Istio's stats filter reports it.
const Unknown = "unknown"

// Eval evaluates p on a: a string result as is, any other scalar in its
// text form, Unknown on an error.
func (p *Program) Eval(a *Attributes) string {
	out, _, err := p.prg.Eval(activation{a})
	if err != nil || types.IsError(out) {
		return Unknown
	}
	switch v := out.Value().(type) {
	case string:
		return v
	case bool, int64, uint64, float64:
		return fmt.Sprint(v)
	}
	return Unknown
}

// activation resolves the attribute variables lazily: only the ones an
// expression names are built.
type activation struct{ a *Attributes }

func (act activation) Parent() interpreter.Activation { return nil }

func (act activation) ResolveName(name string) (any, bool) {
	a := act.a
	switch name {
	case "request":
		if a.Request == nil {
			return nil, false
		}
		return a.Request.values(), true
	case "response":
		if a.ResponseCode == 0 {
			return nil, false
		}
		m := map[string]any{"code": int64(a.ResponseCode)}
		if a.GRPCStatus != "" {
			m["grpc_status"] = a.GRPCStatus
		}
		return m, true
	case "source":
		return addrValues(netip.AddrPortFrom(a.Source, 0), a.Source.IsValid()), true
	case "destination":
		return addrValues(a.Destination, a.Destination.IsValid()), true
	case "upstream":
		return addrValues(a.Upstream, a.Upstream.IsValid()), true
	case "connection":
		return map[string]any{"mtls": a.MutualTLS}, true
	case "xds":
		return map[string]any{"cluster_name": a.Cluster, "route_name": a.Route}, true
	}
	return nil, false
}

func (r *Request) values() map[string]any {
	path, _, _ := strings.Cut(r.Path, "?")
	headers := make(map[string]string, len(r.Header))
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	return map[string]any{"host": r.Host, "method": r.Method, "path": r.Path, "url_path": path, "scheme": r.Scheme,
		"protocol": r.Protocol, "headers": headers, "id": r.ID, "useragent": r.UserAgent}
}

// addrValues is an address attribute: address "ip:port" (just the ip
// without a port) and port.
func addrValues(ap netip.AddrPort, ok bool) map[string]any {
	if !ok {
		return map[string]any{}
	}
	if ap.Port() == 0 {
		return map[string]any{"address": ap.Addr().String()}
	}
	return map[string]any{"address": ap.String(), "port": int64(ap.Port())}
}

// CheckTagName refuses a tag name that is not a Prometheus label name in
// the classic character set, or is reserved (a "__" prefix).
func CheckTagName(name string) error {
	if !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, "__") {
		return fmt.Errorf("tag %q is not a Prometheus label name", name)
	}
	return nil
}
