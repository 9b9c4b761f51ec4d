//! Zero-copy decoding of a STUN message.

use std::fmt;

use super::attr::{Attr, AttrError, AttrType, AttrTypeList, Attribute};
use super::{ATTR_HEADER_LEN, HEADER_LEN, MAGIC_COOKIE, MessageType, TransactionId};

/// The fixed header, which is all a server needs to answer with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub typ: MessageType,
    /// The magic cookie field: anything but [`MAGIC_COOKIE`] marks an RFC 3489 client, whose
    /// 128-bit transaction id is this field followed by `tid`.
    pub cookie: u32,
    pub tid: TransactionId,
    /// The length field: bytes after the header.
    pub length: u16,
}

impl Header {
    /// Reads the header if `buf` holds 20 bytes whose first two bits are zero.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let h = buf.get(..HEADER_LEN)?;
        let typ = MessageType::from_u16(u16::from_be_bytes([h[0], h[1]]))?;
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&h[8..20]);
        Some(Header {
            typ,
            length: u16::from_be_bytes([h[2], h[3]]),
            cookie: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            tid: TransactionId(tid),
        })
    }

    pub fn has_magic_cookie(&self) -> bool {
        self.cookie == MAGIC_COOKIE
    }
}

/// What made a message undecodable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("shorter than the 20-byte header")]
    TooShort,
    #[error("first two bits are not zero: not STUN")]
    NotStun,
    #[error("length field {field} is not a multiple of 4")]
    UnalignedLength { field: u16 },
    #[error("length field says {field} bytes follow the header but {actual} do")]
    LengthMismatch { field: u16, actual: usize },
    #[error("attribute at offset {offset} runs past the end of the message")]
    AttributeTruncated { offset: usize },
    #[error("attribute at offset {offset} follows FINGERPRINT")]
    AttributeAfterFingerprint { offset: usize },
    #[error("invalid {0}")]
    BadAttribute(AttrType),
}

/// A message that could not be decoded; `header` is set when the header itself was readable,
/// so a server can still answer 400 to the right transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed STUN message: {kind}")]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub header: Option<Header>,
}

/// One attribute as it sits in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub typ: AttrType,
    pub value: &'a [u8],
    /// Offset of the attribute's header within the message.
    pub offset: usize,
}

/// Comprehension-required attributes this codec does not know, for a 420 answer.
pub type UnknownAttributeList = AttrTypeList;

/// A decoded STUN message borrowing the received bytes.
///
/// Decoding walks the attributes once, checks that they tile the message exactly, notes where
/// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT sit and which
/// comprehension-required attributes are unknown. Attributes after MESSAGE-INTEGRITY (other
/// than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT) and after MESSAGE-INTEGRITY-SHA256 (other than
/// FINGERPRINT) are ignored, as RFC 8489 §14.5–14.6 say; attributes after FINGERPRINT make the
/// message malformed. Values are decoded on access.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    header: Header,
    /// End of the attributes that count (excludes ignored ones).
    counted_end: usize,
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
    unknown: AttrTypeList,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("method", &self.header.typ.method)
            .field("class", &self.header.typ.class)
            .field("tid", &self.header.tid);
        let attrs: Vec<_> = self.attributes().map(|a| a.typ).collect();
        d.field("attributes", &attrs).finish()
    }
}

impl<'a> Message<'a> {
    /// Decodes `buf`, which must hold exactly one message (a UDP datagram, or one frame cut from
    /// a stream by [`super::stream_frame_len`]).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_LEN {
            let header = None;
            return Err(DecodeError {
                kind: DecodeErrorKind::TooShort,
                header,
            });
        }
        let Some(header) = Header::peek(buf) else {
            return Err(DecodeError {
                kind: DecodeErrorKind::NotStun,
                header: None,
            });
        };
        let fail = |kind| {
            Err(DecodeError {
                kind,
                header: Some(header),
            })
        };
        if !header.length.is_multiple_of(4) {
            return fail(DecodeErrorKind::UnalignedLength {
                field: header.length,
            });
        }
        if usize::from(header.length) != buf.len() - HEADER_LEN {
            return fail(DecodeErrorKind::LengthMismatch {
                field: header.length,
                actual: buf.len() - HEADER_LEN,
            });
        }

        let mut msg = Message {
            raw: buf,
            header,
            counted_end: HEADER_LEN,
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
            unknown: AttrTypeList::default(),
        };
        let mut offset = HEADER_LEN;
        while offset < buf.len() {
            let Some(ah) = buf.get(offset..offset + ATTR_HEADER_LEN) else {
                return fail(DecodeErrorKind::AttributeTruncated { offset });
            };
            let typ = AttrType(u16::from_be_bytes([ah[0], ah[1]]));
            let len = usize::from(u16::from_be_bytes([ah[2], ah[3]]));
            let next = offset + ATTR_HEADER_LEN + ((len + 3) & !3);
            if next > buf.len() {
                return fail(DecodeErrorKind::AttributeTruncated { offset });
            }
            if msg.fingerprint.is_some() {
                return fail(DecodeErrorKind::AttributeAfterFingerprint { offset });
            }
            let counts = match typ {
                AttrType::FINGERPRINT => {
                    if len != 4 {
                        return fail(DecodeErrorKind::BadAttribute(typ));
                    }
                    msg.fingerprint = Some(offset);
                    true
                }
                AttrType::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    if !(16..=32).contains(&len) || !len.is_multiple_of(4) {
                        return fail(DecodeErrorKind::BadAttribute(typ));
                    }
                    msg.integrity_sha256 = Some(offset);
                    true
                }
                _ if msg.integrity.is_some() || msg.integrity_sha256.is_some() => false,
                AttrType::MESSAGE_INTEGRITY => {
                    if len != 20 {
                        return fail(DecodeErrorKind::BadAttribute(typ));
                    }
                    msg.integrity = Some(offset);
                    true
                }
                _ => {
                    if typ.is_comprehension_required() && !typ.is_known() {
                        msg.unknown.push(typ);
                    }
                    true
                }
            };
            if counts {
                msg.counted_end = next;
            }
            offset = next;
        }
        Ok(msg)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn typ(&self) -> MessageType {
        self.header.typ
    }

    pub fn method(&self) -> super::Method {
        self.header.typ.method
    }

    pub fn class(&self) -> super::Class {
        self.header.typ.class
    }

    pub fn tid(&self) -> &TransactionId {
        &self.header.tid
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Comprehension-required attributes this codec does not understand (answer 420).
    pub fn unknown_comprehension_required(&self) -> &AttrTypeList {
        &self.unknown
    }

    /// The attributes that count, in order; attributes RFC 8489 says to ignore (after the
    /// integrity attributes) are skipped.
    pub fn attributes(&self) -> impl Iterator<Item = RawAttribute<'a>> + 'a {
        let raw = self.raw;
        let end = self.counted_end;
        let integrity_at = self.integrity.or(self.integrity_sha256);
        let mut offset = HEADER_LEN;
        std::iter::from_fn(move || {
            loop {
                if offset >= end {
                    return None;
                }
                let ah = raw.get(offset..offset + ATTR_HEADER_LEN)?;
                let typ = AttrType(u16::from_be_bytes([ah[0], ah[1]]));
                let len = usize::from(u16::from_be_bytes([ah[2], ah[3]]));
                let value = raw.get(offset + ATTR_HEADER_LEN..offset + ATTR_HEADER_LEN + len)?;
                let at = offset;
                offset += ATTR_HEADER_LEN + ((len + 3) & !3);
                let ignored = integrity_at.is_some_and(|mi| at > mi)
                    && typ != AttrType::MESSAGE_INTEGRITY_SHA256
                    && typ != AttrType::FINGERPRINT;
                if !ignored {
                    return Some(RawAttribute {
                        typ,
                        value,
                        offset: at,
                    });
                }
            }
        })
    }

    /// The first attribute of type `typ` that counts.
    pub fn raw(&self, typ: AttrType) -> Option<RawAttribute<'a>> {
        self.attributes().find(|a| a.typ == typ)
    }

    /// The first attribute of type `A`, decoded: `None` if absent, `Some(Err)` if malformed.
    pub fn get<A: Attr<'a>>(&self) -> Option<Result<A, AttrError>> {
        let tid = self.header.tid;
        self.raw(A::TYPE).map(|a| A::decode(a.value, &tid))
    }

    /// Every attribute of type `A` (TURN's CreatePermission may carry several XOR-PEER-ADDRESS).
    pub fn get_all<A: Attr<'a> + 'a>(&self) -> impl Iterator<Item = Result<A, AttrError>> + 'a {
        let tid = self.header.tid;
        self.attributes()
            .filter(|a| a.typ == A::TYPE)
            .map(move |a| A::decode(a.value, &tid))
    }

    /// Every counted attribute, decoded.
    pub fn decoded(&self) -> impl Iterator<Item = Result<Attribute<'a>, AttrError>> + 'a {
        let tid = self.header.tid;
        self.attributes()
            .map(move |a| Attribute::decode(a.typ, a.value, &tid))
    }

    /// Whether `typ` is present.
    pub fn has(&self, typ: AttrType) -> bool {
        self.raw(typ).is_some()
    }

    pub(super) fn integrity_offset(&self) -> Option<usize> {
        self.integrity
    }

    pub(super) fn integrity_sha256_offset(&self) -> Option<usize> {
        self.integrity_sha256
    }

    pub(super) fn fingerprint_offset(&self) -> Option<usize> {
        self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{Class, Encoder, Lifetime, Method, Software, Username};

    fn request(build: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let typ = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut enc = Encoder::new(&mut buf, typ, TransactionId::new([1; 12])).expect("header");
        build(&mut enc);
        let len = enc.finish();
        buf.truncate(len);
        buf
    }

    #[test]
    fn unknown_comprehension_required_attributes_are_reported_once() {
        let bytes = request(|e| {
            e.add_raw(AttrType(0x7001), b"x").expect("add");
            e.add_raw(AttrType(0xC001), b"optional").expect("add");
            e.add_raw(AttrType(0x7001), b"again").expect("add");
            e.add_raw(AttrType(0x0002), b"").expect("add"); // RFC 3489 RESPONSE-ADDRESS
        });
        let msg = Message::decode(&bytes).expect("decodes");
        let unknown: Vec<_> = msg.unknown_comprehension_required().iter().collect();
        assert_eq!(unknown, [AttrType(0x7001), AttrType(0x0002)]);
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let bytes = request(|e| {
            e.add(&Username("alice")).expect("add");
            e.message_integrity(b"key").expect("mi");
            e.add(&Lifetime(0)).expect("add");
            e.add_raw(AttrType(0x7001), b"").expect("add");
            e.fingerprint().expect("fp");
        });
        let msg = Message::decode(&bytes).expect("decodes");
        assert!(
            msg.get::<Lifetime>().is_none(),
            "LIFETIME after MESSAGE-INTEGRITY must be ignored"
        );
        assert!(msg.unknown_comprehension_required().is_empty());
        assert!(msg.has_fingerprint());
        msg.verify_integrity(b"key")
            .expect("integrity covers only what precedes it");
        msg.verify_fingerprint()
            .expect("fingerprint covers everything");
    }

    #[test]
    fn attribute_after_fingerprint_is_malformed() {
        let mut bytes = request(|e| {
            e.fingerprint().expect("fp");
            e.add(&Software("late")).expect("add");
        });
        let err = Message::decode(&bytes).expect_err("must fail");
        assert!(matches!(
            err.kind,
            DecodeErrorKind::AttributeAfterFingerprint { .. }
        ));
        assert_eq!(err.header.map(|h| h.typ.method), Some(Method::ALLOCATE));
        // And a length field disagreeing with the datagram is malformed too.
        bytes[3] ^= 4;
        assert!(matches!(
            Message::decode(&bytes).map_err(|e| e.kind),
            Err(DecodeErrorKind::LengthMismatch { .. })
        ));
    }

    #[test]
    fn bad_integrity_length_is_malformed_with_header() {
        let bytes = request(|e| {
            e.add_raw(AttrType::MESSAGE_INTEGRITY, &[0; 16])
                .expect("add")
        });
        let err = Message::decode(&bytes).expect_err("must fail");
        assert_eq!(
            err.kind,
            DecodeErrorKind::BadAttribute(AttrType::MESSAGE_INTEGRITY)
        );
        assert_eq!(err.header.map(|h| h.tid), Some(TransactionId::new([1; 12])));
    }

    #[test]
    fn rfc3489_message_without_cookie_decodes() {
        // A classic Binding request: 128-bit transaction id, no magic cookie.
        let mut bytes = vec![0x00, 0x01, 0x00, 0x00];
        bytes.extend_from_slice(&[0xAB; 16]);
        let msg = Message::decode(&bytes).expect("decodes");
        assert!(!msg.header().has_magic_cookie());
        assert_eq!(msg.header().cookie, 0xABAB_ABAB);
    }

    #[test]
    fn not_stun() {
        let err = Message::decode(&[0x80; 20]).expect_err("top bits set");
        assert_eq!(
            err,
            DecodeError {
                kind: DecodeErrorKind::NotStun,
                header: None
            }
        );
        let err = Message::decode(&[0; 19]).expect_err("short");
        assert_eq!(err.kind, DecodeErrorKind::TooShort);
    }
}
