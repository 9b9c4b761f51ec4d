//! The operator's own metrics, one registry, names prefixed `xdpturn_operator_`, bounded labels.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::error::Error;

/// Kinds counted in `xdpturn_operator_writes_total`.
pub const KINDS: &[&str] = &[
    "ConfigMap",
    "ServiceAccount",
    "Service",
    "DaemonSet",
    "Deployment",
    "ServiceMonitor",
    "TurnCluster",
];

/// Operations counted in `xdpturn_operator_writes_total`.
pub const OPERATIONS: &[&str] = &["create", "update", "delete", "status"];

/// The metrics, registered in their own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: IntCounter,
    /// Reconciles that failed, by [`Error::metric_label`].
    pub failures: IntCounterVec,
    /// Reconcile duration.
    pub duration: Histogram,
    /// TurnClusters found invalid (each reconcile that found the spec invalid).
    pub invalid: IntCounter,
    /// Writes sent to the API server, by kind and operation.
    pub writes: IntCounterVec,
    /// 1 while this replica holds the leader Lease (or leader election is off).
    pub leader: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric, label values at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounter::new(
            "xdpturn_operator_reconciles_total",
            "TurnCluster reconciles started",
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "xdpturn_operator_reconcile_failures_total",
                "TurnCluster reconciles that failed and will be retried, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "xdpturn_operator_reconcile_duration_seconds",
                "How long a TurnCluster reconcile took",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let invalid = IntCounter::new(
            "xdpturn_operator_invalid_spec_total",
            "Reconciles that found a TurnCluster's spec invalid (reported in its status)",
        )
        .expect("valid metric");
        let writes = IntCounterVec::new(
            Opts::new(
                "xdpturn_operator_writes_total",
                "Writes sent to the API server, by kind and operation (create, update, delete, \
                 status)",
            ),
            &["kind", "operation"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "xdpturn_operator_leader",
            "1 while this replica reconciles (holds the leader Lease)",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(invalid.clone()),
            Box::new(writes.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        for label in Error::LABELS {
            failures.with_label_values(&[label]);
        }
        for kind in KINDS {
            for op in OPERATIONS {
                writes.with_label_values(&[kind, op]);
            }
        }
        Self {
            registry,
            reconciles,
            failures,
            duration,
            invalid,
            writes,
            leader,
        }
    }

    /// Counts a write.
    pub fn wrote(&self, kind: &str, operation: &str) {
        self.writes.with_label_values(&[kind, operation]).inc();
    }

    /// All writes so far, any kind.
    pub fn total_writes(&self) -> u64 {
        KINDS
            .iter()
            .flat_map(|k| OPERATIONS.iter().map(move |o| (k, o)))
            .map(|(k, o)| self.writes.with_label_values(&[k, o]).get())
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_at_zero() {
        let m = Metrics::new();
        let text = m.render();
        for needle in [
            "xdpturn_operator_reconciles_total 0",
            "xdpturn_operator_reconcile_failures_total{reason=\"apply\"} 0",
            "xdpturn_operator_writes_total{kind=\"DaemonSet\",operation=\"create\"} 0",
            // Older relay revisions' DaemonSets are deleted once the current one is ready.
            "xdpturn_operator_writes_total{kind=\"DaemonSet\",operation=\"delete\"} 0",
            "xdpturn_operator_reconcile_duration_seconds_count 0",
            "xdpturn_operator_leader 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        m.wrote("Service", "update");
        m.wrote("DaemonSet", "delete");
        assert_eq!(m.total_writes(), 2);
    }
}
