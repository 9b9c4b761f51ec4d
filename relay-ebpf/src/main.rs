//! xdpturn's XDP program: TURN ChannelData relayed in the kernel.
//!
//! Client to peer: a UDP packet to a listener whose payload is ChannelData (first byte
//! 0x40-0x7F) on a channel in `CLIENT_TO_PEER` loses its 4-byte header (and padding) and leaves
//! from the relayed address to the peer. Peer to client: a datagram from a peer to a relayed
//! address in `PEER_TO_CLIENT` gains a ChannelData header and leaves from the listener to the
//! client. Either may change family (IPv4 client, IPv6 peer and the other way round).
//!
//! The steps, in [`try_xdpturn`]: parse (Ethernet, IPv4 without options or IPv6 without
//! extension headers, UDP) -> look the channel up -> plan the new headers and checksums
//! ([`relay_common::packet`]) -> the next hop of the new destination (`NEXT_HOPS`) -> adjust head and
//! tail, write the headers -> `XDP_TX` when the route leaves by the ingress interface,
//! `XDP_REDIRECT` through the `EGRESS` device map when it leaves by another attached one. Every
//! other outcome is a [`Verdict`] with a deliberate XDP action (mostly `XDP_PASS` to the kernel
//! stack and the relay's sockets, which do the same job in userspace), and every packet is
//! counted under its verdict, per CPU. Nothing is changed before the last check that can pass a
//! packet up has been made.
//!
//! Userspace is the only writer of the maps; the program only reads them and counts.

#![no_std]
#![no_main]

use aya_ebpf::bindings::BPF_F_NO_PREALLOC;
use aya_ebpf::helpers::generated::{
    bpf_csum_diff, bpf_get_prandom_u32, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    bpf_xdp_get_buff_len, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{DevMapHash, HashMap, PerCpuArray};
use aya_ebpf::programs::XdpContext;
use relay_common::verdict::XDP_PASS;
use relay_common::csum::Sum;
use relay_common::indication::{self, DataHeader, Words};
use relay_common::maps::{
    IF_GENERIC, NO_CHANNEL, TOTAL_ALL, TOTAL_CHANNEL, TOTAL_INDICATION,
    TOTAL_SAME_RELAY, TOTAL_SLOTS,
};
use relay_common::packet::{
    self, CHANNEL_HLEN, Checksum, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, Ip, MAX_FRAME, MAX_HEADERS,
    Rewrite, Route, UDP_HLEN, Udp,
};
use relay_common::{
    Verdict, AllocationValue, ChannelKey, ChannelStats, ChannelValue, ClientKey, FAMILY_IPV4,
    FAMILY_IPV6, ListenerKey, NextHopKey, NextHopValue, PeerKey, PeerValue,
};

// The sizes are placeholders: userspace sets the channel maps' and counters' size when it
// loads the program (`max_channels`). The names are relay_common::maps' constants.

/// Client to peer: ChannelKey -> ChannelValue. No preallocation, so an entry userspace
/// replaces is freed only after readers are done with it.
#[map]
static CLIENT_TO_PEER: HashMap<ChannelKey, ChannelValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Peer to client: PeerKey -> PeerValue.
#[map]
static PEER_TO_CLIENT: HashMap<PeerKey, PeerValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Where a rewritten packet goes next, per destination address: egress interface, MTU, MACs.
/// Userspace resolves it from the kernel's route and neighbour tables as the relay's own output
/// and keeps it current; the program only reads it. This is what frees the fast path from
/// `bpf_fib_lookup`, which refuses to route unless forwarding is enabled on the interface (a
/// host setting the relay must not need), and saves its cost per packet.
#[map]
static NEXT_HOPS: HashMap<NextHopKey, NextHopValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// A client's 5-tuple -> its allocation's relayed addresses, for Send indications.
#[map]
static ALLOCATIONS: HashMap<ClientKey, AllocationValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// The interfaces the program is attached to, with how it runs there (`IF_GENERIC`).
#[map]
static INTERFACES: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// The TURN listeners, only to tell "not ours" from "ours, for userspace" in the counters.
#[map]
static LISTENERS: HashMap<ListenerKey, u32> = HashMap::with_max_entries(64, 0);

/// Per-CPU packets and bytes per channel, indexed by the values' `counter`.
#[map]
static CHANNEL_STATS: PerCpuArray<ChannelStats> = PerCpuArray::with_max_entries(1024, 0);

/// Per-CPU packets and bytes of every channel (one slot), so totals are one read.
#[map]
static TOTAL_STATS: PerCpuArray<ChannelStats> = PerCpuArray::with_max_entries(TOTAL_SLOTS, 0);

/// Per-CPU packets per verdict, indexed by `Verdict::index`.
#[map]
static ACTION_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Verdict::COUNT as u32, 0);

/// The interfaces the program is attached to, the only ones it redirects to.
#[map]
static EGRESS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// Per-CPU room for what does not fit the 512-byte stack: the parsed IP header, the route, the
/// planned rewrite and a bounce buffer for moving data within the packet. Programs do not migrate between CPUs during a run, so one slot per CPU
/// is private to the run.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct Scratch {
    ip: Ip,
    route: Route,
    rw: Rewrite,
    bounce: [u8; BOUNCE],
    data_header: DataHeader,
}

/// The bounce buffer's size: the chunk in which data moves within a packet.
const BOUNCE: usize = 512;
/// 8-byte blocks of the longest message whose FINGERPRINT the program checks (1,504 bytes:
/// an Ethernet MTU's worth).
const CRC_BLOCKS: usize = 188;
/// The most data a partial-checksum packet in generic mode may carry to be forwarded: what
/// [`move_data`] moves (media and data channels stay under 1,200 bytes; longer data goes up).
const MOVE_MAX: usize = 4 * BOUNCE;

/// Entry point attached to the NIC.
#[xdp]
pub fn xdpturn(ctx: XdpContext) -> u32 {
    let verdict = match try_xdpturn(&ctx) {
        Ok(verdict) | Err(verdict) => verdict,
    };
    if let Some(count) = ACTION_STATS.get_ptr_mut(verdict.index()) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, valid for the program's
        // run and written by no one else meanwhile.
        #[allow(unsafe_code)]
        unsafe {
            *count += 1
        };
    }
    verdict.xdp_action()
}

/// The whole decision. `Ok` is a forwarded packet; `Err` says why a packet was not forwarded
/// (its XDP action is `Verdict::xdp_action`).
#[inline(always)]
fn try_xdpturn(ctx: &XdpContext) -> Result<Verdict, Verdict> {
    // Shorter than an Ethernet header: nothing IP about it.
    let eth = load::<{ ETH_HLEN / 2 }, ETH_HLEN>(ctx, 0).ok_or(Verdict::PassNotIp)?;
    let family = packet::l3_family(&eth)?;
    let frame_len = buff_len(ctx);
    packet::check_frame_len(frame_len)?;
    let l3_len = frame_len - ETH_HLEN;

    let scratch = SCRATCH.get_ptr_mut(0).ok_or(Verdict::PassAdjustFailed)?;
    // SAFETY: this CPU's only slot of a per-CPU array: nothing else uses it during this run.
    #[allow(unsafe_code)]
    let scratch = unsafe { &mut *scratch };
    let ip = &mut scratch.ip;

    let payload_at = if family == FAMILY_IPV4 {
        // Too short for an IP header: malformed (the kernel drops it too).
        let h = load::<{ IPV4_HLEN / 2 }, IPV4_HLEN>(ctx, ETH_HLEN).ok_or(Verdict::DropMalformed)?;
        packet::parse_ipv4_into(&h, l3_len, ip)?;
        ETH_HLEN + IPV4_HLEN
    } else {
        if ctx.data() + ETH_HLEN + IPV6_HLEN > ctx.data_end() {
            return Err(Verdict::DropMalformed);
        }
        let h = load::<4, 8>(ctx, ETH_HLEN).ok_or(Verdict::DropMalformed)?;
        packet::parse_ipv6_fixed_into(&h, l3_len, ip)?;
        copy_addr(ctx, ETH_HLEN + 8, &mut ip.src).ok_or(Verdict::DropMalformed)?;
        copy_addr(ctx, ETH_HLEN + 24, &mut ip.dst).ok_or(Verdict::DropMalformed)?;
        ETH_HLEN + IPV6_HLEN
    };
    let udp = packet::parse_udp(
        &load::<{ UDP_HLEN / 2 }, UDP_HLEN>(ctx, payload_at).ok_or(Verdict::DropMalformed)?,
        ip,
    )?;
    let payload_at = payload_at + UDP_HLEN;

    // STUN (first byte 0x00-0x3F) to a listener goes up without a look at PEER_TO_CLIENT: a
    // listener's address and port are never a relayed address's (both are the relay's own UDP
    // sockets), so the listener check comes first for these, and it is all they cost when they
    // are for the relay: one hash lookup instead of two (two instead of three for a wildcard
    // listener). The price is paid by a peer's datagrams that start the same way (STUN, DTLS),
    // which are looked up in LISTENERS before PEER_TO_CLIENT; media (RTP/RTCP, 0x80-0xBF) and
    // ChannelData are not.
    let payload_len = udp.payload_len();
    let first = view::<1>(ctx, payload_at).map_or(0, |b| b[0]);
    let stun = payload_len > 0 && first < 0x40;
    let routed = if stun && to_listener(&scratch.ip, &udp) {
        // A Send indication (message type 0x0016: first byte 0) may be relayed here; any
        // other STUN message is for the relay.
        if first != 0 || !route_send(ctx, &udp, payload_at, scratch)? {
            return Err(packet::unmatched(true, first, payload_len));
        }
        true
    } else {
        route(ctx, &udp, payload_at, scratch)?
    };
    if !routed {
        let to_listener = !stun && to_listener(&scratch.ip, &udp);
        return Err(packet::unmatched(to_listener, first, payload_len));
    }
    // One call site: the verifier walks `forward` once per distinct state it is called in.
    forward(ctx, &udp, payload_at, scratch)
}

/// Where a datagram goes, if a channel is bound for it: client to peer (ChannelData on a bound
/// channel) or peer to client (a datagram to a relayed address from a peer with a channel).
/// Fills `scratch.route` and returns whether there is one.
// Not inlined, like `to_listener` and `forward`: a BPF-to-BPF call gets its own stack frame, so
// the keys here and the FIB lookup there do not add up in the 512 bytes of one frame.
#[inline(never)]
fn route(
    ctx: &XdpContext,
    udp: &Udp,
    payload_at: usize,
    scratch: &mut Scratch,
) -> Result<bool, Verdict> {
    let ip = &scratch.ip;
    let payload_len = udp.payload_len();
    if payload_len as usize >= CHANNEL_HLEN
        && let Some(first) = load::<{ CHANNEL_HLEN / 2 }, CHANNEL_HLEN>(ctx, payload_at)
        && let Some(cd) = packet::channel_header(&first)
    {
        let key = ChannelKey::from_packet(
            ip.family,
            ip.src,
            udp.src_port,
            ip.dst,
            udp.dst_port,
            cd.channel,
        );
        if let Some(value) = CLIENT_TO_PEER.get_ptr(&key) {
            // SAFETY: a map value pointer from a successful lookup. The map is not
            // preallocated, so a value userspace replaces or deletes meanwhile is freed only
            // after this program is done with it (RCU).
            #[allow(unsafe_code)]
            let value = unsafe { &*value };
            let trailing = packet::channel_data_fits(cd, payload_len)?;
            let sum = trailing_sum(ctx, payload_at, payload_len, cd.len, trailing)?;
            packet::route_to_peer_into(cd, sum, value, &mut scratch.route);
            return Ok(true);
        }
    }
    let key = PeerKey::from_packet(ip.family, ip.dst, udp.dst_port, ip.src, udp.src_port);
    if let Some(value) = PEER_TO_CLIENT.get_ptr(&key) {
        // SAFETY: as above.
        #[allow(unsafe_code)]
        let value = unsafe { &*value };
        packet::route_to_client_into(udp, value, &mut scratch.route);
        return Ok(true);
    }
    // No channel for the peer's port, but maybe a permission for its IP (RFC 8656 §9: any
    // port): a Data indication.
    let key = PeerKey::permission_from_packet(ip.family, ip.dst, udp.dst_port, ip.src);
    if let Some(value) = PEER_TO_CLIENT.get_ptr(&key) {
        // SAFETY: as above.
        #[allow(unsafe_code)]
        let value = unsafe { &*value };
        if value.channel != NO_CHANNEL {
            return Ok(false);
        }
        // A fresh transaction ID per indication, as userspace draws one.
        let txid = random_txid();
        indication::data_indication_into(
            &txid,
            ip.family,
            &ip.src,
            udp.src_port,
            udp.payload_len(),
            &mut scratch.data_header,
        )
        .map_err(|_| Verdict::PassTooBig)?;
        packet::route_to_client_indication_into(
            udp,
            value,
            &scratch.data_header,
            &mut scratch.route,
        );
        return Ok(true);
    }
    Ok(false)
}

/// The UDP payload at `at`, as the 4-byte words the indication codec reads.
struct PacketWords<'a> {
    ctx: &'a XdpContext,
    at: usize,
}

impl Words for PacketWords<'_> {
    #[inline(always)]
    fn word(&self, offset: usize) -> Option<[u8; 4]> {
        load_at::<4>(self.ctx, self.at + offset)
    }
}

/// Where a Send indication's data goes (RFC 8656 §11.2), if the program can relay it: the
/// client's allocation (`ALLOCATIONS`) has a relayed address of the peer's family and a
/// permission for the peer's IP (its `PEER_TO_CLIENT` entry with port 0), and the message is
/// one the program can prove: well formed, no attribute it does not know that the relay must
/// understand, a FINGERPRINT (Firefox sends one with every message) that matches. Fills
/// `scratch.route`; `Ok(false)` for any other STUN message, `Err(PassSendIndication)` for a
/// Send indication left to the relay.
#[inline(never)]
fn route_send(
    ctx: &XdpContext,
    udp: &Udp,
    payload_at: usize,
    scratch: &mut Scratch,
) -> Result<bool, Verdict> {
    let head = load::<2, 4>(ctx, payload_at).ok_or(Verdict::PassStun)?;
    if u16::from_be_bytes([head[0], head[1]]) != indication::SEND_INDICATION {
        return Ok(false);
    }
    let ip = &scratch.ip;
    let refused = Verdict::PassSendIndication;
    let alloc = ALLOCATIONS
        .get_ptr(&ClientKey::from_packet(
            ip.family,
            ip.src,
            udp.src_port,
            ip.dst,
            udp.dst_port,
        ))
        .ok_or(refused)?;
    // SAFETY: a map value pointer from a successful lookup (see `route`), copied out at once.
    #[allow(unsafe_code)]
    let alloc = unsafe { *alloc };
    let txid = load::<6, 12>(ctx, payload_at + 8).ok_or(refused)?;
    let words = PacketWords {
        ctx,
        at: payload_at,
    };
    let send = indication::parse_send_within::<4, _>(&words, udp.payload_len(), &txid)
        .map_err(|_| refused)?;
    if send.data_len as usize > MOVE_MAX {
        return Err(refused);
    }
    if let Some(fp) = send.fingerprint {
        check_fingerprint(ctx, payload_at, fp.offset as usize, fp.value)?;
    }
    let (relay, relay_port) = alloc.relayed(send.peer_family).ok_or(refused)?;
    let permission = PEER_TO_CLIENT
        .get_ptr(&PeerKey::permission_from_packet(
            send.peer_family,
            relay,
            relay_port,
            send.peer_addr,
        ))
        .ok_or(refused)?;
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let counter = unsafe { (*permission).counter };
    // What goes: everything but the data. Its sum is the payload's (read back from a complete
    // checksum, or summed when the checksum may be partial) minus the data's.
    let removed = if udp.check == 0 {
        0
    } else {
        let data = payload_sum(
            ctx,
            payload_at + send.data_offset as usize,
            send.data_len as usize,
        )?;
        let total = if packet::maybe_partial(ip, udp) {
            payload_sum(ctx, payload_at, udp.payload_len() as usize)?
        } else {
            packet::payload_sum_from_checksum(ip, udp)
        };
        total.sub(data.fold()).fold()
    };
    packet::route_to_peer_send_into(
        &send,
        &relay,
        relay_port,
        removed,
        counter,
        &mut scratch.route,
    );
    Ok(true)
}

/// Checks a FINGERPRINT (RFC 8489 §14.7): the CRC-32 of the message up to the attribute
/// (`len` bytes, a multiple of 4), XORed with 0x5354554E, must be `value`. Slicing-by-8 over
/// 8-byte blocks in a loop of its own function, so that the verifier walks it once for the
/// program (up to [`CRC_BLOCKS`] blocks: longer messages go up).
#[inline(never)]
fn check_fingerprint(
    ctx: &XdpContext,
    payload_at: usize,
    len: usize,
    value: u32,
) -> Result<(), Verdict> {
    let refused = Verdict::PassSendIndication;
    let blocks = len / 8;
    if blocks > CRC_BLOCKS || payload_at > MAX_FRAME {
        return Err(refused);
    }
    let mut crc = indication::CRC32_INIT;
    let mut i = 0;
    while i < CRC_BLOCKS {
        if i >= blocks {
            break;
        }
        let b = load_at::<8>(ctx, payload_at + 8 * i).ok_or(refused)?;
        crc = indication::crc32_update8(crc, b);
        i += 1;
    }
    if len % 8 == 4 {
        let w = load_at::<4>(ctx, payload_at + len - 4).ok_or(refused)?;
        crc = indication::crc32_update4(crc, w);
    }
    if indication::fingerprint_value(crc) == value {
        Ok(())
    } else {
        Err(refused)
    }
}

/// Whether a datagram is for one of the relay's TURN listeners: what tells "not ours" from
/// "ours, for userspace" (STUN, an unknown channel...) when no channel is bound for it.
#[inline(never)]
fn to_listener(ip: &Ip, udp: &Udp) -> bool {
    LISTENERS
        .get_ptr(ListenerKey::from_packet(ip.family, ip.dst, udp.dst_port))
        .is_some()
        || LISTENERS
            .get_ptr(ListenerKey::from_packet(
                ip.family,
                // Opaque zero: a literal [0; 16] becomes a memset call, a byte loop.
                core::hint::black_box(0u128).to_ne_bytes(),
                udp.dst_port,
            ))
            .is_some()
}

/// The checksum contribution of the 0-3 padding bytes after a ChannelData message's data:
/// the last bytes of the UDP datagram, read as the 4-byte window that ends the datagram (the
/// payload has at least 4 + data + padding bytes, so the window is inside it).
#[inline(always)]
fn trailing_sum(
    ctx: &XdpContext,
    payload_at: usize,
    payload_len: u16,
    data_len: u16,
    trailing: u16,
) -> Result<Sum, Verdict> {
    if trailing == 0 {
        return Ok(Sum::new());
    }
    let w =
        load_at::<4>(ctx, payload_at + payload_len as usize - 4).ok_or(Verdict::DropMalformed)?;
    let bytes = match trailing {
        1 => [w[3], 0, 0],
        2 => [w[2], w[3], 0],
        _ => [w[1], w[2], w[3]],
    };
    Ok(packet::trailing_sum(bytes, trailing, data_len))
}

/// Plans the rewrite, finds the next hop, rewrites and sends the packet, and counts it on its
/// channel.
#[inline(never)]
fn forward(
    ctx: &XdpContext,
    udp: &Udp,
    payload_at: usize,
    scratch: &mut Scratch,
) -> Result<Verdict, Verdict> {
    let Scratch {
        ip,
        route,
        rw,
        bounce,
        data_header,
    } = scratch;
    // The checksum field, read for what it is (see `packet::Checksum`): the payload is summed
    // only when the field equals the pseudo-header sum, i.e. for partial checksums (every
    // packet from a container or a veth on this machine) and one complete one in 65,536.
    let hop = next_hop(route, data_header)?;
    let mut udp = *udp;
    let mut keep_partial = false;
    if packet::maybe_partial(ip, &udp) {
        let payload = payload_sum(ctx, payload_at, udp.payload_len() as usize)?;
        let generic = INTERFACES
            .get_ptr(&(ctx.ingress_ifindex() as u32))
            // SAFETY: a map value pointer from a successful lookup, read at once.
            .is_some_and(|flags| {
                #[allow(unsafe_code)]
                let flags = unsafe { *flags };
                flags & IF_GENERIC != 0
            });
        match packet::classify_checksum(ip, &udp, payload, generic)? {
            // The skb keeps its offload state in generic mode: the packet leaves with a
            // partial checksum again, which the offload (or the receiving stack, trusting it)
            // finishes from the UDP header on.
            Checksum::Partial if generic => keep_partial = true,
            // A bare frame leaves without that state: it needs the complete checksum, which
            // the rewrite then updates like any other.
            Checksum::Partial => udp.check = packet::completed_checksum(ip, &udp, payload),
            Checksum::Full | Checksum::None => {}
        }
    }
    packet::rewrite_into(ip, &udp, route, rw)?;
    if keep_partial {
        packet::keep_partial(ip, route, rw);
    }
    if u32::from(rw.l3_len) > hop.mtu {
        return Err(Verdict::PassMtu);
    }
    let ingress = ctx.ingress_ifindex() as u32;
    let egress = hop.ifindex;
    let tx = egress == ingress;
    // Another interface: the redirect is set up now, while the packet can still go up
    // unchanged. `bpf_redirect_map` only records the target, which the kernel uses when the
    // program returns XDP_REDIRECT (and ignores otherwise), and answers XDP_PASS (the flags'
    // low bits) when the interface is not in EGRESS: one device map lookup, where checking
    // here and redirecting at the end took two.
    if !tx && EGRESS.redirect(egress, u64::from(XDP_PASS)).is_err() {
        return Err(Verdict::PassEgressNotAttached);
    }

    if rw.data_shift == 0 {
        // From here on the packet changes. adjust_head fails only without headroom, and then
        // it has changed nothing: the packet can still go up.
        if adjust_head(ctx, rw.head_delta) != 0 {
            return Err(Verdict::PassAdjustFailed);
        }
        // Drops ChannelData padding and Ethernet padding, or makes room for a Data
        // indication's padding.
        let len = buff_len(ctx);
        if len != rw.frame_len && adjust_tail(ctx, rw.frame_len as i32 - len as i32) != 0 {
            return Err(Verdict::DropRewriteFailed);
        }
    } else {
        move_keeping_udp(ctx, rw, payload_at, bounce)?;
    }
    let eth = packet::ethernet_header(&hop.dmac, &hop.smac, rw.ethertype());
    store::<{ ETH_HLEN / 2 }>(ctx, 0, words(&eth)).ok_or(Verdict::DropRewriteFailed)?;
    let written = match (rw.family == FAMILY_IPV6, rw.channel_header) {
        (false, false) => store_headers::<{ (IPV4_HLEN + UDP_HLEN) / 2 }>(ctx, rw),
        (false, true) => store_headers::<{ (IPV4_HLEN + UDP_HLEN + CHANNEL_HLEN) / 2 }>(ctx, rw),
        (true, false) => store_headers::<{ (IPV6_HLEN + UDP_HLEN) / 2 }>(ctx, rw),
        (true, true) => store_headers::<{ MAX_HEADERS / 2 }>(ctx, rw),
    };
    written.ok_or(Verdict::DropRewriteFailed)?;
    if rw.added_len > 0 && !rw.channel_header {
        store_data_header(ctx, rw, data_header).ok_or(Verdict::DropRewriteFailed)?;
    }
    if rw.padding > 0 {
        store_padding(ctx, rw, bounce).ok_or(Verdict::DropRewriteFailed)?;
    }

    let data = u64::from(rw.data_len);
    let same_relay = route.peer_counter != packet::NO_COUNTER;
    // Towards a client, unless same-relay (which is both: see below).
    let to_peer = rw.added_len == 0 || same_relay;
    let kind = if same_relay {
        TOTAL_SAME_RELAY
    } else if rw.channel_header || route.removed_len as usize == CHANNEL_HLEN {
        TOTAL_CHANNEL
    } else {
        TOTAL_INDICATION
    };
    count(CHANNEL_STATS.get_ptr_mut(route.counter), to_peer, data);
    count(TOTAL_STATS.get_ptr_mut(TOTAL_ALL), to_peer, data);
    count(TOTAL_STATS.get_ptr_mut(kind), to_peer, data);
    // A same-relay packet is the first client's to its peer and, at once, that peer's (the
    // other allocation's) to the second client: counted on both channels (or permissions),
    // both ways, as the two passes of userspace it saves would have been.
    if same_relay {
        count(CHANNEL_STATS.get_ptr_mut(route.peer_counter), false, data);
        count(TOTAL_STATS.get_ptr_mut(TOTAL_ALL), false, data);
        count(TOTAL_STATS.get_ptr_mut(kind), false, data);
    }

    if tx {
        Ok(Verdict::ForwardedTx)
    } else {
        Ok(Verdict::ForwardedRedirect)
    }
}

/// A STUN transaction ID: 96 random bits.
#[inline(always)]
fn random_txid() -> [u8; 12] {
    // SAFETY: a helper without arguments.
    #[allow(unsafe_code)]
    let (a, b, c) = unsafe {
        (
            bpf_get_prandom_u32(),
            bpf_get_prandom_u32(),
            bpf_get_prandom_u32(),
        )
    };
    let (a, b, c) = (a.to_ne_bytes(), b.to_ne_bytes(), c.to_ne_bytes());
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3],
    ]
}

/// Writes a Data indication's header after the UDP header (36 bytes for an IPv4 peer, 48
/// for an IPv6 one).
#[inline(always)]
fn store_data_header(ctx: &XdpContext, rw: &Rewrite, h: &DataHeader) -> Option<()> {
    let at_v4 = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
    let at_v6 = ETH_HLEN + IPV6_HLEN + UDP_HLEN;
    // SAFETY: `bytes` is the first field of the 8-aligned `DataHeader`, 48 bytes long.
    #[allow(unsafe_code)]
    let words = unsafe { core::ptr::read(h.bytes.as_ptr() as *const [u16; 24]) };
    let mut short = [0u16; 18];
    let mut i = 0;
    while i < 18 {
        short[i] = words[i];
        i += 1;
    }
    match (rw.family == FAMILY_IPV6, h.len == 48) {
        (false, false) => store(ctx, at_v4, short),
        (false, true) => store(ctx, at_v4, words),
        (true, false) => store(ctx, at_v6, short),
        (true, true) => store(ctx, at_v6, words),
    }
}

/// Zeroes the `rw.padding` (1-3) bytes that end the frame.
#[inline(always)]
fn store_padding(ctx: &XdpContext, rw: &Rewrite, bounce: &mut [u8; BOUNCE]) -> Option<()> {
    let n = core::hint::black_box(rw.padding as usize);
    if n == 0 || n > 3 || rw.frame_len > MAX_FRAME {
        return None;
    }
    bounce[0] = 0;
    bounce[1] = 0;
    bounce[2] = 0;
    let at = rw.frame_len - n;
    // SAFETY: a helper call on the program's own context with a buffer of BOUNCE >= n bytes.
    #[allow(unsafe_code)]
    let ok = unsafe {
        bpf_xdp_store_bytes(ctx.ctx, at as u32, bounce.as_mut_ptr().cast(), n as u32) == 0
    };
    ok.then_some(())
}

/// Counts a forwarded packet in a per-CPU stats slot, client to peer or peer to client.
#[inline(always)]
fn count(stats: Option<*mut ChannelStats>, to_peer: bool, data: u64) {
    let Some(stats) = stats else { return };
    // SAFETY: this CPU's slot of a per-CPU array.
    #[allow(unsafe_code)]
    let stats = unsafe { &mut *stats };
    if to_peer {
        stats.client_to_peer_packets += 1;
        stats.client_to_peer_bytes += data;
    } else {
        stats.peer_to_client_packets += 1;
        stats.peer_to_client_bytes += data;
    }
}

/// Where the packet along `route` goes next. A destination without a next hop may be another
/// relayed address of this relay (local addresses have none): if the route is a client's to
/// its peer and the client that owns that address has a channel bound to the first client's
/// relayed address, the packet goes straight to it instead (`packet::same_relay_into`), or,
/// with a permission but no channel, as a Data indication
/// (`packet::same_relay_indication_into`).
#[inline(always)]
fn next_hop(route: &mut Route, data_header: &mut DataHeader) -> Result<NextHopValue, Verdict> {
    let mut hop = NEXT_HOPS.get_ptr(&NextHopKey::from_packet(route.family, route.dst));
    if hop.is_none() && route.added_len == 0 {
        if let Some(other) = PEER_TO_CLIENT.get_ptr(&packet::same_relay_key(route)) {
            // SAFETY: a map value pointer from a successful lookup (see `route`).
            #[allow(unsafe_code)]
            let other = unsafe { &*other };
            packet::same_relay_into(route, other);
        } else if let Some(other) =
            PEER_TO_CLIENT.get_ptr(&packet::same_relay_permission_key(route))
        {
            // SAFETY: as above.
            #[allow(unsafe_code)]
            let other = unsafe { &*other };
            if other.channel != NO_CHANNEL {
                return Err(Verdict::PassNoNextHop);
            }
            indication::data_indication_into(
                &random_txid(),
                route.family,
                &route.src,
                route.src_port,
                route.data_len,
                data_header,
            )
            .map_err(|_| Verdict::PassTooBig)?;
            packet::same_relay_indication_into(route, other, data_header);
        }
        hop = NEXT_HOPS.get_ptr(&NextHopKey::from_packet(route.family, route.dst));
    }
    let hop = hop.ok_or(Verdict::PassNoNextHop)?;
    // SAFETY: a map value pointer from a successful lookup; the map is not preallocated, so a
    // value userspace replaces meanwhile is freed only after this run (RCU). Copied out at once.
    #[allow(unsafe_code)]
    Ok(unsafe { *hop })
}

/// The frame's length. From the helper rather than `data_end - data`: subtracting one packet
/// pointer from another is pointer arithmetic the verifier allows only with CAP_PERFMON, which
/// the relay's pod does not need otherwise.
#[inline(always)]
fn buff_len(ctx: &XdpContext) -> usize {
    // SAFETY: a helper call on the program's own context.
    #[allow(unsafe_code)]
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    len as usize
}

#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> i64 {
    // SAFETY: a helper call on the program's own context.
    #[allow(unsafe_code)]
    unsafe {
        bpf_xdp_adjust_head(ctx.ctx, delta)
    }
}

#[inline(always)]
fn adjust_tail(ctx: &XdpContext, delta: i32) -> i64 {
    // SAFETY: a helper call on the program's own context.
    #[allow(unsafe_code)]
    unsafe {
        bpf_xdp_adjust_tail(ctx.ctx, delta)
    }
}

/// The rewrite of a partial-checksum packet in generic mode (`packet::keep_partial`): the UDP
/// header stays where the skb's `csum_start` points, the data moves by `rw.data_shift` (the
/// ChannelData header's 4 bytes going or coming), the front by the IP header's size change.
/// Every step that can fail without having changed anything comes first: a tail to grow, then
/// the head.
#[inline(never)]
fn move_keeping_udp(
    ctx: &XdpContext,
    rw: &Rewrite,
    payload_at: usize,
    bounce: &mut [u8; BOUNCE],
) -> Result<(), Verdict> {
    let len = buff_len(ctx) as i32;
    let data_at = payload_at as i32 + rw.removed_len as i32;
    let data_len = rw.data_len as usize;
    if data_len > MOVE_MAX {
        return Err(Verdict::PassTooBig);
    }
    // The new end, in the arriving frame's offsets (the front has not moved yet).
    let tail_delta = data_at + rw.data_shift + rw.data_len as i32 + rw.padding as i32 - len;
    if tail_delta > 0 && adjust_tail(ctx, tail_delta) != 0 {
        return Err(Verdict::PassAdjustFailed);
    }
    move_data(ctx, data_at as usize, data_len, rw.data_shift, bounce)
        .ok_or(Verdict::DropRewriteFailed)?;
    if tail_delta < 0 && adjust_tail(ctx, tail_delta) != 0 {
        return Err(Verdict::DropRewriteFailed);
    }
    if rw.head_delta != 0 && adjust_head(ctx, rw.head_delta) != 0 {
        return Err(Verdict::DropRewriteFailed);
    }
    Ok(())
}

/// Moves `len` bytes (at most [`MOVE_MAX`]) at `from` by `shift` (4 bytes either way) within
/// the packet, through the bounce buffer, a chunk at a time in the order that never overwrites
/// what is still to be read: from the front when moving towards the head, from the back when
/// moving towards the tail. Four chunks, unrolled: a loop whose chunk length varies makes the
/// verifier walk every length it could have, past its million-instruction budget.
#[inline(always)]
fn move_data(
    ctx: &XdpContext,
    from: usize,
    len: usize,
    shift: i32,
    bounce: &mut [u8; BOUNCE],
) -> Option<()> {
    if from > MAX_FRAME || len > MOVE_MAX {
        return None;
    }
    move_chunk::<0>(ctx, from, len, shift, bounce)?;
    move_chunk::<1>(ctx, from, len, shift, bounce)?;
    move_chunk::<2>(ctx, from, len, shift, bounce)?;
    move_chunk::<3>(ctx, from, len, shift, bounce)
}

/// The `K`th chunk of [`move_data`]: `[K * BOUNCE, (K + 1) * BOUNCE)` of the data counted from
/// its front (moving towards the head) or from its back (towards the tail); nothing when the
/// data is shorter.
#[inline(always)]
fn move_chunk<const K: usize>(
    ctx: &XdpContext,
    from: usize,
    len: usize,
    shift: i32,
    bounce: &mut [u8; BOUNCE],
) -> Option<()> {
    let skip = K * BOUNCE;
    if len <= skip {
        return Some(());
    }
    let n = core::cmp::min(len - skip, BOUNCE);
    let at = if shift < 0 {
        from + skip
    } else {
        from + len - skip - n
    };
    copy_chunk(ctx, at, (at as i32 + shift) as usize, n, bounce)
}

/// Copies `n` (1 to BOUNCE) bytes from `at` to `to` in the packet through `bounce`.
#[inline(always)]
fn copy_chunk(
    ctx: &XdpContext,
    at: usize,
    to: usize,
    n: usize,
    bounce: &mut [u8; BOUNCE],
) -> Option<()> {
    // Opaque to LLVM, so the bounds below are the ones the verifier sees on the length.
    let n = core::hint::black_box(n);
    if n == 0 || n > BOUNCE || at > MAX_FRAME || to > MAX_FRAME {
        return None;
    }
    let buf = bounce.as_mut_ptr().cast();
    // SAFETY: helper calls on the program's own context with a buffer of BOUNCE >= n bytes;
    // the helpers check the packet offsets themselves.
    #[allow(unsafe_code)]
    let ok = unsafe {
        bpf_xdp_load_bytes(ctx.ctx, at as u32, buf, n as u32) == 0
            && bpf_xdp_store_bytes(ctx.ctx, to as u32, buf, n as u32) == 0
    };
    ok.then_some(())
}

/// The one's-complement sum of the `len` bytes at `at` (an even offset), as a [`Sum`] of
/// network-order words: `bpf_csum_diff` over the packet in constant-size chunks (up to four of
/// 512 bytes, then one each of 256 down to 4: the verifier checks a constant size against the packet's
/// end), then the last 0-3 bytes one by one. `bpf_csum_diff` sums 16-bit words as they lie in
/// memory; the sum of byte-swapped words is the byte-swapped sum (RFC 1071 §2(B)), so the
/// folded result is swapped back to network order.
#[inline(never)]
fn payload_sum(ctx: &XdpContext, at: usize, len: usize) -> Result<Sum, Verdict> {
    // Longer payloads are rare (jumbo frames) and go up: see `MOVE_MAX`.
    if at > MAX_FRAME || len > MOVE_MAX + 511 {
        return Err(Verdict::PassTooBig);
    }
    let mut wide: u64 = 0;
    let mut off = at;
    let end = at + len;
    // Unrolled, as in `move_data`: a loop here cost the verifier half a million instructions.
    if end - off >= 512 {
        wide += chunk_sum::<512>(ctx, off)?;
        off += 512;
    }
    if end - off >= 512 {
        wide += chunk_sum::<512>(ctx, off)?;
        off += 512;
    }
    if end - off >= 512 {
        wide += chunk_sum::<512>(ctx, off)?;
        off += 512;
    }
    if end - off >= 512 {
        wide += chunk_sum::<512>(ctx, off)?;
        off += 512;
    }
    if end - off >= 256 {
        wide += chunk_sum::<256>(ctx, off)?;
        off += 256;
    }
    if end - off >= 128 {
        wide += chunk_sum::<128>(ctx, off)?;
        off += 128;
    }
    if end - off >= 64 {
        wide += chunk_sum::<64>(ctx, off)?;
        off += 64;
    }
    if end - off >= 32 {
        wide += chunk_sum::<32>(ctx, off)?;
        off += 32;
    }
    if end - off >= 16 {
        wide += chunk_sum::<16>(ctx, off)?;
        off += 16;
    }
    if end - off >= 8 {
        wide += chunk_sum::<8>(ctx, off)?;
        off += 8;
    }
    if end - off >= 4 {
        wide += chunk_sum::<4>(ctx, off)?;
        off += 4;
    }
    let folded = Sum::new().add_wide(wide).fold().swap_bytes();
    let mut sum = Sum::new().add(folded);
    // The last 0-3 bytes, at even, odd, even offsets (`off` - `at` is a multiple of 4).
    let rest = end - off;
    if rest > 0 {
        let w = load_at::<4>(ctx, end - 4).ok_or(Verdict::DropMalformed)?;
        sum = match rest {
            1 => sum.add_byte(w[3], true),
            2 => sum.add(u16::from_be_bytes([w[2], w[3]])),
            _ => sum
                .add(u16::from_be_bytes([w[1], w[2]]))
                .add_byte(w[3], true),
        };
    }
    Ok(sum)
}

/// `bpf_csum_diff` of the `N` bytes at `offset` (a multiple of 4 bytes, at most 512): their
/// 32-bit one's-complement sum in memory order.
#[inline(always)]
fn chunk_sum<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<u64, Verdict> {
    let offset = core::hint::black_box(offset);
    if offset > MAX_FRAME {
        return Err(Verdict::PassTooBig);
    }
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return Err(Verdict::DropMalformed);
    }
    // SAFETY: [start, start + N) was just checked to be inside the packet; the helper only
    // reads it.
    #[allow(unsafe_code)]
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, start as *mut u32, N as u32, 0) };
    if r < 0 {
        return Err(Verdict::PassChecksumUnknown);
    }
    Ok(r as u64 & 0xFFFF_FFFF)
}

/// The `N` bytes at `offset` of the packet, in place, if the packet has them. The reference
/// must not be kept across `bpf_xdp_adjust_head`/`_tail`, which move the packet's bounds.
#[inline(always)]
fn view<'a, const N: usize>(ctx: &XdpContext, offset: usize) -> Option<&'a [u8; N]> {
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return None;
    }
    // SAFETY: [start, start + N) was just checked to be inside the packet; a byte array has
    // alignment 1; the program only writes the packet after the last use of these views.
    #[allow(unsafe_code)]
    Some(unsafe { &*(start as *const [u8; N]) })
}

/// Copies `N` (2 or more) bytes at a variable `offset` out of the packet. The explicit bound on
/// the offset is what lets the verifier accept the access. (With `N` = 1, LLVM turns
/// `ptr + 1 > end` into `ptr >= end`, from which the verifier learns no range.)
#[inline(always)]
fn load_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    const { assert!(N >= 2) };
    // Opaque to LLVM, so that it cannot fold the offset into how it was computed and check a
    // different pointer than the one it reads through.
    let offset = core::hint::black_box(offset);
    if offset > MAX_FRAME {
        return None;
    }
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return None;
    }
    // SAFETY: [start, start + N) was just checked to be inside the packet.
    #[allow(unsafe_code)]
    Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
}

/// The `N` = 2 `W` bytes at the constant (even) `offset` of the packet, copied out as `W`
/// 16-bit words, if the packet has them.
///
/// Packet memory is accessed in 16-bit words, not bytes: the BPF target splits every access it
/// cannot prove aligned into single bytes (a 40-byte IPv6 header was 40 loads and as many
/// shifts and ors to put the words together again). The words are aligned: the kernel puts a
/// frame's first byte at an even address (after `XDP_PACKET_HEADROOM`, plus `NET_IP_ALIGN` on
/// some drivers, or at an skb's data in generic mode), this program only moves it by even
/// deltas (header lengths), and every offset read or written here is even. The verifier holds
/// programs to that model where alignment matters (strict-alignment architectures, where it
/// takes the frame to start 2 bytes before a 4-byte boundary); elsewhere it does not check.
#[inline(always)]
fn load<const W: usize, const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    const { assert!(N == 2 * W) };
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return None;
    }
    // SAFETY: [start, start + N) was just checked to be inside the packet, and `start` is
    // 2-aligned (see above).
    #[allow(unsafe_code)]
    let w = unsafe { core::ptr::read(start as *const [u16; W]) };
    let mut bytes = [0u8; N];
    let mut i = 0;
    while i < W {
        let b = w[i].to_ne_bytes();
        bytes[2 * i] = b[0];
        bytes[2 * i + 1] = b[1];
        i += 1;
    }
    Some(bytes)
}

/// Copies the 16-byte IPv6 address at the constant (even) `offset` of the packet into `addr`
/// (an address field of the 8-aligned [`Ip`] in the scratch map), 16 bits at a time (see
/// [`load`]): volatile reads, so that LLVM does not put the words together into 64-bit ones,
/// which takes shifts, ors and more registers than there are.
#[inline(always)]
fn copy_addr(ctx: &XdpContext, offset: usize, addr: &mut [u8; 16]) -> Option<()> {
    let start = ctx.data() + offset;
    if start + 16 > ctx.data_end() {
        return None;
    }
    let from = start as *const u16;
    let to = addr.as_mut_ptr() as *mut u16;
    let mut i = 0;
    while i < 8 {
        // SAFETY: [start, start + 16) was just checked to be inside the packet and `start` is
        // 2-aligned (see `load`); `addr` is the first or second 16-byte field of the
        // 8-aligned `Ip`.
        #[allow(unsafe_code)]
        unsafe {
            to.add(i).write(from.add(i).read_volatile())
        };
        i += 1;
    }
    Some(())
}

/// `bytes` as the 16-bit words they are in memory, to [`store`] them.
#[inline(always)]
fn words<const N: usize, const W: usize>(bytes: &[u8; N]) -> [u16; W] {
    const { assert!(N == 2 * W) };
    let mut w = [0u16; W];
    let mut i = 0;
    while i < W {
        w[i] = u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        i += 1;
    }
    w
}

/// Writes `W` 16-bit words into the packet at a constant (even) `offset`, if the packet has
/// room. See [`load`] for the alignment.
#[inline(always)]
fn store<const W: usize>(ctx: &XdpContext, offset: usize, words: [u16; W]) -> Option<()> {
    let start = ctx.data() + offset;
    if start + 2 * W > ctx.data_end() {
        return None;
    }
    let p = start as *mut u16;
    let mut i = 0;
    while i < W {
        // SAFETY: [start, start + 2 W) was just checked to be inside the packet, and `start`
        // is 2-aligned (see `load`). Volatile, one word at a time: otherwise LLVM merges the
        // header copies of the four (family, direction) cases into one memcpy of a variable
        // length, which the BPF target makes a byte loop.
        #[allow(unsafe_code)]
        unsafe {
            p.add(i).write_volatile(words[i])
        };
        i += 1;
    }
    Some(())
}

/// Writes the first `W` words of the planned headers after the Ethernet header.
#[inline(always)]
fn store_headers<const W: usize>(ctx: &XdpContext, rw: &Rewrite) -> Option<()> {
    const { assert!(2 * W <= MAX_HEADERS) };
    // SAFETY: `headers` is the first field of the 8-aligned `Rewrite` (repr(C)), and 2 W <=
    // MAX_HEADERS (checked at compile time) keeps the read inside it.
    #[allow(unsafe_code)]
    let words = unsafe { core::ptr::read(rw.headers.as_ptr() as *const [u16; W]) };
    store(ctx, ETH_HLEN, words)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // BPF programs cannot unwind or abort; the verifier rejects any path that reaches here.
    loop {}
}

/// The license the kernel reads: GPL, as the kernel's helpers expect of a program that uses
/// the GPL-only ones.
// SAFETY: a byte string in the `license` section, the ELF convention for BPF objects; no code
// refers to it.
#[allow(unsafe_code)]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
