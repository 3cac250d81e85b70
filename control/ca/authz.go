package ca

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// ErrPermissionDenied is wrapped by every authorization refusal (a
// *DeniedError). Other Authorize errors mean the pod lookup failed.
var ErrPermissionDenied = errors.New("permission denied")

// DeniedError says who asked for what and why it was refused.
type DeniedError struct {
	Caller    string
	Requested string
	Reason    string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("caller %s may not obtain a certificate for %s: %s", e.Caller, e.Requested, e.Reason)
}

// Unwrap makes errors.Is(err, ErrPermissionDenied) true.
func (e *DeniedError) Unwrap() error { return ErrPermissionDenied }

// ServiceAccountRef names a service account.
type ServiceAccountRef struct {
	Namespace string
	Name      string
}

// DefaultNodeAgent is the node agent's service account in the default
// installation.
var DefaultNodeAgent = ServiceAccountRef{Namespace: mesh.SystemNamespace, Name: "weft-node-agent"}

// ParseServiceAccountRef parses "namespace/name".
func ParseServiceAccountRef(s string) (ServiceAccountRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return ServiceAccountRef{}, fmt.Errorf("service account %q: want namespace/name", s)
	}
	return ServiceAccountRef{Namespace: ns, Name: name}, nil
}

func (r ServiceAccountRef) String() string { return r.Namespace + "/" + r.Name }

// PodLookup answers the questions authorization asks about pods. The
// control plane backs it with a pod informer (see PodIndexers and
// NewIndexerPodLookup).
type PodLookup interface {
	// PodsOnNode lists the pods whose spec.nodeName is node.
	PodsOnNode(node string) ([]*corev1.Pod, error)
	// Pod returns the named pod, or nil and no error if there is none.
	Pod(namespace, name string) (*corev1.Pod, error)
}

// Authorizer decides whether an authenticated caller may obtain a
// certificate for an identity. A refusal wraps ErrPermissionDenied; any
// other error is a lookup failure.
type Authorizer interface {
	Authorize(ctx context.Context, caller *Caller, requested spiffeid.ID) error
}

// Policy is the CA's authorization policy.
type Policy struct {
	// TrustDomain certificates are issued in.
	TrustDomain spiffeid.TrustDomain
	// NodeAgent is the service account of node agents, which may obtain
	// certificates for service accounts with a pod on their node. Zero
	// disables the node-agent rule.
	NodeAgent ServiceAccountRef
}

// Authorize is the policy as a function of its inputs. requested is
// allowed if
//
//   - it is exactly the caller's own spiffe://<td>/ns/<ns>/sa/<sa>, or
//   - the caller is the node agent service account, its token is bound to a
//     pod that exists, has not terminated, has the token's UID (if the
//     token names one) and runs as that service account, on the node the
//     token names (if it names one), and on that pod's node N a pod that has
//     not terminated runs as the requested ns/sa. A token bound only to a
//     node (or to nothing) is not enough, as with istiod.
//
// Anything else, including any identity outside the trust domain, is denied.
func Authorize(p Policy, pods PodLookup, caller *Caller, requested spiffeid.ID) error {
	if caller == nil {
		return &DeniedError{Caller: caller.String(), Requested: requested.String(), Reason: "no authenticated caller"}
	}
	deny := func(format string, args ...any) error {
		return &DeniedError{Caller: caller.String(), Requested: requested.String(), Reason: fmt.Sprintf(format, args...)}
	}
	if !requested.MemberOf(p.TrustDomain) {
		return deny("identity is outside trust domain %q", p.TrustDomain.Name())
	}
	own, err := caller.ID(p.TrustDomain)
	if err == nil && own == requested {
		return nil
	}
	isNodeAgent := p.NodeAgent != (ServiceAccountRef{}) &&
		caller.Namespace == p.NodeAgent.Namespace && caller.ServiceAccount == p.NodeAgent.Name
	if !isNodeAgent {
		return deny("a workload may only obtain its own identity %s", own)
	}
	ns, sa, ok := mesh.ParseWorkloadID(requested)
	if !ok {
		return deny("identity is not of the form spiffe://%s/ns/<namespace>/sa/<service-account>", p.TrustDomain.Name())
	}
	if pods == nil {
		return errors.New("node agent authorization needs a pod lookup; none configured")
	}
	node, err := callerNode(pods, caller)
	if err != nil {
		return err
	}
	if node == "" {
		return deny("node agent token is not bound to a running node agent pod; mount a projected service-account token")
	}
	onNode, err := pods.PodsOnNode(node)
	if err != nil {
		return fmt.Errorf("listing pods on node %q: %w", node, err)
	}
	for _, pod := range onNode {
		if pod.Spec.NodeName != node || pod.Namespace != ns || podServiceAccount(pod) != sa || podTerminated(pod) {
			continue
		}
		return nil
	}
	return deny("no running pod on node %q uses service account %s/%s", node, ns, sa)
}

// callerNode returns the node of the running pod the caller's token is
// bound to, checked as Authorize says (a pod recreated under the same name
// does not count). "" if there is no such pod.
func callerNode(pods PodLookup, caller *Caller) (string, error) {
	if caller.PodName == "" {
		return "", nil
	}
	pod, err := pods.Pod(caller.Namespace, caller.PodName)
	if err != nil {
		return "", fmt.Errorf("looking up bound pod %s/%s: %w", caller.Namespace, caller.PodName, err)
	}
	if pod == nil || podTerminated(pod) {
		return "", nil
	}
	if caller.PodUID != "" && string(pod.UID) != caller.PodUID {
		return "", nil
	}
	if podServiceAccount(pod) != caller.ServiceAccount || (caller.NodeName != "" && caller.NodeName != pod.Spec.NodeName) {
		return "", nil
	}
	return pod.Spec.NodeName, nil
}

func podServiceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}

func podTerminated(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// NodeAuthorizer applies a Policy with a PodLookup.
type NodeAuthorizer struct {
	Policy Policy
	Pods   PodLookup
}

// NewNodeAuthorizer returns an Authorizer for td. nodeAgent zero means
// DefaultNodeAgent.
func NewNodeAuthorizer(td spiffeid.TrustDomain, nodeAgent ServiceAccountRef, pods PodLookup) *NodeAuthorizer {
	if nodeAgent == (ServiceAccountRef{}) {
		nodeAgent = DefaultNodeAgent
	}
	return &NodeAuthorizer{Policy: Policy{TrustDomain: td, NodeAgent: nodeAgent}, Pods: pods}
}

// Authorize implements Authorizer.
func (a *NodeAuthorizer) Authorize(_ context.Context, caller *Caller, requested spiffeid.ID) error {
	return Authorize(a.Policy, a.Pods, caller, requested)
}

// NodeNameIndex is the name of the pod index on spec.nodeName.
const NodeNameIndex = "spec.nodeName"

// PodNodeNameIndexFunc indexes pods by spec.nodeName (unscheduled pods are
// not indexed).
func PodNodeNameIndexFunc(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{pod.Spec.NodeName}, nil
}

// PodIndexers are the indexers NewIndexerPodLookup needs; add them to the
// pod informer before it starts: podInformer.AddIndexers(ca.PodIndexers()).
func PodIndexers() cache.Indexers {
	return cache.Indexers{NodeNameIndex: PodNodeNameIndexFunc}
}

// NewIndexerPodLookup adapts a pod informer's indexer (with PodIndexers and
// the default namespace/name keys) to PodLookup.
func NewIndexerPodLookup(indexer cache.Indexer) PodLookup {
	return indexerPodLookup{indexer}
}

type indexerPodLookup struct{ indexer cache.Indexer }

func (l indexerPodLookup) PodsOnNode(node string) ([]*corev1.Pod, error) {
	objs, err := l.indexer.ByIndex(NodeNameIndex, node)
	if err != nil {
		return nil, err
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

func (l indexerPodLookup) Pod(namespace, name string) (*corev1.Pod, error) {
	obj, ok, err := l.indexer.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, err
	}
	pod, _ := obj.(*corev1.Pod)
	return pod, nil
}
