//! coturn's Redis user database (`--redis-userdb`, as `turnadmin -N` writes it; the layout is
//! Debian's `/usr/share/coturn/schema.userdb.redis`), read only, for one realm:
//!
//! | key | type | written by |
//! | --- | --- | --- |
//! | `turn/realm/<realm>/user/<name>/key` | string: the hmackey, 32 hex digits | `turnadmin -a`, `-d` |
//! | `turn/realm/<realm>/user/<name>/password` | string: an open password | by hand |
//! | `turn/realm/<realm>/secret` | set of REST shared secrets (a string: one) | `turnadmin -s`, `-X` |
//! | `turn/realm/<realm>/allowed-peer-ip`, `denied-peer-ip` | sets of peer ranges | by hand |
//! | `turn/realm/<realm>/max-bps`, `user-quota`, `total-quota` | strings: numbers | `turnadmin -g` |
//!
//! The open password is what coturn's Redis documentation offers besides keys (coturn releases
//! before 4.6 read it when there is no key; 4.6 reads keys only): it is read in the same round
//! trip as the key (`MGET`) and used only when there is no usable key.
//!
//! A user lookup is one `MGET`; a realm read is one pipelined round trip; both are bounded in
//! time as SQLite's queries are. The connection is one multiplexed connection (redis's
//! `ConnectionManager`), made on first use and remade by itself when it breaks; a query that
//! finds it broken is tried once more on the new one, so that a server that is back answers the
//! first query after its return. A server that is down makes each query fail fast (a connection
//! attempt or two, each bounded), and the periodic realm read (`userdb/mod.rs`) notices when it
//! is back. Changes made by `turnadmin` are seen through the cache's short lifetimes and that
//! periodic read, as with SQLite: no keyspace notifications are needed, and the server's
//! settings are left as they are.
//!
//! The connection string is coturn's (`ip=127.0.0.1 dbname=0 password=... port=6379
//! connect_timeout=30`, with coturn's synonyms for each key) or a `redis://` or `unix://` URL.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _, RedisConnectionInfo,
    RedisError, Value,
};

use super::backend::{Backend, BackendError, BoxFuture};
use super::realm::{RealmRows, parse_hmackey};

/// How long a query may take, a connection attempt included (as SQLite's, `sqlite.rs`).
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Redis's port, where the connection string names none (coturn's default too).
const DEFAULT_PORT: u16 = 6379;

/// The key of `what` (`secret`, `max-bps`, ...) of `realm`.
pub(super) fn realm_key(realm: &str, what: &str) -> String {
    format!("turn/realm/{realm}/{what}")
}

/// The keys of user `name` in `realm`: its hmackey and its open password.
pub(super) fn user_keys(realm: &str, name: &str) -> [String; 2] {
    [
        realm_key(realm, &format!("user/{name}/key")),
        realm_key(realm, &format!("user/{name}/password")),
    ]
}

/// The realm options, as their keys name them (and as `RealmRows::options` does).
pub(super) const OPTIONS: [&str; 3] = ["max-bps", "user-quota", "total-quota"];

/// A connection string that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnSpecError {
    #[error(
        "empty: give coturn's \"ip=ADDRESS port=PORT dbname=N password=...\" or a redis:// URL"
    )]
    Empty,
    /// The word itself is not repeated: it may be a piece of a password that holds a space.
    #[error(
        "word {0} is not KEY=VALUE (coturn's form is \"ip=ADDRESS port=PORT dbname=N ...\", \
         words separated by spaces; a value cannot hold a space)"
    )]
    NotKeyValue(usize),
    #[error(
        "unknown key {0:?}: the keys are ip (host, addr, ipaddr, hostaddr), port (p), dbname (db, \
         database), password (pwd, passwd, secret), connect_timeout (timeout), user (ignored, as \
         coturn does)"
    )]
    UnknownKey(String),
    #[error("{key}={value:?}: {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    /// The URL's own error (never the URL: it may hold a password).
    #[error("URL: {0}")]
    Url(String),
}

/// Where the database is and how to log in: coturn's connection string or a URL, parsed.
#[derive(Clone)]
pub struct ConnSpec {
    info: ConnectionInfo,
    /// coturn's `connect_timeout` (seconds; 0 or none: the query's bound).
    connect_timeout: Option<Duration>,
}

impl fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.write_str(&self.describe())
    }
}

impl PartialEq for ConnSpec {
    fn eq(&self, other: &Self) -> bool {
        self.info.addr() == other.info.addr()
            && self.info.redis_settings().db() == other.info.redis_settings().db()
            && self.info.redis_settings().username() == other.info.redis_settings().username()
            && self.info.redis_settings().password() == other.info.redis_settings().password()
            && self.connect_timeout == other.connect_timeout
    }
}

impl Eq for ConnSpec {}

impl ConnSpec {
    /// Parses coturn's connection string (`ip=... dbname=... password=... port=...
    /// connect_timeout=...`, keys separated by spaces, every key optional: 127.0.0.1, port 6379,
    /// database 0, no password) or a `redis://[user:password@]host[:port][/db]` or
    /// `unix:///path[?db=N]` URL.
    pub fn parse(text: &str) -> Result<Self, ConnSpecError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ConnSpecError::Empty);
        }
        if text.contains("://") {
            let info = text
                .into_connection_info()
                .map_err(|err| ConnSpecError::Url(err.to_string()))?;
            return Ok(Self {
                info,
                connect_timeout: None,
            });
        }
        let mut host = "127.0.0.1".to_owned();
        let mut port = DEFAULT_PORT;
        let mut db = 0i64;
        let mut password = None;
        let mut connect_timeout = None;
        for (i, pair) in text.split_whitespace().enumerate() {
            let (key, value) = pair
                .split_once('=')
                .ok_or(ConnSpecError::NotKeyValue(i + 1))?;
            let bad = |expected| ConnSpecError::BadValue {
                key: key.to_owned(),
                value: value.to_owned(),
                expected,
            };
            // coturn's names for each key (dbd_redis.c), so that its strings work as they are.
            match key {
                "ip" | "host" | "addr" | "ipaddr" | "hostaddr" => {
                    if value.is_empty() {
                        return Err(bad("an address or host name"));
                    }
                    host = value.to_owned();
                }
                "port" | "p" => {
                    port = value
                        .parse()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| bad("a port, 1 to 65535"))?;
                }
                "dbname" | "db" | "database" => {
                    db = value
                        .parse()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| bad("a database number, 0 or more"))?;
                }
                "password" | "pwd" | "passwd" | "secret" => {
                    password = (!value.is_empty()).then(|| value.to_owned());
                }
                "connect_timeout" | "timeout" => {
                    let secs: u64 = value.parse().map_err(|_| bad("seconds"))?;
                    connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
                }
                // coturn accepts a user name and ignores it (it logs in with the password alone,
                // as the default user): the same here, so that its strings mean the same.
                "user" | "uname" | "name" | "username" => {}
                other => return Err(ConnSpecError::UnknownKey(other.to_owned())),
            }
        }
        let mut redis = RedisConnectionInfo::default().set_db(db);
        if let Some(password) = password {
            redis = redis.set_password(password);
        }
        let info = ConnectionAddr::Tcp(host, port)
            .into_connection_info()
            .map_err(|err| ConnSpecError::Url(err.to_string()))?
            .set_redis_settings(redis);
        Ok(Self {
            info,
            connect_timeout,
        })
    }

    /// A client for the database (nothing is connected yet).
    pub fn client(&self) -> Result<Client, RedisError> {
        Client::open(self.info.clone())
    }

    /// How long connecting may take: the string's `connect_timeout`, at most [`QUERY_TIMEOUT`].
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
            .map_or(QUERY_TIMEOUT, |t| t.min(QUERY_TIMEOUT))
    }

    /// Where the database is, for the log: address and database number, never the password.
    pub fn describe(&self) -> String {
        let settings = self.info.redis_settings();
        let user = settings
            .username()
            .map(|u| format!(" user {u}"))
            .unwrap_or_default();
        format!("redis {} db {}{user}", self.info.addr(), settings.db())
    }
}

/// The Redis backend.
pub struct Redis {
    spec: ConnSpec,
    /// Made on first use (it needs the runtime), then kept: it reconnects by itself.
    manager: OnceLock<ConnectionManager>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis").field("spec", &self.spec).finish()
    }
}

impl Redis {
    pub fn new(spec: ConnSpec) -> Self {
        Self {
            spec,
            manager: OnceLock::new(),
        }
    }

    fn manager(&self) -> Result<ConnectionManager, BackendError> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let client = self.spec.client().map_err(|e| self.error(e))?;
        let config = ConnectionManagerConfig::new()
            // One attempt per query while the server is away: the query fails at once and the
            // next one (the periodic read at the latest) tries again.
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.spec.connect_timeout()))
            .set_response_timeout(Some(QUERY_TIMEOUT));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| self.error(e))?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }

    /// A client error as the backend's: the server not reached is `Unavailable`.
    fn error(&self, err: RedisError) -> BackendError {
        if err.is_io_error()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_timeout()
        {
            BackendError::Unavailable(err.to_string())
        } else {
            BackendError::from(err)
        }
    }

    /// `query` on the connection (one command or a pipeline), within [`QUERY_TIMEOUT`]. When
    /// the connection is found broken (the server went, or came back since the last attempt
    /// failed), the manager starts a new one and the query is tried once more on it, so that a
    /// server that is back answers the first query after its return.
    async fn query<T, F, Fut>(&self, query: F) -> Result<T, BackendError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempts = async {
            match query(self.manager()?).await {
                Err(err)
                    if err.is_io_error()
                        || err.is_connection_dropped()
                        || err.is_connection_refusal() =>
                {
                    query(self.manager()?).await
                }
                other => other,
            }
            .map_err(|e| self.error(e))
        };
        match tokio::time::timeout(QUERY_TIMEOUT, attempts).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(QUERY_TIMEOUT)),
        }
    }
}

impl Redis {
    /// Runs `pipe` (commands whose replies are ignored), as queries are run: within
    /// [`QUERY_TIMEOUT`], tried once more on a new connection when the old one is found broken.
    /// For the statistics database (`statsdb.rs`).
    pub(super) async fn run(&self, pipe: &::redis::Pipeline) -> Result<(), BackendError> {
        self.query(|mut con| async move { pipe.query_async::<()>(&mut con).await })
            .await
    }
}

/// The stored key text from the `MGET` of [`user_keys`]: the hmackey if it is usable, else the
/// key made from the open password, else whatever the key holds (refused, and said, by
/// `userdb/mod.rs`); None when neither is there.
fn user_key_from(
    realm: &str,
    name: &str,
    key: Option<String>,
    password: Option<String>,
) -> Option<String> {
    match (key, password) {
        (Some(key), _) if parse_hmackey(&key).is_some() => Some(key),
        (_, Some(password)) if !password.is_empty() => Some(
            crate::stun::long_term_key_md5(name, realm, &password)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ),
        (key, _) => key,
    }
}

/// The replies to the realm pipeline ([`Backend::realm`]) as rows: `SMEMBERS secret`,
/// `GET secret`, `SMEMBERS allowed-peer-ip`, `SMEMBERS denied-peer-ip`, `MGET` of [`OPTIONS`].
/// The secret is read both ways because it may be a set (coturn's schema, `turnadmin -s`) or a
/// string holding one: the way that does not fit answers WRONGTYPE. Any other error, or a key of
/// another type, is the read's error, naming the key (what was read before stays in force).
fn realm_rows(realm: &str, replies: Vec<Value>) -> Result<RealmRows, BackendError> {
    let [secret_set, secret_string, allowed, denied, options]: [Value; 5] =
        replies.try_into().map_err(|replies: Vec<Value>| {
            BackendError::Query(format!("{} replies to 5 commands", replies.len()).into())
        })?;
    let secrets = if matches!(&secret_set, Value::ServerError(e) if e.code() == "WRONGTYPE") {
        // Not a set: a string (or a third type, which GET refuses too).
        reply::<Option<String>>(realm, "secret", secret_string)?
            .into_iter()
            .collect()
    } else {
        reply(realm, "secret", secret_set)?
    };
    let values: Vec<Option<String>> = reply(realm, "{max-bps,user-quota,total-quota}", options)?;
    let options = OPTIONS
        .iter()
        .zip(values)
        .filter_map(|(opt, value)| Some(((*opt).to_owned(), value?)))
        .collect();
    Ok(RealmRows {
        secrets,
        options,
        allowed: reply(realm, "allowed-peer-ip", allowed)?,
        denied: reply(realm, "denied-peer-ip", denied)?,
    })
}

/// One reply of the realm pipeline as `T`; an error names the key `what` of `realm`.
fn reply<T: ::redis::FromRedisValue>(
    realm: &str,
    what: &str,
    value: Value,
) -> Result<T, BackendError> {
    let err = |err: &dyn fmt::Display| {
        BackendError::Query(format!("{}: {err}", realm_key(realm, what)).into())
    };
    match ::redis::from_redis_value::<::redis::RedisResult<T>>(value) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(err(&e)),
        Err(e) => Err(err(&e)),
    }
}

impl Backend for Redis {
    fn user_key<'a>(
        &'a self,
        realm: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>> {
        Box::pin(async move {
            let [key, password] = user_keys(realm, name);
            let mut mget = ::redis::cmd("MGET");
            mget.arg(&key).arg(&password);
            // A key of another type reads as nil here: no such user.
            let (key, password): (Option<String>, Option<String>) = self
                .query(|mut con| {
                    let mget = &mget;
                    async move { mget.query_async(&mut con).await }
                })
                .await?;
            Ok(user_key_from(realm, name, key, password))
        })
    }

    fn realm<'a>(&'a self, realm: &'a str) -> BoxFuture<'a, Result<RealmRows, BackendError>> {
        Box::pin(async move {
            let secret = realm_key(realm, "secret");
            let mut pipe = ::redis::pipe();
            pipe.ignore_errors()
                .cmd("SMEMBERS")
                .arg(&secret)
                .cmd("GET")
                .arg(&secret)
                .cmd("SMEMBERS")
                .arg(realm_key(realm, "allowed-peer-ip"))
                .cmd("SMEMBERS")
                .arg(realm_key(realm, "denied-peer-ip"))
                .cmd("MGET")
                .arg(&OPTIONS.map(|opt| realm_key(realm, opt))[..]);
            let replies: Vec<Value> = self
                .query(|mut con| {
                    let pipe = &pipe;
                    async move { pipe.query_async(&mut con).await }
                })
                .await?;
            realm_rows(realm, replies)
        })
    }

    fn describe(&self) -> String {
        self.spec.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ConnSpec {
        ConnSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn redis_value(resp: &[u8]) -> Value {
        ::redis::parse_redis_value(resp).expect("RESP")
    }

    #[test]
    fn coturns_connection_strings() {
        let spec = parse("ip=10.1.2.3 dbname=2 password=turn port=6380 connect_timeout=30");
        assert_eq!(
            spec.info.addr(),
            &ConnectionAddr::Tcp("10.1.2.3".into(), 6380)
        );
        assert_eq!(spec.info.redis_settings().db(), 2);
        assert_eq!(spec.info.redis_settings().password(), Some("turn"));
        assert_eq!(spec.connect_timeout, Some(Duration::from_secs(30)));
        // Never the password in what is logged.
        assert_eq!(spec.describe(), "redis 10.1.2.3:6380 db 2");
        assert!(!format!("{spec:?}").contains("turn"));

        // Every key optional, coturn's defaults; coturn's synonyms; extra spaces.
        let spec = parse("  host=db.example  ");
        assert_eq!(
            spec.info.addr(),
            &ConnectionAddr::Tcp("db.example".into(), 6379)
        );
        assert_eq!(spec.info.redis_settings().db(), 0);
        assert_eq!(spec.info.redis_settings().password(), None);
        assert_eq!(spec.connect_timeout, None);
        assert_eq!(
            parse("addr=::1 p=7000 db=3 pwd=x timeout=0 user=ignored"),
            parse("ip=::1 port=7000 database=3 secret=x")
        );
        assert_eq!(parse("dbname=1"), parse("ip=127.0.0.1 port=6379 dbname=1"));
    }

    #[test]
    fn urls() {
        let spec = parse("redis://:s3cret@127.0.0.1:6390/4");
        assert_eq!(
            spec.info.addr(),
            &ConnectionAddr::Tcp("127.0.0.1".into(), 6390)
        );
        assert_eq!(spec.info.redis_settings().db(), 4);
        assert_eq!(spec.info.redis_settings().password(), Some("s3cret"));
        assert_eq!(spec.describe(), "redis 127.0.0.1:6390 db 4");
        let spec = parse("redis://turn:pw@localhost");
        assert_eq!(spec.describe(), "redis localhost:6379 db 0 user turn");
        assert!(!spec.describe().contains("pw"));
    }

    #[test]
    fn bad_strings_are_refused_clearly_without_the_password() {
        let err = |text: &str| ConnSpec::parse(text).expect_err(text).to_string();
        assert!(err("").contains("empty"));
        assert!(err("   ").contains("empty"));
        let e = err("ip=127.0.0.1 colour=blue");
        assert!(e.contains("unknown key \"colour\""), "{e}");
        assert!(e.contains("dbname"), "{e}");
        // A password with a space: the piece after it is not echoed.
        let e = err("password=open sesame port=1");
        assert!(
            e.contains("word 2 is not KEY=VALUE") && !e.contains("sesame"),
            "{e}"
        );
        assert!(err("port=0").contains("port=\"0\""));
        assert!(err("port=70000").contains("1 to 65535"));
        assert!(err("dbname=two").contains("database number"));
        assert!(err("dbname=-1").contains("database number"));
        assert!(err("connect_timeout=soon").contains("seconds"));
        assert!(err("ip=").contains("address"));
        let e = err("redis://:hunter2@");
        assert!(e.starts_with("URL: ") && !e.contains("hunter2"), "{e}");
        assert!(err("http://example.org").starts_with("URL: "));
    }

    #[test]
    fn the_key_layout_is_coturns() {
        assert_eq!(
            user_keys("north.gov", "gorst"),
            [
                "turn/realm/north.gov/user/gorst/key",
                "turn/realm/north.gov/user/gorst/password"
            ]
        );
        assert_eq!(
            realm_key("north.gov", "secret"),
            "turn/realm/north.gov/secret"
        );
        assert_eq!(
            OPTIONS.map(|o| realm_key("north.gov", o)),
            [
                "turn/realm/north.gov/max-bps",
                "turn/realm/north.gov/user-quota",
                "turn/realm/north.gov/total-quota"
            ]
        );
    }

    #[test]
    fn users_by_key_or_open_password() {
        // The schema's example: gorst, north.gov, "hero".
        let key = "7da2270ccfa49786e0115366d3a3d14d";
        assert_eq!(
            user_key_from("north.gov", "gorst", Some(key.into()), None).as_deref(),
            Some(key)
        );
        assert_eq!(
            user_key_from("north.gov", "gorst", None, Some("hero".into())).as_deref(),
            Some(key)
        );
        // A usable key wins over the password; a broken key gives way to it.
        assert_eq!(
            user_key_from("north.gov", "gorst", Some(key.into()), Some("other".into())).as_deref(),
            Some(key)
        );
        assert_eq!(
            user_key_from(
                "north.gov",
                "gorst",
                Some("junk".into()),
                Some("hero".into())
            )
            .as_deref(),
            Some(key)
        );
        assert_eq!(
            user_key_from("north.gov", "gorst", Some("junk".into()), None).as_deref(),
            Some("junk")
        );
        assert_eq!(user_key_from("north.gov", "gorst", None, None), None);
    }

    #[test]
    fn realm_replies_become_rows() {
        let wrongtype = || {
            redis_value(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
        };
        // As turnadmin writes it: secrets in a set, two options, peer sets.
        let rows = realm_rows(
            "north.gov",
            vec![
                redis_value(b"*2\r\n$5\r\nlogen\r\n$7\r\nbloody9\r\n"),
                wrongtype(),
                redis_value(b"*1\r\n$13\r\n172.17.13.200\r\n"),
                redis_value(b"*1\r\n$7\r\n123::45\r\n"),
                redis_value(b"*3\r\n$6\r\n500000\r\n$-1\r\n$5\r\n12000\r\n"),
            ],
        )
        .expect("rows");
        let mut secrets = rows.secrets.clone();
        secrets.sort();
        assert_eq!(secrets, ["bloody9", "logen"]);
        assert_eq!(
            rows.options,
            [
                ("max-bps".to_owned(), "500000".to_owned()),
                ("total-quota".to_owned(), "12000".to_owned())
            ]
        );
        assert_eq!(rows.allowed, ["172.17.13.200"]);
        assert_eq!(rows.denied, ["123::45"]);
        let (data, problems) = super::super::realm::RealmData::from_rows(&rows);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            (data.max_bps, data.total_quota, data.user_quota),
            (Some(500000), Some(12000), None)
        );

        // Nothing stored: empty sets and nils.
        let empty = || redis_value(b"*0\r\n");
        let nil = || redis_value(b"$-1\r\n");
        let rows = realm_rows(
            "r",
            vec![
                empty(),
                nil(),
                empty(),
                empty(),
                redis_value(b"*3\r\n$-1\r\n$-1\r\n$-1\r\n"),
            ],
        )
        .expect("rows");
        assert_eq!(rows, RealmRows::default());

        // One secret in a string.
        let rows = realm_rows(
            "r",
            vec![
                wrongtype(),
                redis_value(b"$3\r\nsek\r\n"),
                empty(),
                empty(),
                redis_value(b"*3\r\n$-1\r\n$-1\r\n$-1\r\n"),
            ],
        )
        .expect("rows");
        assert_eq!(rows.secrets, ["sek"]);

        // A key of a third type, or any other error, fails the read and names the key.
        let err = realm_rows(
            "r",
            vec![
                wrongtype(),
                wrongtype(),
                empty(),
                empty(),
                redis_value(b"*3\r\n$-1\r\n$-1\r\n$-1\r\n"),
            ],
        )
        .expect_err("a hash as secret");
        assert!(err.to_string().contains("turn/realm/r/secret"), "{err}");
        let err = realm_rows(
            "r",
            vec![
                empty(),
                nil(),
                redis_value(b"-NOAUTH Authentication required.\r\n"),
                empty(),
                redis_value(b"*3\r\n$-1\r\n$-1\r\n$-1\r\n"),
            ],
        )
        .expect_err("NOAUTH");
        assert!(
            err.to_string().contains("turn/realm/r/allowed-peer-ip")
                && err.to_string().contains("NOAUTH"),
            "{err}"
        );
        assert!(realm_rows("r", vec![empty()]).is_err());
    }
}
