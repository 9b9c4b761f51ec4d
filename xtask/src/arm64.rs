//! `cargo xtask test-arm64`: the relay on linux/arm64, proven under user-mode emulation. Its
//! unit tests, cross-built for aarch64, run under `qemu-aarch64-static`, then the arm64 relay
//! binary (the one the arm64 image holds) serves `turnutils_uclient` on loopback with 0 loss.
//!
//! The smoke test reuses the relay tests' own launcher and uclient runner
//! (relay/tests/common/), included by path.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::images::{self, IMAGES, Platform};
use crate::{ebpf, repo_root, test};

// The relay tests' helpers, as the operator's tests include them (launch and uclient name
// their sibling as `super::process`).
#[allow(dead_code)]
#[path = "../../relay/tests/common/launch.rs"]
mod launch;
#[allow(dead_code)]
#[path = "../../relay/tests/common/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "../../relay/tests/common/uclient.rs"]
mod uclient;

/// Debian's qemu user-mode emulators, statically linked.
const QEMU: &str = "qemu-aarch64-static";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Install nothing: skip the apt and rustup steps.
    #[arg(long, env = "XTASK_SKIP_INSTALL")]
    pub skip_install: bool,

    /// Do not build: run the relay already built for aarch64 (by `cargo xtask images`).
    #[arg(long)]
    pub no_build: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let root = repo_root();
    if !args.skip_install {
        images::install(&[Platform::Arm64])?;
        test::apt_packages(&["qemu-user-static", "coturn"])?;
    }
    let platform = Platform::Arm64;
    if !args.no_build {
        // The same build as the arm64 image's (same flags, so nothing builds twice), with the
        // XDP program embedded: the BPF bytecode is the same for every host architecture.
        if !args.skip_install {
            ebpf::install_toolchain()?;
        }
        ebpf::build(&ebpf::Args::default())?;
        images::build(&root, platform, &[])?;
    }
    unit_tests(&root, platform)?;
    let relay = images::binary(&root, platform, &IMAGES[0]);
    let stats = smoke(&relay.display().to_string())?;
    println!(
        "    arm64 relay under {QEMU}: uclient sent {}, received {}, 0 lost",
        stats.sent, stats.received
    );
    Ok(ExitCode::SUCCESS)
}

/// The relay's unit tests, built in the release profile with the image build's flags (its
/// dependencies are reused) and run by cargo through qemu.
fn unit_tests(root: &std::path::Path, platform: Platform) -> Result<()> {
    let upper = platform.triple().to_uppercase().replace('-', "_");
    let args = [
        "test",
        "--release",
        "--locked",
        "--target",
        platform.triple(),
    ];
    images::cargo_for(
        root,
        platform,
        &[&args[..], &["-p", "relay", "--lib"]].concat(),
        &[(format!("CARGO_TARGET_{upper}_RUNNER"), QEMU.to_owned())],
    )
}

/// Starts the arm64 relay under qemu on ephemeral loopback ports and runs uclient (channels,
/// 10 clients x 100 messages) through it to coturn's echo peer; fails unless all arrive.
fn smoke(relay: &str) -> Result<uclient::Stats> {
    // A relay port range of its own, apart from the other tests' (20000-29999).
    let base = 40_000 + std::process::id() % 100 * 200;
    let (min, max) = (base.to_string(), (base + 199).to_string());
    println!("$ {QEMU} {relay} ...");
    let launched = launch::launch(
        Command::new(QEMU)
            .arg(relay)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args([
                "--realm",
                "example.org",
                "--min-port",
                &min,
                "--max-port",
                &max,
            ])
            .args(["--user", "alice:wonderland", "--allow-peer", "127.0.0.1"])
            .env("XDPTURN_LOG", "info"),
    );
    let Some(server) = launched.listeners.iter().copied().find(SocketAddr::is_ipv4) else {
        bail!("the relay logged no IPv4 listener");
    };
    let (_peer, peer) = uclient::echo_peer("127.0.0.1");
    let stats = uclient::uclient(
        server,
        peer,
        &[
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-m",
            "10",
            "-n",
            "100",
            "-l",
            "120",
        ],
        Duration::from_secs(120),
    );
    if !stats.exited_ok || !stats.all_arrived(1000) {
        let log = launched
            .log
            .lock()
            .map(|l| l.join("\n"))
            .unwrap_or_default();
        bail!(
            "uclient through the arm64 relay: {} sent, {} received:\n{}\nrelay log:\n{log}",
            stats.sent,
            stats.received,
            stats.text
        );
    }
    drop(launched);
    Ok(stats)
}
