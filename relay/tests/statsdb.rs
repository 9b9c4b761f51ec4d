//! coturn's traffic records (`--redis-statsdb`) end to end: the real relay binary publishes to a
//! real `redis-server` started here (loopback, a free port, a directory of its own, a password),
//! and `redis-cli psubscribe` on coturn's documented patterns is the subscriber, as a dashboard
//! or a billing script would be. coturn's `turnutils_uclient` makes the calls (channels, and Send
//! indications); what it sent and got back is what the records must say. A database that is
//! away costs reports (counted), never relaying, and reports resume when it is back.

mod common;

use std::time::Duration;

use common::dbservers::{PASSWORD, RedisServer};
use common::statsdb::{Subscriber, assert_call_records, by_allocation, deleted, until, until_with};
use common::uclient::{Stats, echo_peer, uclient};
use common::userdb::{REALM, relay_with};
use common::{Relay, TempDir};

fn subscribe(server: &RedisServer, dir: &TempDir) -> Subscriber {
    Subscriber::start(&[], server.port, Some(PASSWORD), dir.path())
}

/// The relay on loopback with user alice and `--redis-statsdb conn`.
fn relay(conn: &str) -> Relay {
    relay_with(&["--user", "alice:wonderland", "--redis-statsdb", conn])
}

/// A uclient call of `n` messages of 120 bytes through `relay` (one allocation: no RTCP).
fn call(relay: &Relay, peer: std::net::SocketAddr, extra: &[&str], n: u64) -> Stats {
    let n_text = n.to_string();
    let args = [
        &[
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-c",
            "-m",
            "1",
            "-l",
            "120",
            "-n",
            &n_text,
        ][..],
        extra,
    ]
    .concat();
    let stats = uclient(relay.v4(), peer, &args, Duration::from_secs(60));
    stats.assert_all_arrived(
        n,
        &format!("\nrelay log:\n{}", relay.log_lines().join("\n")),
    );
    stats
}

#[test]
fn calls_are_published_in_coturns_keys_and_channels() {
    let dir = TempDir::new("statsdb-calls");
    let server = RedisServer::start(&dir);
    let subscriber = subscribe(&server, &dir);
    let relay = relay(&server.conn());
    let (_peer, peer) = echo_peer("127.0.0.1");

    // One call on channels, one with Send and Data indications.
    let channels = call(&relay, peer, &[], 40);
    // uclient leaves one allocation of its own behind (allocated and refreshed, never used nor
    // deleted): its status key is there while it lives, and expires with it.
    let live = by_allocation(&subscriber.messages(), REALM, "alice");
    let (left_id, left) = live
        .iter()
        .find(|(_, r)| !r.status.iter().any(|s| s == "deleted"))
        .expect("uclient's unused allocation");
    let key = format!("turn/realm/{REALM}/user/alice/allocation/{left_id}/status");
    let status = server.cli(&["GET", &key]);
    assert_eq!(Some(status.trim()), left.status.last().map(String::as_str));
    let lifetime: i64 = status
        .trim()
        .rsplit('=')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("lifetime=N");
    let ttl: i64 = server.cli(&["TTL", &key]).trim().parse().expect("a TTL");
    assert!(
        (1..=lifetime + 60).contains(&ttl),
        "the key expires with the allocation ({lifetime} s): {ttl}"
    );
    // A reload keeps the records coming.
    relay.signal("HUP");
    relay.wait_for_log(&["configuration reloaded"], Duration::from_secs(10));
    let indications = call(&relay, peer, &["-s"], 30);

    // The two allocations that carried the calls end (uclient deletes them) and say so.
    let what = || format!("two allocations deleted: {:#?}", subscriber.messages());
    until_with(Duration::from_secs(30), what, || {
        deleted(&subscriber, REALM, "alice").len() == 2
    });
    for ((id, records), stats) in deleted(&subscriber, REALM, "alice")
        .iter()
        .zip([&channels, &indications])
    {
        let more = format!("uclient:\n{}", stats.text);
        assert_call_records(id, records, stats.sent, stats.received, 120, &more);
        let key = format!("turn/realm/{REALM}/user/alice/allocation/{id}/status");
        assert_eq!(server.cli(&["EXISTS", &key]).trim(), "0", "{more}");
    }
    // The last record is the second call's deletion.
    let messages = subscriber.messages();
    let last = &messages[messages.len() - 1];
    assert!(
        last.0.ends_with("/status") && last.1 == "deleted",
        "{messages:?}"
    );
    assert!(relay.metric("xdpturn_statsdb_reports_total{result=\"published\"}") >= 6.0);
    assert_eq!(
        relay.metric("xdpturn_statsdb_reports_total{result=\"dropped\"}"),
        0.0
    );
    assert_eq!(relay.metric("xdpturn_statsdb_up"), 1.0);
    assert!(
        !relay.log_lines().iter().any(|l| l.contains(PASSWORD)),
        "the password is in the log"
    );
}

#[test]
fn a_database_away_costs_reports_not_relaying() {
    let dir = TempDir::new("statsdb-away");
    let mut server = RedisServer::start(&dir);
    server.stop();
    let relay = relay(&server.conn());
    let (_peer, peer) = echo_peer("127.0.0.1");

    // Away: the call goes through, its reports are dropped and counted, the log says so.
    call(&relay, peer, &[], 20);
    until(Duration::from_secs(20), "dropped reports counted", || {
        relay.metric("xdpturn_statsdb_reports_total{result=\"dropped\"}") > 0.0
    });
    assert_eq!(relay.metric("xdpturn_statsdb_up"), 0.0);
    relay.wait_for_log(
        &["statistics database does not answer"],
        Duration::from_secs(5),
    );

    // Back on its port: the next reports are published, and the log says that too.
    server.restart();
    let subscriber = subscribe(&server, &dir);
    call(&relay, peer, &[], 20);
    until(
        Duration::from_secs(30),
        "a deletion published after the return",
        || {
            subscriber
                .messages()
                .iter()
                .any(|(c, t)| c.ends_with("/status") && t == "deleted")
        },
    );
    assert_eq!(relay.metric("xdpturn_statsdb_up"), 1.0);
    relay.wait_for_log(&["takes reports again"], Duration::from_secs(5));
}
