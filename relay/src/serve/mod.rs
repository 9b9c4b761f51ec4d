//! What `xdpturn-relay` runs when given no subcommand, as far as it is more than start-up
//! wiring: its flags ([`ServeArgs`]), the configuration they load ([`load_config`]),
//! supervision (reloads on SIGHUP and file changes, the drain on SIGTERM) and the XDP fast
//! path's attachment and counters.

use std::path::PathBuf;
use std::time::Duration;

use api::flags::parse_duration;

use crate::credentials;

pub mod handover;
mod load;
mod supervise;
mod xdp;

pub use load::{LoadError, load_config};
pub use supervise::{Live, Watch, set_test_lifetimes, supervise};
pub use xdp::{attach_when_free, export_xdp_counters, load_dataplane};

/// The flags of the relay itself: the config file, every setting of [`api::RelayConfig`] (as
/// [`api::RelayFlags`] declares them, with their `XDPTURN_*` variables) and the test knobs.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("api_uris", |a| a.value_parser(parse_uri)))]
pub struct ServeArgs {
    /// Configuration file (TOML, keys as the long flags: listen, min-port, auth-secrets, ...).
    #[arg(short = 'c', long, env = "XDPTURN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: api::RelayFlags,

    /// The relay pod's template revision (the operator sets it). With it, `/readyz?revision=R`
    /// is ready only if R is this revision: during an update two relay pods share a node's
    /// host ports, and the kubelet's probe of the new pod must not be answered by the old
    /// relay while it still holds the port.
    #[arg(long, env = "XDPTURN_REVISION", value_name = "REV")]
    pub revision: Option<String>,

    /// Channel lifetime (RFC 8656 fixes it at 10 minutes): for tests, which need channels to
    /// expire (and leave the XDP maps) within seconds. Not in the config file; hidden.
    #[arg(long, env = "XDPTURN_CHANNEL_LIFETIME", value_parser = parse_duration, hide = true)]
    pub channel_lifetime: Option<Duration>,

    /// Allocation lifetime, the default and the longest a client may ask for (RFC 8656: 10
    /// minutes and what the server allows), for the soak, where abandoned allocations must
    /// expire within its minutes. Not in the config file; hidden.
    #[arg(long, env = "XDPTURN_ALLOCATION_LIFETIME", value_parser = parse_duration, hide = true)]
    pub allocation_lifetime: Option<Duration>,

    /// Permission lifetime (RFC 8656 fixes it at 5 minutes), as --allocation-lifetime. Hidden.
    #[arg(long, env = "XDPTURN_PERMISSION_LIFETIME", value_parser = parse_duration, hide = true)]
    pub permission_lifetime: Option<Duration>,
}

/// A STUN/TURN URI (`--api-uri`, and `--uri` of the credentials command), checked as the
/// credentials endpoint and `credentials` print them.
pub fn parse_uri(s: &str) -> Result<String, String> {
    credentials::check_uri(s).map(|()| s.to_owned())
}
