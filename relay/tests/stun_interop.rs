//! The STUN server end to end: the real relay binary, driven by independent clients —
//! coturn's `turnutils_stunclient` (UDP), Debian's RFC 3489 `stun` client, and aioice's STUN
//! codec over TCP — on IPv4 and IPv6 loopback.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{Relay, field, require, run};
use relay::stun::{
    AttrType, Class, Encoder, ErrorCode, Message, MessageType, Method, TransactionId, Username,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `turnutils_stunclient` against `server` and returns the reflexive address it printed.
fn stunclient(server: SocketAddr) -> SocketAddr {
    let tool = require("turnutils_stunclient", "coturn");
    let out = run(
        Command::new(tool)
            .arg("-p")
            .arg(server.port().to_string())
            .arg(server.ip().to_string()),
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "turnutils_stunclient failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("UDP reflexive addr:"))
        .unwrap_or_else(|| panic!("no address in {stdout}"));
    // Printed as "127.0.0.1:5000" or, for IPv6, "::1:5000" (no brackets).
    let addr = field(line, "addr: ");
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    SocketAddr::new(ip.parse().expect("ip"), port.parse().expect("port"))
}

fn check_stunclient(relay: &Relay, server: SocketAddr) {
    let mapped = stunclient(server);
    assert_eq!(
        mapped.ip(),
        server.ip(),
        "on loopback the reflexive address is the client's own"
    );
    assert_ne!(mapped.port(), 0);
    // The address the client was told is exactly the source the relay saw.
    relay.wait_for_log(
        &[
            "answered",
            "transport=\"udp\"",
            &format!("remote={mapped}"),
            "method=\"binding\"",
            "code=0",
        ],
        TIMEOUT,
    );
}

#[test]
fn turnutils_stunclient_udp_ipv4() {
    let relay = Relay::start(&[]);
    check_stunclient(&relay, relay.v4());
}

#[test]
fn turnutils_stunclient_udp_ipv6() {
    let relay = Relay::start(&[]);
    check_stunclient(&relay, relay.v6());
}

/// aioice (the ICE library of Python's aiortc) sends a Binding request over TCP and prints the
/// XOR-MAPPED-ADDRESS it decoded and its own socket address.
const AIOICE_TCP_CLIENT: &str = r#"
import json, socket, sys
from aioice import stun
host, port = sys.argv[1], int(sys.argv[2])
req = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
with socket.create_connection((host, port), timeout=10) as s:
    s.sendall(bytes(req))
    data = b""
    while len(data) < 20 or len(data) < 20 + int.from_bytes(data[2:4], "big"):
        chunk = s.recv(1500)
        if not chunk:
            break
        data += chunk
    resp = stun.parse_message(data)
    local = s.getsockname()
assert resp.transaction_id == req.transaction_id, "transaction id"
assert resp.message_class == stun.Class.RESPONSE, resp.message_class
print(json.dumps({"mapped": list(resp.attributes["XOR-MAPPED-ADDRESS"]), "local": [local[0], local[1]],
                  "software": resp.attributes.get("SOFTWARE")}))
"#;

fn check_aioice_tcp(relay: &Relay, server: SocketAddr) {
    let python = require("python3", "python3");
    let probe = run(Command::new(&python).args(["-c", "import aioice"]), TIMEOUT);
    assert!(
        probe.status.success(),
        "python3 cannot import aioice: `cargo xtask test` installs it (pip install aioice)"
    );
    let out = run(
        Command::new(&python).args([
            "-c",
            AIOICE_TCP_CLIENT,
            &server.ip().to_string(),
            &server.port().to_string(),
        ]),
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aioice client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(
        v["mapped"], v["local"],
        "XOR-MAPPED-ADDRESS is the client's own socket address"
    );
    assert_eq!(
        v["software"],
        serde_json::Value::Null,
        "Binding answers carry no SOFTWARE: they go to strangers"
    );
    let port = v["local"][1].as_u64().expect("port");
    relay.wait_for_log(
        &[
            "answered",
            "transport=\"tcp\"",
            &format!(":{port} "),
            "code=0",
        ],
        TIMEOUT,
    );
}

#[test]
fn aioice_tcp_ipv4() {
    let relay = Relay::start(&[]);
    check_aioice_tcp(&relay, relay.v4());
}

#[test]
fn aioice_tcp_ipv6() {
    let relay = Relay::start(&[]);
    check_aioice_tcp(&relay, relay.v6());
}

/// Debian's `stun` (stund 0.97) speaks RFC 3489: no magic cookie, MAPPED-ADDRESS only, and
/// attribute lengths padded to 4. Its test 1 is a plain Binding from a source port we choose.
#[test]
fn rfc3489_classic_client() {
    let tool = require("stun", "stun-client");
    let relay = Relay::start(&[]);
    let server = relay.v4();
    let src_port = common::free_udp_port();
    let out = run(
        Command::new(tool)
            .arg(server.to_string())
            .arg("1")
            .arg("-v")
            .arg("-p")
            .arg(src_port.to_string()),
        TIMEOUT,
    );
    // It prints its findings on both streams.
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("MappedAddress = 127.0.0.1:{src_port}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok=1"),
        "the classic client parsed the whole response: {stdout}"
    );
    assert!(!stdout.contains("problem parsing"), "{stdout}");
}

fn request(build: impl FnOnce(&mut Encoder<'_>)) -> (TransactionId, Vec<u8>) {
    let tid = TransactionId::new(*b"interop-test");
    let mut buf = vec![0u8; 512];
    let mut enc = Encoder::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid,
    )
    .expect("header");
    build(&mut enc);
    let len = enc.finish();
    buf.truncate(len);
    (tid, buf)
}

/// Bad input over real sockets: junk and a misframed request (RFC 8489 §6.3) are dropped and
/// counted, a request with a malformed attribute value is answered 400 with its transaction id,
/// an unknown mandatory attribute 420; the relay keeps serving.
#[test]
fn bad_input_is_answered_or_counted_never_fatal() {
    let relay = Relay::start(&[]);
    let server = relay.v4();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");

    let mut response = [0u8; 20];
    let tid = TransactionId::new([3; 12]);
    let len = Encoder::new(
        &mut response,
        MessageType::new(Method::BINDING, Class::Success),
        tid,
    )
    .expect("header")
    .finish();
    for junk in [
        &[0xFFu8; 40][..],
        &[0x00, 0x01, 0x00],
        &response[..len],
        &[0x40, 0x00, 0x00, 0x10, 1, 2],
    ] {
        sock.send_to(junk, server).expect("send");
    }

    let (_, mut misframed) = request(|e| e.add(&Username("someone")).expect("add"));
    misframed[22..24].copy_from_slice(&400u16.to_be_bytes()); // USERNAME longer than the message
    sock.send_to(&misframed, server).expect("send");
    let (tid, malformed) = request(|e| {
        e.add_raw(AttrType::XOR_MAPPED_ADDRESS, &[0, 9, 0, 0, 1, 2, 3, 4])
            .expect("add")
    });
    sock.send_to(&malformed, server).expect("send");
    let mut buf = [0u8; 1500];
    // The first answer is the malformed request's: the misframed one gets none.
    let n = sock.recv(&mut buf).expect("a 400 answer");
    let msg = Message::decode(&buf[..n]).expect("decodes");
    assert_eq!((*msg.tid(), msg.class()), (tid, Class::Error));
    assert_eq!(
        msg.get::<ErrorCode>().map(|e| e.map(|e| e.code)),
        Some(Ok(400))
    );

    let (_, unknown) = request(|e| {
        e.add_raw(AttrType(0x7ABC), b"must understand")
            .expect("add")
    });
    sock.send_to(&unknown, server).expect("send");
    let n = sock.recv(&mut buf).expect("a 420 answer");
    let msg = Message::decode(&buf[..n]).expect("decodes");
    assert_eq!(
        msg.get::<ErrorCode>().map(|e| e.map(|e| e.code)),
        Some(Ok(420))
    );

    // Junk on TCP closes that connection and nothing else.
    let mut tcp = TcpStream::connect(server).expect("connect");
    std::io::Write::write_all(&mut tcp, &[0xC0; 32]).expect("write");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let closed = std::io::Read::read(&mut tcp, &mut buf).expect("read");
    assert_eq!(
        closed, 0,
        "the relay closes a stream that is neither STUN nor ChannelData"
    );

    // Still serving, and every drop is counted by reason.
    assert!(common::stun_binding_udp(server, Duration::from_secs(5)).is_some());
    assert!(
        relay.metric(r#"xdpturn_dropped_packets_total{reason="not_stun",transport="udp"}"#) >= 2.0
    );
    assert!(
        relay.metric(
            r#"xdpturn_dropped_packets_total{reason="unexpected_response",transport="udp"}"#
        ) >= 1.0
    );
    assert!(
        relay.metric(r#"xdpturn_dropped_packets_total{reason="malformed",transport="udp"}"#) >= 1.0
    );
    assert!(
        relay.metric(r#"xdpturn_dropped_packets_total{reason="not_stun",transport="tcp"}"#) >= 1.0
    );
    assert!(
        relay.metric(r#"xdpturn_requests_total{method="binding",result="400",transport="udp"}"#)
            >= 1.0
    );
    assert!(
        relay.metric(r#"xdpturn_requests_total{method="binding",result="420",transport="udp"}"#)
            >= 1.0
    );
    assert!(
        relay
            .metric(r#"xdpturn_requests_total{method="binding",result="success",transport="udp"}"#)
            >= 1.0
    );
}

#[test]
fn health_and_metrics_endpoints_answer_from_start() {
    let relay = Relay::start(&[]);
    assert_eq!(relay.http_get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(relay.http_get("/readyz"), (200, "ready\n".to_owned()));
    let (status, body) = relay.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("xdpturn_build_info{version=\""), "{body}");
    assert!(
        body.contains(r#"xdpturn_dropped_packets_total{reason="malformed",transport="udp"} 0"#),
        "{body}"
    );
    assert_eq!(relay.http_get("/nope").0, 404);
}

/// With no arguments at all the relay serves on 3478, UDP and TCP, IPv4 and IPv6.
#[test]
fn no_arguments_serves_on_3478_dual_stack() {
    for port in [3478u16, 9641] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            panic!(
                "port {port} is in use on this machine; this test needs it free (is a TURN server running?)"
            );
        }
    }
    let relay = Relay::start_with(&[], &[]);
    let mut listeners = relay.listeners.clone();
    listeners.sort();
    let expected: Vec<SocketAddr> = vec![
        "0.0.0.0:3478".parse().expect("addr"),
        "[::]:3478".parse().expect("addr"),
    ];
    assert_eq!(listeners, expected);
    assert_eq!(relay.metrics.port(), 9641);
    check_stunclient(&relay, "127.0.0.1:3478".parse().expect("addr"));
    check_stunclient(&relay, "[::1]:3478".parse().expect("addr"));
    check_aioice_tcp(&relay, "127.0.0.1:3478".parse().expect("addr"));
}

/// SIGTERM with no allocations exits at once, cleanly.
#[test]
fn sigterm_without_allocations_exits_at_once() {
    let mut relay = Relay::start(&[]);
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(relay.pid().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    relay.wait_for_log(&["draining", "SIGTERM"], TIMEOUT);
    let exit = relay.wait_exit(TIMEOUT).expect("the relay exits");
    assert!(exit.success(), "{exit}");
    relay.wait_for_log(&["no allocations left"], TIMEOUT);
}
