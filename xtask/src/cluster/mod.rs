//! `cargo xtask cluster up|down`: a real single-node Kubernetes on this machine for the tests
//! and for trying the chart by hand. etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, the kubelet and kube-proxy (v1.20, built from Debian's source by
//! `cargo xtask envtest`), and Debian's containerd, runc and CNI plugins, all inside a network
//! namespace joined to the host by one veth pair (node address 10.250.N.2, the host's end
//! 10.250.N.1), with a private mount namespace for the paths they hard-code. No registry: the
//! pause image is packed from the kubelet's own source, the product's images are imported with
//! `ctr`. `down` stops every process the cluster started and removes what `up` made.

mod components;
mod e2e;
mod node;
mod pki;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;
use crate::images::{self, PAUSE, Platform};
use crate::{envtest, repo_root, test};

pub use components::CONTAINERD_SOCKET;
pub use e2e::run as test;
pub use node::Node;

/// Debian packages the cluster runs on (the Kubernetes binaries come from `envtest`).
pub const APT_PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "iproute2",
    "util-linux",
    "openssl",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Start the cluster (idempotent: a cluster that is up is left as it is) and print its
    /// kubeconfig's path.
    Up(UpArgs),
    /// Stop every process of the cluster and remove what `up` made (namespaces, veth, mounts,
    /// cgroups, its directory).
    Down(Which),
    /// Build and pack the images for this machine, bring up a cluster of its own, import them,
    /// run the cluster test (operator/tests/cluster.rs) on it, and tear it down.
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Install nothing (apt packages, toolchains, the Kubernetes build).
    #[arg(long, env = "XTASK_SKIP_INSTALL")]
    pub skip_install: bool,
}

#[derive(Debug, clap::Args)]
pub struct Which {
    /// The cluster's name: the node's name, and part of its namespaces' and cgroups' names.
    #[arg(long, default_value = "xdpturn", value_parser = valid_name)]
    pub name: String,
    /// Its directory (state, logs, kubeconfig); default: cluster/<name> in cargo's target
    /// directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub which: Which,
    /// Install nothing (apt packages, the Kubernetes build).
    #[arg(long, env = "XTASK_SKIP_INSTALL")]
    pub skip_install: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if !test::is_root() {
        bail!("`cargo xtask cluster` needs root (namespaces, mounts, cgroups)");
    }
    match &args.action {
        Action::Up(up) => {
            let cluster = Cluster::up(&up.which.name, &dir_of(&up.which), up.skip_install)?;
            println!(
                "\ncluster `{}` is up: node {} at {}\n  export KUBECONFIG={}\n  kubectl: {}\n  \
                 run inside the node: nsenter -t {} -m -n -- <command>\n  stop it: cargo xtask \
                 cluster down --name {}",
                cluster.node.name,
                cluster.node.name,
                cluster.node.node_ip(),
                cluster.kubeconfig.display(),
                cluster.bin.join("kubectl").display(),
                cluster.node.holder.unwrap_or_default(),
                cluster.node.name,
            );
        }
        Action::Test(t) => e2e::run(t.skip_install)?,
        Action::Down(which) => {
            let dir = dir_of(which);
            match Node::load(&dir)? {
                Some(node) => down(&node)?,
                None => println!("    no cluster in {}: nothing to do", dir.display()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub node: Node,
    /// The Kubernetes binaries (kubectl among them).
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// Brings the cluster named `name` up in `dir`, or finds it up already.
    pub fn up(name: &str, dir: &Path, skip_install: bool) -> Result<Self> {
        let started = Instant::now();
        let bin = if skip_install {
            envtest::ready(None)?.with_context(
                || "the Kubernetes binaries are not built (run `cargo xtask envtest`)",
            )?
        } else {
            test::apt_packages(APT_PACKAGES)?;
            envtest::ensure(&envtest::Args {
                print_env: false,
                force: false,
                keep_build: false,
                cache_dir: None,
            })?
        };
        let kubeconfig = dir.join("kubeconfig");
        if let Some(node) = Node::load(dir)? {
            let cluster = Self {
                node,
                bin: bin.clone(),
                kubeconfig: kubeconfig.clone(),
            };
            if cluster.node_ready() {
                println!("    cluster `{name}` is up already");
                return Ok(cluster);
            }
            println!("    cluster `{name}` is there but not ready: tearing it down first");
            down(&cluster.node)?;
        }

        let node = Node::create(name, dir)?;
        let cluster = Self {
            node,
            bin,
            kubeconfig,
        };
        if let Err(err) = cluster.start() {
            eprintln!("cluster `{name}` did not come up; tearing down what was started");
            if let Err(e) = down(&cluster.node) {
                eprintln!("warning: {e:#}");
            }
            return Err(err);
        }
        println!(
            "    cluster `{name}` up in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Ok(cluster)
    }

    fn start(&self) -> Result<()> {
        let node = &self.node;
        let pki = pki::create(
            &node.dir.join("pki"),
            node.node_ip(),
            std::net::Ipv4Addr::new(10, 0, 0, 1),
        )?;
        let server = format!("https://{}:{}", node.node_ip(), components::API_PORT);
        fs::write(&self.kubeconfig, pki::kubeconfig(&server, &pki)?)
            .with_context(|| format!("writing {}", self.kubeconfig.display()))?;
        components::control_plane(node, &self.bin, &pki, &self.kubeconfig)?;
        components::containerd(node)?;
        let platform = Platform::host();
        let pause = node.dir.join("pause.tar");
        images::write_single(
            &repo_root(),
            &PAUSE,
            platform,
            &self.bin.join("pause"),
            &pause,
        )?;
        self.import(&pause)?;
        components::node_agents(node, &self.bin, &self.kubeconfig)?;
        components::wait_for(node, "kubelet", std::time::Duration::from_secs(180), || {
            self.node_ready()
        })?;
        components::wait_for(
            node,
            "kube-controller-manager",
            std::time::Duration::from_secs(60),
            || {
                self.kubectl()
                    .args(["get", "serviceaccount", "default", "-n", "default"])
                    .quiet()
                    .probe()
                    .is_some_and(|o| o.status.success())
            },
        )
    }

    /// Whether the node is registered and Ready.
    pub fn node_ready(&self) -> bool {
        self.kubectl()
            .args(["get", "node", &self.node.name, "-o"])
            .arg(r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#)
            .quiet()
            .probe()
            .is_some_and(|o| o.status.success() && o.stdout == b"True")
    }

    /// kubectl (the same build as the cluster) with the cluster's kubeconfig.
    pub fn kubectl(&self) -> Cmd {
        kubectl(&self.bin, &self.kubeconfig)
    }

    /// Imports an image archive into the node's containerd, where the kubelet finds it.
    pub fn import(&self, archive: &Path) -> Result<()> {
        self.node
            .exec("ctr")
            .args([
                "--address",
                CONTAINERD_SOCKET,
                "-n",
                "k8s.io",
                "images",
                "import",
            ])
            .arg(archive)
            .run()
    }
}

/// Tears the cluster down and removes its directory.
pub fn down(node: &Node) -> Result<()> {
    let started = Instant::now();
    node.destroy()?;
    fs::remove_dir_all(&node.dir).with_context(|| format!("removing {}", node.dir.display()))?;
    println!(
        "    cluster `{}` down in {:.1} s",
        node.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn kubectl(bin: &Path, kubeconfig: &Path) -> Cmd {
    Cmd::new(&bin.join("kubectl").to_string_lossy())
        .arg("--kubeconfig")
        .arg(kubeconfig)
}

fn dir_of(which: &Which) -> PathBuf {
    which.dir.clone().unwrap_or_else(|| {
        images::target_dir(&repo_root())
            .join("cluster")
            .join(&which.name)
    })
}

/// Names go into interface-free places (netns, cgroup, node name): DNS-label characters, short.
fn valid_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(name.to_owned())
    } else {
        Err("use 1 to 40 lowercase letters, digits and inner dashes".to_owned())
    }
}
