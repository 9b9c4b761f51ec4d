//! coturn's SQLite user database (`--userdb FILE`, as `turnadmin -b FILE` writes it, schema in
//! Debian's `/usr/share/coturn/schema.sql`), read only, through a small sqlx pool.
//!
//! The pool is remade when the file at the path is another file than the one it opened (a
//! database replaced or restored by rename keeps old connections reading the old file) and
//! fails while there is no file: what an administrator sees at the path is what the relay reads.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::backend::{Backend, BackendError, BoxFuture};
use super::realm::RealmRows;

/// Connections at most: lookups beyond wait for one (the cache bounds how many there are).
const POOL_SIZE: u32 = 4;
/// How long a query may take, waiting for a connection or a writer's lock included.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The SQLite backend.
#[derive(Debug)]
pub struct Sqlite {
    path: PathBuf,
    /// The pool, and the file (device, inode) it opened.
    pool: Mutex<Option<((u64, u64), SqlitePool)>>,
}

impl Sqlite {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            pool: Mutex::new(None),
        }
    }

    /// The pool for the file now at the path.
    fn pool(&self) -> Result<SqlitePool, BackendError> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|err| BackendError::Unavailable(format!("{}: {err}", self.path.display())))?;
        let file = (meta.dev(), meta.ino());
        let mut slot = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, pool)) = slot.as_ref()
            && *at == file
        {
            return Ok(pool.clone());
        }
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .read_only(true)
            .create_if_missing(false)
            // turnadmin holds the write lock for a moment: wait for it rather than fail.
            .busy_timeout(Duration::from_secs(1))
            // Every lookup would be a debug line: the metrics count them.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(QUERY_TIMEOUT)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options);
        if let Some((_, old)) = slot.replace((file, pool.clone())) {
            tokio::spawn(async move { old.close().await });
        }
        Ok(pool)
    }
}

/// `fut` within [`QUERY_TIMEOUT`].
async fn bounded<T>(fut: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, BackendError> {
    match tokio::time::timeout(QUERY_TIMEOUT, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(BackendError::Timeout(QUERY_TIMEOUT)),
    }
}

impl Backend for Sqlite {
    fn user_key<'a>(
        &'a self,
        realm: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>> {
        Box::pin(async move {
            let pool = self.pool()?;
            bounded(
                sqlx::query_scalar::<_, String>(
                    "SELECT COALESCE(CAST(hmackey AS TEXT), '') FROM turnusers_lt WHERE name = ?1 AND realm = ?2",
                )
                .bind(name)
                .bind(realm)
                .fetch_optional(&pool),
            )
            .await
        })
    }

    fn realm<'a>(&'a self, realm: &'a str) -> BoxFuture<'a, Result<RealmRows, BackendError>> {
        Box::pin(async move {
            let pool = self.pool()?;
            let column = |sql: &'static str| {
                let pool = pool.clone();
                async move {
                    bounded(
                        sqlx::query_scalar::<_, String>(sql)
                            .bind(realm)
                            .fetch_all(&pool),
                    )
                    .await
                }
            };
            let secrets = column(
                "SELECT COALESCE(CAST(value AS TEXT), '') FROM turn_secret WHERE realm = ?1",
            )
            .await?;
            let allowed = column(
                "SELECT COALESCE(CAST(ip_range AS TEXT), '') FROM allowed_peer_ip WHERE realm = ?1",
            )
            .await?;
            let denied = column(
                "SELECT COALESCE(CAST(ip_range AS TEXT), '') FROM denied_peer_ip WHERE realm = ?1",
            )
            .await?;
            let options = bounded(
                sqlx::query_as::<_, (String, String)>(
                    "SELECT COALESCE(CAST(opt AS TEXT), ''), COALESCE(CAST(value AS TEXT), '') FROM turn_realm_option WHERE realm = ?1",
                )
                .bind(realm)
                .fetch_all(&pool),
            )
            .await?;
            Ok(RealmRows {
                secrets,
                options,
                allowed,
                denied,
            })
        })
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}
