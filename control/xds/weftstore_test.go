package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// modelClient is a delta client as the protocol describes it: it holds
// what it was sent, drops what it unsubscribes from, and is checked after
// every response against what it should hold.
type modelClient struct {
	sub  *subscription
	held map[string]string // name -> version
}

func (c *modelClient) apply(resp *discovery.DeltaDiscoveryResponse) {
	for _, r := range resp.GetResources() {
		c.held[r.GetName()] = r.GetVersion()
	}
	for _, name := range resp.GetRemovedResources() {
		delete(c.held, name)
	}
}

// want is what the client should hold: every resource it subscribed to,
// at its current version.
func (c *modelClient) want(w *weftStore) map[string]string {
	out := map[string]string{}
	for name, r := range w.types[AddressType].resources {
		if c.sub.wants(name) {
			out[name] = r.res.Version
		}
	}
	return out
}

// TestDiffKeepsEveryClientExact checks diff against a model: random
// changes to the store, random (re)subscriptions, clients that come with
// versions of their own (right, stale, or of resources that are gone) and
// clients that answer late. After every response a client must hold
// exactly what it subscribed to, at the store's versions.
func TestDiffKeepsEveryClientExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	name := func() string { return fmt.Sprintf("Kubernetes//Pod/default/p%d", rng.IntN(12)) }
	for trial := range 300 {
		w := newWeftStore(AddressType)
		state := map[string]proto.Message{}
		change := func() {
			for range 1 + rng.IntN(3) {
				n := name()
				if rng.IntN(3) == 0 {
					delete(state, n)
				} else {
					state[n] = workload(strings.TrimPrefix(n, "Kubernetes//Pod/default/"), fmt.Sprintf("10.0.0.%d", rng.IntN(4)))
				}
			}
			w.set(AddressType, maps.Clone(state))
		}
		change()

		var clients []*modelClient
		for range 3 {
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: AddressType}
			held := map[string]string{}
			if rng.IntN(2) == 0 { // named
				for range 1 + rng.IntN(4) {
					req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, name())
				}
			}
			if rng.IntN(2) == 0 { // resumed: versions right, stale or of nothing
				for n, r := range w.types[AddressType].resources {
					if rng.IntN(2) == 0 {
						held[n] = r.res.Version
					}
				}
				held[name()] = "stale"
				req.InitialResourceVersions = maps.Clone(held)
			}
			sub, err := newSubscription(req)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, &modelClient{sub: sub, held: held})
		}

		for step := range 40 {
			c := clients[rng.IntN(len(clients))]
			switch rng.IntN(4) {
			case 0:
				change()
			case 1: // subscribe or unsubscribe a name
				n := name()
				var err error
				if rng.IntN(2) == 0 {
					err = c.sub.update([]string{n}, nil)
				} else {
					if _, named := c.sub.names[n]; named {
						delete(c.held, n) // a client drops what it unsubscribes from
					}
					err = c.sub.update(nil, []string{n})
				}
				if err != nil {
					t.Fatal(err)
				}
			default: // the client is brought up to date
				first := c.sub.full
				resp, err := w.diff(AddressType, c.sub)
				if err != nil {
					t.Fatal(err)
				}
				if first && resp == nil {
					t.Fatalf("trial %d step %d: no first response", trial, step)
				}
				if resp != nil {
					c.apply(resp)
					seen := map[string]bool{}
					for _, r := range resp.GetResources() {
						if seen[r.GetName()] {
							t.Fatalf("trial %d step %d: %s sent twice in one response", trial, step, r.GetName())
						}
						seen[r.GetName()] = true
					}
				}
				if want := c.want(w); !maps.Equal(c.held, want) {
					t.Fatalf("trial %d step %d: client holds %v, want %v", trial, step, c.held, want)
				}
			}
		}
	}
}

// TestDiffSendsNothingUnchanged: a client that is up to date gets nothing,
// and one change gets exactly that change.
func TestDiffSendsNothingUnchanged(t *testing.T) {
	w := newWeftStore(AddressType)
	w.set(AddressType, addresses(workload("a", "10.0.0.1"), workload("b", "10.0.0.2")))
	sub, _ := newSubscription(&discovery.DeltaDiscoveryRequest{TypeUrl: AddressType})
	if resp, _ := w.diff(AddressType, sub); len(resp.GetResources()) != 2 {
		t.Fatalf("first response %v, want both", resp)
	}
	if resp, _ := w.diff(AddressType, sub); resp != nil {
		t.Fatalf("up to date, yet sent %v", resp)
	}
	if changed, _, _ := w.set(AddressType, addresses(workload("a", "10.0.0.1"), workload("b", "10.0.0.2"))); changed != nil {
		t.Fatalf("the same state changed %v", changed)
	}
	w.set(AddressType, addresses(workload("a", "10.0.0.1"), workload("b", "10.0.0.3")))
	resp, _ := w.diff(AddressType, sub)
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "Kubernetes//Pod/default/b" {
		t.Fatalf("one change sent as %v", resp)
	}
}

// TestClientTooFarBehindMustReconnect: once the log no longer reaches a
// client's step, what it misses (removals in particular) is unknown: the
// stream ends with Unavailable, and the client resumes on a new one from
// the versions it holds.
func TestClientTooFarBehindMustReconnect(t *testing.T) {
	w := newWeftStore(AddressType)
	w.set(AddressType, addresses(workload("a", "10.0.0.1")))
	sub, _ := newSubscription(&discovery.DeltaDiscoveryRequest{TypeUrl: AddressType})
	if _, err := w.diff(AddressType, sub); err != nil {
		t.Fatal(err)
	}
	for i := range maxLoggedSteps {
		w.set(AddressType, addresses(workload("a", fmt.Sprintf("10.0.%d.%d", i/250, i%250))))
	}
	if _, err := w.diff(AddressType, sub); err != nil {
		t.Fatalf("%d changes behind is still within the log: %v", maxLoggedSteps, err)
	}
	for i := range maxLoggedSteps + 1 {
		w.set(AddressType, addresses(workload("a", fmt.Sprintf("10.1.%d.%d", i/250, i%250))))
	}
	if _, err := w.diff(AddressType, sub); status.Code(err) != codes.Unavailable {
		t.Fatalf("%d changes behind: err %v, want Unavailable", maxLoggedSteps+1, err)
	}
}

// TestWildcardSwitchIsRefused: a subscription cannot switch the wildcard
// after its first request; it is told so rather than served wrongly.
func TestWildcardSwitchIsRefused(t *testing.T) {
	named, _ := newSubscription(&discovery.DeltaDiscoveryRequest{TypeUrl: AddressType, ResourceNamesSubscribe: []string{"a"}})
	if err := named.update([]string{"*"}, nil); status.Code(err) != codes.Unimplemented {
		t.Errorf("named to wildcard: %v, want Unimplemented", err)
	}
	wild, _ := newSubscription(&discovery.DeltaDiscoveryRequest{TypeUrl: AddressType})
	if err := wild.update(nil, []string{"*"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("leaving the wildcard: %v, want Unimplemented", err)
	}
	if err := wild.update([]string{"*"}, nil); err != nil {
		t.Errorf("wildcard asking for the wildcard again: %v", err)
	}
}
