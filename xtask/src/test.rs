//! `cargo xtask test`: set up the test environment (idempotently) and run every check.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::Cmd;
use crate::{NIGHTLY, arm64, cluster, crdgen, ebpf, envtest, fuzz, images, repo_root};

/// Debian packages the tests use: coturn for turnutils_stunclient / turnutils_uclient /
/// turnadmin / turnserver (interop; relay/tests/userdb.rs has turnadmin write the SQLite user
/// database the relay reads with `--userdb`), iproute2, ethtool and procps (sysctl) for network
/// namespaces and NIC set-up.
/// stun-client: Debian's RFC 3489 `stun` client (classic STUN interop); openssl: `s_client` for
/// the TLS tests; python3-pip: to install the Python packages below;
/// bpftool: the XDP end-to-end tests read the relay's maps from outside its process;
/// chromium, firefox-esr and nftables: relay/tests/browser_e2e.rs calls from one real browser to
/// another through the relay, each behind an nftables NAT router;
/// prometheus: relay/tests/dashboard.rs evaluates every query of the chart's Grafana dashboard
/// against it, scraping a real relay and operator;
/// sqlite3: relay/tests/userdb.rs writes the peer ranges of coturn's user database, which
/// turnadmin has no option for, as coturn's web admin would;
/// postgresql and mariadb-server (with their clients, psql and mariadb):
/// relay/tests/userdb_servers.rs starts a server of each, loads coturn's schema and has
/// turnadmin write the user database the relay reads with `--psql-userdb` and `--mysql-userdb`;
/// redis-server and redis-tools: relay/tests/userdb_redis.rs runs a Redis server of its own for
/// `--redis-userdb`, which `turnadmin -N` writes, and `redis-cli` writes what turnadmin cannot;
/// relay/tests/statsdb.rs and xdp_e2e run one for `--redis-statsdb`, with `redis-cli psubscribe`
/// as the subscriber to the traffic records.
const APT_PACKAGES: &[&str] = &[
    "coturn",
    "iproute2",
    "ethtool",
    "procps",
    "stun-client",
    "openssl",
    "python3-pip",
    "bpftool",
    "chromium",
    "firefox-esr",
    "nftables",
    "prometheus",
    "sqlite3",
    "postgresql",
    "mariadb-server",
    "redis-server",
    "redis-tools",
];

/// The browser tests' driver (puppeteer-core), installed from its lockfile with `npm ci`.
const BROWSER_DRIVER_DIR: &str = "relay/tests/browser";

/// Python packages the tests use, as (what pip installs, what Python imports): aioice's STUN
/// codec drives STUN over TCP; helm-python-sdk bundles Helm's Go library (`libhelm_c`, with
/// ctypes bindings), which renders and lints the chart in operator/tests/helm.rs, since no helm
/// binary is published where we install from.
const PIP_PACKAGES: &[(&str, &str)] = &[
    ("aioice", "aioice"),
    ("helm-python-sdk==0.2.2", "helm_python"),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Install nothing: skip the apt, rustup and `cargo install` steps.
    #[arg(long, env = "XTASK_SKIP_INSTALL")]
    pub skip_install: bool,

    /// Do not run the fuzz targets (nor install the nightly toolchain and cargo-fuzz for them).
    #[arg(long, env = "XTASK_NO_FUZZ")]
    pub no_fuzz: bool,

    /// How long each fuzz target runs, in seconds (libFuzzer's -max_total_time), on its kept
    /// corpus (fuzz/corpus/<target>). `cargo xtask fuzz` runs them for longer.
    #[arg(
        long,
        default_value_t = 15,
        env = "XTASK_FUZZ_SECONDS",
        value_name = "SECONDS"
    )]
    pub fuzz_seconds: u32,

    /// Minutes of the short soak run after the tests (relay/tests/soak.rs: a churning load on
    /// one relay, then a check that it holds nothing it did not hold when idle); 0 skips it.
    /// `cargo xtask soak` runs long ones.
    #[arg(
        long,
        default_value_t = 1.0,
        env = "XTASK_SOAK_MINUTES",
        value_name = "MINUTES"
    )]
    pub soak_minutes: f64,

    /// Do not run the cluster test (the images built for this machine, a single-node
    /// Kubernetes brought up with `cargo xtask cluster`, the chart installed and a TurnCluster
    /// carrying calls through its relay pod).
    #[arg(long, env = "XTASK_NO_CLUSTER")]
    pub no_cluster: bool,

    /// Also build and check the container images (`cargo xtask images --check`) and prove the
    /// relay on arm64 under qemu (`cargo xtask test-arm64`). Off by default: with two static
    /// release builds (amd64 and arm64) they take well over ten minutes on a 2-core machine.
    #[arg(long, env = "XTASK_IMAGES")]
    pub images: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let root = repo_root();
    let fuzz_targets = if args.no_fuzz {
        Vec::new()
    } else {
        fuzz_targets(&root)?
    };

    // A full run writes several gigabytes (target/, fuzz/target/, the Kubernetes builds): say
    // what there is, so a full disk is seen here rather than as a compiler's I/O error later.
    named("free disk space", || {
        Cmd::new("df").args(["-P", "-h"]).arg(&root).run()
    })?;

    if args.skip_install {
        step("install", "skipped (--skip-install)");
    } else {
        named("apt packages", || apt_packages(APT_PACKAGES))?;
        named("python packages", pip_packages)?;
        named("browser test driver (npm ci)", || {
            browser_driver(&root.join(BROWSER_DRIVER_DIR))
        })?;
        named("stable toolchain components", || stable_components(&root))?;
        named("eBPF toolchain", ebpf::install_toolchain)?;
        if args.no_fuzz {
            step("nightly toolchain and cargo-fuzz", "skipped (--no-fuzz)");
        } else {
            named("nightly toolchain", || {
                rustup_components(NIGHTLY, "minimal", &["rust-src"])
            })?;
            named("cargo-fuzz", || cargo_fuzz(&root))?;
        }
    }

    // kube-apiserver, kube-controller-manager, kubectl and etcd for the operator's integration
    // tests, handed to `cargo test` in XDPTURN_ENVTEST_BIN; the kubelet, scheduler, kube-proxy and
    // pause for the cluster test.
    let envtest_bin = if args.skip_install {
        let bin = envtest_bin_without_install()?;
        step(
            "envtest",
            &match &bin {
                Some(dir) => format!("not set up (--skip-install); using {dir}"),
                None => format!(
                    "skipped (--skip-install) and no binaries found: the operator's envtest \
                     tests will fail; run `cargo xtask envtest` or set {}",
                    envtest::BIN_ENV
                ),
            },
        );
        bin
    } else {
        let mut bin = None;
        named("Kubernetes binaries (cargo xtask envtest)", || {
            let dir = envtest::ensure(&envtest::Args {
                print_env: false,
                force: false,
                keep_build: false,
                cache_dir: None,
            })?;
            println!("    {}={}", envtest::BIN_ENV, dir.display());
            bin = Some(utf8(&dir)?);
            Ok(())
        })?;
        bin
    };

    // Before clippy and the tests: the relay embeds the program (relay/build.rs), and the
    // BPF_PROG_TEST_RUN tests fail without it.
    named("build the XDP program (cargo xtask build-ebpf)", || {
        ebpf::build(&ebpf::Args::default()).map(drop)
    })?;
    named("cargo fmt", || {
        cargo(&root).args(["fmt", "--all", "--check"]).run()
    })?;
    named("cargo clippy", || {
        cargo(&root)
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .run()
    })?;
    named("cargo test", || {
        let mut cmd = cargo(&root);
        if let Some(dir) = &envtest_bin {
            cmd = cmd.env(envtest::BIN_ENV, dir);
        }
        cmd.args(["test", "--workspace"]).run()
    })?;
    if args.soak_minutes > 0.0 {
        named(
            &format!(
                "soak, {} minute(s), then back to idle (relay/tests/soak.rs)",
                args.soak_minutes
            ),
            || {
                cargo(&root)
                    .env("XDPTURN_SOAK_MINUTES", &args.soak_minutes.to_string())
                    .args(["test", "-p", "relay", "--test", "soak"])
                    .args(["--", "--ignored", "--exact", "soak", "--nocapture"])
                    .run()
            },
        )?;
    } else {
        step("soak", "skipped (--soak-minutes 0)");
    }
    named("crdgen --check", || {
        println!("$ cargo xtask crdgen --check");
        match crdgen::run(&crdgen::Args { check: true })? {
            code if code == ExitCode::SUCCESS => Ok(()),
            _ => bail!("generated CRD YAML is stale"),
        }
    })?;

    if args.no_cluster {
        step("cluster test", "skipped (--no-cluster)");
    } else {
        named(
            "cluster test (cargo xtask cluster test: images, a real node, the chart, calls)",
            || cluster::test(args.skip_install),
        )?;
    }

    if args.no_fuzz {
        step("fuzz", "skipped (--no-fuzz)");
    } else if fuzz_targets.is_empty() {
        step(
            "fuzz",
            "no fuzz/fuzz_targets/ (or no targets in it); nothing to fuzz",
        );
    } else {
        for target in &fuzz_targets {
            named(&format!("fuzz {target}"), || {
                // On the kept corpus (fuzz/corpus/<target>), read only: what the run finds goes
                // to a scratch directory, which `cargo xtask fuzz` would merge back.
                fuzz::cargo_fuzz_run(&root, target)
                    .arg(fuzz::scratch_corpus(&root, target)?)
                    .arg(fuzz::kept_corpus(&root, target)?)
                    .arg("--")
                    .arg(format!("-max_total_time={}", args.fuzz_seconds))
                    .run()
            })?;
        }
    }

    if args.images {
        named("container images (cargo xtask images --check)", || {
            images::run(&images::Args {
                out: None,
                skip_install: args.skip_install,
                no_build: false,
                check: true,
            })
            .map(drop)
        })?;
        named("arm64 under qemu (cargo xtask test-arm64)", || {
            // `images` built the arm64 binaries just now.
            arm64::run(&arm64::Args {
                skip_install: args.skip_install,
                no_build: true,
            })
            .map(drop)
        })?;
    } else {
        step(
            "container images and arm64",
            "skipped (run with --images, or cargo xtask images --check and test-arm64)",
        );
    }

    println!("\n==> all checks passed");
    Ok(ExitCode::SUCCESS)
}

fn step(name: &str, note: &str) {
    println!("\n==> {name}: {note}");
}

/// Runs one step, announcing it and naming it if it fails.
fn named(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n==> {name}");
    f().with_context(|| format!("step `{name}` failed"))
}

/// With --skip-install: XDPTURN_ENVTEST_BIN as given, else the cache if it is complete.
fn envtest_bin_without_install() -> Result<Option<String>> {
    if let Some(dir) = std::env::var_os(envtest::BIN_ENV).filter(|d| !d.is_empty()) {
        return dir
            .into_string()
            .map(Some)
            .map_err(|_| anyhow!("{} is not UTF-8", envtest::BIN_ENV));
    }
    envtest::ready(None)?.map(|dir| utf8(&dir)).transpose()
}

fn utf8(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path is not UTF-8: {}", path.display()))
}

/// Cargo for one step. Incremental compilation is off: a test run builds each crate once, and
/// its caches (gigabytes for this workspace) would only fill the disk.
pub(crate) fn cargo(root: &Path) -> Cmd {
    Cmd::new("cargo")
        .current_dir(root)
        .env("CARGO_INCREMENTAL", "0")
}

/// The cargo-fuzz targets: the `.rs` files in fuzz/fuzz_targets/, sorted.
pub(crate) fn fuzz_targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("fuzz/fuzz_targets");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut targets = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            targets.push(stem.to_owned());
        }
    }
    targets.sort();
    Ok(targets)
}

pub(crate) fn is_root() -> bool {
    Cmd::new("id")
        .arg("-u")
        .probe()
        .is_some_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}

pub(crate) fn apt_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| {
            let installed = Cmd::new("dpkg").args(["-s", pkg]).probe().is_some_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .any(|l| l == "Status: install ok installed")
            });
            println!(
                "    {pkg}: {}",
                if installed { "installed" } else { "missing" }
            );
            !installed
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = is_root();
    let apt = |args: &[&str]| {
        let cmd = if root {
            Cmd::new("apt-get")
        } else {
            Cmd::new("sudo").args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .run()
    };
    apt(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)
}

/// Installs PIP_PACKAGES for the `python3` on PATH, unless it can already import them.
fn pip_packages() -> Result<()> {
    for &(pkg, module) in PIP_PACKAGES {
        let importable = Cmd::new("python3")
            .args(["-c", &format!("import {module}")])
            .probe()
            .is_some_and(|o| o.status.success());
        println!(
            "    {pkg}: {}",
            if importable { "installed" } else { "missing" }
        );
        if !importable {
            // Debian's own python3 refuses system-wide pip installs (PEP 668) unless told.
            let plain = Cmd::new("python3")
                .args(["-m", "pip", "install", "--quiet", pkg])
                .run();
            if plain.is_err() {
                Cmd::new("python3")
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--break-system-packages",
                        pkg,
                    ])
                    .run()?;
            }
        }
    }
    Ok(())
}

/// Installs the browser tests' Node packages with `npm ci`, unless every package the lockfile
/// names is installed at its locked version already; Debian's nodejs and npm first if there is
/// no npm. puppeteer-core downloads no browser: the tests drive Debian's.
fn browser_driver(dir: &Path) -> Result<()> {
    let has_npm = Cmd::new("npm")
        .arg("--version")
        .probe()
        .is_some_and(|o| o.status.success());
    if !has_npm {
        apt_packages(&["nodejs", "npm"])?;
    }
    match npm_packages_missing(dir)? {
        None => {
            println!(
                "    {}: installed as locked",
                dir.join("node_modules").display()
            );
            Ok(())
        }
        Some(missing) => {
            println!("    {missing}: missing or not at its locked version");
            Cmd::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .env("PUPPETEER_SKIP_DOWNLOAD", "1")
                .current_dir(dir)
                .run()
        }
    }
}

/// The first package of `dir`'s package-lock.json that node_modules does not hold at its locked
/// version (optional ones, which npm may skip on this platform, aside); None if there is none.
fn npm_packages_missing(dir: &Path) -> Result<Option<String>> {
    let lock_path = dir.join("package-lock.json");
    let text = fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    let lock: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", lock_path.display()))?;
    let packages = lock["packages"]
        .as_object()
        .ok_or_else(|| anyhow!("{} has no \"packages\"", lock_path.display()))?;
    for (path, entry) in packages {
        if path.is_empty() || entry["optional"].as_bool() == Some(true) {
            continue;
        }
        let installed = fs::read_to_string(dir.join(path).join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|p| p["version"].as_str().map(str::to_owned));
        if installed.as_deref() != entry["version"].as_str() {
            return Ok(Some(path.clone()));
        }
    }
    Ok(None)
}

/// The pinned stable toolchain and its components, as rust-toolchain.toml names them.
fn stable_components(root: &Path) -> Result<()> {
    let path = root.join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: toml::Table = text.parse().context("parsing rust-toolchain.toml")?;
    let toolchain = file
        .get("toolchain")
        .and_then(|t| t.as_table())
        .ok_or_else(|| anyhow!("rust-toolchain.toml has no [toolchain] table"))?;
    let channel = toolchain
        .get("channel")
        .and_then(|c| c.as_str())
        .ok_or_else(|| anyhow!("rust-toolchain.toml names no channel"))?;
    let profile = toolchain
        .get("profile")
        .and_then(|c| c.as_str())
        .unwrap_or("minimal");
    let components: Vec<&str> = toolchain
        .get("components")
        .and_then(|c| c.as_array())
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default();
    rustup_components(channel, profile, &components)
}

/// Installs `toolchain` with `components` unless they are already there.
pub(crate) fn rustup_components(toolchain: &str, profile: &str, components: &[&str]) -> Result<()> {
    let installed = Cmd::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .probe()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let missing: Vec<&str> = match &installed {
        // Installed names carry the host triple: `rust-src`, `clippy-x86_64-unknown-linux-gnu`.
        Some(list) => components
            .iter()
            .copied()
            .filter(|c| {
                !list
                    .lines()
                    .any(|l| l == *c || l.strip_prefix(*c).is_some_and(|r| r.starts_with('-')))
            })
            .collect(),
        None => components.to_vec(),
    };
    if installed.is_some() && missing.is_empty() {
        println!("    {toolchain}: installed, with {}", components.join(", "));
        return Ok(());
    }
    let mut cmd = Cmd::new("rustup").args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        profile,
        "--no-self-update",
    ]);
    for c in &missing {
        cmd = cmd.args(["--component", c]);
    }
    cmd.run()
}

pub(crate) fn cargo_fuzz(root: &Path) -> Result<()> {
    let works = cargo(root)
        .args(["fuzz", "--version"])
        .probe()
        .is_some_and(|o| o.status.success());
    if works {
        println!("    cargo-fuzz: installed");
        return Ok(());
    }
    cargo(root)
        .args(["install", "cargo-fuzz", "--locked"])
        .run()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A package directory with a lockfile of three packages (one optional) and `installed`
    /// (path, version) in node_modules.
    fn fixture(name: &str, installed: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-npm-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let lock = serde_json::json!({
            "lockfileVersion": 3,
            "packages": {
                "": {"name": "fixture"},
                "node_modules/a": {"version": "1.0.0"},
                "node_modules/a/node_modules/b": {"version": "2.0.0"},
                "node_modules/c": {"version": "3.0.0", "optional": true},
            }
        });
        fs::write(dir.join("package-lock.json"), lock.to_string()).unwrap();
        for (path, version) in installed {
            let pkg = dir.join(path);
            fs::create_dir_all(&pkg).unwrap();
            let manifest = serde_json::json!({"version": version});
            fs::write(pkg.join("package.json"), manifest.to_string()).unwrap();
        }
        dir
    }

    #[test]
    fn npm_ci_only_when_a_locked_package_is_missing_or_another_version() {
        let all = [
            ("node_modules/a", "1.0.0"),
            ("node_modules/a/node_modules/b", "2.0.0"),
        ];
        let dir = fixture("all", &all);
        assert_eq!(
            npm_packages_missing(&dir).unwrap(),
            None,
            "optional c aside"
        );
        fs::remove_dir_all(&dir).unwrap();

        let dir = fixture("nested", &all[..1]);
        assert_eq!(
            npm_packages_missing(&dir).unwrap().as_deref(),
            Some("node_modules/a/node_modules/b")
        );
        fs::remove_dir_all(&dir).unwrap();

        let dir = fixture(
            "version",
            &[all[0], ("node_modules/a/node_modules/b", "2.0.1")],
        );
        assert!(npm_packages_missing(&dir).unwrap().is_some());
        fs::remove_dir_all(&dir).unwrap();
    }
}
