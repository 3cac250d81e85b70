//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Weft traffic capture: tcx ingress programs that steer enrolled pods' TCP
// traffic (and their DNS, UDP and TCP to port 53, when the DNS proxy is on)
// into the node agent's transparent sockets with bpf_sk_assign.
//
//   capture_outbound  host-side veth of EVERY local pod, enrolled or not
//                     (packets leaving the pod). From an enrolled veth: the
//                     outbound decision. From any other veth: the inbound
//                     decision for the destination, so a plaintext client on
//                     the same node cannot reach an enrolled pod directly
//                     through the host's routing (which never crosses the
//                     uplink) and bypass the inbound listener and its policy.
//   capture_inbound   the node's uplink (packets for enrolled pod IPs;
//                     HBONE tunnels to <pod IP>:<HBONE port> go to the HBONE
//                     listener, everything else to the plaintext one)
//   guard_to_pod      tcx egress of the same host-side veths (packets into
//                     the pod): drops what the mesh cannot capture into an
//                     enrolled pod (its IPv6 TCP)
//
// Enrolment is data: the programs stay attached and user space flips flags
// in the maps below. Captured packets get WEFT_MARK_CAPTURE so that the
// policy-routing rule (fwmark -> table with "local 0.0.0.0/0 dev lo")
// delivers them locally: sk_assign alone does not bypass routing.
//
// Fail closed: when a new connection (a bare SYN) from or to an enrolled pod
// should be captured but its listener is not there (agent not running or
// restarting), the SYN is dropped. The client retransmits it (1 s, 3 s, ...),
// so an agent restart shows up as connection delay, never as traffic that
// bypasses the mesh. A zero port in proxy_listeners means "capture disabled in that
// direction": those packets pass untouched (fail open, on purpose).
//
// Keep the constants and struct layouts in sync with capture.go.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// tcx verdicts (linux/bpf.h >= 6.6; the build headers may be older).
#define WEFT_TCX_NEXT -1   // not ours: let the next program in the chain decide
#define WEFT_TCX_PASS 0    // captured: deliver, skip the rest of the chain
#define WEFT_TC_ACT_SHOT 2 // fail closed: drop (TCX_DROP, same value in cls_bpf)

// skb->mark bits. They avoid kube-proxy (0x4000, 0x8000) and Cilium (0xf00).
#define WEFT_MARK_CAPTURE 0x1000 // set on captured packets (policy routing)
#define WEFT_MARK_SKIP 0x2000    // set by the agent on its own traffic

// enrolment flags (value of enrolled_ifindex / enrolled_ips)
#define WEFT_F_CAPTURE 0x1  // steer new connections to the proxy
#define WEFT_F_DRAINING 0x2 // keep steering established proxied flows only

// proxy_listeners keys
#define WEFT_LISTENER_OUTBOUND 0 // 15001: everything an enrolled pod opens
#define WEFT_LISTENER_INBOUND 1  // 15006: plaintext to an enrolled pod IP
#define WEFT_LISTENER_HBONE 2    // 15008: tunnels to <enrolled pod IP>:port
#define WEFT_LISTENER_MAX 3

// counters keys (per-CPU u64, summed by user space)
#define WEFT_COUNTER_CAPTURED 0 // new connections (SYNs) assigned to a listener
#define WEFT_COUNTER_DROPPED 1  // SYNs dropped because the listener was missing
#define WEFT_COUNTER_MAX 2

#define BPF_TCP_SYN_SENT_STATE 2  // enum bpf_tcp_state BPF_TCP_SYN_SENT
#define BPF_TCP_TIME_WAIT_STATE 6 // enum bpf_tcp_state BPF_TCP_TIME_WAIT
#define BPF_TCP_LISTEN_STATE 10   // enum bpf_tcp_state BPF_TCP_LISTEN

struct enrolment {
	__u32 flags;
};

// 8 bytes: addr at 0, port at 4, dport at 6 (once padding: an agent that
// predates dport writes 0 there, which means "port").
struct listener {
	__be32 addr;  // IPv4, network order (127.0.0.1: matches 0.0.0.0 binds too)
	__be16 port;  // network order (e.g. 15001); 0 = capture disabled (fail open)
	__be16 dport; // HBONE entry only: the destination port that selects this
		      // listener (15008), which the listener's own port need not
		      // be (a successor agent listens elsewhere); 0 = port
};

struct lpm_v4_key {
	__u32 prefixlen;
	__be32 addr;
};

// Outbound enrolment, keyed by the host-side veth ifindex. The veth is the
// pod's identity on the node: it cannot be spoofed from inside the pod (a
// source IP can), needs no update when a pod has several addresses, and is
// exactly what the CNI plugin knows when it enrols the pod. A veth without an
// entry (or without CAPTURE/DRAINING) is a non-enrolled pod: its packets get
// the inbound decision (enrolled_ips) instead.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct enrolment);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enrolled_ifindex SEC(".maps");

// Inbound enrolment, keyed by pod IPv4 address (network order).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, struct enrolment);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enrolled_ips SEC(".maps");

// The proxy's transparent listeners (key WEFT_LISTENER_*). The HBONE
// entry's dport is "the HBONE port": inbound packets to an enrolled pod IP
// with that destination port go to the HBONE listener.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WEFT_LISTENER_MAX);
	__type(key, __u32);
	__type(value, struct listener);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} proxy_listeners SEC(".maps");

// Service VIPs with an enrolled endpoint on this node. A same-node client
// outside the mesh reaches such a Service through kube-proxy's DNAT, which
// runs after tc: the uplink never sees it and the destination's pod IP is
// not visible yet. Its connections go to the outbound listener instead, where
// the agent picks the endpoint and polices a local enrolled one.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_service_vips SEC(".maps");

// The DNS proxy (one entry, key 0): enrolled pods' UDP and TCP to port 53
// go there while its port is non-zero. A map of its own rather than a
// proxy_listeners key, so that the maps an older agent pinned still match.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct listener);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dns_listener SEC(".maps");

// Connection counters (key WEFT_COUNTER_*), per CPU: no atomics needed.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WEFT_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

// IPv6 packets of enrolled pods dropped because IPv6 TCP is not captured
// (per CPU, one entry). Its own map: the pinned counters map of an older
// agent must still match.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ipv6_dropped SEC(".maps");

// Destinations that are never captured (node-local addresses, ...).
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bypass SEC(".maps");

struct flow {
	struct iphdr *ip;
	struct tcphdr *tcp;
};

// parse_tcp4 finds the IPv4 and TCP headers of an Ethernet frame.
static __always_inline int parse_tcp4(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->protocol != IPPROTO_TCP || ip->ihl < 5)
		return -1;
	// fragments other than the first carry no TCP header
	if (ip->frag_off & bpf_htons(0x1fff))
		return -1;
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > data_end)
		return -1;
	f->ip = ip;
	f->tcp = tcp;
	return 0;
}

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &which);
	if (n)
		*n += 1;
}

// ipv6_uncaptured: an IPv6 packet the mesh would have to capture but
// cannot (only IPv4 is steered to the proxy). Only what IPv4 also lets pass
// goes: ICMPv6 (neighbour discovery), UDP (not meshed, as in IPv4), and
// either behind one hop-by-hop header (MLD reports). Everything else,
// TCP and anything behind other extension headers (where TCP could hide),
// is dropped, so an enrolled pod's IPv6 TCP cannot bypass the mesh either
// way: its own SYNs and its answers to inbound SYNs leave through here.
static __always_inline int ipv6_uncaptured(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return 0;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	if ((void *)(ip6 + 1) > data_end)
		return 1; // truncated: not something to let through
	__u8 next = ip6->nexthdr;
	if (next == IPPROTO_HOPOPTS) {
		__u8 *hbh = (void *)(ip6 + 1); // its first byte is the next header
		if ((void *)(hbh + 1) > data_end)
			return 1;
		next = *hbh;
	}
	return next != IPPROTO_ICMPV6 && next != IPPROTO_UDP;
}

// drop_ipv6 counts an uncaptured IPv6 packet of an enrolled pod and drops it.
static __always_inline int drop_ipv6(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&ipv6_dropped, &zero);
	if (n)
		*n += 1;
	return WEFT_TC_ACT_SHOT;
}

static __always_inline int bypassed(__be32 daddr)
{
	struct lpm_v4_key key = {.prefixlen = 32, .addr = daddr};
	return bpf_map_lookup_elem(&bypass, &key) != NULL;
}

// assign_established steers the packet to the socket that owns its exact
// 4-tuple in this netns (a connection the proxy already accepted or
// opened), if that socket can be the packet's. The proxy's sockets and the
// pods' pick their ports independently, so a pod's new direct connection
// may reuse the tuple of one the proxy closed a moment ago, whose socket
// lingers (TIME_WAIT for 60 s, or orphaned while its peer closes). So:
//   - a SYN-ACK only answers a connect in progress (SYN_SENT: the proxy's
//     own delivery to a pod);
//   - a bare SYN goes to an existing socket only when the proxy takes new
//     connections (takes_new): the kernel queues no connection on a listener
//     while a TIME_WAIT socket holds its tuple (the SYN would be dropped
//     until that socket expires), whereas the TIME_WAIT socket answers with
//     an ACK that the client resets, which frees the tuple for its next SYN
//     (one retransmission). A draining pod's SYN always goes direct;
//   - other segments go to any socket but a TIME_WAIT one when the pod takes
//     no new connections (draining: that socket cannot be a live flow's).
// Listening sockets that happen to match the destination port are never
// ours.
static __always_inline int assign_established(struct __sk_buff *skb, struct flow *f, int takes_new)
{
	int syn = f->tcp->syn, ack = f->tcp->ack;
	if (syn && !ack && !takes_new)
		return -1;

	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = f->ip->saddr;
	t.ipv4.daddr = f->ip->daddr;
	t.ipv4.sport = f->tcp->source;
	t.ipv4.dport = f->tcp->dest;

	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return -1;
	__u32 state = sk->state;
	int ours = state != BPF_TCP_LISTEN_STATE;
	if (syn && ack)
		ours = state == BPF_TCP_SYN_SENT_STATE;
	else if (!takes_new && state == BPF_TCP_TIME_WAIT_STATE)
		ours = 0;
	if (!ours) {
		bpf_sk_release(sk);
		return -1;
	}
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return err ? -1 : 0;
}

// assign_listener steers a new connection to the proxy listener l.
static __always_inline int assign_listener(struct __sk_buff *skb, struct flow *f, struct listener *l)
{
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = f->ip->saddr;
	t.ipv4.sport = f->tcp->source;
	t.ipv4.daddr = l->addr;
	t.ipv4.dport = l->port;

	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return -1;
	if (sk->state != BPF_TCP_LISTEN_STATE) {
		bpf_sk_release(sk);
		return -1;
	}
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return err ? -1 : 0;
}

// steer is the common decision once a packet belongs to an enrolled pod.
static __always_inline int steer(struct __sk_buff *skb, struct flow *f, __u32 flags, __u32 which)
{
	// A draining pod takes no new proxied connections, except tunnels: a
	// node that still believes the pod is in the mesh (its agent not told
	// yet) opens one, and refusing it would reset that client's request.
	int takes_new = which == WEFT_LISTENER_HBONE || ((flags & WEFT_F_CAPTURE) && !(flags & WEFT_F_DRAINING));
	// Only a bare SYN starts a proxied connection: mid-stream packets of a
	// flow that began before enrolment keep going direct.
	int bare_syn = f->tcp->syn && !f->tcp->ack;

	// Established proxied flows keep going to the proxy, also while draining.
	if (assign_established(skb, f, takes_new) == 0)
		goto captured;
	if (!takes_new || !bare_syn)
		return WEFT_TCX_NEXT;

	struct listener *l = bpf_map_lookup_elem(&proxy_listeners, &which);
	if (!l || !l->port)
		return WEFT_TCX_NEXT; // capture disabled in this direction
	if (assign_listener(skb, f, l) != 0) {
		// Proxy not listening (agent down or restarting): fail closed. The
		// client retransmits the SYN and gets in once the agent is back.
		count(WEFT_COUNTER_DROPPED);
		return WEFT_TC_ACT_SHOT;
	}
	count(WEFT_COUNTER_CAPTURED);
captured:
	skb->mark |= WEFT_MARK_CAPTURE;
	return WEFT_TCX_PASS;
}

// steer_dns steers an enrolled pod's DNS (UDP or TCP to port 53) to the
// DNS proxy, which sees the original destination (IP_ORIGDSTADDR, or the
// accepted socket's local address) and answers from it. Unlike the TCP
// proxy, DNS fails open: without a DNS proxy (agent down, restarting, DNS
// capture off) queries go to the server the pod asked, which resolves
// everything but the mesh's auto-allocated VIPs.
static __always_inline int steer_dns(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return WEFT_TCX_NEXT;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl < 5)
		return WEFT_TCX_NEXT;
	// Fragmented queries (either part) are left alone: no port to match.
	if (ip->frag_off & bpf_htons(0x3fff))
		return WEFT_TCX_NEXT;
	__u32 key = 0;
	struct listener *l = bpf_map_lookup_elem(&dns_listener, &key);
	if (!l || !l->port)
		return WEFT_TCX_NEXT;

	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)ip + ip->ihl * 4;
		if ((void *)(udp + 1) > data_end || udp->dest != bpf_htons(53))
			return WEFT_TCX_NEXT;
		struct bpf_sock_tuple t = {};
		t.ipv4.saddr = ip->saddr;
		t.ipv4.sport = udp->source;
		t.ipv4.daddr = l->addr;
		t.ipv4.dport = l->port;
		struct bpf_sock *sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return WEFT_TCX_NEXT;
		long err = bpf_sk_assign(skb, sk, 0);
		bpf_sk_release(sk);
		if (err)
			return WEFT_TCX_NEXT;
		skb->mark |= WEFT_MARK_CAPTURE;
		return WEFT_TCX_PASS;
	}
	struct flow f;
	if (parse_tcp4(skb, &f) != 0 || f.tcp->dest != bpf_htons(53))
		return WEFT_TCX_NEXT;
	if (assign_established(skb, &f, 1) != 0) {
		if (!f.tcp->syn || f.tcp->ack)
			return WEFT_TCX_NEXT;
		if (assign_listener(skb, &f, l) != 0)
			return WEFT_TCX_NEXT; // to the outbound listener, as without DNS capture
	}
	skb->mark |= WEFT_MARK_CAPTURE;
	return WEFT_TCX_PASS;
}

// steer_inbound is the inbound decision, shared by both programs: TCP to an
// enrolled pod IP (enrolled_ips with CAPTURE or DRAINING) goes to the HBONE
// listener when its destination port is the HBONE port, else to the
// plaintext inbound listener (established lookup first, fail closed, see
// steer). Anything else is not ours. The bypass map does not apply here:
// the destination is an enrolled pod, never a node-local address.
static __always_inline int steer_inbound(struct __sk_buff *skb, struct flow *f)
{
	__be32 daddr = f->ip->daddr;
	struct enrolment *e = bpf_map_lookup_elem(&enrolled_ips, &daddr);
	if (!e)
		return WEFT_TCX_NEXT;
	__u32 flags = e->flags;
	if (!(flags & (WEFT_F_CAPTURE | WEFT_F_DRAINING)))
		return WEFT_TCX_NEXT;

	// HBONE tunnels from other nodes are addressed to <pod IP>:<HBONE port>
	// and terminate in the node's HBONE listener, not in the pod. Port 0 in
	// the HBONE entry: the port is not special (plaintext like any other).
	__u32 which = WEFT_LISTENER_INBOUND;
	__u32 key = WEFT_LISTENER_HBONE;
	struct listener *h = bpf_map_lookup_elem(&proxy_listeners, &key);
	if (h && h->port && f->tcp->dest == (h->dport ? h->dport : h->port))
		which = WEFT_LISTENER_HBONE;
	return steer(skb, f, flags, which);
}

// capture_outbound runs on the host-side veth of every local pod. The agent
// attaches it to non-enrolled pods' veths too: that is where a same-node
// plaintext client's packets to an enrolled pod are seen (they are routed
// veth to veth and never cross the uplink).
SEC("tcx/ingress")
int capture_outbound(struct __sk_buff *skb)
{
	struct flow f;

	if (skb->mark & WEFT_MARK_SKIP)
		return WEFT_TCX_NEXT;
	__u32 ifindex = skb->ingress_ifindex;
	struct enrolment *e = bpf_map_lookup_elem(&enrolled_ifindex, &ifindex);
	__u32 flags = e ? e->flags : 0;
	// DNS of a pod that takes new proxied connections (before the bypass
	// check: a node-local resolver is captured too, as in Istio).
	if ((flags & WEFT_F_CAPTURE) && !(flags & WEFT_F_DRAINING)) {
		if (ipv6_uncaptured(skb))
			return drop_ipv6();
		int verdict = steer_dns(skb);
		if (verdict != WEFT_TCX_NEXT)
			return verdict;
	}
	if (parse_tcp4(skb, &f) != 0)
		return WEFT_TCX_NEXT;
	if (!(flags & (WEFT_F_CAPTURE | WEFT_F_DRAINING))) {
		// Not an enrolled source: police the destination like the uplink
		// does. To a non-enrolled destination this costs two hash lookups
		// and the packet passes untouched.
		__be32 daddr = f.ip->daddr;
		if (bpf_map_lookup_elem(&local_service_vips, &daddr))
			return steer(skb, &f, WEFT_F_CAPTURE, WEFT_LISTENER_OUTBOUND);
		return steer_inbound(skb, &f);
	}
	// Enrolled source: its own outbound capture (replies of connections the
	// agent delivered to this pod are found by the established lookup).
	if (!bypassed(f.ip->daddr)) {
		int verdict = steer(skb, &f, flags, WEFT_LISTENER_OUTBOUND);
		if (verdict != WEFT_TCX_NEXT)
			return verdict;
	}
	// Not taken (source draining, destination bypassed, outbound capture
	// off): plaintext to an enrolled pod is still policed at its inbound.
	return steer_inbound(skb, &f);
}

// capture_inbound runs on the node's uplink: traffic from other nodes.
SEC("tcx/ingress")
int capture_inbound(struct __sk_buff *skb)
{
	struct flow f;

	if (skb->mark & WEFT_MARK_SKIP)
		return WEFT_TCX_NEXT;
	if (parse_tcp4(skb, &f) != 0)
		return WEFT_TCX_NEXT;
	return steer_inbound(skb, &f);
}

// guard_to_pod runs on the egress of every local pod's host-side veth: the
// packets the host delivers into the pod. An enrolled pod's own IPv6 TCP
// fails at capture_outbound (its SYNs and its answers leave through there),
// but a SYN that carries data (TCP Fast Open) would hand that data to a
// server in the pod before any answer is dropped: such packets stop here.
SEC("tcx/egress")
int guard_to_pod(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct enrolment *e = bpf_map_lookup_elem(&enrolled_ifindex, &ifindex);
	if (!e || !(e->flags & WEFT_F_CAPTURE) || (e->flags & WEFT_F_DRAINING))
		return WEFT_TCX_NEXT;
	if (ipv6_uncaptured(skb))
		return drop_ipv6();
	return WEFT_TCX_NEXT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
