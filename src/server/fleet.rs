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
//!
//! Blocks outlive a host's restart: the publisher also stores each block as a key
//! `<channel>:block:<client>` that expires when the block ends (kept when a longer block stands),
//! and the subscriber, once subscribed, reads the keys standing and hands them to the loop as
//! blocks in force: a host that starts (or a Redis that comes back) learns the fleet's blocks,
//! and its processes have them before they serve (`hub.rs`, `control.rs`).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::block::MAX_BLOCK;
use crate::client::ClientKey;
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

/// Keys read per SCAN step when catching up.
const SCAN_COUNT: usize = 1000;
/// What the subscriber puts before a block read from the stored keys (a block in force, not
/// one just set), on its way to the loop. Its first byte begins no message (`Shared::encode`
/// writes a word first), and a message from another host that begins with it is dropped: no
/// host can pass for the subscriber.
const STANDING: &[u8] = b"\x01standing ";
/// What the subscriber tells the loop once it has passed on the blocks in force (or could not
/// read them).
const READ_STANDING: &[u8] = b"\x01read-standing";

/// Whether another host's message may go to the loop: not too long, and not in the form of
/// the subscriber's own notes.
fn passes(m: &[u8]) -> bool {
    m.len() <= MAX_MESSAGE && m.first() != Some(&STANDING[0])
}

/// What the loop hears from the other hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A message another host sent now.
    Live(Shared),
    /// A block in force, read from the stored ones when this host subscribed.
    Standing(Shared),
    /// Every block in force has been passed on (or could not be read).
    ReadStanding,
}

/// A message for the publisher: its bytes, and the block it sets (to store).
type Outgoing = (Vec<u8>, Option<(ClientKey, i64)>);

/// The supervisor's link to the other hosts.
pub struct Fleet {
    outgoing: SyncSender<Outgoing>,
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

/// The Redis key holding a block: the channel's name, then the client.
fn block_key(channel_name: &str, key: ClientKey) -> String {
    format!("{channel_name}:block:{key}")
}

/// The client of a [`block_key`]; `None` for another channel's or anything malformed.
fn client_of_key(channel_name: &str, name: &[u8]) -> Option<ClientKey> {
    let rest = name.strip_prefix(channel_name.as_bytes())?.strip_prefix(b":block:")?;
    ClientKey::parse(std::str::from_utf8(rest).ok()?)
}

/// A SCAN pattern matching the channel's block keys: the channel's name taken literally.
fn block_pattern(channel_name: &str) -> String {
    let mut out = String::with_capacity(channel_name.len() + 8);
    for c in channel_name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str(":block:*");
    out
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
        let block = match msg {
            Shared::Block { key, secs } => Some((*key, *secs)),
            _ => None,
        };
        if bytes.len() <= MAX_MESSAGE {
            let _ = self.outgoing.try_send((bytes, block));
        }
    }

    /// What the loop polls: readable when messages from other hosts wait.
    pub fn fd(&self) -> RawFd {
        self.incoming.as_raw_fd()
    }

    /// What the other hosts said (and the blocks in force read), without waiting.
    pub fn receive(&self) -> Vec<Heard> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut out = Vec::new();
        while let Ok(n) = self.incoming.recv(&mut buf) {
            let got = &buf[..n];
            if got == READ_STANDING {
                out.push(Heard::ReadStanding);
            } else if let Some(m) = got.strip_prefix(STANDING) {
                out.extend(Shared::decode(m).map(Heard::Standing));
            } else {
                out.extend(Shared::decode(got).map(Heard::Live));
            }
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
                        // Subscribed first, so a block set meanwhile comes one way or the other.
                        match standing_blocks(client, channel_name) {
                            Ok(blocks) => {
                                if !blocks.is_empty() {
                                    crate::log::info!(
                                        "--redis: applied the fleet's blocks in force: {}",
                                        blocks.len()
                                    );
                                }
                                for (key, secs) in blocks {
                                    let m = Shared::Block { key, secs }.encode();
                                    let _ = to_loop.send(&[STANDING, &m].concat());
                                }
                            }
                            Err(e) => crate::log::warning!("--redis: cannot read the blocks in force: {e}"),
                        }
                        let _ = to_loop.send(READ_STANDING);
                        let mut heard = Instant::now();
                        loop {
                            match pubsub.get_message() {
                                Ok(msg) => {
                                    heard = Instant::now();
                                    let payload = msg.get_payload_bytes();
                                    if let Some(m) = untag(host, payload).filter(|m| passes(m)) {
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

/// The blocks stored by every host of the channel, with their seconds left.
fn standing_blocks(client: &redis::Client, channel_name: &str) -> redis::RedisResult<Vec<(ClientKey, i64)>> {
    let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(HEARTBEAT))?;
    con.set_write_timeout(Some(HEARTBEAT))?;
    let pattern = block_pattern(channel_name);
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, names): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(&mut con)?;
        let mut ttls = redis::pipe();
        for name in &names {
            ttls.cmd("TTL").arg(name);
        }
        let left: Vec<i64> = if names.is_empty() { Vec::new() } else { ttls.query(&mut con)? };
        for (name, secs) in names.iter().zip(left) {
            // A key without an expiry (-1) is not ours to trust; a gone one is -2.
            if let Some(key) = client_of_key(channel_name, name).filter(|_| secs > 0) {
                out.push((key, secs));
            }
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Stores a block for hosts that start later: a key that expires with it, whose expiry only a
/// longer block moves (`EXPIRE .. GT`, Redis 7; an older Redis keeps the first block's). A
/// Redis that refuses to store (full under `noeviction`, a read-only replica, no `GT`) answers
/// with an error reply: the block then only goes out live, and the connection is kept; `Err`
/// only when the connection failed.
fn store_block(
    c: &mut redis::Connection,
    channel_name: &str,
    key: ClientKey,
    secs: i64,
) -> redis::RedisResult<()> {
    let secs = secs.min(MAX_BLOCK.as_secs() as i64);
    if secs <= 0 {
        return Ok(());
    }
    let name = block_key(channel_name, key);
    // An error reply: a known code (`READONLY`, `ERR`) or one redis-rs does not know (`OOM`).
    let refused = |r: redis::RedisResult<()>| match r {
        Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::Extension) => Ok(()),
        other => other,
    };
    refused(redis::cmd("SET").arg(&name).arg("").arg("NX").arg("EX").arg(secs).query(c))?;
    refused(redis::cmd("EXPIRE").arg(&name).arg(secs).arg("GT").query(c))
}

/// The publisher thread: sends what the loop queues, and a heartbeat when there is nothing to
/// send; while Redis cannot be reached, drops it.
fn publish(client: &redis::Client, channel_name: &str, host: &str, queue: &Receiver<Outgoing>) {
    let mut con: Option<redis::Connection> = None;
    let mut failures = 0u32;
    let mut retry_at = Instant::now();
    loop {
        let (payload, block) = match queue.recv_timeout(HEARTBEAT) {
            Ok(item) => item,
            // Not a message: `Shared::decode` refuses it.
            Err(RecvTimeoutError::Timeout) => (format!("{host} heartbeat").into_bytes(), None),
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
        let stored = match (&sent, block) {
            (Ok(_), Some((key, secs))) => store_block(c, channel_name, key, secs),
            _ => Ok(()),
        };
        if sent.is_err() || stored.is_err() {
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
    fn block_keys_name_the_channel_and_the_client() {
        let k = ClientKey::parse("203.0.113.7").unwrap();
        let v6 = ClientKey::parse("2001:db8:1:2::/64").unwrap();
        assert_eq!(block_key("wsgo", k), "wsgo:block:203.0.113.7");
        for key in [k, v6] {
            assert_eq!(client_of_key("site-a", block_key("site-a", key).as_bytes()), Some(key));
        }
        // Another channel's, or not a client.
        assert_eq!(client_of_key("site", b"site-a:block:203.0.113.7"), None);
        assert_eq!(client_of_key("site", b"site:block:nope"), None);
        assert_eq!(client_of_key("site", b"site:blocks:203.0.113.7"), None);
        // The channel is matched literally.
        assert_eq!(block_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\:block:*");
        assert_eq!(block_pattern("wsgo"), "wsgo:block:*");
    }

    #[test]
    fn another_host_cannot_pass_for_the_subscribers_notes() {
        assert_eq!(READ_STANDING[0], STANDING[0]);
        for note in [READ_STANDING.to_vec(), [STANDING, b"block 203.0.113.7 60"].concat()] {
            let wire = [b"bbbb ", &note[..]].concat();
            assert!(!untag("aaaa", &wire).is_some_and(passes), "{note:?}");
        }
        let block = tag("bbbb", &Shared::Block { key: ClientKey::parse("203.0.113.7").unwrap(), secs: 60 });
        assert!(untag("aaaa", &block).is_some_and(passes));
        assert!(!passes(&vec![b'x'; MAX_MESSAGE + 1]));
    }

    #[test]
    fn back_off_is_bounded() {
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
