//! The chart's Grafana dashboard (charts/xdpturn/files/dashboards/xdpturn.json) against a real
//! Prometheus: Debian's `prometheus` scrapes, every second, the real relay binary and the real
//! operator binary; traffic makes every series a panel shows exist (coturn's
//! `turnutils_uclient` allocating and relaying through `turnutils_peer`, a wrong password, a
//! peer the policy refuses, junk on the wire, an allocation deleted, a drain); then every query
//! of every panel is evaluated through Prometheus' HTTP API, as Grafana would send it, and must
//! return at least one series. A failure names the panel and the query.
//!
//! The relay runs with an XDP interface that does not exist: the fast path is asked for and
//! unavailable, so the fallback series exists while everything is relayed in userspace (the
//! kernel's share is 0). The few panels whose series only exist while the XDP program is
//! attached are listed in [`XDP_ATTACHED_ONLY`]; their queries must be valid (Prometheus
//! answers `success`) but may be empty here. relay/tests/xdp_e2e.rs runs the attached fast path.
//!
//! The operator runs with a kubeconfig whose API server does not answer: its metrics exist from
//! start-up (at zero), which is what its panels need; it reconciles nothing.
//!
//! Needs coturn's tools and `prometheus` (`cargo xtask test` installs them), and the operator
//! binary next to the relay's (`cargo test --workspace`, as `cargo xtask test` runs it, builds
//! it; alone, `cargo build -p operator` first, or name it in XDPTURN_OPERATOR_BIN).

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prometheus::{Prometheus, dashboard, queries, substitute, value_where};
use common::turn::TurnClient;
use common::uclient::{echo_peer, uclient};
use common::{Guard, Relay, TempDir, free_port, http_get, relay_bin};
use serde_json::Value;

const REALM: &str = "example.org";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Panels whose series exist only while the XDP program is attached to an interface, which this
/// test does not do: for these, a valid query is enough.
const XDP_ATTACHED_ONLY: [&str; 3] = [
    // xdpturn_xdp_interface_mode: set per interface the program attached to.
    "XDP interface mode",
    // xdpturn_xdp_forwarded_packets_total: counted from the program's own counters.
    "XDP forwarded packets/s by kind",
    // xdpturn_xdp_send_failures_total: per attached interface, while the program forwards.
    "XDP send failures/s by interface",
];

/// A relay port range of its own per run, as the other TURN tests choose theirs.
fn port_range() -> (String, String) {
    let base = 40_000 + (std::process::id() % 100) as u16 * 100;
    (base.to_string(), (base + 99).to_string())
}

/// The operator binary: `xdpturn-operator` next to the relay binary (one target directory and
/// profile), or XDPTURN_OPERATOR_BIN.
fn operator_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("XDPTURN_OPERATOR_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let path = Path::new(relay_bin()).with_file_name("xdpturn-operator");
    assert!(
        path.is_file(),
        "{} is not built: `cargo build -p operator` (or `cargo test --workspace`), or name the \
         binary in XDPTURN_OPERATOR_BIN",
        path.display()
    );
    path
}

/// The operator with a kubeconfig whose API server does not answer, serving its metrics on
/// `metrics`.
fn start_operator(dir: &Path, metrics: SocketAddr) -> Guard {
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster:\n    server: \
             https://{closed}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: none\n  \
             context:\n    cluster: none\n    user: none\n    namespace: default\n\
             current-context: none\nusers:\n- name: none\n  user:\n    token: none\n"
        ),
    )
    .expect("write the kubeconfig");
    let log = File::create(dir.join("operator.log")).expect("operator log");
    let child = Command::new(operator_bin())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--leader-elect", "false"])
        .args(["--metrics-addr", &metrics.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the operator");
    let mut guard = Guard(child);
    wait_http(&mut guard, metrics, "/metrics", &dir.join("operator.log"));
    guard
}

/// Waits until `path` on `addr` answers 200, or panics with the process' log if it exits or
/// takes longer than [`TIMEOUT`].
fn wait_http(process: &mut Guard, addr: SocketAddr, path: &str, log: &Path) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && http_get(addr, path).0 == 200
        {
            return;
        }
        let exited = process.0.try_wait().ok().flatten();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "{addr}{path} did not answer (exit status {exited:?}); log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_panel_returns_data_from_a_real_prometheus() {
    let dashboard = dashboard(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let queries = queries(&dashboard);
    for title in XDP_ATTACHED_ONLY {
        assert!(
            queries.iter().any(|(t, _)| t == title),
            "XDP_ATTACHED_ONLY names {title:?}, which is no panel of the dashboard"
        );
    }
    let dir = TempDir::new("dashboard");

    let (min, max) = port_range();
    let missing = format!("nosuch{}", std::process::id() % 100_000);
    let relay = Relay::start(&[
        "--realm",
        REALM,
        "--user",
        "alice:wonderland",
        "--allow-peer",
        "127.0.0.1",
        "--min-port",
        &min,
        "--max-port",
        &max,
        "--xdp-interface",
        &missing,
        "--drain-timeout",
        "120",
    ]);
    let operator_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _operator = start_operator(dir.path(), operator_metrics);
    let prometheus = Prometheus::start(
        dir.path(),
        &[("relay", relay.metrics), ("operator", operator_metrics)],
    );
    prometheus.wait_for(
        r#"count_over_time(up{job="relay"}[1m]) >= 3 and on() count_over_time(up{job="operator"}[1m]) >= 3"#,
        "three scrapes of each",
    );
    for job in ["relay", "operator"] {
        let up = prometheus.series(&format!(r#"up{{job="{job}"}}"#));
        assert_eq!(
            value_where(&up, "job", job),
            Some(1.0),
            "{job} scraped: {up:?}"
        );
    }

    // Traffic. Allocations and relayed data, over channels (coturn's client and echo peer).
    let (_peer, peer) = echo_peer("127.0.0.1");
    let stats = uclient(
        relay.v4(),
        peer,
        &[
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-m",
            "2",
            "-n",
            "50",
            "-l",
            "120",
        ],
        TIMEOUT,
    );
    stats.assert_all_arrived(100, "");
    // An allocation made and deleted (it ends), and one that stays (the drain waits for it).
    let client =
        |password: &str| TurnClient::new(relay.v4(), "127.0.0.1:0", "alice", password, REALM);
    let mut gone = client("wonderland");
    gone.allocate().expect("allocate");
    assert_eq!(gone.delete(), None, "deleted");
    let mut stays = client("wonderland");
    stays.allocate().expect("allocate");
    // A peer the built-in policy refuses: 403. The request counter's series for a 403 starts
    // at the first one (as Prometheus sees it: no increase), so a second one after a scrape
    // shows in the rate.
    let denied: SocketAddr = "10.0.0.1:3478".parse().expect("addr");
    assert_eq!(stays.create_permission(denied), Some(403));
    prometheus.wait_for(
        r#"xdpturn_requests_total{method="create_permission",result="403"}"#,
        "the first 403 scraped",
    );
    assert_eq!(stays.create_permission(denied), Some(403));
    // A wrong password: 401, an authentication failure.
    assert_eq!(client("not the password").allocate(), Err(Some(401)));
    // Junk on the wire (the first two bits 11: neither STUN nor ChannelData): dropped,
    // not_stun.
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..5 {
        junk.send_to(b"\xffthis is not STUN at all", relay.v4())
            .expect("send");
    }
    prometheus.wait_for(
        r#"xdpturn_dropped_packets_total{reason="not_stun",transport="udp"} >= 5 and on() xdpturn_auth_failures_total{reason="wrong_password"} >= 1"#,
        "the traffic scraped",
    );

    // A drain: SIGTERM, the relay is not ready and serves the allocation that stays.
    relay.signal("TERM");
    relay.wait_for_log(&["draining", "SIGTERM"], TIMEOUT);
    prometheus.wait_for("xdpturn_ready == 0", "the drain scraped");

    // Every query of every panel, as Grafana would send it.
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for (title, expr) in &queries {
        let query = substitute(expr);
        let answer = prometheus.query(&query);
        if answer["status"] != "success" {
            failures.push(format!("panel {title:?}: {query}\n  not valid: {answer}"));
            continue;
        }
        let series = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let attached_only = XDP_ATTACHED_ONLY.contains(&title.as_str());
        if series.is_empty() && !attached_only {
            failures.push(format!("panel {title:?}: {query}\n  returned no series"));
        }
        println!(
            "{title}: {} series{}",
            series.len(),
            if attached_only {
                " (valid query; its series need XDP attached)"
            } else {
                ""
            }
        );
        results.push((title.clone(), series));
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries failed:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );

    // And the data is the traffic above, not only series at zero.
    let panel = |title: &str| -> &[Value] {
        &results
            .iter()
            .find(|(t, _)| t == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"))
            .1
    };
    let positive = |title: &str, label: &str, value: &str| {
        let v = value_where(panel(title), label, value);
        assert!(
            v.is_some_and(|v| v > 0.0),
            "panel {title:?}: {label}={value} is {v:?}: {:?}",
            panel(title)
        );
    };
    positive("Relayed packets/s by datapath", "datapath", "userspace");
    positive(
        "Authentication failures/s by reason",
        "reason",
        "wrong_password",
    );
    positive("Dropped packets/s by reason", "reason", "not_stun");
    positive("401 and 403 answers/s", "result", "403");
    positive("Peers denied/s by reason", "reason", "builtin");
    let value = |title: &str| -> f64 {
        panel(title)[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    assert_eq!(value("Relays not ready"), 1.0, "the draining relay");
    assert_eq!(value("Kernel share of packets"), 0.0, "all in userspace");
    assert!(value("Allocations") >= 1.0, "the allocation that stays");
    assert_eq!(value("Operator leader"), 1.0, "leader election off");
    drop(stays);
}
