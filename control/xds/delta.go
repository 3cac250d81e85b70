package xds

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ads is the ADS service: state-of-the-world streams go to
// go-control-plane; delta streams to serveDelta, which serves Weft's types
// itself and passes Envoy's on to go-control-plane.
type ads struct {
	server.Server
	s *Server
}

func (a ads) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.s.serveDelta(st, a.Server)
}

// envoyPipe is the part of a delta stream that carries Envoy's types, as a
// stream of its own for go-control-plane: it receives the requests for
// those types and sends on the real stream.
type envoyPipe struct {
	discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	ctx    context.Context // the stream's, with its ID (streamIDKey)
	sendMu *sync.Mutex     // shared with the Weft side of the stream
	reqs   chan *discovery.DeltaDiscoveryRequest
	done   chan struct{} // closed when go-control-plane's handler returned
	err    error         // what it returned
}

// streamIDKey carries a delta stream's ID to go-control-plane's callbacks.
type streamIDKey struct{}

func (p *envoyPipe) Context() context.Context { return p.ctx }

func (p *envoyPipe) Recv() (*discovery.DeltaDiscoveryRequest, error) {
	if r, ok := <-p.reqs; ok {
		return r, nil
	}
	return nil, io.EOF
}

func (p *envoyPipe) Send(r *discovery.DeltaDiscoveryResponse) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return p.AggregatedDiscoveryService_DeltaAggregatedResourcesServer.Send(r)
}

// subscription is what one stream's client asked for of one type. After
// each response the client holds exactly the wanted resources of step.
type subscription struct {
	wildcard bool
	names    map[string]struct{} // subscribed by name (with or without wildcard)
	step     uint64              // the store's step the client is at
	full     bool                // the first response is still to go: compare everything
	known    map[string]string   // until then, the versions the client came with
	recheck  map[string]struct{} // names to look at besides the changes since step
	nonce    string              // the response awaiting an answer, "" for none
}

// newSubscription starts a subscription from its first request: no names
// (or "*") means wildcard, and the versions the client holds are not sent
// again.
func newSubscription(req *discovery.DeltaDiscoveryRequest) (*subscription, error) {
	sub := &subscription{
		wildcard: len(req.GetResourceNamesSubscribe()) == 0 || slices.Contains(req.GetResourceNamesSubscribe(), "*"),
		names:    map[string]struct{}{},
		known:    req.GetInitialResourceVersions(),
		full:     true,
	}
	return sub, sub.update(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
}

// wants reports whether the client subscribed to name.
func (sub *subscription) wants(name string) bool {
	if sub.wildcard {
		return true
	}
	_, ok := sub.names[name]
	return ok
}

// update applies a request's subscribe and unsubscribe lists, following
// the delta xDS protocol. Switching the wildcard ("*") on or off after the
// first request is refused: no client of Weft's types does it.
func (sub *subscription) update(subscribe, unsubscribe []string) error {
	for _, name := range subscribe {
		if name == "*" {
			if !sub.wildcard {
				return status.Error(codes.Unimplemented, "switching to a wildcard subscription after the first request is not supported for Weft's types")
			}
			continue
		}
		if _, ok := sub.names[name]; !ok && !sub.wildcard {
			sub.mark(name) // not held yet
		}
		sub.names[name] = struct{}{}
	}
	for _, name := range unsubscribe {
		if name == "*" {
			if sub.wildcard {
				return status.Error(codes.Unimplemented, "leaving a wildcard subscription is not supported for Weft's types")
			}
			continue
		}
		if _, ok := sub.names[name]; !ok {
			continue
		}
		delete(sub.names, name)
		if sub.wildcard {
			// Still wanted through the wildcard: the protocol asks the
			// server to say whether it exists, so it is sent again.
			sub.mark(name)
		}
		// Otherwise it is forgotten without a removal.
	}
	return nil
}

func (sub *subscription) mark(name string) {
	if sub.recheck == nil {
		sub.recheck = map[string]struct{}{}
	}
	sub.recheck[name] = struct{}{}
}

// deltaStream is one delta ADS stream. It keeps one response per Weft
// type in flight: the next goes out once the client answered (ACK or NACK)
// and carries everything that changed meanwhile, so a slow client gets
// fewer, larger responses and never holds up the others. Requests for
// Envoy's types go to go-control-plane through an envoyPipe, started on
// the first of them.
type deltaStream struct {
	s      *Server
	st     discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	gcp    server.Server
	id     int64
	node   *core.Node
	subs   map[string]*subscription // per Weft type
	nonce  int64                    // of the last Weft response
	sendMu sync.Mutex               // the Weft side and the envoyPipe both send
	envoy  *envoyPipe               // nil until a request for an Envoy type
}

// serveDelta serves a delta ADS stream until it ends.
func (s *Server) serveDelta(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, gcp server.Server) error {
	d := &deltaStream{s: s, st: st, gcp: gcp, id: s.ids.next(), subs: map[string]*subscription{}}
	callbacks{s}.open(st.Context(), d.id, true)
	defer d.close()
	reqs, recvErr := receive(st)
	for {
		wake := s.weft.wait() // before comparing: a change after it wakes the select
		if err := d.sendChanges(); err != nil {
			return err
		}
		var envoyDone <-chan struct{} // nil: never ready
		if d.envoy != nil {
			envoyDone = d.envoy.done
		}
		select {
		case <-s.ctx.Done():
			return nil
		case <-st.Context().Done():
			return st.Context().Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-envoyDone:
			return d.envoy.err
		case <-wake:
		case req := <-reqs:
			if err := d.handle(req); err != nil {
				return err
			}
		}
	}
}

// receive reads the stream's requests into a channel until it fails.
func receive(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) (<-chan *discovery.DeltaDiscoveryRequest, <-chan error) {
	reqs, recvErr := make(chan *discovery.DeltaDiscoveryRequest), make(chan error, 1)
	go func() {
		for {
			req, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-st.Context().Done():
				return
			}
		}
	}()
	return reqs, recvErr
}

// sendChanges sends each Weft type with no response in flight what
// changed for its client.
func (d *deltaStream) sendChanges() error {
	for typeURL, sub := range d.subs {
		if sub.nonce != "" {
			continue
		}
		resp, err := d.s.weft.diff(typeURL, sub)
		if err != nil {
			return err
		}
		if resp == nil {
			continue
		}
		d.nonce++
		resp.Nonce = strconv.FormatInt(d.nonce, 10)
		sub.nonce = resp.Nonce
		callbacks{d.s}.response(d.id, typeURL, resp.Nonce, resp.SystemVersionInfo, len(resp.Resources)+len(resp.RemovedResources))
		d.sendMu.Lock()
		err = d.st.Send(resp)
		d.sendMu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// handle takes one request: Weft's types here, Envoy's to go-control-plane.
func (d *deltaStream) handle(req *discovery.DeltaDiscoveryRequest) error {
	if req.GetNode() != nil {
		d.node = req.GetNode()
	} else {
		req.Node = d.node // clients send it on the first request only
	}
	if d.s.weft.has(req.GetTypeUrl()) {
		return d.weftRequest(req)
	}
	if d.envoy == nil {
		d.envoy = d.startEnvoyPipe()
	}
	select {
	case d.envoy.reqs <- req:
		return nil
	case <-d.envoy.done:
		return d.envoy.err
	}
}

// weftRequest checks and applies a request for one of Weft's types.
func (d *deltaStream) weftRequest(req *discovery.DeltaDiscoveryRequest) error {
	typeURL := req.GetTypeUrl()
	if err := (callbacks{d.s}).request(d.id, req, true, "nonce", req.GetResponseNonce(), "resources", req.GetResourceNamesSubscribe()); err != nil {
		return err
	}
	sub := d.subs[typeURL]
	if sub == nil {
		sub, err := newSubscription(req)
		d.subs[typeURL] = sub
		return err
	}
	if n := req.GetResponseNonce(); n != "" && n == sub.nonce {
		sub.nonce = "" // answered; a NACKed response is not sent again until its resources change
	}
	return sub.update(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
}

func (d *deltaStream) startEnvoyPipe() *envoyPipe {
	p := &envoyPipe{
		AggregatedDiscoveryService_DeltaAggregatedResourcesServer: d.st,
		ctx:    context.WithValue(d.st.Context(), streamIDKey{}, d.id),
		sendMu: &d.sendMu,
		reqs:   make(chan *discovery.DeltaDiscoveryRequest),
		done:   make(chan struct{}),
	}
	go func() {
		defer close(p.done)
		p.err = d.gcp.DeltaStreamHandler(p, resource.AnyType)
	}()
	return p
}

// close ends the stream's bookkeeping. go-control-plane may still be
// sending, which ends only once the handler returned: the stream (its
// caller in particular) stays known until it is done, so a request it
// still takes is checked against the right caller.
func (d *deltaStream) close() {
	cb := callbacks{d.s}
	if d.envoy == nil {
		cb.closed(d.id, d.node)
		return
	}
	close(d.envoy.reqs)
	go func() {
		<-d.envoy.done
		cb.closed(d.id, d.node)
	}()
}

// deltaOnly stands for Weft's types in go-control-plane's cache: they are
// served over delta xDS only (serveDelta), so a state-of-the-world request
// for them is refused with the reason.
type deltaOnly struct{}

func (deltaOnly) CreateWatch(r *cache.Request, _ cache.Subscription, _ chan cache.Response) (func(), error) {
	return nil, status.Errorf(codes.InvalidArgument, "%s is served over delta xDS only", r.GetTypeUrl())
}

func (deltaOnly) CreateDeltaWatch(r *cache.DeltaRequest, _ cache.Subscription, _ chan cache.DeltaResponse) (func(), error) {
	return nil, status.Errorf(codes.Internal, "%s reached go-control-plane's delta server", r.GetTypeUrl()) // serveDelta keeps it
}

func (deltaOnly) Fetch(_ context.Context, r *cache.Request) (cache.Response, error) {
	return nil, status.Errorf(codes.Unimplemented, "%s is served over delta xDS only", r.GetTypeUrl())
}
