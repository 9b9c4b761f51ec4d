//! The relay's Prometheus metrics: one registry, names prefixed `xdpturn_`, bounded labels
//! (transport, method, result, reason: never a user or an address), live counters.

use prometheus::{Encoder as _, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::proto::{DropReason, Outcome, Transport};

const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

/// Every metric the relay exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by transport, method and result ("success" or the error code).
    pub requests: IntCounterVec,
    /// Packets that got no answer, by transport and reason.
    pub dropped: IntCounterVec,
    /// Binding indications (keepalives), by transport.
    pub keepalives: IntCounterVec,
    /// Replies the socket refused to send, by transport.
    pub send_errors: IntCounterVec,
    /// Open client connections (TCP, TLS).
    pub connections: IntGaugeVec,
    /// Constant 1, labelled with the version.
    pub build_info: IntGaugeVec,
    /// 1 while serving, 0 while starting or draining.
    pub ready: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "xdpturn_requests_total",
                "STUN/TURN requests answered, by transport, method and result",
            ),
            &["transport", "method", "result"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "xdpturn_dropped_packets_total",
                "Packets from clients that got no answer, by transport and reason",
            ),
            &["transport", "reason"],
        )?;
        let keepalives = IntCounterVec::new(
            Opts::new(
                "xdpturn_keepalives_total",
                "Binding indications (keepalives) received, by transport",
            ),
            &["transport"],
        )?;
        let send_errors = IntCounterVec::new(
            Opts::new(
                "xdpturn_send_errors_total",
                "Replies that could not be sent, by transport",
            ),
            &["transport"],
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "xdpturn_client_connections",
                "Open client connections, by transport",
            ),
            &["transport"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "xdpturn_build_info",
                "Always 1; the version is in the label",
            ),
            &["version"],
        )?;
        let ready = IntGauge::new("xdpturn_ready", "1 while the relay accepts new work")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(keepalives.clone()))?;
        registry.register(Box::new(send_errors.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(ready.clone()))?;

        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Series exist from start-up, at zero, so rates and alerts work before the first event.
        for t in TRANSPORTS {
            for reason in DropReason::ALL {
                dropped.with_label_values(&[t.as_str(), reason.as_str()]);
            }
            requests.with_label_values(&[t.as_str(), "binding", "success"]);
            keepalives.with_label_values(&[t.as_str()]);
            send_errors.with_label_values(&[t.as_str()]);
            connections.with_label_values(&[t.as_str()]);
        }
        Ok(Self {
            registry,
            requests,
            dropped,
            keepalives,
            send_errors,
            connections,
            build_info,
            ready,
        })
    }

    /// Counts what the protocol core decided for one packet.
    pub fn record(&self, transport: Transport, outcome: &Outcome) {
        let t = transport.as_str();
        match *outcome {
            Outcome::Reply { method, code, .. } => {
                let mut code_buf = [0u8; 3];
                let result = match code {
                    None => "success",
                    Some(code) => code_label(code, &mut code_buf),
                };
                self.requests
                    .with_label_values(&[t, method.as_str(), result])
                    .inc();
            }
            Outcome::Consumed { .. } => self.keepalives.with_label_values(&[t]).inc(),
            Outcome::Dropped(reason) => self.dropped.with_label_values(&[t, reason.as_str()]).inc(),
        }
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
    use crate::stun::Method;

    #[test]
    fn outcomes_are_counted_with_bounded_labels() {
        let m = Metrics::new().expect("metrics");
        m.record(
            Transport::Udp,
            &Outcome::Reply {
                len: 1,
                method: Method::BINDING,
                code: None,
            },
        );
        m.record(
            Transport::Tcp,
            &Outcome::Reply {
                len: 1,
                method: Method::BINDING,
                code: Some(420),
            },
        );
        m.record(Transport::Udp, &Outcome::Dropped(DropReason::NotStun));
        m.record(
            Transport::Udp,
            &Outcome::Consumed {
                method: Method::BINDING,
            },
        );
        let text = m.render();
        assert!(
            text.contains(
                r#"xdpturn_requests_total{method="binding",result="success",transport="udp"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"xdpturn_requests_total{method="binding",result="420",transport="tcp"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"xdpturn_dropped_packets_total{reason="not_stun",transport="udp"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"xdpturn_dropped_packets_total{reason="malformed",transport="tls"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"xdpturn_keepalives_total{transport="udp"} 1"#),
            "{text}"
        );
    }
}
