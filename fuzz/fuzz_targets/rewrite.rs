//! The XDP program's rewrite of a forwarded packet (`relay_common::packet`) against packets
//! built from scratch with checksums computed in full.
//!
//! From the fuzz input: the families of the client side and the peer side, addresses, ports,
//! channel number, direction (a client's ChannelData to its peer; a peer's datagram to the
//! client as ChannelData, or as a Data indication where only a permission matches), data,
//! ChannelData padding, TOS, flow label, TTL, IPv4 ID and DF, Ethernet padding, and the state
//! of the UDP checksum as it arrives: complete, absent (IPv4), or partial (the pseudo-header
//! sum a sender's offload has yet to finish), in native or generic mode. The frame is built
//! with relay-common's test frames (`relay-common/tests/frames`, an implementation of the
//! checksums independent of `relay_common::csum`), then driven through the program's steps as
//! relay-common/tests/rewrite.rs drives them: parse, map keys, route, `settle_checksum`,
//! `rewrite_into`, `keep_partial`, then head, tail and headers applied to a host buffer.
//!
//! The result must be, byte for byte, the packet built from scratch for where it goes (TTL one
//! less, IPv4 header and UDP checksums computed in full); one that stays partial must hold the
//! new pseudo-header sum where the offload expects it, with the UDP header where the skb's
//! `csum_start` points, and equal that packet once finished as the offload would. A packet the
//! program must not forward (TTL 1, no UDP checksum on IPv6) must get that verdict.
#![no_main]

#[path = "../../relay-common/tests/frames/mod.rs"]
mod frames;
#[path = "../../relay-common/tests/program_writes/mod.rs"]
mod program_writes;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use frames::{
    Opts, assert_checksums, channel_data, data_indication, finish_partial, forwarded, partial,
    pseudo_header_sum, udp_frame,
};
use libfuzzer_sys::fuzz_target;
use program_writes::{
    CLIENT_MAC, PEER_MAC, RELAY_MAC, apply, apply_keeping_udp, finish_indication,
};
use relay_common::csum::Sum;
use relay_common::indication::{self, DataHeader};
use relay_common::maps::{NO_CHANNEL, PeerValue};
use relay_common::packet::{self, CHANNEL_HLEN, ETH_HLEN, IPV4_DF, Rewrite, Route, UDP_HLEN};
use relay_common::{ChannelEntries, ChannelKey, FAMILY_IPV4, PeerKey, Verdict};

const TXID: [u8; 12] = *b"xdpturn-fuzz";

#[derive(Debug, Arbitrary, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ClientToPeer,
    PeerToClient,
    PeerToClientIndication,
}

#[derive(Debug, Arbitrary, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    Full,
    /// Zero: no checksum (IPv4 only; on IPv6 the program must not forward it).
    None,
    /// The pseudo-header sum, as a sender with checksum offload leaves it.
    Partial,
}

#[derive(Debug, Arbitrary)]
struct Case {
    client_v6: bool,
    peer_v6: bool,
    /// Varies the addresses: each party's last bytes.
    hosts: [u16; 4],
    /// Client, listener, relay, peer.
    ports: [u16; 4],
    channel: u16,
    direction: Direction,
    checksum: Checksum,
    generic: bool,
    tos: u8,
    flow_label: u32,
    ttl: u8,
    ipv4_id: u16,
    df: bool,
    /// ChannelData padding bytes (as many as the data's length leaves to a multiple of 4,
    /// or fewer: any 0-3 are allowed).
    padding: [u8; 3],
    pad_len: u8,
    pad_frame: bool,
    data: Vec<u8>,
}

fn addr(v6: bool, net: u8, host: u16, port: u16) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            u16::from(net),
            0,
            0,
            0,
            host,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, net, (host >> 8) as u8, host as u8))
    };
    SocketAddr::new(ip, port)
}

fuzz_target!(|case: Case| run(case));

fn run(c: Case) {
    let data = &c.data[..c.data.len().min(1400)];
    let port = |p: u16| p.max(1);
    let client = addr(c.client_v6, 1, c.hosts[0], port(c.ports[0]));
    let listener = addr(c.client_v6, 2, c.hosts[1], port(c.ports[1]));
    let relay = addr(c.peer_v6, 3, c.hosts[2], port(c.ports[2]));
    let peer = addr(c.peer_v6, 4, c.hosts[3], port(c.ports[3]));
    let channel = 0x4000 | (c.channel & 0x3FFF);
    let entries = ChannelEntries::new(client, listener, channel, relay, peer, 7)
        .expect("each side has one family");
    let permission = PeerValue::new(
        listener.ip(),
        listener.port(),
        client.ip(),
        client.port(),
        NO_CHANNEL,
        7,
    )
    .expect("one family");
    let permission_key =
        PeerKey::permission(relay.ip(), relay.port(), peer.ip()).expect("one family");

    let opts = Opts {
        ttl: c.ttl,
        tos: c.tos,
        flow_label: c.flow_label & 0xF_FFFF,
        ipv4_id: c.ipv4_id,
        df: c.df,
        no_checksum: c.checksum == Checksum::None,
        pad_frame_to: if c.pad_frame { 60 } else { 0 },
    };
    let pad_len = usize::from(c.pad_len % 4);
    let (input, from_v6, to_v6, expected) = match c.direction {
        Direction::ClientToPeer => (
            udp_frame(
                RELAY_MAC,
                CLIENT_MAC,
                client,
                listener,
                &channel_data(channel, data, &c.padding[..pad_len]),
                opts,
            ),
            c.client_v6,
            c.peer_v6,
            (PEER_MAC, relay, peer, data.to_vec()),
        ),
        Direction::PeerToClient => (
            udp_frame(RELAY_MAC, PEER_MAC, peer, relay, data, opts),
            c.peer_v6,
            c.client_v6,
            (
                CLIENT_MAC,
                listener,
                client,
                channel_data(channel, data, &[]),
            ),
        ),
        Direction::PeerToClientIndication => (
            udp_frame(RELAY_MAC, PEER_MAC, peer, relay, data, opts),
            c.peer_v6,
            c.client_v6,
            (
                CLIENT_MAC,
                listener,
                client,
                data_indication(&TXID, peer, data),
            ),
        ),
    };
    let input = if c.checksum == Checksum::Partial {
        partial(&input)
    } else {
        input
    };
    let out_opts = forwarded(
        Opts {
            ttl: c.ttl.max(2),
            ..opts
        },
        from_v6,
        to_v6,
    );
    let (dmac, src, dst, payload) = expected;
    let expected = udp_frame(dmac, RELAY_MAC, src, dst, &payload, out_opts);

    let outcome = forward(&input, &c, &entries, &permission, permission_key);
    // The checksum is settled before the rewrite checks the TTL.
    let unknown = |v: &Verdict| *v == Verdict::PassChecksumUnknown && c.generic;
    if c.ttl <= 1 {
        let verdict = outcome.err();
        assert!(
            verdict == Some(Verdict::PassTtl) || verdict.as_ref().is_some_and(unknown),
            "TTL {}: {verdict:?}",
            c.ttl
        );
        return;
    }
    if c.checksum == Checksum::None && (from_v6 || to_v6) {
        assert_eq!(
            outcome.err(),
            Some(Verdict::PassNoChecksum),
            "no UDP checksum to or from IPv6"
        );
        return;
    }
    let (output, kept) = match outcome {
        Ok(o) => o,
        // A checksum field that equals the pseudo-header sum and verifies as complete, in
        // generic mode: the program cannot tell whether the skb is partial, and passes it up
        // (one in 65,536).
        Err(Verdict::PassChecksumUnknown) if c.generic && field_is_seed(&input) => return,
        Err(verdict) => panic!("not forwarded: {verdict:?}"),
    };
    let output = match kept {
        Some(csum_start) => {
            assert!(
                c.generic && c.checksum == Checksum::Partial,
                "kept partial: only a partial checksum in generic mode"
            );
            // What the offload finds: the new pseudo-header sum in the checksum field.
            let (udp_at, seed) = pseudo_header_sum(&output);
            assert_eq!(udp_at, csum_start, "the UDP header moved");
            assert_eq!(
                output[udp_at + 6..udp_at + 8],
                seed.to_be_bytes(),
                "the partial checksum is not the new pseudo-header sum"
            );
            finish_partial(&output, csum_start)
        }
        None => output,
    };
    assert_checksums(&output);
    assert_eq!(output, expected, "{c:?}");
}

/// The program's steps on `frame`: the forwarded frame, and where its UDP header is when its
/// checksum stays partial (generic mode).
fn forward(
    frame: &[u8],
    c: &Case,
    entries: &ChannelEntries,
    permission: &PeerValue,
    permission_key: PeerKey,
) -> Result<(Vec<u8>, Option<usize>), Verdict> {
    let eth: [u8; ETH_HLEN] = frame[..ETH_HLEN].try_into().expect("an Ethernet header");
    let family = packet::l3_family(&eth)?;
    packet::check_frame_len(frame.len())?;
    let l3_len = frame.len() - ETH_HLEN;
    let ip = if family == FAMILY_IPV4 {
        packet::parse_ipv4(&array(frame, ETH_HLEN), l3_len)?
    } else {
        packet::parse_ipv6(&array(frame, ETH_HLEN), l3_len)?
    };
    if family == FAMILY_IPV4 {
        assert_eq!(ip.ipv4_frag & IPV4_DF != 0, c.df, "DF");
    }
    let l4 = ETH_HLEN + ip.header_len();
    let mut udp = packet::parse_udp(&array(frame, l4), &ip)?;
    let payload_at = l4 + UDP_HLEN;
    let payload_len = udp.payload_len();

    let mut header = None;
    let route = match c.direction {
        Direction::ClientToPeer => {
            let first: [u8; CHANNEL_HLEN] = array(frame, payload_at);
            let cd = packet::channel_header(&first).expect("a channel number's first byte");
            let key = ChannelKey::from_packet(
                ip.family,
                ip.src,
                udp.src_port,
                ip.dst,
                udp.dst_port,
                cd.channel,
            );
            assert_eq!(key, entries.channel_key, "the packet's channel key");
            let trailing = packet::channel_data_fits(cd, payload_len)?;
            let bytes = if trailing == 0 {
                [0; 3]
            } else {
                let end = payload_at + usize::from(payload_len);
                packet::trailing_bytes(array(frame, end - 4), trailing)
            };
            let sum = packet::trailing_sum(bytes, trailing, cd.len);
            packet::route_to_peer(cd, sum, &entries.channel_value)
        }
        Direction::PeerToClient => {
            let key = PeerKey::from_packet(ip.family, ip.dst, udp.dst_port, ip.src, udp.src_port);
            assert_eq!(key, entries.peer_key, "the packet's peer key");
            packet::route_to_client(&udp, &entries.peer_value)
        }
        Direction::PeerToClientIndication => {
            let key = PeerKey::permission_from_packet(ip.family, ip.dst, udp.dst_port, ip.src);
            assert_eq!(key, permission_key, "the packet's permission key");
            let mut h = DataHeader::EMPTY;
            indication::data_indication_into(
                &TXID,
                ip.family,
                &ip.src,
                udp.src_port,
                payload_len,
                &mut h,
            )
            .map_err(|_| Verdict::PassTooBig)?;
            let mut route = Route::EMPTY;
            packet::route_to_client_indication_into(&udp, permission, &h, &mut route);
            header = Some(h);
            route
        }
    };

    let mut keep = false;
    if packet::maybe_partial(&ip, &udp) {
        let end = payload_at + usize::from(payload_len);
        let payload = Sum::new().add_bytes(&frame[payload_at..end]);
        keep = packet::settle_checksum(&ip, &mut udp, payload, c.generic)?;
    }
    let mut rw = Rewrite::EMPTY;
    packet::rewrite_into(&ip, &udp, &route, &mut rw)?;
    if !keep {
        let mut out = apply(frame, &rw);
        finish_indication(&mut out, &rw, header.as_ref());
        return Ok((out, None));
    }
    packet::keep_partial(&ip, &route, &mut rw);
    let (mut out, csum_start) = apply_keeping_udp(frame, &rw, payload_at);
    finish_indication(&mut out, &rw, header.as_ref());
    Ok((out, Some(csum_start)))
}

/// Whether the UDP checksum field of `frame` holds its pseudo-header sum.
fn field_is_seed(frame: &[u8]) -> bool {
    let (udp_at, seed) = pseudo_header_sum(frame);
    frame[udp_at + 6..udp_at + 8] == seed.to_be_bytes()
}

fn array<const N: usize>(frame: &[u8], at: usize) -> [u8; N] {
    frame[at..at + N].try_into().expect("inside the frame")
}
