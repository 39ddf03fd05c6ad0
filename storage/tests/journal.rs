//! Black-box tests of the journal: a model-based property test against an in-memory model
//! (appends, rolls, reopen, torn tails, flipped bytes, retention), concurrent tailing, limits
//! and durability waits.
//!
//! Every randomised test is seeded and prints its seed when it fails; rerun one seed with
//! `JOURNAL_SEED=<n> cargo test -p clicktrail-storage --test journal`; run more seeds with
//! `JOURNAL_SEED_COUNT=<n>`.

use clicktrail_storage::frame::{self, Source};
use clicktrail_storage::segment::SEGMENT_HEADER_SIZE;
use clicktrail_storage::{Error, Journal, JournalConfig, Partition};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Kinds this build does not know: recovery keeps them without schema validation, so raw
/// random payloads can be used.
const TEST_KIND: u16 = 0x7000;

fn small_config() -> JournalConfig {
    JournalConfig {
        segment_size: 64 * 1024,
        record_size_max: 8 * 1024,
        partitions_max: 8,
        readers_max: 8,
        flush_interval: Duration::from_millis(1),
        background_sync_interval: Duration::from_millis(1),
        rederived_partitions: Vec::new(),
    }
}

/// One record as the model knows it.
#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    offset: u64,
    kind: u16,
    source: Option<Source>,
    payload: Vec<u8>,
}

impl ModelRecord {
    fn frame_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; frame::frame_size(self.payload.len(), self.source.is_some())];
        frame::encode(&mut b, self.kind, 1, self.source.as_ref(), &self.payload);
        b
    }
    fn end(&self) -> u64 {
        self.offset + frame::frame_size(self.payload.len(), self.source.is_some()) as u64
    }
}

fn read_all(p: &Partition) -> Vec<ModelRecord> {
    let mut r = p.reader().unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        assert_eq!(rec.version, 1);
        out.push(ModelRecord {
            offset: rec.offset,
            kind: rec.kind,
            source: rec.source,
            payload: rec.payload.to_vec(),
        });
    }
    assert_eq!(r.position(), p.end(), "reader stops at the published end");
    out
}

fn seeds(default_count: u64) -> Vec<u64> {
    match std::env::var("JOURNAL_SEED") {
        Ok(s) => vec![s.parse().expect("JOURNAL_SEED must be a number")],
        Err(_) => {
            let count = std::env::var("JOURNAL_SEED_COUNT").map_or(default_count, |c| {
                c.parse().expect("JOURNAL_SEED_COUNT must be a number")
            });
            (0..count).collect()
        }
    }
}

fn run_seeded(name: &str, count: u64, f: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds(count) {
        if let Err(e) = std::panic::catch_unwind(|| f(seed)) {
            eprintln!("{name} failed with JOURNAL_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

/// Segment files of the (first) partition directory, in base order: (base, path).
fn segment_files(data: &Path) -> Vec<(u64, std::path::PathBuf)> {
    segment_files_of(data, |_| true)
}

/// Segment files of the first partition directory whose name `pick` accepts.
fn segment_files_of(data: &Path, pick: impl Fn(&str) -> bool) -> Vec<(u64, std::path::PathBuf)> {
    let pdir = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && pick(p.file_name().unwrap().to_str().unwrap()))
        .unwrap();
    let mut v: Vec<_> = std::fs::read_dir(&pdir)
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

/// The model's view of what recovery keeps after bytes of the segment file at `base`
/// (followed by a segment at `next`, if any) were changed at file position `at`: a flipped
/// byte, or a cut there when `cut`. Only damaged records are lost (recovery resyncs after
/// them and keeps every intact record at its offset); a bad segment header loses the
/// records of that segment only.
fn drop_damaged(model: &mut Vec<ModelRecord>, base: u64, next: Option<u64>, at: usize, cut: bool) {
    let in_seg = |r: &ModelRecord| r.offset >= base && next.is_none_or(|n| r.offset < n);
    if at < SEGMENT_HEADER_SIZE {
        model.retain(|r| !in_seg(r));
        return;
    }
    let damaged_from = base + (at - SEGMENT_HEADER_SIZE) as u64;
    if !cut {
        model.retain(|r| !(in_seg(r) && r.offset <= damaged_from && damaged_from < r.end()));
        return;
    }
    // A cut zeroes the bytes after it: harmless only if they were 0. Nothing valid follows
    // in that segment, so every record from the first damaged one on is lost.
    let first_lost = model.iter().find(|r| {
        if !in_seg(r) || r.end() <= damaged_from {
            return false;
        }
        let fb = r.frame_bytes();
        let from = damaged_from.saturating_sub(r.offset) as usize;
        fb[from..].iter().any(|b| *b != 0)
    });
    if let Some(lost) = first_lost.map(|r| r.offset) {
        model.retain(|r| !(in_seg(r) && r.offset >= lost));
    }
}

#[test]
fn model_based_random_actions() {
    run_seeded("model_based_random_actions", 24, |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), small_config()).unwrap();
        let mut part = journal.partition("events").unwrap();
        let mut writer = Some(part.writer().unwrap());
        let mut model: Vec<ModelRecord> = Vec::new();
        let mut start = 0u64;
        let mut next_offset = 0u64;
        for step in 0..400 {
            match rng.u32(0..100) {
                // Appends, mostly small, sometimes large enough to force rolls quickly.
                0..=69 => {
                    let w = writer.get_or_insert_with(|| part.writer().unwrap());
                    let len = if rng.u8(..) < 20 {
                        rng.usize(1000..=8192)
                    } else {
                        rng.usize(0..300)
                    };
                    let payload: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                    let source = rng.bool().then(|| Source {
                        partition: rng.u32(..),
                        offset: rng.u64(..),
                        part: 0,
                        parts: rng.u16(1..4),
                    });
                    let kind = TEST_KIND + rng.u16(0..16);
                    let a = w.append(kind, 1, source.as_ref(), &payload).unwrap();
                    assert_eq!(a.offset, next_offset);
                    next_offset = a.end;
                    model.push(ModelRecord {
                        offset: a.offset,
                        kind,
                        source,
                        payload,
                    });
                    assert_eq!(a.end, model.last().unwrap().end());
                }
                // Full read and a tail read from a random record.
                70..=79 => {
                    assert_eq!(read_all(&part), model, "step {step}");
                    if !model.is_empty() {
                        let i = rng.usize(0..model.len());
                        let mut r = part.reader_at(model[i].offset).unwrap();
                        for m in &model[i..] {
                            assert_eq!(r.next().unwrap().unwrap().payload, &m.payload[..]);
                        }
                        assert!(r.next().unwrap().is_none());
                    }
                }
                // Clean reopen: nothing changes.
                80..=85 => {
                    drop(writer.take());
                    journal.close().unwrap();
                    drop((journal, part));
                    journal = Journal::open(dir.path(), small_config()).unwrap();
                    part = journal.partition("events").unwrap();
                    assert_eq!(read_all(&part), model, "step {step} after reopen");
                }
                // Crash damage: a torn tail (file cut short) or a flipped byte, then reopen.
                86..=93 => {
                    drop(writer.take());
                    journal.close().unwrap();
                    drop((journal, part));
                    let files = segment_files(dir.path());
                    let (base, path) = files[rng.usize(0..files.len())].clone();
                    let seg_end = model
                        .iter()
                        .filter(|r| r.offset >= base)
                        .take_while(|r| {
                            files
                                .iter()
                                .find(|f| f.0 > base)
                                .is_none_or(|n| r.offset < n.0)
                        })
                        .last()
                        .map_or(base, |r| r.end());
                    let written = (seg_end - base) as usize + SEGMENT_HEADER_SIZE;
                    let mut bytes = std::fs::read(&path).unwrap();
                    let at = rng.usize(0..written + 16).min(bytes.len() - 1);
                    let cut = rng.bool();
                    if cut {
                        bytes.truncate(at);
                    } else {
                        bytes[at] ^= 1 << rng.u8(0..8);
                    }
                    std::fs::write(&path, &bytes).unwrap();
                    let next = files.iter().find(|f| f.0 > base).map(|f| f.0);
                    drop_damaged(&mut model, base, next, at, cut);
                    journal = Journal::open(dir.path(), small_config()).unwrap();
                    part = journal.partition("events").unwrap();
                    if model.is_empty() {
                        start = part.start();
                    }
                    assert_eq!(read_all(&part), model, "step {step} after damage at {at}");
                    // The end may lie past the last intact record: after a damaged range
                    // that ends a segment (the next segment starts there).
                    assert!(part.end() >= model.last().map_or(start, |r| r.end()));
                    next_offset = part.end();
                }
                // Retention up to a random record.
                _ => {
                    if model.is_empty() {
                        continue;
                    }
                    let keep_from = model[rng.usize(0..model.len())].offset;
                    part.consumer("model").commit(keep_from);
                    part.retain().unwrap();
                    assert!(part.start() <= keep_from);
                    model.retain(|r| r.offset >= part.start());
                    start = part.start();
                    assert_eq!(read_all(&part), model, "step {step} after retention");
                }
            }
        }
        drop(writer);
        journal.close().unwrap();
    });
}

#[test]
fn concurrent_writer_and_tailing_readers() {
    let segments = tail_while_writing(small_config(), 50_000, 200);
    assert!(segments.len() > 10, "the test must cross segment rolls");
}

#[test]
fn tailing_readers_cross_segments_that_grow() {
    const MIB: u64 = 1 << 20;
    let config = JournalConfig {
        segment_size: 64 * MIB,
        ..small_config()
    };
    // About 32 MiB: segments of 256 KiB, 1, 4 and 16 MiB, then into one of 64 MiB.
    let segments = tail_while_writing(config, 8_000, 8_000);
    assert_eq!(segments, [MIB / 4, MIB, 4 * MIB, 16 * MIB, 64 * MIB]);
}

/// Writes `n` records (8 to 8 + `spread` bytes) while three readers tail the partition and
/// check every record in order; returns the sizes of the segment files.
fn tail_while_writing(config: JournalConfig, n: u64, spread: u64) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), config).unwrap();
    let part = journal.partition("clicks-0").unwrap();
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let mut r = part.reader().unwrap();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while seen < n {
                    match r.next().unwrap() {
                        Some(rec) => {
                            let k = u64::from_le_bytes(rec.payload[..8].try_into().unwrap());
                            assert_eq!(k, seen, "reader {i} out of order");
                            assert!(rec.payload[8..].iter().all(|b| *b == k as u8));
                            seen += 1;
                        }
                        None => assert!(r.wait(Duration::from_secs(10)), "reader {i} starved"),
                    }
                }
                assert!(r.next().unwrap().is_none());
            })
        })
        .collect();
    let mut w = part.writer().unwrap();
    for k in 0..n {
        let mut payload = vec![k as u8; 8 + (k % spread) as usize];
        payload[..8].copy_from_slice(&k.to_le_bytes());
        w.append(TEST_KIND, 1, None, &payload).unwrap();
        if k % (n / 10) == 0 {
            std::thread::sleep(Duration::from_millis(2)); // let readers catch up and sleep
        }
    }
    for r in readers {
        r.join().unwrap();
    }
    drop(w);
    journal.close().unwrap();
    segment_files(dir.path())
        .iter()
        .map(|(_, path)| std::fs::metadata(path).unwrap().len())
        .collect()
}

/// A tiny executor for the async waits: parks the thread until woken.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unparker(std::thread::Thread);
    impl std::task::Wake for Unparker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unparker(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn async_tail_wakes_on_append_and_durable_wait_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), small_config()).unwrap();
    let part = journal.partition("conversions").unwrap();
    let mut r = part.reader().unwrap();
    let wait = r.wait_async();
    let p2 = part.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut w = p2.writer().unwrap();
        let a = w.append(TEST_KIND, 1, None, b"money").unwrap();
        block_on(p2.wait_durable(a.end)).unwrap();
        assert!(p2.durable() >= a.end);
        a
    });
    block_on(wait);
    let rec = r.next().unwrap().expect("woken with a record");
    assert_eq!(rec.payload, b"money");
    let a = t.join().unwrap();
    part.wait_durable_blocking(a.end, Duration::from_secs(5))
        .unwrap();
    journal.close().unwrap();
    // After close, a wait for something never written fails instead of hanging.
    assert!(matches!(
        block_on(part.wait_durable(a.end + 8)),
        Err(Error::Closed)
    ));
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), small_config()).unwrap();
    let part = journal.partition("p").unwrap();
    let mut w = part.writer().unwrap();
    assert!(matches!(part.writer(), Err(Error::WriterTaken(_))));
    let end = part.end();
    let big = vec![1u8; 8 * 1024 + 1];
    let err = w.append(TEST_KIND, 1, None, &big).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    assert!(matches!(
        w.append(0, 1, None, b"x"),
        Err(Error::InvalidKind)
    ));
    assert_eq!(part.end(), end, "a refused record writes nothing");
    let readers: Vec<_> = (0..8).map(|_| part.reader().unwrap()).collect();
    assert!(matches!(part.reader(), Err(Error::TooManyReaders { .. })));
    drop(readers);
    part.reader().unwrap();
    for i in 1..8 {
        journal.partition(&format!("p{i}")).unwrap();
    }
    assert!(matches!(
        journal.partition("p9"),
        Err(Error::TooManyPartitions { .. })
    ));
    assert!(matches!(
        journal.partition("Bad/Name"),
        Err(Error::InvalidPartitionName(_))
    ));
    assert!(
        Journal::open(dir.path(), small_config()).is_err(),
        "second opener is locked out"
    );
    let bad = JournalConfig {
        segment_size: 12345,
        ..small_config()
    };
    assert!(matches!(
        Journal::open(dir.path(), bad),
        Err(Error::Config(_))
    ));
    drop(w);
    journal.close().unwrap();
}

#[test]
fn retention_keeps_what_any_consumer_needs_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), small_config()).unwrap();
    let part = journal.partition("p").unwrap();
    let mut w = part.writer().unwrap();
    let offsets: Vec<u64> = (0..2000)
        .map(|i| {
            w.append(TEST_KIND, 1, None, &[i as u8; 200])
                .unwrap()
                .offset
        })
        .collect();
    assert!(part.segment_count() > 4);
    assert_eq!(part.retain().unwrap(), 0, "no consumers: nothing removed");
    let fast = part.consumer("fast");
    let slow = part.consumer("slow");
    fast.commit(offsets[1900]);
    slow.commit(offsets[700]);
    let removed = part.retain().unwrap();
    assert!(removed >= 1);
    assert!(part.start() <= offsets[700] && part.start() > 0);
    drop(w);
    journal.close().unwrap();
    drop((journal, part));
    // The slow consumer's position was persisted: a restart keeps holding back retention.
    let journal = Journal::open(dir.path(), small_config()).unwrap();
    let part = journal.partition("p").unwrap();
    assert_eq!(part.consumer("slow").position(), offsets[700]);
    let mut r = part.reader_at(offsets[700]).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload, &[700u16 as u8; 200]);
    assert_eq!(part.retain().unwrap(), 0);
    part.remove_consumer("slow").unwrap();
    assert!(part.retain().unwrap() >= 1);
    assert!(matches!(
        part.reader_at(0),
        Err(Error::OffsetOutOfRange { .. })
    ));
    journal.close().unwrap();
}

#[test]
fn read_only_scan_reports_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), small_config()).unwrap();
    let part = journal.partition("p").unwrap();
    let mut w = part.writer().unwrap();
    for i in 0..1000u32 {
        w.append(TEST_KIND, 1, None, &i.to_le_bytes()).unwrap();
    }
    drop(w);
    journal.close().unwrap();
    drop((journal, part));
    let report = clicktrail_storage::scan(dir.path()).unwrap();
    assert_eq!(report.len(), 1);
    assert!(report[0].is_clean());
    assert_eq!(report[0].records(), 1000);
    let (_, path) = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[SEGMENT_HEADER_SIZE + 24 * 10 + 17] ^= 0x40; // inside the 11th frame
    std::fs::write(&path, &bytes).unwrap();
    let report = clicktrail_storage::scan(dir.path()).unwrap();
    assert!(!report[0].is_clean());
    assert!(!report[0].is_ready());
    // Damage, not a torn tail: the 11th record is lost, the 989 after it are intact.
    assert_eq!(report[0].segments[0].problem, None);
    let d = &report[0].damage;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].from, d[0].to, d[0].frames), (240, 264, 1), "{d:?}");
    assert_eq!(d[0].records_after, 989);
    assert_eq!(report[0].segments[0].records, 999);
    // Scanning changed nothing on disk.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn durable_only_readers_see_records_once_synced() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        flush_interval: Duration::from_millis(1000),
        background_sync_interval: Duration::from_secs(60),
        ..small_config()
    };
    let journal = Journal::open(dir.path(), config).unwrap();
    let part = journal.partition("p").unwrap();
    let mut w = part.writer().unwrap();
    w.append(TEST_KIND, 1, None, b"one").unwrap();
    let mut tail = part.reader().unwrap().durable_only();
    assert!(tail.next().unwrap().is_none(), "not durable yet");
    assert!(!tail.wait(Duration::from_millis(20)));
    let woken = std::thread::scope(|s| {
        let t = s.spawn(|| tail.wait(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(30));
        part.sync().unwrap();
        t.join().unwrap()
    });
    assert!(woken, "a sync wakes durable-only readers");
    assert_eq!(tail.next().unwrap().unwrap().payload, b"one");
    drop(w);
    journal.close().unwrap();
}

#[test]
fn lowering_record_size_max_keeps_larger_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), small_config()).unwrap();
    let mut w = journal.partition("p").unwrap().writer().unwrap();
    w.append(TEST_KIND, 1, None, &[7u8; 6000]).unwrap();
    w.append(TEST_KIND, 1, None, b"after").unwrap();
    drop(w);
    journal.close().unwrap();
    drop(journal);
    let smaller = JournalConfig {
        record_size_max: 2048,
        ..small_config()
    };
    let journal = Journal::open(dir.path(), smaller).unwrap();
    let part = journal.partition("p").unwrap();
    let mut r = part.reader().unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload.len(), 6000);
    assert_eq!(r.next().unwrap().unwrap().payload, b"after");
    let mut w = part.writer().unwrap();
    assert!(matches!(
        w.append(TEST_KIND, 1, None, &[0u8; 3000]),
        Err(Error::RecordTooLarge { .. })
    ));
    drop(w);
    journal.close().unwrap();
}

#[test]
fn background_syncs_stop_at_a_record_before_the_page_being_written_then_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        flush_interval: Duration::from_millis(1),
        background_sync_interval: Duration::from_millis(5),
        ..small_config()
    };
    let journal = Journal::open(dir.path(), config).unwrap();
    let part = journal.partition("p").unwrap();
    let mut w = part.writer().unwrap();
    let mut ends = vec![0u64];
    let page = 4096u64;
    let mut rng = fastrand::Rng::with_seed(11);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut saw_partial = false;
    // Appends keep the tail moving; every durable offset seen must be a record boundary,
    // and while the writer is busy it stays at or below the page being written.
    while std::time::Instant::now() < deadline && ends.len() < 3000 {
        let len = rng.usize(1..300);
        w.append(TEST_KIND, 1, None, &vec![3u8; len]).unwrap();
        ends.push(part.end());
        let durable = part.durable();
        assert!(
            ends.binary_search(&durable).is_ok(),
            "durable {durable} is not a record boundary"
        );
        if durable < part.end() && durable / page < part.end() / page {
            saw_partial = true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(part.durable() > 0, "background syncs ran");
    assert!(
        saw_partial,
        "some background sync stopped short of the tail"
    );
    // Idle: the next background syncs take the tail too.
    let end = part.end();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while part.durable() < end && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(part.durable(), end, "an idle tail becomes durable");
    let mut r = part.reader().unwrap().durable_only();
    let mut n = 0;
    while r.next().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, ends.len() - 1);
    drop(w);
    journal.close().unwrap();
}

#[test]
fn segments_start_small_and_grow_up_to_segment_size() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        segment_size: 32 * MIB,
        record_size_max: 64 * 1024,
        ..small_config()
    };
    assert_eq!(config.first_segment_size(), MIB / 4);
    let payload = vec![7u8; 60 * 1024];
    let written = {
        let j = Journal::open(dir.path(), config.clone()).unwrap();
        let p = j.partition("p").unwrap();
        let mut w = p.writer().unwrap();
        // 0.25 + 1 + 4 + 16 + 32 MiB fill five segments; the sixth is as large as the fifth.
        let n = (54 * MIB / payload.len() as u64) as usize;
        for _ in 0..n {
            w.append(TEST_KIND, 1, None, &payload).unwrap();
        }
        drop(w);
        j.close().unwrap();
        n
    };
    let sizes: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|(_, path)| std::fs::metadata(path).unwrap().len())
        .collect();
    assert_eq!(sizes, [MIB / 4, MIB, 4 * MIB, 16 * MIB, 32 * MIB, 32 * MIB]);
    {
        // A busy partition starts at 4 MiB; asking again returns it as it is.
        let j = Journal::open(dir.path(), config.clone()).unwrap();
        let hot = j.busy_partition("hot").unwrap();
        assert_eq!(hot.segment_count(), 1);
        assert_eq!(j.partition("p").unwrap().segment_count(), 6);
        assert_eq!(j.busy_partition("p").unwrap().segment_count(), 6);
        let mut w = hot.writer().unwrap();
        w.append(TEST_KIND, 1, None, &payload).unwrap();
        drop(w);
        j.close().unwrap();
        let hot = segment_files_of(dir.path(), |n| n.ends_with("-hot"));
        assert_eq!(hot.len(), 1);
        assert_eq!(std::fs::metadata(&hot[0].1).unwrap().len(), 4 * MIB);
    }
    // Reopened, every record reads back across segments of three sizes.
    let j = Journal::open(dir.path(), config).unwrap();
    let p = j.partition("p").unwrap();
    let all = read_all(&p);
    assert_eq!(all.len(), written);
    assert!(all.iter().all(|r| r.payload == payload));
    j.close().unwrap();

    // A quiet partition's empty first segment, made under a smaller record-size-max, makes
    // room when the limit is raised.
    let dir = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        segment_size: 64 * MIB,
        record_size_max: 64 * 1024,
        ..small_config()
    };
    let j = Journal::open(dir.path(), small).unwrap();
    assert_eq!(j.partition("quiet").unwrap().segment_count(), 1);
    j.close().unwrap();
    drop(j);
    let raised = JournalConfig {
        segment_size: 64 * MIB,
        record_size_max: 6 * MIB as usize,
        ..small_config()
    };
    let j = Journal::open(dir.path(), raised).unwrap();
    let p = j.partition("quiet").unwrap();
    let mut w = p.writer().unwrap();
    w.append(TEST_KIND, 1, None, &vec![3u8; 6 << 20]).unwrap();
    drop(w);
    assert_eq!(read_all(&p).len(), 1);
    j.close().unwrap();

    // The largest record fits in a new partition's first segment, however large it is.
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        segment_size: 64 * MIB,
        record_size_max: 6 * MIB as usize,
        ..small_config()
    };
    assert!(config.first_segment_size() > 6 * MIB);
    assert!(config.first_segment_size() < 7 * MIB);
    let j = Journal::open(dir.path(), config).unwrap();
    let p = j.partition("big").unwrap();
    let mut w = p.writer().unwrap();
    w.append(TEST_KIND, 1, None, &vec![1u8; 6 << 20]).unwrap();
    w.append(TEST_KIND, 1, None, &vec![2u8; 6 << 20]).unwrap();
    drop(w);
    assert_eq!(p.segment_count(), 2);
    j.close().unwrap();
}
