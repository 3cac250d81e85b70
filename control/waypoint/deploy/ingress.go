package deploy

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weft-mesh/weft/pkg/credential"
)

// Gateway API ingress (docs/ingress.md): for a Gateway of class weft, Weft
// deploys a gateway of its own (ingress_deploy.go), unless its annotation
// weft.io/gateway-selector names the pods that serve it (charts/gateway's,
// e.g. istio=ingress). control/waypoint translates them, and this
// controller writes their Accepted and Programmed conditions, their
// addresses (IngressAddresses) and their listeners' status.
const (
	IngressClassName          = "weft"
	AnnotationGatewaySelector = "weft.io/gateway-selector"
	// AnnotationCredentialNamespaces, on a gateway pod (charts/gateway
	// credentialNamespaces), lists the namespaces besides its own whose
	// Secrets it reads ("a,b"): where a certificateRef's Secret may be.
	AnnotationCredentialNamespaces = "weft.io/credential-namespaces"
)

// IsIngress reports whether gw is a Gateway API ingress Gateway.
func IsIngress(gw *gatewayv1.Gateway) bool {
	return gw != nil && string(gw.Spec.GatewayClassName) == IngressClassName
}

// IngressProtocolSupported reports whether an ingress Gateway serves
// listeners of protocol p. The translation (control/waypoint) ignores the
// other listeners and the status reports them not accepted: both ask here
// so they cannot disagree.
func IngressProtocolSupported(p gatewayv1.ProtocolType) bool {
	return p == gatewayv1.HTTPProtocolType || p == gatewayv1.HTTPSProtocolType
}

// UnsupportedIngressProtocol says why a listener of protocol p, which
// IngressProtocolSupported rejects, is ignored.
func UnsupportedIngressProtocol(p gatewayv1.ProtocolType) string {
	return fmt.Sprintf("protocol: %s is not supported yet (HTTP and HTTPS only); listener ignored", p)
}

// IngressSelector is the label set of the gateway pods serving gw (in
// IngressNamespace): its deployed gateway's, or those its annotation
// weft.io/gateway-selector names. Its error says why gw is not served
// (not accepted, InvalidParameters): a bad annotation, or an
// infrastructure.parametersRef, which no Weft gateway takes.
func IngressSelector(gw *gatewayv1.Gateway) (map[string]string, error) {
	if inf := gw.Spec.Infrastructure; inf != nil && inf.ParametersRef != nil {
		return nil, fmt.Errorf("infrastructure.parametersRef %s/%s %q: not supported (Weft's gateways take no parameters object)",
			inf.ParametersRef.Group, inf.ParametersRef.Kind, inf.ParametersRef.Name)
	}
	if Deployed(gw) {
		return SelectorLabels(gw), nil
	}
	s := gw.Annotations[AnnotationGatewaySelector]
	sel, err := labels.ConvertSelectorToLabelsMap(s)
	if err == nil && len(sel) == 0 {
		err = fmt.Errorf("empty")
	}
	if err != nil {
		return nil, fmt.Errorf("annotation %s=%q: want labels k=v[,k=v] of the gateway pods: %w", AnnotationGatewaySelector, s, err)
	}
	return sel, nil
}

// IngressObserved is what the status of an ingress Gateway depends on
// besides the Gateway itself.
type IngressObserved struct {
	// ReadyPods is the number of ready gateway pods its selector matches.
	ReadyPods int
	// Grants are the ReferenceGrants of the cluster (certificateRefs to
	// other namespaces).
	Grants []*gatewayv1beta1.ReferenceGrant
	// Secrets holds why each Secret an HTTPS listener names
	// (ListenerCredential) cannot be served; a Secret not in it is usable.
	Secrets map[SecretRef]error
	// DeployErr is why the gateway's objects could not be applied (a
	// deployed gateway only).
	DeployErr error
}

// IngressStatus is the status of ingress Gateway gw given what the
// controller observed: Accepted unless the selector is invalid or no
// listener can be served, Programmed once a ready pod serves it and every
// listener is served, and the status of every listener. Other conditions
// are kept. Pure except for now (condition stamps).
func IngressStatus(gw *gatewayv1.Gateway, obs IngressObserved, now time.Time) gatewayv1.GatewayStatus {
	st := *gw.Status.DeepCopy()
	sel, err := IngressSelector(gw)
	var programmed listenerCondition // of a served listener
	switch {
	case err != nil:
		programmed = listenerFalse(gatewayv1.ListenerReasonInvalid, "the Gateway is not accepted: "+err.Error())
	case obs.DeployErr != nil:
		programmed = listenerFalse(gatewayv1.ListenerReasonPending, "creating the gateway's objects failed: "+obs.DeployErr.Error())
	case obs.ReadyPods == 0 && Deployed(gw):
		programmed = listenerFalse(gatewayv1.ListenerReasonPending, "no ready pod of Deployment "+ObjectName(gw)+" yet")
	case obs.ReadyPods == 0:
		programmed = listenerFalse(gatewayv1.ListenerReasonPending,
			fmt.Sprintf("no ready gateway pod matches %s (install charts/gateway)", labels.Set(sel)))
	default:
		programmed = listenerTrue(gatewayv1.ListenerReasonProgrammed,
			fmt.Sprintf("served by %d ready gateway pod(s) matching %s", obs.ReadyPods, labels.Set(sel)))
	}
	reports := make([]listenerReport, len(gw.Spec.Listeners))
	for i := range gw.Spec.Listeners {
		reports[i] = ingressListener(gw, i, programmed, obs)
		if err != nil { // the translation ignores the whole Gateway
			reports[i].accepted, reports[i].programmed = programmed, programmed
		}
	}
	setIngressConditions(&st, gw, err, programmed, reports, now)
	setListeners(&st, gw, reports, now)
	return st
}

// setIngressConditions sets the Accepted and Programmed conditions of
// ingress Gateway gw: selectorErr is its selector annotation's error,
// programmed the Programmed condition of its served listeners.
//
// Some listeners not served (an unsupported protocol, a certificate that
// does not resolve, say) leave the Gateway Accepted, with reason
// ListenersNotValid, which the spec allows "when Accepted is True or
// False, depending on whether the listener being invalid causes the
// entire Gateway to not be accepted"; only when no listener is served is
// it not accepted. Programmed is then False (Invalid), its message naming
// the listeners not served: a Gateway that says Programmed while one of
// its listeners (an HTTPS one without its certificate, say) serves
// nothing would tell clients waiting for it that it is ready when it is
// not. The served listeners' own Programmed stay True.
func setIngressConditions(st *gatewayv1.GatewayStatus, gw *gatewayv1.Gateway, selectorErr error, programmed listenerCondition,
	reports []listenerReport, now time.Time) {
	set := func(typ gatewayv1.GatewayConditionType, ok bool, reason gatewayv1.GatewayConditionReason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: string(typ), Status: s, Reason: string(reason), Message: msg,
			ObservedGeneration: gw.Generation, LastTransitionTime: metav1.NewTime(now)})
	}
	ignored, why := notServed(gw, reports)
	switch {
	case selectorErr != nil:
		set(gatewayv1.GatewayConditionAccepted, false, gatewayv1.GatewayReasonInvalidParameters, selectorErr.Error())
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid, "not accepted: "+selectorErr.Error())
		return
	case len(ignored) > 0 && len(ignored) == len(reports):
		msg := "no listener can be served: " + strings.Join(why, "; ")
		set(gatewayv1.GatewayConditionAccepted, false, gatewayv1.GatewayReasonListenersNotValid, msg)
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid, "not accepted: "+msg)
		return
	case len(ignored) > 0:
		set(gatewayv1.GatewayConditionAccepted, true, gatewayv1.GatewayReasonListenersNotValid,
			"Weft ingress gateway; listeners not served: "+strings.Join(why, "; "))
	default:
		set(gatewayv1.GatewayConditionAccepted, true, gatewayv1.GatewayReasonAccepted, "Weft ingress gateway")
	}
	switch {
	case programmed.status != metav1.ConditionTrue:
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonPending, programmed.message)
	case len(ignored) > 0:
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid,
			programmed.message+"; listeners not served: "+strings.Join(why, "; "))
	default:
		set(gatewayv1.GatewayConditionProgrammed, true, gatewayv1.GatewayReasonProgrammed, programmed.message)
	}
}

// ingressRecheck is how soon an ingress Gateway without ready pods or an
// address (a load balancer not assigned yet) is looked at again (the
// controller does not watch the chart's pods and Services).
const ingressRecheck = 10 * time.Second

// IngressAddresses are the addresses of ingress Gateway's serving pods,
// for its status.addresses, where clients send the Gateway's traffic: the
// Services in the ready pods' namespaces whose selectors select one of
// them (charts/gateway's Service): a LoadBalancer Service's ingress IPs and
// hostnames (none until the load balancer has assigned them: clients
// cannot reach its ClusterIP), another Service's ClusterIPs. Sorted, no
// duplicates. Pure.
func IngressAddresses(readyPods []corev1.Pod, svcs []corev1.Service) []gatewayv1.GatewayStatusAddress {
	var out []gatewayv1.GatewayStatusAddress
	add := func(typ gatewayv1.AddressType, v string) {
		if v != "" && v != corev1.ClusterIPNone {
			out = append(out, gatewayv1.GatewayStatusAddress{Type: ptr.To(typ), Value: v})
		}
	}
	for i := range svcs {
		svc := &svcs[i]
		if len(svc.Spec.Selector) == 0 || !slices.ContainsFunc(readyPods, func(p corev1.Pod) bool {
			return p.Namespace == svc.Namespace && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.Labels))
		}) {
			continue
		}
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			for _, in := range svc.Status.LoadBalancer.Ingress {
				add(gatewayv1.IPAddressType, in.IP)
				add(gatewayv1.HostnameAddressType, in.Hostname)
			}
			continue
		}
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			add(gatewayv1.IPAddressType, ip)
		}
	}
	slices.SortFunc(out, func(a, b gatewayv1.GatewayStatusAddress) int {
		return cmp.Or(cmp.Compare(*a.Type, *b.Type), cmp.Compare(a.Value, b.Value))
	})
	return slices.CompactFunc(out, func(a, b gatewayv1.GatewayStatusAddress) bool { return *a.Type == *b.Type && a.Value == b.Value })
}

// reconcileIngress writes an ingress Gateway's status; it returns how
// long to wait before looking again (0: not needed).
func (c *Controller) reconcileIngress(ctx context.Context, gw *gatewayv1.Gateway) (time.Duration, error) {
	grants, err := c.referenceGrants(ctx)
	if err != nil {
		return 0, err
	}
	var pods ingressPods
	var deployErr error
	sel, serr := IngressSelector(gw)
	switch {
	case serr != nil: // not accepted: nothing deployed, no pods
	case Deployed(gw):
		pods, deployErr, err = c.deployIngress(ctx, gw, grants)
	default:
		pods, err = c.selectedPods(ctx, sel)
	}
	if err != nil {
		return 0, err
	}
	ready, addrs := pods.ready, pods.addrs
	secrets, checked, err := c.ingressSecrets(ctx, gw, grants, pods.secretNamespaces)
	if err != nil {
		return 0, err
	}
	st := IngressStatus(gw, IngressObserved{ReadyPods: len(ready), Grants: grants, Secrets: secrets, DeployErr: deployErr}, time.Now())
	st.Addresses = addrs
	if err := c.setAttachedRoutes(ctx, gw, &st); err != nil {
		return 0, err
	}
	if !StatusEqual(gw.Status, st) {
		updated := gw.DeepCopy()
		updated.Status = st
		if _, err := c.Gateway.GatewayV1().Gateways(gw.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			return 0, fmt.Errorf("gateway status: %w", err)
		}
	}
	// The controller does not watch the chart's pods and Services, nor
	// Secrets: a load balancer may assign an address later, a missing
	// Secret may be created, a good one replaced by a bad one.
	switch {
	case len(ready) == 0 || len(addrs) == 0 || len(secrets) > 0:
		return ingressRecheck, nil
	case checked > 0:
		return secretRecheck, nil
	}
	return 0, nil
}

// ingressPods is what the controller sees of the pods serving an ingress
// Gateway: the ready ones, the addresses of their Services
// (IngressAddresses) and the namespaces where any of them, ready or not,
// reads Secrets.
type ingressPods struct {
	ready            []corev1.Pod
	addrs            []gatewayv1.GatewayStatusAddress
	secretNamespaces map[string]bool
}

// selectedPods are the pods (in every namespace) that selector sel of a
// Gateway served by charts/gateway selects; they read Secrets of their
// namespace and of the namespaces their annotation
// weft.io/credential-namespaces names.
func (c *Controller) selectedPods(ctx context.Context, sel map[string]string) (ingressPods, error) {
	out := ingressPods{secretNamespaces: map[string]bool{}}
	pods, err := c.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: labels.Set(sel).String()})
	if err != nil {
		return out, fmt.Errorf("listing gateway pods: %w", err)
	}
	namespaces := map[string]bool{}
	for i := range pods.Items {
		out.secretNamespaces[pods.Items[i].Namespace] = true
		for _, ns := range strings.Split(pods.Items[i].Annotations[AnnotationCredentialNamespaces], ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				out.secretNamespaces[ns] = true
			}
		}
		if podReady(&pods.Items[i]) {
			out.ready = append(out.ready, pods.Items[i])
			namespaces[pods.Items[i].Namespace] = true
		}
	}
	var svcs []corev1.Service
	for ns := range namespaces {
		list, err := c.Kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return out, fmt.Errorf("listing the gateway pods' Services: %w", err)
		}
		svcs = append(svcs, list.Items...)
	}
	out.addrs = IngressAddresses(out.ready, svcs)
	return out, nil
}

// deployIngress applies the objects of gw's deployed gateway
// (ingress_deploy.go) and returns its pods, whose addresses are its
// Service's and which read Secrets of gw's namespace and of those its
// certificateRefs point to; deployErr is why the objects could not be
// applied (then no pod counts: they may be someone else's).
func (c *Controller) deployIngress(ctx context.Context, gw *gatewayv1.Gateway, grants []*gatewayv1beta1.ReferenceGrant) (out ingressPods, deployErr, err error) {
	credNS := credentialNamespaces(gw, grants)
	out.secretNamespaces = map[string]bool{gw.Namespace: true}
	for _, ns := range credNS {
		out.secretNamespaces[ns] = true
	}
	n, deployErr := replicas(gw)
	if deployErr != nil {
		return out, deployErr, nil
	}
	_, svc, deployErr := c.apply(ctx, gw, Desired(c.Config, gw, n, credNS...))
	if deployErr != nil {
		return out, deployErr, nil
	}
	if err := c.pruneBindings(ctx, gw.Namespace, gw.Name, out.secretNamespaces); err != nil {
		return out, nil, err
	}
	pods, err := c.Kube.CoreV1().Pods(gw.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.Set(SelectorLabels(gw)).String()})
	if err != nil {
		return out, nil, fmt.Errorf("listing gateway pods: %w", err)
	}
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			out.ready = append(out.ready, pods.Items[i])
		}
	}
	if svc != nil {
		out.addrs = IngressAddresses(out.ready, []corev1.Service{*svc})
	}
	return out, nil, nil
}

// secretRecheck is how soon an ingress Gateway whose certificate Secrets
// all resolved is looked at again: a Secret deleted or overwritten with
// something unusable shows in its listener's status within this time.
const secretRecheck = time.Minute

// ingressSecrets checks the Secrets that the HTTPS listeners of gw name
// (ListenerCredential; those it refuses are not read) and returns why
// each that cannot be served cannot: not in a namespace the gateway pods
// read Secrets of (podNamespaces: theirs and their credentialNamespaces;
// not checked while there is no pod), missing, not readable by
// weft-control, or not a certificate and key (credential.Parse, the
// gateway's own rule); checked is how many Secrets it looked at. The
// Secret is read only to check it: weft-control keeps and sends nothing
// of it.
func (c *Controller) ingressSecrets(ctx context.Context, gw *gatewayv1.Gateway, grants []*gatewayv1beta1.ReferenceGrant,
	podNamespaces map[string]bool) (out map[SecretRef]error, checked int, err error) {
	out = map[SecretRef]error{}
	seen := map[SecretRef]bool{}
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		if l.Protocol != gatewayv1.HTTPSProtocolType {
			continue
		}
		ref, err := ListenerCredential(gw, l, grants)
		if err != nil || seen[ref] {
			continue
		}
		seen[ref] = true
		if len(podNamespaces) > 0 && !podNamespaces[ref.Namespace] {
			out[ref] = fmt.Errorf("certificate Secret %s: the gateway pods read certificates from their own namespace and their credentialNamespaces (%s) only; "+
				"put the Secret there (with a ReferenceGrant when the Gateway is in another namespace) or add %s to charts/gateway's credentialNamespaces",
				ref, strings.Join(slices.Sorted(maps.Keys(podNamespaces)), ", "), ref.Namespace)
			continue
		}
		sec, err := c.Kube.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			out[ref] = fmt.Errorf("certificate Secret %s not found", ref)
		case apierrors.IsForbidden(err):
			out[ref] = fmt.Errorf("certificate Secret %s: weft-control may not read it to check it (charts/gateway lets it read the Secrets of the gateway's namespace)", ref)
		case err != nil:
			return nil, 0, fmt.Errorf("reading Secret %s: %w", ref, err)
		default:
			if _, err := credential.Parse(sec); err != nil {
				out[ref] = err
			}
		}
	}
	return out, len(seen), nil
}

// referenceGrants are the cluster's ReferenceGrants: from the informer
// under Run, else listed.
func (c *Controller) referenceGrants(ctx context.Context) ([]*gatewayv1beta1.ReferenceGrant, error) {
	var out []*gatewayv1beta1.ReferenceGrant
	if c.grants != nil {
		for _, o := range c.grants.List() {
			if g, ok := o.(*gatewayv1beta1.ReferenceGrant); ok {
				out = append(out, g)
			}
		}
		return out, nil
	}
	list, err := c.Gateway.GatewayV1beta1().ReferenceGrants("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing ReferenceGrants: %w", err)
	}
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// setAttachedRoutes sets the attachedRoutes of the listeners in st, the
// status of ingress Gateway gw (AttachedRoutes). Namespace labels are read
// only for listeners with a namespace selector; a change of labels is seen
// at the next change of the Gateway or of a route naming it.
func (c *Controller) setAttachedRoutes(ctx context.Context, gw *gatewayv1.Gateway, st *gatewayv1.GatewayStatus) error {
	var routes []*gatewayv1.HTTPRoute
	if c.httpRoutes != nil {
		for _, o := range c.httpRoutes.List() {
			if hr, ok := o.(*gatewayv1.HTTPRoute); ok {
				routes = append(routes, hr)
			}
		}
	} else {
		list, err := c.Gateway.GatewayV1().HTTPRoutes("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("listing HTTPRoutes: %w", err)
		}
		for i := range list.Items {
			routes = append(routes, &list.Items[i])
		}
	}
	nsLabels := map[string]labels.Set{}
	if slices.ContainsFunc(gw.Spec.Listeners, func(l gatewayv1.Listener) bool {
		return l.AllowedRoutes != nil && l.AllowedRoutes.Namespaces != nil &&
			ptr.Deref(l.AllowedRoutes.Namespaces.From, "") == gatewayv1.NamespacesFromSelector
	}) {
		list, err := c.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("listing namespaces (allowedRoutes selectors): %w", err)
		}
		for _, ns := range list.Items {
			nsLabels[ns.Name] = ns.Labels
		}
	}
	accepted := make([]bool, len(gw.Spec.Listeners))
	for i, l := range gw.Spec.Listeners {
		j := slices.IndexFunc(st.Listeners, func(s gatewayv1.ListenerStatus) bool { return s.Name == l.Name })
		accepted[i] = j >= 0 && meta.IsStatusConditionTrue(st.Listeners[j].Conditions, string(gatewayv1.ListenerConditionAccepted))
	}
	counts := AttachedRoutes(gw, accepted, routes, nsLabels)
	for i, l := range gw.Spec.Listeners {
		if j := slices.IndexFunc(st.Listeners, func(s gatewayv1.ListenerStatus) bool { return s.Name == l.Name }); j >= 0 {
			st.Listeners[j].AttachedRoutes = counts[i]
		}
	}
	return nil
}
