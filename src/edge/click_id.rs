//! Click ids: compact, URL-safe, self-describing and unforgeable.
//!
//! ```text
//! 24 bytes, base64url without padding = 32 characters
//!
//! offset size field
//!      0    1 version (1)
//!      1    2 node id (u16 BE)
//!      3    1 ingest shard (journal partition) that recorded the click
//!      4    4 click time, Unix seconds (u32 BE)
//!      8    4 sequence (u32 BE), per process, random start
//!     12    4 link number (u32 BE)
//!     16    8 HMAC-SHA256(key, bytes 0..16), truncated to 64 bits
//! ```
//!
//! Any node holding the key can verify a click id and read its link and time without a
//! lookup. A forged or altered id fails the MAC (a 2^-64 chance to guess one).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes before encoding.
pub const RAW_LEN: usize = 24;
/// Length of the encoded id.
pub const ENCODED_LEN: usize = 32;
const BODY_LEN: usize = 16;
const VERSION: u8 = 1;

const _: () = assert!(ENCODED_LEN == RAW_LEN / 3 * 4);

/// What a click id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickIdParts {
    pub node: u16,
    pub shard: u8,
    pub time_s: u32,
    pub seq: u32,
    pub link: u32,
}

/// Why a click id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClickIdError {
    /// Not 32 base64url characters, or an unknown version.
    #[error("malformed click id")]
    Malformed,
    /// Well formed but the MAC does not match: forged or altered.
    #[error("click id failed verification")]
    Forged,
}

/// Encodes and verifies click ids with one key.
#[derive(Clone)]
pub struct ClickIdCodec {
    /// Keyed HMAC state, cloned per use (cheaper than re-keying).
    mac: Hmac<Sha256>,
    seq: std::sync::Arc<AtomicU32>,
}

impl std::fmt::Debug for ClickIdCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClickIdCodec")
    }
}

impl ClickIdCodec {
    pub fn new(key: &[u8]) -> ClickIdCodec {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id().rotate_left(16);
        ClickIdCodec {
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"),
            seq: std::sync::Arc::new(AtomicU32::new(start)),
        }
    }

    /// The next sequence number (wraps).
    #[inline]
    pub fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn tag(&self, body: &[u8]) -> [u8; 8] {
        let mut mac = self.mac.clone();
        mac.update(body);
        let full = mac.finalize().into_bytes();
        full[..8].try_into().unwrap()
    }

    /// Encodes a click id.
    pub fn encode(&self, p: &ClickIdParts) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION;
        raw[1..3].copy_from_slice(&p.node.to_be_bytes());
        raw[3] = p.shard;
        raw[4..8].copy_from_slice(&p.time_s.to_be_bytes());
        raw[8..12].copy_from_slice(&p.seq.to_be_bytes());
        raw[12..16].copy_from_slice(&p.link.to_be_bytes());
        let tag = self.tag(&raw[..BODY_LEN]);
        raw[BODY_LEN..].copy_from_slice(&tag);
        base64url_encode(&raw)
    }

    /// Decodes and verifies a click id.
    pub fn decode(&self, s: &str) -> Result<ClickIdParts, ClickIdError> {
        let raw = base64url_decode::<RAW_LEN>(s).ok_or(ClickIdError::Malformed)?;
        if raw[0] != VERSION {
            return Err(ClickIdError::Malformed);
        }
        let mut mac = self.mac.clone();
        mac.update(&raw[..BODY_LEN]);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(&raw[BODY_LEN..])
            .map_err(|_| ClickIdError::Forged)?;
        Ok(ClickIdParts {
            node: u16::from_be_bytes([raw[1], raw[2]]),
            shard: raw[3],
            time_s: u32::from_be_bytes(raw[4..8].try_into().unwrap()),
            seq: u32::from_be_bytes(raw[8..12].try_into().unwrap()),
            link: u32::from_be_bytes(raw[12..16].try_into().unwrap()),
        })
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding, for inputs whose length is a multiple of 3.
pub fn base64url_encode(raw: &[u8]) -> String {
    assert!(raw.len() % 3 == 0);
    let mut out = String::with_capacity(raw.len() / 3 * 4);
    for c in raw.chunks_exact(3) {
        let n = (c[0] as u32) << 16 | (c[1] as u32) << 8 | c[2] as u32;
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[(n >> shift) as usize & 63] as char);
        }
    }
    out
}

/// Decoding is shared with the click index, which reads ids' layout to find old clicks.
pub use clicktrail_actors::clicks::base64url_decode;

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> ClickIdParts {
        ClickIdParts {
            node: 7,
            shard: 1,
            time_s: 1_764_000_000,
            seq: 0xdead_beef,
            link: 42,
        }
    }

    #[test]
    fn roundtrip_and_url_safe() {
        let c = ClickIdCodec::new(b"0123456789abcdef0123456789abcdef");
        let id = c.encode(&parts());
        assert_eq!(id.len(), ENCODED_LEN);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(c.decode(&id), Ok(parts()));
    }

    #[test]
    fn forged_altered_and_malformed_ids_are_refused() {
        let c = ClickIdCodec::new(b"0123456789abcdef0123456789abcdef");
        let other = ClickIdCodec::new(b"another key, another key, another");
        let id = c.encode(&parts());
        assert_eq!(other.decode(&id), Err(ClickIdError::Forged));
        // Change the link number: the MAC no longer matches.
        let mut forged = parts();
        forged.link = 43;
        let forged = other.encode(&forged);
        assert_eq!(c.decode(&forged), Err(ClickIdError::Forged));
        // Every single-character change is caught.
        for i in 0..id.len() {
            let mut b = id.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(b).unwrap();
            assert!(c.decode(&s).is_err(), "change at {i} went unnoticed");
        }
        for bad in [
            "",
            "short",
            &id[..31],
            &format!("{id}A"),
            &id.replace(&id[..1], "!"),
        ] {
            assert_eq!(c.decode(bad).unwrap_err(), ClickIdError::Malformed, "{bad}");
        }
    }

    #[test]
    fn base64url_matches_the_standard_alphabet() {
        assert_eq!(base64url_encode(b"\xfb\xff\xbf"), "-_-_");
        assert_eq!(base64url_encode(b"Man"), "TWFu");
        assert_eq!(base64url_decode::<3>("TWFu"), Some(*b"Man"));
        assert_eq!(base64url_decode::<3>("TW=u"), None);
    }
}
