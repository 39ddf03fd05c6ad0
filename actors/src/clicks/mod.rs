//! Recent clicks: an in-memory index of the clicks still inside any attribution window,
//! derived from the ingest partitions (rebuilt from the journal on start, like every
//! actor's state). Conversions use it to match by fingerprint; postbacks to fill the
//! click's sub-ids.
//!
//! Bounded: at most `capacity` clicks (default [`CLICKS_MAX`]); the oldest go first.
//! Fingerprints of opted-out visitors are never stored, so they never match.

use crate::worker::{Output, Processor};
use clicktrail_storage::schema::Click;
use clicktrail_storage::{Record, RecordExt};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Default bound on indexed clicks (about 300 bytes each; `conversions.click-index-max`).
pub const CLICKS_MAX: usize = 200_000;

/// What a conversion or postback needs of a click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickInfo {
    /// Shared with the index's own maps (one allocation per click, not three).
    pub click_id: Arc<str>,
    pub at_us: i64,
    pub affiliate_id: String,
    pub campaign_id: String,
    pub sub_ids: Vec<String>,
}

/// See the module docs.
#[derive(Debug)]
pub struct RecentClicks {
    capacity: usize,
    by_id: HashMap<Arc<str>, ClickInfo, foldhash::fast::RandomState>,
    /// Latest click per fingerprint: (click id, time).
    by_fingerprint: HashMap<u64, (Arc<str>, i64), foldhash::fast::RandomState>,
    /// Insertion order, for eviction: (click id, fingerprint).
    order: VecDeque<(Arc<str>, Option<u64>)>,
}

impl RecentClicks {
    pub fn new(capacity: usize) -> Self {
        RecentClicks {
            capacity: capacity.max(1),
            by_id: HashMap::default(),
            by_fingerprint: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    pub fn insert(&mut self, info: ClickInfo, fingerprint: Option<u64>) {
        while self.order.len() >= self.capacity {
            let Some((old, fp)) = self.order.pop_front() else {
                break;
            };
            self.by_id.remove(&old);
            if let Some(fp) = fp {
                if self
                    .by_fingerprint
                    .get(&fp)
                    .is_some_and(|(id, _)| *id == old)
                {
                    self.by_fingerprint.remove(&fp);
                }
            }
        }
        if let Some(fp) = fingerprint {
            self.by_fingerprint
                .insert(fp, (info.click_id.clone(), info.at_us));
        }
        self.order.push_back((info.click_id.clone(), fingerprint));
        self.by_id.insert(info.click_id.clone(), info);
    }

    pub fn get(&self, click_id: &str) -> Option<&ClickInfo> {
        self.by_id.get(click_id)
    }

    /// The latest click with this fingerprint at or after `since_us`.
    pub fn by_fingerprint(&self, fingerprint: u64, since_us: i64) -> Option<&ClickInfo> {
        let (id, at) = self.by_fingerprint.get(&fingerprint)?;
        (*at >= since_us).then(|| self.by_id.get(id)).flatten()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// When the oldest indexed click happened (µs since the epoch): how far back
    /// fingerprint matches and postback sub-ids reach now.
    pub fn oldest_at_us(&self) -> Option<i64> {
        // A click id seen twice (the same record replayed) leaves an older entry in
        // `order` whose click is gone from `by_id`: skip those.
        self.order
            .iter()
            .find_map(|(id, _)| self.by_id.get(id))
            .map(|c| c.at_us)
    }

    /// The most clicks kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Shared handle the edge reads.
pub type SharedClicks = Arc<Mutex<RecentClicks>>;

/// The processor that keeps [`RecentClicks`] current.
#[derive(Debug)]
pub struct ClickIndexer {
    inputs: Vec<String>,
    clicks: SharedClicks,
}

impl ClickIndexer {
    /// A fresh indexer: it empties the shared index (it reads the journal from its start).
    pub fn new(inputs: Vec<String>, clicks: SharedClicks) -> Self {
        {
            let mut c = clicks.lock().unwrap();
            *c = RecentClicks::new(c.capacity);
        }
        ClickIndexer { inputs, clicks }
    }
}

impl Processor for ClickIndexer {
    fn name(&self) -> &str {
        "click-index"
    }

    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output(&self) -> String {
        "click-index".into()
    }

    fn process(&mut self, input: &Record<'_>, _out: &mut Vec<Output>) -> Result<(), String> {
        let Some(c) = input.event::<Click>() else {
            return Ok(());
        };
        let info = ClickInfo {
            click_id: c.click_id.as_str().into(),
            at_us: c.at_us.to_native(),
            affiliate_id: c.affiliate_id.as_str().to_string(),
            campaign_id: c.campaign_id.as_str().to_string(),
            sub_ids: c.sub_ids.iter().map(|s| s.as_str().to_string()).collect(),
        };
        let fp = if c.opted_out {
            None
        } else {
            c.fingerprint.as_ref().map(|f| f.to_native())
        };
        self.clicks.lock().unwrap().insert(info, fp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, at: i64) -> ClickInfo {
        ClickInfo {
            click_id: id.into(),
            at_us: at,
            affiliate_id: "a".into(),
            campaign_id: "c".into(),
            sub_ids: vec![],
        }
    }

    #[test]
    fn latest_click_per_fingerprint_within_the_window_and_bounded() {
        let mut r = RecentClicks::new(3);
        r.insert(info("c1", 100), Some(7));
        r.insert(info("c2", 200), Some(7));
        r.insert(info("c3", 300), None);
        assert_eq!(&*r.by_fingerprint(7, 150).unwrap().click_id, "c2");
        assert!(r.by_fingerprint(7, 250).is_none(), "outside the window");
        assert!(r.by_fingerprint(8, 0).is_none());
        r.insert(info("c4", 400), Some(9));
        assert_eq!(r.len(), 3, "bounded");
        assert!(r.get("c1").is_none(), "oldest evicted");
        assert_eq!(&*r.by_fingerprint(7, 0).unwrap().click_id, "c2");
        r.insert(info("c5", 500), None);
        assert!(
            r.by_fingerprint(7, 0).is_none(),
            "evicted click no longer matches"
        );
    }

    #[test]
    fn the_reach_is_the_oldest_click_kept() {
        let mut r = RecentClicks::new(2);
        assert_eq!(r.oldest_at_us(), None);
        r.insert(info("c1", 100), None);
        r.insert(info("c2", 200), None);
        assert_eq!(r.oldest_at_us(), Some(100));
        r.insert(info("c3", 300), None);
        assert_eq!(r.oldest_at_us(), Some(200), "c1 evicted");
        // The same click twice (a replayed record): the stale entry is skipped.
        r.insert(info("c3", 300), None);
        assert_eq!(r.oldest_at_us(), Some(300));
        assert_eq!(r.len(), 1);
        assert_eq!(r.capacity(), 2);
    }
}
