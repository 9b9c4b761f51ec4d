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
//! ([`relay_common::packet`]) -> `bpf_fib_lookup` for the new destination -> adjust head and
//! tail, write the headers -> `XDP_TX` when the route leaves by the ingress interface,
//! `XDP_REDIRECT` through the `EGRESS` device map when it leaves by another attached one. Every
//! other outcome is an [`Action`] with a deliberate verdict (mostly `XDP_PASS` to the kernel
//! stack and the relay's sockets, which do the same job in userspace), and every packet is
//! counted under its action, per CPU. Nothing is changed before the last check that can pass a
//! packet up has been made.
//!
//! Userspace is the only writer of the maps; the program only reads them and counts.

#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::bindings::{
    BPF_F_NO_PREALLOC, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED,
    BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibLookup,
};
use aya_ebpf::helpers::generated::{bpf_fib_lookup, bpf_xdp_adjust_head, bpf_xdp_adjust_tail};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{DevMapHash, HashMap, PerCpuArray};
use aya_ebpf::programs::XdpContext;
use relay_common::action::XDP_PASS;
use relay_common::csum::Sum;
use relay_common::packet::{
    self, CHANNEL_HLEN, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, Ip, MAX_FRAME, MAX_HEADERS, Rewrite, Route,
    UDP_HLEN, Udp,
};
use relay_common::{
    Action, ChannelKey, ChannelStats, ChannelValue, FAMILY_IPV4, FAMILY_IPV6, ListenerKey, PeerKey,
    PeerValue,
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

/// The TURN listeners, only to tell "not ours" from "ours, for userspace" in the counters.
#[map]
static LISTENERS: HashMap<ListenerKey, u32> = HashMap::with_max_entries(64, 0);

/// Per-CPU packets and bytes per channel, indexed by the values' `counter`.
#[map]
static CHANNEL_STATS: PerCpuArray<ChannelStats> = PerCpuArray::with_max_entries(1024, 0);

/// Per-CPU packets and bytes of every channel (one slot), so totals are one read.
#[map]
static TOTAL_STATS: PerCpuArray<ChannelStats> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU packets per action, indexed by `Action::index`.
#[map]
static ACTION_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Action::COUNT as u32, 0);

/// The interfaces the program is attached to, the only ones it redirects to.
#[map]
static EGRESS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// Per-CPU room for what does not fit the 512-byte stack: the parsed IP header, the route, the
/// planned rewrite and the FIB lookup's parameters. Programs do not migrate between CPUs during a run, so one slot per CPU
/// is private to the run.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct Scratch {
    ip: Ip,
    route: Route,
    rw: Rewrite,
    fib: FibLookup,
}

/// Entry point attached to the NIC.
#[xdp]
pub fn xdpturn(ctx: XdpContext) -> u32 {
    let action = match try_xdpturn(&ctx) {
        Ok(action) | Err(action) => action,
    };
    if let Some(count) = ACTION_STATS.get_ptr_mut(action.index()) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, valid for the program's
        // run and written by no one else meanwhile.
        #[allow(unsafe_code)]
        unsafe {
            *count += 1
        };
    }
    action.xdp_action()
}

/// The whole decision. `Ok` is a forwarded packet; `Err` says why a packet was not forwarded
/// (its verdict is `Action::xdp_action`).
#[inline(always)]
fn try_xdpturn(ctx: &XdpContext) -> Result<Action, Action> {
    // Shorter than an Ethernet header: nothing IP about it.
    let eth = load::<{ ETH_HLEN / 2 }, ETH_HLEN>(ctx, 0).ok_or(Action::PassNotIp)?;
    let family = packet::l3_family(&eth)?;
    let frame_len = ctx.data_end() - ctx.data();
    packet::check_frame_len(frame_len)?;
    let l3_len = frame_len - ETH_HLEN;

    let scratch = SCRATCH.get_ptr_mut(0).ok_or(Action::PassAdjustFailed)?;
    // SAFETY: this CPU's only slot of a per-CPU array: nothing else uses it during this run.
    #[allow(unsafe_code)]
    let scratch = unsafe { &mut *scratch };
    let ip = &mut scratch.ip;

    let payload_at = if family == FAMILY_IPV4 {
        // Too short for an IP header: malformed (the kernel drops it too).
        let h = load::<{ IPV4_HLEN / 2 }, IPV4_HLEN>(ctx, ETH_HLEN).ok_or(Action::DropMalformed)?;
        packet::parse_ipv4_into(&h, l3_len, ip)?;
        ETH_HLEN + IPV4_HLEN
    } else {
        if ctx.data() + ETH_HLEN + IPV6_HLEN > ctx.data_end() {
            return Err(Action::DropMalformed);
        }
        let h = load::<4, 8>(ctx, ETH_HLEN).ok_or(Action::DropMalformed)?;
        packet::parse_ipv6_fixed_into(&h, l3_len, ip)?;
        copy_addr(ctx, ETH_HLEN + 8, &mut ip.src).ok_or(Action::DropMalformed)?;
        copy_addr(ctx, ETH_HLEN + 24, &mut ip.dst).ok_or(Action::DropMalformed)?;
        ETH_HLEN + IPV6_HLEN
    };
    let udp = packet::parse_udp(
        &load::<{ UDP_HLEN / 2 }, UDP_HLEN>(ctx, payload_at).ok_or(Action::DropMalformed)?,
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
    if stun && to_listener(&scratch.ip, &udp) {
        return Err(packet::unmatched(true, first, payload_len));
    }
    if !route(ctx, &udp, payload_at, scratch)? {
        let to_listener = !stun && to_listener(&scratch.ip, &udp);
        return Err(packet::unmatched(to_listener, first, payload_len));
    }
    forward(ctx, &udp, scratch)
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
) -> Result<bool, Action> {
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
    Ok(false)
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
) -> Result<Sum, Action> {
    if trailing == 0 {
        return Ok(Sum::new());
    }
    let w =
        load_at::<4>(ctx, payload_at + payload_len as usize - 4).ok_or(Action::DropMalformed)?;
    let bytes = match trailing {
        1 => [w[3], 0, 0],
        2 => [w[2], w[3], 0],
        _ => [w[1], w[2], w[3]],
    };
    Ok(packet::trailing_sum(bytes, trailing, data_len))
}

/// Plans the rewrite, looks the route up, rewrites and sends the packet, and counts it on its
/// channel.
#[inline(never)]
fn forward(ctx: &XdpContext, udp: &Udp, scratch: &mut Scratch) -> Result<Action, Action> {
    let Scratch { ip, route, rw, fib } = scratch;
    packet::rewrite_into(ip, udp, route, rw)?;
    let ingress = ctx.ingress_ifindex() as u32;
    fib_lookup(ctx, rw, ingress, fib)?;
    let egress = fib.ifindex;
    let tx = egress == ingress;
    // Another interface: the redirect is set up now, while the packet can still go up
    // unchanged. `bpf_redirect_map` only records the target, which the kernel uses when the
    // program returns XDP_REDIRECT (and ignores otherwise), and answers XDP_PASS (the flags'
    // low bits) when the interface is not in EGRESS: one device map lookup, where checking
    // here and redirecting at the end took two.
    if !tx && EGRESS.redirect(egress, u64::from(XDP_PASS)).is_err() {
        return Err(Action::PassEgressNotAttached);
    }

    // From here on the packet changes. adjust_head fails only without headroom, and then it
    // has changed nothing: the packet can still go up.
    // SAFETY: helper calls on the program's own context.
    #[allow(unsafe_code)]
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, rw.head_delta) } != 0 {
        return Err(Action::PassAdjustFailed);
    }
    let len = ctx.data_end() - ctx.data();
    if len > rw.frame_len {
        // Drops ChannelData padding and Ethernet padding: only ever shrinks.
        #[allow(unsafe_code)]
        let shrunk = unsafe { bpf_xdp_adjust_tail(ctx.ctx, rw.frame_len as i32 - len as i32) } == 0;
        if !shrunk {
            return Err(Action::DropRewriteFailed);
        }
    }
    let eth = packet::ethernet_header(&fib.dmac, &fib.smac, rw.ethertype());
    store::<{ ETH_HLEN / 2 }>(ctx, 0, words(&eth)).ok_or(Action::DropRewriteFailed)?;
    let written = match (rw.family == FAMILY_IPV6, rw.channel_header) {
        (false, false) => store_headers::<{ (IPV4_HLEN + UDP_HLEN) / 2 }>(ctx, rw),
        (false, true) => store_headers::<{ (IPV4_HLEN + UDP_HLEN + CHANNEL_HLEN) / 2 }>(ctx, rw),
        (true, false) => store_headers::<{ (IPV6_HLEN + UDP_HLEN) / 2 }>(ctx, rw),
        (true, true) => store_headers::<{ MAX_HEADERS / 2 }>(ctx, rw),
    };
    written.ok_or(Action::DropRewriteFailed)?;

    count(CHANNEL_STATS.get_ptr_mut(route.counter), rw);
    count(TOTAL_STATS.get_ptr_mut(0), rw);

    if tx {
        Ok(Action::ForwardedTx)
    } else {
        Ok(Action::ForwardedRedirect)
    }
}

/// Counts a forwarded packet in a per-CPU stats slot.
#[inline(always)]
fn count(stats: Option<*mut ChannelStats>, rw: &Rewrite) {
    let Some(stats) = stats else { return };
    // SAFETY: this CPU's slot of a per-CPU array.
    #[allow(unsafe_code)]
    let stats = unsafe { &mut *stats };
    if rw.channel_header {
        stats.peer_to_client_packets += 1;
        stats.peer_to_client_bytes += u64::from(rw.data_len);
    } else {
        stats.client_to_peer_packets += 1;
        stats.client_to_peer_bytes += u64::from(rw.data_len);
    }
}

/// `bpf_fib_lookup` for the rewritten packet, as the kernel would route it if it were
/// forwarding it from the ingress interface. Anything but success goes up, unchanged: the
/// relay sends it from its socket, which also makes the kernel resolve a missing neighbour.
#[inline(always)]
fn fib_lookup(
    ctx: &XdpContext,
    rw: &Rewrite,
    ingress: u32,
    fib: &mut FibLookup,
) -> Result<(), Action> {
    // Every field the kernel reads without lookup flags is set below (the rest are outputs),
    // so what an earlier packet left in the scratch slot does not matter, and the program
    // spends no time zeroing 64 bytes.
    fib.l4_protocol = packet::IPPROTO_UDP;
    fib.sport = rw.src_port.to_be();
    fib.dport = rw.dst_port.to_be();
    fib.__bindgen_anon_1.tot_len = rw.l3_len;
    fib.ifindex = ingress;
    if rw.family == FAMILY_IPV6 {
        fib.family = FAMILY_IPV6;
        fib.__bindgen_anon_2.flowinfo = rw.flowinfo().to_be();
        fib.__bindgen_anon_3.ipv6_src = rw.src_words();
        fib.__bindgen_anon_4.ipv6_dst = rw.dst_words();
    } else {
        fib.family = FAMILY_IPV4;
        fib.__bindgen_anon_2.tos = rw.tos;
        fib.__bindgen_anon_3.ipv4_src = rw.src_words()[0];
        fib.__bindgen_anon_4.ipv4_dst = rw.dst_words()[0];
    }
    // SAFETY: the helper reads and writes `fib`, a stack struct of the size given.
    #[allow(unsafe_code)]
    let rc = unsafe { bpf_fib_lookup(ctx.ctx.cast(), fib, size_of::<FibLookup>() as i32, 0) };
    match rc {
        r if r == i64::from(BPF_FIB_LKUP_RET_SUCCESS) => Ok(()),
        r if r == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) => Err(Action::PassFibNoNeigh),
        r if r == i64::from(BPF_FIB_LKUP_RET_FWD_DISABLED) => Err(Action::PassFibFwdDisabled),
        r if r == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) => Err(Action::PassFibFragNeeded),
        // Blackhole, unreachable, prohibit, not forwarded (a local destination), unsupported
        // lightweight tunnel, no source address, or a negative error.
        _ => Err(Action::PassFibOther),
    }
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

/// The license the kernel reads. `bpf_fib_lookup` is a GPL-only helper: a program that calls
/// it must declare a GPL-compatible license, or the verifier refuses it.
// SAFETY: a byte string in the `license` section, the ELF convention for BPF objects; no code
// refers to it.
#[allow(unsafe_code)]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
