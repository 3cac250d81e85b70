// Package dnsresolve resolves hostnames the way Envoy's DNS clusters do:
// through the servers, search list and ndots of resolv.conf, with the
// answer's TTL, re-resolving in the background (Watch) so that no request
// waits for a lookup.
package dnsresolve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/miekg/dns"
)

// Family is which address families a name resolves to: Envoy's
// Cluster.DnsLookupFamily.
type Family int

const (
	// V4Only asks for A records.
	V4Only Family = iota
	// V6Only asks for AAAA records.
	V6Only
	// V4Preferred asks for A records, and AAAA only when there are none.
	V4Preferred
	// Auto asks for AAAA records, and A only when there are none (Envoy's
	// AUTO).
	Auto
	// All asks for both and uses every address.
	All
)

func (f Family) String() string {
	return [...]string{"V4_ONLY", "V6_ONLY", "V4_PREFERRED", "AUTO", "ALL"}[f]
}

// queries are the record types to ask for, in order; first says whether
// the first type with addresses is the answer (else all are merged).
func (f Family) queries() (types []uint16, first bool) {
	switch f {
	case V6Only:
		return []uint16{dns.TypeAAAA}, true
	case V4Preferred:
		return []uint16{dns.TypeA, dns.TypeAAAA}, true
	case Auto:
		return []uint16{dns.TypeAAAA, dns.TypeA}, true
	case All:
		return []uint16{dns.TypeA, dns.TypeAAAA}, false
	}
	return []uint16{dns.TypeA}, true
}

// Answer is the result of one lookup: the addresses in the order the
// server gave them and the smallest TTL on the way to them (CNAMEs
// included).
type Answer struct {
	Addrs []netip.Addr
	TTL   time.Duration
}

// ErrNotFound is a name that resolved to no address (NXDOMAIN, or no record
// of the family asked for, under every search suffix).
var ErrNotFound = errors.New("no address")

// Client looks names up with a resolv.conf configuration.
type Client struct {
	conf *dns.ClientConfig
	dns  *dns.Client
}

// NewClient reads the resolver configuration from path (the pod's
// /etc/resolv.conf, as Envoy's c-ares resolver does).
func NewClient(path string) (*Client, error) {
	conf, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("resolver configuration: %w", err)
	}
	if len(conf.Servers) == 0 {
		return nil, fmt.Errorf("resolver configuration %s: no nameserver", path)
	}
	return NewClientFrom(conf), nil
}

// SetDialer makes the client dial its servers with d (e.g. to mark the
// sockets); call before the first Lookup.
func (c *Client) SetDialer(d *net.Dialer) { c.dns.Dialer = d }

// NewClientFrom uses conf as the resolver configuration.
func NewClientFrom(conf *dns.ClientConfig) *Client {
	timeout := time.Duration(max(conf.Timeout, 1)) * time.Second
	return &Client{conf: conf, dns: &dns.Client{Net: "udp", Timeout: timeout}}
}

// Lookup resolves name: a literal IP answers itself (forever); otherwise
// every name of the search list in resolv.conf order, each asked of the
// servers in order until one answers (SERVFAIL and timeouts try the next
// server; NXDOMAIN and empty answers the next name).
func (c *Client) Lookup(ctx context.Context, name string, f Family) (Answer, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return Answer{Addrs: []netip.Addr{ip.Unmap()}, TTL: Forever}, nil
	}
	var errs []error
	for _, fqdn := range c.conf.NameList(name) {
		a, err := c.lookupName(ctx, fqdn, f)
		if err == nil {
			return a, nil
		}
		if ctx.Err() != nil {
			return Answer{}, ctx.Err()
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 && allNotFound(errs) {
		return Answer{}, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	// Not ErrNotFound: a server failed, so the name may well exist.
	return Answer{}, fmt.Errorf("%s: %v", name, errors.Join(errs...))
}

func allNotFound(errs []error) bool {
	for _, err := range errs {
		if !errors.Is(err, ErrNotFound) {
			return false
		}
	}
	return true
}

// Forever is the TTL of a literal IP address.
const Forever = time.Duration(1<<63 - 1)

// lookupName asks for fqdn's records of family f.
func (c *Client) lookupName(ctx context.Context, fqdn string, f Family) (Answer, error) {
	types, first := f.queries()
	var out Answer
	for _, qt := range types {
		a, err := c.query(ctx, fqdn, qt)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Answer{}, err
		}
		if len(a.Addrs) == 0 {
			continue
		}
		if out.TTL == 0 || a.TTL < out.TTL {
			out.TTL = a.TTL
		}
		out.Addrs = append(out.Addrs, a.Addrs...)
		if first {
			break
		}
	}
	if len(out.Addrs) == 0 {
		return Answer{}, fmt.Errorf("%s: %w", fqdn, ErrNotFound)
	}
	return out, nil
}

// query asks the servers in turn for one record type of fqdn.
func (c *Client) query(ctx context.Context, fqdn string, qtype uint16) (Answer, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	var errs []error
	for _, s := range c.conf.Servers {
		server := net.JoinHostPort(s, c.conf.Port)
		resp, err := c.exchange(ctx, m, server)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s from %s: %w", fqdn, dns.TypeToString[qtype], server, err))
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
			return answerOf(resp, qtype), nil
		case dns.RcodeNameError:
			return Answer{}, fmt.Errorf("%s: NXDOMAIN from %s: %w", fqdn, server, ErrNotFound)
		default:
			errs = append(errs, fmt.Errorf("%s %s from %s: %s", fqdn, dns.TypeToString[qtype], server, dns.RcodeToString[resp.Rcode]))
		}
	}
	return Answer{}, errors.Join(errs...)
}

// exchange sends m over UDP, and again over TCP when the answer came back
// truncated.
func (c *Client) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	resp, _, err := c.dns.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		tcp := *c.dns
		tcp.Net = "tcp"
		resp, _, err = tcp.ExchangeContext(ctx, m, server)
	}
	if err == nil && resp.Id != m.Id {
		err = errors.New("answer to another query")
	}
	return resp, err
}

// answerOf collects the addresses of qtype in resp's answer section and the
// smallest TTL of the records there (the CNAME chain's included).
func answerOf(resp *dns.Msg, qtype uint16) Answer {
	var a Answer
	ttl, seen := uint32(0), false
	for _, rr := range resp.Answer {
		var ip net.IP
		switch r := rr.(type) {
		case *dns.A:
			if qtype == dns.TypeA {
				ip = r.A
			}
		case *dns.AAAA:
			if qtype == dns.TypeAAAA {
				ip = r.AAAA
			}
		case *dns.CNAME:
		default:
			continue
		}
		if h := rr.Header().Ttl; !seen || h < ttl {
			ttl, seen = h, true
		}
		if addr, ok := netip.AddrFromSlice(ip); ok && !slices.Contains(a.Addrs, addr.Unmap()) {
			a.Addrs = append(a.Addrs, addr.Unmap())
		}
	}
	a.TTL = time.Duration(ttl) * time.Second
	return a
}

// String is the configuration in resolv.conf terms, for logs.
func (c *Client) String() string {
	return "nameservers " + fmt.Sprint(c.conf.Servers) + " search " + fmt.Sprint(c.conf.Search) + " ndots " + strconv.Itoa(c.conf.Ndots)
}
