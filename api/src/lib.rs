//! The contract crate: types shared between the operator and the relay. No I/O.
//!
//! [`RelayConfig`] is the schema of the relay's config file (`relay.toml`), which the operator
//! renders into a ConfigMap and the relay reads. With the `clap` feature, `RelayFlags` are
//! the same settings as the relay's flags and environment variables, and their merge over the
//! file.

mod relay_config;

pub use relay_config::{DEFAULT_LISTEN_PORT, DEFAULT_METRICS_PORT, DEFAULT_TLS_PORT, RelayConfig};
#[cfg(feature = "clap")]
pub use relay_config::{RelayFlags, flags};

mod turncluster;
pub use turncluster::*;

mod cidr;
pub use cidr::parse_cidr;
