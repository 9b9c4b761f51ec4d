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
//!
//! This file holds the options and the run; `setup` what comes before the parts, `process` the
//! processes started and what /proc says of them, `server` the server under test, `relay`,
//! `alloc` and `memory` one part each, `loadgen` the load generator of the last two, `results`
//! the printed lines and table.

mod alloc;
mod loadgen;
mod memory;
mod process;
mod relay;
mod results;
mod server;
mod setup;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use self::alloc::part_alloc;
use self::memory::part_memory;
use self::relay::part_relay;
use self::results::{Measured, Results};
use self::setup::{
    OPTIMIZED_ENV, Scratch, build_relay, coturn_version, describe_machine, find_tool, git_head,
    raise_nofile, relay_port_range, rerun_optimized,
};
use crate::cmd::Cmd;
use crate::test::apt_packages;

/// The same long-term credentials on both servers.
const REALM: &str = "bench.xdpturn.example";
const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

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

pub fn run(args: &Args) -> Result<ExitCode> {
    let s = Settings::new(args)?;
    let loadgen = s.parts.iter().any(|p| *p != Part::Relay);
    if loadgen && !args.unoptimized_loadgen && std::env::var_os(OPTIMIZED_ENV).is_none() {
        return rerun_optimized();
    }
    let coturn = s.servers.contains(&Server::Coturn);
    if coturn || s.parts.contains(&Part::Relay) {
        // turnserver, turnutils_uclient and turnutils_peer, as `cargo xtask test` installs them.
        println!("==> tools (Debian's coturn)");
        apt_packages(&["coturn"])?;
    }
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
