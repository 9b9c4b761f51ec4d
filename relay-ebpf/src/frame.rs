//! The two hooks the pipeline runs on: an XDP frame ([`Xdp`]) and an skb at TC ingress
//! ([`Tc`]). The pipeline is written once, generic over [`Frame`], and built twice: the XDP
//! program `xdpturn` and the TC program `xdpturn_tc` (relay_common::maps::TC_PROGRAM), for
//! drivers whose XDP cannot move a frame's head (GCP's gVNIC) or where generic XDP, which
//! linearizes every skb, is slower than TC.
//!
//! Where the hooks differ:
//! - Memory: both give direct access to `[data, data_end)`; an skb may hold its packet in
//!   pages beyond that (`xdpturn_tc` pulls a frame the pipeline may forward into the linear
//!   part first). The `_bytes` helpers are per hook.
//! - The front: XDP moves the frame's head (`bpf_xdp_adjust_head`); an skb changes family
//!   with `bpf_skb_change_proto` (which keeps `skb->protocol` right for the egress device and
//!   its offloads) and grows or shrinks by the rest with `bpf_skb_adjust_room` after the
//!   Ethernet header. Both leave the bytes after the changed room where they were, so a
//!   partial checksum's `csum_start` still points at the UDP header (`packet::keep_partial`).
//! - Checksum state: an skb keeps its offload state through the program, always (generic XDP
//!   only on interfaces in generic mode, `IF_GENERIC`). A received skb may carry the sum of its
//!   bytes (`CHECKSUM_COMPLETE`, from a real NIC); the TC hook writes the IP and UDP headers
//!   with `BPF_F_RECOMPUTE_CSUM`, so that sum stays true and a stack that receives the packet
//!   through a virtual device verifies it without complaint. (The Ethernet header is outside
//!   that sum at TC ingress: written directly.)
//! - Sending: XDP returns `XDP_TX` or redirects through the `EGRESS` device map; TC redirects
//!   with `bpf_redirect` to an interface in `INTERFACES` (its own for `ForwardedTx`).

use aya_ebpf::bindings::{BPF_F_RECOMPUTE_CSUM, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC};
use aya_ebpf::helpers::generated::{
    bpf_redirect, bpf_skb_adjust_room, bpf_skb_change_proto, bpf_skb_change_tail,
    bpf_skb_load_bytes, bpf_skb_store_bytes, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    bpf_xdp_get_buff_len, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
};
use aya_ebpf::programs::{TcContext, XdpContext};
use relay_common::Verdict;
use relay_common::maps::{FAMILY_IPV6, IF_GENERIC};
use relay_common::packet::{ETH_P_IP, ETH_P_IPV6, header_len};
use relay_common::verdict::XDP_PASS;

use crate::maps::{EGRESS, INTERFACES};
use crate::mem::store;

/// What the pipeline needs of its hook. Every method is inlined: the two programs are two
/// monomorphic copies, each checked by the verifier on its own.
pub(crate) trait Frame {
    /// The first byte of the packet's directly accessible memory (the Ethernet header).
    fn data(&self) -> usize;
    /// One past the last directly accessible byte.
    fn data_end(&self) -> usize;
    /// The frame's length, Ethernet header included. From a helper or the skb rather than
    /// `data_end - data`: subtracting one packet pointer from another is pointer arithmetic
    /// the verifier allows only with CAP_PERFMON, which the relay's pod does not need
    /// otherwise.
    fn len(&self) -> usize;
    /// The interface the packet came in on.
    fn ingress(&self) -> u32;
    /// Whether a partial checksum stays partial through the program (an skb's offload state),
    /// so that the rewrite keeps the UDP header where `csum_start` points.
    fn keeps_partial(&self) -> bool;
    /// Copies `n` bytes at `at` out of the packet into `to` (map or stack memory of `n`
    /// bytes, `n` bounded for the verifier).
    fn load_bytes(&self, at: usize, to: *mut u8, n: usize) -> bool;
    /// Copies `n` bytes from `from` into the packet at `at`.
    fn store_bytes(&self, at: usize, from: *const u8, n: usize) -> bool;
    /// Copies the `W` 16-bit words at `from` (map memory, 2-aligned) into the packet at the
    /// constant (even) offset `at`, after the Ethernet header: IP, UDP and TURN headers.
    fn store_l3<const W: usize>(&self, at: usize, from: *const u16) -> Option<()>;
    /// Takes `delta` bytes off the front (adds `-delta`), for a packet going from family
    /// `from` to `to`; the bytes after the old headers stay. `Err(PassAdjustFailed)` when it
    /// failed and changed nothing (the packet can still go up), `Err(DropRewriteFailed)` when
    /// it failed half way.
    fn adjust_head(&self, delta: i32, from: u8, to: u8) -> Result<(), Verdict>;
    /// Adds `delta` bytes at the end (takes `-delta` off).
    fn adjust_tail(&self, delta: i32) -> bool;
    /// Sends the packet, when the program returns a forwarded verdict, to `egress`, which is
    /// the ingress interface when `tx`. Called before the packet changes; sets nothing that
    /// matters when the packet goes up after all. `Err(PassEgressNotAttached)` for an
    /// interface the program may not send to.
    fn send_to(&self, egress: u32, tx: bool) -> Result<(), Verdict>;
}

/// An XDP frame.
pub(crate) struct Xdp(pub(crate) XdpContext);

/// An skb at TC ingress.
pub(crate) struct Tc(pub(crate) TcContext);

// SAFETY (for every `unsafe` block below): helper calls on the program's own context, with
// buffers of at least the length given (the callers' contracts); the helpers check packet
// offsets themselves. Field reads of the context the kernel passed.
#[allow(unsafe_code)]
impl Frame for Xdp {
    #[inline(always)]
    fn data(&self) -> usize {
        self.0.data()
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        self.0.data_end()
    }

    #[inline(always)]
    fn len(&self) -> usize {
        (unsafe { bpf_xdp_get_buff_len(self.0.ctx) }) as usize
    }

    #[inline(always)]
    fn ingress(&self) -> u32 {
        self.0.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn keeps_partial(&self) -> bool {
        INTERFACES
            .get_ptr(&self.ingress())
            .is_some_and(|flags| unsafe { *flags } & IF_GENERIC != 0)
    }

    #[inline(always)]
    fn load_bytes(&self, at: usize, to: *mut u8, n: usize) -> bool {
        unsafe { bpf_xdp_load_bytes(self.0.ctx, at as u32, to.cast(), n as u32) == 0 }
    }

    #[inline(always)]
    fn store_bytes(&self, at: usize, from: *const u8, n: usize) -> bool {
        unsafe { bpf_xdp_store_bytes(self.0.ctx, at as u32, from.cast_mut().cast(), n as u32) == 0 }
    }

    #[inline(always)]
    fn store_l3<const W: usize>(&self, at: usize, from: *const u16) -> Option<()> {
        // Direct writes: a frame carries no checksum state to keep.
        let words = unsafe { core::ptr::read(from as *const [u16; W]) };
        store(self, at, words)
    }

    #[inline(always)]
    fn adjust_head(&self, delta: i32, _from: u8, _to: u8) -> Result<(), Verdict> {
        match unsafe { bpf_xdp_adjust_head(self.0.ctx, delta) } {
            0 => Ok(()),
            _ => Err(Verdict::PassAdjustFailed),
        }
    }

    #[inline(always)]
    fn adjust_tail(&self, delta: i32) -> bool {
        unsafe { bpf_xdp_adjust_tail(self.0.ctx, delta) == 0 }
    }

    #[inline(always)]
    fn send_to(&self, egress: u32, tx: bool) -> Result<(), Verdict> {
        // `bpf_redirect_map` only records the target, which the kernel uses when the program
        // returns XDP_REDIRECT (and ignores otherwise), and answers XDP_PASS (the flags' low
        // bits) when the interface is not in EGRESS: one device map lookup, where checking
        // first and redirecting at the end took two. XDP_TX needs nothing.
        if !tx && EGRESS.redirect(egress, u64::from(XDP_PASS)).is_err() {
            return Err(Verdict::PassEgressNotAttached);
        }
        Ok(())
    }
}

#[allow(unsafe_code)]
impl Frame for Tc {
    #[inline(always)]
    fn data(&self) -> usize {
        self.0.data()
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        self.0.data_end()
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn ingress(&self) -> u32 {
        unsafe { (*self.0.skb.skb).ingress_ifindex }
    }

    #[inline(always)]
    fn keeps_partial(&self) -> bool {
        true
    }

    #[inline(always)]
    fn load_bytes(&self, at: usize, to: *mut u8, n: usize) -> bool {
        unsafe { bpf_skb_load_bytes(self.0.skb.skb.cast(), at as u32, to.cast(), n as u32) == 0 }
    }

    #[inline(always)]
    fn store_bytes(&self, at: usize, from: *const u8, n: usize) -> bool {
        // Data and padding: the skb's sum of its bytes, if it has one, follows.
        unsafe {
            bpf_skb_store_bytes(
                self.0.skb.skb,
                at as u32,
                from.cast(),
                n as u32,
                u64::from(BPF_F_RECOMPUTE_CSUM),
            ) == 0
        }
    }

    #[inline(always)]
    fn store_l3<const W: usize>(&self, at: usize, from: *const u16) -> Option<()> {
        self.store_bytes(at, from.cast(), 2 * W).then_some(())
    }

    #[inline(always)]
    fn adjust_head(&self, delta: i32, from: u8, to: u8) -> Result<(), Verdict> {
        let skb = self.0.skb.skb;
        let mut rest = delta;
        let mut changed = false;
        if from != to {
            let proto = if to == FAMILY_IPV6 {
                ETH_P_IPV6
            } else {
                ETH_P_IP
            };
            if unsafe { bpf_skb_change_proto(skb, proto.to_be(), 0) } != 0 {
                return Err(Verdict::PassAdjustFailed);
            }
            changed = true;
            rest -= header_len(from) as i32 - header_len(to) as i32;
        }
        if rest != 0 && unsafe { bpf_skb_adjust_room(skb, -rest, BPF_ADJ_ROOM_MAC, 0) } != 0 {
            return Err(if changed {
                Verdict::DropRewriteFailed
            } else {
                Verdict::PassAdjustFailed
            });
        }
        Ok(())
    }

    #[inline(always)]
    fn adjust_tail(&self, delta: i32) -> bool {
        let len = (self.len() as i32 + delta) as u32;
        unsafe { bpf_skb_change_tail(self.0.skb.skb, len, 0) == 0 }
    }

    #[inline(always)]
    fn send_to(&self, egress: u32, tx: bool) -> Result<(), Verdict> {
        if !tx && INTERFACES.get_ptr(&egress).is_none() {
            return Err(Verdict::PassEgressNotAttached);
        }
        // Records the target (this CPU's redirect state), used when the program returns
        // TC_ACT_REDIRECT; its answer is that action.
        unsafe { bpf_redirect(egress, 0) };
        Ok(())
    }
}
