//! HTTP dates (RFC 9110 §5.6.7 IMF-fixdate), formatted without a time library.
//!
//! The `Date` header is cached per core thread and re-rendered once a second: formatting a date
//! per response costs more than the rest of a small response head.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats `secs` since the Unix epoch as an IMF-fixdate.
pub fn format_http_date(secs: u64) -> [u8; DATE_LEN] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days.rem_euclid(7)) as usize]);
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year.clamp(0, 9999) as u32;
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    two(&mut out[17..19], (rem / 3600) as u32);
    two(&mut out[20..22], ((rem / 60) % 60) as u32);
    two(&mut out[23..25], (rem % 60) as u32);
    out
}

fn two(dst: &mut [u8], v: u32) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an HTTP-date in any of the three forms a recipient must accept (RFC 9110 §5.6.7):
/// IMF-fixdate, the obsolete RFC 850 form and asctime. Returns seconds since the Unix epoch.
pub fn parse_http_date(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?.trim();
    let num = |t: &str| -> Option<u32> {
        (!t.is_empty() && t.len() <= 4 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok())?
    };
    let month = |t: &str| MONTHS.iter().position(|m| m.as_slice() == t.as_bytes()).map(|i| i as u32 + 1);
    let parts: Vec<&str> = s.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let (day, mon, year, time) = match parts.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [_, d, m, y, t, "GMT"] if s.as_bytes().get(3) == Some(&b',') => (num(d)?, month(m)?, num(y)?, *t),
        // Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, m, y) = (num(it.next()?)?, month(it.next()?)?, num(it.next()?)?);
            if it.next().is_some() {
                return None;
            }
            // RFC 9110: a two-digit year more than 50 years in the future is in the past century.
            (
                d,
                m,
                if y < 70 {
                    2000 + y
                } else if y < 100 {
                    1900 + y
                } else {
                    y
                },
                *t,
            )
        }
        // Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] => (num(d)?, month(m)?, num(y)?, *t),
        _ => return None,
    };
    let mut hms = time.split(':');
    let (h, mi, se) = (num(hms.next()?)?, num(hms.next()?)?, num(hms.next()?)?);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(i64::from(year), mon, day);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + se)).ok()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

thread_local! {
    static CACHED: Cell<(u64, [u8; DATE_LEN])> = const { Cell::new((u64::MAX, [0; DATE_LEN])) };
}

/// The current date, rendered at most once a second per thread.
pub fn now_http_date() -> [u8; DATE_LEN] {
    let now = now_secs();
    CACHED.with(|c| {
        let (secs, text) = c.get();
        if secs == now {
            text
        } else {
            let text = format_http_date(now);
            c.set((now, text));
            text
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        let table: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_798_761_599, "Thu, 31 Dec 2026 23:59:59 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
        ];
        for (secs, want) in table {
            assert_eq!(std::str::from_utf8(&format_http_date(*secs)).unwrap(), *want, "{secs}");
        }
    }

    #[test]
    fn parses_the_three_forms() {
        let table: &[(&str, Option<u64>)] = &[
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some(784_111_777)),
            ("Sun Nov  6 08:49:37 1994", Some(784_111_777)),
            ("Thu, 31 Dec 2026 23:59:59 GMT", Some(1_798_761_599)),
            ("Tue, 29 Feb 2000 00:00:00 GMT", Some(951_782_400)),
            ("Sun, 06 Nov 1994 08:49:37 UTC", None),
            ("Sun, 06 Nov 1994 25:49:37 GMT", None),
            ("Sun, 06 Foo 1994 08:49:37 GMT", None),
            ("yesterday", None),
            ("", None),
            ("Sun, 06 Nov 1994 08:49 GMT", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_http_date(text.as_bytes()), *want, "{text}");
        }
        for secs in [0, 86_399, 86_400, 951_782_400, 4_107_542_400] {
            assert_eq!(parse_http_date(&format_http_date(secs)), Some(secs));
        }
    }

    #[test]
    fn cache_returns_the_current_second() {
        let before = now_secs();
        let got = now_http_date();
        let after = now_secs();
        assert!(got == format_http_date(before) || got == format_http_date(after));
        // A second call in the same second is served from the cache and is identical.
        let again = now_http_date();
        assert!(again == got || now_secs() != after);
    }
}
