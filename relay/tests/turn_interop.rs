//! TURN end to end: the real relay binary against coturn's `turnutils_uclient` (with
//! `turnutils_peer` echoing) in every mode users rely on, and against a codec-built client for
//! the security rules: denied peers, wrong and expired credentials, floods.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::Relay;
use common::turn::{TurnClient, allocate_request};
use common::uclient::{echo_peer, uclient};
use relay::stun::AddressFamily;

const TIMEOUT: Duration = Duration::from_secs(120);

/// A relay port range of its own for each relay a test starts, so parallel tests do not meet.
fn port_range() -> (String, String) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let base = 20_000 + (std::process::id() % 200) as u16 * 50 + n * 200 % 10_000;
    (base.to_string(), (base + 199).to_string())
}

fn relay(extra: &[&str]) -> Relay {
    let (min, max) = port_range();
    let mut args = vec![
        "--realm",
        "example.org",
        "--min-port",
        &min,
        "--max-port",
        &max,
    ];
    args.extend_from_slice(extra);
    Relay::start(&args)
}

const ALICE: [&str; 2] = ["--user", "alice:wonderland"];
const CREDS: [&str; 4] = ["-u", "alice", "-w", "wonderland"];

/// Default mode: channels (ChannelBind + ChannelData) and the RTP/RTCP pair of EVEN-PORT with
/// RESERVATION-TOKEN, tens of clients, thousands of messages.
#[test]
fn uclient_channels_even_port_pairs_many_clients() {
    let relay = relay(&[&ALICE[..], &["--allow-peer", "127.0.0.1"]].concat());
    let (_peer, peer) = echo_peer("127.0.0.1");
    let stats = uclient(
        relay.v4(),
        peer,
        &[&CREDS[..], &["-m", "20", "-n", "200", "-l", "120"]].concat(),
        TIMEOUT,
    );
    stats.assert_all_arrived(4000, "");
    assert!(
        relay.metric(
            r#"xdpturn_requests_total{method="channel_bind",result="success",transport="udp"}"#
        ) >= 20.0
    );
    let relayed = relay.metric(r#"xdpturn_relayed_packets_total{datapath="userspace",direction="client_to_peer",transport="udp"}"#);
    assert!(relayed >= 4000.0, "{relayed}");
}

/// `-s`: Send and Data indications instead of channels.
#[test]
fn uclient_send_and_data_indications() {
    let relay = relay(&[&ALICE[..], &["--allow-peer", "127.0.0.1"]].concat());
    let (_peer, peer) = echo_peer("127.0.0.1");
    let stats = uclient(
        relay.v4(),
        peer,
        &[&CREDS[..], &["-s", "-m", "10", "-n", "100", "-l", "120"]].concat(),
        TIMEOUT,
    );
    stats.assert_all_arrived(1000, "");
    assert_eq!(
        relay.metric(
            r#"xdpturn_requests_total{method="channel_bind",result="success",transport="udp"}"#
        ),
        0.0
    );
}

/// `-t`: TCP from the client to the relay (channels and indications).
#[test]
fn uclient_over_tcp() {
    let relay = relay(&[&ALICE[..], &["--allow-peer", "127.0.0.1"]].concat());
    let (_peer, peer) = echo_peer("127.0.0.1");
    let stats = uclient(
        relay.v4(),
        peer,
        &[&CREDS[..], &["-t", "-m", "10", "-n", "100", "-l", "120"]].concat(),
        TIMEOUT,
    );
    stats.assert_all_arrived(1000, "");
    let stats = uclient(
        relay.v4(),
        peer,
        &[
            &CREDS[..],
            &["-t", "-s", "-m", "5", "-n", "100", "-l", "120"],
        ]
        .concat(),
        TIMEOUT,
    );
    stats.assert_all_arrived(500, "");
    assert!(relay.metric(r#"xdpturn_relayed_packets_total{datapath="userspace",direction="peer_to_client",transport="tcp"}"#) >= 1500.0);
    // A closed TCP connection takes its allocation with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.metric("xdpturn_allocations") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "TCP allocations outlived their connections"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `-T`: RFC 6062 TCP relaying — TCP allocations, Connect, ConnectionAttempt and
/// ConnectionBind between pairs of clients through the relay.
#[test]
fn uclient_tcp_relay_rfc6062() {
    let relay = relay(&[&ALICE[..], &["--allow-peer", "127.0.0.1"]].concat());
    let stats = uclient(
        relay.v4(),
        SocketAddr::from(([127, 0, 0, 1], 1)),
        &[&CREDS[..], &["-T", "-m", "4", "-n", "50", "-l", "120"]].concat(),
        TIMEOUT,
    );
    stats.assert_all_arrived(200, "");
    assert!(relay.metric(r#"xdpturn_relayed_bytes_total{datapath="userspace",direction="client_to_peer",transport="tcp"}"#) >= 200.0 * 120.0);
}

/// `-W`: time-limited credentials computed by the client from the shared secret.
#[test]
fn uclient_rest_shared_secret() {
    let relay = relay(&[
        "--auth-secret",
        "old secret",
        "--auth-secret",
        "s3cret",
        "--allow-peer",
        "127.0.0.1",
    ]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let stats = uclient(
        relay.v4(),
        peer,
        &[
            "-W", "s3cret", "-u", "bob", "-m", "5", "-n", "100", "-l", "120",
        ],
        TIMEOUT,
    );
    stats.assert_all_arrived(500, "");
    let stats = uclient(
        relay.v4(),
        peer,
        &[
            "-W",
            "retired secret",
            "-u",
            "bob",
            "-m",
            "1",
            "-n",
            "10",
            "-l",
            "120",
        ],
        TIMEOUT,
    );
    assert_eq!(
        stats.received, 0,
        "a secret the relay does not have must fail: {stats:?}"
    );
}

/// IPv6 end to end: client, relay and peer on ::1.
#[test]
fn uclient_ipv6() {
    let relay = relay(&[&ALICE[..], &["--allow-peer", "::1"]].concat());
    let (_peer, peer) = echo_peer("::1");
    let stats = uclient(
        relay.v6(),
        peer,
        &[&CREDS[..], &["-m", "5", "-n", "100", "-l", "120"]].concat(),
        TIMEOUT,
    );
    stats.assert_all_arrived(500, "");
}

/// Every built-in denied class, and every IPv6 encoding of a denied IPv4 address, gets 403,
/// and each is counted.
#[test]
fn denied_peers_get_403() {
    let relay = relay(&ALICE);
    let mut v4 = TurnClient::new(
        relay.v4(),
        "127.0.0.1:0",
        "alice",
        "wonderland",
        "example.org",
    );
    v4.allocate().expect("IPv4 allocation");
    let v4_denied = [
        "0.1.2.3:5000",
        "10.1.2.3:5000",
        "100.64.1.1:5000",
        "127.0.0.1:5000",
        "169.254.169.254:80",
        "172.16.0.1:5000",
        "192.0.0.9:5000",
        "192.168.1.1:5000",
        "198.18.0.1:5000",
        "224.0.0.251:5353",
        "255.255.255.255:5000",
        "192.0.2.1:5000",    // documentation
        "198.51.100.1:5000", // documentation
        "203.0.113.9:5000",  // documentation
        "192.88.99.1:5000",  // deprecated 6to4 relay anycast
    ];
    for peer in v4_denied {
        assert_eq!(
            v4.create_permission(peer.parse().expect("addr")),
            Some(403),
            "{peer}"
        );
        assert_eq!(
            v4.channel_bind(0x4000, peer.parse().expect("addr")),
            Some(403),
            "{peer}"
        );
    }
    // No packet goes to these: a permission is only installed.
    assert_eq!(
        v4.create_permission("8.8.8.8:5000".parse().expect("addr")),
        None,
        "a public peer is fine"
    );

    let mut v6 = TurnClient::new(relay.v6(), "[::1]:0", "alice", "wonderland", "example.org");
    v6.allocate_family(Some(AddressFamily::IPV6))
        .expect("IPv6 allocation");
    let v6_denied = [
        "[::1]:5000",
        "[::]:5000",
        "[fc00::1]:5000",
        "[fe80::1]:5000",
        "[ff02::1]:5000",
        "[::ffff:127.0.0.1]:5000", // IPv4-mapped
        "[::ffff:169.254.169.254]:80",
        "[::10.0.0.1]:5000",       // IPv4-compatible
        "[64:ff9b::a9fe:a9fe]:80", // NAT64 of the metadata address
        "[64:ff9b::192.168.0.1]:5000",
        "[2002:c0a8:101::1]:5000", // 6to4 of 192.168.1.1
        "[2002:7f00:1::]:5000",    // 6to4 of 127.0.0.1
        "[::ffff:0:7f00:1]:5000",  // SIIT of 127.0.0.1
        "[::ffff:0:a9fe:a9fe]:80", // SIIT of the metadata address
        "[fec0::1]:5000",          // site-local
        "[100::1]:5000",           // discard-only
        "[2001:db8::9]:5000",      // documentation
        "[2001:20::1]:5000",       // ORCHIDv2
    ];
    for peer in v6_denied {
        assert_eq!(
            v6.create_permission(peer.parse().expect("addr")),
            Some(403),
            "{peer}"
        );
    }
    assert_eq!(
        v6.create_permission("[2001:4860:4860::8888]:5000".parse().expect("addr")),
        None
    );
    let denied = relay.metric(r#"xdpturn_peer_denied_total{reason="builtin"}"#);
    // The relay listens on 127.0.0.1 and ::1: those (::ffff:127.0.0.1 too) are its own
    // addresses, on a port that is not a relay port (twice for 127.0.0.1: CreatePermission and
    // ChannelBind).
    let own = relay.metric(r#"xdpturn_peer_denied_total{reason="own_address"}"#);
    assert_eq!(own, 4.0);
    assert_eq!(denied + own, (2 * v4_denied.len() + v6_denied.len()) as f64);
}

/// The relay's own service ports are refused even when their network is allowed; its relay
/// ports are not (two clients of one relay talking is the common case).
#[test]
fn own_endpoints_refused_relay_ports_reachable() {
    let relay = relay(&[&ALICE[..], &["--allow-peer", "127.0.0.1"]].concat());
    let mut a = TurnClient::new(
        relay.v4(),
        "127.0.0.1:0",
        "alice",
        "wonderland",
        "example.org",
    );
    let mut b = TurnClient::new(
        relay.v4(),
        "127.0.0.1:0",
        "alice",
        "wonderland",
        "example.org",
    );
    let a_relayed = a.allocate().expect("a");
    let b_relayed = b.allocate().expect("b");
    assert_eq!(
        a.channel_bind(0x4000, relay.v4()),
        Some(403),
        "the TURN listener"
    );
    assert_eq!(
        a.channel_bind(0x4001, relay.metrics),
        Some(403),
        "the metrics listener"
    );
    assert_eq!(
        a.channel_bind(0x4002, b_relayed),
        None,
        "another allocation"
    );
    assert_eq!(b.create_permission(a_relayed), None);
    // Data goes from a to b through the relay twice.
    a.send(b_relayed, b"hello b");
    let mut buf = [0u8; 1500];
    let (n, _) = b
        .socket
        .recv_from(&mut buf)
        .expect("b gets a Data indication");
    let msg = relay::stun::Message::decode(&buf[..n]).expect("decodes");
    assert_eq!(
        msg.get::<relay::stun::Data>(),
        Some(Ok(relay::stun::Data(b"hello b")))
    );
    assert!(relay.metric(r#"xdpturn_peer_denied_total{reason="own_endpoint"}"#) >= 2.0);
}

/// With no allow option, another allocation's relayed address (on the relay's own IP) is a
/// peer for CreatePermission and ChannelBind alike, and only on the relay ports: the permission
/// covers the IP, but a datagram from another port of it is dropped and counted, not forwarded.
#[test]
fn own_address_is_a_peer_on_relay_ports_only() {
    let relay = relay(&ALICE);
    let client = || {
        TurnClient::new(
            relay.v4(),
            "127.0.0.1:0",
            "alice",
            "wonderland",
            "example.org",
        )
    };
    let (mut a, mut b) = (client(), client());
    let a_relayed = a.allocate().expect("a");
    let b_relayed = b.allocate().expect("b");
    assert_eq!(a.create_permission(b_relayed), None, "CreatePermission");
    assert_eq!(a.channel_bind(0x4000, b_relayed), None, "ChannelBind");
    assert_eq!(b.create_permission(a_relayed), None, "the other way");
    // A socket on the relay's IP, on an ephemeral port outside the relay port range (200
    // ports from `port_range`'s base, which holds both relayed ports).
    let above = a_relayed.port().max(b_relayed.port()).saturating_add(200);
    let stray = (0..1000)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .find(|s| s.local_addr().expect("addr").port() > above)
        .expect("an ephemeral port above the relay ports");
    let stray_addr = stray.local_addr().expect("addr");
    assert_eq!(
        a.create_permission(stray_addr),
        Some(403),
        "not a relay port"
    );
    assert_eq!(
        a.channel_bind(0x4001, stray_addr),
        Some(403),
        "not a relay port"
    );
    let denied = relay.metric(r#"xdpturn_peer_denied_total{reason="own_address"}"#);
    assert_eq!(denied, 2.0);

    stray.send_to(b"stray", a_relayed).expect("send");
    b.send(a_relayed, b"from b");
    a.socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = a.socket.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    let contains = |needle: &[u8]| {
        got.iter()
            .any(|p| p.windows(needle.len()).any(|w| w == needle))
    };
    assert!(contains(b"from b"), "b's data reaches a: {got:?}");
    assert!(
        !contains(b"stray"),
        "the stray datagram was relayed: {got:?}"
    );
    assert_eq!(
        relay.metric(r#"xdpturn_dropped_packets_total{reason="peer_denied",transport="udp"}"#),
        1.0
    );
    assert_eq!(
        relay.metric(r#"xdpturn_peer_denied_total{reason="own_address"}"#),
        3.0
    );
}

#[test]
fn wrong_password_and_expired_rest_credentials_get_401_and_no_allocation() {
    let relay = relay(&[&ALICE[..], &["--auth-secret", "s3cret"]].concat());
    let mut c = TurnClient::new(relay.v4(), "127.0.0.1:0", "alice", "mirror", "example.org");
    assert_eq!(c.allocate(), Err(Some(401)));
    let past = format!(
        "{}:bob",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            - 60
    );
    let password = relay::credentials::rest_password(b"s3cret", &past);
    let mut c = TurnClient::new(relay.v4(), "127.0.0.1:0", &past, &password, "example.org");
    assert_eq!(c.allocate(), Err(Some(401)));
    assert_eq!(relay.metric("xdpturn_allocations"), 0.0);
    assert_eq!(
        relay.metric(r#"xdpturn_auth_failures_total{reason="wrong_password"}"#),
        1.0
    );
    assert_eq!(
        relay.metric(r#"xdpturn_auth_failures_total{reason="expired"}"#),
        1.0
    );
}

/// Bad-credential Allocates from one source address over many source ports (which the kernel
/// spreads over the workers' sockets) to a relay with `workers` workers: how many were answered
/// 401, and how many of the rest the failure limiter dropped.
fn wrong_password_flood(workers: &str) -> (u32, f64, u32) {
    use relay::stun::{ErrorCode, Message, Nonce};
    const SOCKETS: u32 = 32;
    const PER_SOCKET: u32 = 4;
    let relay = relay(&[&ALICE[..], &["--workers", workers]].concat());
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            s
        })
        .collect();
    let allocate = |tid: [u8; 12], nonce: Option<&str>| {
        allocate_request(tid, nonce.map(|n| ("alice", "example.org", "guess", n)))
    };
    // A challenge for a nonce (a challenge is not a failure), then the flood.
    sockets[0]
        .send_to(&allocate([0; 12], None), relay.v4())
        .expect("send");
    let mut buf = [0u8; 1500];
    let nonce = loop {
        let (n, _) = sockets[0].recv_from(&mut buf).expect("a challenge");
        if let Ok(m) = Message::decode(&buf[..n])
            && let Some(Ok(Nonce(nonce))) = m.get::<Nonce>()
        {
            break nonce.to_owned();
        }
    };
    for round in 0..PER_SOCKET {
        for (i, s) in sockets.iter().enumerate() {
            let mut tid = [1u8; 12];
            tid[..4].copy_from_slice(&round.to_be_bytes());
            tid[4..8].copy_from_slice(&(i as u32).to_be_bytes());
            s.send_to(&allocate(tid, Some(&nonce)), relay.v4())
                .expect("send");
        }
    }
    let mut refused = 0;
    for s in &sockets {
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            let code = Message::decode(&buf[..n])
                .ok()
                .and_then(|m| m.get::<ErrorCode>().and_then(Result::ok).map(|e| e.code));
            assert_eq!(code, Some(401), "a wrong password is refused");
            refused += 1;
        }
    }
    let limited = relay
        .metric(r#"xdpturn_dropped_packets_total{reason="auth_rate_limited",transport="udp"}"#);
    (refused, limited, SOCKETS * PER_SOCKET)
}

/// The budget of failed authentications per source address is the relay's, not each worker's:
/// a flood of wrong passwords from one address gets as many 401 answers with four workers as
/// with one (it got four times as many when each worker kept its own).
#[test]
fn the_failure_budget_per_source_does_not_grow_with_workers() {
    let (one, limited_one, sent) = wrong_password_flood("1");
    let (four, limited_four, _) = wrong_password_flood("4");
    println!(
        "{sent} wrong passwords from one address: 1 worker answered {one} and dropped \
         {limited_one}, 4 workers answered {four} and dropped {limited_four}"
    );
    // Every request reached the relay: answered or dropped by the limiter, nothing else.
    assert_eq!(f64::from(one) + limited_one, f64::from(sent));
    assert_eq!(f64::from(four) + limited_four, f64::from(sent));
    // A burst of 10, and a token a second refilled while the flood is sent and answered.
    for answered in [one, four] {
        assert!(
            (10..=13).contains(&answered),
            "{answered} answers: the burst of 10, and little refill"
        );
    }
    assert!(
        one.abs_diff(four) <= 2,
        "1 worker answered {one}, 4 workers {four}"
    );
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Junk and unauthenticated Allocates from many source addresses leave memory bounded: the
/// relay keeps no state for them (stateless nonces) and keeps answering.
#[test]
fn floods_leave_memory_bounded() {
    let relay = relay(&ALICE);
    let server = relay.v4();
    // Warm up, then measure.
    assert!(common::stun_binding_udp(server, Duration::from_secs(5)).is_some());
    let before = vm_rss_kib(relay.pid());
    let allocate = {
        let mut buf = [0u8; 64];
        let typ = relay::stun::MessageType::new(
            relay::stun::Method::ALLOCATE,
            relay::stun::Class::Request,
        );
        let mut e =
            relay::stun::Encoder::new(&mut buf, typ, relay::stun::TransactionId::new([5; 12]))
                .expect("h");
        e.add(&relay::stun::RequestedTransport::UDP).expect("rt");
        let n = e.finish();
        buf[..n].to_vec()
    };
    let mut sockets = Vec::new();
    for i in 2..=201u32 {
        // 200 source addresses, all loopback.
        if let Ok(s) = UdpSocket::bind(format!("127.0.{}.{}:0", i / 250, i % 250 + 1)) {
            sockets.push(s);
        }
    }
    assert!(sockets.len() >= 100, "loopback source addresses");
    for round in 0..100u32 {
        for (i, s) in sockets.iter().enumerate() {
            let junk = [(round as u8) ^ (i as u8); 48];
            let _ = s.send_to(&junk, server);
            let _ = s.send_to(&allocate, server);
        }
        if round % 10 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        common::stun_binding_udp(server, Duration::from_secs(5)).is_some(),
        "still serving"
    );
    let after = vm_rss_kib(relay.pid());
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(relay.metric("xdpturn_allocations"), 0.0);
    assert!(
        relay.metric(r#"xdpturn_requests_total{method="allocate",result="401",transport="udp"}"#)
            > 1000.0
    );
}

/// At the total-allocation cap the relay says it is not ready (so a load balancer sends new
/// clients elsewhere) and refuses more with 508; below it, ready again.
#[test]
fn not_ready_at_capacity() {
    let relay = relay(&[&ALICE[..], &["--total-quota", "1"]].concat());
    let wait_ready = |want: u16| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while relay.http_get("/readyz").0 != want {
            assert!(Instant::now() < deadline, "/readyz never became {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_ready(200);
    let mut a = TurnClient::new(
        relay.v4(),
        "127.0.0.1:0",
        "alice",
        "wonderland",
        "example.org",
    );
    a.allocate().expect("first allocation");
    let mut b = TurnClient::new(
        relay.v4(),
        "127.0.0.1:0",
        "alice",
        "wonderland",
        "example.org",
    );
    assert_eq!(b.allocate(), Err(Some(508)));
    wait_ready(503);
    assert_eq!(a.delete(), None);
    wait_ready(200);
}

/// Every kind of request a stranger can send over UDP, without credentials, well-formed and
/// not: the relay's answer is at most three times the request (or there is none), so it cannot
/// be used to multiply a spoofed source's traffic. The well-formed requests of every method are
/// answered (REALM and NONCE for the TURN ones), so staying quiet is not how the bound is met.
#[test]
fn unauthenticated_answers_stay_within_three_times_the_request() {
    use relay::stun::{
        AttrType, ChannelNumber, Class, Encoder, ErrorCode, Lifetime, Message, MessageType, Method,
        Nonce, PasswordAlgorithms, Realm, RequestedTransport, Software, TransactionId, Username,
        XorPeerAddress,
    };
    let relay = relay(&ALICE);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(400)))
        .expect("timeout");
    let peer: SocketAddr = "8.8.8.8:5000".parse().expect("addr");
    let build = |method: Method, attrs: &dyn Fn(&mut Encoder<'_>)| {
        let mut buf = vec![0u8; 1500];
        let mut e = Encoder::new(
            &mut buf,
            MessageType::new(method, Class::Request),
            TransactionId::new([3; 12]),
        )
        .expect("header");
        attrs(&mut e);
        let len = e.finish();
        buf.truncate(len);
        buf
    };
    let fp = |e: &mut Encoder<'_>| e.fingerprint().expect("fp");
    let rt = |e: &mut Encoder<'_>| e.add(&RequestedTransport::UDP).expect("rt");
    let mut length_mismatch = build(Method::ALLOCATE, &rt);
    length_mismatch[3] = 4; // says 4 bytes follow; 8 do
    let mut bad_value = build(Method::BINDING, &|e| {
        e.add_raw(AttrType::XOR_MAPPED_ADDRESS, &[0, 9, 0, 0, 1, 2, 3, 4])
            .expect("add")
    });
    bad_value.truncate(bad_value.len());
    // (name, request, whether an answer is due)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("Binding", build(Method::BINDING, &|_| {}), true),
        ("Binding + FINGERPRINT", build(Method::BINDING, &fp), true),
        (
            "Binding + SOFTWARE",
            build(Method::BINDING, &|e| e.add(&Software("probe")).expect("sw")),
            true,
        ),
        ("Allocate, bare", build(Method::ALLOCATE, &|_| {}), false),
        ("Allocate", build(Method::ALLOCATE, &rt), true),
        (
            "Allocate + FINGERPRINT",
            build(Method::ALLOCATE, &|e| {
                rt(e);
                fp(e)
            }),
            true,
        ),
        ("Refresh, bare", build(Method::REFRESH, &|_| {}), false),
        (
            "Refresh + LIFETIME",
            build(Method::REFRESH, &|e| e.add(&Lifetime(600)).expect("lt")),
            true,
        ),
        (
            "CreatePermission",
            build(Method::CREATE_PERMISSION, &|e| {
                e.add(&XorPeerAddress(peer)).expect("peer")
            }),
            true,
        ),
        (
            "ChannelBind",
            build(Method::CHANNEL_BIND, &|e| {
                e.add(&ChannelNumber(0x4000)).expect("ch");
                e.add(&XorPeerAddress(peer)).expect("peer");
            }),
            true,
        ),
        (
            "Connect",
            build(Method::CONNECT, &|e| {
                e.add(&XorPeerAddress(peer)).expect("peer")
            }),
            true,
        ),
        (
            "Allocate, wrong password",
            build(Method::ALLOCATE, &|e| {
                rt(e);
                e.add(&Username("alice")).expect("user");
                e.add(&Realm("example.org")).expect("realm");
                e.add(&Nonce("not-a-nonce-of-ours")).expect("nonce");
                e.message_integrity(&[0; 16]).expect("mi");
            }),
            true,
        ),
        ("length mismatch", length_mismatch, false),
        ("malformed attribute value", bad_value, true),
        (
            "unknown comprehension-required attribute",
            build(Method::BINDING, &|e| {
                e.add_raw(AttrType(0x7F01), b"??").expect("add")
            }),
            true,
        ),
        (
            "unknown method",
            build(Method::new(0x0FF).expect("method"), &|_| {}),
            false,
        ),
        (
            "Send as a request",
            build(Method::SEND, &|e| {
                e.add(&XorPeerAddress(peer)).expect("peer")
            }),
            false,
        ),
    ];
    let mut table =
        String::from("request                                    bytes  answer  ratio\n");
    let mut failures = Vec::new();
    let mut buf = [0u8; 1500];
    for (name, req, due) in &cases {
        socket.send_to(req, relay.v4()).expect("send");
        let answer = socket.recv_from(&mut buf).map(|(n, _)| n).ok();
        let n = answer.unwrap_or(0);
        let ratio = n as f64 / req.len() as f64;
        table += &format!("{name:<42} {:>5}  {n:>6}  {ratio:>5.2}\n", req.len());
        if n > 3 * req.len() {
            failures.push(format!("{name}: {n} bytes to {}", req.len()));
        }
        if answer.is_some() != *due {
            failures.push(format!(
                "{name}: answered {}, expected {due}",
                answer.is_some()
            ));
        }
        if let Some(n) = answer {
            let msg = Message::decode(&buf[..n]).expect("answer decodes");
            assert!(msg.get::<Software>().is_none(), "{name}: SOFTWARE");
            if let Some(Ok(e)) = msg.get::<ErrorCode>() {
                assert_eq!(e.reason, "", "{name}: a reason phrase");
                if e.code == 401 {
                    assert!(msg.get::<Realm>().is_some() && msg.get::<Nonce>().is_some());
                }
            }
            // The request big enough to pay for it gets the SHA-256 offer.
            if *name == "Allocate + FINGERPRINT" {
                assert!(msg.get::<PasswordAlgorithms>().is_some(), "{name}");
                msg.verify_fingerprint().expect("fingerprint");
            }
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{failures:#?}\n{table}");
    assert!(
        relay.metric(r#"xdpturn_dropped_packets_total{reason="amplification",transport="udp"}"#)
            >= 2.0
    );
}
