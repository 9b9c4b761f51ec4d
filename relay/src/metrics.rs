//! The relay's Prometheus metrics: one registry, names prefixed `xdpturn_`, bounded labels
//! (transport, method, result, reason, datapath, direction: never a user or an address), live
//! counters. Counters touched per packet are resolved to their label values once, at start-up.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Direction of relayed traffic (defined by the protocol core, which counts it).
pub use crate::proto::Direction;
use crate::proto::auth::Rejection;
use crate::proto::policy::Denial;
use crate::proto::{Counters, DropReason, QuotaKind, Transport};
use crate::stun::Method;

const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

/// Which path forwarded relayed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    Userspace,
    Xdp,
}

impl Datapath {
    pub fn as_str(self) -> &'static str {
        match self {
            Datapath::Userspace => "userspace",
            Datapath::Xdp => "xdp",
        }
    }
}

/// Counters for one (datapath, transport, direction).
#[derive(Debug, Clone)]
pub struct Relayed {
    pub packets: IntCounter,
    pub bytes: IntCounter,
}

/// The limit a refused TCP/TLS connection was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionLimit {
    /// Connections from its source address (IPv6: its /64).
    PerSource,
    /// Connections in total.
    Total,
}

impl ConnectionLimit {
    pub const ALL: [ConnectionLimit; 2] = [ConnectionLimit::PerSource, ConnectionLimit::Total];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionLimit::PerSource => "per_source",
            ConnectionLimit::Total => "total",
        }
    }
}

/// Why the relay closed a TCP/TLS client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// No authenticated request within the deadline.
    AuthTimeout,
    /// No complete message within the idle timeout.
    IdleTimeout,
    /// Its answers could not be written for too long: the client stopped reading.
    WriteStall,
}

impl Reaped {
    pub const ALL: [Reaped; 3] = [Reaped::AuthTimeout, Reaped::IdleTimeout, Reaped::WriteStall];

    pub fn as_str(self) -> &'static str {
        match self {
            Reaped::AuthTimeout => "auth_timeout",
            Reaped::IdleTimeout => "idle_timeout",
            Reaped::WriteStall => "write_stall",
        }
    }
}

/// Every metric the relay exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    dropped: Vec<IntCounter>,
    keepalives: Vec<IntCounter>,
    relayed: Vec<Relayed>,
    auth_failures: IntCounterVec,
    auth_limiter_overflows: IntCounter,
    peer_denied: IntCounterVec,
    quota_rejections: IntCounterVec,
    /// Replies or relayed packets the socket refused to send, by transport.
    pub send_errors: IntCounterVec,
    /// Open client connections (TCP, TLS).
    pub connections: IntGaugeVec,
    tls_handshake_failures: IntCounterVec,
    /// TCP/TLS client connections closed as they were accepted, by transport and limit.
    connections_refused: IntCounterVec,
    /// TCP/TLS client connections the relay closed for a deadline, by transport and reason.
    connections_reaped: IntCounterVec,
    pub allocations: IntGauge,
    /// Allocations that ended, however (expired, deleted, closed with their connection): with
    /// the successful Allocate requests, the turnover behind the `allocations` gauge.
    pub allocations_ended: IntCounter,
    pub permissions: IntGauge,
    pub channels: IntGauge,
    /// Time to handle a request, by method.
    pub request_seconds: HistogramVec,
    /// 1 while accepting new work, 0 while starting or draining.
    pub ready: IntGauge,
    /// Tasks alive in the workers (`eventloop::spawn_counted`).
    pub worker_tasks: IntGauge,
    /// Datagrams from one allocation to another of the same worker (both parties of a call on
    /// this relay) handed over in the process, without a send through the loopback.
    pub same_relay_local: IntCounter,
    /// 1 while the XDP fast path is attached, 0 when everything is relayed in userspace.
    pub xdp_attached: IntGauge,
    /// Configured XDP interfaces another XDP program holds (the relay this one takes the ports
    /// over from, until it exits): attached as soon as they are free.
    pub xdp_waiting: IntGauge,
    /// Channels the fast path could not take (relayed in userspace instead), by reason.
    pub xdp_fallbacks: IntCounterVec,
    /// Frames an attached interface failed to send after the program handed them to it, per
    /// interface (the configured ones, a bounded set).
    pub xdp_send_failures: IntCounterVec,
    /// Packets the XDP program forwarded, by kind of message (`dataplane::MessageKind`) and
    /// direction.
    pub xdp_forwarded: IntCounterVec,
    /// 1 per interface the fast path is attached to (the XDP program in native or skb mode, or
    /// the TC program in tc mode), with the mode and why (`dataplane::ModeChoice`); the
    /// interfaces are the configured ones, a bounded set.
    pub xdp_interface_mode: IntGaugeVec,
    /// Queries to coturn's user database (`userdb/`), by query (user, realm) and result.
    pub userdb_queries: IntCounterVec,
    /// 1 while the user database answers, 0 while the relay serves from what it last read.
    pub userdb_up: IntGauge,
    /// 1 when a user database is configured (not exported: it decides the `/readyz` line).
    pub userdb_configured: IntGauge,
    /// Usage reports for coturn's traffic records (`userdb/statsdb.rs`), by result.
    pub statsdb_reports: IntCounterVec,
    /// 1 while the statistics database takes reports.
    pub statsdb_up: IntGauge,
    pub build_info: IntGaugeVec,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "xdpturn_requests_total",
            "STUN/TURN requests answered, by transport, method and result (success or the error code)",
            &["transport", "method", "result"],
        )?;
        let dropped_vec = counter_vec(
            &r,
            "xdpturn_dropped_packets_total",
            "Packets that were not answered or relayed, by transport and reason",
            &["transport", "reason"],
        )?;
        let keepalive_vec = counter_vec(
            &r,
            "xdpturn_keepalives_total",
            "Binding indications (keepalives), by transport",
            &["transport"],
        )?;
        let packets = counter_vec(
            &r,
            "xdpturn_relayed_packets_total",
            "Packets relayed between clients and peers, by datapath, client transport and direction",
            &["datapath", "transport", "direction"],
        )?;
        let bytes = counter_vec(
            &r,
            "xdpturn_relayed_bytes_total",
            "Application bytes relayed between clients and peers, by datapath, client transport and direction",
            &["datapath", "transport", "direction"],
        )?;
        let auth_failures = counter_vec(
            &r,
            "xdpturn_auth_failures_total",
            "Failed authentications, by reason",
            &["reason"],
        )?;
        let auth_limiter_overflows = IntCounter::new(
            "xdpturn_auth_limiter_overflows_total",
            "Failed authentications from sources the full failure limiter could not track, \
             charged to the budget those sources share",
        )?;
        r.register(Box::new(auth_limiter_overflows.clone()))?;
        let peer_denied = counter_vec(
            &r,
            "xdpturn_peer_denied_total",
            "Peers refused by the address policy, by reason",
            &["reason"],
        )?;
        let quota_rejections = counter_vec(
            &r,
            "xdpturn_quota_rejections_total",
            "Requests or packets refused by a quota, by quota",
            &["quota"],
        )?;
        let send_errors = counter_vec(
            &r,
            "xdpturn_send_errors_total",
            "Sends the socket refused, by transport",
            &["transport"],
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "xdpturn_client_connections",
                "Open client connections, by transport",
            ),
            &["transport"],
        )?;
        r.register(Box::new(connections.clone()))?;
        let tls_handshake_failures = counter_vec(
            &r,
            "xdpturn_tls_handshake_failures_total",
            "TLS handshakes that failed, by reason (timeout, error)",
            &["reason"],
        )?;
        for reason in ["timeout", "error"] {
            tls_handshake_failures.with_label_values(&[reason]);
        }
        let connections_refused = counter_vec(
            &r,
            "xdpturn_connections_refused_total",
            "TCP/TLS client connections closed as they were accepted, by transport and the \
             limit they were over (per_source, total)",
            &["transport", "reason"],
        )?;
        let connections_reaped = counter_vec(
            &r,
            "xdpturn_connections_reaped_total",
            "TCP/TLS client connections the relay closed, by transport and reason (auth_timeout: \
             no authenticated request in time; idle_timeout: no complete message in time; \
             write_stall: the client stopped reading)",
            &["transport", "reason"],
        )?;
        for t in [Transport::Tcp, Transport::Tls] {
            for reason in ConnectionLimit::ALL {
                connections_refused.with_label_values(&[t.as_str(), reason.as_str()]);
            }
            for reason in Reaped::ALL {
                connections_reaped.with_label_values(&[t.as_str(), reason.as_str()]);
            }
        }
        let allocations = gauge(&r, "xdpturn_allocations", "Allocations")?;
        let allocations_ended = IntCounter::new(
            "xdpturn_allocations_ended_total",
            "Allocations that ended: expired, deleted by a Refresh with lifetime 0, or closed \
             with their TCP connection",
        )?;
        r.register(Box::new(allocations_ended.clone()))?;
        let permissions = gauge(&r, "xdpturn_permissions", "Permissions installed")?;
        let channels = gauge(&r, "xdpturn_channels", "Channels bound")?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "xdpturn_request_duration_seconds",
                "Time to handle a request, by method",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.05,
            ]),
            &["method"],
        )?;
        r.register(Box::new(request_seconds.clone()))?;
        let ready = gauge(&r, "xdpturn_ready", "1 while the relay accepts new work")?;
        let worker_tasks = gauge(
            &r,
            "xdpturn_worker_tasks",
            "Tasks alive in the workers (listeners, TCP and TLS connections, relayed sockets, \
             users awaited from the database): follows the load; growth under a steady load is \
             a leak",
        )?;
        let same_relay_local = IntCounter::new(
            "xdpturn_userspace_same_relay_packets_total",
            "Datagrams from one allocation to another relayed address of this relay handed over \
             in userspace, without a send through the loopback",
        )?;
        r.register(Box::new(same_relay_local.clone()))?;
        let xdp_attached = gauge(
            &r,
            "xdpturn_xdp_attached",
            "1 while the XDP fast path is attached; 0: all traffic in userspace",
        )?;
        let xdp_waiting = gauge(
            &r,
            "xdpturn_xdp_waiting_interfaces",
            "Configured XDP interfaces another XDP program holds (a relay handing the ports \
             over, until it exits), their traffic relayed in userspace until they are free",
        )?;
        let xdp_fallbacks = counter_vec(
            &r,
            "xdpturn_xdp_fallbacks_total",
            "Channels the XDP fast path could not take, relayed in userspace instead, by reason",
            &["reason"],
        )?;
        let xdp_send_failures = counter_vec(
            &r,
            "xdpturn_xdp_send_failures_total",
            "Frames an attached interface dropped while the XDP program forwarded (its receive \
             and transmit drop counters: where sends the program made and that did not leave \
             are counted), per interface",
            &["interface"],
        )?;
        let xdp_forwarded = counter_vec(
            &r,
            "xdpturn_xdp_forwarded_packets_total",
            "Packets the XDP program forwarded, by kind (channel, indication, same_relay) and \
             direction; a same-relay packet counts in both directions",
            &["kind", "direction"],
        )?;
        let xdp_interface_mode = IntGaugeVec::new(
            Opts::new(
                "xdpturn_xdp_interface_mode",
                "1 per interface the fast path is attached to, with its mode (native or skb: \
                 the XDP program; tc: the TC program) and why that mode (configured, or auto's \
                 choice: driver_supports_native, driver_lacks_native, virtual_interface, \
                 driver_lacks_native_without_tc)",
            ),
            &["interface", "mode", "why"],
        )?;
        r.register(Box::new(xdp_interface_mode.clone()))?;
        let userdb_queries = counter_vec(
            &r,
            "xdpturn_userdb_queries_total",
            "Queries to the user database, by query (user: one user's key, made on a cache \
             miss; realm: the periodic read of secrets, options and peer ranges) and result \
             (found, absent, ok, error)",
            &["query", "result"],
        )?;
        for (q, res) in [
            ("user", "found"),
            ("user", "absent"),
            ("user", "error"),
            ("realm", "ok"),
            ("realm", "error"),
        ] {
            userdb_queries.with_label_values(&[q, res]);
        }
        let userdb_up = gauge(
            &r,
            "xdpturn_userdb_up",
            "1 while the user database answers; 0 while it does not and the relay serves with \
             what it last read (also 0 when none is configured)",
        )?;
        let userdb_configured = IntGauge::new("xdpturn_userdb_configured", "not exported")?;
        let statsdb_reports = counter_vec(
            &r,
            "xdpturn_statsdb_reports_total",
            "Allocation status and traffic reports for the statistics database \
             (--redis-statsdb), by result (published; dropped: the database did not answer or \
             the queue was full)",
            &["result"],
        )?;
        for res in ["published", "dropped"] {
            statsdb_reports.with_label_values(&[res]);
        }
        let statsdb_up = gauge(
            &r,
            "xdpturn_statsdb_up",
            "1 while the statistics database (--redis-statsdb) takes reports (0 also when none \
             is configured)",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "xdpturn_build_info",
                "Always 1; the version is in the label",
            ),
            &["version"],
        )?;
        r.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        // Every series exists from start-up, at zero, so rates and alerts work at once.
        let mut dropped = Vec::new();
        let mut keepalives = Vec::new();
        let mut relayed = Vec::new();
        for t in TRANSPORTS {
            for reason in DropReason::ALL {
                dropped.push(dropped_vec.with_label_values(&[t.as_str(), reason.as_str()]));
            }
            keepalives.push(keepalive_vec.with_label_values(&[t.as_str()]));
            for d in [Datapath::Userspace, Datapath::Xdp] {
                for dir in [Direction::ClientToPeer, Direction::PeerToClient] {
                    let labels = [d.as_str(), t.as_str(), dir.as_str()];
                    relayed.push(Relayed {
                        packets: packets.with_label_values(&labels),
                        bytes: bytes.with_label_values(&labels),
                    });
                }
            }
            requests.with_label_values(&[t.as_str(), "binding", "success"]);
            send_errors.with_label_values(&[t.as_str()]);
            connections.with_label_values(&[t.as_str()]);
        }
        for r in Rejection::ALL {
            auth_failures.with_label_values(&[r.as_str()]);
        }
        for d in Denial::ALL {
            peer_denied.with_label_values(&[denial_label(d)]);
        }
        for q in QuotaKind::ALL {
            quota_rejections.with_label_values(&[q.as_str()]);
        }
        Ok(Self {
            registry: r,
            requests,
            dropped,
            keepalives,
            relayed,
            auth_failures,
            auth_limiter_overflows,
            peer_denied,
            quota_rejections,
            send_errors,
            connections,
            tls_handshake_failures,
            connections_refused,
            connections_reaped,
            allocations,
            allocations_ended,
            permissions,
            channels,
            request_seconds,
            ready,
            worker_tasks,
            same_relay_local,
            xdp_attached,
            xdp_waiting,
            xdp_fallbacks,
            xdp_interface_mode,
            xdp_forwarded,
            xdp_send_failures,
            userdb_queries,
            userdb_up,
            userdb_configured,
            statsdb_reports,
            statsdb_up,
            build_info,
        })
    }

    fn t(transport: Transport) -> usize {
        match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }
    }

    /// A request answered with `code` (None: success).
    pub fn request(&self, transport: Transport, method: Method, code: Option<u16>) {
        let mut buf = [0u8; 3];
        let result = match code {
            None => "success",
            Some(code) => code_label(code, &mut buf),
        };
        self.requests
            .with_label_values(&[transport.as_str(), method.as_str(), result])
            .inc();
    }

    pub fn dropped(&self, transport: Transport, reason: DropReason) {
        let i = Self::t(transport) * DropReason::ALL.len() + reason as usize;
        if let Some(c) = self.dropped.get(i) {
            c.inc();
        }
    }

    /// The current count of one drop reason (for tests and diagnostics).
    pub fn dropped_count(&self, transport: Transport, reason: DropReason) -> u64 {
        self.dropped
            .get(Self::t(transport) * DropReason::ALL.len() + reason as usize)
            .map_or(0, IntCounter::get)
    }

    pub fn keepalive(&self, transport: Transport) {
        self.keepalives[Self::t(transport)].inc();
    }

    /// The counters for relayed traffic of one kind.
    pub fn relayed(
        &self,
        datapath: Datapath,
        transport: Transport,
        direction: Direction,
    ) -> &Relayed {
        let i = Self::t(transport) * 4
            + match datapath {
                Datapath::Userspace => 0,
                Datapath::Xdp => 2,
            }
            + match direction {
                Direction::ClientToPeer => 0,
                Direction::PeerToClient => 1,
            };
        &self.relayed[i]
    }

    pub fn auth_failure(&self, reason: Rejection) {
        self.auth_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub fn peer_denied(&self, reason: Denial) {
        self.peer_denied
            .with_label_values(&[denial_label(reason)])
            .inc();
    }

    pub fn quota_rejected(&self, quota: QuotaKind) {
        self.quota_rejections
            .with_label_values(&[quota.as_str()])
            .inc();
    }

    /// A TLS handshake failed; `reason` is one of a fixed few ([`crate::tls::HandshakeError::metric_label`]).
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .with_label_values(&[reason])
            .inc();
    }

    /// A TCP/TLS client connection was closed as it was accepted: over `limit`.
    pub fn connection_refused(&self, transport: Transport, limit: ConnectionLimit) {
        self.connections_refused
            .with_label_values(&[transport.as_str(), limit.as_str()])
            .inc();
    }

    /// A TCP/TLS client connection was closed by the relay for `reason`.
    pub fn connection_reaped(&self, transport: Transport, reason: Reaped) {
        self.connections_reaped
            .with_label_values(&[transport.as_str(), reason.as_str()])
            .inc();
    }

    pub fn request_duration(&self, method: Method) -> Histogram {
        self.request_seconds.with_label_values(&[method.as_str()])
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which we never register.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%err, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The protocol core's counts, as the series above: the core reports, the registry exports.
impl Counters for Metrics {
    fn request(&self, transport: Transport, method: Method, code: Option<u16>) {
        Metrics::request(self, transport, method, code);
    }

    fn dropped(&self, transport: Transport, reason: DropReason) {
        Metrics::dropped(self, transport, reason);
    }

    fn keepalive(&self, transport: Transport) {
        Metrics::keepalive(self, transport);
    }

    fn auth_failure(&self, reason: Rejection) {
        Metrics::auth_failure(self, reason);
    }

    fn auth_limiter_overflow(&self) {
        self.auth_limiter_overflows.inc();
    }

    fn peer_denied(&self, reason: Denial) {
        Metrics::peer_denied(self, reason);
    }

    fn quota_rejected(&self, quota: QuotaKind) {
        Metrics::quota_rejected(self, quota);
    }

    fn relayed(&self, transport: Transport, direction: Direction, bytes: usize) {
        let r = Metrics::relayed(self, Datapath::Userspace, transport, direction);
        r.packets.inc();
        r.bytes.inc_by(bytes as u64);
    }

    fn allocation_opened(&self) {
        self.allocations.inc();
    }

    fn allocation_closed(&self) {
        self.allocations.dec();
        self.allocations_ended.inc();
    }

    fn permissions_added(&self, n: usize) {
        self.permissions.add(n as i64);
    }

    fn permissions_removed(&self, n: usize) {
        self.permissions.sub(n as i64);
    }

    fn channels_added(&self, n: usize) {
        self.channels.add(n as i64);
    }

    fn channels_removed(&self, n: usize) {
        self.channels.sub(n as i64);
    }

    fn bandwidth_fallbacks(&self, n: usize) {
        self.xdp_fallbacks
            .with_label_values(&["bandwidth"])
            .inc_by(n as u64);
    }
}

fn denial_label(d: Denial) -> &'static str {
    match d {
        Denial::OwnEndpoint => "own_endpoint",
        Denial::OwnAddress => "own_address",
        Denial::BuiltIn => "builtin",
        Denial::Configured => "configured",
    }
}

/// The error code as a label without allocating: codes are 300–699, three digits.
fn code_label(code: u16, buf: &mut [u8; 3]) -> &str {
    let code = code.clamp(100, 999);
    buf[0] = b'0' + (code / 100) as u8;
    buf[1] = b'0' + (code / 10 % 10) as u8;
    buf[2] = b'0' + (code % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_have_bounded_labels_and_exist_from_start() {
        let m = Metrics::new().expect("metrics");
        m.request(Transport::Udp, Method::BINDING, None);
        m.request(Transport::Tcp, Method::ALLOCATE, Some(401));
        m.dropped(Transport::Udp, DropReason::NotStun);
        m.keepalive(Transport::Udp);
        let r = m.relayed(Datapath::Userspace, Transport::Udp, Direction::PeerToClient);
        r.packets.inc();
        r.bytes.inc_by(100);
        let text = m.render();
        for line in [
            r#"xdpturn_requests_total{method="binding",result="success",transport="udp"} 1"#,
            r#"xdpturn_requests_total{method="allocate",result="401",transport="tcp"} 1"#,
            r#"xdpturn_dropped_packets_total{reason="not_stun",transport="udp"} 1"#,
            r#"xdpturn_dropped_packets_total{reason="malformed",transport="tls"} 0"#,
            r#"xdpturn_keepalives_total{transport="udp"} 1"#,
            r#"xdpturn_relayed_packets_total{datapath="userspace",direction="peer_to_client",transport="udp"} 1"#,
            r#"xdpturn_relayed_bytes_total{datapath="userspace",direction="peer_to_client",transport="udp"} 100"#,
            r#"xdpturn_relayed_packets_total{datapath="xdp",direction="client_to_peer",transport="tls"} 0"#,
            r#"xdpturn_auth_failures_total{reason="wrong_password"} 0"#,
            r#"xdpturn_auth_limiter_overflows_total 0"#,
            r#"xdpturn_peer_denied_total{reason="builtin"} 0"#,
            r#"xdpturn_allocations 0"#,
            r#"xdpturn_allocations_ended_total 0"#,
            r#"xdpturn_tls_handshake_failures_total{reason="timeout"} 0"#,
            r#"xdpturn_connections_refused_total{reason="per_source",transport="tcp"} 0"#,
            r#"xdpturn_connections_reaped_total{reason="write_stall",transport="tls"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn every_drop_reason_has_its_own_series() {
        let m = Metrics::new().expect("metrics");
        for (i, reason) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(
                reason as usize, i,
                "DropReason::ALL is in declaration order"
            );
            m.dropped(Transport::Tls, reason);
        }
        let text = m.render();
        for reason in DropReason::ALL {
            let line = format!(
                r#"xdpturn_dropped_packets_total{{reason="{}",transport="tls"}} 1"#,
                reason.as_str()
            );
            assert!(text.contains(&line), "{line}");
        }
    }
}

#[cfg(test)]
mod proto_tests;
