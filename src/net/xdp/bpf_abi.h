/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The few pieces of the kernel's BPF ABI that relay.bpf.c uses, written
 * out here instead of included from linux-libc-dev and libbpf-dev.
 *
 * Why: the compiled object is committed and a test rebuilds it byte for
 * byte (src/net/xdp/build.sh). Debug info records the file and line of
 * every type it describes, so a system header that moves a line in a
 * Debian point release would change the object without changing the
 * program. With this file the object depends on clang alone (the build
 * passes -nostdinc, so no other header can creep in).
 *
 * Every value is stable kernel ABI (UAPI), copied from
 * include/uapi/linux/bpf.h and the network headers; the program loads
 * and runs under tests/xdp/, which is what proves them right.
 */
#ifndef TURNPIKE_BPF_ABI_H
#define TURNPIKE_BPF_ABI_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;

/* enum xdp_action */
#define XDP_ABORTED 0
#define XDP_DROP 1
#define XDP_PASS 2
#define XDP_TX 3

/* enum bpf_map_type */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6

/* The context of an XDP program (struct xdp_md). */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

/* struct bpf_fib_lookup, the argument of bpf_fib_lookup(). */
struct bpf_fib_lookup {
	__u8 family; /* AF_INET, AF_INET6 */
	__u8 l4_protocol;
	__be16 sport;
	__be16 dport;
	union {
		__u16 tot_len; /* in: L3 length, for the MTU check */
		__u16 mtu_result;
	} __attribute__((packed, aligned(2)));
	__u32 ifindex; /* in: ingress device; out: egress device */
	union {
		__u8 tos;
		__be32 flowinfo;
		__u32 rt_metric;
	};
	union {
		__be32 ipv4_src;
		__u32 ipv6_src[4];
	};
	union {
		__be32 ipv4_dst;
		__u32 ipv6_dst[4];
	};
	union {
		struct {
			__be16 h_vlan_proto;
			__be16 h_vlan_TCI;
		};
		__u32 tbid;
	};
	__u8 smac[6];
	__u8 dmac[6];
};
_Static_assert(sizeof(struct bpf_fib_lookup) == 64, "struct bpf_fib_lookup is 64 bytes in the UAPI");

#define AF_INET 2
#define AF_INET6 10
#define BPF_FIB_LKUP_RET_SUCCESS 0

/* Helpers, by their number in the kernel's enum bpf_func_id. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)44;
static long (*bpf_fib_lookup)(void *ctx, struct bpf_fib_lookup *params, int plen, __u32 flags) = (void *)69;

#define __always_inline inline __attribute__((always_inline))

/* BTF-described map definitions, as libbpf and aya read them. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

/* Network byte order on a little-endian target (the build pins bpfel). */
#define tp_htons(x) ((__be16)__builtin_bswap16((__u16)(x)))
#define tp_ntohs(x) ((__u16)__builtin_bswap16((__u16)(x)))

/* Frame headers (linux/if_ether.h, linux/ip.h, linux/ipv6.h,
 * linux/udp.h), with addresses as bytes so that every access is at most
 * 2-byte wide: after an Ethernet header the IP header is 2-aligned. */
struct tp_eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

struct tp_ip4 {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__u8 src[4];
	__u8 dst[4];
};
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1FFF

struct tp_ip6 {
	__u8 ver_tc_flow[4];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 src[16];
	__u8 dst[16];
};

struct tp_udp {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};
#define IPPROTO_UDP 17

#endif
