//! Supervision of a running relay: reloads on SIGHUP and when a file it read changes
//! (config file, users file, secret files, token file, certificate and key) or when coturn's
//! user database has new realm data (secrets, options, peer ranges), refused and logged when
//! the new configuration is bad; on SIGTERM or SIGINT, the drain.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::RelayConfig;
use tokio::signal::unix::{SignalKind, signal};

use super::{LoadError, ServeArgs, load_config};
use crate::config::{self, Bound, ConfigError};
use crate::eventloop::Control;
use crate::http;
use crate::metrics::Metrics;
use crate::proto::{self, Ledger};
use crate::userdb::UserDb;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// An error and its causes on one line, `outer: cause: cause`, for the log.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// What a reload updates in place: the workers' protocol configuration and the HTTP side's view.
#[derive(Debug)]
pub struct Live<'a> {
    pub control: &'a Control,
    pub api: &'a http::Api,
    /// coturn's user database, when configured (`userdb/`).
    pub userdb: Option<&'a Arc<UserDb>>,
}

/// The files a reload depends on and what they looked like when last read. Taken before the
/// relay serves anyone, so that a change made as soon as clients are answered is seen.
#[derive(Debug)]
pub struct Watch {
    files: Vec<PathBuf>,
    seen: Vec<Option<(SystemTime, u64)>>,
}

impl Watch {
    /// The files `cfg` (loaded from `args`) depends on, as they are now.
    pub fn new(args: &ServeArgs, cfg: &RelayConfig) -> Self {
        let files = watched_files(args, cfg);
        let seen = fingerprint(&files);
        Self { files, seen }
    }
}

/// Reloads on SIGHUP and file changes (against `watch`, taken before serving); on
/// SIGTERM/SIGINT drains and returns.
#[allow(clippy::too_many_arguments)] // the serve loop's parts, each borrowed for its lifetime
pub async fn supervise(
    args: &ServeArgs,
    mut cfg: RelayConfig,
    watch: Watch,
    bound: &Bound,
    nonce_key: [u8; 32],
    live: &Live<'_>,
    ledger: &Ledger,
    metrics: &Metrics,
) {
    let control = live.control;
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    let generated: Vec<String> = cfg
        .users
        .iter()
        .filter(|u| u.starts_with("xdpturn:") && !args.settings.users.contains(u))
        .cloned()
        .collect();
    let Watch {
        mut files,
        mut seen,
    } = watch;
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let mut realm_data = live.userdb.map(|db| db.realm_data());
    let signal_name = loop {
        let realm_changed = async {
            match realm_data.as_mut() {
                Some(rx) => rx.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Ok(()) = realm_changed => {
                reload(args, &mut cfg, &generated, bound, nonce_key, live, "user database change");
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                reload(args, &mut cfg, &generated, bound, nonce_key, live, "SIGHUP");
                reload_tls(&cfg, control, "SIGHUP");
            }
            _ = poll.tick() => {
                // Not ready at capacity: a load balancer should send new clients elsewhere.
                // The quota in force: the user database's total-quota, when set, replaces the
                // configured one.
                let total = control.config().quotas.total;
                let full = total != 0 && ledger.total() >= total;
                // A relay that handed its ports over (serve/handover.rs) drains.
                metrics.ready.set(i64::from(!full && !control.is_draining()));
                let now = fingerprint(&files);
                if now != seen {
                    reload(args, &mut cfg, &generated, bound, nonce_key, live, "file change");
                    reload_tls(&cfg, control, "file change");
                    files = watched_files(args, &cfg);
                    seen = fingerprint(&files);
                }
            }
        }
    };

    // Drain: no new allocations; serve the existing ones until they end or time runs out.
    metrics.ready.set(0);
    control.drain();
    let deadline = Instant::now() + Duration::from_secs(cfg.drain_timeout_secs);
    tracing::info!(
        signal = signal_name,
        allocations = ledger.total(),
        timeout_secs = cfg.drain_timeout_secs,
        "draining"
    );
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        if ledger.total() == 0 {
            tracing::info!("no allocations left; exiting");
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                allocations = ledger.total(),
                "drain timeout; exiting with allocations left"
            );
            break;
        }
        tokio::select! {
            _ = check.tick() => {}
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "second signal; exiting now"); break; }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "second signal; exiting now"); break; }
        }
    }
}

fn reload(
    args: &ServeArgs,
    cfg: &mut RelayConfig,
    generated: &[String],
    bound: &Bound,
    nonce_key: [u8; 32],
    live: &Live<'_>,
    why: &str,
) {
    let result = load_config(args)
        .map_err(ReloadError::from)
        .and_then(|mut new| {
            new.users.extend(generated.iter().cloned());
            let mut core = config::build_with(&new, bound, nonce_key, live.userdb)?;
            set_test_lifetimes(args, &mut core);
            let api_config = config::build_api(&new, &core)?;
            Ok((new, core, api_config))
        });
    match result {
        Ok((new, core, api_config)) => {
            if new.listen != cfg.listen
                || new.tls_listen != cfg.tls_listen
                || new.metrics_listen != cfg.metrics_listen
                || new.workers != cfg.workers
            {
                tracing::warn!(
                    "listen addresses and workers change only on restart; the rest is reloaded"
                );
            }
            let database = |c: &RelayConfig| {
                (
                    c.userdb.clone(),
                    c.psql_userdb.clone(),
                    c.mysql_userdb.clone(),
                    c.redis_userdb.clone(),
                )
            };
            if database(&new) != database(cfg) || (live.userdb.is_some() && new.realm != cfg.realm)
            {
                tracing::warn!(
                    "the user database and the realm it is read for change only on restart; \
                     the rest is reloaded"
                );
            }
            if new.redis_statsdb != cfg.redis_statsdb
                || (cfg.redis_statsdb.is_some() && new.realm != cfg.realm)
            {
                tracing::warn!(
                    "the statistics database (redis-statsdb) and the realm its records name \
                     change only on restart; the rest is reloaded"
                );
            }
            // Usage is reported where the publisher started with the relay, whatever the new file
            // says (see the warning above).
            let mut core = core;
            core.report_usage = live.control.config().report_usage;
            *cfg = new;
            live.control.set_config(Arc::new(core));
            live.api.set(api_config);
            tracing::info!(trigger = why, "configuration reloaded");
        }
        Err(err) => tracing::error!(
            trigger = why,
            error = chain(&err),
            "reload refused; keeping the previous configuration"
        ),
    }
}

/// `--channel-lifetime`, `--allocation-lifetime` and `--permission-lifetime`, test knobs, on the core's configuration (at start and on reload).
pub fn set_test_lifetimes(args: &ServeArgs, core: &mut proto::Config) {
    if let Some(lifetime) = args.channel_lifetime {
        core.lifetimes.channel = lifetime.max(Duration::from_secs(1));
    }
    if let Some(lifetime) = args.allocation_lifetime {
        let lifetime = lifetime.max(Duration::from_secs(1));
        core.lifetimes.default_allocation = lifetime;
        core.lifetimes.max_allocation = lifetime;
    }
    if let Some(lifetime) = args.permission_lifetime {
        core.lifetimes.permission = lifetime.max(Duration::from_secs(1));
    }
}

/// Reloads the TLS certificate and key when serving TLS. A bad pair is refused and the one in
/// use stays; connections are never dropped (each keeps the certificate it started with).
fn reload_tls(cfg: &RelayConfig, control: &Control, why: &str) {
    let (Some(certs), Some(cert), Some(key)) = (control.tls(), &cfg.cert, &cfg.key) else {
        return;
    };
    match certs.reload(cert, key) {
        Ok(true) => tracing::info!(
            trigger = why,
            cert = %cert.display(),
            key = %key.display(),
            "TLS certificate reloaded"
        ),
        Ok(false) => {}
        Err(err) => tracing::error!(
            trigger = why,
            error = %err,
            "TLS certificate reload refused; keeping the certificate in use"
        ),
    }
}

/// The files a reload depends on, with what they looked like last time.
fn watched_files(args: &ServeArgs, cfg: &RelayConfig) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = args.config.iter().cloned().collect();
    if !cfg.tls_listen.is_empty() {
        files.extend(cfg.cert.iter().chain(&cfg.key).cloned());
    }
    files.extend(cfg.users_file.iter().cloned());
    files.extend(cfg.auth_secret_files.iter().cloned());
    files.extend(cfg.api_token_file.iter().cloned());
    files
}

fn fingerprint(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_errors_are_logged_with_their_causes() {
        let err = ReloadError::from(LoadError::Read {
            path: "/nonexistent/relay.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(
            chain(&err),
            "reading config file /nonexistent/relay.toml: entity not found"
        );
    }

    #[test]
    fn watched_files_follow_the_configuration() {
        let args = ServeArgs {
            config: Some("relay.toml".into()),
            settings: api::RelayFlags::default(),
            revision: None,
            channel_lifetime: None,
            allocation_lifetime: None,
            permission_lifetime: None,
        };
        let cfg = RelayConfig {
            cert: Some("cert.pem".into()),
            key: Some("key.pem".into()),
            users_file: Some("users".into()),
            auth_secret_files: vec!["secret".into()],
            api_token_file: Some("token".into()),
            ..RelayConfig::default()
        };
        let names = |files: Vec<PathBuf>| {
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
        };
        // The certificate is watched only while TLS is served.
        assert_eq!(
            names(watched_files(&args, &cfg)),
            ["relay.toml", "users", "secret", "token"]
        );
        let tls = RelayConfig {
            tls_listen: vec!["127.0.0.1:0".parse().expect("addr")],
            ..cfg
        };
        assert_eq!(
            names(watched_files(&args, &tls)),
            [
                "relay.toml",
                "cert.pem",
                "key.pem",
                "users",
                "secret",
                "token"
            ]
        );
    }

    #[test]
    fn a_fingerprint_changes_with_the_file() {
        let path = std::env::temp_dir().join(format!("xdpturn-watch-{}", std::process::id()));
        let files = vec![path.clone()];
        let _ = std::fs::remove_file(&path);
        assert_eq!(fingerprint(&files), vec![None]);
        std::fs::write(&path, "one").expect("write");
        let first = fingerprint(&files);
        assert!(first[0].is_some());
        std::fs::write(&path, "three").expect("write");
        assert_ne!(fingerprint(&files), first, "the length changed");
        let _ = std::fs::remove_file(&path);
    }
}
