//! Local time: the access log's timestamps and cron schedules follow the host's time zone.

/// A local civil time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// The year, e.g. 2026.
    pub year: i64,
    /// 1-12.
    pub month: i64,
    /// 1-31.
    pub day: i64,
    /// 0-23.
    pub hour: i64,
    /// 0-59.
    pub minute: i64,
    /// 0-60.
    pub second: i64,
    /// Offset from UTC in seconds.
    pub offset: i64,
}

/// The local time of a Unix time, or `None` if the C library cannot say.
pub fn local(secs: i64) -> Option<LocalTime> {
    // SAFETY: localtime_r writes into the zeroed tm we own and reads the time_t we pass.
    let tm = unsafe {
        let t: libc::time_t = secs;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(LocalTime {
        year: i64::from(tm.tm_year) + 1900,
        month: i64::from(tm.tm_mon) + 1,
        day: i64::from(tm.tm_mday),
        hour: i64::from(tm.tm_hour),
        minute: i64::from(tm.tm_min),
        second: i64::from(tm.tm_sec),
        offset: tm.tm_gmtoff,
    })
}

/// The Unix time of a local civil time (normalised as mktime(3) does: minute 60 is the next hour).
pub fn unix_of_local(year: i64, month: i64, day: i64, hour: i64, minute: i64) -> i64 {
    // SAFETY: mktime reads and normalises the tm we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = (year - 1900) as i32;
        tm.tm_mon = (month - 1) as i32;
        tm.tm_mday = day as i32;
        tm.tm_hour = hour as i32;
        tm.tm_min = minute as i32;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_round_trips() {
        let t = 1_780_000_000;
        let l = local(t).unwrap();
        assert_eq!(unix_of_local(l.year, l.month, l.day, l.hour, l.minute) + l.second, t);
        assert!((1..=12).contains(&l.month) && (0..60).contains(&l.minute));
    }
}
