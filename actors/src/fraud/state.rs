//! The scorer's memory between records, each part bounded: recent clicks (for their
//! conversions), flagged clicks, affiliates' hourly click counts (spikes), click-to-
//! conversion tails, order ids, customers' recent conversions, impressions, and per
//! affiliate-day figures for the anomaly model.

use super::rules::Hit;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

/// Microseconds in a second and an hour.
pub const SECOND_US: i64 = 1_000_000;
pub const HOUR_US: i64 = 3_600 * SECOND_US;
pub const DAY_US: i64 = 24 * HOUR_US;

/// A map that forgets its oldest insertions past a bound.
#[derive(Debug)]
pub struct Fifo<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    max: usize,
    /// Entries forgotten because of the bound.
    pub evicted: u64,
}

impl<K: Hash + Eq + Clone, V> Fifo<K, V> {
    pub fn new(max: usize) -> Self {
        assert!(max > 0);
        Fifo {
            map: HashMap::new(),
            order: VecDeque::new(),
            max,
            evicted: 0,
        }
    }

    pub fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.map.len() > self.max {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if self.map.remove(&old).is_some() {
                    self.evicted += 1;
                }
            }
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The oldest key still held.
    pub fn oldest(&self) -> Option<&K> {
        self.order.iter().find(|k| self.map.contains_key(k))
    }
}

/// What a conversion needs of its click.
#[derive(Debug, Clone)]
pub struct ClickBrief {
    pub at_us: i64,
    pub affiliate: Arc<str>,
    pub campaign: Arc<str>,
    /// Key of the visitor (cookie, else fingerprint, else IP and user agent).
    pub visitor: u64,
    /// The key is the visitor cookie (a person, not a device or an address many share).
    pub cookie: bool,
    pub no_referrer: bool,
}

/// A flagged click: its hits (the conversion inherits them).
#[derive(Debug, Clone)]
pub struct Flagged {
    pub hits: Vec<Hit>,
}

/// Fewest clicks in an hour before a spike counts.
pub const SPIKE_CLICKS_MIN: u64 = 200;
/// Hours of history an affiliate's baseline looks back over (7 days).
pub const SPIKE_BASELINE_BUCKETS: i64 = 7 * 24;
/// Fewest hours of an affiliate's history before its baseline is trusted.
pub const SPIKE_HISTORY_MIN_BUCKETS: i64 = 24;

/// Affiliates' clicks per time bucket, against their own baseline.
#[derive(Debug, Default)]
pub struct Spikes {
    /// affiliate → its buckets.
    counts: HashMap<Arc<str>, Buckets>,
    /// (affiliate, bucket) found above its baseline, with the evidence.
    spiked: HashMap<(Arc<str>, i64), String>,
}

/// One affiliate's clicks per bucket.
#[derive(Debug, Default)]
struct Buckets {
    /// The first bucket seen.
    first: i64,
    counts: BTreeMap<i64, u64>,
    /// (bucket, history in buckets, mean clicks per bucket before it): the baseline of the
    /// bucket being filled, computed once per bucket.
    baseline: Option<(i64, i64, f64)>,
}

impl Spikes {
    /// Counts a click; answers the evidence when its bucket is a spike.
    pub fn add(
        &mut self,
        affiliate: &Arc<str>,
        at_us: i64,
        bucket_us: i64,
        factor: u64,
    ) -> Option<String> {
        let b = at_us.div_euclid(bucket_us.max(1));
        let e = self.counts.entry(affiliate.clone()).or_insert(Buckets {
            first: b,
            ..Buckets::default()
        });
        e.first = e.first.min(b);
        let n = {
            let c = e.counts.entry(b).or_default();
            *c += 1;
            *c
        };
        let keep_from =
            e.counts.keys().next_back().copied().unwrap_or(b) - SPIKE_BASELINE_BUCKETS - 1;
        while e
            .counts
            .first_key_value()
            .is_some_and(|(k, _)| *k < keep_from)
        {
            e.counts.pop_first();
        }
        let key = (affiliate.clone(), b);
        if let Some(why) = self.spiked.get(&key) {
            return Some(why.clone());
        }
        if n < SPIKE_CLICKS_MIN {
            return None;
        }
        let (history, mean) = match e.baseline {
            Some((cached, h, m)) if cached == b => (h, m),
            _ => {
                let history = (b - e.first).min(SPIKE_BASELINE_BUCKETS);
                let before: u64 = e.counts.range(b - history..b).map(|(_, c)| c).sum();
                let mean = before as f64 / history.max(1) as f64;
                e.baseline = Some((b, history, mean));
                (history, mean)
            }
        };
        if history < SPIKE_HISTORY_MIN_BUCKETS || n as f64 <= factor as f64 * mean.max(1.0) {
            return None;
        }
        let why = format!(
            "{n} clicks in one {} min bucket, {:.1} times the affiliate's mean of {mean:.1}",
            bucket_us / 60_000_000,
            n as f64 / mean.max(1.0)
        );
        self.spiked.insert(key, why.clone());
        Some(why)
    }

    /// The evidence when the bucket of `at_us` was a spike of the affiliate.
    pub fn spiked(&self, affiliate: &Arc<str>, at_us: i64, bucket_us: i64) -> Option<&String> {
        self.spiked
            .get(&(affiliate.clone(), at_us.div_euclid(bucket_us.max(1))))
    }

    pub fn affiliates(&self) -> usize {
        self.counts.len()
    }
}

/// Click-to-conversion tails per campaign and per (campaign, affiliate).
#[derive(Debug, Default)]
pub struct Tails {
    campaigns: HashMap<Arc<str>, (u64, u64)>,
    affiliates: HashMap<(Arc<str>, Arc<str>), (u64, u64)>,
}

impl Tails {
    /// Counts one conversion; answers the affiliate's tail as it now is.
    pub fn add(
        &mut self,
        campaign: &Arc<str>,
        affiliate: &Arc<str>,
        late: bool,
    ) -> super::rules::conversion::Tail {
        let c = self.campaigns.entry(campaign.clone()).or_default();
        c.0 += 1;
        c.1 += u64::from(late);
        let campaign_late_ppm = (c.1 * 1_000_000 / c.0) as u32;
        let a = self
            .affiliates
            .entry((campaign.clone(), affiliate.clone()))
            .or_default();
        a.0 += 1;
        a.1 += u64::from(late);
        super::rules::conversion::Tail {
            conversions: a.0,
            late: a.1,
            campaign_late_ppm,
        }
    }
}

/// One of a customer's recent conversions.
#[derive(Debug, Clone)]
struct Bought {
    at_us: i64,
    click: u64,
    affiliate: Arc<str>,
    conversion: Arc<str>,
}

/// Customers' recent conversions.
#[derive(Debug)]
pub struct Customers {
    seen: Fifo<u64, VecDeque<Bought>>,
}

/// Most conversions remembered per customer.
const CUSTOMER_CONVERSIONS_MAX: usize = 32;

impl Customers {
    pub fn new(max: usize) -> Self {
        Customers {
            seen: Fifo::new(max),
        }
    }

    /// Adds a conversion; answers the customer's conversions within the window that came
    /// each on its own click of this affiliate (this one last).
    pub fn add(
        &mut self,
        customer: u64,
        at_us: i64,
        click: u64,
        affiliate: &Arc<str>,
        conversion: &Arc<str>,
        window_us: i64,
    ) -> Vec<Arc<str>> {
        if self.seen.get(&customer).is_none() {
            self.seen.insert(customer, VecDeque::new());
        }
        let q = self.seen.get_mut(&customer).expect("just inserted");
        q.push_back(Bought {
            at_us,
            click,
            affiliate: affiliate.clone(),
            conversion: conversion.clone(),
        });
        if q.len() > CUSTOMER_CONVERSIONS_MAX {
            q.pop_front();
        }
        let mut clicks = std::collections::HashSet::new();
        q.iter()
            .filter(|b| (at_us - b.at_us).abs() < window_us && b.affiliate == *affiliate)
            .filter(|b| clicks.insert(b.click))
            .map(|b| b.conversion.clone())
            .collect()
    }
}

/// Per affiliate, the share of its clicks that carry a trait (from a data centre, from
/// another site than its own): honest partners have a few such clicks, fraud is made of
/// them.
#[derive(Debug, Default)]
pub struct Shares {
    counts: HashMap<(Arc<str>, u8), (u64, u64)>,
}

impl Shares {
    /// Counts a click of the affiliate, with or without trait `which`; answers the counts
    /// as a tail (`late` = clicks with the trait).
    pub fn add(
        &mut self,
        affiliate: &Arc<str>,
        which: u8,
        has: bool,
    ) -> super::rules::conversion::Tail {
        let e = self.counts.entry((affiliate.clone(), which)).or_default();
        e.0 += 1;
        e.1 += u64::from(has);
        super::rules::conversion::Tail {
            conversions: e.0,
            late: e.1,
            campaign_late_ppm: 0,
        }
    }
}

/// Per affiliate and day: what the anomaly model reads of the affiliate's traffic.
#[derive(Debug, Default, Clone, Copy)]
pub struct Day {
    pub clicks: u64,
    pub flagged_clicks: u64,
    pub no_referrer: u64,
    pub conversions: u64,
}

/// Per affiliate: totals and the last days.
#[derive(Debug, Default)]
pub struct Affiliates {
    days: HashMap<(Arc<str>, i64), Day>,
    totals: HashMap<Arc<str>, (u64, u64)>,
    campaign_totals: HashMap<Arc<str>, (u64, u64)>,
    newest_day: i64,
}

/// Days of per-affiliate figures kept.
const DAYS_KEPT: i64 = 2;

impl Affiliates {
    pub fn day_mut(&mut self, affiliate: &Arc<str>, at_us: i64) -> &mut Day {
        let d = at_us.div_euclid(DAY_US);
        if d > self.newest_day {
            self.newest_day = d;
            let keep = d - DAYS_KEPT;
            self.days.retain(|(_, day), _| *day > keep);
        }
        self.days.entry((affiliate.clone(), d)).or_default()
    }

    pub fn day(&self, affiliate: &Arc<str>, at_us: i64) -> Day {
        self.days
            .get(&(affiliate.clone(), at_us.div_euclid(DAY_US)))
            .copied()
            .unwrap_or_default()
    }

    /// Counts a click (`conversion` false) or a conversion of the affiliate and campaign.
    pub fn count(&mut self, affiliate: &Arc<str>, campaign: &Arc<str>, conversion: bool) {
        for e in [
            self.totals.entry(affiliate.clone()).or_default(),
            self.campaign_totals.entry(campaign.clone()).or_default(),
        ] {
            if conversion {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
    }

    /// (affiliate's, campaign's) conversions per click, smoothed.
    pub fn rates(&self, affiliate: &Arc<str>, campaign: &Arc<str>) -> (f64, f64) {
        let rate = |(clicks, conv): (u64, u64)| (conv as f64 + 1.0) / (clicks as f64 + 20.0);
        (
            rate(self.totals.get(affiliate).copied().unwrap_or_default()),
            rate(
                self.campaign_totals
                    .get(campaign)
                    .copied()
                    .unwrap_or_default(),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_forgets_the_oldest() {
        let mut f = Fifo::new(2);
        f.insert(1, "a");
        f.insert(2, "b");
        f.insert(1, "a2");
        f.insert(3, "c");
        assert_eq!(
            (f.get(&1), f.get(&2), f.get(&3)),
            (None, Some(&"b"), Some(&"c"))
        );
        assert_eq!((f.len(), f.evicted, f.oldest()), (2, 1, Some(&2)));
    }

    #[test]
    fn a_spike_needs_history_volume_and_the_factor() {
        let a: Arc<str> = Arc::from("a");
        let mut s = Spikes::default();
        // 48 hours of 40 clicks an hour.
        for h in 0..48 {
            for _ in 0..40 {
                assert!(s.add(&a, h * HOUR_US, HOUR_US, 5).is_none());
            }
        }
        // Hour 48: 200 clicks is exactly 5 times 40: not above; the 201st is.
        for n in 0..201 {
            let r = s.add(&a, 48 * HOUR_US, HOUR_US, 5);
            assert_eq!(r.is_some(), n == 200, "click {n}");
        }
        assert!(s.spiked(&a, 48 * HOUR_US + 5, HOUR_US).is_some());
        assert!(s.spiked(&a, 47 * HOUR_US, HOUR_US).is_none());
        // A new affiliate's first busy hour is no spike (no baseline yet).
        let b: Arc<str> = Arc::from("b");
        for _ in 0..1000 {
            assert!(s.add(&b, 48 * HOUR_US, HOUR_US, 5).is_none());
        }
    }

    #[test]
    fn tails_and_repeat_customers() {
        let (c, a): (Arc<str>, Arc<str>) = (Arc::from("c"), Arc::from("a"));
        let mut t = Tails::default();
        t.add(&c, &Arc::from("b"), false);
        let tail = t.add(&c, &a, true);
        assert_eq!(
            (tail.conversions, tail.late, tail.campaign_late_ppm),
            (1, 1, 500_000)
        );
        let mut cu = Customers::new(10);
        let v = |n: u32| -> Arc<str> { Arc::from(format!("v{n}")) };
        assert_eq!(cu.add(7, 0, 1, &a, &v(1), DAY_US).len(), 1);
        assert_eq!(
            cu.add(7, HOUR_US, 1, &a, &v(2), DAY_US).len(),
            1,
            "same click"
        );
        assert_eq!(cu.add(7, 2 * HOUR_US, 2, &a, &v(3), DAY_US), [v(1), v(3)]);
        assert_eq!(
            cu.add(7, 2 * DAY_US, 3, &a, &v(4), DAY_US).len(),
            1,
            "outside the window"
        );
    }
}
