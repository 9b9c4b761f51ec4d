//! `xdpturn-relay`: the STUN/TURN server, and the credential tools coturn users know from
//! `turnadmin`.

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use api::RelayConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use relay::config::{self, Bound};
use relay::eventloop::{self, Control, RelayPorts, Shared};
use relay::metrics::Metrics;
use relay::proto::Ledger;
use relay::{credentials, http, tls};
use tracing_subscriber::EnvFilter;

/// xdpturn relay: a STUN/TURN server (RFC 8489, RFC 8656) for WebRTC.
///
/// With no arguments it serves STUN and TURN on port 3478, UDP and TCP, on every IPv4 and
/// IPv6 address, with a user and password generated for the run (printed once), and Prometheus
/// metrics on port 9641. Every option can also be set in a TOML file (--config) and by an
/// environment variable (XDPTURN_*); flags and variables override the file. Names in [brackets]
/// are coturn's equivalents.
///
/// Signals: SIGHUP reloads the config file, users file and secret files (also reloaded when they
/// change on disk) without dropping allocations; a bad reload is refused and the old
/// configuration stays. SIGTERM drains: no new allocations, existing ones served until they end
/// or --drain-timeout; a second SIGTERM exits at once.
///
/// Logs go to standard error; XDPTURN_LOG (or RUST_LOG) filters them, e.g. XDPTURN_LOG=debug.
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
    /// The key can stand in for the password in a users file (NAME:0xKEY), so that passwords
    /// need not be stored.
    Key(KeyArgs),
    /// Issue a time-limited credential from a shared secret, as coturn's `use-auth-secret`
    /// (the TURN REST API) expects, with the matching RTCPeerConnection `iceServers`.
    ///
    /// username = <unix-expiry>[:<user>], password = base64(HMAC-SHA1(secret, username)).
    Credentials(CredentialsArgs),
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Configuration file (TOML, keys as the long flags: listen, min-port, auth-secrets, ...).
    #[arg(short = 'c', long, env = "XDPTURN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to serve STUN/TURN on, UDP and TCP; repeatable; port 0 picks a free port
    /// [--listening-ip, --listening-port]. Default: 0.0.0.0:3478 and [::]:3478.
    #[arg(
        long,
        env = "XDPTURN_LISTEN",
        value_name = "ADDR:PORT",
        value_delimiter = ','
    )]
    listen: Vec<SocketAddr>,

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
    tls_listen: Vec<SocketAddr>,

    /// PEM certificate chain for TLS, leaf first [--cert]. Reloaded on SIGHUP and when the
    /// file changes; a bad new certificate is refused and the old one kept.
    #[arg(long, env = "XDPTURN_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,

    /// PEM private key for TLS: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted [--pkey].
    /// Reloaded with the certificate.
    #[arg(long, env = "XDPTURN_KEY", value_name = "FILE")]
    key: Option<PathBuf>,

    /// Address to serve /metrics, /healthz and /readyz on [--prometheus-port]. Default 0.0.0.0:9641.
    #[arg(long, env = "XDPTURN_METRICS_LISTEN", value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,

    /// Realm of the long-term credentials [--realm]. Default: xdpturn.
    #[arg(long, env = "XDPTURN_REALM")]
    realm: Option<String>,

    /// A static user, NAME:PASSWORD or NAME:0xKEY (from `key`); repeatable [--user].
    #[arg(
        long = "user",
        env = "XDPTURN_USERS",
        value_name = "NAME:PASSWORD",
        value_delimiter = ',',
        hide_env_values = true
    )]
    users: Vec<String>,

    /// File of users, one NAME:PASSWORD or NAME:0xKEY per line [--userdb].
    #[arg(long, env = "XDPTURN_USERS_FILE", value_name = "FILE")]
    users_file: Option<PathBuf>,

    /// Shared secret for time-limited REST credentials; repeatable, any one validates, for
    /// rotation [--use-auth-secret --static-auth-secret].
    #[arg(
        long = "auth-secret",
        env = "XDPTURN_AUTH_SECRETS",
        value_name = "SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    auth_secrets: Vec<String>,

    /// File holding one shared secret (e.g. a mounted Kubernetes Secret); repeatable.
    #[arg(
        long = "auth-secret-file",
        env = "XDPTURN_AUTH_SECRET_FILES",
        value_name = "FILE",
        value_delimiter = ','
    )]
    auth_secret_files: Vec<PathBuf>,

    /// Address to relay from, one per family; repeatable [--relay-ip]. Default: the address
    /// each request arrived on.
    #[arg(
        long = "relay-ip",
        env = "XDPTURN_RELAY_IPS",
        value_name = "IP",
        value_delimiter = ','
    )]
    relay_ips: Vec<IpAddr>,

    /// Lowest relay port [--min-port]. Default 49152.
    #[arg(long, env = "XDPTURN_MIN_PORT")]
    min_port: Option<u16>,

    /// Highest relay port [--max-port]. Default 65535.
    #[arg(long, env = "XDPTURN_MAX_PORT")]
    max_port: Option<u16>,

    /// Public address advertised for relayed addresses, PUBLIC or PUBLIC/PRIVATE, for a relay
    /// behind NAT; repeatable [--external-ip].
    #[arg(
        long = "external-ip",
        env = "XDPTURN_EXTERNAL_IPS",
        value_name = "PUBLIC[/PRIVATE]",
        value_delimiter = ','
    )]
    external_ips: Vec<String>,

    /// Peer network to allow even where a built-in rule denies it (loopback, private,
    /// link-local, ...); repeatable [--allowed-peer-ip].
    #[arg(
        long = "allow-peer",
        env = "XDPTURN_ALLOW_PEERS",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    allow_peers: Vec<String>,

    /// Peer network to deny in addition to the built-in rules; repeatable [--denied-peer-ip].
    #[arg(
        long = "deny-peer",
        env = "XDPTURN_DENY_PEERS",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    deny_peers: Vec<String>,

    /// Allocations per user, 0 for no limit [--user-quota].
    #[arg(long, env = "XDPTURN_USER_QUOTA")]
    user_quota: Option<u32>,

    /// Allocations in total, 0 for no limit [--total-quota].
    #[arg(long, env = "XDPTURN_TOTAL_QUOTA")]
    total_quota: Option<u32>,

    /// Bandwidth per allocation in bits per second, 0 for no limit [--max-bps].
    #[arg(long, env = "XDPTURN_MAX_BPS")]
    max_bps: Option<u64>,

    /// Permissions per allocation, 0 for no limit. Default 64.
    #[arg(long, env = "XDPTURN_MAX_PERMISSIONS")]
    max_permissions: Option<u32>,

    /// Worker threads, 0 for one per CPU.
    #[arg(long, env = "XDPTURN_WORKERS")]
    workers: Option<usize>,

    /// On SIGTERM, how long to keep serving existing allocations: 300, 5m, 1h.
    #[arg(long, env = "XDPTURN_DRAIN_TIMEOUT", value_parser = parse_duration)]
    drain_timeout: Option<Duration>,

    /// SOFTWARE attribute in responses; empty sends none [--no-software-attribute].
    #[arg(long, env = "XDPTURN_SOFTWARE", value_name = "TEXT")]
    software: Option<String>,

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
    xdp_interfaces: Vec<String>,

    /// How to attach XDP: native (driver), skb (generic) or auto (native, else skb).
    #[arg(long, env = "XDPTURN_XDP_MODE", value_name = "MODE")]
    xdp_mode: Option<String>,

    /// Channels offloaded to the kernel at most, and as many permissions (Send and Data
    /// indications) and UDP allocations; beyond, userspace. Sizes the maps: N channel entries,
    /// 2 N peer entries and counter slots, N allocations, 4 N next hops. Default 65536.
    #[arg(long, env = "XDPTURN_XDP_MAX_CHANNELS")]
    xdp_max_channels: Option<u32>,

    /// Channel lifetime (RFC 8656 fixes it at 10 minutes): for tests, which need channels to
    /// expire (and leave the XDP maps) within seconds. Not in the config file; hidden.
    #[arg(long, env = "XDPTURN_CHANNEL_LIFETIME", value_parser = parse_duration, hide = true)]
    channel_lifetime: Option<Duration>,

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
    api_token: Option<String>,

    /// File holding the bearer token (e.g. a mounted Kubernetes Secret); reloaded on change.
    #[arg(long, env = "XDPTURN_API_TOKEN_FILE", value_name = "FILE")]
    api_token_file: Option<PathBuf>,

    /// STUN/TURN URI the credentials endpoint returns in iceServers, e.g.
    /// turn:turn.example.org:3478?transport=udp; repeatable.
    #[arg(
        long = "api-uri",
        env = "XDPTURN_API_URIS",
        value_name = "URI",
        value_delimiter = ',',
        value_parser = parse_uri
    )]
    api_uris: Vec<String>,

    /// Longest lifetime the credentials endpoint grants (longer requests are cut to it):
    /// 3600, 12h, 7d. Default 24h.
    #[arg(long, env = "XDPTURN_API_MAX_TTL", value_parser = parse_ttl)]
    api_max_ttl: Option<Duration>,
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 3600, 30m, 24h, 7d)"))
        }
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
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
            serve(cli.serve)
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
    // rustls warns about what remote clients send (odd alerts, malformed hellos): noise a client
    // controls. It is shown only when asked for by name, e.g. XDPTURN_LOG=debug,rustls=debug.
    let named = ["XDPTURN_LOG", "RUST_LOG"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|f| f.contains("rustls")));
    let filter = match "rustls=error".parse() {
        Ok(quiet) if !named => filter.add_directive(quiet),
        _ => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The config file (if any) with flags and environment laid over it.
fn load_config(args: &ServeArgs) -> anyhow::Result<RelayConfig> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => RelayConfig::default(),
    };
    fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
        if let Some(v) = src {
            *dst = v.clone();
        }
    }
    fn set_list<T: Clone>(dst: &mut Vec<T>, src: &[T]) {
        if !src.is_empty() {
            *dst = src.to_vec();
        }
    }
    set_list(&mut c.listen, &args.listen);
    set_list(&mut c.tls_listen, &args.tls_listen);
    if args.cert.is_some() {
        c.cert.clone_from(&args.cert);
    }
    if args.key.is_some() {
        c.key.clone_from(&args.key);
    }
    if !c.tls_listen.is_empty() && (c.cert.is_none() || c.key.is_none()) {
        bail!(
            "TLS needs a certificate and a key: give --cert FILE and --key FILE (or `cert` and \
             `key` in the config file) with --tls-listen"
        );
    }
    set(&mut c.metrics_listen, &args.metrics_listen);
    set(&mut c.realm, &args.realm);
    set_list(&mut c.users, &args.users);
    if args.users_file.is_some() {
        c.users_file.clone_from(&args.users_file);
    }
    set_list(&mut c.auth_secrets, &args.auth_secrets);
    set_list(&mut c.auth_secret_files, &args.auth_secret_files);
    set_list(&mut c.relay_ips, &args.relay_ips);
    set(&mut c.min_port, &args.min_port);
    set(&mut c.max_port, &args.max_port);
    set_list(&mut c.external_ips, &args.external_ips);
    set_list(&mut c.allow_peers, &args.allow_peers);
    set_list(&mut c.deny_peers, &args.deny_peers);
    set(&mut c.user_quota, &args.user_quota);
    set(&mut c.total_quota, &args.total_quota);
    set(&mut c.max_bps, &args.max_bps);
    set(&mut c.max_permissions, &args.max_permissions);
    set(&mut c.workers, &args.workers);
    if let Some(d) = args.drain_timeout {
        c.drain_timeout_secs = d.as_secs();
    }
    set(&mut c.software, &args.software);
    set_list(&mut c.xdp_interfaces, &args.xdp_interfaces);
    set(&mut c.xdp_mode, &args.xdp_mode);
    set(&mut c.xdp_max_channels, &args.xdp_max_channels);
    if let Err(e) = c.xdp_mode.parse::<relay::dataplane::XdpMode>() {
        bail!("xdp-mode: {e}");
    }
    // A token from a flag or the environment replaces the file's, whichever way it was given.
    if args.api_token.is_some() || args.api_token_file.is_some() {
        c.api_token.clone_from(&args.api_token);
        c.api_token_file.clone_from(&args.api_token_file);
    }
    set_list(&mut c.api_uris, &args.api_uris);
    if let Some(ttl) = args.api_max_ttl {
        c.api_max_ttl_secs = ttl.as_secs();
    }
    if c.listen.is_empty() {
        bail!("no listen address: give --listen ADDR:PORT or `listen = [...]` in the config file");
    }
    match (&c.cert, &c.key) {
        (Some(_), None) | (None, Some(_)) => bail!(
            "TLS needs both a certificate and a key: give --cert FILE and --key FILE (or `cert` \
             and `key` in the config file)"
        ),
        (Some(_), Some(_)) if c.tls_listen.is_empty() => c.tls_listen = c.default_tls_listen(),
        _ => {}
    }
    Ok(c)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b);
    b
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

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(&args)?;
    let workers = if cfg.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.workers
    };

    let certs = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) if !cfg.tls_listen.is_empty() => {
            Some(Arc::new(tls::Certificates::load(cert, key)?))
        }
        _ => None,
    };
    // Bind everything first: a port in use is a start-up error, not a surprise later.
    let mut listeners = Vec::new();
    for &addr in &cfg.listen {
        match eventloop::bind(addr, workers) {
            Ok(set) => {
                tracing::info!(udp = %set.addr, tcp = %set.addr, workers, "listening");
                listeners.push(set);
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
    let mut tls_listeners = Vec::new();
    for &addr in &cfg.tls_listen {
        match eventloop::bind_tls(addr, workers) {
            Ok(set) => {
                tracing::info!(tls = %set.addr, workers, "listening");
                tls_listeners.push(set);
            }
            Err(err) if is_unspecified_v6(addr) && is_no_ipv6(&err) => {
                tracing::warn!(%addr, %err, "IPv6 is unavailable on this host; TLS on IPv4 only");
            }
            Err(err) => return Err(err).with_context(|| format!("binding TLS (TCP) on {addr}")),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let http = runtime
        .block_on(http::bind(cfg.metrics_listen))
        .with_context(|| {
            format!(
                "binding the metrics listener on {} (set --metrics-listen)",
                cfg.metrics_listen
            )
        })?;
    let http_addr = http.local_addr()?;
    tracing::info!(metrics = %http_addr, "serving /metrics /healthz /readyz");

    let generated = if cfg.has_credentials() {
        None
    } else {
        let password = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            random_bytes::<18>(),
        );
        cfg.users.push(format!("xdpturn:{password}"));
        Some(password)
    };
    let bound = Bound {
        listeners: listeners.iter().map(|l| l.addr).collect(),
        http: vec![http_addr],
    };
    let nonce_key = random_bytes::<32>();
    let mut core = config::build(&cfg, &bound, nonce_key).context("invalid configuration")?;
    set_test_lifetimes(&args, &mut core);
    let api = Arc::new(http::Api::new(
        config::build_api(&cfg, &core).context("invalid configuration")?,
    ));
    if let Some(password) = &generated {
        print_generated(&cfg, &bound, password);
    }

    let metrics = Arc::new(Metrics::new().context("creating metrics")?);
    let mut control = Control::new(Arc::new(core));
    if let Some(certs) = certs {
        control = control.with_tls(certs);
    }
    let control = Arc::new(control);
    let ledger = Arc::new(Ledger::default());
    let dataplane = load_dataplane(&cfg, &bound, &metrics);
    let shared = Shared {
        control: control.clone(),
        ledger: ledger.clone(),
        metrics: metrics.clone(),
        ports: Arc::new(RelayPorts::new(cfg.min_port, cfg.max_port)),
        held: Arc::default(),
        tcp_pending: Arc::default(),
        tcp_spliced: Arc::default(),
        dataplane: dataplane.clone(),
        local_relays: Arc::default(),
        clock: (
            Instant::now(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
    };
    let threads =
        eventloop::start(listeners, tls_listeners, workers, shared).context("starting workers")?;
    metrics.ready.set(1);

    let result = runtime.block_on(async {
        let http_task = tokio::spawn(http::serve(http, metrics.clone(), api.clone()));
        let xdp_task = dataplane
            .clone()
            .map(|dp| tokio::spawn(export_xdp_counters(dp, metrics.clone())));
        let live = Live {
            control: &control,
            api: &api,
        };
        supervise(&args, cfg, &bound, nonce_key, &live, &ledger, &metrics).await;
        http_task.abort();
        if let Some(t) = xdp_task {
            t.abort();
        }
        Ok::<_, anyhow::Error>(())
    });
    control.stop();
    for t in threads {
        let _ = t.join();
    }
    tracing::info!("stopped");
    result
}

/// What a reload updates in place: the workers' protocol configuration and the HTTP side's view.
struct Live<'a> {
    control: &'a Control,
    api: &'a http::Api,
}

/// Reloads on SIGHUP and file changes; on SIGTERM/SIGINT drains and returns.
async fn supervise(
    args: &ServeArgs,
    mut cfg: RelayConfig,
    bound: &Bound,
    nonce_key: [u8; 32],
    live: &Live<'_>,
    ledger: &Ledger,
    metrics: &Metrics,
) {
    let control = live.control;
    use tokio::signal::unix::{SignalKind, signal};
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
        .filter(|u| u.starts_with("xdpturn:") && !args.users.contains(u))
        .cloned()
        .collect();
    let mut files = watched_files(args, &cfg);
    let mut seen = fingerprint(&files);
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                reload(args, &mut cfg, &generated, bound, nonce_key, live, "SIGHUP");
                reload_tls(&cfg, control, "SIGHUP");
            }
            _ = poll.tick() => {
                // Not ready at capacity: a load balancer should send new clients elsewhere.
                let full = cfg.total_quota != 0 && ledger.total() >= cfg.total_quota;
                metrics.ready.set(i64::from(!full));
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
    let result = load_config(args).and_then(|mut new| {
        new.users.extend(generated.iter().cloned());
        let mut core = config::build(&new, bound, nonce_key)?;
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
            *cfg = new;
            live.control.set_config(Arc::new(core));
            live.api.set(api_config);
            tracing::info!(trigger = why, "configuration reloaded");
        }
        Err(err) => tracing::error!(
            trigger = why,
            error = format!("{err:#}"),
            "reload refused; keeping the previous configuration"
        ),
    }
}

/// `--channel-lifetime`, a test knob, on the core's configuration (at start and on reload).
fn set_test_lifetimes(args: &ServeArgs, core: &mut relay::proto::Config) {
    if let Some(lifetime) = args.channel_lifetime {
        core.lifetimes.channel = lifetime.max(Duration::from_secs(1));
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

fn print_generated(cfg: &RelayConfig, bound: &Bound, password: &str) {
    let host = cfg
        .external_ips
        .first()
        .and_then(|e| config::parse_external_ip(e).ok().map(|(p, _)| p))
        .or_else(|| cfg.relay_ips.first().copied())
        .or_else(|| {
            bound
                .listeners
                .iter()
                .map(|a| a.ip())
                .find(|ip| !ip.is_unspecified())
        })
        .map_or_else(
            || "YOUR-HOST".to_owned(),
            |ip| {
                if ip.is_ipv6() {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                }
            },
        );
    let port = bound.listeners.first().map_or(3478, |a| a.port());
    let ice = serde_json::json!([{
        "urls": [format!("turn:{host}:{port}?transport=udp"), format!("turn:{host}:{port}?transport=tcp")],
        "username": "xdpturn",
        "credential": password,
    }]);
    println!(
        "No credentials configured: generated a user for this run (give --user, --users-file or --auth-secret to choose)."
    );
    println!("  realm:    {}", cfg.realm);
    println!("  username: xdpturn");
    println!("  password: {password}");
    println!("  iceServers: {ice}");
}

/// Attaches the XDP fast path when interfaces are configured. On failure the relay says why
/// once, exports it (`xdpturn_xdp_attached 0`) and serves everything in userspace.
fn load_dataplane(
    cfg: &RelayConfig,
    bound: &Bound,
    metrics: &Metrics,
) -> Option<Arc<relay::dataplane::Dataplane>> {
    use relay::dataplane::{Dataplane, XdpConfig, XdpMode};
    metrics.xdp_attached.set(0);
    if cfg.xdp_interfaces.is_empty() {
        return None;
    }
    let config = XdpConfig {
        interfaces: cfg.xdp_interfaces.clone(),
        mode: cfg.xdp_mode.parse().unwrap_or(XdpMode::Auto),
        max_channels: cfg.xdp_max_channels.max(1),
        listeners: bound.listeners.clone(),
    };
    match Dataplane::load(&config) {
        Ok(dp) => {
            for a in dp.attachments() {
                tracing::info!(
                    interface = %a.interface,
                    mode = a.mode.as_str(),
                    why = a.why.describe(),
                    max_channels = config.max_channels,
                    "XDP fast path attached"
                );
                metrics
                    .xdp_interface_mode
                    .with_label_values(&[a.interface.as_str(), a.mode.as_str(), a.why.as_str()])
                    .set(1);
            }
            metrics.xdp_attached.set(1);
            Some(Arc::new(dp))
        }
        Err(err) => {
            metrics
                .xdp_fallbacks
                .with_label_values(&[err.metric_label()])
                .inc();
            tracing::warn!(error = %err, "XDP fast path unavailable; relaying everything in userspace");
            None
        }
    }
}

/// Feeds what the kernel relayed into the same counters as userspace, labelled
/// `datapath="xdp"`. Frames the attached interfaces dropped meanwhile are counted apart
/// (`xdpturn_xdp_send_failures_total`) and, while the program forwards, taken out of the
/// packet counts (a frame the program sent that the interface dropped did not leave; the
/// counters do not say which way it was going, so each direction gives up its share). An
/// interface that drops more than [`SEND_FAILURES_TOLERATED`] frames in a second, and more
/// than a tenth of what the program forwarded, has a mode whose frames do not arrive (native
/// XDP on a veth whose other end runs none): it loses the fast path, and its traffic is
/// relayed in userspace from then on.
async fn export_xdp_counters(dp: Arc<relay::dataplane::Dataplane>, metrics: Arc<Metrics>) {
    use relay::metrics::{Datapath, Direction};
    use relay::proto::Transport;
    // totals(): a fixed handful of syscalls, whatever the number of channels.
    let mut last = relay::dataplane::Totals::default();
    let mut drops_before = dp.interface_drops();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(now) = dp.totals() else { continue };
        let forwarded = now.client_to_peer.since(last.client_to_peer).packets
            + now.peer_to_client.since(last.peer_to_client).packets;
        let mut failed_now = 0u64;
        let drops = dp.interface_drops();
        for (index, (count, before)) in drops.iter().zip(&drops_before).enumerate() {
            let (Some(count), Some(before)) = (count, before) else {
                continue;
            };
            let new = count.saturating_sub(*before);
            let Some(a) = dp.attachments().get(index) else {
                continue;
            };
            // Drops while the program forwards nothing are not its.
            if new == 0 || forwarded == 0 {
                continue;
            }
            failed_now += new;
            metrics
                .xdp_send_failures
                .with_label_values(&[a.interface.as_str()])
                .inc_by(new);
            if new > SEND_FAILURES_TOLERATED && new * 10 > forwarded {
                match dp.detach(index) {
                    Ok(true) => {
                        tracing::error!(
                            interface = %a.interface,
                            mode = a.mode.as_str(),
                            dropped = new,
                            forwarded,
                            "XDP sends on this interface fail (its frames do not leave): the \
                             fast path is off it from now on, and its traffic is relayed in \
                             userspace; try another --xdp-mode"
                        );
                        metrics
                            .xdp_fallbacks
                            .with_label_values(&["send_failures"])
                            .inc();
                        metrics
                            .xdp_interface_mode
                            .with_label_values(&[
                                a.interface.as_str(),
                                a.mode.as_str(),
                                a.why.as_str(),
                            ])
                            .set(0);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        err = %e,
                        interface = %a.interface,
                        "taking the fast path off an interface whose sends fail"
                    ),
                }
            }
        }
        drops_before = drops;
        let failed_now = failed_now.min(forwarded);
        for (dir, cur, prev) in [
            (
                Direction::ClientToPeer,
                now.client_to_peer,
                last.client_to_peer,
            ),
            (
                Direction::PeerToClient,
                now.peer_to_client,
                last.peer_to_client,
            ),
        ] {
            let d = cur.since(prev);
            // The failed frames did not leave: taken out of each direction in proportion to
            // its share of what the program forwarded in this second (the drop counters do not
            // say which way a frame was going).
            let failed = if forwarded == 0 {
                0
            } else {
                (u128::from(failed_now) * u128::from(d.packets) / u128::from(forwarded)) as u64
            };
            let r = metrics.relayed(Datapath::Xdp, Transport::Udp, dir);
            r.packets.inc_by(d.packets.saturating_sub(failed));
            r.bytes.inc_by(d.bytes);
        }
        for ((kind, cur), prev) in relay::dataplane::MessageKind::ALL
            .iter()
            .zip(now.kinds)
            .zip(last.kinds)
        {
            for (direction, cur, prev) in [
                ("client_to_peer", cur.client_to_peer, prev.client_to_peer),
                ("peer_to_client", cur.peer_to_client, prev.peer_to_client),
            ] {
                metrics
                    .xdp_forwarded
                    .with_label_values(&[kind.as_str(), direction])
                    .inc_by(cur.since(prev).packets);
            }
        }
        last = now;
    }
}

/// Frames an interface may fail to send in a second before it loses the fast path (with more
/// than a tenth of what the program forwarded): a full ring drops a few now and then; a mode
/// whose frames do not arrive drops them all.
const SEND_FAILURES_TOLERATED: u64 = 20;

fn is_unspecified_v6(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(ip) if ip.is_unspecified())
}

fn is_no_ipv6(err: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) when the kernel has no IPv6; EADDRNOTAVAIL when it is disabled.
    err.kind() == std::io::ErrorKind::AddrNotAvailable || err.raw_os_error() == Some(97)
}
