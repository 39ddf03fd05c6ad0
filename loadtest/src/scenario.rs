//! Scenarios: what traffic to send (TOML files in `loadtest/scenarios/`, or the built-in
//! ones by name), and how each request is written.

use crate::http::push_query_value;
use serde::Deserialize;

/// The kinds of request a scenario mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Click,
    Impression,
    Conversion,
    Reversal,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Click,
        Kind::Impression,
        Kind::Conversion,
        Kind::Reversal,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Click => "click",
            Kind::Impression => "impression",
            Kind::Conversion => "conversion",
            Kind::Reversal => "reversal",
        }
    }
    /// The status a healthy server answers this kind with.
    pub fn expected(self, status: u16) -> bool {
        match self {
            Kind::Click => status == 302,
            Kind::Impression => status == 200,
            // 201 for a new conversion or reversal, 200 for a replay of one.
            Kind::Conversion | Kind::Reversal => status == 200 || status == 201,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub mix: Mix,
    #[serde(default)]
    pub clicks: Clicks,
    #[serde(default)]
    pub conversions: Conversions,
    #[serde(default)]
    pub reversals: Reversals,
    pub setup: Option<Setup>,
}

/// Relative weights of the request kinds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub click: f64,
    #[serde(default)]
    pub impression: f64,
    #[serde(default)]
    pub conversion: f64,
    #[serde(default)]
    pub reversal: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Clicks {
    /// Link codes used as they are (plus those `[setup]` creates).
    pub links: Vec<String>,
    /// Values drawn for sub1..sub5 (a missing list sends no such parameter).
    pub subs: Vec<Vec<String>>,
    /// Share of requests from bots (bot user agents, few headers).
    pub bot_share: f64,
    /// Share of browsers that send `Sec-GPC: 1` (opted out).
    pub opt_out_share: f64,
    /// Share of returning visitors (send a visitor cookie).
    pub returning_share: f64,
    /// Share of clicks with a deep link drawn from `deep-links`.
    pub deep_link_share: f64,
    pub deep_links: Vec<String>,
    /// Share of clicks with utm parameters.
    pub utm_share: f64,
    /// The campaign's click-id parameter in the redirect (to take ids for conversions).
    pub click_id_param: String,
    /// Fixed query appended to every click instead of the generated one (for runs that
    /// must send byte-identical requests to another tool, e.g. wrk).
    pub fixed_query: Option<String>,
    /// Send no browser headers at all (again, to match a bare tool's requests).
    pub bare: bool,
}

impl Default for Clicks {
    fn default() -> Self {
        Clicks {
            links: vec!["demo".into()],
            subs: Vec::new(),
            bot_share: 0.0,
            opt_out_share: 0.0,
            returning_share: 0.0,
            deep_link_share: 0.0,
            deep_links: Vec::new(),
            utm_share: 0.0,
            click_id_param: "click_id".into(),
            fixed_query: None,
            bare: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Conversions {
    pub merchant_key: String,
    pub currency: String,
    /// Decimal places of the currency.
    pub exponent: u32,
    pub amount_min_minor: u64,
    pub amount_max_minor: u64,
    pub events: Vec<String>,
}

impl Default for Conversions {
    fn default() -> Self {
        Conversions {
            merchant_key: "demo-merchant-key".into(),
            currency: "EUR".into(),
            exponent: 2,
            amount_min_minor: 500,
            amount_max_minor: 25_000,
            events: vec!["sale".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Reversals {
    /// refund, chargeback or rejected.
    pub reasons: Vec<String>,
}

impl Default for Reversals {
    fn default() -> Self {
        Reversals {
            reasons: vec!["refund".into()],
        }
    }
}

/// Entities made through the admin API before the run (idempotent upserts).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Setup {
    pub admin_key: String,
    pub campaign: String,
    pub affiliates: usize,
    pub links_per_affiliate: usize,
}

impl Setup {
    pub fn affiliate_id(i: usize) -> String {
        format!("lt-aff-{i}")
    }
    pub fn link_code(i: usize, j: usize) -> String {
        format!("lt-a{i}-l{j}")
    }
    pub fn links(&self) -> Vec<String> {
        (0..self.affiliates)
            .flat_map(|i| (0..self.links_per_affiliate).map(move |j| Setup::link_code(i, j)))
            .collect()
    }
}

const BUILT_IN: [(&str, &str); 4] = [
    ("clicks", include_str!("../scenarios/clicks.toml")),
    ("mix", include_str!("../scenarios/mix.toml")),
    ("conversions", include_str!("../scenarios/conversions.toml")),
    ("wrk-clicks", include_str!("../scenarios/wrk-clicks.toml")),
];

impl Scenario {
    /// A built-in scenario by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        let text = match BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, t)) => t.to_string(),
            None => std::fs::read_to_string(name_or_path).map_err(|e| {
                format!(
                    "scenario {name_or_path}: {e} (built in: {})",
                    BUILT_IN.map(|(n, _)| n).join(", ")
                )
            })?,
        };
        Scenario::parse(&text).map_err(|e| format!("scenario {name_or_path}: {e}"))
    }

    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let m = &s.mix;
        let weights = [m.click, m.impression, m.conversion, m.reversal];
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || weights.iter().sum::<f64>() <= 0.0
        {
            return Err("[mix] needs non-negative weights, not all zero".into());
        }
        let c = &s.clicks;
        for share in [
            c.bot_share,
            c.opt_out_share,
            c.returning_share,
            c.deep_link_share,
            c.utm_share,
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err("shares are between 0 and 1".into());
            }
        }
        if c.links.is_empty() && s.setup.is_none() && (m.click > 0.0 || m.impression > 0.0) {
            return Err("[clicks] links is empty and there is no [setup] to make any".into());
        }
        if c.deep_link_share > 0.0 && c.deep_links.is_empty() {
            return Err("deep-link-share without deep-links".into());
        }
        if c.subs.len() > 5 {
            return Err("at most five sub-id lists (sub1..sub5)".into());
        }
        let v = &s.conversions;
        if v.amount_min_minor > v.amount_max_minor || v.events.is_empty() || v.exponent > 4 {
            return Err(
                "[conversions] needs amount-min-minor <= amount-max-minor, events, exponent <= 4"
                    .into(),
            );
        }
        if s.reversals.reasons.is_empty() {
            return Err("[reversals] reasons is empty".into());
        }
        Ok(s)
    }

    /// Draws the kind of the next request.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> Kind {
        let m = &self.mix;
        let total = m.click + m.impression + m.conversion + m.reversal;
        let mut x = rng.f64() * total;
        for (k, w) in Kind::ALL
            .into_iter()
            .zip([m.click, m.impression, m.conversion, m.reversal])
        {
            if x < w {
                return k;
            }
            x -= w;
        }
        Kind::Click
    }
}

/// A browser's navigation headers (Chromium ones carry the high-entropy client hints a site
/// asked for with `Accept-CH`, so they send 20+ headers like a real returning Chrome).
struct Browser {
    headers: &'static [(&'static str, &'static str)],
}

const CHROME_WIN: Browser = Browser {
    headers: &[
        ("Connection", "keep-alive"),
        ("sec-ch-ua", "\"Chromium\";v=\"142\", \"Google Chrome\";v=\"142\", \"Not_A Brand\";v=\"99\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Windows\""),
        ("sec-ch-ua-platform-version", "\"19.0.0\""),
        ("sec-ch-ua-arch", "\"x86\""),
        ("sec-ch-ua-bitness", "\"64\""),
        ("sec-ch-ua-model", "\"\""),
        ("sec-ch-ua-full-version-list", "\"Chromium\";v=\"142.0.7444.60\", \"Google Chrome\";v=\"142.0.7444.60\", \"Not_A Brand\";v=\"99.0.0.0\""),
        ("Upgrade-Insecure-Requests", "1"),
        ("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-User", "?1"),
        ("Sec-Fetch-Dest", "document"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Priority", "u=0, i"),
    ],
};

const CHROME_ANDROID: Browser = Browser {
    headers: &[
        ("Connection", "keep-alive"),
        ("sec-ch-ua", "\"Chromium\";v=\"142\", \"Google Chrome\";v=\"142\", \"Not_A Brand\";v=\"99\""),
        ("sec-ch-ua-mobile", "?1"),
        ("sec-ch-ua-platform", "\"Android\""),
        ("sec-ch-ua-platform-version", "\"15.0.0\""),
        ("sec-ch-ua-model", "\"Pixel 9\""),
        ("sec-ch-ua-arch", "\"\""),
        ("sec-ch-ua-bitness", "\"\""),
        ("sec-ch-ua-full-version-list", "\"Chromium\";v=\"142.0.7444.48\", \"Google Chrome\";v=\"142.0.7444.48\", \"Not_A Brand\";v=\"99.0.0.0\""),
        ("Upgrade-Insecure-Requests", "1"),
        ("User-Agent", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Mobile Safari/537.36"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-User", "?1"),
        ("Sec-Fetch-Dest", "document"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"),
        ("Priority", "u=0, i"),
    ],
};

const EDGE_MAC: Browser = Browser {
    headers: &[
        ("Connection", "keep-alive"),
        ("sec-ch-ua", "\"Microsoft Edge\";v=\"142\", \"Chromium\";v=\"142\", \"Not_A Brand\";v=\"99\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"macOS\""),
        ("sec-ch-ua-platform-version", "\"15.5.0\""),
        ("sec-ch-ua-arch", "\"arm\""),
        ("sec-ch-ua-bitness", "\"64\""),
        ("sec-ch-ua-model", "\"\""),
        ("sec-ch-ua-full-version-list", "\"Microsoft Edge\";v=\"142.0.3595.53\", \"Chromium\";v=\"142.0.7444.60\", \"Not_A Brand\";v=\"99.0.0.0\""),
        ("Upgrade-Insecure-Requests", "1"),
        ("User-Agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36 Edg/142.0.0.0"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-User", "?1"),
        ("Sec-Fetch-Dest", "document"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "fr-FR,fr;q=0.9,en;q=0.8"),
        ("Priority", "u=0, i"),
    ],
};

const SAFARI_IOS: Browser = Browser {
    headers: &[
        ("Connection", "keep-alive"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Dest", "document"),
        ("Accept-Language", "en-GB,en;q=0.9"),
        ("Sec-Fetch-Mode", "navigate"),
        ("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Priority", "u=0, i"),
    ],
};

const FIREFOX_LINUX: Browser = Browser {
    headers: &[
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:145.0) Gecko/20100101 Firefox/145.0",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Connection", "keep-alive"),
        ("Upgrade-Insecure-Requests", "1"),
        ("Sec-Fetch-Dest", "document"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-User", "?1"),
        ("Priority", "u=0, i"),
        ("TE", "trailers"),
    ],
};

/// Weighted roughly like a consumer site's traffic.
const BROWSERS: [(&Browser, u32); 5] = [
    (&CHROME_WIN, 30),
    (&CHROME_ANDROID, 30),
    (&SAFARI_IOS, 25),
    (&EDGE_MAC, 8),
    (&FIREFOX_LINUX, 7),
];

const BOTS: [&str; 7] = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl/8.14.1",
    "python-requests/2.32.4",
    "Go-http-client/1.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/142.0.0.0 Safari/537.36",
];

const REFERRERS: [&str; 5] = [
    "https://www.google.com/",
    "https://www.facebook.com/",
    "https://t.co/",
    "https://news.example/article/42",
    "https://blog.example/best-deals",
];

const UTM_SOURCES: [&str; 4] = ["newsletter", "facebook", "google", "tiktok"];

fn browser(rng: &mut fastrand::Rng) -> &'static Browser {
    let total: u32 = BROWSERS.iter().map(|(_, w)| w).sum();
    let mut x = rng.u32(0..total);
    for (b, w) in BROWSERS {
        if x < w {
            return b;
        }
        x -= w;
    }
    &CHROME_WIN
}

fn push(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Writes a click or impression request for `link`.
pub fn write_tracking(
    out: &mut Vec<u8>,
    sc: &Scenario,
    host: &str,
    link: &str,
    click: bool,
    rng: &mut fastrand::Rng,
) {
    let c = &sc.clicks;
    push(
        out,
        &[b"GET /", if click { b"c/" } else { b"i/" }, link.as_bytes()],
    );
    if let Some(q) = &c.fixed_query {
        push(out, &[b"?", q.as_bytes()]);
    } else {
        let mut sep = b'?';
        for (i, values) in c.subs.iter().enumerate() {
            if let Some(v) = rng.choice(values) {
                push(out, &[&[sep], b"sub", &[b'1' + i as u8], b"="]);
                push_query_value(out, v);
                sep = b'&';
            }
        }
        if click && rng.f64() < c.utm_share {
            push(
                out,
                &[
                    &[sep],
                    b"utm_source=",
                    rng.choice(UTM_SOURCES).unwrap().as_bytes(),
                    b"&utm_medium=affiliate",
                ],
            );
            sep = b'&';
        }
        if click && rng.f64() < c.deep_link_share {
            if let Some(u) = rng.choice(&c.deep_links) {
                push(out, &[&[sep], b"url="]);
                push_query_value(out, u);
            }
        }
    }
    push(out, &[b" HTTP/1.1\r\nHost: ", host.as_bytes(), b"\r\n"]);
    if c.bare {
        out.extend_from_slice(b"\r\n");
        return;
    }
    if rng.f64() < c.bot_share {
        push(
            out,
            &[
                b"User-Agent: ",
                rng.choice(BOTS).unwrap().as_bytes(),
                b"\r\nAccept: */*\r\n\r\n",
            ],
        );
        return;
    }
    for (name, value) in browser(rng).headers {
        let value = match (*name, click) {
            ("Sec-Fetch-Dest", false) => "image",
            ("Sec-Fetch-Mode", false) => "no-cors",
            ("Accept", false) => "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
            _ => value,
        };
        if !click && (*name == "Sec-Fetch-User" || *name == "Upgrade-Insecure-Requests") {
            continue;
        }
        push(out, &[name.as_bytes(), b": ", value.as_bytes(), b"\r\n"]);
    }
    push(
        out,
        &[
            b"Referer: ",
            rng.choice(REFERRERS).unwrap().as_bytes(),
            b"\r\n",
        ],
    );
    if rng.f64() < c.opt_out_share {
        out.extend_from_slice(b"Sec-GPC: 1\r\n");
    }
    if rng.f64() < c.returning_share {
        // A stable visitor id per browser "person": 24 base64url characters.
        let id = rng.u32(0..100_000);
        push(
            out,
            &[
                b"Cookie: _ga=GA1.1.12345.67890; ct_vid=lt",
                format!("{id:0>22}").as_bytes(),
                b"\r\n",
            ],
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// The decimal string of a minor-unit amount.
pub fn decimal(minor: u64, exponent: u32) -> String {
    if exponent == 0 {
        return minor.to_string();
    }
    let p = 10u64.pow(exponent);
    format!("{}.{:0>w$}", minor / p, minor % p, w = exponent as usize)
}

fn write_post(out: &mut Vec<u8>, host: &str, path: &str, key: &str, body: &str) {
    push(
        out,
        &[
            b"POST ",
            path.as_bytes(),
            b" HTTP/1.1\r\nHost: ",
            host.as_bytes(),
        ],
    );
    push(
        out,
        &[
            b"\r\nAuthorization: Bearer ",
            key.as_bytes(),
            b"\r\nContent-Type: application/json\r\nContent-Length: ",
        ],
    );
    push(
        out,
        &[
            body.len().to_string().as_bytes(),
            b"\r\n\r\n",
            body.as_bytes(),
        ],
    );
}

/// Writes a server-to-server conversion.
pub fn write_conversion(
    out: &mut Vec<u8>,
    sc: &Scenario,
    host: &str,
    order_id: &str,
    click_id: Option<&str>,
    rng: &mut fastrand::Rng,
) {
    let v = &sc.conversions;
    let amount = rng.u64(v.amount_min_minor..=v.amount_max_minor);
    let mut body = serde_json::json!({
        "order_id": order_id,
        "event": rng.choice(&v.events).unwrap(),
        "amount": decimal(amount, v.exponent),
        "currency": v.currency,
    });
    if let Some(c) = click_id {
        body["click_id"] = c.into();
    }
    write_post(
        out,
        host,
        "/api/v1/conversions",
        &v.merchant_key,
        &body.to_string(),
    );
}

/// Writes a full reversal of a conversion.
pub fn write_reversal(
    out: &mut Vec<u8>,
    sc: &Scenario,
    host: &str,
    conversion_id: &str,
    reversal_id: &str,
    rng: &mut fastrand::Rng,
) {
    let body = serde_json::json!({
        "reason": rng.choice(&sc.reversals.reasons).unwrap(),
        "reversal_id": reversal_id,
        "note": "clicktrail-load",
    });
    let path = format!("/api/v1/conversions/{conversion_id}/reverse");
    write_post(
        out,
        host,
        &path,
        &sc.conversions.merchant_key,
        &body.to_string(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_scenarios_parse() {
        for (name, _) in BUILT_IN {
            Scenario::load(name).unwrap();
        }
        let files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))
            .unwrap()
            .collect();
        assert_eq!(
            files.len(),
            BUILT_IN.len(),
            "every scenario file is built in"
        );
    }

    #[test]
    fn bad_scenarios_are_refused() {
        assert!(Scenario::parse("name = \"x\"\n[mix]\n").is_err());
        assert!(Scenario::parse("name = \"x\"\n[mix]\nclick = -1\n").is_err());
        assert!(
            Scenario::parse("name = \"x\"\n[mix]\nclick = 1\n[clicks]\nbot-share = 2.0\n").is_err()
        );
        assert!(Scenario::parse("name = \"x\"\n[mix]\nclick = 1\nbogus = 1\n").is_err());
        assert!(Scenario::parse("name = \"x\"\n[mix]\nclick = 1\n[clicks]\nlinks = []\n").is_err());
    }

    #[test]
    fn requests_are_well_formed_and_reproducible() {
        let sc = Scenario::load("mix").unwrap();
        let gen = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut out = Vec::new();
            for i in 0..200 {
                write_tracking(&mut out, &sc, "h:1", "demo", i % 3 != 0, &mut rng);
            }
            out
        };
        assert_eq!(gen(1), gen(1));
        assert_ne!(gen(1), gen(2));
        let all = gen(3);
        let text = String::from_utf8(all).unwrap();
        let reqs: Vec<&str> = text.split_terminator("\r\n\r\n").collect();
        assert_eq!(reqs.len(), 200);
        let chrome = reqs
            .iter()
            .find(|r| r.contains("sec-ch-ua-full-version-list"))
            .unwrap();
        assert!(chrome.lines().count() > 20, "{chrome}");
        assert!(reqs
            .iter()
            .all(|r| r.starts_with("GET /c/demo") || r.starts_with("GET /i/demo")));
        assert!(reqs
            .iter()
            .all(|r| !r.contains('\n') || r.lines().skip(1).all(|l| l.contains(": "))));
    }

    #[test]
    fn amounts_are_exact_decimals() {
        assert_eq!(decimal(4990, 2), "49.90");
        assert_eq!(decimal(5, 2), "0.05");
        assert_eq!(decimal(1500, 0), "1500");
        assert_eq!(decimal(1234, 3), "1.234");
    }
}
