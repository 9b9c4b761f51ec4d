//! The database servers the user database tests start for themselves (`userdb_servers.rs`,
//! `userdb_redis.rs`, `userdb_admin.rs`): PostgreSQL (as `nobody`, which it needs to be run as
//! by root), MariaDB and Redis, each on loopback, on a free port, with its data in a directory
//! of the test's own, stopped by its PID when dropped; and coturn's `turnadmin` run on them.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::userdb::TIMEOUT;
use super::{Guard, TempDir, free_port, require, run};

/// The database account the relay and turnadmin use.
pub const DB_USER: &str = "turn";
pub const DB_PASSWORD: &str = "turn pw";
pub const DB_PASSWORD_NOSPACE: &str = "turnpw";

/// A database server the test started, which it can stop and start again.
pub trait Server {
    /// coturn's connection string for it.
    fn conn(&self) -> String;
    /// The relay's flag and turnadmin's option for it.
    fn flags(&self) -> (&'static str, &'static str);
    /// Its process, while it runs.
    fn process(&mut self) -> &mut Process;
    /// Starts it (again), from its data directory, and waits until it answers.
    fn start(&mut self);

    fn stop(&mut self) {
        self.process().stop();
    }
}

/// A server's process, stopped gracefully ([`terminate`]) when asked or dropped.
pub struct Process(pub Option<Guard>);

impl Process {
    pub fn stop(&mut self) {
        if let Some(server) = self.0.take() {
            terminate(server);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd`, panicking with its output unless it succeeds.
pub fn must(cmd: &mut Command) -> String {
    let out = run(cmd, TIMEOUT);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `ready` holds (the server answers), up to a minute.
pub fn wait_ready(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops a server gracefully (SIGTERM, by its PID), then by force if it lingers.
pub fn terminate(guard: Guard) {
    let mut guard = guard;
    let _ = Command::new("kill")
        .args(["-s", "TERM", &guard.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = guard.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Dropping the guard kills it.
}

/// PostgreSQL, run as `nobody` (it refuses to run as root) from a data directory it owns.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    server: Process,
}

/// `cmd` as `nobody`.
pub fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new(require("setpriv", "util-linux"));
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(program);
    cmd
}

impl Postgres {
    pub fn new(dir: &TempDir) -> Self {
        let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
        assert!(
            bin.join("postgres").is_file(),
            "PostgreSQL 15 is not installed. `cargo xtask test` installs it (Debian package \
             `postgresql`)."
        );
        let data = dir.path().join("pg");
        std::fs::create_dir(&data).expect("data dir");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, DB_PASSWORD).expect("password file");
        must(
            Command::new("chown")
                .arg("-R")
                .arg("nobody:nogroup")
                .arg(dir.path()),
        );
        // The superuser is the relay's account: a password over TCP, trust on the socket for
        // the set-up.
        must(
            as_nobody(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    DB_USER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .env("LC_ALL", "C"),
        );
        let mut pg = Postgres {
            bin,
            data,
            port: free_port(),
            server: Process(None),
        };
        pg.start();
        pg.psql("postgres", &["-c", "CREATE DATABASE coturn"]);
        pg.psql("coturn", &["-f", "/usr/share/coturn/schema.sql"]);
        pg
    }

    pub fn psql(&self, db: &str, args: &[&str]) -> String {
        must(
            as_nobody(&require("psql", "postgresql-client"))
                .args(["-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.data)
                .args(["-p", &self.port.to_string(), "-U", DB_USER, "-d", db])
                .args(args),
        )
    }
}

impl Server for Postgres {
    fn conn(&self) -> String {
        // libpq's key=value form, the password quoted (it holds a blank).
        format!(
            "host=127.0.0.1 port={} dbname=coturn user={DB_USER} password='{DB_PASSWORD}' connect_timeout=10",
            self.port
        )
    }

    fn flags(&self) -> (&'static str, &'static str) {
        ("--psql-userdb", "-e")
    }

    fn process(&mut self) -> &mut Process {
        &mut self.server
    }

    fn start(&mut self) {
        let child = as_nobody(&self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.server = Process(Some(Guard(child)));
        let isready = require("pg_isready", "postgresql-client");
        let port = self.port.to_string();
        wait_ready("postgres", || {
            Command::new(&isready)
                .args(["-h", "127.0.0.1", "-p", &port])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    }
}

/// MariaDB, as root (`--user=root`), from a fresh data directory, on loopback TCP and a socket
/// in that directory.
pub struct Mariadb {
    data: PathBuf,
    port: u16,
    server: Process,
}

impl Mariadb {
    pub fn new(dir: &TempDir) -> Self {
        let data = dir.path().join("mariadb");
        must(
            Command::new(require("mariadb-install-db", "mariadb-server"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args([
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]),
        );
        let mut db = Mariadb {
            data,
            port: free_port(),
            server: Process(None),
        };
        db.start();
        db.client(
            None,
            &format!(
                "CREATE DATABASE coturn; \
                 CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD_NOSPACE}'; \
                 GRANT ALL ON coturn.* TO '{DB_USER}'@'127.0.0.1';"
            ),
        );
        let schema = std::fs::read_to_string("/usr/share/coturn/schema.sql")
            .expect("coturn's schema (Debian package `coturn`)");
        db.client(Some("coturn"), &schema);
        db
    }

    pub fn socket(&self) -> PathBuf {
        self.data.join("mysqld.sock")
    }

    /// Runs `sql` as root over the socket.
    pub fn client(&self, db: Option<&str>, sql: &str) -> String {
        must(
            Command::new(require("mariadb", "mariadb-client"))
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket().display()))
                .args(["-u", "root"])
                .args(db)
                .args(["-e", sql]),
        )
    }
}

impl Server for Mariadb {
    fn conn(&self) -> String {
        // coturn's form: blanks separate the pairs, so no value can hold one.
        format!(
            "host=127.0.0.1 port={} dbname=coturn user={DB_USER} password={DB_PASSWORD_NOSPACE} connect_timeout=10 read_timeout=10",
            self.port
        )
    }

    fn flags(&self) -> (&'static str, &'static str) {
        ("--mysql-userdb", "-M")
    }

    fn process(&mut self) -> &mut Process {
        &mut self.server
    }

    fn start(&mut self) {
        let d = |key: &str, path: PathBuf| format!("--{key}={}", path.display());
        let child = Command::new(require("mariadbd", "mariadb-server"))
            .arg("--no-defaults")
            .arg(d("datadir", self.data.clone()))
            .arg(d("socket", self.socket()))
            .arg(d("pid-file", self.data.join("mysqld.pid")))
            .arg(d("log-error", self.data.join("error.log")))
            .arg(d("tmpdir", self.data.clone()))
            .args([
                "--user=root",
                "--bind-address=127.0.0.1",
                &format!("--port={}", self.port),
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.server = Process(Some(Guard(child)));
        let port = self.port;
        wait_ready("mariadbd", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }
}

/// Runs coturn's `turnadmin` with `args` on the server's database.
pub fn turnadmin(db: &dyn Server, args: &[&str]) {
    let tool = require("turnadmin", "coturn");
    let (_, option) = db.flags();
    must(Command::new(tool).args(args).arg(option).arg(db.conn()));
}

/// The server's password: in the connection string, never in the relay's log.
pub const PASSWORD: &str = "redis-pass-7f3a";

/// A `redis-server` of the test's own: loopback, a free port, its own directory (where
/// `turnadmin`'s SAVE writes its snapshot, which a restart reads back), killed by PID when
/// dropped.
pub struct RedisServer {
    pub dir: PathBuf,
    pub port: u16,
    guard: Option<Guard>,
}

impl RedisServer {
    pub fn start(dir: &TempDir) -> Self {
        let dir = dir.path().join("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        // A port that was free a moment ago: another process may take it first, so try again.
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut server = Self {
                dir: dir.clone(),
                port,
                guard: None,
            };
            if server.run() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 10 free ports");
    }

    /// Starts the server on its port; false if it exited (the port was taken).
    pub fn run(&mut self) -> bool {
        let tool = require("redis-server", "redis-server");
        let child = Command::new(tool)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut guard = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = guard.0.try_wait() {
                return false;
            }
            if self.answers() {
                self.guard = Some(guard);
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server on port {} did not answer: {}",
            self.port,
            std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
        );
    }

    /// It answers PING (after AUTH) with PONG.
    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let auth = format!("AUTH {PASSWORD}\r\nPING\r\n");
        if s.write_all(auth.as_bytes()).is_err() {
            return false;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"+PONG\r\n") {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
        true
    }

    /// Kills the server (by its PID); what `turnadmin` saved stays in its directory.
    pub fn stop(&mut self) {
        self.guard = None;
    }

    /// Starts it again on the same port, from what was saved.
    pub fn restart(&mut self) {
        assert!(
            self.run(),
            "redis-server did not start again on {}",
            self.port
        );
    }

    /// coturn's connection string for it, as `turnadmin -N` and `--redis-userdb` take it.
    pub fn conn(&self) -> String {
        format!(
            "ip=127.0.0.1 port={} dbname=0 password={PASSWORD} connect_timeout=5",
            self.port
        )
    }

    /// Runs coturn's `turnadmin -N` with `args`; panics with its output if it fails.
    pub fn turnadmin(&self, args: &[&str]) {
        let tool = require("turnadmin", "coturn");
        let out = run(
            Command::new(tool).args(args).arg("-N").arg(self.conn()),
            TIMEOUT,
        );
        assert!(
            out.status.success(),
            "turnadmin {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `redis-cli` with `args` (what `turnadmin` has no option for: peer ranges).
    pub fn cli(&self, args: &[&str]) -> String {
        let tool = require("redis-cli", "redis-tools");
        let out = run(
            Command::new(tool)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .env("REDISCLI_AUTH", PASSWORD)
                .args(args),
            TIMEOUT,
        );
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
