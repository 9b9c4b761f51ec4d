//! What the user database tests share, whatever the database (`userdb.rs` for SQLite,
//! `userdb_servers.rs` for PostgreSQL and MariaDB, `userdb_redis.rs` for Redis): the realm, a
//! relay with a user database as its only credential source, allocations from fresh loopback
//! addresses, waiting for a change to be seen, a refused `turnutils_uclient` call, a relayed
//! round trip, and the flood's Allocate requests and the count of user queries. The sequences
//! every database goes through are written here once, whatever differs (how the database is
//! written, stopped and started again, what the output calls it) taken as parameters: accepted
//! and refused credentials, a user added and deleted, a secret rotated, a realm's user quota,
//! peer ranges, the database gone and back, and the flood.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use relay::stun::{
    Class, Encoder, ErrorCode, Message, MessageType, Method, Nonce, Realm, RequestedTransport,
    TransactionId, Username, long_term_key_md5,
};

use super::Relay;
use super::turn::TurnClient;
use super::uclient::{Stats, uclient};

/// `turnadmin` on the database under test, with `args` (the database's own option added).
pub type Turnadmin<'a> = &'a dyn Fn(&[&str]);

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

/// A call by coturn's client with `creds` that relays all of its `count` packets.
pub fn accepted_call(relay: &Relay, peer: SocketAddr, creds: &[&str], count: u64, log: &str) {
    let n = count.to_string();
    let args = [creds, &["-m", "1", "-n", &n, "-l", "120"]].concat();
    uclient(relay.v4(), peer, &args, TIMEOUT).assert_all_arrived(count, log);
}

/// Wrong credentials are refused: a wrong password for alice and an unknown user with 401, by
/// coturn's client and ours (each from an address of its own: the failed-authentication limiter
/// is not under test), and a secret not in the database.
pub fn wrong_credentials_are_refused(relay: &Relay, peer: SocketAddr, log: &dyn Fn() -> String) {
    for (user, password) in [("alice", "mirror"), ("nobody", "wonderland")] {
        let stats = refused_call(relay, peer, &["-u", user, "-w", password]);
        assert!(
            !stats.exited_ok && stats.received == 0,
            "{user}:{password} was accepted:\n{}{}",
            stats.text,
            log()
        );
        assert_eq!(
            allocate(relay, &fresh_ip(), user, password),
            Err(Some(401)),
            "{user}:{password}{}",
            log()
        );
    }
    // A secret not in the database is refused too.
    let stats = refused_call(relay, peer, &["-W", "not the secret", "-u", "bob"]);
    assert!(
        !stats.exited_ok && stats.received == 0,
        "{}{}",
        stats.text,
        log()
    );
}

/// A user carol added by `turnadmin` while the relay runs is accepted, and refused again once
/// deleted, each within [`CHANGE_BOUND`]; `said` prefixes the measured times printed, `tool`
/// names the command.
pub fn added_and_deleted_user_is_seen(relay: &Relay, turnadmin: Turnadmin, said: &str, tool: &str) {
    // Unknown now: refused (and remembered as unknown for a moment).
    assert_eq!(allocate(relay, &fresh_ip(), "carol", "pw"), Err(Some(401)));
    turnadmin(&["-a", "-u", "carol", "-r", REALM, "-p", "pw"]);
    let added = until(CHANGE_BOUND, "carol accepted", relay, || {
        allocate(relay, &fresh_ip(), "carol", "pw").is_ok()
    });
    println!("{said}a user added by {tool} -a was accepted after {added:?}");
    turnadmin(&["-d", "-u", "carol", "-r", REALM]);
    let deleted = until(CHANGE_BOUND, "carol refused", relay, || {
        allocate(relay, &fresh_ip(), "carol", "pw") == Err(Some(401))
    });
    println!("{said}a user deleted by {tool} -d was refused after {deleted:?}");
}

/// Secrets rotate while the relay runs: a secret added by `turnadmin -s` is accepted and the
/// "dbsecret" deleted by `-X` refused within [`CHANGE_BOUND`]; users were found in the database.
pub fn rotated_secret_is_seen(relay: &Relay, turnadmin: Turnadmin, tool: &str) {
    turnadmin(&["-s", "rotated", "-r", REALM]);
    turnadmin(&["-X", "dbsecret", "-r", REALM]);
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let username = format!("{expiry}:dave");
    let rest = |secret: &str| {
        relay::credentials::rest_credential(secret.as_bytes(), Some("dave"), expiry).password
    };
    let rotated = until(CHANGE_BOUND, "secret rotated", relay, || {
        allocate(relay, &fresh_ip(), &username, &rest("rotated")).is_ok()
            && allocate(relay, &fresh_ip(), &username, &rest("dbsecret")) == Err(Some(401))
    });
    println!("a secret rotation by {tool} -s/-X took effect after {rotated:?}");
    assert!(relay.metric(r#"xdpturn_userdb_queries_total{query="user",result="found"}"#) >= 1.0);
}

/// A realm option written by `turnadmin` applies: user-quota 2 refuses alice's third allocation
/// with 486 within [`CHANGE_BOUND`], the realm read is logged, and the database is up.
pub fn realm_user_quota_applies(relay: &Relay, turnadmin: Turnadmin, tool: &str) {
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));
    let bind = fresh_ip();
    let first = allocate(relay, &bind, "alice", "wonderland");
    let second = allocate(relay, &bind, "alice", "wonderland");
    assert!(
        first.is_ok() && second.is_ok(),
        "no quota yet: {first:?} {second:?}{}",
        log()
    );
    turnadmin(&["-g", "-r", REALM, "--user-quota", "2"]);
    // alice holds at least the two allocations above: once it applies, another is refused
    // with 486.
    let took = until(CHANGE_BOUND, "user-quota 2 applied", relay, || {
        allocate(relay, &bind, "alice", "wonderland") == Err(Some(486))
    });
    println!("{tool} -g --user-quota 2 took effect after {took:?}");
    assert!(
        relay
            .log_lines()
            .iter()
            .any(|l| l.contains("realm read") && l.contains("user_quota=Some(2)")),
        "{}",
        log()
    );
    assert!(
        relay.metric(r#"xdpturn_userdb_up"#) == 1.0,
        "{}",
        relay.http_get("/metrics").1
    );
    let (status, body) = relay.http_get("/readyz");
    assert_eq!(
        (status, body.contains("userdb: up\n")),
        (200, true),
        "{body}"
    );
}

/// Peer ranges from the database join the relay's built-in rules (which deny the loopback echo
/// peer): after `allow` an allowed range lets `peer` in, after `deny` a denied address inside
/// it shuts it out again, each within [`CHANGE_BOUND`]. `allowed`, `denied` and `unit` name
/// what was written (a table's row, a set's member).
pub fn peer_ranges_join_the_built_in_rules(
    relay: &Relay,
    peer: SocketAddr,
    (allowed, allow): (&str, &dyn Fn()),
    (denied, deny): (&str, &dyn Fn()),
    unit: &str,
) {
    let mut client = TurnClient::new(relay.v4(), &fresh_ip(), "alice", "wonderland", REALM);
    client.allocate().expect("alice allocates");
    assert_eq!(client.create_permission(peer), Some(403), "built-in deny");

    // An allowed range (coturn's FIRST-LAST form) lets the peer in...
    allow();
    let took = until(CHANGE_BOUND, &format!("{allowed} applied"), relay, || {
        client.create_permission(peer).is_none()
    });
    println!("an {allowed} {unit} took effect after {took:?}");
    assert!(echoes(&client, peer), "relaying to the allowed peer");

    // ... and a denied address inside it (the longer prefix) shuts that one out again.
    deny();
    let took = until(CHANGE_BOUND, &format!("{denied} applied"), relay, || {
        client.create_permission(peer) == Some(403)
    });
    println!("a {denied} {unit} took effect after {took:?}");
}

/// The database under test as [`database_gone_and_back`] takes it away and brings it back.
pub struct Outage<'a, D: ?Sized> {
    pub db: &'a mut D,
    /// Takes the database away (stopped, broken).
    pub stop: fn(&mut D),
    /// Brings it back as it was.
    pub start: fn(&mut D),
    /// Runs `turnadmin` on it.
    pub turnadmin: fn(&D, &[&str]),
    /// Prefixes the measured times printed (which database).
    pub said: &'a str,
}

/// The database goes away and comes back while alice holds an allocation: it keeps relaying and
/// is refreshed, the known user allocates again past the cache's lifetime and an unknown one is
/// refused, the metric, `/readyz` and the log (once) say it is down; once back it is seen by
/// itself within [`CHANGE_BOUND`], and users added then are accepted.
pub fn database_gone_and_back<D: ?Sized>(relay: &Relay, peer: SocketAddr, outage: Outage<'_, D>) {
    let Outage {
        db,
        stop,
        start,
        turnadmin,
        said,
    } = outage;
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));
    let mut client = TurnClient::new(relay.v4(), &fresh_ip(), "alice", "wonderland", REALM);
    client.allocate().expect("alice allocates");
    assert_eq!(client.create_permission(peer), None);
    assert!(echoes(&client, peer), "relaying before{}", log());

    stop(db);
    let down = until(CHANGE_BOUND, "userdb_up 0", relay, || {
        relay.metric("xdpturn_userdb_up") == 0.0
    });
    println!("{said}the database gone was noticed after {down:?}");
    let (status, body) = relay.http_get("/readyz");
    assert_eq!(status, 200, "still ready: {body}");
    assert!(
        body.contains("userdb: down (serving with what was last read)\n"),
        "{body}"
    );

    // The allocation keeps relaying, and is refreshed (authenticated from memory).
    assert!(echoes(&client, peer), "relaying while down{}", log());
    assert_eq!(client.create_permission(peer), None, "{}", log());
    // The known user allocates again, past the cache's lifetime (the refresh fails, the key
    // read last serves); an unknown one is refused.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        allocate(relay, &fresh_ip(), "alice", "wonderland").is_ok(),
        "known user while down{}",
        log()
    );
    assert_eq!(
        allocate(relay, &fresh_ip(), "erin", "pw"),
        Err(Some(401)),
        "{}",
        log()
    );
    let told = relay
        .log_lines()
        .iter()
        .filter(|l| l.contains("user database unavailable"))
        .count();
    assert_eq!(told, 1, "said once{}", log());

    // Back: seen again by itself, and new users with it.
    start(db);
    let back = until(CHANGE_BOUND, "userdb_up 1", relay, || {
        relay.metric("xdpturn_userdb_up") == 1.0
    });
    println!("{said}the database back was seen after {back:?}");
    relay.wait_for_log(&["user database answers again"], Duration::from_secs(5));
    let (status, body) = relay.http_get("/readyz");
    assert_eq!(
        (status, body.contains("userdb: up\n")),
        (200, true),
        "{body}"
    );
    assert!(echoes(&client, peer), "relaying after{}", log());
    turnadmin(db, &["-a", "-u", "frank", "-r", REALM, "-p", "pw"]);
    until(CHANGE_BOUND, "a user added after the return", relay, || {
        allocate(relay, &fresh_ip(), "frank", "pw").is_ok()
    });
}

/// What a flood of Allocates with random usernames did.
pub struct Flood {
    /// The requests sent.
    pub requests: u32,
    /// How long sending them took.
    pub sent_in: Duration,
    /// The user queries the relay made meanwhile.
    pub made: f64,
    /// The requests answered 401.
    pub refused: u32,
    /// The requests dropped over the lookup budget.
    pub busy: f64,
    /// The requests dropped by the failed-authentication limiter.
    pub limited: f64,
}

/// One challenge for a nonce from `bind`, then `requests` Allocates with a username of their own
/// each; counted once the answers are read and the lookups still under way have ended.
pub fn flood_of_random_usernames(relay: &Relay, bind: &str, requests: u32) -> Flood {
    let socket = std::net::UdpSocket::bind(bind).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // The challenge, asked for again if a loaded host is slow to answer.
    let mut buf = [0u8; 1500];
    let nonce = (0..10)
        .find_map(|_| {
            socket.send_to(&bare_allocate(), relay.v4()).expect("send");
            let (n, _) = socket.recv_from(&mut buf).ok()?;
            let m = Message::decode(&buf[..n]).ok()?;
            let Some(Ok(Nonce(nonce))) = m.get::<Nonce>() else {
                return None;
            };
            Some(nonce.to_owned())
        })
        .expect("a challenge to one of 10 Allocates");
    let before = user_queries(relay);
    let started = Instant::now();
    for i in 0..requests {
        let name = format!("rnd-{i}-{:08x}", rand_u32(i));
        socket
            .send_to(&allocate_request(&name, &nonce, i + 1), relay.v4())
            .expect("send");
    }
    let sent_in = started.elapsed();
    let mut refused = 0;
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        if Message::decode(&buf[..n])
            .ok()
            .and_then(|m| m.get::<ErrorCode>().and_then(Result::ok).map(|e| e.code))
            == Some(401)
        {
            refused += 1;
        }
    }
    // Settle: lookups still under way end.
    std::thread::sleep(Duration::from_secs(2));
    Flood {
        requests,
        sent_in,
        made: user_queries(relay) - before,
        refused,
        busy: relay
            .metric(r#"xdpturn_dropped_packets_total{reason="userdb_busy",transport="udp"}"#),
        limited: relay
            .metric(r#"xdpturn_dropped_packets_total{reason="auth_rate_limited",transport="udp"}"#),
    }
}

/// The flood made some lookups but at most one for ten requests, dropped (and counted) the
/// rest, and a real user from elsewhere is not shut out.
pub fn flood_was_bounded(relay: &Relay, flood: &Flood) {
    let Flood {
        requests,
        made,
        busy,
        limited,
        ..
    } = *flood;
    assert!(made >= 1.0, "some lookups were made");
    assert!(
        made <= f64::from(requests) / 10.0,
        "{made} queries for {requests} requests: not bounded\n{}",
        relay.http_get("/metrics").1
    );
    assert!(busy + limited > 0.0, "the rest was dropped, counted");
    // A real user from elsewhere is not shut out.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        allocate(relay, &fresh_ip(), "alice", "wonderland").is_ok(),
        "alice after the flood:\n{}",
        relay.log_lines().join("\n")
    );
}
