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

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{TurnCluster, TurnClusterStatus};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod, Service, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::apply::{self, ApplyError, Outcome};
use crate::build::{self, Inputs, MANAGER, Names, Workload, owned_by};
use crate::cluster::{ClusterFacts, NodeInfo};
use crate::endpoints;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::relays::{self, Report};
use crate::status::{self, Observed, Rollout, Trouble};
use crate::validate;

/// How often a TurnCluster with a refused object is retried.
pub const REFUSED_REQUEUE: Duration = Duration::from_secs(300);
/// How long the `kubernetes` Service's cluster IPs are cached.
const API_IPS_TTL: Duration = Duration::from_secs(300);

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
    recorder: Recorder,
    metrics: Arc<Metrics>,
    nodes: Store<Node>,
    settings: Settings,
    api_ips: Mutex<Option<(Instant, Vec<IpAddr>)>>,
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
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            nodes,
            settings,
            api_ips: Mutex::new(None),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    async fn facts(&self, tc: &TurnCluster) -> ClusterFacts {
        let nodes = self
            .nodes
            .state()
            .iter()
            .map(|n| NodeInfo::from_node(n))
            .collect();
        let peers = &tc.spec.peers;
        let kubernetes_service_ips =
            if peers.deny_cluster_networks && peers.service_cidrs.is_empty() {
                self.kubernetes_service_ips().await
            } else {
                Vec::new()
            };
        ClusterFacts {
            nodes,
            kubernetes_service_ips,
        }
    }

    async fn kubernetes_service_ips(&self) -> Vec<IpAddr> {
        if let Ok(cache) = self.api_ips.lock()
            && let Some((at, ips)) = cache.as_ref()
            && at.elapsed() < API_IPS_TTL
        {
            return ips.clone();
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let ips = match api.get_opt("kubernetes").await {
            Ok(svc) => svc
                .and_then(|s| s.spec)
                .map(|s| {
                    s.cluster_ips
                        .unwrap_or_default()
                        .into_iter()
                        .chain(s.cluster_ip)
                        .filter_map(|ip| ip.parse().ok())
                        .collect::<HashSet<IpAddr>>()
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            Err(err) => {
                warn!(%err, "cannot read default/kubernetes to deny the API server's Service IP; set spec.peers.serviceCIDRs");
                Vec::new()
            }
        };
        if let Ok(mut cache) = self.api_ips.lock() {
            *cache = Some((Instant::now(), ips.clone()));
        }
        ips
    }

    async fn publish(
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

/// What the writes of one reconcile did, for the event.
#[derive(Debug, Default)]
struct Writes {
    created: Vec<String>,
    updated: Vec<String>,
    deleted: Vec<String>,
    workload_updated: bool,
}

impl Writes {
    fn note(&self) -> Option<String> {
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

fn ar() -> ApiResource {
    ApiResource::erase::<TurnCluster>(&())
}

async fn read<K>(api: &Api<K>, name: &str, kind: &str) -> Result<Option<K>, Error>
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug,
{
    apply::get(api, name).await.map_err(|source| Error::Read {
        what: format!("{kind} {name}"),
        source,
    })
}

/// Applies one object, recording the outcome; user-facing refusals become troubles.
async fn step<K>(
    ctx: &Context,
    api: &Api<K>,
    desired: K,
    live: Option<K>,
    uid: &str,
    writes: &mut Writes,
    troubles: &mut Vec<Trouble>,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let kind = K::kind(&()).into_owned();
    let name = desired.name_any();
    match apply::apply(api, desired, live.as_ref(), uid).await {
        Ok((Outcome::Unchanged, _)) => Ok(live),
        Ok((outcome, obj)) => {
            let created = outcome == Outcome::Created;
            ctx.metrics
                .wrote(&kind, if created { "create" } else { "update" });
            let entry = format!("{kind} {name}");
            if created {
                writes.created.push(entry);
            } else {
                writes.updated.push(entry);
            }
            info!(%kind, %name, ?outcome, "applied");
            Ok(obj)
        }
        Err(err @ ApplyError::NameConflict { .. }) => {
            troubles.push(Trouble {
                reason: api::conditions::NAME_CONFLICT,
                message: err.to_string(),
            });
            Ok(None)
        }
        Err(err @ ApplyError::Rejected { .. }) => {
            troubles.push(Trouble {
                reason: api::conditions::REJECTED,
                message: err.to_string(),
            });
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    previous: Option<&TurnClusterStatus>,
    next: &TurnClusterStatus,
) -> Result<(), Error> {
    if previous == Some(next) {
        return Ok(());
    }
    // Untyped: the answer is the whole object, which need not decode (a malformed spec).
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &ar());
    let patch = serde_json::json!({
        "apiVersion": TurnCluster::api_version(&()),
        "kind": TurnCluster::kind(&()),
        "status": next,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status {
        name: name.to_owned(),
        source,
    })?;
    ctx.metrics.wrote("TurnCluster", "status");
    Ok(())
}

async fn announce(
    ctx: &Context,
    reference: &ObjectReference,
    previous: Option<&TurnClusterStatus>,
    next: &TurnClusterStatus,
) {
    for t in status::transitions(previous, next) {
        ctx.publish(reference, t.warning, &t.reason, t.note).await;
    }
}

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

    let tc = match validate::decode(obj).and_then(|tc| validate::validate(&tc).map(|()| tc)) {
        Ok(tc) => tc,
        Err(problems) => {
            ctx.metrics.invalid.inc();
            info!(tc = %name, ns = %namespace, problems = %validate::summary(&problems), "invalid spec");
            let next = status::invalid(&problems, generation, previous, &now());
            write_status(ctx, &namespace, &name, previous, &next).await?;
            announce(ctx, &reference, previous, &next).await;
            // Nothing will change until the user edits the object: no requeue.
            return Ok(Action::await_change());
        }
    };
    let uid = tc.metadata.uid.clone().ok_or(Error::Metadata("uid"))?;
    let facts = ctx.facts(&tc).await;
    let names = Names::of(&name);
    let client = ctx.client.clone();
    let mut writes = Writes::default();
    let mut troubles = Vec::new();

    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let live_service = read(&services, &names.service, "Service").await?;
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

    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let live = read(&sas, &names.relay, "ServiceAccount").await?;
    step(
        ctx,
        &sas,
        owned.service_account,
        live,
        &uid,
        &mut writes,
        &mut troubles,
    )
    .await?;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let live = read(&cms, &names.relay, "ConfigMap").await?;
    step(
        ctx,
        &cms,
        owned.config_map,
        live,
        &uid,
        &mut writes,
        &mut troubles,
    )
    .await?;

    step(
        ctx,
        &services,
        owned.service,
        live_service,
        &uid,
        &mut writes,
        &mut troubles,
    )
    .await?;
    let live = read(&services, &names.metrics, "Service").await?;
    step(
        ctx,
        &services,
        owned.metrics_service,
        live,
        &uid,
        &mut writes,
        &mut troubles,
    )
    .await?;

    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let live_ds = read(&daemonsets, &names.relay, "DaemonSet").await?;
    let live_deploy = read(&deployments, &names.relay, "Deployment").await?;
    let updated_before = writes.updated.len();
    let rollout = match owned.workload {
        Workload::DaemonSet(ds) => {
            let current = step(
                ctx,
                &daemonsets,
                ds,
                live_ds,
                &uid,
                &mut writes,
                &mut troubles,
            )
            .await?;
            replace_old(ctx, &deployments, live_deploy, &uid, &mut writes).await?;
            current.as_ref().map(Rollout::of_daemonset)
        }
        Workload::Deployment(d) => {
            let current = step(
                ctx,
                &deployments,
                d,
                live_deploy,
                &uid,
                &mut writes,
                &mut troubles,
            )
            .await?;
            replace_old(ctx, &daemonsets, live_ds, &uid, &mut writes).await?;
            current.as_ref().map(Rollout::of_deployment)
        }
    };
    writes.workload_updated = writes.updated[updated_before..]
        .iter()
        .any(|w| w.starts_with("DaemonSet") || w.starts_with("Deployment"));

    service_monitor(
        ctx,
        &namespace,
        &names,
        owned.service_monitor,
        &uid,
        &mut writes,
        &mut troubles,
    )
    .await?;

    let relays = if tc.spec.xdp.enabled {
        fast_paths(ctx, &namespace, &name).await
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
    write_status(ctx, &namespace, &name, previous, &next).await?;
    if let Some(note) = writes.note() {
        ctx.publish(&reference, false, "Applied", note).await;
    }
    announce(ctx, &reference, previous, &next).await;
    Ok(Action::requeue(if observed.troubles.is_empty() {
        ctx.settings.resync
    } else {
        REFUSED_REQUEUE
    }))
}

/// What the TurnCluster's ready relays say about their fast path (their `/readyz`). Relays that
/// cannot be listed or asked are left out, with a warning: the status then says nothing about
/// them rather than something wrong.
async fn fast_paths(ctx: &Context, namespace: &str, name: &str) -> Vec<Report> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = build::selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(err) => {
            warn!(tc = %name, ns = %namespace, %err, "cannot list the relay pods to ask whether their XDP fast path is attached");
            return Vec::new();
        }
    };
    let reports = relays::ask(relays::targets(&list)).await;
    let silent: Vec<&str> = reports
        .iter()
        .filter(|r| r.fast_path.is_none())
        .map(|r| r.pod.as_str())
        .collect();
    if !silent.is_empty() {
        warn!(tc = %name, ns = %namespace, pods = ?silent, "relays did not answer {} on their metrics port (a NetworkPolicy?): whether their XDP fast path is attached is unknown", relays::READYZ);
    }
    reports
}

/// Deletes the workload of the other placement mode, left from before a mode change.
async fn replace_old<K>(
    ctx: &Context,
    api: &Api<K>,
    live: Option<K>,
    uid: &str,
    writes: &mut Writes,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug,
{
    let kind = K::kind(&()).into_owned();
    let name = live.as_ref().map(ResourceExt::name_any).unwrap_or_default();
    if apply::delete_owned(api, live.as_ref(), uid)
        .await
        .map_err(|source| Error::Delete {
            what: format!("{kind} {name}"),
            source,
        })?
    {
        ctx.metrics.wrote(&kind, "delete");
        writes.deleted.push(format!("{kind} {name}"));
        info!(%kind, %name, "deleted the workload of the previous placement mode");
    }
    Ok(())
}

async fn service_monitor(
    ctx: &Context,
    namespace: &str,
    names: &Names,
    desired: Option<DynamicObject>,
    uid: &str,
    writes: &mut Writes,
    troubles: &mut Vec<Trouble>,
) -> Result<(), Error> {
    let resource = build::service_monitor_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    // Without the Prometheus Operator's CRD (404) or permission (403) there is nothing to read.
    let live = match api.get_opt(&names.relay).await {
        Ok(live) => live,
        Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404) => None,
        Err(source) => {
            return Err(Error::Read {
                what: format!("ServiceMonitor {}", names.relay),
                source,
            });
        }
    };
    let Some(mut desired) = desired else {
        if apply::delete_owned(&api, live.as_ref(), uid)
            .await
            .map_err(|source| Error::Delete {
                what: format!("ServiceMonitor {}", names.relay),
                source,
            })?
        {
            ctx.metrics.wrote("ServiceMonitor", "delete");
            writes
                .deleted
                .push(format!("ServiceMonitor {}", names.relay));
        }
        return Ok(());
    };
    match apply::apply_dyn(&api, &mut desired, live.as_ref(), uid, "ServiceMonitor").await {
        Ok((Outcome::Unchanged, _)) => {}
        Ok((outcome, _)) => {
            let created = outcome == Outcome::Created;
            ctx.metrics
                .wrote("ServiceMonitor", if created { "create" } else { "update" });
            let entry = format!("ServiceMonitor {}", names.relay);
            if created {
                writes.created.push(entry);
            } else {
                writes.updated.push(entry);
            }
        }
        Err(ApplyError::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => troubles.push(Trouble {
            reason: api::conditions::REJECTED,
            message: "spec.metrics.serviceMonitor is true but the ServiceMonitor CRD (Prometheus \
                      Operator, monitoring.coreos.com/v1) is not installed"
                .to_owned(),
        }),
        Err(err @ (ApplyError::Rejected { .. } | ApplyError::NameConflict { .. })) => {
            troubles.push(Trouble {
                reason: api::conditions::REJECTED,
                message: err.to_string(),
            });
        }
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// A node change worth a reconcile of every TurnCluster: a node came or went, or what relays
/// care about changed (addresses, labels, taints, pod networks, readiness). Heartbeats and
/// image lists are not.
fn node_changes(client: Client) -> (Store<Node>, impl Stream<Item = ()> + Send + 'static) {
    let (store, writer) = reflector::store();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut initialising = false;
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(|n: &mut Node| {
            n.metadata.managed_fields = None;
            if let Some(s) = n.status.as_mut() {
                s.images = None;
                s.volumes_attached = None;
                s.volumes_in_use = None;
            }
        })
        .reflect(writer)
        .filter_map(move |event| {
            let trigger = match event {
                Ok(watcher::Event::Init) => {
                    initialising = true;
                    false
                }
                Ok(watcher::Event::InitApply(n)) => {
                    seen.insert(n.name_any(), digest(&n));
                    false
                }
                Ok(watcher::Event::InitDone) => {
                    initialising = false;
                    true
                }
                Ok(watcher::Event::Apply(n)) => {
                    let d = digest(&n);
                    seen.insert(n.name_any(), d) != Some(d) && !initialising
                }
                Ok(watcher::Event::Delete(n)) => seen.remove(&n.name_any()).is_some(),
                Err(err) => {
                    warn!(%err, "watching nodes failed; retrying");
                    false
                }
            };
            std::future::ready(trigger.then_some(()))
        });
    (store, stream)
}

fn digest(node: &Node) -> u64 {
    let mut h = DefaultHasher::new();
    NodeInfo::from_node(node).hash(&mut h);
    h.finish()
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
    let (nodes, node_stream) = node_changes(client.clone());
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

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
    }
}
