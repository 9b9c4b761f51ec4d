//! The cluster's processes and their configuration: etcd, kube-apiserver (with the
//! ServiceAccount admission plugin, which pods' tokens and the operator's in-cluster config
//! need), kube-controller-manager, kube-scheduler, containerd (cgroupfs, and
//! `restrict_oom_score_adj`: no process here has CAP_SYS_RESOURCE), the kubelet and kube-proxy,
//! each inside the node, with its log in the cluster's logs/ directory.

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::node::Node;
use super::pki::{Pki, s};

/// Service and pod ranges; they exist only inside the node's network namespace.
pub const SERVICE_RANGE: &str = "10.0.0.0/24";
pub const POD_RANGE: &str = "10.244.0.0/24";
/// containerd's socket, in the node's private /run.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const API_PORT: u16 = 6443;

/// Starts the control plane and waits for the API server to be ready.
pub fn control_plane(node: &Node, bin: &Path, pki: &Pki, kubeconfig: &Path) -> Result<()> {
    let etcd_data = node.dir.join("etcd");
    node.spawn(
        "etcd",
        &bin.join("etcd"),
        &[
            "--name=node".into(),
            format!("--data-dir={}", s(&etcd_data)?),
            "--listen-client-urls=http://127.0.0.1:2379".into(),
            "--advertise-client-urls=http://127.0.0.1:2379".into(),
            "--listen-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-cluster=node=http://127.0.0.1:2380".into(),
            "--initial-cluster-state=new".into(),
            "--unsafe-no-fsync".into(),
        ],
    )?;
    node.spawn(
        "kube-apiserver",
        &bin.join("kube-apiserver"),
        &[
            "--etcd-servers=http://127.0.0.1:2379".into(),
            "--bind-address=0.0.0.0".into(),
            format!("--advertise-address={}", node.node_ip()),
            format!("--secure-port={API_PORT}"),
            format!("--cert-dir={}", s(&node.dir.join("apiserver-certs"))?),
            format!("--tls-cert-file={}", s(&pki.serving_cert)?),
            format!("--tls-private-key-file={}", s(&pki.serving_key)?),
            format!("--client-ca-file={}", s(&pki.ca)?),
            format!("--token-auth-file={}", s(&pki.tokens)?),
            "--authorization-mode=RBAC".into(),
            format!(
                "--service-account-key-file={}",
                s(&pki.service_account_pub)?
            ),
            format!(
                "--service-account-signing-key-file={}",
                s(&pki.service_account_key)?
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-cluster-ip-range={SERVICE_RANGE}"),
            "--allow-privileged=true".into(),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--profiling=false".into(),
        ],
    )?;
    wait_for(node, "kube-apiserver", Duration::from_secs(120), || {
        super::kubectl(bin, kubeconfig)
            .args(["get", "--raw", "/readyz"])
            .quiet()
            .probe()
            .is_some_and(|o| o.status.success())
    })?;
    node.spawn(
        "kube-controller-manager",
        &bin.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", s(kubeconfig)?),
            "--leader-elect=false".into(),
            format!(
                "--service-account-private-key-file={}",
                s(&pki.service_account_key)?
            ),
            format!("--root-ca-file={}", s(&pki.ca)?),
            "--use-service-account-credentials=false".into(),
            "--port=0".into(),
            "--secure-port=0".into(),
        ],
    )?;
    node.spawn(
        "kube-scheduler",
        &bin.join("kube-scheduler"),
        &[
            format!("--kubeconfig={}", s(kubeconfig)?),
            "--leader-elect=false".into(),
            "--port=0".into(),
            "--bind-address=127.0.0.1".into(),
        ],
    )?;
    Ok(())
}

/// Writes containerd's and CNI's configuration, starts containerd and waits for its socket.
pub fn containerd(node: &Node) -> Result<()> {
    let root = node.dir.join("containerd");
    let cni = node.dir.join("cni");
    let config = node.dir.join("containerd.toml");
    fs::create_dir_all(cni.join("net.d")).with_context(|| format!("creating {}", cni.display()))?;
    fs::write(
        cni.join("net.d/10-xdpturn.conflist"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "xdpturn-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_RANGE}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": s(&cni.join("ipam"))?,
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        }))?,
    )
    .context("writing the CNI configuration")?;
    fs::write(
        &config,
        format!(
            r#"version = 2
root = "{root}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{conf}"
"#,
            root = s(&root.join("root"))?,
            opt = s(&root.join("opt"))?,
            conf = s(&cni.join("net.d"))?,
            pause = crate::images::PAUSE.reference(),
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    node.spawn(
        "containerd",
        Path::new("/usr/bin/containerd"),
        &[format!("--config={}", s(&config)?)],
    )?;
    wait_for(node, "containerd", Duration::from_secs(60), || {
        node.exec("ctr")
            .args(["--address", CONTAINERD_SOCKET, "version"])
            .quiet()
            .probe()
            .is_some_and(|o| o.status.success())
    })
}

/// Starts the kubelet and kube-proxy.
pub fn node_agents(node: &Node, bin: &Path, kubeconfig: &Path) -> Result<()> {
    let kubelet = node.dir.join("kubelet");
    node.spawn(
        "kubelet",
        &bin.join("kubelet"),
        &[
            format!("--kubeconfig={}", s(kubeconfig)?),
            format!("--hostname-override={}", node.name),
            format!("--node-ip={}", node.node_ip()),
            format!("--address={}", node.node_ip()),
            format!("--cert-dir={}", s(&kubelet.join("pki"))?),
            format!(
                "--volume-plugin-dir={}",
                s(&kubelet.join("volume-plugins"))?
            ),
            "--container-runtime=remote".into(),
            format!("--container-runtime-endpoint=unix://{CONTAINERD_SOCKET}"),
            "--runtime-request-timeout=10m".into(),
            "--cgroup-driver=cgroupfs".into(),
            format!("--cgroup-root={}", node.cgroup_root()),
            "--fail-swap-on=false".into(),
            "--read-only-port=0".into(),
            "--anonymous-auth=true".into(),
            "--authorization-mode=AlwaysAllow".into(),
            "--cluster-domain=cluster.local".into(),
            // A shared test machine's disk is often fuller than the kubelet's defaults allow:
            // evictions and image garbage collection would remove what the test imported.
            "--eviction-hard=memory.available<50Mi,nodefs.available<1%,imagefs.available<1%".into(),
            "--image-gc-high-threshold=100".into(),
            "--image-gc-low-threshold=99".into(),
            "--serialize-image-pulls=false".into(),
        ],
    )?;
    node.spawn(
        "kube-proxy",
        &bin.join("kube-proxy"),
        &[
            format!("--kubeconfig={}", s(kubeconfig)?),
            format!("--hostname-override={}", node.name),
            format!("--bind-address={}", node.node_ip()),
            format!("--cluster-cidr={POD_RANGE}"),
            "--proxy-mode=iptables".into(),
            // 0: leave the conntrack table's size and timeouts (host-wide settings) alone.
            "--conntrack-max-per-core=0".into(),
            "--conntrack-min=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
        ],
    )?;
    Ok(())
}

/// Polls `ready` every half second until it holds or `timeout` passes; on timeout the error
/// carries the last lines of `component`'s log.
pub fn wait_for(
    node: &Node,
    component: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > timeout {
            bail!(
                "{component} is not ready after {} s; its log ends:\n{}",
                timeout.as_secs(),
                node.log_tail(component, 30)
            );
        }
        sleep(Duration::from_millis(500));
    }
    println!(
        "    {component} ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
