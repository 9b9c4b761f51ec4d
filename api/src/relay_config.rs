use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The STUN/TURN port of RFC 8489 §17 / RFC 8656, for UDP and TCP.
pub const DEFAULT_LISTEN_PORT: u16 = 3478;
/// The STUN/TURN over TLS port.
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// The relay's configuration file (`relay.toml`).
///
/// Every field has a default, so an empty file (or none at all) is a working configuration: a
/// STUN/TURN server on port 3478, UDP and TCP, all interfaces, IPv4 and IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelayConfig {
    /// Addresses to serve STUN/TURN on; each is bound for both UDP and TCP. Port 0 picks a free
    /// port (the same one for UDP and TCP), which the relay logs.
    pub listen: Vec<SocketAddr>,
    /// The SOFTWARE attribute sent in responses. Empty sends none.
    pub software: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served over HTTP.
    pub metrics_listen: SocketAddr,
}

/// The Prometheus port of ARCHITECTURE.md (coturn's `--prometheus` uses 9641 too).
pub const DEFAULT_METRICS_PORT: u16 = 9641;

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_LISTEN_PORT),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_LISTEN_PORT),
            ],
            software: concat!("xdpturn ", env!("CARGO_PKG_VERSION")).to_owned(),
            metrics_listen: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_METRICS_PORT,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let parsed: RelayConfig = toml::from_str("").expect("empty config parses");
        assert_eq!(parsed, RelayConfig::default());
        assert_eq!(parsed.listen.len(), 2);
        assert!(
            parsed
                .listen
                .iter()
                .all(|a| a.port() == DEFAULT_LISTEN_PORT)
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let cfg = RelayConfig {
            listen: vec!["127.0.0.1:3479".parse().expect("addr")],
            software: String::new(),
            metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        };
        let text = toml::to_string(&cfg).expect("serialize");
        let back: RelayConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<RelayConfig>("listne = []").expect_err("typo must not pass");
        assert!(err.to_string().contains("listne"), "{err}");
    }
}
