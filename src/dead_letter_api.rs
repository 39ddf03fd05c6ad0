//! Dead letters under `/api/v1`: inputs an actor could not process and skipped (see
//! `clicktrail_actors::dead_letter`).
//!
//! | method and path | key | does |
//! |---|---|---|
//! | `GET /api/v1/dead-letters` | admin | every open dead letter: actor, input partition and offset, input kind, attempts, reason |
//! | `POST /api/v1/dead-letters/retry` `{"actor","input_partition","input_offset"}` | admin | processes that input again (202); the list shows the outcome within about a second |

#![allow(clippy::result_large_err)]

use crate::api::{authorize, error, Api};
use crate::http::json::Keys;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use clicktrail_actors::catalog::Role;
use clicktrail_actors::dead_letter::RetryError;
use serde::Deserialize;
use serde_json::json;

pub fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/dead-letters", web::get().to(list))
        .route("/dead-letters/retry", web::post().to(retry))
}

async fn list(req: HttpRequest, api: web::Data<Api>) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let open = api.dead_letters.list();
    let totals = api.dead_letters.totals();
    HttpResponse::Ok().json(json!({
        "open": open.len(),
        "dead_letters": open,
        "per_actor": totals.iter().map(|(a, (failed, resolved))| (a.clone(), json!({
            "failures_total": failed,
            "resolved_total": resolved,
        }))).collect::<serde_json::Map<_, _>>(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    actor: String,
    input_partition: String,
    input_offset: u64,
}

async fn retry(req: HttpRequest, api: web::Data<Api>, body: web::Bytes) -> HttpResponse {
    if let Err(r) = authorize(&req, &api, Role::Admin) {
        return r;
    }
    let b: RetryBody = match crate::http::json::parse(&req, &body, Keys::Snake, "retry request") {
        Ok(b) => b,
        Err(r) => return r,
    };
    match api
        .dead_letters
        .request_retry(&b.actor, &b.input_partition, b.input_offset)
    {
        Ok(()) => HttpResponse::Accepted().json(json!({
            "retrying": { "actor": b.actor, "input_partition": b.input_partition, "input_offset": b.input_offset },
        })),
        Err(e @ RetryError::NotFound { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ RetryError::Busy(_)) => error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    }
}
