//! The credential tools agree with coturn: `key` prints what `turnadmin -k` prints, and a
//! credential from `credentials` is accepted by a real coturn `turnserver` configured with the
//! same shared secret (`use-auth-secret`), as a real `turnutils_uclient` allocation shows.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::uclient::{Stats, echo_peer};
use common::{Guard, TempDir, free_port, relay_bin, require, run, wait_stun_ready};

const TIMEOUT: Duration = Duration::from_secs(60);

fn our_key(user: &str, realm: &str, password: &str) -> String {
    let out = run(
        Command::new(relay_bin()).args([
            "key",
            "--user",
            user,
            "--realm",
            realm,
            "--password",
            password,
        ]),
        TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn turnadmin_key(user: &str, realm: &str, password: &str) -> String {
    let tool = require("turnadmin", "coturn");
    let out = run(
        Command::new(tool).args(["-k", "-u", user, "-r", realm, "-p", password]),
        TIMEOUT,
    );
    assert!(
        out.status.success(),
        "turnadmin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // turnadmin mixes its log lines into stdout; the key is the line that starts with 0x.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("0x"))
        .unwrap_or_else(|| {
            panic!(
                "no key in turnadmin output: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
        .trim()
        .to_owned()
}

#[test]
fn key_matches_turnadmin() {
    let cases = [
        ("user", "realm", "pass"),
        ("alice", "example.org", "correct horse battery staple"),
        ("bob@example.org", "turn.example.org", "p:a:s:s"),
        (
            "1700000000:carol",
            "Example Realm",
            "z!@#$%^&*()_+-=[]{};'\\,./<>?",
        ),
        ("dave", "example.org", "p\u{e4}ssw\u{f6}rd"), // already NFC: every preparation agrees
    ];
    for (user, realm, password) in cases {
        let ours = our_key(user, realm, password);
        assert_eq!(ours.len(), 34, "0x + 32 hex digits: {ours}");
        assert_eq!(
            ours,
            turnadmin_key(user, realm, password),
            "{user} {realm} {password}"
        );
    }
}

#[test]
fn key_reads_password_from_environment() {
    let out = run(
        Command::new(relay_bin())
            .args(["key", "-u", "user", "-r", "realm"])
            .env("XDPTURN_PASSWORD", "pass"),
        TIMEOUT,
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0x8493fbc53ba582fb4c044c456bdc40eb"
    );
}

struct Coturn {
    _server: Guard,
    _peer: Guard,
    _dir: TempDir,
    port: u16,
    peer: SocketAddr,
}

/// Starts coturn's `turnserver` with a REST shared secret and `turnutils_peer` as an echo peer,
/// all on loopback ephemeral ports, with state in a private directory.
fn coturn(secret: &str) -> Coturn {
    let turnserver = require("turnserver", "coturn");
    let dir = TempDir::new("coturn");
    let port = free_port();
    // A relay port range of its own, derived from the listening port so parallel runs differ.
    let min_port = 20000 + (port % 2000) * 10;
    let log = std::fs::File::create(dir.path().join("turnserver.log")).expect("log file");
    let server = Command::new(turnserver)
        .current_dir(dir.path())
        .args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file",
            "stdout",
            "--simple-log",
        ])
        .args([
            "--listening-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.1",
            "--listening-port",
            &port.to_string(),
        ])
        .args([
            "--min-port",
            &min_port.to_string(),
            "--max-port",
            &(min_port + 9).to_string(),
        ])
        .args([
            "--use-auth-secret",
            "--static-auth-secret",
            secret,
            "--realm",
            "example.org",
        ])
        .args(["--allow-loopback-peers", "--no-software-attribute"])
        .arg("--pidfile")
        .arg(dir.path().join("turnserver.pid"))
        .arg("--db")
        .arg(dir.path().join("turndb.sqlite"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn turnserver");
    let server = Guard(server);
    let (peer_process, peer) = echo_peer("127.0.0.1");
    wait_stun_ready(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    );
    Coturn {
        _server: server,
        _peer: peer_process,
        _dir: dir,
        port,
        peer,
    }
}

/// Allocates through coturn with `turnutils_uclient` and the given credential.
fn uclient(coturn: &Coturn, username: &str, password: &str) -> Stats {
    let server = SocketAddr::from(([127, 0, 0, 1], coturn.port));
    let args = [
        "-n", "10", "-m", "1", "-l", "120", "-u", username, "-w", password,
    ];
    common::uclient::uclient(server, coturn.peer, &args, TIMEOUT)
}

#[test]
fn rest_credential_is_accepted_by_coturn() {
    let secret = "a shared secret for the test";
    let coturn = coturn(secret);

    let out = run(
        Command::new(relay_bin())
            .args([
                "credentials",
                "--user",
                "alice",
                "--ttl",
                "1h",
                "--format",
                "json",
            ])
            .args([
                "--uri",
                "turn:127.0.0.1:3478?transport=udp",
                "--uri",
                "stun:127.0.0.1:3478",
            ])
            .env("XDPTURN_AUTH_SECRET", secret),
        TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let username = cred["username"].as_str().expect("username");
    let password = cred["password"].as_str().expect("password");
    let expires = cred["expires"].as_u64().expect("expires");
    assert_eq!(username, format!("{expires}:alice"));
    assert_eq!(cred["ttl"], 3600);
    let ice = cred["iceServers"].as_array().expect("iceServers");
    assert_eq!(ice[0]["urls"][0], "stun:127.0.0.1:3478");
    assert_eq!(ice[1]["urls"][0], "turn:127.0.0.1:3478?transport=udp");
    assert_eq!(ice[1]["username"], username);
    assert_eq!(ice[1]["credential"], password);

    let stats = uclient(&coturn, username, password);
    assert!(
        stats.exited_ok && stats.received >= 10,
        "coturn refused our credential or lost messages:\n{}",
        stats.text
    );
    assert!(stats.lost_zero, "{}", stats.text);

    // The control: the same user with a wrong password is refused, so acceptance above meant
    // something.
    let stats = uclient(&coturn, username, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert!(
        !stats.exited_ok && stats.received == 0,
        "coturn accepted a wrong password:\n{}",
        stats.text
    );
    // And a credential made from another secret is refused too.
    let out = run(
        Command::new(relay_bin()).args([
            "credentials",
            "-s",
            "other secret",
            "-u",
            "alice",
            "--format",
            "json",
        ]),
        TIMEOUT,
    );
    let other: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let stats = uclient(
        &coturn,
        other["username"].as_str().expect("u"),
        other["password"].as_str().expect("p"),
    );
    assert!(
        !stats.exited_ok,
        "coturn accepted a credential from the wrong secret:\n{}",
        stats.text
    );
}

#[test]
fn credentials_rejects_bad_input_clearly() {
    let out = run(
        Command::new(relay_bin()).args(["credentials", "-s", "k", "--ttl", "soon"]),
        TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ttl"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        Command::new(relay_bin()).args(["credentials", "-s", "k", "--uri", "https://example.org"]),
        TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scheme"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        Command::new(relay_bin())
            .args(["credentials"])
            .env_remove("XDPTURN_AUTH_SECRET"),
        TIMEOUT,
    );
    assert!(!out.status.success(), "a secret is required");
}
