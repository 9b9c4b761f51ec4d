//! The one's-complement sum of packet bytes, through `bpf_csum_diff` in constant-size chunks.

use aya_ebpf::helpers::generated::bpf_csum_diff;
use relay_common::Verdict;
use relay_common::csum::Sum;
use relay_common::packet::MAX_FRAME;

use crate::frame::Frame;
use crate::maps::MOVE_MAX;
use crate::mem::load_at;

/// The one's-complement sum of the `len` bytes at `at` (an even offset), as a [`Sum`] of
/// network-order words: `bpf_csum_diff` over the packet in constant-size chunks (up to four of
/// 512 bytes, then one each of 256 down to 4: the verifier checks a constant size against the packet's
/// end), then the last 0-3 bytes one by one. `bpf_csum_diff` sums 16-bit words as they lie in
/// memory; the sum of byte-swapped words is the byte-swapped sum (RFC 1071 §2(B)), so the
/// folded result is swapped back to network order.
#[inline(never)]
pub(crate) fn payload_sum(ctx: &impl Frame, at: usize, len: usize) -> Result<Sum, Verdict> {
    // Longer payloads are rare (jumbo frames) and go up: see `MOVE_MAX`.
    if at > MAX_FRAME || len > MOVE_MAX + 511 {
        return Err(Verdict::PassTooBig);
    }
    let mut wide: u64 = 0;
    let mut off = at;
    let end = at + len;
    // Unrolled, as in `move_data`: a loop here cost the verifier half a million instructions.
    if end - off >= 512 {
        wide += chunk_sum::<512>(ctx, off)?;
        off += 512;
    }
    if end - off >= 512 {
        wide += chunk_sum::<512>(ctx, off)?;
        off += 512;
    }
    if end - off >= 512 {
        wide += chunk_sum::<512>(ctx, off)?;
        off += 512;
    }
    if end - off >= 512 {
        wide += chunk_sum::<512>(ctx, off)?;
        off += 512;
    }
    if end - off >= 256 {
        wide += chunk_sum::<256>(ctx, off)?;
        off += 256;
    }
    if end - off >= 128 {
        wide += chunk_sum::<128>(ctx, off)?;
        off += 128;
    }
    if end - off >= 64 {
        wide += chunk_sum::<64>(ctx, off)?;
        off += 64;
    }
    if end - off >= 32 {
        wide += chunk_sum::<32>(ctx, off)?;
        off += 32;
    }
    if end - off >= 16 {
        wide += chunk_sum::<16>(ctx, off)?;
        off += 16;
    }
    if end - off >= 8 {
        wide += chunk_sum::<8>(ctx, off)?;
        off += 8;
    }
    if end - off >= 4 {
        wide += chunk_sum::<4>(ctx, off)?;
        off += 4;
    }
    let folded = Sum::new().add_wide(wide).fold().swap_bytes();
    let mut sum = Sum::new().add(folded);
    // The last 0-3 bytes, at even, odd, even offsets (`off` - `at` is a multiple of 4).
    let rest = end - off;
    if rest > 0 {
        let w = load_at::<4>(ctx, end - 4).ok_or(Verdict::DropMalformed)?;
        sum = match rest {
            1 => sum.add_byte(w[3], true),
            2 => sum.add(u16::from_be_bytes([w[2], w[3]])),
            _ => sum
                .add(u16::from_be_bytes([w[1], w[2]]))
                .add_byte(w[3], true),
        };
    }
    Ok(sum)
}

/// `bpf_csum_diff` of the `N` bytes at `offset` (a multiple of 4 bytes, at most 512): their
/// 32-bit one's-complement sum in memory order.
#[inline(always)]
pub(crate) fn chunk_sum<const N: usize>(ctx: &impl Frame, offset: usize) -> Result<u64, Verdict> {
    let offset = core::hint::black_box(offset);
    if offset > MAX_FRAME {
        return Err(Verdict::PassTooBig);
    }
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return Err(Verdict::DropMalformed);
    }
    // SAFETY: [start, start + N) was just checked to be inside the packet; the helper only
    // reads it.
    #[allow(unsafe_code)]
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, start as *mut u32, N as u32, 0) };
    if r < 0 {
        return Err(Verdict::PassChecksumUnknown);
    }
    Ok(r as u64 & 0xFFFF_FFFF)
}
