//! Reading a tracking request: its query, client IP, cookies and fingerprint. Everything
//! here is strict and bounded: bad percent-encoding, invalid UTF-8, control characters,
//! repeated or oversized parameters are refused with a named cause, never guessed at.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

/// Longest query string accepted.
pub const QUERY_LEN_MAX: usize = 4096;
/// Most parameters in one query.
pub const PARAMS_MAX: usize = 64;
/// Longest sub-id value.
pub const SUB_LEN_MAX: usize = 256;
/// Longest utm value.
pub const UTM_LEN_MAX: usize = 256;
/// Most utm parameters passed through.
pub const UTM_MAX: usize = 10;
/// Ad networks' click ids recorded with a click (in its `utm` pairs, where the fraud
/// engine's brand-bidding rule reads them), never passed through to the destination.
pub const AD_CLICK_IDS: [&str; 3] = ["gclid", "msclkid", "fbclid"];
/// Longest ad click id recorded.
pub const AD_CLICK_ID_LEN_MAX: usize = 256;
/// Largest header block (all names and values) a tracking request may carry: browsers send
/// a few KiB; more is refused with 431.
pub const HEADER_BLOCK_SIZE_MAX: usize = 16 * 1024;
/// Longest header value we record (user agent, referrer, ...); longer ones are cut.
pub const HEADER_KEEP_MAX: usize = 512;

/// Why a request was refused (the label of the `bad_requests_total` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadRequest {
    QueryTooLong,
    TooManyParams,
    BadEncoding,
    RepeatedParam,
    ParamTooLong,
    ControlCharacter,
    HeadersTooLarge,
}

impl BadRequest {
    pub const ALL: [BadRequest; 7] = [
        BadRequest::QueryTooLong,
        BadRequest::TooManyParams,
        BadRequest::BadEncoding,
        BadRequest::RepeatedParam,
        BadRequest::ParamTooLong,
        BadRequest::ControlCharacter,
        BadRequest::HeadersTooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BadRequest::QueryTooLong => "query_too_long",
            BadRequest::TooManyParams => "too_many_params",
            BadRequest::BadEncoding => "bad_encoding",
            BadRequest::RepeatedParam => "repeated_param",
            BadRequest::ParamTooLong => "param_too_long",
            BadRequest::ControlCharacter => "control_character",
            BadRequest::HeadersTooLarge => "headers_too_large",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            BadRequest::QueryTooLong => "query string too long",
            BadRequest::TooManyParams => "too many query parameters",
            BadRequest::BadEncoding => "invalid percent-encoding or UTF-8 in the query",
            BadRequest::RepeatedParam => "a tracking parameter appears more than once",
            BadRequest::ParamTooLong => "a query parameter is too long",
            BadRequest::ControlCharacter => "control characters are not allowed in parameters",
            BadRequest::HeadersTooLarge => "request headers too large",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Strict form decoding of one component: `+` is a space, `%XX` must be two hex digits,
/// the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<std::borrow::Cow<'_, str>, BadRequest> {
    if !s.contains(['%', '+']) {
        return Ok(std::borrow::Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex);
                let lo = b.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(BadRequest::BadEncoding),
                }
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(std::borrow::Cow::Owned)
        .map_err(|_| BadRequest::BadEncoding)
}

/// The tracking parameters of a click or impression.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrackingQuery {
    /// sub1..sub5; empty where absent.
    pub subs: [String; 5],
    /// Deep link (`url=`).
    pub url: Option<String>,
    /// `utm_*` parameters, in order, passed through to the destination.
    pub utm: Vec<(String, String)>,
    /// [`AD_CLICK_IDS`] present, in order: recorded, not passed through.
    pub ad_click_ids: Vec<(&'static str, String)>,
}

/// Parses a raw (still percent-encoded) query string.
pub fn parse_query(raw: &str) -> Result<TrackingQuery, BadRequest> {
    if raw.len() > QUERY_LEN_MAX {
        return Err(BadRequest::QueryTooLong);
    }
    let mut q = TrackingQuery::default();
    let mut seen_sub = [false; 5];
    for (n, pair) in raw.split('&').filter(|p| !p.is_empty()).enumerate() {
        if n >= PARAMS_MAX {
            return Err(BadRequest::TooManyParams);
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k)?;
        let slot = match &*key {
            "sub1" => Some(0),
            "sub2" => Some(1),
            "sub3" => Some(2),
            "sub4" => Some(3),
            "sub5" => Some(4),
            _ => None,
        };
        if let Some(i) = slot {
            let value = checked_value(v, SUB_LEN_MAX)?;
            if std::mem::replace(&mut seen_sub[i], true) {
                return Err(BadRequest::RepeatedParam);
            }
            q.subs[i] = value;
        } else if key == "url" {
            let value = checked_value(v, catalog_url_max())?;
            if q.url.replace(value).is_some() {
                return Err(BadRequest::RepeatedParam);
            }
        } else if key.starts_with("utm_") && key.len() <= 32 {
            let value = checked_value(v, UTM_LEN_MAX)?;
            if q.utm.iter().any(|(k, _)| **k == *key) {
                return Err(BadRequest::RepeatedParam);
            }
            if q.utm.len() >= UTM_MAX {
                return Err(BadRequest::TooManyParams);
            }
            if key.chars().any(char::is_control) {
                return Err(BadRequest::ControlCharacter);
            }
            q.utm.push((key.into_owned(), value));
        } else if let Some(name) = AD_CLICK_IDS.iter().find(|n| **n == key) {
            // Recorded when well formed; otherwise ignored, as every parameter besides
            // the tracking ones was before (a click is never refused over an ad id).
            let repeated = q.ad_click_ids.iter().any(|(n, _)| n == name);
            if let (false, Ok(value)) = (repeated, checked_value(v, AD_CLICK_ID_LEN_MAX)) {
                q.ad_click_ids.push((*name, value));
            }
        }
        // Other parameters are ignored (and not passed on).
    }
    Ok(q)
}

fn catalog_url_max() -> usize {
    clicktrail_actors::catalog::URL_LEN_MAX
}

fn checked_value(raw: &str, max: usize) -> Result<String, BadRequest> {
    if raw.len() > max * 3 {
        return Err(BadRequest::ParamTooLong);
    }
    let v = percent_decode(raw)?.into_owned();
    if v.len() > max {
        return Err(BadRequest::ParamTooLong);
    }
    if v.chars().any(char::is_control) {
        return Err(BadRequest::ControlCharacter);
    }
    Ok(v)
}

/// A trusted proxy network (`10.0.0.0/8`, `::1/128`, or a bare address): the one range
/// type, shared with the fraud engine's lists.
pub use clicktrail_actors::fraud::config::Cidr;

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in xff.rsplit(',').take(PARAMS_MAX) {
        match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break, // garbage: stop at the last good hop
        }
    }
    client
}

/// Zeroes the host part: IPv4 to /24, IPv6 to /48.
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into()),
    }
}

/// An IP address's text without `fmt` (which showed in the click profile): the same bytes
/// as `Display`, formatted into a stack buffer.
#[derive(Debug, Default)]
pub struct IpText {
    buf: [u8; 16],
    len: usize,
    long: String,
}

impl IpText {
    pub fn format(&mut self, ip: IpAddr) -> &str {
        match ip {
            IpAddr::V4(v4) => {
                self.len = 0;
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf[self.len] = b'.';
                        self.len += 1;
                    }
                    let mut d = itoa::Buffer::new();
                    let t = d.format(o).as_bytes();
                    self.buf[self.len..self.len + t.len()].copy_from_slice(t);
                    self.len += t.len();
                }
                std::str::from_utf8(&self.buf[..self.len]).expect("ASCII digits and dots")
            }
            IpAddr::V6(_) => {
                self.long = ip.to_string();
                &self.long
            }
        }
    }
}

/// The value of cookie `name` in a `Cookie` header, if present.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Cookie names we accept in configuration.
pub fn valid_cookie_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Cuts a header value to `HEADER_KEEP_MAX` bytes at a character boundary (borrowed
/// stays borrowed: most header values are kept as they are, straight from the request).
pub fn keep(s: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    if s.len() <= HEADER_KEEP_MAX {
        return s;
    }
    let mut end = HEADER_KEEP_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    match s {
        std::borrow::Cow::Borrowed(b) => std::borrow::Cow::Borrowed(&b[..end]),
        std::borrow::Cow::Owned(mut o) => {
            o.truncate(end);
            std::borrow::Cow::Owned(o)
        }
    }
}

/// The fingerprint HMAC key, derived from the click-id key.
pub fn fingerprint_key(click_id_key: &str) -> Hmac<Sha256> {
    let mut fp = Hmac::<Sha256>::new_from_slice(click_id_key.as_bytes()).expect("any key");
    fp.update(b"clicktrail fingerprint key v1");
    Hmac::new_from_slice(&fp.finalize().into_bytes()).expect("any key")
}

/// Keyed fingerprint of a browser: HMAC-SHA256 over the full IP, the user agent and
/// `Accept-Language` (what a merchant can also pass server-to-server), truncated to 64
/// bits. Keyed, so it cannot be recomputed from the stored fields. `ip` is the address's
/// text ([`IpText`]), which the click path formats once for this and the stored IP.
pub fn fingerprint(key: &Hmac<Sha256>, ip: &str, parts: &[&str]) -> u64 {
    let mut mac = key.clone();
    mac.update(ip.as_bytes());
    for p in parts {
        mac.update(b"\n");
        mac.update(p.as_bytes());
    }
    u64::from_be_bytes(mac.finalize().into_bytes()[..8].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        let mut t = IpText::default();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..10_000 {
            let v4 = IpAddr::V4(rng.u32(..).into());
            assert_eq!(t.format(v4), v4.to_string());
        }
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "::1",
            "2001:db8::8:800:200c:417a",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(t.format(ip), ip.to_string());
        }
    }

    #[test]
    fn parses_subs_deep_link_and_utm() {
        let q = parse_query("sub1=a%20b&sub3=c+d&url=https%3A%2F%2Fshop.example%2Fx&utm_source=news&other=1&utm_medium=mail").unwrap();
        assert_eq!(
            q.subs,
            [
                "a b".to_string(),
                "".into(),
                "c d".into(),
                "".into(),
                "".into()
            ]
        );
        assert_eq!(q.url.as_deref(), Some("https://shop.example/x"));
        assert_eq!(
            q.utm,
            vec![
                ("utm_source".into(), "news".into()),
                ("utm_medium".into(), "mail".into())
            ]
        );
        assert_eq!(parse_query("").unwrap(), TrackingQuery::default());
    }

    /// Ad click ids are read for the record, apart from the utm pairs that are passed on;
    /// a bad or repeated one is ignored, never a refusal.
    #[test]
    fn ad_click_ids_are_recorded_and_never_refuse_a_click() {
        let q =
            parse_query("gclid=Cj0K%2Dx&utm_source=g&fbclid=IwAR1&msclkid=m1&gclid=again").unwrap();
        assert_eq!(q.utm, vec![("utm_source".into(), "g".into())]);
        assert_eq!(
            q.ad_click_ids,
            vec![
                ("gclid", "Cj0K-x".to_string()),
                ("fbclid", "IwAR1".into()),
                ("msclkid", "m1".into())
            ]
        );
        let long = format!("fbclid={}", "y".repeat(AD_CLICK_ID_LEN_MAX + 1));
        for q in ["gclid=%zz", "gclid=a%0Ab", long.as_str()] {
            assert!(parse_query(q).unwrap().ad_click_ids.is_empty(), "{q}");
        }
    }

    #[test]
    fn refuses_bad_queries_with_a_cause() {
        let long = format!("sub1={}", "x".repeat(QUERY_LEN_MAX));
        let many = (0..70)
            .map(|i| format!("p{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        let cases = [
            (long.as_str(), BadRequest::QueryTooLong),
            (many.as_str(), BadRequest::TooManyParams),
            ("sub1=%zz", BadRequest::BadEncoding),
            ("sub1=%C3%28", BadRequest::BadEncoding),
            ("sub1=%", BadRequest::BadEncoding),
            ("sub1=a&sub1=b", BadRequest::RepeatedParam),
            ("url=a&url=b", BadRequest::RepeatedParam),
            ("sub1=a%0D%0ASet-Cookie:x", BadRequest::ControlCharacter),
            ("utm_source=a%0Ab", BadRequest::ControlCharacter),
        ];
        for (q, want) in cases {
            assert_eq!(parse_query(q), Err(want), "{}", &q[..q.len().min(40)]);
        }
        let sub = format!("sub2={}", "y".repeat(SUB_LEN_MAX + 1));
        assert_eq!(parse_query(&sub), Err(BadRequest::ParamTooLong));
    }

    #[test]
    fn client_ip_honours_only_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("1.2.3.4, 198.51.100.2"), &trusted),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("1.2.3.4, 10.2.2.2"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("garbage"), &trusted),
            ip("10.1.1.1")
        );
        assert_eq!(client_ip(ip("10.1.1.1"), None, &trusted), ip("10.1.1.1"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        // Several X-Forwarded-For lines arrive joined: the proxy's own line (last) counts.
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("6.6.6.6,198.51.100.2"), &trusted),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("::ffff:198.51.100.3"), &trusted),
            ip("198.51.100.3")
        );
    }

    #[test]
    fn truncation_cookies_and_keep() {
        assert_eq!(
            truncate_ip("203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0"
        );
        assert_eq!(
            truncate_ip("2001:db8:1:2:3:4:5:6".parse().unwrap()).to_string(),
            "2001:db8:1::"
        );
        assert_eq!(cookie("a=1; ct_vid=xyz; b=2", "ct_vid"), Some("xyz"));
        assert_eq!(cookie("a=1", "ct_vid"), None);
        assert_eq!(keep("é".repeat(400).into()).len(), HEADER_KEEP_MAX);
        assert_eq!(
            keep(("é".repeat(400) + "x").as_str().into()).len(),
            HEADER_KEEP_MAX
        );
        assert!(matches!(
            keep("short".into()),
            std::borrow::Cow::Borrowed("short")
        ));
    }
}
