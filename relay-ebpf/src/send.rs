//! Send indications from a client (RFC 8656 §11.2): the allocation and permission lookups,
//! the message read through packet memory, its FINGERPRINT checked, and the route of its data.

use relay_common::Verdict;
use relay_common::indication::{self, Words};
use relay_common::packet::{self, MAX_FRAME, Udp};

use crate::checksum::payload_sum;
use crate::frame::Frame;
use crate::maps::{CRC_BLOCKS, MOVE_MAX, Scratch, allocation, peer_entry};
use crate::mem::{load, load_at};

/// The UDP payload at `at`, as the 4-byte words the indication codec reads.
pub(crate) struct PacketWords<'a, F> {
    ctx: &'a F,
    at: usize,
}

impl<F: Frame> Words for PacketWords<'_, F> {
    #[inline(always)]
    fn word(&self, offset: usize) -> Option<[u8; 4]> {
        load_at::<4>(self.ctx, self.at + offset)
    }
}

/// Where a Send indication's data goes (RFC 8656 §11.2), if the program can relay it: the
/// client's allocation (`ALLOCATIONS`) has a relayed address of the peer's family and a
/// permission for the peer's IP (its `PEER_TO_CLIENT` entry with port 0), and the message is
/// one the program can prove: well formed, no attribute it does not know that the relay must
/// understand, a FINGERPRINT (Firefox sends one with every message) that matches. Fills
/// `scratch.route`; `Ok(false)` for any other STUN message, `Err(PassSendIndication)` for a
/// Send indication left to the relay.
#[inline(never)]
pub(crate) fn route_send(
    ctx: &impl Frame,
    udp: &Udp,
    payload_at: usize,
    scratch: &mut Scratch,
) -> Result<bool, Verdict> {
    let head = load::<2, 4>(ctx, payload_at).ok_or(Verdict::PassStun)?;
    if u16::from_be_bytes([head[0], head[1]]) != indication::SEND_INDICATION {
        return Ok(false);
    }
    let ip = &scratch.ip;
    let refused = Verdict::PassSendIndication;
    let alloc = allocation(
        &mut scratch.keys,
        ip.family,
        &ip.src,
        udp.src_port,
        &ip.dst,
        udp.dst_port,
    )
    .ok_or(refused)?;
    let txid = load::<6, 12>(ctx, payload_at + 8).ok_or(refused)?;
    let words = PacketWords {
        ctx,
        at: payload_at,
    };
    let send = indication::parse_send_within::<4, _>(&words, udp.payload_len(), &txid)
        .map_err(|_| refused)?;
    if send.data_len as usize > MOVE_MAX {
        return Err(refused);
    }
    if let Some(fp) = send.fingerprint {
        check_fingerprint(ctx, payload_at, fp.offset as usize, fp.value)?;
    }
    let (relay, relay_port) = alloc.relayed(send.peer_family).ok_or(refused)?;
    let counter = peer_entry(
        &mut scratch.keys,
        send.peer_family,
        &relay,
        relay_port,
        &send.peer_addr,
        0,
    )
    .ok_or(refused)?
    .counter;
    // What goes: everything but the data. Its sum is the payload's (read back from a complete
    // checksum, or summed when the checksum may be partial) minus the data's.
    let removed = if udp.check == 0 {
        0
    } else {
        let data = payload_sum(
            ctx,
            payload_at + send.data_offset as usize,
            send.data_len as usize,
        )?;
        let total = if packet::maybe_partial(ip, udp) {
            payload_sum(ctx, payload_at, udp.payload_len() as usize)?
        } else {
            packet::payload_sum_from_checksum(ip, udp)
        };
        packet::removed_sum(total, data)
    };
    packet::route_to_peer_send_into(
        &send,
        &relay,
        relay_port,
        removed,
        counter,
        &mut scratch.route,
    );
    Ok(true)
}

/// Checks a FINGERPRINT (RFC 8489 §14.7): the CRC-32 of the message up to the attribute
/// (`len` bytes, a multiple of 4), XORed with 0x5354554E, must be `value`. Slicing-by-8 over
/// 8-byte blocks in a loop of its own function, so that the verifier walks it once for the
/// program (up to [`CRC_BLOCKS`] blocks: longer messages go up).
#[inline(never)]
pub(crate) fn check_fingerprint(
    ctx: &impl Frame,
    payload_at: usize,
    len: usize,
    value: u32,
) -> Result<(), Verdict> {
    let refused = Verdict::PassSendIndication;
    let blocks = len / 8;
    if blocks > CRC_BLOCKS || payload_at > MAX_FRAME {
        return Err(refused);
    }
    let mut crc = indication::CRC32_INIT;
    let mut i = 0;
    while i < CRC_BLOCKS {
        if i >= blocks {
            break;
        }
        let b = load_at::<8>(ctx, payload_at + 8 * i).ok_or(refused)?;
        crc = indication::crc32_update8(crc, b);
        i += 1;
    }
    if len % 8 == 4 {
        let w = load_at::<4>(ctx, payload_at + len - 4).ok_or(refused)?;
        crc = indication::crc32_update4(crc, w);
    }
    if indication::fingerprint_value(crc) == value {
        Ok(())
    } else {
        Err(refused)
    }
}
