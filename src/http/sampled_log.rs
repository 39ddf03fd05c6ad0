//! Log volume is not the client's to choose: lines about requests are sampled.
//!
//! Every kind of line that a request can cause ([`Kind`]: a 4xx answer by status, a
//! malformed request refused by actix-http, a connection that ended in an I/O error, a
//! journal failure answered 503) is logged at most [`LINES_PER_WINDOW`] times per
//! [`WINDOW`]; the first line of the next window says how many were left out. The counts
//! that matter are in `/metrics` whatever the log shows (`clicktrail_client_errors_total`,
//! `clicktrail_bad_requests_total`, `clicktrail_malformed_requests_total`,
//! `clicktrail_log_lines_suppressed_total`). Memory is one slot per kind, fixed.
//!
//! actix-http logs each malformed request and each connection error itself, at ERROR
//! ("stream error: ..."). [`SampledLogger`] wraps the process logger to catch those lines:
//! they are counted, sampled and logged at INFO (the client's mistake is not our error).

use crate::metrics::{Counter, Metrics};
use actix_web::dev::ServiceResponse;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines logged per kind per window.
pub const LINES_PER_WINDOW: u32 = 5;
/// The sampling window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// 4xx statuses with a slot of their own (the rest share one).
pub const CLIENT_ERROR_STATUSES: [u16; 13] = [
    400, 401, 403, 404, 405, 408, 409, 413, 414, 415, 422, 429, 431,
];

/// What a sampled line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A 4xx answer: the index in [`CLIENT_ERROR_STATUSES`], or its length for others.
    ClientError(usize),
    /// actix-http refused an unparsable request head with 400.
    Malformed,
    /// actix-http ended a connection on an I/O or protocol error.
    ConnectionError,
    /// A request could not be recorded: the journal failed (answered 503).
    JournalFailure,
}

const KINDS: usize = CLIENT_ERROR_STATUSES.len() + 1 + 3;

impl Kind {
    fn index(self) -> usize {
        let n = CLIENT_ERROR_STATUSES.len() + 1;
        match self {
            Kind::ClientError(i) => i.min(n - 1),
            Kind::Malformed => n,
            Kind::ConnectionError => n + 1,
            Kind::JournalFailure => n + 2,
        }
    }

    /// The kind of a 4xx status.
    pub fn of_status(status: u16) -> Kind {
        Kind::ClientError(
            CLIENT_ERROR_STATUSES
                .iter()
                .position(|s| *s == status)
                .unwrap_or(CLIENT_ERROR_STATUSES.len()),
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Per-kind sampling state.
#[derive(Debug)]
struct Sampler {
    slots: [Mutex<Slot>; KINDS],
}

static SAMPLER: Sampler = Sampler {
    slots: [const {
        Mutex::new(Slot {
            window_start: None,
            logged: 0,
            suppressed: 0,
        })
    }; KINDS],
};

/// Requests actix-http refused as malformed (400 before any handler).
pub static MALFORMED_REQUESTS_TOTAL: Counter = Counter::new();
/// Lines left out by sampling.
pub static SUPPRESSED_LINES_TOTAL: Counter = Counter::new();

/// Whether a line of `kind` is logged now: `Some(n)` with the lines left out since the
/// last one logged (when the window turned), `None` to leave this one out.
fn sample(kind: Kind, now: Instant) -> Option<u64> {
    let mut s = SAMPLER.slots[kind.index()]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fresh = s
        .window_start
        .is_none_or(|start| now.duration_since(start) >= WINDOW);
    if fresh {
        let left_out = std::mem::take(&mut s.suppressed);
        *s = Slot {
            window_start: Some(now),
            logged: 1,
            suppressed: 0,
        };
        return Some(left_out);
    }
    if s.logged < LINES_PER_WINDOW {
        s.logged += 1;
        return Some(0);
    }
    s.suppressed += 1;
    drop(s);
    SUPPRESSED_LINES_TOTAL.inc();
    None
}

/// Logs `line()` at `level` unless `kind` has had its lines this window.
pub fn log(kind: Kind, level: log::Level, line: impl FnOnce() -> String) {
    if !log::log_enabled!(target: "clicktrail::requests", level) {
        return;
    }
    if let Some(left_out) = sample(kind, Instant::now()) {
        if left_out > 0 {
            log::log!(target: "clicktrail::requests", level,
                "{left_out} more like the next line were left out in the last {}s", WINDOW.as_secs());
        }
        log::log!(target: "clicktrail::requests", level, "{}", line());
    }
}

/// Counts a 4xx answer and logs it, sampled.
pub fn client_error<B>(metrics: &Metrics, res: &ServiceResponse<B>) {
    let status = res.status().as_u16();
    let kind = Kind::of_status(status);
    metrics.client_error(kind);
    log(kind, log::Level::Info, || {
        let req = res.request();
        let path = req.path();
        let cut = path.char_indices().nth(120).map_or(path.len(), |(i, _)| i);
        let peer = req
            .peer_addr()
            .map_or_else(|| "?".to_string(), |a| a.ip().to_string());
        // Never the query: it may hold a key (`/postback?key=`).
        format!("{status} for {} {} from {peer}", req.method(), &path[..cut])
    });
}

/// The process logger: env_logger, with actix-http's per-connection error lines counted
/// and sampled.
#[derive(Debug)]
pub struct SampledLogger {
    inner: env_logger::Logger,
}

/// Where actix-http logs a connection's end on an error.
const DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";

impl SampledLogger {
    /// Installs the logger (`RUST_LOG`, default `info`).
    pub fn init() {
        let inner =
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .build();
        // Malformed requests are counted from actix-http's ERROR line, so that line must
        // reach us whatever RUST_LOG says.
        let max = inner.filter().max(log::LevelFilter::Error);
        if log::set_boxed_logger(Box::new(SampledLogger { inner })).is_ok() {
            log::set_max_level(max);
        }
    }
}

impl log::Log for SampledLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        (m.target() == DISPATCHER_TARGET && m.level() == log::Level::Error) || self.inner.enabled(m)
    }

    fn log(&self, r: &log::Record) {
        if r.target() == DISPATCHER_TARGET && r.level() == log::Level::Error {
            let text = r.args().to_string();
            if let Some(what) = text.strip_prefix("stream error: ") {
                let kind = if what.starts_with("request parse error") {
                    MALFORMED_REQUESTS_TOTAL.inc();
                    Kind::Malformed
                } else {
                    Kind::ConnectionError
                };
                log(kind, log::Level::Info, || {
                    format!("connection closed by the HTTP layer: {what}")
                });
                return;
            }
        }
        if self.inner.matches(r) {
            self.inner.log(r);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_logs_its_lines_per_window_then_says_how_many_were_left_out() {
        let kind = Kind::JournalFailure;
        let t0 = Instant::now();
        let logged: Vec<_> = (0..100).map(|_| sample(kind, t0)).collect();
        assert_eq!(logged.iter().flatten().count(), LINES_PER_WINDOW as usize);
        assert!(logged[LINES_PER_WINDOW as usize..]
            .iter()
            .all(Option::is_none));
        // Other kinds have their own slots.
        assert!(sample(Kind::of_status(499), t0).is_some());
        assert_eq!(
            sample(kind, t0 + WINDOW),
            Some(100 - LINES_PER_WINDOW as u64)
        );
        assert_eq!(sample(kind, t0 + WINDOW), Some(0));
    }
}
