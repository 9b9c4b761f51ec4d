//! `cargo xtask fuzz`: every cargo-fuzz target (or those named) for N minutes each, on the kept
//! corpus, with libFuzzer's final statistics per target and one machine-readable line.
//!
//! The kept corpus is fuzz/corpus/<target>/, committed: seeds that `--seed` writes (RFC 5769's
//! test vectors and the messages of a real TURN exchange, built with the relay's own codec),
//! and finds merged back after a run. libFuzzer writes what it finds into the first corpus
//! directory it is given, so a run gets a scratch directory first (fuzz/target/corpus-new/,
//! emptied before), the kept corpus second, and afterwards `-merge=1` copies into the kept
//! corpus only the scratch inputs that add coverage to it. `cargo xtask test` runs the same
//! way for a few seconds per target, without the merge, so it leaves the tree as it was.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use serde::Serialize;

mod seeds;

// RFC 5769's vectors, as the relay's tests have them (the file allows its unused ones).
#[path = "../../../relay/tests/common/rfc5769.rs"]
mod rfc5769;

use crate::test::{cargo, cargo_fuzz, fuzz_targets, rustup_components};
use crate::{NIGHTLY, repo_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long each target runs, in minutes (libFuzzer's -max_total_time): 5 unless --runs
    /// is given, which then runs without a time limit.
    #[arg(long, value_name = "N")]
    pub minutes: Option<u32>,

    /// Stop each target after this many executions (libFuzzer's -runs; the kept corpus's
    /// first pass counts), or at --minutes if that comes first: `--runs 100000000` is a run
    /// of 10^8 executions per target.
    #[arg(long, value_name = "N", conflicts_with = "jobs")]
    pub runs: Option<u64>,

    /// Run only this target (repeatable); every target in fuzz/fuzz_targets/ by default.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,

    /// Fuzz with this many processes per target (libFuzzer's -fork=N); the statistics are
    /// then those fork mode prints.
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,

    /// Write the seed corpus into fuzz/corpus/ (RFC 5769's vectors and a TURN exchange built
    /// with the relay's codec, each file named by the SHA-1 of its content, as libFuzzer names
    /// its finds) and exit.
    #[arg(long)]
    pub seed: bool,

    /// Leave the kept corpus as it is: do not merge the run's finds into it.
    #[arg(long)]
    pub no_merge: bool,

    /// Install nothing: skip the rustup and `cargo install` steps.
    #[arg(long, env = "XTASK_SKIP_INSTALL")]
    pub skip_install: bool,
}

/// What one target's run came to.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub executions: u64,
    pub exec_per_sec: u64,
    /// Covered edges (libFuzzer's `cov:`) at the end of the run.
    pub coverage: u64,
    /// Features (`ft:`), libFuzzer's finer coverage measure.
    pub features: u64,
    /// Inputs in the corpus libFuzzer was running on at the end (`corp:`).
    pub corpus_in_run: u64,
    /// Files in the kept corpus after the merge.
    pub corpus_kept: u64,
    /// Files the merge added to the kept corpus.
    pub merged: u64,
    pub peak_rss_mb: u64,
    /// Where the crashing input was written, if the run failed.
    pub crash: Option<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let root = repo_root();
    if args.seed {
        let written = seeds::write(&root)?;
        println!("==> wrote {written} seed files into fuzz/corpus/");
        return Ok(ExitCode::SUCCESS);
    }
    if args.minutes == Some(0) {
        bail!("--minutes must be at least 1");
    }
    if args.runs == Some(0) {
        bail!("--runs must be at least 1");
    }
    let limit = Limit::of(args.minutes, args.runs);
    let all = fuzz_targets(&root)?;
    let targets: Vec<String> = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; there are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    if targets.is_empty() {
        bail!("no targets in fuzz/fuzz_targets/");
    }

    if args.skip_install {
        println!("==> install: skipped (--skip-install)");
    } else {
        println!("==> nightly toolchain and cargo-fuzz");
        rustup_components(NIGHTLY, "minimal", &["rust-src"])?;
        cargo_fuzz(&root)?;
    }

    let mut results: BTreeMap<String, Stats> = BTreeMap::new();
    for target in &targets {
        println!("\n==> fuzz {target} {limit}");
        let mut stats = run_target(&root, target, limit, args.jobs)
            .with_context(|| format!("fuzzing {target}"))?;
        let kept = root.join("fuzz/corpus").join(target);
        if stats.crash.is_none() && !args.no_merge {
            let before = count_files(&kept)?;
            merge(&root, target)?;
            stats.merged = count_files(&kept)?.saturating_sub(before);
        }
        stats.corpus_kept = count_files(&kept)?;
        results.insert(target.clone(), stats);
    }

    println!("\n==> summary ({limit}, per target)");
    println!("{}", table(&results));
    let crashed: Vec<(&String, &String)> = results
        .iter()
        .filter_map(|(t, s)| s.crash.as_ref().map(|c| (t, c)))
        .collect();
    for (target, input) in &crashed {
        println!(
            "CRASH in {target}: input {input}\n    reproduce: cargo +{NIGHTLY} fuzz run {target} {input}"
        );
    }
    println!("{}", result_line(limit, &results));
    if crashed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// When a target's run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub minutes: Option<u32>,
    pub runs: Option<u64>,
}

impl Limit {
    /// `--minutes` and `--runs` as given: five minutes when neither is.
    pub fn of(minutes: Option<u32>, runs: Option<u64>) -> Self {
        match (minutes, runs) {
            (None, None) => Self {
                minutes: Some(5),
                runs: None,
            },
            (minutes, runs) => Self { minutes, runs },
        }
    }

    /// libFuzzer's flags for it.
    fn flags(self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(m) = self.minutes {
            flags.push(format!("-max_total_time={}", u64::from(m) * 60));
        }
        if let Some(n) = self.runs {
            flags.push(format!("-runs={n}"));
        }
        flags
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.minutes, self.runs) {
            (Some(m), None) => write!(f, "for {m} min"),
            (None, Some(n)) => write!(f, "for {n} executions"),
            (Some(m), Some(n)) => write!(f, "for {n} executions or {m} min"),
            (None, None) => write!(f, "without a limit"),
        }
    }
}

/// `cargo fuzz run <target>` with the pinned nightly. The build goes to the fuzz workspace's
/// own target directory (fuzz/target) even when CARGO_TARGET_DIR is set for the main one:
/// its sanitizer build shares nothing with it, and a second one costs an hour on two cores.
pub fn cargo_fuzz_run(root: &Path, target: &str) -> crate::cmd::Cmd {
    cargo(root)
        .env_remove("CARGO_TARGET_DIR")
        .arg(format!("+{NIGHTLY}"))
        .args(["fuzz", "run", target])
}

/// The kept corpus of `target`, created if missing.
pub fn kept_corpus(root: &Path, target: &str) -> Result<PathBuf> {
    let dir = root.join("fuzz/corpus").join(target);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// An empty scratch directory for what a run of `target` finds, under fuzz/target/ (ignored).
pub fn scratch_corpus(root: &Path, target: &str) -> Result<PathBuf> {
    let dir = root.join("fuzz/target/corpus-new").join(target);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `cargo fuzz run` of `target` on the scratch and the kept corpus, until `limit`, with its
/// output shown as it comes and read for the statistics.
fn run_target(root: &Path, target: &str, limit: Limit, jobs: Option<u32>) -> Result<Stats> {
    let scratch = scratch_corpus(root, target)?;
    let kept = kept_corpus(root, target)?;
    let mut cmd = cargo_fuzz_run(root, target)
        .arg(&scratch)
        .arg(&kept)
        .arg("--")
        .args(limit.flags())
        .arg("-print_final_stats=1");
    if let Some(n) = jobs {
        cmd = cmd.arg(format!("-fork={n}"));
    }
    let mut child = cmd
        .into_command()
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start cargo fuzz")?;
    let mut stats = Stats::default();
    let mut crash = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo fuzz's output")?;
            eprintln!("{line}");
            parse_line(&line, &mut stats);
            if let Some(path) = crash_input(&line) {
                crash = Some(path);
            }
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    if !status.success() {
        let input = crash.unwrap_or_else(|| {
            format!(
                "(none reported: see the output above; artifacts go to {})",
                root.join("fuzz/artifacts").join(target).display()
            )
        });
        stats.crash = Some(input);
    }
    Ok(stats)
}

/// Merges the scratch corpus of `target` into its kept corpus: only inputs that add coverage.
fn merge(root: &Path, target: &str) -> Result<()> {
    let scratch = root.join("fuzz/target/corpus-new").join(target);
    if count_files(&scratch)? == 0 {
        return Ok(());
    }
    cargo_fuzz_run(root, target)
        .arg(kept_corpus(root, target)?)
        .arg(&scratch)
        .args(["--", "-merge=1"])
        .run()
}

fn count_files(dir: &Path) -> Result<u64> {
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut n = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        if entry?.file_type()?.is_file() {
            n += 1;
        }
    }
    Ok(n)
}

/// Reads libFuzzer's status lines and final statistics into `stats`. Status lines look like
/// `#12345\tNEW    cov: 812 ft: 2301 corp: 140/9871b lim: 1024 exec/s: 4115 rss: 48Mb`, or in
/// fork mode `#12345: cov: 812 ft: 2301 corp: 140 exec/s: 4115 oom/timeout/crash: 0/0/0 ...`;
/// the final statistics `stat::number_of_executed_units: 12345`.
pub fn parse_line(line: &str, stats: &mut Stats) {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("stat::") {
        let Some((key, value)) = rest.split_once(':') else {
            return;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            return;
        };
        match key.trim() {
            "number_of_executed_units" => stats.executions = value,
            "average_exec_per_sec" => stats.exec_per_sec = value,
            "peak_rss_mb" => stats.peak_rss_mb = value,
            _ => {}
        }
        return;
    }
    let Some(rest) = line.strip_prefix('#') else {
        return;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(execs) = digits.parse::<u64>() else {
        return;
    };
    if !rest.contains("cov:") {
        return;
    }
    stats.executions = stats.executions.max(execs);
    let field = |name: &str| -> Option<u64> {
        let at = rest.find(name)? + name.len();
        let n: String = rest[at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        n.parse().ok()
    };
    if let Some(v) = field(" cov:").or_else(|| field(": cov:")) {
        stats.coverage = v;
    }
    if let Some(v) = field(" ft:") {
        stats.features = v;
    }
    if let Some(v) = field(" corp:") {
        stats.corpus_in_run = v;
    }
    if let Some(v) = field(" exec/s:") {
        stats.exec_per_sec = v;
    }
}

/// The crashing input's path from libFuzzer's `... Test unit written to <path>`.
pub fn crash_input(line: &str) -> Option<String> {
    let (_, path) = line.split_once("Test unit written to ")?;
    Some(path.trim().to_owned())
}

fn table(results: &BTreeMap<String, Stats>) -> String {
    let mut s = format!(
        "{:<14} {:>12} {:>8} {:>6} {:>7} {:>8} {:>7} {:>7}  crash",
        "target", "executions", "exec/s", "cov", "ft", "corp/run", "kept", "merged"
    );
    for (t, r) in results {
        let _ = write!(
            s,
            "\n{:<14} {:>12} {:>8} {:>6} {:>7} {:>8} {:>7} {:>7}  {}",
            t,
            r.executions,
            r.exec_per_sec,
            r.coverage,
            r.features,
            r.corpus_in_run,
            r.corpus_kept,
            r.merged,
            r.crash.as_deref().unwrap_or("none")
        );
    }
    s
}

/// `RESULT fuzz {json}`: the one line a script reads.
pub fn result_line(limit: Limit, results: &BTreeMap<String, Stats>) -> String {
    let json = serde_json::json!({
        "minutes_per_target": limit.minutes,
        "runs_per_target": limit.runs,
        "ok": results.values().all(|s| s.crash.is_none()),
        "targets": results,
    });
    format!("RESULT fuzz {json}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn final_stats_and_status_lines_are_read() {
        let mut s = Stats::default();
        for line in [
            "INFO: Seed: 1234",
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#65536\tpulse  cov: 812 ft: 2301 corp: 140/9871b lim: 1024 exec/s: 4115 rss: 48Mb",
            "#70000\tDONE   cov: 815 ft: 2310 corp: 141/9900b lim: 1024 exec/s: 4117 rss: 48Mb",
            "stat::number_of_executed_units: 70001",
            "stat::average_exec_per_sec:     4117",
            "stat::new_units_added:          139",
            "stat::peak_rss_mb:              48",
        ] {
            parse_line(line, &mut s);
        }
        assert_eq!(
            s,
            Stats {
                executions: 70001,
                exec_per_sec: 4117,
                coverage: 815,
                features: 2310,
                corpus_in_run: 141,
                peak_rss_mb: 48,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn fork_mode_status_lines_are_read() {
        let mut s = Stats::default();
        parse_line(
            "#123456: cov: 900 ft: 2500 corp: 150 exec/s 5000 oom/timeout/crash: 0/0/0 time: 30s",
            &mut s,
        );
        assert_eq!((s.executions, s.coverage, s.features), (123456, 900, 2500));
        assert_eq!(s.corpus_in_run, 150);
    }

    #[test]
    fn the_crash_input_is_found() {
        let line = "artifact_prefix='/r/fuzz/artifacts/decode/'; Test unit written to \
                    /r/fuzz/artifacts/decode/crash-0a1b";
        assert_eq!(
            crash_input(line).as_deref(),
            Some("/r/fuzz/artifacts/decode/crash-0a1b")
        );
        assert_eq!(crash_input("#1 NEW cov: 1"), None);
    }

    #[test]
    fn the_result_line_is_one_json_line() {
        let mut results = BTreeMap::new();
        results.insert(
            "decode".to_owned(),
            Stats {
                executions: 42,
                ..Stats::default()
            },
        );
        let line = result_line(Limit::of(Some(1), None), &results);
        let json = line.strip_prefix("RESULT fuzz ").unwrap();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["targets"]["decode"]["executions"], 42);
        assert_eq!(v["ok"], true);
        assert_eq!(v["minutes_per_target"], 1);
        assert_eq!(v["runs_per_target"], serde_json::Value::Null);
    }

    #[test]
    fn runs_stop_a_target_by_count_and_minutes_by_time() {
        let default = Limit::of(None, None);
        assert_eq!(default.flags(), ["-max_total_time=300"]);
        assert_eq!(default.to_string(), "for 5 min");
        let runs = Limit::of(None, Some(100_000_000));
        assert_eq!(runs.flags(), ["-runs=100000000"]);
        assert_eq!(runs.to_string(), "for 100000000 executions");
        let both = Limit::of(Some(90), Some(7));
        assert_eq!(both.flags(), ["-max_total_time=5400", "-runs=7"]);
    }

    #[test]
    fn seeds_are_real_messages_named_by_content() {
        for m in seeds::stun_messages() {
            relay::stun::Message::decode(&m).unwrap();
        }
        for m in seeds::channel_data() {
            relay::stun::ChannelData::decode(&m).unwrap();
        }
        // SHA-1 of the empty string.
        assert_eq!(seeds::name(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
