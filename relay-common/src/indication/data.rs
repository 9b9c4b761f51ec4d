//! Data indications (RFC 8656 §11.4): the header that goes in front of a peer's data towards
//! a client, with its checksum sum.

use super::{
    ATTR_DATA, ATTR_HLEN, ATTR_XOR_PEER_ADDRESS, DATA_INDICATION, MAGIC_COOKIE, MAX_DATA_HEADER,
    Refusal, STUN_HLEN, xor_pad,
};
use crate::csum::Sum;
use crate::maps::{FAMILY_IPV4, FAMILY_IPV6};

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
