//! coturn's user database on a PostgreSQL (`--psql-userdb`) or MySQL/MariaDB
//! (`--mysql-userdb`) server, read only, through a small sqlx pool: the schema and the queries
//! are the SQLite backend's (`sql.rs`), the connection strings coturn's (`conninfo.rs`).
//!
//! The pool connects lazily: a server that is down when the relay starts, or that goes away
//! later, is a failed query (reported by [`super::UserDb`]), and the pool connects again on the
//! next one once the server is back. Sessions are made read-only (PostgreSQL's
//! `default_transaction_read_only`, MySQL's `SET SESSION TRANSACTION READ ONLY`), so a relay
//! given a writer's account still cannot change the database.

use std::time::Duration;

use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, Postgres};
use sqlx::{ConnectOptions as _, Database, Executor as _, Pool};

use super::backend::{Backend, BackendError, BoxFuture};
use super::conninfo::{self, Conn};
use super::realm::RealmRows;
use super::sql::{self, Dialect, Queries};

/// Connections at most: lookups beyond wait for one (the cache bounds how many there are).
pub const POOL_SIZE: u32 = 4;
/// How long a query may take, waiting for a connection (connecting included) or not; a shorter
/// `connect_timeout` or `read_timeout` in the connection string shortens it.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// A database server's user database.
pub struct Server<DB: Database> {
    pool: Pool<DB>,
    queries: Queries,
    timeout: Duration,
    /// Where it is, without the password.
    described: String,
}

impl<DB: Database> std::fmt::Debug for Server<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("database", &self.described)
            .finish_non_exhaustive()
    }
}

/// [`QUERY_TIMEOUT`], shortened by the connection string's timeouts.
fn timeout<O>(conn: &Conn<O>) -> Duration {
    [conn.connect_timeout, conn.read_timeout]
        .into_iter()
        .flatten()
        .fold(QUERY_TIMEOUT, Duration::min)
}

impl Server<Postgres> {
    /// The PostgreSQL database `conn` names (coturn's `--psql-userdb` string); an error says
    /// what in the string is wrong. Must be called within a Tokio runtime.
    pub fn postgres(conn: &str) -> Result<Self, String> {
        let conn = conninfo::postgres(conn)?;
        let timeout = timeout(&conn);
        let described = conninfo::describe_postgres(&conn.options);
        let options: PgConnectOptions = conn
            .options
            .options([("default_transaction_read_only", "on")])
            // Every lookup would be a debug line: the metrics count them.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(timeout)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            queries: Queries::new(Dialect::Postgres),
            timeout,
            described,
        })
    }
}

impl Server<MySql> {
    /// The MySQL/MariaDB database `conn` names (coturn's `--mysql-userdb` string); an error says
    /// what in the string is wrong. Must be called within a Tokio runtime.
    pub fn mysql(conn: &str) -> Result<Self, String> {
        let conn = conninfo::mysql(conn)?;
        let timeout = timeout(&conn);
        let described = conninfo::describe_mysql(&conn.options);
        let options: MySqlConnectOptions = conn.options.disable_statement_logging();
        let pool = MySqlPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(timeout)
            .idle_timeout(Duration::from_secs(60))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            queries: Queries::new(Dialect::MySql),
            timeout,
            described,
        })
    }
}

/// The same [`Backend`] for each server database: the generic queries of `sql.rs`, made
/// concrete here so that the futures are `Send` for the one database each is for.
macro_rules! server_backend {
    ($db:ty) => {
        impl Backend for Server<$db> {
            fn user_key<'a>(
                &'a self,
                realm: &'a str,
                name: &'a str,
            ) -> BoxFuture<'a, Result<Option<String>, BackendError>> {
                Box::pin(sql::user_key(
                    &self.pool,
                    &self.queries,
                    self.timeout,
                    realm,
                    name,
                ))
            }

            fn realm<'a>(
                &'a self,
                realm: &'a str,
            ) -> BoxFuture<'a, Result<RealmRows, BackendError>> {
                Box::pin(sql::realm_rows(
                    &self.pool,
                    &self.queries,
                    self.timeout,
                    realm,
                ))
            }

            fn describe(&self) -> String {
                self.described.clone()
            }
        }
    };
}

server_backend!(Postgres);
server_backend!(MySql);
