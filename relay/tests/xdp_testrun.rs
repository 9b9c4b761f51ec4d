//! The XDP program itself, run by the kernel with BPF_PROG_TEST_RUN on packets built by hand.
//!
//! Each test creates its own network namespace (removed on drop, failure included) with veth
//! interfaces, addresses, routes and static neighbours, so that the next hops the dataplane
//! resolves for the program are deterministic (forwarding stays off: the program does not need
//! it); a thread enters it, loads the program through `relay::dataplane`, fills the maps through
//! the same API the relay uses (binding a channel resolves and writes its next hops), and runs
//! packets "as received" on one of the interfaces. Every forwarded packet must equal, byte for byte, the
//! packet built from scratch with checksums computed in full (and its checksums verify by full
//! recomputation); everything else must come back unchanged with the expected verdict, and the
//! per-action and per-channel counters must say what happened.
//!
//! Needs root (CI runs as root) and the program built into the relay: `cargo xtask build-ebpf`
//! before `cargo test`, which `cargo xtask test` does. Without either, the tests fail saying so.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

// Packets, built from scratch with checksums computed in full.
#[path = "common/floor.rs"]
mod floor;
#[path = "../../relay-common/tests/frames/mod.rs"]
mod frames;
#[path = "common/netns.rs"]
mod netns;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use frames::{
    Attr, Opts, assert_checksums, channel_data, data_indication, finish_partial, forwarded,
    ip_frame, partial, pseudo_header_sum, send_indication, udp_frame,
};
use netns::{Netns, mac_str};
use relay::dataplane::{
    ChannelBinding, ChannelTraffic, Dataplane, DataplaneError, ModeChoice, PROGRAM_BUILT, Traffic,
    Verdict, XdpConfig, XdpMode, tcx_links,
};
use relay::proto::allocation::Relay;
use relay::proto::{FiveTuple, RelayHandle, Transport};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

// ---------------------------------------------------------------------------------------------
// Preconditions and the network namespace.

fn preconditions() {
    if !PROGRAM_BUILT {
        panic!(
            "the XDP program is not built into this relay: run `cargo xtask build-ebpf`, then the \
             tests again (`cargo xtask test` does both)"
        );
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests load an XDP program and create network namespaces: run them as root (CI does)"
    );
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0]; // xc0: towards clients
const MAC_P: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0]; // xp0: towards peers
const MAC_D: [u8; 6] = [0x02, 0, 0, 0, 0x03, 0]; // xd0: a third attached interface
const MAC_N: [u8; 6] = [0x02, 0, 0, 0, 0x04, 0]; // xn0: not attached
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const NEAR_PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x14];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x24];

/// The relay's namespace: clients behind xc0, peers behind xp0 (MTU 1400), a client behind
/// xd0, a peer behind xn0 (the program is not attached there), an unreachable prefix, a peer
/// without a neighbour entry. Forwarding is off, as the namespace starts.
fn topology() -> Netns {
    let ns = Netns::new("fwd");
    for (name, mac) in [("xc", MAC_C), ("xp", MAC_P), ("xd", MAC_D), ("xn", MAC_N)] {
        let mac = mac_str(&mac);
        ns.ip(&format!(
            "link add {name}0 address {mac} type veth peer name {name}1"
        ));
        // The far ends only keep the links up: without IPv6 there they send nothing of their
        // own (MLD reports, router and neighbour solicitations) that the program would count.
        ns.sysctl(&format!("net.ipv6.conf.{name}1.disable_ipv6=1"));
        ns.ip(&format!("link set {name}0 up"));
        ns.ip(&format!("link set {name}1 up"));
    }
    ns.ip("link set xp0 mtu 1400");
    for (addr, dev) in [
        ("192.0.2.1/24", "xc0"),
        ("198.51.100.1/24", "xp0"),
        ("203.0.113.1/24", "xd0"),
        ("10.9.0.1/24", "xn0"),
    ] {
        ns.ip(&format!("addr add {addr} dev {dev}"));
    }
    for (addr, dev) in [("2001:db8:c::1/64", "xc0"), ("2001:db8:e::1/64", "xp0")] {
        ns.ip(&format!("-6 addr add {addr} dev {dev} nodad"));
    }
    for (addr, mac, dev) in [
        ("192.0.2.10", CLIENT_MAC, "xc0"),
        ("2001:db8:c::10", CLIENT_MAC, "xc0"),
        ("192.0.2.20", NEAR_PEER_MAC, "xc0"),
        ("198.51.100.20", PEER_MAC, "xp0"),
        ("2001:db8:e::20", PEER_MAC, "xp0"),
        ("203.0.113.10", CLIENT_MAC, "xd0"),
        ("10.9.0.20", PEER_MAC, "xn0"),
    ] {
        ns.ip(&format!(
            "neigh replace {addr} lladdr {} dev {dev} nud permanent",
            mac_str(&mac)
        ));
    }
    ns.ip("route add unreachable 100.64.0.0/24");
    ns
}

fn ifindex(name: &str) -> u32 {
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .unwrap();
    rustix::net::netdevice::name_to_index(&socket, name).unwrap()
}

fn config(mode: XdpMode) -> XdpConfig {
    XdpConfig {
        interfaces: vec!["xc0".into(), "xp0".into(), "xd0".into()],
        mode,
        max_channels: 64,
        listeners: vec![
            "192.0.2.1:3478".parse().unwrap(),
            "[2001:db8:c::1]:3478".parse().unwrap(),
            "203.0.113.1:3478".parse().unwrap(),
        ],
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Channels.

/// One channel of the tests, and how its packets travel.
#[derive(Clone, Copy, Debug)]
struct Channel {
    name: &'static str,
    client: SocketAddr,
    listener: SocketAddr,
    channel: u16,
    relay: SocketAddr,
    peer: SocketAddr,
    /// Interface and MAC the client's packets arrive on / its neighbour's MAC.
    client_side: (&'static str, [u8; 6], [u8; 6]),
    /// Interface and MAC the peer's packets arrive on / its neighbour's MAC.
    peer_side: (&'static str, [u8; 6], [u8; 6]),
}

impl Channel {
    fn tuple(&self) -> FiveTuple {
        FiveTuple {
            transport: Transport::Udp,
            client: self.client,
            server: self.listener,
        }
    }

    fn relay(&self) -> Relay {
        Relay {
            handle: RelayHandle(u32::from(self.channel)),
            addr: self.relay,
            // Behind NAT the advertised address differs; the maps use the bound one.
            advertised: SocketAddr::new("203.0.113.200".parse().unwrap(), self.relay.port()),
        }
    }

    fn bind(&self, dp: &Dataplane) {
        dp.bind_channel(&self.tuple(), self.channel, &self.relay(), self.peer)
            .unwrap_or_else(|e| panic!("binding {}: {e}", self.name));
    }

    fn sent_by_client(&self, payload: &[u8], o: Opts) -> Vec<u8> {
        let (_, iface_mac, client_mac) = self.client_side;
        udp_frame(
            iface_mac,
            client_mac,
            self.client,
            self.listener,
            payload,
            o,
        )
    }

    fn sent_by_peer(&self, payload: &[u8], o: Opts) -> Vec<u8> {
        let (_, iface_mac, peer_mac) = self.peer_side;
        udp_frame(iface_mac, peer_mac, self.peer, self.relay, payload, o)
    }

    fn expected_at_peer(&self, data: &[u8], o: Opts) -> Vec<u8> {
        let (_, iface_mac, peer_mac) = self.peer_side;
        let o = forwarded(o, self.client.is_ipv6(), self.peer.is_ipv6());
        udp_frame(peer_mac, iface_mac, self.relay, self.peer, data, o)
    }

    fn expected_at_client(&self, data: &[u8], o: Opts) -> Vec<u8> {
        let (_, iface_mac, client_mac) = self.client_side;
        let o = forwarded(o, self.peer.is_ipv6(), self.client.is_ipv6());
        let payload = channel_data(self.channel, data, &[]);
        udp_frame(
            client_mac,
            iface_mac,
            self.listener,
            self.client,
            &payload,
            o,
        )
    }
}

const XC: (&str, [u8; 6], [u8; 6]) = ("xc0", MAC_C, CLIENT_MAC);
const XP: (&str, [u8; 6], [u8; 6]) = ("xp0", MAC_P, PEER_MAC);

fn channels() -> Vec<Channel> {
    vec![
        Channel {
            name: "IPv4 client, IPv4 peer",
            client: sa("192.0.2.10:40000"),
            listener: sa("192.0.2.1:3478"),
            channel: 0x4000,
            relay: sa("198.51.100.1:50000"),
            peer: sa("198.51.100.20:6000"),
            client_side: XC,
            peer_side: XP,
        },
        Channel {
            name: "IPv6 client, IPv6 peer",
            client: sa("[2001:db8:c::10]:40001"),
            listener: sa("[2001:db8:c::1]:3478"),
            channel: 0x4001,
            relay: sa("[2001:db8:e::1]:50001"),
            peer: sa("[2001:db8:e::20]:6001"),
            client_side: XC,
            peer_side: XP,
        },
        Channel {
            name: "IPv4 client, IPv6 peer",
            client: sa("192.0.2.10:40002"),
            listener: sa("192.0.2.1:3478"),
            channel: 0x4002,
            relay: sa("[2001:db8:e::1]:50002"),
            peer: sa("[2001:db8:e::20]:6002"),
            client_side: XC,
            peer_side: XP,
        },
        Channel {
            name: "IPv6 client, IPv4 peer",
            client: sa("[2001:db8:c::10]:40003"),
            listener: sa("[2001:db8:c::1]:3478"),
            channel: 0x7FFF,
            relay: sa("198.51.100.1:50003"),
            peer: sa("198.51.100.20:6003"),
            client_side: XC,
            peer_side: XP,
        },
    ]
}

/// Client and peer behind the same interface: XDP_TX.
fn same_side() -> Channel {
    Channel {
        name: "client and peer behind xc0",
        client: sa("192.0.2.10:40004"),
        listener: sa("192.0.2.1:3478"),
        channel: 0x4004,
        relay: sa("192.0.2.1:50004"),
        peer: sa("192.0.2.20:6004"),
        client_side: XC,
        peer_side: ("xc0", MAC_C, NEAR_PEER_MAC),
    }
}

/// Runs a frame as received on `iface`.
fn run(dp: &Dataplane, iface: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let r = dp.test_run(frame, ifindex(iface), 1).unwrap();
    (r.verdict, r.output)
}

// ---------------------------------------------------------------------------------------------

#[test]
fn forwards_both_directions_every_family_pair_tx_and_redirect() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let all: Vec<Channel> = channels().into_iter().chain([same_side()]).collect();
        for c in &all {
            c.bind(&dp);
        }
        let mut expected_tx = 0;
        let mut expected_redirect = 0;
        for c in &all {
            let verdict = if c.client_side.0 == c.peer_side.0 {
                XDP_TX
            } else {
                XDP_REDIRECT
            };
            for data_len in [0usize, 1, 5, 100, 1201] {
                let data: Vec<u8> = (0..data_len).map(|i| (i * 7 + 1) as u8).collect();
                let pad = [0xA5, 0x5A, 0xC3];
                let padding = &pad[..(4 - data_len % 4) % 4];
                let o = Opts {
                    tos: 0xB8,
                    flow_label: 0xBEEF5,
                    ipv4_id: 0x8001,
                    df: data_len % 2 == 0,
                    pad_frame_to: 60,
                    ..Opts::default()
                };
                // Client to peer, without and with padding (and Ethernet padding for the
                // short ones).
                for padding in [&[][..], padding] {
                    let (v, out) = run(
                        &dp,
                        c.client_side.0,
                        &c.sent_by_client(&channel_data(c.channel, &data, padding), o),
                    );
                    assert_eq!(v, verdict, "{}: to peer, {data_len} bytes", c.name);
                    assert_eq!(
                        out,
                        c.expected_at_peer(&data, o),
                        "{}: to peer, {data_len} bytes, padding {padding:?}",
                        c.name
                    );
                    assert_checksums(&out);
                }
                // Peer to client.
                let (v, out) = run(&dp, c.peer_side.0, &c.sent_by_peer(&data, o));
                assert_eq!(v, verdict, "{}: to client, {data_len} bytes", c.name);
                assert_eq!(
                    out,
                    c.expected_at_client(&data, o),
                    "{}: to client, {data_len} bytes",
                    c.name
                );
                assert_checksums(&out);
                if verdict == XDP_TX {
                    expected_tx += 3;
                } else {
                    expected_redirect += 3;
                }
            }
        }

        // IPv4 without a UDP checksum stays without one.
        let c = &all[0];
        let o = Opts {
            no_checksum: true,
            ..Opts::default()
        };
        let (v, out) = run(
            &dp,
            "xc0",
            &c.sent_by_client(&channel_data(c.channel, b"abc", &[]), o),
        );
        assert_eq!((v, out), (XDP_REDIRECT, c.expected_at_peer(b"abc", o)));
        let (v, out) = run(&dp, "xp0", &c.sent_by_peer(b"abc", o));
        assert_eq!((v, out), (XDP_REDIRECT, c.expected_at_client(b"abc", o)));
        expected_redirect += 2;

        // Counted: per action, and per channel in both directions.
        let counters = dp.counters().unwrap();
        assert_eq!(counters.verdicts.get(Verdict::ForwardedTx), expected_tx);
        assert_eq!(
            counters.verdicts.get(Verdict::ForwardedRedirect),
            expected_redirect
        );
        assert_eq!(counters.verdicts.total(), expected_tx + expected_redirect);
        let data_bytes: u64 = 1 + 5 + 100 + 1201;
        for c in &all {
            let counted = counters
                .channels
                .iter()
                .find(|k| k.binding.channel == c.channel && k.binding.client == c.client)
                .unwrap_or_else(|| panic!("no counters for {}", c.name));
            let extra = if c.channel == all[0].channel { 1 } else { 0 };
            assert_eq!(
                counted.client_to_peer,
                Traffic {
                    packets: 10 + extra,
                    bytes: 2 * data_bytes + 3 * extra
                },
                "{}",
                c.name
            );
            assert_eq!(
                counted.peer_to_client,
                Traffic {
                    packets: 5 + extra,
                    bytes: data_bytes + 3 * extra
                },
                "{}",
                c.name
            );
        }
        assert_eq!(counters.client_to_peer.packets, 10 * 5 + 1);
        assert_eq!(counters.peer_to_client.packets, 5 * 5 + 1);
        // The totals are the sum of the channels, read in one go.
        let sum = |f: fn(&relay::dataplane::ChannelCounters) -> Traffic| {
            counters
                .channels
                .iter()
                .map(f)
                .fold(Traffic::default(), |a, t| Traffic {
                    packets: a.packets + t.packets,
                    bytes: a.bytes + t.bytes,
                })
        };
        assert_eq!(counters.client_to_peer, sum(|c| c.client_to_peer));
        assert_eq!(counters.peer_to_client, sum(|c| c.peer_to_client));
        let totals = dp.totals().unwrap();
        assert_eq!(
            (
                totals.client_to_peer,
                totals.peer_to_client,
                totals.verdicts
            ),
            (
                counters.client_to_peer,
                counters.peer_to_client,
                counters.verdicts
            )
        );
    });
}

/// Packets with partial checksums (what a container's or a veth's sender hands over), through
/// the real program. On an interface attached in generic mode (the veths here, in skb mode)
/// they leave partial again, with the new pseudo-header sum for the skb's offload to
/// finish: finished as the offload would, each equals the packet built from scratch. Arriving
/// on an interface the program runs on natively (here one it is not attached to, which the
/// program takes for native: no `INTERFACES` entry), they leave with complete checksums.
#[test]
fn partial_checksums_leave_valid_from_both_modes() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let all = channels();
        for c in &all {
            c.bind(&dp);
        }
        for c in &all {
            for data_len in [0usize, 1, 5, 100, 513, 1201] {
                let data: Vec<u8> = (0..data_len).map(|i| (i * 5 + 2) as u8).collect();
                let o = Opts {
                    tos: 0x10,
                    pad_frame_to: 60,
                    ..Opts::default()
                };
                let to_peer = partial(&c.sent_by_client(&channel_data(c.channel, &data, &[]), o));
                let to_client = partial(&c.sent_by_peer(&data, o));
                for (what, frame, expected) in [
                    ("to peer", &to_peer, c.expected_at_peer(&data, o)),
                    ("to client", &to_client, c.expected_at_client(&data, o)),
                ] {
                    let generic_side = if what == "to peer" {
                        c.client_side.0
                    } else {
                        c.peer_side.0
                    };
                    let (v, out) = run(&dp, generic_side, frame);
                    assert_eq!(v, XDP_REDIRECT, "{} {what}, {data_len} bytes", c.name);
                    let (udp_at, seed) = pseudo_header_sum(&out);
                    assert_eq!(
                        out[udp_at + 6..udp_at + 8],
                        seed.to_be_bytes(),
                        "{} {what}: still partial",
                        c.name
                    );
                    assert_eq!(
                        finish_partial(&out, udp_at),
                        expected,
                        "{} {what}, {data_len} bytes, generic",
                        c.name
                    );
                    let (v, out) = run(&dp, "xn0", frame);
                    assert_eq!(v, XDP_REDIRECT, "{} {what}, native", c.name);
                    assert_eq!(out, expected, "{} {what}, {data_len} bytes, native", c.name);
                    assert_checksums(&out);
                }
            }
        }
    });
}

/// A complete checksum that equals the pseudo-header sum cannot be told from a partial one in
/// generic mode: it goes up unchanged (`pass_checksum_unknown`); natively it is forwarded.
#[test]
fn a_complete_checksum_equal_to_the_seed_goes_up_in_generic_mode() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let c = channels()[0];
        c.bind(&dp);
        let found = (0..=u16::MAX).find_map(|n| {
            let data = [(n >> 8) as u8, n as u8, 1, 2, 3];
            let frame = c.sent_by_peer(&data, Opts::default());
            let (udp_at, seed) = pseudo_header_sum(&frame);
            (frame[udp_at + 6..udp_at + 8] == seed.to_be_bytes()).then_some((data, frame))
        });
        let (data, frame) = found.expect("a payload whose checksum equals the seed");
        let before = dp.counters().unwrap().verdicts;
        assert_eq!(run(&dp, "xp0", &frame), (XDP_PASS, frame.clone()));
        let after = dp.counters().unwrap().verdicts;
        assert_eq!(
            after.get(Verdict::PassChecksumUnknown) - before.get(Verdict::PassChecksumUnknown),
            1
        );
        let (v, out) = run(&dp, "xn0", &frame);
        assert_eq!(
            (v, out),
            (XDP_REDIRECT, c.expected_at_client(&data, Opts::default()))
        );
    });
}

/// Two clients of this relay (behind xc0 and xd0) whose allocations' relayed addresses (on
/// xp0, local) are each other's peer.
fn same_relay_pair() -> (Channel, Channel) {
    let a = Channel {
        name: "A",
        client: sa("192.0.2.10:41000"),
        listener: sa("192.0.2.1:3478"),
        channel: 0x4100,
        relay: sa("198.51.100.1:51000"),
        peer: sa("198.51.100.1:51001"),
        client_side: XC,
        peer_side: XP,
    };
    let b = Channel {
        name: "B",
        client: sa("203.0.113.10:42000"),
        listener: sa("203.0.113.1:3478"),
        channel: 0x4200,
        relay: sa("198.51.100.1:51001"),
        peer: sa("198.51.100.1:51000"),
        client_side: ("xd0", MAC_D, CLIENT_MAC),
        peer_side: XP,
    };
    (a, b)
}

/// Both parties of a call on this relay: each client's channel goes to the other's relayed
/// address (a local address: no next hop). ChannelData from one leaves as ChannelData to the
/// other, in one pass, counted on both channels; without the other's channel, it goes up.
#[test]
fn same_relay_channel_data_goes_from_client_to_client() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let (a, b) = same_relay_pair();
        a.bind(&dp);
        let o = Opts::default();
        let from_a = a.sent_by_client(&channel_data(a.channel, b"to b", &[0; 0]), o);
        // B has no channel to A's relayed address yet: up, for userspace.
        let (v, out) = run(&dp, "xc0", &from_a);
        assert_eq!((v, &out), (XDP_PASS, &from_a));
        b.bind(&dp);
        for (data, padding) in [(&b"to b"[..], &[][..]), (b"hello b", &[0x55][..])] {
            let frame = a.sent_by_client(&channel_data(a.channel, data, padding), o);
            let (v, out) = run(&dp, "xc0", &frame);
            assert_eq!(v, XDP_REDIRECT, "to xd0");
            assert_eq!(out, b.expected_at_client(data, o));
            assert_checksums(&out);
            // From a container, in generic mode: still partial, and right once finished.
            let (v, out) = run(&dp, "xc0", &partial(&frame));
            assert_eq!(v, XDP_REDIRECT);
            let (udp_at, _) = pseudo_header_sum(&out);
            assert_eq!(finish_partial(&out, udp_at), b.expected_at_client(data, o));
        }
        let counters = dp.counters().unwrap();
        let of = |c: &Channel| {
            counters
                .channels
                .iter()
                .find(|k| k.binding.channel == c.channel)
                .copied()
                .unwrap()
        };
        assert_eq!(of(&a).client_to_peer.packets, 4, "A's channel, to its peer");
        assert_eq!(of(&b).peer_to_client.packets, 4, "B's channel, to B");
        // And back.
        let from_b = b.sent_by_client(&channel_data(b.channel, b"to a", &[]), o);
        let (v, out) = run(&dp, "xd0", &from_b);
        assert_eq!((v, out), (XDP_REDIRECT, a.expected_at_client(b"to a", o)));
    });
}

/// The transaction ID of the Data indication in `frame` (bytes 8-19 of its UDP payload): the
/// program draws a random one, which the expected frame is then built with.
fn txid_of(frame: &[u8]) -> [u8; 12] {
    let (udp_at, _) = pseudo_header_sum(frame);
    frame[udp_at + 8 + 8..udp_at + 8 + 20].try_into().unwrap()
}

/// Send and Data indications through the real program, every family pair: an allocation and a
/// permission mirrored as the relay mirrors them; a Send indication (Firefox's form, with a
/// FINGERPRINT; libwebrtc's, without) leaves as its data, byte for byte what userspace sends;
/// a datagram from any port of the permitted IP becomes a Data indication (with a random
/// transaction ID); both counted on the permission; complete and partial checksums.
#[test]
fn indications_go_through_the_real_program() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let all = channels();
        for c in &all {
            dp.install_allocation(&c.tuple(), &[c.relay()]).unwrap();
            dp.install_permission(&c.tuple(), &c.relay(), c.peer.ip())
                .unwrap();
        }
        let txid = *b"kernel-sends";
        for c in &all {
            for data_len in [0usize, 1, 5, 160, 1200] {
                let data: Vec<u8> = (0..data_len).map(|i| (i * 11 + 3) as u8).collect();
                let o = Opts {
                    tos: 0x20,
                    pad_frame_to: 60,
                    ..Opts::default()
                };
                for fingerprint in [Some(true), None] {
                    let send = send_indication(
                        &txid,
                        &[Attr::Peer(c.peer), Attr::Data(data.clone())],
                        fingerprint,
                    );
                    let frame = c.sent_by_client(&send, o);
                    let expected = c.expected_at_peer(&data, o);
                    let (v, out) = run(&dp, c.client_side.0, &frame);
                    let case = format!("{}: Send, {data_len} bytes, {fingerprint:?}", c.name);
                    assert_eq!(v, XDP_REDIRECT, "{case}");
                    assert_eq!(out, expected, "{case}");
                    assert_checksums(&out);
                    let (v, out) = run(&dp, c.client_side.0, &partial(&frame));
                    assert_eq!(v, XDP_REDIRECT, "{case}, partial");
                    let (udp_at, _) = pseudo_header_sum(&out);
                    assert_eq!(finish_partial(&out, udp_at), expected, "{case}, partial");
                }
                // From another port of the permitted peer: no channel, a Data indication.
                let from = SocketAddr::new(c.peer.ip(), 7777);
                let (_, iface_mac, peer_mac) = c.peer_side;
                let frame = udp_frame(iface_mac, peer_mac, from, c.relay, &data, o);
                let (v, out) = run(&dp, c.peer_side.0, &frame);
                let case = format!("{}: Data, {data_len} bytes", c.name);
                assert_eq!(v, XDP_REDIRECT, "{case}");
                let (_, iface_mac, client_mac) = c.client_side;
                let expected = |txid: &[u8; 12]| {
                    udp_frame(
                        client_mac,
                        iface_mac,
                        c.listener,
                        c.client,
                        &data_indication(txid, from, &data),
                        forwarded(o, c.peer.is_ipv6(), c.client.is_ipv6()),
                    )
                };
                assert_eq!(out, expected(&txid_of(&out)), "{case}");
                assert_checksums(&out);
                let (v, out) = run(&dp, c.peer_side.0, &partial(&frame));
                assert_eq!(v, XDP_REDIRECT, "{case}, partial");
                let (udp_at, _) = pseudo_header_sum(&out);
                let out = finish_partial(&out, udp_at);
                assert_eq!(out, expected(&txid_of(&out)), "{case}, partial");
            }
        }
        // What the program cannot prove goes up unchanged, for the relay to decide.
        let c = &all[0];
        let data = Attr::Data(b"media".to_vec());
        let unpermitted = SocketAddr::new(c.client.ip(), 9);
        for (what, attrs, fingerprint) in [
            (
                "a wrong FINGERPRINT",
                vec![Attr::Peer(c.peer), data.clone()],
                Some(false),
            ),
            (
                "an unknown comprehension-required attribute",
                vec![Attr::Peer(c.peer), Attr::Unknown, data.clone()],
                None,
            ),
            (
                "a peer without a permission",
                vec![Attr::Peer(unpermitted), data.clone()],
                None,
            ),
            ("no DATA", vec![Attr::Peer(c.peer)], None),
        ] {
            let frame = c.sent_by_client(
                &send_indication(&txid, &attrs, fingerprint),
                Opts::default(),
            );
            let before = dp.counters().unwrap().verdicts;
            assert_eq!(run(&dp, "xc0", &frame), (XDP_PASS, frame.clone()), "{what}");
            let after = dp.counters().unwrap().verdicts;
            assert_eq!(
                after.get(Verdict::PassSendIndication) - before.get(Verdict::PassSendIndication),
                1,
                "{what}"
            );
        }

        // Counted on the permissions: 4 Send indications and 2 Data indications per length.
        let counters = dp.counters().unwrap();
        for c in &all {
            let p = counters
                .permissions
                .iter()
                .find(|p| p.binding.client == c.client && p.binding.peer == c.peer.ip())
                .unwrap_or_else(|| panic!("no counters for {}", c.name));
            assert_eq!(
                (p.client_to_peer.packets, p.peer_to_client.packets),
                (20, 10),
                "{}",
                c.name
            );
        }
    });
}

/// Firefox to Firefox on this relay: each has a permission for the other's relayed address
/// only. A Send indication to the other's relayed address reaches the other client at once as
/// a Data indication from the first one's relayed address.
#[test]
fn same_relay_indications_go_from_client_to_client() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let (a, b) = same_relay_pair();
        for c in [&a, &b] {
            dp.install_allocation(&c.tuple(), &[c.relay()]).unwrap();
            dp.install_permission(&c.tuple(), &c.relay(), c.peer.ip())
                .unwrap();
        }
        let data = b"hello b".to_vec();
        let o = Opts::default();
        let send = send_indication(
            b"same-relay-1",
            &[Attr::Peer(b.relay), Attr::Data(data.clone())],
            Some(true),
        );
        let (v, out) = run(&dp, "xc0", &a.sent_by_client(&send, o));
        assert_eq!(v, XDP_REDIRECT, "to xd0");
        let expected = udp_frame(
            CLIENT_MAC,
            MAC_D,
            b.listener,
            b.client,
            &data_indication(&txid_of(&out), a.relay, &data),
            forwarded(o, false, false),
        );
        assert_eq!(out, expected);
        assert_checksums(&out);
    });
}

#[test]
fn what_is_not_forwarded_goes_up_unchanged_or_is_dropped() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let c = channels()[0];
        let c6 = channels()[2]; // IPv4 client, IPv6 peer
        let v6 = channels()[1];
        for ch in [&c, &c6, &v6] {
            ch.bind(&dp);
        }
        let special = |name, client: &str, channel, relay: &str, peer: &str, side| Channel {
            name,
            client: sa(client),
            listener: if client.starts_with("203.") {
                sa("203.0.113.1:3478")
            } else {
                sa("192.0.2.1:3478")
            },
            channel,
            relay: sa(relay),
            peer: sa(peer),
            client_side: side,
            peer_side: XP,
        };
        let no_neigh = special(
            "no neighbour",
            "192.0.2.10:40005",
            0x4005,
            "198.51.100.1:50005",
            "198.51.100.30:6005",
            XC,
        );
        let not_attached = special(
            "egress not attached",
            "192.0.2.10:40006",
            0x4006,
            "10.9.0.1:50006",
            "10.9.0.20:6006",
            XC,
        );
        let unreachable = special(
            "unreachable",
            "192.0.2.10:40007",
            0x4007,
            "198.51.100.1:50007",
            "100.64.0.20:6007",
            XC,
        );
        for ch in [&no_neigh, &not_attached, &unreachable] {
            ch.bind(&dp);
        }

        let o = Opts::default();
        let stun = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let mut cases: Vec<(&str, &str, Vec<u8>, u32, Verdict)> = Vec::new();
        let mut case =
            |name, iface, frame, verdict, action| cases.push((name, iface, frame, verdict, action));

        // Not IP, VLAN.
        let mut arp = [0xFFu8; 6].to_vec();
        arp.extend_from_slice(&CLIENT_MAC);
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        case("ARP", "xc0", arp, XDP_PASS, Verdict::PassNotIp);
        let plain = c.sent_by_client(&channel_data(c.channel, b"hello", &[]), o);
        let mut vlan = plain[..12].to_vec();
        vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        vlan.extend_from_slice(&plain[12..]);
        case("802.1Q tag", "xc0", vlan, XDP_PASS, Verdict::PassVlan);

        // Not UDP.
        let mut tcp = ip_frame(MAC_C, CLIENT_MAC, c.client.ip(), c.listener.ip(), 6, 20, o);
        tcp.extend_from_slice(&[0u8; 20]);
        case("TCP", "xc0", tcp, XDP_PASS, Verdict::PassNotUdp);
        let mut icmp6 = ip_frame(
            MAC_C,
            CLIENT_MAC,
            v6.client.ip(),
            v6.listener.ip(),
            58,
            8,
            o,
        );
        icmp6.extend_from_slice(&[128, 0, 0, 0, 0, 0, 0, 0]);
        case("ICMPv6", "xc0", icmp6, XDP_PASS, Verdict::PassNotUdp);

        // Fragments and options.
        let mut frag = plain.clone();
        frag[14 + 6] = 0x20; // MF
        case(
            "IPv4 first fragment",
            "xc0",
            frag,
            XDP_PASS,
            Verdict::PassFragment,
        );
        let mut frag = plain.clone();
        frag[14 + 6..14 + 8].copy_from_slice(&[0x00, 0x10]); // offset 128
        case(
            "IPv4 later fragment",
            "xc0",
            frag,
            XDP_PASS,
            Verdict::PassFragment,
        );
        let mut opts = plain.clone();
        opts[14] = 0x46;
        opts.splice(34..34, [1, 1, 1, 0]);
        let total = u16::from_be_bytes([opts[16], opts[17]]) + 4;
        opts[16..18].copy_from_slice(&total.to_be_bytes());
        case(
            "IPv4 options",
            "xc0",
            opts,
            XDP_PASS,
            Verdict::PassIpOptions,
        );
        let v6_plain = v6.sent_by_client(&channel_data(v6.channel, b"hello", &[]), o);
        let mut v6frag = v6_plain.clone();
        v6frag[14 + 6] = 44;
        case(
            "IPv6 fragment header",
            "xc0",
            v6frag,
            XDP_PASS,
            Verdict::PassFragment,
        );
        let mut hbh = v6_plain.clone();
        hbh[14 + 6] = 0;
        case(
            "IPv6 hop-by-hop header",
            "xc0",
            hbh,
            XDP_PASS,
            Verdict::PassIpOptions,
        );

        // UDP that is not a bound channel.
        case(
            "UDP elsewhere",
            "xc0",
            udp_frame(
                MAC_C,
                CLIENT_MAC,
                c.client,
                sa("192.0.2.1:53"),
                &[0x40, 0, 0, 1, 9],
                o,
            ),
            XDP_PASS,
            Verdict::PassNotForUs,
        );
        case(
            "UDP to a relayed address from another peer",
            "xp0",
            udp_frame(MAC_P, PEER_MAC, sa("198.51.100.20:7777"), c.relay, b"hi", o),
            XDP_PASS,
            Verdict::PassNotForUs,
        );
        case(
            "STUN to the listener",
            "xc0",
            c.sent_by_client(&stun, o),
            XDP_PASS,
            Verdict::PassStun,
        );
        case(
            "STUN to the IPv6 listener",
            "xc0",
            v6.sent_by_client(&stun, o),
            XDP_PASS,
            Verdict::PassStun,
        );
        // A Send indication (type 0x0016) from a client with no allocation in the maps.
        let mut send = vec![0x00, 0x16, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        send.extend_from_slice(b"send-txid-00");
        case(
            "Send indication without an allocation in the maps",
            "xc0",
            c.sent_by_client(&send, o),
            XDP_PASS,
            Verdict::PassSendIndication,
        );
        case(
            "unknown channel",
            "xc0",
            c.sent_by_client(&channel_data(0x4ABC, b"hello", &[]), o),
            XDP_PASS,
            Verdict::PassUnknownChannel,
        );
        case(
            "bound channel, other client port",
            "xc0",
            udp_frame(
                MAC_C,
                CLIENT_MAC,
                sa("192.0.2.10:39999"),
                c.listener,
                &channel_data(c.channel, b"x", &[]),
                o,
            ),
            XDP_PASS,
            Verdict::PassUnknownChannel,
        );
        case(
            "neither STUN nor ChannelData",
            "xc0",
            c.sent_by_client(&[0x80, 1, 2, 3, 4], o),
            XDP_PASS,
            Verdict::PassNotChannelData,
        );
        case(
            "empty datagram to the listener",
            "xc0",
            c.sent_by_client(&[], o),
            XDP_PASS,
            Verdict::PassNotChannelData,
        );
        case(
            "more than padding",
            "xc0",
            c.sent_by_client(&channel_data(c.channel, b"x", &[0; 4]), o),
            XDP_PASS,
            Verdict::PassTrailingBytes,
        );

        // Bound, but userspace does it.
        case(
            "TTL 1",
            "xc0",
            c.sent_by_client(&channel_data(c.channel, b"x", &[]), Opts { ttl: 1, ..o }),
            XDP_PASS,
            Verdict::PassTtl,
        );
        case(
            "hop limit 1",
            "xp0",
            v6.sent_by_peer(b"x", Opts { ttl: 1, ..o }),
            XDP_PASS,
            Verdict::PassTtl,
        );
        case(
            "IPv4 without checksum to an IPv6 peer",
            "xc0",
            c6.sent_by_client(
                &channel_data(c6.channel, b"x", &[]),
                Opts {
                    no_checksum: true,
                    ..o
                },
            ),
            XDP_PASS,
            Verdict::PassNoChecksum,
        );
        case(
            "IPv6 with checksum 0",
            "xp0",
            v6.sent_by_peer(
                b"x",
                Opts {
                    no_checksum: true,
                    ..o
                },
            ),
            XDP_PASS,
            Verdict::PassNoChecksum,
        );
        case(
            "no neighbour entry",
            "xc0",
            no_neigh.sent_by_client(&channel_data(no_neigh.channel, b"x", &[]), o),
            XDP_PASS,
            Verdict::PassNoNextHop,
        );
        case(
            "beyond the egress MTU (1400)",
            "xc0",
            c.sent_by_client(&channel_data(c.channel, &[7u8; 1400], &[]), o),
            XDP_PASS,
            Verdict::PassMtu,
        );
        case(
            "unreachable route",
            "xc0",
            unreachable.sent_by_client(&channel_data(unreachable.channel, b"x", &[]), o),
            XDP_PASS,
            Verdict::PassNoNextHop,
        );
        case(
            "egress through an interface not attached",
            "xc0",
            not_attached.sent_by_client(&channel_data(not_attached.channel, b"x", &[]), o),
            XDP_PASS,
            Verdict::PassEgressNotAttached,
        );

        // Malformed.
        let mut long = plain.clone();
        long[16..18].copy_from_slice(&2000u16.to_be_bytes());
        case(
            "IPv4 total length beyond the frame",
            "xc0",
            long,
            XDP_DROP,
            Verdict::DropMalformed,
        );
        let mut ihl = plain.clone();
        ihl[14] = 0x44;
        case(
            "IPv4 header length 16",
            "xc0",
            ihl,
            XDP_DROP,
            Verdict::DropMalformed,
        );
        let mut udp_long = plain.clone();
        udp_long[38..40].copy_from_slice(&200u16.to_be_bytes());
        case(
            "UDP length beyond the IP payload",
            "xc0",
            udp_long,
            XDP_DROP,
            Verdict::DropMalformed,
        );
        let mut v6_long = v6_plain.clone();
        v6_long[18..20].copy_from_slice(&3000u16.to_be_bytes());
        case(
            "IPv6 payload length beyond the frame",
            "xc0",
            v6_long,
            XDP_DROP,
            Verdict::DropMalformed,
        );
        case(
            "ChannelData longer than the datagram",
            "xc0",
            c.sent_by_client(&[0x40, 0x00, 0x00, 0x20, 1, 2, 3], o),
            XDP_DROP,
            Verdict::DropLength,
        );
        case(
            "ChannelData shorter than its header",
            "xc0",
            c.sent_by_client(&[0x40, 0x00, 0x00], o),
            XDP_DROP,
            Verdict::DropLength,
        );

        let before = dp.counters().unwrap();
        assert_eq!(before.verdicts.total(), 0);
        let mut expected = [0u64; Verdict::COUNT];
        for (name, iface, frame, verdict, action) in &cases {
            let (v, out) = run(&dp, iface, frame);
            assert_eq!(v, *verdict, "{name}: verdict");
            if *verdict == XDP_PASS {
                assert_eq!(&out, frame, "{name}: passed packets are unchanged");
            }
            expected[action.index() as usize] += 1;
            let now = dp.counters().unwrap();
            assert_eq!(
                now.verdicts.get(*action),
                expected[action.index() as usize],
                "{name}: counted as {}",
                action.as_str()
            );
        }
        let after = dp.counters().unwrap();
        for action in Verdict::ALL {
            assert_eq!(
                after.verdicts.get(action),
                expected[action.index() as usize],
                "{}",
                action.as_str()
            );
        }
        // Nothing was forwarded, so no channel counted anything.
        assert_eq!(after.client_to_peer, Traffic::default());
        assert_eq!(after.peer_to_client, Traffic::default());
        // Every reason the brief lists has a case here (but the checksum the program cannot
        // prove, whose cases come with the checks that give it).
        for action in Verdict::ALL {
            if !action.is_forwarded()
                && action != Verdict::PassTooBig
                && action != Verdict::PassAdjustFailed
                && action != Verdict::DropRewriteFailed
                && action != Verdict::PassChecksumUnknown
            {
                assert!(
                    expected[action.index() as usize] > 0,
                    "no case for {}",
                    action.as_str()
                );
            }
        }
    });
}

#[test]
fn the_maps_follow_bind_refresh_unbind_and_fill_up() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&XdpConfig {
            max_channels: 3,
            ..config(XdpMode::Skb)
        })
        .unwrap();
        let all = channels();
        let c = all[0];
        let frame = c.sent_by_client(&channel_data(c.channel, b"data", &[]), Opts::default());

        assert_eq!(run(&dp, "xc0", &frame).0, XDP_PASS, "not bound yet");
        c.bind(&dp);
        c.bind(&dp); // a refresh changes nothing
        assert_eq!(dp.bound_channels(), 1);
        assert_eq!(run(&dp, "xc0", &frame).0, XDP_REDIRECT);
        assert_eq!(
            run(&dp, "xp0", &c.sent_by_peer(b"back", Opts::default())).0,
            XDP_REDIRECT
        );
        // What the channel forwarded since the last read, both directions, for the caller
        // that owns its allocation (what the relay charges to bandwidth budgets).
        assert_eq!(dp.take_traffic(|_| false).unwrap(), [], "not the caller's");
        let traffic = |c2p: (u64, u64), p2c: (u64, u64)| ChannelTraffic {
            tuple: c.tuple(),
            channel: c.channel,
            client_to_peer: Traffic {
                packets: c2p.0,
                bytes: c2p.1,
            },
            peer_to_client: Traffic {
                packets: p2c.0,
                bytes: p2c.1,
            },
        };
        assert_eq!(
            dp.take_traffic(|t| *t == c.tuple()).unwrap(),
            [traffic((1, 4), (1, 4))]
        );
        assert_eq!(dp.take_traffic(|_| true).unwrap(), [], "nothing new");
        assert_eq!(run(&dp, "xc0", &frame).0, XDP_REDIRECT);
        assert_eq!(
            dp.take_traffic(|_| true).unwrap(),
            [traffic((1, 4), (0, 0))]
        );

        // What it forwarded after the last read comes back with its removal (for the
        // allocation's usage report), once.
        assert_eq!(run(&dp, "xc0", &frame).0, XDP_REDIRECT);
        assert_eq!(run(&dp, "xc0", &frame).0, XDP_REDIRECT);
        assert_eq!(
            dp.unbind_channel(&c.tuple(), c.channel, &c.relay(), c.peer)
                .unwrap(),
            Some(traffic((2, 8), (0, 0)))
        );
        assert_eq!(
            dp.unbind_channel(&c.tuple(), c.channel, &c.relay(), c.peer)
                .unwrap(),
            None,
            "idempotent"
        );
        assert_eq!(dp.bound_channels(), 0);
        assert_eq!(run(&dp, "xc0", &frame).0, XDP_PASS, "unbound");
        assert_eq!(
            run(&dp, "xp0", &c.sent_by_peer(b"back", Opts::default())).0,
            XDP_PASS
        );
        let counters = dp.counters().unwrap();
        assert!(counters.channels.is_empty());
        // The unbound channel's traffic stays in the totals.
        assert_eq!(
            counters.client_to_peer,
            Traffic {
                packets: 4,
                bytes: 16
            }
        );
        assert_eq!(
            counters.peer_to_client,
            Traffic {
                packets: 1,
                bytes: 4
            }
        );
        assert_eq!(counters.verdicts.get(Verdict::PassUnknownChannel), 2);
        assert_eq!(counters.verdicts.get(Verdict::PassNotForUs), 1);

        // Full: the fourth channel stays in userspace, and the maps are as before.
        for ch in &all[..3] {
            ch.bind(&dp);
        }
        let err = dp
            .bind_channel(
                &all[3].tuple(),
                all[3].channel,
                &all[3].relay(),
                all[3].peer,
            )
            .unwrap_err();
        assert!(
            matches!(err, DataplaneError::Full { max_channels: 3 }),
            "{err}"
        );
        assert_eq!(err.metric_label(), "full");
        assert_eq!(
            run(
                &dp,
                "xc0",
                &all[3].sent_by_client(&channel_data(all[3].channel, b"x", &[]), Opts::default())
            )
            .0,
            XDP_PASS
        );
        // Freeing one makes room.
        assert_eq!(
            run(
                &dp,
                "xc0",
                &all[2].sent_by_client(&channel_data(all[2].channel, b"old", &[]), Opts::default())
            )
            .0,
            XDP_REDIRECT
        );
        dp.unbind_channel(
            &all[2].tuple(),
            all[2].channel,
            &all[2].relay(),
            all[2].peer,
        )
        .unwrap();
        all[3].bind(&dp);
        assert_eq!(
            run(
                &dp,
                "xc0",
                &all[3].sent_by_client(&channel_data(all[3].channel, b"x", &[]), Opts::default())
            )
            .0,
            XDP_REDIRECT
        );
        // A fresh channel in a reused slot starts from zero.
        let counters = dp.counters().unwrap();
        let reused = counters
            .channels
            .iter()
            .find(|k| k.binding.channel == all[3].channel)
            .unwrap();
        assert_eq!(
            reused.client_to_peer,
            Traffic {
                packets: 1,
                bytes: 1
            }
        );

        // Two channels cannot send one peer's datagrams on one relayed address.
        let mut clash = all[0];
        clash.channel = 0x4999;
        let err = dp
            .bind_channel(&clash.tuple(), clash.channel, &clash.relay(), clash.peer)
            .unwrap_err();
        assert_eq!(err.metric_label(), "conflict", "{err}");

        // Channels over TCP stay in userspace.
        let mut tcp = all[0].tuple();
        tcp.transport = Transport::Tcp;
        let err = dp
            .bind_channel(&tcp, 0x4000, &all[0].relay(), all[0].peer)
            .unwrap_err();
        assert_eq!(err.metric_label(), "transport");

        // The event API does the same.
        let b = ChannelBinding::new(
            &all[0].tuple(),
            all[0].channel,
            &all[0].relay(),
            all[0].peer,
        )
        .unwrap();
        assert_eq!(b.relay, all[0].relay);
    });
}

#[test]
fn next_hops_follow_the_kernel_tables() {
    preconditions();
    let ns = topology();
    ns.ip("route add 100.70.0.0/24 via 198.51.100.20 dev xp0");
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let c = Channel {
            name: "client behind xd0, peer behind a gateway on xp0",
            client: sa("203.0.113.10:40010"),
            listener: sa("203.0.113.1:3478"),
            channel: 0x4010,
            relay: sa("198.51.100.1:50010"),
            peer: sa("100.70.0.5:6010"),
            client_side: ("xd0", MAC_D, CLIENT_MAC),
            // The gateway's MAC: the peer itself has no neighbour entry.
            peer_side: XP,
        };
        c.bind(&dp);
        let o = Opts::default();
        let to_peer = c.sent_by_client(&channel_data(c.channel, b"data", &[]), o);
        let to_client = c.sent_by_peer(b"back", o);
        assert_eq!(
            run(&dp, "xd0", &to_peer),
            (XDP_REDIRECT, c.expected_at_peer(b"data", o))
        );
        assert_eq!(
            run(&dp, "xp0", &to_client),
            (XDP_REDIRECT, c.expected_at_client(b"back", o))
        );

        // The client's MAC changes: the next packet goes to the new one.
        let moved_mac = [0x02, 0, 0, 0, 0, 0x0b];
        ns.ip(&format!(
            "neigh replace 203.0.113.10 lladdr {} dev xd0 nud permanent",
            mac_str(&moved_mac)
        ));
        dp.refresh_next_hops().unwrap();
        let moved = Channel {
            client_side: ("xd0", MAC_D, moved_mac),
            ..c
        };
        assert_eq!(
            run(&dp, "xp0", &to_client),
            (XDP_REDIRECT, moved.expected_at_client(b"back", o))
        );

        // The client's neighbour entry goes, then the peer's route: up to userspace.
        ns.ip("neigh del 203.0.113.10 dev xd0");
        dp.refresh_next_hops().unwrap();
        assert_eq!(run(&dp, "xp0", &to_client), (XDP_PASS, to_client.clone()));
        ns.ip("route del 100.70.0.0/24");
        dp.refresh_next_hops().unwrap();
        assert_eq!(run(&dp, "xd0", &to_peer), (XDP_PASS, to_peer.clone()));
        let actions = dp.counters().unwrap().verdicts;
        assert_eq!(
            (
                actions.get(Verdict::ForwardedRedirect),
                actions.get(Verdict::PassNoNextHop)
            ),
            (3, 2)
        );
    });
}

#[test]
fn dropping_the_dataplane_detaches_the_program() {
    preconditions();
    let ns = topology();
    let attached = |ns: &Netns, iface: &str| {
        output("ip", &["-n", &ns.name, "-d", "link", "show", "dev", iface]).contains("prog/xdp")
    };
    // The kernel detaches a BPF link when the last reference to its file goes. Tests run as
    // threads of one process, and a child another test forks holds copies of this process's
    // descriptors until it execs (they are close-on-exec): for that moment the link outlives
    // the drop. So "detached" is waited for, briefly; a relay that exits loses every
    // reference at once (xdp_e2e.rs checks that on the wire).
    let gone = |still: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while still() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    let detached = |ns: &Netns, iface: &str| gone(&|| attached(ns, iface));
    // The TC program on `iface`'s ingress (called inside the namespace).
    let tc_detached = |ns: &Netns, iface: &str| gone(&|| tc_attached(ns, iface));
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Auto)).unwrap();
        // veth is a virtual interface: auto gives it skb mode (see `ModeChoice`), never tc.
        let has_tc = dp.has_tc_program();
        println!(
            "TC program in the object: {has_tc}; tcx links: {}",
            tcx_links()
        );
        let (auto_mode, auto_why) = (XdpMode::Skb, ModeChoice::VirtualInterface);
        let attachments = dp.attachments();
        let modes: Vec<_> = attachments
            .iter()
            .map(|a| (a.interface.as_str(), a.mode, a.why))
            .collect();
        let auto = |iface| (iface, auto_mode, auto_why);
        assert_eq!(modes, [auto("xc0"), auto("xp0"), auto("xd0")]);
        for iface in ["xc0", "xp0", "xd0"] {
            assert!(attached(&ns, iface), "{iface} should have the program");
            assert!(
                !tc_attached(&ns, iface),
                "{iface} should have no TC program"
            );
        }
        assert!(!attached(&ns, "xn0") && !tc_attached(&ns, "xn0"));
        let stats = dp.program_stats().unwrap();
        println!("verifier: {stats:?}");
        assert!(stats.verified_instructions.is_some_and(|n| n > 0));
        drop(dp);
        for iface in ["xc0", "xp0", "xd0"] {
            assert!(
                detached(&ns, iface) && tc_detached(&ns, iface),
                "{iface} still has the program 2 s after drop"
            );
        }

        // Skb mode, explicitly.
        let dp = Dataplane::load(&XdpConfig {
            interfaces: vec!["xn0".into()],
            ..config(XdpMode::Skb)
        })
        .unwrap();
        assert_eq!(dp.attachments()[0].mode, XdpMode::Skb);
        assert!(
            output("ip", &["-n", &ns.name, "-d", "link", "show", "dev", "xn0"])
                .contains("xdpgeneric")
        );
        drop(dp);
        assert!(detached(&ns, "xn0"));

        // Native mode, explicitly: veth has native XDP.
        let dp = Dataplane::load(&XdpConfig {
            interfaces: vec!["xn0".into()],
            ..config(XdpMode::Native)
        })
        .unwrap();
        let attachments = dp.attachments();
        let a = &attachments[0];
        assert_eq!((a.mode, a.why), (XdpMode::Native, ModeChoice::Configured));
        let shown = output("ip", &["-n", &ns.name, "-d", "link", "show", "dev", "xn0"]);
        assert!(
            shown.contains("prog/xdp") && !shown.contains("xdpgeneric"),
            "{shown}"
        );
        drop(dp);
        assert!(detached(&ns, "xn0"));

        // Tc mode, explicitly: the TC program on the ingress, no XDP program; detach takes it
        // off. Where the object has no TC program, the error names it.
        let tc_config = XdpConfig {
            interfaces: vec!["xn0".into()],
            ..config(XdpMode::Tc)
        };
        if has_tc {
            let dp = Dataplane::load(&tc_config).unwrap();
            let attachments = dp.attachments();
            let a = &attachments[0];
            assert_eq!((a.mode, a.why), (XdpMode::Tc, ModeChoice::Configured));
            assert!(tc_attached(&ns, "xn0") && !attached(&ns, "xn0"));
            assert!(dp.detach(0).unwrap(), "detach takes it off");
            assert!(tc_detached(&ns, "xn0"));
            assert!(!dp.detach(0).unwrap(), "detached already");
            drop(dp);
        } else {
            match Dataplane::load(&tc_config) {
                Err(DataplaneError::TcUnavailable {
                    program, reason, ..
                }) => {
                    assert_eq!(program, "xdpturn_tc");
                    assert!(reason.contains("no program `xdpturn_tc`"), "{reason}");
                }
                other => panic!("tc mode without the TC program: {other:?}"),
            }
            assert!(detached(&ns, "xn0"));
        }

        // An interface that does not exist is named, and nothing stays attached.
        let err = Dataplane::load(&XdpConfig {
            interfaces: vec!["xc0".into(), "nosuch0".into()],
            ..config(XdpMode::Auto)
        })
        .unwrap_err();
        assert!(
            matches!(&err, DataplaneError::UnknownInterface(name) if name == "nosuch0"),
            "{err}"
        );
        assert!(detached(&ns, "xc0") && tc_detached(&ns, "xc0"));

        // An interface another XDP program holds (another relay's, while it hands the ports
        // over to this one) waits in the XDP modes, whatever they are (EBUSY in the same mode,
        // EEXIST in the other); the others attach at once, and the busy one once it is free.
        // A TC attach never waits: it goes beside the other program (tc mode, and auto where
        // it picks tc).
        let mut first = Some(
            Dataplane::load(&XdpConfig {
                interfaces: vec!["xn0".into()],
                ..config(XdpMode::Skb)
            })
            .unwrap(),
        );
        let names = |dp: &Dataplane| -> Vec<String> {
            dp.attachments().into_iter().map(|a| a.interface).collect()
        };
        for mode in [XdpMode::Native, XdpMode::Skb, XdpMode::Tc, XdpMode::Auto] {
            if mode == XdpMode::Tc && !has_tc {
                continue; // The error, above.
            }
            let second = Dataplane::load(&XdpConfig {
                interfaces: vec!["xc0".into(), "xn0".into()],
                ..config(mode)
            })
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
            if mode == XdpMode::Tc {
                assert!(second.waiting().is_empty(), "{mode}: a TC attach waited");
                assert_eq!(names(&second), ["xc0", "xn0"], "{mode}");
                assert!(second.attachments().iter().all(|a| a.mode == XdpMode::Tc));
                assert!(tc_attached(&ns, "xn0") && attached(&ns, "xn0"), "{mode}");
                drop(second);
                assert!(tc_detached(&ns, "xn0") && tc_detached(&ns, "xc0"), "{mode}");
                assert!(attached(&ns, "xn0"), "the other program stays");
                continue;
            }
            assert_eq!(second.waiting(), ["xn0"], "{mode}");
            assert_eq!(names(&second), ["xc0"], "{mode}");
            assert!(second.attach_waiting().is_empty(), "{mode}: still busy");
            assert_eq!(second.waiting(), ["xn0"], "{mode}");
            if mode != XdpMode::Auto {
                drop(second);
                assert!(detached(&ns, "xc0"));
                continue;
            }
            drop(first.take());
            let deadline = Instant::now() + Duration::from_secs(2);
            let done = loop {
                let done = second.attach_waiting();
                if !done.is_empty() || Instant::now() > deadline {
                    break done;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert_eq!(done.len(), 1, "xn0 was not attached once free");
            let (interface, result) = &done[0];
            let attachment = result.as_ref().unwrap();
            assert_eq!((interface.as_str(), attachment.mode), ("xn0", XdpMode::Skb));
            assert!(second.waiting().is_empty());
            assert_eq!(names(&second), ["xc0", "xn0"]);
            assert!(attached(&ns, "xn0"));
            drop(second);
            assert!(detached(&ns, "xn0"));
        }
        drop(first);
        assert!(detached(&ns, "xn0"));
    });
}

/// Whether the TC program is on `iface`'s ingress, as a tcx link or a cls_bpf filter. Called
/// inside the namespace (`ns` names it for `tc`).
fn tc_attached(ns: &Netns, iface: &str) -> bool {
    use aya::programs::{SchedClassifier, TcAttachType};
    let tcx = SchedClassifier::query_tcx(iface, TcAttachType::Ingress)
        .map(|(_, programs)| {
            programs
                .iter()
                .any(|p| p.name_as_str() == Some(relay_common::maps::TC_PROGRAM))
        })
        .unwrap_or(false);
    tcx || output(
        "tc",
        &["-n", &ns.name, "filter", "show", "dev", iface, "ingress"],
    )
    .contains(relay_common::maps::TC_PROGRAM)
}

/// The benchmarks' floor (relay-ebpf/src/floor.rs) passes the verifier and does what it is
/// measured doing: a UDP datagram of either family, whatever its destination, leaves rewritten
/// as configured with checksums that verify (an IPv4 one without a checksum stays without);
/// it redirects, or sends back out with an ifindex of 0; anything else goes up unchanged.
#[test]
fn the_floor_forwards_udp_and_passes_the_rest() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let o = Opts {
            tos: 0xB8,
            flow_label: 0xBEEF5,
            ..Opts::default()
        };
        let payload: Vec<u8> = (0..101).map(|i| (i * 13 + 5) as u8).collect();
        for (from, to, src, dst) in [
            (
                "192.0.2.10:40000",
                "192.0.2.1:3478",
                "198.51.100.1:50000",
                "198.51.100.20:6000",
            ),
            (
                "[2001:db8:c::10]:40001",
                "[2001:db8:c::1]:3478",
                "[2001:db8:e::1]:50001",
                "[2001:db8:e::20]:6001",
            ),
        ] {
            let (src, dst) = (sa(src), sa(dst));
            for (egress, verdict) in [(ifindex("xp0"), XDP_REDIRECT), (0, XDP_TX)] {
                let mut fl = floor::Floor::load(&floor::Rewrite {
                    dst_mac: PEER_MAC,
                    src_mac: MAC_P,
                    src,
                    dst,
                    ifindex: egress,
                });
                for o in [
                    o,
                    Opts {
                        no_checksum: true,
                        ..o
                    },
                ] {
                    if o.no_checksum && src.is_ipv6() {
                        continue;
                    }
                    let frame = udp_frame(MAC_C, CLIENT_MAC, sa(from), sa(to), &payload, o);
                    let r = fl.test_run("floor", &frame, ifindex("xc0"), 1);
                    assert_eq!(r.verdict, verdict, "{from} -> {dst}");
                    assert_eq!(
                        r.output,
                        udp_frame(PEER_MAC, MAC_P, src, dst, &payload, o),
                        "{from} -> {dst}, no checksum: {}",
                        o.no_checksum
                    );
                    assert_checksums(&r.output);
                }
                // Not UDP, and not IP: up, unchanged.
                let mut tcp = ip_frame(MAC_C, CLIENT_MAC, sa(from).ip(), sa(to).ip(), 6, 20, o);
                tcp.extend_from_slice(&[0u8; 20]);
                let arp = [&MAC_C[..], &CLIENT_MAC, &[0x08, 0x06], &[0; 28]].concat();
                for frame in [tcp, arp] {
                    let r = fl.test_run("floor", &frame, ifindex("xc0"), 1);
                    assert_eq!((r.verdict, r.output), (XDP_PASS, frame));
                }
            }
        }
    });
}

/// One forwarded path of `bench_ns_per_packet`: a packet the relay's program forwards, and the
/// floor's rewrite of the same packet out of the same interface.
struct BenchPath {
    /// The key in `cargo xtask bench-xdp`'s RESULT line.
    key: &'static str,
    what: String,
    iface: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    floor: floor::Rewrite,
    /// What the floor makes of `frame`: the same datagram, addresses and ports rewritten.
    floor_expected: Vec<u8>,
}

impl BenchPath {
    /// `c`'s `payload` from `from` (the client or the peer, as `c` says) to the relay, and the
    /// floor sending it on from `src` to `dst` out of `to` (interface, its MAC, the next hop's).
    #[allow(clippy::too_many_arguments)]
    fn new(
        key: &'static str,
        what: String,
        (iface, frame): (&'static str, Vec<u8>),
        payload: &[u8],
        verdict: u32,
        to: (&'static str, [u8; 6], [u8; 6]),
        src: SocketAddr,
        dst: SocketAddr,
    ) -> BenchPath {
        let (egress, egress_mac, next_mac) = to;
        let o = Opts::default();
        BenchPath {
            key,
            what,
            iface,
            frame,
            verdict,
            floor: floor::Rewrite {
                dst_mac: next_mac,
                src_mac: egress_mac,
                src,
                dst,
                ifindex: if verdict == XDP_TX {
                    0
                } else {
                    ifindex(egress)
                },
            },
            floor_expected: udp_frame(next_mac, egress_mac, src, dst, payload, o),
        }
    }
}

/// The kernel's durations of `runs` single runs (after 1000 to warm up), in ns: the mean of
/// the middle half (the interquartile mean), which leaves out the runs an interrupt or a cold
/// cache lengthened, and resolves finer than the median of a clock that ticks in steps (this
/// machine's test-run durations come in steps of about 10 ns). Each BPF_PROG_TEST_RUN call
/// copies the frame in afresh, so every run sees it as built.
fn single_runs(runs: usize, mut run: impl FnMut() -> Duration) -> f64 {
    for _ in 0..1000 {
        run();
    }
    let mut ns: Vec<u64> = (0..runs).map(|_| run().as_nanos() as u64).collect();
    ns.sort_unstable();
    let middle = &ns[runs / 4..runs - runs / 4];
    middle.iter().sum::<u64>() as f64 / middle.len() as f64
}

/// A set of bindings under which a frame, forwarded, comes back as itself after `length`
/// forwards: what lets `repeat` measure the relay's program hot (see `hot_cycles`).
struct HotCycle {
    key: &'static str,
    /// The paths of the single-call table the cycle goes through.
    paths: &'static [&'static str],
    bindings: Vec<Channel>,
    iface: &'static str,
    frame: Vec<u8>,
    length: u32,
}

/// Cycles of bindings in which every repetition of BPF_PROG_TEST_RUN forwards a packet. The
/// kernel does not reset the frame between repetitions, so each runs on what the previous one
/// left: here that is always a packet the bindings forward again. A 2-cycle: channel K from
/// client C to "listener" L (a neighbour's address here: the program does not ask whether a
/// listener is local, userspace does) with relayed address R and peer P; channel K' with
/// client L, listener C, relayed address P and peer R, on the same channel number. C to L
/// goes to the peer as R to P (client to peer, K), which is a peer's datagram to K''s relayed
/// address and goes to K''s client as C to L with K's channel: the frame it started as. A
/// 1-cycle for same-relay calls: A's peer is B's relayed address, and B is A mirrored (client
/// and listener swapped, same channel), so A's packet reaches B's "client" as A's packet.
fn hot_cycles(ns: &Netns) -> Vec<HotCycle> {
    for (addr, dev) in [("192.0.2.11", "xc0"), ("2001:db8:c::11", "xc0")] {
        ns.ip(&format!(
            "neigh replace {addr} lladdr {} dev {dev} nud permanent",
            mac_str(&CLIENT_MAC)
        ));
    }
    let mut data = [0x5Au8; 100];
    data[0] = 0x80; // RTP: what media is
    let mirror = |c: &Channel| Channel {
        name: "mirror",
        client: c.listener,
        listener: c.client,
        channel: c.channel,
        relay: c.peer,
        peer: c.relay,
        client_side: c.client_side,
        peer_side: c.peer_side,
    };
    let o = Opts {
        ttl: 255,
        ..Opts::default()
    };
    let two = |key, paths, c: Channel| {
        let frame = c.sent_by_client(&channel_data(c.channel, &data, &[]), o);
        HotCycle {
            key,
            paths,
            bindings: vec![c, mirror(&c)],
            iface: "xc0",
            frame,
            length: 2,
        }
    };
    let v4 = Channel {
        name: "hot v4",
        client: sa("192.0.2.10:40100"),
        listener: sa("192.0.2.11:3478"),
        channel: 0x4110,
        relay: sa("198.51.100.1:50100"),
        peer: sa("198.51.100.20:6100"),
        client_side: XC,
        peer_side: XP,
    };
    let v6 = Channel {
        name: "hot v6",
        client: sa("[2001:db8:c::10]:40101"),
        listener: sa("[2001:db8:c::11]:3478"),
        channel: 0x4111,
        relay: sa("[2001:db8:e::1]:50101"),
        peer: sa("[2001:db8:e::20]:6101"),
        client_side: XC,
        peer_side: XP,
    };
    let cross = Channel {
        name: "hot v4 to v6",
        client: sa("192.0.2.10:40102"),
        listener: sa("192.0.2.11:3478"),
        channel: 0x4112,
        relay: sa("[2001:db8:e::1]:50102"),
        peer: sa("[2001:db8:e::20]:6102"),
        client_side: XC,
        peer_side: XP,
    };
    let same = Channel {
        name: "hot same relay",
        client: sa("192.0.2.10:40103"),
        listener: sa("192.0.2.11:3478"),
        channel: 0x4113,
        relay: sa("198.51.100.1:50103"),
        peer: sa("198.51.100.1:50104"),
        client_side: XC,
        peer_side: XP,
    };
    let same_frame = same.sent_by_client(&channel_data(same.channel, &data, &[]), o);
    vec![
        two("channel_v4", &["channel_c2p_v4", "channel_p2c_v4"], v4),
        two("channel_v6", &["channel_c2p_v6", "channel_p2c_v6"], v6),
        two("cross_v4_v6_v4", &["cross_v4_v6", "cross_v6_v4"], cross),
        HotCycle {
            key: "same_relay_v4",
            paths: &["same_relay_v4"],
            bindings: vec![same, mirror(&same)],
            iface: "xc0",
            frame: same_frame,
            length: 1,
        },
    ]
}

fn forwarded_count(dp: &Dataplane) -> u64 {
    let v = dp.counters().unwrap().verdicts;
    v.get(Verdict::ForwardedTx) + v.get(Verdict::ForwardedRedirect)
}

/// Repetitions in one BPF_PROG_TEST_RUN call.
const REPEAT: u32 = 1_000_000;

/// Repetitions in one call on a hot cycle: fewer than the 254 forwards a frame sent with TTL
/// 255 can make, even (for the 2-cycles).
const HOT_REPEAT: u32 = 250;

/// Whether two frames carry the same datagram: addresses, ports, UDP length and payload (what
/// a cycle must return; the MACs, TTL, IPv4 ID, DF and header checksum are the forwards').
fn same_datagram(a: &[u8], b: &[u8]) -> bool {
    let parts = |f: &[u8]| -> Option<(Vec<u8>, Vec<u8>)> {
        let (addrs, udp) = match f.get(12..14)? {
            [0x08, 0x00] => (f.get(26..34)?, 34),
            [0x86, 0xdd] => (f.get(22..54)?, 54),
            _ => return None,
        };
        Some((
            addrs.to_vec(),
            f.get(udp..)?
                .iter()
                .copied()
                .take(6)
                .chain(f.get(udp + 8..)?.iter().copied())
                .collect(),
        ))
    };
    matches!((parts(a), parts(b)), (Some(x), Some(y)) if x == y)
}

/// `cargo xtask bench-xdp` runs this (root; a release build): what one forwarded packet costs
/// the relay's program, every forwarded path, beside the floor (relay-ebpf/src/floor.rs) on
/// the same packet, without BPF run-time statistics (their clock reads would be in the
/// figures).
///
/// `repeat` does not work for the relay's forwarded paths: in one BPF_PROG_TEST_RUN call the
/// kernel runs the program again on the packet it left behind (neither the data nor the head
/// and tail are reset between repetitions), which the first run rewrote into one that is no
/// longer for the relay, so every later run passes it up. The benchmark shows it: the
/// program's forwarded-packet counters grow by 1 over a call of 1,000,000 repetitions.
/// Live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES) does not help either: the kernel
/// (net/bpf/test_run.c) copies the frame into a page of its page pool when the page is first
/// made, and on a recycled page resets the frame's bounds but not its bytes, which are what the
/// program wrote there before (and it sends the frames it is told to). So the relay's program is measured over many single calls instead, each on
/// a fresh copy of the frame: the kernel's durations (their interquartile mean), minus the same of
/// the floor object's `pass` program (which does nothing: what the call's own timing costs).
///
/// The floor forwards every UDP datagram, whatever its destination, with one rewrite, so its
/// repetitions all do the whole job: it is measured with `repeat` = 1,000,000 in one call
/// (minus `pass`'s time per repetition), and its output after those repetitions is checked to be
/// the forwarded packet. It is also measured the single-call way, which checks that method
/// against the repeated one on a program where both work.
///
/// Prints a table, and one line `BENCH-XDP-TESTRUN {json}` with every path's `prog_ns` and
/// `floor_prog_ns`, which `cargo xtask bench-xdp` puts into its RESULT line.
#[test]
#[ignore = "a benchmark: `cargo xtask bench-xdp` runs it"]
fn bench_ns_per_packet() {
    preconditions();
    let runs: usize = std::env::var("XDPTURN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
        .max(100);
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let all = channels();
        let tx = same_side();
        let (a, b) = same_relay_pair();
        for c in all.iter().chain([&tx, &a, &b]) {
            c.bind(&dp);
        }
        // Send and Data indications: an allocation with a permission and no channel.
        let ind = Channel {
            name: "indications",
            client: sa("192.0.2.10:40010"),
            listener: sa("192.0.2.1:3478"),
            channel: 0x4010,
            relay: sa("198.51.100.1:50010"),
            peer: sa("198.51.100.20:6010"),
            client_side: XC,
            peer_side: XP,
        };
        dp.install_allocation(&ind.tuple(), &[ind.relay()]).unwrap();
        dp.install_permission(&ind.tuple(), &ind.relay(), ind.peer.ip())
            .unwrap();

        let data = [0x5Au8; 100];
        let o = Opts::default();
        let to_peer = ("xp0", MAC_P, PEER_MAC);
        let to_client = ("xc0", MAC_C, CLIENT_MAC);
        let mut paths = Vec::new();
        for (c, c2p, p2c) in [
            (&all[0], "channel_c2p_v4", "channel_p2c_v4"),
            (&all[1], "channel_c2p_v6", "channel_p2c_v6"),
        ] {
            let cd = channel_data(c.channel, &data, &[]);
            paths.push(BenchPath::new(
                c2p,
                format!("ChannelData to the peer, {}", c.name),
                ("xc0", c.sent_by_client(&cd, o)),
                &cd,
                XDP_REDIRECT,
                to_peer,
                c.relay,
                c.peer,
            ));
            paths.push(BenchPath::new(
                p2c,
                format!("to the client as ChannelData, {}", c.name),
                ("xp0", c.sent_by_peer(&data, o)),
                &data,
                XDP_REDIRECT,
                to_client,
                c.listener,
                c.client,
            ));
        }
        // Across families the floor, which never changes family, forwards the same frame in
        // its own family, out of the same interface.
        for (c, key, src, dst) in [
            (
                &all[2],
                "cross_v4_v6",
                "198.51.100.1:50002",
                "198.51.100.20:6002",
            ),
            (
                &all[3],
                "cross_v6_v4",
                "[2001:db8:e::1]:50003",
                "[2001:db8:e::20]:6003",
            ),
        ] {
            let cd = channel_data(c.channel, &data, &[]);
            paths.push(BenchPath::new(
                key,
                format!("ChannelData to the peer, {}", c.name),
                ("xc0", c.sent_by_client(&cd, o)),
                &cd,
                XDP_REDIRECT,
                to_peer,
                sa(src),
                sa(dst),
            ));
        }
        let send = send_indication(
            b"bench-send-1",
            &[Attr::Peer(ind.peer), Attr::Data(data.to_vec())],
            Some(true),
        );
        paths.push(BenchPath::new(
            "send_v4",
            "Send indication (with FINGERPRINT) to the peer, IPv4".into(),
            ("xc0", ind.sent_by_client(&send, o)),
            &send,
            XDP_REDIRECT,
            to_peer,
            ind.relay,
            ind.peer,
        ));
        let from = SocketAddr::new(ind.peer.ip(), 7777);
        paths.push(BenchPath::new(
            "data_v4",
            "to the client as a Data indication, IPv4".into(),
            ("xp0", udp_frame(MAC_P, PEER_MAC, from, ind.relay, &data, o)),
            &data,
            XDP_REDIRECT,
            to_client,
            ind.listener,
            ind.client,
        ));
        let cd = channel_data(a.channel, &data, &[]);
        paths.push(BenchPath::new(
            "same_relay_v4",
            "ChannelData from a client to another client of this relay, IPv4".into(),
            ("xc0", a.sent_by_client(&cd, o)),
            &cd,
            XDP_REDIRECT,
            ("xd0", MAC_D, CLIENT_MAC),
            b.listener,
            b.client,
        ));
        let cd = channel_data(tx.channel, &data, &[]);
        paths.push(BenchPath::new(
            "channel_tx_v4",
            "ChannelData to a peer behind the same interface (XDP_TX), IPv4".into(),
            ("xc0", tx.sent_by_client(&cd, o)),
            &cd,
            XDP_TX,
            ("xc0", MAC_C, NEAR_PEER_MAC),
            tx.relay,
            tx.peer,
        ));

        // What a call costs by itself: the floor object's `pass`, timed the same ways.
        let mut harness = floor::Floor::load(&paths[0].floor);
        let xc0 = ifindex("xc0");
        let pass_single = single_runs(runs, || {
            harness.test_run("pass", &paths[0].frame, xc0, 1).duration
        });
        let pass_repeat = harness
            .test_run("pass", &paths[0].frame, xc0, REPEAT)
            .duration
            .as_nanos() as f64;
        drop(harness);
        // The TC program's baseline: a frame it passes on at once (not IP), timed the same
        // way; the skb a TC test run builds costs more than an XDP frame.
        let arp = [&MAC_C[..], &CLIENT_MAC, &[0x08, 0x06], &[0; 28]].concat();
        let tc_pass_single = single_runs(runs, || {
            let r = dp.test_run_tc(&arp, xc0, 1).unwrap();
            assert_eq!(r.verdict, TC_ACT_UNSPEC, "ARP through the TC program");
            r.duration
        });

        println!(
            "\nBPF_PROG_TEST_RUN, {} data bytes, ns per packet. single: {runs} \
             calls of one run each (after 1000 to warm up), the interquartile mean, the call's \
             timing included; repeat: one call of {REPEAT} repetitions, per repetition; \
             program: minus the same figure of a program that does nothing ({pass_single:.1} ns \
             single, {pass_repeat:.1} \
             ns repeated). The relay's program under repeat: forwarded packets counted over \
             the {REPEAT} repetitions, and their time each (what it measures: passing up the \
             packet the first repetition rewrote).",
            data.len()
        );
        let row = |cells: [&str; 10]| {
            println!(
                "{:<15} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>8}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                cells[6],
                cells[7],
                cells[8],
                cells[9]
            );
        };
        row([
            "path",
            "verdict",
            "ours",
            "floor",
            "floor",
            "ours",
            "floor",
            "ours/",
            "ours rep.",
            "ours rep.",
        ]);
        row([
            "",
            "",
            "single",
            "single",
            "repeat",
            "program",
            "program",
            "floor",
            "forwarded",
            "ns",
        ]);
        let mut json = Vec::new();
        let mut tc_rows = Vec::new();
        for p in &paths {
            let index = ifindex(p.iface);
            let r = dp.test_run(&p.frame, index, 1).unwrap();
            assert_eq!(r.verdict, p.verdict, "{}: {}", p.key, p.what);
            let ours_single = single_runs(runs, || {
                let r = dp.test_run(&p.frame, index, 1).unwrap();
                assert_eq!(r.verdict, p.verdict, "{}", p.key);
                r.duration
            });
            let before = forwarded_count(&dp);
            let ours_repeat = dp.test_run(&p.frame, index, REPEAT).unwrap().duration;
            let ours_repeat_forwarded = forwarded_count(&dp) - before;

            let mut fl = floor::Floor::load(&p.floor);
            let r = fl.test_run("floor", &p.frame, index, 1);
            assert_eq!(r.verdict, p.verdict, "{}: the floor's verdict", p.key);
            assert_eq!(r.output, p.floor_expected, "{}: the floor's packet", p.key);
            assert_checksums(&r.output);
            let floor_single =
                single_runs(runs, || fl.test_run("floor", &p.frame, index, 1).duration);
            let r = fl.test_run("floor", &p.frame, index, REPEAT);
            // Every repetition forwarded: the last one left the forwarded packet.
            assert_eq!(
                (r.verdict, &r.output),
                (p.verdict, &p.floor_expected),
                "{}: the floor after {REPEAT} repetitions",
                p.key
            );
            let floor_repeat = r.duration.as_nanos() as f64;

            let tc_verdict = dp.test_run_tc(&p.frame, index, 1).unwrap().verdict;
            assert_eq!(
                tc_verdict, TC_ACT_REDIRECT,
                "{}: the TC program's verdict",
                p.key
            );
            let tc_single = single_runs(runs, || {
                dp.test_run_tc(&p.frame, index, 1).unwrap().duration
            });
            let tc_prog_ns = tc_single - tc_pass_single;

            let prog_ns = ours_single - pass_single;
            let floor_prog_ns = floor_repeat - pass_repeat;
            let verdict = if p.verdict == XDP_TX {
                "tx"
            } else {
                "redirect"
            };
            row([
                p.key,
                verdict,
                &format!("{ours_single:.0}"),
                &format!("{floor_single:.0}"),
                &format!("{floor_repeat:.0}"),
                &format!("{prog_ns:.0}"),
                &format!("{floor_prog_ns:.0}"),
                &format!("{:.1}x", prog_ns / floor_prog_ns.max(1.0)),
                &ours_repeat_forwarded.to_string(),
                &ours_repeat.as_nanos().to_string(),
            ]);
            json.push(format!(
                "\"{}\": {{\"prog_ns\": {prog_ns:.1}, \"floor_prog_ns\": {floor_prog_ns:.1}, \
                 \"prog_single_ns\": {ours_single:.1}, \"floor_single_ns\": {floor_single:.1}, \
                 \"floor_repeat_ns\": {floor_repeat:.1}, \"pass_single_ns\": {pass_single:.1}, \
                 \"pass_repeat_ns\": {pass_repeat:.1}, \"tc_prog_ns\": {tc_prog_ns:.1}, \
                 \"tc_single_ns\": {tc_single:.1}, \"tc_pass_single_ns\": {tc_pass_single:.1}}}",
                p.key
            ));
            tc_rows.push((p.key, tc_single, tc_prog_ns, prog_ns));
        }
        println!(
            "\nThe TC program (xdpturn_tc), the same paths as an skb at TC ingress: single calls \
             as above; program: minus the same figure of the TC program on a frame it passes on \
             at once (ARP, {tc_pass_single:.1} ns); beside the XDP program's figure above."
        );
        println!(
            "{:<15} {:>9} {:>9} {:>9}",
            "path", "tc single", "tc prog", "xdp prog"
        );
        for (key, single, prog, xdp) in &tc_rows {
            println!("{key:<15} {single:>9.0} {prog:>9.0} {xdp:>9.0}");
        }
        for p in &paths {
            println!("  {:<15} {}", p.key, p.what);
        }

        // Hot: the program under `repeat`, on cycles of bindings whose every repetition is
        // a forwarded packet (see `hot_cycles`), beside the floor under `repeat` on the same
        // frames. The single calls above pay for cold caches after each system call (the
        // program's maps and scratch are touched afresh, the floor touches none); these do not.
        // The program takes one off the TTL (hop limit) of every packet it forwards and passes
        // up those it would take to 0, so a cycle lasts as long as its frame's TTL: the frames
        // start at 255 and each call makes HOT_REPEAT repetitions.
        let mut harness = floor::Floor::load(&paths[0].floor);
        let pass_hot = single_runs(runs, || {
            harness
                .test_run("pass", &paths[0].frame, xc0, HOT_REPEAT)
                .duration
        });
        drop(harness);
        println!(
            "\nHot: {runs} calls of {HOT_REPEAT} repetitions on a cycle of bindings in which \
             every repetition forwards (the interquartile mean of the kernel's time per \
             repetition, minus a program that does nothing: {pass_hot:.1} ns); a 2-cycle \
             alternates its two paths, so its figure is their mean. floor: the mean of the \
             same paths' floor figures above."
        );
        println!(
            "{:<18} {:>10} {:>8} {:>8} {:>7}",
            "cycle", "forwarded", "ours", "floor", "ours/fl"
        );
        let floor_of = |key: &str| {
            json.iter()
                .find(|j| j.starts_with(&format!("\"{key}\"")))
                .and_then(|j| j.split("\"floor_prog_ns\": ").nth(1))
                .and_then(|rest| rest.split(',').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let mut hot_json = Vec::new();
        let stats = dp.program_stats().unwrap();
        println!(
            "the program: {} instructions verified, {} bytes after the verifier's rewrites, {} \
             bytes of machine code",
            stats
                .verified_instructions
                .map_or("?".into(), |n| n.to_string()),
            stats.translated_bytes.map_or("?".into(), |n| n.to_string()),
            stats.jited_bytes
        );
        let stats = dp.tc_program_stats().unwrap();
        println!(
            "the TC program: {} instructions verified, {} bytes after the verifier's rewrites, \
             {} bytes of machine code",
            stats
                .verified_instructions
                .map_or("?".into(), |n| n.to_string()),
            stats.translated_bytes.map_or("?".into(), |n| n.to_string()),
            stats.jited_bytes
        );
        let cycles = hot_cycles(&ns);
        for cycle in &cycles {
            for c in &cycle.bindings {
                c.bind(&dp);
            }
            let index = ifindex(cycle.iface);
            // The first repetitions check the cycle: the frame comes back as it went (but for
            // its MACs, TTL and IP checksum, ID and DF: see `same_datagram`).
            let r = dp.test_run(&cycle.frame, index, cycle.length).unwrap();
            assert!(
                same_datagram(&r.output, &cycle.frame),
                "{}: the cycle returns the frame",
                cycle.key
            );
            let before = forwarded_count(&dp);
            let ours = single_runs(runs, || {
                dp.test_run(&cycle.frame, index, HOT_REPEAT)
                    .unwrap()
                    .duration
            }) - pass_hot;
            let forwarded = forwarded_count(&dp) - before;
            assert_eq!(
                forwarded,
                u64::from(HOT_REPEAT) * (runs as u64 + 1000),
                "{}: every repetition forwards",
                cycle.key
            );
            let floors: Vec<f64> = cycle.paths.iter().filter_map(|k| floor_of(k)).collect();
            let floor = (floors.len() == cycle.paths.len())
                .then(|| floors.iter().sum::<f64>() / floors.len() as f64);
            println!(
                "{:<18} {:>10} {:>8.1} {:>8} {:>7}",
                cycle.key,
                forwarded,
                ours,
                floor.map_or("-".into(), |f| format!("{f:.0}")),
                floor.map_or("-".into(), |f| format!("{:.1}x", ours / f.max(1.0)))
            );
            hot_json.push(format!(
                "\"{}\": {{\"prog_hot_ns\": {ours:.1}, \"paths\": [{}]}}",
                cycle.key,
                cycle
                    .paths
                    .iter()
                    .map(|p| format!("\"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // For a profile of the program hot (`perf record -a` around the benchmark): the first
        // cycle again and again for this many seconds, so that its samples dominate.
        if let Some(secs) = std::env::var("XDPTURN_BENCH_PROFILE_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
        {
            let cycle = &cycles[0];
            let index = ifindex(cycle.iface);
            let until = Instant::now() + Duration::from_secs_f64(secs);
            let mut calls = 0u64;
            while Instant::now() < until {
                dp.test_run(&cycle.frame, index, HOT_REPEAT).unwrap();
                calls += 1;
            }
            println!(
                "profile: {} ran {calls} x {HOT_REPEAT} repetitions in {secs} s",
                cycle.key
            );
        }
        println!("BENCH-XDP-TESTRUN {{{}}}", json.join(", "));
        println!("BENCH-XDP-HOT {{{}}}", hot_json.join(", "));
    });
}

// ---------------------------------------------------------------------------------------------
// Permissions and allocations: what the program needs for Send and Data indications.

fn permission_event(c: &Channel, peer: std::net::IpAddr, installed: bool) -> relay::proto::Event {
    if installed {
        relay::proto::Event::PermissionInstalled {
            tuple: c.tuple(),
            relay: c.relay(),
            peer,
            expires: Instant::now() + Duration::from_secs(300),
        }
    } else {
        relay::proto::Event::PermissionRemoved {
            tuple: c.tuple(),
            relay: c.relay(),
            peer,
        }
    }
}

/// The PEER_TO_CLIENT entry of `c`'s permission for `peer` (port 0).
fn permission_entry(
    dp: &Dataplane,
    c: &Channel,
    peer: std::net::IpAddr,
) -> Option<relay::dataplane::PeerEntry> {
    dp.peer_entry(c.relay, SocketAddr::new(peer, 0)).unwrap()
}

#[test]
fn permissions_and_allocations_follow_install_refresh_remove_and_fill_up() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&XdpConfig {
            max_channels: 2,
            ..config(XdpMode::Skb)
        })
        .unwrap();
        let all = channels();
        let c = all[0];
        let peer = c.peer.ip();

        // An allocation: its client's 5-tuple maps to its relayed address.
        let installed = relay::proto::Event::AllocationInstalled {
            tuple: c.tuple(),
            relays: vec![c.relay()],
        };
        dp.apply(&installed).unwrap();
        dp.apply(&installed).unwrap(); // a refresh changes nothing
        assert_eq!(dp.installed_allocations(), 1);
        assert_eq!(
            dp.allocation_entry(c.client, c.listener).unwrap(),
            Some(vec![c.relay])
        );
        // A dual allocation has one relayed address per family.
        let d = all[1];
        let v4 = Relay {
            addr: sa("198.51.100.1:50011"),
            ..c.relay()
        };
        dp.install_allocation(&d.tuple(), &[v4, d.relay()]).unwrap();
        assert_eq!(
            dp.allocation_entry(d.client, d.listener).unwrap(),
            Some(vec![v4.addr, d.relay])
        );

        // A permission: the peer's IP with port 0, to the client, channel 0, with its own
        // counter slot and the next hops of client and peer.
        assert_eq!(dp.next_hop(peer).unwrap(), None);
        dp.apply(&permission_event(&c, peer, true)).unwrap();
        let entry = permission_entry(&dp, &c, peer).unwrap();
        assert_eq!(
            (entry.client, entry.listener, entry.channel),
            (c.client, c.listener, 0)
        );
        assert!(dp.next_hop(peer).unwrap().is_some());
        assert!(dp.next_hop(c.client.ip()).unwrap().is_some());
        dp.apply(&permission_event(&c, peer, true)).unwrap(); // a refresh
        assert_eq!(permission_entry(&dp, &c, peer), Some(entry));
        assert_eq!(dp.installed_permissions(), 1);

        // A channel to the same peer lives beside it, with another slot.
        c.bind(&dp);
        let channel_entry = dp.peer_entry(c.relay, c.peer).unwrap().unwrap();
        assert_eq!(channel_entry.channel, c.channel);
        assert_ne!(channel_entry.slot, entry.slot);
        assert_eq!(permission_entry(&dp, &c, peer), Some(entry));
        // Without the channel the permission keeps its entry and its next hops.
        dp.unbind_channel(&c.tuple(), c.channel, &c.relay(), c.peer)
            .unwrap();
        assert_eq!(dp.peer_entry(c.relay, c.peer).unwrap(), None);
        assert_eq!(permission_entry(&dp, &c, peer), Some(entry));
        assert!(dp.next_hop(peer).unwrap().is_some());

        // Another client cannot hold the same peer key, nor can a permission be had over TCP
        // or with a relayed address of another family than the peer's.
        let mut other = c;
        other.client = sa("192.0.2.10:40099");
        let err = dp
            .install_permission(&other.tuple(), &other.relay(), peer)
            .unwrap_err();
        assert_eq!(err.metric_label(), "conflict", "{err}");
        let mut tcp = c.tuple();
        tcp.transport = Transport::Tcp;
        let err = dp.install_permission(&tcp, &c.relay(), peer).unwrap_err();
        assert_eq!(err.metric_label(), "transport");
        dp.remove_permission(&tcp, &c.relay(), peer).unwrap();
        let err = dp.install_allocation(&tcp, &[c.relay()]).unwrap_err();
        assert_eq!(err.metric_label(), "transport");
        dp.remove_allocation(&tcp).unwrap();
        let err = dp
            .install_permission(&c.tuple(), &c.relay(), "2001:db8:e::20".parse().unwrap())
            .unwrap_err();
        assert_eq!(err.metric_label(), "address");

        // Full: at most max_channels permissions and allocations; the maps are as before.
        let second: std::net::IpAddr = "198.51.100.21".parse().unwrap();
        let third: std::net::IpAddr = "198.51.100.22".parse().unwrap();
        dp.install_permission(&c.tuple(), &c.relay(), second)
            .unwrap();
        let err = dp
            .install_permission(&c.tuple(), &c.relay(), third)
            .unwrap_err();
        assert!(
            matches!(
                err,
                DataplaneError::MapFull {
                    what: "permission",
                    max: 2
                }
            ),
            "{err}"
        );
        assert_eq!(err.metric_label(), "full");
        assert_eq!(permission_entry(&dp, &c, third), None);
        let e = all[2];
        let err = dp.install_allocation(&e.tuple(), &[e.relay()]).unwrap_err();
        assert!(
            matches!(
                err,
                DataplaneError::MapFull {
                    what: "allocation",
                    max: 2
                }
            ),
            "{err}"
        );
        assert_eq!(dp.allocation_entry(e.client, e.listener).unwrap(), None);
        // Channels still have their own room beside the permissions.
        for ch in &all[..2] {
            ch.bind(&dp);
        }
        assert_eq!(dp.bound_channels(), 2);

        // Removed: the entries go, and the next hops nobody uses any more; removing again,
        // or what was never there, is fine.
        dp.apply(&permission_event(&c, second, false)).unwrap();
        assert_eq!(permission_entry(&dp, &c, second), None);
        dp.apply(&permission_event(&c, second, false)).unwrap();
        dp.apply(&permission_event(&c, third, false)).unwrap();
        dp.install_permission(&c.tuple(), &c.relay(), third)
            .unwrap();
        assert!(permission_entry(&dp, &c, third).is_some());
        dp.apply(&permission_event(&c, peer, false)).unwrap();
        assert_eq!(permission_entry(&dp, &c, peer), None);
        // Channel all[0] still sends to the peer; once it is unbound too, nothing does.
        assert!(dp.next_hop(peer).unwrap().is_some());
        dp.unbind_channel(&c.tuple(), c.channel, &c.relay(), c.peer)
            .unwrap();
        assert_eq!(dp.next_hop(peer).unwrap(), None);
        let removed = relay::proto::Event::AllocationRemoved { tuple: c.tuple() };
        dp.apply(&removed).unwrap();
        dp.apply(&removed).unwrap();
        assert_eq!(dp.allocation_entry(c.client, c.listener).unwrap(), None);
        assert_eq!(dp.installed_allocations(), 1);
        dp.install_allocation(&e.tuple(), &[e.relay()]).unwrap();
        assert_eq!(
            dp.allocation_entry(e.client, e.listener).unwrap(),
            Some(vec![e.relay])
        );
        assert_eq!(dp.installed_permissions(), 1);
    });
}

/// The CHANNEL_STATS map of the program attached to `iface` in `ns`, opened by its id: the
/// tests count into it as the program counts indications.
fn channel_stats_of(
    ns: &Netns,
    iface: &str,
) -> aya::maps::PerCpuArray<aya::maps::MapData, relay_common::ChannelStats> {
    let shown = output("ip", &["-n", &ns.name, "-d", "link", "show", "dev", iface]);
    let id: u32 = shown
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program id in {shown}"));
    let program = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .unwrap();
    for map_id in program.map_ids().unwrap().unwrap() {
        let map = aya::maps::MapData::from_id(map_id).unwrap();
        if map.info().unwrap().name_as_str() == Some("CHANNEL_STATS") {
            return aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(map)).unwrap();
        }
    }
    panic!("program {id} has no CHANNEL_STATS");
}

/// Adds to a counter slot as the program does: client to peer on the first CPU, peer to
/// client on the last.
fn count(
    stats: &mut aya::maps::PerCpuArray<aya::maps::MapData, relay_common::ChannelStats>,
    slot: u32,
    client_to_peer_bytes: u64,
    peer_to_client_bytes: u64,
) {
    let mut values: Vec<_> = stats.get(&slot, 0).unwrap().iter().copied().collect();
    if client_to_peer_bytes > 0 {
        values[0].client_to_peer_packets += 1;
        values[0].client_to_peer_bytes += client_to_peer_bytes;
    }
    let last = values.len() - 1;
    if peer_to_client_bytes > 0 {
        values[last].peer_to_client_packets += 1;
        values[last].peer_to_client_bytes += peer_to_client_bytes;
    }
    stats
        .set(slot, aya::maps::PerCpuValues::try_from(values).unwrap(), 0)
        .unwrap();
}

#[test]
fn permission_counters_are_taken_as_traffic_and_start_from_zero() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let mut stats = channel_stats_of(&ns, "xc0");
        let all = channels();
        let (c, d) = (all[0], all[1]);
        let (peer, other_peer) = (c.peer.ip(), "198.51.100.21".parse().unwrap());
        dp.install_permission(&c.tuple(), &c.relay(), peer).unwrap();
        dp.install_permission(&c.tuple(), &c.relay(), other_peer)
            .unwrap();
        dp.install_permission(&d.tuple(), &d.relay(), d.peer.ip())
            .unwrap();
        c.bind(&dp);
        let slot = |p| permission_entry(&dp, &c, p).unwrap().slot;

        // Send indications (client to peer) and Data indications (peer to client), both
        // directions, every CPU; the channel's own traffic is reported apart.
        count(&mut stats, slot(peer), 100, 50);
        count(&mut stats, slot(other_peer), 0, 7);
        let channel_slot = dp.peer_entry(c.relay, c.peer).unwrap().unwrap().slot;
        count(&mut stats, channel_slot, 3, 0);
        assert_eq!(dp.take_traffic(|_| false).unwrap(), [], "not the caller's");
        let mut taken = dp.take_traffic(|t| *t == c.tuple()).unwrap();
        taken.sort_by_key(|t| (t.channel, t.bytes()));
        let flow = |bytes| Traffic {
            packets: u64::from(bytes > 0),
            bytes,
        };
        let permission = |c2p, p2c| ChannelTraffic {
            tuple: c.tuple(),
            channel: ChannelTraffic::PERMISSION,
            client_to_peer: flow(c2p),
            peer_to_client: flow(p2c),
        };
        assert_eq!(
            taken,
            [
                permission(0, 7),
                permission(100, 50),
                ChannelTraffic {
                    tuple: c.tuple(),
                    channel: c.channel,
                    client_to_peer: flow(3),
                    peer_to_client: flow(0),
                }
            ]
        );
        assert!(taken[0].is_permission() && !taken[2].is_permission());
        assert_eq!(dp.take_traffic(|_| true).unwrap(), [], "nothing new");
        count(&mut stats, slot(peer), 10, 0);
        assert_eq!(dp.take_traffic(|_| true).unwrap(), [permission(10, 0)]);
        let counters = dp.counters().unwrap();
        let mine = counters
            .permissions
            .iter()
            .find(|p| p.binding.peer == peer && p.binding.client == c.client)
            .unwrap();
        assert_eq!(
            (mine.client_to_peer, mine.peer_to_client),
            (
                Traffic {
                    packets: 2,
                    bytes: 110
                },
                Traffic {
                    packets: 1,
                    bytes: 50
                }
            )
        );
        assert_eq!(counters.permissions.len(), 3);

        // Removed (what it counted since the last read comes back with the removal) and
        // installed again (the slot reused): from zero.
        let old = slot(peer);
        count(&mut stats, slot(peer), 0, 9);
        assert_eq!(
            dp.remove_permission(&c.tuple(), &c.relay(), peer).unwrap(),
            Some(permission(0, 9))
        );
        assert_eq!(dp.take_traffic(|_| true).unwrap(), []);
        dp.install_permission(&c.tuple(), &c.relay(), peer).unwrap();
        assert_eq!(slot(peer), old, "the freed slot is reused");
        assert_eq!(dp.take_traffic(|_| true).unwrap(), []);
        count(&mut stats, slot(peer), 1, 1);
        assert_eq!(dp.take_traffic(|_| true).unwrap(), [permission(1, 1)]);
    });
}

// ---------------------------------------------------------------------------------------------
// The TC program.

/// `TC_ACT_REDIRECT`, and `TC_ACT_UNSPEC` (`TCX_NEXT`) as the `u32` a test run returns.
const TC_ACT_REDIRECT: u32 = relay_common::verdict::TC_ACT_REDIRECT as u32;
const TC_ACT_UNSPEC: u32 = relay_common::verdict::TC_ACT_UNSPEC as u32;

/// Runs a frame through the TC program as an skb received on `iface`.
fn run_tc(dp: &Dataplane, iface: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let r = dp.test_run_tc(frame, ifindex(iface), 1).unwrap();
    (r.verdict, r.output)
}

/// The TC program (`xdpturn_tc`, the same pipeline on an skb) forwards what the XDP program
/// forwards, every family pair, both directions, channels and indications, with complete,
/// absent and partial checksums: each packet equals, byte for byte, the one built from scratch
/// (a partial one once finished as the offload would), leaves by `bpf_redirect`
/// (`TC_ACT_REDIRECT`) to an attached interface and is counted. What is not its own goes on
/// unchanged (`TC_ACT_UNSPEC`, for the next program on the hook or the stack).
#[test]
fn the_tc_program_forwards_what_the_xdp_program_forwards() {
    preconditions();
    let ns = topology();
    ns.enter(|| {
        // Attached in skb mode, which puts the interfaces in INTERFACES: the TC program
        // redirects only to those.
        let dp = Dataplane::load(&config(XdpMode::Skb)).unwrap();
        let all: Vec<Channel> = channels().into_iter().chain([same_side()]).collect();
        for c in &all {
            c.bind(&dp);
        }
        let before = dp.counters().unwrap().verdicts;
        let mut forwarded_count = 0;
        for c in &all {
            for data_len in [0usize, 1, 5, 100, 513, 1201] {
                let data: Vec<u8> = (0..data_len).map(|i| (i * 13 + 7) as u8).collect();
                let pad = [0xA5, 0x5A, 0xC3];
                let padding = &pad[..(4 - data_len % 4) % 4];
                let o = Opts {
                    tos: 0x28,
                    flow_label: 0x12345,
                    ipv4_id: 0x1234,
                    df: data_len % 2 == 1,
                    pad_frame_to: 60,
                    ..Opts::default()
                };
                let to_peer = c.sent_by_client(&channel_data(c.channel, &data, padding), o);
                let to_client = c.sent_by_peer(&data, o);
                for (what, side, frame, expected) in [
                    (
                        "to peer",
                        c.client_side.0,
                        &to_peer,
                        c.expected_at_peer(&data, o),
                    ),
                    (
                        "to client",
                        c.peer_side.0,
                        &to_client,
                        c.expected_at_client(&data, o),
                    ),
                ] {
                    let case = format!("{} {what}, {data_len} bytes", c.name);
                    assert_eq!(
                        run_tc(&dp, side, frame),
                        (TC_ACT_REDIRECT, expected.clone()),
                        "{case}"
                    );
                    let (v, out) = run_tc(&dp, side, &partial(frame));
                    assert_eq!(v, TC_ACT_REDIRECT, "{case}, partial");
                    let (udp_at, seed) = pseudo_header_sum(&out);
                    assert_eq!(
                        out[udp_at + 6..udp_at + 8],
                        seed.to_be_bytes(),
                        "{case}: still partial"
                    );
                    assert_eq!(finish_partial(&out, udp_at), expected, "{case}, partial");
                    forwarded_count += 2;
                }
            }
        }
        // IPv4 without a UDP checksum stays without one.
        let c = &all[0];
        let o = Opts {
            no_checksum: true,
            ..Opts::default()
        };
        let frame = c.sent_by_client(&channel_data(c.channel, b"abc", &[]), o);
        assert_eq!(
            run_tc(&dp, "xc0", &frame),
            (TC_ACT_REDIRECT, c.expected_at_peer(b"abc", o))
        );
        forwarded_count += 1;

        // Indications: a Send indication leaves as its data; a datagram from another port
        // of a permitted peer arrives as a Data indication.
        for c in &all[..4] {
            dp.install_allocation(&c.tuple(), &[c.relay()]).unwrap();
            dp.install_permission(&c.tuple(), &c.relay(), c.peer.ip())
                .unwrap();
            let data = b"indicated media".to_vec();
            let o = Opts {
                pad_frame_to: 60,
                ..Opts::default()
            };
            let send = send_indication(
                b"tc-sends-too",
                &[Attr::Peer(c.peer), Attr::Data(data.clone())],
                Some(true),
            );
            let frame = c.sent_by_client(&send, o);
            assert_eq!(
                run_tc(&dp, c.client_side.0, &frame),
                (TC_ACT_REDIRECT, c.expected_at_peer(&data, o)),
                "{}: Send",
                c.name
            );
            let from = SocketAddr::new(c.peer.ip(), 7777);
            let (_, iface_mac, peer_mac) = c.peer_side;
            let frame = udp_frame(iface_mac, peer_mac, from, c.relay, &data, o);
            let (v, out) = run_tc(&dp, c.peer_side.0, &frame);
            let (_, iface_mac, client_mac) = c.client_side;
            let expected = udp_frame(
                client_mac,
                iface_mac,
                c.listener,
                c.client,
                &data_indication(&txid_of(&out), from, &data),
                forwarded(o, c.peer.is_ipv6(), c.client.is_ipv6()),
            );
            assert_eq!((v, &out), (TC_ACT_REDIRECT, &expected), "{}: Data", c.name);
            assert_checksums(&out);
            forwarded_count += 2;
        }

        // Not its own: a Binding request to the listener, and ChannelData on a channel that
        // is not bound, go on unchanged.
        let binding = [
            0u8, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let frame = c.sent_by_client(&binding, Opts::default());
        assert_eq!(run_tc(&dp, "xc0", &frame), (TC_ACT_UNSPEC, frame.clone()));
        let frame = c.sent_by_client(&channel_data(0x4FFF, b"who", &[0]), Opts::default());
        assert_eq!(run_tc(&dp, "xc0", &frame), (TC_ACT_UNSPEC, frame.clone()));

        let after = dp.counters().unwrap().verdicts;
        let forwarded = (after.get(Verdict::ForwardedTx) + after.get(Verdict::ForwardedRedirect))
            - (before.get(Verdict::ForwardedTx) + before.get(Verdict::ForwardedRedirect));
        assert_eq!(forwarded, forwarded_count);
        assert_eq!(
            after.get(Verdict::PassStun) - before.get(Verdict::PassStun),
            1
        );
    });
}
