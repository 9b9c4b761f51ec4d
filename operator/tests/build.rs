//! validate and build, from the YAML fixtures in tests/fixtures: what a user writes, what the
//! operator renders. No client, no cluster.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use api::{RelayConfig, TurnCluster, UserDatabaseType};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, PodSpec, Probe, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::DynamicObject;
use operator::build::{self, CONFIG_HASH_ANNOTATION, CONFIG_KEY, Inputs, MANAGER, Owned, Workload};
use operator::cluster::{ClusterFacts, NodeInfo};
use operator::endpoints;
use operator::validate::{self, Problem};

const IMAGE: &str = "xdpturn/xdpturn-relay:test";

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture as the watch delivers it (untyped), decoded as the reconcile does.
fn load(name: &str) -> Result<TurnCluster, Vec<Problem>> {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap();
    let obj: DynamicObject = serde_yaml::from_str(&text).unwrap();
    validate::decode(&obj)
}

fn valid(name: &str) -> TurnCluster {
    let tc = load(name).unwrap();
    assert_eq!(validate::validate(&tc), Ok(()), "{name} should be valid");
    tc
}

fn node(name: &str, internal: &str, external: Option<&str>, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        ready: true,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        internal_ips: vec![internal.parse().unwrap()],
        external_ips: external.map(|e| e.parse().unwrap()).into_iter().collect(),
        pod_cidrs: vec![format!("10.244.{}.0/24", &name[name.len() - 1..])],
        ..NodeInfo::default()
    }
}

fn facts() -> ClusterFacts {
    ClusterFacts {
        nodes: vec![
            node(
                "node-1",
                "10.0.0.1",
                Some("203.0.113.1"),
                &[("xdpturn.io/relay", "true")],
            ),
            node(
                "node-2",
                "10.0.0.2",
                Some("203.0.113.2"),
                &[("xdpturn.io/relay", "true")],
            ),
            node("node-3", "10.0.0.3", Some("203.0.113.3"), &[]),
        ],
        kubernetes_service_ips: vec!["10.96.0.1".parse().unwrap()],
    }
}

fn render(tc: &TurnCluster, facts: &ClusterFacts, service: Option<&Service>) -> Owned {
    let d = endpoints::discover(&tc.spec, facts, service);
    build::build(&Inputs {
        tc,
        facts,
        endpoints: &d.addresses,
        default_image: IMAGE,
    })
    .unwrap()
}

fn pod(o: &Owned) -> &PodSpec {
    o.workload.pod()
}

fn container(o: &Owned) -> &Container {
    o.workload.container()
}

/// relay.toml as the relay reads it.
fn parsed_config(o: &Owned) -> RelayConfig {
    let text = &o.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    toml::from_str(text).unwrap_or_else(|e| panic!("relay.toml does not parse: {e}\n{text}"))
}

fn caps(o: &Owned) -> (Vec<String>, Vec<String>) {
    let c = container(o)
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .clone()
        .unwrap();
    (c.drop.unwrap_or_default(), c.add.unwrap_or_default())
}

/// The annotations of the relay pods' template.
fn template_annotations(o: &Owned) -> std::collections::BTreeMap<String, String> {
    o.workload
        .template()
        .metadata
        .clone()
        .unwrap()
        .annotations
        .unwrap()
}

fn ports(svc: &Service) -> Vec<(String, i32, String)> {
    svc.spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port, p.protocol.clone().unwrap()))
        .collect()
}

/// A probe's HTTP request.
fn http_get(probe: &Option<Probe>) -> &HTTPGetAction {
    probe.as_ref().unwrap().http_get.as_ref().unwrap()
}

fn volume_secret_names(o: &Owned) -> Vec<String> {
    pod(o)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
        .collect()
}

/// Every owned object's metadata: owner, labels.
fn assert_owned(o: &Owned, tc: &TurnCluster) {
    let uid = tc.metadata.uid.as_deref().unwrap();
    let mut metas = vec![
        &o.config_map.metadata,
        &o.service_account.metadata,
        &o.service.metadata,
        &o.metrics_service.metadata,
        o.workload.meta(),
    ];
    if let Some(sm) = &o.service_monitor {
        metas.push(&sm.metadata);
    }
    for m in metas {
        let owners = m.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1, "{:?}", m.name);
        assert_eq!(owners[0].uid, uid);
        assert_eq!(owners[0].kind, "TurnCluster");
        assert_eq!(owners[0].api_version, "xdpturn.io/v1alpha1");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(m.namespace, tc.metadata.namespace);
        assert_eq!(
            m.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            MANAGER
        );
    }
}

#[test]
fn minimal_renders_a_hardened_daemonset() {
    let tc = valid("minimal.yaml");
    let o = render(&tc, &facts(), None);
    assert_owned(&o, &tc);
    let Workload::DaemonSet(ds) = &o.workload else {
        panic!("a DaemonSet by default")
    };
    // Named after its pod template's revision, which its pods and its selector carry too; the
    // Services select every revision's pods.
    let rev = o.relay_revision.clone().unwrap();
    assert_eq!(rev.len(), 10);
    assert!(rev.chars().all(|c| c.is_ascii_hexdigit()), "{rev}");
    assert_eq!(
        ds.metadata.name.as_deref(),
        Some(format!("minimal-relay-{rev}").as_str())
    );
    let mut template = o.workload.template().clone();
    let pod_labels = template.metadata.as_mut().unwrap().labels.as_mut().unwrap();
    assert_eq!(pod_labels.remove(build::REVISION_LABEL), Some(rev.clone()));
    // ... and what tells the relay its revision: its variable and its readiness probe's query.
    let c = &mut template.spec.as_mut().unwrap().containers[0];
    c.env
        .as_mut()
        .unwrap()
        .retain(|e| e.name != "XDPTURN_REVISION");
    if c.env.as_ref().is_some_and(Vec::is_empty) {
        c.env = None;
    }
    let get = c
        .readiness_probe
        .as_mut()
        .unwrap()
        .http_get
        .as_mut()
        .unwrap();
    get.path = Some("/readyz".into());
    assert_eq!(
        build::revision(&template).unwrap(),
        rev,
        "the hash of the rest"
    );
    let selector = ds
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .clone()
        .unwrap();
    assert_eq!(selector.get(build::REVISION_LABEL), Some(&rev));
    assert_eq!(
        ds.metadata
            .labels
            .as_ref()
            .unwrap()
            .get(build::REVISION_LABEL),
        Some(&rev)
    );
    for svc in [&o.service, &o.metrics_service] {
        let svc_selector = svc.spec.as_ref().unwrap().selector.clone().unwrap();
        assert_eq!(svc_selector, build::selector_labels("minimal"));
    }
    let strategy = ds.spec.as_ref().unwrap().update_strategy.clone().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        serde_json::to_value(strategy.rolling_update.unwrap().max_unavailable).unwrap(),
        1
    );

    let p = pod(&o);
    assert_eq!(p.host_network, Some(true));
    assert_eq!(p.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(p.service_account_name.as_deref(), Some("minimal-relay"));
    assert_eq!(p.automount_service_account_token, Some(false));
    assert_eq!(p.termination_grace_period_seconds, Some(5 + 300 + 15));
    assert_eq!(
        p.security_context
            .as_ref()
            .unwrap()
            .seccomp_profile
            .as_ref()
            .unwrap()
            .type_,
        "RuntimeDefault"
    );

    let c = container(&o);
    assert_eq!(c.image.as_deref(), Some(IMAGE));
    assert_eq!(
        c.args.as_deref().unwrap(),
        ["--config", "/etc/xdpturn/config/relay.toml"]
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(caps(&o), (vec!["ALL".to_owned()], vec![]));
    let live = http_get(&c.liveness_probe);
    let ready = http_get(&c.readiness_probe);
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    // The readiness of this revision's relay (the old relay of a surge shares the probe port),
    // and the relay told its revision.
    let rev = o.relay_revision.clone().unwrap();
    assert_eq!(
        ready.path.as_deref(),
        Some(format!("/readyz?revision={rev}").as_str())
    );
    let env: Vec<(&str, Option<&str>)> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert!(
        env.contains(&("XDPTURN_REVISION", Some(rev.as_str()))),
        "{env:?}"
    );
    // Host networking: no container ports (they would be host ports, and the scheduler would
    // keep a new revision's relay off a node whose old relay holds them), so probes by number.
    assert_eq!(serde_json::to_value(&live.port).unwrap(), 9641);
    assert_eq!(serde_json::to_value(&ready.port).unwrap(), 9641);
    assert_eq!(c.ports, None);
    let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(
        pre_stop.exec.as_ref().unwrap().command.as_deref().unwrap(),
        ["/proc/1/exe", "pre-stop", "--delay", "5"],
        "the relay binary itself (the container's first process), not a shell or `sleep`"
    );
    // With no delay the hook is still there, and returns at once: an apply that stopped sending
    // it would leave `preStop: {}` behind on Kubernetes 1.20, which the API server refuses.
    let mut no_delay = tc.clone();
    no_delay.spec.drain.pre_stop_delay_seconds = 0;
    let o0 = render(&no_delay, &facts(), None);
    let c0 = container(&o0);
    assert_eq!(
        c0.lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .as_deref()
            .unwrap(),
        ["/proc/1/exe", "pre-stop", "--delay", "0"]
    );

    // The checksum is on the workload and the ConfigMap, never on the pod template: the relay
    // reloads its config itself.
    let hash = &ds.metadata.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION];
    assert_eq!(hash, &o.config_hash);
    assert_eq!(
        &o.config_map.metadata.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION],
        hash
    );
    // The template's one annotation here: the listeners, which the relay binds at start only
    // (the container declares no ports in DaemonSet mode).
    assert_eq!(
        o.workload.template().metadata.as_ref().unwrap().annotations,
        Some(BTreeMap::from([(
            build::LISTENERS_ANNOTATION.to_owned(),
            "udp-3478,tcp-3478".to_owned()
        )]))
    );

    // TURN Service: UDP and TCP on one address, no health or metrics port.
    assert_eq!(o.service.metadata.name.as_deref(), Some("minimal"));
    let spec = o.service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        ports(&o.service),
        [
            ("udp-3478".to_owned(), 3478, "UDP".to_owned()),
            ("tcp-3478".to_owned(), 3478, "TCP".to_owned())
        ]
    );
    assert_eq!(
        ports(&o.metrics_service),
        [("metrics".to_owned(), 9641, "TCP".to_owned())]
    );
    assert_eq!(
        o.service_account.automount_service_account_token,
        Some(false)
    );
    assert!(o.service_monitor.is_none());

    // relay.toml parses back into RelayConfig, and is what build meant.
    let cfg = parsed_config(&o);
    assert_eq!(cfg, o.config);
    assert_eq!(cfg.realm, "example.org");
    assert_eq!(
        cfg.listen,
        [
            "0.0.0.0:3478".parse().unwrap(),
            "[::]:3478".parse().unwrap()
        ]
    );
    assert!(cfg.tls_listen.is_empty() && cfg.cert.is_none());
    assert_eq!(
        cfg.auth_secret_files,
        [PathBuf::from("/etc/xdpturn/secrets/turn-auth/secret")]
    );
    assert!(
        cfg.auth_secrets.is_empty() && cfg.users.is_empty(),
        "no secret inline"
    );
    assert_eq!((cfg.min_port, cfg.max_port), (49152, 65535));
    assert_eq!(cfg.metrics_listen, "0.0.0.0:9641".parse().unwrap());
    // The cluster's networks are denied: every node's pod CIDR and the API server's Service IP.
    assert_eq!(
        cfg.deny_peers,
        [
            "10.96.0.1/32",
            "10.244.1.0/24",
            "10.244.2.0/24",
            "10.244.3.0/24"
        ]
    );
    // Nodes behind 1:1 NAT: the relay advertises their ExternalIP in relayed addresses.
    assert_eq!(
        cfg.external_ips,
        [
            "203.0.113.1/10.0.0.1",
            "203.0.113.2/10.0.0.2",
            "203.0.113.3/10.0.0.3"
        ]
    );
    assert_eq!(cfg.drain_timeout_secs, 300);
    assert!(cfg.xdp_interfaces.is_empty(), "no XDP unless enabled");
    assert_eq!(volume_secret_names(&o), ["turn-auth"]);
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/etc/xdpturn/config")
        .unwrap();
    assert!(mount.sub_path.is_none(), "subPath mounts never update");
}

#[test]
fn full_renders_every_field() {
    let tc = valid("full.yaml");
    let o = render(&tc, &facts(), None);
    assert_owned(&o, &tc);
    let cfg = parsed_config(&o);
    assert_eq!(cfg, o.config);
    assert_eq!(
        cfg.tls_listen,
        ["0.0.0.0:443".parse().unwrap(), "[::]:443".parse().unwrap()]
    );
    assert_eq!(cfg.cert, Some(PathBuf::from("/etc/xdpturn/tls/tls.crt")));
    assert_eq!(cfg.key, Some(PathBuf::from("/etc/xdpturn/tls/tls.key")));
    assert_eq!(
        cfg.auth_secret_files,
        [
            PathBuf::from("/etc/xdpturn/secrets/turn-auth/current"),
            PathBuf::from("/etc/xdpturn/secrets/turn-auth/previous"),
            PathBuf::from("/etc/xdpturn/secrets/turn-auth-old/secret"),
        ]
    );
    assert_eq!(
        cfg.users_file,
        Some(PathBuf::from("/etc/xdpturn/secrets/turn-users/users"))
    );
    assert_eq!(
        cfg.api_token_file,
        Some(PathBuf::from("/etc/xdpturn/secrets/turn-api/token"))
    );
    // The credentials API hands out the URLs of the explicit endpoints.
    assert_eq!(
        cfg.api_uris,
        [
            "turn:turn.example.org:3478?transport=udp",
            "turn:turn.example.org:3478?transport=tcp",
            "turns:turn.example.org:443?transport=tcp",
            "turn:[2001:db8::10]:3478?transport=udp",
            "turn:[2001:db8::10]:3478?transport=tcp",
            "turns:[2001:db8::10]:443?transport=tcp",
        ]
    );
    assert_eq!((cfg.min_port, cfg.max_port), (40000, 40999));
    assert_eq!(cfg.allow_peers, ["10.20.30.40"]);
    assert_eq!(
        cfg.deny_peers,
        ["198.51.100.0/24", "10.96.0.0/12", "10.244.0.0/16"],
        "the spec's CIDRs replace discovery"
    );
    assert!(cfg.external_ips.is_empty(), "Explicit: no NAT mapping");
    assert_eq!(
        (cfg.user_quota, cfg.total_quota, cfg.max_bps),
        (5, 2000, 3_000_000)
    );
    assert_eq!(cfg.metrics_listen, "0.0.0.0:9100".parse().unwrap());
    assert_eq!(cfg.drain_timeout_secs, 120);

    // Port 443 needs NET_BIND_SERVICE, which Kubernetes only gives to root.
    assert_eq!(
        caps(&o),
        (vec!["ALL".to_owned()], vec!["NET_BIND_SERVICE".to_owned()])
    );
    let sc = container(&o).security_context.clone().unwrap();
    assert_eq!((sc.run_as_non_root, sc.run_as_user), (Some(false), Some(0)));
    assert_eq!(sc.read_only_root_filesystem, Some(true));

    // One volume per Secret: turn-auth is mounted once for both of its keys.
    let mut secrets = volume_secret_names(&o);
    secrets.sort();
    assert_eq!(
        secrets,
        [
            "turn-api",
            "turn-auth",
            "turn-auth-old",
            "turn-tls",
            "turn-users"
        ]
    );
    let p = pod(&o);
    assert_eq!(
        p.node_selector.clone().unwrap(),
        BTreeMap::from([("xdpturn.io/relay".to_owned(), "true".to_owned())])
    );
    let t = &p.tolerations.as_ref().unwrap()[0];
    assert_eq!(
        (t.key.as_deref(), t.value.as_deref(), t.effect.as_deref()),
        (Some("dedicated"), Some("turn"), Some("NoSchedule"))
    );
    assert_eq!(p.termination_grace_period_seconds, Some(10 + 120 + 15));
    let c = container(&o);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/xdpturn/xdpturn-relay:0.1.0")
    );
    let r = c.resources.as_ref().unwrap();
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "500m");
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "1Gi");
    let Workload::DaemonSet(ds) = &o.workload else {
        panic!()
    };
    let ru = ds
        .spec
        .clone()
        .unwrap()
        .update_strategy
        .unwrap()
        .rolling_update
        .unwrap();
    assert_eq!(serde_json::to_value(ru.max_unavailable).unwrap(), 2);

    assert_eq!(
        ports(&o.service),
        [
            ("udp-3478".to_owned(), 3478, "UDP".to_owned()),
            ("tcp-3478".to_owned(), 3478, "TCP".to_owned()),
            ("tls-443".to_owned(), 443, "TCP".to_owned()),
        ]
    );
    let sm = o.service_monitor.as_ref().unwrap();
    assert_eq!(sm.types.as_ref().unwrap().kind, "ServiceMonitor");
    assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        sm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "relay-metrics"
    );
    let metrics_labels = o.metrics_service.metadata.labels.clone().unwrap();
    for (k, v) in sm.data["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(metrics_labels.get(k).map(String::as_str), v.as_str(), "{k}");
    }
}

#[test]
fn xdp_gets_exactly_its_capabilities() {
    let tc = valid("daemonset-xdp.yaml");
    let o = render(&tc, &facts(), None);
    assert_owned(&o, &tc);
    assert_eq!(
        caps(&o),
        (
            vec!["ALL".to_owned()],
            vec![
                "NET_ADMIN".to_owned(),
                "BPF".to_owned(),
                "PERFMON".to_owned()
            ]
        )
    );
    let sc = container(&o).security_context.clone().unwrap();
    assert_eq!((sc.run_as_non_root, sc.run_as_user), (Some(false), Some(0)));
    assert_eq!(sc.privileged, Some(false));
    // relay/tests/xdp_caps.rs runs the relay with exactly this: keep them one.
    let golden = fixture_path("daemonset-xdp.security.json");
    let rendered = serde_json::json!({
        "pod": pod(&o).security_context,
        "container": sc,
    });
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    assert_eq!(
        rendered,
        expected,
        "the XDP relay's security context changed: update {} (relay/tests/xdp_caps.rs runs the \
         relay with it) to\n{}",
        golden.display(),
        serde_json::to_string_pretty(&rendered).unwrap()
    );
    assert_eq!(pod(&o).host_network, Some(true));
    assert_eq!(
        pod(&o)
            .security_context
            .clone()
            .unwrap()
            .seccomp_profile
            .unwrap()
            .type_,
        "Unconfined"
    );
    // Only the selected nodes run relays: their ExternalIPs are the endpoints and the NAT
    // mappings.
    let d = endpoints::discover(&tc.spec, &facts(), None);
    assert_eq!(d.addresses, ["203.0.113.1", "203.0.113.2"]);
    assert_eq!(
        o.config.external_ips,
        ["203.0.113.1/10.0.0.1", "203.0.113.2/10.0.0.2"]
    );
    let cfg = parsed_config(&o);
    assert_eq!(cfg, o.config);
    assert_eq!(cfg.xdp_interfaces, ["eth0"]);
    assert_eq!(
        (cfg.xdp_mode.as_str(), cfg.xdp_max_channels),
        ("native", 65536)
    );
    // The relay attaches at start: the XDP settings are in the pod template too, so a change
    // replaces the relays.
    let annotations = template_annotations(&o);
    assert_eq!(
        annotations[build::XDP_ANNOTATION],
        "interfaces=eth0 mode=native max-channels=65536"
    );
    let mut other = tc.clone();
    other.spec.xdp.interfaces = vec!["ens5".into()];
    let changed = render(&other, &facts(), None);
    assert_ne!(
        serde_json::to_value(changed.workload.template()).unwrap(),
        serde_json::to_value(o.workload.template()).unwrap()
    );
}

/// tc mode goes to the relay as it is, needs the same capabilities as XDP, and changing to it
/// replaces the relays (it is read at start).
#[test]
fn tc_mode_reaches_the_relay_with_the_same_capabilities() {
    let native = valid("daemonset-xdp.yaml");
    let mut tc = native.clone();
    tc.spec.xdp.mode = api::XdpMode::Tc;
    assert_eq!(validate::validate(&tc), Ok(()));
    let o = render(&tc, &facts(), None);
    let cfg = parsed_config(&o);
    assert_eq!(cfg.xdp_mode, api::XdpMode::Tc);
    assert_eq!(caps(&o), caps(&render(&native, &facts(), None)));
    let annotations = template_annotations(&o);
    assert_eq!(
        annotations[build::XDP_ANNOTATION],
        "interfaces=eth0 mode=tc max-channels=65536"
    );
}

#[test]
fn deployment_is_userspace_behind_a_load_balancer() {
    let tc = valid("deployment-userspace.yaml");
    let lb: Service = serde_json::from_value(serde_json::json!({
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.20"}]}}}))
    .unwrap();
    let o = render(&tc, &facts(), Some(&lb));
    assert_owned(&o, &tc);
    let Workload::Deployment(d) = &o.workload else {
        panic!("a Deployment")
    };
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let ru = spec.strategy.clone().unwrap().rolling_update.unwrap();
    assert_eq!(serde_json::to_value(ru.max_surge).unwrap(), 1);
    assert_eq!(serde_json::to_value(ru.max_unavailable).unwrap(), 0);
    assert_eq!(d.metadata.name.as_deref(), Some("sfu-turn-relay"));
    assert_eq!(o.relay_revision, None);
    assert_eq!(
        spec.selector.match_labels,
        Some(build::selector_labels("sfu-turn"))
    );
    let p = pod(&o);
    assert_eq!(p.host_network, None);
    assert_eq!(p.dns_policy.as_deref(), Some("ClusterFirst"));
    // Without host networking the ports stay, and the probes name theirs.
    let c = container(&o);
    let named: Vec<(Option<String>, i32)> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert!(named.contains(&(Some("metrics".into()), 9641)), "{named:?}");
    let probe = http_get(&c.readiness_probe);
    assert_eq!(serde_json::to_value(&probe.port).unwrap(), "metrics");
    // Replicas do not share ports: no revision in their probe.
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    assert!(p.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
    let sc = container(&o).security_context.clone().unwrap();
    assert_eq!(
        (sc.run_as_non_root, sc.run_as_user),
        (Some(true), Some(65532))
    );
    assert_eq!(caps(&o).1, Vec::<String>::new());

    let svc = o.service.spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(svc.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        o.service.metadata.annotations.clone().unwrap()["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
    let cfg = parsed_config(&o);
    assert_eq!(
        cfg.users_file,
        Some(PathBuf::from("/etc/xdpturn/secrets/turn-users/users"))
    );
    assert!(cfg.deny_peers.is_empty(), "denyClusterNetworks: false");
    assert_eq!(cfg.allow_peers, ["10.244.0.0/16"]);
    assert!(cfg.external_ips.is_empty());
    assert!(cfg.api_uris.is_empty(), "no credentials API token");
}

/// The user database's connection string reaches the relay as the variable for its kind, taken
/// from the Secret by the kubelet: the operator renders only the reference, nowhere a value.
#[test]
fn user_database_comes_from_its_secret_as_the_relays_variable() {
    let base = valid("userdb.yaml");
    for (kind, var) in [
        (UserDatabaseType::Postgresql, "XDPTURN_PSQL_USERDB"),
        (UserDatabaseType::Mysql, "XDPTURN_MYSQL_USERDB"),
        (UserDatabaseType::Redis, "XDPTURN_REDIS_USERDB"),
    ] {
        let mut tc = base.clone();
        tc.spec.auth.user_database.as_mut().unwrap().type_ = kind;
        assert_eq!(
            validate::validate(&tc),
            Ok(()),
            "{kind:?} alone is a credential source"
        );
        let o = render(&tc, &facts(), None);
        let env = container(&o).env.clone().unwrap_or_default();
        let userdb: Vec<_> = env.iter().filter(|e| e.name.ends_with("_USERDB")).collect();
        assert_eq!(userdb.len(), 1, "one user database variable: {env:?}");
        let e = userdb[0];
        assert_eq!(e.name, var);
        assert_eq!(e.value, None, "{var}: no value inline");
        let from = e.value_from.as_ref().unwrap();
        let r = from.secret_key_ref.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("turn-db", "connection"));
        assert_eq!(r.optional, None, "required: no relay starts without it");
        assert!(
            from.config_map_key_ref.is_none() && from.field_ref.is_none(),
            "{from:?}"
        );
        // The relay's file names no database: the variable is the only source.
        let cfg = parsed_config(&o);
        assert_eq!(
            (&cfg.userdb, &cfg.psql_userdb, &cfg.mysql_userdb),
            (&None, &None, &None)
        );
        let toml = &o.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        assert!(
            !toml
                .lines()
                .any(|l| l.split('=').next().unwrap().trim().ends_with("userdb")),
            "{toml}"
        );
        // Not mounted either: the Secret is read by the kubelet for the variable only.
        assert!(volume_secret_names(&o).is_empty());
        // DaemonSet mode still tells the relay its revision.
        assert!(env.iter().any(|e| e.name == "XDPTURN_REVISION"), "{env:?}");
    }

    // Without it, no user database variable.
    let o = render(&valid("full.yaml"), &facts(), None);
    let env = container(&o).env.clone().unwrap_or_default();
    assert!(!env.iter().any(|e| e.name.ends_with("_USERDB")), "{env:?}");
}

/// The traffic records' Redis (`spec.metrics.trafficRecords`) reaches the relay the same way,
/// as `XDPTURN_REDIS_STATSDB` from its Secret, beside a user database's variable; a bad
/// reference is reported at its path.
#[test]
fn traffic_records_come_from_their_secret_as_the_relays_variable() {
    let mut tc = valid("userdb.yaml");
    tc.spec.metrics.traffic_records = Some(api::SecretKeyRef {
        name: "turn-stats".into(),
        key: "redis".into(),
    });
    assert_eq!(validate::validate(&tc), Ok(()));
    let o = render(&tc, &facts(), None);
    let env = container(&o).env.clone().unwrap_or_default();
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"XDPTURN_PSQL_USERDB"), "{names:?}");
    let stats = env
        .iter()
        .find(|e| e.name == api::TRAFFIC_RECORDS_ENV)
        .unwrap_or_else(|| panic!("no statistics database variable: {names:?}"));
    assert_eq!(stats.value, None, "no value inline");
    let r = stats
        .value_from
        .as_ref()
        .and_then(|f| f.secret_key_ref.as_ref())
        .unwrap();
    assert_eq!((r.name.as_str(), r.key.as_str()), ("turn-stats", "redis"));
    assert_eq!(parsed_config(&o).redis_statsdb, None, "not in the file");
    assert!(volume_secret_names(&o).is_empty(), "not mounted");

    tc.spec.metrics.traffic_records = Some(api::SecretKeyRef {
        name: "Turn_Stats".into(),
        key: "redis".into(),
    });
    let problems = validate::validate(&tc).unwrap_err();
    assert_eq!(
        problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
        ["spec.metrics.trafficRecords.name"],
        "{problems:?}"
    );
}

#[test]
fn user_database_reference_is_checked() {
    let mut tc = valid("userdb.yaml");
    let db = tc.spec.auth.user_database.as_mut().unwrap();
    db.secret_key_ref.name = "Turn_DB".into();
    db.secret_key_ref.key = "a/b".into();
    let problems = validate::validate(&tc).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.auth.userDatabase.secretKeyRef.name",
            "spec.auth.userDatabase.secretKeyRef.key"
        ],
        "{problems:?}"
    );
    // Decoding names the field of an unknown type.
    let text = std::fs::read_to_string(fixture_path("userdb.yaml"))
        .unwrap()
        .replace("type: postgresql", "type: sqlite");
    let obj: DynamicObject = serde_yaml::from_str(&text).unwrap();
    let problems = validate::decode(&obj).unwrap_err();
    assert_eq!(
        problems[0].path, "spec.auth.userDatabase.type",
        "{problems:?}"
    );
}

#[test]
fn invalid_specs_report_every_problem_with_its_path() {
    let tc = load("invalid-cross-field.yaml").unwrap();
    let problems: Vec<String> = validate::validate(&tc)
        .unwrap_err()
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        problems,
        [
            "spec.listeners[1].certificateSecret",
            "spec.relayPorts",
            "spec.auth",
            "spec.auth.credentialsApiToken",
            "spec.publicAddress.addresses",
            "spec.xdp.enabled",
            "spec.xdp.interfaces",
        ]
    );
    let problems = load("invalid-malformed.yaml").unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "spec.quotas.userQuota");
    assert!(
        problems[0]
            .to_string()
            .starts_with("spec.quotas.userQuota: invalid type")
    );
}

/// Only what needs new pods changes the pod template; config changes reach running relays
/// through the ConfigMap (the relay reloads it).
#[test]
fn pods_roll_only_for_changes_that_need_new_pods() {
    let base = valid("full.yaml");
    let before = render(&base, &facts(), None);
    let template = |o: &Owned| serde_json::to_value(o.workload.template()).unwrap();

    let mut config_only = base.clone();
    config_only.spec.quotas.user_quota = 50;
    config_only.spec.realm = "example.net".into();
    config_only.spec.peers.deny.push("192.0.2.0/24".into());
    // A rotation inside an already-mounted Secret: another key of turn-auth.
    config_only.spec.auth.shared_secrets.insert(
        0,
        api::SecretKeyRef {
            name: "turn-auth".into(),
            key: "next".into(),
        },
    );
    let after = render(&config_only, &facts(), None);
    assert_ne!(after.config_hash, before.config_hash);
    assert_ne!(after.config_map, before.config_map);
    assert_eq!(template(&after), template(&before), "no restart for config");
    assert_eq!(
        (&after.relay_revision, after.workload.meta().name.as_ref()),
        (&before.relay_revision, before.workload.meta().name.as_ref()),
        "the same revision, the same DaemonSet"
    );

    // A node joining changes the NAT mappings and pod networks: config only, too.
    let mut more = facts();
    more.nodes.push(node(
        "node-4",
        "10.0.0.4",
        Some("203.0.113.4"),
        &[("xdpturn.io/relay", "true")],
    ));
    let minimal = valid("minimal.yaml");
    assert_eq!(
        template(&render(&minimal, &more, None)),
        template(&render(&minimal, &facts(), None))
    );

    for (what, change) in [
        (
            "image",
            Box::new(|tc: &mut TurnCluster| tc.spec.image = Some("other:1".into()))
                as Box<dyn Fn(&mut TurnCluster)>,
        ),
        (
            "new Secret",
            Box::new(|tc: &mut TurnCluster| {
                tc.spec.auth.shared_secrets.push(api::SecretKeyRef {
                    name: "brand-new".into(),
                    key: "k".into(),
                });
            }),
        ),
        (
            "user database",
            Box::new(|tc: &mut TurnCluster| {
                tc.spec.auth.user_database = Some(api::UserDatabase {
                    type_: UserDatabaseType::Mysql,
                    secret_key_ref: api::SecretKeyRef {
                        name: "turn-db".into(),
                        key: "connection".into(),
                    },
                });
            }),
        ),
        (
            "listener port",
            Box::new(|tc: &mut TurnCluster| tc.spec.listeners[0].port = Some(3479)),
        ),
        (
            "drain",
            Box::new(|tc: &mut TurnCluster| tc.spec.drain.timeout_seconds = 600),
        ),
        (
            "resources",
            Box::new(|tc: &mut TurnCluster| {
                let r = tc.spec.resources.as_mut().unwrap();
                r.limits.insert("memory".into(), Quantity("2Gi".into()));
            }),
        ),
    ] {
        let mut tc = base.clone();
        change(&mut tc);
        let changed = render(&tc, &facts(), None);
        assert_ne!(
            template(&changed),
            template(&before),
            "{what} needs new pods"
        );
        assert_ne!(
            changed.relay_revision, before.relay_revision,
            "{what}: a new revision"
        );
        assert_ne!(
            changed.workload.meta().name,
            before.workload.meta().name,
            "{what}: a new DaemonSet"
        );
    }
}

#[test]
fn rendering_is_deterministic() {
    for name in [
        "minimal.yaml",
        "full.yaml",
        "daemonset-xdp.yaml",
        "deployment-userspace.yaml",
        "userdb.yaml",
    ] {
        let tc = valid(name);
        assert_eq!(
            render(&tc, &facts(), None),
            render(&tc, &facts(), None),
            "{name}"
        );
    }
}

#[test]
fn the_example_is_self_contained_and_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/turncluster.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut secrets = Vec::new();
    let mut clusters = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let obj: DynamicObject = serde::Deserialize::deserialize(doc).unwrap();
        match obj.types.as_ref().unwrap().kind.as_str() {
            "Secret" => secrets.push((obj.metadata.name.clone().unwrap(), obj.data.clone())),
            "TurnCluster" => clusters.push(obj),
            other => panic!("unexpected {other} in the example"),
        }
    }
    assert_eq!(clusters.len(), 1);
    let mut obj = clusters.remove(0);
    obj.metadata.namespace = Some("default".into());
    obj.metadata.uid = Some("example-uid".into());
    let tc = validate::decode(&obj).unwrap();
    assert_eq!(validate::validate(&tc), Ok(()));
    let auth = &tc.spec.auth;
    for r in auth
        .shared_secrets
        .iter()
        .chain(&auth.static_users)
        .chain(&auth.credentials_api_token)
    {
        let (_, data) = secrets
            .iter()
            .find(|(n, _)| *n == r.name)
            .unwrap_or_else(|| panic!("Secret {} is not in the example", r.name));
        assert!(
            data["stringData"].get(&r.key).is_some(),
            "Secret {} has no key {}",
            r.name,
            r.key
        );
    }
    // An explicit address: endpoints and iceServers with no node and no load balancer.
    let d = endpoints::discover(&tc.spec, &ClusterFacts::default(), None);
    assert!(d.missing.is_none() && !d.addresses.is_empty());
    let o = render(&tc, &ClusterFacts::default(), None);
    assert_eq!(parsed_config(&o), o.config);
}

#[test]
#[ignore = "prints the rendered objects of the full fixture"]
fn print_full() {
    let tc = valid("full.yaml");
    let o = render(&tc, &facts(), None);
    println!("{}", o.config_toml);
    println!("{}", serde_yaml::to_string(&o.workload.template()).unwrap());
}
