//! The cache of user lookups in front of the database: positive and negative entries with
//! short lifetimes, bounded in number, one lookup at a time per user (later askers wait for
//! it), and a budget for lookups of names it holds no key for. Pure: time is passed in, and the
//! lookups it asks for are made by its caller (`userdb/mod.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long entries are trusted, how many are kept, how many lookups may start.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A user found: served for this long, then refreshed (while the old key keeps serving).
    pub positive_ttl: Duration,
    /// A user not found: refused for this long without asking again.
    pub negative_ttl: Duration,
    /// Entries kept at most (pending lookups included).
    pub capacity: usize,
    /// Lookups of names without a key that may start at once, and then per second (refreshes
    /// of users found are not counted).
    pub burst: u32,
    pub per_second: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            positive_ttl: Duration::from_secs(3),
            negative_ttl: Duration::from_secs(3),
            capacity: 65_536,
            burst: 100,
            per_second: 50.0,
        }
    }
}

/// What the cache says about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Known, with its key. `refresh`: it is old, look it up again (keep serving this one).
    Key { key: [u8; 16], refresh: bool },
    /// Known not to exist (recently).
    Absent,
    /// A lookup is under way.
    Pending,
    /// Nothing usable: look it up (the cache has marked it pending).
    Lookup,
    /// Nothing usable, and no lookup may start now (budget or capacity spent).
    Busy,
}

#[derive(Debug)]
struct Entry {
    /// The key read last (None: no such user, or never read).
    key: Option<[u8; 16]>,
    /// When `key` was read; None while the first lookup is under way.
    read_at: Option<Instant>,
    /// Set while a lookup is under way: receivers wait for `true`.
    pending: Option<watch::Sender<bool>>,
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    limits: Limits,
    entries: HashMap<String, Entry>,
    tokens: f64,
    refilled: Instant,
}

impl Cache {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            tokens: f64::from(limits.burst),
            refilled: now,
        }
    }

    /// What is known of `name`; may mark it pending (then the caller looks it up and calls
    /// [`Cache::finish`]).
    pub fn answer(&mut self, name: &str, now: Instant) -> Answer {
        if let Some(e) = self.entries.get(name) {
            match (e.key, e.read_at) {
                (Some(key), Some(at)) => {
                    let old = now.saturating_duration_since(at) >= self.limits.positive_ttl;
                    // Refreshes take no token: there are at most as many as users found,
                    // which a flood of made-up names cannot add to.
                    let refresh = old && e.pending.is_none();
                    if refresh && let Some(e) = self.entries.get_mut(name) {
                        e.pending = Some(watch::channel(false).0);
                    }
                    return Answer::Key { key, refresh };
                }
                (None, Some(at))
                    if now.saturating_duration_since(at) < self.limits.negative_ttl =>
                {
                    return Answer::Absent;
                }
                _ if e.pending.is_some() => return Answer::Pending,
                _ => {}
            }
        }
        if !self.make_room(name, now) || !self.take_token(now) {
            return Answer::Busy;
        }
        let (tx, _) = watch::channel(false);
        self.entries
            .entry(name.to_owned())
            .and_modify(|e| e.pending = Some(tx.clone()))
            .or_insert(Entry {
                key: None,
                read_at: None,
                pending: Some(tx),
            });
        Answer::Lookup
    }

    /// Something to wait on while `name`'s lookup is under way (None: it is not).
    pub fn waiter(&self, name: &str) -> Option<watch::Receiver<bool>> {
        self.entries
            .get(name)
            .and_then(|e| e.pending.as_ref())
            .map(watch::Sender::subscribe)
    }

    /// A lookup's result: `Ok(key)` (None: no such user) or `Err(())` when the database did
    /// not answer, which keeps a key already known (the relay serves with what it last read)
    /// and refuses an unknown user for the negative lifetime.
    pub fn finish(&mut self, name: &str, result: Result<Option<[u8; 16]>, ()>, now: Instant) {
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        // An error keeps the key read before (None stays None: refused for a while).
        if let Ok(key) = result {
            e.key = key;
        }
        e.read_at = Some(now);
        if let Some(tx) = e.pending.take() {
            tx.send_replace(true);
        }
    }

    /// Entries kept (pending lookups included).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.limits.per_second).min(f64::from(self.limits.burst));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Room for one more entry: when full, drop what carries least (negative, then old
    /// positive entries; never a pending lookup). False if there is still none.
    fn make_room(&mut self, name: &str, now: Instant) -> bool {
        if self.entries.len() < self.limits.capacity || self.entries.contains_key(name) {
            return true;
        }
        self.entries
            .retain(|_, e| e.pending.is_some() || e.key.is_some());
        if self.entries.len() >= self.limits.capacity {
            let ttl = self.limits.positive_ttl;
            self.entries.retain(|_, e| {
                e.pending.is_some()
                    || e.read_at
                        .is_some_and(|at| now.saturating_duration_since(at) < ttl)
            });
        }
        self.entries.len() < self.limits.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [7; 16];

    fn limits() -> Limits {
        Limits {
            positive_ttl: Duration::from_secs(3),
            negative_ttl: Duration::from_secs(2),
            capacity: 4,
            burst: 5,
            per_second: 1.0,
        }
    }

    #[test]
    fn one_lookup_per_user_then_answers_from_memory() {
        let t0 = Instant::now();
        let mut c = Cache::new(limits(), t0);
        assert_eq!(c.answer("alice", t0), Answer::Lookup);
        assert_eq!(c.answer("alice", t0), Answer::Pending, "no second lookup");
        let mut rx = c.waiter("alice").expect("pending");
        c.finish("alice", Ok(Some(KEY)), t0);
        assert!(*rx.borrow_and_update(), "the waiter is woken");
        assert!(c.waiter("alice").is_none());
        assert_eq!(
            c.answer("alice", t0 + Duration::from_secs(1)),
            Answer::Key {
                key: KEY,
                refresh: false
            }
        );
        // Old: still served, and one refresh asked for.
        let later = t0 + Duration::from_secs(4);
        assert_eq!(
            c.answer("alice", later),
            Answer::Key {
                key: KEY,
                refresh: true
            }
        );
        assert_eq!(
            c.answer("alice", later),
            Answer::Key {
                key: KEY,
                refresh: false
            }
        );
        // Deleted in the database: refused once the refresh says so.
        c.finish("alice", Ok(None), later);
        assert_eq!(c.answer("alice", later), Answer::Absent);
        // Added again: seen once the negative entry has aged.
        assert_eq!(
            c.answer("alice", later + Duration::from_secs(2)),
            Answer::Lookup
        );
    }

    #[test]
    fn a_database_error_keeps_what_was_read() {
        let t0 = Instant::now();
        let mut c = Cache::new(limits(), t0);
        assert_eq!(c.answer("alice", t0), Answer::Lookup);
        c.finish("alice", Ok(Some(KEY)), t0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            c.answer("alice", later),
            Answer::Key {
                key: KEY,
                refresh: true
            }
        );
        c.finish("alice", Err(()), later);
        assert_eq!(
            c.answer("alice", later + Duration::from_secs(1)),
            Answer::Key {
                key: KEY,
                refresh: false
            }
        );
        assert_eq!(c.answer("bob", later), Answer::Lookup);
        c.finish("bob", Err(()), later);
        assert_eq!(c.answer("bob", later), Answer::Absent);
    }

    #[test]
    fn random_names_spend_the_budget_and_the_room() {
        let t0 = Instant::now();
        let mut c = Cache::new(limits(), t0);
        let lookups = (0..1000)
            .filter(|i| c.answer(&format!("rnd{i}"), t0) == Answer::Lookup)
            .count();
        assert_eq!(lookups, 4, "capacity 4 (the budget would allow 5)");
        assert!(c.entries() <= 4);
        for i in 0..4 {
            c.finish(&format!("rnd{i}"), Ok(None), t0);
        }
        // Negative entries make room; the budget refills at 1/s.
        let t1 = t0 + Duration::from_secs(2);
        let lookups = (1000..2000)
            .filter(|i| c.answer(&format!("rnd{i}"), t1) == Answer::Lookup)
            .count();
        assert_eq!(lookups, 3, "one token left from the burst, two refilled");
    }
}
