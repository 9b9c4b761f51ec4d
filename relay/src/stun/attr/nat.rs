//! NAT behaviour discovery (RFC 5780 §7): CHANGE-REQUEST, RESPONSE-PORT and PADDING.
//! RESPONSE-ORIGIN and OTHER-ADDRESS are with the other addresses.

use super::{Attr, AttrError, AttrType, be16, be32, expect_len};
use crate::stun::TransactionId;

bytes_attr!(
    /// PADDING (RFC 5780 §7.6).
    Padding, AttrType::PADDING
);

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
