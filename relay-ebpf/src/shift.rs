//! Moving data within the packet, for the generic-mode rewrite of a partial checksum that keeps
//! the UDP header where the skb's `csum_start` points.

use relay_common::Verdict;
use relay_common::packet::{MAX_FRAME, Rewrite};

use crate::frame::Frame;
use crate::maps::{BOUNCE, MOVE_MAX};

/// The rewrite of a partial-checksum packet in generic mode (`packet::keep_partial`): the UDP
/// header stays where the skb's `csum_start` points, the data moves by `rw.data_shift` (the
/// ChannelData header's 4 bytes going or coming), the front by the IP header's size change.
/// Every step that can fail without having changed anything comes first: a tail to grow, then
/// the head. `in_family` is the arriving packet's.
#[inline(never)]
pub(crate) fn move_keeping_udp(
    ctx: &impl Frame,
    in_family: u8,
    rw: &Rewrite,
    payload_at: usize,
    bounce: &mut [u8; BOUNCE],
) -> Result<(), Verdict> {
    let len = ctx.len() as i32;
    let data_at = payload_at as i32 + rw.removed_len as i32;
    let data_len = rw.data_len as usize;
    if data_len > MOVE_MAX {
        return Err(Verdict::PassTooBig);
    }
    // The new end, in the arriving frame's offsets (the front has not moved yet).
    let tail_delta = data_at + rw.data_shift + rw.data_len as i32 + rw.padding as i32 - len;
    if tail_delta > 0 && !ctx.adjust_tail(tail_delta) {
        return Err(Verdict::PassAdjustFailed);
    }
    move_data(ctx, data_at as usize, data_len, rw.data_shift, bounce)
        .ok_or(Verdict::DropRewriteFailed)?;
    if tail_delta < 0 && !ctx.adjust_tail(tail_delta) {
        return Err(Verdict::DropRewriteFailed);
    }
    if rw.head_delta != 0 {
        ctx.adjust_head(rw.head_delta, in_family, rw.family)
            .map_err(|_| Verdict::DropRewriteFailed)?;
    }
    Ok(())
}

/// Moves `len` bytes (at most [`MOVE_MAX`]) at `from` by `shift` (4 bytes either way) within
/// the packet, through the bounce buffer, a chunk at a time in the order that never overwrites
/// what is still to be read: from the front when moving towards the head, from the back when
/// moving towards the tail. Four chunks, unrolled: a loop whose chunk length varies makes the
/// verifier walk every length it could have, past its million-instruction budget.
#[inline(always)]
pub(crate) fn move_data(
    ctx: &impl Frame,
    from: usize,
    len: usize,
    shift: i32,
    bounce: &mut [u8; BOUNCE],
) -> Option<()> {
    if from > MAX_FRAME || len > MOVE_MAX {
        return None;
    }
    move_chunk::<0>(ctx, from, len, shift, bounce)?;
    move_chunk::<1>(ctx, from, len, shift, bounce)?;
    move_chunk::<2>(ctx, from, len, shift, bounce)?;
    move_chunk::<3>(ctx, from, len, shift, bounce)
}

/// The `K`th chunk of [`move_data`]: `[K * BOUNCE, (K + 1) * BOUNCE)` of the data counted from
/// its front (moving towards the head) or from its back (towards the tail); nothing when the
/// data is shorter.
#[inline(always)]
pub(crate) fn move_chunk<const K: usize>(
    ctx: &impl Frame,
    from: usize,
    len: usize,
    shift: i32,
    bounce: &mut [u8; BOUNCE],
) -> Option<()> {
    let skip = K * BOUNCE;
    if len <= skip {
        return Some(());
    }
    let n = core::cmp::min(len - skip, BOUNCE);
    let at = if shift < 0 {
        from + skip
    } else {
        from + len - skip - n
    };
    copy_chunk(ctx, at, (at as i32 + shift) as usize, n, bounce)
}

/// Copies `n` (1 to BOUNCE) bytes from `at` to `to` in the packet through `bounce`.
#[inline(always)]
pub(crate) fn copy_chunk(
    ctx: &impl Frame,
    at: usize,
    to: usize,
    n: usize,
    bounce: &mut [u8; BOUNCE],
) -> Option<()> {
    // Opaque to LLVM, so the bounds below are the ones the verifier sees on the length.
    let n = core::hint::black_box(n);
    if n == 0 || n > BOUNCE || at > MAX_FRAME || to > MAX_FRAME {
        return None;
    }
    // A buffer of BOUNCE >= n bytes; the helpers check the packet offsets themselves.
    let buf = bounce.as_mut_ptr();
    (ctx.load_bytes(at, buf, n) && ctx.store_bytes(to, buf, n)).then_some(())
}
