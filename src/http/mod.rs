//! The HTTP edge's connection and request limits: what bounds the file descriptors, memory
//! and log lines a client can take, whatever it sends.
//!
//! ```text
//! phase of a connection         bound                               when reached
//! ----------------------------  ----------------------------------  -------------------------
//! accept -> first request head  server.header-timeout-ms    (5 s)   408, close (actix-http)
//! request head size             actix-http's head buffer            431 / 400, close
//! malformed framing             actix-http's h1 parser              400, close (see below)
//! head -> complete body         server.body-timeout-ms     (10 s)   408, close  (body.rs)
//! body size                     a named maximum per route           413 (PayloadConfig)
//! idle between requests         server.keep-alive-timeout-ms (5 s)  close (actix-http)
//! unread body / TCP shutdown    server.disconnect-timeout-ms (1 s)  close (actix-http)
//! connections per peer address  server.connections-per-ip-max (256) 429, close (per_ip.rs)
//! connections per worker        server.connections-max  (25000)     not accepted (actix-server)
//! log lines per client error    sampled_log::LINES_PER_WINDOW     "suppressed N" line
//! ```
//!
//! Malformed framing (`Content-Length: -1`, `Content-Length: abc`, two different
//! `Content-Length` headers, `Content-Length` with `Transfer-Encoding: chunked`) never
//! reaches a handler: actix-http 3.20's h1 decoder refuses the head and its dispatcher
//! answers `400 Bad Request` with an empty body and `Connection: close` itself, then ends
//! the connection with an ERROR log line ("stream error: request parse error"). There is
//! no hook to give that answer a body without forking actix-http; [`sampled_log`] counts
//! those lines (`clicktrail_malformed_requests_total`) and samples them. One more limit of
//! actix-http there: it does not linger after a parse error, so when the client already
//! sent bytes past the bad head, closing the socket sends a TCP reset, and a client that
//! reads only after it finished sending may lose the 400 to that reset.
//!
//! The guard ([`Guard::call`]) is the outermost middleware: it refuses requests on
//! connections over their address's limit, arms the body deadline on requests that carry
//! a body, gives payload-size refusals a clear JSON answer, and counts and samples every
//! 4xx. A request without a body costs it one extensions lookup and one status check.

pub mod body;
pub mod json;
pub mod per_ip;
pub mod sampled_log;
pub mod time;

use crate::metrics::Metrics;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{Error, HttpResponse};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The `[server]` deadlines and limits, in typed units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub disconnect_timeout: Duration,
    /// 0: no per-address limit.
    pub connections_per_ip_max: u32,
}

/// The largest body a route reads, registered next to its `PayloadConfig` so a refusal
/// can name it: `.app_data(BodySizeMax(n)).app_data(web::PayloadConfig::new(n))`.
#[derive(Debug, Clone, Copy)]
pub struct BodySizeMax(pub usize);

/// The outermost middleware's state, one copy per worker.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// `'static` so that no request pays for an `Arc` clone: a reference count shared by
    /// every worker is the cache-line bouncing the sharded counters exist to avoid.
    pub metrics: &'static Metrics,
    pub body_timeout: Duration,
}

impl Guard {
    /// The guard of this process's server (its metrics are kept for the process's life).
    pub fn new(metrics: Arc<Metrics>, body_timeout: Duration) -> Guard {
        Guard {
            metrics: Box::leak(Box::new(metrics)),
            body_timeout,
        }
    }

    /// Serves `req` through `srv` within the edge's limits (see the module docs).
    pub fn call<S, B>(
        &self,
        mut req: ServiceRequest,
        srv: &S,
    ) -> impl Future<Output = Result<ServiceResponse<BoxBody>, Error>> + 'static
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
        S::Future: 'static,
        B: MessageBody + 'static,
    {
        // Armed first, so that even a refused request's body is held while it is answered.
        let deadline = body::arm(&mut req, self.body_timeout);
        let refused = req
            .conn_data::<per_ip::ConnSlot>()
            .is_some_and(|slot| !slot.admitted());
        let outcome = if refused {
            Err(req.into_response(per_ip::too_many_connections()))
        } else {
            Ok(srv.call(req))
        };
        let metrics = self.metrics;
        async move {
            let res = match outcome {
                Ok(fut) => fut.await?.map_into_boxed_body(),
                Err(refusal) => refusal,
            };
            let res = match &deadline {
                Some(d) if d.passed() => {
                    metrics.body_timeouts_total.inc();
                    res.into_response(body::timed_out())
                }
                // A handler's own JSON 413 (an import over its line limit) says why; the
                // extractors' plain ones are given the route's maximum.
                _ if res.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(res.response()) => {
                    let max = res.request().app_data::<BodySizeMax>().copied();
                    res.into_response(body_too_large(max))
                }
                _ => res,
            };
            if res.status().is_client_error() {
                sampled_log::client_error(metrics, &res);
            }
            Ok(match deadline {
                Some(d) => res.map_body(|_, b| d.keep_payload(b)),
                None => res,
            })
        }
    }
}

fn is_json<B>(r: &actix_web::HttpResponse<B>) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// An answer after which the connection closes.
pub(crate) fn closing(mut r: HttpResponse) -> HttpResponse {
    r.head_mut().set_connection_type(ConnectionType::Close);
    r
}

fn body_too_large(max: Option<BodySizeMax>) -> HttpResponse {
    let msg = match max {
        Some(BodySizeMax(n)) => {
            format!("request body too large: this endpoint takes at most {n} bytes")
        }
        None => "request body too large".to_string(),
    };
    let mut r = HttpResponse::PayloadTooLarge().json(serde_json::json!({ "error": msg }));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    closing(r)
}
