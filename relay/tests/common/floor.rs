//! The benchmarks' floor (relay-ebpf/src/floor.rs), loaded from its object with aya: the
//! rewrite it applies set as its read-only globals, run with BPF_PROG_TEST_RUN or attached to
//! an interface in the relay's place. Also its `pass` program, which does nothing: what a test
//! run costs by itself.
//!
//! `cargo xtask build-ebpf` builds the object beside the relay's program. Linux only, so not
//! declared in `common/mod.rs`: a benchmark includes it with
//! `#[path = "common/floor.rs"] mod floor;`.

#![allow(dead_code)] // Each benchmark uses a different part.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use aya::programs::{TestRun as _, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

/// What the floor writes into every UDP datagram it forwards.
#[derive(Clone, Copy, Debug)]
pub struct Rewrite {
    /// The next hop's MAC address.
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC address.
    pub src_mac: [u8; 6],
    /// The relay's address and port the datagram leaves from.
    pub src: SocketAddr,
    /// Where it goes.
    pub dst: SocketAddr,
    /// The egress interface; 0: back out of the ingress one (`XDP_TX`).
    pub ifindex: u32,
}

/// What one BPF_PROG_TEST_RUN call returned.
#[derive(Debug)]
pub struct Run {
    pub verdict: u32,
    pub output: Vec<u8>,
    /// The kernel's time per run, averaged over the call's repetitions.
    pub duration: Duration,
}

/// The floor's object, loaded with one rewrite, and its programs.
pub struct Floor {
    ebpf: Ebpf,
}

/// The object `cargo xtask build-ebpf` leaves.
pub fn object_path() -> std::path::PathBuf {
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the relay package is in the repository")
        .to_owned();
    relay::dataplane::object::floor_object(&repo_root)
}

/// A family's two addresses, source then destination, as the packet holds them.
fn addresses<const N: usize>(rw: &Rewrite, of: impl Fn(IpAddr) -> Option<Vec<u8>>) -> [u8; N] {
    let mut out = [0u8; N];
    if let (Some(s), Some(d)) = (of(rw.src.ip()), of(rw.dst.ip())) {
        out[..N / 2].copy_from_slice(&s);
        out[N / 2..].copy_from_slice(&d);
    }
    out
}

impl Floor {
    /// Loads the floor with `rw` (its addresses of the other family stay zero) and its `pass`
    /// program. Panics, saying what to do, if the object is not built.
    pub fn load(rw: &Rewrite) -> Floor {
        let path = object_path();
        let object = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "the floor's object {} is missing ({e}): run `cargo xtask build-ebpf`",
                path.display()
            )
        });
        let mut eth = [0u8; 12];
        eth[..6].copy_from_slice(&rw.dst_mac);
        eth[6..].copy_from_slice(&rw.src_mac);
        let ipv4: [u8; 8] = addresses(rw, |ip| match ip {
            IpAddr::V4(v4) => Some(v4.octets().to_vec()),
            IpAddr::V6(_) => None,
        });
        let ipv6: [u8; 32] = addresses(rw, |ip| match ip {
            IpAddr::V6(v6) => Some(v6.octets().to_vec()),
            IpAddr::V4(_) => None,
        });
        let mut ports = [0u8; 4];
        ports[..2].copy_from_slice(&rw.src.port().to_be_bytes());
        ports[2..].copy_from_slice(&rw.dst.port().to_be_bytes());
        let ifindex = rw.ifindex;
        let mut ebpf = EbpfLoader::new()
            .override_global("FLOOR_ETH", &eth, true)
            .override_global("FLOOR_IPV4", &ipv4, true)
            .override_global("FLOOR_IPV6", &ipv6, true)
            .override_global("FLOOR_PORTS", &ports, true)
            .override_global("FLOOR_IFINDEX", &ifindex, true)
            .load(&object)
            .expect("loading the floor's object");
        for name in ["floor", "pass"] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("no program {name} in the floor's object"))
                .try_into()
                .expect("an XDP program");
            program
                .load()
                .unwrap_or_else(|e| panic!("the kernel refused the floor's {name}: {e:?}"));
        }
        Floor { ebpf }
    }

    fn program(&mut self, name: &str) -> &mut Xdp {
        self.ebpf
            .program_mut(name)
            .expect("loaded")
            .try_into()
            .expect("an XDP program")
    }

    /// Runs program `name` (`floor` or `pass`) on `frame` as received on `ingress_ifindex`
    /// (of the calling thread's namespace), `repeat` times in one call.
    pub fn test_run(&mut self, name: &str, frame: &[u8], ingress_ifindex: u32, repeat: u32) -> Run {
        let mut ctx = Vec::with_capacity(24);
        let len = u32::try_from(frame.len()).expect("a frame");
        for field in [0, len, 0, ingress_ifindex, 0, 0] {
            ctx.extend_from_slice(&field.to_ne_bytes());
        }
        let mut out = vec![0u8; frame.len() + 64];
        let result = self
            .program(name)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        Run {
            verdict: result.return_value,
            output: out,
            duration: result.duration,
        }
    }

    /// Attaches the floor to `iface` (of the calling thread's namespace) in native mode; it
    /// stays attached until the floor is dropped.
    pub fn attach_native(&mut self, iface: &str) {
        self.program("floor")
            .attach(iface, XdpMode::Driver)
            .unwrap_or_else(|e| panic!("attaching the floor to {iface} (native): {e:?}"));
    }
}
