//! The program's decision steps that need no packet memory, written once for the XDP program
//! and for the host tests that drive these functions as it does: how a ChannelData message's
//! padding is read, what goes of a Send indication, what the arriving checksum makes of the
//! rewrite, and whether a client's packet to a peer is a same-relay call. A map lookup comes in
//! as a closure, so the program passes its BPF map and the tests a hash map; it is called in
//! the order, and only in the cases, that the program looks the map up.

use super::{
    Checksum, Ip, Route, Udp, classify_checksum, completed_checksum, same_relay_indication_into,
    same_relay_into, same_relay_key, same_relay_permission_key,
};
#[cfg(doc)]
use super::{keep_partial, maybe_partial, rewrite_into, trailing_sum};
use crate::csum::Sum;
use crate::indication::{self, DataHeader};
use crate::maps::{NO_CHANNEL, PeerKey, PeerValue};
use crate::verdict::Verdict;

/// The `trailing` (1-3) bytes after a ChannelData message's data, for [`trailing_sum`], from
/// `window`: the 4 bytes that end the UDP datagram (the payload has at least 4 + data +
/// padding bytes, so the window is inside it).
#[inline(always)]
pub const fn trailing_bytes(window: [u8; 4], trailing: u16) -> [u8; 3] {
    let w = window;
    match trailing {
        1 => [w[3], 0, 0],
        2 => [w[2], w[3], 0],
        _ => [w[1], w[2], w[3]],
    }
}

/// The folded sum of what goes of a Send indication (everything but its data): the payload's
/// sum `total` minus the data's sum `data`.
#[inline(always)]
pub const fn removed_sum(total: Sum, data: Sum) -> u16 {
    total.sub(data.fold()).fold()
}

/// The checksum step of a forward, for a datagram whose checksum field could be partial
/// ([`maybe_partial`]): `payload` is the sum of its UDP payload,
/// `generic` whether the program runs in generic (skb) mode on the ingress interface. Returns
/// whether the packet leaves with a partial checksum again ([`keep_partial`] after
/// [`rewrite_into`]); a partial checksum that does not stay so is completed in `udp.check`
/// first, which the rewrite then updates like any other.
#[inline(always)]
pub fn settle_checksum(
    ip: &Ip,
    udp: &mut Udp,
    payload: Sum,
    generic: bool,
) -> Result<bool, Verdict> {
    let mut keep_partial = false;
    match classify_checksum(ip, udp, payload, generic)? {
        // The skb keeps its offload state in generic mode: the packet leaves with a
        // partial checksum again, which the offload (or the receiving stack, trusting it)
        // finishes from the UDP header on.
        Checksum::Partial if generic => keep_partial = true,
        // A bare frame leaves without that state: it needs the complete checksum, which
        // the rewrite then updates like any other.
        Checksum::Partial => udp.check = completed_checksum(ip, udp, payload),
        Checksum::Full | Checksum::None => {}
    }
    Ok(keep_partial)
}

/// The same-relay step of finding a client's packet to its peer a next hop, for a destination
/// that has none (local addresses have none): if the peer address is another relayed address
/// of this relay and the client that owns it has a channel bound to the first client's
/// relayed address, `route` goes straight to it instead ([`same_relay_into`]), or, with a
/// permission but no channel, as a Data indication ([`same_relay_indication_into`], its header
/// built into `data_header` with the transaction ID `txid` gives). Otherwise `route` stays.
/// `peer_to_client` looks a key up in `PEER_TO_CLIENT`.
#[inline(always)]
pub fn same_relay<'a>(
    route: &mut Route,
    data_header: &mut DataHeader,
    txid: impl FnOnce() -> [u8; 12],
    peer_to_client: impl Fn(&PeerKey) -> Option<&'a PeerValue>,
) -> Result<(), Verdict> {
    if let Some(other) = peer_to_client(&same_relay_key(route)) {
        same_relay_into(route, other);
    } else if let Some(other) = peer_to_client(&same_relay_permission_key(route)) {
        if other.channel != NO_CHANNEL {
            return Err(Verdict::PassNoNextHop);
        }
        indication::data_indication_into(
            &txid(),
            route.family,
            &route.src,
            route.src_port,
            route.data_len,
            data_header,
        )
        .map_err(|_| Verdict::PassTooBig)?;
        same_relay_indication_into(route, other, data_header);
    }
    Ok(())
}
