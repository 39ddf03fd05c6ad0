//! The fraud engine under `/api/v1` (see `clicktrail_actors::fraud`). Admin keys only.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/fraud/verdicts?from=&to=&kind=click\|conversion&action=&limit=&cursor=&history=` | verdicts, each subject's latest (every one with `history=true`), in the order they were made; `limit` up to 100,000 (default 1,000); `next` is the cursor of the next page or null |
//! | `GET /api/v1/fraud/review?limit=&cursor=` | conversions waiting for a person, oldest first, with their reasons and evidence |
//! | `POST /api/v1/fraud/review/{subject}/allow` `{"reason"}` | a person's decision (also `/reject`): a journal event, answered once durable; the ledger releases or reverses the conversion |
//! | `GET /api/v1/fraud/clusters` | affiliates that share infrastructure, with what they share |
//! | `GET /api/v1/fraud/rules?campaign_id=` | every rule: its settings (for the campaign when given), hits and hit rate |
//! | `GET /api/v1/fraud/status` | the scorer's progress, memory and anomaly model |
//! | `POST /api/v1/fraud/models/fit` | trains the anomaly model at the scorer's next idle moment (202) |
//!
//! `from`/`to` select verdicts whose subject happened, or that were made, in `[from, to)`:
//! imported history is judged now about events of the past, and either reading finds it.

#![allow(clippy::result_large_err)]

use crate::api::{authorize, error, Api};
use crate::http::json::Keys;
use crate::ledger_api::rfc3339;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use clicktrail_actors::catalog::Role;
use clicktrail_actors::fraud::config::{PPM, RULES};
use clicktrail_actors::fraud::view::VerdictRow;
use clicktrail_actors::ingest::{AppendError, DURABLE_SHARD};
use clicktrail_storage::schema::{Event, FraudDecision, Kind, VerdictAction};
use serde::Deserialize;
use serde_json::{json, Value};

/// Most verdicts one page answers.
pub const PAGE_MAX: usize = 100_000;
/// Verdicts per page when `limit` is not given.
const PAGE_DEFAULT: usize = 1_000;
/// Longest reason a person may give.
const REASON_MAX: usize = 1_000;

pub fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/fraud/verdicts", web::get().to(verdicts))
        .route("/fraud/review", web::get().to(review_queue))
        .route("/fraud/review/{subject}/{decision}", web::post().to(decide))
        .route("/fraud/clusters", web::get().to(clusters))
        .route("/fraud/rules", web::get().to(rules))
        .route("/fraud/status", web::get().to(status))
        .route("/fraud/models/fit", web::post().to(fit))
}

fn action_name(a: VerdictAction) -> &'static str {
    match a {
        VerdictAction::Allow => "allow",
        VerdictAction::Review => "review",
        VerdictAction::Reject => "reject",
    }
}

fn ratio(ppm: u32) -> f64 {
    f64::from(ppm) / f64::from(PPM)
}

fn row_json(r: &VerdictRow) -> Value {
    json!({
        "subject_id": &*r.subject_id,
        "kind": if r.kind == Kind::Click { "click" } else { "conversion" },
        "score": ratio(r.score_ppm),
        "action": action_name(r.action),
        "reasons": r.hits.iter().map(|h| &h.reason).collect::<Vec<_>>(),
        "rules": r.hits.iter().map(|h| &h.rule).collect::<Vec<_>>(),
        "hits": r.hits.iter().map(|h| json!({"rule": h.rule, "score": ratio(h.score_ppm), "reason": h.reason})).collect::<Vec<_>>(),
        "affiliate_id": r.affiliate_id,
        "campaign_id": r.campaign_id,
        "subject_at": rfc3339(r.subject_at_us),
        "decided_at": rfc3339(r.at_us),
        "decided_by": r.decided_by,
        "note": r.note,
        "model_version": r.model_version,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictQuery {
    from: Option<String>,
    to: Option<String>,
    kind: Option<String>,
    action: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    history: Option<bool>,
}

fn bad(msg: impl Into<String>) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, msg)
}

fn page_limit(limit: Option<usize>) -> Result<usize, HttpResponse> {
    match limit {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(_) => Err(bad(format!("limit must be 1..={PAGE_MAX}"))),
    }
}

fn cursor(c: Option<&str>) -> Result<u64, HttpResponse> {
    c.filter(|c| !c.is_empty()).map_or(Ok(0), |c| {
        c.parse()
            .map_err(|_| bad("cursor: use the `next` of the previous page"))
    })
}

async fn verdicts(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let q = match web::Query::<VerdictQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => return bad(e.to_string()),
    };
    let (from, to) = match crate::ledger_api::period(q.from.as_deref(), q.to.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some("click") => Some(Kind::Click),
        Some("conversion") => Some(Kind::Conversion),
        Some(_) => return bad("kind must be click or conversion"),
    };
    let action = match q.action.as_deref() {
        None | Some("") => None,
        Some("allow") => Some(VerdictAction::Allow),
        Some("review") => Some(VerdictAction::Review),
        Some("reject") => Some(VerdictAction::Reject),
        Some(_) => return bad("action must be allow, review or reject"),
    };
    let (limit, start) = match (page_limit(q.limit), cursor(q.cursor.as_deref())) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let inside = |t: i64| t >= from && t < to;
    let (rows, next) = api.fraud.read(|v| {
        v.page(start, limit, q.history.unwrap_or(false), |r| {
            kind.is_none_or(|k| r.kind == k)
                && action.is_none_or(|a| r.action == a)
                && (inside(r.subject_at_us) || inside(r.at_us))
        })
    });
    HttpResponse::Ok().json(json!({
        "verdicts": rows.iter().map(|r| row_json(r)).collect::<Vec<_>>(),
        "next": next.map(|n| n.to_string()),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn review_queue(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let q = match web::Query::<PageQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => return bad(e.to_string()),
    };
    let (limit, skip) = match (page_limit(q.limit), cursor(q.cursor.as_deref())) {
        (Ok(l), Ok(c)) => (l, c as usize),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let (rows, total) = api.fraud.read(|v| v.review_queue(skip, limit));
    let next = (skip + rows.len() < total).then(|| (skip + rows.len()).to_string());
    HttpResponse::Ok().json(json!({
        "items": rows.iter().map(|r| row_json(r)).collect::<Vec<_>>(),
        "total": total,
        "next": next,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    reason: String,
}

async fn decide(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (subject, decision) = path.into_inner();
    let action = match decision.to_ascii_lowercase().as_str() {
        "allow" => VerdictAction::Allow,
        "reject" => VerdictAction::Reject,
        _ => return error(StatusCode::NOT_FOUND, "decide with /allow or /reject"),
    };
    let b: DecisionBody = match crate::http::json::parse(&req, &body, Keys::Snake, "decision") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason = b.reason.trim();
    if reason.is_empty() || reason.len() > REASON_MAX || reason.chars().any(char::is_control) {
        return bad(format!(
            "reason: 1-{REASON_MAX} bytes of text, no control characters"
        ));
    }
    let Some(last) = api.fraud.read(|v| v.latest(&subject).cloned()) else {
        return error(StatusCode::NOT_FOUND, "no verdict on that subject");
    };
    let d = FraudDecision {
        at_us: clicktrail_actors::catalog::now_us(),
        subject_kind: last.kind as u16,
        subject_id: subject.clone(),
        action,
        reason: reason.to_string(),
        actor: format!("admin:{}", key.owner),
    };
    let payload = clicktrail_actors::Output::event(&d).payload;
    let written = api
        .ingest
        .append(
            DURABLE_SHARD,
            FraudDecision::KIND as u16,
            FraudDecision::VERSION,
            &payload,
            true,
        )
        .await;
    match written {
        Ok(_) => HttpResponse::Accepted().json(json!({
            "subject_id": subject,
            "action": action_name(action),
            "decided_by": d.actor,
            "reason": d.reason,
        })),
        Err(AppendError::Full) => error(StatusCode::SERVICE_UNAVAILABLE, "busy: try again"),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not recorded: {e}"),
        ),
    }
}

async fn clusters(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let clusters = api.fraud.read(|v| v.clusters.clone());
    let list: Vec<Value> = clusters
        .iter()
        .map(|c| {
            json!({
                "affiliates": c.affiliates,
                "evidence": c.evidence.iter().map(|s| json!({
                    "kind": s.kind.name(),
                    "value": s.value,
                    "uses": s.uses,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "clusters": list }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesQuery {
    campaign_id: Option<String>,
}

async fn rules(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let q = match web::Query::<RulesQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => return bad(e.to_string()),
    };
    let campaign = match &q.campaign_id {
        None => None,
        Some(id) => match api.store.snapshot().campaigns.get(id) {
            Some(c) => Some(c.campaign.fraud_rules.clone()),
            None => return error(StatusCode::NOT_FOUND, "no such campaign"),
        },
    };
    let (hits, scored) = api.fraud.read(|v| (v.rule_hits.clone(), v.scored));
    let rate = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let list: Vec<Value> = RULES
        .iter()
        .map(|spec| {
            let s = api.fraud_config.settings(spec.name, campaign.as_ref());
            let (c, v) = hits.get(spec.name).copied().unwrap_or_default();
            json!({
                "name": spec.name,
                "about": spec.about,
                "enabled": s.enabled,
                "score": ratio(s.score_ppm),
                "limit": s.limit,
                "window_s": s.window_s,
                "may_reject": s.may_reject,
                "hits": {"clicks": c, "conversions": v},
                "hit_rate": {"clicks": rate(c, scored.0), "conversions": rate(v, scored.1)},
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "rules": list,
        "scored": {"clicks": scored.0, "conversions": scored.1},
        "review_score": ratio(api.fraud_config.review_ppm),
        "reject_score": ratio(api.fraud_config.reject_ppm),
    }))
}

async fn status(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let body = api.fraud.read(|v| {
        let g = v.gauges;
        json!({
            "caught_up": v.caught_up,
            "lag_bytes": v.lag_bytes,
            "scored": {"clicks": v.scored.0, "conversions": v.scored.1},
            "review_queue": v.review_queue(0, 0).1,
            "model": v.model.as_ref().map(|m| json!({
                "version": m.version,
                "trained_at": rfc3339(m.at_us),
                "trained_from": rfc3339(m.trained_from_us),
                "trained_to": rfc3339(m.trained_to_us),
                "samples": m.samples,
                "features": m.features,
                "threshold": m.threshold,
                "requested_by": m.requested_by,
            })),
            "model_samples": v.model_samples,
            "memory": {
                "recent_clicks": g.recent_clicks,
                "flagged_clicks": g.flagged_clicks,
                "window_keys": g.window_keys,
                "evicted": g.evicted,
                "waiting_conversions": g.waiting_conversions,
                "judged_subjects": g.judged_subjects,
            },
        })
    });
    HttpResponse::Ok().json(body)
}

async fn fit(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let by = format!("admin:{}", key.owner);
    api.fraud.write(|v| v.fit_requested = Some(by.clone()));
    HttpResponse::Accepted().json(json!({ "requested_by": by }))
}

/// The scorer's figures on `/metrics`: hits per rule and subject kind, subjects scored,
/// the review queue, the lag and the memory it holds.
pub fn metrics(out: &mut String, view: &clicktrail_actors::fraud::SharedFraud) {
    use std::fmt::Write;
    let (hits, scored, queue, lag, g) = view.read(|v| {
        (
            v.rule_hits.clone(),
            v.scored,
            v.review_queue(0, 0).1,
            v.lag_bytes,
            v.gauges,
        )
    });
    let _ = writeln!(
        out,
        "# HELP clicktrail_fraud_rule_hits_total Subjects a fraud rule hit.\n# TYPE clicktrail_fraud_rule_hits_total counter"
    );
    for (rule, (clicks, conversions)) in &hits {
        let _ = writeln!(
            out,
            "clicktrail_fraud_rule_hits_total{{rule=\"{rule}\",kind=\"click\"}} {clicks}"
        );
        let _ = writeln!(
            out,
            "clicktrail_fraud_rule_hits_total{{rule=\"{rule}\",kind=\"conversion\"}} {conversions}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP clicktrail_fraud_scored_total Clicks and conversions the fraud scorer judged.\n# TYPE clicktrail_fraud_scored_total counter\nclicktrail_fraud_scored_total{{kind=\"click\"}} {}\nclicktrail_fraud_scored_total{{kind=\"conversion\"}} {}",
        scored.0, scored.1
    );
    for (name, kind, help, value) in [
        (
            "clicktrail_fraud_review_queue",
            "gauge",
            "Conversions waiting for a person's decision.",
            queue as u64,
        ),
        (
            "clicktrail_fraud_lag_bytes",
            "gauge",
            "Bytes of the ingest partitions the fraud scorer has not read yet.",
            lag,
        ),
        (
            "clicktrail_fraud_recent_clicks",
            "gauge",
            "Clicks the scorer remembers for their conversions (fraud.clicks-max).",
            g.recent_clicks,
        ),
        (
            "clicktrail_fraud_flagged_clicks",
            "gauge",
            "Flagged clicks remembered (fraud.flagged-max).",
            g.flagged_clicks,
        ),
        (
            "clicktrail_fraud_window_keys",
            "gauge",
            "Keys in the sliding windows (fraud.window-keys-max per family).",
            g.window_keys,
        ),
        (
            "clicktrail_fraud_evicted_total",
            "counter",
            "Entries the scorer forgot because a bound was reached.",
            g.evicted,
        ),
        (
            "clicktrail_fraud_waiting_conversions",
            "gauge",
            "Conversions waiting for their click to be read.",
            g.waiting_conversions,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}
