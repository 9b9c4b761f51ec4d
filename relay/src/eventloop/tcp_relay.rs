//! RFC 6062 TCP relaying: peers accepted on a TCP relayed address, connections made to peers
//! for Connect requests, and a bound client data connection spliced to its peer connection.

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lock;
use super::stream_queue::StreamQueue;
use super::worker::Worker;
use crate::proto::{self, FiveTuple, MAX_REPLY_LEN, RelayHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long an outgoing Connect may take (RFC 6062 §5.2: at least 30 s).
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts peers on a TCP relayed address; the core decides (permission) and announces them.
pub(super) async fn serve_tcp_relay(
    worker: Rc<Worker>,
    handle: RelayHandle,
    listener: TcpListener,
) {
    let mut out = vec![0u8; MAX_REPLY_LEN];
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let decided =
            worker
                .server
                .borrow_mut()
                .peer_connected(handle, peer, Instant::now(), &mut out);
        match decided {
            Some((id, command)) => {
                let _ = stream.set_nodelay(true);
                if let Ok(stream) = stream.into_std() {
                    lock(&worker.shared.tcp_pending).insert(id, stream);
                }
                worker.apply(command, &[], &mut out, None);
            }
            None => drop(stream),
        }
        worker.apply_events();
    }
}

/// Makes the outgoing connection of a Connect request, from the relayed address.
pub(super) async fn tcp_connect(worker: Rc<Worker>, pending: proto::PendingConnect) {
    let connect = async {
        let socket = if pending.peer.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(pending.relay_addr)?;
        socket.connect(pending.peer).await
    };
    let stream = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            tracing::debug!(peer = %pending.peer, %err, "Connect failed");
            None
        }
        Err(_) => None,
    };
    let tuple = pending.tuple;
    let mut out = vec![0u8; MAX_REPLY_LEN];
    let (command, id) = worker.server.borrow_mut().complete_connect(
        pending,
        stream.is_some(),
        Instant::now(),
        &mut out,
    );
    if let (Some(id), Some(stream)) = (id, stream) {
        let _ = stream.set_nodelay(true);
        if let Ok(stream) = stream.into_std() {
            lock(&worker.shared.tcp_pending).insert(id, stream);
        }
    }
    worker.apply(command, &[], &mut out, Some(&tuple));
    worker.apply_events();
}

/// Pipes a bound client data connection and its peer data connection together until either
/// closes or the core closes them.
pub(super) async fn splice<R>(
    worker: &Rc<Worker>,
    id: u32,
    tuple: FiveTuple,
    mut client_rd: R,
    to_client: Rc<StreamQueue>,
    first: Vec<u8>,
) where
    R: AsyncRead + Unpin,
{
    let Some(peer) = lock(&worker.shared.tcp_pending).remove(&id) else {
        return;
    };
    let Ok(peer) = tokio::net::TcpStream::from_std(peer) else {
        return;
    };
    let notify = Arc::new(tokio::sync::Notify::new());
    lock(&worker.shared.tcp_spliced).insert(id, notify.clone());
    let metrics = worker.shared.metrics.clone();
    let up = metrics
        .relayed(
            crate::metrics::Datapath::Userspace,
            tuple.transport,
            crate::metrics::Direction::ClientToPeer,
        )
        .clone();
    let down = metrics
        .relayed(
            crate::metrics::Datapath::Userspace,
            tuple.transport,
            crate::metrics::Direction::PeerToClient,
        )
        .clone();
    let (mut peer_rd, mut peer_wr) = peer.into_split();
    let client_to_peer = async {
        if !first.is_empty() {
            peer_wr.write_all(&first).await?;
            up.packets.inc();
            up.bytes.inc_by(first.len() as u64);
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_rd.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            peer_wr.write_all(&buf[..n]).await?;
            up.packets.inc();
            up.bytes.inc_by(n as u64);
        }
    };
    let peer_to_client = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = peer_rd.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            // The peer is read no faster than the client takes what it sends.
            to_client.room().await;
            if !to_client.push_reply(buf[..n].to_vec()) {
                return Ok(());
            }
            down.packets.inc();
            down.bytes.inc_by(n as u64);
        }
    };
    tokio::select! {
        _ = client_to_peer => {}
        _ = peer_to_client => {}
        _ = notify.notified() => {}
    }
    lock(&worker.shared.tcp_spliced).remove(&id);
}
