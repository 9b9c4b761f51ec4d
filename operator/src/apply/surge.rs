//! The surge of DaemonSet-mode relays, decided here without I/O: a TurnCluster has one relay
//! DaemonSet per pod template revision (`<tc>-relay-<rev>`, see [`crate::build::revision`]),
//! and apply deletes the DaemonSets of older revisions (also the `<tc>-relay` from before
//! revisions) only once the current one is ready on every node it should run on: until then
//! each node keeps its old relay next to the new one, and a new revision that never gets ready
//! (a bad image) leaves the old relays serving.

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;

/// Whether the DaemonSet's controller has seen its latest spec and reports every relay it
/// should run as up to date and ready. A DaemonSet that should run nowhere (no node matches) is
/// ready as soon as its controller has seen it.
pub fn ready_everywhere(ds: &DaemonSet) -> bool {
    let Some(s) = ds.status.as_ref() else {
        return false;
    };
    let observed = match (s.observed_generation, ds.metadata.generation) {
        (Some(seen), Some(generation)) => seen >= generation,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let desired = s.desired_number_scheduled;
    observed
        && (desired == 0
            || (desired > 0
                && s.number_ready >= desired
                && s.updated_number_scheduled.unwrap_or(0) >= desired))
}

/// The old revisions to delete now: all of `old` once `current` (the DaemonSet as applied; `None`
/// if it could not be applied) is ready everywhere, none before.
pub fn to_retire<'a>(current: Option<&DaemonSet>, old: &'a [DaemonSet]) -> &'a [DaemonSet] {
    if current.is_some_and(ready_everywhere) {
        old
    } else {
        &[]
    }
}

/// Splits a TurnCluster's relay DaemonSets into the one named `current` (if it exists) and the
/// others (older revisions), those sorted by name.
pub fn split(all: Vec<DaemonSet>, current: &str) -> (Option<DaemonSet>, Vec<DaemonSet>) {
    let (mut mine, mut old): (Vec<DaemonSet>, Vec<DaemonSet>) =
        all.into_iter().partition(|ds| ds.name_any() == current);
    old.sort_by_key(ResourceExt::name_any);
    (mine.pop(), old)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    /// A DaemonSet at `generation` whose controller reports `(observed, desired, ready,
    /// updated)`; `None`: no status yet.
    fn ds(name: &str, generation: i64, status: Option<(i64, i32, i32, i32)>) -> DaemonSet {
        let mut v = json!({"metadata": {"name": name, "generation": generation}});
        if let Some((observed, desired, ready, updated)) = status {
            v["status"] = json!({"observedGeneration": observed,
                "desiredNumberScheduled": desired, "numberReady": ready,
                "updatedNumberScheduled": updated, "currentNumberScheduled": desired,
                "numberMisscheduled": 0});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ready_only_when_seen_and_every_relay_is_ready_and_up_to_date() {
        assert!(ready_everywhere(&ds("a", 1, Some((1, 3, 3, 3)))));
        assert!(ready_everywhere(&ds("a", 2, Some((3, 3, 3, 3)))));
        assert!(!ready_everywhere(&ds("a", 1, None)), "just created");
        assert!(
            !ready_everywhere(&ds("a", 2, Some((1, 3, 3, 3)))),
            "the controller has not seen the latest spec"
        );
        assert!(
            !ready_everywhere(&ds("a", 1, Some((1, 3, 2, 3)))),
            "one not ready"
        );
        assert!(
            !ready_everywhere(&ds("a", 1, Some((1, 3, 3, 2)))),
            "one not up to date"
        );
        assert!(
            !ready_everywhere(&ds("a", 1, Some((1, 3, 0, 0)))),
            "a bad image: none ever ready"
        );
        assert!(
            ready_everywhere(&ds("a", 1, Some((1, 0, 0, 0)))),
            "no node to run on: nothing to wait for"
        );
    }

    #[test]
    fn old_revisions_go_only_when_the_current_one_is_ready() {
        let old = [ds("t-relay", 4, Some((4, 2, 2, 2)))];
        assert!(to_retire(None, &old).is_empty(), "the new one was refused");
        let new = ds("t-relay-0123456789", 1, Some((1, 2, 1, 2)));
        assert!(to_retire(Some(&new), &old).is_empty());
        let new = ds("t-relay-0123456789", 1, Some((1, 2, 2, 2)));
        assert_eq!(to_retire(Some(&new), &old), old);
        let new = ds("t-relay-0123456789", 1, Some((1, 0, 0, 0)));
        assert_eq!(to_retire(Some(&new), &old), old, "no nodes: at once");
        assert!(to_retire(Some(&new), &[]).is_empty());
    }

    #[test]
    fn split_finds_the_current_revision() {
        let all = vec![
            ds("t-relay-bbbbbbbbbb", 1, None),
            ds("t-relay-cccccccccc", 1, None),
            ds("t-relay", 1, None),
        ];
        let (current, old) = split(all, "t-relay-bbbbbbbbbb");
        assert_eq!(current.unwrap().name_any(), "t-relay-bbbbbbbbbb");
        let old: Vec<String> = old.iter().map(ResourceExt::name_any).collect();
        assert_eq!(old, ["t-relay", "t-relay-cccccccccc"]);
        let (current, old) = split(vec![ds("t-relay", 1, None)], "t-relay-bbbbbbbbbb");
        assert!(current.is_none());
        assert_eq!(old.len(), 1);
    }
}
