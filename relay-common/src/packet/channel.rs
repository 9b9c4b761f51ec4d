//! ChannelData on the wire (RFC 8656 §12): its header told from STUN by the first byte, its
//! length checked against the datagram, its padding's checksum contribution, and why a datagram
//! that matched no channel is not forwarded.

use super::CHANNEL_HLEN;
use crate::csum::Sum;
use crate::verdict::Verdict;

/// A ChannelData header (host-order numbers).
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelHeader {
    /// The channel number.
    pub channel: u16,
    /// The length field: data bytes, padding not included.
    pub len: u16,
}

/// The ChannelData header the payload starts with, if its first byte is 0x40-0x7F (how TURN
/// tells ChannelData from STUN, RFC 8656 §12). `payload` is the first 4 payload bytes.
#[inline(always)]
pub const fn channel_header(payload: &[u8; CHANNEL_HLEN]) -> Option<ChannelHeader> {
    if payload[0] & 0xC0 != 0x40 {
        return None;
    }
    Some(ChannelHeader {
        channel: u16::from_be_bytes([payload[0], payload[1]]),
        len: u16::from_be_bytes([payload[2], payload[3]]),
    })
}

/// Checks a ChannelData message on a bound channel against its UDP payload length and returns
/// how many bytes follow the data (padding, 0-3).
#[inline(always)]
pub const fn channel_data_fits(cd: ChannelHeader, payload_len: u16) -> Result<u16, Verdict> {
    let end = CHANNEL_HLEN as u32 + cd.len as u32;
    if end > payload_len as u32 {
        // The relay drops it as malformed too (ChannelDataError::Truncated).
        return Err(Verdict::DropLength);
    }
    let trailing = payload_len - end as u16;
    if trailing > 3 {
        return Err(Verdict::PassTrailingBytes);
    }
    Ok(trailing)
}

/// Why a UDP datagram that matched no channel is not forwarded. `first` is its first payload
/// byte (ignored when `payload_len` is 0).
#[inline(always)]
pub const fn unmatched(to_listener: bool, first: u8, payload_len: u16) -> Verdict {
    if !to_listener {
        return Verdict::PassNotForUs;
    }
    if payload_len == 0 {
        return Verdict::PassNotChannelData;
    }
    match first {
        0x00..=0x3F => Verdict::PassStun,
        // A channel byte but no room for the 4-byte header: the relay drops it as malformed.
        0x40..=0x7F if (payload_len as usize) < CHANNEL_HLEN => Verdict::DropLength,
        0x40..=0x7F => Verdict::PassUnknownChannel,
        _ => Verdict::PassNotChannelData,
    }
}

/// The checksum contribution of the bytes after a ChannelData message's data (its padding):
/// `bytes[..count]`, which start at offset `4 + data_len` of the UDP payload. The payload
/// starts at an even offset of the checksummed data, so a byte's parity there is its parity in
/// the payload.
#[inline(always)]
pub const fn trailing_sum(bytes: [u8; 3], count: u16, data_len: u16) -> Sum {
    let mut s = Sum::new();
    let mut i = 0;
    while i < 3 {
        if i < count as usize {
            let offset = CHANNEL_HLEN + data_len as usize + i;
            s = s.add_byte(bytes[i], offset & 1 == 0);
        }
        i += 1;
    }
    s
}
