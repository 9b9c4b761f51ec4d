//! Part 1 of `cargo xtask bench`: relayed messages per CPU-second of the server, with
//! turnutils_uclient in channel mode against turnutils_peer as an echo peer.

use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::process::{Proc, free_port, tail};
use super::results::per;
use super::server::Running;
use super::{Env, PASSWORD, Server, Settings, USER};

#[derive(Debug)]
pub(super) struct RelayResult {
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) cpu: f64,
    pub(super) wall: f64,
    pub(super) loss_pct: f64,
    pub(super) rtt_ms: f64,
}

impl RelayResult {
    /// Messages that went through the relay: each echoed message crossed it twice.
    pub(super) fn relayed(&self) -> u64 {
        self.received * 2
    }

    pub(super) fn per_cpu_second(&self) -> Option<f64> {
        per(self.relayed() as f64, self.cpu)
    }
}

pub(super) fn part_relay(env: &Env, s: &Settings, server: Server) -> Result<RelayResult> {
    let dir = env.scratch.dir(&format!("relay-{server}"))?;
    let running = Running::start(env, server, &dir)?;
    let peer_port = free_port()?;
    let mut peer_cmd = Command::new(&env.peer);
    peer_cmd.args(["-L", "127.0.0.1", "-p", &peer_port.to_string()]);
    let mut peer = Proc::spawn("turnutils_peer", peer_cmd, &dir.join("peer.log"))?;
    wait_echo(&mut peer, peer_port, &dir.join("peer.log"))?;

    let mut cmd = Command::new(&env.uclient);
    cmd.args(["-p", &running.addr.port().to_string()])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(["-m", &s.clients.to_string()])
        .args(["-n", &s.messages.to_string()])
        .args(["-l", &s.length.to_string()])
        .args(["-z", &s.interval_ms.to_string()])
        .args(["-u", USER, "-w", PASSWORD])
        .arg("127.0.0.1");
    let log = dir.join("uclient.log");
    let cpu0 = running.cpu()?;
    let t0 = Instant::now();
    let mut uclient = Proc::spawn("turnutils_uclient", cmd, &log)?;
    // uclient paces at -z or slower and takes a few seconds to start: a generous bound.
    let timeout = Duration::from_millis(s.messages * u64::from(s.interval_ms) * 4 + 180_000);
    let status = uclient.wait_bounded(timeout)?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = running.cpu()? - cpu0;
    let text = fs::read_to_string(&log)?;
    let Some((sent, received, loss_pct, rtt_ms)) =
        parse_uclient(&text).filter(|_| status.success())
    else {
        bail!(
            "turnutils_uclient {status}; last lines of its output:\n{}\nlast lines of the server log:\n{}",
            tail(&log, 12),
            tail(&running.log, 8)
        );
    };
    Ok(RelayResult {
        sent,
        received,
        cpu,
        wall,
        loss_pct,
        rtt_ms,
    })
}

/// Waits until turnutils_peer echoes a datagram.
fn wait_echo(peer: &mut Proc, port: u16, log: &Path) -> Result<()> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.connect((Ipv4Addr::LOCALHOST, port))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        peer.check_alive(log)?;
        let _ = sock.send(b"ping");
        if sock.recv(&mut buf).is_ok() {
            return Ok(());
        }
        // Refused (nothing bound yet) returns at once: do not spin.
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("turnutils_peer does not echo on port {port}")
}

/// (tot_send_msgs, tot_recv_msgs, lost %, average round trip ms) from turnutils_uclient's
/// final report.
fn parse_uclient(text: &str) -> Option<(u64, u64, f64, f64)> {
    let number = |s: &str| -> Option<f64> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        s[..end].parse().ok()
    };
    // The final totals are on the line without "msz=".
    let totals = text
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))?;
    let sent = number(totals.split("tot_send_msgs=").nth(1)?)?;
    let received = number(totals.split("tot_recv_msgs=").nth(1)?)?;
    let lost = text
        .lines()
        .rev()
        .find_map(|l| l.split("Total lost packets").nth(1))
        .and_then(|r| r.split('(').nth(1))
        .and_then(number)?;
    let rtt = text
        .lines()
        .rev()
        .find_map(|l| l.split("Average round trip delay").nth(1))
        .and_then(|r| number(r.trim_start()))?;
    Some((sent as u64, received as u64, lost, rtt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uclient_report() {
        let text = "\
7: : start_mclient: msz=6, tot_send_msgs=581, tot_recv_msgs=581, tot_send_bytes ~ 69720, tot_recv_bytes ~ 69720
7: : start_mclient: tot_send_msgs=600, tot_recv_msgs=598
7: : start_mclient: tot_send_bytes ~ 72000, tot_recv_bytes ~ 72000
7: : Total transmit time is 7
7: : Total lost packets 2 (0.333333%), total send dropped 0 (0.000000%)
7: : Average round trip delay 0.068333 ms; min = 0 ms, max = 5 ms
";
        let (sent, recv, lost, rtt) = parse_uclient(text).expect("parsed");
        assert_eq!((sent, recv), (600, 598));
        assert!((lost - 0.333333).abs() < 1e-9);
        assert!((rtt - 0.068333).abs() < 1e-9);
        assert!(parse_uclient("0: : Total connect time is 0").is_none());
    }
}
