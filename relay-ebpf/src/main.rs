//! xdpturn's XDP program: TURN ChannelData, Send and Data indications, and calls between two
//! clients of this relay, relayed in the kernel.
//!
//! Client to peer: a UDP packet to a listener whose payload is ChannelData (first byte
//! 0x40-0x7F) on a channel in `CLIENT_TO_PEER` loses its 4-byte header (and padding) and leaves
//! from the relayed address to the peer; a Send indication with a permission loses its STUN
//! header and attributes the same way. Peer to client: a datagram from a peer to a relayed
//! address in `PEER_TO_CLIENT` gains a ChannelData header (or a Data indication's, where the
//! client has a permission and no channel) and leaves from the listener to the client. Either
//! may change family (IPv4 client, IPv6 peer and the other way round). When the peer is another
//! relayed address of this relay, the packet goes straight to that allocation's client.
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
//!
//! This file holds the entry point and the pipeline; the rooms: `maps` (the maps and the
//! per-CPU scratch), `mem` (packet memory), `route` (channel, peer, listener and next-hop
//! lookups, same-relay calls), `send` (Send indications), `forward` (the rewrite and its
//! writes), `shift` (data moved within the packet), `checksum` (payload sums) and `counters`.
//! The decision steps that need no packet memory are `relay_common::packet`'s, so that the
//! host tests run the same code.

#![no_std]
#![no_main]

mod checksum;
mod counters;
mod forward;
mod frame;
mod maps;
mod mem;
mod route;
mod send;
mod shift;

use aya_ebpf::helpers::generated::bpf_skb_pull_data;
use aya_ebpf::macros::{classifier, xdp};
use aya_ebpf::programs::{TcContext, XdpContext};
use relay_common::Verdict;
use relay_common::maps::FAMILY_IPV4;
use relay_common::packet::{self, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, MAX_FRAME, UDP_HLEN};

use crate::forward::forward;
use crate::frame::{Frame, Tc, Xdp};
use crate::maps::{ACTION_STATS, SCRATCH};
use crate::mem::{copy_addr, load, view};
use crate::route::{route, to_listener};
use crate::send::route_send;

/// Entry point attached to the NIC.
#[xdp]
pub fn xdpturn(ctx: XdpContext) -> u32 {
    let verdict = match try_xdpturn(&Xdp(ctx)) {
        Ok(verdict) | Err(verdict) => verdict,
    };
    count(verdict);
    verdict.xdp_action()
}

/// Entry point attached to an interface's TC ingress hook (tcx or clsact), where XDP cannot
/// serve: the same pipeline on the skb (see `frame`). What it does not forward goes on to the
/// next program on the hook, or up (`Verdict::tc_action`).
#[classifier]
pub fn xdpturn_tc(ctx: TcContext) -> i32 {
    let verdict = match try_tc(&Tc(ctx)) {
        Ok(verdict) | Err(verdict) => verdict,
    };
    count(verdict);
    verdict.tc_action()
}

/// What the skb needs before the pipeline: a GSO skb is many datagrams (UDP GSO from a local
/// sender), left to the stack; a frame the pipeline could forward must be in the linear part,
/// the only one it reads and writes directly (small datagrams nearly always are).
#[inline(always)]
fn try_tc(ctx: &Tc) -> Result<Verdict, Verdict> {
    // SAFETY: a field read of the context the kernel passed.
    #[allow(unsafe_code)]
    let gso_segs = unsafe { (*ctx.0.skb.skb).gso_segs };
    if gso_segs > 1 {
        return Err(Verdict::PassTooBig);
    }
    let len = ctx.len();
    if len <= MAX_FRAME && ctx.data() + len > ctx.data_end() {
        // SAFETY: a helper call on the program's own context.
        #[allow(unsafe_code)]
        if unsafe { bpf_skb_pull_data(ctx.0.skb.skb, len as u32) } != 0 {
            return Err(Verdict::PassTooBig);
        }
    }
    try_xdpturn(ctx)
}

/// Counts a packet under its verdict, per CPU.
#[inline(always)]
fn count(verdict: Verdict) {
    if let Some(count) = ACTION_STATS.get_ptr_mut(verdict.index()) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, valid for the program's
        // run and written by no one else meanwhile.
        #[allow(unsafe_code)]
        unsafe {
            *count += 1
        };
    }
}

/// The whole decision. `Ok` is a forwarded packet; `Err` says why a packet was not forwarded
/// (its XDP action is `Verdict::xdp_action`).
#[inline(always)]
fn try_xdpturn(ctx: &impl Frame) -> Result<Verdict, Verdict> {
    // Shorter than an Ethernet header: nothing IP about it.
    let eth = load::<{ ETH_HLEN / 2 }, ETH_HLEN>(ctx, 0).ok_or(Verdict::PassNotIp)?;
    let family = packet::l3_family(&eth)?;
    let frame_len = ctx.len();
    packet::check_frame_len(frame_len)?;
    let l3_len = frame_len - ETH_HLEN;

    let scratch = SCRATCH.get_ptr_mut(0).ok_or(Verdict::PassAdjustFailed)?;
    // SAFETY: this CPU's only slot of a per-CPU array: nothing else uses it during this run.
    #[allow(unsafe_code)]
    let scratch = unsafe { &mut *scratch };
    let ip = &mut scratch.ip;

    let payload_at = if family == FAMILY_IPV4 {
        // Too short for an IP header: malformed (the kernel drops it too).
        let h =
            load::<{ IPV4_HLEN / 2 }, IPV4_HLEN>(ctx, ETH_HLEN).ok_or(Verdict::DropMalformed)?;
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
