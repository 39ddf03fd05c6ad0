//! Journal configuration and its named limits.

use crate::{Error, Result};
use std::time::Duration;

/// Smallest segment we accept: room for a header and a few frames, a whole number of pages.
pub const SEGMENT_SIZE_MIN: u64 = 64 * 1024;
/// Largest segment we accept (keeps offsets inside a segment in u32 range with headroom).
pub const SEGMENT_SIZE_MAX: u64 = 1 << 30;
/// A new partition's first segment (see [`JournalConfig::first_segment_size`]). Partitions
/// that see a few records a minute (entities, payouts, verdicts) stay this small instead of
/// each preallocating, mapping and populating a full segment: a fresh demo server had 641 MB
/// of segment files and 690 MB resident for ten partitions at 64 MiB, and still ~161 MiB
/// with 4 MiB first segments and full-size ingest partitions, too much to start at all on a
/// small disk. The largest record must fit, so with the default `record-size-max` of 1 MiB
/// a first segment is 1 MiB and 4 KiB.
pub const SEGMENT_SIZE_FIRST: u64 = 256 << 10;
/// First segment of a partition known to be busy from the first second (the ingest
/// shards, see [`JournalConfig::busy_first_segment_size`]): small enough for a small disk,
/// large enough that a busy partition reaches full size after two rolls (4, 16, 64 MiB).
pub const SEGMENT_SIZE_FIRST_BUSY: u64 = 4 << 20;
/// Hard ceiling on `record-size-max`.
pub const RECORD_SIZE_MAX_CEILING: usize = 16 << 20;
/// Hard ceiling on `partitions-max`.
pub const PARTITIONS_MAX_CEILING: usize = 4096;
/// Hard ceiling on `readers-max`.
pub const READERS_MAX_CEILING: usize = 1024;
/// Page size assumed for alignment of segment sizes.
pub const PAGE_SIZE: u64 = 4096;

const _: () = assert!(SEGMENT_SIZE_MIN % PAGE_SIZE == 0);
const _: () =
    assert!(SEGMENT_SIZE_FIRST % PAGE_SIZE == 0 && SEGMENT_SIZE_FIRST >= SEGMENT_SIZE_MIN);
const _: () = assert!(SEGMENT_SIZE_FIRST_BUSY % PAGE_SIZE == 0);
const _: () = assert!(SEGMENT_SIZE_MAX % PAGE_SIZE == 0);

/// How the journal lays out and limits its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Bytes per segment file, preallocated, once a partition has grown: its first segment
    /// is smaller and each roll quadruples the size up to this. Default: 64 MiB. Bounds:
    /// 64 KiB ..= 1 GiB, a multiple of 4 KiB.
    pub segment_size: u64,
    /// Largest payload of one record. Default: 1 MiB. Bounds: 1 KiB ..= 16 MiB and small
    /// enough that one record fits in an empty segment.
    pub record_size_max: usize,
    /// Most partitions one journal holds. Default: 256. Bounds: 1 ..= 4096.
    pub partitions_max: usize,
    /// Most concurrent readers of one partition. Default: 64. Bounds: 1 ..= 1024.
    pub readers_max: usize,
    /// How often the group-commit flusher starts a round (syncing what someone waits on);
    /// a round that takes longer is followed at once. Default: 2 ms.
    /// Bounds: 1 ms ..= 1 s.
    pub flush_interval: Duration,
    /// How often a partition nobody waits on is synced anyway. Group commit at
    /// `flush_interval` is for waiters (durable acknowledgements); syncing click partitions
    /// that often only makes the kernel write the same pages again and again. Default:
    /// 100 ms. On the project VM every disk write stalls the guest for a time that grows
    /// with its size: at 20k clicks/s open loop, syncing every 100 ms gave p99 3.4-4.5 ms
    /// against 6.5-9.5 ms syncing every second (three runs each; 10k/s: 1.1-1.4 against
    /// 1.8-3.7 ms), and a power loss can take a tenth as much.
    /// Bounds: `flush_interval` ..= 60 s.
    pub background_sync_interval: Duration,
    /// Partitions whose records an actor derives again from its inputs (its outputs).
    /// Damage in one of these is cut off, not kept: recovery drops everything from the
    /// first bad byte (as it does a torn tail) and the actor derives it again. Keeping the
    /// intact records after a hole would make the actor resume after inputs whose outputs
    /// were lost, and a power loss can leave exactly such a hole (the kernel writes mapped
    /// pages back in any order). Partitions not listed hold what clients were told was
    /// recorded (clicks, conversions, entity changes, payouts): their damage is kept aside
    /// and reported. Default: none.
    pub rederived_partitions: Vec<String>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_size: 64 << 20,
            record_size_max: 1 << 20,
            partitions_max: 256,
            readers_max: 64,
            flush_interval: Duration::from_millis(2),
            background_sync_interval: Duration::from_millis(100),
            rederived_partitions: Vec::new(),
        }
    }
}

impl JournalConfig {
    /// Size of a new partition's first segment: [`SEGMENT_SIZE_FIRST`], or more when the
    /// largest record needs it, and never more than `segment_size`. Each roll quadruples the
    /// size up to `segment_size` ([`JournalConfig::next_segment_size`]).
    pub fn first_segment_size(&self) -> u64 {
        let biggest = crate::frame::frame_size(self.record_size_max, true) as u64
            + crate::segment::SEGMENT_HEADER_SIZE as u64;
        SEGMENT_SIZE_FIRST
            .max(biggest.div_ceil(PAGE_SIZE) * PAGE_SIZE)
            .min(self.segment_size)
    }

    /// Size of a busy partition's first segment: [`SEGMENT_SIZE_FIRST_BUSY`], or more
    /// when the largest record needs it, and never more than `segment_size`.
    pub fn busy_first_segment_size(&self) -> u64 {
        SEGMENT_SIZE_FIRST_BUSY
            .max(self.first_segment_size())
            .min(self.segment_size)
    }

    /// Size of the segment that follows one of `current` bytes.
    pub fn next_segment_size(&self, current: u64) -> u64 {
        // Four times rather than twice: a busy partition reaches full size after two rolls
        // (4, 16, 64 MiB). A roll syncs the new header and the directory on the append path,
        // a stall of a few milliseconds on the project VM.
        current
            .saturating_mul(4)
            .max(self.first_segment_size())
            .min(self.segment_size)
    }

    /// Checks every bound and the relations between fields.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&self.segment_size) {
            return bad(format!(
                "segment-size {} is outside {SEGMENT_SIZE_MIN}..={SEGMENT_SIZE_MAX}",
                self.segment_size
            ));
        }
        if self.segment_size % PAGE_SIZE != 0 {
            return bad(format!(
                "segment-size {} is not a multiple of 4 KiB",
                self.segment_size
            ));
        }
        if !(1024..=RECORD_SIZE_MAX_CEILING).contains(&self.record_size_max) {
            return bad(format!(
                "record-size-max {} is outside 1024..={RECORD_SIZE_MAX_CEILING}",
                self.record_size_max
            ));
        }
        let biggest_frame = crate::frame::frame_size(self.record_size_max, true) as u64;
        if biggest_frame + crate::segment::SEGMENT_HEADER_SIZE as u64 > self.segment_size {
            return bad(format!(
                "record-size-max {} does not fit in a segment of {} bytes",
                self.record_size_max, self.segment_size
            ));
        }
        if !(1..=PARTITIONS_MAX_CEILING).contains(&self.partitions_max) {
            return bad(format!(
                "partitions-max must be 1..={PARTITIONS_MAX_CEILING}"
            ));
        }
        if !(1..=READERS_MAX_CEILING).contains(&self.readers_max) {
            return bad(format!("readers-max must be 1..={READERS_MAX_CEILING}"));
        }
        if self.flush_interval < Duration::from_millis(1)
            || self.flush_interval > Duration::from_secs(1)
        {
            return bad("flush-interval-ms must be 1..=1000".into());
        }
        if self.background_sync_interval < self.flush_interval
            || self.background_sync_interval > Duration::from_secs(60)
        {
            return bad("background-sync-interval-ms must be flush-interval-ms..=60000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_contradictions_are_refused() {
        JournalConfig::default().validate().unwrap();
        let c = JournalConfig {
            segment_size: 64 * 1024,
            record_size_max: 1 << 20,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(Error::Config(m)) if m.contains("does not fit")));
        let c = JournalConfig {
            segment_size: 100_000,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
