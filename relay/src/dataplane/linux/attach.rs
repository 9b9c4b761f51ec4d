//! Attaching the program to the interfaces: the XDP mode each gets and why, waiting for an
//! interface another relay process's program holds, the interface drop counters that tell
//! whether what the program sends leaves, and detaching (one interface, or all of them when
//! the dataplane is dropped).

use std::io;
use std::os::fd::OwnedFd;

use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpError, XdpMode as AyaMode};
use rustix::io::Errno;

use relay_common::maps::{EGRESS, IF_GENERIC, INTERFACES};

use super::errors::{errno, map_error};
use super::{Dataplane, Inner, xdp_program};
use crate::dataplane::{Attachment, DataplaneError, ModeChoice, XdpMode};

/// Why interfaces wait: two relay processes share a host during a hand-over of its ports
/// (serve::handover). The new one starts while the old one drains its allocations, minutes
/// long, and the old one's program stays attached until it exits: its BPF links are closed,
/// and the kernel detaches them, when its process goes, however it goes (SIGKILL included).
/// Until then the new relay's attach fails with EBUSY (EEXIST in the other mode); it keeps its
/// program loaded and its maps current, and attaches when the interface is free, so from that
/// moment the kernel forwards every allocation it holds.
impl Dataplane {
    /// The configured interfaces that had another XDP program (when loaded, or at the last
    /// [`Dataplane::attach_waiting`]) and are not attached yet; their traffic is relayed in
    /// userspace meanwhile.
    pub fn waiting(&self) -> Vec<String> {
        self.lock().waiting.clone()
    }

    /// Tries again to attach to each [waiting](Dataplane::waiting) interface. Returns what
    /// became of those that stopped waiting: attached (appended to
    /// [`Dataplane::attachments`]), or failed otherwise than busy (they are not tried again).
    pub fn attach_waiting(&self) -> Vec<(String, Result<Attachment, DataplaneError>)> {
        let mut inner = self.lock();
        let mut done = Vec::new();
        for interface in std::mem::take(&mut inner.waiting) {
            match inner.attach(&interface) {
                Err(DataplaneError::Busy { .. }) => inner.waiting.push(interface),
                result => done.push((interface, result)),
            }
        }
        done
    }

    /// Frames each attachment's interface dropped since the program was attached to it (in
    /// [`Dataplane::attachments`] order): its receive and transmit drop counters, where a
    /// frame the program returned XDP_TX or XDP_REDIRECT for and that did not leave is counted
    /// (a native veth counts a failed redirect or XDP_TX as a receive drop, generic mode a
    /// failed transmit as a transmit drop). Read from the relay's own network namespace
    /// (`/sys/class/net`), so other namespaces' interfaces never count. `None` for an
    /// interface whose counters cannot be read.
    pub fn interface_drops(&self) -> Vec<Option<u64>> {
        let inner = self.lock();
        inner
            .attachments
            .iter()
            .zip(&inner.drops_at_attach)
            .map(|(a, at)| Some(interface_drops(&a.interface)?.saturating_sub((*at)?)))
            .collect()
    }

    /// Takes the program off attachment `index`'s interface (its sends fail: its traffic goes
    /// to userspace from now on) and stops redirecting to it. True if it was attached.
    pub fn detach(&self, index: usize) -> Result<bool, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(attachment) = inner.attachments.get(index) else {
            return Ok(false);
        };
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

impl Inner {
    /// Attaches the program to `interface` in the configured mode and adds it to the
    /// attachments, as a redirect target (EGRESS) with its mode (INTERFACES).
    pub(super) fn attach(&mut self, interface: &str) -> Result<Attachment, DataplaneError> {
        let ifindex = ifindex(interface)?;
        let program = xdp_program(&mut self.ebpf)?;
        let (link, mode, why) = attach(program, interface, ifindex, self.mode)?;
        let flags = if mode == XdpMode::Skb { IF_GENERIC } else { 0 };
        let recorded = self
            .egress
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| map_error(EGRESS, e))
            .and_then(|()| {
                self.modes
                    .insert(ifindex, flags, 0)
                    .map_err(|e| map_error(INTERFACES, e))
            });
        if let Err(e) = recorded {
            // Not half attached: off the interface again, and no redirect to it.
            let _ = self.egress.remove(ifindex);
            if let Err(detach) = xdp_program(&mut self.ebpf)?.detach(link) {
                tracing::warn!(err = %detach, interface, "detaching the XDP program");
            }
            return Err(e);
        }
        self.links.push(Some(link));
        let attachment = Attachment {
            interface: interface.to_owned(),
            ifindex,
            mode,
            why,
        };
        self.attachments.push(attachment.clone());
        self.drops_at_attach.push(interface_drops(interface));
        tracing::info!(
            interface,
            ifindex,
            %mode,
            why = why.describe(),
            "XDP program attached"
        );
        Ok(attachment)
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
        for a in &inner.attachments {
            tracing::info!(interface = a.interface, "XDP program detached");
        }
    }
}

/// An interface's receive and transmit drops (`/sys/class/net/<if>/statistics`), if readable.
fn interface_drops(interface: &str) -> Option<u64> {
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
fn attach(
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
            // Another program in either mode fails skb mode too: no fallback to say.
            Err(native) if busy_errno(&native).is_some() => {
                Err(attach_error(interface, XdpMode::Native, native))
            }
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

/// The errno of an attach that failed because the interface has an XDP program already:
/// EBUSY from `bpf_link_create` (aya 0.14's `ProgramError::SyscallError`) when it runs in
/// the mode asked for, EEXIST when in the other one (the kernel runs one mode at a time), the
/// same from the netlink attach of kernels before 5.9 (`XdpError::NetlinkError`).
fn busy_errno(e: &ProgramError) -> Option<Errno> {
    let found = match e {
        ProgramError::SyscallError(s) => errno(&s.io_error),
        ProgramError::XdpError(XdpError::NetlinkError(n)) => {
            n.raw_os_error().map(Errno::from_raw_os_error)
        }
        _ => None,
    };
    found.filter(|e| matches!(*e, Errno::BUSY | Errno::EXIST))
}

fn attach_error(interface: &str, mode: XdpMode, e: ProgramError) -> DataplaneError {
    if let Some(code) = busy_errno(&e) {
        let name = if code == Errno::BUSY {
            "EBUSY"
        } else {
            "EEXIST"
        };
        let call = match &e {
            ProgramError::SyscallError(s) => s.call,
            _ => "netlink RTM_SETLINK",
        };
        return DataplaneError::Busy {
            interface: interface.to_owned(),
            reason: format!("{call} in {mode} mode failed with {name} ({code})"),
            source: Some(Box::new(e)),
        };
    }
    let hint = match mode {
        XdpMode::Native => {
            "; the driver may not support native XDP: try mode skb (generic XDP works everywhere)"
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
fn ifindex(interface: &str) -> Result<u32, DataplaneError> {
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

    /// aya 0.14 reports an attach to an interface with another XDP program as
    /// `ProgramError::SyscallError` from `bpf_link_create`: EBUSY in the same mode, EEXIST in
    /// the other (xdp_testrun.rs sees the kernel say so).
    #[test]
    fn another_program_on_the_interface_is_busy_not_a_failure() {
        let failed = |code: Errno| {
            ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_link_create",
                io_error: io::Error::from_raw_os_error(code.raw_os_error()),
            })
        };
        for code in [Errno::BUSY, Errno::EXIST] {
            for mode in [XdpMode::Native, XdpMode::Skb] {
                match attach_error("eth0", mode, failed(code)) {
                    DataplaneError::Busy {
                        interface, reason, ..
                    } => {
                        assert_eq!(interface, "eth0");
                        assert!(reason.contains("bpf_link_create"), "{reason}");
                    }
                    other => panic!("{code:?} in {mode}: {other:?}"),
                }
            }
        }
        for code in [Errno::NODEV, Errno::OPNOTSUPP, Errno::PERM, Errno::INVAL] {
            assert!(
                matches!(
                    attach_error("eth0", XdpMode::Skb, failed(code)),
                    DataplaneError::Attach { .. }
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn only_interfaces_with_a_device_count_as_hardware() {
        assert!(!has_device("lo"));
        assert!(!has_device("xdpturn-nonexistent0"));
    }
}
