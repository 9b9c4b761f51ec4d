//! `LISTENERS`' key: a TURN listening address, or every address of a family.

use core::net::{IpAddr, SocketAddr};

use super::addr::{addr_bytes, addr_from, family_of};
#[cfg(doc)]
use super::{FAMILY_IPV4, FAMILY_IPV6, LISTENERS};

/// Key of [`LISTENERS`]: a TURN listening address; an unspecified `addr` matches every address
/// of the family.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ListenerKey {
    /// The listening address (all zero: any address of `family`).
    pub addr: [u8; 16],
    /// The listening port, network byte order.
    pub port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding.
    pub _pad: u8,
}

impl ListenerKey {
    /// Builds a key from a listening socket address (unspecified address: any of its family).
    pub fn new(listener: SocketAddr) -> Self {
        let ip = listener.ip().to_canonical();
        Self::from_packet(family_of(ip), addr_bytes(ip), listener.port())
    }

    /// Builds a key from what the program read (host-order port).
    #[inline(always)]
    pub const fn from_packet(family: u8, addr: [u8; 16], port: u16) -> Self {
        Self {
            addr,
            port: port.to_be(),
            family,
            _pad: 0,
        }
    }

    /// The listening address, or `None` if `family` is not a known value.
    pub fn addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.addr)
    }

    /// The listening port, host order.
    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}
