//! Allocate (RFC 8656 §7.2, RFC 6156 dual allocations, RFC 6062 TCP allocations): the request
//! checked step by step and its quota taken, the relay sockets bound by the event loop, then
//! the allocation made; and its deletion.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::allocation::{Allocation, Bandwidth, Relay, channel_events, permission_events};
use super::auth::Authenticated;
use super::usage::UsageState;
use super::{
    BindFailure, BindResult, Buf, Command, Ctx, Event, FiveTuple, Inbound, PendingAllocation,
    QuotaKind, Refusal, RelayRequest, Server, Transport, canonical,
};
use crate::stun::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, AttrType, EvenPort, Lifetime,
    Message, RequestedAddressFamily, RequestedTransport, ReservationToken, XorMappedAddress,
    XorRelayedAddress,
};

/// What an Allocate's attributes ask for, checked against each other.
#[derive(Debug)]
struct AllocateRequest {
    /// A TCP relayed address (RFC 6062).
    tcp: bool,
    token: Option<ReservationToken>,
    even: Option<EvenPort>,
    /// The primary relayed address's family (REQUESTED-ADDRESS-FAMILY, IPv4 by default).
    family: AddressFamily,
    /// ADDITIONAL-ADDRESS-FAMILY (IPv6) asks for a second relayed address.
    additional: bool,
}

impl AllocateRequest {
    fn parse(msg: &Message<'_>, transport: Transport) -> Result<Self, Refusal> {
        let tcp = match msg.get::<RequestedTransport>() {
            Some(Ok(RequestedTransport::UDP)) => false,
            // RFC 6062 §5.1: TCP allocations are made over TCP or TLS control connections.
            Some(Ok(RequestedTransport::TCP)) if transport == Transport::Udp => {
                return Err((
                    400,
                    "Bad Request: TCP allocations need a TCP or TLS connection",
                ));
            }
            Some(Ok(RequestedTransport::TCP)) => true,
            Some(Ok(_)) => return Err((442, "Unsupported Transport Protocol")),
            _ => return Err((400, "Bad Request: REQUESTED-TRANSPORT is required")),
        };
        let token = msg.get::<ReservationToken>().and_then(Result::ok);
        let even = msg.get::<EvenPort>().and_then(Result::ok);
        let requested = msg.get::<RequestedAddressFamily>().and_then(Result::ok);
        let additional = msg.get::<AdditionalAddressFamily>().and_then(Result::ok);
        if token.is_some() && (even.is_some() || requested.is_some() || additional.is_some()) {
            return Err((
                400,
                "Bad Request: RESERVATION-TOKEN excludes EVEN-PORT and address families",
            ));
        }
        if requested.is_some() && additional.is_some() {
            return Err((
                400,
                "Bad Request: REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together",
            ));
        }
        if additional.is_some_and(|a| a.0 != AddressFamily::IPV6) {
            return Err((400, "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6"));
        }
        let family = requested.map_or(AddressFamily::IPV4, |r| r.0);
        if !family.is_known() {
            return Err((440, "Address Family not Supported"));
        }
        Ok(Self {
            tcp,
            token,
            even,
            family,
            additional: additional.is_some(),
        })
    }
}

impl Server {
    /// The address to relay from for `family`: the configured one, else the address the
    /// request came to, else a listening address of the family.
    fn relay_ip(&self, family: AddressFamily, server: SocketAddr) -> Option<IpAddr> {
        let matches = |ip: &IpAddr| AddressFamily::of(*ip) == family && !ip.is_unspecified();
        if let Some(ip) = self
            .config
            .relay_ips
            .iter()
            .find(|ip| AddressFamily::of(**ip) == family)
        {
            return Some(*ip);
        }
        let server_ip = server.ip().to_canonical();
        if matches(&server_ip) {
            return Some(server_ip);
        }
        self.config.listen_ips.iter().copied().find(matches)
    }

    /// The address to tell clients for a relay socket on `addr` (behind NAT: the public one).
    fn advertised(&self, addr: SocketAddr) -> SocketAddr {
        let ip = addr.ip();
        let public = self
            .config
            .external_ips
            .iter()
            .find_map(|&(public, private)| match private {
                Some(private) if private == ip => Some(public),
                None if public.is_ipv4() == ip.is_ipv4() => Some(public),
                _ => None,
            });
        SocketAddr::new(public.unwrap_or(ip), addr.port())
    }

    /// The LIFETIME asked for, within the configured bounds (RFC 8656 §7.2).
    pub(super) fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let l = self.config.lifetimes;
        match msg.get::<Lifetime>() {
            Some(Ok(Lifetime(secs))) => {
                Duration::from_secs(u64::from(secs)).clamp(l.default_allocation, l.max_allocation)
            }
            _ => l.default_allocation,
        }
    }

    /// Allocate (RFC 8656 §7.2): checked and counted against the quotas here, then the event
    /// loop binds the relay sockets ([`Command::BindRelays`]) and calls
    /// [`Server::complete_allocate`].
    pub(super) fn allocate(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: Authenticated,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        match self.prepare_allocation(inbound, msg, ctx, auth, now) {
            Ok(pending) => Command::BindRelays(Box::new(pending)),
            Err((code, reason)) => self.reject(ctx, out, code, reason),
        }
    }

    /// The steps of an Allocate before its relay sockets are bound; each may refuse it.
    fn prepare_allocation(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: Authenticated,
        now: Instant,
    ) -> Result<PendingAllocation, Refusal> {
        let tuple = inbound.tuple();
        self.may_allocate(&tuple)?;
        let request = AllocateRequest::parse(msg, inbound.transport)?;
        let (primary, additional, additional_error) =
            self.relay_requests(&request, inbound.local, now)?;
        self.take_quota(&auth.username, primary)?;
        if request.tcp
            && (msg.has(AttrType::EVEN_PORT)
                || msg.has(AttrType::RESERVATION_TOKEN)
                || msg.has(AttrType::ADDITIONAL_ADDRESS_FAMILY))
        {
            self.ledger.release(&auth.username);
            self.release_reserved(primary);
            return Err((
                400,
                "Bad Request: EVEN-PORT, RESERVATION-TOKEN and dual allocations are for UDP",
            ));
        }
        Ok(PendingAllocation {
            tuple,
            tcp: request.tcp,
            primary,
            additional,
            header: ctx.header,
            username: auth.username,
            key: auth.key,
            fingerprint: ctx.fingerprint,
            lifetime: self.lifetime(msg),
            additional_error,
        })
    }

    /// A 5-tuple has one allocation (RFC 8656 §7.2: 437 for a second), and none is made while
    /// draining.
    fn may_allocate(&self, tuple: &FiveTuple) -> Result<(), Refusal> {
        if self.allocations.contains_key(tuple) {
            return Err((437, "Allocation Mismatch"));
        }
        if self.draining {
            return Err((508, "Insufficient Capacity: server draining"));
        }
        Ok(())
    }

    /// The relay sockets to bind: the primary one (a reservation's, or one of the requested
    /// family, EVEN-PORT honoured), and for a dual allocation the IPv6 address, or the
    /// ADDRESS-ERROR-CODE to report when there is none (RFC 8656 §7.2, RFC 6156).
    fn relay_requests(
        &self,
        request: &AllocateRequest,
        local: SocketAddr,
        now: Instant,
    ) -> Result<(RelayRequest, Option<IpAddr>, Option<u16>), Refusal> {
        let primary = match request.token {
            Some(ReservationToken(token)) => match self.ledger.take_reservation(&token, now) {
                Some(addr) => RelayRequest::Reserved(addr),
                None => return Err((508, "Insufficient Capacity: unknown reservation")),
            },
            None => match self.relay_ip(request.family, local) {
                Some(ip) => RelayRequest::Bind {
                    ip,
                    even: request.even.is_some(),
                    reserve_next: request.even.is_some_and(|e| e.reserve),
                },
                None => return Err((440, "Address Family not Supported")),
            },
        };
        let (additional, additional_error) = if request.additional {
            match self.relay_ip(AddressFamily::IPV6, local) {
                Some(ip) => (Some(ip), None),
                None => (None, Some(440)),
            }
        } else {
            (None, None)
        };
        Ok((primary, additional, additional_error))
    }

    /// Takes one allocation of the user's and the total quota; refused, a reservation being
    /// adopted is released.
    fn take_quota(&mut self, username: &str, primary: RelayRequest) -> Result<(), Refusal> {
        let Err(quota) = self.ledger.acquire(username, &self.config.quotas) else {
            return Ok(());
        };
        self.counters.quota_rejected(quota);
        self.release_reserved(primary);
        Err(match quota {
            QuotaKind::User => (486, "Allocation Quota Reached"),
            _ => (508, "Insufficient Capacity"),
        })
    }

    /// A refused Allocate that would have adopted a reservation: its socket is closed.
    fn release_reserved(&mut self, primary: RelayRequest) {
        if let RelayRequest::Reserved(addr) = primary {
            self.events.push_back(Event::ReleaseReserved(addr));
        }
    }

    /// Finishes an Allocate once the event loop has bound (or failed to bind) its sockets.
    pub fn complete_allocate(
        &mut self,
        pending: PendingAllocation,
        bound: BindResult,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        let tuple = pending.tuple;
        let ctx = Ctx {
            transport: tuple.transport,
            header: pending.header,
            key: Some(pending.key.clone()),
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
        let primary = match bound.primary {
            Ok((handle, addr)) => Relay {
                handle,
                addr,
                advertised: self.advertised(addr),
            },
            Err(failure) => {
                self.ledger.release(&pending.username);
                if let Some(Ok((handle, _))) = bound.additional {
                    self.events.push_back(Event::ReleaseRelay(handle));
                }
                if let Some(addr) = bound.reserved {
                    self.events.push_back(Event::ReleaseReserved(addr));
                }
                return to_client(match failure {
                    BindFailure::NoCapacity => {
                        self.counters.quota_rejected(QuotaKind::Ports);
                        self.reject(&ctx, out, 508, "Insufficient Capacity")
                    }
                    BindFailure::Family => {
                        self.reject(&ctx, out, 440, "Address Family not Supported")
                    }
                });
            }
        };
        let mut relays = vec![primary];
        let mut additional_error = pending.additional_error;
        match bound.additional {
            Some(Ok((handle, addr))) => relays.push(Relay {
                handle,
                addr,
                advertised: self.advertised(addr),
            }),
            Some(Err(BindFailure::NoCapacity)) => additional_error = Some(508),
            Some(Err(BindFailure::Family)) => additional_error = Some(440),
            None => {}
        }
        let token = bound.reserved.map(|addr| {
            self.token_counter += 1;
            let token = reservation_token(self.token_counter, &self.config.auth.nonce_key, now);
            self.ledger
                .reserve(token, addr, now + self.config.lifetimes.reservation);
            token
        });

        let mut allocation = Allocation::new(
            tuple,
            pending.username,
            relays,
            now + pending.lifetime,
            (self.config.quotas.max_bps != 0)
                .then(|| Bandwidth::new(self.config.quotas.max_bps, now)),
            pending.header.tid,
        );
        allocation.tcp = pending.tcp;
        let lifetime = pending.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
        let command = self.success(&ctx, out, |e| {
            for r in &allocation.relays {
                e.add(&XorRelayedAddress(r.advertised))?;
            }
            if let Some(code) = additional_error {
                let reason = if code == 440 {
                    "Address Family not Supported"
                } else {
                    "Insufficient Capacity"
                };
                e.add(&AddressErrorCode {
                    family: AddressFamily::IPV6,
                    code,
                    reason,
                })?;
            }
            e.add(&Lifetime(lifetime))?;
            if let Some(token) = token {
                e.add(&ReservationToken(token))?;
            }
            e.add(&XorMappedAddress(canonical(tuple.client)))
        });
        if let Command::Reply { len } = command {
            allocation.allocate_response = out[..len].to_vec();
        }
        for r in &allocation.relays {
            self.by_relay.insert(r.handle, tuple);
        }
        self.events.push_back(Event::AllocationInstalled {
            tuple,
            relays: allocation.relays.clone(),
        });
        allocation.usage = UsageState::new(self.ledger.allocation_id(self.unix(now)), now);
        self.allocations.insert(tuple, allocation);
        self.report_new(&tuple, lifetime);
        self.counters.allocation_opened();
        to_client(command)
    }

    /// Ends an allocation: out of the kernel fast path, its sockets released, its quota
    /// returned.
    pub(super) fn delete_allocation(&mut self, tuple: &FiveTuple) {
        let report = self.deleted_report(tuple);
        let Some(a) = self.allocations.remove(tuple) else {
            return;
        };
        self.ledger.release(&a.username);
        if a.tcp {
            self.close_tcp_connections_of(tuple);
        }
        // Out of the kernel first, then the sockets: a released port may be bound again at
        // once, by another allocation that the kernel must not confuse with this one.
        let channels: Vec<_> = a.channels.iter().map(|(&n, c)| (n, c.peer)).collect();
        channel_events(&mut self.events, tuple, &a, &channels, false);
        permission_events(
            &mut self.events,
            tuple,
            &a,
            &a.permitted(),
            false,
            &self.config.policy,
        );
        self.events
            .push_back(Event::AllocationRemoved { tuple: *tuple });
        if let Some(report) = report {
            self.events.push_back(Event::Usage(report));
        }
        for r in &a.relays {
            self.by_relay.remove(&r.handle);
            self.events.push_back(Event::ReleaseRelay(r.handle));
        }
        self.counters.allocation_closed();
        self.counters.permissions_removed(a.permissions.len());
        self.counters.channels_removed(a.channels.len());
    }
}

/// An unguessable reservation token: a MAC of a counter and the time under the relay's key.
fn reservation_token(counter: u64, key: &[u8; 32], now: Instant) -> [u8; 8] {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(&counter.to_be_bytes());
    mac.update(format!("{now:?}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut token = [0u8; 8];
    token.copy_from_slice(&bytes[..8]);
    token
}
