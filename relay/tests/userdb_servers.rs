//! coturn's user database on PostgreSQL (`--psql-userdb`) and MariaDB (`--mysql-userdb`) end
//! to end: each test starts its own database server (Debian's `postgresql` and
//! `mariadb-server`) on loopback, on a free port, with its data in a fresh directory, loads
//! coturn's schema and has coturn's own `turnadmin` write users and secrets into it. The real
//! relay binary then authenticates them (coturn's `turnutils_uclient` with a long-term user and
//! with a REST credential), refuses wrong ones, sees users added and deleted while it runs, and
//! keeps serving allocations and known users while the server is stopped, reporting it in the
//! metric and `/readyz` until the server is back.

mod common;

use std::process::Command;

use common::dbservers::{DB_PASSWORD, DB_PASSWORD_NOSPACE, Mariadb, Postgres, Server, turnadmin};
use common::uclient::echo_peer;
use common::userdb::{
    Outage, REALM, TIMEOUT, accepted_call, added_and_deleted_user_is_seen, database_gone_and_back,
    relay_with, wrong_credentials_are_refused,
};
use common::{TempDir, run};

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
