//! Status: the last step, pure. From what the workload reports, the endpoints found and the
//! problems met, computes the TurnCluster's status: `Ready`, `Progressing` and `Degraded`
//! conditions (a condition's `lastTransitionTime` moves only when its status changes),
//! `readyRelays`, `endpoints` and `iceServers`.

use api::{Condition, ConditionStatus, TurnClusterSpec, TurnClusterStatus, conditions as c};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::ResourceExt;

use crate::endpoints::{Discovery, ice_servers};
use crate::relays::{FastPath, Report};
use crate::validate::{Problem, summary};

/// Degraded reason: `spec.xdp.enabled`, but relays say the fast path is not attached (they
/// relay everything in userspace). Read from each ready relay's `/readyz` ([`crate::relays`]).
pub const XDP_UNAVAILABLE: &str = "XdpUnavailable";
/// Relays named in the XdpUnavailable message; more are counted.
const NAMED_RELAYS: usize = 5;

/// Progressing reason: in DaemonSet mode, the relays of a new pod template revision are not
/// ready on every node yet, and the older revisions' relays keep serving until they are.
pub const WAITING_FOR_NEW_RELAYS: &str = "WaitingForNewRelays";

/// A workload's rollout state; in DaemonSet mode, over every revision's DaemonSet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Relays that should run.
    pub desired: i32,
    /// Relays that pass their readiness probe (of any revision).
    pub ready: i32,
    /// Relays running the current pod template.
    pub updated: i32,
    /// Whether the workload controller has seen the latest workload spec.
    pub observed: bool,
    /// DaemonSet mode, while older revisions' DaemonSets still serve.
    pub surge: Option<Surge>,
}

/// A DaemonSet-mode surge: the current revision's relays, and the older revisions' DaemonSets
/// kept until those are ready everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Surge {
    /// The current revision's DaemonSet; `None` if it could not be applied.
    pub current: Option<String>,
    /// Its relays that should run.
    pub desired: i32,
    /// Its relays that are ready.
    pub ready: i32,
    /// Its relays running its pod template.
    pub updated: i32,
    /// The older revisions' DaemonSets.
    pub old: Vec<String>,
}

impl Rollout {
    /// From a DaemonSet's status.
    pub fn of_daemonset(ds: &DaemonSet) -> Self {
        let s = ds.status.clone().unwrap_or_default();
        Self {
            desired: s.desired_number_scheduled,
            ready: s.number_ready,
            updated: s.updated_number_scheduled.unwrap_or(0),
            observed: s.observed_generation >= ds.metadata.generation,
            surge: None,
        }
    }

    /// From the DaemonSet of the current revision (as applied; `None` if it could not be) and
    /// those of older revisions still there: ready counts the relays of every revision (each
    /// node keeps a ready relay through a surge), desired the most any of them should run (the
    /// current one's, once its controller has counted), updated the current one's. `None`
    /// without any DaemonSet.
    pub fn of_revisions(current: Option<&DaemonSet>, old: &[DaemonSet]) -> Option<Self> {
        if current.is_none() && old.is_empty() {
            return None;
        }
        let now = current.map(Self::of_daemonset).unwrap_or_default();
        let before: Vec<Self> = old.iter().map(Self::of_daemonset).collect();
        let all = || std::iter::once(&now).chain(&before);
        let surge = (!old.is_empty()).then(|| Surge {
            current: current.map(ResourceExt::name_any),
            desired: now.desired,
            ready: now.ready,
            updated: now.updated,
            old: old.iter().map(ResourceExt::name_any).collect(),
        });
        Some(Self {
            desired: all().map(|r| r.desired).max().unwrap_or(0),
            ready: all().map(|r| r.ready).sum(),
            surge,
            ..now
        })
    }

    /// From a Deployment's status.
    pub fn of_deployment(d: &Deployment) -> Self {
        let s = d.status.clone().unwrap_or_default();
        Self {
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: s.ready_replicas.unwrap_or(0),
            updated: s.updated_replicas.unwrap_or(0),
            observed: s.observed_generation >= d.metadata.generation,
            surge: None,
        }
    }

    fn done(&self) -> bool {
        self.observed
            && self.surge.is_none()
            && self.updated >= self.desired
            && self.ready >= self.desired
    }
}

/// A problem that needs a user, from applying (a refused object, a name taken).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    /// The condition reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// What a reconcile of a valid TurnCluster observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// `metadata.generation` of the TurnCluster.
    pub generation: Option<i64>,
    /// The workload's rollout; `None` if it does not exist (yet).
    pub rollout: Option<Rollout>,
    /// The public endpoints.
    pub discovery: Discovery,
    /// Problems met while applying.
    pub troubles: Vec<Trouble>,
    /// What the ready relays said about their fast path (asked only with `spec.xdp.enabled`).
    pub relays: Vec<Report>,
}

/// The XdpUnavailable message, when XDP is asked for and a relay that answered runs without
/// it: how many, which (pod, node, the relay's reason), where to look.
fn fast_path_unavailable(spec: &TurnClusterSpec, relays: &[Report]) -> Option<String> {
    if !spec.xdp.enabled {
        return None;
    }
    let answered = relays.iter().filter(|r| r.fast_path.is_some()).count();
    let down: Vec<String> = relays
        .iter()
        .filter_map(|r| match &r.fast_path {
            Some(FastPath::Unavailable(reason)) => Some(match &r.node {
                Some(node) => format!("{} on {node} ({reason})", r.pod),
                None => format!("{} ({reason})", r.pod),
            }),
            _ => None,
        })
        .collect();
    if down.is_empty() {
        return None;
    }
    let mut named = down[..down.len().min(NAMED_RELAYS)].join(", ");
    if down.len() > NAMED_RELAYS {
        named.push_str(&format!(" and {} more", down.len() - NAMED_RELAYS));
    }
    Some(format!(
        "spec.xdp.enabled, but the XDP fast path is unavailable on {} of {answered} relays, \
         which relay everything in userspace: {named}; each relay's log says why (\"XDP fast \
         path unavailable\")",
        down.len()
    ))
}

/// The WaitingForNewRelays message: how far the new revision is, and which old ones serve.
fn surge_message(counts: &str, s: &Surge) -> String {
    let old = s.old.join(", ");
    match &s.current {
        Some(current) => format!(
            "{counts}; new relays (DaemonSet {current}): {}/{} ready, {}/{} updated; the old \
             relays (DaemonSet {old}) keep serving until every new one is ready",
            s.ready, s.desired, s.updated, s.desired
        ),
        None => format!(
            "{counts}; the new relays' DaemonSet could not be applied (see Degraded); the old \
             relays (DaemonSet {old}) keep serving"
        ),
    }
}

/// The status of a valid TurnCluster.
pub fn compute(
    spec: &TurnClusterSpec,
    observed: &Observed,
    previous: Option<&TurnClusterStatus>,
    now: &str,
) -> TurnClusterStatus {
    let generation = observed.generation;
    let rollout = observed.rollout.clone().unwrap_or_default();
    let d = &observed.discovery;
    let endpoints = d.addresses.clone();

    let degraded = if let Some(first) = observed.troubles.first() {
        cond(
            c::DEGRADED,
            ConditionStatus::True,
            first.reason,
            observed
                .troubles
                .iter()
                .map(|t| t.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else if let Some(m) = d.missing.as_ref().filter(|m| m.needs_user) {
        cond(
            c::DEGRADED,
            ConditionStatus::True,
            m.reason,
            m.message.clone(),
        )
    } else if let Some(message) = fast_path_unavailable(spec, &observed.relays) {
        cond(c::DEGRADED, ConditionStatus::True, XDP_UNAVAILABLE, message)
    } else {
        cond(
            c::DEGRADED,
            ConditionStatus::False,
            c::AS_EXPECTED,
            // Never empty: a 1.20 API server's server-side apply turns "" into null, which the
            // schema (a string) then refuses.
            "nothing needs attention".to_owned(),
        )
    };

    let counts = format!("{}/{} relays ready", rollout.ready, rollout.desired);
    let progressing = if let Some(surge) = &rollout.surge {
        cond(
            c::PROGRESSING,
            ConditionStatus::True,
            WAITING_FOR_NEW_RELAYS,
            surge_message(&counts, surge),
        )
    } else if observed.rollout.is_none() || !rollout.done() {
        let mut msg = counts.clone();
        if observed.rollout.is_some() && rollout.updated < rollout.desired {
            msg.push_str(&format!(
                ", {}/{} updated",
                rollout.updated, rollout.desired
            ));
        }
        cond(c::PROGRESSING, ConditionStatus::True, c::ROLLING_OUT, msg)
    } else if let Some(m) = d.missing.as_ref().filter(|m| !m.needs_user) {
        cond(
            c::PROGRESSING,
            ConditionStatus::True,
            m.reason,
            m.message.clone(),
        )
    } else {
        cond(
            c::PROGRESSING,
            ConditionStatus::False,
            c::STABLE,
            counts.clone(),
        )
    };

    let ready = if rollout.ready >= 1 && !endpoints.is_empty() {
        let reason = if rollout.ready >= rollout.desired {
            c::RELAYS_READY
        } else {
            c::PARTIALLY_READY
        };
        cond(
            c::READY,
            ConditionStatus::True,
            reason,
            format!("{counts}; clients reach them at {}", endpoints.join(", ")),
        )
    } else if rollout.ready < 1 {
        cond(c::READY, ConditionStatus::False, c::NO_RELAYS_READY, counts)
    } else {
        let (reason, message) = d.missing.as_ref().map_or(
            (c::NO_ENDPOINTS, "no public address is known".to_owned()),
            |m| (m.reason, m.message.clone()),
        );
        cond(c::READY, ConditionStatus::False, reason, message)
    };

    TurnClusterStatus {
        conditions: merge(
            previous,
            vec![ready, progressing, degraded],
            generation,
            now,
        ),
        observed_generation: generation,
        ready_relays: Some(rollout.ready),
        desired_relays: Some(rollout.desired),
        ice_servers: ice_servers(spec, &endpoints),
        endpoints,
    }
}

/// The status of a TurnCluster whose spec is invalid: Degraded with every problem, Ready and
/// Progressing false. The relays of the last valid spec keep running, so the counts, endpoints
/// and iceServers stay as they were.
pub fn invalid(
    problems: &[Problem],
    generation: Option<i64>,
    previous: Option<&TurnClusterStatus>,
    now: &str,
) -> TurnClusterStatus {
    let message = summary(problems);
    let keep = "the spec is invalid (see the Degraded condition); relays keep the last valid \
                configuration";
    let conditions = vec![
        cond(
            c::READY,
            ConditionStatus::False,
            c::INVALID_SPEC,
            keep.to_owned(),
        ),
        cond(
            c::PROGRESSING,
            ConditionStatus::False,
            c::INVALID_SPEC,
            keep.to_owned(),
        ),
        cond(c::DEGRADED, ConditionStatus::True, c::INVALID_SPEC, message),
    ];
    let prev = previous.cloned().unwrap_or_default();
    TurnClusterStatus {
        conditions: merge(previous, conditions, generation, now),
        observed_generation: generation,
        ..prev
    }
}

fn cond(type_: &str, status: ConditionStatus, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        last_transition_time: String::new(),
        observed_generation: None,
    }
}

/// Stamps generation and transition times: a condition keeps its previous
/// `lastTransitionTime` while its status stays the same.
fn merge(
    previous: Option<&TurnClusterStatus>,
    mut new: Vec<Condition>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    for c in &mut new {
        c.observed_generation = generation;
        c.last_transition_time = previous
            .and_then(|p| p.condition(&c.type_))
            .filter(|p| p.status == c.status)
            .map_or_else(|| now.to_owned(), |p| p.last_transition_time.clone());
    }
    new
}

/// A notable change between two statuses, worth an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Whether it is bad news.
    pub warning: bool,
    /// The event reason.
    pub reason: String,
    /// The event note.
    pub note: String,
}

/// What changed from `previous` to `next` that a user should hear about: Degraded turning true
/// (or its reason or message changing while true), and Ready turning true or false.
pub fn transitions(
    previous: Option<&TurnClusterStatus>,
    next: &TurnClusterStatus,
) -> Vec<Transition> {
    let mut out = Vec::new();
    let get = |s: Option<&TurnClusterStatus>, t: &str| s.and_then(|s| s.condition(t)).cloned();
    if let Some(d) = get(Some(next), c::DEGRADED)
        && d.status == ConditionStatus::True
    {
        let before = get(previous, c::DEGRADED);
        let same = before.is_some_and(|b| {
            b.status == ConditionStatus::True && b.reason == d.reason && b.message == d.message
        });
        if !same {
            out.push(Transition {
                warning: true,
                reason: d.reason.clone(),
                note: d.message.clone(),
            });
        }
    }
    if let Some(r) = get(Some(next), c::READY) {
        let was = get(previous, c::READY).map(|b| b.status);
        match (was, r.status) {
            (Some(ConditionStatus::True), ConditionStatus::True) => {}
            (_, ConditionStatus::True) => out.push(Transition {
                warning: false,
                reason: c::READY.to_owned(),
                note: r.message.clone(),
            }),
            (Some(ConditionStatus::True), _) => out.push(Transition {
                warning: true,
                reason: "NotReady".to_owned(),
                note: format!("{}: {}", r.reason, r.message),
            }),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
