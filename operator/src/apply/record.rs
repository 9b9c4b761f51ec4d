//! The one recorder of what a reconcile's writes did: each object's outcome is counted in the
//! write metrics, noted for the event saying what was written (its reason one of [`reasons`]),
//! or, when Kubernetes refused it for a reason the user must fix, kept as a trouble for the
//! status conditions. [`Events`] publishes the events.

use api::TurnClusterStatus;
use k8s_openapi::api::core::v1::ObjectReference;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder as EventRecorder, Reporter};
use tracing::warn;

use super::ssa::{ApplyError, Outcome};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::status::{self, Trouble};

/// The reasons of the events saying what a reconcile wrote: each its own, so that Kubernetes
/// (and `kubectl describe`) never folds one kind of change into another.
pub mod reasons {
    /// Objects were created and nothing else changed (a new TurnCluster).
    pub const CREATED: &str = "Created";
    /// The pod template changed: the relays are replaced gradually, each draining first.
    pub const REPLACING_RELAYS: &str = "ReplacingRelays";
    /// The ConfigMap changed and the pod template did not: the relays reload in place.
    pub const RELOADING_CONFIG: &str = "ReloadingConfig";
    /// Other objects changed (Services, the workload's metadata or rollout settings): no relay
    /// is replaced or reloaded.
    pub const UPDATED: &str = "Updated";
    /// Only deletions (the workload of the previous placement mode, a ServiceMonitor).
    pub const DELETED: &str = "Deleted";
    /// The relays of the current revision are ready on every node: the DaemonSets of older
    /// revisions are deleted, their relays drain and stop.
    pub const RETIRING_OLD_RELAYS: &str = "RetiringOldRelays";
}

/// What the writes of one reconcile did, for the event.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    pub(crate) created: Vec<String>,
    pub(crate) updated: Vec<String>,
    pub(crate) deleted: Vec<String>,
    /// The pod template of an existing workload changed: its relays are replaced.
    pub(crate) template_changed: bool,
    /// A new revision's DaemonSet was created next to older ones: a surge on every node.
    pub(crate) surge: bool,
    /// Older revisions' DaemonSets were deleted, this (current) one being ready everywhere.
    pub(crate) retired_for: Option<String>,
}

impl Writes {
    /// The event's reason and note: which objects were created, updated and deleted, and what
    /// happens to the relays. `None` when nothing was written.
    pub(crate) fn event(&self) -> Option<(&'static str, String)> {
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
        let config_updated = self.updated.iter().any(|u| u.starts_with("ConfigMap"));
        let workload = |w: &String| w.starts_with("DaemonSet") || w.starts_with("Deployment");
        let workload_created = self.created.iter().any(workload);
        // A placement mode change: the new workload's relays replace the old one's.
        let of = |list: &[String], kind: &str| list.iter().any(|w| w.starts_with(kind));
        let mode_changed = (of(&self.created, "DaemonSet ") && of(&self.deleted, "Deployment "))
            || (of(&self.created, "Deployment ") && of(&self.deleted, "DaemonSet "));
        let reason = if self.surge {
            note.push_str(
                ": the pod template changed, a new relay starts next to the old one on each \
                 node and takes over its ports; the old relays drain, once every new one is \
                 ready",
            );
            reasons::REPLACING_RELAYS
        } else if self.template_changed || mode_changed {
            note.push_str(if mode_changed {
                ": the placement mode changed, the new relays replace the old ones"
            } else {
                ": the pod template changed, relays are replaced gradually, each draining its \
                 allocations first"
            });
            reasons::REPLACING_RELAYS
        } else if config_updated {
            note.push_str(
                ": relays reload relay.toml in place, without restarting or dropping allocations",
            );
            reasons::RELOADING_CONFIG
        } else if self.updated.is_empty() && !self.created.is_empty() {
            if workload_created {
                note.push_str(": relays start");
            }
            reasons::CREATED
        } else if let Some(current) = self
            .retired_for
            .as_ref()
            .filter(|_| self.updated.is_empty() && self.created.is_empty())
        {
            note.push_str(&format!(
                ": the relays of {current} are ready on every node; the older revisions' relays \
                 drain their allocations and stop"
            ));
            reasons::RETIRING_OLD_RELAYS
        } else if self.updated.is_empty() && self.created.is_empty() {
            reasons::DELETED
        } else {
            note.push_str(": no relay is replaced");
            reasons::UPDATED
        };
        Some((reason, note))
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

    /// The reason and note of the event saying what was written ([`reasons`]), and the
    /// troubles for the status.
    pub fn finish(self) -> (Option<(&'static str, String)>, Vec<Trouble>) {
        (self.writes.event(), self.troubles)
    }
}

/// Publishes the TurnCluster's events; a failure to publish is logged, never an error.
///
/// kube's recorder counts an event again (a series on the first one) whenever the reason is the
/// same, whatever the note says, so a second, different change would show as the first one
/// again. Here an event repeats only with the same reason and note: a new note gets a new event.
pub struct Events {
    client: Client,
    reporter: Reporter,
    /// Per regarded object, reason and type: the last note, and the recorder that counts it.
    last: Mutex<HashMap<EventKey, (String, Arc<EventRecorder>)>>,
}

/// The regarded object (namespace, name, uid), the reason, and whether it is a Warning.
type EventKey = (String, String, String, String, bool);

/// More keys than this and the map starts again (TurnClusters come and go).
const MAX_EVENT_KEYS: usize = 10_000;

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Events published with `client`, as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            last: Mutex::default(),
        }
    }

    /// The recorder for an event: the one that published the same note last time (which counts
    /// it again), or a new one.
    fn recorder(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Arc<EventRecorder> {
        let key = (
            reference.namespace.clone().unwrap_or_default(),
            reference.name.clone().unwrap_or_default(),
            reference.uid.clone().unwrap_or_default(),
            reason.to_owned(),
            warning,
        );
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.get(&key) {
            Some((same, recorder)) if same == note => recorder.clone(),
            _ => {
                if last.len() >= MAX_EVENT_KEYS {
                    last.clear();
                }
                let recorder = Arc::new(EventRecorder::new(
                    self.client.clone(),
                    self.reporter.clone(),
                ));
                last.insert(key, (note.to_owned(), recorder.clone()));
                recorder
            }
        }
    }

    /// Publishes one event about `reference`.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let note = truncate(note, 1000);
        let recorder = self.recorder(reference, warning, reason, &note);
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, reference).await {
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
        // A config change also updates the workload's config checksum annotation; no pod is
        // replaced for it.
        let w = Writes {
            updated: vec!["ConfigMap t-relay".into(), "DaemonSet t-relay".into()],
            ..Writes::default()
        };
        assert_eq!(
            w.event().unwrap(),
            (
                reasons::RELOADING_CONFIG,
                "updated ConfigMap t-relay, DaemonSet t-relay: relays reload relay.toml in \
                 place, without restarting or dropping allocations"
                    .to_owned()
            )
        );
        let w = Writes {
            updated: vec!["DaemonSet t-relay".into()],
            template_changed: true,
            ..Writes::default()
        };
        let (reason, note) = w.event().unwrap();
        assert_eq!(reason, reasons::REPLACING_RELAYS);
        assert!(
            note.starts_with("updated DaemonSet t-relay: the pod template changed"),
            "{note}"
        );
        let w = Writes {
            created: vec!["ConfigMap t-relay".into(), "DaemonSet t-relay".into()],
            ..Writes::default()
        };
        assert_eq!(
            w.event().unwrap(),
            (
                reasons::CREATED,
                "created ConfigMap t-relay, DaemonSet t-relay: relays start".to_owned()
            )
        );
        let w = Writes {
            updated: vec!["Service t".into()],
            ..Writes::default()
        };
        assert_eq!(
            w.event().unwrap(),
            (
                reasons::UPDATED,
                "updated Service t: no relay is replaced".to_owned()
            )
        );
        let w = Writes {
            deleted: vec!["Deployment t-relay".into()],
            ..Writes::default()
        };
        assert_eq!(w.event().unwrap().0, reasons::DELETED);
        let w = Writes {
            created: vec!["Deployment t-relay".into()],
            deleted: vec!["DaemonSet t-relay".into()],
            ..Writes::default()
        };
        assert_eq!(w.event().unwrap().0, reasons::REPLACING_RELAYS);
        // A new revision next to the old one: a surge.
        let w = Writes {
            created: vec!["DaemonSet t-relay-0123456789".into()],
            surge: true,
            ..Writes::default()
        };
        let (reason, note) = w.event().unwrap();
        assert_eq!(reason, reasons::REPLACING_RELAYS);
        assert!(
            note.starts_with("created DaemonSet t-relay-0123456789: the pod template changed, a new relay starts next to the old one"),
            "{note}"
        );
        // The new revision ready everywhere: the old ones go.
        let w = Writes {
            deleted: vec!["DaemonSet t-relay".into()],
            retired_for: Some("t-relay-0123456789".into()),
            ..Writes::default()
        };
        assert_eq!(
            w.event().unwrap(),
            (
                reasons::RETIRING_OLD_RELAYS,
                "deleted DaemonSet t-relay: the relays of t-relay-0123456789 are ready on every \
                 node; the older revisions' relays drain their allocations and stop"
                    .to_owned()
            )
        );
        assert!(Writes::default().event().is_none());
        assert_eq!(truncate("abcdef".into(), 5), "ab...");
    }
}
