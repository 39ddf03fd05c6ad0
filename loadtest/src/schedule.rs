//! When each request is meant to be sent: a piecewise-linear rate over time.
//!
//! The n-th request (0-based) of a schedule is due when the integral of the rate since the
//! start reaches n. A constant rate is one flat segment, a ramp one sloped segment, steps a
//! row of flat ones. Latency is measured from this intended time, so a server that stalls
//! is charged for every request that should have gone out meanwhile (no coordinated
//! omission).

/// One stretch of the schedule: the rate goes linearly from `from` to `to` requests/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub secs: f64,
    pub from: f64,
    pub to: f64,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    segs: Vec<Segment>,
    /// Requests due before each segment starts, and its start time.
    cum: Vec<f64>,
    starts: Vec<f64>,
}

impl Schedule {
    pub fn new(segs: Vec<Segment>) -> Result<Schedule, String> {
        if segs.is_empty() {
            return Err("empty schedule".into());
        }
        let (mut cum, mut starts) = (Vec::new(), Vec::new());
        let (mut n, mut t) = (0.0, 0.0);
        for s in &segs {
            if !(s.secs > 0.0 && s.secs.is_finite()) {
                return Err("every part of a schedule needs a positive duration".into());
            }
            if !(s.from >= 0.0 && s.to >= 0.0 && s.from.is_finite() && s.to.is_finite()) {
                return Err("rates must be finite and not negative".into());
            }
            if s.from == 0.0 && s.to == 0.0 {
                return Err("a rate of zero sends nothing".into());
            }
            cum.push(n);
            starts.push(t);
            n += (s.from + s.to) / 2.0 * s.secs;
            t += s.secs;
        }
        Ok(Schedule { segs, cum, starts })
    }

    /// A constant rate after a warm-up at the same rate.
    #[cfg(test)]
    pub fn constant(rate: f64, warmup: f64, secs: f64) -> Result<Schedule, String> {
        Schedule::new(with_warmup(
            warmup,
            rate,
            vec![Segment {
                secs,
                from: rate,
                to: rate,
            }],
        ))
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segs
    }

    pub fn total_secs(&self) -> f64 {
        self.starts.last().unwrap() + self.segs.last().unwrap().secs
    }

    /// Requests the whole schedule sends.
    pub fn total_requests(&self) -> f64 {
        let s = self.segs.last().unwrap();
        self.cum.last().unwrap() + (s.from + s.to) / 2.0 * s.secs
    }

    /// Seconds from the start at which request `n` is due, `None` past the end.
    pub fn time_of(&self, n: u64) -> Option<f64> {
        let x = n as f64;
        let i = self.cum.partition_point(|&c| c <= x).checked_sub(1)?;
        let s = self.segs[i];
        let r = x - self.cum[i];
        let slope = (s.to - s.from) / s.secs;
        // from*t + slope*t^2/2 = r
        let t = if slope.abs() < 1e-9 {
            r / s.from
        } else {
            (-s.from + (s.from * s.from + 2.0 * slope * r).max(0.0).sqrt()) / slope
        };
        if t < s.secs {
            Some(self.starts[i] + t)
        } else if i + 1 < self.segs.len() {
            // Rounding put it at the end of a segment that is not the last: the boundary.
            Some(self.starts[i + 1])
        } else {
            None
        }
    }

    /// Index of the segment a time (seconds from start) falls in.
    pub fn segment_at(&self, t: f64) -> usize {
        self.starts
            .partition_point(|&s| s <= t)
            .saturating_sub(1)
            .min(self.segs.len() - 1)
    }
}

/// `segs` preceded by a warm-up segment at `rate` (nothing when `warmup` is 0).
pub fn with_warmup(warmup: f64, rate: f64, mut segs: Vec<Segment>) -> Vec<Segment> {
    if warmup > 0.0 {
        segs.insert(
            0,
            Segment {
                secs: warmup,
                from: rate,
                to: rate,
            },
        );
    }
    segs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &Schedule, from: f64, to: f64) -> usize {
        (0..)
            .map_while(|n| s.time_of(n))
            .filter(|&t| t >= from && t < to)
            .count()
    }

    #[test]
    fn constant_rate_is_evenly_spaced() {
        let s = Schedule::constant(1000.0, 0.0, 2.0).unwrap();
        assert_eq!(s.time_of(0), Some(0.0));
        assert!((s.time_of(500).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(s.time_of(2000), None);
        assert_eq!(count(&s, 0.0, 2.0), 2000);
    }

    #[test]
    fn a_ramp_sends_the_area_under_it_and_speeds_up() {
        let s = Schedule::new(vec![Segment {
            secs: 10.0,
            from: 100.0,
            to: 1100.0,
        }])
        .unwrap();
        assert!((s.total_requests() - 6000.0).abs() < 1e-6);
        let n = (0..).map_while(|n| s.time_of(n)).count();
        assert!((5999..=6000).contains(&n), "{n}");
        // Rate at 1 s is 200/s, at 9 s 1000/s: the last second holds ~5x the second one.
        let early = count(&s, 1.0, 2.0) as f64;
        let late = count(&s, 9.0, 10.0) as f64;
        assert!((early - 250.0).abs() <= 2.0, "{early}");
        assert!((late - 1050.0).abs() <= 2.0, "{late}");
        let times: Vec<f64> = (0..).map_while(|n| s.time_of(n)).collect();
        assert!(times.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn steps_follow_each_other() {
        let segs = with_warmup(
            1.0,
            10.0,
            vec![
                Segment {
                    secs: 2.0,
                    from: 10.0,
                    to: 10.0,
                },
                Segment {
                    secs: 2.0,
                    from: 100.0,
                    to: 100.0,
                },
            ],
        );
        let s = Schedule::new(segs).unwrap();
        assert_eq!(count(&s, 0.0, 1.0), 10);
        assert_eq!(count(&s, 1.0, 3.0), 20);
        assert_eq!(count(&s, 3.0, 5.0), 200);
        assert_eq!(s.segment_at(0.5), 0);
        assert_eq!(s.segment_at(3.5), 2);
        assert_eq!(s.segment_at(99.0), 2);
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(Schedule::new(vec![]).is_err());
        assert!(Schedule::constant(0.0, 0.0, 1.0).is_err());
        assert!(Schedule::constant(10.0, 0.0, 0.0).is_err());
        assert!(Schedule::constant(f64::NAN, 0.0, 1.0).is_err());
    }
}
