package workload

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func allocEntry(ns, name string, created int, hosts ...string) *networkingv1.ServiceEntry {
	se := serviceEntry(name, nil, &networkingapi.ServiceEntry{Hosts: hosts, Resolution: networkingapi.ServiceEntry_DNS})
	se.Namespace = ns
	se.CreationTimestamp = metav1.NewTime(time.Unix(int64(created), 0))
	return se
}

func held(ses ...*networkingv1.ServiceEntry) map[string]string {
	out := map[string]string{}
	for k, as := range AllocateAddresses(ses) {
		for _, a := range as {
			out[k+"/"+a.GetHost()] = a.GetValue()
		}
	}
	return out
}

func TestAllocateAddresses(t *testing.T) {
	a := allocEntry("default", "a", 1, "a.example.com", "b.example.com", "*.wild.example.com")
	b := allocEntry("other", "a", 2, "a.example.com")
	got := held(a, b)
	if len(got) != 3 {
		t.Fatalf("allocated %v: want one VIP per non-wildcard host", got)
	}
	seen := map[string]bool{}
	for k, v := range got {
		ip := netip.MustParseAddr(v)
		if !allocatable(ip) || seen[v] {
			t.Errorf("%s: %s is outside 240.240.0.0/16 or given twice", k, v)
		}
		seen[v] = true
	}
	// Another replica, with the inputs in another order, agrees.
	if again := held(b, a); !maps.Equal(got, again) {
		t.Errorf("order changed the allocation: %v vs %v", got, again)
	}
	// The same host in another namespace is another service: another VIP.
	if got["default/a/a.example.com"] == got["other/a/a.example.com"] {
		t.Errorf("two namespaces' a.example.com share a VIP")
	}
}

func TestAllocateAddressesSkips(t *testing.T) {
	withAddr := allocEntry("default", "vip", 1, "vip.example.com")
	withAddr.Spec.Addresses = []string{"10.0.0.1"}
	none := allocEntry("default", "none", 1, "none.example.com")
	none.Spec.Resolution = networkingapi.ServiceEntry_NONE
	optOut := allocEntry("default", "optout", 1, "optout.example.com")
	optOut.Annotations = map[string]string{AnnotationAutoAllocate: "false"}
	wild := allocEntry("default", "wild", 1, "*.example.com")
	if got := held(withAddr, none, optOut, wild, nil); len(got) != 0 {
		t.Errorf("allocated %v: want nothing for spec.addresses, NONE, opt-out, wildcards", got)
	}
}

// An address already in status is kept; a conflict goes to the older entry.
func TestAllocateAddressesKeepsStatus(t *testing.T) {
	old := allocEntry("default", "old", 1, "old.example.com")
	old.Status.Addresses = []*networkingapi.ServiceEntryAddress{{Value: "240.240.1.1", Host: "old.example.com"}}
	young := allocEntry("default", "young", 2, "young.example.com")
	young.Status.Addresses = []*networkingapi.ServiceEntryAddress{
		{Value: "240.240.1.1", Host: "young.example.com"},     // also claimed by old
		{Value: "240.240.2.2", Host: "gone.example.com"},      // no longer a host
		{Value: "10.1.1.1", Host: "young.example.com"},        // outside the range
		{Value: "240.240.255.255", Host: "young.example.com"}, // broadcast
	}
	got := held(young, old)
	if got["default/old/old.example.com"] != "240.240.1.1" {
		t.Errorf("old entry lost its address: %v", got)
	}
	if v := got["default/young/young.example.com"]; v == "240.240.1.1" || v == "" || len(got) != 2 {
		t.Errorf("young entry: %v, want a fresh address and nothing for the gone host", got)
	}
}

// Hash collisions probe the next free address deterministically.
func TestProbe(t *testing.T) {
	taken := map[netip.Addr]bool{}
	first := probe("x", taken)
	taken[first] = true
	second := probe("x", taken)
	if first == second || !allocatable(second) {
		t.Errorf("probe gave %s then %s", first, second)
	}
	full := map[netip.Addr]bool{}
	for i := range 1 << 16 {
		full[netip.AddrFrom4([4]byte{240, 240, byte(i >> 8), byte(i)})] = true
	}
	if ip := probe("x", full); !AutoAllocatePrefix.Contains(ip) {
		t.Errorf("exhausted range gave %s", ip)
	}
}

func TestServiceEntryAllocatedVIP(t *testing.T) {
	se := allocEntry("default", "ext", 1, "ext.example.com")
	se.Spec.Ports = []*networkingapi.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}}
	out := Translate(Config{}, Inputs{ServiceEntries: []*networkingv1.ServiceEntry{se}})
	svc := out.Addresses["default/ext.example.com"].GetService()
	want := AllocateAddresses([]*networkingv1.ServiceEntry{se})["default/ext"]
	if svc == nil || len(want) != 1 || !slices.Equal(svc.Addresses, []string{want[0].GetValue()}) {
		t.Errorf("service %v, want the allocated VIP %v", svc, want)
	}
}
