//! What a user database backend answers, whatever the database: one user's stored key, and one
//! realm's rows (secrets, options, peer ranges). SQLite (`sqlite.rs`) and Redis (`redis.rs`)
//! implement it; PostgreSQL and MySQL (sqlx too) go behind the same trait.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use super::realm::RealmRows;

/// A future a backend returns (boxed: backends are chosen at start-up, behind `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the database did not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The database is not there (file missing, server unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// The database answered with an error, or the connection broke (the client library's
    /// error: sqlx's, redis's).
    #[error("query failed: {0}")]
    Query(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl From<sqlx::Error> for BackendError {
    fn from(err: sqlx::Error) -> Self {
        Self::Query(Box::new(err))
    }
}

impl From<redis::RedisError> for BackendError {
    fn from(err: redis::RedisError) -> Self {
        Self::Query(Box::new(err))
    }
}

/// A user database.
pub trait Backend: Debug + Send + Sync {
    /// The stored key (`hmackey`, as text) of user `name` in `realm`; None if there is none.
    fn user_key<'a>(
        &'a self,
        realm: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>>;

    /// Everything stored for `realm` besides its users.
    fn realm<'a>(&'a self, realm: &'a str) -> BoxFuture<'a, Result<RealmRows, BackendError>>;

    /// Where the database is, for the log (never a password).
    fn describe(&self) -> String;
}
