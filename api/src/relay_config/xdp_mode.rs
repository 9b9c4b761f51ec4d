//! [`XdpMode`] (declared with the TurnCluster spec) as the relay reads and prints it: the names
//! flags, config files and logs use, with the aliases (`driver`, `drv`, `generic`) the relay
//! has always accepted, and the config file's `xdp-mode` key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::XdpMode;

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" | "driver" | "drv" => Ok(XdpMode::Native),
            "skb" | "generic" => Ok(XdpMode::Skb),
            "tc" => Ok(XdpMode::Tc),
            "auto" => Ok(XdpMode::Auto),
            _ => Err(format!(
                "unknown XDP mode `{s}` (expected native, tc, skb or auto)"
            )),
        }
    }
}

/// The config file's `xdp-mode`: any name [`XdpMode::from_str`] takes. (It is written as
/// [`XdpMode::as_str`]: `native`, `tc`, `skb` or `auto`. The TurnCluster spec takes only
/// those.)
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<XdpMode, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(serde::de::Error::custom)
}
