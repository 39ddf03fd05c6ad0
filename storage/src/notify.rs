//! Wake-ups for tailing readers and durability waiters, without a syscall per append.
//!
//! The writer publishes a new end offset and then calls [`Notifier::notify`], which costs one
//! atomic load when nobody waits. A waiter announces itself (`waiters += 1`) before it checks
//! the condition a last time under the lock; the writer stores the end before it loads
//! `waiters`. Both use `SeqCst`, so either the waiter sees the new end or the writer sees the
//! waiter and wakes it: no lost wake-ups, no busy spin at idle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Most wakers one notifier keeps between two notifications (16 bytes each). Above every
/// bound on concurrent waiters we set (in-flight appends per shard are at most 1,000,000
/// by configuration, but realistically thousands); past it the oldest is woken early and
/// registers again.
pub const WAKERS_MAX: usize = 1 << 16;

#[derive(Debug, Default)]
pub(crate) struct Notifier {
    waiters: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
    cond: Condvar,
}

impl Notifier {
    /// Wakes every waiter, if there is any. Call after publishing the new state.
    #[inline]
    pub fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap());
        self.cond.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Blocks until `ready()` or the timeout; returns `ready()` at the end.
    pub fn wait_until(&self, ready: impl Fn() -> bool, timeout: Duration) -> bool {
        if ready() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut guard = self.wakers.lock().unwrap();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if ready() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = self.cond.wait_timeout(guard, deadline - now).unwrap().0;
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// One poll of an async wait: `Ready` once `ready()` holds, else registers the task's
    /// waker. `counted` is the caller's flag of whether it has added itself to the waiter
    /// count; the caller calls [`Notifier::unregister`] when it drops a counted wait.
    pub fn poll_wait(
        &self,
        cx: &mut Context<'_>,
        counted: &mut bool,
        ready: impl Fn() -> bool,
    ) -> Poll<()> {
        if ready() {
            return Poll::Ready(());
        }
        let mut wakers = self.wakers.lock().unwrap();
        if !*counted {
            self.waiters.fetch_add(1, Ordering::SeqCst);
            *counted = true;
        }
        if ready() {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            if wakers.len() >= WAKERS_MAX {
                // Bounded: wake the oldest early rather than grow; it re-registers.
                wakers.remove(0).wake();
            }
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// True while someone waits.
    pub fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Undoes the count taken by [`Notifier::poll_wait`].
    pub fn unregister(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}
