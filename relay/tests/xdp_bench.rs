//! `cargo xtask bench-xdp` runs this after the BPF_PROG_TEST_RUN figures (root, release build):
//! relayed packets per CPU-second, end to end, for the floor (relay-ebpf/src/floor.rs, a minimal
//! XDP forwarder attached in native mode where the relay's program would be, with no server
//! behind it), our relay with XDP (native), our relay in userspace only, and coturn's
//! turnserver, one after the other on the same topology; ours beside the floor and beside
//! coturn. Each rate ends with a line `BENCH-XDP-E2E {json}` of its figures, which the xtask
//! puts into its RESULT line.
//!
//! client ns ⇄ relay ns ⇄ peer ns over two veth pairs, every veth end with NAPI (GRO on) in
//! threaded mode, so that receive work runs in kernel threads that can be pinned: the relay's two
//! ends on the relay core, the client's and the peer's on the sender core. The server is pinned
//! to the relay core (`taskset`); it and every NAPI thread run at nice -10. A sender thread on
//! the other core allocates through the server (long-term credentials), binds a channel to a UDP
//! sink in the peer namespace, checks that packets arrive intact from the relayed address, then
//! sends ChannelData flat out or at fixed rates, for a fixed time each: by default 64 datagrams
//! per sendmsg with UDP_SEGMENT, cut at the client's veth (several times cheaper per packet than
//! sendmmsg, XDPTURN_BENCH_SENDER=sendmmsg, so that the sender outruns even the XDP path).
//! The other flows (XDPTURN_BENCH_FLOWS): `channel_p2c_v4`, the channel bound to a socket in the
//! peer namespace, which sends the bare data to the relayed address the same way, the client
//! receiving ChannelData; `send_v4` and `data_v4`, the same two ways with a permission instead
//! of a channel (Send and Data indications); `same_relay_v4`, a second client in the client
//! namespace, each bound by a channel to the other's relayed address, the first sending to the
//! second (the relay sends it back out of the interface it came in by); `channel_c2p_v6`,
//! `channel_p2c_v6` over IPv6 (every namespace has both families); `cross_v4_v6`, an IPv4
//! client with an IPv6 relayed address and peer.
//!
//! Delivered = the receiving veth's rx_packets (the peer's, or the client's). While measuring,
//! the relay namespace's neighbour entry for the receiver names another MAC address, so the
//! receiver's IP layer drops each frame at once and its receive costs the sender's core little. CPU of the relay core = elapsed minus idle,
//! iowait and steal in /proc/stat (idle time is measured, not sampled: this VM's tick clock
//! undercounts per-process time; steal is the hypervisor's), so the softirq and NAPI work of the
//! relaying is counted, which for the XDP path is all of it; others' work on a shared machine counts too, so the benchmark first waits
//! (a while) for a quiet relay core, and also reports the scheduler runtime of the relay's own
//! tasks (its threads and its two NAPI threads) and what other tasks ran meanwhile.
//!
//! Flat out, the userspace servers are flooded (their receive work crowds them out); at a rate
//! every path sustains, the figures compare cost per relayed packet.
//!
//! The machine may be shared and noisy: the figures are printed, not asserted. Asserted: every
//! path delivered packets, the payload and source address are right, and the XDP path's kernel
//! counters carried the traffic (the userspace path's did not).

#![cfg(target_os = "linux")]

mod common;
#[path = "common/floor.rs"]
mod floor;
#[path = "common/netns.rs"]
mod netns;

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::turn::{TurnClient, send_indication};
use common::{Guard, TempDir, http_get, metric_value, relay_bin, require};
use netns::{Netns, mac_str, must, short_id};
use quinn_udp::{Transmit, UdpSocketState};
use relay::dataplane::PROGRAM_BUILT;
use relay::stun::{AddressFamily, Data, Message, XorPeerAddress};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg};

const REALM: &str = "example.org";
const USER: &str = "alice";
const PASSWORD: &str = "wonderland";
const CLIENT_IP: &str = "10.78.1.1";
const LISTEN: &str = "10.78.1.2:3478";
const RELAY_IP: &str = "10.78.2.2";
const PEER: &str = "10.78.2.1:5000";
const METRICS: &str = "127.0.0.1:9641";
const CHANNEL: u16 = 0x4000;
/// Application bytes per packet (ChannelData adds 4).
const DATA_LEN: usize = 100;
/// Datagrams per sendmmsg call.
const BATCH: usize = 64;
/// The relay's and every NAPI thread's nice value, the same for every path: other work on a
/// shared machine delays the relaying less, and the peer's receive goes before the sender.
const NICE: i32 = -10;
/// The MAC address the relay's namespace gives the receiver (the peer, or the client) while
/// measuring (see `measure`).
const SINK_DROP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// Where the floor's datagrams leave from: the relay's address, a port of its range.
const FLOOR_SOURCE: &str = "10.78.2.2:40000";
/// Where the floor sends what the peer sends, for [`Flow::P2c`] (no socket there: the client
/// drops the frames at its IP layer, as it does the other paths').
const FLOOR_CLIENT: &str = "10.78.1.1:40000";
// The same for the IPv6 flows.
const CLIENT_IP6: &str = "fd78:1::1";
const LISTEN6: &str = "[fd78:1::2]:3478";
const RELAY_IP6: &str = "fd78:2::2";
const PEER_IP6: &str = "fd78:2::1";
const PEER6: &str = "[fd78:2::1]:5000";
const FLOOR_SOURCE6: &str = "[fd78:2::2]:40000";
const FLOOR_CLIENT6: &str = "[fd78:1::1]:40000";

/// From the environment, as `cargo xtask bench-xdp` passes them.
struct Settings {
    secs: f64,
    /// Offered packets per second, one round of the three paths each; 0 sends flat out.
    rates: Vec<u64>,
    relay_cpu: usize,
    sender_cpu: usize,
    /// Which of floor, xdp, userspace, coturn to run (XDPTURN_BENCH_PATHS, comma-separated).
    paths: Vec<String>,
    /// How the sender sends: `gso` (UDP_SEGMENT) or `sendmmsg` (XDPTURN_BENCH_SENDER).
    sender: String,
    /// Runs per path and rate, the best kept (XDPTURN_BENCH_REPEAT).
    repeat: usize,
    /// Which directions of a channel, `channel_c2p_v4` and `channel_p2c_v4`
    /// (XDPTURN_BENCH_FLOWS, comma-separated).
    flows: Vec<Flow>,
}

impl Settings {
    fn from_env() -> Settings {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        Settings {
            secs: var("XDPTURN_BENCH_SECS", 5.0_f64).clamp(1.0, 60.0),
            rates: std::env::var("XDPTURN_BENCH_PPS")
                .unwrap_or_else(|_| "50000,200000,0".into())
                .split(',')
                .map(|r| {
                    r.trim()
                        .parse()
                        .expect("XDPTURN_BENCH_PPS: rates, comma-separated")
                })
                .collect(),
            relay_cpu: var("XDPTURN_BENCH_RELAY_CPU", 1),
            sender_cpu: var("XDPTURN_BENCH_SENDER_CPU", 0),
            sender: var("XDPTURN_BENCH_SENDER", "gso".to_owned()),
            repeat: var("XDPTURN_BENCH_REPEAT", 1_usize).max(1),
            paths: std::env::var("XDPTURN_BENCH_PATHS")
                .unwrap_or_else(|_| "floor,xdp,skb,tc,userspace,coturn".into())
                .split(',')
                .map(|p| p.trim().to_lowercase())
                .collect(),
            flows: std::env::var("XDPTURN_BENCH_FLOWS")
                .unwrap_or_else(|_| Flow::ALL.map(Flow::key).join(","))
                .split(',')
                .map(|f| {
                    Flow::from_key(f.trim()).unwrap_or_else(|| {
                        let known: Vec<&str> = Flow::ALL.iter().map(|f| f.key()).collect();
                        panic!("XDPTURN_BENCH_FLOWS: {f:?} is none of {}", known.join(", "))
                    })
                })
                .collect(),
        }
    }
}

/// Which way the relayed packets go, and how.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Flow {
    /// ChannelData from the client, UDP to the peer.
    C2p,
    /// UDP from the peer, ChannelData to the client.
    P2c,
    /// Send indications from the client, UDP to the peer.
    Send,
    /// UDP from the peer, Data indications to the client.
    Data,
    /// ChannelData from one client to the relayed address of another on the same relay,
    /// ChannelData to that client: both in the client namespace.
    SameRelay,
    /// [`Flow::C2p`] over IPv6.
    C2pV6,
    /// [`Flow::P2c`] over IPv6.
    P2cV6,
    /// [`Flow::C2p`] from an IPv4 client to an IPv6 peer (a relayed address of the other
    /// family, RFC 6156).
    CrossV4V6,
}

impl Flow {
    const ALL: [Flow; 8] = [
        Flow::C2p,
        Flow::P2c,
        Flow::Send,
        Flow::Data,
        Flow::SameRelay,
        Flow::C2pV6,
        Flow::P2cV6,
        Flow::CrossV4V6,
    ];

    fn key(self) -> &'static str {
        match self {
            Flow::C2p => "channel_c2p_v4",
            Flow::P2c => "channel_p2c_v4",
            Flow::Send => "send_v4",
            Flow::Data => "data_v4",
            Flow::SameRelay => "same_relay_v4",
            Flow::C2pV6 => "channel_c2p_v6",
            Flow::P2cV6 => "channel_p2c_v6",
            Flow::CrossV4V6 => "cross_v4_v6",
        }
    }

    fn from_key(key: &str) -> Option<Flow> {
        Flow::ALL.into_iter().find(|f| f.key() == key)
    }

    fn describe(self) -> &'static str {
        match self {
            Flow::C2p => "ChannelData from the client, UDP to the peer",
            Flow::P2c => "UDP from the peer, ChannelData to the client",
            Flow::Send => "Send indications from the client, UDP to the peer",
            Flow::Data => "UDP from the peer, Data indications to the client",
            Flow::SameRelay => {
                "ChannelData from a client to another's relayed address on the same relay, ChannelData to that client"
            }
            Flow::C2pV6 => "ChannelData from the client, UDP to the peer, IPv6",
            Flow::P2cV6 => "UDP from the peer, ChannelData to the client, IPv6",
            Flow::CrossV4V6 => "ChannelData from an IPv4 client, UDP to an IPv6 peer",
        }
    }

    /// Whether the client reaches the server over IPv6.
    fn client_v6(self) -> bool {
        matches!(self, Flow::C2pV6 | Flow::P2cV6)
    }

    /// Whether the relayed address and the peer are IPv6.
    fn peer_v6(self) -> bool {
        matches!(self, Flow::C2pV6 | Flow::P2cV6 | Flow::CrossV4V6)
    }

    /// The server's address for the client.
    fn listen(self) -> &'static str {
        if self.client_v6() { LISTEN6 } else { LISTEN }
    }

    /// The client's address, port 0.
    fn client_bind(self) -> String {
        if self.client_v6() {
            format!("[{CLIENT_IP6}]:0")
        } else {
            format!("{CLIENT_IP}:0")
        }
    }

    /// The receiving end among [`Topology::ends`]: the peer's veth, or the client's.
    fn receiving_end(self) -> usize {
        match self {
            Flow::C2p | Flow::Send | Flow::C2pV6 | Flow::CrossV4V6 => 3,
            Flow::P2c | Flow::Data | Flow::SameRelay | Flow::P2cV6 => 0,
        }
    }
}

/// The three namespaces and the four veth ends: client `c` ⇄ `ra` relay `rb` ⇄ `p` peer.
struct Topology {
    client: Netns,
    relay: Netns,
    peer: Netns,
    c: String,
    ra: String,
    rb: String,
    p: String,
}

impl Topology {
    fn new() -> Topology {
        let id = short_id();
        let t = Topology {
            client: Netns::new("bench-client"),
            relay: Netns::new("bench-relay"),
            peer: Netns::new("bench-peer"),
            c: format!("xb{id}c"),
            ra: format!("xb{id}ra"),
            rb: format!("xb{id}rb"),
            p: format!("xb{id}p"),
        };
        t.client.veth(&t.c, &t.relay, &t.ra);
        t.relay.veth(&t.rb, &t.peer, &t.p);
        t.client.ip(&format!("addr add {CLIENT_IP}/24 dev {}", t.c));
        t.relay.ip(&format!("addr add 10.78.1.2/24 dev {}", t.ra));
        t.relay.ip(&format!("addr add {RELAY_IP}/24 dev {}", t.rb));
        t.peer.ip(&format!("addr add 10.78.2.1/24 dev {}", t.p));
        // IPv6 beside, usable at once (no duplicate address detection in a namespace of ours).
        t.client
            .ip(&format!("addr add {CLIENT_IP6}/64 dev {} nodad", t.c));
        t.relay
            .ip(&format!("addr add fd78:1::2/64 dev {} nodad", t.ra));
        t.relay
            .ip(&format!("addr add {RELAY_IP6}/64 dev {} nodad", t.rb));
        t.peer
            .ip(&format!("addr add {PEER_IP6}/64 dev {} nodad", t.p));
        for (ns, dev) in t.ends() {
            ns.ip(&format!("link set {dev} up mtu 1500"));
            // Checksum offload stays on, as a user has it: the senders' datagrams arrive with
            // partial checksums, which the program handles (see relay-ebpf's `forward`).
            // GRO gives a veth end NAPI (a ring and a poll loop) without XDP, so every path
            // receives the same way and a redirected frame has somewhere to land. A veth hands
            // a datagram that is not XDP's to its peer's NAPI only when the sending end has no
            // TCP segmentation offload (net/veth.c, veth_skb_is_eligible_for_gro); otherwise the
            // peer receives it in the sending CPU's backlog, and the relay's receive work for
            // the skb, TC, userspace and coturn paths would land on the sender's core, unmeasured.
            ns.exec(&["ethtool", "-K", dev, "gro", "on", "tso", "off"]);
            ns.write_sys(dev, "threaded", "1");
        }
        // The sender's UDP_SEGMENT batches are cut into datagrams at the client's end (the
        // peer's, sending to the client), before the relay sees them (veth would otherwise carry
        // them whole).
        for (ns, dev) in [(&t.client, &t.c), (&t.peer, &t.p)] {
            ns.exec(&[
                "ethtool",
                "-K",
                dev,
                "tx-udp-segmentation",
                "off",
                "gso",
                "off",
            ]);
        }
        t.client.ip("route add default via 10.78.1.2");
        t.peer.ip(&format!("route add default via {RELAY_IP}"));
        t.client.ip("-6 route add default via fd78:1::2");
        t.peer.ip(&format!("-6 route add default via {RELAY_IP6}"));
        t
    }

    fn ends(&self) -> [(&Netns, &str); 4] {
        [
            (&self.client, &self.c),
            (&self.relay, &self.ra),
            (&self.relay, &self.rb),
            (&self.peer, &self.p),
        ]
    }

    /// Pins each end's NAPI thread: the relay's ends to the relay core, the others to the
    /// sender core. Attaching or detaching XDP may re-create the threads, so this runs before
    /// every measurement. Returns the relay's NAPI threads and all four ends'.
    fn pin_napi(&self, s: &Settings) -> (Vec<u32>, Vec<u32>) {
        let (mut relay, mut pinned) = (Vec::new(), Vec::new());
        for (ns, dev) in self.ends() {
            ns.write_sys(dev, "threaded", "1");
            let relay_side = dev == self.ra || dev == self.rb;
            let cpu = if relay_side {
                s.relay_cpu
            } else {
                s.sender_cpu
            };
            for pid in napi_threads(dev) {
                must("taskset", &["-pc", &cpu.to_string(), &pid.to_string()]);
                // Ahead of the sender (the peer's receive goes first, so what the relay sends
                // is not lost for want of a CPU there) and of other work on a shared machine.
                let tid = rustix::process::Pid::from_raw(pid as i32);
                rustix::process::setpriority_process(tid, NICE).expect("setpriority");
                pinned.push(pid);
                if relay_side {
                    relay.push(pid);
                }
            }
        }
        (relay, pinned)
    }

    /// Each end's /proc/net/dev counters (rx bytes, packets, errs, drop, ..., tx bytes at 8).
    fn dev_stats(&self) -> [Vec<u64>; 4] {
        self.ends().map(|(ns, dev)| {
            ns.enter(|| {
                // /proc/thread-self/net is this thread's namespace's.
                let text = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
                text.lines()
                    .find_map(|l| {
                        let (name, rest) = l.split_once(':')?;
                        (name.trim() == dev).then(|| {
                            rest.split_whitespace()
                                .map(|v| v.parse().unwrap_or(0))
                                .collect()
                        })
                    })
                    .expect("interface in /proc/net/dev")
            })
        })
    }

    /// A series of the relay's metrics, 0 when absent or while the relay is starting.
    fn metric(&self, series: &str) -> f64 {
        let addr: SocketAddr = METRICS.parse().expect("addr");
        let body = self.relay.enter(|| {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                http_get(addr, "/metrics").1
            } else {
                String::new()
            }
        });
        metric_value(&body, series)
    }
}

/// PIDs of the NAPI kernel threads of `dev` (`napi/<dev>-<id>`, cut to 15 characters).
fn napi_threads(dev: &str) -> Vec<u32> {
    let prefix = format!("napi/{dev}-");
    let prefix = &prefix[..prefix.len().min(15)];
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|comm| comm.trim_end().starts_with(prefix))
        {
            pids.push(pid);
        }
    }
    pids
}

/// One core's counters from /proc/stat, in ticks.
#[derive(Clone, Copy, Default)]
struct CpuTicks {
    /// idle + iowait.
    idle: u64,
    /// user + nice + system + irq + softirq + steal, as sampled by the tick.
    busy: u64,
    softirq: u64,
    /// Time the hypervisor ran something else while this virtual CPU wanted to run.
    steal: u64,
}

fn cpu_ticks(cpu: usize) -> CpuTicks {
    let text = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let name = format!("cpu{cpu}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&name))
        .unwrap_or_else(|| panic!("no {name} in /proc/stat"));
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("a number"))
        .collect();
    CpuTicks {
        idle: f[3] + f[4],
        busy: f[0] + f[1] + f[2] + f[5] + f[6] + f[7],
        softirq: f[6],
        steal: f[7],
    }
}

/// CPU time the scheduler measured (ns, not sampled) for `pid`'s threads: /proc/PID/task/*/
/// schedstat. A NAPI thread's time is its receive work, XDP included.
fn task_runtime(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Waits, at most XDPTURN_BENCH_QUIET_WAIT seconds (default 30), for a second in which the
/// relay core is at most 10% busy (the relay idle: other work on a shared machine). Returns the
/// last second's busy fraction.
fn wait_quiet(s: &Settings, hz: f64) -> f64 {
    let wait: f64 = std::env::var("XDPTURN_BENCH_QUIET_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let deadline = Instant::now() + Duration::from_secs_f64(wait);
    loop {
        let (b0, t0) = (cpu_ticks(s.relay_cpu), Instant::now());
        std::thread::sleep(Duration::from_secs(1));
        let (b1, t1) = (cpu_ticks(s.relay_cpu), Instant::now());
        let busy = 1.0 - (b1.idle - b0.idle) as f64 / hz / (t1 - t0).as_secs_f64();
        if busy <= 0.1 || Instant::now() >= deadline {
            return busy.max(0.0);
        }
    }
}

/// Every task's scheduler runtime (ns) and name, by task id.
fn all_tasks() -> HashMap<u32, (u64, String)> {
    let mut tasks = HashMap::new();
    for process in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if process
            .file_name()
            .to_str()
            .is_none_or(|n| n.parse::<u32>().is_err())
        {
            continue;
        }
        let Ok(threads) = std::fs::read_dir(process.path().join("task")) else {
            continue;
        };
        for t in threads.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let runtime = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|v| v.split_whitespace().next()?.parse().ok());
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if let Some(runtime) = runtime {
                tasks.insert(tid, (runtime, comm.trim_end().to_owned()));
            }
        }
    }
    tasks
}

/// What tasks other than the relay's, its NAPI threads and this benchmark ran meanwhile, on
/// either core: "<CPU-s> (<top names>)". Work of others on a shared machine shows here.
fn others_runtime(
    before: &HashMap<u32, (u64, String)>,
    after: &HashMap<u32, (u64, String)>,
    relay_pid: u32,
    napi: &[u32],
) -> String {
    let ours = |tid: &u32| {
        napi.contains(tid)
            || std::fs::read_to_string(format!("/proc/{tid}/status")).is_ok_and(|st| {
                st.lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .is_some_and(|tgid| tgid == relay_pid || tgid == std::process::id())
            })
    };
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for (tid, (runtime, comm)) in after {
        let delta = runtime - before.get(tid).map_or(0, |b| b.0.min(*runtime));
        if delta > 0 && !ours(tid) {
            *by_name.entry(comm).or_default() += delta;
        }
    }
    let total: u64 = by_name.values().sum();
    let mut top: Vec<(&str, u64)> = by_name.into_iter().collect();
    top.sort_by_key(|(_, ns)| std::cmp::Reverse(*ns));
    let top: Vec<String> = top
        .iter()
        .take(3)
        .map(|(name, ns)| format!("{name} {:.2}", *ns as f64 / 1e9))
        .collect();
    format!("{:.2} s ({})", total as f64 / 1e9, top.join(", "))
}

/// Processes (and threads) created since boot: /proc/stat `processes`.
fn forks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .expect("/proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("processes ")?.trim().parse().ok())
        .expect("processes in /proc/stat")
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

fn pin_current_thread(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Floor,
    Xdp,
    /// Our relay with XDP in generic (skb) mode.
    Skb,
    /// Our relay with its TC program instead of XDP.
    Tc,
    Userspace,
    Coturn,
}

impl Path {
    /// The `--xdp-mode` of our relay's kernel paths.
    fn kernel_mode(self) -> Option<&'static str> {
        match self {
            Path::Xdp => Some("native"),
            Path::Skb => Some("skb"),
            Path::Tc => Some("tc"),
            Path::Floor | Path::Userspace | Path::Coturn => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Path::Floor => "floor XDP (native)",
            Path::Xdp => "xdpturn XDP (native)",
            Path::Skb => "xdpturn XDP (skb)",
            Path::Tc => "xdpturn TC",
            Path::Userspace => "xdpturn userspace",
            Path::Coturn => "coturn",
        }
    }
}

/// Starts the server for `path` in the relay namespace, pinned to the relay core.
fn start(path: Path, topo: &Topology, s: &Settings, dir: &TempDir) -> Guard {
    let log = std::fs::File::create(dir.path().join(format!("{path:?}.log"))).expect("log file");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &topo.relay.name])
        .args(["nice", "-n", &NICE.to_string()])
        .args(["taskset", "-c", &s.relay_cpu.to_string()]);
    match path {
        Path::Floor => unreachable!("the floor is a program, not a server"),
        Path::Xdp | Path::Skb | Path::Tc | Path::Userspace => {
            cmd.arg(relay_bin())
                .args(["--listen", LISTEN, "--listen", LISTEN6])
                .args(["--metrics-listen", METRICS])
                .args(["--realm", REALM, "--user", &format!("{USER}:{PASSWORD}")])
                .args(["--relay-ip", RELAY_IP, "--relay-ip", RELAY_IP6])
                .args([
                    "--allow-peer",
                    "10.78.2.0/24",
                    "--allow-peer",
                    "fd78:2::/64",
                ])
                .args(["--min-port", "40000", "--max-port", "40999"])
                .args(["--workers", "1", "--software", "", "--drain-timeout", "0"]);
            if let Some(mode) = path.kernel_mode() {
                cmd.args(["--xdp-interface", &topo.ra, "--xdp-interface", &topo.rb])
                    .args(["--xdp-mode", mode]);
            }
        }
        Path::Coturn => {
            cmd.arg("turnserver")
                .current_dir(dir.path())
                .args(["-n", "--no-cli", "--no-tls", "--no-dtls"])
                .args(["--log-file", "stdout", "--simple-log"])
                .args(["--listening-ip", "10.78.1.2", "--listening-ip", "fd78:1::2"])
                .args(["--listening-port", "3478"])
                .args(["--relay-ip", RELAY_IP, "--relay-ip", RELAY_IP6])
                .args([
                    "--allowed-peer-ip",
                    "10.78.2.1",
                    "--allowed-peer-ip",
                    PEER_IP6,
                ])
                // Its own relayed addresses, for same_relay_v4.
                .args(["--allowed-peer-ip", RELAY_IP])
                .args(["--min-port", "40000", "--max-port", "40999"])
                .args(["--lt-cred-mech", "--realm", REALM])
                .args(["--user", &format!("{USER}:{PASSWORD}")])
                // One relay thread, as ours runs one worker on its one core.
                .args(["--relay-threads", "1", "--no-software-attribute"])
                .arg("--db")
                .arg(dir.path().join("turndb.sqlite"))
                .arg("--pidfile")
                .arg(dir.path().join("turnserver.pid"));
        }
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    Guard(child)
}

fn log_tail(dir: &TempDir, path: Path) -> String {
    let text =
        std::fs::read_to_string(dir.path().join(format!("{path:?}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Allocates from the client namespace, retrying with a fresh socket (coturn ignores a 5-tuple
/// whose first datagram came while it was starting) until `deadline`; `None` after that.
fn allocate(topo: &Topology, flow: Flow, deadline: Instant) -> Option<(TurnClient, SocketAddr)> {
    let server: SocketAddr = flow.listen().parse().expect("addr");
    let family = if flow.peer_v6() {
        AddressFamily::IPV6
    } else {
        AddressFamily::IPV4
    };
    loop {
        let attempt = topo.client.enter(|| {
            let mut client = TurnClient::new(server, &flow.client_bind(), USER, PASSWORD, REALM);
            client
                .socket
                .set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            let relayed = client.allocate_family(Some(family)).ok()?;
            Some((client, relayed))
        });
        if attempt.is_some() || Instant::now() >= deadline {
            return attempt;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// ChannelData on `channel`.
fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(4 + data.len());
    packet.extend_from_slice(&channel.to_be_bytes());
    packet.extend_from_slice(&(data.len() as u16).to_be_bytes());
    packet.extend_from_slice(data);
    packet
}

/// Sends `packet` on the connected `socket` from a thread pinned to `cpu` for `secs`, at `pps`
/// (0: flat out). Returns the datagrams the kernel took and the time it took.
fn blast(socket: &UdpSocket, packet: &[u8], s: &Settings, pps: u64) -> (u64, Duration) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin_current_thread(s.sender_cpu);
                // gso: one sendmsg carries BATCH datagrams (UDP_SEGMENT), which the kernel cuts
                // at the client's veth (its UDP segmentation offload is off): one pass through
                // the socket layer and the route per batch, far cheaper than sendmmsg.
                let gso = (s.sender == "gso").then(|| {
                    let state = UdpSocketState::new(socket.into()).expect("quinn-udp");
                    let n = state.max_gso_segments().min(BATCH);
                    (state, packet.repeat(n), n)
                });
                let destination = socket.peer_addr().expect("connected");
                let iov = [IoSlice::new(packet)];
                let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
                    (0..BATCH).map(|_| SendAncillaryBuffer::default()).collect();
                let mut msgs: Vec<MMsgHdr<'_>> =
                    controls.iter_mut().map(|c| MMsgHdr::new(&iov, c)).collect();
                let length = Duration::from_secs_f64(s.secs);
                let start = Instant::now();
                let mut sent = 0u64;
                loop {
                    let now = Instant::now();
                    if now - start >= length {
                        break (sent, now - start);
                    }
                    if pps > 0 {
                        let due = start + Duration::from_secs_f64(sent as f64 / pps as f64);
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    // A full veth ring refuses some (ENOBUFS): they count as not offered.
                    if let Some((state, contents, n)) = &gso {
                        let transmit = Transmit {
                            destination,
                            ecn: None,
                            contents,
                            segment_size: Some(packet.len()),
                            src_ip: None,
                        };
                        if state.try_send(socket.into(), &transmit).is_ok() {
                            sent += *n as u64;
                        }
                    } else if let Ok(n) = sendmmsg(socket, &mut msgs, SendFlags::empty()) {
                        sent += n as u64;
                    }
                }
            })
            .join()
            .expect("sender")
    })
}

impl Figures {
    /// CPU-seconds of the relay core: its busy time, and at least the relay's own tasks'
    /// runtime there (all of them are pinned to it). Under a hypervisor that steals time, the
    /// idle and steal ticks can together exceed what the core really idled, and a short run's
    /// busy time come out below its tasks' (even below zero).
    fn core_cpu_s(&self) -> f64 {
        self.relay_cpu_s.max(self.tasks_cpu_s)
    }

    /// CPU-seconds of the relay core not spent in the relay's tasks: others' work, and the
    /// interrupts and idle exits the relaying causes.
    fn disturbed(&self) -> f64 {
        self.relay_cpu_s - self.tasks_cpu_s
    }
}

struct Figures {
    path: Path,
    offered_pps: f64,
    delivered_pps: f64,
    /// Seconds of sending.
    took: f64,
    /// The relay core's busy fraction just before, the relay idle.
    background: f64,
    loss: f64,
    relay_cpu_s: f64,
    tasks_cpu_s: f64,
    sender_cpu_s: f64,
}

/// What a measurement sends: from which socket (connected to where it sends), what, and the
/// sockets that must stay open meanwhile.
struct Setup {
    sender: UdpSocket,
    packet: Vec<u8>,
    _keep: Vec<UdpSocket>,
}

/// Starts the server for `path`, sets up what `flow` needs (allocations, a channel or a
/// permission) and checks that a few packets go its way, intact: to the peer's `sink` from the
/// relayed address, or to the client as ChannelData or a Data indication from the peer.
fn start_server(
    path: Path,
    flow: Flow,
    topo: &Topology,
    sink: &UdpSocket,
    s: &Settings,
    dir: &TempDir,
) -> (Guard, Setup) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let server = start(path, topo, s, dir);
    if let Some(mode) = path.kernel_mode() {
        while topo.metric("xdpturn_xdp_attached") != 1.0 {
            assert!(
                Instant::now() < deadline,
                "the relay did not attach its program in {mode} mode:\n{}",
                log_tail(dir, path)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let name = format!("{} {}", flow.key(), path.name());
    let must_allocate = || {
        allocate(topo, flow, deadline).unwrap_or_else(|| {
            panic!(
                "{name}: no allocation through the relay:\n{}",
                log_tail(dir, path)
            )
        })
    };
    let (mut client, relayed) = must_allocate();
    client.socket.connect(client.server).expect("connect");
    let ok = |what: &str, code: Option<u16>| {
        assert!(
            code.is_none(),
            "{name}: {what} refused ({code:?}):\n{}",
            log_tail(dir, path)
        );
    };
    let data = bench_data();
    let setup = match flow {
        Flow::C2p | Flow::Send | Flow::C2pV6 | Flow::CrossV4V6 => {
            let peer = sink.local_addr().expect("addr");
            let packet = if flow == Flow::Send {
                ok("CreatePermission", client.create_permission(peer));
                send_indication(peer, &data)
            } else {
                ok("ChannelBind", client.channel_bind(CHANNEL, peer));
                channel_data(CHANNEL, &data)
            };
            // The first packets also resolve the neighbours (the program passes a packet up
            // while its next hop is unknown).
            sink.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let mut buf = [0u8; 2048];
            for i in 0..20 {
                client.socket.send(&packet).expect("send");
                let (n, from) = sink.recv_from(&mut buf).unwrap_or_else(|e| {
                    panic!(
                        "{name}: packet {i} did not reach the peer: {e}\n{}",
                        log_tail(dir, path)
                    )
                });
                assert_eq!(&buf[..n], &data[..], "{name}: payload");
                assert_eq!(from, relayed, "{name}: source address");
                std::thread::sleep(Duration::from_millis(10));
            }
            Setup {
                sender: client.socket,
                packet,
                _keep: Vec::new(),
            }
        }
        Flow::P2c | Flow::Data | Flow::P2cV6 => {
            // A socket of the peer's own per server (the sink keeps its address).
            let bind = if flow.peer_v6() {
                format!("[{PEER_IP6}]:0")
            } else {
                "10.78.2.1:0".to_owned()
            };
            let from_peer = topo
                .peer
                .enter(|| UdpSocket::bind(&bind).expect("bind the peer's sender"));
            let peer = from_peer.local_addr().expect("addr");
            let expected = if flow == Flow::Data {
                ok("CreatePermission", client.create_permission(peer));
                Expect::Data(peer)
            } else {
                ok("ChannelBind", client.channel_bind(CHANNEL, peer));
                Expect::Channel(CHANNEL)
            };
            from_peer.connect(relayed).expect("connect");
            check_arrivals(
                &name,
                &from_peer,
                &data,
                &client.socket,
                expected,
                dir,
                path,
            );
            Setup {
                sender: from_peer,
                packet: data,
                _keep: vec![client.socket],
            }
        }
        Flow::SameRelay => {
            // Each binds a channel to the other's relayed address, as a browser does once its
            // first ChannelBind succeeds.
            let (mut other, other_relayed) = must_allocate();
            other.socket.connect(other.server).expect("connect");
            ok("ChannelBind", client.channel_bind(CHANNEL, other_relayed));
            ok("ChannelBind", other.channel_bind(CHANNEL + 1, relayed));
            let packet = channel_data(CHANNEL, &data);
            check_arrivals(
                &name,
                &client.socket,
                &packet,
                &other.socket,
                Expect::Channel(CHANNEL + 1),
                dir,
                path,
            );
            Setup {
                sender: client.socket,
                packet,
                _keep: vec![other.socket],
            }
        }
    };
    (server, setup)
}

/// What a client receives of [`bench_data`]: ChannelData on a channel, or a Data indication
/// from a peer.
#[derive(Clone, Copy)]
enum Expect {
    Channel(u16),
    Data(SocketAddr),
}

/// Sends `packet` a few times from `from` and checks that each reaches `client` (a socket
/// connected to the server: what it receives came from there) as `expected`, intact.
fn check_arrivals(
    name: &str,
    from: &UdpSocket,
    packet: &[u8],
    client: &UdpSocket,
    expected: Expect,
    dir: &TempDir,
    path: Path,
) {
    let data = bench_data();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    for i in 0..20 {
        from.send(packet).expect("send");
        let n = client.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "{name}: packet {i} did not reach the client: {e}\n{}",
                log_tail(dir, path)
            )
        });
        match expected {
            Expect::Channel(channel) => {
                assert_eq!(
                    &buf[..n],
                    &channel_data(channel, &data)[..],
                    "{name}: ChannelData"
                );
            }
            Expect::Data(peer) => {
                let m = Message::decode(&buf[..n])
                    .unwrap_or_else(|e| panic!("{name}: not a STUN message: {e:?}"));
                assert_eq!(
                    m.get::<XorPeerAddress>().and_then(Result::ok).map(|x| x.0),
                    Some(peer),
                    "{name}: XOR-PEER-ADDRESS"
                );
                assert_eq!(m.get::<Data>(), Some(Ok(Data(&data))), "{name}: DATA");
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The application data of every packet sent.
fn bench_data() -> Vec<u8> {
    (0..DATA_LEN).map(|i| i as u8).collect()
}

/// Attaches the floor (relay-ebpf/src/floor.rs) in native mode to the relay's client-side
/// veth, in the relay's place: every UDP datagram arriving there leaves by the peer-side veth
/// from the relay's address to the peer, addressed to the MAC address the relay's namespace
/// gives the peer while measuring (so the peer's IP layer drops the frames, as it does the
/// other paths'); for [`Flow::P2c`] the other way round, on the peer-side veth, to the client.
/// Sends a few packets and checks that as many frames reach the receiving veth.
/// (Not at the peer's socket: the client's datagrams arrive with partial checksums, which the
/// floor updates as if they were complete, and the peer would drop them for that; the relay's
/// program tells the two apart.) Returns the floor, attached while it lives, and a client
/// socket (the client's, or the peer's for [`Flow::P2c`]) connected to the address the relay
/// would have served it on.
fn start_floor(topo: &Topology, flow: Flow) -> (floor::Floor, UdpSocket) {
    // (attached to, sent from, src, dst, the sender's namespace and address, its destination)
    let (ingress, egress, src, dst, sender, bind, to) = match flow {
        // Cross-family: the floor forwards within one family, the client's.
        Flow::C2p | Flow::Send | Flow::CrossV4V6 => (
            &topo.ra,
            &topo.rb,
            FLOOR_SOURCE,
            PEER,
            &topo.client,
            format!("{CLIENT_IP}:0"),
            LISTEN,
        ),
        // Back out of the interface it came in by, as a same-relay call's packets go. By a
        // redirect to that interface, not XDP_TX: a veth's XDP_TX wakes the other end's NAPI
        // only when that end has an XDP program too (net/veth.c, veth_xdp_flush), while a
        // redirect's transmit does (veth_xdp_xmit with XDP_XMIT_FLUSH).
        Flow::SameRelay => (
            &topo.ra,
            &topo.ra,
            LISTEN,
            FLOOR_CLIENT,
            &topo.client,
            format!("{CLIENT_IP}:0"),
            LISTEN,
        ),
        Flow::P2c | Flow::Data => (
            &topo.rb,
            &topo.ra,
            LISTEN,
            FLOOR_CLIENT,
            &topo.peer,
            "10.78.2.1:0".to_owned(),
            FLOOR_SOURCE,
        ),
        Flow::C2pV6 => (
            &topo.ra,
            &topo.rb,
            FLOOR_SOURCE6,
            PEER6,
            &topo.client,
            format!("[{CLIENT_IP6}]:0"),
            LISTEN6,
        ),
        Flow::P2cV6 => (
            &topo.rb,
            &topo.ra,
            LISTEN6,
            FLOOR_CLIENT6,
            &topo.peer,
            format!("[{PEER_IP6}]:0"),
            FLOOR_SOURCE6,
        ),
    };
    let ifindex = topo.relay.enter(|| {
        let socket = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .expect("socket");
        rustix::net::netdevice::name_to_index(&socket, egress.as_str()).expect("ifindex")
    });
    let src_mac = mac_of(&topo.relay, egress);
    let mut fl = floor::Floor::load(&floor::Rewrite {
        dst_mac: SINK_DROP_MAC,
        src_mac,
        src: src.parse().expect("addr"),
        dst: dst.parse().expect("addr"),
        ifindex,
    });
    topo.relay.enter(|| fl.attach_native(ingress));
    let socket = sender.enter(|| {
        let socket = UdpSocket::bind(&bind).expect("bind the sender");
        socket.connect(to).expect("connect");
        socket
    });
    let packet = flow_packet(flow);
    let end = flow.receiving_end();
    let before = topo.dev_stats()[end][1];
    for _ in 0..20 {
        socket.send(&packet).expect("send");
        std::thread::sleep(Duration::from_millis(10));
    }
    let arrived = topo.dev_stats()[end][1] - before;
    assert!(
        arrived >= 20,
        "the floor ({}): {arrived} of 20 frames reached the receiving veth",
        flow.key()
    );
    (fl, socket)
}

/// What the floor's sender sends: the packets of `flow` (to the floor, only their length
/// matters).
fn flow_packet(flow: Flow) -> Vec<u8> {
    let data = bench_data();
    match flow {
        Flow::C2p | Flow::SameRelay | Flow::C2pV6 | Flow::CrossV4V6 => channel_data(CHANNEL, &data),
        Flow::Send => send_indication(PEER.parse().expect("addr"), &data),
        Flow::P2c | Flow::Data | Flow::P2cV6 => data,
    }
}

/// `dev`'s MAC address in `ns`, from `ip -br link`.
fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-br", "link", "show", "dev", dev])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text.split_whitespace().nth(2).expect("a MAC address");
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("6 bytes")
}

/// One path: start its server (or attach the floor), check a few packets, measure, stop it.
fn measure(
    path: Path,
    flow: Flow,
    topo: &Topology,
    sink: &UdpSocket,
    s: &Settings,
    pps: u64,
    hz: f64,
) -> Figures {
    let dir = TempDir::new("xdp-bench");
    let (server, floor, setup) = if path == Path::Floor {
        let (fl, sender) = start_floor(topo, flow);
        let setup = Setup {
            sender,
            packet: flow_packet(flow),
            _keep: Vec::new(),
        };
        (None, Some(fl), setup)
    } else {
        let (server, setup) = start_server(path, flow, topo, sink, s, &dir);
        (Some(server), None, setup)
    };
    let mut buf = [0u8; 2048];
    let server_pid = server.as_ref().map_or(0, |g| g.0.id());
    let (napi, pinned) = topo.pin_napi(s);
    let relay_tasks = || -> u64 {
        server.as_ref().map_or(0, |g| task_runtime(g.0.id()))
            + napi.iter().map(|&t| task_runtime(t)).sum::<u64>()
    };
    let napi_runtime = || -> u64 { napi.iter().map(|&t| task_runtime(t)).sum::<u64>() };
    // Both directions: a same-relay call's packet is one of each.
    let kernel_counted = || {
        ["client_to_peer", "peer_to_client"]
            .iter()
            .map(|d| {
                topo.metric(&format!(
                    r#"xdpturn_relayed_packets_total{{datapath="xdp",direction="{d}",transport="udp"}}"#
                ))
            })
            .sum::<f64>()
    };
    let ours = path.kernel_mode().is_some() || path == Path::Userspace;
    let xdp_before = if ours { kernel_counted() } else { 0.0 };

    // While measuring, the relay addresses the receiver (the peer, or the client) by a MAC
    // address that is not its own: the receiver's veth counts each frame (rx_packets) and its
    // IP layer drops it at once as another host's, so the receive, which shares the sender's
    // core, costs little. The same for every path; removed afterwards (the next path resolves
    // the receiver again).
    let (receiver, receiver_dev) = match (flow.receiving_end() == 3, flow) {
        (true, f) if f.peer_v6() => (PEER_IP6, &topo.rb),
        (true, _) => ("10.78.2.1", &topo.rb),
        (false, f) if f.client_v6() => (CLIENT_IP6, &topo.ra),
        (false, _) => (CLIENT_IP, &topo.ra),
    };
    let sink_drop = |on: bool| {
        if on {
            topo.relay.ip(&format!(
                "neigh replace {receiver} lladdr {} dev {receiver_dev} nud permanent",
                mac_str(&SINK_DROP_MAC),
            ));
        } else {
            topo.relay
                .ip(&format!("neigh del {receiver} dev {receiver_dev}"));
        }
    };
    sink_drop(true);
    let background = wait_quiet(s, hz);

    let dev0 = topo.dev_stats();
    let others0 = all_tasks();
    let forks0 = forks();
    let (k0, n0) = (relay_tasks(), napi_runtime());
    let (r0, s0, t0) = (
        cpu_ticks(s.relay_cpu),
        cpu_ticks(s.sender_cpu),
        Instant::now(),
    );
    let (sent, took) = blast(&setup.sender, &setup.packet, s, pps);
    // What is still queued drains within the window.
    std::thread::sleep(Duration::from_millis(300));
    let (r1, s1, t1) = (
        cpu_ticks(s.relay_cpu),
        cpu_ticks(s.sender_cpu),
        Instant::now(),
    );
    let (k1, n1) = (relay_tasks(), napi_runtime());
    let others = others_runtime(&others0, &all_tasks(), server_pid, &pinned);
    let forks = forks() - forks0;
    let pinned = pinned.len();
    let dev1 = topo.dev_stats();
    sink_drop(false);
    let delta = |end: usize, field: usize| dev1[end][field] - dev0[end][field];
    // rx drops at each end (a full ring, a full backlog) and tx drops (veth counts a frame its
    // peer's ring refused as the sender's tx drop).
    let drops: Vec<String> = ["client", "relay in", "relay out", "peer"]
        .iter()
        .enumerate()
        .map(|(i, end)| format!("{end} {}/{}", delta(i, 3), delta(i, 11)))
        .collect();
    let wall = (t1 - t0).as_secs_f64();
    // Steal is time the hypervisor gave to something else: nothing of ours ran then.
    let relay_cpu_s = wall - (r1.idle - r0.idle + r1.steal - r0.steal) as f64 / hz;
    let sender_cpu_s = wall - (s1.idle - s0.idle + s1.steal - s0.steal) as f64 / hz;
    let tasks_cpu_s = (k1 - k0) as f64 / 1e9;
    let napi_cpu_s = (n1 - n0) as f64 / 1e9;
    let delivered = delta(flow.receiving_end(), 1);

    let xdp = if !ours {
        0.0
    } else {
        // The kernel counters are exported once a second.
        std::thread::sleep(Duration::from_millis(1500));
        kernel_counted() - xdp_before
    };
    drop(server);
    drop(floor);
    let figures = Figures {
        path,
        offered_pps: sent as f64 / took.as_secs_f64(),
        delivered_pps: delivered as f64 / took.as_secs_f64(),
        took: took.as_secs_f64(),
        background,
        // The peer's rx_packets also counts its few ARP exchanges: a loss of a hair below 0.
        loss: (100.0 * (1.0 - delivered as f64 / sent.max(1) as f64)).max(0.0),
        relay_cpu_s,
        tasks_cpu_s,
        sender_cpu_s,
    };
    println!(
        "{} {}: sent {sent} in {:.2} s, delivered {delivered}; relay core busy {relay_cpu_s:.2} s of \
         {wall:.2} s (tick-sampled {:.2} s, softirq {:.2} s, steal {:.2} s; {:.0}% busy before, idle relay), \
         sender core {sender_cpu_s:.2} s; relay tasks {tasks_cpu_s:.2} s of which its NAPI \
         threads {napi_cpu_s:.2} s ({pinned} NAPI threads pinned); XDP counted {xdp:.0}; \
         drops rx/tx: {}; other tasks on the machine: {others}, and {forks} processes started \
         meanwhile (those that also ended are not in that sum)",
        flow.key(),
        path.name(),
        took.as_secs_f64(),
        (r1.busy - r0.busy) as f64 / hz,
        (r1.softirq - r0.softirq) as f64 / hz,
        (r1.steal - r0.steal) as f64 / hz,
        100.0 * background,
        drops.join(", "),
    );
    assert!(delivered > 0, "{}: nothing delivered", path.name());
    match path {
        Path::Xdp | Path::Skb | Path::Tc => assert!(
            xdp >= 0.5 * delivered as f64,
            "{}: the kernel counted {xdp} of {delivered} delivered packets",
            path.name()
        ),
        Path::Userspace => assert!(
            xdp == 0.0,
            "userspace path: the kernel counted {xdp} packets"
        ),
        Path::Coturn | Path::Floor => {}
    }
    // Empty the sink for the next path.
    sink.set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    while sink.recv(&mut buf).is_ok() {}
    figures
}

/// `cargo xtask bench-xdp` runs this (root; a release build; the XDP program built in).
#[test]
#[ignore = "a benchmark: `cargo xtask bench-xdp` runs it"]
fn bench_packets_per_cpu_second() {
    if !PROGRAM_BUILT {
        panic!("the XDP program is not built into this relay: run `cargo xtask build-ebpf` first");
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "this benchmark creates network namespaces and loads XDP: run it as root"
    );
    require("turnserver", "coturn");
    require("ethtool", "ethtool");
    require("taskset", "util-linux");
    let s = Settings::from_env();
    let hz = clock_ticks();
    let topo = Topology::new();
    let (sink, sink6) = topo.peer.enter(|| {
        (
            UdpSocket::bind(PEER).expect("bind the peer's sink"),
            UdpSocket::bind(PEER6).expect("bind the peer's IPv6 sink"),
        )
    });
    println!(
        "\nEnd to end over veth (client ns <-> relay ns <-> peer ns), {DATA_LEN} bytes of data \
         on a channel, sender {} x{BATCH}, {} s per path; the server and its NAPI threads on CPU \
         {}, the sender and the far ends' NAPI threads on CPU {}",
        s.sender, s.secs, s.relay_cpu, s.sender_cpu
    );
    let runs = s
        .flows
        .iter()
        .flat_map(|&flow| s.rates.iter().map(move |&pps| (flow, pps)));
    for (flow, pps) in runs {
        let offered = if pps == 0 {
            "flat out".to_owned()
        } else {
            format!("{pps} pps")
        };
        println!(
            "\n--> {}: {}; offered: {offered}",
            flow.key(),
            flow.describe()
        );
        let sink = if flow.peer_v6() { &sink6 } else { &sink };
        let all: Vec<Figures> = [
            Path::Floor,
            Path::Xdp,
            Path::Skb,
            Path::Tc,
            Path::Userspace,
            Path::Coturn,
        ]
        .into_iter()
        .filter(|p| s.paths.contains(&format!("{p:?}").to_lowercase()))
        .filter(|&p| match not_on_veth(p, flow) {
            Some(why) => {
                println!("{}: not measured: {why}", p.name());
                false
            }
            None => true,
        })
        .map(|p| {
            // Others' work adds to the relay core's CPU time, not to the relay's tasks': of
            // several runs, the one where the two differ least was the least disturbed.
            (0..s.repeat)
                .map(|_| measure(p, flow, &topo, sink, &s, pps, hz))
                .min_by(|a, b| a.disturbed().total_cmp(&b.disturbed()))
                .expect("at least one run")
        })
        .collect();
        print_table(&all);
        print_part(flow, pps, &all);
    }
}

/// Why `path` cannot relay `flow` on this topology, if it cannot.
fn not_on_veth(path: Path, flow: Flow) -> Option<&'static str> {
    (path == Path::Xdp && flow == Flow::SameRelay).then_some(
        "native XDP sends a same-relay call's packets back out of the ingress interface \
         (XDP_TX), and a veth end's XDP_TX wakes the other end's NAPI only when that end runs an \
         XDP program too (net/veth.c, veth_xdp_flush): the frames would wait in its ring. `auto` \
         picks skb on a veth; on a NIC, XDP_TX is the driver's own transmit",
    )
}

/// The line `cargo xtask bench-xdp` puts into its RESULT line for this rate: packets per
/// CPU-second of the relay core per path (null for a path not run), and the loss of ours and
/// coturn's.
fn print_part(flow: Flow, pps: u64, all: &[Figures]) {
    let find = |p: Path| all.iter().find(|f| f.path == p);
    let per = |p: Path| {
        find(p).map_or("null".to_owned(), |f| {
            format!("{:.0}", f.delivered_pps * f.took / f.core_cpu_s().max(1e-3))
        })
    };
    let loss = |p: Path| find(p).map_or("null".to_owned(), |f| format!("{:.2}", f.loss));
    let rate = if pps == 0 {
        "max".to_owned()
    } else {
        pps.to_string()
    };
    println!(
        "BENCH-XDP-E2E {{\"path\": \"{}\", \"rate\": \"{rate}\", \"figures\": \
         {{\"floor\": {}, \"ours\": {}, \"userspace\": {}, \"coturn\": {}, \
         \"ours_loss_pct\": {}, \"coturn_loss_pct\": {}, \"ours_skb\": {}, \"ours_tc\": {}}}}}",
        flow.key(),
        per(Path::Floor),
        per(Path::Xdp),
        per(Path::Userspace),
        per(Path::Coturn),
        loss(Path::Xdp),
        loss(Path::Coturn),
        per(Path::Skb),
        per(Path::Tc),
    );
}

/// `a / b` as "12.3x", or "-" without b's figure.
fn ratio(a: f64, b: f64) -> String {
    if b.is_nan() {
        "-".into()
    } else {
        format!("{:.1}x", a / b)
    }
}

fn print_table(all: &[Figures]) {
    let per = |f: &Figures, cpu: f64| f.delivered_pps * f.took / cpu.max(1e-3);
    let coturn = all.iter().find(|f| f.path == Path::Coturn);
    let (c_core, c_tasks) = coturn.map_or((f64::NAN, f64::NAN), |c| {
        (per(c, c.core_cpu_s()), per(c, c.tasks_cpu_s))
    });
    let f_core = all
        .iter()
        .find(|f| f.path == Path::Floor)
        .map_or(f64::NAN, |f| per(f, f.core_cpu_s()));
    println!(
        "\nrelay core: its elapsed minus idle and steal time, everything on it (bg: its busy \
         share just before, the relay idle: others' work on a shared machine); relay tasks: \
         scheduler runtime of the server's threads and its veths' NAPI threads; pkts/CPU-s of \
         the core: per CPU-second of the core's time or of the relay tasks', whichever is more"
    );
    let row = |cells: [&str; 13]| {
        println!(
            "{:<21} {:>8} {:>9} {:>5} {:>7} {:>4} {:>7} {:>7} {:>10} {:>6} {:>6} {:>10} {:>6}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9],
            cells[10],
            cells[11],
            cells[12]
        );
    };
    row([
        "path",
        "offered",
        "delivered",
        "loss",
        "relay",
        "bg",
        "relay",
        "sender",
        "pkts/CPU-s",
        "vs",
        "vs",
        "pkts/CPU-s",
        "vs",
    ]);
    row([
        "", "pps", "pps", "%", "core s", "%", "tasks s", "core s", "core", "floor", "coturn",
        "tasks", "coturn",
    ]);
    for f in all {
        let (core, tasks) = (per(f, f.core_cpu_s()), per(f, f.tasks_cpu_s));
        row([
            f.path.name(),
            &format!("{:.0}", f.offered_pps),
            &format!("{:.0}", f.delivered_pps),
            &format!("{:.1}", f.loss),
            &format!("{:.2}", f.relay_cpu_s),
            &format!("{:.0}", 100.0 * f.background),
            &format!("{:.2}", f.tasks_cpu_s),
            &format!("{:.2}", f.sender_cpu_s),
            &format!("{core:.0}"),
            &ratio(core, f_core),
            &ratio(core, c_core),
            &format!("{tasks:.0}"),
            &ratio(tasks, c_tasks),
        ]);
    }
}
