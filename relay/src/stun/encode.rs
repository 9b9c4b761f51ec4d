//! Encoding a STUN message into a caller's buffer, with no allocation.

use super::attr::{Attr, AttrError, AttrType, Attribute};
use super::integrity::{fingerprint_at, hmac_sha1_at, hmac_sha256_at};
use super::{ATTR_HEADER_LEN, HEADER_LEN, MAGIC_COOKIE, MessageType, TransactionId};

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the buffer is too small for the message")]
    BufferTooSmall,
    #[error("the message would exceed 65535 bytes of attributes")]
    MessageTooLong,
    #[error(transparent)]
    Attribute(#[from] AttrError),
}

/// Writes a message into `buf`: the header first, then attributes in the order they are added,
/// keeping the header's length field current so that integrity and fingerprint can be computed
/// at any point.
///
/// ```
/// use relay::stun::{Class, Encoder, Message, MessageType, Method, TransactionId, XorMappedAddress};
/// let mut buf = [0u8; 128];
/// let tid = TransactionId::new([7; 12]);
/// let mut enc = Encoder::new(&mut buf, MessageType::new(Method::BINDING, Class::Success), tid)?;
/// enc.add(&XorMappedAddress("192.0.2.1:32853".parse()?))?;
/// enc.fingerprint()?;
/// let len = enc.finish();
/// let msg = Message::decode(&buf[..len])?;
/// assert!(msg.verify_fingerprint().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut [u8],
    len: usize,
    tid: TransactionId,
    padding: u8,
}

impl<'b> Encoder<'b> {
    /// Starts a message with the magic cookie.
    pub fn new(
        buf: &'b mut [u8],
        typ: MessageType,
        tid: TransactionId,
    ) -> Result<Self, EncodeError> {
        Self::with_cookie(buf, typ, MAGIC_COOKIE, tid)
    }

    /// Starts a message with an arbitrary cookie field: answering an RFC 3489 client means
    /// echoing its 128-bit transaction id, whose first 32 bits sit where the cookie would be.
    pub fn with_cookie(
        buf: &'b mut [u8],
        typ: MessageType,
        cookie: u32,
        tid: TransactionId,
    ) -> Result<Self, EncodeError> {
        let header = buf
            .get_mut(..HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        header[..2].copy_from_slice(&typ.to_u16().to_be_bytes());
        header[2..4].fill(0);
        header[4..8].copy_from_slice(&cookie.to_be_bytes());
        header[8..20].copy_from_slice(tid.as_bytes());
        Ok(Self {
            buf,
            len: HEADER_LEN,
            tid,
            padding: 0,
        })
    }

    /// The byte used to pad attribute values to 4 bytes. Receivers ignore padding (RFC 8489
    /// §14); 0 is the default, and RFC 5769's vectors use 0x20.
    pub fn set_padding_byte(&mut self, byte: u8) {
        self.padding = byte;
    }

    pub fn tid(&self) -> &TransactionId {
        &self.tid
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Reserves an attribute of `value_len` bytes, writes its header and padding and returns
    /// the value's offset.
    fn reserve(&mut self, typ: AttrType, value_len: usize) -> Result<usize, EncodeError> {
        let padded = (value_len + 3) & !3;
        let end = self.len + ATTR_HEADER_LEN + padded;
        if value_len > 0xFFFF || end - HEADER_LEN > 0xFFFF {
            return Err(EncodeError::MessageTooLong);
        }
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or(EncodeError::BufferTooSmall)?;
        dst[..2].copy_from_slice(&typ.0.to_be_bytes());
        dst[2..4].copy_from_slice(&(value_len as u16).to_be_bytes());
        dst[ATTR_HEADER_LEN + value_len..].fill(self.padding);
        let at = self.len + ATTR_HEADER_LEN;
        self.len = end;
        self.write_length();
        Ok(at)
    }

    fn write_length(&mut self) {
        let length = (self.len - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&length.to_be_bytes());
    }

    /// Appends an attribute.
    pub fn add<'a, A: Attr<'a>>(&mut self, attr: &A) -> Result<(), EncodeError> {
        attr.check_encodable()?;
        let n = attr.value_len();
        let at = self.reserve(A::TYPE, n)?;
        attr.encode_value(&mut self.buf[at..at + n], &self.tid);
        Ok(())
    }

    /// Appends any decoded attribute (used to re-encode what was received).
    pub fn add_any(&mut self, attr: &Attribute<'_>) -> Result<(), EncodeError> {
        attr.check_encodable()?;
        let n = attr.value_len();
        let at = self.reserve(attr.typ(), n)?;
        attr.encode_value(&mut self.buf[at..at + n], &self.tid);
        Ok(())
    }

    /// Appends an attribute from its raw value.
    pub fn add_raw(&mut self, typ: AttrType, value: &[u8]) -> Result<(), EncodeError> {
        let at = self.reserve(typ, value.len())?;
        self.buf[at..at + value.len()].copy_from_slice(value);
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) over everything written so far.
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        let attr_offset = self.len;
        let at = self.reserve(AttrType::MESSAGE_INTEGRITY, 20)?;
        let mac = hmac_sha1_at(key, self.buf, attr_offset);
        self.buf[at..at + 20].copy_from_slice(&mac);
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes) over everything written so far.
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        let attr_offset = self.len;
        let at = self.reserve(AttrType::MESSAGE_INTEGRITY_SHA256, 32)?;
        let mac = hmac_sha256_at(key, self.buf, attr_offset, 32);
        self.buf[at..at + 32].copy_from_slice(&mac);
        Ok(())
    }

    /// Appends FINGERPRINT; it must be the last attribute.
    pub fn fingerprint(&mut self) -> Result<(), EncodeError> {
        let attr_offset = self.len;
        let at = self.reserve(AttrType::FINGERPRINT, 4)?;
        let crc = fingerprint_at(self.buf, attr_offset);
        self.buf[at..at + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Finishes the message and returns its length; the bytes are `buf[..len]`.
    pub fn finish(self) -> usize {
        self.len
    }
}
