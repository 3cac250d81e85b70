package cli

import (
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/control/unsupported"
	"github.com/weft-mesh/weft/weftctl/internal/analyze"
	"github.com/weft-mesh/weft/weftctl/internal/output"
)

func newAnalyze(o *options) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "analyze [-n NAMESPACE | -A]",
		Short: "Find configuration errors: routes, subsets, waypoints, node agents, authorization policies",
		Long: `Reads Namespaces, Nodes, Pods, Services, Gateways, VirtualServices,
DestinationRules, HTTPRoutes, AuthorizationPolicies, PeerAuthentications,
RequestAuthentications, ServiceEntries and Istio Gateways of every
namespace (references cross namespaces) and the node agents' pods, runs
weft-control's own translation on them and reports what it had to ignore
or change, plus what it cannot
see: nodes without a Ready node agent in an ambient mesh, L7 authorization
policies on workloads or Services without a waypoint, ALLOW rules a DENY
rule contradicts, and objects of kinds Weft does not implement
(WasmPlugin, GRPCRoute, ...), which have no effect.

Findings of the namespace (-n, default the context's) or of all (-A) are
listed with SEVERITY error or warning. Exits 1 when any error is found.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.format()
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ic, err := istioclient.NewForConfig(c.Config)
			if err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			snap, err := fetchSnapshot(ctx, c.Kube, c.Gateway, ic, o.WeftNamespace)
			if err != nil {
				return err
			}
			mc, err := metadata.NewForConfig(c.Config)
			if err != nil {
				return err
			}
			if snap.Unsupported, err = fetchUnsupported(ctx, mc); err != nil {
				return err
			}
			opts := analyze.Options{RootNamespace: o.WeftNamespace}
			if !all {
				opts.Namespace = c.Namespace
			}
			fs := analyze.Analyze(snap, opts)
			if f == output.Table && len(fs) == 0 {
				fmt.Fprintln(o.out, "No findings.")
			} else if err := output.Print(o.out, f, fs, fs); err != nil {
				return err
			}
			if fs.Errors() > 0 {
				// weftctl exits 1 after printing the findings.
				return fmt.Errorf("analyze: %d error(s) found", fs.Errors())
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "report the findings of every namespace")
	return cmd
}

// fetchSnapshot lists what the analyzer reads, cluster-wide. Node agents
// are the pods app=weft-node-agent in weftNS.
func fetchSnapshot(ctx context.Context, kc kubernetes.Interface, gc gatewayclient.Interface, ic istioclient.Interface, weftNS string) (analyze.Snapshot, error) {
	var s analyze.Snapshot
	all := metav1.ListOptions{}
	wrap := func(what string, err error) error { return fmt.Errorf("list %s: %w", what, err) }
	nss, err := kc.CoreV1().Namespaces().List(ctx, all)
	if err != nil {
		return s, wrap("namespaces", err)
	}
	s.Namespaces = ptrs(nss.Items)
	nodes, err := kc.CoreV1().Nodes().List(ctx, all)
	if err != nil {
		return s, wrap("nodes", err)
	}
	s.Nodes = ptrs(nodes.Items)
	pods, err := kc.CoreV1().Pods("").List(ctx, all)
	if err != nil {
		return s, wrap("pods", err)
	}
	s.Pods = ptrs(pods.Items)
	agents, err := kc.CoreV1().Pods(weftNS).List(ctx, metav1.ListOptions{LabelSelector: NodeAgentSelector})
	if err != nil {
		return s, wrap("node agent pods", err)
	}
	s.NodeAgents = ptrs(agents.Items)
	svcs, err := kc.CoreV1().Services("").List(ctx, all)
	if err != nil {
		return s, wrap("services", err)
	}
	s.Services = ptrs(svcs.Items)
	gws, err := gc.GatewayV1().Gateways("").List(ctx, all)
	if err != nil {
		return s, wrap("gateways", err)
	}
	s.Gateways = ptrs(gws.Items)
	hrs, err := gc.GatewayV1().HTTPRoutes("").List(ctx, all)
	if err != nil {
		return s, wrap("httproutes", err)
	}
	s.HTTPRoutes = ptrs(hrs.Items)
	vss, err := ic.NetworkingV1().VirtualServices("").List(ctx, all)
	if err != nil {
		return s, wrap("virtualservices", err)
	}
	s.VirtualServices = vss.Items
	drs, err := ic.NetworkingV1().DestinationRules("").List(ctx, all)
	if err != nil {
		return s, wrap("destinationrules", err)
	}
	s.DestinationRules = drs.Items
	aps, err := ic.SecurityV1().AuthorizationPolicies("").List(ctx, all)
	if err != nil {
		return s, wrap("authorizationpolicies", err)
	}
	s.AuthorizationPolicies = aps.Items
	pas, err := ic.SecurityV1().PeerAuthentications("").List(ctx, all)
	if err != nil {
		return s, wrap("peerauthentications", err)
	}
	s.PeerAuthentications = pas.Items
	ras, err := ic.SecurityV1().RequestAuthentications("").List(ctx, all)
	if err != nil {
		return s, wrap("requestauthentications", err)
	}
	s.RequestAuthentications = ras.Items
	ses, err := ic.NetworkingV1().ServiceEntries("").List(ctx, all)
	if err != nil {
		return s, wrap("serviceentries", err)
	}
	s.ServiceEntries = ses.Items
	igws, err := ic.NetworkingV1().Gateways("").List(ctx, all)
	if err != nil {
		return s, wrap("gateways.networking.istio.io", err)
	}
	s.IstioGateways = igws.Items
	return s, fetchOptional(ctx, ic, &s)
}

// fetchOptional lists the kinds whose CRDs an older weft-base lacks.
func fetchOptional(ctx context.Context, ic istioclient.Interface, s *analyze.Snapshot) error {
	var err error
	if s.EnvoyFilters, err = listOptional("envoyfilters", func() ([]*networkingv1alpha3.EnvoyFilter, error) {
		l, err := ic.NetworkingV1alpha3().EnvoyFilters("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		return l.Items, nil
	}); err != nil {
		return err
	}
	s.Telemetries, err = listOptional("telemetries", func() ([]*telemetryv1.Telemetry, error) {
		l, err := ic.TelemetryV1().Telemetries("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		return l.Items, nil
	})
	return err
}

// listOptional lists a kind whose CRD may not be installed (an older
// weft-base): none then.
func listOptional[T any](resource string, list func() ([]T, error)) ([]T, error) {
	items, err := list()
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("list %s: %w", resource, err)
	}
	return items, nil
}

// fetchUnsupported lists the objects of the kinds Weft does not implement
// that the API server serves (names only).
func fetchUnsupported(ctx context.Context, mc metadata.Interface) ([]analyze.UnsupportedObject, error) {
	var out []analyze.UnsupportedObject
	for _, k := range append(slices.Clone(unsupported.Kinds), unsupported.GRPCRoute) {
		list, err := mc.Resource(k.Resource).List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) {
			continue // the kind's CRD is not installed
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", k.Resource.GroupResource(), err)
		}
		for _, o := range list.Items {
			out = append(out, analyze.UnsupportedObject{Kind: k, Namespace: o.Namespace, Name: o.Name})
		}
	}
	return out, nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
