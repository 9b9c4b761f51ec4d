//! The kernel fast path end to end: three network namespaces this test creates (client ⇄ relay
//! ⇄ peer over veth pairs, dual-stack), the real relay with XDP attached to both of its
//! interfaces.
//!
//! - Forwarding: coturn's `turnutils_uclient` binds channels through the relay to
//!   `turnutils_peer`, over IPv4, over IPv6, with an IPv4 client on an IPv6 relayed address
//!   (REQUESTED-ADDRESS-FAMILY, uclient's `-x`) to an IPv6 peer, and the reverse (`-X`). The
//!   channel traffic must be forwarded by XDP (kernel counters carry it, userspace only the
//!   first packets while the neighbours are resolved), with zero loss and no UDP checksum error
//!   counted by the receiving kernels, in skb and native mode, with every namespace as it
//!   starts: forwarding off in the relay's, checksum offloads on everywhere (so the datagrams
//!   arrive with partial checksums, as a container's do).
//! - Both parties on one relay (`turnutils_uclient -y`): client to client through the kernel
//!   in one pass, in skb mode (what `auto` chose on these veths before tc mode).
//! - Nothing forwards behind the relay's back: after an allocation is deleted (Refresh with
//!   LIFETIME 0), after a channel expires, and after the relay exits (SIGTERM, SIGKILL), the
//!   maps hold no entry (read from outside the relay with `bpftool`) and ChannelData sent on the
//!   wire does not reach the peer, nor the peer's datagrams the client, nor do the kernel
//!   counters move.
//! - Over `--max-bps`, a channel's kernel traffic takes it out of the maps, userspace enforces
//!   the cap, and the channel returns once the budget has recovered.
//! - Without the program (an interface that does not exist), the relay says so in its metrics
//!   and the same uclient traffic is relayed in userspace without loss.
//! - Two relays on one host (a hand-over of its ports): the second one's interfaces have the
//!   first one's program; it says it waits, relays in userspace, and attaches once the first
//!   has exited, after which a call made before then goes through the kernel: beside it on
//!   other ports, and through the hand-over itself (the old relay's call goes on meanwhile).
//!   Of two interfaces, only the busy one waits. New clients are answered throughout the
//!   hand-over.
//! - The next hop the program keeps for a peer follows the kernel: the peer changes its MAC
//!   address, and once the relay has followed the call goes on in the kernel without loss and
//!   without a frame for the old MAC; a neighbour entry that goes takes its MAC out of use.
//!
//! Needs root (CI is root), the relay built after `cargo xtask build-ebpf`, coturn's tools,
//! curl and bpftool (`cargo xtask test` installs them).

#[path = "common/bpftool.rs"]
mod bpftool;
mod common;
#[path = "common/netns.rs"]
mod netns;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bpftool::{bpftool, map_entries, program_map, xdp_programs};
use common::browser::udp_in_csum_errors;
use common::turn::TurnClient;
use common::uclient::run_uclient;
use common::{Guard, TempDir, metric_value, relay_bin, require, run};
use netns::{Netns, must, short_id};
use relay::stun::AddressFamily;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Addresses of the topology: the client side is 10.77.1.0/24 and fd77:1::/64, the peer side
/// 10.77.2.0/24 and fd77:2::/64; the relay is .2 / ::2 on both, client and peer are .1 / ::1.
const CLIENT_V4: &str = "10.77.1.1";
const CLIENT_V6: &str = "fd77:1::1";
const LISTEN_V4: &str = "10.77.1.2";
const LISTEN_V6: &str = "fd77:1::2";
const RELAY_V4: &str = "10.77.2.2";
const RELAY_V6: &str = "fd77:2::2";
const PEER_V4: &str = "10.77.2.1";
const PEER_V6: &str = "fd77:2::1";

/// Three namespaces and two veth pairs, removed on drop (failure included).
struct Topology {
    client_ns: Netns,
    relay_ns: Netns,
    peer_ns: Netns,
    /// Unique to this topology, in its interface names.
    id: String,
}

impl Topology {
    /// client ⇄ (ra) relay (rb) ⇄ peer, both families, no duplicate address detection
    /// (addresses usable at once), and otherwise every setting as a new namespace has it:
    /// forwarding off in the relay's namespace (the program's next hops are the relay's own
    /// routes), checksum offloads on everywhere (so the client's and the peer's datagrams
    /// arrive with partial checksums, as a container's do).
    ///
    /// Needs curl to read the relays' metrics ([`metric`]).
    fn new(tag: &str) -> Self {
        require("curl", "curl");
        let id = format!("{tag}{}", short_id());
        let t = Topology {
            client_ns: Netns::new(&format!("c{id}")),
            relay_ns: Netns::new(&format!("r{id}")),
            peer_ns: Netns::new(&format!("p{id}")),
            id,
        };
        let (c, r, p) = (&t.client_ns, &t.relay_ns, &t.peer_ns);
        for n in [c, r, p] {
            n.sysctl("net.ipv6.conf.all.accept_dad=0");
            n.sysctl("net.ipv6.conf.default.accept_dad=0");
        }
        let id = &t.id;
        let (ca, ra, rb, pb) = (
            format!("c{id}"),
            format!("ra{id}"),
            format!("rb{id}"),
            format!("p{id}"),
        );
        c.veth(&ca, r, &ra);
        r.veth(&rb, p, &pb);
        for (n, dev, v4, v6) in [
            (c, &ca, CLIENT_V4, CLIENT_V6),
            (r, &ra, LISTEN_V4, LISTEN_V6),
            (r, &rb, RELAY_V4, RELAY_V6),
            (p, &pb, PEER_V4, PEER_V6),
        ] {
            n.ip(&format!("addr add {v4}/24 dev {dev}"));
            n.ip(&format!("-6 addr add {v6}/64 dev {dev} nodad"));
            n.ip(&format!("link set {dev} up mtu 1500"));
        }
        c.ip(&format!("route add default via {LISTEN_V4}"));
        c.ip(&format!("-6 route add default via {LISTEN_V6}"));
        p.ip(&format!("route add default via {RELAY_V4}"));
        p.ip(&format!("-6 route add default via {RELAY_V6}"));
        t
    }

    fn client(&self) -> &str {
        &self.client_ns.name
    }

    fn relay(&self) -> &str {
        &self.relay_ns.name
    }

    fn peer(&self) -> &str {
        &self.peer_ns.name
    }

    /// The relay's interfaces: towards the client, towards the peer.
    fn relay_interfaces(&self) -> (String, String) {
        (format!("ra{}", self.id), format!("rb{}", self.id))
    }

    /// Starts the relay in its namespace, listening on both families, relaying from both, with
    /// XDP on both of its interfaces in `mode`; returns once the program is attached.
    fn start_relay(&self, mode: &str, extra: &[&str]) -> Guard {
        let (ra, rb) = self.relay_interfaces();
        let xdp = [
            "--xdp-interface",
            &ra,
            "--xdp-interface",
            &rb,
            "--xdp-mode",
            mode,
        ];
        let relay = self.spawn_relay(&[&xdp, extra].concat());
        wait_attached(
            self.relay(),
            &format!("the relay did not attach XDP in {mode} mode"),
        );
        relay
    }

    /// Starts the relay in its namespace, listening on both families, relaying from both, with
    /// `extra` flags.
    fn spawn_relay(&self, extra: &[&str]) -> Guard {
        self.spawn_relay_on(&FIRST, extra, Stdio::null())
    }

    /// [`Topology::spawn_relay`] on `ports`, its log to `stderr`.
    /// A relay on `ports` with XDP on both of the relay's interfaces in skb mode, its log in
    /// `log`: the second relay of the tests where two relays want the same interfaces.
    fn spawn_on_both(&self, ports: &RelayPorts, log: &Log) -> Guard {
        let (ra, rb) = self.relay_interfaces();
        self.spawn_relay_on(
            ports,
            &[
                "--xdp-interface",
                &ra,
                "--xdp-interface",
                &rb,
                "--xdp-mode",
                "skb",
            ],
            log.stderr(),
        )
    }

    fn spawn_relay_on(&self, ports: &RelayPorts, extra: &[&str], stderr: Stdio) -> Guard {
        let relay = Command::new("ip")
            .args(["netns", "exec", self.relay(), relay_bin()])
            .args(["--listen", &format!("{LISTEN_V4}:{}", ports.listen)])
            .args(["--listen", &format!("[{LISTEN_V6}]:{}", ports.listen)])
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{}", ports.metrics),
                "--realm",
                "example.org",
            ])
            .args(["--user", "alice:wonderland"])
            .args(["--relay-ip", RELAY_V4, "--relay-ip", RELAY_V6])
            .args([
                "--allow-peer",
                "10.77.2.0/24",
                "--allow-peer",
                "fd77:2::/64",
            ])
            .args(["--min-port", &ports.relayed.0.to_string()])
            .args(["--max-port", &ports.relayed.1.to_string()])
            .args(["--drain-timeout", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn relay");
        Guard(relay)
    }

    /// Native XDP_TX/redirect on veth delivers only to a peer end that has an XDP program too:
    /// a relay in each far namespace attaches ours there (empty maps: it passes everything).
    fn far_end_programs(&self) -> Vec<Guard> {
        let mut far_ends = Vec::new();
        for (n, dev) in [
            (self.client(), format!("c{}", self.id)),
            (self.peer(), format!("p{}", self.id)),
        ] {
            let child = Command::new("ip")
                .args(["netns", "exec", n, relay_bin()])
                .args(["--listen", "127.0.0.1:3478"])
                .args(["--metrics-listen", "127.0.0.1:9641"])
                .args(["--xdp-interface", &dev, "--xdp-mode", "native"])
                .args(["--drain-timeout", "0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn far-end relay");
            far_ends.push(Guard(child));
            wait_attached(n, &format!("no native XDP on {dev}"));
        }
        far_ends
    }
}

/// Where a relay in the relay namespace listens (both families), serves its metrics
/// (127.0.0.1) and relays (a port range): [`FIRST`] for the relay of a test, [`SECOND`] for
/// one beside it.
struct RelayPorts {
    listen: u16,
    metrics: u16,
    relayed: (u16, u16),
}

const FIRST: RelayPorts = RelayPorts {
    listen: 3478,
    metrics: 9641,
    relayed: (40000, 40999),
};

const SECOND: RelayPorts = RelayPorts {
    listen: 3479,
    metrics: 9642,
    relayed: (41000, 41999),
};

/// Waits up to 20 s for the relay in `ns` to report its program attached; panics with `what`
/// otherwise.
fn wait_attached(ns: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(ns, "xdpturn_xdp_attached") != 1.0 {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One series from the metrics of the relay in `ns` (0 if absent).
fn metric(ns: &str, series: &str) -> f64 {
    metric_on(ns, &FIRST, series)
}

/// [`metric`] of the relay on `ports`.
fn metric_on(ns: &str, ports: &RelayPorts, series: &str) -> f64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s"])
        .arg(format!("http://127.0.0.1:{}/metrics", ports.metrics))
        .output()
        .expect("curl");
    metric_value(&String::from_utf8_lossy(&out.stdout), series)
}

/// What the relay in `ns` relayed: (XDP client→peer, XDP peer→client, userspace client→peer,
/// userspace peer→client).
fn relayed_both_ways(ns: &str) -> (f64, f64, f64, f64) {
    (
        relayed(ns, "xdp", "client_to_peer"),
        relayed(ns, "xdp", "peer_to_client"),
        relayed(ns, "userspace", "client_to_peer"),
        relayed(ns, "userspace", "peer_to_client"),
    )
}

fn relayed(ns: &str, datapath: &str, direction: &str) -> f64 {
    relayed_on(ns, &FIRST, datapath, direction)
}

/// [`relayed`] by the relay on `ports`.
fn relayed_on(ns: &str, ports: &RelayPorts, datapath: &str, direction: &str) -> f64 {
    metric_on(
        ns,
        ports,
        &format!(
            r#"xdpturn_relayed_packets_total{{datapath="{datapath}",direction="{direction}",transport="udp"}}"#
        ),
    )
}

/// The client, the peer and the relayed address of one uclient run.
#[derive(Clone, Copy)]
enum Families {
    V4,
    V6,
    /// An IPv4 client with an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY) to an IPv6 peer.
    V4ToV6,
    /// An IPv6 client with an IPv4 relayed address to an IPv4 peer.
    V6ToV4,
}

/// Runs `turnutils_peer` and 4 `turnutils_uclient` clients of 500 channel messages each
/// through the relay of `topo`; asserts none was lost; returns how many were sent each way.
fn uclient_through(topo: &Topology, families: Families) -> u64 {
    require("turnutils_uclient", "coturn");
    let (server, peer, family_flags): (&str, &str, &[&str]) = match families {
        Families::V4 => (LISTEN_V4, PEER_V4, &[]),
        Families::V6 => (LISTEN_V6, PEER_V6, &[]),
        Families::V4ToV6 => (LISTEN_V4, PEER_V6, &["-x"]),
        Families::V6ToV4 => (LISTEN_V6, PEER_V4, &["-X"]),
    };
    let peer_proc = Command::new("ip")
        .args([
            "netns",
            "exec",
            topo.peer(),
            "turnutils_peer",
            "-L",
            peer,
            "-p",
            "3480",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peer");
    let _peer = Guard(peer_proc);
    let command = || {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", topo.client(), "turnutils_uclient", "-c"])
            .args(family_flags)
            .args(["-p", "3478", "-e", peer, "-r", "3480"])
            .args(["-n", "500", "-m", "4", "-l", "120", "-z", "5"])
            .args(["-u", "alice", "-w", "wonderland", server]);
        cmd
    };
    let stats = run_uclient(command, TIMEOUT)
        .unwrap_or_else(|| panic!("turnutils_uclient did not finish within {TIMEOUT:?}"));
    assert!(stats.all_arrived(2000), "{}", stats.text);
    stats.sent
}

/// The mode asked for is the mode the relay runs in, on both of its interfaces.
fn assert_mode(topo: &Topology, mode: &str) {
    for dev in [topo.relay_interfaces().0, topo.relay_interfaces().1] {
        let series = format!(
            r#"xdpturn_xdp_interface_mode{{interface="{dev}",mode="{mode}",why="configured"}}"#
        );
        assert_eq!(metric(topo.relay(), &series), 1.0, "{series}");
    }
}

fn forwarded_by_xdp(mode: &str, families: Families) {
    let tag = match families {
        Families::V4 => "a",
        Families::V6 => "b",
        Families::V4ToV6 => "m",
        Families::V6ToV4 => "n",
    };
    let topo = Topology::new(&format!("{}{tag}", &mode[..1]));
    let (c, r, p) = (topo.client(), topo.relay(), topo.peer());
    let _relay = topo.start_relay(mode, &[]);
    let _far_ends = if mode == "native" {
        topo.far_end_programs()
    } else {
        Vec::new()
    };

    assert_mode(&topo, mode);

    let sent = uclient_through(&topo, families);

    // The kernel counters are exported once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let (x_up, x_down, u_up, u_down) = relayed_both_ways(r);
    eprintln!("{mode} {tag}: xdp {x_up}/{x_down}, userspace {u_up}/{u_down}, of {sent} each way");
    assert!(
        x_up + u_up >= sent as f64 && x_down + u_down >= sent as f64,
        "every message counted once"
    );
    assert!(
        x_up >= 0.9 * sent as f64,
        "client→peer mostly in XDP: {x_up} of {sent}"
    );
    assert!(
        x_down >= 0.9 * sent as f64,
        "peer→client mostly in XDP: {x_down} of {sent}"
    );
    // Every datagram the program rewrote reached a socket, so its checksums verified; and
    // the receiving kernels say none was dropped for a bad one.
    assert_eq!(udp_in_csum_errors(c), 0, "checksum errors at the client");
    assert_eq!(udp_in_csum_errors(p), 0, "checksum errors at the peer");
}

/// One test per mode (XDP native, XDP skb, the TC program) and family combination, each with
/// its own namespaces (tests run in parallel), all through [`forwarded_by_xdp`].
macro_rules! forwarded_by_xdp_tests {
    ($($name:ident: $mode:literal, $families:ident;)*) => {
        $(
            #[test]
            fn $name() {
                forwarded_by_xdp($mode, Families::$families);
            }
        )*
    };
}

forwarded_by_xdp_tests! {
    channel_data_is_forwarded_by_xdp_native_mode: "native", V4;
    channel_data_is_forwarded_by_xdp_skb_mode: "skb", V4;
    ipv6_channel_data_is_forwarded_by_xdp_native_mode: "native", V6;
    ipv6_channel_data_is_forwarded_by_xdp_skb_mode: "skb", V6;
    ipv4_client_to_ipv6_peer_is_forwarded_by_xdp_native_mode: "native", V4ToV6;
    ipv4_client_to_ipv6_peer_is_forwarded_by_xdp_skb_mode: "skb", V4ToV6;
    ipv6_client_to_ipv4_peer_is_forwarded_by_xdp_native_mode: "native", V6ToV4;
    ipv6_client_to_ipv4_peer_is_forwarded_by_xdp_skb_mode: "skb", V6ToV4;
    channel_data_is_forwarded_by_the_tc_program: "tc", V4;
    ipv6_channel_data_is_forwarded_by_the_tc_program: "tc", V6;
    ipv4_client_to_ipv6_peer_is_forwarded_by_the_tc_program: "tc", V4ToV6;
    ipv6_client_to_ipv4_peer_is_forwarded_by_the_tc_program: "tc", V6ToV4;
}

/// `turnutils_peer`, the echo peer, in the peer's namespace on PEER_V4:3480.
fn echo_peer_in(ns: &str) -> Guard {
    Guard(
        Command::new("ip")
            .args(["netns", "exec", ns, "turnutils_peer"])
            .args(["-L", PEER_V4, "-p", "3480"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn peer"),
    )
}

/// `turnutils_uclient` with `flags` (4 clients, 500 messages each) through a relay in `mode`
/// (skb: XDP in generic mode; tc: the TC program, which `auto` gives these veths), with the
/// echo peer if `peer`: no loss, at least 95 % of the relayed packets through the kernel in
/// each direction, at least 1,900 of them counted as `kind` each way, and no checksum error at
/// the client or the peer.
fn uclient_through_the_kernel(mode: &str, tag: &str, flags: &[&str], peer: bool, kind: &str) {
    require("turnutils_uclient", "coturn");
    let topo = Topology::new(tag);
    let (c, r, p) = (topo.client(), topo.relay(), topo.peer());
    let (ra, rb) = topo.relay_interfaces();
    let _relay = topo.spawn_relay(&[
        "--xdp-interface",
        &ra,
        "--xdp-interface",
        &rb,
        "--xdp-mode",
        mode,
    ]);
    wait_attached(
        r,
        &format!("the relay did not attach its program in {mode} mode"),
    );
    assert_mode(&topo, mode);
    let _peer = peer.then(|| echo_peer_in(p));
    let to_peer: &[&str] = if peer {
        &["-e", PEER_V4, "-r", "3480"]
    } else {
        &[]
    };
    let command = || {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", c, "turnutils_uclient", "-c"])
            .args(flags)
            .args(to_peer)
            .args(["-p", "3478", "-n", "500", "-m", "4", "-l", "120", "-z", "5"])
            .args(["-u", "alice", "-w", "wonderland", LISTEN_V4]);
        cmd
    };
    let stats = run_uclient(command, TIMEOUT)
        .unwrap_or_else(|| panic!("turnutils_uclient did not finish within {TIMEOUT:?}"));
    assert!(stats.lost_zero, "{}", stats.text);
    std::thread::sleep(Duration::from_millis(1500));
    let (x_up, x_down, u_up, u_down) = relayed_both_ways(r);
    eprintln!("uclient {flags:?}: xdp {x_up}/{x_down}, userspace {u_up}/{u_down}");
    assert!(
        x_up / (x_up + u_up) >= 0.95 && x_down / (x_down + u_down) >= 0.95,
        "the kernel's share: {x_up}/{u_up} up, {x_down}/{u_down} down\n{}",
        stats.text
    );
    for direction in ["client_to_peer", "peer_to_client"] {
        let n = metric(
            r,
            &format!(
                r#"xdpturn_xdp_forwarded_packets_total{{direction="{direction}",kind="{kind}"}}"#
            ),
        );
        assert!(n >= 1900.0, "{kind} {direction}: {n}");
    }
    assert_eq!(udp_in_csum_errors(c), 0, "checksum errors at the client");
    assert_eq!(udp_in_csum_errors(p), 0, "checksum errors at the peer");
}

/// Both parties of a call on one relay: `turnutils_uclient -y` pairs its clients and each
/// sends ChannelData to the other's relayed address. The program relays it from one client
/// straight to the other (the relayed addresses are local: no trip through the loopback and
/// two passes of userspace).
#[test]
fn client_to_client_on_one_relay_goes_through_the_kernel_in_one_pass() {
    uclient_through_the_kernel("skb", "y", &["-y"], false, "same_relay");
}

/// [`client_to_client_on_one_relay_goes_through_the_kernel_in_one_pass`] through the TC
/// program.
#[test]
fn client_to_client_on_one_relay_goes_through_the_tc_program_in_one_pass() {
    uclient_through_the_kernel("tc", "yt", &["-y"], false, "same_relay");
}

/// Send and Data indications (RFC 8656 §11), as Firefox relays all its media and Chromium its
/// first: `turnutils_uclient -s` sends Send indications (with DONT-FRAGMENT, `-g`) to the echo
/// peer, which answers; the relay's answers are Data indications. With the permissions and
/// allocations mirrored into the kernel, both directions go through the program.
#[test]
fn send_and_data_indications_go_through_the_kernel() {
    uclient_through_the_kernel("skb", "s", &["-s", "-g"], true, "indication");
}

/// [`send_and_data_indications_go_through_the_kernel`] through the TC program.
#[test]
fn send_and_data_indications_go_through_the_tc_program() {
    uclient_through_the_kernel("tc", "st", &["-s", "-g"], true, "indication");
}

/// coturn's traffic records (`--redis-statsdb`) count what the kernel forwarded: a
/// `redis-server` in the relay's namespace, `redis-cli psubscribe` beside it, and two uclient
/// calls through the kernel (channels, then Send and Data indications). Each allocation's
/// totals are what uclient sent and got back, though the program forwarded nearly all of it
/// (its counters are read once a second, and at the channel's or permission's removal, which
/// comes just before the allocation's deletion is reported).
#[test]
fn traffic_records_count_what_the_kernel_forwarded() {
    use common::statsdb::{Subscriber, assert_call_records, deleted, until_with};
    use common::uclient::uclient_with;
    require("turnutils_uclient", "coturn");
    require("redis-server", "redis-server");
    let topo = Topology::new("u");
    let (c, r, p) = (topo.client(), topo.relay(), topo.peer());
    let dir = TempDir::new("xdp-statsdb");
    let _redis = Guard(
        Command::new("ip")
            .args(["netns", "exec", r, "redis-server", "--bind", "127.0.0.1"])
            .args(["--port", "6379", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server"),
    );
    let wrapper = ["ip", "netns", "exec", r];
    assert!(
        eventually(Duration::from_secs(10), || {
            let out = run(
                Command::new("ip").args(["netns", "exec", r, "redis-cli", "ping"]),
                Duration::from_secs(5),
            );
            String::from_utf8_lossy(&out.stdout).contains("PONG")
        }),
        "redis-server did not answer"
    );
    let subscriber = Subscriber::start(&wrapper, 6379, None, dir.path());
    let (ra, rb) = topo.relay_interfaces();
    let _relay = topo.spawn_relay(&[
        "--xdp-interface",
        &ra,
        "--xdp-interface",
        &rb,
        "--xdp-mode",
        "skb",
        "--redis-statsdb",
        "ip=127.0.0.1 port=6379",
    ]);
    wait_attached(r, "the relay did not attach XDP in skb mode");
    let _peer = echo_peer_in(p);
    let mut calls = Vec::new();
    for flags in [&[][..], &["-s", "-g"][..]] {
        let before = relayed(r, "xdp", "client_to_peer");
        let args = [
            &["-c", "-n", "500", "-m", "1", "-l", "120", "-z", "5"][..],
            &["-u", "alice", "-w", "wonderland"],
            flags,
        ]
        .concat();
        let stats = uclient_with(
            &["ip", "netns", "exec", c],
            format!("{LISTEN_V4}:3478").parse().expect("addr"),
            format!("{PEER_V4}:3480").parse().expect("addr"),
            &args,
            TIMEOUT,
        );
        stats.assert_all_arrived(500, "");
        // The metrics read the kernel's counters once a second.
        std::thread::sleep(Duration::from_millis(1500));
        let by_kernel = relayed(r, "xdp", "client_to_peer") - before;
        assert!(
            by_kernel >= 0.9 * stats.sent as f64,
            "{flags:?}: the kernel forwarded {by_kernel} of {}",
            stats.sent
        );
        calls.push(stats);
    }
    let what = || format!("two allocations deleted: {:#?}", subscriber.messages());
    until_with(Duration::from_secs(30), what, || {
        deleted(&subscriber, "example.org", "alice").len() == 2
    });
    for ((id, records), stats) in deleted(&subscriber, "example.org", "alice")
        .iter()
        .zip(&calls)
    {
        let more = format!("uclient:\n{}", stats.text);
        assert_call_records(id, records, stats.sent, stats.received, 120, &more);
    }
}

/// Indications client to client on one relay (`-s -y`): each client's Send indication reaches
/// the other as a Data indication, in one pass.
#[test]
fn indications_client_to_client_on_one_relay_go_through_the_kernel_in_one_pass() {
    uclient_through_the_kernel("skb", "z", &["-s", "-g", "-y"], false, "same_relay");
}

/// [`indications_client_to_client_on_one_relay_go_through_the_kernel_in_one_pass`] through
/// the TC program.
#[test]
fn indications_client_to_client_on_one_relay_go_through_the_tc_program_in_one_pass() {
    uclient_through_the_kernel("tc", "zt", &["-s", "-g", "-y"], false, "same_relay");
}

/// Native XDP on a veth whose other end runs no XDP program drops what the program sends
/// (XDP_TX and redirects need the receiving end's NAPI): the relay sees those frames in the
/// interface's drop counters, counts them (not as relayed), takes the fast path off the
/// interface, and relays in userspace from then on, without loss.
#[test]
fn an_interface_whose_xdp_sends_fail_goes_back_to_userspace() {
    let topo = Topology::new("x");
    let r = topo.relay();
    let (ra, rb) = topo.relay_interfaces();
    // Native on both veths, and no program at the far ends: their frames go nowhere.
    let _relay = topo.start_relay("native", &[]);
    let session = Session::new(&topo);
    // The first datagrams go up while the peer's next hop is learnt; the rest are "forwarded"
    // into a veth that drops them.
    let failures = || {
        metric(
            r,
            &format!(r#"xdpturn_xdp_send_failures_total{{interface="{ra}"}}"#),
        ) + metric(
            r,
            &format!(r#"xdpturn_xdp_send_failures_total{{interface="{rb}"}}"#),
        )
    };
    let fallbacks = || metric(r, r#"xdpturn_xdp_fallbacks_total{reason="send_failures"}"#);
    assert!(
        eventually(Duration::from_secs(15), || {
            for i in 0..50 {
                session.send_channel_data(format!("lost {i}").as_bytes());
                std::thread::sleep(Duration::from_millis(2));
            }
            fallbacks() >= 1.0
        }),
        "the relay did not take the fast path off: {} failures counted, fallbacks {}",
        failures(),
        fallbacks()
    );
    assert!(failures() > 20.0, "failures counted: {}", failures());
    let mode = |dev: &str| {
        metric(
            r,
            &format!(
                r#"xdpturn_xdp_interface_mode{{interface="{dev}",mode="native",why="configured"}}"#
            ),
        )
    };
    assert_eq!(mode(&ra), 0.0, "{ra} lost the fast path");
    // Drain what reached the peer meanwhile (the datagrams relayed in userspace).
    let _ = session.probe(0);
    assert_eq!(
        session.round_trips(20),
        20,
        "in userspace, nothing is lost any more"
    );
}

/// The fallback: when the program cannot be attached (here: an interface that does not exist),
/// the relay says so in its metrics and the same traffic is relayed in userspace, without loss.
#[test]
fn without_the_program_channel_data_is_relayed_in_userspace() {
    let topo = Topology::new("u");
    let r = topo.relay();
    let missing = format!("nosuch{}", topo.id);
    let _relay = topo.spawn_relay(&["--xdp-interface", &missing]);
    assert!(
        eventually(Duration::from_secs(20), || {
            metric(r, "xdpturn_ready") == 1.0
        }),
        "the relay did not start"
    );
    assert_eq!(metric(r, "xdpturn_xdp_attached"), 0.0);
    assert_eq!(
        metric(
            r,
            r#"xdpturn_xdp_fallbacks_total{reason="unknown_interface"}"#
        ),
        1.0
    );
    for families in [Families::V4, Families::V6] {
        let (u_up, u_down) = (
            relayed(r, "userspace", "client_to_peer"),
            relayed(r, "userspace", "peer_to_client"),
        );
        let sent = uclient_through(&topo, families) as f64;
        assert!(relayed(r, "userspace", "client_to_peer") - u_up >= sent);
        assert!(relayed(r, "userspace", "peer_to_client") - u_down >= sent);
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(xdp_relayed(r), (0.0, 0.0), "nothing in XDP");
}

// ---------------------------------------------------------------------------------------------
// Nothing forwards behind the relay's back.

/// The IPv4 channel maps of the relay's program (the sessions here are IPv4 clients to IPv4
/// peers): (CLIENT_TO_PEER4 id, PEER_TO_CLIENT4 id).
fn channel_maps(ns: &str, program: u64) -> (u64, u64) {
    let prog = bpftool(ns, &["prog", "show", "id", &program.to_string()]).expect("the program");
    let mut found = (None, None);
    for id in prog["map_ids"].as_array().expect("map_ids") {
        let id = id.as_u64().expect("a map id");
        let map = bpftool(ns, &["map", "show", "id", &id.to_string()]).expect("a map");
        match map["name"].as_str() {
            Some("CLIENT_TO_PEER4") => found.0 = Some(id),
            Some("PEER_TO_CLIENT4") => found.1 = Some(id),
            _ => {}
        }
    }
    match found {
        (Some(c2p), Some(p2c)) => (c2p, p2c),
        _ => panic!("program {program} has no channel maps: {prog}"),
    }
}

/// Polls `f` until it holds, for up to `timeout`.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const CHANNEL: u16 = 0x4000;

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut v = channel.to_be_bytes().to_vec();
    v.extend_from_slice(&u16::try_from(data.len()).expect("short").to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// A client with an allocation and channel [`CHANNEL`] bound to a peer socket, each in its
/// namespace, through the relay of `topo`.
struct Session {
    client: TurnClient,
    peer: UdpSocket,
    relayed: SocketAddr,
}

impl Session {
    fn new(topo: &Topology) -> Session {
        Session::through(topo, &FIRST, 6000)
    }

    /// A session through the relay on `ports`, to a peer on `peer_port`.
    fn through(topo: &Topology, ports: &RelayPorts, peer_port: u16) -> Session {
        let server: SocketAddr = format!("{LISTEN_V4}:{}", ports.listen)
            .parse()
            .expect("addr");
        let mut client = topo.client_ns.enter(|| {
            TurnClient::new(
                server,
                &format!("{CLIENT_V4}:0"),
                "alice",
                "wonderland",
                "example.org",
            )
        });
        let peer = topo
            .peer_ns
            .enter(|| UdpSocket::bind(format!("{PEER_V4}:{peer_port}")).expect("bind peer"));
        peer.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let relayed = client
            .allocate_family(Some(AddressFamily::IPV4))
            .unwrap_or_else(|code| panic!("allocate: {code:?}"));
        let peer_addr = peer.local_addr().expect("peer addr");
        assert_eq!(client.channel_bind(CHANNEL, peer_addr), None, "ChannelBind");
        client
            .socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        Session {
            client,
            peer,
            relayed,
        }
    }

    /// Sends `data` from the client to the relay as ChannelData on [`CHANNEL`].
    fn send_channel_data(&self, data: &[u8]) {
        self.client
            .socket
            .send_to(&channel_data(CHANNEL, data), self.client.server)
            .expect("send");
    }

    /// `n` round trips of ChannelData: client → peer (the peer checks the bytes and the
    /// relayed source) and back (the client checks the ChannelData). Returns how many
    /// completed; each direction gets one try.
    fn round_trips(&self, n: usize) -> usize {
        let mut done = 0;
        let mut buf = [0u8; 1500];
        for i in 0..n {
            let payload = format!("round trip {i:04}");
            self.send_channel_data(payload.as_bytes());
            let Ok((len, from)) = self.peer.recv_from(&mut buf) else {
                continue;
            };
            assert_eq!(
                from, self.relayed,
                "the peer hears from the relayed address"
            );
            assert_eq!(&buf[..len], payload.as_bytes());
            self.peer.send_to(&buf[..len], from).expect("peer send");
            let Ok((len, from)) = self.client.socket.recv_from(&mut buf) else {
                continue;
            };
            assert_eq!(from, self.client.server);
            assert_eq!(
                &buf[..len],
                channel_data(CHANNEL, payload.as_bytes()).as_slice()
            );
            done += 1;
        }
        done
    }

    /// Sends ChannelData from the client and datagrams from the peer, `n` each; returns what
    /// arrived at the peer and what arrived at the client (any datagram).
    fn probe(&self, n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        for i in 0..n {
            let payload = format!("after {i:04}");
            self.send_channel_data(payload.as_bytes());
            // The relayed port may be closed (ICMP unreachable): not an error here.
            let _ = self.peer.send_to(payload.as_bytes(), self.relayed);
        }
        let drain = |socket: &UdpSocket| {
            let mut got = Vec::new();
            let mut buf = [0u8; 1500];
            while let Ok(len) = socket.recv(&mut buf) {
                got.push(buf[..len].to_vec());
            }
            got
        };
        (drain(&self.peer), drain(&self.client.socket))
    }
}

/// The XDP traffic counters of the relay in `ns`, both directions.
fn xdp_relayed(ns: &str) -> (f64, f64) {
    (
        relayed(ns, "xdp", "client_to_peer"),
        relayed(ns, "xdp", "peer_to_client"),
    )
}

/// Sets up a session through a relay in skb mode (`extra` flags), checks the channel is in both
/// maps and its traffic is forwarded by XDP; returns everything for the test to end it.
fn offloaded_session(tag: &str, extra: &[&str]) -> (Topology, Guard, Session, u64, (u64, u64)) {
    require("bpftool", "bpftool");
    let topo = Topology::new(tag);
    let relay = topo.start_relay("skb", extra);
    let (ra, rb) = topo.relay_interfaces();
    let programs = xdp_programs(topo.relay(), &ra);
    assert_eq!(programs.len(), 1, "one XDP program on {ra}: {programs:?}");
    assert_eq!(
        xdp_programs(topo.relay(), &rb),
        programs,
        "the same on {rb}"
    );
    let maps = channel_maps(topo.relay(), programs[0]);
    assert_eq!(map_entries(topo.relay(), maps.0), Some(0));
    assert_eq!(map_entries(topo.relay(), maps.1), Some(0));

    let session = Session::new(&topo);
    // Bound: one entry in CLIENT_TO_PEER4, two in PEER_TO_CLIENT4 (the channel's and the
    // permission its ChannelBind installed, under port 0).
    assert!(
        eventually(Duration::from_secs(3), || {
            map_entries(topo.relay(), maps.0) == Some(1)
                && map_entries(topo.relay(), maps.1) == Some(2)
        }),
        "the channel is not in the maps"
    );
    // The first datagrams to the peer go up: the relay's send makes the kernel resolve the
    // peer's MAC, and the relay then gives the program the peer's next hop (a few tens of
    // milliseconds). Warm up until both next hops (client, peer) are in the map.
    let next_hops = program_map(topo.relay(), programs[0], "NEXT_HOPS4");
    assert!(
        eventually(Duration::from_secs(5), || {
            session.round_trips(1);
            map_entries(topo.relay(), next_hops) == Some(2)
        }),
        "the next hops of the client and the peer did not reach the program"
    );
    let before = xdp_relayed(topo.relay());
    assert_eq!(session.round_trips(100), 100, "zero loss");
    // Through the kernel: its counters moved by (nearly) all of them (the first packets may
    // go up while the neighbours are resolved).
    assert!(
        eventually(Duration::from_secs(3), || {
            let now = xdp_relayed(topo.relay());
            now.0 - before.0 >= 90.0 && now.1 - before.1 >= 90.0
        }),
        "the round trips were not forwarded by XDP: {before:?} → {:?}",
        xdp_relayed(topo.relay())
    );
    (topo, relay, session, programs[0], maps)
}

/// After the channel left the kernel: ChannelData from the client does not reach the peer and
/// the kernel counters stay put (the client-to-peer one only if `permission_lives`: the
/// peer's datagrams then still reach the client as Data indications, through the kernel).
fn assert_not_forwarded(topo: &Topology, session: &Session, what: &str, permission_lives: bool) {
    // Settle the exported counters (once a second).
    std::thread::sleep(Duration::from_millis(1200));
    let before = xdp_relayed(topo.relay());
    let (at_peer, _) = session.probe(20);
    assert!(
        at_peer.is_empty(),
        "{what}: the peer still receives ChannelData payloads: {at_peer:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let after = xdp_relayed(topo.relay());
    if permission_lives {
        assert_eq!(
            after.0, before.0,
            "{what}: the kernel still forwards to the peer"
        );
    } else {
        assert_eq!(after, before, "{what}: the kernel still forwards");
    }
}

#[test]
fn deleting_the_allocation_leaves_no_forwarding_entry() {
    let (topo, _relay, mut session, _, (c2p, p2c)) = offloaded_session("d", &[]);
    assert_eq!(session.client.delete(), None, "Refresh with LIFETIME 0");
    let r = topo.relay();
    assert!(
        eventually(Duration::from_secs(3), || {
            map_entries(r, c2p) == Some(0) && map_entries(r, p2c) == Some(0)
        }),
        "entries left after the allocation was deleted: {:?}/{:?}",
        map_entries(r, c2p),
        map_entries(r, p2c)
    );
    assert_not_forwarded(&topo, &session, "deleted allocation", false);
    // The peer's datagrams to the closed relayed port reach nobody either.
    let (_, at_client) = session.probe(5);
    assert!(at_client.is_empty(), "{at_client:?}");
}

#[test]
fn an_expired_channel_leaves_no_forwarding_entry() {
    const LIFETIME: Duration = Duration::from_secs(6);
    let bound_at = Instant::now();
    let (topo, _relay, session, _, (c2p, p2c)) =
        offloaded_session("e", &["--channel-lifetime", "6"]);
    let r = topo.relay();
    // Still there until it expires...
    if bound_at.elapsed() + Duration::from_millis(500) < LIFETIME {
        assert_eq!(map_entries(r, c2p), Some(1), "gone before its expiry");
    }
    // ... and gone after (the relay's timers run once a second); its permission (5 minutes)
    // stays, under port 0.
    assert!(
        eventually(LIFETIME + Duration::from_secs(5), || {
            map_entries(r, c2p) == Some(0) && map_entries(r, p2c) == Some(1)
        }),
        "entries left after the channel expired"
    );
    assert!(
        bound_at.elapsed() >= LIFETIME - Duration::from_secs(1),
        "removed before its lifetime was over: {:?}",
        bound_at.elapsed()
    );
    assert_not_forwarded(&topo, &session, "expired channel", true);
    // The allocation and its permission live on: the peer's datagrams now reach the client
    // through the kernel as Data indications (STUN, first byte 0x00), not as ChannelData.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, down_before) = xdp_relayed(r);
    let (_, at_client) = session.probe(3);
    assert!(!at_client.is_empty(), "the allocation should still relay");
    for d in &at_client {
        assert_eq!(&d[..2], &[0x00, 0x17], "a Data indication: {d:?}");
    }
    assert!(
        eventually(Duration::from_secs(3), || xdp_relayed(r).1
            >= down_before + 3.0),
        "the Data indications went through the kernel"
    );
}

fn relay_exit_leaves_nothing(signal: &str) {
    let (topo, mut relay, session, program, (c2p, p2c)) =
        offloaded_session(&signal[..1].to_lowercase(), &[]);
    let pid = relay.0.id().to_string();
    must("kill", &["-s", signal, &pid]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the relay did not exit on {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = topo.relay();
    let (ra, rb) = topo.relay_interfaces();
    // Nothing attached, and the program and its maps are gone from the kernel (they are freed
    // once the last reference, the relay's, is closed; the kernel does that asynchronously).
    assert!(xdp_programs(r, &ra).is_empty(), "{ra} still has XDP");
    assert!(xdp_programs(r, &rb).is_empty(), "{rb} still has XDP");
    assert!(
        eventually(Duration::from_secs(5), || {
            bpftool(r, &["prog", "show", "id", &program.to_string()]).is_none()
                && map_entries(r, c2p).is_none()
                && map_entries(r, p2c).is_none()
        }),
        "the program or its channel maps outlive the relay ({signal})"
    );
    let (at_peer, at_client) = session.probe(20);
    assert!(
        at_peer.is_empty(),
        "ChannelData still forwarded after {signal}: {at_peer:?}"
    );
    assert!(at_client.is_empty(), "{at_client:?}");
}

#[test]
fn relay_exit_on_sigterm_leaves_no_forwarding() {
    relay_exit_leaves_nothing("TERM");
}

#[test]
fn relay_exit_on_sigkill_leaves_no_forwarding() {
    relay_exit_leaves_nothing("KILL");
}

// ---------------------------------------------------------------------------------------------
// Kernel traffic counts toward the bandwidth cap.

#[test]
fn over_the_bandwidth_cap_a_channel_leaves_the_kernel_until_the_budget_recovers() {
    // 80 kbit/s: 10,000 bytes a second for the allocation, both directions together.
    let (topo, _relay, session, _, (c2p, p2c)) = offloaded_session("w", &["--max-bps", "80000"]);
    let r = topo.relay();
    // n channels: n entries in CLIENT_TO_PEER4, and each with its permission in PEER_TO_CLIENT4.
    let in_maps = |n| map_entries(r, c2p) == Some(n) && map_entries(r, p2c) == Some(2 * n);
    let fallbacks = || metric(r, r#"xdpturn_xdp_fallbacks_total{reason="bandwidth"}"#);
    let dropped = || {
        metric(
            r,
            r#"xdpturn_dropped_packets_total{reason="bandwidth_exceeded",transport="udp"}"#,
        )
    };
    assert!(in_maps(1), "within the cap, the channel is in the kernel");
    assert_eq!(fallbacks(), 0.0);

    // 100 kB within a few milliseconds (ten at a time, so that the peer's socket buffer keeps
    // up): the kernel forwards it all (the cap is not in the kernel) ...
    let burst = vec![0x5a; 1000];
    let (xdp_before, _) = xdp_relayed(r);
    let mut buf = [0u8; 1500];
    let mut received = 0;
    for _ in 0..10 {
        for _ in 0..10 {
            session.send_channel_data(&burst);
        }
        for _ in 0..10 {
            let Ok(len) = session.peer.recv(&mut buf) else {
                break;
            };
            assert_eq!(len, burst.len());
            received += 1;
        }
    }
    assert_eq!(received, 100, "zero loss while in the kernel");
    // ... and the relay, reading the channel's kernel counters, charges it to the allocation:
    // over the cap, the channel leaves the maps while the allocation lives on.
    assert!(
        eventually(Duration::from_secs(4), || in_maps(0)),
        "the channel stayed in the kernel over the cap"
    );
    assert_eq!(fallbacks(), 1.0);
    let (xdp_after, _) = xdp_relayed(r);
    assert!(
        xdp_after - xdp_before >= 90.0,
        "the burst went through XDP: {xdp_before} → {xdp_after}"
    );

    // Now userspace relays it, and enforces the cap: the allocation is in debt, so another
    // burst is dropped and counted, not relayed.
    let dropped_before = dropped();
    for _ in 0..30 {
        session.send_channel_data(&burst);
    }
    let mut received = 0;
    while session.peer.recv(&mut buf).is_ok() {
        received += 1;
    }
    assert!(received <= 10, "{received} of 30 relayed over the cap");
    assert!(
        eventually(Duration::from_secs(2), || dropped() - dropped_before
            >= 20.0),
        "the excess is dropped and counted: {dropped_before} → {}",
        dropped()
    );
    assert_eq!(xdp_relayed(r).0, xdp_after, "nothing more in the kernel");

    // Quiet: the budget recovers and the channel returns to the kernel, which forwards again.
    assert!(
        eventually(Duration::from_secs(6), || in_maps(1)),
        "the channel did not return to the kernel"
    );
    assert_eq!(session.round_trips(20), 20, "zero loss");
    assert!(
        eventually(Duration::from_secs(3), || xdp_relayed(r).0 - xdp_after
            >= 18.0),
        "forwarded by XDP again: {xdp_after} → {}",
        xdp_relayed(r).0
    );
}

// ---------------------------------------------------------------------------------------------
// Two relays on one host: the second waits for the first one's program to go.

/// The log of a relay, written to a file of a scratch directory.
struct Log {
    dir: TempDir,
}

impl Log {
    fn new(tag: &str) -> Log {
        Log {
            dir: TempDir::new(tag),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("relay.log")
    }

    fn stderr(&self) -> Stdio {
        Stdio::from(std::fs::File::create(self.path()).expect("create the log"))
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.path()).unwrap_or_default()
    }

    /// Whether a line of the log contains `what`, within `timeout`.
    fn says(&self, what: &str, timeout: Duration) -> bool {
        eventually(timeout, || self.text().contains(what))
    }
}

/// Stops `relay` with SIGTERM and waits for it to exit; returns when it did.
fn stop(relay: &mut Guard) -> Instant {
    must("kill", &["-s", "TERM", &relay.0.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the relay did not exit on TERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    Instant::now()
}

/// The hand-over of a host's ports, as far as XDP goes: the new relay starts while the old
/// one's program is attached to the interfaces (it drains for minutes), relays in userspace
/// meanwhile, keeps its maps, and attaches once the old one has exited; the channel bound
/// before then is forwarded by the kernel from that moment.
#[test]
fn a_second_relay_attaches_once_the_first_one_exits() {
    let topo = Topology::new("w");
    let r = topo.relay();
    let (ra, rb) = topo.relay_interfaces();
    let mut first = topo.start_relay("skb", &[]);
    let log = Log::new("xdp-wait");
    let _second = topo.spawn_on_both(&SECOND, &log);
    assert!(
        eventually(Duration::from_secs(20), || metric_on(
            r,
            &SECOND,
            "xdpturn_ready"
        ) == 1.0),
        "the second relay did not start: {}",
        log.text()
    );
    assert_eq!(metric_on(r, &SECOND, "xdpturn_xdp_attached"), 0.0);
    for dev in [&ra, &rb] {
        let waits = format!(
            "another XDP program is attached to {dev}; relaying in userspace until it is detached"
        );
        assert!(
            log.says(&waits, Duration::from_secs(5)),
            "no `{waits}` in the log: {}",
            log.text()
        );
    }
    assert_eq!(
        metric_on(
            r,
            &SECOND,
            r#"xdpturn_xdp_fallbacks_total{reason="attach"}"#
        ),
        0.0,
        "waiting is no fallback"
    );
    assert_eq!(metric_on(r, &SECOND, "xdpturn_xdp_waiting_interfaces"), 2.0);

    // A call through the second relay before the first exits: relayed in userspace, its
    // channel in the second relay's maps all the same.
    let session = Session::through(&topo, &SECOND, 6000);
    assert_eq!(session.round_trips(20), 20, "zero loss in userspace");
    assert!(
        eventually(Duration::from_secs(3), || {
            relayed_on(r, &SECOND, "userspace", "client_to_peer") >= 20.0
                && relayed_on(r, &SECOND, "userspace", "peer_to_client") >= 20.0
        }),
        "not relayed in userspace"
    );
    assert_eq!(relayed_on(r, &SECOND, "xdp", "client_to_peer"), 0.0);
    assert_eq!(metric_on(r, &SECOND, "xdpturn_xdp_attached"), 0.0);

    let exited = stop(&mut first);
    assert!(
        eventually(Duration::from_secs(10), || metric_on(
            r,
            &SECOND,
            "xdpturn_xdp_attached"
        ) == 1.0),
        "the second relay did not attach after the first one exited: {}",
        log.text()
    );
    let waited = exited.elapsed();
    eprintln!("attached {waited:?} after the first relay exited");
    assert_eq!(metric_on(r, &SECOND, "xdpturn_xdp_waiting_interfaces"), 0.0);
    assert!(
        log.says("XDP fast path attached", Duration::from_secs(2)),
        "{}",
        log.text()
    );
    for dev in [&ra, &rb] {
        assert_eq!(
            metric_on(
                r,
                &SECOND,
                &format!(
                    r#"xdpturn_xdp_interface_mode{{interface="{dev}",mode="skb",why="configured"}}"#
                )
            ),
            1.0,
            "{dev}"
        );
    }

    // The channel bound before the attach now goes through the kernel.
    let before = (
        relayed_on(r, &SECOND, "xdp", "client_to_peer"),
        relayed_on(r, &SECOND, "xdp", "peer_to_client"),
    );
    assert_eq!(session.round_trips(100), 100, "zero loss");
    assert!(
        eventually(Duration::from_secs(3), || {
            relayed_on(r, &SECOND, "xdp", "client_to_peer") - before.0 >= 90.0
                && relayed_on(r, &SECOND, "xdp", "peer_to_client") - before.1 >= 90.0
        }),
        "the call was not forwarded by XDP after the attach: {before:?} → {:?}",
        (
            relayed_on(r, &SECOND, "xdp", "client_to_peer"),
            relayed_on(r, &SECOND, "xdp", "peer_to_client"),
        )
    );
}

/// Of two interfaces, the one another program holds waits and the other attaches at once.
#[test]
fn only_the_busy_interface_waits() {
    let topo = Topology::new("o");
    let r = topo.relay();
    let (ra, rb) = topo.relay_interfaces();
    // The first relay on the peer side only.
    let mut first = topo.spawn_relay(&["--xdp-interface", &rb, "--xdp-mode", "skb"]);
    wait_attached(r, "the first relay did not attach");
    let log = Log::new("xdp-one-waits");
    let _second = topo.spawn_on_both(&SECOND, &log);
    let mode = |dev: &str| {
        metric_on(
            r,
            &SECOND,
            &format!(
                r#"xdpturn_xdp_interface_mode{{interface="{dev}",mode="skb",why="configured"}}"#
            ),
        )
    };
    assert!(
        eventually(Duration::from_secs(20), || metric_on(
            r,
            &SECOND,
            "xdpturn_xdp_attached"
        ) == 1.0),
        "the free interface was not attached at once: {}",
        log.text()
    );
    assert_eq!(mode(&ra), 1.0, "{ra} is free");
    assert_eq!(mode(&rb), 0.0, "{rb} is the first relay's");
    let waits = format!("another XDP program is attached to {rb};");
    assert!(log.says(&waits, Duration::from_secs(5)), "{}", log.text());
    assert!(!log.text().contains(&format!("attached to {ra};")));

    stop(&mut first);
    assert!(
        eventually(Duration::from_secs(10), || mode(&rb) == 1.0),
        "{rb} was not attached after the first relay exited: {}",
        log.text()
    );
}

/// The hand-over itself: the new relay takes the ports over (same listening, relayed and
/// metrics ports) while a call runs through the old one, which takes its program off the
/// interfaces as it lets the ports go: the new relay attaches at once and relays its calls in
/// the kernel, and the old relay's call goes on in its userspace, losing nothing. New clients
/// are answered all along, though the new relay's program takes the verifier a second or two
/// to load: it loads before the ports are handed over.
#[test]
fn after_a_hand_over_the_new_relay_attaches_at_once() {
    let topo = Topology::new("h");
    let r = topo.relay();
    let mut old = topo.start_relay("skb", &[]);
    let old_call = Session::through(&topo, &FIRST, 6000);
    assert!(
        eventually(Duration::from_secs(5), || {
            old_call.round_trips(5);
            xdp_relayed(r).0 > 0.0
        }),
        "the old relay's call does not go through the kernel"
    );
    let log = Log::new("xdp-handover");
    let server = SocketAddr::new(LISTEN_V4.parse().expect("addr"), FIRST.listen);
    let watch = AlwaysAnswered::start(&topo.client_ns, server);
    let started = Instant::now();
    let _new = topo.spawn_on_both(&FIRST, &log);
    // The metrics port is the new relay's once it has taken the ports over.
    assert!(
        eventually(Duration::from_secs(20), || log
            .says("the previous relay closed its listeners", Duration::ZERO)
            && metric(r, "xdpturn_xdp_attached") == 1.0),
        "the new relay did not take over and attach: {}",
        log.text()
    );
    eprintln!(
        "took over and attached {:?} after it started",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));
    let (taken, unanswered) = watch.finish();
    assert!(
        unanswered.is_empty(),
        "new clients without an answer during the hand-over ({} of {taken} Binding requests, \
         seconds after the new relay started): {unanswered:?}\n{}",
        unanswered.len(),
        log.text()
    );
    eprintln!("{taken} Binding requests from new clients during the hand-over, all answered");
    assert_eq!(metric(r, "xdpturn_xdp_waiting_interfaces"), 0.0);
    assert!(
        log.says("attaching when it lets go", Duration::ZERO)
            && !log.text().contains("another XDP program is attached"),
        "the new relay loaded its program before the hand-over, knowing whose program it \
         waited for: {}",
        log.text()
    );
    assert_eq!(
        old_call.round_trips(100),
        100,
        "the old relay's call goes on, in its userspace"
    );

    let new_call = Session::through(&topo, &FIRST, 6001);
    assert_eq!(new_call.round_trips(100), 100, "zero loss");
    assert!(
        eventually(Duration::from_secs(3), || {
            let (up, down) = xdp_relayed(r);
            up >= 90.0 && down >= 90.0
        }),
        "the new relay's call was not forwarded by XDP: {:?}",
        xdp_relayed(r)
    );
    stop(&mut old);
    assert_eq!(
        new_call.round_trips(20),
        20,
        "zero loss after the old relay exited"
    );
}

/// Watches, from the client's namespace, that new clients are answered: every 50 ms a STUN
/// Binding request from a port of its own (spread over the listeners' reuseport group), with
/// two retransmissions 0.5 s apart as a client's would be.
struct AlwaysAnswered {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<f64>)>>,
}

impl AlwaysAnswered {
    fn start(ns: &Netns, server: SocketAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.name.clone();
        let thread = std::thread::spawn(move || {
            netns::enter_by_name(&ns);
            let began = Instant::now();
            let (mut taken, mut unanswered) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                taken += 1;
                let at = began.elapsed().as_secs_f64();
                let answered = (0..3).any(|_| {
                    common::stun_binding_udp(server, Duration::from_millis(500)).is_some()
                });
                if !answered {
                    unanswered.push(at);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (taken, unanswered)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Requests sent, and when those without an answer were (seconds since the start).
    fn finish(mut self) -> (usize, Vec<f64>) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .expect("the watching thread")
    }
}

impl Drop for AlwaysAnswered {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The next hop the program keeps for a peer follows the kernel's neighbour table, shown with
/// packets. The peer's interface takes another MAC address and says so (as a host that moved
/// or failed over does with a gratuitous ARP; here its neighbour entry in the relay's
/// namespace is replaced): once the relay's `NEXT_HOPS` has the new MAC, the call goes on
/// through the kernel without loss, and no frame reached the peer's interface for another MAC
/// (the interface's `otherhost` drops). Then the entry goes (flushed, as when the kernel gives
/// up on a neighbour): the program sends nothing on a MAC the kernel no longer vouches for;
/// the call goes on (the kernel resolves the peer again by ARP) and returns to the kernel.
#[test]
fn the_fast_path_follows_a_peer_whose_mac_changes() {
    let topo = Topology::new("m");
    let r = topo.relay();
    let _relay = topo.start_relay("skb", &[]);
    let (_, rb) = topo.relay_interfaces();
    let peer_dev = format!("p{}", topo.id);
    let session = Session::new(&topo);
    assert!(
        eventually(Duration::from_secs(5), || {
            session.round_trips(5);
            let (up, down) = xdp_relayed(r);
            up >= 5.0 && down >= 5.0
        }),
        "the call does not go through the kernel"
    );
    let program = xdp_programs(r, &rb)[0];
    let next_hops = program_map(r, program, "NEXT_HOPS4");
    let misdelivered = otherhost_drops(topo.peer(), &peer_dev);

    let moved: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x42];
    let moved_str = netns::mac_str(&moved);
    topo.peer_ns
        .ip(&format!("link set dev {peer_dev} address {moved_str}"));
    topo.relay_ns.ip(&format!(
        "neigh replace {PEER_V4} lladdr {moved_str} dev {rb} nud reachable"
    ));
    let changed = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || next_hop_macs(r, next_hops)
            .contains(&moved)),
        "NEXT_HOPS does not have the peer's new MAC: {:02x?}",
        next_hop_macs(r, next_hops)
    );
    eprintln!(
        "NEXT_HOPS had the new MAC {:?} after the change",
        changed.elapsed()
    );
    let before = xdp_relayed(r);
    assert_eq!(session.round_trips(100), 100, "zero loss after the change");
    // The relay reads the program's counters each second.
    assert!(
        eventually(Duration::from_secs(3), || {
            let (up, down) = xdp_relayed(r);
            up - before.0 >= 100.0 && down - before.1 >= 100.0
        }),
        "the call left the kernel after the change: {before:?} → {:?}",
        xdp_relayed(r)
    );
    assert_eq!(
        otherhost_drops(topo.peer(), &peer_dev),
        misdelivered,
        "frames reached the peer for its old MAC"
    );

    // The neighbour entry goes: nothing is sent on the MAC it had.
    let stale = next_hop_macs(r, next_hops);
    topo.relay_ns
        .ip(&format!("neigh flush dev {rb} to {PEER_V4}"));
    assert!(
        eventually(Duration::from_secs(3), || !next_hop_macs(r, next_hops)
            .contains(&moved)),
        "NEXT_HOPS kept the MAC of a neighbour entry that went: {stale:02x?}"
    );
    assert_eq!(
        session.round_trips(100),
        100,
        "zero loss once the entry went"
    );
    let after = xdp_relayed(r);
    assert!(
        eventually(Duration::from_secs(5), || {
            session.round_trips(10);
            let (up, down) = xdp_relayed(r);
            up > after.0 && down > after.1
        }),
        "the call did not return to the kernel once the peer was resolved again"
    );
    assert_eq!(
        otherhost_drops(topo.peer(), &peer_dev),
        misdelivered,
        "frames reached the peer for another MAC"
    );
}

/// The next hops' destination MACs in the `NEXT_HOPS4` map `id` (`NextHopValue`: ifindex, MTU,
/// source MAC, then the destination MAC, at bytes 14..20).
fn next_hop_macs(ns: &str, id: u64) -> Vec<[u8; 6]> {
    let dump = bpftool(ns, &["map", "dump", "id", &id.to_string()]).unwrap_or_default();
    dump.as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let bytes: Vec<u8> = entry["value"]
                .as_array()?
                .iter()
                .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
                .collect();
            bytes.get(14..20)?.try_into().ok()
        })
        .collect()
}

/// Frames `dev` in `ns` received for another MAC address and dropped (the kernel's
/// `rx_otherhost_dropped`, which `ip -s -s link` prints once it is not zero).
fn otherhost_drops(ns: &str, dev: &str) -> u64 {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-s", "link", "show", "dev", dev])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .position(|l| l.trim_start().starts_with("RX errors:"))
        .and_then(|i| {
            let names: Vec<&str> = lines[i]
                .trim_start()
                .trim_start_matches("RX errors:")
                .split_whitespace()
                .collect();
            let column = names.iter().position(|n| *n == "otherhost")?;
            lines
                .get(i + 1)?
                .split_whitespace()
                .nth(column)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
