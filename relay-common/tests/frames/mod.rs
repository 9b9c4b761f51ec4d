//! Packets built from scratch for the XDP program's tests, checksums computed in full with an
//! independent implementation (not relay_common::csum): relay-common's rewrite test and
//! relay's BPF_PROG_TEST_RUN test (which includes this file by path) build their frames here.

#![allow(dead_code)] // Each test uses a different part.

use std::net::{IpAddr, SocketAddr};

use relay_common::packet::{
    ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP, IPV4_DF, IPV4_HLEN, IPV6_HLEN, UDP_HLEN,
};

/// RFC 1071, written out plainly.
pub fn inet_sum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IP header fields a frame carries, and how it is padded.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub ttl: u8,
    pub tos: u8,
    pub flow_label: u32,
    pub ipv4_id: u16,
    pub df: bool,
    /// Send UDP checksum 0 (IPv4 only makes sense).
    pub no_checksum: bool,
    /// Pad the frame to at least this many bytes (Ethernet minimum frame: 60).
    pub pad_frame_to: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            ttl: 64,
            tos: 0,
            flow_label: 0,
            ipv4_id: 0x1234,
            df: true,
            no_checksum: false,
            pad_frame_to: 0,
        }
    }
}

/// What a packet becomes when the program forwards it, across families or not: TTL one less,
/// TOS/traffic class carried, flow label only between IPv6 packets, ID and DF only between
/// IPv4 packets (DF set coming from IPv6), no padding.
pub fn forwarded(o: Opts, from_v6: bool, to_v6: bool) -> Opts {
    Opts {
        ttl: o.ttl - 1,
        flow_label: if from_v6 && to_v6 { o.flow_label } else { 0 },
        ipv4_id: if from_v6 { 0 } else { o.ipv4_id },
        df: if from_v6 { true } else { o.df },
        pad_frame_to: 0,
        ..o
    }
}

pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// An Ethernet + IP + UDP frame carrying `payload`.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    o: Opts,
) -> Vec<u8> {
    let udp_len = (UDP_HLEN + payload.len()) as u16;
    let (s, d) = (ip_bytes(src.ip()), ip_bytes(dst.ip()));
    let mut udp = Vec::new();
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let check = match inet_sum(&[&s, &d, &pseudo_tail(src.is_ipv6(), udp_len), &udp]) {
        0 => 0xFFFF,
        c => c,
    };
    if !o.no_checksum {
        udp[6..8].copy_from_slice(&check.to_be_bytes());
    }
    let mut out = ip_frame(
        dst_mac,
        src_mac,
        src.ip(),
        dst.ip(),
        IPPROTO_UDP,
        udp.len(),
        o,
    );
    out.extend_from_slice(&udp);
    while out.len() < o.pad_frame_to {
        out.push(0);
    }
    out
}

/// Ethernet + IP header (no options) for `payload_len` bytes of protocol `proto`.
pub fn ip_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    payload_len: usize,
    o: Opts,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    if src.is_ipv6() {
        out.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        let first = (6u32 << 28) | (u32::from(o.tos) << 20) | o.flow_label;
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        out.extend_from_slice(&[proto, o.ttl]);
        out.extend_from_slice(&ip_bytes(src));
        out.extend_from_slice(&ip_bytes(dst));
    } else {
        out.extend_from_slice(&ETH_P_IP.to_be_bytes());
        let mut h = vec![0x45, o.tos];
        h.extend_from_slice(&((IPV4_HLEN + payload_len) as u16).to_be_bytes());
        h.extend_from_slice(&o.ipv4_id.to_be_bytes());
        h.extend_from_slice(&(if o.df { IPV4_DF } else { 0 }).to_be_bytes());
        h.extend_from_slice(&[o.ttl, proto, 0, 0]);
        h.extend_from_slice(&ip_bytes(src));
        h.extend_from_slice(&ip_bytes(dst));
        let c = inet_sum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&h);
    }
    out
}

/// The UDP pseudo-header after the addresses: the length and the protocol.
fn pseudo_tail(v6: bool, udp_len: u16) -> Vec<u8> {
    if v6 {
        [
            &u32::from(udp_len).to_be_bytes()[..],
            &[0, 0, 0, IPPROTO_UDP],
        ]
        .concat()
    } else {
        [&[0, IPPROTO_UDP][..], &udp_len.to_be_bytes()].concat()
    }
}

/// A ChannelData message: channel, length, `data`, then `padding` as given.
pub fn channel_data(channel: u16, data: &[u8], padding: &[u8]) -> Vec<u8> {
    let mut out = channel.to_be_bytes().to_vec();
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(padding);
    out
}

/// Checks a frame's IP header checksum (IPv4) and its UDP checksum by full recomputation.
pub fn assert_checksums(frame: &[u8]) {
    let v6 = u16::from_be_bytes([frame[12], frame[13]]) == ETH_P_IPV6;
    let l3 = &frame[ETH_HLEN..];
    let (hlen, src, dst) = if v6 {
        (IPV6_HLEN, &l3[8..24], &l3[24..40])
    } else {
        assert_eq!(inet_sum(&[&l3[..IPV4_HLEN]]), 0, "IPv4 header checksum");
        (IPV4_HLEN, &l3[12..16], &l3[16..20])
    };
    let udp = &l3[hlen..];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]);
    let udp = &udp[..usize::from(udp_len)];
    if !v6 && udp[6..8] == [0, 0] {
        return;
    }
    assert_eq!(
        inet_sum(&[src, dst, &pseudo_tail(v6, udp_len), udp]),
        0,
        "UDP checksum"
    );
}

/// `frame` as a sender with UDP checksum offload hands it over before the offload runs: the
/// UDP checksum field holds the folded pseudo-header sum, not complemented (what Linux writes
/// for a `CHECKSUM_PARTIAL` skb).
pub fn partial(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    let (udp_at, seed) = pseudo_header_sum(frame);
    out[udp_at + 6..udp_at + 8].copy_from_slice(&seed.to_be_bytes());
    out
}

/// Where the UDP header of `frame` starts, and the folded (not complemented) sum of its
/// pseudo-header.
pub fn pseudo_header_sum(frame: &[u8]) -> (usize, u16) {
    let v6 = u16::from_be_bytes([frame[12], frame[13]]) == ETH_P_IPV6;
    let l3 = &frame[ETH_HLEN..];
    let (hlen, src, dst) = if v6 {
        (IPV6_HLEN, &l3[8..24], &l3[24..40])
    } else {
        (IPV4_HLEN, &l3[12..16], &l3[16..20])
    };
    let udp_at = ETH_HLEN + hlen;
    let udp_len = u16::from_be_bytes([frame[udp_at + 4], frame[udp_at + 5]]);
    (udp_at, !inet_sum(&[src, dst, &pseudo_tail(v6, udp_len)]))
}

/// What a checksum offload does to a `CHECKSUM_PARTIAL` packet whose `csum_start` is
/// `csum_start` (an offset of `frame`) and `csum_offset` 6 (UDP): sums from there to the end of
/// the frame (the UDP datagram, with the seed in its checksum field) and writes the complement
/// there, a zero as 0xFFFF (Linux's `skb_checksum_help`).
pub fn finish_partial(frame: &[u8], csum_start: usize) -> Vec<u8> {
    let mut out = frame.to_vec();
    let sum = match inet_sum(&[&frame[csum_start..]]) {
        0 => 0xFFFF,
        c => c,
    };
    out[csum_start + 6..csum_start + 8].copy_from_slice(&sum.to_be_bytes());
    out
}

/// A Data indication built independently: STUN header, XOR-PEER-ADDRESS, DATA, padding.
pub fn data_indication(txid: &[u8; 12], peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    let mut xor_peer = vec![0u8, if peer.is_ipv4() { 1 } else { 2 }];
    let port = peer.port() ^ 0x2112;
    xor_peer.extend_from_slice(&port.to_be_bytes());
    let key: Vec<u8> = COOKIE.iter().chain(txid.iter()).copied().collect();
    match peer.ip() {
        IpAddr::V4(a) => xor_peer.extend(a.octets().iter().zip(&key).map(|(b, k)| b ^ k)),
        IpAddr::V6(a) => xor_peer.extend(a.octets().iter().zip(&key).map(|(b, k)| b ^ k)),
    }
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0012u16.to_be_bytes());
    attrs.extend_from_slice(&(xor_peer.len() as u16).to_be_bytes());
    attrs.extend_from_slice(&xor_peer);
    attrs.extend_from_slice(&0x0013u16.to_be_bytes());
    attrs.extend_from_slice(&(data.len() as u16).to_be_bytes());
    attrs.extend_from_slice(data);
    attrs.resize(attrs.len().next_multiple_of(4), 0);
    let mut msg = 0x0017u16.to_be_bytes().to_vec();
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&COOKIE);
    msg.extend_from_slice(txid);
    msg.extend_from_slice(&attrs);
    msg
}

/// An attribute of a Send indication built by [`send_indication`].
#[derive(Clone)]
pub enum Attr {
    Peer(SocketAddr),
    Data(Vec<u8>),
    DontFragment,
    Software(&'static str),
    /// An unknown comprehension-required attribute.
    Unknown,
}

/// A Send indication built independently, attributes in the order given, FINGERPRINT last if
/// `fingerprint` (Firefox puts one on every message; `Some(false)`: a wrong one).
pub fn send_indication(txid: &[u8; 12], attrs: &[Attr], fingerprint: Option<bool>) -> Vec<u8> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    let mut body = Vec::new();
    let mut attr = |typ: u16, value: &[u8]| {
        body.extend_from_slice(&typ.to_be_bytes());
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    };
    for a in attrs {
        match a {
            Attr::Peer(peer) => {
                let mut v = vec![0u8, if peer.is_ipv4() { 1 } else { 2 }];
                v.extend_from_slice(&(peer.port() ^ 0x2112).to_be_bytes());
                let key: Vec<u8> = COOKIE.iter().chain(txid.iter()).copied().collect();
                let octets = match peer.ip() {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                v.extend(octets.iter().zip(&key).map(|(b, k)| b ^ k));
                attr(0x0012, &v);
            }
            Attr::Data(d) => attr(0x0013, d),
            Attr::DontFragment => attr(0x001A, &[]),
            Attr::Software(t) => attr(0x8022, t.as_bytes()),
            Attr::Unknown => attr(0x0024, &[1, 2, 3, 4]),
        }
    }
    let len = body.len() + if fingerprint.is_some() { 8 } else { 0 };
    let mut msg = 0x0016u16.to_be_bytes().to_vec();
    msg.extend_from_slice(&(len as u16).to_be_bytes());
    msg.extend_from_slice(&COOKIE);
    msg.extend_from_slice(txid);
    msg.extend_from_slice(&body);
    if let Some(right) = fingerprint {
        let crc = crc32fast::hash(&msg) ^ 0x5354_554E ^ if right { 0 } else { 1 };
        msg.extend_from_slice(&0x8028u16.to_be_bytes());
        msg.extend_from_slice(&4u16.to_be_bytes());
        msg.extend_from_slice(&crc.to_be_bytes());
    }
    msg
}
