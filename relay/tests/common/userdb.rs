//! What the user database tests share, whatever the database (`userdb.rs` for SQLite,
//! `userdb_servers.rs` for PostgreSQL and MariaDB, `userdb_redis.rs` for Redis): the realm, a
//! relay with a user database as its only credential source, allocations from fresh loopback
//! addresses, waiting for a change to be seen, a refused `turnutils_uclient` call, a relayed
//! round trip, and the flood's Allocate requests and the count of user queries.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use relay::stun::{
    Class, Encoder, Message, MessageType, Method, Nonce, Realm, RequestedTransport, TransactionId,
    Username, long_term_key_md5,
};

use super::Relay;
use super::turn::TurnClient;
use super::uclient::{Stats, uclient};

pub const REALM: &str = "example.org";
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// How long a change made by `turnadmin` may take to be seen (the relay aims at a few seconds).
pub const CHANGE_BOUND: Duration = Duration::from_secs(12);

/// A relay port range of its own for each relay a test starts, so parallel tests do not meet.
pub fn port_range() -> (String, String) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let base = 30_000 + (std::process::id() % 100) as u16 * 40 + n * 200 % 8_000;
    (base.to_string(), (base + 199).to_string())
}

/// The relay on loopback with the user database `db` (e.g. `["--userdb", FILE]`) as its only
/// credential source, the loopback echo peer allowed.
pub fn relay_with(db: &[&str]) -> Relay {
    let (min, max) = port_range();
    let args = [
        &["--realm", REALM][..],
        db,
        &[
            "--allow-peer",
            "127.0.0.1",
            "--min-port",
            &min,
            "--max-port",
            &max,
        ],
    ]
    .concat();
    Relay::start(&args)
}

/// An allocation by `user` from a socket of its own on `bind`'s address: the relayed address or
/// the error code.
pub fn allocate(
    relay: &Relay,
    bind: &str,
    user: &str,
    password: &str,
) -> Result<SocketAddr, Option<u16>> {
    TurnClient::new(relay.v4(), bind, user, password, REALM).allocate()
}

/// A loopback address of its own for each client: a client refused over and over from one
/// address would meet the failed-authentication limiter, which is not what these tests measure.
pub fn fresh_ip() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("127.1.{}.{}:0", n / 250 % 250, n % 250 + 1)
}

/// Waits until `check` holds, up to `bound`; returns how long it took.
pub fn until(
    bound: Duration,
    what: &str,
    relay: &Relay,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "{what}: not within {bound:?}; relay log:\n{}",
            relay.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A short call with `creds` that is expected to be refused, from an address of its own (the
/// failed-authentication limiter is not under test).
pub fn refused_call(relay: &Relay, peer: SocketAddr, creds: &[&str]) -> Stats {
    let local = fresh_ip();
    let args = [
        &["-L", local.trim_end_matches(":0")][..],
        creds,
        &["-m", "1", "-n", "5", "-l", "120"],
    ]
    .concat();
    uclient(relay.v4(), peer, &args, Duration::from_secs(30))
}

/// A Send indication to `peer` and the Data indication the echo peer sends back.
pub fn echoes(client: &TurnClient, peer: SocketAddr) -> bool {
    client.send(peer, b"ping through the relay");
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let Ok((n, _)) = client.socket.recv_from(&mut buf) else {
            return false;
        };
        if Message::decode(&buf[..n])
            .is_ok_and(|m| m.method() == Method::DATA && m.class() == Class::Indication)
        {
            return true;
        }
    }
    false
}

/// An unauthenticated Allocate: its 401 carries a nonce.
pub fn bare_allocate() -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let mut e = Encoder::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Request),
        TransactionId::new([9; 12]),
    )
    .expect("header");
    e.add(&RequestedTransport::UDP).expect("rt");
    let len = e.finish();
    buf.truncate(len);
    buf
}

/// An authenticated Allocate for `user` in the realm, transaction `n` (whatever the password: a
/// random user is unknown).
pub fn allocate_request(user: &str, nonce: &str, n: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&n.to_be_bytes());
    let mut e = Encoder::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Request),
        TransactionId::new(tid),
    )
    .expect("header");
    e.add(&RequestedTransport::UDP).expect("rt");
    e.add(&Username(user)).expect("user");
    e.add(&Realm(REALM)).expect("realm");
    e.add(&Nonce(nonce)).expect("nonce");
    e.message_integrity(&long_term_key_md5(user, REALM, "guess"))
        .expect("mi");
    let len = e.finish();
    buf.truncate(len);
    buf
}

/// The user lookups the relay made (every result).
pub fn user_queries(relay: &Relay) -> f64 {
    ["found", "absent", "error"]
        .iter()
        .map(|r| {
            relay.metric(&format!(
                r#"xdpturn_userdb_queries_total{{query="user",result="{r}"}}"#
            ))
        })
        .sum()
}

/// A pseudo-random number (splitmix32-ish) so that names do not follow a pattern a cache could
/// exploit.
pub fn rand_u32(i: u32) -> u32 {
    let mut x = i.wrapping_mul(0x9E37_79B9) ^ std::process::id();
    x ^= x >> 16;
    x = x.wrapping_mul(0x85EB_CA6B);
    x ^ (x >> 13)
}
