//! A TURN server under test: xdpturn-relay or coturn's turnserver started fresh with the same
//! realm, user, loopback listener and relay port range, ready once it answers a Binding request.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use relay::stun::{Class, Encoder, Header, MessageType, Method};

use super::loadgen::next_tid;
use super::process::{Proc, cpu_seconds, free_port, rss_kib, tail};
use super::{Env, PASSWORD, REALM, Server, USER};

/// A TURN server under test.
#[derive(Debug)]
pub(super) struct Running {
    server: Server,
    pub(super) addr: SocketAddr,
    pub(super) log: PathBuf,
    proc: Proc,
    clk_tck: f64,
}

impl Running {
    /// Starts a fresh server and waits until it answers a Binding request.
    pub(super) fn start(env: &Env, server: Server, dir: &Path) -> Result<Running> {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = dir.join("server.log");
        let (min, max) = (env.min_port.to_string(), env.max_port.to_string());
        let cmd = match server {
            Server::Ours => {
                let mut c = Command::new(&env.relay_bin);
                c.args(["--listen", &addr.to_string()])
                    .args(["--metrics-listen", "127.0.0.1:0"])
                    .args(["--realm", REALM])
                    .args(["--user", &format!("{USER}:{PASSWORD}")])
                    .args(["--relay-ip", "127.0.0.1"])
                    .args(["--min-port", &min, "--max-port", &max])
                    .args(["--allow-peer", "127.0.0.1"])
                    .args(["--software", ""])
                    // A Ctrl-C reaches the whole process group, which skips our clean-up: the
                    // relay then exits at once, as turnserver does, instead of draining.
                    .args(["--drain-timeout", "0"]);
                c
            }
            Server::Coturn => {
                let mut c = Command::new(&env.turnserver);
                c.current_dir(dir)
                    .args(["-n", "--no-cli", "--no-tls", "--no-dtls"])
                    .args(["--log-file", "stdout", "--simple-log"])
                    .args(["--listening-ip", "127.0.0.1"])
                    .args(["--listening-port", &port.to_string()])
                    .args(["--relay-ip", "127.0.0.1"])
                    .args(["--min-port", &min, "--max-port", &max])
                    .args(["--lt-cred-mech", "--realm", REALM])
                    .args(["--user", &format!("{USER}:{PASSWORD}")])
                    .args(["--allow-loopback-peers", "--no-software-attribute"])
                    .arg("--db")
                    .arg(dir.join("turndb.sqlite"))
                    .arg("--pidfile")
                    .arg(dir.join("turnserver.pid"));
                c
            }
        };
        let proc = Proc::spawn(&server.to_string(), cmd, &log)?;
        let mut running = Running {
            server,
            addr,
            log,
            proc,
            clk_tck: env.clk_tck,
        };
        running.wait_ready(Duration::from_secs(20))?;
        Ok(running)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut req = [0u8; 64];
        let mut resp = [0u8; 1500];
        while Instant::now() < deadline {
            self.proc.check_alive(&self.log)?;
            // A new socket (5-tuple) each time: coturn ignores a client whose first datagram
            // arrived while it was still starting.
            let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            sock.connect(self.addr)?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            let tid = next_tid();
            let n = Encoder::new(
                &mut req,
                MessageType::new(Method::BINDING, Class::Request),
                tid,
            )?
            .finish();
            let _ = sock.send(&req[..n]);
            if let Ok(m) = sock.recv(&mut resp)
                && Header::peek(&resp[..m]).is_some_and(|h| h.tid == tid)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not answer a Binding request on {} within {timeout:?}; last lines of its log:\n{}",
            self.server,
            self.addr,
            tail(&self.log, 15)
        )
    }

    pub(super) fn cpu(&self) -> Result<f64> {
        cpu_seconds(&self.proc.pid().to_string(), self.clk_tck)
    }

    pub(super) fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.proc.pid())
    }
}
