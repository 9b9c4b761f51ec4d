//! The write side of coturn's user database: what `xdpturn-relay admin` does, as coturn's
//! `turnadmin` does it, on the same four databases the relay reads (SQLite, PostgreSQL,
//! MySQL/MariaDB, Redis), in exactly coturn's layout, so that either tool reads what the other
//! wrote and a relay of either kind serves it:
//!
//! | operation | SQL (`schema.sql`) | Redis (`schema.userdb.redis`) |
//! | --- | --- | --- |
//! | add/update a user | `turnusers_lt (realm, name, hmackey)` | `turn/realm/R/user/N/key` (its open `password` deleted) |
//! | delete a user | its row | its `key` and `password` |
//! | add/delete secrets | `turn_secret (realm, value)` | members of the set `turn/realm/R/secret` |
//! | realm options | `turn_realm_option (realm, opt, value)` | `turn/realm/R/max-bps`, `user-quota`, `total-quota` |
//!
//! It lives beside the readers because it is their mirror: the same connection strings
//! (`conninfo`, `redis::ConnSpec`), dialects (`sql::Dialect`) and key names (`redis`), so a
//! change of layout is made in one place. It is a separate path nonetheless: the relay's own
//! sessions are read-only (`server.rs`, `sqlite.rs`) and stay so; the tool opens a session of
//! its own, one connection, for one operation, and exits.
//!
//! Where coturn's drivers differ from each other the documented behaviour is followed: a realm
//! option set to 0 is removed on every database (turnadmin 4.6 removes it on Redis only and
//! leaves the SQL row), and writes are single statements (upserts), so that a relay reading
//! meanwhile never sees a user missing while it is updated. On Redis each write is followed
//! by `SAVE`, as turnadmin does, so that a server without automatic snapshots keeps it; a server
//! that refuses `SAVE` keeps the write and the tool says so.

use std::path::Path;
use std::time::Duration;

use ::redis::AsyncCommands as _;
use ::redis::aio::MultiplexedConnection;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions as _, Executor as _};

use super::Source;
use super::backend::BackendError;
use super::conninfo;
use super::redis::{ConnSpec, OPTIONS, realm_key, user_keys};
use super::sql::Dialect;

/// How long one operation may take, connecting included (a shorter `connect_timeout` in the
/// connection string shortens the connecting).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The realm options `-g` sets, as coturn names them.
pub const REALM_OPTIONS: [&str; 3] = OPTIONS;

/// coturn's SQLite schema, as `turnadmin` creates a database file that is not there yet.
const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS turnusers_lt ( realm varchar(127) default '', name varchar(512), hmackey char(128), PRIMARY KEY (realm,name));
CREATE TABLE IF NOT EXISTS turn_secret (realm varchar(127) default '', value varchar(127), primary key (realm,value));
CREATE TABLE IF NOT EXISTS allowed_peer_ip (realm varchar(127) default '', ip_range varchar(256), primary key (realm,ip_range));
CREATE TABLE IF NOT EXISTS denied_peer_ip (realm varchar(127) default '', ip_range varchar(256), primary key (realm,ip_range));
CREATE TABLE IF NOT EXISTS turn_origin_to_realm (origin varchar(127),realm varchar(127),primary key (origin));
CREATE TABLE IF NOT EXISTS turn_realm_option (realm varchar(127) default '', opt varchar(32), value varchar(128), primary key (realm,opt));
CREATE TABLE IF NOT EXISTS oauth_key (kid varchar(128),ikm_key varchar(256),timestamp bigint default 0,lifetime integer default 0,as_rs_alg varchar(64) default '',realm varchar(127) default '',primary key (kid));
CREATE TABLE IF NOT EXISTS admin_user (name varchar(32), realm varchar(127), password varchar(127), primary key (name));
";

/// A user, a secret or a realm option, as listed: `realm` and what it names (`value` only for
/// options).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub realm: String,
    pub name: String,
    pub value: String,
}

/// The statements of one SQL dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statements {
    /// Parameters: realm, name, hmackey.
    upsert_user: String,
    /// Parameters: realm, name.
    delete_user: String,
    /// Parameters: realm, value.
    insert_secret: String,
    /// Parameters: realm, value.
    delete_secret: String,
    /// Parameter: realm.
    delete_secrets: String,
    /// Parameters: realm, opt, value.
    upsert_option: String,
    /// Parameters: realm, opt.
    delete_option: String,
    /// `(realm, name, '')` of every user; `_in` with the realm as parameter.
    users: String,
    users_in: String,
    /// `(realm, value, '')` of every secret.
    secrets: String,
    secrets_in: String,
    /// `(realm, opt, value)` of every option.
    options: String,
    options_in: String,
}

impl Statements {
    fn new(d: Dialect) -> Self {
        let p = |n| d.param(n);
        // Insert, or replace what the primary key (realm and the second column) already holds.
        let upsert = |table: &str, key: &str, col: &str| match d {
            Dialect::Sqlite => format!(
                "INSERT OR REPLACE INTO {table} (realm, {key}, {col}) VALUES ({}, {}, {})",
                p(1),
                p(2),
                p(3)
            ),
            Dialect::Postgres => format!(
                "INSERT INTO {table} (realm, {key}, {col}) VALUES ({}, {}, {}) \
                 ON CONFLICT (realm, {key}) DO UPDATE SET {col} = EXCLUDED.{col}",
                p(1),
                p(2),
                p(3)
            ),
            Dialect::MySql => format!(
                "INSERT INTO {table} (realm, {key}, {col}) VALUES ({}, {}, {}) \
                 ON DUPLICATE KEY UPDATE {col} = VALUES({col})",
                p(1),
                p(2),
                p(3)
            ),
        };
        let insert_secret = match d {
            Dialect::Sqlite => format!(
                "INSERT OR IGNORE INTO turn_secret (realm, value) VALUES ({}, {})",
                p(1),
                p(2)
            ),
            Dialect::Postgres => format!(
                "INSERT INTO turn_secret (realm, value) VALUES ({}, {}) ON CONFLICT DO NOTHING",
                p(1),
                p(2)
            ),
            Dialect::MySql => format!(
                "INSERT IGNORE INTO turn_secret (realm, value) VALUES ({}, {})",
                p(1),
                p(2)
            ),
        };
        let list = |table: &str, second: &str, third: Option<&str>, realm: bool| {
            let third = third.map_or_else(|| "''".to_owned(), |c| d.text(c));
            let filter = if realm {
                format!(" WHERE realm = {}", p(1))
            } else {
                String::new()
            };
            format!(
                "SELECT {}, {}, {third} FROM {table}{filter} ORDER BY realm, {second}",
                d.text("realm"),
                d.text(second)
            )
        };
        Self {
            upsert_user: upsert("turnusers_lt", "name", "hmackey"),
            delete_user: format!(
                "DELETE FROM turnusers_lt WHERE realm = {} AND name = {}",
                p(1),
                p(2)
            ),
            insert_secret,
            delete_secret: format!(
                "DELETE FROM turn_secret WHERE realm = {} AND value = {}",
                p(1),
                p(2)
            ),
            delete_secrets: format!("DELETE FROM turn_secret WHERE realm = {}", p(1)),
            upsert_option: upsert("turn_realm_option", "opt", "value"),
            delete_option: format!(
                "DELETE FROM turn_realm_option WHERE realm = {} AND opt = {}",
                p(1),
                p(2)
            ),
            users: list("turnusers_lt", "name", None, false),
            users_in: list("turnusers_lt", "name", None, true),
            secrets: list("turn_secret", "value", None, false),
            secrets_in: list("turn_secret", "value", None, true),
            options: list("turn_realm_option", "opt", Some("value"), false),
            options_in: list("turn_realm_option", "opt", Some("value"), true),
        }
    }
}

/// One connection to a database, for the tool.
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
    Redis(MultiplexedConnection),
}

/// A user database opened for writing.
pub struct Admin {
    db: Db,
    /// The SQL statements (unused for Redis).
    sql: Statements,
    /// Where it is, without the password.
    described: String,
    /// Said on standard error once the operation is done (a Redis `SAVE` refused).
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("database", &self.described)
            .finish_non_exhaustive()
    }
}

/// `fut` within [`TIMEOUT`].
async fn bounded<T, E: Into<BackendError>>(
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(BackendError::Timeout(TIMEOUT)),
    }
}

/// Runs one statement with text parameters on whichever SQL pool; the rows it changed.
macro_rules! execute {
    ($pool:expr, $sql:expr, $args:expr) => {{
        let mut query = sqlx::query($sql);
        for arg in $args {
            query = query.bind(*arg);
        }
        bounded(query.execute($pool)).await?.rows_affected()
    }};
}

/// Runs one listing statement (three text columns) on whichever SQL pool.
macro_rules! fetch {
    ($pool:expr, $sql:expr, $args:expr) => {{
        let mut query = sqlx::query_as::<_, (String, String, String)>($sql);
        for arg in $args {
            query = query.bind(*arg);
        }
        bounded(query.fetch_all($pool)).await?
    }};
}

impl Admin {
    /// Opens the database `source` names, for writing. A SQLite file that is not there is
    /// created with coturn's schema when `create` (as `turnadmin` does), else refused. An error
    /// says what is wrong (never with the password). Must be called within a Tokio runtime.
    pub async fn open(source: &Source, create: bool) -> Result<Self, String> {
        let (db, dialect, described) = match source {
            Source::Sqlite(path) => (
                Db::Sqlite(open_sqlite(path, create).await?),
                Dialect::Sqlite,
                format!("sqlite {}", path.display()),
            ),
            Source::Postgres(conn) => {
                let conn = conninfo::postgres(conn).map_err(|e| format!("psql-userdb: {e}"))?;
                let described = conninfo::describe_postgres(&conn.options);
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(connect_timeout(conn.connect_timeout))
                    .connect_with(conn.options.disable_statement_logging())
                    .await
                    .map_err(|e| format!("{described}: {e}"))?;
                (Db::Postgres(pool), Dialect::Postgres, described)
            }
            Source::MySql(conn) => {
                let conn = conninfo::mysql(conn).map_err(|e| format!("mysql-userdb: {e}"))?;
                let described = conninfo::describe_mysql(&conn.options);
                let pool = MySqlPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(connect_timeout(conn.connect_timeout))
                    .connect_with(conn.options.disable_statement_logging())
                    .await
                    .map_err(|e| format!("{described}: {e}"))?;
                (Db::MySql(pool), Dialect::MySql, described)
            }
            Source::Redis(spec) => {
                let described = spec.describe();
                let con = open_redis(spec)
                    .await
                    .map_err(|e| format!("{described}: {e}"))?;
                (Db::Redis(con), Dialect::Sqlite, described)
            }
        };
        Ok(Self {
            db,
            sql: Statements::new(dialect),
            described,
            notes: Vec::new(),
        })
    }

    /// Where the database is, for messages (never a password).
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Whether options are listed in Redis's form (`realm/opt = value`, as `turnadmin -G`
    /// prints them from Redis) rather than SQL's (`opt[realm]=value`).
    pub fn is_redis(&self) -> bool {
        matches!(self.db, Db::Redis(_))
    }

    /// Runs one SQL statement; the rows it changed.
    async fn execute(&self, sql: &str, args: &[&str]) -> Result<u64, BackendError> {
        Ok(match &self.db {
            Db::Sqlite(pool) => execute!(pool, sql, args),
            Db::Postgres(pool) => execute!(pool, sql, args),
            Db::MySql(pool) => execute!(pool, sql, args),
            Db::Redis(_) => return Err(BackendError::Unavailable("not a SQL database".into())),
        })
    }

    /// Runs one SQL listing; its rows as entries.
    async fn fetch(&self, sql: &str, args: &[&str]) -> Result<Vec<Entry>, BackendError> {
        let rows = match &self.db {
            Db::Sqlite(pool) => fetch!(pool, sql, args),
            Db::Postgres(pool) => fetch!(pool, sql, args),
            Db::MySql(pool) => fetch!(pool, sql, args),
            Db::Redis(_) => return Err(BackendError::Unavailable("not a SQL database".into())),
        };
        Ok(rows
            .into_iter()
            // PostgreSQL pads char(n) columns; no name or realm ends in blanks.
            .map(|(realm, name, value)| Entry {
                realm: realm.trim_end().to_owned(),
                name: name.trim_end().to_owned(),
                value: value.trim_end().to_owned(),
            })
            .collect())
    }

    /// A connection to the Redis database, if that is what is open.
    fn redis(&self) -> Option<MultiplexedConnection> {
        match &self.db {
            Db::Redis(con) => Some(con.clone()),
            _ => None,
        }
    }

    /// `SAVE`, as turnadmin follows each write with it; a refusal is noted, not an error (the
    /// write is made).
    async fn save(&mut self, con: &mut MultiplexedConnection) {
        let saved: Result<(), BackendError> =
            bounded(::redis::cmd("SAVE").query_async::<()>(con)).await;
        if let Err(err) = saved {
            self.notes.push(format!(
                "written, but the server did not SAVE ({err}): it is kept only as the server's \
                 own persistence settings keep it"
            ));
        }
    }

    /// Adds user `name` to `realm` with `hmackey` (32 hex digits), or replaces its key.
    pub async fn add_user(
        &mut self,
        realm: &str,
        name: &str,
        hmackey: &str,
    ) -> Result<(), BackendError> {
        if let Some(mut con) = self.redis() {
            let [key, password] = user_keys(realm, name);
            // One transaction: the key set and an open password (which a key outranks for
            // coturn 4.6 but not for older releases) gone together.
            let mut pipe = ::redis::pipe();
            pipe.atomic()
                .set(&key, hmackey)
                .ignore()
                .del(&password)
                .ignore();
            bounded(pipe.query_async::<()>(&mut con)).await?;
            self.save(&mut con).await;
            return Ok(());
        }
        self.execute(&self.sql.upsert_user, &[realm, name, hmackey])
            .await
            .map(drop)
    }

    /// Deletes user `name` of `realm`; false if there was none.
    pub async fn delete_user(&mut self, realm: &str, name: &str) -> Result<bool, BackendError> {
        if let Some(mut con) = self.redis() {
            let deleted: u64 = bounded(con.del(&user_keys(realm, name)[..])).await?;
            self.save(&mut con).await;
            return Ok(deleted > 0);
        }
        Ok(self.execute(&self.sql.delete_user, &[realm, name]).await? > 0)
    }

    /// The users of `realm` (of every realm if None), sorted by realm and name.
    pub async fn users(&self, realm: Option<&str>) -> Result<Vec<Entry>, BackendError> {
        if let Some(mut con) = self.redis() {
            let realm_glob = realm.map_or_else(|| "*".to_owned(), glob_escape);
            let mut keys: Vec<String> = Vec::new();
            for what in ["key", "password"] {
                let pattern = format!("turn/realm/{realm_glob}/user/*/{what}");
                keys.extend(bounded(con.keys::<_, Vec<String>>(pattern)).await?);
            }
            let mut users: Vec<Entry> = keys.iter().filter_map(|k| user_of_key(k)).collect();
            users.sort();
            users.dedup();
            return Ok(users);
        }
        match realm {
            Some(realm) => self.fetch(&self.sql.users_in, &[realm]).await,
            None => self.fetch(&self.sql.users, &[]).await,
        }
    }

    /// Adds shared secret `value` to `realm` (nothing changes if it is there).
    pub async fn add_secret(&mut self, realm: &str, value: &str) -> Result<(), BackendError> {
        if let Some(mut con) = self.redis() {
            bounded(con.sadd::<_, _, ()>(realm_key(realm, "secret"), value)).await?;
            self.save(&mut con).await;
            return Ok(());
        }
        self.execute(&self.sql.insert_secret, &[realm, value])
            .await
            .map(drop)
    }

    /// Deletes shared secret `value` of `realm`, or all of them if None; how many went.
    pub async fn delete_secrets(
        &mut self,
        realm: &str,
        value: Option<&str>,
    ) -> Result<u64, BackendError> {
        if let Some(mut con) = self.redis() {
            let key = realm_key(realm, "secret");
            let deleted: u64 = match value {
                Some(value) => bounded(con.srem(&key, value)).await?,
                None => {
                    let mut pipe = ::redis::pipe();
                    pipe.atomic().scard(&key).del(&key).ignore();
                    let (count,): (u64,) = bounded(pipe.query_async(&mut con)).await?;
                    count
                }
            };
            self.save(&mut con).await;
            return Ok(deleted);
        }
        match value {
            Some(value) => self.execute(&self.sql.delete_secret, &[realm, value]).await,
            None => self.execute(&self.sql.delete_secrets, &[realm]).await,
        }
    }

    /// The shared secrets of `realm` (of every realm if None), sorted by realm and value.
    pub async fn secrets(&self, realm: Option<&str>) -> Result<Vec<Entry>, BackendError> {
        if let Some(mut con) = self.redis() {
            let keys: Vec<String> = match realm {
                Some(realm) => vec![realm_key(realm, "secret")],
                None => bounded(con.keys("turn/realm/*/secret")).await?,
            };
            let mut secrets = Vec::new();
            for key in keys {
                let Some(realm) = realm_of_key(&key, "secret") else {
                    continue;
                };
                // A set, as turnadmin writes it; a string holding one is read too (as the
                // relay reads it).
                let kind: String = bounded(con.key_type(&key)).await?;
                let members: Vec<String> = match kind.as_str() {
                    "string" => vec![bounded(con.get(&key)).await?],
                    _ => bounded(con.smembers(&key)).await?,
                };
                secrets.extend(members.into_iter().map(|name| Entry {
                    realm: realm.to_owned(),
                    name,
                    value: String::new(),
                }));
            }
            secrets.sort();
            return Ok(secrets);
        }
        match realm {
            Some(realm) => self.fetch(&self.sql.secrets_in, &[realm]).await,
            None => self.fetch(&self.sql.secrets, &[]).await,
        }
    }

    /// Sets realm option `opt` (one of [`REALM_OPTIONS`]) of `realm` to `value`; 0 removes it.
    pub async fn set_option(
        &mut self,
        realm: &str,
        opt: &str,
        value: u64,
    ) -> Result<(), BackendError> {
        if let Some(mut con) = self.redis() {
            let key = realm_key(realm, opt);
            if value > 0 {
                bounded(con.set::<_, _, ()>(&key, value.to_string())).await?;
            } else {
                bounded(con.del::<_, ()>(&key)).await?;
            }
            self.save(&mut con).await;
            return Ok(());
        }
        if value > 0 {
            self.execute(&self.sql.upsert_option, &[realm, opt, &value.to_string()])
                .await
        } else {
            self.execute(&self.sql.delete_option, &[realm, opt]).await
        }
        .map(drop)
    }

    /// The options of `realm` (of every realm if None), sorted by realm and option.
    pub async fn options(&self, realm: Option<&str>) -> Result<Vec<Entry>, BackendError> {
        if let Some(mut con) = self.redis() {
            let realms: Vec<String> = match realm {
                Some(realm) => vec![realm.to_owned()],
                None => {
                    let mut keys: Vec<String> = Vec::new();
                    for opt in OPTIONS {
                        keys.extend(
                            bounded(con.keys::<_, Vec<String>>(format!("turn/realm/*/{opt}")))
                                .await?,
                        );
                    }
                    let mut realms: Vec<String> = keys
                        .iter()
                        .filter_map(|k| OPTIONS.iter().find_map(|o| realm_of_key(k, o)))
                        .map(str::to_owned)
                        .collect();
                    realms.sort();
                    realms.dedup();
                    realms
                }
            };
            let mut options = Vec::new();
            for realm in realms {
                let keys = OPTIONS.map(|opt| realm_key(&realm, opt));
                let values: Vec<Option<String>> = bounded(con.mget(&keys[..])).await?;
                for (opt, value) in OPTIONS.iter().zip(values) {
                    if let Some(value) = value {
                        options.push(Entry {
                            realm: realm.clone(),
                            name: (*opt).to_owned(),
                            value,
                        });
                    }
                }
            }
            options.sort();
            return Ok(options);
        }
        match realm {
            Some(realm) => self.fetch(&self.sql.options_in, &[realm]).await,
            None => self.fetch(&self.sql.options, &[]).await,
        }
    }
}

/// How long connecting may take: the connection string's `connect_timeout`, at most
/// [`TIMEOUT`].
fn connect_timeout(given: Option<Duration>) -> Duration {
    given.map_or(TIMEOUT, |t| t.min(TIMEOUT))
}

/// coturn's SQLite database at `path`, opened for writing; created with coturn's schema when
/// it is not there and `create`.
async fn open_sqlite(path: &Path, create: bool) -> Result<SqlitePool, String> {
    let exists = path.exists();
    if !exists && !create {
        return Err(format!(
            "{}: no such database (turnadmin -a, -s or -g creates it)",
            path.display()
        ));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // A relay reading holds a lock for a moment: wait for it rather than fail.
        .busy_timeout(Duration::from_secs(5))
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !exists {
        pool.execute(SQLITE_SCHEMA)
            .await
            .map_err(|e| format!("{}: creating coturn's schema: {e}", path.display()))?;
    }
    Ok(pool)
}

/// One connection to the Redis database `spec` names, bounded in time.
async fn open_redis(spec: &ConnSpec) -> Result<MultiplexedConnection, BackendError> {
    let client = spec.client()?;
    let limit = spec.connect_timeout();
    match tokio::time::timeout(limit, client.get_multiplexed_async_connection()).await {
        Ok(con) => con.map_err(|e| BackendError::Unavailable(format!("cannot connect: {e}"))),
        Err(_) => Err(BackendError::Timeout(limit)),
    }
}

/// `text` with Redis's glob characters escaped, to match itself in `KEYS`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The realm of `turn/realm/<realm>/<what>`.
fn realm_of_key<'a>(key: &'a str, what: &str) -> Option<&'a str> {
    key.strip_prefix("turn/realm/")?
        .strip_suffix(what)?
        .strip_suffix('/')
        .filter(|r| !r.is_empty())
}

/// The user a `turn/realm/<realm>/user/<name>/key` (or `/password`) key is for.
fn user_of_key(key: &str) -> Option<Entry> {
    let rest = key.strip_prefix("turn/realm/")?;
    let rest = rest
        .strip_suffix("/key")
        .or_else(|| rest.strip_suffix("/password"))?;
    let (realm, name) = rest.split_once("/user/")?;
    Some(Entry {
        realm: realm.to_owned(),
        name: name.to_owned(),
        value: String::new(),
    })
}

/// A user, as `turnadmin -l` prints it: `name[realm]`.
pub fn user_line(e: &Entry) -> String {
    format!("{}[{}]", e.name, e.realm)
}

/// A secret, as `turnadmin -S` prints it: `value[realm]`.
pub fn secret_line(e: &Entry) -> String {
    format!("{}[{}]", e.name, e.realm)
}

/// A realm option, as `turnadmin -G` prints it: `opt[realm]=value` from a SQL database,
/// `realm/opt = value` from Redis.
pub fn option_line(e: &Entry, redis: bool) -> String {
    if redis {
        format!("{}/{} = {}", e.realm, e.name, e.value)
    } else {
        format!("{}[{}]={}", e.name, e.realm, e.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_upsert_in_each_dialect() {
        let s = Statements::new(Dialect::Sqlite);
        assert_eq!(
            s.upsert_user,
            "INSERT OR REPLACE INTO turnusers_lt (realm, name, hmackey) VALUES (?1, ?2, ?3)"
        );
        assert_eq!(
            s.users_in,
            "SELECT COALESCE(CAST(realm AS TEXT), ''), COALESCE(CAST(name AS TEXT), ''), '' \
             FROM turnusers_lt WHERE realm = ?1 ORDER BY realm, name"
        );
        let pg = Statements::new(Dialect::Postgres);
        assert!(
            pg.upsert_option.ends_with(
                "VALUES ($1, $2, $3) ON CONFLICT (realm, opt) DO UPDATE SET value = EXCLUDED.value"
            ),
            "{}",
            pg.upsert_option
        );
        assert!(pg.insert_secret.ends_with("ON CONFLICT DO NOTHING"));
        let my = Statements::new(Dialect::MySql);
        assert_eq!(
            my.upsert_user,
            "INSERT INTO turnusers_lt (realm, name, hmackey) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE hmackey = VALUES(hmackey)"
        );
        assert_eq!(
            my.delete_secret,
            "DELETE FROM turn_secret WHERE realm = ? AND value = ?"
        );
    }

    #[test]
    fn redis_keys_name_their_realm_and_user() {
        assert_eq!(
            user_of_key("turn/realm/north.gov/user/gorst/key"),
            Some(Entry {
                realm: "north.gov".into(),
                name: "gorst".into(),
                value: String::new()
            })
        );
        assert_eq!(
            user_of_key("turn/realm/north.gov/user/olga/password").map(|e| e.name),
            Some("olga".into())
        );
        assert_eq!(user_of_key("turn/realm/north.gov/secret"), None);
        assert_eq!(
            realm_of_key("turn/realm/north.gov/secret", "secret"),
            Some("north.gov")
        );
        assert_eq!(
            realm_of_key("turn/realm/north.gov/max-bps", "user-quota"),
            None
        );
        assert_eq!(realm_of_key("turn/realm//secret", "secret"), None);
        assert_eq!(glob_escape("a*b?[c]"), r"a\*b\?\[c\]");
    }

    #[test]
    fn lines_are_turnadmins() {
        let e = Entry {
            realm: "north.gov".into(),
            name: "max-bps".into(),
            value: "500000".into(),
        };
        assert_eq!(option_line(&e, false), "max-bps[north.gov]=500000");
        assert_eq!(option_line(&e, true), "north.gov/max-bps = 500000");
        assert_eq!(user_line(&e), "max-bps[north.gov]");
    }
}
