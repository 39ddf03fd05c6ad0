//! The tracking edge: `GET /c/{link}` (click, 302) and `GET /i/{link}` (impression pixel).
//!
//! A click is answered only once its record is in the journal (handed to an ingest shard
//! through a bounded queue; a full queue is a 503 with `Retry-After`, never unbounded
//! memory). Every refusal has a clear status: 404 for unknown or malformed link codes, 400
//! with the cause for a bad query, and a deep link that is not on the campaign's allow-list
//! goes to the campaign's default destination instead (never an open redirect).
//!
//! Privacy: `Sec-GPC: 1` or `DNT: 1` means no fingerprint is computed or stored, and with
//! `tracking.opt-out = "minimal"` no IP, user agent, referrer, language or client hints
//! either. Stored IPs can be truncated (`tracking.ip-truncation = "partial"`).

pub mod click_id;
pub mod redirect;
pub mod request;

use crate::config::{IpTruncation, OptOutPolicy, TrackingSection};
use crate::http::sampled_log::{self, Kind};
use crate::metrics::{Metrics, Unavailable};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use click_id::{ClickIdCodec, ClickIdParts};
use clicktrail_actors::catalog::{now_us, valid_id, EntityStore, LinkRt, Status};
use clicktrail_actors::ingest::{AppendError, IngestShards};
use clicktrail_storage::schema::{Click, ClickRef, Impression, PairRef, Text};
use clicktrail_storage::Event;
use hmac::Hmac;
use request::{BadRequest, Cidr};
use sha2::Sha256;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

/// Client-hint headers recorded with a click. Header names are built once: looking a
/// header up by `&str` parses the name on every call, which showed in the click profile.
static CLIENT_HINTS: [HeaderName; 6] = [
    HeaderName::from_static("sec-ch-ua"),
    HeaderName::from_static("sec-ch-ua-mobile"),
    HeaderName::from_static("sec-ch-ua-platform"),
    HeaderName::from_static("sec-ch-ua-platform-version"),
    HeaderName::from_static("sec-ch-ua-model"),
    HeaderName::from_static("sec-ch-ua-full-version-list"),
];
const SEC_GPC: HeaderName = HeaderName::from_static("sec-gpc");
const DNT: HeaderName = HeaderName::from_static("dnt");
const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Name of the cookie holding the visitor's last click id.
pub const CLICK_COOKIE: &str = "ct_cid";
/// Bytes of randomness in a visitor id (24 base64url characters).
const VISITOR_ID_BYTES: usize = 18;

/// A transparent 1x1 GIF.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// What the tracking handlers share.
#[derive(Debug)]
pub struct Edge {
    pub store: Arc<EntityStore>,
    pub ingest: IngestShards,
    pub metrics: Arc<Metrics>,
    pub codec: ClickIdCodec,
    /// Key of the fingerprint HMAC (derived from the click-id key).
    pub fingerprint_key: Hmac<Sha256>,
    pub node_id: u16,
    pub trusted_proxies: Vec<Cidr>,
    pub tracking: TrackingSection,
}

impl Edge {
    pub fn new(
        store: Arc<EntityStore>,
        ingest: IngestShards,
        metrics: Arc<Metrics>,
        click_id_key: &str,
        node_id: u16,
        trusted_proxies: Vec<Cidr>,
        tracking: TrackingSection,
    ) -> Edge {
        Edge {
            store,
            ingest,
            metrics,
            codec: ClickIdCodec::new(click_id_key.as_bytes()),
            fingerprint_key: request::fingerprint_key(click_id_key),
            node_id,
            trusted_proxies,
            tracking,
        }
    }
}

/// `GET /c/{link}`, reached through the static `/c` scope (no regex per request).
pub async fn click(req: HttpRequest, edge: web::Data<Edge>) -> HttpResponse {
    serve(req, edge, true).await
}

/// `GET /i/{link}`, reached through the static `/i` scope.
pub async fn impression(req: HttpRequest, edge: web::Data<Edge>) -> HttpResponse {
    serve(req, edge, false).await
}

/// Anything no route matched.
pub async fn default_service(req: HttpRequest) -> HttpResponse {
    let path = req.path();
    if !path.starts_with("/api/") {
        return HttpResponse::NotFound().finish();
    }
    // `/api/v1/me/balance/` is `/api/v1/me/balance`: a permanent redirect that keeps the
    // method and body (308), so a pasted URL with a trailing slash works.
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() < path.len() && trimmed.len() > "/api".len() {
        let location = match req.query_string() {
            "" => trimmed.to_string(),
            q => format!("{trimmed}?{q}"),
        };
        return HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, location))
            .finish();
    }
    crate::api::error(
        actix_web::http::StatusCode::NOT_FOUND,
        format!(
            "no API endpoint {} {path}; the endpoints are listed in the README (HTTP surface)",
            req.method()
        ),
    )
}

async fn serve(req: HttpRequest, edge: web::Data<Edge>, is_click: bool) -> HttpResponse {
    let prefix = if is_click { "/c/" } else { "/i/" };
    let Some(code) = req.path().strip_prefix(prefix) else {
        return not_found(&edge);
    };
    // Only GET tracks: a HEAD from a link checker is not a click.
    if req.method() != actix_web::http::Method::GET {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "GET"))
            .finish();
    }
    let started = Instant::now();
    let response = track(&req, code, &edge, is_click).await;
    edge.metrics.redirect.observe(started.elapsed());
    response
}

fn no_store(mut r: HttpResponse) -> HttpResponse {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn not_found(edge: &Edge) -> HttpResponse {
    edge.metrics.unknown_links_total.inc();
    no_store(
        HttpResponse::NotFound()
            .content_type("text/html; charset=utf-8")
            .body("<!doctype html><title>Link not found</title><h1>Link not found</h1>\n"),
    )
}

fn bad_request(edge: &Edge, cause: BadRequest) -> HttpResponse {
    use actix_web::http::StatusCode;
    edge.metrics.bad_request(cause);
    let status = match cause {
        BadRequest::QueryTooLong => StatusCode::URI_TOO_LONG,
        BadRequest::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    no_store(
        HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(format!("bad request: {}\n", cause.message())),
    )
}

fn unavailable(edge: &Edge, err: AppendError) -> HttpResponse {
    let cause = match err {
        AppendError::Full => Unavailable::QueueFull,
        AppendError::Unavailable => Unavailable::ShardDown,
        AppendError::Journal(ref e) => {
            // One line per click would be tens of thousands a second on a full disk.
            sampled_log::log(Kind::JournalFailure, log::Level::Error, || {
                format!("click not recorded: journal: {e}")
            });
            Unavailable::Journal
        }
        // Clicks are not durable appends; should one come back so, it is a journal fault.
        AppendError::NotYetDurable { .. } => Unavailable::Journal,
    };
    edge.metrics.unavailable(cause);
    no_store(
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .content_type("text/plain; charset=utf-8")
            .body("temporarily unable to record the request; retry shortly\n"),
    )
}

fn redirect_to(location: String) -> HttpResponse {
    match HeaderValue::try_from(location) {
        Ok(v) => no_store(
            HttpResponse::Found()
                .insert_header((header::LOCATION, v))
                .finish(),
        ),
        // `url` serialises to ASCII without controls, so this cannot happen; refuse anyway.
        Err(_) => no_store(HttpResponse::BadRequest().body("bad destination\n")),
    }
}

fn pair<'a>(name: &'a str, value: &'a str) -> PairRef<'a> {
    PairRef {
        name: Text(name),
        value: Text(value),
    }
}

/// A header's value as text, cut to what is kept; empty when absent.
fn text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Cow<'_, str> {
    headers.get(name).map_or(Cow::Borrowed(""), |v| {
        request::keep(String::from_utf8_lossy(v.as_bytes()))
    })
}

fn valid_visitor_id(s: &str) -> bool {
    s.len() == VISITOR_ID_BYTES / 3 * 4
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn new_visitor_id() -> String {
    let mut raw = [0u8; VISITOR_ID_BYTES];
    fastrand::fill(&mut raw);
    click_id::base64url_encode(&raw)
}

/// The shared path of clicks (`is_click`) and impressions.
async fn track(req: &HttpRequest, code: &str, edge: &Edge, is_click: bool) -> HttpResponse {
    // The raw path: valid codes never need percent-encoding, so anything encoded is a 404.
    if !valid_id(code) {
        return not_found(edge);
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > request::HEADER_BLOCK_SIZE_MAX {
        return bad_request(edge, BadRequest::HeadersTooLarge);
    }
    let query = match request::parse_query(req.query_string()) {
        Ok(q) => q,
        Err(cause) => return bad_request(edge, cause),
    };
    let Some(link): Option<Arc<LinkRt>> = edge.store.with(|c| c.link(code).cloned()) else {
        return not_found(edge);
    };
    let campaign = &link.campaign;
    if campaign.campaign.status == Status::Paused {
        edge.metrics.paused_redirects_total.inc();
        if !is_click {
            return pixel();
        }
        let to = campaign.fallback.as_ref().unwrap_or(&campaign.destination);
        return redirect_to(to.as_str().to_string());
    }

    let headers = req.headers();
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    // Every X-Forwarded-For line, in order: a proxy may add its own line after the
    // client's, and reading only the first would let the client pick its address.
    let xff: Vec<&str> = headers
        .get_all(header::X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = (!xff.is_empty()).then(|| xff.join(","));
    let ip = request::client_ip(peer.to_canonical(), xff.as_deref(), &edge.trusted_proxies);
    let flag = |name: &HeaderName| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
    };
    let opted_out = flag(&SEC_GPC) || flag(&DNT);
    let minimal = opted_out && edge.tracking.opt_out == OptOutPolicy::Minimal;
    // Header values are borrowed from the request and archived from there (`ClickRef`):
    // copying each into a `String` first cost about 20 allocations per click.
    let user_agent = text(headers, header::USER_AGENT);
    let accept_language = text(headers, header::ACCEPT_LANGUAGE);
    let hints: Vec<(&str, Cow<str>)> = CLIENT_HINTS
        .iter()
        .filter_map(|h| {
            headers.get(h).map(|v| {
                (
                    h.as_str(),
                    request::keep(String::from_utf8_lossy(v.as_bytes())),
                )
            })
        })
        .collect();
    let mut ip_buf = request::IpText::default();
    let ip_text = ip_buf.format(ip);
    let fingerprint = (!opted_out).then(|| {
        request::fingerprint(
            &edge.fingerprint_key,
            ip_text,
            &[&user_agent, &accept_language],
        )
    });
    let mut truncated_buf = request::IpText::default();
    let stored_ip = match (minimal, edge.tracking.ip_truncation) {
        (true, _) => "",
        (false, IpTruncation::Partial) => truncated_buf.format(request::truncate_ip(ip)),
        (false, IpTruncation::None) => ip_text,
    };
    // Every Cookie header, whole (HTTP/2 may split cookies over several headers).
    let existing_visitor: Option<&str> = headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            request::cookie(c, &edge.tracking.cookie_name).filter(|v| valid_visitor_id(v))
        });
    let visitor_id: Cow<str> = existing_visitor.map_or_else(|| new_visitor_id().into(), Cow::from);
    let unless_minimal = |s| if minimal { Text("") } else { Text(s) };

    let seq = edge.codec.next_seq();
    let shard = edge.ingest.click_shard(seq);
    let at_us = now_us();
    let id = edge.codec.encode(&ClickIdParts {
        node: edge.node_id,
        shard: shard as u8,
        time_s: (at_us / 1_000_000) as u32,
        seq,
        link: link.number,
    });
    let referrer = text(headers, header::REFERER);

    let (kind, version, payload, location) = if is_click {
        let base = match query.url.as_deref() {
            None => campaign.destination.clone(),
            Some(raw) => redirect::allowed_deep_link(campaign, raw).unwrap_or_else(|| {
                edge.metrics.deep_links_refused_total.inc();
                campaign.destination.clone()
            }),
        };
        let mut params: Vec<(&str, &str)> = query
            .utm
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        params.push((campaign.campaign.click_id_param.as_str(), id.as_str()));
        let location = redirect::with_params(&base, &params);
        let (fetch_dest, fetch_site) = (
            text(headers, &SEC_FETCH_DEST),
            text(headers, &SEC_FETCH_SITE),
        );
        let click = ClickRef {
            at_us,
            click_id: Text(&id),
            link_code: Text(&link.link.code),
            affiliate_id: Text(&link.link.affiliate_id),
            campaign_id: Text(&link.link.campaign_id),
            sub_ids: (0..5)
                .map(|i| {
                    Text(if query.subs[i].is_empty() {
                        link.link.sub_ids.get(i).map_or("", String::as_str)
                    } else {
                        &query.subs[i]
                    })
                })
                .collect(),
            ip: Text(stored_ip),
            user_agent: unless_minimal(&user_agent),
            referrer: unless_minimal(&referrer),
            accept_language: unless_minimal(&accept_language),
            sec_fetch_dest: Text(&fetch_dest),
            sec_fetch_site: Text(&fetch_site),
            client_hints: if minimal {
                Vec::new()
            } else {
                hints.iter().map(|(n, v)| pair(n, v)).collect()
            },
            visitor_id: Some(Text(&visitor_id)),
            fingerprint,
            opted_out,
            destination: Text(&location),
            // The utm pairs passed on, then the ad networks' click ids (recorded only).
            utm: params[..params.len() - 1]
                .iter()
                .map(|(n, v)| pair(n, v))
                .chain(query.ad_click_ids.iter().map(|(n, v)| pair(n, v)))
                .collect(),
        };
        let payload = click.archive_into(ARCHIVE_BUFFER.take());
        (Click::KIND, Click::VERSION, payload, Some(location))
    } else {
        let owned_unless_minimal = |s: &str| {
            if minimal {
                String::new()
            } else {
                s.to_string()
            }
        };
        let imp = Impression {
            at_us,
            impression_id: id.clone(),
            link_code: link.link.code.clone(),
            affiliate_id: link.link.affiliate_id.clone(),
            campaign_id: link.link.campaign_id.clone(),
            ip: stored_ip.to_string(),
            user_agent: owned_unless_minimal(&user_agent),
            referrer: owned_unless_minimal(&referrer),
            visitor_id: existing_visitor.map(str::to_string),
        };
        (Impression::KIND, Impression::VERSION, archive(&imp), None)
    };

    let append_started = Instant::now();
    let appended = edge
        .ingest
        .append(shard, kind as u16, version, &payload, false)
        .await;
    edge.metrics.append.observe(append_started.elapsed());
    give_back(payload);
    if let Err(e) = appended {
        return unavailable(edge, e);
    }
    let counter = if is_click {
        &edge.metrics.clicks_total
    } else {
        &edge.metrics.impressions_total
    };
    counter.inc();

    let Some(location) = location else {
        return pixel();
    };
    let max_age = campaign.campaign.cookie_window_days as u64 * 86_400;
    let cookie = |name: &str, value: &str| {
        let mut c = String::with_capacity(name.len() + value.len() + 64);
        c.push_str(name);
        c.push('=');
        c.push_str(value);
        c.push_str("; Max-Age=");
        c.push_str(itoa::Buffer::new().format(max_age));
        c.push_str("; Path=/; HttpOnly; Secure; SameSite=Lax");
        c
    };
    let mut response = redirect_to(location);
    for c in [
        cookie(&edge.tracking.cookie_name, &visitor_id),
        cookie(CLICK_COOKIE, &id),
    ] {
        if let Ok(v) = HeaderValue::try_from(c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

thread_local! {
    /// Each HTTP worker's archive buffer, reused from click to click: allocating and
    /// freeing 1 KiB per click showed in the click profile.
    static ARCHIVE_BUFFER: std::cell::Cell<rkyv::util::AlignedVec> =
        std::cell::Cell::new(rkyv::util::AlignedVec::new());
}

/// Archives `e` into this thread's reusable buffer (taken out of it; [`give_back`] returns
/// it). Another click on the same worker meanwhile simply starts a buffer of its own.
fn archive<E: Event>(e: &E) -> rkyv::util::AlignedVec {
    let mut buf = ARCHIVE_BUFFER.take();
    buf.clear();
    // Sized for a click with browser headers up front: growing from empty reallocated
    // several times per click.
    buf.reserve(1024);
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(e, buf)
        .expect("archiving an in-memory event into a Vec cannot fail")
}

fn give_back(buf: rkyv::util::AlignedVec) {
    // Keep an unusually large buffer (a click with every header at its limit) no longer
    // than this click.
    if buf.capacity() <= 16 * 1024 {
        ARCHIVE_BUFFER.set(buf);
    }
}

fn pixel() -> HttpResponse {
    no_store(HttpResponse::Ok().content_type("image/gif").body(PIXEL_GIF))
}
