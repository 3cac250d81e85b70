package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/config"
)

// Capturer is what enrolment needs from the eBPF capture (*bpf.Capture).
type Capturer interface {
	AttachOutbound(ifindex int) error
	DetachOutbound(ifindex int) error
	Enroll(ifindex int, podIP netip.Addr) error
	Drain(ifindex int, podIP netip.Addr) error
	Unenroll(ifindex int, podIP netip.Addr) error
	Enrolled() (ifindexes map[int]uint32, ips map[netip.Addr]uint32, err error)
}

// VethResolver finds the host-side interface of a pod on this node.
type VethResolver func(ip netip.Addr) (ifindex int, err error)

// ErrNotLocal is wrapped by VethResolver errors for an IP that is not
// routed to a pod veth on this node (not here yet, or already gone).
var ErrNotLocal = errors.New("not a pod on this node")

// LocalPods is the pure part of enrolment: the IPv4 addresses of this
// node's workloads, true for those that use HBONE (their namespace or pod is
// enrolled). Every local pod's veth carries the capture program: enrolled
// pods for their outbound traffic, the others so that plaintext they send to
// an enrolled pod on the same node is policed like plaintext from other
// nodes.
func LocalPods(snap *config.Snapshot, node string) map[netip.Addr]bool {
	pods := map[netip.Addr]bool{}
	for _, w := range snap.WorkloadsOnNode(node) {
		hbone := w.Proto.GetTunnelProtocol() == workloadv1.TunnelProtocol_HBONE
		for _, ip := range w.Addresses {
			if ip.Is4() {
				pods[ip] = pods[ip] || hbone
			}
		}
	}
	return pods
}

// EnrolledWithIPv6 lists the enrolled workloads on node that have IPv6
// addresses ("namespace/name", sorted). Only IPv4 is captured: their IPv6
// TCP is dropped by the capture program (fail closed), which the agent
// reports rather than let the pods look fully served.
func EnrolledWithIPv6(snap *config.Snapshot, node string) []string {
	var out []string
	for _, w := range snap.WorkloadsOnNode(node) {
		if w.Proto.GetTunnelProtocol() != workloadv1.TunnelProtocol_HBONE {
			continue
		}
		if slices.ContainsFunc(w.Addresses, func(ip netip.Addr) bool { return !ip.Unmap().Is4() }) {
			out = append(out, w.Proto.GetNamespace()+"/"+w.Proto.GetName())
		}
	}
	slices.Sort(out)
	return out
}

// LocalServiceVIPs are the VIPs of Services with an enrolled endpoint on
// this node. Clients outside the mesh on this node are captured when they
// connect to one (see bpf.Capture.SetLocalServiceVIPs); everything else they
// do stays untouched by the mesh.
func LocalServiceVIPs(snap *config.Snapshot, node string) map[netip.Addr]bool {
	vips := map[netip.Addr]bool{}
	for _, svc := range snap.Services() {
		for _, w := range svc.Workloads {
			if w.Proto.GetNode() == node && w.Proto.GetTunnelProtocol() == workloadv1.TunnelProtocol_HBONE {
				for _, ip := range svc.VIPs {
					vips[ip] = true
				}
				break
			}
		}
	}
	return vips
}

type podState int

const (
	stateAttached podState = iota // program on the veth, pod not enrolled
	stateCapture
	stateDraining
)

type enrolledPod struct {
	ifindex int
	state   podState
	since   time.Time // when draining started
}

// Enroller keeps the capture maps equal to the wanted set: new pods are
// attached and enrolled; pods that leave are drained (live proxied
// connections keep flowing) and unenrolled once idle or after DrainTimeout
// (unenrolling in one step would break them: bpf/README.md, "Flags"). It is
// safe for concurrent use.
type Enroller struct {
	Capture Capturer
	Resolve VethResolver
	// OpenConns counts live proxied connections of a pod IP (nil: none).
	OpenConns func(netip.Addr) int
	// DrainTimeout bounds how long a drained pod's connections are kept
	// steered (default 5 minutes).
	DrainTimeout time.Duration
	// ReleasePods (Config.ReleasePods, --release-pods) stops unenrolment
	// at its first step: drained pods stay draining (their new connections
	// go direct, connections a proxy owns stay steered to it). For an
	// uninstall, where the connections belong to the previous agent, whose
	// count this one cannot see.
	ReleasePods bool
	Log         *slog.Logger

	mu    sync.Mutex
	pods  map[netip.Addr]*enrolledPod
	veths map[netip.Addr]int // from CNI ADD events: pod IP -> host veth
	// held are pods captured at CNI ADD (Hold) that no snapshot has
	// described yet: Reconcile keeps them captured until one does.
	held map[netip.Addr]bool
	// heldView is a copy of held for Held, which the proxies call per
	// connection: read without the lock that reconciles hold across
	// BPF map updates. nil: no held pod.
	heldView atomic.Pointer[map[netip.Addr]bool]
}

func (e *Enroller) drainTimeout() time.Duration {
	if e.DrainTimeout > 0 {
		return e.DrainTimeout
	}
	return 5 * time.Minute
}

// Recover loads the enrolment an earlier agent left in the pinned maps, so
// reconciling after a restart only changes what changed. Pods whose veth is
// gone are unenrolled now.
func (e *Enroller) Recover() error {
	ifs, ips, err := e.Capture.Enrolled()
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	claimed := map[int]bool{}
	var errs []error
	for ip, flags := range ips {
		ifindex, err := e.Resolve(ip)
		if err != nil {
			errs = append(errs, e.Capture.Unenroll(0, ip))
			continue
		}
		st := stateCapture
		if flags&bpf.FlagDraining != 0 {
			st = stateDraining
		}
		e.pods[ip] = &enrolledPod{ifindex: ifindex, state: st, since: time.Now()}
		claimed[ifindex] = true
	}
	for ifindex := range ifs {
		if !claimed[ifindex] {
			errs = append(errs, e.Capture.Unenroll(ifindex, netip.Addr{}), e.Capture.DetachOutbound(ifindex))
		}
	}
	e.Log.Info("recovered enrolment from pinned maps", "pods", len(e.pods), "staleVeths", len(ifs)-len(claimed))
	return errors.Join(errs...)
}

func (e *Enroller) init() {
	if e.pods == nil {
		e.pods = map[netip.Addr]*enrolledPod{}
		e.veths = map[netip.Addr]int{}
		e.held = map[netip.Addr]bool{}
	}
}

// Hold captures a new pod at CNI ADD, before any snapshot describes it,
// because its namespace is enrolled: from its first packet it can reach
// nothing and nothing can reach it outside the mesh. The proxies refuse its
// connections (Held) until its Workload arrives; then the snapshot decides,
// as for every pod (an opted-out pod is released then).
func (e *Enroller) Hold(ips []netip.Addr, ifindex int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	var errs []error
	for _, ip := range ips {
		if !ip.Is4() {
			continue // IPv6 is not captured (LocalPods)
		}
		if ifindex > 0 {
			e.veths[ip] = ifindex
		}
		if err := e.ensure(ip, true); err != nil {
			errs = append(errs, err)
			continue
		}
		if p := e.pods[ip]; p == nil || p.state != stateCapture {
			// Not wired on this node (no veth): fail the ADD rather than
			// let the pod start uncaptured.
			errs = append(errs, fmt.Errorf("pod %s: no veth on this node to capture", ip))
			continue
		}
		e.held[ip] = true
		e.Log.Info("holding pod: captured before the control plane described it", "ip", ip, "ifindex", ifindex)
	}
	e.publishHeld()
	return errors.Join(errs...)
}

// Held reports whether ip is a pod captured by Hold that no snapshot has
// described yet. Lock-free: the proxies ask per connection.
func (e *Enroller) Held(ip netip.Addr) bool {
	m := e.heldView.Load()
	return m != nil && (*m)[ip.Unmap()]
}

// publishHeld makes the current held set Held's (call with mu held).
func (e *Enroller) publishHeld() {
	if len(e.held) == 0 {
		e.heldView.Store(nil)
		return
	}
	m := maps.Clone(e.held)
	e.heldView.Store(&m)
}

// PodAdded records a pod's veth from a CNI ADD (faster and more exact than
// a route lookup).
func (e *Enroller) PodAdded(ips []netip.Addr, ifindex int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	for _, ip := range ips {
		if ifindex > 0 {
			e.veths[ip] = ifindex
		}
	}
}

// PodDeleted forgets a pod at CNI DEL: its veth is going away, so there is
// nothing left to drain and the ifindex may be reused.
func (e *Enroller) PodDeleted(ips []netip.Addr) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	var errs []error
	for _, ip := range ips {
		delete(e.veths, ip)
		delete(e.held, ip)
		if p, ok := e.pods[ip]; ok {
			errs = append(errs, e.remove(ip, p))
		}
	}
	e.publishHeld()
	return errors.Join(errs...)
}

func (e *Enroller) remove(ip netip.Addr, p *enrolledPod) error {
	delete(e.pods, ip)
	err := e.Capture.Unenroll(p.ifindex, ip)
	if !e.ifindexInUse(p.ifindex) {
		err = errors.Join(err, e.Capture.DetachOutbound(p.ifindex))
	}
	return err
}

func (e *Enroller) ifindexInUse(ifindex int) bool {
	for _, p := range e.pods {
		if p.ifindex == ifindex {
			return true
		}
	}
	return false
}

// Enrolled lists the enrolled pod IPs (capturing, not draining), sorted.
func (e *Enroller) Enrolled() []netip.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []netip.Addr
	for ip, p := range e.pods {
		if p.state == stateCapture {
			out = append(out, ip)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Reconcile moves the capture maps toward pods (LocalPods). Pods that
// cannot be resolved yet (CNI ADD still running, workload announced before
// its veth) are retried on the next call.
func (e *Enroller) Reconcile(pods map[netip.Addr]bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	defer e.publishHeld()
	var errs []error
	for ip, want := range pods {
		if err := e.ensure(ip, want); err != nil {
			errs = append(errs, err)
		}
	}
	now := time.Now()
	for ip, p := range e.pods {
		_, local := pods[ip]
		if local {
			delete(e.held, ip) // described now: the snapshot decides
		} else if e.held[ip] {
			continue
		}
		if pods[ip] {
			continue
		}
		switch p.state {
		case stateAttached:
			if !local {
				errs = append(errs, e.remove(ip, p))
			}
			continue
		case stateCapture:
			if err := e.Capture.Drain(p.ifindex, ip); err != nil {
				errs = append(errs, err)
				continue
			}
			p.state, p.since = stateDraining, now
			e.Log.Info("draining pod: new connections go direct", "ip", ip, "ifindex", p.ifindex)
		}
		// stateDraining
		if e.ReleasePods {
			continue
		}
		open := 0
		if e.OpenConns != nil {
			open = e.OpenConns(ip)
		}
		if open > 0 && now.Sub(p.since) < e.drainTimeout() {
			continue
		}
		if local {
			// Still on this node, no longer enrolled: keep the program.
			if err := e.Capture.Unenroll(p.ifindex, ip); err != nil {
				errs = append(errs, err)
				continue
			}
			p.state = stateAttached
		} else if err := e.remove(ip, p); err != nil {
			errs = append(errs, err)
			continue
		}
		e.Log.Info("unenrolled pod", "ip", ip, "ifindex", p.ifindex, "cutConnections", open)
	}
	return errors.Join(errs...)
}

// ensure attaches the program to ip's veth and, if want, enrols it.
func (e *Enroller) ensure(ip netip.Addr, want bool) error {
	ifindex, ok := e.veths[ip]
	if !ok {
		var err error
		if ifindex, err = e.Resolve(ip); err != nil {
			if errors.Is(err, ErrNotLocal) {
				e.Log.Debug("pod not wired on this node yet", "ip", ip, "err", err)
				return nil
			}
			return fmt.Errorf("find the veth of pod %s: %w", ip, err)
		}
	}
	p, known := e.pods[ip]
	if known && p.ifindex != ifindex {
		// The pod's IP moved to a new veth (sandbox recreated).
		e.Capture.Unenroll(p.ifindex, netip.Addr{})
		known = false
	}
	if !known {
		if err := e.Capture.AttachOutbound(ifindex); err != nil {
			return err
		}
		p = &enrolledPod{ifindex: ifindex, state: stateAttached}
		e.pods[ip] = p
	}
	if !want || p.state == stateCapture {
		return nil
	}
	// Attached, or draining and enrolled again.
	if err := e.Capture.Enroll(ifindex, ip); err != nil {
		return err
	}
	p.state = stateCapture
	e.Log.Info("enrolled pod", "ip", ip, "ifindex", ifindex)
	return nil
}
