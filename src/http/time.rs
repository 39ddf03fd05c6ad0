//! Times in requests (`occurred_at`, statement `from`/`to`): every form a person or a
//! merchant's server is likely to send, read the same way everywhere.
//!
//! Accepted, as a JSON value or a query parameter:
//! * Unix seconds: `1764547200` (a number, or digits in a string);
//! * a date: `2026-12-01`, the start of that day in the program's time zone
//!   (`payouts.time-zone`);
//! * RFC 3339: `2026-12-01T10:00:00Z`, `2026-12-01T11:00:00+01:00`, with up to 6 fraction
//!   digits; a space instead of the `+` of the offset is read as `+`, because an
//!   unescaped `+` in a query string arrives as a space.
//!
//! Each error names these forms with an example. Years run 1..9999 here; callers bound
//! them further where a window applies (a conversion's time).

use clicktrail_actors::ledger::commission::{civil_from_days, days_from_civil};
use clicktrail_actors::payout::tz::Zone;
use serde_json::Value;
use std::sync::OnceLock;

static PROGRAM_ZONE: OnceLock<Zone> = OnceLock::new();

/// The forms accepted, for error messages.
pub const FORMS: &str = "expected Unix seconds (1764547200), a date (2026-12-01: midnight in \
the program's time zone) or an RFC 3339 time (2026-12-01T10:00:00Z, \
2026-12-01T11:00:00+01:00)";

/// Sets the program's time zone (once, at start; later calls are ignored).
pub fn set_program_zone(zone: Zone) {
    let _ = PROGRAM_ZONE.set(zone);
}

/// The program's time zone: what a plain date means. UTC until set.
pub fn program_zone() -> &'static Zone {
    PROGRAM_ZONE.get_or_init(Zone::utc)
}

/// Parses a time sent as JSON into UTC microseconds.
pub fn parse(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .filter(|s| (0..=253_402_300_799).contains(s))
            .map(|s| s * 1_000_000)
            .ok_or_else(|| format!("{n} is not whole Unix seconds; {FORMS}")),
        Value::String(s) => parse_text(s),
        other => Err(format!("{other} is not a time; {FORMS}")),
    }
}

/// Parses a time sent as text (a query parameter, or a JSON string).
pub fn parse_text(s: &str) -> Result<i64, String> {
    parse_text_in(s, program_zone())
}

/// [`parse_text`] with dates read in `zone`.
pub fn parse_text_in(s: &str, zone: &Zone) -> Result<i64, String> {
    let bad = || format!("{s:?}: {FORMS}");
    if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .ok()
            .filter(|v| *v <= 253_402_300_799)
            .map(|v| v * 1_000_000)
            .ok_or_else(bad);
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (y, mo, d) = (num(s, 0..4), num(s, 5..7), num(s, 8..10));
    let (Some(y), Some(mo), Some(d)) = (y, mo, d) else {
        return Err(bad());
    };
    // A date that does not exist (2026-02-30) does not come back the same from its day.
    let days = days_from_civil(y, mo.clamp(1, 12) as u32, d.clamp(1, 31) as u32);
    if y < 1 || civil_from_days(days) != (y, mo as u32, d as u32) {
        return Err(format!("{s:?}: no such date; {FORMS}"));
    }
    if b.len() == 10 {
        return Ok(zone.to_utc(days * 86_400) * 1_000_000);
    }
    if !matches!(b[10], b'T' | b't') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (Some(h), Some(mi), Some(sec)) = (num(s, 11..13), num(s, 14..16), num(s, 17..19)) else {
        return Err(bad());
    };
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        let digits = &frac[..n.min(6)];
        micros = digits.parse::<i64>().map_err(|_| bad())? * 10i64.pow(6 - digits.len() as u32);
        rest = &frac[n..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        "" => {
            return Err(format!(
                "{s:?} has no offset: add Z (UTC) or one like +01:00; {FORMS}"
            ))
        }
        _ => offset(rest).ok_or_else(bad)?,
    };
    Ok((days * 86_400 + h * 3600 + mi * 60 + sec - offset_s) * 1_000_000 + micros)
}

/// `+HH:MM` or `-HH:MM` (a leading space stands for `+`) in seconds east of UTC.
fn offset(rest: &str) -> Option<i64> {
    let sign = match rest.as_bytes().first()? {
        b'+' | b' ' => 1,
        b'-' => -1,
        _ => return None,
    };
    if rest.len() != 6 || rest.as_bytes()[3] != b':' {
        return None;
    }
    let (oh, om) = (num(rest, 1..3)?, num(rest, 4..6)?);
    if oh > 23 || om > 59 {
        return None;
    }
    Some(sign * (oh * 3600 + om * 60))
}

fn num(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let t = s.get(r)?;
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_795_600_800_000_000; // 2026-11-25T10:00:00Z

    #[test]
    fn unix_seconds_dates_and_rfc3339() {
        assert_eq!(parse(&json!(1_764_000_000)), Ok(1_764_000_000_000_000));
        assert_eq!(parse(&json!("1764000000")), Ok(1_764_000_000_000_000));
        assert_eq!(parse(&json!("1970-01-01T00:00:00Z")), Ok(0));
        assert_eq!(parse(&json!("2026-11-25T10:00:00Z")), Ok(T));
        assert_eq!(parse(&json!("2026-11-25T11:00:00+01:00")), Ok(T));
        // The `+` of a query string arrives as a space.
        assert_eq!(parse(&json!("2026-11-25T11:00:00 01:00")), Ok(T));
        assert_eq!(parse(&json!("2026-11-25T05:00:00-05:00")), Ok(T));
        assert_eq!(parse(&json!("2026-11-25T10:00:00.5Z")), Ok(T + 500_000));
        assert_eq!(parse(&json!("2026-11-25")), Ok(T - 10 * 3_600_000_000));
    }

    #[test]
    fn a_date_is_midnight_in_the_program_zone() {
        let berlin = Zone::load("+01:00").unwrap();
        assert_eq!(
            parse_text_in("2026-11-25", &berlin),
            Ok(T - 11 * 3_600_000_000)
        );
    }

    #[test]
    fn errors_show_every_form_with_an_example() {
        for bad in [
            json!("yesterday"),
            json!("2026-13-01T00:00:00Z"),
            json!("2026-02-30"),
            json!(-5),
            json!(1.5),
            json!("2026-11-25T10:00:00"),
            json!("2026-11-25 10:00:00Z"),
            json!(true),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.contains("2026-12-01T11:00:00+01:00"), "{bad}: {e}");
        }
        assert!(parse(&json!("2026-11-25T10:00:00"))
            .unwrap_err()
            .contains("no offset"));
    }
}
