package analyze

import (
	"regexp"
	"strings"

	"github.com/weft-mesh/weft/control/workload"
)

// rule classifies the translation Problems whose message matches re.
type rule struct {
	re   *regexp.Regexp
	kind string // "" = any kind
	sev  Severity
	code string
	// explain, if set, is appended to the message.
	explain string
}

// rules are tried in order; the first match wins. Unmatched problems are
// warnings with CodeConfigProblem: the translation changed or ignored
// something, and says what.
var rules = []rule{
	{re: regexp.MustCompile(`is not a Service of the mesh`), kind: "VirtualService", sev: Error, code: CodeHostNotFound,
		explain: "no Service (with a cluster IP) has that name, so requests for it are not routed as written"},
	{re: regexp.MustCompile(`is not a Service of the mesh`), kind: "DestinationRule", sev: Warning, code: CodeHostNotFound,
		explain: "no Service (with a cluster IP) has that name"},
	{re: regexp.MustCompile(`is not in the mesh`), kind: "HTTPRoute", sev: Error, code: CodeHostNotFound,
		explain: "no Service (with a cluster IP) has that name"},
	{re: regexp.MustCompile(`is not in the mesh; target ignored`), kind: "AuthorizationPolicy", sev: Error, code: CodePolicyTargetNotFound,
		explain: "the policy is not enforced for that target"},
	{re: regexp.MustCompile(`is not in the mesh; target ignored`), kind: "RequestAuthentication", sev: Error, code: CodePolicyTargetNotFound,
		explain: "tokens are not validated for that target"},
	{re: regexp.MustCompile(`\.subset: .* is not defined by a DestinationRule`), sev: Error, code: CodeSubsetNotFound},
	{re: regexp.MustCompile(`weights add up to|weight -?\d+ is out of range|negative weight`), sev: Error, code: CodeRouteWeights,
		explain: "the weights of a route's destinations must add up to 100"},
	{re: regexp.MustCompile(`error parsing regexp`), sev: Error, code: CodeInvalidRegex,
		explain: "regexes are RE2 syntax (as Envoy's safe_regex)"},
	{re: regexp.MustCompile(`waypoint \S+ does not exist`), sev: Error, code: CodeWaypointNotFound,
		explain: "its traffic bypasses L7 processing (routes, L7 policies) until the waypoint exists: create it with `weftctl waypoint apply` or fix the label"},
	{re: regexp.MustCompile(`waypoint \S+ does not allow namespace|waypoint \S+ is not for`), sev: Error, code: CodeWaypointNotUsable},
	{re: regexp.MustCompile(`HTTP-only, a TCP connection has no such attribute`), kind: "AuthorizationPolicy", sev: Warning, code: CodeL7PolicyOnTCP,
		explain: "as in Istio, on a TCP port an ALLOW rule with HTTP-only attributes (hosts, methods, paths, request headers) matches nothing and a DENY rule applies without them; use L4 attributes (principals, namespaces, ports) for TCP ports, or a separate policy"},
	{re: regexp.MustCompile(`already has the older|takes precedence`), sev: Warning, code: CodeConflict},
}

// subsetHost extracts the host of a SubsetNotFound message.
var subsetHost = regexp.MustCompile(`is not defined by a DestinationRule for (\S+);`)

// l7Problem matches workload.Translate's report of an L7 attribute in a
// policy the node agents enforce; authorizationPolicies explains those.
var l7Problem = regexp.MustCompile(`uses L7 attributes \(`)

func (a *analyzer) translationProblems() {
	all := append(append([]workload.Problem{}, a.wout.Problems...), a.pout.Problems...)
	for _, p := range all {
		if p.Kind == "AuthorizationPolicy" && l7Problem.MatchString(p.Message) {
			continue // see l7Policies
		}
		sev, code, msg := Warning, CodeConfigProblem, p.Message
		for _, r := range rules {
			if (r.kind == "" || r.kind == p.Kind) && r.re.MatchString(p.Message) {
				sev, code = r.sev, r.code
				if r.explain != "" {
					msg += ": " + r.explain
				}
				break
			}
		}
		if code == CodeSubsetNotFound {
			msg += a.subsetContext(p.Message)
		}
		a.add(sev, p.Kind, p.Namespace, p.Name, code, msg)
	}
}

// unsupportedKinds reports every object of a kind Weft does not
// implement, with what happens instead: an error, as the object has no
// effect (weft-control marks it WeftAccepted=False, Unsupported).
func (a *analyzer) unsupportedKinds() {
	for _, o := range a.s.Unsupported {
		a.add(Error, o.Kind.Kind, o.Namespace, o.Name, CodeUnsupported, o.Kind.Message)
	}
}

// subsetContext says which DestinationRule (if any) defines subsets for the
// host of a SubsetNotFound message.
func (a *analyzer) subsetContext(msg string) string {
	m := subsetHost.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	host := m[1]
	for _, dr := range a.s.DestinationRules {
		if dr == nil || fqdn(dr.Spec.Host, dr.Namespace) != host {
			continue
		}
		var names []string
		for _, ss := range dr.Spec.Subsets {
			if ss != nil {
				names = append(names, ss.Name)
			}
		}
		if len(names) == 0 {
			return ": DestinationRule " + dr.Namespace + "/" + dr.Name + " for " + host + " defines no subsets"
		}
		return ": DestinationRule " + dr.Namespace + "/" + dr.Name + " for " + host + " defines subsets " + strings.Join(names, ", ")
	}
	return ": there is no DestinationRule for " + host + "; add one defining the subset (labels selecting its pods)"
}

// fqdn expands a host as written in an Istio object of namespace ns, as
// control/waypoint does (cluster.local domain).
func fqdn(host, ns string) string {
	host = strings.TrimSuffix(host, ".")
	const suffix = ".svc.cluster.local"
	switch {
	case strings.HasSuffix(host, suffix):
		return host
	case strings.HasSuffix(host, ".svc"):
		return host + ".cluster.local"
	case strings.Count(host, ".") == 0:
		return host + "." + ns + suffix
	case strings.Count(host, ".") == 1:
		return host + suffix
	}
	return host
}
