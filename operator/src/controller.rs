//! The reconcile loop: decode → validate → build → apply → status, for each TurnCluster
//! (with `spec.xdp.enabled`, the status also says which relays run without the fast path, from
//! what they answer on `/readyz`: [`crate::relays`]).
//!
//! TurnClusters are watched as untyped objects and decoded in the reconcile, so one that does
//! not decode is reported in its status (InvalidSpec, with the field) instead of breaking the
//! watch for every other. Owned objects (selected by `app.kubernetes.io/managed-by`) trigger
//! their owner's reconcile; a change to a node that matters (addresses, labels, taints, pod
//! networks, readiness) triggers every TurnCluster's. No finalizer: every owned object is
//! namespaced with an owner reference, so Kubernetes' garbage collector removes them.
//!
//! Requeues: after success, a slow resync (`Settings::resync`); after a user problem (invalid
//! spec) none, the next change of the object triggers; after a refused object, every 5 minutes;
//! after an error, exponential backoff from 5 s to 5 minutes per object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::TurnClusterStatus;
use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::apply::{self, Events, Record, Target, turncluster_resource as ar};
use crate::build::{self, Inputs, owned_by};
use crate::cluster::{self, Gatherer};
use crate::endpoints;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::relays;
use crate::status::{self, Observed};
use crate::validate;

/// How often a TurnCluster with a refused object is retried.
pub const REFUSED_REQUEUE: Duration = Duration::from_secs(300);

/// What the reconcile is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The relay image for TurnClusters that name none.
    pub default_image: String,
    /// How often a healthy TurnCluster is reconciled without a change.
    pub resync: Duration,
}

/// Shared state of the reconciles.
pub struct Context {
    client: Client,
    events: Events,
    metrics: Arc<Metrics>,
    cluster: Gatherer,
    settings: Settings,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context; `nodes` is a store of the cluster's nodes (possibly empty).
    pub fn new(
        client: Client,
        reporter: Reporter,
        nodes: Store<Node>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Self {
            events: Events::new(client.clone(), reporter),
            cluster: Gatherer::new(client.clone(), nodes),
            client,
            metrics,
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The timestamp format of condition transitions (RFC 3339, seconds).
pub fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Retry delay after the n-th consecutive failure: 5 s, 10 s, 20 s, ... up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(5u64.saturating_mul(1 << exp).min(300))
}

fn key(obj: &DynamicObject) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Reconciles one TurnCluster (the controller's reconciler).
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let timer = ctx.metrics.duration.start_timer();
    let result = reconcile_one(&obj, &ctx).await;
    timer.observe_duration();
    match &result {
        Ok(_) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.remove(&key(&obj));
            }
        }
        Err(err) => {
            ctx.metrics
                .failures
                .with_label_values(&[err.metric_label()])
                .inc();
            warn!(tc = %obj.name_any(), ns = ?obj.namespace(), error = %err, "reconcile failed");
        }
    }
    result
}

/// The controller's error policy: exponential backoff per TurnCluster.
pub fn error_policy(obj: Arc<DynamicObject>, _err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.failures.lock().map_or(1, |mut f| {
        let n = f.entry(key(&obj)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    });
    Action::requeue(backoff(n))
}

/// validate → (facts, endpoints) → build → apply → status, for one TurnCluster.
async fn reconcile_one(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let namespace = obj.namespace().ok_or(Error::Metadata("namespace"))?;
    let name = obj.name_any();
    if obj.metadata.deletion_timestamp.is_some() {
        // The garbage collector deletes the owned objects.
        return Ok(Action::await_change());
    }
    let reference = obj.object_ref(&ar());
    let previous: Option<TurnClusterStatus> = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let previous = previous.as_ref();
    let generation = obj.metadata.generation;

    // Validate.
    let tc = match validate::decode(obj).and_then(|tc| validate::validate(&tc).map(|()| tc)) {
        Ok(tc) => tc,
        Err(problems) => {
            ctx.metrics.invalid.inc();
            info!(tc = %name, ns = %namespace, problems = %validate::summary(&problems), "invalid spec");
            let next = status::invalid(&problems, generation, previous, &now());
            apply::write_status(
                &ctx.client,
                &ctx.metrics,
                &namespace,
                &name,
                previous,
                &next,
            )
            .await?;
            ctx.events.announce(&reference, previous, &next).await;
            // Nothing will change until the user edits the object: no requeue.
            return Ok(Action::await_change());
        }
    };
    let uid = tc.metadata.uid.clone().ok_or(Error::Metadata("uid"))?;

    // What the cluster and the TURN Service say, then build.
    let facts = ctx.cluster.facts(&tc).await;
    let target = Target::new(&ctx.client, &namespace, &name, &uid);
    let live_service = target.live_service().await?;
    let discovery = endpoints::discover(
        &tc.spec,
        &facts,
        live_service
            .as_ref()
            .filter(|s| owned_by(&s.metadata, &uid)),
    );
    let owned = build::build(&Inputs {
        tc: &tc,
        facts: &facts,
        endpoints: &discovery.addresses,
        default_image: &ctx.settings.default_image,
    })?;

    // Apply.
    let mut record = Record::new(&ctx.metrics);
    let rollout = target.owned(owned, live_service, &mut record).await?;
    let (note, troubles) = record.finish();

    // Status.
    let relays = if tc.spec.xdp.enabled {
        relays::fast_paths(&ctx.client, &namespace, &name).await
    } else {
        Vec::new()
    };
    let observed = Observed {
        generation,
        rollout,
        discovery,
        troubles,
        relays,
    };
    let next = status::compute(&tc.spec, &observed, previous, &now());
    apply::write_status(
        &ctx.client,
        &ctx.metrics,
        &namespace,
        &name,
        previous,
        &next,
    )
    .await?;
    if let Some((reason, note)) = note {
        // The generation tells one change from the next (and an identical note is counted as
        // a repeat of the last event, e.g. drift repaired again).
        let note = match generation {
            Some(g) => format!("generation {g}: {note}"),
            None => note,
        };
        ctx.events.publish(&reference, false, reason, note).await;
    }
    ctx.events.announce(&reference, previous, &next).await;
    Ok(Action::requeue(if observed.troubles.is_empty() {
        ctx.settings.resync
    } else {
        REFUSED_REQUEUE
    }))
}

/// Where the operator watches.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this namespace; `None` for all.
    pub namespace: Option<String>,
}

fn api_in<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` completes (then lets running reconciles finish).
pub async fn run(
    client: Client,
    scope: Scope,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (nodes, node_stream) = cluster::node_changes(client.clone());
    // Drive the node watch on its own, so the store fills before the first reconcile.
    let (tx, rx) = mpsc::unbounded::<()>();
    let node_task = tokio::spawn(node_stream.for_each(move |()| {
        let _ = tx.unbounded_send(());
        std::future::ready(())
    }));
    if tokio::time::timeout(Duration::from_secs(30), nodes.wait_until_ready())
        .await
        .is_err()
    {
        warn!(
            "the node list is not in yet after 30 s; NodeExternalIP endpoints and pod networks follow when it is"
        );
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        reporter,
        nodes,
        metrics,
        settings,
    ));
    let tcs: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar()),
        None => Api::all_with(client.clone(), &ar()),
    };
    let owned = watcher::Config::default().labels(&build::managed_selector());
    info!(namespace = ?scope.namespace, "reconciling TurnClusters");
    Controller::new_with(tcs, watcher::Config::default(), ar())
        .owns(api_in::<ConfigMap>(&client, &scope), owned.clone())
        .owns(api_in::<Service>(&client, &scope), owned.clone())
        .owns(api_in::<ServiceAccount>(&client, &scope), owned.clone())
        .owns(api_in::<DaemonSet>(&client, &scope), owned.clone())
        .owns(api_in::<Deployment>(&client, &scope), owned)
        .reconcile_all_on(rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok((obj, action)) => {
                    debug!(tc = %obj.name, ns = ?obj.namespace, ?action, "reconciled")
                }
                Err(err) => debug!(%err, "reconcile did not run or failed"),
            }
            std::future::ready(())
        })
        .await;
    node_task.abort();
    info!("controller stopped");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let d: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(d, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
    }
}
