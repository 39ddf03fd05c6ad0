//! The program's time zone for payout calendars: `UTC`, a fixed offset (`+02:00`), or an
//! IANA name (`Europe/Berlin`) read from the system's time zone database (TZif files under
//! `$TZDIR` or `/usr/share/zoneinfo`, RFC 8536), daylight saving time included, with the
//! file's POSIX TZ rule for dates past its last transition.

use crate::ledger::commission::{civil_from_days, days_from_civil};

/// A daylight-saving rule from a POSIX TZ string (`CET-1CEST,M3.5.0,M10.5.0/3`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// Offsets east of UTC, seconds.
    std: i32,
    dst: i32,
    /// (month, week 1-5 with 5 = last, weekday 0 = Sunday, local seconds after midnight).
    start: (u32, u32, u32, i64),
    end: (u32, u32, u32, i64),
}

/// A time zone: offsets east of UTC as a function of UTC time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    /// (UTC seconds from which `offset` applies), ascending.
    transitions: Vec<(i64, i32)>,
    /// Before the first transition (or always, without any).
    initial: i32,
    /// After the last transition, when the zone still changes.
    rule: Option<(i32, Option<Rule>)>,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone::fixed("UTC", 0)
    }

    fn fixed(name: &str, offset: i32) -> Zone {
        Zone {
            name: name.into(),
            transitions: Vec::new(),
            initial: offset,
            rule: None,
        }
    }

    /// `UTC`, `Z`, `+HH:MM` / `-HH:MM`, or an IANA name from the system's database.
    pub fn load(name: &str) -> Result<Zone, String> {
        if matches!(name, "UTC" | "Z" | "Etc/UTC") {
            return Ok(Zone::utc());
        }
        if name.starts_with(['+', '-']) {
            return parse_offset(name).map(|o| Zone::fixed(name, o));
        }
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.contains("..")
            && !name.starts_with('/')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_-+".contains(&b));
        if !valid {
            return Err(format!("time-zone {name:?}: expected UTC, an offset like +02:00 or an IANA name like Europe/Berlin"));
        }
        let dir = std::env::var("TZDIR").unwrap_or_else(|_| "/usr/share/zoneinfo".into());
        let path = std::path::Path::new(&dir).join(name);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "time-zone {name:?}: cannot read {} ({e}); is the tzdata package installed?",
                path.display()
            )
        })?;
        parse_tzif(name, &bytes).map_err(|e| format!("time-zone {name:?}: {e}"))
    }

    /// Seconds east of UTC at `utc_s`.
    pub fn offset_at(&self, utc_s: i64) -> i32 {
        match self.transitions.last() {
            None => self.initial,
            Some(&(last, off)) if utc_s >= last => match &self.rule {
                Some((std, Some(r))) => rule_offset(*std, r, utc_s),
                Some((std, None)) => *std,
                None => off,
            },
            Some(_) => {
                let i = self.transitions.partition_point(|t| t.0 <= utc_s);
                if i == 0 {
                    self.initial
                } else {
                    self.transitions[i - 1].1
                }
            }
        }
    }

    /// The UTC time of a local wall-clock time (seconds); in a gap or an overlap, the
    /// offset in force just before it is assumed.
    pub fn to_utc(&self, local_s: i64) -> i64 {
        let first = local_s - self.offset_at(local_s) as i64;
        local_s - self.offset_at(first) as i64
    }
}

/// Parses `+HH:MM` / `-HH:MM` into seconds east of UTC.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    let bad = || format!("time-zone {s:?}: expected UTC or an offset like +02:00");
    let sign = match s.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let (h, m) = s[1..].split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 || s.len() != 6 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

const DAY_S: i64 = 86_400;

/// UTC seconds of the rule's moment in `year`, given the offset in force before it.
fn rule_moment(year: i64, (m, w, d, secs): (u32, u32, u32, i64), before: i32) -> i64 {
    let first = days_from_civil(year, m, 1);
    let weekday_first = (first + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
    let mut day = 1 + (d + 7 - weekday_first) % 7 + (w - 1) * 7;
    let next = if m == 12 {
        days_from_civil(year + 1, 1, 1)
    } else {
        days_from_civil(year, m + 1, 1)
    };
    let len = (next - first) as u32;
    while day > len {
        day -= 7;
    }
    (first + day as i64 - 1) * DAY_S + secs - before as i64
}

fn rule_offset(std: i32, r: &Rule, utc_s: i64) -> i32 {
    let (year, _, _) = civil_from_days((utc_s + std as i64).div_euclid(DAY_S));
    let start = rule_moment(year, r.start, std);
    let end = rule_moment(year, r.end, r.dst);
    let in_dst = if start < end {
        (start..end).contains(&utc_s)
    } else {
        !(end..start).contains(&utc_s)
    };
    if in_dst {
        r.dst
    } else {
        std
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|x| u32::from_be_bytes(x.try_into().expect("4 bytes")))
        .ok_or_else(|| "truncated TZif file".to_string())
}

fn parse_tzif(name: &str, b: &[u8]) -> Result<Zone, String> {
    if b.get(..4) != Some(b"TZif") {
        return Err("not a TZif file".into());
    }
    let counts = |at: usize| -> Result<[usize; 6], String> {
        let mut c = [0usize; 6];
        for (i, v) in c.iter_mut().enumerate() {
            *v = be32(b, at + 20 + 4 * i)? as usize;
        }
        Ok(c)
    };
    let [isut, isstd, leap, time, typ, chars] = counts(0)?;
    let v1_len = time * 5 + typ * 6 + chars + leap * 8 + isstd + isut;
    let version = b[4];
    if version < b'2' {
        return Err("TZif version 1 files are not supported".into());
    }
    let h2 = 44 + v1_len;
    if b.get(h2..h2 + 4) != Some(b"TZif") {
        return Err("truncated TZif file".into());
    }
    let [isut, isstd, leap, time, typ, chars] = counts(h2)?;
    let data = h2 + 44;
    let times_at = data;
    let idx_at = times_at + time * 8;
    let types_at = idx_at + time;
    let end = types_at + typ * 6 + chars + leap * 12 + isstd + isut;
    if b.len() < end || typ == 0 {
        return Err("truncated TZif file".into());
    }
    let utoff = |i: usize| -> Result<i32, String> {
        if i >= typ {
            return Err("bad local time type".into());
        }
        Ok(be32(b, types_at + i * 6)? as i32)
    };
    let mut transitions = Vec::with_capacity(time);
    for i in 0..time {
        let t = i64::from_be_bytes(
            b[times_at + i * 8..times_at + i * 8 + 8]
                .try_into()
                .expect("8 bytes"),
        );
        transitions.push((t, utoff(b[idx_at + i] as usize)?));
    }
    let footer = std::str::from_utf8(&b[end..])
        .map_err(|_| "bad TZif footer".to_string())?
        .trim_matches('\n');
    let rule = if footer.is_empty() {
        None
    } else {
        Some(parse_posix(footer)?)
    };
    Ok(Zone {
        name: name.into(),
        transitions,
        initial: utoff(0)?,
        rule,
    })
}

/// Parses a POSIX TZ string: `std offset [dst [offset] [,start[/time],end[/time]]]`.
fn parse_posix(s: &str) -> Result<(i32, Option<Rule>), String> {
    let bad = || format!("unsupported TZ rule {s:?}");
    let mut rest = s;
    let name = |r: &mut &str| -> Result<(), String> {
        if let Some(x) = r.strip_prefix('<') {
            let close = x.find('>').ok_or_else(bad)?;
            *r = &x[close + 1..];
        } else {
            let n = r
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(r.len());
            if n < 3 {
                return Err(bad());
            }
            *r = &r[n..];
        }
        Ok(())
    };
    // `[+-]hh[:mm[:ss]]`, seconds; `None` when nothing is there.
    let clock = |r: &mut &str| -> Option<i64> {
        let n = r
            .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '+' || c == '-'))
            .unwrap_or(r.len());
        let text = &r[..n];
        if text.is_empty() {
            return None;
        }
        *r = &r[n..];
        let (sign, digits) = match text.as_bytes()[0] {
            b'-' => (-1, &text[1..]),
            b'+' => (1, &text[1..]),
            _ => (1, text),
        };
        let mut secs = 0i64;
        for (i, p) in digits.split(':').enumerate() {
            let v: i64 = p.parse().ok()?;
            secs = secs.checked_add(v.checked_mul(*[3600, 60, 1].get(i)?)?)?;
        }
        Some(sign * secs)
    };
    name(&mut rest)?;
    // POSIX offsets are west of UTC; ours are east.
    let std = -(clock(&mut rest).ok_or_else(bad)? as i32);
    if rest.is_empty() {
        return Ok((std, None));
    }
    name(&mut rest)?;
    let dst = match clock(&mut rest) {
        Some(o) => -(o as i32),
        None => std + 3600,
    };
    let date = |r: &mut &str| -> Result<(u32, u32, u32, i64), String> {
        *r = r.strip_prefix(',').ok_or_else(bad)?;
        let m_ = r.strip_prefix('M').ok_or_else(bad)?;
        let n = m_.find(['/', ',']).unwrap_or(m_.len());
        let parts: Vec<u32> = m_[..n]
            .split('.')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [m, w, d] = parts[..] else {
            return Err(bad());
        };
        if !(1..=12).contains(&m) || !(1..=5).contains(&w) || d > 6 {
            return Err(bad());
        }
        *r = &m_[n..];
        let secs = match r.strip_prefix('/') {
            Some(t) => {
                *r = t;
                clock(r).ok_or_else(bad)?
            }
            None => 7200,
        };
        Ok((m, w, d, secs))
    };
    let start = date(&mut rest)?;
    let end = date(&mut rest)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok((
        std,
        Some(Rule {
            std,
            dst,
            start,
            end,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32, h: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_S + h * 3600
    }

    #[test]
    fn posix_rules_parse() {
        let (std, r) = parse_posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        assert_eq!(std, 3600);
        let r = r.unwrap();
        assert_eq!(
            (r.dst, r.start, r.end),
            (7200, (3, 5, 0, 7200), (10, 5, 0, 10_800))
        );
        assert_eq!(parse_posix("<+0530>-5:30").unwrap(), (19_800, None));
        assert_eq!(
            parse_posix("EST5EDT,M3.2.0,M11.1.0")
                .unwrap()
                .1
                .unwrap()
                .dst,
            -14_400
        );
        assert!(parse_posix("CET-1CEST,J60,J300").is_err());
        // Last Sunday of March 2026 is the 29th; 02:00 CET is 01:00 UTC.
        let berlin = parse_posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let rule = berlin.1.unwrap();
        assert_eq!(rule_moment(2026, rule.start, 3600), at(2026, 3, 29, 1));
        assert_eq!(rule_offset(3600, &rule, at(2026, 3, 29, 1) - 1), 3600);
        assert_eq!(rule_offset(3600, &rule, at(2026, 3, 29, 1)), 7200);
        // Last Sunday of October 2026 is the 25th; 03:00 CEST is 01:00 UTC.
        assert_eq!(rule_offset(3600, &rule, at(2026, 10, 25, 1) - 1), 7200);
        assert_eq!(rule_offset(3600, &rule, at(2026, 10, 25, 1)), 3600);
    }

    #[test]
    fn system_zones_give_daylight_saving_offsets() {
        if !std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").exists()
            && std::env::var_os("TZDIR").is_none()
        {
            panic!("the tests need the tzdata package (scripts/test installs it)");
        }
        let berlin = Zone::load("Europe/Berlin").unwrap();
        assert_eq!(berlin.offset_at(at(2026, 1, 15, 12)), 3600);
        assert_eq!(berlin.offset_at(at(2026, 7, 15, 12)), 7200);
        assert_eq!(
            berlin.offset_at(at(2099, 7, 15, 12)),
            7200,
            "past the table: the rule"
        );
        assert_eq!(berlin.offset_at(at(2099, 12, 15, 12)), 3600);
        // Midnight of 1 December in Berlin is 23:00 UTC the day before.
        assert_eq!(berlin.to_utc(at(2026, 12, 1, 0)), at(2026, 11, 30, 23));
        assert_eq!(berlin.to_utc(at(2026, 7, 1, 0)), at(2026, 6, 30, 22));
        let ny = Zone::load("America/New_York").unwrap();
        assert_eq!(ny.offset_at(at(2026, 7, 1, 12)), -4 * 3600);
        assert_eq!(ny.offset_at(at(2026, 12, 1, 12)), -5 * 3600);
        let sydney = Zone::load("Australia/Sydney").unwrap();
        assert_eq!(sydney.offset_at(at(2026, 1, 15, 0)), 11 * 3600);
        assert_eq!(sydney.offset_at(at(2026, 7, 15, 0)), 10 * 3600);
        assert_eq!(sydney.offset_at(at(2090, 1, 15, 0)), 11 * 3600);
        let kolkata = Zone::load("Asia/Kolkata").unwrap();
        assert_eq!(kolkata.offset_at(at(2026, 7, 1, 0)), 19_800);
        assert!(Zone::load("Mars/Olympus_Mons").is_err());
        assert!(Zone::load("../../etc/passwd").is_err());
        assert_eq!(Zone::load("+05:30").unwrap().offset_at(0), 19_800);
        assert_eq!(Zone::load("UTC").unwrap().offset_at(0), 0);
    }
}
