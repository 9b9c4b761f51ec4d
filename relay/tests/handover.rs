//! Two relay processes on the same ports, as two relay pods with hostNetwork on one node while
//! one replaces the other: the new relay takes the ports over (serve/handover.rs) while
//! calls run through the old one, which then drains. coturn's `turnutils_uclient` calls
//! (UDP channels, UDP Send indications, TCP) through the old relay lose nothing, new calls
//! reach the new relay at once, whichever of SIGTERM and the new relay's start comes first.
//! A control case shows what the order prevents: a socket that joins the ports' reuseport
//! group while a call runs takes the call's packets.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Relay;
use common::uclient::{Stats, echo_peer, try_uclient, uclient};

const TIMEOUT: Duration = Duration::from_secs(180);
/// How long the control case's call may take: 8 x 300 messages take a few seconds when nothing
/// is taken from them.
const CONTROL_CALL: Duration = Duration::from_secs(60);

/// One test at a time: each runs two relays and a dozen uclient clients at media pace, and
/// together on a busy machine they starve the clients of CPU until a socket's buffer
/// overflows, which uclient counts as a lost message.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}
const CREDS: [&str; 4] = ["-u", "alice", "-w", "wonderland"];
/// Messages per client in a long call: at uclient's 20 ms pace, 20 s.
const LONG: &str = "1000";

/// A relay port range of its own for each test (`test` = 0, 1, 2), not met by parallel tests;
/// the two relays of a test share theirs, as two pods of one TurnCluster do.
fn port_range(test: u16) -> (String, String) {
    let base = 30_000 + (std::process::id() % 100) as u16 * 160 + test * 40;
    (base.to_string(), (base + 39).to_string())
}

/// A relay on `listen` (port 0 for a fresh one) with two workers (clients spread over both).
fn relay(listen: SocketAddr, metrics: SocketAddr, range: &(String, String)) -> Relay {
    Relay::start_with(
        &[
            "--listen",
            &listen.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
        ],
        &[
            "--realm",
            "example.org",
            "--user",
            "alice:wonderland",
            "--allow-peer",
            "127.0.0.1",
            "--workers",
            "2",
            "--drain-timeout",
            "300",
            "--min-port",
            &range.0,
            "--max-port",
            &range.1,
        ],
    )
}

/// A relay on a fresh loopback port (metrics too) with the relay ports of `test`, and those.
fn loopback_relay(test: u16) -> (Relay, (String, String)) {
    let range = port_range(test);
    let any = "127.0.0.1:0".parse().expect("addr");
    (relay(any, any, &range), range)
}

/// A call through `server` in a thread of its own: `args` for uclient, besides the credentials.
fn call(server: SocketAddr, peer: SocketAddr, args: &'static [&'static str]) -> JoinHandle<Stats> {
    std::thread::spawn(move || uclient(server, peer, &[&CREDS[..], args].concat(), TIMEOUT))
}

/// The long calls of a test: 4 UDP clients with channels, 2 with Send indications, 2 over TCP.
fn long_calls(server: SocketAddr, peer: SocketAddr) -> Vec<(&'static str, JoinHandle<Stats>)> {
    vec![
        ("udp channels", call(server, peer, &["-m", "4", "-n", LONG])),
        (
            "udp indications",
            call(server, peer, &["-s", "-m", "2", "-n", LONG]),
        ),
        ("tcp", call(server, peer, &["-t", "-m", "2", "-n", LONG])),
    ]
}

/// Waits until `relay` has `n` allocations.
fn wait_allocations(relay: &Relay, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while relay.metric("xdpturn_allocations") < n {
        assert!(
            Instant::now() < deadline,
            "{n} allocations not made:\n{}",
            relay.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The new relay took over from the old one, which gave its UDP clients sockets of their own.
fn assert_pinned(new: &Relay) {
    let line = new.wait_for_log(&["taking over", "pinned="], TIMEOUT);
    let pinned: u32 = common::field(&line, "pinned=").parse().expect("pinned=<n>");
    assert!(
        pinned >= 6,
        "the old relay's UDP clients were pinned: {line}"
    );
}

/// A short call with 2 clients: its statistics.
fn short_call(server: SocketAddr, peer: SocketAddr) -> Stats {
    uclient(
        server,
        peer,
        &[&CREDS[..], &["-m", "2", "-n", "20"]].concat(),
        TIMEOUT,
    )
}

/// Every long call ended with every message back.
fn assert_long_calls(calls: Vec<(&'static str, JoinHandle<Stats>)>, old: &Relay, new: &Relay) {
    let logs = format!(
        "\nold relay:\n{}\nnew relay:\n{}",
        old.log_lines().join("\n"),
        new.log_lines().join("\n")
    );
    for (what, call) in calls {
        let stats = call.join().expect("the call's thread");
        assert!(
            stats.exited_ok,
            "{what}: uclient failed:\n{}{logs}",
            stats.text
        );
        stats.assert_all_arrived(2000, &format!("({what}){logs}"));
    }
}

/// The new relay is started while calls run through the old one, then the old one gets
/// SIGTERM (the order a replacement follows): the calls lose nothing; new calls, during the
/// drain and after the old relay exits, are served by the new relay.
#[test]
fn a_new_relay_takes_the_ports_over_during_calls() {
    takes_over("127.0.0.1:0", 0);
}

/// The same on the wildcard address (the relay's default, 0.0.0.0:3478): the clients' own
/// sockets are bound to the address each client reached.
#[test]
fn a_new_relay_takes_the_wildcard_ports_over_during_calls() {
    takes_over("0.0.0.0:0", 3);
}

fn takes_over(listen: &str, test: u16) {
    let _one = one_at_a_time();
    let range = port_range(test);
    let old = relay(
        listen.parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
        &range,
    );
    let port = old.v4().port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let (_peer, peer) = echo_peer("127.0.0.1");
    let calls = long_calls(server, peer);
    wait_allocations(&old, 8.0);
    std::thread::sleep(Duration::from_secs(2));

    // Binds the same UDP, TCP and HTTP ports; returns once the old relay closed its listeners.
    let new = relay(old.v4(), old.metrics, &range);
    assert_eq!(new.v4(), old.v4());
    assert_pinned(&new);
    old.wait_for_log(&["listeners closed"], TIMEOUT);
    // The probes reach the new relay only (the old one drains, and would answer 503).
    for _ in 0..20 {
        assert_eq!(new.http_get("/readyz").0, 200, "readyz after the hand-over");
    }

    old.signal("TERM");
    old.wait_for_log(&["draining", "SIGTERM"], TIMEOUT);
    for _ in 0..3 {
        let stats = short_call(server, peer);
        stats.assert_all_arrived(40, "\n(a new call during the drain)");
    }
    assert!(
        new.metric(r#"xdpturn_requests_total{method="allocate",result="success",transport="udp"}"#)
            >= 6.0,
        "the new calls were served by the new relay"
    );
    assert_eq!(
        old.log_lines()
            .iter()
            .filter(|l| l.contains("Insufficient Capacity"))
            .count(),
        0,
        "the old relay refused no one"
    );

    let mut old = old;
    assert_long_calls(calls, &old, &new);
    // uclient leaves its allocations to expire: a second SIGTERM ends the old relay (and
    // with it its clients' sockets, which leave the new relay's clients where they are).
    stop(&mut old);
    for _ in 0..2 {
        let stats = short_call(server, peer);
        stats.assert_all_arrived(40, "\n(a call after the old relay exited)");
    }
}

/// A second SIGTERM: the old relay, still draining, exits at once.
fn stop(old: &mut Relay) {
    assert!(
        old.wait_exit(Duration::from_millis(100)).is_none(),
        "the old relay drains until its allocations end or a second SIGTERM"
    );
    old.signal("TERM");
    let status = old.wait_exit(TIMEOUT).expect("the old relay exits");
    assert!(status.success());
}

/// SIGTERM first, with no new relay yet: the old relay drains as a single relay always did
/// (keeps its listeners and refuses new allocations); then the new relay starts and takes
/// the ports over; the calls through the old relay lose nothing.
#[test]
fn a_draining_relay_hands_over_when_the_new_one_starts() {
    let _one = one_at_a_time();
    let (old, range) = loopback_relay(1);
    let server = old.v4();
    let (_peer, peer) = echo_peer("127.0.0.1");
    let calls = long_calls(server, peer);
    wait_allocations(&old, 8.0);

    old.signal("TERM");
    old.wait_for_log(&["draining", "SIGTERM"], TIMEOUT);
    assert_eq!(old.http_get("/readyz").0, 503, "not ready while draining");
    // Workers apply the drain within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let refused = short_call(server, peer);
    assert!(
        !refused.exited_ok || refused.received == 0,
        "a draining relay with no successor refuses new allocations:\n{}",
        refused.text
    );

    let new = relay(server, old.metrics, &range);
    assert_pinned(&new);
    old.wait_for_log(&["listeners closed"], TIMEOUT);
    assert_eq!(new.http_get("/readyz").0, 200, "readyz after the hand-over");
    for _ in 0..2 {
        let stats = short_call(server, peer);
        stats.assert_all_arrived(40, "\n(a new call after the hand-over)");
    }
    let mut old = old;
    assert_long_calls(calls, &old, &new);
    stop(&mut old);
    let stats = short_call(server, peer);
    stats.assert_all_arrived(40, "\n(a call after the old relay exited)");
}

/// The control case: what the hand-over's order prevents. Sockets of another process that
/// join the ports' reuseport group while a call runs (as a new relay binding without asking
/// would) take some of the call's packets: the kernel re-hashes the clients over the bigger
/// group. A client whose requests (a ChannelBind, a Refresh) go to a joined socket waits for
/// their answers for ever, so the call either ends with packets lost or does not end.
#[test]
fn joining_the_group_without_a_hand_over_takes_packets() {
    let _one = one_at_a_time();
    let (old, _) = loopback_relay(2);
    let server = old.v4();
    let (_peer, peer) = echo_peer("127.0.0.1");
    let udp = std::thread::spawn(move || {
        try_uclient(
            server,
            peer,
            &[&CREDS[..], &["-m", "8", "-n", "300"]].concat(),
            CONTROL_CALL,
        )
    });
    wait_allocations(&old, 8.0);
    let intruders: Vec<UdpSocket> = (0..4).map(|_| reuseport_udp(server)).collect();
    let stats = udp.join().expect("the call's thread");
    let mut taken = 0;
    let mut buf = [0u8; 2048];
    for s in &intruders {
        s.set_nonblocking(true).expect("nonblocking");
        while s.recv_from(&mut buf).is_ok() {
            taken += 1;
        }
    }
    let lost = match &stats {
        None => format!("the call did not end within {CONTROL_CALL:?}"),
        Some(stats) if !stats.all_arrived(2400) => {
            format!("{} sent, {} received", stats.sent, stats.received)
        }
        Some(stats) => panic!(
            "the call lost nothing ({} sent, {} received) while the joined sockets took {taken} \
             packets",
            stats.sent, stats.received
        ),
    };
    assert!(
        taken > 0,
        "expected the joined sockets to take packets: none taken ({lost})"
    );
}

/// A UDP socket bound to `addr` with SO_REUSEPORT, as a relay's listener is.
fn reuseport_udp(addr: SocketAddr) -> UdpSocket {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    socket.bind(&addr.into()).expect("bind beside the relay");
    socket.into()
}
