//! The rewrite of a routed packet: its checksum read for what it is, the planned headers, the
//! next hop, the MTU and egress checks, then head and tail moved and the new headers, a Data
//! indication's header and padding written.

use aya_ebpf::helpers::generated::bpf_xdp_store_bytes;
use aya_ebpf::programs::XdpContext;
use relay_common::Verdict;
use relay_common::indication::DataHeader;
use relay_common::maps::{FAMILY_IPV6, IF_GENERIC};
use relay_common::packet::{
    self, CHANNEL_HLEN, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, MAX_FRAME, MAX_HEADERS, Rewrite, UDP_HLEN,
    Udp,
};
use relay_common::verdict::XDP_PASS;

use crate::checksum::payload_sum;
use crate::counters::count_forwarded;
use crate::maps::{BOUNCE, EGRESS, INTERFACES, Scratch};
use crate::mem::{adjust_head, adjust_tail, buff_len, store, store_headers, words};
use crate::route::next_hop;
use crate::shift::move_keeping_udp;

/// Plans the rewrite, finds the next hop, rewrites and sends the packet, and counts it on its
/// channel.
#[inline(never)]
pub(crate) fn forward(
    ctx: &XdpContext,
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
        let generic = INTERFACES
            .get_ptr(&(ctx.ingress_ifindex() as u32))
            // SAFETY: a map value pointer from a successful lookup, read at once.
            .is_some_and(|flags| {
                #[allow(unsafe_code)]
                let flags = unsafe { *flags };
                flags & IF_GENERIC != 0
            });
        // Partial in generic mode: kept so; partial in native mode: completed in `udp.check`.
        keep_partial = packet::settle_checksum(ip, &mut udp, payload, generic)?;
    }
    packet::rewrite_into(ip, &udp, route, rw)?;
    if keep_partial {
        packet::keep_partial(ip, route, rw);
    }
    if u32::from(rw.l3_len) > hop.mtu {
        return Err(Verdict::PassMtu);
    }
    let ingress = ctx.ingress_ifindex() as u32;
    let egress = hop.ifindex;
    let tx = egress == ingress;
    // Another interface: the redirect is set up now, while the packet can still go up
    // unchanged. `bpf_redirect_map` only records the target, which the kernel uses when the
    // program returns XDP_REDIRECT (and ignores otherwise), and answers XDP_PASS (the flags'
    // low bits) when the interface is not in EGRESS: one device map lookup, where checking
    // here and redirecting at the end took two.
    if !tx && EGRESS.redirect(egress, u64::from(XDP_PASS)).is_err() {
        return Err(Verdict::PassEgressNotAttached);
    }

    if rw.data_shift == 0 {
        // From here on the packet changes. adjust_head fails only without headroom, and then
        // it has changed nothing: the packet can still go up.
        if adjust_head(ctx, rw.head_delta) != 0 {
            return Err(Verdict::PassAdjustFailed);
        }
        // Drops ChannelData padding and Ethernet padding, or makes room for a Data
        // indication's padding.
        let len = buff_len(ctx);
        if len != rw.frame_len && adjust_tail(ctx, rw.frame_len as i32 - len as i32) != 0 {
            return Err(Verdict::DropRewriteFailed);
        }
    } else {
        move_keeping_udp(ctx, rw, payload_at, bounce)?;
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
pub(crate) fn store_data_header(ctx: &XdpContext, rw: &Rewrite, h: &DataHeader) -> Option<()> {
    let at_v4 = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
    let at_v6 = ETH_HLEN + IPV6_HLEN + UDP_HLEN;
    // SAFETY: `bytes` is the first field of the 8-aligned `DataHeader`, 48 bytes long.
    #[allow(unsafe_code)]
    let words = unsafe { core::ptr::read(h.bytes.as_ptr() as *const [u16; 24]) };
    let mut short = [0u16; 18];
    let mut i = 0;
    while i < 18 {
        short[i] = words[i];
        i += 1;
    }
    match (rw.family == FAMILY_IPV6, h.len == 48) {
        (false, false) => store(ctx, at_v4, short),
        (false, true) => store(ctx, at_v4, words),
        (true, false) => store(ctx, at_v6, short),
        (true, true) => store(ctx, at_v6, words),
    }
}

/// Zeroes the `rw.padding` (1-3) bytes that end the frame.
#[inline(always)]
pub(crate) fn store_padding(
    ctx: &XdpContext,
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
    // SAFETY: a helper call on the program's own context with a buffer of BOUNCE >= n bytes.
    #[allow(unsafe_code)]
    let ok = unsafe {
        bpf_xdp_store_bytes(ctx.ctx, at as u32, bounce.as_mut_ptr().cast(), n as u32) == 0
    };
    ok.then_some(())
}
