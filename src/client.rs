//! Who the client is: the peer, or what a trusted proxy says (DESIGN decision 7).
//!
//! The original believed the left-most `X-Forwarded-For` entry from any private peer, which lets a
//! client behind an appending proxy pick its own identity. We walk the list from the right and stop
//! at the first address that is not one of our trusted proxies.

use std::net::IpAddr;

use crate::config::{Cidr, canonical};

fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The client's address: the right-most untrusted entry of the `X-Forwarded-For` fields (in
/// order), when the peer is a trusted proxy; otherwise the peer.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    proxies: &[Cidr],
) -> IpAddr {
    let mut client = canonical(peer);
    if !trusted(client, proxies) {
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
pub fn forwarded_https(peer: IpAddr, proto: Option<&[u8]>, proxies: &[Cidr]) -> bool {
    let Some(proto) = proto else { return false };
    if !trusted(canonical(peer), proxies) {
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
            let got = client_ip(peer.parse().unwrap(), xff.iter().map(|s| s.as_bytes()), &proxies);
            assert_eq!(got, want.parse::<IpAddr>().unwrap(), "{peer} {xff:?}");
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
                forwarded_https(peer.parse().unwrap(), proto.map(str::as_bytes), &proxies),
                *want,
                "{peer} {proto:?}"
            );
        }
    }
}
