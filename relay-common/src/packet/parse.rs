//! Parsing: the family of an Ethernet frame, IPv4 and IPv6 headers without options or
//! extension headers, and the UDP header, each from a fixed-size array.

use super::{
    ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP, IPV4_HLEN,
    IPV4_MF_OFFSET, IPV6_HLEN, MAX_FRAME, UDP_HLEN,
};
use crate::maps::{FAMILY_IPV4, FAMILY_IPV6};
use crate::verdict::Verdict;

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
