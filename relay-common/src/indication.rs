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

use crate::csum::Sum;
use crate::maps::{FAMILY_IPV4, FAMILY_IPV6};
use crate::packet::MAX_FRAME;

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

/// Where a Send indication's FINGERPRINT is.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct Fingerprint {
    /// The offset of the FINGERPRINT attribute (its header): the CRC covers the bytes before.
    pub offset: u16,
    /// The value it carries.
    pub value: u32,
}

/// A Send indication the program may relay: the peer it goes to and where its data is.
///
/// `repr(C, align(8))` with the address first, as [`crate::packet::Ip`], for the same reason.
#[repr(C, align(8))]
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct SendIndication {
    /// The peer's address from XOR-PEER-ADDRESS, un-XORed, in the crate's 16-byte layout. As
    /// on the wire: an IPv4-mapped IPv6 address stays IPv6, as userspace takes it.
    pub peer_addr: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub peer_family: u8,
    /// The peer's port (host order).
    pub peer_port: u16,
    /// The offset of the data's first byte (DATA's value): a multiple of 4.
    pub data_offset: u16,
    /// The data's length (DATA's length field, padding not included).
    pub data_len: u16,
    /// Whether DONT-FRAGMENT is present (RFC 8656 §11.2: the client asks for the DF bit on
    /// what goes to the peer). Userspace ignores it: its relay sockets send with the system's
    /// default, which on Linux is path MTU discovery, DF set.
    pub dont_fragment: bool,
    /// FINGERPRINT, if present: the program checks it ([`check_fingerprint`]) before relaying,
    /// as userspace drops a message whose FINGERPRINT is wrong.
    pub fingerprint: Option<Fingerprint>,
}

/// Checks a STUN header's first 8 bytes (type, length, cookie) against the UDP payload's length:
/// a Send indication whose attributes fill the payload exactly.
#[inline(always)]
pub const fn check_send_header(
    first: [u8; 4],
    cookie: [u8; 4],
    payload_len: u16,
) -> Result<(), Refusal> {
    if u16::from_be_bytes([first[0], first[1]]) != SEND_INDICATION {
        return Err(Refusal::NotSend);
    }
    if u32::from_be_bytes(cookie) != MAGIC_COOKIE {
        return Err(Refusal::NoCookie);
    }
    let length = u16::from_be_bytes([first[2], first[3]]) as usize;
    if (payload_len as usize) < STUN_HLEN
        || length != payload_len as usize - STUN_HLEN
        || !length.is_multiple_of(4)
    {
        return Err(Refusal::Length);
    }
    Ok(())
}

/// The walk's state: where the next attribute is and what was found so far. Offsets of 0 are
/// "not found" (no attribute is at offset 0, the header is).
#[derive(Clone, Copy)]
#[cfg_attr(test, derive(Debug))]
#[cfg_attr(not(test), allow(missing_debug_implementations))]
struct Walk {
    /// The next attribute's offset.
    offset: u16,
    /// The message's length (the UDP payload's).
    end: u16,
    peer: u16,
    peer_len: u16,
    data: u16,
    data_len: u16,
    fingerprint: u16,
    dont_fragment: bool,
}

impl Walk {
    #[inline(always)]
    const fn new(payload_len: u16) -> Self {
        Walk {
            offset: STUN_HLEN as u16,
            end: payload_len,
            peer: 0,
            peer_len: 0,
            data: 0,
            data_len: 0,
            fingerprint: 0,
            dont_fragment: false,
        }
    }

    #[inline(always)]
    const fn done(&self) -> bool {
        self.offset >= self.end
    }

    /// Takes the attribute whose header is `h` (at `self.offset`) and moves past it and its
    /// padding.
    #[inline(always)]
    const fn attribute(&mut self, h: [u8; 4]) -> Result<(), Refusal> {
        let typ = u16::from_be_bytes([h[0], h[1]]);
        let len = u16::from_be_bytes([h[2], h[3]]);
        let at = self.offset;
        // Padded to 4 bytes (RFC 8489 §14); in 32 bits, so that it cannot wrap.
        let next = at as u32 + ATTR_HLEN as u32 + ((len as u32 + 3) & !3);
        if next > self.end as u32 {
            return Err(Refusal::Truncated);
        }
        if self.fingerprint != 0 {
            return Err(Refusal::AfterFingerprint);
        }
        match typ {
            ATTR_XOR_PEER_ADDRESS => {
                if self.peer != 0 {
                    return Err(Refusal::Duplicate);
                }
                if len != 8 && len != 20 {
                    return Err(Refusal::AttributeLength);
                }
                self.peer = at;
                self.peer_len = len;
            }
            ATTR_DATA => {
                if self.data != 0 {
                    return Err(Refusal::Duplicate);
                }
                self.data = at;
                self.data_len = len;
            }
            ATTR_DONT_FRAGMENT => {
                if self.dont_fragment {
                    return Err(Refusal::Duplicate);
                }
                if len != 0 {
                    return Err(Refusal::AttributeLength);
                }
                self.dont_fragment = true;
            }
            ATTR_FINGERPRINT => {
                if len != 4 {
                    return Err(Refusal::AttributeLength);
                }
                self.fingerprint = at;
            }
            ATTR_MESSAGE_INTEGRITY | ATTR_MESSAGE_INTEGRITY_SHA256 => {
                return Err(Refusal::Integrity);
            }
            // Comprehension-required and not one of the above.
            0..0x8000 => return Err(Refusal::UnknownRequired),
            // Comprehension-optional (SOFTWARE, ...): skipped.
            _ => {}
        }
        self.offset = next as u16;
        Ok(())
    }
}

/// Parses a Send indication of `payload_len` bytes (the whole UDP payload) read through
/// `words`; `txid` is its transaction ID (bytes 8-19), which the caller read, for un-XORing an
/// IPv6 peer address.
///
/// Reads at most 2 + [`MAX_ATTRIBUTES`] + 6 words, all at offsets below `payload_len`: the
/// header's first two, one per attribute in a loop with a constant bound, then the peer's
/// address (2 words for IPv4, 5 for IPv6) and the FINGERPRINT value. FINGERPRINT is not
/// checked here: see [`check_fingerprint`].
#[inline(always)]
pub fn parse_send<W: Words + ?Sized>(
    words: &W,
    payload_len: u16,
    txid: &[u8; 12],
) -> Result<SendIndication, Refusal> {
    parse_send_within::<MAX_ATTRIBUTES, W>(words, payload_len, txid)
}

/// [`parse_send`] of a message with at most `N` attributes (more: [`Refusal::TooManyAttributes`]).
/// The XDP program takes 4 (XOR-PEER-ADDRESS, DATA, DONT-FRAGMENT, FINGERPRINT: what every
/// client seen sends): the verifier walks every order of the attributes it may meet, and 8
/// cost it most of its budget.
#[inline(always)]
pub fn parse_send_within<const N: usize, W: Words + ?Sized>(
    words: &W,
    payload_len: u16,
    txid: &[u8; 12],
) -> Result<SendIndication, Refusal> {
    let (Some(first), Some(cookie)) = (words.word(0), words.word(4)) else {
        return Err(Refusal::Length);
    };
    check_send_header(first, cookie, payload_len)?;
    let mut walk = Walk::new(payload_len);
    let mut i = 0;
    while i < N {
        if walk.done() {
            break;
        }
        let Some(h) = words.word(walk.offset as usize) else {
            return Err(Refusal::Truncated);
        };
        walk.attribute(h)?;
        i += 1;
    }
    if !walk.done() {
        return Err(Refusal::TooManyAttributes);
    }
    if walk.peer == 0 {
        return Err(Refusal::MissingPeer);
    }
    if walk.data == 0 {
        return Err(Refusal::MissingData);
    }

    let value = walk.peer as usize + ATTR_HLEN;
    let Some(head) = words.word(value) else {
        return Err(Refusal::Truncated);
    };
    // head[0] is reserved: zero, and ignored by receivers (RFC 8489 §14.1).
    let port = u16::from_be_bytes([head[2], head[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let (family, addr) = match (head[1], walk.peer_len) {
        (1, 8) => {
            let Some(a) = words.word(value + 4) else {
                return Err(Refusal::Truncated);
            };
            let a = u32::from_be_bytes(a) ^ MAGIC_COOKIE;
            (FAMILY_IPV4, ((a as u128) << 96).to_be_bytes())
        }
        (2, 20) => {
            let (Some(a), Some(b), Some(c), Some(d)) = (
                words.word(value + 4),
                words.word(value + 8),
                words.word(value + 12),
                words.word(value + 16),
            ) else {
                return Err(Refusal::Truncated);
            };
            let raw = ((u32::from_be_bytes(a) as u128) << 96)
                | ((u32::from_be_bytes(b) as u128) << 64)
                | ((u32::from_be_bytes(c) as u128) << 32)
                | u32::from_be_bytes(d) as u128;
            (FAMILY_IPV6, (raw ^ xor_pad(txid)).to_be_bytes())
        }
        (1 | 2, _) => return Err(Refusal::AttributeLength),
        _ => return Err(Refusal::Family),
    };

    let fingerprint = if walk.fingerprint != 0 {
        let Some(v) = words.word(walk.fingerprint as usize + ATTR_HLEN) else {
            return Err(Refusal::Truncated);
        };
        Some(Fingerprint {
            offset: walk.fingerprint,
            value: u32::from_be_bytes(v),
        })
    } else {
        None
    };

    Ok(SendIndication {
        peer_addr: addr,
        peer_family: family,
        peer_port: port,
        data_offset: walk.data + ATTR_HLEN as u16,
        data_len: walk.data_len,
        dont_fragment: walk.dont_fragment,
        fingerprint,
    })
}

/// What an IPv6 address is XORed with: the magic cookie followed by the transaction ID.
#[inline(always)]
const fn xor_pad(txid: &[u8; 12]) -> u128 {
    ((MAGIC_COOKIE as u128) << 96)
        | ((u32::from_be_bytes([txid[0], txid[1], txid[2], txid[3]]) as u128) << 64)
        | ((u32::from_be_bytes([txid[4], txid[5], txid[6], txid[7]]) as u128) << 32)
        | u32::from_be_bytes([txid[8], txid[9], txid[10], txid[11]]) as u128
}

// ---------------------------------------------------------------------------------------------
// CRC-32

/// The slicing-by-8 tables of the reflected CRC-32 polynomial 0xEDB88320: `T[0]` is the
/// byte-at-a-time table, `T[k][i]` the CRC of byte `i` followed by `k` zero bytes.
pub const fn crc32_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// [`crc32_tables`], computed at compile time: 8 KiB of read-only data (in the program, its
/// `.rodata`, which the loader makes a frozen array map).
pub static CRC32_TABLES: [[u32; 256]; 8] = crc32_tables();

/// Entry `i` of table `k`. Indexing with a `u8` cannot go out of bounds, so no bounds check
/// (and no panic) is emitted.
#[inline(always)]
const fn t(k: usize, i: u8) -> u32 {
    CRC32_TABLES[k & 7][i as usize]
}

/// Runs the CRC register (start from [`CRC32_INIT`]) over 8 bytes.
#[inline(always)]
pub const fn crc32_update8(crc: u32, block: [u8; 8]) -> u32 {
    let c = crc ^ u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
    t(7, c as u8)
        ^ t(6, (c >> 8) as u8)
        ^ t(5, (c >> 16) as u8)
        ^ t(4, (c >> 24) as u8)
        ^ t(3, block[4])
        ^ t(2, block[5])
        ^ t(1, block[6])
        ^ t(0, block[7])
}

/// Runs the CRC register over 4 bytes (a message's length is a multiple of 4, so after its
/// 8-byte blocks at most one of these is left).
#[inline(always)]
pub const fn crc32_update4(crc: u32, word: [u8; 4]) -> u32 {
    let c = crc ^ u32::from_le_bytes(word);
    t(3, c as u8) ^ t(2, (c >> 8) as u8) ^ t(1, (c >> 16) as u8) ^ t(0, (c >> 24) as u8)
}

/// Runs the CRC register over one byte.
#[inline(always)]
pub const fn crc32_update_byte(crc: u32, byte: u8) -> u32 {
    t(0, (crc as u8) ^ byte) ^ (crc >> 8)
}

/// The CRC-32 a register stands for (its complement).
#[inline(always)]
pub const fn crc32_finish(crc: u32) -> u32 {
    !crc
}

/// The FINGERPRINT value of a message whose bytes up to the FINGERPRINT attribute ran through
/// the register `crc`.
#[inline(always)]
pub const fn fingerprint_value(crc: u32) -> u32 {
    crc32_finish(crc) ^ FINGERPRINT_XOR
}

/// The CRC-32 of `bytes`, in full. For tests and userspace; the program runs the update
/// functions over packet memory (slices index with a panic path the verifier refuses).
pub const fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = CRC32_INIT;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        crc = crc32_update8(
            crc,
            [
                bytes[i],
                bytes[i + 1],
                bytes[i + 2],
                bytes[i + 3],
                bytes[i + 4],
                bytes[i + 5],
                bytes[i + 6],
                bytes[i + 7],
            ],
        );
        i += 8;
    }
    while i < bytes.len() {
        crc = crc32_update_byte(crc, bytes[i]);
        i += 1;
    }
    crc32_finish(crc)
}

// The check value of CRC-32 (the CRC of "123456789"), at compile time.
const _: () = assert!(crc32(b"123456789") == 0xCBF4_3926);

/// Checks a Send indication's FINGERPRINT ([`SendIndication::fingerprint`]): the CRC of the
/// bytes before it (the header's length field as received: FINGERPRINT is last, so the length
/// covers it, as RFC 8489 §14.7 computes it), read through `words` as 8-byte blocks and a last
/// 4 bytes. The loop's bound is [`MAX_CRC_BLOCKS`], and it runs `fp.offset / 8` times.
#[inline(always)]
pub fn check_fingerprint<W: Words + ?Sized>(words: &W, fp: Fingerprint) -> Result<(), Refusal> {
    let len = fp.offset as usize;
    let blocks = len / 8;
    if blocks > MAX_CRC_BLOCKS {
        return Err(Refusal::TooLong);
    }
    let mut crc = CRC32_INIT;
    let mut i = 0;
    while i < MAX_CRC_BLOCKS {
        if i >= blocks {
            break;
        }
        let (Some(a), Some(b)) = (words.word(8 * i), words.word(8 * i + 4)) else {
            return Err(Refusal::Truncated);
        };
        crc = crc32_update8(crc, [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]);
        i += 1;
    }
    if len % 8 == 4 {
        let Some(w) = words.word(len - 4) else {
            return Err(Refusal::Truncated);
        };
        crc = crc32_update4(crc, w);
    }
    if fingerprint_value(crc) == fp.value {
        Ok(())
    } else {
        Err(Refusal::BadFingerprint)
    }
}

// ---------------------------------------------------------------------------------------------
// Data indications

/// What goes in front of a peer's data to make it a Data indication, and what follows it.
///
/// `repr(C, align(8))` with the bytes first, so that they are written (and can be copied) in
/// aligned 32-bit words, as [`crate::packet::Rewrite::headers`].
#[repr(C, align(8))]
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct DataHeader {
    /// STUN header, XOR-PEER-ADDRESS, DATA's attribute header; [`DataHeader::len`] bytes used
    /// (36 for an IPv4 peer, 48 for an IPv6 one), the rest zero.
    pub bytes: [u8; MAX_DATA_HEADER],
    /// The one's-complement sum of the used bytes, as they sit at the start of the UDP
    /// payload. The zero padding adds nothing, and the data keeps its sum (it moves by an even
    /// offset): the new UDP checksum is the old one updated for the pseudo-header and UDP
    /// header changes, plus this.
    pub sum: Sum,
    /// How many bytes of [`DataHeader::bytes`] are used.
    pub len: u16,
    /// How many zero bytes follow the data (0-3): DATA is padded to 4 bytes.
    pub padding: u16,
    /// The whole message's length: header, data and padding (the new UDP payload length).
    pub message_len: u16,
}

impl DataHeader {
    /// An all-zero header to build into.
    pub const EMPTY: DataHeader = DataHeader {
        bytes: [0; MAX_DATA_HEADER],
        sum: Sum::new(),
        len: 0,
        padding: 0,
        message_len: 0,
    };
}

/// The Data indication header (RFC 8656 §11.4) for `data_len` bytes of data from the peer at
/// `addr`:`port` (`family` [`FAMILY_IPV4`] or [`FAMILY_IPV6`], the address in the crate's
/// 16-byte layout, the port host order), with transaction ID `txid`. No FINGERPRINT, as
/// userspace sends none.
#[inline(always)]
pub const fn data_indication(
    txid: &[u8; 12],
    family: u8,
    addr: &[u8; 16],
    port: u16,
    data_len: u16,
) -> Result<DataHeader, Refusal> {
    let mut h = DataHeader::EMPTY;
    match data_indication_into(txid, family, addr, port, data_len, &mut h) {
        Ok(()) => Ok(h),
        Err(r) => Err(r),
    }
}

/// [`data_indication`] into a header the caller owns (the program's scratch map). On error `h`
/// is left as it was.
#[inline(always)]
pub const fn data_indication_into(
    txid: &[u8; 12],
    family: u8,
    addr: &[u8; 16],
    port: u16,
    data_len: u16,
    h: &mut DataHeader,
) -> Result<(), Refusal> {
    let v6 = match family {
        FAMILY_IPV4 => false,
        FAMILY_IPV6 => true,
        _ => return Err(Refusal::Family),
    };
    let addr_len: usize = if v6 { 20 } else { 8 };
    let header_len = STUN_HLEN + ATTR_HLEN + addr_len + ATTR_HLEN;
    let padding = (4 - data_len as usize % 4) % 4;
    let length = header_len - STUN_HLEN + data_len as usize + padding;
    if length > 0xFFFF {
        return Err(Refusal::TooLong);
    }
    let mut s = Sum::new();
    s = put32(h, 0, ((DATA_INDICATION as u32) << 16) | length as u32, s);
    s = put32(h, 4, MAGIC_COOKIE, s);
    s = put32(
        h,
        8,
        u32::from_be_bytes([txid[0], txid[1], txid[2], txid[3]]),
        s,
    );
    s = put32(
        h,
        12,
        u32::from_be_bytes([txid[4], txid[5], txid[6], txid[7]]),
        s,
    );
    s = put32(
        h,
        16,
        u32::from_be_bytes([txid[8], txid[9], txid[10], txid[11]]),
        s,
    );
    s = put32(
        h,
        20,
        ((ATTR_XOR_PEER_ADDRESS as u32) << 16) | addr_len as u32,
        s,
    );
    let xport = port ^ (MAGIC_COOKIE >> 16) as u16;
    let fam_byte: u32 = if v6 { 2 } else { 1 };
    s = put32(h, 24, (fam_byte << 16) | xport as u32, s);
    let a = u128::from_be_bytes(*addr);
    let data_at = if v6 {
        let x = a ^ xor_pad(txid);
        s = put32(h, 28, (x >> 96) as u32, s);
        s = put32(h, 32, (x >> 64) as u32, s);
        s = put32(h, 36, (x >> 32) as u32, s);
        s = put32(h, 40, x as u32, s);
        44
    } else {
        s = put32(h, 28, (a >> 96) as u32 ^ MAGIC_COOKIE, s);
        // The IPv6 tail of a header built before: zero, so the bytes past `len` always are.
        put32(h, 36, 0, s);
        put32(h, 40, 0, s);
        put32(h, 44, 0, s);
        32
    };
    s = put32(h, data_at, ((ATTR_DATA as u32) << 16) | data_len as u32, s);
    h.sum = s;
    h.len = header_len as u16;
    h.padding = padding as u16;
    h.message_len = (STUN_HLEN + length) as u16;
    Ok(())
}

/// Writes `value` big-endian at byte `at` (a multiple of 4) of `h.bytes` as one 32-bit store,
/// and returns `sum` with it added.
///
/// `bytes` is the first field of the 8-aligned, `repr(C)` [`DataHeader`], so a multiple of 4
/// in it is 4-aligned: the BPF target emits one store, where it splits an access to a byte
/// array it cannot prove aligned into single bytes (see `packet::put16`).
#[inline(always)]
const fn put32(h: &mut DataHeader, at: usize, value: u32, sum: Sum) -> Sum {
    debug_assert!(at.is_multiple_of(4) && at + 4 <= MAX_DATA_HEADER);
    let p = h.bytes.as_mut_ptr();
    // SAFETY: inside `bytes` and 4-aligned (see above).
    #[allow(unsafe_code)]
    unsafe {
        (p.add(at) as *mut u32).write(value.to_be())
    };
    sum.add32(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use super::*;

    const TXID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    /// One attribute of a test message.
    #[derive(Clone)]
    enum A {
        /// XOR-PEER-ADDRESS of an IPv4 peer.
        Peer4([u8; 4], u16),
        /// XOR-PEER-ADDRESS of an IPv6 peer.
        Peer6([u8; 16], u16),
        Data(Vec<u8>),
        DontFragment,
        Software(&'static str),
        /// Any type, any value.
        Raw(u16, Vec<u8>),
        /// FINGERPRINT, computed (or `Some(value)` as given).
        Fingerprint(Option<u32>),
    }

    /// A message of type `typ` with these attributes, padded with `pad` bytes, as a relay's
    /// encoder writes it: the length field kept current, FINGERPRINT over what precedes it.
    fn message(typ: u16, attrs: &[A], pad: u8) -> Vec<u8> {
        let mut m = vec![0u8; STUN_HLEN];
        m[0..2].copy_from_slice(&typ.to_be_bytes());
        m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m[8..20].copy_from_slice(&TXID);
        for a in attrs {
            let (t, v): (u16, Vec<u8>) = match a {
                A::Peer4(ip, port) => {
                    let mut v = vec![0, 1];
                    v.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
                    let x = u32::from_be_bytes(*ip) ^ MAGIC_COOKIE;
                    v.extend_from_slice(&x.to_be_bytes());
                    (ATTR_XOR_PEER_ADDRESS, v)
                }
                A::Peer6(ip, port) => {
                    let mut v = vec![0, 2];
                    v.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
                    let x = u128::from_be_bytes(*ip) ^ xor_pad(&TXID);
                    v.extend_from_slice(&x.to_be_bytes());
                    (ATTR_XOR_PEER_ADDRESS, v)
                }
                A::Data(d) => (ATTR_DATA, d.clone()),
                A::DontFragment => (ATTR_DONT_FRAGMENT, vec![]),
                A::Software(s) => (0x8022, s.as_bytes().to_vec()),
                A::Raw(t, v) => (*t, v.clone()),
                A::Fingerprint(value) => {
                    let at = m.len();
                    let length = (at + 8 - STUN_HLEN) as u16;
                    m[2..4].copy_from_slice(&length.to_be_bytes());
                    let fp = value.unwrap_or(crc32(&m) ^ FINGERPRINT_XOR);
                    (ATTR_FINGERPRINT, fp.to_be_bytes().to_vec())
                }
            };
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&(v.len() as u16).to_be_bytes());
            m.extend_from_slice(&v);
            while !m.len().is_multiple_of(4) {
                m.push(pad);
            }
            let length = (m.len() - STUN_HLEN) as u16;
            m[2..4].copy_from_slice(&length.to_be_bytes());
        }
        m
    }

    fn send(attrs: &[A]) -> Vec<u8> {
        message(SEND_INDICATION, attrs, 0)
    }

    fn parse(m: &[u8]) -> Result<SendIndication, Refusal> {
        parse_send(m, m.len() as u16, &TXID)
    }

    const V4: [u8; 4] = [198, 51, 100, 7];
    const V6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0xab, 0xcd, 0xef, 0x01,
    ];

    fn v4_16(ip: [u8; 4]) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&ip);
        a
    }

    /// Every order of `items` (Heap's algorithm).
    fn permutations(items: &[A]) -> Vec<Vec<A>> {
        fn go(k: usize, a: &mut Vec<A>, out: &mut Vec<Vec<A>>) {
            if k <= 1 {
                out.push(a.clone());
                return;
            }
            for i in 0..k - 1 {
                go(k - 1, a, out);
                if k.is_multiple_of(2) {
                    a.swap(i, k - 1);
                } else {
                    a.swap(0, k - 1);
                }
            }
            go(k - 1, a, out);
        }
        let mut out = Vec::new();
        go(items.len(), &mut items.to_vec(), &mut out);
        out
    }

    #[test]
    fn crc32_known_values() {
        // The CRC-32 check value, and zlib's crc32 of "The quick brown fox ...".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32(b""), 0);
        // The tables are the polynomial's: T[0][1] is the polynomial shifted once.
        assert_eq!(CRC32_TABLES[0][128], 0xEDB8_8320);
    }

    #[test]
    fn crc32_block_word_and_byte_updates_agree() {
        let bytes: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..=bytes.len() {
            let mut by_byte = CRC32_INIT;
            for &b in &bytes[..len] {
                by_byte = crc32_update_byte(by_byte, b);
            }
            let mut by_word = CRC32_INIT;
            for w in bytes[..len - len % 4].chunks(4) {
                by_word = crc32_update4(by_word, [w[0], w[1], w[2], w[3]]);
            }
            for &b in &bytes[len - len % 4..len] {
                by_word = crc32_update_byte(by_word, b);
            }
            assert_eq!(crc32_finish(by_byte), crc32(&bytes[..len]), "{len}");
            assert_eq!(by_word, by_byte, "{len}");
        }
    }

    proptest::proptest! {
        #[test]
        fn crc32_matches_crc32fast(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            proptest::prop_assert_eq!(crc32(&bytes), crc32fast::hash(&bytes));
        }
    }

    #[test]
    fn every_order_with_and_without_the_extras() {
        let base = [A::Peer4(V4, 40000), A::Data(b"hello".to_vec())];
        let extras = [A::DontFragment, A::Software("xdpturn test")];
        for mask in 0..4u8 {
            let mut attrs: Vec<A> = base.to_vec();
            for (i, e) in extras.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    attrs.push(e.clone());
                }
            }
            for order in permutations(&attrs) {
                for fp in [false, true] {
                    let mut order = order.clone();
                    if fp {
                        order.push(A::Fingerprint(None));
                    }
                    let m = send(&order);
                    let plan = parse(&m).unwrap();
                    assert_eq!(plan.peer_family, FAMILY_IPV4);
                    assert_eq!(plan.peer_addr, v4_16(V4));
                    assert_eq!(plan.peer_port, 40000);
                    let at = plan.data_offset as usize;
                    assert_eq!(&m[at..at + plan.data_len as usize], b"hello");
                    assert_eq!(plan.dont_fragment, mask & 1 != 0);
                    assert_eq!(plan.fingerprint.is_some(), fp);
                    if let Some(f) = plan.fingerprint {
                        assert_eq!(f.offset as usize, m.len() - 8);
                        assert_eq!(check_fingerprint(&m[..], f), Ok(()));
                    }
                }
            }
        }
    }

    #[test]
    fn ipv6_peer_and_data_lengths() {
        for len in (0..=4).chain([5, 7, 1199, 1200]) {
            let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5A).collect();
            for peer in [A::Peer4(V4, 1), A::Peer6(V6, 65535)] {
                let m = send(&[peer.clone(), A::Data(data.clone()), A::Fingerprint(None)]);
                let plan = parse(&m).unwrap();
                let at = plan.data_offset as usize;
                assert_eq!(at % 4, 0);
                assert_eq!(&m[at..at + plan.data_len as usize], &data[..]);
                match peer {
                    A::Peer6(..) => {
                        assert_eq!(plan.peer_family, FAMILY_IPV6);
                        assert_eq!(plan.peer_addr, V6);
                        assert_eq!(plan.peer_port, 65535);
                    }
                    _ => assert_eq!((plan.peer_family, plan.peer_port), (FAMILY_IPV4, 1)),
                }
                assert_eq!(check_fingerprint(&m[..], plan.fingerprint.unwrap()), Ok(()));
            }
        }
    }

    #[test]
    fn padding_bytes_are_ignored() {
        let m = message(
            SEND_INDICATION,
            &[A::Data(b"abc".to_vec()), A::Peer4(V4, 9), A::Software("x")],
            0x20,
        );
        let plan = parse(&m).unwrap();
        assert_eq!((plan.data_offset, plan.data_len), (24, 3));
    }

    #[test]
    fn header_refusals() {
        let good = send(&[A::Peer4(V4, 1), A::Data(b"x".to_vec())]);
        assert!(parse(&good).is_ok());
        // Data indication, Send request, Binding indication.
        for typ in [DATA_INDICATION, 0x0006, 0x0011] {
            let mut m = good.clone();
            m[0..2].copy_from_slice(&typ.to_be_bytes());
            assert_eq!(parse(&m), Err(Refusal::NotSend), "{typ:#x}");
        }
        let mut m = good.clone();
        m[4] ^= 1;
        assert_eq!(parse(&m), Err(Refusal::NoCookie));
        // Length field off by 4, not a multiple of 4, trailing bytes, short payloads.
        let mut m = good.clone();
        m[3] += 4;
        assert_eq!(parse(&m), Err(Refusal::Length));
        let mut m = good.clone();
        m[3] -= 1;
        assert_eq!(
            parse_send(&m[..m.len() - 1], m.len() as u16 - 1, &TXID),
            Err(Refusal::Length)
        );
        let mut m = good.clone();
        m.extend_from_slice(&[0; 4]);
        assert_eq!(parse(&m), Err(Refusal::Length));
        assert_eq!(parse_send(&good[..20], 20, &TXID), Err(Refusal::Length));
        assert_eq!(parse_send(&good[..8], 8, &TXID), Err(Refusal::Length));
        assert_eq!(parse_send(&good[..4], 4, &TXID), Err(Refusal::Length));
        // A header alone: no attributes.
        let mut m = good[..20].to_vec();
        m[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(parse(&m), Err(Refusal::MissingPeer));
    }

    #[test]
    fn attribute_refusals() {
        let p = || A::Peer4(V4, 1);
        let d = || A::Data(b"data".to_vec());
        for (attrs, want) in [
            (vec![d()], Refusal::MissingPeer),
            (vec![p()], Refusal::MissingData),
            (vec![p(), d(), p()], Refusal::Duplicate),
            (vec![p(), d(), d()], Refusal::Duplicate),
            (
                vec![p(), A::DontFragment, d(), A::DontFragment],
                Refusal::Duplicate,
            ),
            (
                vec![p(), d(), A::Fingerprint(None), A::Software("late")],
                Refusal::AfterFingerprint,
            ),
            (
                vec![p(), d(), A::Fingerprint(None), A::Fingerprint(None)],
                Refusal::AfterFingerprint,
            ),
            (
                vec![p(), d(), A::Raw(0x7001, vec![1])],
                Refusal::UnknownRequired,
            ),
            (
                vec![A::Raw(0x0006, b"user".to_vec()), p(), d()],
                Refusal::UnknownRequired,
            ),
            (
                vec![p(), d(), A::Raw(ATTR_MESSAGE_INTEGRITY, vec![0; 20])],
                Refusal::Integrity,
            ),
            (
                vec![p(), d(), A::Raw(ATTR_MESSAGE_INTEGRITY_SHA256, vec![0; 32])],
                Refusal::Integrity,
            ),
            (
                vec![p(), d(), A::Raw(ATTR_DONT_FRAGMENT, vec![1])],
                Refusal::AttributeLength,
            ),
            (
                vec![p(), d(), A::Raw(ATTR_FINGERPRINT, vec![0; 8])],
                Refusal::AttributeLength,
            ),
            (
                vec![A::Raw(ATTR_XOR_PEER_ADDRESS, vec![0, 1, 0, 0]), d()],
                Refusal::AttributeLength,
            ),
            (
                vec![A::Raw(ATTR_XOR_PEER_ADDRESS, vec![0; 20]), d()],
                Refusal::Family,
            ),
            (
                vec![A::Raw(ATTR_XOR_PEER_ADDRESS, [0, 1].repeat(10)), d()],
                Refusal::AttributeLength,
            ),
            (
                vec![
                    A::Raw(ATTR_XOR_PEER_ADDRESS, vec![0, 2, 0, 0, 1, 2, 3, 4]),
                    d(),
                ],
                Refusal::AttributeLength,
            ),
            (
                vec![
                    A::Raw(ATTR_XOR_PEER_ADDRESS, vec![0, 3, 0, 0, 1, 2, 3, 4]),
                    d(),
                ],
                Refusal::Family,
            ),
        ] {
            assert_eq!(parse(&send(&attrs)), Err(want), "{}", attrs.len());
        }
        // Comprehension-optional unknowns are skipped, up to the bound.
        let mut attrs = vec![p(), d()];
        for i in 0..MAX_ATTRIBUTES - 2 {
            attrs.push(A::Raw(0xC000 + i as u16, vec![i as u8; i]));
        }
        assert!(parse(&send(&attrs)).is_ok());
        attrs.push(A::Software("one too many"));
        assert_eq!(parse(&send(&attrs)), Err(Refusal::TooManyAttributes));
    }

    #[test]
    fn truncated_attributes() {
        let m = send(&[A::Peer6(V6, 1), A::Data(vec![7; 9]), A::Fingerprint(None)]);
        // Every shorter message whose length field says so (a multiple of 4): cut inside an
        // attribute, it is refused and never read past its end; cut between two, it is what
        // the attributes before the cut make.
        for cut in (24..m.len()).step_by(4) {
            let mut t = m[..cut].to_vec();
            t[2..4].copy_from_slice(&((cut - 20) as u16).to_be_bytes());
            let r = parse(&t);
            match cut {
                44 => assert_eq!(r, Err(Refusal::MissingData)),
                60 => assert_eq!(r.map(|p| p.fingerprint), Ok(None)),
                _ => assert_eq!(r, Err(Refusal::Truncated), "{cut}"),
            }
        }
        // An attribute length past the end, and padding past the end.
        let mut t = m.clone();
        t[22..24].copy_from_slice(&0x0100u16.to_be_bytes());
        assert_eq!(parse(&t), Err(Refusal::Truncated));
        let mut t = send(&[A::Peer4(V4, 1), A::Data(vec![1; 4])]);
        let n = t.len();
        t[n - 6..n - 4].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(parse(&t), Err(Refusal::Truncated));
        // A reader that has fewer bytes than the payload length says.
        assert_eq!(
            parse_send(&m[..m.len() - 4], m.len() as u16, &TXID),
            Err(Refusal::Truncated)
        );
    }

    #[test]
    fn bad_fingerprints() {
        let m = send(&[
            A::Peer4(V4, 1),
            A::Data(b"data!".to_vec()),
            A::Fingerprint(None),
        ]);
        let fp = parse(&m).unwrap().fingerprint.unwrap();
        assert_eq!(check_fingerprint(&m[..], fp), Ok(()));
        let wrong = Fingerprint {
            value: fp.value ^ 1,
            ..fp
        };
        assert_eq!(
            check_fingerprint(&m[..], wrong),
            Err(Refusal::BadFingerprint)
        );
        // A data byte changed after the fact.
        let mut t = m.clone();
        t[36] ^= 0x80;
        let fp = parse(&t).unwrap().fingerprint.unwrap();
        assert_eq!(check_fingerprint(&t[..], fp), Err(Refusal::BadFingerprint));
        // A zero FINGERPRINT.
        let bad = send(&[
            A::Peer4(V4, 1),
            A::Data(b"data!".to_vec()),
            A::Fingerprint(Some(0)),
        ]);
        let fp = parse(&bad).unwrap().fingerprint.unwrap();
        assert_eq!(
            check_fingerprint(&bad[..], fp),
            Err(Refusal::BadFingerprint)
        );
        // Offsets of 8k and 8k + 4 bytes both end in the right place.
        for len in 0..8 {
            let m = send(&[A::Peer4(V4, 1), A::Data(vec![3; len]), A::Fingerprint(None)]);
            let fp = parse(&m).unwrap().fingerprint.unwrap();
            assert_eq!(check_fingerprint(&m[..], fp), Ok(()), "{len}");
        }
    }

    #[test]
    fn data_indication_bytes() {
        let h = data_indication(&TXID, FAMILY_IPV4, &v4_16(V4), 40000, 5).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&[0x00, 0x17, 0x00, 0x18]);
        want.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        want.extend_from_slice(&TXID);
        want.extend_from_slice(&[0x00, 0x12, 0x00, 0x08, 0x00, 0x01]);
        want.extend_from_slice(&(40000u16 ^ 0x2112).to_be_bytes());
        want.extend_from_slice(&(u32::from_be_bytes(V4) ^ MAGIC_COOKIE).to_be_bytes());
        want.extend_from_slice(&[0x00, 0x13, 0x00, 0x05]);
        assert_eq!(&h.bytes[..h.len as usize], &want[..]);
        assert_eq!(&h.bytes[h.len as usize..], &[0; 12]);
        assert_eq!((h.len, h.padding, h.message_len), (36, 3, 44));
        assert_eq!(h.sum.fold(), Sum::new().add_bytes(&want).fold());
    }

    #[test]
    fn data_indications_parse_back_as_their_peer() {
        for len in (0..=4).chain([5, 6, 7, 1200]) {
            for (family, addr, port) in [(FAMILY_IPV4, v4_16(V4), 3478), (FAMILY_IPV6, V6, 1)] {
                let h = data_indication(&TXID, family, &addr, port, len).unwrap();
                assert_eq!(h.len as usize, if family == FAMILY_IPV6 { 48 } else { 36 });
                assert_eq!((h.len + len + h.padding) % 4, 0);
                assert_eq!(h.message_len, h.len + len + h.padding);
                let mut m = h.bytes[..h.len as usize].to_vec();
                m.extend((0..len).map(|i| i as u8));
                m.extend(core::iter::repeat_n(0, h.padding as usize));
                assert_eq!(m.len(), h.message_len as usize);
                assert_eq!(
                    h.sum.fold(),
                    Sum::new().add_bytes(&m[..h.len as usize]).fold()
                );
                // The same message as a Send indication is what the parser reads.
                m[1] = 0x16;
                let plan = parse(&m).unwrap();
                assert_eq!(
                    (plan.peer_family, plan.peer_addr, plan.peer_port),
                    (family, addr, port)
                );
                assert_eq!((plan.data_offset, plan.data_len), (h.len, len));
            }
        }
        // An IPv6 header, then an IPv4 one into the same place: no IPv6 bytes left behind.
        let mut h = DataHeader::EMPTY;
        data_indication_into(&TXID, FAMILY_IPV6, &V6, 1, 1, &mut h).unwrap();
        data_indication_into(&TXID, FAMILY_IPV4, &v4_16(V4), 1, 1, &mut h).unwrap();
        assert_eq!(
            h,
            data_indication(&TXID, FAMILY_IPV4, &v4_16(V4), 1, 1).unwrap()
        );
    }

    #[test]
    fn data_indication_refusals() {
        assert_eq!(data_indication(&TXID, 0, &V6, 1, 1), Err(Refusal::Family));
        // 48 - 20 + 65508 = 65536: one byte too many for the length field.
        assert_eq!(
            data_indication(&TXID, FAMILY_IPV6, &V6, 1, 0xFFFF - 27),
            Err(Refusal::TooLong)
        );
        let h = data_indication(&TXID, FAMILY_IPV6, &V6, 1, 0xFFFF - 31).unwrap();
        assert_eq!(u16::from_be_bytes([h.bytes[2], h.bytes[3]]), 0xFFFC);
    }
}
