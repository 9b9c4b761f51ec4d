//! Apply: the third step. Writes one TurnCluster's built objects in one pass, each with
//! server-side apply and only when it changed (`ssa`): ServiceAccount, ConfigMap, the TURN
//! Service, the metrics Service, the workload (deleting the one of the other placement mode, and
//! in DaemonSet mode the DaemonSets of older pod template revisions once the current one is
//! ready: `surge`), the ServiceMonitor; then the status. Each object's outcome goes to one
//! [`Record`].
//!
//! The order is the order of the requests: each object is read just before it is applied (the
//! TURN Service first of all, [`Target::live_service`], as the public endpoints are discovered
//! from it before anything is built).

mod record;
mod ssa;
pub mod surge;

pub use record::{Events, Record, reasons};
pub use ssa::{
    ApplyError, DESIRED_HASH_ANNOTATION, Outcome, annotate, apply, apply_dyn, classify, contains,
    delete_owned, get, up_to_date,
};

use api::{TurnCluster, TurnClusterStatus};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Service, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use crate::build::{self, MANAGER, Names, Owned, Workload};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::status::{Rollout, Trouble};
use record::refusal;

/// The TurnCluster resource, untyped (its status is written without decoding the object).
pub fn turncluster_resource() -> ApiResource {
    ApiResource::erase::<TurnCluster>(&())
}

/// Where one TurnCluster's objects are applied: its namespace, the names of its objects and its
/// uid (objects not owned by it are never touched).
#[derive(Clone)]
pub struct Target<'a> {
    client: &'a Client,
    namespace: &'a str,
    names: Names,
    uid: &'a str,
}

impl std::fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("namespace", &self.namespace)
            .field("names", &self.names)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl<'a> Target<'a> {
    /// The objects of TurnCluster `name` with `uid` in `namespace`.
    pub fn new(client: &'a Client, namespace: &'a str, name: &str, uid: &'a str) -> Self {
        Self {
            client,
            namespace,
            names: Names::of(name),
            uid,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// The live TURN Service, whoever owns it (read first: the endpoints are discovered from it).
    pub async fn live_service(&self) -> Result<Option<Service>, Error> {
        read(&self.api(), &self.names.service, "Service").await
    }

    /// Applies every object of `owned`, in order, into `record`; `live_service` is what
    /// [`Target::live_service`] read. Returns the rollout of the workload as applied (`None` if
    /// it was refused).
    pub async fn owned(
        &self,
        owned: Owned,
        live_service: Option<Service>,
        record: &mut Record<'_>,
    ) -> Result<Option<Rollout>, Error> {
        let names = &self.names;
        let sas: Api<ServiceAccount> = self.api();
        let live = read(&sas, &names.relay, "ServiceAccount").await?;
        self.step(&sas, owned.service_account, live, record).await?;

        let cms: Api<ConfigMap> = self.api();
        let live = read(&cms, &names.relay, "ConfigMap").await?;
        self.step(&cms, owned.config_map, live, record).await?;

        let services: Api<Service> = self.api();
        self.step(&services, owned.service, live_service, record)
            .await?;
        let live = read(&services, &names.metrics, "Service").await?;
        self.step(&services, owned.metrics_service, live, record)
            .await?;

        let rollout = self.workload(owned.workload, record).await?;
        self.service_monitor(owned.service_monitor, record).await?;
        Ok(rollout)
    }

    /// Applies the workload and deletes the one of the other placement mode; in DaemonSet mode
    /// also the DaemonSets of older revisions, once the current one is ready everywhere.
    async fn workload(
        &self,
        workload: Workload,
        record: &mut Record<'_>,
    ) -> Result<Option<Rollout>, Error> {
        let names = &self.names;
        let daemonsets: Api<DaemonSet> = self.api();
        let deployments: Api<Deployment> = self.api();
        let live_dss = self.relay_daemonsets(&daemonsets).await?;
        let live_deploy = read(&deployments, &names.relay, "Deployment").await?;
        // The relays are replaced only when the pod template changes (not for the config
        // checksum on the workload's metadata): compared as the API server returned it.
        let rollout = match workload {
            Workload::DaemonSet(ds) => {
                let (live_ds, old) = surge::split(live_dss, &ds.name_any());
                let before = live_ds
                    .as_ref()
                    .and_then(|l| l.spec.clone())
                    .map(|s| s.template);
                let created = live_ds.is_none();
                let current = self.step(&daemonsets, ds, live_ds, record).await?;
                let after = current
                    .as_ref()
                    .and_then(|c| c.spec.as_ref())
                    .map(|s| &s.template);
                // A template repaired in place (someone edited it) rolls its pods; a new
                // revision next to old ones replaces them by the surge.
                record.writes.template_changed |= changed(before.as_ref(), after);
                if created && current.is_some() && !old.is_empty() {
                    record.writes.surge = true;
                }
                let retire = surge::to_retire(current.as_ref(), &old);
                for ds in retire {
                    self.delete(&daemonsets, ds, record).await?;
                }
                if !retire.is_empty()
                    && let Some(c) = current.as_ref()
                {
                    record.writes.retired_for = Some(c.name_any());
                    info!(current = %c.name_any(), "the relays of the current revision are ready everywhere: deleted the older revisions");
                }
                let serving = if retire.is_empty() { &old[..] } else { &[] };
                self.replace_old(&deployments, live_deploy, record).await?;
                Rollout::of_revisions(current.as_ref(), serving)
            }
            Workload::Deployment(d) => {
                let before = live_deploy
                    .as_ref()
                    .and_then(|l| l.spec.clone())
                    .map(|s| s.template);
                let current = self.step(&deployments, d, live_deploy, record).await?;
                let after = current
                    .as_ref()
                    .and_then(|c| c.spec.as_ref())
                    .map(|s| &s.template);
                record.writes.template_changed |= changed(before.as_ref(), after);
                for ds in live_dss {
                    self.replace_old(&daemonsets, Some(ds), record).await?;
                }
                current.as_ref().map(Rollout::of_deployment)
            }
        };
        Ok(rollout)
    }

    /// The TurnCluster's relay DaemonSets, every revision (listed by its labels, kept only if
    /// owned by it).
    async fn relay_daemonsets(&self, api: &Api<DaemonSet>) -> Result<Vec<DaemonSet>, Error> {
        // The TURN Service is named after the TurnCluster.
        let tc = self.names.service.as_str();
        let params = ListParams::default().labels(&build::relay_workloads_selector(tc));
        let list = api.list(&params).await.map_err(|source| Error::Read {
            what: format!("the DaemonSets of TurnCluster {tc}"),
            source,
        })?;
        Ok(list
            .items
            .into_iter()
            .filter(|ds| build::owned_by(&ds.metadata, self.uid))
            .collect())
    }

    /// Deletes an older revision's DaemonSet, in the background: its pods get their graceful
    /// termination (preStop, drain) from the garbage collector.
    async fn delete(
        &self,
        api: &Api<DaemonSet>,
        ds: &DaemonSet,
        record: &mut Record<'_>,
    ) -> Result<(), Error> {
        let name = ds.name_any();
        if ssa::delete_owned(api, Some(ds), self.uid)
            .await
            .map_err(|source| Error::Delete {
                what: format!("DaemonSet {name}"),
                source,
            })?
        {
            record.deleted("DaemonSet", &name);
            info!(%name, "deleted the DaemonSet of an older relay revision");
        }
        Ok(())
    }

    /// Applies one object, recording the outcome; user-facing refusals become troubles.
    async fn step<K>(
        &self,
        api: &Api<K>,
        desired: K,
        live: Option<K>,
        record: &mut Record<'_>,
    ) -> Result<Option<K>, Error>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
    {
        let kind = K::kind(&()).into_owned();
        let name = desired.name_any();
        let (result, obj) = match ssa::apply(api, desired, live.as_ref(), self.uid).await {
            Ok((outcome, obj)) => (Ok(outcome), obj),
            Err(err) => (Err(err), None),
        };
        match record.applied(&kind, &name, result, refusal)? {
            Some(Outcome::Unchanged) => Ok(live),
            Some(outcome) => {
                info!(%kind, %name, ?outcome, "applied");
                Ok(obj)
            }
            None => Ok(None),
        }
    }

    /// Deletes the workload of the other placement mode, left from before a mode change.
    async fn replace_old<K>(
        &self,
        api: &Api<K>,
        live: Option<K>,
        record: &mut Record<'_>,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug,
    {
        let kind = K::kind(&()).into_owned();
        let name = live.as_ref().map(ResourceExt::name_any).unwrap_or_default();
        if ssa::delete_owned(api, live.as_ref(), self.uid)
            .await
            .map_err(|source| Error::Delete {
                what: format!("{kind} {name}"),
                source,
            })?
        {
            record.deleted(&kind, &name);
            info!(%kind, %name, "deleted the workload of the previous placement mode");
        }
        Ok(())
    }

    async fn service_monitor(
        &self,
        desired: Option<DynamicObject>,
        record: &mut Record<'_>,
    ) -> Result<(), Error> {
        let names = &self.names;
        let resource = build::service_monitor_resource();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &resource);
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
            if ssa::delete_owned(&api, live.as_ref(), self.uid)
                .await
                .map_err(|source| Error::Delete {
                    what: format!("ServiceMonitor {}", names.relay),
                    source,
                })?
            {
                record.deleted("ServiceMonitor", &names.relay);
            }
            return Ok(());
        };
        let result = ssa::apply_dyn(
            &api,
            &mut desired,
            live.as_ref(),
            self.uid,
            "ServiceMonitor",
        )
        .await
        .map(|(outcome, _)| outcome);
        record.applied(
            "ServiceMonitor",
            &names.relay,
            result,
            service_monitor_refusal,
        )?;
        Ok(())
    }
}

/// The refusals of the ServiceMonitor: without the Prometheus Operator's CRD (404), or refused
/// (also when its name is taken), the status says so.
fn service_monitor_refusal(err: ApplyError) -> Result<Trouble, ApplyError> {
    match err {
        ApplyError::Kube {
            source: kube::Error::Api(ref s),
            ..
        } if s.code == 404 => Ok(Trouble {
            reason: api::conditions::REJECTED,
            message: "spec.metrics.serviceMonitor is true but the ServiceMonitor CRD (Prometheus \
                      Operator, monitoring.coreos.com/v1) is not installed"
                .to_owned(),
        }),
        err @ (ApplyError::Rejected { .. } | ApplyError::NameConflict { .. }) => Ok(Trouble {
            reason: api::conditions::REJECTED,
            message: err.to_string(),
        }),
        err => Err(err),
    }
}

/// Whether an existing pod template was changed (a new workload is no change).
fn changed(before: Option<&PodTemplateSpec>, after: Option<&PodTemplateSpec>) -> bool {
    matches!((before, after), (Some(b), Some(a)) if a != b)
}

async fn read<K>(api: &Api<K>, name: &str, kind: &str) -> Result<Option<K>, Error>
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug,
{
    ssa::get(api, name).await.map_err(|source| Error::Read {
        what: format!("{kind} {name}"),
        source,
    })
}

/// Writes the status of TurnCluster `namespace/name`, unless it is `previous` already.
pub async fn write_status(
    client: &Client,
    metrics: &Metrics,
    namespace: &str,
    name: &str,
    previous: Option<&TurnClusterStatus>,
    next: &TurnClusterStatus,
) -> Result<(), Error> {
    if previous == Some(next) {
        return Ok(());
    }
    // Untyped: the answer is the whole object, which need not decode (a malformed spec).
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &turncluster_resource());
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
    metrics.wrote("TurnCluster", "status");
    Ok(())
}
