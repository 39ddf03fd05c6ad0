//! Fault injection on the journal's I/O layer: a full disk and failing syncs surface as
//! errors (never panics), refuse nothing that was acknowledged, and heal when the fault
//! goes; a first start that runs out of disk part way leaves a correct layout. The fault
//! switches are process-global, so the tests of this binary take turns (`FAULTS`).

use clicktrail_storage::{fault, Error, Journal, JournalConfig, ALLOCATE_RETRY_MAX};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Held by each test: the fault switches are process-global.
static FAULTS: Mutex<()> = Mutex::new(());

fn clear_faults() {
    fault::set_allocate_errno(0);
    fault::set_sync_errno(0);
    fault::set_allocate_size_max(u64::MAX);
    fault::set_allocate_ok_left(u64::MAX);
}

#[test]
fn disk_full_and_sync_failures_are_errors_and_heal() {
    let _turn = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    clear_faults();
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        segment_size: 64 * 1024,
        record_size_max: 4096,
        ..Default::default()
    };
    let journal = Journal::open(dir.path(), config.clone()).unwrap();
    let part = journal.partition("p").unwrap();
    let mut w = part.writer().unwrap();

    // Disk full: appends that need a new segment fail with ENOSPC; earlier ones stand.
    fault::set_allocate_errno(libc::ENOSPC);
    let mut acked = 0u32;
    let err = loop {
        match w.append(0x7000, 1, None, &acked.to_le_bytes()) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    assert!(err.is_disk_full(), "{err}");
    assert!(acked > 1000);
    let end = part.end();
    assert!(w
        .append(0x7000, 1, None, b"again")
        .unwrap_err()
        .is_disk_full());
    assert_eq!(part.end(), end, "a failed append publishes nothing");
    fault::set_allocate_errno(0);
    // Allocation is tried again only after a backoff (not on every refused append).
    std::thread::sleep(ALLOCATE_RETRY_MAX);
    w.append(0x7000, 1, None, &acked.to_le_bytes()).unwrap();
    acked += 1;

    // Failing syncs: durability waits time out, the partition reports it, then it heals.
    fault::set_sync_errno(libc::EIO);
    let a = w.append(0x7000, 1, None, &acked.to_le_bytes()).unwrap();
    acked += 1;
    let r = part.wait_durable_blocking(a.end, Duration::from_millis(100));
    assert!(matches!(r, Err(Error::DurableTimeout(_))), "{r:?}");
    assert!(part.sync_failing());
    fault::set_sync_errno(0);
    part.wait_durable_blocking(a.end, Duration::from_secs(5))
        .unwrap();
    assert!(!part.sync_failing());

    drop(w);
    journal.close().unwrap();
    drop((journal, part));
    let journal = Journal::open(dir.path(), config).unwrap();
    let mut r = journal.partition("p").unwrap().reader().unwrap();
    for i in 0..acked {
        assert_eq!(r.next().unwrap().unwrap().payload, &i.to_le_bytes());
    }
    assert!(r.next().unwrap().is_none());
}

/// While the disk is full, refused appends do not each try to allocate a segment; the
/// partition says writes are failing and counts them; when a little space comes back the
/// next roll takes a segment smaller than full size rather than waiting for a whole one.
#[test]
fn a_full_disk_backs_off_and_resumes_with_a_smaller_segment() {
    let _turn = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    clear_faults();
    const KIB: u64 = 1024;
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        segment_size: 1024 * KIB,
        record_size_max: 4096,
        ..Default::default()
    };
    assert_eq!(config.first_segment_size(), 256 * KIB);
    let journal = Journal::open(dir.path(), config.clone()).unwrap();
    let part = journal.partition("p").unwrap();
    let mut w = part.writer().unwrap();
    let mut acked = 0u32;
    // Fill the first segment and the second (1 MiB), then the disk is full.
    while part.segment_count() < 2 {
        w.append(0x7000, 1, None, &[acked as u8; 100]).unwrap();
        acked += 1;
    }
    fault::set_allocate_errno(libc::ENOSPC);
    let err = loop {
        match w.append(0x7000, 1, None, &[acked as u8; 100]) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    assert!(err.is_disk_full(), "{err}");
    assert!(part.write_failing() && journal.writes_failing());
    let attempts = fault::allocate_attempts();
    let started = Instant::now();
    for _ in 0..1000 {
        let e = w.append(0x7000, 1, None, &[0u8; 100]).unwrap_err();
        assert!(e.is_disk_full(), "{e}");
    }
    // At most one try of each size (1 MiB down to 64 KiB: 3) per backoff interval
    // (100 ms at least), whatever the speed of this machine: not one per append.
    let intervals = started.elapsed().as_millis() as u64 / 100 + 1;
    let tried = fault::allocate_attempts() - attempts;
    assert!(
        tried <= 3 * intervals,
        "{tried} allocations in {intervals} intervals"
    );
    assert!(part.write_failures() >= 1001, "{}", part.write_failures());
    assert_eq!(journal.write_failures(), part.write_failures());

    // A little room again: not enough for a full-size segment.
    fault::set_allocate_errno(0);
    fault::set_allocate_size_max(128 * KIB);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match w.append(0x7000, 1, None, &[acked as u8; 100]) {
            Ok(_) => break,
            Err(e) if e.is_disk_full() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("appends did not resume: {e}"),
        }
    }
    acked += 1;
    assert!(!part.write_failing() && !journal.writes_failing());
    assert_eq!(part.segment_count(), 3);
    clear_faults();
    drop(w);
    journal.close().unwrap();
    drop((journal, part));
    let sizes: Vec<u64> = std::fs::read_dir(dir.path().join("journal/00001-p"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert!(sizes.iter().any(|s| *s <= 128 * KIB), "{sizes:?}");
    let journal = Journal::open(dir.path(), config).unwrap();
    let mut r = journal.partition("p").unwrap().reader().unwrap();
    let mut n = 0u32;
    while let Some(rec) = r.next().unwrap() {
        assert_eq!(rec.payload, &[n as u8; 100]);
        n += 1;
    }
    assert_eq!(n, acked);
}

/// A first start on a disk that fills part way through creating partitions, then a start
/// with room: every partition exists once, with its own id, and works.
#[test]
fn a_first_start_on_a_tiny_disk_leaves_a_correct_layout() {
    let _turn = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    clear_faults();
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig::default();
    let names = ["ingest-0", "ingest-1", "ledger", "verdicts", "payouts"];
    {
        // Room for two segments only. The server creates the busy partitions first and
        // goes on when that fails (an actor tries again later), then the rest.
        fault::set_allocate_ok_left(2);
        let journal = Journal::open(dir.path(), config.clone()).unwrap();
        let mut made = Vec::new();
        for name in names.iter().chain(names.iter()) {
            let p = if name.starts_with("ingest") {
                journal.busy_partition(name)
            } else {
                journal.partition(name)
            };
            match p {
                Ok(p) => made.push((p.id(), p.name().to_string())),
                Err(e) => assert!(e.is_disk_full(), "{e}"),
            }
        }
        made.sort();
        made.dedup();
        assert_eq!(made.len(), 2, "{made:?}");
        journal.close().unwrap();
        clear_faults();
    }
    let listing = |root: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "LOCK")
            .collect();
        v.sort();
        v
    };
    let root = dir.path().join("journal");
    assert_eq!(listing(&root).len(), 2, "{:?}", listing(&root));
    for round in 0..2 {
        let journal = Journal::open(dir.path(), config.clone()).unwrap();
        for name in names {
            let p = journal.partition(name).unwrap();
            let mut w = p.writer().unwrap();
            w.append(0x7000, 1, None, name.as_bytes()).unwrap();
            drop(w);
            let mut r = p.reader().unwrap();
            for _ in 0..=round {
                assert_eq!(r.next().unwrap().unwrap().payload, name.as_bytes());
            }
        }
        let mut ids: Vec<u32> = journal.partitions().iter().map(|p| p.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), names.len(), "ids are unique");
        journal.close().unwrap();
    }
    let dirs = listing(&root);
    assert_eq!(dirs.len(), names.len(), "{dirs:?}");
    assert!(dirs.iter().all(|d| !d.starts_with('.')), "{dirs:?}");
    let report = clicktrail_storage::scan(dir.path()).unwrap();
    assert!(report.iter().all(|p| p.is_clean()));
}
