//! What the kernel reports about the loaded program: its statistics, and what one
//! BPF_PROG_TEST_RUN returned.

use std::time::Duration;

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The XDP verdict (`XDP_PASS` = 2, `XDP_TX` = 3, `XDP_REDIRECT` = 4, `XDP_DROP` = 1).
    pub verdict: u32,
    /// The packet as the program left it.
    pub output: Vec<u8>,
    /// Average time per run, as the kernel measured it.
    pub duration: Duration,
}

/// What the kernel says about the loaded program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramStats {
    /// Instructions the verifier processed (kernel 5.16+).
    pub verified_instructions: Option<u32>,
    /// Size of the program after the verifier's rewrites, in bytes.
    pub translated_bytes: Option<u32>,
    /// Size of the machine code the JIT made of it, in bytes (0 without a JIT).
    pub jited_bytes: u32,
    /// Time spent in the program and runs of it, counted by the kernel only while BPF run-time
    /// statistics are on (`kernel.bpf_stats_enabled`, or a `BPF_ENABLE_STATS` fd held open):
    /// the program's own cost per packet, without anything around it.
    pub run_time: Duration,
    pub run_count: u64,
}
