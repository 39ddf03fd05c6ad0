//! Ingest shards: the writers of the `ingest-<n>` partitions, where the HTTP edge records
//! clicks, impressions and conversions.
//!
//! The hand-off is a bounded, direct append: an HTTP worker takes a slot of the shard
//! (at most `ingest-queue-max` records handed to one shard and not yet acknowledged) and
//! appends under the shard's lock, which is held for one memcpy into the mapped segment.
//! Without a free slot it gets [`AppendError::Full`] at once (the edge answers 503 with
//! `Retry-After`), so memory never grows with load. A record is acknowledged once it is in
//! the journal (page cache), or, with `durable`, once a group-commit sync covers it; the
//! slot is held until then, so slow syncs also push back.
//!
//! Measured on the project machine, the first design (a message to the shard actor and a
//! reply per record) cost two cross-thread wake-ups per click and held the click edge to a
//! fifth of the bare baseline; appending on the HTTP worker removes both.
//!
//! The [`IngestShard`] actor owns the shard's life: it takes the partition's writer when
//! it starts (publishing it to the edge), and on shutdown takes it back under the lock (so
//! no append is half done) and drops it. While it is down the edge gets
//! [`AppendError::Unavailable`].

use crate::supervisor::{ChildCtx, Stop};
use actix::prelude::*;
use clicktrail_storage::{Appended, Writer, DURABLE_WAIT_DEFAULT};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The shard of every durable record: conversions, reversals and review decisions.
///
/// One partition takes them all, so one sync per group commit acknowledges every waiting
/// conversion (each sync is a device flush, and on the project VM every flush stalls the
/// guest), and every record about one conversion is in one partition, in order. Measured
/// at 10k conversions/s open loop on a fresh server: spread over two shards, p99 9.1-11.1
/// ms in four runs; on one (with flusher rounds every 2 ms), p99 6.4-9.1 ms in 12 of 14
/// runs (the other two had single 50-100 ms stalls). One partition absorbs far more than
/// that rate: a conversion is about 200 bytes.
pub const DURABLE_SHARD: usize = 0;

/// Why an append was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The shard has `ingest-queue-max` records in flight: back off and retry.
    #[error("ingest queue full")]
    Full,
    /// The shard is not running (restarting, or stopped by shutdown).
    #[error("ingest shard unavailable")]
    Unavailable,
    /// The journal refused or failed (disk full, I/O error, record too large). Nothing
    /// was written.
    #[error("journal: {0}")]
    Journal(String),
    /// The record was written (it survives a process crash) but no sync has covered it
    /// yet: syncs fail or the journal closed. [`IngestShards::wait_durable`] can wait again.
    #[error("written but not yet durable")]
    NotYetDurable { shard: usize, end: u64 },
}

#[derive(Debug, Default)]
struct Shard {
    /// The partition's writer while the shard actor runs.
    writer: Mutex<Option<Writer>>,
    /// Records handed to this shard and not yet acknowledged.
    in_flight: AtomicUsize,
}

/// The edge's handle on every shard. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestShards {
    shards: Arc<Vec<Shard>>,
    queue_max: usize,
}

/// Gives a shard's in-flight slot back however the append ends (acknowledged, failed, or
/// the caller gone).
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Gives a batch's in-flight slots back.
struct Slots<'a>(&'a AtomicUsize, usize);

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// One record of a batch ([`IngestShards::append_batch`]).
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    pub kind: u16,
    pub version: u16,
    pub payload: &'a [u8],
}

/// Why a batch was not acknowledged whole: its first `written` records are in the journal
/// (they end at `end`), the others are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub written: usize,
    pub end: u64,
    pub error: AppendError,
}

impl IngestShards {
    pub fn new(count: usize, queue_max: usize) -> Self {
        assert!(count > 0 && queue_max > 0);
        IngestShards {
            shards: Arc::new((0..count).map(|_| Shard::default()).collect()),
            queue_max,
        }
    }

    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// Most records in flight per shard (`ingest-queue-max`).
    pub fn queue_max(&self) -> usize {
        self.queue_max
    }

    /// The shard for the click or impression numbered `seq`: with two shards or more,
    /// clicks spread over every shard but [`DURABLE_SHARD`], so the group commits that
    /// acknowledge conversions never carry click bytes; with one shard, that one.
    pub fn click_shard(&self, seq: u32) -> usize {
        match self.shards.len() {
            1 => 0,
            n => 1 + seq as usize % (n - 1),
        }
    }

    /// Records one payload in shard `shard` (modulo the count) and acknowledges it.
    pub async fn append(
        &self,
        shard: usize,
        kind: u16,
        version: u16,
        payload: &[u8],
        durable: bool,
    ) -> Result<Appended, AppendError> {
        let shard = shard % self.shards.len();
        let s = &self.shards[shard];
        if s.in_flight.fetch_add(1, Ordering::AcqRel) >= self.queue_max {
            s.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(AppendError::Full);
        }
        let _slot = Slot(&s.in_flight);
        let (appended, partition) = {
            let mut guard = s.writer.lock().unwrap_or_else(|p| p.into_inner());
            let w = guard.as_mut().ok_or(AppendError::Unavailable)?;
            let a = w
                .append(kind, version, None, payload)
                .map_err(|e| AppendError::Journal(e.to_string()))?;
            (a, durable.then(|| w.partition()))
        };
        if let Some(p) = partition {
            let not_yet = AppendError::NotYetDurable {
                shard,
                end: appended.end,
            };
            match tokio::time::timeout(DURABLE_WAIT_DEFAULT, p.wait_durable(appended.end)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(not_yet),
            }
        }
        Ok(appended)
    }

    /// Records `records` in shard `shard` (modulo the count) in order, under one hold of
    /// the shard's lock and published to readers together (a reader never sees half a
    /// batch), and acknowledges them once in the journal or, with `durable`, once a sync
    /// covers the last. A batch takes as many in-flight slots as records (at most
    /// `ingest-queue-max`); without them it gets [`AppendError::Full`] at once, like a
    /// single append, and the caller waits and tries again: bulk writers (imports) append
    /// in bounded batches instead of bouncing single records off the bound.
    pub async fn append_batch(
        &self,
        shard: usize,
        records: &[BatchRecord<'_>],
        durable: bool,
    ) -> Result<Appended, BatchError> {
        let shard = shard % self.shards.len();
        let s = &self.shards[shard];
        let fail = |written, end, error| BatchError {
            written,
            end,
            error,
        };
        let n = records.len().clamp(1, self.queue_max);
        if s.in_flight.fetch_add(n, Ordering::AcqRel) + n > self.queue_max {
            s.in_flight.fetch_sub(n, Ordering::AcqRel);
            return Err(fail(0, 0, AppendError::Full));
        }
        let _slots = Slots(&s.in_flight, n);
        let (first, end, partition) = {
            let mut guard = s.writer.lock().unwrap_or_else(|p| p.into_inner());
            let w = guard
                .as_mut()
                .ok_or_else(|| fail(0, 0, AppendError::Unavailable))?;
            let mut first = None;
            for (i, r) in records.iter().enumerate() {
                match w.write(r.kind, r.version, None, r.payload) {
                    Ok(a) => {
                        first.get_or_insert(a.offset);
                    }
                    Err(e) => {
                        // What was written stands (the next publish shows it anyway).
                        w.publish();
                        return Err(fail(i, w.end(), AppendError::Journal(e.to_string())));
                    }
                }
            }
            w.publish();
            (
                first.unwrap_or(w.end()),
                w.end(),
                durable.then(|| w.partition()),
            )
        };
        if let Some(p) = partition {
            let not_yet = AppendError::NotYetDurable { shard, end };
            match tokio::time::timeout(DURABLE_WAIT_DEFAULT, p.wait_durable(end)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(fail(records.len(), end, not_yet)),
            }
        }
        Ok(Appended { offset: first, end })
    }

    /// Waits (bounded) until everything below `end` in `shard`'s partition is durable.
    pub async fn wait_durable(&self, shard: usize, end: u64) -> bool {
        let partition = {
            let guard = self.shards[shard % self.shards.len()]
                .writer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(w) => w.partition(),
                None => return false,
            }
        };
        if partition.durable() >= end {
            return true;
        }
        matches!(
            tokio::time::timeout(DURABLE_WAIT_DEFAULT, partition.wait_durable(end)).await,
            Ok(Ok(()))
        )
    }
}

/// See the module docs.
pub struct IngestShard {
    index: usize,
    shards: IngestShards,
    ctx: ChildCtx,
}

impl std::fmt::Debug for IngestShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestShard")
            .field("index", &self.index)
            .finish()
    }
}

impl IngestShard {
    /// Starts shard `index` on `arbiter`.
    pub fn start(
        arbiter: &ArbiterHandle,
        ctx: ChildCtx,
        shards: &IngestShards,
        index: usize,
    ) -> Recipient<Stop> {
        let shards = shards.clone();
        IngestShard::start_in_arbiter(arbiter, move |_| IngestShard { index, shards, ctx })
            .recipient()
    }

    /// Takes the writer back from the edge (waiting for an append in progress) and drops
    /// it; returns the partition end.
    fn retire(&mut self) -> u64 {
        let slot = &self.shards.shards[self.index].writer;
        let writer = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        writer.map_or(0, |w| w.end())
    }
}

impl Actor for IngestShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let name = crate::system::ingest_partition(self.index);
        match self.ctx.journal.partition(&name).and_then(|p| p.writer()) {
            Ok(w) => {
                *self.shards.shards[self.index]
                    .writer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(w);
                self.ctx.running();
            }
            Err(e) => {
                self.ctx.fail(e.to_string());
                ctx.stop();
            }
        }
    }
}

impl Handler<Stop> for IngestShard {
    type Result = MessageResult<Stop>;

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) -> Self::Result {
        let end = self.retire();
        ctx.stop();
        MessageResult(vec![(crate::system::ingest_partition(self.index), end)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clicks_spread_over_every_shard_but_the_durable_one() {
        assert!((0..100).all(|seq| IngestShards::new(1, 8).click_shard(seq) == DURABLE_SHARD));
        for n in 2..=5 {
            let shards = IngestShards::new(n, 8);
            let mut hits = vec![0; n];
            for seq in 0..1000 {
                hits[shards.click_shard(seq)] += 1;
            }
            assert_eq!(hits[DURABLE_SHARD], 0, "{n} shards: {hits:?}");
            assert!(
                hits[1..].iter().all(|&h| h >= 1000 / (n - 1) - 1),
                "{hits:?}"
            );
        }
    }
}
