//! Configuration: one TOML file (`config/clicktrail.toml` documents every key), one serde
//! struct per concern, validated before anything starts.
//!
//! Secrets may be given as `"env:NAME"`, which reads environment variable `NAME` at start
//! (missing is fatal). The demo configuration (`config/demo.toml`) is compiled in, so a
//! bare `clicktrail serve` runs without any file.

mod fraud;

pub use fraud::FraudSection;

use crate::edge::request::Cidr;
use clicktrail_actors::catalog::{
    Affiliate, ApiKey, Campaign, Catalog, CommissionPlan, Entity, Link, Merchant, Role,
};
use clicktrail_actors::system::{SystemConfig, INGEST_SHARDS_MAX};
use clicktrail_actors::SupervisorConfig;
use clicktrail_storage::JournalConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The demo configuration, compiled in.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

/// Secrets that ship in the demo configuration; a non-demo configuration may not use them.
pub const DEMO_SECRETS: [&str; 4] = [
    "demo-click-id-key-change-me-000000",
    "demo-admin-key",
    "demo-merchant-key",
    "demo-partner-key",
];

/// Shortest deadline handed to actix-http (header, keep-alive, disconnect): its clock lags
/// up to 500 ms (see `Config::validate`).
pub const ACTIX_TIMEOUT_MS_MIN: u64 = 1000;

/// Shortest API key accepted outside demo mode.
pub const API_KEY_LEN_MIN: usize = 16;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A size in bytes, written as a number or with a unit: `"64MiB"`, `"512KiB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_size(&t).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "bad size {t:?}: use e.g. 65536, \"64KiB\", \"64MiB\""
                ))
            }),
        }
    }
}

fn parse_size(t: &str) -> Option<u64> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// `[server]`: the HTTP edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// HTTP worker threads; 0 means two per core. Default: 0. Bounds: 0 ..= 256.
    pub workers: usize,
    /// Most concurrent connections per worker. Default: 25000. Bounds: 1 ..= 1000000.
    pub connections_max: usize,
    /// Time for in-flight requests and actors to finish on shutdown. Default: 10000 ms.
    /// Bounds: 100 ..= 600000.
    pub shutdown_deadline_ms: u64,
    /// Deadline for a connection's first request head (actix `client_request_timeout`),
    /// from accept; a late head gets 408 and the connection closes. Default: 5000 ms.
    /// Bounds: 1000 ..= 60000.
    pub header_timeout_ms: u64,
    /// Deadline for a request body, from the moment its head was read; a body still
    /// incomplete then gets 408 and the connection closes. Default: 10000 ms. Bounds:
    /// 100 ..= 300000.
    pub body_timeout_ms: u64,
    /// How long an idle keep-alive connection waits for its next request (actix
    /// `keep_alive`); then it closes. Default: 5000 ms. Bounds: 1000 ..= 300000.
    pub keep_alive_timeout_ms: u64,
    /// How long closing a connection may take: lingering to discard an unread body after
    /// the answer, and the TCP shutdown (actix `client_disconnect_timeout`). Default:
    /// 1000 ms. Bounds: 1000 ..= 60000.
    pub disconnect_timeout_ms: u64,
    /// Most open connections from one peer address; requests on more get 429 with
    /// `Connection: close`. Peers in `tracking.trusted-proxies` are exempt (they carry many
    /// clients). 0 turns the limit off. Default: 256. Bounds: 0 ..= 1000000.
    pub connections_per_ip_max: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().unwrap(),
            workers: 0,
            connections_max: 25_000,
            shutdown_deadline_ms: 10_000,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            keep_alive_timeout_ms: 5_000,
            disconnect_timeout_ms: 1_000,
            connections_per_ip_max: 256,
        }
    }
}

impl ServerConfig {
    /// The deadlines and limits of the HTTP edge.
    pub fn edge_limits(&self) -> crate::http::EdgeLimits {
        crate::http::EdgeLimits {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            keep_alive_timeout: Duration::from_millis(self.keep_alive_timeout_ms),
            disconnect_timeout: Duration::from_millis(self.disconnect_timeout_ms),
            connections_per_ip_max: self.connections_per_ip_max,
        }
    }
}

/// `[journal]`: where and how events are stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct JournalSection {
    /// Data directory (the journal lives in `<data-dir>/journal`). Default: `./data`.
    pub data_dir: PathBuf,
    /// Bytes per segment file once a partition has grown (the first is 4MiB, quadrupling at
    /// each roll). Default: 64MiB. Bounds: 64KiB ..= 1GiB, a multiple of 4KiB.
    pub segment_size: ByteSize,
    /// Largest record payload. Default: 1MiB. Bounds: 1KiB ..= 16MiB, fits in a segment.
    pub record_size_max: ByteSize,
    /// Most partitions. Default: 256. Bounds: 1 ..= 4096.
    pub partitions_max: usize,
    /// Most concurrent readers per partition. Default: 64. Bounds: 1 ..= 1024.
    pub readers_max: usize,
    /// Group-commit interval. Default: 2 ms. Bounds: 1 ..= 1000.
    pub flush_interval_ms: u64,
    /// How often partitions nobody waits on are synced. Default: 100 ms, or
    /// flush-interval-ms when that is longer. Bounds: flush-interval-ms ..= 60000.
    pub background_sync_interval_ms: Option<u64>,
    /// How often retention removes segments every consumer has passed; 0 keeps everything.
    /// Default: 0. Bounds: 0 or 1000 ..= 86400000.
    pub retention_interval_ms: u64,
}

impl Default for JournalSection {
    fn default() -> Self {
        let j = JournalConfig::default();
        JournalSection {
            data_dir: PathBuf::from("./data"),
            segment_size: ByteSize(j.segment_size),
            record_size_max: ByteSize(j.record_size_max as u64),
            partitions_max: j.partitions_max,
            readers_max: j.readers_max,
            flush_interval_ms: j.flush_interval.as_millis() as u64,
            background_sync_interval_ms: None,
            retention_interval_ms: 0,
        }
    }
}

/// `[actors]`: ingest shards and supervision.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ActorsSection {
    /// Ingest shards, one journal partition each: shard 0 takes conversions and the records
    /// about them, the others clicks and impressions. Default: 2. Bounds: 1 ..= 64.
    pub ingest_shards: usize,
    /// Bounded hand-off per shard; when full the edge answers 503. Default: 4096.
    /// Bounds: 1 ..= 1000000.
    pub ingest_queue_max: usize,
    /// First restart delay (doubles per restart). Default: 100 ms. Bounds: 1 ..= 60000.
    pub restart_backoff_initial_ms: u64,
    /// Longest restart delay. Default: 10000 ms. Bounds: >= the initial delay, <= 600000.
    pub restart_backoff_max_ms: u64,
    /// Restarts within the window before the supervisor gives up. Default: 5. Bounds: 1 ..= 1000.
    pub restarts_max: usize,
    /// Window for counting restarts. Default: 60000 ms. Bounds: 1000 ..= 86400000.
    pub restart_window_ms: u64,
}

impl Default for ActorsSection {
    fn default() -> Self {
        let s = SystemConfig::default();
        ActorsSection {
            ingest_shards: s.ingest_shards,
            ingest_queue_max: s.ingest_queue_max,
            restart_backoff_initial_ms: s.supervisor.restart_backoff_initial.as_millis() as u64,
            restart_backoff_max_ms: s.supervisor.restart_backoff_max.as_millis() as u64,
            restarts_max: s.supervisor.restarts_max,
            restart_window_ms: s.supervisor.restart_window.as_millis() as u64,
        }
    }
}

/// `[node]`: this node's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeSection {
    /// Node id, encoded in every click id so many nodes can share one key. Default: 1.
    /// Bounds: 0 ..= 65535.
    pub id: u16,
    /// Demo mode: demo entities and keys are allowed. Default: false (the compiled-in demo
    /// configuration sets it to true).
    pub demo: bool,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection { id: 1, demo: false }
    }
}

/// `[secrets]`: keys; each may be `"env:NAME"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SecretsSection {
    /// HMAC-SHA256 key that authenticates click ids. Required; at least 32 bytes.
    pub click_id_key: String,
    /// HMAC-SHA256 key of buyers' e-mail hashes (conversions store only the hash).
    /// Optional, at least 32 bytes; default: derived from `click-id-key`. Changing it (or
    /// the click-id key it is derived from) makes new hashes differ from stored ones.
    pub email_hash_key: Option<String>,
}

/// Shortest `secrets.email-hash-key`.
pub const EMAIL_HASH_KEY_LEN_MIN: usize = 32;

/// `[import]`: `POST /api/v1/import`, history from another tracker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImportSection {
    /// Oldest event accepted, in days before now. Default: 400. Bounds: 1 ..= 3660.
    pub max_age_days: u32,
    /// Largest import body. Default: 64MiB. Bounds: 1KiB ..= 1GiB.
    pub max_bytes: ByteSize,
    /// Most lines in one import (blank ones included). Default: 200000. Bounds: 1 ..=
    /// 10000000.
    pub max_lines: usize,
}

impl Default for ImportSection {
    fn default() -> Self {
        ImportSection {
            max_age_days: 400,
            max_bytes: ByteSize(64 << 20),
            max_lines: 200_000,
        }
    }
}

/// Whether stored client IPs are cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IpTruncation {
    /// Keep the full address.
    #[default]
    None,
    /// IPv4 to /24, IPv6 to /48.
    Partial,
}

/// What is kept of a click when the browser opts out (`Sec-GPC: 1` or `DNT: 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OptOutPolicy {
    /// No fingerprint; everything else is kept.
    #[default]
    NoFingerprint,
    /// No fingerprint, IP, user agent, referrer, language or client hints: only the link,
    /// sub-ids, time and the first-party cookie the attribution needs.
    Minimal,
}

/// `[tracking]`: what the click edge records.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrackingSection {
    /// Proxies (addresses or CIDRs) whose `X-Forwarded-For` is believed. Default: none.
    pub trusted_proxies: Vec<String>,
    /// `none` or `partial` (IPv4 /24, IPv6 /48). Default: `none`.
    pub ip_truncation: IpTruncation,
    /// `no-fingerprint` or `minimal`. Default: `no-fingerprint`.
    pub opt_out: OptOutPolicy,
    /// Name of the first-party visitor cookie. Default: `ct_vid`.
    pub cookie_name: String,
}

impl Default for TrackingSection {
    fn default() -> Self {
        TrackingSection {
            trusted_proxies: Vec::new(),
            ip_truncation: IpTruncation::None,
            opt_out: OptOutPolicy::NoFingerprint,
            cookie_name: "ct_vid".into(),
        }
    }
}

/// `[postbacks]`: delivery of postbacks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PostbacksSection {
    /// Allow destinations on loopback/private/link-local addresses. Default: false (in
    /// demo mode loopback is allowed anyway, to try postbacks against a local receiver).
    /// `serve --allow-private-postbacks` or `CLICKTRAIL_ALLOW_PRIVATE_POSTBACKS=1` sets it.
    pub allow_private_destinations: bool,
    /// Per-request timeout. Default: 5000 ms. Bounds: 100 ..= 60000.
    pub timeout_ms: u64,
    /// Requests in flight. Default: 8. Bounds: 1 ..= 256.
    pub concurrency: usize,
    /// Requests in flight per host. Default: 2. Bounds: 1 ..= concurrency.
    pub per_host: usize,
    /// First retry delay, doubling. Default: 1000 ms. Bounds: 10 ..= 600000.
    pub backoff_initial_ms: u64,
    /// Longest retry delay. Default: 600000 ms. Bounds: >= backoff-initial-ms.
    pub backoff_max_ms: u64,
    /// Dead-letter once the first attempt is this old. Default: 86400 s. Bounds: 1 ..= 2592000.
    pub max_age_s: u64,
}

impl Default for PostbacksSection {
    fn default() -> Self {
        PostbacksSection {
            allow_private_destinations: false,
            timeout_ms: 5000,
            concurrency: 8,
            per_host: 2,
            backoff_initial_ms: 1000,
            backoff_max_ms: 600_000,
            max_age_s: 86_400,
        }
    }
}

/// `[program]`: how commissions are approved.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProgramSection {
    /// Days a commission stays pending before it is approved (refunds come back in that
    /// time). Default: 30. Bounds: 0 ..= 365.
    pub hold_days: u32,
    /// `hold`: the hold period or the merchant's approval approves; `performance`: only a
    /// retention window of `hold-days` without a full reversal does. Default: hold.
    pub verification: clicktrail_actors::ledger::Verification,
    /// A new commission is held until the fraud scorer's verdict on its conversion (about
    /// a second; at most an hour), so neither the hold period nor the merchant's approval
    /// can pay it first. Default: true.
    pub await_fraud_verdict: bool,
}

impl Default for ProgramSection {
    fn default() -> Self {
        ProgramSection {
            hold_days: clicktrail_actors::ledger::HOLD_DAYS_DEFAULT,
            verification: Default::default(),
            await_fraud_verdict: true,
        }
    }
}

/// `[payouts.stripe]`, `[payouts.paypal]`, `[payouts.wise]`: a provider's API and fee.
/// Only configured providers pay; a partner of another provider waits (logged).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProviderSection {
    /// Default: the provider's live API.
    pub base_url: Option<String>,
    /// Stripe: the secret key (`env:STRIPE_SECRET_KEY`).
    pub secret_key: Option<String>,
    /// PayPal: REST app credentials.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Wise: API token and business profile id.
    pub api_token: Option<String>,
    pub profile_id: Option<String>,
    /// Fee in basis points of the payout, plus a fixed part, capped (0: no cap). Defaults:
    /// Stripe 25 bps + 25; PayPal 200 bps capped at 100; Wise 50 bps.
    pub fee_bps: Option<u32>,
    pub fee_fixed_minor: Option<i64>,
    pub fee_cap_minor: Option<i64>,
    /// How long an unsettled payout may be retried under the same key before it is held
    /// for an admin. Default: 82800 (23 h; PayPal 2505600, 29 days). Bounds: 1 ..= the
    /// default (the provider forgets keys after it).
    pub idempotency_window_s: Option<u64>,
}

/// `[payouts]`: when and how partners are paid.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PayoutsSection {
    /// `net-15`, `net-30`, `day-1` .. `day-28` or `manual`. Default: net-30.
    pub schedule: String,
    /// The program's time zone: `UTC`, an offset (`+02:00`) or an IANA name
    /// (`Europe/Berlin`, daylight saving time included). Default: UTC.
    pub time_zone: String,
    /// `auto` or `admin` (each batch waits for `POST /api/v1/payouts/batches/{id}/approve`).
    /// Default: auto.
    pub approval: String,
    /// Smallest payout per currency in minor units, e.g. `{ EUR = 5000 }`. Default: none.
    pub minimum: BTreeMap<String, i64>,
    /// Per provider call. Default: 30000 ms. Bounds: 100 ..= 300000.
    pub timeout_ms: u64,
    /// First retry delay of an unsettled payout, doubling. Default: 5000 ms.
    pub backoff_initial_ms: u64,
    /// Longest retry delay. Default: 3600000 ms.
    pub backoff_max_ms: u64,
    pub stripe: Option<ProviderSection>,
    pub paypal: Option<ProviderSection>,
    pub wise: Option<ProviderSection>,
}

impl Default for PayoutsSection {
    fn default() -> Self {
        PayoutsSection {
            schedule: "net-30".into(),
            time_zone: "UTC".into(),
            approval: "auto".into(),
            minimum: BTreeMap::new(),
            timeout_ms: 30_000,
            backoff_initial_ms: 5000,
            backoff_max_ms: 3_600_000,
            stripe: None,
            paypal: None,
            wise: None,
        }
    }
}

impl PayoutsSection {
    /// The scheduler's settings, secrets resolved, or why they make no sense.
    pub fn to_config(&self) -> Result<clicktrail_actors::payout::PayoutConfig, ConfigError> {
        use clicktrail_actors::payout::{self, providers::ProviderConfig, providers::ProviderKind};
        let bad = |m: String| ConfigError::Invalid(format!("payouts: {m}"));
        let schedule = payout::Schedule::parse(&self.schedule).map_err(bad)?;
        let zone = payout::tz::Zone::load(&self.time_zone).map_err(bad)?;
        let admin_approval = match self.approval.as_str() {
            "auto" => false,
            "admin" => true,
            other => return Err(bad(format!("approval {other:?}: auto or admin"))),
        };
        for (c, m) in &self.minimum {
            if clicktrail_storage::money::exponent(c).is_none() || *m < 0 {
                return Err(bad(format!(
                    "minimum {c} = {m}: a known currency and a non-negative amount"
                )));
            }
        }
        if !(100..=300_000).contains(&self.timeout_ms)
            || self.backoff_initial_ms == 0
            || self.backoff_max_ms < self.backoff_initial_ms
            || self.backoff_max_ms > 86_400_000
        {
            return Err(bad(
                "timeout-ms must be 100..=300000, backoff-initial-ms 1..=backoff-max-ms, backoff-max-ms at most 86400000".into(),
            ));
        }
        let mut providers = BTreeMap::new();
        for (kind, section) in [
            (ProviderKind::Stripe, &self.stripe),
            (ProviderKind::Paypal, &self.paypal),
            (ProviderKind::Wise, &self.wise),
        ] {
            let Some(p) = section else { continue };
            let name = kind.name();
            let mut c = ProviderConfig::default_for(kind);
            if let Some(u) = &p.base_url {
                clicktrail_actors::catalog::parse_web_url(u)
                    .map_err(|e| bad(format!("{name}.base-url: {e}")))?;
                c.base_url = u.clone();
            }
            let secret = |field: &str, v: &Option<String>| -> Result<String, ConfigError> {
                let v = v
                    .as_deref()
                    .ok_or_else(|| bad(format!("{name}.{field} is required")))?;
                resolve_secret(&format!("payouts.{name}.{field}"), v)
            };
            match kind {
                ProviderKind::Stripe => c.credentials = secret("secret-key", &p.secret_key)?,
                ProviderKind::Paypal => {
                    c.credentials = format!(
                        "{}:{}",
                        secret("client-id", &p.client_id)?,
                        secret("client-secret", &p.client_secret)?
                    )
                }
                ProviderKind::Wise => {
                    c.credentials = secret("api-token", &p.api_token)?;
                    c.profile_id = secret("profile-id", &p.profile_id)?;
                    if !c.profile_id.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad("wise.profile-id must be numeric".into()));
                    }
                }
            }
            if let Some(v) = p.fee_bps {
                c.fee_bps = v;
            }
            if let Some(v) = p.fee_fixed_minor {
                c.fee_fixed_minor = v;
            }
            if let Some(v) = p.fee_cap_minor {
                c.fee_cap_minor = v;
            }
            if let Some(w) = p.idempotency_window_s {
                if w == 0 || Duration::from_secs(w) > c.idempotency_window {
                    return Err(bad(format!(
                        "{name}.idempotency-window-s must be 1..={}",
                        c.idempotency_window.as_secs()
                    )));
                }
                c.idempotency_window = Duration::from_secs(w);
            }
            if c.fee_bps > 10_000 || c.fee_fixed_minor < 0 || c.fee_cap_minor < 0 {
                return Err(bad(format!(
                    "{name}: fees must be 0..=10000 bps and non-negative"
                )));
            }
            providers.insert(kind, c);
        }
        Ok(payout::PayoutConfig {
            schedule,
            zone,
            admin_approval,
            minimum: self.minimum.clone(),
            providers,
            timeout: Duration::from_millis(self.timeout_ms),
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            // Read from the data directory when the server starts (`server::installation_id`).
            installation_id: String::new(),
        })
    }
}

/// `[conversions]`: matching.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConversionsSection {
    /// How far back a fingerprint match may reach; shorter than cookie windows because a
    /// fingerprint is a weaker signal. Default: 24. Bounds: 1 ..= 720.
    pub fingerprint_window_hours: u64,
    /// Most clicks the recent-click index keeps whole in memory (about 300 bytes each);
    /// older ones are read back from the journal when needed (postback sub-ids,
    /// fingerprint matches). `/metrics`: `clicktrail_click_index_span_seconds`.
    /// Default: 200000. Bounds: 1000 ..= 50000000.
    pub click_index_max: usize,
    /// Most fingerprinted clicks remembered for fingerprint matches (under 80 bytes each).
    /// Matches reach back this many clicks, whatever `fingerprint-window-hours` says:
    /// 1,000,000 is about 2.8 hours at 100 fingerprinted clicks/s. `/metrics`:
    /// `clicktrail_fingerprint_index_span_seconds`. Default: 1000000. Bounds: 1000 ..=
    /// 200000000.
    pub fingerprint_index_max: usize,
}

impl Default for ConversionsSection {
    fn default() -> Self {
        ConversionsSection {
            fingerprint_window_hours: 24,
            click_index_max: clicktrail_actors::clicks::CLICKS_MAX,
            fingerprint_index_max: clicktrail_actors::clicks::FINGERPRINTS_MAX,
        }
    }
}

/// `[attribution]`: the journey store's bounds and the refit schedule (the model per
/// campaign is a campaign setting, `attribution-model`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AttributionSection {
    /// Most touches per journey, oldest dropped. Default: 32. Bounds: 1 ..= 256.
    pub touchpoints_max: usize,
    /// Most open journeys in memory (about 400 bytes each with a few touches; `/metrics`:
    /// `clicktrail_attribution_journey_bytes`); past it the journeys closest to their end
    /// end first. Default: 1000000. Bounds: 100 ..= 100000000.
    pub journeys_max: usize,
    /// Most distinct paths per campaign kept for training. Default: 200000.
    pub training_paths_max: usize,
    /// Seconds between refits of data-driven models (0: only on demand). Default: 86400.
    pub refit_interval_s: u64,
    /// Exact Shapley values up to this many channels in a journey, sampled above.
    /// Default: 15. Bounds: 1 ..= 20.
    pub shapley_exact_max: usize,
}

impl Default for AttributionSection {
    fn default() -> Self {
        let d = clicktrail_actors::attribution::AttributionConfig::default();
        AttributionSection {
            touchpoints_max: d.touchpoints_max,
            journeys_max: d.journeys_max,
            training_paths_max: d.training_paths_max,
            refit_interval_s: d.refit_interval_s,
            shapley_exact_max: d.shapley_exact_max,
        }
    }
}

impl AttributionSection {
    pub fn to_config(&self) -> clicktrail_actors::attribution::AttributionConfig {
        clicktrail_actors::attribution::AttributionConfig {
            touchpoints_max: self.touchpoints_max,
            journeys_max: self.journeys_max,
            training_paths_max: self.training_paths_max,
            refit_interval_s: self.refit_interval_s,
            shapley_exact_max: self.shapley_exact_max,
            training_window_us: None,
        }
    }
}

/// `[[keys]]`: an API key from the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KeyConfig {
    pub role: Role,
    /// Merchant id (merchant keys), affiliate id (partner keys) or `admin`.
    pub owner: String,
    /// The secret, or `"env:NAME"`.
    pub key: String,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub journal: JournalSection,
    pub actors: ActorsSection,
    pub node: NodeSection,
    pub secrets: SecretsSection,
    pub tracking: TrackingSection,
    pub postbacks: PostbacksSection,
    pub conversions: ConversionsSection,
    pub program: ProgramSection,
    pub payouts: PayoutsSection,
    pub attribution: AttributionSection,
    pub fraud: FraudSection,
    pub import: ImportSection,
    /// Entities loaded at start (recorded in the journal as changes by "config").
    pub merchants: Vec<Merchant>,
    pub affiliates: Vec<Affiliate>,
    pub campaigns: Vec<Campaign>,
    pub links: Vec<Link>,
    /// Commission plans (`[[plans]]`).
    pub plans: Vec<CommissionPlan>,
    pub keys: Vec<KeyConfig>,
}

/// Resolves an `"env:NAME"` secret; other values are literal.
fn resolve_secret(key: &str, value: &str) -> Result<String, ConfigError> {
    match value.strip_prefix("env:") {
        Some(var) => std::env::var(var).map_err(|_| {
            ConfigError::Invalid(format!(
                "secrets.{key} names environment variable {var}, which is not set"
            ))
        }),
        None => Ok(value.to_string()),
    }
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(msg()))
    }
}

impl Config {
    /// Parses TOML text, resolves secrets and validates; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut c: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(format!("{origin}: {e}")))?;
        c.secrets.click_id_key = resolve_secret("click-id-key", &c.secrets.click_id_key)?;
        if let Some(k) = &c.secrets.email_hash_key {
            c.secrets.email_hash_key = Some(resolve_secret("email-hash-key", k)?);
        }
        for k in &mut c.keys {
            k.key = resolve_secret("keys.key", &k.key)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Loads a file, or the compiled-in demo configuration when `path` is `None`.
    pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::from_toml(DEMO_TOML, "built-in demo configuration"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.into(),
                    source,
                })?;
                Config::from_toml(&text, &p.display().to_string())
            }
        }
    }

    /// Checks every bound and contradiction; the first one found is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.attribution
            .to_config()
            .check()
            .map_err(ConfigError::Invalid)?;
        self.fraud
            .to_config(Vec::new())
            .map_err(ConfigError::Invalid)?;
        let (s, j, a) = (&self.server, &self.journal, &self.actors);
        check(s.workers <= 256, || "server.workers must be 0..=256".into())?;
        check((1..=1_000_000).contains(&s.connections_max), || {
            "server.connections-max must be 1..=1000000".into()
        })?;
        check((100..=600_000).contains(&s.shutdown_deadline_ms), || {
            "server.shutdown-deadline-ms must be 100..=600000".into()
        })?;
        // actix-http's own deadlines start from a clock it refreshes every 500 ms; one set
        // shorter than that lag may already have passed when armed, and actix-http 3.20
        // then never wakes the connection (a lingering one stayed open until the client
        // acted). Hence the 1000 ms floor. The body deadline is ours, on the real clock.
        for (key, value, min, max) in [
            (
                "header-timeout-ms",
                s.header_timeout_ms,
                ACTIX_TIMEOUT_MS_MIN,
                60_000,
            ),
            ("body-timeout-ms", s.body_timeout_ms, 100, 300_000),
            (
                "keep-alive-timeout-ms",
                s.keep_alive_timeout_ms,
                ACTIX_TIMEOUT_MS_MIN,
                300_000,
            ),
            (
                "disconnect-timeout-ms",
                s.disconnect_timeout_ms,
                ACTIX_TIMEOUT_MS_MIN,
                60_000,
            ),
        ] {
            check((min..=max).contains(&value), || {
                format!("server.{key} must be {min}..={max}")
            })?;
        }
        check(s.connections_per_ip_max <= 1_000_000, || {
            "server.connections-per-ip-max must be 0 (off) ..= 1000000".into()
        })?;
        check(
            j.retention_interval_ms == 0 || (1000..=86_400_000).contains(&j.retention_interval_ms),
            || "journal.retention-interval-ms must be 0 (off) or 1000..=86400000".into(),
        )?;
        check(j.flush_interval_ms <= 1000, || {
            "journal.flush-interval-ms must be 1..=1000".into()
        })?;
        self.journal_config().validate().map_err(|e| {
            ConfigError::Invalid(
                e.to_string()
                    .replace("invalid journal configuration: ", "journal."),
            )
        })?;
        check((1..=INGEST_SHARDS_MAX).contains(&a.ingest_shards), || {
            format!("actors.ingest-shards must be 1..={INGEST_SHARDS_MAX}")
        })?;
        check(j.partitions_max >= a.ingest_shards + 8, || {
            format!(
                "journal.partitions-max ({}) must leave room for {} ingest shards and the actors' 8 partitions",
                j.partitions_max, a.ingest_shards
            )
        })?;
        check((1..=1_000_000).contains(&a.ingest_queue_max), || {
            "actors.ingest-queue-max must be 1..=1000000".into()
        })?;
        check((1..=60_000).contains(&a.restart_backoff_initial_ms), || {
            "actors.restart-backoff-initial-ms must be 1..=60000".into()
        })?;
        check(
            a.restart_backoff_max_ms >= a.restart_backoff_initial_ms
                && a.restart_backoff_max_ms <= 600_000,
            || {
                format!(
                    "actors.restart-backoff-max-ms ({}) must be at least restart-backoff-initial-ms ({}) and at most 600000",
                    a.restart_backoff_max_ms, a.restart_backoff_initial_ms
                )
            },
        )?;
        check((1..=1000).contains(&a.restarts_max), || {
            "actors.restarts-max must be 1..=1000".into()
        })?;
        check((1000..=86_400_000).contains(&a.restart_window_ms), || {
            "actors.restart-window-ms must be 1000..=86400000".into()
        })?;
        let key = &self.secrets.click_id_key;
        check(key.len() >= 32, || {
            "secrets.click-id-key must be at least 32 bytes (use \"env:NAME\" to read it from the environment)".into()
        })?;
        check(
            self.node.demo || !DEMO_SECRETS.contains(&key.as_str()),
            || {
                "secrets.click-id-key is the demo key, but node.demo is false: set your own key"
                    .into()
            },
        )?;
        if let Some(k) = &self.secrets.email_hash_key {
            check(k.len() >= EMAIL_HASH_KEY_LEN_MIN, || {
                format!("secrets.email-hash-key must be at least {EMAIL_HASH_KEY_LEN_MIN} bytes")
            })?;
        }
        let i = &self.import;
        check((1..=3660).contains(&i.max_age_days), || {
            "import.max-age-days must be 1..=3660".into()
        })?;
        check((1 << 10..=1 << 30).contains(&i.max_bytes.0), || {
            "import.max-bytes must be 1KiB..=1GiB".into()
        })?;
        check((1..=10_000_000).contains(&i.max_lines), || {
            "import.max-lines must be 1..=10000000".into()
        })?;
        for k in &self.keys {
            check(
                self.node.demo || !DEMO_SECRETS.contains(&k.key.as_str()),
                || {
                    format!(
                        "keys: the {:?} key of {:?} is a demo key, but node.demo is false",
                        k.role, k.owner
                    )
                },
            )?;
            check(self.node.demo || k.key.len() >= API_KEY_LEN_MIN, || {
                format!(
                    "keys: the key of {:?} must be at least {API_KEY_LEN_MIN} bytes",
                    k.owner
                )
            })?;
        }
        self.trusted_proxies()?;
        check(
            (1..=720).contains(&self.conversions.fingerprint_window_hours),
            || "conversions.fingerprint-window-hours must be 1..=720".into(),
        )?;
        check(
            (1_000..=50_000_000).contains(&self.conversions.click_index_max),
            || "conversions.click-index-max must be 1000..=50000000".into(),
        )?;
        check(
            (1_000..=200_000_000).contains(&self.conversions.fingerprint_index_max),
            || "conversions.fingerprint-index-max must be 1000..=200000000".into(),
        )?;
        check(
            self.program.hold_days <= clicktrail_actors::ledger::HOLD_DAYS_MAX,
            || "program.hold-days must be 0..=365".into(),
        )?;
        self.payouts.to_config()?;
        let pb = &self.postbacks;
        check((100..=60_000).contains(&pb.timeout_ms), || {
            "postbacks.timeout-ms must be 100..=60000".into()
        })?;
        check((1..=256).contains(&pb.concurrency), || {
            "postbacks.concurrency must be 1..=256".into()
        })?;
        check((1..=pb.concurrency).contains(&pb.per_host), || {
            "postbacks.per-host must be 1..=concurrency".into()
        })?;
        check(
            (10..=600_000).contains(&pb.backoff_initial_ms)
                && pb.backoff_max_ms >= pb.backoff_initial_ms,
            || "postbacks.backoff-initial-ms must be 10..=600000 and at most backoff-max-ms".into(),
        )?;
        check((1..=2_592_000).contains(&pb.max_age_s), || {
            "postbacks.max-age-s must be 1..=2592000".into()
        })?;
        check(
            crate::edge::request::valid_cookie_name(&self.tracking.cookie_name),
            || "tracking.cookie-name must be 1-64 of [A-Za-z0-9_-]".into(),
        )?;
        let mut catalog = Catalog::default();
        for e in self.entities() {
            let what = format!("{} {:?}", e.kind(), e.id());
            catalog
                .try_apply(e)
                .map_err(|err| ConfigError::Invalid(format!("{what}: {err}")))?;
        }
        Ok(())
    }

    /// The trusted proxy networks.
    pub fn trusted_proxies(&self) -> Result<Vec<Cidr>, ConfigError> {
        self.tracking
            .trusted_proxies
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| ConfigError::Invalid(format!("tracking.trusted-proxies: {e}")))
            })
            .collect()
    }

    /// The configured entities in dependency order, with a default link per affiliate and
    /// campaign.
    pub fn entities(&self) -> Vec<Entity> {
        let mut out: Vec<Entity> = Vec::new();
        out.extend(self.merchants.iter().cloned().map(Entity::Merchant));
        out.extend(self.affiliates.iter().cloned().map(Entity::Affiliate));
        out.extend(self.campaigns.iter().cloned().map(Entity::Campaign));
        out.extend(self.links.iter().cloned().map(Entity::Link));
        out.extend(self.plans.iter().cloned().map(Entity::Plan));
        for a in &self.affiliates {
            for c in &self.campaigns {
                out.push(Entity::Link(Link {
                    code: Catalog::default_link_code(&a.id, &c.id),
                    affiliate_id: a.id.clone(),
                    campaign_id: c.id.clone(),
                    sub_ids: Vec::new(),
                }));
            }
        }
        out.extend(
            self.keys
                .iter()
                .map(|k| Entity::Key(ApiKey::new(&k.key, k.role, &k.owner))),
        );
        out
    }

    pub fn journal_config(&self) -> JournalConfig {
        let j = &self.journal;
        JournalConfig {
            segment_size: j.segment_size.0,
            record_size_max: usize::try_from(j.record_size_max.0).unwrap_or(usize::MAX),
            partitions_max: j.partitions_max,
            readers_max: j.readers_max,
            flush_interval: Duration::from_millis(j.flush_interval_ms),
            background_sync_interval: match j.background_sync_interval_ms {
                Some(ms) => Duration::from_millis(ms),
                // Never more often than group commit: a longer flush interval set alone
                // must not contradict a default the operator never wrote.
                None => JournalConfig::default()
                    .background_sync_interval
                    .max(Duration::from_millis(j.flush_interval_ms)),
            },
            rederived_partitions: clicktrail_actors::system::rederived_partitions(),
        }
    }

    /// Where postbacks may be delivered: anywhere with `allow-private-destinations`,
    /// public and loopback addresses in demo mode, public ones otherwise.
    pub fn postback_destinations(&self) -> clicktrail_actors::postback::Destinations {
        use clicktrail_actors::postback::Destinations;
        match (self.postbacks.allow_private_destinations, self.node.demo) {
            (true, _) => Destinations::Any,
            (false, true) => Destinations::PublicAndLoopback,
            (false, false) => Destinations::Public,
        }
    }

    /// The key of buyers' e-mail hashes: `secrets.email-hash-key`, or derived from the
    /// click-id key. (Not in [`Config::system_config`], which the server completes with it:
    /// a derived secret has no default to compare.)
    pub fn email_hash_key(&self) -> Vec<u8> {
        match &self.secrets.email_hash_key {
            Some(k) => k.as_bytes().to_vec(),
            None => clicktrail_actors::fraud::email::derive_email_key(
                self.secrets.click_id_key.as_bytes(),
            ),
        }
    }

    pub fn system_config(&self) -> SystemConfig {
        let a = &self.actors;
        SystemConfig {
            ingest_shards: a.ingest_shards,
            ingest_queue_max: a.ingest_queue_max,
            click_index_max: self.conversions.click_index_max,
            fingerprint_index_max: self.conversions.fingerprint_index_max,
            supervisor: SupervisorConfig {
                restart_backoff_initial: Duration::from_millis(a.restart_backoff_initial_ms),
                restart_backoff_max: Duration::from_millis(a.restart_backoff_max_ms),
                restarts_max: a.restarts_max,
                restart_window: Duration::from_millis(a.restart_window_ms),
                retention_interval: (self.journal.retention_interval_ms > 0)
                    .then(|| Duration::from_millis(self.journal.retention_interval_ms)),
            },
            postbacks: clicktrail_actors::postback::DispatcherConfig {
                destinations: self.postback_destinations(),
                timeout: Duration::from_millis(self.postbacks.timeout_ms),
                concurrency: self.postbacks.concurrency,
                per_host: self.postbacks.per_host,
                backoff_initial: Duration::from_millis(self.postbacks.backoff_initial_ms),
                backoff_max: Duration::from_millis(self.postbacks.backoff_max_ms),
                max_age: Duration::from_secs(self.postbacks.max_age_s),
            },
            ledger: clicktrail_actors::ledger::LedgerConfig {
                hold_days: self.program.hold_days,
                verification: self.program.verification,
                await_fraud_verdict: self.program.await_fraud_verdict,
            },
            payouts: self
                .payouts
                .to_config()
                .expect("validated when the configuration was loaded"),
            attribution: self.attribution.to_config(),
            fraud: self
                .fraud
                .to_config(Vec::new())
                .expect("validated when the configuration was loaded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN_KEY: &str = "0123456789abcdef0123456789abcdef-own";

    #[test]
    fn demo_and_documented_reference_configs_are_valid() {
        let demo = Config::load(None).unwrap();
        assert!(demo.node.demo);
        let reference = include_str!("../../config/clicktrail.toml");
        std::env::set_var("CLICKTRAIL_TEST_REF_KEY", OWN_KEY);
        let c = Config::from_toml(
            &reference.replace("env:CLICKTRAIL_CLICK_ID_KEY", "env:CLICKTRAIL_TEST_REF_KEY"),
            "reference",
        )
        .unwrap();
        // The reference file documents the defaults: it must say what the code does.
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.server.edge_limits(), d.server.edge_limits());
        assert_eq!(c.journal_config(), d.journal_config());
        assert_eq!(c.system_config(), d.system_config());
        assert_eq!(c.import, d.import);
        assert_eq!(c.secrets.click_id_key, OWN_KEY);
    }

    /// The background sync interval defaults to 100 ms, but never below a longer group
    /// commit set alone (that would refuse a setting the operator never wrote).
    #[test]
    fn background_sync_default_follows_a_longer_flush_interval() {
        let base = format!("[secrets]\nclick-id-key = \"{OWN_KEY}\"\n");
        let interval = |extra: &str| {
            Config::from_toml(&format!("{base}{extra}"), "test")
                .unwrap()
                .journal_config()
                .background_sync_interval
        };
        assert_eq!(interval(""), Duration::from_millis(100));
        assert_eq!(
            interval("[journal]\nflush-interval-ms = 500\n"),
            Duration::from_millis(500)
        );
        assert_eq!(
            interval("[journal]\nflush-interval-ms = 500\nbackground-sync-interval-ms = 2000\n"),
            Duration::from_millis(2000)
        );
    }

    #[test]
    fn the_click_index_bound_reaches_the_actors() {
        let c = Config::from_toml(
            &format!("[secrets]\nclick-id-key = \"{OWN_KEY}\"\n[conversions]\nclick-index-max = 5000000\nfingerprint-index-max = 7000\n"),
            "test",
        )
        .unwrap();
        assert_eq!(c.system_config().click_index_max, 5_000_000);
        assert_eq!(c.system_config().fingerprint_index_max, 7000);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("12XB"), None);
        assert_eq!(parse_size("99999999999999GiB"), None);
    }

    #[test]
    fn contradictions_and_bad_values_are_fatal_with_a_clear_message() {
        let base = format!("[secrets]\nclick-id-key = \"{OWN_KEY}\"\n");
        let cases = [
            (
                "[actors]\nrestart-backoff-initial-ms = 5000\nrestart-backoff-max-ms = 100\n",
                "restart-backoff-max-ms",
            ),
            (
                "[journal]\nsegment-size = \"64KiB\"\nrecord-size-max = \"1MiB\"\n",
                "does not fit",
            ),
            ("[journal]\nsegment-size = \"12345\"\n", "segment-size"),
            ("[actors]\ningest-shards = 0\n", "ingest-shards"),
            ("[journal]\npartitions-max = 4\n", "partitions-max"),
            ("[server]\nlisten = \"not an address\"\n", "listen"),
            ("[server]\nno-such-key = 1\n", "no-such-key"),
            ("[server]\nbody-timeout-ms = 0\n", "body-timeout-ms"),
            ("[server]\nheader-timeout-ms = 99999999\n", "header-timeout-ms"),
            ("[server]\ndisconnect-timeout-ms = 100\n", "disconnect-timeout-ms must be 1000"),
            ("[server]\nconnections-per-ip-max = 2000000\n", "connections-per-ip-max"),
            ("[tracking]\ntrusted-proxies = [\"10.0.0.0/99\"]\n", "trusted-proxies"),
            (
                "[[links]]\ncode = \"x\"\naffiliate-id = \"nobody\"\ncampaign-id = \"c\"\n",
                "unknown affiliate",
            ),
            (
                "[[merchants]]\nid = \"m\"\nname = \"M\"\n[[campaigns]]\nid = \"c\"\nmerchant-id = \"m\"\nname = \"C\"\ndestination-url = \"javascript:alert(1)\"\n",
                "only http and https",
            ),
            (
                "[journal]\nflush-interval-ms = 500\nbackground-sync-interval-ms = 100\n",
                "background-sync-interval-ms",
            ),
            ("[program]\nhold-days = 400\n", "hold-days"),
            ("[conversions]\nclick-index-max = 500\n", "click-index-max"),
            ("[conversions]\nfingerprint-index-max = 0\n", "fingerprint-index-max"),
            ("[payouts]\nschedule = \"weekly\"\n", "schedule"),
            ("[import]\nmax-age-days = 0\n", "import.max-age-days"),
            ("[import]\nmax-bytes = \"2GiB\"\n", "import.max-bytes"),
            ("[import]\nmax-lines = 0\n", "import.max-lines"),
            ("[payouts]\ntime-zone = \"Mars/Olympus\"\n", "time-zone"),
            ("[payouts]\nminimum = { XYZ = 5 }\n", "minimum XYZ"),
            (
                "[payouts.stripe]\nbase-url = \"https://x.example\"\n",
                "secret-key is required",
            ),
            (
                "[[affiliates]]\nid = \"a\"\nname = \"A\"\npayout-provider = \"stripe\"\npayout-account = \"bob\"\n",
                "not a stripe account",
            ),
        ];
        for (extra, needle) in cases {
            let err = Config::from_toml(&format!("{base}{extra}"), "test")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{extra:?} gave {err:?}");
        }
    }

    #[test]
    fn demo_key_outside_demo_mode_and_missing_env_secrets_are_refused() {
        let demo_key = format!("[secrets]\nclick-id-key = \"{}\"\n", DEMO_SECRETS[0]);
        let err = Config::from_toml(&demo_key, "t").unwrap_err().to_string();
        assert!(err.contains("demo key"), "{err}");
        Config::from_toml(&format!("{demo_key}[node]\ndemo = true\n"), "t").unwrap();
        let err = Config::from_toml(
            "[secrets]\nclick-id-key = \"env:CLICKTRAIL_NO_SUCH_VAR\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("CLICKTRAIL_NO_SUCH_VAR"), "{err}");
        // Demo API keys are refused outside demo mode too, and short keys with them.
        let with_key = |k: &str| {
            format!(
                "[secrets]\nclick-id-key = \"{OWN_KEY}\"\n[[keys]]\nrole = \"admin\"\nowner = \"admin\"\nkey = \"{k}\"\n"
            )
        };
        let err = Config::from_toml(&with_key("demo-admin-key"), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("demo key"), "{err}");
        let err = Config::from_toml(&with_key("short-key"), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16 bytes"), "{err}");
        Config::from_toml(&with_key("a-long-enough-admin-key"), "t").unwrap();
        let err = Config::from_toml("[secrets]\nclick-id-key = \"short\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("32 bytes"), "{err}");
    }

    /// The e-mail hash key: as configured (also from the environment), or derived from
    /// the click-id key; a short one is refused.
    #[test]
    fn the_email_hash_key_is_configured_or_derived() {
        let base = format!("[secrets]\nclick-id-key = \"{OWN_KEY}\"\n");
        let derived = Config::from_toml(&base, "t").unwrap().email_hash_key();
        assert_eq!(
            derived,
            clicktrail_actors::fraud::email::derive_email_key(OWN_KEY.as_bytes())
        );
        let own = "an-email-hash-key-of-32-bytes-or-more";
        std::env::set_var("CLICKTRAIL_TEST_EMAIL_KEY", own);
        for value in [own, "env:CLICKTRAIL_TEST_EMAIL_KEY"] {
            let c =
                Config::from_toml(&format!("{base}email-hash-key = \"{value}\"\n"), "t").unwrap();
            assert_eq!(c.email_hash_key(), own.as_bytes());
        }
        let err = Config::from_toml(&format!("{base}email-hash-key = \"short\"\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets.email-hash-key"), "{err}");
    }
}
