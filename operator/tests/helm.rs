//! The chart rendered and linted by Helm itself, and what it renders applied to a real
//! Kubernetes 1.20 API server (tests/envtest) with server-side dry-run.
//!
//! Helm here is Helm v4's own Go library (the engine `helm template` and `helm lint` run),
//! which the PyPI wheel `helm-python-sdk` bundles as `libhelm_c` and drives with ctypes; no
//! helm binary is published in the registries we reach, but that wheel is, and `cargo xtask
//! test` installs it. [`HELM_DRIVER`] is the few lines of Python that call it the way the CLI
//! does: `helm template <release> charts/xdpturn --namespace <ns> -f <values>` (templates
//! rendered as for an install, NOTES.txt left out, `crds/` alongside as `--include-crds` puts
//! them) and `helm lint --strict --kube-version v1.20.2 -f <values>`.
//!
//! For default values and for values that turn every optional part of the templates on (and
//! off), the rendered objects are applied with `kubectl apply --server-side --dry-run=server`
//! (the kubectl built with the API server): admission and the API server's validation run, and
//! nothing is stored. A broken object is refused the same way, so the dry run is a check.
//! The chart's CRD, installed for real, then accepts the example TurnCluster and its XDP and
//! Deployment variants.
//!
//! The Grafana dashboard ConfigMap is rendered only when asked for, with the label Grafana's
//! sidecar looks for, and holds the chart's dashboard with a query in every panel.
//!
//! Needs XDPTURN_ENVTEST_BIN (`cargo xtask envtest`) and `helm-python-sdk` for `python3`.

#![allow(clippy::unwrap_used)]

mod envtest;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use envtest::{Options, TestCluster};
use serde_json::{Value as Json, json};
use serde_yaml::Value;

const RELEASE: &str = "xdpturn";
const NAMESPACE: &str = "xdpturn-system";
/// The Kubernetes version lint checks against: the oldest the chart supports, the one envtest
/// runs.
const KUBE_VERSION: &str = "v1.20.2";
const PIP_PACKAGE: &str = "helm-python-sdk";

/// Reads `{"chart", "kube_version", "cases": [{"release", "namespace", "values"}]}` on stdin;
/// writes `{"helm", "crds": [yaml], "cases": [{"manifests": {template: yaml}, "lint"} or
/// {"error"}]}` on stdout.
const HELM_DRIVER: &str = r#"
import json, sys
import helm_python as helm

req = json.load(sys.stdin)
out = {"helm": helm.helm_sdk_version(), "cases": []}
with helm.Chart.load(req["chart"]) as chart:
    out["crds"] = [c["data"] for c in chart.crds]
    for case in req["cases"]:
        try:
            manifests = chart.render(case["values"], name=case["release"],
                                     namespace=case["namespace"], is_install=True)
        except helm.HelmError as e:
            out["cases"].append({"error": str(e)})
            continue
        lint = helm.lint(req["chart"], case["values"], strict=True,
                         namespace=case["namespace"], kube_version=req["kube_version"])
        out["cases"].append({"manifests": manifests, "lint": lint})
json.dump(out, sys.stdout)
"#;

fn chart() -> PathBuf {
    envtest::workspace_root().join("charts/xdpturn")
}

/// What Helm made of one set of values.
#[derive(Debug)]
enum Rendered {
    /// The rendered objects (templates only) and the lint report.
    Objects { objects: Vec<Value>, lint: Json },
    /// Helm refused to render, saying this.
    Error(String),
}

/// Runs [`HELM_DRIVER`] on the chart for each of `values`: the chart's CRDs and what Helm
/// rendered for each.
fn helm(values: &[Json]) -> (String, Vec<Value>, Vec<Rendered>) {
    let cases: Vec<Json> = values
        .iter()
        .map(|v| json!({"release": RELEASE, "namespace": NAMESPACE, "values": v}))
        .collect();
    let request = json!({
        "chart": chart().to_str().unwrap(),
        "kube_version": KUBE_VERSION,
        "cases": cases,
    });
    let mut child = Command::new("python3")
        .args(["-c", HELM_DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running python3: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'helm_python'"),
        "Helm's Go library is not installed for python3: `cargo xtask test` installs it (pip \
         package {PIP_PACKAGE})"
    );
    assert!(out.status.success(), "the Helm driver failed:\n{stderr}");
    let answer: Json = serde_json::from_slice(&out.stdout).unwrap();
    let crds = answer["crds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|y| documents(y.as_str().unwrap()))
        .collect();
    let rendered = answer["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            if let Some(err) = case.get("error") {
                return Rendered::Error(err.as_str().unwrap().to_owned());
            }
            let manifests = case["manifests"].as_object().unwrap();
            let objects = manifests
                .iter()
                // `helm template` prints neither NOTES.txt nor partials.
                .filter(|(name, _)| !name.ends_with("NOTES.txt"))
                .flat_map(|(_, text)| documents(text.as_str().unwrap()))
                .collect();
            Rendered::Objects {
                objects,
                lint: case["lint"].clone(),
            }
        })
        .collect();
    (answer["helm"].as_str().unwrap().to_owned(), crds, rendered)
}

/// The non-empty YAML documents in `text`.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn objects(rendered: &Rendered) -> &[Value] {
    match rendered {
        Rendered::Objects { objects, .. } => objects,
        Rendered::Error(err) => panic!("Helm did not render: {err}"),
    }
}

/// `Kind/name` of each object.
fn kinds_and_names(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// Lint found nothing above INFO (severity 1) and no error, strict as it was.
fn assert_lint_clean(what: &str, rendered: &Rendered) {
    let Rendered::Objects { lint, .. } = rendered else {
        panic!("{what}: Helm did not render: {rendered:?}");
    };
    assert_eq!(lint["total_charts_linted"], 1, "{what}: {lint}");
    assert!(
        lint["errors"].as_array().unwrap().is_empty(),
        "{what}: helm lint: {lint}"
    );
    let findings: Vec<&Json> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap() > 1)
        .collect();
    assert!(findings.is_empty(), "{what}: helm lint: {findings:?}");
}

/// The object of `kind` in `objects`.
fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// Writes `objects` as one YAML stream and applies it with server-side dry-run; returns
/// kubectl's output (`kind.group/name serverside-applied (server dry run)` per object), or its
/// error if the API server refused any.
fn dry_run(
    cluster: &TestCluster,
    dir: &Path,
    name: &str,
    objects: &[Value],
) -> Result<String, String> {
    let file = dir.join(format!("{name}.yaml"));
    let stream: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect();
    std::fs::write(&file, stream.join("---\n")).unwrap();
    let out = cluster
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=helm",
        ])
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Every object was accepted, by the server's dry run: one line each.
fn assert_accepted(what: &str, output: &str, objects: &[Value]) {
    for o in objects {
        let name = o["metadata"]["name"].as_str().unwrap();
        let kind = o["kind"].as_str().unwrap().to_lowercase();
        assert!(
            output.lines().any(|l| l.starts_with(&kind)
                && l.contains(&format!("/{name} "))
                && l.ends_with("serverside-applied (server dry run)")),
            "{what}: {kind}/{name} not applied:\n{output}"
        );
    }
    assert_eq!(output.lines().count(), objects.len(), "{what}:\n{output}");
}

/// Values that turn every optional part of the templates on.
fn everything_on() -> Json {
    json!({
        "operator": {
            "image": {"repository": "xdpturn/xdpturn-operator", "tag": "0.1.0-test",
                      "pullPolicy": "Always"},
            "relayImage": "xdpturn/xdpturn-relay:0.1.0-test",
            "replicas": 2,
            "leaderElection": true,
            "watchNamespace": "turn",
            "resyncSeconds": 120,
            "logLevel": "info,operator=debug",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "1", "memory": "512Mi"}},
            "metricsPort": 9090,
            "metricsService": {"enabled": true,
                               "annotations": {"prometheus.io/scrape": "true"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "turn",
                             "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
            "podAnnotations": {"prometheus.io/port": "9090"},
        },
        "imagePullSecrets": [{"name": "pull-secret"}],
        "serviceAccount": {"create": true, "name": "turn-operator",
                           "annotations": {"example.org/owner": "turn"}},
        "rbac": {"create": true},
        "grafana": {"dashboard": {"enabled": true, "labels": {"team": "turn"},
                                  "annotations": {"grafana_folder": "TURN"}}},
    })
}

/// Values that turn every optional part off: an existing ServiceAccount, no RBAC, no leader
/// election, no metrics Service.
fn everything_off() -> Json {
    json!({
        "operator": {"leaderElection": false, "metricsService": {"enabled": false}},
        "serviceAccount": {"create": false, "name": "existing-operator"},
        "rbac": {"create": false},
    })
}

#[test]
fn helm_renders_what_kubernetes_1_20_accepts() {
    let started = Instant::now();
    let (version, crds, rendered) = helm(&[
        json!({}),
        everything_on(),
        everything_off(),
        json!({"serviceAccount": {"create": false}}),
    ]);
    println!(
        "helm: Helm {version} (Go library) rendered and linted 4 value sets in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let [defaults, on, off, no_name] = &rendered[..] else {
        panic!("{rendered:?}")
    };

    // What each set of values renders.
    let operator = "xdpturn-operator";
    assert_eq!(
        kinds_and_names(objects(defaults)),
        BTreeSet::from([
            format!("ClusterRole/{operator}"),
            format!("ClusterRoleBinding/{operator}"),
            format!("Role/{operator}-leader-election"),
            format!("RoleBinding/{operator}-leader-election"),
            format!("ServiceAccount/{operator}"),
            format!("Service/{operator}-metrics"),
            format!("Deployment/{operator}"),
        ])
    );
    assert_eq!(
        kinds_and_names(objects(off)),
        BTreeSet::from([format!("Deployment/{operator}")])
    );
    let deployment = find(objects(off), "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "existing-operator"
    );
    let on_objects = objects(on);
    assert_eq!(
        find(on_objects, "ServiceAccount")["metadata"]["name"],
        "turn-operator"
    );
    let pod = &find(on_objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "turn-operator");
    let env: Vec<(String, String)> = pod["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    for (name, value) in [
        ("XDPTURN_WATCH_NAMESPACE", "turn"),
        ("XDPTURN_RELAY_IMAGE", "xdpturn/xdpturn-relay:0.1.0-test"),
        ("XDPTURN_METRICS_ADDR", "0.0.0.0:9090"),
        ("XDPTURN_RESYNC_SECONDS", "120"),
    ] {
        assert!(
            env.contains(&(name.into(), value.into())),
            "{name}={value} not in {env:?}"
        );
    }
    for binding in on_objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
    {
        assert_eq!(
            binding["subjects"][0]["name"], "turn-operator",
            "{binding:?}"
        );
        assert_eq!(
            binding["subjects"][0]["namespace"], NAMESPACE,
            "{binding:?}"
        );
    }
    // `required` does its job: no ServiceAccount and no name is refused, saying why.
    match no_name {
        Rendered::Error(err) => assert!(
            err.contains("serviceAccount.name is required when serviceAccount.create is false"),
            "{err}"
        ),
        Rendered::Objects { .. } => panic!("rendered without a ServiceAccount name"),
    }
    for (what, r) in [
        ("defaults", defaults),
        ("everything on", on),
        ("everything off", off),
    ] {
        assert_lint_clean(what, r);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime.block_on(TestCluster::start_with(Options {
        controller_manager: false,
    }));
    let dir = cluster.dir().to_owned();
    // `helm install --create-namespace`: the release namespace exists before its objects.
    cluster.kubectl_ok(&["create", "namespace", NAMESPACE]);

    // `helm install` applies crds/ first.
    let applied = dry_run(&cluster, &dir, "crds", &crds).unwrap_or_else(|e| panic!("{e}"));
    assert_accepted("crds/", &applied, &crds);
    for (what, r) in [
        ("defaults", defaults),
        ("everything on", on),
        ("everything off", off),
    ] {
        let objects = objects(r);
        let out = dry_run(&cluster, &dir, &what.replace(' ', "-"), objects)
            .unwrap_or_else(|e| panic!("{what}: the API server refused the chart:\n{e}"));
        assert_accepted(what, &out, objects);
        println!("helm: {what}: {} objects accepted:\n{out}", objects.len());
    }
    // A dry run stores nothing.
    let stored = cluster.kubectl_ok(&[
        "get",
        "deployments,serviceaccounts,services,roles,rolebindings",
        "-n",
        NAMESPACE,
        "-o",
        "name",
    ]);
    assert!(!stored.contains("xdpturn"), "{stored}");
    assert!(
        !cluster
            .kubectl_ok(&["get", "crd", "-o", "name"])
            .contains("turnclusters"),
        "the CRD was stored by a dry run"
    );

    // The dry run validates: an invalid Deployment (a port out of range) is refused.
    let mut broken = objects(defaults).to_vec();
    for o in &mut broken {
        if o["kind"] == "Deployment" {
            o["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
                Value::from(70000);
        }
    }
    let err = dry_run(&cluster, &dir, "broken", &broken).unwrap_err();
    assert!(err.contains("containerPort"), "{err}");

    // The chart's CRD, installed, accepts the example and its XDP and Deployment variants.
    cluster.kubectl_ok(&["apply", "-f", dir.join("crds.yaml").to_str().unwrap()]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/turnclusters.xdpturn.io",
    ]);
    let example =
        std::fs::read_to_string(envtest::workspace_root().join("examples/turncluster.yaml"))
            .unwrap();
    let example = documents(&example);
    let mut variants = example.clone();
    for (name, patch) in [
        (
            "turn-xdp",
            json!({"xdp": {"enabled": true, "mode": "native", "interfaces": ["eth0"],
                           "maxChannels": 131072}}),
        ),
        (
            "turn-deployment",
            json!({"placement": {"mode": "Deployment", "replicas": 3},
                   "publicAddress": {"policy": "LoadBalancer"},
                   "listeners": [{"protocol": "UDP", "port": 3478}]}),
        ),
    ] {
        let mut tc = find(&example, "TurnCluster").clone();
        tc["metadata"]["name"] = Value::from(name);
        let mut spec: Json = serde_json::to_value(&tc["spec"]).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            spec[k] = v.clone();
        }
        if spec["publicAddress"]["policy"] != "Explicit" {
            spec["publicAddress"]
                .as_object_mut()
                .unwrap()
                .remove("addresses");
        }
        tc["spec"] = serde_yaml::to_value(&spec).unwrap();
        variants.push(tc);
    }
    let out = dry_run(&cluster, &dir, "turnclusters", &variants)
        .unwrap_or_else(|e| panic!("the chart's CRD refused a TurnCluster:\n{e}"));
    assert_accepted("the example and its variants", &out, &variants);
    println!("helm: done in {:.2}s", started.elapsed().as_secs_f64());
}

/// The panels of a Grafana dashboard, those inside rows included (a collapsed row holds its
/// panels), without the rows themselves.
fn dashboard_panels(dashboard: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn grafana_dashboard_is_off_by_default_and_labelled_when_on() {
    let (_, _, rendered) = helm(&[
        json!({}),
        json!({"grafana": {"dashboard": {"enabled": true}}}),
        json!({"grafana": {"dashboard": {"enabled": true, "label": "example.org/dashboard",
                                         "labelValue": "xdpturn", "namespace": "monitoring",
                                         "labels": {"team": "turn"},
                                         "annotations": {"grafana_folder": "TURN"}}}}),
    ]);
    let [defaults, on, custom] = &rendered[..] else {
        panic!("{rendered:?}")
    };
    assert!(
        !objects(defaults).iter().any(|o| o["kind"] == "ConfigMap"),
        "a ConfigMap rendered by default: {:?}",
        kinds_and_names(objects(defaults))
    );
    assert_lint_clean("dashboard on", on);
    assert_lint_clean("dashboard on, custom label", custom);

    let file = std::fs::read_to_string(chart().join("files/dashboards/xdpturn.json")).unwrap();
    let file: Json = serde_json::from_str(&file).unwrap();
    for (what, r, label, value, namespace) in [
        ("on", on, "grafana_dashboard", "1", NAMESPACE),
        (
            "custom",
            custom,
            "example.org/dashboard",
            "xdpturn",
            "monitoring",
        ),
    ] {
        let maps: Vec<&Value> = objects(r)
            .iter()
            .filter(|o| o["kind"] == "ConfigMap")
            .collect();
        let [cm] = &maps[..] else {
            panic!("{what}: expected one ConfigMap, got {maps:?}")
        };
        let meta = &cm["metadata"];
        assert_eq!(meta["name"], "xdpturn-grafana-dashboard", "{what}");
        assert_eq!(meta["namespace"], namespace, "{what}");
        assert_eq!(meta["labels"][label], value, "{what}: {meta:?}");
        assert_eq!(meta["labels"]["app.kubernetes.io/instance"], RELEASE);
        let data = cm["data"].as_mapping().unwrap();
        assert_eq!(data.len(), 1, "{what}: one dashboard");
        let text = cm["data"]["xdpturn.json"].as_str().unwrap();
        let dashboard: Json = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{what}: the dashboard is not JSON: {e}"));
        assert_eq!(
            dashboard, file,
            "{what}: the ConfigMap holds the chart's file"
        );
        let panels = dashboard_panels(&dashboard);
        assert!(panels.len() >= 20, "{what}: {} panels", panels.len());
        for p in panels {
            let title = p["title"].as_str().unwrap();
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}"));
            assert!(!targets.is_empty(), "{what}: {title} has no query");
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{what}: {title}: empty expr");
            }
        }
    }
    let meta = &find(objects(custom), "ConfigMap")["metadata"];
    assert_eq!(meta["labels"]["team"], "turn");
    assert_eq!(meta["annotations"]["grafana_folder"], "TURN");
}
