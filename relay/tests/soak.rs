//! The soak (`cargo xtask soak --minutes N`): one relay serving for N minutes while
//! allocations, permissions and channels are created, refreshed, left to expire and deleted all
//! the time, with traffic over UDP (channels and Send indications), TCP and TLS, and through the
//! XDP fast path; what the relay holds is sampled throughout and the slope of each figure
//! printed. Memory and descriptor figures are printed, not asserted (machines are shared and
//! noisy). What is asserted is what a leak breaks: once the load stops and the lifetimes have
//! run out, the relay is back where it started: no allocation, permission, channel or
//! connection, no entry in the XDP maps, as many worker tasks and open files as when it was idle.
//!
//! The topology: two network namespaces joined by a veth pair. The relay's namespace has
//! 10.79.0.2 and the XDP program on its end (skb mode); the other has the clients (10.79.0.1)
//! and the peers (10.79.0.3) on the other end, so the program sends every forwarded packet back
//! out of the interface it came in on (XDP_TX), as a relay with one NIC does. Lifetimes are cut
//! (allocations 30 s, permissions 20 s, channels 25 s; hidden test flags) so that expiry happens
//! every minute instead of every ten.
//!
//! The load, each in a thread of its own until the time is up:
//! - coturn's `turnutils_uclient` over UDP with channels, over UDP with Send indications, over
//!   TCP and over TLS (`-t -S`), one run after the other, each run a few seconds of media pace
//!   through `turnutils_peer`; uclient leaves its allocations to expire;
//! - a client of the test's own (the crate's codec) that allocates, permits, binds a channel,
//!   sends ChannelData through a peer socket and back, then in turn deletes its allocation,
//!   refreshes it and leaves it, or just leaves it (to expire).
//!
//! Samples (every `XDPTURN_SOAK_SAMPLE_SECS`, 10 by default): the relay's RSS, open file
//! descriptors, threads, worker tasks (`xdpturn_worker_tasks`), allocations, permissions,
//! channels, client connections and entries in its XDP maps (read with `bpftool`). The slopes
//! are least-squares fits per hour over the samples past the ramp (the first fifth of the load,
//! and at least the allocation lifetime and 15 s). The test
//! ends with a `RESULT soak {json}` line.
//!
//! Needs root, the relay built after `cargo xtask build-ebpf`, coturn's tools and bpftool.
//! Ignored by default: `cargo xtask soak --minutes N` runs it (`XDPTURN_SOAK_MINUTES`; 2 when
//! run by hand with `--ignored`).

#![cfg(target_os = "linux")]

#[path = "common/bpftool.rs"]
mod bpftool;
mod common;
#[path = "common/netns.rs"]
mod netns;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bpftool::{map_entries, program_map, xdp_programs};
use common::turn::TurnClient;
use common::uclient::uclient_with;
use common::{Guard, TempDir, metric_value, relay_bin, require};
use netns::{Netns, short_id};

const CLIENT: &str = "10.79.0.1";
const RELAY: &str = "10.79.0.2";
const PEER: &str = "10.79.0.3";
const LISTEN: u16 = 3478;
const TLS: u16 = 5349;
const METRICS: u16 = 9641;
const ALLOCATION_LIFETIME: Duration = Duration::from_secs(30);
/// The XDP maps whose entries follow the allocations (each family's).
const MAPS: [&str; 8] = [
    "CLIENT_TO_PEER",
    "CLIENT_TO_PEER4",
    "PEER_TO_CLIENT",
    "PEER_TO_CLIENT4",
    "ALLOCATIONS",
    "ALLOCATIONS4",
    "NEXT_HOPS",
    "NEXT_HOPS4",
];

/// The two namespaces and the veth pair between them, removed on drop.
struct Topology {
    outside: Netns,
    relay: Netns,
    /// The relay's end of the veth pair.
    dev: String,
}

impl Topology {
    fn new() -> Topology {
        let id = short_id();
        let t = Topology {
            outside: Netns::new("soak-o"),
            relay: Netns::new("soak-r"),
            dev: format!("sr{id}"),
        };
        let out_dev = format!("so{id}");
        t.outside.veth(&out_dev, &t.relay, &t.dev);
        t.outside.ip(&format!("addr add {CLIENT}/24 dev {out_dev}"));
        t.outside.ip(&format!("addr add {PEER}/24 dev {out_dev}"));
        t.relay.ip(&format!("addr add {RELAY}/24 dev {}", t.dev));
        t.outside.ip(&format!("link set {out_dev} up"));
        t.relay.ip(&format!("link set {} up", t.dev));
        t
    }

    /// `ip netns exec <outside>`, for coturn's tools.
    fn outside_exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.outside.name]
    }
}

/// A self-signed certificate and key in `dir`.
fn write_cert(dir: &Path) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (
        cert.to_str().expect("utf-8").to_owned(),
        key.to_str().expect("utf-8").to_owned(),
    )
}

fn start_relay(topo: &Topology, cert: &str, key: &str) -> Guard {
    let child = Command::new("ip")
        .args(["netns", "exec", &topo.relay.name, relay_bin()])
        .args(["--listen", &format!("{RELAY}:{LISTEN}")])
        .args(["--tls-listen", &format!("{RELAY}:{TLS}")])
        .args(["--cert", cert, "--key", key])
        .args(["--metrics-listen", &format!("{RELAY}:{METRICS}")])
        .args(["--realm", "example.org", "--user", "alice:wonderland"])
        .args(["--allow-peer", PEER, "--relay-ip", RELAY])
        .args(["--xdp-interface", &topo.dev, "--xdp-mode", "skb"])
        .args(["--workers", "2", "--drain-timeout", "0"])
        .args(["--allocation-lifetime", "30s"])
        .args(["--permission-lifetime", "20s"])
        .args(["--channel-lifetime", "25s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn relay");
    Guard(child)
}

/// The relay's metrics text, fetched from the outside namespace.
fn metrics(topo: &Topology) -> String {
    let addr: SocketAddr = format!("{RELAY}:{METRICS}").parse().expect("addr");
    topo.outside.enter(|| common::http_get(addr, "/metrics").1)
}

/// The sum of every series of `name` (all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One sample of what the relay holds.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at: f64,
    rss_kb: f64,
    fds: f64,
    threads: f64,
    tasks: f64,
    allocations: f64,
    permissions: f64,
    channels: f64,
    connections: f64,
    map_entries: f64,
}

impl Sample {
    const FIELDS: [&'static str; 9] = [
        "rss_kb",
        "fds",
        "threads",
        "tasks",
        "allocations",
        "permissions",
        "channels",
        "connections",
        "map_entries",
    ];

    fn get(&self, field: &str) -> f64 {
        match field {
            "rss_kb" => self.rss_kb,
            "fds" => self.fds,
            "threads" => self.threads,
            "tasks" => self.tasks,
            "allocations" => self.allocations,
            "permissions" => self.permissions,
            "channels" => self.channels,
            "connections" => self.connections,
            _ => self.map_entries,
        }
    }

    fn line(&self) -> String {
        format!(
            "soak: t={:6.0}s rss={:7.0}kB fds={:4} threads={:2} tasks={:4} allocations={:4} \
             permissions={:4} channels={:4} connections={:3} map_entries={:4}",
            self.at,
            self.rss_kb,
            self.fds,
            self.threads,
            self.tasks,
            self.allocations,
            self.permissions,
            self.channels,
            self.connections,
            self.map_entries
        )
    }
}

/// Reads what the relay (process `pid`, maps `maps`) holds now.
fn sample(topo: &Topology, pid: u32, maps: &[u64], began: Instant) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(f64::NAN, |d| d.count() as f64);
    let text = metrics(topo);
    let map_entries = maps
        .iter()
        .map(|id| map_entries(&topo.relay.name, *id).unwrap_or(0) as f64)
        .sum();
    Sample {
        at: began.elapsed().as_secs_f64(),
        rss_kb: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
        tasks: metric_value(&text, "xdpturn_worker_tasks"),
        allocations: metric_value(&text, "xdpturn_allocations"),
        permissions: metric_value(&text, "xdpturn_permissions"),
        channels: metric_value(&text, "xdpturn_channels"),
        connections: metric_sum(&text, "xdpturn_client_connections"),
        map_entries,
    }
}

/// Least-squares slope of `y` over `x`, per hour (x in seconds).
fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx * 3600.0 }
}

/// What the load threads did, summed.
#[derive(Default)]
struct Tally {
    uclient_runs: AtomicU64,
    uclient_failed: AtomicU64,
    uclient_sent: AtomicU64,
    uclient_received: AtomicU64,
    own_allocations: AtomicU64,
    own_failures: AtomicU64,
    own_round_trips: AtomicU64,
    own_deleted: AtomicU64,
    own_abandoned: AtomicU64,
}

/// Runs uclient with `args` again and again until `stop`.
fn uclient_loop(
    topo: &Topology,
    server: SocketAddr,
    peer: SocketAddr,
    args: &'static [&'static str],
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> JoinHandle<()> {
    let wrapper: Vec<String> = topo.outside_exec().iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let creds = ["-u", "alice", "-w", "wonderland"];
        while !stop.load(Ordering::Acquire) {
            let all = [&creds[..], args].concat();
            let stats = uclient_with(&wrapper, server, peer, &all, Duration::from_secs(120));
            tally.uclient_runs.fetch_add(1, Ordering::Relaxed);
            if !stats.exited_ok {
                tally.uclient_failed.fetch_add(1, Ordering::Relaxed);
            }
            tally.uclient_sent.fetch_add(stats.sent, Ordering::Relaxed);
            tally
                .uclient_received
                .fetch_add(stats.received, Ordering::Relaxed);
        }
    })
}

/// The test's own client, in the outside namespace: allocate, permit, bind, relay, then in
/// turn delete, refresh and leave, or leave.
fn own_client_loop(outside: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        netns::enter_by_name(&outside);
        let server: SocketAddr = format!("{RELAY}:{LISTEN}").parse().expect("addr");
        let peer = UdpSocket::bind(format!("{PEER}:0")).expect("bind peer");
        peer.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let peer_addr = peer.local_addr().expect("peer addr");
        let mut round = 0u64;
        while !stop.load(Ordering::Acquire) {
            round += 1;
            let mut client = TurnClient::new(
                server,
                &format!("{CLIENT}:0"),
                "alice",
                "wonderland",
                "example.org",
            );
            let Ok(relayed) = client.allocate() else {
                tally.own_failures.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            tally.own_allocations.fetch_add(1, Ordering::Relaxed);
            let channel = 0x4000 + (round % 0x3FFF) as u16;
            if client.create_permission(peer_addr).is_some()
                || client.channel_bind(channel, peer_addr).is_some()
            {
                tally.own_failures.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut buf = [0u8; 1500];
            for i in 0..20u32 {
                let payload = i.to_be_bytes();
                let mut cd = channel.to_be_bytes().to_vec();
                cd.extend_from_slice(&4u16.to_be_bytes());
                cd.extend_from_slice(&payload);
                if client.socket.send_to(&cd, server).is_err() {
                    break;
                }
                let Ok((n, from)) = peer.recv_from(&mut buf) else {
                    continue;
                };
                if from != relayed || buf[..n] != payload {
                    continue;
                }
                let _ = peer.send_to(&buf[..n], from);
                if client.socket.recv_from(&mut buf).is_ok() {
                    tally.own_round_trips.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            match round % 3 {
                0 => {
                    if client.delete().is_none() {
                        tally.own_deleted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                1 => {
                    let refreshed = client.request(relay::stun::Method::REFRESH, &|_| {});
                    if refreshed.is_none_or(|r| r.code.is_some()) {
                        tally.own_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.own_abandoned.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    tally.own_abandoned.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

fn minutes() -> f64 {
    std::env::var("XDPTURN_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2.0)
}

fn sample_every() -> Duration {
    Duration::from_secs(
        std::env::var("XDPTURN_SOAK_SAMPLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10)
            .max(1),
    )
}

/// Waits up to `timeout` for `f`, sampling; the last sample.
fn settle(
    timeout: Duration,
    mut take: impl FnMut() -> Sample,
    done: impl Fn(&Sample) -> bool,
) -> Sample {
    let deadline = Instant::now() + timeout;
    loop {
        let s = take();
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
#[ignore = "a soak of minutes: `cargo xtask soak --minutes N`"]
fn soak() {
    require("turnutils_uclient", "coturn");
    require("bpftool", "bpftool");
    let topo = Topology::new();
    let dir = TempDir::new("soak");
    let (cert, key) = write_cert(dir.path());
    let relay = start_relay(&topo, &cert, &key);
    let pid = relay.0.id();

    // Up, attached, and the maps known.
    let deadline = Instant::now() + Duration::from_secs(30);
    let program = loop {
        if let Some(p) = xdp_programs(&topo.relay.name, &topo.dev).first() {
            break *p;
        }
        assert!(Instant::now() < deadline, "the relay did not attach XDP");
        std::thread::sleep(Duration::from_millis(200));
    };
    let maps: Vec<u64> = MAPS
        .iter()
        .map(|name| program_map(&topo.relay.name, program, name))
        .collect();
    let began = Instant::now();
    let take = || sample(&topo, pid, &maps, began);
    let idle = settle(Duration::from_secs(10), take, |s| s.tasks > 0.0);
    println!("{}  (idle)", idle.line());

    // The peer of coturn's clients.
    let peer_port = {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.local_addr().expect("addr").port()
    };
    let peer_tool = require("turnutils_peer", "coturn");
    let _peer = Guard(
        Command::new("ip")
            .args(["netns", "exec", &topo.outside.name])
            .arg(peer_tool)
            .args(["-L", PEER, "-p", &peer_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnutils_peer"),
    );
    let peer: SocketAddr = format!("{PEER}:{peer_port}").parse().expect("addr");
    let udp: SocketAddr = format!("{RELAY}:{LISTEN}").parse().expect("addr");
    let tls: SocketAddr = format!("{RELAY}:{TLS}").parse().expect("addr");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    /// Stops the load threads when the test ends, however it ends.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let _stop = StopOnDrop(stop.clone());
    let load = vec![
        uclient_loop(
            &topo,
            udp,
            peer,
            &["-m", "4", "-n", "200"],
            stop.clone(),
            tally.clone(),
        ),
        uclient_loop(
            &topo,
            udp,
            peer,
            &["-s", "-m", "2", "-n", "200"],
            stop.clone(),
            tally.clone(),
        ),
        uclient_loop(
            &topo,
            udp,
            peer,
            &["-t", "-m", "2", "-n", "200"],
            stop.clone(),
            tally.clone(),
        ),
        uclient_loop(
            &topo,
            tls,
            peer,
            &["-t", "-S", "-m", "2", "-n", "200"],
            stop.clone(),
            tally.clone(),
        ),
        own_client_loop(topo.outside.name.clone(), stop.clone(), tally.clone()),
    ];

    let length = Duration::from_secs_f64(minutes() * 60.0);
    let every = sample_every();
    let mut samples = Vec::new();
    let load_began = Instant::now();
    while load_began.elapsed() < length {
        std::thread::sleep(every.min(length.saturating_sub(load_began.elapsed())));
        let s = take();
        println!("{}", s.line());
        samples.push(s);
    }
    stop.store(true, Ordering::Release);
    for thread in load {
        thread.join().expect("a load thread");
    }
    let load_secs = load_began.elapsed().as_secs_f64();

    // Everything the load made ends within the lifetimes (allocations 30 s).
    let end = settle(ALLOCATION_LIFETIME + Duration::from_secs(30), take, |s| {
        s.allocations == 0.0
            && s.permissions == 0.0
            && s.channels == 0.0
            && s.connections == 0.0
            && s.map_entries == 0.0
            && s.tasks <= idle.tasks
    });
    println!("{}  (after the load)", end.line());

    // Past the ramp: the first fifth of the load, and at least until the first allocations
    // could have expired.
    let ramp = (load_secs / 5.0).max(ALLOCATION_LIFETIME.as_secs_f64() + 15.0);
    let warm = load_began.duration_since(began).as_secs_f64() + ramp;
    let mut slopes = serde_json::Map::new();
    println!("soak: slopes per hour over the samples after the first {ramp:.0} s of the load:");
    for field in Sample::FIELDS {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.at >= warm)
            .map(|s| (s.at, s.get(field)))
            .collect();
        let slope = slope_per_hour(&points);
        println!("soak:   {field:12} {slope:+12.1} /h");
        slopes.insert(field.to_owned(), serde_json::json!(slope));
    }
    let t = &tally;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let result = serde_json::json!({
        "minutes": load_secs / 60.0,
        "samples": samples.len(),
        "idle": sample_json(&idle),
        "peak": {
            "rss_kb": samples.iter().map(|s| s.rss_kb).fold(0.0, f64::max),
            "fds": samples.iter().map(|s| s.fds).fold(0.0, f64::max),
            "tasks": samples.iter().map(|s| s.tasks).fold(0.0, f64::max),
            "allocations": samples.iter().map(|s| s.allocations).fold(0.0, f64::max),
            "map_entries": samples.iter().map(|s| s.map_entries).fold(0.0, f64::max),
        },
        "end": sample_json(&end),
        "slope_per_hour": slopes,
        "load": {
            "uclient_runs": get(&t.uclient_runs),
            "uclient_failed": get(&t.uclient_failed),
            "uclient_sent": get(&t.uclient_sent),
            "uclient_received": get(&t.uclient_received),
            "own_allocations": get(&t.own_allocations),
            "own_failures": get(&t.own_failures),
            "own_round_trips": get(&t.own_round_trips),
            "own_deleted": get(&t.own_deleted),
            "own_abandoned": get(&t.own_abandoned),
        },
    });
    println!("RESULT soak {result}");

    assert!(
        get(&t.uclient_runs) > get(&t.uclient_failed) && get(&t.own_allocations) > 0,
        "the load did not run: {result}"
    );
    assert!(
        samples.iter().any(|s| s.map_entries > 0.0),
        "nothing went through the kernel's maps: {result}"
    );
    assert_eq!(end.allocations, 0.0, "allocations left: {result}");
    assert_eq!(end.permissions, 0.0, "permissions left: {result}");
    assert_eq!(end.channels, 0.0, "channels left: {result}");
    assert_eq!(end.connections, 0.0, "connections left: {result}");
    assert_eq!(end.map_entries, 0.0, "XDP map entries left: {result}");
    assert_eq!(end.tasks, idle.tasks, "worker tasks left: {result}");
    // A few descriptors may open once and stay (a netlink socket, a log file): a leak is one
    // per allocation or connection, hundreds over a soak.
    assert!(
        end.fds <= idle.fds + 8.0,
        "file descriptors left: {} at idle, {} after: {result}",
        idle.fds,
        end.fds
    );
}

fn sample_json(s: &Sample) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for field in Sample::FIELDS {
        m.insert(field.to_owned(), serde_json::json!(s.get(field)));
    }
    serde_json::Value::Object(m)
}
