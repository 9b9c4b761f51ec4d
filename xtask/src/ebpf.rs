//! `cargo xtask build-ebpf`: builds the XDP program in relay-ebpf/ (its own workspace).
//!
//! The object lands in relay-ebpf/target/bpfel-unknown-none/release/xdpturn (the target
//! directory is given explicitly, so a CARGO_TARGET_DIR in the environment does not move it);
//! relay/build.rs embeds it from there when the relay is built next. Both take the path from
//! `relay::dataplane::object`.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use relay::dataplane::object::{self, TARGET};

use crate::cmd::Cmd;
use crate::{NIGHTLY, repo_root};

const BPF_LINKER_VERSION: &str = "0.10.4";
const BPF_LINKER_INSTALL: &str = "cargo install bpf-linker@0.10.4 --locked";

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Build with the release profile. This is the default: BPF debug builds often fail the
    /// kernel verifier, so the flag only exists to be explicit.
    #[arg(long, conflicts_with = "debug")]
    pub release: bool,

    /// Build with the dev profile instead (may not pass the verifier).
    #[arg(long)]
    pub debug: bool,
}

/// Installs what the build needs (idempotently: [`install_toolchain`]), builds relay-ebpf and
/// returns the path of the BPF object.
pub fn run(args: &Args) -> Result<PathBuf> {
    install_toolchain()?;
    build(args)
}

/// Builds relay-ebpf with what is installed and returns the path of the BPF object.
pub fn build(args: &Args) -> Result<PathBuf> {
    if find_on_path("bpf-linker").is_none() {
        bail!(
            "bpf-linker is not on PATH after installing it; install it with \
             `{BPF_LINKER_INSTALL}` (and put cargo's bin directory on PATH) and run this again"
        );
    }
    let root = repo_root();
    let dir = object::crate_dir(&root);
    let mut cmd = Cmd::new("cargo")
        .arg(format!("+{NIGHTLY}"))
        .args(["build", "-Z", "build-std=core", "--target", TARGET])
        .arg("--target-dir")
        .arg(object::target_dir(&root))
        .arg("--message-format=json-render-diagnostics")
        .current_dir(&dir);
    if !args.debug {
        cmd = cmd.arg("--release");
    }
    let stdout = cmd.stdout().context("building relay-ebpf")?;
    let object = artifact(&stdout)
        .context("cargo reported no executable artifact for relay-ebpf (see the build output)")?;
    println!("BPF object: {}", object.display());
    Ok(object)
}

/// Installs what building the program needs, unless it is there: the pinned nightly with
/// rust-src (for `-Z build-std=core`) and bpf-linker 0.10.4 (`cargo install --locked`).
pub fn install_toolchain() -> Result<()> {
    let has_rust_src = Cmd::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .probe()
        .filter(|o| o.status.success())
        .is_some_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "rust-src")
        });
    if has_rust_src {
        println!("    {NIGHTLY}: installed, with rust-src");
    } else {
        Cmd::new("rustup")
            .args(["toolchain", "install", NIGHTLY, "--profile", "minimal"])
            .args(["--component", "rust-src", "--no-self-update"])
            .run()?;
    }
    let installed = find_on_path("bpf-linker").and_then(|path| {
        Cmd::new(&path.to_string_lossy())
            .arg("--version")
            .probe()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    });
    match installed {
        Some(version) if version.ends_with(BPF_LINKER_VERSION) => {
            println!("    {version}: installed");
            Ok(())
        }
        other => {
            if let Some(version) = other {
                println!(
                    "    {version} is installed; the program is built with {BPF_LINKER_VERSION}"
                );
            }
            Cmd::new("cargo")
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                ])
                .run()
        }
    }
}

/// The relay's program among the executables cargo reported in its JSON messages (the last
/// one, if several): relay-ebpf also builds the benchmark's floor (`object::FLOOR`).
fn artifact(stdout: &[u8]) -> Option<PathBuf> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .rfind(|path| path.file_name().is_some_and(|n| n == object::PROGRAM))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_executable_artifact() {
        let out = br#"{"reason":"compiler-artifact","executable":null}
not json
{"reason":"compiler-artifact","executable":"/x/bpfel-unknown-none/release/xdpturn"}
{"reason":"compiler-artifact","executable":"/x/bpfel-unknown-none/release/floor"}
{"reason":"build-finished","success":true}
"#;
        assert_eq!(
            artifact(out),
            Some(PathBuf::from("/x/bpfel-unknown-none/release/xdpturn"))
        );
        assert_eq!(artifact(b""), None);
    }
}
