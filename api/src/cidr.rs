//! The one CIDR parser of peer policy and cluster networks, shared by the operator (which
//! validates and renders them) and the relay (which enforces them), so both accept the same
//! forms: a network like `203.0.113.0/24` or `2001:db8::/32`, or a bare address as a
//! single-address network. Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`).

use std::net::IpAddr;

use ipnet::IpNet;

/// Parses a CIDR, or a bare address as a single-address network. The error is a sentence a
/// user can act on, naming the value.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not an IP network like 203.0.113.0/24 or 2001:db8::/32"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_bare_addresses() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").expect("cidr").to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_cidr("2001:db8::1").expect("cidr").to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_cidr("198.51.100.7").expect("cidr").to_string(),
            "198.51.100.7/32"
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert_eq!(
            parse_cidr("example.org"),
            Err("\"example.org\" is not an IP network like 203.0.113.0/24 or 2001:db8::/32".into())
        );
    }
}
