//! Blocking clients (`X-WSGo-Block: SECONDS`).
//!
//! A response header asks the server to block the client that made the request: its later
//! requests to this process get an empty 429, each held back for the rest of the block (at most
//! 25 s, and at most 100 held at once; beyond that answered at once) so that a misbehaving
//! client slows down. The delay is a timer on the core thread: no worker, no Python. Only public
//! addresses are blocked, IPv6 by /64. Blocked requests are counted, not logged one by one; the
//! count is logged when the block ends.
//!
//! Under a supervisor a block applies in every process (`share`): the process that sets it tells
//! the others, and the supervisor writes the two log lines (`- blocking` when it is set,
//! `- unblocked ... after N` with every process's refusals once it has ended), so a block is
//! logged once, not once per process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::client::{ClientKey, is_public};
use crate::share::{Outbox, Shared};

/// Longest a blocked request is held before its 429.
pub const MAX_DELAY: Duration = Duration::from_secs(25);
/// Most blocked requests held at once.
pub const MAX_HELD: usize = 100;
/// Longest block: an `X-WSGo-Block` beyond it blocks for this long (the value is the app's, and
/// reaches time arithmetic).
pub const MAX_BLOCK: Duration = Duration::from_secs(30 * 24 * 3600);

struct Block {
    until: Instant,
    refused: u64,
}

/// The blocks of this process.
#[derive(Default)]
pub struct Blocks {
    map: Mutex<HashMap<ClientKey, Block>>,
    /// Entries in `map`: checked without the lock on every request.
    count: AtomicUsize,
    held: AtomicUsize,
    /// Blocks set (SIGUSR2).
    established: AtomicU64,
    /// Requests refused by a block (SIGUSR2).
    refused: AtomicU64,
    /// The other processes, told of blocks set and lifted here.
    share: Arc<Outbox>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Parses an `X-WSGo-Block` value: whole seconds.
pub fn parse_seconds(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// A held blocked request; releases its place when dropped.
pub struct Held<'a>(&'a Blocks);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, SeqCst);
    }
}

impl Blocks {
    /// Blocks that tell the other processes through `share`.
    pub fn sharing(share: Arc<Outbox>) -> Blocks {
        Blocks { share, ..Default::default() }
    }

    /// Blocks the client at `ip` for `secs` seconds (public addresses only), here and, through
    /// the supervisor, in the other processes. Returns whether a block was set.
    pub fn block(&self, ip: IpAddr, secs: i64, now: Instant) -> bool {
        if !is_public(ip) {
            return false;
        }
        let key = ClientKey::of(ip);
        if self.share.is_connected() {
            self.share.send(&Shared::Block { key, secs });
        } else {
            crate::log::info!("- blocking {key} for {secs} seconds");
        }
        self.established.fetch_add(1, Relaxed);
        self.apply(key, secs, now);
        true
    }

    /// Applies a block set by another process (already logged there).
    pub fn apply(&self, key: ClientKey, secs: i64, now: Instant) {
        let span = Duration::from_secs(secs.clamp(0, MAX_BLOCK.as_secs() as i64) as u64);
        let until = now.checked_add(span).unwrap_or(now);
        let mut map = lock(&self.map);
        let entry = map.entry(key).or_insert(Block { until, refused: 0 });
        entry.until = entry.until.max(until);
        self.count.store(map.len(), SeqCst);
    }

    /// A block ended here: logged, or told to the supervisor, which logs the total.
    fn lifted(&self, key: ClientKey, refused: u64) {
        if self.share.is_connected() {
            self.share.send(&Shared::Unblocked { key, refused });
        } else {
            crate::log::info!("- unblocked {key} after {refused} blocked requests");
        }
    }

    /// Whether the client at `ip` is blocked now; if so, how long its block still runs. An
    /// expired block is lifted here.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.count.load(SeqCst) == 0 {
            return None;
        }
        let key = ClientKey::of(ip);
        let mut map = lock(&self.map);
        let block = map.get_mut(&key)?;
        if block.until > now {
            block.refused += 1;
            self.refused.fetch_add(1, Relaxed);
            return Some(block.until - now);
        }
        let refused = block.refused;
        map.remove(&key);
        self.count.store(map.len(), SeqCst);
        self.lifted(key, refused);
        None
    }

    /// Lifts every expired block (run periodically).
    pub fn sweep(&self, now: Instant) {
        if self.count.load(SeqCst) == 0 {
            return;
        }
        let mut map = lock(&self.map);
        map.retain(|key, b| {
            let keep = b.until > now;
            if !keep {
                self.lifted(*key, b.refused);
            }
            keep
        });
        self.count.store(map.len(), SeqCst);
    }

    /// A place to hold a blocked request, if fewer than [`MAX_HELD`] are held.
    pub fn hold(&self) -> Option<Held<'_>> {
        if self.held.fetch_add(1, SeqCst) >= MAX_HELD {
            self.held.fetch_sub(1, SeqCst);
            return None;
        }
        Some(Held(self))
    }

    /// Blocks set, and requests refused by blocks, since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.established.load(Relaxed), self.refused.load(Relaxed))
    }

    /// Clients blocked now.
    pub fn len(&self) -> usize {
        self.count.load(SeqCst)
    }

    /// Whether no client is blocked now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_public_clients_by_key_until_expiry() {
        let b = Blocks::default();
        let t0 = Instant::now();
        let ip: IpAddr = "8.8.8.8".parse().unwrap();
        assert!(!b.block("10.1.2.3".parse().unwrap(), 30, t0), "private addresses are never blocked");
        assert!(!b.block("127.0.0.1".parse().unwrap(), 30, t0));
        assert!(b.check(ip, t0).is_none());
        assert!(b.block(ip, 3, t0));
        assert_eq!(b.check(ip, t0 + Duration::from_secs(1)), Some(Duration::from_secs(2)));
        assert!(b.check("8.8.4.4".parse().unwrap(), t0).is_none());
        // IPv6 by /64.
        assert!(b.block("2001:db8:1:2::1".parse().unwrap(), 10, t0));
        assert!(b.check("2001:db8:1:2::99".parse().unwrap(), t0).is_some());
        assert!(b.check("2001:db8:1:3::1".parse().unwrap(), t0).is_none());
        assert_eq!(b.len(), 2);
        assert!(b.check(ip, t0 + Duration::from_secs(4)).is_none(), "expired");
        assert_eq!(b.len(), 1);
        b.sweep(t0 + Duration::from_secs(11));
        assert!(b.is_empty());
        assert!(b.block(ip, -5, t0), "negative: already expired");
        assert!(b.check(ip, t0).is_none());
        // Any integer the app sends is clamped: no overflow, at most MAX_BLOCK.
        for secs in [i64::MAX, i64::MIN, 1 << 62] {
            let b = Blocks::default();
            assert!(b.block(ip, secs, t0));
            let left = b.check(ip, t0 + Duration::from_secs(1));
            assert!(left.is_none_or(|l| l <= MAX_BLOCK), "{secs}: {left:?}");
        }
    }

    #[test]
    fn shared_blocks_are_told_not_logged() {
        let share = Arc::new(Outbox::default());
        let told = Arc::new(Mutex::new(Vec::new()));
        let t = told.clone();
        share.connect(Box::new(move |m| {
            t.lock().unwrap().push(m.clone());
            true
        }));
        let b = Blocks::sharing(share);
        let t0 = Instant::now();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let key = ClientKey::of(ip);
        assert!(!b.block("10.0.0.1".parse().unwrap(), 5, t0));
        assert!(b.block(ip, 2, t0));
        // Another process's block applies here, silently.
        let other = ClientKey::of("198.51.100.1".parse().unwrap());
        b.apply(other, 1, t0);
        assert!(b.check("198.51.100.1".parse().unwrap(), t0).is_some());
        assert!(b.check(ip, t0 + Duration::from_secs(1)).is_some());
        b.sweep(t0 + Duration::from_secs(3));
        assert!(b.is_empty());
        let mut got = told.lock().unwrap().clone();
        got.sort_by_key(|m| format!("{m:?}"));
        assert_eq!(
            got,
            vec![
                Shared::Block { key, secs: 2 },
                Shared::Unblocked { key: other, refused: 1 },
                Shared::Unblocked { key, refused: 1 },
            ]
        );
        assert_eq!(b.counts(), (1, 2), "one block set here, two requests refused here");
    }

    #[test]
    fn at_most_100_held() {
        let b = Blocks::default();
        let held: Vec<_> = (0..MAX_HELD).map(|_| b.hold().unwrap()).collect();
        assert!(b.hold().is_none());
        drop(held);
        assert!(b.hold().is_some());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds(b" 30 "), Some(30));
        assert_eq!(parse_seconds(b"-1"), Some(-1));
        assert_eq!(parse_seconds(b"1.5"), None);
        assert_eq!(parse_seconds(b"x"), None);
    }
}
