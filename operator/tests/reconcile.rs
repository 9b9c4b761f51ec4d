//! The operator against a real Kubernetes 1.20 API server (tests/envtest: etcd, kube-apiserver,
//! kube-controller-manager with the garbage collector): the CRD installed with kubectl, the
//! example applied, the owned objects and their content, spec changes, secret rotation, an
//! invalid spec, readiness as the kubelet would report it, a restart without spurious writes,
//! deletion, and the time from apply to Ready for 1 and for 50 TurnClusters.
//!
//! The operator runs in the test process, as the ServiceAccount the chart creates, bound to
//! exactly the chart's rules (charts/xdpturn/files/*.yaml): the API server refuses anything
//! else it would try. There is no kubelet and no DaemonSet controller: pods never run, and the
//! tests write the workloads' status as the DaemonSet controller would from the kubelet's
//! reports.
//!
//! Needs XDPTURN_ENVTEST_BIN (`cargo xtask envtest`; `cargo xtask test` sets it). Clusters are
//! heavy: the tests here take turns.

#![allow(clippy::unwrap_used)]

mod envtest;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use api::{ConditionStatus, RelayConfig, TurnCluster, TurnClusterStatus};
use envtest::{
    OPERATOR_NS, OPERATOR_SA, Operator, TestCluster, eventually, operator_client, runtime,
};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use operator::leader::{Elector, Timings};
use serde_json::json;

const DEMO: &str = "demo";

/// One cluster at a time: each is an etcd and a kube-apiserver.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tc_status(tc: &TurnCluster) -> TurnClusterStatus {
    tc.status.clone().unwrap_or_default()
}

fn condition(tc: &TurnCluster, t: &str) -> Option<(ConditionStatus, String)> {
    tc_status(tc)
        .condition(t)
        .map(|c| (c.status, c.reason.clone()))
}

/// Writes a DaemonSet's status as its controller would once the kubelets report `ready` of
/// `desired` relays ready, for the DaemonSet's current generation.
async fn mark_ready(client: &Client, ns: &str, name: &str, desired: i32, ready: i32) {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let ds = api.get(name).await.unwrap();
    let status = json!({"status": {
        "currentNumberScheduled": desired, "desiredNumberScheduled": desired,
        "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": ready,
        "updatedNumberScheduled": desired, "observedGeneration": ds.metadata.generation}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// The relay DaemonSets of TurnCluster `tc`, every revision, sorted by name.
async fn relay_daemonsets(client: &Client, ns: &str, tc: &str) -> Vec<DaemonSet> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let mut all = api
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={tc}")))
        .await
        .unwrap()
        .items;
    all.sort_by_key(ResourceExt::name_any);
    all
}

/// The one relay DaemonSet of TurnCluster `tc` (`<tc>-relay-<revision>`), once it exists.
async fn the_relay_daemonset(client: &Client, ns: &str, tc: &str) -> DaemonSet {
    eventually("the relay DaemonSet", Duration::from_secs(120), || async {
        let mut all = relay_daemonsets(client, ns, tc).await;
        (all.len() == 1).then(|| all.remove(0))
    })
    .await
}

fn relay_config(cm: &ConfigMap) -> RelayConfig {
    toml::from_str(&cm.data.as_ref().unwrap()["relay.toml"]).unwrap()
}

async fn events(client: &Client, ns: &str, regarding: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// resourceVersions of a TurnCluster and everything it owns.
async fn versions(client: &Client, ns: &str, tc: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let rv = |k: &str, o: Option<String>| (k.to_owned(), o.unwrap_or_default());
    let tcs: Api<TurnCluster> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let relay = format!("{tc}-relay");
    let metrics = format!("{tc}-metrics");
    for (k, v) in [
        rv("TurnCluster", tcs.get(tc).await.unwrap().resource_version()),
        rv(
            "ConfigMap",
            cms.get(&relay).await.unwrap().resource_version(),
        ),
        rv("Service", svcs.get(tc).await.unwrap().resource_version()),
        rv(
            "Service/metrics",
            svcs.get(&metrics).await.unwrap().resource_version(),
        ),
        rv(
            "ServiceAccount",
            sas.get(&relay).await.unwrap().resource_version(),
        ),
    ] {
        out.insert(k, v);
    }
    for ds in relay_daemonsets(client, ns, tc).await {
        let (k, v) = rv(
            &format!("DaemonSet/{}", ds.name_any()),
            ds.resource_version(),
        );
        out.insert(k, v);
    }
    out
}

#[test]
fn the_example_end_to_end() {
    let _turn = serial();
    runtime().block_on(example_end_to_end());
}

async fn example_end_to_end() {
    let cluster = TestCluster::start().await;
    let admin = cluster.client();
    cluster.install_crd();
    let op_client = operator_client(&cluster).await;
    let operator = Operator::start(op_client.clone(), "envtest");
    cluster.create_namespace(DEMO).await;

    // kubectl apply the example, as a user would.
    let applied = Instant::now();
    cluster.kubectl_ok(&["apply", "-n", DEMO, "-f", "examples/turncluster.yaml"]);
    let tcs: Api<TurnCluster> = Api::namespaced(admin.clone(), DEMO);
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), DEMO);
    let svcs: Api<Service> = Api::namespaced(admin.clone(), DEMO);
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), DEMO);
    let dss: Api<DaemonSet> = Api::namespaced(admin.clone(), DEMO);

    // The status carries iceServers before any relay runs: the address is explicit.
    let tc = eventually("a first status", Duration::from_secs(30), || async {
        let tc = tcs.get("turn").await.ok()?;
        tc.status.is_some().then_some(tc)
    })
    .await;
    let first_status = applied.elapsed();
    let st = tc_status(&tc);
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.endpoints, ["203.0.113.10"]);
    assert_eq!(
        st.ice_servers[0].urls,
        [
            "turn:203.0.113.10:3478?transport=udp",
            "turn:203.0.113.10:3478?transport=tcp"
        ]
    );
    assert_eq!(
        condition(&tc, "Ready"),
        Some((ConditionStatus::False, "NoRelaysReady".into()))
    );
    assert_eq!(
        condition(&tc, "Progressing").unwrap().0,
        ConditionStatus::True
    );
    assert_eq!(
        condition(&tc, "Degraded"),
        Some((ConditionStatus::False, "AsExpected".into()))
    );

    // The owned objects and their content.
    let uid = tc.uid().unwrap();
    let cm = cms.get("turn-relay").await.unwrap();
    let cfg = relay_config(&cm);
    assert_eq!(cfg.realm, "example.org");
    assert_eq!(
        cfg.auth_secret_files,
        [std::path::PathBuf::from(
            "/etc/xdpturn/secrets/turn-auth/secret"
        )]
    );
    assert_eq!(
        cfg.api_token_file,
        Some("/etc/xdpturn/secrets/turn-api/token".into())
    );
    assert_eq!(
        cfg.api_uris,
        [
            "turn:203.0.113.10:3478?transport=udp",
            "turn:203.0.113.10:3478?transport=tcp"
        ]
    );
    assert_eq!(cfg.user_quota, 10);
    // The API server's Service IP is denied (no nodes here, so no pod CIDRs).
    assert_eq!(cfg.deny_peers, ["10.0.0.1/32"]);
    let ds = the_relay_daemonset(&admin, DEMO, "turn").await;
    let ds_name = ds.name_any();
    assert!(ds_name.starts_with("turn-relay-"), "{ds_name}");
    let pod = ds.spec.as_ref().unwrap().template.spec.clone().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.containers[0].ports, None,
        "host networking: no host ports"
    );
    let sc = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.unwrap().add, None);
    let svc = svcs.get("turn").await.unwrap();
    let ports: Vec<(String, i32)> = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.protocol.unwrap(), p.port))
        .collect();
    assert_eq!(ports, [("UDP".into(), 3478), ("TCP".into(), 3478)]);
    let metrics_svc = svcs.get("turn-metrics").await.unwrap();
    assert_eq!(metrics_svc.spec.unwrap().ports.unwrap()[0].port, 9641);
    let sa = sas.get("turn-relay").await.unwrap();
    assert_eq!(sa.automount_service_account_token, Some(false));
    for meta in [&cm.metadata, &ds.metadata, &sa.metadata] {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            (uid.as_str(), Some(true))
        );
        assert!(
            meta.managed_fields
                .iter()
                .flatten()
                .any(|m| m.manager.as_deref() == Some("xdpturn-operator")
                    && m.operation.as_deref() == Some("Apply")),
            "server-side applied by xdpturn-operator"
        );
    }
    let applied_events = events(&admin, DEMO, "turn").await;
    assert!(
        applied_events
            .iter()
            .any(|(t, r, n)| t == "Normal" && r == "Created" && n.contains("DaemonSet turn-relay")),
        "{applied_events:?}"
    );

    // The kubelets report two relays ready: Ready, with endpoints and iceServers.
    mark_ready(&admin, DEMO, &ds_name, 2, 2).await;
    let tc = eventually("Ready", Duration::from_secs(30), || async {
        let tc = tcs.get("turn").await.ok()?;
        (condition(&tc, "Ready")?.0 == ConditionStatus::True).then_some(tc)
    })
    .await;
    println!(
        "envtest: example applied -> first status {:.2}s, -> Ready {:.2}s (with the kubelet's \
         report simulated at once)",
        first_status.as_secs_f64(),
        applied.elapsed().as_secs_f64()
    );
    assert_eq!(condition(&tc, "Ready").unwrap().1, "RelaysReady");
    assert_eq!(tc_status(&tc).ready_relays, Some(2));
    assert_eq!(
        condition(&tc, "Progressing"),
        Some((ConditionStatus::False, "Stable".into()))
    );
    let table = cluster.kubectl_ok(&["get", "tc", "-n", DEMO]);
    println!("envtest: kubectl get tc:\n{table}");
    assert!(
        table.contains("True") && table.contains("203.0.113.10"),
        "{table}"
    );

    // A config-only change: the ConfigMap follows, the DaemonSet's pod template does not (no
    // generation bump, no pods replaced); the relays reload relay.toml.
    let ds_generation = dss.get(&ds_name).await.unwrap().metadata.generation;
    tcs.patch(
        "turn",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"quotas": {"userQuota": 20}, "relayPorts": {"min": 50000}}})),
    )
    .await
    .unwrap();
    eventually(
        "the ConfigMap follows the spec",
        Duration::from_secs(30),
        || async {
            let cfg = relay_config(&cms.get("turn-relay").await.ok()?);
            (cfg.user_quota == 20 && cfg.min_port == 50000).then_some(())
        },
    )
    .await;
    let tc = eventually("observedGeneration 2", Duration::from_secs(30), || async {
        let tc = tcs.get("turn").await.ok()?;
        (tc_status(&tc).observed_generation == Some(2)).then_some(tc)
    })
    .await;
    assert_eq!(condition(&tc, "Ready").unwrap().0, ConditionStatus::True);
    assert_eq!(
        dss.get(&ds_name).await.unwrap().metadata.generation,
        ds_generation,
        "a config change does not restart relays"
    );
    assert_eq!(
        relay_daemonsets(&admin, DEMO, "turn").await.len(),
        1,
        "nor makes a new revision"
    );

    // Secret rotation: the new secret goes into the same Secret under another key, and first
    // in the spec. The config lists both; the relays keep running (the Secret is mounted whole).
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), DEMO);
    secrets
        .patch(
            "turn-auth",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"next": "a-new-long-random-secret"}})),
        )
        .await
        .unwrap();
    tcs.patch(
        "turn",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"auth": {"sharedSecrets": [
            {"name": "turn-auth", "key": "next"}, {"name": "turn-auth", "key": "secret"}]}}})),
    )
    .await
    .unwrap();
    eventually(
        "the rotated secret is rendered",
        Duration::from_secs(30),
        || async {
            let cfg = relay_config(&cms.get("turn-relay").await.ok()?);
            (cfg.auth_secret_files
                == [
                    std::path::PathBuf::from("/etc/xdpturn/secrets/turn-auth/next"),
                    std::path::PathBuf::from("/etc/xdpturn/secrets/turn-auth/secret"),
                ])
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        dss.get(&ds_name).await.unwrap().metadata.generation,
        ds_generation,
        "a rotation inside a mounted Secret does not restart relays"
    );
    assert_eq!(relay_daemonsets(&admin, DEMO, "turn").await.len(), 1);

    // A change that needs new pods: the image. A new revision's DaemonSet starts next to the
    // old one (a surge on every node), which keeps serving until every new relay is ready.
    tcs.patch(
        "turn",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "xdpturn/xdpturn-relay:next"}})),
    )
    .await
    .unwrap();
    let new = eventually(
        "a new revision's DaemonSet",
        Duration::from_secs(30),
        || async {
            let all = relay_daemonsets(&admin, DEMO, "turn").await;
            (all.len() == 2)
                .then(|| all.into_iter().find(|d| d.name_any() != ds_name))
                .flatten()
        },
    )
    .await;
    let new_name = new.name_any();
    assert_eq!(
        new.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("xdpturn/xdpturn-relay:next")
    );
    let waiting = |tc: &TurnCluster| {
        condition(tc, "Progressing") == Some((ConditionStatus::True, "WaitingForNewRelays".into()))
    };
    let tc = eventually(
        "Progressing while the new relays start",
        Duration::from_secs(30),
        || async {
            let tc = tcs.get("turn").await.ok()?;
            waiting(&tc).then_some(tc)
        },
    )
    .await;
    assert_eq!(
        condition(&tc, "Ready"),
        Some((ConditionStatus::True, "RelaysReady".into())),
        "the old relays serve"
    );
    // The new relays never get ready (a bad image, say): the old ones stay.
    mark_ready(&admin, DEMO, &new_name, 2, 0).await;
    eventually(
        "the status of 0/2 new relays",
        Duration::from_secs(30),
        || async {
            let tc = tcs.get("turn").await.ok()?;
            let message = tc_status(&tc).condition("Progressing")?.message.clone();
            message.contains(": 0/2 ready, 2/2 updated").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(dss.get_opt(&ds_name).await.unwrap().is_some());
    let tc = tcs.get("turn").await.unwrap();
    assert!(waiting(&tc));
    assert_eq!(condition(&tc, "Ready").unwrap().0, ConditionStatus::True);
    // They get ready: the old revision goes (its pods would drain), and the rollout is done.
    mark_ready(&admin, DEMO, &new_name, 2, 2).await;
    eventually("the old revision goes", Duration::from_secs(30), || async {
        dss.get_opt(&ds_name).await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("Stable again", Duration::from_secs(30), || async {
        let tc = tcs.get("turn").await.ok()?;
        (condition(&tc, "Progressing")? == (ConditionStatus::False, "Stable".into())).then_some(())
    })
    .await;
    let retired = eventually(
        "the RetiringOldRelays event",
        Duration::from_secs(30),
        || async {
            let e = events(&admin, DEMO, "turn").await;
            e.into_iter()
                .find(|(_, r, _)| r == "RetiringOldRelays")
                .map(|(_, _, n)| n)
        },
    )
    .await;
    assert!(
        retired.contains(&format!("deleted DaemonSet {ds_name}"))
            && retired.contains(&format!("the relays of {new_name} are ready")),
        "{retired}"
    );
    assert_eq!(
        operator
            .metrics
            .writes
            .with_label_values(&["DaemonSet", "delete"])
            .get(),
        1
    );
    assert_eq!(
        relay_daemonsets(&admin, DEMO, "turn")
            .await
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        [new_name]
    );

    // An invalid spec (the schema can not say "Explicit needs an address"): Degraded with the
    // field's path, a Warning event, and nothing else touched.
    let cm_version = cms.get("turn-relay").await.unwrap().resource_version();
    tcs.patch(
        "turn",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"publicAddress": {"addresses": []}}})),
    )
    .await
    .unwrap();
    let tc = eventually("InvalidSpec", Duration::from_secs(30), || async {
        let tc = tcs.get("turn").await.ok()?;
        (condition(&tc, "Degraded")? == (ConditionStatus::True, "InvalidSpec".into())).then_some(tc)
    })
    .await;
    let degraded = tc_status(&tc).condition("Degraded").cloned().unwrap();
    assert_eq!(
        degraded.message,
        "spec.publicAddress.addresses: policy Explicit needs at least one address"
    );
    let warnings = eventually("the InvalidSpec event", Duration::from_secs(30), || async {
        let e = events(&admin, DEMO, "turn").await;
        e.iter()
            .any(|(t, r, _)| t == "Warning" && r == "InvalidSpec")
            .then_some(e)
    })
    .await;
    assert!(
        warnings
            .iter()
            .any(|(_, r, n)| r == "InvalidSpec" && n.contains("spec.publicAddress.addresses")),
        "{warnings:?}"
    );
    assert_eq!(
        cms.get("turn-relay").await.unwrap().resource_version(),
        cm_version,
        "an invalid spec leaves the relays' config alone"
    );
    // Fixed: Degraded clears.
    tcs.patch(
        "turn",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"publicAddress": {"addresses": ["203.0.113.10"]}}})),
    )
    .await
    .unwrap();
    eventually("Degraded clears", Duration::from_secs(30), || async {
        let tc = tcs.get("turn").await.ok()?;
        (condition(&tc, "Degraded")?.0 == ConditionStatus::False
            && condition(&tc, "Ready")?.0 == ConditionStatus::True)
            .then_some(())
    })
    .await;

    // A restart: the new operator reads everything and writes nothing.
    let wrote_before_restart = operator.metrics.total_writes();
    assert!(wrote_before_restart > 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    operator.stop().await;
    let before = versions(&admin, DEMO, "turn").await;
    let operator = Operator::start(op_client.clone(), "envtest");
    eventually(
        "the new operator reconciles",
        Duration::from_secs(30),
        || async { (operator.metrics.reconciles.get() >= 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        operator.metrics.total_writes(),
        0,
        "{}",
        operator.metrics.render()
    );
    assert_eq!(
        versions(&admin, DEMO, "turn").await,
        before,
        "no spurious writes"
    );
    println!(
        "envtest: restarted operator: {} reconciles, 0 writes",
        operator.metrics.reconciles.get()
    );

    // Deleting the TurnCluster: the garbage collector removes what it owned.
    tcs.delete("turn", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "owned objects collected",
        Duration::from_secs(90),
        || async {
            let gone = cms.get_opt("turn-relay").await.ok()?.is_none()
                && relay_daemonsets(&admin, DEMO, "turn").await.is_empty()
                && svcs.get_opt("turn").await.ok()?.is_none()
                && svcs.get_opt("turn-metrics").await.ok()?.is_none()
                && sas.get_opt("turn-relay").await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;
    assert_eq!(
        operator
            .metrics
            .failures
            .with_label_values(&["apply"])
            .get(),
        0
    );
    operator.stop().await;
}

/// The relay pod's preStop hook across a change of `spec.drain.preStopDelaySeconds` from 5 to 0
/// and back: a server-side apply that stopped sending `lifecycle.preStop` would leave
/// `preStop: {}` behind on 1.20, which the API server refuses ("must specify a handler type").
/// Each update is accepted, the hook is the relay binary's own `pre-stop`, and the events say
/// the relays are replaced.
#[test]
fn the_pre_stop_delay_goes_to_zero_and_back() {
    let _turn = serial();
    runtime().block_on(async {
        let cluster = TestCluster::start().await;
        let admin = cluster.client();
        cluster.install_crd();
        let op_client = operator_client(&cluster).await;
        let operator = Operator::start(op_client, "envtest");
        cluster.create_namespace(DEMO).await;
        let tcs: Api<TurnCluster> = Api::namespaced(admin.clone(), DEMO);
        let tc: TurnCluster = serde_yaml::from_str(
            "apiVersion: xdpturn.io/v1alpha1
kind: TurnCluster
metadata: {name: drain}
spec:
  realm: example.org
  auth: {sharedSecrets: [{name: turn-auth, key: secret}]}
  publicAddress: {policy: Explicit, addresses: [203.0.113.10]}
  drain: {preStopDelaySeconds: 5}
",
        )
        .unwrap();
        tcs.create(&PostParams::default(), &tc).await.unwrap();
        let hook = |ds: &DaemonSet| -> Option<Vec<String>> {
            let pod = ds.spec.as_ref()?.template.spec.as_ref()?;
            pod.containers[0]
                .lifecycle
                .as_ref()?
                .pre_stop
                .as_ref()?
                .exec
                .as_ref()?
                .command
                .clone()
        };
        for delay in [5, 0, 5, 0] {
            tcs.patch(
                "drain",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"drain": {"preStopDelaySeconds": delay}}})),
            )
            .await
            .unwrap();
            let tc = eventually(
                "the status of the change",
                Duration::from_secs(30),
                || async {
                    let tc = tcs.get("drain").await.ok()?;
                    (tc_status(&tc).observed_generation == tc.metadata.generation).then_some(tc)
                },
            )
            .await;
            assert_eq!(
                condition(&tc, "Degraded"),
                Some((ConditionStatus::False, "AsExpected".into())),
                "the update is accepted: {:?}",
                tc_status(&tc)
            );
            let ds = eventually(
                &format!("the DaemonSet with a preStop delay of {delay}"),
                Duration::from_secs(30),
                || async {
                    // Each delay is its own revision (going back to one reuses its DaemonSet,
                    // if still there): the relays' DaemonSet of this delay.
                    relay_daemonsets(&admin, DEMO, "drain")
                        .await
                        .into_iter()
                        .find(|ds| {
                            hook(ds).and_then(|h| h.last().cloned()) == Some(delay.to_string())
                        })
                },
            )
            .await;
            assert_eq!(
                hook(&ds).unwrap(),
                [
                    operator::build::PRE_STOP_EXE,
                    "pre-stop",
                    "--delay",
                    &delay.to_string()
                ]
            );
            let pod = ds.spec.unwrap().template.spec.unwrap();
            assert_eq!(
                pod.termination_grace_period_seconds,
                Some(
                    delay
                        + api::DEFAULT_DRAIN_TIMEOUT_SECONDS
                        + operator::build::GRACE_MARGIN_SECONDS
                ),
                "the grace period follows the delay"
            );
        }
        let replaced = events(&admin, DEMO, "drain").await;
        assert!(
            replaced.iter().any(|(t, r, n)| t == "Normal"
                && r == "ReplacingRelays"
                && n.contains("DaemonSet drain-relay")),
            "{replaced:?}"
        );
        assert_eq!(
            operator
                .metrics
                .failures
                .with_label_values(&["apply"])
                .get(),
            0
        );
        operator.stop().await;
    });
}

/// NodeExternalIP endpoints follow the nodes; a LoadBalancer with UDP and TCP is refused by a
/// 1.20 API server (MixedProtocolLBService is off), which shows as Degraded, not as a crash loop.
#[test]
fn nodes_and_load_balancers() {
    let _turn = serial();
    runtime().block_on(async {
        let cluster = TestCluster::start().await;
        let admin = cluster.client();
        cluster.install_crd();
        let op_client = operator_client(&cluster).await;
        let operator = Operator::start(op_client, "envtest");
        cluster.create_namespace(DEMO).await;
        let tcs: Api<TurnCluster> = Api::namespaced(admin.clone(), DEMO);
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), DEMO);
        let edge: TurnCluster = serde_yaml::from_str(
            "apiVersion: xdpturn.io/v1alpha1
kind: TurnCluster
metadata: {name: edge}
spec:
  realm: example.org
  auth: {sharedSecrets: [{name: turn-auth, key: secret}]}
",
        )
        .unwrap();
        tcs.create(&PostParams::default(), &edge).await.unwrap();
        let tc = eventually(
            "NoPublicAddress without nodes",
            Duration::from_secs(30),
            || async {
                let tc = tcs.get("edge").await.ok()?;
                (condition(&tc, "Degraded")? == (ConditionStatus::True, "NoPublicAddress".into()))
                    .then_some(tc)
            },
        )
        .await;
        assert!(tc_status(&tc).endpoints.is_empty());

        // A node registers (as a kubelet would), behind 1:1 NAT.
        let nodes: Api<Node> = Api::all(admin.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a"},
            "spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let status = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "ok", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "addresses": [{"type": "InternalIP", "address": "10.1.0.7"},
                {"type": "ExternalIP", "address": "198.51.100.7"}]}});
        nodes
            .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        let tc = eventually(
            "the node's ExternalIP is an endpoint",
            Duration::from_secs(30),
            || async {
                let tc = tcs.get("edge").await.ok()?;
                (tc_status(&tc).endpoints == ["198.51.100.7"]).then_some(tc)
            },
        )
        .await;
        assert_eq!(
            tc_status(&tc).ice_servers[0].urls[0],
            "turn:198.51.100.7:3478?transport=udp"
        );
        assert_eq!(
            condition(&tc, "Degraded").unwrap().0,
            ConditionStatus::False
        );
        let cfg = eventually(
            "NAT mapping and pod network in relay.toml",
            Duration::from_secs(30),
            || async {
                let cfg = relay_config(&cms.get("edge-relay").await.ok()?);
                (!cfg.external_ips.is_empty()).then_some(cfg)
            },
        )
        .await;
        assert_eq!(cfg.external_ips, ["198.51.100.7/10.1.0.7"]);
        assert_eq!(cfg.deny_peers, ["10.0.0.1/32", "10.244.7.0/24"]);

        // The node goes: so does the endpoint.
        nodes
            .delete("node-a", &DeleteParams::default())
            .await
            .unwrap();
        eventually(
            "the endpoint goes with the node",
            Duration::from_secs(30),
            || async {
                let tc = tcs.get("edge").await.ok()?;
                tc_status(&tc).endpoints.is_empty().then_some(())
            },
        )
        .await;

        // UDP and TCP on one LoadBalancer: Kubernetes 1.20 refuses it.
        let lb: TurnCluster = serde_yaml::from_str(
            "apiVersion: xdpturn.io/v1alpha1
kind: TurnCluster
metadata: {name: lb}
spec:
  realm: example.org
  auth: {sharedSecrets: [{name: turn-auth, key: secret}]}
  publicAddress: {policy: LoadBalancer}
  placement: {mode: Deployment, replicas: 2}
",
        )
        .unwrap();
        tcs.create(&PostParams::default(), &lb).await.unwrap();
        let tc = eventually("Rejected", Duration::from_secs(30), || async {
            let tc = tcs.get("lb").await.ok()?;
            (condition(&tc, "Degraded")? == (ConditionStatus::True, "Rejected".into()))
                .then_some(tc)
        })
        .await;
        let message = tc_status(&tc)
            .condition("Degraded")
            .unwrap()
            .message
            .clone();
        println!("envtest: a mixed-protocol LoadBalancer on 1.20: {message}");
        assert!(message.contains("Service lb"), "{message}");
        // The rest was applied; a UDP-only LoadBalancer is accepted.
        assert!(cms.get_opt("lb-relay").await.unwrap().is_some());
        tcs.patch(
            "lb",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"listeners": [{"protocol": "UDP", "port": 3478}]}})),
        )
        .await
        .unwrap();
        eventually(
            "Degraded clears with UDP only",
            Duration::from_secs(30),
            || async {
                let tc = tcs.get("lb").await.ok()?;
                (condition(&tc, "Degraded")?.0 == ConditionStatus::False).then_some(())
            },
        )
        .await;
        let svc: Api<Service> = Api::namespaced(admin.clone(), DEMO);
        let spec = svc.get("lb").await.unwrap().spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        // No cloud here: the load balancer never gets an address, which is progress, not a
        // fault.
        let tc = tcs.get("lb").await.unwrap();
        assert_eq!(
            condition(&tc, "Progressing"),
            Some((ConditionStatus::True, "RollingOut".into()))
        );
        operator.stop().await;
    });
}

/// Time from `kubectl apply` to Ready for 50 TurnClusters at once, with a simulated kubelet
/// reporting each DaemonSet ready as soon as it exists.
#[test]
fn fifty_turnclusters_to_ready() {
    let _turn = serial();
    runtime().block_on(async {
        let cluster = TestCluster::start().await;
        let admin = cluster.client();
        cluster.install_crd();
        let op_client = operator_client(&cluster).await;
        let operator = Operator::start(op_client, "envtest");
        cluster.create_namespace(DEMO).await;
        let tcs: Api<TurnCluster> = Api::namespaced(admin.clone(), DEMO);

        // One first, alone.
        let started = Instant::now();
        let ready_one = apply_and_wait(&admin, &tcs, &["solo".to_owned()]).await;
        println!(
            "envtest: 1 TurnCluster: apply -> Ready in {:.2}s",
            ready_one.as_secs_f64()
        );

        let names: Vec<String> = (0..50).map(|i| format!("tc-{i:02}")).collect();
        let all = apply_and_wait(&admin, &tcs, &names).await;
        println!(
            "envtest: 50 TurnClusters: apply -> all Ready in {:.2}s ({} reconciles, {} writes)",
            all.as_secs_f64(),
            operator.metrics.reconciles.get(),
            operator.metrics.total_writes()
        );
        assert!(all < Duration::from_secs(120), "{all:?}");
        // Every TurnCluster costs a bounded number of writes: 5 objects, a few status
        // updates, the events.
        assert!(
            operator.metrics.total_writes() < 51 * 12,
            "{}",
            operator.metrics.render()
        );
        assert!(started.elapsed() < Duration::from_secs(240));
        operator.stop().await;
    });
}

/// Creates the TurnClusters, marks each DaemonSet ready when it appears (the kubelet's part),
/// and returns the time until every one is Ready.
async fn apply_and_wait(admin: &Client, tcs: &Api<TurnCluster>, names: &[String]) -> Duration {
    let start = Instant::now();
    join_all(names.iter().map(|name| async move {
        let tc: TurnCluster = serde_json::from_value(json!({
            "apiVersion": "xdpturn.io/v1alpha1", "kind": "TurnCluster",
            "metadata": {"name": name},
            "spec": {"realm": "example.org",
                "auth": {"sharedSecrets": [{"name": "turn-auth", "key": "secret"}]},
                "publicAddress": {"policy": "Explicit", "addresses": ["203.0.113.10"]}}}))
        .unwrap();
        tcs.create(&PostParams::default(), &tc).await.unwrap();
    }))
    .await;
    join_all(names.iter().map(|name| async move {
        let relay = the_relay_daemonset(admin, DEMO, name).await.name_any();
        mark_ready(admin, DEMO, &relay, 1, 1).await;
        eventually("Ready", Duration::from_secs(120), || async {
            let tc = tcs.get(name).await.ok()?;
            (condition(&tc, "Ready")?.0 == ConditionStatus::True).then_some(())
        })
        .await;
    }))
    .await;
    start.elapsed()
}

/// Two candidates for one Lease, on a real API server, with the chart's leader-election Role:
/// one leads, the other waits, and takes over when the first releases.
#[test]
fn one_leader_among_two_replicas() {
    let _turn = serial();
    runtime().block_on(async {
        let cluster = TestCluster::start_with(envtest::Options {
            controller_manager: false,
        })
        .await;
        cluster.install_crd();
        let client = operator_client(&cluster).await;
        let api = || Api::<Lease>::namespaced(client.clone(), OPERATOR_NS);
        let fast = Timings {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(300),
        };
        let mut a = Elector::new(api(), "xdpturn-operator", "replica-a", fast);
        let mut b = Elector::new(api(), "xdpturn-operator", "replica-b", fast);
        assert!(
            a.try_once().await.unwrap(),
            "the first candidate creates the Lease"
        );
        assert!(!b.try_once().await.unwrap(), "the second waits");
        assert!(a.try_once().await.unwrap(), "the leader renews");
        // b keeps waiting while a renews.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(a.try_once().await.unwrap());
            assert!(!b.try_once().await.unwrap());
        }
        // a releases (shutdown): b takes over at once.
        a.release().await;
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), b.acquire())
            .await
            .expect("b takes over");
        println!(
            "envtest: the standby took the released Lease in {:.2}s",
            t.elapsed().as_secs_f64()
        );
        assert!(!a.try_once().await.unwrap(), "a is a follower now");
        // b stops renewing (crash): a takes over after the lease duration on its own clock.
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(15), a.acquire())
            .await
            .expect("a takes over an expired Lease");
        assert!(
            t.elapsed() >= Duration::from_secs(2),
            "not before it expired"
        );
        let lease = api().get("xdpturn-operator").await.unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("replica-a"));
        assert_eq!(spec.lease_transitions, Some(2));
    });
}

/// A child process, killed (by its PID) if the test ends before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET http://127.0.0.1:port/path; the status code and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The xdpturn-operator binary, two replicas as the chart runs them (POD_NAME, POD_NAMESPACE,
/// the ServiceAccount's rights): one leads and reconciles, the other waits; SIGTERM makes the
/// leader finish, release the Lease and exit 0, and the standby takes over without rewriting
/// anything.
#[test]
fn two_operator_binaries_hand_over() {
    let _turn = serial();
    runtime().block_on(async {
        let cluster = TestCluster::start_with(envtest::Options {
            controller_manager: false,
        })
        .await;
        let admin = cluster.client();
        cluster.install_crd();
        operator_client(&cluster).await;
        // The operator's kubeconfig: the admin's, acting as the operator's ServiceAccount.
        let mut kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(cluster.kubeconfig()).unwrap()).unwrap();
        kc["users"][0]["user"]["as"] =
            format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}").into();
        let kubeconfig = cluster.dir().join("operator.kubeconfig");
        std::fs::write(&kubeconfig, serde_yaml::to_string(&kc).unwrap()).unwrap();

        let start = |name: &str, port: u16| {
            let log = std::fs::File::create(cluster.dir().join(format!("{name}.log"))).unwrap();
            Child(
                std::process::Command::new(env!("CARGO_BIN_EXE_xdpturn-operator"))
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                    .env("POD_NAME", name)
                    .env("POD_NAMESPACE", OPERATOR_NS)
                    .env("RUST_LOG", "info")
                    .stdin(std::process::Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            )
        };
        let (port_a, port_b) = (free_port(), free_port());
        let mut a = start("replica-a", port_a);
        eventually("replica-a leads", Duration::from_secs(30), || async {
            (metric(port_a, "xdpturn_operator_leader")? == 1.0).then_some(())
        })
        .await;
        let b = start("replica-b", port_b);
        eventually("replica-b answers", Duration::from_secs(30), || async {
            (http_get(port_b, "/healthz")?.0 == 200 && http_get(port_b, "/readyz")?.0 == 200)
                .then_some(())
        })
        .await;
        let leases: Api<Lease> = Api::namespaced(admin.clone(), OPERATOR_NS);
        let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity);
        assert_eq!(
            holder(leases.get("xdpturn-operator").await.unwrap()).as_deref(),
            Some("replica-a")
        );
        assert_eq!(metric(port_b, "xdpturn_operator_leader"), Some(0.0));

        cluster.create_namespace(DEMO).await;
        cluster.kubectl_ok(&["apply", "-n", DEMO, "-f", "examples/turncluster.yaml"]);
        let tcs: Api<TurnCluster> = Api::namespaced(admin.clone(), DEMO);
        eventually("the leader reconciles", Duration::from_secs(30), || async {
            tcs.get("turn").await.ok()?.status.map(|_| ())
        })
        .await;
        assert_eq!(
            metric(port_b, "xdpturn_operator_reconciles_total"),
            Some(0.0),
            "the standby does nothing"
        );
        let before = versions(&admin, DEMO, "turn").await;

        // SIGTERM to the leader (by its PID): it stops, releases the Lease, exits 0.
        let stopped = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &a.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = eventually("replica-a exits", Duration::from_secs(30), || {
            let done = a.0.try_wait().unwrap();
            async move { done }
        })
        .await;
        assert!(exit.success(), "{exit}");
        eventually("replica-b takes over", Duration::from_secs(30), || async {
            (metric(port_b, "xdpturn_operator_leader")? == 1.0
                && metric(port_b, "xdpturn_operator_reconciles_total")? >= 1.0)
                .then_some(())
        })
        .await;
        println!(
            "envtest: SIGTERM to the leader -> the standby reconciling in {:.2}s",
            stopped.elapsed().as_secs_f64()
        );
        assert_eq!(
            holder(leases.get("xdpturn-operator").await.unwrap()).as_deref(),
            Some("replica-b")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            versions(&admin, DEMO, "turn").await,
            before,
            "no spurious writes"
        );
        let (_, metrics) = http_get(port_b, "/metrics").unwrap();
        let writes: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("xdpturn_operator_writes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(writes, 0.0, "{metrics}");
        drop(b);
    });
}
