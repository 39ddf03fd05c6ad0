//! Records of history imported from another tracker (`POST /api/v1/import`), and the
//! conversion v2 that imports and the fraud rules need.

use super::{Kind, MatchKind, Money, Pair, Record, RecordExt};
use rkyv::{Archive, Deserialize, Serialize};

/// The id an imported event got: written in the same append as the event, just before it,
/// so a re-sent import finds its references and writes nothing twice.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ImportRef {
    pub at_us: i64,
    /// The importer's own id of the event.
    pub import_ref: String,
    /// `Kind as u16` of the event.
    pub subject_kind: u16,
    /// The click, impression or conversion id it got.
    pub subject_id: String,
}

/// A merchant-reported conversion, v2: v1 plus the buyer's facts the fraud rules read and
/// whether it was imported.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConversionV2 {
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
    /// The buyer's IP and user agent, when the merchant sends them ("" otherwise).
    pub ip: String,
    pub user_agent: String,
    /// Keyed hash of the buyer's e-mail (HMAC-SHA256 of the trimmed, lower-cased address,
    /// hex): the address itself is never stored.
    pub customer_email_hash: Option<String>,
    /// Imported history: every actor reads it as a live one, postbacks never fire for it.
    pub imported: bool,
}

impl From<super::Conversion> for ConversionV2 {
    fn from(c: super::Conversion) -> ConversionV2 {
        ConversionV2 {
            at_us: c.at_us,
            conversion_id: c.conversion_id,
            merchant_id: c.merchant_id,
            campaign_id: c.campaign_id,
            order_id: c.order_id,
            event: c.event,
            amount: c.amount,
            customer_id: c.customer_id,
            occurred_at_us: c.occurred_at_us,
            click_id: c.click_id,
            affiliate_id: c.affiliate_id,
            match_kind: c.match_kind,
            match_confidence_ppm: c.match_confidence_ppm,
            metadata: c.metadata,
            ip: String::new(),
            user_agent: String::new(),
            customer_email_hash: None,
            imported: false,
        }
    }
}

/// A conversion record of version 1 or 2, as v2.
pub fn conversion(rec: &Record<'_>) -> Option<ConversionV2> {
    if rec.kind != Kind::Conversion as u16 {
        return None;
    }
    rec.to_owned_event::<ConversionV2>()
        .or_else(|| rec.to_owned_event::<super::Conversion>().map(Into::into))
}

/// The conversion ids of imported conversions start with this (live ones with `cv_`), so
/// every record about an imported conversion (its reversals and decisions, the ledger's
/// transactions for it) says so by its id alone: postbacks never fire for any of them.
pub const IMPORTED_CONVERSION_ID_PREFIX: &str = "cvi_";

/// Whether a conversion id names an imported conversion.
pub fn is_imported_conversion_id(conversion_id: &str) -> bool {
    conversion_id.starts_with(IMPORTED_CONVERSION_ID_PREFIX)
}
