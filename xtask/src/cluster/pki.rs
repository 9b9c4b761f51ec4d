//! The test cluster's credentials: a throwaway CA and the API server's serving certificate
//! (openssl), the service-account signing key, one static admin token that every component and
//! the tests use, and the kubeconfig naming them.
//!
//! One identity for everything is a test cluster's simplification: the components' own
//! least-privilege identities are Kubernetes' business, not what the tests prove.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::cmd::Cmd;

/// The files [`create`] writes into the cluster's pki/ directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
    pub tokens: PathBuf,
    pub token: String,
}

impl Pki {
    fn at(dir: &Path, token: String) -> Self {
        Self {
            ca: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_pub: dir.join("service-account.pub"),
            tokens: dir.join("tokens.csv"),
            token,
        }
    }
}

/// Writes a fresh CA, the API server's certificate for `node_ip`, the in-cluster service
/// address and names, the service-account keys and the admin token into `dir`.
pub fn create(dir: &Path, node_ip: Ipv4Addr, service_ip: Ipv4Addr) -> Result<Pki> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = random_hex(16)?;
    let pki = Pki::at(dir, token);
    let ca_key = dir.join("ca.key");
    ec_key(&ca_key)?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &s(&ca_key)?,
        "-out",
        &s(&pki.ca)?,
        "-days",
        "7",
        "-subj",
        "/CN=xdpturn-test-cluster-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;

    let csr = dir.join("apiserver.csr");
    let ext = dir.join("apiserver.ext");
    ec_key(&pki.serving_key)?;
    openssl(&[
        "req",
        "-new",
        "-key",
        &s(&pki.serving_key)?,
        "-out",
        &s(&csr)?,
        "-subj",
        "/CN=kube-apiserver",
    ])?;
    fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:{node_ip},IP:{service_ip},IP:127.0.0.1,DNS:localhost,\
             DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,\
             DNS:kubernetes.default.svc.cluster.local\n"
        ),
    )
    .with_context(|| format!("writing {}", ext.display()))?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr)?,
        "-CA",
        &s(&pki.ca)?,
        "-CAkey",
        &s(&ca_key)?,
        "-CAcreateserial",
        "-days",
        "7",
        "-extfile",
        &s(&ext)?,
        "-out",
        &s(&pki.serving_cert)?,
    ])?;

    // 1.20 reads the public half from a `PUBLIC KEY` file, not from PKCS#8 `PRIVATE KEY`.
    ec_key(&pki.service_account_key)?;
    openssl(&[
        "pkey",
        "-in",
        &s(&pki.service_account_key)?,
        "-pubout",
        "-out",
        &s(&pki.service_account_pub)?,
    ])?;

    fs::write(dir.join("token"), format!("{}\n", pki.token)).context("writing the token")?;
    fs::write(
        &pki.tokens,
        format!(
            "{},cluster-admin,cluster-admin,\"system:masters\"\n",
            pki.token
        ),
    )
    .with_context(|| format!("writing {}", pki.tokens.display()))?;
    Ok(pki)
}

/// A kubeconfig for `server` with the CA and the admin token.
pub fn kubeconfig(server: &str, pki: &Pki) -> Result<String> {
    Ok(format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: xdpturn-test\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority: {ca}\n\
         users:\n\
         - name: cluster-admin\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: xdpturn-test\n  \
           context:\n    \
             cluster: xdpturn-test\n    \
             user: cluster-admin\n\
         current-context: xdpturn-test\n",
        ca = s(&pki.ca)?,
        token = pki.token,
    ))
}

fn ec_key(out: &Path) -> Result<()> {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &s(out)?,
    ])
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Cmd::new("openssl")
        .args(args)
        .probe()
        .ok_or_else(|| anyhow!("could not run openssl"))?;
    if !out.status.success() {
        anyhow::bail!(
            "openssl {} failed ({}): {}",
            args.first().unwrap_or(&""),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn s(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path is not UTF-8: {}", path.display()))
}
