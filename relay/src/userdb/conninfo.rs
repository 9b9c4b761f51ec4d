//! coturn's connection strings for its server databases, parsed into sqlx's options.
//!
//! - PostgreSQL (`--psql-userdb`): coturn hands the string to libpq, so both of libpq's forms
//!   are taken: `host=... dbname=... user=... password=... port=... connect_timeout=...` (values
//!   may be single-quoted, with `\'` and `\\` inside) and the `postgresql://` (or `postgres://`)
//!   URL. Of libpq's keys, those sqlx can honour are mapped (the TLS ones, `sslmode`,
//!   `sslrootcert`, `sslcert`, `sslkey`, and `application_name`); any other key is refused.
//! - MySQL/MariaDB (`--mysql-userdb`): coturn's own form, `host=... dbname=... user=...
//!   password=... port=... connect_timeout=... read_timeout=...` with coturn's aliases (`ip`,
//!   `db`, `uname`, `pwd`, ...), words separated by blanks, no quoting, as coturn splits it; its
//!   TLS keys `ca`, `cert` and `key` (and their `ssl-` forms) turn TLS on, verifying the server
//!   against `ca`; `capath` and `cipher` have no equivalent in sqlx and are refused, as is any
//!   unknown key. Or the `mysql://` (or `mariadb://`) URL.
//!
//! `connect_timeout` and `read_timeout` (seconds) can only shorten the relay's own bound on a
//! query ([`QUERY_TIMEOUT`](super::server::QUERY_TIMEOUT)): the auth path waits for
//! lookups, so a longer wait would not help anyone.
//!
//! Errors name the key, never a value: a mistyped password must not reach the log.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// A parsed connection string: sqlx's options and the timeouts it asked for.
#[derive(Debug, Clone)]
pub struct Conn<O> {
    pub options: O,
    /// `connect_timeout`, if given and not 0.
    pub connect_timeout: Option<Duration>,
    /// `read_timeout` (MySQL), if given and not 0.
    pub read_timeout: Option<Duration>,
}

impl<O> Conn<O> {
    fn new(options: O) -> Self {
        Self {
            options,
            connect_timeout: None,
            read_timeout: None,
        }
    }
}

/// A PostgreSQL connection string, in libpq's `key=value` form or as a URL.
pub fn postgres(text: &str) -> Result<Conn<PgConnectOptions>, String> {
    let text = text.trim();
    if text.starts_with("postgresql://") || text.starts_with("postgres://") {
        // sqlx's own error would quote the URL, password included.
        let options = PgConnectOptions::from_str(text)
            .map_err(|_| "not a valid postgresql:// URL".to_owned())?;
        return Ok(Conn::new(options));
    }
    let mut conn = Conn::new(PgConnectOptions::new());
    for (key, value) in libpq_pairs(text)? {
        let o = conn.options;
        conn.options = match key.as_str() {
            "host" | "hostaddr" if value.starts_with('/') => o.socket(&value),
            "host" | "hostaddr" => o.host(&value),
            "port" => o.port(number(&key, &value)?),
            "dbname" => o.database(&value),
            "user" => o.username(&value),
            "password" => o.password(&value),
            "connect_timeout" => {
                conn.connect_timeout = seconds(&key, &value)?;
                o
            }
            "sslmode" => o.ssl_mode(
                PgSslMode::from_str(&value)
                    .map_err(|_| format!("sslmode {value:?}: not a libpq sslmode"))?,
            ),
            "sslrootcert" => o.ssl_root_cert(&value),
            "sslcert" => o.ssl_client_cert(&value),
            "sslkey" => o.ssl_client_key(&value),
            "application_name" => o.application_name(&value),
            other => {
                return Err(format!(
                    "unknown or unsupported key {other:?} (known: host, hostaddr, port, dbname, \
                     user, password, connect_timeout, sslmode, sslrootcert, sslcert, sslkey, \
                     application_name)"
                ));
            }
        };
    }
    Ok(conn)
}

/// libpq's `key = value` pairs: blanks separate them, a value may be single-quoted, and a
/// backslash takes the next character as it is.
fn libpq_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // Not quoted: a blank inside an unquoted password would put part of it here.
            return Err("a word has no \"=value\" (quote values that hold blanks)".to_owned());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of {key:?} has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// A MySQL connection string, in coturn's `key=value` form or as a URL.
pub fn mysql(text: &str) -> Result<Conn<MySqlConnectOptions>, String> {
    let text = text.trim();
    if text.starts_with("mysql://") || text.starts_with("mariadb://") {
        let options = MySqlConnectOptions::from_str(text)
            .map_err(|_| "not a valid mysql:// URL".to_owned())?;
        return Ok(Conn::new(options));
    }
    // coturn's defaults: 127.0.0.1 and the database named "0".
    let mut conn = Conn::new(
        MySqlConnectOptions::new()
            .host("127.0.0.1")
            .username("")
            .database("0"),
    );
    let mut tls = false;
    let mut ca = false;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let Some((key, value)) = word.split_once('=') else {
            // Not quoted: it may be the part of a password after a blank.
            return Err(
                "a word is not key=value (coturn separates pairs by blanks: no value can hold one)"
                    .to_owned(),
            );
        };
        let o = conn.options;
        conn.options = match key {
            "host" | "ip" | "addr" | "ipaddr" | "hostaddr" => o.host(value),
            "dbname" | "db" | "database" => o.database(value),
            "user" | "uname" | "name" | "username" => o.username(value),
            "password" | "pwd" | "passwd" | "secret" => o.password(value),
            "port" | "p" => o.port(number(key, value)?),
            "connect_timeout" | "timeout" => {
                conn.connect_timeout = seconds(key, value)?;
                o
            }
            "read_timeout" => {
                conn.read_timeout = seconds(key, value)?;
                o
            }
            "ca" | "ssl-ca" => {
                (tls, ca) = (true, true);
                o.ssl_ca(value)
            }
            "cert" | "ssl-cert" => {
                tls = true;
                o.ssl_client_cert(value)
            }
            "key" | "ssl-key" => {
                tls = true;
                o.ssl_client_key(value)
            }
            "capath" | "ssl-capath" => {
                return Err(format!(
                    "{key}: a directory of CA certificates is not supported; give one CA file \
                     with ca=FILE"
                ));
            }
            "cipher" | "ssl-cipher" => {
                return Err(format!(
                    "{key}: choosing TLS ciphers is not supported (the TLS library's defaults \
                     apply)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown key {other:?} (known: host, dbname, user, password, port, \
                     connect_timeout, read_timeout, ca, cert, key, and coturn's aliases of them)"
                ));
            }
        };
    }
    if tls {
        let mode = if ca {
            MySqlSslMode::VerifyCa
        } else {
            MySqlSslMode::Required
        };
        conn.options = conn.options.ssl_mode(mode);
    }
    Ok(conn)
}

fn number(key: &str, value: &str) -> Result<u16, String> {
    value
        .parse()
        .map_err(|_| format!("{key} {value:?}: not a port number"))
}

fn seconds(key: &str, value: &str) -> Result<Option<Duration>, String> {
    let secs: u64 = value
        .parse()
        .map_err(|_| format!("{key} {value:?}: not a number of seconds"))?;
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

/// Where a PostgreSQL database is, for the log: no password.
pub fn describe_postgres(o: &PgConnectOptions) -> String {
    let at = match o.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    format!(
        "postgresql {}@{at}/{}",
        o.get_username(),
        o.get_database().unwrap_or(o.get_username())
    )
}

/// Where a MySQL database is, for the log: no password.
pub fn describe_mysql(o: &MySqlConnectOptions) -> String {
    let at = match o.get_socket() {
        Some(path) => path.display().to_string(),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    format!(
        "mysql {}@{at}/{}",
        o.get_username(),
        o.get_database().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_key_value_form_as_coturn_documents_it() {
        let c = postgres(
            "host=db.example.org dbname=coturn user=turn password=s3cret port=5433 connect_timeout=30",
        )
        .expect("parses");
        assert_eq!(c.options.get_host(), "db.example.org");
        assert_eq!(c.options.get_port(), 5433);
        assert_eq!(c.options.get_username(), "turn");
        assert_eq!(c.options.get_database(), Some("coturn"));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(30)));
        let described = describe_postgres(&c.options);
        assert_eq!(described, "postgresql turn@db.example.org:5433/coturn");
        assert!(!described.contains("s3cret"));
    }

    #[test]
    fn postgres_quoting_blanks_sockets_and_tls() {
        let c = postgres(
            r"host = /run/pg  dbname='my db' user=turn password='it\'s \\ me' sslmode=verify-full sslrootcert=/etc/ca.pem connect_timeout=0",
        )
        .expect("parses");
        assert_eq!(
            c.options.get_socket().map(|p| p.display().to_string()),
            Some("/run/pg".to_owned())
        );
        assert_eq!(c.options.get_database(), Some("my db"));
        assert!(matches!(c.options.get_ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(c.connect_timeout, None);
        assert!(
            postgres("password='open")
                .expect_err("refused")
                .contains("closing quote")
        );
        let err = postgres("host=h password=two words").expect_err("refused");
        assert!(err.contains("=value") && !err.contains("words"), "{err}");
    }

    #[test]
    fn postgres_url_form() {
        let c = postgres("postgresql://turn:s3cret@127.0.0.1:6543/coturn?sslmode=disable")
            .expect("parses");
        assert_eq!(c.options.get_port(), 6543);
        assert_eq!(c.options.get_database(), Some("coturn"));
        assert!(matches!(c.options.get_ssl_mode(), PgSslMode::Disable));
        assert_eq!(
            describe_postgres(&c.options),
            "postgresql turn@127.0.0.1:6543/coturn"
        );
    }

    #[test]
    fn postgres_errors_name_the_key_never_the_password() {
        let err = postgres("host=h password=s3cret keepalives=1").expect_err("refused");
        assert!(err.contains("\"keepalives\""), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = postgres("port=fifty").expect_err("refused");
        assert!(err.contains("port"), "{err}");
        let err = postgres("sslmode=sometimes").expect_err("refused");
        assert!(err.contains("sslmode"), "{err}");
        let err = postgres("postgresql://turn:s3cret@[bad/coturn").expect_err("refused");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn mysql_coturn_form_with_its_aliases_and_defaults() {
        let c = mysql(
            "host=10.0.0.5 dbname=coturn user=turn password=s3cret port=3307 connect_timeout=10 read_timeout=2",
        )
        .expect("parses");
        assert_eq!(c.options.get_host(), "10.0.0.5");
        assert_eq!(c.options.get_port(), 3307);
        assert_eq!(c.options.get_username(), "turn");
        assert_eq!(c.options.get_database(), Some("coturn"));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.read_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            describe_mysql(&c.options),
            "mysql turn@10.0.0.5:3307/coturn"
        );
        let c = mysql("ip=db  db=turn uname=u pwd=p p=3306 timeout=5").expect("aliases");
        assert_eq!(
            (c.options.get_host(), c.options.get_database()),
            ("db", Some("turn"))
        );
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(5)));
        let c = mysql("user=turn").expect("defaults");
        assert_eq!(
            (c.options.get_host(), c.options.get_database()),
            ("127.0.0.1", Some("0"))
        );
        assert!(matches!(c.options.get_ssl_mode(), MySqlSslMode::Preferred));
    }

    #[test]
    fn mysql_tls_keys_map_or_are_refused() {
        let c = mysql("host=h ca=/etc/ca.pem cert=/etc/c.pem key=/etc/k.pem").expect("parses");
        assert!(matches!(c.options.get_ssl_mode(), MySqlSslMode::VerifyCa));
        let c = mysql("host=h ssl-cert=/etc/c.pem ssl-key=/etc/k.pem").expect("parses");
        assert!(matches!(c.options.get_ssl_mode(), MySqlSslMode::Required));
        assert!(
            mysql("host=h capath=/etc/ssl")
                .expect_err("refused")
                .contains("capath")
        );
        assert!(
            mysql("host=h cipher=AES")
                .expect_err("refused")
                .contains("cipher")
        );
        let err = mysql("host=h password=s3cret charset=utf8").expect_err("refused");
        assert!(
            err.contains("\"charset\"") && !err.contains("s3cret"),
            "{err}"
        );
        let err = mysql("host=h password=two words").expect_err("refused");
        assert!(err.contains("key=value") && !err.contains("words"), "{err}");
    }

    #[test]
    fn mysql_url_form() {
        let c = mysql("mysql://turn:s3cret@127.0.0.1:3307/coturn").expect("parses");
        assert_eq!(c.options.get_port(), 3307);
        assert_eq!(
            describe_mysql(&c.options),
            "mysql turn@127.0.0.1:3307/coturn"
        );
    }
}
