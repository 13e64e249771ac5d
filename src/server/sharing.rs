//! A server process's side of what the supervisor's processes share (`crate::share`): its
//! outbox goes to the control channel, and one thread reads what the others said and reports
//! this process's client counts.
//!
//! The thread starts before the app loads: the supervisor's first messages are what is in
//! force (blocks, the others' counts), then `caught-up`, and the process takes no connection
//! before the thread has applied them ([`CaughtUp::wait`]); what is said while the app loads is
//! applied as it comes, not left to fill the channel.
//!
//! The thread sleeps until the channel has something or the counts changed: a notification or a
//! block from another process is applied as soon as it arrives (the parked requests are woken,
//! the block goes into this process's table); a change of the counts is reported at once if the
//! last report is [`REPORT_EVERY`] old, else when it is (so at most one report per period,
//! and none while no ranked client comes: loopback and private addresses never count). The core
//! threads never see any of it.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use super::control::{Channel, MAX_MESSAGE, Message};
use crate::block::Blocks;
use crate::handoff::scheduler::Scheduler;
use crate::park::Parking;
use crate::share::{Outbox, Shared};

/// The least time between two reports of the client counts: the most a process's view of
/// another's counts lags.
pub const REPORT_EVERY: Duration = Duration::from_millis(20);

/// Sends this process's messages to the supervisor.
pub fn connect(outbox: &Outbox, control: Arc<Channel>) {
    outbox.connect(Box::new(move |m: &Shared| control.send(&Message::Share(m.clone()))));
}

/// What the other processes' messages change here.
pub struct Here {
    /// Parked requests, woken by notifications.
    pub parking: Arc<Parking>,
    /// This process's blocks.
    pub blocks: Arc<Blocks>,
    /// Where this process's counts go.
    pub share: Arc<Outbox>,
    /// The priority rules' counts.
    pub queue: Arc<Scheduler>,
    /// `--incoming-cpu`: this process's sockets, steered or not as the supervisor says.
    pub steering: Arc<crate::sys::net::Steering>,
}

/// The supervisor's `caught-up`, once the sharing thread has applied what came before it.
pub struct CaughtUp(Receiver<()>);

impl CaughtUp {
    /// Waits for it for at most `limit`; false if it did not come (the process then serves
    /// without what it missed, rather than not at all).
    pub fn wait(self, limit: Duration) -> bool {
        self.0.recv_timeout(limit).is_ok()
    }
}

/// Starts the thread that applies what the other processes say and reports the counts.
pub fn start(control: Arc<Channel>, here: Here) -> std::io::Result<CaughtUp> {
    // The scheduler's nudge when the counts change: a byte on a datagram pair the thread polls
    // (dropped when one is already waiting: one is enough).
    let (nudge, woken) = UnixDatagram::pair()?;
    nudge.set_nonblocking(true)?;
    woken.set_nonblocking(true)?;
    here.queue.share_counts(Box::new(move || {
        let _ = nudge.send(&[1]);
    }));
    let (caught_up, heard) = sync_channel(1);
    std::thread::Builder::new().name("wsgo-sharing".into()).spawn(move || {
        crate::log::defer_this_thread();
        run(&control, &woken, &here, caught_up)
    })?;
    Ok(CaughtUp(heard))
}

fn run(control: &Channel, woken: &UnixDatagram, here: &Here, caught_up: SyncSender<()>) {
    let mut caught_up = Some(caught_up);
    let pid = std::process::id();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut last_running = Vec::new();
    let started = Instant::now();
    let mut last_report = started.checked_sub(REPORT_EVERY).unwrap_or(started);
    let mut due: Option<Instant> = None;
    loop {
        let timeout = due.map(|d| d.saturating_duration_since(Instant::now()));
        let [said, changed] = crate::sys::net::wait_readable([control.fd(), woken.as_raw_fd()], timeout);
        if said {
            let Ok(messages) = control.receive(&mut buf) else {
                // The supervisor is gone (this process dies with it).
                return;
            };
            for m in messages {
                match m {
                    Message::Share(m) => apply(m, here),
                    Message::Steer(on) => {
                        if let Err(e) = here.steering.set(on) {
                            crate::log::warning!("--incoming-cpu: cannot change SO_INCOMING_CPU ({e})");
                        }
                    }
                    Message::CaughtUp => {
                        if let Some(tx) = caught_up.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        }
        if changed {
            while woken.recv(&mut buf).is_ok() {}
            due.get_or_insert(last_report + REPORT_EVERY);
        }
        let now = Instant::now();
        if due.is_some_and(|d| d <= now) {
            due = None;
            last_report = now;
            if let Some((running, started)) = here.queue.report_counts()
                && (running != last_running || !started.is_empty())
            {
                here.share.send(&Shared::Counts { from: pid, running: running.clone(), started });
                last_running = running;
            }
        }
    }
}

/// Applies another process's message here.
fn apply(m: Shared, here: &Here) {
    match m {
        Shared::Notify { channels, action, arg } => {
            here.parking.notify(&channels, action, &arg);
        }
        Shared::Block { key, secs } => here.blocks.apply(key, secs, Instant::now()),
        Shared::Counts { from, running, started } => here.queue.merge_counts(from, running, &started),
        Shared::Gone { from } => here.queue.forget_process(from),
        // Only the supervisor sums these.
        Shared::Unblocked { .. } => {}
    }
}
