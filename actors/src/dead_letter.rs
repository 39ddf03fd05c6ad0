//! Dead letters: inputs an actor could not process, kept so that one poison record never
//! stops an actor for good.
//!
//! When a [`Processor`](crate::worker::Processor) panics on an input (an overflow, a
//! broken invariant, a bug that one record triggers), the worker rebuilds its state from
//! the journal and tries the input once more (the panic may have come from state a
//! previous panic left half-updated). When it panics on the same input again, the worker:
//!
//! 1. writes a [`DeadLetter`] record (state `Open`) to **its own output partition**, with
//!    the input as its source. That is the same write that records any other output, so
//!    the skip is exactly-once with the actor's position: after a restart the actor
//!    resumes after the dead letter as after any other processed input, and nothing else
//!    (no second partition, no checkpoint) can disagree with it;
//! 2. throws away its in-memory state (the panic may have left it half-updated) and
//!    rebuilds it from its output, as on any restart, without counting a restart against
//!    the supervisor's give-up limit;
//! 3. goes on with the next input.
//!
//! The open dead letters of every actor are gathered here (rebuilt from the journal when
//! each actor opens), shown by `/readyz` (as detail: they do not fail readiness, traffic is
//! still served), counted in `/metrics`, and listed and retried by the admin API. A retry
//! processes the same input again (after an upgrade or a configuration change fixed its
//! cause): on success its outputs are written with the input as source, followed by a
//! `Resolved` dead letter; on another failure an `Open` one with the next attempt number.
//!
//! A processor's *errors* (as opposed to panics) keep their meaning: the actor refuses to
//! go on (the ledger does so when its replay disagrees with its journal) and the
//! supervisor restarts it and gives up loudly.
//!
//! Limits: at most [`RETRIES_QUEUED_MAX`] retry requests wait per actor. A retry is not
//! atomic: when the process dies (or the journal fails) between a retry's outputs and its
//! `Resolved` record, the letter stays open and retrying it again writes those outputs
//! again. A retry of an input that retention removed, or that journal damage took, is
//! logged and left open. A panic in a processor's timer `tick` has no input to skip: it
//! restarts the actor as before.

use clicktrail_storage::schema::{DeadLetter, DeadLetterState};
use clicktrail_storage::{Kind, Record, RecordExt};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

/// Most retry requests waiting per actor; more answer "busy".
pub const RETRIES_QUEUED_MAX: usize = 1024;

/// One open dead letter, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenDeadLetter {
    pub actor: String,
    pub input_partition: String,
    pub input_offset: u64,
    /// The input's record kind (`conversion`, `attribution`, ...).
    pub input_kind: String,
    /// Failures so far (1 for one that was never retried).
    pub attempts: u32,
    pub reason: String,
    /// When it last failed (UTC microseconds).
    pub failed_at_us: i64,
}

/// Why a retry request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// No open dead letter has that actor, partition and offset.
    #[error("no open dead letter of {actor} at {partition}@{offset}")]
    NotFound {
        actor: String,
        partition: String,
        offset: u64,
    },
    /// The actor already has [`RETRIES_QUEUED_MAX`] retries waiting.
    #[error("{0} already has {RETRIES_QUEUED_MAX} retries waiting")]
    Busy(String),
}

type Key = (String, String, u64);

#[derive(Debug, Default)]
struct Book {
    open: BTreeMap<Key, OpenDeadLetter>,
    /// Failures ever recorded per actor (from its journal, then live).
    failures_total: BTreeMap<String, u64>,
    /// Retries ever resolved per actor.
    resolved_total: BTreeMap<String, u64>,
    /// Requested retries per actor: (partition, offset).
    retries: BTreeMap<String, BTreeSet<(String, u64)>>,
    /// The input each actor last panicked on (kept across its rebuilds).
    suspects: BTreeMap<String, (String, u64)>,
}

/// The open dead letters of every actor. Cheap to clone; every clone sees the same.
#[derive(Debug, Clone, Default)]
pub struct DeadLetters {
    book: Arc<Mutex<Book>>,
}

fn key(d: &DeadLetter) -> Key {
    (
        d.processor.clone(),
        d.input_partition.clone(),
        d.input_offset,
    )
}

fn kind_name(kind: u16) -> String {
    Kind::from_u16(kind).map_or_else(|| format!("kind-{kind}"), |k| k.name().to_string())
}

impl DeadLetters {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every open dead letter, by actor, partition and offset.
    pub fn list(&self) -> Vec<OpenDeadLetter> {
        self.book().open.values().cloned().collect()
    }

    /// Open dead letters per actor (actors with none are absent).
    pub fn open_by_actor(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (actor, _, _) in self.book().open.keys() {
            *m.entry(actor.clone()).or_default() += 1;
        }
        m
    }

    /// (failures, resolved retries) ever recorded per actor.
    pub fn totals(&self) -> BTreeMap<String, (u64, u64)> {
        let b = self.book();
        let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (a, n) in &b.failures_total {
            m.entry(a.clone()).or_default().0 = *n;
        }
        for (a, n) in &b.resolved_total {
            m.entry(a.clone()).or_default().1 = *n;
        }
        m
    }

    /// Asks `actor` to process the input of an open dead letter again. The actor picks it
    /// up on its next step (within about a second).
    pub fn request_retry(
        &self,
        actor: &str,
        partition: &str,
        offset: u64,
    ) -> Result<(), RetryError> {
        let mut b = self.book();
        let k = (actor.to_string(), partition.to_string(), offset);
        if !b.open.contains_key(&k) {
            return Err(RetryError::NotFound {
                actor: k.0,
                partition: k.1,
                offset,
            });
        }
        let queue = b.retries.entry(k.0.clone()).or_default();
        if queue.len() >= RETRIES_QUEUED_MAX {
            return Err(RetryError::Busy(k.0));
        }
        queue.insert((k.1, offset));
        Ok(())
    }

    /// Notes that `actor` panicked on an input. Answers `true` when it already had on that
    /// same input just before (its state was rebuilt since): the input is poison. Answers
    /// `false` the first time: rebuild and try once more.
    pub(crate) fn suspect(&self, actor: &str, partition: &str, offset: u64) -> bool {
        let mut b = self.book();
        let input = (partition.to_string(), offset);
        if b.suspects.get(actor) == Some(&input) {
            b.suspects.remove(actor);
            return true;
        }
        b.suspects.insert(actor.to_string(), input);
        false
    }

    /// The retries requested for `actor`, oldest input first; they are taken.
    pub(crate) fn take_retries(&self, actor: &str) -> Vec<(String, u64)> {
        self.book()
            .retries
            .remove(actor)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether `actor` has an open dead letter for that input.
    pub(crate) fn is_open(&self, actor: &str, partition: &str, offset: u64) -> bool {
        self.book()
            .open
            .contains_key(&(actor.to_string(), partition.to_string(), offset))
    }

    /// The attempts so far of an open dead letter (0 when there is none).
    pub(crate) fn attempts(&self, actor: &str, partition: &str, offset: u64) -> u32 {
        self.book()
            .open
            .get(&(actor.to_string(), partition.to_string(), offset))
            .map_or(0, |d| d.attempts)
    }

    /// Forgets what is known of `actor` (it is about to replay its output).
    pub(crate) fn reset(&self, actor: &str) {
        let mut b = self.book();
        b.open.retain(|k, _| k.0 != actor);
        b.failures_total.remove(actor);
        b.resolved_total.remove(actor);
    }

    /// Applies a dead-letter record of the actor's output, read back or just written.
    pub(crate) fn apply(&self, d: &DeadLetter) {
        let mut b = self.book();
        match d.state {
            DeadLetterState::Open => {
                *b.failures_total.entry(d.processor.clone()).or_default() += 1;
                b.open.insert(
                    key(d),
                    OpenDeadLetter {
                        actor: d.processor.clone(),
                        input_partition: d.input_partition.clone(),
                        input_offset: d.input_offset,
                        input_kind: kind_name(d.input_kind),
                        attempts: d.attempt + 1,
                        reason: d.reason.clone(),
                        failed_at_us: d.at_us,
                    },
                );
            }
            DeadLetterState::Resolved => {
                *b.resolved_total.entry(d.processor.clone()).or_default() += 1;
                b.open.remove(&key(d));
            }
        }
    }

    /// Applies `record` when it is a dead letter: `Some` with its state (`None` too for a
    /// dead-letter version this build does not read), or `Err(())` when it is no dead
    /// letter at all.
    pub(crate) fn apply_record(&self, record: &Record<'_>) -> Result<Option<DeadLetterState>, ()> {
        match record.to_owned_event::<DeadLetter>() {
            Some(d) => {
                self.apply(&d);
                Ok(Some(d.state))
            }
            None if record.kind == Kind::DeadLetter as u16 => Ok(None),
            None => Err(()),
        }
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: u64, attempt: u32, state: DeadLetterState) -> DeadLetter {
        DeadLetter {
            at_us: 1,
            processor: "ledger".into(),
            input_partition: "attributions".into(),
            input_offset: offset,
            input_kind: Kind::Attribution as u16,
            input_version: 2,
            attempt,
            state,
            reason: "boom".into(),
        }
    }

    #[test]
    fn open_retry_and_resolve() {
        let d = DeadLetters::default();
        d.apply(&letter(8, 0, DeadLetterState::Open));
        d.apply(&letter(16, 0, DeadLetterState::Open));
        assert_eq!(d.open_by_actor()["ledger"], 2);
        assert!(matches!(
            d.request_retry("ledger", "attributions", 24),
            Err(RetryError::NotFound { .. })
        ));
        d.request_retry("ledger", "attributions", 16).unwrap();
        d.request_retry("ledger", "attributions", 8).unwrap();
        assert_eq!(
            d.take_retries("ledger"),
            vec![("attributions".into(), 8), ("attributions".into(), 16)]
        );
        assert!(d.take_retries("ledger").is_empty());
        d.apply(&letter(16, 1, DeadLetterState::Open));
        assert_eq!(d.attempts("ledger", "attributions", 16), 2);
        d.apply(&letter(8, 1, DeadLetterState::Resolved));
        assert!(!d.is_open("ledger", "attributions", 8));
        assert_eq!(d.list().len(), 1);
        assert_eq!(d.totals()["ledger"], (3, 1));
        d.reset("ledger");
        assert!(d.list().is_empty());
    }
}
