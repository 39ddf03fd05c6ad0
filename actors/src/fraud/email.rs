//! The buyer's e-mail as the fraud rules see it: a keyed hash, never the address. The key
//! is the server's (`[secrets] email-hash-key`, by default derived from the click-id key),
//! so a leaked journal cannot be joined with e-mail lists by hashing them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the HMAC kept (hex doubles them): 128 bits, no collisions at any real volume.
pub const EMAIL_HASH_BYTES: usize = 16;

/// The address one mailbox has, whichever way it is written: trimmed and lower-cased,
/// without a `+tag`, and for Gmail without the dots it ignores.
pub fn normalise(email: &str) -> String {
    let lower = email.trim().to_lowercase();
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return lower;
    };
    let local = local.split('+').next().unwrap_or(local);
    let (local, domain) = match domain {
        "gmail.com" | "googlemail.com" => (local.replace('.', ""), "gmail.com"),
        _ => (local.to_string(), domain),
    };
    format!("{local}@{domain}")
}

/// Keyed hash of an e-mail address: HMAC-SHA256 of the address as [`normalise`] writes
/// it, the first [`EMAIL_HASH_BYTES`] in hex. `None` for an empty address.
pub fn email_hash(key: &[u8], email: &str) -> Option<String> {
    let normal = normalise(email);
    if normal.is_empty() {
        return None;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(normal.as_bytes());
    let digest = mac.finalize().into_bytes();
    Some(crate::catalog::hex(&digest[..EMAIL_HASH_BYTES]))
}

/// The e-mail key derived from another secret (the click-id key) when none is configured:
/// HMAC-SHA256 of a fixed label under it, so the two keys never coincide.
pub fn derive_email_key(secret: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"clicktrail customer-email hash key v1");
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_case_and_spaces_and_depends_on_the_key() {
        let k = b"k1";
        let a = email_hash(k, " Buyer@Example.COM ").unwrap();
        assert_eq!(Some(a.clone()), email_hash(k, "buyer@example.com"));
        assert_eq!(a.len(), 2 * EMAIL_HASH_BYTES);
        assert_ne!(Some(a), email_hash(b"k2", "buyer@example.com"));
        assert_eq!(email_hash(k, "  "), None);
        assert_eq!(
            email_hash(k, "Jo.Doe+shop@GoogleMail.com"),
            email_hash(k, "jodoe@gmail.com")
        );
        assert_eq!(
            normalise("a.b+x@example.com"),
            "a.b@example.com",
            "dots count elsewhere"
        );
        assert_ne!(derive_email_key(b"s"), b"s".to_vec());
    }
}
