//! Live counters: clicks, impressions and unique visitors per affiliate, per campaign and
//! per sub-id value, derived from the ingest partitions and read by the stats API.
//!
//! The counters are in-memory state only (the processor writes nothing): after a restart it
//! reads the ingest partitions from their start again and rebuilds them. Unique visitors
//! are exact up to [`EXACT_VISITORS_MAX`] per key, then a HyperLogLog estimate (about 3%
//! standard error) so memory stays bounded. At most [`KEYS_MAX`] keys per dimension are
//! tracked; later keys are counted under `(other)`.

use crate::worker::{Output, Processor};
use clicktrail_storage::schema::{Click, Impression};
use clicktrail_storage::{Record, RecordExt};
use std::collections::{HashMap, HashSet};

/// The counters are looked up three or more times per click: SipHash showed in the click
/// profile. foldhash is seeded per process (its authors call it minimally DoS-resistant),
/// and each dimension holds at most `KEYS_MAX` keys, so chosen sub-ids can at worst slow
/// a bounded table.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::{Arc, Mutex};

/// Exact visitor ids kept per key before switching to an estimate.
pub const EXACT_VISITORS_MAX: usize = 1024;
/// Most keys per dimension.
pub const KEYS_MAX: usize = 100_000;
/// Key that collects everything past `KEYS_MAX`.
pub const OTHER_KEY: &str = "(other)";
const HLL_BITS: u32 = 10;
const HLL_REGISTERS: usize = 1 << HLL_BITS;

fn hash64(s: &str) -> u64 {
    // FNV-1a then a murmur finaliser: stable across builds and runs (unlike `DefaultHasher`).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Distinct visitor counter: exact while small, HyperLogLog after.
#[derive(Debug, Clone)]
enum Visitors {
    Exact(HashSet<u64>),
    Estimate(Box<[u8; HLL_REGISTERS]>),
}

impl Default for Visitors {
    fn default() -> Self {
        Visitors::Exact(HashSet::new())
    }
}

impl Visitors {
    fn add(&mut self, h: u64) {
        match self {
            Visitors::Exact(set) => {
                set.insert(h);
                if set.len() > EXACT_VISITORS_MAX {
                    self.switch_to_estimate();
                }
            }
            Visitors::Estimate(regs) => hll_add(regs, h),
        }
    }

    /// Turns an exact set into the estimate (nothing for an estimate already).
    fn switch_to_estimate(&mut self) {
        if let Visitors::Exact(set) = self {
            let mut regs = Box::new([0u8; HLL_REGISTERS]);
            for h in set.iter() {
                hll_add(&mut regs, *h);
            }
            *self = Visitors::Estimate(regs);
        }
    }

    /// Adds `other`'s visitors (a visitor in both counts once, exactly or in the estimate).
    fn merge(&mut self, other: &Visitors) {
        match other {
            Visitors::Exact(set) => set.iter().for_each(|h| self.add(*h)),
            Visitors::Estimate(theirs) => {
                self.switch_to_estimate();
                if let Visitors::Estimate(mine) = self {
                    for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                        *m = (*m).max(*t);
                    }
                }
            }
        }
    }

    fn count(&self) -> u64 {
        match self {
            Visitors::Exact(set) => set.len() as u64,
            Visitors::Estimate(regs) => {
                let m = HLL_REGISTERS as f64;
                let sum: f64 = regs.iter().map(|r| 2f64.powi(-(*r as i32))).sum();
                let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
                let zeros = regs.iter().filter(|r| **r == 0).count();
                let est = if raw <= 2.5 * m && zeros > 0 {
                    m * (m / zeros as f64).ln() // linear counting for small ranges
                } else {
                    raw
                };
                est.round() as u64
            }
        }
    }
}

fn hll_add(regs: &mut [u8; HLL_REGISTERS], h: u64) {
    let idx = (h >> (64 - HLL_BITS)) as usize;
    let rank = ((h << HLL_BITS) | (1 << (HLL_BITS - 1))).leading_zeros() as u8 + 1;
    regs[idx] = regs[idx].max(rank);
}

/// Counters of one key.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    pub clicks: u64,
    pub impressions: u64,
    visitors: Visitors,
}

impl Counter {
    pub fn unique_visitors(&self) -> u64 {
        self.visitors.count()
    }
}

/// What the counters are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Affiliate,
    Campaign,
    /// sub1..sub5 (0-based slot).
    Sub(u8),
}

impl Dimension {
    fn index(self) -> usize {
        match self {
            Dimension::Affiliate => 0,
            Dimension::Campaign => 1,
            Dimension::Sub(i) => 2 + (i as usize).min(4),
        }
    }

    pub fn parse(s: &str) -> Option<Dimension> {
        Some(match s {
            "affiliate" => Dimension::Affiliate,
            "campaign" => Dimension::Campaign,
            "sub1" => Dimension::Sub(0),
            "sub2" => Dimension::Sub(1),
            "sub3" => Dimension::Sub(2),
            "sub4" => Dimension::Sub(3),
            "sub5" => Dimension::Sub(4),
            _ => return None,
        })
    }
}

/// Counters per (dimension, affiliate, key): the affiliate is always part of the key so a
/// partner can be shown only its own numbers. Nested maps so a lookup needs no allocation.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Indexed by [`Dimension::index`].
    counters: [Keys; 7],
}

/// One dimension's counters: affiliate -> key -> counter.
#[derive(Debug, Default)]
struct Keys {
    by_affiliate: FastMap<String, FastMap<String, Counter>>,
    /// Keys held in all (bounded by `KEYS_MAX`).
    count: usize,
}

/// One row of a stats answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The affiliate the row counts; `None` for a row over every affiliate.
    pub affiliate_id: Option<String>,
    pub key: String,
    pub clicks: u64,
    pub impressions: u64,
    pub unique_visitors: u64,
}

impl LiveStats {
    fn bump(&mut self, dim: Dimension, affiliate: &str, key: &str, f: impl Fn(&mut Counter)) {
        let keys = &mut self.counters[dim.index()];
        if !keys.by_affiliate.contains_key(affiliate) {
            keys.by_affiliate
                .insert(affiliate.to_string(), FastMap::default());
        }
        let map = keys
            .by_affiliate
            .get_mut(affiliate)
            .expect("inserted above");
        if let Some(c) = map.get_mut(key) {
            return f(c);
        }
        let key = if keys.count < KEYS_MAX {
            keys.count += 1;
            key
        } else {
            OTHER_KEY
        };
        f(map.entry(key.to_string()).or_default());
    }

    fn record(
        &mut self,
        affiliate: &str,
        campaign: &str,
        subs: &[&str],
        visitor: Option<&str>,
        click: bool,
    ) {
        let h = visitor.map(hash64);
        let f = |c: &mut Counter| {
            if click {
                c.clicks += 1;
            } else {
                c.impressions += 1;
            }
            if let Some(h) = h {
                c.visitors.add(h);
            }
        };
        self.bump(Dimension::Affiliate, affiliate, affiliate, f);
        self.bump(Dimension::Campaign, affiliate, campaign, f);
        for (i, s) in subs.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            self.bump(Dimension::Sub(i as u8), affiliate, s, f);
        }
    }

    /// Rows for a dimension, busiest first: one per key. With `affiliate`, only that
    /// affiliate's counts; without, each key's counts over every affiliate (a visitor who
    /// clicked two affiliates' links counts once), except by affiliate, whose keys are
    /// the affiliates.
    pub fn rows(&self, dim: Dimension, affiliate: Option<&str>) -> Vec<Row> {
        let keys = self.counters.get(dim.index());
        let per_affiliate = keys
            .into_iter()
            .flat_map(|k| k.by_affiliate.iter())
            .filter(|(a, _)| affiliate.is_none_or(|x| x == a.as_str()));
        let mut rows: Vec<Row> = if affiliate.is_some() || dim == Dimension::Affiliate {
            per_affiliate
                .flat_map(|(a, keys)| {
                    keys.iter().map(move |(k, c)| Row {
                        affiliate_id: Some(a.clone()),
                        key: k.clone(),
                        clicks: c.clicks,
                        impressions: c.impressions,
                        unique_visitors: c.unique_visitors(),
                    })
                })
                .collect()
        } else {
            let mut merged: std::collections::BTreeMap<&str, Counter> = Default::default();
            for (k, c) in per_affiliate.flat_map(|(_, keys)| keys.iter()) {
                let m = merged.entry(k.as_str()).or_default();
                m.clicks += c.clicks;
                m.impressions += c.impressions;
                m.visitors.merge(&c.visitors);
            }
            merged
                .into_iter()
                .map(|(k, c)| Row {
                    affiliate_id: None,
                    key: k.to_string(),
                    clicks: c.clicks,
                    impressions: c.impressions,
                    unique_visitors: c.unique_visitors(),
                })
                .collect()
        };
        rows.sort_by(|a, b| b.clicks.cmp(&a.clicks).then_with(|| a.key.cmp(&b.key)));
        rows
    }
}

/// Shared handle the API reads.
pub type SharedStats = Arc<Mutex<LiveStats>>;

/// The processor that keeps [`LiveStats`] current.
#[derive(Debug)]
pub struct StatsCounter {
    inputs: Vec<String>,
    stats: SharedStats,
}

impl StatsCounter {
    /// A fresh counter: it resets the shared stats (it recounts from the journal's start).
    pub fn new(inputs: Vec<String>, stats: SharedStats) -> Self {
        // A new instance starts from nothing (also after a panic left the lock poisoned).
        *stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = LiveStats::default();
        stats.clear_poison();
        StatsCounter { inputs, stats }
    }
}

impl Processor for StatsCounter {
    fn name(&self) -> &str {
        "live-stats"
    }

    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output(&self) -> String {
        crate::system::LIVE_STATS.into()
    }

    /// It writes nothing but dead letters: its state is rebuilt by reading every input
    /// from the start.
    fn resumes_from_output(&self) -> bool {
        false
    }

    fn process(&mut self, input: &Record<'_>, _out: &mut Vec<Output>) -> Result<(), String> {
        if let Some(c) = input.event::<Click>() {
            let subs: Vec<&str> = c.sub_ids.iter().map(|s| s.as_str()).collect();
            let visitor = c.visitor_id.as_ref().map(|v| v.as_str());
            self.stats.lock().unwrap().record(
                &c.affiliate_id,
                &c.campaign_id,
                &subs,
                visitor,
                true,
            );
        } else if let Some(i) = input.event::<Impression>() {
            let visitor = i.visitor_id.as_ref().map(|v| v.as_str());
            self.stats
                .lock()
                .unwrap()
                .record(&i.affiliate_id, &i.campaign_id, &[], visitor, false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_clicks_and_unique_visitors_per_dimension() {
        let mut s = LiveStats::default();
        s.record("a", "c", &["x", "", "z"], Some("v1"), true);
        s.record("a", "c", &["x"], Some("v1"), true);
        s.record("a", "c", &["y"], Some("v2"), true);
        s.record("b", "c", &[], None, true);
        s.record("a", "c", &[], Some("v3"), false);
        let aff = s.rows(Dimension::Affiliate, None);
        assert_eq!(
            aff[0],
            Row {
                affiliate_id: Some("a".into()),
                key: "a".into(),
                clicks: 3,
                impressions: 1,
                unique_visitors: 3
            }
        );
        let sub1 = s.rows(Dimension::Sub(0), Some("a"));
        assert_eq!(
            sub1.iter()
                .map(|r| (r.key.as_str(), r.clicks, r.unique_visitors))
                .collect::<Vec<_>>(),
            vec![("x", 2, 1), ("y", 1, 1)]
        );
        assert_eq!(s.rows(Dimension::Sub(2), None)[0].key, "z");
        assert!(s.rows(Dimension::Sub(1), None).is_empty());
        assert_eq!(s.rows(Dimension::Campaign, Some("b"))[0].clicks, 1);
    }

    /// By campaign (or sub-id) over every affiliate: one row per key, not one per
    /// affiliate and key; a visitor of both affiliates counts once, also past the exact
    /// limit.
    #[test]
    fn rows_over_every_affiliate_group_by_the_key_asked_for() {
        let mut s = LiveStats::default();
        s.record("a", "c", &["x"], Some("v1"), true);
        s.record("b", "c", &["x"], Some("v1"), true);
        s.record("b", "c", &["y"], Some("v2"), true);
        s.record("b", "d", &[], Some("v3"), false);
        let rows = s.rows(Dimension::Campaign, None);
        assert_eq!(
            rows,
            vec![
                Row {
                    affiliate_id: None,
                    key: "c".into(),
                    clicks: 3,
                    impressions: 0,
                    unique_visitors: 2,
                },
                Row {
                    affiliate_id: None,
                    key: "d".into(),
                    clicks: 0,
                    impressions: 1,
                    unique_visitors: 1,
                },
            ]
        );
        let subs = s.rows(Dimension::Sub(0), None);
        assert_eq!(
            subs.iter()
                .map(|r| (r.key.as_str(), r.clicks))
                .collect::<Vec<_>>(),
            vec![("x", 2), ("y", 1)]
        );
        // Estimates merge too: 3000 visitors, 1000 of them shared, counted about 3000.
        let mut s = LiveStats::default();
        for v in 0..2000 {
            s.record("a", "c", &[], Some(&format!("v{v}")), true);
            s.record("b", "c", &[], Some(&format!("v{}", v + 1000)), true);
        }
        let n = s.rows(Dimension::Campaign, None)[0].unique_visitors as f64;
        assert!((n - 3000.0).abs() / 3000.0 < 0.1, "{n}");
    }

    #[test]
    fn unique_visitors_switch_to_a_bounded_estimate() {
        let mut v = Visitors::default();
        for i in 0..50_000 {
            v.add(hash64(&format!("visitor-{i}")));
            v.add(hash64(&format!("visitor-{i}"))); // repeats do not count
        }
        assert!(matches!(v, Visitors::Estimate(_)));
        let n = v.count() as f64;
        assert!((n - 50_000.0).abs() / 50_000.0 < 0.1, "estimate {n}");
        let mut small = Visitors::default();
        for i in 0..1000 {
            small.add(hash64(&i.to_string()));
        }
        assert_eq!(small.count(), 1000, "exact while small");
    }
}
