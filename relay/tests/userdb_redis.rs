//! coturn's Redis user database (`--redis-userdb`) end to end, against a real `redis-server`
//! started here (loopback, a free port, a directory of its own, a password, no automatic
//! snapshots): users, secrets and realm options written by coturn's own `turnadmin -N` are
//! what the real relay binary authenticates and applies (coturn's `turnutils_uclient`
//! allocating and relaying, with long-term and REST credentials, a codec-built client checking
//! error codes); changes made while the relay runs are seen within a bounded, measured time; a
//! server that stops leaves allocations and known users served, reported in the metric and
//! `/readyz`, until it is back on its port; and a flood of Allocates with random usernames makes
//! a bounded number of queries. The password never reaches the relay's log.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::turn::TurnClient;
use common::uclient::{echo_peer, uclient};
use common::userdb::{
    CHANGE_BOUND, REALM, TIMEOUT, allocate, allocate_request, bare_allocate, echoes, fresh_ip,
    port_range, rand_u32, refused_call, until, user_queries,
};
use common::{Guard, Relay, TempDir, require, run};
use relay::stun::{ErrorCode, Message, Nonce};

/// The server's password: in the connection string, never in the relay's log.
const PASSWORD: &str = "redis-pass-7f3a";

/// A `redis-server` of the test's own: loopback, a free port, its own directory (where
/// `turnadmin`'s SAVE writes its snapshot, which a restart reads back), killed by PID when
/// dropped.
struct RedisServer {
    dir: PathBuf,
    port: u16,
    guard: Option<Guard>,
}

impl RedisServer {
    fn start(dir: &TempDir) -> Self {
        let dir = dir.path().join("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        // A port that was free a moment ago: another process may take it first, so try again.
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut server = Self {
                dir: dir.clone(),
                port,
                guard: None,
            };
            if server.run() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 10 free ports");
    }

    /// Starts the server on its port; false if it exited (the port was taken).
    fn run(&mut self) -> bool {
        let tool = require("redis-server", "redis-server");
        let child = Command::new(tool)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut guard = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = guard.0.try_wait() {
                return false;
            }
            if self.answers() {
                self.guard = Some(guard);
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server on port {} did not answer: {}",
            self.port,
            std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
        );
    }

    /// It answers PING (after AUTH) with PONG.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let auth = format!("AUTH {PASSWORD}\r\nPING\r\n");
        if s.write_all(auth.as_bytes()).is_err() {
            return false;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"+PONG\r\n") {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
        true
    }

    /// Kills the server (by its PID); what `turnadmin` saved stays in its directory.
    fn stop(&mut self) {
        self.guard = None;
    }

    /// Starts it again on the same port, from what was saved.
    fn restart(&mut self) {
        assert!(
            self.run(),
            "redis-server did not start again on {}",
            self.port
        );
    }

    /// coturn's connection string for it, as `turnadmin -N` and `--redis-userdb` take it.
    fn conn(&self) -> String {
        format!(
            "ip=127.0.0.1 port={} dbname=0 password={PASSWORD} connect_timeout=5",
            self.port
        )
    }

    /// Runs coturn's `turnadmin -N` with `args`; panics with its output if it fails.
    fn turnadmin(&self, args: &[&str]) {
        let tool = require("turnadmin", "coturn");
        let out = run(
            Command::new(tool).args(args).arg("-N").arg(self.conn()),
            TIMEOUT,
        );
        assert!(
            out.status.success(),
            "turnadmin {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `redis-cli` with `args` (what `turnadmin` has no option for: peer ranges).
    fn cli(&self, args: &[&str]) -> String {
        let tool = require("redis-cli", "redis-tools");
        let out = run(
            Command::new(tool)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .env("REDISCLI_AUTH", PASSWORD)
                .args(args),
            TIMEOUT,
        );
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A fresh server with what `turnadmin` wrote: user alice (password "wonderland") and the
/// shared secret "dbsecret" in the realm.
fn fresh_server(dir: &TempDir) -> RedisServer {
    let server = RedisServer::start(dir);
    server.turnadmin(&["-a", "-u", "alice", "-r", REALM, "-p", "wonderland"]);
    server.turnadmin(&["-s", "dbsecret", "-r", REALM]);
    server
}

/// The relay on loopback with `--redis-userdb` as its only credential source.
fn relay(server: &RedisServer, extra: &[&str]) -> Relay {
    let (min, max) = port_range();
    let conn = server.conn();
    let relay = Relay::start(
        &[
            &[
                "--realm",
                REALM,
                "--redis-userdb",
                &conn,
                "--min-port",
                &min,
                "--max-port",
                &max,
            ][..],
            extra,
        ]
        .concat(),
    );
    relay.wait_for_log(&["user database open"], Duration::from_secs(10));
    relay
}

fn assert_no_password(relay: &Relay) {
    let lines = relay.log_lines();
    assert!(
        !lines.iter().any(|l| l.contains(PASSWORD)),
        "the password is in the log:\n{}",
        lines.join("\n")
    );
}

#[test]
fn turnadmin_users_and_secrets_are_accepted_and_realm_options_apply() {
    let dir = TempDir::new("redis-accept");
    let server = fresh_server(&dir);
    let relay = relay(&server, &["--allow-peer", "127.0.0.1"]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));
    let database = relay.wait_for_log(&["user database open"], Duration::from_secs(1));
    assert!(
        database.contains(&format!("redis 127.0.0.1:{} db 0", server.port)),
        "{database}"
    );

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

    // A wrong password and an unknown user are refused with 401, by coturn's client and ours.
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

    // An open password stored by hand (coturn's Redis-only option) is accepted too.
    server.cli(&[
        "SET",
        &format!("turn/realm/{REALM}/user/olga/password"),
        "open",
    ]);
    until(CHANGE_BOUND, "olga accepted", &relay, || {
        allocate(&relay, &fresh_ip(), "olga", "open").is_ok()
    });
    assert_eq!(
        allocate(&relay, &fresh_ip(), "olga", "shut"),
        Err(Some(401))
    );

    // A realm option written by turnadmin applies: user-quota.
    let first = allocate(&relay, "127.2.250.3:0", "alice", "wonderland");
    let second = allocate(&relay, "127.2.250.3:0", "alice", "wonderland");
    assert!(
        first.is_ok() && second.is_ok(),
        "no quota yet: {first:?} {second:?}{}",
        log()
    );
    server.turnadmin(&["-g", "-r", REALM, "--user-quota", "2"]);
    let took = until(CHANGE_BOUND, "user-quota 2 applied", &relay, || {
        allocate(&relay, "127.2.250.3:0", "alice", "wonderland") == Err(Some(486))
    });
    println!("turnadmin -N -g --user-quota 2 took effect after {took:?}");
    assert!(
        relay
            .log_lines()
            .iter()
            .any(|l| l.contains("realm read") && l.contains("user_quota=Some(2)")),
        "{}",
        log()
    );
    assert_eq!(relay.metric("xdpturn_userdb_up"), 1.0);
    let (status, body) = relay.http_get("/readyz");
    assert_eq!(
        (status, body.contains("userdb: up\n")),
        (200, true),
        "{body}"
    );
    assert_no_password(&relay);
}

#[test]
fn peer_ranges_from_the_database_join_the_built_in_rules() {
    let dir = TempDir::new("redis-peers");
    let server = fresh_server(&dir);
    // No --allow-peer: the built-in rules deny the loopback echo peer.
    let relay = relay(&server, &[]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let mut client = TurnClient::new(relay.v4(), &fresh_ip(), "alice", "wonderland", REALM);
    client.allocate().expect("alice allocates");
    assert_eq!(client.create_permission(peer), Some(403), "built-in deny");

    // An allowed range in coturn's set (FIRST-LAST form) lets the peer in...
    let key = |what: &str| format!("turn/realm/{REALM}/{what}");
    server.cli(&["SADD", &key("allowed-peer-ip"), "127.0.0.0-127.0.0.255"]);
    let allowed = until(CHANGE_BOUND, "allowed-peer-ip applied", &relay, || {
        client.create_permission(peer).is_none()
    });
    println!("an allowed-peer-ip member took effect after {allowed:?}");
    assert!(echoes(&client, peer), "relaying to the allowed peer");

    // ... and a denied address inside it (the longer prefix) shuts that one out again.
    server.cli(&["SADD", &key("denied-peer-ip"), "127.0.0.1"]);
    let denied = until(CHANGE_BOUND, "denied-peer-ip applied", &relay, || {
        client.create_permission(peer) == Some(403)
    });
    println!("a denied-peer-ip member took effect after {denied:?}");
}

#[test]
fn users_and_secrets_changed_by_turnadmin_are_seen_while_running() {
    let dir = TempDir::new("redis-live");
    let server = fresh_server(&dir);
    let relay = relay(&server, &[]);
    // Unknown now: refused (and remembered as unknown for a moment).
    assert_eq!(allocate(&relay, &fresh_ip(), "carol", "pw"), Err(Some(401)));

    server.turnadmin(&["-a", "-u", "carol", "-r", REALM, "-p", "pw"]);
    let added = until(CHANGE_BOUND, "carol accepted", &relay, || {
        allocate(&relay, &fresh_ip(), "carol", "pw").is_ok()
    });
    println!("a user added by turnadmin -N -a was accepted after {added:?}");

    server.turnadmin(&["-d", "-u", "carol", "-r", REALM]);
    let deleted = until(CHANGE_BOUND, "carol refused", &relay, || {
        allocate(&relay, &fresh_ip(), "carol", "pw") == Err(Some(401))
    });
    println!("a user deleted by turnadmin -N -d was refused after {deleted:?}");

    // Secrets rotate: a new one is accepted, a deleted one refused.
    server.turnadmin(&["-s", "rotated", "-r", REALM]);
    server.turnadmin(&["-X", "dbsecret", "-r", REALM]);
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
    println!("a secret rotation by turnadmin -N -s/-X took effect after {rotated:?}");
    assert!(relay.metric(r#"xdpturn_userdb_queries_total{query="user",result="found"}"#) >= 1.0);
    assert_no_password(&relay);
}

#[test]
fn a_stopped_server_leaves_known_users_and_allocations_served_until_it_returns() {
    let dir = TempDir::new("redis-down");
    let mut server = fresh_server(&dir);
    let relay = relay(&server, &["--allow-peer", "127.0.0.1"]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));

    let mut client = TurnClient::new(relay.v4(), &fresh_ip(), "alice", "wonderland", REALM);
    client.allocate().expect("alice allocates");
    assert_eq!(client.create_permission(peer), None);
    assert!(echoes(&client, peer), "relaying before{}", log());

    // The server goes (killed by its PID).
    server.stop();
    let down = until(CHANGE_BOUND, "userdb_up 0", &relay, || {
        relay.metric("xdpturn_userdb_up") == 0.0
    });
    println!("the stopped server was noticed after {down:?}");
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
        allocate(&relay, &fresh_ip(), "alice", "wonderland").is_ok(),
        "known user while down{}",
        log()
    );
    assert_eq!(
        allocate(&relay, &fresh_ip(), "erin", "pw"),
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

    // Back on its port, with what turnadmin saved: seen again by itself.
    server.restart();
    let back = until(CHANGE_BOUND, "userdb_up 1", &relay, || {
        relay.metric("xdpturn_userdb_up") == 1.0
    });
    println!("the restarted server was seen after {back:?}");
    relay.wait_for_log(&["user database answers again"], Duration::from_secs(5));
    let (status, body) = relay.http_get("/readyz");
    assert_eq!(
        (status, body.contains("userdb: up\n")),
        (200, true),
        "{body}"
    );
    assert!(echoes(&client, peer), "relaying after{}", log());
    server.turnadmin(&["-a", "-u", "frank", "-r", REALM, "-p", "pw"]);
    until(
        CHANGE_BOUND,
        "a user added after the return",
        &relay,
        || allocate(&relay, &fresh_ip(), "frank", "pw").is_ok(),
    );
    assert_no_password(&relay);
}

#[test]
fn a_flood_of_random_usernames_makes_a_bounded_number_of_queries() {
    const FLOOD: u32 = 2000;
    let dir = TempDir::new("redis-flood");
    let server = fresh_server(&dir);
    let relay = relay(&server, &[]);
    let socket = std::net::UdpSocket::bind("127.2.251.9:0").expect("bind");
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
    let commands_before = commands_processed(&server);
    for i in 0..FLOOD {
        let name = format!("rnd-{i}-{:08x}", rand_u32(i));
        socket
            .send_to(&allocate_request(&name, &nonce, i + 1), relay.v4())
            .expect("send");
    }
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
    let commands = commands_processed(&server) - commands_before;
    let busy =
        relay.metric(r#"xdpturn_dropped_packets_total{reason="userdb_busy",transport="udp"}"#);
    let limited = relay
        .metric(r#"xdpturn_dropped_packets_total{reason="auth_rate_limited",transport="udp"}"#);
    println!(
        "flood: {FLOOD} Allocates with random usernames: {made} user queries, {commands} \
         commands on the server in all (realm reads included), {refused} answered 401, {busy} \
         dropped over the lookup budget, {limited} dropped by the failed-authentication limiter"
    );
    assert!(made >= 1.0, "some lookups were made");
    assert!(
        made <= f64::from(FLOOD) / 10.0,
        "{made} queries for {FLOOD} requests: not bounded\n{}",
        relay.http_get("/metrics").1
    );
    // The server's own count agrees: one command per lookup, and a few for the realm reads.
    assert!(
        commands <= made + 50.0,
        "{commands} commands on the server for {made} lookups"
    );
    assert!(busy + limited > 0.0, "the rest was dropped, counted");
    // A real user from elsewhere is not shut out.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        allocate(&relay, &fresh_ip(), "alice", "wonderland").is_ok(),
        "alice after the flood:\n{}",
        relay.log_lines().join("\n")
    );
}

/// The commands the server has processed (`INFO stats`), as it counts them.
fn commands_processed(server: &RedisServer) -> f64 {
    server
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed in INFO stats")
}
