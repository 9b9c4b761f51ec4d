//! What `cargo xtask bench` measured: the line printed per measurement and the closing table of
//! both servers side by side with the ratio ours/coturn and the project's goal for it.

use std::collections::BTreeMap;
use std::fmt;

use super::alloc::AllocResult;
use super::memory::MemoryResult;
use super::relay::RelayResult;
use super::{Part, Server, Settings};

pub(super) fn per(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| n / d)
}

#[derive(Debug)]
pub(super) enum Measured {
    Relay(RelayResult),
    Alloc(AllocResult),
    Memory(MemoryResult),
}

impl fmt::Display for Measured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measured::Relay(r) => write!(
                f,
                "sent {} received {} in {:.1} s; server CPU {:.2} s -> {} relayed messages per CPU-second; loss {:.3} %, average RTT {:.3} ms",
                r.sent,
                r.received,
                r.wall,
                r.cpu,
                fmt_opt(r.per_cpu_second(), 0),
                r.loss_pct,
                r.rtt_ms
            ),
            Measured::Alloc(a) => write!(
                f,
                "{} allocations in {:.1} s ({}/s), server CPU {:.2} s ({} per CPU-second), load generator CPU {:.2} s; {} retransmits, {} stale nonces; {}",
                a.stats.ok,
                a.wall,
                fmt_opt(a.per_second(), 0),
                a.cpu,
                fmt_opt(a.per_cpu_second(), 0),
                a.client_cpu,
                a.stats.retransmits,
                a.stats.stale_nonces,
                a.stats.failures()
            ),
            Measured::Memory(m) => write!(
                f,
                "{} allocations held (made in {:.1} s); VmRSS {} KiB -> {} KiB: {} MiB per 10,000; {}",
                m.stats.ok,
                m.seconds,
                m.before_kib,
                m.after_kib,
                fmt_opt(m.mib_per_10k(), 2),
                m.stats.failures()
            ),
        }
    }
}

type Outcome = std::result::Result<Measured, String>;

#[derive(Debug, Default)]
pub(super) struct Results(pub(super) BTreeMap<(Part, Server), Outcome>);

/// Which direction is better, and the goal ratio ours/coturn.
#[derive(Debug, Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Results {
    fn relay(&self, s: Server) -> Option<&RelayResult> {
        match self.0.get(&(Part::Relay, s)) {
            Some(Ok(Measured::Relay(r))) => Some(r),
            _ => None,
        }
    }

    fn alloc(&self, s: Server) -> Option<&AllocResult> {
        match self.0.get(&(Part::Alloc, s)) {
            Some(Ok(Measured::Alloc(r))) => Some(r),
            _ => None,
        }
    }

    fn memory(&self, s: Server) -> Option<&MemoryResult> {
        match self.0.get(&(Part::Memory, s)) {
            Some(Ok(Measured::Memory(r))) => Some(r),
            _ => None,
        }
    }

    pub(super) fn table(&self, s: &Settings) -> String {
        let mut t = Table::default();
        let both = |f: &dyn Fn(Server) -> Option<f64>| (f(Server::Ours), f(Server::Coturn));
        if s.parts.contains(&Part::Relay) {
            t.section(&format!(
                "relay: turnutils_uclient -m {} -n {} -l {} -z {}, channels",
                s.clients, s.messages, s.length, s.interval_ms
            ));
            t.row(
                "messages relayed (2 x received)",
                both(&|x| self.relay(x).map(|r| r.relayed() as f64)),
                0,
                None,
            );
            t.row(
                "server CPU seconds",
                both(&|x| self.relay(x).map(|r| r.cpu)),
                2,
                None,
            );
            t.row(
                "relayed messages per CPU-second",
                both(&|x| self.relay(x).and_then(RelayResult::per_cpu_second)),
                0,
                Some(Goal::AtLeast(2.0)),
            );
            t.row(
                "loss %",
                both(&|x| self.relay(x).map(|r| r.loss_pct)),
                3,
                None,
            );
            t.row(
                "average RTT ms (uclient)",
                both(&|x| self.relay(x).map(|r| r.rtt_ms)),
                3,
                None,
            );
        }
        if s.parts.contains(&Part::Alloc) {
            t.section(&format!(
                "alloc: {} clients in flight, {} s, 401 + Allocate + Refresh 0 each",
                s.alloc_clients, s.duration
            ));
            t.row(
                "allocations",
                both(&|x| self.alloc(x).map(|r| r.stats.ok as f64)),
                0,
                None,
            );
            t.row(
                "failed steps",
                both(&|x| self.alloc(x).map(|r| r.stats.failed_total() as f64)),
                0,
                None,
            );
            t.row(
                "allocations per second (wall)",
                both(&|x| self.alloc(x).and_then(AllocResult::per_second)),
                0,
                Some(Goal::AtLeast(2.0)),
            );
            t.row(
                "server CPU seconds",
                both(&|x| self.alloc(x).map(|r| r.cpu)),
                2,
                None,
            );
            t.row(
                "allocations per CPU-second",
                both(&|x| self.alloc(x).and_then(AllocResult::per_cpu_second)),
                0,
                Some(Goal::AtLeast(2.0)),
            );
            t.row(
                "latency p50 ms (401 + Allocate)",
                both(&|x| self.alloc(x).and_then(|r| r.p50_ms)),
                2,
                None,
            );
            t.row(
                "latency p99 ms",
                both(&|x| self.alloc(x).and_then(|r| r.p99_ms)),
                2,
                None,
            );
            t.row(
                "load generator CPU seconds",
                both(&|x| self.alloc(x).map(|r| r.client_cpu)),
                2,
                None,
            );
        }
        if s.parts.contains(&Part::Memory) {
            t.section(&format!("memory: {} allocations held", s.allocations));
            t.row(
                "allocations held",
                both(&|x| self.memory(x).map(|r| r.stats.ok as f64)),
                0,
                None,
            );
            t.row(
                "VmRSS before, MiB",
                both(&|x| self.memory(x).map(|r| r.before_kib as f64 / 1024.0)),
                1,
                None,
            );
            t.row(
                "VmRSS after, MiB",
                both(&|x| self.memory(x).map(|r| r.after_kib as f64 / 1024.0)),
                1,
                None,
            );
            t.row(
                "MiB per 10,000 allocations",
                both(&|x| self.memory(x).and_then(MemoryResult::mib_per_10k)),
                2,
                Some(Goal::AtMost(0.25)),
            );
        }
        let mut out = t.render();
        let failed: Vec<String> = self
            .0
            .iter()
            .filter_map(|((part, server), r)| {
                r.as_ref().err().map(|e| {
                    format!(
                        "  {part:?} / {server} FAILED: {}",
                        e.lines().next().unwrap_or("")
                    )
                })
            })
            .collect();
        if !failed.is_empty() {
            out.push_str(&failed.join("\n"));
            out.push('\n');
        }
        out
    }
}

#[derive(Debug, Default)]
struct Table {
    lines: Vec<Line>,
}

#[derive(Debug)]
enum Line {
    Section(String),
    Row {
        label: String,
        ours: String,
        coturn: String,
        ratio: String,
        goal: String,
    },
}

impl Table {
    fn section(&mut self, title: &str) {
        self.lines.push(Line::Section(title.to_owned()));
    }

    fn row(
        &mut self,
        label: &str,
        (ours, coturn): (Option<f64>, Option<f64>),
        decimals: usize,
        goal: Option<Goal>,
    ) {
        let ratio = match (ours, coturn) {
            (Some(o), Some(c)) if c > 0.0 => Some(o / c),
            _ => None,
        };
        let goal = match (goal, ratio) {
            (Some(Goal::AtLeast(g)), Some(r)) => {
                format!("{} (goal >= {g}x)", if r >= g { "met" } else { "NOT met" })
            }
            (Some(Goal::AtMost(g)), Some(r)) => {
                format!("{} (goal <= {g}x)", if r <= g { "met" } else { "NOT met" })
            }
            (Some(Goal::AtLeast(g)), None) => format!("(goal >= {g}x)"),
            (Some(Goal::AtMost(g)), None) => format!("(goal <= {g}x)"),
            (None, _) => String::new(),
        };
        self.lines.push(Line::Row {
            label: label.to_owned(),
            ours: fmt_opt(ours, decimals),
            coturn: fmt_opt(coturn, decimals),
            ratio: ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
            goal,
        });
    }

    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<34} {:>14} {:>14} {:>12}\n",
            "", "xdpturn", "coturn", "ours/coturn"
        ));
        for line in &self.lines {
            match line {
                Line::Section(title) => out.push_str(&format!("{title}\n")),
                Line::Row {
                    label,
                    ours,
                    coturn,
                    ratio,
                    goal,
                } => {
                    let row = format!("  {label:<32} {ours:>14} {coturn:>14} {ratio:>12}  {goal}");
                    out.push_str(row.trim_end());
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// A number with thousands separators (when it has no decimals), or "-".
fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    let Some(v) = v else {
        return "-".into();
    };
    if decimals > 0 {
        return format!("{v:.decimals$}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if v < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(fmt_opt(Some(1234567.4), 0), "1,234,567");
        assert_eq!(fmt_opt(Some(999.0), 0), "999");
        assert_eq!(fmt_opt(Some(1.234), 2), "1.23");
        assert_eq!(fmt_opt(None, 2), "-");
    }
}
