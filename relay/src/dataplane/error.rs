//! Why the dataplane could not do something ([`DataplaneError`]), with a bounded label for
//! each reason for the metrics.

use std::net::SocketAddr;

use super::XdpMode;
use crate::proto::Transport;

/// Why the dataplane could not do something. Nothing here is fatal to the relay: it serves the
/// traffic concerned in userspace.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The relay was built without the program.
    #[error(
        "this relay was built without the XDP program: run `cargo xtask build-ebpf`, then \
         rebuild the relay (or point XDPTURN_EBPF_OBJECT at a built object when building it)"
    )]
    NotBuilt,
    /// XDP does not exist here.
    #[error("XDP is not available on this system ({0}); everything is relayed in userspace")]
    Unsupported(&'static str),
    /// The kernel refused the program or its maps.
    #[error("loading the XDP program failed: {reason}")]
    Load {
        /// What failed, with a hint (permissions, verifier log, ...).
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An interface in the config does not exist.
    #[error("interface `{0}` does not exist")]
    UnknownInterface(String),
    /// Attaching to an interface failed.
    #[error(
        "attaching the {} program to {interface} in {mode} mode failed: {reason}",
        program_kind(*.mode)
    )]
    Attach {
        interface: String,
        mode: XdpMode,
        /// What failed, with a hint (try skb mode, another program attached, ...).
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The interface has an XDP program already (EBUSY, or EEXIST when it runs in the other
    /// mode): typically the one of the relay process this one takes the ports over from,
    /// attached until that process exits. The dataplane waits for it
    /// ([`Dataplane::attach_waiting`](super::Dataplane::attach_waiting)).
    #[error("another XDP program is attached to {interface}: {reason}")]
    Busy {
        interface: String,
        /// The kernel's error (which call, which errno).
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The TC program cannot be used: the object has none (a relay-ebpf built before the TC
    /// datapath), or the kernel refused it. `auto` then attaches generic XDP instead.
    #[error("the TC program `{program}` cannot be used: {reason}")]
    TcUnavailable {
        /// The program's name in the object.
        program: &'static str,
        /// Why (missing from the object, the verifier's refusal, ...).
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Channels on this transport stay in userspace (only UDP ChannelData is offloaded).
    #[error("channels over {} are relayed in userspace", .0.as_str())]
    Transport(Transport),
    /// An address the kernel cannot match (an unspecified listener or relayed address).
    #[error("cannot offload a channel with {what} {addr}: the kernel sees the actual address")]
    Address {
        what: &'static str,
        addr: SocketAddr,
    },
    /// The maps are full: the channel is relayed in userspace.
    #[error("the XDP channel maps are full ({max_channels} channels)")]
    Full { max_channels: u32 },
    /// The maps hold as many permissions or allocations as they can (`what`): its Send and
    /// Data indications are relayed in userspace.
    #[error("the XDP maps hold {max} {what}s already")]
    MapFull { what: &'static str, max: u32 },
    /// The peer of this channel is already bound, on the same relayed address, to another
    /// channel (TURN does not allow it; the maps could not hold both).
    #[error("peer {peer} is already bound to another channel on relayed address {relay}")]
    Conflict { relay: SocketAddr, peer: SocketAddr },
    /// A map operation failed.
    #[error("XDP map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A BPF_PROG_TEST_RUN failed.
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Asking the kernel for routes, interfaces or neighbours failed.
    #[error("resolving next hops over netlink: {0}")]
    NextHop(#[source] std::io::Error),
}

impl DataplaneError {
    /// A bounded label for metrics (e.g. a `reason` on a userspace-fallback counter).
    pub fn metric_label(&self) -> &'static str {
        match self {
            DataplaneError::NotBuilt => "not_built",
            DataplaneError::Unsupported(_) => "unsupported",
            DataplaneError::Load { .. } => "load",
            DataplaneError::UnknownInterface(_) => "unknown_interface",
            DataplaneError::Attach { .. } => "attach",
            DataplaneError::Busy { .. } => "busy",
            DataplaneError::TcUnavailable { .. } => "tc_unavailable",
            DataplaneError::Transport(_) => "transport",
            DataplaneError::Address { .. } => "address",
            DataplaneError::Full { .. } | DataplaneError::MapFull { .. } => "full",
            DataplaneError::Conflict { .. } => "conflict",
            DataplaneError::Map { .. } => "map",
            DataplaneError::TestRun(_) => "test_run",
            DataplaneError::NextHop(_) => "next_hop",
        }
    }
}

/// Which of the object's programs a mode attaches.
fn program_kind(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Tc => "TC",
        XdpMode::Native | XdpMode::Skb | XdpMode::Auto => "XDP",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn not_built_says_what_to_run() {
        let msg = DataplaneError::NotBuilt.to_string();
        assert!(msg.contains("cargo xtask build-ebpf"), "{msg}");
    }

    #[test]
    fn attach_errors_name_the_program_of_their_mode() {
        let failed = |mode| DataplaneError::Attach {
            interface: "eth0".to_owned(),
            mode,
            reason: "no".to_owned(),
            source: None,
        };
        assert_eq!(
            failed(XdpMode::Tc).to_string(),
            "attaching the TC program to eth0 in tc mode failed: no"
        );
        assert_eq!(
            failed(XdpMode::Skb).to_string(),
            "attaching the XDP program to eth0 in skb mode failed: no"
        );
    }
}
