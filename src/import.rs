//! `POST /api/v1/import`: history from another tracker, one event per line.
//!
//! ```text
//! {"type":"click","ref":"r1","at":"2026-06-01T10:00:00Z","link":"L1","ip":"203.0.113.7",...}
//! {"type":"impression","ref":"r2","at":"...","affiliate_id":"a1","campaign_id":"c1",...}
//! {"type":"conversion","ref":"r3","at":"...","merchant_id":"m1","order_id":"o-1",
//!  "click_ref":"r1","amount":"49.90","currency":"EUR",...}
//! ```
//!
//! The design:
//!
//! * **Who, what, how much.** An admin key only (401, 403);
//!   `Content-Type: application/x-ndjson` only (415); the key and type are checked before
//!   the body is read. At most `import.max-bytes` of body and `import.max-lines` lines
//!   (413).
//! * **Lines.** Numbered from 1, blank ones skipped. Each line is checked whole before
//!   anything of it is written: a bad one is refused with its number and why, and nothing
//!   of it is written; the good ones are imported.
//! * **Two passes.** Clicks and impressions first, conversions second: a conversion names
//!   its click by `click_ref` (a click of any line of this import, or of an earlier one) or
//!   by a verified `click_id`, and its click is in the journal before it.
//! * **Records, as the live paths make them.** A click gets a click id from the edge's
//!   codec (the same sequence counter) whose time is the original `at`; the click's record
//!   has `at` as its time, the campaign's destination, the edge's fingerprint of the IP,
//!   user agent and `Accept-Language` (when an IP is given), the `utm_*` pairs and the ad
//!   click ids (`gclid`, `msclkid`, `fbclid`) of `query`; it goes to the ingest shard its id
//!   names, as a live one does. A conversion is a [`ConversionV2`] with `imported`, its
//!   id starting with `cvi_` (so postbacks never fire for it or anything about it),
//!   matched to its click (`match: click_id`, the click's affiliate), its amount read by
//!   the live path's money parser, `at` as its time and `occurred_at`; it goes to the
//!   durable shard, as live ones do. Every actor then reads imported events as live ones.
//! * **References.** Each event is written right after its [`ImportRef`] (the importer's
//!   `ref` and the id it got), in the same partition and the same batch, published
//!   together. A ref is the idempotency key of its event: a ref imported before is
//!   answered with its id and never written again (counted in `existing`); conversions
//!   are also idempotent on (merchant, `order_id`), sharing the live path's index. The
//!   ref -> id index ([`RefIndex`]) is rebuilt at start in the conversion index's pass over
//!   the ingest partitions (a reference counts only when its event follows it); it grows
//!   with imported history, about 200 bytes per imported event.
//! * **Batches.** [`CHUNK_LINES`] lines are checked, then written: each shard's records
//!   in batches of at most an eighth of `ingest-queue-max` (so live traffic keeps most of
//!   the bound), then one wait per shard until they are durable (one group commit covers
//!   a round, not one per batch). A batch finding the queue full waits (up to
//!   [`QUEUE_WAIT`]) instead of answering 503. The answer comes once everything is
//!   durable.
//! * **One at a time.** A second import waits for the first: the refs of one are then
//!   known to the next.
//! * **Answer.** `200 {"imported":N,"existing":E,"refused":[{"line":L,"error":".."}],
//!   "ids":{"<ref>":"<id>"}}`: `ids` has every ref imported now or before. A journal
//!   failure answers 503: what was written before it stands, and sending the same import
//!   again answers it as existing.

// Handlers return a ready `HttpResponse` as their error: it is the answer.
#![allow(clippy::result_large_err)]

use crate::api::Api;
use crate::convert::{self, Conversions, OrderSlot, Settled};
use crate::edge::click_id::{ClickIdCodec, ClickIdError, ClickIdParts};
use crate::edge::{request, Edge};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use clicktrail_actors::catalog::{now_us, valid_id, Catalog, LinkRt, Role};
use clicktrail_actors::ingest::{
    AppendError, BatchError, BatchRecord, IngestShards, DURABLE_SHARD,
};
use clicktrail_actors::Output;
use clicktrail_storage::schema::{Click, ConversionV2, ImportRef, Impression, MatchKind, Pair};
use clicktrail_storage::{Kind, Record, RecordExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The only body type taken.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// Lines checked, then written, per round.
pub const CHUNK_LINES: usize = 256;
/// Longest a batch waits for room in the ingest queue before the import answers 503.
pub const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// How far ahead of now an event's time may be (clock skew).
pub const FUTURE_MAX_US: i64 = 5 * 60 * 1_000_000;
/// Longest `ref`.
pub const REF_LEN_MAX: usize = 128;
/// Longest `visitor_id`.
pub const VISITOR_ID_LEN_MAX: usize = 128;
const DAY_US: i64 = 86_400_000_000;

/// `[import]`, in the units the importer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_age_days: u32,
    pub max_bytes: usize,
    pub max_lines: usize,
}

impl From<&crate::config::ImportSection> for Limits {
    fn from(s: &crate::config::ImportSection) -> Limits {
        Limits {
            max_age_days: s.max_age_days,
            max_bytes: usize::try_from(s.max_bytes.0).unwrap_or(usize::MAX),
            max_lines: s.max_lines,
        }
    }
}

/// The event a reference got.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefEntry {
    kind: Kind,
    id: String,
    /// Written but its durability not yet confirmed (a sync failed): where to wait.
    unconfirmed: Option<(usize, u64)>,
}

/// Every imported reference and the id its event got (see the module docs).
#[derive(Debug, Default)]
pub struct RefIndex {
    refs: HashMap<String, RefEntry>,
    /// Per partition, a reference read whose event has not been read yet.
    pending: HashMap<String, ImportRef>,
}

impl RefIndex {
    /// Reads one record of an ingest partition, in partition order: a reference counts
    /// once the next record of its partition is its event (a crash between the two
    /// leaves a reference that never counts).
    pub fn note(&mut self, partition: &str, rec: &Record<'_>) {
        if rec.kind == Kind::ImportRef as u16 {
            if let Some(r) = rec.to_owned_event::<ImportRef>() {
                self.pending.insert(partition.to_string(), r);
            }
            return;
        }
        if self.pending.is_empty() {
            return;
        }
        let Some(r) = self.pending.remove(partition) else {
            return;
        };
        if let Some((kind, id)) = subject_of(rec) {
            if kind as u16 == r.subject_kind && id == r.subject_id {
                self.refs.insert(
                    r.import_ref,
                    RefEntry {
                        kind,
                        id: r.subject_id,
                        unconfirmed: None,
                    },
                );
            }
        }
    }

    /// References known.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

/// The kind and id of an event a reference may name.
fn subject_of<'a>(rec: &Record<'a>) -> Option<(Kind, &'a str)> {
    use clicktrail_storage::schema::Conversion;
    match rec.kind_enum()? {
        Kind::Click => rec
            .event::<Click>()
            .map(|c| (Kind::Click, c.click_id.as_str())),
        Kind::Impression => rec
            .event::<Impression>()
            .map(|i| (Kind::Impression, i.impression_id.as_str())),
        Kind::Conversion => rec
            .event::<ConversionV2>()
            .map(|c| c.conversion_id.as_str())
            .or_else(|| rec.event::<Conversion>().map(|c| c.conversion_id.as_str()))
            .map(|id| (Kind::Conversion, id)),
        _ => None,
    }
}

/// What the import handler shares.
pub struct Importer {
    edge: web::Data<Edge>,
    conversions: web::Data<Conversions>,
    limits: Limits,
    refs: Mutex<RefIndex>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Importer {
    /// The importer, writing through the edge's shards and codec, with the references
    /// read at start.
    pub fn new(
        edge: web::Data<Edge>,
        conversions: web::Data<Conversions>,
        refs: RefIndex,
        limits: Limits,
    ) -> Importer {
        Importer {
            edge,
            conversions,
            limits,
            refs: Mutex::new(RefIndex {
                pending: HashMap::new(),
                ..refs
            }),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    fn ingest(&self) -> &IngestShards {
        &self.edge.ingest
    }

    fn codec(&self) -> &ClickIdCodec {
        &self.edge.codec
    }
}

/// The route, its body bounded by `import.max-bytes`.
pub fn routes(max_bytes: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.service(
            web::resource("/api/v1/import")
                .app_data(crate::http::BodySizeMax(max_bytes))
                .route(web::post().to(post_import)),
        );
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> HttpResponse {
    crate::api::error(status, msg)
}

async fn post_import(
    req: HttpRequest,
    payload: web::Payload,
    imp: web::Data<Importer>,
    api: web::Data<Api>,
) -> HttpResponse {
    if let Err(r) = crate::api::authorize(&req, &api, Role::Admin) {
        return r;
    }
    if let Err(r) = check_content_type(&req) {
        return r;
    }
    let body = match read_body(payload, imp.limits.max_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let lines = match split_lines(&body, imp.limits.max_lines) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let _one = imp.one_at_a_time.lock().await;
    let mut run = Run::new(&imp);
    match run.import(&lines).await {
        Ok(()) => HttpResponse::Ok().json(&run.answer),
        Err(r) => r,
    }
}

fn check_content_type(req: &HttpRequest) -> Result<(), HttpResponse> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case(CONTENT_TYPE) {
        return Ok(());
    }
    Err(error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("an import is {CONTENT_TYPE} (one JSON event per line), not {ct:?}"),
    ))
}

async fn read_body(payload: web::Payload, max: usize) -> Result<web::Bytes, HttpResponse> {
    match payload.to_bytes_limited(max).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        )),
        Err(_) => Err(crate::http::closing(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("import body over {max} bytes (import.max-bytes): split it"),
        ))),
    }
}

/// One non-blank line: its number (from 1) and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line<'b> {
    number: usize,
    text: &'b [u8],
}

/// The body's non-blank lines; 413 past `max` lines (blank ones count; a final newline
/// does not start one).
fn split_lines(body: &[u8], max: usize) -> Result<Vec<Line<'_>>, HttpResponse> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    let mut lines = Vec::new();
    for (i, text) in body.split(|b| *b == b'\n').enumerate() {
        if i >= max {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("more than {max} lines (import.max-lines): split the import"),
            ));
        }
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !text.iter().all(u8::is_ascii_whitespace) {
            lines.push(Line {
                number: i + 1,
                text,
            });
        }
    }
    Ok(lines)
}

/// A click or impression line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TouchLine {
    #[serde(rename = "type")]
    _type: String,
    #[serde(rename = "ref", deserialize_with = "crate::http::json::id_text")]
    reference: String,
    at: Value,
    link: Option<String>,
    affiliate_id: Option<String>,
    campaign_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    referrer: Option<String>,
    accept_language: Option<String>,
    sec_fetch_dest: Option<String>,
    sec_fetch_site: Option<String>,
    visitor_id: Option<String>,
    sub1: Option<String>,
    sub2: Option<String>,
    sub3: Option<String>,
    sub4: Option<String>,
    sub5: Option<String>,
    query: Option<Map<String, Value>>,
}

/// A conversion line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversionLine {
    #[serde(rename = "type")]
    _type: String,
    #[serde(rename = "ref", deserialize_with = "crate::http::json::id_text")]
    reference: String,
    at: Value,
    merchant_id: String,
    #[serde(deserialize_with = "crate::http::json::id_text")]
    order_id: String,
    click_ref: Option<String>,
    click_id: Option<String>,
    event: Option<String>,
    #[serde(default, deserialize_with = "crate::http::json::text_or_number")]
    amount: Option<String>,
    currency: Option<String>,
    #[serde(default, deserialize_with = "crate::http::json::opt_id_text")]
    customer_id: Option<String>,
    customer_email: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
}

/// A line's JSON object and its type.
fn parse_line(text: &[u8]) -> Result<(Map<String, Value>, String), String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err("a line must be one JSON object".into());
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err("type is missing: click, impression or conversion".into()),
    };
    // The API's key convention (snake_case, kebab-case accepted), except in `query`,
    // whose keys are the tracking URL's own.
    let query = obj.remove("query");
    let Value::Object(mut obj) = crate::http::json::snake_keys(Value::Object(obj)) else {
        unreachable!("an object stays an object");
    };
    if let Some(q) = query {
        obj.insert("query".into(), q);
    }
    Ok((obj, kind))
}

/// A line's object as `T`, errors naming the field.
fn typed<T: serde::de::DeserializeOwned>(obj: Map<String, Value>) -> Result<T, String> {
    serde_path_to_error::deserialize(Value::Object(obj)).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => e.into_inner().to_string(),
            _ => format!("{path}: {}", e.into_inner()),
        }
    })
}

/// A text field: at most `max` bytes, no control characters (absent: empty).
fn text(what: &str, v: Option<String>, max: usize) -> Result<String, String> {
    let v = v.unwrap_or_default();
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be at most {max} bytes of printable characters"
        ));
    }
    Ok(v)
}

/// The click record's `utm` pairs from a line's `query`: its `utm_*` pairs (at most
/// [`request::UTM_MAX`], as the edge passes them on), then its ad click ids; other
/// parameters are ignored, as the edge ignores them.
fn query_pairs(query: Option<Map<String, Value>>) -> Result<Vec<Pair>, String> {
    let (mut utm, mut ads) = (Vec::new(), Vec::new());
    for (name, value) in query.unwrap_or_default() {
        let Value::String(value) = value else {
            return Err(format!("query.{name} must be a string"));
        };
        let max = if name.starts_with("utm_") && name.len() <= 32 {
            request::UTM_LEN_MAX
        } else if request::AD_CLICK_IDS.contains(&name.as_str()) {
            request::AD_CLICK_ID_LEN_MAX
        } else {
            continue;
        };
        let value = text(&format!("query.{name}"), Some(value), max)?;
        if name.chars().any(char::is_control) {
            return Err("query names must be printable".into());
        }
        let list = if max == request::UTM_LEN_MAX && name.starts_with("utm_") {
            &mut utm
        } else {
            &mut ads
        };
        list.push(Pair { name, value });
    }
    if utm.len() > request::UTM_MAX {
        return Err(format!(
            "query: at most {} utm_ parameters",
            request::UTM_MAX
        ));
    }
    utm.extend(ads);
    Ok(utm)
}

/// What this import knows of a ref.
#[derive(Debug, Clone)]
enum Here {
    Event { line: usize, kind: Kind, id: String },
    Refused { line: usize },
}

/// One event ready to write.
struct Planned {
    reference: String,
    kind: Kind,
    id: String,
    shard: usize,
    event: Output,
    /// A conversion's record (its order is reserved in the conversion index).
    conversion: Option<ConversionV2>,
}

/// What one line comes to.
enum Step {
    Write(Box<Planned>),
    /// A conversion: read in the second pass.
    Later,
    /// Its ref (or its conversion's order) was recorded before (its id is in the answer).
    Existing,
}

#[derive(Debug, Default, Serialize)]
struct Answer {
    imported: u64,
    existing: u64,
    refused: Vec<Refusal>,
    ids: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Refusal {
    line: usize,
    error: String,
}

/// One import's work (see the module docs).
struct Run<'a> {
    imp: &'a Importer,
    catalog: Arc<Catalog>,
    now_us: i64,
    here: HashMap<String, Here>,
    /// (merchant, order id) of this import's conversions: (line, digest, id).
    orders: HashMap<(String, String), (usize, u64, String)>,
    links: HashMap<(String, String), Result<Arc<LinkRt>, String>>,
    /// Refs answered as existing whose record's durability is not yet confirmed.
    unconfirmed: Vec<(usize, u64)>,
    answer: Answer,
}

impl<'a> Run<'a> {
    fn new(imp: &'a Importer) -> Run<'a> {
        Run {
            imp,
            catalog: imp.edge.store.snapshot(),
            now_us: now_us(),
            here: HashMap::new(),
            orders: HashMap::new(),
            links: HashMap::new(),
            unconfirmed: Vec::new(),
            answer: Answer::default(),
        }
    }

    /// Both passes, then the durability of refs answered as existing.
    async fn import(&mut self, lines: &[Line<'_>]) -> Result<(), HttpResponse> {
        let mut later = Vec::new();
        for chunk in lines.chunks(CHUNK_LINES) {
            let mut planned = Vec::new();
            for line in chunk {
                match self.touch_line(line) {
                    Ok(Step::Later) => later.push(*line),
                    other => self.take(line, other, &mut planned),
                }
            }
            self.write(planned).await?;
        }
        for chunk in later.chunks(CHUNK_LINES) {
            let mut planned = Vec::new();
            for line in chunk {
                let step = self.conversion_line(line);
                self.take(line, step, &mut planned);
            }
            self.write(planned).await?;
        }
        for (shard, end) in std::mem::take(&mut self.unconfirmed) {
            if !self.imp.ingest().wait_durable(shard, end).await {
                return Err(unavailable(
                    "an earlier import's records are not yet durable",
                ));
            }
        }
        Ok(())
    }

    /// Files a line's outcome: planned for writing, answered as existing, or refused.
    fn take(&mut self, line: &Line<'_>, step: Result<Step, String>, planned: &mut Vec<Planned>) {
        match step {
            Ok(Step::Write(p)) => planned.push(*p),
            Ok(Step::Later) => {}
            Ok(Step::Existing) => self.answer.existing += 1,
            Err(error) => {
                if let Some(r) = line_ref(line.text) {
                    self.here
                        .entry(r)
                        .or_insert(Here::Refused { line: line.number });
                }
                self.answer.refused.push(Refusal {
                    line: line.number,
                    error,
                });
            }
        }
    }

    /// A line of the first pass: a click or an impression is planned, a conversion left
    /// for the second.
    fn touch_line(&mut self, line: &Line<'_>) -> Result<Step, String> {
        let (obj, kind) = parse_line(line.text)?;
        let kind = match kind.as_str() {
            "click" => Kind::Click,
            "impression" => Kind::Impression,
            "conversion" => return Ok(Step::Later),
            other => {
                return Err(format!(
                    "unknown type {other:?}: click, impression or conversion"
                ))
            }
        };
        let t: TouchLine = typed(obj)?;
        if let Some(step) = self.known(&t.reference, kind, line.number)? {
            return Ok(step);
        }
        let planned = self.plan_touch(t, kind)?;
        self.plan_done(line.number, planned)
    }

    /// A line of the second pass: a conversion.
    fn conversion_line(&mut self, line: &Line<'_>) -> Result<Step, String> {
        let (obj, _) = parse_line(line.text)?;
        let c: ConversionLine = typed(obj)?;
        if let Some(step) = self.known(&c.reference, Kind::Conversion, line.number)? {
            return Ok(step);
        }
        let reference = c.reference.clone();
        let conv = self.conversion(c)?;
        let key = (conv.merchant_id.clone(), conv.order_id.clone());
        let digest = convert::conversion_digest(&conv);
        if let Some(step) = self.order_seen(&key, digest, &reference, line.number)? {
            return Ok(step);
        }
        match self.imp.conversions.reserve_imported(&conv) {
            OrderSlot::Reserved => {}
            OrderSlot::Same { id, unconfirmed } => {
                self.unconfirmed.extend(unconfirmed);
                return Ok(self.existing(reference, Kind::Conversion, id, line.number));
            }
            OrderSlot::Busy => {
                return Err(format!(
                "order_id {:?} of {:?} is being recorded by another request: send this line again",
                key.1, key.0
            ))
            }
            OrderSlot::Conflict => {
                return Err(format!(
                    "order_id {:?} of {:?} is already recorded with different data",
                    key.1, key.0
                ))
            }
        }
        self.orders
            .insert(key, (line.number, digest, conv.conversion_id.clone()));
        let planned = Planned {
            reference,
            kind: Kind::Conversion,
            id: conv.conversion_id.clone(),
            shard: DURABLE_SHARD,
            event: Output::event(&conv),
            conversion: Some(conv),
        };
        self.plan_done(line.number, planned)
    }

    /// A planned event, its ref known to this import.
    fn plan_done(&mut self, line: usize, p: Planned) -> Result<Step, String> {
        self.here.insert(
            p.reference.clone(),
            Here::Event {
                line,
                kind: p.kind,
                id: p.id.clone(),
            },
        );
        Ok(Step::Write(Box::new(p)))
    }

    /// A ref already used: in this import (refused), or by an earlier one (its id).
    fn known(&mut self, reference: &str, kind: Kind, line: usize) -> Result<Option<Step>, String> {
        convert::bounded_text("ref", reference, REF_LEN_MAX)?;
        if let Some(Here::Event { line: l, .. } | Here::Refused { line: l }) =
            self.here.get(reference)
        {
            return Err(format!("ref {reference:?} repeats line {l}"));
        }
        let known = self.imp.refs.lock().unwrap().refs.get(reference).cloned();
        let Some(e) = known else {
            return Ok(None);
        };
        if e.kind != kind {
            return Err(format!(
                "ref {reference:?} was imported as a {}, not a {}",
                e.kind.name(),
                kind.name()
            ));
        }
        self.unconfirmed.extend(e.unconfirmed);
        Ok(Some(self.existing(reference.to_string(), kind, e.id, line)))
    }

    /// The same (merchant, order) on an earlier line of this import.
    fn order_seen(
        &mut self,
        key: &(String, String),
        digest: u64,
        reference: &str,
        line: usize,
    ) -> Result<Option<Step>, String> {
        let Some((l, d, id)) = self.orders.get(key).cloned() else {
            return Ok(None);
        };
        if d != digest {
            return Err(format!(
                "order_id {:?} of {:?} repeats line {l} with different data",
                key.1, key.0
            ));
        }
        Ok(Some(self.existing(
            reference.to_string(),
            Kind::Conversion,
            id,
            line,
        )))
    }

    fn existing(&mut self, reference: String, kind: Kind, id: String, line: usize) -> Step {
        let here = Here::Event {
            line,
            kind,
            id: id.clone(),
        };
        self.here.insert(reference.clone(), here);
        self.answer.ids.insert(reference, id);
        Step::Existing
    }

    /// An event's time: inside [now - max-age-days, now + 5 minutes].
    fn time(&self, at: &Value) -> Result<i64, String> {
        let at = crate::http::time::parse(at).map_err(|e| format!("at: {e}"))?;
        if at > self.now_us + FUTURE_MAX_US {
            return Err("at is more than 5 minutes ahead of now".into());
        }
        let days = self.imp.limits.max_age_days;
        if at < self.now_us - days as i64 * DAY_US {
            return Err(format!(
                "at is more than {days} days ago (import.max-age-days)"
            ));
        }
        Ok(at)
    }

    /// A touch's link: by code, or the link of an affiliate on a campaign.
    fn link(&mut self, t: &TouchLine) -> Result<Arc<LinkRt>, String> {
        match (&t.link, &t.affiliate_id, &t.campaign_id) {
            (Some(code), None, None) => self
                .catalog
                .link(code)
                .cloned()
                .ok_or_else(|| format!("unknown link {code:?}")),
            (None, Some(a), Some(c)) => {
                let key = (a.clone(), c.clone());
                if let Some(found) = self.links.get(&key) {
                    return found.clone();
                }
                let found = link_of_pair(&self.catalog, a, c);
                self.links.insert(key, found.clone());
                found
            }
            (Some(_), _, _) => Err("give link, or affiliate_id and campaign_id, not both".into()),
            _ => Err("give link, or affiliate_id and campaign_id".into()),
        }
    }

    /// A click or impression, checked, with its id and record.
    fn plan_touch(&mut self, t: TouchLine, kind: Kind) -> Result<Planned, String> {
        let at_us = self.time(&t.at)?;
        let link = self.link(&t)?;
        let reference = t.reference.clone();
        let mut click = self.click_record(t, &link, at_us)?;
        let (id, shard) = self.new_click_id(&link, at_us);
        click.click_id = id.clone();
        let event = match kind {
            Kind::Click => Output::event(&click),
            _ => Output::event(&impression_of(click)),
        };
        Ok(Planned {
            reference,
            kind,
            id,
            shard,
            event,
            conversion: None,
        })
    }

    /// A touch line's click record, checked (its id still to be given).
    fn click_record(&self, t: TouchLine, link: &LinkRt, at_us: i64) -> Result<Click, String> {
        let keep = request::HEADER_KEEP_MAX;
        let user_agent = text("user_agent", t.user_agent, keep)?;
        let accept_language = text("accept_language", t.accept_language, keep)?;
        if let Some(v) = &t.visitor_id {
            convert::bounded_text("visitor_id", v, VISITOR_ID_LEN_MAX)?;
        }
        let ip = t.ip.as_deref().map(|ip| convert::check_ip("ip", ip));
        let ip = ip.transpose()?;
        let edge = &self.imp.edge;
        // As the edge computes it (for a browser that did not opt out: an import says
        // nothing of that, so whenever an IP is given).
        let fingerprint = ip.map(|ip| {
            let parts: [&str; 2] = [&user_agent, &accept_language];
            request::fingerprint(&edge.fingerprint_key, &ip.to_string(), &parts)
        });
        Ok(Click {
            at_us,
            click_id: String::new(),
            link_code: link.link.code.clone(),
            affiliate_id: link.link.affiliate_id.clone(),
            campaign_id: link.link.campaign_id.clone(),
            sub_ids: sub_ids([t.sub1, t.sub2, t.sub3, t.sub4, t.sub5], link)?,
            ip: ip.map_or(String::new(), |ip| {
                convert::stored_ip(ip, edge.tracking.ip_truncation)
            }),
            user_agent,
            referrer: text("referrer", t.referrer, keep)?,
            accept_language,
            sec_fetch_dest: text("sec_fetch_dest", t.sec_fetch_dest, keep)?,
            sec_fetch_site: text("sec_fetch_site", t.sec_fetch_site, keep)?,
            client_hints: Vec::new(),
            visitor_id: t.visitor_id,
            fingerprint,
            opted_out: false,
            destination: link.campaign.destination.as_str().to_string(),
            utm: query_pairs(t.query)?,
        })
    }

    /// A click id of `link` at `at_us` from the edge's codec, and the shard it names
    /// (where the record goes, as for a live click).
    fn new_click_id(&self, link: &LinkRt, at_us: i64) -> (String, usize) {
        let seq = self.imp.codec().next_seq();
        let shard = self.imp.ingest().click_shard(seq);
        let id = self.imp.codec().encode(&ClickIdParts {
            node: self.imp.edge.node_id,
            shard: shard as u8,
            time_s: (at_us / 1_000_000) as u32,
            seq,
            link: link.number,
        });
        (id, shard)
    }

    /// The click a conversion names: its id, verified.
    fn click_of(&mut self, c: &ConversionLine) -> Result<(String, ClickIdParts), String> {
        let id = match (&c.click_ref, &c.click_id) {
            (Some(_), Some(_)) => return Err("give click_ref or click_id, not both".into()),
            (None, None) => {
                return Err(
                    "a conversion needs click_ref (a click of this import or an earlier one) or click_id"
                        .into(),
                )
            }
            (None, Some(id)) => id.clone(),
            (Some(r), None) => self.click_by_ref(r)?,
        };
        let parts = self.imp.codec().decode(&id).map_err(|e| match e {
            ClickIdError::Malformed => "click_id is malformed".to_string(),
            ClickIdError::Forged => {
                "click_id failed verification (forged or from another installation)".to_string()
            }
        })?;
        Ok((id, parts))
    }

    fn click_by_ref(&mut self, r: &str) -> Result<String, String> {
        let (kind, id) = match self.here.get(r) {
            Some(Here::Event { kind, id, .. }) => (*kind, id.clone()),
            Some(Here::Refused { line }) => {
                return Err(format!(
                    "click_ref {r:?} names line {line}, which was refused"
                ))
            }
            None => {
                let known = self.imp.refs.lock().unwrap().refs.get(r).cloned();
                let Some(e) = known else {
                    return Err(format!(
                        "click_ref {r:?} is not a click of this import or an earlier one"
                    ));
                };
                self.unconfirmed.extend(e.unconfirmed);
                (e.kind, e.id)
            }
        };
        if kind != Kind::Click {
            return Err(format!("click_ref {r:?} names a {}", kind.name()));
        }
        Ok(id)
    }

    /// A conversion, checked, matched to its click, as [`ConversionV2`].
    fn conversion(&mut self, c: ConversionLine) -> Result<ConversionV2, String> {
        let at_us = self.time(&c.at)?;
        let merchant = c.merchant_id.clone();
        if !self.catalog.merchants.contains_key(&merchant) {
            return Err(format!("unknown merchant_id {merchant:?}"));
        }
        convert::bounded_text("order_id", &c.order_id, convert::FIELD_LEN_MAX)?;
        let event = c.event.clone().unwrap_or_else(|| "sale".into());
        if !valid_id(&event) {
            return Err(
                "event must be sale, lead, signup or a custom name of [A-Za-z0-9_.-]".into(),
            );
        }
        let amount =
            convert::conversion_amount(&event, c.amount.as_deref(), c.currency.as_deref())?;
        let (click_id, parts) = self.click_of(&c)?;
        let link = self
            .catalog
            .link_numbers
            .get(parts.link as usize)
            .and_then(|code| self.catalog.link(code))
            .ok_or("the click's link no longer exists")?
            .clone();
        let campaign = &link.campaign.campaign;
        if campaign.merchant_id != merchant {
            return Err(format!(
                "the click's campaign {:?} is not of merchant {merchant:?}",
                campaign.id
            ));
        }
        check_window(at_us, parts.time_s, campaign.cookie_window_days)?;
        if let Some(id) = &c.customer_id {
            convert::bounded_text("customer_id", id, convert::FIELD_LEN_MAX)?;
        }
        let buyer = self.buyer(&c)?;
        Ok(ConversionV2 {
            at_us,
            conversion_id: self
                .imp
                .conversions
                .imported_conversion_id(&merchant, &c.order_id),
            merchant_id: merchant,
            campaign_id: campaign.id.clone(),
            order_id: c.order_id,
            event,
            amount,
            customer_id: c.customer_id,
            occurred_at_us: at_us,
            click_id: Some(click_id),
            affiliate_id: Some(link.link.affiliate_id.clone()),
            match_kind: MatchKind::ClickId,
            match_confidence_ppm: 1_000_000,
            metadata: Vec::new(),
            ip: buyer.0,
            user_agent: buyer.1,
            customer_email_hash: buyer.2,
            imported: true,
        })
    }

    /// The buyer's facts, checked as the live path checks them: (IP, user agent, e-mail
    /// hash).
    fn buyer(&self, c: &ConversionLine) -> Result<(String, String, Option<String>), String> {
        let ip = match c.ip.as_deref() {
            Some(ip) => convert::stored_ip(
                convert::check_ip("ip", ip)?,
                self.imp.edge.tracking.ip_truncation,
            ),
            None => String::new(),
        };
        let user_agent = c.user_agent.clone().unwrap_or_default();
        convert::check_user_agent("user_agent", &user_agent)?;
        let email = match c.customer_email.as_deref() {
            Some(e) => {
                convert::check_email("customer_email", e)?;
                self.imp.conversions.email_hash(e)
            }
            None => None,
        };
        Ok((ip, user_agent, email))
    }

    /// Writes the planned events, each shard's in batches, waits until each shard's are
    /// durable, and files what became of them.
    async fn write(&mut self, planned: Vec<Planned>) -> Result<(), HttpResponse> {
        tokio::task::yield_now().await; // a round of checking done: let live requests in
        let mut by_shard: BTreeMap<usize, Vec<Planned>> = BTreeMap::new();
        for p in planned {
            by_shard.entry(p.shard).or_default().push(p);
        }
        let mut failed = None;
        for (shard, events) in by_shard {
            if failed.is_some() {
                self.settle(&events, Settled::NotWritten);
                continue;
            }
            let (whole, result) = self.append_all(shard, &events).await;
            let end = match result {
                Ok(end) if self.imp.ingest().wait_durable(shard, end).await => {
                    self.settle(&events, Settled::Recorded);
                    continue;
                }
                Ok(end) => {
                    failed = Some(unavailable("written but not yet durable"));
                    end
                }
                Err((end, why)) => {
                    failed = Some(unavailable(&why));
                    end
                }
            };
            // Whole pairs written stand, their durability unconfirmed (a lone reference
            // never counts: see `RefIndex::note`); the rest were not written.
            self.settle(&events[..whole], Settled::Written { shard, end });
            self.settle(&events[whole..], Settled::NotWritten);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Appends one shard's events, each right after its reference, in batches of at most
    /// an eighth of the ingest queue, waiting for room when it is full. Returns how many
    /// events were written whole, and the end of what was written (or why not all was).
    async fn append_all(
        &self,
        shard: usize,
        events: &[Planned],
    ) -> (usize, Result<u64, (u64, String)>) {
        let per_batch = (self.imp.ingest().queue_max() / 16).clamp(1, 256);
        let (mut whole, mut end) = (0, 0);
        for batch in events.chunks(per_batch) {
            match self.append_batch(shard, batch).await {
                Ok(e) => (whole, end) = (whole + batch.len(), e),
                Err(e) => {
                    let why = e.error.to_string();
                    return (whole + e.written / 2, Err((e.end.max(end), why)));
                }
            }
        }
        (whole, Ok(end))
    }

    /// One batch (not awaited until durable: the round waits once per shard).
    async fn append_batch(&self, shard: usize, batch: &[Planned]) -> Result<u64, BatchError> {
        let refs: Vec<Output> = batch
            .iter()
            .map(|p| {
                Output::event(&ImportRef {
                    at_us: self.now_us,
                    import_ref: p.reference.clone(),
                    subject_kind: p.kind as u16,
                    subject_id: p.id.clone(),
                })
            })
            .collect();
        let records: Vec<BatchRecord<'_>> = refs
            .iter()
            .zip(batch)
            .flat_map(|(r, p)| [r, &p.event])
            .map(|o| BatchRecord {
                kind: o.kind,
                version: o.version,
                payload: &o.payload,
            })
            .collect();
        let deadline = Instant::now() + QUEUE_WAIT;
        loop {
            match self.imp.ingest().append_batch(shard, &records, false).await {
                Ok(a) => return Ok(a.end),
                Err(e) if e.error == AppendError::Full && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Files what became of written (or not written) events: their refs, their ids in the
    /// answer, their conversions' orders.
    fn settle(&mut self, events: &[Planned], outcome: Settled) {
        let unconfirmed = match outcome {
            Settled::Recorded => None,
            Settled::Written { shard, end } => Some((shard, end)),
            Settled::NotWritten => {
                for p in events {
                    self.here.remove(&p.reference);
                    if let Some(c) = &p.conversion {
                        self.imp.conversions.settle_imported(c, outcome);
                    }
                }
                return;
            }
        };
        let mut refs = self.imp.refs.lock().unwrap();
        for p in events {
            refs.refs.insert(
                p.reference.clone(),
                RefEntry {
                    kind: p.kind,
                    id: p.id.clone(),
                    unconfirmed,
                },
            );
            if let Some(c) = &p.conversion {
                self.imp.conversions.settle_imported(c, outcome);
            }
            if outcome == Settled::Recorded {
                self.answer.imported += 1;
                self.answer.ids.insert(p.reference.clone(), p.id.clone());
            }
        }
    }
}

/// sub1..sub5: as given, else the link's.
fn sub_ids(given: [Option<String>; 5], link: &LinkRt) -> Result<Vec<String>, String> {
    let mut subs = Vec::with_capacity(5);
    for (i, s) in given.into_iter().enumerate() {
        let s = text(&format!("sub{}", i + 1), s, request::SUB_LEN_MAX)?;
        subs.push(match s.is_empty() {
            true => link.link.sub_ids.get(i).cloned().unwrap_or_default(),
            false => s,
        });
    }
    Ok(subs)
}

/// The impression of a touch line's click record (what an impression keeps).
fn impression_of(c: Click) -> Impression {
    Impression {
        at_us: c.at_us,
        impression_id: c.click_id,
        link_code: c.link_code,
        affiliate_id: c.affiliate_id,
        campaign_id: c.campaign_id,
        ip: c.ip,
        user_agent: c.user_agent,
        referrer: c.referrer,
        visitor_id: c.visitor_id,
    }
}

/// The `ref` of a line, when it can be read (to tell a later `click_ref` that its line was
/// refused).
fn line_ref(text: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Ref {
        #[serde(rename = "ref")]
        reference: String,
    }
    serde_json::from_slice::<Ref>(text)
        .ok()
        .map(|r| r.reference)
}

/// The link of an affiliate on a campaign: the pair's default link, else its first by
/// code.
fn link_of_pair(catalog: &Catalog, affiliate: &str, campaign: &str) -> Result<Arc<LinkRt>, String> {
    if !catalog.affiliates.contains_key(affiliate) {
        return Err(format!("unknown affiliate_id {affiliate:?}"));
    }
    if !catalog.campaigns.contains_key(campaign) {
        return Err(format!("unknown campaign_id {campaign:?}"));
    }
    let of_pair =
        |l: &&Arc<LinkRt>| l.link.affiliate_id == affiliate && l.link.campaign_id == campaign;
    catalog
        .link(&Catalog::default_link_code(affiliate, campaign))
        .filter(of_pair)
        .or_else(|| {
            catalog
                .links
                .values()
                .filter(of_pair)
                .min_by(|a, b| a.link.code.cmp(&b.link.code))
        })
        .cloned()
        .ok_or_else(|| format!("affiliate {affiliate:?} has no link on campaign {campaign:?}"))
}

/// A conversion must come after its click and inside the campaign's cookie window.
fn check_window(at_us: i64, click_s: u32, window_days: u32) -> Result<(), String> {
    let at_s = at_us.div_euclid(1_000_000);
    if at_s < click_s as i64 {
        return Err("the conversion's at is before its click".into());
    }
    if at_s > click_s as i64 + window_days as i64 * 86_400 {
        return Err(format!(
            "the conversion is outside the campaign's {window_days}-day cookie window after its click"
        ));
    }
    Ok(())
}

fn unavailable(why: &str) -> HttpResponse {
    use crate::http::sampled_log::{log, Kind as LogKind};
    log(LogKind::JournalFailure, ::log::Level::Error, || {
        format!("import not acknowledged: {why}")
    });
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(json!({
            "error": format!("could not record durably ({why}); send the same import again: \
                what was recorded is answered as existing")
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_from_one_and_blank_ones_skipped() {
        let body = b"{\"a\":1}\r\n\n  \n{\"b\":2}\n";
        let lines = split_lines(body, 10).unwrap();
        assert_eq!(
            lines.iter().map(|l| (l.number, l.text)).collect::<Vec<_>>(),
            vec![(1, &b"{\"a\":1}"[..]), (4, &b"{\"b\":2}"[..])]
        );
        assert_eq!(
            split_lines(body, 4).unwrap().len(),
            2,
            "a final newline ends a line"
        );
        let r = split_lines(body, 3).unwrap_err();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(split_lines(b"", 1).unwrap().is_empty());
    }

    #[test]
    fn query_keeps_utm_pairs_then_ad_click_ids_and_ignores_the_rest() {
        let q = |v: Value| query_pairs(v.as_object().cloned());
        let got =
            q(json!({"gclid": "G1", "utm_source": "news", "other": "x", "fbclid": "F"})).unwrap();
        assert_eq!(
            got.iter()
                .map(|p| (p.name.as_str(), p.value.as_str()))
                .collect::<Vec<_>>(),
            vec![("utm_source", "news"), ("fbclid", "F"), ("gclid", "G1")]
        );
        assert!(q(json!({"utm_source": 5}))
            .unwrap_err()
            .contains("query.utm_source"));
        assert!(q(json!({"gclid": "a\nb"}))
            .unwrap_err()
            .contains("query.gclid"));
        let many: Map<String, Value> = (0..11).map(|i| (format!("utm_{i}"), json!("v"))).collect();
        assert!(query_pairs(Some(many)).is_err());
        assert!(query_pairs(None).unwrap().is_empty());
    }

    #[test]
    fn conversions_come_after_their_click_inside_the_window() {
        let click_s = 1_780_000_000u32;
        let at = |s: i64| s * 1_000_000;
        assert!(check_window(at(click_s as i64), click_s, 30).is_ok());
        assert!(check_window(at(click_s as i64 + 30 * 86_400), click_s, 30).is_ok());
        assert!(check_window(at(click_s as i64 + 30 * 86_400 + 1), click_s, 30).is_err());
        assert!(check_window(at(click_s as i64 - 1), click_s, 30).is_err());
    }

    /// A reference counts only when its event follows it in its partition.
    #[test]
    fn the_ref_index_takes_a_reference_only_with_its_event() {
        use clicktrail_storage::schema::samples;
        let dir = tempfile::tempdir().unwrap();
        let journal = clicktrail_storage::Journal::open(dir.path(), Default::default()).unwrap();
        let p = journal.partition("ingest-1").unwrap();
        let mut w = p.writer().unwrap();
        let click = samples::click();
        let r = |name: &str, id: &str| ImportRef {
            at_us: 1,
            import_ref: name.into(),
            subject_kind: Kind::Click as u16,
            subject_id: id.into(),
        };
        w.append_event(None, &r("good", &click.click_id)).unwrap();
        w.append_event(None, &click).unwrap();
        w.append_event(None, &r("orphan", &click.click_id)).unwrap();
        w.append_event(None, &r("wrong", "another-id")).unwrap();
        w.append_event(None, &click).unwrap();
        let mut index = RefIndex::default();
        let mut reader = p.reader().unwrap();
        while let Some(rec) = reader.next().unwrap() {
            index.note(p.name(), &rec);
        }
        assert_eq!(index.len(), 1);
        assert_eq!(
            index.refs["good"],
            RefEntry {
                kind: Kind::Click,
                id: click.click_id.clone(),
                unconfirmed: None
            }
        );
    }
}
