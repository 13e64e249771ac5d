//! Who the client is: the peer, or what a trusted proxy says; the key a client is counted and
//! blocked by (an IPv4 address, or an IPv6 /64); whether it is on the public internet, and
//! whether it says it is a robot. Pure.
//!
//! The original believed the left-most `X-Forwarded-For` entry from any private peer, which lets a
//! client behind an appending proxy pick its own identity. We walk the list from the right and stop
//! at the first address that is not one of our trusted proxies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::{Cidr, canonical};

/// A client for scheduling and blocking: an IPv4 address, or the /64 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address.
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl ClientKey {
    /// The key of an address (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> ClientKey {
        match canonical(ip) {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => ClientKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

impl ClientKey {
    /// Reads a key back from its text (`Display`): `203.0.113.7`, or `2001:db8:1:2::/64`.
    pub fn parse(s: &str) -> Option<ClientKey> {
        match s.strip_suffix("/64") {
            Some(v6) => {
                let ip = v6.parse::<std::net::Ipv6Addr>().ok()?;
                // Only a /64 prefix, as `Display` writes it.
                (u128::from(ip) & u128::from(u64::MAX) == 0)
                    .then(|| ClientKey::V6((u128::from(ip) >> 64) as u64))
            }
            None => s.parse::<Ipv4Addr>().ok().map(|v4| ClientKey::V4(u32::from(v4))),
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(*a)),
            ClientKey::V6(p) => write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(*p) << 64)),
        }
    }
}

/// Whether an address is on the public internet (not loopback, private, link-local or
/// unspecified): only those are ranked and blocked.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback() || v6.is_unspecified() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80)
        }
    }
}

/// Whether a User-Agent looks like a robot (as the original: these words, case-insensitive, or
/// a URL, which crawlers put in their User-Agent).
pub fn is_robot(user_agent: &[u8]) -> bool {
    const WORDS: &[&[u8]] = &[b"facebook", b"bot", b"crawler", b"spider", b"index", b"http:", b"https:"];
    user_agent.windows(3).enumerate().any(|(i, w)| {
        WORDS.iter().any(|word| {
            w.eq_ignore_ascii_case(&word[..3])
                && user_agent.len() - i >= word.len()
                && user_agent[i..i + word.len()].eq_ignore_ascii_case(word)
        })
    })
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client.
    Ip(SocketAddr),
    /// A client of a unix socket: a process on this host (a proxy, usually), trusted like one.
    Unix,
}

impl Peer {
    /// The address the client is known by before any forwarding header: a unix socket's
    /// client is this host.
    pub fn ip(&self) -> IpAddr {
        match self {
            Peer::Ip(a) => canonical(a.ip()),
            Peer::Unix => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// Whether its forwarding headers are believed: a `--trusted-proxy` peer, or a unix socket's.
    pub fn trusted(&self, proxies: &[Cidr]) -> bool {
        match self {
            Peer::Ip(a) => trusted(canonical(a.ip()), proxies),
            Peer::Unix => true,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The client's address: the right-most untrusted entry of the `X-Forwarded-For` fields (in
/// order), when the peer is a trusted proxy; otherwise the peer.
pub fn client_ip<'a>(
    peer: Peer,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    proxies: &[Cidr],
) -> IpAddr {
    let mut client = peer.ip();
    if !peer.trusted(proxies) {
        return client;
    }
    for field in forwarded_for.rev() {
        for entry in field.rsplit(|&b| b == b',') {
            let Some(ip) = std::str::from_utf8(entry).ok().and_then(|s| s.trim().parse::<IpAddr>().ok())
            else {
                // Garbage in the chain: nothing left of it can be believed.
                return client;
            };
            client = canonical(ip);
            if !trusted(client, proxies) {
                return client;
            }
        }
    }
    client
}

/// Whether the client used https, per `X-Forwarded-Proto` from a trusted peer.
pub fn forwarded_https(peer: Peer, proto: Option<&[u8]>, proxies: &[Cidr]) -> bool {
    let Some(proto) = proto else { return false };
    if !peer.trusted(proxies) {
        return false;
    }
    // A list (proxy chain) ends with what the proxy nearest to us saw.
    let last = proto.rsplit(|&b| b == b',').next().unwrap_or(proto);
    last.trim_ascii().eq_ignore_ascii_case(b"https")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_trusted_proxies;

    #[test]
    fn keys_read_back_from_their_text() {
        for ip in ["203.0.113.7", "2001:db8:1:2::99", "::ffff:8.8.8.8", "0.0.0.0"] {
            let key = ClientKey::of(ip.parse().unwrap());
            assert_eq!(ClientKey::parse(&key.to_string()), Some(key), "{ip}");
        }
        for junk in ["", "1.2.3", "2001:db8::1", "2001:db8::1/64", "1.2.3.4/64", "x/64", "01.2.3.4"] {
            assert_eq!(ClientKey::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn identities() {
        let proxies = default_trusted_proxies();
        let table: &[(&str, &[&str], &str)] = &[
            ("8.8.8.8", &["1.2.3.4"], "8.8.8.8"),
            ("127.0.0.1", &[], "127.0.0.1"),
            ("127.0.0.1", &["1.2.3.4"], "1.2.3.4"),
            ("127.0.0.1", &["6.6.6.6, 1.2.3.4"], "1.2.3.4"),
            ("127.0.0.1", &["1.2.3.4, 10.0.0.2"], "1.2.3.4"),
            ("127.0.0.1", &["6.6.6.6", "1.2.3.4"], "1.2.3.4"),
            ("127.0.0.1", &["10.0.0.1, 10.0.0.2"], "10.0.0.1"),
            ("127.0.0.1", &["garbage, 1.2.3.4"], "1.2.3.4"),
            ("127.0.0.1", &["1.2.3.4, garbage"], "127.0.0.1"),
            ("::ffff:127.0.0.1", &["2001:db8::1"], "2001:db8::1"),
            ("::ffff:8.8.4.4", &[], "8.8.4.4"),
        ];
        for (peer, xff, want) in table {
            let peer = Peer::Ip(SocketAddr::new(peer.parse().unwrap(), 1));
            let got = client_ip(peer, xff.iter().map(|s| s.as_bytes()), &proxies);
            assert_eq!(got, want.parse::<IpAddr>().unwrap(), "{peer} {xff:?}");
        }
        // A unix socket's client is this host, and trusted: its proxy's header is believed.
        assert_eq!(
            client_ip(Peer::Unix, [&b"8.8.8.8"[..]].into_iter(), &proxies),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(Peer::Unix, std::iter::empty(), &proxies),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(forwarded_https(Peer::Unix, Some(b"https"), &proxies));
    }

    #[test]
    fn addresses_and_robots() {
        for (ip, public) in [
            ("8.8.8.8", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.0.1", false),
            ("::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("2001:db8::1", true),
            ("::ffff:8.8.4.4", true),
            ("::ffff:127.0.0.1", false),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
        let a = ClientKey::of("2001:db8:1:2::1".parse().unwrap());
        assert_eq!(a, ClientKey::of("2001:db8:1:2:ffff::9".parse().unwrap()), "one /64");
        assert_ne!(a, ClientKey::of("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientKey::of("::ffff:1.2.3.4".parse().unwrap()).to_string(), "1.2.3.4");
        for (ua, robot) in [
            ("Googlebot/2.1", true),
            ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", true),
            ("facebookexternalhit/1.1", true),
            ("Mozilla/5.0 (compatible; http://example.com)", true),
            ("Some SPIDER", true),
            ("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", false),
            ("curl/7.88.1", false),
            ("", false),
            ("bo", false),
        ] {
            assert_eq!(is_robot(ua.as_bytes()), robot, "{ua}");
        }
    }

    #[test]
    fn https_only_from_trusted_peers() {
        let proxies = default_trusted_proxies();
        let table: &[(&str, Option<&str>, bool)] = &[
            ("127.0.0.1", Some("https"), true),
            ("127.0.0.1", Some("HTTPS "), true),
            ("127.0.0.1", Some("http"), false),
            ("127.0.0.1", Some("weird"), false),
            ("127.0.0.1", Some("http, https"), true),
            ("127.0.0.1", None, false),
            ("8.8.8.8", Some("https"), false),
        ];
        for (peer, proto, want) in table {
            assert_eq!(
                forwarded_https(
                    Peer::Ip(SocketAddr::new(peer.parse().unwrap(), 1)),
                    proto.map(str::as_bytes),
                    &proxies
                ),
                *want,
                "{peer} {proto:?}"
            );
        }
    }
}
