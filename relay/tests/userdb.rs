//! coturn's SQLite user database (`--userdb`) end to end: users, secrets and realm options
//! written by coturn's own `turnadmin` into a fresh database are what the real relay binary
//! authenticates and applies (coturn's `turnutils_uclient` allocating and relaying, a
//! codec-built client checking error codes); changes made while the relay runs are seen within
//! a bounded, measured time; a broken database leaves allocations and known users served,
//! reported in the metric, `/readyz` and the log, until it is restored; and a flood of
//! Allocates with random usernames makes a bounded number of queries.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::turn::TurnClient;
use common::uclient::{echo_peer, uclient};
use common::userdb::{
    CHANGE_BOUND, REALM, TIMEOUT, allocate, allocate_request, bare_allocate, echoes, fresh_ip,
    port_range, rand_u32, refused_call, relay_with, until, user_queries,
};
use common::{Relay, TempDir, require, run};
use relay::stun::{ErrorCode, Message, Nonce};

/// Runs coturn's `turnadmin` with `args` on the database `db`; panics with its output if it
/// fails.
fn turnadmin(db: &Path, args: &[&str]) {
    let tool = require("turnadmin", "coturn");
    let out = run(Command::new(tool).args(args).arg("-b").arg(db), TIMEOUT);
    assert!(
        out.status.success(),
        "turnadmin {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database written by `turnadmin`: user alice (password "wonderland") and the shared
/// secret "dbsecret" in the realm.
fn fresh_db(dir: &TempDir) -> PathBuf {
    let db = dir.path().join("turndb");
    turnadmin(&db, &["-a", "-u", "alice", "-r", REALM, "-p", "wonderland"]);
    turnadmin(&db, &["-s", "dbsecret", "-r", REALM]);
    db
}

/// The relay on loopback with `--userdb db` as its only credential source.
fn relay(db: &Path) -> Relay {
    relay_with(&["--userdb", db.to_str().expect("utf-8 path")])
}

#[test]
fn turnadmin_users_and_secrets_are_accepted_and_realm_options_apply() {
    let dir = TempDir::new("userdb-accept");
    let db = fresh_db(&dir);
    turnadmin(&db, &["-a", "-u", "tess", "-r", REALM, "-p", "tcp pass"]);
    let relay = relay(&db);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));

    // A long-term user, as turnadmin -a stored it (its hmackey), with coturn's client.
    let stats = uclient(
        relay.v4(),
        peer,
        &[
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-m",
            "1",
            "-n",
            "50",
            "-l",
            "120",
        ],
        TIMEOUT,
    );
    stats.assert_all_arrived(50, &log());
    // Over TCP, a user not looked up yet: the parked request is answered on its connection.
    let stats = uclient(
        relay.v4(),
        peer,
        &[
            "-t", "-u", "tess", "-w", "tcp pass", "-m", "1", "-n", "50", "-l", "120",
        ],
        TIMEOUT,
    );
    stats.assert_all_arrived(50, &log());
    // A REST credential from the secret turnadmin -s stored.
    let stats = uclient(
        relay.v4(),
        peer,
        &[
            "-W", "dbsecret", "-u", "bob", "-m", "1", "-n", "50", "-l", "120",
        ],
        TIMEOUT,
    );
    stats.assert_all_arrived(50, &log());

    // A wrong password and an unknown user are refused with 401, by coturn's client and ours
    // (each from an address of its own: the failed-authentication limiter is not under test).
    for (user, password) in [("alice", "mirror"), ("nobody", "wonderland")] {
        let stats = refused_call(&relay, peer, &["-u", user, "-w", password]);
        assert!(
            !stats.exited_ok && stats.received == 0,
            "{user}:{password} was accepted:\n{}{}",
            stats.text,
            log()
        );
        assert_eq!(
            allocate(&relay, &fresh_ip(), user, password),
            Err(Some(401)),
            "{user}:{password}{}",
            log()
        );
    }
    // A secret not in the database is refused too.
    let stats = refused_call(&relay, peer, &["-W", "not the secret", "-u", "bob"]);
    assert!(!stats.exited_ok && stats.received == 0, "{}", stats.text);

    // A realm option written by turnadmin applies: user-quota.
    let first = allocate(&relay, "127.0.0.3:0", "alice", "wonderland");
    let second = allocate(&relay, "127.0.0.3:0", "alice", "wonderland");
    assert!(
        first.is_ok() && second.is_ok(),
        "no quota yet: {first:?} {second:?}{}",
        log()
    );
    turnadmin(&db, &["-g", "-r", REALM, "--user-quota", "2"]);
    // alice holds at least the two allocations above: once it applies, another is refused
    // with 486.
    let took = until(CHANGE_BOUND, "user-quota 2 applied", &relay, || {
        allocate(&relay, "127.0.0.3:0", "alice", "wonderland") == Err(Some(486))
    });
    println!("turnadmin -g --user-quota 2 took effect after {took:?}");
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

#[test]
fn users_added_and_deleted_by_turnadmin_are_seen_while_running() {
    let dir = TempDir::new("userdb-live");
    let db = fresh_db(&dir);
    let relay = relay(&db);
    // Unknown now: refused (and remembered as unknown for a moment).
    assert_eq!(
        allocate(&relay, "127.0.0.4:0", "carol", "pw"),
        Err(Some(401))
    );

    turnadmin(&db, &["-a", "-u", "carol", "-r", REALM, "-p", "pw"]);
    let added = until(CHANGE_BOUND, "carol accepted", &relay, || {
        allocate(&relay, &fresh_ip(), "carol", "pw").is_ok()
    });
    println!("a user added by turnadmin -a was accepted after {added:?}");

    turnadmin(&db, &["-d", "-u", "carol", "-r", REALM]);
    let deleted = until(CHANGE_BOUND, "carol refused", &relay, || {
        allocate(&relay, &fresh_ip(), "carol", "pw") == Err(Some(401))
    });
    println!("a user deleted by turnadmin -d was refused after {deleted:?}");

    // Secrets rotate the same way: a new one is accepted, a deleted one refused.
    turnadmin(&db, &["-s", "rotated", "-r", REALM]);
    turnadmin(&db, &["-X", "dbsecret", "-r", REALM]);
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let username = format!("{expiry}:dave");
    let rest = |secret: &str| {
        relay::credentials::rest_credential(secret.as_bytes(), Some("dave"), expiry).password
    };
    let rotated = until(CHANGE_BOUND, "secret rotated", &relay, || {
        allocate(&relay, &fresh_ip(), &username, &rest("rotated")).is_ok()
            && allocate(&relay, &fresh_ip(), &username, &rest("dbsecret")) == Err(Some(401))
    });
    println!("a secret rotation by turnadmin -s/-X took effect after {rotated:?}");
    assert!(relay.metric(r#"xdpturn_userdb_queries_total{query="user",result="found"}"#) >= 1.0);
}

/// Runs an SQL statement on the database with Debian's `sqlite3`, as coturn's web admin writes
/// what `turnadmin` has no option for (peer ranges).
fn sqlite3(db: &Path, sql: &str) {
    let tool = require("sqlite3", "sqlite3");
    let out = run(Command::new(tool).arg(db).arg(sql), TIMEOUT);
    assert!(
        out.status.success(),
        "sqlite3 {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn peer_ranges_from_the_database_join_the_built_in_rules() {
    let dir = TempDir::new("userdb-peers");
    let db = fresh_db(&dir);
    // No --allow-peer: the built-in rules deny the loopback echo peer.
    let (min, max) = port_range();
    let relay = Relay::start(&[
        "--realm",
        REALM,
        "--userdb",
        db.to_str().expect("utf-8 path"),
        "--min-port",
        &min,
        "--max-port",
        &max,
    ]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let mut client = TurnClient::new(relay.v4(), "127.0.0.12:0", "alice", "wonderland", REALM);
    client.allocate().expect("alice allocates");
    assert_eq!(client.create_permission(peer), Some(403), "built-in deny");

    // An allowed range (coturn's FIRST-LAST form) lets the peer in...
    sqlite3(
        &db,
        &format!(
            "INSERT INTO allowed_peer_ip (realm, ip_range) VALUES ('{REALM}', '127.0.0.0-127.0.0.255')"
        ),
    );
    let allowed = until(CHANGE_BOUND, "allowed_peer_ip applied", &relay, || {
        client.create_permission(peer).is_none()
    });
    println!("an allowed_peer_ip row took effect after {allowed:?}");
    assert!(echoes(&client, peer), "relaying to the allowed peer");

    // ... and a denied address inside it (the longer prefix) shuts that one out again.
    sqlite3(
        &db,
        &format!("INSERT INTO denied_peer_ip (realm, ip_range) VALUES ('{REALM}', '127.0.0.1')"),
    );
    let denied = until(CHANGE_BOUND, "denied_peer_ip applied", &relay, || {
        client.create_permission(peer) == Some(403)
    });
    println!("a denied_peer_ip row took effect after {denied:?}");
}

#[test]
fn a_broken_database_leaves_known_users_and_allocations_served_until_it_returns() {
    let dir = TempDir::new("userdb-down");
    let db = fresh_db(&dir);
    let relay = relay(&db);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));

    let mut client = TurnClient::new(relay.v4(), "127.0.0.7:0", "alice", "wonderland", REALM);
    client.allocate().expect("alice allocates");
    assert_eq!(client.create_permission(peer), None);
    assert!(echoes(&client, peer), "relaying before{}", log());

    // The database goes: moved away, and garbage where it was.
    let away = dir.path().join("turndb.away");
    std::fs::rename(&db, &away).expect("move the database away");
    std::fs::write(&db, b"this is not an SQLite database").expect("garbage");
    until(CHANGE_BOUND, "userdb_up 0", &relay, || {
        relay.metric("xdpturn_userdb_up") == 0.0
    });
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
        allocate(&relay, "127.0.0.8:0", "alice", "wonderland").is_ok(),
        "known user while down{}",
        log()
    );
    assert_eq!(
        allocate(&relay, "127.0.0.8:0", "erin", "pw"),
        Err(Some(401)),
        "{}",
        log()
    );
    let said = relay
        .log_lines()
        .iter()
        .filter(|l| l.contains("user database unavailable"))
        .count();
    assert_eq!(said, 1, "said once{}", log());

    // Restored: seen again by itself.
    std::fs::remove_file(&db).expect("remove garbage");
    std::fs::rename(&away, &db).expect("restore");
    let back = until(CHANGE_BOUND, "userdb_up 1", &relay, || {
        relay.metric("xdpturn_userdb_up") == 1.0
    });
    println!("the restored database was seen after {back:?}");
    relay.wait_for_log(&["user database answers again"], Duration::from_secs(5));
    let (status, body) = relay.http_get("/readyz");
    assert_eq!(
        (status, body.contains("userdb: up\n")),
        (200, true),
        "{body}"
    );
    assert!(echoes(&client, peer), "relaying after{}", log());
    turnadmin(&db, &["-a", "-u", "frank", "-r", REALM, "-p", "pw"]);
    until(
        CHANGE_BOUND,
        "a user added after the return",
        &relay,
        || allocate(&relay, &fresh_ip(), "frank", "pw").is_ok(),
    );
}

#[test]
fn a_flood_of_random_usernames_makes_a_bounded_number_of_queries() {
    const FLOOD: u32 = 2000;
    let dir = TempDir::new("userdb-flood");
    let db = fresh_db(&dir);
    let relay = relay(&db);
    let socket = std::net::UdpSocket::bind("127.0.0.9:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // One challenge for a nonce, then the flood: every request with a name of its own.
    socket.send_to(&bare_allocate(), relay.v4()).expect("send");
    let mut buf = [0u8; 1500];
    let nonce = loop {
        let (n, _) = socket.recv_from(&mut buf).expect("a challenge");
        if let Ok(m) = Message::decode(&buf[..n])
            && let Some(Ok(Nonce(nonce))) = m.get::<Nonce>()
        {
            break nonce.to_owned();
        }
    };
    let before = user_queries(&relay);
    let overflows_before = udp_receive_buffer_errors();
    let started = Instant::now();
    for i in 0..FLOOD {
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
    let made = user_queries(&relay) - before;
    let busy =
        relay.metric(r#"xdpturn_dropped_packets_total{reason="userdb_busy",transport="udp"}"#);
    let limited = relay
        .metric(r#"xdpturn_dropped_packets_total{reason="auth_rate_limited",transport="udp"}"#);
    let overflowed = udp_receive_buffer_errors() - overflows_before;
    println!(
        "flood: {FLOOD} Allocates with random usernames sent in {sent_in:?}: {made} user queries, \
         {refused} answered 401, {busy} dropped over the lookup budget, {limited} dropped by the \
         failed-authentication limiter, {overflowed} lost in full UDP receive buffers (the \
         host's count, any socket)"
    );
    assert!(made >= 1.0, "some lookups were made");
    assert!(
        made <= f64::from(FLOOD) / 10.0,
        "{made} queries for {FLOOD} requests: not bounded\n{}",
        relay.http_get("/metrics").1
    );
    assert!(busy + limited > 0.0, "the rest was dropped, counted");
    // A real user from elsewhere is not shut out.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        allocate(&relay, "127.0.0.11:0", "alice", "wonderland").is_ok(),
        "alice after the flood:\n{}",
        relay.log_lines().join("\n")
    );
}

/// The host's count of UDP datagrams dropped for a full receive buffer (`/proc/net/snmp`).
fn udp_receive_buffer_errors() -> i64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
