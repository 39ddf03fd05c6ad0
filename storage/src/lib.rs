//! clicktrail's storage: the memory-mapped event journal that is the bus between actors,
//! and the event schema written to it.
//!
//! * [`Journal`] — a directory of partitions, a group-commit flusher, retention.
//! * [`Partition`] — segmented, preallocated, memory-mapped files with exactly one
//!   [`Writer`] and any number (up to `readers-max`) of tailing [`Reader`]s.
//! * [`frame`] — the on-disk record frame (length, CRC32C, kind, version, source, payload).
//! * [`schema`] — event schema v1 (rkyv 0.8), read zero-copy in place.
//!
//! Durability: an append is in the page cache when it returns (it survives a process
//! crash); [`Partition::wait_durable`] resolves once a group-commit sync covers it (it
//! survives power loss). Recovery never destroys what may have been acknowledged: it clears
//! only a torn tail (bad bytes at the end of the last segment with nothing valid after
//! them); damage inside the durable range is copied aside, skipped by readers, reported by
//! [`Partition::damage`] and kept until an operator accepts it (see `recovery`).

pub mod config;
mod error;
pub mod fault;
pub mod frame;
mod journal;
pub mod money;
mod notify;
mod partition;
mod recovery;
pub mod schema;
pub mod segment;

pub use config::JournalConfig;
pub use error::{Error, Result};
pub use frame::Source;
pub use journal::{
    accept_damage, scan, scan_records, Journal, PartitionReport, DURABLE_WAIT_DEFAULT,
};
pub use partition::{
    Appended, Consumer, DataWait, DurableWait, Partition, Reader, Record, Writer,
    ALLOCATE_RETRY_MAX, ALLOCATE_RETRY_MIN,
};
pub use recovery::{Damage, DamagedRange, SegmentReport};
pub use schema::{Event, Kind, RecordExt};
