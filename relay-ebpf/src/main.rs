//! xdpturn's XDP program.
//!
//! For now it passes every packet to the kernel stack (XDP_PASS), so loading it changes
//! nothing: the relay's sockets see all traffic. The ChannelData fast path (parse -> channel map
//! lookup -> rewrite -> checksum -> XDP_TX/redirect, with every error mapped to an explicit
//! action) is added by the kernel fast-path issue, using the map types in `relay-common`.

#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::macros::xdp;
use aya_ebpf::programs::XdpContext;

/// Entry point attached to the NIC.
#[xdp]
pub fn xdpturn(ctx: XdpContext) -> u32 {
    match try_xdpturn(&ctx) {
        Ok(action) => action,
        // Unreachable today; once parsing exists, an error we did not map means "not ours".
        Err(()) => xdp_action::XDP_PASS,
    }
}

fn try_xdpturn(_ctx: &XdpContext) -> Result<u32, ()> {
    Ok(xdp_action::XDP_PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // BPF programs cannot unwind or abort; the verifier rejects any path that reaches here.
    loop {}
}

// Ties the map types into this crate's build now, so a change that breaks them for the BPF
// target fails `cargo xtask build-ebpf` before the fast path uses them.
const _: usize = core::mem::size_of::<relay_common::ChannelKey>()
    + core::mem::size_of::<relay_common::ChannelValue>();
