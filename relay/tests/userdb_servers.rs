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

use common::turn::TurnClient;
use common::uclient::{echo_peer, uclient};
use common::userdb::{
    CHANGE_BOUND, REALM, TIMEOUT, allocate, echoes, fresh_ip, refused_call, relay_with, until,
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
    fn stop(&mut self);
    fn start(&mut self);
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
    server: Option<Guard>,
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
            server: None,
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

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            terminate(server);
        }
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
        self.server = Some(Guard(child));
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

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// MariaDB, as root (`--user=root`), from a fresh data directory, on loopback TCP and a socket
/// in that directory.
struct Mariadb {
    data: PathBuf,
    port: u16,
    server: Option<Guard>,
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
            server: None,
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

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            terminate(server);
        }
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
        self.server = Some(Guard(child));
        let port = self.port;
        wait_ready("mariadbd", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
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
    let call = |creds: &[&str]| {
        let args = [creds, &["-m", "1", "-n", "30", "-l", "120"]].concat();
        uclient(relay.v4(), peer, &args, TIMEOUT)
    };
    call(&["-u", "alice", "-w", "wonderland"]).assert_all_arrived(30, &log());
    call(&["-W", "dbsecret", "-u", "bob"]).assert_all_arrived(30, &log());
    // Wrong ones are refused: a wrong password, an unknown user, a secret not in the database.
    for creds in [
        &["-u", "alice", "-w", "mirror"][..],
        &["-u", "nobody", "-w", "wonderland"],
        &["-W", "not the secret", "-u", "bob"],
    ] {
        let stats = refused_call(&relay, peer, creds);
        assert!(
            !stats.exited_ok && stats.received == 0,
            "{creds:?} was accepted:\n{}{}",
            stats.text,
            log()
        );
    }
    assert_eq!(
        allocate(&relay, &fresh_ip(), "alice", "mirror"),
        Err(Some(401))
    );

    // A user added and deleted by turnadmin while the relay runs.
    assert_eq!(allocate(&relay, &fresh_ip(), "carol", "pw"), Err(Some(401)));
    turnadmin(db, &["-a", "-u", "carol", "-r", REALM, "-p", "pw"]);
    let added = until(CHANGE_BOUND, "carol accepted", &relay, || {
        allocate(&relay, &fresh_ip(), "carol", "pw").is_ok()
    });
    println!("{flag}: a user added by turnadmin -a was accepted after {added:?}");
    turnadmin(db, &["-d", "-u", "carol", "-r", REALM]);
    let deleted = until(CHANGE_BOUND, "carol refused", &relay, || {
        allocate(&relay, &fresh_ip(), "carol", "pw") == Err(Some(401))
    });
    println!("{flag}: a user deleted by turnadmin -d was refused after {deleted:?}");
    assert_eq!(relay.metric("xdpturn_userdb_up"), 1.0);

    // The server stops: an allocation keeps relaying, the known user allocates again.
    let mut client = TurnClient::new(relay.v4(), &fresh_ip(), "alice", "wonderland", REALM);
    client.allocate().expect("alice allocates");
    assert_eq!(client.create_permission(peer), None);
    assert!(echoes(&client, peer), "relaying before{}", log());
    db.stop();
    let down = until(CHANGE_BOUND, "userdb_up 0", &relay, || {
        relay.metric("xdpturn_userdb_up") == 0.0
    });
    println!("{flag}: the stopped server was noticed after {down:?}");
    let (status, body) = relay.http_get("/readyz");
    assert_eq!(status, 200, "still ready: {body}");
    assert!(
        body.contains("userdb: down (serving with what was last read)\n"),
        "{body}"
    );
    assert!(echoes(&client, peer), "relaying while down{}", log());
    assert_eq!(client.create_permission(peer), None, "{}", log());
    // Past the cache's lifetime: the refresh fails, the key read last serves.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        allocate(&relay, &fresh_ip(), "alice", "wonderland").is_ok(),
        "known user while down{}",
        log()
    );
    assert_eq!(
        allocate(&relay, &fresh_ip(), "erin", "pw"),
        Err(Some(401)),
        "{}",
        log()
    );

    // Back: seen by itself, and new users with it.
    db.start();
    let back = until(CHANGE_BOUND, "userdb_up 1", &relay, || {
        relay.metric("xdpturn_userdb_up") == 1.0
    });
    println!("{flag}: the restarted server was seen after {back:?}");
    let (status, body) = relay.http_get("/readyz");
    assert_eq!(
        (status, body.contains("userdb: up\n")),
        (200, true),
        "{body}"
    );
    assert!(echoes(&client, peer), "relaying after{}", log());
    turnadmin(db, &["-a", "-u", "frank", "-r", REALM, "-p", "pw"]);
    until(
        CHANGE_BOUND,
        "a user added after the return",
        &relay,
        || allocate(&relay, &fresh_ip(), "frank", "pw").is_ok(),
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
