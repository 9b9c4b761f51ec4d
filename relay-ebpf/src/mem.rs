//! Packet memory: bounds-checked reads and writes at constant or bounded offsets, in 16-bit
//! words where the offset is even, on either hook ([`Frame`]).

#[cfg(doc)]
use relay_common::packet::Ip;
use relay_common::packet::{ETH_HLEN, MAX_FRAME, MAX_HEADERS, Rewrite};

use crate::frame::Frame;

/// The `N` bytes at `offset` of the packet, in place, if the packet has them. The reference
/// must not be kept across `bpf_xdp_adjust_head`/`_tail`, which move the packet's bounds.
#[inline(always)]
pub(crate) fn view<'a, const N: usize>(ctx: &impl Frame, offset: usize) -> Option<&'a [u8; N]> {
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return None;
    }
    // SAFETY: [start, start + N) was just checked to be inside the packet; a byte array has
    // alignment 1; the program only writes the packet after the last use of these views.
    #[allow(unsafe_code)]
    Some(unsafe { &*(start as *const [u8; N]) })
}

/// Copies `N` (2 or more) bytes at a variable `offset` out of the packet. The explicit bound on
/// the offset is what lets the verifier accept the access. (With `N` = 1, LLVM turns
/// `ptr + 1 > end` into `ptr >= end`, from which the verifier learns no range.)
#[inline(always)]
pub(crate) fn load_at<const N: usize>(ctx: &impl Frame, offset: usize) -> Option<[u8; N]> {
    const { assert!(N >= 2) };
    // Opaque to LLVM, so that it cannot fold the offset into how it was computed and check a
    // different pointer than the one it reads through.
    let offset = core::hint::black_box(offset);
    if offset > MAX_FRAME {
        return None;
    }
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return None;
    }
    // SAFETY: [start, start + N) was just checked to be inside the packet.
    #[allow(unsafe_code)]
    Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
}

/// The `N` = 2 `W` bytes at the constant (even) `offset` of the packet, copied out as `W`
/// 16-bit words, if the packet has them.
///
/// Packet memory is accessed in 16-bit words, not bytes: the BPF target splits every access it
/// cannot prove aligned into single bytes (a 40-byte IPv6 header was 40 loads and as many
/// shifts and ors to put the words together again). The words are aligned: the kernel puts a
/// frame's first byte at an even address (after `XDP_PACKET_HEADROOM`, plus `NET_IP_ALIGN` on
/// some drivers, or at an skb's data in generic mode), this program only moves it by even
/// deltas (header lengths), and every offset read or written here is even. The verifier holds
/// programs to that model where alignment matters (strict-alignment architectures, where it
/// takes the frame to start 2 bytes before a 4-byte boundary); elsewhere it does not check.
#[inline(always)]
pub(crate) fn load<const W: usize, const N: usize>(
    ctx: &impl Frame,
    offset: usize,
) -> Option<[u8; N]> {
    const { assert!(N == 2 * W) };
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return None;
    }
    // SAFETY: [start, start + N) was just checked to be inside the packet, and `start` is
    // 2-aligned (see above).
    #[allow(unsafe_code)]
    let w = unsafe { core::ptr::read(start as *const [u16; W]) };
    let mut bytes = [0u8; N];
    let mut i = 0;
    while i < W {
        let b = w[i].to_ne_bytes();
        bytes[2 * i] = b[0];
        bytes[2 * i + 1] = b[1];
        i += 1;
    }
    Some(bytes)
}

/// Copies the 16-byte IPv6 address at the constant (even) `offset` of the packet into `addr`
/// (an address field of the 8-aligned [`Ip`] in the scratch map), 16 bits at a time (see
/// [`load`]): volatile reads, so that LLVM does not put the words together into 64-bit ones,
/// which takes shifts, ors and more registers than there are.
#[inline(always)]
pub(crate) fn copy_addr(ctx: &impl Frame, offset: usize, addr: &mut [u8; 16]) -> Option<()> {
    let start = ctx.data() + offset;
    if start + 16 > ctx.data_end() {
        return None;
    }
    let from = start as *const u16;
    let to = addr.as_mut_ptr() as *mut u16;
    let mut i = 0;
    while i < 8 {
        // SAFETY: [start, start + 16) was just checked to be inside the packet and `start` is
        // 2-aligned (see `load`); `addr` is the first or second 16-byte field of the
        // 8-aligned `Ip`.
        #[allow(unsafe_code)]
        unsafe {
            to.add(i).write(from.add(i).read_volatile())
        };
        i += 1;
    }
    Some(())
}

/// `bytes` as the 16-bit words they are in memory, to [`store`] them.
#[inline(always)]
pub(crate) fn words<const N: usize, const W: usize>(bytes: &[u8; N]) -> [u16; W] {
    const { assert!(N == 2 * W) };
    let mut w = [0u16; W];
    let mut i = 0;
    while i < W {
        w[i] = u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        i += 1;
    }
    w
}

/// Writes `W` 16-bit words into the packet at a constant (even) `offset`, if the packet has
/// room. See [`load`] for the alignment.
#[inline(always)]
pub(crate) fn store<const W: usize>(
    ctx: &impl Frame,
    offset: usize,
    words: [u16; W],
) -> Option<()> {
    let start = ctx.data() + offset;
    if start + 2 * W > ctx.data_end() {
        return None;
    }
    let p = start as *mut u16;
    let mut i = 0;
    while i < W {
        // SAFETY: [start, start + 2 W) was just checked to be inside the packet, and `start`
        // is 2-aligned (see `load`). Volatile, one word at a time: otherwise LLVM merges the
        // header copies of the four (family, direction) cases into one memcpy of a variable
        // length, which the BPF target makes a byte loop.
        #[allow(unsafe_code)]
        unsafe {
            p.add(i).write_volatile(words[i])
        };
        i += 1;
    }
    Some(())
}

/// Writes the first `W` words of the planned headers after the Ethernet header.
#[inline(always)]
pub(crate) fn store_headers<const W: usize>(ctx: &impl Frame, rw: &Rewrite) -> Option<()> {
    const { assert!(2 * W <= MAX_HEADERS) };
    // `headers` is the first field of the 8-aligned `Rewrite` (repr(C)), and 2 W <=
    // MAX_HEADERS (checked at compile time) keeps the read inside it.
    ctx.store_l3::<W>(ETH_HLEN, rw.headers.as_ptr().cast())
}
