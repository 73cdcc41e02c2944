// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * turnpike's XDP fast path: the steady-state data of UDP allocations
 * (RFC 8656 §12, ChannelData), relayed without leaving the driver.
 *
 *   client -> server   ChannelData on a channel with a route in
 *                      tp_channels: the 4-byte header stripped, sent from
 *                      the relayed address to the peer (or, relay <->
 *                      relay, re-framed on the other allocation's channel
 *                      and sent from the server to that allocation's
 *                      client);
 *   peer -> relayed    a datagram from a peer with a route in tp_peers:
 *                      framed as ChannelData and sent to the client.
 *
 * User space stays the authority: it installs a route only while it
 * would forward the same datagram itself (bound channel, live
 * permission, the peer filter, no byte-rate limit to enforce) and
 * removes it when that stops; every route also carries the instant it
 * stops on its own (expires_ns: the channel's or the permission's expiry,
 * whichever is first), so a late removal never forwards a datagram user
 * space would have dropped.
 *
 * Everything else is XDP_PASS, untouched, for the kernel and user space:
 * no route, STUN (Send and Data indications included), padded or
 * truncated ChannelData, IP options and extension headers, fragments, a
 * UDP datagram without checksum, TCP, non-IP. The program never drops.
 *
 * What goes out is what user space would send, header for header
 * (RFC 8656 §14 leaves the IP header fields to the relay; user space
 * takes the socket defaults, the "alternate behavior" of §14.2-14.4, and
 * so does this): TTL / hop limit the host's default (tp_config), DSCP and
 * ECN 0, IPv4 DF set. Two fields differ from a socket's, both the
 * sender's to choose: the IPv4 ID is 0 (Linux counts per destination;
 * an unfragmentable datagram's ID means nothing, RFC 6864 §4.1) and the
 * IPv6 flow label is 0, "unlabelled" (Linux computes one, RFC 6437).
 *
 * Sending: a FIB lookup, as the kernel routes the datagram, finds the
 * next hop and its MAC; only when that egress is the ingress device is
 * the frame sent back (XDP_TX). Any other egress, an unresolved
 * neighbour, a datagram over the route's MTU, or forwarding disabled on
 * the device (the lookup requires it) is XDP_PASS: user space sends
 * it, so the path taken never differs from the kernel's route. Swapping
 * MACs instead would assume every peer and client sit behind the one
 * router the frame came from.
 *
 * Checksums: the IPv4 header's is verified on the way in (the kernel
 * drops a bad one, so must we: pass) and computed anew; the UDP one is
 * updated incrementally (RFC 1624) from the received one, so an error in
 * the datagram stays detectable by its receiver.
 */
#include "bpf_abi.h"
#include "relay.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define BPF_F_NO_PREALLOC 1

/* Hash maps without preallocation: an element replaced by user space is
 * freed after an RCU grace period, so a route read here is never reused
 * under the reader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TP_MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tp_channel_key);
	__type(value, struct tp_route);
} tp_channels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TP_MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tp_peer_key);
	__type(value, struct tp_route);
} tp_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * TP_MAX_ROUTES);
	__type(key, __u32);
	__type(value, struct tp_count);
} tp_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tp_config);
} tp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TP_VERDICTS);
	__type(key, __u32);
	__type(value, __u64);
} tp_verdicts SEC(".maps");

static __always_inline int verdict(enum tp_verdict why, int action)
{
	__u32 key = why;
	__u64 *count = bpf_map_lookup_elem(&tp_verdicts, &key);

	if (count)
		*count += 1;
	return action;
}

#define PASS(why) verdict(TP_PASS_##why, XDP_PASS)

/* The most data a padded ChannelData may carry here (see its use). */
#define TP_MAX_PADDED_DATA 0x3FFF

/* One's complement sums (RFC 1071) of 16-bit words as they lie in
 * memory: the sum is the same in either byte order, so nothing is
 * swapped. Subtracting is adding the complement (RFC 1624). */
static __always_inline __u32 add_words(__u32 acc, const void *p, const int words)
{
	const __u16 *w = p;

#pragma unroll
	for (int i = 0; i < words; i++)
		acc += w[i];
	return acc;
}

static __always_inline __u32 sub_words(__u32 acc, const void *p, const int words)
{
	const __u16 *w = p;

#pragma unroll
	for (int i = 0; i < words; i++)
		acc += (__u16)~w[i];
	return acc;
}

/* Subtracts one byte at `offset` bytes after a word boundary's count:
 * datagram byte 12 + offset, after the UDP and ChannelData headers. An
 * even offset is a word's first byte, which as words are summed in
 * memory order is its low half; an odd one its high half. */
static __always_inline __u32 sub_byte(__u32 acc, __u8 byte, __u32 offset)
{
	__u16 word = (offset & 1) ? (__u16)(byte << 8) : (__u16)byte;

	return acc + (__u16)~word;
}

static __always_inline __u16 fold(__u32 acc)
{
	acc = (acc & 0xFFFF) + (acc >> 16);
	acc = (acc & 0xFFFF) + (acc >> 16);
	return (__u16)acc;
}

/* The addresses and ports of a received UDP datagram. */
struct flow {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__be16 udp_len;
	__be16 udp_check;
};

/* Is this IPv6 next header an extension header (RFC 8200 §4, and the
 * IANA list of them)? A fragment header is counted apart. */
static __always_inline int ipv6_extension(__u8 next)
{
	return next == 0 || next == 43 || next == 50 || next == 51 || next == 60 || next == 135 ||
	       next == 139 || next == 140 || next == 253 || next == 254;
}

/* The relay, for one family: v6 is a constant, so each family gets its
 * own straight-line copy with constant header offsets. */
static __always_inline int relay(struct xdp_md *ctx, const int v6)
{
	const __u32 ip_len = v6 ? sizeof(struct tp_ip6) : sizeof(struct tp_ip4);
	const __u32 udp_off = sizeof(struct tp_eth) + ip_len;
	const __u32 payload_off = udp_off + sizeof(struct tp_udp);
	const int addr_words = v6 ? 8 : 2;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 frame_len = end - data;
	struct flow f;
	__u32 payload_len;

	__builtin_memset(&f, 0, sizeof(f));
	if (v6) {
		struct tp_ip6 *ip = data + sizeof(struct tp_eth);

		if ((void *)(ip + 1) > end || (ip->ver_tc_flow[0] >> 4) != 6)
			return PASS(MALFORMED);
		if (ip->nexthdr == 44)
			return PASS(FRAGMENT);
		if (ipv6_extension(ip->nexthdr))
			return PASS(IP_OPTIONS);
		if (ip->nexthdr != IPPROTO_UDP)
			return PASS(NOT_UDP);
		__u32 plen = tp_ntohs(ip->payload_len);
		if (plen < sizeof(struct tp_udp) || plen > frame_len - udp_off)
			return PASS(MALFORMED);
		struct tp_udp *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end || tp_ntohs(udp->len) != plen)
			return PASS(MALFORMED);
		__builtin_memcpy(f.src, ip->src, 16);
		__builtin_memcpy(f.dst, ip->dst, 16);
		f.sport = udp->source;
		f.dport = udp->dest;
		f.udp_len = udp->len;
		f.udp_check = udp->check;
	} else {
		struct tp_ip4 *ip = data + sizeof(struct tp_eth);

		if ((void *)(ip + 1) > end || (ip->ver_ihl >> 4) != 4)
			return PASS(MALFORMED);
		if ((ip->ver_ihl & 0xF) < 5)
			return PASS(MALFORMED);
		if ((ip->ver_ihl & 0xF) > 5)
			return PASS(IP_OPTIONS);
		if (ip->frag_off & tp_htons(IP_MF | IP_OFFSET))
			return PASS(FRAGMENT);
		if (ip->protocol != IPPROTO_UDP)
			return PASS(NOT_UDP);
		if (fold(add_words(0, ip, 10)) != 0xFFFF)
			return PASS(MALFORMED);
		__u32 tot = tp_ntohs(ip->tot_len);
		if (tot < sizeof(struct tp_ip4) + sizeof(struct tp_udp) || tot > frame_len - sizeof(struct tp_eth))
			return PASS(MALFORMED);
		struct tp_udp *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end || tp_ntohs(udp->len) != tot - sizeof(struct tp_ip4))
			return PASS(MALFORMED);
		__builtin_memcpy(f.src, ip->src, 4);
		__builtin_memcpy(f.dst, ip->dst, 4);
		f.sport = udp->source;
		f.dport = udp->dest;
		f.udp_len = udp->len;
		f.udp_check = udp->check;
	}
	/* IPv4 without a checksum has nothing to update; IPv6 without one is
	 * invalid. Either way the kernel decides. */
	if (f.udp_check == 0)
		return PASS(NO_CHECKSUM);
	payload_len = tp_ntohs(f.udp_len) - sizeof(struct tp_udp);

	struct tp_route *found = 0;
	__u32 in_header = 0; /* ChannelData header bytes received */
	__u32 data_len = payload_len;
	__u32 pad = 0; /* ChannelData padding received, 0-3 bytes */
	__be16 old_header[2] = {0, 0};
	int looks_like_channel = 0;
	__u8 *payload = data + payload_off;

	if (payload_len >= 1) {
		if ((void *)(payload + 1) > end)
			return PASS(MALFORMED);
		/* Channel numbers 0x4000-0x7FFF start with the bits 01; STUN
		 * with 00 (RFC 8656 §12). */
		looks_like_channel = (payload[0] & 0xC0) == 0x40;
	}
	if (looks_like_channel && payload_len >= 4) {
		struct tp_channel_key key;

		if ((void *)(payload + 4) > end)
			return PASS(MALFORMED);
		__builtin_memset(&key, 0, sizeof(key));
		__builtin_memcpy(key.client_ip, f.src, 16);
		__builtin_memcpy(key.server_ip, f.dst, 16);
		key.client_port = f.sport;
		key.server_port = f.dport;
		__builtin_memcpy(old_header, payload, 4);
		key.channel = old_header[0];
		key.family = v6 ? TP_FAMILY_V6 : TP_FAMILY_V4;
		found = bpf_map_lookup_elem(&tp_channels, &key);
		if (found) {
			__u32 len = tp_ntohs(old_header[1]);

			/* Over UDP the padding to a multiple of 4 is optional
			 * (RFC 8656 §12.5) and some clients send it: relayed
			 * without it, as user space does. Any other length passes. */
			if (len + 4 != payload_len && ((len + 4 + 3) & ~3u) != payload_len)
				return PASS(CHANNEL_LENGTH);
			in_header = 4;
			data_len = len;
			pad = payload_len - (len + 4);
		}
	}
	if (!found) {
		struct tp_peer_key key;

		__builtin_memset(&key, 0, sizeof(key));
		__builtin_memcpy(key.relay_ip, f.dst, 16);
		__builtin_memcpy(key.peer_ip, f.src, 16);
		key.relay_port = f.dport;
		key.peer_port = f.sport;
		key.family = v6 ? TP_FAMILY_V6 : TP_FAMILY_V4;
		found = bpf_map_lookup_elem(&tp_peers, &key);
		if (!found)
			return looks_like_channel ? PASS(NO_ROUTE) : PASS(NOT_CHANNEL);
		/* A peer's datagram is always framed for the client. */
		if (found->channel == 0)
			return PASS(BAD_ROUTE);
	}

	struct tp_route route = *found;
	if (route.family != (v6 ? TP_FAMILY_V6 : TP_FAMILY_V4))
		return PASS(BAD_ROUTE);
	struct tp_count *count = bpf_map_lookup_elem(&tp_counts, &route.slot);
	if (!count)
		return PASS(BAD_ROUTE);
	if (bpf_ktime_get_ns() >= route.expires_ns)
		return PASS(EXPIRED);
	__u32 zero = 0;
	struct tp_config *config = bpf_map_lookup_elem(&tp_config, &zero);
	if (!config)
		return PASS(UNCONFIGURED);
	__u8 hops = v6 ? config->hop_limit : config->ttl;
	if (hops == 0)
		return PASS(UNCONFIGURED);

	const __u32 out_header = route.channel ? 4 : 0;
	const __u32 out_udp_len = sizeof(struct tp_udp) + out_header + data_len;
	const __u32 out_ip_len = ip_len + out_udp_len;

	/* The route back out, as the kernel would take it; checked before the
	 * frame is touched, so that a pass leaves it as it came. */
	struct bpf_fib_lookup fib;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = v6 ? AF_INET6 : AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = route.src_port;
	fib.dport = route.dst_port;
	fib.tot_len = out_ip_len;
	fib.ifindex = ctx->ingress_ifindex;
	if (v6) {
		__builtin_memcpy(fib.ipv6_src, route.src_ip, 16);
		__builtin_memcpy(fib.ipv6_dst, route.dst_ip, 16);
	} else {
		__builtin_memcpy(&fib.ipv4_src, route.src_ip, 4);
		__builtin_memcpy(&fib.ipv4_dst, route.dst_ip, 4);
	}
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS ||
	    fib.ifindex != ctx->ingress_ifindex)
		return PASS(FIB);
	/* A frame the kernel would not take as its own (another host's,
	 * seen in promiscuous mode) is not ours to relay either. */
	struct tp_eth *eth = data;
	if ((void *)(eth + 1) > end)
		return PASS(MALFORMED);
	__u8 differ = 0;
#pragma unroll
	for (int i = 0; i < 6; i++)
		differ |= eth->dst[i] ^ fib.smac[i];
	if (differ)
		return PASS(NOT_FOR_US);

	/* The new UDP checksum: the received one, less what changes, plus
	 * what replaces it (the pseudo-header's addresses and length, the
	 * ports and length, the ChannelData header). */
	__be16 new_len = tp_htons(out_udp_len);
	__be16 new_header[2] = {route.channel, tp_htons(data_len)};
	__u32 acc = (__u16)~f.udp_check;
	acc = sub_words(acc, f.src, addr_words);
	acc = sub_words(acc, f.dst, addr_words);
	acc = sub_words(acc, &f.sport, 1);
	acc = sub_words(acc, &f.dport, 1);
	acc = sub_words(acc, &f.udp_len, 1);
	acc = sub_words(acc, &f.udp_len, 1);
	if (in_header)
		acc = sub_words(acc, old_header, 2);
	if (pad) {
		/* The padding leaves the checksum too. The verifier follows a
		 * variable offset into the frame only while it stays under
		 * 64 KiB with the constant part: no frame of one buffer holds
		 * more than 16 KiB of data (the mask only tells it so). */
		if (data_len > TP_MAX_PADDED_DATA)
			return PASS(CHANNEL_LENGTH);
		__u8 *p = payload + 4 + (data_len & TP_MAX_PADDED_DATA);

		if ((void *)(p + 1) > end)
			return PASS(MALFORMED);
		acc = sub_byte(acc, p[0], data_len);
		if (pad > 1) {
			if ((void *)(p + 2) > end)
				return PASS(MALFORMED);
			acc = sub_byte(acc, p[1], data_len + 1);
		}
		if (pad > 2) {
			if ((void *)(p + 3) > end)
				return PASS(MALFORMED);
			acc = sub_byte(acc, p[2], data_len + 2);
		}
	}
	acc = add_words(acc, route.src_ip, addr_words);
	acc = add_words(acc, route.dst_ip, addr_words);
	acc = add_words(acc, &route.src_port, 1);
	acc = add_words(acc, &route.dst_port, 1);
	acc = add_words(acc, &new_len, 1);
	acc = add_words(acc, &new_len, 1);
	if (out_header)
		acc = add_words(acc, new_header, 2);
	__u16 udp_check = (__u16)~fold(acc);
	if (udp_check == 0)
		udp_check = 0xFFFF; /* 0 would mean "no checksum" (RFC 768) */

	/* Strip (+4), keep (0) or make room for (-4) the ChannelData header:
	 * the data stays where it is, the headers move. */
	int delta = (int)in_header - (int)out_header;
	if (delta != 0 && bpf_xdp_adjust_head(ctx, delta) != 0)
		return PASS(HEADROOM);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	/* Cannot fail (the frame held these bytes before), but the verifier
	 * asks; and from here on the frame is no longer the one received. */
	if (data + payload_off + out_header > end)
		return verdict(TP_PASS_HEADROOM, XDP_ABORTED);

	eth = data;
	__builtin_memcpy(eth->dst, fib.dmac, 6);
	__builtin_memcpy(eth->src, fib.smac, 6);
	eth->proto = tp_htons(v6 ? ETH_P_IPV6 : ETH_P_IP);
	if (v6) {
		struct tp_ip6 *ip = data + sizeof(struct tp_eth);

		ip->ver_tc_flow[0] = 0x60;
		ip->ver_tc_flow[1] = 0;
		ip->ver_tc_flow[2] = 0;
		ip->ver_tc_flow[3] = 0;
		ip->payload_len = new_len;
		ip->nexthdr = IPPROTO_UDP;
		ip->hop_limit = hops;
		__builtin_memcpy(ip->src, route.src_ip, 16);
		__builtin_memcpy(ip->dst, route.dst_ip, 16);
	} else {
		struct tp_ip4 header = {
			.ver_ihl = 0x45,
			.tos = 0,
			.tot_len = tp_htons(out_ip_len),
			.id = 0,
			.frag_off = tp_htons(IP_DF),
			.ttl = hops,
			.protocol = IPPROTO_UDP,
			.check = 0,
		};
		__builtin_memcpy(header.src, route.src_ip, 4);
		__builtin_memcpy(header.dst, route.dst_ip, 4);
		header.check = (__u16)~fold(add_words(0, &header, 10));
		__builtin_memcpy(data + sizeof(struct tp_eth), &header, sizeof(header));
	}
	struct tp_udp *udp = data + udp_off;
	udp->source = route.src_port;
	udp->dest = route.dst_port;
	udp->len = new_len;
	udp->check = udp_check;
	if (out_header) {
		__be16 *header = data + payload_off;

		header[0] = new_header[0];
		header[1] = new_header[1];
	}

	count->packets += 1;
	count->bytes += data_len;
	if (in_header && out_header)
		return verdict(TP_TX_RELAY_TO_RELAY, XDP_TX);
	return verdict(in_header ? TP_TX_TO_PEER : TP_TX_TO_CLIENT, XDP_TX);
}

SEC("xdp")
int turnpike_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct tp_eth *eth = data;

	if ((void *)(eth + 1) > end)
		return PASS(MALFORMED);
	if (eth->proto == tp_htons(ETH_P_IP))
		return relay(ctx, 0);
	if (eth->proto == tp_htons(ETH_P_IPV6))
		return relay(ctx, 1);
	return PASS(NOT_IP);
}
