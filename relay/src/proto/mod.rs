//! The protocol core: bytes from a client in, a decision out. No sockets, no clock; the event
//! loop owns I/O and applies what this returns.
//!
//! Today it serves STUN Binding (RFC 8489 §6.3, with RFC 3489 clients answered in their own
//! terms); the TURN methods land here as the state machine grows.

pub mod auth;
pub mod policy;

use std::net::SocketAddr;

use crate::stun::{
    AttrType, ChangeRequest, Class, DecodeError, Encoder, ErrorCode, Header, MappedAddress,
    Message, MessageType, Method, Software, UnknownAttributes, XorMappedAddress, is_channel_data,
};

/// The client-facing transport a packet came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// A bounded name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Why a packet got no answer. Each is counted; none is logged per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Neither STUN nor ChannelData.
    NotStun,
    /// Looked like STUN but was malformed, and was not a request that could be answered 400.
    Malformed,
    /// FINGERPRINT present but wrong: not STUN after all (RFC 8489 §7.3).
    BadFingerprint,
    /// A success or error response: this server sends no requests.
    UnexpectedResponse,
    /// An indication this server does not act on.
    UnexpectedIndication,
    /// ChannelData for a channel that is not bound.
    UnknownChannel,
    /// An RFC 3489 (no magic cookie) message other than a Binding request.
    ClassicNotBinding,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::NotStun,
        DropReason::Malformed,
        DropReason::BadFingerprint,
        DropReason::UnexpectedResponse,
        DropReason::UnexpectedIndication,
        DropReason::UnknownChannel,
        DropReason::ClassicNotBinding,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotStun => "not_stun",
            DropReason::Malformed => "malformed",
            DropReason::BadFingerprint => "bad_fingerprint",
            DropReason::UnexpectedResponse => "unexpected_response",
            DropReason::UnexpectedIndication => "unexpected_indication",
            DropReason::UnknownChannel => "unknown_channel",
            DropReason::ClassicNotBinding => "classic_not_binding",
        }
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send `out[..len]` back to the client; `code` is the error code, if an error response.
    Reply {
        len: usize,
        method: Method,
        code: Option<u16>,
    },
    /// Handled, nothing to send (a Binding indication: a keepalive).
    Consumed { method: Method },
    /// Ignored and counted.
    Dropped(DropReason),
}

/// A packet from a client.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub transport: Transport,
    /// The server address it arrived on.
    pub local: SocketAddr,
    /// The client's address as seen by the server (its server-reflexive address).
    pub remote: SocketAddr,
    pub packet: &'a [u8],
}

/// Largest reply the server writes; callers pass a buffer at least this big.
pub const MAX_REPLY_LEN: usize = 1024;

/// The protocol core.
#[derive(Debug, Clone)]
pub struct Server {
    software: String,
    /// SOFTWARE as RFC 3489 clients need it: its SERVER attribute's length had to be a multiple
    /// of 4, so the text is padded with spaces (some classic clients reject anything else).
    software_classic: String,
}

impl Server {
    /// `software` is sent as SOFTWARE in every response; empty sends none.
    pub fn new(software: impl Into<String>) -> Self {
        let mut software = software.into();
        // SOFTWARE is capped at 763 bytes (RFC 8489 §14.14); cut on a character boundary.
        while software.len() > Software::MAX_LEN {
            software.pop();
        }
        let mut software_classic = software.clone();
        while !software_classic.len().is_multiple_of(4) {
            software_classic.push(' ');
        }
        Self {
            software,
            software_classic,
        }
    }

    /// Handles one packet (a UDP datagram, or one frame of a stream), writing any reply into
    /// `out` (at least [`MAX_REPLY_LEN`] bytes).
    pub fn handle(&mut self, inbound: &Inbound<'_>, out: &mut [u8]) -> Outcome {
        let Some(&first) = inbound.packet.first() else {
            return Outcome::Dropped(DropReason::NotStun);
        };
        if is_channel_data(first) {
            // No channel is bound yet: TURN allocations arrive with the relay's state machine.
            return Outcome::Dropped(DropReason::UnknownChannel);
        }
        match Message::decode(inbound.packet) {
            Ok(msg) => self.handle_message(inbound, &msg, out),
            Err(err) => self.handle_malformed(&err, out),
        }
    }

    fn handle_malformed(&self, err: &DecodeError, out: &mut [u8]) -> Outcome {
        match err.header {
            // A request whose header was readable gets a 400 naming its transaction.
            Some(header) if header.typ.class == Class::Request && header.has_magic_cookie() => {
                self.error_response(&header, 400, "Bad Request: malformed message", None, out)
            }
            Some(_) => Outcome::Dropped(DropReason::Malformed),
            None => Outcome::Dropped(DropReason::NotStun),
        }
    }

    fn handle_message(&self, inbound: &Inbound<'_>, msg: &Message<'_>, out: &mut [u8]) -> Outcome {
        let header = *msg.header();
        let classic = !header.has_magic_cookie();
        if classic {
            // RFC 3489 clients: only Binding requests exist for them.
            if header.typ != MessageType::new(Method::BINDING, Class::Request) {
                return Outcome::Dropped(DropReason::ClassicNotBinding);
            }
        } else {
            if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
                return Outcome::Dropped(DropReason::BadFingerprint);
            }
            match header.typ.class {
                Class::Success | Class::Error => {
                    return Outcome::Dropped(DropReason::UnexpectedResponse);
                }
                Class::Indication => {
                    // A Binding indication is a keepalive (RFC 8489 §6.3.2): nothing to answer.
                    return if header.typ.method == Method::BINDING
                        && msg.unknown_comprehension_required().is_empty()
                    {
                        Outcome::Consumed {
                            method: Method::BINDING,
                        }
                    } else {
                        Outcome::Dropped(DropReason::UnexpectedIndication)
                    };
                }
                Class::Request => {}
            }
        }
        let unknown = msg.unknown_comprehension_required();
        if !unknown.is_empty() {
            return self.error_response(
                &header,
                420,
                "Unknown Attribute",
                Some(&UnknownAttributes(*unknown)),
                out,
            );
        }
        if let Some(bad) = msg.decoded().find_map(Result::err) {
            tracing::debug!(remote = %inbound.remote, error = %bad, "malformed attribute");
            return self.error_response(
                &header,
                400,
                "Bad Request: malformed attribute",
                None,
                out,
            );
        }
        // This server has no alternate address, so it cannot answer from another IP or port:
        // RFC 5780 §6.1 asks for 420 rather than a response that would mislead the client's
        // NAT behaviour discovery (RFC 3489 clients make the same test).
        if let Some(Ok(change)) = msg.get::<ChangeRequest>()
            && (change.change_ip || change.change_port)
        {
            let unsupported = UnknownAttributes([AttrType::CHANGE_REQUEST].into_iter().collect());
            return self.error_response(
                &header,
                420,
                "Unknown Attribute: no alternate address",
                Some(&unsupported),
                out,
            );
        }
        match header.typ.method {
            Method::BINDING if classic => self.classic_binding_response(inbound, &header, out),
            Method::BINDING => self.binding_response(inbound, &header, out),
            _ => self.error_response(&header, 400, "Bad Request: method not supported", None, out),
        }
    }

    fn binding_response(&self, inbound: &Inbound<'_>, header: &Header, out: &mut [u8]) -> Outcome {
        let remote = canonical(inbound.remote);
        let typ = MessageType::new(Method::BINDING, Class::Success);
        let written = (|| {
            let mut enc = Encoder::new(out, typ, header.tid)?;
            enc.add(&XorMappedAddress(remote))?;
            // MAPPED-ADDRESS too, as coturn does: RFC 5389 clients ignore it, RFC 3489-era
            // tools that read only it keep working.
            enc.add(&MappedAddress(remote))?;
            self.add_software(&mut enc, header)?;
            enc.fingerprint()?;
            Ok::<_, crate::stun::EncodeError>(enc.finish())
        })();
        reply(written, Method::BINDING, None)
    }

    /// RFC 3489 §11.2.1: MAPPED-ADDRESS only, the client's 128-bit transaction id echoed, and no
    /// attribute it would not understand (XOR-MAPPED-ADDRESS is comprehension-required; a
    /// classic client would reject the response).
    fn classic_binding_response(
        &self,
        inbound: &Inbound<'_>,
        header: &Header,
        out: &mut [u8],
    ) -> Outcome {
        let typ = MessageType::new(Method::BINDING, Class::Success);
        let written = (|| {
            let mut enc = Encoder::with_cookie(out, typ, header.cookie, header.tid)?;
            enc.add(&MappedAddress(canonical(inbound.remote)))?;
            self.add_software(&mut enc, header)?;
            Ok::<_, crate::stun::EncodeError>(enc.finish())
        })();
        reply(written, Method::BINDING, None)
    }

    fn error_response(
        &self,
        header: &Header,
        code: u16,
        reason: &str,
        unknown: Option<&UnknownAttributes>,
        out: &mut [u8],
    ) -> Outcome {
        let typ = MessageType::new(header.typ.method, Class::Error);
        let classic = !header.has_magic_cookie();
        let written = (|| {
            // An RFC 3489 client gets its 128-bit transaction id back and no FINGERPRINT.
            let mut enc = Encoder::with_cookie(out, typ, header.cookie, header.tid)?;
            if classic {
                // RFC 3489 §11.2.9–11.2.10: the reason is padded to 4 bytes with spaces, counted
                // in the length, and UNKNOWN-ATTRIBUTES has an even number of entries.
                let mut value = [b' '; 4 + 64];
                let n = reason.len().min(64);
                value[..4].copy_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
                value[4..4 + n].copy_from_slice(&reason.as_bytes()[..n]);
                enc.add_raw(AttrType::ERROR_CODE, &value[..4 + n.div_ceil(4) * 4])?;
                if let Some(unknown) = unknown {
                    let mut types = [0u8; 2 * (crate::stun::AttrTypeList::CAPACITY + 1)];
                    let mut len = 0;
                    for t in unknown.0.iter() {
                        types[len..len + 2].copy_from_slice(&t.0.to_be_bytes());
                        len += 2;
                    }
                    if !len.is_multiple_of(4) {
                        types.copy_within(len - 2..len, len);
                        len += 2;
                    }
                    enc.add_raw(AttrType::UNKNOWN_ATTRIBUTES, &types[..len])?;
                }
            } else {
                enc.add(&ErrorCode::new(code, reason))?;
                if let Some(unknown) = unknown {
                    enc.add(unknown)?;
                }
            }
            self.add_software(&mut enc, header)?;
            if !classic {
                enc.fingerprint()?;
            }
            Ok::<_, crate::stun::EncodeError>(enc.finish())
        })();
        reply(written, header.typ.method, Some(code))
    }

    fn add_software(
        &self,
        enc: &mut Encoder<'_>,
        header: &Header,
    ) -> Result<(), crate::stun::EncodeError> {
        let software = if header.has_magic_cookie() {
            &self.software
        } else {
            &self.software_classic
        };
        if !software.is_empty() {
            enc.add(&Software(software))?;
        }
        Ok(())
    }
}

fn reply(
    written: Result<usize, crate::stun::EncodeError>,
    method: Method,
    code: Option<u16>,
) -> Outcome {
    match written {
        Ok(len) => Outcome::Reply { len, method, code },
        // Only a caller passing a buffer smaller than MAX_REPLY_LEN gets here.
        Err(err) => {
            tracing::error!(%err, "reply does not fit the output buffer");
            Outcome::Dropped(DropReason::Malformed)
        }
    }
}

/// An IPv4-mapped IPv6 address (from a dual-stack socket) reported as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests;
