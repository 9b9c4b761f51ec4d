//! A small TURN client over a real UDP socket, built on the crate's own codec: enough to drive
//! allocations, permissions and data in end-to-end tests where coturn's tools cannot (e.g. to
//! check a specific error code).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use relay::stun::{
    AddressFamily, ChannelNumber, Class, Data, Encoder, ErrorCode, Lifetime, Message, MessageType,
    Method, Nonce, Realm, RequestedAddressFamily, RequestedTransport, TransactionId, Username,
    XorPeerAddress, XorRelayedAddress, long_term_key_md5,
};

pub struct TurnClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    user: String,
    realm: String,
    password: String,
    nonce: Option<String>,
    counter: u32,
}

/// A decoded response: its error code (None for success) and its bytes.
pub struct Response {
    pub code: Option<u16>,
    pub bytes: Vec<u8>,
}

impl Response {
    pub fn message(&self) -> Message<'_> {
        Message::decode(&self.bytes).expect("response decodes")
    }
}

impl TurnClient {
    pub fn new(server: SocketAddr, bind: &str, user: &str, password: &str, realm: &str) -> Self {
        let socket = UdpSocket::bind(bind).expect("bind client socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        Self {
            socket,
            server,
            user: user.into(),
            realm: realm.into(),
            password: password.into(),
            nonce: None,
            counter: 0,
        }
    }

    fn tid(&mut self) -> TransactionId {
        self.counter += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.counter.to_be_bytes());
        t[4..8].copy_from_slice(&std::process::id().to_be_bytes());
        TransactionId::new(t)
    }

    /// One request, answering a 401/438 challenge once; returns the final response, or None if
    /// nothing came back.
    pub fn request(
        &mut self,
        method: Method,
        attrs: &dyn Fn(&mut Encoder<'_>),
    ) -> Option<Response> {
        for _ in 0..3 {
            let tid = self.tid();
            let mut buf = vec![0u8; 1500];
            let mut e = Encoder::new(&mut buf, MessageType::new(method, Class::Request), tid)
                .expect("header");
            attrs(&mut e);
            if let Some(nonce) = &self.nonce {
                e.add(&Username(&self.user)).expect("username");
                e.add(&Realm(&self.realm)).expect("realm");
                e.add(&Nonce(nonce)).expect("nonce");
                e.message_integrity(&long_term_key_md5(&self.user, &self.realm, &self.password))
                    .expect("mi");
            }
            e.fingerprint().expect("fp");
            let len = e.finish();
            self.socket.send_to(&buf[..len], self.server).expect("send");
            let mut resp = vec![0u8; 1500];
            let n = loop {
                let (n, _) = self.socket.recv_from(&mut resp).ok()?;
                if Message::decode(&resp[..n]).is_ok_and(|m| *m.tid() == tid) {
                    break n;
                }
            };
            resp.truncate(n);
            let msg = Message::decode(&resp).expect("decodes");
            let code = msg.get::<ErrorCode>().and_then(Result::ok).map(|e| e.code);
            if matches!(code, Some(401) | Some(438))
                && let Some(Ok(Nonce(n))) = msg.get::<Nonce>()
            {
                let retry = self.nonce.is_none() || code == Some(438);
                self.nonce = Some(n.to_owned());
                if retry {
                    continue;
                }
            }
            return Some(Response { code, bytes: resp });
        }
        None
    }

    /// Allocates a UDP relay; returns the relayed address or the error code.
    pub fn allocate(&mut self) -> Result<SocketAddr, Option<u16>> {
        self.allocate_family(None)
    }

    /// Allocates a UDP relay of the given family (REQUESTED-ADDRESS-FAMILY).
    pub fn allocate_family(
        &mut self,
        family: Option<AddressFamily>,
    ) -> Result<SocketAddr, Option<u16>> {
        let r = self
            .request(Method::ALLOCATE, &|e| {
                e.add(&RequestedTransport::UDP).expect("rt");
                if let Some(f) = family {
                    e.add(&RequestedAddressFamily(f)).expect("raf");
                }
            })
            .ok_or(None)?;
        if r.code.is_some() {
            return Err(r.code);
        }
        let relayed = r
            .message()
            .get::<XorRelayedAddress>()
            .and_then(Result::ok)
            .map(|x| x.0);
        relayed.ok_or(None)
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Option<u16> {
        self.request(Method::CREATE_PERMISSION, &|e| {
            e.add(&XorPeerAddress(peer)).expect("peer")
        })
        .and_then(|r| r.code)
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Option<u16> {
        self.request(Method::CHANNEL_BIND, &|e| {
            e.add(&ChannelNumber(channel)).expect("ch");
            e.add(&XorPeerAddress(peer)).expect("peer");
        })
        .and_then(|r| r.code)
    }

    /// Deletes the allocation (Refresh with LIFETIME 0).
    pub fn delete(&mut self) -> Option<u16> {
        self.request(Method::REFRESH, &|e| e.add(&Lifetime(0)).expect("lt"))
            .and_then(|r| r.code)
    }

    /// A Send indication to `peer`.
    pub fn send(&self, peer: SocketAddr, data: &[u8]) {
        let packet = send_indication(peer, data);
        self.socket.send_to(&packet, self.server).expect("send");
    }
}

/// The bytes of a Send indication of `data` to `peer`.
pub fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let mut e = Encoder::new(
        &mut buf,
        MessageType::new(Method::SEND, Class::Indication),
        TransactionId::new([7; 12]),
    )
    .expect("header");
    e.add(&XorPeerAddress(peer)).expect("peer");
    e.add(&Data(data)).expect("data");
    let len = e.finish();
    buf.truncate(len);
    buf
}

/// The bytes of an Allocate request (UDP) with transaction `tid`; with `credentials` (user,
/// realm, password, nonce) signed with the long-term key, as a client answering a challenge
/// sends it. For floods and limits, where no client state is wanted.
pub fn allocate_request(tid: [u8; 12], credentials: Option<(&str, &str, &str, &str)>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut e = Encoder::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Request),
        TransactionId::new(tid),
    )
    .expect("header");
    e.add(&RequestedTransport::UDP).expect("rt");
    if let Some((user, realm, password, nonce)) = credentials {
        e.add(&Username(user)).expect("username");
        e.add(&Realm(realm)).expect("realm");
        e.add(&Nonce(nonce)).expect("nonce");
        e.message_integrity(&long_term_key_md5(user, realm, password))
            .expect("mi");
    }
    let len = e.finish();
    buf.truncate(len);
    buf
}
