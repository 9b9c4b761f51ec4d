//! The relay's settings, each declared once: its key in the config file ([`RelayConfig`],
//! which the operator renders), its default and, where it has one, its flag and environment
//! variable ([`RelayFlags`], with the `clap` feature).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
#[cfg(feature = "clap")]
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::XdpMode;

#[macro_use]
mod declare;
#[cfg(feature = "clap")]
pub mod flags;
mod xdp_mode;

/// The STUN/TURN port of RFC 8489 §17 / RFC 8656, for UDP and TCP.
pub const DEFAULT_LISTEN_PORT: u16 = 3478;
/// The STUN/TURN over TLS port.
pub const DEFAULT_TLS_PORT: u16 = 5349;
/// The Prometheus port of ARCHITECTURE.md (coturn's `--prometheus` uses 9641 too).
pub const DEFAULT_METRICS_PORT: u16 = 9641;

// One entry per setting (see `relay_settings!`): the file's doc, key, type and default; then
// the flag's --help text, name, environment variable and type. Keep the order: it is the order
// of the keys in rendered files and of the flags in --help.
relay_settings! {
    /// Addresses to serve STUN/TURN on; each is bound for both UDP and TCP. Port 0 picks a free
    /// port (the same one for UDP and TCP), which the relay logs.
    listen: Vec<SocketAddr> = vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_LISTEN_PORT),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_LISTEN_PORT),
    ], flag
        /// Address to serve STUN/TURN on, UDP and TCP; repeatable; port 0 picks a free port
        /// [--listening-ip, --listening-port]. Default: 0.0.0.0:3478 and [::]:3478.
        #[arg(
            long,
            env = "XDPTURN_LISTEN",
            value_name = "ADDR:PORT",
            value_delimiter = ','
        )]
        listen: Vec<SocketAddr>;

    /// Addresses to serve STUN/TURN over TLS on (needs `cert` and `key`).
    tls_listen: Vec<SocketAddr> = Vec::new(), flag
        /// Address to serve STUN/TURN over TLS on (TLS 1.2 and 1.3, ALPN stun.turn), with --cert
        /// and --key; repeatable; port 0 picks a free port [--tls-listening-port]. Default: with a
        /// certificate and key, port 5349 on the --listen addresses' IPs (port 0 where theirs is
        /// 0); without, no TLS.
        #[arg(
            long = "tls-listen",
            env = "XDPTURN_TLS_LISTEN",
            value_name = "ADDR:PORT",
            value_delimiter = ','
        )]
        tls_listen: Vec<SocketAddr>;

    /// PEM certificate chain for TLS.
    cert: Option<PathBuf> = None, flag
        /// PEM certificate chain for TLS, leaf first [--cert]. Reloaded on SIGHUP and when the
        /// file changes; a bad new certificate is refused and the old one kept.
        #[arg(long, env = "XDPTURN_CERT", value_name = "FILE")]
        cert: Option<PathBuf>;

    /// PEM private key for TLS.
    key: Option<PathBuf> = None, flag
        /// PEM private key for TLS: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted [--pkey].
        /// Reloaded with the certificate.
        #[arg(long, env = "XDPTURN_KEY", value_name = "FILE")]
        key: Option<PathBuf>;

    /// The SOFTWARE attribute sent in answers to authenticated requests (never to strangers,
    /// Binding included: it would only enlarge what a spoofed source gets reflected). Empty
    /// sends none.
    software: String = concat!("xdpturn ", env!("CARGO_PKG_VERSION")).to_owned(), flag
        /// SOFTWARE attribute in answers to authenticated requests only; empty sends none [--no-software-attribute].
        // Listed after --drain-timeout (flag 27, numbered 126) in --help, as it always was.
        #[arg(long, env = "XDPTURN_SOFTWARE", value_name = "TEXT", display_order = 127)]
        software: Option<String>;

    /// Where `/metrics`, `/healthz` and `/readyz` are served over HTTP.
    metrics_listen: SocketAddr =
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_METRICS_PORT), flag
        /// Address to serve /metrics, /healthz and /readyz on [--prometheus-port]. Default 0.0.0.0:9641.
        #[arg(long, env = "XDPTURN_METRICS_LISTEN", value_name = "ADDR:PORT")]
        metrics_listen: Option<SocketAddr>;

    /// The realm of the long-term credentials.
    realm: String = "xdpturn".to_owned(), flag
        /// Realm of the long-term credentials [--realm]. Default: xdpturn.
        #[arg(long, env = "XDPTURN_REALM")]
        realm: Option<String>;

    /// Static users, `name:password` or `name:0x<md5 key>` (what `turnadmin -k` prints).
    users: Vec<String> = Vec::new(), flag
        /// A static user, NAME:PASSWORD or NAME:0xKEY (from `key`); repeatable [--user].
        #[arg(
            long = "user",
            env = "XDPTURN_USERS",
            value_name = "NAME:PASSWORD",
            value_delimiter = ',',
            hide_env_values = true
        )]
        users: Vec<String>;

    /// A file of users, one `name:password` or `name:0x<key>` per line; `#` starts a comment.
    users_file: Option<PathBuf> = None, flag
        /// File of users, one NAME:PASSWORD or NAME:0xKEY per line.
        #[arg(long, env = "XDPTURN_USERS_FILE", value_name = "FILE")]
        users_file: Option<PathBuf>;

    /// coturn's SQLite user database, as `turnadmin -b FILE` writes it: long-term users, REST
    /// shared secrets, realm options and peer ranges of `realm`, followed while the relay runs.
    userdb: Option<PathBuf> = None, flag
        /// coturn's SQLite user database, as `turnadmin -b FILE` writes it: the long-term users,
        /// shared secrets, options (max-bps, user-quota, total-quota) and peer ranges of --realm,
        /// followed while the relay runs; if it stops answering, the relay serves with what it
        /// read last [--userdb, -b].
        #[arg(long, env = "XDPTURN_USERDB", value_name = "FILE")]
        userdb: Option<PathBuf>;

    /// coturn's user database on PostgreSQL, as `turnadmin -e CONN` writes it: libpq's
    /// `host=... dbname=... user=... password=... port=... connect_timeout=...` or a
    /// `postgresql://` URL. Read as `userdb` is; one user database at a time.
    psql_userdb: Option<String> = None, flag
        /// coturn's user database on PostgreSQL, as `turnadmin -e CONN` writes it, read as
        /// --userdb is: "host=H dbname=D user=U password=P port=N connect_timeout=S" (libpq's
        /// form, also sslmode, sslrootcert, sslcert, sslkey) or postgresql://U:P@H:N/D. Prefer
        /// the variable or the config file: command lines are visible to others [--psql-userdb,
        /// --sql-userdb, -e].
        #[arg(
            long = "psql-userdb",
            visible_alias = "sql-userdb",
            env = "XDPTURN_PSQL_USERDB",
            value_name = "CONN",
            hide_env_values = true
        )]
        psql_userdb: Option<String>;

    /// coturn's user database on MySQL or MariaDB, as `turnadmin -M CONN` writes it: coturn's
    /// `host=... dbname=... user=... password=... port=... connect_timeout=... read_timeout=...`
    /// (with `ca`, `cert`, `key` for TLS) or a `mysql://` URL. Read as `userdb` is; one user
    /// database at a time.
    mysql_userdb: Option<String> = None, flag
        /// coturn's user database on MySQL/MariaDB, as `turnadmin -M CONN` writes it, read as
        /// --userdb is: "host=H dbname=D user=U password=P port=N connect_timeout=S
        /// read_timeout=S" (coturn's form; ca=, cert=, key= turn TLS on) or
        /// mysql://U:P@H:N/D. Prefer the variable or the config file: command lines are visible
        /// to others [--mysql-userdb, -M].
        #[arg(
            long = "mysql-userdb",
            env = "XDPTURN_MYSQL_USERDB",
            value_name = "CONN",
            hide_env_values = true
        )]
        mysql_userdb: Option<String>;

    /// coturn's user database on Redis, as `turnadmin -N CONN` writes it: coturn's connection
    /// string (`ip=ADDRESS port=PORT dbname=N password=... connect_timeout=SECONDS`) or a
    /// `redis://` URL. Read as `userdb` is; one user database at a time.
    redis_userdb: Option<String> = None, flag
        /// coturn's user database on Redis, as `turnadmin -N CONN` writes it, read as --userdb
        /// is: coturn's "ip=ADDRESS port=PORT dbname=N password=P connect_timeout=S" (every key
        /// optional: 127.0.0.1, 6379, 0) or redis://[:P@]HOST[:PORT][/DB]. Prefer the variable or
        /// the config file: command lines are visible to others [--redis-userdb, -N].
        #[arg(
            long = "redis-userdb",
            env = "XDPTURN_REDIS_USERDB",
            value_name = "CONN",
            hide_env_values = true
        )]
        redis_userdb: Option<String>;

    /// coturn's traffic records on Redis (`--redis-statsdb`): each allocation's status (new,
    /// refreshed, deleted) and its traffic, published in coturn's keys and channels
    /// (`turn/realm/<realm>/user/<name>/allocation/<id>/status`, `.../traffic`, ...). The
    /// connection string is the same form as `redis-userdb`'s.
    redis_statsdb: Option<String> = None, flag
        /// Publish allocations' status and traffic to Redis as coturn's --redis-statsdb does
        /// (keys and channels turn/realm/R/user/U/allocation/ID/status, traffic, traffic/peer,
        /// total_traffic, total_traffic/peer): the same connection string forms as
        /// --redis-userdb. Prefer the variable or the config file [--redis-statsdb, -O].
        #[arg(
            long = "redis-statsdb",
            env = "XDPTURN_REDIS_STATSDB",
            value_name = "CONN",
            hide_env_values = true
        )]
        redis_statsdb: Option<String>;

    /// Shared secrets for time-limited REST credentials; any of them validates (rotation).
    auth_secrets: Vec<String> = Vec::new(), flag
        /// Shared secret for time-limited REST credentials; repeatable, any one validates, for
        /// rotation [--use-auth-secret --static-auth-secret].
        #[arg(
            long = "auth-secret",
            env = "XDPTURN_AUTH_SECRETS",
            value_name = "SECRET",
            value_delimiter = ',',
            hide_env_values = true
        )]
        auth_secrets: Vec<String>;

    /// Files each holding one shared secret (a mounted Kubernetes Secret).
    auth_secret_files: Vec<PathBuf> = Vec::new(), flag
        /// File holding one shared secret (e.g. a mounted Kubernetes Secret); repeatable.
        #[arg(
            long = "auth-secret-file",
            env = "XDPTURN_AUTH_SECRET_FILES",
            value_name = "FILE",
            value_delimiter = ','
        )]
        auth_secret_files: Vec<PathBuf>;

    /// Addresses to relay from, at most one per family. Empty: the address each request
    /// arrived on.
    relay_ips: Vec<IpAddr> = Vec::new(), flag
        /// Address to relay from, one per family; repeatable [--relay-ip]. Default: the address
        /// each request arrived on.
        #[arg(
            long = "relay-ip",
            env = "XDPTURN_RELAY_IPS",
            value_name = "IP",
            value_delimiter = ','
        )]
        relay_ips: Vec<IpAddr>;

    /// The relay port range.
    min_port: u16 = 49152, flag
        /// Lowest relay port [--min-port]. Default 49152.
        #[arg(long, env = "XDPTURN_MIN_PORT")]
        min_port: Option<u16>;

    max_port: u16 = 65535, flag
        /// Highest relay port [--max-port]. Default 65535.
        #[arg(long, env = "XDPTURN_MAX_PORT")]
        max_port: Option<u16>;

    /// `PUBLIC` or `PUBLIC/PRIVATE`: the public address advertised for relayed addresses on
    /// `PRIVATE` (or on every address of its family), for a relay behind NAT.
    external_ips: Vec<String> = Vec::new(), flag
        /// Public address advertised for relayed addresses, PUBLIC or PUBLIC/PRIVATE, for a relay
        /// behind NAT; repeatable [--external-ip].
        #[arg(
            long = "external-ip",
            env = "XDPTURN_EXTERNAL_IPS",
            value_name = "PUBLIC[/PRIVATE]",
            value_delimiter = ','
        )]
        external_ips: Vec<String>;

    /// Peer networks allowed even where a built-in rule denies them (CIDR or address).
    allow_peers: Vec<String> = Vec::new(), flag
        /// Peer network to allow even where a built-in rule denies it (loopback, private,
        /// link-local, ...); repeatable [--allowed-peer-ip].
        #[arg(
            long = "allow-peer",
            env = "XDPTURN_ALLOW_PEERS",
            value_name = "CIDR",
            value_delimiter = ','
        )]
        allow_peers: Vec<String>;

    /// Peer networks denied in addition to the built-in rules.
    deny_peers: Vec<String> = Vec::new(), flag
        /// Peer network to deny in addition to the built-in rules; repeatable [--denied-peer-ip].
        #[arg(
            long = "deny-peer",
            env = "XDPTURN_DENY_PEERS",
            value_name = "CIDR",
            value_delimiter = ','
        )]
        deny_peers: Vec<String>;

    /// Allocations per user; 0 is unlimited.
    user_quota: u32 = 0, flag
        /// Allocations per user, 0 for no limit [--user-quota].
        #[arg(long, env = "XDPTURN_USER_QUOTA")]
        user_quota: Option<u32>;

    /// Allocations in total; 0 is unlimited.
    total_quota: u32 = 0, flag
        /// Allocations in total, 0 for no limit [--total-quota].
        #[arg(long, env = "XDPTURN_TOTAL_QUOTA")]
        total_quota: Option<u32>;

    /// Bandwidth per allocation in bits per second, both directions together; 0 is unlimited.
    max_bps: u64 = 0, flag
        /// Bandwidth per allocation in bits per second, 0 for no limit [--max-bps].
        #[arg(long, env = "XDPTURN_MAX_BPS")]
        max_bps: Option<u64>;

    /// Permissions per allocation; 0 is unlimited.
    max_permissions: u32 = 64, flag
        /// Permissions per allocation, 0 for no limit. Default 64.
        #[arg(long, env = "XDPTURN_MAX_PERMISSIONS")]
        max_permissions: Option<u32>;

    /// Worker threads; 0 is one per CPU.
    workers: usize = 0, flag
        /// Worker threads, 0 for one per CPU.
        #[arg(long, env = "XDPTURN_WORKERS")]
        workers: Option<usize>;

    /// On SIGTERM, how long existing allocations are served before the relay exits.
    drain_timeout_secs: u64 = 300, flag
        /// On SIGTERM, how long to keep serving existing allocations: 300, 5m, 1h.
        #[arg(long, env = "XDPTURN_DRAIN_TIMEOUT", value_parser = flags::parse_duration)]
        drain_timeout: Option<Duration>;

    /// How long a nonce stays valid.
    nonce_lifetime_secs: u64 = 600;

    /// Interfaces to attach the XDP fast path to; empty: everything is relayed in userspace.
    xdp_interfaces: Vec<String> = Vec::new(), flag
        /// Interface to attach the XDP fast path to (bound channels are then forwarded in the
        /// kernel); repeatable. Needs root, or exactly CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON in
        /// effect (the verifier refuses the program's packet-pointer arithmetic without
        /// CAP_PERFMON): as root with only those, or as another user with them ambient (systemd
        /// AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON); and a relay built after
        /// `cargo xtask build-ebpf`. Without them the relay says why, exports it
        /// (xdpturn_xdp_attached 0, /readyz "datapath: userspace (xdp unavailable: REASON)") and
        /// serves in userspace.
        #[arg(
            long = "xdp-interface",
            env = "XDPTURN_XDP_INTERFACES",
            value_name = "IF",
            value_delimiter = ','
        )]
        xdp_interfaces: Vec<String>;

    /// How to attach: `native` (XDP in the driver), `tc` (TC ingress program), `skb` (generic
    /// XDP) or `auto` (native where the driver supports it, else tc, else skb).
    #[serde(deserialize_with = "xdp_mode::deserialize")]
    xdp_mode: XdpMode = XdpMode::Auto, flag
        /// How to attach the fast path: native (XDP in the driver: the fastest, where the driver
        /// supports it), tc (a TC ingress program: works on every interface, and beside another
        /// relay's during a hand-over), skb (generic XDP: works everywhere, slowest) or auto
        /// (native where the driver supports it, else tc, else skb; tc only on kernels with
        /// tcx links, 6.6+).
        #[arg(long, env = "XDPTURN_XDP_MODE", value_name = "MODE")]
        xdp_mode: Option<String>;

    /// Channels offloaded to the kernel at most; beyond, channels are relayed in userspace.
    xdp_max_channels: u32 = 65_536, flag
        /// Channels offloaded to the kernel at most, and as many permissions (Send and Data
        /// indications) and UDP allocations; beyond, userspace. Sizes the maps: N channel entries,
        /// 2 N peer entries and counter slots, N allocations, 4 N next hops. Default 65536.
        #[arg(long, env = "XDPTURN_XDP_MAX_CHANNELS")]
        xdp_max_channels: Option<u32>;

    /// Bearer token for the credentials endpoint (`/api/v1/credentials` on the HTTP listener),
    /// for application backends. Prefer `api-token-file`: this file is often a ConfigMap. The
    /// endpoint is off unless a token and at least one auth secret are configured.
    api_token: Option<String> = None, flag
        /// Bearer token for GET/POST /api/v1/credentials on the metrics listener, which hands
        /// application backends time-limited credentials. Prefer XDPTURN_API_TOKEN or
        /// --api-token-file: command lines are visible to others. Off unless a token and an auth
        /// secret are configured.
        #[arg(
            long,
            env = "XDPTURN_API_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true
        )]
        api_token: Option<String>;

    /// File holding the bearer token (a mounted Kubernetes Secret); reloaded when it changes.
    api_token_file: Option<PathBuf> = None, flag
        /// File holding the bearer token (e.g. a mounted Kubernetes Secret); reloaded on change.
        #[arg(long, env = "XDPTURN_API_TOKEN_FILE", value_name = "FILE")]
        api_token_file: Option<PathBuf>;

    /// `turn:`/`turns:`/`stun:`/`stuns:` URIs returned as `iceServers` by the credentials
    /// endpoint.
    api_uris: Vec<String> = Vec::new(), flag
        /// STUN/TURN URI the credentials endpoint returns in iceServers, e.g.
        /// turn:turn.example.org:3478?transport=udp; repeatable.
        // The relay adds the check of each URI (relay::serve::ServeArgs), which lives with the
        // credentials it hands out.
        #[arg(
            long = "api-uri",
            env = "XDPTURN_API_URIS",
            value_name = "URI",
            value_delimiter = ','
        )]
        api_uris: Vec<String>;

    /// Longest lifetime the credentials endpoint grants; longer requests are clamped to it.
    api_max_ttl_secs: u64 = 86_400, flag
        /// Longest lifetime the credentials endpoint grants (longer requests are cut to it):
        /// 3600, 12h, 7d. Default 24h.
        #[arg(long, env = "XDPTURN_API_MAX_TTL", value_parser = flags::parse_ttl)]
        api_max_ttl: Option<Duration>;

    /// How long a TCP or TLS connection has to make its first authenticated request (an
    /// Allocate, or an RFC 6062 ConnectionBind) before it is closed; 0 is no limit.
    tcp_auth_timeout_secs: u64 = 30, flag
        /// How long a TCP/TLS connection has to make its first authenticated request (Allocate or
        /// ConnectionBind) before it is closed, so that connections that never authenticate
        /// (slow senders, STUN-only clients) are reaped: 30, 1m; 0 for no limit. Default 30 s.
        #[arg(long, env = "XDPTURN_TCP_AUTH_TIMEOUT", value_parser = flags::parse_duration)]
        tcp_auth_timeout: Option<Duration>;

    /// A TCP or TLS connection that sends no complete STUN message or ChannelData frame for
    /// this long is closed (a trickle of bytes does not keep it open); 0 is no limit.
    tcp_idle_timeout_secs: u64 = 600, flag
        /// Closes a TCP/TLS connection that sent no complete STUN message or ChannelData frame
        /// for this long; bytes that never make a whole message do not count: 600, 10m; 0 for
        /// no limit. Default 10 min.
        #[arg(long, env = "XDPTURN_TCP_IDLE_TIMEOUT", value_parser = flags::parse_duration)]
        tcp_idle_timeout: Option<Duration>;

    /// Open TCP and TLS client connections per source address (IPv6: per /64), RFC 6062 data
    /// connections included; beyond, new ones are closed at once. 0 is unlimited.
    max_tcp_connections_per_ip: u32 = 1024, flag
        /// Open TCP/TLS client connections per source address (IPv6: per /64 network); more are
        /// closed as they are accepted, logged and counted
        /// (xdpturn_connections_refused_total{reason="per_source"}); 0 for no limit. Default 1024.
        #[arg(long, env = "XDPTURN_MAX_TCP_CONNECTIONS_PER_IP", value_name = "N")]
        max_tcp_connections_per_ip: Option<u32>;

    /// Open TCP and TLS client connections in total; beyond, new ones are closed at once. 0 is
    /// unlimited.
    max_tcp_connections: u32 = 65_536, flag
        /// Open TCP/TLS client connections in total; more are closed as they are accepted, logged
        /// and counted (xdpturn_connections_refused_total{reason="total"}); 0 for no limit.
        /// Default 65536.
        #[arg(long, env = "XDPTURN_MAX_TCP_CONNECTIONS", value_name = "N")]
        max_tcp_connections: Option<u32>;
}

impl RelayConfig {
    /// Whether any credential source is configured.
    pub fn has_credentials(&self) -> bool {
        !self.users.is_empty()
            || self.users_file.is_some()
            || self.userdb.is_some()
            || self.psql_userdb.is_some()
            || self.mysql_userdb.is_some()
            || self.redis_userdb.is_some()
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
mod tests;
