//! The supervisor's side of what its processes share (`crate::share`): it relays each process's
//! messages to the others, keeps what a process starting later needs (the blocks in force, the
//! others' running counts), tells the others when a process is gone, and writes the block log
//! lines once for the whole server. With `--redis` it also passes notifications and blocks to
//! and from the other hosts (`fleet.rs`).
//!
//! Pure: messages in, messages out (each with whom to send it to); the supervisor's loop does
//! the sending.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::block::MAX_BLOCK;
use crate::client::ClientKey;
use crate::share::Shared;

/// How long after a block ends its unblock line waits for the processes' refusal counts (they
/// lift their copies within a second of the end: on the next request, or their sweep).
pub const UNBLOCK_GRACE: Duration = Duration::from_millis(1500);

/// Whom a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// Every process but this one (by pid).
    AllBut(u32),
    /// Every process.
    All,
    /// The other hosts (through Redis).
    Fleet,
}

struct Block {
    until: Instant,
    refused: u64,
}

/// What the supervisor keeps of the shared state.
#[derive(Default)]
pub struct Hub {
    blocks: HashMap<ClientKey, Block>,
    /// Each process's last running counts, for processes that join.
    running: HashMap<u32, Vec<(ClientKey, u32)>>,
    members: Vec<u32>,
}

fn until(now: Instant, secs: i64) -> Instant {
    let span = Duration::from_secs(secs.clamp(0, MAX_BLOCK.as_secs() as i64) as u64);
    now.checked_add(span).unwrap_or(now)
}

impl Hub {
    /// A message from process `from` (its pid: what the channel says, not what the message
    /// says). Appends what to send where.
    pub fn from_process(&mut self, from: u32, msg: Shared, now: Instant, out: &mut Vec<(To, Shared)>) {
        match msg {
            Shared::Notify { .. } => {
                out.push((To::AllBut(from), msg.clone()));
                out.push((To::Fleet, msg));
            }
            Shared::Block { key, secs } => {
                crate::log::info!("- blocking {key} for {secs} seconds");
                self.block(key, secs, now);
                out.push((To::AllBut(from), msg.clone()));
                out.push((To::Fleet, msg));
            }
            Shared::Unblocked { key, refused } => {
                // A block the hub no longer holds (a process lifting late): its count still
                // goes into a line.
                let b = self.blocks.entry(key).or_insert(Block { until: now, refused: 0 });
                b.refused += refused;
            }
            Shared::Counts { running, started, .. } => {
                if running.is_empty() {
                    self.running.remove(&from);
                } else {
                    self.running.insert(from, running.clone());
                }
                out.push((To::AllBut(from), Shared::Counts { from, running, started }));
            }
            // Only the hub says who is gone.
            Shared::Gone { .. } => {}
        }
    }

    /// A message from another host: notifications and blocks apply in every process here. A
    /// `standing` block, read from the stored ones when this host subscribed, is not logged
    /// again (it was when it was set; the fleet link logs how many it read).
    pub fn from_fleet(&mut self, msg: Shared, standing: bool, now: Instant, out: &mut Vec<(To, Shared)>) {
        match msg {
            Shared::Notify { .. } => out.push((To::All, msg)),
            Shared::Block { key, secs } => {
                if !standing {
                    crate::log::info!("- blocking {key} for {secs} seconds (set on another host)");
                }
                self.block(key, secs, now);
                out.push((To::All, msg));
            }
            // Counts stay on their host.
            _ => {}
        }
    }

    fn block(&mut self, key: ClientKey, secs: i64, now: Instant) {
        let until = until(now, secs);
        let b = self.blocks.entry(key).or_insert(Block { until, refused: 0 });
        b.until = b.until.max(until);
    }

    /// The processes now (pids): the others are told of one that is gone.
    pub fn members(&mut self, live: &[u32], out: &mut Vec<(To, Shared)>) {
        for &pid in self.members.iter().filter(|p| !live.contains(p)) {
            self.running.remove(&pid);
            out.push((To::All, Shared::Gone { from: pid }));
        }
        self.members = live.to_vec();
    }

    /// What a process starting now must know before it serves: the blocks in force (with the
    /// seconds left) and what the others run.
    pub fn catch_up(&self, now: Instant) -> Vec<Shared> {
        let blocks = self.blocks.iter().filter(|(_, b)| b.until > now).map(|(key, b)| {
            let secs = b.until.duration_since(now).as_secs_f64().ceil() as i64;
            Shared::Block { key: *key, secs }
        });
        let running = self.running.iter().map(|(from, running)| Shared::Counts {
            from: *from,
            running: running.clone(),
            started: vec![],
        });
        blocks.chain(running).collect()
    }

    /// Writes the unblock line of every block that ended (with every process's refusals).
    pub fn expire(&mut self, now: Instant) {
        self.blocks.retain(|key, b| {
            let keep = b.until + UNBLOCK_GRACE > now;
            if !keep {
                crate::log::info!("- unblocked {key} after {} blocked requests", b.refused);
            }
            keep
        });
    }

    /// Blocks held (ended ones until their line is written).
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::park::Action;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn messages_go_to_the_others_and_newcomers_catch_up() {
        let mut hub = Hub::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        hub.members(&[10, 20], &mut out);
        assert!(out.is_empty());
        assert!(hub.catch_up(t0).is_empty());
        let notify = Shared::Notify { channels: vec!["a".into()], action: Action::Retry, arg: "x".into() };
        hub.from_process(10, notify.clone(), t0, &mut out);
        assert_eq!(out, vec![(To::AllBut(10), notify.clone()), (To::Fleet, notify.clone())]);
        out.clear();
        let block = Shared::Block { key: key("203.0.113.7"), secs: 30 };
        hub.from_process(20, block.clone(), t0, &mut out);
        assert_eq!(out, vec![(To::AllBut(20), block.clone()), (To::Fleet, block)]);
        out.clear();
        // The channel's pid is believed, not the message's.
        let counts = Shared::Counts { from: 99, running: vec![(key("203.0.113.7"), 2)], started: vec![] };
        hub.from_process(10, counts, t0, &mut out);
        assert_eq!(
            out,
            vec![(
                To::AllBut(10),
                Shared::Counts { from: 10, running: vec![(key("203.0.113.7"), 2)], started: vec![] }
            )]
        );
        out.clear();
        let theirs = vec![(key("198.51.100.2"), 1)];
        hub.from_process(
            20,
            Shared::Counts { from: 20, running: theirs.clone(), started: vec![] },
            t0,
            &mut out,
        );
        out.clear();
        // Process 10 is gone: the others hear it, and its counts are forgotten. One starting 10 s
        // later is told the block's remaining 20 s and what 20 runs.
        hub.members(&[20], &mut out);
        assert_eq!(out, vec![(To::All, Shared::Gone { from: 10 })]);
        out.clear();
        hub.members(&[20, 30], &mut out);
        assert!(out.is_empty(), "a newcomer was told at its start, not again");
        assert_eq!(
            hub.catch_up(t0 + Duration::from_secs(10)),
            vec![
                Shared::Block { key: key("203.0.113.7"), secs: 20 },
                Shared::Counts { from: 20, running: theirs, started: vec![] },
            ]
        );
        // A block that ended is not handed on.
        assert_eq!(hub.catch_up(t0 + Duration::from_secs(31)).len(), 1);
        // From another host: every process here.
        let far = Shared::Notify { channels: vec!["b".into()], action: Action::Http204, arg: String::new() };
        hub.from_fleet(far.clone(), false, t0, &mut out);
        hub.from_fleet(Shared::Gone { from: 1 }, false, t0, &mut out);
        assert_eq!(out, vec![(To::All, far)]);
    }

    #[test]
    fn a_block_is_logged_once_with_every_process_refusals() {
        let mut hub = Hub::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let k = key("198.51.100.4");
        hub.from_process(1, Shared::Block { key: k, secs: 2 }, t0, &mut out);
        hub.from_process(1, Shared::Unblocked { key: k, refused: 3 }, t0 + Duration::from_secs(2), &mut out);
        hub.from_process(2, Shared::Unblocked { key: k, refused: 4 }, t0 + Duration::from_secs(3), &mut out);
        hub.expire(t0 + Duration::from_secs(3));
        assert_eq!(hub.blocks(), 1, "waits for the late counts");
        hub.expire(t0 + Duration::from_secs(4));
        assert_eq!(hub.blocks(), 0);
        // A block extended by a later one ends with the later one.
        hub.from_process(1, Shared::Block { key: k, secs: 10 }, t0, &mut out);
        hub.from_process(2, Shared::Block { key: k, secs: 1 }, t0, &mut out);
        hub.expire(t0 + Duration::from_secs(5));
        assert_eq!(hub.blocks(), 1);
    }
}
