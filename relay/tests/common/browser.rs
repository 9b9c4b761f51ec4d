//! Real browsers for the end-to-end tests: Debian's Chromium and Firefox ESR, each driven by
//! one Node process (relay/tests/browser/driver.mjs, puppeteer-core) that runs inside the
//! browser's network namespace. The test talks to a driver in JSON lines over its stdin and
//! stdout (signalling, states, results) and prints its log (stderr) as it comes. Every process a
//! driver started is killed by its PID when the [`Driver`] is dropped, failure included: its
//! descendants, and whatever else runs in its namespace (which is the test's own), such as the
//! crash handler Chromium starts as a daemon.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TempDir;

/// A browser the tests drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Browser {
    /// Debian's `chromium`, over the DevTools protocol.
    Chromium,
    /// Debian's `firefox-esr`, over WebDriver BiDi.
    Firefox,
}

impl Browser {
    /// The driver's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox",
        }
    }

    /// Where Debian installs it.
    pub fn executable(self) -> &'static str {
        match self {
            Browser::Chromium => "/usr/bin/chromium",
            Browser::Firefox => "/usr/bin/firefox-esr",
        }
    }

    /// The Debian package it comes from.
    pub fn package(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox-esr",
        }
    }

    pub fn installed(self) -> bool {
        Path::new(self.executable()).is_file()
    }
}

/// relay/tests/browser: the driver, its page and its node_modules.
pub fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Panics, saying how to get them, unless node and the driver's packages are installed.
pub fn require_driver() {
    super::require("node", "nodejs");
    let puppeteer = driver_dir().join("node_modules/puppeteer-core/package.json");
    assert!(
        puppeteer.is_file(),
        "{} is missing: run `npm ci` in relay/tests/browser (`cargo xtask test` does)",
        puppeteer.display()
    );
}

/// What a driver said: its index and one JSON message; `{"type": "exit"}` when its output ends.
pub type Event = (usize, Value);

/// A driver process (and through it, a browser) inside a network namespace.
pub struct Driver {
    pub label: String,
    /// The namespace it runs in.
    ns: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where the browser's profile and HOME live; removed after the processes are gone.
    _scratch: TempDir,
}

impl Driver {
    /// Starts `node driver.mjs CONFIG` in namespace `ns` (`config` gets `scratch` added); its
    /// messages go to `events` tagged with `index`, its log to stderr prefixed with `label`.
    pub fn spawn(
        ns: &str,
        label: &str,
        mut config: Value,
        index: usize,
        events: Sender<Event>,
        start: Instant,
    ) -> Driver {
        let scratch = TempDir::new(&format!("browser-{index}"));
        config["scratch"] = Value::from(scratch.path().to_string_lossy().into_owned());
        let dir = driver_dir();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "node"])
            .arg(dir.join("driver.mjs"))
            .arg(config.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning the {label} driver: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let stdin = child.stdin.take();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let message = serde_json::from_str(&line).unwrap_or_else(
                    |e| serde_json::json!({"type": "error", "error": format!("{e}: {line}")}),
                );
                if events.send((index, message)).is_err() {
                    return;
                }
            }
            let _ = events.send((index, serde_json::json!({"type": "exit"})));
        });
        let tag = label.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{:6.2}s] {tag}: {line}", start.elapsed().as_secs_f64());
            }
        });
        Driver {
            label: label.to_owned(),
            ns: ns.to_owned(),
            child,
            stdin,
            _scratch: scratch,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one message (a JSON line) to the driver.
    pub fn send(&mut self, message: &Value) {
        let Some(stdin) = self.stdin.as_mut() else {
            panic!("the {} driver's input is closed", self.label);
        };
        writeln!(stdin, "{message}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to the {} driver: {e}", self.label));
    }

    /// Asks the driver to close its browser and exit; waits up to `timeout` for it.
    pub fn quit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, r#"{{"type":"quit"}}"#);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stdin = None;
        // The driver, the browser it launched and the browser's own processes: collected first,
        // then killed, so that none escapes by being re-parented meanwhile.
        let mut pids = process_tree(self.child.id());
        for pid in processes_in_netns(&self.ns) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        pids.retain(|&pid| pid != std::process::id());
        if pids.len() > 1 {
            eprintln!("{}: killing processes {pids:?}", self.label);
        }
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Gone before the namespace is deleted (after which they could no longer be found).
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&pid| running(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// The processes whose network namespace is the named one (`ip netns add NAME`).
pub fn processes_in_netns(name: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(format!("/run/netns/{name}")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let net = std::fs::metadata(entry.path().join("ns/net")).ok()?;
            (net.dev() == ns.dev() && net.ino() == ns.ino()).then_some(pid)
        })
        .collect()
}

/// `root` and its descendants (from /proc), `root` first; only processes still running.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut seen: HashSet<u32> = HashSet::from([root]);
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && seen.insert(pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    tree
}

/// UDP datagrams the kernel of namespace `ns` dropped for a bad checksum, IPv4 and IPv6
/// (`UdpInCsumErrors` in /proc/net/snmp, `Udp6InCsumErrors` in /proc/net/snmp6).
pub fn udp_in_csum_errors(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "cat",
            "/proc/net/snmp",
            "/proc/net/snmp6",
        ])
        .output()
        .expect("run cat in the namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let mut found = (false, false);
    let mut errors = 0;
    // /proc/net/snmp: a header line and a value line per protocol.
    if let Some(pair) = lines
        .windows(2)
        .find(|p| p[0].starts_with("Udp: ") && p[1].starts_with("Udp: "))
    {
        for (name, value) in pair[0].split_whitespace().zip(pair[1].split_whitespace()) {
            if name == "InCsumErrors" {
                found.0 = true;
                errors += value.parse::<u64>().expect("a count");
            }
        }
    }
    // /proc/net/snmp6: one "name value" per line.
    for line in &lines {
        let mut words = line.split_whitespace();
        if words.next() == Some("Udp6InCsumErrors") {
            found.1 = true;
            errors += words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    assert_eq!(found, (true, true), "no UDP checksum counters in:\n{text}");
    errors
}
