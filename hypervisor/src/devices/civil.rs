//! Unix time to and from the proleptic Gregorian calendar, for the RTC. The day-number
//! conversions follow Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms
//! ("chrono-Compatible Low-Level Date Algorithms"): shift the year to start in March so the
//! leap day is the last day of the year, then count 400-year eras of 146097 days.

/// A UTC date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1-12.
    pub month: u8,
    /// 1-31.
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// Seconds outside ±2^40 (about 34,800 years) are clamped, so day arithmetic cannot overflow.
const LIMIT: i64 = 1 << 40;

/// Days since 1970-01-01 of `year`-`month`-`day`. A day past the month's end carries into
/// the following month, as the arithmetic falls out.
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let m = i64::from(month.clamp(1, 12));
    let y = year.clamp(-LIMIT, LIMIT) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // 0..=399
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of day `days` since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days.clamp(-LIMIT, LIMIT) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (era * 400 + yoe + i64::from(month <= 2), month, day)
}

/// Day of the week of day `days` since 1970-01-01: 0 = Sunday.
pub fn weekday(days: i64) -> u8 {
    (days + 4).rem_euclid(7) as u8 // 1970-01-01 was a Thursday
}

impl Civil {
    /// The civil time of Unix time `secs`.
    pub fn from_unix(secs: i64) -> Self {
        let secs = secs.clamp(-LIMIT * 86_400, LIMIT * 86_400);
        let (days, tod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: (tod / 3600) as u8,
            minute: (tod / 60 % 60) as u8,
            second: (tod % 60) as u8,
        }
    }

    /// Unix time; fields out of range carry arithmetically.
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// Day of the week, 0 = Sunday.
    pub fn weekday(&self) -> u8 {
        weekday(days_from_civil(self.year, self.month, self.day))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn civil(year: i64, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Civil {
        Civil { year, month, day, hour, minute, second }
    }

    #[test]
    fn known_dates() {
        // Values from Python's datetime.
        for (c, unix, wd) in [
            (civil(2026, 12, 4, 14, 9, 33), 1_796_393_373, 5),
            (civil(2000, 2, 28, 23, 59, 59), 951_782_399, 1),
            (civil(2100, 2, 28, 23, 59, 59), 4_107_542_399, 0),
            (civil(1999, 12, 31, 23, 59, 59), 946_684_799, 5),
            (civil(2024, 2, 29, 0, 0, 0), 1_709_164_800, 4),
            (civil(1970, 1, 1, 0, 0, 0), 0, 4),
            (civil(1900, 3, 1, 0, 0, 0), -2_203_891_200, 4),
        ] {
            assert_eq!(c.to_unix(), unix, "{c:?}");
            assert_eq!(Civil::from_unix(unix), c);
            assert_eq!(c.weekday(), wd, "{c:?}");
        }
    }

    #[test]
    fn leap_years() {
        assert_eq!(Civil::from_unix(951_782_399 + 1), civil(2000, 2, 29, 0, 0, 0), "2000 leaps");
        assert_eq!(Civil::from_unix(4_107_542_399 + 1), civil(2100, 3, 1, 0, 0, 0), "2100 not");
        assert_eq!(days_from_civil(2025, 2, 29), days_from_civil(2025, 3, 1), "carries");
    }

    #[test]
    fn every_day_round_trips_for_1000_years() {
        let start = days_from_civil(1600, 1, 1);
        let mut prev = civil_from_days(start - 1);
        for d in start..start + 366_000 {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
            assert!((y, m, day) > prev);
            prev = (y, m, day);
        }
    }

    #[test]
    fn extremes_do_not_overflow() {
        for s in [i64::MIN, i64::MAX, -1, 1 << 62] {
            let c = Civil::from_unix(s);
            let _ = c.to_unix();
            let _ = c.weekday();
        }
        let _ = days_from_civil(i64::MAX, 0, 255);
        let _ = days_from_civil(i64::MIN, 13, 0);
    }
}
