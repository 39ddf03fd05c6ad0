//! Recent clicks: an in-memory index of the clicks still inside any attribution window,
//! derived from the ingest partitions (rebuilt from the journal on start, like every
//! actor's state). Conversions use it to match by fingerprint; postbacks to fill the
//! click's sub-ids.
//!
//! Bounded: at most `capacity` clicks (default [`CLICKS_MAX`]); the oldest go first.
//! Fingerprints of opted-out visitors are never stored, so they never match.
//!
//! Past that bound a click is still found by its id ([`ClickLookup::info`]): the indexer
//! keeps where every 64th click of each ingest partition sits (time, sequence, offset;
//! under half a byte per click), the id says its partition, time and sequence, and a
//! lookup reads the journal from the nearest sample before it. So postbacks get the
//! `{sub1}`..`{sub5}` of any click the journal still holds, however old.
//!
//! **Times need not only go forward.** Imported history (`POST /api/v1/import`) puts
//! clicks with their original, older times after newer ones in a partition. Such a click
//! (older than one read before it in its partition by more than the lookup slack, a
//! *straggler*) is not sampled, which keeps the samples in time order for the binary
//! searches; its exact position is kept instead (16 bytes and a map slot per straggler,
//! growing with imported history, pruned with retention), and the next click in order
//! after it is sampled, so lookups of later clicks start after a run of stragglers rather
//! than read through it. The index keeps its clicks in time order, not arrival order: the
//! oldest go first and an old click does not push out a recent one (one older than every
//! click a full index holds is not kept). A fingerprint's latest click is the newest by
//! time, so an old click never hides a recent one from a fingerprint match.

use crate::worker::{Output, Processor};
use clicktrail_storage::schema::{ArchivedClick, Click};
use clicktrail_storage::{Journal, Record, RecordExt};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Default bound on indexed clicks (about 300 bytes each; `conversions.click-index-max`).
pub const CLICKS_MAX: usize = 200_000;
/// Default bound on fingerprinted clicks remembered for fingerprint matches (under 80
/// bytes each; `conversions.fingerprint-index-max`).
pub const FINGERPRINTS_MAX: usize = 1_000_000;

/// The key fingerprint matches use: a browser's fingerprint on one merchant's campaigns.
/// A browser that clicked merchant A's offer and then B's is still matched to its A click
/// when A reports a sale.
pub fn merchant_fingerprint(fingerprint: u64, merchant_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same in every process (the map is rebuilt on start
    // anyway), and not worth steering collisions into from outside.
    let mut h = std::hash::DefaultHasher::new();
    fingerprint.hash(&mut h);
    merchant_id.hash(&mut h);
    h.finish()
}

/// The latest click of each browser fingerprint, kept apart from the clicks themselves
/// (a fingerprint and a click id: under 80 bytes against ~300 for a click), so matches
/// reach back further than the click index; a match reads its click back by id.
#[derive(Debug)]
struct Fingerprints {
    capacity: usize,
    /// Fingerprint -> (time, click id) of its latest click.
    latest: HashMap<u64, (i64, [u8; 32]), foldhash::fast::RandomState>,
    /// (fingerprint, time) of every fingerprinted click kept, oldest first (by time). An
    /// entry whose fingerprint has clicked again since only leaves the queue at eviction.
    order: VecDeque<(u64, i64)>,
}

/// Where an entry of time `at_us` goes in a queue kept oldest first: at the back for a
/// click in order (nearly every one), else after the entries not newer than it.
fn time_slot<T>(order: &VecDeque<T>, at_us: i64, time: impl Fn(&T) -> i64) -> usize {
    match order.back() {
        Some(last) if time(last) > at_us => order.partition_point(|e| time(e) <= at_us),
        _ => order.len(),
    }
}

impl Fingerprints {
    fn new(capacity: usize) -> Self {
        Fingerprints {
            capacity: capacity.max(1),
            latest: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    fn insert(&mut self, fingerprint: u64, at_us: i64, click_id: &str) {
        // Version-1 click ids are 32 characters; nothing else is ever indexed.
        let Ok(id) = <[u8; 32]>::try_from(click_id.as_bytes()) else {
            return;
        };
        if self
            .latest
            .get(&fingerprint)
            .is_some_and(|(at, _)| *at > at_us)
        {
            return; // an older click of a browser seen since: the newer one stays latest
        }
        let full = self.order.len() >= self.capacity;
        if full && self.order.front().is_some_and(|(_, t)| at_us < *t) {
            return; // older than everything kept: it would be the first out
        }
        while self.order.len() >= self.capacity {
            let Some((f, t)) = self.order.pop_front() else {
                break;
            };
            if self.latest.get(&f).is_some_and(|(at, _)| *at == t) {
                self.latest.remove(&f);
            }
        }
        self.latest.insert(fingerprint, (at_us, id));
        let at = time_slot(&self.order, at_us, |e| e.1);
        self.order.insert(at, (fingerprint, at_us));
    }

    fn latest(&self, fingerprint: u64, since_us: i64) -> Option<String> {
        let (at, id) = self.latest.get(&fingerprint)?;
        (*at >= since_us).then(|| String::from_utf8_lossy(id).into_owned())
    }
}

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

/// What a click id's layout says without its MAC checked: enough to find the click in the
/// journal. (The edge's `ClickIdCodec` writes and verifies ids; see its layout table.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdLayout {
    /// The ingest shard, i.e. partition `ingest-{shard}`, that recorded the click.
    pub shard: u8,
    pub time_s: u32,
    pub seq: u32,
}

/// Decodes exactly `N` bytes (N a multiple of 3) from base64url without padding.
pub fn base64url_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn sextet(b: u8) -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if N % 3 != 0 || b.len() != N / 3 * 4 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, c) in b.chunks_exact(4).enumerate() {
        let mut n = 0u32;
        for ch in c {
            n = n << 6 | sextet(*ch)?;
        }
        out[i * 3] = (n >> 16) as u8;
        out[i * 3 + 1] = (n >> 8) as u8;
        out[i * 3 + 2] = n as u8;
    }
    Some(out)
}

/// The shard, time and sequence of a version-1 click id (24 bytes, 32 characters).
pub fn id_layout(click_id: &str) -> Option<IdLayout> {
    let raw = base64url_decode::<24>(click_id)?;
    (raw[0] == 1).then(|| IdLayout {
        shard: raw[3],
        time_s: u32::from_be_bytes(raw[4..8].try_into().unwrap()),
        seq: u32::from_be_bytes(raw[8..12].try_into().unwrap()),
    })
}

/// One click in [`SAMPLE_EVERY`] of a partition is sampled.
pub const SAMPLE_EVERY: u64 = 64;
/// How far a lookup looks around the id's time (seconds): the id's time is taken just
/// before the append, and records of one partition are in time order but for workers
/// racing each other.
const LOOKUP_SLACK_S: i64 = 2;
/// Most records one lookup reads (a lookup normally reads under 200 clicks' worth).
pub const LOOKUP_SCAN_MAX: usize = 200_000;

const LOOKUP_SLACK_US: i64 = LOOKUP_SLACK_S * 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_us: i64,
    seq: u32,
    offset: u64,
    /// The first click in order after stragglers: a lookup starts no earlier than here
    /// for clicks after it (reading back from it would read through the stragglers).
    fence: bool,
}

/// What the indexer has read of one ingest shard.
#[derive(Debug, Default)]
struct Shard {
    /// Clicks in time order read (the sampling stride counts these).
    seen: u64,
    /// Every click read, stragglers too: the indexer's progress.
    read: u64,
    /// The latest click time read: how far the indexer has got.
    latest_us: i64,
    /// Every `SAMPLE_EVERY`th click in time order, and each fence, in journal order.
    samples: Vec<Sample>,
    /// Samples taken in all (pruning is due every `PRUNE_EVERY`).
    taken: u64,
    /// Where each straggler is: (its id's time in seconds, sequence) -> offset.
    stragglers: HashMap<(u32, u32), u64, foldhash::fast::RandomState>,
    /// A straggler came since the last sample: the next click in order is a fence.
    fence_due: bool,
}

/// Where sampled clicks sit, per ingest shard.
#[derive(Debug, Default)]
struct Positions {
    shards: HashMap<u8, Shard>,
    /// The shards the indexer reads (`None`: not said, as in tests of the index alone).
    inputs: Option<std::collections::HashSet<u8>>,
}

/// Every this many samples of a shard, samples of segments retention removed are dropped.
const PRUNE_EVERY: u64 = 4096;

impl Positions {
    /// Notes the click with id layout `l`, time `at_us` at `offset`; says when the shard's
    /// samples are due a prune. A click older than one read before it by more than the
    /// lookup slack is a straggler (see the module docs).
    fn note(&mut self, l: IdLayout, at_us: i64, offset: u64) -> bool {
        let s = self.shards.entry(l.shard).or_insert(Shard {
            latest_us: i64::MIN,
            ..Default::default()
        });
        s.read += 1;
        if at_us < s.latest_us.saturating_sub(LOOKUP_SLACK_US) {
            s.stragglers.insert((l.time_s, l.seq), offset);
            s.fence_due = true;
            return false;
        }
        s.latest_us = s.latest_us.max(at_us);
        let fence = std::mem::take(&mut s.fence_due);
        let sampled = s.seen % SAMPLE_EVERY == 0 || fence;
        s.seen += 1;
        if !sampled {
            return false;
        }
        s.samples.push(Sample {
            at_us,
            seq: l.seq,
            offset,
            fence,
        });
        s.taken += 1;
        s.taken % PRUNE_EVERY == 0
    }

    /// Where the straggler with this layout is, if it is one.
    fn straggler(&self, l: IdLayout) -> Option<u64> {
        self.shards
            .get(&l.shard)?
            .stragglers
            .get(&(l.time_s, l.seq))
            .copied()
    }

    /// Whether the indexer reads this shard's partition at all.
    fn reads(&self, shard: u8) -> bool {
        self.inputs.as_ref().is_none_or(|i| i.contains(&shard))
    }

    /// Drops the shard's samples below `start` (the partition's first offset held).
    fn prune(&mut self, shard: u8, start: u64) {
        if let Some(s) = self.shards.get_mut(&shard) {
            let gone = s.samples.partition_point(|s| s.offset < start);
            s.samples.drain(..gone);
            s.stragglers.retain(|_, offset| *offset >= start);
        }
    }

    /// Where to start reading for a click with this layout, if the shard has any clicks:
    /// near its sequence, and the start of its time window (for when the first misses).
    /// `None` for either means "the partition's start": the click may come before the
    /// first sample kept (retention pruned the ones before it).
    fn scan_start(&self, l: IdLayout) -> Option<(Option<u64>, Option<u64>)> {
        let samples = &self.shards.get(&l.shard)?.samples;
        let t = l.time_s as i64 * 1_000_000;
        let lo = samples
            .partition_point(|s| s.at_us < t - LOOKUP_SLACK_S * 1_000_000)
            .saturating_sub(1);
        let hi = samples.partition_point(|s| s.at_us <= t + (LOOKUP_SLACK_S + 1) * 1_000_000);
        let window = samples.get(lo..hi.max(lo + 1))?;
        // The sample nearest before the id's sequence, or else (a click just after a
        // restart, before its run's first sample) nearest after it, less two samples for
        // appends that overtook each other (but not back past a fence, which would read
        // through stragglers). Sequences wrap and start at a random value in each process,
        // hence signed distances rather than an order; a distance over 2^24 is another
        // run. With neither: the window's start.
        let back_off = |mut i: usize| {
            for _ in 0..2 {
                if i == 0 || window[i].fence {
                    break;
                }
                i -= 1;
            }
            i
        };
        let best = window
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let d = l.seq.wrapping_sub(s.seq) as i32;
                (d.unsigned_abs() < 1 << 24).then_some(((d < 0, d.unsigned_abs()), i))
            })
            .min()
            .map_or(0, |(_, i)| back_off(i));
        let from = |i: usize| (lo + i > 0).then_some(window[i].offset);
        Some((from(best), from(0)))
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct RecentClicks {
    positions: Positions,
    fingerprints: Fingerprints,
    capacity: usize,
    by_id: HashMap<Arc<str>, ClickInfo, foldhash::fast::RandomState>,
    /// (time, id) of every click kept, oldest first by time, for eviction.
    order: VecDeque<(i64, Arc<str>)>,
}

impl RecentClicks {
    /// An index of `capacity` clicks and [`FINGERPRINTS_MAX`] fingerprints.
    pub fn new(capacity: usize) -> Self {
        Self::with_fingerprints(capacity, FINGERPRINTS_MAX)
    }

    pub fn with_fingerprints(capacity: usize, fingerprints: usize) -> Self {
        RecentClicks {
            positions: Positions::default(),
            fingerprints: Fingerprints::new(fingerprints),
            capacity: capacity.max(1),
            by_id: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Keeps a click (the oldest by time go first when full; a click older than every
    /// one a full index holds is not kept) and remembers its fingerprint.
    pub fn insert(&mut self, info: ClickInfo, fingerprint: Option<u64>) {
        if let Some(fp) = fingerprint {
            self.fingerprints.insert(fp, info.at_us, &info.click_id);
        }
        let full = self.order.len() >= self.capacity;
        if full && self.order.front().is_some_and(|(t, _)| info.at_us < *t) {
            return;
        }
        while self.order.len() >= self.capacity {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            self.by_id.remove(&old);
        }
        let at = time_slot(&self.order, info.at_us, |e| e.0);
        self.order.insert(at, (info.at_us, info.click_id.clone()));
        self.by_id.insert(info.click_id.clone(), info);
    }

    pub fn get(&self, click_id: &str) -> Option<&ClickInfo> {
        self.by_id.get(click_id)
    }

    /// The id of the latest click with this key ([`merchant_fingerprint`]) at or after
    /// `since_us` (read the click with [`ClickLookup::info`]: it may have left the click
    /// index).
    pub fn by_fingerprint(&self, fingerprint: u64, since_us: i64) -> Option<String> {
        self.fingerprints.latest(fingerprint, since_us)
    }

    /// Fingerprints remembered, the most kept, and when the oldest remembered click
    /// happened (µs since the epoch): how far back fingerprint matches reach now, at
    /// most (that click's browser may have clicked again since).
    pub fn fingerprint_reach(&self) -> (usize, usize, Option<i64>) {
        let f = &self.fingerprints;
        (f.latest.len(), f.capacity, f.order.front().map(|(_, t)| *t))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// When the oldest indexed click happened (µs since the epoch): how far back the
    /// index reaches now.
    pub fn oldest_at_us(&self) -> Option<i64> {
        // A click id seen twice (the same record replayed) is in `order` twice, and the
        // first may have been evicted from `by_id` already: skip ids no longer there.
        self.order
            .iter()
            .find_map(|(_, id)| self.by_id.get(id))
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

/// A click's [`ClickInfo`] from its record.
fn info_of(c: &ArchivedClick) -> ClickInfo {
    ClickInfo {
        click_id: c.click_id.as_str().into(),
        at_us: c.at_us.to_native(),
        affiliate_id: c.affiliate_id.as_str().to_string(),
        campaign_id: c.campaign_id.as_str().to_string(),
        sub_ids: c.sub_ids.iter().map(|s| s.as_str().to_string()).collect(),
    }
}

/// How a wait for the indexer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// It has read up to the click's time (or indexed the click).
    Reached,
    /// It read no click of the partition for half a second.
    Stalled,
    /// It does not read that partition (no longer an ingest shard).
    NotRead,
    Deadline,
}

/// Finds clicks by id: in the recent index, else in the journal (see the module docs).
#[derive(Debug, Clone)]
pub struct ClickLookup {
    pub clicks: SharedClicks,
    pub journal: Journal,
}

impl ClickLookup {
    /// The click with this id, while the journal holds it. `None` for ids that are not
    /// click ids, clicks past retention, and clicks the indexer is far from having read
    /// (right after a start, while it reads the journal again). Reads at most
    /// [`LOOKUP_SCAN_MAX`] records; for threads that serve requests, see
    /// [`ClickLookup::info_within`].
    pub fn info(&self, click_id: &str) -> Option<ClickInfo> {
        self.find(click_id, LOOKUP_SCAN_MAX).0
    }

    /// [`ClickLookup::info`] reading at most `most` journal records (the near read needs
    /// about 200 clicks' worth; the rest is for ids whose sequence misleads).
    pub fn info_within(&self, click_id: &str, most: usize) -> Option<ClickInfo> {
        self.find(click_id, most).0
    }

    /// [`ClickLookup::info`], after waiting (blocking, up to `wait`) for the indexer to
    /// reach the click's time in its partition: after a start the indexer reads the
    /// journal again, and a lookup far ahead of it would give up. The wait ends early
    /// when the indexer stops making progress for half a second (nothing more to read:
    /// the click is not there yet, or will not be).
    pub fn info_waiting(&self, click_id: &str, wait: std::time::Duration) -> Option<ClickInfo> {
        self.wait_for_indexer(click_id, wait)?;
        self.info(click_id)
    }

    /// The wait of [`ClickLookup::info_waiting`]: how it ended, or `None` when there is
    /// nothing to wait for (not a click id, no such partition).
    fn wait_for_indexer(&self, click_id: &str, wait: std::time::Duration) -> Option<Waited> {
        let l = id_layout(click_id)?;
        self.journal
            .get(&crate::system::ingest_partition(l.shard as usize))?;
        let target = l.time_s as i64 * 1_000_000;
        let deadline = std::time::Instant::now() + wait;
        let (mut last, mut since) = (None, std::time::Instant::now());
        loop {
            let noted = {
                let c = self
                    .clicks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if c.get(click_id).is_some() || c.positions.straggler(l).is_some() {
                    return Some(Waited::Reached);
                }
                if !c.positions.reads(l.shard) {
                    return Some(Waited::NotRead);
                }
                let shard = c.positions.shards.get(&l.shard);
                if shard.is_some_and(|s| s.latest_us >= target) {
                    return Some(Waited::Reached);
                }
                shard.map_or(0, |s| s.read)
            };
            // Stalled: no click read in this partition for a while (the click is not
            // there yet, or never will be: lost in a crash before its sync).
            let now = std::time::Instant::now();
            if Some(noted) != last {
                (last, since) = (Some(noted), now);
            }
            if now - since >= std::time::Duration::from_millis(500) {
                return Some(Waited::Stalled);
            }
            if now >= deadline {
                return Some(Waited::Deadline);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The click and how many journal records it took.
    fn find(&self, click_id: &str, most: usize) -> (Option<ClickInfo>, usize) {
        let mut read = 0;
        let found = self.find_counting(click_id, most, &mut read);
        (found, read)
    }

    fn find_counting(&self, click_id: &str, most: usize, read: &mut usize) -> Option<ClickInfo> {
        let (layout, starts, straggler) = {
            let c = self
                .clicks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(i) = c.get(click_id) {
                return Some(i.clone());
            }
            let l = id_layout(click_id)?;
            (l, c.positions.scan_start(l), c.positions.straggler(l))
        };
        // The journal is read without the index's lock held. A shard with no click indexed
        // yet (the indexer reads only what is synced, and rebuilds on start) is read from
        // its start, as far as a lookup goes.
        let partition = self
            .journal
            .get(&crate::system::ingest_partition(layout.shard as usize))?;
        // A straggler's place is known exactly: one record to read.
        if let Some(at) = straggler.filter(|at| *at >= partition.start()) {
            *read += 1;
            if let Ok(mut r) = partition.reader_at(at) {
                if let Ok(Some(rec)) = r.next() {
                    if let Some(c) = rec.event::<Click>().filter(|c| c.click_id == click_id) {
                        return Some(info_of(c));
                    }
                }
            }
        }
        let (near, window) = starts.unwrap_or((None, None));
        // A sample below the partition's start (retention ran since the last prune)
        // starts at the start.
        let start = partition.start();
        let (near, window) = (
            near.unwrap_or(start).max(start),
            window.unwrap_or(start).max(start),
        );
        let until_us = (layout.time_s as i64 + LOOKUP_SLACK_S + 1) * 1_000_000;
        // Reads until the click, a click past its time window, `clicks` clicks, or the
        // record budget. Impressions and conversions share the partitions: only clicks
        // count towards `clicks`, as only clicks are sampled; and only clicks in time
        // order, as stragglers are not (they are told apart as the indexer does).
        let mut scan = |from: u64, clicks: usize| -> Option<ClickInfo> {
            let mut reader = match partition.reader_at(from) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("click lookup in {}: {e}", partition.name());
                    return None;
                }
            };
            let (mut seen, mut newest) = (0, i64::MIN);
            while *read < most && seen < clicks {
                let rec = reader.next().ok()??;
                *read += 1;
                let Some(c) = rec.event::<Click>() else {
                    continue;
                };
                if c.click_id.as_str() == click_id {
                    return Some(info_of(c));
                }
                let at = c.at_us.to_native();
                if at < newest.saturating_sub(LOOKUP_SLACK_US) {
                    continue; // a straggler
                }
                newest = newest.max(at);
                seen += 1;
                if at > until_us {
                    return None;
                }
            }
            None
        };
        // Near its sequence it is within a few samples, unless another run's sequences
        // came close to it in the same seconds (then the window is read whole).
        scan(near, 4 * SAMPLE_EVERY as usize).or_else(|| scan(window, usize::MAX))
    }
}

/// The processor that keeps [`RecentClicks`] current.
#[derive(Debug)]
pub struct ClickIndexer {
    inputs: Vec<String>,
    clicks: SharedClicks,
    /// Campaign -> merchant, for fingerprint keys.
    store: Arc<crate::catalog::EntityStore>,
    /// For dropping positions in segments retention has removed.
    journal: Option<Journal>,
}

impl ClickIndexer {
    /// A fresh indexer: it empties the shared index (it reads the journal from its start).
    pub fn new(
        inputs: Vec<String>,
        clicks: SharedClicks,
        store: Arc<crate::catalog::EntityStore>,
    ) -> Self {
        {
            // A new instance starts from nothing (also after a panic left the lock poisoned).
            let mut c = clicks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            clicks.clear_poison();
            *c = RecentClicks::with_fingerprints(c.capacity, c.fingerprints.capacity);
            // (Positions start over with it: the indexer reads every partition again.)
            c.positions.inputs = Some(
                inputs
                    .iter()
                    .filter_map(|n| crate::system::ingest_shard(n)?.try_into().ok())
                    .collect(),
            );
        }
        ClickIndexer {
            inputs,
            clicks,
            store,
            journal: None,
        }
    }

    /// Keeps the click positions to what `journal` still holds (under half a byte per
    /// click, but without this they would grow for as long as the process runs).
    pub fn pruning(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
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
        crate::system::CLICK_INDEX.into()
    }

    /// It writes nothing but dead letters: its state is rebuilt by reading every input
    /// from the start.
    fn resumes_from_output(&self) -> bool {
        false
    }

    fn process(&mut self, input: &Record<'_>, _out: &mut Vec<Output>) -> Result<(), String> {
        let Some(c) = input.event::<Click>() else {
            return Ok(());
        };
        let info = info_of(c);
        let fp = if c.opted_out {
            None
        } else {
            // Keyed by merchant too (a campaign unknown to the catalog is not indexed).
            c.fingerprint.as_ref().and_then(|f| {
                self.store.with(|cat| {
                    cat.campaigns
                        .get(&info.campaign_id)
                        .map(|k| merchant_fingerprint(f.to_native(), &k.campaign.merchant_id))
                })
            })
        };
        let mut clicks = self
            .clicks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l) = id_layout(c.click_id.as_str()) {
            if clicks.positions.note(l, info.at_us, input.offset) {
                let name = crate::system::ingest_partition(l.shard as usize);
                if let Some(p) = self.journal.as_ref().and_then(|j| j.get(&name)) {
                    clicks.positions.prune(l.shard, p.start());
                }
            }
        }
        clicks.insert(info, fp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clicktrail_storage::Partition;

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
        // Ids of 32 characters, as click ids are.
        let c = |n: u32| format!("{n:0>32}");
        let mut r = RecentClicks::with_fingerprints(3, 4);
        r.insert(info(&c(1), 100), Some(7));
        r.insert(info(&c(2), 200), Some(7));
        r.insert(info(&c(3), 300), None);
        assert_eq!(r.by_fingerprint(7, 150), Some(c(2)));
        assert!(r.by_fingerprint(7, 250).is_none(), "outside the window");
        assert!(r.by_fingerprint(8, 0).is_none());
        r.insert(info(&c(4), 400), Some(9));
        assert_eq!(r.len(), 3, "bounded");
        assert!(r.get(&c(1)).is_none(), "oldest evicted");
        // Fingerprints outlive the clicks: c2 has left the click index, not this one.
        r.insert(info(&c(5), 500), None);
        r.insert(info(&c(6), 600), None);
        assert!(r.get(&c(2)).is_none());
        assert_eq!(r.by_fingerprint(7, 0), Some(c(2)));
        assert_eq!(r.fingerprint_reach(), (2, 4, Some(100)));
        // Their own bound: the queue holds 4 fingerprinted clicks. The next one pushes c1
        // out (fingerprint 7 still has c2); the one after, c2.
        r.insert(info(&c(7), 700), Some(10));
        r.insert(info(&c(8), 800), Some(11));
        assert_eq!(r.by_fingerprint(7, 0), Some(c(2)));
        r.insert(info(&c(9), 900), Some(12));
        assert!(
            r.by_fingerprint(7, 0).is_none(),
            "evicted fingerprint no longer matches"
        );
        assert_eq!(r.fingerprint_reach(), (4, 4, Some(400)));
        // Ids that are not click ids are never remembered.
        r.insert(info("short", 950), Some(13));
        assert!(r.by_fingerprint(13, 0).is_none());
    }

    /// A version-1 click id with this layout (the MAC is not checked by lookups).
    fn id(shard: u8, time_s: u32, seq: u32) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut raw = [0u8; 24];
        raw[0] = 1;
        raw[3] = shard;
        raw[4..8].copy_from_slice(&time_s.to_be_bytes());
        raw[8..12].copy_from_slice(&seq.to_be_bytes());
        raw[16..].copy_from_slice(&seq.to_le_bytes().repeat(2));
        let mut out = String::new();
        for c in raw.chunks_exact(3) {
            let n = (c[0] as u32) << 16 | (c[1] as u32) << 8 | c[2] as u32;
            for shift in [18, 12, 6, 0] {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            }
        }
        out
    }

    fn click(click_id: &str, at_us: i64, sub1: &str) -> Click {
        Click {
            at_us,
            click_id: click_id.into(),
            link_code: "l".into(),
            affiliate_id: "a".into(),
            campaign_id: "c".into(),
            sub_ids: vec![sub1.into(), String::new()],
            ip: String::new(),
            user_agent: String::new(),
            referrer: String::new(),
            accept_language: String::new(),
            sec_fetch_dest: String::new(),
            sec_fetch_site: String::new(),
            client_hints: vec![],
            visitor_id: None,
            fingerprint: None,
            opted_out: false,
            destination: String::new(),
            utm: vec![],
        }
    }

    #[test]
    fn id_layout_reads_shard_time_and_sequence() {
        assert_eq!(
            id_layout(&id(3, 1_764_000_000, 0xdead_beef)),
            Some(IdLayout {
                shard: 3,
                time_s: 1_764_000_000,
                seq: 0xdead_beef
            })
        );
        assert_eq!(id_layout("short"), None);
        assert_eq!(id_layout(&"!".repeat(32)), None);
        let mut v2 = id(1, 1, 1).into_bytes();
        v2[1] = b'C'; // version byte 2
        assert_eq!(id_layout(std::str::from_utf8(&v2).unwrap()), None);
    }

    /// Clicks evicted from the index long ago are read back from the journal by id:
    /// across partitions, a process restart (the sequence jumps), a sequence wrapping
    /// round and appends that overtook each other; what is not there is `None`.
    #[test]
    fn evicted_clicks_are_found_in_the_journal_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), Default::default()).unwrap();
        let t0 = T0;
        // (shard, at_us, seq) in journal order; 4 clicks per millisecond.
        let mut clicks = Vec::new();
        for shard in [1u8, 2] {
            let mut seq = u32::MAX - 1000 + u32::from(shard); // wraps within the run
            for n in 0..3000i64 {
                if n == 1700 {
                    // A restarted process: a new random start.
                    seq = 1_000_000 * u32::from(shard);
                }
                let at_us = t0 * 1_000_000 + n * 250;
                clicks.push((shard, at_us, seq));
                seq = seq.wrapping_add(2);
            }
        }
        // Two pairs of appends overtook each other.
        clicks.swap(100, 101);
        clicks.swap(2500, 2502);
        let mut ids = Vec::new();
        for shard in [1u8, 2] {
            let p = journal
                .partition(&crate::system::ingest_partition(shard.into()))
                .unwrap();
            let mut w = p.writer().unwrap();
            for &(s, at_us, seq) in clicks.iter().filter(|c| c.0 == shard) {
                let cid = id(s, (at_us / 1_000_000) as u32, seq);
                w.append_event(None, &click(&cid, at_us, &format!("s{seq}")))
                    .unwrap();
                // An impression after every click: records that are not sampled.
                w.append_event(
                    None,
                    &clicktrail_storage::schema::Impression {
                        at_us,
                        impression_id: id(s, (at_us / 1_000_000) as u32, seq ^ 1),
                        link_code: "l".into(),
                        affiliate_id: "a".into(),
                        campaign_id: "c".into(),
                        ip: String::new(),
                        user_agent: String::new(),
                        referrer: String::new(),
                        visitor_id: None,
                    },
                )
                .unwrap();
                ids.push((cid, seq));
            }
        }
        let shared: SharedClicks = Arc::new(Mutex::new(RecentClicks::new(10)));
        let store = Arc::new(crate::catalog::EntityStore::open(&journal).unwrap());
        let mut indexer = ClickIndexer::new(vec![], shared.clone(), store);
        for shard in [1usize, 2] {
            let p = journal
                .partition(&crate::system::ingest_partition(shard))
                .unwrap();
            let mut r = p.reader().unwrap();
            while let Some(rec) = r.next().unwrap() {
                indexer.process(&rec, &mut Vec::new()).unwrap();
            }
        }
        assert_eq!(shared.lock().unwrap().len(), 10, "all but 10 evicted");
        let lookup = ClickLookup {
            clicks: shared,
            journal: journal.clone(),
        };
        for (cid, seq) in &ids {
            let (info, read) = lookup.find(cid, LOOKUP_SCAN_MAX);
            let info = info.unwrap_or_else(|| panic!("{cid} not found"));
            assert_eq!(&*info.click_id, cid.as_str());
            assert_eq!(info.sub_ids[0], format!("s{seq}"));
            // From the nearest sample, not from the start of the time window (the whole
            // run here): a lookup reads about three samples' worth of clicks, and the
            // impressions between them.
            assert!(
                read <= 2 * (3 * SAMPLE_EVERY as usize + 2),
                "{cid}: read {read}"
            );
        }
        // Not in the journal: another shard, a time with no clicks, a sequence never used,
        // something that is not a click id.
        assert!(lookup.info(&id(4, t0 as u32, 1)).is_none());
        assert!(lookup.info(&id(1, t0 as u32 + 3600, 1)).is_none());
        assert!(lookup.info(&id(1, t0 as u32, 5)).is_none());
        assert!(lookup.info("not a click id").is_none());
        assert!(
            journal.get("ingest-4").is_none(),
            "a lookup creates no partition"
        );
    }

    const T0: i64 = 1_764_000_000;

    /// A journal whose `ingest-1` holds `n` clicks a millisecond apart from `T0`, click `i`
    /// with sequence `seq(i)` and sub1 `s<seq>`: (its directory, the journal, the
    /// partition, each click's id and sequence).
    fn one_partition(
        n: i64,
        seq: impl Fn(i64) -> u32,
    ) -> (tempfile::TempDir, Journal, Partition, Vec<(String, u32)>) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), Default::default()).unwrap();
        let p = journal
            .partition(&crate::system::ingest_partition(1))
            .unwrap();
        let mut w = p.writer().unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let (at_us, seq) = (T0 * 1_000_000 + i * 1000, seq(i));
            let cid = id(1, (at_us / 1_000_000) as u32, seq);
            w.append_event(None, &click(&cid, at_us, &format!("s{seq}")))
                .unwrap();
            ids.push((cid, seq));
        }
        (dir, journal, p, ids)
    }

    /// Right after a start the indexer has not read the journal yet, and a lookup with a
    /// small budget starting from the partition's start cannot reach a late click; waiting
    /// for the indexer to get there first makes it a near read.
    #[test]
    fn a_lookup_can_wait_for_the_indexer_to_reach_the_click() {
        let (_dir, journal, p, ids) = one_partition(5000, |n| n as u32);
        let shared: SharedClicks = Arc::new(Mutex::new(RecentClicks::new(1000)));
        let store = Arc::new(crate::catalog::EntityStore::open(&journal).unwrap());
        let mut indexer = ClickIndexer::new(vec!["ingest-1".into()], shared.clone(), store);
        let lookup = ClickLookup {
            clicks: shared,
            journal: journal.clone(),
        };
        let late = &ids[3000].0;
        assert!(
            lookup.find(late, 400).0.is_none(),
            "400 records from the start do not reach click 3,000"
        );
        let indexing = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut r = p.reader().unwrap();
            while let Some(rec) = r.next().unwrap() {
                indexer.process(&rec, &mut Vec::new()).unwrap();
            }
        });
        assert_eq!(
            lookup.wait_for_indexer(late, std::time::Duration::from_secs(30)),
            Some(Waited::Reached)
        );
        let (info, read) = lookup.find(late, 400);
        assert_eq!(info.unwrap().sub_ids[0], "s3000");
        assert!(read <= 3 * SAMPLE_EVERY as usize + 2, "read {read}");
        indexing.join().unwrap();
        // A click later than any the partition holds: the indexer stops making progress
        // there and the wait ends (well before its 60 s).
        let later = id(1, T0 as u32 + 3600, 1);
        assert_eq!(
            lookup.wait_for_indexer(&later, std::time::Duration::from_secs(60)),
            Some(Waited::Stalled)
        );
        // A partition the indexer does not read (a shard dropped from the configuration).
        journal.partition("ingest-2").unwrap();
        assert_eq!(
            lookup.wait_for_indexer(&id(2, T0 as u32, 1), std::time::Duration::from_secs(60)),
            Some(Waited::NotRead)
        );
        // Not a click id, or a partition that does not exist: nothing to wait for.
        assert!(lookup
            .wait_for_indexer("nope", Default::default())
            .is_none());
        assert!(lookup
            .wait_for_indexer(&id(9, T0 as u32, 1), Default::default())
            .is_none());
    }

    /// Positions are pruned every `PRUNE_EVERY` samples, down to what the journal holds.
    #[test]
    fn positions_ask_for_pruning_and_drop_removed_segments() {
        let mut p = Positions::default();
        let n = SAMPLE_EVERY * PRUNE_EVERY;
        let due: Vec<u64> = (0..2 * n)
            .filter(|&i| {
                let l = IdLayout {
                    shard: 1,
                    time_s: 0,
                    seq: i as u32,
                };
                p.note(l, i as i64, i * 100)
            })
            .collect();
        assert_eq!(due, vec![n - SAMPLE_EVERY, 2 * n - SAMPLE_EVERY]);
        assert_eq!(p.shards[&1].samples.len() as u64, 2 * PRUNE_EVERY);
        p.prune(1, n * 100);
        let left = &p.shards[&1].samples;
        assert_eq!(left.len() as u64, PRUNE_EVERY);
        assert_eq!(left[0].offset, n * 100);
        p.prune(2, 0); // a shard with no clicks: nothing to do
    }

    /// Two runs whose sequences overlap within the same seconds: the nearest sample may
    /// be the other run's, and the lookup falls back to reading the window.
    #[test]
    fn clicks_are_found_when_two_runs_sequences_overlap() {
        // Run one: even sequences from 0; run two from n = 500: odd ones from 1.
        let (_dir, journal, p, ids) = one_partition(1000, |n| {
            if n < 500 {
                2 * n as u32
            } else {
                2 * (n - 500) as u32 + 1
            }
        });
        let shared: SharedClicks = Arc::new(Mutex::new(RecentClicks::new(1)));
        let store = Arc::new(crate::catalog::EntityStore::open(&journal).unwrap());
        let mut indexer = ClickIndexer::new(vec![], shared.clone(), store);
        let mut r = p.reader().unwrap();
        while let Some(rec) = r.next().unwrap() {
            indexer.process(&rec, &mut Vec::new()).unwrap();
        }
        let lookup = ClickLookup {
            clicks: shared,
            journal: journal.clone(),
        };
        for (cid, seq) in &ids {
            let info = lookup
                .info(cid)
                .unwrap_or_else(|| panic!("{cid} not found"));
            assert_eq!(info.sub_ids[0], format!("s{seq}"));
        }
    }

    /// An old click arriving after newer ones (imported history) takes its place by
    /// time: it never pushes a recent click out of a full index, is the first to go from
    /// one with room, and the reach is the oldest time kept, not the first arrival.
    #[test]
    fn an_old_click_after_newer_ones_does_not_push_recent_ones_out() {
        let c = |n: u32| format!("{n:0>32}");
        let mut r = RecentClicks::with_fingerprints(3, 10);
        for n in 1..=3 {
            r.insert(info(&c(n), 1000 + n as i64), None);
        }
        r.insert(info(&c(9), 10), None);
        assert!(
            r.get(&c(9)).is_none(),
            "older than every click of a full index"
        );
        assert!(
            (1..=3).all(|n| r.get(&c(n)).is_some()),
            "recent clicks kept"
        );
        assert_eq!(r.oldest_at_us(), Some(1001));
        let mut r = RecentClicks::with_fingerprints(3, 10);
        r.insert(info(&c(1), 1001), None);
        r.insert(info(&c(2), 1002), None);
        r.insert(info(&c(9), 10), None);
        assert_eq!(r.oldest_at_us(), Some(10), "the reach is by time");
        r.insert(info(&c(3), 1003), None);
        assert!(r.get(&c(9)).is_none(), "the oldest by time went first");
        assert!((1..=3).all(|n| r.get(&c(n)).is_some()));
        // An old click between kept ones is placed in time order.
        r.insert(info(&c(4), 1001), None);
        assert_eq!(
            r.order.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![1001, 1002, 1003],
            "1001 was the oldest: one of the two 1001s went"
        );
    }

    /// A browser's latest click is its newest by time: an old click of the same
    /// fingerprint arriving later (imported) does not hide the recent one from a match.
    #[test]
    fn an_old_click_does_not_hide_a_browsers_recent_one_from_fingerprint_matches() {
        let c = |n: u32| format!("{n:0>32}");
        let mut r = RecentClicks::with_fingerprints(10, 3);
        r.insert(info(&c(1), 5_000), Some(7));
        r.insert(info(&c(2), 100), Some(7));
        assert_eq!(r.by_fingerprint(7, 4_000), Some(c(1)));
        // A full fingerprint queue keeps its newest ones too.
        r.insert(info(&c(3), 6_000), Some(8));
        r.insert(info(&c(4), 7_000), Some(9));
        r.insert(info(&c(5), 50), Some(10));
        assert!(
            r.by_fingerprint(10, 0).is_none(),
            "older than every one kept"
        );
        assert_eq!(r.by_fingerprint(7, 0), Some(c(1)));
        assert_eq!(r.fingerprint_reach(), (3, 3, Some(5_000)));
    }

    /// A partition with live clicks, then a run of 3,000 imported clicks with older times
    /// (in no order), then live clicks again: every click is found by id, a straggler by
    /// reading one record, a live click without reading through the run; the samples stay
    /// in time order.
    #[test]
    fn stragglers_are_found_exactly_and_lookups_do_not_read_through_them() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), Default::default()).unwrap();
        let p = journal
            .partition(&crate::system::ingest_partition(1))
            .unwrap();
        let mut w = p.writer().unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        let (mut ids, mut seq) = (Vec::new(), 0u32);
        let mut add = |w: &mut clicktrail_storage::Writer, at_us: i64, kind: &str| {
            seq += 1;
            let cid = id(1, (at_us / 1_000_000) as u32, seq);
            w.append_event(None, &click(&cid, at_us, &format!("s{seq}")))
                .unwrap();
            ids.push((cid, seq, kind.to_string()));
        };
        let live = |n: i64| T0 * 1_000_000 + n * 1000;
        for n in 0..1000 {
            add(&mut w, live(n), "before");
        }
        for _ in 0..3000 {
            // Up to 300 days before the live clicks.
            add(
                &mut w,
                live(0) - rng.i64(3..300 * 86_400) * 1_000_000,
                "imported",
            );
        }
        for n in 1000..2000 {
            add(&mut w, live(n), "after");
        }
        let shared: SharedClicks = Arc::new(Mutex::new(RecentClicks::new(10)));
        let store = Arc::new(crate::catalog::EntityStore::open(&journal).unwrap());
        let mut indexer = ClickIndexer::new(vec![], shared.clone(), store);
        let mut r = p.reader().unwrap();
        while let Some(rec) = r.next().unwrap() {
            indexer.process(&rec, &mut Vec::new()).unwrap();
        }
        {
            let c = shared.lock().unwrap();
            let s = &c.positions.shards[&1];
            assert!(s.samples.windows(2).all(|w| w[0].at_us <= w[1].at_us));
            assert_eq!(s.stragglers.len(), 3000);
            assert_eq!(s.read, 5000);
        }
        let lookup = ClickLookup {
            clicks: shared,
            journal: journal.clone(),
        };
        for (cid, seq, kind) in &ids {
            let (info, read) = lookup.find(cid, 20_000);
            let info = info.unwrap_or_else(|| panic!("{kind} {cid} not found"));
            assert_eq!(info.sub_ids[0], format!("s{seq}"));
            let most = match kind.as_str() {
                "imported" => 3 * SAMPLE_EVERY as usize + 2,
                _ => 4 * SAMPLE_EVERY as usize,
            };
            assert!(read <= most, "{kind} {cid}: read {read}");
        }
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
