//! The rewrite of a routed packet: its checksum read for what it is, the planned headers, the
//! next hop, the MTU and egress checks, then head and tail moved and the new headers, a Data
//! indication's header and padding written.

use relay_common::Verdict;
use relay_common::indication::DataHeader;
use relay_common::maps::FAMILY_IPV6;
use relay_common::packet::{
    self, CHANNEL_HLEN, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, MAX_FRAME, MAX_HEADERS, Rewrite, UDP_HLEN,
    Udp,
};

use crate::checksum::payload_sum;
use crate::counters::count_forwarded;
use crate::frame::Frame;
use crate::maps::{BOUNCE, Scratch};
use crate::mem::{store, store_headers, words};
use crate::route::next_hop;
use crate::shift::move_keeping_udp;

/// Plans the rewrite, finds the next hop, rewrites and sends the packet, and counts it on its
/// channel.
#[inline(never)]
pub(crate) fn forward(
    ctx: &impl Frame,
    udp: &Udp,
    payload_at: usize,
    scratch: &mut Scratch,
) -> Result<Verdict, Verdict> {
    let Scratch {
        ip,
        route,
        rw,
        bounce,
        data_header,
        keys,
    } = scratch;
    // The checksum field, read for what it is (see `packet::Checksum`): the payload is summed
    // only when the field equals the pseudo-header sum, i.e. for partial checksums (every
    // packet from a container or a veth on this machine) and one complete one in 65,536.
    let hop = next_hop(keys, route, data_header)?;
    let mut udp = *udp;
    let mut keep_partial = false;
    if packet::maybe_partial(ip, &udp) {
        let payload = payload_sum(ctx, payload_at, udp.payload_len() as usize)?;
        // Partial on an skb (TC, generic XDP): kept so; partial in native mode: completed in
        // `udp.check`.
        keep_partial = packet::settle_checksum(ip, &mut udp, payload, ctx.keeps_partial())?;
    }
    packet::rewrite_into(ip, &udp, route, rw)?;
    if keep_partial {
        packet::keep_partial(ip, route, rw);
    }
    if u32::from(rw.l3_len) > hop.mtu {
        return Err(Verdict::PassMtu);
    }
    let egress = hop.ifindex;
    let tx = egress == ctx.ingress();
    // The target is set now, while the packet can still go up unchanged.
    ctx.send_to(egress, tx)?;

    if rw.data_shift == 0 {
        // From here on the packet changes. Moving the head fails mostly for want of headroom,
        // and then it has changed nothing: the packet can still go up.
        ctx.adjust_head(rw.head_delta, ip.family, rw.family)?;
        // Drops ChannelData padding and Ethernet padding, or makes room for a Data
        // indication's padding.
        let len = ctx.len();
        if len != rw.frame_len && !ctx.adjust_tail(rw.frame_len as i32 - len as i32) {
            return Err(Verdict::DropRewriteFailed);
        }
    } else {
        move_keeping_udp(ctx, ip.family, rw, payload_at, bounce)?;
    }
    let eth = packet::ethernet_header(&hop.dmac, &hop.smac, rw.ethertype());
    store::<{ ETH_HLEN / 2 }>(ctx, 0, words(&eth)).ok_or(Verdict::DropRewriteFailed)?;
    let written = match (rw.family == FAMILY_IPV6, rw.channel_header) {
        (false, false) => store_headers::<{ (IPV4_HLEN + UDP_HLEN) / 2 }>(ctx, rw),
        (false, true) => store_headers::<{ (IPV4_HLEN + UDP_HLEN + CHANNEL_HLEN) / 2 }>(ctx, rw),
        (true, false) => store_headers::<{ (IPV6_HLEN + UDP_HLEN) / 2 }>(ctx, rw),
        (true, true) => store_headers::<{ MAX_HEADERS / 2 }>(ctx, rw),
    };
    written.ok_or(Verdict::DropRewriteFailed)?;
    if rw.added_len > 0 && !rw.channel_header {
        store_data_header(ctx, rw, data_header).ok_or(Verdict::DropRewriteFailed)?;
    }
    if rw.padding > 0 {
        store_padding(ctx, rw, bounce).ok_or(Verdict::DropRewriteFailed)?;
    }

    count_forwarded(route, rw);

    if tx {
        Ok(Verdict::ForwardedTx)
    } else {
        Ok(Verdict::ForwardedRedirect)
    }
}

/// Writes a Data indication's header after the UDP header (36 bytes for an IPv4 peer, 48
/// for an IPv6 one).
#[inline(always)]
pub(crate) fn store_data_header(ctx: &impl Frame, rw: &Rewrite, h: &DataHeader) -> Option<()> {
    let at_v4 = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
    let at_v6 = ETH_HLEN + IPV6_HLEN + UDP_HLEN;
    // `bytes` is the first field of the 8-aligned `DataHeader`, 48 bytes long.
    let words = h.bytes.as_ptr().cast();
    match (rw.family == FAMILY_IPV6, h.len == 48) {
        (false, false) => ctx.store_l3::<18>(at_v4, words),
        (false, true) => ctx.store_l3::<24>(at_v4, words),
        (true, false) => ctx.store_l3::<18>(at_v6, words),
        (true, true) => ctx.store_l3::<24>(at_v6, words),
    }
}

/// Zeroes the `rw.padding` (1-3) bytes that end the frame.
#[inline(always)]
pub(crate) fn store_padding(
    ctx: &impl Frame,
    rw: &Rewrite,
    bounce: &mut [u8; BOUNCE],
) -> Option<()> {
    let n = core::hint::black_box(rw.padding as usize);
    if n == 0 || n > 3 || rw.frame_len > MAX_FRAME {
        return None;
    }
    bounce[0] = 0;
    bounce[1] = 0;
    bounce[2] = 0;
    let at = rw.frame_len - n;
    // A buffer of BOUNCE >= n bytes.
    ctx.store_bytes(at, bounce.as_ptr(), n).then_some(())
}
