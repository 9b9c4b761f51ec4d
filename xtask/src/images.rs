//! `cargo xtask images`: the relay's and the operator's OCI image archives, built without a
//! container daemon, for linux/amd64 and linux/arm64, byte for byte the same from the same
//! inputs (OCI image-spec v1.1: image layout, manifest, index, config).
//!
//! Each image is one gzip layer: a static binary (debug information stripped) in
//! /usr/local/bin, /etc/passwd and /etc/group naming the non-root user 65532 `nonroot`, and a
//! world-writable /tmp. Entries are sorted and carry fixed owners, modes and mtimes; `created`
//! and the mtimes are SOURCE_DATE_EPOCH, else the commit time of HEAD. The Containerfile at the repository root builds the same image
//! with a daemon.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder,
    Sha256Digest,
};
use sha2::{Digest as _, Sha256};

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
    let mut cmd = Cmd::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "--locked", "--target"])
        .arg(platform.triple());
    for image in IMAGES {
        cmd = cmd.args(["-p", image.package]);
    }
    cmd = cmd.arg("--bins").args(extra);
    for (key, value) in platform.build_env() {
        cmd = cmd.env(&key, &value);
    }
    cmd.run()
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

/// Writes every [`image_binary`] with binutils' `strip --strip-debug` for its platform.
fn strip_binaries(root: &Path) -> Result<()> {
    for platform in Platform::ALL {
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

/// Writes every archive into `out`; returns each path with its index.json manifest digest.
fn write_all(root: &Path, out: &Path) -> Result<Vec<(PathBuf, String)>> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let meta = Meta::from_repo(root)?;
    let mut written = Vec::new();
    for image in IMAGES {
        let mut all = Layout::default();
        let mut manifests = Vec::new();
        for platform in Platform::ALL {
            let path = image_binary(root, platform, &image);
            let bin = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let mut one = Layout::default();
            let manifest = pack(&mut one, &image, platform, &bin, &meta)?;
            let file = out.join(format!("{}-{}.tar", image.stem(), platform.name()));
            let docker = docker_manifest(&one, &image, &manifest)?;
            write_archive(&one, &image, manifest.clone(), Some(docker), &meta, &file)?;
            written.push((file, manifest.digest().to_string()));
            all.blobs.extend(one.blobs);
            manifests.push(manifest);
        }
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()?;
        let index = all.add(MediaType::ImageIndex, canonical_json(&index)?)?;
        let file = out.join(format!("{}.tar", image.stem()));
        write_archive(&all, &image, index.clone(), None, &meta, &file)?;
        written.push((file, index.digest().to_string()));
    }
    Ok(written)
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

/// What goes into every image besides the binary: the time and the source revision.
#[derive(Debug, Clone)]
struct Meta {
    epoch: u64,
    revision: String,
}

impl Meta {
    fn from_repo(root: &Path) -> Result<Self> {
        let revision = Cmd::new("git")
            .current_dir(root)
            .args(["rev-parse", "HEAD"])
            .probe()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => v
                .trim()
                .parse()
                .map_err(|_| anyhow!("SOURCE_DATE_EPOCH is not a number: {v}"))?,
            _ => Cmd::new("git")
                .current_dir(root)
                .args(["log", "-1", "--format=%ct"])
                .probe()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .unwrap_or(0),
        };
        Ok(Self { epoch, revision })
    }
}

/// The blobs of an OCI image layout, by sha256 hex.
#[derive(Debug, Default)]
struct Layout {
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    fn add(&mut self, media_type: MediaType, data: Vec<u8>) -> Result<Descriptor> {
        let hex = sha256_hex(&data);
        let digest: Sha256Digest = hex.parse()?;
        let size = data.len() as u64;
        self.blobs.insert(hex, data);
        Ok(Descriptor::new(media_type, size, digest))
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Adds `image`'s layer, config and manifest for `platform` to `layout`; returns the
/// manifest's descriptor with its platform.
fn pack(
    layout: &mut Layout,
    image: &Image,
    platform: Platform,
    bin: &[u8],
    meta: &Meta,
) -> Result<Descriptor> {
    let tar = layer_tar(image, bin, meta.epoch)?;
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let layer = layout.add(MediaType::ImageLayerGzip, gzip(&tar)?)?;

    let labels: HashMap<String, String> = labels(image, meta).into_iter().collect();
    let config = ConfigBuilder::default()
        .user(format!("{NONROOT}:{NONROOT}"))
        .env(vec![format!("PATH=/{BIN_DIR}")])
        .entrypoint(vec![format!("/{BIN_DIR}/{}", image.binary)])
        .working_dir("/")
        .labels(labels)
        .build()?;
    let config = ImageConfigurationBuilder::default()
        .created(rfc3339(meta.epoch))
        .architecture(platform.arch())
        .os(Os::Linux)
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id])
                .build()?,
        )
        .build()?;
    let config = layout.add(MediaType::ImageConfig, canonical_json(&config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .build()?;
    let manifest = layout.add(MediaType::ImageManifest, canonical_json(&manifest)?)?;
    let platform = PlatformBuilder::default()
        .architecture(platform.arch())
        .os(Os::Linux)
        .build()?;
    let mut manifest = manifest;
    manifest.set_platform(Some(platform));
    Ok(manifest)
}

/// The OCI labels (image-spec annotations.md) both images carry, sorted.
fn labels(image: &Image, meta: &Meta) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("org.opencontainers.image.title", image.stem().to_owned()),
        (
            "org.opencontainers.image.description",
            image.description.to_owned(),
        ),
        ("org.opencontainers.image.source", REPOSITORY.to_owned()),
        ("org.opencontainers.image.version", VERSION.to_owned()),
        ("org.opencontainers.image.licenses", LICENSES.to_owned()),
    ]);
    if !meta.revision.is_empty() {
        labels.insert("org.opencontainers.image.revision", meta.revision.clone());
    }
    labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The layer: /etc/passwd, /etc/group, /tmp and the binary, as a tar with sorted entries,
/// fixed owners, modes and mtimes.
fn layer_tar(image: &Image, bin: &[u8], epoch: u64) -> Result<Vec<u8>> {
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nnonroot:x:{NONROOT}:\n");
    let bin_path = format!("{BIN_DIR}/{}", image.binary);
    // (path, mode, contents; None for a directory), in path order.
    let mut entries: Vec<(String, u32, Option<&[u8]>)> = vec![
        ("etc/".into(), 0o755, None),
        ("etc/group".into(), 0o644, Some(group.as_bytes())),
        ("etc/passwd".into(), 0o644, Some(passwd.as_bytes())),
        ("tmp/".into(), 0o1777, None),
        ("usr/".into(), 0o755, None),
        ("usr/local/".into(), 0o755, None),
        (format!("{BIN_DIR}/"), 0o755, None),
        (bin_path, 0o755, Some(bin)),
    ];
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(epoch);
        header.set_username("root")?;
        header.set_groupname("root")?;
        match data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append_data(&mut header, &path, data)?;
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_cksum();
                builder.append_data(&mut header, &path, std::io::empty())?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

/// gzip with a fixed header (no name, mtime 0) and level.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// JSON with every object's keys sorted: oci-spec keeps labels and annotations in HashMaps,
/// whose order would change the digest from run to run.
fn canonical_json(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sort(serde_json::to_value(value)?))?)
}

/// The manifest.json of `docker save` for the single-platform archive whose manifest is
/// `manifest`: docker load before version 25 reads only that, later ones and the rest read
/// index.json.
fn docker_manifest(
    layout: &Layout,
    image: &Image,
    manifest: &Descriptor,
) -> Result<serde_json::Value> {
    let blob = |d: &oci_spec::image::Digest| format!("blobs/sha256/{}", d.digest());
    let data = layout
        .blobs
        .get(manifest.digest().digest())
        .ok_or_else(|| anyhow!("manifest blob missing"))?;
    let parsed = oci_spec::image::ImageManifest::from_reader(data.as_slice())?;
    let layers: Vec<String> = parsed.layers().iter().map(|l| blob(l.digest())).collect();
    Ok(serde_json::json!([{
        "Config": blob(parsed.config().digest()),
        "RepoTags": [format!("{}:{VERSION}", image.name)],
        "Layers": layers,
    }]))
}

/// Writes `layout` with an index.json naming `top` (a manifest or an image index) as `image`
/// at the crate version, as an OCI archive (a tar of the layout, with `docker`'s manifest.json
/// when given) at `file`.
fn write_archive(
    layout: &Layout,
    image: &Image,
    mut top: Descriptor,
    docker: Option<serde_json::Value>,
    meta: &Meta,
    file: &Path,
) -> Result<()> {
    // containerd (ctr import) and docker load take the full name from io.containerd.image.name;
    // skopeo, podman and umoci take the tag from ref.name (`oci-archive:FILE:VERSION`).
    top.set_annotations(Some(HashMap::from([
        ("io.containerd.image.name".to_owned(), image.reference()),
        (
            oci_spec::image::ANNOTATION_REF_NAME.to_owned(),
            VERSION.to_owned(),
        ),
    ])));
    top.set_platform(None);
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![top])
        .build()?;
    let oci_layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("index.json".into(), canonical_json(&index)?),
        ("oci-layout".into(), canonical_json(&oci_layout)?),
    ];
    if let Some(docker) = docker {
        files.push(("manifest.json".into(), canonical_json(&docker)?));
    }
    for (hex, data) in &layout.blobs {
        files.push((format!("blobs/sha256/{hex}"), data.clone()));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut builder = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = fixed_header(meta.epoch, 0o755);
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_cksum();
        builder.append_data(&mut header, dir, std::io::empty())?;
    }
    for (path, data) in &files {
        let mut header = fixed_header(meta.epoch, 0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append_data(&mut header, path, data.as_slice())?;
    }
    let bytes = builder.into_inner()?;
    fs::write(file, bytes).with_context(|| format!("writing {}", file.display()))
}

fn fixed_header(epoch: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
    header
}

/// `epoch` (seconds since 1970, UTC) as RFC 3339, e.g. `2026-12-02T00:00:00Z`.
fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The checks of `--check`: a second pack into a scratch directory gives the same bytes,
/// skopeo reads each per-platform archive with its name, platform, user and labels, copies
/// each archive (the multi-arch one whole) to a directory, and the chart's and the operator's
/// default image references are the names built.
fn check(root: &Path, out: &Path, written: &[(PathBuf, String)]) -> Result<()> {
    let again = out.join("check-repack");
    let _ = fs::remove_dir_all(&again);
    let second = write_all(root, &again)?;
    for ((a, da), (b, db)) in written.iter().zip(&second) {
        let same = fs::read(a)? == fs::read(b)?;
        if da != db || !same {
            bail!(
                "not reproducible: {} ({da}) and {} ({db}) differ",
                a.display(),
                b.display()
            );
        }
        println!("    reproducible: {} {da}", a.display());
    }
    fs::remove_dir_all(&again)?;

    for image in IMAGES {
        for platform in Platform::ALL {
            let file = out.join(format!("{}-{}.tar", image.stem(), platform.name()));
            let inspect = Cmd::new("skopeo")
                .arg("inspect")
                .arg(format!("oci-archive:{}:{VERSION}", file.display()))
                .stdout()?;
            let inspect: serde_json::Value = serde_json::from_slice(&inspect)?;
            let config = Cmd::new("skopeo")
                .args(["inspect", "--config"])
                .arg(format!("oci-archive:{}", file.display()))
                .stdout()?;
            let config: serde_json::Value = serde_json::from_slice(&config)?;
            verify_inspect(&image, platform, &inspect, &config)
                .with_context(|| format!("skopeo inspect {}", file.display()))?;
            println!(
                "    skopeo inspect {}: {} linux/{} user {NONROOT}, labels ok",
                file.display(),
                image.name,
                platform.name()
            );
        }
        let file = out.join(format!("{}.tar", image.stem()));
        let dir = out.join(format!("check-copy-{}", image.stem()));
        let _ = fs::remove_dir_all(&dir);
        Cmd::new("skopeo")
            .args(["copy", "--quiet", "--all"])
            .arg(format!("oci-archive:{}", file.display()))
            .arg(format!("dir:{}", dir.display()))
            .run()?;
        let listed = fs::read_dir(&dir)?.count();
        // The index, two manifests, two configs, two layers, and skopeo's version file.
        if listed < 8 {
            bail!(
                "skopeo copy --all of {} wrote {listed} files",
                file.display()
            );
        }
        fs::remove_dir_all(&dir)?;
    }
    check_defaults(root)
}

/// What skopeo says about one per-platform archive matches what was built.
fn verify_inspect(
    image: &Image,
    platform: Platform,
    inspect: &serde_json::Value,
    config: &serde_json::Value,
) -> Result<()> {
    let want = |what: &str, got: &serde_json::Value, expected: &str| -> Result<()> {
        if got.as_str() != Some(expected) {
            bail!("{what}: {got} instead of {expected:?}");
        }
        Ok(())
    };
    want("Architecture", &inspect["Architecture"], platform.name())?;
    want("Os", &inspect["Os"], "linux")?;
    want(
        "config.User",
        &config["config"]["User"],
        &format!("{NONROOT}:{NONROOT}"),
    )?;
    want(
        "Entrypoint",
        &config["config"]["Entrypoint"][0],
        &format!("/{BIN_DIR}/{}", image.binary),
    )?;
    for key in [
        "org.opencontainers.image.source",
        "org.opencontainers.image.version",
        "org.opencontainers.image.licenses",
    ] {
        let expected = match key {
            "org.opencontainers.image.source" => REPOSITORY,
            "org.opencontainers.image.version" => VERSION,
            _ => LICENSES,
        };
        want(key, &inspect["Labels"][key], expected)?;
    }
    if inspect["Layers"].as_array().map(Vec::len) != Some(1) {
        bail!("Layers: {} instead of one layer", inspect["Layers"]);
    }
    Ok(())
}

/// The chart's and the operator's default image references name the images built here.
fn check_defaults(root: &Path) -> Result<()> {
    let values = fs::read_to_string(root.join("charts/xdpturn/values.yaml"))?;
    let values: serde_yaml::Value = serde_yaml::from_str(&values)?;
    let operator_repo = values["operator"]["image"]["repository"].as_str();
    if operator_repo != Some(IMAGES[1].name) {
        bail!(
            "charts/xdpturn/values.yaml operator.image.repository is {operator_repo:?}, not {}",
            IMAGES[1].name
        );
    }
    let chart = fs::read_to_string(root.join("charts/xdpturn/Chart.yaml"))?;
    let chart: serde_yaml::Value = serde_yaml::from_str(&chart)?;
    if chart["appVersion"].as_str() != Some(VERSION) {
        bail!("charts/xdpturn/Chart.yaml appVersion is not {VERSION}");
    }
    let lib = fs::read_to_string(root.join("operator/src/lib.rs"))?;
    let relay_default = format!(
        "concat!(\"{}:\", env!(\"CARGO_PKG_VERSION\"))",
        IMAGES[0].name
    );
    if !lib.contains(&relay_default) {
        bail!(
            "operator/src/lib.rs DEFAULT_RELAY_IMAGE is not {}:<version>",
            IMAGES[0].name
        );
    }
    println!(
        "    chart and operator defaults name {} and {}",
        IMAGES[0].name, IMAGES[1].name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn the_same_binary_packs_to_the_same_digest() {
        let meta = Meta {
            epoch: 1_700_000_000,
            revision: "abc".into(),
        };
        let pack_once = || {
            let mut layout = Layout::default();
            let d = pack(&mut layout, &IMAGES[0], Platform::Arm64, b"\x7fELF", &meta).unwrap();
            (d, layout.blobs)
        };
        let (a, blobs_a) = pack_once();
        let (b, blobs_b) = pack_once();
        assert_eq!(a, b);
        assert_eq!(blobs_a, blobs_b);
        let (c, _) = {
            let mut layout = Layout::default();
            let d = pack(&mut layout, &IMAGES[0], Platform::Amd64, b"\x7fELF", &meta).unwrap();
            (d, layout)
        };
        assert_ne!(a.digest(), c.digest(), "the platform is in the config");
    }

    #[test]
    fn layer_holds_the_user_tmp_and_the_binary_with_fixed_metadata() {
        let tar = layer_tar(&IMAGES[1], b"bin", 42).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect();
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc/",
                "etc/group",
                "etc/passwd",
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/xdpturn-operator"
            ]
        );
        assert!(entries.iter().all(|e| e.2 == 0 && e.3 == 42));
        assert_eq!(entries[3].1, 0o1777);
        assert_eq!(entries[7].1, 0o755);
    }

    /// The Containerfile builds what `layer_tar` and `pack` write: the same passwd and group
    /// lines, user, binary paths, entrypoints and labels.
    #[test]
    fn containerfile_matches_the_images() {
        let file = fs::read_to_string(repo_root().join("Containerfile")).unwrap();
        let tar = layer_tar(&IMAGES[0], b"", 0).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            if path.starts_with("etc/") && !path.ends_with('/') {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                for line in text.lines() {
                    assert!(file.contains(&format!("'{line}'")), "{path}: {line}");
                }
            }
        }
        assert!(file.contains("chmod 1777 /rootfs/tmp"));
        assert!(file.contains(&format!("USER {NONROOT}:{NONROOT}")));
        assert!(file.contains(&format!("ARG VERSION={VERSION}")));
        let meta = Meta {
            epoch: 0,
            revision: String::new(),
        };
        for image in IMAGES {
            assert!(file.contains(&format!("FROM base AS {}", image.binary)));
            assert!(file.contains(&format!("ENTRYPOINT [\"/{BIN_DIR}/{}\"]", image.binary)));
            for (key, value) in labels(&image, &meta) {
                let value = value.replace(VERSION, "${VERSION}");
                assert!(
                    file.contains(&format!("{key}=\"{value}\"")),
                    "{key}={value}"
                );
            }
        }
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let map: HashMap<&str, u8> = (0..20u8)
            .map(|i| {
                (
                    [
                        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o",
                        "p", "q", "r", "s", "t",
                    ][usize::from(i)],
                    i,
                )
            })
            .collect();
        let json = String::from_utf8(canonical_json(&map).unwrap()).unwrap();
        assert!(json.starts_with("{\"a\":0,\"b\":1,"), "{json}");
    }
}
