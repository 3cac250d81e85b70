package workload

import (
	"cmp"
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// AutoAllocatePrefix is the range of the VIPs allocated to ServiceEntry
// hosts without spec.addresses: istiod's (Class E, never routed), so
// addresses users see in `status.addresses` mean the same as in Istio.
var AutoAllocatePrefix = netip.MustParsePrefix("240.240.0.0/16")

// AnnotationAutoAllocate set to "false" on a ServiceEntry opts it out of
// allocation, as in Istio.
const AnnotationAutoAllocate = "networking.istio.io/enable-autoallocate-ip"

// AllocateAddresses gives every host of every ServiceEntry that needs one
// a VIP from AutoAllocatePrefix, as istiod's IP autoallocation does (Istio
// 1.22+): for entries without spec.addresses, except resolution NONE and
// wildcard hosts (neither is resolved to a VIP). The result, by
// "<namespace>/<name>", is what the control plane writes to each entry's
// status.addresses, sorted by host.
//
// It is a pure function of the entries so that every replica computes the
// same answer, and stable across restarts: an address an entry already
// holds in its status is kept unless an older entry (creation time, then
// namespace/name) holds it too; a new one comes from a hash of
// namespace/name/host, probing the next address on collision.
func AllocateAddresses(ses []*networkingv1.ServiceEntry) map[string][]*networkingapi.ServiceEntryAddress {
	ses = slices.DeleteFunc(slices.Clone(ses), func(se *networkingv1.ServiceEntry) bool { return !wantsAllocation(se) })
	slices.SortFunc(ses, func(a, b *networkingv1.ServiceEntry) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time),
			cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	taken := map[netip.Addr]bool{}
	got := map[string]map[string]netip.Addr{} // entry -> host -> VIP
	// First every address already held, oldest entry first, then new ones.
	for _, se := range ses {
		hosts := allocatableHosts(se)
		got[key(se.Namespace, se.Name)] = map[string]netip.Addr{}
		for _, a := range se.Status.GetAddresses() {
			ip, err := netip.ParseAddr(a.GetValue())
			if err != nil || !hosts[a.GetHost()] || !allocatable(ip) || taken[ip] {
				continue
			}
			if _, dup := got[key(se.Namespace, se.Name)][a.GetHost()]; dup {
				continue
			}
			taken[ip] = true
			got[key(se.Namespace, se.Name)][a.GetHost()] = ip
		}
	}
	out := make(map[string][]*networkingapi.ServiceEntryAddress, len(ses))
	for _, se := range ses {
		held := got[key(se.Namespace, se.Name)]
		hosts := sortedKeys(allocatableHosts(se))
		for _, h := range hosts {
			ip, ok := held[h]
			if !ok {
				ip = probe(se.Namespace+"/"+se.Name+"/"+h, taken)
				taken[ip] = true
			}
			out[key(se.Namespace, se.Name)] = append(out[key(se.Namespace, se.Name)],
				&networkingapi.ServiceEntryAddress{Value: ip.String(), Host: h})
		}
	}
	return out
}

func wantsAllocation(se *networkingv1.ServiceEntry) bool {
	return se != nil && len(se.Spec.Addresses) == 0 &&
		se.Spec.Resolution != networkingapi.ServiceEntry_NONE &&
		!strings.EqualFold(se.Annotations[AnnotationAutoAllocate], "false")
}

// allocatableHosts are an entry's hosts that get a VIP (not wildcards).
func allocatableHosts(se *networkingv1.ServiceEntry) map[string]bool {
	hosts := map[string]bool{}
	for _, h := range se.Spec.Hosts {
		if h != "" && !strings.Contains(h, "*") {
			hosts[h] = true
		}
	}
	return hosts
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// allocatable reports whether ip is in the range and neither its network
// nor its broadcast address (some stacks refuse those).
func allocatable(ip netip.Addr) bool {
	if !AutoAllocatePrefix.Contains(ip) {
		return false
	}
	b := ip.As4()
	low := uint16(b[2])<<8 | uint16(b[3])
	return low != 0 && low != 0xffff
}

// probe is the first free address at or after the hash of seed. 65,534
// usable addresses: a cluster with more ServiceEntry hosts than that gets
// duplicates rather than a hang (the last probe wins).
func probe(seed string, taken map[netip.Addr]bool) netip.Addr {
	h := fnv.New64a()
	h.Write([]byte(seed))
	start := uint16(binary.BigEndian.Uint64(h.Sum(nil)))
	base := AutoAllocatePrefix.Addr().As4()
	var ip netip.Addr
	for i := range 1 << 16 {
		low := start + uint16(i)
		ip = netip.AddrFrom4([4]byte{base[0], base[1], byte(low >> 8), byte(low)})
		if allocatable(ip) && !taken[ip] {
			return ip
		}
	}
	return ip
}
