//! `xdpturn-relay admin`, the write side of coturn's user database, against coturn's own
//! `turnadmin`, both ways, on each database the relay reads: SQLite (a file this tool creates),
//! and PostgreSQL, MariaDB and Redis servers started here (`common/dbservers.rs`). What ours
//! writes, `turnadmin` lists (`-l`, `-S`, `-G`, line for line as ours lists it); what
//! `turnadmin` writes, ours lists. A real relay on the database accepts a user ours added
//! (coturn's `turnutils_uclient`), refuses it within seconds once ours deleted it, and applies a
//! secret rotation and a realm option ours wrote. Mistakes (no database, two, no realm) are
//! refused with a clear message and a non-zero exit, and no password reaches the output.

mod common;

use std::process::{Command, Output};

use common::dbservers::{self, Mariadb, Postgres, RedisServer, Server};
use common::uclient::echo_peer;
use common::userdb::{
    CHANGE_BOUND, REALM, TIMEOUT, accepted_call, added_and_deleted_user_is_seen, allocate,
    fresh_ip, realm_user_quota_applies, relay_with, rotated_secret_is_seen, until,
};
use common::{TempDir, relay_bin, require, run};

/// A password that must never be printed.
const SECRET_PW: &str = "wonderland";

/// The database under test, as both tools name it.
struct Target {
    /// The relay's flag (ours takes the same): `--userdb`, `--psql-userdb`, ...
    flag: &'static str,
    /// turnadmin's option: `-b`, `-e`, `-M`, `-N`.
    option: &'static str,
    /// The file or connection string.
    conn: String,
    /// Whether `-G` lists in Redis's form.
    redis: bool,
}

/// `xdpturn-relay admin` with `args` and `db`, no XDPTURN_ variable from the environment.
fn ours_raw(args: &[&str], db: &[&str]) -> Output {
    let mut cmd = Command::new(relay_bin());
    cmd.arg("admin").args(args).args(db);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("XDPTURN_") {
            cmd.env_remove(key);
        }
    }
    run(&mut cmd, TIMEOUT)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

impl Target {
    /// `xdpturn-relay admin` with `args` on the database; its standard output; panics with its
    /// output unless it succeeds, or if it printed the password.
    fn ours(&self, args: &[&str]) -> String {
        let out = ours_raw(args, &[self.flag, &self.conn]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "xdpturn-relay admin {args:?} failed: {stdout}{stderr}"
        );
        assert!(
            !stdout.contains(SECRET_PW) && !stderr.contains(SECRET_PW),
            "the password was printed: {stdout}{stderr}"
        );
        stdout
    }

    /// coturn's `turnadmin` with `args` on the database: the lines it printed on standard
    /// output, its log lines (`0: : ...`, also on standard output) left out.
    fn turnadmin(&self, args: &[&str]) -> String {
        let tool = require("turnadmin", "coturn");
        let out = run(
            Command::new(tool)
                .args(args)
                .arg(self.option)
                .arg(&self.conn),
            TIMEOUT,
        );
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "turnadmin {args:?} failed: {stdout}{}",
            text(&out.stderr)
        );
        stdout
            .lines()
            .filter(|l| !l.contains(": : "))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

/// `text`'s lines, sorted (turnadmin lists Redis's keys in the server's order).
fn sorted(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

/// Both ways on one database: ours writes, turnadmin lists, and the other way round; the
/// lists agree line for line.
fn both_ways(db: &Target) {
    // Ours writes: two users in two realms, a secret, realm options.
    db.ours(&["-a", "-u", "alice", "-r", REALM, "-p", SECRET_PW]);
    db.ours(&["-a", "-u", "zed", "-r", "other.org", "-p", "pw"]);
    db.ours(&["-s", "dbsecret", "-r", REALM]);
    db.ours(&["-s", "oursecret", "-r", REALM]);
    db.ours(&[
        "-g",
        "-r",
        REALM,
        "--max-bps",
        "500000",
        "--total-quota",
        "40",
    ]);
    // ... turnadmin lists it.
    let listed = db.turnadmin(&["-l"]);
    assert_eq!(
        sorted(&listed),
        ["alice[example.org]", "zed[other.org]"],
        "{listed}"
    );
    let listed = db.turnadmin(&["-S", "-r", REALM]);
    assert_eq!(
        sorted(&listed),
        ["dbsecret[example.org]", "oursecret[example.org]"],
        "{listed}"
    );
    let options = db.turnadmin(&["-G"]);
    let expected = if db.redis {
        [
            "example.org/max-bps = 500000",
            "example.org/total-quota = 40",
        ]
    } else {
        ["max-bps[example.org]=500000", "total-quota[example.org]=40"]
    };
    assert_eq!(sorted(&options), expected, "{options}");

    // turnadmin writes: ours lists it, as turnadmin does.
    db.turnadmin(&["-a", "-u", "bob", "-r", REALM, "-p", "builder"]);
    db.turnadmin(&["-g", "-r", REALM, "--user-quota", "9"]);
    db.turnadmin(&["-s", "theirsecret", "-r", REALM]);
    for (ours, theirs) in [
        (vec!["-l"], vec!["-l"]),
        (vec!["-l", "-r", REALM], vec!["-l", "-r", REALM]),
        (vec!["-S"], vec!["-S"]),
        (vec!["-G", "-r", REALM], vec!["-G", "-r", REALM]),
    ] {
        let (a, b) = (db.ours(&ours), db.turnadmin(&theirs));
        assert_eq!(
            sorted(&a),
            sorted(&b),
            "{ours:?}: ours\n{a}turnadmin's\n{b}"
        );
    }
    let users = db.ours(&["-l", "-r", REALM]);
    assert_eq!(
        users, "alice[example.org]\nbob[example.org]\n",
        "sorted by realm and name"
    );
    let options = db.ours(&["--list-realm-options"]);
    assert!(
        options.contains(if db.redis {
            "example.org/user-quota = 9"
        } else {
            "user-quota[example.org]=9"
        }),
        "{options}"
    );

    // Removing: a secret, an option (0 removes it), a user; turnadmin sees each.
    db.ours(&["-X", "theirsecret", "-r", REALM]);
    db.ours(&["-g", "-r", REALM, "--total-quota", "0", "--user-quota", "0"]);
    db.ours(&["-d", "-u", "zed", "-r", "other.org"]);
    let secrets = db.turnadmin(&["-S"]);
    assert_eq!(
        sorted(&secrets),
        ["dbsecret[example.org]", "oursecret[example.org]"],
        "{secrets}"
    );
    let options = db.turnadmin(&["-G"]);
    assert!(
        !options.contains("total-quota") && !options.contains("user-quota"),
        "{options}"
    );
    assert!(options.contains("500000"), "{options}");
    let users = db.turnadmin(&["-l"]);
    assert_eq!(
        sorted(&users),
        ["alice[example.org]", "bob[example.org]"],
        "{users}"
    );
    // Deleting what is not there succeeds, as turnadmin's does, and says so.
    let out = ours_raw(&["-d", "-u", "nobody", "-r", REALM], &[db.flag, &db.conn]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("not there"), "{out:?}");
}

/// A relay on the database serves what ours wrote: alice (added by ours) relays through
/// coturn's client and her REST secret works; a user ours adds and deletes while it runs is
/// accepted and then refused, a secret rotated by ours and a realm option set by ours apply,
/// each within [`CHANGE_BOUND`]; alice deleted by ours is refused.
fn relay_serves_what_ours_wrote(db: &Target) {
    let relay = relay_with(&[db.flag, &db.conn, "--allow-peer", "127.0.0.1"]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));
    accepted_call(&relay, peer, &["-u", "alice", "-w", SECRET_PW], 20, &log());
    accepted_call(&relay, peer, &["-W", "oursecret", "-u", "dave"], 20, &log());
    accepted_call(&relay, peer, &["-u", "bob", "-w", "builder"], 20, &log());

    let ours = |args: &[&str]| {
        db.ours(args);
    };
    let said = format!("{}: ", db.flag);
    added_and_deleted_user_is_seen(&relay, &ours, &said, "xdpturn-relay admin");
    rotated_secret_is_seen(&relay, &ours, "xdpturn-relay admin");
    realm_user_quota_applies(&relay, &ours, "xdpturn-relay admin");

    db.ours(&["-d", "-u", "alice", "-r", REALM]);
    let took = until(CHANGE_BOUND, "alice refused", &relay, || {
        allocate(&relay, &fresh_ip(), "alice", SECRET_PW) == Err(Some(401))
    });
    println!("{said}alice deleted by xdpturn-relay admin -d was refused after {took:?}");
}

fn scenario(db: &Target) {
    both_ways(db);
    relay_serves_what_ours_wrote(db);
}

#[test]
fn sqlite_database_created_and_written_by_ours() {
    let dir = TempDir::new("admin-sqlite");
    let file = dir.path().join("turndb");
    // A list of a database that is not there is refused, and creates nothing.
    let out = ours_raw(&["-l"], &["--userdb", &file.display().to_string()]);
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("no such database"), "{out:?}");
    assert!(!file.exists());
    // The first write creates it with coturn's schema, which turnadmin reads.
    scenario(&Target {
        flag: "--userdb",
        option: "-b",
        conn: file.display().to_string(),
        redis: false,
    });
}

#[test]
fn postgresql_database_written_both_ways() {
    let dir = TempDir::new("admin-pg");
    let db = Postgres::new(&dir);
    let (flag, option) = db.flags();
    scenario(&Target {
        flag,
        option,
        conn: db.conn(),
        redis: false,
    });
    // A wrong password is refused clearly, without echoing the connection string.
    let wrong = db.conn().replace(dbservers::DB_PASSWORD, "not-it");
    let out = ours_raw(&["-l"], &["--psql-userdb", &wrong]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("postgresql turn@127.0.0.1") && stderr.contains("password"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-it"), "{stderr}");
}

#[test]
fn mariadb_database_written_both_ways() {
    let dir = TempDir::new("admin-mariadb");
    let db = Mariadb::new(&dir);
    let (flag, option) = db.flags();
    scenario(&Target {
        flag,
        option,
        conn: db.conn(),
        redis: false,
    });
}

#[test]
fn redis_database_written_both_ways() {
    let dir = TempDir::new("admin-redis");
    let mut server = RedisServer::start(&dir);
    scenario(&Target {
        flag: "--redis-userdb",
        option: "-N",
        conn: server.conn(),
        redis: true,
    });
    // Ours follows each write with SAVE, as turnadmin does: what it wrote outlives a restart
    // of a server that takes no snapshots by itself.
    let db = Target {
        flag: "--redis-userdb",
        option: "-N",
        conn: server.conn(),
        redis: true,
    };
    db.ours(&["-a", "-u", "kept", "-r", REALM, "-p", "pw"]);
    server.stop();
    server.restart();
    let users = db.turnadmin(&["-l", "-r", REALM]);
    assert!(users.contains("kept[example.org]"), "{users}");
    // The layout is coturn's: the key, and the secrets as a set.
    let key = server.cli(&["GET", &format!("turn/realm/{REALM}/user/kept/key")]);
    assert_eq!(
        key.trim(),
        relay::credentials::key_hex("kept", REALM, "pw").trim_start_matches("0x")
    );
    let kind = server.cli(&["TYPE", &format!("turn/realm/{REALM}/secret")]);
    assert_eq!(kind.trim(), "set");
    // A secret stored by hand as a string (which the relay reads too) is listed as well.
    server.cli(&["SET", "turn/realm/string.org/secret", "lone"]);
    assert_eq!(db.ours(&["-S", "-r", "string.org"]), "lone[string.org]\n");
    let all = db.ours(&["-S"]);
    assert!(
        all.contains("lone[string.org]\n") && all.contains("oursecret[example.org]\n"),
        "{all}"
    );
}

#[test]
fn mistakes_are_refused_clearly() {
    let dir = TempDir::new("admin-errors");
    let file = dir.path().join("turndb").display().to_string();
    let refused = |args: &[&str], db: &[&str], needle: &str| {
        let out = ours_raw(args, db);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} {db:?} succeeded: {stderr}");
        assert!(stderr.contains(needle), "{args:?} {db:?}: {stderr}");
        assert!(
            !stderr.contains(SECRET_PW) && !text(&out.stdout).contains(SECRET_PW),
            "{stderr}"
        );
    };
    let add = ["-a", "-u", "alice", "-r", REALM, "-p", SECRET_PW];
    refused(&add, &[], "no user database: give one of --userdb FILE");
    refused(
        &add,
        &["--userdb", &file, "--redis-userdb", "ip=127.0.0.1"],
        "one user database at a time: userdb, redis-userdb",
    );
    refused(
        &["-a", "-u", "alice", "-p", SECRET_PW],
        &["--userdb", &file],
        "the realm must be set",
    );
    refused(
        &["-a", "-u", "alice", "-r", REALM],
        &["--userdb", &file],
        "the password must be set",
    );
    refused(
        &["-d", "-r", REALM],
        &["--userdb", &file],
        "the user must be set",
    );
    refused(&["-g", "-r", REALM], &["--userdb", &file], "--max-bps");
    // One operation at a time, and one is needed.
    refused(&["-l", "-S"], &["--userdb", &file], "cannot be used with");
    refused(&["-r", REALM], &["--userdb", &file], "required");
    // A connection string that does not parse names the key, not the password.
    refused(
        &["-l"],
        &[
            "--mysql-userdb",
            &format!("host=h password={SECRET_PW} flavour=x"),
        ],
        "\"flavour\"",
    );
    // A server that is not there: refused within the bound, saying where.
    let port = common::free_port();
    refused(
        &["-l"],
        &[
            "--redis-userdb",
            &format!("ip=127.0.0.1 port={port} password={SECRET_PW}"),
        ],
        &format!("redis 127.0.0.1:{port} db 0"),
    );
    assert!(!std::path::Path::new(&file).exists(), "nothing was created");
}
