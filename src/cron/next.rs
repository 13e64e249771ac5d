//! When a cron job runs next (pure): the original's algorithm, step by step, on
//! local civil time, so existing schedules fire when they did. Fields are −1 for "any".
//! Dates normalise like Go's `time.Date` (31 February is 3 March).

use crate::http::date::{civil_from_days, days_from_civil};

/// A local date and time to the minute (seconds are always 0 in a schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year.
    pub year: i64,
    /// 1-12 (for a schedule, or -1: any).
    pub month: i64,
    /// 1-31 (for a schedule, or -1: any).
    pub day: i64,
    /// 0-23 (for a schedule, or -1: any).
    pub hour: i64,
    /// 0-59 (for a schedule, or -1: any).
    pub minute: i64,
}

impl Civil {
    /// Builds a date, normalising out-of-range fields by carrying into the larger ones.
    pub fn date(year: i64, month: i64, day: i64, hour: i64, minute: i64) -> Civil {
        let months = year * 12 + (month - 1);
        let (y, m) = (months.div_euclid(12), months.rem_euclid(12) + 1);
        let days = days_from_civil(y, m as u32, 1) + (day - 1);
        Civil::from_minutes(days * 1440 + hour * 60 + minute)
    }

    fn from_minutes(total: i64) -> Civil {
        let days = total.div_euclid(1440);
        let rest = total.rem_euclid(1440);
        let (year, month, day) = civil_from_days(days);
        Civil { year, month: i64::from(month), day: i64::from(day), hour: rest / 60, minute: rest % 60 }
    }

    /// Minutes since 1970-01-01 00:00 (of this naive local time).
    pub fn minutes(&self) -> i64 {
        days_from_civil(self.year, self.month as u32, self.day as u32) * 1440 + self.hour * 60 + self.minute
    }

    /// 0 = Sunday.
    pub fn weekday(&self) -> i64 {
        (days_from_civil(self.year, self.month as u32, self.day as u32) + 4).rem_euclid(7)
    }

    fn plus_days(self, n: i64) -> Civil {
        Civil::date(self.year, self.month, self.day + n, self.hour, self.minute)
    }
}

/// A cron schedule: minute, hour, day of month, month, day of week (0 or 7 = Sunday); −1 = any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// 0-59 (for a schedule, or -1: any).
    pub minute: i64,
    /// 0-23 (for a schedule, or -1: any).
    pub hour: i64,
    /// 1-31 (for a schedule, or -1: any).
    pub day: i64,
    /// 1-12 (for a schedule, or -1: any).
    pub month: i64,
    /// 0-6, Sunday 0, or -1: any.
    pub weekday: i64,
}

/// A schedule field out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron {field} must be -1 (any) or {lo}..{hi}, not {value}")]
pub struct ScheduleError {
    /// The field's name (`minute`, `hour`...).
    pub field: &'static str,
    /// What was given.
    pub value: i64,
    /// The smallest allowed value.
    pub lo: i64,
    /// The largest allowed value.
    pub hi: i64,
}

impl Schedule {
    /// Checks the ranges; the error says which field is wrong.
    pub fn new(
        minute: i64,
        hour: i64,
        day: i64,
        month: i64,
        weekday: i64,
    ) -> Result<Schedule, ScheduleError> {
        for (name, v, lo, hi) in [
            ("minute", minute, 0, 59),
            ("hour", hour, 0, 23),
            ("day", day, 1, 31),
            ("month", month, 1, 12),
            ("weekday", weekday, 0, 7),
        ] {
            if v != -1 && !(lo..=hi).contains(&v) {
                return Err(ScheduleError { field: name, value: v, lo, hi });
            }
        }
        Ok(Schedule { minute, hour, day, month, weekday: if weekday == 7 { 0 } else { weekday } })
    }
}

/// The first run after `now` (`now_seconds`: the seconds of `now`'s minute).
pub fn next_run(s: &Schedule, now: Civil, now_seconds: i64) -> Civil {
    let any = |v: i64| v < 0;
    let or = |v: i64, d: i64| if v >= 0 { v } else { d };
    let now_key = now.minutes() * 60 + now_seconds;
    let past = |t: &Civil| t.minutes() * 60 <= now_key;
    let mut t = Civil::date(
        now.year,
        or(s.month, now.month),
        or(s.day, now.day),
        or(s.hour, now.hour),
        or(s.minute, now.minute),
    );
    if past(&t) && any(s.minute) {
        let v = t.minute + 1;
        t = Civil::date(t.year, t.month, t.day, t.hour, v % 60);
        if v >= 60 && any(s.hour) && (t.hour < 23 || any(s.day)) {
            t = Civil::from_minutes(t.minutes() + 60);
        }
    }
    if past(&t) && any(s.hour) {
        let v = now.hour + 1;
        t = Civil::date(t.year, t.month, t.day, v % 24, or(s.minute, 0));
        if v >= 24 && any(s.day) {
            let n = t.plus_days(1);
            if n.day > 1 || any(s.month) {
                t = n;
            }
        }
    }
    if past(&t) && any(s.day) {
        let n = t.plus_days(1);
        if n.day > 1 || any(s.month) {
            t = Civil::date(n.year, or(s.month, n.month), n.day, or(s.hour, 0), or(s.minute, 0));
        }
    }
    if past(&t) && any(s.month) {
        let n = Civil::date(t.year, t.month + 1, t.day, t.hour, t.minute);
        t = Civil::date(n.year, n.month, or(s.day, 1), or(s.hour, 0), or(s.minute, 0));
    }
    if past(&t) {
        t = Civil::date(t.year + 1, or(s.month, 1), or(s.day, 1), or(s.hour, 0), or(s.minute, 0));
    }
    if s.weekday >= 0 && (t.weekday() != s.weekday || past(&t)) {
        let mut d = s.weekday - t.weekday();
        if d <= 0 {
            d += 7;
        }
        t = t.plus_days(d);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn civil(s: &str) -> (Civil, i64) {
        let n: Vec<i64> = s
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap())
            .collect();
        (Civil::date(n[0], n[1], n[2], n[3], n[4]), n.get(5).copied().unwrap_or(0))
    }

    /// The original's behaviour, as observed (and as its source computes).
    #[test]
    fn the_spec_vectors() {
        let a = "2025-01-15 10:30:20";
        let table: &[(&str, [i64; 5], &str)] = &[
            (a, [-1, -1, -1, -1, -1], "2025-01-15 10:31"),
            (a, [30, -1, -1, -1, -1], "2025-01-15 11:30"),
            (a, [45, -1, -1, -1, -1], "2025-01-15 10:45"),
            (a, [0, 3, -1, -1, -1], "2025-01-16 03:00"),
            (a, [0, 12, -1, -1, -1], "2025-01-15 12:00"),
            (a, [15, 10, -1, -1, -1], "2025-01-16 10:15"),
            (a, [0, 0, 1, -1, -1], "2025-02-01 00:00"),
            (a, [0, 0, -1, -1, 0], "2025-01-19 00:00"),
            (a, [0, 9, -1, -1, 3], "2025-01-22 09:00"),
            (a, [0, 11, -1, -1, 3], "2025-01-15 11:00"),
            (a, [0, 0, 31, 2, -1], "2025-03-03 00:00"),
            (a, [0, 0, 1, 1, -1], "2026-01-01 00:00"),
            (a, [-1, 11, -1, -1, -1], "2025-01-15 11:30"),
            (a, [-1, 10, -1, -1, -1], "2025-01-15 10:31"),
            (a, [-1, 9, -1, -1, -1], "2025-01-16 09:00"),
            (a, [5, 4, -1, -1, 7], "2025-01-19 04:05"),
            ("2025-01-15 23:59:30", [-1, -1, -1, -1, -1], "2025-01-16 00:00"),
            ("2025-01-31 23:59:30", [-1, -1, -1, -1, -1], "2025-02-01 00:00"),
            ("2025-01-15 10:59:30", [-1, -1, -1, -1, -1], "2025-01-15 11:00"),
            ("2025-12-31 23:30:00", [0, 0, -1, -1, -1], "2026-01-01 00:00"),
            ("2026-11-25 19:18:05", [0, 0, 31, 2, -1], "2027-03-03 00:00"),
            ("2026-11-25 19:18:05", [5, 4, -1, -1, 7], "2026-11-29 04:05"),
            ("2026-11-25 19:18:05", [-1, -1, -1, -1, -1], "2026-11-25 19:19"),
        ];
        for (now, f, want) in table {
            let (now_c, secs) = civil(now);
            let s = Schedule::new(f[0], f[1], f[2], f[3], f[4]).unwrap();
            assert_eq!(next_run(&s, now_c, secs), civil(want).0, "{now} {f:?}");
        }
    }

    #[test]
    fn dates_normalise_and_weekdays() {
        assert_eq!(Civil::date(2025, 2, 31, 0, 0), Civil::date(2025, 3, 3, 0, 0));
        assert_eq!(Civil::date(2025, 0, 1, 0, 0), Civil::date(2024, 12, 1, 0, 0));
        assert_eq!(Civil::date(2025, 1, 1, 24, 60), Civil::date(2025, 1, 2, 1, 0));
        assert_eq!(Civil::date(2025, 1, 15, 0, 0).weekday(), 3);
        assert_eq!(Civil::date(2026, 11, 29, 0, 0).weekday(), 0);
    }

    #[test]
    fn invalid_fields_are_refused() {
        for f in [
            [60, -1, -1, -1, -1],
            [-1, 24, -1, -1, -1],
            [-1, -1, 0, -1, -1],
            [-1, -1, 32, -1, -1],
            [-1, -1, -1, 13, -1],
            [-1, -1, -1, 0, -1],
            [-1, -1, -1, -1, 8],
            [-2, -1, -1, -1, -1],
        ] {
            assert!(Schedule::new(f[0], f[1], f[2], f[3], f[4]).is_err(), "{f:?}");
        }
        assert_eq!(Schedule::new(0, 0, 1, 1, 7).unwrap().weekday, 0);
    }
}
