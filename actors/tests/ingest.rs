//! Ingest shards: a full queue refuses at once (the edge turns that into 503) instead of
//! growing, and every acknowledged append is in the journal, in order of acknowledgement
//! per shard.

use clicktrail_actors::ingest::AppendError;
use clicktrail_actors::system::{build, SystemConfig};
use clicktrail_actors::Health;
use clicktrail_storage::{Journal, JournalConfig};
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[actix_rt::test]
async fn a_full_queue_refuses_and_acknowledged_records_are_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let health = Health::default();
    let config = SystemConfig {
        ingest_shards: 1,
        ingest_queue_max: 1,
        ..Default::default()
    };
    let store =
        std::sync::Arc::new(clicktrail_actors::catalog::EntityStore::open(&journal).unwrap());
    let (sup, handles) = build(journal.clone(), health.clone(), store, &config);
    let _sup = actix::Actor::start(sup);
    let start = Instant::now();
    while !health.ready() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "actors did not start"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // Many appends at once on this thread; half wait for a sync while holding their slot,
    // so a bound of one is soon reached.
    let tasks: Vec<_> = (0..2000u32)
        .map(|i| {
            let ingest = handles.ingest.clone();
            actix_rt::spawn(async move {
                (
                    i,
                    ingest
                        .append(0, 0x7000, 1, &i.to_le_bytes(), i % 2 == 0)
                        .await,
                )
            })
        })
        .collect();
    let mut acked = HashSet::new();
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(_)) => {
                acked.insert(i);
            }
            (_, Err(AppendError::Full)) => full += 1,
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert!(
        full > 0,
        "a queue of one must overflow under 2000 concurrent appends"
    );
    assert!(!acked.is_empty());
    let mut r = journal.partition("ingest-0").unwrap().reader().unwrap();
    let mut journaled = HashSet::new();
    while let Some(rec) = r.next().unwrap() {
        journaled.insert(u32::from_le_bytes(rec.payload[..4].try_into().unwrap()));
    }
    assert_eq!(
        journaled, acked,
        "exactly the acknowledged appends are in the journal"
    );
}

/// A batch is recorded in order, in one piece, durably; one larger than the queue bound
/// still goes through (it takes the whole bound), and a batch finding the bound taken is
/// refused whole, writing nothing.
#[actix_rt::test]
async fn a_batch_is_recorded_whole_in_order_or_refused_whole() {
    use clicktrail_actors::ingest::BatchRecord;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let health = Health::default();
    let config = SystemConfig {
        ingest_shards: 2,
        ingest_queue_max: 8,
        ..Default::default()
    };
    let store =
        std::sync::Arc::new(clicktrail_actors::catalog::EntityStore::open(&journal).unwrap());
    let (sup, handles) = build(journal.clone(), health.clone(), store, &config);
    let _sup = actix::Actor::start(sup);
    let start = Instant::now();
    while !health.ready() {
        assert!(start.elapsed() < Duration::from_secs(10));
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let payloads: Vec<[u8; 8]> = (0..20u64).map(u64::to_le_bytes).collect();
    let batch: Vec<BatchRecord<'_>> = payloads
        .iter()
        .map(|p| BatchRecord {
            kind: 0x7000,
            version: 1,
            payload: p,
        })
        .collect();
    let p = journal.partition("ingest-1").unwrap();
    let a = handles.ingest.append_batch(1, &batch, true).await.unwrap();
    assert!(p.durable() >= a.end, "acknowledged once durable");
    // Eight durable appends hold every slot while they wait for their sync: a batch then
    // finds none and writes nothing. (This task runs alone on its thread: between seeing
    // the eight written and the batch's refusal, no holder can give its slot back.)
    let end0 = p.end();
    let holders: Vec<_> = (0..8u64)
        .map(|i| {
            let ingest = handles.ingest.clone();
            actix_rt::spawn(async move {
                ingest
                    .append(1, 0x7000, 1, &(100 + i).to_le_bytes(), true)
                    .await
            })
        })
        .collect();
    let written_since = |from: u64| {
        let mut r = p.reader_at(from).unwrap();
        let mut n = 0;
        while r.next().unwrap().is_some() {
            n += 1;
        }
        n
    };
    while written_since(end0) < 8 {
        actix_rt::task::yield_now().await;
    }
    let end_before = p.end();
    let e = handles
        .ingest
        .append_batch(1, &batch[..2], false)
        .await
        .unwrap_err();
    assert_eq!((e.written, e.error), (0, AppendError::Full));
    assert_eq!(p.end(), end_before, "nothing written");
    for h in holders {
        h.await.unwrap().unwrap();
    }
    let mut r = p.reader().unwrap();
    let mut got = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        got.push(u64::from_le_bytes(rec.payload[..8].try_into().unwrap()));
    }
    assert_eq!(&got[..20], &(0..20).collect::<Vec<_>>()[..], "in order");
}
