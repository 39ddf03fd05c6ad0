//! The edge's own metrics: lock-free counters and fixed-bucket latency histograms, rendered
//! as Prometheus text by `/metrics`.
//!
//! Every counter is split into per-thread shards on their own cache lines and summed when
//! rendered: a click bumps five of them, and with one shared atomic each the HTTP workers
//! would bounce those cache lines between cores on every click.

use crate::edge::request::BadRequest;
use crate::http::sampled_log::{self, Kind, CLIENT_ERROR_STATUSES};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Histogram bucket upper bounds in microseconds (the last bucket is +Inf).
pub const BUCKETS_US: [u64; 16] = [
    25, 50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000,
    1_000_000,
];

/// Shards per counter; threads are spread over them round robin.
const SHARDS: usize = 8;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

#[inline]
fn shard() -> usize {
    SHARD.with(|s| *s)
}

/// One cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line<T>(T);

/// A counter split over per-thread shards.
#[derive(Debug, Default)]
pub struct Counter {
    shards: [Line<AtomicU64>; SHARDS],
}

impl Counter {
    /// A zero counter (for statics).
    pub const fn new() -> Counter {
        Counter {
            shards: [const { Line(AtomicU64::new(0)) }; SHARDS],
        }
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

const BUCKET_COUNT: usize = BUCKETS_US.len() + 1;

/// A latency histogram with cumulative rendering, sharded like [`Counter`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per shard: the bucket counts, then the sum in microseconds.
    shards: [Line<[AtomicU64; BUCKET_COUNT + 1]>; SHARDS],
}

impl Histogram {
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKETS_US.partition_point(|b| *b < us);
        let s = &self.shards[shard()].0;
        s[i].fetch_add(1, Ordering::Relaxed);
        s[BUCKET_COUNT].fetch_add(us, Ordering::Relaxed);
    }

    fn total(&self, i: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[i].load(Ordering::Relaxed))
            .sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for i in 0..BUCKET_COUNT {
            cumulative += self.total(i);
            match BUCKETS_US.get(i) {
                Some(us) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{le=\"{}\"}} {cumulative}",
                        *us as f64 / 1e6
                    );
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.total(BUCKET_COUNT) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Why the edge answered 503.
#[derive(Debug, Clone, Copy)]
pub enum Unavailable {
    /// An ingest queue was full.
    QueueFull,
    /// An ingest shard was restarting or stopped.
    ShardDown,
    /// The journal failed (disk full, I/O).
    Journal,
}

/// Counters and histograms of the edge.
#[derive(Debug, Default)]
pub struct Metrics {
    pub clicks_total: Counter,
    pub impressions_total: Counter,
    pub paused_redirects_total: Counter,
    pub deep_links_refused_total: Counter,
    pub unknown_links_total: Counter,
    bad_requests: [Counter; BadRequest::ALL.len()],
    /// 4xx answers by status ([`CLIENT_ERROR_STATUSES`], then all others).
    client_errors: [Counter; CLIENT_ERROR_STATUSES.len() + 1],
    /// Requests whose body did not arrive within `server.body-timeout-ms` (408).
    pub body_timeouts_total: Counter,
    /// Connections over `server.connections-per-ip-max` (their requests get 429).
    pub connections_refused_per_ip_total: Counter,
    unavailable: [Counter; 3],
    pub redirect: Histogram,
    pub append: Histogram,
}

impl Metrics {
    pub fn bad_request(&self, cause: BadRequest) {
        let i = BadRequest::ALL.iter().position(|c| *c == cause).unwrap();
        self.bad_requests[i].inc();
    }

    /// Counts a 4xx answer of `kind` (a [`Kind::ClientError`]; other kinds are not answers).
    pub fn client_error(&self, kind: Kind) {
        if let Kind::ClientError(i) = kind {
            self.client_errors[i.min(CLIENT_ERROR_STATUSES.len())].inc();
        }
    }

    pub fn unavailable(&self, cause: Unavailable) {
        self.unavailable[cause as usize].inc();
    }

    pub fn render(&self, out: &mut String) {
        let counter = |out: &mut String, name: &str, help: &str, v: &Counter| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.get()
            );
        };
        counter(
            out,
            "clicktrail_clicks_total",
            "Clicks recorded and redirected.",
            &self.clicks_total,
        );
        counter(
            out,
            "clicktrail_impressions_total",
            "Impressions recorded.",
            &self.impressions_total,
        );
        counter(
            out,
            "clicktrail_paused_redirects_total",
            "Clicks on paused campaigns sent to the fallback, unrecorded.",
            &self.paused_redirects_total,
        );
        counter(
            out,
            "clicktrail_deep_links_refused_total",
            "Deep links not on the allow-list (sent to the default destination).",
            &self.deep_links_refused_total,
        );
        counter(
            out,
            "clicktrail_unknown_links_total",
            "Requests for unknown link codes (404).",
            &self.unknown_links_total,
        );
        let _ = writeln!(
            out,
            "# HELP clicktrail_bad_requests_total Requests refused with 400, by cause.\n# TYPE clicktrail_bad_requests_total counter"
        );
        for (c, v) in BadRequest::ALL.iter().zip(&self.bad_requests) {
            let _ = writeln!(
                out,
                "clicktrail_bad_requests_total{{cause=\"{}\"}} {}",
                c.label(),
                v.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP clicktrail_client_errors_total Requests answered 4xx, by status (other: the rest).\n# TYPE clicktrail_client_errors_total counter"
        );
        let statuses = CLIENT_ERROR_STATUSES
            .iter()
            .map(|s| itoa::Buffer::new().format(*s).to_string());
        for (status, v) in statuses
            .chain(["other".to_string()])
            .zip(&self.client_errors)
        {
            let _ = writeln!(
                out,
                "clicktrail_client_errors_total{{status=\"{status}\"}} {}",
                v.get()
            );
        }
        counter(
            out,
            "clicktrail_malformed_requests_total",
            "Unparsable requests (bad framing or head) the HTTP layer answered 400 and closed.",
            &sampled_log::MALFORMED_REQUESTS_TOTAL,
        );
        counter(
            out,
            "clicktrail_log_lines_suppressed_total",
            "Lines about requests left out of the log by sampling.",
            &sampled_log::SUPPRESSED_LINES_TOTAL,
        );
        let _ = writeln!(
            out,
            "# HELP clicktrail_request_timeouts_total Requests answered 408 by the edge, by phase.\n# TYPE clicktrail_request_timeouts_total counter\nclicktrail_request_timeouts_total{{phase=\"body\"}} {}",
            self.body_timeouts_total.get()
        );
        let _ = writeln!(
            out,
            "# HELP clicktrail_connections_refused_total Connections refused (their requests answered 429), by cause.\n# TYPE clicktrail_connections_refused_total counter\nclicktrail_connections_refused_total{{cause=\"per_ip\"}} {}",
            self.connections_refused_per_ip_total.get()
        );
        let _ = writeln!(
            out,
            "# HELP clicktrail_unavailable_total Requests answered 503, by cause.\n# TYPE clicktrail_unavailable_total counter"
        );
        for (label, v) in ["queue_full", "shard_down", "journal"]
            .iter()
            .zip(&self.unavailable)
        {
            let _ = writeln!(
                out,
                "clicktrail_unavailable_total{{cause=\"{label}\"}} {}",
                v.get()
            );
        }
        self.redirect.render(
            out,
            "clicktrail_redirect_duration_seconds",
            "Server-side time to answer a click or impression, journal append included.",
        );
        self.append.render(
            out,
            "clicktrail_journal_append_duration_seconds",
            "Time from hand-off to an ingest shard until the record is in the journal.",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let h = Histogram::default();
        for us in [10, 30, 999, 1000, 1001, 2_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.000025\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.001\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.002\"} 5\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 6\n"), "{out}");
        assert!(out.contains("x_count 6\n"));
    }
}
