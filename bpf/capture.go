// Package bpf loads and drives Weft's eBPF traffic capture: tcx ingress
// programs on every local pod's host-side veth (outbound) and on the node's
// uplink (inbound) that hand TCP connections to the node agent's
// transparent listeners with bpf_sk_assign (HBONE tunnels addressed to an
// enrolled pod IP go to the agent's HBONE listener). On the veth of a pod
// that is not enrolled, the outbound program applies the inbound decision
// instead, so plaintext clients on the same node reach enrolled pods only
// through the inbound listener (and its policy). Capture fails closed:
// while a listener is missing, new connections of and to enrolled pods are
// held back (their SYNs dropped and retransmitted by the client) rather than
// let through unproxied. Enrolment is data in pinned BPF
// maps; the programs and links are pinned too, so an agent restart reopens
// them instead of attaching twice.
//
// Every method acts on the network namespace of the calling thread where it
// matters (attach by ifindex, policy routing): call them from the node's
// netns (see pkg/netns.Do).
package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Mark bits set on skb->mark (pkg/mesh defines them; capture.c's
// WEFT_MARK_* must match, see TestMarksMatchCaptureC).
const (
	// MarkCapture is set on every captured packet; PolicyRouting delivers
	// packets carrying it locally.
	MarkCapture uint32 = mesh.MarkCapture
	// MarkSkip on a packet means "never capture" (the agent's own traffic).
	MarkSkip uint32 = mesh.MarkSkip
)

// Enrolment flags stored in the enrolment maps. Keep in sync with capture.c.
const (
	// FlagCapture steers new connections to the proxy.
	FlagCapture uint32 = 0x1
	// FlagDraining keeps steering connections the proxy already owns but
	// lets new ones go direct (first step of the two-step unenrol).
	FlagDraining uint32 = 0x2
)

// proxy_listeners keys. Keep in sync with capture.c.
const (
	listenerOutbound uint32 = 0
	listenerInbound  uint32 = 1
	listenerHBONE    uint32 = 2
)

// counters keys. Keep in sync with capture.c.
const (
	counterCaptured uint32 = 0
	counterDropped  uint32 = 1
)

// Direction names the attach point of a capture program.
type Direction string

const (
	// Outbound: host-side veth of a local pod (enrolled or not), packets
	// leaving the pod.
	Outbound Direction = "outbound"
	// Inbound: the node's uplink, packets for enrolled pod IPs.
	Inbound Direction = "inbound"
	// ToPod: egress of a local pod's host-side veth, packets into the pod
	// (attached with Outbound).
	ToPod Direction = "to_pod"
)

// egress reports whether dir's program runs on its interface's egress.
func (dir Direction) egress() bool { return dir == ToPod }

// Capture holds the loaded capture programs, their pinned maps and the
// links this process attached or reopened.
type Capture struct {
	pinDir string
	objs   captureObjects

	mu    sync.Mutex
	links map[string]link.Link // by pin name

	// legacyTC forces the clsact fallback (tests; set before attaching).
	legacyTC bool

	// nat, once SteerNAT was called, mirrors enrolment into the NAT
	// steering set.
	nat *NATSteering
}

// SteerNAT keeps NAT steering's set of enrolled pods in step with Enroll,
// Drain and Unenroll from now on, and installs the steering to the listener
// on port unless it is installed already: then it keeps pointing where the
// agent serving now (this one's predecessor) set it, on whatever port that
// one listens, until SetProxyListeners moves it. Pods enrolled earlier are
// already in the set, which outlives the agent as the pinned maps do.
func (c *Capture) SteerNAT(n NATSteering, port uint16) error {
	installed, err := n.Installed()
	if err != nil {
		return fmt.Errorf("NAT steering: %w", err)
	}
	if !installed {
		if err := n.Install(port); err != nil {
			return err
		}
	}
	c.nat = &n
	return nil
}

// Load loads the capture programs and pins their maps under pinDir/maps
// (pinDir must be on a bpffs, see EnsureBPFFS). Maps pinned by an earlier
// run are reopened, so enrolment survives agent restarts; links pinned by an
// earlier run are reopened by AttachOutbound/AttachInbound.
func Load(pinDir string) (*Capture, error) {
	if err := checkBPFFS(pinDir); err != nil {
		return nil, err
	}
	for _, d := range []string{mapsDir(pinDir), linksDir(pinDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create bpf pin directory %s: %w", d, err)
		}
	}
	// Only needed before kernel 5.11 (memcg accounting); a no-op after.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_MEMLOCK for eBPF maps: %w", err)
	}
	spec, err := loadCapture()
	if err != nil {
		return nil, err
	}
	c := &Capture{pinDir: pinDir, links: map[string]link.Link{}}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapsDir(pinDir)}}
	if err := spec.LoadAndAssign(&c.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load capture programs: %+v", ve)
		}
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load capture programs: pinned maps in %s do not match this build (remove them after draining): %w", mapsDir(pinDir), err)
		}
		return nil, fmt.Errorf("load capture programs (pins in %s): %w", mapsDir(pinDir), err)
	}
	return c, nil
}

func mapsDir(pinDir string) string  { return filepath.Join(pinDir, "maps") }
func linksDir(pinDir string) string { return filepath.Join(pinDir, "links") }

func linkName(dir Direction, ifindex int) string {
	return string(dir) + "_" + strconv.Itoa(ifindex)
}

// AttachOutbound attaches capture_outbound to the tcx ingress of a local
// pod's host-side veth. Attach it to EVERY local pod's veth, enrolled or
// not, and keep it attached across Enroll/Drain/Unenroll: on an enrolled
// veth it captures the pod's outbound connections; on any other veth it
// applies the inbound decision to the destination, which is how same-node
// plaintext clients of an enrolled pod are policed (their packets are
// routed veth to veth and never cross the uplink, so AttachInbound alone
// would let them reach the pod directly, bypassing PeerAuthentication
// STRICT and L4 authorization). For packets to non-enrolled destinations it
// costs one hash lookup. It also attaches guard_to_pod to the veth's egress
// (packets into the pod), which drops what the mesh cannot capture into an
// enrolled pod (IPv6 TCP). Idempotent: a link pinned by an earlier run is
// updated in place to this build's program.
func (c *Capture) AttachOutbound(ifindex int) error {
	if err := c.attach(Outbound, c.objs.CaptureOutbound, ifindex); err != nil {
		return err
	}
	return c.attach(ToPod, c.objs.GuardToPod, ifindex)
}

// AttachInbound attaches capture_inbound to the tcx ingress of the node's
// uplink. Idempotent like AttachOutbound.
func (c *Capture) AttachInbound(ifindex int) error {
	return c.attach(Inbound, c.objs.CaptureInbound, ifindex)
}

// DetachOutbound removes the veth's programs (and their pins). A veth that
// is deleted loses its programs anyway; this only tidies up.
func (c *Capture) DetachOutbound(ifindex int) error {
	return errors.Join(c.detach(Outbound, ifindex), c.detach(ToPod, ifindex))
}

// DetachInbound removes the inbound program from the uplink (and its pin).
func (c *Capture) DetachInbound(ifindex int) error { return c.detach(Inbound, ifindex) }

func (c *Capture) attach(dir Direction, prog *ebpf.Program, ifindex int) error {
	if ifindex <= 0 {
		return fmt.Errorf("attach %s capture: invalid ifindex %d", dir, ifindex)
	}
	name := linkName(dir, ifindex)
	pin := filepath.Join(linksDir(c.pinDir), name)

	c.mu.Lock()
	defer c.mu.Unlock()

	if l, ok := c.links[name]; ok {
		if err := l.Update(prog); err == nil {
			return nil
		}
		// the device went away (and its ifindex may be reused): start over
		_ = l.Unpin()
		_ = l.Close()
		delete(c.links, name)
	} else if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		if err := l.Update(prog); err == nil {
			c.links[name] = l
			return nil
		}
		// A pinned link whose device was deleted is defunct (ENOLINK).
		_ = l.Unpin()
		_ = l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reopen pinned %s link %s: %w", dir, pin, err)
	}

	if c.legacyTC {
		return attachClsact(dir, prog, ifindex)
	}
	attach := ebpf.AttachTCXIngress
	if dir.egress() {
		attach = ebpf.AttachTCXEgress
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    attach,
	})
	if errors.Is(err, link.ErrNotSupported) {
		// Kernel before 6.6: clsact qdisc + cls_bpf filter.
		return attachClsact(dir, prog, ifindex)
	}
	if err != nil {
		return fmt.Errorf("attach %s capture to tcx %s of ifindex %d: %w", dir, attach, ifindex, err)
	}
	if err := l.Pin(pin); err != nil {
		_ = l.Close()
		return fmt.Errorf("pin %s link at %s: %w", dir, pin, err)
	}
	c.links[name] = l
	return nil
}

func (c *Capture) detach(dir Direction, ifindex int) error {
	name := linkName(dir, ifindex)
	pin := filepath.Join(linksDir(c.pinDir), name)

	c.mu.Lock()
	defer c.mu.Unlock()

	l, ok := c.links[name]
	if !ok {
		var err error
		l, err = link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			// not attached with tcx: maybe with the clsact fallback
			return detachClsact(dir, ifindex)
		}
		if err != nil {
			return fmt.Errorf("reopen pinned %s link %s: %w", dir, pin, err)
		}
	}
	delete(c.links, name)
	err := l.Unpin()
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("detach %s capture from ifindex %d: %w", dir, ifindex, err)
	}
	return nil
}

// Enroll starts capturing a pod: new TCP connections leaving the veth
// ifindex go to the outbound listener, new connections to podIP arriving on
// the uplink or from a non-enrolled local pod's veth go to the inbound
// listener (or, on the HBONE port, to the HBONE listener). ifindex 0 or an invalid podIP skip that direction. Only
// IPv4 is captured; the pod's IPv6 TCP is dropped (IPv6Dropped). From now on the pod's new connections depend on
// the proxy listening (fail closed, see SetProxyPorts).
func (c *Capture) Enroll(ifindex int, podIP netip.Addr) error {
	return c.setFlags(ifindex, podIP, FlagCapture)
}

// Drain is the first step of unenrolling: connections the proxy already
// owns keep flowing through it, new connections go direct. Call Unenroll
// once the proxy reports the pod's connections closed.
func (c *Capture) Drain(ifindex int, podIP netip.Addr) error {
	return c.setFlags(ifindex, podIP, FlagDraining)
}

// Unenroll stops all steering for the pod (second step, after Drain).
func (c *Capture) Unenroll(ifindex int, podIP netip.Addr) error {
	var errs []error
	if ifindex > 0 {
		k := uint32(ifindex)
		if err := c.objs.EnrolledIfindex.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("unenroll veth ifindex %d: %w", ifindex, err))
		}
	}
	if podIP.IsValid() {
		k, err := ipv4Key(podIP)
		if err != nil {
			errs = append(errs, err)
		} else if err := c.objs.EnrolledIps.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("unenroll pod IP %s: %w", podIP, err))
		} else if c.nat != nil {
			errs = append(errs, c.nat.SetEnrolment(podIP, 0))
		}
	}
	return errors.Join(errs...)
}

func (c *Capture) setFlags(ifindex int, podIP netip.Addr, flags uint32) error {
	v := captureEnrolment{Flags: flags}
	if ifindex > 0 {
		k := uint32(ifindex)
		if err := c.objs.EnrolledIfindex.Put(&k, &v); err != nil {
			return fmt.Errorf("set enrolment flags %#x for veth ifindex %d: %w", flags, ifindex, err)
		}
	}
	if podIP.IsValid() {
		k, err := ipv4Key(podIP)
		if err != nil {
			return err
		}
		if err := c.objs.EnrolledIps.Put(&k, &v); err != nil {
			return fmt.Errorf("set enrolment flags %#x for pod IP %s: %w", flags, podIP, err)
		}
		if c.nat != nil {
			return c.nat.SetEnrolment(podIP, flags)
		}
	}
	return nil
}

// Enrolment reports the flags stored for a veth ifindex (0, false if none).
func (c *Capture) Enrolment(ifindex int) (uint32, bool, error) {
	k := uint32(ifindex)
	var v captureEnrolment
	err := c.objs.EnrolledIfindex.Lookup(&k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up enrolment of ifindex %d: %w", ifindex, err)
	}
	return v.Flags, true, nil
}

// SetProxyPorts sets the proxy listeners (see SetProxyListeners) with the
// HBONE listener on the HBONE destination port itself.
func (c *Capture) SetProxyPorts(outbound, inbound, hbone uint16) error {
	return c.SetProxyListeners(ProxyListeners{Outbound: outbound, Inbound: inbound, HBONE: hbone, HBONEDestination: hbone})
}

// ProxyListeners says where the proxy's IP_TRANSPARENT listeners are, all
// in the node's netns and looked up at 127.0.0.1 (which matches sockets
// bound to 127.0.0.1 or 0.0.0.0).
type ProxyListeners struct {
	// Outbound takes new connections leaving an enrolled pod's veth.
	Outbound uint16 `json:"outbound"`
	// Inbound takes plaintext connections to an enrolled pod IP.
	Inbound uint16 `json:"inboundPlaintext"`
	// NAT takes plaintext connections DNATed to an enrolled pod (NodePort
	// and the like), steered by NATSteering once SteerNAT was called; 0
	// leaves that steering as it is.
	NAT uint16 `json:"inboundNAT"`
	// HBONE takes HBONE tunnels from other nodes, which are addressed to
	// <enrolled pod IP>:HBONEDestination (15008). A node agent that starts
	// while its predecessor still holds 15008 listens on another port.
	HBONE uint16 `json:"hbone"`
	// HBONEDestination is the destination port that selects the HBONE
	// listener; with HBONE 0 the port is not special (such connections go
	// to the inbound listener like any other port).
	HBONEDestination uint16 `json:"hboneDestination"`
}

// SetProxyListeners tells the programs where the proxy listeners are.
// A zero Outbound or Inbound port disables capture in that direction:
// packets pass untouched (fail open). With a non-zero port capture fails
// closed: while nothing listens there (agent down or restarting), the SYNs
// of enrolled pods' new connections are dropped, so clients see a delay
// (their TCP retransmits the SYN) instead of unproxied traffic.
func (c *Capture) SetProxyListeners(l ProxyListeners) error {
	lo := be32(netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	for _, e := range []struct {
		key uint32
		v   captureListener
	}{
		{listenerOutbound, captureListener{Addr: lo, Port: htons(l.Outbound)}},
		{listenerInbound, captureListener{Addr: lo, Port: htons(l.Inbound)}},
		{listenerHBONE, captureListener{Addr: lo, Port: htons(l.HBONE), Dport: htons(l.HBONEDestination)}},
	} {
		if err := c.objs.ProxyListeners.Put(&e.key, &e.v); err != nil {
			return fmt.Errorf("set proxy listener %d to %+v: %w", e.key, l, err)
		}
	}
	if l.NAT != 0 && c.nat != nil {
		return c.nat.Install(l.NAT)
	}
	return nil
}

// SetDNSPort tells the programs where the DNS proxy's transparent UDP and
// TCP sockets are (127.0.0.1:port in the node's netns): enrolled pods' UDP
// and TCP to port 53 go there. 0 turns DNS capture off. DNS fails open:
// while nothing listens there, queries go to the server the pod asked.
func (c *Capture) SetDNSPort(port uint16) error {
	key := uint32(0)
	v := captureListener{Addr: be32(netip.AddrFrom4([4]byte{127, 0, 0, 1})), Port: htons(port)}
	if err := c.objs.DnsListener.Put(&key, &v); err != nil {
		return fmt.Errorf("set the DNS proxy's port to %d: %w", port, err)
	}
	return nil
}

// Counters reports, summed over all CPUs and since the counters map was
// first pinned (they survive agent restarts): captured, new connections
// (SYNs, retransmissions included) handed to a proxy listener; dropped, SYNs
// of enrolled pods dropped because the listener was missing (fail closed).
func (c *Capture) Counters() (captured, dropped uint64, err error) {
	sum := func(k uint32) (uint64, error) {
		var perCPU []uint64
		if err := c.objs.Counters.Lookup(&k, &perCPU); err != nil {
			return 0, fmt.Errorf("read capture counter %d: %w", k, err)
		}
		var n uint64
		for _, v := range perCPU {
			n += v
		}
		return n, nil
	}
	if captured, err = sum(counterCaptured); err != nil {
		return 0, 0, err
	}
	if dropped, err = sum(counterDropped); err != nil {
		return 0, 0, err
	}
	return captured, dropped, nil
}

// IPv6Dropped is how many IPv6 packets from or to enrolled pods the veth
// programs dropped since the maps were first pinned: only IPv4 is steered
// to the proxy, so an enrolled pod's IPv6 TCP (and anything but ICMPv6 and
// UDP, which IPv4 lets pass too) fails closed instead of bypassing the mesh.
func (c *Capture) IPv6Dropped() (uint64, error) {
	var perCPU []uint64
	if err := c.objs.Ipv6Dropped.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("read IPv6 drop counter: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// AddBypass makes destinations in prefix (node-local addresses, for
// example) never captured by the outbound program for enrolled pods. It does
// not apply to the inbound decision (traffic to enrolled pod IPs, also from
// non-enrolled local pods).
func (c *Capture) AddBypass(prefix netip.Prefix) error {
	k, err := lpmKey(prefix)
	if err != nil {
		return err
	}
	one := uint8(1)
	if err := c.objs.Bypass.Put(&k, &one); err != nil {
		return fmt.Errorf("add bypass %s: %w", prefix, err)
	}
	return nil
}

// RemoveBypass undoes AddBypass.
func (c *Capture) RemoveBypass(prefix netip.Prefix) error {
	k, err := lpmKey(prefix)
	if err != nil {
		return err
	}
	if err := c.objs.Bypass.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove bypass %s: %w", prefix, err)
	}
	return nil
}

// Close releases this process's handles. Pinned maps and links stay, so
// capture keeps working while the agent restarts; use DetachOutbound/
// DetachInbound and RemovePins to tear capture down for good.
func (c *Capture) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for name, l := range c.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link %s: %w", name, err))
		}
		delete(c.links, name)
	}
	if err := c.objs.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RemovePins deletes every pin (maps and links) under pinDir, which detaches
// the programs once no process holds them. For uninstall and tests.
func RemovePins(pinDir string) error {
	var errs []error
	for _, d := range []string{linksDir(pinDir), mapsDir(pinDir)} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove bpf pins %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// EnsureBPFFS mounts a bpffs at dir unless one is there already. Mount it
// in the host mount namespace (in Kubernetes: host /sys/fs/bpf with
// mountPropagation: Bidirectional); a bpffs mounted in a private mount
// namespace vanishes with it.
func EnsureBPFFS(dir string) error {
	if checkBPFFS(dir) == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bpffs mount point %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	return nil
}

func checkBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("bpf pin directory %s: %w (mount a bpffs there first)", dir, err)
	}
	if uint32(st.Type) != unix.BPF_FS_MAGIC {
		return fmt.Errorf("bpf pin directory %s is not on a bpffs (mount -t bpf bpf %s)", dir, dir)
	}
	return nil
}

func ipv4Key(a netip.Addr) (uint32, error) {
	a = a.Unmap()
	if !a.Is4() {
		return 0, fmt.Errorf("pod IP %s: only IPv4 is captured so far", a)
	}
	return be32(a), nil
}

func lpmKey(p netip.Prefix) (captureLpmV4Key, error) {
	a := p.Addr().Unmap()
	if !p.IsValid() || !a.Is4() {
		return captureLpmV4Key{}, fmt.Errorf("bypass prefix %s: only IPv4 prefixes are supported so far", p)
	}
	p = netip.PrefixFrom(a, p.Bits()).Masked()
	return captureLpmV4Key{Prefixlen: uint32(p.Bits()), Addr: be32(p.Addr())}, nil
}

// be32 returns the address as a uint32 whose in-memory bytes are in network
// order (what the BPF side compares with iphdr fields).
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}
