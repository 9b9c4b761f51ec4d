//! What the XDP program does to a frame's memory once it has planned a rewrite, done on a host
//! buffer: head and tail moved, the Ethernet and new headers written, a Data indication's header
//! and padding, and the generic-mode move that keeps the UDP header in place. relay-common's
//! rewrite test and the `rewrite` fuzz target (which includes this file by path) both check the
//! planned rewrites through it.

#![allow(dead_code)] // Each includer uses a different part.

use relay_common::indication::DataHeader;
use relay_common::packet::{self, ETH_HLEN, Rewrite, UDP_HLEN};

/// The client's, the relay's and the peer's MAC addresses in the rewritten frames.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const RELAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// bpf_xdp_adjust_head, bpf_xdp_adjust_tail, then the Ethernet header and the new headers
/// (the tail shrinks, or grows by a Data indication's padding, bytes the program zeroes).
pub fn apply(frame: &[u8], rw: &Rewrite) -> Vec<u8> {
    let mut buf = frame.to_vec();
    if rw.head_delta >= 0 {
        buf.drain(..rw.head_delta as usize);
    } else {
        let mut grown = vec![0xEE; rw.head_delta.unsigned_abs() as usize];
        grown.extend_from_slice(&buf);
        buf = grown;
    }
    buf.resize(rw.frame_len, 0xEE);
    let dmac = if rw.added_len > 0 {
        CLIENT_MAC
    } else {
        PEER_MAC
    };
    buf[..ETH_HLEN].copy_from_slice(&packet::ethernet_header(&dmac, &RELAY_MAC, rw.ethertype()));
    buf[ETH_HLEN..ETH_HLEN + rw.headers_len()].copy_from_slice(&rw.headers[..rw.headers_len()]);
    buf
}

/// The generic-mode rewrite of a partial checksum (relay-ebpf's `move_keeping_udp`), on a
/// buffer with head- and tailroom: the data moves by `data_shift`, the front by `head_delta`,
/// and the UDP header must end up where it was. Returns the frame and the UDP header's offset.
pub fn apply_keeping_udp(frame: &[u8], rw: &Rewrite, payload_at: usize) -> (Vec<u8>, usize) {
    const ROOM: usize = 64;
    let mut buf = vec![0xEE; ROOM];
    buf.extend_from_slice(frame);
    buf.extend_from_slice(&[0xEE; ROOM]);
    let udp_abs = ROOM + payload_at - UDP_HLEN;
    let data_abs = ROOM + payload_at + usize::from(rw.removed_len);
    let data_len = usize::from(rw.data_len);
    let to = data_abs
        .checked_add_signed(rw.data_shift as isize)
        .expect("the data stays in the buffer");
    buf.copy_within(data_abs..data_abs + data_len, to);
    let start = ROOM
        .checked_add_signed(rw.head_delta as isize)
        .expect("the front stays in the buffer");
    let mut out = buf[start..start + rw.frame_len].to_vec();
    let dmac = if rw.added_len > 0 {
        CLIENT_MAC
    } else {
        PEER_MAC
    };
    out[..ETH_HLEN].copy_from_slice(&packet::ethernet_header(&dmac, &RELAY_MAC, rw.ethertype()));
    out[ETH_HLEN..ETH_HLEN + rw.headers_len()].copy_from_slice(&rw.headers[..rw.headers_len()]);
    let udp_out = ETH_HLEN + packet::header_len(rw.family);
    assert_eq!(
        start + udp_out,
        udp_abs,
        "the UDP header stays where csum_start points"
    );
    (out, udp_out)
}

/// What the program writes after the headers of a Data indication: its header, and the
/// padding zeros at the end.
pub fn finish_indication(out: &mut [u8], rw: &Rewrite, header: Option<&DataHeader>) {
    if rw.added_len > 0 && !rw.channel_header {
        let h = header.expect("a Data indication's header");
        let at = ETH_HLEN + packet::header_len(rw.family) + UDP_HLEN;
        out[at..at + usize::from(h.len)].copy_from_slice(&h.bytes[..usize::from(h.len)]);
    }
    let end = out.len();
    out[end - usize::from(rw.padding)..].fill(0);
}
