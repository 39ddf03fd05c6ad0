//! Fault injection on the journal's I/O layer, for tests of the failure paths.
//!
//! Faults are process-global switches checked only on cold paths (segment allocation and
//! sync), never per append. Production code never sets them.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

static ALLOCATE_ERRNO: AtomicI32 = AtomicI32::new(0);
static SYNC_ERRNO: AtomicI32 = AtomicI32::new(0);
/// Largest allocation that succeeds (a nearly full disk); `u64::MAX` when unset.
static ALLOCATE_SIZE_MAX: AtomicU64 = AtomicU64::new(u64::MAX);
/// Segment allocations tried, failed or not (for tests that bound retries).
static ALLOCATE_ATTEMPTS: AtomicU64 = AtomicU64::new(0);
/// Allocations that fail with `ENOSPC` after this many more succeed; `u64::MAX` when unset.
static ALLOCATE_OK_LEFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Makes every segment allocation fail with `errno` (e.g. `libc::ENOSPC`); 0 clears it.
pub fn set_allocate_errno(errno: i32) {
    ALLOCATE_ERRNO.store(errno, Ordering::SeqCst);
}

/// Makes every sync fail with `errno` (e.g. `libc::EIO`); 0 clears it.
pub fn set_sync_errno(errno: i32) {
    SYNC_ERRNO.store(errno, Ordering::SeqCst);
}

/// Makes allocations of more than `size` bytes fail with `ENOSPC` (a disk with a little
/// room left); `u64::MAX` clears it.
pub fn set_allocate_size_max(size: u64) {
    ALLOCATE_SIZE_MAX.store(size, Ordering::SeqCst);
}

/// Lets `n` more allocations succeed, then fails every later one with `ENOSPC` (a disk
/// that fills part way through a start); `u64::MAX` clears it.
pub fn set_allocate_ok_left(n: u64) {
    ALLOCATE_OK_LEFT.store(n, Ordering::SeqCst);
}

/// Segment allocations tried so far by this process, failed or not.
pub fn allocate_attempts() -> u64 {
    ALLOCATE_ATTEMPTS.load(Ordering::SeqCst)
}

/// Counts an allocation of `size` bytes and says whether a fault makes it fail.
pub(crate) fn allocate_error(size: u64) -> Option<std::io::Error> {
    ALLOCATE_ATTEMPTS.fetch_add(1, Ordering::Relaxed);
    let left = ALLOCATE_OK_LEFT.load(Ordering::Relaxed);
    if left != u64::MAX {
        if left == 0 {
            return Some(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        ALLOCATE_OK_LEFT.fetch_sub(1, Ordering::Relaxed);
    }
    if size > ALLOCATE_SIZE_MAX.load(Ordering::Relaxed) {
        return Some(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    match ALLOCATE_ERRNO.load(Ordering::Relaxed) {
        0 => None,
        e => Some(std::io::Error::from_raw_os_error(e)),
    }
}

pub(crate) fn sync_error() -> Option<std::io::Error> {
    match SYNC_ERRNO.load(Ordering::Relaxed) {
        0 => None,
        e => Some(std::io::Error::from_raw_os_error(e)),
    }
}
