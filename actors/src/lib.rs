//! clicktrail's actors: one concern each, supervised, talking only through the journal.
//!
//! | actor | reads | writes |
//! |---|---|---|
//! | [`ingest`] shard (one per partition) | the HTTP edge's hand-off | `ingest-<n>` |
//! | [`fraud`] scorer | `ingest-*` | `fraud-verdicts` |
//! | [`attribution`] aggregator | `ingest-*` | `attributions` |
//! | [`ledger`] (commissions) | `attributions` | `ledger` |
//! | [`payout`] scheduler | `ledger` | `payouts` |
//! | [`postback`] dispatcher (own thread, HTTP) | `ingest-*` (durable) | `postback-attempts` |
//! | [`stats`] live counters | `ingest-*` | nothing (in-memory, rebuilt on start) |
//! | [`clicks`] recent-click index | `ingest-*` | nothing (in-memory, rebuilt on start) |
//!
//! The [`catalog`] (affiliates, merchants, campaigns, links, keys) is derived from the
//! `entities` partition, whose one writer is the [`catalog::EntityStore`].
//!
//! An input an actor cannot process (it panics) becomes a [`dead_letter`] and the actor
//! goes on with the next one.
//!
//! Each concern keeps its business logic in a plain [`worker::Processor`] tested without
//! actix; [`supervisor::Worker`] is the thin shell that tails, writes and resumes.

pub mod attribution;
pub mod catalog;
pub mod clicks;
pub mod dead_letter;
pub mod fraud;
pub mod health;
pub mod ingest;
pub mod ledger;
pub mod payout;
pub mod postback;
pub mod stats;
pub mod supervisor;
pub mod system;
pub mod worker;

pub use health::{ActorState, Health};
pub use supervisor::{Shutdown, Supervisor, SupervisorConfig};
pub use worker::{Output, Processor, WorkerCore};
