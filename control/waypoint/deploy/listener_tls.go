package deploy

import (
	"fmt"
	"slices"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weft-mesh/weft/control/refgrant"
)

// HTTPS listeners of ingress Gateways (tls.mode Terminate): the gateway
// terminates TLS with the certificate of the one Secret the listener's
// certificateRefs name, as it does for an Istio Gateway's credentialName
// (control/waypoint gateway_tls.go). The Secret may be of the Gateway's
// namespace or of another one whose ReferenceGrants allow it; the gateway
// pods read Secrets of their own namespace and of their
// credentialNamespaces only (charts/gateway), so weft-control reports a
// Secret of any other namespace unusable (ListenerCredential's caller,
// the status).
//
// Not supported, each reported on the listener: tls.mode Passthrough
// (TLSRoute), tls.options, more than one certificateRef (the gateway
// serves one certificate per filter chain), and the Gateway's
// spec.tls.frontend (client certificate validation: its HTTPS listeners
// are not served rather than served without it). The Gateway's
// spec.tls.backend is reported by the translation.

// SecretRef names a Secret.
type SecretRef struct{ Namespace, Name string }

func (r SecretRef) String() string { return r.Namespace + "/" + r.Name }

// ListenerError is why a listener cannot be served: the listener
// condition (Accepted or ResolvedRefs) that is False, with the Gateway API
// reason. The translation reports Error() as a problem; the status sets
// the condition.
type ListenerError struct {
	Condition gatewayv1.ListenerConditionType
	Reason    gatewayv1.ListenerConditionReason
	Message   string
}

func (e *ListenerError) Error() string { return e.Message }

// ListenerCredential is the Secret whose certificate HTTPS listener l of
// ingress Gateway gw serves, or why there is none: an unsupported setting
// (Accepted=False, UnsupportedValue), a certificateRef that is not a
// Secret (ResolvedRefs=False, InvalidCertificateRef) or one of another
// namespace that no ReferenceGrant opens to the Gateway (ResolvedRefs=
// False, RefNotPermitted). Whether the Secret exists and holds a
// certificate is not known here (the translation never reads it).
func ListenerCredential(gw *gatewayv1.Gateway, l *gatewayv1.Listener, grants []*gatewayv1beta1.ReferenceGrant) (SecretRef, error) {
	unsupported := func(format string, args ...any) (SecretRef, error) {
		return SecretRef{}, &ListenerError{gatewayv1.ListenerConditionAccepted, gatewayv1.ListenerReasonUnsupportedValue, fmt.Sprintf(format, args...)}
	}
	invalid := func(reason gatewayv1.ListenerConditionReason, format string, args ...any) (SecretRef, error) {
		return SecretRef{}, &ListenerError{gatewayv1.ListenerConditionResolvedRefs, reason, fmt.Sprintf(format, args...)}
	}
	tls := l.TLS
	switch {
	case gw.Spec.TLS != nil && gw.Spec.TLS.Frontend != nil:
		// Serving without the client validation asked for would let in
		// clients it should refuse: not served at all.
		return unsupported("the Gateway's spec.tls.frontend (client certificate validation) is not supported; HTTPS listeners are not served")
	case tls == nil:
		return invalid(gatewayv1.ListenerReasonInvalidCertificateRef, "tls: required for an HTTPS listener")
	case tls.Mode != nil && *tls.Mode != gatewayv1.TLSModeTerminate:
		return unsupported("tls.mode: %s is not supported for HTTPS (Terminate only)", *tls.Mode)
	case len(tls.Options) > 0:
		keys := make([]string, 0, len(tls.Options))
		for k := range tls.Options {
			keys = append(keys, string(k))
		}
		slices.Sort(keys)
		return unsupported("tls.options: %s not supported", strings.Join(keys, ", "))
	case len(tls.CertificateRefs) == 0:
		return invalid(gatewayv1.ListenerReasonInvalidCertificateRef, "tls.certificateRefs: required (a Secret of type kubernetes.io/tls)")
	case len(tls.CertificateRefs) > 1:
		return unsupported("tls.certificateRefs: %d given; Weft serves one certificate per listener", len(tls.CertificateRefs))
	}
	ref := tls.CertificateRefs[0]
	if ref.Group != nil && *ref.Group != "" && *ref.Group != "core" || ref.Kind != nil && *ref.Kind != "Secret" {
		return invalid(gatewayv1.ListenerReasonInvalidCertificateRef, "tls.certificateRefs[0]: %s is not a Secret (only core Secrets hold certificates)",
			groupKind(ref.Group, ref.Kind))
	}
	s := SecretRef{Namespace: gw.Namespace, Name: string(ref.Name)}
	if ref.Namespace != nil && *ref.Namespace != "" {
		s.Namespace = string(*ref.Namespace)
	}
	if !refgrant.GatewaySecret(grants, gw.Namespace, s.Namespace, s.Name) {
		return invalid(gatewayv1.ListenerReasonRefNotPermitted,
			"tls.certificateRefs[0]: Secret %s: no ReferenceGrant in namespace %s allows Gateways of namespace %s to reference it", s, s.Namespace, gw.Namespace)
	}
	return s, nil
}

func groupKind(g *gatewayv1.Group, k *gatewayv1.Kind) string {
	kind := "Secret"
	if k != nil {
		kind = string(*k)
	}
	if g == nil || *g == "" {
		return kind
	}
	return kind + "." + string(*g)
}
