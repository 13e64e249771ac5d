//! What the processes of one supervisor share, and hosts that name the same Redis (README.md,
//! "One server: processes and hosts"): parking notifications, blocks, and the counts the
//! priority rules keep per public client.
//!
//! A process does everything locally first (it wakes its own parked requests, blocks the client
//! in its own table, counts its own requests), then tells the others with a [`Shared`] message
//! through its [`Outbox`]: the supervisor relays each message to its other processes (and, with
//! `--redis`, to the other hosts). So nothing waits for another process, and the core threads
//! never see a message: they read the same tables as before. The messages are text, one per
//! datagram; this module only encodes and decodes them (pure) and holds the outbox, which the
//! wiring connects to the control channel.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::client::ClientKey;
use crate::park::Action;

/// Most clients a [`Shared::Counts`] names (the rest of a very busy moment is not shared).
pub const MAX_COUNTED: usize = 2048;

/// A message between the processes (and hosts) of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// `wsgo.notify_parked` ran somewhere: wake the requests parked here on these channels.
    Notify {
        /// The channels, as `notify_parked` split them.
        channels: Vec<String>,
        /// What the woken requests do.
        action: Action,
        /// The argument a retried request sees.
        arg: String,
    },
    /// A client was blocked somewhere for `secs` seconds (the app's value, from now).
    Block {
        /// The client.
        key: ClientKey,
        /// Seconds, as the app gave them (clamped where they are applied).
        secs: i64,
    },
    /// A process lifted its copy of an expired block, having refused this many requests.
    Unblocked {
        /// The client.
        key: ClientKey,
        /// Requests it refused under the block.
        refused: u64,
    },
    /// A process's ranked clients: requests running there now, and requests started there
    /// since its last report.
    Counts {
        /// The reporting process (its pid).
        from: u32,
        /// Running now, per client (all of them: a process runs at most its workers' worth).
        running: Vec<(ClientKey, u32)>,
        /// Started since the last report, per client (at most [`MAX_COUNTED`] clients).
        started: Vec<(ClientKey, u32)>,
    },
    /// That process is gone: what it said it runs no longer runs.
    Gone {
        /// Its pid.
        from: u32,
    },
}

fn action_code(a: Action) -> u8 {
    match a {
        Action::Disconnect => 0,
        Action::Retry => 1,
        Action::Http204 => 2,
        Action::Http504 => 3,
    }
}

impl Shared {
    /// The bytes sent: a word, then the fields; text, so that a Redis monitor can read it.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Shared::Notify { channels, action, arg } => {
                // The channels and the argument are the app's: any bytes but the separator
                // lengths say where they end.
                let joined = channels.join(",");
                format!("notify {} {}\n{joined}{arg}", action_code(*action), joined.len()).into_bytes()
            }
            Shared::Block { key, secs } => format!("block {key} {secs}").into_bytes(),
            Shared::Unblocked { key, refused } => format!("unblocked {key} {refused}").into_bytes(),
            Shared::Counts { from, running, started } => {
                let mut out = format!("counts {from}");
                for (tag, list) in [("r", running), ("s", started)] {
                    for (key, n) in list {
                        out.push_str(&format!("\n{tag} {key} {n}"));
                    }
                }
                out.into_bytes()
            }
            Shared::Gone { from } => format!("gone {from}").into_bytes(),
        }
    }

    /// Reads a message; `None` for anything else (a process runs the app, and another host's
    /// bytes come over the network: neither is trusted to be well-formed).
    pub fn decode(bytes: &[u8]) -> Option<Shared> {
        let (head, rest) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (bytes, &b""[..]),
        };
        let head = std::str::from_utf8(head).ok()?;
        let words: Vec<&str> = head.split(' ').collect();
        match words[..] {
            ["notify", code, len] => {
                let code: u8 = code.parse().ok().filter(|c| *c <= 3)?;
                let len: usize = len.parse().ok()?;
                let rest = std::str::from_utf8(rest).ok()?;
                let (joined, arg) = (rest.get(..len)?, rest.get(len..)?);
                Some(Shared::Notify {
                    channels: crate::park::channels(joined),
                    action: Action::from_code(i64::from(code)),
                    arg: arg.to_string(),
                })
            }
            ["block", key, secs] if rest.is_empty() => {
                Some(Shared::Block { key: ClientKey::parse(key)?, secs: secs.parse().ok()? })
            }
            ["unblocked", key, refused] if rest.is_empty() => {
                Some(Shared::Unblocked { key: ClientKey::parse(key)?, refused: refused.parse().ok()? })
            }
            ["gone", from] if rest.is_empty() => Some(Shared::Gone { from: from.parse().ok()? }),
            ["counts", from] => {
                let (mut running, mut started) = (Vec::new(), Vec::new());
                if !rest.is_empty() {
                    for line in std::str::from_utf8(rest).ok()?.split('\n') {
                        let mut f = line.split(' ');
                        let (Some(tag), Some(key), Some(n), None) = (f.next(), f.next(), f.next(), f.next())
                        else {
                            return None;
                        };
                        let entry = (ClientKey::parse(key)?, n.parse().ok()?);
                        match tag {
                            "r" => running.push(entry),
                            "s" => started.push(entry),
                            _ => return None,
                        }
                    }
                }
                if started.len() > MAX_COUNTED || running.len() > MAX_COUNTED {
                    return None;
                }
                Some(Shared::Counts { from: from.parse().ok()?, running, started })
            }
            _ => None,
        }
    }
}

/// Sends a message to the other processes; false when it could not go.
pub type Send = Box<dyn Fn(&Shared) -> bool + std::marker::Send + Sync>;

/// Where a process's messages to the others go: nowhere until the wiring connects it (a process
/// without a supervisor shares nothing).
#[derive(Default)]
pub struct Outbox {
    send: OnceLock<Send>,
    /// Messages that could not go (the supervisor not reading): counted, not retried.
    lost: AtomicU64,
}

impl Outbox {
    /// Connects the outbox (once; later calls are ignored).
    pub fn connect(&self, send: Send) {
        let _ = self.send.set(send);
    }

    /// Whether there are others to tell.
    pub fn is_connected(&self) -> bool {
        self.send.get().is_some()
    }

    /// Tells the others, without waiting.
    pub fn send(&self, msg: &Shared) {
        if let Some(send) = self.send.get()
            && !send(msg)
        {
            self.lost.fetch_add(1, Relaxed);
        }
    }

    /// Messages lost so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn messages_round_trip() {
        let table = [
            Shared::Notify {
                channels: vec!["room-7".into(), "all".into()],
                action: Action::Retry,
                arg: "x\ny, z".into(),
            },
            Shared::Notify { channels: vec![], action: Action::Http504, arg: String::new() },
            Shared::Notify { channels: vec!["é".into()], action: Action::Disconnect, arg: "\n".into() },
            Shared::Block { key: key("203.0.113.7"), secs: 60 },
            Shared::Block { key: key("2001:db8:1:2::5"), secs: i64::MAX },
            Shared::Block { key: key("198.51.100.1"), secs: -5 },
            Shared::Unblocked { key: key("203.0.113.7"), refused: 12 },
            Shared::Counts {
                from: 4242,
                running: vec![(key("203.0.113.7"), 3)],
                started: vec![(key("2001:db8::1"), 9)],
            },
            Shared::Counts { from: 1, running: vec![], started: vec![] },
            Shared::Gone { from: 77 },
        ];
        for m in table {
            assert_eq!(Shared::decode(&m.encode()), Some(m.clone()), "{m:?}");
        }
    }

    #[test]
    fn junk_is_refused() {
        let junk: &[&[u8]] = &[
            b"",
            b"notify",
            b"notify 9 0\n",
            b"notify 1 5\nab",
            b"notify 1 x\nab",
            b"notify 1 1\n\xff\xfe",
            b"block 1.2.3.4",
            b"block 1.2.3.4 x",
            b"block 10.0.0.1/64 5",
            b"block 1.2.3.4 5\nmore",
            b"unblocked 1.2.3.4 -1",
            b"counts x",
            b"counts 1\nq 1.2.3.4 1",
            b"counts 1\nr 1.2.3.4",
            b"counts 1\nr 1.2.3.4 1 2",
            b"gone",
            b"gone 1 2",
            b"hello",
        ];
        for j in junk {
            assert_eq!(Shared::decode(j), None, "{:?}", String::from_utf8_lossy(j));
        }
        // A split in the middle of a multi-byte channel name is junk, not a panic.
        assert_eq!(Shared::decode("notify 1 1\né".as_bytes()), None);
    }

    #[test]
    fn an_outbox_counts_what_could_not_go() {
        let out = Outbox::default();
        assert!(!out.is_connected());
        out.send(&Shared::Gone { from: 1 });
        assert_eq!(out.lost(), 0, "unconnected: nothing to lose");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        out.connect(Box::new(move |m| {
            s.lock().unwrap().push(m.clone());
            !matches!(m, Shared::Gone { .. })
        }));
        assert!(out.is_connected());
        out.send(&Shared::Block { key: key("203.0.113.7"), secs: 1 });
        out.send(&Shared::Gone { from: 2 });
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(out.lost(), 1);
    }
}
