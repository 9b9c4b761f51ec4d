//! The program's parsing and rewriting, run on real packets built by hand: every forwarded
//! packet must equal, byte for byte, the packet built from scratch with checksums computed in
//! full — so the incremental checksum updates are proven against full recomputation — in both
//! directions, for both families and across families.
//!
//! `run` below drives the `relay_common::packet` functions the way relay-ebpf's program does,
//! with hash maps for the BPF maps and a fixed FIB answer; the decision steps that need no
//! packet memory (`relay_common::packet`'s `decide` room: padding bytes, checksum state, Send
//! indication sums, same-relay calls) are the program's own code. The BPF_PROG_TEST_RUN tests in
//! relay/tests/xdp_testrun.rs run the real program.

#![allow(clippy::unwrap_used)]

mod frames;
mod program_writes;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use frames::{
    Attr, Opts, assert_checksums, channel_data, data_indication, finish_partial, forwarded,
    partial, pseudo_header_sum, send_indication, udp_frame,
};
use program_writes::{
    CLIENT_MAC, PEER_MAC, RELAY_MAC, apply, apply_keeping_udp, finish_indication,
};
use proptest::prelude::*;
use relay_common::csum::Sum;
use relay_common::indication::{self, DataHeader};
use relay_common::packet::{self, CHANNEL_HLEN, ETH_HLEN, Ip, Rewrite, Route, UDP_HLEN, Udp};
use relay_common::{
    AllocationValue, ChannelEntries, ChannelKey, ChannelValue, ClientKey, PeerKey, PeerValue,
    Verdict,
};

// ---------------------------------------------------------------------------------------------
// The program's flow, on a Vec.

#[derive(Default)]
struct Maps {
    client_to_peer: HashMap<ChannelKey, ChannelValue>,
    peer_to_client: HashMap<PeerKey, PeerValue>,
    allocations: HashMap<ClientKey, AllocationValue>,
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

    /// The allocation of `client` (through `listener`) with the relayed address `relay`.
    fn allocate(&mut self, client: SocketAddr, listener: SocketAddr, relay: SocketAddr) {
        let key = ClientKey::new(client.ip(), client.port(), listener.ip(), listener.port());
        self.allocations
            .insert(key.unwrap(), AllocationValue::new(&[relay]));
        if !self.listeners.contains(&listener) {
            self.listeners.push(listener);
        }
    }

    /// A permission of the allocation on `relay` (client `client` through `listener`) for
    /// `peer`'s IP.
    fn permit(
        &mut self,
        client: SocketAddr,
        listener: SocketAddr,
        relay: SocketAddr,
        peer: IpAddr,
    ) {
        let key = PeerKey::permission(relay.ip(), relay.port(), peer).unwrap();
        let value = PeerValue::new(
            listener.ip(),
            listener.port(),
            client.ip(),
            client.port(),
            relay_common::maps::NO_CHANNEL,
            0,
        )
        .unwrap();
        self.peer_to_client.insert(key, value);
        if !self.listeners.contains(&listener) {
            self.listeners.push(listener);
        }
    }
}

/// The transaction ID of the Data indications the tests' "program" sends (the real one draws
/// random ones).
const TXID: [u8; 12] = *b"xdpturn-test";

fn array<const N: usize>(frame: &[u8], at: usize) -> Option<[u8; N]> {
    frame.get(at..at + N).map(|s| s.try_into().unwrap())
}

/// What relay-ebpf does, minus the FIB (which answers with `fib_macs`) and the counters.
fn run(frame: &[u8], maps: &Maps) -> (Verdict, Vec<u8>) {
    match plan(frame, maps) {
        Ok(rw) => {
            let mut out = apply(frame, &rw);
            let header = route_of(frame, maps).ok().and_then(|r| r.4);
            finish_indication(&mut out, &rw, header.as_ref());
            (Verdict::ForwardedTx, out)
        }
        Err(action) => (action, frame.to_vec()),
    }
}

fn plan(frame: &[u8], maps: &Maps) -> Result<Rewrite, Verdict> {
    let (ip, udp, route, _, _) = route_of(frame, maps)?;
    packet::rewrite(&ip, &udp, &route)
}

/// Parses `frame` and finds its route in `maps`, as the program does; also returns where the
/// UDP payload starts.
fn route_of(
    frame: &[u8],
    maps: &Maps,
) -> Result<(Ip, Udp, Route, usize, Option<DataHeader>), Verdict> {
    let eth = array::<ETH_HLEN>(frame, 0).ok_or(Verdict::PassNotIp)?;
    let family = packet::l3_family(&eth)?;
    packet::check_frame_len(frame.len())?;
    let l3_len = frame.len() - ETH_HLEN;
    let ip = if family == relay_common::FAMILY_IPV4 {
        packet::parse_ipv4(
            &array(frame, ETH_HLEN).ok_or(Verdict::DropMalformed)?,
            l3_len,
        )?
    } else {
        packet::parse_ipv6(
            &array(frame, ETH_HLEN).ok_or(Verdict::DropMalformed)?,
            l3_len,
        )?
    };
    let l4 = ETH_HLEN + ip.header_len();
    let udp = packet::parse_udp(&array(frame, l4).ok_or(Verdict::DropMalformed)?, &ip)?;
    let payload = l4 + UDP_HLEN;
    let payload_len = udp.payload_len();
    if let Some(mut route) = route_send(frame, maps, &ip, &udp, payload)? {
        let header = same_relay(&mut route, maps)?;
        return Ok((ip, udp, route, payload, header));
    }
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
            // The program reads the 4 bytes that end the datagram.
            let bytes = if trailing == 0 {
                [0; 3]
            } else {
                let end = payload + usize::from(payload_len);
                let window = array::<4>(frame, end - 4).ok_or(Verdict::DropMalformed)?;
                packet::trailing_bytes(window, trailing)
            };
            let sum = packet::trailing_sum(bytes, trailing, cd.len);
            let mut route = packet::route_to_peer(cd, sum, value);
            let header = same_relay(&mut route, maps)?;
            return Ok((ip, udp, route, payload, header));
        }
    }
    let key = PeerKey::from_packet(ip.family, ip.dst, udp.dst_port, ip.src, udp.src_port);
    if let Some(value) = maps.peer_to_client.get(&key) {
        return Ok((ip, udp, packet::route_to_client(&udp, value), payload, None));
    }
    let key = PeerKey::permission_from_packet(ip.family, ip.dst, udp.dst_port, ip.src);
    if let Some(value) = maps.peer_to_client.get(&key) {
        let header = data_header(&ip, &udp);
        let mut route = Route::EMPTY;
        packet::route_to_client_indication_into(&udp, value, &header, &mut route);
        return Ok((ip, udp, route, payload, Some(header)));
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

/// The program's `next_hop` for a client's route to its peer (`packet::same_relay`, the
/// program's own step): a peer that is another relayed address of this relay (it has no next
/// hop: it is local) whose client has a channel to this one's relayed address, or only a
/// permission for it (a Data indication then, with [`TXID`], whose header this returns).
fn same_relay(route: &mut Route, maps: &Maps) -> Result<Option<DataHeader>, Verdict> {
    let mut h = DataHeader::EMPTY;
    packet::same_relay(route, &mut h, || TXID, |key| maps.peer_to_client.get(key))?;
    Ok((h.len > 0).then_some(h))
}

/// The program's `route_send`: a Send indication to a listener, from a client with an
/// allocation, for a peer it has a permission for, that the program can prove.
fn route_send(
    frame: &[u8],
    maps: &Maps,
    ip: &Ip,
    udp: &Udp,
    payload: usize,
) -> Result<Option<Route>, Verdict> {
    let bytes = &frame[payload..payload + usize::from(udp.payload_len())];
    if bytes.len() < 4 || bytes[..2] != [0x00, 0x16] {
        return Ok(None);
    }
    let refused = Verdict::PassSendIndication;
    let key = ClientKey::from_packet(ip.family, ip.src, udp.src_port, ip.dst, udp.dst_port);
    let alloc = maps.allocations.get(&key).ok_or(refused)?;
    let txid: [u8; 12] = bytes.get(8..20).ok_or(refused)?.try_into().unwrap();
    let send = indication::parse_send_within::<4, _>(bytes, udp.payload_len(), &txid)
        .map_err(|_| refused)?;
    if let Some(fp) = send.fingerprint {
        indication::check_fingerprint(bytes, fp).map_err(|_| refused)?;
    }
    let (relay, relay_port) = alloc.relayed(send.peer_family).ok_or(refused)?;
    let key = PeerKey::permission_from_packet(send.peer_family, relay, relay_port, send.peer_addr);
    let permission = maps.peer_to_client.get(&key).ok_or(refused)?;
    let removed = if udp.check == 0 {
        0
    } else {
        let at = usize::from(send.data_offset);
        let data = Sum::new().add_bytes(&bytes[at..at + usize::from(send.data_len)]);
        let total = if packet::maybe_partial(ip, udp) {
            Sum::new().add_bytes(bytes)
        } else {
            packet::payload_sum_from_checksum(ip, udp)
        };
        packet::removed_sum(total, data)
    };
    let mut route = Route::EMPTY;
    packet::route_to_peer_send_into(
        &send,
        &relay,
        relay_port,
        removed,
        permission.counter,
        &mut route,
    );
    Ok(Some(route))
}

/// What the program does with a frame, the checksum field read for what it is
/// (`packet::settle_checksum`), in native (`generic` false) or generic mode. In generic
/// mode a partial checksum stays partial: the second value is then where the UDP header is in
/// the output frame, which must be where it was in the buffer (the skb's `csum_start`).
fn run_mode(frame: &[u8], maps: &Maps, generic: bool) -> (Verdict, Vec<u8>, Option<usize>) {
    let (ip, mut udp, route, payload_at, header) = match route_of(frame, maps) {
        Ok(r) => r,
        Err(action) => return (action, frame.to_vec(), None),
    };
    let mut keep = false;
    if packet::maybe_partial(&ip, &udp) {
        let end = payload_at + usize::from(udp.payload_len());
        let payload = Sum::new().add_bytes(&frame[payload_at..end]);
        match packet::settle_checksum(&ip, &mut udp, payload, generic) {
            Err(action) => return (action, frame.to_vec(), None),
            Ok(kept) => keep = kept,
        }
    }
    let mut rw = Rewrite::EMPTY;
    if let Err(action) = packet::rewrite_into(&ip, &udp, &route, &mut rw) {
        return (action, frame.to_vec(), None);
    }
    if !keep {
        let mut out = apply(frame, &rw);
        finish_indication(&mut out, &rw, header.as_ref());
        return (Verdict::ForwardedTx, out, None);
    }
    packet::keep_partial(&ip, &route, &mut rw);
    let (mut out, csum_start) = apply_keeping_udp(frame, &rw, payload_at);
    finish_indication(&mut out, &rw, header.as_ref());
    (Verdict::ForwardedTx, out, Some(csum_start))
}

/// `input` sent with a partial checksum, in native and in generic mode: forwarded, and (once
/// finished as an offload would, where it stayed partial) equal to `expected`.
fn assert_partial_forwarded(input: &[u8], maps: &Maps, expected: &[u8], case: &str) {
    for generic in [false, true] {
        let (action, output, kept) = run_mode(&partial(input), maps, generic);
        assert_eq!(
            action,
            Verdict::ForwardedTx,
            "{case}, partial, generic {generic}"
        );
        let output = match kept {
            Some(at) => finish_partial(&output, at),
            None => output,
        };
        assert_eq!(output, expected, "{case}, partial, generic {generic}");
    }
}

/// The Data indication header the program builds for a datagram from the peer of `ip`/`udp`.
fn data_header(ip: &Ip, udp: &Udp) -> DataHeader {
    let mut h = DataHeader::EMPTY;
    indication::data_indication_into(
        &TXID,
        ip.family,
        &ip.src,
        udp.src_port,
        udp.payload_len(),
        &mut h,
    )
    .unwrap();
    h
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
                assert_eq!(action, Verdict::ForwardedTx, "{name} len {data_len}");
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
            assert_eq!(action, Verdict::ForwardedTx, "{name}");
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
                assert_eq!(action, Verdict::PassNoChecksum, "{name}");
                assert_eq!(&output, input);
            } else {
                assert_eq!(action, Verdict::ForwardedTx, "{name}");
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
    let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
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
            Verdict::PassStun,
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
            Verdict::PassStun,
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
            Verdict::PassUnknownChannel,
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
            Verdict::PassUnknownChannel,
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
            Verdict::PassNotForUs,
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
            Verdict::PassNotForUs,
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
            Verdict::DropLength,
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
            Verdict::DropLength,
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
            Verdict::PassTrailingBytes,
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
            Verdict::PassNotChannelData,
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
            Verdict::PassTtl,
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
        prop_assert_eq!(action, Verdict::ForwardedTx);
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

// ---------------------------------------------------------------------------------------------
// Partial checksums: what containers, veths and bridges hand over.

/// Every channel's traffic both ways, as (what arrives, what must leave), for data lengths
/// around the chunk sizes the program sums and moves data in.
fn both_directions() -> Vec<(String, Maps, Vec<u8>, Vec<u8>)> {
    let mut cases = Vec::new();
    for (name, s) in setups() {
        for data_len in [
            0usize, 1, 2, 3, 4, 5, 7, 31, 511, 512, 513, 1200, 2047, 2048,
        ] {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 29 + 5) as u8).collect();
            let o = Opts {
                tos: 0x2E,
                flow_label: 0x0F00D,
                ipv4_id: 0x4242,
                ..Opts::default()
            };
            let pad_len = (4 - data_len % 4) % 4;
            cases.push((
                format!("{name} client->peer, {data_len} bytes"),
                maps_for(&s),
                udp_frame(
                    RELAY_MAC,
                    CLIENT_MAC,
                    s.client,
                    s.listener,
                    &channel_data(s.channel, &data, &[0x11, 0x22, 0x33][..pad_len]),
                    Opts {
                        pad_frame_to: 60,
                        ..o
                    },
                ),
                udp_frame(
                    PEER_MAC,
                    RELAY_MAC,
                    s.relay,
                    s.peer,
                    &data,
                    forwarded(o, s.client.is_ipv6(), s.peer.is_ipv6()),
                ),
            ));
            cases.push((
                format!("{name} peer->client, {data_len} bytes"),
                maps_for(&s),
                udp_frame(
                    RELAY_MAC,
                    PEER_MAC,
                    s.peer,
                    s.relay,
                    &data,
                    Opts {
                        pad_frame_to: 60,
                        ..o
                    },
                ),
                udp_frame(
                    CLIENT_MAC,
                    RELAY_MAC,
                    s.listener,
                    s.client,
                    &channel_data(s.channel, &data, &[]),
                    forwarded(o, s.peer.is_ipv6(), s.client.is_ipv6()),
                ),
            ));
        }
    }
    cases
}

#[test]
fn complete_checksums_take_the_same_path_in_both_modes() {
    for (name, maps, input, expected) in both_directions() {
        for generic in [false, true] {
            let (action, output, kept) = run_mode(&input, &maps, generic);
            assert_eq!(action, Verdict::ForwardedTx, "{name}");
            assert_eq!(kept, None, "{name}");
            assert_eq!(output, expected, "{name}, generic {generic}");
        }
    }
}

#[test]
fn partial_checksums_leave_complete_from_native_mode() {
    for (name, maps, input, expected) in both_directions() {
        let (action, output, kept) = run_mode(&partial(&input), &maps, false);
        assert_eq!((action, kept), (Verdict::ForwardedTx, None), "{name}");
        assert_eq!(output, expected, "{name}");
        assert_checksums(&output);
    }
}

#[test]
fn partial_checksums_stay_partial_in_generic_mode_with_the_udp_header_in_place() {
    for (name, maps, input, expected) in both_directions() {
        let (action, output, kept) = run_mode(&partial(&input), &maps, true);
        assert_eq!(action, Verdict::ForwardedTx, "{name}");
        let csum_start = kept.unwrap_or_else(|| panic!("{name}: the partial checksum was kept"));
        // Still partial: the new pseudo-header's sum in the field...
        let (udp_at, seed) = pseudo_header_sum(&output);
        assert_eq!(csum_start, udp_at, "{name}");
        assert_eq!(
            output[udp_at + 6..udp_at + 8],
            seed.to_be_bytes(),
            "{name}: the field holds the new pseudo-header sum"
        );
        // ...which the offload finishes into exactly the packet built from scratch.
        let finished = finish_partial(&output, csum_start);
        assert_eq!(finished, expected, "{name}");
        assert_checksums(&finished);
    }
}

/// A complete checksum that happens to equal the pseudo-header sum: the payload is chosen
/// (two bytes varied) until it does.
#[test]
fn a_complete_checksum_equal_to_the_seed_goes_up_only_in_generic_mode() {
    let (name, s) = setups()[0];
    let maps = maps_for(&s);
    let mut found = None;
    'search: for a in 0..=255u8 {
        for b in 0..=255u8 {
            let data = [a, b, 0x10, 0x20, 0x30];
            let input = udp_frame(RELAY_MAC, PEER_MAC, s.peer, s.relay, &data, Opts::default());
            let (udp_at, seed) = pseudo_header_sum(&input);
            if input[udp_at + 6..udp_at + 8] == seed.to_be_bytes() {
                found = Some((data, input));
                break 'search;
            }
        }
    }
    let (data, input) = found.expect("some payload makes the checksum equal the seed");
    assert_checksums(&input);
    let (action, output, _) = run_mode(&input, &maps, true);
    assert_eq!(action, Verdict::PassChecksumUnknown, "{name}");
    assert_eq!(output, input, "{name}: left alone");
    let (action, output, kept) = run_mode(&input, &maps, false);
    assert_eq!((action, kept), (Verdict::ForwardedTx, None), "{name}");
    let expected = udp_frame(
        CLIENT_MAC,
        RELAY_MAC,
        s.listener,
        s.client,
        &channel_data(s.channel, &data, &[]),
        forwarded(Opts::default(), false, false),
    );
    assert_eq!(output, expected, "{name}");
}

#[test]
fn a_corrupted_datagram_does_not_leave_with_a_valid_checksum() {
    for (name, maps, input, _) in both_directions() {
        if name.ends_with(" 0 bytes") {
            continue;
        }
        // The first data byte (after the ChannelData header from a client).
        let (udp_at, _) = pseudo_header_sum(&input);
        let first_data = udp_at + UDP_HLEN + if name.contains("client->peer") { 4 } else { 0 };
        let mut corrupted = input.clone();
        corrupted[first_data] ^= 0x01;
        for generic in [false, true] {
            let (action, output, kept) = run_mode(&corrupted, &maps, generic);
            assert_eq!(action, Verdict::ForwardedTx, "{name}");
            let finished = match kept {
                Some(at) => finish_partial(&output, at),
                None => output,
            };
            let (udp_at, _) = pseudo_header_sum(&finished);
            let udp_len = usize::from(u16::from_be_bytes([
                finished[udp_at + 4],
                finished[udp_at + 5],
            ]));
            let (src, dst) = if finished[12..14] == [0x86, 0xDD] {
                (&finished[22..38], &finished[38..54])
            } else {
                (&finished[26..30], &finished[30..34])
            };
            let tail = if finished[12..14] == [0x86, 0xDD] {
                [
                    &[0u8, 0][..],
                    &(udp_len as u16).to_be_bytes(),
                    &[0, 0, 0, 17],
                ]
                .concat()
            } else {
                [&[0u8, 17][..], &(udp_len as u16).to_be_bytes()].concat()
            };
            assert_ne!(
                frames::inet_sum(&[src, dst, &tail, &finished[udp_at..udp_at + udp_len]]),
                0,
                "{name}, generic {generic}: still invalid"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Same-relay calls: both clients' allocations on this relay, each with a channel to the other's
// relayed address.

#[test]
fn same_relay_channel_data_goes_straight_to_the_other_client() {
    let a_v4 = (v4(10, 40_000), v4(1, 3478), v4(1, 50_000));
    let b_v4 = (v4(30, 40_100), v4(1, 3478), v4(1, 50_100));
    let a_v6 = (v6(10, 40_000), v6(1, 3478), v6(1, 50_000));
    let b_v6 = (v6(30, 40_100), v6(1, 3478), v6(1, 50_100));
    // (name, A's client/listener/relayed, B's client/listener/relayed): relayed addresses of
    // one family (a channel's peer has its allocation's family), clients of any.
    let cases = [
        ("all v4", a_v4, b_v4),
        ("all v6", a_v6, b_v6),
        (
            "v4 clients, v6 relayed",
            (a_v4.0, a_v4.1, a_v6.2),
            (b_v4.0, b_v4.1, b_v6.2),
        ),
        ("v6 client to v4 client", (a_v6.0, a_v6.1, a_v4.2), b_v4),
    ];
    for (name, (ac, al, ar), (bc, bl, br)) in cases {
        let mut maps = Maps::default();
        maps.bind(ac, al, 0x4000, ar, br);
        maps.bind(bc, bl, 0x4ABC, br, ar);
        for data_len in [0usize, 3, 160, 1200] {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 3 + 11) as u8).collect();
            let pad_len = (4 - data_len % 4) % 4;
            let o = Opts {
                tos: 0x88,
                ..Opts::default()
            };
            let input = udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                ac,
                al,
                &channel_data(0x4000, &data, &[0x77; 3][..pad_len]),
                Opts {
                    pad_frame_to: 60,
                    ..o
                },
            );
            let expected = udp_frame(
                CLIENT_MAC,
                RELAY_MAC,
                bl,
                bc,
                &channel_data(0x4ABC, &data, &[]),
                forwarded(o, ac.is_ipv6(), bc.is_ipv6()),
            );
            let (action, output) = run(&input, &maps);
            assert_eq!(action, Verdict::ForwardedTx, "{name}, {data_len} bytes");
            assert_eq!(output, expected, "{name}, {data_len} bytes");
            assert_checksums(&output);
            // From a container: partial checksums, both modes.
            let (_, output, kept) = run_mode(&partial(&input), &maps, false);
            assert_eq!(
                (output.as_slice(), kept),
                (expected.as_slice(), None),
                "{name}"
            );
            let (action, output, kept) = run_mode(&partial(&input), &maps, true);
            assert_eq!(action, Verdict::ForwardedTx, "{name}");
            let finished = match kept {
                Some(at) => finish_partial(&output, at),
                None => panic!("{name}: a partial checksum stays partial in generic mode"),
            };
            assert_eq!(finished, expected, "{name}, generic, {data_len} bytes");
        }
    }
}

#[test]
fn same_relay_without_the_other_channel_is_an_ordinary_peer() {
    // B has no channel to A's relayed address (a permission only, or nothing): the data goes to
    // B's relayed address like to any peer, and the kernel leaves the rest to userspace.
    let (ac, al, ar) = (v4(10, 40_000), v4(1, 3478), v4(1, 50_000));
    let br = v4(1, 50_100);
    let mut maps = Maps::default();
    maps.bind(ac, al, 0x4000, ar, br);
    let input = udp_frame(
        RELAY_MAC,
        CLIENT_MAC,
        ac,
        al,
        &channel_data(0x4000, b"hello", &[0; 3]),
        Opts::default(),
    );
    let (action, output) = run(&input, &maps);
    assert_eq!(action, Verdict::ForwardedTx);
    let expected = udp_frame(
        PEER_MAC,
        RELAY_MAC,
        ar,
        br,
        b"hello",
        forwarded(Opts::default(), false, false),
    );
    assert_eq!(output, expected);
}

// ---------------------------------------------------------------------------------------------
// Data indications: a permitted peer's datagram on a port without a channel.

#[test]
fn a_permitted_peer_without_a_channel_reaches_the_client_as_a_data_indication() {
    for (name, s) in setups() {
        let mut maps = Maps::default();
        maps.permit(s.client, s.listener, s.relay, s.peer.ip());
        // Any port of the permitted IP.
        let peer = SocketAddr::new(s.peer.ip(), 7777);
        for data_len in [0usize, 1, 2, 3, 4, 5, 160, 1199, 1200] {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 17 + 9) as u8).collect();
            let o = Opts {
                tos: 0x48,
                ..Opts::default()
            };
            let input = udp_frame(
                RELAY_MAC,
                PEER_MAC,
                peer,
                s.relay,
                &data,
                Opts {
                    pad_frame_to: 60,
                    ..o
                },
            );
            let expected = udp_frame(
                CLIENT_MAC,
                RELAY_MAC,
                s.listener,
                s.client,
                &data_indication(&TXID, peer, &data),
                forwarded(o, s.peer.is_ipv6(), s.client.is_ipv6()),
            );
            let (action, output) = run(&input, &maps);
            assert_eq!(action, Verdict::ForwardedTx, "{name}, {data_len} bytes");
            assert_eq!(output, expected, "{name}, {data_len} bytes");
            assert_checksums(&output);
            assert_partial_forwarded(
                &input,
                &maps,
                &expected,
                &format!("{name}, {data_len} bytes"),
            );
        }
        // Another IP, or a channel's exact port, is not the permission's business.
        let other = SocketAddr::new(s.client.ip(), 7777);
        let frame = udp_frame(RELAY_MAC, PEER_MAC, other, s.relay, b"x", Opts::default());
        assert_ne!(
            run(&frame, &maps).0,
            Verdict::ForwardedTx,
            "{name}: not permitted"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Send indications: a client's data to a permitted peer, without a channel.

#[test]
fn a_send_indication_to_a_permitted_peer_leaves_as_its_data() {
    let txid = *b"send-txid-01";
    for (name, s) in setups() {
        let mut maps = Maps::default();
        maps.allocate(s.client, s.listener, s.relay);
        maps.permit(s.client, s.listener, s.relay, s.peer.ip());
        for data_len in [0usize, 1, 3, 4, 5, 160, 1200] {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 31 + 7) as u8).collect();
            let o = Opts {
                tos: 0x22,
                ..Opts::default()
            };
            let expected = udp_frame(
                PEER_MAC,
                RELAY_MAC,
                s.relay,
                s.peer,
                &data,
                forwarded(o, s.client.is_ipv6(), s.peer.is_ipv6()),
            );
            let orders: [(&str, Vec<Attr>, Option<bool>); 4] = [
                (
                    "libwebrtc",
                    vec![Attr::Peer(s.peer), Attr::Data(data.clone())],
                    None,
                ),
                (
                    "Firefox",
                    vec![Attr::Peer(s.peer), Attr::Data(data.clone())],
                    Some(true),
                ),
                (
                    "data first, DONT-FRAGMENT",
                    vec![
                        Attr::Data(data.clone()),
                        Attr::DontFragment,
                        Attr::Peer(s.peer),
                    ],
                    Some(true),
                ),
                (
                    "SOFTWARE",
                    vec![
                        Attr::Software("x"),
                        Attr::Peer(s.peer),
                        Attr::Data(data.clone()),
                    ],
                    None,
                ),
            ];
            for (what, attrs, fingerprint) in orders {
                let input = udp_frame(
                    RELAY_MAC,
                    CLIENT_MAC,
                    s.client,
                    s.listener,
                    &send_indication(&txid, &attrs, fingerprint),
                    Opts {
                        pad_frame_to: 60,
                        ..o
                    },
                );
                let (action, output) = run(&input, &maps);
                let case = format!("{name}, {what}, {data_len} bytes");
                assert_eq!(action, Verdict::ForwardedTx, "{case}");
                assert_eq!(output, expected, "{case}");
                assert_checksums(&output);
                assert_partial_forwarded(&input, &maps, &expected, &case);
            }
        }
    }
}

#[test]
fn send_indications_the_program_cannot_prove_go_up() {
    let txid = *b"send-txid-02";
    let (name, s) = setups()[0];
    let mut maps = Maps::default();
    maps.allocate(s.client, s.listener, s.relay);
    maps.permit(s.client, s.listener, s.relay, s.peer.ip());
    let data = Attr::Data(b"media".to_vec());
    let peer = Attr::Peer(s.peer);
    let unpermitted = Attr::Peer(SocketAddr::new(s.client.ip(), 9));
    for (what, attrs, fingerprint) in [
        (
            "a wrong FINGERPRINT",
            vec![peer.clone(), data.clone()],
            Some(false),
        ),
        (
            "an unknown required attribute",
            vec![peer.clone(), Attr::Unknown, data.clone()],
            None,
        ),
        ("no DATA", vec![peer.clone()], None),
        ("no XOR-PEER-ADDRESS", vec![data.clone()], None),
        (
            "a peer without a permission",
            vec![unpermitted, data.clone()],
            None,
        ),
        (
            "more attributes than the program walks",
            vec![
                Attr::Software("a"),
                Attr::Software("b"),
                Attr::Software("c"),
                peer.clone(),
                data.clone(),
            ],
            None,
        ),
    ] {
        let input = udp_frame(
            RELAY_MAC,
            CLIENT_MAC,
            s.client,
            s.listener,
            &send_indication(&txid, &attrs, fingerprint),
            Opts::default(),
        );
        assert_eq!(
            run(&input, &maps),
            (Verdict::PassSendIndication, input.clone()),
            "{name}: {what}"
        );
    }
    // Without an allocation in the map.
    let input = udp_frame(
        RELAY_MAC,
        CLIENT_MAC,
        s.client,
        s.listener,
        &send_indication(&txid, &[peer, data], None),
        Opts::default(),
    );
    let mut no_alloc = Maps::default();
    no_alloc.permit(s.client, s.listener, s.relay, s.peer.ip());
    assert_eq!(run(&input, &no_alloc).0, Verdict::PassSendIndication);
}

#[test]
fn same_relay_without_channels_goes_as_a_data_indication() {
    // Firefox to Firefox (or Chromium before its ChannelBind) on one relay: A sends a Send
    // indication to B's relayed address; B has a permission for A's relayed address only.
    let txid = *b"send-txid-03";
    let (ac, al, ar) = (v4(10, 40_000), v4(1, 3478), v4(1, 50_000));
    let (bc, bl, br) = (v6(30, 40_100), v6(1, 3478), v4(1, 50_100));
    let mut maps = Maps::default();
    maps.allocate(ac, al, ar);
    maps.permit(ac, al, ar, br.ip());
    maps.allocate(bc, bl, br);
    maps.permit(bc, bl, br, ar.ip());
    let data = b"media from a".to_vec();
    let o = Opts::default();
    let input = udp_frame(
        RELAY_MAC,
        CLIENT_MAC,
        ac,
        al,
        &send_indication(
            &txid,
            &[Attr::Peer(br), Attr::Data(data.clone())],
            Some(true),
        ),
        o,
    );
    let expected = udp_frame(
        CLIENT_MAC,
        RELAY_MAC,
        bl,
        bc,
        &data_indication(&TXID, ar, &data),
        forwarded(o, false, true),
    );
    let (action, output) = run(&input, &maps);
    assert_eq!(action, Verdict::ForwardedTx);
    assert_eq!(output, expected);
    assert_checksums(&output);
    let (_, output, kept) = run_mode(&partial(&input), &maps, true);
    let output = finish_partial(&output, kept.expect("kept partial"));
    assert_eq!(output, expected, "partial, generic");
    // ChannelData from A (a channel to B's relayed address) to B's permission: the same.
    maps.bind(ac, al, 0x4000, ar, br);
    let input = udp_frame(
        RELAY_MAC,
        CLIENT_MAC,
        ac,
        al,
        &channel_data(0x4000, &data, &[]),
        o,
    );
    assert_eq!(run(&input, &maps), (Verdict::ForwardedTx, expected));
}
