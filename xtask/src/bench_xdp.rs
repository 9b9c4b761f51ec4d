//! `cargo xtask bench-xdp`: what the XDP fast path costs, in the kernel and end to end.
//!
//! Builds the program (`cargo xtask build-ebpf`), then runs two ignored tests in a release build
//! (root):
//!
//!  1. `bench_ns_per_packet` of relay/tests/xdp_testrun.rs: it reuses that file's network
//!     namespace (veths, neighbours), loads the program through `relay::dataplane`,
//!     binds a channel per family pair, and prints the kernel-measured time per run for
//!     client -> peer and peer -> client, next to packets the program passes up.
//!
//!  2. `bench_packets_per_cpu_second` of relay/tests/xdp_bench.rs: client ns -> relay ns -> peer
//!     ns over veth, a UDP_SEGMENT (or sendmmsg) sender on one core, the server under test and
//!     its veths' NAPI threads on the other; our relay with XDP (native), our relay in
//!     userspace, coturn's turnserver, one after the other; relayed packets per CPU-second of
//!     the relay core (elapsed minus idle and steal, /proc/stat) and of the relay's own tasks
//!     (scheduler runtime), with the ratio to coturn.
//!
//! The machine may be shared and noisy: the figures are figures, not assertions.

use std::process::ExitCode;

use anyhow::Result;

use crate::cmd::Cmd;
use crate::test::apt_packages;
use crate::{ebpf, repo_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TestRun: runs per case (one packet per run).
    #[arg(
        long,
        default_value_t = 20_000,
        env = "XDPTURN_BENCH_RUNS",
        value_name = "N"
    )]
    pub runs: u32,

    /// End to end: seconds of sending per path and rate.
    #[arg(
        long,
        default_value_t = 5.0,
        env = "XDPTURN_BENCH_SECS",
        value_name = "S"
    )]
    pub secs: f64,

    /// End to end: offered packets per second, comma-separated, one round of the paths each;
    /// 0 sends flat out.
    #[arg(
        long,
        default_value = "50000,200000,0",
        env = "XDPTURN_BENCH_PPS",
        value_name = "PPS,..."
    )]
    pub pps: String,

    /// End to end: the core of the server under test and its NAPI threads.
    #[arg(
        long,
        default_value_t = 1,
        env = "XDPTURN_BENCH_RELAY_CPU",
        value_name = "CPU"
    )]
    pub relay_cpu: u32,

    /// End to end: the core of the sender and of the client's and peer's NAPI threads.
    #[arg(
        long,
        default_value_t = 0,
        env = "XDPTURN_BENCH_SENDER_CPU",
        value_name = "CPU"
    )]
    pub sender_cpu: u32,

    /// End to end: which paths, comma-separated, of xdp, userspace, coturn.
    #[arg(
        long,
        default_value = "xdp,userspace,coturn",
        env = "XDPTURN_BENCH_PATHS",
        value_name = "PATH,..."
    )]
    pub paths: String,

    /// End to end: how the sender sends, `gso` (64 datagrams per sendmsg, UDP_SEGMENT) or
    /// `sendmmsg` (64 per call).
    #[arg(
        long,
        default_value = "gso",
        env = "XDPTURN_BENCH_SENDER",
        value_name = "HOW"
    )]
    pub sender: String,

    /// End to end: at most this long before each path, wait for a second in which the relay
    /// core is at most 10% busy (others' work on a shared machine counts in its CPU time).
    #[arg(
        long,
        default_value_t = 30,
        env = "XDPTURN_BENCH_QUIET_WAIT",
        value_name = "S"
    )]
    pub quiet_wait: u32,

    /// End to end: runs per path and rate; the one whose relay-core CPU time exceeds its
    /// relay's own tasks' the least (the least disturbed by others' work) goes into the table.
    #[arg(
        long,
        default_value_t = 2,
        env = "XDPTURN_BENCH_REPEAT",
        value_name = "N"
    )]
    pub repeat: u32,

    /// Only the TestRun figures.
    #[arg(long, conflicts_with = "end_to_end_only")]
    pub testrun_only: bool,

    /// Only the end-to-end figures.
    #[arg(long)]
    pub end_to_end_only: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    // What the tests run besides the relay: `ip` for the namespaces and veth pairs, `sysctl`
    // (procps) in them, and for the end-to-end figures ethtool and coturn's turnserver (taskset
    // is in util-linux, always there). Installed as `cargo xtask test` installs them; the toolchain by `build-ebpf`'s
    // own step.
    println!("==> tools");
    if args.testrun_only {
        apt_packages(&["iproute2", "procps"])?;
    } else {
        apt_packages(&["iproute2", "procps", "ethtool", "coturn"])?;
    }
    ebpf::run(&ebpf::Args::default())?;
    let root = repo_root();
    if !args.end_to_end_only {
        Cmd::new("cargo")
            .current_dir(&root)
            .env("XDPTURN_BENCH_RUNS", &args.runs.to_string())
            .args(["test", "--release", "-p", "relay", "--test", "xdp_testrun"])
            .args([
                "--",
                "--ignored",
                "--exact",
                "bench_ns_per_packet",
                "--nocapture",
            ])
            .run()?;
    }
    if !args.testrun_only {
        Cmd::new("cargo")
            .current_dir(&root)
            .env("XDPTURN_BENCH_SECS", &args.secs.to_string())
            .env("XDPTURN_BENCH_PPS", &args.pps)
            .env("XDPTURN_BENCH_RELAY_CPU", &args.relay_cpu.to_string())
            .env("XDPTURN_BENCH_SENDER_CPU", &args.sender_cpu.to_string())
            .env("XDPTURN_BENCH_PATHS", &args.paths)
            .env("XDPTURN_BENCH_REPEAT", &args.repeat.to_string())
            .env("XDPTURN_BENCH_SENDER", &args.sender)
            .env("XDPTURN_BENCH_QUIET_WAIT", &args.quiet_wait.to_string())
            .args(["test", "--release", "-p", "relay", "--test", "xdp_bench"])
            .args([
                "--",
                "--ignored",
                "--exact",
                "bench_packets_per_cpu_second",
                "--nocapture",
            ])
            .run()?;
    }
    Ok(ExitCode::SUCCESS)
}
