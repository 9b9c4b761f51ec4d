//! The address attributes (RFC 8489 §14.1, §14.2): MAPPED-ADDRESS and its XOR-obfuscated
//! forms (XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS), ALTERNATE-SERVER, and
//! RFC 5780's RESPONSE-ORIGIN and OTHER-ADDRESS; with [`AddressFamily`], which the family
//! attributes and ADDRESS-ERROR-CODE carry too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Attr, AttrError, AttrType, be16, expect_len};
use crate::stun::{MAGIC_COOKIE, TransactionId};

/// Address family byte of the address attributes and of (REQUESTED|ADDITIONAL)-ADDRESS-FAMILY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressFamily(pub u8);

impl AddressFamily {
    pub const IPV4: AddressFamily = AddressFamily(0x01);
    pub const IPV6: AddressFamily = AddressFamily(0x02);

    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::IPV4,
            IpAddr::V6(_) => Self::IPV6,
        }
    }

    pub fn is_known(self) -> bool {
        self == Self::IPV4 || self == Self::IPV6
    }
}

fn address_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn xor_pad(tid: &TransactionId) -> [u8; 16] {
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(tid.as_bytes());
    pad
}

fn decode_address(
    attr: AttrType,
    value: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, AttrError> {
    if value.len() < 4 {
        return Err(AttrError::BadLength {
            attr,
            got: value.len(),
            expected: "8 (IPv4) or 20 (IPv6)",
        });
    }
    let pad = xor.map(xor_pad);
    let mut port = be16(&value[2..4]);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let family = AddressFamily(value[1]);
    match family {
        AddressFamily::IPV4 => {
            expect_len(attr, value, 8, "8 for IPv4")?;
            let mut ip = [value[4], value[5], value[6], value[7]];
            if let Some(pad) = pad {
                ip.iter_mut().zip(pad).for_each(|(b, p)| *b ^= p);
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        AddressFamily::IPV6 => {
            expect_len(attr, value, 20, "20 for IPv6")?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&value[4..20]);
            if let Some(pad) = pad {
                ip.iter_mut().zip(pad).for_each(|(b, p)| *b ^= p);
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        AddressFamily(family) => Err(AttrError::UnknownFamily { attr, family }),
    }
}

fn encode_address(addr: &SocketAddr, out: &mut [u8], xor: Option<&TransactionId>) {
    let pad = xor.map(xor_pad);
    out[0] = 0;
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = AddressFamily::IPV4.0;
            out[4..8].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[1] = AddressFamily::IPV6.0;
            out[4..20].copy_from_slice(&ip.octets());
        }
    }
    if let Some(pad) = pad {
        out[4..].iter_mut().zip(pad).for_each(|(b, p)| *b ^= p);
    }
}

macro_rules! address_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $xor:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError> {
                decode_address(Self::TYPE, value, if $xor { Some(tid) } else { None }).map($name)
            }
            fn value_len(&self) -> usize {
                address_len(&self.0)
            }
            fn encode_value(&self, out: &mut [u8], tid: &TransactionId) {
                encode_address(&self.0, out, if $xor { Some(tid) } else { None })
            }
        }
    };
}

address_attr!(
    /// MAPPED-ADDRESS (RFC 8489 §14.1): the reflexive address, unobfuscated, for RFC 3489 clients.
    MappedAddress, AttrType::MAPPED_ADDRESS, false
);
address_attr!(
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    XorMappedAddress, AttrType::XOR_MAPPED_ADDRESS, true
);
address_attr!(
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    XorPeerAddress, AttrType::XOR_PEER_ADDRESS, true
);
address_attr!(
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    XorRelayedAddress, AttrType::XOR_RELAYED_ADDRESS, true
);
address_attr!(
    /// ALTERNATE-SERVER (RFC 8489 §14.15).
    AlternateServer, AttrType::ALTERNATE_SERVER, false
);
address_attr!(
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    ResponseOrigin, AttrType::RESPONSE_ORIGIN, false
);
address_attr!(
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    OtherAddress, AttrType::OTHER_ADDRESS, false
);
