//! The jobs waiting for a worker, grouped by what their score depends on.
//!
//! A job's score depends only on its [`Traits`] (client, robot, query string) and on its client's
//! counts, so every job of one group scores the same at any moment, and within a group the
//! oldest comes first. The best job (highest score, the oldest among equals) is therefore the
//! first of some group: a pick scores each group once instead of each job. A flood of one client,
//! or any number of requests from the loopback and private addresses (two groups: with and without
//! a query string), costs a pick the same as one queued job did; before, a pick re-scored all of
//! them (1,000 queued: ~20 µs a pick, under the lock every worker takes).

use std::collections::{HashMap, VecDeque};

use super::{Job, Traits};

/// Emptied groups are kept (with their allocations) while there are at most this many groups:
/// the usual queue, a few local and public clients, then costs no allocation per job.
const KEEP: usize = 16;

/// The waiting jobs: groups of equal traits, each in arrival order.
#[derive(Default)]
pub struct Waiting {
    groups: Vec<Group>,
    /// Where each group is in `groups`.
    index: HashMap<Traits, usize>,
    len: usize,
    /// The arrival number of the next job.
    next: u64,
}

struct Group {
    traits: Traits,
    /// Arrival number and job, oldest first.
    jobs: VecDeque<(u64, Box<Job>)>,
}

/// A group's first job: which group, its score, its arrival number.
#[derive(Clone, Copy)]
pub struct Head {
    group: usize,
    /// Its score.
    pub score: i64,
    arrival: u64,
}

impl Waiting {
    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a job behind every job already waiting.
    pub fn push(&mut self, job: Box<Job>) {
        let at = match self.index.get(&job.traits) {
            Some(&i) => i,
            None => {
                self.groups.push(Group { traits: job.traits, jobs: VecDeque::new() });
                self.index.insert(job.traits, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.groups[at].jobs.push_back((self.next, job));
        self.next += 1;
        self.len += 1;
    }

    /// The oldest job.
    pub fn oldest(&self) -> Option<&Job> {
        self.groups
            .iter()
            .filter_map(|g| g.jobs.front())
            .min_by_key(|(arrival, _)| *arrival)
            .map(|(_, job)| &**job)
    }

    /// Takes the oldest job out.
    pub fn take_oldest(&mut self) -> Option<Box<Job>> {
        let group = (0..self.groups.len())
            .filter_map(|i| Some((i, self.groups[i].jobs.front()?.0)))
            .min_by_key(|&(_, arrival)| arrival)?
            .0;
        self.take_from(group)
    }

    /// The best job's place: the highest `score`, the oldest among equals.
    pub fn best(&self, score: impl Fn(&Traits) -> i64) -> Option<Head> {
        self.heads(score).max_by_key(|h| (h.score, std::cmp::Reverse(h.arrival)))
    }

    /// The worst job's place: the lowest `score`, the oldest among equals.
    pub fn worst(&self, score: impl Fn(&Traits) -> i64) -> Option<Head> {
        self.heads(score).min_by_key(|h| (h.score, h.arrival))
    }

    /// Takes out the job `head` names (from [`Waiting::best`] or [`Waiting::worst`], with no
    /// change in between).
    pub fn take(&mut self, head: Head) -> Option<Box<Job>> {
        self.take_from(head.group)
    }

    /// Keeps only the jobs `keep` says yes to; returns how many were taken out.
    pub fn retain(&mut self, keep: impl Fn(&Job) -> bool) -> usize {
        let before = self.len;
        for g in &mut self.groups {
            g.jobs.retain(|(_, job)| keep(job));
        }
        self.len = self.groups.iter().map(|g| g.jobs.len()).sum();
        let mut i = 0;
        while i < self.groups.len() && self.groups.len() > KEEP {
            if self.groups[i].jobs.is_empty() {
                self.remove_group(i);
            } else {
                i += 1;
            }
        }
        before - self.len
    }

    /// Every waiting job, in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.groups.iter().flat_map(|g| g.jobs.iter().map(|(_, job)| &**job))
    }

    fn heads(&self, score: impl Fn(&Traits) -> i64) -> impl Iterator<Item = Head> {
        self.groups.iter().enumerate().filter_map(move |(group, g)| {
            let (arrival, _) = g.jobs.front()?;
            Some(Head { group, score: score(&g.traits), arrival: *arrival })
        })
    }

    fn take_from(&mut self, group: usize) -> Option<Box<Job>> {
        let (_, job) = self.groups.get_mut(group)?.jobs.pop_front()?;
        self.len -= 1;
        if self.groups[group].jobs.is_empty() && self.groups.len() > KEEP {
            self.remove_group(group);
        }
        Some(job)
    }

    /// An empty group goes (the last takes its place): beyond [`KEEP`], the groups are the
    /// clients that wait.
    fn remove_group(&mut self, i: usize) {
        let gone = self.groups.swap_remove(i);
        self.index.remove(&gone.traits);
        if let Some(moved) = self.groups.get(i) {
            self.index.insert(moved.traits, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientKey;

    /// A job numbered `n` (its path) with these traits.
    fn job(n: u32, traits: Traits) -> Box<Job> {
        crate::handoff::test_job(&format!("/{n}"), traits)
    }

    fn number(j: &Job) -> u32 {
        std::str::from_utf8(&j.head.path().expect("path")[1..]).expect("text").parse().expect("number")
    }

    /// What the scheduler did before the groups: one list in arrival order, every job scored.
    #[derive(Default)]
    #[allow(clippy::vec_box)] // as the scheduler held them: boxed
    struct Flat(Vec<Box<Job>>);

    impl Flat {
        fn best(&mut self, score: &dyn Fn(&Traits) -> i64) -> Option<(u32, i64)> {
            let (i, s) = self
                .0
                .iter()
                .enumerate()
                .map(|(i, j)| (i, score(&j.traits)))
                .max_by_key(|&(i, s)| (s, std::cmp::Reverse(i)))?;
            Some((number(&self.0.remove(i)), s))
        }
        fn worst(&mut self, score: &dyn Fn(&Traits) -> i64) -> Option<(u32, i64)> {
            let (i, s) =
                self.0.iter().enumerate().map(|(i, j)| (i, score(&j.traits))).min_by_key(|&(i, s)| (s, i))?;
            Some((number(&self.0.remove(i)), s))
        }
    }

    /// A small random number generator (xorshift), seeded: the same run every time.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn picks_what_scoring_every_job_picks() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let (mut waiting, mut flat) = (Waiting::default(), Flat::default());
            // Up to 6 clients (one of them local), each job with or without a robot's agent and
            // a query string; scores that change between steps, as clients' counts do.
            let clients = 1 + rng.below(6);
            let mut next = 0;
            for step in 0..300 {
                let penalty: Vec<i64> = (0..clients).map(|_| 1000 * rng.below(4) as i64).collect();
                let score = |t: &Traits| {
                    let c = match t.client {
                        Some(ClientKey::V4(a)) => a as usize,
                        Some(ClientKey::V6(p)) => p as usize,
                        None => 0,
                    };
                    let mut s = crate::handoff::priority::TOP - penalty[c % penalty.len()];
                    s -= if t.query { 500 } else { 0 } + if t.robot { 8000 } else { 0 };
                    s
                };
                match rng.below(10) {
                    0..=4 => {
                        let c = rng.below(clients);
                        let traits = Traits {
                            client: (c > 0).then_some(ClientKey::V4(c as u32)),
                            robot: rng.below(4) == 0,
                            query: rng.below(2) == 0,
                        };
                        waiting.push(job(next, traits));
                        flat.0.push(job(next, traits));
                        next += 1;
                    }
                    5..=6 => {
                        let ours =
                            waiting.best(score).map(|h| (h.score, waiting.take(h).map(|j| number(&j))));
                        let theirs = flat.best(&score).map(|(n, s)| (s, Some(n)));
                        assert_eq!(ours, theirs, "best, round {round} step {step}");
                    }
                    7 => {
                        let ours =
                            waiting.worst(score).map(|h| (h.score, waiting.take(h).map(|j| number(&j))));
                        let theirs = flat.worst(&score).map(|(n, s)| (s, Some(n)));
                        assert_eq!(ours, theirs, "worst, round {round} step {step}");
                    }
                    8 => {
                        assert_eq!(waiting.oldest().map(number), flat.0.first().map(|j| number(j)));
                        let ours = waiting.take_oldest().map(|j| number(&j));
                        let theirs = (!flat.0.is_empty()).then(|| number(&flat.0.remove(0)));
                        assert_eq!(ours, theirs, "oldest, round {round} step {step}");
                    }
                    _ => {
                        let m = 2 + rng.below(5) as u32;
                        let dropped = waiting.retain(|j| !number(j).is_multiple_of(m));
                        let before = flat.0.len();
                        flat.0.retain(|j| !number(j).is_multiple_of(m));
                        assert_eq!(dropped, before - flat.0.len());
                    }
                }
                assert_eq!(waiting.len(), flat.0.len());
                assert_eq!(waiting.is_empty(), flat.0.is_empty());
                let mut all: Vec<u32> = waiting.iter().map(number).collect();
                all.sort_unstable();
                assert_eq!(all, flat.0.iter().map(|j| number(j)).collect::<Vec<_>>(), "the same jobs wait");
            }
        }
    }

    #[test]
    fn a_flood_is_one_group() {
        let mut waiting = Waiting::default();
        let flood = Traits { client: Some(ClientKey::V4(7)), robot: false, query: false };
        for n in 0..1000 {
            waiting.push(job(n, flood));
        }
        waiting.push(job(1000, Traits::local()));
        assert_eq!((waiting.len(), waiting.groups.len()), (1001, 2));
        // The flooding client scores low: the later local request is picked first, then the
        // flood in arrival order.
        let score = |t: &Traits| if t.client.is_some() { -7000 } else { 1000 };
        let order: Vec<u32> = std::iter::from_fn(|| waiting.best(score).and_then(|h| waiting.take(h)))
            .map(|j| number(&j))
            .collect();
        assert_eq!(order[..3], [1000, 0, 1]);
        assert_eq!(order.len(), 1001);
        assert!(order[1..].windows(2).all(|w| w[0] < w[1]));
        assert!(waiting.is_empty() && waiting.best(score).is_none() && waiting.oldest().is_none());
    }

    #[test]
    fn emptied_groups_are_kept_only_while_few() {
        let mut waiting = Waiting::default();
        let client = |c: u32| Traits { client: Some(ClientKey::V4(c)), robot: false, query: false };
        for c in 0..100 {
            waiting.push(job(c, client(c)));
        }
        while waiting.take_oldest().is_some() {}
        assert_eq!((waiting.groups.len(), waiting.index.len()), (KEEP, KEEP));
        // A kept group serves its client again; the index still finds every group.
        waiting.push(job(200, client(3)));
        waiting.push(job(201, client(300)));
        assert_eq!(waiting.len(), 2);
        for (t, &i) in &waiting.index {
            assert_eq!(waiting.groups[i].traits, *t);
        }
        assert_eq!(waiting.retain(|_| false), 2);
        assert!(waiting.groups.len() <= KEEP + 1 && waiting.is_empty());
    }
}
