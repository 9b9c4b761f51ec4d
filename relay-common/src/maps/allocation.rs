//! `ALLOCATIONS`' key and value: a client's 5-tuple and its allocation's relayed addresses,
//! for Send indications.

use core::net::IpAddr;

use super::addr::{addr_bytes, same_family};
#[cfg(doc)]
use super::{ALLOCATIONS, FAMILY_IPV4};
use super::{FAMILY_IPV6, MixedFamilies};

/// Key of [`ALLOCATIONS`]: a client's 5-tuple over UDP (client and the listener it talks to).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ClientKey {
    /// The client's address.
    pub client_addr: [u8; 16],
    /// The relay's listening address the client sends to.
    pub listener_addr: [u8; 16],
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The listening port, network byte order.
    pub listener_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; client and listener share it.
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: [u8; 3],
}

impl ClientKey {
    /// The key of a client's 5-tuple (host-order ports).
    pub fn new(
        client: IpAddr,
        client_port: u16,
        listener: IpAddr,
        listener_port: u16,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(client, listener)?;
        Ok(Self::from_packet(
            family,
            addr_bytes(client),
            client_port,
            addr_bytes(listener),
            listener_port,
        ))
    }

    /// Builds a key from what the program read (host-order ports).
    #[inline(always)]
    pub const fn from_packet(
        family: u8,
        client: [u8; 16],
        client_port: u16,
        listener: [u8; 16],
        listener_port: u16,
    ) -> Self {
        Self {
            client_addr: client,
            listener_addr: listener,
            client_port: client_port.to_be(),
            listener_port: listener_port.to_be(),
            family,
            _pad: [0; 3],
        }
    }
}

/// Value of [`ALLOCATIONS`]: the allocation's relayed addresses, one per family (an RFC 8656
/// dual allocation has both); a port of 0 means none of that family.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct AllocationValue {
    /// The IPv4 relayed address (in the first 4 bytes), if `relay4_port` is not 0.
    pub relay4_addr: [u8; 16],
    /// The IPv6 relayed address, if `relay6_port` is not 0.
    pub relay6_addr: [u8; 16],
    /// The IPv4 relayed port, network byte order; 0: none.
    pub relay4_port: u16,
    /// The IPv6 relayed port, network byte order; 0: none.
    pub relay6_port: u16,
}

impl AllocationValue {
    /// The value of an allocation with these relayed addresses (at most one per family; a
    /// later one of the same family replaces an earlier one).
    pub fn new(relayed: &[core::net::SocketAddr]) -> Self {
        let mut v = Self {
            relay4_addr: [0; 16],
            relay6_addr: [0; 16],
            relay4_port: 0,
            relay6_port: 0,
        };
        for r in relayed {
            let ip = r.ip().to_canonical();
            if ip.is_ipv4() {
                v.relay4_addr = addr_bytes(ip);
                v.relay4_port = r.port().to_be();
            } else {
                v.relay6_addr = addr_bytes(ip);
                v.relay6_port = r.port().to_be();
            }
        }
        v
    }

    /// The relayed address of `family`, as (address bytes, host-order port), if there is one.
    #[inline(always)]
    pub const fn relayed(&self, family: u8) -> Option<([u8; 16], u16)> {
        let (addr, port) = if family == FAMILY_IPV6 {
            (self.relay6_addr, self.relay6_port)
        } else {
            (self.relay4_addr, self.relay4_port)
        };
        if port == 0 {
            None
        } else {
            Some((addr, u16::from_be(port)))
        }
    }
}
