//! The relay pod template: the container (image, ports, probes, preStop, resources, the user
//! database's connection string from its Secret), its security context (the least privilege
//! that serves the spec), its volumes (the ConfigMap, each Secret whole, the TLS certificate)
//! and where it runs.

use std::collections::{BTreeMap, BTreeSet};

use api::{PlacementMode, TurnCluster, TurnClusterSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Toleration, Volume,
    VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::services::{port_name, transport};
use super::{
    CONFIG_DIR, CONFIG_KEY, CONTAINER, GRACE_MARGIN_SECONDS, LISTENERS_ANNOTATION, Names,
    RELAY_UID, SECRETS_DIR, TLS_DIR, XDP_CAPABILITIES, hex, labels, selector_labels,
};

/// A stable volume name for a Secret (volume names are DNS labels; Secret names may not be).
pub(super) fn secret_volume(secret: &str) -> String {
    format!("secret-{}", &hex(&Sha256::digest(secret.as_bytes()))[..12])
}

pub(super) fn pod_template(
    tc: &TurnCluster,
    names: &Names,
    default_image: &str,
) -> PodTemplateSpec {
    let spec = &tc.spec;
    let name = tc.name_any();
    let daemonset = spec.placement.mode == PlacementMode::DaemonSet;
    let xdp = spec.xdp.enabled;
    let (volumes, mounts) = volumes(spec, names);
    let container = Container {
        volume_mounts: Some(mounts),
        env: Some(database_env(spec)).filter(|env| !env.is_empty()),
        ..container(spec, default_image, daemonset)
    };
    // What the container's ports say otherwise: the relay binds its listeners only at start.
    let listeners = daemonset.then(|| {
        let ports: Vec<String> = spec
            .listeners
            .iter()
            .map(|l| port_name(l.protocol, l.port()))
            .collect();
        BTreeMap::from([(LISTENERS_ANNOTATION.to_owned(), ports.join(","))])
    });
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&name, "relay")),
            annotations: listeners,
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
            tolerations: tolerations(spec),
            affinity: (!daemonset).then(|| anti_affinity(&name)),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

/// The relay container's security context: no privileges but the capabilities the spec needs
/// (the XDP ones, and NET_BIND_SERVICE for a port below 1024).
fn security_context(spec: &TurnClusterSpec) -> SecurityContext {
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
    SecurityContext {
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
    }
}

/// The pod's volumes and the container's mounts of them: the ConfigMap (a directory, so updates
/// reach the pod), a writable `/tmp`, each referenced Secret whole, the TLS certificate.
fn volumes(spec: &TurnClusterSpec, names: &Names) -> (Vec<Volume>, Vec<VolumeMount>) {
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
    (volumes, mounts)
}

/// The user database's connection string, as the relay's variable for its kind, taken from the
/// Secret by the kubelet: never in the pod template, the ConfigMap or anything the operator
/// reads. The relay reads it when it starts (a user database is not switched on reload), so it is
/// a variable rather than a mounted file; the reference is in the template, so pointing the spec
/// at another Secret or key replaces the relays. The same for the traffic records' Redis
/// (`spec.metrics.trafficRecords`, `XDPTURN_REDIS_STATSDB`).
fn database_env(spec: &TurnClusterSpec) -> Vec<EnvVar> {
    let from_secret = |name: &str, r: &api::SecretKeyRef| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env = Vec::new();
    if let Some(db) = &spec.auth.user_database {
        env.push(from_secret(db.type_.env_var(), &db.secret_key_ref));
    }
    if let Some(r) = &spec.metrics.traffic_records {
        env.push(from_secret(api::TRAFFIC_RECORDS_ENV, r));
    }
    env
}

/// The container ports: each listener, and metrics.
fn ports(spec: &TurnClusterSpec) -> Vec<ContainerPort> {
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
    ports
}

/// A probe of the relay's `path` on its metrics port: by number in DaemonSet mode (the container
/// declares no ports there), by name otherwise.
fn probe(spec: &TurnClusterSpec, daemonset: bool, path: &str, period: i32, failures: i32) -> Probe {
    let port = if daemonset {
        IntOrString::Int(spec.metrics.port)
    } else {
        IntOrString::String("metrics".into())
    };
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port,
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Tells the relay of a DaemonSet-mode pod its template revision (`XDPTURN_REVISION`) and
/// probes its readiness for that revision (`/readyz?revision=<rev>`). During a surge two relay
/// pods of a node share its host ports, the probe port among them: until the new relay has
/// taken the ports over, the kubelet's probe of the new pod reaches the old relay, which must
/// not answer it as ready (the operator would then retire the old relays before the new ones
/// serve); once it has, the old pod's probe reaches the new relay, which says it is not that
/// pod. Added after the revision is computed, as the revision label is.
pub fn tell_revision(template: &mut PodTemplateSpec, rev: &str) {
    let Some(container) = template
        .spec
        .as_mut()
        .and_then(|pod| pod.containers.first_mut())
    else {
        return;
    };
    container.env.get_or_insert_default().push(EnvVar {
        name: "XDPTURN_REVISION".into(),
        value: Some(rev.into()),
        ..EnvVar::default()
    });
    if let Some(get) = container
        .readiness_probe
        .as_mut()
        .and_then(|p| p.http_get.as_mut())
    {
        get.path = Some(format!("/readyz?revision={rev}"));
    }
}

/// What the relay's preStop hook runs: the relay binary itself, as the container's first process
/// (the image's entrypoint, which the pod gives only arguments) — wherever the image keeps it, and
/// with no shell or `sleep` needed in the image.
pub const PRE_STOP_EXE: &str = "/proc/1/exe";

/// The preStop hook: delays SIGTERM by `delay` seconds so that kube-proxy and load balancers
/// stop sending new clients first; the relay then drains on SIGTERM (readyz 503, no new
/// allocations, existing ones served until they end or drain.timeoutSeconds).
///
/// Always present, also with a delay of 0 (the hook returns at once): a server-side apply that
/// stops sending `lifecycle.preStop` leaves an empty `preStop: {}` behind on Kubernetes 1.20,
/// which the API server then refuses ("must specify a handler type").
fn pre_stop(delay: i64) -> LifecycleHandler {
    LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(vec![
                PRE_STOP_EXE.into(),
                "pre-stop".into(),
                "--delay".into(),
                delay.to_string(),
            ]),
        }),
        ..LifecycleHandler::default()
    }
}

/// The relay container, without its volume mounts.
///
/// In DaemonSet mode (host networking) it declares no ports: there a container port is a host
/// port, and the scheduler would refuse to place a new revision's relay on a node whose old
/// relay still holds it (the NodePorts predicate), while the relays themselves hand the ports
/// over (the new one takes them, the old one drains). Nothing refers to a port by name there:
/// the probes and the Services' target ports are numbers.
fn container(spec: &TurnClusterSpec, default_image: &str, daemonset: bool) -> Container {
    let lifecycle = Some(Lifecycle {
        pre_stop: Some(pre_stop(spec.drain.pre_stop_delay_seconds)),
        ..Lifecycle::default()
    });
    let resources = spec.resources.as_ref().map(|r| ResourceRequirements {
        requests: (!r.requests.is_empty()).then(|| r.requests.clone()),
        limits: (!r.limits.is_empty()).then(|| r.limits.clone()),
        ..ResourceRequirements::default()
    });
    Container {
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
        ports: (!daemonset).then(|| ports(spec)),
        liveness_probe: Some(probe(spec, daemonset, "/healthz", 10, 3)),
        readiness_probe: Some(probe(spec, daemonset, "/readyz", 5, 2)),
        lifecycle,
        resources,
        security_context: Some(security_context(spec)),
        ..Container::default()
    }
}

/// The spec's tolerations, `None` if there are none.
fn tolerations(spec: &TurnClusterSpec) -> Option<Vec<Toleration>> {
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
    (!tolerations.is_empty()).then_some(tolerations)
}

/// A Deployment's affinity: replicas of TurnCluster `name` on different nodes, where there are
/// enough.
fn anti_affinity(name: &str) -> Affinity {
    Affinity {
        // Replicas on different nodes, where there are enough.
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(name)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}
