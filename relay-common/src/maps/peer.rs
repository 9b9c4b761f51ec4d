//! `PEER_TO_CLIENT`'s key and value: a peer's datagrams to a relayed address, to the client of
//! its channel, or of its permission (port 0).

use core::net::IpAddr;

use super::MixedFamilies;
use super::addr::{addr_bytes, addr_from, same_family};
#[cfg(doc)]
use super::{CHANNEL_STATS, FAMILY_IPV4, FAMILY_IPV6, PEER_TO_CLIENT};

/// Key of [`PEER_TO_CLIENT`]: a datagram from `peer` to the relayed address `relay`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct PeerKey {
    /// The allocation's relayed address (where the peer sends to).
    pub relay_addr: [u8; 16],
    /// The peer's address.
    pub peer_addr: [u8; 16],
    /// The relayed port, network byte order.
    pub relay_port: u16,
    /// The peer's port, network byte order.
    pub peer_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; relay and peer share it.
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: [u8; 3],
}

/// Value of [`PEER_TO_CLIENT`]: the client and channel a peer's datagrams go to, wrapped in
/// ChannelData and sent from the listener the client talks to.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct PeerValue {
    /// The listening address the client sent its ChannelData to (the source towards it).
    pub listener_addr: [u8; 16],
    /// The client's address.
    pub client_addr: [u8; 16],
    /// The listening port, network byte order.
    pub listener_port: u16,
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The TURN channel number, network byte order.
    pub channel: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; listener and client share it (it may differ from the
    /// key's).
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding.
    pub _pad: u8,
    /// The channel's slot in [`CHANNEL_STATS`], host byte order.
    pub counter: u32,
}

impl PeerKey {
    /// Builds a key from host-order ports.
    pub fn new(
        relay: IpAddr,
        relay_port: u16,
        peer: IpAddr,
        peer_port: u16,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(relay, peer)?;
        Ok(Self::from_packet(
            family,
            addr_bytes(relay),
            relay_port,
            addr_bytes(peer),
            peer_port,
        ))
    }

    /// Builds a key from what the program read (host-order ports).
    #[inline(always)]
    pub const fn from_packet(
        family: u8,
        relay: [u8; 16],
        relay_port: u16,
        peer: [u8; 16],
        peer_port: u16,
    ) -> Self {
        Self {
            relay_addr: relay,
            peer_addr: peer,
            relay_port: relay_port.to_be(),
            peer_port: peer_port.to_be(),
            family,
            _pad: [0; 3],
        }
    }

    /// The key of a permission: the relayed address and the permitted peer IP, port 0 (a
    /// permission covers every port of the IP, RFC 8656 §9).
    pub fn permission(relay: IpAddr, relay_port: u16, peer: IpAddr) -> Result<Self, MixedFamilies> {
        Self::new(relay, relay_port, peer, 0)
    }

    /// [`PeerKey::permission`] from what the program read.
    #[inline(always)]
    pub const fn permission_from_packet(
        family: u8,
        relay: [u8; 16],
        relay_port: u16,
        peer: [u8; 16],
    ) -> Self {
        Self::from_packet(family, relay, relay_port, peer, 0)
    }

    /// The relayed address, or `None` if `family` is not a known value.
    pub fn relay_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.relay_addr)
    }

    /// The relayed port, host order.
    pub fn relay_port(&self) -> u16 {
        u16::from_be(self.relay_port)
    }

    /// The peer's address, or `None` if `family` is not a known value.
    pub fn peer_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.peer_addr)
    }

    /// The peer's port, host order.
    pub fn peer_port(&self) -> u16 {
        u16::from_be(self.peer_port)
    }
}

impl PeerValue {
    /// Builds a value from host-order ports and channel number, and the counter slot.
    pub fn new(
        listener: IpAddr,
        listener_port: u16,
        client: IpAddr,
        client_port: u16,
        channel: u16,
        counter: u32,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(listener, client)?;
        Ok(Self {
            listener_addr: addr_bytes(listener),
            client_addr: addr_bytes(client),
            listener_port: listener_port.to_be(),
            client_port: client_port.to_be(),
            channel: channel.to_be(),
            family,
            _pad: 0,
            counter,
        })
    }

    /// The listening address, or `None` if `family` is not a known value.
    pub fn listener_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.listener_addr)
    }

    /// The listening port, host order.
    pub fn listener_port(&self) -> u16 {
        u16::from_be(self.listener_port)
    }

    /// The client's address, or `None` if `family` is not a known value.
    pub fn client_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.client_addr)
    }

    /// The client's port, host order.
    pub fn client_port(&self) -> u16 {
        u16::from_be(self.client_port)
    }

    /// The channel number, host order.
    pub fn channel(&self) -> u16 {
        u16::from_be(self.channel)
    }
}
