//! `NEXT_HOPS`' key and value: how a packet to a destination address leaves (interface, MTU,
//! MACs), as userspace resolved it.

use core::net::IpAddr;

use super::addr::{addr_bytes, addr_from, family_of};
#[cfg(doc)]
use super::{FAMILY_IPV4, FAMILY_IPV6, NEXT_HOPS};

/// Key of [`NEXT_HOPS`]: a destination address the program sends to (a client's or a peer's).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct NextHopKey {
    /// The destination address (see the crate docs for the IPv4 layout).
    pub addr: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: [u8; 3],
}

impl NextHopKey {
    /// The key of a destination address (IPv4-mapped IPv6 addresses as IPv4).
    pub fn new(addr: IpAddr) -> Self {
        let ip = addr.to_canonical();
        Self::from_packet(family_of(ip), addr_bytes(ip))
    }

    /// Builds a key from what the program has (the rewrite's destination).
    #[inline(always)]
    pub const fn from_packet(family: u8, addr: [u8; 16]) -> Self {
        Self {
            addr,
            family,
            _pad: [0; 3],
        }
    }

    /// The destination address, or `None` if `family` is not a known value.
    pub fn addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.addr)
    }
}

/// Value of [`NEXT_HOPS`]: how a packet to the key's address leaves.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct NextHopValue {
    /// The egress interface's index, host byte order.
    pub ifindex: u32,
    /// The egress interface's MTU (largest IP packet), host byte order: a rewritten packet
    /// longer than this goes up instead (the kernel fragments or answers with ICMP).
    pub mtu: u32,
    /// The egress interface's MAC: the Ethernet source.
    pub smac: [u8; 6],
    /// The next hop's MAC (the gateway's, or the destination's own on a connected network):
    /// the Ethernet destination.
    pub dmac: [u8; 6],
}
