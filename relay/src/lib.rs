//! xdpturn relay: a STUN/TURN server (RFC 8489, RFC 8656, RFC 6062, RFC 6156).
//!
//! Layout (see ARCHITECTURE.md): [`stun`] is the wire codec, hand-written because it is our
//! core; the binary `xdpturn-relay` owns the sockets.

pub mod stun;
