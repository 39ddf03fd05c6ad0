//! The admin and partner API under `/api/v1`, authenticated with `Authorization: Bearer`.
//!
//! | method and path | key | does |
//! |---|---|---|
//! | `GET /api/v1/{merchants,affiliates,campaigns,links}` | admin | lists |
//! | `GET /api/v1/{kind}/{id}` | admin | one entity |
//! | `POST /api/v1/{kind}` | admin | creates or replaces (JSON body); 201 created, 200 otherwise |
//! | `POST /api/v1/keys` | admin | `{"role","owner"}` -> a new key, shown once |
//! | `POST/GET /api/v1/me/postbacks` | partner | its own postbacks: create or replace, list |
//! | `POST/GET /api/v1/postbacks`, `/api/v1/affiliates/{id}/postbacks` | admin | all / one affiliate's |
//! | `PATCH/DELETE` on `.../postbacks/{id}` of those three | as above | change the given fields (200), delete (204); unknown or another owner's: 404 |
//! | `GET /api/v1/stats?by=affiliate\|campaign\|sub1..sub5[&affiliate_id=]` | admin | live counters |
//! | `GET /api/v1/me/stats?by=...` | partner | the partner's own counters |
//! | `GET /api/v1/me/links` | partner | the partner's links |
//! | balances, statements, payouts | | see [`crate::ledger_api`] |
//! | dead letters (inputs an actor skipped) | | see [`crate::dead_letter_api`] |
//! | attribution models and the model comparison | | see [`crate::attribution_api`] |
//! | fraud verdicts, review queue, clusters, rules | | see [`crate::fraud_api`] |
//! | `POST /api/v1/import` (history from another tracker) | admin | see [`crate::import`] |
//!
//! Creating an affiliate or a campaign also creates the default link of every affiliate and
//! campaign pair it makes. Missing key: 401; a key of the wrong role: 403; a bad body: 400
//! with the reason, nothing written.

// Handlers return a ready `HttpResponse` as their error: it is the answer, not a failure
// to propagate, so its size does not matter here.
#![allow(clippy::result_large_err)]

use crate::http::json::Keys;
use crate::keys_cmd::random_bytes;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use clicktrail_actors::catalog::{self, ApiKey, Catalog, Entity, EntityStore, Link, Role};
use clicktrail_actors::stats::{Dimension, SharedStats};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Largest JSON body accepted.
pub const BODY_SIZE_MAX: usize = 64 * 1024;

/// What the API handlers share.
#[derive(Debug)]
pub struct Api {
    pub store: Arc<EntityStore>,
    pub stats: SharedStats,
    /// To read postback attempts.
    pub journal: clicktrail_storage::Journal,
    /// Test and redelivery requests for the postback dispatcher.
    pub postback_commands: clicktrail_actors::postback::Commands,
    /// The delivery log, kept current from the attempts partition.
    pub deliveries: std::sync::Mutex<DeliveryLog>,
    /// The commission ledger's balances and statements.
    pub ledger: clicktrail_actors::ledger::SharedBook,
    /// Payout items, and requests to the payout scheduler.
    pub payouts: clicktrail_actors::payout::SharedPayouts,
    pub payout_commands: clicktrail_actors::payout::Commands,
    /// Inputs the actors could not process, and retries of them.
    pub dead_letters: clicktrail_actors::dead_letter::DeadLetters,
    /// Where postbacks may be delivered (checked when one is saved).
    pub postback_destinations: clicktrail_actors::postback::Destinations,
    /// Fitted attribution models; fits asked for over the API.
    pub attribution: clicktrail_actors::attribution::SharedAttribution,
    /// `attribution.shapley-exact-max`, for the comparison report.
    pub attribution_shapley_exact_max: usize,
    /// The fraud engine's verdicts, review queue and figures.
    pub fraud: clicktrail_actors::fraud::SharedFraud,
    /// The `[fraud]` settings (the rules' listing shows them).
    pub fraud_config: clicktrail_actors::fraud::FraudConfig,
    /// Where people's fraud decisions are written.
    pub ingest: clicktrail_actors::ingest::IngestShards,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        crate::fraud_api::routes(crate::attribution_api::routes(
            crate::dead_letter_api::routes(crate::ledger_api::routes(web::scope("/api/v1"))),
        ))
        .app_data(crate::http::BodySizeMax(BODY_SIZE_MAX))
        .app_data(web::PayloadConfig::new(BODY_SIZE_MAX))
        .route("/me/stats", web::get().to(my_stats))
        .route("/me/links", web::get().to(my_links))
        .route("/me/postbacks/deliveries", web::get().to(my_deliveries))
        .route(
            "/me/postbacks/deliveries/{delivery}/redeliver",
            web::post().to(my_redeliver),
        )
        .route("/me/postbacks/{id}/test", web::post().to(my_test))
        .route("/postbacks/deliveries", web::get().to(all_deliveries))
        .route(
            "/postbacks/deliveries/{delivery}/redeliver",
            web::post().to(admin_redeliver),
        )
        .route("/postbacks/{id}/test", web::post().to(admin_test))
        .route("/me/postbacks", web::get().to(list_my_postbacks))
        .route("/me/postbacks", web::post().to(upsert_my_postback))
        .route("/postbacks", web::get().to(list_postbacks))
        .route("/postbacks", web::post().to(upsert_global_postback))
        .route(
            "/affiliates/{id}/postbacks",
            web::get().to(list_affiliate_postbacks),
        )
        .route(
            "/affiliates/{id}/postbacks",
            web::post().to(upsert_affiliate_postback),
        )
        // Before `/{kind}/{id}`, which would take `/postbacks/{id}`.
        .route("/me/postbacks/{id}", web::patch().to(patch_my_postback))
        .route("/me/postbacks/{id}", web::delete().to(delete_my_postback))
        .route("/postbacks/{id}", web::patch().to(patch_any_postback))
        .route("/postbacks/{id}", web::delete().to(delete_any_postback))
        .route(
            "/affiliates/{id}/postbacks/{pb}",
            web::patch().to(patch_affiliate_postback),
        )
        .route(
            "/affiliates/{id}/postbacks/{pb}",
            web::delete().to(delete_affiliate_postback),
        )
        .route("/stats", web::get().to(stats))
        .route("/keys", web::post().to(create_key))
        .route("/{kind}", web::get().to(list))
        .route("/{kind}", web::post().to(upsert))
        .route("/{kind}/{id}", web::get().to(get_one)),
    );
}

pub(crate) fn error(status: actix_web::http::StatusCode, msg: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": msg.into() }))
}

/// The caller's key, if it has `role`.
pub(crate) fn authorize(req: &HttpRequest, api: &Api, role: Role) -> Result<ApiKey, HttpResponse> {
    use actix_web::http::StatusCode;
    let Some(secret) = crate::convert::bearer(req) else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <key>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return Err(r);
    };
    match api.store.snapshot().key(secret) {
        None => Err(error(StatusCode::UNAUTHORIZED, "unknown key")),
        Some(k) if k.role != role => Err(error(
            StatusCode::FORBIDDEN,
            match role {
                Role::Admin => "this needs an admin key",
                Role::Merchant => "this needs a merchant key",
                Role::Partner => "this needs a partner key",
            },
        )),
        Some(k) => Ok(k.clone()),
    }
}

fn kind_of(path: &str) -> Option<&'static str> {
    Some(match path {
        "merchants" => "merchant",
        "affiliates" => "affiliate",
        "campaigns" => "campaign",
        "links" => "link",
        "plans" => "plan",
        _ => return None,
    })
}

/// An entity as the API answers it: snake_case keys (entities keep their configuration
/// names, kebab-case, inside).
fn entity_json(e: &Entity) -> serde_json::Value {
    use crate::http::json::snake_keys;
    match e {
        Entity::Affiliate(x) => snake_keys(json!(x)),
        Entity::Merchant(x) => snake_keys(json!(x)),
        Entity::Campaign(x) => snake_keys(json!(x)),
        Entity::Link(x) => snake_keys(json!(x)),
        Entity::Key(x) => json!({ "role": x.role, "owner": x.owner }),
        Entity::Postback(x) => postback_json(x, false),
        Entity::Plan(x) => snake_keys(json!(x)),
    }
}

async fn list(req: HttpRequest, path: web::Path<String>, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let Some(kind) = kind_of(&path) else {
        return error(actix_web::http::StatusCode::NOT_FOUND, "unknown collection");
    };
    let c = api.store.snapshot();
    use crate::http::json::snake_keys;
    let mut items: Vec<serde_json::Value> = match kind {
        "merchant" => c.merchants.values().map(|x| snake_keys(json!(x))).collect(),
        "affiliate" => c
            .affiliates
            .values()
            .map(|x| snake_keys(json!(x)))
            .collect(),
        "campaign" => c
            .campaigns
            .values()
            .map(|x| snake_keys(json!(x.campaign)))
            .collect(),
        "plan" => c.plans.values().map(|x| snake_keys(json!(x))).collect(),
        _ => c
            .links
            .values()
            .map(|x| snake_keys(json!(x.link)))
            .collect(),
    };
    items.sort_by_key(|v| v.get("id").or(v.get("code")).map(|v| v.to_string()));
    HttpResponse::Ok().json(json!({ "items": items }))
}

async fn get_one(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    api: web::Data<Api>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let (coll, id) = path.into_inner();
    let found = kind_of(&coll).and_then(|k| api.store.snapshot().get(k, &id));
    match found {
        Some(e) => HttpResponse::Ok().json(entity_json(&e)),
        None => error(actix_web::http::StatusCode::NOT_FOUND, "not found"),
    }
}

async fn upsert(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let Some(kind) = kind_of(&path) else {
        return error(StatusCode::NOT_FOUND, "unknown collection");
    };
    let parse = |what| -> Result<Entity, HttpResponse> {
        let b = &body[..];
        Ok(match what {
            "merchant" => Entity::Merchant(crate::http::json::parse(&req, b, Keys::Kebab, what)?),
            "affiliate" => Entity::Affiliate(crate::http::json::parse(&req, b, Keys::Kebab, what)?),
            "campaign" => Entity::Campaign(crate::http::json::parse(&req, b, Keys::Kebab, what)?),
            "plan" => Entity::Plan(crate::http::json::parse(&req, b, Keys::Kebab, what)?),
            _ => Entity::Link(crate::http::json::parse(&req, b, Keys::Kebab, what)?),
        })
    };
    let entity = match parse(kind) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let existed = api.store.snapshot().get(kind, entity.id()).is_some();
    let actor = format!("admin-key:{}", &key.key_sha256[..12]);
    if let Err(r) = record(&api, &actor, entity.clone()).await {
        return r;
    }
    // Default links for every new affiliate x campaign pair.
    let c = api.store.snapshot();
    let pairs: Vec<(String, String)> = match &entity {
        Entity::Affiliate(a) => c
            .campaigns
            .keys()
            .map(|k| (a.id.clone(), k.clone()))
            .collect(),
        Entity::Campaign(cp) => c
            .affiliates
            .keys()
            .map(|k| (k.clone(), cp.id.clone()))
            .collect(),
        _ => Vec::new(),
    };
    for (a, cp) in pairs {
        let link = Link {
            code: Catalog::default_link_code(&a, &cp),
            affiliate_id: a,
            campaign_id: cp,
            sub_ids: Vec::new(),
        };
        if let Err(r) = record(&api, &actor, Entity::Link(link)).await {
            return r;
        }
    }
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    HttpResponse::build(status).json(entity_json(&entity))
}

async fn record(api: &Api, actor: &str, e: Entity) -> Result<bool, HttpResponse> {
    use actix_web::http::StatusCode;
    match api.store.upsert(actor, e).await {
        Ok(changed) => Ok(changed),
        Err(catalog::Error::Invalid(m)) => Err(error(StatusCode::BAD_REQUEST, m)),
        Err(catalog::Error::Journal(e)) => {
            log::error!("entity change not recorded: {e}");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not record the change; retry",
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    role: Role,
    owner: String,
}

async fn create_key(req: HttpRequest, body: web::Bytes, api: web::Data<Api>) -> HttpResponse {
    use actix_web::http::StatusCode;
    let admin = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let new: NewKey = match crate::http::json::parse(&req, &body, Keys::Snake, "key request") {
        Ok(n) => n,
        Err(r) => return r,
    };
    let Ok(secret) = crate::keys_cmd::new_secret() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no randomness available");
    };
    let key = ApiKey::new(&secret, new.role, &new.owner);
    let actor = format!("admin-key:{}", &admin.key_sha256[..12]);
    if let Err(r) = record(&api, &actor, Entity::Key(key)).await {
        return r;
    }
    HttpResponse::Created().json(json!({ "key": secret, "role": new.role, "owner": new.owner }))
}

#[derive(Deserialize)]
struct StatsQuery {
    by: Option<String>,
    affiliate_id: Option<String>,
}

fn stats_rows(api: &Api, q: &StatsQuery, affiliate: Option<&str>) -> HttpResponse {
    let by = q.by.as_deref().unwrap_or("affiliate");
    let Some(dim) = Dimension::parse(by) else {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "by must be affiliate, campaign or sub1..sub5",
        );
    };
    let rows = api
        .stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .rows(dim, affiliate);
    let rows: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let mut row = json!({
                "key": r.key,
                "clicks": r.clicks,
                "impressions": r.impressions,
                "unique_visitors": r.unique_visitors,
            });
            // Rows over every affiliate have none to name.
            if let Some(a) = r.affiliate_id {
                row["affiliate_id"] = json!(a);
            }
            row
        })
        .collect();
    HttpResponse::Ok().json(json!({ "by": by, "rows": rows }))
}

async fn stats(req: HttpRequest, q: web::Query<StatsQuery>, api: web::Data<Api>) -> HttpResponse {
    match authorize(&req, &api, Role::Admin) {
        Ok(_) => stats_rows(&api, &q, q.affiliate_id.as_deref()),
        Err(r) => r,
    }
}

async fn my_stats(
    req: HttpRequest,
    q: web::Query<StatsQuery>,
    api: web::Data<Api>,
) -> HttpResponse {
    match authorize(&req, &api, Role::Partner) {
        Ok(k) => stats_rows(&api, &q, Some(&k.owner)),
        Err(r) => r,
    }
}

async fn my_links(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Partner) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let c = api.store.snapshot();
    let mut links: Vec<_> = c
        .links
        .values()
        .filter(|l| l.link.affiliate_id == key.owner)
        .map(|l| json!({ "code": l.link.code, "campaign_id": l.link.campaign_id, "path": format!("/c/{}", l.link.code) }))
        .collect();
    links.sort_by_key(|v| v["code"].to_string());
    HttpResponse::Ok().json(json!({ "links": links }))
}

/// A postback as an API caller sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostbackRequest {
    id: Option<String>,
    url: String,
    #[serde(default)]
    method: catalog::Method,
    triggers: Vec<catalog::Trigger>,
    /// Replace the signing secret (the new one is returned once).
    #[serde(default)]
    rotate_secret: bool,
    /// Admins creating a global postback may name an affiliate here instead.
    affiliate_id: Option<String>,
    /// Absent: as it was (true for a new postback).
    enabled: Option<bool>,
}

/// A change to a postback: only the fields given change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostbackPatch {
    url: Option<String>,
    method: Option<catalog::Method>,
    triggers: Option<Vec<catalog::Trigger>>,
    enabled: Option<bool>,
    #[serde(default)]
    rotate_secret: bool,
}

fn postback_json(p: &catalog::Postback, secret_shown: bool) -> serde_json::Value {
    let mut v = json!({
        "id": p.id, "affiliate_id": p.affiliate_id, "url": p.url,
        "method": p.method, "triggers": p.triggers, "enabled": p.enabled,
    });
    if secret_shown {
        v["secret"] = json!(p.secret);
    }
    v
}

/// Refuses (422) a postback URL whose host resolves only to addresses deliveries may not
/// reach, naming the setting that allows them; a host that does not resolve now is left
/// to the delivery (its attempts say why). Delivery checks again at connect time: this is
/// the early, clear answer, not the guard.
async fn check_destination(
    url: &str,
    allowed: clicktrail_actors::postback::Destinations,
) -> Result<(), HttpResponse> {
    use actix_web::http::StatusCode;
    use clicktrail_actors::postback::{Destinations, PRIVATE_DESTINATIONS_HINT};
    if allowed == Destinations::Any {
        return Ok(());
    }
    // Macros stand in the path and query; the host must be written out.
    let mut plain = String::with_capacity(url.len());
    let mut in_macro = false;
    for ch in url.chars() {
        match ch {
            '{' => in_macro = true,
            '}' if in_macro => {
                in_macro = false;
                plain.push('0');
            }
            c if !in_macro => plain.push(c),
            _ => {}
        }
    }
    let Ok(parsed) = url::Url::parse(&plain) else {
        return Ok(()); // the catalog refuses it with its own reason
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return Ok(());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let lookup = host.clone();
    let addrs: Vec<std::net::IpAddr> = web::block(move || {
        use std::net::ToSocketAddrs;
        (lookup.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    match addrs.iter().find(|ip| !allowed.allows(**ip)) {
        Some(ip) if !addrs.iter().any(|a| allowed.allows(*a)) => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "postback destination {host} resolves to a private address ({ip}); \
                 {PRIVATE_DESTINATIONS_HINT}"
            ),
        )),
        _ => Ok(()),
    }
}

/// Creates or updates a postback owned by `owner` (None: global).
async fn save_postback(
    req: &HttpRequest,
    api: &Api,
    actor: &str,
    owner: Option<String>,
    body: &[u8],
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let r: PostbackRequest = match crate::http::json::parse(req, body, Keys::Snake, "postback") {
        Ok(r) => r,
        Err(r) => return r,
    };
    let owner = match (owner, r.affiliate_id) {
        (Some(o), None) => Some(o),
        (Some(o), Some(a)) if a == o => Some(o),
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "affiliate_id does not match the path or key",
            )
        }
        (None, a) => a,
    };
    if let Err(resp) = check_template(&r.url) {
        return resp;
    }
    if let Err(resp) = check_destination(&r.url, api.postback_destinations).await {
        return resp;
    }
    let snapshot = api.store.snapshot();
    let id = match r.id {
        Some(id) => id,
        None => match random_bytes::<9>() {
            Ok(b) => format!("pb_{}", crate::edge::click_id::base64url_encode(&b)),
            Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "no randomness available"),
        },
    };
    let existing = snapshot.postbacks.get(&id).cloned();
    if existing.as_ref().is_some_and(|e| e.affiliate_id != owner) {
        return error(StatusCode::NOT_FOUND, "unknown postback");
    }
    let new_secret = existing.is_none() || r.rotate_secret;
    let secret = match (&existing, new_secret) {
        (Some(e), false) => e.secret.clone(),
        _ => match new_postback_secret() {
            Ok(s) => s,
            Err(resp) => return resp,
        },
    };
    let created_at_us = existing
        .as_ref()
        .map_or_else(catalog::now_us, |e| e.created_at_us);
    let p = catalog::Postback {
        id,
        affiliate_id: owner,
        url: r.url,
        method: r.method,
        triggers: r.triggers,
        secret,
        created_at_us,
        enabled: r
            .enabled
            .unwrap_or(existing.as_ref().is_none_or(|e| e.enabled)),
    };
    store_postback(api, actor, existing.as_ref(), p, new_secret).await
}

fn new_postback_secret() -> Result<String, HttpResponse> {
    match random_bytes::<24>() {
        Ok(b) => Ok(format!(
            "whsec_{}",
            crate::edge::click_id::base64url_encode(&b)
        )),
        Err(_) => Err(error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "no randomness available",
        )),
    }
}

/// Refuses (422) a URL template naming a macro that does not exist, listing those that do.
fn check_template(url: &str) -> Result<(), HttpResponse> {
    clicktrail_actors::postback::check_template(url).map_err(|e| {
        error(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
        )
    })
}

/// Records a new or changed postback (already checked by the caller: template, destination,
/// owner) and answers it: 201 when new, 200 otherwise.
async fn store_postback(
    api: &Api,
    actor: &str,
    existing: Option<&catalog::Postback>,
    mut p: catalog::Postback,
    secret_shown: bool,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    // Re-enabling is like creating: what happened while it was disabled is never
    // delivered (also not after a restart, which reads the inputs again).
    if p.enabled && existing.is_some_and(|e| !e.enabled) {
        p.created_at_us = catalog::now_us();
    }
    if let Err(resp) = record(api, actor, Entity::Postback(p.clone())).await {
        return resp;
    }
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    HttpResponse::build(status).json(postback_json(&p, secret_shown))
}

/// The postback `id` if the caller may change it through this path (`owner`: `None` for
/// any, admins on `/postbacks/{id}`), else 404: another owner's postback is not shown to
/// exist.
fn editable_postback(
    api: &Api,
    owner: Option<&str>,
    id: &str,
) -> Result<catalog::Postback, HttpResponse> {
    match api.store.snapshot().postbacks.get(id) {
        Some(p) if owner.is_none() || p.affiliate_id.as_deref() == owner => Ok(p.clone()),
        _ => Err(error(
            actix_web::http::StatusCode::NOT_FOUND,
            "unknown postback",
        )),
    }
}

/// Changes the fields a PATCH body gives; the URL goes through the same checks as on
/// creation.
async fn patch_postback(
    req: &HttpRequest,
    api: &Api,
    actor: &str,
    owner: Option<&str>,
    id: &str,
    body: &[u8],
) -> HttpResponse {
    let old = match editable_postback(api, owner, id) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let patch: PostbackPatch = match crate::http::json::parse(req, body, Keys::Snake, "postback") {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let mut p = old.clone();
    if let Some(url) = patch.url {
        if let Err(resp) = check_template(&url) {
            return resp;
        }
        if let Err(resp) = check_destination(&url, api.postback_destinations).await {
            return resp;
        }
        p.url = url;
    }
    if let Some(m) = patch.method {
        p.method = m;
    }
    if let Some(t) = patch.triggers {
        p.triggers = t;
    }
    if let Some(e) = patch.enabled {
        p.enabled = e;
    }
    if patch.rotate_secret {
        p.secret = match new_postback_secret() {
            Ok(s) => s,
            Err(resp) => return resp,
        };
    }
    store_postback(api, actor, Some(&old), p, patch.rotate_secret).await
}

/// Deletes a postback: 204, or 404 when the caller has none by that id. Its delivery log
/// stays readable.
async fn delete_postback(api: &Api, actor: &str, owner: Option<&str>, id: &str) -> HttpResponse {
    use actix_web::http::StatusCode;
    if let Err(resp) = editable_postback(api, owner, id) {
        return resp;
    }
    match api.store.delete(actor, "postback", id).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        // Deleted by a concurrent request since the check.
        Err(catalog::Error::Invalid(_)) => error(StatusCode::NOT_FOUND, "unknown postback"),
        Err(catalog::Error::Journal(e)) => {
            log::error!("postback deletion not recorded: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not record the change; retry",
            )
        }
    }
}

fn admin_actor(key: &ApiKey) -> String {
    format!("admin-key:{}", &key.key_sha256[..12])
}

async fn patch_my_postback(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    match authorize(&req, &api, Role::Partner) {
        Ok(k) => {
            let actor = format!("partner:{}", k.owner);
            patch_postback(&req, &api, &actor, Some(&k.owner), &path, &body).await
        }
        Err(r) => r,
    }
}

async fn delete_my_postback(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<Api>,
) -> HttpResponse {
    match authorize(&req, &api, Role::Partner) {
        Ok(k) => {
            let actor = format!("partner:{}", k.owner);
            delete_postback(&api, &actor, Some(&k.owner), &path).await
        }
        Err(r) => r,
    }
}

async fn patch_any_postback(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    match authorize(&req, &api, Role::Admin) {
        Ok(k) => patch_postback(&req, &api, &admin_actor(&k), None, &path, &body).await,
        Err(r) => r,
    }
}

async fn delete_any_postback(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<Api>,
) -> HttpResponse {
    match authorize(&req, &api, Role::Admin) {
        Ok(k) => delete_postback(&api, &admin_actor(&k), None, &path).await,
        Err(r) => r,
    }
}

async fn patch_affiliate_postback(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    let (affiliate, id) = path.into_inner();
    match authorize(&req, &api, Role::Admin) {
        Ok(k) => patch_postback(&req, &api, &admin_actor(&k), Some(&affiliate), &id, &body).await,
        Err(r) => r,
    }
}

async fn delete_affiliate_postback(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    api: web::Data<Api>,
) -> HttpResponse {
    let (affiliate, id) = path.into_inner();
    match authorize(&req, &api, Role::Admin) {
        Ok(k) => delete_postback(&api, &admin_actor(&k), Some(&affiliate), &id).await,
        Err(r) => r,
    }
}

fn list_of(api: &Api, owner: Option<&str>, all: bool) -> HttpResponse {
    let c = api.store.snapshot();
    let mut items: Vec<_> = c
        .postbacks
        .values()
        .filter(|p| all || p.affiliate_id.as_deref() == owner)
        .map(|p| postback_json(p, false))
        .collect();
    items.sort_by_key(|v| v["id"].to_string());
    HttpResponse::Ok().json(json!({ "items": items }))
}

async fn upsert_global_postback(
    req: HttpRequest,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let owner = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("affiliate_id")
                .and_then(|a| a.as_str())
                .map(str::to_string)
        });
    save_postback(
        &req,
        &api,
        &format!("admin-key:{}", &key.key_sha256[..12]),
        owner,
        &body,
    )
    .await
}

async fn list_postbacks(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    match authorize(&req, &api, Role::Admin) {
        Ok(_) => list_of(&api, None, true),
        Err(r) => r,
    }
}

async fn upsert_affiliate_postback(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Admin) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let actor = format!("admin-key:{}", &key.key_sha256[..12]);
    save_postback(&req, &api, &actor, Some(path.into_inner()), &body).await
}

async fn list_affiliate_postbacks(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<Api>,
) -> HttpResponse {
    match authorize(&req, &api, Role::Admin) {
        Ok(_) => list_of(&api, Some(&path), false),
        Err(r) => r,
    }
}

async fn upsert_my_postback(
    req: HttpRequest,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Partner) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|v| v.get("affiliate_id").is_some())
    {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "a partner's postbacks are always its own",
        );
    }
    let actor = format!("partner:{}", key.owner);
    save_postback(&req, &api, &actor, Some(key.owner.clone()), &body).await
}

async fn list_my_postbacks(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    match authorize(&req, &api, Role::Partner) {
        Ok(k) => list_of(&api, Some(&k.owner), false),
        Err(r) => r,
    }
}

/// Most deliveries one listing returns (the newest).
pub const DELIVERIES_LIST_MAX: usize = 1000;

/// The newest deliveries (last attempt of each) of the postbacks `owns` accepts.
fn deliveries(api: &Api, owns: impl Fn(&str) -> bool) -> HttpResponse {
    match delivery_items(api, owns) {
        Ok(items) => HttpResponse::Ok().json(json!({ "items": items })),
        Err(e) => error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read attempts: {e}"),
        ),
    }
}

fn delivery_items(
    api: &Api,
    owns: impl Fn(&str) -> bool,
) -> Result<Vec<serde_json::Value>, clicktrail_storage::Error> {
    let mut log = api.deliveries.lock().unwrap();
    if let Err(e) = log.catch_up(&api.journal) {
        // Start the reader afresh next time (re-reading only updates entries it has).
        log.reader = None;
        return Err(e);
    }
    Ok(log.list(owns, DELIVERIES_LIST_MAX))
}

/// Deliveries the log remembers (the newest; older ones stay in the journal).
pub const DELIVERY_LOG_MAX: usize = 100_000;

/// The latest state of each delivery, built incrementally from the `postback-attempts`
/// partition: a request reads only the attempts written since the previous one, instead
/// of the whole partition on a server worker thread.
pub struct DeliveryLog {
    /// Most deliveries remembered ([`DELIVERY_LOG_MAX`]).
    cap: usize,
    reader: Option<clicktrail_storage::Reader>,
    items: std::collections::HashMap<String, DeliverySummary>,
    /// Delivery ids, oldest first (first attempt order).
    order: std::collections::VecDeque<String>,
}

impl Default for DeliveryLog {
    fn default() -> Self {
        DeliveryLog {
            cap: DELIVERY_LOG_MAX,
            reader: None,
            items: Default::default(),
            order: Default::default(),
        }
    }
}

impl std::fmt::Debug for DeliveryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryLog")
            .field("deliveries", &self.items.len())
            .finish()
    }
}

/// One delivery's latest attempt.
#[derive(Debug, Clone)]
struct DeliverySummary {
    postback_id: String,
    trigger: String,
    url: String,
    attempts: u32,
    status_code: u16,
    latency_us: u64,
    error: Option<String>,
    outcome: &'static str,
    at_us: i64,
}

impl DeliveryLog {
    fn catch_up(
        &mut self,
        journal: &clicktrail_storage::Journal,
    ) -> clicktrail_storage::Result<()> {
        use clicktrail_storage::schema::{ArchivedDeliveryOutcome as O, PostbackAttempt};
        use clicktrail_storage::RecordExt;
        if self.reader.is_none() {
            let Some(p) = journal.get(clicktrail_actors::system::POSTBACK_ATTEMPTS) else {
                return Ok(());
            };
            self.reader = Some(p.reader()?);
        }
        let r = self.reader.as_mut().expect("set above");
        while let Some(rec) = r.next()? {
            let Some(a) = rec.event::<PostbackAttempt>() else {
                continue;
            };
            let outcome = match a.outcome {
                O::Delivered => "delivered",
                O::Retrying => "retrying",
                O::DeadLettered => "dead-lettered",
                O::Refused => "refused",
            };
            let summary = DeliverySummary {
                postback_id: a.postback_id.as_str().to_string(),
                trigger: a.trigger.as_str().to_string(),
                url: a.url.as_str().to_string(),
                attempts: a.attempt.to_native(),
                status_code: a.status_code.to_native(),
                latency_us: a.latency_us.to_native(),
                error: a.error.as_ref().map(|e| e.as_str().to_string()),
                outcome,
                at_us: a.at_us.to_native(),
            };
            let id = a.delivery_id.as_str();
            if let Some(s) = self.items.get_mut(id) {
                *s = summary;
                continue;
            }
            if self.order.len() >= self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.items.remove(&old);
                }
            }
            self.order.push_back(id.to_string());
            self.items.insert(id.to_string(), summary);
        }
        Ok(())
    }

    /// The newest `limit` deliveries of the postbacks `owns` accepts.
    fn list(&self, owns: impl Fn(&str) -> bool, limit: usize) -> Vec<serde_json::Value> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| self.items.get(id).map(|s| (id, s)))
            .filter(|(_, s)| owns(&s.postback_id))
            .take(limit)
            .map(|(id, s)| {
                json!({
                    "delivery_id": id, "postback_id": s.postback_id, "trigger": s.trigger,
                    "url": s.url, "attempts": s.attempts, "status_code": s.status_code,
                    "latency_us": s.latency_us, "error": s.error, "outcome": s.outcome,
                    "at_us": s.at_us,
                })
            })
            .collect()
    }
}

fn postback_owner(api: &Api, id: &str) -> Option<Option<String>> {
    api.store
        .snapshot()
        .postbacks
        .get(id)
        .map(|p| p.affiliate_id.clone())
}

fn command(api: &Api, cmd: clicktrail_actors::postback::Command) -> HttpResponse {
    if api.postback_commands.send(cmd) {
        HttpResponse::Accepted().json(json!({ "queued": true }))
    } else {
        error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many requests queued; retry",
        )
    }
}

async fn all_deliveries(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    match authorize(&req, &api, Role::Admin) {
        Ok(_) => deliveries(&api, |_| true),
        Err(r) => r,
    }
}

async fn my_deliveries(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    match authorize(&req, &api, Role::Partner) {
        Ok(k) => {
            // Deleted postbacks' deliveries stay readable by their owner.
            let c = api.store.snapshot();
            let owner = Some(k.owner.as_str());
            let mine: std::collections::HashSet<String> = c
                .postbacks
                .values()
                .filter(|p| p.affiliate_id.as_deref() == owner)
                .map(|p| p.id.clone())
                .chain(
                    c.deleted_postbacks
                        .iter()
                        .filter(|(_, o)| o.as_deref() == owner)
                        .map(|(id, _)| id.clone()),
                )
                .collect();
            deliveries(&api, |id| mine.contains(id))
        }
        Err(r) => r,
    }
}

async fn admin_test(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<Api>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    match postback_owner(&api, &path) {
        None => error(actix_web::http::StatusCode::NOT_FOUND, "unknown postback"),
        Some(_) => command(
            &api,
            clicktrail_actors::postback::Command::Test {
                postback_id: path.into_inner(),
            },
        ),
    }
}

async fn my_test(req: HttpRequest, path: web::Path<String>, api: web::Data<Api>) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Partner) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match postback_owner(&api, &path) {
        Some(Some(owner)) if owner == key.owner => command(
            &api,
            clicktrail_actors::postback::Command::Test {
                postback_id: path.into_inner(),
            },
        ),
        _ => error(actix_web::http::StatusCode::NOT_FOUND, "unknown postback"),
    }
}

async fn admin_redeliver(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<Api>,
) -> HttpResponse {
    match authorize(&req, &api, Role::Admin) {
        Ok(_) => command(
            &api,
            clicktrail_actors::postback::Command::Redeliver {
                delivery_id: path.into_inner(),
            },
        ),
        Err(r) => r,
    }
}

async fn my_redeliver(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<Api>,
) -> HttpResponse {
    let key = match authorize(&req, &api, Role::Partner) {
        Ok(k) => k,
        Err(r) => return r,
    };
    // Only a delivery of one of the partner's own postbacks.
    let owner = key.owner.clone();
    let snapshot = api.store.snapshot();
    let owns = |pid: &str| {
        snapshot
            .postbacks
            .get(pid)
            .and_then(|p| p.affiliate_id.as_deref())
            == Some(owner.as_str())
    };
    let found = delivery_items(&api, owns)
        .is_ok_and(|items| items.iter().any(|i| i["delivery_id"] == path.as_str()));
    if !found {
        return error(actix_web::http::StatusCode::NOT_FOUND, "unknown delivery");
    }
    command(
        &api,
        clicktrail_actors::postback::Command::Redeliver {
            delivery_id: path.into_inner(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clicktrail_storage::schema::{samples, DeliveryOutcome, PostbackAttempt};

    #[test]
    fn the_delivery_log_reads_only_new_attempts_keeps_the_latest_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let j = clicktrail_storage::Journal::open(dir.path(), Default::default()).unwrap();
        let mut log = DeliveryLog {
            cap: 3,
            ..Default::default()
        };
        log.catch_up(&j).unwrap();
        assert!(log.list(|_| true, 10).is_empty(), "no partition yet");
        let p = j
            .partition(clicktrail_actors::system::POSTBACK_ATTEMPTS)
            .unwrap();
        let mut w = p.writer().unwrap();
        let attempt = |id: &str, n: u32, outcome: DeliveryOutcome| PostbackAttempt {
            delivery_id: id.into(),
            attempt: n,
            outcome,
            postback_id: if id == "d9" {
                "other".into()
            } else {
                "pb1".into()
            },
            ..samples::postback_attempt()
        };
        w.append_event(None, &attempt("d1", 1, DeliveryOutcome::Retrying))
            .unwrap();
        w.append_event(None, &attempt("d2", 1, DeliveryOutcome::Delivered))
            .unwrap();
        log.catch_up(&j).unwrap();
        w.append_event(None, &attempt("d1", 2, DeliveryOutcome::Delivered))
            .unwrap();
        log.catch_up(&j).unwrap();
        let items = log.list(|_| true, 10);
        let ids: Vec<&str> = items
            .iter()
            .map(|i| i["delivery_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["d2", "d1"], "newest first by first attempt");
        assert_eq!(
            (items[1]["attempts"].as_u64(), items[1]["outcome"].as_str()),
            (Some(2), Some("delivered"))
        );
        for id in ["d3", "d9"] {
            w.append_event(None, &attempt(id, 1, DeliveryOutcome::Delivered))
                .unwrap();
        }
        log.catch_up(&j).unwrap();
        let ids: Vec<String> = log
            .list(|_| true, 10)
            .iter()
            .map(|i| i["delivery_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["d9", "d3", "d2"], "bounded: the oldest went");
        let mine = log.list(|pb| pb == "pb1", 10);
        assert_eq!(mine.len(), 2, "scoped by owner");
        assert_eq!(log.list(|_| true, 1).len(), 1, "limited");
        drop(w);
        j.close().unwrap();
    }
}
