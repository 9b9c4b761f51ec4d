//! `metrics.serviceMonitor` against a real Kubernetes 1.20 API server (tests/envtest): the
//! Prometheus Operator's ServiceMonitor the operator creates when that CRD is installed, and
//! what it does when it is not.
//!
//! The operator does not look for the CRD at start-up: every reconcile of a TurnCluster that
//! asks for a ServiceMonitor applies it, and a 404 from the ServiceMonitor API means "not
//! installed" (src/apply/mod.rs, `service_monitor`). That reconcile still applies everything
//! else and writes the status, Degraded=True with reason Rejected and a message naming the
//! CRD, with a Warning event; it requeues after `REFUSED_REQUEUE`. The operator watches neither
//! ServiceMonitors nor CRDs, so installing the CRD later takes effect at that requeue or at
//! the TurnCluster's next change; the test makes the change rather than wait minutes.
//!
//! So one cluster and one operator serve both halves, in order: a TurnCluster before the CRD
//! exists, then the CRD (tests/fixtures/servicemonitor-crd.yaml, a minimal stand-in with the
//! real group, version, kind and scope), then a second TurnCluster, then the first one again.
//! The operator runs as the chart's ServiceAccount with exactly the chart's rules, so its
//! ServiceMonitor rule is exercised too.
//!
//! Needs XDPTURN_ENVTEST_BIN (`cargo xtask envtest`; `cargo xtask test` sets it).

#![allow(clippy::unwrap_used)]

mod envtest;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::{ConditionStatus, TurnCluster};
use envtest::{Operator, TestCluster, eventually, operator_client, runtime};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use operator::build::service_monitor_resource;
use serde_json::{Value, json};

/// The stand-in CRD, relative to the workspace root (where kubectl runs).
const SM_CRD_FILE: &str = "operator/tests/fixtures/servicemonitor-crd.yaml";
const SM_CRD: &str = "servicemonitors.monitoring.coreos.com";
/// The TurnCluster applied before the CRD exists, and the one applied after.
const NS_BEFORE: &str = "sm-before-crd";
const NS_AFTER: &str = "sm-after-crd";
/// The example's TurnCluster, and what the operator names after it.
const TC: &str = "turn";
const RELAY: &str = "turn-relay";
const METRICS_SVC: &str = "turn-metrics";
const MISSING_CRD: &str = "the ServiceMonitor CRD (Prometheus Operator, monitoring.coreos.com/v1) \
                           is not installed";

#[test]
fn service_monitor_without_and_with_its_crd() {
    runtime().block_on(without_and_with_the_crd());
}

async fn without_and_with_the_crd() {
    let cluster = TestCluster::start().await;
    let admin = cluster.client();
    cluster.install_crd();
    let operator = Operator::start(operator_client(&cluster).await, "servicemonitor");
    let example = example_with_service_monitor(&cluster);

    // 1. No ServiceMonitor CRD: the reconcile goes on without it and says why.
    cluster.create_namespace(NS_BEFORE).await;
    cluster.kubectl_ok(&["apply", "-n", NS_BEFORE, "-f", &example]);
    let tcs_before: Api<TurnCluster> = Api::namespaced(admin.clone(), NS_BEFORE);
    let tc = eventually(
        "Degraded for the missing CRD",
        Duration::from_secs(30),
        || {
            let tcs = tcs_before.clone();
            async move {
                let tc = tcs.get(TC).await.ok()?;
                let d = tc.status.as_ref()?.condition("Degraded")?;
                (d.status == ConditionStatus::True).then_some(tc)
            }
        },
    )
    .await;
    let st = tc.status.clone().unwrap();
    let degraded = st.condition("Degraded").unwrap();
    assert_eq!(degraded.reason, "Rejected");
    assert_eq!(
        degraded.message,
        format!("spec.metrics.serviceMonitor is true but {MISSING_CRD}")
    );
    // The rest of the status is computed as usual.
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.endpoints, ["203.0.113.10"]);
    assert!(!st.ice_servers.is_empty());
    assert_eq!(
        st.condition("Ready").map(|c| (c.status, c.reason.as_str())),
        Some((ConditionStatus::False, "NoRelaysReady"))
    );
    // Everything else is applied.
    assert!(owned_by_tc(
        &tc,
        &get::<ConfigMap>(&admin, NS_BEFORE, RELAY).await
    ));
    // The relays' DaemonSet: `turn-relay-<revision>`, found by the TurnCluster's labels.
    let relays = Api::<DaemonSet>::namespaced(admin.clone(), NS_BEFORE)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={TC}")))
        .await
        .unwrap()
        .items;
    assert_eq!(relays.len(), 1);
    assert!(owned_by_tc(&tc, &relays[0]));
    assert!(owned_by_tc(
        &tc,
        &get::<Service>(&admin, NS_BEFORE, TC).await
    ));
    assert!(owned_by_tc(
        &tc,
        &get::<Service>(&admin, NS_BEFORE, METRICS_SVC).await
    ));
    // A Warning event says the same.
    let warning = eventually("the Rejected event", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            warnings(&admin, NS_BEFORE)
                .await
                .into_iter()
                .find(|(reason, _)| reason == "Rejected")
        }
    })
    .await;
    assert_eq!(warning.1, degraded.message);
    // A decision reported to the user, not a failure retried with backoff.
    assert_eq!(failures(&operator), 0.0);
    assert_eq!(sm_writes(&operator, "create"), 0);
    // And indeed there is no ServiceMonitor API to find one in.
    let err = sm_api(&admin, NS_BEFORE).get(RELAY).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err}"
    );

    // 2. The CRD installed, then a TurnCluster asking for a ServiceMonitor: it gets one.
    cluster.kubectl_ok(&["apply", "-f", SM_CRD_FILE]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{SM_CRD}"),
    ]);
    cluster.create_namespace(NS_AFTER).await;
    cluster.kubectl_ok(&["apply", "-n", NS_AFTER, "-f", &example]);
    let tcs_after: Api<TurnCluster> = Api::namespaced(admin.clone(), NS_AFTER);
    let sm = eventually("the ServiceMonitor", Duration::from_secs(30), || {
        let api = sm_api(&admin, NS_AFTER);
        async move { api.get_opt(RELAY).await.ok().flatten() }
    })
    .await;
    let tc = tcs_after.get(TC).await.unwrap();
    let metrics_svc = get::<Service>(&admin, NS_AFTER, METRICS_SVC).await;
    let turn_svc = get::<Service>(&admin, NS_AFTER, TC).await;
    assert_service_monitor(&tc, &sm, &metrics_svc, &turn_svc);
    let tc = eventually("Degraded=False", Duration::from_secs(30), || {
        let tcs = tcs_after.clone();
        async move {
            let tc = tcs.get(TC).await.ok()?;
            let d = tc.status.as_ref()?.condition("Degraded")?;
            (d.status == ConditionStatus::False).then_some(tc)
        }
    })
    .await;
    assert_eq!(
        tc.status.unwrap().condition("Degraded").unwrap().reason,
        "AsExpected"
    );
    assert_eq!(sm_writes(&operator, "create"), 1);

    // 3. The first TurnCluster gets its ServiceMonitor at its next reconcile (here: a change
    //    to it; otherwise the requeue) and is no longer Degraded.
    touch(&tcs_before, "1").await;
    let sm_before = eventually("the first ServiceMonitor", Duration::from_secs(30), || {
        let api = sm_api(&admin, NS_BEFORE);
        async move { api.get_opt(RELAY).await.ok().flatten() }
    })
    .await;
    let tc = eventually("Degraded cleared", Duration::from_secs(30), || {
        let tcs = tcs_before.clone();
        async move {
            let tc = tcs.get(TC).await.ok()?;
            let d = tc.status.as_ref()?.condition("Degraded")?;
            (d.status == ConditionStatus::False).then_some(tc)
        }
    })
    .await;
    assert_service_monitor(
        &tc,
        &sm_before,
        &get::<Service>(&admin, NS_BEFORE, METRICS_SVC).await,
        &get::<Service>(&admin, NS_BEFORE, TC).await,
    );
    assert_eq!(sm_writes(&operator, "create"), 2);

    // 4. A reconcile with nothing changed leaves the ServiceMonitor alone: what the 1.20 API
    //    server stored compares equal to what the operator would apply.
    let version = sm.resource_version();
    let done = settled(&operator).await;
    touch(&tcs_after, "1").await;
    eventually("another reconcile", Duration::from_secs(30), || {
        let n = operator.metrics.duration.get_sample_count();
        async move { (n > done).then_some(()) }
    })
    .await;
    settled(&operator).await;
    let sm = sm_api(&admin, NS_AFTER).get(RELAY).await.unwrap();
    assert_eq!(sm.resource_version(), version);
    assert_eq!(sm_writes(&operator, "create"), 2);
    assert_eq!(sm_writes(&operator, "update"), 0);

    // 5. serviceMonitor turned off: the operator deletes the ServiceMonitor it owns.
    tcs_after
        .patch(
            TC,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"metrics": {"serviceMonitor": false}}})),
        )
        .await
        .unwrap();
    eventually(
        "the ServiceMonitor deleted",
        Duration::from_secs(30),
        || {
            let api = sm_api(&admin, NS_AFTER);
            async move { matches!(api.get_opt(RELAY).await, Ok(None)).then_some(()) }
        },
    )
    .await;
    assert_eq!(sm_writes(&operator, "delete"), 1);

    // 6. The owner reference works: deleting the TurnCluster, the garbage collector removes
    //    its ServiceMonitor (once its discovery, resynced every 30 s, has seen the new kind).
    tcs_before
        .delete(TC, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the ServiceMonitor collected",
        Duration::from_secs(90),
        || {
            let api = sm_api(&admin, NS_BEFORE);
            async move { matches!(api.get_opt(RELAY).await, Ok(None)).then_some(()) }
        },
    )
    .await;
    assert_eq!(failures(&operator), 0.0);

    operator.stop().await;
    tcs_after
        .delete(TC, &DeleteParams::default())
        .await
        .unwrap();
}

/// The example TurnCluster (and its Secrets) with `metrics.serviceMonitor: true`, written into
/// the cluster's temp dir; returns the file's path.
fn example_with_service_monitor(cluster: &TestCluster) -> String {
    let path = envtest::workspace_root().join("examples/turncluster.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut found = false;
    let docs: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if v["kind"] == "TurnCluster" {
                assert_eq!(v["spec"]["metrics"]["serviceMonitor"], Value::Null);
                v["spec"]["metrics"]["serviceMonitor"] = true.into();
                found = true;
            }
            serde_yaml::to_string(&v).unwrap()
        })
        .collect();
    assert!(found, "examples/turncluster.yaml has a TurnCluster");
    let out = cluster.dir().join("turncluster-servicemonitor.yaml");
    std::fs::write(&out, docs.join("---\n")).unwrap();
    out.to_string_lossy().into_owned()
}

/// The ServiceMonitor as the operator should have made it for `tc`: owned by it (as its
/// controller, like the other owned objects), selecting the metrics Service and only it,
/// scraping the port that Service names at the relay's metrics path.
fn assert_service_monitor(
    tc: &TurnCluster,
    sm: &DynamicObject,
    metrics_svc: &Service,
    turn_svc: &Service,
) {
    assert_eq!(sm.types.as_ref().unwrap().kind, "ServiceMonitor");
    assert_eq!(
        sm.types.as_ref().unwrap().api_version,
        "monitoring.coreos.com/v1"
    );
    assert_eq!(sm.namespace(), tc.namespace());
    let owners = sm.owner_references();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let o = &owners[0];
    assert_eq!(
        (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
        ("xdpturn.io/v1alpha1", "TurnCluster", TC)
    );
    assert_eq!(Some(&o.uid), tc.metadata.uid.as_ref());
    assert_eq!(o.controller, Some(true));
    assert_eq!(
        sm.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("xdpturn-operator")
    );

    let spec = &sm.data["spec"];
    let selector: BTreeMap<String, String> =
        serde_json::from_value(spec["selector"]["matchLabels"].clone()).unwrap();
    assert!(!selector.is_empty());
    let selects = |svc: &Service| selector.iter().all(|(k, v)| svc.labels().get(k) == Some(v));
    assert!(
        selects(metrics_svc),
        "{selector:?} does not select {:?}",
        metrics_svc.labels()
    );
    assert!(
        !selects(turn_svc),
        "{selector:?} also selects the TURN Service"
    );
    let endpoints = spec["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let ports = metrics_svc.spec.as_ref().unwrap().ports.clone().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].port, 9641, "the example's metrics.port");
    assert_eq!(endpoints[0]["port"].as_str(), ports[0].name.as_deref());
    assert_eq!(endpoints[0]["path"], "/metrics");
}

fn sm_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &service_monitor_resource())
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|err| panic!("{} {ns}/{name}: {err}", K::kind(&())))
}

fn owned_by_tc(tc: &TurnCluster, obj: &impl kube::Resource) -> bool {
    operator::build::owned_by(obj.meta(), tc.metadata.uid.as_deref().unwrap())
}

/// Changes the TurnCluster without changing its spec, which makes the operator reconcile it.
async fn touch(tcs: &Api<TurnCluster>, value: &str) {
    tcs.patch(
        TC,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"test/touched": value}}})),
    )
    .await
    .unwrap();
}

/// (reason, note) of the Warning events about the TurnCluster in `ns`.
async fn warnings(client: &Client, ns: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(TC)
        })
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

fn sm_writes(operator: &Operator, operation: &str) -> u64 {
    operator
        .metrics
        .writes
        .with_label_values(&["ServiceMonitor", operation])
        .get()
}

/// Waits until no reconcile is running and none has finished for a second; returns how many
/// have finished.
async fn settled(operator: &Operator) -> u64 {
    let m = &operator.metrics;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = m.duration.get_sample_count();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let finished = m.duration.get_sample_count();
        if finished == last && m.reconciles.get() == finished {
            return finished;
        }
        assert!(
            Instant::now() < deadline,
            "the operator idle: not within 30s"
        );
        last = finished;
    }
}

/// Every reconcile failure the operator counted, whatever the reason.
fn failures(operator: &Operator) -> f64 {
    operator
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("xdpturn_operator_reconcile_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
