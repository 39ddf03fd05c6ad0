//! The catalog: affiliates, merchants, campaigns, links and API keys, derived from the
//! `entities` partition (every admin change is an [`EntityChange`] event there).
//!
//! [`EntityStore`] is the partition's one writer: it validates a change against the current
//! catalog, appends it, waits until it is durable, and publishes a new immutable
//! [`Catalog`] snapshot. The click path reads snapshots through a per-thread cache that
//! costs one atomic load per click ([`EntityStore::with`]).
//!
//! API keys are stored as SHA-256 hashes, never in plain text.

use clicktrail_storage::schema::{ChangeOp, EntityChange};
use clicktrail_storage::{Journal, Partition, RecordExt, Writer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The partition holding entity changes.
pub const ENTITIES: &str = "entities";
/// Most sub-ids a link or click carries (sub1..sub5).
pub const SUB_IDS_MAX: usize = 5;
/// Longest id, code, name or sub-id value accepted.
pub const ID_LEN_MAX: usize = 64;
/// Longest URL accepted in an entity.
pub const URL_LEN_MAX: usize = 2048;
/// Most deep-link hosts per campaign.
pub const DEEP_LINK_HOSTS_MAX: usize = 64;
/// Longest cookie window.
pub const COOKIE_WINDOW_DAYS_MAX: u32 = 400;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The entity breaks a rule (bad id, unknown reference, bad URL...). A 4xx for the API.
    #[error("{0}")]
    Invalid(String),
    /// The journal failed; nothing was published. A 5xx/503 for the API.
    #[error("journal: {0}")]
    Journal(#[from] clicktrail_storage::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    #[default]
    Active,
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Affiliate {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub status: Status,
    /// Who pays this partner: stripe, paypal or wise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_provider: Option<crate::payout::providers::ProviderKind>,
    /// The partner's account there: a Stripe connected account (`acct_...`), a PayPal
    /// e-mail address, a Wise recipient id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_account: Option<String>,
    /// Payouts held (a fraud review of the partner); commissions still accrue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payout_hold: bool,
    /// The partner's registered sites (host names or URLs; their hosts' subdomains count):
    /// the fraud engine's referrer check. Empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// The partner's own e-mail address (the fraud engine compares its keyed hash with the
    /// buyer's: self-referrals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The partner's own addresses (IPs or CIDR ranges): clicks and buyers from them are
    /// self-referrals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// Most registered sites or own addresses per affiliate.
pub const AFFILIATE_LIST_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    /// Accept browser conversion pixels (`/p/conv`), which are unauthenticated.
    /// Default: false.
    #[serde(default)]
    pub conversion_pixel: bool,
}

/// An affiliate's sites, e-mail and own addresses: well formed and bounded.
fn check_fraud_facts(a: &Affiliate) -> Result<()> {
    if a.sites.len() > AFFILIATE_LIST_MAX || a.ips.len() > AFFILIATE_LIST_MAX {
        return invalid(format!("at most {AFFILIATE_LIST_MAX} sites and ips"));
    }
    for site in &a.sites {
        if site.len() > 2048 || crate::fraud::signals::site_host(site).is_none() {
            return invalid(format!(
                "site {site:?} must be a host name or a URL (https://blog.example/...)"
            ));
        }
    }
    for ip in &a.ips {
        crate::fraud::config::Cidr::parse(ip).map_err(|e| Error::Invalid(format!("ips: {e}")))?;
    }
    if let Some(e) = &a.email {
        let ok = e.len() <= 254
            && e.matches('@').count() == 1
            && !e.starts_with('@')
            && !e.ends_with('@')
            && !e.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return invalid("email must be one address, at most 254 bytes");
        }
    }
    Ok(())
}

/// A campaign's attribution settings: known names, bounds.
fn check_attribution(c: &Campaign) -> Result<()> {
    if !ATTRIBUTION_MODELS.contains(&c.attribution_model.as_str()) {
        return invalid(format!(
            "attribution-model must be one of {}",
            ATTRIBUTION_MODELS.join(", ")
        ));
    }
    if !ATTRIBUTION_CHANNELS.contains(&c.attribution_channel.as_str()) {
        return invalid(format!(
            "attribution-channel must be one of {}",
            ATTRIBUTION_CHANNELS.join(", ")
        ));
    }
    if c.attribution_model_version == Some(0) {
        return invalid("attribution-model-version starts at 1");
    }
    if let Some(d) = c.lookback_days {
        if !(1..=COOKIE_WINDOW_DAYS_MAX).contains(&d) {
            return invalid(format!(
                "lookback-days must be 1..={COOKIE_WINDOW_DAYS_MAX}"
            ));
        }
    }
    if !(1..=HALF_LIFE_DAYS_MAX).contains(&c.half_life_days) {
        return invalid(format!("half-life-days must be 1..={HALF_LIFE_DAYS_MAX}"));
    }
    if !(1..=MARKOV_ORDER_MAX).contains(&c.markov_order) {
        return invalid(format!("markov-order must be 1..={MARKOV_ORDER_MAX}"));
    }
    if c.lead_event.is_empty() || c.lead_event.len() > 64 {
        return invalid("lead-event must be 1-64 characters");
    }
    Ok(())
}

fn default_window_days() -> u32 {
    30
}

fn default_click_id_param() -> String {
    "click_id".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Campaign {
    pub id: String,
    pub merchant_id: String,
    pub name: String,
    /// Where clicks land (http or https).
    pub destination_url: String,
    /// Hosts deep links (`url=`) may point at: exact names, or `.example.com` for the name
    /// and every subdomain. Empty: no deep links.
    #[serde(default)]
    pub deep_link_hosts: Vec<String>,
    /// Attribution cookie lifetime. Default: 30 days.
    #[serde(default = "default_window_days")]
    pub cookie_window_days: u32,
    /// Query parameter the click id is added as. Default: `click_id`.
    #[serde(default = "default_click_id_param")]
    pub click_id_param: String,
    #[serde(default)]
    pub status: Status,
    /// Where clicks go while paused (default: the destination, unrecorded).
    #[serde(default)]
    pub fallback_url: Option<String>,
    /// The attribution model that pays partners: last-click (default), first-click,
    /// linear, time-decay, position-based, w-shaped, markov or shapley.
    #[serde(default = "default_attribution_model")]
    pub attribution_model: String,
    /// Pins a fitted version of a data-driven model (default: the latest fitted one).
    #[serde(default)]
    pub attribution_model_version: Option<u32>,
    /// What a channel is for the data-driven models: affiliate (default),
    /// affiliate-campaign, or sub1 (the affiliate and its sub1).
    #[serde(default = "default_attribution_channel")]
    pub attribution_channel: String,
    /// How far back touches count for a conversion. Default: the cookie window.
    #[serde(default)]
    pub lookback_days: Option<u32>,
    /// Impressions are touches too. Default: false (clicks only).
    #[serde(default)]
    pub count_impressions: bool,
    /// Half-life of the time-decay model. Default: 7 days.
    #[serde(default = "default_half_life_days")]
    pub half_life_days: u32,
    /// Order of the Markov model (1..=4). Default: 1.
    #[serde(default = "default_markov_order")]
    pub markov_order: u32,
    /// The conversion event that marks a lead (W-shaped); it is credited on its own and
    /// does not end the journey. Default: `lead`.
    #[serde(default = "default_lead_event")]
    pub lead_event: String,
    /// Partners may send search-ad traffic (bid on the brand). Default: true; false makes
    /// the fraud engine's `brand-bidding` rule flag clicks from search ads and pages.
    #[serde(default = "default_true")]
    pub paid_search: bool,
    /// A click must follow an impression of the same partner (the `no-impression` rule).
    /// Default: false.
    #[serde(default, alias = "require-impression", alias = "impression-required")]
    pub requires_impression: bool,
    /// The fraud rules' settings for this campaign, over the program's `[fraud.rules]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fraud_rules: BTreeMap<String, crate::fraud::config::RuleOverride>,
}

fn default_true() -> bool {
    true
}

/// The attribution model names a campaign may choose.
pub const ATTRIBUTION_MODELS: [&str; 8] = [
    "last-click",
    "first-click",
    "linear",
    "time-decay",
    "position-based",
    "w-shaped",
    "markov",
    "shapley",
];

/// What a channel of the data-driven models may be.
pub const ATTRIBUTION_CHANNELS: [&str; 3] = ["affiliate", "affiliate-campaign", "sub1"];

/// Longest time-decay half-life, in days.
pub const HALF_LIFE_DAYS_MAX: u32 = 365;
/// Highest Markov order.
pub const MARKOV_ORDER_MAX: u32 = 4;

fn default_attribution_model() -> String {
    "last-click".into()
}

fn default_attribution_channel() -> String {
    "affiliate".into()
}

fn default_half_life_days() -> u32 {
    7
}

fn default_markov_order() -> u32 {
    1
}

fn default_lead_event() -> String {
    "lead".into()
}

impl Campaign {
    /// A campaign with every optional setting at its default (empty ids and URLs): the
    /// base of struct literals that set the rest.
    pub fn defaults() -> Campaign {
        Campaign {
            id: String::new(),
            merchant_id: String::new(),
            name: String::new(),
            destination_url: String::new(),
            deep_link_hosts: Vec::new(),
            cookie_window_days: default_window_days(),
            click_id_param: default_click_id_param(),
            status: Status::default(),
            fallback_url: None,
            attribution_model: default_attribution_model(),
            attribution_model_version: None,
            attribution_channel: default_attribution_channel(),
            lookback_days: None,
            count_impressions: false,
            half_life_days: default_half_life_days(),
            markov_order: default_markov_order(),
            lead_event: default_lead_event(),
            paid_search: true,
            requires_impression: false,
            fraud_rules: BTreeMap::new(),
        }
    }

    /// How far back touches count, in days.
    pub fn lookback_days(&self) -> u32 {
        self.lookback_days.unwrap_or(self.cookie_window_days)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Link {
    pub code: String,
    pub affiliate_id: String,
    pub campaign_id: String,
    /// Default sub1..sub5 (a click's own sub-ids override them).
    #[serde(default)]
    pub sub_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    Merchant,
    Partner,
}

/// An API key as stored: its hash, role and owner (merchant or affiliate id; "admin").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApiKey {
    pub key_sha256: String,
    pub role: Role,
    pub owner: String,
}

impl ApiKey {
    pub fn new(secret: &str, role: Role, owner: &str) -> ApiKey {
        ApiKey {
            key_sha256: hash_key(secret),
            role,
            owner: owner.into(),
        }
    }
}

/// Hex SHA-256 of an API key.
pub fn hash_key(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    // Runs on every authenticated request: a `format!` per byte was 33 allocations, a
    // visible share of each conversion's CPU.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        hex.push(HEX[usize::from(b >> 4)] as char);
        hex.push(HEX[usize::from(b & 0x0f)] as char);
    }
    hex
}

/// How a postback is sent. Read in any case (`"GET"`, `"post"`), written lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    #[default]
    Get,
    Post,
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "get" => Ok(Method::Get),
            "post" => Ok(Method::Post),
            _ => Err(serde::de::Error::custom(format!(
                "method must be GET or POST, not {s:?}"
            ))),
        }
    }
}

/// What fires a postback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trigger {
    #[serde(rename = "conversion.created")]
    ConversionCreated,
    #[serde(rename = "conversion.approved")]
    ConversionApproved,
    #[serde(rename = "conversion.rejected")]
    ConversionRejected,
    #[serde(rename = "conversion.reversed")]
    ConversionReversed,
    /// The ledger posted a commission for the affiliate (`{payout}`: its amount).
    #[serde(rename = "commission.created")]
    CommissionCreated,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::ConversionCreated => "conversion.created",
            Trigger::ConversionApproved => "conversion.approved",
            Trigger::ConversionRejected => "conversion.rejected",
            Trigger::ConversionReversed => "conversion.reversed",
            Trigger::CommissionCreated => "commission.created",
        }
    }
}

/// Most postbacks per affiliate (and global ones).
pub const POSTBACKS_PER_OWNER_MAX: usize = 10;

/// A postback: where to tell an affiliate (or, global, the network) about an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Postback {
    pub id: String,
    /// The affiliate it belongs to; `None` for a global postback (every conversion).
    #[serde(default)]
    pub affiliate_id: Option<String>,
    /// URL template with `{macro}`s; http or https.
    pub url: String,
    #[serde(default)]
    pub method: Method,
    pub triggers: Vec<Trigger>,
    /// HMAC-SHA256 signing secret (rotated by replacing it).
    pub secret: String,
    /// When it was created (or last re-enabled): it fires only for events from then on,
    /// never for history, nor for what happened while it was disabled.
    #[serde(default)]
    pub created_at_us: i64,
    /// A disabled postback makes no deliveries (its queued ones are dead-lettered when
    /// they come up). Default: true; written only when false, so records from before the
    /// field read unchanged.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// What a tier bracket counts, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierBasisSpec {
    Conversions,
    Revenue,
}

/// How a tier rate applies, as configured (see `ledger::commission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierModeSpec {
    WholeMonth,
    Bracket,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BracketSpec {
    /// Upper bound (inclusive) of the month's volume; absent on the last bracket.
    #[serde(default)]
    pub up_to: Option<u64>,
    pub bps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TierSpec {
    pub basis: TierBasisSpec,
    pub mode: TierModeSpec,
    pub brackets: Vec<BracketSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BonusSpec {
    pub basis: TierBasisSpec,
    pub threshold: u64,
    pub amount_minor: i64,
}

/// A commission plan for a campaign (or, with `affiliate-id`, one affiliate's override),
/// effective from `effective-from` (Unix seconds). Exactly one of `percent-bps`,
/// `flat-minor` (per event, in the conversion's currency's minor units) and `tiers`;
/// optionally a recurring share and a monthly bonus. Rates are basis points (1000 = 10%).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CommissionPlan {
    pub id: String,
    pub campaign_id: String,
    #[serde(default)]
    pub affiliate_id: Option<String>,
    #[serde(default)]
    pub effective_from: i64,
    #[serde(default)]
    pub percent_bps: Option<u32>,
    #[serde(default)]
    pub flat_minor: BTreeMap<String, i64>,
    #[serde(default)]
    pub tiers: Option<TierSpec>,
    #[serde(default)]
    pub recurring_bps: Option<u32>,
    /// Months of recurring commission after a customer's first conversion; absent for
    /// the customer's lifetime.
    #[serde(default)]
    pub recurring_months: Option<u32>,
    #[serde(default)]
    pub bonus: Option<BonusSpec>,
}

impl CommissionPlan {
    /// The plan as the commission engine applies it, or why it makes no sense.
    pub fn to_plan(&self) -> std::result::Result<crate::ledger::commission::Plan, String> {
        use crate::ledger::commission as c;
        let basis = |b: TierBasisSpec| match b {
            TierBasisSpec::Conversions => c::TierBasis::Conversions,
            TierBasisSpec::Revenue => c::TierBasis::Revenue,
        };
        let pricing = match (self.percent_bps, self.flat_minor.is_empty(), &self.tiers) {
            (Some(bps), true, None) => c::Pricing::Percent { bps },
            (None, false, None) => c::Pricing::Flat {
                per_event: self.flat_minor.clone(),
                default: None,
            },
            (None, true, Some(t)) => c::Pricing::Tiered(c::Tiers {
                basis: basis(t.basis),
                mode: match t.mode {
                    TierModeSpec::WholeMonth => c::TierMode::WholeMonth,
                    TierModeSpec::Bracket => c::TierMode::Bracket,
                },
                brackets: t
                    .brackets
                    .iter()
                    .map(|b| c::Bracket {
                        up_to: b.up_to,
                        bps: b.bps,
                    })
                    .collect(),
            }),
            _ => {
                return Err("a plan needs exactly one of percent-bps, flat-minor and tiers".into())
            }
        };
        if self.recurring_months.is_some() && self.recurring_bps.is_none() {
            return Err("recurring-months without recurring-bps".into());
        }
        let plan = c::Plan {
            pricing,
            recurring: self.recurring_bps.map(|bps| c::Recurring {
                bps,
                months: self.recurring_months,
            }),
            bonus: self.bonus.as_ref().map(|b| c::Bonus {
                basis: basis(b.basis),
                threshold: b.threshold,
                amount_minor: b.amount_minor,
            }),
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// Any entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    Affiliate(Affiliate),
    Merchant(Merchant),
    Campaign(Campaign),
    Link(Link),
    Key(ApiKey),
    Postback(Postback),
    Plan(CommissionPlan),
}

impl Entity {
    pub fn kind(&self) -> &'static str {
        match self {
            Entity::Affiliate(_) => "affiliate",
            Entity::Merchant(_) => "merchant",
            Entity::Campaign(_) => "campaign",
            Entity::Link(_) => "link",
            Entity::Key(_) => "key",
            Entity::Postback(_) => "postback",
            Entity::Plan(_) => "plan",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Entity::Affiliate(a) => &a.id,
            Entity::Merchant(m) => &m.id,
            Entity::Campaign(c) => &c.id,
            Entity::Link(l) => &l.code,
            Entity::Key(k) => &k.key_sha256,
            Entity::Postback(p) => &p.id,
            Entity::Plan(p) => &p.id,
        }
    }

    fn to_json(&self) -> String {
        match self {
            Entity::Affiliate(x) => serde_json::to_string(x),
            Entity::Merchant(x) => serde_json::to_string(x),
            Entity::Campaign(x) => serde_json::to_string(x),
            Entity::Link(x) => serde_json::to_string(x),
            Entity::Key(x) => serde_json::to_string(x),
            Entity::Postback(x) => serde_json::to_string(x),
            Entity::Plan(x) => serde_json::to_string(x),
        }
        .expect("entities serialise")
    }

    fn from_json(kind: &str, json: &str) -> std::result::Result<Entity, String> {
        let e = |e: serde_json::Error| e.to_string();
        Ok(match kind {
            "affiliate" => Entity::Affiliate(serde_json::from_str(json).map_err(e)?),
            "merchant" => Entity::Merchant(serde_json::from_str(json).map_err(e)?),
            "campaign" => Entity::Campaign(serde_json::from_str(json).map_err(e)?),
            "link" => Entity::Link(serde_json::from_str(json).map_err(e)?),
            "key" => Entity::Key(serde_json::from_str(json).map_err(e)?),
            "postback" => Entity::Postback(serde_json::from_str(json).map_err(e)?),
            "plan" => Entity::Plan(serde_json::from_str(json).map_err(e)?),
            other => return Err(format!("unknown entity kind {other:?}")),
        })
    }
}

/// True for 1..=64 characters of `[A-Za-z0-9_.-]`.
pub fn valid_id(s: &str) -> bool {
    (1..=ID_LEN_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Parses an absolute http(s) URL without credentials.
pub fn parse_web_url(s: &str) -> std::result::Result<url::Url, String> {
    if s.len() > URL_LEN_MAX {
        return Err(format!("URL longer than {URL_LEN_MAX} bytes"));
    }
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{s:?}: only http and https URLs are allowed"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{s:?}: URLs with credentials are not allowed"));
    }
    Ok(u)
}

/// A campaign ready for the click path: URLs parsed once.
#[derive(Debug)]
pub struct CampaignRt {
    pub campaign: Campaign,
    pub destination: url::Url,
    pub fallback: Option<url::Url>,
}

impl CampaignRt {
    /// Whether a deep link may go to `host` (lower case).
    pub fn allows_host(&self, host: &str) -> bool {
        self.campaign
            .deep_link_hosts
            .iter()
            .any(|h| match h.strip_prefix('.') {
                Some(domain) => {
                    host == domain
                        || (host.len() > domain.len()
                            && host.ends_with(domain)
                            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
                }
                None => host == h,
            })
    }
}

/// A link ready for the click path.
#[derive(Debug)]
pub struct LinkRt {
    pub link: Link,
    /// Stable number of the link (its order of creation), encoded in click ids.
    pub number: u32,
    pub campaign: Arc<CampaignRt>,
}

/// One immutable snapshot of every entity.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub affiliates: HashMap<String, Affiliate>,
    pub merchants: HashMap<String, Merchant>,
    pub campaigns: HashMap<String, Arc<CampaignRt>>,
    pub links: HashMap<String, Arc<LinkRt>>,
    /// Link codes by number.
    pub link_numbers: Vec<String>,
    pub keys: HashMap<String, ApiKey>,
    pub postbacks: HashMap<String, Postback>,
    /// The owner of each deleted postback: its delivery log stays readable by that owner,
    /// and its id is never handed to another owner. Grows one entry per deletion (a human
    /// action, bounded by `POSTBACKS_PER_OWNER_MAX` live ones at a time).
    pub deleted_postbacks: HashMap<String, Option<String>>,
    pub plans: HashMap<String, CommissionPlan>,
}

impl Catalog {
    /// The link with `code`, if any.
    pub fn link(&self, code: &str) -> Option<&Arc<LinkRt>> {
        self.links.get(code)
    }

    /// The key whose secret is `secret`, if any.
    pub fn key(&self, secret: &str) -> Option<&ApiKey> {
        self.keys.get(&hash_key(secret))
    }

    /// Checks an entity against the catalog: ids, references, URLs, bounds.
    /// (Attribution settings: see [`check_attribution`].)
    pub fn validate(&self, e: &Entity) -> Result<()> {
        match e {
            Entity::Affiliate(a) => {
                check_id("affiliate id", &a.id)?;
                check_name(&a.name)?;
                check_fraud_facts(a)?;
                match (a.payout_provider, &a.payout_account) {
                    (Some(p), Some(acct)) => p.check_account(acct).map_err(Error::Invalid),
                    (None, None) => Ok(()),
                    _ => invalid("payout-provider and payout-account go together"),
                }
            }
            Entity::Merchant(m) => {
                check_id("merchant id", &m.id)?;
                check_name(&m.name)
            }
            Entity::Campaign(c) => {
                check_id("campaign id", &c.id)?;
                check_name(&c.name)?;
                if !self.merchants.contains_key(&c.merchant_id) {
                    return invalid(format!("unknown merchant {:?}", c.merchant_id));
                }
                parse_web_url(&c.destination_url).map_err(Error::Invalid)?;
                if let Some(f) = &c.fallback_url {
                    parse_web_url(f).map_err(Error::Invalid)?;
                }
                if c.deep_link_hosts.len() > DEEP_LINK_HOSTS_MAX {
                    return invalid(format!("at most {DEEP_LINK_HOSTS_MAX} deep-link hosts"));
                }
                for h in &c.deep_link_hosts {
                    let bare = h.strip_prefix('.').unwrap_or(h);
                    let ok = !bare.is_empty()
                        && bare.len() <= 253
                        && bare == bare.to_ascii_lowercase()
                        && bare
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                    if !ok {
                        return invalid(format!(
                            "deep-link host {h:?} must be a lower-case host name"
                        ));
                    }
                }
                if !(1..=COOKIE_WINDOW_DAYS_MAX).contains(&c.cookie_window_days) {
                    return invalid(format!(
                        "cookie-window-days must be 1..={COOKIE_WINDOW_DAYS_MAX}"
                    ));
                }
                if !valid_id(&c.click_id_param) {
                    return invalid("click-id-param must be 1-64 of [A-Za-z0-9_.-]");
                }
                check_attribution(c)?;
                crate::fraud::config::RuleOverride::check_all(&c.fraud_rules)
                    .map_err(Error::Invalid)
            }
            Entity::Link(l) => {
                check_id("link code", &l.code)?;
                if !self.affiliates.contains_key(&l.affiliate_id) {
                    return invalid(format!("unknown affiliate {:?}", l.affiliate_id));
                }
                if !self.campaigns.contains_key(&l.campaign_id) {
                    return invalid(format!("unknown campaign {:?}", l.campaign_id));
                }
                if let Some(old) = self.links.get(&l.code) {
                    if old.link.affiliate_id != l.affiliate_id
                        || old.link.campaign_id != l.campaign_id
                    {
                        return invalid(format!(
                            "link {:?} exists for another affiliate or campaign",
                            l.code
                        ));
                    }
                }
                if l.sub_ids.len() > SUB_IDS_MAX || l.sub_ids.iter().any(|s| s.len() > ID_LEN_MAX) {
                    return invalid(format!(
                        "at most {SUB_IDS_MAX} sub-ids of at most {ID_LEN_MAX} bytes"
                    ));
                }
                Ok(())
            }
            Entity::Postback(p) => {
                check_id("postback id", &p.id)?;
                if let Some(a) = &p.affiliate_id {
                    if !self.affiliates.contains_key(a) {
                        return invalid(format!("unknown affiliate {a:?}"));
                    }
                }
                let old_owner = self
                    .postbacks
                    .get(&p.id)
                    .map(|old| &old.affiliate_id)
                    .or_else(|| self.deleted_postbacks.get(&p.id));
                if old_owner.is_some_and(|o| *o != p.affiliate_id) {
                    return invalid(format!("postback {:?} belongs to another owner", p.id));
                }
                let siblings = self
                    .postbacks
                    .values()
                    .filter(|o| o.affiliate_id == p.affiliate_id && o.id != p.id)
                    .count();
                if siblings >= POSTBACKS_PER_OWNER_MAX {
                    return invalid(format!(
                        "at most {POSTBACKS_PER_OWNER_MAX} postbacks per owner"
                    ));
                }
                // The template must be a web URL once its macros are filled in.
                let sample = p.url.replace(['{', '}'], "");
                parse_web_url(&sample).map_err(Error::Invalid)?;
                if p.triggers.is_empty() {
                    return invalid("a postback needs at least one trigger");
                }
                if p.secret.len() < 16 || p.secret.len() > 128 {
                    return invalid("postback secret must be 16-128 bytes");
                }
                Ok(())
            }
            Entity::Plan(p) => {
                check_id("plan id", &p.id)?;
                if !self.campaigns.contains_key(&p.campaign_id) {
                    return invalid(format!("unknown campaign {:?}", p.campaign_id));
                }
                if let Some(a) = &p.affiliate_id {
                    if !self.affiliates.contains_key(a) {
                        return invalid(format!("unknown affiliate {a:?}"));
                    }
                }
                if p.effective_from < 0 {
                    return invalid("effective-from is Unix seconds, not negative");
                }
                p.to_plan().map(|_| ()).map_err(Error::Invalid)
            }
            Entity::Key(k) => {
                if k.key_sha256.len() != 64 || !k.key_sha256.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return invalid("key-sha256 must be 64 hex digits");
                }
                let owner_known = match k.role {
                    Role::Admin => true,
                    Role::Merchant => self.merchants.contains_key(&k.owner),
                    Role::Partner => self.affiliates.contains_key(&k.owner),
                };
                if !owner_known {
                    return invalid(format!(
                        "key owner {:?} is not a known {:?}",
                        k.owner, k.role
                    ));
                }
                Ok(())
            }
        }
    }

    /// Validates and applies an entity (to build a catalog outside a store, e.g. to check a
    /// configuration before anything starts).
    pub fn try_apply(&mut self, e: Entity) -> Result<()> {
        self.validate(&e)?;
        self.apply(e);
        Ok(())
    }

    /// Applies a validated entity.
    fn apply(&mut self, e: Entity) {
        match e {
            Entity::Affiliate(a) => {
                self.affiliates.insert(a.id.clone(), a);
            }
            Entity::Merchant(m) => {
                self.merchants.insert(m.id.clone(), m);
            }
            Entity::Campaign(c) => {
                let rt = Arc::new(CampaignRt {
                    destination: parse_web_url(&c.destination_url).expect("validated"),
                    fallback: c
                        .fallback_url
                        .as_deref()
                        .map(|f| parse_web_url(f).expect("validated")),
                    campaign: c,
                });
                // Links point at the new campaign snapshot.
                for l in self.links.values_mut() {
                    if l.link.campaign_id == rt.campaign.id {
                        *l = Arc::new(LinkRt {
                            link: l.link.clone(),
                            number: l.number,
                            campaign: rt.clone(),
                        });
                    }
                }
                self.campaigns.insert(rt.campaign.id.clone(), rt);
            }
            Entity::Link(l) => {
                let number = match self.links.get(&l.code) {
                    Some(old) => old.number,
                    None => {
                        self.link_numbers.push(l.code.clone());
                        (self.link_numbers.len() - 1) as u32
                    }
                };
                let campaign = self.campaigns[&l.campaign_id].clone();
                self.links.insert(
                    l.code.clone(),
                    Arc::new(LinkRt {
                        link: l,
                        number,
                        campaign,
                    }),
                );
            }
            Entity::Key(k) => {
                self.keys.insert(k.key_sha256.clone(), k);
            }
            Entity::Postback(p) => {
                self.deleted_postbacks.remove(&p.id);
                self.postbacks.insert(p.id.clone(), p);
            }
            Entity::Plan(p) => {
                self.plans.insert(p.id.clone(), p);
            }
        }
    }

    fn remove(&mut self, kind: &str, id: &str) {
        match kind {
            "affiliate" => drop(self.affiliates.remove(id)),
            "merchant" => drop(self.merchants.remove(id)),
            "campaign" => drop(self.campaigns.remove(id)),
            "link" => drop(self.links.remove(id)),
            "key" => drop(self.keys.remove(id)),
            "postback" => {
                if let Some(p) = self.postbacks.remove(id) {
                    self.deleted_postbacks.insert(p.id, p.affiliate_id);
                }
            }
            "plan" => drop(self.plans.remove(id)),
            _ => {}
        }
    }

    /// Checks that an entity may be deleted: only postbacks can be (every other kind is
    /// referenced by links, clicks or the ledger).
    pub fn validate_delete(&self, kind: &str, id: &str) -> Result<()> {
        if kind != "postback" {
            return invalid(format!("{kind}s cannot be deleted"));
        }
        if self.get(kind, id).is_none() {
            return invalid(format!("unknown {kind} {id:?}"));
        }
        Ok(())
    }

    /// The entity of `kind` and `id` as stored, if any.
    pub fn get(&self, kind: &str, id: &str) -> Option<Entity> {
        Some(match kind {
            "affiliate" => Entity::Affiliate(self.affiliates.get(id)?.clone()),
            "merchant" => Entity::Merchant(self.merchants.get(id)?.clone()),
            "campaign" => Entity::Campaign(self.campaigns.get(id)?.campaign.clone()),
            "link" => Entity::Link(self.links.get(id)?.link.clone()),
            "key" => Entity::Key(self.keys.get(id)?.clone()),
            "postback" => Entity::Postback(self.postbacks.get(id)?.clone()),
            "plan" => Entity::Plan(self.plans.get(id)?.clone()),
            _ => return None,
        })
    }

    /// The plan a conversion of `affiliate` in `campaign` at `at_s` (Unix seconds) earns
    /// under: the affiliate's own override if one is in effect, else the campaign's; of
    /// several in effect, the one effective latest (then the greatest id).
    pub fn plan_for(&self, campaign: &str, affiliate: &str, at_s: i64) -> Option<&CommissionPlan> {
        let in_effect = |own: bool| {
            self.plans
                .values()
                .filter(move |p| {
                    p.campaign_id == campaign
                        && p.effective_from <= at_s
                        && (p.affiliate_id.as_deref() == Some(affiliate)) == own
                        && (own || p.affiliate_id.is_none())
                })
                .max_by(|a, b| {
                    a.effective_from
                        .cmp(&b.effective_from)
                        .then(a.id.cmp(&b.id))
                })
        };
        in_effect(true).or_else(|| in_effect(false))
    }

    /// The default link code of an affiliate in a campaign.
    pub fn default_link_code(affiliate_id: &str, campaign_id: &str) -> String {
        let h = Sha256::digest(format!("{affiliate_id}\n{campaign_id}").as_bytes());
        h[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn check_id(what: &str, id: &str) -> Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        invalid(format!(
            "{what} {id:?} must be 1-{ID_LEN_MAX} of [A-Za-z0-9_.-]"
        ))
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return invalid("name must be 1-200 printable characters");
    }
    Ok(())
}

/// The entities partition's writer and the published catalog. See the module docs.
#[derive(Debug)]
pub struct EntityStore {
    /// Unique per store, so the per-thread snapshot cache never mixes two stores.
    id: u64,
    partition: Partition,
    writer: Mutex<Writer>,
    current: RwLock<Arc<Catalog>>,
    version: AtomicU64,
}

thread_local! {
    static CACHE: RefCell<Option<(u64, u64, Arc<Catalog>)>> = const { RefCell::new(None) };
}

static STORE_IDS: AtomicU64 = AtomicU64::new(1);

impl EntityStore {
    /// Rebuilds the catalog from the journal and takes the partition's writer.
    pub fn open(journal: &Journal) -> Result<EntityStore> {
        let partition = journal.partition(ENTITIES)?;
        partition.keep_forever();
        let mut catalog = Catalog::default();
        let mut reader = partition.reader()?;
        while let Some(rec) = reader.next()? {
            let Some(change) = rec.event::<EntityChange>() else {
                continue;
            };
            let kind = change.entity_kind.as_str();
            match change.op {
                clicktrail_storage::schema::ArchivedChangeOp::Delete => {
                    catalog.remove(kind, change.entity_id.as_str())
                }
                clicktrail_storage::schema::ArchivedChangeOp::Upsert => {
                    match Entity::from_json(kind, change.body_json.as_str()) {
                        Ok(e) if catalog.validate(&e).is_ok() => catalog.apply(e),
                        Ok(_) | Err(_) => log::error!(
                            "entities: skipping unreadable change at offset {} ({kind} {})",
                            rec.offset,
                            change.entity_id.as_str()
                        ),
                    }
                }
            }
        }
        let writer = partition.writer()?;
        Ok(EntityStore {
            id: STORE_IDS.fetch_add(1, Ordering::Relaxed),
            partition,
            writer: Mutex::new(writer),
            current: RwLock::new(Arc::new(catalog)),
            version: AtomicU64::new(1),
        })
    }

    /// The current catalog.
    pub fn snapshot(&self) -> Arc<Catalog> {
        self.current.read().unwrap().clone()
    }

    /// Runs `f` on the current catalog through this thread's cached snapshot: one atomic
    /// load when nothing changed.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&Catalog) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        CACHE.with(|cell| {
            let mut cache = cell.borrow_mut();
            let fresh = matches!(&*cache, Some((id, v, _)) if *id == self.id && *v == version);
            if !fresh {
                *cache = Some((self.id, version, self.snapshot()));
            }
            f(&cache.as_ref().unwrap().2)
        })
    }

    /// Validates and durably records an entity; returns `false` when it was already stored
    /// exactly so (nothing written).
    pub async fn upsert(&self, actor: &str, entity: Entity) -> Result<bool> {
        let end = {
            let mut writer = self.writer.lock().unwrap();
            let current = self.snapshot();
            current.validate(&entity)?;
            if current.get(entity.kind(), entity.id()).as_ref() == Some(&entity) {
                return Ok(false);
            }
            let change = EntityChange {
                at_us: now_us(),
                actor: actor.into(),
                entity_kind: entity.kind().into(),
                entity_id: entity.id().into(),
                op: ChangeOp::Upsert,
                body_json: entity.to_json(),
            };
            let appended = writer.append_event(None, &change)?;
            let mut next = (*current).clone();
            next.apply(entity);
            *self.current.write().unwrap() = Arc::new(next);
            self.version.fetch_add(1, Ordering::AcqRel);
            appended.end
        };
        self.partition.wait_durable(end).await?;
        Ok(true)
    }

    /// Durably deletes an entity (see [`Catalog::validate_delete`]: postbacks only);
    /// replayed on open like any change.
    pub async fn delete(&self, actor: &str, kind: &str, id: &str) -> Result<()> {
        let end = {
            let mut writer = self.writer.lock().unwrap();
            let current = self.snapshot();
            current.validate_delete(kind, id)?;
            let change = EntityChange {
                at_us: now_us(),
                actor: actor.into(),
                entity_kind: kind.into(),
                entity_id: id.into(),
                op: ChangeOp::Delete,
                body_json: String::new(),
            };
            let appended = writer.append_event(None, &change)?;
            let mut next = (*current).clone();
            next.remove(kind, id);
            *self.current.write().unwrap() = Arc::new(next);
            self.version.fetch_add(1, Ordering::AcqRel);
            appended.end
        };
        self.partition.wait_durable(end).await?;
        Ok(())
    }
}

/// Current UTC time in microseconds.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_are_lower_hex_sha256() {
        // FIPS 180-2's "abc" vector: stored key hashes must not change with the encoder.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn demo() -> Vec<Entity> {
        vec![
            Entity::Merchant(Merchant {
                id: "m".into(),
                name: "M".into(),
                conversion_pixel: false,
            }),
            Entity::Affiliate(Affiliate {
                id: "a".into(),
                name: "A".into(),
                status: Status::Active,
                payout_provider: None,
                payout_account: None,
                payout_hold: false,
                sites: vec![],
                email: None,
                ips: vec![],
            }),
            Entity::Campaign(Campaign {
                id: "c".into(),
                merchant_id: "m".into(),
                name: "C".into(),
                destination_url: "https://shop.example/landing?x=1".into(),
                deep_link_hosts: vec!["shop.example".into(), ".cdn.example".into()],
                cookie_window_days: 30,
                click_id_param: "click_id".into(),
                status: Status::Active,
                fallback_url: None,
                ..Campaign::defaults()
            }),
            Entity::Link(Link {
                code: "demo".into(),
                affiliate_id: "a".into(),
                campaign_id: "c".into(),
                sub_ids: vec![],
            }),
            Entity::Key(ApiKey::new("secret-admin", Role::Admin, "admin")),
        ]
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        actix_rt::System::new().block_on(f)
    }

    #[test]
    fn changes_are_journaled_validated_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Default::default()).unwrap();
        let store = EntityStore::open(&j).unwrap();
        for e in demo() {
            assert!(block_on(store.upsert("test", e.clone())).unwrap());
            assert!(
                !block_on(store.upsert("test", e)).unwrap(),
                "unchanged: nothing written"
            );
        }
        let bad_link = Entity::Link(Link {
            code: "x".into(),
            affiliate_id: "nobody".into(),
            campaign_id: "c".into(),
            sub_ids: vec![],
        });
        assert!(matches!(
            block_on(store.upsert("t", bad_link)),
            Err(Error::Invalid(_))
        ));
        let end = j.partition(ENTITIES).unwrap().end();
        let n = store.with(|c| c.link("demo").unwrap().number);
        assert_eq!(n, 0);
        assert_eq!(
            store.with(|c| c.key("secret-admin").map(|k| k.role)),
            Some(Role::Admin)
        );
        drop(store);
        let store = EntityStore::open(&j).unwrap();
        assert_eq!(j.partition(ENTITIES).unwrap().end(), end);
        let snap = store.snapshot();
        assert_eq!(
            snap.links["demo"].campaign.destination.host_str(),
            Some("shop.example")
        );
        assert!(snap.key("secret-admin").is_some());
        assert!(snap.key("wrong").is_none());
        j.close().unwrap();
    }

    #[test]
    fn plans_are_validated_journaled_and_chosen_by_override_then_date() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Default::default()).unwrap();
        let store = EntityStore::open(&j).unwrap();
        for e in demo() {
            block_on(store.upsert("test", e)).unwrap();
        }
        let plan = |id: &str, json: &str| -> Entity {
            let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
            v["id"] = id.into();
            Entity::Plan(serde_json::from_value(v).unwrap())
        };
        let good = [
            plan("base", r#"{"campaign-id":"c","percent-bps":1000}"#),
            plan(
                "base-2027",
                r#"{"campaign-id":"c","percent-bps":1200,"effective-from":1798761600}"#,
            ),
            plan(
                "a-own",
                r#"{"campaign-id":"c","affiliate-id":"a","flat-minor":{"sale":500},"effective-from":1000}"#,
            ),
            plan(
                "tiered",
                r#"{"campaign-id":"c","effective-from":5,"tiers":{"basis":"conversions","mode":"bracket","brackets":[{"up-to":50,"bps":1000},{"bps":1500}]},"recurring-bps":500,"recurring-months":12,"bonus":{"basis":"revenue","threshold":100000,"amount-minor":5000}}"#,
            ),
        ];
        for p in good {
            assert!(block_on(store.upsert("test", p)).unwrap());
        }
        let bad = [
            r#"{"campaign-id":"nope","percent-bps":1000}"#,
            r#"{"campaign-id":"c","affiliate-id":"nobody","percent-bps":1000}"#,
            r#"{"campaign-id":"c"}"#,
            r#"{"campaign-id":"c","percent-bps":1000,"flat-minor":{"sale":1}}"#,
            r#"{"campaign-id":"c","percent-bps":100001}"#,
            r#"{"campaign-id":"c","flat-minor":{"sale":-1}}"#,
            r#"{"campaign-id":"c","percent-bps":10,"recurring-months":3}"#,
            r#"{"campaign-id":"c","tiers":{"basis":"revenue","mode":"bracket","brackets":[{"up-to":5,"bps":1}]}}"#,
            r#"{"campaign-id":"c","percent-bps":10,"effective-from":-1}"#,
        ];
        for json in bad {
            assert!(
                matches!(
                    block_on(store.upsert("t", plan("bad", json))),
                    Err(Error::Invalid(_))
                ),
                "{json}"
            );
        }
        let snap = store.snapshot();
        assert!(
            snap.get("plan", "bad").is_none(),
            "nothing recorded for a refused plan"
        );
        let pick = |aff: &str, at: i64| snap.plan_for("c", aff, at).map(|p| p.id.clone());
        assert_eq!(pick("other", 0), Some("base".into()));
        assert_eq!(
            pick("other", 10),
            Some("tiered".into()),
            "the latest in effect"
        );
        assert_eq!(pick("other", 1_798_761_600), Some("base-2027".into()));
        assert_eq!(
            pick("a", 999),
            Some("tiered".into()),
            "override not yet in effect"
        );
        assert_eq!(
            pick("a", 1000),
            Some("a-own".into()),
            "the affiliate's override first"
        );
        assert_eq!(snap.plan_for("elsewhere", "a", 0), None);
        assert!(snap.plans["tiered"].to_plan().unwrap().recurring.is_some());
        drop(store);
        let store = EntityStore::open(&j).unwrap();
        assert_eq!(store.snapshot().plans.len(), 4, "replayed from the journal");
        j.close().unwrap();
    }

    #[test]
    fn postbacks_are_disabled_deleted_and_replayed_so() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Default::default()).unwrap();
        let store = EntityStore::open(&j).unwrap();
        for e in demo() {
            block_on(store.upsert("test", e)).unwrap();
        }
        // A record from before `enabled` existed reads as enabled, and is written back so.
        let old = r#"{"id":"p1","affiliate-id":"a","url":"https://r.example/{click_id}",
            "triggers":["conversion.created"],"secret":"0123456789abcdef"}"#;
        let Ok(Entity::Postback(mut p)) = Entity::from_json("postback", old) else {
            panic!("old postback record does not read")
        };
        assert!(p.enabled);
        assert!(!Entity::Postback(p.clone()).to_json().contains("enabled"));
        block_on(store.upsert("test", Entity::Postback(p.clone()))).unwrap();
        p.enabled = false;
        block_on(store.upsert("test", Entity::Postback(p.clone()))).unwrap();
        let mut p2 = p.clone();
        p2.id = "p2".into();
        block_on(store.upsert("test", Entity::Postback(p2))).unwrap();
        assert!(matches!(
            block_on(store.delete("t", "affiliate", "a")),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            block_on(store.delete("t", "postback", "nope")),
            Err(Error::Invalid(_))
        ));
        block_on(store.delete("t", "postback", "p2")).unwrap();
        let mut global = p.clone();
        global.id = "p2".into();
        global.affiliate_id = None;
        assert!(
            matches!(
                block_on(store.upsert("t", Entity::Postback(global))),
                Err(Error::Invalid(_))
            ),
            "a deleted postback's id stays with its owner"
        );
        drop(store);
        let store = EntityStore::open(&j).unwrap();
        let snap = store.snapshot();
        assert!(!snap.postbacks["p1"].enabled, "disabled after a restart");
        assert!(
            !snap.postbacks.contains_key("p2"),
            "deleted after a restart"
        );
        assert_eq!(snap.deleted_postbacks["p2"].as_deref(), Some("a"));
        j.close().unwrap();
    }

    #[test]
    fn deep_link_host_rules() {
        let c = match &demo()[2] {
            Entity::Campaign(c) => c.clone(),
            _ => unreachable!(),
        };
        let rt = CampaignRt {
            destination: parse_web_url(&c.destination_url).unwrap(),
            fallback: None,
            campaign: c,
        };
        assert!(rt.allows_host("shop.example"));
        assert!(!rt.allows_host("evil-shop.example"));
        assert!(!rt.allows_host("shop.example.evil.com"));
        assert!(rt.allows_host("img.cdn.example"));
        assert!(rt.allows_host("cdn.example"));
        assert!(!rt.allows_host("xcdn.example"));
    }

    #[test]
    fn urls_must_be_web_urls_without_credentials() {
        assert!(parse_web_url("https://shop.example/a?b=c").is_ok());
        for bad in [
            "javascript:alert(1)",
            "data:text/html,x",
            "ftp://x/",
            "https://u:p@x/",
            "/relative",
            "https://",
        ] {
            assert!(parse_web_url(bad).is_err(), "{bad}");
        }
    }
}
