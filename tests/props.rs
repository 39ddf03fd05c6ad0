//! Property tests of every parser that reads outside input: click ids, tracking queries and
//! headers, amounts and times, postback templates. Arbitrary input never panics; what
//! we write, we read back the same; an altered click id never verifies.
//!
//! The case count is bounded (`CASES`); proptest prints a failing case and the seed to
//! replay it (`PROPTEST_RNG_SEED`, failures are also kept in `proptest-regressions/`).

use clicktrail::convert::amount;

/// Request times as the API reads them (`clicktrail::time`), `None` when refused.
fn parse_time(v: &serde_json::Value) -> Option<i64> {
    clicktrail::http::time::parse(v).ok()
}
use clicktrail::edge::click_id::{self, ClickIdCodec, ClickIdParts, ENCODED_LEN};
use clicktrail::edge::request::{self, Cidr, TrackingQuery};
use clicktrail_storage::schema::{Currency, Money};
use proptest::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

const CASES: u32 = 256;
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

fn parts() -> impl Strategy<Value = ClickIdParts> {
    (
        any::<u16>(),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(node, shard, time_s, seq, link)| ClickIdParts {
            node,
            shard,
            time_s,
            seq,
            link,
        })
}

/// Text that exercises the parsers: any Unicode, weighted towards the bytes that matter
/// to them (`%`, `+`, `&`, `=`, `;`, `,`, `{`, `}`, digits, controls).
fn nasty() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '%', '+', '&', '=', ';', ',', '{', '}', '.', '-', ':', '/', ' ', '\r', '\n', '\0', '0',
        '9', 'a', 'F', 'é', '\u{7f}', '\u{feff}',
    ]);
    prop::collection::vec(prop_oneof![3 => special, 1 => any::<char>()], 0..64)
        .prop_map(|cs| cs.into_iter().collect())
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A parameter value the tracking query keeps: printable, within `max` bytes.
fn value(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        any::<char>().prop_filter("printable", |c| !c.is_control()),
        0..40,
    )
    .prop_map(move |cs| {
        let mut s: String = cs.into_iter().collect();
        while s.len() > max {
            s.pop();
        }
        s
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn click_ids_round_trip(p in parts()) {
        let codec = ClickIdCodec::new(KEY);
        let id = codec.encode(&p);
        prop_assert_eq!(id.len(), ENCODED_LEN);
        prop_assert_eq!(codec.decode(&id), Ok(p));
    }

    #[test]
    fn any_single_character_change_fails_verification(
        p in parts(),
        at in 0..ENCODED_LEN,
        to in any::<char>(),
    ) {
        let codec = ClickIdCodec::new(KEY);
        let id = codec.encode(&p);
        let mut changed: Vec<char> = id.chars().collect();
        prop_assume!(changed[at] != to);
        changed[at] = to;
        let changed: String = changed.into_iter().collect();
        prop_assert!(codec.decode(&changed).is_err(), "{} verified", changed);
    }

    #[test]
    fn a_change_within_the_alphabet_fails_verification(
        p in parts(),
        at in 0..ENCODED_LEN,
        to in prop::sample::select(ALPHABET.to_vec()),
    ) {
        let codec = ClickIdCodec::new(KEY);
        let mut id = codec.encode(&p).into_bytes();
        prop_assume!(id[at] != to);
        id[at] = to;
        prop_assert!(codec.decode(std::str::from_utf8(&id).unwrap()).is_err());
    }

    #[test]
    fn arbitrary_click_ids_never_panic(s in nasty(), raw in prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), ENCODED_LEN)) {
        let codec = ClickIdCodec::new(KEY);
        let _ = codec.decode(&s);
        // Well-formed but random: the MAC refuses it (2^-64 to pass by chance).
        prop_assert!(codec.decode(std::str::from_utf8(&raw).unwrap()).is_err());
        let _ = click_id::base64url_decode::<24>(&s);
    }

    #[test]
    fn queries_never_panic_and_what_they_keep_is_bounded(q in nasty()) {
        if let Ok(t) = request::parse_query(&q) {
            prop_assert!(t.subs.iter().all(|s| s.len() <= request::SUB_LEN_MAX));
            prop_assert!(t.utm.len() <= request::UTM_MAX);
            let all = t.subs.iter().chain(t.url.iter()).chain(t.utm.iter().flat_map(|(k, v)| [k, v]));
            for v in all {
                prop_assert!(!v.chars().any(char::is_control), "{:?}", v);
            }
        }
        let _ = request::percent_decode(&q);
    }

    #[test]
    fn queries_round_trip(
        subs in prop::collection::vec(value(request::SUB_LEN_MAX), 5),
        utm in prop::collection::btree_map("[a-z]{1,10}", value(request::UTM_LEN_MAX), 0..=request::UTM_MAX),
        url in proptest::option::of(value(200)),
        noise in prop::collection::vec(("x[a-z]{0,5}", value(20)), 0..5),
    ) {
        let mut pairs: Vec<String> = Vec::new();
        for (i, s) in subs.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            pairs.push(format!("sub{}={}", i + 1, encode(s)));
        }
        let utm: Vec<(String, String)> =
            utm.into_iter().map(|(k, v)| (format!("utm_{k}"), v)).collect();
        for (k, v) in &utm {
            pairs.push(format!("{}={}", encode(k), encode(v)));
        }
        if let Some(u) = &url {
            pairs.push(format!("url={}", encode(u)));
        }
        for (k, v) in &noise {
            pairs.push(format!("{k}={}", encode(v))); // ignored parameters
        }
        let q = pairs.join("&");
        prop_assume!(q.len() <= request::QUERY_LEN_MAX);
        let want = TrackingQuery {
            subs: [0, 1, 2, 3, 4].map(|i| subs[i].clone()),
            url,
            utm,
            ad_click_ids: Vec::new(), // the noise never names an ad click id
        };
        prop_assert_eq!(request::parse_query(&q), Ok(want));
    }

    #[test]
    fn percent_decoding_inverts_form_encoding(s in any::<String>()) {
        let encoded = encode(&s);
        prop_assert_eq!(request::percent_decode(&encoded).unwrap(), Cow::Borrowed(s.as_str()));
    }

    #[test]
    fn forwarded_for_never_panics_and_names_the_peer_or_a_hop(
        xff in nasty(),
        hops in prop::collection::vec(any::<IpAddr>(), 0..6),
        peer in any::<IpAddr>(),
        trusted_peer in any::<bool>(),
    ) {
        let trusted: Vec<Cidr> = if trusted_peer { vec![peer.to_string().parse().unwrap()] } else { vec![] };
        let _ = request::client_ip(peer, Some(&xff), &trusted);
        let joined = hops.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
        let ip = request::client_ip(peer, Some(&joined), &trusted);
        prop_assert!(ip == peer || hops.iter().any(|h| h.to_canonical() == ip));
        if !trusted_peer {
            prop_assert_eq!(ip, peer);
        } else if let Some(last) = hops.last() {
            // The right-most hop is the one the trusted proxy saw (unless it is the proxy).
            prop_assert!(ip == last.to_canonical() || last.to_canonical() == peer);
        }
    }

    #[test]
    fn cidrs_never_panic_and_contain_their_address(s in nasty(), ip in any::<IpAddr>(), prefix in 0u8..=128) {
        let _ = s.parse::<Cidr>();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let c: Result<Cidr, _> = format!("{ip}/{prefix}").parse();
        prop_assert_eq!(c.is_ok(), prefix <= max);
        if let Ok(c) = c {
            prop_assert!(c.contains(ip));
        }
    }

    #[test]
    fn cookies_are_found_by_name(
        before in prop::collection::vec(("[a-z]{1,8}", "[A-Za-z0-9_-]{0,12}"), 0..4),
        v in "[A-Za-z0-9_=-]{0,40}",
        header in nasty(),
    ) {
        let _ = request::cookie(&header, "ct_vid");
        prop_assume!(before.iter().all(|(k, _)| k != "ct_vid"));
        let mut parts: Vec<String> = before.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("ct_vid={v}"));
        let header = parts.join("; ");
        prop_assert_eq!(request::cookie(&header, "ct_vid"), Some(v.as_str()));
    }

    #[test]
    fn kept_header_values_are_bounded_prefixes(s in any::<String>(), pad in 0usize..1200) {
        let long = format!("{}{s}", "é".repeat(pad / 2));
        let kept = request::keep(Cow::Borrowed(&long));
        prop_assert!(kept.len() <= request::HEADER_KEEP_MAX);
        prop_assert!(long.starts_with(&*kept));
        prop_assert!(long.len() <= request::HEADER_KEEP_MAX || kept.len() + 4 > request::HEADER_KEEP_MAX);
    }

    #[test]
    fn amounts_never_panic(a in nasty(), c in prop_oneof![Just("EUR".to_string()), Just("JPY".to_string()), Just("BHD".to_string()), nasty()]) {
        if let Ok(m) = amount::parse(&a, &c) {
            prop_assert!(m.amount_minor >= 0);
        }
    }

    #[test]
    fn amounts_round_trip_in_every_exponent(
        share in 0i64..=1_000_000_000_000,
        code in prop::sample::select(vec!["JPY", "KRW", "CLP", "EUR", "USD", "GBP", "BHD", "KWD", "TND"]),
        extra_zeros in 0usize..3,
    ) {
        // Anything up to the largest amount accepted in the currency (one billion units).
        let max = amount::AMOUNT_MAJOR_MAX * 10i64.pow(amount::exponent(code).unwrap());
        let minor = share % (max + 1);
        let m = Money { amount_minor: minor, currency: Currency::parse(code).unwrap() };
        let text = amount::format(&m);
        prop_assert_eq!(amount::parse(&text, code), Ok(m));
        // Leading zeros are the same amount.
        prop_assert_eq!(amount::parse(&format!("{}{text}", "0".repeat(extra_zeros)), code), Ok(m));
        // One decimal more than the currency has is refused, never rounded.
        let exp = amount::exponent(code).unwrap();
        let more = if exp == 0 { format!("{text}.5") } else { format!("{text}5") };
        prop_assert!(amount::parse(&more, code).is_err());
        // One minor unit past the largest is refused.
        let over = Money { amount_minor: max + 1, currency: m.currency };
        prop_assert!(amount::parse(&amount::format(&over), code).is_err());
    }

    #[test]
    fn times_never_panic(s in nasty(), n in any::<i64>(), f in any::<f64>()) {
        let _ = parse_time(&serde_json::Value::String(s));
        let _ = parse_time(&serde_json::json!(n));
        let _ = parse_time(&serde_json::json!(f));
    }

    #[test]
    fn rfc3339_times_round_trip(
        secs in 1_500_000_000i64..2_000_000_000,
        micros in 0i64..1_000_000,
        offset_min in -(23 * 60 + 59)..=(23 * 60 + 59i64),
    ) {
        let text = rfc3339(secs, micros, offset_min);
        prop_assert_eq!(parse_time(&serde_json::Value::String(text.clone())), Some(secs * 1_000_000 + micros), "{}", text);
        prop_assert_eq!(parse_time(&serde_json::json!(secs)), Some(secs * 1_000_000));
    }

    #[test]
    fn postback_templates_never_panic_and_fill_known_macros(
        template in nasty(),
        v in any::<String>(),
        prefix in "[a-z/?=&]{0,10}",
    ) {
        let values: BTreeMap<&str, String> = [("click_id", v.clone()), ("amount", "1.00".into())].into();
        let _ = clicktrail_actors::postback::render(&template, &values, true);
        let _ = clicktrail_actors::postback::render(&template, &values, false);
        let t = format!("{prefix}{{click_id}}{{unknown}}");
        prop_assert_eq!(
            clicktrail_actors::postback::render(&t, &values, false),
            format!("{prefix}{v}{{unknown}}")
        );
        prop_assert_eq!(
            clicktrail_actors::postback::render(&t, &values, true),
            format!("{prefix}{}{{unknown}}", encode(&v))
        );
        // Without a macro, a template is its own rendering.
        let plain: String = template.chars().filter(|c| *c != '{').collect();
        prop_assert_eq!(clicktrail_actors::postback::render(&plain, &values, true), plain);
    }
}

/// `secs` (UTC) + `micros` as RFC 3339 in the zone `offset_min` minutes east of UTC.
fn rfc3339(secs: i64, micros: i64, offset_min: i64) -> String {
    let local = secs + offset_min * 60;
    let (days, rem) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // Civil date from days (Howard Hinnant's algorithm), independent of the parser's.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let sign = if offset_min < 0 { '-' } else { '+' };
    let off = offset_min.abs();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}{sign}{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        off / 60,
        off % 60
    )
}
