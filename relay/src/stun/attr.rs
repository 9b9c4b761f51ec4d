//! Attributes: one type per attribute, each implementing [`Attr`], and [`Attribute`], the sum of
//! them all for generic iteration and re-encoding.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{MAGIC_COOKIE, TransactionId};

/// A 16-bit attribute type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

impl AttrType {
    pub const MAPPED_ADDRESS: AttrType = AttrType(0x0001);
    pub const CHANGE_REQUEST: AttrType = AttrType(0x0003);
    pub const USERNAME: AttrType = AttrType(0x0006);
    pub const MESSAGE_INTEGRITY: AttrType = AttrType(0x0008);
    pub const ERROR_CODE: AttrType = AttrType(0x0009);
    pub const UNKNOWN_ATTRIBUTES: AttrType = AttrType(0x000A);
    pub const CHANNEL_NUMBER: AttrType = AttrType(0x000C);
    pub const LIFETIME: AttrType = AttrType(0x000D);
    pub const XOR_PEER_ADDRESS: AttrType = AttrType(0x0012);
    pub const DATA: AttrType = AttrType(0x0013);
    pub const REALM: AttrType = AttrType(0x0014);
    pub const NONCE: AttrType = AttrType(0x0015);
    pub const XOR_RELAYED_ADDRESS: AttrType = AttrType(0x0016);
    pub const REQUESTED_ADDRESS_FAMILY: AttrType = AttrType(0x0017);
    pub const EVEN_PORT: AttrType = AttrType(0x0018);
    pub const REQUESTED_TRANSPORT: AttrType = AttrType(0x0019);
    pub const DONT_FRAGMENT: AttrType = AttrType(0x001A);
    pub const MESSAGE_INTEGRITY_SHA256: AttrType = AttrType(0x001C);
    pub const PASSWORD_ALGORITHM: AttrType = AttrType(0x001D);
    pub const USERHASH: AttrType = AttrType(0x001E);
    pub const XOR_MAPPED_ADDRESS: AttrType = AttrType(0x0020);
    pub const RESERVATION_TOKEN: AttrType = AttrType(0x0022);
    pub const PRIORITY: AttrType = AttrType(0x0024);
    pub const USE_CANDIDATE: AttrType = AttrType(0x0025);
    pub const PADDING: AttrType = AttrType(0x0026);
    pub const RESPONSE_PORT: AttrType = AttrType(0x0027);
    pub const CONNECTION_ID: AttrType = AttrType(0x002A);
    pub const ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8000);
    pub const ADDRESS_ERROR_CODE: AttrType = AttrType(0x8001);
    pub const PASSWORD_ALGORITHMS: AttrType = AttrType(0x8002);
    pub const ALTERNATE_DOMAIN: AttrType = AttrType(0x8003);
    pub const ICMP: AttrType = AttrType(0x8004);
    pub const SOFTWARE: AttrType = AttrType(0x8022);
    pub const ALTERNATE_SERVER: AttrType = AttrType(0x8023);
    pub const FINGERPRINT: AttrType = AttrType(0x8028);
    pub const ICE_CONTROLLED: AttrType = AttrType(0x8029);
    pub const ICE_CONTROLLING: AttrType = AttrType(0x802A);
    pub const RESPONSE_ORIGIN: AttrType = AttrType(0x802B);
    pub const OTHER_ADDRESS: AttrType = AttrType(0x802C);

    /// Types 0x0000–0x7FFF must be understood by the receiver (RFC 8489 §14).
    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// Whether this codec knows the attribute.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            AttrType::MAPPED_ADDRESS => "MAPPED-ADDRESS",
            AttrType::CHANGE_REQUEST => "CHANGE-REQUEST",
            AttrType::USERNAME => "USERNAME",
            AttrType::MESSAGE_INTEGRITY => "MESSAGE-INTEGRITY",
            AttrType::ERROR_CODE => "ERROR-CODE",
            AttrType::UNKNOWN_ATTRIBUTES => "UNKNOWN-ATTRIBUTES",
            AttrType::CHANNEL_NUMBER => "CHANNEL-NUMBER",
            AttrType::LIFETIME => "LIFETIME",
            AttrType::XOR_PEER_ADDRESS => "XOR-PEER-ADDRESS",
            AttrType::DATA => "DATA",
            AttrType::REALM => "REALM",
            AttrType::NONCE => "NONCE",
            AttrType::XOR_RELAYED_ADDRESS => "XOR-RELAYED-ADDRESS",
            AttrType::REQUESTED_ADDRESS_FAMILY => "REQUESTED-ADDRESS-FAMILY",
            AttrType::EVEN_PORT => "EVEN-PORT",
            AttrType::REQUESTED_TRANSPORT => "REQUESTED-TRANSPORT",
            AttrType::DONT_FRAGMENT => "DONT-FRAGMENT",
            AttrType::MESSAGE_INTEGRITY_SHA256 => "MESSAGE-INTEGRITY-SHA256",
            AttrType::PASSWORD_ALGORITHM => "PASSWORD-ALGORITHM",
            AttrType::USERHASH => "USERHASH",
            AttrType::XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS",
            AttrType::RESERVATION_TOKEN => "RESERVATION-TOKEN",
            AttrType::PRIORITY => "PRIORITY",
            AttrType::USE_CANDIDATE => "USE-CANDIDATE",
            AttrType::PADDING => "PADDING",
            AttrType::RESPONSE_PORT => "RESPONSE-PORT",
            AttrType::CONNECTION_ID => "CONNECTION-ID",
            AttrType::ADDITIONAL_ADDRESS_FAMILY => "ADDITIONAL-ADDRESS-FAMILY",
            AttrType::ADDRESS_ERROR_CODE => "ADDRESS-ERROR-CODE",
            AttrType::PASSWORD_ALGORITHMS => "PASSWORD-ALGORITHMS",
            AttrType::ALTERNATE_DOMAIN => "ALTERNATE-DOMAIN",
            AttrType::ICMP => "ICMP",
            AttrType::SOFTWARE => "SOFTWARE",
            AttrType::ALTERNATE_SERVER => "ALTERNATE-SERVER",
            AttrType::FINGERPRINT => "FINGERPRINT",
            AttrType::ICE_CONTROLLED => "ICE-CONTROLLED",
            AttrType::ICE_CONTROLLING => "ICE-CONTROLLING",
            AttrType::RESPONSE_ORIGIN => "RESPONSE-ORIGIN",
            AttrType::OTHER_ADDRESS => "OTHER-ADDRESS",
            _ => return None,
        })
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{:#06x}", self.0),
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why an attribute's value could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error("{attr}: value is {got} bytes, expected {expected}")]
    BadLength {
        attr: AttrType,
        got: usize,
        expected: &'static str,
    },
    #[error("{attr}: unknown address family {family:#04x}")]
    UnknownFamily { attr: AttrType, family: u8 },
    #[error("{attr}: value is not UTF-8")]
    NotUtf8 { attr: AttrType },
    #[error("{attr}: value is longer than {max} bytes")]
    TooLong { attr: AttrType, max: usize },
    #[error("{attr}: {what}")]
    Invalid { attr: AttrType, what: &'static str },
}

/// One attribute type: how its value decodes from and encodes to the wire.
///
/// `tid` is the message's transaction id, which the XOR address attributes mix in.
pub trait Attr<'a>: Sized {
    const TYPE: AttrType;
    /// Decodes the value (without the 4-byte attribute header or padding).
    fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError>;
    /// Length of the encoded value, without header or padding.
    fn value_len(&self) -> usize;
    /// Writes the value into `out`, whose length is exactly [`Attr::value_len`].
    fn encode_value(&self, out: &mut [u8], tid: &TransactionId);
    /// Rejects values that cannot be put on the wire (too long for the 16-bit length, etc).
    fn check_encodable(&self) -> Result<(), AttrError> {
        if self.value_len() > 0xFFFF {
            return Err(AttrError::TooLong {
                attr: Self::TYPE,
                max: 0xFFFF,
            });
        }
        Ok(())
    }
}

fn expect_len(
    attr: AttrType,
    value: &[u8],
    len: usize,
    expected: &'static str,
) -> Result<(), AttrError> {
    if value.len() == len {
        Ok(())
    } else {
        Err(AttrError::BadLength {
            attr,
            got: value.len(),
            expected,
        })
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

// ---------------------------------------------------------------------------------------------
// Addresses (RFC 8489 §14.1, §14.2)

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

// ---------------------------------------------------------------------------------------------
// Text (UTF-8) attributes

macro_rules! text_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> $name<'a> {
            /// Longest value accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            pub fn as_str(&self) -> &'a str {
                self.0
            }
        }

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                if value.len() > Self::MAX_LEN {
                    return Err(AttrError::TooLong { attr: Self::TYPE, max: Self::MAX_LEN });
                }
                std::str::from_utf8(value).map($name).map_err(|_| AttrError::NotUtf8 { attr: Self::TYPE })
            }
            fn value_len(&self) -> usize {
                self.0.len()
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(self.0.as_bytes());
            }
            fn check_encodable(&self) -> Result<(), AttrError> {
                if self.0.len() > Self::MAX_LEN {
                    return Err(AttrError::TooLong { attr: Self::TYPE, max: Self::MAX_LEN });
                }
                Ok(())
            }
        }
    };
}

text_attr!(
    /// USERNAME (RFC 8489 §14.3). RFC 8489 says fewer than 509 bytes, RFC 5389 fewer than 513:
    /// the older, larger bound is accepted.
    Username, AttrType::USERNAME, 512
);
text_attr!(
    /// REALM (RFC 8489 §14.9): fewer than 128 characters, at most 763 bytes.
    Realm, AttrType::REALM, 763
);
text_attr!(
    /// NONCE (RFC 8489 §14.10): fewer than 128 characters, at most 763 bytes.
    Nonce, AttrType::NONCE, 763
);
text_attr!(
    /// SOFTWARE (RFC 8489 §14.14): fewer than 128 characters, at most 763 bytes.
    Software, AttrType::SOFTWARE, 763
);
text_attr!(
    /// ALTERNATE-DOMAIN (RFC 8489 §14.16): a domain name, at most 255 bytes.
    AlternateDomain, AttrType::ALTERNATE_DOMAIN, 255
);

// ---------------------------------------------------------------------------------------------
// Opaque bytes, fixed-size and integer attributes

macro_rules! bytes_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a [u8]);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                Ok($name(value))
            }
            fn value_len(&self) -> usize {
                self.0.len()
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(self.0);
            }
        }
    };
}

bytes_attr!(
    /// DATA (RFC 8656 §18.4): the application data of Send and Data indications.
    Data, AttrType::DATA
);
bytes_attr!(
    /// PADDING (RFC 5780 §7.6).
    Padding, AttrType::PADDING
);

macro_rules! array_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $n:literal, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub [u8; $n]);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                let arr = <[u8; $n]>::try_from(value).map_err(|_| AttrError::BadLength {
                    attr: Self::TYPE,
                    got: value.len(),
                    expected: $expected,
                })?;
                Ok($name(arr))
            }
            fn value_len(&self) -> usize {
                $n
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(&self.0);
            }
        }
    };
}

array_attr!(
    /// USERHASH (RFC 8489 §14.4): SHA-256(username ":" realm).
    UserHash, AttrType::USERHASH, 32, "32"
);
array_attr!(
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1. [`super::Encoder::message_integrity`]
    /// computes it; this type is the received value.
    MessageIntegrity, AttrType::MESSAGE_INTEGRITY, 20, "20"
);
array_attr!(
    /// RESERVATION-TOKEN (RFC 8656 §18.9).
    ReservationToken, AttrType::RESERVATION_TOKEN, 8, "8"
);

macro_rules! int_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $int:ty, $n:literal, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub $int);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                let arr = <[u8; $n]>::try_from(value).map_err(|_| AttrError::BadLength {
                    attr: Self::TYPE,
                    got: value.len(),
                    expected: $expected,
                })?;
                Ok($name(<$int>::from_be_bytes(arr)))
            }
            fn value_len(&self) -> usize {
                $n
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(&self.0.to_be_bytes());
            }
        }
    };
}

int_attr!(
    /// LIFETIME (RFC 8656 §18.2), seconds.
    Lifetime, AttrType::LIFETIME, u32, 4, "4"
);
int_attr!(
    /// PRIORITY (RFC 8445 §16.1).
    Priority, AttrType::PRIORITY, u32, 4, "4"
);
int_attr!(
    /// CONNECTION-ID (RFC 6062 §6.2.1).
    ConnectionId, AttrType::CONNECTION_ID, u32, 4, "4"
);
int_attr!(
    /// FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message XOR 0x5354554e.
    /// [`super::Encoder::fingerprint`] computes it; this type is the received value.
    Fingerprint, AttrType::FINGERPRINT, u32, 4, "4"
);
int_attr!(
    /// ICE-CONTROLLED (RFC 8445 §16.1): tie-breaker.
    IceControlled, AttrType::ICE_CONTROLLED, u64, 8, "8"
);
int_attr!(
    /// ICE-CONTROLLING (RFC 8445 §16.1): tie-breaker.
    IceControlling, AttrType::ICE_CONTROLLING, u64, 8, "8"
);

macro_rules! flag_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name;

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                expect_len(Self::TYPE, value, 0, "0")?;
                Ok($name)
            }
            fn value_len(&self) -> usize {
                0
            }
            fn encode_value(&self, _: &mut [u8], _: &TransactionId) {}
        }
    };
}

flag_attr!(
    /// DONT-FRAGMENT (RFC 8656 §18.8).
    DontFragment, AttrType::DONT_FRAGMENT
);
flag_attr!(
    /// USE-CANDIDATE (RFC 8445 §16.1).
    UseCandidate, AttrType::USE_CANDIDATE
);

// ---------------------------------------------------------------------------------------------
// Structured attributes

/// The value ERROR-CODE (RFC 8489 §14.8) and ADDRESS-ERROR-CODE (RFC 8656 §18.14) share: a
/// first byte (reserved, or the address family), a reserved byte, the class (hundreds, 3 bits)
/// and number of the code, then a UTF-8 reason phrase of at most 763 bytes.
struct CodeAndReason<'a> {
    first: u8,
    code: u16,
    reason: &'a str,
}

impl<'a> CodeAndReason<'a> {
    const MAX_REASON: usize = 763;

    fn decode(attr: AttrType, value: &'a [u8]) -> Result<Self, AttrError> {
        if value.len() < 4 {
            return Err(AttrError::BadLength {
                attr,
                got: value.len(),
                expected: "at least 4",
            });
        }
        let code = join_code(attr, value[2], value[3])?;
        let reason = &value[4..];
        if reason.len() > Self::MAX_REASON {
            return Err(AttrError::TooLong {
                attr,
                max: Self::MAX_REASON,
            });
        }
        Ok(Self {
            first: value[0],
            code,
            reason: std::str::from_utf8(reason).map_err(|_| AttrError::NotUtf8 { attr })?,
        })
    }

    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }

    fn encode(&self, attr: AttrType, out: &mut [u8]) {
        let (class, number) = split_code(attr, self.code).unwrap_or((5, 0));
        out[..4].copy_from_slice(&[self.first, 0, class, number]);
        out[4..].copy_from_slice(self.reason.as_bytes());
    }

    fn check_encodable(&self, attr: AttrType) -> Result<(), AttrError> {
        split_code(attr, self.code)?;
        if self.reason.len() > Self::MAX_REASON {
            return Err(AttrError::TooLong {
                attr,
                max: Self::MAX_REASON,
            });
        }
        Ok(())
    }
}

/// Splits an error code into the class (hundreds) and number fields, rejecting what the 3-bit
/// class cannot carry. RFC 8489 §14.8: class 3–6, number 0–99.
fn split_code(attr: AttrType, code: u16) -> Result<(u8, u8), AttrError> {
    if !(300..700).contains(&code) {
        return Err(AttrError::Invalid {
            attr,
            what: "error code must be 300..=699",
        });
    }
    Ok(((code / 100) as u8, (code % 100) as u8))
}

fn join_code(attr: AttrType, class: u8, number: u8) -> Result<u16, AttrError> {
    let class = class & 0x07;
    if !(3..=6).contains(&class) || number >= 100 {
        return Err(AttrError::Invalid {
            attr,
            what: "error class must be 3..=6 and number 0..=99",
        });
    }
    Ok(u16::from(class) * 100 + u16::from(number))
}

/// ERROR-CODE (RFC 8489 §14.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    pub code: u16,
    pub reason: &'a str,
}

impl<'a> ErrorCode<'a> {
    pub const fn new(code: u16, reason: &'a str) -> Self {
        Self { code, reason }
    }

    fn value(&self) -> CodeAndReason<'a> {
        CodeAndReason {
            first: 0,
            code: self.code,
            reason: self.reason,
        }
    }
}

impl<'a> Attr<'a> for ErrorCode<'a> {
    const TYPE: AttrType = AttrType::ERROR_CODE;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let v = CodeAndReason::decode(Self::TYPE, value)?;
        Ok(Self::new(v.code, v.reason))
    }
    fn value_len(&self) -> usize {
        self.value().value_len()
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        self.value().encode(Self::TYPE, out);
    }
    fn check_encodable(&self) -> Result<(), AttrError> {
        self.value().check_encodable(Self::TYPE)
    }
}

/// ADDRESS-ERROR-CODE (RFC 8656 §18.14): why one family of a dual allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressErrorCode<'a> {
    pub family: AddressFamily,
    pub code: u16,
    pub reason: &'a str,
}

impl<'a> AddressErrorCode<'a> {
    fn value(&self) -> CodeAndReason<'a> {
        CodeAndReason {
            first: self.family.0,
            code: self.code,
            reason: self.reason,
        }
    }
}

impl<'a> Attr<'a> for AddressErrorCode<'a> {
    const TYPE: AttrType = AttrType::ADDRESS_ERROR_CODE;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let v = CodeAndReason::decode(Self::TYPE, value)?;
        Ok(Self {
            family: AddressFamily(v.first),
            code: v.code,
            reason: v.reason,
        })
    }
    fn value_len(&self) -> usize {
        self.value().value_len()
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        self.value().encode(Self::TYPE, out);
    }
    fn check_encodable(&self) -> Result<(), AttrError> {
        self.value().check_encodable(Self::TYPE)
    }
}

/// A bounded list of attribute types, as carried by UNKNOWN-ATTRIBUTES. No allocation: a
/// request naming more unknown comprehension-required attributes than fit is answered with the
/// first [`AttrTypeList::CAPACITY`].
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AttrTypeList {
    types: [u16; Self::CAPACITY],
    len: u8,
}

impl AttrTypeList {
    pub const CAPACITY: usize = 16;

    /// Adds `t` unless it is already listed; returns false when the list is full.
    pub fn push(&mut self, t: AttrType) -> bool {
        if self.iter().any(|x| x == t) {
            return true;
        }
        if usize::from(self.len) == Self::CAPACITY {
            return false;
        }
        self.types[usize::from(self.len)] = t.0;
        self.len += 1;
        true
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = AttrType> + '_ {
        self.types[..self.len()].iter().map(|&t| AttrType(t))
    }
}

impl fmt::Debug for AttrTypeList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<AttrType> for AttrTypeList {
    fn from_iter<I: IntoIterator<Item = AttrType>>(iter: I) -> Self {
        let mut list = Self::default();
        for t in iter {
            if !list.push(t) {
                break;
            }
        }
        list
    }
}

/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAttributes(pub AttrTypeList);

impl<'a> Attr<'a> for UnknownAttributes {
    const TYPE: AttrType = AttrType::UNKNOWN_ATTRIBUTES;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        if !value.len().is_multiple_of(2) {
            return Err(AttrError::BadLength {
                attr: Self::TYPE,
                got: value.len(),
                expected: "a multiple of 2",
            });
        }
        Ok(Self(
            value.chunks_exact(2).map(|c| AttrType(be16(c))).collect(),
        ))
    }
    fn value_len(&self) -> usize {
        2 * self.0.len()
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        for (chunk, t) in out.chunks_exact_mut(2).zip(self.0.iter()) {
            chunk.copy_from_slice(&t.0.to_be_bytes());
        }
    }
}

/// CHANNEL-NUMBER (RFC 8656 §18.1). The codec carries any value; whether it is a valid channel
/// (0x4000–0x7FFF, RFC 5766's range, which deployed clients use) is the server's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelNumber(pub u16);

impl<'a> Attr<'a> for ChannelNumber {
    const TYPE: AttrType = AttrType::CHANNEL_NUMBER;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        expect_len(Self::TYPE, value, 4, "4")?;
        Ok(Self(be16(value)))
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        out[..2].copy_from_slice(&self.0.to_be_bytes());
        out[2..4].fill(0);
    }
}

macro_rules! family_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub AddressFamily);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                expect_len(Self::TYPE, value, 4, "4")?;
                Ok($name(AddressFamily(value[0])))
            }
            fn value_len(&self) -> usize {
                4
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(&[self.0.0, 0, 0, 0]);
            }
        }
    };
}

family_attr!(
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6). An unknown family is carried as is: the
    /// server answers 440.
    RequestedAddressFamily, AttrType::REQUESTED_ADDRESS_FAMILY
);
family_attr!(
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11): asks for a second, IPv6, relayed address.
    AdditionalAddressFamily, AttrType::ADDITIONAL_ADDRESS_FAMILY
);

/// EVEN-PORT (RFC 8656 §18.7): an even relayed port, and with `reserve`, the next one kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvenPort {
    pub reserve: bool,
}

impl<'a> Attr<'a> for EvenPort {
    const TYPE: AttrType = AttrType::EVEN_PORT;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        expect_len(Self::TYPE, value, 1, "1")?;
        Ok(Self {
            reserve: value[0] & 0x80 != 0,
        })
    }
    fn value_len(&self) -> usize {
        1
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        out[0] = if self.reserve { 0x80 } else { 0 };
    }
}

/// REQUESTED-TRANSPORT (RFC 8656 §18.10): an IANA protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedTransport(pub u8);

impl RequestedTransport {
    pub const UDP: RequestedTransport = RequestedTransport(17);
    pub const TCP: RequestedTransport = RequestedTransport(6);
}

impl<'a> Attr<'a> for RequestedTransport {
    const TYPE: AttrType = AttrType::REQUESTED_TRANSPORT;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        expect_len(Self::TYPE, value, 4, "4")?;
        Ok(Self(value[0]))
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(&[self.0, 0, 0, 0]);
    }
}

/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): HMAC-SHA256, possibly truncated to 16–32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageIntegritySha256<'a>(pub &'a [u8]);

impl<'a> Attr<'a> for MessageIntegritySha256<'a> {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY_SHA256;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        if !(16..=32).contains(&value.len()) || !value.len().is_multiple_of(4) {
            return Err(AttrError::BadLength {
                attr: Self::TYPE,
                got: value.len(),
                expected: "16 to 32, a multiple of 4",
            });
        }
        Ok(Self(value))
    }
    fn value_len(&self) -> usize {
        self.0.len()
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(self.0);
    }
}

/// One password algorithm (RFC 8489 §14.11, §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithm<'a> {
    pub algorithm: u16,
    pub params: &'a [u8],
}

impl PasswordAlgorithm<'_> {
    pub const MD5: u16 = 0x0001;
    pub const SHA256: u16 = 0x0002;
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

impl<'a> Attr<'a> for PasswordAlgorithm<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHM;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        if value.len() < 4 {
            return Err(AttrError::BadLength {
                attr: Self::TYPE,
                got: value.len(),
                expected: "at least 4",
            });
        }
        let params_len = usize::from(be16(&value[2..4]));
        if value.len() != 4 + params_len {
            return Err(AttrError::Invalid {
                attr: Self::TYPE,
                what: "parameter length does not match",
            });
        }
        Ok(Self {
            algorithm: be16(value),
            params: &value[4..],
        })
    }
    fn value_len(&self) -> usize {
        4 + self.params.len()
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        out[..2].copy_from_slice(&self.algorithm.to_be_bytes());
        out[2..4].copy_from_slice(&(self.params.len() as u16).to_be_bytes());
        out[4..].copy_from_slice(self.params);
    }
}

/// PASSWORD-ALGORITHMS (RFC 8489 §14.11): the list a server offers, kept as its validated wire
/// form; [`PasswordAlgorithms::iter`] reads it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithms<'a>(&'a [u8]);

impl<'a> PasswordAlgorithms<'a> {
    /// MD5 and SHA-256, neither with parameters: what a server supporting both offers.
    pub const MD5_AND_SHA256: PasswordAlgorithms<'static> =
        PasswordAlgorithms(&[0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00]);

    /// Validates a wire-form list (what [`PasswordAlgorithms::write_list`] produces).
    pub fn from_wire(value: &'a [u8]) -> Result<Self, AttrError> {
        let mut rest = value;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(AttrError::Invalid {
                    attr: AttrType::PASSWORD_ALGORITHMS,
                    what: "truncated entry",
                });
            }
            let step = 4 + padded(usize::from(be16(&rest[2..4])));
            if step > rest.len() {
                return Err(AttrError::Invalid {
                    attr: AttrType::PASSWORD_ALGORITHMS,
                    what: "parameters run past the end",
                });
            }
            rest = &rest[step..];
        }
        Ok(Self(value))
    }

    /// Writes `algs` in wire form into `out`, returning the length used, or `None` if it does
    /// not fit.
    pub fn write_list(algs: &[PasswordAlgorithm<'_>], out: &mut [u8]) -> Option<usize> {
        let mut at = 0;
        for alg in algs {
            let len = 4 + padded(alg.params.len());
            let dst = out.get_mut(at..at + len)?;
            dst[..2].copy_from_slice(&alg.algorithm.to_be_bytes());
            dst[2..4].copy_from_slice(&u16::try_from(alg.params.len()).ok()?.to_be_bytes());
            dst[4..4 + alg.params.len()].copy_from_slice(alg.params);
            dst[4 + alg.params.len()..].fill(0);
            at += len;
        }
        Some(at)
    }

    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm<'a>> + 'a {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest.len() < 4 {
                return None;
            }
            let params_len = usize::from(be16(&rest[2..4]));
            let params = rest.get(4..4 + params_len)?;
            let alg = PasswordAlgorithm {
                algorithm: be16(rest),
                params,
            };
            rest = rest.get(4 + padded(params_len)..).unwrap_or(&[]);
            Some(alg)
        })
    }

    pub fn as_wire(&self) -> &'a [u8] {
        self.0
    }
}

impl fmt::Debug for PasswordAlgorithms<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Attr<'a> for PasswordAlgorithms<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHMS;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        Self::from_wire(value)
    }
    fn value_len(&self) -> usize {
        self.0.len()
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(self.0);
    }
}

/// ICMP (RFC 8656 §18.13): a 7-bit type, 9-bit code and 32 bits of error data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    pub icmp_type: u8,
    pub code: u16,
    pub data: u32,
}

impl<'a> Attr<'a> for Icmp {
    const TYPE: AttrType = AttrType::ICMP;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        expect_len(Self::TYPE, value, 8, "8")?;
        let word = be16(&value[2..4]);
        Ok(Self {
            icmp_type: (word >> 9) as u8,
            code: word & 0x01FF,
            data: be32(&value[4..8]),
        })
    }
    fn value_len(&self) -> usize {
        8
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        let word = (u16::from(self.icmp_type & 0x7F) << 9) | (self.code & 0x01FF);
        out[..2].fill(0);
        out[2..4].copy_from_slice(&word.to_be_bytes());
        out[4..8].copy_from_slice(&self.data.to_be_bytes());
    }
    fn check_encodable(&self) -> Result<(), AttrError> {
        if self.icmp_type > 0x7F || self.code > 0x01FF {
            return Err(AttrError::Invalid {
                attr: Self::TYPE,
                what: "type is 7 bits and code 9 bits",
            });
        }
        Ok(())
    }
}

/// CHANGE-REQUEST (RFC 5780 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRequest {
    pub change_ip: bool,
    pub change_port: bool,
}

impl<'a> Attr<'a> for ChangeRequest {
    const TYPE: AttrType = AttrType::CHANGE_REQUEST;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        expect_len(Self::TYPE, value, 4, "4")?;
        let flags = be32(value);
        Ok(Self {
            change_ip: flags & 0x4 != 0,
            change_port: flags & 0x2 != 0,
        })
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        let flags = (u32::from(self.change_ip) << 2) | (u32::from(self.change_port) << 1);
        out.copy_from_slice(&flags.to_be_bytes());
    }
}

/// RESPONSE-PORT (RFC 5780 §7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePort(pub u16);

impl<'a> Attr<'a> for ResponsePort {
    const TYPE: AttrType = AttrType::RESPONSE_PORT;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        expect_len(Self::TYPE, value, 4, "4")?;
        Ok(Self(be16(value)))
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
        out[..2].copy_from_slice(&self.0.to_be_bytes());
        out[2..4].fill(0);
    }
}

// ---------------------------------------------------------------------------------------------
// The sum of all attributes

macro_rules! attributes {
    ($lt:lifetime; $($variant:ident($ty:ty)),* $(,)?) => {
        /// Any attribute, decoded. Unknown types are carried as they came.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Attribute<$lt> {
            $($variant($ty),)*
            Unknown { typ: AttrType, value: &$lt [u8] },
        }

        impl<$lt> Attribute<$lt> {
            /// Decodes a value of type `typ`.
            pub fn decode(typ: AttrType, value: &$lt [u8], tid: &TransactionId) -> Result<Self, AttrError> {
                $(if typ == <$ty as Attr<$lt>>::TYPE {
                    return <$ty as Attr<$lt>>::decode(value, tid).map(Attribute::$variant);
                })*
                Ok(Attribute::Unknown { typ, value })
            }

            pub fn typ(&self) -> AttrType {
                match self {
                    $(Attribute::$variant(_) => <$ty as Attr<$lt>>::TYPE,)*
                    Attribute::Unknown { typ, .. } => *typ,
                }
            }

            pub fn value_len(&self) -> usize {
                match self {
                    $(Attribute::$variant(a) => a.value_len(),)*
                    Attribute::Unknown { value, .. } => value.len(),
                }
            }

            pub fn encode_value(&self, out: &mut [u8], tid: &TransactionId) {
                match self {
                    $(Attribute::$variant(a) => a.encode_value(out, tid),)*
                    Attribute::Unknown { value, .. } => out.copy_from_slice(value),
                }
            }

            pub fn check_encodable(&self) -> Result<(), AttrError> {
                match self {
                    $(Attribute::$variant(a) => a.check_encodable(),)*
                    Attribute::Unknown { typ, value } if value.len() > 0xFFFF => {
                        Err(AttrError::TooLong { attr: *typ, max: 0xFFFF })
                    }
                    Attribute::Unknown { .. } => Ok(()),
                }
            }
        }
    };
}

attributes! { 'a;
    MappedAddress(MappedAddress),
    XorMappedAddress(XorMappedAddress),
    XorPeerAddress(XorPeerAddress),
    XorRelayedAddress(XorRelayedAddress),
    AlternateServer(AlternateServer),
    ResponseOrigin(ResponseOrigin),
    OtherAddress(OtherAddress),
    Username(Username<'a>),
    Realm(Realm<'a>),
    Nonce(Nonce<'a>),
    Software(Software<'a>),
    AlternateDomain(AlternateDomain<'a>),
    Data(Data<'a>),
    Padding(Padding<'a>),
    UserHash(UserHash),
    MessageIntegrity(MessageIntegrity),
    MessageIntegritySha256(MessageIntegritySha256<'a>),
    Fingerprint(Fingerprint),
    ReservationToken(ReservationToken),
    Lifetime(Lifetime),
    Priority(Priority),
    ConnectionId(ConnectionId),
    IceControlled(IceControlled),
    IceControlling(IceControlling),
    DontFragment(DontFragment),
    UseCandidate(UseCandidate),
    ErrorCode(ErrorCode<'a>),
    AddressErrorCode(AddressErrorCode<'a>),
    UnknownAttributes(UnknownAttributes),
    ChannelNumber(ChannelNumber),
    RequestedAddressFamily(RequestedAddressFamily),
    AdditionalAddressFamily(AdditionalAddressFamily),
    EvenPort(EvenPort),
    RequestedTransport(RequestedTransport),
    PasswordAlgorithm(PasswordAlgorithm<'a>),
    PasswordAlgorithms(PasswordAlgorithms<'a>),
    Icmp(Icmp),
    ChangeRequest(ChangeRequest),
    ResponsePort(ResponsePort),
}
