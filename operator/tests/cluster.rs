//! The loop closed on a real node: the chart installed by Helm's own library into a
//! single-node Kubernetes 1.20 with a kubelet and containerd (`cargo xtask cluster`), the
//! images `cargo xtask images` packs imported into its containerd, the example TurnCluster
//! applied (adapted to the node: its address as the public address, the host's end of the
//! node's link as an allowed peer, XDP on), and then what a user sees: the operator's pod and
//! the relay's pod Running and Ready, the TurnCluster Ready with iceServers, coturn's
//! `turnutils_uclient` relaying through the pod with the credentials the Secret makes and the
//! ones the relays' API hands out, with 0 loss, the kernel's share in the relay's metrics, a
//! configuration change rolled out while an allocation is in progress without losing it, and
//! the delete removing everything the operator made.
//!
//! Needs a cluster: `cargo xtask test` (and `cargo xtask cluster test`) bring one up, import
//! the images, run this with `--ignored` and XDPTURN_CLUSTER naming the cluster's directory,
//! and tear it down. By hand: `cargo xtask cluster up`, import the images (see the README),
//! then `XDPTURN_CLUSTER=target/cluster/xdpturn cargo test -p operator --test cluster --
//! --ignored`.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../relay/tests/common/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "../../relay/tests/common/prometheus.rs"]
mod prometheus;
#[allow(dead_code)]
#[path = "../../relay/tests/common/uclient.rs"]
mod uclient;

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prometheus::{Prometheus, dashboard, get, get_with, queries, substitute};
use serde_json::{Value as Json, json};
use uclient::{echo_peer, uclient, uclient_with};

const CLUSTER_ENV: &str = "XDPTURN_CLUSTER";
const RELEASE: &str = "xdpturn";
const OPERATOR_NS: &str = "xdpturn-system";
const NS: &str = "calls";
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);
/// The label selector of the example TurnCluster's relay pods.
const RELAY_PODS: &str = "app.kubernetes.io/instance=turn";

/// Dashboard panels that show only incidents this test does not cause, so their queries must
/// be valid but may return nothing: each with what it would take.
const QUIET_PANELS: [&str; 7] = [
    // A relay that is not ready: a draining one leaves its Service's endpoints, and this
    // Prometheus scrapes through the Service (Kubernetes service discovery would see it).
    "Relays not ready",
    // A TLS listener and a failed handshake: the example listens on UDP and TCP only.
    "TLS handshake failures/s",
    // A send the kernel refuses.
    "Send errors/s by transport",
    // A forwarded packet the interface drops.
    "XDP send failures/s by interface",
    // Two allocations of this relay talking to each other, relayed in userspace.
    "Same-relay handovers/s (userspace)",
    // A reconcile that fails (an API server that refuses a write).
    "Reconciles and failures /s",
    // A TurnCluster spec the operator finds invalid.
    "Invalid TurnCluster specs/s",
];

/// Installs (or uninstalls) the chart with Helm v4's library (helm-python-sdk, as
/// tests/helm.rs renders it): `helm install --create-namespace --wait` against the cluster.
const HELM_DRIVER: &str = r#"
import json, sys
import helm_python as helm

req = json.load(sys.stdin)
cfg = helm.Config(kubeconfig_path=req["kubeconfig"], namespace=req["namespace"])
if req["action"] == "install":
    rel = cfg.install(req["chart"], req["release"], req["values"], namespace=req["namespace"],
                      create_namespace=True, wait="watcher", timeout=req["timeout"])
else:
    rel = cfg.uninstall(req["release"], wait="watcher", timeout=req["timeout"])
json.dump({"ok": True, "release": str(rel)[:300]}, sys.stdout)
"#;

/// The cluster `cargo xtask cluster up` made, from its directory.
#[derive(Clone)]
struct Cluster {
    dir: PathBuf,
    netns: String,
    node_ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    kubectl: PathBuf,
}

impl Cluster {
    fn from_env() -> Self {
        let dir = PathBuf::from(std::env::var_os(CLUSTER_ENV).unwrap_or_else(|| {
            panic!(
                "{CLUSTER_ENV} must name a cluster's directory (`cargo xtask cluster up`); \
                 `cargo xtask test` sets it"
            )
        }));
        let node: Json =
            serde_json::from_slice(&std::fs::read(dir.join("node.json")).unwrap()).unwrap();
        let octet = node["octet"].as_u64().unwrap() as u8;
        let kubectl = std::env::var_os("XDPTURN_KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        Self {
            netns: node["netns"].as_str().unwrap().to_owned(),
            node_ip: Ipv4Addr::new(10, 250, octet, 2),
            host_ip: Ipv4Addr::new(10, 250, octet, 1),
            kubectl,
            dir,
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .map_err(|e| format!("running kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn apply(&self, ns: &str, yaml: &str) -> String {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["apply", "-n", ns, "-f", "-"]);
        let out = fed(&mut cmd, yaml.as_bytes());
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pods in `ns` that `selector` selects.
    fn pods(&self, ns: &str, selector: &str) -> Vec<Json> {
        self.get(&["get", "pods", "-n", ns, "-l", selector])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn get(&self, args: &[&str]) -> Json {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).unwrap()
    }

    /// What the cluster says about `ns` when something is not as expected: pods, events, and
    /// the logs of the pods there.
    fn describe(&self, ns: &str) -> String {
        let mut out = String::new();
        for args in [
            vec!["get", "pods", "-o", "wide", "-n", ns],
            vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
            vec![
                "logs",
                "-n",
                ns,
                "--all-containers",
                "--tail=40",
                "-l",
                "app.kubernetes.io/name",
            ],
        ] {
            out.push_str(&format!("\n$ kubectl {}\n", args.join(" ")));
            out.push_str(&self.kubectl(&args).unwrap_or_else(|e| e));
        }
        out
    }

    fn helm(&self, action: &str, values: Json) {
        let request = json!({
            "action": action,
            "kubeconfig": self.kubeconfig(),
            "namespace": OPERATOR_NS,
            "release": RELEASE,
            "chart": workspace_root().join("charts/xdpturn"),
            "values": values,
            "timeout": 300,
        });
        let out = fed(
            Command::new("python3").args(["-c", HELM_DRIVER]),
            request.to_string().as_bytes(),
        );
        assert!(
            out.status.success(),
            "helm {action}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.describe(OPERATOR_NS)
        );
    }
}

/// Watches, in a thread of its own, that the node always has a relay for new clients while a
/// relay is replaced: every 300 ms a STUN Binding request to the relay's port must be answered
/// (three tries, 0.5 s apart) and at least one relay pod must be Ready and not being deleted.
struct AlwaysServed {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Samples>,
}

/// What [`AlwaysServed`] saw: samples taken, and those without an answer or a ready relay
/// (seconds since the watch began, what was missing).
#[derive(Debug, Default)]
struct Samples {
    taken: usize,
    unserved: Vec<(f64, &'static str)>,
}

impl AlwaysServed {
    fn start(cluster: &Cluster, server: SocketAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cluster = cluster.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let began = Instant::now();
            let mut samples = Samples::default();
            let mut id = 0u32;
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                samples.taken += 1;
                let at = began.elapsed().as_secs_f64();
                let answered = (0..3).any(|_| {
                    id += 1;
                    binding(&socket, server, id)
                });
                if !answered {
                    samples
                        .unserved
                        .push((at, "no answer to a STUN Binding request"));
                }
                let ready =
                    cluster.kubectl(&["get", "pods", "-n", NS, "-l", RELAY_PODS, "-o", "json"]);
                let ready = ready
                    .ok()
                    .and_then(|text| serde_json::from_str::<Json>(&text).ok())
                    .map(|pods| {
                        pods["items"]
                            .as_array()
                            .map(|items| {
                                items
                                    .iter()
                                    .filter(|p| {
                                        pod_ready(p) && p["metadata"]["deletionTimestamp"].is_null()
                                    })
                                    .count()
                            })
                            .unwrap_or(0)
                    });
                match ready {
                    Some(0) => samples.unserved.push((at, "no relay pod Ready")),
                    Some(_) => {}
                    // The API server did not answer: not the relays' doing; the next sample
                    // looks again.
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            samples
        });
        Self { stop, thread }
    }

    fn finish(self) -> Samples {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.join().unwrap()
    }
}

/// Sends a STUN Binding request (RFC 8489, transaction `id`) to `server`: whether a success
/// response to it came back within the socket's read timeout.
fn binding(socket: &std::net::UdpSocket, server: SocketAddr, id: u32) -> bool {
    let mut request = [0u8; 20];
    request[..2].copy_from_slice(&0x0001u16.to_be_bytes());
    request[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    request[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    request[16..20].copy_from_slice(&id.to_be_bytes());
    if socket.send_to(&request, server).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        if from == server && n >= 20 && buf[..2] == [0x01, 0x01] && buf[8..20] == request[8..20] {
            return true;
        }
    }
    false
}

/// Whether the pod's Ready condition is True.
fn pod_ready(pod: &Json) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Runs `cmd` with `input` on its stdin; its output.
fn fed(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Polls `check` every half second until it gives a value or `timeout` passes.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {} s",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The sum of every series of `name` whose labels contain all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn secret_value(cluster: &Cluster, name: &str, key: &str) -> String {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(cluster.get(&["get", "secret", name, "-n", NS])).unwrap();
    String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
}

/// The example TurnCluster named `name` with what this node needs: its address, the host's end
/// of its link as a peer the relay may reach, a short drain; and `extra` (YAML spec fields).
fn example_for(cluster: &Cluster, name: &str, extra: &str) -> String {
    let example =
        std::fs::read_to_string(workspace_root().join("examples/turncluster.yaml")).unwrap();
    let mut docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&example)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let tc = docs
        .iter_mut()
        .find(|d| d["kind"] == "TurnCluster")
        .unwrap();
    tc["metadata"]["name"] = name.into();
    let spec = tc["spec"].as_mapping_mut().unwrap();
    let patch: serde_yaml::Value = serde_yaml::from_str(&format!(
        "publicAddress: {{policy: Explicit, addresses: ['{node}']}}\n\
         peers: {{allow: ['{host}/32']}}\n\
         drain: {{timeoutSeconds: 30, preStopDelaySeconds: 2}}\n\
         {extra}",
        node = cluster.node_ip,
        host = cluster.host_ip,
    ))
    .unwrap();
    for (k, v) in patch.as_mapping().unwrap() {
        spec.insert(k.clone(), v.clone());
    }
    docs.iter()
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

fn condition(tc: &Json, kind: &str) -> Option<String> {
    tc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

#[test]
#[ignore = "needs a real node (cargo xtask cluster); cargo xtask test runs it"]
fn a_turncluster_on_a_real_node_carries_calls() {
    let cluster = Cluster::from_env();

    // The chart, as a user installs it: default values, images by their default names.
    let installed = Instant::now();
    cluster.helm("install", json!({}));
    let operator_ready = eventually("the operator's pod Ready", Duration::from_secs(180), || {
        cluster
            .pods(OPERATOR_NS, "app.kubernetes.io/component=operator")
            .iter()
            .any(pod_ready)
            .then(|| installed.elapsed())
    });
    println!(
        "cluster: chart installed, operator Ready {:.1} s after helm install began",
        operator_ready.as_secs_f64()
    );

    cluster.kubectl_ok(&["create", "namespace", NS]);
    let applied = Instant::now();
    // XDP on the node's interface (the veth the test made for the node).
    cluster.apply(
        NS,
        &example_for(
            &cluster,
            "turn",
            "xdp: {enabled: true, interfaces: [eth0]}\n",
        ),
    );
    let tc = eventually("the TurnCluster Ready", Duration::from_secs(240), || {
        let tc = cluster.get(&["get", "turncluster", "turn", "-n", NS]);
        (condition(&tc, "Ready").as_deref() == Some("True")).then_some(tc)
    });
    let ready_after = applied.elapsed();
    println!(
        "cluster: kubectl apply -> TurnCluster Ready with its relay pod Ready in {:.1} s",
        ready_after.as_secs_f64()
    );
    let relay_pods = cluster.pods(NS, RELAY_PODS);
    assert_eq!(
        relay_pods.len(),
        1,
        "one relay on the one node: {relay_pods:?}"
    );
    assert_eq!(relay_pods[0]["status"]["phase"], "Running");
    let urls: Vec<String> = tc["status"]["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["urls"].as_array().unwrap().clone())
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert!(
        urls.contains(&format!("turn:{}:3478?transport=udp", cluster.node_ip)),
        "{urls:?}"
    );
    // The table `kubectl get tc` prints.
    println!("{}", cluster.kubectl_ok(&["get", "tc", "-n", NS]));

    // Prometheus from Debian, inside the node (where Service addresses route), scraping the
    // chart's operator metrics Service and the TurnCluster's relay metrics Service.
    let cluster_ip = |ns: &str, name: &str| -> Ipv4Addr {
        cluster
            .kubectl_ok(&[
                "get",
                "service",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ])
            .parse()
            .unwrap()
    };
    let prom_dir = cluster.dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_netns = format!("--net=/run/netns/{}", cluster.netns);
    let prom = Prometheus::start_with(
        &prom_dir,
        &[
            (
                "operator",
                SocketAddr::from((cluster_ip(OPERATOR_NS, "xdpturn-operator-metrics"), 8080)),
            ),
            (
                "relay",
                SocketAddr::from((cluster_ip(NS, "turn-metrics"), 9641)),
            ),
        ],
        &["nsenter", &prom_netns],
        cluster.node_ip.into(),
    );
    prom.wait_for("xdpturn_ready", "the relay scraped through its Service");
    prom.wait_for(
        "xdpturn_operator_leader",
        "the operator scraped through its Service",
    );

    let server = SocketAddr::from((cluster.node_ip, 3478));
    let metrics = SocketAddr::from((cluster.node_ip, 9641));
    let scrape = || get(metrics, "/metrics").1;
    assert_eq!(
        metric_sum(&scrape(), "xdpturn_xdp_attached", &[]),
        1.0,
        "XDP attached to the node's interface:\n{}",
        scrape()
    );

    // Calls: REST credentials signed with the Secret's shared secret (uclient -W), over UDP and
    // TCP, to the echo peer on the host's end of the node's link.
    let shared = secret_value(&cluster, "turn-auth", "secret");
    let token = secret_value(&cluster, "turn-api", "token");
    let (_peer, peer) = echo_peer(&cluster.host_ip.to_string());
    let rest = ["-W", shared.as_str(), "-u", "alice"];
    let traffic = ["-m", "4", "-n", "250", "-l", "120"];
    for (transport, extra) in [("UDP", &[][..]), ("TCP", &["-t"][..])] {
        let stats = uclient(
            server,
            peer,
            &[extra, &rest, &traffic].concat(),
            TOOL_TIMEOUT,
        );
        stats.assert_all_arrived(1000, &cluster.describe(NS));
        println!(
            "cluster: uclient over {transport} through the relay pod: {} sent, {} received, 0 lost",
            stats.sent, stats.received
        );
    }

    // A credential from the relays' API, with the token from the TurnCluster's Secret.
    let (status, body) = get_with(
        metrics,
        "/api/v1/credentials?user=bob&ttl=600",
        Some(&token),
    );
    assert_eq!(status, 200, "{body}");
    let creds: Json = serde_json::from_str(&body).unwrap();
    let (user, password) = (
        creds["username"].as_str().unwrap(),
        creds["password"].as_str().unwrap(),
    );
    let stats = uclient(
        server,
        peer,
        &[&["-u", user, "-w", password][..], &traffic].concat(),
        TOOL_TIMEOUT,
    );
    stats.assert_all_arrived(1000, &cluster.describe(NS));

    // The kernel's share: channel data forwarded by the XDP program, counted by the relay.
    let text = scrape();
    let kernel = metric_sum(
        &text,
        "xdpturn_relayed_packets_total",
        &["datapath=\"xdp\""],
    );
    let user_space = metric_sum(
        &text,
        "xdpturn_relayed_packets_total",
        &["datapath=\"userspace\""],
    );
    println!(
        "cluster: relayed packets: {kernel} in the kernel, {user_space} in userspace ({:.0} % in the kernel)",
        100.0 * kernel / (kernel + user_space).max(1.0)
    );
    assert!(kernel > 0.0, "no packet went through the kernel:\n{text}");

    // What users get wrong shows up too: a credential signed with another secret (401 and an
    // authentication failure), a peer the policy denies (403), more allocations than the
    // user's quota, a datagram that is no STUN (dropped and counted).
    let stats = uclient(
        server,
        peer,
        &[
            "-W",
            "not-the-secret",
            "-u",
            "mallory",
            "-m",
            "1",
            "-n",
            "5",
        ],
        TOOL_TIMEOUT,
    );
    assert_eq!(stats.received, 0, "{stats:?}");
    let denied = SocketAddr::from(([127, 0, 0, 1], peer.port()));
    let stats = uclient(
        server,
        denied,
        &[&rest[..], &["-m", "1", "-n", "5"]].concat(),
        TOOL_TIMEOUT,
    );
    assert_eq!(stats.received, 0, "a loopback peer is denied: {stats:?}");
    let stats = uclient(
        server,
        peer,
        &["-W", shared.as_str(), "-u", "quota", "-m", "12", "-n", "5"],
        TOOL_TIMEOUT,
    );
    assert!(
        stats.text.contains("error 486"),
        "12 allocations of one user exceed userQuota 10: {stats:?}"
    );
    let junk = std::net::UdpSocket::bind((cluster.host_ip, 0)).unwrap();
    junk.send_to(b"this is not STUN, nor ChannelData", server)
        .unwrap();

    // A change that replaces the relay pod (its resources), made while a call is relayed: a new
    // revision's relay starts next to the old one on the node and takes its ports over; once
    // it is ready the operator deletes the old revision, whose relay drains; the call loses
    // nothing.
    let call = {
        // A user of its own: the user quota (10) is spent by the runs above.
        let rest: Vec<String> = ["-W", shared.as_str(), "-u", "carol"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        std::thread::spawn(move || {
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            uclient(
                server,
                peer,
                &[&rest[..], &["-m", "1", "-n", "1500", "-l", "120"]].concat(),
                TOOL_TIMEOUT,
            )
        })
    };
    std::thread::sleep(Duration::from_secs(5));
    let old_pod = relay_pods[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let watch = AlwaysServed::start(&cluster, server);
    let updated = Instant::now();
    cluster.kubectl_ok(&[
        "patch",
        "turncluster",
        "turn",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"cpu":"20m","memory":"32Mi"}}}}"#,
    ]);
    let new_pod = eventually("a new relay pod Ready", Duration::from_secs(240), || {
        cluster.pods(NS, RELAY_PODS).iter().find_map(|p| {
            let name = p["metadata"]["name"].as_str()?;
            (name != old_pod && pod_ready(p)).then(|| name.to_owned())
        })
    });
    let new_ready = updated.elapsed();
    eventually(
        "the old relay pod draining",
        Duration::from_secs(60),
        || {
            let pod = cluster.get(&["get", "pod", &old_pod, "-n", NS]);
            pod["metadata"]["deletionTimestamp"]
                .is_string()
                .then_some(())
        },
    );
    println!(
        "cluster: relay replaced ({old_pod} -> {new_pod}): the new one Ready {:.1} s and the \
         old one draining {:.1} s after the change",
        new_ready.as_secs_f64(),
        updated.elapsed().as_secs_f64()
    );
    let stats = call.join().unwrap();
    stats.assert_all_arrived(1500, &cluster.describe(NS));
    println!(
        "cluster: a call in progress during the relay's replacement: {} sent, {} received, 0 lost",
        stats.sent, stats.received
    );
    // The old relay drains (30 s at most) and its pod goes; all that time, and before, the node
    // had a relay serving new clients.
    eventually("the old relay pod gone", Duration::from_secs(120), || {
        cluster
            .kubectl(&["get", "pod", &old_pod, "-n", NS])
            .is_err()
            .then_some(())
    });
    let samples = watch.finish();
    assert!(
        samples.unserved.is_empty(),
        "moments without a relay for new clients during the update ({} of {} samples): {:?}{}",
        samples.unserved.len(),
        samples.taken,
        samples.unserved,
        cluster.describe(NS)
    );
    println!(
        "cluster: a relay served new clients at every one of {} samples (every ~0.3 s) from the \
         change until the old relay was gone {:.1} s after it",
        samples.taken,
        updated.elapsed().as_secs_f64()
    );
    // The new relay has the fast path once the old one's program has left the interface.
    eventually(
        "XDP attached by the new relay",
        Duration::from_secs(30),
        || (metric_sum(&scrape(), "xdpturn_xdp_attached", &[]) == 1.0).then_some(()),
    );
    let kernel_before = metric_sum(
        &scrape(),
        "xdpturn_relayed_packets_total",
        &["datapath=\"xdp\""],
    );
    let stats = uclient(server, peer, &[&rest[..], &traffic].concat(), TOOL_TIMEOUT);
    stats.assert_all_arrived(1000, &cluster.describe(NS));
    let kernel_after = metric_sum(
        &scrape(),
        "xdpturn_relayed_packets_total",
        &["datapath=\"xdp\""],
    );
    println!(
        "cluster: a call through the new relay: {} of its packets in the kernel",
        kernel_after - kernel_before
    );
    assert!(
        kernel_after > kernel_before,
        "the new relay relays in the kernel once it has the interface"
    );

    // Prometheus, scraping through the chart's and the TurnCluster's metrics Services from
    // inside the node, has every series the dashboard shows (over the test's time, as the
    // dashboard's graphs show them).
    std::thread::sleep(Duration::from_secs(3));
    let panels = queries(&dashboard(&workspace_root()));
    let mut quiet = Vec::new();
    for (title, expr) in &panels {
        let query = format!("max_over_time(({})[30m:1s])", substitute(expr));
        let series = prom.series(&query);
        if series.is_empty() {
            quiet.push(title.clone());
            assert!(
                QUIET_PANELS.contains(&title.as_str()),
                "panel {title:?} has no data: {query}"
            );
        }
    }
    println!(
        "cluster: {} dashboard queries evaluated, {} with data; quiet as expected: {quiet:?}",
        panels.len(),
        panels.len() - quiet.len()
    );
    drop(prom);

    // Deleting the TurnCluster removes everything the operator made.
    cluster.kubectl_ok(&["delete", "turncluster", "turn", "-n", NS, "--wait=true"]);
    eventually(
        "the TurnCluster's objects gone",
        Duration::from_secs(180),
        || {
            let left = cluster
                .kubectl(&[
                    "get",
                    "daemonsets,deployments,services,configmaps,pods",
                    "-n",
                    NS,
                    "-l",
                    RELAY_PODS,
                    "-o",
                    "name",
                ])
                .ok()?;
            left.trim().is_empty().then_some(())
        },
    );

    // A Deployment behind its Service: the relay on the pod network, reached at the Service's
    // address through kube-proxy by a client inside the node (where Service addresses route).
    let deployment = example_for(
        &cluster,
        "turn-d",
        "placement: {mode: Deployment, replicas: 1}\n",
    );
    let applied = Instant::now();
    cluster.apply(NS, &deployment);
    eventually(
        "the Deployment-mode TurnCluster Ready",
        Duration::from_secs(240),
        || {
            let tc = cluster.get(&["get", "turncluster", "turn-d", "-n", NS]);
            (condition(&tc, "Ready").as_deref() == Some("True")).then_some(())
        },
    );
    println!(
        "cluster: Deployment-mode TurnCluster Ready {:.1} s after apply",
        applied.elapsed().as_secs_f64()
    );
    let service = SocketAddr::from((cluster_ip(NS, "turn-d"), 3478));
    let netns = format!("--net=/run/netns/{}", cluster.netns);
    // Ready says the relay is; kube-proxy programs the Service's endpoint a moment later (until
    // then it rejects, and uclient's send fails with EPERM). Short calls, a user each (the
    // quota), until one goes through.
    let mut attempt = 0;
    eventually(
        "kube-proxy serving the Deployment's Service",
        Duration::from_secs(60),
        || {
            attempt += 1;
            let user = format!("probe{attempt}");
            let probe = uclient_with(
                &["nsenter", &netns],
                service,
                peer,
                &["-W", shared.as_str(), "-u", &user, "-m", "1", "-n", "5"],
                TOOL_TIMEOUT,
            );
            (probe.received > 0).then_some(())
        },
    );
    let stats = uclient_with(
        &["nsenter", &netns],
        service,
        peer,
        &[&rest[..], &traffic].concat(),
        TOOL_TIMEOUT,
    );
    stats.assert_all_arrived(1000, &cluster.describe(NS));
    println!(
        "cluster: uclient through the Deployment's Service {service}: {} sent, {} received, 0 lost",
        stats.sent, stats.received
    );
    cluster.kubectl_ok(&["delete", "turncluster", "turn-d", "-n", NS, "--wait=true"]);

    cluster.helm("uninstall", json!({}));
    let _ = cluster.kubectl(&["delete", "namespace", NS, "--wait=false"]);
}
