//! Shared test harness: runs the real relay binary and real third-party tools, on ephemeral
//! loopback ports, and cleans up (by PID) even when a test fails.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod browser;
pub mod dbservers;
pub mod launch;
pub mod process;
pub mod prometheus;
pub mod statsdb;
pub mod turn;
pub mod uclient;
pub mod userdb;

pub use launch::{field, launch, metric_value};

#[allow(unused_imports)] // As above: not every test binary runs commands itself.
pub use process::{Guard, require, run};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay::stun::{Class, Encoder, Message, MessageType, Method, TransactionId};

/// The relay binary cargo built for this test run.
pub fn relay_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xdpturn-relay")
}

/// A unique scratch directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("xdpturn-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running relay with its log lines collected.
pub struct Relay {
    guard: Guard,
    pub listeners: Vec<SocketAddr>,
    pub metrics: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts the relay on ephemeral loopback ports (IPv4 and IPv6) with debug logs.
    pub fn start(extra: &[&str]) -> Relay {
        Self::start_with(
            &[
                "--listen",
                "127.0.0.1:0",
                "--listen",
                "[::1]:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            extra,
        )
    }

    /// Starts the relay with exactly `base` + `extra` as arguments.
    pub fn start_with(base: &[&str], extra: &[&str]) -> Relay {
        Self::start_logging(base, extra, "debug")
    }

    /// [`Relay::start_with`] logging at `level` (`XDPTURN_LOG`): `info`, as in production,
    /// where a test floods the relay and a debug line per answer would be most of its work.
    pub fn start_logging(base: &[&str], extra: &[&str], level: &str) -> Relay {
        let launched = launch(
            Command::new(relay_bin())
                .args(base)
                .args(extra)
                .env("XDPTURN_LOG", level),
        );
        Relay {
            guard: launched.process,
            listeners: launched.listeners,
            metrics: launched.metrics,
            log: launched.log,
        }
    }

    /// Waits for the relay to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.guard.0.try_wait() {
                // Let the log reader catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.guard.0.id()
    }

    /// Sends `signal` (as `kill -s` names it: HUP, TERM, INT) to the relay, by its PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid());
    }

    pub fn v4(&self) -> SocketAddr {
        *self
            .listeners
            .iter()
            .find(|a| a.is_ipv4())
            .expect("an IPv4 listener")
    }

    pub fn v6(&self) -> SocketAddr {
        *self
            .listeners
            .iter()
            .find(|a| a.is_ipv6())
            .expect("an IPv6 listener")
    }

    /// The TLS listeners, as bound (from the "listening tls=" log lines).
    pub fn tls_listeners(&self) -> Vec<SocketAddr> {
        self.log_lines()
            .iter()
            .filter(|l| l.contains(" listening ") && l.contains("tls="))
            .map(|l| field(l, "tls=").parse().expect("TLS listener address"))
            .collect()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until a log line contains every one of `needles`.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .log_lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} in:\n{}",
                self.log_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `path` from the metrics listener: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path)
    }

    /// The value of the metric line starting with `series` (name and labels), or 0.
    pub fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        metric_value(&body, series)
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to HTTP");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A free UDP port on loopback (bound, then released).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Sends a Binding request over UDP (from a fresh socket: a port of its own) and returns the
/// response bytes, or None on timeout.
pub fn stun_binding_udp(server: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).expect("bind");
    sock.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 64];
    let tid = TransactionId::new(*b"harness-tid!");
    let enc = Encoder::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid,
    )
    .expect("header");
    let len = enc.finish();
    sock.send_to(&buf[..len], server).ok()?;
    let mut resp = [0u8; 1500];
    let n = sock.recv(&mut resp).ok()?;
    let msg = Message::decode(&resp[..n]).ok()?;
    (*msg.tid() == tid).then(|| resp[..n].to_vec())
}

/// Waits until a STUN server answers Binding on `server`.
pub fn wait_stun_ready(server: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while stun_binding_udp(server, Duration::from_millis(200)).is_none() {
        assert!(
            Instant::now() < deadline,
            "no STUN answer from {server} within {timeout:?}"
        );
    }
}
