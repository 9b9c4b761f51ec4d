use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The STUN/TURN port of RFC 8489 §17 / RFC 8656, for UDP and TCP.
pub const DEFAULT_LISTEN_PORT: u16 = 3478;
/// The STUN/TURN over TLS port.
pub const DEFAULT_TLS_PORT: u16 = 5349;
/// The Prometheus port of ARCHITECTURE.md (coturn's `--prometheus` uses 9641 too).
pub const DEFAULT_METRICS_PORT: u16 = 9641;

/// The relay's configuration file (`relay.toml`); the operator renders it.
///
/// Every field has a default, so an empty file (or none at all) is a working configuration: a
/// STUN/TURN server on port 3478, UDP and TCP, all interfaces, IPv4 and IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelayConfig {
    /// Addresses to serve STUN/TURN on; each is bound for both UDP and TCP. Port 0 picks a free
    /// port (the same one for UDP and TCP), which the relay logs.
    pub listen: Vec<SocketAddr>,
    /// Addresses to serve STUN/TURN over TLS on (needs `cert` and `key`).
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for TLS.
    pub cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub key: Option<PathBuf>,
    /// The SOFTWARE attribute sent in responses. Empty sends none.
    pub software: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served over HTTP.
    pub metrics_listen: SocketAddr,
    /// The realm of the long-term credentials.
    pub realm: String,
    /// Static users, `name:password` or `name:0x<md5 key>` (what `turnadmin -k` prints).
    pub users: Vec<String>,
    /// A file of users, one `name:password` or `name:0x<key>` per line; `#` starts a comment.
    pub users_file: Option<PathBuf>,
    /// Shared secrets for time-limited REST credentials; any of them validates (rotation).
    pub auth_secrets: Vec<String>,
    /// Files each holding one shared secret (a mounted Kubernetes Secret).
    pub auth_secret_files: Vec<PathBuf>,
    /// Addresses to relay from, at most one per family. Empty: the address each request
    /// arrived on.
    pub relay_ips: Vec<IpAddr>,
    /// The relay port range.
    pub min_port: u16,
    pub max_port: u16,
    /// `PUBLIC` or `PUBLIC/PRIVATE`: the public address advertised for relayed addresses on
    /// `PRIVATE` (or on every address of its family), for a relay behind NAT.
    pub external_ips: Vec<String>,
    /// Peer networks allowed even where a built-in rule denies them (CIDR or address).
    pub allow_peers: Vec<String>,
    /// Peer networks denied in addition to the built-in rules.
    pub deny_peers: Vec<String>,
    /// Allocations per user; 0 is unlimited.
    pub user_quota: u32,
    /// Allocations in total; 0 is unlimited.
    pub total_quota: u32,
    /// Bandwidth per allocation in bits per second, both directions together; 0 is unlimited.
    pub max_bps: u64,
    /// Permissions per allocation; 0 is unlimited.
    pub max_permissions: u32,
    /// Worker threads; 0 is one per CPU.
    pub workers: usize,
    /// On SIGTERM, how long existing allocations are served before the relay exits.
    pub drain_timeout_secs: u64,
    /// How long a nonce stays valid.
    pub nonce_lifetime_secs: u64,
    /// Interfaces to attach the XDP fast path to; empty: everything is relayed in userspace.
    pub xdp_interfaces: Vec<String>,
    /// How to attach: `native` (driver), `skb` (generic) or `auto` (native, else skb).
    pub xdp_mode: String,
    /// Channels offloaded to the kernel at most; beyond, channels are relayed in userspace.
    pub xdp_max_channels: u32,
    /// Bearer token for the credentials endpoint (`/api/v1/credentials` on the HTTP listener),
    /// for application backends. Prefer `api-token-file`: this file is often a ConfigMap. The
    /// endpoint is off unless a token and at least one auth secret are configured.
    pub api_token: Option<String>,
    /// File holding the bearer token (a mounted Kubernetes Secret); reloaded when it changes.
    pub api_token_file: Option<PathBuf>,
    /// `turn:`/`turns:`/`stun:`/`stuns:` URIs returned as `iceServers` by the credentials
    /// endpoint.
    pub api_uris: Vec<String>,
    /// Longest lifetime the credentials endpoint grants; longer requests are clamped to it.
    pub api_max_ttl_secs: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_LISTEN_PORT),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_LISTEN_PORT),
            ],
            tls_listen: Vec::new(),
            cert: None,
            key: None,
            software: concat!("xdpturn ", env!("CARGO_PKG_VERSION")).to_owned(),
            metrics_listen: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_METRICS_PORT,
            ),
            realm: "xdpturn".to_owned(),
            users: Vec::new(),
            users_file: None,
            auth_secrets: Vec::new(),
            auth_secret_files: Vec::new(),
            relay_ips: Vec::new(),
            min_port: 49152,
            max_port: 65535,
            external_ips: Vec::new(),
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            max_permissions: 64,
            workers: 0,
            drain_timeout_secs: 300,
            nonce_lifetime_secs: 600,
            xdp_interfaces: Vec::new(),
            xdp_mode: "auto".to_owned(),
            xdp_max_channels: 65_536,
            api_token: None,
            api_token_file: None,
            api_uris: Vec::new(),
            api_max_ttl_secs: 86_400,
        }
    }
}

impl RelayConfig {
    /// Whether any credential source is configured.
    pub fn has_credentials(&self) -> bool {
        !self.users.is_empty()
            || self.users_file.is_some()
            || !self.auth_secrets.is_empty()
            || !self.auth_secret_files.is_empty()
    }

    /// Where TLS is served when a certificate and key are configured but no TLS address is:
    /// as coturn does, the listen addresses' IPs on port 5349 ([`DEFAULT_TLS_PORT`]), once per
    /// IP. A listen address with port 0 (a free port) gets port 0 too, so that a relay started
    /// on free ports takes none of the well-known ones.
    pub fn default_tls_listen(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in &self.listen {
            let port = if a.port() == 0 { 0 } else { DEFAULT_TLS_PORT };
            let tls = SocketAddr::new(a.ip(), port);
            if !out.contains(&tls) {
                out.push(tls);
            }
        }
        out
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
        assert!(!parsed.has_credentials());
    }

    #[test]
    fn tls_defaults_to_5349_on_the_listen_addresses() {
        let cfg = RelayConfig::default();
        let want: Vec<SocketAddr> = vec![
            "0.0.0.0:5349".parse().expect("addr"),
            "[::]:5349".parse().expect("addr"),
        ];
        assert_eq!(cfg.default_tls_listen(), want);
        let cfg = RelayConfig {
            listen: ["10.0.0.1:3478", "10.0.0.1:3479", "127.0.0.1:0"]
                .iter()
                .map(|a| a.parse().expect("addr"))
                .collect(),
            ..RelayConfig::default()
        };
        let want: Vec<SocketAddr> = vec![
            "10.0.0.1:5349".parse().expect("addr"),
            "127.0.0.1:0".parse().expect("addr"),
        ];
        assert_eq!(cfg.default_tls_listen(), want);
    }

    #[test]
    fn round_trips_through_toml() {
        let cfg = RelayConfig {
            listen: vec!["127.0.0.1:3479".parse().expect("addr")],
            software: String::new(),
            metrics_listen: "127.0.0.1:0".parse().expect("addr"),
            users: vec!["alice:secret".into()],
            auth_secrets: vec!["s3cret".into()],
            relay_ips: vec!["192.0.2.1".parse().expect("ip")],
            external_ips: vec!["198.51.100.1/10.0.0.1".into()],
            allow_peers: vec!["10.0.0.0/8".into()],
            max_bps: 1_000_000,
            ..RelayConfig::default()
        };
        let text = toml::to_string(&cfg).expect("serialize");
        let back: RelayConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, cfg);
        assert!(back.has_credentials());
    }

    #[test]
    fn kebab_case_keys_and_unknown_keys_are_rejected() {
        let cfg: RelayConfig =
            toml::from_str("min-port = 40000\nmax-port = 40100\nauth-secrets = [\"a\", \"b\"]")
                .expect("parses");
        assert_eq!((cfg.min_port, cfg.max_port), (40000, 40100));
        assert_eq!(cfg.auth_secrets.len(), 2);
        let err = toml::from_str::<RelayConfig>("listne = []").expect_err("typo must not pass");
        assert!(err.to_string().contains("listne"), "{err}");
    }
}
