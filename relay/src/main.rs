//! `xdpturn-relay`: the STUN/TURN server, and the credential tools coturn users know from
//! `turnadmin`.

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use api::RelayConfig;
use api::flags::parse_ttl;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use relay::config::{self, Bound};
use relay::eventloop::{self, Control, RelayPorts, Shared};
use relay::metrics::Metrics;
use relay::proto::Ledger;
use relay::serve::{
    Live, ServeArgs, Watch, attach_when_free, export_xdp_counters, handover, load_config,
    load_dataplane, parse_uri, set_test_lifetimes, supervise,
};
use relay::userdb::{self, UserDb};
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
/// change on disk; coturn's user database, --userdb, is followed as it changes) without dropping
/// allocations; a bad reload is refused and the old
/// configuration stays. SIGTERM drains: no new allocations, existing ones served until they end
/// or --drain-timeout; a second SIGTERM exits at once.
///
/// A relay started on the ports another relay of the same user holds on this host (a pod
/// replacing another with hostNetwork) takes them over without moving a client: the old relay
/// keeps serving its allocations, drains, and leaves new clients and the metrics port to the
/// new one; it exits on SIGTERM once its allocations have ended.
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
    /// Manage coturn's user database as coturn's `turnadmin` does: long-term users, REST shared
    /// secrets and realm options, on the database the relay reads (--userdb FILE,
    /// --psql-userdb CONN, --mysql-userdb CONN or --redis-userdb CONN, one of them).
    ///
    /// What it writes is coturn's layout exactly (the tables of coturn's schema.sql, the Redis
    /// keys of schema.userdb.redis): turnadmin lists what this writes, this lists what turnadmin
    /// writes, and a relay of either kind reading the database serves it; a running xdpturn
    /// relay sees a change within seconds. The operations and their flags are turnadmin's
    /// (-a, -d, -l, -s, -S, -X, -g, -G; -u, -r, -p; -b, -e, -M, -N), and so is what the lists
    /// print (name[realm], secret[realm], opt[realm]=value or, from Redis, realm/opt = value).
    /// Passwords and keys are never printed.
    ///
    /// Examples:
    ///   xdpturn-relay admin -a -u alice -r example.org -p wonderland --userdb /var/lib/turn/turndb
    ///   xdpturn-relay admin -l --redis-userdb "ip=127.0.0.1 dbname=0 password=..."
    ///   xdpturn-relay admin -g -r example.org --user-quota 10 --psql-userdb "host=db dbname=coturn"
    #[command(verbatim_doc_comment)]
    Admin(Box<AdminArgs>),
    /// Wait --delay seconds, then exit: the relay pod's preStop hook (a minimal image has no
    /// shell and no `sleep`), run while kube-proxy and load balancers stop sending new clients.
    #[command(hide = true)]
    PreStop(PreStopArgs),
}

#[derive(Debug, Args)]
struct PreStopArgs {
    /// Seconds to wait; 0 returns at once.
    #[arg(long, default_value_t = 0)]
    delay: u64,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("operation").required(true).multiple(false)))]
struct AdminArgs {
    /// Add a long-term user, or change its password: --user, --realm and --password; stored as
    /// coturn stores it, hmackey = MD5(user:realm:password) in hex [turnadmin: -a].
    #[arg(short = 'a', long, group = "operation")]
    add: bool,
    /// Delete a long-term user: --user and --realm [turnadmin: -d].
    #[arg(short = 'd', long, group = "operation")]
    delete: bool,
    /// List the long-term users, of --realm if given, as name[realm] [turnadmin: -l].
    #[arg(short = 'l', long, group = "operation")]
    list: bool,
    /// Add a REST shared secret to --realm (any of a realm's secrets validates, so secrets
    /// rotate by adding the new one, then deleting the old) [turnadmin: -s].
    #[arg(
        short = 's',
        long = "set-secret",
        value_name = "SECRET",
        group = "operation"
    )]
    set_secret: Option<String>,
    /// List the REST shared secrets, of --realm if given, as secret[realm] [turnadmin: -S].
    #[arg(short = 'S', long = "show-secret", group = "operation")]
    show_secret: bool,
    /// Delete one REST shared secret of --realm [turnadmin: -X].
    #[arg(
        short = 'X',
        long = "delete-secret",
        value_name = "SECRET",
        group = "operation"
    )]
    delete_secret: Option<String>,
    /// Delete every REST shared secret of --realm [turnadmin: --delete-all-secrets].
    #[arg(long = "delete-all-secrets", group = "operation")]
    delete_all_secrets: bool,
    /// Set options of --realm: --max-bps, --user-quota, --total-quota; 0 removes one (the
    /// relay's own setting applies again) [turnadmin: -g].
    #[arg(short = 'g', long = "set-realm-option", group = "operation")]
    set_realm_option: bool,
    /// List the realm options, of --realm if given [turnadmin: -G].
    #[arg(short = 'G', long = "list-realm-options", group = "operation")]
    list_realm_options: bool,

    /// User name [turnadmin: -u].
    #[arg(short, long)]
    user: Option<String>,
    /// Realm: required to change anything, a filter for the lists [turnadmin: -r].
    #[arg(short, long, env = "XDPTURN_REALM")]
    realm: Option<String>,
    /// Password, for --add. Prefer XDPTURN_PASSWORD: command lines are visible to others
    /// [turnadmin: -p].
    #[arg(short, long, env = "XDPTURN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The realm's bandwidth per allocation, bytes per second, for --set-realm-option; 0
    /// removes it [turnadmin: --max-bps].
    #[arg(long, value_name = "N")]
    max_bps: Option<u64>,
    /// The realm's allocations per user, for --set-realm-option; 0 removes it [turnadmin:
    /// --user-quota].
    #[arg(long, value_name = "N")]
    user_quota: Option<u64>,
    /// The realm's allocations in total, for --set-realm-option; 0 removes it [turnadmin:
    /// --total-quota].
    #[arg(long, value_name = "N")]
    total_quota: Option<u64>,

    /// coturn's SQLite database, created with coturn's schema by --add, --set-secret and
    /// --set-realm-option when it is not there [turnadmin: -b, --db, --userdb].
    #[arg(
        short = 'b',
        long,
        visible_alias = "db",
        env = "XDPTURN_USERDB",
        value_name = "FILE"
    )]
    userdb: Option<std::path::PathBuf>,
    /// coturn's database on PostgreSQL: "host=H dbname=D user=U password=P port=N" (libpq's
    /// form) or postgresql://U:P@H:N/D, as the relay's --psql-userdb. Prefer the variable:
    /// command lines are visible to others [turnadmin: -e, --psql-userdb].
    #[arg(
        short = 'e',
        long = "psql-userdb",
        visible_alias = "sql-userdb",
        env = "XDPTURN_PSQL_USERDB",
        value_name = "CONN",
        hide_env_values = true
    )]
    psql_userdb: Option<String>,
    /// coturn's database on MySQL/MariaDB: "host=H dbname=D user=U password=P port=N" (coturn's
    /// form) or mysql://U:P@H:N/D, as the relay's --mysql-userdb. Prefer the variable
    /// [turnadmin: -M, --mysql-userdb].
    #[arg(
        short = 'M',
        long = "mysql-userdb",
        env = "XDPTURN_MYSQL_USERDB",
        value_name = "CONN",
        hide_env_values = true
    )]
    mysql_userdb: Option<String>,
    /// coturn's database on Redis: "ip=A port=N dbname=N password=P" (coturn's form) or
    /// redis://[:P@]HOST[:PORT][/DB], as the relay's --redis-userdb. Prefer the variable
    /// [turnadmin: -N, --redis-userdb].
    #[arg(
        short = 'N',
        long = "redis-userdb",
        env = "XDPTURN_REDIS_USERDB",
        value_name = "CONN",
        hide_env_values = true
    )]
    redis_userdb: Option<String>,
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
        Some(Command::Admin(args)) => admin(&args),
        Some(Command::PreStop(args)) => {
            std::thread::sleep(Duration::from_secs(args.delay));
            Ok(())
        }
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

/// One `admin` operation, its arguments checked (before anything is connected).
#[derive(Debug)]
enum Operation<'a> {
    AddUser {
        realm: &'a str,
        user: &'a str,
        password: &'a str,
    },
    DeleteUser {
        realm: &'a str,
        user: &'a str,
    },
    ListUsers(Option<&'a str>),
    AddSecret {
        realm: &'a str,
        secret: &'a str,
    },
    ShowSecrets(Option<&'a str>),
    DeleteSecrets {
        realm: &'a str,
        secret: Option<&'a str>,
    },
    SetOptions {
        realm: &'a str,
        values: Vec<(&'static str, u64)>,
    },
    ListOptions(Option<&'a str>),
}

impl<'a> Operation<'a> {
    fn from_args(args: &'a AdminArgs) -> anyhow::Result<Self> {
        let realm = || {
            args.realm
                .as_deref()
                .filter(|r| !r.is_empty())
                .context("the realm must be set (--realm, -r, or XDPTURN_REALM)")
        };
        let user = || {
            args.user
                .as_deref()
                .filter(|u| !u.is_empty())
                .context("the user must be set (--user, -u)")
        };
        let listed = args.realm.as_deref().filter(|r| !r.is_empty());
        Ok(if args.add {
            Operation::AddUser {
                realm: realm()?,
                user: user()?,
                password: args
                    .password
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .context("the password must be set (--password, -p, or XDPTURN_PASSWORD)")?,
            }
        } else if args.delete {
            Operation::DeleteUser {
                realm: realm()?,
                user: user()?,
            }
        } else if args.list {
            Operation::ListUsers(listed)
        } else if let Some(secret) = &args.set_secret {
            if secret.is_empty() {
                bail!("the secret must not be empty");
            }
            Operation::AddSecret {
                realm: realm()?,
                secret,
            }
        } else if args.show_secret {
            Operation::ShowSecrets(listed)
        } else if let Some(secret) = &args.delete_secret {
            Operation::DeleteSecrets {
                realm: realm()?,
                secret: Some(secret),
            }
        } else if args.delete_all_secrets {
            Operation::DeleteSecrets {
                realm: realm()?,
                secret: None,
            }
        } else if args.set_realm_option {
            let values: Vec<_> = userdb::admin::REALM_OPTIONS
                .into_iter()
                .zip([args.max_bps, args.user_quota, args.total_quota])
                .filter_map(|(opt, value)| Some((opt, value?)))
                .collect();
            if values.is_empty() {
                bail!("give the options to set: --max-bps, --user-quota, --total-quota");
            }
            Operation::SetOptions {
                realm: realm()?,
                values,
            }
        } else {
            Operation::ListOptions(listed)
        })
    }

    /// Whether it creates a SQLite database that is not there (as turnadmin's writes do).
    fn creates(&self) -> bool {
        matches!(
            self,
            Operation::AddUser { .. } | Operation::AddSecret { .. } | Operation::SetOptions { .. }
        )
    }

    /// Runs it; lists go to standard output, what was done to standard error.
    async fn run(&self, db: &mut userdb::admin::Admin) -> anyhow::Result<()> {
        use userdb::admin::{option_line, secret_line, user_line};
        match *self {
            Operation::AddUser {
                realm,
                user,
                password,
            } => {
                let key = credentials::key_hex(user, realm, password);
                let key = key.trim_start_matches("0x");
                db.add_user(realm, user, key).await?;
                eprintln!("user {user} in realm {realm}: key stored");
            }
            Operation::DeleteUser { realm, user } => {
                if db.delete_user(realm, user).await? {
                    eprintln!("user {user} in realm {realm}: deleted");
                } else {
                    eprintln!("user {user} in realm {realm}: not there, nothing deleted");
                }
            }
            Operation::ListUsers(realm) => {
                for e in db.users(realm).await? {
                    println!("{}", user_line(&e));
                }
            }
            Operation::AddSecret { realm, secret } => {
                db.add_secret(realm, secret).await?;
                eprintln!("realm {realm}: shared secret added");
            }
            Operation::ShowSecrets(realm) => {
                for e in db.secrets(realm).await? {
                    println!("{}", secret_line(&e));
                }
            }
            Operation::DeleteSecrets { realm, secret } => {
                let n = db.delete_secrets(realm, secret).await?;
                eprintln!("realm {realm}: {n} shared secret(s) deleted");
            }
            Operation::SetOptions { realm, ref values } => {
                for &(opt, value) in values {
                    db.set_option(realm, opt, value).await?;
                    if value == 0 {
                        eprintln!("realm {realm}: {opt} removed");
                    } else {
                        eprintln!("realm {realm}: {opt} = {value}");
                    }
                }
            }
            Operation::ListOptions(realm) => {
                let redis = db.is_redis();
                for e in db.options(realm).await? {
                    println!("{}", option_line(&e, redis));
                }
            }
        }
        Ok(())
    }
}

/// `xdpturn-relay admin`: one operation on the user database the arguments name.
fn admin(args: &AdminArgs) -> anyhow::Result<()> {
    let op = Operation::from_args(args)?;
    let named = RelayConfig {
        userdb: args.userdb.clone(),
        psql_userdb: args.psql_userdb.clone(),
        mysql_userdb: args.mysql_userdb.clone(),
        redis_userdb: args.redis_userdb.clone(),
        ..RelayConfig::default()
    };
    let source = userdb::Source::from_config(&named)
        .map_err(|e| anyhow::anyhow!(e))?
        .context(
            "no user database: give one of --userdb FILE, --psql-userdb CONN, \
             --mysql-userdb CONN, --redis-userdb CONN (or their XDPTURN_ variables)",
        )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut db = userdb::admin::Admin::open(&source, op.creates())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let result = op.run(&mut db).await;
        for note in &db.notes {
            eprintln!("note: {note}");
        }
        result.with_context(|| db.describe().to_owned())
    })
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

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b);
    b
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let metrics = Arc::new(Metrics::new().context("creating metrics")?);
    // coturn's user database: its realm is read once before serving (secrets, options, peer
    // ranges); a database that does not answer is reported and the relay starts without it,
    // following it once it answers (userdb/).
    let source = userdb::Source::from_config(&cfg)
        .map_err(|e| anyhow::anyhow!(e))
        .context("invalid configuration")?;
    let userdb = source
        .map(|source| {
            runtime.block_on(async {
                let db = UserDb::open(&source, &cfg.realm, metrics.clone())?;
                db.read_realm().await;
                db.start();
                Ok::<_, String>(db)
            })
        })
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))
        .context("invalid configuration")?;
    // A relay on these ports of this host is one this relay replaces (serve/handover.rs): it
    // keeps serving everything until this one is ready to, short of its ports.
    let successor = cfg
        .listen
        .first()
        .and_then(|addr| handover::connect(addr.port()));
    // The XDP program takes the kernel's verifier a second or two: where the listeners' ports
    // are known before binding (all but port 0), it is loaded before this relay takes any port
    // over, so that the ports are never held by a relay that is not reading them. The relay
    // it replaces has its program on the interfaces until then: they wait for it.
    let mut dataplane = cfg
        .listen
        .iter()
        .all(|addr| addr.port() != 0)
        .then(|| load_dataplane(&cfg, &cfg.listen, successor.is_some(), &metrics));
    // The relay this one replaces first gives its clients sockets of their own, so that
    // binding beside it moves none of them; it closes its listeners once this one serves its
    // own.
    let predecessor = successor.and_then(handover::Successor::ask);
    // Bind everything first: a port in use is a start-up error, not a surprise later.
    let mut listeners = Vec::new();
    for &addr in &cfg.listen {
        match eventloop::bind(addr, workers) {
            Ok(set) => {
                tracing::info!(
                    udp = %set.addr,
                    tcp = %set.addr,
                    workers,
                    udp_recv_buffer = set.udp_recv_buffer / 2,
                    "listening"
                );
                if set.udp_recv_buffer < 2 * eventloop::UDP_RECV_BUFFER {
                    tracing::warn!(
                        got = set.udp_recv_buffer / 2,
                        asked = eventloop::UDP_RECV_BUFFER,
                        "the kernel caps the UDP receive buffer (net.core.rmem_max) and this \
                         process may not go past it (no CAP_NET_ADMIN): datagrams that arrive \
                         while a worker is off the CPU are dropped once that much is queued; \
                         raise net.core.rmem_max or grant CAP_NET_ADMIN"
                    );
                }
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
    let http = runtime
        .block_on(http::bind(cfg.metrics_listen))
        .with_context(|| {
            format!(
                "binding the metrics listener on {} (set --metrics-listen)",
                cfg.metrics_listen
            )
        })?;
    let http_addr = http.local_addr()?;

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
    let mut core = config::build_with(&cfg, &bound, nonce_key, userdb.as_ref())
        .context("invalid configuration")?;
    set_test_lifetimes(&args, &mut core);
    let api = Arc::new(http::Api::new(
        config::build_api(&cfg, &core).context("invalid configuration")?,
    ));
    if let Some(password) = &generated {
        print_generated(&cfg, &bound, password);
    }

    let mut control = Control::new(Arc::new(core));
    if let Some(certs) = certs {
        control = control.with_tls(certs);
    }
    let control = Arc::new(control);
    let ledger = Arc::new(Ledger::default());
    let dataplane = dataplane
        .take()
        .unwrap_or_else(|| load_dataplane(&cfg, &bound.listeners, false, &metrics));
    let usage = match &cfg.redis_statsdb {
        Some(conn) => {
            let _runtime = runtime.enter();
            Some(
                userdb::statsdb::start(conn, &cfg.realm, metrics.clone())
                    .map_err(anyhow::Error::msg)
                    .context("invalid configuration")?,
            )
        }
        None => None,
    };
    let shared = Shared {
        usage,
        control: control.clone(),
        ledger: ledger.clone(),
        metrics: metrics.clone(),
        ports: Arc::new(RelayPorts::new(cfg.min_port, cfg.max_port)),
        held: Arc::default(),
        tcp_pending: Arc::default(),
        tcp_spliced: Arc::default(),
        dataplane: dataplane.clone(),
        local_relays: Arc::default(),
        userdb: userdb.clone(),
        admission: Arc::default(),
        clock: (
            Instant::now(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
    };
    // What the reload watches is read before the first client is served.
    let watch = Watch::new(&args, &cfg);
    let threads =
        eventloop::start(listeners, tls_listeners, workers, shared).context("starting workers")?;
    metrics.ready.set(1);
    let http_stop = Arc::new(tokio::sync::Notify::new());
    let http_task = runtime.spawn(http::serve(
        http,
        metrics.clone(),
        api.clone(),
        args.revision.as_deref().map(Arc::from),
        http_stop.clone(),
    ));
    tracing::info!(metrics = %http_addr, "serving /metrics /healthz /readyz");
    // Only now, with the workers reading every listener and the HTTP listener answering
    // probes, may the relay this one replaces close its own.
    if let Some(predecessor) = predecessor {
        predecessor.listeners_bound();
    }
    let handover_port = bound.listeners[0].port();
    let handover_socket = handover::claim(handover_port)
        .inspect_err(|err| {
            tracing::warn!(%err, "cannot take the hand-over socket; a relay replacing this one will move its clients")
        })
        .ok();

    let result = runtime.block_on(async {
        let handover_task = handover_socket.map(|socket| {
            tokio::spawn(handover::serve(
                socket,
                handover_port,
                handover::Handing {
                    control: control.clone(),
                    metrics: metrics.clone(),
                    listeners: bound.listeners.clone(),
                    http_stop,
                    dataplane: dataplane.clone(),
                },
            ))
        });
        let xdp_task = dataplane
            .clone()
            .map(|dp| tokio::spawn(export_xdp_counters(dp, metrics.clone())));
        let attach_task = dataplane
            .clone()
            .map(|dp| tokio::spawn(attach_when_free(dp, metrics.clone())));
        let live = Live {
            control: &control,
            api: &api,
            userdb: userdb.as_ref(),
        };
        supervise(
            &args, cfg, watch, &bound, nonce_key, &live, &ledger, &metrics,
        )
        .await;
        http_task.abort();
        if let Some(t) = handover_task {
            t.abort();
        }
        if let Some(t) = xdp_task {
            t.abort();
        }
        if let Some(t) = attach_task {
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

fn is_unspecified_v6(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(ip) if ip.is_unspecified())
}

fn is_no_ipv6(err: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) when the kernel has no IPv6; EADDRNOTAVAIL when it is disabled.
    err.kind() == std::io::ErrorKind::AddrNotAvailable || err.raw_os_error() == Some(97)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command};

    /// The command line the operator gives the relay pod's preStop hook parses.
    #[test]
    fn pre_stop_parses() {
        let cli = Cli::try_parse_from(["xdpturn-relay", "pre-stop", "--delay", "5"]);
        assert!(
            matches!(cli, Ok(Cli { command: Some(Command::PreStop(ref a)), .. }) if a.delay == 5),
            "{cli:?}"
        );
        let cli = Cli::try_parse_from(["xdpturn-relay", "pre-stop", "--delay", "0"]);
        assert!(
            matches!(cli, Ok(Cli { command: Some(Command::PreStop(ref a)), .. }) if a.delay == 0),
            "{cli:?}"
        );
        assert!(Cli::try_parse_from(["xdpturn-relay", "pre-stop", "--delay", "-1"]).is_err());
    }
}
