//! Recovery: what a partition's segments hold, told apart into intact records, a torn
//! tail, and damage, shared by [`Partition`](crate::Partition)'s open and the read-only
//! [`scan`](crate::scan) behind `clicktrail journal verify|inspect|accept-damage`, so the
//! tools say exactly what a start would do.
//!
//! Rules (each segment is scanned frame by frame; see `frame` for the frame format):
//!
//! * **Torn tail**: bad bytes at the end of the *last* segment with no valid frame after
//!   them. Nothing there was ever acknowledged as durable and nothing after it can be read,
//!   so recovery zeroes from the bad frame to the end of the segment, logs a warning, and
//!   reports nothing. (A cut file is the same: it is extended with zeros first.)
//! * **Re-derived partitions** (`JournalConfig::rederived_partitions`, an actor's outputs):
//!   damage is cut off like a torn tail ([`cut_at_damage`]): the actor derives the rest
//!   again, where keeping later records would make it resume past lost outputs.
//! * **Damage**: bad bytes with a valid frame after them ([`frame::resync`] finds it), or
//!   with a later segment after them (the next segment's base says where this one's frames
//!   end), or a segment file that cannot be read (bad header; a gap between segments).
//!   These bytes were inside the durable range, so they are never zeroed or dropped:
//!   * the damaged byte range is copied to `damaged-<from>-<to>.bin` in the partition
//!     directory (a bad segment file is renamed to `<name>.seg.corrupt` instead), and
//!     neither is ever deleted by the journal;
//!   * every intact record after it keeps its offset; readers skip the range;
//!   * the range is listed in the `damage` file and by [`Partition::damage`]
//!     (crate::Partition::damage), which fails readiness until an operator accepts it
//!     (`clicktrail journal accept-damage`), after which it is still listed, as accepted.
//!
//! ```text
//! <partition dir>/damage      one line per damaged range, rewritten with `replace_file`:
//!     <from> <to> <bytes> <frames> open|accepted <copy file name or -> <why ...>
//! <partition dir>/damaged-<from, 20 digits>-<to, 20 digits>.bin
//!                             the damaged bytes [from, to) as they were found
//! <partition dir>/<base>.seg.corrupt[.<n>]
//!                             a segment file recovery could not use, as it was
//! ```

use crate::frame::{self, Probe};
use crate::segment::{self, Segment};
use crate::{Error, Record, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File in a partition directory listing its damaged ranges and whether each is accepted.
pub(crate) const DAMAGE_FILE: &str = "damage";
/// Lines of the damage file read at most (a bound on a file we parse at every start).
const DAMAGE_LINES_MAX: usize = 10_000;

/// What a scan found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub path: PathBuf,
    pub base: u64,
    /// Complete, CRC-valid records.
    pub records: u64,
    /// Logical offset just past the last valid record (or just past the last damaged
    /// range, when the segment's frames end in one).
    pub end: u64,
    /// Record counts by kind.
    pub kinds: BTreeMap<u16, u64>,
    /// A torn tail: (logical offset, what was wrong). Only the last segment has one;
    /// recovery clears it.
    pub problem: Option<(u64, String)>,
    /// Damaged ranges inside the segment, each with intact frames (or the next segment)
    /// after it, in offset order.
    pub damaged: Vec<DamagedRange>,
    /// The file is shorter than its header says: (file bytes, header size). Tools read
    /// what is there; recovery extends it with zeros.
    pub short: Option<(u64, u64)>,
}

/// Bytes inside the durable range of a segment that hold no readable frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// Logical offset of the first bad frame.
    pub from: u64,
    /// Logical offset of the first intact frame (or segment) after it.
    pub to: u64,
    /// Best count of the frames lost (see [`frame::count_damaged_frames`]).
    pub frames: u64,
    /// What the first bad frame looked like.
    pub why: String,
    /// Valid records of the segment before the range.
    records_before: u64,
}

/// Damage found in a partition: a range of offsets whose records cannot be read, with
/// intact records after it that recovery kept. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The partition's name.
    pub partition: String,
    /// Logical offset where the damage starts (where the first lost frame started).
    pub from: u64,
    /// Logical offset of the first intact record after it. Equal to `from` for a last
    /// segment whose header was unreadable: its frames are in the copy only.
    pub to: u64,
    /// Bytes kept in the copy.
    pub bytes: u64,
    /// Best count of the records lost (at least 1 for a damaged frame range, 0 when not
    /// known, e.g. a missing segment).
    pub frames: u64,
    /// Intact records after the range at the time of the scan (0 when not known).
    pub records_after: u64,
    /// What was wrong.
    pub why: String,
    /// Where the damaged bytes were kept, if a copy could be written.
    pub copy: Option<PathBuf>,
    /// An operator accepted it (`clicktrail journal accept-damage`): still listed, no
    /// longer failing readiness.
    pub accepted: bool,
}

/// Scans frame space `[0, limit)` of a segment, handing every valid record to `visit` in
/// order. `limit` is where the next segment says this one's frames end; `last` says no
/// segment follows (only then can bad bytes be a torn tail; otherwise every byte up to
/// `limit` held frames and bad bytes without a valid frame after them are damage up to it). Pure reading; never panics on
/// any bytes.
pub(crate) fn scan_segment_with(
    seg: &Segment,
    record_size_max: usize,
    limit: usize,
    last: bool,
    visit: &mut dyn FnMut(&Record<'_>),
) -> SegmentReport {
    // The next segment starts past this one's space: a segment file is missing between
    // them (the survey reports that gap), so this one's frames may end anywhere.
    let gap_follows = !last && limit > seg.capacity();
    let limit = limit.min(seg.capacity());
    // SAFETY: recovery and tools scan before any writer exists (or on a read-only map).
    let data = unsafe { seg.data(0, limit) };
    let mut report = SegmentReport {
        path: seg.path.clone(),
        base: seg.base,
        records: 0,
        end: seg.base,
        kinds: BTreeMap::new(),
        problem: None,
        damaged: Vec::new(),
        short: None,
    };
    let mut pos = 0usize;
    loop {
        let why: String = match frame::probe(&data[pos..], record_size_max) {
            Probe::Frame(total) => {
                let f = frame::parts(&data[pos..pos + total]);
                match crate::schema::validate(f.kind, f.version, f.payload) {
                    Some(Err(why)) => format!("payload fails validation: {why}"),
                    _ => {
                        *report.kinds.entry(f.kind).or_insert(0) += 1;
                        report.records += 1;
                        visit(&Record {
                            offset: seg.base + pos as u64,
                            next: seg.base + (pos + total) as u64,
                            kind: f.kind,
                            version: f.version,
                            source: f.source,
                            payload: f.payload,
                        });
                        pos += total;
                        continue;
                    }
                }
            }
            Probe::End if pos == limit => break,
            Probe::End => "zeros where records were expected".into(),
            Probe::Corrupt(why) => why.into(),
        };
        let clean_end = why.starts_with("zeros");
        let next = frame::resync(data, pos + frame::ALIGN, record_size_max);
        let to = match next {
            Some(next) => next,
            // Zeros, and nothing valid after them: the end of what was written.
            None if (last || gap_follows) && clean_end => break,
            None if last => {
                report.problem = Some((seg.base + pos as u64, why));
                break;
            }
            // A later segment follows, so every byte up to `limit` held frames.
            None => limit,
        };
        report.damaged.push(DamagedRange {
            from: seg.base + pos as u64,
            to: seg.base + to as u64,
            frames: frame::count_damaged_frames(&data[pos..to], record_size_max),
            why,
            records_before: report.records,
        });
        pos = to;
    }
    report.end = seg.base + pos as u64;
    report
}

/// Segment files of a partition directory, in base order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            out.push((base, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A segment file recovery cannot use, and the damage entry that stands for it.
pub(crate) struct Unusable {
    pub path: PathBuf,
    pub why: String,
    /// Index of its entry in [`Survey::damage`].
    pub damage_index: usize,
}

/// What a partition directory holds, before recovery changes anything.
pub(crate) struct Survey {
    /// Usable segments and their scans, in base order.
    pub segments: Vec<(Segment, SegmentReport)>,
    /// Segment files that cannot be used (recovery moves them aside).
    pub unusable: Vec<Unusable>,
    /// Damage found, in offset order; `copy` not set yet (except for unusable files, where
    /// it names the file itself), `accepted` false.
    pub damage: Vec<Damage>,
    /// Offset the next record would get.
    pub end: u64,
}

/// Opens and scans every segment of partition `id` in `dir` (writable: short files are
/// extended with zeros, as recovery needs) and tells damage from a torn tail.
pub(crate) fn survey(
    dir: &Path,
    id: u32,
    name: &str,
    writable: bool,
    visit: &mut dyn FnMut(&Record<'_>),
) -> Result<Survey> {
    let files = list_segments(dir)?;
    let mut s = Survey {
        segments: Vec::new(),
        unusable: Vec::new(),
        damage: Vec::new(),
        end: files.first().map_or(0, |f| f.0),
    };
    // Valid records before each damage entry (for `records_after`).
    let mut before: Vec<u64> = Vec::new();
    let mut records = 0u64;
    let mut expected: Option<u64> = None;
    for (i, (base, path)) in files.iter().enumerate() {
        let (base, next_base) = (*base, files.get(i + 1).map(|f| f.0));
        let new_damage = |from: u64, to: u64, bytes: u64, why: String| Damage {
            partition: name.to_string(),
            from,
            to,
            bytes,
            frames: 0,
            records_after: 0,
            why,
            copy: None,
            accepted: false,
        };
        if let Some(e) = expected.filter(|e| *e < base) {
            let why = "no segment file holds these offsets".to_string();
            s.damage.push(new_damage(e, base, 0, why));
            before.push(records);
        }
        let bad = match Segment::open(path, writable) {
            Ok((seg, header)) if header.partition_id != id || header.base != base => {
                drop(seg);
                Some("header names another partition or base".to_string())
            }
            Ok(_) if expected.is_some_and(|e| e > base) => {
                Some("overlaps the previous segment".to_string())
            }
            Ok((seg, header)) => {
                if writable && next_base.is_none() {
                    // Read ahead for the scan of a cold tail; page-sized folios after it.
                    seg.advise_tail(header.size);
                }
                let file_size = std::fs::metadata(path).map_or(0, |m| m.len());
                let last = next_base.is_none();
                let limit = next_base.map_or(usize::MAX, |n| (n - base) as usize);
                let mut report = scan_segment_with(
                    &seg,
                    crate::config::RECORD_SIZE_MAX_CEILING,
                    limit,
                    last,
                    visit,
                );
                if file_size < header.size {
                    report.short = Some((file_size, header.size));
                }
                for d in &report.damaged {
                    let mut entry = new_damage(d.from, d.to, d.to - d.from, d.why.clone());
                    entry.frames = d.frames;
                    s.damage.push(entry);
                    before.push(records + d.records_before);
                }
                records += report.records;
                expected = Some(report.end);
                s.end = report.end;
                s.segments.push((seg, report));
                None
            }
            Err(Error::BadSegment { why, .. }) => Some(why),
            Err(e) => return Err(e),
        };
        if let Some(why) = bad {
            // The whole file stands for the range up to the next segment (or, when it is
            // the last, for its frames that no offset can be given to any more).
            let from = expected.unwrap_or(base).max(base);
            let to = next_base.unwrap_or(from).max(from);
            let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
            let mut entry = new_damage(from, to, bytes, format!("segment file unusable: {why}"));
            entry.copy = Some(path.clone());
            s.unusable.push(Unusable {
                path: path.clone(),
                why,
                damage_index: s.damage.len(),
            });
            s.damage.push(entry);
            before.push(records);
            expected = Some(to);
            s.end = to;
        }
    }
    for (d, b) in s.damage.iter_mut().zip(before) {
        d.records_after = records - b;
    }
    Ok(s)
}

/// For a partition whose records are derived again from other partitions: cuts the survey
/// at the first damage, as at a torn tail. The segment holding it keeps what lies before
/// it (recovery zeroes the rest); segment files after it are moved aside (never deleted);
/// nothing is reported as damage. See `JournalConfig::rederived_partitions`.
pub(crate) fn cut_at_damage(name: &str, mut s: Survey) -> Result<Survey> {
    let Some(cut) = s.damage.iter().map(|d| d.from).min() else {
        return Ok(s);
    };
    log::warn!(
        "journal: partition {name}: damaged at offset {cut}; it is derived again from its \
         inputs, so everything from there is cut off and its actor derives it anew"
    );
    for u in std::mem::take(&mut s.unusable) {
        quarantine(&u.path, &u.why)?;
    }
    let mut kept = Vec::with_capacity(s.segments.len());
    for (seg, mut report) in std::mem::take(&mut s.segments) {
        if seg.base >= cut && !kept.is_empty() {
            let path = seg.path.clone();
            drop(seg);
            quarantine(&path, "follows damage cut off in a re-derived partition")?;
            continue;
        }
        if report.end > cut || !report.damaged.is_empty() {
            let at = cut.max(seg.base);
            report.problem = Some((at, "damage in a re-derived partition".into()));
            report.end = at;
            report.damaged.clear();
        }
        kept.push((seg, report));
    }
    s.segments = kept;
    s.damage.clear();
    s.end = s.segments.last().map_or(cut, |(_, r)| r.end);
    Ok(s)
}

/// Applies a survey of partition `name` in `dir`: moves unusable segment files aside,
/// clears a torn tail, copies every damaged range, and records the damage in the damage
/// file. Returns the usable segments, every damage entry (this scan's and earlier ones,
/// with their accepted state), and the ranges readers must skip.
#[allow(clippy::type_complexity)]
pub(crate) fn recover(
    dir: &Path,
    name: &str,
    survey: Survey,
) -> Result<(Vec<Arc<Segment>>, Vec<Damage>, Vec<(u64, u64)>)> {
    let Survey {
        segments,
        unusable,
        mut damage,
        ..
    } = survey;
    for u in &unusable {
        damage[u.damage_index].copy = Some(quarantine(&u.path, &u.why)?);
    }
    if !unusable.is_empty() {
        segment::sync_dir(dir)?;
    }
    let mut kept = Vec::with_capacity(segments.len());
    for (seg, report) in segments {
        let end = (report.end - seg.base) as usize;
        if let Some((at, why)) = &report.problem {
            log::warn!(
                "journal: partition {name}: clearing a torn tail at offset {at} ({why}); \
                 nothing valid follows it"
            );
            // SAFETY: no readers or writer exist yet.
            unsafe { seg.data_mut(end, seg.capacity() - end) }.fill(0);
            seg.flush(end, seg.capacity())?;
        }
        let inside = |d: &Damage| d.from >= seg.base && d.to <= report.end && d.to > d.from;
        for d in damage.iter_mut().filter(|d| d.copy.is_none() && inside(d)) {
            match write_copy(dir, &seg, d) {
                Ok(path) => d.copy = Some(path),
                // The bytes are still in the segment; only retention could remove them.
                Err(e) => log::error!("journal: partition {name}: cannot copy damage: {e}"),
            }
        }
        // Make whatever a crashed process left in the page cache durable now.
        seg.flush(0, end)?;
        kept.push(Arc::new(seg));
    }
    let skips: Vec<(u64, u64)> = damage
        .iter()
        .filter(|d| d.to > d.from)
        .map(|d| (d.from, d.to))
        .collect();
    let found = damage.len();
    let damage = merge_damage(damage, load_damage(dir, name)?);
    let text = render_damage(&damage);
    let path = dir.join(DAMAGE_FILE);
    if found > 0 && std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        segment::replace_file(&path, text.as_bytes())?;
    }
    for d in damage.iter().filter(|d| !d.accepted) {
        log::error!(
            "journal: partition {name}: damaged offsets {}..{} ({} bytes, about {} records \
             lost, {} intact records after them kept): {}; copy: {}. Readers skip it. \
             Once handled, accept it: clicktrail journal accept-damage --partition {name}",
            d.from,
            d.to,
            d.bytes,
            d.frames,
            d.records_after,
            d.why,
            d.copy
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
        );
    }
    Ok((kept, damage, skips))
}

/// The name of the copy of damaged range `[from, to)`.
pub(crate) fn copy_name(from: u64, to: u64) -> String {
    format!("damaged-{from:020}-{to:020}.bin")
}

/// Writes the bytes of damaged range `d` (inside `seg`) to its copy beside the segments,
/// unless a copy exists already. Returns the copy's path.
pub(crate) fn write_copy(dir: &Path, seg: &Segment, d: &Damage) -> Result<PathBuf> {
    let path = dir.join(copy_name(d.from, d.to));
    if !path.exists() {
        let (from, to) = ((d.from - seg.base) as usize, (d.to - seg.base) as usize);
        // SAFETY: recovery runs before any reader or writer exists.
        let bytes = unsafe { seg.data(from, to.min(seg.capacity())) };
        segment::replace_file(&path, bytes)?;
    }
    Ok(path)
}

/// Moves a segment file recovery cannot use out of the way, keeping it for a human:
/// `<name>.seg.corrupt`, or `.corrupt.<n>` when that name is taken. Returns the new path.
pub(crate) fn quarantine(path: &Path, why: &str) -> Result<PathBuf> {
    let mut to = path.with_extension("seg.corrupt");
    let mut n = 1;
    while to.exists() {
        to = path.with_extension(format!("seg.corrupt.{n}"));
        n += 1;
    }
    log::error!(
        "journal: keeping unusable segment {} ({why}) as {}",
        path.display(),
        to.display()
    );
    std::fs::rename(path, &to).map_err(|e| Error::io(path, e))?;
    Ok(to)
}

/// Reads the damage file of a partition directory (empty when there is none).
pub(crate) fn load_damage(dir: &Path, name: &str) -> Result<Vec<Damage>> {
    let path = dir.join(DAMAGE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut out = Vec::new();
    for line in text.lines().take(DAMAGE_LINES_MAX) {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.splitn(7, ' ').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        match (num(0), num(1), num(2), num(3), f.get(4), f.get(5)) {
            (Some(from), Some(to), Some(bytes), Some(frames), Some(state), Some(copy))
                if from <= to =>
            {
                out.push(Damage {
                    partition: name.to_string(),
                    from,
                    to,
                    bytes,
                    frames,
                    records_after: 0,
                    why: f.get(6).unwrap_or(&"").to_string(),
                    copy: (*copy != "-").then(|| dir.join(copy)),
                    accepted: *state == "accepted",
                })
            }
            _ => log::warn!(
                "journal: ignoring malformed line in {}: {line:?}",
                path.display()
            ),
        }
    }
    Ok(out)
}

/// Renders the damage file.
pub(crate) fn render_damage(damage: &[Damage]) -> String {
    let mut out = String::from(
        "# clicktrail journal damage: <from> <to> <bytes> <frames> open|accepted <copy> <why>\n",
    );
    for d in damage {
        let copy = d
            .copy
            .as_ref()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("-");
        let why = d.why.replace('\n', " ");
        let state = if d.accepted { "accepted" } else { "open" };
        out.push_str(&format!(
            "{} {} {} {} {state} {copy} {why}\n",
            d.from, d.to, d.bytes, d.frames
        ));
    }
    out
}

/// Merges what a scan `found` with what the damage file `known` says: a range found again
/// keeps its accepted state and copy; a known range not found again (a segment moved aside
/// in an earlier start) stays listed. In offset order.
pub(crate) fn merge_damage(found: Vec<Damage>, known: Vec<Damage>) -> Vec<Damage> {
    let mut out = found;
    for k in known {
        match out.iter_mut().find(|d| (d.from, d.to) == (k.from, k.to)) {
            Some(d) => {
                d.accepted = k.accepted;
                if d.copy.is_none() || k.why.starts_with("segment file unusable") {
                    d.copy = k.copy;
                    d.why = k.why;
                    d.bytes = k.bytes;
                    d.frames = d.frames.max(k.frames);
                }
            }
            None => out.push(k),
        }
    }
    out.sort_by_key(|d| (d.from, d.to));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_file_round_trips() {
        let dir = std::path::Path::new("/data/journal/00001-p");
        let d = Damage {
            partition: "p".into(),
            from: 128,
            to: 256,
            bytes: 128,
            frames: 2,
            records_after: 0,
            why: "CRC mismatch".into(),
            copy: Some(dir.join(copy_name(128, 256))),
            accepted: true,
        };
        let e = Damage {
            from: 512,
            to: 512,
            copy: None,
            accepted: false,
            why: "segment file unusable: bad magic".into(),
            ..d.clone()
        };
        let text = render_damage(&[d.clone(), e.clone()]);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(DAMAGE_FILE), text).unwrap();
        let back = load_damage(tmp.path(), "p").unwrap();
        let fix = |mut x: Damage| {
            x.copy = x.copy.map(|c| tmp.path().join(c.file_name().unwrap()));
            x
        };
        assert_eq!(back, vec![fix(d), e]);
    }
}
