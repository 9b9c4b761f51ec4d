//! The OCI image layout of `cargo xtask images`: the layer tar, the config, manifest and index
//! JSON (oci-spec's types, keys sorted), and the archive (a tar of the layout) with fixed
//! metadata, so that the same binaries and commit give the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder, Sha256Digest,
};
use sha2::{Digest as _, Sha256};

use super::{
    BIN_DIR, IMAGES, Image, LICENSES, NONROOT, Platform, REPOSITORY, VERSION, image_binary,
};
use crate::cmd::Cmd;

/// Writes every archive into `out`; returns each path with its index.json manifest digest.
pub(super) fn write_all(root: &Path, out: &Path) -> Result<Vec<(PathBuf, String)>> {
    write_platforms(root, out, &Platform::ALL)
}

/// Writes each image's archive for each of `platforms` into `out`, and the multi-platform
/// index archive when that is all of them.
pub(super) fn write_platforms(
    root: &Path,
    out: &Path,
    platforms: &[Platform],
) -> Result<Vec<(PathBuf, String)>> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let meta = Meta::from_repo(root)?;
    let mut written = Vec::new();
    for image in IMAGES {
        let mut all = Layout::default();
        let mut manifests = Vec::new();
        for &platform in platforms {
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
        if platforms.len() < Platform::ALL.len() {
            continue;
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

/// Writes a single-platform archive of `image` (one that is not among [`super::IMAGES`], such
/// as [`super::PAUSE`]) holding the binary at `bin`, loadable by `ctr images import`; returns
/// its manifest digest.
pub fn write_single(
    root: &Path,
    image: &Image,
    platform: Platform,
    bin: &Path,
    file: &Path,
) -> Result<String> {
    let meta = Meta::from_repo(root)?;
    let data = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let mut layout = Layout::default();
    let manifest = pack(&mut layout, image, platform, &data, &meta)?;
    let docker = docker_manifest(&layout, image, &manifest)?;
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_archive(&layout, image, manifest.clone(), Some(docker), &meta, file)?;
    Ok(manifest.digest().to_string())
}

/// What goes into every image besides the binary: the time and the source revision.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub(super) epoch: u64,
    pub(super) revision: String,
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
pub(super) struct Layout {
    pub(super) blobs: BTreeMap<String, Vec<u8>>,
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

pub(super) fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Adds `image`'s layer, config and manifest for `platform` to `layout`; returns the
/// manifest's descriptor with its platform.
pub(super) fn pack(
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
pub(super) fn labels(image: &Image, meta: &Meta) -> BTreeMap<String, String> {
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
pub(super) fn layer_tar(image: &Image, bin: &[u8], epoch: u64) -> Result<Vec<u8>> {
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
pub(super) fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// JSON with every object's keys sorted: oci-spec keeps labels and annotations in HashMaps,
/// whose order would change the digest from run to run.
pub(super) fn canonical_json(value: &impl serde::Serialize) -> Result<Vec<u8>> {
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
pub(super) fn docker_manifest(
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
pub(super) fn write_archive(
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

pub(super) fn fixed_header(epoch: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
    header
}

/// `epoch` (seconds since 1970, UTC) as RFC 3339, e.g. `2026-12-02T00:00:00Z`.
pub(super) fn rfc3339(epoch: u64) -> String {
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
