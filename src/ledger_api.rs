//! Balances and statements under `/api/v1`, read from the commission ledger.
//!
//! | method and path | key | does |
//! |---|---|---|
//! | `GET /api/v1/me/balance` | partner | pending, approved, paid (net) and fees per currency |
//! | `GET /api/v1/me/statement?from=&to=` | partner | the partner's postings in `[from, to)` with opening and closing balances; CSV with `Accept: text/csv` or `format=csv` |
//! | `GET /api/v1/affiliates/{id}/balance` | admin | one partner's balances |
//! | `GET /api/v1/affiliates/{id}/statement?from=&to=` | admin | one partner's statement |
//! | `GET /api/v1/ledger/balances` | admin | every partner's balances |
//! | `GET /api/v1/ledger/trial-balance` | admin | every account per currency (each currency sums to zero) |
//! | `GET /api/v1/payouts` | admin | every payout item (gross, fee, net, status, provider reference) |
//! | `POST /api/v1/payouts/run` | admin | creates a batch now with everything payable (202) |
//! | `POST /api/v1/payouts/batches/{id}/approve` | admin | approves a batch's proposed items (202) |
//! | `POST /api/v1/payouts/batches/{id}/cancel` | admin | cancels a batch's items not yet dispatched, or unsettled ones the admin found unpaid at the provider (202) |
//! | `POST /api/v1/payouts/items/{id}/paid` `{"provider_ref"}` | admin | an unsettled (retrying or held) item the admin found paid at the provider (202) |
//! | `GET /api/v1/me/payouts` | partner | the partner's payout items, fees shown |
//!
//! `from` and `to` are Unix seconds or RFC 3339 times; both optional. Amounts are given as
//! decimal strings in the currency's units and as integer minor units (`*_minor`).

#![allow(clippy::result_large_err)]

use crate::api::{authorize, error, Api};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use clicktrail_actors::catalog::Role;
use clicktrail_actors::ledger::commission::civil_from_days;
use clicktrail_actors::ledger::{cause_name, Balance, Line};
use clicktrail_storage::money;
use clicktrail_storage::schema::{Currency, Money};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/me/balance", web::get().to(my_balance))
        .route("/me/statement", web::get().to(my_statement))
        .route("/affiliates/{id}/balance", web::get().to(affiliate_balance))
        .route(
            "/affiliates/{id}/statement",
            web::get().to(affiliate_statement),
        )
        .route("/ledger/balances", web::get().to(all_balances))
        .route("/ledger/trial-balance", web::get().to(trial_balance))
        .route("/me/payouts", web::get().to(my_payouts))
        .route("/payouts", web::get().to(all_payouts))
        .route("/payouts/run", web::post().to(run_payouts))
        .route(
            "/payouts/batches/{id}/{action}",
            web::post().to(batch_action),
        )
        .route("/payouts/items/{id}/paid", web::post().to(mark_paid))
}

fn payouts_json(api: &Api, affiliate: Option<&str>) -> HttpResponse {
    use clicktrail_actors::payout::status_name;
    let items = api
        .payouts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let list: Vec<Value> = items
        .values()
        .filter(|i| affiliate.is_none_or(|a| a == i.affiliate_id))
        .map(|i| {
            let c = i.amount.currency;
            json!({
                "batch_id": i.batch_id,
                "item_id": i.item_id,
                "affiliate_id": i.affiliate_id,
                "currency": c.as_str(),
                "gross": amount(i.amount.amount_minor, c),
                "fee": amount(i.fee_minor, c),
                "net": amount(i.amount.amount_minor - i.fee_minor, c),
                "gross_minor": i.amount.amount_minor,
                "fee_minor": i.fee_minor,
                "net_minor": i.amount.amount_minor - i.fee_minor,
                "provider": i.provider,
                "destination": i.destination,
                "status": status_name(i.status),
                "attempts": i.attempt,
                "provider_ref": i.provider_ref,
                "error": i.error,
                "created_at": rfc3339(i.created_at_us),
                "updated_at": rfc3339(i.updated_at_us),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "items": list }))
}

async fn my_payouts(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    match authorize(&req, &api, Role::Partner) {
        Ok(key) => payouts_json(&api, Some(&key.owner)),
        Err(r) => r,
    }
}

async fn all_payouts(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    match authorize(&req, &api, Role::Admin) {
        Ok(_) => payouts_json(&api, None),
        Err(r) => r,
    }
}

fn queued(api: &Api, c: clicktrail_actors::payout::Command) -> HttpResponse {
    if api.payout_commands.send(c) {
        HttpResponse::Accepted().json(json!({ "queued": true }))
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many payout requests waiting",
        )
    }
}

/// How long `POST /payouts/run` waits for the scheduler's report before answering that
/// the run is still going (the scheduler may be inside a provider call).
const RUN_REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs payouts now and answers what the run did: the items created, and each partner with
/// money left out and why.
async fn run_payouts(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let Some(request) = api.payout_commands.send_run(format!("admin:{}", key.owner)) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many payout requests waiting",
        );
    };
    let started = std::time::Instant::now();
    let report = loop {
        if let Some(r) = api.payout_commands.take_report(request) {
            break r;
        }
        if started.elapsed() > RUN_REPORT_WAIT {
            return HttpResponse::Accepted().json(json!({
                "queued": true,
                "note": "the payout scheduler is busy; the run happens when it is free (GET /api/v1/payouts)",
            }));
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    if let Some(e) = report.error {
        return error(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    let money = |minor: i64, c: &str| {
        Currency::parse(c).map_or_else(|| minor.to_string(), |c| amount(minor, c))
    };
    let items: Vec<Value> = report
        .items
        .iter()
        .map(|i| {
            json!({
                "item_id": i.item_id,
                "affiliate_id": i.affiliate_id,
                "currency": i.currency,
                "gross": money(i.gross_minor, &i.currency),
                "fee": money(i.fee_minor, &i.currency),
                "net": money(i.gross_minor - i.fee_minor, &i.currency),
                "provider": i.provider,
                "status": i.status,
            })
        })
        .collect();
    let left_out: Vec<Value> = report
        .left_out
        .iter()
        .map(|l| {
            json!({
                "affiliate_id": l.affiliate_id,
                "currency": l.currency,
                "payable": money(l.payable_minor, &l.currency),
                "reason": l.reason,
                "detail": l.detail,
            })
        })
        .collect();
    let status = if report.batch_id.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    HttpResponse::build(status).json(json!({
        "batch_id": report.batch_id,
        "items_created": items.len(),
        "items": items,
        "left_out": left_out,
    }))
}

#[derive(Debug, Deserialize)]
struct MarkPaid {
    provider_ref: String,
}

async fn mark_paid(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    use clicktrail_actors::payout::Command;
    use clicktrail_storage::schema::PayoutItemStatus as S;
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let m: MarkPaid =
        match crate::http::json::parse(&req, &body, crate::http::json::Keys::Snake, "request") {
            Ok(m) => m,
            Err(r) => return r,
        };
    if m.provider_ref.trim().is_empty()
        || m.provider_ref.len() > 256
        || m.provider_ref.chars().any(char::is_control)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "provider_ref: 1-256 printable characters",
        );
    }
    let item_id = path.into_inner();
    let status = api
        .payouts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&item_id)
        .map(|i| i.status);
    match status {
        None => error(StatusCode::NOT_FOUND, "no such payout item"),
        Some(S::Held | S::Retrying | S::Intent) => queued(
            &api,
            Command::MarkPaid {
                item_id,
                provider_ref: m.provider_ref,
                actor: format!("admin:{}", key.owner),
            },
        ),
        Some(_) => error(
            StatusCode::CONFLICT,
            "only an unsettled (retrying or held) item can be marked paid",
        ),
    }
}

async fn batch_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    api: web::Data<Api>,
) -> HttpResponse {
    use clicktrail_actors::payout::Command;
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (batch_id, action) = path.into_inner();
    let known = api
        .payouts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .any(|i| i.batch_id == batch_id);
    if !known {
        return error(StatusCode::NOT_FOUND, "no such batch");
    }
    let actor = format!("admin:{}", key.owner);
    match action.as_str() {
        "approve" => queued(&api, Command::Approve { batch_id, actor }),
        "cancel" => queued(&api, Command::Cancel { batch_id, actor }),
        _ => error(
            StatusCode::NOT_FOUND,
            "batch actions are approve and cancel",
        ),
    }
}

fn amount(minor: i64, c: Currency) -> String {
    money::format(&Money {
        amount_minor: minor,
        currency: c,
    })
}

fn balance_json(c: Currency, b: &Balance) -> Value {
    json!({
        "currency": c.as_str(),
        "pending": amount(b.pending, c),
        "approved": amount(b.approved, c),
        "paid": amount(b.paid, c),
        "fees": amount(b.fees, c),
        "pending_minor": b.pending,
        "approved_minor": b.approved,
        "paid_minor": b.paid,
        "fees_minor": b.fees,
    })
}

fn balances(api: &Api, affiliate: &str) -> HttpResponse {
    let book = api
        .ledger
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let list: Vec<Value> = book
        .balances_of(affiliate)
        .iter()
        .map(|(c, b)| balance_json(*c, b))
        .collect();
    HttpResponse::Ok().json(json!({ "affiliate_id": affiliate, "balances": list }))
}

async fn my_balance(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    match authorize(&req, &api, Role::Partner) {
        Ok(key) => balances(&api, &key.owner),
        Err(r) => r,
    }
}

async fn affiliate_balance(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<Api>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    if !api.store.snapshot().affiliates.contains_key(path.as_str()) {
        return error(StatusCode::NOT_FOUND, "no such affiliate");
    }
    balances(&api, &path)
}

async fn all_balances(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let book = api
        .ledger
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let list: Vec<Value> = book
        .all_balances()
        .map(|(a, c, b)| {
            let mut v = balance_json(c, &b);
            v["affiliate_id"] = json!(a);
            v
        })
        .collect();
    HttpResponse::Ok().json(json!({ "balances": list }))
}

async fn trial_balance(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let book = api
        .ledger
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut per_currency: BTreeMap<[u8; 3], (Vec<Value>, i64)> = BTreeMap::new();
    for ((c, account), sum) in book.trial_balance() {
        let e = per_currency.entry(*c).or_default();
        e.0.push(json!({
            "account": account,
            "balance": amount(*sum, Currency(*c)),
            "balance_minor": sum,
        }));
        e.1 += sum;
    }
    let list: Vec<Value> = per_currency
        .into_iter()
        .map(|(c, (accounts, total))| {
            json!({ "currency": Currency(c).as_str(), "accounts": accounts, "total_minor": total })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "transactions": book.txns(), "currencies": list }))
}

#[derive(Debug, Deserialize)]
struct Period {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

/// A `from`/`to` query period (either may be missing: from the start, to the end);
/// a 400 naming the bad parameter, or saying that from is after to.
pub(crate) fn period(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), HttpResponse> {
    let from = time_param("from", from, 0)?;
    let to = time_param("to", to, i64::MAX)?;
    if from > to {
        return Err(error(StatusCode::BAD_REQUEST, "from is after to"));
    }
    Ok((from, to))
}

fn time_param(name: &str, v: Option<&str>, default: i64) -> Result<i64, HttpResponse> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    crate::http::time::parse_text(v)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{name}: {e}")))
}

/// `at_us` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn rfc3339(at_us: i64) -> String {
    const DAY_US: i64 = 86_400_000_000;
    let (y, m, d) = civil_from_days(at_us.div_euclid(DAY_US));
    let t = at_us.rem_euclid(DAY_US);
    let s = t / 1_000_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t % 1_000_000
    )
}

fn line_json(l: &Line) -> Value {
    json!({
        "at": rfc3339(l.at_us),
        "txn_id": &*l.txn_id,
        "cause": cause_name(l.cause),
        "conversion_id": &*l.conversion_id,
        "currency": l.currency.as_str(),
        "detail": &*l.detail,
        "bucket": l.bucket.name(),
        "amount": amount(l.amount_minor, l.currency),
        "amount_minor": l.amount_minor,
    })
}

/// A CSV field, quoted when it needs to be (RFC 4180); a leading `=`, `+`, `-` or `@` of
/// text is prefixed with `'` so a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '@']) || (s.starts_with('-') && s.parse::<f64>().is_err()) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn wants_csv(req: &HttpRequest, q: &Period) -> bool {
    q.format.as_deref() == Some("csv")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"))
}

fn statement(req: &HttpRequest, api: &Api, affiliate: &str, q: &Period) -> HttpResponse {
    if q.format
        .as_deref()
        .is_some_and(|f| f != "csv" && f != "json")
    {
        return error(StatusCode::BAD_REQUEST, "format must be csv or json");
    }
    let (from, to) = match period(q.from.as_deref(), q.to.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (opening, lines) = api
        .ledger
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .statement(affiliate, from, to);
    if wants_csv(req, q) {
        let mut out = String::from(
            "at,txn_id,cause,conversion_id,currency,detail,bucket,amount,amount_minor\n",
        );
        for l in &lines {
            let fields = [
                rfc3339(l.at_us),
                csv_field(&l.txn_id),
                cause_name(l.cause).to_string(),
                csv_field(&l.conversion_id),
                l.currency.as_str().to_string(),
                csv_field(&l.detail),
                l.bucket.name().to_string(),
                amount(l.amount_minor, l.currency),
                l.amount_minor.to_string(),
            ];
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        return HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"statement-{affiliate}.csv\""),
            ))
            .body(out);
    }
    let mut closing = opening.clone();
    for l in &lines {
        closing.entry(l.currency.0).or_default().add(l);
    }
    let list = |m: &BTreeMap<[u8; 3], Balance>| -> Vec<Value> {
        m.iter()
            .map(|(c, b)| {
                let mut v = balance_json(Currency(*c), b);
                if let Some(o) = v.as_object_mut() {
                    o.remove("fees");
                    o.remove("fees_minor");
                }
                v
            })
            .collect()
    };
    HttpResponse::Ok().json(json!({
        "affiliate_id": affiliate,
        "from": rfc3339(from),
        "to": (to != i64::MAX).then(|| rfc3339(to)),
        "opening": list(&opening),
        "lines": lines.iter().map(line_json).collect::<Vec<_>>(),
        "closing": list(&closing),
    }))
}

async fn my_statement(
    req: HttpRequest,
    q: web::Query<Period>,
    api: web::Data<Api>,
) -> HttpResponse {
    match authorize(&req, &api, Role::Partner) {
        Ok(key) => statement(&req, &api, &key.owner, &q),
        Err(r) => r,
    }
}

async fn affiliate_statement(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<Period>,
    api: web::Data<Api>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    if !api.store.snapshot().affiliates.contains_key(path.as_str()) {
        return error(StatusCode::NOT_FOUND, "no such affiliate");
    }
    statement(&req, &api, &path, &q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339_and_csv_fields_are_safe() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_764_000_099_000_001),
            "2025-11-24T16:01:39.000001Z"
        );
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-12.50"), "-12.50");
    }

    #[test]
    fn csv_is_chosen_by_accept_header_or_format() {
        let q = |f: Option<&str>| Period {
            from: None,
            to: None,
            format: f.map(String::from),
        };
        let csv = actix_web::test::TestRequest::default()
            .insert_header(("accept", "text/csv"))
            .to_http_request();
        let json = actix_web::test::TestRequest::default()
            .insert_header(("accept", "application/json"))
            .to_http_request();
        assert!(wants_csv(&csv, &q(None)));
        assert!(!wants_csv(&json, &q(None)));
        assert!(wants_csv(&json, &q(Some("csv"))));
    }
}
