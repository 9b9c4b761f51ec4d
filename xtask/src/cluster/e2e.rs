//! `cargo xtask cluster test` (and a step of `cargo xtask test`): the images built and packed
//! for this machine's platform, a cluster of its own brought up, the images imported, the
//! cluster test (operator/tests/cluster.rs) run against it, and the cluster torn down whatever
//! happened, its components' logs printed first when the test failed.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{Cluster, down};
use crate::images::{self, Platform};
use crate::{envtest, repo_root, test};

/// The cluster's components, whose logs are shown when the test fails.
const COMPONENTS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
];

pub fn run(skip_install: bool) -> Result<()> {
    let root = repo_root();
    let platform = Platform::host();
    if !skip_install {
        images::install(&[platform])?;
    }
    let target = images::target_dir(&root);
    let started = Instant::now();
    let archives = images::build_for(&root, platform, &target.join("images"))?;
    println!(
        "    images for {} built and packed in {:.0} s",
        platform.name(),
        started.elapsed().as_secs_f64()
    );

    let name = format!("ci-{}", std::process::id());
    let dir = target.join("cluster").join(&name);
    let cluster = Cluster::up(&name, &dir, skip_install)?;
    let result = test(&root, &cluster, &archives);
    if result.is_err() {
        for component in COMPONENTS {
            println!(
                "\n--- {component} (last lines) ---\n{}",
                cluster.node.log_tail(component, 25)
            );
        }
    }
    let torn = down(&cluster.node);
    result.and(torn)
}

fn test(root: &Path, cluster: &Cluster, archives: &[(std::path::PathBuf, String)]) -> Result<()> {
    for (archive, digest) in archives {
        println!("    importing {} ({digest})", archive.display());
        cluster.import(archive)?;
    }
    let dir = cluster
        .node
        .dir
        .to_str()
        .context("the cluster's directory is not UTF-8")?;
    let kubectl = cluster.bin.join("kubectl");
    test::cargo(root)
        .env("XDPTURN_CLUSTER", dir)
        .env(
            "XDPTURN_KUBECTL",
            kubectl.to_str().context("kubectl's path is not UTF-8")?,
        )
        .env(
            envtest::BIN_ENV,
            cluster.bin.to_str().context("the bin path is not UTF-8")?,
        )
        .args([
            "test",
            "-p",
            "operator",
            "--test",
            "cluster",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .run()
}
