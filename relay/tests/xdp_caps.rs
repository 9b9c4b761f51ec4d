//! The XDP fast path with exactly the privileges a relay pod gets, not root's.
//!
//! The operator renders the relay pod's security context; its test (operator/tests/build.rs,
//! `xdp_gets_exactly_its_capabilities`) pins what it renders for an XDP TurnCluster to
//! `operator/tests/fixtures/daemonset-xdp.security.json`, and this test reads that same file and
//! runs the real relay as a container runtime would run that pod: user and group, the
//! supplementary groups (`fsGroup`), only the added capabilities (bounding set, and so
//! effective and permitted for uid 0; none inheritable, none ambient), `no_new_privs` for
//! `allowPrivilegeEscalation: false`, no seccomp filter (`Unconfined`); util-linux's `setpriv`
//! applies them. The relay attaches to a veth in a network namespace the test creates.
//!
//! - With exactly the pod's set, the program loads and attaches: the relay logs it, exports
//!   `xdpturn_xdp_attached 1`, `/readyz` says `datapath: xdp`, the interface carries it.
//! - Without any one of the pod's capabilities, the relay logs why the fast path is unavailable
//!   (the kernel's refusal), exports it (`xdpturn_xdp_fallbacks_total`, `/readyz`), and keeps
//!   serving STUN in userspace: each capability the operator grants is needed.
//!
//! Needs root (CI is root: the test drops to the pod's privileges itself), iproute2, setpriv,
//! and the relay built after `cargo xtask build-ebpf`.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_get, launch, metric_value, relay_bin, require, stun_binding_udp};
use netns::{Netns, short_id};
use serde_json::Value;

/// What the operator renders for an XDP relay pod: `{"pod": PodSecurityContext, "container":
/// SecurityContext}`, kept equal to the operator's output by its own test.
const POD_SECURITY: &str =
    include_str!("../../operator/tests/fixtures/daemonset-xdp.security.json");

/// The `xdpturn_xdp_fallbacks_total` reasons of a fast path that did not come up.
const DOWN_REASONS: [&str; 5] = [
    "not_built",
    "unsupported",
    "load",
    "unknown_interface",
    "attach",
];

/// How a container runtime starts the relay process of a pod: its identity and privileges.
#[derive(Debug, Clone)]
struct Privileges {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    /// Capability names as Kubernetes spells them (`NET_ADMIN`), all dropped but these.
    caps: Vec<String>,
    no_new_privs: bool,
}

impl Privileges {
    /// The relay container's, from the operator's rendered security context; panics on
    /// anything this test cannot reproduce exactly (so that it never tests less than the pod).
    fn of_pod() -> Self {
        let sc: Value = serde_json::from_str(POD_SECURITY).expect("the security context JSON");
        let (pod, c) = (&sc["pod"], &sc["container"]);
        let id = |field: &str| {
            c[field]
                .as_u64()
                .or_else(|| pod[field].as_u64())
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or_else(|| panic!("{field} is not set: the image's user would run"))
        };
        assert_eq!(c["privileged"], false, "{sc}");
        assert_eq!(
            c["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "this test starts from no capability: {sc}"
        );
        let seccomp = c["seccompProfile"]["type"]
            .as_str()
            .or_else(|| pod["seccompProfile"]["type"].as_str());
        assert_eq!(
            seccomp,
            Some("Unconfined"),
            "this test cannot apply a runtime's seccomp profile: {sc}"
        );
        let groups = pod["fsGroup"]
            .as_u64()
            .into_iter()
            .chain(
                pod["supplementalGroups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64),
            )
            .map(|g| u32::try_from(g).expect("a group id"))
            .collect();
        let caps = c["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().expect("a capability name").to_owned())
            .collect();
        Privileges {
            uid: id("runAsUser"),
            gid: id("runAsGroup"),
            groups,
            caps,
            no_new_privs: c["allowPrivilegeEscalation"] == false,
        }
    }

    fn without(&self, cap: &str) -> Self {
        let mut p = self.clone();
        p.caps.retain(|c| c != cap);
        p
    }

    /// `setpriv` arguments that make the program it runs start with exactly these privileges.
    /// For uid 0, the permitted and effective sets after exec are the bounding set; for any
    /// other uid they are empty, as in Kubernetes (which sets no ambient capabilities).
    fn setpriv_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
        ];
        if self.groups.is_empty() {
            args.push("--clear-groups".into());
        } else {
            let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            args.push(format!("--groups={}", groups.join(",")));
        }
        let mut bounding = String::from("-all");
        for cap in &self.caps {
            bounding.push_str(&format!(",+{}", cap.to_lowercase()));
        }
        args.extend([
            "--inh-caps=-all".into(),
            "--ambient-caps=-all".into(),
            format!("--bounding-set={bounding}"),
        ]);
        if self.no_new_privs {
            args.push("--no-new-privs".into());
        }
        args
    }

    /// The effective set, as /proc/<pid>/status prints `CapEff`.
    fn effective_mask(&self) -> u64 {
        if self.uid != 0 {
            return 0;
        }
        self.caps
            .iter()
            .fold(0, |mask, c| mask | 1 << cap_number(c))
    }
}

/// Capability numbers (linux/capability.h) of the names a relay pod could be given.
fn cap_number(name: &str) -> u32 {
    match name {
        "NET_BIND_SERVICE" => 10,
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "IPC_LOCK" => 14,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("add capability {other} to cap_number"),
    }
}

/// A network namespace with a veth pair, both ends up in it; the relay attaches to `dev`.
struct Host {
    ns: Netns,
    dev: String,
}

impl Host {
    fn new() -> Self {
        require("ip", "iproute2");
        require("setpriv", "util-linux");
        let id = short_id();
        let ns = Netns::new(&format!("caps{id}"));
        let (dev, peer) = (format!("xc{id}"), format!("xp{id}"));
        ns.ip(&format!("link add {dev} type veth peer name {peer}"));
        ns.ip(&format!("link set {dev} up"));
        ns.ip(&format!("link set {peer} up"));
        Host { ns, dev }
    }

    /// `ip -n NS link show DEV`: shows `xdpgeneric` while a program is attached in skb mode.
    fn link(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.ns.name, "link", "show", &self.dev])
            .output()
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the relay in the namespace with `privileges`, XDP (skb mode) on `dev`, and waits
    /// for its verdict on the fast path.
    fn relay(&self, privileges: &Privileges) -> Started {
        self.relay_in(privileges, "skb")
    }

    /// [`Host::relay`] with `--xdp-mode mode`.
    fn relay_in(&self, privileges: &Privileges, mode: &str) -> Started {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name, "setpriv"])
            .args(privileges.setpriv_args())
            .arg(relay_bin())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--user", "alice:wonderland", "--drain-timeout", "0"])
            .args(["--xdp-interface", &self.dev, "--xdp-mode", mode])
            .env("XDPTURN_LOG", "info");
        let launched = launch(&mut cmd);
        let verdict = wait_for_log(&launched.log, "XDP fast path");
        Started {
            pid: launched.process.0.id(),
            _process: launched.process,
            log: launched.log,
            verdict,
            metrics: launched.metrics,
            listener: *launched.listeners.first().expect("a UDP listener"),
        }
    }
}

struct Started {
    // `ip netns exec` and `setpriv` exec the relay: this is its PID (killed on drop).
    _process: common::Guard,
    pid: u32,
    log: Arc<Mutex<Vec<String>>>,
    /// The log line saying whether the fast path is attached.
    verdict: String,
    metrics: std::net::SocketAddr,
    listener: std::net::SocketAddr,
}

impl Started {
    fn get(&self, host: &Host, path: &str) -> (u16, String) {
        host.ns.enter(|| http_get(self.metrics, path))
    }

    fn metric(&self, host: &Host, series: &str) -> f64 {
        let (status, body) = self.get(host, "/metrics");
        assert_eq!(status, 200, "{body}");
        metric_value(&body, series)
    }

    fn answers_stun(&self, host: &Host) -> bool {
        host.ns
            .enter(|| stun_binding_udp(self.listener, Duration::from_secs(2)))
            .is_some()
    }

    /// A line of /proc/<pid>/status (`CapEff`, `Uid`, ...), its value.
    fn proc_status(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("the relay's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }
}

/// Waits (20 s at most) for a log line containing `needle`, and returns it.
fn wait_for_log(log: &Arc<Mutex<Vec<String>>>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = log.lock().expect("log lock").clone();
        if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?}:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn xdp_attaches_with_exactly_the_pod_privileges() {
    let host = Host::new();
    let pod = Privileges::of_pod();
    let relay = host.relay(&pod);
    assert!(
        relay.verdict.contains("XDP fast path attached")
            && relay.verdict.contains(&format!("interface={}", host.dev)),
        "with the pod's privileges {pod:?} the fast path must attach; the relay said:\n{}",
        relay.log_text()
    );
    // The relay ran with exactly those privileges, not the test's.
    assert_eq!(
        u64::from_str_radix(&relay.proc_status("CapEff"), 16).expect("CapEff"),
        pod.effective_mask(),
        "{pod:?}"
    );
    for field in ["CapInh", "CapAmb"] {
        assert_eq!(relay.proc_status(field), "0000000000000000", "{field}");
    }
    assert!(
        relay
            .proc_status("Uid")
            .starts_with(&format!("{}\t", pod.uid))
    );
    assert_eq!(
        relay.proc_status("NoNewPrivs"),
        u8::from(pod.no_new_privs).to_string()
    );

    assert_eq!(relay.metric(&host, "xdpturn_xdp_attached"), 1.0);
    assert_eq!(
        relay.get(&host, "/readyz"),
        (200, "ready\ndatapath: xdp\n".to_owned())
    );
    assert!(host.link().contains("xdpgeneric"), "{}", host.link());
    assert!(relay.answers_stun(&host), "{}", relay.log_text());
}

/// The TC program (`--xdp-mode tc`) needs no more than XDP: the same pod privileges load it
/// and attach it to the interface's ingress.
#[test]
fn tc_attaches_with_exactly_the_pod_privileges() {
    let host = Host::new();
    let pod = Privileges::of_pod();
    let relay = host.relay_in(&pod, "tc");
    assert!(
        relay.verdict.contains("XDP fast path attached")
            && relay.verdict.contains("mode=\"tc\"")
            && relay.verdict.contains(&format!("interface={}", host.dev)),
        "with the pod's privileges {pod:?} the TC program must attach; the relay said:\n{}",
        relay.log_text()
    );
    assert_eq!(
        u64::from_str_radix(&relay.proc_status("CapEff"), 16).expect("CapEff"),
        pod.effective_mask(),
        "{pod:?}"
    );
    assert_eq!(
        relay.metric(
            &host,
            &format!(
                r#"xdpturn_xdp_interface_mode{{interface="{}",mode="tc",why="configured"}}"#,
                host.dev
            )
        ),
        1.0
    );
    assert!(
        !host.link().contains("xdp"),
        "no XDP program: {}",
        host.link()
    );
    assert!(relay.answers_stun(&host), "{}", relay.log_text());
}

#[test]
fn without_any_pod_capability_the_relay_says_why_and_serves_in_userspace() {
    let pod = Privileges::of_pod();
    assert!(!pod.caps.is_empty(), "an XDP pod is given capabilities");
    for cap in &pod.caps {
        let host = Host::new();
        let fewer = pod.without(cap);
        let relay = host.relay(&fewer);
        let log = relay.log_text();
        assert!(
            relay.verdict.contains("XDP fast path unavailable")
                && relay.verdict.contains("relaying everything in userspace"),
            "without CAP_{cap} the fast path must not attach; the relay said:\n{log}"
        );
        // Why: the step the kernel refused (the verifier's log follows when it was the
        // program).
        assert!(
            relay.verdict.contains("error=")
                && ["creating the maps", "loading the program", "attaching"]
                    .iter()
                    .any(|step| relay.verdict.contains(step)),
            "without CAP_{cap} the relay should say what the kernel refused: {}",
            relay.verdict
        );
        assert_eq!(relay.metric(&host, "xdpturn_xdp_attached"), 0.0);
        let reasons: Vec<&str> = DOWN_REASONS
            .into_iter()
            .filter(|r| {
                relay.metric(
                    &host,
                    &format!(r#"xdpturn_xdp_fallbacks_total{{reason="{r}"}}"#),
                ) == 1.0
            })
            .collect();
        assert_eq!(reasons.len(), 1, "one reason counted: {reasons:?}\n{log}");
        assert_eq!(
            relay.get(&host, "/readyz"),
            (
                200,
                format!(
                    "ready\ndatapath: userspace (xdp unavailable: {})\n",
                    reasons[0]
                )
            )
        );
        assert!(!host.link().contains("xdp"), "{}", host.link());
        assert!(
            relay.answers_stun(&host),
            "STUN in userspace without CAP_{cap}:\n{log}"
        );
        eprintln!("without CAP_{cap}: {}", relay.verdict);
    }
}
