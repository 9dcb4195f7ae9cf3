//! Event time: nanoseconds since the Unix epoch (UTC), epoch-aligned bins, and a fast, strict
//! RFC 3339 parser for the timestamps Defender writes (`2025-12-22T09:55:01.1234567Z`).
//!
//! Nanoseconds rather than seconds because Defender timestamps carry 100 ns ticks and the
//! duplicate key (DeviceName, Timestamp, ReportId) must compare them exactly.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Nanos = i64;

pub const NANOS_PER_SEC: i64 = 1_000_000_000;
pub const NANOS_PER_MIN: i64 = 60 * NANOS_PER_SEC;
pub const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MIN;
pub const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

/// Width of a time bin. Bins are aligned to the Unix epoch, which is what KQL's `bin(t, 5m)` does
/// for any width that divides a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinWidth(Nanos);

impl BinWidth {
    /// Five minutes: the seed rule's `timeBin`.
    pub const FIVE_MINUTES: BinWidth = BinWidth(5 * NANOS_PER_MIN);

    /// A bin width of whole seconds. Errors unless it is positive and divides a day, so that bins
    /// line up across days (needed for same-time-of-day baselines).
    pub fn from_secs(secs: i64) -> Result<Self, String> {
        if secs <= 0 {
            return Err(format!("bin width must be positive, got {secs}s"));
        }
        if 86_400 % secs != 0 {
            return Err(format!("bin width {secs}s does not divide a day (86400s)"));
        }
        Ok(BinWidth(secs * NANOS_PER_SEC))
    }

    pub fn nanos(self) -> Nanos {
        self.0
    }

    pub fn secs(self) -> i64 {
        self.0 / NANOS_PER_SEC
    }

    /// Index of the bin holding `t` (floor division, so times before 1970 work too).
    pub fn index(self, t: Nanos) -> i64 {
        t.div_euclid(self.0)
    }

    /// Start time of bin `index`.
    pub fn start(self, index: i64) -> Nanos {
        index.saturating_mul(self.0)
    }

    /// Start of the bin holding `t`.
    pub fn floor(self, t: Nanos) -> Nanos {
        self.start(self.index(t))
    }

    /// Number of bins in a day.
    pub fn per_day(self) -> i64 {
        NANOS_PER_DAY / self.0
    }
}

impl Default for BinWidth {
    fn default() -> Self {
        BinWidth::FIVE_MINUTES
    }
}

/// Why a timestamp did not parse. Kept small and `Copy` so the hot path can return it cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("not an RFC 3339 date-time")]
    Syntax,
    #[error("date or time field out of range")]
    Range,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[inline]
fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, TimeError> {
    let mut v = 0u32;
    for i in 0..n {
        let c = *b.get(at + i).ok_or(TimeError::Syntax)?;
        if !c.is_ascii_digit() {
            return Err(TimeError::Syntax);
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Ok(v)
}

/// Nanoseconds of a UTC civil date-time, validating every field.
pub fn from_civil(
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    nanos: u32,
) -> Result<Nanos, TimeError> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60
    {
        return Err(TimeError::Range);
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + (h as i64) * 3600 + (mi as i64) * 60 + s as i64;
    secs.checked_mul(NANOS_PER_SEC)
        .and_then(|n| n.checked_add(nanos as i64))
        .ok_or(TimeError::Range)
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction](Z|±HH:MM)`; a missing zone means UTC, which is how
/// Defender's CSV exports write it. Fractions beyond 9 digits are truncated.
pub fn parse_rfc3339(s: &[u8]) -> Result<Nanos, TimeError> {
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return Err(TimeError::Syntax);
    }
    if s[10] != b'T' && s[10] != b't' && s[10] != b' ' {
        return Err(TimeError::Syntax);
    }
    let y = digits(s, 0, 4)? as i64;
    let mo = digits(s, 5, 2)?;
    let d = digits(s, 8, 2)?;
    let h = digits(s, 11, 2)?;
    let mi = digits(s, 14, 2)?;
    let sec = digits(s, 17, 2)?;
    let mut i = 19;
    let mut frac = 0u32;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000u32;
        while let Some(c) = s.get(i).filter(|c| c.is_ascii_digit()) {
            frac += (c - b'0') as u32 * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return Err(TimeError::Syntax);
        }
    }
    let offset_secs: i64 = match s.get(i) {
        None => 0,
        Some(b'Z') | Some(b'z') if i + 1 == s.len() => 0,
        Some(&sign @ (b'+' | b'-')) if s.len() == i + 6 && s[i + 3] == b':' => {
            let oh = digits(s, i + 1, 2)? as i64;
            let om = digits(s, i + 4, 2)? as i64;
            if oh > 23 || om > 59 {
                return Err(TimeError::Range);
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return Err(TimeError::Syntax),
    };
    let t = from_civil(y, mo, d, h, mi, sec, frac)?;
    t.checked_sub(offset_secs * NANOS_PER_SEC)
        .ok_or(TimeError::Range)
}

/// A timestamp that formats as RFC 3339 UTC with whole seconds (`2025-12-22T09:20:00Z`), the
/// form alert output uses for bin starts; sub-second digits are shown only when present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rfc3339(pub Nanos);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(NANOS_PER_SEC);
        let sub = self.0.rem_euclid(NANOS_PER_SEC);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )?;
        if sub != 0 {
            let frac = format!("{sub:09}");
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

/// Parses a duration like `5m`, `1h`, `24h`, `30s`, `7d`, `90` (seconds) into nanoseconds.
pub fn parse_duration(s: &str) -> Result<Nanos, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (expected e.g. 30s, 5m, 1h, 7d)"))?;
    let mul = match unit {
        "s" => NANOS_PER_SEC,
        "m" | "min" => NANOS_PER_MIN,
        "h" => NANOS_PER_HOUR,
        "d" => NANOS_PER_DAY,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} in {s:?} (use s, m, h or d)"
            ));
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defender_timestamps() {
        let t = parse_rfc3339(b"2025-12-22T09:55:01.1234567Z").unwrap();
        assert_eq!(Rfc3339(t).to_string(), "2025-12-22T09:55:01.1234567Z");
        let t0 = parse_rfc3339(b"2025-12-22T09:55:01Z").unwrap();
        assert_eq!(t - t0, 123_456_700);
        assert_eq!(
            parse_rfc3339(b"2025-12-22T10:55:01+01:00").unwrap(),
            t0,
            "offsets are applied"
        );
        assert_eq!(parse_rfc3339(b"2025-12-22 09:55:01").unwrap(), t0);
        assert_eq!(t0, 1_766_397_301 * NANOS_PER_SEC);
    }

    #[test]
    fn rejects_bad_timestamps() {
        assert_eq!(parse_rfc3339(b"yesterday"), Err(TimeError::Syntax));
        assert_eq!(
            parse_rfc3339(b"2025-02-30T00:00:00Z"),
            Err(TimeError::Range)
        );
        assert_eq!(
            parse_rfc3339(b"2025-12-22T24:00:00Z"),
            Err(TimeError::Range)
        );
        assert_eq!(
            parse_rfc3339(b"2025-12-22T09:55:01.Z"),
            Err(TimeError::Syntax)
        );
        assert_eq!(
            parse_rfc3339(b"2025-12-22T09:55:01Zjunk"),
            Err(TimeError::Syntax)
        );
    }

    #[test]
    fn bins_are_epoch_aligned_like_kql() {
        let w = BinWidth::FIVE_MINUTES;
        let t = parse_rfc3339(b"2025-12-22T09:24:59.999Z").unwrap();
        assert_eq!(Rfc3339(w.floor(t)).to_string(), "2025-12-22T09:20:00Z");
        assert_eq!(
            w.floor(-1),
            -w.nanos(),
            "floor, not truncation, before 1970"
        );
        assert!(BinWidth::from_secs(7 * 60).is_err());
        assert_eq!(BinWidth::from_secs(600).unwrap().per_day(), 144);
    }

    #[test]
    fn civil_round_trip() {
        for z in [-800_000i64, -1, 0, 1, 20_444, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), 5 * NANOS_PER_MIN);
        assert_eq!(parse_duration("24h").unwrap(), NANOS_PER_DAY);
        assert_eq!(parse_duration("90").unwrap(), 90 * NANOS_PER_SEC);
        assert!(parse_duration("5 parsecs").is_err());
    }
}
