//! Partitions: an ordered run of segments with one writer and many tailing readers.
//!
//! Invariants:
//! * Exactly one [`Writer`] exists per partition at a time. It writes frames above the
//!   published `end`, then publishes the new `end` with a `SeqCst` store. Readers load `end`
//!   and only ever look below it, so they never take a lock on the append path.
//! * `start <= durable <= end`. `durable` moves only in [`Partition::sync`] (the group-commit
//!   flusher), after an `msync` of everything below the new value.
//! * Offsets are logical byte positions that run on across segments; a record's offset is
//!   where its frame starts, and the next record starts at `offset + frame size`.
//! * Retention removes whole segments below the lowest registered consumer position, never
//!   the segment being written.
//! * Damaged ranges found by recovery (see `recovery`) lie below `end` and never change
//!   while open; readers jump over them (one comparison per record when there are none).
//! * A full disk refuses appends that need a new segment; allocation is then tried again at
//!   most every [`ALLOCATE_RETRY_MIN`] doubling to [`ALLOCATE_RETRY_MAX`], with smaller
//!   segments when a full-size one does not fit, and the state is logged once per change.

use crate::frame::{self, Probe, Source};
use crate::notify::Notifier;
use crate::recovery::{self, Damage};
use crate::segment::{self, Segment};
use crate::{Error, JournalConfig, Result};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

/// File in a partition directory that keeps consumer positions for retention.
const CONSUMERS_FILE: &str = "consumers";
/// Wait before the first retry of a segment allocation that failed (disk full).
pub const ALLOCATE_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between retries of a failing segment allocation.
pub const ALLOCATE_RETRY_MAX: Duration = Duration::from_secs(1);
const _: () = assert!(ALLOCATE_RETRY_MIN.as_millis() < ALLOCATE_RETRY_MAX.as_millis());
/// How long after its last refused append a partition still counts as failing writes
/// ([`Partition::write_failing`]): a few allocation retries' worth.
pub const WRITE_FAILING_HOLD_MS: u64 = 5 * ALLOCATE_RETRY_MAX.as_millis() as u64;

/// Milliseconds since this process first asked (a monotonic clock for the atomics above).
fn since_start_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

pub(crate) struct Shared {
    id: u32,
    name: String,
    dir: PathBuf,
    config: JournalConfig,
    /// Segments in base order. Written only by the writer's roll and by retention; readers
    /// take the read lock only when they cross into another segment.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Published end: every byte below it is a complete frame readers may read.
    end: AtomicU64,
    /// Everything below this offset has been synced to disk.
    durable: AtomicU64,
    /// First offset still held (retention moves it up).
    start: AtomicU64,
    writer_taken: AtomicBool,
    /// Never removed by retention (a record of money or of entities: its owner rebuilds
    /// its state from all of it).
    kept: AtomicBool,
    readers: AtomicUsize,
    /// Woken when `end` moves.
    data: Notifier,
    /// Woken when `durable` moves or the journal closes, for durability acknowledgements
    /// (their presence makes the flusher sync at the group-commit interval).
    durability: Notifier,
    /// Woken when `durable` moves or the journal closes, for readers that only read
    /// durable records (their presence does not hurry the flusher).
    synced: Notifier,
    /// Registered consumers and their committed positions (retention keeps what they need).
    consumers: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// Serialises syncs (flusher thread and explicit `sync` calls).
    sync_lock: Mutex<()>,
    /// Set when the journal closes; wakes and fails every waiter.
    closed: AtomicBool,
    /// Set while syncs fail, so the error is logged once per failure run, not per interval.
    sync_failing: AtomicBool,
    /// When the last sync ran (for the background interval).
    last_sync: Mutex<std::time::Instant>,
    /// A background sync stopped short of the end (the page being written); the rest is
    /// synced as soon as the writer pauses for a flush interval.
    tail_owed: std::sync::atomic::AtomicBool,
    /// `end` at the flusher's previous look (to see the writer pause).
    last_tick_end: AtomicU64,
    /// Damaged ranges `[from, to)` found at open, in offset order, that readers skip.
    /// Fixed once open: damage is only ever found by recovery.
    skips: Arc<[(u64, u64)]>,
    /// Every damage entry of the partition (found at open or listed in its damage file),
    /// with its accepted state; changes only by [`Partition::accept_damage`].
    damage: Mutex<Vec<Damage>>,
    /// Set while appends are refused because a new segment cannot be allocated (disk
    /// full); logged once per change of state.
    write_failing: AtomicBool,
    /// Appends refused because a segment could not be allocated, since open.
    write_failures: AtomicU64,
    /// When an append was last refused for lack of space ([`since_start_ms`]).
    write_failed_at_ms: AtomicU64,
}

/// A handle on one partition; cheap to clone.
#[derive(Clone)]
pub struct Partition {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("start", &self.start())
            .field("end", &self.end())
            .field("durable", &self.durable())
            .finish()
    }
}

/// Deletes spare segments a previous process prepared but never used, and half-written
/// copies of damaged bytes.
fn remove_spares(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "tmp") {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Prefix of a partition directory being built (see [`Partition::create`]); recovery
/// removes what a crash left under it.
pub(crate) const CREATING_PREFIX: &str = ".tmp-";

impl Partition {
    /// Creates partition `name` with id `id` under `root` all at once: its directory is
    /// built under a temporary name (`.tmp-<id>-<name>`) with its first segment of
    /// `first_segment` bytes allocated and its header synced, then renamed into place and
    /// the parent synced. A failure (a full disk) leaves no partition directory behind, so
    /// the id is free for the next try and no half-made partition is ever seen.
    pub(crate) fn create(
        root: &Path,
        id: u32,
        name: &str,
        config: JournalConfig,
        first_segment: u64,
    ) -> Result<Self> {
        let dir = root.join(format!("{id:05}-{name}"));
        let tmp = root.join(format!("{CREATING_PREFIX}{id:05}-{name}"));
        if dir.exists() {
            return Err(Error::DuplicatePartition {
                what: format!("id {id}"),
                dirs: vec![dir],
            });
        }
        let built = (|| {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
            }
            std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
            // `create` syncs the header and the directory entry.
            drop(Segment::create(&tmp, id, 0, first_segment)?);
            std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
            segment::sync_dir(root)
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Partition::open(dir, id, name.to_string(), config)
    }

    /// Opens and recovers the partition stored in `dir` (see `recovery` for the rules): a
    /// torn tail is cleared; damage is kept, copied, skipped by readers and reported by
    /// [`Partition::damage`]. A directory without any segment file is refused.
    pub(crate) fn open(dir: PathBuf, id: u32, name: String, config: JournalConfig) -> Result<Self> {
        remove_spares(&dir)?;
        if recovery::list_segments(&dir)?.is_empty() {
            return Err(Error::HalfMadePartition { dir });
        }
        let mut survey = recovery::survey(&dir, id, &name, true, &mut |_| {})?;
        if config.rederived_partitions.contains(&name) {
            survey = recovery::cut_at_damage(&name, survey)?;
        }
        let end = survey.end;
        let (mut segments, damage, skips) = recovery::recover(&dir, &name, survey)?;
        // An empty last segment too small for today's largest record (a quiet partition
        // made under a smaller `record-size-max`) would refuse such a record for ever: a
        // segment after it would get the same base. Nothing is in it; make it big enough.
        let biggest = frame::frame_size(config.record_size_max, true);
        if segments
            .last()
            .is_some_and(|s| s.base == end && s.capacity() < biggest)
        {
            let small = segments.pop().expect("checked");
            std::fs::remove_file(&small.path).map_err(|e| Error::io(&small.path, e))?;
            log::info!(
                "journal: partition {name}: empty segment at {end} made room for record-size-max"
            );
            segment::sync_dir(&dir)?;
        }
        // With segments left, the writer's first roll makes the next one, big enough.
        if segments.is_empty() {
            let seg = Segment::create(&dir, id, end, config.first_segment_size())?;
            segments.push(Arc::new(seg));
        }
        let start = segments[0].base;
        let consumers = load_consumers(&dir)?;
        // A position past the recovered end (recovery cut records a consumer had read)
        // would let retention remove segments nobody has read.
        for p in consumers.values() {
            p.fetch_min(end, Ordering::AcqRel);
        }
        Ok(Partition {
            shared: Arc::new(Shared {
                id,
                name,
                dir,
                config,
                segments: RwLock::new(segments),
                end: AtomicU64::new(end),
                durable: AtomicU64::new(end),
                start: AtomicU64::new(start),
                writer_taken: AtomicBool::new(false),
                kept: AtomicBool::new(false),
                readers: AtomicUsize::new(0),
                data: Notifier::default(),
                durability: Notifier::default(),
                synced: Notifier::default(),
                consumers: Mutex::new(consumers),
                sync_lock: Mutex::new(()),
                closed: AtomicBool::new(false),
                sync_failing: AtomicBool::new(false),
                last_sync: Mutex::new(std::time::Instant::now()),
                tail_owed: std::sync::atomic::AtomicBool::new(false),
                last_tick_end: AtomicU64::new(u64::MAX),
                skips: skips.into(),
                damage: Mutex::new(damage),
                write_failing: AtomicBool::new(false),
                write_failures: AtomicU64::new(0),
                write_failed_at_ms: AtomicU64::new(0),
            }),
        })
    }

    /// Stable numeric id (recorded in the `Source` of records derived from this partition).
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Published end: the offset the next record will get.
    pub fn end(&self) -> u64 {
        self.shared.end.load(Ordering::Acquire)
    }

    /// Everything below this offset survives power loss.
    pub fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// First offset still held.
    pub fn start(&self) -> u64 {
        self.shared.start.load(Ordering::Acquire)
    }

    /// Number of segment files held.
    pub fn segment_count(&self) -> usize {
        self.shared.segments.read().unwrap().len()
    }

    /// Takes the partition's one writer.
    pub fn writer(&self) -> Result<Writer> {
        if self.shared.writer_taken.swap(true, Ordering::AcqRel) {
            return Err(Error::WriterTaken(self.shared.name.clone()));
        }
        let seg = self.shared.segments.read().unwrap().last().unwrap().clone();
        let end = self.end();
        Ok(Writer {
            pos: (end - seg.base) as usize,
            seg,
            end,
            shared: self.shared.clone(),
            buf: rkyv::util::AlignedVec::new(),
            spare: None,
            backoff: None,
        })
    }

    /// A reader positioned at `offset`, which must be a record boundary in
    /// `start()..=end()` (a position taken from a record or from `end()`).
    pub fn reader_at(&self, offset: u64) -> Result<Reader> {
        let max = self.shared.config.readers_max;
        if self.shared.readers.fetch_add(1, Ordering::AcqRel) >= max {
            self.shared.readers.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::TooManyReaders {
                partition: self.shared.name.clone(),
                max,
            });
        }
        // From here the Reader's Drop gives the count back, even on the error path.
        let mut reader = Reader {
            seg: self.shared.segments.read().unwrap()[0].clone(),
            pos: 0,
            next: self.start(),
            shared: self.shared.clone(),
            durable_only: false,
            skip_at: u64::MAX,
            skip_index: 0,
        };
        reader.seek(offset)?;
        Ok(reader)
    }

    /// A reader from the first record held.
    pub fn reader(&self) -> Result<Reader> {
        self.reader_at(self.start())
    }

    /// Resolves once every byte below `end` is durable; fails if the journal closes first.
    pub fn wait_durable(&self, end: u64) -> DurableWait {
        DurableWait {
            shared: self.shared.clone(),
            end,
            counted: false,
        }
    }

    /// Blocking form of [`Partition::wait_durable`].
    pub fn wait_durable_blocking(&self, end: u64, timeout: Duration) -> Result<()> {
        let s = &self.shared;
        s.durability.wait_until(
            || s.durable.load(Ordering::SeqCst) >= end || s.closed.load(Ordering::SeqCst),
            timeout,
        );
        if s.durable.load(Ordering::SeqCst) >= end {
            Ok(())
        } else if s.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Err(Error::DurableTimeout(end))
        }
    }

    /// What the flusher calls every `flush-interval`: syncs when someone waits for
    /// durability, otherwise only once `background-sync-interval` has passed.
    pub(crate) fn sync_if_due(&self) -> Result<()> {
        let s = &self.shared;
        let end = s.end.load(Ordering::Acquire);
        let paused = s.last_tick_end.swap(end, Ordering::AcqRel) == end;
        if s.durability.has_waiters() {
            self.sync()
        } else if s.last_sync.lock().unwrap().elapsed() >= s.config.background_sync_interval {
            self.sync_background()
        } else if paused && s.tail_owed.load(Ordering::Acquire) {
            // The writer has paused: the page it was filling can be written back now.
            self.sync()
        } else {
            Ok(())
        }
    }

    /// Syncs everything published so far and moves `durable` up (group commit: one sync
    /// covers every record appended since the last one).
    pub fn sync(&self) -> Result<()> {
        self.sync_upto(|end| end, Segment::flush)
    }

    /// A sync nobody waits for: only up to the last record that ends on or before the
    /// last whole page of the segment being written, so the page the writer is filling is
    /// never written back under it. (Writeback write-protects the page; the writer's next
    /// store then faults and can wait for the I/O or a filesystem journal commit while it
    /// holds the shard lock: milliseconds of stall for every click behind it, once per
    /// interval.) What is left is owed: synced at the first flush interval in which the
    /// writer appends nothing, so a lone record is not held back a whole interval more.
    fn sync_background(&self) -> Result<()> {
        self.sync_upto(|end| self.page_boundary_below(end), Segment::flush_unmapped)
    }

    /// The last record boundary at or below the last page boundary before `end` in the
    /// segment holding `end` (or the start of that segment's unsynced part).
    fn page_boundary_below(&self, end: u64) -> u64 {
        let page = segment::page_size() as u64;
        let s = &self.shared;
        let durable = s.durable.load(Ordering::Acquire);
        let segs = s.segments.read().unwrap();
        let Some(seg) = segs.iter().rev().find(|g| g.base <= end) else {
            return durable;
        };
        let file_end = crate::segment::SEGMENT_HEADER_SIZE as u64 + (end - seg.base);
        let floor =
            (file_end / page * page).saturating_sub(crate::segment::SEGMENT_HEADER_SIZE as u64);
        let mut pos = durable.max(seg.base) - seg.base;
        let limit = (end - seg.base) as usize;
        while pos < floor {
            // SAFETY: [pos, limit) is below the published end.
            let buf = unsafe { seg.data(pos as usize, limit) };
            match frame::probe_published(buf, crate::config::RECORD_SIZE_MAX_CEILING) {
                Probe::Frame(total) if pos + total as u64 <= floor => pos += total as u64,
                _ => break,
            }
        }
        seg.base + pos
    }

    /// Syncs up to `target(published end)`, each segment's range with `flush`
    /// ([`Segment::flush_unmapped`] for a range the writer has left).
    fn sync_upto(
        &self,
        target: impl FnOnce(u64) -> u64,
        flush: fn(&Segment, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let s = &self.shared;
        let _guard = s.sync_lock.lock().unwrap();
        *s.last_sync.lock().unwrap() = std::time::Instant::now();
        let published = s.end.load(Ordering::Acquire);
        let end = target(published);
        s.tail_owed.store(end < published, Ordering::Release);
        let durable = s.durable.load(Ordering::Acquire);
        if end <= durable {
            return Ok(());
        }
        let segments = s.segments.read().unwrap().clone();
        let result = segments.iter().try_for_each(|seg| {
            let cap = seg.capacity() as u64;
            let from = durable.saturating_sub(seg.base).min(cap);
            let to = end.saturating_sub(seg.base).min(cap);
            flush(seg, from as usize, to as usize)
        });
        match result {
            Ok(()) => {
                if s.sync_failing.swap(false, Ordering::Relaxed) {
                    log::info!("journal: partition {}: syncs succeed again", s.name);
                }
                s.durable.store(end, Ordering::SeqCst);
                s.durability.notify();
                s.synced.notify();
                Ok(())
            }
            Err(e) => {
                if !s.sync_failing.swap(true, Ordering::Relaxed) {
                    log::error!("journal: partition {}: sync failed: {e}", s.name);
                }
                Err(e)
            }
        }
    }

    /// True while syncs fail (durable acknowledgements cannot be given).
    pub fn sync_failing(&self) -> bool {
        self.shared.sync_failing.load(Ordering::Relaxed)
    }

    /// True while appends are refused because no segment can be allocated (disk full): one
    /// was refused within the last [`WRITE_FAILING_HOLD_MS`] and no allocation has
    /// succeeded since. (A writer that stopped trying, e.g. an actor with nothing to write
    /// after the disk was freed, must not keep readiness failing for ever.)
    pub fn write_failing(&self) -> bool {
        let s = &self.shared;
        s.write_failing.load(Ordering::Relaxed)
            && since_start_ms().saturating_sub(s.write_failed_at_ms.load(Ordering::Relaxed))
                < WRITE_FAILING_HOLD_MS
    }

    fn note_write_refused(&self) {
        self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
        self.shared
            .write_failed_at_ms
            .store(since_start_ms(), Ordering::Relaxed);
    }

    /// Appends refused since open because no segment could be allocated.
    pub fn write_failures(&self) -> u64 {
        self.shared.write_failures.load(Ordering::Relaxed)
    }

    /// Every damaged range of this partition (see `recovery`): found by recovery at open or
    /// listed from an earlier start, accepted or not. Readiness should fail while any is
    /// not accepted.
    pub fn damage(&self) -> Vec<Damage> {
        self.shared.damage.lock().unwrap().clone()
    }

    /// Records every damaged range of this partition as accepted by an operator (in its
    /// damage file, replaced atomically): they stay listed and skipped, and no longer fail
    /// readiness. Returns how many were newly accepted.
    pub fn accept_damage(&self) -> Result<usize> {
        let mut damage = self.shared.damage.lock().unwrap();
        let newly = damage.iter().filter(|d| !d.accepted).count();
        if newly > 0 {
            let mut accepted = damage.clone();
            accepted.iter_mut().for_each(|d| d.accepted = true);
            let text = recovery::render_damage(&accepted);
            segment::replace_file(
                &self.shared.dir.join(recovery::DAMAGE_FILE),
                text.as_bytes(),
            )?;
            *damage = accepted;
        }
        Ok(newly)
    }

    /// Registers (or looks up) a named consumer whose committed position holds back
    /// retention. A consumer registered in an earlier run keeps its persisted position.
    pub fn consumer(&self, name: &str) -> Consumer {
        let mut map = self.shared.consumers.lock().unwrap();
        let pos = map
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(AtomicU64::new(self.start())))
            .clone();
        Consumer { position: pos }
    }

    /// Forgets a consumer so it no longer holds back retention.
    pub fn remove_consumer(&self, name: &str) -> Result<()> {
        self.shared.consumers.lock().unwrap().remove(name);
        self.persist_consumers()
    }

    fn persist_consumers(&self) -> Result<()> {
        let text: String = self
            .shared
            .consumers
            .lock()
            .unwrap()
            .iter()
            .map(|(n, p)| format!("{n} {}\n", p.load(Ordering::Acquire)))
            .collect();
        segment::replace_file(&self.shared.dir.join(CONSUMERS_FILE), text.as_bytes())
    }

    /// Keeps every segment of this partition whatever its consumers have read (for
    /// partitions whose owner rebuilds its state from all of them: ledger, payouts).
    pub fn keep_forever(&self) {
        self.shared.kept.store(true, Ordering::Release);
    }

    /// Removes whole segments that every registered consumer has passed. Returns how many
    /// were removed. Without registered consumers, or once kept forever, nothing is removed.
    pub fn retain(&self) -> Result<usize> {
        if self.shared.kept.load(Ordering::Acquire) {
            return Ok(0);
        }
        let min = {
            let map = self.shared.consumers.lock().unwrap();
            match map.values().map(|p| p.load(Ordering::Acquire)).min() {
                Some(m) => m,
                None => return Ok(0),
            }
        };
        let doomed: Vec<Arc<Segment>> = {
            let segs = self.shared.segments.read().unwrap();
            segs.windows(2)
                .take_while(|w| w[1].base <= min)
                .map(|w| w[0].clone())
                .collect()
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        // Positions are on disk before the data they release is gone.
        self.persist_consumers()?;
        {
            let mut segs = self.shared.segments.write().unwrap();
            segs.drain(..doomed.len());
            self.shared.start.store(segs[0].base, Ordering::Release);
        }
        for seg in &doomed {
            std::fs::remove_file(&seg.path).map_err(|e| Error::io(&seg.path, e))?;
            log::info!("journal: retention removed {}", seg.path.display());
        }
        segment::sync_dir(&self.shared.dir)?;
        Ok(doomed.len())
    }

    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.durability.notify();
        self.shared.synced.notify();
        self.shared.data.notify();
    }
}

fn load_consumers(dir: &Path) -> Result<BTreeMap<String, Arc<AtomicU64>>> {
    let path = dir.join(CONSUMERS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split(' ');
        if let (Some(name), Some(Ok(pos)), None) = (it.next(), it.next().map(str::parse), it.next())
        {
            map.insert(name.to_string(), Arc::new(AtomicU64::new(pos)));
        } else {
            log::warn!(
                "journal: ignoring malformed line in {}: {line:?}",
                path.display()
            );
        }
    }
    Ok(map)
}

/// A consumer's committed position: everything below it may be removed by retention.
#[derive(Debug, Clone)]
pub struct Consumer {
    position: Arc<AtomicU64>,
}

impl Consumer {
    /// Says the consumer no longer needs anything below `offset`: everything it derived from
    /// those records must already be durable. Never moves back.
    pub fn commit(&self, offset: u64) {
        self.position.fetch_max(offset, Ordering::AcqRel);
    }

    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the record.
    pub offset: u64,
    /// Offset just past it: wait for `durable >= end` for a durable acknowledgement.
    pub end: u64,
}

/// The one writer of a partition. Not `Clone`; give it to one owner.
pub struct Writer {
    shared: Arc<Shared>,
    seg: Arc<Segment>,
    /// Next write position in `seg`'s frame space.
    pos: usize,
    /// Logical offset of `pos`.
    end: u64,
    /// Reused serialisation buffer for typed appends (aligned for rkyv).
    pub(crate) buf: rkyv::util::AlignedVec,
    /// The next segment, being prepared in the background once this one is half full, so a
    /// roll does not stall appends on allocation and page-table population.
    spare: Option<std::thread::JoinHandle<Result<Segment>>>,
    /// Set while segment allocation fails: appends that need a segment are refused without
    /// trying again until the backoff has passed.
    backoff: Option<AllocateBackoff>,
}

/// When a failing segment allocation may be tried again, and what it failed with.
#[derive(Debug)]
struct AllocateBackoff {
    retry_at: std::time::Instant,
    wait: Duration,
    /// The OS error of the last failure (ENOSPC for a full disk), to refuse with.
    errno: Option<i32>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("partition", &self.shared.name)
            .field("end", &self.end)
            .finish()
    }
}

impl Writer {
    /// Appends one record and publishes it to readers. It is in the page cache (it survives
    /// a process crash) when this returns; see [`Partition::wait_durable`] for power loss.
    #[inline]
    pub fn append(
        &mut self,
        kind: u16,
        version: u16,
        source: Option<&Source>,
        payload: &[u8],
    ) -> Result<Appended> {
        let appended = self.write(kind, version, source, payload)?;
        self.publish();
        Ok(appended)
    }

    /// Writes a record without publishing it; call [`Writer::publish`] after a batch.
    #[inline]
    pub fn write(
        &mut self,
        kind: u16,
        version: u16,
        source: Option<&Source>,
        payload: &[u8],
    ) -> Result<Appended> {
        frame::check_append(kind, payload.len(), self.shared.config.record_size_max)?;
        let total = frame::frame_size(payload.len(), source.is_some());
        if self.pos + total > self.seg.capacity() {
            if self.pos == 0 {
                // An empty segment (an older, smaller one) cannot hold it; a new segment
                // would get the same base.
                return Err(Error::RecordTooLarge {
                    size: payload.len(),
                    max: self.seg.capacity() - frame::frame_size(0, true),
                });
            }
            self.roll(total)?;
        } else if self.spare.is_none()
            && self.backoff.is_none()
            && self.pos > self.seg.capacity() / 2
        {
            self.prepare_spare();
        }
        // SAFETY: we are the partition's only writer and [pos, pos + total) is above the
        // published end, where no reader looks.
        let dst = unsafe { self.seg.data_mut(self.pos, total) };
        frame::encode(dst, kind, version, source, payload);
        let offset = self.end;
        self.pos += total;
        self.end += total as u64;
        Ok(Appended {
            offset,
            end: self.end,
        })
    }

    /// Makes everything written so far visible to readers and wakes the ones waiting.
    #[inline]
    pub fn publish(&mut self) {
        self.shared.end.store(self.end, Ordering::SeqCst);
        self.shared.data.notify();
    }

    /// Offset the next record will get.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The partition this writer appends to.
    pub fn partition(&self) -> Partition {
        Partition {
            shared: self.shared.clone(),
        }
    }

    fn prepare_spare(&mut self) {
        let (dir, size) = (self.shared.dir.clone(), self.next_segment_size());
        let spawned = std::thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || Segment::create_spare(&dir, size));
        // Without a thread the roll simply creates the segment itself.
        self.spare = spawned.ok();
    }

    /// Size of the segment after the one being written.
    fn next_segment_size(&self) -> u64 {
        self.shared.config.next_segment_size(self.seg.size())
    }

    /// Moves to a new segment that holds at least a frame of `need` bytes. While
    /// allocation fails (disk full) the append is refused at once, and allocation is tried
    /// again only after the backoff.
    fn roll(&mut self, need: usize) -> Result<()> {
        if let Some(b) = &self.backoff {
            if std::time::Instant::now() < b.retry_at {
                self.partition().note_write_refused();
                let e = b.errno.map_or_else(
                    || std::io::Error::other("segment allocation failing"),
                    std::io::Error::from_raw_os_error,
                );
                return Err(Error::io(&self.shared.dir, e));
            }
        }
        match self.next_segment(need) {
            Ok(seg) => {
                if self.backoff.take().is_some() {
                    self.shared.write_failing.store(false, Ordering::Relaxed);
                    log::info!(
                        "journal: partition {}: appends resume ({} bytes of segment allocated)",
                        self.shared.name,
                        seg.size()
                    );
                }
                self.seg.advise_sealed();
                let seg = Arc::new(seg);
                self.shared.segments.write().unwrap().push(seg.clone());
                log::debug!(
                    "journal: partition {} rolled to {}",
                    self.shared.name,
                    seg.path.display()
                );
                self.seg = seg;
                self.pos = 0;
                Ok(())
            }
            Err(e) => {
                self.partition().note_write_refused();
                let wait = self
                    .backoff
                    .as_ref()
                    .map_or(ALLOCATE_RETRY_MIN, |b| (b.wait * 2).min(ALLOCATE_RETRY_MAX));
                if !self.shared.write_failing.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "journal: partition {}: appends refused, no segment can be allocated: \
                         {e}; trying again at most every {} ms until it can",
                        self.shared.name,
                        ALLOCATE_RETRY_MAX.as_millis()
                    );
                }
                let errno = match &e {
                    Error::Io { source, .. } => source.raw_os_error(),
                    _ => None,
                };
                self.backoff = Some(AllocateBackoff {
                    retry_at: std::time::Instant::now() + wait,
                    wait,
                    errno,
                });
                Err(e)
            }
        }
    }

    /// The next segment, activated at `end`: the spare when it was made, else a new one of
    /// the next size or, when that does not fit on the disk, smaller ones down to what a
    /// frame of `need` bytes takes (so appends resume as soon as a record fits again).
    fn next_segment(&mut self, need: usize) -> Result<Segment> {
        let s = &self.shared;
        let spare_full = match self.spare.take().map(|h| h.join()) {
            Some(Ok(Ok(spare))) => return spare.activate(&s.dir, s.id, self.end),
            Some(Ok(Err(e))) => e.is_disk_full(),
            Some(Err(_)) | None => false,
        };
        let page = crate::config::PAGE_SIZE;
        let floor = ((segment::SEGMENT_HEADER_SIZE + need) as u64)
            .div_ceil(page)
            .saturating_mul(page)
            .max(crate::config::SEGMENT_SIZE_MIN);
        let mut size = self.next_segment_size().max(floor);
        if spare_full {
            // The spare was this size: go straight to a smaller one.
            size = (size / 4 / page * page).max(floor);
        }
        loop {
            match Segment::create_spare(&s.dir, size) {
                Ok(spare) => return spare.activate(&s.dir, s.id, self.end),
                Err(e) if e.is_disk_full() && size > floor => {
                    size = (size / 4 / page * page).max(floor);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.publish();
        if let Some(Ok(Ok(spare))) = self.spare.take().map(|h| h.join()) {
            let _ = std::fs::remove_file(&spare.path);
        }
        self.shared.writer_taken.store(false, Ordering::Release);
    }
}

/// One record, borrowed in place from the mapped segment.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Where the record starts.
    pub offset: u64,
    /// Where the next record starts.
    pub next: u64,
    pub kind: u16,
    pub version: u16,
    pub source: Option<Source>,
    /// The rkyv archive, 8-byte aligned, CRC-checked.
    pub payload: &'a [u8],
}

/// A tailing reader. Reads never block; [`Reader::wait`] and [`Reader::wait_async`] sleep
/// until the writer publishes more.
pub struct Reader {
    shared: Arc<Shared>,
    seg: Arc<Segment>,
    pos: usize,
    next: u64,
    /// Read only below `durable` (see [`Reader::durable_only`]).
    durable_only: bool,
    /// Start of the next damaged range at or after `next` (`u64::MAX`: none), so a reader
    /// of an undamaged partition pays one comparison per record.
    skip_at: u64,
    /// Index of that range in the partition's `skips`.
    skip_index: usize,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("partition", &self.shared.name)
            .field("next", &self.next)
            .finish()
    }
}

impl Reader {
    /// Offset of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The partition this reader reads.
    pub fn partition(&self) -> Partition {
        Partition {
            shared: self.shared.clone(),
        }
    }

    /// Makes the reader see only durable records. Actors read their inputs this way: an
    /// output derived from a record that a power loss could still take would name an input
    /// that recovery may cut away. Costs up to `background-sync-interval` of latency on
    /// partitions nobody else waits on.
    pub fn durable_only(mut self) -> Reader {
        self.durable_only = true;
        self
    }

    /// The end this reader may read up to.
    #[inline]
    fn visible_end(&self) -> u64 {
        if self.durable_only {
            self.shared.durable.load(Ordering::Acquire)
        } else {
            self.shared.end.load(Ordering::Acquire)
        }
    }

    /// Moves to `offset` (a record boundary within `start..=end`).
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        // Under the segment lock, so retention cannot remove the segment in between.
        let shared = self.shared.clone();
        let segs = shared.segments.read().unwrap();
        let (start, end) = (segs[0].base, self.shared.end.load(Ordering::Acquire));
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange {
                partition: self.shared.name.clone(),
                offset,
                start,
                end,
            });
        }
        // An offset inside a damaged range reads on from the end of it.
        let skips = &self.shared.skips;
        let k = skips.partition_point(|r| r.1 <= offset);
        let offset = match skips.get(k) {
            Some(&(from, to)) if from <= offset => to,
            _ => offset,
        };
        self.place(&segs[..], offset);
        Ok(())
    }

    /// Puts the reader at `offset` (a record boundary, not inside a damaged range) in the
    /// segment that holds it, and finds the next damaged range.
    fn place(&mut self, segs: &[Arc<Segment>], offset: u64) {
        let i = segs.partition_point(|s| s.base <= offset).saturating_sub(1);
        self.seg = segs[i].clone();
        self.pos = (offset - self.seg.base) as usize;
        self.next = offset;
        let skips = &self.shared.skips;
        self.skip_index = skips.partition_point(|r| r.1 <= offset);
        self.skip_at = skips.get(self.skip_index).map_or(u64::MAX, |r| r.0);
    }

    /// Jumps over the damaged range starting at `next` (cold: only where there is damage).
    #[cold]
    fn skip_damage(&mut self) {
        let to = self.shared.skips[self.skip_index].1;
        let segs = self.shared.segments.read().unwrap().clone();
        self.place(&segs, to);
    }

    /// The next record, or `None` when the reader has caught up with the writer.
    // Not `Iterator`: the record borrows the reader's segment (a lending iterator).
    #[allow(clippy::should_implement_trait)]
    #[inline]
    pub fn next(&mut self) -> Result<Option<Record<'_>>> {
        let record_size_max = crate::config::RECORD_SIZE_MAX_CEILING;
        let (at, total) = loop {
            let end = self.visible_end();
            if self.next >= end {
                return Ok(None);
            }
            if self.next == self.skip_at {
                self.skip_damage();
                continue;
            }
            let limit = ((end - self.seg.base) as usize).min(self.seg.capacity());
            // SAFETY: [pos, limit) is below the published end.
            let buf = unsafe { self.seg.data(self.pos.min(limit), limit) };
            match frame::probe_published(buf, record_size_max) {
                Probe::Frame(total) => break (self.pos, total),
                Probe::End => self.enter_next_segment()?,
                Probe::Corrupt(why) => {
                    return Err(Error::InvalidPayload {
                        offset: self.next,
                        why: format!("{why} below the published end of {}", self.shared.name),
                    })
                }
            }
        };
        self.pos += total;
        let offset = self.next;
        self.next += total as u64;
        // SAFETY: the frame is below the published end and was just validated.
        let f = frame::parts(unsafe { self.seg.data(at, at + total) });
        Ok(Some(Record {
            offset,
            next: self.next,
            kind: f.kind,
            version: f.version,
            source: f.source,
            payload: f.payload,
        }))
    }

    fn enter_next_segment(&mut self) -> Result<()> {
        let segs = self.shared.segments.read().unwrap();
        match segs.iter().find(|s| s.base == self.next) {
            Some(s) if !Arc::ptr_eq(s, &self.seg) => {
                self.seg = s.clone();
                self.pos = 0;
                Ok(())
            }
            _ => Err(Error::OffsetOutOfRange {
                partition: self.shared.name.clone(),
                offset: self.next,
                start: self.shared.start.load(Ordering::Acquire),
                end: self.shared.end.load(Ordering::Acquire),
            }),
        }
    }

    /// Blocks until there is a record to read, the journal closes, or the timeout passes.
    /// Returns whether a record is ready.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (s, next) = (&self.shared, self.next);
        let (notifier, mark) = if self.durable_only {
            (&s.synced, &s.durable)
        } else {
            (&s.data, &s.end)
        };
        notifier.wait_until(
            || mark.load(Ordering::SeqCst) > next || s.closed.load(Ordering::SeqCst),
            timeout,
        );
        mark.load(Ordering::SeqCst) > next
    }

    /// Resolves when there is a record to read (or the journal closes). `'static`, so an
    /// actor can spawn it.
    pub fn wait_async(&self) -> DataWait {
        DataWait {
            shared: self.shared.clone(),
            next: self.next,
            counted: false,
            durable_only: self.durable_only,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// See [`Reader::wait_async`].
pub struct DataWait {
    shared: Arc<Shared>,
    next: u64,
    counted: bool,
    durable_only: bool,
}

impl DataWait {
    fn parts(&self) -> (&Notifier, &AtomicU64) {
        if self.durable_only {
            (&self.shared.synced, &self.shared.durable)
        } else {
            (&self.shared.data, &self.shared.end)
        }
    }
}

impl std::fmt::Debug for DataWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataWait")
            .field("next", &self.next)
            .finish()
    }
}

impl Future for DataWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let next = this.next;
        let mut counted = this.counted;
        let (notifier, mark) = this.parts();
        let closed = &this.shared.closed;
        let r = notifier.poll_wait(cx, &mut counted, || {
            mark.load(Ordering::SeqCst) > next || closed.load(Ordering::SeqCst)
        });
        this.counted = counted;
        r
    }
}

impl Drop for DataWait {
    fn drop(&mut self) {
        if self.counted {
            self.parts().0.unregister();
        }
    }
}

/// See [`Partition::wait_durable`].
pub struct DurableWait {
    shared: Arc<Shared>,
    end: u64,
    counted: bool,
}

impl std::fmt::Debug for DurableWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableWait")
            .field("end", &self.end)
            .finish()
    }
}

impl Future for DurableWait {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let (s, end) = (&this.shared, this.end);
        let durable = || s.durable.load(Ordering::SeqCst) >= end;
        match s.durability.poll_wait(cx, &mut this.counted, || {
            durable() || s.closed.load(Ordering::SeqCst)
        }) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) if durable() => Poll::Ready(Ok(())),
            Poll::Ready(()) => Poll::Ready(Err(Error::Closed)),
        }
    }
}

impl Drop for DurableWait {
    fn drop(&mut self) {
        if self.counted {
            self.shared.durability.unregister();
        }
    }
}
