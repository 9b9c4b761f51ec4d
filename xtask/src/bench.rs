//! `cargo xtask bench`: our relay against coturn's `turnserver`, one after the other, on
//! loopback, under the same load, compared on what the project's goal names:
//!
//! 1. relayed messages per CPU-second of the server (turnutils_uclient in channel mode against
//!    turnutils_peer as an echo peer),
//! 2. authenticated allocations per second (our own load generator, `relay::stun` codec:
//!    Allocate -> 401 -> Allocate with MESSAGE-INTEGRITY -> success -> Refresh 0),
//! 3. resident memory per 10,000 held allocations.
//!
//! Each part starts a fresh server, measures it, and kills it (by PID) before the next one;
//! the two servers take turns within a part so that drift on a noisy machine hits both.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use relay::stun::{
    Class, EncodeError, Encoder, ErrorCode, Header, Lifetime, Message, MessageType, Method, Nonce,
    Realm, RequestedTransport, TransactionId, Username, XorRelayedAddress, long_term_key_md5,
};

use crate::cmd::Cmd;
use crate::repo_root;

/// The same long-term credentials on both servers.
const REALM: &str = "bench.xdpturn.example";
const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

/// First retransmission timeout of the load generator; doubled on each retry.
const RTO: Duration = Duration::from_millis(250);
/// Sends per request before the load generator gives up on it (0.25+0.5+1+2 s).
const TRIES: u32 = 4;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A short run (a minute or two): 200 messages per uclient session from 10 clients, 3 s of
    /// allocations, 2,000 held allocations. Options given explicitly still win.
    #[arg(long)]
    pub quick: bool,

    /// Messages each turnutils_uclient session sends (-n); its own start-up and pacing set how
    /// long that takes [default: 2000, --quick: 200].
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,

    /// turnutils_uclient clients (-m); each has an RTP and an RTCP allocation, with a channel
    /// each [default: 20, --quick: 10].
    #[arg(long, value_name = "N")]
    pub clients: Option<u32>,

    /// Bytes per relayed message (turnutils_uclient -l).
    #[arg(long, default_value_t = 120, value_name = "BYTES")]
    pub length: u32,

    /// Milliseconds between two messages of one session (turnutils_uclient -z).
    #[arg(long, default_value_t = 20, value_name = "MS")]
    pub interval_ms: u32,

    /// Seconds of back-to-back authenticated allocations per server [default: 15, --quick: 3].
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,

    /// Allocating clients in flight at once (each: its own UDP socket per allocation).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub alloc_clients: usize,

    /// Allocations created and held for the memory figure; the servers get a relay port range
    /// of at least twice as many ports [default: 10000, --quick: 2000].
    #[arg(long, value_name = "N")]
    pub allocations: Option<usize>,

    /// Run only this part; repeatable. Default: all three.
    #[arg(long = "part", value_enum, value_name = "PART")]
    pub parts: Vec<Part>,

    /// Measure only this server.
    #[arg(long, value_enum, value_name = "SERVER")]
    pub only: Option<Server>,

    /// Use this relay binary instead of running `cargo build --release -p relay`.
    #[arg(long, value_name = "FILE")]
    pub relay_bin: Option<PathBuf>,

    /// Run the load generator as `cargo xtask` built it (dev profile, unoptimised) instead of
    /// rebuilding it with its hot crates optimised. Its CPU cost per allocation is then several
    /// times higher, and on a small machine it, not the server, sets the allocation rate.
    #[arg(long)]
    pub unoptimized_loadgen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Part {
    /// Relayed messages per server CPU-second (turnutils_uclient, channel mode).
    Relay,
    /// Authenticated allocations per second.
    Alloc,
    /// Resident memory per 10,000 held allocations.
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Server {
    /// xdpturn-relay.
    Ours,
    /// coturn's turnserver.
    Coturn,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Server::Ours => "xdpturn",
            Server::Coturn => "coturn",
        })
    }
}

/// The options with the defaults of a normal or a quick run filled in.
#[derive(Debug)]
struct Settings {
    messages: u64,
    clients: u32,
    length: u32,
    interval_ms: u32,
    duration: u64,
    alloc_clients: usize,
    allocations: usize,
    parts: Vec<Part>,
    servers: Vec<Server>,
}

impl Settings {
    fn new(args: &Args) -> Result<Self> {
        let q = args.quick;
        let mut parts = if args.parts.is_empty() {
            vec![Part::Relay, Part::Alloc, Part::Memory]
        } else {
            args.parts.clone()
        };
        parts.sort();
        parts.dedup();
        let s = Settings {
            messages: args.messages.unwrap_or(if q { 200 } else { 2000 }),
            clients: args.clients.unwrap_or(if q { 10 } else { 20 }),
            length: args.length,
            interval_ms: args.interval_ms,
            duration: args.duration.unwrap_or(if q { 3 } else { 15 }),
            alloc_clients: args.alloc_clients,
            allocations: args.allocations.unwrap_or(if q { 2_000 } else { 10_000 }),
            parts,
            servers: match args.only {
                Some(s) => vec![s],
                None => vec![Server::Ours, Server::Coturn],
            },
        };
        if s.messages == 0 || s.duration == 0 || s.interval_ms == 0 {
            bail!("--messages, --duration and --interval-ms must be positive");
        }
        if s.clients == 0 || s.alloc_clients == 0 || s.allocations == 0 {
            bail!("--clients, --alloc-clients and --allocations must be positive");
        }
        if !(4..=1400).contains(&s.length) {
            bail!("--length must be 4..=1400 bytes");
        }
        Ok(s)
    }
}

/// What every part needs: binaries, scratch space, ports, units.
#[derive(Debug)]
struct Env {
    relay_bin: PathBuf,
    turnserver: PathBuf,
    uclient: PathBuf,
    peer: PathBuf,
    scratch: Scratch,
    min_port: u16,
    max_port: u16,
    clk_tck: f64,
}

/// Set in the environment of the optimised re-run of this command.
const OPTIMIZED_ENV: &str = "XDPTURN_BENCH_OPTIMIZED";

/// The crates on the load generator's hot path: the optimised build compiles them with
/// opt-level 3 (the rest of xtask stays as the dev profile has it, so it builds quickly).
const HOT_CRATES: &[&str] = &[
    "xtask",
    "relay",
    "tokio",
    "mio",
    "sha1",
    "md-5",
    "hmac",
    "digest",
    "crypto-common",
    "generic-array",
    "block-buffer",
    "subtle",
    "crc32fast",
    "cpufeatures",
];

pub fn run(args: &Args) -> Result<ExitCode> {
    let s = Settings::new(args)?;
    let loadgen = s.parts.iter().any(|p| *p != Part::Relay);
    if loadgen && !args.unoptimized_loadgen && std::env::var_os(OPTIMIZED_ENV).is_none() {
        return rerun_optimized();
    }
    let coturn = s.servers.contains(&Server::Coturn);
    let turnserver = find_tool("turnserver", coturn)?;
    let uclient = find_tool("turnutils_uclient", s.parts.contains(&Part::Relay))?;
    let peer = find_tool("turnutils_peer", s.parts.contains(&Part::Relay))?;

    let relay_bin = match &args.relay_bin {
        Some(bin) => bin.clone(),
        None => build_relay()?,
    };
    let clk_tck: f64 = String::from_utf8(Cmd::new("getconf").arg("CLK_TCK").stdout()?)?
        .trim()
        .parse()
        .context("parsing `getconf CLK_TCK`")?;
    let fds = raise_nofile(s.allocations)?;
    let (min_port, max_port) = relay_port_range(s.allocations)?;
    let env = Env {
        relay_bin,
        turnserver,
        uclient,
        peer,
        scratch: Scratch::new()?,
        min_port,
        max_port,
        clk_tck,
    };

    println!();
    println!("==> setup");
    println!("    {}", describe_machine());
    println!("    xdpturn: {} ({})", env.relay_bin.display(), git_head());
    println!(
        "    load generator: {}",
        if std::env::var_os(OPTIMIZED_ENV).is_some() {
            "hot crates at opt-level 3, one thread"
        } else {
            "dev profile (unoptimised), one thread"
        }
    );
    if coturn {
        println!("    coturn:  {}", coturn_version(&env.turnserver));
    }
    println!(
        "    RLIMIT_NOFILE {fds} (inherited by the servers); relay ports {min_port}-{max_port} on 127.0.0.1, below the ephemeral range the clients use; CLK_TCK {clk_tck}"
    );
    println!(
        "    realm {REALM}, user {USER}; scratch directory {}",
        env.scratch.0.display()
    );

    let mut results = Results::default();
    for &part in &s.parts {
        println!();
        match part {
            Part::Relay => println!(
                "==> relay: turnutils_uclient -m {} -n {} -l {} -z {} (channels) through each server to turnutils_peer",
                s.clients, s.messages, s.length, s.interval_ms
            ),
            Part::Alloc => println!(
                "==> alloc: {} clients in flight for {} s: Allocate, 401, Allocate with integrity, Refresh 0",
                s.alloc_clients, s.duration
            ),
            Part::Memory => println!(
                "==> memory: {} allocations held, VmRSS before and after",
                s.allocations
            ),
        }
        for &server in &s.servers {
            println!("\n--> {part:?} / {server}");
            let outcome = match part {
                Part::Relay => part_relay(&env, &s, server).map(Measured::Relay),
                Part::Alloc => part_alloc(&env, &s, server).map(Measured::Alloc),
                Part::Memory => part_memory(&env, &s, server).map(Measured::Memory),
            };
            match &outcome {
                Ok(m) => println!("    {server}: {m}"),
                Err(err) => println!("    {server}: FAILED: {err:#}"),
            }
            results
                .0
                .insert((part, server), outcome.map_err(|e| format!("{e:#}")));
        }
    }

    println!();
    print!("{}", results.table(&s));
    Ok(if results.0.values().all(Result::is_ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// ---------------------------------------------------------------------------------------------
// Set-up

fn find_tool(name: &str, needed: bool) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if needed {
        bail!("`{name}` is not on PATH: install Debian's coturn package (`cargo xtask test` does)");
    }
    Ok(PathBuf::from(name))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// `cargo xtask` runs the dev profile, where the load generator spends several times the CPU
/// per allocation that an optimised build does. Builds xtask again with its hot crates
/// optimised, in a target directory of its own (so the usual xtask binary is not replaced
/// under other users' feet), and runs this same command with it.
fn rerun_optimized() -> Result<ExitCode> {
    let root = repo_root();
    let target = target_dir(&root).join("bench-loadgen");
    let mut build = Cmd::new("cargo")
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "xtask", "--target-dir"])
        .arg(&target);
    for krate in HOT_CRATES {
        build = build
            .arg("--config")
            .arg(format!("profile.dev.package.{krate}.opt-level=3"));
    }
    build.run()?;
    let mut cmd = Command::new(target.join("debug/xtask"));
    cmd.args(std::env::args_os().skip(1))
        .env(OPTIMIZED_ENV, "1");
    println!("$ {OPTIMIZED_ENV}=1 {}", shown(&cmd));
    let status = cmd.status().context("running the optimised xtask")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build_relay() -> Result<PathBuf> {
    let root = repo_root();
    Cmd::new("cargo")
        .current_dir(&root)
        .args(["build", "--release", "-p", "relay"])
        .run()?;
    let bin = target_dir(&root).join("release/xdpturn-relay");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

/// Raises RLIMIT_NOFILE for this process and so for every server and client it starts: the
/// memory part holds `allocations` client sockets here, and a server needs one relay socket per
/// allocation (coturn also a per-client socket on its listening port).
fn raise_nofile(allocations: usize) -> Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = u64::try_from(allocations)?.saturating_mul(3) + 4096;
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    let hard = now.maximum.unwrap_or(u64::MAX);
    if soft >= want {
        return Ok(soft);
    }
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(hard.max(want)),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return Ok(want);
    }
    // Not allowed to raise the hard limit: go as far as it lets us.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )
    .context("setrlimit(RLIMIT_NOFILE)")?;
    println!(
        "warning: RLIMIT_NOFILE cannot go above its hard limit {hard} (raising that needs CAP_SYS_RESOURCE); {allocations} held allocations may want up to {want}: the table shows how many were held"
    );
    Ok(hard)
}

/// A relay port range for both servers, outside the kernel's ephemeral range (where every
/// client socket of the benchmark gets its port), with room for twice the held allocations.
fn relay_port_range(allocations: usize) -> Result<(u16, u16)> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let mut it = text
        .split_whitespace()
        .filter_map(|v| v.parse::<u32>().ok());
    let (lo, hi) = (it.next().unwrap_or(32768), it.next().unwrap_or(60999));
    let span = u32::try_from(allocations)?.saturating_mul(2).max(10_000);
    if lo >= 1024 + span {
        return Ok((u16::try_from(lo - span)?, u16::try_from(lo - 1)?));
    }
    if 65535 - hi >= span {
        return Ok((u16::try_from(hi + 1)?, u16::try_from(hi + span)?));
    }
    bail!(
        "no room for {span} relay ports outside the ephemeral range {lo}-{hi}: give fewer --allocations"
    )
}

fn describe_machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

fn git_head() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown commit".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn coturn_version(turnserver: &Path) -> String {
    Command::new(turnserver)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .filter(|v| !v.is_empty())
        .map_or_else(|| "version unknown".into(), |v| format!("turnserver {v}"))
}

/// A private scratch directory (server logs, coturn's sqlite database), removed at the end.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xdpturn-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// A fresh subdirectory for one run.
    fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.0.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process we started, killed (by its PID, which only we hold) and reaped when dropped.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr into `log`, printing the command line first.
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        println!("$ {}", shown(&cmd));
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        println!("    ({name}: pid {})", child.id());
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    fn check_alive(&mut self, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last lines of its log:\n{}",
                self.name,
                tail(log, 15)
            );
        }
        Ok(())
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    fn wait_bounded(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not finish within {timeout:?}; killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn shown(cmd: &Command) -> String {
    let mut s = quote(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(&a.to_string_lossy()));
    }
    s
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+./:,@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// CPU time (user + system, every thread, live and exited) of a process.
fn cpu_seconds(pid: &str, clk_tck: f64) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short {path}"))?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / clk_tck)
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

/// A loopback port free for both UDP and TCP (the servers listen on both).
fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}

/// A TURN server under test.
#[derive(Debug)]
struct Running {
    server: Server,
    addr: SocketAddr,
    log: PathBuf,
    proc: Proc,
    clk_tck: f64,
}

impl Running {
    /// Starts a fresh server and waits until it answers a Binding request.
    fn start(env: &Env, server: Server, dir: &Path) -> Result<Running> {
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

    fn cpu(&self) -> Result<f64> {
        cpu_seconds(&self.proc.pid().to_string(), self.clk_tck)
    }

    fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.proc.pid())
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: relayed messages per CPU-second

#[derive(Debug)]
struct RelayResult {
    sent: u64,
    received: u64,
    cpu: f64,
    wall: f64,
    loss_pct: f64,
    rtt_ms: f64,
}

impl RelayResult {
    /// Messages that went through the relay: each echoed message crossed it twice.
    fn relayed(&self) -> u64 {
        self.received * 2
    }

    fn per_cpu_second(&self) -> Option<f64> {
        per(self.relayed() as f64, self.cpu)
    }
}

fn part_relay(env: &Env, s: &Settings, server: Server) -> Result<RelayResult> {
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

// ---------------------------------------------------------------------------------------------
// Part 2: allocations per second

#[derive(Debug)]
struct AllocResult {
    stats: LoadStats,
    cpu: f64,
    wall: f64,
    client_cpu: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl AllocResult {
    fn per_second(&self) -> Option<f64> {
        per(self.stats.ok as f64, self.wall)
    }

    fn per_cpu_second(&self) -> Option<f64> {
        per(self.stats.ok as f64, self.cpu)
    }
}

fn part_alloc(env: &Env, s: &Settings, server: Server) -> Result<AllocResult> {
    let dir = env.scratch.dir(&format!("alloc-{server}"))?;
    let running = Running::start(env, server, &dir)?;
    let rt = runtime()?;
    let key = long_term_key_md5(USER, REALM, PASSWORD);
    let duration = Duration::from_secs(s.duration);
    let me = cpu_seconds("self", env.clk_tck)?;
    let cpu0 = running.cpu()?;
    let t0 = Instant::now();
    let mut stats = rt.block_on(churn(running.addr, key, s.alloc_clients, duration));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = running.cpu()? - cpu0;
    let client_cpu = cpu_seconds("self", env.clk_tck)? - me;
    if stats.ok == 0 {
        bail!(
            "no allocation succeeded ({}); last lines of the server log:\n{}",
            stats.failures(),
            tail(&running.log, 10)
        );
    }
    Ok(AllocResult {
        p50_ms: stats.latency_ms(0.5),
        p99_ms: stats.latency_ms(0.99),
        stats,
        cpu,
        wall,
        client_cpu,
    })
}

// ---------------------------------------------------------------------------------------------
// Part 3: memory per allocation

#[derive(Debug)]
struct MemoryResult {
    before_kib: u64,
    after_kib: u64,
    stats: LoadStats,
    seconds: f64,
}

impl MemoryResult {
    /// MiB of resident memory per 10,000 held allocations.
    fn mib_per_10k(&self) -> Option<f64> {
        let delta = self.after_kib.saturating_sub(self.before_kib) as f64 / 1024.0;
        per(delta * 10_000.0, self.stats.ok as f64)
    }
}

fn part_memory(env: &Env, s: &Settings, server: Server) -> Result<MemoryResult> {
    let dir = env.scratch.dir(&format!("memory-{server}"))?;
    let running = Running::start(env, server, &dir)?;
    let rt = runtime()?;
    let key = long_term_key_md5(USER, REALM, PASSWORD);
    let clients = s.alloc_clients;
    // Warm-up: one-time initialisation (first allocation, first nonce, thread-local buffers)
    // is not a per-allocation cost.
    let warm = (s.allocations / 20).clamp(1, 200);
    let (held, _) = rt.block_on(hold(running.addr, key, warm, clients));
    rt.block_on(async {
        for a in &held {
            let mut ignored = LoadStats::default();
            let _ = refresh0(a, &key, &mut ignored).await;
        }
    });
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let before_kib = running.rss_kib()?;
    let t0 = Instant::now();
    let (held, stats) = rt.block_on(hold(running.addr, key, s.allocations, clients));
    let seconds = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let after_kib = running.rss_kib()?;
    drop(held);
    if stats.ok == 0 {
        bail!(
            "no allocation succeeded ({}); last lines of the server log:\n{}",
            stats.failures(),
            tail(&running.log, 10)
        );
    }
    Ok(MemoryResult {
        before_kib,
        after_kib,
        stats,
        seconds,
    })
}

// ---------------------------------------------------------------------------------------------
// The load generator

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the load generator's runtime")
}

/// Transaction ids: a per-run random-ish prefix and a counter.
fn next_tid() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().rotate_left(16)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&seed.to_be_bytes());
    tid[4..].copy_from_slice(&n.to_be_bytes());
    TransactionId::new(tid)
}

/// The source address of the next allocating client: 127.1.0.0/16 in turn (all of 127/8 is
/// loopback), so that a 5-tuple comes back only after 64,516 allocations. With 127.0.0.1 alone
/// the kernel soon hands out a port a just-deleted allocation used, and coturn answers such a
/// client 437 (Allocation Mismatch) for a while: an artefact of the benchmark, not of a server.
fn client_ip() -> Ipv4Addr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % (254 * 254);
    Ipv4Addr::new(127, 1, 1 + (i / 254) as u8, 1 + (i % 254) as u8)
}

/// What the load generator saw.
#[derive(Debug, Default)]
struct LoadStats {
    /// Allocations that succeeded.
    ok: u64,
    /// Failed steps, by what went wrong.
    failed: BTreeMap<String, u64>,
    retransmits: u64,
    stale_nonces: u64,
    /// Time from the first Allocate to the success response, microseconds.
    latencies_us: Vec<u32>,
}

impl LoadStats {
    fn fail(&mut self, why: Failure) {
        *self.failed.entry(why.to_string()).or_default() += 1;
    }

    fn merge(&mut self, other: LoadStats) {
        self.ok += other.ok;
        for (k, v) in other.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self.retransmits += other.retransmits;
        self.stale_nonces += other.stale_nonces;
        self.latencies_us.extend(other.latencies_us);
    }

    fn failures(&self) -> String {
        if self.failed.is_empty() {
            return "no failures".into();
        }
        self.failed
            .iter()
            .map(|(k, v)| format!("{v} × {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The `q` quantile of the allocation latency, in milliseconds.
    fn latency_ms(&mut self, q: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Some(f64::from(self.latencies_us[i]) / 1000.0)
    }
}

#[derive(Debug)]
enum Failure {
    Timeout(&'static str),
    Code(&'static str, u16),
    Protocol(&'static str, &'static str),
    Io(&'static str, std::io::ErrorKind),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(step) => write!(f, "{step}: no answer after {TRIES} sends"),
            Failure::Code(step, code) => write!(f, "{step}: error {code}"),
            Failure::Protocol(step, what) => write!(f, "{step}: {what}"),
            Failure::Io(step, kind) => write!(f, "{step}: {kind}"),
        }
    }
}

impl From<EncodeError> for Failure {
    fn from(_: EncodeError) -> Self {
        Failure::Protocol("encode", "request does not encode")
    }
}

/// One allocation held by the load generator: its socket keeps the 5-tuple.
#[derive(Debug)]
struct Allocation {
    sock: tokio::net::UdpSocket,
    nonce: String,
}

/// Builds a request; with `auth`, long-term credentials and MESSAGE-INTEGRITY.
fn request(
    buf: &mut [u8],
    method: Method,
    tid: TransactionId,
    lifetime: Option<u32>,
    auth: Option<(&str, &[u8])>,
) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(buf, MessageType::new(method, Class::Request), tid)?;
    if method == Method::ALLOCATE {
        e.add(&RequestedTransport::UDP)?;
    }
    if let Some(seconds) = lifetime {
        e.add(&Lifetime(seconds))?;
    }
    if let Some((nonce, key)) = auth {
        e.add(&Username(USER))?;
        e.add(&Realm(REALM))?;
        e.add(&Nonce(nonce))?;
        e.message_integrity(key)?;
    }
    Ok(e.finish())
}

/// Sends `req` until a response with its transaction id arrives, retransmitting with a
/// doubling timeout; returns the response's length in `buf`.
async fn transact(
    sock: &tokio::net::UdpSocket,
    req: &[u8],
    tid: TransactionId,
    buf: &mut [u8],
    step: &'static str,
    stats: &mut LoadStats,
) -> Result<usize, Failure> {
    let mut rto = RTO;
    for attempt in 0..TRIES {
        if attempt > 0 {
            stats.retransmits += 1;
        }
        sock.send(req)
            .await
            .map_err(|e| Failure::Io(step, e.kind()))?;
        let deadline = tokio::time::Instant::now() + rto;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(Failure::Io(step, e.kind())),
                Ok(Ok(n)) => {
                    if Header::peek(&buf[..n]).is_some_and(|h| h.tid == tid) {
                        return Ok(n);
                    }
                }
            }
        }
        rto *= 2;
    }
    Err(Failure::Timeout(step))
}

/// The error code of an error response, or a protocol failure.
fn error_code(msg: &Message<'_>, step: &'static str) -> Result<u16, Failure> {
    match msg.get::<ErrorCode<'_>>() {
        Some(Ok(e)) => Ok(e.code),
        _ => Err(Failure::Protocol(step, "error response without ERROR-CODE")),
    }
}

fn nonce_of(msg: &Message<'_>, step: &'static str) -> Result<String, Failure> {
    match msg.get::<Nonce<'_>>() {
        Some(Ok(n)) => Ok(n.as_str().to_owned()),
        _ => Err(Failure::Protocol(step, "challenge without NONCE")),
    }
}

/// Allocate -> 401 -> Allocate with credentials -> success (a 438 is answered once with the
/// new nonce), from a new UDP socket, as a new WebRTC client does.
async fn allocate(
    server: SocketAddr,
    key: &[u8; 16],
    stats: &mut LoadStats,
) -> Result<Allocation, Failure> {
    const STEP: &str = "challenge";
    let sock = tokio::net::UdpSocket::bind((client_ip(), 0))
        .await
        .map_err(|e| Failure::Io("bind", e.kind()))?;
    sock.connect(server)
        .await
        .map_err(|e| Failure::Io("connect", e.kind()))?;
    let t0 = Instant::now();
    let mut req = [0u8; 512];
    let mut buf = [0u8; 1500];
    let tid = next_tid();
    let n = request(&mut req, Method::ALLOCATE, tid, None, None)?;
    let m = transact(&sock, &req[..n], tid, &mut buf, STEP, stats).await?;
    let msg = Message::decode(&buf[..m]).map_err(|_| Failure::Protocol(STEP, "undecodable"))?;
    if msg.class() != Class::Error {
        return Err(Failure::Protocol(STEP, "allocated without credentials"));
    }
    let code = error_code(&msg, STEP)?;
    if code != 401 {
        return Err(Failure::Code(STEP, code));
    }
    match msg.get::<Realm<'_>>() {
        Some(Ok(r)) if r.as_str() == REALM => {}
        _ => return Err(Failure::Protocol(STEP, "challenge without our REALM")),
    }
    let mut nonce = nonce_of(&msg, STEP)?;

    const AUTH: &str = "allocate";
    for _ in 0..2 {
        let tid = next_tid();
        let n = request(&mut req, Method::ALLOCATE, tid, None, Some((&nonce, key)))?;
        let m = transact(&sock, &req[..n], tid, &mut buf, AUTH, stats).await?;
        let msg = Message::decode(&buf[..m]).map_err(|_| Failure::Protocol(AUTH, "undecodable"))?;
        match msg.class() {
            Class::Success => {
                if msg.verify_integrity(key).is_err() {
                    return Err(Failure::Protocol(AUTH, "bad MESSAGE-INTEGRITY"));
                }
                if !matches!(msg.get::<XorRelayedAddress>(), Some(Ok(_))) {
                    return Err(Failure::Protocol(AUTH, "no XOR-RELAYED-ADDRESS"));
                }
                let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                stats.latencies_us.push(us);
                stats.ok += 1;
                return Ok(Allocation { sock, nonce });
            }
            Class::Error => match error_code(&msg, AUTH)? {
                438 => {
                    stats.stale_nonces += 1;
                    nonce = nonce_of(&msg, AUTH)?;
                }
                code => return Err(Failure::Code(AUTH, code)),
            },
            _ => return Err(Failure::Protocol(AUTH, "unexpected message class")),
        }
    }
    Err(Failure::Code(AUTH, 438))
}

/// Refresh with LIFETIME 0: the allocation ends.
async fn refresh0(a: &Allocation, key: &[u8; 16], stats: &mut LoadStats) -> Result<(), Failure> {
    const STEP: &str = "refresh";
    let mut req = [0u8; 512];
    let mut buf = [0u8; 1500];
    let mut nonce = a.nonce.clone();
    for _ in 0..2 {
        let tid = next_tid();
        let n = request(&mut req, Method::REFRESH, tid, Some(0), Some((&nonce, key)))?;
        let m = transact(&a.sock, &req[..n], tid, &mut buf, STEP, stats).await?;
        let msg = Message::decode(&buf[..m]).map_err(|_| Failure::Protocol(STEP, "undecodable"))?;
        match msg.class() {
            Class::Success => return Ok(()),
            Class::Error => match error_code(&msg, STEP)? {
                438 => {
                    stats.stale_nonces += 1;
                    nonce = nonce_of(&msg, STEP)?;
                }
                code => return Err(Failure::Code(STEP, code)),
            },
            _ => return Err(Failure::Protocol(STEP, "unexpected message class")),
        }
    }
    Err(Failure::Code(STEP, 438))
}

/// `clients` loops of allocate + refresh 0 until `duration` is over; the allocations in flight
/// then finish.
async fn churn(server: SocketAddr, key: [u8; 16], clients: usize, duration: Duration) -> LoadStats {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(async move {
            let mut stats = LoadStats::default();
            while Instant::now() < deadline {
                match allocate(server, &key, &mut stats).await {
                    Ok(a) => {
                        if let Err(f) = refresh0(&a, &key, &mut stats).await {
                            stats.fail(f);
                        }
                    }
                    Err(f) => stats.fail(f),
                }
            }
            stats
        });
    }
    let mut all = LoadStats::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(stats) => all.merge(stats),
            Err(_) => *all.failed.entry("load task panicked".into()).or_default() += 1,
        }
    }
    all
}

/// Creates `n` allocations with `clients` in flight and returns them, held.
async fn hold(
    server: SocketAddr,
    key: [u8; 16],
    n: usize,
    clients: usize,
) -> (Vec<Allocation>, LoadStats) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.min(n) {
        let next = next.clone();
        tasks.spawn(async move {
            let mut stats = LoadStats::default();
            let mut held = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match allocate(server, &key, &mut stats).await {
                    Ok(a) => held.push(a),
                    Err(f) => stats.fail(f),
                }
            }
            (held, stats)
        });
    }
    let mut all = LoadStats::default();
    let mut held = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((h, stats)) => {
                held.extend(h);
                all.merge(stats);
            }
            Err(_) => *all.failed.entry("load task panicked".into()).or_default() += 1,
        }
    }
    (held, all)
}

// ---------------------------------------------------------------------------------------------
// Results

fn per(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| n / d)
}

#[derive(Debug)]
enum Measured {
    Relay(RelayResult),
    Alloc(AllocResult),
    Memory(MemoryResult),
}

impl fmt::Display for Measured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measured::Relay(r) => write!(
                f,
                "sent {} received {} in {:.1} s; server CPU {:.2} s -> {} relayed messages per CPU-second; loss {:.3} %, average RTT {:.3} ms",
                r.sent,
                r.received,
                r.wall,
                r.cpu,
                fmt_opt(r.per_cpu_second(), 0),
                r.loss_pct,
                r.rtt_ms
            ),
            Measured::Alloc(a) => write!(
                f,
                "{} allocations in {:.1} s ({}/s), server CPU {:.2} s ({} per CPU-second), load generator CPU {:.2} s; {} retransmits, {} stale nonces; {}",
                a.stats.ok,
                a.wall,
                fmt_opt(a.per_second(), 0),
                a.cpu,
                fmt_opt(a.per_cpu_second(), 0),
                a.client_cpu,
                a.stats.retransmits,
                a.stats.stale_nonces,
                a.stats.failures()
            ),
            Measured::Memory(m) => write!(
                f,
                "{} allocations held (made in {:.1} s); VmRSS {} KiB -> {} KiB: {} MiB per 10,000; {}",
                m.stats.ok,
                m.seconds,
                m.before_kib,
                m.after_kib,
                fmt_opt(m.mib_per_10k(), 2),
                m.stats.failures()
            ),
        }
    }
}

type Outcome = std::result::Result<Measured, String>;

#[derive(Debug, Default)]
struct Results(BTreeMap<(Part, Server), Outcome>);

/// Which direction is better, and the goal ratio ours/coturn.
#[derive(Debug, Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Results {
    fn relay(&self, s: Server) -> Option<&RelayResult> {
        match self.0.get(&(Part::Relay, s)) {
            Some(Ok(Measured::Relay(r))) => Some(r),
            _ => None,
        }
    }

    fn alloc(&self, s: Server) -> Option<&AllocResult> {
        match self.0.get(&(Part::Alloc, s)) {
            Some(Ok(Measured::Alloc(r))) => Some(r),
            _ => None,
        }
    }

    fn memory(&self, s: Server) -> Option<&MemoryResult> {
        match self.0.get(&(Part::Memory, s)) {
            Some(Ok(Measured::Memory(r))) => Some(r),
            _ => None,
        }
    }

    fn table(&self, s: &Settings) -> String {
        let mut t = Table::default();
        let both = |f: &dyn Fn(Server) -> Option<f64>| (f(Server::Ours), f(Server::Coturn));
        if s.parts.contains(&Part::Relay) {
            t.section(&format!(
                "relay: turnutils_uclient -m {} -n {} -l {} -z {}, channels",
                s.clients, s.messages, s.length, s.interval_ms
            ));
            t.row(
                "messages relayed (2 x received)",
                both(&|x| self.relay(x).map(|r| r.relayed() as f64)),
                0,
                None,
            );
            t.row(
                "server CPU seconds",
                both(&|x| self.relay(x).map(|r| r.cpu)),
                2,
                None,
            );
            t.row(
                "relayed messages per CPU-second",
                both(&|x| self.relay(x).and_then(RelayResult::per_cpu_second)),
                0,
                Some(Goal::AtLeast(2.0)),
            );
            t.row(
                "loss %",
                both(&|x| self.relay(x).map(|r| r.loss_pct)),
                3,
                None,
            );
            t.row(
                "average RTT ms (uclient)",
                both(&|x| self.relay(x).map(|r| r.rtt_ms)),
                3,
                None,
            );
        }
        if s.parts.contains(&Part::Alloc) {
            t.section(&format!(
                "alloc: {} clients in flight, {} s, 401 + Allocate + Refresh 0 each",
                s.alloc_clients, s.duration
            ));
            t.row(
                "allocations",
                both(&|x| self.alloc(x).map(|r| r.stats.ok as f64)),
                0,
                None,
            );
            t.row(
                "failed steps",
                both(&|x| self.alloc(x).map(|r| r.stats.failed_total() as f64)),
                0,
                None,
            );
            t.row(
                "allocations per second (wall)",
                both(&|x| self.alloc(x).and_then(AllocResult::per_second)),
                0,
                Some(Goal::AtLeast(2.0)),
            );
            t.row(
                "server CPU seconds",
                both(&|x| self.alloc(x).map(|r| r.cpu)),
                2,
                None,
            );
            t.row(
                "allocations per CPU-second",
                both(&|x| self.alloc(x).and_then(AllocResult::per_cpu_second)),
                0,
                Some(Goal::AtLeast(2.0)),
            );
            t.row(
                "latency p50 ms (401 + Allocate)",
                both(&|x| self.alloc(x).and_then(|r| r.p50_ms)),
                2,
                None,
            );
            t.row(
                "latency p99 ms",
                both(&|x| self.alloc(x).and_then(|r| r.p99_ms)),
                2,
                None,
            );
            t.row(
                "load generator CPU seconds",
                both(&|x| self.alloc(x).map(|r| r.client_cpu)),
                2,
                None,
            );
        }
        if s.parts.contains(&Part::Memory) {
            t.section(&format!("memory: {} allocations held", s.allocations));
            t.row(
                "allocations held",
                both(&|x| self.memory(x).map(|r| r.stats.ok as f64)),
                0,
                None,
            );
            t.row(
                "VmRSS before, MiB",
                both(&|x| self.memory(x).map(|r| r.before_kib as f64 / 1024.0)),
                1,
                None,
            );
            t.row(
                "VmRSS after, MiB",
                both(&|x| self.memory(x).map(|r| r.after_kib as f64 / 1024.0)),
                1,
                None,
            );
            t.row(
                "MiB per 10,000 allocations",
                both(&|x| self.memory(x).and_then(MemoryResult::mib_per_10k)),
                2,
                Some(Goal::AtMost(0.25)),
            );
        }
        let mut out = t.render();
        let failed: Vec<String> = self
            .0
            .iter()
            .filter_map(|((part, server), r)| {
                r.as_ref().err().map(|e| {
                    format!(
                        "  {part:?} / {server} FAILED: {}",
                        e.lines().next().unwrap_or("")
                    )
                })
            })
            .collect();
        if !failed.is_empty() {
            out.push_str(&failed.join("\n"));
            out.push('\n');
        }
        out
    }
}

#[derive(Debug, Default)]
struct Table {
    lines: Vec<Line>,
}

#[derive(Debug)]
enum Line {
    Section(String),
    Row {
        label: String,
        ours: String,
        coturn: String,
        ratio: String,
        goal: String,
    },
}

impl Table {
    fn section(&mut self, title: &str) {
        self.lines.push(Line::Section(title.to_owned()));
    }

    fn row(
        &mut self,
        label: &str,
        (ours, coturn): (Option<f64>, Option<f64>),
        decimals: usize,
        goal: Option<Goal>,
    ) {
        let ratio = match (ours, coturn) {
            (Some(o), Some(c)) if c > 0.0 => Some(o / c),
            _ => None,
        };
        let goal = match (goal, ratio) {
            (Some(Goal::AtLeast(g)), Some(r)) => {
                format!("{} (goal >= {g}x)", if r >= g { "met" } else { "NOT met" })
            }
            (Some(Goal::AtMost(g)), Some(r)) => {
                format!("{} (goal <= {g}x)", if r <= g { "met" } else { "NOT met" })
            }
            (Some(Goal::AtLeast(g)), None) => format!("(goal >= {g}x)"),
            (Some(Goal::AtMost(g)), None) => format!("(goal <= {g}x)"),
            (None, _) => String::new(),
        };
        self.lines.push(Line::Row {
            label: label.to_owned(),
            ours: fmt_opt(ours, decimals),
            coturn: fmt_opt(coturn, decimals),
            ratio: ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
            goal,
        });
    }

    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<34} {:>14} {:>14} {:>12}\n",
            "", "xdpturn", "coturn", "ours/coturn"
        ));
        for line in &self.lines {
            match line {
                Line::Section(title) => out.push_str(&format!("{title}\n")),
                Line::Row {
                    label,
                    ours,
                    coturn,
                    ratio,
                    goal,
                } => {
                    let row = format!("  {label:<32} {ours:>14} {coturn:>14} {ratio:>12}  {goal}");
                    out.push_str(row.trim_end());
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// A number with thousands separators (when it has no decimals), or "-".
fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    let Some(v) = v else {
        return "-".into();
    };
    if decimals > 0 {
        return format!("{v:.decimals$}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if v < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
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

    #[test]
    fn groups_thousands() {
        assert_eq!(fmt_opt(Some(1234567.4), 0), "1,234,567");
        assert_eq!(fmt_opt(Some(999.0), 0), "999");
        assert_eq!(fmt_opt(Some(1.234), 2), "1.23");
        assert_eq!(fmt_opt(None, 2), "-");
    }

    #[test]
    fn requests_decode_with_integrity() {
        let key = long_term_key_md5(USER, REALM, PASSWORD);
        let mut buf = [0u8; 512];
        let tid = next_tid();
        let n = request(
            &mut buf,
            Method::REFRESH,
            tid,
            Some(0),
            Some(("nonce", &key)),
        )
        .expect("encodes");
        let msg = Message::decode(&buf[..n]).expect("decodes");
        assert_eq!(msg.method(), Method::REFRESH);
        assert_eq!(
            msg.get::<Lifetime>().and_then(Result::ok),
            Some(Lifetime(0))
        );
        assert!(msg.verify_integrity(&key).is_ok());
        assert_ne!(next_tid(), tid);
    }
}
