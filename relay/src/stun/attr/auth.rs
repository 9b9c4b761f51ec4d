//! Authentication and message checks: USERNAME, USERHASH, REALM and NONCE (RFC 8489 §14.3,
//! §14.4, §14.9, §14.10), the received MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
//! FINGERPRINT values (§14.5–§14.7; [`crate::stun::Encoder`] computes them), and
//! PASSWORD-ALGORITHM / PASSWORD-ALGORITHMS (§14.11, §14.12).

use std::fmt;

use super::{Attr, AttrError, AttrType, be16};
use crate::stun::TransactionId;

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
array_attr!(
    /// USERHASH (RFC 8489 §14.4): SHA-256(username ":" realm).
    UserHash, AttrType::USERHASH, 32, "32"
);
array_attr!(
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1. [`crate::stun::Encoder::message_integrity`]
    /// computes it; this type is the received value.
    MessageIntegrity, AttrType::MESSAGE_INTEGRITY, 20, "20"
);
int_attr!(
    /// FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message XOR 0x5354554e.
    /// [`crate::stun::Encoder::fingerprint`] computes it; this type is the received value.
    Fingerprint, AttrType::FINGERPRINT, u32, 4, "4"
);

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
