//! The configuration the relay runs with: the config file (if any), with the flags and
//! environment variables laid over it, checked for what only the whole can say (TLS needs a
//! certificate and a key, something to listen on). Read at start-up and on every reload.

use std::path::PathBuf;

use api::RelayConfig;
use api::flags::FlagError;

use super::ServeArgs;

/// Why the configuration could not be loaded. The messages name the flag and the config file
/// key to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading config file {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing config file {}", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(
        "TLS needs a certificate and a key: give --cert FILE and --key FILE (or `cert` and \
         `key` in the config file) with --tls-listen"
    )]
    TlsWithoutCertificate,
    #[error("no listen address: give --listen ADDR:PORT or `listen = [...]` in the config file")]
    NoListenAddress,
    #[error(
        "TLS needs both a certificate and a key: give --cert FILE and --key FILE (or `cert` \
         and `key` in the config file)"
    )]
    CertificateWithoutKey,
}

/// The config file (if any) with flags and environment laid over it.
pub fn load_config(args: &ServeArgs) -> Result<RelayConfig, LoadError> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?;
            toml::from_str(&text).map_err(|source| LoadError::Parse {
                path: path.clone(),
                source,
            })?
        }
        None => RelayConfig::default(),
    };
    let applied = args.settings.apply(&mut c);
    if !c.tls_listen.is_empty() && (c.cert.is_none() || c.key.is_none()) {
        return Err(LoadError::TlsWithoutCertificate);
    }
    applied?;
    if c.listen.is_empty() {
        return Err(LoadError::NoListenAddress);
    }
    match (&c.cert, &c.key) {
        (Some(_), None) | (None, Some(_)) => return Err(LoadError::CertificateWithoutKey),
        (Some(_), Some(_)) if c.tls_listen.is_empty() => c.tls_listen = c.default_tls_listen(),
        _ => {}
    }
    Ok(c)
}

#[cfg(test)]
mod tests;
