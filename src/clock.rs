//! Wall-clock time as text: RFC 3339 timestamps for log lines and for the "sent at" mark on
//! stored messages, computed with plain calendar arithmetic.
//!
//! This module owns turning seconds since the Unix epoch into a UTC date and time. It must
//! not know about time zones, daylight saving or leap seconds (there is no time zone database
//! in a std-only build, and UTC needs none), and it must not be used for measuring durations:
//! timeouts use `std::time::Instant`, which cannot jump when the wall clock is reset.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: u64 = 86_400;

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC. Times before 1970 become the epoch: the server
/// never has a reason to print them, and a clamped value is easier to spot than a panic.
pub fn rfc3339(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

/// [`rfc3339`] as a `Display`, for writing a time without allocating it (a log line).
pub struct Rfc3339(pub SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since_epoch = self.0.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        // Milliseconds are truncated, not rounded, so that a time never prints as the next
        // second and always agrees with `rfc3339_secs` of the same instant.
        write!(
            f,
            "{}.{:03}Z",
            DateTime(since_epoch.as_secs()),
            since_epoch.subsec_millis()
        )
    }
}

/// `unix_secs` as `YYYY-MM-DDTHH:MM:SSZ` in UTC.
pub fn rfc3339_secs(unix_secs: u64) -> String {
    format!("{}Z", DateTime(unix_secs))
}

/// Seconds since the Unix epoch now, or 0 if the system clock is set before 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS`, without a zone suffix. Years past
/// 9999 print with more digits, which RFC 3339 does not allow, but no real clock will
/// reach them.
struct DateTime(u64);

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cannot truncate: u64::MAX / 86_400 is below 2^48.
        let days = (self.0 / SECS_PER_DAY) as i64;
        let secs_of_day = self.0 % SECS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        )
    }
}

/// The proleptic Gregorian (year, month 1-12, day 1-31) of `days` after 1970-01-01
/// (negative for earlier days).
///
/// This is Howard Hinnant's `civil_from_days` from "chrono-Compatible Low-Level Date
/// Algorithms" (<https://howardhinnant.github.io/date_algorithms.html>). It counts from
/// 0000-03-01 so that the leap day falls at the end of each year, and works in 400-year eras,
/// which repeat exactly, so no table of month lengths or loop over years is needed.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Splitting into eras before shifting the origin to 0000-03-01 (719,468 days before
    // 1970-01-01) keeps every intermediate in range, even for i64::MIN and i64::MAX.
    let shifted = days.rem_euclid(146_097) + 719_468;
    let era = days.div_euclid(146_097) + shifted / 146_097;
    let day_of_era = shifted % 146_097; // [0, 146096]
    // The subtractions undo the leap days so far in the era, making a plain division by 365
    // exact: one every 4 years (1460 days), none every 100, one again at the era's end.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // [0, 11], 0 is March
    let day = day_of_year - (153 * march_month + 2) / 5 + 1; // [1, 31]
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    // January and February belong to the next calendar year in a March-based count.
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_secs_known_instants() {
        // Each expected string was checked with `date -u -d @N +%Y-%m-%dT%H:%M:%SZ`.
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
            (1_234_567_890, "2009-02-13T23:31:30Z"),
        ];
        for (secs, expected) in cases {
            assert_eq!(rfc3339_secs(secs), expected, "{secs}");
        }
    }

    #[test]
    fn rfc3339_milliseconds() {
        let cases = [
            (UNIX_EPOCH, "1970-01-01T00:00:00.000Z"),
            (
                UNIX_EPOCH + Duration::from_millis(1_234_567_890_123),
                "2009-02-13T23:31:30.123Z",
            ),
            (
                UNIX_EPOCH + Duration::from_millis(7),
                "1970-01-01T00:00:00.007Z",
            ),
            (
                UNIX_EPOCH + Duration::from_nanos(59_999_999_999),
                "1970-01-01T00:00:59.999Z",
            ),
            (
                UNIX_EPOCH - Duration::from_secs(1),
                "1970-01-01T00:00:00.000Z",
            ),
        ];
        for (time, expected) in cases {
            assert_eq!(rfc3339(time), expected);
        }
    }

    #[test]
    fn civil_from_days_known_days() {
        let cases = [
            (-719_468, (0, 3, 1)),
            (-1, (1969, 12, 31)),
            (0, (1970, 1, 1)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (2_932_896, (9999, 12, 31)),
        ];
        for (days, expected) in cases {
            assert_eq!(civil_from_days(days), expected, "day {days}");
        }
    }

    #[test]
    fn civil_from_days_extremes_stay_in_range() {
        for days in [i64::MIN, i64::MIN + 1, i64::MAX - 1, i64::MAX] {
            let (_, month, day) = civil_from_days(days);
            assert!(
                (1..=12).contains(&month) && (1..=31).contains(&day),
                "day {days}"
            );
        }
    }

    fn is_leap(year: i64) -> bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    fn days_in_month(year: i64, month: u32) -> u32 {
        match month {
            2 if is_leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// The calendar day after `(year, month, day)`, by the textbook rules.
    fn next_day((year, month, day): (i64, u32, u32)) -> (i64, u32, u32) {
        if day < days_in_month(year, month) {
            (year, month, day + 1)
        } else if month < 12 {
            (year, month + 1, 1)
        } else {
            (year + 1, 1, 1)
        }
    }

    #[test]
    fn every_day_from_1970_to_2400_follows_the_last() {
        let mut expected = (1970, 1, 1);
        let mut days = 0;
        while expected.0 <= 2400 {
            let date = civil_from_days(days);
            assert_eq!(date, expected, "day {days}");
            assert!((1..=12).contains(&date.1), "day {days}: month {}", date.1);
            assert!(date.2 >= 1 && date.2 <= days_in_month(date.0, date.1));
            expected = next_day(date);
            days += 1;
        }
        // 431 years, of which 105 are leap (1972..=2400 by fours, less 2100, 2200 and 2300).
        assert_eq!(days, 431 * 365 + 105);
    }

    #[test]
    fn unix_now_reads_the_system_clock() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let now = unix_now();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(before.as_secs() <= now && now <= after.as_secs());
    }
}
