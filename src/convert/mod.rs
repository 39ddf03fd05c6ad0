//! Server-to-server conversions and reversals.
//!
//! * `POST /api/v1/conversions` (JSON, `Authorization: Bearer <merchant key>`) and the
//!   network-style `GET /postback?order_id=..&amount=..&currency=..&click_id=..&key=..`.
//! * `POST /api/v1/conversions/{id}/reverse` (JSON: `reason`, optional `amount`, `note`).
//! * `GET /p/conv?merchant_id=..&order_id=..` — the browser pixel, matched through the
//!   first-party click cookie (see [`conversion_pixel`]).
//!
//! A conversion is answered only once its record is durable (group-commit sync). The
//! merchant's order id is the idempotency key: the same order again returns the first
//! conversion and writes nothing; different data under the same order id is a 409. The
//! index behind that is derived from the journal on start.
//!
//! Matching: a verified click id (its link's campaign must belong to the merchant, and
//! the click must be inside the campaign's window) gives `match = "click_id"`; without one
//! the conversion is kept unattributed (`match = "none"`). Forged, malformed, foreign or
//! expired click ids are refused with a 422 naming the reason.

// Handlers return a ready `HttpResponse` as their error: it is the answer.
#![allow(clippy::result_large_err)]

pub use clicktrail_storage::money as amount;

use crate::config::IpTruncation;
use crate::edge::click_id::{ClickIdCodec, ClickIdError};
use crate::edge::request;
use crate::http::json::Keys;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use clicktrail_actors::catalog::{now_us, valid_id, Catalog, EntityStore, Role};
use clicktrail_actors::clicks::{ClickLookup, SharedClicks};
use clicktrail_actors::ingest::{AppendError, IngestShards, DURABLE_SHARD};
use clicktrail_storage::schema::{
    ConversionReversalV3, ConversionState, ConversionStatusChange, ConversionV2, Currency,
    MatchKind, Money, Pair, ReversalReason, IMPORTED_CONVERSION_ID_PREFIX,
};
use clicktrail_storage::{Event, Journal, Record, RecordExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Most journal records a fingerprint match reads to find its click: milliseconds at
/// worst, against the 200,000 a postback's lookup may read on its own thread.
const FINGERPRINT_LOOKUP_MAX: usize = 20_000;

/// Confidence given to a fingerprint match: a heuristic, documented as such (shared
/// networks and identical browsers can collide).
pub const FINGERPRINT_CONFIDENCE_PPM: u32 = 600_000;

/// Largest conversion body.
pub const BODY_SIZE_MAX: usize = 16 * 1024;
/// Longest order id, customer id or event name.
pub const FIELD_LEN_MAX: usize = 128;
/// Most metadata entries, and the longest key and value.
pub const METADATA_MAX: usize = 20;
pub const METADATA_KEY_MAX: usize = 64;
pub const METADATA_VALUE_MAX: usize = 256;
/// Longest buyer's user agent kept (what a click keeps of its header).
pub const USER_AGENT_LEN_MAX: usize = request::HEADER_KEEP_MAX;
/// Longest e-mail address (RFC 5321's path limit less its brackets).
pub const EMAIL_LEN_MAX: usize = 254;

/// A conversion as a merchant sends it (JSON keys and `/postback` parameters alike).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionRequest {
    pub click_id: Option<String>,
    /// A string, or a whole number as its decimal text.
    #[serde(deserialize_with = "crate::http::json::id_text")]
    pub order_id: String,
    pub event: Option<String>,
    /// A decimal string, or a JSON number read from its literal text.
    #[serde(default, deserialize_with = "crate::http::json::text_or_number")]
    pub amount: Option<String>,
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "crate::http::json::opt_id_text")]
    pub customer_id: Option<String>,
    /// Unix seconds, or RFC 3339 (`2026-11-25T10:00:00Z`).
    pub occurred_at: Option<Value>,
    pub campaign_id: Option<String>,
    /// Values may be strings, numbers or booleans (kept as their text).
    #[serde(default, deserialize_with = "crate::http::json::metadata_text")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The buyer's browser, for fingerprint matching when there is no click id: its IP,
    /// user agent and `Accept-Language` as the merchant saw them.
    /// A valid IPv4 or IPv6 address; stored with the conversion (cut like click IPs under
    /// `tracking.ip-truncation = "partial"`).
    pub ip: Option<String>,
    /// At most [`USER_AGENT_LEN_MAX`] printable characters; stored with the conversion.
    pub user_agent: Option<String>,
    pub accept_language: Option<String>,
    /// The browser opted out (`Sec-GPC`/`DNT`): never matched by fingerprint.
    #[serde(default)]
    pub opted_out: bool,
    /// The buyer's e-mail address, for the fraud rules: stored only as its keyed hash
    /// (`customer_email_hash`), never as sent, and never answered.
    pub customer_email: Option<String>,
}

/// What reserving an imported conversion's (merchant, order id) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OrderSlot {
    /// Reserved for it (pending): write it, then [`Conversions::settle_imported`].
    Reserved,
    /// The order is recorded with the same data: its conversion id, and where to wait for
    /// its record's durability when not yet confirmed.
    Same {
        id: String,
        unconfirmed: Option<(usize, u64)>,
    },
    /// A live request is recording it right now.
    Busy,
    /// Recorded with different data.
    Conflict,
}

/// How an imported conversion's append ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Recorded,
    Written { shard: usize, end: u64 },
    NotWritten,
}

/// What a conversion stores of its buyer.
struct Buyer {
    ip: String,
    user_agent: String,
    email_hash: Option<String>,
}

/// What reserving a reversal under the index lock found.
enum Reserved {
    New {
        rev: ConversionReversalV3,
        key: (String, String),
    },
    /// The same reversal id again, with the same data.
    Replay {
        key: (String, String),
        done_amount: i64,
        state: State,
    },
}

/// A reversal by its idempotency id: amount in minor units, reason, and where its record
/// stands (a replay is confirmed only once the first one is durable).
#[derive(Debug, Clone)]
struct Reversal {
    amount_minor: i64,
    reason: ReversalReason,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// Being written: a concurrent duplicate gets 503 "in progress".
    Pending,
    /// Written but not yet known durable (a sync failed or timed out): a replay waits for
    /// durability before it answers.
    Written {
        shard: usize,
        end: u64,
    },
    Recorded,
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    /// pending until approved or rejected.
    review: Review,
    /// Where the decision's own record stands (`Pending` while it is being written).
    review_state: State,
    /// What a status-change record repeats of the conversion.
    facts: Arc<Facts>,
    /// Digest of the request data that must match on a replay.
    digest: u64,
    merchant_id: String,
    amount: Money,
    reversed_minor: i64,
    /// Reversals by their idempotency id: (amount in minor units, reason).
    /// Boxed and absent until the first reversal: most conversions are never reversed, and
    /// an inline map made every index slot 40 bytes larger to move on each rehash.
    #[allow(clippy::box_collection)]
    reversals: Option<Box<HashMap<String, Reversal>>>,
}

/// Where a conversion's review stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Review {
    Pending,
    Approved,
    Rejected,
}

impl Review {
    fn name(self) -> &'static str {
        match self {
            Review::Pending => "pending",
            Review::Approved => "approved",
            Review::Rejected => "rejected",
        }
    }
}

impl From<ConversionState> for Review {
    fn from(s: ConversionState) -> Review {
        match s {
            ConversionState::Approved => Review::Approved,
            ConversionState::Rejected => Review::Rejected,
        }
    }
}

/// The conversion's own fields a status change or a reversal record carries along, and
/// what its answer repeats.
#[derive(Debug)]
struct Facts {
    conversion_id: String,
    campaign_id: String,
    order_id: String,
    event: String,
    click_id: Option<String>,
    affiliate_id: Option<String>,
    match_kind: MatchKind,
    match_confidence_ppm: u32,
    /// When the merchant says it happened (shown, so a caller sees how its time was read).
    occurred_at_us: i64,
}

impl Facts {
    fn of(c: &ConversionV2) -> Arc<Facts> {
        Arc::new(Facts {
            conversion_id: c.conversion_id.clone(),
            campaign_id: c.campaign_id.clone(),
            order_id: c.order_id.clone(),
            event: c.event.clone(),
            click_id: c.click_id.clone(),
            affiliate_id: c.affiliate_id.clone(),
            match_kind: c.match_kind,
            match_confidence_ppm: c.match_confidence_ppm,
            occurred_at_us: c.occurred_at_us,
        })
    }
}

/// The JSON answer about one conversion (creation, replay, lookup). Serialised straight
/// from the index entry: keeping a `serde_json::Value` per conversion cost a tree of
/// allocations per entry and a deep clone per answer.
#[derive(Serialize)]
struct Answer<'a> {
    conversion_id: &'a str,
    order_id: &'a str,
    status: &'static str,
    click_id: Option<&'a str>,
    affiliate_id: Option<&'a str>,
    campaign_id: &'a str,
    #[serde(rename = "match")]
    match_kind: &'static str,
    match_confidence: f64,
    amount: String,
    currency: &'a str,
    occurred_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reversed: Option<String>,
}

impl Entry {
    /// Where reversal `reversal_id`'s record stands now (if the reversal is still held).
    fn set_reversal_state(&mut self, reversal_id: &str, state: State) {
        if let Some(done) = self.reversals.as_mut().and_then(|m| m.get_mut(reversal_id)) {
            done.state = state;
        }
    }

    /// The review status as answered. A decision whose record is still being appended
    /// shows as pending (its append may yet fail); once appended it shows, even before a
    /// sync has confirmed it (as before: a retry of the decision waits for durability).
    fn status(&self) -> &'static str {
        match self.review_state {
            State::Pending => Review::Pending.name(),
            _ => self.review.name(),
        }
    }

    fn answer(&self) -> Answer<'_> {
        let f = &self.facts;
        Answer {
            conversion_id: &f.conversion_id,
            order_id: &f.order_id,
            status: self.status(),
            click_id: f.click_id.as_deref(),
            affiliate_id: f.affiliate_id.as_deref(),
            campaign_id: &f.campaign_id,
            match_kind: match_name(f.match_kind),
            match_confidence: f.match_confidence_ppm as f64 / 1e6,
            amount: amount::format(&self.amount),
            currency: self.amount.currency.as_str(),
            occurred_at: crate::ledger_api::rfc3339(f.occurred_at_us),
            duplicate: None,
            reversed: None,
        }
    }
}

/// A hash map split into 64 independent tables. The index holds every conversion ever
/// recorded; one table that size stalled every conversion for 100-350 ms each time it
/// doubled (rehashing and first-touching the new table under the index lock, measured with
/// clicktrail-load at 10k conversions/s, growing run over run). A shard doubles at 1/64 of
/// the size.
struct ShardedMap<K, V> {
    hasher: foldhash::fast::RandomState,
    shards: Vec<HashMap<K, V, foldhash::fast::RandomState>>,
}

const INDEX_SHARDS: usize = 64;

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            hasher: Default::default(),
            shards: (0..INDEX_SHARDS)
                .map(|_| HashMap::with_hasher(Default::default()))
                .collect(),
        }
    }
}

impl<K, V> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.shards.iter().map(HashMap::len).sum();
        f.debug_struct("ShardedMap").field("len", &n).finish()
    }
}

impl<K: std::hash::Hash + Eq, V> ShardedMap<K, V> {
    fn shard<Q: std::hash::Hash + ?Sized>(&self, k: &Q) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(k) % INDEX_SHARDS as u64) as usize
    }

    fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.shards[self.shard(k)].get(k)
    }

    fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let i = self.shard(k);
        self.shards[i].get_mut(k)
    }

    fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.get(k).is_some()
    }

    fn insert(&mut self, k: K, v: V) -> Option<V> {
        let i = self.shard(&k);
        self.shards[i].insert(k, v)
    }

    fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let i = self.shard(k);
        self.shards[i].remove(k)
    }
}

/// The idempotency index: (merchant, order id) -> entry, and conversion id -> key.
#[derive(Debug, Default)]
struct Index {
    by_order: ShardedMap<(String, String), Entry>,
    by_id: ShardedMap<String, (String, String)>,
}

/// What the conversion handlers share.
pub struct Conversions {
    store: Arc<EntityStore>,
    /// Clicks by fingerprint and by id, for fingerprint matching.
    clicks: ClickLookup,
    fingerprint_key: Hmac<Sha256>,
    /// How far back a fingerprint match may reach (shorter than cookie windows).
    fingerprint_window_us: i64,
    ingest: IngestShards,
    codec: ClickIdCodec,
    /// Derives conversion ids from (merchant, order id): stable and unguessable.
    id_key: Hmac<Sha256>,
    index: Mutex<Index>,
    /// Key of the buyers' e-mail hashes.
    email_hash_key: Vec<u8>,
    ip_truncation: IpTruncation,
}

impl std::fmt::Debug for Conversions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversions").finish()
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": msg.into() }))
}

fn digest(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn match_name(m: MatchKind) -> &'static str {
    match m {
        MatchKind::ClickId => "click_id",
        MatchKind::Cookie => "cookie",
        MatchKind::Fingerprint => "fingerprint",
        MatchKind::None => "none",
    }
}

/// The request data whose change under the same order id is a conflict.
/// The buyer's facts (IP, user agent, e-mail) are not part of it: a retry from another of
/// the merchant's servers may see the buyer differently, and it is the same order.
pub(crate) fn conversion_digest(c: &ConversionV2) -> u64 {
    let amount = c.amount.amount_minor.to_string();
    let meta: Vec<String> = c
        .metadata
        .iter()
        .map(|p| format!("{}={}", p.name, p.value))
        .collect();
    digest(&[
        &c.event,
        &amount,
        c.amount.currency.as_str(),
        c.click_id.as_deref().unwrap_or(""),
        c.customer_id.as_deref().unwrap_or(""),
        &c.campaign_id,
        &meta.join("\n"),
    ])
}

/// Oldest `occurred_at` accepted, before now: ten years (a merchant backfilling its
/// history). Commission months, recurring windows and hold periods are computed from it,
/// so a time of year 0 or 9999 would price a sale in a month no report ever shows.
pub const OCCURRED_AT_PAST_MAX_US: i64 = 3_660 * 86_400 * 1_000_000;
/// Latest `occurred_at` accepted, after now: one day of clock skew between the merchant's
/// servers and ours.
pub const OCCURRED_AT_FUTURE_MAX_US: i64 = 86_400 * 1_000_000;

/// Checks that a conversion's time is inside the accepted window around `now_us`.
pub fn occurred_in_window(at_us: i64, now_us: i64) -> Result<i64, String> {
    if at_us < now_us - OCCURRED_AT_PAST_MAX_US {
        return Err("occurred_at is more than 10 years (3660 days) ago".into());
    }
    if at_us > now_us + OCCURRED_AT_FUTURE_MAX_US {
        return Err("occurred_at is more than 24 hours in the future".into());
    }
    Ok(at_us)
}

pub(crate) fn bounded_text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(format!("{what} must be 1-{max} printable characters"));
    }
    Ok(())
}

/// Checks a buyer's e-mail address: at most [`EMAIL_LEN_MAX`] bytes, exactly one `@` with
/// something on each side, no control characters or spaces. (Deliverability is not ours
/// to judge: the address is only ever hashed.)
pub(crate) fn check_email(what: &str, s: &str) -> Result<(), String> {
    let s = s.trim();
    let ok = s.len() <= EMAIL_LEN_MAX
        && s.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && s.matches('@').count() == 1
        && !s.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} must be an e-mail address: at most {EMAIL_LEN_MAX} bytes, one @ with text on \
             each side, no spaces or control characters"
        ))
    }
}

/// A conversion's amount: a decimal (or a number's literal text) in minor units of an ISO
/// 4217 currency, by the shared money parser; a sale needs one above zero. The live paths
/// and imports read amounts only through this.
pub(crate) fn conversion_amount(
    event: &str,
    amount: Option<&str>,
    currency: Option<&str>,
) -> Result<Money, String> {
    let m = match (amount, currency) {
        (Some(a), Some(c)) => amount::parse(a, c).map_err(|e| e.to_string())?,
        (Some(_), None) => return Err("amount needs a currency".into()),
        (None, Some(c)) => amount::parse("0", c).map_err(|e| e.to_string())?,
        (None, None) => Money {
            amount_minor: 0,
            currency: Currency(*b"XXX"),
        },
    };
    if event == "sale" && m.amount_minor <= 0 {
        return Err("a sale needs an amount above zero".into());
    }
    Ok(m)
}

/// Parses the buyer's IP: `what` names the field in the error.
pub(crate) fn check_ip(what: &str, s: &str) -> Result<std::net::IpAddr, String> {
    s.trim()
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| format!("{what} must be an IPv4 or IPv6 address, not {s:?}"))
}

/// Checks the buyer's user agent (empty is none).
pub(crate) fn check_user_agent(what: &str, s: &str) -> Result<(), String> {
    if s.len() > USER_AGENT_LEN_MAX || s.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be at most {USER_AGENT_LEN_MAX} bytes of printable characters"
        ));
    }
    Ok(())
}

/// The IP text stored for `ip` under the truncation setting.
pub(crate) fn stored_ip(ip: std::net::IpAddr, truncation: IpTruncation) -> String {
    match truncation {
        IpTruncation::None => ip.to_string(),
        IpTruncation::Partial => request::truncate_ip(ip).to_string(),
    }
}

/// What the conversion handlers are set up with, besides the shared handles.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `secrets.click-id-key`: click ids, fingerprints and conversion ids derive from it.
    pub click_id_key: String,
    /// How far back a fingerprint match may reach.
    pub fingerprint_window: std::time::Duration,
    /// The key of buyers' e-mail hashes (`secrets.email-hash-key`, or derived).
    pub email_hash_key: Vec<u8>,
    /// How stored IPs are cut (`tracking.ip-truncation`).
    pub ip_truncation: IpTruncation,
}

impl Conversions {
    /// Builds the idempotency index from every conversion and reversal in the journal.
    /// `also` sees every record of every ingest partition in the same pass (with its
    /// partition's name), for other indexes derived from them (the import's references).
    pub fn load(
        journal: &Journal,
        store: Arc<EntityStore>,
        ingest: IngestShards,
        clicks: SharedClicks,
        settings: Settings,
        also: &mut dyn FnMut(&str, &Record<'_>),
    ) -> clicktrail_storage::Result<Conversions> {
        let click_id_key = settings.click_id_key.as_str();
        let mut index = Index::default();
        let mut reversals: Vec<ConversionReversalV3> = Vec::new();
        let mut reviews: Vec<ConversionStatusChange> = Vec::new();
        for p in journal
            .partitions()
            .iter()
            .filter(|p| p.name().starts_with("ingest-"))
        {
            let mut r = p.reader()?;
            while let Some(rec) = r.next()? {
                also(p.name(), &rec);
                if let Some(c) = clicktrail_storage::schema::conversion(&rec) {
                    let key = (c.merchant_id.clone(), c.order_id.clone());
                    index.by_id.insert(c.conversion_id.clone(), key.clone());
                    index.by_order.insert(
                        key,
                        Entry {
                            state: State::Recorded,
                            review: Review::Pending,
                            review_state: State::Recorded,
                            facts: Facts::of(&c),
                            digest: conversion_digest(&c),
                            merchant_id: c.merchant_id.clone(),
                            amount: c.amount,
                            reversed_minor: 0,
                            reversals: None,
                        },
                    );
                } else if let Some(rv) = clicktrail_storage::schema::reversal(&rec) {
                    reversals.push(rv);
                } else if let Some(sc) = rec.to_owned_event::<ConversionStatusChange>() {
                    reviews.push(sc);
                }
            }
        }
        for rv in reversals {
            if let Some(key) = index.by_id.get(&rv.conversion_id).cloned() {
                if let Some(e) = index.by_order.get_mut(&key) {
                    e.reversed_minor += rv.amount.amount_minor;
                    if !rv.reversal_id.is_empty() {
                        e.reversals.get_or_insert_default().insert(
                            rv.reversal_id,
                            Reversal {
                                amount_minor: rv.amount.amount_minor,
                                reason: rv.reason,
                                state: State::Recorded,
                            },
                        );
                    }
                }
            }
        }
        for sc in reviews {
            if let Some(key) = index.by_id.get(&sc.conversion_id).cloned() {
                if let Some(e) = index.by_order.get_mut(&key) {
                    e.review = sc.state.into();
                }
            }
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(click_id_key.as_bytes()).expect("any key");
        mac.update(b"clicktrail conversion id key v1");
        Ok(Conversions {
            store,
            clicks: ClickLookup {
                clicks,
                journal: journal.clone(),
            },
            fingerprint_key: request::fingerprint_key(click_id_key),
            fingerprint_window_us: settings.fingerprint_window.as_micros() as i64,
            ingest,
            codec: ClickIdCodec::new(click_id_key.as_bytes()),
            id_key: Hmac::new_from_slice(&mac.finalize().into_bytes()).expect("any key"),
            index: Mutex::new(index),
            email_hash_key: settings.email_hash_key,
            ip_truncation: settings.ip_truncation,
        })
    }

    fn conversion_id(&self, merchant: &str, order: &str) -> String {
        self.id_with_prefix("cv_", merchant, order)
    }

    /// The id of an imported conversion: the live id's tag after
    /// [`IMPORTED_CONVERSION_ID_PREFIX`], so anything about it says it was imported.
    pub(crate) fn imported_conversion_id(&self, merchant: &str, order: &str) -> String {
        self.id_with_prefix(IMPORTED_CONVERSION_ID_PREFIX, merchant, order)
    }

    fn id_with_prefix(&self, prefix: &str, merchant: &str, order: &str) -> String {
        let mut mac = self.id_key.clone();
        mac.update(merchant.as_bytes());
        mac.update(b"\n");
        mac.update(order.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{prefix}{}",
            crate::edge::click_id::base64url_encode(&tag[..15])
        )
    }

    /// Reserves an imported conversion's order (see [`OrderSlot`]): the merchant's order id
    /// is the idempotency key of imports as of live conversions.
    pub(crate) fn reserve_imported(&self, c: &ConversionV2) -> OrderSlot {
        let key = (c.merchant_id.clone(), c.order_id.clone());
        let digest = conversion_digest(c);
        let mut index = self.index.lock().unwrap();
        if let Some(e) = index.by_order.get(&key) {
            return match (&e.state, e.digest == digest) {
                (_, false) => OrderSlot::Conflict,
                (State::Pending, true) => OrderSlot::Busy,
                (State::Recorded, true) => OrderSlot::Same {
                    id: e.facts.conversion_id.clone(),
                    unconfirmed: None,
                },
                (State::Written { shard, end }, true) => OrderSlot::Same {
                    id: e.facts.conversion_id.clone(),
                    unconfirmed: Some((*shard, *end)),
                },
            };
        }
        index.by_order.insert(
            key,
            Entry {
                state: State::Pending,
                review: Review::Pending,
                review_state: State::Recorded,
                facts: Facts::of(c),
                digest,
                merchant_id: c.merchant_id.clone(),
                amount: c.amount,
                reversed_minor: 0,
                reversals: None,
            },
        );
        OrderSlot::Reserved
    }

    /// Settles a reserved imported conversion once its append ended: recorded (durable),
    /// written (durability not yet confirmed: a replay waits for it), or not written.
    pub(crate) fn settle_imported(&self, c: &ConversionV2, outcome: Settled) {
        let key = (c.merchant_id.clone(), c.order_id.clone());
        let mut index = self.index.lock().unwrap();
        let state = match outcome {
            Settled::Recorded => State::Recorded,
            Settled::Written { shard, end } => State::Written { shard, end },
            Settled::NotWritten => {
                index.by_order.remove(&key);
                return;
            }
        };
        if let Some(e) = index.by_order.get_mut(&key) {
            e.state = state;
            index.by_id.insert(c.conversion_id.clone(), key);
        }
    }

    /// Validates a request and resolves its click; the answer on refusal.
    /// `via`: how the click id arrived (`ClickId` from the merchant, `Cookie` from the
    /// browser pixel).
    fn build(
        &self,
        merchant: &str,
        mut req: ConversionRequest,
        catalog: &Catalog,
        via: MatchKind,
    ) -> Result<ConversionV2, HttpResponse> {
        let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
        bounded_text("order_id", &req.order_id, FIELD_LEN_MAX).map_err(bad)?;
        let buyer = self.buyer(&req).map_err(bad)?;
        let event = req.event.take().unwrap_or_else(|| "sale".into());
        if !valid_id(&event) {
            return Err(bad(
                "event must be sale, lead, signup or a custom name of [A-Za-z0-9_.-]".into(),
            ));
        }
        let amount = conversion_amount(&event, req.amount.as_deref(), req.currency.as_deref())
            .map_err(bad)?;
        if let Some(c) = &req.customer_id {
            bounded_text("customer_id", c, FIELD_LEN_MAX).map_err(bad)?;
        }
        let metadata = req.metadata.take().unwrap_or_default();
        if metadata.len() > METADATA_MAX
            || metadata.iter().any(|(k, v)| {
                k.is_empty() || k.len() > METADATA_KEY_MAX || v.len() > METADATA_VALUE_MAX
            })
        {
            return Err(bad(format!(
                "metadata: at most {METADATA_MAX} entries, keys 1-{METADATA_KEY_MAX} and values up to {METADATA_VALUE_MAX} bytes"
            )));
        }
        let now = now_us();
        let occurred_at_us = match &req.occurred_at {
            None => now,
            Some(v) => crate::http::time::parse(v)
                .map_err(|e| bad(format!("occurred_at: {e}")))
                .and_then(|at| occurred_in_window(at, now).map_err(bad))?,
        };
        let unprocessable = |m: &str| error(StatusCode::UNPROCESSABLE_ENTITY, m);
        let mut matched_click: Option<String> = None;
        let mut fingerprint_match = if req.click_id.is_none() {
            self.fingerprint_match(merchant, &req, catalog, now)
        } else {
            None
        };
        let (campaign_id, affiliate_id, match_kind) = match req.click_id.as_deref() {
            Some(id) => {
                let parts = self.codec.decode(id).map_err(|e| match e {
                    ClickIdError::Malformed => unprocessable("malformed click_id"),
                    ClickIdError::Forged => unprocessable(
                        "click_id failed verification (forged or from another installation)",
                    ),
                })?;
                let link = catalog
                    .link_numbers
                    .get(parts.link as usize)
                    .and_then(|code| catalog.link(code))
                    .ok_or_else(|| unprocessable("click_id names a link that no longer exists"))?;
                let campaign = &link.campaign.campaign;
                if campaign.merchant_id != merchant {
                    return Err(error(
                        StatusCode::FORBIDDEN,
                        "click_id belongs to another merchant's campaign",
                    ));
                }
                if req.campaign_id.as_deref().is_some_and(|c| c != campaign.id) {
                    return Err(unprocessable(
                        "campaign_id does not match the click's campaign",
                    ));
                }
                let window_end = parts.time_s as i64 + campaign.cookie_window_days as i64 * 86_400;
                if now / 1_000_000 > window_end {
                    return Err(unprocessable(
                        "click_id expired: outside the campaign's attribution window",
                    ));
                }
                (
                    campaign.id.clone(),
                    Some(link.link.affiliate_id.clone()),
                    via,
                )
            }
            None if fingerprint_match.is_some() => {
                let (click, campaign) = fingerprint_match.take().expect("checked");
                matched_click = Some(click.click_id.to_string());
                (campaign, Some(click.affiliate_id), MatchKind::Fingerprint)
            }
            None => {
                let campaign_id = req.campaign_id.clone().unwrap_or_default();
                if !campaign_id.is_empty() {
                    match catalog.campaigns.get(&campaign_id) {
                        None => return Err(unprocessable("unknown campaign_id")),
                        Some(c) if c.campaign.merchant_id != merchant => {
                            return Err(error(
                                StatusCode::FORBIDDEN,
                                "campaign_id belongs to another merchant",
                            ))
                        }
                        Some(_) => {}
                    }
                }
                (campaign_id, None, MatchKind::None)
            }
        };
        Ok(ConversionV2 {
            at_us: now,
            conversion_id: self.conversion_id(merchant, &req.order_id),
            merchant_id: merchant.to_string(),
            campaign_id,
            order_id: req.order_id,
            event,
            amount,
            customer_id: req.customer_id,
            occurred_at_us,
            click_id: req.click_id.or(matched_click),
            affiliate_id,
            match_kind,
            match_confidence_ppm: match match_kind {
                MatchKind::None => 0,
                MatchKind::Fingerprint => FINGERPRINT_CONFIDENCE_PPM,
                MatchKind::ClickId | MatchKind::Cookie => 1_000_000,
            },
            metadata: metadata
                .into_iter()
                .map(|(name, value)| Pair { name, value })
                .collect(),
            ip: buyer.ip,
            user_agent: buyer.user_agent,
            customer_email_hash: buyer.email_hash,
            imported: false,
        })
    }

    /// The buyer's facts a conversion stores, checked: (IP, user agent, e-mail hash).
    fn buyer(&self, req: &ConversionRequest) -> Result<Buyer, String> {
        let ip = match req.ip.as_deref() {
            Some(ip) => stored_ip(check_ip("ip", ip)?, self.ip_truncation),
            None => String::new(),
        };
        let user_agent = req.user_agent.clone().unwrap_or_default();
        check_user_agent("user_agent", &user_agent)?;
        let email_hash = match req.customer_email.as_deref() {
            Some(e) => {
                check_email("customer_email", e)?;
                self.email_hash(e)
            }
            None => None,
        };
        Ok(Buyer {
            ip,
            user_agent,
            email_hash,
        })
    }

    /// The keyed hash of a buyer's e-mail address (what is stored instead of it).
    pub(crate) fn email_hash(&self, email: &str) -> Option<String> {
        clicktrail_actors::fraud::email::email_hash(&self.email_hash_key, email)
    }

    /// The latest click of this browser (by fingerprint) inside the fingerprint window, on
    /// one of the merchant's campaigns (and the requested one, if any): (click, campaign).
    fn fingerprint_match(
        &self,
        merchant: &str,
        req: &ConversionRequest,
        catalog: &Catalog,
        now_us: i64,
    ) -> Option<(clicktrail_actors::clicks::ClickInfo, String)> {
        if req.opted_out {
            return None;
        }
        let ip: std::net::IpAddr = req.ip.as_deref()?.parse().ok()?;
        let ua = req.user_agent.as_deref()?;
        let lang = req.accept_language.as_deref().unwrap_or("");
        let mut ip_text = request::IpText::default();
        let fp = request::fingerprint(
            &self.fingerprint_key,
            ip_text.format(ip.to_canonical()),
            &[ua, lang],
        );
        let since = now_us - self.fingerprint_window_us;
        let id = self
            .clicks
            .clicks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_fingerprint(
                clicktrail_actors::clicks::merchant_fingerprint(fp, merchant),
                since,
            )?;
        // The click itself may have left the click index: read it back by id, with a small
        // budget, as this runs on a thread that serves requests (the near read takes a few
        // hundred records; the budget is for the rare id whose sequence misleads).
        let click = self.clicks.info_within(&id, FINGERPRINT_LOOKUP_MAX)?;
        let campaign = catalog.campaigns.get(&click.campaign_id)?;
        let ok = campaign.campaign.merchant_id == merchant
            && req
                .campaign_id
                .as_deref()
                .is_none_or(|c| c == click.campaign_id);
        ok.then(|| (click.clone(), click.campaign_id.clone()))
    }

    /// Records a conversion exactly once and answers. The append and its durability wait
    /// run on their own task, so a client that goes away cannot leave the order half done.
    async fn record(
        conv: web::Data<Conversions>,
        merchant: String,
        req: ConversionRequest,
        via: MatchKind,
    ) -> HttpResponse {
        let catalog = conv.store.snapshot();
        let c = match conv.build(&merchant, req, &catalog, via) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let key = (merchant.clone(), c.order_id.clone());
        let digest = conversion_digest(&c);
        let existing = conv.index.lock().unwrap().by_order.get(&key).cloned();
        if let Some(e) = existing {
            if e.digest != digest {
                return error(
                    StatusCode::CONFLICT,
                    "order_id already recorded with different data",
                );
            }
            let durable = match e.state {
                State::Recorded => true,
                State::Pending => return in_progress(),
                // Written before, durability unconfirmed: confirm it before saying so.
                State::Written { shard, end } => conv.ingest.wait_durable(shard, end).await,
            };
            if !durable {
                return unavailable("an earlier attempt's record is not yet durable");
            }
            let mut index = conv.index.lock().unwrap();
            if let Some(e) = index.by_order.get_mut(&key) {
                e.state = State::Recorded;
            }
            let mut a = e.answer();
            a.duplicate = Some(true);
            return HttpResponse::Ok().json(a);
        }
        {
            let mut index = conv.index.lock().unwrap();
            if index.by_order.contains_key(&key) {
                return in_progress(); // another request got here first
            }
            index.by_order.insert(
                key.clone(),
                Entry {
                    state: State::Pending,
                    review: Review::Pending,
                    review_state: State::Recorded,
                    facts: Facts::of(&c),
                    digest,
                    merchant_id: merchant.clone(),
                    amount: c.amount,
                    reversed_minor: 0,
                    reversals: None,
                },
            );
        }
        let task = actix_rt::spawn(async move {
            let payload = clicktrail_actors::Output::event(&c).payload;
            let result = conv
                .ingest
                .append(
                    DURABLE_SHARD,
                    ConversionV2::KIND as u16,
                    ConversionV2::VERSION,
                    &payload,
                    true,
                )
                .await;
            let mut index = conv.index.lock().unwrap();
            match result {
                Ok(_) => {
                    let e = index.by_order.get_mut(&key).expect("pending entry");
                    e.state = State::Recorded;
                    let response = HttpResponse::Created().json(e.answer());
                    index.by_id.insert(c.conversion_id.clone(), key);
                    response
                }
                Err(AppendError::NotYetDurable { shard, end }) => {
                    // Written: a retry must find it (and confirm durability), not write again.
                    let e = index.by_order.get_mut(&key).expect("pending entry");
                    e.state = State::Written { shard, end };
                    index.by_id.insert(c.conversion_id.clone(), key);
                    unavailable("written but not yet durable")
                }
                Err(e) => {
                    index.by_order.remove(&key);
                    unavailable(&e.to_string())
                }
            }
        });
        task.await
            .unwrap_or_else(|_| unavailable("conversion task failed"))
    }
}

/// The amount a replayed reversal is compared with: the one it names, or (when it named
/// none, meaning "all that was left") the amount the first one reversed.
fn amount_for_replay(named: bool, amount: i64, done: i64) -> i64 {
    if named {
        amount
    } else {
        done
    }
}

fn in_progress() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(json!({ "error": "a conversion with this order_id is being recorded; retry" }))
}

fn unavailable(why: &str) -> HttpResponse {
    use crate::http::sampled_log::{log, Kind};
    log(Kind::JournalFailure, ::log::Level::Error, || {
        format!("conversion not acknowledged: {why}")
    });
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(json!({ "error": "could not record durably; retry with the same order_id" }))
}

fn merchant_of(
    req: &HttpRequest,
    secret: Option<&str>,
    store: &EntityStore,
) -> Result<String, HttpResponse> {
    let Some(secret) = bearer(req).or(secret.map(str::trim).filter(|s| !s.is_empty())) else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing merchant key"));
    };
    match store.with(|c| c.key(secret).map(|k| (k.role, k.owner.clone()))) {
        None => Err(error(StatusCode::UNAUTHORIZED, "unknown key")),
        Some((role, _)) if role != Role::Merchant => {
            Err(error(StatusCode::FORBIDDEN, "this needs a merchant key"))
        }
        Some((_, owner)) => Ok(owner),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/conversions")
            .app_data(crate::http::BodySizeMax(BODY_SIZE_MAX))
            .app_data(web::PayloadConfig::new(BODY_SIZE_MAX))
            .route(web::post().to(post_conversion)),
    )
    .service(
        web::resource("/api/v1/conversions/{id}/reverse")
            .app_data(crate::http::BodySizeMax(BODY_SIZE_MAX))
            .app_data(web::PayloadConfig::new(BODY_SIZE_MAX))
            .route(web::post().to(reverse)),
    )
    .service(
        web::resource("/api/v1/conversions/{id}/approve")
            .app_data(crate::http::BodySizeMax(BODY_SIZE_MAX))
            .app_data(web::PayloadConfig::new(BODY_SIZE_MAX))
            .route(web::post().to(approve)),
    )
    .service(
        web::resource("/api/v1/conversions/{id}/reject")
            .app_data(crate::http::BodySizeMax(BODY_SIZE_MAX))
            .app_data(web::PayloadConfig::new(BODY_SIZE_MAX))
            .route(web::post().to(reject)),
    )
    .route("/api/v1/conversions/{id}", web::get().to(get_conversion))
    .route("/postback", web::get().to(get_postback))
    .route("/p/conv", web::get().to(conversion_pixel));
}

async fn post_conversion(
    req: HttpRequest,
    body: web::Bytes,
    conv: web::Data<Conversions>,
) -> HttpResponse {
    let merchant = match merchant_of(&req, None, &conv.store) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match crate::http::json::parse::<ConversionRequest>(&req, &body, Keys::Snake, "conversion") {
        Ok(r) => Conversions::record(conv, merchant, r, MatchKind::ClickId).await,
        Err(r) => r,
    }
}

/// Strictly parsed query parameters: no repeats, valid percent-encoding and UTF-8.
fn query_fields(raw: &str) -> Result<BTreeMap<String, String>, HttpResponse> {
    if raw.len() > request::QUERY_LEN_MAX {
        return Err(error(StatusCode::URI_TOO_LONG, "query string too long"));
    }
    let mut fields = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Ok(k), Ok(v)) = (request::percent_decode(k), request::percent_decode(v)) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid percent-encoding or UTF-8",
            ));
        };
        if fields.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("parameter {k:?} repeated"),
            ));
        }
    }
    Ok(fields)
}

/// A conversion request from query parameters (`/postback` and `/p/conv`).
fn request_from(fields: BTreeMap<String, String>) -> Result<ConversionRequest, HttpResponse> {
    let mut r = ConversionRequest::default();
    for (k, v) in fields {
        match k.as_str() {
            "click_id" => r.click_id = Some(v),
            "order_id" => r.order_id = v,
            "event" => r.event = Some(v),
            "amount" => r.amount = Some(v),
            "currency" => r.currency = Some(v),
            "customer_id" => r.customer_id = Some(v),
            "campaign_id" => r.campaign_id = Some(v),
            "ip" => r.ip = Some(v),
            "user_agent" => r.user_agent = Some(v),
            "accept_language" => r.accept_language = Some(v),
            "customer_email" => r.customer_email = Some(v),
            "opted_out" => r.opted_out = v == "1" || v == "true",
            "occurred_at" => {
                r.occurred_at = Some(
                    v.parse::<i64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(v)),
                )
            }
            other => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    Ok(r)
}

async fn get_postback(req: HttpRequest, conv: web::Data<Conversions>) -> HttpResponse {
    let mut fields = match query_fields(req.query_string()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let key = fields.remove("key");
    let merchant = match merchant_of(&req, key.as_deref(), &conv.store) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match request_from(fields) {
        Ok(r) => Conversions::record(conv, merchant, r, MatchKind::ClickId).await,
        Err(resp) => resp,
    }
}

/// The browser conversion pixel: `GET /p/conv?merchant_id=..&order_id=..&amount=..`.
///
/// Off unless the merchant sets `conversion-pixel = true`: anyone holding a click cookie
/// (the affiliate included) can call it with any order id and amount, so such conversions
/// deserve review, and its order ids share the merchant's idempotency keys.
///
/// A browser cannot hold a merchant key, so the pixel trusts only what the browser proves:
/// its first-party `ct_cid` cookie must carry a verified, unexpired click id of one of that
/// merchant's campaigns (`match = "cookie"`). Without one nothing is recorded. The answer
/// is always a no-store 1x1 GIF for a browser, with the outcome in `X-Clicktrail-Result`.
/// For the cookie to reach it, serve clicktrail on a subdomain of the merchant's site
/// (first-party), because `SameSite=Lax` cookies are not sent on cross-site images.
async fn conversion_pixel(req: HttpRequest, conv: web::Data<Conversions>) -> HttpResponse {
    let pixel = |result: &str| {
        HttpResponse::Ok()
            .content_type("image/gif")
            .insert_header(("Cache-Control", "no-store"))
            .insert_header(("X-Clicktrail-Result", result.to_string()))
            .body(crate::edge::PIXEL_GIF)
    };
    let mut fields = match query_fields(req.query_string()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(merchant) = fields.remove("merchant_id") else {
        return error(StatusCode::BAD_REQUEST, "merchant_id is required");
    };
    // Unauthenticated by nature, so off unless the merchant turned it on.
    let enabled = conv
        .store
        .snapshot()
        .merchants
        .get(&merchant)
        .is_some_and(|m| m.conversion_pixel);
    if !enabled {
        return pixel("pixel-disabled");
    }
    if fields.contains_key("click_id") {
        return error(
            StatusCode::BAD_REQUEST,
            "the pixel takes the click from the cookie, not click_id",
        );
    }
    let cookie = req
        .headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| request::cookie(c, crate::edge::CLICK_COOKIE).map(str::to_string));
    let Some(click_id) = cookie else {
        return pixel("no-click-cookie");
    };
    let mut r = match request_from(fields) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    r.click_id = Some(click_id);
    let answer = Conversions::record(conv, merchant, r, MatchKind::Cookie).await;
    match answer.status().as_u16() {
        200 | 201 => pixel("recorded"),
        503 => answer,
        s => pixel(&format!("refused-{s}")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReverseRequest {
    /// refund, chargeback or rejected.
    reason: String,
    /// Part of the amount (a decimal string or number); the whole remaining amount when
    /// absent.
    #[serde(default, deserialize_with = "crate::http::json::text_or_number")]
    amount: Option<String>,
    note: Option<String>,
    /// Idempotency key (1-64 of [A-Za-z0-9_.-]): the same id again answers the first
    /// reversal and reverses nothing more. Without one a retry reverses again.
    reversal_id: Option<String>,
}

async fn reverse(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    conv: web::Data<Conversions>,
) -> HttpResponse {
    let merchant = match merchant_of(&req, None, &conv.store) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let r: ReverseRequest = match crate::http::json::parse(&req, &body, Keys::Snake, "reversal") {
        Ok(r) => r,
        Err(r) => return r,
    };
    let note = r.note.unwrap_or_default();
    if note.len() > 500 || note.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            "note: at most 500 printable characters",
        );
    }
    if r.reversal_id.as_deref().is_some_and(|id| !valid_id(id)) {
        return error(
            StatusCode::BAD_REQUEST,
            "reversal_id must be 1-64 of [A-Za-z0-9_.-]",
        );
    }
    let reversal_id = r
        .reversal_id
        .clone()
        .unwrap_or_else(|| format!("rv_{:016x}", fastrand::u64(..)));
    let id = path.into_inner();
    if let Err(r) = confirm_durable(&conv, &id).await {
        return r;
    }
    // Reserve the reversal under the lock so two concurrent ones cannot exceed the amount.
    let reserved = 'reserve: {
        let mut index = conv.index.lock().unwrap();
        let Some(key) = index.by_id.get(&id).cloned() else {
            return error(StatusCode::NOT_FOUND, "unknown conversion");
        };
        let e = index.by_order.get_mut(&key).expect("indexed");
        if e.merchant_id != merchant {
            return error(StatusCode::NOT_FOUND, "unknown conversion");
        }
        let remaining = e.amount.amount_minor - e.reversed_minor;
        let amount = match r.amount.as_deref() {
            None => remaining,
            Some(a) => match amount::parse(a, e.amount.currency.as_str()) {
                Ok(m) => m.amount_minor,
                Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
            },
        };
        let reason = match (r.reason.as_str(), amount < e.amount.amount_minor) {
            ("refund", true) => ReversalReason::PartialRefund,
            ("refund", false) => ReversalReason::Refund,
            ("chargeback", _) => ReversalReason::Chargeback,
            ("rejected", _) => ReversalReason::Rejected,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "reason must be refund, chargeback or rejected",
                )
            }
        };
        if let Some(done) = e.reversals.as_ref().and_then(|m| m.get(&reversal_id)) {
            let same_reason = match done.reason {
                ReversalReason::Refund | ReversalReason::PartialRefund => r.reason == "refund",
                ReversalReason::Chargeback => r.reason == "chargeback",
                ReversalReason::Rejected => r.reason == "rejected",
            };
            let done_amount = done.amount_minor;
            if !same_reason
                || amount_for_replay(r.amount.is_some(), amount, done_amount) != done_amount
            {
                return error(
                    StatusCode::CONFLICT,
                    "reversal_id already used with different data",
                );
            }
            break 'reserve Reserved::Replay {
                key,
                done_amount,
                state: done.state.clone(),
            };
        }
        if !matches!(e.state, State::Recorded) || !matches!(e.review_state, State::Recorded) {
            // The conversion itself, or a decision on it, is still being made durable.
            return in_progress();
        }
        if e.review == Review::Rejected {
            return error(
                StatusCode::CONFLICT,
                "conversion was rejected: there is nothing to reverse",
            );
        }
        if remaining <= 0 {
            return error(StatusCode::CONFLICT, "conversion already fully reversed");
        }
        if amount <= 0 || amount > remaining {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "amount must be above zero and at most what is left to reverse",
            );
        }
        e.reversed_minor += amount;
        e.reversals.get_or_insert_default().insert(
            reversal_id.clone(),
            Reversal {
                amount_minor: amount,
                reason,
                state: State::Pending,
            },
        );
        let rev = ConversionReversalV3 {
            affiliate_id: e.facts.affiliate_id.clone(),
            order_id: e.facts.order_id.clone(),
            click_id: e.facts.click_id.clone(),
            campaign_id: e.facts.campaign_id.clone(),
            at_us: now_us(),
            conversion_id: id.clone(),
            reason,
            amount: Money {
                amount_minor: amount,
                currency: e.amount.currency,
            },
            actor: merchant.clone(),
            note,
            reversal_id: reversal_id.clone(),
        };
        Reserved::New { rev, key }
    };
    let (rev, key) = match reserved {
        Reserved::New { rev, key } => (rev, key),
        Reserved::Replay {
            key,
            done_amount,
            state,
        } => {
            // A replay is confirmed only once the first one is durable.
            match state {
                State::Recorded => {}
                State::Pending => return in_progress(),
                State::Written { shard, end } => {
                    if !conv.ingest.wait_durable(shard, end).await {
                        return unavailable("an earlier attempt's record is not yet durable");
                    }
                }
            }
            let mut index = conv.index.lock().unwrap();
            let e = index.by_order.get_mut(&key).expect("indexed");
            e.set_reversal_state(&reversal_id, State::Recorded);
            let mut a = reversal_answer(&id, &reversal_id, e, done_amount);
            a["duplicate"] = json!(true);
            return HttpResponse::Ok().json(a);
        }
    };
    let result = append_about(&conv, &rev).await;
    let mut index = conv.index.lock().unwrap();
    let e = index.by_order.get_mut(&key).expect("indexed");
    match result {
        Ok(_) => {
            e.set_reversal_state(&reversal_id, State::Recorded);
            HttpResponse::Ok().json(reversal_answer(
                &id,
                &reversal_id,
                e,
                rev.amount.amount_minor,
            ))
        }
        Err(err) => {
            // Written but not yet durable: the reversal stands (it is in the journal), so
            // its amount stays reserved. Anything else wrote nothing: give it back.
            if let AppendError::NotYetDurable { shard, end } = err {
                e.set_reversal_state(&reversal_id, State::Written { shard, end });
            } else {
                e.reversed_minor -= rev.amount.amount_minor;
                if let Some(m) = e.reversals.as_mut() {
                    m.remove(&reversal_id);
                }
            }
            unavailable(&err.to_string())
        }
    }
}

/// The answer about reversal `reversal_id` of `reversed_minor` on conversion `id` (entry
/// `e`), with what is left to reverse.
fn reversal_answer(id: &str, reversal_id: &str, e: &Entry, reversed_minor: i64) -> Value {
    let currency = e.amount.currency;
    let left = e.amount.amount_minor - e.reversed_minor;
    json!({
        "conversion_id": id,
        "reversal_id": reversal_id,
        "reversed": amount::format(&Money { amount_minor: reversed_minor, currency }),
        "remaining": amount::format(&Money { amount_minor: left, currency }),
        "status": if left == 0 { "reversed" } else { "partially-reversed" },
    })
}

/// Appends a record about a conversion (a reversal, a decision) durably, to the durable
/// shard (every record about one conversion in one partition, in order).
async fn append_about<E: clicktrail_storage::Event>(
    conv: &Conversions,
    event: &E,
) -> Result<clicktrail_storage::Appended, AppendError> {
    let payload = clicktrail_actors::Output::event(event).payload;
    conv.ingest
        .append(DURABLE_SHARD, E::KIND as u16, E::VERSION, &payload, true)
        .await
}

/// The key of `Authorization: Bearer <key>`, if any (every keyed endpoint reads it here).
pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Who may review a conversion: its merchant (merchant key) or an admin. Returns the actor
/// recorded with the decision and the merchant the key is limited to (`None`: admin).
fn reviewer_of(
    req: &HttpRequest,
    store: &EntityStore,
) -> Result<(String, Option<String>), HttpResponse> {
    let Some(secret) = bearer(req) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <key>",
        ));
    };
    match store.snapshot().key(secret) {
        None => Err(error(StatusCode::UNAUTHORIZED, "unknown key")),
        Some(k) if k.role == Role::Merchant => Ok((k.owner.clone(), Some(k.owner.clone()))),
        Some(k) if k.role == Role::Admin => {
            Ok((format!("admin-key:{}", &k.key_sha256[..12]), None))
        }
        Some(_) => Err(error(
            StatusCode::FORBIDDEN,
            "this needs a merchant or admin key",
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewRequest {
    reason: Option<String>,
}

async fn approve(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    conv: web::Data<Conversions>,
) -> HttpResponse {
    review(
        req,
        path.into_inner(),
        body,
        conv,
        ConversionState::Approved,
    )
    .await
}

async fn reject(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    conv: web::Data<Conversions>,
) -> HttpResponse {
    review(
        req,
        path.into_inner(),
        body,
        conv,
        ConversionState::Rejected,
    )
    .await
}

/// pending -> approved or rejected, once; the decision (who, why) is a journal event,
/// answered once durable. The same decision again answers the first one and writes
/// nothing; the other one is a 409.
async fn review(
    req: HttpRequest,
    id: String,
    body: web::Bytes,
    conv: web::Data<Conversions>,
    to: ConversionState,
) -> HttpResponse {
    let (actor, limited_to) = match reviewer_of(&req, &conv.store) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let r: ReviewRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReviewRequest::default()
    } else {
        match crate::http::json::parse(&req, &body, Keys::Snake, "review") {
            Ok(r) => r,
            Err(r) => return r,
        }
    };
    let reason = r.reason.unwrap_or_default();
    if reason.len() > 500 || reason.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            "reason: at most 500 printable characters",
        );
    }
    if to == ConversionState::Rejected && reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "a rejection needs a reason");
    }
    let want: Review = to.into();
    if let Err(r) = confirm_durable(&conv, &id).await {
        return r;
    }
    let (change, key) = {
        let mut index = conv.index.lock().unwrap();
        let Some(key) = index.by_id.get(&id).cloned() else {
            return error(StatusCode::NOT_FOUND, "unknown conversion");
        };
        let e = index.by_order.get_mut(&key).expect("indexed");
        if limited_to.as_ref().is_some_and(|m| *m != e.merchant_id) {
            return error(StatusCode::NOT_FOUND, "unknown conversion");
        }
        if !matches!(e.state, State::Recorded) || !matches!(e.review_state, State::Recorded) {
            return in_progress(); // the conversion, or a decision on it, is being written
        }
        if e.review == want {
            return HttpResponse::Ok()
                .json(json!({ "conversion_id": id, "status": want.name(), "duplicate": true }));
        }
        if e.review != Review::Pending {
            return error(
                StatusCode::CONFLICT,
                format!("conversion is already {}", e.review.name()),
            );
        }
        e.review = want;
        e.review_state = State::Pending;
        let f = &e.facts;
        let change = ConversionStatusChange {
            at_us: now_us(),
            conversion_id: id.clone(),
            state: to,
            actor: actor.clone(),
            reason: reason.clone(),
            merchant_id: e.merchant_id.clone(),
            campaign_id: f.campaign_id.clone(),
            order_id: f.order_id.clone(),
            event: f.event.clone(),
            amount: e.amount,
            click_id: f.click_id.clone(),
            affiliate_id: f.affiliate_id.clone(),
        };
        (change, key)
    };
    let result = append_about(&conv, &change).await;
    let mut index = conv.index.lock().unwrap();
    let e = index.by_order.get_mut(&key).expect("indexed");
    match result {
        Ok(_) => {
            e.review_state = State::Recorded;
            HttpResponse::Ok().json(json!({ "conversion_id": id, "status": want.name(), "actor": actor, "reason": reason }))
        }
        Err(AppendError::NotYetDurable { shard, end }) => {
            // Written: the decision stands (it is in the journal) but is confirmed to no one
            // before it is durable; a retry waits for that.
            e.review_state = State::Written { shard, end };
            unavailable("written but not yet durable")
        }
        Err(err) => {
            e.review = Review::Pending;
            e.review_state = State::Recorded;
            unavailable(&err.to_string())
        }
    }
}

/// Confirms whatever of conversion `id` (its own record, or a decision on it) was written
/// but not yet known durable, before anything more is done or answered about it.
async fn confirm_durable(conv: &Conversions, id: &str) -> Result<(), HttpResponse> {
    for _ in 0..2 {
        let unconfirmed = {
            let index = conv.index.lock().unwrap();
            let Some(e) = index.by_id.get(id).and_then(|k| index.by_order.get(k)) else {
                return Err(error(StatusCode::NOT_FOUND, "unknown conversion"));
            };
            match (&e.state, &e.review_state) {
                (State::Written { shard, end }, _) | (_, State::Written { shard, end }) => {
                    Some((*shard, *end))
                }
                _ => None,
            }
        };
        let Some((shard, end)) = unconfirmed else {
            break;
        };
        if !conv.ingest.wait_durable(shard, end).await {
            return Err(unavailable(
                "an earlier record of this conversion is not yet durable",
            ));
        }
        let mut index = conv.index.lock().unwrap();
        if let Some(key) = index.by_id.get(id).cloned() {
            let e = index.by_order.get_mut(&key).expect("indexed");
            // Only the record just confirmed: the other one's offset may be further on (or,
            // for a conversion recorded before every durable record went to one shard, on
            // another shard).
            let confirmed = |st: &State| matches!(st, State::Written { shard: s, end: n } if *s == shard && *n == end);
            if confirmed(&e.state) {
                e.state = State::Recorded;
            }
            if confirmed(&e.review_state) {
                e.review_state = State::Recorded;
            }
        }
    }
    Ok(())
}

/// A conversion as it stands: the creation answer with the current status and what has
/// been reversed.
async fn get_conversion(
    req: HttpRequest,
    path: web::Path<String>,
    conv: web::Data<Conversions>,
) -> HttpResponse {
    let (_, limited_to) = match reviewer_of(&req, &conv.store) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let id = path.into_inner();
    let index = conv.index.lock().unwrap();
    let Some(e) = index.by_id.get(&id).and_then(|k| index.by_order.get(k)) else {
        return error(StatusCode::NOT_FOUND, "unknown conversion");
    };
    if limited_to.as_ref().is_some_and(|m| *m != e.merchant_id) {
        return error(StatusCode::NOT_FOUND, "unknown conversion");
    }
    let mut a = e.answer();
    a.reversed = Some(amount::format(&Money {
        amount_minor: e.reversed_minor,
        currency: e.amount.currency,
    }));
    HttpResponse::Ok().json(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_times_must_be_inside_the_window() {
        let now = 1_795_600_800_000_000; // 2026-11-25T10:00:00Z
        assert_eq!(occurred_in_window(now, now), Ok(now));
        let past = now - OCCURRED_AT_PAST_MAX_US;
        assert_eq!(occurred_in_window(past, now), Ok(past));
        assert!(occurred_in_window(past - 1, now).is_err());
        let future = now + OCCURRED_AT_FUTURE_MAX_US;
        assert_eq!(occurred_in_window(future, now), Ok(future));
        assert!(occurred_in_window(future + 1, now).is_err());
        for far in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
            let at = crate::http::time::parse(&json!(far)).unwrap();
            assert!(occurred_in_window(at, now).is_err(), "{far}");
        }
    }
}
