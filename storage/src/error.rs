//! Errors of the journal. Each variant says when it happens.

use std::path::PathBuf;

/// Everything that can go wrong in the journal that is not a programmer error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed (open, allocate, map, sync, rename, remove). Disk full arrives
    /// here as `ENOSPC` when a new segment is preallocated, never as a fault on a mapped
    /// page, because every segment is fully allocated before it is mapped.
    #[error("journal I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record is larger than `record-size-max`.
    #[error("record of {size} bytes is over record-size-max ({max} bytes)")]
    RecordTooLarge { size: usize, max: usize },
    /// Record kind 0 is reserved for free space.
    #[error("record kind 0 is reserved")]
    InvalidKind,
    /// Opening one more partition would pass `partitions-max`.
    #[error("partitions-max ({max}) reached; cannot open partition {name:?}")]
    TooManyPartitions { name: String, max: usize },
    /// Opening one more reader on a partition would pass `readers-max`.
    #[error("readers-max ({max}) reached on partition {partition:?}")]
    TooManyReaders { partition: String, max: usize },
    /// The partition already has its one writer.
    #[error("partition {0:?} already has a writer")]
    WriterTaken(String),
    /// A partition name that cannot be a directory name.
    #[error("invalid partition name {0:?}: use 1-64 of [a-z0-9_-]")]
    InvalidPartitionName(String),
    /// A segment file whose header is not ours or whose format version we do not read.
    #[error("segment {path} is not a clicktrail journal segment of a supported format: {why}")]
    BadSegment { path: PathBuf, why: String },
    /// Two partition directories claim the same id or the same name (`what` says which),
    /// e.g. left by a failed first start of an older build. Refused rather than used: records
    /// name their input partition by id.
    #[error(
        "partition directories {dirs:?} share {what}; move aside the one that should not \
         be there (with the server stopped) and start again"
    )]
    DuplicatePartition { what: String, dirs: Vec<PathBuf> },
    /// A partition directory without any segment file: a creation that failed part way
    /// (older builds created the directory before allocating its first segment).
    #[error(
        "partition directory {dir} holds no segment file (a creation that failed part way); \
         remove it with the server stopped if it holds nothing you need"
    )]
    HalfMadePartition { dir: PathBuf },
    /// `accept-damage` named a partition that is not in the journal.
    #[error("no partition named {0:?} in the journal")]
    NoSuchPartition(String),
    /// The journal configuration breaks one of its bounds.
    #[error("invalid journal configuration: {0}")]
    Config(String),
    /// A read at an offset that is not (or no longer) in the partition.
    #[error("offset {offset} is outside partition {partition:?} (start {start}, end {end})")]
    OffsetOutOfRange {
        partition: String,
        offset: u64,
        start: u64,
        end: u64,
    },
    /// The journal was closed while waiting.
    #[error("journal closed")]
    Closed,
    /// A wait for durability passed its deadline.
    #[error("timed out waiting for offset {0} to become durable")]
    DurableTimeout(u64),
    /// An archived payload failed bytecheck validation (tools and recovery only).
    #[error("record at offset {offset} failed validation: {why}")]
    InvalidPayload { offset: u64, why: String },
}

/// Result type of the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the error means the disk is full (the edge answers 503 on it).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}
