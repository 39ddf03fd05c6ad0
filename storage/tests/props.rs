//! Property tests of frame decoding and segment scans: random bytes, and random
//! corruptions of valid segments, never make decoding, the read-only scan or recovery
//! panic, and every record any of them returns is one that was written, at its offset,
//! with a valid CRC. The scan behind `journal verify` and recovery agree on what is kept.
//!
//! Cases are bounded (256). Proptest prints the smallest failing input; the run's seed
//! comes from `PROPTEST_SEED` when set (printed either way) to replay a whole run.

use clicktrail_storage::frame::{self, Probe};
use clicktrail_storage::segment::SEGMENT_HEADER_SIZE;
use clicktrail_storage::{Journal, JournalConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::collections::BTreeMap;
use std::time::Duration;

fn proptest_config() -> Config {
    let seed = std::env::var("PROPTEST_SEED").map_or_else(
        |_| fastrand::u64(..),
        |s| s.parse().expect("PROPTEST_SEED must be a number"),
    );
    eprintln!("PROPTEST_SEED={seed}");
    Config {
        cases: 256,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

fn journal_config() -> JournalConfig {
    JournalConfig {
        segment_size: 64 * 1024,
        record_size_max: 1024,
        partitions_max: 4,
        readers_max: 4,
        flush_interval: Duration::from_millis(1),
        background_sync_interval: Duration::from_millis(1),
        rederived_partitions: Vec::new(),
    }
}

/// The frame bytes a record must have on disk.
fn frame_bytes(kind: u16, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; frame::frame_size(payload.len(), false)];
    frame::encode(&mut b, kind, version, None, payload);
    b
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn decoding_random_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        from in 0usize..700,
    ) {
        let _ = frame::probe(&bytes, 256);
        let _ = frame::probe_published(&bytes, 256);
        let _ = frame::count_damaged_frames(&bytes, 256);
        if let Some(at) = frame::resync(&bytes, from, 256) {
            prop_assert_eq!(at % frame::ALIGN, 0);
            prop_assert!(at >= from);
            prop_assert!(matches!(frame::probe(&bytes[at..], 256), Probe::Frame(_)));
        }
    }

    #[test]
    fn corrupted_segments_never_yield_a_record_that_was_not_written(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..400),
        flips in proptest::collection::vec((any::<u64>(), 1u8..=255), 0..6),
        cut in proptest::option::of(any::<u64>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut written = BTreeMap::new();
        {
            let journal = Journal::open(dir.path(), journal_config()).unwrap();
            let mut w = journal.partition("p").unwrap().writer().unwrap();
            for p in &payloads {
                let a = w.append(0x7000, 1, None, p).unwrap();
                written.insert(a.offset, p.clone());
            }
            drop(w);
            journal.close().unwrap();
        }
        let pdir = dir.path().join("journal/00001-p");
        let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&pdir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                let base = clicktrail_storage::segment::parse_file_name(p.file_name()?.to_str()?)?;
                Some((base, p))
            })
            .collect();
        files.sort();
        // Flip bytes anywhere in the written part of any segment (headers included), and
        // maybe cut one file short.
        for (at, xor) in &flips {
            let (_, path) = &files[(*at % files.len() as u64) as usize];
            let mut bytes = std::fs::read(path).unwrap();
            let pos = (*at / 7 % 8192) as usize % bytes.len();
            bytes[pos] ^= xor;
            std::fs::write(path, &bytes).unwrap();
        }
        if let Some(c) = cut {
            let (_, path) = &files[(c % files.len() as u64) as usize];
            let bytes = std::fs::read(path).unwrap();
            std::fs::write(path, &bytes[..(c / 3 % 8192) as usize % bytes.len()]).unwrap();
        }
        // As recovery reads them: a file cut short reads as if extended with zeros.
        let segment_size = journal_config().segment_size as usize;
        let disk: BTreeMap<u64, Vec<u8>> = files
            .iter()
            .map(|(b, p)| {
                let mut bytes = std::fs::read(p).unwrap();
                bytes.resize(bytes.len().max(segment_size), 0);
                (*b, bytes)
            })
            .collect();

        // The read-only scan: every record is one written there, and its frame on disk is
        // exactly the frame of that record (so its CRC is valid).
        let mut scanned = Vec::new();
        let scan = clicktrail_storage::scan_records(dir.path(), &mut |_, rec| {
            scanned.push((rec.offset, rec.payload.to_vec()));
            let (base, file) = disk.range(..=rec.offset).next_back().unwrap();
            let at = SEGMENT_HEADER_SIZE + (rec.offset - base) as usize;
            let frame = frame_bytes(rec.kind, rec.version, rec.payload);
            assert_eq!(&file[at..at + frame.len()], &frame[..], "frame at {}", rec.offset);
        });
        prop_assert!(scan.is_ok(), "{:?}", scan.err());
        for (offset, payload) in &scanned {
            prop_assert_eq!(written.get(offset), Some(payload), "offset {}", offset);
        }

        // Recovery keeps exactly what the scan found, and readers read it.
        let journal = Journal::open(dir.path(), journal_config()).unwrap();
        let part = journal.partition("p").unwrap();
        let mut r = part.reader().unwrap();
        let mut read = Vec::new();
        while let Some(rec) = r.next().unwrap() {
            read.push((rec.offset, rec.payload.to_vec()));
        }
        let start = part.start();
        scanned.retain(|(o, _)| *o >= start);
        let offsets = |v: &[(u64, Vec<u8>)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
        let scan = scan.unwrap();
        let summary: Vec<_> = scan[0]
            .segments
            .iter()
            .map(|s| (s.base, s.end, s.problem.clone(), s.damaged.clone(), s.short))
            .collect();
        prop_assert_eq!(
            offsets(&read),
            offsets(&scanned),
            "start {} scan {:?} {:?} recovery {:?}",
            start,
            summary,
            scan[0].bad_segments,
            journal.damage()
        );
        prop_assert!(read == scanned);
        journal.close().unwrap();
    }
}
