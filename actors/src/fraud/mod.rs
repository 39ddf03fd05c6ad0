//! The fraud engine: every click and conversion scored in real time, off the click path;
//! suspicious conversions held from payout and queued for a person, with the evidence in
//! plain words.
//!
//! Shape (the same as every concern):
//! - `config.rs`: every rule by name with its defaults ([`config::RULES`]); the `[fraud]`
//!   section and a campaign's `fraud-rules` override them (switch off, score, limit,
//!   window, may-reject); the score thresholds; IP range lists.
//! - Pure logic: `signals.rs` (what a click says: address and /24, browser family, client
//!   hints, referrer host), `rules/` (the rules a click or a conversion decides, and how
//!   scores combine), `windows.rs` (sliding windows in event time that flag a whole burst),
//!   `state.rs` (the bounded memory between records), `graph.rs` (affiliates joined by
//!   shared infrastructure), `anomaly/` (the isolation forest), `model.rs` (training it
//!   from the journal), `email.rs` (the buyer's e-mail as a keyed hash).
//! - `processor.rs`: the journal shell ([`processor::FraudScorer`]), reading the ingest
//!   partitions, writing `fraud-verdicts`.
//! - `view.rs`: the read model the API queries ([`view::SharedFraud`]).
//!
//! Scores: each hit has a score in ppm; they combine as independent evidence,
//! `1 − Π(1 − score)`. From `review-ppm` (500,000) a subject goes to review; it is rejected
//! only by a rule configured `may-reject = true` scoring `reject-ppm` (900,000) alone.
//! Nothing is rejected for good otherwise: a person decides (`POST
//! /api/v1/fraud/review/{subject}/allow|reject`), which is a journal event
//! ([`clicktrail_storage::schema::FraudDecision`]) the scorer turns into a verdict that the
//! ledger honours (it holds a conversion on review, releases it on allow, reverses it on
//! reject).
//!
//! What gets a verdict: every conversion (allow included), and clicks from review up. A
//! conversion inherits its click's hits (and a flagged visitor's or a spiking affiliate's)
//! under the same rule names, so the conversion, which is what gets paid, carries the
//! reason. Later evidence makes earlier verdicts stricter, never milder: a flood's first
//! clicks once the flood is seen, an affiliate's late conversions once its tail is flat.
//!
//! Limits: every map is bounded (see [`config::FraudConfig`]); what falls out is counted
//! in the gauges. Verdicts of subjects whose click was forgotten are judged without it.

pub mod anomaly;
pub mod config;
pub mod email;
pub mod graph;
pub mod model;
pub mod processor;
pub mod rules;
pub mod signals;
pub mod state;
pub mod view;
pub mod windows;

pub use config::FraudConfig;
pub use processor::FraudScorer;
pub use view::SharedFraud;
