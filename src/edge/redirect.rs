//! Where a click is sent: the campaign destination, or a deep link on the campaign's
//! allow-list, with the click id and utm parameters merged into its query.
//!
//! Deep-link policy: a `url=` that is not an absolute http(s) URL without credentials whose
//! host is on the campaign's allow-list is ignored and the click goes to the campaign's
//! default destination (counted as `deep_links_refused_total`). It is never followed, so
//! there is no open redirect.

use clicktrail_actors::catalog::{parse_web_url, CampaignRt};
use url::Url;

/// The deep link if it is allowed for the campaign, else `None`.
pub fn allowed_deep_link(campaign: &CampaignRt, raw: &str) -> Option<Url> {
    let u = parse_web_url(raw).ok()?;
    let host = u.host_str()?;
    campaign.allows_host(host).then_some(u)
}

/// `base` with `params` set in its query: existing parameters of the same names are
/// replaced, every other byte of the existing query is kept as it was, the fragment stays.
/// Built as a string in one pass (no re-parse of the URL).
pub fn with_params(base: &Url, params: &[(&str, &str)]) -> String {
    let head = &base[..url::Position::AfterPath];
    let mut out = String::with_capacity(base.as_str().len() + 64);
    out.push_str(head);
    let mut sep = '?';
    if let Some(q) = base.query() {
        for seg in q.split('&').filter(|s| !s.is_empty()) {
            let raw_key = seg.split_once('=').map_or(seg, |(k, _)| k);
            let replaced = params.iter().any(|(n, _)| {
                if raw_key.contains(['%', '+']) {
                    crate::edge::request::percent_decode(raw_key).is_ok_and(|k| k == *n)
                } else {
                    raw_key == *n
                }
            });
            if !replaced {
                out.push(sep);
                out.push_str(seg);
                sep = '&';
            }
        }
    }
    for (n, v) in params {
        out.push(sep);
        push_encoded(&mut out, n);
        out.push('=');
        push_encoded(&mut out, v);
        sep = '&';
    }
    if let Some(f) = base.fragment() {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `s` form-urlencoded onto `out`; the common case (a click id, plain utm values) has
/// nothing to encode and is copied as is.
fn push_encoded(out: &mut String, s: &str) {
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'));
    if plain {
        out.push_str(s);
    } else {
        out.extend(url::form_urlencoded::byte_serialize(s.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clicktrail_actors::catalog::{Campaign, Status};

    fn campaign() -> CampaignRt {
        let c = Campaign {
            id: "c".into(),
            merchant_id: "m".into(),
            name: "C".into(),
            destination_url: "https://shop.example/landing".into(),
            deep_link_hosts: vec!["shop.example".into()],
            cookie_window_days: 30,
            click_id_param: "click_id".into(),
            status: Status::Active,
            fallback_url: None,
            ..Campaign::defaults()
        };
        CampaignRt {
            destination: Url::parse(&c.destination_url).unwrap(),
            fallback: None,
            campaign: c,
        }
    }

    #[test]
    fn merges_into_existing_query_and_keeps_fragment() {
        let base = Url::parse("https://shop.example/p?a=1&b=x%20y&click_id=old&utm_source=old#top")
            .unwrap();
        let u = with_params(
            &base,
            &[("utm_source", "news letter"), ("click_id", "ABC-_")],
        );
        assert_eq!(
            u.as_str(),
            "https://shop.example/p?a=1&b=x%20y&utm_source=news+letter&click_id=ABC-_#top"
        );
        let bare = Url::parse("https://shop.example/landing").unwrap();
        assert_eq!(
            with_params(&bare, &[("click_id", "Z")]).as_str(),
            "https://shop.example/landing?click_id=Z"
        );
    }

    #[test]
    fn header_injection_is_impossible() {
        let base = Url::parse("https://shop.example/").unwrap();
        let u = with_params(&base, &[("utm_x", "a\r\nSet-Cookie: evil=1")]);
        assert!(!u.contains('\r') && !u.contains('\n'));
    }

    #[test]
    fn only_allow_listed_web_deep_links() {
        let c = campaign();
        assert!(allowed_deep_link(&c, "https://shop.example/item/9?x=1").is_some());
        assert!(
            allowed_deep_link(&c, "https://SHOP.example/").is_some(),
            "hosts compare lower case"
        );
        for bad in [
            "https://evil.example/",
            "https://shop.example.evil.com/",
            "https://shop.example@evil.com/",
            "javascript:alert(1)",
            "data:text/html,<script>",
            "//evil.example/",
            "https://user:pw@shop.example/",
            "ftp://shop.example/",
        ] {
            assert!(allowed_deep_link(&c, bad).is_none(), "{bad}");
        }
    }
}
