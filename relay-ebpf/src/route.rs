//! Where a datagram goes: the channel and peer lookups (`CLIENT_TO_PEER`, `PEER_TO_CLIENT`,
//! each in its family's map),
//! the listener check that tells "not ours" from "ours, for userspace", and the next hop of
//! the new destination (`NEXT_HOPS`), same-relay calls included.

use aya_ebpf::helpers::generated::bpf_get_prandom_u32;
use relay_common::csum::Sum;
use relay_common::indication::{self, DataHeader};
use relay_common::maps::NO_CHANNEL;
use relay_common::packet::{self, CHANNEL_HLEN, Ip, Route, Udp};
use relay_common::{ListenerKey, NextHopValue, Verdict};

use crate::frame::Frame;
use crate::maps::{
    Keys, LISTENERS, Scratch, client_to_peer, next_hop_of, peer_entry, peer_to_client,
};
use crate::mem::{load, load_at};

/// Where a datagram goes, if a channel is bound for it: client to peer (ChannelData on a bound
/// channel) or peer to client (a datagram to a relayed address from a peer with a channel).
/// Fills `scratch.route` and returns whether there is one.
// Not inlined, like `to_listener` and `forward`: a BPF-to-BPF call gets its own stack frame, so
// the keys here and the FIB lookup there do not add up in the 512 bytes of one frame.
#[inline(never)]
pub(crate) fn route(
    ctx: &impl Frame,
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
        if let Some(value) = client_to_peer(
            &mut scratch.keys,
            ip.family,
            &ip.src,
            udp.src_port,
            &ip.dst,
            udp.dst_port,
            cd.channel,
        ) {
            let trailing = packet::channel_data_fits(cd, payload_len)?;
            let sum = trailing_sum(ctx, payload_at, payload_len, cd.len, trailing)?;
            packet::route_to_peer_into(cd, sum, &value, &mut scratch.route);
            return Ok(true);
        }
    }
    if let Some(value) = peer_entry(
        &mut scratch.keys,
        ip.family,
        &ip.dst,
        udp.dst_port,
        &ip.src,
        udp.src_port,
    ) {
        packet::route_to_client_into(udp, &value, &mut scratch.route);
        return Ok(true);
    }
    // No channel for the peer's port, but maybe a permission for its IP (RFC 8656 §9: any
    // port): a Data indication.
    if let Some(value) = peer_entry(
        &mut scratch.keys,
        ip.family,
        &ip.dst,
        udp.dst_port,
        &ip.src,
        0,
    ) {
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
            &value,
            &scratch.data_header,
            &mut scratch.route,
        );
        return Ok(true);
    }
    Ok(false)
}

/// Whether a datagram is for one of the relay's TURN listeners: what tells "not ours" from
/// "ours, for userspace" (STUN, an unknown channel...) when no channel is bound for it.
#[inline(never)]
pub(crate) fn to_listener(ip: &Ip, udp: &Udp) -> bool {
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
pub(crate) fn trailing_sum(
    ctx: &impl Frame,
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
    Ok(packet::trailing_sum(
        packet::trailing_bytes(w, trailing),
        trailing,
        data_len,
    ))
}

/// A STUN transaction ID: 96 random bits.
#[inline(always)]
pub(crate) fn random_txid() -> [u8; 12] {
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

/// Where the packet along `route` goes next. A destination without a next hop may be another
/// relayed address of this relay (local addresses have none): if the route is a client's to
/// its peer and the client that owns that address has a channel bound to the first client's
/// relayed address, the packet goes straight to it instead (`packet::same_relay_into`), or,
/// with a permission but no channel, as a Data indication
/// (`packet::same_relay_indication_into`).
#[inline(always)]
pub(crate) fn next_hop(
    keys: &mut Keys,
    route: &mut Route,
    data_header: &mut DataHeader,
) -> Result<NextHopValue, Verdict> {
    let mut hop = next_hop_of(keys, route.family, &route.dst);
    if hop.is_none() && route.added_len == 0 {
        packet::same_relay(route, data_header, random_txid, peer_to_client)?;
        hop = next_hop_of(keys, route.family, &route.dst);
    }
    hop.ok_or(Verdict::PassNoNextHop)
}
