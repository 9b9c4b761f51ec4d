//! Real browsers calling each other through the relay, behind NATs, with the XDP fast path
//! attached to the relay's interface in its default mode.
//!
//! ```text
//!  client A ── NAT A ─┐                       ┌─ NAT B ── client B
//!  (browser)  masquerade   "internet" bridge   masquerade  (browser)
//!                     └──────── relay ────────┘
//! ```
//!
//! Six network namespaces per call, created here and deleted on drop: the relay's (one
//! interface, forwarding off, as a fresh namespace has it), the "internet" (a bridge joining the
//! relay and the two NAT routers' outsides, all in 203.0.113.0/24, which the relay is told to
//! allow as peers), two NAT routers (forwarding on, nftables `masquerade random,fully-random`: a
//! symmetric NAT, so the browsers need TURN) and behind each a client namespace (10.0.1.0/24,
//! 10.0.2.0/24) where one browser runs, driven by a Node process in the same namespace
//! (relay/tests/browser/driver.mjs, puppeteer-core: Chromium over CDP, Firefox over WebDriver
//! BiDi). The test passes the signalling between the two drivers (JSON lines: offer, answer,
//! candidates) and reads their results.
//!
//! The calls: Chromium to Chromium and Firefox to Chromium (iceTransportPolicy "all": neither
//! NAT lets the other end in, so ICE picks a pair with a relay candidate, typically one end's
//! relayed address reached by the other through its NAT), Chromium to Chromium with
//! both ends relay-only (two allocations on the one relay, client to client in the relay), and
//! Chromium to Chromium reaching the relay over IPv6 (a dual-stack topology, NAT66).
//!
//! Each call sends a video track (an animated canvas) both ways and data-channel messages both
//! ways for 10 s, and must show: the selected candidate pair goes through a relay candidate,
//! frames decoded at both ends, messages received both ways, no UDP checksum error in any
//! receiving namespace, and at least 95 % of the relayed packets of each direction forwarded by
//! the XDP program (the relay's `xdpturn_relayed_packets_total` by datapath).
//!
//! Needs root, node with the driver's packages (`npm ci` in relay/tests/browser), nftables,
//! and the browsers (`cargo xtask test` installs all of them). A test whose browser is not
//! installed says so and passes; anything else missing fails it.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::browser::{Browser, Driver, Event, require_driver, udp_in_csum_errors};
use common::{Guard, http_get, launch, metric_value, relay_bin, require};
use netns::{Netns, short_id};

/// The "internet": the relay and the NAT routers' outside addresses.
const INTERNET_PREFIX: &str = "203.0.113.0/24";
const RELAY_IP: &str = "203.0.113.1";
const NAT_A_WAN: &str = "203.0.113.11";
const NAT_B_WAN: &str = "203.0.113.12";
/// The client networks behind the NAT routers: (router, client) addresses.
const LAN_A: (&str, &str) = ("10.0.1.1", "10.0.1.2");
const LAN_B: (&str, &str) = ("10.0.2.1", "10.0.2.2");
/// The same for IPv6, where a call asks for it: the internet in the documentation prefix, the
/// client networks unique local, NAT66 (masquerade) on the routers as for IPv4.
const INTERNET_PREFIX_V6: &str = "2001:db8:113::/64";
const RELAY_IP_V6: &str = "2001:db8:113::1";
const NAT_A_WAN_V6: &str = "2001:db8:113::11";
const NAT_B_WAN_V6: &str = "2001:db8:113::12";
const LAN_A_V6: (&str, &str) = ("fd00:1::1", "fd00:1::2");
const LAN_B_V6: (&str, &str) = ("fd00:2::1", "fd00:2::2");

const REALM: &str = "example.org";
const USER: &str = "alice";
const PASSWORD: &str = "wonderland";

/// Media time per call, from the moment each end's data channel opens.
const CALL_SECONDS: u64 = 10;
/// From starting the drivers to both results.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The kernel's share of the relayed packets, per direction, that each call must reach.
const KERNEL_SHARE: f64 = 0.95;
/// Frames each end must decode, and data-channel messages each end must receive (a message goes
/// every 50 ms, so a 10 s call sends about 200).
const MIN_FRAMES: f64 = 60.0;
const MIN_MESSAGES: f64 = 50.0;

/// One call at a time: two browsers encoding and decoding video already keep two cores busy,
/// and a starved call measures the machine, not the relay.
static CALLS: Mutex<()> = Mutex::new(());

/// Prints what a step did, with the time since the test started (`--nocapture` shows it live).
fn step(start: Instant, what: &str) {
    eprintln!("[{:6.2}s] {what}", start.elapsed().as_secs_f64());
}

/// The namespaces of one call, deleted on drop (failure included).
struct Topology {
    relay: Netns,
    internet: Netns,
    nat_a: Netns,
    nat_b: Netns,
    client_a: Netns,
    client_b: Netns,
    /// The relay's one interface.
    relay_if: String,
    /// IPv6 as well as IPv4.
    ipv6: bool,
}

impl Topology {
    /// The namespaces with IPv4, and IPv6 too if `ipv6` (addresses without duplicate address
    /// detection, so that they are usable at once; no sysctl of the relay's namespace changes).
    fn new(tag: &str, ipv6: bool) -> Topology {
        require("nft", "nftables");
        let id = short_id();
        let t = Topology {
            relay: Netns::new(&format!("{tag}-relay")),
            internet: Netns::new(&format!("{tag}-inet")),
            nat_a: Netns::new(&format!("{tag}-nat-a")),
            nat_b: Netns::new(&format!("{tag}-nat-b")),
            client_a: Netns::new(&format!("{tag}-client-a")),
            client_b: Netns::new(&format!("{tag}-client-b")),
            relay_if: format!("r{id}"),
            ipv6,
        };
        let bridge = format!("br{id}");
        t.internet.ip(&format!("link add {bridge} type bridge"));
        t.internet.ip(&format!("link set {bridge} up"));
        // The relay: one interface on the internet; nothing else changed in its namespace.
        t.relay.veth(&t.relay_if, &t.internet, &format!("ir{id}"));
        t.relay
            .ip(&format!("addr add {RELAY_IP}/24 dev {}", t.relay_if));
        if ipv6 {
            t.relay.ip(&format!(
                "-6 addr add {RELAY_IP_V6}/64 dev {} nodad",
                t.relay_if
            ));
        }
        t.relay.ip(&format!("link set {} up", t.relay_if));
        for (nat, client, side, wan, (router, host), wan6, (router6, host6)) in [
            (
                &t.nat_a,
                &t.client_a,
                'a',
                NAT_A_WAN,
                LAN_A,
                NAT_A_WAN_V6,
                LAN_A_V6,
            ),
            (
                &t.nat_b,
                &t.client_b,
                'b',
                NAT_B_WAN,
                LAN_B,
                NAT_B_WAN_V6,
                LAN_B_V6,
            ),
        ] {
            let (wan_if, lan_if, client_if) = (
                format!("w{side}{id}"),
                format!("l{side}{id}"),
                format!("c{side}{id}"),
            );
            nat.veth(&wan_if, &t.internet, &format!("i{side}{id}"));
            nat.veth(&lan_if, client, &client_if);
            nat.ip(&format!("addr add {wan}/24 dev {wan_if}"));
            nat.ip(&format!("addr add {router}/24 dev {lan_if}"));
            nat.ip(&format!("link set {wan_if} up"));
            nat.ip(&format!("link set {lan_if} up"));
            nat.sysctl("net.ipv4.ip_forward=1");
            if ipv6 {
                nat.ip(&format!("-6 addr add {wan6}/64 dev {wan_if} nodad"));
                nat.ip(&format!("-6 addr add {router6}/64 dev {lan_if} nodad"));
                nat.sysctl("net.ipv6.conf.all.forwarding=1");
            }
            // A symmetric NAT (both families: an inet table): every new flow gets a random
            // source port.
            nat.exec(&[
                "nft",
                &format!(
                    "add table inet nat; \
                     add chain inet nat postrouting {{ type nat hook postrouting priority srcnat; }}; \
                     add rule inet nat postrouting oifname \"{wan_if}\" masquerade random,fully-random"
                ),
            ]);
            client.ip(&format!("addr add {host}/24 dev {client_if}"));
            if ipv6 {
                client.ip(&format!("-6 addr add {host6}/64 dev {client_if} nodad"));
            }
            client.ip(&format!("link set {client_if} up"));
            client.ip(&format!("route add default via {router}"));
            if ipv6 {
                client.ip(&format!("-6 route add default via {router6}"));
            }
        }
        for side in ['r', 'a', 'b'] {
            let port = format!("i{side}{id}");
            t.internet.ip(&format!("link set {port} master {bridge}"));
            t.internet.ip(&format!("link set {port} up"));
        }
        t
    }

    /// The namespaces whose kernels receive the relayed packets (and so verify their checksums).
    fn receivers(&self) -> [(&'static str, &Netns); 3] {
        [
            ("client A", &self.client_a),
            ("client B", &self.client_b),
            ("relay", &self.relay),
        ]
    }
}

/// The relay in its namespace, with its log and metrics.
struct RelayProcess {
    _process: Guard,
    log: std::sync::Arc<Mutex<Vec<String>>>,
    /// Its UDP listeners, as bound: IPv4, then IPv6 where the topology has it.
    listeners: Vec<SocketAddr>,
    metrics: SocketAddr,
}

impl RelayProcess {
    /// Starts the relay on its interface's addresses (ports it picks), XDP on that interface
    /// in the default mode, one static user, the internet allowed as peers. Waits for the
    /// program to attach (or not) and says which.
    fn start(topo: &Topology, start: Instant) -> RelayProcess {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.relay.name, relay_bin()])
            .args(["--listen", &format!("{RELAY_IP}:0")])
            .args(["--allow-peer", INTERNET_PREFIX]);
        if topo.ipv6 {
            cmd.args(["--listen", &format!("[{RELAY_IP_V6}]:0")])
                .args(["--allow-peer", INTERNET_PREFIX_V6]);
        }
        let launched = launch(
            cmd.args(["--metrics-listen", "127.0.0.1:0"])
                .args(["--realm", REALM])
                .args(["--user", &format!("{USER}:{PASSWORD}")])
                .args(["--xdp-interface", &topo.relay_if])
                .args(["--drain-timeout", "0"])
                .env("XDPTURN_LOG", "info"),
        );
        let relay = RelayProcess {
            _process: launched.process,
            log: launched.log,
            listeners: launched.listeners,
            metrics: launched.metrics,
        };
        step(
            start,
            &format!(
                "relay listening on {:?} (metrics {}), XDP on {}",
                relay.listeners, relay.metrics, topo.relay_if
            ),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let lines = relay.log_lines();
            if let Some(line) = lines.iter().find(|l| l.contains(" program attached")) {
                step(start, &format!("relay: {line}"));
                break;
            }
            let attached = relay.metrics_text(topo);
            if Instant::now() > deadline
                || metric_value(&attached, "xdpturn_xdp_fallbacks_total") > 0.0
            {
                step(
                    start,
                    &format!(
                        "relay: XDP NOT attached (the call goes on; the kernel share will say so). Log:\n{}",
                        lines.join("\n")
                    ),
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        relay
    }

    /// What the relay logged about attaching the program (the mode it chose), if anything.
    fn attach_line(&self) -> String {
        self.log_lines()
            .into_iter()
            .find(|l| l.contains(" program attached"))
            .and_then(|l| l.split_once("attached ").map(|(_, rest)| rest.to_owned()))
            .unwrap_or_else(|| "no attach logged".to_owned())
    }

    /// The UDP listener of the family asked for.
    fn listener(&self, ipv6: bool) -> SocketAddr {
        *self
            .listeners
            .iter()
            .find(|a| a.is_ipv6() == ipv6)
            .unwrap_or_else(|| panic!("no listener (IPv6: {ipv6}) in {:?}", self.listeners))
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The relay's /metrics, fetched from inside its namespace.
    fn metrics_text(&self, topo: &Topology) -> String {
        let addr = self.metrics;
        let (status, body) = topo.relay.enter(|| http_get(addr, "/metrics"));
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Relayed packets over UDP, by (datapath, direction).
#[derive(Clone, Copy, Debug, Default)]
struct Relayed {
    xdp_up: f64,
    xdp_down: f64,
    user_up: f64,
    user_down: f64,
}

impl Relayed {
    fn read(metrics: &str) -> Relayed {
        let get = |datapath: &str, direction: &str| {
            metric_value(
                metrics,
                &format!(
                    r#"xdpturn_relayed_packets_total{{datapath="{datapath}",direction="{direction}",transport="udp"}}"#
                ),
            )
        };
        Relayed {
            xdp_up: get("xdp", "client_to_peer"),
            xdp_down: get("xdp", "peer_to_client"),
            user_up: get("userspace", "client_to_peer"),
            user_down: get("userspace", "peer_to_client"),
        }
    }

    fn since(self, before: Relayed) -> Relayed {
        Relayed {
            xdp_up: self.xdp_up - before.xdp_up,
            xdp_down: self.xdp_down - before.xdp_down,
            user_up: self.user_up - before.user_up,
            user_down: self.user_down - before.user_down,
        }
    }

    /// The XDP program's share of (client→peer, peer→client); 0 where nothing was relayed.
    fn kernel_shares(self) -> (f64, f64) {
        let share = |x: f64, u: f64| if x + u > 0.0 { x / (x + u) } else { 0.0 };
        (
            share(self.xdp_up, self.user_up),
            share(self.xdp_down, self.user_down),
        )
    }
}

/// The series of the `families` whose value is not 0, as "name{labels} value".
fn nonzero(metrics: &str, families: &[&str]) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| families.iter().any(|f| l.starts_with(&format!("{f}{{"))))
        .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
        .map(str::to_owned)
        .collect()
}

/// One end of a call.
#[derive(Clone, Copy)]
struct End {
    browser: Browser,
    /// iceTransportPolicy: "all" or "relay".
    policy: &'static str,
}

/// A number from a driver's result (0 when absent).
fn num(result: &Value, key: &str) -> f64 {
    result[key].as_f64().unwrap_or(0.0)
}

/// "relay 203.0.113.1:50000/udp" for a candidate of a result.
fn candidate(c: &Value) -> String {
    if c.is_null() {
        return "none".to_owned();
    }
    let from = c["url"]
        .as_str()
        .map(|url| format!(" from {url}"))
        .unwrap_or_default();
    format!(
        "{} {}:{}/{}{from}",
        c["type"].as_str().unwrap_or("?"),
        c["address"].as_str().unwrap_or("?"),
        c["port"],
        c["protocol"].as_str().unwrap_or("?")
    )
}

/// The short form of a trickled candidate for the log: "relay 203.0.113.1 50000 udp".
fn candidate_line(message: &Value) -> String {
    let line = message["candidate"]["candidate"].as_str().unwrap_or("");
    if line.is_empty() {
        return format!(
            "end-of-candidates (m-line {})",
            message["candidate"]["sdpMid"]
        );
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let typ = words
        .iter()
        .position(|w| *w == "typ")
        .and_then(|i| words.get(i + 1))
        .unwrap_or(&"?");
    format!(
        "{typ} {} {} {}",
        words.get(4).unwrap_or(&"?"),
        words.get(5).unwrap_or(&"?"),
        words.get(2).unwrap_or(&"?")
    )
}

/// Runs a call from `a` (the offerer, behind NAT A) to `b` (behind NAT B) through a fresh
/// relay, to its IPv6 address if `ipv6` (on a dual-stack topology), else to its IPv4 address
/// (on an IPv4 one); prints every number, then asserts.
fn call(tag: &str, a: End, b: End, ipv6: bool) {
    let _one_at_a_time = CALLS.lock().unwrap_or_else(|p| p.into_inner());
    let start = Instant::now();
    for end in [a, b] {
        if !end.browser.installed() {
            eprintln!(
                "SKIPPED: {} is not installed (Debian package `{}`; `cargo xtask test` installs it)",
                end.browser.executable(),
                end.browser.package()
            );
            return;
        }
    }
    require_driver();

    let topo = Topology::new(tag, ipv6);
    let v6 = if ipv6 {
        format!(
            "; and IPv6: relay {RELAY_IP_V6}, NATs {NAT_A_WAN_V6} {NAT_B_WAN_V6}, clients {} {}",
            LAN_A_V6.1, LAN_B_V6.1
        )
    } else {
        String::new()
    };
    step(
        start,
        &format!(
            "namespaces up: relay {} ({RELAY_IP}, forwarding off), NAT A {} ({NAT_A_WAN}), NAT B {} ({NAT_B_WAN}), client A {} ({}), client B {} ({}), internet {}{v6}",
            topo.relay.name,
            topo.nat_a.name,
            topo.nat_b.name,
            topo.client_a.name,
            LAN_A.1,
            topo.client_b.name,
            LAN_B.1,
            topo.internet.name
        ),
    );
    let relay = RelayProcess::start(&topo, start);
    let attached = metric_value(&relay.metrics_text(&topo), "xdpturn_xdp_attached") == 1.0;

    let csum_before: Vec<u64> = topo
        .receivers()
        .iter()
        .map(|(_, ns)| udp_in_csum_errors(&ns.name))
        .collect();
    let relayed_before = Relayed::read(&relay.metrics_text(&topo));

    let ice_servers = json!([{
        "urls": format!("turn:{}?transport=udp", relay.listener(ipv6)),
        "username": USER,
        "credential": PASSWORD,
    }]);
    let (tx, rx) = mpsc::channel::<Event>();
    let mut drivers = Vec::new();
    for (index, (end, role, ns)) in [
        (a, "offerer", &topo.client_a),
        (b, "answerer", &topo.client_b),
    ]
    .into_iter()
    .enumerate()
    {
        let label = format!("{} {} ({role})", end.browser.name(), ["A", "B"][index]);
        let config = json!({
            "browser": end.browser.name(),
            "executable": end.browser.executable(),
            "role": role,
            "iceServers": ice_servers,
            "policy": end.policy,
            "seconds": CALL_SECONDS,
            "timeout": CALL_TIMEOUT.as_secs(),
        });
        step(
            start,
            &format!(
                "starting {label} in {}, iceTransportPolicy {}",
                ns.name, end.policy
            ),
        );
        drivers.push(Driver::spawn(
            &ns.name,
            &label,
            config,
            index,
            tx.clone(),
            start,
        ));
    }
    drop(tx);

    // Signalling: whatever one end says goes to the other, until both have a result.
    let deadline = Instant::now() + CALL_TIMEOUT;
    let mut results: [Option<Value>; 2] = [None, None];
    while results.iter().any(Option::is_none) {
        let (index, message) =
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no result from both browsers within {CALL_TIMEOUT:?}: {results:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("both drivers ended without results"),
            };
        let label = drivers[index].label.clone();
        let kind = message["type"].as_str().unwrap_or("").to_owned();
        match kind.as_str() {
            "browser" => step(
                start,
                &format!(
                    "{label}: {} running, pid {}",
                    message["version"], message["pid"]
                ),
            ),
            "offer" | "answer" => {
                step(
                    start,
                    &format!(
                        "{label}: {kind} ({} bytes of SDP) -> {}",
                        message["sdp"].as_str().map_or(0, str::len),
                        drivers[1 - index].label
                    ),
                );
                drivers[1 - index].send(&message);
            }
            "candidate" => {
                step(
                    start,
                    &format!("{label}: candidate {}", candidate_line(&message)),
                );
                drivers[1 - index].send(&message);
            }
            "state" => step(
                start,
                &format!(
                    "{label}: {} {}",
                    message["what"].as_str().unwrap_or("?"),
                    message["state"].as_str().unwrap_or("?")
                ),
            ),
            "result" => {
                step(start, &format!("{label}: result {message}"));
                if results.iter().all(Option::is_none) {
                    // The call is still up: what the relay holds for it.
                    let metrics = relay.metrics_text(&topo);
                    let live = [
                        "xdpturn_allocations",
                        "xdpturn_permissions",
                        "xdpturn_channels",
                    ]
                    .map(|m| format!("{m} {}", metric_value(&metrics, m)));
                    step(
                        start,
                        &format!("relay during the call: {}", live.join(", ")),
                    );
                }
                results[index] = Some(message);
            }
            "error" => panic!("{label}: {}", message["error"]),
            "exit" => panic!("{label}: the driver exited before its result"),
            other => step(
                start,
                &format!("{label}: unexpected message {other}: {message}"),
            ),
        }
    }
    for driver in &mut drivers {
        let status = driver.quit(Duration::from_secs(10));
        step(start, &format!("{}: closed ({status:?})", driver.label));
    }
    drop(drivers);

    // The relay exports the kernel's counters once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = relay.metrics_text(&topo);
    let relayed = Relayed::read(&metrics).since(relayed_before);
    let (share_up, share_down) = relayed.kernel_shares();
    let csum: Vec<(&str, u64)> = topo
        .receivers()
        .iter()
        .zip(&csum_before)
        .map(|((name, ns), before)| (*name, udp_in_csum_errors(&ns.name) - before))
        .collect();
    let [Some(ra), Some(rb)] = results else {
        unreachable!("the loop ends with both results")
    };

    eprintln!(
        "\n===== {tag}: {} (A, offerer) calls {} (B) =====",
        a.browser.name(),
        b.browser.name()
    );
    eprintln!("XDP attached: {attached} ({})", relay.attach_line());
    eprintln!(
        "relay counters (non-zero): {}",
        nonzero(
            &metrics,
            &[
                "xdpturn_requests_total",
                "xdpturn_dropped_packets_total",
                "xdpturn_xdp_fallbacks_total",
                "xdpturn_peer_denied_total",
            ]
        )
        .join(", ")
    );
    for (name, r, end) in [("A", &ra, a), ("B", &rb, b)] {
        eprintln!(
            "{name} {} policy {}: {} / ICE {}; pair local {} <-> remote {} (via relay: {}); \
             frames encoded {} decoded {}; video packets sent {} received {}; \
             data-channel messages sent {} received {}; pair bytes sent {} received {}",
            end.browser.name(),
            end.policy,
            r["connectionState"].as_str().unwrap_or("?"),
            r["iceConnectionState"].as_str().unwrap_or("?"),
            candidate(&r["local"]),
            candidate(&r["remote"]),
            r["viaRelay"],
            num(r, "framesEncoded"),
            num(r, "framesDecoded"),
            num(r, "videoPacketsSent"),
            num(r, "videoPacketsReceived"),
            num(r, "messagesSent"),
            num(r, "messagesReceived"),
            num(r, "pairBytesSent"),
            num(r, "pairBytesReceived"),
        );
    }
    eprintln!(
        "relayed packets client->peer: xdp {} userspace {} => kernel share {:.1} %",
        relayed.xdp_up,
        relayed.user_up,
        share_up * 100.0
    );
    eprintln!(
        "relayed packets peer->client: xdp {} userspace {} => kernel share {:.1} %",
        relayed.xdp_down,
        relayed.user_down,
        share_down * 100.0
    );
    for (name, errors) in &csum {
        eprintln!("UdpInCsumErrors during the call, {name}: {errors}");
    }
    eprintln!("call took {:.1} s in all\n", start.elapsed().as_secs_f64());

    // The call itself.
    for (name, r, end) in [("A", &ra, a), ("B", &rb, b)] {
        assert_eq!(
            r["viaRelay"],
            json!(true),
            "{name} is not connected through a relay candidate: {r}"
        );
        if end.policy == "relay" {
            assert_eq!(
                r["local"]["type"],
                json!("relay"),
                "{name} uses a relay candidate of its own: {r}"
            );
        }
        assert!(
            num(r, "framesDecoded") >= MIN_FRAMES,
            "{name} decoded too few frames: {r}"
        );
        assert!(
            num(r, "messagesReceived") >= MIN_MESSAGES,
            "{name} received too few messages: {r}"
        );
    }
    if ipv6 {
        // Every relay candidate came from the one (IPv6) TURN URL; at least one end uses its own.
        let url = format!("turn:{}?transport=udp", relay.listener(true));
        assert!(
            [&ra, &rb]
                .iter()
                .any(|r| r["local"]["type"] == "relay" && r["local"]["url"] == url.as_str()),
            "neither end talks to the relay over IPv6 ({url}): {ra} {rb}"
        );
    }
    for (name, errors) in &csum {
        assert_eq!(*errors, 0, "UDP checksum errors in the {name} namespace");
    }
    // Through the kernel.
    assert!(
        relayed.xdp_up + relayed.user_up > 0.0 && relayed.xdp_down + relayed.user_down > 0.0,
        "the relay relayed nothing: {relayed:?}"
    );
    assert!(
        attached,
        "the XDP program did not attach:\n{}",
        relay.log_lines().join("\n")
    );
    assert!(
        share_up >= KERNEL_SHARE,
        "client->peer: the kernel forwarded {:.1} % of the relayed packets ({relayed:?}), less than {:.0} %",
        share_up * 100.0,
        KERNEL_SHARE * 100.0
    );
    assert!(
        share_down >= KERNEL_SHARE,
        "peer->client: the kernel forwarded {:.1} % of the relayed packets ({relayed:?}), less than {:.0} %",
        share_down * 100.0,
        KERNEL_SHARE * 100.0
    );
}

#[test]
fn chromium_calls_chromium_through_the_kernel() {
    let end = End {
        browser: Browser::Chromium,
        policy: "all",
    };
    call("cc", end, end, false);
}

/// Firefox's TURN client never binds channels: its media are Send and Data indications (with a
/// FINGERPRINT on every Send), which the kernel relays like channels.
#[test]
fn firefox_calls_chromium_through_the_kernel() {
    call("fc", FIREFOX, CHROMIUM, false);
}

/// Firefox with `iceTransportPolicy: 'relay'` against Chromium doing the same: both allocations
/// on the one relay, Firefox's side all indications, Chromium's channels.
#[test]
fn firefox_calls_chromium_on_one_relay_with_relay_only_policy() {
    call(
        "fr",
        End {
            browser: Browser::Firefox,
            policy: "relay",
        },
        End {
            browser: Browser::Chromium,
            policy: "relay",
        },
        false,
    );
}

const FIREFOX: End = End {
    browser: Browser::Firefox,
    policy: "all",
};

const CHROMIUM: End = End {
    browser: Browser::Chromium,
    policy: "all",
};

/// Both ends relay-only: each browser has an allocation of its own on the one relay, and the
/// media goes client → relay → (its allocation to the other's) → relay → client.
#[test]
fn same_relay_call_with_relay_only_policy() {
    let end = End {
        browser: Browser::Chromium,
        policy: "relay",
    };
    call("rr", end, end, false);
}

/// As the first, to the relay's IPv6 address on a dual-stack topology (NAT66 on the routers):
/// the browsers reach the relay over IPv6. Chromium asks for no address family in its Allocate
/// requests, so their relayed addresses are IPv4 (RFC 8656's default), and the kernel translates
/// between the families.
#[test]
fn chromium_calls_chromium_over_ipv6_through_the_kernel() {
    let end = End {
        browser: Browser::Chromium,
        policy: "all",
    };
    call("c6", end, end, true);
}
