//! Postback dispatcher: tells affiliates (and the network, through global postbacks) about
//! conversions, signed, retried, every attempt a journal event in `postback-attempts`.
//!
//! * Triggers: `conversion.created`, `conversion.approved`, `conversion.rejected`,
//!   `conversion.reversed` (from the ingest partitions) and `commission.created` (from the
//!   ledger's sale transactions).
//! * Macros: [`MACROS`], checked when a template is saved ([`check_template`]); a value
//!   an event does not have renders empty.
//! * A disabled or deleted postback makes no new deliveries; its queued ones (retries
//!   included) are dead-lettered without an attempt when they come up, the reason in the
//!   attempt's error. Re-enabling is like creating: only later events are delivered.
//! * Delivery id (`X-Clicktrail-Delivery`): a hash of postback, trigger and the input
//!   record, the same on every attempt and after a restart, so receivers can deduplicate:
//!   delivery is at least once.
//! * Signature: `X-Clicktrail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<payload>")>`, the payload being the POST body or the GET path and query.
//! * Retries: 2xx is delivered; 4xx other than 408/429 is permanent (dead-lettered at once);
//!   anything else retries with exponential backoff and jitter until `max-age`, then is
//!   dead-lettered. At most `concurrency` requests in flight, at most `per-host` per host.
//! * Destinations resolving to loopback, private, link-local or unspecified addresses are
//!   refused unless `allow-private-destinations` is set (demo mode allows loopback), at
//!   connect time, with an error naming the setting: the client
//!   connects only to addresses its own resolver checked, so a name that re-resolves to a
//!   private address (DNS rebinding) gets nowhere.
//!
//! * Imported history (`POST /api/v1/import`) is never told: no trigger fires for an
//!   imported conversion, its reversals and decisions, or the commissions the ledger posts
//!   for it (the conversion says `imported`, and every record about it carries its id,
//!   which starts with `cvi_`).
//!
//! Restart: the dispatcher reads its own output (finished deliveries), then its inputs from
//! the start (durable records only), and queues again every delivery not finished.

use crate::catalog::{EntityStore, Method, Postback, Trigger};
use crate::supervisor::{ChildCtx, Stop, ThreadActor};
use actix::prelude::*;
use clicktrail_storage::schema::{
    self, is_imported_conversion_id, Conversion, ConversionState, ConversionStatusChange,
    ConversionV2, DeliveryOutcome, LedgerTxn, PostbackAttempt,
};
use clicktrail_storage::{Journal, Reader, RecordExt, Source, Writer};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Which destination addresses postbacks may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Destinations {
    /// Public addresses only (the default outside demo mode).
    #[default]
    Public,
    /// Public and loopback (demo mode: try postbacks against a receiver on this machine).
    PublicAndLoopback,
    /// Any address (`postbacks.allow-private-destinations = true`).
    Any,
}

/// What to tell an operator whose postback is refused a destination.
pub const PRIVATE_DESTINATIONS_HINT: &str = "set postbacks.allow-private-destinations = true \
(or run `clicktrail serve --allow-private-postbacks`, or set \
CLICKTRAIL_ALLOW_PRIVATE_POSTBACKS=1) to deliver to private addresses";

impl Destinations {
    /// Whether a postback may connect to `ip`.
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            Destinations::Any => true,
            Destinations::PublicAndLoopback => !is_private(ip) || ip.to_canonical().is_loopback(),
            Destinations::Public => !is_private(ip),
        }
    }
}

/// Dispatcher settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// Which addresses deliveries may connect to. Default: public only.
    pub destinations: Destinations,
    /// Per-request timeout. Default: 5 s.
    pub timeout: Duration,
    /// Requests in flight at once. Default: 8.
    pub concurrency: usize,
    /// Requests in flight to one host. Default: 2.
    pub per_host: usize,
    /// First retry delay; doubles per attempt, with up to 50% jitter. Default: 1 s.
    pub backoff_initial: Duration,
    /// Longest retry delay. Default: 10 min.
    pub backoff_max: Duration,
    /// Give up (dead-letter) once the first attempt is this old. Default: 24 h.
    pub max_age: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            destinations: Destinations::Public,
            timeout: Duration::from_secs(5),
            concurrency: 8,
            per_host: 2,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            max_age: Duration::from_secs(86_400),
        }
    }
}

/// Most deliveries queued at once; inputs wait while it is full.
pub const QUEUE_MAX: usize = 100_000;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>`.
pub fn sign(secret: &str, t: i64, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload.as_bytes());
    format!("t={t},v1={}", hex(&mac.finalize().into_bytes()))
}

/// Fills `{macro}`s; with `encode`, values are URL-encoded (for URL templates). Unknown
/// macros are left as they are.
pub fn render(template: &str, values: &BTreeMap<&str, String>, encode: bool) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if values.contains_key(&after[..close]) => {
                let v = &values[&after[..close]];
                if encode {
                    out.extend(url::form_urlencoded::byte_serialize(v.as_bytes()));
                } else {
                    out.push_str(v);
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether an address is one a postback may not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x64 && seg[1] == 0xff9b)
        }
    }
}

/// The retry delay after `attempt` failures (1-based), jittered by `jitter` in [0, 1).
pub fn backoff(c: &DispatcherConfig, attempt: u32, jitter: f64) -> Duration {
    let base = c
        .backoff_initial
        .saturating_mul(1 << attempt.saturating_sub(1).min(20));
    base.min(c.backoff_max)
        .mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// One delivery to make.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    postback_id: String,
    trigger: Trigger,
    method: Method,
    url: String,
    body: Option<String>,
    secret: String,
    /// Attempts made so far (across restarts).
    attempts: u32,
    /// When the first attempt was due (for max age).
    first_us: i64,
    /// The input record it came from (`None` for test deliveries).
    source: Option<Source>,
}

struct Outcome {
    delivery: Delivery,
    status: u16,
    latency_us: u64,
    error: Option<String>,
    refused: bool,
}

fn now_us() -> i64 {
    crate::catalog::now_us()
}

/// Which of an input record's deliveries to build.
struct Wanted<'a> {
    /// Accepts a delivery by its id.
    id: &'a dyn Fn(&str) -> bool,
    /// Rebuilding a delivery that was made (`redeliver`), not reading new input.
    redelivery: bool,
}

impl Wanted<'_> {
    const ALL: Wanted<'static> = Wanted {
        id: &|_| true,
        redelivery: false,
    };
}

/// One delivery an input record calls for, before its values are rendered.
struct Target<'p> {
    postback: &'p Postback,
    id: String,
    /// Its place among all the record's deliveries (the `Source` part), and their count.
    part: u16,
    parts: u16,
}

/// The deliveries an input record calls for (global and the affiliate's own postbacks),
/// those `wanted` by id: ids depend only on the postback, the trigger and the record, so
/// finished ones are skipped before any value is looked up or rendered.
#[allow(clippy::too_many_arguments)]
fn targets<'p>(
    postbacks: &'p HashMap<String, Postback>,
    input_partition: u32,
    offset: u64,
    trigger: Trigger,
    affiliate: Option<&str>,
    event_at_us: i64,
    // Tells apart the deliveries of one record for several affiliates (empty: one).
    discriminator: &str,
    wanted: &Wanted<'_>,
) -> Vec<Target<'p>> {
    let mut matching: Vec<&Postback> = postbacks
        .values()
        .filter(|p| p.enabled && p.triggers.contains(&trigger))
        // A postback created (or re-enabled) later never receives history; a redelivery
        // names a delivery that was made, so it skips this.
        .filter(|p| wanted.redelivery || p.created_at_us <= event_at_us)
        .filter(|p| p.affiliate_id.is_none() || p.affiliate_id.as_deref() == affiliate)
        .collect();
    matching.sort_by(|a, b| a.id.cmp(&b.id));
    let parts = matching.len() as u16;
    matching
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(b"clicktrail delivery id v1").expect("key");
            mac.update(
                format!(
                    "{}\n{}\n{input_partition}\n{offset}",
                    p.id,
                    trigger.as_str()
                )
                .as_bytes(),
            );
            if !discriminator.is_empty() {
                mac.update(format!("\n{discriminator}").as_bytes());
            }
            let id = format!("dl_{}", &hex(&mac.finalize().into_bytes())[..24]);
            (wanted.id)(&id).then_some(Target {
                postback: p,
                id,
                part: i as u16,
                parts,
            })
        })
        .collect()
}

/// The deliveries of `targets`, their templates rendered with `values`.
fn render_deliveries(
    targets: Vec<Target<'_>>,
    trigger: Trigger,
    values: &BTreeMap<&str, String>,
    input_partition: u32,
    offset: u64,
) -> Vec<Delivery> {
    targets
        .into_iter()
        .map(|t| {
            let p = t.postback;
            let body = (p.method == Method::Post).then(|| {
                serde_json::to_string(&values.iter().collect::<BTreeMap<_, _>>()).expect("strings")
            });
            Delivery {
                id: t.id,
                postback_id: p.id.clone(),
                trigger,
                method: p.method,
                url: render(&p.url, values, true),
                body,
                secret: p.secret.clone(),
                attempts: 0,
                first_us: now_us(),
                source: Some(Source {
                    partition: input_partition,
                    offset,
                    part: t.part,
                    parts: t.parts,
                }),
            }
        })
        .collect()
}

/// Every delivery an input record calls for, rendered.
#[allow(clippy::too_many_arguments)]
fn deliveries_for(
    postbacks: &HashMap<String, Postback>,
    input_partition: u32,
    offset: u64,
    trigger: Trigger,
    affiliate: Option<&str>,
    values: &BTreeMap<&str, String>,
    event_at_us: i64,
    discriminator: &str,
) -> Vec<Delivery> {
    let t = targets(
        postbacks,
        input_partition,
        offset,
        trigger,
        affiliate,
        event_at_us,
        discriminator,
        &Wanted::ALL,
    );
    render_deliveries(t, trigger, values, input_partition, offset)
}

/// What the dispatcher looks up to fill macros an input record does not carry.
#[derive(Clone, Copy)]
struct Lookups<'a> {
    /// Clicks by id, for `{sub1}`..`{sub5}`.
    clicks: Option<&'a crate::clicks::ClickLookup>,
    /// Conversions' events, for `conversion.reversed`.
    events: &'a ConversionEvents,
}

/// The deliveries one input record calls for, those `wanted`. The click is looked up (for
/// `{sub1}`..) only when one is wanted.
fn deliveries_of(
    postbacks: &HashMap<String, Postback>,
    partition: u32,
    rec: &clicktrail_storage::Record<'_>,
    lookups: Lookups<'_>,
    wanted: &Wanted<'_>,
) -> Vec<Delivery> {
    if let Some(t) = rec.event::<LedgerTxn>() {
        return commission_deliveries(postbacks, partition, rec.offset, t, lookups, wanted);
    }
    let (trigger, affiliate, mut values, at_us, click_id) = if let Some(c) = schema::conversion(rec)
    {
        if c.imported || is_imported_conversion_id(&c.conversion_id) {
            return Vec::new(); // imported history: never told to anyone
        }
        (
            Trigger::ConversionCreated,
            c.affiliate_id.clone(),
            conversion_values(&c, "pending"),
            c.at_us,
            c.click_id,
        )
    } else if let Some(r) = schema::reversal(rec) {
        if is_imported_conversion_id(&r.conversion_id) {
            return Vec::new();
        }
        // The affiliate is in reversals from v3 on; older ones reach global postbacks only.
        let mut v = blank_values();
        v.insert("conversion_id", r.conversion_id.clone());
        // Reversals do not carry the event; the conversion (read before, in the same
        // partition) did.
        let event = lookups.events.get(&r.conversion_id).unwrap_or_default();
        v.insert("event", event.to_string());
        v.insert("amount", r.amount.amount_minor.to_string());
        v.insert("currency", r.amount.currency.as_str().to_string());
        v.insert("status", "reversed".to_string());
        v.insert("affiliate_id", r.affiliate_id.clone().unwrap_or_default());
        v.insert("order_id", r.order_id.clone());
        v.insert("click_id", r.click_id.clone().unwrap_or_default());
        v.insert("campaign_id", r.campaign_id.clone());
        (
            Trigger::ConversionReversed,
            r.affiliate_id,
            v,
            r.at_us,
            r.click_id,
        )
    } else if let Some(sc) = rec.to_owned_event::<ConversionStatusChange>() {
        if is_imported_conversion_id(&sc.conversion_id) {
            return Vec::new();
        }
        let (trigger, status) = match sc.state {
            ConversionState::Approved => (Trigger::ConversionApproved, "approved"),
            ConversionState::Rejected => (Trigger::ConversionRejected, "rejected"),
        };
        let mut v = blank_values();
        v.insert("conversion_id", sc.conversion_id.clone());
        v.insert("order_id", sc.order_id.clone());
        v.insert("event", sc.event.clone());
        v.insert("amount", sc.amount.amount_minor.to_string());
        v.insert("currency", sc.amount.currency.as_str().to_string());
        v.insert("status", status.to_string());
        v.insert("click_id", sc.click_id.clone().unwrap_or_default());
        v.insert("affiliate_id", sc.affiliate_id.clone().unwrap_or_default());
        v.insert("campaign_id", sc.campaign_id.clone());
        v.insert("payout", String::new());
        (trigger, sc.affiliate_id, v, sc.at_us, sc.click_id)
    } else {
        return Vec::new();
    };
    let targets = targets(
        postbacks,
        partition,
        rec.offset,
        trigger,
        affiliate.as_deref(),
        at_us,
        "",
        wanted,
    );
    if targets.is_empty() {
        return Vec::new();
    }
    insert_subs(&mut values, click_id.as_deref(), lookups.clicks);
    values.insert("timestamp", (now_us() / 1_000_000).to_string());
    render_deliveries(targets, trigger, &values, partition, rec.offset)
}

/// `commission.created` for each affiliate a sale's ledger transaction credits: `{payout}`
/// is the commission (minor units, like `{amount}`), `{amount}` the sale, `{click_id}` (and
/// `{sub1}`..) the affiliate's touchpoint (its last, when it has several).
fn commission_deliveries(
    postbacks: &HashMap<String, Postback>,
    partition: u32,
    offset: u64,
    t: &clicktrail_storage::schema::ArchivedLedgerTxn,
    lookups: Lookups<'_>,
    wanted: &Wanted<'_>,
) -> Vec<Delivery> {
    use clicktrail_storage::schema::ArchivedLedgerCause;
    if !matches!(t.cause, ArchivedLedgerCause::Sale) {
        return Vec::new();
    }
    let Ok(crate::ledger::Op::Sale {
        conversion_id,
        campaign_id,
        event,
        amount_minor,
        currency,
        occurred_at_us,
        order_id,
        clicks,
        ..
    }) = serde_json::from_str(t.op_json.as_str())
    else {
        return Vec::new();
    };
    if is_imported_conversion_id(&conversion_id) {
        return Vec::new(); // the commission of imported history
    }
    // What each affiliate was credited (a decision applied in the same transaction moves
    // money between its buckets, which nets out here).
    let mut credited: BTreeMap<String, i64> = BTreeMap::new();
    for p in t.postings.iter() {
        if let Some((affiliate, _)) = crate::ledger::parse_partner_account(p.account.as_str()) {
            *credited.entry(affiliate.to_string()).or_default() += p.amount_minor.to_native();
        }
    }
    let event_at_us = t.at_us.to_native().max(occurred_at_us);
    let mut out = Vec::new();
    for (affiliate, commission) in credited {
        if commission <= 0 {
            continue;
        }
        let targets = targets(
            postbacks,
            partition,
            offset,
            Trigger::CommissionCreated,
            Some(&affiliate),
            event_at_us,
            &affiliate,
            wanted,
        );
        if targets.is_empty() {
            continue;
        }
        let click_id = clicks
            .iter()
            .rev()
            .find(|(a, _)| *a == affiliate)
            .map(|(_, c)| c.as_str());
        let mut v = blank_values();
        v.insert("conversion_id", conversion_id.clone());
        v.insert("order_id", order_id.clone());
        v.insert("click_id", click_id.unwrap_or_default().to_string());
        v.insert("event", event.clone());
        v.insert("amount", amount_minor.to_string());
        v.insert("currency", currency.clone());
        v.insert("payout", commission.to_string());
        v.insert("status", "pending".to_string());
        v.insert("affiliate_id", affiliate.clone());
        v.insert("campaign_id", campaign_id.clone());
        insert_subs(&mut v, click_id, lookups.clicks);
        v.insert("timestamp", (now_us() / 1_000_000).to_string());
        out.extend(render_deliveries(
            targets,
            Trigger::CommissionCreated,
            &v,
            partition,
            offset,
        ));
    }
    out
}

/// Most conversions whose event the dispatcher remembers for `conversion.reversed`
/// (about 24 bytes each: 12 MB). A reversal of an older conversion has an empty `{event}`.
pub const CONVERSION_EVENTS_MAX: usize = 500_000;
/// Most distinct event names remembered (conversions with others are not remembered).
pub const EVENT_NAMES_MAX: usize = 1024;

/// The event of the newest [`CONVERSION_EVENTS_MAX`] conversions read, for reversals,
/// which do not carry it. Every record about a conversion is in one partition, in order,
/// so its conversion is read before its reversal (and again after a restart, which reads
/// the inputs from the start). Keys are 64-bit hashes of conversion ids: at the bound, two
/// ids collide with a probability under 1e-8, and the cost is a wrong `{event}`.
#[derive(Debug, Default)]
struct ConversionEvents {
    by_id: HashMap<u64, u16>,
    /// Keys, oldest first: the oldest goes at the bound.
    order: VecDeque<u64>,
    names: Vec<String>,
    name_index: HashMap<String, u16>,
}

impl ConversionEvents {
    fn key(conversion_id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        conversion_id.hash(&mut h);
        h.finish()
    }

    fn remember(&mut self, conversion_id: &str, event: &str) {
        let name = match self.name_index.get(event) {
            Some(n) => *n,
            None if self.names.len() < EVENT_NAMES_MAX => {
                let n = self.names.len() as u16;
                self.names.push(event.to_string());
                self.name_index.insert(event.to_string(), n);
                n
            }
            None => return,
        };
        let key = Self::key(conversion_id);
        if self.by_id.insert(key, name).is_none() {
            self.order.push_back(key);
        }
        if self.order.len() > CONVERSION_EVENTS_MAX {
            let oldest = self.order.pop_front().expect("over the bound");
            self.by_id.remove(&oldest);
        }
        debug_assert_eq!(self.order.len(), self.by_id.len());
    }

    fn get(&self, conversion_id: &str) -> Option<&str> {
        let n = self.by_id.get(&Self::key(conversion_id))?;
        Some(&self.names[usize::from(*n)])
    }
}

const _: () = assert!(EVENT_NAMES_MAX <= u16::MAX as usize);

/// Values of a test postback: clearly marked, never a real conversion.
fn sample_values() -> BTreeMap<&'static str, String> {
    let mut v = blank_values();
    for (k, val) in [
        ("click_id", "test-click"),
        ("conversion_id", "test-conversion"),
        ("order_id", "test-order"),
        ("event", "test"),
        ("amount", "0"),
        ("currency", "XXX"),
        ("status", "test"),
    ] {
        v.insert(k, val.to_string());
    }
    v
}

/// What the API asks of the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send a test delivery to this postback now.
    Test { postback_id: String },
    /// Send this past delivery again (same delivery id).
    Redeliver { delivery_id: String },
}

/// Most commands waiting for the dispatcher.
pub const COMMANDS_MAX: usize = 1000;

/// The API's queue of commands to the dispatcher. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Commands(Arc<std::sync::Mutex<std::collections::VecDeque<Command>>>);

impl Commands {
    /// Queues a command; false when `COMMANDS_MAX` are already waiting.
    pub fn send(&self, c: Command) -> bool {
        let mut q = self.0.lock().unwrap();
        if q.len() >= COMMANDS_MAX {
            return false;
        }
        q.push_back(c);
        true
    }

    fn take(&self) -> Vec<Command> {
        self.0.lock().unwrap().drain(..).collect()
    }
}

/// One attempt through `agent` (see [`delivery_agent`]: its resolver is where private
/// destinations are refused, once, at connect time).
fn attempt(agent: &ureq::Agent, d: Delivery) -> Outcome {
    let started = Instant::now();
    let parsed = url::Url::parse(&d.url);
    let mut out = Outcome {
        delivery: d,
        status: 0,
        latency_us: 0,
        error: None,
        refused: false,
    };
    let Ok(u) = parsed else {
        out.error = Some("rendered URL does not parse".into());
        out.refused = true;
        return out;
    };
    let t = now_us() / 1_000_000;
    let payload = match &out.delivery.body {
        Some(b) => b.clone(),
        None => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
    };
    let signature = sign(&out.delivery.secret, t, &payload);
    let result = match (&out.delivery.method, &out.delivery.body) {
        (Method::Post, Some(body)) => agent
            .post(&out.delivery.url)
            .header("content-type", "application/json")
            .header("x-clicktrail-signature", &signature)
            .header("x-clicktrail-delivery", &out.delivery.id)
            .send(body.as_str()),
        _ => agent
            .get(&out.delivery.url)
            .header("x-clicktrail-signature", &signature)
            .header("x-clicktrail-delivery", &out.delivery.id)
            .call(),
    };
    out.latency_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(r) => out.status = r.status().as_u16(),
        Err(e) => {
            // The guarded resolver's refusal: the name now points somewhere private.
            // Refused like the check before the attempt, not retried until max-age.
            if let ureq::Error::Io(io) = &e {
                if io.kind() == std::io::ErrorKind::PermissionDenied {
                    out.refused = true;
                }
            }
            out.error = Some(e.to_string());
        }
    }
    out
}

/// The dispatcher's state on its own thread.
struct Engine {
    journal: Journal,
    store: Arc<EntityStore>,
    config: DispatcherConfig,
    inputs: Vec<Reader>,
    writer: Writer,
    finished: HashSet<String>,
    attempts: HashMap<String, (u32, i64)>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    queued: HashMap<u64, Delivery>,
    next_seq: u64,
    per_host: HashMap<String, usize>,
    /// Due deliveries waiting for a free slot at their host, oldest first: a busy host's
    /// backlog waits here once instead of being re-queued on every turn (which, with tens
    /// of thousands waiting for one receiver, cost a full re-sort per answer).
    backlog: HashMap<String, VecDeque<Delivery>>,
    backlogged: usize,
    in_flight: usize,
    rng: fastrand::Rng,
    /// Clicks by id, for the `{sub1}`..`{sub5}` macros.
    clicks: Option<crate::clicks::ClickLookup>,
    /// Conversions' events, for `conversion.reversed`.
    events: ConversionEvents,
}

impl Engine {
    fn open(
        journal: Journal,
        store: Arc<EntityStore>,
        config: DispatcherConfig,
        inputs: &[String],
    ) -> clicktrail_storage::Result<Engine> {
        let output = journal.partition(crate::system::POSTBACK_ATTEMPTS)?;
        let mut finished = HashSet::new();
        let mut attempts: HashMap<String, (u32, i64)> = HashMap::new();
        let mut r = output.reader()?;
        while let Some(rec) = r.next()? {
            if let Some(a) = rec.event::<PostbackAttempt>() {
                let e = attempts
                    .entry(a.delivery_id.to_string())
                    .or_insert((0, a.at_us.to_native()));
                e.0 = e.0.max(a.attempt.to_native());
                use clicktrail_storage::schema::ArchivedDeliveryOutcome as O;
                if !matches!(a.outcome, O::Retrying) {
                    finished.insert(a.delivery_id.to_string());
                }
            }
        }
        let readers = inputs
            .iter()
            .map(|n| {
                journal
                    .partition(n)
                    .and_then(|p| p.reader())
                    .map(Reader::durable_only)
            })
            .collect::<clicktrail_storage::Result<Vec<_>>>()?;
        Ok(Engine {
            writer: output.writer()?,
            journal,
            store,
            config,
            inputs: readers,
            finished,
            attempts,
            queue: BinaryHeap::new(),
            queued: HashMap::new(),
            next_seq: 0,
            per_host: HashMap::new(),
            backlog: HashMap::new(),
            backlogged: 0,
            in_flight: 0,
            rng: fastrand::Rng::new(),
            clicks: None,
            events: ConversionEvents::default(),
        })
    }

    /// Deliveries held in memory (queued or backlogged).
    fn held(&self) -> usize {
        self.queued.len() + self.backlogged
    }

    fn enqueue(&mut self, mut d: Delivery, due: Instant) {
        if self.held() >= QUEUE_MAX {
            log::error!(
                "postbacks: queue full ({QUEUE_MAX}); dropping delivery {} until restart",
                d.id
            );
            return;
        }
        if let Some((n, first)) = self.attempts.get(&d.id) {
            d.attempts = *n;
            d.first_us = *first;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse((due, seq)));
        self.queued.insert(seq, d);
    }

    /// Reads available inputs into the queue; returns how many records it read.
    fn read_inputs(&mut self) -> clicktrail_storage::Result<usize> {
        let catalog = self.store.snapshot();
        let mut n = 0;
        for i in 0..self.inputs.len() {
            while self.held() < QUEUE_MAX && n < 1024 {
                let partition = self.inputs[i].partition().id();
                let Some(rec) = self.inputs[i].next()? else {
                    break;
                };
                n += 1;
                // Zero-copy, either version.
                if let Some(c) = rec.event::<Conversion>() {
                    self.events
                        .remember(c.conversion_id.as_str(), c.event.as_str());
                } else if let Some(c) = rec.event::<ConversionV2>() {
                    self.events
                        .remember(c.conversion_id.as_str(), c.event.as_str());
                }
                // Finished deliveries (read again on start) are skipped before their
                // click is looked up, maybe in the journal.
                let finished = &self.finished;
                let lookups = Lookups {
                    clicks: self.clicks.as_ref(),
                    events: &self.events,
                };
                let open = deliveries_of(
                    &catalog.postbacks,
                    partition,
                    &rec,
                    lookups,
                    &Wanted {
                        id: &|id| !finished.contains(id),
                        redelivery: false,
                    },
                );
                for d in open {
                    self.enqueue(d, Instant::now());
                }
            }
        }
        Ok(n)
    }

    /// Carries out the commands the API queued.
    fn run_commands(&mut self, commands: &Commands) -> clicktrail_storage::Result<()> {
        for cmd in commands.take() {
            match cmd {
                Command::Test { postback_id } => {
                    let catalog = self.store.snapshot();
                    let Some(p) = catalog.postbacks.get(&postback_id) else {
                        continue;
                    };
                    let mut values = sample_values();
                    values.insert("timestamp", (now_us() / 1_000_000).to_string());
                    // A disabled postback can be tested (before enabling it again).
                    let mut only = HashMap::new();
                    only.insert(
                        p.id.clone(),
                        Postback {
                            enabled: true,
                            ..p.clone()
                        },
                    );
                    let trigger = p.triggers[0];
                    for mut d in deliveries_for(
                        &only,
                        0,
                        0,
                        trigger,
                        p.affiliate_id.as_deref(),
                        &values,
                        i64::MAX,
                        "",
                    ) {
                        d.id = format!("dl_test_{:016x}", self.rng.u64(..));
                        d.source = None;
                        self.enqueue(d, Instant::now());
                    }
                }
                Command::Redeliver { delivery_id } => {
                    if self.queued.values().any(|q| q.id == delivery_id) {
                        continue; // already on its way
                    }
                    // A delivery that cannot be rebuilt (its input is gone) is skipped.
                    if let Ok(Some(d)) = self.rebuild(&delivery_id) {
                        self.finished.remove(&delivery_id);
                        self.enqueue(d, Instant::now());
                    }
                }
            }
        }
        Ok(())
    }

    /// Rebuilds a past delivery from the input record its attempts name.
    fn rebuild(&self, delivery_id: &str) -> clicktrail_storage::Result<Option<Delivery>> {
        let output = self.journal.partition(crate::system::POSTBACK_ATTEMPTS)?;
        let mut source = None;
        let mut r = output.reader()?;
        while let Some(rec) = r.next()? {
            if rec
                .event::<PostbackAttempt>()
                .is_some_and(|a| a.delivery_id == delivery_id)
            {
                source = rec.source;
            }
        }
        let Some(src) = source else { return Ok(None) };
        let Some(input) = self.journal.by_id(src.partition) else {
            return Ok(None);
        };
        let mut r = input.reader_at(src.offset)?;
        let Some(rec) = r.next()? else {
            return Ok(None);
        };
        let catalog = self.store.snapshot();
        let lookups = Lookups {
            clicks: self.clicks.as_ref(),
            events: &self.events,
        };
        Ok(deliveries_of(
            &catalog.postbacks,
            src.partition,
            &rec,
            lookups,
            &Wanted {
                id: &|id| id == delivery_id,
                redelivery: true,
            },
        )
        .into_iter()
        .next())
    }

    /// Why a queued delivery is no longer wanted: its postback was deleted or disabled
    /// since it was queued (a test delivery of a disabled postback is still wanted).
    fn stale(&self, d: &Delivery) -> Option<&'static str> {
        self.store.with(|c| match c.postbacks.get(&d.postback_id) {
            None => Some("postback deleted"),
            Some(p) if !p.enabled && d.source.is_some() => Some("postback disabled"),
            Some(_) => None,
        })
    }

    /// Dead-letters a queued delivery without an attempt, saying `why`: finished, so it is
    /// not queued again after a restart; a redelivery can still send it once re-enabled.
    fn drop_stale(&mut self, d: Delivery, why: &str) -> clicktrail_storage::Result<()> {
        let o = Outcome {
            delivery: d,
            status: 0,
            latency_us: 0,
            error: Some(why.to_string()),
            refused: false,
        };
        self.record(&o, DeliveryOutcome::DeadLettered)?;
        self.finished.insert(o.delivery.id);
        Ok(())
    }

    fn record(&mut self, o: &Outcome, outcome: DeliveryOutcome) -> clicktrail_storage::Result<()> {
        let a = PostbackAttempt {
            at_us: now_us(),
            delivery_id: o.delivery.id.clone(),
            postback_id: o.delivery.postback_id.clone(),
            trigger: o.delivery.trigger.as_str().into(),
            method: match o.delivery.method {
                Method::Get => "GET".into(),
                Method::Post => "POST".into(),
            },
            url: o.delivery.url.clone(),
            attempt: o.delivery.attempts,
            status_code: o.status,
            latency_us: o.latency_us,
            error: o.error.clone(),
            outcome,
        };
        self.writer.append_event(o.delivery.source.as_ref(), &a)?;
        Ok(())
    }

    fn settle(&mut self, mut o: Outcome) -> clicktrail_storage::Result<()> {
        o.delivery.attempts += 1;
        let host = url::Url::parse(&o.delivery.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        if let Some(n) = self.per_host.get_mut(&host) {
            *n = n.saturating_sub(1);
        }
        self.in_flight -= 1;
        let permanent = (400..500).contains(&o.status) && o.status != 408 && o.status != 429;
        let age = Duration::from_micros((now_us() - o.delivery.first_us).max(0) as u64);
        let outcome = if (200..300).contains(&o.status) {
            DeliveryOutcome::Delivered
        } else if o.refused {
            DeliveryOutcome::Refused
        } else if permanent || age >= self.config.max_age || o.delivery.id.starts_with("dl_test_") {
            // Test deliveries are tried once.
            DeliveryOutcome::DeadLettered
        } else {
            DeliveryOutcome::Retrying
        };
        self.record(&o, outcome)?;
        self.attempts.insert(
            o.delivery.id.clone(),
            (o.delivery.attempts, o.delivery.first_us),
        );
        if outcome == DeliveryOutcome::Retrying {
            let delay = backoff(&self.config, o.delivery.attempts, self.rng.f64());
            self.enqueue(o.delivery, Instant::now() + delay);
        } else {
            self.finished.insert(o.delivery.id.clone());
        }
        Ok(())
    }
}

/// Longest a delivery waits for the click indexer to reach its click.
const SUBS_WAIT: Duration = Duration::from_secs(10);

/// The click's sub-ids as `{sub1}`..`{sub5}`, while the journal holds the click.
fn insert_subs(
    v: &mut BTreeMap<&'static str, String>,
    click_id: Option<&str>,
    clicks: Option<&crate::clicks::ClickLookup>,
) {
    // On the dispatcher's own thread: it may wait for the click indexer to reach the
    // click (after a start, while it reads the journal again).
    let subs = click_id
        .and_then(|id| clicks.and_then(|k| k.info_waiting(id, SUBS_WAIT)))
        .map(|i| i.sub_ids);
    for (i, s) in subs.unwrap_or_default().into_iter().enumerate().take(5) {
        v.insert(["sub1", "sub2", "sub3", "sub4", "sub5"][i], s);
    }
}

/// Every macro a postback template may use: what templates are checked against when saved,
/// and every value a delivery carries (a POST body has each as a key).
pub const MACROS: &[&str] = &[
    "click_id",
    "conversion_id",
    "order_id",
    "event",
    "amount",
    "currency",
    "payout",
    "status",
    "affiliate_id",
    "campaign_id",
    "timestamp",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
];

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` with a name not in [`MACROS`].
    #[error("unknown macro {{{0}}}; known macros: {known}", known = known_macros())]
    UnknownMacro(String),
    /// A `{` without its `}` (or the reverse, or one inside another).
    #[error("unbalanced braces at byte {0}; macros are written {{name}}")]
    Unbalanced(usize),
}

fn known_macros() -> String {
    MACROS
        .iter()
        .map(|m| format!("{{{m}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a URL template when it is saved: every `{name}` is a known macro and braces
/// pair up. (Stored templates are not checked again: older ones render unknown macros as
/// written.)
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    let mut open: Option<usize> = None;
    for (i, b) in template.bytes().enumerate() {
        match (b, open) {
            (b'{', None) => open = Some(i),
            (b'}', Some(start)) => {
                let name = &template[start + 1..i];
                if !MACROS.contains(&name) {
                    return Err(TemplateError::UnknownMacro(name.to_string()));
                }
                open = None;
            }
            (b'{', Some(_)) | (b'}', None) => return Err(TemplateError::Unbalanced(i)),
            _ => {}
        }
    }
    match open {
        Some(start) => Err(TemplateError::Unbalanced(start)),
        None => Ok(()),
    }
}

/// Every macro, empty: a value a trigger does not know is rendered empty rather than left
/// as `{name}` (the renderer keeps unknown braces as is).
fn blank_values() -> BTreeMap<&'static str, String> {
    MACROS.iter().map(|k| (*k, String::new())).collect()
}

fn conversion_values(c: &ConversionV2, status: &str) -> BTreeMap<&'static str, String> {
    let mut v = blank_values();
    v.insert("click_id", c.click_id.clone().unwrap_or_default());
    v.insert("conversion_id", c.conversion_id.clone());
    v.insert("order_id", c.order_id.clone());
    v.insert("event", c.event.clone());
    v.insert("amount", c.amount.amount_minor.to_string());
    v.insert("currency", c.amount.currency.as_str().to_string());
    v.insert("payout", String::new());
    v.insert("status", status.to_string());
    v.insert("affiliate_id", c.affiliate_id.clone().unwrap_or_default());
    v.insert("campaign_id", c.campaign_id.clone());
    v
}

/// The resolver the delivery agent connects through: unless private destinations are
/// allowed, it drops loopback/private/link-local answers, so the address that was checked is
/// the address connected to. (Checking a name first and letting the client resolve it again
/// would let a DNS server answer public the first time and private the second: DNS
/// rebinding.)
#[derive(Debug)]
struct GuardedResolver {
    destinations: Destinations,
}

impl ureq::unversioned::resolver::Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let all = ureq::unversioned::resolver::DefaultResolver::default()
            .resolve(uri, config, timeout)?;
        if self.destinations == Destinations::Any {
            return Ok(all);
        }
        let mut allowed = self.empty();
        allowed.truncate(0);
        for a in all.iter().filter(|a| self.destinations.allows(a.ip())) {
            allowed.push(*a);
        }
        if allowed.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} resolves to a private address; {PRIVATE_DESTINATIONS_HINT}",
                    uri.host().unwrap_or("")
                ),
            )));
        }
        Ok(allowed)
    }
}

/// The delivery agent: no redirects followed, statuses are outcomes, not errors, and every
/// connection goes through [`GuardedResolver`].
fn delivery_agent(timeout: Duration, destinations: Destinations) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        // No proxy from the environment (ALL_PROXY, HTTP(S)_PROXY): through a proxy the
        // client resolves only the proxy's name, and the proxy connects wherever the
        // destination's name points, around the guard.
        .proxy(None)
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        GuardedResolver { destinations },
    )
}

/// The dispatcher thread: reads, dispatches, settles until `stop`.
fn run(mut e: Engine, stop: Arc<AtomicBool>, commands: Commands) -> clicktrail_storage::Result<()> {
    let agent = delivery_agent(e.config.timeout, e.config.destinations);
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Delivery>(e.config.concurrency);
    let jobs_rx = Arc::new(std::sync::Mutex::new(jobs_rx));
    let (done_tx, done_rx) = mpsc::channel::<Outcome>();
    let workers: Vec<_> = (0..e.config.concurrency)
        .map(|_| {
            let (rx, tx, agent) = (jobs_rx.clone(), done_tx.clone(), agent.clone());
            std::thread::spawn(move || loop {
                let job = rx.lock().unwrap().recv();
                let Ok(d) = job else { return };
                if tx.send(attempt(&agent, d)).is_err() {
                    return;
                }
            })
        })
        .collect();
    while !stop.load(Ordering::SeqCst) {
        e.read_inputs()?;
        e.run_commands(&commands)?;
        // Dispatch what is due, within the concurrency and per-host bounds: first the
        // backlogs of hosts with a free slot, then the queue (a busy host's deliveries move
        // to its backlog, in order, to wait for a slot there).
        let now = Instant::now();
        let mut closed = false;
        let ready: Vec<String> = e
            .backlog
            .iter()
            .filter(|(h, q)| {
                !q.is_empty() && e.per_host.get(*h).copied().unwrap_or(0) < e.config.per_host
            })
            .map(|(h, _)| h.clone())
            .collect();
        for host in ready {
            while e.in_flight < e.config.concurrency
                && e.per_host.get(&host).copied().unwrap_or(0) < e.config.per_host
            {
                let Some(d) = e.backlog.get_mut(&host).and_then(VecDeque::pop_front) else {
                    break;
                };
                e.backlogged -= 1;
                if let Some(why) = e.stale(&d) {
                    e.drop_stale(d, why)?;
                    continue;
                }
                *e.per_host.entry(host.clone()).or_insert(0) += 1;
                e.in_flight += 1;
                if jobs_tx.send(d).is_err() {
                    closed = true;
                    break;
                }
            }
        }
        e.backlog.retain(|_, q| !q.is_empty());
        while !closed && e.in_flight < e.config.concurrency {
            let Some(Reverse((due, seq))) = e.queue.peek().copied() else {
                break;
            };
            if due > now {
                break;
            }
            e.queue.pop();
            let d = e.queued.remove(&seq).expect("queued");
            if let Some(why) = e.stale(&d) {
                e.drop_stale(d, why)?;
                continue;
            }
            let host = url::Url::parse(&d.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let busy = e.per_host.entry(host.clone()).or_insert(0);
            if *busy >= e.config.per_host {
                e.backlog.entry(host).or_default().push_back(d);
                e.backlogged += 1;
                continue;
            }
            *busy += 1;
            e.in_flight += 1;
            if jobs_tx.send(d).is_err() {
                break;
            }
        }
        // Saturated: nothing can be sent until an answer comes, so wait for one.
        let wait = if e.in_flight >= e.config.concurrency {
            Duration::from_millis(200)
        } else {
            e.queue
                .peek()
                .map(|Reverse((due, _))| due.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(200))
                .min(Duration::from_millis(200))
        };
        match done_rx.recv_timeout(wait) {
            Ok(o) => {
                e.settle(o)?;
                while let Ok(o) = done_rx.try_recv() {
                    e.settle(o)?;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(jobs_tx);
    // Let in-flight attempts finish (bounded by the request timeout) and record them.
    while e.in_flight > 0 {
        match done_rx.recv_timeout(e.config.timeout + Duration::from_secs(1)) {
            Ok(o) => e.settle(o)?,
            Err(_) => break,
        }
    }
    drop(workers);
    let _ = e
        .journal
        .partition(crate::system::POSTBACK_ATTEMPTS)
        .map(|p| p.sync());
    Ok(())
}

/// The dispatcher's actor: a [`ThreadActor`] running [`run`].
#[derive(Debug)]
pub struct Dispatcher;

impl Dispatcher {
    /// Starts the dispatcher (its thread opens its state and reports running or failure).
    pub fn start(
        arbiter: &ArbiterHandle,
        ctx: ChildCtx,
        store: Arc<EntityStore>,
        config: DispatcherConfig,
        inputs: Vec<String>,
        commands: Commands,
        clicks: crate::clicks::SharedClicks,
    ) -> Recipient<Stop> {
        ThreadActor::start(arbiter, ctx, "postback-dispatcher", move |ctx, stop| {
            let mut engine = Engine::open(ctx.journal.clone(), store, config, &inputs)
                .map_err(|e| e.to_string())?;
            engine.clicks = Some(crate::clicks::ClickLookup {
                clicks,
                journal: ctx.journal.clone(),
            });
            ctx.running();
            run(engine, stop, commands).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_render_encoded_in_urls_and_unknown_ones_stay() {
        let mut v = BTreeMap::new();
        v.insert("click_id", "a b&c".to_string());
        v.insert("amount", "4990".to_string());
        assert_eq!(
            render(
                "https://t.example/pb?cid={click_id}&a={amount}&x={nope}",
                &v,
                true
            ),
            "https://t.example/pb?cid=a+b%26c&a=4990&x={nope}"
        );
        assert_eq!(render("{click_id}", &v, false), "a b&c");
        assert_eq!(render("{{amount}}", &v, true), "{4990}");
    }

    #[test]
    fn templates_name_only_known_macros_with_balanced_braces() {
        assert_eq!(
            check_template("https://t.example/pb?c={click_id}&t={timestamp}&s={sub5}"),
            Ok(())
        );
        assert_eq!(check_template("https://t.example/plain"), Ok(()));
        let err = check_template("https://t.example/?c={clickid}").unwrap_err();
        assert_eq!(err, TemplateError::UnknownMacro("clickid".into()));
        let msg = err.to_string();
        assert!(
            msg.starts_with("unknown macro {clickid}; known macros: {click_id}, "),
            "{msg}"
        );
        for m in MACROS {
            assert!(msg.contains(&format!("{{{m}}}")), "{m} listed: {msg}");
        }
        for bad in [
            "https://t.example/?c={click_id",
            "https://t.example/?c=}",
            "{a{b}}",
        ] {
            assert!(
                matches!(check_template(bad), Err(TemplateError::Unbalanced(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            check_template("https://t.example/{}"),
            Err(TemplateError::UnknownMacro(_))
        ));
        // Every known macro has a value in every delivery (blank when the event has none).
        let blank = blank_values();
        assert!(MACROS.iter().all(|m| blank.contains_key(m)));
        assert_eq!(
            render("{timestamp}{payout}", &blank, true),
            "",
            "known macros never stay as written"
        );
    }

    /// Every trigger about a conversion: created (v1 and v2), approved, reversed, and the
    /// commission the ledger posts. For an imported conversion none of them fires.
    #[test]
    fn imported_conversions_fire_no_trigger_at_all() {
        use clicktrail_storage::schema::{samples, ConversionReversalV3, LedgerCause, Posting};
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), Default::default()).unwrap();
        let mut w = journal.partition("ingest-0").unwrap().writer().unwrap();
        let mut postbacks = HashMap::new();
        postbacks.insert(
            "pb1".to_string(),
            Postback {
                id: "pb1".into(),
                affiliate_id: None,
                url: "https://t.example/pb?c={conversion_id}".into(),
                method: Method::Get,
                triggers: vec![
                    Trigger::ConversionCreated,
                    Trigger::ConversionApproved,
                    Trigger::ConversionReversed,
                    Trigger::CommissionCreated,
                ],
                secret: "s".into(),
                created_at_us: 0,
                enabled: true,
            },
        );
        // (conversion id, imported flag) of each conversion: a live one, an imported one,
        // and an imported one written without the flag (its id says it).
        let cases = [("cv_live", false), ("cvi_old", true), ("cvi_noflag", false)];
        let mut offsets = Vec::new();
        for (id, imported) in cases {
            let c = ConversionV2 {
                conversion_id: id.into(),
                imported,
                ..samples::conversion().into()
            };
            let mut at = vec![w.append_event(None, &c).unwrap().offset];
            let status = ConversionStatusChange {
                conversion_id: id.into(),
                ..samples::status_change()
            };
            at.push(w.append_event(None, &status).unwrap().offset);
            let rev = ConversionReversalV3 {
                conversion_id: id.into(),
                ..samples::reversal_v3()
            };
            at.push(w.append_event(None, &rev).unwrap().offset);
            let op = crate::ledger::Op::Sale {
                conversion_id: id.into(),
                merchant_id: "m".into(),
                campaign_id: "c".into(),
                event: "sale".into(),
                amount_minor: 1000,
                currency: "EUR".into(),
                occurred_at_us: 1,
                customer_id: None,
                touchpoints: vec![("a".into(), 1_000_000)],
                order_id: "o".into(),
                clicks: vec![("a".into(), "k".into())],
                plan: None,
                plan_key: "p#1".into(),
                mature_at_us: 2,
                performance: false,
                await_verdict_until_us: 0,
            };
            let txn = LedgerTxn {
                txn_id: format!("sale:{id}"),
                cause: LedgerCause::Sale,
                conversion_id: id.into(),
                postings: vec![
                    Posting {
                        account: "merchant:m".into(),
                        detail: "commission".into(),
                        amount_minor: -100,
                    },
                    Posting {
                        account: "partner:a:pending".into(),
                        detail: "commission".into(),
                        amount_minor: 100,
                    },
                ],
                op_json: serde_json::to_string(&op).unwrap(),
                ..samples::ledger_txn()
            };
            at.push(w.append_event(None, &txn).unwrap().offset);
            // The v1 form of the live one, too.
            if id == "cv_live" {
                let v1 = clicktrail_storage::schema::Conversion {
                    conversion_id: id.into(),
                    ..samples::conversion()
                };
                at.push(w.append_event(None, &v1).unwrap().offset);
            }
            offsets.push((id, at));
        }
        let p = journal.get("ingest-0").unwrap();
        let events = ConversionEvents::default();
        for (id, at) in offsets {
            let mut triggers = Vec::new();
            for off in at {
                let mut r = p.reader_at(off).unwrap();
                let rec = r.next().unwrap().unwrap();
                let lookups = Lookups {
                    clicks: None,
                    events: &events,
                };
                triggers.extend(
                    deliveries_of(&postbacks, p.id(), &rec, lookups, &Wanted::ALL)
                        .into_iter()
                        .map(|d| d.trigger.as_str()),
                );
            }
            let want: &[&str] = if id == "cv_live" {
                &[
                    "conversion.created",
                    "conversion.approved",
                    "conversion.reversed",
                    "commission.created",
                    "conversion.created",
                ]
            } else {
                &[]
            };
            assert_eq!(triggers, want, "{id}");
        }
    }

    #[test]
    fn conversion_events_are_remembered_within_their_bound() {
        let mut e = ConversionEvents::default();
        e.remember("c1", "sale");
        e.remember("c2", "lead");
        e.remember("c1", "sale");
        assert_eq!(
            (e.get("c1"), e.get("c2"), e.get("c3")),
            (Some("sale"), Some("lead"), None)
        );
        assert_eq!(
            e.order.len(),
            2,
            "a conversion read again is not counted twice"
        );
        for i in 0..CONVERSION_EVENTS_MAX {
            e.remember(&format!("x{i}"), "sale");
        }
        assert_eq!(e.by_id.len(), CONVERSION_EVENTS_MAX);
        assert_eq!(e.get("c1"), None, "the oldest went");
        assert_eq!(e.get("x0"), Some("sale"));
        for i in 0..EVENT_NAMES_MAX + 5 {
            e.remember(&format!("n{i}"), &format!("event-{i}"));
        }
        assert_eq!(e.names.len(), EVENT_NAMES_MAX, "names are bounded");
        assert_eq!(e.get(&format!("n{}", EVENT_NAMES_MAX + 1)), None);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_payload() {
        // Reference value computed independently:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret-0123456789",b"1700000000./pb?x=1",hashlib.sha256).hexdigest())'
        assert_eq!(
            sign("secret-0123456789", 1_700_000_000, "/pb?x=1"),
            "t=1700000000,v1=1f272ba1120cadeba828954a2d53963df1888b21f7bb90df9de2a7ff3f779d8e"
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_with_bounded_jitter() {
        let c = DispatcherConfig::default();
        assert_eq!(backoff(&c, 1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(&c, 4, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(&c, 40, 0.0), Duration::from_secs(600));
        assert!(backoff(&c, 2, 0.999) < Duration::from_secs(3));
    }

    #[test]
    fn the_delivery_agent_never_connects_to_a_private_address() {
        // A live listener on loopback: the guarded agent must not even connect, whatever
        // checks ran before (this is where a rebinding name would land).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let guarded = delivery_agent(Duration::from_secs(2), Destinations::Public);
        for url in [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://localhost:{port}/x"),
        ] {
            let err = guarded.get(&url).call().unwrap_err().to_string();
            assert!(err.contains("private address"), "{url}: {err}");
            assert!(
                err.contains("allow-private-destinations"),
                "names the setting: {err}"
            );
        }
        // Through `attempt`: refused (not retried), nothing connected.
        let d = Delivery {
            id: "d".into(),
            postback_id: "p".into(),
            trigger: Trigger::ConversionCreated,
            method: Method::Get,
            url: format!("http://127.0.0.1:{port}/pb?x=1"),
            body: None,
            secret: "s".repeat(16),
            attempts: 0,
            first_us: 0,
            source: None,
        };
        let out = attempt(&guarded, d);
        assert!(out.refused && out.status == 0, "{:?}", out.error);
        assert!(out.error.unwrap().contains("private address"));
        assert!(listener.accept().is_err(), "no connection was made");
        // A proxy in the environment is ignored (through a proxy only the proxy's name
        // would be resolved by our guard).
        // SAFETY: tests in this module do not read these variables concurrently.
        unsafe { std::env::set_var("HTTP_PROXY", "http://203.0.113.9:3128") };
        let guarded = delivery_agent(Duration::from_secs(2), Destinations::Public);
        unsafe { std::env::remove_var("HTTP_PROXY") };
        let err = guarded
            .get(&format!("http://127.0.0.1:{port}/x"))
            .call()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("private address"),
            "the guard ran, not the proxy: {err}"
        );
        // Allowed (as in tests): it connects.
        let open = delivery_agent(Duration::from_secs(2), Destinations::Any);
        let server = std::thread::spawn(move || {
            listener.set_nonblocking(false).unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            );
        });
        let r = open
            .get(&format!("http://127.0.0.1:{port}/x"))
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        server.join().unwrap();
    }

    #[test]
    fn demo_mode_allows_loopback_and_nothing_else_private() {
        let d = Destinations::PublicAndLoopback;
        for ok in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "::ffff:127.0.0.1",
            "203.0.113.7",
        ] {
            assert!(d.allows(ok.parse().unwrap()), "{ok}");
        }
        for refused in [
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "fc00::1",
        ] {
            assert!(!d.allows(refused.parse().unwrap()), "{refused}");
        }
        assert!(!Destinations::Public.allows("127.0.0.1".parse().unwrap()));
        assert!(Destinations::Any.allows("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn private_destinations_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "198.18.0.1",
            "224.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
