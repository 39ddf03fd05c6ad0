//! What the rules read off a click: the address and its /24 or /48, the browser a user
//! agent claims, the referrer's host, the client hints, the ad click ids. Pure functions.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// A stable 64-bit key of a string (the sliding windows keep keys, not strings). The same
/// value on every start, so a replay counts the same.
pub fn key(parts: &[&str]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// The address of a recorded click, if it parses.
pub fn ip(s: &str) -> Option<IpAddr> {
    s.trim().parse().ok()
}

/// The network a click-farm would share: the /24 of an IPv4 address, the /48 of an IPv6
/// one, written as a range.
pub fn subnet(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// The key of an address's /24 (IPv4) or /48 (IPv6), without formatting it.
pub fn subnet_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => 0x2400_0000_0000_0000 | u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => {
            let bits = (u128::from(v6) >> 80) as u64;
            bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
        }
    }
}

/// The browser family a user agent claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Chrome, Edge, Opera, Samsung Internet...: sends client hints and Sec-Fetch-*.
    Chromium {
        major: u32,
    },
    Firefox,
    Safari,
    /// Starts with `Mozilla/` but none of the above.
    OtherBrowser,
    /// Not a browser at all.
    NotBrowser,
}

/// Reads the family from a user agent.
pub fn family(ua: &str) -> Family {
    if !ua.starts_with("Mozilla/") {
        return Family::NotBrowser;
    }
    // Chrome, Edge and Firefox on iOS are WebKit underneath: no client hints, and no
    // Sec-Fetch-* before iOS 16.4.
    if ua.contains("CriOS/") || ua.contains("EdgiOS/") || ua.contains("FxiOS/") {
        return Family::OtherBrowser;
    }
    if let Some(v) = version_after(ua, "Chrome/") {
        return Family::Chromium { major: v };
    }
    if ua.contains("Firefox/") || ua.contains("FxiOS/") {
        return Family::Firefox;
    }
    if ua.contains("Safari/") && ua.contains("Version/") {
        return Family::Safari;
    }
    Family::OtherBrowser
}

fn version_after(ua: &str, marker: &str) -> Option<u32> {
    let rest = &ua[ua.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// What the rules read of a user agent (the scorer caches it per distinct user agent:
/// a few hundred of them carry all the traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UaFacts {
    pub family: Family,
    /// Empty or blank.
    pub empty: bool,
    /// The first bot marker it contains (index into the configured list).
    pub bot_marker: Option<usize>,
    pub platform: Option<&'static str>,
    pub mobile: bool,
}

/// Reads a user agent once for every rule.
pub fn ua_facts(ua: &str, bot_markers: &[String]) -> UaFacts {
    let lower = ua.to_ascii_lowercase();
    UaFacts {
        family: family(ua),
        empty: ua.trim().is_empty(),
        bot_marker: bot_markers.iter().position(|m| lower.contains(m.as_str())),
        platform: platform(ua),
        mobile: mobile(ua),
    }
}

/// The platform a user agent names, in the words of `Sec-CH-UA-Platform`.
pub fn platform(ua: &str) -> Option<&'static str> {
    if ua.contains("Android") {
        Some("Android")
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        Some("iOS")
    } else if ua.contains("Windows") {
        Some("Windows")
    } else if ua.contains("Macintosh") || ua.contains("Mac OS X") {
        Some("macOS")
    } else if ua.contains("CrOS") {
        Some("Chrome OS")
    } else if ua.contains("Linux") || ua.contains("X11") {
        Some("Linux")
    } else {
        None
    }
}

/// Whether a user agent says it is a phone.
pub fn mobile(ua: &str) -> bool {
    ua.contains("Mobile") || ua.contains("iPhone")
}

/// The lower-case host of a URL (`None` when it has none or does not parse).
pub fn host(url: &str) -> Option<String> {
    let u = url::Url::parse(url.trim()).ok()?;
    u.host_str()
        .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
}

/// The host of a registered site, written as a host (`blog.example`), a URL
/// (`https://blog.example/reviews`) or a host and path (`instagram.com/handle`).
pub fn site_host(site: &str) -> Option<String> {
    let s = site.trim();
    let host = if s.contains("://") {
        host(s)?
    } else {
        let h = s.split(['/', '?', '#']).next().unwrap_or("");
        let h = h.rsplit('@').next().unwrap_or(h);
        let h = h.split(':').next().unwrap_or(h);
        h.trim_start_matches("www.").to_ascii_lowercase()
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then_some(host)
}

/// Whether `host` is `site`'s host or one of its subdomains (or its link shim: `t.co`
/// for `x.com`).
pub fn on_site(host: &str, site: &str) -> bool {
    site_host(site).is_some_and(|site| on_host(host, &site))
}

/// [`on_site`] for a site already written as its host ([`site_host`]): no allocation.
pub fn on_host(host: &str, site: &str) -> bool {
    host == site
        || host
            .strip_suffix(site)
            .is_some_and(|sub| sub.ends_with('.'))
        || SHIMS.iter().any(|(shim, of)| host == *shim && site == *of)
}

/// Whether a referrer host is a search engine's results page (entries from config: a
/// host, or a name ending in `.` for any country domain: `google.` is `google.com`,
/// `google.co.uk`, never `mail.google.com`).
pub fn search_engine(host: &str, engines: &[String]) -> Option<String> {
    engines
        .iter()
        .find(|e| {
            let e = e.as_str();
            if e.ends_with('.') {
                host.strip_prefix(e).is_some_and(|tld| {
                    !tld.is_empty() && tld.split('.').all(|p| (2..=3).contains(&p.len()))
                })
            } else {
                host == e
            }
        })
        .cloned()
}

/// Link shims: the host a platform's links come through, for the platform's own host.
const SHIMS: [(&str, &str); 3] = [
    ("t.co", "x.com"),
    ("t.co", "twitter.com"),
    ("lnkd.in", "linkedin.com"),
];

/// The value of a client hint (quotes removed), by lower-case name.
pub fn hint<'a>(
    hints: impl IntoIterator<Item = (&'a str, &'a str)>,
    name: &str,
) -> Option<&'a str> {
    hints
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// Ad click ids of search ads (their presence means the visitor clicked a search ad).
pub const SEARCH_AD_IDS: [&str; 4] = ["gclid", "msclkid", "gbraid", "wbraid"];
/// Ad click id of a social network's link (also added to organic shares: weak).
pub const SOCIAL_AD_IDS: [&str; 2] = ["fbclid", "ttclid"];

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

    #[test]
    fn user_agents_read_as_families_and_platforms() {
        assert_eq!(family(CHROME), Family::Chromium { major: 131 });
        let crios = "Mozilla/5.0 (iPhone; CPU iPhone OS 16_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/107.0.5304.101 Mobile/15E148 Safari/604.1";
        assert_eq!(family(crios), Family::OtherBrowser, "WebKit underneath");
        assert_eq!(family(IPHONE), Family::Safari);
        assert_eq!(family(FIREFOX), Family::Firefox);
        assert_eq!(family("curl/8.5"), Family::NotBrowser);
        assert_eq!(platform(CHROME), Some("Windows"));
        assert_eq!(platform(IPHONE), Some("iOS"));
        assert_eq!(platform(FIREFOX), Some("Linux"));
        assert!(mobile(IPHONE) && !mobile(CHROME));
    }

    #[test]
    fn subnets_hosts_and_search_engines() {
        assert_eq!(subnet(ip("203.0.113.77").unwrap()), "203.0.113.0/24");
        assert_eq!(subnet(ip("2001:db8:5:6::1").unwrap()), "2001:db8:5::/48");
        assert_eq!(
            host("https://www.News.example/a?b").as_deref(),
            Some("news.example")
        );
        assert_eq!(host("not a url"), None);
        assert!(on_site("blog.news.example", "news.example"));
        assert!(on_site(
            "news.example",
            "https://www.News.example/reviews?x=1"
        ));
        assert!(on_site("instagram.com", "instagram.com/handle"));
        assert_eq!(site_host("not a host"), None);
        assert!(!on_site("badnews.example", "news.example"));
        let engines: Vec<String> = ["google.", "bing.com"].map(String::from).to_vec();
        assert!(search_engine("google.co.uk", &engines).is_some());
        assert!(search_engine("google.com", &engines).is_some());
        assert!(search_engine("bing.com", &engines).is_some());
        assert!(
            search_engine("mail.google.com", &engines).is_none(),
            "Gmail is no search"
        );
        assert!(search_engine("com.google.android.gm", &engines).is_none());
        assert!(search_engine("googleblog.example", &engines).is_none());
        assert!(on_site("t.co", "x.com") && !on_site("t.co", "news.example"));
        assert_eq!(
            hint(
                [("Sec-CH-UA-Platform", "\"Windows\"")],
                "sec-ch-ua-platform"
            ),
            Some("Windows")
        );
        assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
        assert_ne!(key(&["ab"]), key(&["a", "b"]));
    }
}
