//! Request parking (`X-WSGo-Park`; README.md, "Parking").
//!
//! An app answers with `X-WSGo-Park: channel1, channel2` (and optionally
//! `X-WSGo-Park-Timeout: SECONDS ACTION`): the worker is free at once and the connection waits on
//! its core thread, costing no thread, until `wsgo.notify_parked(channels, action, arg)` names one
//! of its channels, the timeout passes, or the client goes away. Then the action decides: `retry`
//! runs the request again with `X-WSGo-Park-Arg: arg`, `http-204` and `http-504` answer so,
//! `disconnect` closes the connection.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

/// What a woken parked request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Close the connection without a response.
    Disconnect,
    /// Run the request again, with the notification's argument.
    Retry,
    /// Answer `204 No Content`.
    Http204,
    /// Answer `504 Gateway Timeout`.
    Http504,
}

impl Action {
    /// The `wsgo` module's constants: 0, 1, 2, 3; anything else answers 504 (as the original).
    pub fn from_code(code: i64) -> Action {
        match code {
            0 => Action::Disconnect,
            1 => Action::Retry,
            2 => Action::Http204,
            _ => Action::Http504,
        }
    }

    fn from_name(name: &str) -> Option<Action> {
        Some(match name {
            "disconnect" => Action::Disconnect,
            "retry" => Action::Retry,
            "http-204" => Action::Http204,
            "http-504" => Action::Http504,
            _ => return None,
        })
    }
}

/// Longest park: a longer `X-WSGo-Park-Timeout` waits this long (the value reaches time
/// arithmetic).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The timeout when the app gives none, or an invalid one.
pub const DEFAULT_TIMEOUT: (Duration, Action) = (Duration::from_secs(7200), Action::Http204);

/// The channels of an `X-WSGo-Park` (or `notify_parked`) value: comma-separated, trimmed, empty
/// ones dropped.
pub fn channels(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()
}

/// An `X-WSGo-Park-Timeout` value: `SECONDS ACTION` with SECONDS > 0; otherwise the default.
pub fn timeout(value: Option<&str>) -> (Duration, Action) {
    let Some(value) = value else { return DEFAULT_TIMEOUT };
    let mut parts = value.split_whitespace();
    let (Some(secs), Some(action), None) = (parts.next(), parts.next(), parts.next()) else {
        return DEFAULT_TIMEOUT;
    };
    match (secs.parse::<u64>(), Action::from_name(&action.to_ascii_lowercase())) {
        (Ok(s), Some(a)) if s > 0 => (Duration::from_secs(s).min(MAX_TIMEOUT), a),
        // More digits than a u64 holds: as long as allowed.
        (Err(e), Some(a)) if *e.kind() == std::num::IntErrorKind::PosOverflow => (MAX_TIMEOUT, a),
        _ => DEFAULT_TIMEOUT,
    }
}

#[derive(Default)]
struct NoticeState {
    got: Option<(Action, String)>,
    waker: Option<Waker>,
}

/// Where a parked request receives its notification.
#[derive(Default)]
pub struct Notice {
    state: Mutex<NoticeState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Notice {
    fn deliver(&self, action: Action, arg: String) {
        let waker = {
            let mut s = lock(&self.state);
            if s.got.is_some() {
                return;
            }
            s.got = Some((action, arg));
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits for the notification.
    pub async fn wait(&self) -> (Action, String) {
        poll_fn(|cx| {
            let mut s = lock(&self.state);
            match s.got.take() {
                Some(got) => Poll::Ready(got),
                None => {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    by_channel: HashMap<String, Vec<u64>>,
    parked: HashMap<u64, (Vec<String>, Arc<Notice>)>,
}

/// The parked requests of this process.
#[derive(Default)]
pub struct Parking {
    inner: Mutex<Inner>,
    count: AtomicUsize,
}

impl Parking {
    /// Parks a request on `channels`; returns its id and where its notification arrives.
    pub fn park(&self, channels: Vec<String>) -> (u64, Arc<Notice>) {
        let notice = Arc::new(Notice::default());
        let mut inner = lock(&self.inner);
        inner.next += 1;
        let id = inner.next;
        for c in &channels {
            inner.by_channel.entry(c.clone()).or_default().push(id);
        }
        inner.parked.insert(id, (channels, notice.clone()));
        self.count.store(inner.parked.len(), SeqCst);
        (id, notice)
    }

    /// Takes a request off its channels (woken, timed out, or its client left).
    pub fn leave(&self, id: u64) {
        let mut inner = lock(&self.inner);
        Self::remove(&mut inner, id);
        self.count.store(inner.parked.len(), SeqCst);
    }

    fn remove(inner: &mut Inner, id: u64) -> Option<Arc<Notice>> {
        let (channels, notice) = inner.parked.remove(&id)?;
        for c in channels {
            if let Some(ids) = inner.by_channel.get_mut(&c) {
                ids.retain(|&i| i != id);
                if ids.is_empty() {
                    inner.by_channel.remove(&c);
                }
            }
        }
        Some(notice)
    }

    /// Wakes every request parked on any of `channels` (each once); returns how many.
    pub fn notify(&self, channels: &[String], action: Action, arg: &str) -> usize {
        let woken: Vec<Arc<Notice>> = {
            let mut inner = lock(&self.inner);
            let mut ids: Vec<u64> =
                channels.iter().filter_map(|c| inner.by_channel.get(c)).flatten().copied().collect();
            ids.sort_unstable();
            ids.dedup();
            let woken = ids.into_iter().filter_map(|id| Self::remove(&mut inner, id)).collect();
            self.count.store(inner.parked.len(), SeqCst);
            woken
        };
        for n in &woken {
            n.deliver(action, arg.to_string());
        }
        woken.len()
    }

    /// Parked requests now.
    pub fn len(&self) -> usize {
        self.count.load(SeqCst)
    }

    /// Whether no request is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        assert_eq!(channels(" a, b ,,c "), vec!["a", "b", "c"]);
        assert!(channels(" , ").is_empty());
        let table: &[(Option<&str>, (u64, Action))] = &[
            (None, (7200, Action::Http204)),
            (Some("6 http-504"), (6, Action::Http504)),
            (Some("1 retry"), (1, Action::Retry)),
            (Some("2 disconnect"), (2, Action::Disconnect)),
            (Some("3 HTTP-204"), (3, Action::Http204)),
            (Some("0 retry"), (7200, Action::Http204)),
            (Some("-1 retry"), (7200, Action::Http204)),
            (Some("5"), (7200, Action::Http204)),
            (Some("5 explode"), (7200, Action::Http204)),
            (Some("5 retry extra"), (7200, Action::Http204)),
            (Some("18446744073709551615 retry"), (MAX_TIMEOUT.as_secs(), Action::Retry)),
            (Some("99999999999999999999999 http-504"), (MAX_TIMEOUT.as_secs(), Action::Http504)),
        ];
        for (value, (secs, action)) in table {
            assert_eq!(timeout(*value), (Duration::from_secs(*secs), *action), "{value:?}");
        }
        assert_eq!(
            [0, 1, 2, 3, 9, -1].map(Action::from_code),
            [
                Action::Disconnect,
                Action::Retry,
                Action::Http204,
                Action::Http504,
                Action::Http504,
                Action::Http504
            ]
        );
    }

    #[test]
    fn notify_wakes_each_matching_request_once() {
        let p = Parking::default();
        let (a, na) = p.park(channels("x, y"));
        let (_b, nb) = p.park(channels("y"));
        let (_c, nc) = p.park(channels("z"));
        assert_eq!(p.len(), 3);
        assert_eq!(p.notify(&channels("555"), Action::Http504, ""), 0);
        assert_eq!(p.notify(&channels("z, y"), Action::Retry, "hello"), 3);
        assert!(p.is_empty());
        for n in [&na, &nb, &nc] {
            assert_eq!(lock(&n.state).got, Some((Action::Retry, "hello".to_string())));
        }
        p.leave(a); // already gone: no effect
        let (d, _nd) = p.park(channels("m"));
        p.leave(d);
        assert_eq!(p.notify(&channels("m"), Action::Http204, ""), 0);
        assert!(lock(&p.inner).by_channel.is_empty());
    }
}
