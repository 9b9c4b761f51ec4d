//! The queries every SQL backend makes, in each database's dialect, and their running: coturn's
//! schema is the same in SQLite, PostgreSQL and MySQL (`turnusers_lt`, `turn_secret`,
//! `allowed_peer_ip`, `denied_peer_ip`, `turn_realm_option`), so the statements differ only in
//! how a parameter is written and what a column is cast to for text.
//!
//! Every column is read as text, NULL as the empty string, so that what a backend hands over is
//! parsed in one place (`realm.rs`) whatever the column's declared type (`hmackey` is `char(128)`
//! in PostgreSQL, padded with blanks, which the cast to `TEXT` drops).

use std::future::Future;
use std::time::Duration;

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::backend::BackendError;
use super::realm::RealmRows;

/// The SQL dialect of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    /// The `n`th (from 1) parameter.
    pub(super) fn param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
            // Positional: the statements name their parameters in binding order.
            Dialect::MySql => "?".to_owned(),
        }
    }

    /// `column` as text, NULL as ''.
    pub(super) fn text(self, column: &str) -> String {
        let ty = match self {
            Dialect::Sqlite | Dialect::Postgres => "TEXT",
            Dialect::MySql => "CHAR",
        };
        format!("COALESCE(CAST({column} AS {ty}), '')")
    }
}

/// The statements of one dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    /// `hmackey` of the user named by the first parameter in the realm of the second.
    pub user: String,
    /// `turn_secret.value` of the realm.
    pub secrets: String,
    pub allowed: String,
    pub denied: String,
    /// `turn_realm_option (opt, value)` of the realm.
    pub options: String,
}

impl Queries {
    pub fn new(d: Dialect) -> Self {
        let column = |col: &str, table: &str| {
            format!(
                "SELECT {} FROM {table} WHERE realm = {}",
                d.text(col),
                d.param(1)
            )
        };
        Self {
            user: format!(
                "SELECT {} FROM turnusers_lt WHERE name = {} AND realm = {}",
                d.text("hmackey"),
                d.param(1),
                d.param(2)
            ),
            secrets: column("value", "turn_secret"),
            allowed: column("ip_range", "allowed_peer_ip"),
            denied: column("ip_range", "denied_peer_ip"),
            options: format!(
                "SELECT {}, {} FROM turn_realm_option WHERE realm = {}",
                d.text("opt"),
                d.text("value"),
                d.param(1)
            ),
        }
    }
}

/// `fut` within `limit`.
pub async fn bounded<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(BackendError::Timeout(limit)),
    }
}

/// The stored key of user `name` in `realm` ([`Queries::user`]), each query within `limit`.
pub async fn user_key<DB>(
    pool: &Pool<DB>,
    queries: &Queries,
    limit: Duration,
    realm: &str,
    name: &str,
) -> Result<Option<String>, BackendError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    (String,): for<'r> FromRow<'r, DB::Row>,
{
    bounded(
        limit,
        sqlx::query_scalar::<DB, String>(&queries.user)
            .bind(name)
            .bind(realm)
            .fetch_optional(pool),
    )
    .await
}

/// Everything stored for `realm` besides its users, each query within `limit`.
pub async fn realm_rows<DB>(
    pool: &Pool<DB>,
    queries: &Queries,
    limit: Duration,
    realm: &str,
) -> Result<RealmRows, BackendError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    (String,): for<'r> FromRow<'r, DB::Row>,
    (String, String): for<'r> FromRow<'r, DB::Row>,
{
    let column = |sql| {
        let query = sqlx::query_scalar::<DB, String>(sql).bind(realm);
        bounded(limit, query.fetch_all(pool))
    };
    let secrets = column(queries.secrets.as_str()).await?;
    let allowed = column(queries.allowed.as_str()).await?;
    let denied = column(queries.denied.as_str()).await?;
    let options = bounded(
        limit,
        sqlx::query_as::<DB, (String, String)>(&queries.options)
            .bind(realm)
            .fetch_all(pool),
    )
    .await?;
    Ok(RealmRows {
        secrets,
        options,
        allowed,
        denied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_statements_are_the_ones_it_always_ran() {
        let q = Queries::new(Dialect::Sqlite);
        assert_eq!(
            q.user,
            "SELECT COALESCE(CAST(hmackey AS TEXT), '') FROM turnusers_lt WHERE name = ?1 AND realm = ?2"
        );
        assert_eq!(
            q.secrets,
            "SELECT COALESCE(CAST(value AS TEXT), '') FROM turn_secret WHERE realm = ?1"
        );
        assert_eq!(
            q.options,
            "SELECT COALESCE(CAST(opt AS TEXT), ''), COALESCE(CAST(value AS TEXT), '') FROM turn_realm_option WHERE realm = ?1"
        );
    }

    #[test]
    fn each_dialect_writes_its_parameters_and_casts() {
        let pg = Queries::new(Dialect::Postgres);
        assert!(
            pg.user.ends_with("WHERE name = $1 AND realm = $2"),
            "{}",
            pg.user
        );
        assert!(pg.denied.ends_with("FROM denied_peer_ip WHERE realm = $1"));
        let my = Queries::new(Dialect::MySql);
        assert_eq!(
            my.user,
            "SELECT COALESCE(CAST(hmackey AS CHAR), '') FROM turnusers_lt WHERE name = ? AND realm = ?"
        );
        assert!(my.allowed.ends_with("FROM allowed_peer_ip WHERE realm = ?"));
    }
}
