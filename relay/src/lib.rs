//! xdpturn relay: a STUN/TURN server (RFC 8489, RFC 8656, RFC 6062, RFC 6156).
//!
//! Layout (see ARCHITECTURE.md): [`stun`] is the wire codec, hand-written because it is our
//! core; [`proto`] is the protocol core, bytes in and decisions out, with no I/O; [`eventloop`]
//! owns the sockets; [`http`] serves metrics and health; [`credentials`] makes the credentials
//! coturn's `turnadmin` does; [`userdb`] reads the user database `turnadmin` writes.

pub mod config;
pub mod credentials;
pub mod dataplane;
pub mod eventloop;
pub mod http;
pub mod metrics;
pub mod proto;
pub mod serve;
pub mod stun;
pub mod tls;
pub mod userdb;
