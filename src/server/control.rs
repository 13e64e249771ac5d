//! The control channel between the supervisor and one of its server processes: a pair of
//! `SOCK_SEQPACKET` unix sockets (each message arrives whole), the child's end inherited as
//! `WSGO_CONTROL_FD`. The child says:
//!
//! - `ready`: it serves (the app is loaded and the core threads accept);
//! - `replace <why>`: it reached `--max-requests` or `--max-rss` and asks to be replaced the way
//!   SIGHUP replaces it (a new process serves before this one drains);
//! - `metrics\n<lines>`: its Prometheus sample lines, every second with `--metrics`;
//! - `watch\n<dir>\n...`: the folders of the app's source files, for `--reload`;
//! - `report\n<lines>`: its SIGUSR2 report, for the supervisor's totals;
//! - `share\n<message>`: a [`Shared`] message for the other processes (a parking notification,
//!   a block, its client counts).
//!
//! and the supervisor sends `share` messages, what the other processes (and hosts) said, and
//! once, right after starting a child, what is in force (the blocks, the others' counts) then
//! `caught-up`: the child takes no connection before it has read that far, so a client blocked
//! before the child started is refused from its first connection.
//! The supervisor reads without waiting, in its loop; what the child's queue cannot take yet
//! waits in an [`Outgoing`] queue, in order, instead of being lost. A child whose end closes is
//! gone (its exit is reaped there too). The child reads on its sharing thread (`sharing.rs`),
//! from before it loads the app.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::share::Shared;

/// The environment variable naming the child's end of the channel.
pub const CONTROL_FD: &str = "WSGO_CONTROL_FD";

/// Largest message: a process's metrics fit with room to spare.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Most bytes the supervisor holds for one child that does not read (beyond them, messages are
/// dropped and counted): 100,000 blocks' worth.
pub const MAX_OUTGOING: usize = 4 << 20;

/// A message from a server process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// It serves.
    Ready,
    /// It asks to be replaced, and says why.
    Replace(String),
    /// Its current metrics, as Prometheus sample lines.
    Metrics(String),
    /// Folders whose `.py` files are the app's source.
    Watch(Vec<PathBuf>),
    /// Its SIGUSR2 report.
    Report(String),
    /// For the other processes (from a child), or from them (to a child).
    Share(Shared),
    /// To a child: everything in force when it started came before this.
    CaughtUp,
    /// How busy its CPUs were lately, in permille (`--incoming-cpu`'s guard, `steering`).
    Busy(u16),
    /// To a child: steer the connections its CPUs take in to it (`true`), or let the hash spread
    /// them (`false`).
    Steer(bool),
}

impl Message {
    /// The bytes sent.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Ready => b"ready".to_vec(),
            Message::Replace(why) => format!("replace {why}").into_bytes(),
            Message::Metrics(lines) => format!("metrics\n{lines}").into_bytes(),
            Message::Watch(dirs) => {
                use std::os::unix::ffi::OsStrExt;
                let mut out = b"watch".to_vec();
                for d in dirs {
                    out.push(b'\n');
                    out.extend_from_slice(d.as_os_str().as_bytes());
                }
                out
            }
            Message::Report(lines) => format!("report\n{lines}").into_bytes(),
            Message::Share(m) => [&b"share\n"[..], &m.encode()].concat(),
            Message::CaughtUp => b"caught-up".to_vec(),
            Message::Busy(permille) => format!("busy {permille}").into_bytes(),
            Message::Steer(true) => b"steer on".to_vec(),
            Message::Steer(false) => b"steer off".to_vec(),
        }
    }

    /// Reads a message; `None` for anything else (a child is not trusted to be well-formed:
    /// the app runs in it).
    pub fn decode(bytes: &[u8]) -> Option<Message> {
        use std::os::unix::ffi::OsStrExt;
        match bytes {
            b"ready" => return Some(Message::Ready),
            b"caught-up" => return Some(Message::CaughtUp),
            b"steer on" => return Some(Message::Steer(true)),
            b"steer off" => return Some(Message::Steer(false)),
            _ => {}
        }
        if let Some(permille) = bytes.strip_prefix(b"busy ") {
            return std::str::from_utf8(permille)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|&p| p <= 1000)
                .map(Message::Busy);
        }
        if let Some(why) = bytes.strip_prefix(b"replace ") {
            return Some(Message::Replace(String::from_utf8_lossy(why).into_owned()));
        }
        if let Some(lines) = bytes.strip_prefix(b"metrics\n") {
            return std::str::from_utf8(lines).ok().map(|s| Message::Metrics(s.to_string()));
        }
        if let Some(lines) = bytes.strip_prefix(b"report\n") {
            return std::str::from_utf8(lines).ok().map(|s| Message::Report(s.to_string()));
        }
        if let Some(m) = bytes.strip_prefix(b"share\n") {
            return Shared::decode(m).map(Message::Share);
        }
        if let Some(rest) = bytes.strip_prefix(b"watch") {
            let dirs = rest
                .split(|&b| b == b'\n')
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(std::ffi::OsStr::from_bytes(d)))
                .collect();
            return Some(Message::Watch(dirs));
        }
        None
    }
}

/// One end of a channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair: the supervisor's end, the child's end.
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = crate::sys::net::message_pair()?;
        Ok((Channel(a), Channel(b)))
    }

    /// The child's end, named by `WSGO_CONTROL_FD` (taken out of the environment, so the app's
    /// processes do not see it). Call before any other thread starts.
    pub fn from_env() -> Option<Channel> {
        use std::os::fd::FromRawFd;
        let fd = std::env::var(CONTROL_FD).ok()?.parse::<RawFd>().ok()?;
        // SAFETY: called at the start of the process, before any other thread exists, so
        // nothing reads the environment concurrently.
        unsafe { std::env::remove_var(CONTROL_FD) };
        // Not to be inherited by what the app starts.
        crate::sys::net::set_cloexec(fd).ok()?;
        crate::sys::net::kind(fd)?;
        // SAFETY: the supervisor handed this descriptor to this process to own, and checked
        // above to be a socket; nothing else here uses the number.
        Some(Channel(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends a message without waiting; false if it could not go (the other end's queue is
    /// full, or the message is longer than [`MAX_MESSAGE`]: never sent to be read cut).
    pub fn send(&self, msg: &Message) -> bool {
        let bytes = msg.encode();
        bytes.len() <= MAX_MESSAGE && crate::sys::net::send_message(self.0.as_raw_fd(), &bytes).is_ok()
    }

    /// Sends a message, or queues it in `out` behind the ones already waiting there when the
    /// other end's queue is full (see [`Channel::flush`]). False if it is dropped: longer than
    /// [`MAX_MESSAGE`], beyond [`MAX_OUTGOING`], or the other end is gone.
    pub fn send_or_queue(&self, out: &mut Outgoing, msg: &Message) -> bool {
        let bytes = msg.encode();
        if bytes.len() > MAX_MESSAGE {
            return false;
        }
        if out.waiting.is_empty() {
            match crate::sys::net::send_message(self.0.as_raw_fd(), &bytes) {
                Ok(()) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
        if out.bytes + bytes.len() > MAX_OUTGOING {
            out.dropped += 1;
            return false;
        }
        out.bytes += bytes.len();
        out.waiting.push_back(bytes);
        true
    }

    /// Sends what waits in `out`, in order, until the other end's queue is full again; how many
    /// went (or were dropped: a gone other end empties it, its exit is seen by the caller).
    pub fn flush(&self, out: &mut Outgoing) -> usize {
        let mut went = 0;
        while let Some(bytes) = out.waiting.front() {
            match crate::sys::net::send_message(self.0.as_raw_fd(), bytes) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Ok(()) | Err(_) => {
                    out.bytes -= bytes.len();
                    out.waiting.pop_front();
                    went += 1;
                }
            }
        }
        went
    }

    /// The messages waiting, without waiting; `Err` once the other end closed. A message longer
    /// than `buf` is dropped, not read cut.
    pub fn receive(&self, buf: &mut [u8]) -> Result<Vec<Message>, Closed> {
        let mut out = Vec::new();
        loop {
            match crate::sys::net::receive_message(self.0.as_raw_fd(), buf) {
                Ok(None) => return Ok(out),
                Ok(Some(0)) | Err(_) => return if out.is_empty() { Err(Closed) } else { Ok(out) },
                Ok(Some(n)) if n > buf.len() => {}
                Ok(Some(n)) => out.extend(Message::decode(&buf[..n])),
            }
        }
    }

    /// Its descriptor (to pass it to a child).
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The other end closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Messages for one child that its queue could not take yet, oldest first.
#[derive(Debug, Default)]
pub struct Outgoing {
    waiting: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: u64,
}

impl Outgoing {
    /// Whether something waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Messages dropped because [`MAX_OUTGOING`] bytes already waited.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let table = [
            Message::Ready,
            Message::Replace("reached --max-requests 50".into()),
            Message::Metrics("wsgo_requests_total{process=\"1\",class=\"2xx\"} 4\n".into()),
            Message::Watch(vec!["/srv/app".into(), "/srv/app/pkg".into()]),
            Message::Watch(vec![]),
            Message::Report("1: Request count: 5\n".into()),
            Message::Share(Shared::Gone { from: 12 }),
            Message::CaughtUp,
            Message::Busy(0),
            Message::Busy(1000),
            Message::Steer(true),
            Message::Steer(false),
        ];
        for m in table {
            assert_eq!(Message::decode(&m.encode()), Some(m.clone()), "{m:?}");
        }
        for junk in [
            &b""[..],
            b"read",
            b"metrics",
            b"metrics\n\xff",
            b"replace",
            b"share\ngone",
            b"report",
            b"caught-up\n",
            b"busy",
            b"busy ",
            b"busy 1001",
            b"busy -1",
            b"busy 5x",
            b"steer",
            b"steer maybe",
        ] {
            assert_eq!(Message::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn a_pair_carries_whole_messages_and_sees_the_close() {
        let (sup, child) = Channel::pair().unwrap();
        let mut buf = vec![0; MAX_MESSAGE];
        assert_eq!(sup.receive(&mut buf), Ok(vec![]));
        assert!(child.send(&Message::Ready));
        assert!(child.send(&Message::Replace("why".into())));
        assert_eq!(sup.receive(&mut buf), Ok(vec![Message::Ready, Message::Replace("why".into())]));
        drop(child);
        assert_eq!(sup.receive(&mut buf), Err(Closed));
    }

    #[test]
    fn a_message_too_long_is_neither_sent_nor_read_cut() {
        let (sup, child) = Channel::pair().unwrap();
        let mut buf = vec![0; MAX_MESSAGE];
        let long = Message::Report("x".repeat(MAX_MESSAGE));
        assert!(!child.send(&long), "longer than MAX_MESSAGE: refused");
        // One that does not fit the reader's buffer is dropped whole.
        assert!(child.send(&Message::Report("y".repeat(100))));
        assert!(child.send(&Message::Ready));
        assert_eq!(sup.receive(&mut buf[..50]), Ok(vec![Message::Ready]));
    }

    #[test]
    fn what_the_queue_cannot_take_waits_in_order_and_goes_as_it_is_read() {
        let (sup, child) = Channel::pair().unwrap();
        let mut out = Outgoing::default();
        let mut sent = 0;
        // Far more than a socket's queue holds (a few hundred small messages).
        while sent < 5000 {
            assert!(sup.send_or_queue(&mut out, &Message::Report(sent.to_string())));
            sent += 1;
        }
        assert!(!out.is_empty(), "the socket's queue filled");
        let mut buf = vec![0; MAX_MESSAGE];
        assert_eq!(sup.flush(&mut out), 0, "nothing goes while the child reads nothing");
        let mut got = Vec::new();
        for _ in 0..10_000 {
            sup.flush(&mut out);
            got.extend(child.receive(&mut buf).unwrap());
            if got.len() == sent {
                break;
            }
        }
        assert!(out.is_empty());
        let want: Vec<Message> = (0..sent).map(|i| Message::Report(i.to_string())).collect();
        assert_eq!(got, want, "every message, in the order sent");
        // Beyond the cap, messages are dropped and counted; too long ones are refused.
        let big = Message::Report("z".repeat(MAX_MESSAGE - 100));
        while out.dropped() == 0 {
            sup.send_or_queue(&mut out, &big);
        }
        assert!(out.bytes <= MAX_OUTGOING);
        assert!(!sup.send_or_queue(&mut Outgoing::default(), &Message::Report("x".repeat(MAX_MESSAGE))));
        // A gone child: nothing more queues, and what waited is dropped.
        drop(child);
        sup.flush(&mut out);
        assert!(out.is_empty());
        assert!(!sup.send_or_queue(&mut out, &Message::CaughtUp));
    }
}
