//! A relay under a flood, with a legitimate call through it: the call loses nothing.
//!
//! A test binary of its own, so that its flood does not take the CPU from other tests' clients
//! (cargo runs test binaries one after the other, the tests of one binary in parallel).

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::Relay;
use common::turn::allocate_request;
use common::uclient::{echo_peer, uclient};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A call goes on untouched while the relay is flooded: coturn's uclient relays through a
/// channel (two clients, media pace) while 200 loopback source addresses send, paced at about
/// 10,000 datagrams a second (50 every 5 ms) for as long as the call lasts, junk, unauthenticated Allocates and
/// Allocates with a wrong password (each with a nonce the relay gave its source). Every message
/// of the call comes back; the junk is dropped and counted, the wrong passwords past each
/// source's failure budget dropped unanswered.
#[test]
fn a_call_loses_nothing_during_a_flood() {
    use relay::stun::{Message, Nonce};
    let relay = Relay::start_logging(
        &["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
        &[
            "--realm",
            "example.org",
            "--user",
            "alice:wonderland",
            "--allow-peer",
            "127.0.0.1",
            "--workers",
            "2",
        ],
        "info",
    );
    let server = relay.v4();
    let (_peer, peer) = echo_peer("127.0.0.1");
    let allocate = |nonce: Option<&str>| {
        allocate_request([9; 12], nonce.map(|n| ("alice", "example.org", "guess", n)))
    };
    let unauthenticated = allocate(None);
    let sockets: Vec<UdpSocket> = (2..=201u32)
        .filter_map(|i| UdpSocket::bind(format!("127.0.{}.{}:0", i / 250, i % 250 + 1)).ok())
        .collect();
    assert!(sockets.len() >= 100, "loopback source addresses");
    // Each source's wrong password goes with a nonce the relay gave it, so that it is checked
    // (and fails) rather than answered 438 for a stale nonce.
    let mut buf = [0u8; 1500];
    let wrong_passwords: Vec<Vec<u8>> = sockets
        .iter()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.send_to(&unauthenticated, server).expect("send");
            let nonce = loop {
                let (n, _) = s.recv_from(&mut buf).expect("a challenge");
                if let Ok(m) = Message::decode(&buf[..n])
                    && let Some(Ok(Nonce(nonce))) = m.get::<Nonce>()
                {
                    break nonce.to_owned();
                }
            };
            allocate(Some(&nonce))
        })
        .collect();

    let call = std::thread::spawn(move || {
        uclient(
            server,
            peer,
            &["-u", "alice", "-w", "wonderland", "-m", "2", "-n", "400"],
            TIMEOUT,
        )
    });
    let started = Instant::now();
    let mut sent = 0u64;
    // 50 datagrams every 5 ms, until the call ends.
    while !call.is_finished() {
        for _ in 0..50 {
            let i = sent as usize % sockets.len();
            let datagram: &[u8] = match sent % 3 {
                0 => &[0xFF; 64],
                1 => &unauthenticated,
                _ => &wrong_passwords[i],
            };
            let s = &sockets[i];
            if s.send_to(datagram, server).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let stats = call.join().expect("the call's thread");
    let relayed = |direction: &str| {
        relay.metric(&format!(
            r#"xdpturn_relayed_packets_total{{datapath="userspace",direction="{direction}",transport="udp"}}"#
        ))
    };
    stats.assert_all_arrived(
        800,
        &format!(
            "\n(during a flood of {sent} datagrams in {flood_secs:.1} s; the relay relayed {} \
             to the peer and {} back)",
            relayed("client_to_peer"),
            relayed("peer_to_client"),
        ),
    );
    let junk = relay.metric(r#"xdpturn_dropped_packets_total{reason="not_stun",transport="udp"}"#);
    let challenged =
        relay.metric(r#"xdpturn_requests_total{method="allocate",result="401",transport="udp"}"#);
    println!(
        "flood: {sent} datagrams in {flood_secs:.1} s ({:.0}/s) from {} addresses; the call: {} \
         sent, {} back; junk dropped: {junk}; Allocates answered 401: {challenged}",
        sent as f64 / flood_secs,
        sockets.len(),
        stats.sent,
        stats.received
    );
    assert!(
        junk >= (sent / 3) as f64 * 0.9,
        "junk counted: {junk} of {sent}"
    );
    let failed = relay.metric(r#"xdpturn_auth_failures_total{reason="wrong_password"}"#);
    let limited = relay
        .metric(r#"xdpturn_dropped_packets_total{reason="auth_rate_limited",transport="udp"}"#);
    println!(
        "flood: wrong passwords: {failed} checked and refused, {limited} dropped unanswered past \
         the failure budget"
    );
    assert!(
        failed > 0.0 && limited > failed,
        "most wrong passwords are dropped past the budget: {failed} refused, {limited} dropped"
    );
}
