//! Both parties of a call on one relay, relayed in userspace (no XDP fast path): what one
//! allocation sends to the other's relayed address is handed to the other allocation inside
//! the process, with that allocation's rules (permission, channel or Data indication), not
//! sent through the loopback to a socket of the relay's own.

mod common;

use std::net::SocketAddr;

use common::Relay;
use common::turn::TurnClient;
use relay::stun::{Data, Message, XorPeerAddress};

const REALM: &str = "example.org";

/// The relay with `workers` workers, the test's user, loopback peers allowed.
fn start_relay(workers: &str) -> Relay {
    Relay::start(&[
        "--workers",
        workers,
        "--realm",
        REALM,
        "--user",
        "alice:wonderland",
        "--allow-peer",
        "127.0.0.1",
    ])
}

fn client(relay: &Relay) -> TurnClient {
    TurnClient::new(relay.v4(), "127.0.0.1:0", "alice", "wonderland", REALM)
}

/// A ChannelData message, without padding (optional over UDP; the relay sends none).
fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut m = channel.to_be_bytes().to_vec();
    m.extend_from_slice(&(data.len() as u16).to_be_bytes());
    m.extend_from_slice(data);
    m
}

/// The next datagram `c` receives from the relay.
fn receive(c: &TurnClient) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let (len, from) = c
        .socket
        .recv_from(&mut buf)
        .expect("a datagram from the relay");
    assert_eq!(from, c.server);
    buf[..len].to_vec()
}

#[test]
fn data_between_two_allocations_of_one_relay_is_handed_over_in_the_process() {
    // One worker, so that both clients' allocations are in the one protocol shard that hands
    // over (between workers, data still goes through the loopback).
    let relay = start_relay("1");
    let (mut a, mut b) = (client(&relay), client(&relay));
    let a_relayed = a.allocate().expect("A allocates");
    let b_relayed = b.allocate().expect("B allocates");
    // A binds a channel to B's relayed address (Chromium); B only permits A's (Firefox).
    assert_eq!(a.channel_bind(0x4000, b_relayed), None, "A's ChannelBind");
    assert_eq!(b.create_permission(a_relayed), None, "B's CreatePermission");

    for i in 0..20 {
        // A to B: ChannelData in, a Data indication from A's relayed address out.
        let payload = format!("a to b {i}");
        a.socket
            .send_to(&channel_data(0x4000, payload.as_bytes()), a.server)
            .expect("send");
        let got = receive(&b);
        let m = Message::decode(&got).expect("a STUN message");
        let from: SocketAddr = m
            .get::<XorPeerAddress>()
            .and_then(Result::ok)
            .expect("XOR-PEER-ADDRESS")
            .0;
        assert_eq!(from, a_relayed, "from A's relayed address");
        let data = m.get::<Data>().and_then(Result::ok).expect("DATA");
        assert_eq!(data.0, payload.as_bytes());
        // B to A: a Send indication in, ChannelData on A's channel out.
        let payload = format!("b to a {i}");
        b.send(a_relayed, payload.as_bytes());
        assert_eq!(receive(&a), channel_data(0x4000, payload.as_bytes()));
    }
    assert_eq!(
        relay.metric("xdpturn_userspace_same_relay_packets_total"),
        40.0,
        "every datagram handed over in the process"
    );
    // And counted as relayed both ways, as through the loopback.
    for direction in ["client_to_peer", "peer_to_client"] {
        let n = relay.metric(&format!(
            r#"xdpturn_relayed_packets_total{{datapath="userspace",direction="{direction}",transport="udp"}}"#
        ));
        assert_eq!(n, 40.0, "{direction}");
    }
}

/// With several workers, the two allocations of a pair are often on different ones: the
/// datagram goes to the other worker's inbox instead, still without the loopback. Six pairs
/// (each client's worker is the kernel's choice): every datagram is handed over either way.
#[test]
fn across_workers_too() {
    let relay = start_relay("2");
    let mut handed = 0.0;
    for pair in 0..6 {
        let (mut a, mut b) = (client(&relay), client(&relay));
        let a_relayed = a.allocate().expect("A allocates");
        let b_relayed = b.allocate().expect("B allocates");
        assert_eq!(a.channel_bind(0x4001, b_relayed), None, "A's ChannelBind");
        assert_eq!(b.channel_bind(0x4002, a_relayed), None, "B's ChannelBind");
        for i in 0..5 {
            let payload = format!("pair {pair}, {i}");
            a.socket
                .send_to(&channel_data(0x4001, payload.as_bytes()), a.server)
                .expect("send");
            assert_eq!(receive(&b), channel_data(0x4002, payload.as_bytes()));
            b.socket
                .send_to(&channel_data(0x4002, payload.as_bytes()), b.server)
                .expect("send");
            assert_eq!(receive(&a), channel_data(0x4001, payload.as_bytes()));
            handed += 2.0;
        }
    }
    assert_eq!(
        relay.metric("xdpturn_userspace_same_relay_packets_total"),
        handed,
        "every datagram handed over in the process"
    );
}
