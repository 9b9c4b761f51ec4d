//! `cargo xtask`: the project's repeatable chores.
//!
//! Run `cargo xtask --help` for the list. The alias lives in `.cargo/config.toml`.

mod arm64;
mod bench;
mod bench_xdp;
mod cluster;
mod cmd;
mod crdgen;
mod ebpf;
mod envtest;
mod fuzz;
mod images;
mod soak;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The nightly toolchain used for the eBPF build and for fuzzing. Keep in sync with
/// `relay-ebpf/rust-toolchain.toml`.
pub const NIGHTLY: &str = "nightly-2026-05-20";

/// xdpturn's repeatable chores: the one test command, CRD generation, the eBPF build, the
/// benchmark against coturn.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set up the test environment and run every check the project has
    ///
    /// This is THE test command, on a fresh Debian 12 machine with rustup as on a developer's.
    /// It is idempotent and prints every external command before running it. In order:
    ///
    ///  1. apt packages: coturn (turnutils_stunclient, turnutils_uclient, turnadmin, turnserver),
    ///     iproute2, ethtool; `apt-get update` runs once, only if one is missing (checked with
    ///     `dpkg -s`). Uses sudo when not root.
    ///
    ///  2. the pinned stable toolchain's components (rust-toolchain.toml: rustfmt, clippy).
    ///
    ///  2b. the eBPF toolchain: the nightly with rust-src, and bpf-linker 0.10.4
    ///     (`cargo install --locked`, only if missing or another version).
    ///
    ///  3. the nightly toolchain with rust-src, and cargo-fuzz (installed only if
    ///     `cargo fuzz --version` fails).
    ///
    ///  3b. `cargo xtask envtest`: kube-apiserver, kube-controller-manager, kubectl and etcd for
    ///     the operator's integration tests, built once into a cache outside the repo; their
    ///     directory is exported to `cargo test` as XDPTURN_ENVTEST_BIN. With --skip-install,
    ///     XDPTURN_ENVTEST_BIN as set, else the cache when it is complete.
    ///
    ///  3c. `cargo xtask build-ebpf`: the XDP program, which the relay then embeds and the
    ///     BPF_PROG_TEST_RUN tests (relay/tests/xdp_*.rs, root) run.
    ///
    ///  4. `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D warnings`,
    ///     `cargo test --workspace`.
    ///
    ///  5. `cargo xtask crdgen --check`: the checked-in CRD YAML matches the api types.
    ///
    ///  5b. unless --no-cluster: `cargo xtask cluster test`: the relay and operator images built
    ///     and packed for this machine, a single-node Kubernetes of its own, the chart installed,
    ///     a TurnCluster carrying calls through its relay pod (operator/tests/cluster.rs), the
    ///     cluster torn down.
    ///
    ///  6. a short, time-bounded run of every cargo-fuzz target in fuzz/fuzz_targets/ on its
    ///     kept corpus (fuzz/corpus/<target>; --fuzz-seconds each).
    ///
    ///  7. with --images only: `cargo xtask images --check` and `cargo xtask test-arm64`.
    ///
    /// Stops at the first failing step, names it, and exits non-zero.
    #[command(verbatim_doc_comment)]
    Test(test::Args),

    /// Fuzz at length: every cargo-fuzz target (or each --target) for --minutes N or --runs N
    /// executions, on its kept corpus.
    ///
    /// Installs what it needs first, idempotently, as `cargo xtask test` does (the pinned
    /// nightly with rust-src, cargo-fuzz). Per target, `cargo fuzz run` on a scratch directory
    /// (fuzz/target/corpus-new/<target>, where libFuzzer writes its finds) and the kept corpus
    /// fuzz/corpus/<target> (committed), with -max_total_time (--minutes), -runs (--runs) and
    /// -print_final_stats=1; then,
    /// unless --no-merge, `-merge=1` copies into the kept corpus the finds that add coverage.
    ///
    /// Prints per target: executions, exec/s, coverage (edges and features), the corpus the
    /// run ended on, the kept corpus and what the merge added, and any crash with the path of
    /// its input (fuzz/artifacts/<target>/) and the command that reproduces it. The last line
    /// is `RESULT fuzz {json}` with the same per target. Exits non-zero if a target crashed.
    ///
    /// --seed writes the seed corpus instead: RFC 5769's test vectors and the messages of a
    /// TURN exchange (Binding, Allocate, 401, Allocate with MESSAGE-INTEGRITY, its success,
    /// CreatePermission, ChannelBind, Send and Data indications, Refresh, ChannelData) built
    /// with the relay's codec, files named by the SHA-1 of their content.
    #[command(verbatim_doc_comment)]
    Fuzz(fuzz::Args),

    /// Generate the TurnCluster CRD YAML from the api crate.
    ///
    /// Writes crds/turnclusters.xdpturn.io.yaml and the same file into charts/xdpturn/crds/.
    /// With --check, writes nothing and exits 1 listing the files that differ.
    Crdgen(crdgen::Args),

    /// Build the XDP program in relay-ebpf/ (nightly, -Z build-std=core, bpfel-unknown-none).
    ///
    /// Installs what it needs first, idempotently (the pinned nightly with rust-src, bpf-linker
    /// 0.10.4). Prints the path of the built BPF object.
    BuildEbpf(ebpf::Args),

    /// Provide a real kube-apiserver, kube-controller-manager, kubectl and etcd for the
    /// operator's integration tests (operator/tests/envtest), as controller-runtime's envtest does,
    /// and the kubelet, kube-scheduler, kube-proxy and pause binaries `cargo xtask cluster` runs.
    ///
    /// Idempotent. Installs what is missing from Debian (golang-1.19-go, etcd-server, make,
    /// rsync, gcc, libc6-dev, dpkg-dev, openssl, golang-github-modern-go-reflect2-dev,
    /// golang-github-json-iterator-go-dev, and kubernetes-client when no kubectl is on PATH),
    /// then, unless the cache is current:
    ///
    ///  1. fetches Debian 12's `kubernetes` source package (upstream v1.20.2 with vendor/) with
    ///     `apt-get source`, through a private deb-src list naming the Debian mirrors apt already
    ///     uses, with private list and cache directories (the system's apt state is untouched);
    ///
    ///  2. replaces the vendored modern-go/reflect2 (v1.0.1 crashes under Go >= 1.18 on the first
    ///     custom-resource write) and json-iterator/go with Debian's packaged 1.0.2 and 1.1.12;
    ///
    ///  3. builds offline: `GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 make WHAT='cmd/...'`
    ///     with Go 1.19 (about 12 minutes for the six, about 2.5 GB in a build directory removed
    ///     afterwards), and the pause binary with `gcc -static`;
    ///
    ///  4. installs the binaries, a link to Debian's etcd and a stamp naming the recipe into
    ///     <cache>/kubernetes-v1.20.2/, where <cache> is --cache-dir or XDPTURN_ENVTEST_CACHE,
    ///     else $XDG_CACHE_HOME/xdpturn-envtest, else $HOME/.cache/xdpturn-envtest.
    ///
    /// A cache whose stamp matches is reused. Prints the binaries' paths; tests find them through
    /// XDPTURN_ENVTEST_BIN=<cache>/kubernetes-v1.20.2/bin, which --print-env prints alone.
    #[command(verbatim_doc_comment)]
    Envtest(envtest::Args),

    /// A real single-node Kubernetes (v1.20) on this machine: `up` and `down` (root).
    ///
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the kubelet and kube-proxy
    /// (built by `cargo xtask envtest`), with Debian's containerd, runc and CNI plugins, all in a
    /// network namespace of their own joined to the host by a veth pair (the node is 10.250.N.2,
    /// the host's end 10.250.N.1) and a private mount namespace for the host paths they
    /// hard-code. No registry: the pause image is packed from the Kubernetes source, images are
    /// imported with `ctr -n k8s.io images import`. `up` is idempotent and prints the
    /// kubeconfig; `down` stops every process the cluster started and removes the namespaces,
    /// veth, cgroups, mount points and the cluster's directory (target/cluster/<name>).
    #[command(verbatim_doc_comment)]
    Cluster(cluster::Args),

    /// Benchmark our relay against coturn's turnserver, one after the other, on loopback.
    ///
    /// Builds the relay (`cargo build --release -p relay`), then for each part starts a fresh
    /// xdpturn-relay and a fresh turnserver (Debian's coturn) in turn, with the same realm,
    /// static user, loopback listener, relay IP 127.0.0.1, relay port range and loopback peers
    /// allowed, puts the same load on each, and kills it (by PID) afterwards:
    ///
    ///  relay   turnutils_uclient (channels) to turnutils_peer (echo): relayed messages
    ///          (2 x received) per CPU-second of the server (utime+stime, /proc/PID/stat),
    ///          loss %, uclient's average RTT.
    ///
    ///  alloc   a load generator (relay::stun): clients in flight, each Allocate -> 401 ->
    ///          Allocate with MESSAGE-INTEGRITY -> success -> Refresh 0, from a new socket every
    ///          time: allocations per second of wall time and per server CPU-second.
    ///
    ///  memory  N allocations created and held: (VmRSS after - before) per 10,000.
    ///
    /// The load generator would spend several times the CPU per allocation in the dev profile
    /// `cargo xtask` uses, so the command first rebuilds xtask with the load generator's hot
    /// crates at opt-level 3, in target/bench-loadgen, and runs itself from there
    /// (--unoptimized-loadgen skips that).
    ///
    /// Prints every command it runs, a line per measurement, then a table with the ratio
    /// ours/coturn. Needs turnserver, turnutils_uclient and turnutils_peer on PATH; raises
    /// RLIMIT_NOFILE for the held allocations. The machine is shared and noisy: the numbers are
    /// figures, not assertions.
    #[command(verbatim_doc_comment)]
    Bench(bench::Args),

    /// What the XDP fast path costs: ns per packet under BPF_PROG_TEST_RUN, and relayed
    /// packets per CPU-second end to end against our userspace path and coturn (root).
    ///
    /// Builds the program, then runs two ignored tests in a release build:
    ///
    ///  1. relay/tests/xdp_testrun.rs `bench_ns_per_packet`: in a network namespace of its own,
    ///     one channel per family pair (client -> peer and peer -> client, XDP_TX and
    ///     XDP_REDIRECT) and two packets passed up, each run N times, one packet per run; prints
    ///     the kernel-measured median, p10, p90 and mean ns per run, and the amortised cost of a
    ///     passed packet repeated in one call.
    ///
    ///  2. relay/tests/xdp_bench.rs `bench_packets_per_cpu_second`: client ns -> relay ns -> peer
    ///     ns over veth pairs with threaded NAPI; a sender pinned to --sender-cpu (64 datagrams
    ///     per sendmsg with UDP_SEGMENT, or sendmmsg) sends ChannelData through a channel
    ///     (long-term credentials) for --secs at each --pps rate (0: flat out) to our relay with
    ///     XDP native, our relay in userspace, and coturn's turnserver in turn, each pinned with
    ///     its NAPI threads to --relay-cpu. Prints, per path: offered and delivered pps (the
    ///     peer veth's rx_packets), loss, CPU-seconds of the relay core (elapsed minus idle and
    ///     steal, /proc/stat: softirq and NAPI included) and of the relay's own tasks (scheduler
    ///     runtime of its threads and NAPI threads), and delivered packets per CPU-second with
    ///     the ratio to coturn.
    ///
    /// Needs turnserver (coturn), ethtool, taskset. The machine may be shared and noisy: the
    /// figures are printed, not asserted (each path must deliver, the XDP path in the kernel).
    #[command(verbatim_doc_comment)]
    BenchXdp(bench_xdp::Args),

    /// A relay under a churning load for --minutes, sampled: RSS, file descriptors, worker
    /// tasks, allocations and XDP map entries, and their slopes per hour (root).
    ///
    /// Runs the ignored test relay/tests/soak.rs `soak` (release build unless --debug): two
    /// network namespaces over a veth pair, the relay with XDP (skb mode) on its end and cut
    /// lifetimes (allocations 30 s), and, until the time is up, turnutils_uclient runs over UDP
    /// (channels and Send indications), TCP and TLS, and a client of the test's own that
    /// allocates, binds, relays, then deletes, refreshes and leaves, or leaves its allocation.
    /// Prints a line per sample, the slopes, and `RESULT soak {json}`; fails if, after the load
    /// and the lifetimes, the relay still holds allocations, permissions, channels,
    /// connections, map entries, tasks or file descriptors it did not hold when idle.
    ///
    /// Needs coturn's tools and bpftool (installed when missing).
    #[command(verbatim_doc_comment)]
    Soak(soak::Args),

    /// Write OCI image archives of the relay (with the XDP program embedded) and the operator
    /// for linux/amd64 and linux/arm64, without a container daemon.
    ///
    /// Installs what is missing (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, skopeo from
    /// Debian; the rustup targets; the eBPF toolchain), builds the XDP program, then per
    /// platform one static release build of both binaries (`+crt-static`) into
    /// <target>/<triple>/release, and writes into <target>/images/:
    ///
    ///   xdpturn-relay-amd64.tar     xdpturn-operator-amd64.tar     one platform each
    ///   xdpturn-relay-arm64.tar     xdpturn-operator-arm64.tar
    ///   xdpturn-relay.tar           xdpturn-operator.tar           both, under an image index
    ///
    /// named docker.io/xdpturn/xdpturn-{relay,operator}:<crate version> (the chart's and the
    /// operator's defaults). The same binaries and commit give the same digests. --check then
    /// repacks and compares, and reads and copies every archive with skopeo.
    #[command(verbatim_doc_comment)]
    Images(images::Args),

    /// Prove the relay on linux/arm64 under qemu-aarch64-static (Debian's qemu-user-static).
    ///
    /// Installs what is missing (as `images` does, plus qemu-user-static and coturn), builds
    /// the XDP program and the arm64 release binaries as `images` does, runs the relay's unit
    /// tests cross-built for aarch64 under qemu (cargo's runner), then starts the arm64 relay
    /// under qemu on ephemeral loopback ports and sends turnutils_uclient's channel traffic
    /// through it to turnutils_peer: every message must come back.
    #[command(verbatim_doc_comment)]
    TestArm64(arm64::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Crdgen(args) => crdgen::run(&args),
        Command::BuildEbpf(args) => ebpf::run(&args).map(|_| ExitCode::SUCCESS),
        Command::Envtest(args) => envtest::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::BenchXdp(args) => bench_xdp::run(&args),
        Command::Soak(args) => soak::run(&args),
        Command::Images(args) => images::run(&args),
        Command::TestArm64(args) => arm64::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
