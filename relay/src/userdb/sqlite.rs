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
use super::sql::{self, Dialect, Queries};

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
    queries: Queries,
}

impl Sqlite {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            pool: Mutex::new(None),
            queries: Queries::new(Dialect::Sqlite),
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

impl Backend for Sqlite {
    fn user_key<'a>(
        &'a self,
        realm: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>> {
        Box::pin(async move {
            let pool = self.pool()?;
            sql::user_key(&pool, &self.queries, QUERY_TIMEOUT, realm, name).await
        })
    }

    fn realm<'a>(&'a self, realm: &'a str) -> BoxFuture<'a, Result<RealmRows, BackendError>> {
        Box::pin(async move {
            let pool = self.pool()?;
            sql::realm_rows(&pool, &self.queries, QUERY_TIMEOUT, realm).await
        })
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}
