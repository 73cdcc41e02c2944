/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The maps of relay.bpf.c: their keys and values, shared with user space.
 * src/net/xdp/maps.rs mirrors every struct with #[repr(C)] and checks the
 * sizes; a change here is a change there.
 *
 * Addresses are as on the wire: 16 bytes, an IPv4 address in the first 4
 * and zeros after; ports and channel numbers in network byte order. Every
 * padding byte is zero (the kernel hashes keys byte for byte).
 */
#ifndef TURNPIKE_XDP_RELAY_H
#define TURNPIKE_XDP_RELAY_H

#define TP_FAMILY_V4 4
#define TP_FAMILY_V6 6

/* Entries of each route map; the loader may change it before loading. */
#define TP_MAX_ROUTES 65536

/* A client's ChannelData on one channel: the client's 5-tuple (UDP is
 * implied) and the channel number. Key of tp_channels. */
struct tp_channel_key {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__be16 channel; /* 0x4000-0x7FFF */
	__u8 family;
	__u8 pad;
};

/* A peer's datagram to a relayed address. Key of tp_peers. */
struct tp_peer_key {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__be16 relay_port;
	__be16 peer_port;
	__u8 family;
	__u8 pad[3];
};

/* What to send instead: the new source and destination, and the
 * ChannelData header to put in front of the application data.
 *   channel == 0: none (a client's ChannelData becomes a datagram from
 *   the relayed address to the peer);
 *   channel != 0: ChannelData on that channel (a peer's datagram to the
 *   client, or relay <-> relay: a client's ChannelData straight to the
 *   other allocation's client, on the other client's channel). */
struct tp_route {
	__u8 src_ip[16];
	__u8 dst_ip[16];
	__be16 src_port;
	__be16 dst_port;
	__be16 channel;
	__u8 family; /* the same as the key's: no IPv4 <-> IPv6 here */
	__u8 pad;
	__u32 slot; /* this entry's counters: an index into tp_counts */
	__u32 pad2;
	__u64 expires_ns; /* CLOCK_MONOTONIC; forwarded only before it */
};

/* One route's counters, per CPU: datagrams sent and their application
 * bytes (the ChannelData's data, what user space counts as payload). */
struct tp_count {
	__u64 packets;
	__u64 bytes;
};

/* Set by user space once loaded; 0 means not yet: everything passes.
 * The TTL and hop limit of a datagram the relay sends, the host's
 * defaults (net.ipv4.ip_default_ttl, net.ipv6.conf.IF.hop_limit), as
 * the user-space path's sockets use them. */
struct tp_config {
	__u8 ttl;
	__u8 hop_limit;
	__u8 pad[6];
};

/* Why a frame got its verdict: one per-CPU counter each in tp_verdicts,
 * so operators and tests see why a datagram was not fast-pathed. */
enum tp_verdict {
	TP_TX_TO_PEER,          /* a client's ChannelData, to its peer */
	TP_TX_TO_CLIENT,        /* a peer's datagram, to the client as ChannelData */
	TP_TX_RELAY_TO_RELAY,   /* a client's ChannelData, to the other allocation's client */
	TP_PASS_NOT_IP,         /* not IPv4 or IPv6 over Ethernet (VLAN tags too) */
	TP_PASS_MALFORMED,      /* truncated or inconsistent headers, bad IPv4 header checksum */
	TP_PASS_IP_OPTIONS,     /* IPv4 options, IPv6 extension headers */
	TP_PASS_FRAGMENT,       /* an IPv4 fragment */
	TP_PASS_NOT_UDP,        /* TCP (TCP and TLS clients), ICMP, ... */
	TP_PASS_NO_CHECKSUM,    /* UDP checksum 0: nothing to update incrementally */
	TP_PASS_NOT_CHANNEL,    /* not ChannelData (STUN, indications) and not from a routed peer */
	TP_PASS_NO_ROUTE,       /* ChannelData on no installed channel, and not from a routed peer */
	TP_PASS_CHANNEL_LENGTH, /* ChannelData padded or truncated */
	TP_PASS_EXPIRED,        /* a route past its expires_ns */
	TP_PASS_BAD_ROUTE,      /* a route user space got wrong (family, slot, channel) */
	TP_PASS_UNCONFIGURED,   /* tp_config not set yet */
	TP_PASS_FIB,            /* no route and neighbour back out the ingress device, or over its MTU */
	TP_PASS_NOT_FOR_US,     /* the frame's destination MAC is not the device's */
	TP_PASS_HEADROOM,       /* the frame could not grow or shrink */
	TP_VERDICTS,
};

#endif
