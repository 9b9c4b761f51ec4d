//! A real Kubernetes control plane for the operator's integration tests, started the way
//! controller-runtime's envtest does it: etcd, kube-apiserver and (optionally)
//! kube-controller-manager as plain processes on loopback, each test with its own.
//!
//! The binaries come from `cargo xtask envtest`, which builds them once into a cache and names
//! the directory in `XDPTURN_ENVTEST_BIN` (`cargo xtask test` sets it for `cargo test`). Without
//! them the harness fails with a message saying so; it never skips.
//!
//! ```ignore
//! mod envtest;
//!
//! #[tokio::test]
//! async fn something() {
//!     let cluster = envtest::TestCluster::start().await;
//!     let client = cluster.client();
//!     cluster.kubectl_ok(&["apply", "-f", "crds/"]);
//!     // ...
//! } // dropping the cluster stops its processes (by PID) and removes its temp dir
//! ```
//!
//! What runs, all on 127.0.0.1 and free ports, inside one temp dir:
//! - etcd with its data dir there;
//! - kube-apiserver with a serving certificate from a throwaway CA (openssl), a static token
//!   file whose one user is in `system:masters`, RBAC authorization, service-account keys (1.20
//!   requires them), the ServiceAccount admission plugin off (no token controller needed);
//! - kube-controller-manager with only the garbage collector and namespace controllers, so
//!   owned objects are collected and namespaces can be deleted.
//!
//! The processes run under `setpriv --pdeathsig KILL` when util-linux's setpriv is there, so
//! they die with the test thread even if the test binary is killed before `Drop` runs.
//! `XDPTURN_ENVTEST_KEEP=1` keeps the temp dir (logs, certificates, kubeconfig) for inspection.

#![allow(dead_code)] // every test binary uses a different part of the harness

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::Reporter;
use operator::controller::{self, Scope, Settings};
use operator::metrics::Metrics;
use tokio::sync::oneshot;

/// The directory holding kube-apiserver, kube-controller-manager, kubectl and etcd.
pub const BIN_ENV: &str = "XDPTURN_ENVTEST_BIN";
/// Set to keep the cluster's temp dir after the test.
pub const KEEP_ENV: &str = "XDPTURN_ENVTEST_KEEP";

const LOOPBACK: &str = "127.0.0.1";
/// How long etcd and the API server each get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Starts retried when a port picked as free was taken before the server bound it.
const ATTEMPTS: u32 = 3;

/// What to start besides etcd and kube-apiserver.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run kube-controller-manager (garbage collector and namespace controllers).
    pub controller_manager: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            controller_manager: true,
        }
    }
}

/// A running etcd + kube-apiserver (+ kube-controller-manager); stopped when dropped.
pub struct TestCluster {
    client: kube::Client,
    kubeconfig: PathBuf,
    server: String,
    bin: PathBuf,
    dir: PathBuf,
    processes: Vec<Process>,
    startup: Duration,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("server", &self.server)
            .field("kubeconfig", &self.kubeconfig)
            .field("processes", &self.processes)
            .field("startup", &self.startup)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl TestCluster {
    /// Starts etcd, kube-apiserver and kube-controller-manager; panics, saying why, if they
    /// cannot start.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// Starts with the given options; panics, saying why, if the cluster cannot start.
    pub async fn start_with(options: Options) -> Self {
        match Self::try_start(options).await {
            Ok(cluster) => cluster,
            Err(err) => panic!("envtest: {err}"),
        }
    }

    /// Starts with the given options.
    pub async fn try_start(options: Options) -> Result<Self, String> {
        let started = Instant::now();
        let bin = binaries(options.controller_manager)?;
        let dir = temp_dir()?;
        let mut cluster = Partial {
            dir,
            processes: Vec::new(),
        };
        let certs = cluster.certificates()?;

        let mut last_err = String::new();
        for attempt in 1..=ATTEMPTS {
            match cluster.control_plane(&bin, &certs).await {
                Ok((server, client)) => {
                    if options.controller_manager {
                        cluster.controller_manager(&bin, &certs.kubeconfig)?;
                    }
                    let dir = std::mem::take(&mut cluster.dir);
                    let processes = std::mem::take(&mut cluster.processes);
                    return Ok(Self {
                        client,
                        kubeconfig: certs.kubeconfig,
                        server,
                        bin,
                        dir,
                        processes,
                        startup: started.elapsed(),
                    });
                }
                Err(err) => {
                    cluster.stop();
                    let port_race = err.contains("address already in use");
                    last_err = err;
                    if !port_race {
                        break;
                    }
                    eprintln!("envtest: a port was taken (attempt {attempt}/{ATTEMPTS}); retrying");
                }
            }
        }
        Err(last_err)
    }

    /// A client authenticated as a cluster admin (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// How long [`TestCluster::start`] took, certificates included.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The cluster's temp dir: logs (`*.log`), certificates, kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kubectl --kubeconfig <admin> ...`, the kubectl built with the API server (same version),
    /// its discovery cache inside the cluster's temp dir. Run from the workspace root, so
    /// paths like `crds/` work.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .current_dir(workspace_root())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl with `args`; returns its stdout, panicking with its stderr if it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self
            .kubectl()
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("envtest: could not run kubectl: {err}"));
        if !out.status.success() {
            panic!(
                "envtest: `kubectl {}` failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last `lines` lines of a component's log (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        tail(&self.dir.join(format!("{component}.log")), lines)
    }

    /// Installs the TurnCluster CRD as a user would (`kubectl apply -f crds/`) and waits until
    /// the API server reports it Established; returns what `kubectl apply` said.
    pub fn install_crd(&self) -> String {
        let applied = self.kubectl_ok(&["apply", "-f", "crds/"]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{CRD_NAME}"),
        ]);
        applied
    }

    /// Creates namespace `name`, as the admin.
    pub async fn create_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.to_owned());
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|err| panic!("envtest: creating namespace {name}: {err}"));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let mut partial = Partial {
            dir: std::mem::take(&mut self.dir),
            processes: std::mem::take(&mut self.processes),
        };
        partial.stop();
        partial.remove_dir(std::thread::panicking());
    }
}

// ---------------------------------------------------------------------------------------------
// What the tests run against a cluster

/// The TurnCluster CRD's name.
pub const CRD_NAME: &str = "turnclusters.xdpturn.io";

/// A runtime for a test that runs the operator: two worker threads, and the operator's logs
/// with the test's output, filtered by RUST_LOG (e.g. RUST_LOG=operator=debug; by default its
/// warnings only: the client's errors while the harness waits for the API server are noise).
pub fn runtime() -> tokio::runtime::Runtime {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("operator=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("envtest: a tokio runtime: {err}"))
}

/// Polls `check` every 100 ms until it yields a value, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {}s",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator, running in this process (a task on the test's runtime) until stopped.
pub struct Operator {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    pub metrics: Arc<Metrics>,
}

impl Operator {
    /// Starts the operator's controller with `client`, over all namespaces; `instance` names it
    /// in the events it writes.
    pub fn start(client: kube::Client, instance: &str) -> Self {
        let metrics = Arc::new(Metrics::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(
            client,
            Scope::default(),
            Reporter {
                controller: "xdpturn-operator".into(),
                instance: Some(instance.into()),
            },
            metrics.clone(),
            Settings {
                default_image: "xdpturn/xdpturn-relay:envtest".into(),
                resync: Duration::from_secs(600),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop,
            task,
            metrics,
        }
    }

    /// Stops the controller and waits (at most 20 s) until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the controller stops")
            .unwrap_or_else(|err| panic!("the controller task: {err}"));
    }
}

/// The namespace the chart installs the operator into.
pub const OPERATOR_NS: &str = "xdpturn-system";
/// The operator's ServiceAccount, as the chart names it.
pub const OPERATOR_SA: &str = "xdpturn-operator";

/// Gives the operator's ServiceAccount (`OPERATOR_NS`/`OPERATOR_SA`, created here with its
/// namespace) exactly the chart's RBAC (charts/xdpturn/files/*.yaml), and returns a client
/// that is that account (the admin impersonating it).
pub async fn operator_client(cluster: &TestCluster) -> kube::Client {
    let admin = cluster.client();
    cluster.create_namespace(OPERATOR_NS).await;
    let create = "envtest: creating the operator's RBAC";
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), OPERATOR_NS);
    sas.create(
        &PostParams::default(),
        &ServiceAccount {
            metadata: named(OPERATOR_SA, Some(OPERATOR_NS)),
            ..ServiceAccount::default()
        },
    )
    .await
    .expect(create);
    let subject = || {
        vec![Subject {
            kind: "ServiceAccount".into(),
            name: OPERATOR_SA.into(),
            namespace: Some(OPERATOR_NS.into()),
            ..Subject::default()
        }]
    };
    let crs: Api<ClusterRole> = Api::all(admin.clone());
    crs.create(
        &PostParams::default(),
        &ClusterRole {
            metadata: named("xdpturn-operator", None),
            rules: Some(chart_rules("operator-rules.yaml")),
            ..ClusterRole::default()
        },
    )
    .await
    .expect(create);
    let crbs: Api<ClusterRoleBinding> = Api::all(admin.clone());
    crbs.create(
        &PostParams::default(),
        &ClusterRoleBinding {
            metadata: named("xdpturn-operator", None),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "xdpturn-operator".into(),
            },
            subjects: Some(subject()),
        },
    )
    .await
    .expect(create);
    let roles: Api<Role> = Api::namespaced(admin.clone(), OPERATOR_NS);
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: named("xdpturn-operator-leader-election", Some(OPERATOR_NS)),
                rules: Some(chart_rules("leader-election-rules.yaml")),
            },
        )
        .await
        .expect(create);
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), OPERATOR_NS);
    rbs.create(
        &PostParams::default(),
        &RoleBinding {
            metadata: named("xdpturn-operator-leader-election", Some(OPERATOR_NS)),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "xdpturn-operator-leader-election".into(),
            },
            subjects: Some(subject()),
        },
    )
    .await
    .expect(create);

    let kc = Kubeconfig::read_from(cluster.kubeconfig()).expect("envtest: the kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("envtest: the kubeconfig");
    config.auth_info.impersonate =
        Some(format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"));
    let client = kube::Client::try_from(config).expect("envtest: a client");
    // The binding is in force: the account may list TurnClusters but not read Secrets.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let err = secrets
        .list(&ListParams::default())
        .await
        .expect_err("the operator's ServiceAccount must not list Secrets");
    assert!(err.to_string().contains("forbidden"), "{err}");
    client
}

/// A rules file of the chart's (charts/xdpturn/files).
fn chart_rules(file: &str) -> Vec<PolicyRule> {
    let path = workspace_root().join("charts/xdpturn/files").join(file);
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("envtest: reading {}: {err}", path.display()));
    serde_yaml::from_str(&text)
        .unwrap_or_else(|err| panic!("envtest: parsing {}: {err}", path.display()))
}

fn named(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: ns.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

/// Paths of the files the control plane is started with.
#[derive(Debug)]
struct Certs {
    ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    service_account_key: PathBuf,
    service_account_pub: PathBuf,
    tokens: PathBuf,
    token: String,
    kubeconfig: PathBuf,
}

/// A cluster being started: whatever runs is stopped, and the temp dir removed, when it drops.
#[derive(Debug)]
struct Partial {
    dir: PathBuf,
    processes: Vec<Process>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        self.stop();
        self.remove_dir(true);
    }
}

impl Partial {
    /// Kills every process by its PID, newest first, and reaps it.
    fn stop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            if let Err(err) = p.child.kill() {
                // Already exited: reaping below is all that is left.
                if err.kind() != io::ErrorKind::InvalidInput {
                    eprintln!(
                        "envtest: could not kill {} (pid {}): {err}",
                        p.name,
                        p.child.id()
                    );
                }
            }
            let _ = p.child.wait();
        }
    }

    fn remove_dir(&mut self, failed: bool) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let dir = std::mem::take(&mut self.dir);
        if env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!("envtest: kept {} ({KEEP_ENV} is set)", dir.display());
            return;
        }
        if failed {
            eprintln!(
                "envtest: removing {} (logs included); set {KEEP_ENV}=1 to keep it",
                dir.display()
            );
        }
        if let Err(err) = fs::remove_dir_all(&dir) {
            eprintln!("envtest: could not remove {}: {err}", dir.display());
        }
    }

    /// A throwaway CA, the API server's serving certificate (127.0.0.1, localhost), the
    /// service-account signing key, the admin token, and the kubeconfig using them.
    fn certificates(&self) -> Result<Certs, String> {
        let dir = &self.dir;
        let path = |name: &str| dir.join(name);
        let ec_key = |out: &Path| {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &s(out),
            ])
        };
        let ca_key = path("ca.key");
        let ca = path("ca.crt");
        ec_key(&ca_key)?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &s(&ca_key),
            "-out",
            &s(&ca),
            "-days",
            "2",
            "-subj",
            "/CN=xdpturn-envtest-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])?;

        let serving_key = path("apiserver.key");
        let serving_csr = path("apiserver.csr");
        let serving_cert = path("apiserver.crt");
        let extensions = path("apiserver.ext");
        ec_key(&serving_key)?;
        openssl(&[
            "req",
            "-new",
            "-key",
            &s(&serving_key),
            "-out",
            &s(&serving_csr),
            "-subj",
            "/CN=kube-apiserver",
        ])?;
        write(
            &extensions,
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
             DNS:kubernetes.default.svc,IP:10.0.0.1\n",
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&serving_csr),
            "-CA",
            &s(&ca),
            "-CAkey",
            &s(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &s(&extensions),
            "-out",
            &s(&serving_cert),
        ])?;

        // 1.20 reads public keys from `PUBLIC KEY` files (or legacy private-key PEM types), not
        // from PKCS#8 `PRIVATE KEY`: hand it the public half separately.
        let service_account_key = path("service-account.key");
        let service_account_pub = path("service-account.pub");
        ec_key(&service_account_key)?;
        openssl(&[
            "pkey",
            "-in",
            &s(&service_account_key),
            "-pubout",
            "-out",
            &s(&service_account_pub),
        ])?;

        let token = random_hex(16)?;
        let tokens = path("tokens.csv");
        write(
            &tokens,
            &format!("{token},envtest-admin,envtest-admin,\"system:masters\"\n"),
        )?;
        Ok(Certs {
            ca,
            serving_cert,
            serving_key,
            service_account_key,
            service_account_pub,
            tokens,
            token,
            kubeconfig: path("kubeconfig"),
        })
    }

    /// etcd, then kube-apiserver, each waited for; returns the server URL and an admin client.
    async fn control_plane(
        &mut self,
        bin: &Path,
        certs: &Certs,
    ) -> Result<(String, kube::Client), String> {
        // Held until just before the servers start, so the three ports differ.
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let apiserver = free_port()?;
        let (client_port, peer_port, secure_port) = (
            port_of(&etcd_client)?,
            port_of(&etcd_peer)?,
            port_of(&apiserver)?,
        );
        let etcd_url = format!("http://{LOOPBACK}:{client_port}");
        let peer_url = format!("http://{LOOPBACK}:{peer_port}");
        let server = format!("https://{LOOPBACK}:{secure_port}");

        let data_dir = self.dir.join("etcd-data");
        if data_dir.exists() {
            fs::remove_dir_all(&data_dir)
                .map_err(|e| format!("removing {}: {e}", data_dir.display()))?;
        }
        drop((etcd_client, etcd_peer));
        self.spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                "--name=envtest".to_owned(),
                format!("--data-dir={}", s(&data_dir)),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=envtest={peer_url}"),
                "--initial-cluster-state=new".to_owned(),
            ],
        )?;
        self.wait_for_etcd(client_port).await?;

        write(
            &certs.kubeconfig,
            &kubeconfig_yaml(&server, &certs.ca, &certs.token),
        )?;
        drop(apiserver);
        self.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={LOOPBACK}"),
                format!("--advertise-address={LOOPBACK}"),
                format!("--secure-port={secure_port}"),
                format!("--cert-dir={}", s(&self.dir.join("apiserver-certs"))),
                format!("--tls-cert-file={}", s(&certs.serving_cert)),
                format!("--tls-private-key-file={}", s(&certs.serving_key)),
                format!("--token-auth-file={}", s(&certs.tokens)),
                "--authorization-mode=RBAC".to_owned(),
                format!(
                    "--service-account-key-file={}",
                    s(&certs.service_account_pub)
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    s(&certs.service_account_key)
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
                "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
                "--disable-admission-plugins=ServiceAccount".to_owned(),
                "--allow-privileged=true".to_owned(),
            ],
        )?;
        let client = self.wait_for_apiserver(&certs.kubeconfig).await?;
        Ok((server, client))
    }

    fn controller_manager(&mut self, bin: &Path, kubeconfig: &Path) -> Result<(), String> {
        self.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", s(kubeconfig)),
                "--controllers=garbagecollector,namespace".to_owned(),
                "--leader-elect=false".to_owned(),
                // No serving at all: nothing to health-check it on, nothing to collide.
                "--port=0".to_owned(),
                "--secure-port=0".to_owned(),
            ],
        )
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[String]) -> Result<(), String> {
        let log = self.dir.join(format!("{name}.log"));
        let file =
            fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err_file = file
            .try_clone()
            .map_err(|e| format!("cloning {}: {e}", log.display()))?;
        let mut cmd = if pdeathsig_available() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file);
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", program.display()))?;
        self.processes.push(Process { name, child, log });
        Ok(())
    }

    /// Fails with the log's tail if a process has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.processes {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) while starting; the end of {}:\n{}",
                    p.name,
                    p.log.display(),
                    tail(&p.log, 30)
                ));
            }
        }
        Ok(())
    }

    fn timed_out(&self, name: &str) -> String {
        let log = self.dir.join(format!("{name}.log"));
        format!(
            "{name} was not ready after {}s; the end of {}:\n{}",
            READY_TIMEOUT.as_secs(),
            log.display(),
            tail(&log, 30)
        )
    }

    /// Polls etcd's /health over plain HTTP until it reports healthy.
    async fn wait_for_etcd(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            self.check_alive()?;
            if http_get(addr, "/health").is_some_and(|body| body.contains("\"health\":\"true\"")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.timed_out("etcd"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the API server's /readyz with the admin client until it answers `ok`.
    async fn wait_for_apiserver(&mut self, kubeconfig: &Path) -> Result<kube::Client, String> {
        let config = Kubeconfig::read_from(kubeconfig)
            .map_err(|e| format!("reading {}: {e}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("loading {}: {e}", kubeconfig.display()))?;
        let client = kube::Client::try_from(config).map_err(|e| format!("kube client: {e}"))?;
        // `Request::get` builds a plain GET of `<path>/<name>`: here `/readyz`.
        let readyz = || {
            kube::core::Request::new("")
                .get("readyz", &Default::default())
                .map_err(|e| format!("building the /readyz request: {e}"))
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let last = match client.request_text(readyz()?).await {
                Ok(body) if body.trim() == "ok" => return Ok(client),
                Ok(body) => body,
                Err(err) => err.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "{}\nlast /readyz answer: {last}",
                    self.timed_out("kube-apiserver")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The binaries directory from XDPTURN_ENVTEST_BIN, with everything needed in it.
fn binaries(controller_manager: bool) -> Result<PathBuf, String> {
    const HOW: &str = "run `cargo xtask envtest` (it builds kube-apiserver, \
        kube-controller-manager and kubectl once, links etcd, and prints the directory), then \
        `export XDPTURN_ENVTEST_BIN=<that directory>` or `eval \"$(cargo xtask envtest \
        --print-env)\"`; `cargo xtask test` does both for `cargo test`";
    let Some(dir) = env::var_os(BIN_ENV).filter(|d| !d.is_empty()) else {
        return Err(format!(
            "{BIN_ENV} is not set, so there is no kube-apiserver/etcd to test against: {HOW}"
        ));
    };
    let dir = PathBuf::from(dir);
    let mut needed = vec!["etcd", "kube-apiserver", "kubectl"];
    if controller_manager {
        needed.push("kube-controller-manager");
    }
    let missing: Vec<&str> = needed
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(format!(
            "{BIN_ENV}={} lacks {}: {HOW}",
            dir.display(),
            missing.join(", ")
        ))
    }
}

/// A new, empty directory for one cluster.
fn temp_dir() -> Result<PathBuf, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = env::temp_dir().join(format!(
        "xdpturn-envtest-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Whether util-linux's `setpriv --pdeathsig` can be used, checked once.
fn pdeathsig_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn free_port() -> Result<TcpListener, String> {
    TcpListener::bind((LOOPBACK, 0)).map_err(|e| format!("finding a free loopback port: {e}"))
}

fn port_of(listener: &TcpListener) -> Result<u16, String> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("reading a listener's port: {e}"))
}

/// A plain HTTP/1.0 GET; the body, or `None` on any failure.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}

fn kubeconfig_yaml(server: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: envtest-admin
  user:
    token: {token}
contexts:
- name: envtest
  context:
    cluster: envtest
    user: envtest-admin
    namespace: default
current-context: envtest
",
        ca = s(ca)
    )
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let out: Output = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run openssl (install the openssl package): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`openssl {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(buf.iter().fold(String::new(), |mut acc, b| {
        let _ = write!(acc, "{b:02x}");
        acc
    }))
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Paths as the strings command lines and the kubeconfig need (temp paths are UTF-8 here).
fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The workspace root: the parent of the operator crate.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
