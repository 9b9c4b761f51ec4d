//! Part 3 of `cargo xtask bench`: resident memory (VmRSS) per 10,000 allocations created and
//! held by the load generator.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use relay::stun::long_term_key_md5;

use super::loadgen::{LoadStats, hold, refresh0, runtime};
use super::process::tail;
use super::results::per;
use super::server::Running;
use super::{Env, PASSWORD, REALM, Server, Settings, USER};

#[derive(Debug)]
pub(super) struct MemoryResult {
    pub(super) before_kib: u64,
    pub(super) after_kib: u64,
    pub(super) stats: LoadStats,
    pub(super) seconds: f64,
}

impl MemoryResult {
    /// MiB of resident memory per 10,000 held allocations.
    pub(super) fn mib_per_10k(&self) -> Option<f64> {
        let delta = self.after_kib.saturating_sub(self.before_kib) as f64 / 1024.0;
        per(delta * 10_000.0, self.stats.ok as f64)
    }
}

pub(super) fn part_memory(env: &Env, s: &Settings, server: Server) -> Result<MemoryResult> {
    let dir = env.scratch.dir(&format!("memory-{server}"))?;
    let running = Running::start(env, server, &dir)?;
    let rt = runtime()?;
    let key = long_term_key_md5(USER, REALM, PASSWORD);
    let clients = s.alloc_clients;
    // Warm-up: one-time initialisation (first allocation, first nonce, thread-local buffers)
    // is not a per-allocation cost.
    let warm = (s.allocations / 20).clamp(1, 200);
    let (held, _) = rt.block_on(hold(running.addr, key, warm, clients));
    rt.block_on(async {
        for a in &held {
            let mut ignored = LoadStats::default();
            let _ = refresh0(a, &key, &mut ignored).await;
        }
    });
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let before_kib = running.rss_kib()?;
    let t0 = Instant::now();
    let (held, stats) = rt.block_on(hold(running.addr, key, s.allocations, clients));
    let seconds = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let after_kib = running.rss_kib()?;
    drop(held);
    if stats.ok == 0 {
        bail!(
            "no allocation succeeded ({}); last lines of the server log:\n{}",
            stats.failures(),
            tail(&running.log, 10)
        );
    }
    Ok(MemoryResult {
        before_kib,
        after_kib,
        stats,
        seconds,
    })
}
