//! The arriving UDP checksum read for what it is (complete, partial or none), the complete
//! checksum of a partial one, and a payload's sum read back from a complete one.

use super::{IPPROTO_UDP, Ip, Udp};
use crate::csum::Sum;
use crate::maps::FAMILY_IPV6;
use crate::verdict::Verdict;

/// How an arriving datagram's UDP checksum field is to be read. A checksum offload makes two
/// kinds of packets out of one: a NIC hands over complete checksums, but a packet that never
/// left the machine (from a container's veth, over a bridge, through a NAT namespace) still
/// carries the *partial* checksum its sender's stack left for the offload to finish: the
/// folded pseudo-header sum, not complemented (Linux `~csum_tcpudp_magic(.., 0)`), with the
/// skb marked `CHECKSUM_PARTIAL` and its `csum_start` at the UDP header. An incremental update
/// of such a field is garbage once the packet leaves that state, which is how the fast path
/// used to corrupt every such packet.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub enum Checksum {
    /// No checksum (zero, IPv4 only).
    None,
    /// A complete checksum: updated incrementally (RFC 1624), so a datagram corrupted on the
    /// way does not leave with a valid one.
    Full,
    /// A partial checksum: the pseudo-header sum, to be finished by an offload later.
    Partial,
}

/// The pseudo-header sum of a UDP datagram (RFC 768; RFC 8200 §8.1 for IPv6, whose 32-bit
/// length and next header add up to the same words for any UDP length).
#[inline(always)]
pub const fn pseudo_sum(family: u8, src: &[u8; 16], dst: &[u8; 16], udp_len: u16) -> Sum {
    let v6 = family == FAMILY_IPV6;
    Sum::new()
        .add_addr(src, v6)
        .add_addr(dst, v6)
        .add(IPPROTO_UDP as u16)
        .add(udp_len)
}

/// The partial checksum a sender leaves for its offload: the folded pseudo-header sum.
#[inline(always)]
pub const fn partial_seed(family: u8, src: &[u8; 16], dst: &[u8; 16], udp_len: u16) -> u16 {
    pseudo_sum(family, src, dst, udp_len).fold()
}

/// Whether the checksum field of `udp` could be a partial one, which only the payload's sum
/// can tell from a complete one ([`classify_checksum`]). A complete checksum equals the seed
/// for one datagram in 65,536, so the payload is summed only for those and for partial ones.
#[inline(always)]
pub const fn maybe_partial(ip: &Ip, udp: &Udp) -> bool {
    udp.check != 0 && udp.check == partial_seed(ip.family, &ip.src, &ip.dst, udp.len)
}

/// What the checksum of `udp` is. `payload` is the sum of the UDP payload (its `len - 8` bytes
/// from an even offset), needed only when [`maybe_partial`]; `generic` says whether the
/// program runs in generic (skb) mode, where the packet's skb keeps its checksum state.
///
/// A field equal to the seed is partial unless the datagram verifies as complete with it. If
/// it does, it is complete where the packet is a bare frame (native XDP: whatever the skb was,
/// the frame leaves without its state, and a valid checksum is what the receiver needs), but
/// in generic mode it could still be a `CHECKSUM_PARTIAL` skb, whose field the offload will
/// overwrite: the program cannot know which, so the packet goes up.
#[inline(always)]
pub const fn classify_checksum(
    ip: &Ip,
    udp: &Udp,
    payload: Sum,
    generic: bool,
) -> Result<Checksum, Verdict> {
    if udp.check == 0 {
        return Ok(Checksum::None);
    }
    if !maybe_partial(ip, udp) {
        return Ok(Checksum::Full);
    }
    let whole = pseudo_sum(ip.family, &ip.src, &ip.dst, udp.len)
        .add(udp.src_port)
        .add(udp.dst_port)
        .add(udp.len)
        .add(udp.check)
        .add(payload.fold());
    if !crate::csum::verifies(whole) {
        Ok(Checksum::Partial)
    } else if generic {
        Err(Verdict::PassChecksumUnknown)
    } else {
        Ok(Checksum::Full)
    }
}

/// The complete checksum of a datagram that arrived with a partial one: what its sender's
/// offload would have written. `payload` as in [`classify_checksum`].
#[inline(always)]
pub const fn completed_checksum(ip: &Ip, udp: &Udp, payload: Sum) -> u16 {
    pseudo_sum(ip.family, &ip.src, &ip.dst, udp.len)
        .add(udp.src_port)
        .add(udp.dst_port)
        .add(udp.len)
        .add(payload.fold())
        .udp_checksum()
}

/// The one's-complement sum of a UDP payload, read back from its complete checksum: the
/// checksum is the complement of pseudo-header + UDP header + payload, so the payload's part
/// is what is left when the other two are taken out (the checksum field counts as zero).
#[inline(always)]
pub const fn payload_sum_from_checksum(ip: &Ip, udp: &Udp) -> Sum {
    Sum::from_checksum(udp.check)
        .sub(pseudo_sum(ip.family, &ip.src, &ip.dst, udp.len).fold())
        .sub(udp.src_port)
        .sub(udp.dst_port)
        .sub(udp.len)
}
