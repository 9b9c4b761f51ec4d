//! Which peers an allocation may reach.
//!
//! Denied by default: every address that IANA's special-purpose registries (IPv4 and IPv6)
//! do not mark globally reachable, and the rest of the IPv6 space that is not global unicast —
//! "this network", loopback, RFC 1918, link-local (cloud metadata lives at 169.254.169.254),
//! CGNAT, benchmarking, the documentation ranges, the deprecated 6to4 relay anycast, discard-only,
//! ORCHID, SRv6 SIDs, reserved, multicast, broadcast, unique-local and site-local IPv6 — and the
//! same IPv4 addresses smuggled inside IPv6: IPv4-mapped, SIIT (IPv4-translated), IPv4-compatible,
//! NAT64 (64:ff9b::/96), 6to4, Teredo (client and server). The few special-purpose ranges IANA
//! marks globally reachable stay allowed (AMT, AS112, DRIP), except the anycast service addresses
//! of 192.0.0.0/24 and 2001::/23 (PCP, TURN, DNS-SD): they name a service near the relay, never a
//! peer. The local-use NAT64 prefix 64:ff9b:1::/48 is denied whole: it is not globally reachable
//! and where its IPv4 address sits depends on the operator's prefix length.
//!
//! Also denied, whatever the lists say: the relay's own service endpoints (its TURN listeners and
//! HTTP port). The relay's own relay ports are allowed, since two clients of one relay talking to
//! each other is the common case; the relay's own addresses on any other port are denied unless
//! an operator allow names them. Operator-given allow and deny CIDRs adjust the defaults: an allow
//! beats every built-in deny, and between an operator allow and an operator deny the longer prefix
//! wins.
//!
//! Permissions are per IP (RFC 8656 §9), but the relay's own addresses are judged per port: the
//! same [`PeerPolicy::check`] decides CreatePermission, ChannelBind, Send indications, Connect and
//! the datagrams that arrive from such an address, and [`PeerPolicy::port_free`] says whether an
//! IP's permission may go into the kernel's per-IP permission entries at all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// IPv4 ranges no TURN client has a reason to reach through a public relay: the IPv4
/// special-purpose registry's entries that are not globally reachable, multicast and broadcast.
pub const DENIED_V4: &[&str] = &[
    "0.0.0.0/8",       // "this network"
    "10.0.0.0/8",      // RFC 1918
    "100.64.0.0/10",   // RFC 6598 carrier-grade NAT
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local, cloud metadata
    "172.16.0.0/12",   // RFC 1918
    "192.0.0.0/24",    // IETF protocol assignments (its anycast services included)
    "192.0.2.0/24",    // TEST-NET-1, documentation
    "192.88.99.0/24",  // deprecated 6to4 relay anycast
    "192.168.0.0/16",  // RFC 1918
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // TEST-NET-2, documentation
    "203.0.113.0/24",  // TEST-NET-3, documentation
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, and 255.255.255.255 broadcast
];

/// IPv6 ranges denied by default: the IPv6 special-purpose registry's entries that are not
/// globally reachable, and everything outside global unicast (2000::/3) that is not an IPv4
/// encoding ([`IPV4_IN_V6`]).
pub const DENIED_V6: &[&str] = &[
    "::/3",           // reserved by the IETF (the IPv4 encodings in it are judged by IPv4)
    "::/128",         // unspecified
    "::1/128",        // loopback
    "64:ff9b:1::/48", // local-use NAT64, not globally reachable
    "100::/64",       // discard-only
    "2001::/23",      // IETF protocol assignments: benchmarking, ORCHID, anycast services
    "2001:db8::/32",  // documentation
    "3fff::/20",      // documentation
    "4000::/2",       // reserved by the IETF (SRv6 SIDs 5f00::/16 included)
    "8000::/1",       // reserved by the IETF, and the next four
    "fc00::/7",       // unique local
    "fe80::/10",      // link-local
    "fec0::/10",      // site-local (deprecated, RFC 3879)
    "ff00::/8",       // multicast
];

/// Special-purpose IPv6 ranges inside [`DENIED_V6`] that IANA marks globally reachable: allowed
/// (the longest built-in prefix decides).
pub const GLOBAL_V6: &[&str] = &[
    "2001:3::/32",     // AMT
    "2001:4:112::/48", // AS112-v6
    "2001:30::/28",    // DRIP entity tags
];

/// IPv6 ranges that carry an IPv4 address: judged by that address ([`embedded_ipv4`]).
pub const IPV4_IN_V6: &[&str] = &[
    "::/96",           // IPv4-compatible (deprecated)
    "::ffff:0:0/96",   // IPv4-mapped
    "::ffff:0:0:0/96", // SIIT, IPv4-translated (RFC 2765)
    "64:ff9b::/96",    // NAT64 well-known prefix
    "2001::/32",       // Teredo: server and client (inverted)
    "2002::/16",       // 6to4
];

/// Why a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// One of the relay's own service endpoints.
    OwnEndpoint,
    /// One of the relay's own addresses on a port that is not a relay port.
    OwnAddress,
    /// A built-in denied range (possibly reached through an IPv6 encoding of IPv4).
    BuiltIn,
    /// An operator's `--deny-peer`.
    Configured,
}

impl Denial {
    /// Every reason, for metrics that list them all.
    pub const ALL: [Denial; 4] = [
        Denial::OwnEndpoint,
        Denial::OwnAddress,
        Denial::BuiltIn,
        Denial::Configured,
    ];
}

/// What the built-in table says of an address: the longest of its prefixes decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Denied,
    Global,
    /// An IPv6 encoding of IPv4 ([`IPV4_IN_V6`]): the IPv4 address decides.
    Ipv4Inside,
}

/// The peer policy of one relay.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    builtin: Vec<(IpNet, Builtin)>,
    /// The relay's listeners and HTTP endpoints, as IP:port (unspecified IPs match any IP).
    own_endpoints: Vec<SocketAddr>,
    /// The relay's relay addresses: IPs and the relay port range.
    relay_ips: Vec<IpAddr>,
    relay_ports: (u16, u16),
}

impl PeerPolicy {
    /// The defaults plus `allow` and `deny`.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        let table = |list: &'static [&'static str], kind| {
            list.iter().map(move |s| {
                let net: IpNet = s
                    .parse()
                    .unwrap_or_else(|_| unreachable!("built-in CIDR {s}"));
                (net, kind)
            })
        };
        let builtin = table(DENIED_V4, Builtin::Denied)
            .chain(table(DENIED_V6, Builtin::Denied))
            .chain(table(GLOBAL_V6, Builtin::Global))
            .chain(table(IPV4_IN_V6, Builtin::Ipv4Inside))
            .collect();
        Self {
            allow,
            deny,
            builtin,
            own_endpoints: Vec::new(),
            relay_ips: Vec::new(),
            relay_ports: (1, 0),
        }
    }

    /// The relay's own service endpoints, always denied.
    pub fn with_own_endpoints(mut self, endpoints: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.own_endpoints = endpoints.into_iter().collect();
        self
    }

    /// The relay's own relay addresses: allowed on the relay ports, denied on the others
    /// unless an operator allow names them.
    pub fn with_relay_addresses(
        mut self,
        ips: impl IntoIterator<Item = IpAddr>,
        ports: (u16, u16),
    ) -> Self {
        self.relay_ips = ips.into_iter().collect();
        self.relay_ports = ports;
        self
    }

    /// Whether `ip` is one of the relay's own relay addresses.
    pub fn is_relay_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.relay_ips.iter().any(|r| r.to_canonical() == ip)
    }

    /// Whether an allocation may exchange data with `peer`: what CreatePermission, ChannelBind,
    /// Connect and Send indications decide on, and what a datagram from one of the relay's own
    /// addresses is checked against. Permissions are per IP (RFC 8656 §9), so `peer.port()`
    /// only matters for the relay's own endpoints and addresses.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Denial> {
        let ip = peer.ip().to_canonical();
        if self.own_endpoints.iter().any(|e| {
            e.port() == peer.port() && (e.ip().is_unspecified() || e.ip().to_canonical() == ip)
        }) {
            return Err(Denial::OwnEndpoint);
        }
        if self.is_relay_ip(ip) {
            if (self.relay_ports.0..=self.relay_ports.1).contains(&peer.port()) {
                return Ok(());
            }
            if self.configured(ip) != Some(Ok(())) {
                return Err(Denial::OwnAddress);
            }
        }
        self.check_ip(ip)
    }

    /// Whether [`PeerPolicy::check`] says the same of `ip` on every port, so that a permission
    /// for it may be served by the kernel, whose permission entries match any port. Not so for
    /// the relay's own addresses (only their relay ports are peers, unless an operator allow
    /// names them) and the addresses of its own endpoints.
    pub fn port_free(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let relay = self.is_relay_ip(ip);
        let per_port_own_address = relay && self.configured(ip) != Some(Ok(()));
        let own_endpoint = self
            .own_endpoints
            .iter()
            .any(|e| e.ip().to_canonical() == ip || (relay && e.ip().is_unspecified()));
        !per_port_own_address && !own_endpoint
    }

    /// Whether a permission for `ip` may be served by the kernel, whose permission entries
    /// match any port: where [`PeerPolicy::port_free`] says so, and for the relay's own relay
    /// addresses. The only datagrams the program relays from a relay address are those of a
    /// same-relay call, which leave from a relay port by construction (the program never sees
    /// a datagram the relay host sends itself: those go through loopback; one from the relay's
    /// own address on the wire is forged, as the kernel's stack would find too late), so
    /// the port rule holds there too; and without these entries a same-relay call of two
    /// clients that use indications only (Firefox) would leave the kernel.
    pub fn kernel_may_serve(&self, ip: IpAddr) -> bool {
        self.port_free(ip) || self.is_relay_ip(ip.to_canonical())
    }

    /// The IP part of [`PeerPolicy::check`], for any port that is neither one of the relay's
    /// endpoints nor a relay port.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denial> {
        let ip = ip.to_canonical();
        if let Some(verdict) = self.configured(ip) {
            return verdict;
        }
        let builtin = self
            .builtin
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|&(_, kind)| kind);
        match (builtin, ip) {
            (Some(Builtin::Denied), _) => Err(Denial::BuiltIn),
            // An IPv6 address that carries an IPv4 address is judged by that IPv4 address
            // (the operator's rules on it included), unless the operator allowed the IPv6 form
            // explicitly (handled above).
            (Some(Builtin::Ipv4Inside), IpAddr::V6(v6)) => embedded_ipv4(v6)
                .into_iter()
                .flatten()
                .try_for_each(|v4| self.check_ip(IpAddr::V4(v4))),
            _ => Ok(()),
        }
    }

    /// The operator's verdict on `ip`, if an allow or deny covers it: between the two, the
    /// longer prefix wins, an allow on a tie.
    fn configured(&self, ip: IpAddr) -> Option<Result<(), Denial>> {
        match (
            longest_match(&self.allow, ip),
            longest_match(&self.deny, ip),
        ) {
            (Some(a), Some(d)) if d > a => Some(Err(Denial::Configured)),
            (Some(_), _) => Some(Ok(())),
            (None, Some(_)) => Some(Err(Denial::Configured)),
            (None, None) => None,
        }
    }
}

fn longest_match(nets: &[IpNet], ip: IpAddr) -> Option<u8> {
    nets.iter()
        .filter(|n| n.contains(&ip))
        .map(IpNet::prefix_len)
        .max()
}

/// The IPv4 addresses inside an IPv6 address that routes to them ([`IPV4_IN_V6`]): IPv4-mapped
/// (::ffff:0:0/96), SIIT (::ffff:0:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96, and
/// the last 32 bits of the local-use 64:ff9b:1::/48), 6to4 (2002::/16), and Teredo (2001::/32:
/// the server, then the client address inverted).
pub fn embedded_ipv4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let o = ip.octets();
    let seg = ip.segments();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let one = |v4| [Some(v4), None];
    match seg {
        [0, 0, 0, 0, 0, 0xffff, _, _] // IPv4-mapped
        | [0, 0, 0, 0, 0xffff, 0, _, _] // SIIT
        | [0, 0, 0, 0, 0, 0, _, _] // IPv4-compatible, :: and ::1 included
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] // NAT64
        | [0x64, 0xff9b, 1, _, _, _, _, _] => one(last32), // local-use NAT64
        [0x2002, ..] => one(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        [0x2001, 0, ..] => [
            Some(Ipv4Addr::new(o[4], o[5], o[6], o[7])),
            Some(Ipv4Addr::from(u32::from(last32) ^ 0xFFFF_FFFF)),
        ],
        _ => [None, None],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The CIDR syntax is the config contract's, tested in the api crate.
    use api::parse_cidr;

    fn policy() -> PeerPolicy {
        PeerPolicy::new(Vec::new(), Vec::new())
    }

    fn denied(p: &PeerPolicy, addr: &str) -> bool {
        p.check(addr.parse().expect("addr")).is_err()
    }

    /// `v4` in every IPv6 encoding of IPv4 the policy unwraps, named.
    fn encodings(v4: Ipv4Addr) -> Vec<(&'static str, Ipv6Addr)> {
        let [a, b, c, d] = v4.octets();
        let hi = u16::from_be_bytes([a, b]);
        let lo = u16::from_be_bytes([c, d]);
        let [ia, ib, ic, id] = (!u32::from(v4)).to_be_bytes();
        let public = [8u16 << 8 | 8, 8 << 8 | 8]; // 8.8.8.8
        vec![
            ("IPv4-mapped", v4.to_ipv6_mapped()),
            ("SIIT", Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo)),
            ("IPv4-compatible", Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo)),
            ("NAT64", Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo)),
            ("6to4", Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1)),
            (
                "Teredo client",
                Ipv6Addr::new(
                    0x2001,
                    0,
                    public[0],
                    public[1],
                    0,
                    0xf227,
                    u16::from_be_bytes([ia, ib]),
                    u16::from_be_bytes([ic, id]),
                ),
            ),
            (
                "Teredo server",
                // Client 8.8.8.8, inverted.
                Ipv6Addr::new(0x2001, 0, hi, lo, 0, 0xf227, 0xf7f7, 0xf7f7),
            ),
        ]
    }

    /// One address in each IPv4 range the built-in table denies.
    const DENIED_V4_SAMPLES: &[&str] = &[
        "0.1.2.3",
        "10.1.2.3",
        "100.64.0.1",
        "100.127.255.255",
        "127.0.0.1",
        "169.254.169.254",
        "172.16.5.4",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.0.9",  // PCP anycast: a service near the relay, no peer
        "192.0.0.10", // TURN anycast
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.7",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
    ];

    #[test]
    fn every_builtin_class_is_denied() {
        let p = policy();
        for ip in DENIED_V4_SAMPLES {
            assert!(denied(&p, &format!("{ip}:1000")), "{ip} must be denied");
        }
        for ip in [
            "::",
            "::1",
            "::2:3:4:5",          // reserved ::/8, not an IPv4 encoding
            "::ffff:1:0:0",       // reserved, next to the mapped and SIIT ranges
            "64:ff9b:1::808:808", // local-use NAT64, even of a public address
            "64:ff9b:1:ffff::1",  // local-use NAT64
            "100::1",             // discard-only
            "100::ffff:ffff:ffff:ffff",
            "2001:1::1",        // PCP anycast
            "2001:1::2",        // TURN anycast
            "2001:1::3",        // DNS-SD service registration anycast
            "2001:2::1",        // benchmarking
            "2001:10::1",       // ORCHID (deprecated)
            "2001:20::1",       // ORCHIDv2: identifiers, not routable
            "2001:2f:ffff::1",  // ORCHIDv2
            "2001:100::1",      // IETF protocol assignments
            "2001:1ff:ffff::1", // last of 2001::/23
            "2001:db8::1",      // documentation
            "2001:db8:ffff::1",
            "3fff::1", // documentation
            "3fff:fff::1",
            "4000::1", // reserved
            "5f00::1", // SRv6 SIDs
            "8000::1", // reserved
            "fc00::1", // unique local
            "fd12:3456::1",
            "fe80::1", // link-local
            "febf::1",
            "fec0::1", // site-local
            "feff::1",
            "ff02::1", // multicast
        ] {
            assert!(denied(&p, &format!("[{ip}]:1000")), "{ip} must be denied");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = policy();
        for addr in [
            "8.8.8.8:53",
            "1.1.1.1:443",
            "192.0.1.255:1",   // just before TEST-NET-1
            "192.0.3.0:1",     // just after TEST-NET-1
            "192.31.196.1:53", // AS112, globally reachable
            "192.52.193.1:1",  // AMT, globally reachable
            "192.175.48.1:53", // AS112 direct delegation
            "198.51.99.255:1",
            "203.0.114.0:1",
            "223.255.255.255:1",
            "[2606:4700::1111]:53",
            "[2001:4860:4860::8888]:53",
            "[2001:200::1]:1",    // just after 2001::/23
            "[2001:3::1]:1",      // AMT
            "[2001:4:112::1]:53", // AS112-v6
            "[2001:30::1]:1",     // DRIP
            "[2001:db7:ffff::1]:1",
            "[2001:db9::1]:1",
            "[2620:4f:8000::1]:53", // AS112-v6 direct delegation
            "[3ffe::1]:1",
            "[3fff:1000::1]:1", // just after 3fff::/20
        ] {
            assert!(!denied(&p, addr), "{addr} must be allowed");
        }
        assert!(!denied(&p, "172.32.0.1:1"), "just outside 172.16/12");
        assert!(!denied(&p, "100.128.0.1:1"), "just outside 100.64/10");
    }

    #[test]
    fn ipv6_encodings_of_denied_ipv4_are_denied() {
        let p = policy();
        for ip in DENIED_V4_SAMPLES {
            for (name, v6) in encodings(ip.parse().expect("ip")) {
                assert!(
                    denied(&p, &format!("[{v6}]:80")),
                    "{name} {v6} of {ip} must be denied"
                );
            }
        }
        for addr in [
            "[::ffff:0:7f00:1]:1",                      // SIIT of 127.0.0.1
            "[::ffff:0:a9fe:a9fe]:80",                  // SIIT of 169.254.169.254
            "[::ffff:127.0.0.1]:1",                     // IPv4-mapped
            "[::127.0.0.1]:1",                          // IPv4-compatible
            "[64:ff9b::a9fe:a9fe]:80",                  // NAT64 metadata
            "[2002:a9fe:a9fe::]:80",                    // 6to4 of 169.254.169.254
            "[2001:0:4136:e378:8000:63bf:f5ff:fffe]:1", // Teredo, client 10.0.0.1
            "[2001:0:a00:1:8000:63bf:f7f7:f7f7]:1",     // Teredo, server 10.0.0.1
        ] {
            assert!(denied(&p, addr), "{addr} must be denied");
        }
        // Every encoding of a public IPv4 address is fine.
        for (name, v6) in encodings("8.8.8.8".parse().expect("ip")) {
            assert!(!denied(&p, &format!("[{v6}]:53")), "{name} {v6}");
        }
    }

    #[test]
    fn embedded_ipv4_reads_every_encoding() {
        let v4: Ipv4Addr = "192.0.2.33".parse().expect("ip");
        for (name, v6) in encodings(v4) {
            let found = embedded_ipv4(v6);
            assert!(found.contains(&Some(v4)), "{name} {v6}: {found:?}");
        }
        assert_eq!(
            embedded_ipv4("2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().expect("ip")),
            [
                Some("65.54.227.120".parse().expect("ip")),
                Some("192.0.2.45".parse().expect("ip"))
            ],
            "RFC 4380's example"
        );
        assert_eq!(
            embedded_ipv4("2606:4700::1111".parse().expect("ip")),
            [None, None]
        );
    }

    #[test]
    fn operator_allow_beats_builtin_and_longest_prefix_decides() {
        let p = PeerPolicy::new(
            vec![
                parse_cidr("10.1.0.0/16").expect("cidr"),
                parse_cidr("198.51.100.7").expect("cidr"),
                parse_cidr("2001:db8::/32").expect("cidr"),
                parse_cidr("fec0::/10").expect("cidr"),
            ],
            vec![
                parse_cidr("10.1.2.0/24").expect("cidr"),
                parse_cidr("198.51.100.0/24").expect("cidr"),
                parse_cidr("2606:4700::/32").expect("cidr"),
            ],
        );
        assert!(
            !denied(&p, "10.1.9.9:1"),
            "allowed over the built-in RFC 1918 deny"
        );
        assert!(denied(&p, "10.1.2.3:1"), "the longer operator deny wins");
        assert!(
            !denied(&p, "198.51.100.7:1"),
            "the longer operator allow wins"
        );
        assert!(denied(&p, "198.51.100.8:1"), "operator deny");
        assert!(denied(&p, "10.2.0.1:1"), "still built-in denied");
        assert!(!denied(&p, "[2001:db8::5]:1"), "documentation, allowed");
        assert!(!denied(&p, "[fec0::5]:1"), "site-local, allowed");
        assert!(denied(&p, "[2606:4700::1111]:1"), "operator deny of IPv6");
        assert!(
            !denied(&p, "[64:ff9b::a01:909]:1"),
            "NAT64 of an allowed IPv4 address"
        );
        assert_eq!(
            p.check("[::ffff:0:a01:203]:1".parse().expect("a")),
            Err(Denial::Configured),
            "SIIT of an operator-denied IPv4 address"
        );
        assert_eq!(
            p.check("[::ffff:0:a02:1]:1".parse().expect("a")),
            Err(Denial::BuiltIn)
        );
    }

    #[test]
    fn own_endpoints_denied_relay_ports_allowed() {
        let p = PeerPolicy::new(vec![parse_cidr("0.0.0.0/0").expect("cidr")], Vec::new())
            .with_own_endpoints([
                "0.0.0.0:3478".parse().expect("a"),
                "203.0.113.1:9641".parse().expect("a"),
            ])
            .with_relay_addresses(["10.0.0.5".parse().expect("ip")], (49152, 65535));
        assert_eq!(
            p.check("203.0.113.1:3478".parse().expect("a")),
            Err(Denial::OwnEndpoint)
        );
        assert_eq!(
            p.check("203.0.113.1:9641".parse().expect("a")),
            Err(Denial::OwnEndpoint)
        );
        assert_eq!(
            p.check("[::ffff:203.0.113.1]:9641".parse().expect("a")),
            Err(Denial::OwnEndpoint)
        );
        assert_eq!(p.check("203.0.113.1:9642".parse().expect("a")), Ok(()));
        assert_eq!(
            p.check("10.0.0.5:22".parse().expect("a")),
            Ok(()),
            "the operator allowed the relay's address"
        );
        let p = PeerPolicy::new(Vec::new(), Vec::new())
            .with_relay_addresses(["10.0.0.5".parse().expect("ip")], (49152, 65535));
        assert_eq!(
            p.check("10.0.0.5:50000".parse().expect("a")),
            Ok(()),
            "another allocation of ours"
        );
        assert_eq!(
            p.check("10.0.0.5:22".parse().expect("a")),
            Err(Denial::OwnAddress),
            "not a relay port"
        );
        assert_eq!(
            p.check("10.0.0.6:50000".parse().expect("a")),
            Err(Denial::BuiltIn)
        );
        // A public relay address is no peer on its other ports either.
        let p = PeerPolicy::new(Vec::new(), Vec::new())
            .with_relay_addresses(["8.8.4.4".parse().expect("ip")], (49152, 65535));
        assert_eq!(p.check("8.8.4.4:50000".parse().expect("a")), Ok(()));
        assert_eq!(
            p.check("8.8.4.4:443".parse().expect("a")),
            Err(Denial::OwnAddress)
        );
        assert_eq!(
            p.check("[::ffff:8.8.4.4]:443".parse().expect("a")),
            Err(Denial::OwnAddress)
        );
    }

    #[test]
    fn only_port_free_permissions_go_to_the_kernel() {
        let relay: IpAddr = "8.8.4.4".parse().expect("ip");
        let listener: IpAddr = "8.8.4.5".parse().expect("ip");
        let p = PeerPolicy::new(Vec::new(), Vec::new())
            .with_own_endpoints([SocketAddr::new(listener, 3478)])
            .with_relay_addresses([relay], (49152, 65535));
        assert!(p.port_free("1.1.1.1".parse().expect("ip")));
        assert!(
            !p.port_free(relay),
            "only the relay ports of our own address"
        );
        assert!(!p.port_free("::ffff:8.8.4.4".parse().expect("ip")));
        assert!(!p.port_free(listener), "our listener's address");
        // An operator allow of the relay's address makes every port of it a peer...
        let p = PeerPolicy::new(vec![parse_cidr("8.8.4.0/24").expect("cidr")], Vec::new())
            .with_own_endpoints([SocketAddr::new(listener, 3478)])
            .with_relay_addresses([relay], (49152, 65535));
        assert!(p.port_free(relay));
        assert!(!p.port_free(listener), "but our own endpoints' addresses");
        // ...but an endpoint on every address is on the relay's address too.
        let p = PeerPolicy::new(vec![parse_cidr("8.8.4.0/24").expect("cidr")], Vec::new())
            .with_own_endpoints(["0.0.0.0:3478".parse().expect("a")])
            .with_relay_addresses([relay], (49152, 65535));
        assert!(!p.port_free(relay));
        assert!(p.port_free("8.8.4.9".parse().expect("ip")));
        // The kernel serves the relay's own relay addresses all the same (same-relay calls,
        // whose datagrams leave from relay ports), never another endpoint's address.
        assert!(p.kernel_may_serve(relay));
        assert!(p.kernel_may_serve("::ffff:8.8.4.4".parse().expect("ip")));
        let p = PeerPolicy::new(Vec::new(), Vec::new())
            .with_own_endpoints([SocketAddr::new(listener, 3478)])
            .with_relay_addresses([relay], (49152, 65535));
        assert!(p.kernel_may_serve(relay));
        assert!(!p.kernel_may_serve(listener));
        assert!(p.kernel_may_serve("1.1.1.1".parse().expect("ip")));
    }
}
