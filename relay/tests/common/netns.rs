//! Network namespaces for the tests that run as root: created with `ip netns add`, deleted on
//! drop (so a failing test leaves none behind), entered per thread (setns moves only the calling
//! thread; a socket keeps the namespace it was created in, whichever thread uses it later).
//!
//! Linux only, so not declared in `common/mod.rs`: a test that needs it includes it with
//! `#[path = "common/netns.rs"] mod netns;`.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A MAC address as `ip` writes it (`02:00:00:00:01:00`).
pub fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs `program args`, panicking with its stderr if it fails.
pub fn must(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A short tag unique to this process and call (up to 6 characters), for interface names,
/// which the kernel limits to 15 characters and which also name the NAPI kernel threads.
pub fn short_id() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}{}",
        std::process::id() % 10_000,
        N.fetch_add(1, Ordering::Relaxed) % 100
    )
}

/// A network namespace of this test process, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace named `xdpturn-<pid>-<n>-<tag>`, with its loopback up.
    pub fn new(tag: &str) -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "xdpturn-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        must("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NAME <args>` (whitespace-separated).
    pub fn ip(&self, args: &str) {
        let mut all = vec!["-n", &self.name];
        all.extend(args.split_whitespace());
        must("ip", &all);
    }

    /// `ip netns exec NAME <args>`: the command sees the namespace's interfaces and /sys.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        must("ip", &all);
    }

    pub fn sysctl(&self, setting: &str) {
        self.exec(&["sysctl", "-qw", setting]);
    }

    /// Writes `value` to `/sys/class/net/<dev>/<attr>` as seen from the namespace.
    pub fn write_sys(&self, dev: &str, attr: &str, value: &str) {
        self.exec(&[
            "sh",
            "-c",
            &format!("echo {value} > /sys/class/net/{dev}/{attr}"),
        ]);
    }

    /// Moves the calling thread into the namespace, for good.
    pub fn enter_here(&self) {
        enter_by_name(&self.name);
    }

    /// Runs `f` on a thread inside the namespace: sockets it creates live there.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter_here();
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A veth pair: `here` in this namespace, `there` in `other`.
    pub fn veth(&self, here: &str, other: &Netns, there: &str) {
        must(
            "ip",
            &[
                "link",
                "add",
                here,
                "netns",
                &self.name,
                "type",
                "veth",
                "peer",
                "name",
                there,
                "netns",
                &other.name,
            ],
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the namespace named `name` (`ip netns`), for good: for a
/// thread of its own that outlives a borrow of the [`Netns`].
pub fn enter_by_name(name: &str) {
    let file = File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("opening namespace {name}: {e}"));
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("entering namespace {name}: {e}"));
}
