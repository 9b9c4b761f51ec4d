//! `cargo xtask images`: the relay's and the operator's OCI image archives, built without a
//! container daemon, for linux/amd64 and linux/arm64, byte for byte the same from the same
//! inputs (OCI image-spec v1.1: image layout, manifest, index, config).
//!
//! Each image is one gzip layer: a static binary (debug information stripped) in
//! /usr/local/bin, /etc/passwd and /etc/group naming the non-root user 65532 `nonroot`, and a
//! world-writable /tmp. Entries are sorted and carry fixed owners, modes and mtimes; `created`
//! and the mtimes are SOURCE_DATE_EPOCH, else the commit time of HEAD. The Containerfile at the repository root builds the same image
//! with a daemon.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use oci_spec::image::Arch;

use crate::cmd::Cmd;
use crate::{ebpf, repo_root, test};

/// The crate version: every image's tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");
const LICENSES: &str = env!("CARGO_PKG_LICENSE");

/// The non-root user and group both images run as (the chart's and the operator's pod specs
/// name the same id; the operator runs the relay as root only when its XDP mode needs it).
pub const NONROOT: u32 = 65532;
const BIN_DIR: &str = "usr/local/bin";

/// Debian packages the cross build and the checks need.
pub const APT_PACKAGES: &[&str] = &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "skopeo"];

/// One image: its name (the chart's and the operator's default repository) and its binary.
#[derive(Debug, Clone, Copy)]
pub struct Image {
    pub name: &'static str,
    pub binary: &'static str,
    package: &'static str,
    description: &'static str,
}

pub const IMAGES: [Image; 2] = [
    Image {
        name: "xdpturn/xdpturn-relay",
        binary: "xdpturn-relay",
        package: "relay",
        description: "xdpturn's STUN/TURN relay, with its XDP fast path embedded",
    },
    Image {
        name: "xdpturn/xdpturn-operator",
        binary: "xdpturn-operator",
        package: "operator",
        description: "xdpturn's Kubernetes operator for TurnCluster resources",
    },
];

/// The test cluster's pod sandbox image (`cargo xtask cluster`): Kubernetes' own pause binary,
/// built by `cargo xtask envtest` from the same source tree, since the cluster has no registry.
pub const PAUSE: Image = Image {
    name: "xdpturn/pause",
    binary: "pause",
    package: "",
    description: "the pod sandbox process of xdpturn's test cluster (Kubernetes' build/pause)",
};

impl Image {
    /// The archive's file stem: the name's last part.
    pub fn stem(&self) -> &'static str {
        self.name.rsplit('/').next().unwrap_or(self.name)
    }

    /// The full reference containerd and docker take from `io.containerd.image.name`.
    pub fn reference(&self) -> String {
        format!("docker.io/{}:{VERSION}", self.name)
    }
}

/// A platform the images are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    Amd64,
    Arm64,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Amd64, Platform::Arm64];

    /// The platform of this machine (what a cluster on it runs).
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Platform::Arm64
        } else {
            Platform::Amd64
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Platform::Amd64 => "amd64",
            Platform::Arm64 => "arm64",
        }
    }

    pub fn triple(self) -> &'static str {
        match self {
            Platform::Amd64 => "x86_64-unknown-linux-gnu",
            Platform::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    fn arch(self) -> Arch {
        match self {
            Platform::Amd64 => Arch::Amd64,
            Platform::Arm64 => Arch::ARM64,
        }
    }

    /// The environment of a static release build for this platform: glibc linked statically
    /// (`+crt-static`), and for arm64 Debian's cross gcc as linker and as ring's C compiler.
    pub fn build_env(self) -> Vec<(String, String)> {
        let upper = self.triple().to_uppercase().replace('-', "_");
        let mut env = vec![(
            format!("CARGO_TARGET_{upper}_RUSTFLAGS"),
            "-C target-feature=+crt-static".to_owned(),
        )];
        if self == Platform::Arm64 {
            let lower = self.triple().replace('-', "_");
            env.extend([
                (format!("CC_{lower}"), "aarch64-linux-gnu-gcc".to_owned()),
                (format!("AR_{lower}"), "aarch64-linux-gnu-ar".to_owned()),
                (
                    format!("CARGO_TARGET_{upper}_LINKER"),
                    "aarch64-linux-gnu-gcc".to_owned(),
                ),
            ]);
        }
        env
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the archives go; default: `images/` in cargo's target directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Install nothing: skip the apt, rustup and eBPF toolchain steps.
    #[arg(long, env = "XTASK_SKIP_INSTALL")]
    pub skip_install: bool,

    /// Pack from the binaries already built; do not run cargo build or build-ebpf.
    #[arg(long)]
    pub no_build: bool,

    /// Then check the archives: a second pack gives the same digests, and skopeo reads each
    /// archive with its name, platform, user and labels and copies it to a directory.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if !args.skip_install {
        install(&Platform::ALL)?;
    }
    if !args.no_build {
        if !args.skip_install {
            ebpf::install_toolchain()?;
        }
        ebpf::build(&ebpf::Args::default())?;
    }
    let root = repo_root();
    let object = relay::dataplane::object::release_object(&root);
    if !object.is_file() {
        bail!(
            "the XDP program {} is not built: the relay image must embed it (cargo xtask build-ebpf)",
            object.display()
        );
    }
    if !args.no_build {
        for platform in Platform::ALL {
            build(&root, platform, &[])?;
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir(&root).join("images"));
    strip_binaries(&root)?;
    let written = write_all(&root, &out)?;
    copy_binaries(&root, &out)?;
    for (path, digest) in &written {
        let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("    {} ({size} bytes) {digest}", path.display());
    }
    if args.check {
        check(&root, &out, &written)?;
        println!("    images: reproducible, and skopeo reads and copies each archive");
    }
    Ok(ExitCode::SUCCESS)
}

/// Installs the cross toolchain, skopeo and the rustup targets, each only if missing.
pub fn install(platforms: &[Platform]) -> Result<()> {
    test::apt_packages(APT_PACKAGES)?;
    let installed = Cmd::new("rustup")
        .args(["target", "list", "--installed"])
        .stdout()?;
    let installed = String::from_utf8_lossy(&installed);
    for platform in platforms {
        if installed.lines().any(|l| l.trim() == platform.triple()) {
            println!("    rustup target {}: installed", platform.triple());
        } else {
            Cmd::new("rustup")
                .args(["target", "add", platform.triple()])
                .run()?;
        }
    }
    Ok(())
}

/// cargo's target directory: CARGO_TARGET_DIR, else `target` at the root.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), PathBuf::from)
}

/// Builds both binaries for `platform` in one release build (shared dependencies), statically
/// linked, into `<target>/<triple>/release`; `extra` goes on the cargo command line.
pub fn build(root: &Path, platform: Platform, extra: &[&str]) -> Result<()> {
    let mut args = vec![
        "build",
        "--release",
        "--locked",
        "--target",
        platform.triple(),
    ];
    for image in IMAGES {
        args.extend(["-p", image.package]);
    }
    args.push("--bins");
    args.extend(extra);
    cargo_for(root, platform, &args, &[])
}

/// Runs cargo with `args` and `env` for `platform`'s static build, printed first. The
/// variables `cargo run` gave this process (CARGO_PKG_*, CARGO_MANIFEST_*, ...) are removed:
/// ring's build script re-runs when they change, which would rebuild everything above it
/// between a `cargo xtask` run and a plain `cargo build` with the same flags.
pub fn cargo_for(
    root: &Path,
    platform: Platform,
    args: &[&str],
    env: &[(String, String)],
) -> Result<()> {
    let mut cmd = std::process::Command::new("cargo");
    cmd.current_dir(root).args(args);
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                ]
                .contains(&key))
        {
            cmd.env_remove(key);
        }
    }
    let mut shown = Vec::new();
    for (key, value) in platform.build_env().iter().chain(env) {
        cmd.env(key, value);
        shown.push(format!("{key}='{value}'"));
    }
    println!(
        "$ (cd {}) {} {}",
        root.display(),
        shown.join(" "),
        crate::cmd::shown(&cmd)
    );
    let status = cmd.status().context("could not start cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The path of `image`'s binary for `platform`, as cargo built it.
pub fn binary(root: &Path, platform: Platform, image: &Image) -> PathBuf {
    target_dir(root)
        .join(platform.triple())
        .join("release")
        .join(image.binary)
}

/// The path of the copy that goes into the image: without debug information (the release
/// profile keeps line tables, `debug = 1`, for profiling), symbols kept for backtraces.
fn image_binary(root: &Path, platform: Platform, image: &Image) -> PathBuf {
    target_dir(root)
        .join(platform.triple())
        .join("release")
        .join("image")
        .join(image.binary)
}

/// Builds, strips and packs both images for the one platform `platform` into `out` (no
/// multi-platform index): what a test cluster on this machine imports. Returns each archive
/// with its manifest digest.
pub fn build_for(root: &Path, platform: Platform, out: &Path) -> Result<Vec<(PathBuf, String)>> {
    ebpf::build(&ebpf::Args::default())?;
    build(root, platform, &[])?;
    strip(root, &[platform])?;
    oci::write_platforms(root, out, &[platform])
}

/// Writes every [`image_binary`] with binutils' `strip --strip-debug` for its platform.
fn strip_binaries(root: &Path) -> Result<()> {
    strip(root, &Platform::ALL)
}

fn strip(root: &Path, platforms: &[Platform]) -> Result<()> {
    for &platform in platforms {
        let strip = match platform {
            Platform::Amd64 if cfg!(target_arch = "x86_64") => "strip",
            Platform::Amd64 => "x86_64-linux-gnu-strip",
            Platform::Arm64 if cfg!(target_arch = "aarch64") => "strip",
            Platform::Arm64 => "aarch64-linux-gnu-strip",
        };
        for image in IMAGES {
            let to = image_binary(root, platform, &image);
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            Cmd::new(strip)
                .args(["--strip-debug", "-o"])
                .arg(&to)
                .arg(binary(root, platform, &image))
                .run()?;
        }
    }
    Ok(())
}

/// Copies each binary to `<out>/bin/<amd64|arm64>/`, where the Containerfile takes them from.
fn copy_binaries(root: &Path, out: &Path) -> Result<()> {
    for platform in Platform::ALL {
        let dir = out.join("bin").join(platform.name());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for image in IMAGES {
            let from = image_binary(root, platform, &image);
            fs::copy(&from, dir.join(image.binary))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    Ok(())
}

mod check;
mod oci;

use check::check;
use oci::write_all;
pub use oci::write_single;
#[cfg(test)]
mod tests;
