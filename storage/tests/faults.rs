//! Fault injection on the journal's I/O layer: a full disk and failing syncs surface as
//! errors (never panics), refuse nothing that was acknowledged, and heal when the fault
//! goes. One test in its own binary because the fault switches are process-global.

use clicktrail_storage::{fault, Error, Journal, JournalConfig};
use std::time::Duration;

#[test]
fn disk_full_and_sync_failures_are_errors_and_heal() {
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
    std::thread::sleep(clicktrail_storage::ALLOCATE_RETRY_MAX);
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
