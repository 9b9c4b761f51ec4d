//! Set-up of `cargo xtask bench`: the tools and binaries it needs, the optimised re-run of the
//! load generator, the file-descriptor limit and relay port range both servers get, what the
//! report says about the machine, and a scratch directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, shown};
use crate::repo_root;

/// Set in the environment of the optimised re-run of this command.
pub(super) const OPTIMIZED_ENV: &str = "XDPTURN_BENCH_OPTIMIZED";

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

pub(super) fn find_tool(name: &str, needed: bool) -> Result<PathBuf> {
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
pub(super) fn rerun_optimized() -> Result<ExitCode> {
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

pub(super) fn build_relay() -> Result<PathBuf> {
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
pub(super) fn raise_nofile(allocations: usize) -> Result<u64> {
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
pub(super) fn relay_port_range(allocations: usize) -> Result<(u16, u16)> {
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

pub(super) fn describe_machine() -> String {
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

pub(super) fn git_head() -> String {
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

pub(super) fn coturn_version(turnserver: &Path) -> String {
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
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xdpturn-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// A fresh subdirectory for one run.
    pub(super) fn dir(&self, name: &str) -> Result<PathBuf> {
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
