//! Journal throughput: single-writer appends of 128-byte events into the page cache, and
//! tailing replay with CRC checks, each beside a baseline measured in the same run
//! (a plain memcpy into a Vec for appends, a CRC32C pass over the same bytes for replay),
//! because this machine is noisy and only ratios travel.
//!
//! `cargo bench --bench journal`; figures are per record (`Throughput::Elements`).

use clicktrail_storage::schema::{samples, Click};
use clicktrail_storage::{Consumer, Journal, JournalConfig, RecordExt};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;

const PAYLOAD_SIZE: usize = 128;
const BATCH: u64 = 100_000;
const KIND: u16 = 0x7000;

fn config() -> JournalConfig {
    JournalConfig {
        // Appends into the page cache are measured, not the disk: a slow flusher and
        // retention after every batch (segments every reader passed are unlinked before
        // writeback) keep dirty-page throttling out of the figure.
        flush_interval: Duration::from_secs(1),
        background_sync_interval: Duration::from_secs(1),
        ..Default::default()
    }
}

fn payload(i: u64) -> [u8; PAYLOAD_SIZE] {
    let mut p = [0u8; PAYLOAD_SIZE];
    let mut rng = fastrand::Rng::with_seed(i);
    rng.fill(&mut p);
    p
}

fn retain_passed(part: &clicktrail_storage::Partition, consumer: &Consumer, end: u64) {
    consumer.commit(end);
    part.retain().unwrap();
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_128B");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(20);
    let data = payload(7);
    g.bench_function("baseline_memcpy_vec", |b| {
        b.iter_batched(
            || Vec::<u8>::with_capacity(BATCH as usize * (PAYLOAD_SIZE + 16)),
            |mut v| {
                for i in 0..BATCH {
                    v.extend_from_slice(&(i as u32).to_le_bytes());
                    v.extend_from_slice(&[0u8; 12]);
                    v.extend_from_slice(black_box(&data));
                }
                v
            },
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), config()).unwrap();
    // One long-lived writer on a busy (full-segment) partition, as the server's ingest
    // shards; segment rolls are part of the cost.
    let part = journal.busy_partition("bench-raw").unwrap();
    let mut w = part.writer().unwrap();
    let consumer = part.consumer("bench");
    g.bench_function("journal_append", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                w.append(KIND, 1, None, black_box(&data)).unwrap();
            }
            retain_passed(&part, &consumer, w.end());
        })
    });
    let part = journal.busy_partition("bench-click").unwrap();
    let mut w = part.writer().unwrap();
    let consumer = part.consumer("bench");
    let click = samples::click();
    g.bench_function("journal_append_event_click", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                w.append_event(None, black_box(&click)).unwrap();
            }
            retain_passed(&part, &consumer, w.end());
        })
    });
    g.finish();
    journal.close().unwrap();
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_128B");
    const N: u64 = 1_000_000;
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), config()).unwrap();
    let part = journal.partition("replay").unwrap();
    let mut w = part.writer().unwrap();
    let mut raw = Vec::with_capacity(N as usize * (PAYLOAD_SIZE + 16));
    for i in 0..N {
        let p = payload(i);
        w.append(KIND, 1, None, &p).unwrap();
        raw.extend_from_slice(&[0u8; 16]);
        raw.extend_from_slice(&p);
    }
    g.bench_function("baseline_crc32c_loop", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for rec in raw.chunks_exact(PAYLOAD_SIZE + 16) {
                acc ^= crc32c::crc32c(black_box(rec));
            }
            acc
        })
    });
    g.bench_function("journal_tail_read", |b| {
        b.iter(|| {
            let mut r = part.reader().unwrap();
            let mut bytes = 0usize;
            while let Some(rec) = r.next().unwrap() {
                bytes += rec.payload.len();
            }
            assert_eq!(bytes, N as usize * PAYLOAD_SIZE);
            bytes
        })
    });
    drop(w);
    // Typed zero-copy replay of archived clicks.
    let clicks = journal.partition("replay-clicks").unwrap();
    let mut w = clicks.writer().unwrap();
    let click = samples::click();
    for _ in 0..N {
        w.append_event(None, &click).unwrap();
    }
    g.bench_function("journal_tail_read_click_zero_copy", |b| {
        b.iter(|| {
            let mut r = clicks.reader().unwrap();
            let mut n = 0usize;
            while let Some(rec) = r.next().unwrap() {
                n += rec.event::<Click>().unwrap().link_code.len();
            }
            n
        })
    });
    g.finish();
    drop(w);
    journal.close().unwrap();
}

criterion_group!(benches, appends, replay);
criterion_main!(benches);
