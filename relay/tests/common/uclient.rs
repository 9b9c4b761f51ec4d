//! coturn's test tools as the TURN tests use them: `turnutils_peer` as the echo peer and
//! `turnutils_uclient` as the client, whose statistics say whether the relaying worked.
//!
//! Plain std (and the sibling `process` module), so that the operator's tests include it too
//! (by path).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{Guard, require, try_run};

/// `turnutils_peer`, the echo peer, on `ip` and a free port: the process and its address.
pub fn echo_peer(ip: &str) -> (Guard, SocketAddr) {
    let tool = require("turnutils_peer", "coturn");
    let addr: IpAddr = ip.parse().expect("an IP address");
    let port = UdpSocket::bind((addr, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(tool)
        .args(["-L", ip, "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnutils_peer");
    std::thread::sleep(Duration::from_millis(200));
    (Guard(child), SocketAddr::new(addr, port))
}

/// What `turnutils_uclient` reported. It exits 0 even when messages are lost, so its
/// statistics, not its exit status, say whether everything arrived.
#[derive(Debug)]
pub struct Stats {
    /// It exited 0: it allocated (a refused allocation makes it fail).
    pub exited_ok: bool,
    pub sent: u64,
    pub received: u64,
    /// It reported "Total lost packets 0".
    pub lost_zero: bool,
    /// Its output, stdout then stderr.
    pub text: String,
}

impl Stats {
    /// At least `expected` messages sent (uclient adds a few per client in some modes), every
    /// one came back, and none was lost.
    pub fn all_arrived(&self, expected: u64) -> bool {
        self.sent >= expected && self.received == self.sent && self.lost_zero
    }

    /// Panics unless [`Stats::all_arrived`], with uclient's output and `more` (the relay's log,
    /// say) in the message.
    pub fn assert_all_arrived(&self, expected: u64, more: &str) {
        assert!(
            self.all_arrived(expected),
            "expected at least {expected} messages through and 0 lost, got {} sent, {} \
             received:\n{}{more}",
            self.sent,
            self.received,
            self.text
        );
    }
}

/// The last number reported after `key` (uclient's totals grow as it runs).
fn last_number(text: &str, key: &str) -> u64 {
    text.lines()
        .rev()
        .filter_map(|l| l.split(key).nth(1))
        .find_map(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs `turnutils_uclient` with `args` against `server`, through the echo peer at `peer`,
/// for at most `timeout`.
pub fn uclient(server: SocketAddr, peer: SocketAddr, args: &[&str], timeout: Duration) -> Stats {
    uclient_with(&[], server, peer, args, timeout)
}

/// [`uclient`] run through `wrapper` (e.g. `nsenter --net=...`, to be a client inside a
/// network namespace).
pub fn uclient_with(
    wrapper: &[&str],
    server: SocketAddr,
    peer: SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> Stats {
    try_uclient_with(wrapper, server, peer, args, timeout).unwrap_or_else(|| {
        panic!("turnutils_uclient {args:?} to {server} did not finish within {timeout:?}")
    })
}

/// [`uclient`], or `None` when it has not finished within `timeout` (it waits for ever for an
/// answer that does not come: what a call whose packets go elsewhere does).
pub fn try_uclient(
    server: SocketAddr,
    peer: SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> Option<Stats> {
    try_uclient_with(&[], server, peer, args, timeout)
}

fn try_uclient_with(
    wrapper: &[&str],
    server: SocketAddr,
    peer: SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> Option<Stats> {
    let tool = require("turnutils_uclient", "coturn");
    let command = || {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&tool);
                c
            }
            None => Command::new(&tool),
        };
        cmd.args(args)
            .args(["-p", &server.port().to_string()])
            .args(["-e", &peer.ip().to_string(), "-r", &peer.port().to_string()])
            .arg(server.ip().to_string());
        cmd
    };
    run_uclient(command, timeout)
}

/// What uclient prints when it gives up on a ChannelBind the relay refused.
const CHANNEL_BIND_REFUSED: &str = "channel bind: error 400";

/// Runs the uclient command that `command` builds, for at most `timeout`: what it reported,
/// or `None` when it had not finished.
///
/// A run whose ChannelBind was refused with 400 is run again, at most twice, because uclient
/// can cause that itself: each client binds a random channel number to the peer's port + 1,
/// then draws another for the peer, and when the two draws are equal (once in 16,384 clients)
/// the relay must refuse the second, as one channel names one peer (RFC 8656 §12.2). A relay
/// that refuses a channel wrongly does so on every run, and the last run's output is returned.
pub fn run_uclient(command: impl Fn() -> Command, timeout: Duration) -> Option<Stats> {
    let mut attempt = 1;
    loop {
        let out = try_run(&mut command(), timeout)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if attempt == 3 || !text.contains(CHANNEL_BIND_REFUSED) {
            return Some(Stats {
                exited_ok: out.status.success(),
                sent: last_number(&text, "tot_send_msgs="),
                received: last_number(&text, "tot_recv_msgs="),
                lost_zero: text.contains("Total lost packets 0 "),
                text,
            });
        }
        eprintln!("uclient: a ChannelBind refused (its channel numbers collided?), run again");
        attempt += 1;
    }
}
