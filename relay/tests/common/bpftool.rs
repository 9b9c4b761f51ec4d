//! `bpftool` (JSON output) on a network namespace of a test: the XDP programs attached to an
//! interface, their maps, and how many entries a map holds, read from outside the relay.
//!
//! Linux only, so not declared in `common/mod.rs`: a test that needs it includes it with
//! `#[path = "common/bpftool.rs"] mod bpftool;`.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::process::Command;

/// `bpftool -j ARGS` in namespace `ns`, parsed; None if it failed (e.g. no such object).
pub fn bpftool(ns: &str, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "bpftool", "-j"])
        .args(args)
        .output()
        .expect("run bpftool");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Ids of the XDP programs attached to `dev` in `ns`.
pub fn xdp_programs(ns: &str, dev: &str) -> Vec<u64> {
    let Some(net) = bpftool(ns, &["net", "show", "dev", dev]) else {
        return Vec::new();
    };
    net.as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("xdp")?.as_array())
        .flatten()
        .filter_map(|xdp| xdp.get("id")?.as_u64())
        .collect()
}

/// The id of the map `name` of the relay's program.
pub fn program_map(ns: &str, program: u64, name: &str) -> u64 {
    let prog = bpftool(ns, &["prog", "show", "id", &program.to_string()]).expect("the program");
    prog["map_ids"]
        .as_array()
        .expect("map_ids")
        .iter()
        .filter_map(|id| id.as_u64())
        .find(|id| {
            bpftool(ns, &["map", "show", "id", &id.to_string()])
                .is_some_and(|map| map["name"].as_str() == Some(name))
        })
        .unwrap_or_else(|| panic!("the program has no map {name}"))
}

/// Entries in map `id`; None when the map does not exist (any more).
pub fn map_entries(ns: &str, id: u64) -> Option<usize> {
    bpftool(ns, &["map", "dump", "id", &id.to_string()]).map(|dump| {
        dump.as_array()
            .unwrap_or_else(|| panic!("a map dump is an array: {dump}"))
            .len()
    })
}
