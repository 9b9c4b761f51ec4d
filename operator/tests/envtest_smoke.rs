//! The TurnCluster CRD against a real kube-apiserver (see tests/envtest): the generated YAML
//! installs with kubectl, the schema defaults and validates, status is its own subresource, the
//! printer columns show what the operator writes, and objects a TurnCluster owns are collected
//! when it goes.
//!
//! Needs XDPTURN_ENVTEST_BIN (`cargo xtask envtest`; `cargo xtask test` sets it).

#![allow(clippy::unwrap_used)]

mod envtest;

use std::time::{Duration, Instant};

use api::TurnCluster;
use envtest::{CRD_NAME, TestCluster, eventually};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;

const NAMESPACE: &str = "default";

/// A TurnCluster as a user writes it: no listeners, so the CRD's default applies.
const TURNCLUSTER_YAML: &str = "
apiVersion: xdpturn.io/v1alpha1
kind: TurnCluster
metadata:
  name: smoke
spec:
  realm: example.org
";

/// One the schema rejects: a port above 65535.
const INVALID_YAML: &str = "
apiVersion: xdpturn.io/v1alpha1
kind: TurnCluster
metadata:
  name: invalid
spec:
  realm: example.org
  listeners:
  - protocol: UDP
    port: 70000
";

fn turnclusters(client: Client) -> Api<TurnCluster> {
    Api::namespaced(client, NAMESPACE)
}

#[tokio::test]
async fn turncluster_crd_against_a_real_api_server() {
    let cluster = TestCluster::start().await;
    println!(
        "envtest: etcd + kube-apiserver + kube-controller-manager ready in {:.2}s ({})",
        cluster.startup_time().as_secs_f64(),
        cluster.server()
    );
    let client = cluster.client();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.20.2");

    let t = Instant::now();
    let out = cluster.install_crd();
    assert!(out.contains(CRD_NAME), "kubectl apply said: {out}");
    println!(
        "envtest: CRD applied and Established in {:.2}s",
        t.elapsed().as_secs_f64()
    );

    // Create from YAML as a user would, untyped, so nothing client-side fills in defaults.
    let gvk = GroupVersionKind::gvk("xdpturn.io", "v1alpha1", "TurnCluster");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "turnclusters");
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let obj: DynamicObject = serde_yaml::from_str(TURNCLUSTER_YAML).unwrap();
    let created = dynamic.create(&PostParams::default(), &obj).await.unwrap();
    let protocols: Vec<&str> = created.data["spec"]["listeners"]
        .as_array()
        .expect("the API server applies the CRD's default listeners")
        .iter()
        .filter_map(|l| l["protocol"].as_str())
        .collect();
    assert_eq!(protocols, ["UDP", "TCP"]);

    // Read back, typed.
    let api = turnclusters(client.clone());
    let tc = api.get("smoke").await.unwrap();
    assert_eq!(tc.spec.realm, "example.org");
    assert_eq!(tc.spec.listeners.len(), 2);
    assert_eq!(tc.status, None);
    assert_eq!(tc.meta().generation, Some(1));

    // The schema rejects what it can express.
    let invalid: DynamicObject = serde_yaml::from_str(INVALID_YAML).unwrap();
    let err = dynamic
        .create(&PostParams::default(), &invalid)
        .await
        .unwrap_err();
    // 1.20 names the field without the index: `spec.listeners.port`.
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec.listeners.port")
                    && status.message.contains("less than or equal to 65535"),
                "unexpected message: {}",
                status.message
            );
        }
        other => panic!("expected 422 Invalid, got {other}"),
    }

    // Status through the status subresource, as the operator writes it. Fields the schema does
    // not have are pruned by the API server, not refused.
    let status = json!({
        "status": {
            "observedGeneration": 1,
            "readyRelays": 2,
            "desiredRelays": 2,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "RelaysReady",
                "message": "2 of 2 relays ready", "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1
            }],
            "endpoints": ["203.0.113.7"],
            "iceServers": [{
                "urls": ["turn:203.0.113.7:3478?transport=udp", "turn:203.0.113.7:3478?transport=tcp"]
            }]
        }
    });
    let patched = api
        .patch_status("smoke", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let st = patched.status.clone().unwrap();
    assert_eq!(st.ready_relays, Some(2));
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.conditions.len(), 1);
    assert_eq!(st.conditions[0].type_, "Ready");
    assert_eq!(st.ice_servers[0].urls.len(), 2);
    assert_eq!(
        patched.meta().generation,
        Some(1),
        "a status write does not bump the generation"
    );

    // The main resource ignores status; a spec change bumps the generation.
    let spec_patch = json!({"spec": {"realm": "example.net"}, "status": {"readyRelays": 99}});
    let after = api
        .patch("smoke", &PatchParams::default(), &Patch::Merge(&spec_patch))
        .await
        .unwrap();
    assert_eq!(after.spec.realm, "example.net");
    assert_eq!(after.status.as_ref().unwrap().ready_relays, Some(2));
    assert_eq!(after.meta().generation, Some(2));

    // The printer columns, as `kubectl get` shows them (server-side printing): the ones the
    // generated CRD declares, with the values the status above gives them.
    let columns = printer_columns();
    let table = cluster.kubectl_ok(&["get", "turnclusters", "-n", NAMESPACE]);
    println!("envtest: kubectl get turnclusters:\n{table}");
    let expected: Vec<String> = std::iter::once("NAME".to_owned())
        .chain(
            columns
                .iter()
                .filter(|(_, priority)| *priority == 0)
                .map(|(name, _)| name.to_uppercase()),
        )
        .collect();
    check_row(&table, &expected);
    let wide = cluster.kubectl_ok(&["get", "turnclusters", "-n", NAMESPACE, "-o", "wide"]);
    println!("envtest: kubectl get turnclusters -o wide:\n{wide}");
    let expected: Vec<String> = std::iter::once("NAME".to_owned())
        .chain(columns.iter().map(|(name, _)| name.to_uppercase()))
        .collect();
    check_row(&wide, &expected);

    // The short name works too.
    let short = cluster.kubectl_ok(&["get", "tc", "smoke", "-o", "name"]);
    assert_eq!(short.trim(), "turncluster.xdpturn.io/smoke");
}

/// The printer columns the generated CRD declares: (name, priority), in order.
fn printer_columns() -> Vec<(String, i32)> {
    let path = envtest::workspace_root()
        .join("crds")
        .join(format!("{CRD_NAME}.yaml"));
    let yaml = std::fs::read_to_string(&path).unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
    crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.priority.unwrap_or(0)))
        .collect()
}

/// Checks a `kubectl get` table: the header is `expected`, and the one row shows what the
/// status patch wrote, column by column.
fn check_row(table: &str, expected: &[String]) {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, expected, "columns of:\n{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row.len(), header.len(), "one value per column in:\n{table}");
    for (column, value) in header.iter().zip(&row) {
        match *column {
            "NAME" => assert_eq!(*value, "smoke"),
            "READY" => assert_eq!(*value, "True"),
            "RELAYS" => assert_eq!(*value, "2"),
            "REASON" => assert_eq!(*value, "RelaysReady"),
            "ENDPOINTS" => assert!(value.contains("203.0.113.7"), "ENDPOINTS is {value}"),
            "AGE" => assert!(
                value.ends_with('s') || value.ends_with('m'),
                "AGE is {value}"
            ),
            other => panic!("column {other} has no expectation here; add one"),
        }
    }
}

#[tokio::test]
async fn objects_owned_by_a_turncluster_are_garbage_collected() {
    let cluster = TestCluster::start().await;
    println!(
        "envtest: cluster ready in {:.2}s",
        cluster.startup_time().as_secs_f64()
    );
    cluster.install_crd();
    let client = cluster.client();
    let api = turnclusters(client.clone());
    let tc: TurnCluster = serde_yaml::from_str(TURNCLUSTER_YAML).unwrap();
    let tc = api.create(&PostParams::default(), &tc).await.unwrap();

    // What the operator will render: a ConfigMap owned (controller: true) by the TurnCluster.
    let owner = tc.controller_owner_ref(&()).unwrap();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("smoke-relay-config".to_owned());
    cm.metadata.owner_references = Some(vec![owner]);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    config_maps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let t = Instant::now();
    api.delete(&tc.name_any(), &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "the owned ConfigMap is garbage collected",
        Duration::from_secs(90),
        || async {
            match config_maps.get_opt("smoke-relay-config").await {
                Ok(None) => Some(()),
                _ => None,
            }
        },
    )
    .await;
    println!(
        "envtest: kube-controller-manager collected the owned ConfigMap {:.2}s after the delete",
        t.elapsed().as_secs_f64()
    );
}
