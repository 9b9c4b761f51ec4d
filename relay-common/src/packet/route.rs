//! Where a forwarded packet goes and what happens to its payload ([`Route`]), from the map value
//! that matched: client to peer (ChannelData or a Send indication's data), peer to client
//! (ChannelData or a Data indication), and same-relay calls.

use super::{CHANNEL_HLEN, ChannelHeader, Udp};
#[cfg(doc)]
use super::{Ip, Rewrite, channel_data_fits, trailing_sum};
use crate::csum::Sum;
use crate::indication::DataHeader;
use crate::maps::{ChannelValue, PeerKey, PeerValue};

/// Where a forwarded packet goes and what happens to its payload: the part of a rewrite that
/// comes from the map value. It holds copies, not references: the program keeps it in its
/// scratch map, where the verifier allows no pointers.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
#[repr(C, align(8))]
pub struct Route {
    /// The outgoing source address (first, so 8-aligned: see [`Ip`]).
    pub src: [u8; 16],
    /// The outgoing destination address.
    pub dst: [u8; 16],
    /// The outgoing family.
    pub family: u8,
    /// The outgoing source port (host order).
    pub src_port: u16,
    /// The outgoing destination port (host order).
    pub dst_port: u16,
    /// The folded checksum sum of the payload words that go (ChannelData header, padding).
    pub removed: u16,
    /// How many bytes in front of the data go: the ChannelData header from a client (4), none
    /// from a peer.
    pub removed_len: u16,
    /// The ChannelData header that goes in front of the payload, towards a client.
    pub added: Option<ChannelHeader>,
    /// How many bytes go in front of the data: a ChannelData header's 4, or a Data
    /// indication's header (36 or 48 bytes, which the program writes after
    /// [`Rewrite::headers`] itself); 0 towards a peer.
    pub added_len: u16,
    /// The folded checksum sum of those bytes.
    pub added_sum: u16,
    /// Zero bytes after the data (a Data indication's padding to 4 bytes).
    pub padding: u16,
    /// The application data bytes.
    pub data_len: u16,
    /// The channel's (or permission's) counter slot.
    pub counter: u32,
    /// Same-relay calls ([`same_relay_into`]): the counter slot of the channel the data
    /// reaches the other client on; [`NO_COUNTER`] otherwise.
    pub peer_counter: u32,
}

/// [`Route::peer_counter`] of a route that is not a same-relay one.
pub const NO_COUNTER: u32 = u32::MAX;

impl Route {
    /// An all-zero route to fill in.
    pub const EMPTY: Route = Route {
        family: 0,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        removed: 0,
        removed_len: 0,
        added: None,
        added_len: 0,
        added_sum: 0,
        padding: 0,
        data_len: 0,
        counter: 0,
        peer_counter: NO_COUNTER,
    };
}

/// Turns a client's route to a peer that is another relayed address of this relay (both
/// parties of a call on one relay) into the route to the client that owns that address:
/// `value` is its [`PEER_TO_CLIENT`](crate::maps::PEER_TO_CLIENT) entry for the first
/// client's relayed address, which exists only while that client has a channel bound to it,
/// and so a permission for it. What would have left from one relayed address and come back to
/// the other, through the kernel's loopback and two passes of userspace, leaves once: from
/// the listener of the second client, as ChannelData on its channel. The data, what was
/// removed from in front of it and the first channel's counter stay.
#[inline(always)]
pub const fn same_relay_into(route: &mut Route, value: &PeerValue) {
    set_to_client(route, value);
    set_channel_header(route, u16::from_be(value.channel), route.data_len);
    route.peer_counter = value.counter;
}

/// [`same_relay_into`] where the client that owns the peer address has a permission for the
/// first client's relayed address but no channel (Firefox never binds one): the data reaches
/// it as a Data indication, whose `header` was built for the first client's relayed address
/// (the peer it hears from) before `route` changes. `value` is the permission's entry.
#[inline(always)]
pub const fn same_relay_indication_into(route: &mut Route, value: &PeerValue, header: &DataHeader) {
    set_to_client(route, value);
    set_data_indication(route, header);
    route.peer_counter = value.counter;
}

/// The key of the permission, if any, that the owner of the peer address along `route` (a
/// client's to its peer) holds for the first client's relayed address.
#[inline(always)]
pub const fn same_relay_permission_key(route: &Route) -> PeerKey {
    PeerKey::permission_from_packet(route.family, route.dst, route.dst_port, route.src)
}

/// The [`PEER_TO_CLIENT`](crate::maps::PEER_TO_CLIENT) key of a datagram along `route` (a
/// client's to its peer), were the peer one of this relay's relayed addresses.
#[inline(always)]
pub const fn same_relay_key(route: &Route) -> PeerKey {
    PeerKey::from_packet(
        route.family,
        route.dst,
        route.dst_port,
        route.src,
        route.src_port,
    )
}

/// The route of ChannelData from a client to a peer: the 4-byte header and any padding go, the
/// packet leaves from the relayed address to the peer. `trailing` is [`trailing_sum`] of the
/// padding ([`channel_data_fits`] counted it).
#[inline(always)]
pub const fn route_to_peer(cd: ChannelHeader, trailing: Sum, value: &ChannelValue) -> Route {
    let mut route = Route::EMPTY;
    route_to_peer_into(cd, trailing, value, &mut route);
    route
}

/// [`route_to_peer`] into a `Route` the caller owns (the program's scratch map): field by
/// field, where a returned `Route` is built on the stack and copied.
#[inline(always)]
pub const fn route_to_peer_into(
    cd: ChannelHeader,
    trailing: Sum,
    value: &ChannelValue,
    route: &mut Route,
) {
    route.src = value.relay_addr;
    route.dst = value.peer_addr;
    route.family = value.family;
    route.src_port = u16::from_be(value.relay_port);
    route.dst_port = u16::from_be(value.peer_port);
    route.removed = Sum::new()
        .add(cd.channel)
        .add(cd.len)
        .add(trailing.fold())
        .fold();
    route.removed_len = CHANNEL_HLEN as u16;
    route.added = None;
    route.added_len = 0;
    route.added_sum = 0;
    route.padding = 0;
    route.data_len = cd.len;
    route.counter = value.counter;
    route.peer_counter = NO_COUNTER;
}

/// The route of a peer's datagram to a client: a ChannelData header goes in front of the data,
/// the packet leaves from the listener to the client.
#[inline(always)]
pub const fn route_to_client(udp: &Udp, value: &PeerValue) -> Route {
    let mut route = Route::EMPTY;
    route_to_client_into(udp, value, &mut route);
    route
}

/// [`route_to_client`] into a `Route` the caller owns, as [`route_to_peer_into`].
#[inline(always)]
pub const fn route_to_client_into(udp: &Udp, value: &PeerValue, route: &mut Route) {
    let data_len = udp.payload_len();
    set_to_client(route, value);
    route.removed = 0;
    route.removed_len = 0;
    route.peer_counter = NO_COUNTER;
    set_channel_header(route, u16::from_be(value.channel), data_len);
    route.data_len = data_len;
    route.counter = value.counter;
}

/// The route of a peer's datagram to a client that has a permission for the peer but no
/// channel for its port: a Data indication (RFC 8656 §11.4), whose header `header` (built
/// for the peer's address and the data's length) goes in front of the data and whose padding
/// after it. `value` is the permission's entry.
#[inline(always)]
pub const fn route_to_client_indication_into(
    udp: &Udp,
    value: &PeerValue,
    header: &DataHeader,
    route: &mut Route,
) {
    set_to_client(route, value);
    route.removed = 0;
    route.removed_len = 0;
    route.peer_counter = NO_COUNTER;
    set_data_indication(route, header);
    route.data_len = udp.payload_len();
    route.counter = value.counter;
}

/// Makes `route` leave from the listener to the client of `value` (a channel's or a
/// permission's [`PEER_TO_CLIENT`](crate::maps::PEER_TO_CLIENT) entry).
#[inline(always)]
const fn set_to_client(route: &mut Route, value: &PeerValue) {
    route.src = value.listener_addr;
    route.dst = value.client_addr;
    route.family = value.family;
    route.src_port = u16::from_be(value.listener_port);
    route.dst_port = u16::from_be(value.client_port);
}

/// Makes `route` put the Data indication `header` in front of the data and its padding after.
#[inline(always)]
const fn set_data_indication(route: &mut Route, header: &DataHeader) {
    route.added = None;
    route.added_len = header.len;
    route.added_sum = header.sum.fold();
    route.padding = header.padding;
}

/// Makes `route` put a ChannelData header for `channel` and `len` data bytes in front of
/// the data.
#[inline(always)]
const fn set_channel_header(route: &mut Route, channel: u16, len: u16) {
    route.added = Some(ChannelHeader { channel, len });
    route.added_len = CHANNEL_HLEN as u16;
    route.added_sum = Sum::new().add(channel).add(len).fold();
    route.padding = 0;
}

/// The route of a Send indication's data (RFC 8656 §11.2) from a client to its peer: the
/// STUN header and every attribute but the data go, the data leaves from the relayed address
/// `relay` of the peer's family to the peer. `removed` is the folded sum of the payload bytes
/// that go; `counter` the permission's counter slot.
#[inline(always)]
pub const fn route_to_peer_send_into(
    send: &crate::indication::SendIndication,
    relay: &[u8; 16],
    relay_port: u16,
    removed: u16,
    counter: u32,
    route: &mut Route,
) {
    route.src = *relay;
    route.dst = send.peer_addr;
    route.family = send.peer_family;
    route.src_port = relay_port;
    route.dst_port = send.peer_port;
    route.removed = removed;
    route.removed_len = send.data_offset;
    route.added = None;
    route.added_len = 0;
    route.added_sum = 0;
    route.padding = 0;
    route.data_len = send.data_len;
    route.counter = counter;
    route.peer_counter = NO_COUNTER;
}
