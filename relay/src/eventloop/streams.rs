//! Stream clients: TCP and TLS listeners accepted, and each connection served, STUN and
//! ChannelData framed (RFC 8656 §12.5), answers and relayed data written through a queue,
//! until it closes, is reaped, or becomes an RFC 6062 data connection.
//!
//! A connection costs what it has in flight, because an idle connection is what a flood of
//! them is made of: it starts with a small read buffer that grows to the frame it is reading
//! (at most 20 + 65535 bytes) and shrinks back once that is handled, answers are built in a
//! buffer that lives only while frames are handled, and its output queue holds only what waits
//! (eventloop/stream_queue.rs). Each connection is admitted against the caps per source and in
//! total before anything else (eventloop/admission.rs), and reaped by two deadlines that only
//! whole messages move, so that a sender trickling bytes cannot hold it open:
//! - until it has made an authenticated request (it has an allocation; an RFC 6062 data
//!   connection leaves this loop with its ConnectionBind), it must do so within
//!   `--tcp-auth-timeout` of being accepted;
//! - it is closed when no complete STUN message or ChannelData frame came for
//!   `--tcp-idle-timeout` (RFC 8656 allocations are refreshed well within the default).
//!
//! Answers are never dropped: while too much waits to be written, the connection is not read
//! (backpressure, eventloop/stream_queue.rs); a client that does not read its answers at all is
//! closed once a write has made no progress for [`WRITE_STALL_TIMEOUT`].

use super::spawn_counted;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::admission::Admitted;
use super::stream_queue::StreamQueue;
use super::tcp_relay::splice;
use super::worker::{Worker, handle_client};
use crate::metrics::Reaped;
use crate::proto::{self, FiveTuple, Inbound, MAX_REPLY_LEN, Transport};
use crate::stun::stream_frame_len;
use crate::tls;

/// The read buffer a connection starts with, and shrinks back to: room for any request and a
/// full-size ChannelData frame of a 1500-byte path.
const READ_INITIAL: usize = 2048;
/// A write that makes no progress for this long closes the connection: the client stopped
/// reading its answers.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);
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
    let Some(admitted) = admit(worker, Transport::Tcp, remote) else {
        return;
    };
    let worker = worker.clone();
    spawn_counted(worker.shared.metrics.worker_tasks.clone(), async move {
        serve_stream(
            worker,
            stream,
            FiveTuple {
                transport: Transport::Tcp,
                client: remote,
                server: local,
            },
            admitted,
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

/// Counts an accepted connection against the caps; one over them is closed here (dropped),
/// counted and logged (eventloop/admission.rs).
fn admit(worker: &Rc<Worker>, transport: Transport, remote: SocketAddr) -> Option<Admitted> {
    let limits = worker.server.borrow().config().streams.clone();
    match worker.shared.admission.admit(remote.ip(), &limits) {
        Ok(admitted) => Some(admitted),
        Err(limit) => {
            worker.shared.metrics.connection_refused(transport, limit);
            None
        }
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
    let Some(admitted) = admit(worker, Transport::Tls, remote) else {
        return;
    };
    let worker = worker.clone();
    spawn_counted(worker.shared.metrics.worker_tasks.clone(), async move {
        match tls::accept(&certs, stream, TLS_HANDSHAKE_TIMEOUT).await {
            Ok(stream) => {
                let tuple = FiveTuple {
                    transport: Transport::Tls,
                    client: remote,
                    server: local,
                };
                serve_stream(worker, stream, tuple, admitted).await;
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
/// allocation when it closes. `admitted` counts it against the caps until it returns.
async fn serve_stream<S>(worker: Rc<Worker>, stream: S, tuple: FiveTuple, admitted: Admitted)
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let _admitted = admitted;
    let metrics = worker.shared.metrics.clone();
    let gauge = metrics
        .connections
        .with_label_values(&[tuple.transport.as_str()]);
    gauge.inc();
    let (mut rd, wr) = tokio::io::split(stream);
    let queue = Rc::new(StreamQueue::default());
    worker.streams.borrow_mut().insert(tuple, queue.clone());
    let writer = spawn_counted(
        worker.shared.metrics.worker_tasks.clone(),
        write_out(wr, queue.clone(), worker.clone(), tuple.transport),
    );

    let limits = worker.server.borrow().config().streams.clone();
    let authenticated = || worker.server.borrow().allocation(&tuple).is_some();
    let mut auth_deadline = limits.auth_timeout.map(|t| Instant::now() + t);
    let mut last_message = Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_INITIAL);
    let reaped = 'conn: loop {
        let mut start = 0;
        // The size of the frame that does not fit yet.
        let mut need = 0;
        // Built while frames are handled, not kept while the connection waits.
        let mut out = Vec::new();
        loop {
            let frame_len = match stream_frame_len(&buf[start..]) {
                Ok(Some(n)) if n <= buf.len() - start => n,
                Ok(Some(n)) => {
                    need = n;
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    metrics.dropped(tuple.transport, proto::DropReason::NotStun);
                    break 'conn None;
                }
            };
            if queue.is_full() {
                // Backpressure: the answers wait to be written; so does the next request.
                if !wait_until(auth_deadline, queue.room()).await {
                    if !authenticated() {
                        break 'conn Some(Reaped::AuthTimeout);
                    }
                    auth_deadline = None;
                    queue.room().await;
                }
                if queue.is_broken() {
                    break 'conn None;
                }
            }
            if out.is_empty() {
                out = vec![0u8; MAX_REPLY_LEN];
            }
            let inbound = Inbound {
                transport: tuple.transport,
                local: tuple.server,
                remote: tuple.client,
                packet: &buf[start..start + frame_len],
            };
            handle_client(&worker, &inbound, Instant::now(), &mut out);
            start += frame_len;
            last_message = Instant::now();
            if auth_deadline.is_some() && authenticated() {
                auth_deadline = None;
            }
            let spliced = worker.splice_requests.borrow_mut().remove(&tuple);
            if let Some(id) = spliced {
                // ConnectionBind succeeded: from here on this connection is a raw pipe to the
                // peer, starting with whatever followed the request in the buffer.
                let rest = buf[start..].to_vec();
                drop(buf);
                worker.streams.borrow_mut().remove(&tuple);
                splice(&worker, id, tuple, rd, queue.clone(), rest).await;
                queue.close();
                worker.server.borrow_mut().tcp_connection_closed(id);
                worker.apply_events();
                let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
                gauge.dec();
                return;
            }
        }
        buf.drain(..start);
        size_read_buffer(&mut buf, need);
        let idle_deadline = limits.idle_timeout.map(|t| last_message + t);
        let deadline = match (auth_deadline, idle_deadline) {
            (Some(a), Some(i)) => Some(a.min(i)),
            (a, i) => a.or(i),
        };
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                _ => break 'conn None,
            },
            () = sleep_until(deadline) => {
                if auth_deadline.is_some_and(|a| a <= Instant::now()) {
                    // An Allocate that waited for the user database may have succeeded since.
                    if !authenticated() {
                        break 'conn Some(Reaped::AuthTimeout);
                    }
                    auth_deadline = None;
                } else if idle_deadline.is_some_and(|i| i <= Instant::now()) {
                    break 'conn Some(Reaped::IdleTimeout);
                }
            }
            () = queue.broken() => break 'conn None,
        }
    };
    if let Some(reason) = reaped {
        metrics.connection_reaped(tuple.transport, reason);
        tracing::debug!(
            transport = tuple.transport.as_str(),
            client = %tuple.client,
            reason = reason.as_str(),
            "closing a stream connection"
        );
    }
    drop(buf);
    worker.streams.borrow_mut().remove(&tuple);
    shrink_streams(&worker);
    queue.close();
    worker.server.borrow_mut().client_closed(&tuple);
    worker.apply_events();
    // Let queued answers go out, then close.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    gauge.dec();
}

/// Sizes the read buffer for the next read: room for the frame that does not fit yet (`need`
/// bytes), and back to [`READ_INITIAL`] once a large frame is handled.
fn size_read_buffer(buf: &mut Vec<u8>, need: usize) {
    if need > buf.capacity() {
        buf.reserve_exact(need - buf.len());
    } else if buf.capacity() > READ_INITIAL && buf.len() <= READ_INITIAL / 2 && need <= READ_INITIAL
    {
        buf.shrink_to(READ_INITIAL);
    }
    if buf.len() == buf.capacity() {
        // Only a partial header waits (fewer bytes than any header): never the case with
        // READ_INITIAL bytes, but a read into no room would end the connection.
        buf.reserve(READ_INITIAL);
    }
}

/// The table of streams keeps its size after a flood of connections: give it back.
fn shrink_streams(worker: &Worker) {
    let mut streams = worker.streams.borrow_mut();
    if streams.capacity() > 64 && streams.len() < streams.capacity() / 4 {
        let len = streams.len();
        streams.shrink_to(len * 2);
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Runs `f` until `deadline`: whether it finished.
async fn wait_until(deadline: Option<Instant>, f: impl std::future::Future<Output = ()>) -> bool {
    tokio::select! {
        () = f => true,
        () = sleep_until(deadline) => false,
    }
}

/// Writes what the queue holds to the client, flushing whenever it runs empty (TLS holds
/// records back until flushed), until the queue is closed and written out; shuts the stream
/// down then. A write that fails or makes no progress for [`WRITE_STALL_TIMEOUT`] breaks the
/// queue off (the reader sees it and closes).
async fn write_out<W>(mut wr: W, queue: Rc<StreamQueue>, worker: Rc<Worker>, transport: Transport)
where
    W: AsyncWrite + Unpin,
{
    loop {
        if let Some(frame) = queue.pop() {
            match tokio::time::timeout(WRITE_STALL_TIMEOUT, wr.write_all(&frame)).await {
                Ok(Ok(())) => queue.written(frame.len()),
                Ok(Err(_)) => return queue.break_off(),
                Err(_) => {
                    worker
                        .shared
                        .metrics
                        .connection_reaped(transport, Reaped::WriteStall);
                    return queue.break_off();
                }
            }
            continue;
        }
        if queue.is_broken() {
            return;
        }
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, wr.flush()).await {
            Ok(Ok(())) => {}
            _ => return queue.break_off(),
        }
        if queue.is_closed() && queue.is_empty() {
            break;
        }
        queue.wait().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
}
