//! `--redis URL`: the hosts of a fleet share parking notifications and blocks through Redis
//! pub/sub on one channel (`--redis-channel`). The supervisor owns it: what its processes say
//! goes out, what other hosts say comes in and is relayed to every process (`hub.rs`).
//!
//! Two threads of the supervisor talk to Redis, so its loop never waits on the network: a
//! subscriber, which passes each message from another host to the loop over a datagram socket
//! the loop polls, and a publisher, which takes the loop's messages from a queue. Each host
//! tags its messages with a random id and ignores its own. When Redis cannot be reached, both
//! reconnect with back-off (0.1 s doubling to 5 s); meanwhile every host serves on its own
//! (its processes still share among themselves) and what would have gone out is dropped: one
//! log line says Redis is lost, one that it is back. A Redis that stops answering without
//! closing the connection counts as lost too: each host publishes a heartbeat when it has nothing
//! else to say and hears its own messages back, so a subscription silent for 6 s is made again;
//! every Redis call times out after 2 s. Messages are at most 64 KiB both ways.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::share::Shared;

/// First reconnect delay, doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message taken from another host (as between processes: `control::MAX_MESSAGE`).
const MAX_MESSAGE: usize = super::control::MAX_MESSAGE;
/// Messages waiting for the publisher at most; beyond, new ones are dropped (Redis slow or
/// unreachable: they would be dropped anyway).
const QUEUE: usize = 1024;
/// With nothing else to publish, a host publishes a heartbeat this often; its subscriber hears
/// its own messages, so a subscription that hears nothing for [`SILENT_FOR`] is dead (a Redis
/// that stopped answering, a network that dropped the connection without closing it) and is
/// made again. Redis calls time out after the same period.
const HEARTBEAT: Duration = Duration::from_secs(2);
const SILENT_FOR: Duration = Duration::from_secs(6);

/// The supervisor's link to the other hosts.
pub struct Fleet {
    outgoing: SyncSender<Vec<u8>>,
    incoming: UnixDatagram,
    host: String,
}

/// A host's id: random, so two hosts never share one.
fn host_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// A message as it travels: the sending host's id, a space, the message.
fn tag(host: &str, msg: &Shared) -> Vec<u8> {
    [host.as_bytes(), b" ", &msg.encode()].concat()
}

/// A message from another host; `None` for this host's own or anything malformed.
fn untag<'a>(host: &str, payload: &'a [u8]) -> Option<&'a [u8]> {
    let space = payload.iter().position(|&b| b == b' ')?;
    (&payload[..space] != host.as_bytes()).then_some(&payload[space + 1..])
}

impl Fleet {
    /// Starts the threads (they connect in the background).
    pub fn start(url: &str, channel_name: &str) -> Result<Fleet, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis {url:?}: {e}"))?;
        let host = host_id();
        let (ours, theirs) =
            UnixDatagram::pair().map_err(|e| format!("cannot make the Redis thread's socket: {e}"))?;
        ours.set_nonblocking(true).map_err(|e| e.to_string())?;
        let (outgoing, queue) = sync_channel(QUEUE);
        let shown = url.rsplit('@').next().unwrap_or(url).to_string();
        let (c, ch, h, name) = (client.clone(), channel_name.to_string(), host.clone(), shown.clone());
        std::thread::Builder::new()
            .name("wsgo-redis-sub".into())
            .spawn(move || subscribe(&c, &ch, &h, &theirs, &name))
            .map_err(|e| format!("cannot start the Redis thread: {e}"))?;
        let (ch, h) = (channel_name.to_string(), host.clone());
        std::thread::Builder::new()
            .name("wsgo-redis-pub".into())
            .spawn(move || publish(&client, &ch, &h, &queue))
            .map_err(|e| format!("cannot start the Redis thread: {e}"))?;
        crate::log::info!(
            "--redis: sharing parking notifications and blocks with the hosts on {shown}, channel {channel_name:?}"
        );
        Ok(Fleet { outgoing, incoming: ours, host })
    }

    /// Sends a message to the other hosts (dropped while Redis is down, or when longer than
    /// [`MAX_MESSAGE`]).
    pub fn publish(&self, msg: &Shared) {
        let bytes = tag(&self.host, msg);
        if bytes.len() <= MAX_MESSAGE {
            let _ = self.outgoing.try_send(bytes);
        }
    }

    /// What the loop polls: readable when messages from other hosts wait.
    pub fn fd(&self) -> RawFd {
        self.incoming.as_raw_fd()
    }

    /// The messages from other hosts that wait, without waiting.
    pub fn receive(&self) -> Vec<Shared> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut out = Vec::new();
        while let Ok(n) = self.incoming.recv(&mut buf) {
            out.extend(Shared::decode(&buf[..n]));
        }
        out
    }
}

fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << failures.min(6)).min(MAX_BACKOFF)
}

/// The subscriber thread: forever connected to the channel, or trying to be.
fn subscribe(client: &redis::Client, channel_name: &str, host: &str, to_loop: &UnixDatagram, shown: &str) {
    let mut failures = 0u32;
    let mut said_down = false;
    loop {
        let error = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(mut con) => {
                // Every read waits at most a heartbeat: subscribing to a Redis that stopped
                // answering fails too, and is tried again.
                let timeout = con.set_read_timeout(Some(HEARTBEAT));
                let mut pubsub = con.as_pubsub();
                match timeout.and_then(|()| pubsub.subscribe(channel_name)) {
                    Ok(()) => {
                        if said_down {
                            crate::log::info!("--redis: {shown} is back; sharing with the other hosts again");
                            said_down = false;
                        }
                        failures = 0;
                        let mut heard = Instant::now();
                        loop {
                            match pubsub.get_message() {
                                Ok(msg) => {
                                    heard = Instant::now();
                                    let payload = msg.get_payload_bytes();
                                    if let Some(m) = untag(host, payload).filter(|m| m.len() <= MAX_MESSAGE) {
                                        let _ = to_loop.send(m);
                                    }
                                }
                                Err(e) if e.is_timeout() && heard.elapsed() < SILENT_FOR => {}
                                Err(e) if e.is_timeout() => {
                                    break format!(
                                        "nothing heard for {} s, not even this host's heartbeat",
                                        SILENT_FOR.as_secs()
                                    );
                                }
                                Err(e) => break e.to_string(),
                            }
                        }
                    }
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if !said_down {
            crate::log::warning!(
                "--redis: lost {shown} ({error}); each host serves on its own until it is back"
            );
            said_down = true;
        }
        std::thread::sleep(backoff(failures));
        failures += 1;
    }
}

/// The publisher thread: sends what the loop queues, and a heartbeat when there is nothing to
/// send; while Redis cannot be reached, drops it.
fn publish(client: &redis::Client, channel_name: &str, host: &str, queue: &Receiver<Vec<u8>>) {
    let mut con: Option<redis::Connection> = None;
    let mut failures = 0u32;
    let mut retry_at = Instant::now();
    loop {
        let payload = match queue.recv_timeout(HEARTBEAT) {
            Ok(payload) => payload,
            // Not a message: `Shared::decode` refuses it.
            Err(RecvTimeoutError::Timeout) => format!("{host} heartbeat").into_bytes(),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if con.is_none() && Instant::now() >= retry_at {
            let connected = client.get_connection_with_timeout(CONNECT_TIMEOUT).and_then(|c| {
                // A Redis that stops answering must not hold this thread (and the queue) forever.
                c.set_read_timeout(Some(HEARTBEAT))?;
                c.set_write_timeout(Some(HEARTBEAT))?;
                Ok(c)
            });
            match connected {
                Ok(c) => {
                    con = Some(c);
                    failures = 0;
                }
                Err(_) => {
                    retry_at = Instant::now() + backoff(failures);
                    failures += 1;
                }
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg(channel_name).arg(&payload).query(c);
        if sent.is_err() {
            con = None;
            retry_at = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_ignores_its_own_messages() {
        let msg = Shared::Gone { from: 3 };
        let wire = tag("aaaa", &msg);
        assert_eq!(untag("aaaa", &wire), None);
        assert_eq!(untag("bbbb", &wire).and_then(Shared::decode), Some(msg));
        assert_eq!(untag("bbbb", b"no-space"), None);
        assert_ne!(host_id(), host_id());
    }

    #[test]
    fn back_off_is_bounded() {
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
