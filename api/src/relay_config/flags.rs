//! How a flag or environment variable goes over the config file's value ([`Overlay`]), the
//! parsers of the duration flags, and the error of a flag value that does not parse.

use std::time::Duration;

use super::{RelayConfig, RelayFlags};
use crate::XdpMode;

/// A flag's value that does not parse, named as its config file key: `xdp-mode: unknown XDP
/// mode ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct FlagError {
    /// The config file key (kebab-case).
    pub setting: String,
    pub message: String,
}

impl FlagError {
    pub(super) fn new(field: &str, message: String) -> Self {
        FlagError {
            setting: field.replace('_', "-"),
            message,
        }
    }
}

/// Lays a flag's value (`F`) over the config file's (`Self`), the way the two types call for.
pub(super) trait Overlay<F> {
    fn overlay(&mut self, flag: &F) -> Result<(), String>;
}

/// A list given as a flag (or a variable) replaces the file's; an empty one leaves it.
impl<T: Clone> Overlay<Vec<T>> for Vec<T> {
    fn overlay(&mut self, flag: &Vec<T>) -> Result<(), String> {
        if !flag.is_empty() {
            self.clone_from(flag);
        }
        Ok(())
    }
}

/// A value given replaces the file's.
impl<T: Clone> Overlay<Option<T>> for T {
    fn overlay(&mut self, flag: &Option<T>) -> Result<(), String> {
        if let Some(value) = flag {
            self.clone_from(value);
        }
        Ok(())
    }
}

/// An optional setting (a file path) given replaces the file's.
impl<T: Clone> Overlay<Option<T>> for Option<T> {
    fn overlay(&mut self, flag: &Option<T>) -> Result<(), String> {
        if flag.is_some() {
            self.clone_from(flag);
        }
        Ok(())
    }
}

/// A duration flag (`300`, `5m`) over a `..-secs` key: whole seconds.
impl Overlay<Option<Duration>> for u64 {
    fn overlay(&mut self, flag: &Option<Duration>) -> Result<(), String> {
        if let Some(d) = flag {
            *self = d.as_secs();
        }
        Ok(())
    }
}

/// `--xdp-mode` is parsed here rather than by clap, so that a bad one is reported as the config
/// file's is: `xdp-mode: unknown XDP mode ...`.
impl Overlay<Option<String>> for XdpMode {
    fn overlay(&mut self, flag: &Option<String>) -> Result<(), String> {
        if let Some(name) = flag {
            *self = name.parse()?;
        }
        Ok(())
    }
}

impl RelayFlags {
    /// Settings that go over the file's together: a token from a flag or the environment
    /// replaces the file's, whichever way (the token or its file) it was given.
    pub(super) fn apply_pairs(&self, cfg: &mut RelayConfig) {
        if self.api_token.is_some() || self.api_token_file.is_some() {
            cfg.api_token.clone_from(&self.api_token);
            cfg.api_token_file.clone_from(&self.api_token_file);
        }
    }
}

/// A duration in seconds (`300`) or with units (`5m`, `24h`, `7d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 3600, 30m, 24h, 7d)"))
        }
    }
}

/// A credential's lifetime: a positive [`parse_duration`].
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl.is_zero() {
        return Err("a credential needs a positive lifetime".into());
    }
    Ok(ttl)
}
