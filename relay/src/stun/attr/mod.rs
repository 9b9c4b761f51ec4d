//! Attributes: one type per attribute, each implementing [`Attr`], and [`Attribute`], the sum of
//! them all for generic iteration and re-encoding.
//!
//! This module holds what every attribute shares: [`AttrType`], [`AttrError`], the [`Attr`]
//! trait, the byte helpers and the [`Attribute`] sum. The attributes themselves live in one
//! module per family, re-exported here.

#[macro_use]
mod shapes;
mod addresses;
mod auth;
mod errors;
mod ice;
mod nat;
mod server;
mod turn;

pub use addresses::{
    AddressFamily, AlternateServer, MappedAddress, OtherAddress, ResponseOrigin, XorMappedAddress,
    XorPeerAddress, XorRelayedAddress,
};
pub use auth::{
    Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce, PasswordAlgorithm,
    PasswordAlgorithms, Realm, UserHash, Username,
};
pub use errors::{AddressErrorCode, AttrTypeList, ErrorCode, UnknownAttributes};
pub use ice::{IceControlled, IceControlling, Priority, UseCandidate};
pub use nat::{ChangeRequest, Padding, ResponsePort};
pub use server::{AlternateDomain, Software};
pub use turn::{
    AdditionalAddressFamily, ChannelNumber, ConnectionId, Data, DontFragment, EvenPort, Icmp,
    Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken,
};

use std::fmt;

use super::TransactionId;

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
