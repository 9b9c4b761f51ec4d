//! Which peers an allocation may reach.
//!
//! Denied by default: everything that is not the public Internet — loopback, RFC 1918,
//! link-local (cloud metadata lives at 169.254.169.254), CGNAT, benchmarking, multicast,
//! broadcast, unique-local IPv6 — and the same addresses smuggled inside IPv6 (IPv4-mapped,
//! IPv4-compatible, NAT64, 6to4, Teredo). Also denied, whatever the lists say: the relay's own
//! service endpoints (its TURN listeners and HTTP port). Allowed, whatever the lists say: the
//! relay's own relay ports, since two clients of one relay talking to each other is the common
//! case. Operator-given allow and deny CIDRs adjust the defaults: an allow beats every built-in
//! deny, and between an operator allow and an operator deny the longer prefix wins.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv6Net};

/// IPv4 ranges no TURN client has a reason to reach through a public relay.
pub const DENIED_V4: &[&str] = &[
    "0.0.0.0/8",      // "this network"
    "10.0.0.0/8",     // RFC 1918
    "100.64.0.0/10",  // RFC 6598 carrier-grade NAT
    "127.0.0.0/8",    // loopback
    "169.254.0.0/16", // link-local, cloud metadata
    "172.16.0.0/12",  // RFC 1918
    "192.0.0.0/24",   // IETF protocol assignments
    "192.168.0.0/16", // RFC 1918
    "198.18.0.0/15",  // benchmarking
    "224.0.0.0/4",    // multicast
    "240.0.0.0/4",    // reserved, and 255.255.255.255 broadcast
];

/// IPv6 ranges denied by default (embedded IPv4 forms are unwrapped and checked as IPv4).
pub const DENIED_V6: &[&str] = &[
    "::/128",    // unspecified
    "::1/128",   // loopback
    "fc00::/7",  // unique local
    "fe80::/10", // link-local
    "ff00::/8",  // multicast
];

/// Why a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// One of the relay's own service endpoints.
    OwnEndpoint,
    /// A built-in denied range (possibly reached through an IPv6 encoding of IPv4).
    BuiltIn,
    /// An operator's `--deny-peer`.
    Configured,
}

/// The peer policy of one relay.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    builtin: Vec<IpNet>,
    /// The relay's listeners and HTTP endpoints, as IP:port (unspecified IPs match any IP).
    own_endpoints: Vec<SocketAddr>,
    /// The relay's relay addresses: IPs and the relay port range.
    relay_ips: Vec<IpAddr>,
    relay_ports: (u16, u16),
}

impl PeerPolicy {
    /// The defaults plus `allow` and `deny`.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        let builtin = DENIED_V4
            .iter()
            .chain(DENIED_V6)
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| unreachable!("built-in CIDR {s}"))
            })
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

    /// The relay's own relay addresses, always allowed.
    pub fn with_relay_addresses(
        mut self,
        ips: impl IntoIterator<Item = IpAddr>,
        ports: (u16, u16),
    ) -> Self {
        self.relay_ips = ips.into_iter().collect();
        self.relay_ports = ports;
        self
    }

    /// Whether an allocation may exchange data with `peer`. Permissions are per IP (RFC 8656
    /// §9), so `peer.port()` only matters for the relay's own endpoints and relay ports.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Denial> {
        let ip = peer.ip().to_canonical();
        if self.own_endpoints.iter().any(|e| {
            e.port() == peer.port() && (e.ip().is_unspecified() || e.ip().to_canonical() == ip)
        }) {
            return Err(Denial::OwnEndpoint);
        }
        if self.relay_ips.iter().any(|r| r.to_canonical() == ip)
            && (self.relay_ports.0..=self.relay_ports.1).contains(&peer.port())
        {
            return Ok(());
        }
        self.check_ip(ip)
    }

    /// The IP part of [`PeerPolicy::check`]: what CreatePermission decides on.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denial> {
        let ip = ip.to_canonical();
        let allow = longest_match(&self.allow, ip);
        let deny = longest_match(&self.deny, ip);
        match (allow, deny) {
            (Some(a), Some(d)) if d > a => return Err(Denial::Configured),
            (Some(_), _) => return Ok(()),
            (None, Some(_)) => return Err(Denial::Configured),
            (None, None) => {}
        }
        if self.builtin.iter().any(|n| n.contains(&ip)) {
            return Err(Denial::BuiltIn);
        }
        // An IPv6 address that carries an IPv4 address is judged by that IPv4 address too,
        // unless the operator allowed the IPv6 form explicitly (handled above).
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_ipv4(v6)
        {
            return self.check_ip(IpAddr::V4(v4));
        }
        Ok(())
    }
}

fn longest_match(nets: &[IpNet], ip: IpAddr) -> Option<u8> {
    nets.iter()
        .filter(|n| n.contains(&ip))
        .map(IpNet::prefix_len)
        .max()
}

/// The IPv4 address inside an IPv6 address that routes to it: IPv4-mapped (::ffff:0:0/96),
/// IPv4-compatible (::/96), NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48), 6to4
/// (2002::/16) and Teredo (2001::/32, the client address inverted).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let seg = ip.segments();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if seg[..6] == [0; 6] {
        return Some(last32); // IPv4-compatible (deprecated), :: and ::1 included
    }
    if Ipv6Net::new(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)
        .is_ok_and(|n| n.contains(&ip))
        || Ipv6Net::new(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48)
            .is_ok_and(|n| n.contains(&ip))
    {
        return Some(last32);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        let client = u32::from(last32) ^ 0xFFFF_FFFF;
        return Some(Ipv4Addr::from(client));
    }
    None
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

    #[test]
    fn every_builtin_class_is_denied() {
        let p = policy();
        for addr in [
            "0.1.2.3:1000",
            "10.1.2.3:1000",
            "100.64.0.1:1000",
            "127.0.0.1:1000",
            "169.254.169.254:80",
            "172.16.5.4:1000",
            "172.31.255.255:1000",
            "192.0.0.8:1000",
            "192.168.1.1:1000",
            "198.18.0.1:1000",
            "198.19.255.255:1000",
            "224.0.0.1:1000",
            "239.255.255.250:1900",
            "255.255.255.255:1000",
            "[::]:1000",
            "[::1]:1000",
            "[fc00::1]:1000",
            "[fd12:3456::1]:1000",
            "[fe80::1]:1000",
            "[ff02::1]:1000",
        ] {
            assert!(denied(&p, addr), "{addr} must be denied");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = policy();
        for addr in [
            "8.8.8.8:53",
            "1.1.1.1:443",
            "203.0.113.7:5000",
            "[2001:db8::1]:5000",
            "[2606:4700::1111]:53",
        ] {
            assert!(!denied(&p, addr), "{addr} must be allowed");
        }
        assert!(!denied(&p, "172.32.0.1:1"), "just outside 172.16/12");
        assert!(!denied(&p, "100.128.0.1:1"), "just outside 100.64/10");
    }

    #[test]
    fn ipv6_encodings_of_denied_ipv4_are_denied() {
        let p = policy();
        for addr in [
            "[::ffff:127.0.0.1]:1",                     // IPv4-mapped
            "[::ffff:169.254.169.254]:80",              // IPv4-mapped metadata
            "[::127.0.0.1]:1",                          // IPv4-compatible
            "[::10.0.0.1]:1",                           // IPv4-compatible
            "[64:ff9b::10.0.0.1]:1",                    // NAT64
            "[64:ff9b::a9fe:a9fe]:80",                  // NAT64 metadata
            "[64:ff9b:1::192.168.0.1]:1",               // local-use NAT64
            "[2002:7f00:1::1]:1",                       // 6to4 of 127.0.0.1
            "[2002:a9fe:a9fe::]:80",                    // 6to4 of 169.254.169.254
            "[2001:0:4136:e378:8000:63bf:f5ff:fffe]:1", // Teredo, client 10.0.0.1
        ] {
            assert!(denied(&p, addr), "{addr} must be denied");
        }
        // The same encodings of public IPv4 addresses are fine.
        for addr in [
            "[::ffff:8.8.8.8]:53",
            "[64:ff9b::808:808]:53",
            "[2002:808:808::1]:53",
        ] {
            assert!(!denied(&p, addr), "{addr} must be allowed");
        }
    }

    #[test]
    fn operator_allow_beats_builtin_and_longest_prefix_decides() {
        let p = PeerPolicy::new(
            vec![
                parse_cidr("10.1.0.0/16").expect("cidr"),
                parse_cidr("198.51.100.7").expect("cidr"),
            ],
            vec![
                parse_cidr("10.1.2.0/24").expect("cidr"),
                parse_cidr("198.51.100.0/24").expect("cidr"),
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
        assert!(
            denied(&p, "198.51.100.8:1"),
            "operator deny of a public range"
        );
        assert!(denied(&p, "10.2.0.1:1"), "still built-in denied");
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
        let p = PeerPolicy::new(Vec::new(), Vec::new())
            .with_relay_addresses(["10.0.0.5".parse().expect("ip")], (49152, 65535));
        assert_eq!(
            p.check("10.0.0.5:50000".parse().expect("a")),
            Ok(()),
            "another allocation of ours"
        );
        assert_eq!(
            p.check("10.0.0.5:22".parse().expect("a")),
            Err(Denial::BuiltIn),
            "not a relay port"
        );
        assert_eq!(
            p.check("10.0.0.6:50000".parse().expect("a")),
            Err(Denial::BuiltIn)
        );
    }
}
