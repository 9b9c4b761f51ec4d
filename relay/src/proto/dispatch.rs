//! Dispatch: a client's packet to its handler (ChannelData, indications, Binding, the TURN
//! requests after authentication and the retransmission cache; RFC 8489 §6.3, RFC 8656 §7.2),
//! drops counted by reason, and the responses: success, error answers (RFC 8489 §14.8), and
//! the RFC 3489 forms classic clients need. Methods are matched exhaustively, so a method added
//! to [`KnownMethod`] must be given a handler or a refusal here.
//!
//! Answers to strangers (requests without valid credentials, Binding included) are no larger
//! than they must be, since a spoofed source turns every byte of them into reflected traffic:
//! no SOFTWARE (it goes only into answers to authenticated requests; the `software` setting
//! names the relay to its users, not to scanners), no reason phrase in their error codes (as
//! coturn does since 4.10), FINGERPRINT only when the request carried one, and over UDP at most
//! [`AMPLIFICATION`](super::AMPLIFICATION) times the request's size. Messages RFC 8489 §6.3
//! says to discard are discarded, not answered: a length field that disagrees with the
//! datagram or is not a multiple of 4, attributes that do not tile the message, anything after
//! or a malformed FINGERPRINT, and requests of a method this server does not serve.

#![deny(clippy::wildcard_enum_match_arm)]

use std::net::IpAddr;
use std::time::Instant;

use super::auth::{self, AuthError, Key};
use super::{
    Command, Ctx, DropReason, FiveTuple, Inbound, MIN_ATTRIBUTED_REQUEST, Server, Transport,
    allocation,
};
use crate::stun::{
    AttrType, Class, DecodeError, DecodeErrorKind, EncodeError, Encoder, ErrorCode, Message,
    MessageType, Method, Nonce, PasswordAlgorithms, Realm, Software, TransactionId,
    UnknownAttributes, is_channel_data,
};

/// The STUN methods this server knows (RFC 8489, RFC 8656, RFC 6062), so that what it does with
/// each is decided by an exhaustive match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownMethod {
    Binding,
    Allocate,
    Refresh,
    Send,
    Data,
    CreatePermission,
    ChannelBind,
    Connect,
    ConnectionBind,
    ConnectionAttempt,
    /// Any other 12-bit method.
    Other,
}

impl KnownMethod {
    fn of(method: Method) -> Self {
        match method {
            Method::BINDING => KnownMethod::Binding,
            Method::ALLOCATE => KnownMethod::Allocate,
            Method::REFRESH => KnownMethod::Refresh,
            Method::SEND => KnownMethod::Send,
            Method::DATA => KnownMethod::Data,
            Method::CREATE_PERMISSION => KnownMethod::CreatePermission,
            Method::CHANNEL_BIND => KnownMethod::ChannelBind,
            Method::CONNECT => KnownMethod::Connect,
            Method::CONNECTION_BIND => KnownMethod::ConnectionBind,
            Method::CONNECTION_ATTEMPT => KnownMethod::ConnectionAttempt,
            _ => KnownMethod::Other,
        }
    }
}

/// The requests that need authentication: TURN's (RFC 8656) and RFC 6062's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnRequest {
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Connect,
    ConnectionBind,
}

impl Server {
    /// Handles one packet from a client (a datagram, or one frame of a stream), writing any
    /// reply into `out` (at least [`MAX_REPLY_LEN`] bytes).
    pub fn handle_client(
        &mut self,
        inbound: &Inbound<'_>,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        let Some(&first) = inbound.packet.first() else {
            return self.drop(inbound.transport, DropReason::NotStun);
        };
        if is_channel_data(first) {
            return self.client_channel_data(inbound, now);
        }
        match Message::decode(inbound.packet) {
            Ok(msg) => self.handle_message(inbound, &msg, now, out),
            Err(err) => self.handle_malformed(inbound.transport, &err, inbound.packet.len(), out),
        }
    }

    /// Counts a packet that gets no answer and is not relayed.
    pub(super) fn drop(&self, transport: Transport, reason: DropReason) -> Command {
        self.counters.dropped(transport, reason);
        Command::None
    }

    fn handle_malformed(
        &self,
        transport: Transport,
        err: &DecodeError,
        request_len: usize,
        out: &mut [u8],
    ) -> Command {
        // RFC 8489 §6.3: a message whose length is not sensible, whose attributes do not tile
        // it or whose FINGERPRINT is misplaced or malformed is silently discarded; only a
        // request whose framing holds and one of whose other attributes is malformed is
        // answered 400, naming its transaction.
        let answerable = matches!(
            err.kind,
            DecodeErrorKind::BadAttribute(typ) if typ != AttrType::FINGERPRINT
        );
        match err.header {
            Some(header)
                if answerable
                    && header.typ.class == Class::Request
                    && header.has_magic_cookie() =>
            {
                let ctx = Ctx {
                    transport,
                    header,
                    key: None,
                    fingerprint: false,
                    request_len,
                };
                self.reject(&ctx, out, 400, "Bad Request: malformed message")
            }
            Some(_) => self.drop(transport, DropReason::Malformed),
            None => self.drop(transport, DropReason::NotStun),
        }
    }

    fn handle_message(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        let header = *msg.header();
        let transport = inbound.transport;
        if !header.has_magic_cookie() {
            // RFC 3489 clients: only Binding requests exist for them.
            if header.typ != MessageType::new(Method::BINDING, Class::Request) {
                return self.drop(transport, DropReason::ClassicNotBinding);
            }
        } else if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
            return self.drop(transport, DropReason::BadFingerprint);
        }
        match header.typ.class {
            Class::Success | Class::Error => {
                return self.drop(transport, DropReason::UnexpectedResponse);
            }
            Class::Indication => return self.handle_indication(inbound, msg, now),
            Class::Request => {}
        }
        let mut ctx = Ctx {
            transport,
            header,
            key: None,
            fingerprint: msg.has_fingerprint(),
            request_len: inbound.packet.len(),
        };
        let unknown = msg.unknown_comprehension_required();
        if !unknown.is_empty() {
            let unknown = UnknownAttributes(*unknown);
            return self.error(&ctx, out, 420, "Unknown Attribute", |e| e.add(&unknown));
        }
        if let Some(bad) = msg.decoded().find_map(Result::err) {
            tracing::debug!(remote = %inbound.remote, error = %bad, "malformed attribute");
            return self.reject(&ctx, out, 400, "Bad Request: malformed attribute");
        }
        // Binding needs no authentication; the TURN requests do; the other methods are not
        // requests.
        let request = match KnownMethod::of(header.typ.method) {
            KnownMethod::Binding => return self.binding(inbound, msg, &ctx, out),
            KnownMethod::Allocate => TurnRequest::Allocate,
            KnownMethod::Refresh => TurnRequest::Refresh,
            KnownMethod::CreatePermission => TurnRequest::CreatePermission,
            KnownMethod::ChannelBind => TurnRequest::ChannelBind,
            KnownMethod::Connect => TurnRequest::Connect,
            KnownMethod::ConnectionBind => TurnRequest::ConnectionBind,
            // RFC 8489 §6.3: a method this server does not serve, or a class the method does
            // not have, is discarded.
            KnownMethod::Send
            | KnownMethod::Data
            | KnownMethod::ConnectionAttempt
            | KnownMethod::Other => {
                return self.drop(transport, DropReason::Malformed);
            }
        };

        // A retransmission gets the answer its first copy got (RFC 8656 §7.2, RFC 8489 §6.3).
        let tuple = inbound.tuple();
        if let Some(cached) = self.cached_response(&tuple, &header.tid, now) {
            let len = cached.len().min(out.len());
            out[..len].copy_from_slice(&cached[..len]);
            return Command::Reply { len };
        }

        let client_ip = inbound.remote.ip();
        if (msg.has_integrity() || msg.has_integrity_sha256())
            && self.ledger.failures.is_limited(client_ip, now)
        {
            self.counters.auth_failure(auth::Rejection::RateLimited);
            return self.drop(transport, DropReason::AuthRateLimited);
        }
        let auth = match self
            .config
            .auth
            .authenticate(msg, client_ip, self.unix(now))
        {
            Ok(auth) => auth,
            Err(err) => return self.auth_error(&ctx, err, client_ip, now, out),
        };
        ctx.key = Some(auth.key.clone());
        match request {
            TurnRequest::Allocate => self.allocate(inbound, msg, &ctx, auth, now, out),
            TurnRequest::Refresh => self.refresh(inbound, msg, &ctx, &auth, now, out),
            TurnRequest::CreatePermission => {
                self.create_permission(inbound, msg, &ctx, &auth, now, out)
            }
            TurnRequest::ChannelBind => self.channel_bind(inbound, msg, &ctx, &auth, now, out),
            TurnRequest::Connect => self.connect(inbound, msg, &ctx, &auth, out),
            TurnRequest::ConnectionBind => {
                self.connection_bind(inbound, msg, &ctx, &auth, now, out)
            }
        }
    }

    fn cached_response(
        &self,
        tuple: &FiveTuple,
        tid: &TransactionId,
        now: Instant,
    ) -> Option<&[u8]> {
        if let Some(a) = self.allocations.get(tuple) {
            return a.cached_response(tid, now);
        }
        self.recent
            .get(tuple)
            .filter(|(at, t, _)| {
                t == tid && now.saturating_duration_since(*at) < allocation::TRANSACTION_CACHE
            })
            .map(|(_, _, r)| r.as_slice())
    }

    fn auth_error(
        &mut self,
        ctx: &Ctx,
        err: AuthError,
        client: IpAddr,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        let unix = self.unix(now);
        let (code, reason) = match err {
            AuthError::Challenge => (401, "Unauthorized"),
            AuthError::StaleNonce => (438, "Stale Nonce"),
            AuthError::BadRequest(why) => {
                tracing::debug!(%client, why, "bad authentication attributes");
                return self.reject(ctx, out, 400, "Bad Request");
            }
            AuthError::Pending => {
                // Asked again by the event loop once the user source has the answer.
                return Command::AwaitUser;
            }
            AuthError::Busy => return self.drop(ctx.transport, DropReason::UserSourceBusy),
            AuthError::Rejected(why) => {
                self.counters.auth_failure(why);
                if self.ledger.failures.failed(client, now) == auth::Charged::Overflow {
                    self.counters.auth_limiter_overflow();
                }
                tracing::debug!(%client, reason = why.as_str(), "authentication failed");
                (401, "Unauthorized")
            }
        };
        // RFC 8489 §9.2.4: REALM and NONCE; the nonce cookie and PASSWORD-ALGORITHMS offer
        // SHA-256. Where that challenge would exceed the answer's budget (a request too small
        // to pay for it over UDP), the MD5 challenge RFC 5389 clients know: a nonce without
        // the cookie and no PASSWORD-ALGORITHMS. A client that gets it authenticates with MD5,
        // as it would with a server that offers nothing else.
        let realm = self.config.auth.realm.clone();
        let challenge = |out: &mut [u8], offer: bool| {
            let nonce = self.config.auth.nonce(client, unix, offer);
            self.error_len(ctx, out, code, reason, |e| {
                e.add(&Realm(&realm))?;
                e.add(&Nonce(&nonce))?;
                if offer {
                    e.add(&PasswordAlgorithms::MD5_AND_SHA256)?;
                }
                Ok(())
            })
        };
        let result = match challenge(out, true) {
            Ok(len) if len > ctx.budget() => challenge(out, false),
            other => other,
        };
        // The MD5 challenge is the least a client can be told to authenticate at all. With a
        // realm of up to 32 bytes it fits 3x a request that carries one attribute (an Allocate
        // with REQUESTED-TRANSPORT, 28 bytes: the smallest a real client sends); a longer
        // realm would make every such client fail without a word, so for requests with at
        // least one attribute it is sent anyway (the configuration warns of it at start-up:
        // `config::build_with`). Only a bare header is refused the challenge it cannot pay for.
        let budget = if ctx.request_len >= MIN_ATTRIBUTED_REQUEST {
            usize::MAX
        } else {
            ctx.budget()
        };
        self.reply_within(ctx, Some(code), result, budget)
    }

    fn handle_indication(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        now: Instant,
    ) -> Command {
        let transport = inbound.transport;
        match KnownMethod::of(msg.method()) {
            // A Binding indication is a keepalive (RFC 8489 §6.3.2): nothing to answer.
            KnownMethod::Binding if msg.unknown_comprehension_required().is_empty() => {
                self.counters.keepalive(transport);
                Command::None
            }
            KnownMethod::Send => self.send_indication(inbound, msg, now),
            KnownMethod::Binding
            | KnownMethod::Allocate
            | KnownMethod::Refresh
            | KnownMethod::Data
            | KnownMethod::CreatePermission
            | KnownMethod::ChannelBind
            | KnownMethod::Connect
            | KnownMethod::ConnectionBind
            | KnownMethod::ConnectionAttempt
            | KnownMethod::Other => self.drop(transport, DropReason::UnexpectedIndication),
        }
    }

    fn respond(
        &self,
        ctx: &Ctx,
        out: &mut [u8],
        class: Class,
        body: impl FnOnce(&mut Encoder<'_>) -> Result<(), EncodeError>,
    ) -> Result<usize, EncodeError> {
        let classic = !ctx.header.has_magic_cookie();
        let typ = MessageType::new(ctx.header.typ.method, class);
        let mut enc = Encoder::with_cookie(out, typ, ctx.header.cookie, ctx.header.tid)?;
        body(&mut enc)?;
        // SOFTWARE only for authenticated clients (see the module docs); RFC 3489 clients
        // (Binding only, never authenticated) get none.
        let software = &self.config.software;
        if !software.is_empty() && ctx.key.is_some() {
            enc.add(&Software(software))?;
        }
        if let Some(key) = &ctx.key {
            match key {
                Key::Md5(k) => enc.message_integrity(k)?,
                Key::Sha256(k) => enc.message_integrity_sha256(k)?,
            }
        }
        if !classic && ctx.fingerprint {
            enc.fingerprint()?;
        }
        Ok(enc.finish())
    }

    /// The answer `respond` wrote, sent if it is within the request's budget
    /// ([`Ctx::budget`]) and counted; dropped and counted otherwise.
    fn reply(&self, ctx: &Ctx, code: Option<u16>, written: Result<usize, EncodeError>) -> Command {
        self.reply_within(ctx, code, written, ctx.budget())
    }

    /// [`Server::reply`] with the budget given.
    fn reply_within(
        &self,
        ctx: &Ctx,
        code: Option<u16>,
        written: Result<usize, EncodeError>,
        budget: usize,
    ) -> Command {
        match written {
            Ok(len) if len > budget => self.drop(ctx.transport, DropReason::Amplification),
            Ok(len) => {
                self.counters
                    .request(ctx.transport, ctx.header.typ.method, code);
                Command::Reply { len }
            }
            // Only a caller passing a buffer smaller than MAX_REPLY_LEN gets here.
            Err(err) => {
                tracing::error!(%err, "reply does not fit the output buffer");
                Command::None
            }
        }
    }

    pub(super) fn success(
        &self,
        ctx: &Ctx,
        out: &mut [u8],
        body: impl FnOnce(&mut Encoder<'_>) -> Result<(), EncodeError>,
    ) -> Command {
        let written = self.respond(ctx, out, Class::Success, body);
        self.reply(ctx, None, written)
    }

    /// An error response with ERROR-CODE `code` and `reason` (none for a request without
    /// credentials), and the attributes `extra` adds.
    pub(super) fn error(
        &self,
        ctx: &Ctx,
        out: &mut [u8],
        code: u16,
        reason: &str,
        extra: impl FnOnce(&mut Encoder<'_>) -> Result<(), EncodeError>,
    ) -> Command {
        let written = self.error_len(ctx, out, code, reason, extra);
        self.reply(ctx, Some(code), written)
    }

    /// [`Server::error`]'s response, written but not yet sent nor counted: its length.
    fn error_len(
        &self,
        ctx: &Ctx,
        out: &mut [u8],
        code: u16,
        reason: &str,
        extra: impl FnOnce(&mut Encoder<'_>) -> Result<(), EncodeError>,
    ) -> Result<usize, EncodeError> {
        let classic = !ctx.header.has_magic_cookie();
        let reason = if ctx.key.is_some() { reason } else { "" };
        self.respond(ctx, out, Class::Error, |e| {
            if classic {
                // RFC 3489 §11.2.9: the reason is padded with spaces into the length.
                let mut value = [b' '; 4 + 64];
                let n = reason.len().min(64);
                value[..4].copy_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
                value[4..4 + n].copy_from_slice(&reason.as_bytes()[..n]);
                e.add_raw(AttrType::ERROR_CODE, &value[..4 + n.div_ceil(4) * 4])?;
            } else {
                e.add(&ErrorCode::new(code, reason))?;
            }
            extra(e)
        })
    }

    /// An error response with ERROR-CODE `code` and `reason` and nothing else: most refusals.
    pub(super) fn reject(&self, ctx: &Ctx, out: &mut [u8], code: u16, reason: &str) -> Command {
        self.error(ctx, out, code, reason, |_| Ok(()))
    }
}
