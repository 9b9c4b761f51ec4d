//! STUN/TURN over TLS (RFC 8656 §3.1, RFC 7443): the server certificate, loaded from PEM files
//! and replaceable while connections stay up, and the server side of the handshake.
//!
//! TLS 1.3 and 1.2, with `ring` as the crypto provider. ALPN "stun.turn" (RFC 7443) is selected
//! when a client offers it. A client that offers no ALPN is served, as RFC 7443 asks; one that
//! offers only other protocols is served without ALPN rather than refused, because TURN
//! clients that predate RFC 7443 are common and some of them send what they use on port 443.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{Acceptor, ClientHello};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// The ALPN protocol identifier of STUN/TURN over (D)TLS (RFC 7443 §6).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// Why a certificate or key could not be used. Every variant names the file(s).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} file {}: {err}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("TLS {what} file {} is not valid PEM: {err}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        err: pem::Error,
    },
    #[error("TLS certificate file {} holds no PEM CERTIFICATE block", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "TLS key file {} holds no private key: expected an unencrypted PEM `PRIVATE KEY` \
         (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1) block",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error(
        "the private key in {} does not belong to the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "TLS certificate {} with key {} cannot be used: {err}",
        cert.display(),
        key.display()
    )]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        err: rustls::Error,
    },
}

/// Reads the certificate chain (leaf first) from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(path, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            what: "certificate",
            path: path.to_owned(),
            err,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        err => TlsError::Pem {
            what: "key",
            path: path.to_owned(),
            err,
        },
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::Read {
        what,
        path: path.to_owned(),
        err,
    })
}

/// The server configurations made from one certificate and key.
#[derive(Debug)]
pub struct Certified {
    /// Selects ALPN "stun.turn" (and serves clients that offer no ALPN).
    with_alpn: Arc<ServerConfig>,
    /// For clients that offer ALPN but not "stun.turn": no ALPN, so no refusal.
    without_alpn: Arc<ServerConfig>,
    /// SHA-256 over the chain and the key, to tell a new certificate from a touched file.
    digest: [u8; 32],
}

impl Certified {
    /// Loads `cert` and `key` and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = load_certs(cert)?;
        let private = load_key(key)?;
        let mut hash = Sha256::new();
        for c in &chain {
            hash.update((c.len() as u64).to_be_bytes());
            hash.update(c.as_ref());
        }
        hash.update(private.secret_der());
        let digest = hash.finalize().into();
        let unusable = |err| match err {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                }
            }
            err => TlsError::Unusable {
                cert: cert.to_owned(),
                key: key.to_owned(),
                err,
            },
        };
        let without_alpn = server_config(chain, private).map_err(unusable)?;
        let mut with_alpn = without_alpn.clone();
        with_alpn.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
        Ok(Self {
            with_alpn: Arc::new(with_alpn),
            without_alpn: Arc::new(without_alpn),
            digest,
        })
    }

    /// The configuration to finish a handshake that began with `hello`.
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        self.config_for_alpn(
            hello
                .alpn()
                .map(|mut offered| offered.any(|p| p == ALPN_STUN_TURN)),
        )
    }

    /// `offers_stun_turn`: None when the client sent no ALPN extension, else whether it
    /// offered "stun.turn".
    fn config_for_alpn(&self, offers_stun_turn: Option<bool>) -> Arc<ServerConfig> {
        match offers_stun_turn {
            None | Some(true) => self.with_alpn.clone(),
            Some(false) => self.without_alpn.clone(),
        }
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
}

/// The certificate in use. A reload swaps it whole: handshakes that already started and
/// established connections keep the one they began with, so nothing is dropped.
#[derive(Debug)]
pub struct Certificates {
    current: Mutex<Arc<Certified>>,
}

impl Certificates {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            current: Mutex::new(Arc::new(Certified::load(cert, key)?)),
        })
    }

    /// Loads `cert` and `key` again. On error the certificate in use stays. Returns whether
    /// the certificate or key changed.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<bool, TlsError> {
        let new = Certified::load(cert, key)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.digest == new.digest {
            return Ok(false);
        }
        *current = Arc::new(new);
        Ok(true)
    }

    pub fn current(&self) -> Arc<Certified> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("TLS handshake: {0}")]
    Failed(#[from] io::Error),
}

impl HandshakeError {
    /// A bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            HandshakeError::Timeout => "timeout",
            HandshakeError::Failed(_) => "error",
        }
    }
}

/// Runs the server side of a TLS handshake on `io` with the certificate in use when the
/// client's hello arrives; the whole handshake must finish within `timeout`.
pub async fn accept<IO>(
    certs: &Certificates,
    io: IO,
    timeout: Duration,
) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
        let config = certs.current().config_for(&start.client_hello());
        start.into_stream(config).await
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(HandshakeError::Failed(err)),
        Err(_) => Err(HandshakeError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::TlsConnector;

    use super::*;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "xdpturn-tls-unit-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Self(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate for "localhost": (certificate PEM, PKCS#8 key PEM, DER).
    fn self_signed() -> (String, String, CertificateDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("generate certificate");
        (
            ck.cert.pem(),
            ck.signing_key.serialize_pem(),
            ck.cert.der().clone(),
        )
    }

    fn client(
        trusted: &CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(trusted.clone()).expect("trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// Handshakes a client against `certs` over an in-memory pipe and echoes one message;
    /// returns the negotiated version and ALPN.
    async fn handshake(
        certs: &Certificates,
        connector: TlsConnector,
    ) -> Result<(rustls::ProtocolVersion, Option<Vec<u8>>), String> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = async {
            let mut tls = accept(certs, server_io, Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(&buf).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let client = async {
            let name = ServerName::try_from("localhost").expect("name");
            let mut tls = connector
                .connect(name, client_io)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            assert_eq!(&buf, b"hello");
            let (_, conn) = tls.get_ref();
            Ok::<_, String>((
                conn.protocol_version().expect("version"),
                conn.alpn_protocol().map(<[u8]>::to_vec),
            ))
        };
        let (server, client) = tokio::join!(server, client);
        // The client's view first: it says why it refused the server.
        let negotiated = client?;
        server?;
        Ok(negotiated)
    }

    #[test]
    fn loads_pkcs8_certificate_and_offers_alpn() {
        let dir = Scratch::new();
        let (cert, key, _) = self_signed();
        let cert = dir.write("cert.pem", &cert);
        let key = dir.write("key.pem", &key);
        let certified = Certified::load(&cert, &key).expect("load");
        assert_eq!(
            certified.config_for_alpn(None).alpn_protocols,
            vec![b"stun.turn".to_vec()]
        );
        assert_eq!(
            certified.config_for_alpn(Some(true)).alpn_protocols,
            vec![b"stun.turn".to_vec()]
        );
        assert!(
            certified
                .config_for_alpn(Some(false))
                .alpn_protocols
                .is_empty()
        );
    }

    #[test]
    fn certificate_and_key_in_one_file() {
        let dir = Scratch::new();
        let (cert, key, _) = self_signed();
        let both = dir.write("both.pem", &format!("{key}{cert}"));
        Certified::load(&both, &both).expect("a combined PEM file works for both");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = Scratch::new();
        let (cert, key, _) = self_signed();
        let cert = dir.write("cert.pem", &cert);
        let key = dir.write("key.pem", &key);
        let missing = dir.0.join("missing.pem");

        let err = Certified::load(&missing, &key).expect_err("missing cert");
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");

        let err = Certified::load(&cert, &missing).expect_err("missing key");
        assert!(err.to_string().contains("key file"), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let junk = dir.write("junk.pem", "not a certificate\n");
        let err = Certified::load(&junk, &key).expect_err("no certificate");
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(err.to_string().contains("junk.pem"), "{err}");

        // The certificate file has no key in it.
        let err = Certified::load(&cert, &cert).expect_err("no key");
        assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
        assert!(err.to_string().contains("cert.pem"), "{err}");

        let truncated = std::fs::read_to_string(&cert).expect("read");
        let truncated = dir.write("truncated.pem", &truncated[..truncated.len() / 2]);
        let err = Certified::load(&truncated, &key).expect_err("truncated");
        assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated.pem"), "{err}");

        // A key that is not the certificate's.
        let (_, other_key, _) = self_signed();
        let other_key = dir.write("other-key.pem", &other_key);
        let err = Certified::load(&cert, &other_key).expect_err("mismatch");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("cert.pem") && text.contains("other-key.pem"),
            "{text}"
        );
    }

    #[test]
    fn reload_swaps_good_certificates_and_refuses_bad_ones() {
        let dir = Scratch::new();
        let (cert_a, key_a, _) = self_signed();
        let cert = dir.write("cert.pem", &cert_a);
        let key = dir.write("key.pem", &key_a);
        let certs = Certificates::load(&cert, &key).expect("load");
        let first = certs.current();

        // Unchanged files: nothing to do.
        assert!(!certs.reload(&cert, &key).expect("same files"));
        assert!(Arc::ptr_eq(&first, &certs.current()));

        // A new certificate whose key has not been written yet: refused, the old one stays.
        let (cert_b, key_b, _) = self_signed();
        dir.write("cert.pem", &cert_b);
        certs.reload(&cert, &key).expect_err("mismatched pair");
        assert!(Arc::ptr_eq(&first, &certs.current()));
        dir.write("key.pem", "garbage");
        certs.reload(&cert, &key).expect_err("garbage key");
        assert!(Arc::ptr_eq(&first, &certs.current()));

        // Both written: swapped.
        dir.write("key.pem", &key_b);
        assert!(certs.reload(&cert, &key).expect("new pair"));
        assert!(!Arc::ptr_eq(&first, &certs.current()));
        assert_ne!(first.digest, certs.current().digest);
    }

    #[tokio::test]
    async fn tls12_and_tls13_with_and_without_alpn() {
        let dir = Scratch::new();
        let (cert, key, der) = self_signed();
        let certs = Certificates::load(&dir.write("c.pem", &cert), &dir.write("k.pem", &key))
            .expect("load");
        let v12 = &rustls::version::TLS12;
        let v13 = &rustls::version::TLS13;
        for version in [v12, v13] {
            let (got, alpn) = handshake(&certs, client(&der, &[version], &[b"stun.turn"]))
                .await
                .expect("handshake offering stun.turn");
            assert_eq!(got, version.version);
            assert_eq!(alpn.as_deref(), Some(ALPN_STUN_TURN));

            let (got, alpn) = handshake(&certs, client(&der, &[version], &[]))
                .await
                .expect("handshake without ALPN");
            assert_eq!(got, version.version);
            assert_eq!(alpn, None);

            let (_, alpn) = handshake(&certs, client(&der, &[version], &[b"h2", b"http/1.1"]))
                .await
                .expect("handshake offering only other protocols");
            assert_eq!(alpn, None);
        }
    }

    #[tokio::test]
    async fn new_handshakes_use_the_reloaded_certificate() {
        let dir = Scratch::new();
        let (cert_a, key_a, der_a) = self_signed();
        let cert = dir.write("c.pem", &cert_a);
        let key = dir.write("k.pem", &key_a);
        let certs = Certificates::load(&cert, &key).expect("load");
        let v13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        handshake(&certs, client(&der_a, v13, &[]))
            .await
            .expect("first certificate");

        let (cert_b, key_b, der_b) = self_signed();
        dir.write("c.pem", &cert_b);
        dir.write("k.pem", &key_b);
        assert!(certs.reload(&cert, &key).expect("reload"));
        handshake(&certs, client(&der_b, v13, &[]))
            .await
            .expect("second certificate");
        let err = handshake(&certs, client(&der_a, v13, &[]))
            .await
            .expect_err("a client trusting only the old certificate");
        assert!(err.contains("certificate"), "{err}");
    }

    #[tokio::test]
    async fn silent_client_times_out_and_junk_fails() {
        let dir = Scratch::new();
        let (cert, key, _) = self_signed();
        let certs = Certificates::load(&dir.write("c.pem", &cert), &dir.write("k.pem", &key))
            .expect("load");

        let (_client, server_io) = tokio::io::duplex(1024);
        let err = accept(&certs, server_io, Duration::from_millis(50))
            .await
            .expect_err("nothing sent");
        assert!(matches!(err, HandshakeError::Timeout), "{err:?}");
        assert_eq!(err.metric_label(), "timeout");

        // Plain STUN (a Binding request) on the TLS port.
        let (mut client, server_io) = tokio::io::duplex(1024);
        let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        binding.extend_from_slice(&[7; 12]);
        client.write_all(&binding).await.expect("write");
        let err = accept(&certs, server_io, Duration::from_secs(5))
            .await
            .expect_err("not TLS");
        assert!(matches!(err, HandshakeError::Failed(_)), "{err:?}");
        assert_eq!(err.metric_label(), "error");
    }
}
