//! The floor: the least an XDP program in the relay's place can do to forward a UDP datagram,
//! measured beside the relay's program by `cargo xtask bench-xdp` (never loaded by the relay).
//!
//! It parses Ethernet, IPv4 without options or IPv6 without extension headers, and UDP; writes
//! the next hop's MAC address as the destination and the egress interface's as the source, the
//! relay's address and port as the source and the next hop's as the destination (the way a
//! plain UDP forwarder standing where the relay stands would send it on); updates the IPv4
//! header checksum and the UDP checksum incrementally (RFC 1624; an IPv4 datagram without a UDP
//! checksum stays without one); and sends the frame back out of the interface it came in on
//! (`XDP_TX`) or redirects it to another (`bpf_redirect` with an ifindex, no device map). Anything
//! else goes up (`XDP_PASS`). No map lookups, no counters, no change of family or length: what
//! the relay's program does beyond this (channel and permission lookups, next hops kept per
//! destination, ChannelData and STUN headers added or removed, checksums whatever the offload
//! state, per-CPU counters) is what the benchmark weighs against this floor.
//!
//! It forwards every UDP datagram, whatever its destination: one rewrite, set once when the
//! program is loaded. That is also what lets BPF_PROG_TEST_RUN repeat it: the kernel runs the
//! program again on the packet it has just rewritten, and the floor does the same work on it
//! every time (the relay's program sees a packet that is no longer for it, and passes it up).
//!
//! The rewrite is read-only data (`.rodata` globals) the loader sets with aya's
//! `EbpfLoader::override_global` before loading, the way a C program's `volatile const` are:
//! each is read with a volatile load, so the compiler cannot fold the zeros it is built with.
//! Addresses and ports are in network byte order, as the frame holds them.
//!
//! `pass` is the other program here: it returns `XDP_PASS` and does nothing else. The
//! benchmark runs it the way it runs the others, to measure what the test run itself costs.
//!
//! Its own binary of relay-ebpf (built by the same `cargo xtask build-ebpf`, into the same
//! directory, as `floor`) rather than a program in the relay's object: the relay embeds and
//! loads that object, which stays as it is; the benchmark loads this one from the file.

#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action::{XDP_PASS, XDP_TX};
use aya_ebpf::helpers::generated::bpf_redirect;
use aya_ebpf::macros::xdp;
use aya_ebpf::programs::XdpContext;
use relay_common::csum::Sum;

// The rewrite: exported symbols (`no_mangle`, hence `unsafe_code`), so that the loader finds
// and sets them by name.

/// Destination then source MAC address, as the Ethernet header holds them.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
static FLOOR_ETH: [u16; 6] = [0; 6];
/// IPv4 source then destination address.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
static FLOOR_IPV4: [u16; 4] = [0; 4];
/// IPv6 source then destination address.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
static FLOOR_IPV6: [u16; 16] = [0; 16];
/// UDP source then destination port.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
static FLOOR_PORTS: [u16; 2] = [0; 2];
/// The interface to redirect to; 0: back out of the ingress one (`XDP_TX`).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
static FLOOR_IFINDEX: u32 = 0;

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
/// EtherType IPv4 and IPv6 (0x0800, 0x86DD) as a native 16-bit load of them reads.
const ETH_P_IP: u16 = u16::from_ne_bytes([0x08, 0x00]);
const ETH_P_IPV6: u16 = u16::from_ne_bytes([0x86, 0xDD]);
/// Version 4 with a 20-byte header, and UDP, as the header's bytes hold them.
const IPV4_VIHL: u8 = 0x45;
const IPPROTO_UDP: u8 = 17;

/// Forwards a UDP datagram as configured; passes up everything else.
#[xdp]
pub fn floor(ctx: XdpContext) -> u32 {
    try_floor(&ctx).unwrap_or(XDP_PASS)
}

/// Does nothing: the test run's own cost.
#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[inline(always)]
fn try_floor(ctx: &XdpContext) -> Option<u32> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_HLEN > end {
        return None;
    }
    let ip = data + ETH_HLEN;
    // How the addresses and ports change, for the UDP checksum (its pseudo-header holds the
    // addresses).
    let mut diff = Sum::new();
    let udp = match read16(data + 12) {
        ETH_P_IP => {
            if ip + IPV4_HLEN + UDP_HLEN > end {
                return None;
            }
            if read8(ip) != IPV4_VIHL || read8(ip + 9) != IPPROTO_UDP {
                return None;
            }
            diff = rewrite::<4>(ip + 12, &FLOOR_IPV4, diff);
            // The IPv4 header's checksum covers its addresses only of what changes.
            write16(ip + 10, updated(read16(ip + 10), diff).checksum());
            ip + IPV4_HLEN
        }
        ETH_P_IPV6 => {
            if ip + IPV6_HLEN + UDP_HLEN > end {
                return None;
            }
            if read8(ip + 6) != IPPROTO_UDP {
                return None;
            }
            diff = rewrite::<16>(ip + 8, &FLOOR_IPV6, diff);
            ip + IPV6_HLEN
        }
        _ => return None,
    };
    diff = rewrite::<2>(udp, &FLOOR_PORTS, diff);
    let checksum = read16(udp + 6);
    // Zero: an IPv4 datagram sent without a checksum (IPv6 forbids it), left so.
    if checksum != 0 {
        write16(udp + 6, updated(checksum, diff).udp_checksum());
    }
    rewrite::<6>(data, &FLOOR_ETH, Sum::new());

    // SAFETY: a read of a static, volatile so that the value the loader wrote is used.
    #[allow(unsafe_code)]
    let ifindex = unsafe { core::ptr::read_volatile(&FLOOR_IFINDEX) };
    if ifindex == 0 {
        return Some(XDP_TX);
    }
    // SAFETY: a helper call with plain values; it only records where the frame goes.
    #[allow(unsafe_code)]
    let action = unsafe { bpf_redirect(ifindex, 0) };
    Some(action as u32)
}

/// Writes the `W` words of `new` at `at` (checked to be in the packet by the caller), and
/// returns `diff` with the old words taken out and the new ones added.
#[inline(always)]
fn rewrite<const W: usize>(at: usize, new: &'static [u16; W], mut diff: Sum) -> Sum {
    let mut i = 0;
    while i < W {
        // SAFETY: an element of a static, read volatile so that the loader's value is used.
        #[allow(unsafe_code)]
        let word = unsafe { core::ptr::read_volatile(&new[i]) };
        diff = diff.sub(read16(at + 2 * i)).add(word);
        write16(at + 2 * i, word);
        i += 1;
    }
    diff
}

/// The sum behind `checksum` once the words `diff` describes have changed (RFC 1624, eq. 3).
#[inline(always)]
fn updated(checksum: u16, diff: Sum) -> Sum {
    Sum::from_checksum(checksum).add_wide(u64::from(diff.fold()))
}

// Packet access: every caller has checked that [at, at + 2) is inside the packet. The frame
// starts at an even address and every offset here is even, so the 16-bit accesses are aligned
// (see relay-ebpf's `mem`).

#[inline(always)]
fn read8(at: usize) -> u8 {
    // SAFETY: inside the packet (checked by the caller).
    #[allow(unsafe_code)]
    unsafe {
        *(at as *const u8)
    }
}

#[inline(always)]
fn read16(at: usize) -> u16 {
    // SAFETY: inside the packet (checked by the caller), 2-aligned.
    #[allow(unsafe_code)]
    unsafe {
        *(at as *const u16)
    }
}

#[inline(always)]
fn write16(at: usize, value: u16) {
    // SAFETY: inside the packet (checked by the caller), 2-aligned; volatile, one word at a
    // time, so that the writes stay 16-bit (see relay-ebpf's `mem`).
    #[allow(unsafe_code)]
    unsafe {
        (at as *mut u16).write_volatile(value)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // BPF programs cannot unwind or abort; the verifier rejects any path that reaches here.
    loop {}
}

/// The license the kernel reads (`bpf_redirect` needs none, but the relay's program is GPL
/// too).
// SAFETY: a byte string in the `license` section, the ELF convention for BPF objects; no code
// refers to it.
#[allow(unsafe_code)]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
