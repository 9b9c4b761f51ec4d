//! Build: the pure second step. From a validated TurnCluster, the cluster facts and the public
//! endpoints, renders every object the operator owns for it:
//!
//! | object | name | what |
//! | --- | --- | --- |
//! | ConfigMap | `<tc>-relay` | `relay.toml`: [`api::RelayConfig`], secrets referenced as mounted files |
//! | ServiceAccount | `<tc>-relay` | the relays' identity; no token mounted, no RBAC (the relay never calls the API) |
//! | DaemonSet or Deployment | `<tc>-relay` | the relays |
//! | Service | `<tc>` | TURN: UDP and TCP (and TLS) on one address; ClusterIP, or LoadBalancer |
//! | Service | `<tc>-metrics` | the metrics port, for Prometheus |
//! | ServiceMonitor | `<tc>-relay` | with `metrics.serviceMonitor` |
//!
//! Every object carries an owner reference to the TurnCluster, so Kubernetes' garbage collector
//! deletes them with it. Secrets are mounted whole, one volume per Secret, so another key of an
//! already-mounted Secret (a rotation) changes the ConfigMap only: the relay reloads its config
//! and secret files itself, and pods are replaced only for changes that need new pods (image,
//! ports, placement, mounts, resources). The config's checksum is an annotation on the
//! ConfigMap and the workload, for people and tools; it is deliberately not in the pod
//! template. The one part of relay.toml the relay reads only at start, the XDP attachment, is
//! also a pod template annotation, so changing it does replace the relays.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use api::{
    ListenerProtocol, PlacementMode, PublicAddressPolicy, RelayConfig, SecretKeyRef, TurnCluster,
    TurnClusterSpec,
};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Toleration, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::cluster::{ClusterFacts, cluster_networks, external_ip_mappings};
use crate::endpoints::urls;

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
/// The annotation with the SHA-256 of the rendered `relay.toml`.
pub const CONFIG_HASH_ANNOTATION: &str = "xdpturn.io/config-sha256";
/// The pod template annotation with the XDP settings (see [`restart_settings`]).
pub const XDP_ANNOTATION: &str = "xdpturn.io/xdp";
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
    /// The workload, its ConfigMap and ServiceAccount (and the ServiceMonitor).
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
}

/// The path of a Secret key inside the relay container.
pub fn secret_path(r: &SecretKeyRef) -> PathBuf {
    PathBuf::from(SECRETS_DIR).join(&r.name).join(&r.key)
}

/// The relay configuration for a TurnCluster.
pub fn relay_config(
    spec: &TurnClusterSpec,
    facts: &ClusterFacts,
    endpoints: &[String],
) -> RelayConfig {
    let both = |port: i32| {
        let port = u16::try_from(port).unwrap_or_default();
        [
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]
    };
    let ports = |tls: bool| -> BTreeSet<i32> {
        spec.listeners
            .iter()
            .filter(|l| (l.protocol == ListenerProtocol::Tls) == tls)
            .map(api::Listener::port)
            .collect()
    };
    let tls_ports = ports(true);
    let auth = &spec.auth;
    let mut deny_peers = spec.peers.deny.clone();
    for net in cluster_networks(spec, facts) {
        if !deny_peers.contains(&net) {
            deny_peers.push(net);
        }
    }
    let external_ips = if spec.placement.mode == PlacementMode::DaemonSet
        && spec.public_address.policy == PublicAddressPolicy::NodeExternalIP
    {
        external_ip_mappings(spec, facts)
    } else {
        Vec::new()
    };
    let api_uris = if auth.credentials_api_token.is_some() {
        endpoints.iter().flat_map(|e| urls(spec, e)).collect()
    } else {
        Vec::new()
    };
    RelayConfig {
        listen: ports(false).into_iter().flat_map(both).collect(),
        tls_listen: tls_ports.iter().copied().flat_map(both).collect(),
        cert: (!tls_ports.is_empty()).then(|| PathBuf::from(TLS_DIR).join("tls.crt")),
        key: (!tls_ports.is_empty()).then(|| PathBuf::from(TLS_DIR).join("tls.key")),
        metrics_listen: SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            u16::try_from(spec.metrics.port).unwrap_or(api::DEFAULT_METRICS_PORT),
        ),
        realm: spec.realm.clone(),
        users_file: auth.static_users.as_ref().map(secret_path),
        auth_secret_files: auth.shared_secrets.iter().map(secret_path).collect(),
        api_token_file: auth.credentials_api_token.as_ref().map(secret_path),
        api_uris,
        min_port: u16::try_from(spec.relay_ports.min).unwrap_or(49152),
        max_port: u16::try_from(spec.relay_ports.max).unwrap_or(65535),
        external_ips,
        allow_peers: spec.peers.allow.clone(),
        deny_peers,
        user_quota: u32::try_from(spec.quotas.user_quota).unwrap_or(0),
        total_quota: u32::try_from(spec.quotas.total_quota).unwrap_or(0),
        max_bps: u64::try_from(spec.quotas.max_bps).unwrap_or(0),
        drain_timeout_secs: u64::try_from(spec.drain.timeout_seconds).unwrap_or(0),
        ..xdp_config(spec)
    }
}

/// The XDP part of the relay configuration: no interfaces (userspace only) unless enabled.
fn xdp_config(spec: &TurnClusterSpec) -> RelayConfig {
    let defaults = RelayConfig::default();
    if !spec.xdp.enabled {
        return defaults;
    }
    RelayConfig {
        xdp_interfaces: spec.xdp.interfaces.clone(),
        xdp_mode: spec.xdp.mode,
        xdp_max_channels: spec
            .xdp
            .max_channels
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults.xdp_max_channels),
        ..defaults
    }
}

/// The settings the relay reads only when it starts and that no other pod field carries: the
/// XDP attachment. They are also an annotation of the pod template, so that changing them
/// replaces the relays; everything else in relay.toml is reloaded in place.
fn restart_settings(config: &RelayConfig) -> Option<String> {
    (!config.xdp_interfaces.is_empty()).then(|| {
        format!(
            "interfaces={} mode={} max-channels={}",
            config.xdp_interfaces.join(","),
            config.xdp_mode,
            config.xdp_max_channels
        )
    })
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

    let mut template = pod_template(tc, &names, inputs.default_image);
    if let (Some(meta), Some(xdp)) = (template.metadata.as_mut(), restart_settings(&config)) {
        meta.annotations = Some(BTreeMap::from([(XDP_ANNOTATION.to_owned(), xdp)]));
    }
    let selector = LabelSelector {
        match_labels: Some(selector_labels(name)),
        ..LabelSelector::default()
    };
    let workload_meta = ObjectMeta {
        annotations: Some(hash_annotation),
        ..meta(&names.relay, "relay")
    };
    let workload = match spec.placement.mode {
        PlacementMode::DaemonSet => Workload::DaemonSet(DaemonSet {
            metadata: workload_meta,
            spec: Some(DaemonSetSpec {
                selector,
                template,
                revision_history_limit: Some(5),
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    // Host ports rule out a surge: the old relay drains and exits before the
                    // new one starts on the node, and at most this many nodes do so at once.
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
    };

    let load_balancer = spec.public_address.policy == PublicAddressPolicy::LoadBalancer;
    let service = Service {
        metadata: ObjectMeta {
            annotations: (!spec.public_address.service_annotations.is_empty())
                .then(|| spec.public_address.service_annotations.clone()),
            ..meta(&names.service, "relay")
        },
        spec: Some(ServiceSpec {
            type_: Some(
                if load_balancer {
                    "LoadBalancer"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            selector: Some(selector_labels(name)),
            ports: Some(
                spec.listeners
                    .iter()
                    .map(|l| ServicePort {
                        name: Some(port_name(l.protocol, l.port())),
                        port: l.port(),
                        target_port: Some(IntOrString::Int(l.port())),
                        protocol: Some(transport(l.protocol).into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            // Clients' own addresses reach the relay (no SNAT), and a node without a relay is
            // not sent any.
            external_traffic_policy: load_balancer.then(|| "Local".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let metrics_service = Service {
        metadata: meta(&names.metrics, "relay-metrics"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(name)),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: spec.metrics.port,
                target_port: Some(IntOrString::Int(spec.metrics.port)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let service_monitor = spec.metrics.service_monitor.then(|| {
        let mut sm = DynamicObject::new(&names.relay, &service_monitor_resource());
        sm.metadata = meta(&names.relay, "relay-metrics");
        sm.data = serde_json::json!({"spec": {
            "selector": {"matchLabels": labels_for_metrics_selector(name)},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        }});
        sm
    });

    Ok(Owned {
        config,
        config_toml,
        config_hash,
        config_map,
        service_account,
        service,
        metrics_service,
        workload,
        service_monitor,
    })
}

/// The Prometheus Operator's ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

fn labels_for_metrics_selector(tc: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(tc);
    l.insert("app.kubernetes.io/component".into(), "relay-metrics".into());
    l
}

fn transport(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Udp => "UDP",
        ListenerProtocol::Tcp | ListenerProtocol::Tls => "TCP",
    }
}

/// A port name: an IANA_SVC_NAME, at most 15 characters.
fn port_name(p: ListenerProtocol, port: i32) -> String {
    let prefix = match p {
        ListenerProtocol::Udp => "udp",
        ListenerProtocol::Tcp => "tcp",
        ListenerProtocol::Tls => "tls",
    };
    format!("{prefix}-{port}")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A stable volume name for a Secret (volume names are DNS labels; Secret names may not be).
fn secret_volume(secret: &str) -> String {
    format!("secret-{}", &hex(&Sha256::digest(secret.as_bytes()))[..12])
}

fn pod_template(tc: &TurnCluster, names: &Names, default_image: &str) -> PodTemplateSpec {
    let spec = &tc.spec;
    let name = tc.name_any();
    let daemonset = spec.placement.mode == PlacementMode::DaemonSet;
    let xdp = spec.xdp.enabled;
    let low_port = spec
        .listeners
        .iter()
        .map(api::Listener::port)
        .chain([spec.metrics.port])
        .any(|p| p < 1024);
    let mut add: Vec<String> = Vec::new();
    if xdp {
        add.extend(XDP_CAPABILITIES.iter().map(|c| (*c).to_owned()));
    }
    if low_port {
        add.push("NET_BIND_SERVICE".to_owned());
    }
    // Kubernetes has no ambient capabilities: only a root process gets added ones.
    let root = !add.is_empty();

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.relay.clone(),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    let auth = &spec.auth;
    let secrets: BTreeSet<&str> = auth
        .shared_secrets
        .iter()
        .chain(&auth.static_users)
        .chain(&auth.credentials_api_token)
        .map(|r| r.name.as_str())
        .collect();
    for secret in secrets {
        let volume = secret_volume(secret);
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{SECRETS_DIR}/{secret}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if let Some(tls) = spec
        .listeners
        .iter()
        .find_map(|l| l.certificate_secret.as_ref())
    {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.clone()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let mut ports: Vec<ContainerPort> = spec
        .listeners
        .iter()
        .map(|l| ContainerPort {
            name: Some(port_name(l.protocol, l.port())),
            container_port: l.port(),
            protocol: Some(transport(l.protocol).into()),
            ..ContainerPort::default()
        })
        .collect();
    ports.push(ContainerPort {
        name: Some("metrics".into()),
        container_port: spec.metrics.port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    });

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let delay = spec.drain.pre_stop_delay_seconds;
    let lifecycle = (delay > 0).then(|| Lifecycle {
        // Delays SIGTERM so that kube-proxy and load balancers stop sending new clients first;
        // the relay then drains on SIGTERM (readyz 503, no new allocations, existing ones
        // served until they end or drain.timeoutSeconds).
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sleep".into(), delay.to_string()]),
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    });
    let resources = spec.resources.as_ref().map(|r| ResourceRequirements {
        requests: (!r.requests.is_empty()).then(|| r.requests.clone()),
        limits: (!r.limits.is_empty()).then(|| r.limits.clone()),
        ..ResourceRequirements::default()
    });

    let container = Container {
        name: CONTAINER.into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(ports),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        lifecycle,
        resources,
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(!root),
            run_as_user: Some(if root { 0 } else { RELAY_UID }),
            run_as_group: Some(if root { 0 } else { RELAY_UID }),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: (!add.is_empty()).then_some(add),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    let tolerations: Vec<Toleration> = spec
        .placement
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: t.operator.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            toleration_seconds: t.toleration_seconds,
        })
        .collect();
    let affinity = (!daemonset).then(|| Affinity {
        // Replicas on different nodes, where there are enough.
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(&name)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    });

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&name, "relay")),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names.relay.clone()),
            automount_service_account_token: Some(false),
            host_network: daemonset.then_some(true),
            dns_policy: Some(
                if daemonset {
                    "ClusterFirstWithHostNet"
                } else {
                    "ClusterFirst"
                }
                .into(),
            ),
            termination_grace_period_seconds: Some(
                spec.drain.pre_stop_delay_seconds
                    + spec.drain.timeout_seconds
                    + GRACE_MARGIN_SECONDS,
            ),
            security_context: Some(PodSecurityContext {
                fs_group: Some(RELAY_UID),
                // Older runtimes' default seccomp profiles refuse bpf() to anything without
                // CAP_SYS_ADMIN, so XDP relays run unconfined; the others get the default.
                seccomp_profile: Some(SeccompProfile {
                    type_: if xdp { "Unconfined" } else { "RuntimeDefault" }.into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            node_selector: (!spec.placement.node_selector.is_empty())
                .then(|| spec.placement.node_selector.clone()),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            affinity,
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
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

    use super::*;

    #[test]
    fn names_and_labels() {
        let n = Names::of("turn");
        assert_eq!(
            (n.relay.as_str(), n.service.as_str(), n.metrics.as_str()),
            ("turn-relay", "turn", "turn-metrics")
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
