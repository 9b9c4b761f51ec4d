//! TURN Send and Data indications (RFC 8656 §11), as the program relays them: what TURN clients
//! that never bind channels (Firefox's among them) send all their media in.
//!
//! - [`parse_send`] walks a Send indication (client -> relay) through a caller's [`Words`]
//!   reader, a bounded number of attributes ([`MAX_ATTRIBUTES`]), and returns where its data is
//!   and which peer it goes to, or why the program must leave it to userspace ([`Refusal`]).
//! - [`crc32_update8`], [`crc32_update4`] and [`crc32_update_byte`] are CRC-32 (ISO HDLC, the
//!   one zlib and FINGERPRINT use) by slicing-by-8 on tables computed at compile time, for a
//!   bounded loop over 8-byte blocks; [`check_fingerprint`] is that loop over a [`Words`].
//! - [`data_indication`] builds what goes in front of a peer's data towards a client (relay ->
//!   client): STUN header, XOR-PEER-ADDRESS and DATA's header, with their checksum sum.
//!
//! Offsets are from the start of the UDP payload, which is where a STUN message starts: every
//! attribute starts at a multiple of 4, so every offset returned is even and the data keeps its
//! 16-bit word parity when the program moves it to offset 0 (towards a peer) or puts a header
//! of 36 or 48 bytes in front of it (towards a client): its one's-complement sum does not change.
//!
//! The rooms: `send` (the Send indication walk), `crc32` (CRC-32 and the FINGERPRINT
//! check), `data` (the Data indication header).
// Which way a packet goes is decided by matching on enums here: every variant is named.
#![deny(clippy::wildcard_enum_match_arm)]

use crate::packet::MAX_FRAME;

mod crc32;
mod data;
mod send;

pub use crc32::*;
pub use data::*;
pub use send::*;

/// STUN header length (type, length, magic cookie, transaction ID).
pub const STUN_HLEN: usize = 20;
/// STUN attribute header length (type, length).
pub const ATTR_HLEN: usize = 4;
/// The magic cookie of RFC 8489 §5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The message type of a Send indication (method 0x006, class indication).
pub const SEND_INDICATION: u16 = 0x0016;
/// The message type of a Data indication (method 0x007, class indication).
pub const DATA_INDICATION: u16 = 0x0017;
/// MESSAGE-INTEGRITY (RFC 8489 §14.5).
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// XOR-PEER-ADDRESS (RFC 8656 §18.3).
pub const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (RFC 8656 §18.4).
pub const ATTR_DATA: u16 = 0x0013;
/// DONT-FRAGMENT (RFC 8656 §18.8).
pub const ATTR_DONT_FRAGMENT: u16 = 0x001A;
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
pub const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// FINGERPRINT (RFC 8489 §14.7).
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// What FINGERPRINT XORs into the CRC-32 ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// The most attributes [`parse_send`] walks; a Send indication with more goes up. A browser's
/// has two to four (XOR-PEER-ADDRESS, DATA, and maybe DONT-FRAGMENT, SOFTWARE, FINGERPRINT).
pub const MAX_ATTRIBUTES: usize = 8;
/// The longest Data indication header [`data_indication`] writes: 20 (STUN) + 24
/// (XOR-PEER-ADDRESS of an IPv6 peer) + 4 (DATA's attribute header).
pub const MAX_DATA_HEADER: usize = STUN_HLEN + ATTR_HLEN + 20 + ATTR_HLEN;
/// The most 8-byte blocks [`check_fingerprint`] runs the CRC over: a whole frame's.
pub const MAX_CRC_BLOCKS: usize = MAX_FRAME.div_ceil(8);
/// The CRC register before the first byte.
pub const CRC32_INIT: u32 = 0xFFFF_FFFF;

/// What the program reads a message through: the 4 bytes at `offset` of the UDP payload, or
/// `None` if the payload does not have them. The program implements it over packet memory (a
/// bounds-checked load), tests and userspace over a byte slice. Every offset asked for is a
/// multiple of 4.
pub trait Words {
    /// The 4 bytes at `offset`.
    fn word(&self, offset: usize) -> Option<[u8; 4]>;
}

impl Words for [u8] {
    #[inline(always)]
    fn word(&self, offset: usize) -> Option<[u8; 4]> {
        match self.get(offset..offset.checked_add(4)?) {
            Some(&[a, b, c, d]) => Some([a, b, c, d]),
            _ => None,
        }
    }
}

/// Why a message is not relayed by the program: every one means "up to userspace, unchanged",
/// which decides (relays, drops or answers) as it does for any message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a Send indication (another method or class, or not STUN at all).
    NotSend,
    /// No magic cookie: an RFC 3489 message (userspace drops it).
    NoCookie,
    /// Shorter than a STUN header, or a length field that is not the UDP payload's length
    /// minus 20 or not a multiple of 4.
    Length,
    /// An attribute that runs past the end of the message, or a word the reader did not have.
    Truncated,
    /// An attribute after FINGERPRINT, which must be last.
    AfterFingerprint,
    /// A second XOR-PEER-ADDRESS, DATA or DONT-FRAGMENT.
    Duplicate,
    /// A comprehension-required attribute (type below 0x8000) that a Send indication does not
    /// carry (RFC 8489 §6.3.3).
    UnknownRequired,
    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256: indications are not authenticated.
    Integrity,
    /// More than [`MAX_ATTRIBUTES`] attributes.
    TooManyAttributes,
    /// An attribute whose length is wrong for its type: XOR-PEER-ADDRESS not 8 (IPv4) or 20
    /// (IPv6), DONT-FRAGMENT not 0, FINGERPRINT not 4.
    AttributeLength,
    /// An address family that is neither IPv4 nor IPv6.
    Family,
    /// No XOR-PEER-ADDRESS.
    MissingPeer,
    /// No DATA.
    MissingData,
    /// A FINGERPRINT that does not match the message (userspace drops it).
    BadFingerprint,
    /// More than the program handles: a message beyond [`MAX_CRC_BLOCKS`] to fingerprint, or
    /// data too long for a Data indication's 16-bit length.
    TooLong,
}

#[cfg(test)]
#[allow(clippy::wildcard_enum_match_arm)] // tests may lump the cases they do not check
mod tests;
