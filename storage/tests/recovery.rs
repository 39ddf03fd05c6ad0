//! Recovery from damage: a flipped byte inside the durable range loses only the damaged
//! record (every intact record after it is kept at its offset, the damaged bytes are copied
//! aside and reported until accepted), a torn tail is still cleared quietly, the read-only
//! scan behind `journal verify` agrees with recovery, and partition directories that are
//! duplicated or half made are refused.
//!
//! Randomised tests are seeded and print their seed when they fail; rerun one with
//! `JOURNAL_SEED=<n> cargo test -p clicktrail-storage --test recovery`.

use clicktrail_storage::segment::SEGMENT_HEADER_SIZE;
use clicktrail_storage::{Error, Journal, JournalConfig, Partition};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A kind this build does not know: kept without schema validation.
const TEST_KIND: u16 = 0x7000;

fn config() -> JournalConfig {
    JournalConfig {
        segment_size: 256 * 1024,
        record_size_max: 4096,
        partitions_max: 8,
        readers_max: 8,
        flush_interval: Duration::from_millis(1),
        background_sync_interval: Duration::from_millis(1),
        rederived_partitions: Vec::new(),
    }
}

fn seed() -> u64 {
    std::env::var("JOURNAL_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().expect("JOURNAL_SEED must be a number"),
    )
}

fn seeded(name: &str, f: impl Fn(u64) + std::panic::RefUnwindSafe) {
    let seed = seed();
    if let Err(e) = std::panic::catch_unwind(|| f(seed)) {
        eprintln!("{name} failed with JOURNAL_SEED={seed}");
        std::panic::resume_unwind(e);
    }
}

/// (offset, end, payload) of a record written.
type Written = (u64, u64, Vec<u8>);

/// Writes `n` records of 1-200 random bytes to partition "p"; returns them.
fn fill(dir: &Path, n: usize, rng: &mut fastrand::Rng) -> Vec<Written> {
    let journal = Journal::open(dir, config()).unwrap();
    let mut w = journal.partition("p").unwrap().writer().unwrap();
    let out = (0..n)
        .map(|_| {
            let payload: Vec<u8> = (0..rng.usize(1..200)).map(|_| rng.u8(..)).collect();
            let a = w.append(TEST_KIND, 1, None, &payload).unwrap();
            (a.offset, a.end, payload)
        })
        .collect();
    drop(w);
    journal.close().unwrap();
    out
}

fn partition_dir(data: &Path) -> PathBuf {
    std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap()
}

/// Segment files of partition "p": (base, path), in base order.
fn segments(data: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(partition_dir(data))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let base = clicktrail_storage::segment::parse_file_name(p.file_name()?.to_str()?)?;
            Some((base, p))
        })
        .collect();
    v.sort();
    v
}

/// The segment file holding logical offset `offset` and the file position of it.
fn locate(data: &Path, offset: u64) -> (PathBuf, usize) {
    let (base, path) = segments(data)
        .into_iter()
        .rev()
        .find(|(b, _)| *b <= offset)
        .unwrap();
    (path, SEGMENT_HEADER_SIZE + (offset - base) as usize)
}

fn read_all(p: &Partition) -> Vec<(u64, Vec<u8>)> {
    let mut r = p.reader().unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        out.push((rec.offset, rec.payload.to_vec()));
    }
    assert_eq!(r.position(), p.end(), "a reader reads up to the end");
    out
}

fn expect_all_but(written: &[Written], lost: usize) -> Vec<(u64, Vec<u8>)> {
    written
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lost)
        .map(|(_, (o, _, p))| (*o, p.clone()))
        .collect()
}

/// Flips one bit of record `victim` at byte `at` of its frame, reopens, and checks that
/// exactly that record is lost and the damage is reported, copied and skipped.
fn flip_and_check(
    seed: u64,
    victim_choice: impl Fn(&mut fastrand::Rng, usize) -> usize,
    at_choice: impl Fn(&mut fastrand::Rng, usize) -> usize,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 5_000, &mut rng);
    assert!(
        segments(dir.path()).len() > 2,
        "records span several segments"
    );
    let victim = victim_choice(&mut rng, written.len());
    let (offset, end, _) = written[victim].clone();
    let (path, pos) = locate(dir.path(), offset);
    let at = at_choice(&mut rng, (end - offset) as usize);
    let mut bytes = std::fs::read(&path).unwrap();
    let original = bytes[pos..pos + (end - offset) as usize].to_vec();
    bytes[pos + at] ^= 1 << rng.u8(0..8);
    std::fs::write(&path, &bytes).unwrap();

    // verify (read-only) already tells damage from a torn tail.
    let report = clicktrail_storage::scan(dir.path()).unwrap();
    assert!(!report[0].is_ready());
    assert_eq!(report[0].records(), written.len() as u64 - 1);
    assert_eq!(
        report[0].damage[0].records_after,
        (written.len() - victim - 1) as u64
    );

    let journal = Journal::open(dir.path(), config()).unwrap();
    let part = journal.partition("p").unwrap();
    assert_eq!(read_all(&part), expect_all_but(&written, victim));
    let damage = journal.damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    let d = &damage[0];
    assert_eq!(
        (d.partition.as_str(), d.from, d.to),
        ("p", offset, end),
        "{d:?}"
    );
    assert_eq!((d.bytes, d.frames, d.accepted), (end - offset, 1, false));
    assert_eq!(d.records_after, (written.len() - victim - 1) as u64);
    let copy = d.copy.clone().expect("a copy of the damaged bytes");
    let mut damaged = original.clone();
    damaged[at] = bytes[pos + at];
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        damaged,
        "the copy holds the bytes found"
    );
    assert_eq!(
        bytes[pos..pos + original.len()],
        damaged[..],
        "the segment keeps them"
    );

    // A reader placed inside or at the damaged range reads on after it.
    let mut r = part.reader_at(offset).unwrap();
    let next = r.next().unwrap().map(|rec| rec.offset);
    assert_eq!(next, written.get(victim + 1).map(|w| w.0));

    // Appends after recovery work and read back.
    let mut w = part.writer().unwrap();
    let a = w.append(TEST_KIND, 1, None, b"after").unwrap();
    assert_eq!(a.offset, written.last().unwrap().1);
    drop(w);
    let all = read_all(&part);
    assert_eq!(all.last().unwrap(), &(a.offset, b"after".to_vec()));
    assert_eq!(all.len(), written.len());
    journal.close().unwrap();
}

#[test]
fn a_flipped_bit_mid_partition_loses_only_its_record() {
    seeded(
        "a_flipped_bit_mid_partition_loses_only_its_record",
        |seed| {
            flip_and_check(
                seed,
                |rng, n| rng.usize(n / 10..n - 1),
                |rng, len| rng.usize(0..len),
            )
        },
    );
}

#[test]
fn a_lying_length_field_is_resynced() {
    seeded("a_lying_length_field_is_resynced", |seed| {
        flip_and_check(seed, |rng, n| rng.usize(1..n - 1), |rng, _| rng.usize(0..4))
    });
}

#[test]
fn a_torn_tail_is_cleared_quietly() {
    seeded("a_torn_tail_is_cleared_quietly", |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let written = fill(dir.path(), 3_000, &mut rng);
        let (path, pos) = locate(dir.path(), written.last().unwrap().1);
        let mut bytes = std::fs::read(&path).unwrap();
        // Half a frame's worth of garbage after the last record, as a crash mid-append.
        for b in &mut bytes[pos..pos + 40] {
            *b = rng.u8(1..);
        }
        std::fs::write(&path, &bytes).unwrap();
        let report = clicktrail_storage::scan(dir.path()).unwrap();
        assert!(report[0].damage.is_empty() && report[0].is_ready());
        assert!(report[0].segments.last().unwrap().problem.is_some());

        let journal = Journal::open(dir.path(), config()).unwrap();
        let part = journal.partition("p").unwrap();
        assert!(journal.damage().is_empty(), "a torn tail is not damage");
        assert_eq!(read_all(&part), expect_all_but(&written, usize::MAX));
        assert_eq!(part.end(), written.last().unwrap().1);
        assert!(std::fs::read(&path).unwrap()[pos..pos + 40]
            .iter()
            .all(|b| *b == 0));
        let mut w = part.writer().unwrap();
        w.append(TEST_KIND, 1, None, b"after").unwrap();
        drop(w);
        assert_eq!(read_all(&part).len(), written.len() + 1);
        journal.close().unwrap();
        let names: Vec<String> = std::fs::read_dir(partition_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with("damage")), "{names:?}");
    });
}

/// Damage in the last record of a segment ends at the next segment; a segment whose header
/// is unreadable is kept aside and the segments after it are kept.
#[test]
fn damage_at_a_segment_end_and_a_bad_segment_header_keep_later_segments() {
    let mut rng = fastrand::Rng::with_seed(7);
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 10_000, &mut rng);
    let segs = segments(dir.path());
    assert!(segs.len() >= 4);
    // The last record of the first segment.
    let last_of_first = written.iter().rposition(|w| w.0 < segs[1].0).unwrap();
    let (path, pos) = locate(dir.path(), written[last_of_first].0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[pos + 20] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // The header of the third segment.
    let mut bytes = std::fs::read(&segs[2].1).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&segs[2].1, &bytes).unwrap();

    let lost: Vec<usize> = (0..written.len())
        .filter(|i| *i == last_of_first || (segs[2].0..segs[3].0).contains(&written[*i].0))
        .collect();
    let expected: Vec<(u64, Vec<u8>)> = (0..written.len())
        .filter(|i| !lost.contains(i))
        .map(|i| (written[i].0, written[i].2.clone()))
        .collect();
    for round in 0..2 {
        let journal = Journal::open(dir.path(), config()).unwrap();
        let part = journal.partition("p").unwrap();
        assert_eq!(read_all(&part), expected, "round {round}");
        let d = part.damage();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].from, d[0].to), (written[last_of_first].0, segs[1].0));
        assert_eq!((d[1].from, d[1].to), (segs[2].0, segs[3].0));
        assert!(d[1]
            .copy
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".seg.corrupt"));
        assert!(d[1].copy.as_ref().unwrap().exists());
        journal.close().unwrap();
    }
}

#[test]
fn accepted_damage_stays_listed_and_skipped_and_no_longer_fails() {
    let mut rng = fastrand::Rng::with_seed(3);
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 2_000, &mut rng);
    let victim = 1_000;
    let (path, pos) = locate(dir.path(), written[victim].0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[pos + 17] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let expected = expect_all_but(&written, victim);

    // Accepted on a running journal.
    let journal = Journal::open(dir.path(), config()).unwrap();
    assert!(journal.damage().iter().all(|d| !d.accepted));
    assert_eq!(journal.accept_damage("p").unwrap(), 1);
    assert!(journal.damage().iter().all(|d| d.accepted));
    assert!(matches!(
        journal.accept_damage("nope"),
        Err(Error::NoSuchPartition(_))
    ));
    journal.close().unwrap();
    drop(journal);
    for _ in 0..2 {
        let journal = Journal::open(dir.path(), config()).unwrap();
        let part = journal.partition("p").unwrap();
        let d = journal.damage();
        assert_eq!(d.len(), 1);
        assert!(
            d[0].accepted,
            "accepted damage is still listed, as accepted"
        );
        assert_eq!(read_all(&part), expected);
        journal.close().unwrap();
    }
    let report = clicktrail_storage::scan(dir.path()).unwrap();
    assert!(report[0].is_ready() && !report[0].is_clean());

    // Accepted with the offline command, before any start has seen the damage.
    let mut rng = fastrand::Rng::with_seed(4);
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 2_000, &mut rng);
    let held = Journal::open(dir.path(), config()).unwrap();
    assert!(
        clicktrail_storage::accept_damage(dir.path(), "p").is_err(),
        "refused while a server holds the journal"
    );
    held.close().unwrap();
    drop(held);
    let (path, pos) = locate(dir.path(), written[victim].0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[pos + 30] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let accepted = clicktrail_storage::accept_damage(dir.path(), "p").unwrap();
    assert_eq!(accepted.len(), 1);
    assert!(accepted[0].accepted);
    let journal = Journal::open(dir.path(), config()).unwrap();
    let part = journal.partition("p").unwrap();
    assert!(journal.damage().iter().all(|d| d.accepted));
    assert_eq!(read_all(&part), expect_all_but(&written, victim));
    assert!(journal.damage()[0].copy.as_ref().unwrap().exists());
    journal.close().unwrap();
}

/// `journal verify|inspect` and recovery agree about a last segment cut short: both keep
/// every record before the cut one.
#[test]
fn a_short_last_segment_reads_as_far_as_it_goes() {
    let mut rng = fastrand::Rng::with_seed(5);
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 1_000, &mut rng);
    let (offset, end, _) = written.last().unwrap().clone();
    let (path, pos) = locate(dir.path(), offset);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..pos + (end - offset) as usize / 2]).unwrap();
    let report = clicktrail_storage::scan(dir.path()).unwrap();
    let last = report[0].segments.last().unwrap();
    assert!(
        report[0].bad_segments.is_empty(),
        "{:?}",
        report[0].bad_segments
    );
    assert!(last.short.is_some());
    assert_eq!(last.end, offset);
    assert_eq!(report[0].records(), written.len() as u64 - 1);
    assert!(report[0].damage.is_empty());
    let journal = Journal::open(dir.path(), config()).unwrap();
    let part = journal.partition("p").unwrap();
    assert_eq!(read_all(&part).len(), written.len() - 1);
    assert_eq!(part.end(), offset);
    journal.close().unwrap();
}

#[test]
fn duplicate_and_half_made_partitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), config()).unwrap();
    journal.partition("ingest-0").unwrap();
    journal.partition("ledger").unwrap();
    journal.close().unwrap();
    drop(journal);
    let root = dir.path().join("journal");
    // A leftover of a creation that crashed is removed.
    std::fs::create_dir(root.join(".tmp-00003-ingest-1")).unwrap();
    Journal::open(dir.path(), config())
        .unwrap()
        .close()
        .unwrap();
    assert!(!root.join(".tmp-00003-ingest-1").exists());

    // Two directories with id 2.
    let copy = root.join("00002-ingest-1");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(root.join("00002-ledger")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let err = Journal::open(dir.path(), config()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::DuplicatePartition { .. }), "{err}");
    assert!(
        text.contains("00002-ingest-1") && text.contains("00002-ledger"),
        "{text}"
    );
    assert!(
        clicktrail_storage::scan(dir.path()).is_err(),
        "verify refuses it too"
    );
    std::fs::remove_dir_all(&copy).unwrap();

    // Two directories named ingest-0.
    std::fs::create_dir(root.join("00005-ingest-0")).unwrap();
    let err = Journal::open(dir.path(), config()).unwrap_err().to_string();
    assert!(
        err.contains("00001-ingest-0") && err.contains("00005-ingest-0"),
        "{err}"
    );
    std::fs::remove_dir_all(root.join("00005-ingest-0")).unwrap();

    // A directory without a segment.
    std::fs::create_dir(root.join("00007-payouts")).unwrap();
    let err = Journal::open(dir.path(), config()).unwrap_err();
    assert!(matches!(err, Error::HalfMadePartition { .. }), "{err}");
    assert!(err.to_string().contains("00007-payouts"), "{err}");
    std::fs::remove_dir_all(root.join("00007-payouts")).unwrap();
    Journal::open(dir.path(), config())
        .unwrap()
        .close()
        .unwrap();
}

/// A partition an actor derives again (its outputs) is cut at damage, as at a torn tail:
/// keeping the records after a hole would make the actor resume past inputs whose outputs
/// were lost. Nothing is reported as damage; the segment files after it are kept aside.
#[test]
fn damage_in_a_rederived_partition_is_cut_off_not_kept() {
    seeded("rederived", |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        // Enough records for several segments.
        let written = fill(dir.path(), 3000, &mut rng);
        let victim = rng.usize(100..written.len() / 3);
        let (path, at) = locate(dir.path(), written[victim].0);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at + 20] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
        let segments_before = segments(dir.path()).len();
        let config = JournalConfig {
            rederived_partitions: vec!["p".into()],
            ..config()
        };
        let j = Journal::open(dir.path(), config.clone()).unwrap();
        let p = j.partition("p").unwrap();
        assert!(p.damage().is_empty(), "{:?}", p.damage());
        let kept: Vec<_> = written[..victim]
            .iter()
            .map(|(o, _, b)| (*o, b.clone()))
            .collect();
        assert_eq!(
            read_all(&p),
            kept,
            "everything before the damage, nothing after"
        );
        assert_eq!(p.end(), written[victim].0);
        // Appends go on from the cut and read back after a reopen.
        let mut w = p.writer().unwrap();
        let again = w.append(TEST_KIND, 1, None, b"derived again").unwrap();
        assert_eq!(again.offset, written[victim].0);
        drop(w);
        drop(p);
        j.close().unwrap();
        drop(j);
        let j = Journal::open(dir.path(), config).unwrap();
        let p = j.partition("p").unwrap();
        assert_eq!(read_all(&p).last().unwrap().1, b"derived again");
        assert!(p.damage().is_empty());
        let aside = std::fs::read_dir(partition_dir(dir.path()))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".corrupt")
            })
            .count();
        assert!(
            segments_before < 2 || aside + segments(dir.path()).len() >= segments_before,
            "later segment files are kept aside, not deleted"
        );
    });
}
