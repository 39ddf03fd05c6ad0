//! Fault injection on the journal's I/O layer, for tests of the failure paths.
//!
//! Faults are process-global switches checked only on cold paths (segment allocation and
//! sync), never per append. Production code never sets them.

use std::sync::atomic::{AtomicI32, Ordering};

static ALLOCATE_ERRNO: AtomicI32 = AtomicI32::new(0);
static SYNC_ERRNO: AtomicI32 = AtomicI32::new(0);

/// Makes every segment allocation fail with `errno` (e.g. `libc::ENOSPC`); 0 clears it.
pub fn set_allocate_errno(errno: i32) {
    ALLOCATE_ERRNO.store(errno, Ordering::SeqCst);
}

/// Makes every sync fail with `errno` (e.g. `libc::EIO`); 0 clears it.
pub fn set_sync_errno(errno: i32) {
    SYNC_ERRNO.store(errno, Ordering::SeqCst);
}

pub(crate) fn allocate_error() -> Option<std::io::Error> {
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
