//! Embeds the XDP program in the relay when it has been built.
//!
//! `cargo xtask build-ebpf` builds relay-ebpf (its own workspace, nightly, BPF target) into
//! relay-ebpf/target; the release object's path comes from src/dataplane/object.rs, which
//! xtask's build follows too, with the repository root found from this package's directory.
//! XDPTURN_EBPF_OBJECT names another object (absolute, or relative to this package's
//! directory). When the object exists, the `xdpturn_ebpf` cfg is set and XDPTURN_EBPF_OBJECT is
//! passed on to `include_bytes!`; otherwise the relay builds without it and its dataplane
//! reports "not built" at run time.

use std::env;
use std::path::{Path, PathBuf};

// Only the relay's object is embedded; the floor's names are the benchmark's.
#[allow(dead_code)]
#[path = "src/dataplane/object.rs"]
mod object;

use object::OBJECT_VAR;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(xdpturn_ebpf)");
    println!("cargo::rerun-if-env-changed={OBJECT_VAR}");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let explicit = env::var_os(OBJECT_VAR).filter(|v| !v.is_empty());
    let object = match &explicit {
        Some(path) => manifest_dir.join(path),
        None => {
            let repo_root = manifest_dir.parent().unwrap_or(Path::new(".."));
            object::release_object(repo_root)
        }
    };
    if object.is_file() {
        let object = object.canonicalize().unwrap_or(object);
        println!("cargo::rerun-if-changed={}", object.display());
        println!("cargo::rustc-cfg=xdpturn_ebpf");
        println!("cargo::rustc-env={OBJECT_VAR}={}", object.display());
        return;
    }
    if explicit.is_some() {
        println!(
            "cargo::error={OBJECT_VAR} is set but {} is not a file",
            object.display()
        );
        return;
    }
    // Not built (yet). Watch the closest directory that exists on the way to it, so that the
    // relay is rebuilt with the program once `cargo xtask build-ebpf` has run. (A path that
    // does not exist would make cargo rerun this script on every build.)
    if let Some(dir) = object.ancestors().skip(1).find(|d| d.is_dir()) {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    println!("cargo::rerun-if-changed=build.rs");
}
