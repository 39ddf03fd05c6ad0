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
