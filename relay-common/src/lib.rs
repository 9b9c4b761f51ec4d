//! Types shared by the XDP program (`relay-ebpf`) and userspace (`relay`'s dataplane).
//!
//! Every field that is a port or channel number is stored in **network byte order**, exactly as
//! it appears in packets, so the kernel compares and copies without swapping. Addresses are
//! 16 bytes: IPv6 as is, IPv4 in the first 4 bytes with the rest zero (`family` says which).
//! Build values with the constructors, which take host-order numbers and `core::net` addresses,
//! and read them back with the accessors; the raw fields are public for the kernel side.
//!
//! The `user` feature adds `aya::Pod` and `Debug` impls (and is the only part that needs `std`).

#![no_std]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `family` value for IPv4 (the Linux `AF_INET`).
pub const FAMILY_IPV4: u8 = 2;
/// `family` value for IPv6 (the Linux `AF_INET6`).
pub const FAMILY_IPV6: u8 = 10;

/// Key of the channel map: a ChannelData packet from `client` to `listener` on `channel`.
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
    /// The TURN channel number (0x4000-0x4FFF), network byte order.
    pub channel: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; client and listener share it.
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: u8,
}

/// Value of the channel map: where the channel's data goes, from which relayed address.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
// Debug only for userspace (and tests): the kernel side has no use for formatting code.
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
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; relay and peer share it.
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding.
    pub _pad: [u8; 3],
}

/// A family mismatch: the two addresses of a key or value must be both IPv4 or both IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixedFamilies;

impl core::fmt::Display for MixedFamilies {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the two addresses are of different families (IPv4 and IPv6)")
    }
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
        Ok(Self {
            client_addr: addr_bytes(client),
            listener_addr: addr_bytes(listener),
            client_port: client_port.to_be(),
            listener_port: listener_port.to_be(),
            channel: channel.to_be(),
            family,
            _pad: 0,
        })
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
    /// Builds a value from host-order ports.
    pub fn new(
        relay: IpAddr,
        relay_port: u16,
        peer: IpAddr,
        peer_port: u16,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(relay, peer)?;
        Ok(Self {
            relay_addr: addr_bytes(relay),
            peer_addr: addr_bytes(peer),
            relay_port: relay_port.to_be(),
            peer_port: peer_port.to_be(),
            family,
            _pad: [0; 3],
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

fn same_family(a: IpAddr, b: IpAddr) -> Result<u8, MixedFamilies> {
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Ok(FAMILY_IPV4),
        (IpAddr::V6(_), IpAddr::V6(_)) => Ok(FAMILY_IPV6),
        _ => Err(MixedFamilies),
    }
}

fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut out = [0; 16];
            out[..4].copy_from_slice(&v4.octets());
            out
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn addr_from(family: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

// SAFETY (both impls): the types are #[repr(C)], contain only integers and byte arrays, have
// explicit padding fields so no byte is uninitialised (ChannelKey: 16+16+2+2+2+1+1 = 40 bytes,
// ChannelValue: 16+16+2+2+1+3 = 40 bytes, both with 2-byte alignment), and every bit pattern is
// a valid value, which is what aya::Pod requires.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for ChannelKey {}

#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for ChannelValue {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use core::mem::{align_of, size_of};

    const V4_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    const V4_LISTENER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const V6_CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
    const V6_LISTENER: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(size_of::<ChannelKey>(), 40);
        assert_eq!(size_of::<ChannelValue>(), 40);
        assert_eq!(align_of::<ChannelKey>(), 2);
        assert_eq!(align_of::<ChannelValue>(), 2);
    }

    #[test]
    fn key_round_trips_v4_in_network_order() {
        let key = ChannelKey::new(V4_CLIENT, 50_000, V4_LISTENER, 3478, 0x4001).unwrap();
        assert_eq!(key.family, FAMILY_IPV4);
        assert_eq!(key.client_addr[..4], [198, 51, 100, 7]);
        assert_eq!(key.client_addr[4..], [0; 12]);
        // Raw fields hold the bytes as they are on the wire.
        assert_eq!(key.listener_port.to_ne_bytes(), 3478u16.to_be_bytes());
        assert_eq!(key.client_port.to_ne_bytes(), 50_000u16.to_be_bytes());
        assert_eq!(key.channel.to_ne_bytes(), [0x40, 0x01]);
        assert_eq!(key.client_addr(), Some(V4_CLIENT));
        assert_eq!(key.client_port(), 50_000);
        assert_eq!(key.listener_addr(), Some(V4_LISTENER));
        assert_eq!(key.listener_port(), 3478);
        assert_eq!(key.channel(), 0x4001);
    }

    #[test]
    fn key_round_trips_v6() {
        let key = ChannelKey::new(V6_CLIENT, 1, V6_LISTENER, 65535, 0x4FFF).unwrap();
        assert_eq!(key.family, FAMILY_IPV6);
        assert_eq!(key.client_addr(), Some(V6_CLIENT));
        assert_eq!(key.listener_addr(), Some(V6_LISTENER));
        assert_eq!(key.client_port(), 1);
        assert_eq!(key.listener_port(), 65535);
        assert_eq!(key.channel(), 0x4FFF);
    }

    #[test]
    fn value_round_trips_both_families() {
        let v = ChannelValue::new(V4_LISTENER, 49_152, V4_CLIENT, 9).unwrap();
        assert_eq!(v.family, FAMILY_IPV4);
        assert_eq!(v.relay_port.to_ne_bytes(), 49_152u16.to_be_bytes());
        assert_eq!(v.relay_addr(), Some(V4_LISTENER));
        assert_eq!(v.relay_port(), 49_152);
        assert_eq!(v.peer_addr(), Some(V4_CLIENT));
        assert_eq!(v.peer_port(), 9);

        let v = ChannelValue::new(V6_LISTENER, 60_000, V6_CLIENT, 443).unwrap();
        assert_eq!(v.family, FAMILY_IPV6);
        assert_eq!(v.relay_addr(), Some(V6_LISTENER));
        assert_eq!(v.peer_addr(), Some(V6_CLIENT));
        assert_eq!((v.relay_port(), v.peer_port()), (60_000, 443));
    }

    #[test]
    fn mixed_families_are_refused() {
        assert_eq!(
            ChannelKey::new(V4_CLIENT, 1, V6_LISTENER, 2, 0x4000),
            Err(MixedFamilies)
        );
        assert_eq!(
            ChannelValue::new(V6_LISTENER, 1, V4_CLIENT, 2),
            Err(MixedFamilies)
        );
    }

    #[test]
    fn unknown_family_reads_as_none() {
        let mut key = ChannelKey::new(V4_CLIENT, 1, V4_LISTENER, 2, 0x4000).unwrap();
        key.family = 0;
        assert_eq!(key.client_addr(), None);
        assert_eq!(key.listener_addr(), None);
    }
}
