//! Request priorities (pure; see ARCHITECTURE.md, "Scheduling").
//!
//! Each queued request is scored every time a worker picks: 1000, minus 500 with a query string;
//! for a client on a public address also minus 8000 for a robot's User-Agent, minus 2000 for each
//! request of the same client running now, and minus 1000 for each recent request of that client,
//! that count decaying by one per second. A client is an IPv4 address or an IPv6 /64. Requests
//! scored at or below [`LOW`] run only when no other request is running.
//!
//! What that gives one public client: with four requests running, a fifth scores at most
//! 1000 - 8000 = -7000 and waits for all others to finish; with three running it starts once the
//! recent count has decayed below 2 (below 1.5 with a query string). So a burst from one client
//! gets three workers at a time, and a robot one worker, and only when the process is otherwise
//! idle. Loopback and private addresses (proxies, health checks, the office) are never penalised.

use std::collections::HashMap;
use std::time::Instant;

use super::Traits;
use crate::client::ClientKey;

/// At or below this score a request waits until nothing else runs.
pub const LOW: i64 = -7000;
/// The highest score there is: a request without a query string from a client with nothing
/// running and no recent requests. A queued request with it is picked before anything behind it.
pub const TOP: i64 = 1000;
/// Clients whose recent counts are remembered (the least recently seen are forgotten beyond).
pub const HISTORY_CAPACITY: usize = 16384;

/// The score of a request whose client has `running` requests running and a decayed recent
/// count of `recent`.
pub fn priority(t: &Traits, running: u32, recent: f64) -> i64 {
    let mut p = TOP;
    if t.client.is_some() {
        if t.robot {
            p -= 8000;
        }
        p -= 2000 * i64::from(running);
        p -= (1000.0 * recent) as i64;
    }
    if t.query {
        p -= 500;
    }
    p
}

/// A count per client.
pub type PerClient = Vec<(ClientKey, u32)>;

/// Per-client counts: requests running now, and recent requests decaying by one per second.
///
/// Shared between processes ([`History::share`]): each process reports what it runs and what it
/// started since its last report ([`History::report`]); the others add those in
/// ([`History::merge`]), so a client's counts are the server's, late by at most one report.
#[derive(Default)]
pub struct History {
    running: HashMap<ClientKey, u32>,
    recent: HashMap<ClientKey, (f64, Instant)>,
    /// Requests started here since the last report; `None`: not shared.
    started_since: Option<HashMap<ClientKey, u32>>,
    /// What each other process (by pid) last said it runs, and the sum of those.
    remote: HashMap<u32, Vec<(ClientKey, u32)>>,
    remote_running: HashMap<ClientKey, u32>,
}

impl History {
    /// The client's counts as of `now`.
    pub fn counts(&self, key: ClientKey, now: Instant) -> (u32, f64) {
        let running = self.running.get(&key).copied().unwrap_or(0)
            + if self.remote_running.is_empty() {
                0
            } else {
                self.remote_running.get(&key).copied().unwrap_or(0)
            };
        let recent = self.recent.get(&key).map_or(0.0, |&(n, at)| decayed(n, at, now));
        (running, recent)
    }

    /// A request of `key` starts running.
    pub fn started(&mut self, key: ClientKey, now: Instant) {
        *self.running.entry(key).or_default() += 1;
        if let Some(since) = self.started_since.as_mut()
            && (since.len() < crate::share::MAX_COUNTED || since.contains_key(&key))
        {
            *since.entry(key).or_default() += 1;
        }
        self.add_recent(key, 1.0, now);
    }

    /// From now on, keep what [`History::report`] tells the other processes.
    pub fn share(&mut self) {
        self.started_since.get_or_insert_with(HashMap::new);
    }

    /// What to tell the other processes: the requests running here per client, and those
    /// started since the last report (taken: each is reported once).
    pub fn report(&mut self) -> (PerClient, PerClient) {
        let mut running: Vec<_> = self.running.iter().map(|(k, n)| (*k, *n)).collect();
        running.sort_unstable_by_key(|&(k, _)| k_order(k));
        let started = self.started_since.as_mut().map(std::mem::take).unwrap_or_default();
        (running, started.into_iter().collect())
    }

    /// Adds in another process's report: what it runs replaces what it said before; what it
    /// started counts as recent here too.
    pub fn merge(
        &mut self,
        from: u32,
        running: Vec<(ClientKey, u32)>,
        started: &[(ClientKey, u32)],
        now: Instant,
    ) {
        if running.is_empty() {
            self.remote.remove(&from);
        } else {
            self.remote.insert(from, running);
        }
        self.remote_running.clear();
        for (key, n) in self.remote.values().flatten() {
            *self.remote_running.entry(*key).or_default() += n;
        }
        for &(key, n) in started {
            self.add_recent(key, f64::from(n), now);
        }
    }

    /// That process is gone: nothing of it runs any more.
    pub fn forget(&mut self, from: u32) {
        self.merge(from, Vec::new(), &[], Instant::now());
    }

    fn add_recent(&mut self, key: ClientKey, n: f64, now: Instant) {
        if self.recent.len() >= HISTORY_CAPACITY && !self.recent.contains_key(&key) {
            // Forget the clients whose count has decayed away; if none has, the oldest half.
            self.recent.retain(|_, &mut (count, at)| decayed(count, at, now) > 0.0);
            if self.recent.len() >= HISTORY_CAPACITY {
                let mut ages: Vec<Instant> = self.recent.values().map(|&(_, at)| at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                self.recent.retain(|_, &mut (_, at)| at > cut);
            }
        }
        let entry = self.recent.entry(key).or_insert((0.0, now));
        *entry = (decayed(entry.0, entry.1, now) + n, now);
    }

    /// A request of `key` finished.
    pub fn finished(&mut self, key: ClientKey) {
        if let Some(n) = self.running.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&key);
            }
        }
    }

    /// Requests running per ranked client (for SIGUSR2).
    pub fn running_by_client(&self) -> Vec<(ClientKey, u32)> {
        let mut v: Vec<_> = self.running.iter().map(|(k, n)| (*k, *n)).collect();
        v.sort_by_key(|(k, _)| format!("{k}"));
        v
    }
}

/// A stable order for reports (equal reports compare equal).
fn k_order(k: ClientKey) -> (u8, u64) {
    match k {
        ClientKey::V4(a) => (4, u64::from(a)),
        ClientKey::V6(p) => (6, p),
    }
}

fn decayed(n: f64, at: Instant, now: Instant) -> f64 {
    (n - now.saturating_duration_since(at).as_secs_f64()).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn scores() {
        let public = Some(ClientKey::V4(0x0808_0808));
        let t = |client, robot, query| Traits { client, robot, query };
        let table: &[(Traits, u32, f64, i64)] = &[
            (t(None, false, false), 0, 0.0, 1000),
            (t(None, false, true), 0, 0.0, 500),
            // Local clients are never penalised, whatever they run or send.
            (t(None, true, false), 5, 9.0, 1000),
            (t(public, false, false), 0, 0.0, 1000),
            (t(public, false, true), 0, 0.0, 500),
            (t(public, false, false), 1, 0.0, -1000),
            (t(public, false, false), 1, 1.0, -2000),
            (t(public, false, false), 3, 1.5, -6500),
            (t(public, false, false), 4, 0.0, -7000),
            (t(public, true, false), 0, 0.0, -7000),
            (t(public, true, true), 0, 0.0, -7500),
            (t(public, false, false), 0, 0.25, 750),
        ];
        for (traits, running, recent, want) in table {
            assert_eq!(priority(traits, *running, *recent), *want, "{traits:?} {running} {recent}");
        }
        // Nothing scores above TOP (a queued TOP job is picked before anything behind it).
        for client in [None, public] {
            for (robot, query) in [(false, false), (false, true), (true, false), (true, true)] {
                for running in 0..3 {
                    for recent in [0.0, 0.001, 2.0] {
                        assert!(priority(&t(client, robot, query), running, recent) <= TOP);
                    }
                }
            }
        }
    }

    #[test]
    fn recent_counts_decay_by_one_per_second() {
        let mut h = History::default();
        let k = ClientKey::V4(1);
        let t0 = Instant::now();
        h.started(k, t0);
        h.started(k, t0);
        assert_eq!(h.counts(k, t0), (2, 2.0));
        let (_, recent) = h.counts(k, t0 + Duration::from_millis(500));
        assert!((recent - 1.5).abs() < 1e-9);
        h.finished(k);
        h.finished(k);
        assert_eq!(h.counts(k, t0 + Duration::from_secs(5)), (0, 0.0));
        h.started(k, t0 + Duration::from_secs(5));
        assert_eq!(h.counts(k, t0 + Duration::from_secs(5)), (1, 1.0));
    }

    #[test]
    fn processes_add_in_each_others_counts() {
        let (mut a, mut b) = (History::default(), History::default());
        a.share();
        let (k, other) = (ClientKey::V4(7), ClientKey::V4(8));
        let t0 = Instant::now();
        a.started(k, t0);
        a.started(k, t0);
        a.started(other, t0);
        a.finished(other);
        let (running, started) = a.report();
        assert_eq!(running, vec![(k, 2)]);
        let mut sorted = started.clone();
        sorted.sort_unstable_by_key(|&(k, _)| k_order(k));
        assert_eq!(sorted, vec![(k, 2), (other, 1)]);
        b.merge(1, running, &started, t0);
        b.started(k, t0);
        assert_eq!(b.counts(k, t0), (3, 3.0), "two running in process 1, one here");
        assert_eq!(b.counts(other, t0), (0, 1.0));
        // Reported once: the next report has only what changed.
        a.finished(k);
        let (running, started) = a.report();
        assert_eq!((running.clone(), started.clone()), (vec![(k, 1)], vec![]));
        b.merge(1, running, &started, t0);
        assert_eq!(b.counts(k, t0).0, 2);
        // A third process adds its own; a process that is gone counts no more.
        b.merge(2, vec![(k, 4)], &[], t0);
        assert_eq!(b.counts(k, t0).0, 6);
        b.forget(1);
        assert_eq!(b.counts(k, t0).0, 5);
        b.forget(2);
        assert_eq!(b.counts(k, t0).0, 1);
        // Not shared: nothing is kept for a report.
        let mut c = History::default();
        c.started(k, t0);
        assert_eq!(c.report(), (vec![(k, 1)], vec![]));
    }

    #[test]
    fn history_stays_bounded() {
        let mut h = History::default();
        let t0 = Instant::now();
        for i in 0..(HISTORY_CAPACITY as u32 + 100) {
            let k = ClientKey::V4(i);
            h.started(k, t0 + Duration::from_micros(u64::from(i)));
            h.finished(k);
        }
        assert!(h.recent.len() <= HISTORY_CAPACITY);
        assert!(h.running.is_empty());
    }
}
