//! coturn's traffic records on Redis (`--redis-statsdb`; the layout is Debian's
//! `/usr/share/coturn/schema.stats.redis` as coturn writes it), so that the dashboards and
//! billing scripts that subscribe to coturn's channels keep working:
//!
//! | key / channel (`turn/realm/<realm>/user/<name>/allocation/<id>/...`) | when | what |
//! | --- | --- | --- |
//! | `status` (SET, and PUBLISH) | allocated, refreshed | `new lifetime=600`, `refreshed lifetime=600` |
//! | `status` (DEL, and PUBLISH) | ended | `deleted` |
//! | `traffic` (PUBLISH) | every 10 s with new traffic, and at the end | `rcvp=P, rcvb=B, sentp=P, sentb=B`: client side, since the last one |
//! | `traffic/peer` (PUBLISH) | with `traffic` | the same, peer side |
//! | `total_traffic`, `total_traffic/peer` (PUBLISH) | ended | the same, over the whole allocation |
//!
//! `<id>` is 18 digits, as coturn's session ids. `rcv` is what the client (or, for `/peer`, the
//! peers) sent that was relayed, `sent` what was relayed to it (to them); bytes are application
//! data (what ChannelData, Send and Data indications carry), the kernel fast path's included.
//! coturn counts the TURN framing too, so its byte counts run a few percent higher for the same
//! call. The status key is set with an expiry of the allocation's lifetime (plus a minute), so
//! that a relay that is killed leaves no status behind for long; coturn sets it without one.
//!
//! Reports come from the workers through a bounded queue ([`UsageSink`]; a worker never waits)
//! to one task that sends them in pipelines on one connection (the user database's Redis
//! client: it reconnects by itself). When the database does not answer, reports are dropped
//! and counted (`xdpturn_statsdb_reports_total{result="dropped"}`), `xdpturn_statsdb_up` is 0,
//! the log says so once, and relaying goes on untouched; the next batch tries again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::redis::{ConnSpec, Redis};
use crate::metrics::Metrics;
use crate::proto::{Flow, Usage, UsageKind, UsageReport};

/// Reports waiting for the database at most (past it, new ones are dropped and counted).
const QUEUE: usize = 65_536;
/// Reports sent in one pipeline at most.
const BATCH: usize = 512;
/// How long the status key outlives the allocation's lifetime.
const STATUS_SLACK_SECS: u64 = 60;

/// Where the workers put their reports: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageReport>,
    metrics: Arc<Metrics>,
}

impl UsageSink {
    /// Queues a report; a full queue drops it (counted).
    pub fn send(&self, report: UsageReport) {
        if self.tx.try_send(report).is_err() {
            self.metrics
                .statsdb_reports
                .with_label_values(&["dropped"])
                .inc();
        }
    }
}

/// Starts the publishing task on the current runtime for the database `conn` (a
/// `--redis-statsdb` connection string) and `realm`. Fails only on a connection string that
/// does not parse; the database need not be up.
pub fn start(conn: &str, realm: &str, metrics: Arc<Metrics>) -> Result<UsageSink, String> {
    let spec = ConnSpec::parse(conn).map_err(|e| format!("redis-statsdb: {e}"))?;
    let describe = spec.describe();
    let (tx, rx) = mpsc::channel(QUEUE);
    let redis = Redis::new(spec);
    tracing::info!(database = %describe, "publishing allocation status and traffic (coturn's --redis-statsdb)");
    tokio::spawn(publish(
        redis,
        realm.to_owned(),
        rx,
        metrics.clone(),
        describe,
    ));
    Ok(UsageSink { tx, metrics })
}

async fn publish(
    redis: Redis,
    realm: String,
    mut rx: mpsc::Receiver<UsageReport>,
    metrics: Arc<Metrics>,
    describe: String,
) {
    let mut batch = Vec::with_capacity(BATCH);
    // Up or not from the start, before the first report: a PING.
    let mut ping = ::redis::pipe();
    ping.cmd("PING").ignore();
    let mut up = match redis.run(&ping).await {
        Ok(()) => true,
        Err(err) => {
            warn_down(&describe, &err);
            false
        }
    };
    metrics.statsdb_up.set(i64::from(up));
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for report in &batch {
            add_commands(&mut pipe, &realm, report);
        }
        let result = redis.run(&pipe).await;
        let n = batch.len() as u64;
        batch.clear();
        match result {
            Ok(()) => {
                metrics
                    .statsdb_reports
                    .with_label_values(&["published"])
                    .inc_by(n);
                if !up {
                    tracing::info!(database = %describe, "the statistics database takes reports again");
                    up = true;
                    metrics.statsdb_up.set(1);
                }
            }
            Err(err) => {
                metrics
                    .statsdb_reports
                    .with_label_values(&["dropped"])
                    .inc_by(n);
                if up {
                    warn_down(&describe, &err);
                    up = false;
                    metrics.statsdb_up.set(0);
                }
                // Not a busy loop while it is away: what queues meanwhile goes in one batch.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn warn_down(describe: &str, err: &dyn std::fmt::Display) {
    tracing::warn!(
        database = %describe,
        %err,
        "the statistics database does not answer: allocation reports are dropped (counted in \
         xdpturn_statsdb_reports_total) until it does; relaying goes on"
    );
}

/// The key (and channel) of `what` of one allocation.
pub fn key(realm: &str, username: &str, id: u64, what: &str) -> String {
    format!("turn/realm/{realm}/user/{username}/allocation/{id:018}/{what}")
}

/// A traffic record's text, as coturn writes it.
pub fn traffic_text(received: Flow, sent: Flow) -> String {
    format!(
        "rcvp={}, rcvb={}, sentp={}, sentb={}",
        received.packets, received.bytes, sent.packets, sent.bytes
    )
}

/// The commands of one report, in coturn's order (the last traffic before the totals, the
/// totals before `deleted`).
fn add_commands(pipe: &mut ::redis::Pipeline, realm: &str, r: &UsageReport) {
    let key = |what: &str| key(realm, &r.username, r.id, what);
    let publish = |pipe: &mut ::redis::Pipeline, what: &str, text: String| {
        pipe.cmd("PUBLISH").arg(key(what)).arg(text).ignore();
    };
    // `what` on the client side, `what/peer` on the peers'.
    let publish_traffic = |pipe: &mut ::redis::Pipeline, what: &str, u: &Usage| {
        publish(pipe, what, traffic_text(u.from_client, u.to_client));
        publish(
            pipe,
            &format!("{what}/peer"),
            traffic_text(u.from_peers, u.to_peers),
        );
    };
    match &r.kind {
        UsageKind::New { lifetime } | UsageKind::Refreshed { lifetime } => {
            let status = if matches!(r.kind, UsageKind::New { .. }) {
                "new"
            } else {
                "refreshed"
            };
            let text = format!("{status} lifetime={lifetime}");
            publish(pipe, "status", text.clone());
            pipe.cmd("SET")
                .arg(key("status"))
                .arg(text)
                .arg("EX")
                .arg(u64::from(*lifetime) + STATUS_SLACK_SECS)
                .ignore();
        }
        UsageKind::Traffic(u) => publish_traffic(pipe, "traffic", u),
        UsageKind::Deleted { last, total } => {
            if !last.is_empty() {
                publish_traffic(pipe, "traffic", last);
            }
            publish_traffic(pipe, "total_traffic", total);
            pipe.cmd("DEL").arg(key("status")).ignore();
            publish(pipe, "status", "deleted".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::proto::{FiveTuple, Transport};

    fn report(kind: UsageKind) -> UsageReport {
        UsageReport {
            tuple: FiveTuple {
                transport: Transport::Udp,
                client: "198.51.100.7:40000".parse().unwrap(),
                server: "192.0.2.1:3478".parse().unwrap(),
            },
            id: 1_764_000_000_000_001,
            username: "1764003600:alice".into(),
            kind,
        }
    }

    /// The commands as text, one per line.
    fn commands(r: &UsageReport) -> Vec<String> {
        let mut pipe = ::redis::pipe();
        add_commands(&mut pipe, "example.org", r);
        pipe.cmd_iter()
            .map(|c| {
                c.args_iter()
                    .map(|a| match a {
                        ::redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                        _ => "<other>".into(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn reports_are_coturns_keys_and_texts() {
        let base = "turn/realm/example.org/user/1764003600:alice/allocation/001764000000000001";
        assert_eq!(
            commands(&report(UsageKind::New { lifetime: 600 })),
            [
                format!("PUBLISH {base}/status new lifetime=600"),
                format!("SET {base}/status new lifetime=600 EX 660"),
            ]
        );
        assert_eq!(
            commands(&report(UsageKind::Refreshed { lifetime: 30 }))[0],
            format!("PUBLISH {base}/status refreshed lifetime=30")
        );
        let mut u = Usage::default();
        u.client_to_peer(100);
        u.client_to_peer(20);
        u.peer_to_client(7);
        assert_eq!(
            commands(&report(UsageKind::Traffic(u))),
            [
                format!("PUBLISH {base}/traffic rcvp=2, rcvb=120, sentp=1, sentb=7"),
                format!("PUBLISH {base}/traffic/peer rcvp=1, rcvb=7, sentp=2, sentb=120"),
            ]
        );
        let total = u.plus(u);
        assert_eq!(
            commands(&report(UsageKind::Deleted { last: u, total })),
            [
                format!("PUBLISH {base}/traffic rcvp=2, rcvb=120, sentp=1, sentb=7"),
                format!("PUBLISH {base}/traffic/peer rcvp=1, rcvb=7, sentp=2, sentb=120"),
                format!("PUBLISH {base}/total_traffic rcvp=4, rcvb=240, sentp=2, sentb=14"),
                format!("PUBLISH {base}/total_traffic/peer rcvp=2, rcvb=14, sentp=4, sentb=240"),
                format!("DEL {base}/status"),
                format!("PUBLISH {base}/status deleted"),
            ]
        );
        // Nothing new since the last report: only the totals.
        let quiet = commands(&report(UsageKind::Deleted {
            last: Usage::default(),
            total,
        }));
        assert_eq!(quiet.len(), 4);
        assert!(quiet[0].contains("/total_traffic "), "{quiet:?}");
    }
}
