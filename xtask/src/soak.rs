//! `cargo xtask soak --minutes N`: one relay under a churning load for N minutes, sampled.
//!
//! Installs what the soak needs (coturn's tools, bpftool, iproute2), builds the XDP program,
//! then runs the ignored test `soak` of relay/tests/soak.rs (release build by default: the
//! figures are the product's) with `XDPTURN_SOAK_MINUTES` and `XDPTURN_SOAK_SAMPLE_SECS`. The
//! test prints a line per sample (RSS, file descriptors, threads, worker tasks, allocations,
//! permissions, channels, connections, XDP map entries), the slope of each per hour, and ends
//! with `RESULT soak {json}`; it fails if, once the load has stopped and the lifetimes have run
//! out, the relay holds anything it did not hold when idle (a leak). Memory and descriptor
//! slopes are figures, not assertions: the machine may be shared and noisy.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cmd::Cmd;
use crate::test::apt_packages;
use crate::{ebpf, repo_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Minutes of load (30 or more for slopes worth reading; fractions allowed).
    #[arg(long, default_value_t = 30.0, value_name = "N")]
    pub minutes: f64,

    /// Seconds between samples.
    #[arg(long, default_value_t = 10, value_name = "S")]
    pub sample_secs: u32,

    /// Build the relay in the dev profile instead of release (quicker to build; the figures
    /// are then a debug build's).
    #[arg(long)]
    pub debug: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if args.minutes.is_nan() || args.minutes <= 0.0 {
        bail!("--minutes must be more than 0, not {}", args.minutes);
    }
    println!("==> tools");
    apt_packages(&["iproute2", "coturn", "bpftool"])?;
    ebpf::run(&ebpf::Args::default())?;
    let root = repo_root();
    let mut cmd = Cmd::new("cargo")
        .current_dir(&root)
        .env("XDPTURN_SOAK_MINUTES", &args.minutes.to_string())
        .env("XDPTURN_SOAK_SAMPLE_SECS", &args.sample_secs.to_string())
        .arg("test");
    if !args.debug {
        cmd = cmd.arg("--release");
    }
    cmd.args(["-p", "relay", "--test", "soak"])
        .args(["--", "--ignored", "--exact", "soak", "--nocapture"])
        .run()?;
    Ok(ExitCode::SUCCESS)
}
