//! Tests of status: conditions, transitions and events from observed states.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::endpoints::Missing;

fn spec() -> TurnClusterSpec {
    serde_json::from_value(serde_json::json!({"realm": "r"})).unwrap()
}

fn observed(ready: i32, desired: i32, addresses: &[&str]) -> Observed {
    Observed {
        generation: Some(2),
        rollout: Some(Rollout {
            desired,
            ready,
            updated: desired,
            observed: true,
            surge: None,
        }),
        discovery: Discovery {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            missing: None,
        },
        troubles: vec![],
        relays: vec![],
    }
}

fn status_of(s: &TurnClusterStatus, t: &str) -> (ConditionStatus, String) {
    let c = s.condition(t).unwrap();
    (c.status, c.reason.clone())
}

#[test]
fn all_ready() {
    let s = compute(&spec(), &observed(2, 2, &["203.0.113.1"]), None, "T1");
    assert_eq!(
        status_of(&s, "Ready"),
        (ConditionStatus::True, "RelaysReady".into())
    );
    assert_eq!(
        status_of(&s, "Progressing"),
        (ConditionStatus::False, "Stable".into())
    );
    assert_eq!(
        status_of(&s, "Degraded"),
        (ConditionStatus::False, "AsExpected".into())
    );
    assert_eq!(s.ready_relays, Some(2));
    assert_eq!(s.observed_generation, Some(2));
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
    assert_eq!(
        s.ice_servers[0].urls,
        [
            "turn:203.0.113.1:3478?transport=udp",
            "turn:203.0.113.1:3478?transport=tcp"
        ]
    );
}

#[test]
fn explicit_endpoints_without_relays() {
    let mut o = observed(0, 0, &["turn.example.org"]);
    o.rollout = None;
    let s = compute(&spec(), &o, None, "T1");
    assert_eq!(
        status_of(&s, "Ready"),
        (ConditionStatus::False, "NoRelaysReady".into())
    );
    assert_eq!(
        status_of(&s, "Progressing"),
        (ConditionStatus::True, "RollingOut".into())
    );
    assert_eq!(s.endpoints, ["turn.example.org"]);
    assert_eq!(s.ice_servers.len(), 1, "iceServers before any relay exists");
}

#[test]
fn partial_and_rolling() {
    let mut o = observed(1, 3, &["a.example"]);
    o.rollout = Some(Rollout {
        desired: 3,
        ready: 1,
        updated: 2,
        observed: true,
        surge: None,
    });
    let s = compute(&spec(), &o, None, "T1");
    assert_eq!(
        status_of(&s, "Ready"),
        (ConditionStatus::True, "PartiallyReady".into())
    );
    let p = s.condition("Progressing").unwrap();
    assert_eq!(p.message, "1/3 relays ready, 2/3 updated");
}

/// A DaemonSet at generation 1 whose controller reports `(desired, ready, updated)`; `None`: it
/// has not counted yet.
fn daemonset(name: &str, counts: Option<(i32, i32, i32)>) -> DaemonSet {
    let mut v = serde_json::json!({"metadata": {"name": name, "generation": 1}});
    if let Some((desired, ready, updated)) = counts {
        v["status"] = serde_json::json!({"observedGeneration": 1,
            "desiredNumberScheduled": desired, "numberReady": ready,
            "updatedNumberScheduled": updated, "currentNumberScheduled": desired,
            "numberMisscheduled": 0});
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn revisions_add_up() {
    assert_eq!(Rollout::of_revisions(None, &[]), None);
    let old = [daemonset("t-relay", Some((3, 3, 3)))];
    // Just created: its controller has not counted; the old relays serve every node.
    let new = daemonset("t-relay-0123456789", None);
    let r = Rollout::of_revisions(Some(&new), &old).unwrap();
    assert_eq!(
        (r.desired, r.ready, r.updated, r.observed),
        (3, 3, 0, false)
    );
    assert_eq!(
        r.surge,
        Some(Surge {
            current: Some("t-relay-0123456789".into()),
            desired: 0,
            ready: 0,
            updated: 0,
            old: vec!["t-relay".into()],
        })
    );
    // Half way: two new relays took over (their old ones drain, not ready), one old serves.
    let old = [daemonset("t-relay", Some((3, 1, 3)))];
    let new = daemonset("t-relay-0123456789", Some((3, 2, 3)));
    let r = Rollout::of_revisions(Some(&new), &old).unwrap();
    assert_eq!((r.desired, r.ready, r.updated, r.observed), (3, 3, 3, true));
    // The old ones gone: just the current revision.
    let new = daemonset("t-relay-0123456789", Some((3, 3, 3)));
    let r = Rollout::of_revisions(Some(&new), &[]).unwrap();
    assert_eq!(r, Rollout::of_daemonset(&new));
    assert!(r.done());
    // The new one refused: the old ones still count.
    let r = Rollout::of_revisions(None, &old).unwrap();
    assert_eq!((r.desired, r.ready), (3, 1));
    assert_eq!(r.surge.unwrap().current, None);
}

#[test]
fn a_surge_is_progress_and_the_old_relays_keep_it_ready() {
    let old = [daemonset("t-relay", Some((2, 2, 2)))];
    // A bad image: the new relays never get ready, the old ones serve.
    let new = daemonset("t-relay-0123456789", Some((2, 0, 2)));
    let mut o = observed(0, 0, &["203.0.113.1"]);
    o.rollout = Rollout::of_revisions(Some(&new), &old);
    let s = compute(&spec(), &o, None, "T1");
    assert_eq!(
        status_of(&s, "Ready"),
        (ConditionStatus::True, "RelaysReady".into())
    );
    let p = s.condition("Progressing").unwrap();
    assert_eq!(
        (p.status, p.reason.as_str()),
        (ConditionStatus::True, WAITING_FOR_NEW_RELAYS)
    );
    assert_eq!(
        p.message,
        "2/2 relays ready; new relays (DaemonSet t-relay-0123456789): 0/2 ready, 2/2 updated; \
         the old relays (DaemonSet t-relay) keep serving until every new one is ready"
    );
    assert_eq!(s.ready_relays, Some(2));
    assert_eq!(status_of(&s, "Degraded").0, ConditionStatus::False);
    // Every new relay ready, the old ones not deleted yet (the same reconcile deletes them):
    // still a surge until they are gone.
    let new = daemonset("t-relay-0123456789", Some((2, 2, 2)));
    o.rollout = Rollout::of_revisions(Some(&new), &old);
    let s = compute(&spec(), &o, None, "T1");
    assert_eq!(status_of(&s, "Progressing").1, WAITING_FOR_NEW_RELAYS);
    o.rollout = Rollout::of_revisions(Some(&new), &[]);
    let s = compute(&spec(), &o, None, "T1");
    assert_eq!(
        status_of(&s, "Progressing"),
        (ConditionStatus::False, "Stable".into())
    );
    // The new DaemonSet refused.
    o.rollout = Rollout::of_revisions(None, &old);
    let s = compute(&spec(), &o, None, "T1");
    assert!(
        s.condition("Progressing")
            .unwrap()
            .message
            .contains("could not be applied (see Degraded)")
    );
    assert_eq!(status_of(&s, "Ready").0, ConditionStatus::True);
}

#[test]
fn waiting_for_load_balancer_is_progress_not_degradation() {
    let mut o = observed(2, 2, &[]);
    o.discovery.missing = Some(Missing {
        reason: c::WAITING_FOR_LOAD_BALANCER,
        message: "waiting".into(),
        needs_user: false,
    });
    let s = compute(&spec(), &o, None, "T1");
    assert_eq!(
        status_of(&s, "Ready"),
        (ConditionStatus::False, "WaitingForLoadBalancer".into())
    );
    assert_eq!(
        status_of(&s, "Progressing"),
        (ConditionStatus::True, "WaitingForLoadBalancer".into())
    );
    assert_eq!(status_of(&s, "Degraded").0, ConditionStatus::False);
    o.discovery.missing.as_mut().unwrap().needs_user = true;
    o.discovery.missing.as_mut().unwrap().reason = c::NO_ENDPOINTS;
    let s = compute(&spec(), &o, None, "T1");
    assert_eq!(
        status_of(&s, "Degraded"),
        (ConditionStatus::True, "NoPublicAddress".into())
    );
}

#[test]
fn troubles_degrade() {
    let mut o = observed(2, 2, &["a"]);
    o.troubles = vec![
        Trouble {
            reason: c::REJECTED,
            message: "Kubernetes refused Service a: no".into(),
        },
        Trouble {
            reason: c::NAME_CONFLICT,
            message: "ConfigMap a-relay exists".into(),
        },
    ];
    let s = compute(&spec(), &o, None, "T1");
    let d = s.condition("Degraded").unwrap();
    assert_eq!(d.reason, "Rejected");
    assert_eq!(
        d.message,
        "Kubernetes refused Service a: no; ConfigMap a-relay exists"
    );
}

#[test]
fn no_condition_has_an_empty_message() {
    let mut o = observed(0, 0, &[]);
    o.rollout = None;
    for s in [
        compute(&spec(), &observed(2, 2, &["a"]), None, "T"),
        compute(&spec(), &o, None, "T"),
    ] {
        for c in &s.conditions {
            assert!(!c.message.is_empty(), "{c:?}");
        }
    }
}

#[test]
fn transition_times_move_only_on_status_changes() {
    let first = compute(&spec(), &observed(1, 2, &["a"]), None, "T1");
    let second = compute(&spec(), &observed(2, 2, &["a"]), Some(&first), "T2");
    let ready = second.condition("Ready").unwrap();
    assert_eq!(ready.reason, "RelaysReady");
    assert_eq!(ready.last_transition_time, "T1", "still True");
    let p = second.condition("Progressing").unwrap();
    assert_eq!(p.last_transition_time, "T2", "True -> False");
    let third = compute(&spec(), &observed(2, 2, &["a"]), Some(&second), "T3");
    assert_eq!(third, second, "nothing changed, nothing to write");
}

#[test]
fn invalid_keeps_what_runs() {
    let before = compute(&spec(), &observed(2, 2, &["a"]), None, "T1");
    let problems = vec![Problem {
        path: "spec.realm".into(),
        message: "must not be empty".into(),
    }];
    let s = invalid(&problems, Some(3), Some(&before), "T2");
    assert_eq!(
        status_of(&s, "Degraded"),
        (ConditionStatus::True, "InvalidSpec".into())
    );
    assert_eq!(
        s.condition("Degraded").unwrap().message,
        "spec.realm: must not be empty"
    );
    assert_eq!(
        status_of(&s, "Ready"),
        (ConditionStatus::False, "InvalidSpec".into())
    );
    assert_eq!(s.endpoints, before.endpoints);
    assert_eq!(s.ready_relays, Some(2));
    assert_eq!(s.observed_generation, Some(3));
    let t = transitions(Some(&before), &s);
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(t[0].warning && t[0].reason == "InvalidSpec");
    assert_eq!(t[1].reason, "NotReady");
    assert!(transitions(Some(&s), &s).is_empty(), "no event twice");
    let back = transitions(Some(&s), &before);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].reason, "Ready");
}

fn report(pod: &str, fast_path: Option<FastPath>) -> Report {
    Report {
        pod: pod.into(),
        node: Some(format!("node-{pod}")),
        fast_path,
    }
}

#[test]
fn xdp_asked_for_but_unavailable_degrades_with_an_event() {
    let mut xdp = spec();
    xdp.xdp.enabled = true;
    xdp.xdp.interfaces = vec!["eth0".into()];
    let mut o = observed(3, 3, &["a"]);
    o.relays = vec![
        report("r-1", Some(FastPath::Attached)),
        report("r-2", Some(FastPath::Unavailable("load".into()))),
        report("r-3", None),
    ];
    let s = compute(&xdp, &o, None, "T1");
    let d = s.condition("Degraded").unwrap();
    assert_eq!(
        (d.status, d.reason.as_str()),
        (ConditionStatus::True, "XdpUnavailable")
    );
    assert_eq!(
        d.message,
        "spec.xdp.enabled, but the XDP fast path is unavailable on 1 of 2 relays, which relay \
         everything in userspace: r-2 on node-r-2 (load); each relay's log says why (\"XDP \
         fast path unavailable\")"
    );
    // The relays serve, in userspace: still Ready.
    assert_eq!(
        status_of(&s, "Ready"),
        (ConditionStatus::True, "RelaysReady".into())
    );
    let t = transitions(None, &s);
    assert!(
        t.iter()
            .any(|t| t.warning && t.reason == "XdpUnavailable" && t.note == d.message),
        "{t:?}"
    );
    assert!(
        transitions(Some(&s), &compute(&xdp, &o, Some(&s), "T2")).is_empty(),
        "no event twice"
    );

    // Fixed (every relay attached): AsExpected again.
    o.relays[1].fast_path = Some(FastPath::Attached);
    let fixed = compute(&xdp, &o, Some(&s), "T3");
    assert_eq!(
        status_of(&fixed, "Degraded"),
        (ConditionStatus::False, "AsExpected".into())
    );
    // Without spec.xdp.enabled, what relays say is not a problem.
    o.relays[1].fast_path = Some(FastPath::Unavailable("load".into()));
    assert_eq!(
        status_of(&compute(&spec(), &o, None, "T1"), "Degraded").0,
        ConditionStatus::False
    );
    // A problem a user must fix first wins; the fast path comes after it.
    o.troubles = vec![Trouble {
        reason: c::REJECTED,
        message: "no".into(),
    }];
    assert_eq!(
        status_of(&compute(&xdp, &o, None, "T1"), "Degraded").1,
        "Rejected"
    );
}

#[test]
fn many_unavailable_relays_are_counted_not_all_named() {
    let mut xdp = spec();
    xdp.xdp.enabled = true;
    let mut o = observed(8, 8, &["a"]);
    o.relays = (1..=8)
        .map(|i| {
            report(
                &format!("r-{i}"),
                Some(FastPath::Unavailable("attach".into())),
            )
        })
        .collect();
    let s = compute(&xdp, &o, None, "T1");
    let m = &s.condition("Degraded").unwrap().message;
    assert!(m.contains("unavailable on 8 of 8 relays"), "{m}");
    assert!(m.contains("r-5 on node-r-5 (attach) and 3 more;"), "{m}");
    assert!(!m.contains("r-6"), "{m}");
}
