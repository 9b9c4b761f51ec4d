//! The one recorder of what a reconcile's writes did: each object's outcome is counted in the
//! write metrics, noted for the `Applied` event, or, when Kubernetes refused it for a reason the
//! user must fix, kept as a trouble for the status conditions. [`Events`] publishes the events.

use api::TurnClusterStatus;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder as EventRecorder};
use tracing::warn;

use super::ssa::{ApplyError, Outcome};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::status::{self, Trouble};

/// What the writes of one reconcile did, for the event.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    pub(crate) created: Vec<String>,
    pub(crate) updated: Vec<String>,
    pub(crate) deleted: Vec<String>,
    pub(crate) workload_updated: bool,
}

impl Writes {
    pub(crate) fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (verb, list) in [
            ("created", &self.created),
            ("updated", &self.updated),
            ("deleted", &self.deleted),
        ] {
            if !list.is_empty() {
                parts.push(format!("{verb} {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            return None;
        }
        let mut note = parts.join("; ");
        if self.workload_updated {
            note.push_str(" (relays are replaced gradually, each draining its allocations first)");
        } else if self.updated.iter().any(|u| u.starts_with("ConfigMap")) {
            note.push_str(" (relays reload relay.toml without restarting)");
        }
        Some(note)
    }
}

/// How a refusal of one object is reported: as a trouble for the status, or `Err` to retry.
pub(crate) type Refusal = fn(ApplyError) -> Result<Trouble, ApplyError>;

/// The refusals of an owned object: a name taken by something else, or an object Kubernetes
/// refused.
pub(crate) fn refusal(err: ApplyError) -> Result<Trouble, ApplyError> {
    match err {
        err @ ApplyError::NameConflict { .. } => Ok(Trouble {
            reason: api::conditions::NAME_CONFLICT,
            message: err.to_string(),
        }),
        err @ ApplyError::Rejected { .. } => Ok(Trouble {
            reason: api::conditions::REJECTED,
            message: err.to_string(),
        }),
        err => Err(err),
    }
}

/// What the writes of one reconcile did, as it happens.
#[derive(Debug)]
pub struct Record<'m> {
    metrics: &'m Metrics,
    pub(crate) writes: Writes,
    pub(crate) troubles: Vec<Trouble>,
}

impl<'m> Record<'m> {
    /// An empty record, counting into `metrics`.
    pub fn new(metrics: &'m Metrics) -> Self {
        Self {
            metrics,
            writes: Writes::default(),
            troubles: Vec::new(),
        }
    }

    /// Records the outcome of applying `kind name`: a create or update is counted and noted, a
    /// refusal (as `refused` sorts it) becomes a trouble. `Ok(None)` when it was refused.
    pub(crate) fn applied(
        &mut self,
        kind: &str,
        name: &str,
        result: Result<Outcome, ApplyError>,
        refused: Refusal,
    ) -> Result<Option<Outcome>, Error> {
        match result {
            Ok(Outcome::Unchanged) => Ok(Some(Outcome::Unchanged)),
            Ok(outcome) => {
                let created = outcome == Outcome::Created;
                self.metrics
                    .wrote(kind, if created { "create" } else { "update" });
                let entry = format!("{kind} {name}");
                if created {
                    self.writes.created.push(entry);
                } else {
                    self.writes.updated.push(entry);
                }
                Ok(Some(outcome))
            }
            Err(err) => {
                self.troubles.push(refused(err)?);
                Ok(None)
            }
        }
    }

    /// Records that `kind name` was deleted.
    pub(crate) fn deleted(&mut self, kind: &str, name: &str) {
        self.metrics.wrote(kind, "delete");
        self.writes.deleted.push(format!("{kind} {name}"));
    }

    /// The note of the `Applied` event, and the troubles for the status.
    pub fn finish(self) -> (Option<String>, Vec<Trouble>) {
        (self.writes.note(), self.troubles)
    }
}

/// Publishes the TurnCluster's events; a failure to publish is logged, never an error.
pub struct Events {
    recorder: EventRecorder,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Events published with `recorder`.
    pub fn new(recorder: EventRecorder) -> Self {
        Self { recorder }
    }

    /// Publishes one event about `reference`.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, reference).await {
            warn!(%err, reason, "publishing an event failed");
        }
    }

    /// Publishes an event for each condition that changed from `previous` to `next`.
    pub async fn announce(
        &self,
        reference: &ObjectReference,
        previous: Option<&TurnClusterStatus>,
        next: &TurnClusterStatus,
    ) {
        for t in status::transitions(previous, next) {
            self.publish(reference, t.warning, &t.reason, t.note).await;
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn notes_say_what_happens_to_relays() {
        let w = Writes {
            updated: vec!["ConfigMap t-relay".into()],
            ..Writes::default()
        };
        assert_eq!(
            w.note().unwrap(),
            "updated ConfigMap t-relay (relays reload relay.toml without restarting)"
        );
        assert!(Writes::default().note().is_none());
        assert_eq!(truncate("abcdef".into(), 5), "ab...");
    }
}
