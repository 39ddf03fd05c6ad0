//! Rules a click decides alone: bots and non-browsers, data-centre and blocked ranges,
//! impossible client hints, hidden (non-navigation) clicks, the referrer against the
//! affiliate's sites, brand bidding, and the affiliate's own addresses.

use super::{Hit, Rules};
use crate::fraud::config::{Cidr, PPM};
use crate::fraud::signals::{self, Family};
use std::net::IpAddr;

/// What the rules read of a click.
#[derive(Debug, Clone, Default)]
pub struct ClickFacts<'a> {
    pub user_agent: &'a str,
    /// The user agent read already (else read here).
    pub ua: Option<signals::UaFacts>,
    pub ip: Option<IpAddr>,
    pub referrer: &'a str,
    /// The referrer's host read already (else read here).
    pub referrer_host: Option<&'a str>,
    pub accept_language: &'a str,
    pub sec_fetch_dest: &'a str,
    pub sec_fetch_site: &'a str,
    /// Client hints (`sec-ch-ua*`), as recorded.
    pub hints: Vec<(&'a str, &'a str)>,
    /// Tracking parameters recorded with the click (`utm_*`, ad click ids).
    pub params: Vec<(&'a str, &'a str)>,
}

/// What the rules read of the click's affiliate and campaign.
#[derive(Debug, Clone, Default)]
pub struct PartnerFacts<'a> {
    /// The hosts of the affiliate's registered sites (as `signals::site_host` writes them).
    pub sites: &'a [String],
    pub own_ranges: &'a [Cidr],
    pub paid_search: bool,
}

/// Every hit of the rules in this file.
pub fn hits(r: &Rules<'_>, c: &ClickFacts<'_>, p: &PartnerFacts<'_>) -> Vec<Hit> {
    let ua =
        c.ua.unwrap_or_else(|| signals::ua_facts(c.user_agent, &r.config.bot_markers));
    let mut out = Vec::new();
    out.extend(bot(r, &ua));
    out.extend(missing_headers(r, c, &ua));
    out.extend(ranges(r, c));
    out.extend(client_hints(r, c, &ua));
    out.extend(hidden(r, c));
    out.extend(referrer(r, c, p));
    out.extend(brand_bidding(r, c, p));
    out.extend(own_address(r, c, p));
    out
}

fn bot(r: &Rules<'_>, ua: &signals::UaFacts) -> Option<Hit> {
    if ua.empty {
        return r.hit("bot-user-agent", PPM, "no user agent".into());
    }
    let m = &r.config.bot_markers[ua.bot_marker?];
    r.hit(
        "bot-user-agent",
        PPM,
        format!(
            "user agent names an automated client ({})",
            m.trim_end_matches('/')
        ),
    )
}

/// Chromium sends Sec-Fetch-* on navigations since version 80.
const SEC_FETCH_CHROMIUM_MIN: u32 = 80;

fn missing_headers(r: &Rules<'_>, c: &ClickFacts<'_>, ua: &signals::UaFacts) -> Option<Hit> {
    let family = ua.family;
    if family == Family::NotBrowser {
        return None;
    }
    let mut missing = Vec::new();
    if c.accept_language.trim().is_empty() {
        missing.push("Accept-Language");
    }
    let chromium = matches!(family, Family::Chromium { major } if major >= SEC_FETCH_CHROMIUM_MIN);
    if chromium && c.sec_fetch_dest.is_empty() && c.sec_fetch_site.is_empty() {
        missing.push("Sec-Fetch-*");
    }
    // Both missing from a modern Chromium: no browser does that. One: half the score.
    let share = match missing.len() {
        0 => return None,
        1 => PPM / 2,
        _ => PPM,
    };
    r.hit(
        "missing-browser-headers",
        share,
        format!("a browser user agent without {}", missing.join(" or ")),
    )
}

fn ranges(r: &Rules<'_>, c: &ClickFacts<'_>) -> Vec<Hit> {
    let Some(ip) = c.ip else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if r.config.blocked_ranges.iter().any(|n| n.contains(ip)) {
        out.extend(r.hit("blocked-ip", PPM, format!("{ip} is in a blocked range")));
    }
    if r.config.datacenter_ranges.iter().any(|n| n.contains(ip)) {
        out.extend(r.hit(
            "datacenter-ip",
            PPM,
            format!("{ip} is a data-centre address"),
        ));
    }
    out
}

fn client_hints(r: &Rules<'_>, c: &ClickFacts<'_>, ua: &signals::UaFacts) -> Option<Hit> {
    if c.hints.is_empty() {
        return None;
    }
    let family = ua.family;
    let why = if matches!(family, Family::Firefox | Family::Safari) {
        Some(format!(
            "client hints from a browser that sends none ({family:?})"
        ))
    } else if let (Some(said), Some(ua)) = (
        signals::hint(c.hints.iter().copied(), "sec-ch-ua-platform"),
        ua.platform,
    ) {
        (!said.is_empty() && !said.eq_ignore_ascii_case(ua))
            .then(|| format!("client hints say {said}, the user agent says {ua}"))
    } else {
        None
    };
    let why = why.or_else(|| {
        let said = signals::hint(c.hints.iter().copied(), "sec-ch-ua-mobile")?;
        let ua = signals::mobile(c.user_agent);
        ((said == "?1" && !ua) || (said == "?0" && ua))
            .then(|| format!("client hints say mobile {said}, the user agent says mobile {ua}"))
    })?;
    r.hit("impossible-client-hints", PPM, why)
}

fn hidden(r: &Rules<'_>, c: &ClickFacts<'_>) -> Option<Hit> {
    let dest = c.sec_fetch_dest.trim();
    if dest.is_empty() || dest.eq_ignore_ascii_case("document") {
        return None;
    }
    r.hit(
        "hidden-click",
        PPM,
        format!("Sec-Fetch-Dest is {dest:?}, not a page the visitor opened"),
    )
}

/// The referrer's host, read once by the caller or here ("" when none).
fn referrer_host<'a>(c: &ClickFacts<'a>) -> std::borrow::Cow<'a, str> {
    match c.referrer_host {
        Some(h) => std::borrow::Cow::Borrowed(h),
        None => std::borrow::Cow::Owned(signals::host(c.referrer).unwrap_or_default()),
    }
}

/// Share of the score a missing referrer gets (email and apps send none).
const NO_REFERRER_SHARE_PPM: u32 = 300_000;

fn referrer(r: &Rules<'_>, c: &ClickFacts<'_>, p: &PartnerFacts<'_>) -> Option<Hit> {
    if p.sites.is_empty() {
        return None;
    }
    if c.referrer.trim().is_empty() {
        return r.hit(
            "foreign-referrer",
            NO_REFERRER_SHARE_PPM,
            "no referrer, the affiliate registered sites".into(),
        );
    }
    let host = referrer_host(c);
    if p.sites.iter().any(|s| signals::on_host(&host, s)) {
        return None;
    }
    r.hit(
        "foreign-referrer",
        PPM,
        format!("referrer {host:?} is not one of the affiliate's sites"),
    )
}

fn brand_bidding(r: &Rules<'_>, c: &ClickFacts<'_>, p: &PartnerFacts<'_>) -> Option<Hit> {
    if p.paid_search {
        return None;
    }
    let param = |names: &[&str]| {
        c.params
            .iter()
            .find(|(n, v)| !v.is_empty() && names.iter().any(|x| n.eq_ignore_ascii_case(x)))
            .map(|(n, _)| n.to_string())
    };
    if let Some(id) = param(&signals::SEARCH_AD_IDS) {
        return r.hit(
            "brand-bidding",
            PPM,
            format!("a search-ad click ({id}) on a campaign without paid search"),
        );
    }
    let host = referrer_host(c);
    if let Some(engine) = signals::search_engine(&host, &r.config.search_engines) {
        return r.hit(
            "brand-bidding",
            PPM,
            format!(
                "came straight from a search engine ({engine}) on a campaign without paid search"
            ),
        );
    }
    let id = param(&signals::SOCIAL_AD_IDS)?;
    r.hit(
        "brand-bidding",
        PPM / 6,
        format!("a social ad click id ({id}) on a campaign without paid search"),
    )
}

fn own_address(r: &Rules<'_>, c: &ClickFacts<'_>, p: &PartnerFacts<'_>) -> Option<Hit> {
    let ip = c.ip?;
    p.own_ranges.iter().any(|n| n.contains(ip)).then_some(())?;
    r.hit(
        "self-referral-device",
        PPM,
        format!("the click came from the affiliate's own address {ip}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::config::{parse_ranges, FraudConfig};

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

    fn browser() -> ClickFacts<'static> {
        ClickFacts {
            user_agent: CHROME,
            ua: None,
            ip: "192.0.2.10".parse().ok(),
            referrer: "https://news.example/review",
            referrer_host: None,
            accept_language: "en-GB,en;q=0.9",
            sec_fetch_dest: "document",
            sec_fetch_site: "cross-site",
            hints: vec![
                ("sec-ch-ua-platform", "\"Windows\""),
                ("sec-ch-ua-mobile", "?0"),
            ],
            params: vec![],
        }
    }

    fn rules_of(c: &ClickFacts<'_>, p: &PartnerFacts<'_>, cfg: &FraudConfig) -> Vec<&'static str> {
        hits(
            &Rules {
                config: cfg,
                campaign: None,
                resolved: None,
            },
            c,
            p,
        )
        .iter()
        .map(|h| h.rule)
        .collect()
    }

    #[test]
    fn a_plain_browser_click_hits_nothing() {
        let cfg = FraudConfig::default();
        let sites = vec!["news.example".to_string()];
        let p = PartnerFacts {
            sites: &sites,
            own_ranges: &[],
            paid_search: false,
        };
        assert!(rules_of(&browser(), &p, &cfg).is_empty());
    }

    #[test]
    fn bots_headers_and_ranges() {
        let mut cfg = FraudConfig::default();
        let p = PartnerFacts {
            paid_search: true,
            ..Default::default()
        };
        let c = ClickFacts {
            user_agent: "python-requests/2.31",
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["bot-user-agent"]);
        let c = ClickFacts {
            user_agent: " ",
            hints: vec![],
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["bot-user-agent"]);
        let c = ClickFacts {
            accept_language: "",
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["missing-browser-headers"]);
        // Chromium 79 sent no Sec-Fetch-*; 80 does.
        let old = CHROME.replace("Chrome/131", "Chrome/79");
        let c = ClickFacts {
            user_agent: &old,
            sec_fetch_dest: "",
            sec_fetch_site: "",
            ..browser()
        };
        assert!(rules_of(&c, &p, &cfg).is_empty());
        let new = CHROME.replace("Chrome/131", "Chrome/80");
        let c = ClickFacts {
            user_agent: &new,
            sec_fetch_dest: "",
            sec_fetch_site: "",
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["missing-browser-headers"]);
        cfg.datacenter_ranges = parse_ranges(["192.0.2.0/24"]).unwrap();
        cfg.blocked_ranges = parse_ranges(["192.0.2.10"]).unwrap();
        assert_eq!(
            rules_of(&browser(), &p, &cfg),
            ["blocked-ip", "datacenter-ip"]
        );
        let c = ClickFacts {
            ip: "192.0.3.1".parse().ok(),
            ..browser()
        };
        assert!(rules_of(&c, &p, &cfg).is_empty());
    }

    #[test]
    fn impossible_hints_and_hidden_clicks() {
        let cfg = FraudConfig::default();
        let p = PartnerFacts {
            paid_search: true,
            ..Default::default()
        };
        let c = ClickFacts {
            hints: vec![("sec-ch-ua-platform", "\"macOS\"")],
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["impossible-client-hints"]);
        let c = ClickFacts {
            hints: vec![("sec-ch-ua-mobile", "?1")],
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["impossible-client-hints"]);
        let c = ClickFacts {
            user_agent: SAFARI,
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["impossible-client-hints"]);
        let c = ClickFacts {
            user_agent: SAFARI,
            hints: vec![],
            sec_fetch_dest: "",
            sec_fetch_site: "",
            ..browser()
        };
        assert!(
            rules_of(&c, &p, &cfg).is_empty(),
            "Safari without hints is normal"
        );
        for dest in ["iframe", "image", "empty"] {
            let c = ClickFacts {
                sec_fetch_dest: dest,
                ..browser()
            };
            assert_eq!(rules_of(&c, &p, &cfg), ["hidden-click"], "{dest}");
        }
    }

    #[test]
    fn referrers_brand_bidding_and_own_addresses() {
        let cfg = FraudConfig::default();
        let sites = vec!["news.example".to_string()];
        let own = parse_ranges(["198.51.100.0/24"]).unwrap();
        let p = PartnerFacts {
            sites: &sites,
            own_ranges: &own,
            paid_search: false,
        };
        let r = Rules {
            config: &cfg,
            campaign: None,
            resolved: None,
        };
        let c = ClickFacts {
            referrer: "https://elsewhere.example/",
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["foreign-referrer"]);
        let c = ClickFacts {
            referrer: "",
            ..browser()
        };
        let h = hits(&r, &c, &p);
        assert_eq!((h[0].rule, h[0].score_ppm), ("foreign-referrer", 105_000));
        let c = ClickFacts {
            params: vec![("gclid", "abc")],
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["brand-bidding"]);
        let c = ClickFacts {
            referrer: "https://www.google.com/",
            ..browser()
        };
        assert_eq!(
            rules_of(&c, &p, &cfg),
            ["foreign-referrer", "brand-bidding"]
        );
        let c = ClickFacts {
            params: vec![("fbclid", "x")],
            ..browser()
        };
        assert_eq!(hits(&r, &c, &p)[0].score_ppm, 141_666);
        let paid = PartnerFacts {
            paid_search: true,
            ..p.clone()
        };
        let c = ClickFacts {
            params: vec![("gclid", "abc")],
            ..browser()
        };
        assert!(rules_of(&c, &paid, &cfg).is_empty());
        let c = ClickFacts {
            ip: "198.51.100.9".parse().ok(),
            ..browser()
        };
        assert_eq!(rules_of(&c, &p, &cfg), ["self-referral-device"]);
    }
}
