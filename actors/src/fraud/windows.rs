//! Sliding windows in event time: "more than N clicks from one key within W seconds", and
//! "clicks for N distinct merchants from one key within W seconds". Each entry keeps its
//! click id, so the click that crosses the limit flags the earlier ones of the burst too
//! (the first clicks of a flood are as guilty as the last).
//!
//! Memory: at most `keys_max` keys per window family; a key holds at most
//! [`PER_KEY_MAX`] entries, and keys with nothing inside their window are swept out.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most entries one key keeps (a flood beyond it is past every limit anyway).
pub const PER_KEY_MAX: usize = 256;
/// Inserts between sweeps of keys whose window has passed.
const SWEEP_EVERY: u64 = 65_536;

#[derive(Debug)]
struct Entry {
    at_us: i64,
    tag: u64,
    id: Arc<str>,
    flagged: bool,
}

/// What a window says after an insert.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Crossed {
    /// Entries (or distinct tags) within the window ending at the new entry.
    pub count: usize,
    /// Ids newly flagged by this crossing (the new one included), oldest first.
    pub flagged: Vec<Arc<str>>,
}

/// What a window counts: over `window_us`, more than `limit` entries, or (`distinct`)
/// `limit` distinct tags or more.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub window_us: i64,
    pub limit: usize,
    pub distinct: bool,
}

/// One family of windows (per IP, per subnet...).
#[derive(Debug)]
pub struct Windows {
    keys: HashMap<u64, VecDeque<Entry>>,
    keys_max: usize,
    newest_us: i64,
    inserts: u64,
    /// Keys dropped because the family was full.
    pub evicted: u64,
}

impl Windows {
    pub fn new(keys_max: usize) -> Windows {
        assert!(keys_max > 0);
        Windows {
            keys: HashMap::new(),
            keys_max,
            newest_us: i64::MIN,
            inserts: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds a click and counts the window `(at − window, at]`; when the count (of entries,
    /// or of distinct tags when `distinct`) exceeds `limit` (reaches it, for `distinct`),
    /// flags every entry in the window not flagged yet.
    pub fn add(&mut self, key: u64, at_us: i64, tag: u64, id: &Arc<str>, l: Limit) -> Crossed {
        let Limit {
            window_us,
            limit,
            distinct,
        } = l;
        self.make_room(window_us);
        self.newest_us = self.newest_us.max(at_us);
        let q = self.keys.entry(key).or_default();
        // Entries are kept in time order; a late (imported) one goes where it belongs.
        let pos = q.partition_point(|e| e.at_us <= at_us);
        q.insert(
            pos,
            Entry {
                at_us,
                tag,
                id: id.clone(),
                flagged: false,
            },
        );
        let newest = q.back().map_or(at_us, |e| e.at_us);
        while q.len() > PER_KEY_MAX || q.front().is_some_and(|e| e.at_us <= newest - window_us) {
            q.pop_front();
        }
        let inside = q
            .iter()
            .filter(|e| e.at_us > at_us - window_us && e.at_us <= at_us);
        let count = if distinct {
            let mut tags: Vec<u64> = inside.map(|e| e.tag).collect();
            tags.sort_unstable();
            tags.dedup();
            tags.len()
        } else {
            inside.count()
        };
        let crossed = if distinct {
            count >= limit
        } else {
            count > limit
        };
        let mut flagged = Vec::new();
        if crossed && limit > 0 {
            for e in q.iter_mut() {
                if e.at_us > at_us - window_us && e.at_us <= at_us && !e.flagged {
                    e.flagged = true;
                    flagged.push(e.id.clone());
                }
            }
        }
        Crossed { count, flagged }
    }

    fn make_room(&mut self, window_us: i64) {
        self.inserts += 1;
        let full = self.keys.len() >= self.keys_max;
        if !full && self.inserts % SWEEP_EVERY != 0 {
            return;
        }
        let horizon = self.newest_us.saturating_sub(window_us);
        self.keys
            .retain(|_, q| q.back().is_some_and(|e| e.at_us > horizon));
        if self.keys.len() >= self.keys_max {
            // Still full of live keys: drop the half whose newest entry is oldest.
            let mut newest: Vec<i64> = self
                .keys
                .values()
                .filter_map(|q| q.back().map(|e| e.at_us))
                .collect();
            let mid = newest.len() / 2;
            let cut = *newest.select_nth_unstable(mid).1;
            let before = self.keys.len();
            self.keys
                .retain(|_, q| q.back().is_some_and(|e| e.at_us > cut));
            self.evicted += (before - self.keys.len()) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn lim(window_us: i64, limit: usize, distinct: bool) -> Limit {
        Limit {
            window_us,
            limit,
            distinct,
        }
    }

    fn id(n: u32) -> Arc<str> {
        Arc::from(format!("c{n}"))
    }

    #[test]
    fn crossing_the_limit_flags_the_whole_burst_once() {
        let mut w = Windows::new(100);
        for n in 0..10 {
            let c = w.add(1, n as i64 * S, 0, &id(n), lim(60 * S, 10, false));
            assert_eq!((c.count, c.flagged.len()), (n as usize + 1, 0));
        }
        let c = w.add(1, 10 * S, 0, &id(10), lim(60 * S, 10, false));
        assert_eq!(
            (c.count, c.flagged.len()),
            (11, 11),
            "the 11th flags all 11"
        );
        let c = w.add(1, 11 * S, 0, &id(11), lim(60 * S, 10, false));
        assert_eq!(c.flagged, vec![id(11)], "later ones flag only themselves");
        // Another key, and the same key after the window passed, start again.
        assert_eq!(
            w.add(2, 11 * S, 0, &id(99), lim(60 * S, 10, false)).count,
            1
        );
        assert_eq!(
            w.add(1, 200 * S, 0, &id(12), lim(60 * S, 10, false)).count,
            1
        );
    }

    #[test]
    fn the_window_edge_is_exclusive_and_late_entries_count_where_they_belong() {
        let mut w = Windows::new(100);
        w.add(1, 0, 0, &id(0), lim(60 * S, 1, false));
        // Exactly one window later the first no longer counts.
        assert_eq!(w.add(1, 60 * S, 0, &id(1), lim(60 * S, 1, false)).count, 1);
        let mut w = Windows::new(100);
        w.add(1, 10 * S, 0, &id(10), lim(60 * S, 2, false));
        assert_eq!(w.add(1, 40 * S, 0, &id(40), lim(60 * S, 2, false)).count, 2);
        assert_eq!(w.add(1, 20 * S, 0, &id(20), lim(60 * S, 2, false)).count, 2);
        let c = w.add(1, 30 * S, 0, &id(30), lim(60 * S, 2, false));
        assert_eq!(c.count, 3, "a late entry counts those before it, not after");
        assert_eq!(c.flagged, vec![id(10), id(20), id(30)]);
    }

    #[test]
    fn distinct_tags_and_bounded_keys() {
        let mut w = Windows::new(4);
        assert_eq!(w.add(1, 0, 10, &id(0), lim(5 * S, 3, true)).count, 1);
        assert_eq!(w.add(1, S, 10, &id(1), lim(5 * S, 3, true)).count, 1);
        assert_eq!(w.add(1, 2 * S, 11, &id(2), lim(5 * S, 3, true)).count, 2);
        let c = w.add(1, 3 * S, 12, &id(3), lim(5 * S, 3, true));
        assert_eq!((c.count, c.flagged.len()), (3, 4));
        for k in 2..20 {
            w.add(
                k,
                10 * S + k as i64,
                0,
                &id(k as u32),
                lim(60 * S, 5, false),
            );
            assert!(w.len() <= 4);
        }
        assert!(w.evicted > 0);
    }
}
