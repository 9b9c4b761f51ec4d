//! The STUN/TURN wire codec: RFC 8489 (STUN, RFC 5389 compatible), RFC 8656 (TURN, RFC 5766
//! compatible), RFC 6062 (TCP relay), RFC 6156 (IPv6), RFC 5780 (NAT behaviour discovery) and the
//! ICE attributes of RFC 8445.
//!
//! Hand-written rather than taken from a crate because it is the core of the product: decode is
//! zero-copy ([`Message`] borrows the received bytes and walks them once, noting where integrity
//! and fingerprint sit), encode writes into a caller's buffer ([`Encoder`]) with no allocation,
//! and integrity is checked over the exact received bytes. A malformed message never panics; when
//! its header was readable the error still carries method and transaction id so a server can
//! answer 400.

mod attr;
mod channel;
mod encode;
mod integrity;
mod message;

pub use attr::*;
pub use channel::{ChannelData, ChannelDataError, FramingError, is_channel_data, stream_frame_len};
pub use encode::{EncodeError, Encoder};
pub use integrity::{
    IntegrityError, long_term_key_md5, long_term_key_sha256, opaque_string, short_term_key,
};
pub use message::{
    DecodeError, DecodeErrorKind, Header, Message, RawAttribute, UnknownAttributeList,
};

use std::fmt;

/// The magic cookie of RFC 5389/8489; a message without it comes from an RFC 3489 client.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN message header.
pub const HEADER_LEN: usize = 20;
/// Size of an attribute's type + length header.
pub const ATTR_HEADER_LEN: usize = 4;
/// The value XORed into the CRC-32 of FINGERPRINT ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// Largest message length the header can carry.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + 0xFFFF;

/// The four message classes (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }

    /// A bounded name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Request => "request",
            Class::Indication => "indication",
            Class::Success => "success",
            Class::Error => "error",
        }
    }
}

/// A 12-bit STUN method.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
    pub const CONNECT: Method = Method(0x00A);
    pub const CONNECTION_BIND: Method = Method(0x00B);
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// The method with this 12-bit value; `None` if it does not fit 12 bits.
    pub const fn new(value: u16) -> Option<Self> {
        if value <= 0x0FFF {
            Some(Method(value))
        } else {
            None
        }
    }

    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// A bounded name for logs and metric labels: unknown methods are all "other".
    pub fn as_str(self) -> &'static str {
        match self {
            Method::BINDING => "binding",
            Method::ALLOCATE => "allocate",
            Method::REFRESH => "refresh",
            Method::SEND => "send",
            Method::DATA => "data",
            Method::CREATE_PERMISSION => "create_permission",
            Method::CHANNEL_BIND => "channel_bind",
            Method::CONNECT => "connect",
            Method::CONNECTION_BIND => "connection_bind",
            Method::CONNECTION_ATTEMPT => "connection_attempt",
            _ => "other",
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            "other" => write!(f, "Method({:#05x})", self.0),
            name => f.write_str(name),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Method and class, as packed into the 14-bit message type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub method: Method,
    pub class: Class,
}

impl MessageType {
    pub const fn new(method: Method, class: Class) -> Self {
        Self { method, class }
    }

    /// Unpacks the type field: `M11..M7 C1 M6..M4 C0 M3..M0`. `None` when either of the two
    /// most significant bits is set (not a STUN message).
    pub fn from_u16(value: u16) -> Option<Self> {
        if value & 0xC000 != 0 {
            return None;
        }
        let method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80);
        let class = ((value >> 4) & 0b01) | ((value >> 7) & 0b10);
        Some(Self {
            method: Method(method),
            class: Class::from_bits(class),
        })
    }

    pub fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
    }
}

/// The 96-bit transaction id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    pub const fn new(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_packing_matches_rfc_examples() {
        // RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111, indication 0x0011.
        let cases = [
            (Method::BINDING, Class::Request, 0x0001),
            (Method::BINDING, Class::Success, 0x0101),
            (Method::BINDING, Class::Error, 0x0111),
            (Method::BINDING, Class::Indication, 0x0011),
            (Method::ALLOCATE, Class::Request, 0x0003),
            (Method::ALLOCATE, Class::Success, 0x0103),
            (Method::ALLOCATE, Class::Error, 0x0113),
            (Method::SEND, Class::Indication, 0x0016),
            (Method::DATA, Class::Indication, 0x0017),
            (Method::CHANNEL_BIND, Class::Request, 0x0009),
            (Method::CONNECTION_ATTEMPT, Class::Indication, 0x001C),
        ];
        for (method, class, wire) in cases {
            let t = MessageType::new(method, class);
            assert_eq!(t.to_u16(), wire, "{method:?} {class:?}");
            assert_eq!(MessageType::from_u16(wire), Some(t));
        }
    }

    #[test]
    fn every_type_value_round_trips() {
        for v in 0u16..0x4000 {
            let t = MessageType::from_u16(v).expect("14-bit values are STUN types");
            assert_eq!(t.to_u16(), v);
        }
        assert_eq!(MessageType::from_u16(0x4000), None);
        assert_eq!(MessageType::from_u16(0x8001), None);
    }

    #[test]
    fn method_names_are_bounded() {
        assert_eq!(Method::new(0x0FFF).map(|m| m.as_str()), Some("other"));
        assert_eq!(Method::new(0x1000), None);
        assert_eq!(format!("{:?}", Method::ALLOCATE), "allocate");
    }
}
