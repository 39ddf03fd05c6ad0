//! Per-address connection limits: one client must not take the file descriptors that
//! everyone else's clicks need.
//!
//! actix-web has no such setting. When a connection is accepted, `HttpServer::on_connect`
//! puts a [`ConnSlot`] in the connection's extensions: admitted while its peer address has
//! fewer than `server.connections-per-ip-max` admitted connections, refused otherwise.
//! The slot lives as long as the connection (actix-http drops the connection's
//! extensions with its dispatcher, and actix-web clears a pooled request's reference), and
//! its `Drop` gives the place back. Every request on a refused connection is answered 429
//! with `Retry-After` and `Connection: close`; a refused connection that never sends a
//! head is closed by the header deadline.
//!
//! The counts are bounded: an address is in the map only while it has an admitted
//! connection, so the map never holds more entries than there are open connections
//! (`workers x server.connections-max`). Peers in `tracking.trusted-proxies` are not
//! counted: a proxy carries many clients, and limiting it would limit all of them.

use super::closing;
use crate::edge::request::Cidr;
use crate::metrics::Metrics;
use actix_web::HttpResponse;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Lock shards of the counts: accepts on different workers rarely meet on one lock.
const SHARDS: usize = 16;

/// Open admitted connections per peer address.
#[derive(Debug)]
pub struct PerIpLimiter {
    /// Most admitted connections per address; at least 1.
    max: u32,
    exempt: Vec<Cidr>,
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
    hasher: foldhash::fast::RandomState,
    metrics: Arc<Metrics>,
}

/// A connection's place under its address's limit, kept in the connection's extensions.
#[derive(Debug)]
pub struct ConnSlot {
    /// `None`: refused, or not counted (an exempt proxy); nothing to give back.
    counted: Option<(Arc<PerIpLimiter>, IpAddr)>,
    admitted: bool,
}

impl ConnSlot {
    pub fn admitted(&self) -> bool {
        self.admitted
    }
}

impl PerIpLimiter {
    /// A limiter for `max` connections per address (`max` >= 1; 0 means no limiter).
    pub fn new(max: u32, exempt: Vec<Cidr>, metrics: Arc<Metrics>) -> Arc<PerIpLimiter> {
        assert!(max >= 1, "a per-address limit of 0 means no limiter");
        Arc::new(PerIpLimiter {
            max,
            exempt,
            shards: Default::default(),
            hasher: Default::default(),
            metrics,
        })
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.shards[self.hasher.hash_one(ip) as usize % SHARDS]
    }

    /// Takes a place for a new connection from `ip` (refused when its address is full).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> ConnSlot {
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|c| c.contains(ip)) {
            return ConnSlot {
                counted: None,
                admitted: true,
            };
        }
        let mut counts = self.shard(&ip).lock().unwrap();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            drop(counts);
            self.metrics.connections_refused_per_ip_total.inc();
            return ConnSlot {
                counted: None,
                admitted: false,
            };
        }
        *n += 1;
        ConnSlot {
            counted: Some((self.clone(), ip)),
            admitted: true,
        }
    }

    /// Admitted connections from `ip` now (for tests and metrics).
    pub fn open(&self, ip: IpAddr) -> u32 {
        let ip = ip.to_canonical();
        self.shard(&ip)
            .lock()
            .unwrap()
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    /// Addresses with at least one admitted connection.
    pub fn addresses(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.shard(&ip).lock().unwrap();
        let n = counts
            .get_mut(&ip)
            .expect("an admitted connection's address is counted");
        assert!(*n >= 1);
        *n -= 1;
        if *n == 0 {
            counts.remove(&ip);
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some((limiter, ip)) = self.counted.take() {
            limiter.release(ip);
        }
    }
}

/// The `on_connect` hook: a slot for every accepted TCP connection.
pub fn on_connect(
    limiter: Arc<PerIpLimiter>,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + 'static {
    move |conn, ext| {
        let peer = conn
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .and_then(|s| s.peer_addr().ok());
        if let Some(peer) = peer {
            ext.insert(limiter.admit(peer.ip()));
        }
    }
}

/// The answer on a connection over its address's limit.
pub fn too_many_connections() -> HttpResponse {
    closing(
        HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "1"))
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({
                "error": "too many connections from this address (server.connections-per-ip-max)"
            })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_given_back_and_the_map_only_holds_open_addresses() {
        let limiter = PerIpLimiter::new(
            2,
            vec!["10.0.0.0/8".parse().unwrap()],
            Arc::new(Metrics::default()),
        );
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "::ffff:203.0.113.2".parse().unwrap();
        let (s1, s2, s3) = (limiter.admit(a), limiter.admit(a), limiter.admit(a));
        assert!(s1.admitted() && s2.admitted() && !s3.admitted());
        assert_eq!(limiter.open(a), 2);
        drop(s3); // a refused slot gives nothing back
        assert_eq!(limiter.open(a), 2);
        drop(s1);
        assert!(limiter.admit(a).admitted());
        let other = limiter.admit(b);
        assert!(other.admitted());
        assert_eq!(limiter.open("203.0.113.2".parse().unwrap()), 1);
        assert_eq!(limiter.addresses(), 2);
        // A trusted proxy is never counted nor refused.
        let proxy: Vec<_> = (0..5)
            .map(|_| limiter.admit("10.1.2.3".parse().unwrap()))
            .collect();
        assert!(proxy.iter().all(ConnSlot::admitted));
        assert_eq!(limiter.addresses(), 2);
        drop((s2, other));
        assert_eq!(limiter.addresses(), 0);
        assert_eq!(limiter.metrics.connections_refused_per_ip_total.get(), 1);
    }
}
