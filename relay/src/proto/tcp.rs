//! RFC 6062 TCP allocations: the relayed address is a TCP listener; Connect opens a connection
//! to a peer, a peer connecting to the relayed address is announced with ConnectionAttempt, and
//! ConnectionBind on a new client connection turns it into a raw pipe to that peer. The core
//! keeps the bookkeeping (connection ids, their allocation, the 30-second binding window) in the
//! [`super::Ledger`] shared by all shards, since a client's data connection may land on another
//! worker than its control connection; the event loop owns the TCP streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{Authenticated, Key};
use super::{
    Buf, Command, Ctx, DropReason, Event, FiveTuple, Inbound, RelayHandle, Server, Transport,
};
use crate::stun::{
    Class, ConnectionId, EncodeError, Encoder, Message, MessageType, Method, TransactionId,
    XorPeerAddress,
};

/// How long a peer data connection waits for its ConnectionBind (RFC 6062 §5.2, §5.3).
pub const BIND_WINDOW: Duration = Duration::from_secs(30);

/// A peer data connection the core knows of.
#[derive(Debug, Clone)]
pub struct TcpConnection {
    /// The control connection, which owns the allocation.
    pub control: FiveTuple,
    /// The allocation's user: ConnectionBind must be made with the same credentials.
    pub username: String,
    pub peer: SocketAddr,
    /// Until a ConnectionBind arrives: when the connection is given up.
    pub pending_until: Option<Instant>,
    /// The client data connection bound to it.
    pub data: Option<FiveTuple>,
}

/// A Connect the core accepted, waiting for the event loop's outgoing TCP connection.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingConnect {
    pub tuple: FiveTuple,
    /// The allocation's relay listener: the connection's local address.
    pub relay: RelayHandle,
    pub relay_addr: SocketAddr,
    pub peer: SocketAddr,
    pub(super) header: crate::stun::Header,
    pub(super) key: Key,
    pub(super) fingerprint: bool,
}

impl Server {
    /// Registers a peer data connection; returns its id.
    fn register_tcp_connection(&self, conn: TcpConnection) -> u32 {
        let mut registry = self
            .ledger
            .tcp_connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            let id = self
                .ledger
                .next_connection_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if id != 0 && !registry.contains_key(&id) {
                registry.insert(id, conn);
                return id;
            }
        }
    }

    fn tcp_registry(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u32, TcpConnection>> {
        self.ledger
            .tcp_connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Connect (RFC 6062 §5.2).
    pub(super) fn connect(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: &Authenticated,
        out: &mut [u8],
    ) -> Command {
        let tuple = inbound.tuple();
        if let Err((code, reason)) = self.owned_allocation(&tuple, auth) {
            return self.reject(ctx, out, code, reason);
        }
        if !self.allocations[&tuple].tcp {
            return self.reject(ctx, out, 400, "Bad Request: Connect needs a TCP allocation");
        }
        let peer = match self.checked_peer(msg, &tuple) {
            Ok(peer) => peer,
            Err((code, reason)) => return self.reject(ctx, out, code, reason),
        };
        let exists = self.connecting.contains(&(tuple, peer))
            || self
                .tcp_registry()
                .values()
                .any(|c| c.control == tuple && c.peer == peer);
        if exists {
            return self.reject(ctx, out, 446, "Connection Already Exists");
        }
        let Some(&relay) = self.allocations[&tuple].relay_for(peer) else {
            return self.reject(ctx, out, 443, "Peer Address Family Mismatch");
        };
        self.connecting.insert((tuple, peer));
        Command::Connect(Box::new(PendingConnect {
            tuple,
            relay: relay.handle,
            relay_addr: relay.addr,
            peer,
            header: ctx.header,
            key: auth.key.clone(),
            fingerprint: ctx.fingerprint,
        }))
    }

    /// Finishes a Connect: `connected` says whether the outgoing connection was made. Returns
    /// the answer to the client and, on success, the new connection id (the event loop keeps
    /// the stream under it until ConnectionBind).
    pub fn complete_connect(
        &mut self,
        pending: PendingConnect,
        connected: bool,
        now: Instant,
        out: &mut [u8],
    ) -> (Command, Option<u32>) {
        let tuple = pending.tuple;
        self.connecting.remove(&(tuple, pending.peer));
        let ctx = Ctx {
            transport: tuple.transport,
            header: pending.header,
            key: Some(pending.key),
            fingerprint: pending.fingerprint,
            // Authenticated: no bound.
            request_len: usize::MAX,
        };
        let to_client = |command: Command| match command {
            Command::Reply { len } => Command::ToClient {
                tuple,
                data: Buf::Output(len),
            },
            other => other,
        };
        let Some(username) = self.allocations.get(&tuple).map(|a| a.username.clone()) else {
            // The allocation went away while connecting.
            return (Command::None, None);
        };
        if !connected {
            return (
                to_client(self.reject(&ctx, out, 447, "Connection Timeout or Failure")),
                None,
            );
        }
        let id = self.register_tcp_connection(TcpConnection {
            control: tuple,
            username,
            peer: pending.peer,
            pending_until: Some(now + BIND_WINDOW),
            data: None,
        });
        (
            to_client(self.success(&ctx, out, |e| e.add(&ConnectionId(id)))),
            Some(id),
        )
    }

    /// A peer connected to the relayed address of `relay` (RFC 6062 §5.4). Returns the
    /// connection id and the ConnectionAttempt indication for the client, or None to refuse the
    /// connection (no allocation, not TCP, or no permission).
    pub fn peer_connected(
        &mut self,
        relay: RelayHandle,
        peer: SocketAddr,
        now: Instant,
        out: &mut [u8],
    ) -> Option<(u32, Command)> {
        let tuple = *self.by_relay.get(&relay)?;
        let a = self.allocations.get(&tuple)?;
        if !a.tcp {
            return None;
        }
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if !a.has_permission(peer.ip(), now) {
            self.counters
                .dropped(tuple.transport, DropReason::NoPermission);
            return None;
        }
        let username = a.username.clone();
        let id = self.register_tcp_connection(TcpConnection {
            control: tuple,
            username,
            peer,
            pending_until: Some(now + BIND_WINDOW),
            data: None,
        });
        let typ = MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication);
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&id.to_be_bytes());
        let written = (|| {
            let mut e = Encoder::new(out, typ, TransactionId::new(tid))?;
            e.add(&XorPeerAddress(peer))?;
            e.add(&ConnectionId(id))?;
            e.fingerprint()?;
            Ok::<_, EncodeError>(e.finish())
        })();
        let Ok(len) = written else {
            self.tcp_registry().remove(&id);
            return None;
        };
        Some((
            id,
            Command::ToClient {
                tuple,
                data: Buf::Output(len),
            },
        ))
    }

    /// ConnectionBind (RFC 6062 §5.3), on a new client connection.
    pub(super) fn connection_bind(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: &Authenticated,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        if inbound.transport == Transport::Udp {
            return self.reject(
                ctx,
                out,
                400,
                "Bad Request: ConnectionBind needs a TCP or TLS connection",
            );
        }
        let data = inbound.tuple();
        if self.allocations.contains_key(&data) {
            return self.reject(
                ctx,
                out,
                400,
                "Bad Request: this connection holds an allocation",
            );
        }
        let Some(Ok(ConnectionId(id))) = msg.get::<ConnectionId>() else {
            return self.reject(ctx, out, 400, "Bad Request: CONNECTION-ID is required");
        };
        let state = self
            .tcp_registry()
            .get(&id)
            .map(|c| (c.pending_until, c.username == auth.username));
        match state {
            None => {
                return self.reject(ctx, out, 400, "Bad Request: unknown CONNECTION-ID");
            }
            Some((pending, _)) if pending.is_none_or(|until| until <= now) => {
                return self.reject(
                    ctx,
                    out,
                    400,
                    "Bad Request: connection already bound or expired",
                );
            }
            Some((_, false)) => return self.reject(ctx, out, 441, "Wrong Credentials"),
            Some((_, true)) => {}
        }
        match self.success(ctx, out, |_| Ok(())) {
            Command::Reply { len } => {
                if let Some(conn) = self.tcp_registry().get_mut(&id) {
                    conn.pending_until = None;
                    conn.data = Some(data);
                }
                self.data_connections.insert(data, id);
                Command::BindData {
                    len,
                    connection_id: id,
                }
            }
            other => other,
        }
    }

    /// Forgets a peer data connection (either side closed); the event loop closes the rest.
    pub fn tcp_connection_closed(&mut self, id: u32) {
        let removed = self.tcp_registry().remove(&id);
        if let Some(data) = removed.and_then(|c| c.data) {
            self.data_connections.remove(&data);
        }
    }

    /// Ends the TCP connections of an allocation (it is being deleted).
    pub(super) fn close_tcp_connections_of(&mut self, control: &FiveTuple) {
        let ids: Vec<u32> = self
            .tcp_registry()
            .iter()
            .filter(|(_, c)| c.control == *control)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.tcp_connection_closed(id);
            self.events.push_back(Event::CloseTcp(id));
        }
        self.connecting.retain(|(t, _)| t != control);
    }

    /// Gives up connections whose ConnectionBind did not come in time.
    pub(super) fn expire_tcp_connections(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .tcp_registry()
            .iter()
            .filter(|(_, c)| c.pending_until.is_some_and(|until| until <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.tcp_connection_closed(id);
            self.events.push_back(Event::CloseTcp(id));
        }
    }
}
