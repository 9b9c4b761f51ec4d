//! Part 2 of `cargo xtask bench`: authenticated allocations per second of wall time and per
//! server CPU-second, from the load generator's clients in flight.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use relay::stun::long_term_key_md5;

use super::loadgen::{LoadStats, churn, runtime};
use super::process::{cpu_seconds, tail};
use super::results::per;
use super::server::Running;
use super::{Env, PASSWORD, REALM, Server, Settings, USER};

#[derive(Debug)]
pub(super) struct AllocResult {
    pub(super) stats: LoadStats,
    pub(super) cpu: f64,
    pub(super) wall: f64,
    pub(super) client_cpu: f64,
    pub(super) p50_ms: Option<f64>,
    pub(super) p99_ms: Option<f64>,
}

impl AllocResult {
    pub(super) fn per_second(&self) -> Option<f64> {
        per(self.stats.ok as f64, self.wall)
    }

    pub(super) fn per_cpu_second(&self) -> Option<f64> {
        per(self.stats.ok as f64, self.cpu)
    }
}

pub(super) fn part_alloc(env: &Env, s: &Settings, server: Server) -> Result<AllocResult> {
    let dir = env.scratch.dir(&format!("alloc-{server}"))?;
    let running = Running::start(env, server, &dir)?;
    let rt = runtime()?;
    let key = long_term_key_md5(USER, REALM, PASSWORD);
    let duration = Duration::from_secs(s.duration);
    let me = cpu_seconds("self", env.clk_tck)?;
    let cpu0 = running.cpu()?;
    let t0 = Instant::now();
    let mut stats = rt.block_on(churn(running.addr, key, s.alloc_clients, duration));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = running.cpu()? - cpu0;
    let client_cpu = cpu_seconds("self", env.clk_tck)? - me;
    if stats.ok == 0 {
        bail!(
            "no allocation succeeded ({}); last lines of the server log:\n{}",
            stats.failures(),
            tail(&running.log, 10)
        );
    }
    Ok(AllocResult {
        p50_ms: stats.latency_ms(0.5),
        p99_ms: stats.latency_ms(0.99),
        stats,
        cpu,
        wall,
        client_cpu,
    })
}
