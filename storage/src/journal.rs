//! The journal: a directory of partitions, a group-commit flusher, retention, and the
//! read-only scan behind `clicktrail journal verify|inspect`.
//!
//! ```text
//! <data dir>/journal/LOCK                      flock: one process writes a journal
//! <data dir>/journal/<id, 5 digits>-<name>/    one directory per partition
//!     <base offset, 20 digits>.seg             segments (see `segment`)
//!     consumers                                "<name> <position>" lines, for retention
//! ```

use crate::partition::{list_segments, scan_segment_with, Partition, SegmentReport};
use crate::segment::Segment;
use crate::{Error, JournalConfig, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// The event journal of one node. Cheap to clone; closes when [`Journal::close`] is called
/// (or the last clone drops).
#[derive(Clone, Debug)]
pub struct Journal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    config: JournalConfig,
    partitions: RwLock<Vec<Partition>>,
    /// Serialises partition creation (id assignment and directory creation).
    create_lock: Mutex<()>,
    /// `true` once closing; the flusher sleeps on the condvar between rounds. Shared with
    /// the flusher thread, which holds only a weak reference to the rest.
    stop: Arc<(Mutex<bool>, Condvar)>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// Held for the journal's lifetime: the advisory lock that keeps a second process out.
    _lock: File,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Partition directories under `root`: (id, name, path), in id order.
fn list_partitions(root: &Path) -> Result<Vec<(u32, String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let file_name = entry.file_name();
        let Some(s) = file_name.to_str() else {
            continue;
        };
        let Some((id, name)) = s.split_once('-') else {
            continue;
        };
        if id.len() != 5 || !valid_name(name) || !entry.path().is_dir() {
            continue;
        }
        if let Ok(id) = id.parse() {
            out.push((id, name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

impl Journal {
    /// Opens (recovering every partition) or creates the journal under `data_dir/journal`,
    /// and starts the group-commit flusher.
    pub fn open(data_dir: &Path, config: JournalConfig) -> Result<Journal> {
        config.validate()?;
        let root = data_dir.join("journal");
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let lock = lock_dir(&root)?;
        let mut partitions = Vec::new();
        for (id, name, dir) in list_partitions(&root)? {
            // A directory left without segments (a crash as it was created) starts small.
            let first = config.first_segment_size();
            partitions.push(Partition::open(dir, id, name, config.clone(), first)?);
        }
        if partitions.len() > config.partitions_max {
            return Err(Error::TooManyPartitions {
                name: partitions.last().unwrap().name().to_string(),
                max: config.partitions_max,
            });
        }
        let inner = Arc::new(Inner {
            root,
            config,
            partitions: RwLock::new(partitions),
            create_lock: Mutex::new(()),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            flusher: Mutex::new(None),
            _lock: lock,
        });
        let (weak, stop) = (Arc::downgrade(&inner), inner.stop.clone());
        let flusher = std::thread::Builder::new()
            .name("journal-flusher".into())
            .spawn(move || flusher_loop(weak, stop))
            .map_err(|e| Error::io("journal-flusher thread", e))?;
        *inner.flusher.lock().unwrap() = Some(flusher);
        Ok(Journal { inner })
    }

    pub fn config(&self) -> &JournalConfig {
        &self.inner.config
    }

    /// The partition named `name`, created if it does not exist yet (starting with a small
    /// segment: [`JournalConfig::first_segment_size`]).
    pub fn partition(&self, name: &str) -> Result<Partition> {
        self.partition_starting_at(name, self.inner.config.first_segment_size())
    }

    /// Like [`Journal::partition`], but a partition created here starts at the full
    /// `segment_size`: for partitions known to be busy from the first second (the ingest
    /// shards), which would otherwise roll twice early on, each roll a short stall of
    /// their appends. An existing partition is returned as it is.
    pub fn busy_partition(&self, name: &str) -> Result<Partition> {
        self.partition_starting_at(name, self.inner.config.segment_size)
    }

    fn partition_starting_at(&self, name: &str, first_segment: u64) -> Result<Partition> {
        if let Some(p) = self.get(name) {
            return Ok(p);
        }
        if !valid_name(name) {
            return Err(Error::InvalidPartitionName(name.to_string()));
        }
        let _guard = self.inner.create_lock.lock().unwrap();
        if let Some(p) = self.get(name) {
            return Ok(p);
        }
        let count = self.inner.partitions.read().unwrap().len();
        if count >= self.inner.config.partitions_max {
            return Err(Error::TooManyPartitions {
                name: name.to_string(),
                max: self.inner.config.partitions_max,
            });
        }
        let id = self
            .inner
            .partitions
            .read()
            .unwrap()
            .iter()
            .map(|p| p.id() + 1)
            .max()
            .unwrap_or(1);
        let dir = self.inner.root.join(format!("{id:05}-{name}"));
        let p = Partition::open(
            dir,
            id,
            name.to_string(),
            self.inner.config.clone(),
            first_segment,
        )?;
        crate::segment::sync_dir(&self.inner.root)?;
        self.inner.partitions.write().unwrap().push(p.clone());
        Ok(p)
    }

    /// The partition named `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Partition> {
        let parts = self.inner.partitions.read().unwrap();
        parts.iter().find(|p| p.name() == name).cloned()
    }

    /// The partition with id `id`, if it exists.
    pub fn by_id(&self, id: u32) -> Option<Partition> {
        let parts = self.inner.partitions.read().unwrap();
        parts.iter().find(|p| p.id() == id).cloned()
    }

    /// Every partition, in id order.
    pub fn partitions(&self) -> Vec<Partition> {
        self.inner.partitions.read().unwrap().clone()
    }

    /// Syncs every partition now (what the flusher does every interval).
    pub fn sync(&self) -> Result<()> {
        let mut first_err = None;
        for p in self.partitions() {
            if let Err(e) = p.sync() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs retention on every partition; returns the number of segments removed.
    pub fn retain(&self) -> Result<usize> {
        self.partitions()
            .iter()
            .try_fold(0, |n, p| Ok(n + p.retain()?))
    }

    /// Stops the flusher, syncs everything, and fails every pending durability wait.
    /// Idempotent.
    pub fn close(&self) -> Result<()> {
        self.inner.signal_stop();
        if let Some(h) = self.inner.flusher.lock().unwrap().take() {
            let _ = h.join();
        }
        let result = self.sync();
        for p in self.partitions() {
            p.close();
        }
        result
    }
}

impl Inner {
    fn signal_stop(&self) {
        let (lock, cond) = &*self.stop;
        *lock.lock().unwrap() = true;
        cond.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The flusher holds only a weak reference and ends on this signal; make the data
        // durable here in case `close` was never called.
        self.signal_stop();
        for p in self.partitions.get_mut().unwrap().iter() {
            let _ = p.sync();
            p.close();
        }
    }
}

fn flusher_loop(inner: std::sync::Weak<Inner>, stop: Arc<(Mutex<bool>, Condvar)>) {
    let Some(interval) = inner.upgrade().map(|i| i.config.flush_interval) else {
        return;
    };
    let mut round = std::time::Instant::now();
    loop {
        {
            let (lock, cond) = &*stop;
            let stopped = lock.lock().unwrap();
            if *stopped {
                return;
            }
            // Rounds start every interval, not an interval after the last one ended: the
            // syncs of a round are part of the group-commit wait, not added to it.
            let (stopped, _) = cond
                .wait_timeout(stopped, interval.saturating_sub(round.elapsed()))
                .unwrap();
            if *stopped {
                return;
            }
        }
        round = std::time::Instant::now();
        let Some(inner) = inner.upgrade() else { return };
        let parts = inner.partitions.read().unwrap().clone();
        drop(inner);
        for p in parts {
            // Errors are logged by `sync` (once per failure run) and retried next round;
            // waiters see them as missing durability (they time out and answer 503).
            let _ = p.sync_if_due();
        }
    }
}

fn lock_dir(root: &Path) -> Result<File> {
    use std::os::unix::io::AsRawFd;
    let path = root.join("LOCK");
    let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(
            &path,
            std::io::Error::new(
                e.kind(),
                format!("journal is in use by another process ({e})"),
            ),
        ));
    }
    Ok(file)
}

/// What a read-only scan found in one partition.
#[derive(Debug, Clone)]
pub struct PartitionReport {
    pub id: u32,
    pub name: String,
    pub path: PathBuf,
    pub segments: Vec<SegmentReport>,
    /// Segment files that could not be opened or do not follow on: (path, why).
    pub bad_segments: Vec<(PathBuf, String)>,
}

impl PartitionReport {
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Offset the next record would get (the end of the valid data).
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.end)
    }

    /// True when every CRC checked out and the segments follow on without gaps.
    pub fn is_clean(&self) -> bool {
        self.bad_segments.is_empty() && self.segments.iter().all(|s| s.problem.is_none())
    }
}

/// Scans every partition under `data_dir/journal` read-only, checking every frame's CRC and
/// that segments follow on. Changes nothing, takes no lock: meant for a stopped server (on a
/// running one, records appended during the scan are simply not seen).
/// Frames are checked against the hard ceiling on record size, not a configured limit, so a
/// record written under a larger limit than today's is not called corrupt.
pub fn scan(data_dir: &Path) -> Result<Vec<PartitionReport>> {
    scan_records(data_dir, &mut |_, _| {})
}

/// [`scan`], handing every valid record (with its partition's name) to `visit`, partition
/// by partition, in offset order. Read-only and lock-free like [`scan`]: tools use it to
/// check what a journal holds (the load generator's verification mode).
pub fn scan_records(
    data_dir: &Path,
    visit: &mut dyn FnMut(&str, &crate::Record<'_>),
) -> Result<Vec<PartitionReport>> {
    let root = data_dir.join("journal");
    let mut out = Vec::new();
    for (id, name, dir) in list_partitions(&root)? {
        let mut report = PartitionReport {
            id,
            name,
            path: dir.clone(),
            segments: Vec::new(),
            bad_segments: Vec::new(),
        };
        let mut expected: Option<u64> = None;
        for (base, path) in list_segments(&dir)? {
            match Segment::open(&path, false) {
                Ok((seg, header)) => {
                    if header.partition_id != id || header.base != base {
                        report
                            .bad_segments
                            .push((path, "header names another partition or base".into()));
                        continue;
                    }
                    if expected.is_some_and(|e| e != base) {
                        report.bad_segments.push((
                            path,
                            format!("starts at {base}, previous segment ends at {expected:?}"),
                        ));
                    }
                    let name = report.name.clone();
                    let r = scan_segment_with(
                        &seg,
                        crate::config::RECORD_SIZE_MAX_CEILING,
                        &mut |rec| visit(&name, rec),
                    );
                    expected = Some(r.end);
                    report.segments.push(r);
                }
                Err(e) => report.bad_segments.push((path, e.to_string())),
            }
        }
        out.push(report);
    }
    Ok(out)
}

/// Default time a caller waits for durability before giving up (used by tools and tests).
pub const DURABLE_WAIT_DEFAULT: Duration = Duration::from_secs(5);
