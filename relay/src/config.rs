//! From the config file's [`RelayConfig`] (plus what start-up learned: the bound addresses) to
//! the protocol core's [`proto::Config`]. Reading the users file and secret files happens here,
//! so a reload re-reads them; every error names the setting and the file at fault.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::RelayConfig;

use crate::credentials;
use crate::http::ApiConfig;
use crate::proto::auth::{AuthConfig, StaticUser, UserSource};
use crate::proto::policy::PeerPolicy;
use crate::proto::{self, Lifetimes, Quotas, StreamLimits};
use crate::userdb::{self, UserDb};
use api::parse_cidr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    UsersFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("user {0:?}: expected NAME:PASSWORD or NAME:0x<32 hex digits>")]
    User(String),
    #[error("external IP {0:?}: expected PUBLIC or PUBLIC/PRIVATE, two IP addresses")]
    ExternalIp(String),
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

/// What start-up learned that the config file cannot say.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// The STUN/TURN listeners as bound (real ports).
    pub listeners: Vec<SocketAddr>,
    /// The HTTP listener.
    pub http: Vec<SocketAddr>,
}

/// Parses `name:password` or `name:0x<hex md5 key>`.
pub fn parse_user(spec: &str, realm: &str) -> Result<(String, StaticUser), ConfigError> {
    let (name, secret) = spec
        .split_once(':')
        .ok_or_else(|| ConfigError::User(spec.to_owned()))?;
    if name.is_empty() || secret.is_empty() {
        return Err(ConfigError::User(spec.to_owned()));
    }
    if let Some(hex) = secret.strip_prefix("0x")
        && hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let mut key = [0u8; 16];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| ConfigError::User(spec.to_owned()))?;
        }
        return Ok((name.to_owned(), StaticUser::from_key(key)));
    }
    Ok((
        name.to_owned(),
        StaticUser::from_password(name, realm, secret),
    ))
}

fn read(what: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a users file: one user per line, blank lines and `#` comments ignored.
pub fn load_users_file(path: &Path, realm: &str) -> Result<Vec<(String, StaticUser)>, ConfigError> {
    let text = read("users file", path)?;
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        // coturn's config spells it `user=name:password`; accept that too.
        let spec = line.strip_prefix("user=").unwrap_or(line);
        let user = parse_user(spec, realm).map_err(|_| ConfigError::UsersFile {
            path: path.to_owned(),
            line: i + 1,
            message: "expected NAME:PASSWORD or NAME:0x<32 hex digits>".into(),
        })?;
        users.push(user);
    }
    Ok(users)
}

/// Parses `PUBLIC` or `PUBLIC/PRIVATE`.
pub fn parse_external_ip(s: &str) -> Result<(IpAddr, Option<IpAddr>), ConfigError> {
    let err = || ConfigError::ExternalIp(s.to_owned());
    match s.split_once('/') {
        Some((public, private)) => {
            let public: IpAddr = public.trim().parse().map_err(|_| err())?;
            let private: IpAddr = private.trim().parse().map_err(|_| err())?;
            if public.is_ipv4() != private.is_ipv4() {
                return Err(err());
            }
            Ok((public, Some(private)))
        }
        None => Ok((s.trim().parse().map_err(|_| err())?, None)),
    }
}

/// Builds the core's configuration. `nonce_key` stays the same across reloads so that nonces
/// already handed out stay valid.
pub fn build(
    cfg: &RelayConfig,
    bound: &Bound,
    nonce_key: [u8; 32],
) -> Result<proto::Config, ConfigError> {
    build_with(cfg, bound, nonce_key, None)
}

/// [`build`], with coturn's user database when one is configured: its users are asked for
/// (through its cache) when no configured user or secret authenticates; its realm's secrets
/// join the configured ones, its peer ranges join `allow-peer` and `deny-peer` (so the built-in
/// denies apply as they do to those), and its realm options (user-quota, total-quota, max-bps)
/// replace the configured values, as coturn's do.
pub fn build_with(
    cfg: &RelayConfig,
    bound: &Bound,
    nonce_key: [u8; 32],
    userdb: Option<&Arc<UserDb>>,
) -> Result<proto::Config, ConfigError> {
    let realm_data = userdb.and_then(|db| db.realm_data().borrow().clone());
    let invalid = |setting, message: &str| ConfigError::Invalid {
        setting,
        message: message.to_owned(),
    };
    if cfg.realm.is_empty() {
        return Err(invalid("realm", "must not be empty"));
    }
    if let Err(message) = userdb::Source::from_config(cfg) {
        return Err(invalid("user database", &message));
    }
    if let Some(conn) = &cfg.redis_statsdb
        && let Err(e) = userdb::redis::ConnSpec::parse(conn)
    {
        return Err(invalid("redis-statsdb", &e.to_string()));
    }
    if cfg.realm.len() > crate::proto::REALM_WITHIN_BUDGET {
        tracing::warn!(
            realm_bytes = cfg.realm.len(),
            "a realm longer than {} bytes makes the challenge to the smallest requests more than \
             {}x their size over UDP: it is sent anyway, so that clients can authenticate; a \
             shorter realm keeps the relay from amplifying spoofed requests",
            crate::proto::REALM_WITHIN_BUDGET,
            crate::proto::AMPLIFICATION
        );
    }
    if cfg.min_port == 0 || cfg.min_port > cfg.max_port {
        return Err(invalid(
            "min-port/max-port",
            "need 1 <= min-port <= max-port",
        ));
    }
    if cfg.relay_ips.iter().filter(|ip| ip.is_ipv4()).count() > 1
        || cfg.relay_ips.iter().filter(|ip| ip.is_ipv6()).count() > 1
    {
        return Err(invalid("relay-ip", "at most one address per family"));
    }
    if let Some(ip) = cfg.relay_ips.iter().find(|ip| ip.is_unspecified()) {
        return Err(invalid(
            "relay-ip",
            &format!("{ip} is a wildcard; give the address to relay from"),
        ));
    }

    let mut users = HashMap::new();
    for spec in &cfg.users {
        let (name, user) = parse_user(spec, &cfg.realm)?;
        users.insert(name, user);
    }
    if let Some(path) = &cfg.users_file {
        for (name, user) in load_users_file(path, &cfg.realm)? {
            users.insert(name, user);
        }
    }
    let mut secrets: Vec<Vec<u8>> = cfg
        .auth_secrets
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    for path in &cfg.auth_secret_files {
        let secret = read("auth secret file", path)?;
        let secret = secret.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(invalid(
                "auth-secret-files",
                &format!("{} is empty", path.display()),
            ));
        }
        secrets.push(secret.as_bytes().to_vec());
    }
    if secrets.iter().any(Vec::is_empty) {
        return Err(invalid("auth-secret", "a shared secret must not be empty"));
    }
    if let Some(data) = &realm_data {
        secrets.extend(data.secrets.iter().cloned());
    }

    let parse_all = |setting: &'static str, list: &[String]| {
        list.iter()
            .map(|s| {
                parse_cidr(s).map_err(|m| ConfigError::Invalid {
                    setting,
                    message: m,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let mut allow = parse_all("allow-peer", &cfg.allow_peers)?;
    let mut deny = parse_all("deny-peer", &cfg.deny_peers)?;
    if let Some(data) = &realm_data {
        allow.extend(data.allowed.iter().copied());
        deny.extend(data.denied.iter().copied());
    }
    let external_ips = cfg
        .external_ips
        .iter()
        .map(|s| parse_external_ip(s))
        .collect::<Result<Vec<_>, _>>()?;

    let listen_ips: Vec<IpAddr> = bound
        .listeners
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let mut relay_ips_for_policy: Vec<IpAddr> = cfg.relay_ips.clone();
    relay_ips_for_policy.extend(listen_ips.iter().copied());
    relay_ips_for_policy.extend(external_ips.iter().map(|(public, _)| *public));
    let own: Vec<SocketAddr> = bound.listeners.iter().chain(&bound.http).copied().collect();
    let policy = PeerPolicy::new(allow, deny)
        .with_own_endpoints(own)
        .with_relay_addresses(relay_ips_for_policy, (cfg.min_port, cfg.max_port));

    Ok(proto::Config {
        software: cfg.software.clone(),
        auth: AuthConfig {
            realm: cfg.realm.clone(),
            users,
            secrets,
            source: userdb.map(|db| db.clone() as Arc<dyn UserSource>),
            nonce_key,
            nonce_lifetime: Duration::from_secs(cfg.nonce_lifetime_secs.max(1)),
        },
        policy,
        lifetimes: Lifetimes::default(),
        quotas: Quotas {
            per_user: realm_data
                .as_ref()
                .and_then(|d| d.user_quota)
                .unwrap_or(cfg.user_quota),
            total: realm_data
                .as_ref()
                .and_then(|d| d.total_quota)
                .unwrap_or(cfg.total_quota),
            permissions_per_allocation: cfg.max_permissions,
            max_bps: realm_data
                .as_ref()
                .and_then(|d| d.max_bps)
                .unwrap_or(cfg.max_bps),
        },
        relay_ips: cfg.relay_ips.clone(),
        listen_ips,
        external_ips,
        streams: StreamLimits {
            auth_timeout: secs(cfg.tcp_auth_timeout_secs),
            idle_timeout: secs(cfg.tcp_idle_timeout_secs),
            per_source: cfg.max_tcp_connections_per_ip,
            total: cfg.max_tcp_connections,
        },
        report_usage: cfg.redis_statsdb.is_some(),
    })
}

/// A `..-secs` setting where 0 means no limit.
fn secs(n: u64) -> Option<Duration> {
    (n != 0).then(|| Duration::from_secs(n))
}

/// The credentials endpoint's settings: the bearer token (`api-token` or the file
/// `api-token-file`, re-read on every reload), the first REST shared secret of the built `core`,
/// the `iceServers` URIs and the lifetime cap.
pub fn build_api(cfg: &RelayConfig, core: &proto::Config) -> Result<ApiConfig, ConfigError> {
    let invalid = |setting, message: String| ConfigError::Invalid { setting, message };
    let token = match (&cfg.api_token, &cfg.api_token_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "api-token",
                "give api-token or api-token-file, not both".into(),
            ));
        }
        (Some(token), None) => Some(token.trim().to_owned()),
        (None, Some(path)) => Some(read("API token file", path)?.trim().to_owned()),
        (None, None) => None,
    };
    if token.as_deref().is_some_and(str::is_empty) {
        return Err(invalid("api-token", "the token must not be empty".into()));
    }
    for uri in &cfg.api_uris {
        credentials::check_uri(uri).map_err(|m| invalid("api-uris", m))?;
    }
    if cfg.api_max_ttl_secs == 0 {
        return Err(invalid("api-max-ttl-secs", "must be at least 1".into()));
    }
    let secret = core.auth.secrets.first();
    if token.is_some() && secret.is_none() {
        tracing::warn!(
            "api-token is set but no auth secret is: the credentials endpoint stays off \
             (give --auth-secret or --auth-secret-file)"
        );
    }
    Ok(ApiConfig::new(
        token.as_deref(),
        secret.map(Vec::as_slice),
        cfg.api_uris.clone(),
        cfg.api_max_ttl_secs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::long_term_key_md5;

    #[test]
    fn users_from_passwords_keys_and_files() {
        let (name, _) = parse_user("alice:pass:with:colons", "r").expect("user");
        assert_eq!(name, "alice");
        let key = long_term_key_md5("bob", "r", "pw");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(parse_user(&format!("bob:0x{hex}"), "r").is_ok());
        assert!(parse_user("nocolon", "r").is_err());
        assert!(parse_user(":pw", "r").is_err());

        let dir = std::env::temp_dir().join(format!("xdpturn-users-{}", std::process::id()));
        std::fs::write(&dir, "# users\nalice:one\n\nuser=bob:two  # coturn style\n")
            .expect("write");
        let users = load_users_file(&dir, "r").expect("parses");
        assert_eq!(
            users.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        std::fs::write(&dir, "alice:one\nbroken line\n").expect("write");
        let err = load_users_file(&dir, "r").expect_err("line 2");
        assert!(err.to_string().contains(":2:"), "{err}");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn external_ips() {
        assert_eq!(
            parse_external_ip("198.51.100.1").expect("ok"),
            ("198.51.100.1".parse().expect("ip"), None)
        );
        assert_eq!(
            parse_external_ip("198.51.100.1/10.0.0.1").expect("ok"),
            (
                "198.51.100.1".parse().expect("ip"),
                Some("10.0.0.1".parse().expect("ip"))
            )
        );
        assert!(parse_external_ip("198.51.100.1/2001:db8::1").is_err());
        assert!(parse_external_ip("host.example").is_err());
    }

    #[test]
    fn build_validates_with_clear_errors() {
        let ok = RelayConfig {
            users: vec!["a:b".into()],
            ..RelayConfig::default()
        };
        let bound = Bound {
            listeners: vec!["127.0.0.1:3478".parse().expect("a")],
            http: vec![],
        };
        let built = build(&ok, &bound, [0; 32]).expect("valid");
        assert_eq!(
            built.listen_ips,
            vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        assert!(
            built
                .policy
                .check("127.0.0.1:3478".parse().expect("a"))
                .is_err(),
            "own listener"
        );

        for (cfg, needle) in [
            (
                RelayConfig {
                    min_port: 5000,
                    max_port: 4000,
                    ..ok.clone()
                },
                "min-port",
            ),
            (
                RelayConfig {
                    realm: String::new(),
                    ..ok.clone()
                },
                "realm",
            ),
            (
                RelayConfig {
                    allow_peers: vec!["nonsense".into()],
                    ..ok.clone()
                },
                "allow-peer",
            ),
            (
                RelayConfig {
                    relay_ips: vec!["0.0.0.0".parse().expect("ip")],
                    ..ok.clone()
                },
                "wildcard",
            ),
            (
                RelayConfig {
                    auth_secrets: vec![String::new()],
                    ..ok.clone()
                },
                "auth-secret",
            ),
            (
                RelayConfig {
                    users_file: Some("/nonexistent/users".into()),
                    ..ok.clone()
                },
                "users file",
            ),
            (
                RelayConfig {
                    redis_userdb: Some("ip=127.0.0.1 colour=blue".into()),
                    ..ok.clone()
                },
                "user database: redis-userdb: unknown key \"colour\"",
            ),
            (
                RelayConfig {
                    userdb: Some("/var/lib/turn/turndb".into()),
                    redis_userdb: Some("ip=127.0.0.1".into()),
                    ..ok.clone()
                },
                "user database: one user database at a time: userdb, redis-userdb are all given",
            ),
            (
                RelayConfig {
                    redis_statsdb: Some("ip=127.0.0.1 colour=blue".into()),
                    ..ok.clone()
                },
                "redis-statsdb: unknown key \"colour\"",
            ),
        ] {
            let err = build(&cfg, &bound, [0; 32]).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn one_user_database_is_named() {
        use userdb::Source;
        let none = RelayConfig::default();
        assert_eq!(Source::from_config(&none).expect("valid"), None);
        let sqlite = RelayConfig {
            userdb: Some("/var/lib/turn/turndb".into()),
            ..RelayConfig::default()
        };
        assert_eq!(
            Source::from_config(&sqlite).expect("valid"),
            Some(Source::Sqlite("/var/lib/turn/turndb".into()))
        );
        let psql = RelayConfig {
            psql_userdb: Some("host=127.0.0.1 dbname=coturn".into()),
            ..RelayConfig::default()
        };
        assert_eq!(
            Source::from_config(&psql).expect("valid"),
            Some(Source::Postgres("host=127.0.0.1 dbname=coturn".into()))
        );
        let redis = RelayConfig {
            redis_userdb: Some("ip=127.0.0.1 dbname=2 password=turn".into()),
            ..RelayConfig::default()
        };
        let Some(Source::Redis(conn)) = Source::from_config(&redis).expect("valid") else {
            panic!("not redis");
        };
        assert_eq!(conn.describe(), "redis 127.0.0.1:6379 db 2");
        let all = RelayConfig {
            userdb: Some("/var/lib/turn/turndb".into()),
            psql_userdb: Some("host=127.0.0.1".into()),
            mysql_userdb: Some("host=127.0.0.1".into()),
            redis_userdb: Some("ip=127.0.0.1".into()),
            ..RelayConfig::default()
        };
        let err = Source::from_config(&all).expect_err("four databases");
        assert_eq!(
            err,
            "one user database at a time: userdb, psql-userdb, mysql-userdb, redis-userdb are \
             all given"
        );
    }

    #[test]
    fn api_settings_read_the_token_file_and_are_validated() {
        let bound = Bound::default();
        let with_secret = RelayConfig {
            auth_secrets: vec!["first".into(), "second".into()],
            api_uris: vec!["turn:turn.example.org:3478".into()],
            ..RelayConfig::default()
        };
        let core = build(&with_secret, &bound, [0; 32]).expect("valid");
        // Off by default, and off with a token but no secret.
        assert!(!build_api(&with_secret, &core).expect("valid").enabled());
        let no_secret = RelayConfig {
            api_token: Some("t".into()),
            users: vec!["a:b".into()],
            ..RelayConfig::default()
        };
        let core_no_secret = build(&no_secret, &bound, [0; 32]).expect("valid");
        assert!(
            !build_api(&no_secret, &core_no_secret)
                .expect("valid")
                .enabled()
        );

        let file = std::env::temp_dir().join(format!("xdpturn-api-token-{}", std::process::id()));
        std::fs::write(&file, "token-from-a-secret\n").expect("write");
        let from_file = RelayConfig {
            api_token_file: Some(file.clone()),
            ..with_secret.clone()
        };
        let api = build_api(&from_file, &core).expect("valid");
        assert!(api.enabled());
        assert!(!format!("{api:?}").contains("token-from-a-secret"));

        std::fs::write(&file, "\n").expect("write");
        let bad_cases = [
            (from_file.clone(), "api-token"),
            (
                RelayConfig {
                    api_token: Some("t".into()),
                    ..from_file.clone()
                },
                "not both",
            ),
            (
                RelayConfig {
                    api_token: Some("t".into()),
                    api_uris: vec!["https://example.org".into()],
                    ..with_secret.clone()
                },
                "api-uris",
            ),
            (
                RelayConfig {
                    api_token: Some("t".into()),
                    api_max_ttl_secs: 0,
                    ..with_secret.clone()
                },
                "api-max-ttl-secs",
            ),
        ];
        for (cfg, needle) in bad_cases {
            let err = build_api(&cfg, &core).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err}");
        }
        let _ = std::fs::remove_file(&file);
        let missing = RelayConfig {
            api_token_file: Some(file),
            ..with_secret
        };
        let err = build_api(&missing, &core)
            .expect_err("missing file")
            .to_string();
        assert!(err.contains("API token file"), "{err}");
    }

    /// A backend that answers one realm's rows, and no user.
    #[derive(Debug)]
    struct Rows(crate::userdb::realm::RealmRows);

    impl crate::userdb::backend::Backend for Rows {
        fn user_key<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> crate::userdb::backend::BoxFuture<
            'a,
            Result<Option<String>, crate::userdb::backend::BackendError>,
        > {
            Box::pin(async { Ok(None) })
        }

        fn realm<'a>(
            &'a self,
            _: &'a str,
        ) -> crate::userdb::backend::BoxFuture<
            'a,
            Result<crate::userdb::realm::RealmRows, crate::userdb::backend::BackendError>,
        > {
            Box::pin(async { Ok(self.0.clone()) })
        }

        fn describe(&self) -> String {
            "rows".into()
        }
    }

    #[tokio::test]
    async fn the_user_database_realm_merges_into_the_configuration() {
        let cfg = RelayConfig {
            auth_secrets: vec!["configured".into()],
            user_quota: 5,
            total_quota: 100,
            max_bps: 1_000,
            allow_peers: vec!["10.0.0.0/8".into()],
            ..RelayConfig::default()
        };
        let rows = crate::userdb::realm::RealmRows {
            secrets: vec!["from the database".into()],
            options: vec![("user-quota".into(), "2".into())],
            allowed: vec!["192.168.7.0-192.168.7.255".into()],
            denied: vec!["10.1.0.0/16".into()],
        };
        let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
        let db = UserDb::new(
            Arc::new(Rows(rows)),
            &cfg.realm,
            metrics,
            crate::userdb::cache::Limits::default(),
        );
        assert!(db.read_realm().await);
        let built = build_with(&cfg, &Bound::default(), [0; 32], Some(&db)).expect("valid");
        assert_eq!(
            built.auth.secrets,
            vec![b"configured".to_vec(), b"from the database".to_vec()]
        );
        assert!(built.auth.source.is_some());
        // The database's option replaces the configured one; the others stay.
        assert_eq!(
            (
                built.quotas.per_user,
                built.quotas.total,
                built.quotas.max_bps
            ),
            (2, 100, 1_000)
        );
        let peer = |ip: &str| built.policy.check_ip(ip.parse().expect("ip"));
        assert!(peer("192.168.7.9").is_ok(), "allowed by the database");
        assert!(
            peer("192.168.8.9").is_err(),
            "still denied by the built-in rules"
        );
        assert!(peer("10.2.0.1").is_ok(), "allowed by the configuration");
        assert!(
            peer("10.1.0.1").is_err(),
            "denied by the database (longer prefix)"
        );
        // Without the database: the configuration alone.
        let plain = build(&cfg, &Bound::default(), [0; 32]).expect("valid");
        assert_eq!(plain.quotas.per_user, 5);
        assert!(plain.auth.source.is_none());
    }
}
