//! coturn's user database on PostgreSQL (`--psql-userdb`) and MariaDB (`--mysql-userdb`) end
//! to end: each test starts its own database server (Debian's `postgresql` and
//! `mariadb-server`) on loopback, on a free port, with its data in a fresh directory, loads
//! coturn's schema and has coturn's own `turnadmin` write users and secrets into it. The real
//! relay binary then authenticates them (coturn's `turnutils_uclient` with a long-term user and
//! with a REST credential), refuses wrong ones, sees users added and deleted while it runs, and
//! keeps serving allocations and known users while the server is stopped, reporting it in the
//! metric and `/readyz` until the server is back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::uclient::echo_peer;
use common::userdb::{
    Outage, REALM, TIMEOUT, accepted_call, added_and_deleted_user_is_seen, database_gone_and_back,
    relay_with, wrong_credentials_are_refused,
};
use common::{Guard, TempDir, free_port, require, run};

/// The database account the relay and turnadmin use.
const DB_USER: &str = "turn";
const DB_PASSWORD: &str = "turn pw";
const DB_PASSWORD_NOSPACE: &str = "turnpw";

/// A database server the test started, which it can stop and start again.
trait Server {
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
struct Process(Option<Guard>);

impl Process {
    fn stop(&mut self) {
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
fn must(cmd: &mut Command) -> String {
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
fn wait_ready(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops a server gracefully (SIGTERM, by its PID), then by force if it lingers.
fn terminate(guard: Guard) {
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
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    server: Process,
}

/// `cmd` as `nobody`.
fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new(require("setpriv", "util-linux"));
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(program);
    cmd
}

impl Postgres {
    fn new(dir: &TempDir) -> Self {
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

    fn psql(&self, db: &str, args: &[&str]) -> String {
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
struct Mariadb {
    data: PathBuf,
    port: u16,
    server: Process,
}

impl Mariadb {
    fn new(dir: &TempDir) -> Self {
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

    fn socket(&self) -> PathBuf {
        self.data.join("mysqld.sock")
    }

    /// Runs `sql` as root over the socket.
    fn client(&self, db: Option<&str>, sql: &str) -> String {
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
fn turnadmin(db: &dyn Server, args: &[&str]) {
    let tool = require("turnadmin", "coturn");
    let (_, option) = db.flags();
    must(Command::new(tool).args(args).arg(option).arg(db.conn()));
}

/// The whole story on one server: users and secrets from turnadmin accepted, wrong ones
/// refused, changes seen while running, the server stopped and started again.
fn scenario(db: &mut dyn Server) {
    turnadmin(db, &["-a", "-u", "alice", "-r", REALM, "-p", "wonderland"]);
    turnadmin(db, &["-s", "dbsecret", "-r", REALM]);
    let (flag, _) = db.flags();
    let conn = db.conn();
    let relay = relay_with(&[flag, &conn]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));
    let lines = relay.log_lines().join("\n");
    assert!(
        !lines.contains(DB_PASSWORD) && !lines.contains(DB_PASSWORD_NOSPACE),
        "the password is in the log:\n{lines}"
    );

    // A long-term user and a REST credential, with coturn's client.
    accepted_call(
        &relay,
        peer,
        &["-u", "alice", "-w", "wonderland"],
        30,
        &log(),
    );
    accepted_call(&relay, peer, &["-W", "dbsecret", "-u", "bob"], 30, &log());
    // Wrong ones are refused: a wrong password, an unknown user, a secret not in the database.
    wrong_credentials_are_refused(&relay, peer, &log);

    // A user added and deleted by turnadmin while the relay runs.
    let said = format!("{flag}: ");
    added_and_deleted_user_is_seen(&relay, &|args| turnadmin(db, args), &said, "turnadmin");
    assert_eq!(relay.metric("xdpturn_userdb_up"), 1.0);

    // The server stops and starts again.
    database_gone_and_back(
        &relay,
        peer,
        Outage {
            db,
            stop: |db| db.stop(),
            start: |db| db.start(),
            turnadmin,
            said: &said,
        },
    );
    let lines = relay.log_lines().join("\n");
    assert!(
        !lines.contains(DB_PASSWORD) && !lines.contains(DB_PASSWORD_NOSPACE),
        "the password is in the log:\n{lines}"
    );
}

#[test]
fn postgresql_user_database_written_by_turnadmin() {
    let dir = TempDir::new("userdb-pg");
    let mut db = Postgres::new(&dir);
    scenario(&mut db);
}

#[test]
fn mariadb_user_database_written_by_turnadmin() {
    let dir = TempDir::new("userdb-mariadb");
    let mut db = Mariadb::new(&dir);
    scenario(&mut db);
}

#[test]
fn two_user_databases_are_refused_at_start() {
    let out = run(
        Command::new(common::relay_bin()).args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--userdb",
            "/nonexistent/turndb",
            "--psql-userdb",
            "host=127.0.0.1 password=s3cret",
        ]),
        TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("one user database at a time: userdb, psql-userdb"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    // A connection string that does not parse is refused at start, naming the key.
    let out = run(
        Command::new(common::relay_bin()).args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--mysql-userdb",
            "host=127.0.0.1 password=s3cret flavour=x",
        ]),
        TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("mysql-userdb") && stderr.contains("\"flavour\""),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
