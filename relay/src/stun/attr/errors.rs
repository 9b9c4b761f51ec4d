//! The error attributes: ERROR-CODE (RFC 8489 §14.8), ADDRESS-ERROR-CODE (RFC 8656 §18.14),
//! which share one value layout, and UNKNOWN-ATTRIBUTES (RFC 8489 §14.13) with its bounded list
//! of types.

use std::fmt;

use super::{AddressFamily, Attr, AttrError, AttrType, be16};
use crate::stun::TransactionId;

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
