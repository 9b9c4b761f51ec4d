//! What the program did with a packet, and why: every packet is counted under exactly one
//! [`Verdict`] in the per-CPU `ACTION_STATS` array, and returns the XDP action that goes with
//! it (`XDP_PASS`, `XDP_DROP`, `XDP_TX`, `XDP_REDIRECT`).
// Which way a packet goes is decided by matching on enums here: every variant is named.
#![deny(clippy::wildcard_enum_match_arm)]

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`.
pub const XDP_REDIRECT: u32 = 4;
/// `TC_ACT_UNSPEC`, which tcx calls `TCX_NEXT`: the next program (or filter) on the hook sees
/// the packet; after the last, the kernel stack does.
pub const TC_ACT_UNSPEC: i32 = -1;
/// `TC_ACT_SHOT`: dropped.
pub const TC_ACT_SHOT: i32 = 2;
/// `TC_ACT_REDIRECT`: sent where `bpf_redirect` said.
pub const TC_ACT_REDIRECT: i32 = 7;

/// What the program did with a packet and why. The discriminant is the index in
/// `ACTION_STATS`; [`Verdict::as_str`] is the metric label.
///
/// `Pass*` hands the packet, unchanged, to the kernel stack and so to the relay's sockets: it is
/// not ours, or it is ours but the userspace datapath handles it (it does the same thing, only
/// slower). `Drop*` is for packets that are malformed beyond what the kernel stack or the relay
/// would accept anyway.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Forwarded out of the interface it came in on (`XDP_TX`).
    ForwardedTx = 0,
    /// Forwarded to another attached interface (`XDP_REDIRECT`).
    ForwardedRedirect,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...), or shorter than an Ethernet header.
    PassNotIp,
    /// An 802.1Q / 802.1ad tag the program does not parse.
    PassVlan,
    /// IP, but not UDP (TCP, ICMP, ESP, ...): TURN over TCP/TLS and ICMP errors included.
    PassNotUdp,
    /// An IP fragment (IPv4 MF/offset, IPv6 fragment header): the kernel reassembles it.
    PassFragment,
    /// IPv4 options or IPv6 extension headers: rare, and handled by the kernel.
    PassIpOptions,
    /// UDP to neither a listener nor a relayed address with a bound channel.
    PassNotForUs,
    /// To a listener, first byte 0x00-0x3F: STUN, for the relay.
    PassStun,
    /// A Send indication the program does not relay: no allocation or permission for it in
    /// the maps, or nothing it can prove (unknown comprehension-required attributes, a
    /// FINGERPRINT that does not match, malformed attributes, data too long to check): the
    /// relay handles it.
    PassSendIndication,
    /// To a listener, neither STUN nor ChannelData (first byte 0x80-0xFF, or empty).
    PassNotChannelData,
    /// ChannelData for a channel the maps do not hold (not bound yet, or another transport).
    PassUnknownChannel,
    /// ChannelData with more than 3 bytes after its data (more than padding): userspace
    /// ignores them, the program does not trim more than padding.
    PassTrailingBytes,
    /// A frame longer than the program handles (16 KiB), or a datagram whose checksum needs
    /// its payload summed (a partial checksum) with more than 2 KiB of data.
    PassTooBig,
    /// TTL / hop limit too low to forward (0 or 1): userspace sends it with a fresh one.
    PassTtl,
    /// A UDP checksum the program cannot update: zero (none) on IPv4 when the packet leaves as
    /// IPv6, where it is mandatory, or zero on IPv6, which is invalid.
    PassNoChecksum,
    /// No next hop is known for the destination yet (userspace has not resolved its route and
    /// neighbour, or the neighbour's MAC is not known): userspace sends this packet, which makes
    /// the kernel resolve the neighbour, and keeps the next-hop map current.
    PassNoNextHop,
    /// The rewritten packet would exceed the egress interface's MTU.
    PassMtu,
    /// The UDP checksum is neither a complete one nor a partial one (a pseudo-header sum the
    /// sender's offload was to finish) that the program can prove, or is both: the program
    /// cannot tell what to send, so userspace does (the kernel verifies the checksum first).
    PassChecksumUnknown,
    /// The route leaves through an interface the program is not attached to.
    PassEgressNotAttached,
    /// `bpf_xdp_adjust_head` refused (not enough headroom); nothing was changed.
    PassAdjustFailed,
    /// Malformed IP or UDP header: bad version or header length, lengths beyond the frame.
    DropMalformed,
    /// ChannelData on a bound channel whose length field exceeds the datagram, or a datagram to
    /// a listener too short for a ChannelData header: the relay would drop it too.
    DropLength,
    /// A helper failed after the packet was partly rewritten; it cannot be passed on.
    DropRewriteFailed,
}

impl Verdict {
    /// How many verdicts there are (the size of `ACTION_STATS`).
    pub const COUNT: usize = 24;

    /// Every verdict, in index order.
    pub const ALL: [Verdict; Self::COUNT] = [
        Verdict::ForwardedTx,
        Verdict::ForwardedRedirect,
        Verdict::PassNotIp,
        Verdict::PassVlan,
        Verdict::PassNotUdp,
        Verdict::PassFragment,
        Verdict::PassIpOptions,
        Verdict::PassNotForUs,
        Verdict::PassStun,
        Verdict::PassSendIndication,
        Verdict::PassNotChannelData,
        Verdict::PassUnknownChannel,
        Verdict::PassTrailingBytes,
        Verdict::PassTooBig,
        Verdict::PassTtl,
        Verdict::PassNoChecksum,
        Verdict::PassNoNextHop,
        Verdict::PassMtu,
        Verdict::PassChecksumUnknown,
        Verdict::PassEgressNotAttached,
        Verdict::PassAdjustFailed,
        Verdict::DropMalformed,
        Verdict::DropLength,
        Verdict::DropRewriteFailed,
    ];

    /// The index in `ACTION_STATS`.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The verdict at `index`, if there is one.
    pub const fn from_index(index: u32) -> Option<Self> {
        if (index as usize) < Self::COUNT {
            Some(Self::ALL[index as usize])
        } else {
            None
        }
    }

    /// The XDP action (the program's return value) that goes with the verdict.
    #[inline(always)]
    pub const fn xdp_action(self) -> u32 {
        match self {
            Verdict::ForwardedTx => XDP_TX,
            Verdict::ForwardedRedirect => XDP_REDIRECT,
            Verdict::DropMalformed | Verdict::DropLength | Verdict::DropRewriteFailed => XDP_DROP,
            Verdict::PassNotIp
            | Verdict::PassVlan
            | Verdict::PassNotUdp
            | Verdict::PassFragment
            | Verdict::PassIpOptions
            | Verdict::PassNotForUs
            | Verdict::PassStun
            | Verdict::PassSendIndication
            | Verdict::PassNotChannelData
            | Verdict::PassUnknownChannel
            | Verdict::PassTrailingBytes
            | Verdict::PassTooBig
            | Verdict::PassTtl
            | Verdict::PassNoChecksum
            | Verdict::PassNoNextHop
            | Verdict::PassMtu
            | Verdict::PassChecksumUnknown
            | Verdict::PassEgressNotAttached
            | Verdict::PassAdjustFailed => XDP_PASS,
        }
    }

    /// The TC program's return value that goes with the verdict: forwarded packets are
    /// redirected (to the ingress interface's egress for `ForwardedTx`), dropped ones shot,
    /// and every other one handed on unchanged with `TC_ACT_UNSPEC` rather than passed up
    /// with `TC_ACT_OK`: another relay's program attached after this one on the same hook
    /// (two relays share a host during a hand-over of its ports) still sees the packets that
    /// are not this one's.
    #[inline(always)]
    pub const fn tc_action(self) -> i32 {
        match self.xdp_action() {
            XDP_TX | XDP_REDIRECT => TC_ACT_REDIRECT,
            XDP_DROP => TC_ACT_SHOT,
            _ => TC_ACT_UNSPEC,
        }
    }

    /// A bounded, stable name for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::ForwardedTx => "forwarded_tx",
            Verdict::ForwardedRedirect => "forwarded_redirect",
            Verdict::PassNotIp => "pass_not_ip",
            Verdict::PassVlan => "pass_vlan",
            Verdict::PassNotUdp => "pass_not_udp",
            Verdict::PassFragment => "pass_fragment",
            Verdict::PassIpOptions => "pass_ip_options",
            Verdict::PassNotForUs => "pass_not_for_us",
            Verdict::PassStun => "pass_stun",
            Verdict::PassSendIndication => "pass_send_indication",
            Verdict::PassNotChannelData => "pass_not_channel_data",
            Verdict::PassUnknownChannel => "pass_unknown_channel",
            Verdict::PassTrailingBytes => "pass_trailing_bytes",
            Verdict::PassTooBig => "pass_too_big",
            Verdict::PassTtl => "pass_ttl",
            Verdict::PassNoChecksum => "pass_no_checksum",
            Verdict::PassNoNextHop => "pass_no_next_hop",
            Verdict::PassMtu => "pass_mtu",
            Verdict::PassChecksumUnknown => "pass_checksum_unknown",
            Verdict::PassEgressNotAttached => "pass_egress_not_attached",
            Verdict::PassAdjustFailed => "pass_adjust_failed",
            Verdict::DropMalformed => "drop_malformed",
            Verdict::DropLength => "drop_length",
            Verdict::DropRewriteFailed => "drop_rewrite_failed",
        }
    }

    /// Whether the packet was forwarded by the program.
    pub const fn is_forwarded(self) -> bool {
        matches!(self, Verdict::ForwardedTx | Verdict::ForwardedRedirect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_and_names_unique() {
        for (i, a) in Verdict::ALL.iter().enumerate() {
            assert_eq!(a.index() as usize, i);
            assert_eq!(Verdict::from_index(i as u32), Some(*a));
            for b in &Verdict::ALL[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
        assert_eq!(Verdict::from_index(Verdict::COUNT as u32), None);
        assert_eq!(
            Verdict::DropRewriteFailed.index() as usize,
            Verdict::COUNT - 1
        );
    }

    #[test]
    fn verdicts() {
        assert_eq!(Verdict::ForwardedTx.xdp_action(), XDP_TX);
        assert_eq!(Verdict::ForwardedRedirect.xdp_action(), XDP_REDIRECT);
        assert_eq!(Verdict::PassStun.xdp_action(), XDP_PASS);
        assert_eq!(Verdict::DropLength.xdp_action(), XDP_DROP);
        let forwarded = Verdict::ALL.iter().filter(|a| a.is_forwarded()).count();
        let dropped = Verdict::ALL
            .iter()
            .filter(|a| a.xdp_action() == XDP_DROP)
            .count();
        assert_eq!((forwarded, dropped), (2, 3));
        for a in Verdict::ALL {
            let tc = match a.tc_action() {
                TC_ACT_REDIRECT => "forwarded_",
                TC_ACT_SHOT => "drop_",
                TC_ACT_UNSPEC => "pass_",
                other => panic!("{a:?}: unexpected TC action {other}"),
            };
            assert!(a.as_str().starts_with(tc), "{a:?} -> {tc}");
            assert_eq!(a.as_str().starts_with("pass_"), a.xdp_action() == XDP_PASS);
            assert_eq!(a.as_str().starts_with("drop_"), a.xdp_action() == XDP_DROP);
        }
    }
}
