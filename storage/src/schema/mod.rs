//! Event schema (v1, plus later versions of single kinds): the records every actor reads and writes, archived with rkyv 0.8.
//!
//! Each record kind has its own schema version, stored in the frame header beside the kind.
//! Readers look at the archived form in place ([`Event`], [`RecordExt::event`]); tools and
//! recovery validate it fully with bytecheck ([`validate`]).
//!
//! Conventions:
//! * money is `i64` minor units with an ISO 4217 code ([`Money`]); never floating point;
//! * time is UTC microseconds since the Unix epoch (`*_at_us`);
//! * rates and weights are integer parts per million (`*_ppm`).
//!
//! **WARNING: do not reorder, remove or change the type of any field of an archived type
//! below, and do not renumber [`Kind`].** Records already on disk would be misread. To
//! change a record, add a new struct with the next version for that kind, keep the old one
//! readable, and add its fixture to `tests/fixtures` (the compatibility test reads every
//! version ever written).

mod fraud;
mod import;

pub use fraud::*;
pub use import::*;

use crate::partition::{Appended, Record, Writer};
use crate::{Error, Result, Source};
use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Record kinds. The numbers are on disk: never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Kind {
    Click = 1,
    Impression = 2,
    Conversion = 3,
    ConversionReversal = 4,
    FraudVerdict = 5,
    Attribution = 6,
    LedgerEntry = 7,
    Payout = 8,
    PostbackAttempt = 9,
    EntityChange = 10,
    /// A conversion approved or rejected (the lifecycle after `pending`).
    ConversionStatus = 11,
    /// An input an actor could not process (skipped, kept for a retry), or such an input
    /// retried.
    DeadLetter = 12,
    /// A data-driven attribution model fitted for a campaign (a versioned model).
    AttributionModel = 13,
    /// A person's decision on a flagged click or conversion (the fraud review queue).
    FraudDecision = 14,
    /// A fraud anomaly model trained from the journal (a versioned model).
    FraudModel = 15,
    /// The id an imported event got for the reference the import gave it.
    ImportRef = 16,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Click,
        Kind::Impression,
        Kind::Conversion,
        Kind::ConversionReversal,
        Kind::FraudVerdict,
        Kind::Attribution,
        Kind::LedgerEntry,
        Kind::Payout,
        Kind::PostbackAttempt,
        Kind::EntityChange,
        Kind::ConversionStatus,
        Kind::DeadLetter,
        Kind::AttributionModel,
        Kind::FraudDecision,
        Kind::FraudModel,
        Kind::ImportRef,
    ];

    pub fn from_u16(v: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u16 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Click => "click",
            Kind::Impression => "impression",
            Kind::Conversion => "conversion",
            Kind::ConversionReversal => "conversion-reversal",
            Kind::FraudVerdict => "fraud-verdict",
            Kind::Attribution => "attribution",
            Kind::LedgerEntry => "ledger-entry",
            Kind::Payout => "payout",
            Kind::PostbackAttempt => "postback-attempt",
            Kind::EntityChange => "entity-change",
            Kind::ConversionStatus => "conversion-status",
            Kind::DeadLetter => "dead-letter",
            Kind::AttributionModel => "attribution-model",
            Kind::FraudDecision => "fraud-decision",
            Kind::FraudModel => "fraud-model",
            Kind::ImportRef => "import-ref",
        }
    }
}

/// A record type of the schema: its kind and the version this struct is.
pub trait Event:
    Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
    const KIND: Kind;
    const VERSION: u16;
}

/// ISO 4217 currency code: three ASCII upper-case letters.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct Currency(pub [u8; 3]);

impl Currency {
    /// Parses "EUR"-style codes; `None` unless exactly three ASCII upper-case letters.
    pub fn parse(s: &str) -> Option<Currency> {
        let b = s.as_bytes();
        (b.len() == 3 && b.iter().all(u8::is_ascii_uppercase)).then(|| Currency([b[0], b[1], b[2]]))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

/// An exact amount: integer minor units (cents for EUR) of a currency.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

/// A name/value pair (client hints, utm parameters, metadata).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct Pair {
    pub name: String,
    pub value: String,
}

/// A tracked click (`GET /c/{link}`), v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Click {
    pub at_us: i64,
    pub click_id: String,
    pub link_code: String,
    pub affiliate_id: String,
    pub campaign_id: String,
    /// sub1..sub5 in order; empty strings where absent.
    pub sub_ids: Vec<String>,
    /// Client IP as recorded (possibly truncated for privacy).
    pub ip: String,
    pub user_agent: String,
    pub referrer: String,
    pub accept_language: String,
    pub sec_fetch_dest: String,
    pub sec_fetch_site: String,
    pub client_hints: Vec<Pair>,
    /// The first-party visitor cookie the browser already had, if any.
    pub visitor_id: Option<String>,
    /// Fingerprint hash; `None` when the visitor opted out (`Sec-GPC`/`DNT`).
    pub fingerprint: Option<u64>,
    pub opted_out: bool,
    /// Where the browser was sent.
    pub destination: String,
    pub utm: Vec<Pair>,
}

/// A string borrowed for archiving: archives exactly as a `String` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text<'a>(pub &'a str);

impl Archive for Text<'_> {
    type Archived = rkyv::string::ArchivedString;
    type Resolver = rkyv::string::StringResolver;

    #[inline]
    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::string::ArchivedString::resolve_from_str(self.0, resolver, out);
    }
}

impl<S> Serialize<S> for Text<'_>
where
    S: rancor::Fallible + ?Sized,
    S::Error: rancor::Source,
    str: rkyv::SerializeUnsized<S>,
{
    #[inline]
    fn serialize(&self, serializer: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        rkyv::string::ArchivedString::serialize_from_str(self.0, serializer)
    }
}

/// A [`Pair`] of borrowed strings, archived as a [`Pair`].
#[derive(Archive, Serialize, Debug, Clone, Copy)]
#[rkyv(as = ArchivedPair)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Allocator + rkyv::ser::Writer, <__S as rancor::Fallible>::Error: rancor::Source))]
pub struct PairRef<'a> {
    #[rkyv(omit_bounds)]
    pub name: Text<'a>,
    #[rkyv(omit_bounds)]
    pub value: Text<'a>,
}

/// A [`Click`] of borrowed fields, archived byte for byte as the [`Click`] with the same
/// values: the edge archives a click straight from the request it holds, without copying
/// every header into a `String` first (about 20 allocations per click).
#[derive(Archive, Serialize, Debug, Clone)]
#[rkyv(as = ArchivedClick)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Allocator + rkyv::ser::Writer, <__S as rancor::Fallible>::Error: rancor::Source))]
pub struct ClickRef<'a> {
    pub at_us: i64,
    #[rkyv(omit_bounds)]
    pub click_id: Text<'a>,
    #[rkyv(omit_bounds)]
    pub link_code: Text<'a>,
    #[rkyv(omit_bounds)]
    pub affiliate_id: Text<'a>,
    #[rkyv(omit_bounds)]
    pub campaign_id: Text<'a>,
    #[rkyv(omit_bounds)]
    pub sub_ids: Vec<Text<'a>>,
    #[rkyv(omit_bounds)]
    pub ip: Text<'a>,
    #[rkyv(omit_bounds)]
    pub user_agent: Text<'a>,
    #[rkyv(omit_bounds)]
    pub referrer: Text<'a>,
    #[rkyv(omit_bounds)]
    pub accept_language: Text<'a>,
    #[rkyv(omit_bounds)]
    pub sec_fetch_dest: Text<'a>,
    #[rkyv(omit_bounds)]
    pub sec_fetch_site: Text<'a>,
    #[rkyv(omit_bounds)]
    pub client_hints: Vec<PairRef<'a>>,
    #[rkyv(omit_bounds)]
    pub visitor_id: Option<Text<'a>>,
    pub fingerprint: Option<u64>,
    pub opted_out: bool,
    #[rkyv(omit_bounds)]
    pub destination: Text<'a>,
    #[rkyv(omit_bounds)]
    pub utm: Vec<PairRef<'a>>,
}

impl ClickRef<'_> {
    /// Archives into `buf` (cleared first): the payload of a [`Click`] record.
    pub fn archive_into(&self, mut buf: AlignedVec) -> AlignedVec {
        buf.clear();
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, buf)
            .expect("archiving borrowed strings into a Vec cannot fail")
    }
}

/// A tracked impression (`GET /i/{link}`), v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Impression {
    pub at_us: i64,
    pub impression_id: String,
    pub link_code: String,
    pub affiliate_id: String,
    pub campaign_id: String,
    pub ip: String,
    pub user_agent: String,
    pub referrer: String,
    pub visitor_id: Option<String>,
}

/// How a conversion found its click.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum MatchKind {
    ClickId,
    Cookie,
    Fingerprint,
    None,
}

/// A merchant-reported conversion, v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Conversion {
    pub at_us: i64,
    pub conversion_id: String,
    pub merchant_id: String,
    pub campaign_id: String,
    /// The merchant's idempotency key.
    pub order_id: String,
    /// sale, lead, signup or a custom name.
    pub event: String,
    pub amount: Money,
    pub customer_id: Option<String>,
    /// When the merchant says it happened.
    pub occurred_at_us: i64,
    pub click_id: Option<String>,
    pub affiliate_id: Option<String>,
    pub match_kind: MatchKind,
    pub match_confidence_ppm: u32,
    pub metadata: Vec<Pair>,
}

/// Why a conversion was (partly) reversed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum ReversalReason {
    Refund,
    PartialRefund,
    Chargeback,
    Rejected,
}

/// A refund, chargeback or rejection of a conversion, v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConversionReversal {
    pub at_us: i64,
    pub conversion_id: String,
    pub reason: ReversalReason,
    /// The reversed amount (the whole amount for a full reversal).
    pub amount: Money,
    /// Who asked for it (key owner).
    pub actor: String,
    pub note: String,
}

/// A refund, chargeback or rejection of a conversion, v2: v1 plus the merchant's
/// `reversal_id`, the idempotency key of reversals (a retried reversal is applied once).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConversionReversalV2 {
    pub at_us: i64,
    pub conversion_id: String,
    pub reason: ReversalReason,
    pub amount: Money,
    pub actor: String,
    pub note: String,
    /// Unique per conversion; chosen by the merchant (or generated when it sends none).
    pub reversal_id: String,
}

impl From<ConversionReversal> for ConversionReversalV2 {
    fn from(v1: ConversionReversal) -> Self {
        ConversionReversalV2 {
            at_us: v1.at_us,
            conversion_id: v1.conversion_id,
            reason: v1.reason,
            amount: v1.amount,
            actor: v1.actor,
            note: v1.note,
            reversal_id: String::new(),
        }
    }
}

/// A reversal, v3: v2 plus the reversed conversion's affiliate, order, click and campaign,
/// so a per-affiliate postback can be told (and its macros filled) without looking the
/// conversion up.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConversionReversalV3 {
    pub at_us: i64,
    pub conversion_id: String,
    pub reason: ReversalReason,
    pub amount: Money,
    pub actor: String,
    pub note: String,
    pub reversal_id: String,
    /// The conversion's affiliate (`None` when it was unattributed, or for older records).
    pub affiliate_id: Option<String>,
    /// The conversion's order id, click id and campaign (empty/`None` for older records).
    pub order_id: String,
    pub click_id: Option<String>,
    pub campaign_id: String,
}

impl From<ConversionReversalV2> for ConversionReversalV3 {
    fn from(v2: ConversionReversalV2) -> Self {
        ConversionReversalV3 {
            at_us: v2.at_us,
            conversion_id: v2.conversion_id,
            reason: v2.reason,
            amount: v2.amount,
            actor: v2.actor,
            note: v2.note,
            reversal_id: v2.reversal_id,
            affiliate_id: None,
            order_id: String::new(),
            click_id: None,
            campaign_id: String::new(),
        }
    }
}

/// A reversal record of any version, as the current (v3) struct.
pub fn reversal(rec: &Record<'_>) -> Option<ConversionReversalV3> {
    rec.to_owned_event::<ConversionReversalV3>()
        .or_else(|| rec.to_owned_event::<ConversionReversalV2>().map(Into::into))
        .or_else(|| {
            rec.to_owned_event::<ConversionReversal>()
                .map(|v1| ConversionReversalV2::from(v1).into())
        })
}

/// Where a conversion's review ended.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum ConversionState {
    Approved,
    Rejected,
}

/// A conversion moved from pending to approved or rejected: who, why, and the conversion's
/// facts a postback needs.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConversionStatusChange {
    pub at_us: i64,
    pub conversion_id: String,
    pub state: ConversionState,
    /// Who decided (key owner, e.g. the merchant or `admin-key:<digest>`).
    pub actor: String,
    pub reason: String,
    pub merchant_id: String,
    pub campaign_id: String,
    pub order_id: String,
    pub event: String,
    pub amount: Money,
    pub click_id: Option<String>,
    pub affiliate_id: Option<String>,
}

/// What the fraud scorer decided.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum VerdictAction {
    Allow,
    Review,
    Reject,
}

/// A fraud verdict on a click or conversion, v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FraudVerdict {
    pub at_us: i64,
    /// Kind of the judged record (`Kind as u16`).
    pub subject_kind: u16,
    /// Its id (click id or conversion id).
    pub subject_id: String,
    pub score_ppm: u32,
    pub reasons: Vec<String>,
    pub action: VerdictAction,
}

/// One credited touchpoint of a conversion.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Touchpoint {
    pub click_id: String,
    pub affiliate_id: String,
    pub at_us: i64,
    /// Share of the credit; the weights of one attribution add up to 1,000,000.
    pub weight_ppm: u32,
}

/// A conversion's credit split over touchpoints, v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Attribution {
    pub at_us: i64,
    pub conversion_id: String,
    /// Model name: last-click, first-click, linear, ...
    pub model: String,
    pub touchpoints: Vec<Touchpoint>,
}

/// A conversion's credit split over touchpoints, v2: v1 plus the conversion's facts, so the
/// commission ledger prices it without another lookup.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AttributionV2 {
    pub at_us: i64,
    pub conversion_id: String,
    pub model: String,
    pub touchpoints: Vec<Touchpoint>,
    pub merchant_id: String,
    pub campaign_id: String,
    pub order_id: String,
    pub event: String,
    pub amount: Money,
    pub customer_id: Option<String>,
    pub occurred_at_us: i64,
}

/// One touch of a visitor's journey as the attribution saw it (credited or not).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct JourneyTouch {
    /// The click id (or the impression id, when `impression`).
    pub click_id: String,
    pub affiliate_id: String,
    /// The click's sub1 (empty when none): a channel when the campaign credits by sub-id.
    pub sub1: String,
    pub at_us: i64,
    pub impression: bool,
}

/// A conversion's credit split over touchpoints, v3: v2 plus the model's version, the
/// channel definition, and the whole journey the model saw (oldest first), so every
/// attribution can be explained and re-priced under another model.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AttributionV3 {
    pub at_us: i64,
    pub conversion_id: String,
    /// last-click, first-click, linear, time-decay, position-based, w-shaped, markov, shapley.
    pub model: String,
    /// 1 for the rule-based models (their definition's version); the fitted model's version
    /// for markov and shapley.
    pub model_version: u32,
    /// The credited touches (weight > 0); the weights add up to 1,000,000.
    pub touchpoints: Vec<Touchpoint>,
    pub merchant_id: String,
    pub campaign_id: String,
    pub order_id: String,
    pub event: String,
    pub amount: Money,
    pub customer_id: Option<String>,
    pub occurred_at_us: i64,
    /// What a channel is: affiliate, affiliate-campaign or sub1.
    pub channel_by: String,
    /// Every touch of the journey, oldest first (the credited ones among them).
    pub journey: Vec<JourneyTouch>,
    /// Index in `journey` of the last touch before the visitor's lead event, if any.
    pub lead_index: Option<u32>,
}

impl From<AttributionV2> for AttributionV3 {
    fn from(v2: AttributionV2) -> Self {
        let journey = v2
            .touchpoints
            .iter()
            .map(|t| JourneyTouch {
                click_id: t.click_id.clone(),
                affiliate_id: t.affiliate_id.clone(),
                sub1: String::new(),
                at_us: t.at_us,
                impression: false,
            })
            .collect();
        AttributionV3 {
            at_us: v2.at_us,
            conversion_id: v2.conversion_id,
            model: v2.model,
            model_version: 1,
            touchpoints: v2.touchpoints,
            merchant_id: v2.merchant_id,
            campaign_id: v2.campaign_id,
            order_id: v2.order_id,
            event: v2.event,
            amount: v2.amount,
            customer_id: v2.customer_id,
            occurred_at_us: v2.occurred_at_us,
            channel_by: "affiliate".into(),
            journey,
            lead_index: None,
        }
    }
}

/// An attribution record of version 2 or 3, as v3 (v1 carries no conversion facts and is
/// not priced by anyone: `None`).
pub fn attribution(rec: &Record<'_>) -> Option<AttributionV3> {
    rec.to_owned_event::<AttributionV3>()
        .or_else(|| rec.to_owned_event::<AttributionV2>().map(Into::into))
}

/// A subset of channels seen together in journeys, with how many of those journeys
/// converted: one cell of the Shapley conversion-rate game.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Coalition {
    /// Indices into the model's `channels`, ascending, distinct.
    pub channels: Vec<u32>,
    pub conversions: f64,
    pub journeys: f64,
}

/// A data-driven attribution model fitted for one campaign: its parameters, what it was
/// trained on, and its version (1, 2, ... per campaign and model). Conversions name the
/// version that credited them; a refit adds a version and never rewrites history.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct AttributionModelFit {
    pub at_us: i64,
    pub campaign_id: String,
    /// markov or shapley.
    pub model: String,
    pub version: u32,
    /// Markov order (0 for shapley).
    pub order: u32,
    pub channel_by: String,
    /// The journeys it was trained on ended in [from, to].
    pub trained_from_us: i64,
    pub trained_to_us: i64,
    pub journeys: u64,
    pub conversions: u64,
    pub channels: Vec<String>,
    /// Markov: P(conversion) of the whole chain; shapley: 0.
    pub p_conversion: f64,
    /// Markov: removal effect per channel (same order as `channels`); shapley: empty.
    pub removal_effects: Vec<f64>,
    /// Shapley: the observed coalitions; markov: empty.
    pub coalitions: Vec<Coalition>,
    /// Who asked: `schedule` or the key owner of an on-demand fit.
    pub requested_by: String,
}

/// Why a ledger transaction was posted.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum LedgerCause {
    /// An attributed conversion earned commissions (pending).
    Sale,
    /// A refund or chargeback took (part of) them back.
    Reversal,
    /// Pending commissions became approved (hold period over, or the merchant approved).
    Approval,
    /// The merchant or the fraud review rejected the conversion.
    Rejection,
    /// The fraud review holds the conversion (no postings).
    Hold,
    /// The fraud review released it (no postings).
    Release,
    /// A decision about a conversion the ledger has not priced yet, kept for when it is
    /// (no postings).
    Deferred,
    /// A payout item was paid: approved -> paid, less the provider's fee.
    Payout,
}

/// One leg of a ledger transaction: a signed amount on one account, credit positive. The
/// legs of a transaction add up to zero.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Posting {
    /// `merchant:<id>`, `partner:<id>:pending|approved|paid`, `fees:<provider>`.
    pub account: String,
    /// What the amount is: `commission`, `recurring`, `bonus`, `fee`, `payout`.
    pub detail: String,
    pub amount_minor: i64,
}

/// One double-entry ledger transaction, v2 of the ledger-entry kind: balanced postings in
/// one currency and, for the commission engine's restart, the operation that produced them.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LedgerTxn {
    pub at_us: i64,
    pub txn_id: String,
    pub cause: LedgerCause,
    /// Empty for payouts.
    pub conversion_id: String,
    pub currency: Currency,
    pub postings: Vec<Posting>,
    pub memo: String,
    /// The operation as JSON, replayed on restart to rebuild the engine's state.
    pub op_json: String,
}

/// Where a payout item stands (v2 of the payout kind).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum PayoutItemStatus {
    /// In a new batch, waiting for approval.
    Proposed,
    /// Approved (automatically or by an admin); will be dispatched.
    Approved,
    /// About to call the provider; written durably first. Its item id is the idempotency
    /// key of every call for it, so a retry or restart never pays twice.
    Intent,
    /// The provider confirmed it.
    Paid,
    /// No confirmation yet (timeout, 5xx, 429): retried with the same key; the amount stays
    /// reserved.
    Retrying,
    /// Refused for good (or rejected by an admin before dispatch); the amount is payable
    /// again.
    Cancelled,
    /// Outcome unknown and an automatic retry no longer safe (the provider's idempotency
    /// window has passed, or it refused after an attempt that may have paid): reserved
    /// until an admin, having checked with the provider, marks it paid or cancels it.
    /// (Added after v2 was first written; older records never hold it.)
    Held,
}

/// A payout item's state change, v2: one item per partner and currency in a batch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PayoutItem {
    pub at_us: i64,
    pub batch_id: String,
    pub item_id: String,
    pub affiliate_id: String,
    /// What leaves the partner's approved balance.
    pub amount: Money,
    /// The provider's fee, deducted from `amount` (the partner receives the difference).
    pub fee_minor: i64,
    pub provider: String,
    /// The partner's account at the provider.
    pub destination: String,
    pub status: PayoutItemStatus,
    pub attempt: u32,
    pub provider_ref: Option<String>,
    pub error: Option<String>,
    /// Who moved it (scheduler, admin key owner).
    pub actor: String,
}

/// State of a commission in the ledger.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum LedgerState {
    Pending,
    Approved,
    Paid,
    Rejected,
    Reversed,
}

/// One double-entry posting, v1: `amount` moves from `debit_account` to `credit_account`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LedgerEntry {
    pub at_us: i64,
    pub entry_id: String,
    pub conversion_id: Option<String>,
    pub affiliate_id: String,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: Money,
    pub state: LedgerState,
    pub memo: String,
}

/// Where a payout item stands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum PayoutStatus {
    /// Written before any provider call; its item id is the idempotency key.
    Intent,
    Submitted,
    Paid,
    Failed,
}

/// A payout item and its provider results, v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Payout {
    pub at_us: i64,
    pub batch_id: String,
    pub item_id: String,
    pub affiliate_id: String,
    pub amount: Money,
    pub fee_minor: i64,
    pub provider: String,
    pub status: PayoutStatus,
    pub provider_ref: Option<String>,
    pub error: Option<String>,
}

/// How a postback delivery attempt ended.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum DeliveryOutcome {
    Delivered,
    Retrying,
    DeadLettered,
    Refused,
}

/// One postback delivery attempt, v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PostbackAttempt {
    pub at_us: i64,
    /// Stable across retries: the receiver's idempotency id.
    pub delivery_id: String,
    pub postback_id: String,
    pub trigger: String,
    pub method: String,
    pub url: String,
    pub attempt: u32,
    /// HTTP status; 0 when no response arrived.
    pub status_code: u16,
    pub latency_us: u64,
    pub error: Option<String>,
    pub outcome: DeliveryOutcome,
}

/// Create, update or delete of an entity.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum ChangeOp {
    Upsert,
    Delete,
}

/// An admin or entity change (affiliate, campaign, plan, link, postback settings), v1.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EntityChange {
    pub at_us: i64,
    /// Who made it (key owner, or "config" for entities loaded from the configuration).
    pub actor: String,
    pub entity_kind: String,
    pub entity_id: String,
    pub op: ChangeOp,
    /// The entity's full new state as JSON (empty for deletes).
    pub body_json: String,
}

/// What became of an input that an actor could not process.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum DeadLetterState {
    /// Processing failed; the actor skipped the input and went on with the next one.
    Open,
    /// A retry processed it; its outputs precede this record, with the same source.
    Resolved,
}

/// An input an actor could not process, v1. Written to the actor's own output partition
/// with the input as its source, so a restart resumes after it exactly as after any other
/// output, and the skip is recorded in the same write as the actor's position.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeadLetter {
    pub at_us: i64,
    /// The actor (processor) that could not process it.
    pub processor: String,
    pub input_partition: String,
    pub input_offset: u64,
    pub input_kind: u16,
    pub input_version: u16,
    /// 0 for the first failure, then one more for each retry.
    pub attempt: u32,
    pub state: DeadLetterState,
    /// Why it failed (the panic message); for a resolved one, what the retry did.
    pub reason: String,
}

macro_rules! events {
    ($($ty:ident => $kind:ident, $version:literal;)*) => {
        $(impl Event for $ty {
            const KIND: Kind = Kind::$kind;
            const VERSION: u16 = $version;
        })*

        /// Fully validates (bytecheck) an archived payload. `None` for a kind or version
        /// this build does not know (written by a newer build: kept, not judged).
        pub fn validate(
            kind: u16,
            version: u16,
            payload: &[u8],
        ) -> Option<std::result::Result<(), String>> {
            $(if kind == Kind::$kind as u16 && version == $version {
                return Some(
                    rkyv::access::<rkyv::Archived<$ty>, rancor::Error>(payload)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                );
            })*
            None
        }

        // Every archived type must fit the journal's 8-byte frame alignment.
        $(const _: () = assert!(std::mem::align_of::<rkyv::Archived<$ty>>() <= crate::frame::ALIGN);)*
    };
}

events! {
    Click => Click, 1;
    Impression => Impression, 1;
    Conversion => Conversion, 1;
    ConversionReversal => ConversionReversal, 1;
    ConversionReversalV2 => ConversionReversal, 2;
    ConversionReversalV3 => ConversionReversal, 3;
    FraudVerdict => FraudVerdict, 1;
    FraudVerdictV2 => FraudVerdict, 2;
    FraudDecision => FraudDecision, 1;
    FraudModelFit => FraudModel, 1;
    ConversionV2 => Conversion, 2;
    ImportRef => ImportRef, 1;
    Attribution => Attribution, 1;
    AttributionV2 => Attribution, 2;
    AttributionV3 => Attribution, 3;
    AttributionModelFit => AttributionModel, 1;
    LedgerEntry => LedgerEntry, 1;
    LedgerTxn => LedgerEntry, 2;
    Payout => Payout, 1;
    PayoutItem => Payout, 2;
    PostbackAttempt => PostbackAttempt, 1;
    EntityChange => EntityChange, 1;
    ConversionStatusChange => ConversionStatus, 1;
    DeadLetter => DeadLetter, 1;
}

impl Writer {
    /// Archives `event` into the writer's reused buffer and appends it.
    pub fn append_event<E: Event>(
        &mut self,
        source: Option<&Source>,
        event: &E,
    ) -> Result<Appended> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(event, buf).map_err(|e| {
            Error::InvalidPayload {
                offset: self.end(),
                why: format!("cannot archive {}: {e}", E::KIND.name()),
            }
        })?;
        let result = self.append(E::KIND as u16, E::VERSION, source, &buf);
        self.buf = buf;
        result
    }
}

/// Typed, zero-copy access to a record's payload.
pub trait RecordExt<'a> {
    /// The archived event, read in place, if the record is of `E`'s kind and version.
    fn event<E: Event>(&self) -> Option<&'a rkyv::Archived<E>>;
    /// Like [`RecordExt::event`] but deserialised into an owned value (for tests and tools).
    fn to_owned_event<E>(&self) -> Option<E>
    where
        E: Event,
        rkyv::Archived<E>: Deserialize<E, rkyv::rancor::Strategy<rkyv::de::Pool, rancor::Error>>;
    fn kind_enum(&self) -> Option<Kind>;
}

impl<'a> RecordExt<'a> for Record<'a> {
    #[inline]
    fn event<E: Event>(&self) -> Option<&'a rkyv::Archived<E>> {
        if self.kind != E::KIND as u16 || self.version != E::VERSION {
            return None;
        }
        // SAFETY: a record reaches here either from a reader of an opened journal (recovery
        // checked the CRC and validated the payload with bytecheck of everything on disk;
        // later records were published by our writer only once written whole) or from a
        // tool's scan, which checks the CRC and validates before handing records out. So
        // these are exactly the bytes our writer archived for this kind and version
        // (`append_event` is the only typed writer), in a buffer aligned to 8 (frames are
        // 8-aligned in a page-aligned mapping and every archived type's alignment is at
        // most 8, asserted above).
        Some(unsafe { rkyv::access_unchecked::<rkyv::Archived<E>>(self.payload) })
    }

    fn to_owned_event<E>(&self) -> Option<E>
    where
        E: Event,
        rkyv::Archived<E>: Deserialize<E, rkyv::rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
    {
        self.event::<E>()
            .and_then(|a| rkyv::deserialize::<E, rancor::Error>(a).ok())
    }

    fn kind_enum(&self) -> Option<Kind> {
        Kind::from_u16(self.kind)
    }
}

/// One sample of every record kind, deterministic: the compatibility fixtures and the
/// benchmarks use these.
#[doc(hidden)]
pub mod samples {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money {
            amount_minor: minor,
            currency: Currency(*b"EUR"),
        }
    }

    fn pair(n: &str, v: &str) -> Pair {
        Pair {
            name: n.into(),
            value: v.into(),
        }
    }

    pub fn click() -> Click {
        Click {
            at_us: 1_764_000_000_000_000,
            click_id: "c1AbCdEfGh".into(),
            link_code: "demo".into(),
            affiliate_id: "demo-affiliate".into(),
            campaign_id: "demo-campaign".into(),
            sub_ids: vec!["s1".into(), "".into(), "s3".into(), "".into(), "".into()],
            ip: "203.0.113.0".into(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64)".into(),
            referrer: "https://news.example/".into(),
            accept_language: "en-GB,en;q=0.9".into(),
            sec_fetch_dest: "document".into(),
            sec_fetch_site: "cross-site".into(),
            client_hints: vec![pair("sec-ch-ua-platform", "\"Linux\"")],
            visitor_id: Some("v-123".into()),
            fingerprint: Some(0x0123_4567_89ab_cdef),
            opted_out: false,
            destination: "https://shop.example/landing?click_id=c1AbCdEfGh".into(),
            utm: vec![pair("utm_source", "news")],
        }
    }

    pub fn impression() -> Impression {
        Impression {
            at_us: 1_764_000_000_000_001,
            impression_id: "i1".into(),
            link_code: "demo".into(),
            affiliate_id: "demo-affiliate".into(),
            campaign_id: "demo-campaign".into(),
            ip: "198.51.100.7".into(),
            user_agent: "curl/8".into(),
            referrer: String::new(),
            visitor_id: None,
        }
    }

    pub fn conversion() -> Conversion {
        Conversion {
            at_us: 1_764_000_100_000_000,
            conversion_id: "cv1".into(),
            merchant_id: "demo-merchant".into(),
            campaign_id: "demo-campaign".into(),
            order_id: "order-1".into(),
            event: "sale".into(),
            amount: eur(4990),
            customer_id: Some("cust-9".into()),
            occurred_at_us: 1_764_000_099_000_000,
            click_id: Some("c1AbCdEfGh".into()),
            affiliate_id: Some("demo-affiliate".into()),
            match_kind: MatchKind::ClickId,
            match_confidence_ppm: 1_000_000,
            metadata: vec![pair("coupon", "WINTER")],
        }
    }

    pub fn reversal_v2() -> ConversionReversalV2 {
        ConversionReversalV2 {
            reversal_id: "refund-17".into(),
            ..reversal().into()
        }
    }

    pub fn reversal_v3() -> ConversionReversalV3 {
        ConversionReversalV3 {
            affiliate_id: Some("demo-affiliate".into()),
            order_id: "order-1".into(),
            click_id: Some("c1AbCdEfGh".into()),
            campaign_id: "demo-campaign".into(),
            ..reversal_v2().into()
        }
    }

    pub fn status_change() -> ConversionStatusChange {
        let c = conversion();
        ConversionStatusChange {
            at_us: 1_764_000_300_000_000,
            conversion_id: c.conversion_id,
            state: ConversionState::Approved,
            actor: "demo-merchant".into(),
            reason: "delivered".into(),
            merchant_id: c.merchant_id,
            campaign_id: c.campaign_id,
            order_id: c.order_id,
            event: c.event,
            amount: c.amount,
            click_id: c.click_id,
            affiliate_id: c.affiliate_id,
        }
    }

    pub fn reversal() -> ConversionReversal {
        ConversionReversal {
            at_us: 1_764_000_200_000_000,
            conversion_id: "cv1".into(),
            reason: ReversalReason::PartialRefund,
            amount: eur(990),
            actor: "demo-merchant".into(),
            note: "one item returned".into(),
        }
    }

    pub fn verdict() -> FraudVerdict {
        FraudVerdict {
            at_us: 1_764_000_000_000_500,
            subject_kind: Kind::Click as u16,
            subject_id: "c1AbCdEfGh".into(),
            score_ppm: 120_000,
            reasons: vec!["datacenter-ip".into()],
            action: VerdictAction::Allow,
        }
    }

    pub fn verdict_v2() -> FraudVerdictV2 {
        FraudVerdictV2 {
            at_us: 1_764_000_100_000_500,
            subject_kind: Kind::Conversion as u16,
            subject_id: "cv1".into(),
            score_ppm: 640_000,
            reasons: vec!["conversion 3 s after its click".into()],
            action: VerdictAction::Review,
            hits: vec![RuleHit {
                rule: "conversion-too-fast".into(),
                score_ppm: 640_000,
                reason: "conversion 3 s after its click".into(),
            }],
            subject_at_us: 1_764_000_100_000_000,
            affiliate_id: "demo-affiliate".into(),
            campaign_id: "demo-campaign".into(),
            decided_by: "scorer".into(),
            note: String::new(),
            model_version: 2,
        }
    }

    pub fn fraud_decision() -> FraudDecision {
        FraudDecision {
            at_us: 1_764_000_400_000_000,
            subject_kind: Kind::Conversion as u16,
            subject_id: "cv1".into(),
            action: VerdictAction::Allow,
            reason: "known customer, called them".into(),
            actor: "admin:ops".into(),
        }
    }

    pub fn fraud_model() -> FraudModelFit {
        FraudModelFit {
            at_us: 1_764_000_500_000_000,
            subject: "conversion".into(),
            version: 1,
            trained_from_us: 1_763_000_000_000_000,
            trained_to_us: 1_764_000_000_000_000,
            samples: 4096,
            features: vec!["log-seconds-from-click".into(), "clicks-per-ip-day".into()],
            sample_size: 256,
            seed: 7,
            trees: vec![IsoTree {
                nodes: vec![
                    IsoNode {
                        feature: 0,
                        right: 2,
                        split: 1.5,
                        size: 0,
                    },
                    IsoNode {
                        feature: u32::MAX,
                        right: 0,
                        split: 0.0,
                        size: 3,
                    },
                    IsoNode {
                        feature: u32::MAX,
                        right: 0,
                        split: 0.0,
                        size: 253,
                    },
                ],
            }],
            threshold: 0.62,
            requested_by: "schedule".into(),
        }
    }

    pub fn conversion_v2() -> ConversionV2 {
        ConversionV2 {
            ip: "198.51.100.20".into(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64)".into(),
            customer_email_hash: Some("9f86d081884c7d659a2feaa0c55ad015".into()),
            imported: true,
            ..conversion().into()
        }
    }

    pub fn import_ref() -> ImportRef {
        ImportRef {
            at_us: 1_764_000_000_000_000,
            import_ref: "legacy-click-42".into(),
            subject_kind: Kind::Click as u16,
            subject_id: "c1AbCdEfGh".into(),
        }
    }

    pub fn attribution() -> Attribution {
        Attribution {
            at_us: 1_764_000_100_000_100,
            conversion_id: "cv1".into(),
            model: "last-click".into(),
            touchpoints: vec![Touchpoint {
                click_id: "c1AbCdEfGh".into(),
                affiliate_id: "demo-affiliate".into(),
                at_us: 1_764_000_000_000_000,
                weight_ppm: 1_000_000,
            }],
        }
    }

    pub fn ledger_entry() -> LedgerEntry {
        LedgerEntry {
            at_us: 1_764_000_100_000_200,
            entry_id: "le1".into(),
            conversion_id: Some("cv1".into()),
            affiliate_id: "demo-affiliate".into(),
            debit_account: "merchant:demo-merchant:liability".into(),
            credit_account: "partner:demo-affiliate:payable".into(),
            amount: eur(499),
            state: LedgerState::Pending,
            memo: "10% of 49.90 EUR".into(),
        }
    }

    pub fn payout() -> Payout {
        Payout {
            at_us: 1_764_100_000_000_000,
            batch_id: "b1".into(),
            item_id: "b1-demo-affiliate-EUR".into(),
            affiliate_id: "demo-affiliate".into(),
            amount: eur(10_000),
            fee_minor: 50,
            provider: "stripe".into(),
            status: PayoutStatus::Intent,
            provider_ref: None,
            error: None,
        }
    }

    pub fn attribution_v2() -> AttributionV2 {
        let (a, c) = (attribution(), conversion());
        AttributionV2 {
            at_us: a.at_us,
            conversion_id: a.conversion_id,
            model: a.model,
            touchpoints: a.touchpoints,
            merchant_id: c.merchant_id,
            campaign_id: c.campaign_id,
            order_id: c.order_id,
            event: c.event,
            amount: c.amount,
            customer_id: c.customer_id,
            occurred_at_us: c.occurred_at_us,
        }
    }

    pub fn attribution_v3() -> AttributionV3 {
        let mut a = AttributionV3::from(attribution_v2());
        a.model = "position-based".into();
        a.journey.insert(
            0,
            JourneyTouch {
                click_id: "c0ZyXwVuTs".into(),
                affiliate_id: "aff-2".into(),
                sub1: "newsletter".into(),
                at_us: a.occurred_at_us - 86_400_000_000,
                impression: true,
            },
        );
        a.lead_index = Some(0);
        a
    }

    pub fn attribution_model() -> AttributionModelFit {
        AttributionModelFit {
            at_us: 1_764_000_500_000_000,
            campaign_id: "camp-1".into(),
            model: "shapley".into(),
            version: 3,
            order: 0,
            channel_by: "affiliate".into(),
            trained_from_us: 1_761_000_000_000_000,
            trained_to_us: 1_764_000_000_000_000,
            journeys: 1200,
            conversions: 31,
            channels: vec!["aff-1".into(), "aff-2".into()],
            p_conversion: 0.0,
            removal_effects: Vec::new(),
            coalitions: vec![Coalition {
                channels: vec![0, 1],
                conversions: 7.0,
                journeys: 90.0,
            }],
            requested_by: "schedule".into(),
        }
    }

    pub fn ledger_txn() -> LedgerTxn {
        LedgerTxn {
            at_us: 1_764_000_100_000_200,
            txn_id: "sale:cv1".into(),
            cause: LedgerCause::Sale,
            conversion_id: "cv1".into(),
            currency: Currency(*b"EUR"),
            postings: vec![
                Posting {
                    account: "merchant:demo-merchant".into(),
                    detail: "commission".into(),
                    amount_minor: -499,
                },
                Posting {
                    account: "partner:demo-affiliate:pending".into(),
                    detail: "commission".into(),
                    amount_minor: 499,
                },
            ],
            memo: "plan demo-10-percent".into(),
            op_json: "{}".into(),
        }
    }

    pub fn payout_item() -> PayoutItem {
        PayoutItem {
            at_us: 1_764_100_000_000_000,
            batch_id: "b-20251201-1".into(),
            item_id: "b-20251201-1-demo-affiliate-EUR".into(),
            affiliate_id: "demo-affiliate".into(),
            amount: eur(10_000),
            fee_minor: 50,
            provider: "stripe".into(),
            destination: "acct_1Demo".into(),
            status: PayoutItemStatus::Intent,
            attempt: 1,
            provider_ref: None,
            error: None,
            actor: "payout-scheduler".into(),
        }
    }

    pub fn postback_attempt() -> PostbackAttempt {
        PostbackAttempt {
            at_us: 1_764_000_100_000_300,
            delivery_id: "d1".into(),
            postback_id: "pb1".into(),
            trigger: "conversion.created".into(),
            method: "GET".into(),
            url: "https://tracker.example/pb?cid=c1AbCdEfGh".into(),
            attempt: 1,
            status_code: 200,
            latency_us: 1234,
            error: None,
            outcome: DeliveryOutcome::Delivered,
        }
    }

    pub fn dead_letter() -> DeadLetter {
        DeadLetter {
            at_us: 1_764_000_400_000_000,
            processor: "commission-ledger".into(),
            input_partition: "attributions".into(),
            input_offset: 4096,
            input_kind: Kind::Attribution as u16,
            input_version: 2,
            attempt: 0,
            state: DeadLetterState::Open,
            reason: "panicked: monthly revenue overflows".into(),
        }
    }

    pub fn entity_change() -> EntityChange {
        EntityChange {
            at_us: 1_763_999_000_000_000,
            actor: "config".into(),
            entity_kind: "affiliate".into(),
            entity_id: "demo-affiliate".into(),
            op: ChangeOp::Upsert,
            body_json: "{\"name\":\"Demo affiliate\"}".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The borrowed form archives to exactly the bytes of the owned one, for short
    /// (inline) and long strings, empty and full vectors, `Some` and `None`.
    #[test]
    fn a_borrowed_click_archives_as_the_click() {
        let long = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)";
        for (visitor, fingerprint, hints, utm) in [
            (None, None, 0, 0),
            (Some("v-123"), Some(42u64), 3, 2),
            (Some(long), Some(u64::MAX), 1, 0),
        ] {
            let owned = Click {
                at_us: 1_764_000_000_123_456,
                click_id: "AQABAWkkgQAAAABNAAAAAE0AAABNAAAA".into(),
                link_code: "demo".into(),
                affiliate_id: "demo-affiliate".into(),
                campaign_id: "c".into(),
                sub_ids: vec![
                    "s1".into(),
                    String::new(),
                    long.into(),
                    "x".into(),
                    "é".into(),
                ],
                ip: "203.0.113.0".into(),
                user_agent: long.into(),
                referrer: String::new(),
                accept_language: "en-GB,en;q=0.9".into(),
                sec_fetch_dest: "document".into(),
                sec_fetch_site: "cross-site".into(),
                client_hints: (0..hints)
                    .map(|i| Pair {
                        name: format!("sec-ch-ua-{i}"),
                        value: long[..10 * i + 3].into(),
                    })
                    .collect(),
                visitor_id: visitor.map(str::to_string),
                fingerprint,
                opted_out: fingerprint.is_none(),
                destination: format!("https://shop.example/landing?click_id=x&{long}"),
                utm: (0..utm)
                    .map(|i| Pair {
                        name: format!("utm_{i}"),
                        value: "v".repeat(i * 20),
                    })
                    .collect(),
            };
            fn pairs(v: &[Pair]) -> Vec<PairRef<'_>> {
                v.iter()
                    .map(|p| PairRef {
                        name: Text(&p.name),
                        value: Text(&p.value),
                    })
                    .collect()
            }
            let borrowed = ClickRef {
                at_us: owned.at_us,
                click_id: Text(&owned.click_id),
                link_code: Text(&owned.link_code),
                affiliate_id: Text(&owned.affiliate_id),
                campaign_id: Text(&owned.campaign_id),
                sub_ids: owned.sub_ids.iter().map(|s| Text(s)).collect(),
                ip: Text(&owned.ip),
                user_agent: Text(&owned.user_agent),
                referrer: Text(&owned.referrer),
                accept_language: Text(&owned.accept_language),
                sec_fetch_dest: Text(&owned.sec_fetch_dest),
                sec_fetch_site: Text(&owned.sec_fetch_site),
                client_hints: pairs(&owned.client_hints),
                visitor_id: owned.visitor_id.as_deref().map(Text),
                fingerprint: owned.fingerprint,
                opted_out: owned.opted_out,
                destination: Text(&owned.destination),
                utm: pairs(&owned.utm),
            };
            let want = rkyv::to_bytes::<rancor::Error>(&owned).unwrap();
            let got = borrowed.archive_into(AlignedVec::new());
            assert_eq!(got.as_slice(), want.as_slice());
            let back = rkyv::from_bytes::<Click, rancor::Error>(&got).unwrap();
            assert_eq!(back, owned);
        }
    }

    #[test]
    fn currency_parse() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn kinds_roundtrip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_u16(k as u16), Some(k));
        }
        assert_eq!(Kind::from_u16(0), None);
    }

    #[test]
    fn validate_refuses_garbage_and_wrong_kinds() {
        let bytes = rkyv::to_bytes::<rancor::Error>(&samples::click()).unwrap();
        assert_eq!(validate(Kind::Click as u16, 1, &bytes), Some(Ok(())));
        assert_eq!(validate(Kind::Click as u16, 2, &bytes), None);
        let mut bad = bytes.clone();
        bad.fill(0xab);
        assert!(matches!(
            validate(Kind::Click as u16, 1, &bad),
            Some(Err(_))
        ));
    }
}
