//! The hand-over between two relay processes on the same host ports: the order in which the
//! new one binds and the old one lets go, agreed over an abstract unix socket.
//!
//! Two relay pods with hostNetwork on one node (the old one being replaced, the new one
//! started beside it) bind the same ports with SO_REUSEPORT. The kernel spreads UDP clients
//! over the members of a port's reuseport group by a hash modulo the group's size, so the
//! moment the new process binds, the old process's clients are re-hashed, many of them to the
//! new process, which does not know their allocations (eventloop/handover.rs has the
//! measurements). So the order is:
//!
//! 1. The new relay, before binding anything, connects to the abstract unix socket
//!    `xdpturn-relay/handover/<port>` (the port of its first listening address). Nothing
//!    listening there: no other relay on these ports; it binds as usual. Otherwise it first
//!    gets ready to serve as far as it can without its ports (the XDP program loaded: that
//!    takes the kernel's verifier a second or two), then asks `hand-over`.
//! 2. The old relay (which listens there) drains, gives every UDP client with an allocation a
//!    socket of its own connected to it, marks its listeners' groups (the kernel chooses by
//!    score from then on, so these sockets win for their clients), and answers `pinned <n>`.
//! 3. The new relay binds its listeners (UDP, TCP, TLS, and the HTTP listener for metrics and
//!    probes, all with SO_REUSEPORT), starts the workers that read them and the HTTP server,
//!    and says `bound`: the ports are never left to a process that does not read them. From
//!    here new clients may reach either process; the old one refuses their allocations (508),
//!    as any draining relay does.
//! 4. The old relay closes its UDP listeners (each first taken out of the kernel's choice, what
//!    was queued on it then handled), its TCP and TLS listeners (queued connections accepted)
//!    and its HTTP listener, and answers `closed <n>`. Now new clients and the kubelet's probes
//!    (which reach node-ip:port, whichever process holds it) reach only the new relay; the old
//!    one keeps serving its allocations until they end.
//! 5. The new relay takes the socket's name, for the next hand-over.
//!
//! There is never a moment with no listener on the ports. The old relay does not exit when its
//! allocations have ended: it waits for SIGTERM (a container that exits by itself is restarted
//! in place, and its restart would take the ports back). So whoever replaces a relay starts the
//! new one, waits for it to be ready, then stops the old one; SIGTERM then drains as before.
//!
//! The socket is named by the first listening port only: relays that share ports on a host
//! share their first one (the pods of one TurnCluster have one configuration). The XDP fast
//! path is not handed over as such: the old relay takes its XDP program off the interfaces once
//! its listeners are closed (its remaining allocations are relayed in userspace from then on),
//! and the new relay, which could not attach its XDP program while that one was there,
//! attaches its own as soon as the interface is free (serve/xdp.rs). In tc mode neither waits:
//! TC programs chain on an ingress, so the new relay's attaches at once, beside the old one's,
//! which stays until the old relay exits and keeps forwarding the old relay's allocations.
//!
//! A relay that is draining after SIGTERM with no successor keeps its listeners, its HTTP
//! listener included (the kubelet's liveness probe must keep reaching it): exactly what a
//! single relay did before. Only processes of the same user may ask for a hand-over (as only
//! they could share the ports). Abstract unix sockets belong to the network namespace, which
//! pods with hostNetwork share with the host and each other, and no other pod sees.

use std::io::{self, BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;

use crate::dataplane::{Dataplane, XdpMode};
use crate::eventloop::Control;
use crate::metrics::Metrics;

/// How long one process waits for the other's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the old relay waits, once a new one has connected, for it to ask: the new one
/// loads its XDP program in between (the kernel's verifier takes seconds on a busy host).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The abstract socket name for relays whose first listening port is `port`.
pub fn socket_name(port: u16) -> String {
    format!("xdpturn-relay/handover/{port}")
}

fn socket_addr(port: u16) -> io::Result<UnixAddr> {
    UnixAddr::from_abstract_name(socket_name(port).as_bytes())
}

/// The relay that held the ports before this one, once it has given its clients sockets of
/// their own ([`ask`]).
#[derive(Debug)]
pub struct Predecessor {
    stream: BufReader<UnixStream>,
    /// How many of its clients got a socket of their own.
    pub pinned: usize,
}

/// A connection to the relay on this host's ports, made before anything else at start-up
/// ([`connect`]): the new relay knows it has one to take over from, prepares (the XDP program
/// is loaded meanwhile), then [`Successor::ask`]s.
#[derive(Debug)]
pub struct Successor {
    port: u16,
    stream: UnixStream,
}

/// Step 1, first half: connects to the relay on `port` of this host, if there is one. None
/// when there is no such relay.
pub fn connect(port: u16) -> Option<Successor> {
    if port == 0 {
        return None;
    }
    match socket_addr(port).and_then(|a| UnixStream::connect_addr(&a)) {
        Ok(stream) => Some(Successor { port, stream }),
        Err(err) => {
            tracing::debug!(port, %err, "no relay to take over from");
            None
        }
    }
}

impl Successor {
    /// Step 1, second half (before binding): asks the relay to hand its ports over; returns
    /// once it has pinned its clients. None if it did not answer: then this one binds anyway,
    /// as it would have before.
    pub fn ask(self) -> Option<Predecessor> {
        let port = self.port;
        let result = (|| {
            self.stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            let mut stream = BufReader::new(self.stream);
            stream.get_mut().write_all(b"hand-over\n")?;
            let pinned = expect(&mut stream, "pinned")?;
            Ok::<_, io::Error>(Predecessor { stream, pinned })
        })();
        match result {
            Ok(p) => {
                tracing::info!(
                    port,
                    pinned = p.pinned,
                    "taking over from the relay on these ports"
                );
                Some(p)
            }
            Err(err) => {
                tracing::warn!(port, %err, "the relay on these ports did not hand over; binding anyway");
                None
            }
        }
    }
}

/// Reads one line `<word> <n>` and returns n.
fn expect(stream: &mut BufReader<UnixStream>, word: &str) -> io::Result<usize> {
    let mut line = String::new();
    stream.read_line(&mut line)?;
    line.trim()
        .strip_prefix(word)
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("expected `{word} <n>`, got {line:?}")))
}

impl Predecessor {
    /// Step 3 (once bound): tells the old relay, and waits until it has closed its listeners.
    pub fn listeners_bound(mut self) {
        let result = self
            .stream
            .get_mut()
            .write_all(b"bound\n")
            .and_then(|()| expect(&mut self.stream, "closed"));
        match result {
            Ok(drained) => tracing::info!(
                drained,
                "the previous relay closed its listeners; serving every new client"
            ),
            Err(err) => {
                tracing::warn!(%err, "the previous relay did not confirm its listeners closed")
            }
        }
    }
}

/// Step 5: takes the socket's name for relays on `port`, waiting (a few seconds at most) for a
/// previous holder to let go of it.
pub fn claim(port: u16) -> io::Result<UnixListener> {
    let addr = socket_addr(port)?;
    let mut tries = 0;
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the old relay's side of a hand-over needs.
#[derive(Debug)]
pub struct Handing {
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
    /// The UDP listening addresses, as bound.
    pub listeners: Vec<SocketAddr>,
    /// Notified to close the HTTP listener.
    pub http_stop: Arc<Notify>,
    /// The XDP fast path, taken off its interfaces once the ports are handed over.
    pub dataplane: Option<Arc<Dataplane>>,
}

/// Steps 2 and 4, on the old relay: waits for a relay of the same user to ask, then hands
/// over (once: the name is released for the new relay to take). A new relay that goes away
/// before it has bound its listeners (a crash at start, say) undoes the hand-over: this relay
/// serves new clients again (unless SIGTERM has drained it) and takes the name back.
pub async fn serve(mut listener: UnixListener, port: u16, handing: Handing) {
    let own_uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    loop {
        let Some(stream) = next_request(listener, own_uid).await else {
            return;
        };
        if hand_over(stream, &handing).await {
            return;
        }
        handing.control.resume();
        handing
            .metrics
            .ready
            .set(i64::from(!handing.control.is_draining()));
        listener = match socket_addr(port).and_then(|a| UnixListener::bind_addr(&a)) {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(%err, "cannot take the hand-over socket back");
                return;
            }
        };
    }
}

/// The next valid request on `listener` (which is then closed: the name is free).
async fn next_request(
    listener: UnixListener,
    own_uid: Option<u32>,
) -> Option<tokio::io::BufReader<tokio::net::UnixStream>> {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(err) => {
            tracing::warn!(%err, "cannot serve hand-over requests");
            return None;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::debug!(%err, "accepting a hand-over request");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        if uid.is_none() || uid != own_uid {
            tracing::warn!(?uid, "hand-over asked by another user; ignored");
            continue;
        }
        let mut stream = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        let asked = tokio::time::timeout(REQUEST_TIMEOUT, stream.read_line(&mut line)).await;
        if !matches!(asked, Ok(Ok(_))) || line.trim() != "hand-over" {
            tracing::debug!(?line, "not a hand-over request; ignored");
            continue;
        }
        return Some(stream);
    }
}

/// Steps 2 and 4; false if the new relay went away before binding (nothing was closed).
async fn hand_over(mut stream: tokio::io::BufReader<tokio::net::UnixStream>, h: &Handing) -> bool {
    h.metrics.ready.set(0);
    let pinned = h.control.pin_clients(&h.listeners).await;
    tracing::info!(
        pinned,
        "handing the ports over to a new relay: draining; each UDP client has a socket of its own"
    );
    if let Err(err) = stream
        .get_mut()
        .write_all(format!("pinned {pinned}\n").as_bytes())
        .await
    {
        tracing::warn!(%err, "the new relay went away; serving on");
        return false;
    }
    let mut line = String::new();
    let bound = tokio::time::timeout(ANSWER_TIMEOUT, stream.read_line(&mut line)).await;
    if !matches!(bound, Ok(Ok(_))) || line.trim() != "bound" {
        tracing::warn!(
            ?line,
            "the new relay did not bind its listeners; serving on"
        );
        return false;
    }
    // The kubelet probes node-ip:port, and after the hand-over only the new relay must answer
    // there (this one is draining, and would say not ready for both pods).
    h.http_stop.notify_one();
    let drained = h.control.close_listeners().await;
    tracing::info!(
        drained,
        "listeners closed; new clients reach the new relay, existing ones are served here"
    );
    // Before saying so: the new relay loads its fast path right after, and finds the
    // interfaces free.
    detach_fast_path(h);
    let _ = stream
        .get_mut()
        .write_all(format!("closed {drained}\n").as_bytes())
        .await;
    true
}

/// After a hand-over: takes this relay's XDP program off its interfaces, so that the new
/// relay's can go on (an interface holds one XDP program; the new relay attaches as soon as it
/// is free). This relay's remaining allocations are then relayed in userspace, where everything
/// the program does is done too: their packets pass the new relay's program (it knows nothing
/// of them) up to this relay's sockets. Waiting instead for this relay to exit would leave the
/// node's new calls without the fast path for the whole drain.
///
/// The TC program stays: TC programs chain on an ingress, so the new relay's (or its XDP
/// program, which runs before TC) attached beside it at once, and each forwards what its own
/// maps hold and passes the rest on. This relay's remaining allocations stay in the kernel
/// until they end or this relay exits (its links go with its process).
fn detach_fast_path(h: &Handing) {
    let Some(dp) = &h.dataplane else {
        return;
    };
    let mut still_attached = false;
    for (index, attachment) in dp.attachments().iter().enumerate() {
        if attachment.mode == XdpMode::Tc {
            tracing::info!(
                interface = %attachment.interface,
                "the TC program stays on the interface, beside the new relay's: this relay's \
                 remaining allocations stay in the kernel"
            );
            still_attached = true;
            continue;
        }
        match dp.detach(index) {
            Ok(true) => tracing::info!(
                interface = %attachment.interface,
                "XDP program taken off the interface for the new relay; this relay's remaining \
                 allocations are relayed in userspace"
            ),
            Ok(false) => {}
            Err(err) => tracing::warn!(
                interface = %attachment.interface,
                %err,
                "cannot take the XDP program off the interface; the new relay relays in \
                 userspace until this relay exits"
            ),
        }
    }
    if !still_attached {
        h.metrics.xdp_attached.set(0);
    }
}
