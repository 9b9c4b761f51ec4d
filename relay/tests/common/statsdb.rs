//! coturn's traffic records as a subscriber sees them: `redis-cli psubscribe` on coturn's
//! documented pattern, its messages grouped by allocation and parsed as coturn writes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{Guard, require};

/// `redis-cli psubscribe` on every allocation channel, as a dashboard subscribes, its output
/// in a file.
pub struct Subscriber {
    _process: Guard,
    out: PathBuf,
}

impl Subscriber {
    /// Subscribes to the Redis server on 127.0.0.1:`port` (password `password`), run through
    /// `wrapper` (e.g. `ip netns exec NS`); its output goes to `dir`.
    pub fn start(wrapper: &[&str], port: u16, password: Option<&str>, dir: &Path) -> Self {
        let tool = require("redis-cli", "redis-tools");
        let out = dir.join("subscriber.out");
        let file = std::fs::File::create(&out).expect("subscriber output");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&tool);
                c
            }
            None => Command::new(&tool),
        };
        if let Some(password) = password {
            cmd.env("REDISCLI_AUTH", password);
        }
        let child = cmd
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
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

    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The messages received: (channel, text), in order.
    pub fn messages(&self) -> Vec<(String, String)> {
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

pub fn until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    until_with(timeout, || what.to_owned(), &mut done)
}

/// [`until`] whose failure message is made when it fails (what was seen by then).
pub fn until_with(timeout: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
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
pub struct Records {
    pub status: Vec<String>,
    /// `traffic`, `traffic/peer`, `total_traffic`, `total_traffic/peer` -> their texts.
    pub traffic: BTreeMap<String, Vec<[u64; 4]>>,
}

/// The messages grouped by allocation (user and id, from the channel).
pub fn by_allocation(
    messages: &[(String, String)],
    realm: &str,
    user: &str,
) -> BTreeMap<String, Records> {
    let prefix = format!("turn/realm/{realm}/user/{user}/allocation/");
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
pub fn parse_traffic(text: &str) -> [u64; 4] {
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

pub fn sum(records: &[[u64; 4]]) -> [u64; 4] {
    records.iter().fold([0; 4], |mut acc, r| {
        for (a, v) in acc.iter_mut().zip(r) {
            *a += v;
        }
        acc
    })
}

/// Asserts that an allocation's records say what a uclient call of `sent` messages out and
/// `back` messages back, `len` bytes each, relayed: one `new` status first and one `deleted`
/// last, totals on both sides, interval records that add up to them.
pub fn assert_call_records(
    id: &str,
    records: &Records,
    sent: u64,
    back: u64,
    len: u64,
    more: &str,
) {
    let what = format!("allocation {id}: {records:?}\n{more}");
    assert!(records.status[0].starts_with("new lifetime="), "{what}");
    assert_eq!(
        records.status.iter().filter(|s| *s == "deleted").count(),
        1,
        "{what}"
    );
    assert_eq!(
        records.status.last().map(String::as_str),
        Some("deleted"),
        "{what}"
    );
    // Client side: received from the client, sent to it; peer side: the other way round.
    let total = &records.traffic["total_traffic"];
    assert_eq!(total, &[[sent, sent * len, back, back * len]], "{what}");
    let total_peer = &records.traffic["total_traffic/peer"];
    assert_eq!(
        total_peer,
        &[[back, back * len, sent, sent * len]],
        "{what}"
    );
    assert_eq!(sum(&records.traffic["traffic"]), total[0], "{what}");
    assert_eq!(
        sum(&records.traffic["traffic/peer"]),
        total_peer[0],
        "{what}"
    );
}

/// The allocations of `user` whose last status is `deleted`, by id.
pub fn deleted(subscriber: &Subscriber, realm: &str, user: &str) -> Vec<(String, Records)> {
    by_allocation(&subscriber.messages(), realm, user)
        .into_iter()
        .filter(|(_, r)| r.status.last().map(String::as_str) == Some("deleted"))
        .collect()
}
