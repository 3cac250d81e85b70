// Package xdsclient is a delta ADS client: it subscribes to every resource
// of the given types, hands each change to a handler, ACKs or NACKs it, and
// reconnects with back-off, resuming from the versions it holds so a
// reconnect transfers only what changed. The handler keeps the state (a
// Mirror keeps the resources for those with no store of their own); the
// last good state survives a control plane that goes away.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// Handler receives the resources of one response: updated (decoded) and
// removed names. The client keeps none of the messages: they are the
// handler's from then on. An error NACKs the response; the handler's state
// is then to be left as it was before the response, and the client keeps
// the versions it had.
type Handler func(typeURL string, updated map[string]proto.Message, removed []string) error

// Config configures a client.
type Config struct {
	Conn  grpc.ClientConnInterface
	Node  *core.Node
	Types []string
	Log   *slog.Logger
	// Backoff bounds for reconnects (defaults 200ms and 15s).
	MinBackoff, MaxBackoff time.Duration
}

// Client is a running delta ADS subscription.
type Client struct {
	cfg     Config
	handler Handler

	mu       sync.Mutex
	versions map[string]map[string]string // type -> name -> version
	synced   map[string]bool
	connects int
}

// New makes a client; Run starts it.
func New(cfg Config, h Handler) *Client {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 15 * time.Second
	}
	c := &Client{cfg: cfg, handler: h, versions: map[string]map[string]string{}, synced: map[string]bool{}}
	for _, t := range cfg.Types {
		c.versions[t] = map[string]string{}
	}
	return c
}

// Run keeps the subscription open until ctx ends.
func (c *Client) Run(ctx context.Context) {
	backoff := c.cfg.MinBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := c.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = c.cfg.MinBackoff // the stream was healthy for a while
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.cfg.Log.Warn("xds stream ended; reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
}

// Synced reports whether every type received its first response on the
// current or an earlier stream.
func (c *Client) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.cfg.Types {
		if !c.synced[t] {
			return false
		}
	}
	return true
}

// Connects counts the streams opened so far.
func (c *Client) Connects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connects
}

func (c *Client) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ads := discovery.NewAggregatedDiscoveryServiceClient(c.cfg.Conn)
	s, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("open delta ADS stream: %w", err)
	}
	c.mu.Lock()
	c.connects++
	var reqs []*discovery.DeltaDiscoveryRequest
	for _, t := range c.cfg.Types {
		// Empty subscribe list on the first request means wildcard; the
		// versions we hold let the server send only the difference.
		reqs = append(reqs, &discovery.DeltaDiscoveryRequest{
			Node: c.cfg.Node, TypeUrl: t, InitialResourceVersions: maps.Clone(c.versions[t]),
		})
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if err := s.Send(r); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		ack := &discovery.DeltaDiscoveryRequest{Node: c.cfg.Node, TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if err := c.apply(resp); err != nil {
			c.cfg.Log.Warn("rejecting xds response", "type", resp.GetTypeUrl(), "nonce", resp.GetNonce(), "err", err)
			ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		}
		if err := s.Send(ack); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	}
}

// apply decodes a response and hands it to the handler; only an accepted
// response changes the versions.
func (c *Client) apply(resp *discovery.DeltaDiscoveryResponse) error {
	typ := resp.GetTypeUrl()
	c.mu.Lock()
	_, known := c.versions[typ]
	c.mu.Unlock()
	if !known {
		return fmt.Errorf("unexpected type %s", typ)
	}
	updated := make(map[string]proto.Message, len(resp.GetResources()))
	versions := make(map[string]string, len(resp.GetResources()))
	var errs []error
	for _, r := range resp.GetResources() {
		m, err := r.GetResource().UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("resource %s: %w", r.GetName(), err))
			continue
		}
		updated[r.GetName()] = m
		versions[r.GetName()] = r.GetVersion()
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := c.handler(typ, updated, resp.GetRemovedResources()); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.Copy(c.versions[typ], versions)
	for _, name := range resp.GetRemovedResources() {
		delete(c.versions[typ], name)
	}
	c.synced[typ] = true
	return nil
}
