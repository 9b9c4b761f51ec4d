//! Next hops as the relay resolves them for the XDP program (`relay::dataplane::nexthop`), and
//! the dataplane's `NEXT_HOPS` map following the kernel's tables.
//!
//! Each test creates its own network namespace (removed on drop, failure included) with veth
//! interfaces, addresses, static neighbours and routes, and a thread enters it: the resolver's
//! netlink socket sees that namespace's tables. Nothing on the host changes; forwarding stays
//! off throughout, as the relay no longer needs it.
//!
//! Needs root (CI runs as root); the dataplane tests also need the program built into the relay
//! (`cargo xtask build-ebpf` before `cargo test`). Without either, the tests fail saying so.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

#[path = "common/netns.rs"]
mod netns;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netns::{Netns, mac_str, short_id};
use relay::dataplane::nexthop::{NextHop, Resolver};
use relay::dataplane::{Dataplane, NextHopChanges, PROGRAM_BUILT, XdpConfig, XdpMode};
use relay::proto::allocation::Relay;
use relay::proto::{FiveTuple, RelayHandle, Transport};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests create network namespaces: run them as root (CI does)"
    );
}

fn require_program() {
    require_root();
    if !PROGRAM_BUILT {
        panic!(
            "the XDP program is not built into this relay: run `cargo xtask build-ebpf`, then \
             the tests again (`cargo xtask test` does both)"
        );
    }
}

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0];
const HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const GATEWAY: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const GATEWAY2: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfd];
const STALE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x30];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Interface names unique to this call: the tests run in parallel, each in its namespace,
/// but names are easier to tell apart in a failure's output.
struct Names {
    a: String,
    b: String,
    tun: String,
}

/// The namespace: `a` (192.0.2.1/24, 2001:db8:a::1/64, MTU 1500) with a host 192.0.2.10 /
/// 2001:db8:a::10 and a stale neighbour 192.0.2.30; `b` (198.51.100.1/24, MTU 1400) with a
/// gateway 198.51.100.254 (and fe80::fe) that routes 203.0.113.0/24, 100.64.1.0/24 (route MTU
/// 1280) and 2001:db8:f::/64; a tun interface (no Ethernet address) routing 10.99.0.0/24;
/// unreachable, blackhole and prohibit routes. The veths' far ends stay in the namespace,
/// without addresses.
fn topology() -> (Netns, Names) {
    let ns = Netns::new("nh");
    let id = short_id();
    let names = Names {
        a: format!("nha{id}"),
        b: format!("nhb{id}"),
        tun: format!("nht{id}"),
    };
    for (name, mac) in [(&names.a, MAC_A), (&names.b, MAC_B)] {
        ns.ip(&format!(
            "link add {name} address {} type veth peer name {name}p",
            mac_str(&mac)
        ));
        ns.sysctl(&format!("net.ipv6.conf.{name}p.disable_ipv6=1"));
        ns.ip(&format!("link set {name} up"));
        ns.ip(&format!("link set {name}p up"));
    }
    let (a, b, tun) = (&names.a, &names.b, &names.tun);
    ns.ip(&format!("link set {b} mtu 1400"));
    ns.ip(&format!("addr add 192.0.2.1/24 dev {a}"));
    ns.ip(&format!("-6 addr add 2001:db8:a::1/64 dev {a} nodad"));
    ns.ip(&format!("addr add 198.51.100.1/24 dev {b}"));
    for (addr, mac, dev) in [
        ("192.0.2.10", HOST, a),
        ("2001:db8:a::10", HOST, a),
        ("198.51.100.254", GATEWAY, b),
        ("fe80::fe", GATEWAY, b),
    ] {
        ns.ip(&format!(
            "neigh replace {addr} lladdr {} dev {dev} nud permanent",
            mac_str(&mac)
        ));
    }
    ns.ip(&format!(
        "neigh replace 192.0.2.30 lladdr {} dev {a} nud stale",
        mac_str(&STALE)
    ));
    ns.ip(&format!(
        "route add 203.0.113.0/24 via 198.51.100.254 dev {b}"
    ));
    ns.ip(&format!(
        "route add 100.64.1.0/24 via 198.51.100.254 dev {b} mtu 1280"
    ));
    ns.ip(&format!(
        "-6 route add 2001:db8:f::/64 via fe80::fe dev {b}"
    ));
    ns.ip("route add unreachable 100.64.0.0/24");
    ns.ip("route add blackhole 100.64.2.0/24");
    ns.ip("route add prohibit 100.64.3.0/24");
    ns.ip("-6 route add unreachable 2001:db8:dead::/48");
    ns.ip(&format!("tuntap add {tun} mode tun"));
    ns.ip(&format!("link set {tun} up"));
    ns.ip(&format!("route add 10.99.0.0/24 dev {tun}"));
    (ns, names)
}

fn ifindex(name: &str) -> u32 {
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .unwrap();
    rustix::net::netdevice::name_to_index(&socket, name).unwrap()
}

#[test]
fn resolves_connected_and_gateway_routes_and_refuses_the_rest() {
    require_root();
    let (ns, names) = topology();
    ns.enter(|| {
        let (a, b) = (ifindex(&names.a), ifindex(&names.b));
        let mut r = Resolver::new().unwrap();
        let hop = |ifindex, mtu, smac, dmac| {
            Some(NextHop {
                ifindex,
                mtu,
                smac,
                dmac,
            })
        };

        // Connected: the destination's own MAC, the interface's MTU.
        assert_eq!(
            r.resolve(ip("192.0.2.10")).unwrap(),
            hop(a, 1500, MAC_A, HOST)
        );
        assert_eq!(
            r.resolve(ip("2001:db8:a::10")).unwrap(),
            hop(a, 1500, MAC_A, HOST)
        );
        // An IPv4-mapped address is the IPv4 one.
        let mapped = IpAddr::V6(
            "192.0.2.10"
                .parse::<std::net::Ipv4Addr>()
                .unwrap()
                .to_ipv6_mapped(),
        );
        assert_eq!(r.resolve(mapped).unwrap(), hop(a, 1500, MAC_A, HOST));
        // A STALE entry is one the kernel sends to (and confirms meanwhile).
        assert_eq!(
            r.resolve(ip("192.0.2.30")).unwrap(),
            hop(a, 1500, MAC_A, STALE)
        );
        // Via a gateway: the gateway's MAC; the route's MTU where it has one.
        assert_eq!(
            r.resolve(ip("203.0.113.7")).unwrap(),
            hop(b, 1400, MAC_B, GATEWAY)
        );
        assert_eq!(
            r.resolve(ip("100.64.1.9")).unwrap(),
            hop(b, 1280, MAC_B, GATEWAY)
        );
        // An IPv6 gateway by its link-local address.
        assert_eq!(
            r.resolve(ip("2001:db8:f::9")).unwrap(),
            hop(b, 1400, MAC_B, GATEWAY)
        );

        // No neighbour entry yet (the kernel resolves it when userspace sends), or one the
        // kernel does not send to.
        assert_eq!(r.resolve(ip("192.0.2.20")).unwrap(), None);
        ns.ip(&format!(
            "neigh add 192.0.2.21 dev {} nud incomplete",
            names.a
        ));
        ns.ip(&format!("neigh add 192.0.2.22 dev {} nud failed", names.a));
        ns.ip(&format!(
            "neigh add 192.0.2.23 lladdr {} dev {} nud noarp",
            mac_str(&HOST),
            names.a
        ));
        for addr in ["192.0.2.21", "192.0.2.22", "192.0.2.23"] {
            assert_eq!(r.resolve(ip(addr)).unwrap(), None, "{addr}");
        }
        // Routes the program must not send by: local, broadcast, multicast, loopback,
        // unreachable, blackhole, prohibit, no route at all, an interface without an Ethernet
        // address.
        for addr in [
            "192.0.2.1",
            "127.0.0.1",
            "::1",
            "2001:db8:a::1",
            "192.0.2.255",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "100.64.2.1",
            "100.64.3.1",
            "2001:db8:dead::1",
            "8.8.8.8",
            "2001:4860::8888",
            "10.99.0.5",
        ] {
            assert_eq!(r.resolve(ip(addr)).unwrap(), None, "{addr}");
        }

        // Many at once, in order, each interface and neighbour asked about once.
        let all = r
            .resolve_all(&[ip("192.0.2.10"), ip("192.0.2.20"), ip("203.0.113.8")])
            .unwrap();
        let hops: Vec<_> = all.iter().map(|r| r.hop).collect();
        assert_eq!(
            hops,
            [
                hop(a, 1500, MAC_A, HOST),
                None,
                hop(b, 1400, MAC_B, GATEWAY)
            ]
        );
        // The unresolved one still says which neighbour it waits for.
        let via = all[1].via.unwrap();
        assert_eq!((via.ifindex, via.addr), (a, ip("192.0.2.20")));
        assert_eq!(all[2].via.unwrap().addr, ip("198.51.100.254"));
        assert!(!all[0].stale);

        // A STALE entry, which the program's packets would never have confirmed: told that the
        // relay sends to it, the kernel confirms it as it does for its own sends.
        let stale = r.resolve_all(&[ip("192.0.2.30")]).unwrap()[0];
        assert!(stale.stale);
        assert_eq!(neighbour_state(&ns, "192.0.2.30", &names.a), "STALE");
        r.use_neighbour(stale.via.unwrap()).unwrap();
        assert_eq!(neighbour_state(&ns, "192.0.2.30", &names.a), "DELAY");
    });
}

/// The state `ip neigh` shows for `addr` on `dev`.
fn neighbour_state(ns: &Netns, addr: &str, dev: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "neigh", "show", addr, "dev", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// A channel from `client` to `peer`, on the relay's addresses in the namespace.
fn bind(dp: &Dataplane, client: &str, channel: u16, peer: &str) -> (FiveTuple, Relay, SocketAddr) {
    let client: SocketAddr = client.parse().unwrap();
    let listener = if client.is_ipv4() {
        "192.0.2.1:3478"
    } else {
        "[2001:db8:a::1]:3478"
    };
    let tuple = FiveTuple {
        transport: Transport::Udp,
        client,
        server: listener.parse().unwrap(),
    };
    let peer: SocketAddr = peer.parse().unwrap();
    let relay_addr = if peer.is_ipv4() {
        "198.51.100.1:50000"
    } else {
        "[2001:db8:a::1]:50000"
    };
    let relay = Relay {
        handle: RelayHandle(u32::from(channel)),
        addr: SocketAddr::new(
            relay_addr.parse::<SocketAddr>().unwrap().ip(),
            50_000 + (channel - 0x4000),
        ),
        advertised: relay_addr.parse().unwrap(),
    };
    dp.bind_channel(&tuple, channel, &relay, peer).unwrap();
    (tuple, relay, peer)
}

fn load() -> Dataplane {
    Dataplane::load(&XdpConfig {
        interfaces: Vec::new(),
        mode: XdpMode::Skb,
        max_channels: 16,
        listeners: Vec::new(),
    })
    .unwrap()
}

#[test]
fn binding_writes_next_hops_and_the_last_unbind_deletes_them() {
    require_program();
    let (ns, names) = topology();
    ns.enter(|| {
        let (a, b) = (ifindex(&names.a), ifindex(&names.b));
        let dp = load();
        assert_eq!(dp.next_hop(ip("192.0.2.10")).unwrap(), None);
        let first = bind(&dp, "192.0.2.10:40000", 0x4000, "203.0.113.7:6000");
        // Written with the channel: the first packet finds them.
        let client = NextHop {
            ifindex: a,
            mtu: 1500,
            smac: MAC_A,
            dmac: HOST,
        };
        assert_eq!(dp.next_hop(ip("192.0.2.10")).unwrap(), Some(client));
        assert_eq!(
            dp.next_hop(ip("203.0.113.7")).unwrap(),
            Some(NextHop {
                ifindex: b,
                mtu: 1400,
                smac: MAC_B,
                dmac: GATEWAY
            })
        );
        // A second channel of the same client, to a peer without a neighbour entry.
        let second = bind(&dp, "192.0.2.10:40001", 0x4001, "198.51.100.77:6001");
        assert_eq!(dp.next_hop(ip("198.51.100.77")).unwrap(), None);

        let unbind = |(tuple, relay, peer): &(FiveTuple, Relay, SocketAddr), channel| {
            dp.unbind_channel(tuple, channel, relay, *peer).unwrap();
        };
        unbind(&first, 0x4000);
        // The client is still another channel's.
        assert_eq!(dp.next_hop(ip("192.0.2.10")).unwrap(), Some(client));
        assert_eq!(dp.next_hop(ip("203.0.113.7")).unwrap(), None);
        unbind(&second, 0x4001);
        assert_eq!(dp.next_hop(ip("192.0.2.10")).unwrap(), None);
        assert_eq!(dp.refresh_next_hops().unwrap(), NextHopChanges::default());
    });
}

#[test]
fn refreshes_follow_neighbour_and_route_changes() {
    require_program();
    let (ns, names) = topology();
    ns.enter(|| {
        let (a, b) = (ifindex(&names.a), ifindex(&names.b));
        let dp = load();
        bind(&dp, "192.0.2.10:40000", 0x4000, "203.0.113.7:6000");
        bind(
            &dp,
            "[2001:db8:a::10]:40001",
            0x4001,
            "[2001:db8:f::9]:6001",
        );
        bind(&dp, "192.0.2.10:40002", 0x4002, "198.51.100.77:6002");
        let peer = ip("203.0.113.7");
        let via_gateway = |dmac| NextHop {
            ifindex: b,
            mtu: 1400,
            smac: MAC_B,
            dmac,
        };
        assert_eq!(dp.next_hop(peer).unwrap(), Some(via_gateway(GATEWAY)));
        assert_eq!(dp.refresh_next_hops().unwrap(), NextHopChanges::default());

        // A client whose neighbour entry is STALE: the program's packets would leave it so for
        // ever; a refresh has the kernel confirm it (DELAY, then PROBE), as its own sends do.
        bind(&dp, "192.0.2.30:40003", 0x4003, "203.0.113.7:6003");
        assert!(dp.next_hop(ip("192.0.2.30")).unwrap().is_some());
        dp.refresh_next_hops().unwrap();
        let state = neighbour_state(&ns, "192.0.2.30", &names.a);
        assert!(state == "DELAY" || state == "PROBE", "{state}");

        // The gateway's MAC changes: both families' peers behind it follow.
        for gw in ["198.51.100.254", "fe80::fe"] {
            ns.ip(&format!(
                "neigh replace {gw} lladdr {} dev {} nud permanent",
                mac_str(&GATEWAY2),
                names.b
            ));
        }
        let changes = dp.refresh_next_hops().unwrap();
        assert_eq!(dp.next_hop(peer).unwrap(), Some(via_gateway(GATEWAY2)));
        assert_eq!(
            dp.next_hop(ip("2001:db8:f::9")).unwrap(),
            Some(via_gateway(GATEWAY2))
        );
        // Unless the refresh thread got there first.
        assert!(changes.updated <= 2 && changes.added == 0, "{changes:?}");

        // The route changes: through the other interface, another gateway, another MTU.
        ns.ip(&format!(
            "neigh replace 192.0.2.254 lladdr {} dev {} nud permanent",
            mac_str(&GATEWAY),
            names.a
        ));
        ns.ip(&format!(
            "route replace 203.0.113.0/24 via 192.0.2.254 dev {} mtu 1300",
            names.a
        ));
        dp.refresh_next_hops().unwrap();
        assert_eq!(
            dp.next_hop(peer).unwrap(),
            Some(NextHop {
                ifindex: a,
                mtu: 1300,
                smac: MAC_A,
                dmac: GATEWAY
            })
        );

        // The route goes: so does the entry.
        ns.ip("route del 203.0.113.0/24");
        dp.refresh_next_hops().unwrap();
        assert_eq!(dp.next_hop(peer).unwrap(), None);
        // And comes back.
        ns.ip(&format!(
            "route add 203.0.113.0/24 via 198.51.100.254 dev {}",
            names.b
        ));
        dp.refresh_next_hops().unwrap();
        assert_eq!(dp.next_hop(peer).unwrap(), Some(via_gateway(GATEWAY2)));

        // A neighbour the kernel learns: the entry appears without anyone asking for a
        // refresh (the kernel's announcement, or the refresh each second, brings it).
        let waiting = ip("198.51.100.77");
        assert_eq!(dp.next_hop(waiting).unwrap(), None);
        ns.ip(&format!(
            "neigh replace 198.51.100.77 lladdr {} dev {} nud reachable",
            mac_str(&HOST),
            names.b
        ));
        let learnt = Some(NextHop {
            ifindex: b,
            mtu: 1400,
            smac: MAC_B,
            dmac: HOST,
        });
        let deadline = Instant::now() + Duration::from_secs(3);
        while dp.next_hop(waiting).unwrap() != learnt {
            assert!(
                Instant::now() < deadline,
                "the learnt neighbour is not in NEXT_HOPS after 3 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // And a neighbour that goes takes its entry with it.
        ns.ip(&format!("neigh del 198.51.100.77 dev {}", names.b));
        let deadline = Instant::now() + Duration::from_secs(3);
        while dp.next_hop(waiting).unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "the deleted neighbour is still in NEXT_HOPS after 3 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        // An interface that goes down takes its next hops along.
        ns.ip(&format!("link set {} down", names.a));
        dp.refresh_next_hops().unwrap();
        assert_eq!(dp.next_hop(ip("192.0.2.10")).unwrap(), None);
        assert_eq!(dp.next_hop(ip("2001:db8:a::10")).unwrap(), None);
        assert_eq!(dp.next_hop(peer).unwrap(), Some(via_gateway(GATEWAY2)));
    });
}
