package xds

import (
	"cmp"
	"slices"
	"strconv"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// maxLoggedSteps bounds the change log: a stream further behind than this
// (a client that answered nothing for that long) is told to reconnect,
// and resumes from the versions it holds.
const maxLoggedSteps = 1024

// weftStore holds the resources of Weft's own types and, for each recent
// change, the names it touched. A stream brings its client up to date by
// looking only at those names, so one change costs every stream time in
// proportion to the change, not to the state (go-control-plane's
// LinearCache compares and copies the whole state per stream per change,
// which at 1,000 node agents and 11,000 resources took seconds).
type weftStore struct {
	mu      sync.RWMutex
	types   map[string]*typeStore
	changed chan struct{} // closed, and replaced, by every change
}

type typeStore struct {
	step      uint64    // one per change
	changedAt time.Time // of the last change, the start of its push latency
	size      int       // bytes of all resources serialized
	resources map[string]storedResource
	log       []stepNames // the last maxLoggedSteps changes, oldest first
}

type storedResource struct {
	msg proto.Message // to compare the next desired state with
	// res is serialized once and sent, as it is, to every stream. Its
	// version is go-control-plane's hash of the serialized resource: the
	// same content has the same version on every server, so a client that
	// resumes elsewhere is sent only what differs.
	res *discovery.Resource
}

type stepNames struct {
	step  uint64
	names []string
}

func newWeftStore(typeURLs ...string) *weftStore {
	w := &weftStore{types: map[string]*typeStore{}, changed: make(chan struct{})}
	for _, t := range typeURLs {
		w.types[t] = &typeStore{resources: map[string]storedResource{}}
	}
	return w
}

// has reports whether typeURL is one of the store's types.
func (w *weftStore) has(typeURL string) bool {
	_, ok := w.types[typeURL] // the set of types never changes
	return ok
}

// wait returns a channel closed by the next change of any type.
func (w *weftStore) wait() <-chan struct{} {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.changed
}

// sinceChange is how long ago typeURL last changed; ok is false for a
// type that is not the store's.
func (w *weftStore) sinceChange(typeURL string) (d time.Duration, ok bool) {
	ts, ok := w.types[typeURL]
	if !ok {
		return 0, false
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	return time.Since(ts.changedAt), true
}

// steps is every type's current step, the system version of its responses.
func (w *weftStore) steps() map[string]string {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make(map[string]string, len(w.types))
	for t, ts := range w.types {
		out[t] = strconv.FormatUint(ts.step, 10)
	}
	return out
}

// set makes desired the state of typeURL and returns the names that
// changed (updated, added or removed) and the serialized size of the new
// state. Marshal errors are returned with the resource left as it was.
func (w *weftStore) set(typeURL string, desired map[string]proto.Message) (changed []string, size int, errs []error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ts := w.types[typeURL]
	for name, res := range desired {
		old, ok := ts.resources[name]
		// The same message (a translator keeps what did not change) is
		// not compared field by field.
		if ok && (old.msg == res || proto.Equal(old.msg, res)) {
			continue
		}
		raw, err := cache.MarshalResource(res)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ts.size += len(raw) - len(old.res.GetResource().GetValue())
		ts.resources[name] = storedResource{msg: res, res: &discovery.Resource{
			Name: name, Version: cache.HashResource(raw), Resource: &anypb.Any{TypeUrl: typeURL, Value: raw}}}
		changed = append(changed, name)
	}
	for name, old := range ts.resources {
		if _, ok := desired[name]; !ok {
			ts.size -= len(old.res.GetResource().GetValue())
			delete(ts.resources, name)
			changed = append(changed, name)
		}
	}
	if len(changed) == 0 {
		return nil, ts.size, errs
	}
	ts.step, ts.changedAt = ts.step+1, time.Now()
	ts.log = append(ts.log, stepNames{ts.step, changed})
	if len(ts.log) > maxLoggedSteps {
		ts.log = slices.Delete(ts.log, 0, len(ts.log)-maxLoggedSteps)
	}
	close(w.changed)
	w.changed = make(chan struct{})
	return changed, ts.size, errs
}

// diff brings sub up to date with typeURL's resources: it returns the
// response that does (nil when the client has everything, except that the
// first diff always answers) and records in sub what it sent. A client so
// far behind that the log no longer reaches it gets an error instead.
//
// After a diff the client holds exactly the wanted resources of this step,
// so the next diff needs only the names changed since (from the log) and
// those whose subscription changed (recheck), and no stream keeps a copy of
// its client's versions: only the first diff of a resumed stream compares
// with the versions the client came with.
func (w *weftStore) diff(typeURL string, sub *subscription) (*discovery.DeltaDiscoveryResponse, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	ts := w.types[typeURL]
	if ts.step == sub.step && !sub.full && len(sub.recheck) == 0 {
		return nil, nil
	}
	if !sub.full && !ts.logReaches(sub.step) {
		// What changed since is no longer known; a new stream starts from
		// the versions the client holds.
		return nil, status.Errorf(codes.Unavailable, "%s: the client fell more than %d changes behind; reconnect to resume", typeURL, maxLoggedSteps)
	}
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL, SystemVersionInfo: strconv.FormatUint(ts.step, 10)}
	send := func(r storedResource) { resp.Resources = append(resp.Resources, r.res) }
	if sub.full {
		ts.compare(sub, send, &resp.RemovedResources)
	} else {
		// A name changed in several steps is looked at once.
		var seen map[string]bool
		i, _ := slices.BinarySearchFunc(ts.log, sub.step+1, func(s stepNames, step uint64) int { return cmp.Compare(s.step, step) })
		if len(ts.log)-i > 1 || len(sub.recheck) > 0 {
			seen = map[string]bool{}
		}
		look := func(name string) {
			if seen != nil {
				if seen[name] {
					return
				}
				seen[name] = true
			}
			if !sub.wants(name) {
				return
			}
			if r, ok := ts.resources[name]; ok {
				send(r)
			} else {
				resp.RemovedResources = append(resp.RemovedResources, name)
			}
		}
		for _, st := range ts.log[i:] {
			for _, name := range st.names {
				look(name)
			}
		}
		for name := range sub.recheck {
			look(name)
		}
	}
	first := sub.full
	sub.step, sub.full, sub.recheck, sub.known = ts.step, false, nil, nil
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 && !first {
		return nil, nil
	}
	return resp, nil
}

// compare sends every wanted resource whose version differs from what the
// client said it holds (sub.known: nothing on a new client, its versions
// on a resumed one) and removes what it holds that is gone or not wanted.
func (ts *typeStore) compare(sub *subscription, send func(storedResource), removed *[]string) {
	sendIfNew := func(r storedResource) {
		if v, ok := sub.known[r.res.Name]; !ok || v != r.res.Version {
			send(r)
		}
	}
	if sub.wildcard {
		for _, r := range ts.resources {
			sendIfNew(r)
		}
	} else {
		for name := range sub.names {
			if r, ok := ts.resources[name]; ok {
				sendIfNew(r)
			}
		}
	}
	for name := range sub.known {
		if _, ok := ts.resources[name]; !ok || !sub.wants(name) {
			*removed = append(*removed, name)
		}
	}
}

// logReaches reports whether the log holds every change after step.
func (ts *typeStore) logReaches(step uint64) bool {
	return step == ts.step || (len(ts.log) > 0 && ts.log[0].step <= step+1)
}
