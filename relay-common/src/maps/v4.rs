//! The IPv4 maps' keys: the same fields as the general keys', with 4-byte addresses and no
//! family, so that an IPv4 packet's lookups hash 4 to 14 bytes instead of 20 or 40.
//!
//! The kernel's hash maps hash the whole key (jhash, 12 bytes a round) and compare it whole, so
//! a key's length is paid on every lookup. IPv4 clients are the common case; their keys go to
//! maps of their own ([`CLIENT_TO_PEER4`], [`PEER_TO_CLIENT4`], [`ALLOCATIONS4`],
//! [`NEXT_HOPS4`]), and the general maps keep the IPv6 ones. Which map a key goes to is its
//! packet's family (the family of the packet that arrives; the values, which say where the
//! packet leaves, are the same types in both and may name the other family). Userspace builds
//! the general key and writes [`Narrow::v4`] of it where there is one; the program builds the
//! short key straight from the packet.

#[cfg(doc)]
use super::{ALLOCATIONS4, CLIENT_TO_PEER4, NEXT_HOPS4, PEER_TO_CLIENT4};
use super::{ChannelKey, ClientKey, FAMILY_IPV4, NextHopKey, PeerKey};

/// A general key that has a short IPv4 form.
pub trait Narrow {
    /// The IPv4 form.
    type V4;
    /// The IPv4 form of an IPv4 key; `None` for an IPv6 one (it stays in the general map).
    fn v4(&self) -> Option<Self::V4>;
}

/// The first 4 bytes of an address in the crate's 16-byte layout: the IPv4 address.
#[inline(always)]
pub const fn v4_of(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

/// Key of [`CLIENT_TO_PEER4`]: [`ChannelKey`] of an IPv4 client (14 bytes).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelKey4 {
    /// The client's address.
    pub client_addr: [u8; 4],
    /// The relay's listening address the client sends to.
    pub listener_addr: [u8; 4],
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The relay's listening port, network byte order.
    pub listener_port: u16,
    /// The TURN channel number, network byte order.
    pub channel: u16,
}

impl ChannelKey4 {
    /// Builds a key from what the program read (host-order ports and channel).
    #[inline(always)]
    pub const fn from_packet(
        client: &[u8; 16],
        client_port: u16,
        listener: &[u8; 16],
        listener_port: u16,
        channel: u16,
    ) -> Self {
        Self {
            client_addr: v4_of(client),
            listener_addr: v4_of(listener),
            client_port: client_port.to_be(),
            listener_port: listener_port.to_be(),
            channel: channel.to_be(),
        }
    }
}

impl Narrow for ChannelKey {
    type V4 = ChannelKey4;
    fn v4(&self) -> Option<ChannelKey4> {
        (self.family == FAMILY_IPV4).then_some(ChannelKey4 {
            client_addr: v4_of(&self.client_addr),
            listener_addr: v4_of(&self.listener_addr),
            client_port: self.client_port,
            listener_port: self.listener_port,
            channel: self.channel,
        })
    }
}

/// Key of [`PEER_TO_CLIENT4`]: [`PeerKey`] of a datagram to an IPv4 relayed address (12
/// bytes; a permission's has peer port 0).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct PeerKey4 {
    /// The allocation's relayed address.
    pub relay_addr: [u8; 4],
    /// The peer's address.
    pub peer_addr: [u8; 4],
    /// The relayed port, network byte order.
    pub relay_port: u16,
    /// The peer's port, network byte order (0: a permission's entry).
    pub peer_port: u16,
}

impl PeerKey4 {
    /// Builds a key from what the program read (host-order ports).
    #[inline(always)]
    pub const fn from_packet(
        relay: &[u8; 16],
        relay_port: u16,
        peer: &[u8; 16],
        peer_port: u16,
    ) -> Self {
        Self {
            relay_addr: v4_of(relay),
            peer_addr: v4_of(peer),
            relay_port: relay_port.to_be(),
            peer_port: peer_port.to_be(),
        }
    }
}

impl Narrow for PeerKey {
    type V4 = PeerKey4;
    fn v4(&self) -> Option<PeerKey4> {
        (self.family == FAMILY_IPV4).then_some(PeerKey4 {
            relay_addr: v4_of(&self.relay_addr),
            peer_addr: v4_of(&self.peer_addr),
            relay_port: self.relay_port,
            peer_port: self.peer_port,
        })
    }
}

/// Key of [`ALLOCATIONS4`]: [`ClientKey`] of an IPv4 client (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ClientKey4 {
    /// The client's address.
    pub client_addr: [u8; 4],
    /// The relay's listening address the client sends to.
    pub listener_addr: [u8; 4],
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The listening port, network byte order.
    pub listener_port: u16,
}

impl ClientKey4 {
    /// Builds a key from what the program read (host-order ports).
    #[inline(always)]
    pub const fn from_packet(
        client: &[u8; 16],
        client_port: u16,
        listener: &[u8; 16],
        listener_port: u16,
    ) -> Self {
        Self {
            client_addr: v4_of(client),
            listener_addr: v4_of(listener),
            client_port: client_port.to_be(),
            listener_port: listener_port.to_be(),
        }
    }
}

impl Narrow for ClientKey {
    type V4 = ClientKey4;
    fn v4(&self) -> Option<ClientKey4> {
        (self.family == FAMILY_IPV4).then_some(ClientKey4 {
            client_addr: v4_of(&self.client_addr),
            listener_addr: v4_of(&self.listener_addr),
            client_port: self.client_port,
            listener_port: self.listener_port,
        })
    }
}

/// Key of [`NEXT_HOPS4`]: an IPv4 destination address (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct NextHopKey4 {
    /// The destination address.
    pub addr: [u8; 4],
}

impl NextHopKey4 {
    /// Builds a key from what the program has (the rewrite's destination).
    #[inline(always)]
    pub const fn from_packet(addr: &[u8; 16]) -> Self {
        Self { addr: v4_of(addr) }
    }
}

impl Narrow for NextHopKey {
    type V4 = NextHopKey4;
    fn v4(&self) -> Option<NextHopKey4> {
        (self.family == FAMILY_IPV4).then_some(NextHopKey4 {
            addr: v4_of(&self.addr),
        })
    }
}
