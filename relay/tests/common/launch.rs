//! Starting the relay binary and reading its log and metrics. Plain std (and the sibling `process`
//! module), so that the operator's tests include it too (by path).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::Guard;

/// A relay started by [`launch`], with every listener bound.
pub struct Launched {
    /// The process, killed when dropped.
    pub process: Guard,
    /// Its log (stderr) lines, collected as they come.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The metrics (HTTP) listener.
    pub metrics: SocketAddr,
    /// The STUN/TURN listeners, as bound (from the "listening udp=" log lines).
    pub listeners: Vec<SocketAddr>,
}

/// Spawns the relay as `cmd` says (the binary, its arguments and environment), collects its
/// stderr, and waits until it logs its metrics listener: by then every listener is bound and
/// logged. Panics, with the log, if it exits first or takes more than 20 s.
pub fn launch(cmd: &mut Command) -> Launched {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the relay");
    let stderr = child.stderr.take().expect("piped");
    let mut process = Guard(child);
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("log lock").push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = log.lock().expect("log lock").clone();
        if let Some(line) = lines.iter().find(|l| l.contains("metrics=")) {
            let metrics = field(line, "metrics=").parse().expect("metrics address");
            let listeners = lines
                .iter()
                .filter(|l| l.contains(" listening ") && l.contains("udp="))
                .map(|l| field(l, "udp=").parse().expect("listener address"))
                .collect();
            return Launched {
                process,
                log,
                metrics,
                listeners,
            };
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!(
                "the relay exited with {status} during start-up:\n{}",
                lines.join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not start:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value after `key` up to the next space.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(key)
        .map(|i| i + key.len())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"));
    line[start..].split_whitespace().next().unwrap_or_default()
}

/// The value of the line starting with `series` (name and labels) in the relay's metrics text,
/// or 0 when there is none.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
