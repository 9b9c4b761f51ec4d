//! Send indications (RFC 8656 §11.2) walked through a [`Words`] reader: the attributes the
//! program accepts, the peer from XOR-PEER-ADDRESS and where DATA's value is.

#[cfg(doc)]
use super::check_fingerprint;
use super::{
    ATTR_DATA, ATTR_DONT_FRAGMENT, ATTR_FINGERPRINT, ATTR_HLEN, ATTR_MESSAGE_INTEGRITY,
    ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_XOR_PEER_ADDRESS, MAGIC_COOKIE, MAX_ATTRIBUTES, Refusal,
    SEND_INDICATION, STUN_HLEN, Words,
};
use crate::maps::{FAMILY_IPV4, FAMILY_IPV6};

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
pub(super) const fn xor_pad(txid: &[u8; 12]) -> u128 {
    ((MAGIC_COOKIE as u128) << 96)
        | ((u32::from_be_bytes([txid[0], txid[1], txid[2], txid[3]]) as u128) << 64)
        | ((u32::from_be_bytes([txid[4], txid[5], txid[6], txid[7]]) as u128) << 32)
        | u32::from_be_bytes([txid[8], txid[9], txid[10], txid[11]]) as u128
}
