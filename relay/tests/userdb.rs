//! coturn's SQLite user database (`--userdb`) end to end: users, secrets and realm options
//! written by coturn's own `turnadmin` into a fresh database are what the real relay binary
//! authenticates and applies (coturn's `turnutils_uclient` allocating and relaying, a
//! codec-built client checking error codes); changes made while the relay runs are seen within
//! a bounded, measured time; a broken database leaves allocations and known users served,
//! reported in the metric, `/readyz` and the log, until it is restored; and a flood of
//! Allocates with random usernames makes a bounded number of queries.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::uclient::echo_peer;
use common::userdb::{
    Flood, Outage, REALM, TIMEOUT, accepted_call, added_and_deleted_user_is_seen,
    database_gone_and_back, flood_of_random_usernames, flood_was_bounded,
    peer_ranges_join_the_built_in_rules, port_range, realm_user_quota_applies, relay_with,
    rotated_secret_is_seen, wrong_credentials_are_refused,
};
use common::{Relay, TempDir, require, run};

/// Runs coturn's `turnadmin` with `args` on the database `db`; panics with its output if it
/// fails.
fn turnadmin(db: &Path, args: &[&str]) {
    let tool = require("turnadmin", "coturn");
    let out = run(Command::new(tool).args(args).arg("-b").arg(db), TIMEOUT);
    assert!(
        out.status.success(),
        "turnadmin {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database written by `turnadmin`: user alice (password "wonderland") and the shared
/// secret "dbsecret" in the realm.
fn fresh_db(dir: &TempDir) -> PathBuf {
    let db = dir.path().join("turndb");
    turnadmin(&db, &["-a", "-u", "alice", "-r", REALM, "-p", "wonderland"]);
    turnadmin(&db, &["-s", "dbsecret", "-r", REALM]);
    db
}

/// The relay on loopback with `--userdb db` as its only credential source.
fn relay(db: &Path) -> Relay {
    relay_with(&["--userdb", db.to_str().expect("utf-8 path")])
}

#[test]
fn turnadmin_users_and_secrets_are_accepted_and_realm_options_apply() {
    let dir = TempDir::new("userdb-accept");
    let db = fresh_db(&dir);
    turnadmin(&db, &["-a", "-u", "tess", "-r", REALM, "-p", "tcp pass"]);
    let relay = relay(&db);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));

    // A long-term user, as turnadmin -a stored it (its hmackey), with coturn's client.
    accepted_call(
        &relay,
        peer,
        &["-u", "alice", "-w", "wonderland"],
        50,
        &log(),
    );
    // Over TCP, a user not looked up yet: the parked request is answered on its connection.
    accepted_call(
        &relay,
        peer,
        &["-t", "-u", "tess", "-w", "tcp pass"],
        50,
        &log(),
    );
    // A REST credential from the secret turnadmin -s stored.
    accepted_call(&relay, peer, &["-W", "dbsecret", "-u", "bob"], 50, &log());
    wrong_credentials_are_refused(&relay, peer, &log);
    realm_user_quota_applies(&relay, &|args| turnadmin(&db, args), "turnadmin");
}

#[test]
fn users_added_and_deleted_by_turnadmin_are_seen_while_running() {
    let dir = TempDir::new("userdb-live");
    let db = fresh_db(&dir);
    let relay = relay(&db);
    added_and_deleted_user_is_seen(&relay, &|args| turnadmin(&db, args), "", "turnadmin");
    // Secrets rotate the same way.
    rotated_secret_is_seen(&relay, &|args| turnadmin(&db, args), "turnadmin");
}

/// Runs an SQL statement on the database with Debian's `sqlite3`, as coturn's web admin writes
/// what `turnadmin` has no option for (peer ranges).
fn sqlite3(db: &Path, sql: &str) {
    let tool = require("sqlite3", "sqlite3");
    let out = run(Command::new(tool).arg(db).arg(sql), TIMEOUT);
    assert!(
        out.status.success(),
        "sqlite3 {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn peer_ranges_from_the_database_join_the_built_in_rules() {
    let dir = TempDir::new("userdb-peers");
    let db = fresh_db(&dir);
    // No --allow-peer: the built-in rules deny the loopback echo peer.
    let (min, max) = port_range();
    let relay = Relay::start(&[
        "--realm",
        REALM,
        "--userdb",
        db.to_str().expect("utf-8 path"),
        "--min-port",
        &min,
        "--max-port",
        &max,
    ]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    peer_ranges_join_the_built_in_rules(
        &relay,
        peer,
        ("allowed_peer_ip", &|| {
            sqlite3(
                &db,
                &format!(
                    "INSERT INTO allowed_peer_ip (realm, ip_range) VALUES ('{REALM}', '127.0.0.0-127.0.0.255')"
                ),
            )
        }),
        ("denied_peer_ip", &|| {
            sqlite3(
                &db,
                &format!(
                    "INSERT INTO denied_peer_ip (realm, ip_range) VALUES ('{REALM}', '127.0.0.1')"
                ),
            )
        }),
        "row",
    );
}

/// Where the broken-database test moves the database `db` away to.
fn away(db: &Path) -> PathBuf {
    db.with_extension("away")
}

#[test]
fn a_broken_database_leaves_known_users_and_allocations_served_until_it_returns() {
    let dir = TempDir::new("userdb-down");
    let mut db = fresh_db(&dir);
    let relay = relay(&db);
    let (_peer, peer) = echo_peer("127.0.0.1");
    // The database goes: moved away, and garbage where it was; then restored.
    database_gone_and_back(
        &relay,
        peer,
        Outage {
            db: &mut db,
            stop: |db| {
                std::fs::rename(&*db, away(db)).expect("move the database away");
                std::fs::write(&*db, b"this is not an SQLite database").expect("garbage");
            },
            start: |db| {
                std::fs::remove_file(&*db).expect("remove garbage");
                std::fs::rename(away(db), &*db).expect("restore");
            },
            turnadmin: |db, args| turnadmin(db, args),
            said: "",
        },
    );
}

#[test]
fn a_flood_of_random_usernames_makes_a_bounded_number_of_queries() {
    const FLOOD: u32 = 2000;
    let dir = TempDir::new("userdb-flood");
    let db = fresh_db(&dir);
    let relay = relay(&db);
    let overflows_before = udp_receive_buffer_errors();
    let flood = flood_of_random_usernames(&relay, "127.0.0.9:0", FLOOD);
    let overflowed = udp_receive_buffer_errors() - overflows_before;
    let Flood {
        sent_in,
        made,
        refused,
        busy,
        limited,
        ..
    } = flood;
    println!(
        "flood: {FLOOD} Allocates with random usernames sent in {sent_in:?}: {made} user queries, \
         {refused} answered 401, {busy} dropped over the lookup budget, {limited} dropped by the \
         failed-authentication limiter, {overflowed} lost in full UDP receive buffers (the \
         host's count, any socket)"
    );
    flood_was_bounded(&relay, &flood);
}

/// The host's count of UDP datagrams dropped for a full receive buffer (`/proc/net/snmp`).
fn udp_receive_buffer_errors() -> i64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
