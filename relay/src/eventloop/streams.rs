//! Stream clients: TCP and TLS listeners accepted, and each connection served, STUN and
//! ChannelData framed (RFC 8656 §12.5), answers and relayed data written through a queue,
//! until it closes, idles out, or becomes an RFC 6062 data connection.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::tcp_relay::splice;
use super::worker::{Worker, handle_client};
use crate::proto::{self, FiveTuple, Inbound, MAX_REPLY_LEN, Transport};
use crate::stun::{MAX_MESSAGE_LEN, stream_frame_len};
use crate::tls;

/// A stream connection that sends nothing for this long is closed (RFC 8656 allocations are
/// refreshed well within it).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Frames queued towards one stream client before more are dropped.
const STREAM_QUEUE: usize = 512;
/// A TLS client must finish its handshake within this long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The next client connection on a TCP or TLS listener bound to `addr`, with Nagle off: the
/// stream, the client's address and the local address it reached.
async fn accept_client(
    listener: &TcpListener,
    addr: SocketAddr,
    what: &str,
) -> (tokio::net::TcpStream, SocketAddr, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(addr);
                return (stream, remote, local);
            }
            Err(err) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(%err, %addr, "accepting a {what} connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub(super) async fn serve_tcp(worker: Rc<Worker>, addr: SocketAddr, listener: Rc<TcpListener>) {
    loop {
        let (stream, remote, local) = accept_client(&listener, addr, "TCP").await;
        spawn_tcp(&worker, stream, remote, local);
    }
}

/// Serves one accepted TCP client connection in a task of its own.
pub(super) fn spawn_tcp(
    worker: &Rc<Worker>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
) {
    let worker = worker.clone();
    tokio::task::spawn_local(async move {
        serve_stream(
            worker,
            stream,
            FiveTuple {
                transport: Transport::Tcp,
                client: remote,
                server: local,
            },
        )
        .await;
    });
}

/// Accepts TLS connections: each handshake runs in its own task, bounded in time, and a
/// finished one is served like TCP. Failed handshakes (scanners, plain TCP, wrong versions) are
/// counted and logged at debug level only.
pub(super) async fn serve_tls(
    worker: Rc<Worker>,
    addr: SocketAddr,
    listener: Rc<TcpListener>,
    certs: Arc<tls::Certificates>,
) {
    loop {
        let (stream, remote, local) = accept_client(&listener, addr, "TLS").await;
        spawn_tls(&worker, stream, remote, local, certs.clone());
    }
}

/// Shakes hands with one accepted TLS client and serves it, in a task of its own.
pub(super) fn spawn_tls(
    worker: &Rc<Worker>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    certs: Arc<tls::Certificates>,
) {
    let worker = worker.clone();
    tokio::task::spawn_local(async move {
        match tls::accept(&certs, stream, TLS_HANDSHAKE_TIMEOUT).await {
            Ok(stream) => {
                let tuple = FiveTuple {
                    transport: Transport::Tls,
                    client: remote,
                    server: local,
                };
                serve_stream(worker, stream, tuple).await;
            }
            Err(err) => {
                worker
                    .shared
                    .metrics
                    .tls_handshake_failed(err.metric_label());
                tracing::debug!(%remote, %local, %err, "TLS handshake failed");
            }
        }
    });
}

/// Serves one stream connection (TCP or TLS): frames STUN and ChannelData (RFC 8656 §12.5),
/// answers through a queue that also carries relayed data, and ends the connection's
/// allocation when it closes.
async fn serve_stream<S>(worker: Rc<Worker>, stream: S, tuple: FiveTuple)
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let metrics = worker.shared.metrics.clone();
    let gauge = metrics
        .connections
        .with_label_values(&[tuple.transport.as_str()]);
    gauge.inc();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    let writer_tx = tx.clone();
    worker.streams.borrow_mut().insert(tuple, tx);
    let writer = tokio::task::spawn_local(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
            // TLS holds records back until flushed: flush once the queue is empty.
            if rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut filled = 0;
    let mut out = vec![0u8; MAX_REPLY_LEN];
    'conn: loop {
        let mut start = 0;
        loop {
            let frame_len = match stream_frame_len(&buf[start..filled]) {
                Ok(Some(n)) if n <= filled - start => n,
                Ok(_) => break,
                Err(_) => {
                    metrics.dropped(tuple.transport, proto::DropReason::NotStun);
                    break 'conn;
                }
            };
            let inbound = Inbound {
                transport: tuple.transport,
                local: tuple.server,
                remote: tuple.client,
                packet: &buf[start..start + frame_len],
            };
            handle_client(&worker, &inbound, Instant::now(), &mut out);
            start += frame_len;
            let spliced = worker.splice_requests.borrow_mut().remove(&tuple);
            if let Some(id) = spliced {
                // ConnectionBind succeeded: from here on this connection is a raw pipe to the
                // peer, starting with whatever followed the request in the buffer.
                let rest = buf[start..filled].to_vec();
                worker.streams.borrow_mut().remove(&tuple);
                splice(&worker, id, tuple, rd, writer_tx, rest).await;
                worker.server.borrow_mut().tcp_connection_closed(id);
                worker.apply_events();
                let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
                gauge.dec();
                return;
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        // A frame is at most 20 + 65535 bytes, which the buffer holds: it never fills up.
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, rd.read(&mut buf[filled..])).await {
            Ok(Ok(n)) if n > 0 => filled += n,
            _ => break,
        }
    }
    worker.streams.borrow_mut().remove(&tuple);
    worker.server.borrow_mut().client_closed(&tuple);
    worker.apply_events();
    // Let queued answers go out, then close.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    gauge.dec();
}
