//! `cargo xtask envtest`: a real kube-apiserver, kube-controller-manager and etcd for the
//! operator's integration tests, the way controller-runtime's envtest provides them.
//!
//! No kube-apiserver is published prebuilt where we can fetch from, but Debian's own archive
//! holds everything needed to build one offline:
//!
//! - the source package `kubernetes` of Debian 12 (the upstream v1.20.2 tree, `vendor/`
//!   included), fetched with `apt-get source` through a private deb-src list that points at the
//!   Debian mirror(s) the system's apt already uses, with private list and cache directories so
//!   the system's apt state is left untouched;
//! - Go 1.19 (`golang-1.19-go`) to build it with `make WHAT=...`, offline (`-mod=vendor`,
//!   `GOPROXY=off`);
//! - one fix: the vendored `github.com/modern-go/reflect2` v1.0.1 crashes under Go >= 1.18 on
//!   the first custom-resource write, so the vendored `modern-go/reflect2` and
//!   `json-iterator/go` are replaced by Debian's packaged sources (1.0.2 and 1.1.12);
//! - etcd from `etcd-server`, linked into the same directory.
//!
//! The binaries go into a cache directory outside the repo (see [`cache_root`]), with a stamp
//! naming exactly what was built; a cache whose stamp matches is reused as is.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::Cmd;
use crate::test::{apt_packages, is_root};

/// The environment variable the operator's integration tests read: the directory holding
/// kube-apiserver, kube-controller-manager, kubectl and etcd.
pub const BIN_ENV: &str = "XDPTURN_ENVTEST_BIN";

/// Overrides where the binaries are cached (see [`cache_root`]).
const CACHE_ENV: &str = "XDPTURN_ENVTEST_CACHE";

/// The Debian source package and the exact version built.
const SOURCE_PACKAGE: &str = "kubernetes";
const SOURCE_VERSION: &str = "1.20.5+really1.20.2-1.1+deb12u1";
/// The Kubernetes version that source is, upstream; names the cache entry.
const KUBERNETES_VERSION: &str = "v1.20.2";
/// The Debian suites the source package is looked up in (Debian 12 and its updates).
const SUITE_PREFIX: &str = "bookworm";

/// The Go toolchain package; its `bin/go` is found with `dpkg -L`.
const GO_PACKAGE: &str = "golang-1.19-go";
const ETCD_PACKAGE: &str = "etcd-server";
/// The kubectl package. It conflicts with other packages that ship /usr/bin/kubectl, so it is
/// installed only when no kubectl is on PATH; the tests use the kubectl built into the cache.
const KUBECTL_PACKAGE: &str = "kubernetes-client";

/// Vendored Go packages replaced by Debian's packaged sources: (Debian package, import path,
/// the upstream version required).
const VENDOR_REPLACEMENTS: &[(&str, &str, &str)] = &[
    (
        "golang-github-modern-go-reflect2-dev",
        "github.com/modern-go/reflect2",
        "1.0.2",
    ),
    (
        "golang-github-json-iterator-go-dev",
        "github.com/json-iterator/go",
        "1.1.12",
    ),
];

/// What `make` builds; each lands in the cache's bin/ under its base name. The API server,
/// controller manager and kubectl serve the operator's envtest tests; the kubelet, scheduler and
/// kube-proxy complete the single-node cluster of `cargo xtask cluster`. One `make` builds them
/// all, so the packages they share compile once.
const TARGETS: &[&str] = &[
    "cmd/kube-apiserver",
    "cmd/kube-controller-manager",
    "cmd/kubectl",
    "cmd/kubelet",
    "cmd/kube-scheduler",
    "cmd/kube-proxy",
];

/// The pod sandbox's process, built from the same tree (`build/pause/linux/pause.c`) with a
/// static libc: the cluster has no registry to pull a pause image from.
const PAUSE: &str = "pause";

/// Bump when the recipe changes in a way that needs a rebuild.
const RECIPE: u32 = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print only `XDPTURN_ENVTEST_BIN=<dir>` on stdout, for scripts
    /// (`eval "$(cargo xtask envtest --print-env)"`). Sets up first if needed, with all of the
    /// set-up's output on stderr.
    #[arg(long)]
    pub print_env: bool,

    /// Rebuild even when the cache is current.
    #[arg(long)]
    pub force: bool,

    /// Keep the build directory (source tree, Go build cache: about 2.5 GB) for debugging.
    #[arg(long)]
    pub keep_build: bool,

    /// Where the binaries are cached. Default: $XDG_CACHE_HOME/xdpturn-envtest, else
    /// $HOME/.cache/xdpturn-envtest.
    #[arg(long, env = CACHE_ENV, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if args.print_env {
        let bin = match ready(args.cache_dir.as_deref())? {
            Some(bin) if !args.force => bin,
            _ => {
                // Set up in a child whose stdout is our stderr, so that stdout holds only the
                // variable.
                let exe = env::current_exe().context("locating the xtask binary")?;
                let mut child = Command::new(exe);
                child.arg("envtest").stdout(Stdio::from(io::stderr()));
                if args.force {
                    child.arg("--force");
                }
                if args.keep_build {
                    child.arg("--keep-build");
                }
                if let Some(dir) = &args.cache_dir {
                    child.arg("--cache-dir").arg(dir);
                }
                let status = child.status().context("running `xtask envtest`")?;
                if !status.success() {
                    bail!("`cargo xtask envtest` failed ({status})");
                }
                ready(args.cache_dir.as_deref())?
                    .ok_or_else(|| anyhow!("the set-up finished but the cache is not complete"))?
            }
        };
        println!("{BIN_ENV}={}", bin.display());
        return Ok(ExitCode::SUCCESS);
    }

    let bin = ensure(args)?;
    println!(
        "\nenvtest binaries ({KUBERNETES_VERSION}), in {}:",
        bin.display()
    );
    for name in binaries() {
        println!("  {}", bin.join(name).display());
    }
    println!(
        "\nfor the operator's integration tests:\n  export {BIN_ENV}={}",
        bin.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Installs what is missing and builds unless the cache is current; returns the bin directory.
pub fn ensure(args: &Args) -> Result<PathBuf> {
    // make and rsync (the build copies binaries with it), gcc and libc6-dev (static libc) for
    // the pause binary, dpkg-dev for `apt-get source`,
    // openssl for the test harness's certificates.
    let mut packages = vec![
        GO_PACKAGE,
        ETCD_PACKAGE,
        "make",
        "rsync",
        "gcc",
        "libc6-dev",
        "dpkg-dev",
        "openssl",
    ];
    packages.extend(VENDOR_REPLACEMENTS.iter().map(|(pkg, _, _)| *pkg));
    if kubectl_needs_package() {
        packages.push(KUBECTL_PACKAGE);
    }
    apt_packages(&packages)?;

    let root = cache_root(args.cache_dir.as_deref())?;
    let entry = root.join(format!("kubernetes-{KUBERNETES_VERSION}"));
    if !args.force
        && let Some(bin) = ready(args.cache_dir.as_deref())?
    {
        println!("    cache is current: {} (stamp matches)", entry.display());
        return Ok(bin);
    }
    build(&root, &entry, args.keep_build)?;
    ready(args.cache_dir.as_deref())?
        .ok_or_else(|| anyhow!("built, but {} is not complete", entry.display()))
}

/// The cache's bin directory if its stamp matches this recipe and every binary is there
/// (etcd's link included: it dangles when etcd-server was removed).
pub fn ready(cache_dir: Option<&Path>) -> Result<Option<PathBuf>> {
    let entry = cache_root(cache_dir)?.join(format!("kubernetes-{KUBERNETES_VERSION}"));
    let stamp = fs::read_to_string(entry.join("stamp")).unwrap_or_default();
    let bin = entry.join("bin");
    let current = stamp.lines().next() == Some(stamp_key().as_str())
        && binaries().iter().all(|name| bin.join(name).is_file());
    Ok(current.then_some(bin))
}

/// The cache directory, computed at run time: `--cache-dir`/$XDPTURN_ENVTEST_CACHE, else
/// $XDG_CACHE_HOME/xdpturn-envtest (when absolute, as the XDG spec requires), else
/// $HOME/.cache/xdpturn-envtest.
pub fn cache_root(cache_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = cache_dir {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME").map(PathBuf::from)
        && dir.is_absolute()
    {
        return Ok(dir.join("xdpturn-envtest"));
    }
    match env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache/xdpturn-envtest")),
        None => bail!("neither {CACHE_ENV}, XDG_CACHE_HOME nor HOME is set: no cache directory"),
    }
}

/// The first line of the stamp: everything that decides what gets built.
fn stamp_key() -> String {
    let replacements: Vec<String> = VENDOR_REPLACEMENTS
        .iter()
        .map(|(_, path, version)| format!("{path}={version}"))
        .collect();
    format!(
        "xdpturn-envtest recipe={RECIPE} {SOURCE_PACKAGE}={SOURCE_VERSION} go={GO_PACKAGE} \
         targets={} vendor:{}",
        TARGETS.join(","),
        replacements.join(",")
    )
}

fn binaries() -> Vec<&'static str> {
    let mut names: Vec<&str> = TARGETS
        .iter()
        .map(|t| t.rsplit('/').next().unwrap_or(t))
        .collect();
    names.push(PAUSE);
    names.push("etcd");
    names
}

/// Whether kubernetes-client should be installed: only when no kubectl is on PATH at all. A
/// kubectl from another package (e.g. a cloud SDK) conflicts with it and is left alone.
fn kubectl_needs_package() -> bool {
    let Some(out) = Cmd::new("which")
        .arg("kubectl")
        .probe()
        .filter(|o| o.status.success())
    else {
        println!("    kubectl: not on PATH, installing {KUBECTL_PACKAGE}");
        return true;
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let owner = Cmd::new("dpkg")
        .args(["-S", &path])
        .probe()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split(':').next().map(str::to_owned)
        });
    match owner {
        Some(pkg) if pkg == KUBECTL_PACKAGE => {}
        Some(pkg) => println!(
            "    kubectl: {path} belongs to package {pkg}, which conflicts with \
             {KUBECTL_PACKAGE}; leaving it (the tests use the cache's kubectl {KUBERNETES_VERSION})"
        ),
        None => println!("    kubectl: {path} (not from a package); leaving it"),
    }
    false
}

/// Removes the build directory when dropped, unless asked to keep it.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            println!("    kept the build directory: {}", self.path.display());
        } else if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {err}", self.path.display());
        }
    }
}

fn build(root: &Path, entry: &Path, keep: bool) -> Result<()> {
    let started = Instant::now();
    for (pkg, _, want) in VENDOR_REPLACEMENTS {
        let have = package_version(pkg)?;
        if upstream_version(&have) != *want {
            bail!("{pkg} is {have}; the build needs upstream version {want}");
        }
    }
    let go_bin = package_file(GO_PACKAGE, "/bin/go")?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("{GO_PACKAGE}'s go has no parent directory"))?;
    let etcd = package_file(ETCD_PACKAGE, "/bin/etcd")?;

    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    // Inside the cache root, so the finished tree is moved into place by a rename.
    let work = WorkDir {
        path: root.join(format!("build.{}", std::process::id())),
        keep,
    };
    if work.path.exists() {
        fs::remove_dir_all(&work.path)
            .with_context(|| format!("removing {}", work.path.display()))?;
    }
    let apt_dir = work.path.join("apt");
    let src_dir = work.path.join("src");
    for dir in [
        apt_dir.join("lists/partial"),
        apt_dir.join("cache/archives/partial"),
        src_dir.clone(),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let tree = fetch_source(&apt_dir, &src_dir)?;
    replace_vendored(&tree)?;

    let path = match env::var_os("PATH") {
        Some(p) => env::join_paths(std::iter::once(go_bin.clone()).chain(env::split_paths(&p)))?,
        None => go_bin.clone().into_os_string(),
    };
    let path = path
        .into_string()
        .map_err(|_| anyhow!("PATH is not UTF-8"))?;
    let make_started = Instant::now();
    Cmd::new("make")
        .current_dir(&tree)
        .arg(format!("WHAT={}", TARGETS.join(" ")))
        .env("PATH", &path)
        .env("GOFLAGS", "-mod=vendor")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", &utf8(&work.path.join("gocache"))?)
        .env("GOPATH", &utf8(&work.path.join("gopath"))?)
        .run()?;
    let make_secs = make_started.elapsed().as_secs();
    println!("    make took {}m{:02}s", make_secs / 60, make_secs % 60);

    let install = work.path.join("install");
    let install_bin = install.join("bin");
    fs::create_dir_all(&install_bin)
        .with_context(|| format!("creating {}", install_bin.display()))?;
    Cmd::new("gcc")
        .current_dir(&tree)
        .args(["-Os", "-Wall", "-static", "-o"])
        .arg(install_bin.join(PAUSE))
        .arg(format!("-DVERSION={KUBERNETES_VERSION}-xdpturn"))
        .arg("build/pause/linux/pause.c")
        .run()
        .context("building the pause binary")?;
    for name in binaries()
        .into_iter()
        .filter(|n| *n != "etcd" && *n != PAUSE)
    {
        let from = tree.join("_output/bin").join(name);
        fs::copy(&from, install_bin.join(name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    std::os::unix::fs::symlink(&etcd, install_bin.join("etcd"))
        .with_context(|| format!("linking {}", etcd.display()))?;
    let version = Cmd::new(&utf8(&install_bin.join("kube-apiserver"))?)
        .arg("--version")
        .stdout()?;
    let version = String::from_utf8_lossy(&version).trim().to_owned();
    if !version.contains(KUBERNETES_VERSION) {
        bail!("the built kube-apiserver says `{version}`, expected {KUBERNETES_VERSION}");
    }

    let mut stamp = format!("{}\n", stamp_key());
    for pkg in [GO_PACKAGE, ETCD_PACKAGE]
        .into_iter()
        .chain(VENDOR_REPLACEMENTS.iter().map(|(pkg, _, _)| *pkg))
    {
        stamp.push_str(&format!("{pkg} {}\n", package_version(pkg)?));
    }
    stamp.push_str(&format!(
        "{version}; make took {make_secs}s, the whole set-up {}s\n",
        started.elapsed().as_secs()
    ));
    fs::write(install.join("stamp"), stamp).context("writing the stamp")?;

    if entry.exists() {
        fs::remove_dir_all(entry).with_context(|| format!("removing {}", entry.display()))?;
    }
    fs::rename(&install, entry)
        .with_context(|| format!("moving {} to {}", install.display(), entry.display()))?;
    let secs = started.elapsed().as_secs();
    println!(
        "    built {KUBERNETES_VERSION} in {}m{:02}s into {}",
        secs / 60,
        secs % 60,
        entry.display()
    );
    Ok(())
}

/// `apt-get source` of the kubernetes package through a private deb-src list; returns the
/// unpacked tree.
fn fetch_source(apt_dir: &Path, src_dir: &Path) -> Result<PathBuf> {
    // The Debian mirrors the system already uses, from apt's own view of its configuration
    // (one-line and deb822 sources alike).
    let targets = Cmd::new("apt-get")
        .args([
            "indextargets",
            "--format",
            "$(REPO_URI) $(RELEASE)",
            "Target-Of: deb",
            "Origin: Debian",
        ])
        .stdout()?;
    let mut lines: Vec<String> = String::from_utf8_lossy(&targets)
        .lines()
        .filter_map(|l| {
            let (uri, suite) = l.split_once(' ')?;
            suite
                .starts_with(SUITE_PREFIX)
                .then(|| format!("deb-src {uri} {suite} main"))
        })
        .collect();
    lines.sort();
    lines.dedup();
    if lines.is_empty() {
        bail!(
            "apt is configured with no Debian `{SUITE_PREFIX}` mirror (apt-get indextargets); \
             cannot fetch the {SOURCE_PACKAGE} source package"
        );
    }
    let list = apt_dir.join("sources.list");
    fs::write(&list, format!("{}\n", lines.join("\n")))
        .with_context(|| format!("writing {}", list.display()))?;
    println!("    private deb-src list {}:", list.display());
    for l in &lines {
        println!("      {l}");
    }

    // Private lists and caches: the system's apt state stays as it was.
    let mut options = vec![
        format!("Dir::Etc::SourceList={}", utf8(&list)?),
        "Dir::Etc::SourceParts=/dev/null".to_owned(),
        format!("Dir::State::Lists={}", utf8(&apt_dir.join("lists"))?),
        format!("Dir::Cache={}", utf8(&apt_dir.join("cache"))?),
    ];
    if is_root() {
        // The files are ours; apt's _apt sandbox user cannot write into this directory.
        options.push("APT::Sandbox::User=root".to_owned());
    }
    let apt = |args: &[&str]| {
        let mut cmd = Cmd::new("apt-get");
        for o in &options {
            cmd = cmd.arg("-o").arg(o);
        }
        cmd.args(args)
    };
    apt(&["update"]).run()?;
    apt(&["source", &format!("{SOURCE_PACKAGE}={SOURCE_VERSION}")])
        .current_dir(src_dir)
        .run()?;

    let mut trees = Vec::new();
    for e in fs::read_dir(src_dir).with_context(|| format!("reading {}", src_dir.display()))? {
        let path = e?.path();
        if path.is_dir() {
            trees.push(path);
        }
    }
    match trees.as_slice() {
        [tree] => Ok(tree.clone()),
        _ => bail!(
            "expected one unpacked source tree in {}, found {}",
            src_dir.display(),
            trees.len()
        ),
    }
}

/// Replaces each vendored package with Debian's packaged source: the Go files and module files
/// at the top of the package directory (tests and sub-packages left out, as `go mod vendor`
/// does). vendor/modules.txt keeps the old version strings: `-mod=vendor` checks them against
/// go.mod, not against the files.
fn replace_vendored(tree: &Path) -> Result<()> {
    for (pkg, import, _) in VENDOR_REPLACEMENTS {
        let from = package_dir(pkg, &format!("/src/{import}"))?;
        let to = tree.join("vendor").join(import);
        if !to.is_dir() {
            bail!("{} is not in the source tree", to.display());
        }
        println!("    vendor/{import} <- {} ({pkg})", from.display());
        fs::remove_dir_all(&to).with_context(|| format!("removing {}", to.display()))?;
        fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        let mut copied = 0;
        for e in fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))? {
            let path = e?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if path.is_file() && !name.ends_with("_test.go") {
                fs::copy(&path, to.join(name))
                    .with_context(|| format!("copying {}", path.display()))?;
                copied += 1;
            }
        }
        if copied == 0 {
            bail!("{} holds no files", from.display());
        }
    }
    Ok(())
}

/// A file a Debian package installed whose path ends with `suffix` (`dpkg -L`).
fn package_file(pkg: &str, suffix: &str) -> Result<PathBuf> {
    package_paths(pkg, suffix)?
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("package {pkg} installed no file ending in {suffix}"))
}

/// A directory a Debian package installed whose path ends with `suffix` (`dpkg -L`).
fn package_dir(pkg: &str, suffix: &str) -> Result<PathBuf> {
    package_paths(pkg, suffix)?
        .into_iter()
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow!("package {pkg} installed no directory ending in {suffix}"))
}

fn package_paths(pkg: &str, suffix: &str) -> Result<Vec<PathBuf>> {
    let out = Cmd::new("dpkg").args(["-L", pkg]).stdout()?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.ends_with(suffix))
        .map(PathBuf::from)
        .collect())
}

/// The installed version of a Debian package.
fn package_version(pkg: &str) -> Result<String> {
    let out = Cmd::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .stdout()?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// The upstream part of a Debian version: `1:1.0.2-2` -> `1.0.2`.
fn upstream_version(debian: &str) -> &str {
    let no_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    no_epoch.rsplit_once('-').map_or(no_epoch, |(v, _)| v)
}

fn utf8(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path is not UTF-8: {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn upstream_version_drops_epoch_and_revision() {
        assert_eq!(upstream_version("1.0.2-2"), "1.0.2");
        assert_eq!(upstream_version("1:1.1.12-1+b1"), "1.1.12");
        assert_eq!(upstream_version("1.19.8"), "1.19.8");
    }

    #[test]
    fn explicit_cache_dir_wins() {
        let dir = Path::new("some/dir");
        assert_eq!(cache_root(Some(dir)).unwrap(), dir);
    }

    #[test]
    fn binaries_are_the_targets_pause_and_etcd() {
        assert_eq!(
            binaries(),
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kubectl",
                "kubelet",
                "kube-scheduler",
                "kube-proxy",
                "pause",
                "etcd"
            ]
        );
    }
}
