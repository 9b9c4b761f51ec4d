//! `cargo xtask bench-xdp`: how long the XDP program takes per packet, under BPF_PROG_TEST_RUN.
//!
//! Builds the program (`cargo xtask build-ebpf`), then runs the ignored test
//! `bench_ns_per_packet` of relay/tests/xdp_testrun.rs in a release build: it reuses that file's
//! network namespace (veths, neighbours, forwarding), loads the program through
//! `relay::dataplane`, binds a channel per family pair, and prints the kernel-measured time per
//! run for client -> peer and peer -> client, next to packets the program passes up. Needs root.
//! The machine may be shared and noisy: the figures are figures, not assertions.

use std::process::ExitCode;

use anyhow::Result;

use crate::cmd::Cmd;
use crate::{ebpf, repo_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs per case (one packet per run).
    #[arg(
        long,
        default_value_t = 20_000,
        env = "XDPTURN_BENCH_RUNS",
        value_name = "N"
    )]
    pub runs: u32,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    ebpf::run(&ebpf::Args::default())?;
    Cmd::new("cargo")
        .current_dir(&repo_root())
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
    Ok(ExitCode::SUCCESS)
}
