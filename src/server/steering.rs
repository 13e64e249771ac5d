//! `--incoming-cpu` under a supervisor, and its guard (README.md, "Connections served where they
//! come in").
//!
//! With `--incoming-cpu` each process's TCP sockets ask the kernel for the connections its CPUs
//! take in (`SO_INCOMING_CPU`). The kernel steers at SYN time without knowing the load, so when
//! the clients' packets come in on one CPU, every connection goes to that CPU's process while the
//! others idle. The guard: every process reports how busy its CPUs were over the last
//! [`BUSY_EVERY`] ([`Busy`]); the supervisor takes a process that is busy and far busier than the
//! others off steering ([`decide`]), and its sockets stop asking for a CPU ([`Steering`]). The
//! connections its CPUs take in are then spread by the hash of their addresses, over every
//! process, as without the flag; once the load evens out it steers again, after a hold that
//! doubles each time it has to be taken off again soon after ([`Guard`]): while the clients'
//! packets keep coming in on one CPU, steering again only piles the load back on it. The
//! keep-alive connections the process held when it was taken off end after their next response
//! (`Steering::sheds`), so that their clients' next connections are spread too.

use std::time::{Duration, Instant};

/// How often a process says how busy it was.
pub const BUSY_EVERY: Duration = Duration::from_millis(500);
/// A process whose CPUs are busier than this (permille of their time) may be taken off steering...
pub const BUSY: u16 = 500;
/// ...when it is busier than the others' mean by at least this much (permille).
pub const GAP: u16 = 300;
/// A process off steering steers again once it is within this much of the others' mean...
pub const EVEN: u16 = 100;
/// ...or no longer busier than this.
pub const CALM: u16 = 300;
/// The least time a process stays off steering...
pub const FIRST_HOLD: Duration = Duration::from_secs(1);
/// ...doubled, up to this, each time it is taken off again within [`SOON`] of steering again.
pub const MAX_HOLD: Duration = Duration::from_secs(32);
/// Taken off again within this long of steering again: the load it steers is still lopsided.
pub const SOON: Duration = Duration::from_secs(10);

/// One process's steering, as the supervisor decides it: what [`decide`] wants, held off for a
/// while once taken off.
#[derive(Debug, Clone)]
pub struct Guard {
    steers: bool,
    /// When it last changed.
    since: Option<Instant>,
    /// How long it stays off this time.
    hold: Duration,
}

impl Default for Guard {
    /// A process starts steering.
    fn default() -> Guard {
        Guard { steers: true, since: None, hold: FIRST_HOLD }
    }
}

impl Guard {
    /// Whether the process steers.
    pub fn steers(&self) -> bool {
        self.steers
    }

    /// How long it stays off at least, this time.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// [`decide`] wants `want` at `now`: the change to tell the process, if any.
    pub fn update(&mut self, want: bool, now: Instant) -> Option<bool> {
        let since = self.since.map(|t| now.saturating_duration_since(t));
        if want == self.steers {
            return None;
        }
        if self.steers {
            self.hold =
                if since.is_some_and(|s| s < SOON) { (self.hold * 2).min(MAX_HOLD) } else { FIRST_HOLD };
        } else if since.is_some_and(|s| s < self.hold) {
            return None;
        }
        self.steers = want;
        self.since = Some(now);
        Some(want)
    }
}

/// Which processes steer, given how busy each was (permille of its CPUs; `None` while it has not
/// said) and whether each steers now. A process steers unless it is busy and far busier than the
/// mean of the others; once off, it steers again when its load is within [`EVEN`] of theirs or
/// calm. A process with no figure, or without another's to compare, keeps what it does.
pub fn decide(busy: &[Option<u16>], steers: &[bool]) -> Vec<bool> {
    busy.iter()
        .zip(steers)
        .enumerate()
        .map(|(i, (&mine, &now))| {
            let (Some(mine), Some(mean)) = (mine.map(u32::from), others_mean(busy, i)) else { return now };
            if now {
                !(mine >= u32::from(BUSY) && mine >= mean + u32::from(GAP))
            } else {
                mine <= mean + u32::from(EVEN) || mine < u32::from(CALM)
            }
        })
        .collect()
}

/// The mean of the figures of the processes other than `i` that said one; `None` if none did.
pub fn others_mean(busy: &[Option<u16>], i: usize) -> Option<u32> {
    let others: Vec<u32> =
        busy.iter().enumerate().filter(|&(j, _)| j != i).filter_map(|(_, b)| b.map(u32::from)).collect();
    let n = u32::try_from(others.len()).ok().filter(|&n| n > 0)?;
    Some(others.iter().sum::<u32>() / n)
}

/// How busy a process's CPUs were between two looks, in permille: the time they ran anything
/// (this process, its neighbours, the kernel's handling of packets, the host's steal) over their
/// time, from /proc/stat. Not the process's own CPU time: what the clients' packets cost the CPU
/// that takes them in is charged to whatever runs there, and a CPU shared with a busy neighbour is
/// as full as one this process fills.
pub struct Busy {
    cpus: Vec<usize>,
    /// Busy and total clock ticks at the last look.
    last: Option<(u64, u64)>,
}

impl Busy {
    /// For a process that may run on `cpus`.
    pub fn new(cpus: Vec<usize>) -> Busy {
        Busy { cpus, last: None }
    }

    /// Given the text of /proc/stat now: how busy the CPUs were since the last look (`None` at
    /// the first look, with no tick between them, or a text without those CPUs).
    pub fn look(&mut self, stat: &str) -> Option<u16> {
        let now = ticks(stat, &self.cpus)?;
        let (b0, t0) = self.last.replace(now)?;
        let (busy, total) = (now.0.saturating_sub(b0), now.1.saturating_sub(t0));
        (total > 0).then(|| u16::try_from(busy.min(total) * 1000 / total).unwrap_or(1000))
    }
}

/// The busy and total clock ticks of `cpus` in a /proc/stat text (`cpuN user nice system idle
/// iowait irq softirq steal guest guest_nice`: idle and iowait are not busy; guest time is already
/// in user); `None` if a CPU is missing.
fn ticks(stat: &str, cpus: &[usize]) -> Option<(u64, u64)> {
    let mut out = (0u64, 0u64);
    for &cpu in cpus {
        let name = format!("cpu{cpu}");
        let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        let f: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|x| x.parse().unwrap_or(0)).collect();
        let total: u64 = f.iter().sum();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        out = (out.0 + total.saturating_sub(idle), out.1 + total);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_takes_off_a_busy_process_far_busier_than_the_others_and_gives_it_back_once_even() {
        let on = [true, true];
        let off_first = [false, true];
        // How busy each process is, whether each steers now, whether each steers next.
        type Row<'a> = (&'a [Option<u16>], &'a [bool], &'a [bool]);
        let table: &[Row] = &[
            // The imbalance steering makes: one process works, the other idles.
            (&[Some(900), Some(100)], &on, &[false, true]),
            (&[Some(100), Some(900)], &on, &[true, false]),
            (&[Some(500), Some(0)], &on, &[false, true]),
            // Busy but not far busier, or far busier but not busy: left to steer.
            (&[Some(900), Some(650)], &on, &on),
            (&[Some(1000), Some(1000)], &on, &on),
            (&[Some(490), Some(0)], &on, &on),
            (&[Some(0), Some(0)], &on, &on),
            // Off: stays off while the gap is above EVEN and it is not calm...
            (&[Some(700), Some(450)], &off_first, &off_first),
            (&[Some(350), Some(0)], &off_first, &off_first),
            // ...and steers again when within EVEN of the others, or calm.
            (&[Some(600), Some(500)], &off_first, &on),
            (&[Some(299), Some(0)], &off_first, &on),
            // A process that has not said, or no other to compare with: unchanged.
            (&[None, Some(900)], &off_first, &[false, true]),
            (&[Some(900), None], &on, &on),
            (&[Some(900)], &[true], &[true]),
            (&[None, None], &off_first, &off_first),
            // Three: the mean of the others counts.
            (&[Some(950), Some(600), Some(0)], &[true, true, true], &[false, true, true]),
            (&[Some(950), Some(700), Some(700)], &[true, true, true], &[true, true, true]),
        ];
        for (busy, steers, want) in table {
            assert_eq!(decide(busy, steers), *want, "busy {busy:?}, steering {steers:?}");
        }
    }

    #[test]
    fn a_guard_holds_a_process_off_longer_each_time_it_is_taken_off_again_soon() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = Guard::default();
        assert!(g.steers());
        // What decide wants, at what time, and the change told (None: nothing).
        let table: &[(bool, u64, Option<bool>, u64)] = &[
            (true, 0, None, 1000),
            (false, 500, Some(false), 1000),
            // Held off for the first second, whatever decide says.
            (true, 1000, None, 1000),
            (true, 1499, None, 1000),
            (true, 1500, Some(true), 1000),
            // Off again soon after: held twice as long.
            (false, 2000, Some(false), 2000),
            (true, 3999, None, 2000),
            (true, 4000, Some(true), 2000),
            (false, 4500, Some(false), 4000),
            (false, 9000, None, 4000),
            (true, 8500, Some(true), 4000),
            // Steered for longer than SOON: the next hold is the first one again.
            (false, 18_500, Some(false), 1000),
            (true, 19_500, Some(true), 1000),
        ];
        for &(want, ms, told, hold) in table {
            assert_eq!(g.update(want, at(ms)), told, "wants {want} at {ms} ms");
            assert_eq!(g.hold(), Duration::from_millis(hold), "at {ms} ms");
        }
        // Doubling stops at MAX_HOLD.
        let mut t = 30_000;
        for _ in 0..10 {
            g.update(false, at(t));
            t += g.hold().as_millis() as u64;
            g.update(true, at(t));
        }
        assert_eq!(g.hold(), MAX_HOLD);
    }

    #[test]
    fn busy_is_the_time_the_processes_cpus_ran_anything_over_their_time() {
        let stat = |cpu0: [u64; 8], cpu1: [u64; 8]| {
            let line = |n: usize, f: [u64; 8]| {
                format!("cpu{n} {} 0 0\n", f.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
            };
            format!("cpu  1 2 3 4 5 6 7 8 0 0\n{}{}intr 5 6\n", line(0, cpu0), line(1, cpu1))
        };
        let mut first = Busy::new(vec![0]);
        let mut both = Busy::new(vec![0, 1]);
        let mut missing = Busy::new(vec![2]);
        let t0 = stat([100, 0, 50, 800, 50, 0, 0, 0], [0, 0, 0, 1000, 0, 0, 0, 0]);
        assert_eq!(first.look(&t0), None);
        assert_eq!(both.look(&t0), None);
        assert_eq!(missing.look(&t0), None);
        // CPU 0: 60 user, 10 system, 10 softirq, 10 steal, 5 idle, 5 iowait: 90 of 100 busy.
        // CPU 1: idle.
        let t1 = stat([160, 0, 60, 805, 55, 0, 10, 10], [0, 0, 0, 1100, 0, 0, 0, 0]);
        assert_eq!(first.look(&t1), Some(900));
        assert_eq!(both.look(&t1), Some(450));
        assert_eq!(missing.look(&t1), None);
        // No tick between two looks.
        assert_eq!(first.look(&t1), None);
        // Counters that went back (a CPU taken offline and back): nothing negative.
        let t2 = stat([10, 0, 0, 1200, 0, 0, 0, 0], [0, 0, 0, 1200, 0, 0, 0, 0]);
        assert_eq!(first.look(&t2), Some(0));
        assert_eq!(Busy::new(vec![1]).look("cpu1 garbage"), None);
    }
}
