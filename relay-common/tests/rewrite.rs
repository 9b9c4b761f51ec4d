//! The program's parsing and rewriting, run on real packets built by hand: every forwarded
//! packet must equal, byte for byte, the packet built from scratch with checksums computed in
//! full — so the incremental checksum updates are proven against full recomputation — in both
//! directions, for both families and across families.
//!
//! `run` below drives the `relay_common::packet` functions the way relay-ebpf's program does,
//! with hash maps for the BPF maps and a fixed FIB answer; the BPF_PROG_TEST_RUN tests in
//! relay/tests/xdp_testrun.rs run the real program.

#![allow(clippy::unwrap_used)]

mod frames;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use frames::{Opts, assert_checksums, channel_data, forwarded, udp_frame};
use proptest::prelude::*;
use relay_common::packet::{self, CHANNEL_HLEN, ETH_HLEN, Rewrite, UDP_HLEN};
use relay_common::{Action, ChannelEntries, ChannelKey, ChannelValue, PeerKey, PeerValue};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const RELAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

// ---------------------------------------------------------------------------------------------
// The program's flow, on a Vec.

#[derive(Default)]
struct Maps {
    client_to_peer: HashMap<ChannelKey, ChannelValue>,
    peer_to_client: HashMap<PeerKey, PeerValue>,
    listeners: Vec<SocketAddr>,
}

impl Maps {
    fn bind(
        &mut self,
        client: SocketAddr,
        listener: SocketAddr,
        channel: u16,
        relay: SocketAddr,
        peer: SocketAddr,
    ) {
        let e = ChannelEntries::new(client, listener, channel, relay, peer, 0).unwrap();
        self.client_to_peer.insert(e.channel_key, e.channel_value);
        self.peer_to_client.insert(e.peer_key, e.peer_value);
        if !self.listeners.contains(&listener) {
            self.listeners.push(listener);
        }
    }
}

fn array<const N: usize>(frame: &[u8], at: usize) -> Option<[u8; N]> {
    frame.get(at..at + N).map(|s| s.try_into().unwrap())
}

/// What relay-ebpf does, minus the FIB (which answers with `fib_macs`) and the counters.
fn run(frame: &[u8], maps: &Maps) -> (Action, Vec<u8>) {
    match plan(frame, maps) {
        Ok(rw) => (Action::ForwardedTx, apply(frame, &rw)),
        Err(action) => (action, frame.to_vec()),
    }
}

fn plan(frame: &[u8], maps: &Maps) -> Result<Rewrite, Action> {
    let eth = array::<ETH_HLEN>(frame, 0).ok_or(Action::PassNotIp)?;
    let family = packet::l3_family(&eth)?;
    packet::check_frame_len(frame.len())?;
    let l3_len = frame.len() - ETH_HLEN;
    let ip = if family == relay_common::FAMILY_IPV4 {
        packet::parse_ipv4(
            &array(frame, ETH_HLEN).ok_or(Action::DropMalformed)?,
            l3_len,
        )?
    } else {
        packet::parse_ipv6(
            &array(frame, ETH_HLEN).ok_or(Action::DropMalformed)?,
            l3_len,
        )?
    };
    let l4 = ETH_HLEN + ip.header_len();
    let udp = packet::parse_udp(&array(frame, l4).ok_or(Action::DropMalformed)?, &ip)?;
    let payload = l4 + UDP_HLEN;
    let payload_len = udp.payload_len();
    if let Some(first) = array::<CHANNEL_HLEN>(frame, payload).filter(|_| payload_len >= 4)
        && let Some(cd) = packet::channel_header(&first)
    {
        let key = ChannelKey::from_packet(
            ip.family,
            ip.src,
            udp.src_port,
            ip.dst,
            udp.dst_port,
            cd.channel,
        );
        if let Some(value) = maps.client_to_peer.get(&key) {
            let trailing = packet::channel_data_fits(cd, payload_len)?;
            let mut bytes = [0u8; 3];
            for (i, b) in bytes.iter_mut().enumerate().take(usize::from(trailing)) {
                *b = frame[payload + CHANNEL_HLEN + usize::from(cd.len) + i];
            }
            let sum = packet::trailing_sum(bytes, trailing, cd.len);
            return packet::client_to_peer(&ip, &udp, cd, sum, value);
        }
    }
    let key = PeerKey::from_packet(ip.family, ip.dst, udp.dst_port, ip.src, udp.src_port);
    if let Some(value) = maps.peer_to_client.get(&key) {
        return packet::peer_to_client(&ip, &udp, value);
    }
    let dst = SocketAddr::new(
        relay_common::maps::addr_from(ip.family, ip.dst).unwrap(),
        udp.dst_port,
    );
    let to_listener = maps.listeners.iter().any(|l| {
        l.port() == dst.port()
            && (l.ip() == dst.ip() || (l.ip().is_unspecified() && l.is_ipv4() == dst.is_ipv4()))
    });
    let first = frame.get(payload).copied().unwrap_or(0);
    Err(packet::unmatched(to_listener, first, payload_len))
}

/// bpf_xdp_adjust_head, bpf_xdp_adjust_tail, then the Ethernet header and the new headers.
fn apply(frame: &[u8], rw: &Rewrite) -> Vec<u8> {
    let mut buf = frame.to_vec();
    if rw.head_delta >= 0 {
        buf.drain(..rw.head_delta as usize);
    } else {
        let mut grown = vec![0xEE; rw.head_delta.unsigned_abs() as usize];
        grown.extend_from_slice(&buf);
        buf = grown;
    }
    assert!(rw.frame_len <= buf.len(), "the tail only ever shrinks");
    buf.truncate(rw.frame_len);
    let dmac = if rw.channel_header {
        CLIENT_MAC
    } else {
        PEER_MAC
    };
    buf[..ETH_HLEN].copy_from_slice(&packet::ethernet_header(&dmac, &RELAY_MAC, rw.ethertype()));
    buf[ETH_HLEN..ETH_HLEN + rw.headers_len()].copy_from_slice(&rw.headers[..rw.headers_len()]);
    buf
}

// ---------------------------------------------------------------------------------------------

fn v4(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), port)
}

fn v6(last: u16, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)),
        port,
    )
}

/// One allocation's addresses.
#[derive(Clone, Copy, Debug)]
struct Setup {
    client: SocketAddr,
    listener: SocketAddr,
    relay: SocketAddr,
    peer: SocketAddr,
    channel: u16,
}

fn setups() -> [(&'static str, Setup); 4] {
    [
        (
            "v4 -> v4",
            Setup {
                client: v4(10, 40_000),
                listener: v4(1, 3478),
                relay: v4(1, 50_000),
                peer: v4(20, 6000),
                channel: 0x4000,
            },
        ),
        (
            "v6 -> v6",
            Setup {
                client: v6(10, 40_001),
                listener: v6(1, 3478),
                relay: v6(1, 50_001),
                peer: v6(20, 6001),
                channel: 0x4FFF,
            },
        ),
        (
            "v4 client, v6 peer",
            Setup {
                client: v4(11, 40_002),
                listener: v4(1, 3478),
                relay: v6(1, 50_002),
                peer: v6(21, 6002),
                channel: 0x7FFF,
            },
        ),
        (
            "v6 client, v4 peer",
            Setup {
                client: v6(11, 40_003),
                listener: v6(1, 3478),
                relay: v4(1, 50_003),
                peer: v4(21, 6003),
                channel: 0x4001,
            },
        ),
    ]
}

fn maps_for(s: &Setup) -> Maps {
    let mut maps = Maps::default();
    maps.bind(s.client, s.listener, s.channel, s.relay, s.peer);
    maps
}

#[test]
fn client_to_peer_every_family_pair_padding_and_data_length() {
    for (name, s) in setups() {
        let maps = maps_for(&s);
        for data_len in [0usize, 1, 2, 3, 4, 5, 31, 160, 1200] {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 7 + 3) as u8).collect();
            let pad_len = (4 - data_len % 4) % 4;
            for padding in [&[][..], &[0xA5, 0x5A, 0xFF][..pad_len]] {
                let o = Opts {
                    tos: 0xB8,
                    flow_label: 0xBEEF5,
                    ipv4_id: 0x8001,
                    df: data_len % 2 == 0,
                    ..Opts::default()
                };
                let input = udp_frame(
                    RELAY_MAC,
                    CLIENT_MAC,
                    s.client,
                    s.listener,
                    &channel_data(s.channel, &data, padding),
                    Opts {
                        pad_frame_to: 60,
                        ..o
                    },
                );
                let (action, output) = run(&input, &maps);
                assert_eq!(action, Action::ForwardedTx, "{name} len {data_len}");
                let expected = udp_frame(
                    PEER_MAC,
                    RELAY_MAC,
                    s.relay,
                    s.peer,
                    &data,
                    forwarded(o, s.client.is_ipv6(), s.peer.is_ipv6()),
                );
                assert_eq!(
                    output, expected,
                    "{name}, {data_len} data bytes, padding {padding:?}"
                );
                assert_checksums(&output);
            }
        }
    }
}

#[test]
fn peer_to_client_every_family_pair_and_data_length() {
    for (name, s) in setups() {
        let maps = maps_for(&s);
        for data_len in [0usize, 1, 2, 3, 5, 160, 1201] {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 13 + 1) as u8).collect();
            let o = Opts {
                tos: 0x04,
                flow_label: 0x12345,
                ipv4_id: 0x0102,
                ..Opts::default()
            };
            let input = udp_frame(
                RELAY_MAC,
                PEER_MAC,
                s.peer,
                s.relay,
                &data,
                Opts {
                    pad_frame_to: 60,
                    ..o
                },
            );
            let (action, output) = run(&input, &maps);
            assert_eq!(action, Action::ForwardedTx, "{name}");
            let expected = udp_frame(
                CLIENT_MAC,
                RELAY_MAC,
                s.listener,
                s.client,
                &channel_data(s.channel, &data, &[]),
                forwarded(o, s.peer.is_ipv6(), s.client.is_ipv6()),
            );
            assert_eq!(output, expected, "{name}, {data_len} data bytes");
            assert_checksums(&output);
        }
    }
}

#[test]
fn ipv4_without_checksum_stays_without_and_cannot_become_ipv6() {
    let o = Opts {
        no_checksum: true,
        ..Opts::default()
    };
    for (name, s) in setups() {
        let maps = maps_for(&s);
        let c2p = udp_frame(
            RELAY_MAC,
            CLIENT_MAC,
            s.client,
            s.listener,
            &channel_data(s.channel, b"hello", &[]),
            o,
        );
        let p2c = udp_frame(RELAY_MAC, PEER_MAC, s.peer, s.relay, b"hello", o);
        for (input, out_v6, expected) in [
            (
                &c2p,
                s.peer.is_ipv6(),
                udp_frame(
                    PEER_MAC,
                    RELAY_MAC,
                    s.relay,
                    s.peer,
                    b"hello",
                    forwarded(o, s.client.is_ipv6(), s.peer.is_ipv6()),
                ),
            ),
            (
                &p2c,
                s.client.is_ipv6(),
                udp_frame(
                    CLIENT_MAC,
                    RELAY_MAC,
                    s.listener,
                    s.client,
                    &channel_data(s.channel, b"hello", &[]),
                    forwarded(o, s.peer.is_ipv6(), s.client.is_ipv6()),
                ),
            ),
        ] {
            let in_v6 = u16::from_be_bytes([input[12], input[13]]) == packet::ETH_P_IPV6;
            let (action, output) = run(input, &maps);
            if in_v6 || out_v6 {
                assert_eq!(action, Action::PassNoChecksum, "{name}");
                assert_eq!(&output, input);
            } else {
                assert_eq!(action, Action::ForwardedTx, "{name}");
                assert_eq!(output, expected, "{name}");
            }
        }
    }
}

#[test]
fn what_is_not_forwarded_is_left_alone() {
    let s = setups()[0].1;
    let mut maps = maps_for(&s);
    maps.listeners
        .push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 3478));
    let stun = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let cases: Vec<(&str, Vec<u8>, Action)> = vec![
        (
            "STUN to the listener",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                s.client,
                s.listener,
                &stun,
                Opts::default(),
            ),
            Action::PassStun,
        ),
        (
            "STUN to a wildcard listener",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                v6(9, 1),
                v6(77, 3478),
                &stun,
                Opts::default(),
            ),
            Action::PassStun,
        ),
        (
            "unknown channel",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                s.client,
                s.listener,
                &channel_data(0x4002, b"x", &[]),
                Opts::default(),
            ),
            Action::PassUnknownChannel,
        ),
        (
            "bound channel from another client",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                v4(99, 40_000),
                s.listener,
                &channel_data(s.channel, b"x", &[]),
                Opts::default(),
            ),
            Action::PassUnknownChannel,
        ),
        (
            "to another port",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                s.client,
                v4(1, 53),
                &channel_data(s.channel, b"x", &[]),
                Opts::default(),
            ),
            Action::PassNotForUs,
        ),
        (
            "from another peer",
            udp_frame(
                RELAY_MAC,
                PEER_MAC,
                v4(21, 6000),
                s.relay,
                b"x",
                Opts::default(),
            ),
            Action::PassNotForUs,
        ),
        (
            "truncated ChannelData",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                s.client,
                s.listener,
                &[0x40, 0x00, 0x00, 0x09, 1, 2],
                Opts::default(),
            ),
            Action::DropLength,
        ),
        (
            "3-byte ChannelData",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                s.client,
                s.listener,
                &[0x40, 0x00, 0x00],
                Opts::default(),
            ),
            Action::DropLength,
        ),
        (
            "more than padding",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                s.client,
                s.listener,
                &channel_data(s.channel, b"x", &[0; 4]),
                Opts::default(),
            ),
            Action::PassTrailingBytes,
        ),
        (
            "DTLS to the listener",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                s.client,
                s.listener,
                &[0x16, 0xfe],
                Opts::default(),
            )
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i == 42 { 0x96 } else { b })
            .collect(),
            Action::PassNotChannelData,
        ),
        (
            "TTL 1",
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                s.client,
                s.listener,
                &channel_data(s.channel, b"x", &[]),
                Opts {
                    ttl: 1,
                    ..Opts::default()
                },
            ),
            Action::PassTtl,
        ),
    ];
    for (name, input, want) in cases {
        let (action, output) = run(&input, &maps);
        assert_eq!(action, want, "{name}");
        assert_eq!(output, input, "{name}");
    }
}

proptest! {
    /// Any payload, ports, TTL, TOS and flow label: the rewrite equals the packet built from
    /// scratch (the IPv4 header checksum compared by verification, since one's complement has
    /// two zeros and an update may land on the other one).
    #[test]
    fn rewrites_equal_packets_built_from_scratch(
        which in 0usize..4,
        to_peer in any::<bool>(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        pad in proptest::collection::vec(any::<u8>(), 3),
        padded in any::<bool>(),
        ports in any::<(u16, u16, u16, u16)>(),
        ttl in 2u8..=255,
        tos in any::<u8>(),
        flow_label in 0u32..0x10_0000,
        ipv4_id in any::<u16>(),
        df in any::<bool>(),
        channel in 0x4000u16..=0x7FFF,
    ) {
        let mut s = setups()[which].1;
        s.client.set_port(ports.0);
        s.listener.set_port(ports.1);
        s.relay.set_port(ports.2);
        s.peer.set_port(ports.3);
        s.channel = channel;
        prop_assume!(s.listener != s.relay);
        let maps = maps_for(&s);
        let o = Opts { ttl, tos, flow_label, ipv4_id, df, ..Opts::default() };
        let (input, expected) = if to_peer {
            let padding = if padded { &pad[..(4 - data.len() % 4) % 4] } else { &[][..] };
            (
                udp_frame(RELAY_MAC, CLIENT_MAC, s.client, s.listener, &channel_data(channel, &data, padding), o),
                udp_frame(PEER_MAC, RELAY_MAC, s.relay, s.peer, &data, forwarded(o, s.client.is_ipv6(), s.peer.is_ipv6())),
            )
        } else {
            (
                udp_frame(RELAY_MAC, PEER_MAC, s.peer, s.relay, &data, o),
                udp_frame(CLIENT_MAC, RELAY_MAC, s.listener, s.client, &channel_data(channel, &data, &[]), forwarded(o, s.peer.is_ipv6(), s.client.is_ipv6())),
            )
        };
        let (action, mut output) = run(&input, &maps);
        prop_assert_eq!(action, Action::ForwardedTx);
        assert_checksums(&output);
        let mut expected = expected;
        if u16::from_be_bytes([output[12], output[13]]) == packet::ETH_P_IP {
            output[24..26].copy_from_slice(&[0, 0]);
            expected[24..26].copy_from_slice(&[0, 0]);
        }
        prop_assert_eq!(output, expected);
    }
}

/// The program plans every packet into the same per-CPU scratch `Rewrite` and parses into the
/// same `Ip`: what a previous packet left there must not leak into the next one.
#[test]
fn scratch_reuse_leaves_nothing_behind() {
    let mut ip = packet::Ip::EMPTY;
    let mut rw = Rewrite::EMPTY;
    let plan_into = |frame: &[u8], maps: &Maps, ip: &mut packet::Ip, rw: &mut Rewrite| {
        let l3_len = frame.len() - ETH_HLEN;
        if frame[12..14] == [0x86, 0xDD] {
            packet::parse_ipv6_into(&array(frame, ETH_HLEN).unwrap(), l3_len, ip).unwrap();
        } else {
            packet::parse_ipv4_into(&array(frame, ETH_HLEN).unwrap(), l3_len, ip).unwrap();
        }
        let udp =
            packet::parse_udp(&array(frame, ETH_HLEN + ip.header_len()).unwrap(), ip).unwrap();
        let key = PeerKey::from_packet(ip.family, ip.dst, udp.dst_port, ip.src, udp.src_port);
        let value = maps.peer_to_client[&key];
        packet::rewrite_into(ip, &udp, &packet::route_to_client(&udp, &value), rw).unwrap();
    };
    let mut order: Vec<(&str, Setup)> = setups().into_iter().collect();
    order.extend(setups().into_iter().rev());
    for (name, s) in order {
        let maps = maps_for(&s);
        let o = Opts {
            tos: 0x10,
            flow_label: 0x54321,
            ipv4_id: 0x4242,
            ..Opts::default()
        };
        let input = udp_frame(RELAY_MAC, PEER_MAC, s.peer, s.relay, b"reuse", o);
        plan_into(&input, &maps, &mut ip, &mut rw);
        let fresh = plan(&input, &maps).unwrap();
        // Bytes past `headers_len` are never written to the packet; the rest must match.
        let mut used = rw;
        used.headers[rw.headers_len()..].fill(0);
        assert!(
            used == fresh,
            "{name}: the reused Rewrite differs from a fresh one"
        );
        assert_eq!(apply(&input, &rw), run(&input, &maps).1, "{name}");
    }
}
