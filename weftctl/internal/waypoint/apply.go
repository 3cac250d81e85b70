// Package waypoint holds weftctl's waypoint logic as pure functions: the
// Gateway `waypoint apply` writes (the same shape as `istioctl waypoint
// apply`, with Weft's GatewayClass), which objects a per-service-account
// waypoint labels, and the rows of `waypoint list` and `waypoint status`.
package waypoint

import (
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwac "sigs.k8s.io/gateway-api/applyconfiguration/apis/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// The Istio ambient API that Weft reads (control/workload) and the
// waypoint contract (control/waypoint/deploy).
const (
	ClassName                 = mesh.WaypointClass
	LabelWaypointFor          = mesh.LabelWaypointFor
	LabelUseWaypoint          = mesh.LabelUseWaypoint
	LabelUseWaypointNamespace = mesh.LabelUseWaypointNamespace
	LabelDataplaneMode        = mesh.LabelDataplaneMode
	LabelGatewayName          = mesh.LabelGatewayName
	// AnnotationServiceAccount records on the Gateway which service
	// account a per-service-account waypoint was made for (informational:
	// the labels on the Services and pods are what routes traffic).
	AnnotationServiceAccount = "weft.io/for-service-account"
	ListenerName             = mesh.WaypointGatewayListener
	FieldManager             = "weftctl"
	DefaultName              = "waypoint"
)

// The values of istio.io/waypoint-for.
const (
	ForService  = "service"
	ForWorkload = "workload"
	ForAll      = "all"
	ForNone     = "none"
)

// ApplyOptions are `waypoint apply`'s flags.
type ApplyOptions struct {
	Name            string // --name ("" = default)
	Namespace       string
	For             string // --for ("" = default)
	ServiceAccount  string // --service-account
	EnrollNamespace bool
}

// Complete fills the defaults and validates the combination. Without
// --service-account the defaults are istioctl's: name "waypoint", for
// "service". With it the waypoint is named "<sa>-waypoint" (not "<sa>": the
// waypoint runs as a ServiceAccount named like the Gateway, which must never
// be the application's own) and serves "all" traffic of the labelled
// objects.
func (o *ApplyOptions) Complete() error {
	var errs []error
	if o.ServiceAccount != "" {
		if msgs := validation.IsDNS1123Subdomain(o.ServiceAccount); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--service-account %q: %v", o.ServiceAccount, msgs))
		}
		if o.Name == "" {
			o.Name = o.ServiceAccount + "-waypoint"
		}
		if o.For == "" {
			o.For = ForAll
		}
		if o.EnrollNamespace {
			errs = append(errs, errors.New("--enroll-namespace and --service-account exclude each other: a service account's waypoint serves only that account's workloads, not the namespace"))
		}
		if o.For == ForNone {
			errs = append(errs, errors.New("--for none with --service-account: the waypoint would serve nothing"))
		}
		if o.Name == o.ServiceAccount {
			errs = append(errs, fmt.Errorf("--name %q equals --service-account: the waypoint runs as a ServiceAccount named like the Gateway and would take over the application's identity; choose another name", o.Name))
		}
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.For == "" {
		o.For = ForService
	}
	switch o.For {
	case ForService, ForWorkload, ForAll, ForNone:
	default:
		errs = append(errs, fmt.Errorf("--for %q: want service, workload, all or none", o.For))
	}
	if o.For == ForNone && o.EnrollNamespace {
		errs = append(errs, errors.New("--enroll-namespace with --for none: the waypoint would serve nothing"))
	}
	if msgs := validation.IsDNS1123Label(o.Name); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--name %q: %v", o.Name, msgs))
	}
	if o.Name == "none" {
		errs = append(errs, errors.New(`--name "none": reserved (istio.io/use-waypoint=none opts an object out)`))
	}
	return errors.Join(errs...)
}

// ServesServices and ServesWorkloads say what kind of traffic the
// waypoint takes.
func (o *ApplyOptions) ServesServices() bool  { return o.For == ForService || o.For == ForAll }
func (o *ApplyOptions) ServesWorkloads() bool { return o.For == ForWorkload || o.For == ForAll }

// Gateway is the object `waypoint apply` server-side applies: exactly what
// `istioctl waypoint apply` writes, with class weft-waypoint.
func Gateway(o ApplyOptions) *gwac.GatewayApplyConfiguration {
	gw := gwac.Gateway(o.Name, o.Namespace).
		WithLabels(map[string]string{LabelWaypointFor: o.For}).
		WithSpec(gwac.GatewaySpec().
			WithGatewayClassName(ClassName).
			WithListeners(gwac.Listener().
				WithName(ListenerName).
				WithPort(mesh.HBONEPort).
				WithProtocol(gatewayv1.ProtocolType(mesh.HBONEProtocol))))
	if o.ServiceAccount != "" {
		gw.WithAnnotations(map[string]string{AnnotationServiceAccount: o.ServiceAccount})
	}
	return gw
}

// Targets are the objects a per-service-account waypoint labels.
type Targets struct {
	Pods     []string // running as the service account (when it serves workloads)
	Services []string // every selected pod runs as the account (when it serves services)
	// Skipped explains Services left alone.
	Skipped []string
}

// ServiceAccountTargets picks what `waypoint apply --service-account` labels
// with istio.io/use-waypoint in one namespace, so that the waypoint serves
// exactly the account's workloads with the translation as it is
// (control/workload: a Service's or pod's own label wins over its
// namespace's):
//   - Services whose selected pods (at least one) all run as the account:
//     traffic to them goes through the waypoint (waypoint-for service/all);
//   - the account's pods themselves: traffic addressed to a pod IP goes
//     through it (waypoint-for workload/all).
//
// Services selecting pods of other accounts too are skipped: labelling them
// would send other accounts' workloads through the waypoint. Waypoint pods
// and terminated pods are ignored.
func ServiceAccountTargets(sa string, o ApplyOptions, pods []corev1.Pod, services []corev1.Service) Targets {
	var t Targets
	live := make([]corev1.Pod, 0, len(pods))
	for _, p := range pods {
		if p.Labels[LabelGatewayName] != "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
			continue
		}
		live = append(live, p)
		if o.ServesWorkloads() && serviceAccountOf(&p) == sa {
			t.Pods = append(t.Pods, p.Name)
		}
	}
	if o.ServesServices() {
		for _, s := range services {
			if len(s.Spec.Selector) == 0 || s.Labels[LabelGatewayName] != "" {
				continue
			}
			sel := labels.SelectorFromSet(s.Spec.Selector)
			var mine, others int
			var other string
			for i := range live {
				if !sel.Matches(labels.Set(live[i].Labels)) {
					continue
				}
				if serviceAccountOf(&live[i]) == sa {
					mine++
				} else {
					others++
					other = serviceAccountOf(&live[i])
				}
			}
			switch {
			case mine > 0 && others == 0:
				t.Services = append(t.Services, s.Name)
			case mine > 0:
				t.Skipped = append(t.Skipped, fmt.Sprintf("service %s: also selects pods of service account %s", s.Name, other))
			}
		}
	}
	slices.Sort(t.Pods)
	slices.Sort(t.Services)
	return t
}

func serviceAccountOf(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName == "" {
		return "default"
	}
	return p.Spec.ServiceAccountName
}
