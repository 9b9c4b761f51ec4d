//! Parsing and rewriting, as plain functions on fixed-size byte arrays.
//!
//! The XDP program copies each header out of the packet into an array after one bounds check,
//! calls these functions, and copies the arrays they fill back in: the verifier sees constant
//! offsets only, and the same code runs under `cargo test` on packets built by hand. Nothing
//! here loops over a payload: a rewrite changes headers, and the UDP checksum is updated from
//! the old one (RFC 1624) with the words that changed, padding and ChannelData header included.
//!
//! A forwarded packet is rewritten in four steps, the same in both directions:
//! `bpf_xdp_adjust_head(`[`Rewrite::head_delta`]`)` so that the payload stays where it is and
//! the new headers fit in front of it; `bpf_xdp_adjust_tail` down to [`Rewrite::frame_len`]
//! (dropping ChannelData padding and Ethernet padding); then an Ethernet header with the MACs
//! the FIB lookup gave, followed by [`Rewrite::headers`].

use crate::verdict::Verdict;
use crate::csum::Sum;
use crate::indication::DataHeader;
use crate::maps::{ChannelValue, FAMILY_IPV4, FAMILY_IPV6, PeerKey, PeerValue};

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options (the only one the program forwards).
pub const IPV4_HLEN: usize = 20;
/// IPv6 fixed header length (the program forwards no extension headers).
pub const IPV6_HLEN: usize = 40;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// ChannelData header length (channel number, length).
pub const CHANNEL_HLEN: usize = 4;
/// The longest frame the program handles; longer ones are passed ([`Verdict::PassTooBig`]).
/// Bounding offsets is what lets the verifier accept reads at a variable offset.
pub const MAX_FRAME: usize = 0x3FFF;
/// The most headers a rewrite writes after the Ethernet header: IPv6 + UDP + ChannelData.
pub const MAX_HEADERS: usize = IPV6_HLEN + UDP_HLEN + CHANNEL_HLEN;

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88A8;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv4 "don't fragment" flag, in the flags/fragment-offset word.
pub const IPV4_DF: u16 = 0x4000;
/// IPv4 "more fragments" flag and fragment offset mask.
const IPV4_MF_OFFSET: u16 = 0x3FFF;

/// The family of the IP packet in an Ethernet frame, from its EtherType.
#[inline(always)]
pub const fn l3_family(eth: &[u8; ETH_HLEN]) -> Result<u8, Verdict> {
    match u16::from_be_bytes([eth[12], eth[13]]) {
        ETH_P_IP => Ok(FAMILY_IPV4),
        ETH_P_IPV6 => Ok(FAMILY_IPV6),
        // Tagged frames: a NIC usually strips the tag before XDP sees the frame; when it does
        // not, the kernel's VLAN device handles it.
        ETH_P_8021Q | ETH_P_8021AD => Err(Verdict::PassVlan),
        _ => Err(Verdict::PassNotIp),
    }
}

/// Frames longer than [`MAX_FRAME`] are not the program's (see there).
#[inline(always)]
pub const fn check_frame_len(frame_len: usize) -> Result<(), Verdict> {
    if frame_len > MAX_FRAME {
        Err(Verdict::PassTooBig)
    } else {
        Ok(())
    }
}

/// What the program keeps of an IP header.
///
/// `repr(C, align(8))` with the addresses first: they sit at offsets 0 and 16 of an 8-aligned
/// struct, so the program copies them as two 64-bit words each rather than byte by byte (the
/// BPF target splits any access it cannot prove aligned into bytes). The same holds for
/// [`Route`] and [`Rewrite`].
#[repr(C, align(8))]
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct Ip {
    /// Source address, in the crate's 16-byte layout.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Bytes after the IP header: IPv4 total length - 20, or the IPv6 payload length.
    pub payload_len: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 TOS or IPv6 traffic class (DSCP and ECN), carried over.
    pub tos: u8,
    /// IPv6 flow label (20 bits); 0 for IPv4.
    pub flow_label: u32,
    /// IPv4 identification; 0 for IPv6.
    pub ipv4_id: u16,
    /// IPv4 flags and fragment offset (only DF can be set on a packet that gets here).
    pub ipv4_frag: u16,
    /// IPv4 header checksum as received; 0 for IPv6.
    pub ipv4_check: u16,
}

impl Ip {
    /// The IP header length (no options, no extension headers).
    #[inline(always)]
    pub const fn header_len(&self) -> usize {
        header_len(self.family)
    }
}

/// The IP header length of a family, as the program forwards it.
#[inline(always)]
pub const fn header_len(family: u8) -> usize {
    if family == FAMILY_IPV6 {
        IPV6_HLEN
    } else {
        IPV4_HLEN
    }
}

impl Ip {
    /// An all-zero header to parse into.
    pub const EMPTY: Ip = Ip {
        family: 0,
        src: [0; 16],
        dst: [0; 16],
        payload_len: 0,
        ttl: 0,
        tos: 0,
        flow_label: 0,
        ipv4_id: 0,
        ipv4_frag: 0,
        ipv4_check: 0,
    };
}

/// Parses an IPv4 header; `l3_len` is the frame length after the Ethernet header.
#[inline(always)]
pub const fn parse_ipv4(h: &[u8; IPV4_HLEN], l3_len: usize) -> Result<Ip, Verdict> {
    let mut ip = Ip::EMPTY;
    match parse_ipv4_into(h, l3_len, &mut ip) {
        Ok(()) => Ok(ip),
        Err(verdict) => Err(verdict),
    }
}

/// Parses an IPv6 header; `l3_len` is the frame length after the Ethernet header.
#[inline(always)]
pub const fn parse_ipv6(h: &[u8; IPV6_HLEN], l3_len: usize) -> Result<Ip, Verdict> {
    let mut ip = Ip::EMPTY;
    match parse_ipv6_into(h, l3_len, &mut ip) {
        Ok(()) => Ok(ip),
        Err(verdict) => Err(verdict),
    }
}

/// [`parse_ipv4`] into an `Ip` the caller owns (the program keeps it in its per-CPU scratch
/// map: as a local, its addresses get split into bytes that each take a stack slot). On error
/// `ip` is left partly written.
#[inline(always)]
pub const fn parse_ipv4_into(
    h: &[u8; IPV4_HLEN],
    l3_len: usize,
    ip: &mut Ip,
) -> Result<(), Verdict> {
    let ihl = (h[0] & 0x0F) as usize * 4;
    let total_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    // The kernel drops these too (ip_rcv_core); they cannot be anyone's.
    if h[0] >> 4 != 4 || ihl < IPV4_HLEN || total_len < ihl || total_len > l3_len {
        return Err(Verdict::DropMalformed);
    }
    if h[9] != IPPROTO_UDP {
        return Err(Verdict::PassNotUdp);
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & IPV4_MF_OFFSET != 0 {
        return Err(Verdict::PassFragment);
    }
    if ihl != IPV4_HLEN {
        return Err(Verdict::PassIpOptions);
    }
    ip.family = FAMILY_IPV4;
    // Written as one 128-bit number each: zero bytes written as such become a memset call in
    // the program, a byte loop.
    ip.src = v4_in_16(h[12], h[13], h[14], h[15]);
    ip.dst = v4_in_16(h[16], h[17], h[18], h[19]);
    ip.payload_len = (total_len - IPV4_HLEN) as u16;
    ip.ttl = h[8];
    ip.tos = h[1];
    ip.flow_label = 0;
    ip.ipv4_id = u16::from_be_bytes([h[4], h[5]]);
    ip.ipv4_frag = frag;
    ip.ipv4_check = u16::from_be_bytes([h[10], h[11]]);
    Ok(())
}

/// [`parse_ipv6`] into an `Ip` the caller owns, as [`parse_ipv4_into`].
#[inline(always)]
pub const fn parse_ipv6_into(
    h: &[u8; IPV6_HLEN],
    l3_len: usize,
    ip: &mut Ip,
) -> Result<(), Verdict> {
    let fixed = [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]];
    if let Err(verdict) = parse_ipv6_fixed_into(&fixed, l3_len, ip) {
        return Err(verdict);
    }
    ip.src = addr16(h, 8);
    ip.dst = addr16(h, 24);
    Ok(())
}

/// [`parse_ipv6_into`] of everything but the addresses: `h` is the first 8 bytes of the
/// header, and the caller copies the addresses (bytes 8-39) into `ip.src` and `ip.dst` itself
/// when this succeeds. The program does, in 16-bit words straight from the packet: going
/// through a 40-byte array, LLVM reassembles them into 64-bit words in more registers than
/// BPF has.
#[inline(always)]
pub const fn parse_ipv6_fixed_into(h: &[u8; 8], l3_len: usize, ip: &mut Ip) -> Result<(), Verdict> {
    let payload_len = u16::from_be_bytes([h[4], h[5]]);
    if h[0] >> 4 != 6 || IPV6_HLEN + payload_len as usize > l3_len {
        return Err(Verdict::DropMalformed);
    }
    match h[6] {
        IPPROTO_UDP => {}
        // Fragment header.
        44 => return Err(Verdict::PassFragment),
        // Hop-by-hop, routing, destination options, AH, mobility, HIP, shim6: extension
        // headers the program does not walk.
        0 | 43 | 60 | 51 | 135 | 139 | 140 => return Err(Verdict::PassIpOptions),
        _ => return Err(Verdict::PassNotUdp),
    }
    let first = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    ip.family = FAMILY_IPV6;
    ip.payload_len = payload_len;
    ip.ttl = h[7];
    ip.tos = (first >> 20) as u8;
    ip.flow_label = first & 0x000F_FFFF;
    ip.ipv4_id = 0;
    ip.ipv4_frag = 0;
    ip.ipv4_check = 0;
    Ok(())
}

/// An IPv4 address in the crate's 16-byte layout.
#[inline(always)]
const fn v4_in_16(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
    ((u32::from_be_bytes([a, b, c, d]) as u128) << 96).to_be_bytes()
}

/// The 16 bytes at `at` of an IPv6 header, built from two 64-bit words rather than copied: a
/// 16-byte copy becomes a memcpy call in the program, a byte loop.
#[inline(always)]
const fn addr16(h: &[u8; IPV6_HLEN], at: usize) -> [u8; 16] {
    let hi = u64::from_be_bytes([
        h[at],
        h[at + 1],
        h[at + 2],
        h[at + 3],
        h[at + 4],
        h[at + 5],
        h[at + 6],
        h[at + 7],
    ]);
    let lo = u64::from_be_bytes([
        h[at + 8],
        h[at + 9],
        h[at + 10],
        h[at + 11],
        h[at + 12],
        h[at + 13],
        h[at + 14],
        h[at + 15],
    ]);
    (((hi as u128) << 64) | lo as u128).to_be_bytes()
}

/// What the program keeps of a UDP header (host-order numbers).
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct Udp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The UDP length field (header included).
    pub len: u16,
    /// The checksum as received (0: none, IPv4 only).
    pub check: u16,
}

impl Udp {
    /// The payload length.
    #[inline(always)]
    pub const fn payload_len(&self) -> u16 {
        self.len - UDP_HLEN as u16
    }
}

/// Parses a UDP header. A length shorter than the IP payload is allowed (the rest is ignored,
/// as the kernel does); a longer one, or one shorter than the header, is malformed.
#[inline(always)]
pub const fn parse_udp(h: &[u8; UDP_HLEN], ip: &Ip) -> Result<Udp, Verdict> {
    let len = u16::from_be_bytes([h[4], h[5]]);
    if (len as usize) < UDP_HLEN || len > ip.payload_len {
        return Err(Verdict::DropMalformed);
    }
    Ok(Udp {
        src_port: u16::from_be_bytes([h[0], h[1]]),
        dst_port: u16::from_be_bytes([h[2], h[3]]),
        len,
        check: u16::from_be_bytes([h[6], h[7]]),
    })
}

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

impl Route {
    /// An all-zero route to fill in.
    pub const EMPTY: Route = Route {
        family: 0,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        removed: 0,
        removed_len: 0,
        added: None,
        added_len: 0,
        added_sum: 0,
        padding: 0,
        data_len: 0,
        counter: 0,
        peer_counter: NO_COUNTER,
    };
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

/// Where a forwarded packet goes and what happens to its payload: the part of a rewrite that
/// comes from the map value. It holds copies, not references: the program keeps it in its
/// scratch map, where the verifier allows no pointers.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
#[repr(C, align(8))]
pub struct Route {
    /// The outgoing source address (first, so 8-aligned: see [`Ip`]).
    pub src: [u8; 16],
    /// The outgoing destination address.
    pub dst: [u8; 16],
    /// The outgoing family.
    pub family: u8,
    /// The outgoing source port (host order).
    pub src_port: u16,
    /// The outgoing destination port (host order).
    pub dst_port: u16,
    /// The folded checksum sum of the payload words that go (ChannelData header, padding).
    pub removed: u16,
    /// How many bytes in front of the data go: the ChannelData header from a client (4), none
    /// from a peer.
    pub removed_len: u16,
    /// The ChannelData header that goes in front of the payload, towards a client.
    pub added: Option<ChannelHeader>,
    /// How many bytes go in front of the data: a ChannelData header's 4, or a Data
    /// indication's header (36 or 48 bytes, which the program writes after
    /// [`Rewrite::headers`] itself); 0 towards a peer.
    pub added_len: u16,
    /// The folded checksum sum of those bytes.
    pub added_sum: u16,
    /// Zero bytes after the data (a Data indication's padding to 4 bytes).
    pub padding: u16,
    /// The application data bytes.
    pub data_len: u16,
    /// The channel's (or permission's) counter slot.
    pub counter: u32,
    /// Same-relay calls ([`same_relay_into`]): the counter slot of the channel the data
    /// reaches the other client on; [`NO_COUNTER`] otherwise.
    pub peer_counter: u32,
}

/// [`Route::peer_counter`] of a route that is not a same-relay one.
pub const NO_COUNTER: u32 = u32::MAX;

/// Turns a client's route to a peer that is another relayed address of this relay (both
/// parties of a call on one relay) into the route to the client that owns that address:
/// `value` is its [`PEER_TO_CLIENT`](crate::maps::PEER_TO_CLIENT) entry for the first
/// client's relayed address, which exists only while that client has a channel bound to it,
/// and so a permission for it. What would have left from one relayed address and come back to
/// the other, through the kernel's loopback and two passes of userspace, leaves once: from
/// the listener of the second client, as ChannelData on its channel. The data, what was
/// removed from in front of it and the first channel's counter stay.
#[inline(always)]
pub const fn same_relay_into(route: &mut Route, value: &PeerValue) {
    set_to_client(route, value);
    set_channel_header(route, u16::from_be(value.channel), route.data_len);
    route.peer_counter = value.counter;
}

/// [`same_relay_into`] where the client that owns the peer address has a permission for the
/// first client's relayed address but no channel (Firefox never binds one): the data reaches
/// it as a Data indication, whose `header` was built for the first client's relayed address
/// (the peer it hears from) before `route` changes. `value` is the permission's entry.
#[inline(always)]
pub const fn same_relay_indication_into(route: &mut Route, value: &PeerValue, header: &DataHeader) {
    set_to_client(route, value);
    set_data_indication(route, header);
    route.peer_counter = value.counter;
}

/// The key of the permission, if any, that the owner of the peer address along `route` (a
/// client's to its peer) holds for the first client's relayed address.
#[inline(always)]
pub const fn same_relay_permission_key(route: &Route) -> PeerKey {
    PeerKey::permission_from_packet(route.family, route.dst, route.dst_port, route.src)
}

/// The [`PEER_TO_CLIENT`](crate::maps::PEER_TO_CLIENT) key of a datagram along `route` (a
/// client's to its peer), were the peer one of this relay's relayed addresses.
#[inline(always)]
pub const fn same_relay_key(route: &Route) -> PeerKey {
    PeerKey::from_packet(
        route.family,
        route.dst,
        route.dst_port,
        route.src,
        route.src_port,
    )
}

/// The route of ChannelData from a client to a peer: the 4-byte header and any padding go, the
/// packet leaves from the relayed address to the peer. `trailing` is [`trailing_sum`] of the
/// padding ([`channel_data_fits`] counted it).
#[inline(always)]
pub const fn route_to_peer(cd: ChannelHeader, trailing: Sum, value: &ChannelValue) -> Route {
    let mut route = Route::EMPTY;
    route_to_peer_into(cd, trailing, value, &mut route);
    route
}

/// [`route_to_peer`] into a `Route` the caller owns (the program's scratch map): field by
/// field, where a returned `Route` is built on the stack and copied.
#[inline(always)]
pub const fn route_to_peer_into(
    cd: ChannelHeader,
    trailing: Sum,
    value: &ChannelValue,
    route: &mut Route,
) {
    route.src = value.relay_addr;
    route.dst = value.peer_addr;
    route.family = value.family;
    route.src_port = u16::from_be(value.relay_port);
    route.dst_port = u16::from_be(value.peer_port);
    route.removed = Sum::new()
        .add(cd.channel)
        .add(cd.len)
        .add(trailing.fold())
        .fold();
    route.removed_len = CHANNEL_HLEN as u16;
    route.added = None;
    route.added_len = 0;
    route.added_sum = 0;
    route.padding = 0;
    route.data_len = cd.len;
    route.counter = value.counter;
    route.peer_counter = NO_COUNTER;
}

/// The route of a peer's datagram to a client: a ChannelData header goes in front of the data,
/// the packet leaves from the listener to the client.
#[inline(always)]
pub const fn route_to_client(udp: &Udp, value: &PeerValue) -> Route {
    let mut route = Route::EMPTY;
    route_to_client_into(udp, value, &mut route);
    route
}

/// [`route_to_client`] into a `Route` the caller owns, as [`route_to_peer_into`].
#[inline(always)]
pub const fn route_to_client_into(udp: &Udp, value: &PeerValue, route: &mut Route) {
    let data_len = udp.payload_len();
    set_to_client(route, value);
    route.removed = 0;
    route.removed_len = 0;
    route.peer_counter = NO_COUNTER;
    set_channel_header(route, u16::from_be(value.channel), data_len);
    route.data_len = data_len;
    route.counter = value.counter;
}

/// The route of a peer's datagram to a client that has a permission for the peer but no
/// channel for its port: a Data indication (RFC 8656 §11.4), whose header `header` (built
/// for the peer's address and the data's length) goes in front of the data and whose padding
/// after it. `value` is the permission's entry.
#[inline(always)]
pub const fn route_to_client_indication_into(
    udp: &Udp,
    value: &PeerValue,
    header: &DataHeader,
    route: &mut Route,
) {
    set_to_client(route, value);
    route.removed = 0;
    route.removed_len = 0;
    route.peer_counter = NO_COUNTER;
    set_data_indication(route, header);
    route.data_len = udp.payload_len();
    route.counter = value.counter;
}

/// Makes `route` leave from the listener to the client of `value` (a channel's or a
/// permission's [`PEER_TO_CLIENT`](crate::maps::PEER_TO_CLIENT) entry).
#[inline(always)]
const fn set_to_client(route: &mut Route, value: &PeerValue) {
    route.src = value.listener_addr;
    route.dst = value.client_addr;
    route.family = value.family;
    route.src_port = u16::from_be(value.listener_port);
    route.dst_port = u16::from_be(value.client_port);
}

/// Makes `route` put the Data indication `header` in front of the data and its padding after.
#[inline(always)]
const fn set_data_indication(route: &mut Route, header: &DataHeader) {
    route.added = None;
    route.added_len = header.len;
    route.added_sum = header.sum.fold();
    route.padding = header.padding;
}

/// Makes `route` put a ChannelData header for `channel` and `len` data bytes in front of
/// the data.
#[inline(always)]
const fn set_channel_header(route: &mut Route, channel: u16, len: u16) {
    route.added = Some(ChannelHeader { channel, len });
    route.added_len = CHANNEL_HLEN as u16;
    route.added_sum = Sum::new().add(channel).add(len).fold();
    route.padding = 0;
}

/// The route of a Send indication's data (RFC 8656 §11.2) from a client to its peer: the
/// STUN header and every attribute but the data go, the data leaves from the relayed address
/// `relay` of the peer's family to the peer. `removed` is the folded sum of the payload bytes
/// that go; `counter` the permission's counter slot.
#[inline(always)]
pub const fn route_to_peer_send_into(
    send: &crate::indication::SendIndication,
    relay: &[u8; 16],
    relay_port: u16,
    removed: u16,
    counter: u32,
    route: &mut Route,
) {
    route.src = *relay;
    route.dst = send.peer_addr;
    route.family = send.peer_family;
    route.src_port = relay_port;
    route.dst_port = send.peer_port;
    route.removed = removed;
    route.removed_len = send.data_offset;
    route.added = None;
    route.added_len = 0;
    route.added_sum = 0;
    route.padding = 0;
    route.data_len = send.data_len;
    route.counter = counter;
    route.peer_counter = NO_COUNTER;
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
pub const fn rewrite_into(ip: &Ip, udp: &Udp, out: &Route, rw: &mut Rewrite) -> Result<(), Verdict> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ipv4(proto: u8, ihl: u8, frag: u16, total: u16) -> [u8; IPV4_HLEN] {
        let mut h = [0u8; IPV4_HLEN];
        h[0] = 0x40 | ihl;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&[192, 0, 2, 1]);
        h[16..20].copy_from_slice(&[198, 51, 100, 7]);
        h
    }

    fn ipv6(next: u8, payload: u16) -> [u8; IPV6_HLEN] {
        let mut h = [0u8; IPV6_HLEN];
        h[0..4].copy_from_slice(&0x6AB1_2345u32.to_be_bytes());
        h[4..6].copy_from_slice(&payload.to_be_bytes());
        h[6] = next;
        h[7] = 1;
        h[8] = 0x20;
        h[39] = 9;
        h
    }

    /// The word-wise accesses of `put16`, `put32`, `put_addrs`, `Rewrite::words` and the
    /// program's `copy_addr` and `store_headers` rely on this layout.
    #[test]
    fn byte_arrays_lead_8_aligned_structs() {
        use core::mem::{align_of, offset_of};
        assert_eq!(
            (align_of::<Ip>(), offset_of!(Ip, src), offset_of!(Ip, dst)),
            (8, 0, 16)
        );
        assert_eq!(
            (
                align_of::<Route>(),
                offset_of!(Route, src),
                offset_of!(Route, dst)
            ),
            (8, 0, 16)
        );
        assert_eq!(
            (align_of::<Rewrite>(), offset_of!(Rewrite, headers)),
            (8, 0)
        );
    }

    #[test]
    fn ethertypes() {
        let mut eth = [0u8; ETH_HLEN];
        for (t, r) in [
            (ETH_P_IP, Ok(FAMILY_IPV4)),
            (ETH_P_IPV6, Ok(FAMILY_IPV6)),
            (ETH_P_8021Q, Err(Verdict::PassVlan)),
            (ETH_P_8021AD, Err(Verdict::PassVlan)),
            (0x0806, Err(Verdict::PassNotIp)),
        ] {
            eth[12..].copy_from_slice(&t.to_be_bytes());
            assert_eq!(l3_family(&eth), r, "{t:#06x}");
        }
    }

    #[test]
    fn ipv4_cases() {
        let ok = parse_ipv4(&ipv4(17, 5, IPV4_DF, 40), 46).unwrap();
        assert_eq!(ok.payload_len, 20);
        assert_eq!((ok.ttl, ok.ipv4_frag), (64, IPV4_DF));
        assert_eq!(ok.src[..4], [192, 0, 2, 1]);
        assert_eq!(ok.dst[4..], [0; 12]);
        for (h, l3_len, want) in [
            (ipv4(6, 5, 0, 40), 40, Verdict::PassNotUdp),
            (ipv4(17, 5, 0x2000, 40), 40, Verdict::PassFragment),
            (ipv4(17, 5, 0x0001, 40), 40, Verdict::PassFragment),
            (ipv4(17, 6, 0, 40), 40, Verdict::PassIpOptions),
            (ipv4(17, 4, 0, 40), 40, Verdict::DropMalformed),
            (ipv4(17, 5, 0, 41), 40, Verdict::DropMalformed),
            (ipv4(17, 6, 0, 20), 40, Verdict::DropMalformed),
        ] {
            assert_eq!(parse_ipv4(&h, l3_len), Err(want), "{h:?}");
        }
        let mut v6 = ipv4(17, 5, 0, 40);
        v6[0] = 0x65;
        assert_eq!(parse_ipv4(&v6, 40), Err(Verdict::DropMalformed));
    }

    #[test]
    fn ipv6_cases() {
        let ok = parse_ipv6(&ipv6(17, 8), 48).unwrap();
        assert_eq!((ok.payload_len, ok.ttl), (8, 1));
        assert_eq!((ok.tos, ok.flow_label), (0xAB, 0x1_2345));
        assert_eq!((ok.src[0], ok.dst[15]), (0x20, 9));
        for (next, want) in [
            (44, Verdict::PassFragment),
            (0, Verdict::PassIpOptions),
            (60, Verdict::PassIpOptions),
            (6, Verdict::PassNotUdp),
            (58, Verdict::PassNotUdp),
        ] {
            assert_eq!(parse_ipv6(&ipv6(next, 8), 48), Err(want));
        }
        assert_eq!(parse_ipv6(&ipv6(17, 9), 48), Err(Verdict::DropMalformed));
    }

    #[test]
    fn udp_lengths() {
        let ip = parse_ipv4(&ipv4(17, 5, 0, 40), 40).unwrap();
        let udp = |len: u16| {
            let mut h = [0u8; UDP_HLEN];
            h[4..6].copy_from_slice(&len.to_be_bytes());
            h
        };
        assert_eq!(parse_udp(&udp(20), &ip).unwrap().payload_len(), 12);
        // Shorter than the IP payload: allowed, the rest is not part of the datagram.
        assert_eq!(parse_udp(&udp(8), &ip).unwrap().payload_len(), 0);
        assert_eq!(parse_udp(&udp(21), &ip), Err(Verdict::DropMalformed));
        assert_eq!(parse_udp(&udp(7), &ip), Err(Verdict::DropMalformed));
    }

    #[test]
    fn channel_data_classification() {
        assert_eq!(
            channel_header(&[0x40, 0x01, 0x00, 0x05]),
            Some(ChannelHeader {
                channel: 0x4001,
                len: 5
            })
        );
        assert_eq!(channel_header(&[0x00, 0x01, 0x00, 0x05]), None);
        assert_eq!(channel_header(&[0x80, 0x01, 0x00, 0x05]), None);
        let cd = ChannelHeader {
            channel: 0x4000,
            len: 5,
        };
        assert_eq!(channel_data_fits(cd, 9), Ok(0));
        assert_eq!(channel_data_fits(cd, 12), Ok(3));
        assert_eq!(channel_data_fits(cd, 13), Err(Verdict::PassTrailingBytes));
        assert_eq!(channel_data_fits(cd, 8), Err(Verdict::DropLength));
        let max = ChannelHeader {
            channel: 0x4000,
            len: 0xFFFF,
        };
        assert_eq!(channel_data_fits(max, 0xFFFF), Err(Verdict::DropLength));

        assert_eq!(unmatched(false, 0x00, 20), Verdict::PassNotForUs);
        assert_eq!(unmatched(true, 0x00, 20), Verdict::PassStun);
        assert_eq!(unmatched(true, 0x3F, 1), Verdict::PassStun);
        assert_eq!(unmatched(true, 0x40, 20), Verdict::PassUnknownChannel);
        assert_eq!(unmatched(true, 0x7F, 3), Verdict::DropLength);
        assert_eq!(unmatched(true, 0x80, 20), Verdict::PassNotChannelData);
        assert_eq!(unmatched(true, 0x00, 0), Verdict::PassNotChannelData);
    }

    #[test]
    fn trailing_bytes_sum_at_their_parity() {
        // Data of 5 bytes: padding at payload offsets 9, 10, 11 (odd, even, odd).
        let s = trailing_sum([0xAA, 0xBB, 0xCC], 3, 5);
        assert_eq!(s.fold(), 0x00AA + 0xBB00 + 0x00CC);
        assert_eq!(trailing_sum([0xAA, 0xBB, 0xCC], 1, 4).fold(), 0xAA00);
        assert_eq!(trailing_sum([0xAA, 0xBB, 0xCC], 0, 4).fold(), 0);
    }

    #[test]
    fn ttl_one_is_not_forwarded() {
        let mut h = ipv4(17, 5, 0, 40);
        h[8] = 1;
        let ip = parse_ipv4(&h, 40).unwrap();
        let udp = Udp {
            src_port: 1,
            dst_port: 2,
            len: 20,
            check: 0x1234,
        };
        let value = ChannelValue {
            relay_addr: [0; 16],
            peer_addr: [0; 16],
            relay_port: 0,
            peer_port: 0,
            family: FAMILY_IPV4,
            _pad: [0; 3],
            counter: 0,
        };
        let cd = ChannelHeader {
            channel: 0x4000,
            len: 8,
        };
        assert_eq!(
            client_to_peer(&ip, &udp, cd, Sum::new(), &value),
            Err(Verdict::PassTtl)
        );
    }
}
