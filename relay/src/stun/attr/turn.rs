//! The TURN attributes (RFC 8656 §18, RFC 6062 §6.2): CHANNEL-NUMBER, LIFETIME, DATA,
//! REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT, REQUESTED-TRANSPORT,
//! DONT-FRAGMENT, RESERVATION-TOKEN, CONNECTION-ID and ICMP. XOR-PEER-ADDRESS,
//! XOR-RELAYED-ADDRESS and ADDRESS-ERROR-CODE are with the other addresses and errors.

use super::{AddressFamily, Attr, AttrError, AttrType, be16, be32, expect_len};
use crate::stun::TransactionId;

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

bytes_attr!(
    /// DATA (RFC 8656 §18.4): the application data of Send and Data indications.
    Data, AttrType::DATA
);
array_attr!(
    /// RESERVATION-TOKEN (RFC 8656 §18.9).
    ReservationToken, AttrType::RESERVATION_TOKEN, 8, "8"
);
int_attr!(
    /// LIFETIME (RFC 8656 §18.2), seconds.
    Lifetime, AttrType::LIFETIME, u32, 4, "4"
);
int_attr!(
    /// CONNECTION-ID (RFC 6062 §6.2.1).
    ConnectionId, AttrType::CONNECTION_ID, u32, 4, "4"
);
flag_attr!(
    /// DONT-FRAGMENT (RFC 8656 §18.8).
    DontFragment, AttrType::DONT_FRAGMENT
);

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
