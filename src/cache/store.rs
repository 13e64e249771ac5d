//! The response store shared by the core threads of a process.
//!
//! Lookups take one shard's read lock (64 shards by key hash), so cores hitting the cache at
//! the same time do not queue behind each other; a hit leaves with an `Arc` of the entry and
//! writes it with no lock held. Inserts (at most one per app call) go through one mutex that
//! keeps the insertion order for eviction: when the total passes `--cache-size`, the oldest
//! entries go first. Sizes are accounted exactly: an entry counts its key, head lines, body and
//! 1000 bytes of bookkeeping from insertion until its removal.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What an entry costs beyond its bytes, as the original counted.
pub const OVERHEAD: usize = 1000;
const SHARDS: usize = 64;
/// Most variants (different `Vary` selections) kept under one key: a lookup compares the
/// request with each, on a core thread. A new one beyond this replaces the oldest.
pub const MAX_VARIANTS: usize = 16;

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    /// The status sent.
    pub status: u16,
    /// Empty: the standard reason phrase.
    pub reason: Vec<u8>,
    /// The app's header lines (`Name: value\r\n`), without framing fields and internal ones.
    pub lines: Vec<u8>,
    /// The app set its own `Date`.
    pub has_date: bool,
    /// The whole body.
    pub body: Bytes,
    /// The request values this response was chosen by: `(lower-case name, selection)`.
    pub vary: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The `X-WSGo-Vary-Cookies` list narrowing `Vary: Cookie`.
    pub cookies: Option<Vec<Vec<u8>>>,
    /// When it was stored (the `Age` counts from here).
    pub stored: Instant,
    /// When it stops being served.
    pub expires: Instant,
    size: usize,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    /// An entry kept for `lifetime`, its size accounted from its parts.
    pub fn new(
        status: u16,
        reason: Vec<u8>,
        lines: Vec<u8>,
        has_date: bool,
        body: Bytes,
        vary: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        cookies: Option<Vec<Vec<u8>>>,
        lifetime: Duration,
    ) -> Entry {
        let stored = Instant::now();
        let extra: usize = vary.iter().map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len)).sum();
        let size = OVERHEAD + reason.len() + lines.len() + body.len() + extra;
        Entry {
            status,
            reason,
            lines,
            has_date,
            body,
            vary,
            cookies,
            stored,
            expires: stored + lifetime,
            size,
        }
    }

    /// Seconds since the entry was stored (the `Age` header).
    pub fn age(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.stored).as_secs()
    }

    fn same_variant(&self, other: &Entry) -> bool {
        self.vary == other.vary && self.cookies == other.cookies
    }
}

struct Shard<S> {
    map: HashMap<Vec<u8>, Vec<Arc<Entry>>, S>,
}

struct Record {
    shard: usize,
    key: Vec<u8>,
    entry: Weak<Entry>,
}

/// The process's response cache. `S` hashes keys (randomly seeded by default, against
/// collision floods; fixed in the instruction-count check, which must repeat exactly).
pub struct Store<S = RandomState> {
    shards: Box<[RwLock<Shard<S>>]>,
    order: Mutex<VecDeque<Record>>,
    hasher: S,
    total: AtomicUsize,
    entries: AtomicUsize,
    limit: usize,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the map itself is consistent between operations.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// A store holding at most `limit` accounted bytes.
    pub fn new(limit: usize) -> Store {
        Store::with_hasher(limit, RandomState::new())
    }
}

impl<S: BuildHasher + Clone> Store<S> {
    /// A store hashing keys with `hasher`.
    pub fn with_hasher(limit: usize, hasher: S) -> Store<S> {
        Store {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(Shard { map: HashMap::with_hasher(hasher.clone()) }))
                .collect(),
            order: Mutex::new(VecDeque::new()),
            hasher,
            total: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            limit,
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// The fresh entry under `key` whose recorded selections equal the request's. `select`
    /// gives the request's selection for a field name (and cookie list).
    pub fn lookup(
        &self,
        key: &[u8],
        now: Instant,
        select: impl Fn(&[u8], Option<&[Vec<u8>]>) -> super::key::Selection,
    ) -> Option<Arc<Entry>> {
        let shard = self.shard_of(key);
        let mut stale = false;
        let found = {
            let s = read(&self.shards[shard]);
            let entries = s.map.get(key)?;
            let mut found = None;
            for e in entries {
                if e.expires <= now {
                    stale = true;
                    continue;
                }
                if e.vary.iter().all(|(name, want)| select(name, e.cookies.as_deref()).matches(want)) {
                    found = Some(e.clone());
                    break;
                }
            }
            found
        };
        if stale {
            self.remove_expired(shard, key, now);
        }
        found
    }

    fn remove_expired(&self, shard: usize, key: &[u8], now: Instant) {
        let mut s = write(&self.shards[shard]);
        let Some(list) = s.map.get_mut(key) else { return };
        let mut freed = 0;
        let mut removed = 0;
        list.retain(|e| {
            let keep = e.expires > now;
            if !keep {
                freed += e.size;
                removed += 1;
            }
            keep
        });
        if list.is_empty() {
            s.map.remove(key);
        }
        self.total.fetch_sub(freed, Relaxed);
        self.entries.fetch_sub(removed, Relaxed);
    }

    /// Stores `entry` under `key`, replacing the entry for the same selections, and evicts the
    /// oldest entries while the total is over the limit. Returns whether it was stored.
    pub fn insert(&self, key: Vec<u8>, entry: Entry) -> bool {
        let size = entry.size + key.len();
        if size > self.limit {
            return false;
        }
        let entry = Arc::new(Entry { size, ..entry });
        let shard = self.shard_of(&key);
        let mut order = lock(&self.order);
        {
            let mut s = write(&self.shards[shard]);
            let now = Instant::now();
            let list = s.map.entry(key.clone()).or_default();
            let mut freed = 0;
            let mut removed = 0;
            list.retain(|e| {
                let keep = e.expires > now && !e.same_variant(&entry);
                if !keep {
                    freed += e.size;
                    removed += 1;
                }
                keep
            });
            while list.len() >= MAX_VARIANTS {
                let oldest = list.remove(0);
                freed += oldest.size;
                removed += 1;
            }
            list.push(entry.clone());
            self.total.fetch_sub(freed, Relaxed);
            self.entries.fetch_sub(removed, Relaxed);
        }
        self.total.fetch_add(size, Relaxed);
        self.entries.fetch_add(1, Relaxed);
        order.push_back(Record { shard, key, entry: Arc::downgrade(&entry) });
        drop(entry);
        while self.total.load(Relaxed) > self.limit {
            let Some(oldest) = order.pop_front() else { break };
            self.remove(&oldest);
        }
        // Records of entries already gone (replaced, expired) are dropped once they outnumber
        // the live ones, so the order queue stays proportional to the store.
        if order.len() > 2 * self.entries.load(Relaxed) + 64 {
            order.retain(|r| r.entry.strong_count() > 0);
        }
        true
    }

    fn remove(&self, r: &Record) {
        let mut s = write(&self.shards[r.shard]);
        let Some(list) = s.map.get_mut(&r.key) else { return };
        let before = list.len();
        let mut freed = 0;
        list.retain(|e| {
            let same = std::ptr::eq(Arc::as_ptr(e), r.entry.as_ptr());
            if same {
                freed += e.size;
            }
            !same
        });
        let removed = before - list.len();
        if list.is_empty() {
            s.map.remove(&r.key);
        }
        self.total.fetch_sub(freed, Relaxed);
        self.entries.fetch_sub(removed, Relaxed);
    }

    /// Accounted bytes now stored.
    pub fn size(&self) -> usize {
        self.total.load(Relaxed)
    }

    /// Entries now stored.
    pub fn len(&self) -> usize {
        self.entries.load(Relaxed)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of the sizes of the entries actually in the maps (for tests of the accounting).
    pub fn recount(&self) -> (usize, usize) {
        let mut bytes = 0;
        let mut n = 0;
        for s in self.shards.iter() {
            for list in read(s).map.values() {
                for e in list {
                    bytes += e.size;
                    n += 1;
                }
            }
        }
        (bytes, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::Selection;

    fn sel(v: Option<&str>) -> Selection {
        v.map_or(Selection::Absent, |v| Selection::Value(v.as_bytes().to_vec()))
    }

    fn entry(body: &str, vary: &[(&str, Option<&str>)], secs: u64) -> Entry {
        let vary =
            vary.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()))).collect();
        Entry::new(
            200,
            vec![],
            b"A: b\r\n".to_vec(),
            false,
            Bytes::from(body.to_string()),
            vary,
            None,
            Duration::from_secs(secs),
        )
    }

    #[test]
    fn lookup_by_key_and_selection() {
        let store = Store::new(1 << 20);
        assert!(store.insert(b"k".to_vec(), entry("fr", &[("accept-language", Some("fr"))], 60)));
        assert!(store.insert(b"k".to_vec(), entry("none", &[("accept-language", None)], 60)));
        let now = Instant::now();
        let get = |lang: Option<&'static str>| {
            store.lookup(b"k", now, |_, _| sel(lang)).map(|e| String::from_utf8(e.body.to_vec()).unwrap())
        };
        assert_eq!(get(Some("fr")).as_deref(), Some("fr"));
        assert_eq!(get(None).as_deref(), Some("none"));
        assert_eq!(get(Some("de")), None);
        assert!(store.lookup(b"other", now, |_, _| Selection::Absent).is_none());
        // The same selection replaces.
        assert!(store.insert(b"k".to_vec(), entry("fr2", &[("accept-language", Some("fr"))], 60)));
        assert_eq!(get(Some("fr")).as_deref(), Some("fr2"));
        assert_eq!(store.len(), 2);
        assert_eq!(store.recount(), (store.size(), store.len()));
    }

    #[test]
    fn expired_entries_are_not_served_and_are_freed() {
        let store = Store::new(1 << 20);
        store.insert(b"k".to_vec(), entry("x", &[], 1));
        assert!(store.lookup(b"k", Instant::now(), |_, _| Selection::Absent).is_some());
        assert!(
            store.lookup(b"k", Instant::now() + Duration::from_secs(2), |_, _| Selection::Absent).is_none()
        );
        assert_eq!((store.size(), store.len()), (0, 0));
        assert_eq!(store.recount(), (0, 0));
    }

    #[test]
    fn eviction_keeps_the_accounting_exact_and_the_limit() {
        let limit = 20_000;
        let store = Store::new(limit);
        for i in 0..200 {
            let body = "x".repeat(i * 37 % 3000);
            let key = format!("k{}", i % 23).into_bytes();
            store.insert(key, entry(&body, &[("x", Some(&format!("{}", i % 3)))], 60));
            assert!(store.size() <= limit, "{} > {limit}", store.size());
            assert_eq!(store.recount(), (store.size(), store.len()), "after {i}");
        }
        // The newest entry survives; the oldest went first.
        assert!(store.lookup(b"k15", Instant::now(), |_, _| sel(Some("1"))).is_some());
        // An entry bigger than the whole cache is refused.
        assert!(!store.insert(b"big".to_vec(), entry(&"x".repeat(limit), &[], 60)));
        assert_eq!(store.recount(), (store.size(), store.len()));
    }

    #[test]
    fn variants_per_key_are_bounded() {
        let store = Store::new(1 << 30);
        for i in 0..1000 {
            let v = i.to_string();
            assert!(store.insert(b"k".to_vec(), entry(&v, &[("cookie", Some(&v))], 60)));
        }
        assert_eq!(store.len(), MAX_VARIANTS);
        assert_eq!(store.recount(), (store.size(), MAX_VARIANTS));
        // The newest are kept.
        let hit = store.lookup(b"k", Instant::now(), |_, _| sel(Some("999")));
        assert_eq!(hit.map(|e| e.body.clone()), Some(Bytes::from_static(b"999")));
        assert!(store.lookup(b"k", Instant::now(), |_, _| sel(Some("0"))).is_none());
        assert!(store.lookup(b"k", Instant::now(), |_, _| Selection::Ambiguous).is_none());
    }
}
