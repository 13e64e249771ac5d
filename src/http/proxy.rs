//! The PROXY protocol header (HAProxy's, versions 1 and 2): what a load balancer sends at the
//! start of a TCP connection to say whose connection it is passing on.
//!
//! Version 1 is one text line, `PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n`, at most 107
//! bytes; version 2 a 16-byte binary head (a 12-byte signature, version and command, family,
//! length) and that many bytes of addresses and TLVs. Parsing is strict: an exact grammar, valid
//! addresses of the family named, ports without leading zeros, bounded lengths, TLVs that tile
//! the rest exactly. Pure: bytes in, a verdict out; the connection decides whom to believe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's start.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Version 1's longest line, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;
/// Longest version 2 header we take: the fixed 16 bytes and up to this many more (the
/// addresses take at most 216; the rest is TLVs, which balancers keep small).
pub const V2_MAX_BODY: usize = 2048;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection from `source` to `destination`.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// No address to use (v1 `UNKNOWN`, v2 `LOCAL`, or a family other than TCP over IPv4/6):
    /// the connection's own peer stands.
    Unknown,
}

/// Why a header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Not the grammar of either version.
    #[error("malformed PROXY protocol header")]
    Malformed,
    /// Longer than a header may be.
    #[error("PROXY protocol header too long")]
    TooLong,
}

/// How the start of a connection reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Too few bytes to tell.
    NeedMore,
    /// No PROXY header: the bytes are the first request.
    Http,
    /// A complete header of this many bytes.
    Header(Header, usize),
}

/// Reads the start of a connection's bytes: a complete PROXY header, the start of one (more
/// bytes needed), or none at all.
pub fn parse(buf: &[u8]) -> Result<Start, ProxyError> {
    if starts_as(buf, V1_PREFIX) {
        return if buf.len() < V1_PREFIX.len() { Ok(Start::NeedMore) } else { parse_v1(buf) };
    }
    if starts_as(buf, V2_SIGNATURE) {
        return if buf.len() < V2_SIGNATURE.len() { Ok(Start::NeedMore) } else { parse_v2(buf) };
    }
    Ok(Start::Http)
}

/// Whether `buf` and `prefix` agree on their common length (an empty `buf` agrees: undecided).
fn starts_as(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Start, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        // No CRLF within the limit: wait for it, unless the limit has been reached, or a bare
        // LF or CR says it will never come right.
        if window.len() >= V1_MAX {
            return Err(ProxyError::TooLong);
        }
        if window.iter().enumerate().any(|(i, &b)| b == b'\n' || (b == b'\r' && i + 1 < window.len())) {
            return Err(ProxyError::Malformed);
        }
        return Ok(Start::NeedMore);
    };
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..end]).map_err(|_| ProxyError::Malformed)?;
    let header = v1_fields(line)?;
    Ok(Start::Header(header, end + 2))
}

fn v1_fields(line: &str) -> Result<Header, ProxyError> {
    let bad = ProxyError::Malformed;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        // The rest of an UNKNOWN line is to be ignored, whatever it holds (printable text).
        return if line.bytes().all(|b| (0x20..0x7f).contains(&b)) { Ok(Header::Unknown) } else { Err(bad) };
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [family, src, dst, sport, dport] = fields[..] else { return Err(bad) };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (strict_v4(src)?.into(), strict_v4(dst)?.into()),
        "TCP6" => (
            src.parse::<Ipv6Addr>().map_err(|_| bad)?.into(),
            dst.parse::<Ipv6Addr>().map_err(|_| bad)?.into(),
        ),
        _ => return Err(bad),
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(src, port(sport)?),
        destination: SocketAddr::new(dst, port(dport)?),
    })
}

/// Dotted-quad IPv4, four decimal parts without leading zeros (Rust's parser agrees).
fn strict_v4(s: &str) -> Result<Ipv4Addr, ProxyError> {
    s.parse::<Ipv4Addr>().map_err(|_| ProxyError::Malformed)
}

/// A port: 0 to 65535 in decimal, no sign, no leading zero.
fn port(s: &str) -> Result<u16, ProxyError> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::Malformed);
    }
    s.parse().map_err(|_| ProxyError::Malformed)
}

fn parse_v2(buf: &[u8]) -> Result<Start, ProxyError> {
    let bad = ProxyError::Malformed;
    if buf.len() < 16 {
        // The version byte can be judged before the rest arrives.
        if buf.len() > 12 && buf[12] >> 4 != 2 {
            return Err(bad);
        }
        return Ok(Start::NeedMore);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if version != 2 || command > 1 || family > 3 || transport > 2 {
        return Err(bad);
    }
    if len > V2_MAX_BODY {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < 16 + len {
        return Ok(Start::NeedMore);
    }
    let body = &buf[16..16 + len];
    // The addresses' size for the family; what follows them is TLVs.
    let addresses = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body.len() < addresses {
        return Err(bad);
    }
    check_tlvs(&body[addresses..])?;
    let consumed = 16 + len;
    // LOCAL (the balancer's own connection, a health check): its peer stands; so does any
    // family other than TCP over IPv4 or IPv6.
    if command == 0 || transport != 1 {
        return Ok(Start::Header(Header::Unknown, consumed));
    }
    let header = match family {
        1 => {
            let ip = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
            }
        }
        2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
            }
        }
        _ => Header::Unknown,
    };
    Ok(Start::Header(header, consumed))
}

/// TLVs (a type byte, a 16-bit length, the value) must tile the bytes exactly; their contents
/// are not used.
fn check_tlvs(mut rest: &[u8]) -> Result<(), ProxyError> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(ProxyError::Malformed);
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        if rest.len() < 3 + len {
            return Err(ProxyError::Malformed);
        }
        rest = &rest[3 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> Header {
        Header::Proxied { source: addr(src), destination: addr(dst) }
    }

    /// A version 2 header: command, family/transport byte, body.
    fn v2(command: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(fam);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn v2_tcp4(tlvs: &[u8]) -> Vec<u8> {
        let mut body = vec![172, 19, 0, 1, 172, 19, 0, 3, 0xa6, 0x52, 0x00, 0x50];
        body.extend_from_slice(tlvs);
        v2(1, 0x11, &body)
    }

    #[test]
    fn version_1() {
        let table: &[(&[u8], Result<Start, ProxyError>)] = &[
            (
                b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /",
                Ok(Start::Header(proxied("192.168.0.1:56324", "192.168.0.11:443"), 47)),
            ),
            (
                b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n",
                Ok(Start::Header(proxied("[2001:db8::1]:65535", "[::1]:0"), 36)),
            ),
            (b"PROXY UNKNOWN\r\n", Ok(Start::Header(Header::Unknown, 15))),
            (b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n", Ok(Start::Header(Header::Unknown, 31))),
            (b"PROXY TCP4 192.168.0.1 192.16", Ok(Start::NeedMore)),
            (b"PROX", Ok(Start::NeedMore)),
            (b"", Ok(Start::NeedMore)),
            (b"GET / HTTP/1.1\r\n", Ok(Start::Http)),
            (b"PROXZ", Ok(Start::Http)),
            // gunicorn's pp_01: a truncated address.
            (b"PROXY TCP4 192.168.0.1 192.16...\r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 080\r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 65536\r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 80 443\r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 ::1 ::1 80 443\r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP6 1.2.3.4 5.6.7.8 80 443\r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 80 443\r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 \r\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n", Err(ProxyError::Malformed)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r443\r\n", Err(ProxyError::Malformed)),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 80 443\r\n", Err(ProxyError::Malformed)),
            (b"PROXY UNKNOWN\x01\r\n", Err(ProxyError::Malformed)),
            (b"PROXY \r\n", Err(ProxyError::Malformed)),
        ];
        for (input, want) in table {
            assert_eq!(parse(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        let just_fits = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 91], b"\r\n"].concat();
        assert_eq!(just_fits.len(), V1_MAX);
        assert_eq!(parse(&just_fits), Ok(Start::Header(Header::Unknown, V1_MAX)));
    }

    #[test]
    fn version_2() {
        // gunicorn's pp_04 and pp_05.
        let tcp4 = v2_tcp4(&[]);
        assert_eq!(parse(&tcp4), Ok(Start::Header(proxied("172.19.0.1:42578", "172.19.0.3:80"), 28)));
        let mut six = vec![0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x56, 0x78];
        six.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x56, 0x78]);
        six[31] = 0x79;
        six.extend_from_slice(&[0xa6, 0x52, 0x00, 0x50]);
        let tcp6 = v2(1, 0x21, &six);
        assert_eq!(parse(&tcp6), Ok(Start::Header(proxied("[ff02::5678]:42578", "[ff02::5679]:80"), 52)));
        // TLVs are skipped when they tile the rest; what follows the header is left.
        let with_tlvs =
            [v2_tcp4(&[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00]), b"GET".to_vec()].concat();
        assert_eq!(parse(&with_tlvs), Ok(Start::Header(proxied("172.19.0.1:42578", "172.19.0.3:80"), 36)));
        // LOCAL, UNSPEC, UDP and unix: the peer stands.
        assert_eq!(parse(&v2(0, 0x11, &tcp4[16..])), Ok(Start::Header(Header::Unknown, 28)));
        assert_eq!(parse(&v2(1, 0x00, &[])), Ok(Start::Header(Header::Unknown, 16)));
        assert_eq!(parse(&v2(1, 0x12, &tcp4[16..])), Ok(Start::Header(Header::Unknown, 28)));
        assert_eq!(parse(&v2(1, 0x31, &[0; 216])), Ok(Start::Header(Header::Unknown, 232)));
        let bad: &[Vec<u8>] = &[
            // Version 1 in the binary form, a command 2, a family 4, a transport 3.
            [&V2_SIGNATURE[..], &[0x11, 0x11, 0, 12], &tcp4[16..]].concat(),
            v2(2, 0x11, &tcp4[16..]),
            v2(1, 0x41, &tcp4[16..]),
            v2(1, 0x13, &tcp4[16..]),
            // Shorter than its family's addresses; TLVs that do not tile.
            v2(1, 0x11, &tcp4[16..27]),
            v2(1, 0x21, &tcp4[16..]),
            v2_tcp4(&[0x01, 0x00]),
            v2_tcp4(&[0x01, 0x00, 0x05, b'x']),
        ];
        for b in bad {
            assert_eq!(parse(b), Err(ProxyError::Malformed), "{b:?}");
        }
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyError::TooLong));
        // Split anywhere, a header needs more until it is whole.
        for cut in 0..tcp6.len() {
            assert_eq!(parse(&tcp6[..cut]), Ok(Start::NeedMore), "cut {cut}");
        }
        assert_eq!(parse(&[&V2_SIGNATURE[..], &[0x11]].concat()), Err(ProxyError::Malformed));
    }
}
