//! The request corpus (`tests/requests/valid`, `invalid`), fed to the parser and to the real
//! server, whole and split at random points: a split must never change the outcome.
//!
//! File format: `# key: value` lines first (the expectation), then the raw request written with
//! escapes (`\r`, `\n`, `\t`, `\\`, `\xHH`); the file's own line breaks are not part of it.

mod common;

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use common::{Rng, Server, closed_within, read_response};
use wsgo::http::body::{BodyState, Step};
use wsgo::http::{RequestHead, parse_head};

struct Case {
    name: String,
    meta: BTreeMap<String, Vec<u8>>,
    raw: Vec<u8>,
}

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("\\xHH escape"));
            }
            other => panic!("unknown escape \\{other:?}"),
        }
    }
    out
}

fn load(dir: &str) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("requests").join(dir);
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    names
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut meta = BTreeMap::new();
            let mut raw = String::new();
            for line in text.lines() {
                match line.strip_prefix("# ") {
                    Some(m) if raw.is_empty() => {
                        let (k, v) =
                            m.split_once(": ").map_or((m.trim_end_matches(':'), ""), |(k, v)| (k, v));
                        meta.insert(k.to_string(), unescape(v));
                    }
                    _ => raw.push_str(line),
                }
            }
            Case { name: path.file_name().unwrap().to_string_lossy().into_owned(), meta, raw: unescape(&raw) }
        })
        .collect()
}

/// What the parser makes of a request: the head and the decoded body, or the error status.
#[derive(Debug, PartialEq)]
enum Parsed {
    Ok { method: Vec<u8>, path: Vec<u8>, query: Vec<u8>, minor: u8, host: Vec<u8>, body: Vec<u8> },
    Err(u16),
}

/// Feeds `raw` to the parser in the given pieces, as a connection would receive it.
fn parse_in_pieces(raw: &[u8], cuts: &[usize]) -> Parsed {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut next_piece = |buf: &mut BytesMut| -> bool {
        if fed >= raw.len() {
            return false;
        }
        let end = cuts.iter().copied().find(|&c| c > fed).unwrap_or(raw.len()).min(raw.len());
        buf.extend_from_slice(&raw[fed..end]);
        fed = end;
        true
    };
    let head: RequestHead = loop {
        match parse_head(&buf) {
            Err(e) => return Parsed::Err(e.status()),
            Ok(Some((p, len))) => break p.attach(buf.split_to(len).freeze()),
            Ok(None) => assert!(next_piece(&mut buf), "incomplete head"),
        }
    };
    let mut state = BodyState::new(head.body);
    let mut body = Vec::new();
    loop {
        match state.take(&mut buf, 5) {
            Err(e) => return Parsed::Err(e.status()),
            Ok(Step::Data(d)) => body.extend_from_slice(&d),
            Ok(Step::Done) => break,
            Ok(Step::NeedMore) => assert!(next_piece(&mut buf), "incomplete body"),
        }
    }
    Parsed::Ok {
        method: head.method().to_vec(),
        path: head.path().unwrap_or(b"").to_vec(),
        query: head.query().unwrap_or(b"").to_vec(),
        minor: head.minor,
        host: head.host.map(|h| head.bytes(h).to_vec()).unwrap_or_default(),
        body,
    }
}

fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..1 + rng.below(6)).map(|_| rng.below(len)).collect();
    cuts.sort();
    cuts
}

#[test]
fn corpus_is_large_enough() {
    assert!(load("valid").len() >= 40);
    assert!(load("invalid").len() >= 40);
}

#[test]
fn valid_requests_parse_the_same_whole_and_split() {
    let mut rng = Rng(0x5eed);
    for case in load("valid") {
        let whole = parse_in_pieces(&case.raw, &[]);
        let Parsed::Ok { method, path, query, minor, host, body } = &whole else {
            panic!("{}: {whole:?}", case.name)
        };
        let m = &case.meta;
        assert_eq!(method, &m["method"], "{}", case.name);
        assert_eq!(path, &m["path"], "{}", case.name);
        assert_eq!(query, &m["query"], "{}", case.name);
        assert_eq!(format!("HTTP/1.{minor}").as_bytes(), &m["protocol"][..], "{}", case.name);
        assert_eq!(host, &m["host"], "{}", case.name);
        assert_eq!(body, &m["body"], "{}", case.name);
        let every_byte: Vec<usize> = (1..case.raw.len()).collect();
        assert_eq!(parse_in_pieces(&case.raw, &every_byte), whole, "{} byte by byte", case.name);
        for _ in 0..20 {
            let cuts = random_cuts(&mut rng, case.raw.len());
            assert_eq!(parse_in_pieces(&case.raw, &cuts), whole, "{} cut at {cuts:?}", case.name);
        }
    }
}

/// The property, exhaustively for one and two cuts: every valid request parses the same split at
/// any single point, and at any pair of points (pairs sampled on a grid for the longer cases).
#[test]
fn valid_requests_parse_the_same_split_at_any_points() {
    for case in load("valid") {
        let whole = parse_in_pieces(&case.raw, &[]);
        let n = case.raw.len();
        for a in 1..n {
            assert_eq!(parse_in_pieces(&case.raw, &[a]), whole, "{} cut at {a}", case.name);
        }
        let step = (n / 40).max(1);
        for a in (1..n).step_by(step) {
            for b in (a + 1..n).step_by(step) {
                assert_eq!(parse_in_pieces(&case.raw, &[a, b]), whole, "{} cut at {a},{b}", case.name);
            }
        }
    }
}

#[test]
fn invalid_requests_fail_the_same_whole_and_split() {
    let mut rng = Rng(0xbad);
    for case in load("invalid") {
        let status: u16 = String::from_utf8(case.meta["status"].clone()).unwrap().parse().unwrap();
        assert_eq!(parse_in_pieces(&case.raw, &[]), Parsed::Err(status), "{}", case.name);
        for _ in 0..20 {
            let cuts = random_cuts(&mut rng, case.raw.len());
            assert_eq!(
                parse_in_pieces(&case.raw, &cuts),
                Parsed::Err(status),
                "{} cut at {cuts:?}",
                case.name
            );
        }
    }
}

/// Sends `raw` to the server in pieces (with short pauses so they arrive apart).
fn send_in_pieces(s: &mut std::net::TcpStream, raw: &[u8], cuts: &[usize]) {
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&raw.len())) {
        if cut <= from {
            continue;
        }
        if s.write_all(&raw[from..cut]).is_err() {
            return;
        }
        from = cut;
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn json_field(text: &str, key: &str) -> String {
    // The test app answers with json.dumps of plain strings; find `"key": "value"`.
    let needle = format!("\"{key}\": \"");
    let start = text.find(&needle).unwrap_or_else(|| panic!("no {key} in {text}")) + needle.len();
    let mut out = String::new();
    let mut chars = text[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(c) => out.push(c),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| c as u32 as u8).collect()
}

#[test]
fn the_server_agrees_with_the_corpus() {
    let server = Server::start(&[]);
    let mut rng = Rng(42);
    for case in load("valid") {
        for split in [false, true] {
            let cuts = if split { random_cuts(&mut rng, case.raw.len()) } else { Vec::new() };
            let mut s = server.connect();
            send_in_pieces(&mut s, &case.raw, &cuts);
            let mut r = BufReader::new(s);
            let mut resp =
                read_response(&mut r, false).unwrap_or_else(|| panic!("{}: no response", case.name));
            while resp.status == 100 {
                resp = read_response(&mut r, false).unwrap();
            }
            assert_eq!(resp.status, 200, "{} (cuts {cuts:?}): {}", case.name, resp.text());
            let text = resp.text();
            for (key, field) in [
                ("method", "method"),
                ("path", "path"),
                ("query", "query"),
                ("protocol", "protocol"),
                ("host", "host"),
                ("body", "body"),
            ] {
                assert_eq!(latin1(&json_field(&text, field)), case.meta[key], "{} {key}: {text}", case.name);
            }
            let headers = String::from_utf8(case.meta["headers"].clone()).unwrap();
            let want: Vec<String> = headers.split(',').map(|h| format!("\"{h}\"")).collect();
            assert!(text.contains(&format!("\"headers\": [{}]", want.join(", "))), "{}: {text}", case.name);
        }
    }
    for case in load("invalid") {
        let status = String::from_utf8(case.meta["status"].clone()).unwrap();
        for split in [false, true] {
            let cuts = if split { random_cuts(&mut rng, case.raw.len()) } else { Vec::new() };
            let mut s = server.connect();
            send_in_pieces(&mut s, &case.raw, &cuts);
            let mut r = BufReader::new(s);
            let resp = read_response(&mut r, false).unwrap_or_else(|| panic!("{}: no response", case.name));
            assert_eq!(resp.status.to_string(), status, "{} (cuts {cuts:?})", case.name);
            assert_eq!(resp.header("connection"), Some("close"), "{}", case.name);
            assert!(closed_within(&mut r, Duration::from_secs(3)), "{}: connection left open", case.name);
        }
    }
    assert_eq!(common::get(&server, "/").status, 200);
}
