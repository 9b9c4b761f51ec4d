//! `xdpturn-relay`: the STUN/TURN server, and the credential tools coturn users know from
//! `turnadmin`.

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use api::RelayConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use relay::credentials;
use relay::metrics::Metrics;
use relay::proto::Server;
use relay::{eventloop, http};
use tracing_subscriber::EnvFilter;

/// xdpturn relay: a STUN/TURN server (RFC 8489, RFC 8656) for WebRTC.
///
/// With no arguments it serves STUN on port 3478, UDP and TCP, on every IPv4 and IPv6
/// address, and Prometheus metrics on port 9641. Every option can also be set in a TOML file
/// (--config) and by an environment variable (XDPTURN_*); flags override the file.
///
/// Logs go to standard error; set XDPTURN_LOG (or RUST_LOG) to filter them, e.g.
/// XDPTURN_LOG=debug or XDPTURN_LOG=relay=debug,info.
#[derive(Debug, Parser)]
#[command(
    name = "xdpturn-relay",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a user's long-term key, MD5(user:realm:password), as `turnadmin -k` does.
    ///
    /// The key can stand in for the password in a users file, so that passwords need not be
    /// stored.
    Key(KeyArgs),
    /// Issue a time-limited credential from a shared secret, as coturn's `use-auth-secret`
    /// (the TURN REST API) expects, with the matching RTCPeerConnection `iceServers`.
    ///
    /// username = <unix-expiry>[:<user>], password = base64(HMAC-SHA1(secret, username)).
    Credentials(CredentialsArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (TOML). Options given as flags or environment variables override it.
    #[arg(short = 'c', long, env = "XDPTURN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to serve STUN/TURN on, UDP and TCP [coturn: --listening-ip/--listening-port].
    /// Repeatable; port 0 picks a free port (logged). Default: 0.0.0.0:3478 and [::]:3478.
    #[arg(
        long,
        env = "XDPTURN_LISTEN",
        value_name = "ADDR:PORT",
        value_delimiter = ','
    )]
    listen: Vec<SocketAddr>,

    /// Address to serve /metrics, /healthz and /readyz on [coturn: --prometheus-port].
    /// Default: 0.0.0.0:9641.
    #[arg(long, env = "XDPTURN_METRICS_LISTEN", value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,

    /// SOFTWARE attribute sent in responses; an empty string sends none [coturn: --no-software-attribute].
    #[arg(long, env = "XDPTURN_SOFTWARE", value_name = "TEXT")]
    software: Option<String>,
}

#[derive(Debug, Args)]
struct KeyArgs {
    /// User name [turnadmin: -u].
    #[arg(short, long)]
    user: String,
    /// Realm [turnadmin: -r].
    #[arg(short, long)]
    realm: String,
    /// Password [turnadmin: -p]. Prefer XDPTURN_PASSWORD: command lines are visible to others.
    #[arg(short, long, env = "XDPTURN_PASSWORD", hide_env_values = true)]
    password: String,
}

#[derive(Debug, Args)]
struct CredentialsArgs {
    /// The shared secret [coturn: --static-auth-secret]. Prefer XDPTURN_AUTH_SECRET.
    #[arg(short, long, env = "XDPTURN_AUTH_SECRET", hide_env_values = true)]
    secret: String,
    /// The user the credential is for (appended to the expiry as `:<user>`).
    #[arg(short, long)]
    user: Option<String>,
    /// How long the credential is valid: 3600, 90s, 30m, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: Duration,
    /// STUN/TURN URI for the iceServers output, e.g. turn:turn.example.org:3478?transport=udp
    /// (repeatable).
    #[arg(long = "uri", value_name = "URI", value_parser = parse_uri)]
    uris: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Readable lines, with the iceServers JSON last.
    Text,
    /// One JSON object: username, password, expires, ttl, iceServers.
    Json,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{e} (examples: 3600, 30m, 24h, 7d)"))?,
    };
    if ttl.is_zero() {
        return Err("a credential needs a positive lifetime".into());
    }
    Ok(ttl)
}

fn parse_uri(s: &str) -> Result<String, String> {
    credentials::check_uri(s).map(|()| s.to_owned())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Key(args)) => {
            println!(
                "{}",
                credentials::key_hex(&args.user, &args.realm, &args.password)
            );
            Ok(())
        }
        Some(Command::Credentials(args)) => print_credentials(&args),
        None => {
            init_logging();
            let config = load_config(&cli.serve)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(serve(config))
        }
    }
}

fn print_credentials(args: &CredentialsArgs) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let expires = now.as_secs().saturating_add(args.ttl.as_secs());
    let cred = credentials::rest_credential(args.secret.as_bytes(), args.user.as_deref(), expires);
    let ice = credentials::ice_servers(&args.uris, &cred);
    match args.format {
        Format::Json => {
            let out = serde_json::json!({
                "username": cred.username,
                "password": cred.password,
                "expires": cred.expires,
                "ttl": args.ttl.as_secs(),
                "iceServers": ice,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => {
            println!("username: {}", cred.username);
            println!("password: {}", cred.password);
            println!(
                "expires:  {} (in {})",
                cred.expires,
                humantime::format_duration(args.ttl)
            );
            if ice.is_empty() {
                println!("(add --uri turn:HOST:3478 for a ready iceServers entry)");
            } else {
                println!("iceServers: {}", serde_json::to_string_pretty(&ice)?);
            }
        }
    }
    Ok(())
}

fn init_logging() {
    let filter = std::env::var("XDPTURN_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn load_config(args: &ServeArgs) -> anyhow::Result<RelayConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => RelayConfig::default(),
    };
    if !args.listen.is_empty() {
        config.listen.clone_from(&args.listen);
    }
    if let Some(addr) = args.metrics_listen {
        config.metrics_listen = addr;
    }
    if let Some(software) = &args.software {
        config.software.clone_from(software);
    }
    if config.listen.is_empty() {
        bail!("no listen address: give --listen ADDR:PORT or `listen = [...]` in the config file");
    }
    Ok(config)
}

async fn serve(config: RelayConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new().context("creating metrics")?);

    let mut listeners = Vec::new();
    for &addr in &config.listen {
        match eventloop::bind(addr) {
            Ok(l) => {
                tracing::info!(udp = %l.addr, tcp = %l.addr, "listening");
                listeners.push(l);
            }
            // The default [::] listener on a host without IPv6 is not worth failing for.
            Err(err) if is_unspecified_v6(addr) && is_no_ipv6(&err) => {
                tracing::warn!(%addr, %err, "IPv6 is unavailable on this host; serving IPv4 only");
            }
            Err(err) => return Err(err).with_context(|| format!("binding UDP and TCP on {addr}")),
        }
    }
    if listeners.is_empty() {
        bail!("no listener could be bound");
    }

    let http = http::bind(config.metrics_listen).await.with_context(|| {
        format!(
            "binding the metrics listener on {} (set --metrics-listen)",
            config.metrics_listen
        )
    })?;
    tracing::info!(metrics = %http.local_addr()?, "serving /metrics /healthz /readyz");

    let server = Server::new(config.software.clone());
    metrics.ready.set(1);
    tokio::select! {
        res = eventloop::serve(listeners, server, metrics.clone()) => res.context("serving STUN/TURN")?,
        res = http::serve(http, metrics.clone()) => res.context("serving HTTP")?,
        signal = shutdown_signal() => {
            metrics.ready.set(0);
            tracing::info!(signal, "shutting down");
        }
    }
    Ok(())
}

fn is_unspecified_v6(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(ip) if ip.is_unspecified())
}

fn is_no_ipv6(err: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) when the kernel has no IPv6; EADDRNOTAVAIL when it is disabled.
    err.kind() == std::io::ErrorKind::AddrNotAvailable || err.raw_os_error() == Some(97)
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(%err, "cannot watch SIGTERM; only Ctrl-C stops the relay");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
