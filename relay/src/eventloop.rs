//! The event loop: the only owner of sockets. It feeds packets to the protocol core and sends
//! what it answers.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::proto::{Inbound, MAX_REPLY_LEN, Outcome, Server, Transport};
use crate::stun::{MAX_MESSAGE_LEN, stream_frame_len};

/// A TCP connection that sends nothing for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How many times binding port 0 is retried until UDP and TCP share a free port.
const EPHEMERAL_BIND_ATTEMPTS: usize = 16;

/// A listening address, bound for UDP and TCP on the same port.
#[derive(Debug)]
pub struct Listener {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    /// The bound address (with the real port when port 0 was asked for).
    pub addr: SocketAddr,
}

fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // [::] and 0.0.0.0 are listened on separately, so each socket is one family.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds UDP and TCP on `addr`. With port 0, finds a port free for both.
pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
    let attempts = if addr.port() == 0 {
        EPHEMERAL_BIND_ATTEMPTS
    } else {
        1
    };
    let mut last_err = None;
    for _ in 0..attempts {
        let udp = udp_socket(addr)?;
        let bound = udp.local_addr()?;
        match tcp_listener(bound) {
            Ok(tcp) => {
                return Ok(Listener {
                    udp: UdpSocket::from_std(udp)?,
                    tcp: TcpListener::from_std(tcp)?,
                    addr: bound,
                });
            }
            Err(err) if err.kind() == io::ErrorKind::AddrInUse && addr.port() == 0 => {
                last_err = Some(err)
            }
            Err(err) => return Err(err),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// Serves every listener until the tasks fail (they do not, short of a socket error).
pub async fn serve(
    listeners: Vec<Listener>,
    server: Server,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let mut tasks = JoinSet::new();
    for l in listeners {
        tasks.spawn(serve_udp(
            Arc::new(l.udp),
            l.addr,
            server.clone(),
            metrics.clone(),
        ));
        tasks.spawn(serve_tcp(l.tcp, server.clone(), metrics.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err),
            Err(join) => return Err(io::Error::other(join)),
        }
    }
    Ok(())
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    mut server: Server,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut out = vec![0u8; MAX_REPLY_LEN];
    loop {
        let (len, remote) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors from earlier sends surface here on some kernels; they concern one
            // peer, not the socket.
            Err(err) if is_transient(&err) => continue,
            Err(err) => return Err(err),
        };
        let inbound = Inbound {
            transport: Transport::Udp,
            local,
            remote,
            packet: &buf[..len],
        };
        let outcome = server.handle(&inbound, &mut out);
        metrics.record(Transport::Udp, &outcome);
        trace_outcome(Transport::Udp, remote, &outcome);
        if let Outcome::Reply { len, .. } = outcome
            && let Err(err) = socket.send_to(&out[..len], remote).await
        {
            metrics
                .send_errors
                .with_label_values(&[Transport::Udp.as_str()])
                .inc();
            tracing::debug!(%remote, %err, "UDP send failed");
        }
    }
}

/// One debug line per packet: filtered out (and nearly free) at the default level.
fn trace_outcome(transport: Transport, remote: SocketAddr, outcome: &Outcome) {
    match outcome {
        Outcome::Reply { method, code, .. } => {
            tracing::debug!(transport = transport.as_str(), %remote, method = method.as_str(), code = code.unwrap_or(0), "answered")
        }
        Outcome::Consumed { method } => {
            tracing::debug!(transport = transport.as_str(), %remote, method = method.as_str(), "consumed")
        }
        Outcome::Dropped(reason) => {
            tracing::debug!(transport = transport.as_str(), %remote, reason = reason.as_str(), "dropped")
        }
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve_tcp(listener: TcpListener, server: Server, metrics: Arc<Metrics>) -> io::Result<()> {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(%err, "accepting a TCP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let server = server.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let gauge = metrics
                .connections
                .with_label_values(&[Transport::Tcp.as_str()]);
            gauge.inc();
            if let Err(err) = serve_stream(stream, remote, server, &metrics).await {
                tracing::debug!(%remote, %err, "TCP connection ended");
            }
            gauge.dec();
        });
    }
}

/// Serves one stream connection: frames STUN and ChannelData (RFC 8656 §12.5) and answers each.
async fn serve_stream(
    mut stream: TcpStream,
    remote: SocketAddr,
    mut server: Server,
    metrics: &Metrics,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut filled = 0;
    let mut out = vec![0u8; MAX_REPLY_LEN];
    loop {
        // Answer every complete frame in the buffer.
        let mut start = 0;
        loop {
            let frame_len = match stream_frame_len(&buf[start..filled]) {
                Ok(Some(n)) if n <= filled - start => n,
                Ok(_) => break,
                Err(err) => {
                    metrics.record(
                        Transport::Tcp,
                        &Outcome::Dropped(crate::proto::DropReason::NotStun),
                    );
                    return Err(io::Error::new(io::ErrorKind::InvalidData, err));
                }
            };
            let inbound = Inbound {
                transport: Transport::Tcp,
                local,
                remote,
                packet: &buf[start..start + frame_len],
            };
            let outcome = server.handle(&inbound, &mut out);
            metrics.record(Transport::Tcp, &outcome);
            trace_outcome(Transport::Tcp, remote, &outcome);
            if let Outcome::Reply { len, .. } = outcome {
                stream.write_all(&out[..len]).await?;
            }
            start += frame_len;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        // A frame is at most 20 + 65535 bytes, which the buffer holds: it never fills up.
        let read = tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read(&mut buf[filled..]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle"))??;
        if read == 0 {
            return Ok(());
        }
        filled += read;
    }
}
