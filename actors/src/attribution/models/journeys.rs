//! Grouped journeys in ChannelAttribution's format, and its CSV form.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Distinct paths with their counts (see the module docs). Build it with [`Grouped::add`]
/// and [`Grouped::channel`]; the fields are public for reading. Whoever edits `channels` or
/// `paths` directly must call [`Grouped::reindex`] before the next `add`/`channel`.
#[derive(Debug, Clone, Default)]
pub struct Grouped {
    pub channels: Vec<String>,
    pub paths: Vec<GroupedPath>,
    /// Lookups for interning and merging (rebuilt when the lengths show they are stale).
    index: Index,
}

#[derive(Debug, Clone, Default)]
struct Index {
    channels: HashMap<String, u32>,
    paths: HashMap<Vec<u32>, usize>,
}

/// One distinct path and its counts.
#[derive(Debug, Clone)]
pub struct GroupedPath {
    /// Channel indices, oldest first.
    pub touches: Vec<u32>,
    pub conversions: f64,
    pub nulls: f64,
    pub value: f64,
}

impl Grouped {
    /// The index of channel `name`, interning it when new.
    pub fn channel(&mut self, name: &str) -> u32 {
        self.fresh_index();
        if let Some(&i) = self.index.channels.get(name) {
            return i;
        }
        let i = u32::try_from(self.channels.len()).expect("fewer than 2^32 channels");
        self.channels.push(name.to_string());
        self.index.channels.insert(name.to_string(), i);
        i
    }

    /// Adds journeys on `touches`, merged into an equal path when there is one.
    pub fn add(&mut self, touches: Vec<u32>, conversions: f64, nulls: f64, value: f64) {
        self.fresh_index();
        if let Some(&i) = self.index.paths.get(&touches) {
            let p = &mut self.paths[i];
            p.conversions += conversions;
            p.nulls += nulls;
            p.value += value;
            return;
        }
        self.index.paths.insert(touches.clone(), self.paths.len());
        self.paths.push(GroupedPath {
            touches,
            conversions,
            nulls,
            value,
        });
    }

    /// Rebuilds the lookups from `channels` and `paths` (after editing them directly).
    /// Equal paths already in `paths` stay separate rows; later adds go to the first.
    pub fn reindex(&mut self) {
        self.index.channels = (0..self.channels.len())
            .map(|i| (self.channels[i].clone(), i as u32))
            .collect();
        self.index.paths.clear();
        for (i, p) in self.paths.iter().enumerate() {
            self.index.paths.entry(p.touches.clone()).or_insert(i);
        }
    }

    fn fresh_index(&mut self) {
        if self.index.channels.len() != self.channels.len()
            || self.index.paths.len() != self.paths.len()
        {
            self.reindex();
        }
    }

    /// Total conversions, nulls and value over every path.
    pub fn totals(&self) -> (f64, f64, f64) {
        self.paths.iter().fold((0.0, 0.0, 0.0), |(c, n, v), p| {
            (c + p.conversions, n + p.nulls, v + p.value)
        })
    }

    /// Parses `path,total_conversions,total_null[,total_conversion_value]` (see the module
    /// docs). Equal paths are merged.
    pub fn parse_csv(text: &str) -> Result<Grouped, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err("empty journeys file: expected a header line \
                        path,total_conversions,total_null[,total_conversion_value]"
                .into());
        };
        let header = split_fields(header).map_err(|e| format!("line 1: {e}"))?;
        let names: Vec<&str> = header.iter().map(|h| h.trim()).collect();
        let with_value = match names.as_slice() {
            ["path", "total_conversions", "total_null"] => false,
            ["path", "total_conversions", "total_null", "total_conversion_value"] => true,
            _ => {
                return Err(format!(
                    "line 1: header {names:?}: expected \
                     path,total_conversions,total_null[,total_conversion_value]"
                ))
            }
        };
        let mut g = Grouped::default();
        for (i, line) in lines {
            let n = i + 1;
            let fields = split_fields(line).map_err(|e| format!("line {n}: {e}"))?;
            if fields.len() != names.len() {
                return Err(format!(
                    "line {n}: {} fields, expected {} like the header",
                    fields.len(),
                    names.len()
                ));
            }
            let mut touches = Vec::new();
            for name in fields[0].split('>') {
                let name = name.trim();
                if name.is_empty() {
                    return Err(format!(
                        "line {n}: path {:?} has an empty channel name",
                        fields[0]
                    ));
                }
                touches.push(g.channel(name));
            }
            let num = |k: usize| -> Result<f64, String> {
                let s = fields[k].trim();
                match s.parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                    _ => Err(format!(
                        "line {n}: {} {s:?} is not a finite non-negative number",
                        names[k]
                    )),
                }
            };
            let (c, nulls) = (num(1)?, num(2)?);
            let value = if with_value { num(3)? } else { 0.0 };
            g.add(touches, c, nulls, value);
        }
        Ok(g)
    }

    /// The CSV form `parse_csv` reads, always with the value column.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("path,total_conversions,total_null,total_conversion_value\n");
        let mut path = String::new();
        for p in &self.paths {
            path.clear();
            for (k, &t) in p.touches.iter().enumerate() {
                if k > 0 {
                    path.push_str(" > ");
                }
                path.push_str(&self.channels[t as usize]);
            }
            if path.contains([',', '"', '\r', '\n']) {
                path = format!("\"{}\"", path.replace('"', "\"\""));
            }
            let _ = writeln!(out, "{path},{},{},{}", p.conversions, p.nulls, p.value);
        }
        out
    }
}

/// Splits one CSV line into fields, RFC 4180 quoting (`""` inside quotes is a quote).
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    loop {
        // At the start of a field: quoted or bare.
        while chars.peek() == Some(&' ') {
            cur.push(' ');
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            cur.clear();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(c) => cur.push(c),
                }
            }
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut cur));
                    return Ok(fields);
                }
                Some(',') => fields.push(std::mem::take(&mut cur)),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(std::mem::take(&mut cur));
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(std::mem::take(&mut cur));
                        break;
                    }
                    Some('"') => return Err("a quote inside an unquoted field".into()),
                    Some(c) => cur.push(c),
                }
            }
        }
    }
}
