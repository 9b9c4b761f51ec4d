//! coturn's traffic records (`--redis-statsdb`) end to end: the real relay binary publishes to a
//! real `redis-server` started here (loopback, a free port, a directory of its own, a password),
//! and `redis-cli psubscribe` on coturn's documented patterns is the subscriber, as a dashboard
//! or a billing script would be. coturn's `turnutils_uclient` makes the calls (channels, and Send
//! indications); what it sent and got back is what the records must say. A database that is
//! away costs reports (counted), never relaying, and reports resume when it is back.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dbservers::{PASSWORD, RedisServer};
use common::process::{Guard, require};
use common::uclient::{Stats, echo_peer, uclient};
use common::userdb::{REALM, port_range};
use common::{Relay, TempDir};

/// `redis-cli psubscribe` on every allocation channel, its output in a file.
struct Subscriber {
    _process: Guard,
    out: PathBuf,
}

impl Subscriber {
    fn start(server: &RedisServer, dir: &TempDir) -> Self {
        let tool = require("redis-cli", "redis-tools");
        let out = dir.path().join("subscriber.out");
        let file = std::fs::File::create(&out).expect("subscriber output");
        let child = Command::new(tool)
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
            .env("REDISCLI_AUTH", PASSWORD)
            .args(["psubscribe", "turn/realm/*/user/*/allocation/*"])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-cli");
        let subscriber = Self {
            _process: Guard(child),
            out,
        };
        // Subscribed: redis-cli printed the confirmation.
        until(Duration::from_secs(10), "the subscription", || {
            subscriber.lines().len() >= 3
        });
        subscriber
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The messages received: (channel, text), in order.
    fn messages(&self) -> Vec<(String, String)> {
        let lines = self.lines();
        let mut messages = Vec::new();
        let mut i = 0;
        while i + 3 < lines.len() {
            if lines[i] == "pmessage" {
                messages.push((lines[i + 2].clone(), lines[i + 3].clone()));
                i += 4;
            } else {
                i += 1;
            }
        }
        messages
    }
}

fn until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    until_with(timeout, || what.to_owned(), &mut done)
}

/// [`until`] whose failure message is made when it fails (what was seen by then).
fn until_with(timeout: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{}: not within {timeout:?}",
            what()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One allocation's records: its status texts and its traffic records, by kind.
#[derive(Debug, Default)]
struct Records {
    status: Vec<String>,
    /// `traffic`, `traffic/peer`, `total_traffic`, `total_traffic/peer` -> their texts.
    traffic: BTreeMap<String, Vec<[u64; 4]>>,
}

/// The messages grouped by allocation (user and id, from the channel).
fn by_allocation(messages: &[(String, String)], user: &str) -> BTreeMap<String, Records> {
    let prefix = format!("turn/realm/{REALM}/user/{user}/allocation/");
    let mut all: BTreeMap<String, Records> = BTreeMap::new();
    for (channel, text) in messages {
        let Some(rest) = channel.strip_prefix(&prefix) else {
            continue;
        };
        let (id, what) = rest.split_once('/').expect("allocation/<id>/<what>");
        assert_eq!(id.len(), 18, "coturn's 18-digit id: {channel}");
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{channel}");
        let records = all.entry(id.to_owned()).or_default();
        if what == "status" {
            records.status.push(text.clone());
        } else {
            records
                .traffic
                .entry(what.to_owned())
                .or_default()
                .push(parse_traffic(text));
        }
    }
    all
}

/// "rcvp=1, rcvb=2, sentp=3, sentb=4" -> [1, 2, 3, 4], coturn's text exactly.
fn parse_traffic(text: &str) -> [u64; 4] {
    let mut values = [0u64; 4];
    let fields: Vec<&str> = text.split(", ").collect();
    assert_eq!(fields.len(), 4, "{text}");
    for ((field, key), value) in fields
        .iter()
        .zip(["rcvp", "rcvb", "sentp", "sentb"])
        .zip(&mut values)
    {
        let (k, v) = field.split_once('=').expect("key=value");
        assert_eq!(k, key, "{text}");
        *value = v.parse().expect("a number");
    }
    values
}

fn sum(records: &[[u64; 4]]) -> [u64; 4] {
    records.iter().fold([0; 4], |mut acc, r| {
        for (a, v) in acc.iter_mut().zip(r) {
            *a += v;
        }
        acc
    })
}

/// The relay on loopback with user alice and `--redis-statsdb conn`.
fn relay(conn: &str) -> Relay {
    let (min, max) = port_range();
    Relay::start(&[
        "--realm",
        REALM,
        "--user",
        "alice:wonderland",
        "--redis-statsdb",
        conn,
        "--allow-peer",
        "127.0.0.1",
        "--min-port",
        &min,
        "--max-port",
        &max,
    ])
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
    let subscriber = Subscriber::start(&server, &dir);
    let relay = relay(&server.conn());
    let (_peer, peer) = echo_peer("127.0.0.1");

    // One call on channels, one with Send and Data indications.
    let channels = call(&relay, peer, &[], 40);
    // uclient leaves one allocation of its own behind (allocated and refreshed, never used nor
    // deleted): its status key is there while it lives, and expires with it.
    let live = by_allocation(&subscriber.messages(), "alice");
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
    let indications = call(&relay, peer, &["-s"], 30);

    // The two allocations that carried the calls end (uclient deletes them) and say so.
    let deleted = || {
        by_allocation(&subscriber.messages(), "alice")
            .into_iter()
            .filter(|(_, r)| r.status.last().map(String::as_str) == Some("deleted"))
            .collect::<Vec<_>>()
    };
    let what = || format!("two allocations deleted: {:#?}", subscriber.messages());
    until_with(Duration::from_secs(30), what, || deleted().len() == 2);
    for ((id, records), stats) in deleted().iter().zip([&channels, &indications]) {
        let what = format!("allocation {id}: {records:?}\nuclient:\n{}", stats.text);
        assert!(records.status[0].starts_with("new lifetime="), "{what}");
        assert_eq!(
            records.status.iter().filter(|s| *s == "deleted").count(),
            1,
            "{what}"
        );
        // What uclient sent and got back, 120 bytes each, is what the totals say: client side
        // (received from it, sent to it) and peer side (received from the peer, sent to it).
        let (sent, back) = (stats.sent, stats.received);
        let total = &records.traffic["total_traffic"];
        assert_eq!(total, &[[sent, sent * 120, back, back * 120]], "{what}");
        let total_peer = &records.traffic["total_traffic/peer"];
        assert_eq!(
            total_peer,
            &[[back, back * 120, sent, sent * 120]],
            "{what}"
        );
        // The interval records add up to the totals.
        assert_eq!(sum(&records.traffic["traffic"]), total[0], "{what}");
        assert_eq!(
            sum(&records.traffic["traffic/peer"]),
            total_peer[0],
            "{what}"
        );
        let key = format!("turn/realm/{REALM}/user/alice/allocation/{id}/status");
        assert_eq!(server.cli(&["EXISTS", &key]).trim(), "0", "{what}");
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
    let subscriber = Subscriber::start(&server, &dir);
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
