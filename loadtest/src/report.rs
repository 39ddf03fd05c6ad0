//! What a run reports: the table, the JSON summary, the HdrHistogram percentile file, and
//! the SLO verdict.

use crate::engine::{histogram, Plan, Recorded};
use crate::scenario::Kind;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::fmt::Write;

/// Percentiles shown everywhere.
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
];

/// A declared objective: `p99=2ms`, `max=50ms`, `errors=0`, `errors=0.1%`.
#[derive(Debug, Clone, PartialEq)]
pub enum Slo {
    Latency {
        name: String,
        percentile: Option<f64>,
        limit_us: f64,
    },
    Errors {
        limit: f64,
        percent: bool,
    },
}

fn parse_duration_us(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("µs") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

impl Slo {
    pub fn parse(s: &str) -> Result<Slo, String> {
        let bad = || {
            format!("bad --slo {s:?}: want p99=2ms, p99.9=10ms, max=50ms, errors=0 or errors=0.1%")
        };
        let (name, value) = s.split_once('=').ok_or_else(bad)?;
        if name == "errors" {
            let (v, percent) = match value.strip_suffix('%') {
                Some(v) => (v, true),
                None => (value, false),
            };
            let limit: f64 = v.parse().map_err(|_| bad())?;
            if !(limit.is_finite() && limit >= 0.0) {
                return Err(bad());
            }
            return Ok(Slo::Errors { limit, percent });
        }
        let percentile = if name == "max" {
            None
        } else {
            let p: f64 = name
                .strip_prefix('p')
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)?;
            if !(p > 0.0 && p < 100.0) {
                return Err(bad());
            }
            Some(p)
        };
        let limit_us = parse_duration_us(value).ok_or_else(bad)?;
        Ok(Slo::Latency {
            name: name.to_string(),
            percentile,
            limit_us,
        })
    }
}

/// The whole run's numbers.
pub struct Summary<'a> {
    pub plan: &'a Plan,
    pub rec: &'a Recorded,
    pub elapsed_secs: f64,
    /// Seconds over which responses were recorded (after the warm-up).
    pub measured_secs: f64,
}

fn us(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_percentile(p) as f64 / 1e3
}

fn all(map: &std::collections::BTreeMap<Kind, Histogram<u64>>) -> Histogram<u64> {
    let mut h = histogram();
    for x in map.values() {
        h.add(x).expect("same bounds");
    }
    h
}

fn fmt_ms(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn pct_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (name, p) in PERCENTILES {
        m.insert(name.into(), json!(us(h, p)));
    }
    m.insert("max".into(), json!(h.max() as f64 / 1e3));
    m.insert("mean".into(), json!(h.mean() / 1e3));
    m.insert("count".into(), json!(h.len()));
    Value::Object(m)
}

impl Summary<'_> {
    pub fn corrected_all(&self) -> Histogram<u64> {
        all(&self.rec.corrected)
    }

    pub fn errors(&self) -> u64 {
        self.rec.errors.values().sum()
    }

    /// Recorded responses per second, over the measured time or, when answers for it came
    /// in later (a backlog drained after the schedule ended), until the last one.
    pub fn achieved_rate(&self) -> f64 {
        let span = self
            .measured_secs
            .max(self.rec.last_recorded - self.plan.warmup);
        self.rec.recorded as f64 / span.max(1e-9)
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let p = self.plan;
        let mode = match &p.schedule {
            None => "closed loop (max throughput)".to_string(),
            Some(s) => {
                let segs: Vec<String> = s
                    .segments()
                    .iter()
                    .map(|g| {
                        if g.from == g.to {
                            format!("{:.0}/s x {:.0}s", g.from, g.secs)
                        } else {
                            format!("{:.0}->{:.0}/s x {:.0}s", g.from, g.to, g.secs)
                        }
                    })
                    .collect();
                format!("open loop: {}", segs.join(", "))
            }
        };
        let _ = writeln!(
            out,
            "target {} · {} · {} connections, {} threads",
            p.host, mode, p.connections, p.threads
        );
        let _ = writeln!(
            out,
            "scenario {}: {}",
            p.scenario.name, p.scenario.description
        );
        if let Some(s) = &p.schedule {
            let _ = writeln!(
                out,
                "scheduled {:.0} requests (warm-up included)",
                s.total_requests()
            );
        }
        let _ = writeln!(
            out,
            "sent {} · answered {} · recorded {} in {:.1}s = {:.0}/s achieved · errors {} · late {} (> {:?} behind schedule) · dropped {}",
            self.rec.sent, self.rec.completed, self.rec.recorded, self.measured_secs.max(self.rec.last_recorded - p.warmup), self.achieved_rate(), self.errors(), self.rec.late, p.late_after, self.rec.dropped
        );
        let status: Vec<String> = self
            .rec
            .status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "status {}",
            if status.is_empty() {
                "-".into()
            } else {
                status.join(", ")
            }
        );
        if !self.rec.errors.is_empty() {
            let e: Vec<String> = self
                .rec
                .errors
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            let _ = writeln!(out, "errors {}", e.join(", "));
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<12} {:<12} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "kind", "latency", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let mut rows: Vec<(String, &Histogram<u64>, &Histogram<u64>)> = Vec::new();
        let (ca, ua) = (all(&self.rec.corrected), all(&self.rec.uncorrected));
        for k in Kind::ALL {
            let (c, u) = (&self.rec.corrected[&k], &self.rec.uncorrected[&k]);
            if !c.is_empty() {
                rows.push((k.name().into(), c, u));
            }
        }
        if rows.len() != 1 {
            rows.push(("all".into(), &ca, &ua));
        }
        for (name, c, u) in rows {
            for (label, h) in [("corrected", c), ("uncorrected", u)] {
                let mut line = format!("{name:<12} {label:<12} {:>9}", h.len());
                for (_, p) in PERCENTILES {
                    let _ = write!(line, " {:>10}", fmt_ms(us(h, p)));
                }
                let _ = write!(line, " {:>10}", fmt_ms(h.max() as f64 / 1e3));
                let _ = writeln!(out, "{line}");
            }
        }
        if let Some(s) = &p.schedule {
            if self.rec.phases.len() > 1 {
                let _ = writeln!(out);
                let _ = writeln!(
                    out,
                    "{:<28} {:>9} {:>10} {:>10} {:>10} {:>10}",
                    "phase (corrected)", "count", "p50", "p99", "p99.9", "max"
                );
                for (g, h) in s.segments().iter().zip(&self.rec.phases) {
                    if h.is_empty() {
                        continue;
                    }
                    let name = if g.from == g.to {
                        format!("{:.0}/s for {:.0}s", g.from, g.secs)
                    } else {
                        format!("{:.0}->{:.0}/s for {:.0}s", g.from, g.to, g.secs)
                    };
                    let _ = writeln!(
                        out,
                        "{name:<28} {:>9} {:>10} {:>10} {:>10} {:>10}",
                        h.len(),
                        fmt_ms(us(h, 50.0)),
                        fmt_ms(us(h, 99.0)),
                        fmt_ms(us(h, 99.9)),
                        fmt_ms(h.max() as f64 / 1e3)
                    );
                }
            }
        }
        out
    }

    pub fn json(&self, slos: &[(Slo, bool, f64)], verify: Option<Value>) -> Value {
        let p = self.plan;
        let mut latency = serde_json::Map::new();
        for k in Kind::ALL {
            if !self.rec.corrected[&k].is_empty() {
                latency.insert(k.name().into(), json!({ "corrected": pct_json(&self.rec.corrected[&k]), "uncorrected": pct_json(&self.rec.uncorrected[&k]) }));
            }
        }
        latency.insert("all".into(), json!({ "corrected": pct_json(&all(&self.rec.corrected)), "uncorrected": pct_json(&all(&self.rec.uncorrected)) }));
        let phases: Vec<Value> = match &p.schedule {
            Some(s) => s.segments().iter().zip(&self.rec.phases).map(|(g, h)| json!({ "seconds": g.secs, "rate_from": g.from, "rate_to": g.to, "corrected": pct_json(h) })).collect(),
            None => Vec::new(),
        };
        json!({
            "target": p.host,
            "mode": if p.schedule.is_some() { "open" } else { "closed" },
            "scenario": p.scenario.name,
            "connections": p.connections,
            "threads": p.threads,
            "seed": p.seed,
            "run_id": p.run_id,
            "warmup_s": p.warmup,
            "elapsed_s": self.elapsed_secs,
            "measured_s": self.measured_secs,
            "achieved_rate": self.achieved_rate(),
            "requests": {
                "sent": self.rec.sent,
                "answered": self.rec.completed,
                "recorded": self.rec.recorded,
                "late": self.rec.late,
                "late_after_us": p.late_after.as_micros() as u64,
                "dropped": self.rec.dropped,
                "errors": self.errors(),
            },
            "status": self.rec.status.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "errors": self.rec.errors.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "latency_us": latency,
            "phases": phases,
            "slo": slos.iter().map(|(s, ok, actual)| json!({ "slo": format!("{s:?}"), "ok": ok, "actual": actual })).collect::<Vec<_>>(),
            "verify": verify,
        })
    }

    /// Checks each objective against the corrected latency of all kinds.
    pub fn check(&self, slos: &[Slo]) -> Vec<(Slo, bool, f64)> {
        let h = self.corrected_all();
        slos.iter()
            .map(|s| match s {
                Slo::Latency {
                    percentile,
                    limit_us,
                    ..
                } => {
                    let actual = match percentile {
                        Some(p) => us(&h, *p),
                        None => h.max() as f64 / 1e3,
                    };
                    (s.clone(), !h.is_empty() && actual <= *limit_us, actual)
                }
                Slo::Errors { limit, percent } => {
                    // Requests the schedule called for but that were never sent count as
                    // failed: they are exactly the ones a stalled server made wait longest.
                    let e = (self.errors() + self.rec.dropped) as f64;
                    let actual = if *percent {
                        100.0 * e / ((self.rec.completed + self.rec.dropped).max(1) as f64)
                    } else {
                        e
                    };
                    (s.clone(), actual <= *limit, actual)
                }
            })
            .collect()
    }
}

/// The percentile distribution in HdrHistogram's text format (values in milliseconds), as
/// wrk2 and HdrHistogram's plotter read it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            format!("{:>14}", "inf")
        };
        let total = h.count_between(0, v.value_iterated_to());
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {inv}",
            v.value_iterated_to() as f64 / 1e6,
            q,
            total
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1e6,
        h.stdev() / 1e6
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1e6,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slos_parse_and_refuse_nonsense() {
        assert_eq!(
            Slo::parse("p99=2ms").unwrap(),
            Slo::Latency {
                name: "p99".into(),
                percentile: Some(99.0),
                limit_us: 2000.0
            }
        );
        assert_eq!(
            Slo::parse("p99.9=10ms").unwrap(),
            Slo::Latency {
                name: "p99.9".into(),
                percentile: Some(99.9),
                limit_us: 10_000.0
            }
        );
        assert_eq!(
            Slo::parse("max=1s").unwrap(),
            Slo::Latency {
                name: "max".into(),
                percentile: None,
                limit_us: 1e6
            }
        );
        assert_eq!(
            Slo::parse("p50=250us").unwrap(),
            Slo::Latency {
                name: "p50".into(),
                percentile: Some(50.0),
                limit_us: 250.0
            }
        );
        assert_eq!(
            Slo::parse("errors=0").unwrap(),
            Slo::Errors {
                limit: 0.0,
                percent: false
            }
        );
        assert_eq!(
            Slo::parse("errors=0.5%").unwrap(),
            Slo::Errors {
                limit: 0.5,
                percent: true
            }
        );
        for bad in [
            "p99", "p99=2", "p100=1ms", "q99=1ms", "p99=-1ms", "errors=x", "=1ms",
        ] {
            assert!(Slo::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hgrm_lists_rising_percentiles_ending_at_the_max() {
        let mut h = histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let text = hgrm(&h);
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| {
                l.split_whitespace()
                    .take(3)
                    .map(|x| x.parse().unwrap())
                    .collect()
            })
            .collect();
        assert!(rows.len() > 20);
        assert!(rows
            .windows(2)
            .all(|w| w[1][0] >= w[0][0] && w[1][1] >= w[0][1] && w[1][2] >= w[0][2]));
        let last = rows.last().unwrap();
        assert!((last[0] - 10.0).abs() < 0.01, "max 10 ms: {last:?}");
        assert_eq!(last[2], 10_000.0);
        assert!(text.contains("Total count    =        10000"));
    }
}
