//! Segment files: one preallocated, memory-mapped file holding a run of frames.
//!
//! ```text
//! file: <partition dir>/<base offset, 20 digits>.seg, as many bytes as its header's size
//!       (a partition's first segment is small, later ones grow up to segment-size)
//!
//! offset  size  field
//!      0     8  magic b"CTJRNL\r\n" (the CR LF catches text-mode mangling)
//!      8     4  format version (u32 LE), currently 1
//!     12     4  partition id (u32 LE)
//!     16     8  base offset (u64 LE): the logical offset of the first data byte
//!     24     8  segment size in bytes (u64 LE), header included
//!     32     4  CRC32C of bytes [0, 32)
//!     36    28  zero
//!     64     .  frames (see `frame`), then zeros to the end of the file
//! ```
//!
//! A logical offset `o` in the segment lives at file position `64 + (o - base)`. The next
//! segment's base is this segment's base plus the bytes of frames it holds, so logical
//! offsets run on without gaps across segments.
//!
//! The whole file is allocated with `posix_fallocate` before it is mapped: a full disk is an
//! `ENOSPC` error at segment creation, never a `SIGBUS` on a mapped page later.

use crate::{fault, Error, Result};
use memmap2::{Advice, MmapRaw};
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Bytes of the segment header.
pub const SEGMENT_HEADER_SIZE: usize = 64;
/// Magic bytes at the start of every segment.
pub const MAGIC: [u8; 8] = *b"CTJRNL\r\n";
/// Segment format version written by this code; the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

const _: () = assert!(SEGMENT_HEADER_SIZE % crate::frame::ALIGN == 0);

/// One mapped segment. Shared (`Arc`) between the partition's writer, its readers and the
/// flusher; the mapping stays valid after retention unlinks the file until the last
/// holder drops it.
pub(crate) struct Segment {
    /// Logical offset of the first data byte.
    pub base: u64,
    /// Where the file is (for logs, retention, and the inspect tool).
    pub path: PathBuf,
    /// The mapping of the whole file. Raw because the writer writes above the published
    /// end while readers read below it; the partition's end offset orders the two.
    map: MmapRaw,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("base", &self.base)
            .field("path", &self.path)
            .finish()
    }
}

/// File name of the segment starting at `base`.
pub fn file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// Parses a segment file name back into its base offset.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn encode_header(partition_id: u32, base: u64, size: u64) -> [u8; SEGMENT_HEADER_SIZE] {
    let mut h = [0u8; SEGMENT_HEADER_SIZE];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&partition_id.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    h[24..32].copy_from_slice(&size.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub partition_id: u32,
    pub base: u64,
    pub size: u64,
}

/// Decodes and checks a segment header; `Err` says why it is not a valid one.
pub fn decode_header(h: &[u8]) -> std::result::Result<SegmentHeader, String> {
    if h.len() < SEGMENT_HEADER_SIZE {
        return Err(format!(
            "file is {} bytes, shorter than a segment header",
            h.len()
        ));
    }
    if h[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    let crc = u32::from_le_bytes(h[32..36].try_into().unwrap());
    if crc32c::crc32c(&h[0..32]) != crc {
        return Err("header CRC mismatch".into());
    }
    if h[36..SEGMENT_HEADER_SIZE].iter().any(|b| *b != 0) {
        return Err("reserved header bytes are not zero".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    Ok(SegmentHeader {
        partition_id: u32::from_le_bytes(h[12..16].try_into().unwrap()),
        base: u64::from_le_bytes(h[16..24].try_into().unwrap()),
        size: u64::from_le_bytes(h[24..32].try_into().unwrap()),
    })
}

fn allocate(file: &File, path: &Path, size: u64) -> Result<()> {
    if let Some(e) = fault::allocate_error(size) {
        return Err(Error::io(path, e));
    }
    // SAFETY: plain syscall on a file descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::from_raw_os_error(rc)));
    }
    Ok(())
}

/// Asks for page-sized page-cache folios in `map` (`MADV_RANDOM`: no readahead, so a
/// fault allocates one 4 KiB page rather than a large folio).
///
/// Why: a durable append syncs the page it landed on, and writeback writes whole folios.
/// With the read-ahead this disk advertises (8 MiB), pages populated deep in a segment came
/// in folios of up to 2 MiB, and every group commit rewrote its whole folio. Measured: 4 MB
/// of 208-byte records synced every 20 records at 48 MiB into a segment wrote 2,103 MB to
/// disk by default and 8-12 MB with this advice; in the server, consecutive 9 s runs of
/// 10k conversions/s wrote 64, 166, 608 and 1,713 MB as the tail moved into larger folios,
/// with p50 and p99 latency rising run over run. Best effort: without it nothing breaks,
/// it only costs disk bandwidth.
fn advise_small_pages(map: &memmap2::MmapRaw) {
    let _ = map.advise(Advice::Random);
}

/// Faults every page of `map` in (readable) with one `MADV_POPULATE_READ` (Linux 5.14+),
/// or by reading each page where the kernel does not know the advice. Advisory: under
/// memory pressure (`ENOMEM`) or an interruption the pages simply fault later; only an
/// error a real access would also hit (`EFAULT`, `EHWPOISON`) fails the spare.
fn populate(map: &memmap2::MmapRaw, path: &Path) -> Result<()> {
    let Err(e) = map.advise(Advice::PopulateRead) else {
        return Ok(());
    };
    match e.raw_os_error() {
        Some(libc::EINVAL) => {
            for at in (0..map.len()).step_by(page_size()) {
                // SAFETY: inside the mapping, which only this thread knows yet.
                unsafe { map.as_ptr().add(at).read_volatile() };
            }
            Ok(())
        }
        Some(libc::EFAULT) | Some(libc::EHWPOISON) => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// The kernel's page size (4 KiB on x86-64; larger on some arm64 kernels): the unit of
/// writeback, write protection and unmapping.
pub(crate) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => crate::config::PAGE_SIZE as usize,
    })
}

/// Replaces the file at `path` with `bytes` so that a crash or power loss leaves either
/// the old file or the new one: written to `<path>.tmp`, synced, renamed over `path`, and
/// the directory synced.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(path, e))?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Fsyncs a directory so that a created, renamed or removed file name survives power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl Segment {
    /// Creates, allocates, maps and durably initialises a new segment file.
    pub fn create(dir: &Path, partition_id: u32, base: u64, size: u64) -> Result<Segment> {
        Segment::create_spare(dir, size)?.activate(dir, partition_id, base)
    }

    /// Prepares a segment without a header under a temporary name (`*.tmp`, which recovery
    /// deletes): allocated, mapped with its page tables populated, its size synced. This is
    /// the slow part of a roll, so the writer has it done in the background ahead of time.
    ///
    /// Pages are populated for reading only. Spares used to be written once per page as
    /// well, so ext4's `page_mkwrite` would run here rather than on the append path; but
    /// that left 64 MiB of dirty zeros per spare, which the kernel wrote back 30 s later
    /// wherever the writer had not got to yet: a write burst that stalled durable syncs
    /// (measured: a 9 s run of 10k conversions/s wrote 209-233 MB instead of ~55 MB, with a
    /// p99 of 241-259 ms, in 2 of 2 tries; without it 55-69 MB and no such stall). The
    /// first store to each page now faults on the writer's path, with no measurable cost
    /// in click throughput or latency here.
    pub fn create_spare(dir: &Path, size: u64) -> Result<Segment> {
        static SPARES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SPARES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("spare-{}-{n}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let made = (|| {
            allocate(&file, &path, size)?;
            // Populate the page cache and page tables now, in one pass, rather than on the
            // append path (the writer still takes one write fault per page).
            let map = memmap2::MmapOptions::new()
                .map_raw(&file)
                .map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
            advise_small_pages(&map);
            populate(&map, &path)?;
            Ok(Segment {
                base: 0,
                path: path.clone(),
                map,
            })
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        made
    }

    /// Turns a spare into segment `base` of partition `partition_id`: writes and syncs the
    /// header, then renames it into place and syncs the directory.
    pub fn activate(mut self, dir: &Path, partition_id: u32, base: u64) -> Result<Segment> {
        let header = encode_header(partition_id, base, self.map.len() as u64);
        // SAFETY: a spare's mapping is owned by this value alone.
        unsafe { self.bytes_mut(0, SEGMENT_HEADER_SIZE) }.copy_from_slice(&header);
        let path = dir.join(file_name(base));
        let mut renamed = false;
        let made = (|| {
            self.map
                .flush_range(0, SEGMENT_HEADER_SIZE)
                .map_err(|e| Error::io(&self.path, e))?;
            if path.exists() {
                return Err(Error::io(
                    &path,
                    std::io::Error::new(std::io::ErrorKind::AlreadyExists, "segment exists"),
                ));
            }
            std::fs::rename(&self.path, &path).map_err(|e| Error::io(&path, e))?;
            renamed = true;
            sync_dir(dir)
        })();
        match made {
            Ok(()) => {
                self.path = path;
                self.base = base;
                Ok(self)
            }
            Err(e) => {
                // Leave nothing behind that a later roll would collide with.
                let _ = std::fs::remove_file(if renamed { &path } else { &self.path });
                Err(e)
            }
        }
    }

    /// Opens an existing segment for reading and, when `writable`, for repair and appends.
    /// A file shorter than its header says (cut by a crash or a test) is extended with
    /// zeros back to full size when writable; read-only, it reads as if it had been.
    pub fn open(path: &Path, writable: bool) -> Result<(Segment, SegmentHeader)> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = [0u8; SEGMENT_HEADER_SIZE];
        {
            use std::io::Read;
            let mut f = &file;
            let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
            if n < SEGMENT_HEADER_SIZE {
                return Err(Error::BadSegment {
                    path: path.into(),
                    why: format!("only {n} bytes"),
                });
            }
        }
        let header = decode_header(&head).map_err(|why| Error::BadSegment {
            path: path.into(),
            why,
        })?;
        if header.size < crate::config::SEGMENT_SIZE_MIN
            || header.size > crate::config::SEGMENT_SIZE_MAX
        {
            return Err(Error::BadSegment {
                path: path.into(),
                why: format!("segment size {} out of bounds", header.size),
            });
        }
        if len < header.size && writable {
            allocate(&file, path, header.size)?;
        }
        let map = if writable {
            MmapRaw::map_raw(&file)
        } else if len < header.size {
            // A short file (cut by a crash or a copy) is read as recovery reads it after
            // extending it with zeros, so tools and recovery agree on every frame: its bytes
            // are copied into zeroed memory of the full size (rare; tools only).
            (|| {
                let mut anon = memmap2::MmapOptions::new()
                    .len(header.size as usize)
                    .map_anon()?;
                std::io::Read::read_exact(&mut &file, &mut anon[SEGMENT_HEADER_SIZE..len as usize])
                    .map(|_| anon[..SEGMENT_HEADER_SIZE].copy_from_slice(&head))?;
                Ok(MmapRaw::from(anon))
            })()
        } else {
            memmap2::MmapOptions::new()
                .len(header.size as usize)
                .map_raw_read_only(&file)
        }
        .map_err(|e| Error::io(path, e))?;
        Ok((
            Segment {
                base: header.base,
                path: path.into(),
                map,
            },
            header,
        ))
    }

    /// Prepares a reopened segment to be the writer's again: page-sized folios (see
    /// [`advise_small_pages`]). Without readahead, recovery's scan of a cold segment would
    /// read it a page at a time, so it is read ahead with `FADV_WILLNEED` (which allocates
    /// page-sized folios) in windows, since the kernel caps one call at the read-ahead size.
    pub(crate) fn advise_tail(&self, file_len: u64) {
        advise_small_pages(&self.map);
        const WINDOW: u64 = 4 << 20;
        if let Ok(file) = File::open(&self.path) {
            for at in (0..file_len).step_by(WINDOW as usize) {
                // SAFETY: plain syscall on a descriptor we own; advice only.
                unsafe {
                    libc::posix_fadvise(
                        file.as_raw_fd(),
                        at as libc::off_t,
                        WINDOW as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    )
                };
            }
        }
    }

    /// A segment the writer has left: readers replaying it from a cold cache get readahead
    /// back (its cached pages stay as they are).
    pub(crate) fn advise_sealed(&self) {
        let _ = self.map.advise(Advice::Normal);
    }

    /// The file's size: header and frame space.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Bytes of frame space (file size minus header).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.map.len() - SEGMENT_HEADER_SIZE
    }

    /// Frame space `[from, to)`, relative to the first data byte.
    ///
    /// # Safety
    /// No one may write the range while the slice lives: it must lie below the partition's
    /// published end (or the caller is the writer / single-threaded recovery).
    #[inline]
    pub unsafe fn data(&self, from: usize, to: usize) -> &[u8] {
        assert!(from <= to && to <= self.capacity());
        // SAFETY: bounds checked above; no concurrent writer per the contract.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(SEGMENT_HEADER_SIZE + from), to - from)
        }
    }

    /// Writable frame space `[from, from + len)`.
    ///
    /// # Safety
    /// Only the partition's one writer (or recovery, before readers exist) calls this, and
    /// only above the published end, where no reader looks.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn data_mut(&self, from: usize, len: usize) -> &mut [u8] {
        assert!(from + len <= self.capacity());
        // SAFETY: see the contract.
        unsafe { self.bytes_mut(SEGMENT_HEADER_SIZE + from, len) }
    }

    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes_mut(&self, at: usize, len: usize) -> &mut [u8] {
        // SAFETY: callers keep within the mapping and hold write exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(at), len) }
    }

    /// Msyncs frame space `[from, to)` to disk.
    pub fn flush(&self, from: usize, to: usize) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        if let Some(e) = fault::sync_error() {
            return Err(Error::io(&self.path, e));
        }
        self.map
            .flush_range(SEGMENT_HEADER_SIZE + from, to - from)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// [`Segment::flush`] for a range the writer has left behind, its whole pages unmapped
    /// from this process first (`MADV_DONTNEED`: one batched TLB flush).
    ///
    /// Writeback write-protects every page it cleans, and for a page mapped writable that
    /// is a synchronous TLB-shootdown IPI to every CPU running one of our threads, page by
    /// page: a background sync of a click partition (~2,000 pages a second at 10k
    /// clicks/s) spent its time in `smp_call_function_many_cond`, interrupting the HTTP
    /// workers. At 20k clicks/s those shootdowns were 0.92% of the server's CPU samples,
    /// and 0.06% with the unmap (plus 0.11% for the unmap itself). Durable syncs do not use
    /// it: they cover a few pages every couple of milliseconds, and unmapping those too made
    /// the p99.9 of conversions worse (47-50 ms against 14-33 ms).
    ///
    /// Only pages wholly inside `[from, to)` are unmapped, so the page the writer is
    /// filling keeps its mapping whatever range a caller passes. Readers lose nothing: the
    /// pages stay in the page cache (dirty ones stay dirty) and the next access maps them
    /// again.
    pub fn flush_unmapped(&self, from: usize, to: usize) -> Result<()> {
        let page = page_size();
        let start = (SEGMENT_HEADER_SIZE + from).div_ceil(page) * page;
        let end = (SEGMENT_HEADER_SIZE + to.min(self.capacity())) / page * page;
        if end > start {
            // SAFETY: MADV_DONTNEED on a MAP_SHARED file mapping (never truncated while
            // mapped) only drops page-table entries: dirty bits pass to the page cache,
            // whose pages keep the contents, so every reference into the mapping reads the
            // same bytes after a fault, and a store would fault the page back in. Advisory:
            // if it fails, writeback write-protects page by page as before.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
        self.flush(from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `field` line of /proc/self/smaps for the mapping starting at `addr`.
    fn smaps_line(addr: *const u8, field: &str) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", addr as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} for the mapping at {start}"))
            .to_string()
    }

    /// The `VmFlags` line of the mapping starting at `addr`.
    fn vm_flags(addr: *const u8) -> String {
        smaps_line(addr, "VmFlags:")
    }

    /// Segments the writer fills (spares, and the reopened tail) ask for page-sized folios
    /// (`MADV_RANDOM`, shown as `rr`): with large folios every durable sync rewrote up to
    /// 2 MiB (see `advise_small_pages`). Other segments keep readahead for replay, and a
    /// sealed one gets it back.
    #[test]
    fn writable_segments_avoid_large_folios() {
        let dir = tempfile::tempdir().unwrap();
        let spare = Segment::create_spare(dir.path(), 64 * 1024).unwrap();
        let flags = vm_flags(spare.map.as_ptr());
        assert!(flags.split_whitespace().any(|f| f == "rr"), "{flags}");
        let seg = Segment::create(dir.path(), 1, 0, 64 * 1024).unwrap();
        let path = seg.path.clone();
        drop(seg);
        let (w, _) = Segment::open(&path, true).unwrap();
        let rr = |seg: &Segment| {
            let flags = vm_flags(seg.map.as_ptr());
            flags.split_whitespace().any(|f| f == "rr")
        };
        assert!(!rr(&w), "an older segment keeps readahead");
        w.advise_tail(64 * 1024);
        assert!(rr(&w), "the reopened tail");
        w.advise_sealed();
        assert!(!rr(&w), "sealed");
    }

    /// A spare is zeroed and writable, and its bytes survive activation and reopening.
    #[test]
    fn spares_are_zeroed_writable_and_activate() {
        let dir = tempfile::tempdir().unwrap();
        for base in [0u64, 1 << 20] {
            let spare = Segment::create_spare(dir.path(), 64 * 1024).unwrap();
            // SAFETY: the spare is ours alone.
            assert!(unsafe { spare.data(0, spare.capacity()) }
                .iter()
                .all(|&b| b == 0));
            unsafe { spare.data_mut(100, 4) }.copy_from_slice(b"ct!!");
            let seg = spare.activate(dir.path(), 7, base).unwrap();
            seg.flush(0, seg.capacity()).unwrap();
            let path = seg.path.clone();
            drop(seg);
            let (seg, header) = Segment::open(&path, false).unwrap();
            assert_eq!(header.base, base);
            assert_eq!(unsafe { seg.data(100, 104) }, b"ct!!");
        }
    }

    /// Resident pages of the mapping starting at `addr` (its `Rss`), in KiB.
    fn rss_kib(addr: *const u8) -> u64 {
        let line = smaps_line(addr, "Rss:");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// A background sync drops the page-table entries of the range it writes back (so
    /// writeback has no writable mapping to shoot down page by page), and the bytes read
    /// back the same, through the mapping and from the file.
    #[test]
    fn flushing_a_left_behind_range_unmaps_it_and_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 1, 0, 1024 * 1024).unwrap();
        let len = 256 * 1024;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        // SAFETY: the segment is ours alone.
        unsafe { seg.data_mut(0, len) }.copy_from_slice(&bytes);
        let before = rss_kib(seg.map.as_ptr());
        assert!(before >= 256, "written pages are mapped: {before} KiB");
        seg.flush_unmapped(0, len).unwrap();
        let after = rss_kib(seg.map.as_ptr());
        assert!(after + 200 <= before, "unmapped: {before} -> {after} KiB");
        assert_eq!(unsafe { seg.data(0, len) }, &bytes[..]);
        let file = std::fs::read(&seg.path).unwrap();
        assert_eq!(
            &file[SEGMENT_HEADER_SIZE..SEGMENT_HEADER_SIZE + len],
            &bytes[..]
        );
    }
}
