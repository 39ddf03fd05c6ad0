//! Attribution under `/api/v1` (see `clicktrail_actors::attribution`).
//!
//! | method and path | key | does |
//! |---|---|---|
//! | `POST /api/v1/attribution/models/{campaign}/fit` `{"model"?,"order"?}` | admin | fits markov and/or shapley on the campaign's journeys now (201, the new versions); without a body: the campaign's own model when data-driven, else both |
//! | `GET /api/v1/attribution/models/{campaign}` | admin | every fitted version: parameters, training window, journey count |
//! | `GET /api/v1/attribution/compare?campaign_id=&from=&to=&models=` | admin, or the campaign's merchant | per model and partner: credited conversions, revenue and commission (exact decimals per currency), and journey counts |
//! | `GET /api/v1/me/attribution?from=&to=` | partner | its own credit under each campaign's active model |
//!
//! The comparison re-weighs each recorded journey (every attribution carries its whole
//! journey) under each model. Revenue and commission are the conversion's amount and the
//! commission the ledger actually posted for it, split by that model's weights exactly
//! (largest remainder to the minor unit): what switching the model would have paid with
//! the same plans. Data-driven models use the campaign's latest fitted version (fitted
//! first when there is none).

#![allow(clippy::result_large_err)]

use crate::api::{authorize, error, Api};
use crate::http::json::Keys;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use clicktrail_actors::attribution::credit::{channel, Weigher};
use clicktrail_actors::attribution::view::find_model;
use clicktrail_actors::attribution::FitRequest;
use clicktrail_actors::catalog::{Role, ATTRIBUTION_MODELS, MARKOV_ORDER_MAX};
use clicktrail_actors::ledger::commission::split;
use clicktrail_storage::schema::{self, AttributionModelFit, AttributionV3, Currency, Money};
use clicktrail_storage::RecordExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long a fit request waits for the actor.
const FIT_WAIT: Duration = Duration::from_secs(30);
/// Most attributions one comparison reads.
const COMPARE_RECORDS_MAX: usize = 2_000_000;

pub fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/attribution/models/{campaign}/fit", web::post().to(fit))
        .route("/attribution/models/{campaign}", web::get().to(models))
        .route("/attribution/compare", web::get().to(compare))
        .route("/me/attribution", web::get().to(my_attribution))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FitBody {
    model: Option<String>,
    order: Option<u32>,
}

fn model_json(m: &AttributionModelFit) -> Value {
    let mut v = json!({
        "campaign_id": m.campaign_id,
        "model": m.model,
        "version": m.version,
        "channel_by": m.channel_by,
        "fitted_at": crate::ledger_api::rfc3339(m.at_us),
        "trained_from": crate::ledger_api::rfc3339(m.trained_from_us),
        "trained_to": crate::ledger_api::rfc3339(m.trained_to_us),
        "journeys": m.journeys,
        "conversions": m.conversions,
        "requested_by": m.requested_by,
        "channels": m.channels,
    });
    if m.model == "markov" {
        v["order"] = json!(m.order);
        v["p_conversion"] = json!(m.p_conversion);
        v["removal_effects"] = m
            .channels
            .iter()
            .zip(&m.removal_effects)
            .map(|(c, r)| (c.clone(), json!(r)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    } else {
        v["coalitions"] = json!(m.coalitions.len());
    }
    v
}

/// Queues fits of `wanted` (model, order) for `campaign` and waits for their versions.
async fn run_fits(
    api: &Api,
    campaign: &str,
    wanted: &[(String, u32)],
    by: &str,
) -> Result<Vec<AttributionModelFit>, HttpResponse> {
    let view = &api.attribution;
    let versions = |model: &str| {
        view.read(|v| {
            v.models
                .get(campaign)
                .map_or(0, |m| m.iter().filter(|f| f.model == model).count())
        })
    };
    let before: Vec<usize> = wanted.iter().map(|(m, _)| versions(m)).collect();
    for (model, order) in wanted {
        view.request_fit(FitRequest {
            campaign_id: campaign.to_string(),
            model: model.clone(),
            order: *order,
            requested_by: by.to_string(),
        });
    }
    let started = std::time::Instant::now();
    loop {
        let done = wanted
            .iter()
            .zip(&before)
            .all(|((m, _), b)| versions(m) > *b);
        if done {
            break;
        }
        let journeys = view.read(|v| v.training.get(campaign).map_or(0, |t| t.journeys));
        let caught_up = view.read(|v| v.caught_up);
        if caught_up && journeys == 0 && started.elapsed() > Duration::from_secs(3) {
            return Err(error(
                StatusCode::CONFLICT,
                "no journeys of this campaign to train on yet",
            ));
        }
        if started.elapsed() > FIT_WAIT {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the attribution actor did not fit in time (still reading history?); try again",
            ));
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(view.read(|v| {
        wanted
            .iter()
            .filter_map(|(m, _)| find_model(&v.models, campaign, m, None).cloned())
            .collect()
    }))
}

async fn fit(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let b: FitBody = if body.iter().all(u8::is_ascii_whitespace) {
        FitBody::default()
    } else {
        match crate::http::json::parse(&req, &body, Keys::Snake, "fit request") {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let Some(camp) = api
        .store
        .snapshot()
        .campaigns
        .get(path.as_str())
        .map(|c| c.campaign.clone())
    else {
        return error(StatusCode::NOT_FOUND, "no such campaign");
    };
    let order = b.order.unwrap_or(camp.markov_order);
    if !(1..=MARKOV_ORDER_MAX).contains(&order) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("order must be 1..={MARKOV_ORDER_MAX}"),
        );
    }
    let wanted: Vec<(String, u32)> = match b.model.as_deref() {
        Some(m @ ("markov" | "shapley")) => vec![(m.to_string(), order)],
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("model {other:?}: only markov and shapley are fitted"),
            )
        }
        None if matches!(camp.attribution_model.as_str(), "markov" | "shapley") => {
            vec![(camp.attribution_model.clone(), order)]
        }
        None => vec![("markov".into(), order), ("shapley".into(), order)],
    };
    match run_fits(&api, &camp.id, &wanted, &key.owner).await {
        Ok(fits) => HttpResponse::Created().json(json!({
            "models": fits.iter().map(model_json).collect::<Vec<_>>(),
        })),
        Err(r) => r,
    }
}

async fn models(req: HttpRequest, path: web::Path<String>, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    if !api.store.snapshot().campaigns.contains_key(path.as_str()) {
        return error(StatusCode::NOT_FOUND, "no such campaign");
    }
    let (list, training) = api.attribution.read(|v| {
        (
            v.models
                .get(path.as_str())
                .map(|m| m.iter().map(model_json).collect::<Vec<_>>())
                .unwrap_or_default(),
            v.training.get(path.as_str()).cloned().unwrap_or_default(),
        )
    });
    HttpResponse::Ok().json(json!({
        "campaign_id": path.as_str(),
        "models": list,
        "training": {
            "journeys": training.journeys,
            "conversions": training.conversions,
            "paths": training.paths,
            "dropped": training.dropped,
        },
    }))
}

#[derive(Debug, Deserialize)]
struct CompareQuery {
    campaign_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    models: Option<String>,
}

/// Per partner and currency: credit (ppm summed), revenue and commission (minor units).
#[derive(Debug, Default, Clone)]
struct Credit {
    conversions_ppm: u64,
    money: BTreeMap<[u8; 3], (i64, i64)>,
}

/// The attributions of `campaign` (every campaign when `None`) that happened in
/// [from, to], and the commission the ledger posted for each conversion.
fn read_attributions(
    journal: &clicktrail_storage::Journal,
    campaign: Option<&str>,
    from: i64,
    to: i64,
) -> Result<(Vec<AttributionV3>, HashMap<String, i64>), String> {
    let mut out = Vec::new();
    if let Some(p) = journal.get(clicktrail_actors::system::ATTRIBUTIONS) {
        let mut r = p.reader().map_err(|e| e.to_string())?;
        while let Some(rec) = r.next().map_err(|e| e.to_string())? {
            let Some(a) = schema::attribution(&rec) else {
                continue;
            };
            if campaign.is_some_and(|c| c != a.campaign_id)
                || a.occurred_at_us < from
                || a.occurred_at_us > to
            {
                continue;
            }
            if out.len() >= COMPARE_RECORDS_MAX {
                return Err(format!(
                    "more than {COMPARE_RECORDS_MAX} conversions in the period: narrow it"
                ));
            }
            out.push(a);
        }
    }
    let wanted: std::collections::HashSet<&str> =
        out.iter().map(|a| a.conversion_id.as_str()).collect();
    let mut commission: HashMap<String, i64> = HashMap::new();
    if let Some(p) = journal.get(clicktrail_actors::system::LEDGER) {
        let mut r = p.reader().map_err(|e| e.to_string())?;
        while let Some(rec) = r.next().map_err(|e| e.to_string())? {
            let Some(t) = rec.event::<schema::LedgerTxn>() else {
                continue;
            };
            if !matches!(t.cause, schema::ArchivedLedgerCause::Sale)
                || !wanted.contains(t.conversion_id.as_str())
            {
                continue;
            }
            let earned: i64 = t
                .postings
                .iter()
                .filter(|p| p.account.starts_with("partner:"))
                .map(|p| p.amount_minor.to_native())
                .filter(|a| *a > 0)
                .sum();
            *commission.entry(t.conversion_id.to_string()).or_default() += earned;
        }
    }
    Ok((out, commission))
}

/// Adds one conversion to `per`: its credit, amount and posted commission split exactly
/// by the weights of `parts` (affiliate, ppm), for the affiliates `keep` accepts.
fn add_credit(
    per: &mut BTreeMap<String, Credit>,
    a: &AttributionV3,
    commission: &HashMap<String, i64>,
    parts: &[(&str, u32)],
    keep: impl Fn(&str) -> bool,
) {
    let w: Vec<u64> = parts.iter().map(|p| p.1 as u64).collect();
    if w.iter().sum::<u64>() == 0 {
        return;
    }
    let revenue = split(a.amount.amount_minor, &w);
    let earned = split(commission.get(&a.conversion_id).copied().unwrap_or(0), &w);
    for (i, (affiliate, weight)) in parts.iter().enumerate() {
        if *weight == 0 || !keep(affiliate) {
            continue;
        }
        let c = per.entry(affiliate.to_string()).or_default();
        c.conversions_ppm += *weight as u64;
        let m = c.money.entry(a.amount.currency.0).or_default();
        m.0 += revenue[i];
        m.1 += earned[i];
    }
}

/// Credit per partner of `records` re-weighed under `weigher`.
fn credit_under(
    weigher: &Weigher<'_>,
    records: &[AttributionV3],
    commission: &HashMap<String, i64>,
) -> BTreeMap<String, Credit> {
    let mut per: BTreeMap<String, Credit> = BTreeMap::new();
    for a in records {
        let channels: Vec<String> = a
            .journey
            .iter()
            .map(|t| channel(&a.channel_by, &t.affiliate_id, &a.campaign_id, &t.sub1))
            .collect();
        let weights = weigher.weights(
            &a.journey,
            &channels,
            a.occurred_at_us,
            a.lead_index.map(|i| i as usize),
        );
        let parts: Vec<(&str, u32)> = a
            .journey
            .iter()
            .map(|t| t.affiliate_id.as_str())
            .zip(weights)
            .collect();
        add_credit(&mut per, a, commission, &parts, |_| true);
    }
    per
}

fn ppm_decimal(ppm: u64) -> String {
    format!("{}.{:06}", ppm / 1_000_000, ppm % 1_000_000)
}

fn credit_json(per: &BTreeMap<String, Credit>) -> Value {
    per.iter()
        .map(|(partner, c)| {
            let money = |pick: fn(&(i64, i64)) -> i64| -> Value {
                c.money
                    .iter()
                    .map(|(cur, m)| {
                        let currency = Currency(*cur);
                        (
                            currency.as_str().to_string(),
                            json!(clicktrail_storage::money::format(&Money {
                                amount_minor: pick(m),
                                currency,
                            })),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            (
                partner.clone(),
                json!({
                    "conversions": ppm_decimal(c.conversions_ppm),
                    "revenue": money(|m| m.0),
                    "commission": money(|m| m.1),
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

async fn compare(
    req: HttpRequest,
    q: web::Query<CompareQuery>,
    api: web::Data<Api>,
) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Admin)
        .or_else(|_| authorize(&req, &api, Role::Merchant))
    {
        Ok(k) => k,
        Err(r) => return r,
    };
    let Some(campaign_id) = q.campaign_id.clone().filter(|c| !c.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "campaign_id is required");
    };
    let Some(camp) = api
        .store
        .snapshot()
        .campaigns
        .get(&campaign_id)
        .map(|c| c.campaign.clone())
    else {
        return error(StatusCode::NOT_FOUND, "no such campaign");
    };
    if key.role == Role::Merchant && key.owner != camp.merchant_id {
        return error(StatusCode::NOT_FOUND, "no such campaign");
    }
    let (from, to) = match crate::ledger_api::period(q.from.as_deref(), q.to.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let names: Vec<String> = match q.models.as_deref().filter(|m| !m.is_empty()) {
        None => ATTRIBUTION_MODELS.iter().map(|m| m.to_string()).collect(),
        Some(list) => list.split(',').map(|m| m.trim().to_string()).collect(),
    };
    if let Some(bad) = names
        .iter()
        .find(|m| !ATTRIBUTION_MODELS.contains(&m.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown model {bad:?}; models are {}",
                ATTRIBUTION_MODELS.join(", ")
            ),
        );
    }
    // Data-driven models without a version yet are fitted first.
    let missing: Vec<(String, u32)> = names
        .iter()
        .filter(|m| matches!(m.as_str(), "markov" | "shapley"))
        .filter(|m| api.attribution.model(&camp.id, m, None).is_none())
        .map(|m| (m.clone(), camp.markov_order))
        .collect();
    if !missing.is_empty() {
        if let Err(r) = run_fits(&api, &camp.id, &missing, &key.owner).await {
            if r.status() != StatusCode::CONFLICT {
                return r;
            }
        }
    }
    let journal = api.journal.clone();
    let cid = camp.id.clone();
    let read = web::block(move || read_attributions(&journal, Some(&cid), from, to)).await;
    let (records, commission) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let exact_max = api.attribution_shapley_exact_max;
    let mut out = serde_json::Map::new();
    for name in &names {
        let pinned = (name == &camp.attribution_model)
            .then_some(camp.attribution_model_version)
            .flatten();
        let fit = api.attribution.model(&camp.id, name, pinned);
        let weigher = match (Weigher::rule(name, camp.half_life_days), &fit) {
            (Some(w), _) => w,
            (None, Some(f)) => Weigher::fitted(f, exact_max),
            (None, None) => {
                out.insert(
                    name.clone(),
                    json!({"error": "not fitted: no journeys of this campaign to train on yet"}),
                );
                continue;
            }
        };
        let per = credit_under(&weigher, &records, &commission);
        let mut entry = json!({ "partners": credit_json(&per) });
        if let Some(f) = &fit {
            entry["version"] = json!(f.version);
        }
        out.insert(name.clone(), entry);
    }
    let training = api
        .attribution
        .read(|v| v.training.get(&camp.id).cloned().unwrap_or_default());
    HttpResponse::Ok().json(json!({
        "campaign_id": camp.id,
        "active_model": camp.attribution_model,
        "from": (from > 0).then(|| crate::ledger_api::rfc3339(from)),
        "to": (to < i64::MAX).then(|| crate::ledger_api::rfc3339(to)),
        "journeys": {
            "converting": records.len(),
            "trained": training.journeys,
            "trained_conversions": training.conversions,
        },
        "models": out,
    }))
}

#[derive(Debug, Deserialize)]
struct Period {
    from: Option<String>,
    to: Option<String>,
}

async fn my_attribution(
    req: HttpRequest,
    q: web::Query<Period>,
    api: web::Data<Api>,
) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Partner) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (from, to) = match crate::ledger_api::period(q.from.as_deref(), q.to.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let journal = api.journal.clone();
    let read = web::block(move || read_attributions(&journal, None, from, to)).await;
    let (records, commission) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // As credited: the recorded weights of the model of the day.
    let mut per_campaign: BTreeMap<&str, (&str, BTreeMap<String, Credit>)> = BTreeMap::new();
    for a in &records {
        let parts: Vec<(&str, u32)> = a
            .touchpoints
            .iter()
            .map(|t| (t.affiliate_id.as_str(), t.weight_ppm))
            .collect();
        if !parts.iter().any(|p| p.0 == key.owner) {
            continue;
        }
        let (model, per) = per_campaign
            .entry(&a.campaign_id)
            .or_insert_with(|| (&a.model, BTreeMap::new()));
        *model = &a.model;
        add_credit(per, a, &commission, &parts, |aff| aff == key.owner);
    }
    let campaigns: Vec<Value> = per_campaign
        .iter()
        .map(|(campaign, (model, per))| {
            let mut v = credit_json(per)[&key.owner].clone();
            v["campaign_id"] = json!(campaign);
            v["model"] = json!(model);
            v
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "affiliate_id": key.owner,
        "campaigns": campaigns,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_decimals() {
        assert_eq!(ppm_decimal(0), "0.000000");
        assert_eq!(ppm_decimal(1_500_000), "1.500000");
        assert_eq!(ppm_decimal(333_333), "0.333333");
    }
}
