//! Where the XDP program's object is built and found: `cargo xtask build-ebpf` builds
//! relay-ebpf (its own workspace, nightly, BPF target) into a target directory of its own, and
//! relay/build.rs embeds the release object from there unless `XDPTURN_EBPF_OBJECT` names
//! another. Both take the path from here; relay/build.rs includes this file with `#[path]`, so
//! it uses nothing but `std`.

use std::path::{Path, PathBuf};

/// The target relay-ebpf is built for.
pub const TARGET: &str = "bpfel-unknown-none";

/// The variable that names another object for relay/build.rs to embed: absolute, or relative
/// to the relay package's directory.
pub const OBJECT_VAR: &str = "XDPTURN_EBPF_OBJECT";

/// relay-ebpf's directory in the repository whose root is `repo_root`.
pub fn crate_dir(repo_root: &Path) -> PathBuf {
    repo_root.join("relay-ebpf")
}

/// Where relay-ebpf is built: its own target directory, given to cargo explicitly, so that a
/// CARGO_TARGET_DIR meant for this workspace does not move the object.
pub fn target_dir(repo_root: &Path) -> PathBuf {
    crate_dir(repo_root).join("target")
}

/// The relay's program: the name of its binary in relay-ebpf, and so of its object.
pub const PROGRAM: &str = "xdpturn";

/// The benchmark's floor (relay-ebpf/src/floor.rs): built beside the relay's program, never
/// embedded; `cargo xtask bench-xdp` loads it from the file.
pub const FLOOR: &str = "floor";

/// The object a release build leaves (the program's binary, [`PROGRAM`]): what relay/build.rs
/// embeds unless [`OBJECT_VAR`] names another.
pub fn release_object(repo_root: &Path) -> PathBuf {
    release_dir(repo_root).join(PROGRAM)
}

/// The floor's object from a release build.
pub fn floor_object(repo_root: &Path) -> PathBuf {
    release_dir(repo_root).join(FLOOR)
}

fn release_dir(repo_root: &Path) -> PathBuf {
    target_dir(repo_root).join(TARGET).join("release")
}
