//! The rewrite of a forwarded packet ([`Rewrite`]): the new IP and UDP (and ChannelData)
//! headers with their checksums updated incrementally (RFC 1624), how far head, tail and data
//! move, and the Ethernet header.

use super::{
    CHANNEL_HLEN, ChannelHeader, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP, IPV4_DF, IPV4_HLEN,
    Ip, MAX_HEADERS, Route, UDP_HLEN, Udp, header_len, partial_seed, route_to_client,
    route_to_peer,
};
use crate::csum::Sum;
use crate::maps::{ChannelValue, FAMILY_IPV6, PeerValue};
use crate::verdict::Verdict;

/// Makes a planned rewrite ([`rewrite_into`]) of a datagram with a partial checksum, in generic
/// mode, leave with a partial checksum again, for the skb's offload state to finish: the new
/// pseudo-header sum in the checksum field, and the UDP header kept at the very place it
/// was, where the skb's `csum_start` points (the offload sums from there and writes at
/// `csum_start + 6`). So only the IP header's size change moves the front
/// ([`Rewrite::head_delta`]); the data moves instead by what the ChannelData header's coming
/// or going adds or takes ([`Rewrite::data_shift`]). `ip` and `out` as given to
/// [`rewrite_into`].
#[inline(always)]
pub const fn keep_partial(ip: &Ip, out: &Route, rw: &mut Rewrite) {
    let in_hlen = header_len(ip.family) as i32;
    let out_hlen = header_len(out.family) as i32;
    let cd_out = out.added_len as i32;
    let cd_in = out.removed_len as i32;
    rw.head_delta = in_hlen - out_hlen;
    rw.data_shift = cd_out - cd_in;
    let udp_len = (UDP_HLEN as i32 + cd_out + out.data_len as i32 + out.padding as i32) as u16;
    let seed = partial_seed(out.family, &out.src, &out.dst, udp_len);
    put16(rw, out_hlen as usize + 6, seed);
}

/// A planned rewrite: the headers of the outgoing packet and how to get there.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
#[repr(C, align(8))]
pub struct Rewrite {
    /// IP + UDP (+ ChannelData towards a client) headers, ready to copy after the Ethernet
    /// header; [`Rewrite::headers_len`] bytes are used. First, so 8-aligned (see [`Ip`]).
    pub headers: [u8; MAX_HEADERS],
    /// The outgoing packet's family.
    pub family: u8,
    /// Whether a ChannelData header is part of the headers (towards a client).
    pub channel_header: bool,
    /// The bytes in front of the data ([`Route::added_len`]): nonzero towards a client. Those
    /// of a Data indication are not in [`Rewrite::headers`]: the program writes them after.
    pub added_len: u16,
    /// Zero bytes the program writes after the data ([`Route::padding`]).
    pub padding: u16,
    /// The bytes that went from in front of the data ([`Route::removed_len`]).
    pub removed_len: u16,
    /// The delta for `bpf_xdp_adjust_head`: old headers minus new headers (positive shrinks).
    pub head_delta: i32,
    /// How far the data moves towards the tail (negative: the head) within the packet: 0, but
    /// for a partial checksum in generic mode ([`keep_partial`]), where the UDP header stays.
    pub data_shift: i32,
    /// The outgoing frame's length, Ethernet header included.
    pub frame_len: usize,
    /// Source port of the outgoing packet.
    pub src_port: u16,
    /// Destination port of the outgoing packet.
    pub dst_port: u16,
    /// The outgoing packet's length from its IP header on (`bpf_fib_lookup`'s `tot_len`).
    pub l3_len: u16,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv6 flow label (0 for IPv4).
    pub flow_label: u32,
    /// The application data bytes relayed (what the channel counters count).
    pub data_len: u16,
}

impl Rewrite {
    /// An all-zero rewrite to fill in.
    pub const EMPTY: Rewrite = Rewrite {
        family: 0,
        headers: [0; MAX_HEADERS],
        channel_header: false,
        added_len: 0,
        padding: 0,
        removed_len: 0,
        head_delta: 0,
        data_shift: 0,
        frame_len: 0,
        src_port: 0,
        dst_port: 0,
        l3_len: 0,
        tos: 0,
        flow_label: 0,
        data_len: 0,
    };

    /// How many bytes of [`Rewrite::headers`] are used.
    #[inline(always)]
    pub const fn headers_len(&self) -> usize {
        header_len(self.family) + UDP_HLEN + if self.channel_header { CHANNEL_HLEN } else { 0 }
    }

    /// The EtherType of the outgoing frame.
    #[inline(always)]
    pub const fn ethertype(&self) -> u16 {
        if self.family == FAMILY_IPV6 {
            ETH_P_IPV6
        } else {
            ETH_P_IP
        }
    }

    /// The outgoing source address as 4 network-order words (IPv4: the first one), read from
    /// the headers; for the FIB lookup.
    #[inline(always)]
    pub const fn src_words(&self) -> [u32; 4] {
        if self.family == FAMILY_IPV6 {
            self.words(8)
        } else {
            self.words(12)
        }
    }

    /// The outgoing destination address, as [`Rewrite::src_words`].
    #[inline(always)]
    pub const fn dst_words(&self) -> [u32; 4] {
        if self.family == FAMILY_IPV6 {
            self.words(24)
        } else {
            self.words(16)
        }
    }

    #[inline(always)]
    const fn words(&self, at: usize) -> [u32; 4] {
        debug_assert!(at.is_multiple_of(4) && at + 16 <= MAX_HEADERS);
        let p = self.headers.as_ptr();
        // IPv4 reads past its 4 address bytes into other header bytes; only out[0] is used.
        // SAFETY: inside `headers`, and 4-aligned (see `put16`).
        #[allow(unsafe_code)]
        unsafe {
            (p.add(at) as *const [u32; 4]).read()
        }
    }

    /// IPv6 `flowinfo` as `bpf_fib_lookup` takes it (traffic class and flow label, host order;
    /// store it big-endian).
    #[inline(always)]
    pub const fn flowinfo(&self) -> u32 {
        ((self.tos as u32) << 20) | self.flow_label
    }
}

/// [`rewrite`] along [`route_to_peer`].
#[inline(always)]
pub const fn client_to_peer(
    ip: &Ip,
    udp: &Udp,
    cd: ChannelHeader,
    trailing: Sum,
    value: &ChannelValue,
) -> Result<Rewrite, Verdict> {
    rewrite(ip, udp, &route_to_peer(cd, trailing, value))
}

/// [`rewrite`] along [`route_to_client`].
#[inline(always)]
pub const fn peer_to_client(ip: &Ip, udp: &Udp, value: &PeerValue) -> Result<Rewrite, Verdict> {
    rewrite(ip, udp, &route_to_client(udp, value))
}

/// Plans a forwarded packet: new IP and UDP headers (and ChannelData header towards a client),
/// the UDP checksum updated for every word that changed.
#[inline(always)]
pub const fn rewrite(ip: &Ip, udp: &Udp, route: &Route) -> Result<Rewrite, Verdict> {
    let mut rw = Rewrite::EMPTY;
    match rewrite_into(ip, udp, route, &mut rw) {
        Ok(()) => Ok(rw),
        Err(verdict) => Err(verdict),
    }
}

/// [`rewrite`] into a `Rewrite` the caller owns (the program keeps it in a per-CPU scratch map,
/// off its 512-byte stack). On error `rw` is left partly written.
#[inline(always)]
pub const fn rewrite_into(
    ip: &Ip,
    udp: &Udp,
    out: &Route,
    rw: &mut Rewrite,
) -> Result<(), Verdict> {
    let removed = out.removed;
    let added = out.added;
    let data_len = out.data_len;
    if ip.ttl <= 1 {
        return Err(Verdict::PassTtl);
    }
    let in6 = ip.family == FAMILY_IPV6;
    let out6 = out.family == FAMILY_IPV6;
    let in_hlen = header_len(ip.family);
    let out_hlen = header_len(out.family);
    let added_len = out.added_len as usize;
    let old_headers = in_hlen + UDP_HLEN + out.removed_len as usize;
    let new_headers = out_hlen + UDP_HLEN + added_len;
    let udp_len = UDP_HLEN + added_len + data_len as usize + out.padding as usize;
    let l3_len = out_hlen + udp_len;
    // Only reachable past MAX_FRAME, which the program refuses first; kept so the function is
    // total.
    if l3_len > 0xFFFF {
        return Err(Verdict::PassTooBig);
    }

    // The UDP checksum: RFC 1624 over the pseudo-header, the UDP header and the payload words
    // that change. The protocol (17) is in both pseudo-headers and cancels out; the UDP length
    // is counted twice (pseudo-header and header), as IPv4 and IPv6 both do.
    let check = if udp.check == 0 {
        if in6 || out6 {
            // IPv6 requires a checksum and this one cannot be updated from nothing; a zero one
            // on IPv6 is invalid to begin with.
            return Err(Verdict::PassNoChecksum);
        }
        // IPv4 to IPv4 without a checksum: stays without one (RFC 768).
        0
    } else {
        let s = Sum::from_checksum(udp.check)
            .sub_addr(&ip.src, in6)
            .sub_addr(&ip.dst, in6)
            .sub(udp.len)
            .sub(udp.len)
            .sub(udp.src_port)
            .sub(udp.dst_port)
            .sub(removed)
            .add_addr(&out.src, out6)
            .add_addr(&out.dst, out6)
            .add(udp_len as u16)
            .add(udp_len as u16)
            .add(out.src_port)
            .add(out.dst_port)
            .add(out.added_sum);
        s.udp_checksum()
    };

    let ttl = ip.ttl - 1;
    let flow_label = if in6 { ip.flow_label } else { 0 };
    // The headers are written in 16-, 32- and 64-bit words at offsets aligned for them (see
    // `put16`): byte by byte, the program spent a load, a shift and a store on every byte.
    let ttl_proto = ((ttl as u16) << 8) | IPPROTO_UDP as u16;
    if out6 {
        let first = (6u32 << 28) | ((ip.tos as u32) << 20) | flow_label;
        put32(rw, 0, first);
        put16(rw, 4, udp_len as u16);
        // Next header (UDP), then hop limit.
        put16(rw, 6, ((IPPROTO_UDP as u16) << 8) | ttl as u16);
        put_addrs(rw, 8, out, true);
    } else {
        // IPv4 to IPv4 keeps the identification and DF; from IPv6 there is neither, and DF is
        // set (IPv6 is never fragmented on the way, and ID 0 is fine with DF, RFC 6864).
        let (id, frag) = if in6 {
            (0, IPV4_DF)
        } else {
            (ip.ipv4_id, ip.ipv4_frag)
        };
        let version_tos = 0x4500 | ip.tos as u16;
        put16(rw, 0, version_tos);
        put16(rw, 2, l3_len as u16);
        put16(rw, 4, id);
        put16(rw, 6, frag);
        put16(rw, 8, ttl_proto);
        put_addrs(rw, 12, out, false);
        let ip_check = if in6 {
            // A new header: computed in full, from the ten words just written (the checksum
            // word is zero).
            Sum::new()
                .add(version_tos)
                .add(l3_len as u16)
                .add(id)
                .add(frag)
                .add(ttl_proto)
                .add_addr(&out.src, false)
                .add_addr(&out.dst, false)
                .checksum()
        } else {
            // The same header with TTL, length and addresses changed: updated (RFC 1624), so
            // a header that arrived corrupted does not leave with a valid checksum.
            Sum::from_checksum(ip.ipv4_check)
                .sub(((ip.ttl as u16) << 8) | IPPROTO_UDP as u16)
                .add(ttl_proto)
                .sub(ip.payload_len + IPV4_HLEN as u16)
                .add(l3_len as u16)
                .sub_addr(&ip.src, false)
                .sub_addr(&ip.dst, false)
                .add_addr(&out.src, false)
                .add_addr(&out.dst, false)
                .checksum()
        };
        put16(rw, 10, ip_check);
    }
    put16(rw, out_hlen, out.src_port);
    put16(rw, out_hlen + 2, out.dst_port);
    put16(rw, out_hlen + 4, udp_len as u16);
    put16(rw, out_hlen + 6, check);
    if let Some(cd) = added {
        put16(rw, out_hlen + UDP_HLEN, cd.channel);
        put16(rw, out_hlen + UDP_HLEN + 2, cd.len);
    }

    rw.family = out.family;
    rw.channel_header = added.is_some();
    rw.added_len = out.added_len;
    rw.padding = out.padding;
    rw.removed_len = out.removed_len;
    rw.head_delta = old_headers as i32 - new_headers as i32;
    rw.data_shift = 0;
    rw.frame_len = ETH_HLEN + l3_len;
    rw.src_port = out.src_port;
    rw.dst_port = out.dst_port;
    rw.l3_len = l3_len as u16;
    rw.tos = ip.tos;
    rw.flow_label = flow_label;
    rw.data_len = data_len;
    Ok(())
}

/// The Ethernet header of a forwarded frame.
#[inline(always)]
pub const fn ethernet_header(dst: &[u8; 6], src: &[u8; 6], ethertype: u16) -> [u8; ETH_HLEN] {
    let mut h = [0u8; ETH_HLEN];
    let mut i = 0;
    while i < 6 {
        h[i] = dst[i];
        h[6 + i] = src[i];
        i += 1;
    }
    let t = ethertype.to_be_bytes();
    h[12] = t[0];
    h[13] = t[1];
    h
}

/// Writes `value` big-endian at byte `at` (even) of `rw.headers`, as one 16-bit store.
///
/// `headers` is the first field of the 8-aligned, `repr(C)` [`Rewrite`], so an even offset
/// in it is 2-aligned (and a multiple of 4 or 8, 4- or 8-aligned): the BPF target emits one
/// store of the word's size, where a byte array's alignment of 1 made it split every access
/// into bytes.
#[inline(always)]
const fn put16(rw: &mut Rewrite, at: usize, value: u16) {
    debug_assert!(at.is_multiple_of(2) && at + 2 <= MAX_HEADERS);
    let p = rw.headers.as_mut_ptr();
    // SAFETY: inside `headers` and 2-aligned (see above).
    #[allow(unsafe_code)]
    unsafe {
        (p.add(at) as *mut u16).write(value.to_be())
    };
}

/// Writes `value` big-endian at byte `at` (a multiple of 4) of `rw.headers`, as [`put16`].
#[inline(always)]
const fn put32(rw: &mut Rewrite, at: usize, value: u32) {
    debug_assert!(at.is_multiple_of(4) && at + 4 <= MAX_HEADERS);
    let p = rw.headers.as_mut_ptr();
    // SAFETY: inside `headers` and 4-aligned (see `put16`).
    #[allow(unsafe_code)]
    unsafe {
        (p.add(at) as *mut u32).write(value.to_be())
    };
}

/// Copies the route's source and destination addresses into the headers at `at` (IPv6: 8,
/// two 64-bit words each; IPv4: 12, one 32-bit word each), as [`put16`]. The addresses are
/// 8-aligned too: the first two fields of the 8-aligned, `repr(C)` [`Route`].
#[inline(always)]
const fn put_addrs(rw: &mut Rewrite, at: usize, out: &Route, ipv6: bool) {
    let p = rw.headers.as_mut_ptr();
    let src = out.src.as_ptr();
    let dst = out.dst.as_ptr();
    if ipv6 {
        debug_assert!(at.is_multiple_of(8) && at + 32 <= MAX_HEADERS);
        // SAFETY: 16 bytes each, inside `headers` and the route's addresses, all 8-aligned.
        #[allow(unsafe_code)]
        unsafe {
            let (s, d) = (src as *const u64, dst as *const u64);
            let p = p.add(at) as *mut u64;
            p.write(s.read());
            p.add(1).write(s.add(1).read());
            p.add(2).write(d.read());
            p.add(3).write(d.add(1).read());
        }
    } else {
        debug_assert!(at.is_multiple_of(4) && at + 8 <= MAX_HEADERS);
        // SAFETY: 4 bytes each, inside `headers` and the route's addresses, all 4-aligned.
        #[allow(unsafe_code)]
        unsafe {
            let p = p.add(at) as *mut u32;
            p.write((src as *const u32).read());
            p.add(1).write((dst as *const u32).read());
        }
    }
}
