//! Unit tests of the parsing and rewriting functions.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::csum::Sum;
use crate::maps::{ChannelValue, FAMILY_IPV4, FAMILY_IPV6};
use crate::verdict::Verdict;

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
