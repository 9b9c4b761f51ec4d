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
