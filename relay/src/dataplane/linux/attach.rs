//! Attaching the program to the interfaces: the XDP mode each gets and why, the interface
//! drop counters that tell whether what the program sends leaves, and detaching (one
//! interface, or all of them when the dataplane is dropped).

use std::io;
use std::os::fd::OwnedFd;

use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode as AyaMode};
use rustix::io::Errno;

use super::errors::errno;
use super::{Dataplane, xdp_program};
use crate::dataplane::{DataplaneError, ModeChoice, XdpMode};

impl Dataplane {
    /// Frames each attachment's interface dropped since the program was attached to it (in
    /// [`Dataplane::attachments`] order): its receive and transmit drop counters, where a
    /// frame the program returned XDP_TX or XDP_REDIRECT for and that did not leave is counted
    /// (a native veth counts a failed redirect or XDP_TX as a receive drop, generic mode a
    /// failed transmit as a transmit drop). Read from the relay's own network namespace
    /// (`/sys/class/net`), so other namespaces' interfaces never count. `None` for an
    /// interface whose counters cannot be read.
    pub fn interface_drops(&self) -> Vec<Option<u64>> {
        let inner = self.lock();
        self.attachments
            .iter()
            .zip(&inner.drops_at_attach)
            .map(|(a, at)| Some(interface_drops(&a.interface)?.saturating_sub((*at)?)))
            .collect()
    }

    /// Takes the program off attachment `index`'s interface (its sends fail: its traffic goes
    /// to userspace from now on) and stops redirecting to it. True if it was attached.
    pub fn detach(&self, index: usize) -> Result<bool, DataplaneError> {
        let Some(attachment) = self.attachments.get(index) else {
            return Ok(false);
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(link) = inner.links.get_mut(index).and_then(Option::take) else {
            return Ok(false);
        };
        // The redirect target first, so that no other interface's packets are sent there.
        if let Err(e) = inner.egress.remove(attachment.ifindex) {
            tracing::warn!(err = %e, interface = attachment.interface, "removing from EGRESS");
        }
        xdp_program(&mut inner.ebpf)?
            .detach(link)
            .map_err(|e| attach_error(&attachment.interface, attachment.mode, e))?;
        Ok(true)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // The next-hop thread may hold the maps a moment longer; the links go now.
        let mut guard = self.lock();
        let inner = &mut *guard;
        let links = std::mem::take(&mut inner.links);
        if let Ok(program) = xdp_program(&mut inner.ebpf) {
            for link in links.into_iter().flatten() {
                if let Err(e) = program.detach(link) {
                    tracing::warn!(err = %e, "detaching the XDP program");
                }
            }
        }
        for a in &self.attachments {
            tracing::info!(interface = a.interface, "XDP program detached");
        }
    }
}

/// An interface's receive and transmit drops (`/sys/class/net/<if>/statistics`), if readable.
pub(super) fn interface_drops(interface: &str) -> Option<u64> {
    let read = |name: &str| -> Option<u64> {
        let path = format!("/sys/class/net/{interface}/statistics/{name}");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    Some(read("rx_dropped")? + read("tx_dropped")?)
}

/// Attaches in `mode`, and says why that mode. `Auto` uses native mode only where its
/// packets are known to arrive: on an interface backed by a device (a NIC, virtio), whose
/// driver sends what XDP_TX and redirects hand it. A virtual interface without one (veth,
/// bridge, a CNI's pod interface) gets generic mode: native XDP_TX or a redirect on a veth
/// drops the frames silently unless the other end runs an XDP program too, which the relay
/// cannot know or arrange, and a generic-mode packet keeps its skb, so the checksum offload
/// state of a container's packets survives the program (see relay-ebpf's `forward`).
pub(super) fn attach(
    program: &mut Xdp,
    interface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(XdpLinkId, XdpMode, ModeChoice), DataplaneError> {
    let try_mode = |program: &mut Xdp, mode: XdpMode| {
        let aya_mode = match mode {
            XdpMode::Skb => AyaMode::Skb,
            _ => AyaMode::Driver,
        };
        program.attach_to_if_index(ifindex, aya_mode)
    };
    match mode {
        XdpMode::Native | XdpMode::Skb => try_mode(program, mode)
            .map(|link| (link, mode, ModeChoice::Configured))
            .map_err(|e| attach_error(interface, mode, e)),
        XdpMode::Auto if !has_device(interface) => try_mode(program, XdpMode::Skb)
            .map(|link| (link, XdpMode::Skb, ModeChoice::VirtualInterface))
            .map_err(|e| attach_error(interface, XdpMode::Skb, e)),
        XdpMode::Auto => match try_mode(program, XdpMode::Native) {
            Ok(link) => Ok((link, XdpMode::Native, ModeChoice::DriverSupportsNative)),
            Err(native) => {
                tracing::info!(
                    interface,
                    err = %native,
                    "native XDP attach failed (the driver may not support XDP); trying skb mode"
                );
                try_mode(program, XdpMode::Skb)
                    .map(|link| (link, XdpMode::Skb, ModeChoice::DriverLacksNative))
                    .map_err(|e| attach_error(interface, XdpMode::Skb, e))
            }
        },
    }
}

/// Whether `interface` is backed by a device (`/sys/class/net/<if>/device`): a NIC or a
/// virtual machine's NIC, not a veth, bridge, bond or tunnel.
fn has_device(interface: &str) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(interface)
        .join("device")
        .exists()
}

fn attach_error(interface: &str, mode: XdpMode, e: ProgramError) -> DataplaneError {
    let hint = match (&e, mode) {
        (_, XdpMode::Native) => {
            "; the driver may not support native XDP: try mode skb (generic XDP works everywhere)"
        }
        (ProgramError::SyscallError(s), _) if errno(&s.io_error) == Some(Errno::BUSY) => {
            "; another XDP program is attached to this interface (EBUSY)"
        }
        _ => "",
    };
    DataplaneError::Attach {
        interface: interface.to_owned(),
        mode,
        reason: format!("{e}{hint}"),
        source: Some(Box::new(e)),
    }
}

/// The index of `interface` in the calling thread's network namespace.
pub(super) fn ifindex(interface: &str) -> Result<u32, DataplaneError> {
    let socket: OwnedFd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .map_err(|e| DataplaneError::Load {
        reason: "opening a socket to look interfaces up".to_owned(),
        source: Some(Box::new(io::Error::from(e))),
    })?;
    rustix::net::netdevice::name_to_index(&socket, interface)
        .map_err(|_| DataplaneError::UnknownInterface(interface.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_interfaces_are_named() {
        match ifindex("xdpturn-nonexistent0") {
            Err(DataplaneError::UnknownInterface(name)) => {
                assert_eq!(name, "xdpturn-nonexistent0");
            }
            other => panic!("expected UnknownInterface, got {other:?}"),
        }
    }

    #[test]
    fn only_interfaces_with_a_device_count_as_hardware() {
        assert!(!has_device("lo"));
        assert!(!has_device("xdpturn-nonexistent0"));
    }
}
