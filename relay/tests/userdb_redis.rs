//! coturn's Redis user database (`--redis-userdb`) end to end, against a real `redis-server`
//! started here (loopback, a free port, a directory of its own, a password, no automatic
//! snapshots): users, secrets and realm options written by coturn's own `turnadmin -N` are
//! what the real relay binary authenticates and applies (coturn's `turnutils_uclient`
//! allocating and relaying, with long-term and REST credentials, a codec-built client checking
//! error codes); changes made while the relay runs are seen within a bounded, measured time; a
//! server that stops leaves allocations and known users served, reported in the metric and
//! `/readyz`, until it is back on its port; and a flood of Allocates with random usernames makes
//! a bounded number of queries. The password never reaches the relay's log.

mod common;

use std::time::Duration;

use common::dbservers::{PASSWORD, RedisServer};
use common::uclient::echo_peer;
use common::userdb::{
    CHANGE_BOUND, Flood, Outage, REALM, accepted_call, added_and_deleted_user_is_seen, allocate,
    database_gone_and_back, flood_of_random_usernames, flood_was_bounded, fresh_ip,
    peer_ranges_join_the_built_in_rules, port_range, realm_user_quota_applies,
    rotated_secret_is_seen, until, wrong_credentials_are_refused,
};
use common::{Relay, TempDir};

/// A fresh server with what `turnadmin` wrote: user alice (password "wonderland") and the
/// shared secret "dbsecret" in the realm.
fn fresh_server(dir: &TempDir) -> RedisServer {
    let server = RedisServer::start(dir);
    server.turnadmin(&["-a", "-u", "alice", "-r", REALM, "-p", "wonderland"]);
    server.turnadmin(&["-s", "dbsecret", "-r", REALM]);
    server
}

/// The relay on loopback with `--redis-userdb` as its only credential source.
fn relay(server: &RedisServer, extra: &[&str]) -> Relay {
    let (min, max) = port_range();
    let conn = server.conn();
    let relay = Relay::start(
        &[
            &[
                "--realm",
                REALM,
                "--redis-userdb",
                &conn,
                "--min-port",
                &min,
                "--max-port",
                &max,
            ][..],
            extra,
        ]
        .concat(),
    );
    relay.wait_for_log(&["user database open"], Duration::from_secs(10));
    relay
}

fn assert_no_password(relay: &Relay) {
    let lines = relay.log_lines();
    assert!(
        !lines.iter().any(|l| l.contains(PASSWORD)),
        "the password is in the log:\n{}",
        lines.join("\n")
    );
}

#[test]
fn turnadmin_users_and_secrets_are_accepted_and_realm_options_apply() {
    let dir = TempDir::new("redis-accept");
    let server = fresh_server(&dir);
    let relay = relay(&server, &["--allow-peer", "127.0.0.1"]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    let log = || format!("\nrelay log:\n{}", relay.log_lines().join("\n"));
    let database = relay.wait_for_log(&["user database open"], Duration::from_secs(1));
    assert!(
        database.contains(&format!("redis 127.0.0.1:{} db 0", server.port)),
        "{database}"
    );

    // A long-term user, as turnadmin -a stored it (its hmackey), with coturn's client.
    accepted_call(
        &relay,
        peer,
        &["-u", "alice", "-w", "wonderland"],
        50,
        &log(),
    );
    // A REST credential from the secret turnadmin -s stored.
    accepted_call(&relay, peer, &["-W", "dbsecret", "-u", "bob"], 50, &log());
    wrong_credentials_are_refused(&relay, peer, &log);

    // An open password stored by hand (coturn's Redis-only option) is accepted too.
    server.cli(&[
        "SET",
        &format!("turn/realm/{REALM}/user/olga/password"),
        "open",
    ]);
    until(CHANGE_BOUND, "olga accepted", &relay, || {
        allocate(&relay, &fresh_ip(), "olga", "open").is_ok()
    });
    assert_eq!(
        allocate(&relay, &fresh_ip(), "olga", "shut"),
        Err(Some(401))
    );

    realm_user_quota_applies(&relay, &|args| server.turnadmin(args), "turnadmin -N");
    assert_no_password(&relay);
}

#[test]
fn peer_ranges_from_the_database_join_the_built_in_rules() {
    let dir = TempDir::new("redis-peers");
    let server = fresh_server(&dir);
    // No --allow-peer: the built-in rules deny the loopback echo peer.
    let relay = relay(&server, &[]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    // Ranges in coturn's sets.
    let key = |what: &str| format!("turn/realm/{REALM}/{what}");
    peer_ranges_join_the_built_in_rules(
        &relay,
        peer,
        ("allowed-peer-ip", &|| {
            server.cli(&["SADD", &key("allowed-peer-ip"), "127.0.0.0-127.0.0.255"]);
        }),
        ("denied-peer-ip", &|| {
            server.cli(&["SADD", &key("denied-peer-ip"), "127.0.0.1"]);
        }),
        "member",
    );
}

#[test]
fn users_and_secrets_changed_by_turnadmin_are_seen_while_running() {
    let dir = TempDir::new("redis-live");
    let server = fresh_server(&dir);
    let relay = relay(&server, &[]);
    let turnadmin = |args: &[&str]| server.turnadmin(args);
    added_and_deleted_user_is_seen(&relay, &turnadmin, "", "turnadmin -N");
    // Secrets rotate the same way.
    rotated_secret_is_seen(&relay, &turnadmin, "turnadmin -N");
    assert_no_password(&relay);
}

#[test]
fn a_stopped_server_leaves_known_users_and_allocations_served_until_it_returns() {
    let dir = TempDir::new("redis-down");
    let mut server = fresh_server(&dir);
    let relay = relay(&server, &["--allow-peer", "127.0.0.1"]);
    let (_peer, peer) = echo_peer("127.0.0.1");
    // The server goes (killed by its PID), and comes back on its port with what turnadmin
    // saved.
    database_gone_and_back(
        &relay,
        peer,
        Outage {
            db: &mut server,
            stop: RedisServer::stop,
            start: RedisServer::restart,
            turnadmin: RedisServer::turnadmin,
            said: "",
        },
    );
    assert_no_password(&relay);
}

#[test]
fn a_flood_of_random_usernames_makes_a_bounded_number_of_queries() {
    const FLOOD: u32 = 2000;
    let dir = TempDir::new("redis-flood");
    let server = fresh_server(&dir);
    let relay = relay(&server, &[]);
    let commands_before = commands_processed(&server);
    let flood = flood_of_random_usernames(&relay, "127.2.251.9:0", FLOOD);
    let commands = commands_processed(&server) - commands_before;
    let Flood {
        made,
        refused,
        busy,
        limited,
        ..
    } = flood;
    println!(
        "flood: {FLOOD} Allocates with random usernames: {made} user queries, {commands} \
         commands on the server in all (realm reads included), {refused} answered 401, {busy} \
         dropped over the lookup budget, {limited} dropped by the failed-authentication limiter"
    );
    // The server's own count agrees: one command per lookup, and a few for the realm reads.
    assert!(
        commands <= made + 50.0,
        "{commands} commands on the server for {made} lookups"
    );
    flood_was_bounded(&relay, &flood);
}

/// The commands the server has processed (`INFO stats`), as it counts them.
fn commands_processed(server: &RedisServer) -> f64 {
    server
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed in INFO stats")
}
