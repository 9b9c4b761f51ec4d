//! coturn's user database, read by the relay (`--userdb FILE`, `--psql-userdb CONN`,
//! `--mysql-userdb CONN` or `--redis-userdb CONN`, one of them at a time): long-term users
//! (`turnusers_lt`), REST shared secrets (`turn_secret`), realm options (`turn_realm_option`:
//! max-bps, user-quota, total-quota) and allowed and denied peer ranges, as coturn's
//! `turnadmin` writes them, for the relay's realm (in Redis, the same things in Redis keys).
//!
//! Never on the packet path, never a single point of failure:
//!
//! - **Realm data** (secrets, options, peer ranges: a handful of rows) is read at start-up and
//!   then every [`POLL`]; a change is merged into the configuration the workers use, as a reload
//!   of the config file is (`serve/supervise.rs`, `config::build_with`). When a read fails the
//!   last one read stays in force.
//! - **Users** are looked up one by one, through [`cache::Cache`]: found users are served from
//!   memory and refreshed in the background once older than a few seconds (the old key keeps
//!   serving meanwhile, and keeps serving if the database does not answer); users not found are
//!   refused from memory for a few seconds. A lookup of a name the cache holds no key for
//!   starts only within a budget (a burst, then a rate) and a bounded number of entries, so a
//!   flood of Allocates with random usernames makes a bounded number of queries (refreshes are
//!   bounded by the number of users found); past the budget such requests are dropped (counted as
//!   `userdb_busy`), and the client's retransmission finds the budget refilled.
//! - **The auth path does not wait.** A worker authenticates synchronously
//!   ([`crate::proto::auth::AuthConfig::authenticate`]); it asks [`UserDb`] (a
//!   [`UserSource`]), which answers from the cache at once. A client's first request carries no
//!   credentials and is answered 401 with a nonce; the user is first named in the second. If
//!   the cache has nothing for that name, the core answers [`Command::AwaitUser`]: the worker
//!   copies the request and parks it in a task of its own (bounded per worker), which waits for
//!   that lookup (bounded in time) and then hands the same request to the core again, which now
//!   answers from the cache. The worker goes on with other packets meanwhile; a TCP or TLS
//!   client is answered on its connection like any other reply. Existing allocations never
//!   wait on the database: their Refresh, CreatePermission and ChannelBind authenticate against
//!   the cached key (refreshed in the background, kept while the database does not answer); a
//!   user deleted by `turnadmin` is refused at its allocation's next request.
//! - **Down**: when a query fails the relay says so once in its log, sets `xdpturn_userdb_up`
//!   to 0 and `/readyz` says `userdb: down`; the relay stays ready. The periodic read notices
//!   when the database answers again.
//!
//! [`Command::AwaitUser`]: crate::proto::Command::AwaitUser
//!
//! `backend` is the trait a database implements, `sqlite` coturn's default database, `server`
//! its PostgreSQL and MySQL ones (`conninfo` parses coturn's connection strings for them), `sql`
//! the queries these three make, `redis` its Redis database, `realm` parses what they read,
//! `cache` is the cache and the lookup budget. `admin` is the write side, `xdpturn-relay
//! admin` (coturn's `turnadmin`): never used by the serving relay, whose sessions stay
//! read-only.

pub mod admin;
pub mod backend;
pub mod cache;
pub mod conninfo;
pub mod realm;
pub mod redis;
pub mod server;
pub mod sql;
pub mod sqlite;
pub mod statsdb;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use api::RelayConfig;

use crate::metrics::Metrics;
use crate::proto::auth::{Lookup, UserSource};
use backend::{Backend, BackendError};
use cache::{Answer, Cache, Limits};
pub use realm::RealmData;

/// How often the realm's secrets, options and peer ranges are read (and the database's health
/// checked without traffic).
pub const POLL: Duration = Duration::from_secs(2);
/// Lookups queued for the database task at most.
const QUEUE: usize = 1024;

/// Which user database the configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `userdb`: coturn's SQLite file.
    Sqlite(PathBuf),
    /// `psql-userdb`: a PostgreSQL connection string.
    Postgres(String),
    /// `mysql-userdb`: a MySQL/MariaDB connection string.
    MySql(String),
    /// `redis-userdb`: a Redis connection string, parsed (it needs no runtime to be).
    Redis(redis::ConnSpec),
}

impl Source {
    /// The user database `cfg` names, if any; more than one is an error (coturn reads one, and
    /// a second would otherwise be silently unread), and so is a Redis connection string that
    /// cannot be read.
    pub fn from_config(cfg: &RelayConfig) -> Result<Option<Source>, String> {
        let redis = cfg
            .redis_userdb
            .as_deref()
            .map(|conn| redis::ConnSpec::parse(conn).map_err(|e| format!("redis-userdb: {e}")))
            .transpose()?;
        let given: Vec<(&str, Source)> = [
            cfg.userdb.clone().map(|p| ("userdb", Source::Sqlite(p))),
            cfg.psql_userdb
                .clone()
                .map(|c| ("psql-userdb", Source::Postgres(c))),
            cfg.mysql_userdb
                .clone()
                .map(|c| ("mysql-userdb", Source::MySql(c))),
            redis.map(|c| ("redis-userdb", Source::Redis(c))),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[_; 1]>::try_from(given) {
            Ok([(_, source)]) => Ok(Some(source)),
            Err(given) if given.is_empty() => Ok(None),
            Err(given) => Err(format!(
                "one user database at a time: {} are all given",
                given
                    .iter()
                    .map(|(key, _)| *key)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The user database as the relay uses it: a backend behind the cache.
#[derive(Debug)]
pub struct UserDb {
    realm: String,
    backend: Arc<dyn Backend>,
    cache: Mutex<Cache>,
    /// Names to look up, to the lookup task (`start`).
    queue: mpsc::Sender<String>,
    queued: Mutex<Option<mpsc::Receiver<String>>>,
    /// The realm data last read (None before the first read succeeds).
    realm_data: watch::Sender<Option<Arc<RealmData>>>,
    metrics: Arc<Metrics>,
    /// 0 not yet known, 1 up, 2 down: what was last said in the log.
    state: AtomicU8,
}

impl UserDb {
    /// coturn's SQLite database at `path`, for `realm`.
    pub fn sqlite(path: &Path, realm: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::new(
            Arc::new(sqlite::Sqlite::new(path)),
            realm,
            metrics,
            Limits::default(),
        )
    }

    /// The user database `source` names, for `realm`; an error says what is wrong with its
    /// connection string (nothing is connected yet). Must be called within a Tokio runtime.
    pub fn open(source: &Source, realm: &str, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        let backend: Arc<dyn Backend> = match source {
            Source::Sqlite(path) => Arc::new(sqlite::Sqlite::new(path)),
            Source::Postgres(conn) => {
                Arc::new(server::Server::postgres(conn).map_err(|e| format!("psql-userdb: {e}"))?)
            }
            Source::MySql(conn) => {
                Arc::new(server::Server::mysql(conn).map_err(|e| format!("mysql-userdb: {e}"))?)
            }
            Source::Redis(conn) => Arc::new(redis::Redis::new(conn.clone())),
        };
        Ok(Self::new(backend, realm, metrics, Limits::default()))
    }

    pub fn new(
        backend: Arc<dyn Backend>,
        realm: &str,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Arc<Self> {
        let (queue, queued) = mpsc::channel(QUEUE);
        metrics.userdb_configured.set(1);
        Arc::new(Self {
            realm: realm.to_owned(),
            backend,
            cache: Mutex::new(Cache::new(limits, Instant::now())),
            queue,
            queued: Mutex::new(Some(queued)),
            realm_data: watch::channel(None).0,
            metrics,
            state: AtomicU8::new(0),
        })
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Starts the lookup task and the periodic read on the current runtime.
    pub fn start(self: &Arc<Self>) {
        let queued = self.queued.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut queued) = queued {
            let db = self.clone();
            tokio::spawn(async move {
                while let Some(name) = queued.recv().await {
                    let db = db.clone();
                    // The pool bounds the queries under way; the cache, how many there are.
                    tokio::spawn(async move { db.look_up(&name).await });
                }
            });
        }
        let db = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                db.read_realm().await;
            }
        });
    }

    /// Reads the realm's secrets, options and peer ranges; publishes them if they changed.
    /// False if the database did not answer (what was read before stays).
    pub async fn read_realm(&self) -> bool {
        match self.backend.realm(&self.realm).await {
            Ok(rows) => {
                self.count("realm", "ok");
                self.report(None);
                let (data, problems) = RealmData::from_rows(&rows);
                let data = Arc::new(data);
                let changed = self.realm_data.send_if_modified(|old| {
                    if old.as_deref() == Some(&*data) {
                        return false;
                    }
                    *old = Some(data.clone());
                    true
                });
                if changed {
                    if !problems.is_empty() {
                        tracing::warn!(
                            database = %self.describe(),
                            realm = %self.realm,
                            ignored = ?problems,
                            "user database rows that could not be read"
                        );
                    }
                    tracing::info!(
                        realm = %self.realm,
                        secrets = data.secrets.len(),
                        user_quota = ?data.user_quota,
                        total_quota = ?data.total_quota,
                        max_bps = ?data.max_bps,
                        allowed_peers = data.allowed.len(),
                        denied_peers = data.denied.len(),
                        "user database: realm read"
                    );
                }
                true
            }
            Err(err) => {
                self.count("realm", "error");
                self.report(Some(&err));
                false
            }
        }
    }

    /// The realm data as read last, and its changes.
    pub fn realm_data(&self) -> watch::Receiver<Option<Arc<RealmData>>> {
        self.realm_data.subscribe()
    }

    /// Something that turns true once the lookup of `name` under way ends (None: none is).
    pub fn waiter(&self, name: &str) -> Option<watch::Receiver<bool>> {
        self.cache().waiter(name)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn look_up(&self, name: &str) {
        let result = match self.backend.user_key(&self.realm, name).await {
            Ok(Some(text)) => {
                self.report(None);
                match realm::parse_hmackey(&text) {
                    Some(key) => {
                        self.count("user", "found");
                        Ok(Some(key))
                    }
                    None => {
                        self.count("user", "found");
                        tracing::warn!(
                            user = name,
                            "user database: hmackey is not 32 hex digits; user refused"
                        );
                        Ok(None)
                    }
                }
            }
            Ok(None) => {
                self.report(None);
                self.count("user", "absent");
                Ok(None)
            }
            Err(err) => {
                self.count("user", "error");
                self.report(Some(&err));
                Err(())
            }
        };
        self.cache().finish(name, result, Instant::now());
    }

    fn count(&self, query: &str, result: &str) {
        self.metrics
            .userdb_queries
            .with_label_values(&[query, result])
            .inc();
    }

    /// Logs a change between answering and not, once per change, and sets the gauge.
    fn report(&self, err: Option<&BackendError>) {
        let now = if err.is_some() { 2 } else { 1 };
        self.metrics.userdb_up.set(i64::from(now == 1));
        let before = self.state.swap(now, Ordering::AcqRel);
        match (before, err) {
            (b, Some(err)) if b != 2 => tracing::error!(
                database = %self.describe(),
                error = %err,
                "user database unavailable; serving with what was last read"
            ),
            (2, None) => tracing::info!(database = %self.describe(), "user database answers again"),
            (0, None) => {
                tracing::info!(database = %self.describe(), realm = %self.realm, "user database open")
            }
            _ => {}
        }
    }
}

impl UserSource for UserDb {
    fn lookup(&self, username: &str) -> Lookup {
        let answer = self.cache().answer(username, Instant::now());
        let ask = |db: &Self| {
            if db.queue.try_send(username.to_owned()).is_err() {
                // The task is behind by a full queue: give up this lookup.
                db.cache().finish(username, Err(()), Instant::now());
                return false;
            }
            true
        };
        match answer {
            Answer::Key { key, refresh } => {
                if refresh {
                    ask(self);
                }
                Lookup::Key(key)
            }
            Answer::Absent => Lookup::Absent,
            Answer::Pending => Lookup::Pending,
            Answer::Lookup => {
                if ask(self) {
                    Lookup::Pending
                } else {
                    Lookup::Busy
                }
            }
            Answer::Busy => Lookup::Busy,
        }
    }
}
