//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT over the exact bytes
//! of a message, and the keys of the short-term and long-term credential mechanisms.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::message::Message;
use super::{ATTR_HEADER_LEN, FINGERPRINT_XOR, HEADER_LEN};

/// Why integrity or fingerprint did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("the message has no such integrity attribute")]
    Missing,
    #[error("the message integrity does not match")]
    Mismatch,
}

/// Prepares a password (or realm) with the OpaqueString profile of RFC 8265, as RFC 8489 §9.2.2
/// asks. Strings that profile rejects (RFC 5389 clients prepared them with SASLprep, RFC 4013,
/// as the RFC 5769 long-term vector does) go through SASLprep, and failing that are used as
/// they are, so that a client and server with the same bytes always agree.
pub fn opaque_string(s: &str) -> Cow<'_, str> {
    if s.is_ascii() && s.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        // Printable ASCII is left unchanged by both profiles: skip the Unicode tables.
        return Cow::Borrowed(s);
    }
    use precis_core::profile::Profile;
    if let Ok(prepared) = precis_profiles::OpaqueString::new().prepare(s) {
        return Cow::Owned(prepared.into_owned());
    }
    match stringprep::saslprep(s) {
        Ok(prepared) => Cow::Owned(prepared.into_owned()),
        Err(_) => Cow::Borrowed(s),
    }
}

/// The short-term credential key (RFC 8489 §9.1.2): OpaqueString(password).
pub fn short_term_key(password: &str) -> Vec<u8> {
    opaque_string(password).as_bytes().to_vec()
}

/// The long-term credential key for HMAC-SHA1 (RFC 8489 §9.2.2):
/// MD5(username ":" OpaqueString(realm) ":" OpaqueString(password)). This is also what coturn's
/// `turnadmin -k` prints and what its user database stores.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(opaque_string(realm).as_bytes());
    h.update(b":");
    h.update(opaque_string(password).as_bytes());
    h.finalize().into()
}

/// The long-term credential key with PASSWORD-ALGORITHM SHA-256 (RFC 8489 §18.5.1.2).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(opaque_string(realm).as_bytes());
    h.update(b":");
    h.update(opaque_string(password).as_bytes());
    h.finalize().into()
}

/// The 20-byte header of `msg` with its length field replaced by `length`, which is what
/// integrity and fingerprint are computed over (RFC 8489 §14.5).
fn header_with_length(msg: &[u8], length: usize) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&msg[..HEADER_LEN]);
    // The length of a message is at most 0xFFFF, so this never truncates.
    header[2..4].copy_from_slice(&(length as u16).to_be_bytes());
    header
}

/// HMAC-SHA1 over `msg[..attr_offset]`, with the header length set as if the message ended just
/// after the 20-byte MESSAGE-INTEGRITY attribute at `attr_offset`.
pub(super) fn hmac_sha1_at(key: &[u8], msg: &[u8], attr_offset: usize) -> [u8; 20] {
    let header = header_with_length(msg, attr_offset + ATTR_HEADER_LEN + 20 - HEADER_LEN);
    // Hmac accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(&header);
    mac.update(&msg[HEADER_LEN..attr_offset]);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over `msg[..attr_offset]`, the header length set to end after a
/// MESSAGE-INTEGRITY-SHA256 of `mac_len` bytes at `attr_offset`.
pub(super) fn hmac_sha256_at(
    key: &[u8],
    msg: &[u8],
    attr_offset: usize,
    mac_len: usize,
) -> [u8; 32] {
    let header = header_with_length(msg, attr_offset + ATTR_HEADER_LEN + mac_len - HEADER_LEN);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(&header);
    mac.update(&msg[HEADER_LEN..attr_offset]);
    mac.finalize().into_bytes().into()
}

/// CRC-32 of `msg[..attr_offset]` XOR "STUN", the header length set to end after FINGERPRINT.
pub(super) fn fingerprint_at(msg: &[u8], attr_offset: usize) -> u32 {
    let header = header_with_length(msg, attr_offset + ATTR_HEADER_LEN + 4 - HEADER_LEN);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(&msg[HEADER_LEN..attr_offset]);
    crc.finalize() ^ FINGERPRINT_XOR
}

impl Message<'_> {
    /// Whether MESSAGE-INTEGRITY is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity_offset().is_some()
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is present.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256_offset().is_some()
    }

    /// Verifies MESSAGE-INTEGRITY with `key` (see [`long_term_key_md5`], [`short_term_key`]),
    /// over the bytes as received, in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let at = self.integrity_offset().ok_or(IntegrityError::Missing)?;
        let raw = self.as_bytes();
        let expected = hmac_sha1_at(key, raw, at);
        let got = &raw[at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + 20];
        if bool::from(expected.ct_eq(got)) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 with `key` (see [`long_term_key_sha256`]); a truncated
    /// MAC is compared on its length.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let at = self
            .integrity_sha256_offset()
            .ok_or(IntegrityError::Missing)?;
        let raw = self.as_bytes();
        let len = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
        let expected = hmac_sha256_at(key, raw, at, len);
        let got = &raw[at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + len];
        if bool::from(expected[..len].ct_eq(got)) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// Whether FINGERPRINT is present.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint_offset().is_some()
    }

    /// Verifies FINGERPRINT.
    pub fn verify_fingerprint(&self) -> Result<(), IntegrityError> {
        let at = self.fingerprint_offset().ok_or(IntegrityError::Missing)?;
        let raw = self.as_bytes();
        let got = u32::from_be_bytes([raw[at + 4], raw[at + 5], raw[at + 6], raw[at + 7]]);
        if fingerprint_at(raw, at) == got {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_unchanged() {
        assert_eq!(
            opaque_string("VOkJxbRl1RmTxUk/WvJxBt"),
            "VOkJxbRl1RmTxUk/WvJxBt"
        );
        assert!(matches!(opaque_string("pass word"), Cow::Borrowed(_)));
    }

    #[test]
    fn rfc5769_password_is_prepared_to_thematrix() {
        // RFC 5769 §2.4: "The<U+00AD>M<U+00AA>tr<U+2168>" prepares to "TheMatrIX".
        assert_eq!(opaque_string("The\u{00AD}M\u{00AA}tr\u{2168}"), "TheMatrIX");
    }

    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        // MD5("user:realm:pass"), computed independently: `printf user:realm:pass | md5sum`.
        let key = long_term_key_md5("user", "realm", "pass");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn sha256_and_sha1_integrity_verify_together() {
        use crate::stun::{
            AttrType, Class, Encoder, Message, MessageType, Method, Realm, TransactionId, Username,
        };
        let key1 = long_term_key_md5("alice", "example.org", "secret");
        let key256 = long_term_key_sha256("alice", "example.org", "secret");
        let mut buf = [0u8; 256];
        let typ = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut enc = Encoder::new(&mut buf, typ, TransactionId::new([9; 12])).expect("header");
        enc.add(&Username("alice")).expect("add");
        enc.add(&Realm("example.org")).expect("add");
        enc.message_integrity(&key1).expect("mi");
        enc.message_integrity_sha256(&key256).expect("mi256");
        enc.fingerprint().expect("fp");
        let len = enc.finish();
        let msg = Message::decode(&buf[..len]).expect("decodes");
        msg.verify_integrity(&key1).expect("sha1");
        msg.verify_integrity_sha256(&key256).expect("sha256");
        msg.verify_fingerprint().expect("fingerprint");
        assert_eq!(
            msg.verify_integrity_sha256(&key1),
            Err(IntegrityError::Mismatch)
        );

        // A MAC truncated to 16 bytes (RFC 8489 §14.6) verifies on its length.
        let mut buf = [0u8; 256];
        let mut enc = Encoder::new(&mut buf, typ, TransactionId::new([9; 12])).expect("header");
        enc.add(&Username("alice")).expect("add");
        let at = enc.len();
        enc.add_raw(AttrType::MESSAGE_INTEGRITY_SHA256, &[0; 16])
            .expect("placeholder");
        let len = enc.finish();
        let mac = hmac_sha256_at(&key256, &buf[..len], at, 16);
        buf[at + 4..at + 20].copy_from_slice(&mac[..16]);
        let msg = Message::decode(&buf[..len]).expect("decodes");
        msg.verify_integrity_sha256(&key256).expect("truncated mac");
        assert_eq!(msg.verify_integrity(&key1), Err(IntegrityError::Missing));
    }
}
