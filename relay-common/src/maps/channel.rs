//! `CLIENT_TO_PEER`'s key and value (ChannelData from a client, to its peer), and the four
//! entries of one channel in both directions.

use core::net::{IpAddr, SocketAddr};

use super::addr::{addr_bytes, addr_from, same_family};
#[cfg(doc)]
use super::{CHANNEL_STATS, CLIENT_TO_PEER, FAMILY_IPV4, FAMILY_IPV6, PEER_TO_CLIENT};
use super::{MixedFamilies, PeerKey, PeerValue};

/// Key of [`CLIENT_TO_PEER`]: a ChannelData packet from `client` to `listener` on `channel`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
// Debug only for userspace (and tests): the kernel side has no use for formatting code.
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelKey {
    /// The client's address (see the crate docs for the IPv4 layout).
    pub client_addr: [u8; 16],
    /// The relay's listening address the client sends to.
    pub listener_addr: [u8; 16],
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The relay's listening port, network byte order.
    pub listener_port: u16,
    /// The TURN channel number (0x4000-0x7FFF), network byte order.
    pub channel: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; client and listener share it.
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: u8,
}

/// Value of [`CLIENT_TO_PEER`]: where the channel's data goes, from which relayed address.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelValue {
    /// The allocation's relayed address (the source of packets sent to the peer).
    pub relay_addr: [u8; 16],
    /// The peer's address.
    pub peer_addr: [u8; 16],
    /// The relayed port, network byte order.
    pub relay_port: u16,
    /// The peer's port, network byte order.
    pub peer_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; relay and peer share it (it may differ from the key's).
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding.
    pub _pad: [u8; 3],
    /// The channel's slot in [`CHANNEL_STATS`], host byte order (it is an index, not wire data).
    pub counter: u32,
}

impl ChannelKey {
    /// Builds a key from host-order ports and channel number.
    pub fn new(
        client: IpAddr,
        client_port: u16,
        listener: IpAddr,
        listener_port: u16,
        channel: u16,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(client, listener)?;
        Ok(Self::from_packet(
            family,
            addr_bytes(client),
            client_port,
            addr_bytes(listener),
            listener_port,
            channel,
        ))
    }

    /// Builds a key from what the program read: addresses in the crate's 16-byte layout,
    /// host-order ports and channel.
    #[inline(always)]
    pub const fn from_packet(
        family: u8,
        client: [u8; 16],
        client_port: u16,
        listener: [u8; 16],
        listener_port: u16,
        channel: u16,
    ) -> Self {
        Self {
            client_addr: client,
            listener_addr: listener,
            client_port: client_port.to_be(),
            listener_port: listener_port.to_be(),
            channel: channel.to_be(),
            family,
            _pad: 0,
        }
    }

    /// The client's address, or `None` if `family` is not a known value.
    pub fn client_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.client_addr)
    }

    /// The client's port, host order.
    pub fn client_port(&self) -> u16 {
        u16::from_be(self.client_port)
    }

    /// The listening address, or `None` if `family` is not a known value.
    pub fn listener_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.listener_addr)
    }

    /// The listening port, host order.
    pub fn listener_port(&self) -> u16 {
        u16::from_be(self.listener_port)
    }

    /// The channel number, host order.
    pub fn channel(&self) -> u16 {
        u16::from_be(self.channel)
    }
}

impl ChannelValue {
    /// Builds a value from host-order ports and the channel's counter slot.
    pub fn new(
        relay: IpAddr,
        relay_port: u16,
        peer: IpAddr,
        peer_port: u16,
        counter: u32,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(relay, peer)?;
        Ok(Self {
            relay_addr: addr_bytes(relay),
            peer_addr: addr_bytes(peer),
            relay_port: relay_port.to_be(),
            peer_port: peer_port.to_be(),
            family,
            _pad: [0; 3],
            counter,
        })
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

/// The four map entries of one channel: both directions' keys and values.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelEntries {
    /// Key of [`CLIENT_TO_PEER`].
    pub channel_key: ChannelKey,
    /// Value of [`CLIENT_TO_PEER`].
    pub channel_value: ChannelValue,
    /// Key of [`PEER_TO_CLIENT`].
    pub peer_key: PeerKey,
    /// Value of [`PEER_TO_CLIENT`].
    pub peer_value: PeerValue,
}

impl ChannelEntries {
    /// The entries for a channel: ChannelData from `client` to `listener` on `channel` goes from
    /// `relay` to `peer`, and datagrams from `peer` to `relay` go back from `listener` to
    /// `client`. IPv4-mapped IPv6 addresses are taken as the IPv4 addresses they are.
    pub fn new(
        client: SocketAddr,
        listener: SocketAddr,
        channel: u16,
        relay: SocketAddr,
        peer: SocketAddr,
        counter: u32,
    ) -> Result<Self, MixedFamilies> {
        let (client_ip, listener_ip) = (client.ip().to_canonical(), listener.ip().to_canonical());
        let (relay_ip, peer_ip) = (relay.ip().to_canonical(), peer.ip().to_canonical());
        Ok(Self {
            channel_key: ChannelKey::new(
                client_ip,
                client.port(),
                listener_ip,
                listener.port(),
                channel,
            )?,
            channel_value: ChannelValue::new(
                relay_ip,
                relay.port(),
                peer_ip,
                peer.port(),
                counter,
            )?,
            peer_key: PeerKey::new(relay_ip, relay.port(), peer_ip, peer.port())?,
            peer_value: PeerValue::new(
                listener_ip,
                listener.port(),
                client_ip,
                client.port(),
                channel,
                counter,
            )?,
        })
    }
}
