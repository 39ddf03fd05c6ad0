//! The fraud engine's settings: every rule by name with its defaults, the program-wide
//! `[fraud]` section and a campaign's overrides, the score thresholds, the IP range lists.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One million: scores and weights are parts per million.
pub const PPM: u32 = 1_000_000;

/// What a rule's `limit` and `window-s` mean, and its defaults.
#[derive(Debug, Clone, Copy)]
pub struct RuleSpec {
    pub name: &'static str,
    /// Score the rule gives on its own, ppm.
    pub score_ppm: u32,
    pub limit: u64,
    pub window_s: u64,
    /// What it looks at and what `limit` and `window-s` mean.
    pub about: &'static str,
}

const fn spec(
    name: &'static str,
    score_ppm: u32,
    limit: u64,
    window_s: u64,
    about: &'static str,
) -> RuleSpec {
    RuleSpec {
        name,
        score_ppm,
        limit,
        window_s,
        about,
    }
}

/// Every rule, with its defaults. Scores combine as independent evidence
/// (1 − Π(1 − score)); one rule at 500,000 ppm or more sends its subject to review alone.
pub const RULES: [RuleSpec; 24] = [
    spec("click-flood-ip", 900_000, 10, 60, "more than `limit` clicks from one IP address within `window-s`"),
    spec("click-flood-subnet", 700_000, 40, 60, "more than `limit` clicks from one /24 (IPv6 /48) within `window-s`"),
    spec("click-flood-fingerprint", 800_000, 10, 60, "more than `limit` clicks from one device fingerprint within `window-s`"),
    spec("click-flood-visitor", 900_000, 5, 60, "more than `limit` clicks from one visitor cookie within `window-s`"),
    spec("affiliate-click-spike", 300_000, 5, 3600, "an affiliate's clicks in one `window-s` bucket above `limit` times its own mean of the past 7 days (at least 200 clicks); weak alone: newsletters and posts spike too"),
    spec("bot-user-agent", 950_000, 0, 0, "the user agent is empty or names a bot, crawler or HTTP library (`bot-markers`)"),
    spec("missing-browser-headers", 600_000, 0, 0, "a browser user agent without the headers every such browser sends: Accept-Language and, from Chromium 80, Sec-Fetch-* (both missing: the full score; one: half)"),
    spec("datacenter-ip", 450_000, 0, 0, "the IP is in a data-centre range (`datacenter-ranges`); weak alone: VPN exits live there too"),
    spec("blocked-ip", 950_000, 0, 0, "the IP is in a blocked range (`blocked-ranges`)"),
    spec("impossible-client-hints", 700_000, 0, 0, "client hints that contradict the user agent (platform, mobile, or hints from a browser that sends none)"),
    spec("conversion-too-fast", 900_000, 10, 0, "the conversion came less than `limit` seconds after its click, or the affiliate's conversions mostly come within a minute (99% lower bound of its share over 50%, twice its campaign's): click injection"),
    spec("click-spamming", 800_000, 60, 86_400, "at least 20 of the affiliate's conversions, the 99% lower bound of their share over `window-s` after their click `limit`% or more and twice the campaign's: a flat tail"),
    spec("hidden-click", 900_000, 0, 0, "the click was not a top-level navigation (Sec-Fetch-Dest is iframe, image, script...)"),
    spec("foreign-referrer", 350_000, 0, 0, "the referrer is not on the affiliate's registered `sites` (weak when there is none)"),
    spec("no-impression", 600_000, 0, 86_400, "the campaign requires an impression and the visitor saw none of the affiliate's within `window-s` before the click"),
    spec("cookie-stuffing-burst", 850_000, 3, 5, "one visitor or device got clicks for `limit` or more merchants within `window-s`"),
    spec("self-referral-email", 900_000, 0, 0, "the buyer's e-mail is the affiliate's own (its e-mail or PayPal payout account)"),
    spec("self-referral-device", 800_000, 0, 0, "the click or the buyer came from the affiliate's own addresses (`ips`)"),
    spec("self-referral-payout", 900_000, 0, 0, "the affiliate's payout account is another affiliate's too"),
    spec("duplicate-order", 700_000, 0, 2_592_000, "the order id was already converted for another merchant through the same affiliate within `window-s` (a replayed order)"),
    spec("repeat-customer", 600_000, 3, 86_400, "one customer converted `limit` or more times within `window-s`, each on a fresh click of the affiliate"),
    spec("brand-bidding", 850_000, 0, 0, "a campaign with `paid-search = false` got a click from a search ad (gclid, msclkid) or a search engine's results page; fbclid counts a sixth (organic shares carry it)"),
    spec("anomaly", 200_000, 990_000, 86_400, "the isolation forest scores the conversion above the `limit` ppm quantile of its training set (retrained every `window-s`)"),
    spec("flagged-visitor", 500_000, 0, 86_400, "the converting visitor (its cookie) had another click sent to review within `window-s`"),
];

/// The spec of a rule by name.
pub fn spec_of(name: &str) -> Option<&'static RuleSpec> {
    RULES.iter().find(|r| r.name == name)
}

/// A rule's effective settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSettings {
    pub enabled: bool,
    pub score_ppm: u32,
    pub limit: u64,
    pub window_s: u64,
    /// Its score alone at or above `reject-ppm` rejects the subject (default: false: a
    /// person decides).
    pub may_reject: bool,
}

/// A rule's settings as written in config or on a campaign: whatever is missing comes from
/// the level below (campaign → program → built-in default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuleOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_ppm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_reject: Option<bool>,
}

/// Longest rule window: 90 days.
pub const WINDOW_S_MAX: u64 = 90 * 86_400;

impl RuleOverride {
    /// Checks names and bounds of a set of overrides (config or campaign).
    pub fn check_all(rules: &BTreeMap<String, RuleOverride>) -> Result<(), String> {
        for (name, o) in rules {
            if spec_of(name).is_none() {
                let names: Vec<&str> = RULES.iter().map(|r| r.name).collect();
                return Err(format!(
                    "unknown fraud rule {name:?} (rules: {})",
                    names.join(", ")
                ));
            }
            if o.score_ppm.is_some_and(|s| s > PPM) {
                return Err(format!("{name}: score-ppm must be 0..=1000000"));
            }
            if o.window_s.is_some_and(|w| w > WINDOW_S_MAX) {
                return Err(format!("{name}: window-s must be at most {WINDOW_S_MAX}"));
            }
        }
        Ok(())
    }

    fn apply(&self, s: &mut RuleSettings) {
        s.enabled = self.enabled.unwrap_or(s.enabled);
        s.score_ppm = self.score_ppm.unwrap_or(s.score_ppm);
        s.limit = self.limit.unwrap_or(s.limit);
        s.window_s = self.window_s.unwrap_or(s.window_s);
        s.may_reject = self.may_reject.unwrap_or(s.may_reject);
    }
}

/// An IPv4 or IPv6 range (`203.0.113.0/24`, `2001:db8::/32`, or a bare address). An IPv4
/// range also holds the IPv4-mapped IPv6 form of its addresses (`::ffff:203.0.113.9`, how
/// a dual-stack socket shows an IPv4 peer); an IPv6 range holds only IPv6 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    prefix: u8,
    v4: bool,
}

impl Cidr {
    /// Parses `203.0.113.0/24`, `2001:db8::/32` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR"))?;
        let (v4, net, width) = match ip {
            IpAddr::V4(a) => (true, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (false, u128::from(a), 128),
        };
        let prefix = match len {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => width,
        };
        Ok(Cidr {
            net: net & mask(prefix, width),
            prefix,
            v4,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = match (self.v4, ip) {
            (true, IpAddr::V4(a)) => u128::from(u32::from(a)),
            (true, IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(m) => u128::from(u32::from(m)),
                None => return false,
            },
            (false, IpAddr::V6(a)) => u128::from(a),
            (false, IpAddr::V4(_)) => return false,
        };
        let width = if self.v4 { 32 } else { 128 };
        bits & mask(self.prefix, width) == self.net
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        Cidr::parse(s)
    }
}

/// The network mask of `prefix` bits in an address of `width` bits (in a u128's low end).
fn mask(prefix: u8, width: u8) -> u128 {
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if prefix == 0 {
        0
    } else {
        all & (all << (width - prefix))
    }
}

/// Parses a list of ranges, one per entry or line (`#` starts a comment).
pub fn parse_ranges<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Vec<Cidr>, String> {
    lines
        .into_iter()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(Cidr::parse)
        .collect()
}

/// User-agent fragments (lower case) that mark automated clients, by default.
pub const BOT_MARKERS_DEFAULT: [&str; 16] = [
    "bot",
    "crawler",
    "spider",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "headlesschrome",
    "phantomjs",
    "scrapy",
    "libwww-perl",
    "httpclient",
];

/// Search engines whose result pages must not link to a `paid-search = false` campaign's
/// tracking links directly (host suffixes), by default.
pub const SEARCH_ENGINES_DEFAULT: [&str; 9] = [
    "google.",
    "bing.com",
    "duckduckgo.com",
    "search.yahoo.com",
    "yandex.",
    "baidu.com",
    "ecosia.org",
    "search.brave.com",
    "startpage.com",
];

/// The anomaly model's training settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyConfig {
    /// Trees per forest. Default: 100.
    pub trees: usize,
    /// Sub-sample per tree (ψ). Default: 256.
    pub sample_size: usize,
    /// Conversions kept for training (a uniform reservoir of all seen). Default: 50,000.
    pub samples_max: usize,
    /// Fewest samples to train on. Default: 500.
    pub samples_min: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            trees: 100,
            sample_size: 256,
            samples_max: 50_000,
            samples_min: 500,
        }
    }
}

/// The `[fraud]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FraudConfig {
    /// Every rule on (each still switchable); false switches them all off: every
    /// conversion is allowed (and still gets its verdict). Default: true.
    pub enabled: bool,
    /// Program-wide rule settings (campaigns override them).
    pub rules: BTreeMap<String, RuleOverride>,
    /// Combined score from which a subject goes to review. Default: 500,000 ppm.
    pub review_ppm: u32,
    /// Score from which a rule that may reject rejects alone. Default: 900,000 ppm.
    pub reject_ppm: u32,
    pub datacenter_ranges: Vec<Cidr>,
    pub blocked_ranges: Vec<Cidr>,
    pub bot_markers: Vec<String>,
    pub search_engines: Vec<String>,
    /// Most recent clicks remembered for their conversions (oldest first out). Default:
    /// 1,000,000 (about 100 bytes each).
    pub clicks_max: usize,
    /// Most flagged clicks remembered (oldest first out). Default: 1,000,000.
    pub flagged_max: usize,
    /// Most keys per sliding-window family (IPs, subnets, ...). Default: 1,000,000.
    pub window_keys_max: usize,
    /// Most verdicts the API pages through in memory (older ones are in the journal).
    /// Default: 2,000,000.
    pub verdicts_max: usize,
    pub anomaly: AnomalyConfig,
    /// Key of the buyers' e-mail hashes (see `fraud::email`): the server sets it from
    /// `secrets.email-hash-key` or the click-id key. Default: empty.
    pub email_key: Vec<u8>,
}

impl Default for FraudConfig {
    fn default() -> Self {
        FraudConfig {
            enabled: true,
            rules: BTreeMap::new(),
            review_ppm: 500_000,
            reject_ppm: 900_000,
            datacenter_ranges: Vec::new(),
            blocked_ranges: Vec::new(),
            bot_markers: BOT_MARKERS_DEFAULT.map(String::from).to_vec(),
            search_engines: SEARCH_ENGINES_DEFAULT.map(String::from).to_vec(),
            clicks_max: 1_000_000,
            flagged_max: 1_000_000,
            window_keys_max: 1_000_000,
            verdicts_max: 2_000_000,
            anomaly: AnomalyConfig::default(),
            email_key: Vec::new(),
        }
    }
}

impl FraudConfig {
    /// A rule's settings for a campaign: built-in default, then `[fraud.rules]`, then the
    /// campaign's `fraud-rules`.
    pub fn settings(
        &self,
        rule: &str,
        campaign: Option<&BTreeMap<String, RuleOverride>>,
    ) -> RuleSettings {
        let spec = spec_of(rule).unwrap_or_else(|| panic!("unknown fraud rule {rule}"));
        let mut s = RuleSettings {
            enabled: true,
            score_ppm: spec.score_ppm,
            limit: spec.limit,
            window_s: spec.window_s,
            may_reject: false,
        };
        if let Some(o) = self.rules.get(rule) {
            o.apply(&mut s);
        }
        if let Some(o) = campaign.and_then(|c| c.get(rule)) {
            o.apply(&mut s);
        }
        s.enabled &= self.enabled;
        s
    }

    /// Checks the section as a whole.
    pub fn check(&self) -> Result<(), String> {
        RuleOverride::check_all(&self.rules)?;
        if self.review_ppm == 0 || self.review_ppm > self.reject_ppm || self.reject_ppm > PPM {
            return Err("fraud: 0 < review-ppm <= reject-ppm <= 1000000".into());
        }
        if self.anomaly.sample_size < 2 || self.anomaly.trees == 0 {
            return Err("fraud.anomaly: trees >= 1 and sample-size >= 2".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_v4_and_v6() {
        let r =
            parse_ranges(["203.0.113.0/24 # docs", "", "2001:db8::/32", "198.51.100.7"]).unwrap();
        let has = |ip: &str| r.iter().any(|c| c.contains(ip.parse().unwrap()));
        assert!(has("203.0.113.255") && has("2001:db8:1::1") && has("198.51.100.7"));
        assert!(!has("203.0.114.0") && !has("2001:db9::1") && !has("198.51.100.8"));
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("x/8").is_err());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn settings_layer_campaign_over_program_over_default() {
        let mut c = FraudConfig::default();
        c.rules.insert(
            "click-flood-ip".into(),
            RuleOverride {
                limit: Some(20),
                may_reject: Some(true),
                ..Default::default()
            },
        );
        let camp: BTreeMap<String, RuleOverride> = [(
            "click-flood-ip".to_string(),
            RuleOverride {
                enabled: Some(false),
                ..Default::default()
            },
        )]
        .into();
        let p = c.settings("click-flood-ip", None);
        assert_eq!(
            (p.enabled, p.limit, p.window_s, p.may_reject),
            (true, 20, 60, true)
        );
        let s = c.settings("click-flood-ip", Some(&camp));
        assert_eq!((s.enabled, s.limit), (false, 20));
        assert!(
            RuleOverride::check_all(&[("nope".to_string(), RuleOverride::default())].into())
                .is_err()
        );
        assert!(c.check().is_ok());
        let names: std::collections::HashSet<_> = RULES.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), RULES.len(), "rule names are unique");
    }
}
