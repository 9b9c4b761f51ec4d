//! `cargo xtask bench-xdp`: what the XDP fast path costs, in the kernel and end to end.
//!
//! Builds the program (`cargo xtask build-ebpf`), then runs two ignored tests in a release build
//! (root):
//!
//!  1. `bench_ns_per_packet` of relay/tests/xdp_testrun.rs: it reuses that file's network
//!     namespace (veths, neighbours), loads the program through `relay::dataplane`, binds
//!     channels, an allocation with a permission and a same-relay pair, and prints, for every
//!     forwarded path, the kernel-measured time of the program per packet under
//!     BPF_PROG_TEST_RUN (no run-time statistics) beside the floor's (relay-ebpf/src/floor.rs,
//!     a minimal forwarder) on the same packet, with `repeat` = 1,000,000 where it works (see
//!     the test for why it does not for the relay's program), the TC program on the same
//!     packets (`tc_prog_ns`, single runs minus its figure on a frame it passes on at once),
//!     and the program hot: `repeat`
//!     on cycles of bindings that forward every repetition (`prog_hot_ns`, the mean of the
//!     paths the cycle alternates, named by `hot_cycle`; a line `BENCH-XDP-HOT {json}`).
//!
//!  2. `bench_packets_per_cpu_second` of relay/tests/xdp_bench.rs: client ns -> relay ns -> peer
//!     ns over veth, a UDP_SEGMENT (or sendmmsg) sender on one core, the server under test and
//!     its veths' NAPI threads on the other; the floor attached in the relay's place, our relay
//!     with XDP (native), with XDP in generic mode (skb), with its TC program (tc), in
//!     userspace, coturn's turnserver, one after the other;
//!     relayed packets per CPU-second of the relay core (elapsed minus idle and steal,
//!     /proc/stat) and of the relay's own tasks (scheduler runtime), with the ratios to the
//!     floor and to coturn. ChannelData from the client to the peer, IPv4: the one path it
//!     drives.
//!
//! The two print their figures also as lines `BENCH-XDP-TESTRUN {json}` and `BENCH-XDP-E2E
//! {json}`, from which this command ends with one line, `RESULT bench-xdp {json}`:
//! `{"paths": {"<path>": {"prog_ns", "floor_prog_ns", "tc_prog_ns", "prog_hot_ns", "hot_cycle", "rates": {"<offered pps, or max>":
//! {"floor", "ours", "userspace", "coturn", "ours_skb", "ours_tc" (packets per relay-core
//! CPU-second; ours_skb and ours_tc: our relay with generic XDP and with the TC program), "ours_loss_pct",
//! "coturn_loss_pct"}}}}}`, with null for every figure not measured (a path the end-to-end
//! benchmark does not drive, a part left out with `--testrun-only` or `--end-to-end-only`).
//!
//! The machine may be shared and noisy: the figures are figures, not assertions.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::{Map, Value, json};

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

    /// End to end: which paths, comma-separated, of floor, xdp (native), skb (XDP in
    /// generic mode), tc (the TC program), userspace, coturn.
    #[arg(
        long,
        default_value = "floor,xdp,skb,tc,userspace,coturn",
        env = "XDPTURN_BENCH_PATHS",
        value_name = "PATH,..."
    )]
    pub paths: String,

    /// End to end: which flows, comma-separated, of channel_c2p_v4 (ChannelData from the
    /// client, UDP to the peer), channel_p2c_v4 (UDP from the peer, ChannelData to the
    /// client), send_v4 and data_v4 (the same with Send and Data indications) and
    /// same_relay_v4 (from a client to another client's relayed address on the same relay),
    /// channel_c2p_v6, channel_p2c_v6 (both ways of a channel over IPv6) and cross_v4_v6 (an
    /// IPv4 client, an IPv6 peer).
    #[arg(
        long,
        default_value = "channel_c2p_v4,channel_p2c_v4,send_v4,data_v4,same_relay_v4,channel_c2p_v6,channel_p2c_v6,cross_v4_v6",
        env = "XDPTURN_BENCH_FLOWS",
        value_name = "FLOW,..."
    )]
    pub flows: String,

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
    let mut output = String::new();
    if !args.end_to_end_only {
        output += &Cmd::new("cargo")
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
            .tee()?;
    }
    if !args.testrun_only {
        output += &Cmd::new("cargo")
            .current_dir(&root)
            .env("XDPTURN_BENCH_SECS", &args.secs.to_string())
            .env("XDPTURN_BENCH_PPS", &args.pps)
            .env("XDPTURN_BENCH_RELAY_CPU", &args.relay_cpu.to_string())
            .env("XDPTURN_BENCH_SENDER_CPU", &args.sender_cpu.to_string())
            .env("XDPTURN_BENCH_PATHS", &args.paths)
            .env("XDPTURN_BENCH_FLOWS", &args.flows)
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
            .tee()?;
    }
    let rates: Vec<String> = if args.testrun_only {
        Vec::new()
    } else {
        args.pps
            .split(',')
            .map(|r| match r.trim() {
                "0" => "max".to_owned(),
                r => r.to_owned(),
            })
            .collect()
    };
    let result = assemble(&output, &rates)?;
    println!("\nRESULT bench-xdp {result}");
    Ok(ExitCode::SUCCESS)
}

/// The paths the RESULT line always has (more when the tests measure more).
const PATHS: [&str; 8] = [
    "channel_c2p_v4",
    "channel_p2c_v4",
    "channel_c2p_v6",
    "channel_p2c_v6",
    "send_v4",
    "data_v4",
    "same_relay_v4",
    "cross_v4_v6",
];

/// The RESULT line's JSON from the tests' `BENCH-XDP-TESTRUN` and `BENCH-XDP-E2E` lines in
/// `output`: every path of [`PATHS`] and of the lines, each with every rate of `rates` (the
/// offered rates, `max` for flat out) and of the lines; null where nothing was measured.
fn assemble(output: &str, rates: &[String]) -> Result<Value> {
    let nulls = || {
        json!({"floor": null, "ours": null, "userspace": null, "coturn": null,
               "ours_loss_pct": null, "coturn_loss_pct": null, "ours_skb": null,
               "ours_tc": null})
    };
    let mut paths = Map::new();
    let entry = |paths: &mut Map<String, Value>, key: &str| {
        paths
            .entry(key.to_owned())
            .or_insert_with(|| {
                let rates: Map<String, Value> =
                    rates.iter().map(|r| (r.clone(), nulls())).collect();
                json!({"prog_ns": null, "floor_prog_ns": null, "tc_prog_ns": null,
                       "prog_hot_ns": null, "hot_cycle": null, "rates": rates})
            })
            .clone()
    };
    for key in PATHS {
        entry(&mut paths, key);
    }
    for line in output.lines() {
        if let Some(part) = line.strip_prefix("BENCH-XDP-TESTRUN ") {
            let part: Map<String, Value> = serde_json::from_str(part)
                .with_context(|| format!("the TestRun figures: {part}"))?;
            for (key, figures) in part {
                let mut path = entry(&mut paths, &key);
                path["prog_ns"] = figures["prog_ns"].clone();
                path["floor_prog_ns"] = figures["floor_prog_ns"].clone();
                path["tc_prog_ns"] = figures["tc_prog_ns"].clone();
                paths.insert(key, path);
            }
        } else if let Some(part) = line.strip_prefix("BENCH-XDP-HOT ") {
            // Each cycle's figure goes to every path it alternates (their mean).
            let part: Map<String, Value> = serde_json::from_str(part)
                .with_context(|| format!("the hot TestRun figures: {part}"))?;
            for (cycle, figures) in part {
                for key in figures["paths"].as_array().into_iter().flatten() {
                    let Some(key) = key.as_str() else { continue };
                    let mut path = entry(&mut paths, key);
                    path["prog_hot_ns"] = figures["prog_hot_ns"].clone();
                    path["hot_cycle"] = Value::String(cycle.clone());
                    paths.insert(key.to_owned(), path);
                }
            }
        } else if let Some(part) = line.strip_prefix("BENCH-XDP-E2E ") {
            let part: Value = serde_json::from_str(part)
                .with_context(|| format!("the end-to-end figures: {part}"))?;
            let (Some(key), Some(rate)) = (part["path"].as_str(), part["rate"].as_str()) else {
                anyhow::bail!("an end-to-end line without its path or rate: {part}");
            };
            let mut path = entry(&mut paths, key);
            path["rates"][rate] = part["figures"].clone();
            paths.insert(key.to_owned(), path);
        }
    }
    // Rates measured for one path are rates of every path (null where not measured there).
    let all_rates: Vec<String> = paths
        .values()
        .filter_map(|p| p["rates"].as_object())
        .flat_map(|r| r.keys().cloned())
        .collect();
    for path in paths.values_mut() {
        if let Some(r) = path["rates"].as_object_mut() {
            for rate in &all_rates {
                r.entry(rate.clone()).or_insert_with(nulls);
            }
        }
    }
    Ok(json!({ "paths": paths }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_the_result_line() {
        let output = "noise\n\
            BENCH-XDP-TESTRUN {\"channel_c2p_v4\": {\"prog_ns\": 250.5, \"floor_prog_ns\": 10.0, \
            \"prog_single_ns\": 340.0}, \"cross_v6_v4\": {\"prog_ns\": 280.0, \"floor_prog_ns\": 20.0}}\n\
            BENCH-XDP-E2E {\"path\": \"channel_c2p_v4\", \"rate\": \"max\", \"figures\": \
            {\"floor\": 523212, \"ours\": 428627, \"userspace\": null, \"coturn\": 50000, \
            \"ours_loss_pct\": 15.19, \"coturn_loss_pct\": 60.0}}\n\
            BENCH-XDP-HOT {\"channel_v4\": {\"prog_hot_ns\": 41.5, \"paths\": \
            [\"channel_c2p_v4\", \"channel_p2c_v4\"]}}\n";
        let rates = ["50000".to_owned(), "max".to_owned()];
        let result = assemble(output, &rates).expect("assembles");
        let paths = result["paths"].as_object().expect("an object");
        assert_eq!(paths.len(), PATHS.len() + 1, "the eight, and cross_v6_v4");
        let c2p = &paths["channel_c2p_v4"];
        assert_eq!(c2p["prog_ns"], json!(250.5));
        assert_eq!(c2p["floor_prog_ns"], json!(10.0));
        assert!(c2p.get("prog_single_ns").is_none());
        assert_eq!(c2p["rates"]["max"]["ours"], json!(428627));
        assert_eq!(c2p["rates"]["max"]["coturn_loss_pct"], json!(60.0));
        assert_eq!(c2p["rates"]["50000"]["ours"], Value::Null);
        for key in ["channel_c2p_v4", "channel_p2c_v4"] {
            assert_eq!(paths[key]["prog_hot_ns"], json!(41.5));
            assert_eq!(paths[key]["hot_cycle"], json!("channel_v4"));
        }
        assert_eq!(paths["channel_c2p_v6"]["prog_hot_ns"], Value::Null);
        let send = &paths["send_v4"];
        assert_eq!(send["prog_ns"], Value::Null);
        assert_eq!(send["rates"]["max"]["floor"], Value::Null);
        assert_eq!(
            paths["cross_v6_v4"]["rates"]["50000"]["coturn"],
            Value::Null
        );
    }
}
