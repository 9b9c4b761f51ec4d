//! Attaching the programs to the interfaces: the mode each gets and why (native or generic
//! XDP, or the TC program), waiting for an interface another relay process's XDP program
//! holds, the interface drop counters that tell whether what the program sends leaves, and
//! detaching (one interface, or all of them when the dataplane is dropped).

use std::io;
use std::os::fd::OwnedFd;

use aya::Ebpf;
use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType, XdpError, XdpMode as AyaMode,
};
use aya::util::KernelVersion;
use rustix::io::Errno;

use relay_common::maps::{EGRESS, IF_GENERIC, IF_TC, INTERFACES, TC_PROGRAM};

use super::errors::{errno, load_error, map_error};
use super::{Dataplane, Inner, TcProgram, xdp_program};
use crate::dataplane::{Attachment, DataplaneError, ModeChoice, XdpMode};

/// Whether an attach is the interface's first (at load) or a waiting interface's next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Try {
    /// At load: what happens is said at info level.
    First,
    /// Again, after the interface waited: only what changes is said.
    Again,
}

/// How the program is attached to one interface.
#[derive(Debug)]
pub(super) enum Link {
    /// The XDP program, natively or generic.
    Xdp(XdpLinkId),
    /// The TC program on the ingress: a tcx link, or a cls_bpf filter before Linux 6.6.
    Tc(SchedClassifierLinkId),
}

/// Why interfaces wait: two relay processes share a host during a hand-over of its ports
/// (serve::handover). The new one starts while the old one drains its allocations, minutes
/// long, and the old one's program stays attached until it exits: its BPF links are closed,
/// and the kernel detaches them, when its process goes, however it goes (SIGKILL included).
/// Until then the new relay's XDP attach fails with EBUSY (EEXIST in the other mode); it keeps
/// its program loaded and its maps current, and attaches when the interface is free, so from
/// that moment the kernel forwards every allocation it holds. A TC attach never waits: TC
/// programs chain on an ingress (see `attach_tc`).
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
            match inner.attach(&interface, Try::Again) {
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

    /// Whether the relay's object has the TC program (relay-common's `TC_PROGRAM`): without it,
    /// tc mode fails with [`DataplaneError::TcUnavailable`] and `auto` uses skb where it would
    /// have used tc.
    pub fn has_tc_program(&self) -> bool {
        self.lock().ebpf.program(TC_PROGRAM).is_some()
    }

    /// Takes the program off attachment `index`'s interface (its sends fail: its traffic goes
    /// to userspace from now on) and stops redirecting to it (EGRESS for the XDP program,
    /// INTERFACES for the TC one). True if it was attached.
    pub fn detach(&self, index: usize) -> Result<bool, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(attachment) = inner.attachments.get(index) else {
            return Ok(false);
        };
        let Some(link) = inner.links.get_mut(index).and_then(Option::take) else {
            return Ok(false);
        };
        // The redirect targets first, so that no other interface's packets are sent there.
        if let Err(e) = inner.egress.remove(attachment.ifindex) {
            tracing::warn!(err = %e, interface = attachment.interface, "removing from EGRESS");
        }
        if let Err(e) = inner.modes.remove(&attachment.ifindex) {
            tracing::warn!(err = %e, interface = attachment.interface, "removing from INTERFACES");
        }
        detach_link(
            &mut inner.ebpf,
            link,
            &attachment.interface,
            attachment.mode,
        )?;
        Ok(true)
    }
}

impl Inner {
    /// Attaches the program to `interface` in the configured mode and adds it to the
    /// attachments, as a redirect target (EGRESS, for the XDP program) with its mode
    /// (INTERFACES, which the TC program also takes as its redirect targets).
    pub(super) fn attach(
        &mut self,
        interface: &str,
        attempt: Try,
    ) -> Result<Attachment, DataplaneError> {
        let ifindex = ifindex(interface)?;
        let (link, mode, why) = self.attach_in_mode(interface, ifindex, attempt)?;
        let flags = match mode {
            XdpMode::Skb => IF_GENERIC,
            XdpMode::Tc => IF_TC,
            XdpMode::Native | XdpMode::Auto => 0,
        };
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
            let _ = self.modes.remove(&ifindex);
            if let Err(detach) = detach_link(&mut self.ebpf, link, interface, mode) {
                tracing::warn!(err = %detach, interface, "detaching the program");
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
            "{} program attached",
            if mode == XdpMode::Tc { "TC" } else { "XDP" }
        );
        Ok(attachment)
    }

    /// Attaches in the configured mode ([`plan`]: each mode in turn until one attaches), and
    /// says which mode and why. An XDP program already on the interface (EBUSY, EEXIST) ends
    /// the plan: the interface waits for it rather than settle for a slower mode.
    fn attach_in_mode(
        &mut self,
        interface: &str,
        ifindex: u32,
        attempt: Try,
    ) -> Result<(Link, XdpMode, ModeChoice), DataplaneError> {
        let tcx = tcx_links();
        let steps = plan(self.mode, has_device(interface), tcx);
        let mut steps = steps.iter().peekable();
        while let Some(&(mode, why)) = steps.next() {
            let attached = match mode {
                XdpMode::Tc => {
                    attach_tc(&mut self.ebpf, &mut self.tc, interface, tcx).map(Link::Tc)
                }
                _ => attach_xdp(&mut self.ebpf, interface, ifindex, mode).map(Link::Xdp),
            };
            match (attached, steps.peek()) {
                (Ok(link), _) => return Ok((link, mode, why)),
                (Err(e @ DataplaneError::Busy { .. }), _) | (Err(e), None) => return Err(e),
                // Said once: a waiting interface is tried again every few seconds.
                (Err(e), Some((next, _))) if attempt == Try::First => tracing::info!(
                    interface,
                    err = %e,
                    "{mode} mode is unavailable here; trying {next} mode"
                ),
                (Err(e), Some((next, _))) => tracing::debug!(
                    interface,
                    err = %e,
                    "{mode} mode is unavailable here; trying {next} mode"
                ),
            }
        }
        // `plan` always has a step; this says so should it ever have none.
        Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            mode: self.mode,
            reason: "no mode to try".to_owned(),
            source: None,
        })
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // The next-hop thread may hold the maps a moment longer; the links go now.
        let mut guard = self.lock();
        let inner = &mut *guard;
        let links = std::mem::take(&mut inner.links);
        for (link, a) in links.into_iter().zip(&inner.attachments) {
            let Some(link) = link else { continue };
            match detach_link(&mut inner.ebpf, link, &a.interface, a.mode) {
                Ok(()) => {
                    tracing::info!(interface = a.interface, mode = %a.mode, "program detached")
                }
                Err(e) => {
                    tracing::warn!(err = %e, interface = a.interface, "detaching the program")
                }
            }
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

/// Takes a link off its interface (`interface`, attached in `mode`: for the error).
fn detach_link(
    ebpf: &mut Ebpf,
    link: Link,
    interface: &str,
    mode: XdpMode,
) -> Result<(), DataplaneError> {
    match link {
        Link::Xdp(link) => xdp_program(ebpf)?.detach(link),
        Link::Tc(link) => tc_program(ebpf)?.detach(link),
    }
    .map_err(|e| attach_error(interface, mode, e))
}

/// The modes to try on an interface, in order, each with why it is the one if it attaches:
/// the configured mode alone, or `auto`'s fastest-first list. `device`: the interface is
/// backed by a device ([`has_device`]); `tcx`: the kernel has tcx links ([`tcx_links`]).
///
/// `auto` uses native mode only where its packets are known to arrive: on an interface backed
/// by a device (a NIC, virtio), whose driver sends what XDP_TX and redirects hand it. A
/// virtual interface without one (veth, bridge, a CNI's pod interface) gets generic XDP (skb):
/// native XDP_TX or a redirect on a veth drops the frames silently unless the other end runs
/// an XDP program too, which the relay cannot know or arrange; and on veth generic XDP costs
/// the relay's core less per relayed packet than the TC program (`cargo xtask bench-xdp`, end
/// to end: the TC hook comes after the stack's GRO pass, which generic XDP turns off on its
/// device). Where a device's driver refuses native XDP, the TC program: generic XDP would turn
/// GRO off for the whole device, every other flow of the host on it included, and copy each
/// packet it runs on. Generic XDP is the last resort there: where the kernel has no tcx links
/// (before 6.6: a cls_bpf filter would outlive a relay that is killed, forwarding from its
/// last maps), or the TC program cannot load or attach.
pub(super) fn plan(mode: XdpMode, device: bool, tcx: bool) -> Vec<(XdpMode, ModeChoice)> {
    let mut steps = Vec::new();
    match mode {
        XdpMode::Native | XdpMode::Skb | XdpMode::Tc => steps.push((mode, ModeChoice::Configured)),
        XdpMode::Auto if device => {
            steps.push((XdpMode::Native, ModeChoice::DriverSupportsNative));
            if tcx {
                steps.push((XdpMode::Tc, ModeChoice::DriverLacksNative));
            }
            steps.push((XdpMode::Skb, ModeChoice::DriverLacksNativeWithoutTc));
        }
        XdpMode::Auto => steps.push((XdpMode::Skb, ModeChoice::VirtualInterface)),
    }
    steps
}

/// Attaches the XDP program in `mode` (native or skb).
fn attach_xdp(
    ebpf: &mut Ebpf,
    interface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<XdpLinkId, DataplaneError> {
    let aya_mode = match mode {
        XdpMode::Skb => AyaMode::Skb,
        _ => AyaMode::Driver,
    };
    xdp_program(ebpf)?
        .attach_to_if_index(ifindex, aya_mode)
        .map_err(|e| attach_error(interface, mode, e))
}

/// Attaches the TC program to `interface`'s ingress, loading it first if no interface has
/// needed it yet (the verifier takes a second or two; a relay without tc mode never pays it).
/// With tcx links (`tcx`) after the programs already there: during a hand-over the old relay's
/// program keeps its place in front and passes on what is not its own (TC_ACT_UNSPEC, which
/// tcx takes as "next"), so this never waits for another program. Before 6.6, as a cls_bpf
/// filter on the clsact qdisc (added if missing), in front of the filters there (the kernel
/// gives a new filter the next higher priority), chained the same way.
fn attach_tc(
    ebpf: &mut Ebpf,
    state: &mut TcProgram,
    interface: &str,
    tcx: bool,
) -> Result<SchedClassifierLinkId, DataplaneError> {
    let program = load_tc_program(ebpf, state)?;
    let options = if tcx {
        TcAttachOptions::TcxOrder(LinkOrder::default())
    } else {
        add_clsact(interface)?;
        TcAttachOptions::Netlink(NlOptions::default())
    };
    let link = program
        .attach_with_options(interface, TcAttachType::Ingress, options)
        .map_err(|e| attach_error(interface, XdpMode::Tc, e))?;
    if !tcx {
        tracing::warn!(
            interface,
            "this kernel has no tcx links (Linux 6.6+): the TC program is a cls_bpf filter \
             on {interface}'s clsact qdisc, which the relay removes when it stops, but which \
             stays, forwarding what its maps last held, if the relay is killed (SIGKILL); \
             `tc filter show dev {interface} ingress` lists it as {TC_PROGRAM}"
        );
    }
    Ok(link)
}

/// The clsact qdisc that cls_bpf filters on an ingress need (tcx links do not). One there
/// already, ours or anyone's, serves.
fn add_clsact(interface: &str) -> Result<(), DataplaneError> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(TcError::AlreadyAttached) => Ok(()),
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
            Ok(())
        }
        Err(e) => Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            mode: XdpMode::Tc,
            reason: format!(
                "adding the clsact qdisc: {e} (the kernel needs CONFIG_NET_SCH_INGRESS and \
                 CONFIG_NET_CLS_BPF for TC programs before 6.6)"
            ),
            source: Some(Box::new(e)),
        }),
    }
}

/// The TC program, loaded. Loads it on the first call; a failure is kept and said again on
/// later calls without running the verifier again.
pub(super) fn load_tc_program<'a>(
    ebpf: &'a mut Ebpf,
    state: &mut TcProgram,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    let unavailable = |reason: String, source| DataplaneError::TcUnavailable {
        program: TC_PROGRAM,
        reason,
        source,
    };
    if let TcProgram::Unavailable(reason) = state {
        return Err(unavailable(reason.clone(), None));
    }
    let loaded = tc_program(ebpf).and_then(|program| {
        if *state == TcProgram::NotLoaded {
            program
                .load()
                .map_err(|e| match load_error("loading it", e) {
                    DataplaneError::Load { reason, source } => unavailable(reason, source),
                    other => other,
                })?;
        }
        Ok(program)
    });
    match loaded {
        Ok(program) => {
            *state = TcProgram::Loaded;
            Ok(program)
        }
        Err(e) => {
            *state = TcProgram::Unavailable(match &e {
                DataplaneError::TcUnavailable { reason, .. } => reason.clone(),
                other => other.to_string(),
            });
            Err(e)
        }
    }
}

/// The object's TC program, as it is (loaded or not).
fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    let unavailable = |reason: String, source| DataplaneError::TcUnavailable {
        program: TC_PROGRAM,
        reason,
        source,
    };
    ebpf.program_mut(TC_PROGRAM)
        .ok_or_else(|| {
            unavailable(
                format!(
                    "this relay's eBPF object has no program `{TC_PROGRAM}` (its relay-ebpf was \
                     built without the TC datapath): run `cargo xtask build-ebpf` on a tree \
                     that has it, then rebuild the relay"
                ),
                None,
            )
        })?
        .try_into()
        .map_err(|e: ProgramError| {
            unavailable(
                format!("the object's `{TC_PROGRAM}` is not a TC program: {e}"),
                Some(Box::new(e)),
            )
        })
}

/// Whether the kernel has tcx links (Linux 6.6), which go with the process that made them as
/// XDP links do (aya attaches with them from the same version on): `auto` uses the TC program
/// only where it does.
pub fn tcx_links() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
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

/// An attach or detach error as a [`DataplaneError`]: [`DataplaneError::Busy`] for an XDP
/// mode whose interface has another XDP program, never for tc (TC programs chain: another one
/// on the ingress is no reason to wait), [`DataplaneError::Attach`] with a hint otherwise.
fn attach_error(interface: &str, mode: XdpMode, e: ProgramError) -> DataplaneError {
    if mode != XdpMode::Tc
        && let Some(code) = busy_errno(&e)
    {
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
            "; the driver may not support native XDP: try mode tc or skb (both work on every \
             interface)"
        }
        XdpMode::Tc => {
            "; TC programs need the kernel's tcx (6.6+, CONFIG_NET_XGRESS) or clsact \
             (CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_BPF): try mode skb"
        }
        XdpMode::Skb | XdpMode::Auto => "",
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
        match attach_error("eth0", XdpMode::Native, failed(Errno::OPNOTSUPP)) {
            DataplaneError::Attach { reason, .. } => {
                assert!(reason.contains("try mode tc or skb"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// TC programs chain on an ingress: another one there is never a reason to wait, whatever
    /// the kernel said.
    #[test]
    fn a_tc_attach_never_waits() {
        for (call, code) in [
            ("bpf_mprog_attach", Errno::BUSY),
            ("bpf_mprog_attach", Errno::EXIST),
            ("bpf_link_create", Errno::BUSY),
        ] {
            let e = ProgramError::SyscallError(aya::sys::SyscallError {
                call,
                io_error: io::Error::from_raw_os_error(code.raw_os_error()),
            });
            match attach_error("eth0", XdpMode::Tc, e) {
                DataplaneError::Attach {
                    mode: XdpMode::Tc,
                    reason,
                    ..
                } => assert!(reason.contains("try mode skb"), "{reason}"),
                other => panic!("{call} {code:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn configured_modes_are_tried_alone() {
        for mode in [XdpMode::Native, XdpMode::Tc, XdpMode::Skb] {
            for device in [false, true] {
                for tcx in [false, true] {
                    assert_eq!(
                        plan(mode, device, tcx),
                        [(mode, ModeChoice::Configured)],
                        "{mode} device={device} tcx={tcx}"
                    );
                }
            }
        }
    }

    /// `auto`: the fastest that works. Native XDP only on a device, then TC where the kernel
    /// has tcx links, skb last.
    #[test]
    fn auto_tries_native_then_tc_then_skb() {
        use ModeChoice::*;
        use XdpMode::{Native, Skb, Tc};
        assert_eq!(
            plan(XdpMode::Auto, true, true),
            [
                (Native, DriverSupportsNative),
                (Tc, DriverLacksNative),
                (Skb, DriverLacksNativeWithoutTc),
            ]
        );
        assert_eq!(plan(XdpMode::Auto, false, true), [(Skb, VirtualInterface)]);
        // Without tcx links a killed relay's cls_bpf filter would stay: no TC for auto.
        assert_eq!(
            plan(XdpMode::Auto, true, false),
            [
                (Native, DriverSupportsNative),
                (Skb, DriverLacksNativeWithoutTc)
            ]
        );
        assert_eq!(plan(XdpMode::Auto, false, false), [(Skb, VirtualInterface)]);
        // Whatever the plan, each step's reason matches its mode, and auto never waits for
        // TC by stopping at it: skb is always the last resort.
        for device in [false, true] {
            for tcx in [false, true] {
                let steps = plan(XdpMode::Auto, device, tcx);
                assert_eq!(steps.last().map(|s| s.0), Some(Skb));
                assert!(steps.iter().all(|(m, _)| *m != XdpMode::Auto));
            }
        }
    }

    #[test]
    fn only_interfaces_with_a_device_count_as_hardware() {
        assert!(!has_device("lo"));
        assert!(!has_device("xdpturn-nonexistent0"));
    }
}
