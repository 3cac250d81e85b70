package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/weft-mesh/weft/control/workload"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/weftctl/internal/kube"
	"github.com/weft-mesh/weft/weftctl/internal/output"
	"github.com/weft-mesh/weft/weftctl/internal/waypoint"
)

func newWaypoint(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "waypoint",
		Short: "Create, list, inspect and delete waypoints (Gateways of class weft-waypoint)",
	}
	cmd.AddCommand(newWaypointApply(o), newWaypointList(o), newWaypointDelete(o), newWaypointStatus(o))
	return cmd
}

func newWaypointApply(o *options) *cobra.Command {
	var a waypoint.ApplyOptions
	var wait bool
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Create or update a waypoint, as istioctl waypoint apply does",
		Long: `Server-side applies (field manager weftctl) the Gateway that
'istioctl waypoint apply' writes, with gatewayClassName weft-waypoint:

  metadata: {name: <--name>, labels: {istio.io/waypoint-for: <--for>}}
  spec: {gatewayClassName: weft-waypoint, listeners: [{name: mesh, port: ` + strconv.Itoa(mesh.HBONEPort) + `, protocol: HBONE}]}

weft-control then creates the waypoint's ServiceAccount, Deployment and
Service, named like the Gateway.

--enroll-namespace labels the namespace istio.io/use-waypoint=<name>: every
Service of the namespace (and every pod, with --for workload or all) uses it.

--service-account SA makes a waypoint for the workloads of one service
account. It is named <SA>-waypoint (never <SA>: the waypoint runs as a
ServiceAccount named like the Gateway, which must not be the application's),
serves all traffic (--for all unless given) and labels with
istio.io/use-waypoint=<name>:
  - the Services of the namespace whose selected pods all run as SA (traffic
    to those Services goes through the waypoint; a Service that also selects
    pods of other accounts is left alone, with a note), when it serves
    services;
  - the pods running as SA now (traffic addressed to their pod IPs), when it
    serves workloads.
Nothing else is labelled, so the waypoint serves only that account's
workloads. Pods created later (a rollout) do not carry the pod label: put
istio.io/use-waypoint=<name> in their template, or run the command again.`,
		Example: `  weftctl waypoint apply -n default --enroll-namespace --wait
  weftctl waypoint apply -n default --name reviews-waypoint && kubectl label service reviews istio.io/use-waypoint=reviews-waypoint
  weftctl waypoint apply -n default --service-account bookinfo-reviews --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a.Name, _ = cmd.Flags().GetString("name")
			if err := a.Complete(); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			a.Namespace = c.Namespace
			ctx, cancel := o.context(cmd)
			defer cancel()
			return o.applyWaypoint(ctx, c, a, wait)
		},
	}
	f := cmd.Flags()
	f.String("name", "", `name of the Gateway (default "waypoint", or "<SA>-waypoint" with --service-account)`)
	f.StringVar(&a.For, "for", "", `traffic the waypoint serves: service, workload, all or none (istio.io/waypoint-for; default service, all with --service-account)`)
	f.BoolVar(&a.EnrollNamespace, "enroll-namespace", false, "label the namespace istio.io/use-waypoint=<name>")
	f.StringVar(&a.ServiceAccount, "service-account", "", "make a waypoint for the workloads of this service account (see above)")
	f.BoolVar(&wait, "wait", false, "wait until the Gateway is Programmed (at most --timeout)")
	return cmd
}

func (o *options) applyWaypoint(ctx context.Context, c *kube.Client, a waypoint.ApplyOptions, wait bool) error {
	ns, err := c.Kube.CoreV1().Namespaces().Get(ctx, a.Namespace, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("namespace %s: %w", a.Namespace, err)
	}
	if !mesh.Enrolled(nil, ns.Labels) {
		fmt.Fprintf(o.errOut, "warning: namespace %s is not enrolled in the mesh (label %s=ambient): its traffic does not reach the waypoint until it is\n",
			a.Namespace, waypoint.LabelDataplaneMode)
	}
	// The waypoint's ServiceAccount is named like the Gateway: refuse to
	// take over an account that belongs to something else.
	if sa, err := c.Kube.CoreV1().ServiceAccounts(a.Namespace).Get(ctx, a.Name, metav1.GetOptions{}); err == nil && !ownedByGateway(sa.OwnerReferences, a.Name) {
		return fmt.Errorf("ServiceAccount %s/%s exists and does not belong to a waypoint: the waypoint would run as it (and own it); choose another --name", a.Namespace, a.Name)
	} else if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get ServiceAccount %s/%s: %w", a.Namespace, a.Name, err)
	}
	gw, err := c.Gateway.GatewayV1().Gateways(a.Namespace).Apply(ctx, waypoint.Gateway(a), metav1.ApplyOptions{FieldManager: waypoint.FieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("apply Gateway %s/%s: %w (is the Gateway API CRD installed? helm install weft-base charts/base)", a.Namespace, a.Name, err)
	}
	fmt.Fprintf(o.errOut, "waypoint %s/%s applied\n", a.Namespace, a.Name)
	if a.EnrollNamespace {
		if err := setUseWaypoint(ctx, c, "Namespace", "", a.Namespace, a.Name); err != nil {
			return err
		}
		fmt.Fprintf(o.errOut, "namespace %s labelled %s=%s\n", a.Namespace, waypoint.LabelUseWaypoint, a.Name)
	}
	if a.ServiceAccount != "" {
		if err := o.labelServiceAccountTargets(ctx, c, a); err != nil {
			return err
		}
	}
	if !wait {
		return nil
	}
	return o.waitProgrammed(ctx, c, gw)
}

func ownedByGateway(refs []metav1.OwnerReference, name string) bool {
	return slices.ContainsFunc(refs, func(r metav1.OwnerReference) bool {
		return r.Kind == "Gateway" && r.Name == name && r.APIVersion == gatewayv1.GroupVersion.String()
	})
}

func (o *options) labelServiceAccountTargets(ctx context.Context, c *kube.Client, a waypoint.ApplyOptions) error {
	pods, err := c.Kube.CoreV1().Pods(a.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods of %s: %w", a.Namespace, err)
	}
	svcs, err := c.Kube.CoreV1().Services(a.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list services of %s: %w", a.Namespace, err)
	}
	t := waypoint.ServiceAccountTargets(a.ServiceAccount, a, pods.Items, svcs.Items)
	for _, s := range t.Services {
		if err := setUseWaypoint(ctx, c, "Service", a.Namespace, s, a.Name); err != nil {
			return err
		}
		fmt.Fprintf(o.errOut, "service %s/%s labelled %s=%s\n", a.Namespace, s, waypoint.LabelUseWaypoint, a.Name)
	}
	for _, p := range t.Pods {
		if err := setUseWaypoint(ctx, c, "Pod", a.Namespace, p, a.Name); err != nil {
			return err
		}
		fmt.Fprintf(o.errOut, "pod %s/%s labelled %s=%s\n", a.Namespace, p, waypoint.LabelUseWaypoint, a.Name)
	}
	for _, s := range t.Skipped {
		fmt.Fprintf(o.errOut, "note: %s: not labelled\n", s)
	}
	if len(t.Services)+len(t.Pods) == 0 {
		fmt.Fprintf(o.errOut, "warning: no Service or pod of namespace %s runs as service account %s: the waypoint serves nothing yet\n", a.Namespace, a.ServiceAccount)
	}
	return nil
}

// setUseWaypoint sets (name != "") or removes (name == "") the
// use-waypoint labels of one object with a JSON merge patch: the labels may
// have been set by kubectl, so server-side apply ownership cannot be
// relied on.
func setUseWaypoint(ctx context.Context, c *kube.Client, kind, ns, obj, name string) error {
	labels := map[string]any{waypoint.LabelUseWaypoint: name}
	if name == "" {
		labels = map[string]any{waypoint.LabelUseWaypoint: nil, waypoint.LabelUseWaypointNamespace: nil}
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	opts := metav1.PatchOptions{FieldManager: waypoint.FieldManager}
	var err error
	switch kind {
	case "Namespace":
		_, err = c.Kube.CoreV1().Namespaces().Patch(ctx, obj, types.MergePatchType, patch, opts)
	case "Service":
		_, err = c.Kube.CoreV1().Services(ns).Patch(ctx, obj, types.MergePatchType, patch, opts)
	case "Pod":
		_, err = c.Kube.CoreV1().Pods(ns).Patch(ctx, obj, types.MergePatchType, patch, opts)
	default:
		return fmt.Errorf("cannot label %s", kind)
	}
	if err != nil {
		return fmt.Errorf("label %s %s: %w", kind, nsName(ns, obj), err)
	}
	return nil
}

func nsName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

func (o *options) waitProgrammed(ctx context.Context, c *kube.Client, gw *gatewayv1.Gateway) error {
	start := time.Now()
	var last string
	for {
		cur, err := c.Gateway.GatewayV1().Gateways(gw.Namespace).Get(ctx, gw.Name, metav1.GetOptions{})
		if err == nil {
			for _, cond := range cur.Status.Conditions {
				if cond.Type != string(gatewayv1.GatewayConditionProgrammed) || cond.ObservedGeneration != cur.Generation {
					continue
				}
				if cond.Status == metav1.ConditionTrue {
					fmt.Fprintf(o.errOut, "waypoint %s/%s programmed after %s\n", gw.Namespace, gw.Name, time.Since(start).Round(100*time.Millisecond))
					return nil
				}
				last = cond.Reason + ": " + cond.Message
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			if last == "" {
				last = "no Programmed condition yet (is weft-control running?)"
			}
			return fmt.Errorf("waypoint %s/%s not Programmed within %s: %s", gw.Namespace, gw.Name, o.Timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func newWaypointList(o *options) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List waypoints: what they serve, whether they are programmed, their address and what uses them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.format()
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			ns := c.Namespace
			if all {
				ns = ""
			}
			gws, err := c.Gateway.GatewayV1().Gateways(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list Gateways: %w", err)
			}
			objs, err := labelledObjects(ctx, c)
			if err != nil {
				return err
			}
			l := waypoint.Rows(gws.Items, objs)
			return output.Print(o.out, f, l, l)
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the waypoints of every namespace")
	return cmd
}

// labelledObjects are the namespaces, Services and pods carrying
// istio.io/use-waypoint (any namespace: a label may name a waypoint of
// another namespace).
func labelledObjects(ctx context.Context, c *kube.Client) ([]waypoint.Labelled, error) {
	sel := metav1.ListOptions{LabelSelector: waypoint.LabelUseWaypoint}
	nss, err := c.Kube.CoreV1().Namespaces().List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	svcs, err := c.Kube.CoreV1().Services("").List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	pods, err := c.Kube.CoreV1().Pods("").List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	return waypoint.LabelledObjects(nss.Items, svcs.Items, pods.Items), nil
}

func newWaypointDelete(o *options) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "delete NAME... | --all",
		Short: "Delete waypoints and the istio.io/use-waypoint labels that name them",
		Long: `Deletes the Gateways (weft-control's garbage collection removes their
Deployment, Service and ServiceAccount). First the istio.io/use-waypoint
labels naming each waypoint are removed from namespaces, Services and pods,
so their traffic goes direct again instead of pointing at a missing
waypoint; each removal is printed.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateDeleteArgs(args, all); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			return o.deleteWaypoints(ctx, c, args, all)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "delete every waypoint of the namespace")
	return cmd
}

func validateDeleteArgs(args []string, all bool) error {
	switch {
	case all && len(args) > 0:
		return errors.New("give waypoint names or --all, not both")
	case !all && len(args) == 0:
		return errors.New("give the waypoints to delete (weftctl waypoint delete NAME...) or --all")
	}
	return nil
}

func (o *options) deleteWaypoints(ctx context.Context, c *kube.Client, names []string, all bool) error {
	gwi := c.Gateway.GatewayV1().Gateways(c.Namespace)
	var targets []gatewayv1.Gateway
	if all {
		l, err := gwi.List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list Gateways of %s: %w", c.Namespace, err)
		}
		for _, gw := range l.Items {
			if workload.IsWaypointClass(string(gw.Spec.GatewayClassName)) {
				targets = append(targets, gw)
			}
		}
		if len(targets) == 0 {
			fmt.Fprintf(o.errOut, "no waypoints in namespace %s\n", c.Namespace)
			return nil
		}
	} else {
		for _, n := range names {
			gw, err := gwi.Get(ctx, n, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("waypoint %s/%s not found", c.Namespace, n)
			}
			if err != nil {
				return fmt.Errorf("get Gateway %s/%s: %w", c.Namespace, n, err)
			}
			if !workload.IsWaypointClass(string(gw.Spec.GatewayClassName)) {
				return fmt.Errorf("gateway %s/%s is of class %s, not a waypoint (%s): not deleted", c.Namespace, n, gw.Spec.GatewayClassName, waypoint.ClassName)
			}
			targets = append(targets, *gw)
		}
	}
	objs, err := labelledObjects(ctx, c)
	if err != nil {
		return err
	}
	for _, gw := range targets {
		for _, u := range waypoint.Uses(gw.Namespace, gw.Name, objs) {
			if err := setUseWaypoint(ctx, c, u.Kind, u.Namespace, u.Name, ""); err != nil {
				return err
			}
			fmt.Fprintf(o.errOut, "note: removed label %s=%s from %s %s: its traffic no longer goes through a waypoint\n",
				waypoint.LabelUseWaypoint, gw.Name, lower(u.Kind), nsName(u.Namespace, u.Name))
		}
		if err := gwi.Delete(ctx, gw.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete Gateway %s/%s: %w", gw.Namespace, gw.Name, err)
		}
		fmt.Fprintf(o.errOut, "waypoint %s/%s deleted\n", gw.Namespace, gw.Name)
	}
	return nil
}

func lower(kind string) string {
	switch kind {
	case "Namespace":
		return "namespace"
	case "Service":
		return "service"
	}
	return "pod"
}

func newWaypointStatus(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a waypoint's conditions (Accepted, Programmed, listeners)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := o.format()
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			gw, err := c.Gateway.GatewayV1().Gateways(c.Namespace).Get(ctx, args[0], metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("get waypoint %s/%s: %w", c.Namespace, args[0], err)
			}
			s := waypoint.StatusOf(gw, time.Now())
			return output.Print(o.out, f, s, s)
		},
	}
}
