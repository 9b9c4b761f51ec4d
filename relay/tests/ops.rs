//! Operations end to end, with the real relay binary: configuration reloads (file change,
//! SIGHUP, a broken file refused) that keep allocations, drains on SIGTERM, and the credentials
//! endpoint, whose credentials are then used by our codec-built TURN client and by coturn's
//! `turnutils_uclient`.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::turn::TurnClient;
use common::uclient::{Stats, echo_peer};
use common::{Relay, TempDir, free_port};
use relay::stun::{Lifetime, Method};

const TIMEOUT: Duration = Duration::from_secs(20);
const REALM: &str = "example.org";

/// A relay port range of 100 for each relay, from the PID and a counter, so that parallel
/// tests and parallel runs rarely share one (a port in use is skipped anyway).
fn port_range() -> (String, String) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let slot = (std::process::id() % 25) as u16 * 4 + n % 4;
    let min = 10_000 + slot * 100;
    (min.to_string(), (min + 99).to_string())
}

/// The relay on `listen` (IPv4 loopback) with the test realm, loopback peers allowed and a
/// port range of its own, plus `extra`.
fn start(listen: &str, extra: &[&str]) -> Relay {
    let (min, max) = port_range();
    Relay::start_with(
        &[
            "--listen",
            listen,
            "--metrics-listen",
            "127.0.0.1:0",
            "--realm",
            REALM,
            "--allow-peer",
            "127.0.0.1",
            "--min-port",
            &min,
            "--max-port",
            &max,
        ],
        extra,
    )
}

fn client(relay: &Relay, user: &str, password: &str) -> TurnClient {
    TurnClient::new(relay.v4(), "127.0.0.1:0", user, password, REALM)
}

/// Refresh with LIFETIME `secs` (0 deletes): None on success, else the error code, Some(0)
/// when nothing answered.
fn refresh(client: &mut TurnClient, secs: u32) -> Option<u16> {
    client
        .request(Method::REFRESH, &|e| {
            e.add(&Lifetime(secs)).expect("lifetime")
        })
        .map_or(Some(0), |r| r.code)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Waits until at least `n` log lines contain every one of `needles`.
fn wait_for_count(relay: &Relay, needles: &[&str], n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let count = relay
            .log_lines()
            .iter()
            .filter(|l| needles.iter().all(|x| l.contains(x)))
            .count();
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} log lines with {needles:?} in:\n{}",
            relay.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Workers take up a reloaded configuration on their next 1 s tick, a moment after the
/// "configuration reloaded" line: retries `check` until it holds, for a few seconds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn reload_on_file_change_and_sighup_keeps_allocations() {
    let dir = TempDir::new("ops-reload");
    let users = dir.path().join("users");
    let config = dir.path().join("relay.toml");
    write(&users, "alice:alice-pw\n");
    write(&config, "software = \"xdpturn ops test\"\n");
    let relay = start(
        "127.0.0.1:0",
        &[
            "--config",
            path_str(&config),
            "--users-file",
            path_str(&users),
        ],
    );

    let mut alice = client(&relay, "alice", "alice-pw");
    alice.allocate().expect("alice allocates");
    assert_eq!(
        client(&relay, "bob", "bob-pw").allocate(),
        Err(Some(401)),
        "bob is not a user yet"
    );

    // The users file changes on disk (bob in, alice out); the 2 s poll reloads it.
    write(&users, "bob:bob-pw\n");
    wait_for_count(
        &relay,
        &["configuration reloaded", "file change"],
        1,
        TIMEOUT,
    );
    let mut bob = client(&relay, "bob", "bob-pw");
    eventually("bob allocates after the reload", || {
        bob = client(&relay, "bob", "bob-pw");
        bob.allocate().is_ok()
    });
    // Alice's allocation survived the reload, but every request is authenticated again
    // (RFC 8656 §5), so her Refresh is refused now that she is no user: revoking a user takes
    // effect at her next request, and her allocation ends when its lifetime runs out, as
    // coturn does it. It is still there meanwhile.
    eventually("alice's Refresh is refused", || {
        refresh(&mut alice, 600) == Some(401)
    });
    assert_eq!(relay.metric("xdpturn_allocations "), 2.0);

    // SIGHUP reloads too: alice is back, and her Refresh reaches the allocation she made
    // before both reloads (an Allocate from the same 5-tuple is a mismatch: it still exists).
    write(&users, "alice:alice-pw\nbob:bob-pw\n");
    relay.signal("HUP");
    relay.wait_for_log(&["configuration reloaded", "SIGHUP"], TIMEOUT);
    eventually("alice's allocation answers", || {
        refresh(&mut alice, 600).is_none()
    });
    assert_eq!(
        alice.allocate(),
        Err(Some(437)),
        "the same allocation as before"
    );
    assert_eq!(refresh(&mut bob, 600), None, "bob's allocation answers");

    // A config file that does not parse is refused on SIGHUP; the old configuration stays.
    write(&config, "software = [\"unterminated\"\n");
    relay.signal("HUP");
    let line = relay.wait_for_log(&["reload refused", "SIGHUP"], TIMEOUT);
    assert!(
        line.contains("relay.toml"),
        "the error names the file: {line}"
    );
    assert_eq!(refresh(&mut alice, 600), None, "alice still authenticates");
    let mut carol = client(&relay, "bob", "bob-pw");
    carol.allocate().expect("new allocations still work");
    assert_eq!(relay.metric("xdpturn_allocations "), 3.0);

    // Repaired, it loads again.
    write(&config, "software = \"xdpturn ops test, repaired\"\n");
    relay.signal("HUP");
    wait_for_count(&relay, &["configuration reloaded", "SIGHUP"], 2, TIMEOUT);

    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(refresh(c, 0), None, "deleted");
    }
    assert_eq!(relay.metric("xdpturn_allocations "), 0.0);
}

#[test]
fn drain_serves_existing_allocations_then_exits() {
    let mut relay = start(
        "127.0.0.1:0",
        &["--user", "alice:pw", "--drain-timeout", "120"],
    );
    let mut alice = client(&relay, "alice", "pw");
    alice.allocate().expect("allocates");
    assert_eq!(relay.http_get("/readyz").0, 200);

    relay.signal("TERM");
    relay.wait_for_log(&["draining", "SIGTERM", "allocations=1"], TIMEOUT);
    assert_eq!(relay.http_get("/readyz").0, 503, "not ready while draining");

    // New allocations are refused with 508. Workers apply the drain on their 1 s tick, so one
    // may slip in just before: it is deleted again and the request repeated.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut late = client(&relay, "alice", "pw");
        match late.allocate() {
            Err(Some(508)) => break,
            Ok(_) => assert_eq!(refresh(&mut late, 0), None),
            other => panic!("expected 508 while draining, got {other:?}"),
        }
        assert!(Instant::now() < deadline, "new allocations still accepted");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The existing allocation is served, and the relay waits for it.
    assert_eq!(refresh(&mut alice, 600), None, "refresh while draining");
    assert!(
        relay.wait_exit(Duration::from_secs(1)).is_none(),
        "exited early"
    );

    // Its end is the relay's: it exits by itself, successfully.
    assert_eq!(refresh(&mut alice, 0), None, "deleted");
    let status = relay.wait_exit(TIMEOUT).expect("exits once drained");
    assert!(status.success(), "{status}");
    relay.wait_for_log(&["no allocations left"], TIMEOUT);
}

#[test]
fn second_sigterm_during_a_drain_exits_at_once() {
    let mut relay = start(
        "127.0.0.1:0",
        &["--user", "alice:pw", "--drain-timeout", "300"],
    );
    let mut alice = client(&relay, "alice", "pw");
    alice.allocate().expect("allocates");
    relay.signal("TERM");
    relay.wait_for_log(&["draining", "SIGTERM"], TIMEOUT);
    relay.signal("TERM");
    let status = relay
        .wait_exit(Duration::from_secs(5))
        .expect("exits at the second SIGTERM");
    assert!(status.success(), "{status}");
    relay.wait_for_log(&["second signal"], TIMEOUT);
}

#[test]
fn drain_timeout_exits_with_allocations_left() {
    let mut relay = start(
        "127.0.0.1:0",
        &["--user", "alice:pw", "--drain-timeout", "2"],
    );
    let mut alice = client(&relay, "alice", "pw");
    alice.allocate().expect("allocates");
    relay.signal("TERM");
    relay.wait_for_log(&["draining", "timeout_secs=2"], TIMEOUT);
    let status = relay
        .wait_exit(TIMEOUT)
        .expect("exits when the drain timeout ends");
    assert!(status.success(), "{status}");
    relay.wait_for_log(&["drain timeout", "allocations=1"], TIMEOUT);
}

/// One HTTP/1.1 request: (status, headers as text, body).
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

const SECRET: &str = "the shared secret of the ops test";
const PATH: &str = "/api/v1/credentials?user=alice&ttl=3600";

#[test]
fn credentials_endpoint_issues_credentials_that_allocate() {
    let dir = TempDir::new("ops-api");
    let token_file = dir.path().join("api-token");
    write(&token_file, "first-token\n");
    let port = free_port();
    let turn_uri = format!("turn:127.0.0.1:{port}?transport=udp");
    let stun_uri = format!("stun:127.0.0.1:{port}");
    let relay = start(
        &format!("127.0.0.1:{port}"),
        &[
            "--auth-secret",
            SECRET,
            "--api-token-file",
            path_str(&token_file),
            "--api-uri",
            &turn_uri,
            "--api-uri",
            &stun_uri,
        ],
    );

    // Without the token, or with a wrong one: 401 and a Bearer challenge.
    let (status, head, body) = http(relay.metrics, "GET", PATH, None);
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let (status, head, body) = http(relay.metrics, "GET", PATH, Some("second-token"));
    assert_eq!(status, 401, "{body}");
    assert!(head.contains(r#"error="invalid_token""#), "{head}");
    assert!(!body.contains("password"), "{body}");

    // With it, GET and POST both answer with a credential.
    let (status, _, body) = http(relay.metrics, "GET", PATH, Some("first-token"));
    assert_eq!(status, 200, "{body}");
    let (status, head, body) = http(relay.metrics, "POST", PATH, Some("first-token"));
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let cred: serde_json::Value = serde_json::from_str(&body).expect("json");
    let username = cred["username"].as_str().expect("username").to_owned();
    let password = cred["password"].as_str().expect("password").to_owned();
    let expires = cred["expires"].as_u64().expect("expires");
    assert_eq!(username, format!("{expires}:alice"));
    assert_eq!(cred["ttl"], 3600);
    assert_eq!(cred["iceServers"][0]["urls"][0], stun_uri.as_str());
    assert_eq!(cred["iceServers"][1]["urls"][0], turn_uri.as_str());
    assert_eq!(cred["iceServers"][1]["username"], username.as_str());
    assert_eq!(cred["iceServers"][1]["credential"], password.as_str());

    // Our codec-built client allocates with it on the same relay: 401, then authenticated.
    let mut ours = client(&relay, &username, &password);
    ours.allocate().expect("the credential allocates");
    assert_eq!(refresh(&mut ours, 0), None, "deleted");
    // A wrong password for the same username is refused: acceptance meant something.
    assert_eq!(
        client(&relay, &username, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=").allocate(),
        Err(Some(401))
    );

    // coturn's client allocates with it too and relays through its echo peer.
    let stats = uclient(port, &username, &password);
    assert!(
        stats.exited_ok && stats.received >= 10,
        "turnutils_uclient with the credential failed:\n{}",
        stats.text
    );

    // A new token (a rotated Secret) is picked up by the reload: the old one stops working.
    write(&token_file, "second-token\n");
    wait_for_count(
        &relay,
        &["configuration reloaded", "file change"],
        1,
        TIMEOUT,
    );
    assert_eq!(http(relay.metrics, "GET", PATH, Some("first-token")).0, 401);
    assert_eq!(
        http(relay.metrics, "GET", PATH, Some("second-token")).0,
        200
    );

    // The token is never logged.
    let logs = relay.log_lines().join("\n");
    assert!(
        !logs.contains("first-token") && !logs.contains("second-token"),
        "{logs}"
    );
}

#[test]
fn credentials_endpoint_is_off_without_a_token_or_a_secret() {
    let relay = start("127.0.0.1:0", &["--auth-secret", SECRET]);
    assert_eq!(http(relay.metrics, "GET", PATH, Some("any")).0, 404);
    let relay = start("127.0.0.1:0", &["--user", "a:b", "--api-token", "t0ken"]);
    assert_eq!(http(relay.metrics, "GET", PATH, Some("t0ken")).0, 404);
    relay.wait_for_log(
        &["no auth secret", "credentials endpoint stays off"],
        TIMEOUT,
    );
}

/// `turnutils_uclient` through the relay on `port` to `turnutils_peer`, with a credential.
fn uclient(port: u16, username: &str, password: &str) -> Stats {
    let (_peer, peer) = echo_peer("127.0.0.1");
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let args = [
        "-n", "10", "-m", "1", "-l", "120", "-u", username, "-w", password,
    ];
    common::uclient::uclient(server, peer, &args, Duration::from_secs(60))
}
