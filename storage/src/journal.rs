//! The journal: a directory of partitions, a group-commit flusher, retention, and the
//! read-only scan behind `clicktrail journal verify|inspect`.
//!
//! ```text
//! <data dir>/journal/LOCK                      flock: one process writes a journal
//! <data dir>/journal/<id, 5 digits>-<name>/    one directory per partition
//!     <base offset, 20 digits>.seg             segments (see `segment`)
//!     consumers                                "<name> <position>" lines, for retention
//!     damage, damaged-*.bin, *.seg.corrupt     damage kept by recovery (see `recovery`)
//! <data dir>/journal/.tmp-<id>-<name>/         a partition being created; removed at open
//! ```
//!
//! A partition directory appears only whole (built under `.tmp-`, renamed into place), so
//! a start that fails part way (a full disk) leaves no half-made partition and no id taken.
//! Two directories with the same id or the same name, or a directory without any segment,
//! are refused at open with an error naming them, never used.

use crate::partition::{Partition, CREATING_PREFIX};
use crate::recovery::{self, Damage, SegmentReport};
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
    refuse_duplicates(&out)?;
    Ok(out)
}

/// Refuses two partition directories with one id or one name.
fn refuse_duplicates(parts: &[(u32, String, PathBuf)]) -> Result<()> {
    for (id, name, _) in parts {
        let same: Vec<PathBuf> = parts
            .iter()
            .filter(|(i2, n2, _)| i2 == id || n2 == name)
            .map(|p| p.2.clone())
            .collect();
        if same.len() > 1 {
            let what = if parts.iter().filter(|p| p.0 == *id).count() > 1 {
                format!("id {id}")
            } else {
                format!("name {name:?}")
            };
            return Err(Error::DuplicatePartition { what, dirs: same });
        }
    }
    Ok(())
}

/// Removes partition directories a crash left half built (see [`Partition::create`]).
fn remove_unfinished(root: &Path) -> Result<()> {
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let is_tmp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(CREATING_PREFIX));
        if is_tmp && entry.path().is_dir() {
            log::info!(
                "journal: removing {}, a partition a previous start did not finish creating",
                entry.path().display()
            );
            std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

impl Journal {
    /// Opens (recovering every partition) or creates the journal under `data_dir/journal`,
    /// and starts the group-commit flusher.
    pub fn open(data_dir: &Path, config: JournalConfig) -> Result<Journal> {
        config.validate()?;
        let root = data_dir.join("journal");
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let lock = lock_dir(&root)?;
        remove_unfinished(&root)?;
        let mut partitions = Vec::new();
        for (id, name, dir) in list_partitions(&root)? {
            partitions.push(Partition::open(dir, id, name, config.clone())?);
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

    /// Like [`Journal::partition`], but a partition created here starts larger
    /// ([`JournalConfig::busy_first_segment_size`], 4 MiB): for partitions known to be busy
    /// from the first second (the ingest shards), which would otherwise roll once more
    /// early on, each roll a short stall of their appends. Not the full `segment_size`: a
    /// fresh server must start on a small disk. An existing partition is returned as it is.
    pub fn busy_partition(&self, name: &str) -> Result<Partition> {
        self.partition_starting_at(name, self.inner.config.busy_first_segment_size())
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
        let p = Partition::create(
            &self.inner.root,
            id,
            name,
            self.inner.config.clone(),
            first_segment,
        )?;
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

    /// Every damaged range of every partition (see [`Partition::damage`]), accepted or not.
    pub fn damage(&self) -> Vec<Damage> {
        self.partitions().iter().flat_map(|p| p.damage()).collect()
    }

    /// Accepts the damage of partition `name` (see [`Partition::accept_damage`]); returns
    /// how many ranges were newly accepted.
    pub fn accept_damage(&self, name: &str) -> Result<usize> {
        self.get(name)
            .ok_or_else(|| Error::NoSuchPartition(name.to_string()))?
            .accept_damage()
    }

    /// True while some partition refuses appends because no segment can be allocated.
    pub fn writes_failing(&self) -> bool {
        self.partitions().iter().any(Partition::write_failing)
    }

    /// Appends refused since open, over every partition, because no segment could be
    /// allocated (a counter for `/metrics`).
    pub fn write_failures(&self) -> u64 {
        self.partitions()
            .iter()
            .map(Partition::write_failures)
            .sum()
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
    /// Segment files that cannot be used (bad header, another partition's, overlapping):
    /// (path, why). Each also stands for a `damage` entry.
    pub bad_segments: Vec<(PathBuf, String)>,
    /// Damaged ranges, as recovery finds and keeps them (see `recovery`): from this scan
    /// and from the partition's damage file, with their accepted state.
    pub damage: Vec<Damage>,
}

impl PartitionReport {
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Offset the next record would get (the end of the valid data).
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.end)
    }

    /// True when every CRC checked out, the segments follow on without gaps, and no damage
    /// is listed (accepted damage included: see [`PartitionReport::is_ready`]).
    pub fn is_clean(&self) -> bool {
        self.bad_segments.is_empty()
            && self.damage.is_empty()
            && self.segments.iter().all(|s| s.problem.is_none())
    }

    /// True when a server would start ready on it: no damage that is not accepted. (A torn
    /// tail is cleared by recovery and does not count.)
    pub fn is_ready(&self) -> bool {
        self.damage.iter().all(|d| d.accepted)
    }
}

/// Scans every partition under `data_dir/journal` read-only, checking every frame's CRC and
/// that segments follow on, and telling damage from a torn tail exactly as recovery does.
/// Changes nothing, takes no lock: meant for a stopped server (on a running one, records
/// appended during the scan are simply not seen).
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
        if recovery::list_segments(&dir)?.is_empty() {
            return Err(Error::HalfMadePartition { dir });
        }
        let survey = recovery::survey(&dir, id, &name, false, &mut |rec| visit(&name, rec))?;
        let known = recovery::load_damage(&dir, &name)?;
        let mut found = survey.damage;
        for d in found.iter_mut().filter(|d| d.copy.is_none()) {
            let copy = dir.join(recovery::copy_name(d.from, d.to));
            d.copy = copy.exists().then_some(copy);
        }
        out.push(PartitionReport {
            id,
            name,
            path: dir,
            segments: survey.segments.into_iter().map(|(_, r)| r).collect(),
            bad_segments: survey
                .unusable
                .into_iter()
                .map(|u| (u.path, u.why))
                .collect(),
            damage: recovery::merge_damage(found, known),
        });
    }
    Ok(out)
}

/// `clicktrail journal accept-damage`: on a stopped server (takes the journal's lock),
/// records every damaged range of partition `name` as accepted in its damage file, so the
/// next start is ready; the ranges stay skipped and their copies stay. Returns the damage
/// as now recorded. Damage not yet seen by a start is accepted too (the scan finds it
/// exactly as recovery will).
pub fn accept_damage(data_dir: &Path, name: &str) -> Result<Vec<Damage>> {
    let root = data_dir.join("journal");
    let _lock = lock_dir(&root)?;
    let report = scan(data_dir)?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::NoSuchPartition(name.to_string()))?;
    let mut damage = report.damage;
    if damage.iter().any(|d| !d.accepted) {
        damage.iter_mut().for_each(|d| d.accepted = true);
        let text = recovery::render_damage(&damage);
        let path = report.path.join(recovery::DAMAGE_FILE);
        crate::segment::replace_file(&path, text.as_bytes())?;
    }
    Ok(damage)
}

/// Default time a caller waits for durability before giving up (used by tools and tests).
pub const DURABLE_WAIT_DEFAULT: Duration = Duration::from_secs(5);
