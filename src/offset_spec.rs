//! The offset syntax of `consume -o`, `topic trim-prefix -o` and `group
//! seek --to` (rpk's): where to start reading in each partition.
//!
//! | text | offset in a partition with log start `low` and end `high` |
//! |---|---|
//! | `start`, `beginning`, `oldest`, `earliest` | `low` |
//! | `end`, `newest`, `latest` | `high` |
//! | `N` | `N` (clamped to `low..=high` by [`OffsetSpec::resolve`]) |
//! | `-N` | `high - N`, not below `low` |
//! | `+N` | `low + N`, not above `high` |
//! | `@MS`, `@RFC3339` | the first record with a timestamp at or after it (ListOffsets by time), `high` if none |

use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    Start,
    End,
    /// An absolute offset.
    At(i64),
    /// This many records before the end.
    FromEnd(i64),
    /// This many records after the start.
    FromStart(i64),
    /// A timestamp, ms since the Unix epoch.
    Timestamp(i64),
}

impl FromStr for OffsetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let count = |n: &str| -> Result<i64, String> {
            n.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("'{s}': expected a number of records after the sign"))
        };
        Ok(match t.to_ascii_lowercase().as_str() {
            "start" | "beginning" | "oldest" | "earliest" => OffsetSpec::Start,
            "end" | "newest" | "latest" => OffsetSpec::End,
            _ if t.starts_with('-') => OffsetSpec::FromEnd(count(&t[1..])?),
            _ if t.starts_with('+') => OffsetSpec::FromStart(count(&t[1..])?),
            _ if t.starts_with('@') => OffsetSpec::Timestamp(parse_time(&t[1..])?),
            _ => OffsetSpec::At(t.parse::<i64>().map_err(|_| {
                format!(
                    "'{s}' is not an offset: start, end, N, -N (before the end), \
                     +N (after the start) or @TIME (ms since the epoch or RFC 3339)"
                )
            })?),
        })
    }
}

impl std::fmt::Display for OffsetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OffsetSpec::Start => write!(f, "start"),
            OffsetSpec::End => write!(f, "end"),
            OffsetSpec::At(n) => write!(f, "{n}"),
            OffsetSpec::FromEnd(n) => write!(f, "-{n}"),
            OffsetSpec::FromStart(n) => write!(f, "+{n}"),
            OffsetSpec::Timestamp(ms) => write!(f, "@{ms}"),
        }
    }
}

impl OffsetSpec {
    /// The offset in a partition whose log starts at `low` and ends at
    /// `high`; `by_time` is the ListOffsets answer for a timestamp (`None`
    /// or negative: no record at or after it).
    pub fn resolve(self, low: i64, high: i64, by_time: Option<i64>) -> i64 {
        let high = high.max(low);
        match self {
            OffsetSpec::Start => low,
            OffsetSpec::End => high,
            OffsetSpec::At(n) => n.clamp(low, high),
            OffsetSpec::FromEnd(n) => high.saturating_sub(n).max(low),
            OffsetSpec::FromStart(n) => low.saturating_add(n).min(high),
            OffsetSpec::Timestamp(_) => by_time.filter(|o| *o >= 0).unwrap_or(high),
        }
    }
}

/// Milliseconds since the epoch from `1700000000000` or an RFC 3339 time
/// (`2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.250+02:00`, or a date
/// `2024-05-01`, taken as midnight UTC).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| format!("'{s}': timestamp out of range"));
    }
    let bad = || {
        format!("'{s}' is not a time: ms since the epoch, or RFC 3339 like 2024-05-01T12:00:00Z")
    };
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, String> {
        let part = s.get(from..from + len).ok_or_else(bad)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse::<i64>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if b.len() == 10 {
        return Ok(ms);
    }
    if !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b.len() < 19
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let (h, m, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if h > 23 || m > 59 || sec > 60 {
        return Err(bad());
    }
    ms += (h * 3600 + m * 60 + sec) * 1000;
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        // Milliseconds: the first three digits of the fraction.
        let digits = &s[start..i.min(start + 3)];
        let frac: i64 = digits.parse().map_err(|_| bad())?;
        ms += frac * 10i64.pow(3 - digits.len() as u32);
    }
    match &s[i..] {
        "Z" | "z" => Ok(ms),
        zone if zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && &zone[3..4] == ":" =>
        {
            let (zh, zm) = (num(i + 1, 2)?, num(i + 4, 2)?);
            let offset = (zh * 60 + zm) * 60_000;
            Ok(if zone.starts_with('+') {
                ms - offset
            } else {
                ms + offset
            })
        }
        _ => Err(bad()),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> OffsetSpec {
        s.parse().unwrap()
    }

    #[test]
    fn every_form_of_rpk_offsets_parses() {
        assert_eq!(p("start"), OffsetSpec::Start);
        assert_eq!(p("beginning"), OffsetSpec::Start);
        assert_eq!(p("end"), OffsetSpec::End);
        assert_eq!(p("-1"), OffsetSpec::FromEnd(1));
        assert_eq!(p("+10"), OffsetSpec::FromStart(10));
        assert_eq!(p("42"), OffsetSpec::At(42));
        assert_eq!(
            p("@1700000000000"),
            OffsetSpec::Timestamp(1_700_000_000_000)
        );
        assert_eq!(
            p("@2023-11-14T22:13:20Z"),
            OffsetSpec::Timestamp(1_700_000_000_000)
        );
        assert_eq!(
            p("@2023-11-14T23:13:20.5+01:00"),
            OffsetSpec::Timestamp(1_700_000_000_500)
        );
        assert_eq!(p("@1970-01-02"), OffsetSpec::Timestamp(86_400_000));
        for bad in [
            "",
            "soon",
            "-x",
            "+-1",
            "@yesterday",
            "@2023-13-01",
            "@2023-11-14T22:13",
        ] {
            assert!(bad.parse::<OffsetSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets_resolve_within_the_partition() {
        // A partition holding offsets 10..20.
        assert_eq!(OffsetSpec::Start.resolve(10, 20, None), 10);
        assert_eq!(OffsetSpec::End.resolve(10, 20, None), 20);
        assert_eq!(OffsetSpec::FromEnd(3).resolve(10, 20, None), 17);
        assert_eq!(OffsetSpec::FromEnd(30).resolve(10, 20, None), 10);
        assert_eq!(OffsetSpec::FromStart(3).resolve(10, 20, None), 13);
        assert_eq!(OffsetSpec::FromStart(30).resolve(10, 20, None), 20);
        assert_eq!(OffsetSpec::At(5).resolve(10, 20, None), 10);
        assert_eq!(OffsetSpec::At(15).resolve(10, 20, None), 15);
        assert_eq!(OffsetSpec::Timestamp(0).resolve(10, 20, Some(12)), 12);
        assert_eq!(OffsetSpec::Timestamp(0).resolve(10, 20, Some(-1)), 20);
    }
}
