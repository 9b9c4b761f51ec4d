//! Build: the pure second step. From a validated TurnCluster, the cluster facts and the public
//! endpoints, renders every object the operator owns for it:
//!
//! | object | name | what |
//! | --- | --- | --- |
//! | ConfigMap | `<tc>-relay` | `relay.toml`: [`api::RelayConfig`], secrets referenced as mounted files |
//! | ServiceAccount | `<tc>-relay` | the relays' identity; no token mounted, no RBAC (the relay never calls the API) |
//! | DaemonSet | `<tc>-relay-<rev>` | the relays, one DaemonSet per pod template revision ([`revision`]) |
//! | or Deployment | `<tc>-relay` | the relays |
//! | Service | `<tc>` | TURN: UDP and TCP (and TLS) on one address; ClusterIP, or LoadBalancer |
//! | Service | `<tc>-metrics` | the metrics port, for Prometheus |
//! | ServiceMonitor | `<tc>-relay` | with `metrics.serviceMonitor` |
//!
//! Every object carries an owner reference to the TurnCluster, so Kubernetes' garbage collector
//! deletes them with it. Secrets are mounted whole, one volume per Secret, so another key of an
//! already-mounted Secret (a rotation) changes the ConfigMap only: the relay reloads its config
//! and secret files itself, and pods are replaced only for changes that need new pods (image,
//! ports, placement, mounts, resources). The one Secret value that is not a file is the user
//! database's connection string (`spec.auth.userDatabase`): the relay opens its database only at
//! start, so it gets the string as an environment variable, which the kubelet takes from the
//! Secret; the template holds only the reference (changing it replaces the relays), and the
//! operator never reads the value. The config's checksum is an annotation on the
//! ConfigMap and the workload, for people and tools; it is deliberately not in the pod
//! template. The one part of relay.toml the relay reads only at start, the XDP attachment, is
//! also a pod template annotation, so changing it does replace the relays; so are the
//! listeners' ports in DaemonSet mode, where the container declares none.
//!
//! In DaemonSet mode the relays run with host networking, so an old and a new relay on a node
//! share its ports: the DaemonSet is named after its pod template's [`revision`], and a change
//! that needs new pods is a new DaemonSet next to the old one (a surge on every node; apply
//! deletes the old one once the new one is ready everywhere). Its pods carry
//! [`REVISION_LABEL`] besides the common [`selector_labels`], which the Services select on.

mod config;
mod pod;
mod services;
mod workload;

pub use config::{relay_config, secret_path};
pub use pod::PRE_STOP_EXE;
pub use services::service_monitor_resource;
pub use workload::Workload;

use std::collections::BTreeMap;

use api::{PlacementMode, RelayConfig, TurnCluster};
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::cluster::ClusterFacts;
use config::restart_settings;

/// The field manager of every write, and the value of `app.kubernetes.io/managed-by`.
pub const MANAGER: &str = "xdpturn-operator";
/// The key of the rendered config in the ConfigMap.
pub const CONFIG_KEY: &str = "relay.toml";
/// Where the ConfigMap is mounted (a directory, never `subPath`, so updates reach the pod).
pub const CONFIG_DIR: &str = "/etc/xdpturn/config";
/// Where each referenced Secret is mounted, under its name.
pub const SECRETS_DIR: &str = "/etc/xdpturn/secrets";
/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/xdpturn/tls";
/// The label telling a DaemonSet-mode relay's revision (its pod template's [`revision`]), on
/// the pods, in the DaemonSet's selector and on the DaemonSet.
pub const REVISION_LABEL: &str = "xdpturn.io/relay-revision";
/// The annotation with the SHA-256 of the rendered `relay.toml`.
pub const CONFIG_HASH_ANNOTATION: &str = "xdpturn.io/config-sha256";
/// The pod template annotation with the XDP settings (see `config::restart_settings`).
pub const XDP_ANNOTATION: &str = "xdpturn.io/xdp";
/// The pod template annotation with the listeners' ports, in DaemonSet mode, where the container
/// declares no ports: the relay binds its listeners only when it starts, so a change of them
/// needs new relays.
pub const LISTENERS_ANNOTATION: &str = "xdpturn.io/listeners";
/// The user and group relays run as when they need no capability.
pub const RELAY_UID: i64 = 65532;
/// The capabilities a relay needs to load and attach the XDP fast path, and no more (each one
/// found necessary on Linux 6.18 by relay/tests/xdp_caps.rs, which runs the relay with exactly
/// the pod's privileges and with each one left out):
/// - `BPF`: create the program's maps and load it (`bpf()` without CAP_SYS_ADMIN);
/// - `NET_ADMIN`: load a networking program type, create the device map it redirects through
///   (DEVMAP_HASH), attach it to the interfaces;
/// - `PERFMON`: without it the verifier applies its Spectre v1 hardening, which refuses
///   arithmetic between packet pointers and variable offsets ("pointer arithmetic with it
///   prohibited for !root"); parsing variable-length headers (IPv4 options, the ChannelData
///   length) needs it. With BPF it would also let the relay load tracing programs: still far
///   less than CAP_SYS_ADMIN, which is the alternative.
pub const XDP_CAPABILITIES: [&str; 3] = ["NET_ADMIN", "BPF", "PERFMON"];
/// Seconds the kubelet allows beyond preStop and drain before it kills a relay.
pub const GRACE_MARGIN_SECONDS: i64 = 15;
/// The relay container's name.
pub const CONTAINER: &str = "relay";

/// The names of the objects owned by a TurnCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The Deployment, the ConfigMap and ServiceAccount (and the ServiceMonitor); the DaemonSet's
    /// name before revisions (see [`Names::daemonset`]).
    pub relay: String,
    /// The TURN Service.
    pub service: String,
    /// The metrics Service.
    pub metrics: String,
}

impl Names {
    /// The names for the TurnCluster called `tc`.
    pub fn of(tc: &str) -> Self {
        Self {
            relay: format!("{tc}-relay"),
            service: tc.to_owned(),
            metrics: format!("{tc}-metrics"),
        }
    }

    /// The DaemonSet of pod template revision `rev`: `<tc>-relay-<rev>`.
    pub fn daemonset(&self, rev: &str) -> String {
        format!("{}-{rev}", self.relay)
    }
}

/// The revision of a relay pod template: the first 10 hex digits of the SHA-256 of its JSON
/// (fields in declaration order, maps sorted: the same template always gives the same bytes).
/// The config's checksum is not in the template, so a config-only change keeps the revision.
pub fn revision(template: &PodTemplateSpec) -> Result<String, BuildError> {
    let json = serde_json::to_vec(template).map_err(BuildError::Template)?;
    let mut rev = hex(&Sha256::digest(&json));
    rev.truncate(10);
    Ok(rev)
}

/// The labels listing every relay DaemonSet of TurnCluster `tc`, of any revision (also the one
/// from before revisions), as a label selector string.
pub fn relay_workloads_selector(tc: &str) -> String {
    let mut l = selector_labels(tc);
    l.insert("app.kubernetes.io/component".into(), "relay".into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels that select a TurnCluster's relay pods. Fixed: a workload's selector is immutable.
pub fn selector_labels(tc: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "xdpturn-relay".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), tc.to_owned()),
    ])
}

/// The labels of every owned object. `app.kubernetes.io/managed-by` is what the operator's
/// watches select on.
pub fn labels(tc: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(tc);
    l.insert("app.kubernetes.io/component".into(), component.into());
    l.insert("app.kubernetes.io/part-of".into(), "xdpturn".into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l
}

/// The label selector of the operator's watches of owned objects.
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGER}")
}

/// Everything a TurnCluster owns, as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct Owned {
    /// The relay configuration, before rendering.
    pub config: RelayConfig,
    /// `relay.toml` as rendered into the ConfigMap.
    pub config_toml: String,
    /// SHA-256 of `config_toml`, hex.
    pub config_hash: String,
    /// The ConfigMap holding `relay.toml`.
    pub config_map: ConfigMap,
    /// The relays' ServiceAccount.
    pub service_account: ServiceAccount,
    /// The TURN Service.
    pub service: Service,
    /// The metrics Service.
    pub metrics_service: Service,
    /// The DaemonSet or Deployment.
    pub workload: Workload,
    /// The pod template's [`revision`], in DaemonSet mode.
    pub relay_revision: Option<String>,
    /// The ServiceMonitor, when asked for.
    pub service_monitor: Option<DynamicObject>,
}

/// What build reads besides the TurnCluster.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The TurnCluster, validated.
    pub tc: &'a TurnCluster,
    /// Nodes and the cluster's networks.
    pub facts: &'a ClusterFacts,
    /// The public endpoints found for it (see [`crate::endpoints::discover`]).
    pub endpoints: &'a [String],
    /// The relay image used when the spec names none.
    pub default_image: &'a str,
}

/// Why build could not render: the TurnCluster lacks what the API server always sets.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No name, namespace or uid in the metadata.
    #[error("the TurnCluster has no {0} (was it read from the API server?)")]
    MissingMetadata(&'static str),
    /// The config did not serialize.
    #[error("rendering relay.toml: {0}")]
    Toml(#[from] toml::ser::Error),
    /// The pod template did not serialize (for its revision).
    #[error("hashing the relay pod template: {0}")]
    Template(#[source] serde_json::Error),
}

/// Renders every owned object.
pub fn build(inputs: &Inputs<'_>) -> Result<Owned, BuildError> {
    let tc = inputs.tc;
    let spec = &tc.spec;
    let name = tc
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = tc
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    let owner = tc
        .controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("uid"))?;
    let names = Names::of(name);
    let meta = |name: &str, component: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(tc.name_any().as_str(), component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };

    let config = relay_config(spec, inputs.facts, inputs.endpoints);
    let config_toml = format!(
        "# Rendered by the xdpturn operator from TurnCluster {namespace}/{name}; edits are \
         overwritten.\n{}",
        toml::to_string(&config)?
    );
    let config_hash = hex(&Sha256::digest(config_toml.as_bytes()));
    let hash_annotation =
        BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.clone())]);

    let config_map = ConfigMap {
        metadata: ObjectMeta {
            annotations: Some(hash_annotation.clone()),
            ..meta(&names.relay, "relay")
        },
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            config_toml.clone(),
        )])),
        ..ConfigMap::default()
    };

    let service_account = ServiceAccount {
        metadata: meta(&names.relay, "relay"),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };

    let mut template = pod::pod_template(tc, &names, inputs.default_image);
    if let (Some(meta), Some(xdp)) = (template.metadata.as_mut(), restart_settings(&config)) {
        meta.annotations
            .get_or_insert_default()
            .insert(XDP_ANNOTATION.to_owned(), xdp);
    }
    let mut selector_match = selector_labels(name);
    let mut workload_meta = ObjectMeta {
        annotations: Some(hash_annotation),
        ..meta(&names.relay, "relay")
    };
    // DaemonSet mode: one DaemonSet per revision, selecting only its own pods (the selectors of
    // two revisions must not overlap; the Services select the common labels, both revisions).
    let relay_revision = if spec.placement.mode == PlacementMode::DaemonSet {
        let rev = revision(&template)?;
        let label = (REVISION_LABEL.to_owned(), rev.clone());
        if let Some(meta) = template.metadata.as_mut() {
            meta.labels.get_or_insert_default().extend([label.clone()]);
        }
        pod::tell_revision(&mut template, &rev);
        selector_match.extend([label.clone()]);
        workload_meta.name = Some(names.daemonset(&rev));
        workload_meta.labels.get_or_insert_default().extend([label]);
        Some(rev)
    } else {
        None
    };
    let selector = LabelSelector {
        match_labels: Some(selector_match),
        ..LabelSelector::default()
    };
    let workload = workload::workload(spec, workload_meta, selector, template);
    let service = services::turn_service(spec, name, meta(&names.service, "relay"));
    let metrics_service =
        services::metrics_service(spec, name, meta(&names.metrics, "relay-metrics"));
    let service_monitor = spec
        .metrics
        .service_monitor
        .then(|| services::service_monitor(name, &names, meta(&names.relay, "relay-metrics")));

    Ok(Owned {
        config,
        config_toml,
        config_hash,
        config_map,
        service_account,
        service,
        metrics_service,
        workload,
        relay_revision,
        service_monitor,
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An owner reference to `tc` (for tests and for checking ownership).
pub fn owner_reference(tc: &TurnCluster) -> Option<OwnerReference> {
    tc.controller_owner_ref(&())
}

/// Whether `meta` is owned by the TurnCluster with this uid.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == TurnCluster::kind(&()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::pod::secret_volume;
    use super::services::port_name;
    use super::*;
    use api::ListenerProtocol;

    #[test]
    fn names_and_labels() {
        let n = Names::of("turn");
        assert_eq!(
            (n.relay.as_str(), n.service.as_str(), n.metrics.as_str()),
            ("turn-relay", "turn", "turn-metrics")
        );
        assert_eq!(n.daemonset("0123456789"), "turn-relay-0123456789");
        assert_eq!(
            relay_workloads_selector("turn"),
            "app.kubernetes.io/component=relay,app.kubernetes.io/instance=turn,\
             app.kubernetes.io/managed-by=xdpturn-operator,app.kubernetes.io/name=xdpturn-relay"
        );
        let l = labels("turn", "relay");
        assert_eq!(l["app.kubernetes.io/managed-by"], MANAGER);
        assert_eq!(
            managed_selector(),
            "app.kubernetes.io/managed-by=xdpturn-operator"
        );
        assert_eq!(port_name(ListenerProtocol::Tls, 65535).len(), 9);
        assert_eq!(secret_volume("a.b.c").len(), "secret-".len() + 12);
    }
}
