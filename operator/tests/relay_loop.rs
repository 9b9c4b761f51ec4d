//! The loop closed without a kubelet: the operator reconciles the example TurnCluster against a
//! real Kubernetes 1.20 API server (tests/envtest), and this test then does what the kubelet
//! would do with the DaemonSet it wrote: lays the pod's volumes (the rendered ConfigMap, the
//! referenced Secrets) out on disk as their mounts would, runs the real relay binary with the
//! container's arguments, and allocates through it with coturn's `turnutils_uclient` against
//! `turnutils_peer`, over UDP and TCP, with the credentials the TurnCluster's Secrets make.
//!
//! Only what cannot be the same on a test machine is changed in the rendered `relay.toml`, and
//! [`adapt_for_the_test_machine`] lists each change. Everything else (realm, the auth secret
//! files, the credentials API token file and URIs, quotas, peer denials) is the operator's, and
//! the test checks that the relay serves it: the realm in its 401, REST credentials signed with
//! the Secret's shared secret, credentials from its API with the Secret's token.
//!
//! And the way back: with `spec.xdp.enabled`, a relay run from the rendered pod that cannot load
//! the fast path says so on its `/readyz`, and the operator, bound to exactly the chart's RBAC,
//! reads it and says so in the TurnCluster's status (Degraded, reason XdpUnavailable) and in a
//! Warning event.
//!
//! Needs XDPTURN_ENVTEST_BIN (`cargo xtask envtest`), coturn's tools on PATH, and the relay
//! binary next to this test's (`cargo test --workspace`, as `cargo xtask test` runs it, builds
//! it; alone, `cargo build -p relay` first, or name it in XDPTURN_RELAY_BIN). Clusters are
//! heavy: the tests here take turns.

#![allow(clippy::unwrap_used)]

mod envtest;
// The relay and coturn's tools, started as the relay's own tests start them.
#[allow(dead_code)]
#[path = "../../relay/tests/common/launch.rs"]
mod launch;
#[allow(dead_code)]
#[path = "../../relay/tests/common/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "../../relay/tests/common/uclient.rs"]
mod uclient;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use api::{ConditionStatus, RelayConfig, TurnCluster};
use envtest::{Operator, Options, TestCluster, eventually, operator_client, runtime};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use launch::{launch, metric_value};
use process::Guard;
use uclient::{Stats, echo_peer, uclient};

const NS: &str = "loop";
/// The relay binary, when not next to this test's.
const RELAY_BIN_ENV: &str = "XDPTURN_RELAY_BIN";
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The relay binary cargo built with this test: `xdpturn-relay` in the directory above this
/// test executable's `deps/` (the same target directory and profile), or XDPTURN_RELAY_BIN.
fn relay_bin() -> PathBuf {
    if let Some(path) = std::env::var_os(RELAY_BIN_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("xdpturn-relay{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no relay binary at {}: `cargo test --workspace` (as `cargo xtask test` runs it) builds \
         it; with `cargo test -p operator`, run `cargo build -p relay` first, or set \
         {RELAY_BIN_ENV}",
        bin.display()
    );
    bin
}

/// A scratch directory standing in for the pod's filesystem, removed when dropped.
struct Root(PathBuf);

impl Root {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "xdpturn-relay-loop-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Where the pod's absolute `path` is on this machine.
    fn host(&self, path: &Path) -> PathBuf {
        self.0.join(path.strip_prefix("/").unwrap_or(path))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the kubelet does with the relay container's volume mounts: each ConfigMap and Secret
/// volume's keys as files under the mount path (under `root`), each emptyDir as an empty
/// directory. Other volume kinds would need this stand-in to learn them: it fails on them.
async fn mount_volumes(client: &kube::Client, pod: &PodSpec, root: &Root) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let volumes = pod.volumes.clone().unwrap_or_default();
    let container = &pod.containers[0];
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("mount {} names no volume", mount.name));
        assert!(mount.sub_path.is_none(), "subPath mounts: {mount:?}");
        let dir = root.host(Path::new(&mount.mount_path));
        std::fs::create_dir_all(&dir).unwrap();
        let files: BTreeMap<String, Vec<u8>> = if let Some(source) = &volume.config_map {
            assert!(source.items.is_none(), "items: {source:?}");
            let cm = cms.get(&source.name).await.unwrap();
            cm.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect()
        } else if let Some(source) = &volume.secret {
            assert!(source.items.is_none(), "items: {source:?}");
            let name = source.secret_name.as_deref().unwrap();
            let secret = secrets.get(name).await.unwrap_or_else(|e| {
                panic!("the pod mounts Secret {name}, which the kubelet could not read: {e}")
            });
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        } else if volume.empty_dir.is_some() {
            BTreeMap::new()
        } else {
            panic!("volume kind this stand-in for the kubelet does not know: {volume:?}");
        };
        for (key, bytes) in files {
            std::fs::write(dir.join(key), bytes).unwrap();
        }
    }
}

/// The relay port range this test gives the relay: 50 ports below Linux's ephemeral range
/// (32768 up), where the ports the kernel picks for other sockets on the machine (uclient's,
/// the API server's) do not land; which 50 depends on the process id, so that two runs at once
/// rarely share them.
fn port_range() -> (u16, u16) {
    let base = 31_000 + (std::process::id() % 30) as u16 * 50;
    (base, base + 49)
}

/// The rendered config with only what must differ on a test machine changed:
/// - `listen`: `127.0.0.1:0` (one free port for UDP and TCP, which the relay logs) instead of
///   `0.0.0.0:3478` and `[::]:3478`, which another relay (or coturn) may hold and which would
///   expose the test on every interface;
/// - `metrics-listen`: `127.0.0.1:0` instead of `0.0.0.0:9641`, for the same reasons;
/// - `min-port`/`max-port`: [`port_range`] instead of 49152-65535, which overlaps the ports
///   the kernel hands other programs on a test machine (a node keeps its relay ports free);
/// - `allow-peers`: `127.0.0.1` added, because the peer (`turnutils_peer`) is on loopback, which
///   the relay denies by default (a pod's peers are elsewhere);
/// - every file path (auth secret files, users file, API token file, TLS certificate and key):
///   prefixed with `root`, where [`mount_volumes`] put what the pod would see at that path.
fn adapt_for_the_test_machine(rendered: &RelayConfig, root: &Root) -> RelayConfig {
    let mut cfg = rendered.clone();
    cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.metrics_listen = "127.0.0.1:0".parse().unwrap();
    (cfg.min_port, cfg.max_port) = port_range();
    cfg.allow_peers.push("127.0.0.1".into());
    for path in &mut cfg.auth_secret_files {
        *path = root.host(path);
    }
    for path in [
        &mut cfg.users_file,
        &mut cfg.api_token_file,
        &mut cfg.cert,
        &mut cfg.key,
    ]
    .into_iter()
    .flatten()
    {
        *path = root.host(path);
    }
    cfg
}

/// The relay, started as the container would be, with its log collected.
/// The container's environment variables with values (name, value).
fn container_env(container: &Container) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

struct Relay {
    _process: Guard,
    log: Arc<Mutex<Vec<String>>>,
    listener: SocketAddr,
    metrics: SocketAddr,
}

impl Relay {
    /// Runs the relay with the container's `args` and `env`.
    fn start(args: &[String], env: &[(String, String)]) -> Relay {
        Self::start_with(&relay_bin(), args, env)
    }

    /// Runs `program args` with the container's `env`: the relay itself, or a program that
    /// execs it (its PID stays the relay's).
    fn start_with(program: &Path, args: &[String], env: &[(String, String)]) -> Relay {
        let mut cmd = Command::new(program);
        // The container's environment has only its own variables of the relay's: so has this.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("XDPTURN_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let launched = launch(cmd.args(args).env("XDPTURN_LOG", "info"));
        Relay {
            _process: launched.process,
            log: launched.log,
            listener: *launched.listeners.first().expect("a listening line"),
            metrics: launched.metrics,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// A GET on the relay's HTTP listener: (status, body).
fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the relay's metric line starting with `series` (name and labels), or 0.
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = http_get(addr, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    metric_value(&body, series)
}

/// The realm in the relay's answer to an unauthenticated Allocate over UDP (RFC 8656: a 401
/// carrying REALM and NONCE), built and parsed by hand so no STUN library is trusted here.
fn realm_of_401(server: SocketAddr) -> String {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    let tid = *b"relay-loop!!";
    let mut request = vec![0x00, 0x03, 0x00, 0x08]; // Allocate request, 8 bytes of attributes
    request.extend_from_slice(&MAGIC);
    request.extend_from_slice(&tid);
    request.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]); // REQUESTED-TRANSPORT UDP
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let n = (0..10)
        .find_map(|_| {
            sock.send_to(&request, server).unwrap();
            sock.recv(&mut buf).ok()
        })
        .unwrap_or_else(|| panic!("no answer to Allocate from {server}"));
    let msg = &buf[..n];
    assert!(
        n >= 20 && msg[4..8] == MAGIC && msg[8..20] == tid,
        "{msg:?}"
    );
    assert_eq!(msg[..2], [0x01, 0x13], "an Allocate error response");
    let (mut code, mut realm) = (None, None);
    let mut rest = &msg[20..];
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = &rest[4..4 + len];
        match kind {
            0x0009 => code = Some(u16::from(value[2]) * 100 + u16::from(value[3])),
            0x0014 => realm = Some(String::from_utf8(value.to_vec()).unwrap()),
            _ => {}
        }
        rest = &rest[(4 + len).next_multiple_of(4).min(rest.len())..];
    }
    assert_eq!(code, Some(401), "{msg:?}");
    realm.expect("a REALM in the 401")
}

/// Every message sent came back, none lost, and at least `expected` were sent.
fn assert_all_arrived(what: &str, stats: &Stats, expected: u64, relay: &Relay) {
    stats.assert_all_arrived(
        expected,
        &format!("\n{what}: the relay's log:\n{}", relay.log()),
    );
}

fn secret_value(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().unwrap();
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// One cluster at a time: each is an etcd and a kube-apiserver.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn the_rendered_config_runs_a_relay_that_allocates() {
    let _serial = serial();
    runtime().block_on(rendered_config_runs_a_relay());
}

async fn rendered_config_runs_a_relay() {
    let cluster = TestCluster::start_with(Options {
        controller_manager: false,
    })
    .await;
    let admin = cluster.client();
    cluster.install_crd();
    cluster.create_namespace(NS).await;
    let operator = Operator::start(admin.clone(), "relay-loop");

    let applied = Instant::now();
    cluster.kubectl_ok(&["apply", "-n", NS, "-f", "examples/turncluster.yaml"]);
    let tcs: Api<TurnCluster> = Api::namespaced(admin.clone(), NS);
    let dss: Api<DaemonSet> = Api::namespaced(admin.clone(), NS);
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    let tc = tcs.get("turn").await.unwrap();
    let ds = eventually("the relay DaemonSet", Duration::from_secs(30), || async {
        relay_daemonsets(&dss).await.into_iter().next()
    })
    .await;
    let cm = cms.get("turn-relay").await.unwrap();
    println!(
        "relay-loop: example applied -> ConfigMap and DaemonSet in {:.2}s",
        applied.elapsed().as_secs_f64()
    );
    // What the operator wrote is all the rest needs: it may stop (no reconcile undoes the
    // test's changes, which are on disk only).
    operator.stop().await;

    // The kubelet's part: the pod's volumes, as mounted.
    let root = Root::new();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    mount_volumes(&admin, &pod, &root).await;
    let container = &pod.containers[0];
    let args: Vec<String> = container.args.clone().unwrap_or_default();
    // Its settings come from the file alone; the environment names only the pod template's
    // revision (for `/readyz?revision=`, which the readiness probe asks below).
    let env = container_env(container);
    assert!(
        container.command.is_none() && env.iter().all(|(name, _)| name == "XDPTURN_REVISION"),
        "the relay is configured by its file alone: {container:?}"
    );
    let config_arg = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| PathBuf::from(&args[i + 1]))
        .expect("--config FILE in the container's args");
    let config_file = root.host(&config_arg);
    let text = std::fs::read_to_string(&config_file).unwrap_or_else(|e| {
        panic!(
            "--config {} is not in any mounted volume: {e}",
            config_arg.display()
        )
    });
    assert_eq!(text, cm.data.as_ref().unwrap()["relay.toml"]);
    let rendered: RelayConfig = toml::from_str(&text).unwrap();
    assert_eq!(rendered.realm, tc.spec.realm);
    // Every file the rendered config names is one the pod's mounts provide.
    let named_files: Vec<&PathBuf> = rendered
        .auth_secret_files
        .iter()
        .chain(&rendered.users_file)
        .chain(&rendered.api_token_file)
        .chain(&rendered.cert)
        .chain(&rendered.key)
        .collect();
    assert_eq!(
        named_files.len(),
        2,
        "the example's shared secret and API token"
    );
    for file in named_files {
        assert!(
            root.host(file).is_file(),
            "relay.toml names {}, which no volume mount provides",
            file.display()
        );
    }

    // Only what must differ here (see adapt_for_the_test_machine), written over the mounted
    // relay.toml; the container's args are used as they are, their paths under `root`.
    let adapted = adapt_for_the_test_machine(&rendered, &root);
    std::fs::write(&config_file, toml::to_string(&adapted).unwrap()).unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with('/') {
                root.host(Path::new(a)).to_string_lossy().into_owned()
            } else {
                a.clone()
            }
        })
        .collect();
    let started = Instant::now();
    let relay = Relay::start(&args, &env);
    println!(
        "relay-loop: relay started in {:.2}s on {} (metrics {})",
        started.elapsed().as_secs_f64(),
        relay.listener,
        relay.metrics
    );
    // The kubelet's readiness probe, as the pod asks it.
    let probe = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|g| g.path.clone())
        .expect("a readiness probe path");
    let (status, text) = http_get(relay.metrics, &probe, None);
    assert_eq!(status, 200, "{probe}: {text}");
    let other = probe.replace("revision=", "revision=x");
    assert_eq!(
        http_get(relay.metrics, &other, None).0,
        503,
        "{other}: another revision's probe is not this relay's to answer"
    );

    // The realm is the TurnCluster's.
    assert_eq!(realm_of_401(relay.listener), "example.org");

    // REST credentials signed with the shared secret in the TurnCluster's Secret, computed by
    // uclient (-W), over UDP and over TCP; channels (uclient's default) with the echo peer.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let shared = secret_value(&secrets.get("turn-auth").await.unwrap(), "secret");
    let token = secret_value(&secrets.get("turn-api").await.unwrap(), "token");
    let (_peer, peer) = echo_peer("127.0.0.1");
    let rest = ["-W", shared.as_str(), "-u", "alice"];
    let traffic = ["-m", "2", "-n", "100", "-l", "120"];
    let stats = uclient(
        relay.listener,
        peer,
        &[&rest[..], &traffic].concat(),
        TOOL_TIMEOUT,
    );
    assert_all_arrived("UDP, -W shared secret", &stats, 200, &relay);
    println!(
        "relay-loop: UDP: {} sent, {} received, 0 lost ({:.2}s after the relay started)",
        stats.sent,
        stats.received,
        started.elapsed().as_secs_f64()
    );
    let stats = uclient(
        relay.listener,
        peer,
        &[&["-t"][..], &rest, &traffic].concat(),
        TOOL_TIMEOUT,
    );
    assert_all_arrived("TCP, -W shared secret", &stats, 200, &relay);
    println!(
        "relay-loop: TCP: {} sent, {} received, 0 lost",
        stats.sent, stats.received
    );

    // The relays' credentials API, with the token in the TurnCluster's Secret: iceServers with
    // the rendered URIs, and a credential the relay accepts.
    let path = "/api/v1/credentials?user=bob&ttl=600";
    assert_eq!(http_get(relay.metrics, path, Some("wrong-token")).0, 401);
    let (status, body) = http_get(relay.metrics, path, Some(&token));
    assert_eq!(status, 200, "{body}");
    let creds: serde_json::Value = serde_json::from_str(&body).unwrap();
    let urls: Vec<&str> = creds["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["urls"].as_array().unwrap())
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        rendered
            .api_uris
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert!(
        urls.contains(&"turn:203.0.113.10:3478?transport=udp"),
        "{urls:?}"
    );
    let (user, password) = (
        creds["username"].as_str().unwrap(),
        creds["password"].as_str().unwrap(),
    );
    assert!(user.ends_with(":bob"), "{user}");
    let stats = uclient(
        relay.listener,
        peer,
        &[&["-u", user, "-w", password][..], &traffic].concat(),
        TOOL_TIMEOUT,
    );
    assert_all_arrived("UDP, a credential from the API", &stats, 200, &relay);

    // A secret the TurnCluster does not reference is refused: the credentials above passed
    // because of the rendered config, not in spite of it.
    let stats = uclient(
        relay.listener,
        peer,
        &[
            "-W",
            "not-the-turnclusters-secret",
            "-u",
            "alice",
            "-m",
            "1",
            "-n",
            "10",
            "-l",
            "120",
        ],
        TOOL_TIMEOUT,
    );
    assert!(
        stats.received == 0 && stats.text.contains("Cannot complete Allocation"),
        "{stats:?}"
    );
    let failures = metric(
        relay.metrics,
        r#"xdpturn_auth_failures_total{reason="wrong_password"}"#,
    );
    assert!(failures >= 1.0, "{failures}");
    println!(
        "relay-loop: done {:.2}s after apply",
        applied.elapsed().as_secs_f64()
    );
    drop(relay);
}

/// This process's user id (from /proc/self/status).
fn uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The relay DaemonSets of the example's TurnCluster (`turn-relay-<revision>`), by its labels.
async fn relay_daemonsets(dss: &Api<DaemonSet>) -> Vec<DaemonSet> {
    dss.list(&ListParams::default().labels("app.kubernetes.io/instance=turn"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[test]
fn a_relay_without_the_fast_path_makes_the_turncluster_say_so() {
    let _serial = serial();
    runtime().block_on(relay_without_the_fast_path());
}

async fn relay_without_the_fast_path() {
    const POD: &str = "turn-relay-x7k2p";
    const NODE: &str = "node-1";
    let cluster = TestCluster::start_with(Options {
        controller_manager: false,
    })
    .await;
    let admin = cluster.client();
    cluster.install_crd();
    cluster.create_namespace(NS).await;
    // Exactly the chart's RBAC: listing the relay pods is part of it.
    let operator = Operator::start(operator_client(&cluster).await, "relay-loop-xdp");

    cluster.kubectl_ok(&["apply", "-n", NS, "-f", "examples/turncluster.yaml"]);
    let tcs: Api<TurnCluster> = Api::namespaced(admin.clone(), NS);
    let xdp = serde_json::json!({"spec": {"xdp": {"enabled": true, "interfaces": ["eth0"]}}});
    tcs.patch("turn", &PatchParams::default(), &Patch::Merge(&xdp))
        .await
        .unwrap();
    let dss: Api<DaemonSet> = Api::namespaced(admin.clone(), NS);
    let ds = eventually(
        "the XDP relay DaemonSet",
        Duration::from_secs(30),
        || async {
            // A new revision's DaemonSet, next to the one from before XDP was asked for.
            relay_daemonsets(&dss).await.into_iter().find(|ds| {
                let template = ds.spec.as_ref().map(|s| &s.template.metadata);
                template
                    .and_then(|m| m.as_ref()?.annotations.as_ref())
                    .is_some_and(|a| a.contains_key(operator::build::XDP_ANNOTATION))
            })
        },
    )
    .await;
    let ds_name = ds.name_any();

    // The kubelet's part: the pod's volumes and its relay. What differs from the pod, besides
    // adapt_for_the_test_machine: the relay runs as the pod's non-root user with no capability
    // at all (so that it cannot attach anything to this machine's interfaces): the fast path
    // cannot load, as in a pod without the capabilities it needs.
    let root = Root::new();
    let template = ds.spec.unwrap().template;
    let pod = template.spec.clone().unwrap();
    mount_volumes(&admin, &pod, &root).await;
    let args: Vec<String> = pod.containers[0].args.clone().unwrap_or_default();
    let config_arg = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| PathBuf::from(&args[i + 1]))
        .expect("--config FILE in the container's args");
    let config_file = root.host(&config_arg);
    let rendered: RelayConfig =
        toml::from_str(&std::fs::read_to_string(&config_file).unwrap()).unwrap();
    assert_eq!(rendered.xdp_interfaces, ["eth0"]);
    let adapted = adapt_for_the_test_machine(&rendered, &root);
    std::fs::write(&config_file, toml::to_string(&adapted).unwrap()).unwrap();
    let (mut program, mut relay_args) = (relay_bin(), Vec::new());
    if uid() == Some(0) {
        program = PathBuf::from("setpriv");
        relay_args.extend(
            [
                "--reuid=65532",
                "--regid=65532",
                "--clear-groups",
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
            ]
            .map(String::from),
        );
        relay_args.push(relay_bin().to_string_lossy().into_owned());
    }
    relay_args.extend(args.iter().map(|a| {
        if a.starts_with('/') {
            root.host(Path::new(a)).to_string_lossy().into_owned()
        } else {
            a.clone()
        }
    }));
    let relay = Relay::start_with(&program, &relay_args, &container_env(&pod.containers[0]));
    let (status, readyz) = http_get(relay.metrics, "/readyz", None);
    assert_eq!(status, 200, "{readyz}");
    let reason = readyz
        .split_once("xdp unavailable: ")
        .and_then(|(_, r)| r.split(')').next())
        .unwrap_or_else(|| {
            panic!(
                "the relay says its fast path is down: {readyz:?}\n{}",
                relay.log()
            )
        })
        .to_owned();
    assert!(
        relay.log().contains("XDP fast path unavailable"),
        "{}",
        relay.log()
    );

    // The pod as the API server would hold it once the kubelet runs it: the template's, on a
    // node, running and ready, its IP this machine's loopback and its metrics port the relay's.
    let mut spec = pod.clone();
    spec.node_name = Some(NODE.into());
    let host_network = spec.host_network == Some(true);
    let metrics_port = i32::from(relay.metrics.port());
    for port in spec.containers[0].ports.iter_mut().flatten() {
        if port.name.as_deref() == Some("metrics") {
            port.container_port = metrics_port;
            // On the node's network the two are one.
            if host_network || port.host_port.is_some() {
                port.host_port = Some(port.container_port);
            }
        }
    }
    // With host networking the container declares no ports: the probes name the port by number.
    let container = &mut spec.containers[0];
    for probe in [
        &mut container.readiness_probe,
        &mut container.liveness_probe,
    ] {
        if let Some(get) = probe.as_mut().and_then(|p| p.http_get.as_mut())
            && matches!(get.port, IntOrString::Int(_))
        {
            get.port = IntOrString::Int(metrics_port);
        }
    }
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.name = Some(POD.into());
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    pods.create(
        &PostParams::default(),
        &Pod {
            metadata: meta,
            spec: Some(spec),
            status: None,
        },
    )
    .await
    .unwrap();
    let running = serde_json::json!({"status": {"phase": "Running", "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(POD, &PatchParams::default(), &Patch::Merge(&running))
        .await
        .unwrap();
    // And the DaemonSet's status, as its controller would write it: this wakes the operator.
    let ds = dss.get(&ds_name).await.unwrap();
    let ready = serde_json::json!({"status": {
        "currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberMisscheduled": 0,
        "numberReady": 1, "numberAvailable": 1, "updatedNumberScheduled": 1,
        "observedGeneration": ds.metadata.generation}});
    dss.patch_status(&ds_name, &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();

    let degraded = eventually(
        "Degraded XdpUnavailable",
        Duration::from_secs(60),
        || async {
            let tc = tcs.get("turn").await.ok()?;
            let d = tc.status?.condition("Degraded")?.clone();
            (d.reason == "XdpUnavailable").then_some(d)
        },
    )
    .await;
    assert_eq!(degraded.status, ConditionStatus::True);
    assert!(
        degraded
            .message
            .contains(&format!("unavailable on 1 of 1 relays, which relay everything in userspace: {POD} on {NODE} ({reason})")),
        "{}",
        degraded.message
    );
    let tc = tcs.get("turn").await.unwrap();
    let ready = tc.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::True, "RelaysReady"),
        "the relay serves, in userspace"
    );
    let events: Api<Event> = Api::namespaced(admin.clone(), NS);
    let warning = eventually(
        "the XdpUnavailable event",
        Duration::from_secs(30),
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("XdpUnavailable"))
        },
    )
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(
        warning.regarding.and_then(|r| r.name).as_deref(),
        Some("turn")
    );
    assert_eq!(warning.note.as_deref(), Some(degraded.message.as_str()));
    println!("relay-loop: {}", degraded.message);
    operator.stop().await;
    drop(relay);
}
