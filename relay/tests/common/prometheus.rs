//! Debian's `prometheus` as the tests run it (a server of their own, scraping every second, its
//! data in the test's directory, killed by PID), and the chart's Grafana dashboard as Grafana
//! would query it: every panel's expressions with the dashboard's variables put in.
//!
//! Plain std and serde_json (and the sibling `process` module), so that the operator's tests
//! include it too (by path): the dashboard test runs it against a relay on loopback, the
//! cluster test against the pods of a real node.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{Guard, require};

const TIMEOUT: Duration = Duration::from_secs(60);

/// What Grafana puts in for its variables: `$__rate_interval` as a window long enough to hold
/// a test's traffic (a minute), the namespace and pod variables as "All" does (`allValue: .*`,
/// which also matches series without those labels, as outside Kubernetes).
const SUBSTITUTIONS: [(&str, &str); 6] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("${namespace}", ".*"),
    ("$namespace", ".*"),
    ("${pod}", ".*"),
    ("$pod", ".*"),
];

/// The chart's dashboard (charts/xdpturn/files/dashboards/xdpturn.json), from `workspace`.
pub fn dashboard(workspace: &Path) -> Value {
    let path = workspace.join("charts/xdpturn/files/dashboards/xdpturn.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (panel title, query) for every query of every panel, those inside rows included.
pub fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut panels = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            panels.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            panels.push(p);
        }
    }
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("a title").to_owned();
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("an expr");
            out.push((title.clone(), expr.to_owned()));
        }
    }
    out
}

/// The query as Grafana sends it, its variables replaced.
pub fn substitute(expr: &str) -> String {
    let mut q = expr.to_owned();
    for (var, value) in SUBSTITUTIONS {
        q = q.replace(var, value);
    }
    assert!(
        !q.contains('$'),
        "a variable this test does not know in {expr}"
    );
    q
}

/// A Prometheus server of its own scraping `targets` (job name, address) every second.
pub struct Prometheus {
    /// Killed by PID when dropped.
    _process: Guard,
    pub addr: SocketAddr,
}

impl Prometheus {
    /// On loopback, in `dir`.
    pub fn start(dir: &Path, targets: &[(&str, SocketAddr)]) -> Prometheus {
        Self::start_with(dir, targets, &[], IpAddr::from([127, 0, 0, 1]))
    }

    /// Run through `wrapper` (e.g. `nsenter --net=...`, to scrape from inside a network
    /// namespace), listening on `listen` (an address of that namespace the test reaches).
    pub fn start_with(
        dir: &Path,
        targets: &[(&str, SocketAddr)],
        wrapper: &[&str],
        listen: IpAddr,
    ) -> Prometheus {
        let tool = require("prometheus", "prometheus");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n",
        );
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        // A port chosen free may be taken before Prometheus binds it (or, in another network
        // namespace, be taken there): then it exits, and we try another.
        for attempt in 1..=5 {
            let addr = SocketAddr::new(listen, free_port());
            let log_path = dir.join(format!("prometheus-{attempt}.log"));
            let log = File::create(&log_path).expect("prometheus log");
            let mut cmd = match wrapper.split_first() {
                Some((program, args)) => {
                    let mut c = Command::new(program);
                    c.args(args).arg(&tool);
                    c
                }
                None => Command::new(&tool),
            };
            let child = cmd
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn prometheus");
            let mut process = Guard(child);
            let deadline = Instant::now() + TIMEOUT;
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    && get(addr, "/-/ready").0 == 200
                {
                    return Prometheus {
                        _process: process,
                        addr,
                    };
                }
                if let Ok(Some(status)) = process.0.try_wait() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    assert!(
                        log.contains("address already in use") && attempt < 5,
                        "prometheus exited with {status}:\n{log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "prometheus did not become ready:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        unreachable!("every attempt returned or panicked")
    }

    /// An instant query through the HTTP API: its answer, status and all.
    pub fn query(&self, query: &str) -> Value {
        let (status, body) = get(
            self.addr,
            &format!("/api/v1/query?query={}", percent_encode(query)),
        );
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("HTTP {status} for {query}: {e}: {body}"))
    }

    /// The series an instant query returns (panics unless Prometheus answers `success`).
    pub fn series(&self, query: &str) -> Vec<Value> {
        let answer = self.query(query);
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `query` returns a series.
    pub fn wait_for(&self, query: &str, what: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while self.series(query).is_empty() {
            assert!(
                Instant::now() < deadline,
                "not within {TIMEOUT:?}: {what} ({query})"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The value of the series of `series` whose label `label` is `value`, if any.
pub fn value_where(series: &[Value], label: &str, value: &str) -> Option<f64> {
    series
        .iter()
        .find(|s| s["metric"][label] == value)
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
}

/// A query string's value, percent-encoded (RFC 3986 unreserved characters kept).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// GET over HTTP/1.0, so that the answer comes whole, without chunked encoding.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_with(addr, path, None)
}

/// [`get`] with `Authorization: Bearer <token>` when given. Status 0 when no answer came.
pub fn get_with(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    if write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if s.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
