//! The kernel fast path end to end: three network namespaces this test creates (client ⇄ relay
//! ⇄ peer over veth pairs), the real relay with XDP attached to both of its interfaces, coturn's
//! `turnutils_uclient` binding channels through it to `turnutils_peer`. The channel traffic must
//! be forwarded by XDP (kernel counters carry it, userspace only the first packets while the
//! neighbours are resolved), with zero loss, in skb and native mode. Needs root (CI is root).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, relay_bin, require, run};

const TIMEOUT: Duration = Duration::from_secs(120);

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three namespaces and two veth pairs, removed on drop.
struct Topology {
    ns: [String; 3],
}

impl Topology {
    /// client 10.77.1.1 ⇄ 10.77.1.2 relay 10.77.2.2 ⇄ 10.77.2.1 peer. `native` attaches an
    /// XDP_PASS-like program on the far ends too (native XDP on veth delivers redirected frames
    /// only to a peer end with a program) — the relay's own program does that job here, so
    /// the client and peer ends get the relay program in skb mode... kept simple: see below.
    fn new(tag: &str) -> Self {
        let id = format!("{}{}", std::process::id() % 100_000, tag);
        let ns = [format!("xtc{id}"), format!("xtr{id}"), format!("xtp{id}")];
        let t = Topology { ns: ns.clone() };
        let [c, r, p] = &ns;
        for n in &ns {
            sh(&["ip", "netns", "add", n]);
        }
        let (ca, ra, rb, pb) = (
            format!("c{id}"),
            format!("ra{id}"),
            format!("rb{id}"),
            format!("p{id}"),
        );
        sh(&[
            "ip", "link", "add", &ca, "netns", c, "type", "veth", "peer", "name", &ra, "netns", r,
        ]);
        sh(&[
            "ip", "link", "add", &rb, "netns", r, "type", "veth", "peer", "name", &pb, "netns", p,
        ]);
        let inns = |n: &str, args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", n];
            v.extend_from_slice(args);
            sh(&v);
        };
        inns(c, &["ip", "addr", "add", "10.77.1.1/24", "dev", &ca]);
        inns(r, &["ip", "addr", "add", "10.77.1.2/24", "dev", &ra]);
        inns(r, &["ip", "addr", "add", "10.77.2.2/24", "dev", &rb]);
        inns(p, &["ip", "addr", "add", "10.77.2.1/24", "dev", &pb]);
        for (n, dev) in [(c, &ca), (r, &ra), (r, &rb), (p, &pb)] {
            inns(n, &["ip", "link", "set", dev, "up", "mtu", "1500"]);
            inns(n, &["ip", "link", "set", "lo", "up"]);
            // Checksums computed in full on the senders: XDP rewrites them incrementally.
            inns(n, &["ethtool", "-K", dev, "tx", "off"]);
        }
        inns(c, &["ip", "route", "add", "default", "via", "10.77.1.2"]);
        inns(p, &["ip", "route", "add", "default", "via", "10.77.2.2"]);
        // bpf_fib_lookup needs forwarding on in the relay's namespace.
        inns(r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        t
    }

    fn interfaces(&self) -> (String, String) {
        let id = &self.ns[0][3..];
        (format!("ra{id}"), format!("rb{id}"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn metric(ns: &str, series: &str) -> f64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "http://127.0.0.1:9641/metrics",
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn forwarded_by_xdp(mode: &str) {
    require("turnutils_uclient", "coturn");
    require("curl", "curl");
    require("ethtool", "ethtool");
    let topo = Topology::new(&mode[..1]);
    let [c, r, p] = &topo.ns;
    let (ra, rb) = topo.interfaces();
    let relay = Command::new("ip")
        .args(["netns", "exec", r, relay_bin()])
        .args([
            "--listen",
            "10.77.1.2:3478",
            "--metrics-listen",
            "127.0.0.1:9641",
            "--realm",
            "example.org",
        ])
        .args([
            "--user",
            "alice:wonderland",
            "--relay-ip",
            "10.77.2.2",
            "--allow-peer",
            "10.77.2.0/24",
        ])
        .args([
            "--min-port",
            "40000",
            "--max-port",
            "40999",
            "--xdp-interface",
            &ra,
            "--xdp-interface",
            &rb,
        ])
        .args(["--xdp-mode", mode, "--drain-timeout", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn relay");
    let _relay = Guard(relay);
    let peer = Command::new("ip")
        .args([
            "netns",
            "exec",
            p,
            "turnutils_peer",
            "-L",
            "10.77.2.1",
            "-p",
            "3480",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peer");
    let _peer = Guard(peer);
    // Native XDP_TX/redirect on veth delivers only to a peer end that has an XDP program too:
    // a relay in each far namespace attaches ours there (empty maps: it passes everything).
    let mut far_ends = Vec::new();
    if mode == "native" {
        let id = &topo.ns[0][3..];
        for (n, dev) in [(c, format!("c{id}")), (p, format!("p{id}"))] {
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    n,
                    relay_bin(),
                    "--listen",
                    "127.0.0.1:3478",
                    "--metrics-listen",
                    "127.0.0.1:9641",
                ])
                .args([
                    "--xdp-interface",
                    &dev,
                    "--xdp-mode",
                    "native",
                    "--drain-timeout",
                    "0",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn far-end relay");
            far_ends.push(Guard(child));
            let deadline = Instant::now() + Duration::from_secs(20);
            while metric(n, "xdpturn_xdp_attached") != 1.0 {
                assert!(Instant::now() < deadline, "no native XDP on {dev}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(r, "xdpturn_xdp_attached") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not attach XDP in {mode} mode"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = run(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                c,
                "turnutils_uclient",
                "-c",
                "-p",
                "3478",
                "-e",
                "10.77.2.1",
                "-r",
                "3480",
            ])
            .args([
                "-n",
                "500",
                "-m",
                "4",
                "-l",
                "120",
                "-z",
                "5",
                "-u",
                "alice",
                "-w",
                "wonderland",
                "10.77.1.2",
            ]),
        TIMEOUT,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |key: &str| -> u64 {
        text.lines()
            .rev()
            .filter_map(|l| l.split(key).nth(1))
            .find_map(|v| {
                v.split(|ch: char| !ch.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    let (sent, received) = (count("tot_send_msgs="), count("tot_recv_msgs="));
    assert!(
        sent >= 2000 && received == sent && text.contains("Total lost packets 0 "),
        "{text}"
    );

    let xdp = |dir: &str| {
        metric(
            r,
            &format!(
                r#"xdpturn_relayed_packets_total{{datapath="xdp",direction="{dir}",transport="udp"}}"#
            ),
        )
    };
    let user = |dir: &str| {
        metric(
            r,
            &format!(
                r#"xdpturn_relayed_packets_total{{datapath="userspace",direction="{dir}",transport="udp"}}"#
            ),
        )
    };
    // The kernel counters are exported once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let (x_up, x_down, u_up, u_down) = (
        xdp("client_to_peer"),
        xdp("peer_to_client"),
        user("client_to_peer"),
        user("peer_to_client"),
    );
    eprintln!("{mode}: xdp {x_up}/{x_down}, userspace {u_up}/{u_down}, of {sent} each way");
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
}

#[test]
fn channel_data_is_forwarded_by_xdp_native_mode() {
    forwarded_by_xdp("native");
}

#[test]
fn channel_data_is_forwarded_by_xdp_skb_mode() {
    forwarded_by_xdp("skb");
}
