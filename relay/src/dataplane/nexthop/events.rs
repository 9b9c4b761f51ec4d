//! The kernel's route, link and neighbour announcements (rtnetlink multicast groups), read
//! into [`Changes`]: which next hops may have changed and are to be resolved again.

use std::io;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;
use rustix::io::Errno;

use super::{BUF_LEN, MSG_DONTWAIT, Via, messages, neighbour_of, receive, route_socket};

/// The netlink groups [`Events`] listens to (`RTNLGRP_*` of linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// The kernel's announcements of route, link and neighbour changes, so that next hops are
/// resolved again as soon as they may have changed.
#[derive(Debug)]
pub struct Events {
    socket: Socket,
    buf: Vec<u8>,
    timeout: Option<Duration>,
}

/// What announcements said changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// A route or an interface changed, or announcements were lost: every destination is to
    /// be resolved again.
    pub all: bool,
    /// Neighbour entries that changed (interface, address).
    pub neighbours: Vec<Via>,
}

impl Changes {
    /// Whether anything changed.
    pub fn any(&self) -> bool {
        self.all || !self.neighbours.is_empty()
    }
}

impl Events {
    /// Subscribes to route, link and neighbour changes in the calling thread's network
    /// namespace.
    pub fn subscribe() -> io::Result<Events> {
        let socket = route_socket()?;
        for group in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_ROUTE,
        ] {
            socket.add_membership(group)?;
        }
        // Room for a burst (an interface going down announces each of its routes and
        // neighbours); an overflow is noticed (ENOBUFS) and means "everything".
        let _ = socket.set_rx_buf_sz(1 << 20);
        Ok(Events {
            socket,
            buf: Vec::with_capacity(BUF_LEN),
            timeout: None,
        })
    }

    /// Waits up to `timeout` for announcements, then reads every one that is there, adding
    /// what they say to `changes`. Returns whether anything was read.
    pub fn wait(&mut self, timeout: Duration, changes: &mut Changes) -> io::Result<bool> {
        // SO_RCVTIMEO of zero would wait for ever.
        let timeout = timeout.max(Duration::from_millis(1));
        if self.timeout != Some(timeout) {
            rustix::net::sockopt::set_socket_timeout(
                &self.socket,
                rustix::net::sockopt::Timeout::Recv,
                Some(timeout),
            )?;
            self.timeout = Some(timeout);
        }
        let mut flags = 0;
        let mut read = false;
        loop {
            match receive(&self.socket, &mut self.buf, flags) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(read);
                }
                Err(e) if e.raw_os_error() == Some(Errno::NOBUFS.raw_os_error()) => {
                    // The socket overflowed: some announcements are lost.
                    changes.all = true;
                    read = true;
                    flags = MSG_DONTWAIT;
                    continue;
                }
                Err(e) => return Err(e),
            }
            read = true;
            flags = MSG_DONTWAIT;
            for raw in messages(&self.buf) {
                match NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw.bytes) {
                    Ok(m) => match m.payload {
                        NetlinkPayload::InnerMessage(
                            RouteNetlinkMessage::NewNeighbour(n)
                            | RouteNetlinkMessage::DelNeighbour(n),
                        ) => {
                            // Bridge forwarding entries share the group.
                            if let Some(via) = neighbour_of(&n) {
                                changes.neighbours.push(via);
                            }
                        }
                        NetlinkPayload::InnerMessage(
                            RouteNetlinkMessage::NewRoute(_)
                            | RouteNetlinkMessage::DelRoute(_)
                            | RouteNetlinkMessage::NewLink(_)
                            | RouteNetlinkMessage::DelLink(_),
                        ) => changes.all = true,
                        _ => {}
                    },
                    // Something changed that cannot be told: everything may have.
                    Err(_) => changes.all = true,
                }
            }
        }
    }
}
