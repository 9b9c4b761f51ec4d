//! TCP clients that cannot hold the relay hostage: the real relay binary on loopback, against
//! plain sockets that open thousands of idle connections, trickle bytes that never make a
//! message, open more connections than the caps allow, and pipeline thousands of requests
//! without reading the answers at first.

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Relay;
use relay::stun::{Class, Encoder, Message, MessageType, Method, TransactionId};

/// Open connections the memory test aims for (fewer when the file descriptor limit is lower).
const IDLE_CONNECTIONS: usize = 4000;
/// The bound on the relay's resident memory per idle TCP connection (it was ~69 kB).
const MAX_BYTES_PER_CONNECTION: u64 = 16 * 1024;

/// The relay's resident set size, from /proc.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// Raises this process's soft file descriptor limit to the hard one (the relay, started after,
/// inherits it); returns the limit.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE to the hard limit");
    }
    limit.current.unwrap_or(u64::MAX)
}

fn binding(tid: [u8; 12]) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let len = Encoder::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        TransactionId::new(tid),
    )
    .expect("header")
    .finish();
    buf[..len].to_vec()
}

/// Reads one STUN message from a stream.
fn read_message(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 20];
    s.read_exact(&mut header)?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut msg = header.to_vec();
    msg.resize(20 + len, 0);
    s.read_exact(&mut msg[20..])?;
    Ok(msg)
}

/// A Binding over `s`, answered.
fn binding_answered(s: &mut TcpStream, n: u32) -> bool {
    let mut tid = *b"binding-tid!";
    tid[8..].copy_from_slice(&n.to_be_bytes());
    if s.write_all(&binding(tid)).is_err() {
        return false;
    }
    read_message(s).is_ok_and(|m| Message::decode(&m).is_ok_and(|m| m.tid().0 == tid))
}

/// Waits (up to 60 s) until the relay has `n` TCP connections open.
fn wait_connections(relay: &Relay, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open = relay.metric(r#"xdpturn_client_connections{transport="tcp"}"#) as usize;
        if open == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} TCP connections open, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the relay closed `s` within `within`: a read sees the end (or a reset) rather
/// than a timeout. Bytes the relay sends are skipped.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_tcp_connections_cost_little_and_their_memory_is_given_back() {
    let fds = raise_fd_limit();
    // The test holds one descriptor per connection, the relay another: each process has its
    // own limit, and some room is left for the rest.
    let n = IDLE_CONNECTIONS.min(usize::try_from(fds.saturating_sub(200)).unwrap_or(usize::MAX));
    assert!(
        n >= 1000,
        "RLIMIT_NOFILE hard limit {fds} is too low for this test"
    );
    let relay = Relay::start(&[
        "--max-tcp-connections-per-ip",
        "0",
        "--max-tcp-connections",
        "0",
        "--tcp-auth-timeout",
        "10m",
    ]);
    let server = relay.v4();
    // Warm up: the code paths and the runtime's structures of a few connections.
    let warm: Vec<_> = (0..100)
        .map(|_| TcpStream::connect(server).expect("connect"))
        .collect();
    wait_connections(&relay, warm.len());
    drop(warm);
    wait_connections(&relay, 0);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss(relay.pid());

    let conns: Vec<_> = (0..n)
        .map(|_| TcpStream::connect(server).expect("connect"))
        .collect();
    wait_connections(&relay, n);
    let during = rss(relay.pid());
    let per = during.saturating_sub(before) / n as u64;
    println!(
        "{n} idle TCP connections: relay RSS {} kB -> {} kB, {per} bytes per connection",
        before / 1024,
        during / 1024
    );
    assert!(
        per < MAX_BYTES_PER_CONNECTION,
        "{per} bytes per idle TCP connection (bound {MAX_BYTES_PER_CONNECTION})"
    );

    drop(conns);
    wait_connections(&relay, 0);
    // What the connections took is given back (to the allocator's free lists at least, which
    // the relay returns to the system when it can): wait for it a little.
    let grown = during.saturating_sub(before);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = rss(relay.pid());
        if now <= before + grown / 2 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "after they closed: relay RSS {} kB ({} kB over the start)",
        after / 1024,
        after.saturating_sub(before) / 1024
    );
    assert!(
        after <= before + grown / 2,
        "the relay kept {} kB of the {} kB its connections took",
        after.saturating_sub(before) / 1024,
        grown / 1024
    );
    // And it still serves.
    let mut s = TcpStream::connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(binding_answered(&mut s, 1));
}

#[test]
fn a_slow_sender_is_closed_by_the_authentication_deadline() {
    let relay = Relay::start(&["--tcp-auth-timeout", "2"]);
    let mut s = TcpStream::connect(relay.v4()).expect("connect");
    // A Binding request header announcing 200 bytes of attributes, sent a byte a second and
    // never finished.
    let mut header = binding(*b"slowloris!!!");
    header[2..4].copy_from_slice(&200u16.to_be_bytes());
    let started = Instant::now();
    let mut closed = None;
    for byte in header.iter().chain(std::iter::repeat(&0u8)).take(60) {
        if s.write_all(&[*byte]).is_err() || closed_within(&mut s, Duration::from_secs(1)) {
            closed = Some(started.elapsed());
            break;
        }
    }
    let closed = closed.expect("a connection trickling a byte a second for 60 s was not closed");
    println!("slowloris connection closed after {closed:?} (deadline 2 s)");
    assert_eq!(
        relay.metric(r#"xdpturn_connections_reaped_total{reason="auth_timeout",transport="tcp"}"#),
        1.0
    );
}

#[test]
fn only_whole_messages_keep_a_connection_from_idling_out() {
    let relay = Relay::start(&["--tcp-auth-timeout", "0", "--tcp-idle-timeout", "2"]);
    let mut s = TcpStream::connect(relay.v4()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // A Binding every half second for 5 s: more than twice the idle timeout, and open.
    for i in 0..10 {
        assert!(binding_answered(&mut s, i), "Binding {i} not answered");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Then a byte every half second that never makes a message: closed.
    let mut header = binding(*b"trickle-tid!");
    header[2..4].copy_from_slice(&400u16.to_be_bytes());
    let started = Instant::now();
    let mut closed = None;
    for byte in header.iter().chain(std::iter::repeat(&0u8)).take(120) {
        if s.write_all(&[*byte]).is_err() || closed_within(&mut s, Duration::from_millis(500)) {
            closed = Some(started.elapsed());
            break;
        }
    }
    let closed = closed.expect("a trickle of bytes kept the connection open for 60 s");
    println!("trickling connection closed after {closed:?} (idle timeout 2 s)");
    assert_eq!(
        relay.metric(r#"xdpturn_connections_reaped_total{reason="idle_timeout",transport="tcp"}"#),
        1.0
    );
}

#[test]
fn connections_over_the_caps_are_refused_and_counted() {
    let relay = Relay::start(&["--max-tcp-connections-per-ip", "5"]);
    let server = relay.v4();
    let mut open: Vec<_> = (0..5)
        .map(|_| {
            let s = TcpStream::connect(server).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s
        })
        .collect();
    for (i, s) in open.iter_mut().enumerate() {
        assert!(binding_answered(s, i as u32), "connection {i} not served");
    }
    let mut sixth = TcpStream::connect(server).expect("connect");
    sixth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(
        !binding_answered(&mut sixth, 6),
        "the 6th connection from one address was served"
    );
    assert_eq!(
        relay.metric(r#"xdpturn_connections_refused_total{reason="per_source",transport="tcp"}"#),
        1.0
    );
    relay.wait_for_log(
        &["refusing TCP/TLS connections", "per_source"],
        Duration::from_secs(5),
    );
    // One closes: there is room again.
    drop(open.pop());
    wait_connections(&relay, 4);
    let mut again = TcpStream::connect(server).expect("connect");
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(binding_answered(&mut again, 7));
}

#[test]
fn connections_over_the_total_cap_are_refused_whatever_their_source() {
    let relay = Relay::start(&[
        "--max-tcp-connections-per-ip",
        "0",
        "--max-tcp-connections",
        "3",
    ]);
    let server = relay.v4();
    let from = |ip: &str| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let local: SocketAddr = format!("{ip}:0").parse().expect("addr");
        socket.bind(&local.into()).expect("bind a loopback source");
        socket.connect(&server.into()).expect("connect");
        let s = TcpStream::from(socket);
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    };
    let mut open = [from("127.0.0.1"), from("127.0.0.2"), from("127.0.0.3")];
    for (i, s) in open.iter_mut().enumerate() {
        assert!(binding_answered(s, i as u32), "connection {i} not served");
    }
    let mut fourth = from("127.0.0.4");
    assert!(
        !binding_answered(&mut fourth, 4),
        "a 4th connection was served"
    );
    assert_eq!(
        relay.metric(r#"xdpturn_connections_refused_total{reason="total",transport="tcp"}"#),
        1.0
    );
}

/// `n` Binding requests with distinct transaction ids, back to back.
fn pipelined(n: u32) -> (Vec<u8>, HashSet<[u8; 12]>) {
    let mut bytes = Vec::new();
    let mut tids = HashSet::new();
    for i in 0..n {
        let mut tid = *b"pipelined...";
        tid[8..].copy_from_slice(&i.to_be_bytes());
        bytes.extend_from_slice(&binding(tid));
        tids.insert(tid);
    }
    (bytes, tids)
}

/// Reads answers until every one of `tids` came (or 60 s pass): the ones missing.
fn collect_answers(s: &mut TcpStream, mut tids: HashSet<[u8; 12]>) -> HashSet<[u8; 12]> {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tids.is_empty() && Instant::now() < deadline {
        let Ok(msg) = read_message(s) else { break };
        let msg = Message::decode(&msg).expect("a STUN answer");
        assert_eq!(msg.class(), Class::Success);
        tids.remove(&msg.tid().0);
    }
    tids
}

#[test]
fn pipelined_requests_in_one_write_are_all_answered() {
    let relay = Relay::start(&[]);
    let mut s = TcpStream::connect(relay.v4()).expect("connect");
    let (bytes, tids) = pipelined(1000);
    s.write_all(&bytes).expect("one write of 1000 requests");
    let missing = collect_answers(&mut s, tids);
    assert!(
        missing.is_empty(),
        "{} of 1000 answers missing",
        missing.len()
    );

    // Many more, with the answers not read at first: the relay stops reading instead of
    // dropping them.
    let (bytes, tids) = pipelined(50_000);
    let mut writer = s.try_clone().expect("clone");
    let sent = std::thread::spawn(move || writer.write_all(&bytes));
    std::thread::sleep(Duration::from_secs(1));
    let missing = collect_answers(&mut s, tids);
    sent.join().expect("writer").expect("write 50000 requests");
    assert!(
        missing.is_empty(),
        "{} of 50000 answers missing",
        missing.len()
    );
    assert_eq!(
        relay.metric(r#"xdpturn_send_errors_total{transport="tcp"}"#),
        0.0
    );
}
