//! aya's and the kernel's errors as [`DataplaneError`]s, with what to do about the usual
//! causes (permissions, the verifier, a full map).

use std::io;

use rustix::io::Errno;

use crate::dataplane::DataplaneError;

/// A load error with what to do about the usual causes.
pub(super) fn load_error<E>(what: &str, e: E) -> DataplaneError
where
    E: std::error::Error + Send + Sync + 'static,
{
    // The whole chain: aya's map and program errors keep the errno (EPERM...) in their source.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    let hint = if text.contains("Operation not permitted")
        || text.contains("Permission denied")
        || text.contains("EPERM")
        || text.contains("EACCES")
    {
        if text.contains("!root") || text.contains("pointer") {
            " (the verifier refused pointer arithmetic it allows only with CAP_PERFMON: needs \
             root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
        } else {
            " (needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
        }
    } else if text.contains("Invalid argument") {
        " (the kernel refused it: too old for the program, or the verifier's log above says why)"
    } else {
        ""
    };
    DataplaneError::Load {
        reason: format!("{what}: {text}{hint}"),
        source: Some(Box::new(e)),
    }
}

pub(super) fn map_error<E>(map: &'static str, e: E) -> DataplaneError
where
    E: std::error::Error + Send + Sync + 'static,
{
    DataplaneError::Map {
        map,
        source: Box::new(e),
    }
}

/// E2BIG from an insert means the map is full.
pub(super) fn full_or(
    map: &'static str,
    e: aya::maps::MapError,
    max_channels: u32,
) -> DataplaneError {
    match &e {
        aya::maps::MapError::SyscallError(s) if errno(&s.io_error) == Some(Errno::TOOBIG) => {
            DataplaneError::Full { max_channels }
        }
        _ => map_error(map, e),
    }
}

pub(super) fn errno(e: &io::Error) -> Option<Errno> {
    Errno::from_io_error(e)
}

/// A key or value of mixed families (which the bindings rule out) as a map error.
pub(super) fn mixed(map: &'static str, e: relay_common::maps::MixedFamilies) -> DataplaneError {
    DataplaneError::Map {
        map,
        source: e.to_string().into(),
    }
}

/// A netlink socket or its error, as a load error.
pub(super) fn netlink<T>(result: io::Result<T>, what: &str) -> Result<T, DataplaneError> {
    result.map_err(|e| DataplaneError::Load {
        reason: format!("{what}: {e}"),
        source: Some(Box::new(e)),
    })
}
