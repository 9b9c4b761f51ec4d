//! The relay workload: a DaemonSet (one relay per node, host networking) or a Deployment
//! (replicas behind the Service), each rolled out so that a new relay is ready before an old one
//! drains and goes: the Deployment with a surge of one, the DaemonSets (one per pod template
//! revision) by the operator, which deletes an old revision's DaemonSet only once the new one
//! is ready on every node (Kubernetes 1.20 has no DaemonSet `maxSurge`).

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use api::{PlacementMode, TurnClusterSpec};

/// The relay workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// One relay per node, host networking.
    DaemonSet(DaemonSet),
    /// Replicas behind the Service.
    Deployment(Deployment),
}

impl Workload {
    /// The pod template.
    pub fn template(&self) -> &PodTemplateSpec {
        match self {
            Workload::DaemonSet(d) => &d.spec.as_ref().expect("built with a spec").template,
            Workload::Deployment(d) => &d.spec.as_ref().expect("built with a spec").template,
        }
    }

    /// The pod spec.
    pub fn pod(&self) -> &PodSpec {
        self.template()
            .spec
            .as_ref()
            .expect("built with a pod spec")
    }

    /// The relay container.
    pub fn container(&self) -> &Container {
        &self.pod().containers[0]
    }

    /// The workload's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Workload::DaemonSet(d) => &d.metadata,
            Workload::Deployment(d) => &d.metadata,
        }
    }
}

/// The workload of the placement mode, with `template`, selecting `selector`.
pub(super) fn workload(
    spec: &TurnClusterSpec,
    workload_meta: ObjectMeta,
    selector: LabelSelector,
    template: PodTemplateSpec,
) -> Workload {
    match spec.placement.mode {
        PlacementMode::DaemonSet => Workload::DaemonSet(DaemonSet {
            metadata: workload_meta,
            spec: Some(DaemonSetSpec {
                selector,
                template,
                revision_history_limit: Some(5),
                // A revision's pod template never changes (a change is a new revision, a new
                // DaemonSet), so this strategy only acts when someone edits the DaemonSet's
                // template and the operator puts it back: RollingUpdate (not OnDelete) so that
                // the pods follow the repair too, at most this many nodes at a time.
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable: Some(IntOrString::Int(
                            spec.placement.max_unavailable.unwrap_or(1),
                        )),
                        ..RollingUpdateDaemonSet::default()
                    }),
                }),
                ..DaemonSetSpec::default()
            }),
            ..DaemonSet::default()
        }),
        PlacementMode::Deployment => Workload::Deployment(Deployment {
            metadata: workload_meta,
            spec: Some(DeploymentSpec {
                replicas: Some(
                    spec.placement
                        .replicas
                        .unwrap_or(api::DEFAULT_DEPLOYMENT_REPLICAS),
                ),
                selector,
                template,
                revision_history_limit: Some(5),
                // A new relay is ready before an old one starts draining: capacity never drops.
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }),
    }
}
