//! STUN/TURN over TLS end to end (RFC 8656 §3.1, RFC 7443): the real relay binary with a
//! certificate written to a scratch directory, against coturn's `turnutils_uclient -t -S`
//! (with `turnutils_peer` echoing), OpenSSL's `s_client` for TLS 1.2, TLS 1.3 and ALPN, and a
//! rustls client for STUN over TLS and certificate reloads while a connection stays open.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::uclient::{echo_peer, uclient};
use common::{Relay, TempDir, relay_bin, require, run};
use relay::stun::{Class, Encoder, Message, MessageType, Method, TransactionId, XorMappedAddress};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A relay port range of its own for each relay a test starts, so parallel tests do not meet
/// (and a different one from the other test binaries' ranges).
fn port_range() -> (String, String) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let base = 40_000 + (std::process::id() % 100) as u16 * 50 + n % 20 * 100;
    (base.to_string(), (base + 99).to_string())
}

/// Every PEM file the tests write is padded to this size (PEM allows text around the blocks),
/// so that a replaced file can look unchanged to the relay's file watch.
const PEM_FILE_LEN: usize = 4096;

fn padded(pem: String) -> String {
    let mut pem = pem;
    assert!(pem.len() < PEM_FILE_LEN);
    pem.extend(std::iter::repeat_n('\n', PEM_FILE_LEN - pem.len()));
    pem
}

/// A self-signed certificate for localhost and its PKCS#8 key, written as `cert.pem` and
/// `key.pem` in `dir`.
fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, padded(ck.cert.pem())).expect("write cert");
    std::fs::write(&key, padded(ck.signing_key.serialize_pem())).expect("write key");
    (cert, key)
}

/// Starts the relay with TLS on an ephemeral loopback port; returns it and the TLS address.
fn tls_relay(cert: &Path, key: &Path, extra: &[&str]) -> (Relay, SocketAddr) {
    let (min, max) = port_range();
    let cert = cert.to_str().expect("utf-8 path");
    let key = key.to_str().expect("utf-8 path");
    let mut args = vec![
        "--tls-listen",
        "127.0.0.1:0",
        "--cert",
        cert,
        "--key",
        key,
        "--realm",
        "example.org",
        "--user",
        "alice:pw",
        "--min-port",
        &min,
        "--max-port",
        &max,
    ];
    args.extend_from_slice(extra);
    let relay = Relay::start(&args);
    let tls = relay.tls_listeners();
    assert_eq!(tls.len(), 1, "one TLS listener: {tls:?}");
    assert_ne!(tls[0].port(), 0, "port 0 resolved to the bound port");
    (relay, tls[0])
}

/// Runs `turnutils_uclient` over TLS (`-t -S`) with `args`. Asserts that at least `expected`
/// messages went out and all came back.
fn uclient_tls(server: SocketAddr, peer: SocketAddr, args: &[&str], expected: u64) -> String {
    let args = [&["-t", "-S", "-u", "alice", "-w", "pw"][..], args].concat();
    let stats = uclient(server, peer, &args, TIMEOUT);
    stats.assert_all_arrived(expected, "");
    stats.text
}

#[test]
fn uclient_over_tls() {
    let dir = TempDir::new("tls-uclient");
    let (cert, key) = write_cert(dir.path());
    let (relay, tls) = tls_relay(&cert, &key, &["--allow-peer", "127.0.0.1"]);
    let (_peer, peer) = echo_peer("127.0.0.1");

    // Channels (ChannelBind + ChannelData, padded on streams), then Send/Data indications.
    let channels = uclient_tls(tls, peer, &["-n", "50", "-m", "5", "-l", "120"], 250);
    let indications = uclient_tls(tls, peer, &["-s", "-n", "50", "-m", "5", "-l", "120"], 250);

    let relayed = relay.metric(
        r#"xdpturn_relayed_packets_total{datapath="userspace",direction="peer_to_client",transport="tls"}"#,
    );
    assert!(relayed >= 500.0, "TLS traffic counted as tls: {relayed}");
    assert!(
        relay.metric(
            r#"xdpturn_requests_total{method="allocate",result="success",transport="tls"}"#
        ) >= 10.0
    );
    // Closed TLS connections take their allocations with them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.metric("xdpturn_allocations") > 0.0
        || relay.metric(r#"xdpturn_client_connections{transport="tls"}"#) > 0.0
    {
        assert!(
            Instant::now() < deadline,
            "TLS allocations or connections outlived the clients"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // uclient -S picks among TLS 1.0 to 1.3 contexts at random and retries when one fails:
    // 1.2 and 1.3 were used, and every handshake it saw refused (1.0, 1.1) was counted.
    let text = format!("{channels}{indications}");
    assert!(
        text.contains("method=TLSv1.2") || text.contains("method=TLSv1.3"),
        "{text}"
    );
    // (It prints "cannot connect" for retries as well; the alert line is one per refusal.)
    let refused = text.matches("alert handshake failure").count() as f64;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counted = relay.metric(r#"xdpturn_tls_handshake_failures_total{reason="error"}"#);
        if counted == refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} handshake failures counted, uclient saw {refused}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `openssl s_client` negotiated.
#[derive(Debug)]
struct Negotiated {
    verified: bool,
    protocol: Option<String>,
    alpn: Option<String>,
    text: String,
}

/// Handshakes with `openssl s_client`, trusting only `ca`, with extra `args` (-tls1_2, -alpn).
fn s_client(server: SocketAddr, ca: &Path, args: &[&str]) -> Negotiated {
    let openssl = require("openssl", "openssl");
    let out = run(
        Command::new(openssl)
            .args(["s_client", "-connect", &server.to_string()])
            .args(["-servername", "localhost", "-verify_return_error"])
            .arg("-CAfile")
            .arg(ca)
            .args(args),
        Duration::from_secs(30),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_owned())
    };
    // A refused handshake still prints a session block, with no cipher.
    let established = !text.contains("Cipher is (NONE)");
    Negotiated {
        verified: established && text.contains("Verify return code: 0 (ok)"),
        protocol: after("Protocol  :").filter(|_| established).or_else(|| {
            if !established {
                return None;
            }
            // TLS 1.3 sessions print "New, TLSv1.3, Cipher is ...".
            text.lines()
                .find_map(|l| l.strip_prefix("New, "))
                .and_then(|l| l.split(',').next())
                .map(str::to_owned)
        }),
        alpn: after("ALPN protocol:"),
        text,
    }
}

#[test]
fn tls12_tls13_and_alpn_with_openssl() {
    let dir = TempDir::new("tls-openssl");
    let (cert, key) = write_cert(dir.path());
    let (relay, tls) = tls_relay(&cert, &key, &[]);

    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let n = s_client(tls, &cert, &[flag, "-alpn", "stun.turn"]);
        assert!(n.verified, "{flag}: certificate not verified:\n{}", n.text);
        assert_eq!(n.protocol.as_deref(), Some(version), "{}", n.text);
        assert_eq!(n.alpn.as_deref(), Some("stun.turn"), "{}", n.text);

        // No ALPN offered: served, none negotiated.
        let n = s_client(tls, &cert, &[flag]);
        assert!(n.verified, "{flag} without ALPN:\n{}", n.text);
        assert_eq!(n.protocol.as_deref(), Some(version), "{}", n.text);
        assert!(n.text.contains("No ALPN negotiated"), "{}", n.text);

        // Only other protocols offered: served without ALPN rather than refused.
        let n = s_client(tls, &cert, &[flag, "-alpn", "h2,http/1.1"]);
        assert!(n.verified, "{flag} with other ALPN:\n{}", n.text);
        assert!(n.text.contains("No ALPN negotiated"), "{}", n.text);
    }

    // Below TLS 1.2 is refused (and counted).
    let n = s_client(tls, &cert, &["-tls1_1"]);
    assert!(
        n.protocol.is_none() && !n.verified,
        "TLS 1.1 accepted:\n{}",
        n.text
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.metric(r#"xdpturn_tls_handshake_failures_total{reason="error"}"#) < 1.0 {
        assert!(Instant::now() < deadline, "TLS 1.1 failure not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TLS client connection (rustls, trusting only `ca`), blocking.
fn tls_connect(
    server: SocketAddr,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("open CA file") {
        roots.add(c.expect("CA certificate")).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"stun.turn".to_vec()];
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let tcp = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    rustls::StreamOwned::new(conn, tcp)
}

/// A Binding request over an open TLS connection; returns XOR-MAPPED-ADDRESS or the error.
fn binding_over(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) -> std::io::Result<SocketAddr> {
    let mut buf = [0u8; 64];
    let tid = TransactionId::new(*b"tls-binding!");
    let len = Encoder::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid,
    )
    .expect("header")
    .finish();
    tls.write_all(&buf[..len])?;
    tls.flush()?;
    let mut header = [0u8; 20];
    tls.read_exact(&mut header)?;
    let body_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut msg = header.to_vec();
    msg.resize(20 + body_len, 0);
    tls.read_exact(&mut msg[20..])?;
    let msg = Message::decode(&msg).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    assert_eq!(*msg.tid(), tid);
    match msg.get::<XorMappedAddress>() {
        Some(Ok(XorMappedAddress(addr))) => Ok(addr),
        other => Err(std::io::Error::other(format!(
            "no XOR-MAPPED-ADDRESS: {other:?}"
        ))),
    }
}

/// With a certificate and a key but no --tls-listen, TLS is served on the listen addresses'
/// IPs, as coturn does: port 5349, or, as here where the relay listens on free ports, a free
/// port too (`RelayConfig::default_tls_listen` is unit-tested for 5349).
#[test]
fn a_certificate_alone_serves_tls_on_the_listen_addresses() {
    let dir = TempDir::new("tls-default");
    let (cert, key) = write_cert(dir.path());
    let (cert_arg, key_arg) = (
        cert.to_str().expect("utf-8 path"),
        key.to_str().expect("utf-8 path"),
    );
    let relay = Relay::start(&["--cert", cert_arg, "--key", key_arg]);
    let mut tls = relay.tls_listeners();
    tls.sort();
    let ips: Vec<IpAddr> = tls.iter().map(|a| a.ip()).collect();
    assert_eq!(
        ips,
        [
            "127.0.0.1".parse::<IpAddr>().expect("ip"),
            "::1".parse().expect("ip")
        ],
        "TLS on each listen IP: {tls:?}"
    );
    for addr in tls {
        assert_ne!(addr.port(), 0, "port 0 resolved to the bound port");
        let mut conn = tls_connect(addr, &cert);
        let mapped = binding_over(&mut conn).expect("binding over the default TLS listener");
        assert_eq!(mapped, conn.sock.local_addr().expect("local address"));
    }
}

#[test]
fn stun_binding_over_tls() {
    let dir = TempDir::new("tls-binding");
    let (cert, key) = write_cert(dir.path());
    let (relay, tls) = tls_relay(&cert, &key, &[]);
    let mut conn = tls_connect(tls, &cert);
    let mapped = binding_over(&mut conn).expect("binding over TLS");
    assert_eq!(mapped, conn.sock.local_addr().expect("local address"));
    assert_eq!(
        conn.conn.alpn_protocol(),
        Some(&b"stun.turn"[..]),
        "ALPN stun.turn"
    );
    assert!(
        relay
            .metric(r#"xdpturn_requests_total{method="binding",result="success",transport="tls"}"#)
            >= 1.0
    );
    assert_eq!(
        relay.metric(r#"xdpturn_client_connections{transport="tls"}"#),
        1.0
    );
    drop(conn);

    // Plain STUN on the TLS port is a failed handshake, counted, not an answer.
    let mut plain = TcpStream::connect(tls).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let len = Encoder::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        TransactionId::new(*b"plain-on-tls"),
    )
    .expect("header")
    .finish();
    plain.write_all(&buf[..len]).expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        Message::decode(&answer).is_err(),
        "a STUN answer to plain TCP on the TLS port"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.metric(r#"xdpturn_tls_handshake_failures_total{reason="error"}"#) < 1.0 {
        assert!(Instant::now() < deadline, "failed handshake not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Failures are logged at debug level only.
    assert!(
        relay
            .log_lines()
            .iter()
            .filter(|l| l.contains("TLS handshake failed"))
            .all(|l| l.contains("DEBUG")),
        "{}",
        relay.log_lines().join("\n")
    );
    // UDP and TCP on the plain listener still work alongside.
    common::wait_stun_ready(relay.v4(), Duration::from_secs(5));
}

/// Replaces a file's contents the way an editor or a Secret update does: write aside, rename.
/// With `keep_mtime` the new file carries the old one's modification time, so (being padded to
/// the same length) it looks unchanged to the relay's file watch and only SIGHUP reloads it.
fn replace(path: &Path, contents: &[u8], keep_mtime: bool) {
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    if keep_mtime {
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
    }
    std::fs::rename(&tmp, path).expect("rename");
}

/// Waits until more than `before` log lines contain all of `needles`.
fn wait_for_more(relay: &Relay, needles: &[&str], before: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while count(relay, needles) <= before {
        assert!(
            Instant::now() < deadline,
            "no new log line with {needles:?}:\n{}",
            relay.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(relay: &Relay, needles: &[&str]) -> usize {
    relay
        .log_lines()
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[test]
fn certificate_reloads_on_change_and_sighup_without_dropping_connections() {
    let dir = TempDir::new("tls-reload");
    let (cert, key) = write_cert(dir.path());
    let first_ca = dir.path().join("first-ca.pem");
    std::fs::copy(&cert, &first_ca).expect("copy");
    let (relay, tls) = tls_relay(&cert, &key, &[]);
    let mut open = tls_connect(tls, &first_ca);
    binding_over(&mut open).expect("binding with the first certificate");

    // A new certificate and key on disk: picked up by the file watch.
    let other = TempDir::new("tls-reload-new");
    let (new_cert, new_key) = write_cert(other.path());
    replace(&key, &std::fs::read(&new_key).expect("read"), false);
    replace(&cert, &std::fs::read(&new_cert).expect("read"), false);
    relay.wait_for_log(&["TLS certificate reloaded", "file change"], TIMEOUT);
    let mut fresh = tls_connect(tls, &new_cert);
    binding_over(&mut fresh).expect("new connections get the new certificate");
    assert!(
        binding_over(&mut tls_connect(tls, &first_ca)).is_err(),
        "the old certificate is no longer served"
    );
    binding_over(&mut open).expect("the connection from before the reload is still served");

    // A bad certificate is refused; the one in use stays.
    let refused = [
        "TLS certificate reload refused",
        "cert.pem",
        "not valid PEM",
    ];
    let before = count(&relay, &refused);
    replace(
        &cert,
        padded("-----BEGIN CERTIFICATE-----\nnot base64\n".to_owned()).as_bytes(),
        false,
    );
    wait_for_more(&relay, &refused, before);
    binding_over(&mut tls_connect(tls, &new_cert)).expect("still the good certificate");

    // SIGHUP reloads too. Both files are replaced so that the file watch cannot tell.
    let third = TempDir::new("tls-reload-third");
    let (third_cert, third_key) = write_cert(third.path());
    replace(&key, &std::fs::read(&third_key).expect("read"), true);
    replace(&cert, &std::fs::read(&third_cert).expect("read"), true);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        binding_over(&mut tls_connect(tls, &third_cert)).is_err(),
        "reloaded before the signal"
    );
    let status = Command::new("kill")
        .args(["-HUP", &relay.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    relay.wait_for_log(&["TLS certificate reloaded", "SIGHUP"], TIMEOUT);
    binding_over(&mut tls_connect(tls, &third_cert)).expect("certificate from SIGHUP");
    binding_over(&mut open).expect("the first connection survived both reloads");
    binding_over(&mut fresh).expect("the second connection too");
}

/// Key formats beyond PKCS#8: PKCS#1 (RSA) and SEC1 (EC), as `openssl` writes them.
#[test]
fn pkcs1_and_sec1_keys_from_openssl() {
    let openssl = require("openssl", "openssl");
    for (name, genkey) in [
        (
            "RSA PRIVATE KEY",
            &["genrsa", "-traditional", "-out", "key.pem", "2048"][..],
        ),
        (
            "EC PRIVATE KEY",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "key.pem",
            ][..],
        ),
    ] {
        let dir = TempDir::new("tls-keys");
        let out = run(
            Command::new(&openssl).current_dir(dir.path()).args(genkey),
            TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = dir.path().join("key.pem");
        let pem = std::fs::read_to_string(&key).expect("key");
        assert!(pem.contains(&format!("BEGIN {name}")), "{pem}");
        let out = run(
            Command::new(&openssl).current_dir(dir.path()).args([
                "req",
                "-new",
                "-x509",
                "-key",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ]),
            TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = dir.path().join("cert.pem");
        let (_relay, tls) = tls_relay(&cert, &key, &[]);
        for flag in ["-tls1_2", "-tls1_3"] {
            let n = s_client(tls, &cert, &[flag]);
            assert!(n.verified, "{name} {flag}:\n{}", n.text);
        }
        binding_over(&mut tls_connect(tls, &cert)).expect("binding");
    }
}

/// Start-up refuses TLS without a certificate, and names a file it cannot use.
#[test]
fn tls_without_certificate_or_with_a_bad_one_is_a_clear_startup_error() {
    let base = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    let out = run(
        Command::new(relay_bin())
            .args(base)
            .args(["--tls-listen", "127.0.0.1:0"]),
        TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cert") && err.contains("--key"), "{err}");

    let dir = TempDir::new("tls-bad");
    let (cert, _) = write_cert(dir.path());
    let missing = dir.path().join("no-such-key.pem");
    let out = run(
        Command::new(relay_bin())
            .args(base)
            .args(["--tls-listen", "127.0.0.1:0", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&missing),
        TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-key.pem"), "{err}");

    // The certificate file given as the key: it holds no key.
    let out = run(
        Command::new(relay_bin())
            .args(base)
            .args(["--tls-listen", "127.0.0.1:0", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&cert),
        TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds no private key") && err.contains("cert.pem"),
        "{err}"
    );

    // A key without a certificate, even with no TLS address asked for.
    let out = run(
        Command::new(relay_bin()).args(base).arg("--key").arg(&cert),
        TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("both a certificate and a key"), "{err}");

    // The same through the environment.
    let out = run(
        Command::new(relay_bin())
            .args(base)
            .env("XDPTURN_TLS_LISTEN", "127.0.0.1:0")
            .env("XDPTURN_CERT", &cert),
        TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--key"), "{err}");
}
