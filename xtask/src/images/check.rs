//! `cargo xtask images --check`: the archives are reproducible, skopeo reads and copies each
//! one, and the chart's and the operator's defaults name the images built.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::oci::write_all;
use super::{BIN_DIR, IMAGES, Image, LICENSES, NONROOT, Platform, REPOSITORY, VERSION};
use crate::cmd::Cmd;

/// The checks of `--check`: a second pack into a scratch directory gives the same bytes,
/// skopeo reads each per-platform archive with its name, platform, user and labels, copies
/// each archive (the multi-arch one whole) to a directory, and the chart's and the operator's
/// default image references are the names built.
pub(super) fn check(root: &Path, out: &Path, written: &[(PathBuf, String)]) -> Result<()> {
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
pub(super) fn verify_inspect(
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
pub(super) fn check_defaults(root: &Path) -> Result<()> {
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
