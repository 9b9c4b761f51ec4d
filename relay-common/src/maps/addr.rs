//! The crate's 16-byte address layout (IPv6 as is, IPv4 in the first 4 bytes) and the family
//! values, to and from `core::net` addresses.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{FAMILY_IPV4, FAMILY_IPV6, MixedFamilies};

pub(super) fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => FAMILY_IPV4,
        IpAddr::V6(_) => FAMILY_IPV6,
    }
}

pub(super) fn same_family(a: IpAddr, b: IpAddr) -> Result<u8, MixedFamilies> {
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Ok(FAMILY_IPV4),
        (IpAddr::V6(_), IpAddr::V6(_)) => Ok(FAMILY_IPV6),
        _ => Err(MixedFamilies),
    }
}

/// An address in the crate's 16-byte layout: IPv6 as is, IPv4 in the first 4 bytes.
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut out = [0; 16];
            out[..4].copy_from_slice(&v4.octets());
            out
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address that `bytes` holds for `family`, or `None` for an unknown family.
pub fn addr_from(family: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}
