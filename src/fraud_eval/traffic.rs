//! The seeded traffic generator: the program (merchants, campaigns, affiliates, links), 28
//! days of labelled clicks, impressions and conversions, the configuration that declares
//! the program and the import lines that replay the traffic. Pure: the same seed, scale
//! and end time give the same traffic, byte for byte. The model itself is described in
//! the parent module's documentation; the numbers are the constants and literals here.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

pub const SECOND_US: i64 = 1_000_000;
pub const MINUTE_US: i64 = 60 * SECOND_US;
pub const HOUR_US: i64 = 60 * MINUTE_US;
pub const DAY_US: i64 = 24 * HOUR_US;
/// Days of traffic: the whole UTC days before the generator's `end`.
pub const DAYS: i64 = 28;
/// Every campaign's cookie window: conversions later than this after their click are
/// not attributed, so they are not generated.
pub const COOKIE_WINDOW_DAYS: i64 = 30;

// ---------------------------------------------------------------------------------------
// Labels

/// A fraud pattern: what a fraudulent click or conversion is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    FloodIp,
    FloodSubnet,
    FloodFingerprint,
    FloodVisitor,
    ClickSpike,
    BotUserAgent,
    MissingHeaders,
    DatacenterIp,
    BlockedIp,
    ClickInjection,
    ClickSpamming,
    StuffingHidden,
    StuffingReferrer,
    StuffingNoImpression,
    StuffingManyMerchants,
    SelfReferralEmail,
    SelfReferralDevice,
    DuplicateOrder,
    RepeatCustomer,
    BrandBidding,
}

impl Pattern {
    pub const ALL: [Pattern; 20] = [
        Pattern::FloodIp,
        Pattern::FloodSubnet,
        Pattern::FloodFingerprint,
        Pattern::FloodVisitor,
        Pattern::ClickSpike,
        Pattern::BotUserAgent,
        Pattern::MissingHeaders,
        Pattern::DatacenterIp,
        Pattern::BlockedIp,
        Pattern::ClickInjection,
        Pattern::ClickSpamming,
        Pattern::StuffingHidden,
        Pattern::StuffingReferrer,
        Pattern::StuffingNoImpression,
        Pattern::StuffingManyMerchants,
        Pattern::SelfReferralEmail,
        Pattern::SelfReferralDevice,
        Pattern::DuplicateOrder,
        Pattern::RepeatCustomer,
        Pattern::BrandBidding,
    ];

    /// The label written for it.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::FloodIp => "click-flood-ip",
            Pattern::FloodSubnet => "click-flood-subnet",
            Pattern::FloodFingerprint => "click-flood-device",
            Pattern::FloodVisitor => "click-flood-visitor",
            Pattern::ClickSpike => "click-spike",
            Pattern::BotUserAgent => "bot-user-agent",
            Pattern::MissingHeaders => "bot-missing-headers",
            Pattern::DatacenterIp => "bot-datacenter",
            Pattern::BlockedIp => "bot-blocked-range",
            Pattern::ClickInjection => "click-injection",
            Pattern::ClickSpamming => "click-spamming",
            Pattern::StuffingHidden => "stuffing-hidden",
            Pattern::StuffingReferrer => "stuffing-foreign-referrer",
            Pattern::StuffingNoImpression => "stuffing-no-impression",
            Pattern::StuffingManyMerchants => "stuffing-many-merchants",
            Pattern::SelfReferralEmail => "self-referral-email",
            Pattern::SelfReferralDevice => "self-referral-device",
            Pattern::DuplicateOrder => "duplicate-order",
            Pattern::RepeatCustomer => "repeat-customer",
            Pattern::BrandBidding => "brand-bidding",
        }
    }

    pub fn from_name(name: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The fraud rule meant to catch it.
    pub fn rule(self) -> &'static str {
        match self {
            Pattern::FloodIp => "click-flood-ip",
            Pattern::FloodSubnet => "click-flood-subnet",
            Pattern::FloodFingerprint => "click-flood-fingerprint",
            Pattern::FloodVisitor => "click-flood-visitor",
            Pattern::ClickSpike => "affiliate-click-spike",
            Pattern::BotUserAgent => "bot-user-agent",
            Pattern::MissingHeaders => "missing-browser-headers",
            Pattern::DatacenterIp => "datacenter-ip",
            Pattern::BlockedIp => "blocked-ip",
            Pattern::ClickInjection => "conversion-too-fast",
            Pattern::ClickSpamming => "click-spamming",
            Pattern::StuffingHidden => "hidden-click",
            Pattern::StuffingReferrer => "foreign-referrer",
            Pattern::StuffingNoImpression => "no-impression",
            Pattern::StuffingManyMerchants => "cookie-stuffing-burst",
            Pattern::SelfReferralEmail => "self-referral-email",
            Pattern::SelfReferralDevice => "self-referral-device",
            Pattern::DuplicateOrder => "duplicate-order",
            Pattern::RepeatCustomer => "repeat-customer",
            Pattern::BrandBidding => "brand-bidding",
        }
    }
}

/// Fraud the import cannot carry, so the generator does not pretend to make it.
pub const NOT_GENERATED: [(&str, &str); 1] = [(
    "impossible-client-hints",
    "client hints (Sec-CH-UA-*) are not in the import format, so no imported click has any; \
     the rule is not exercised",
)];

/// The kind of an affiliate; `Fraud` is an affiliate that sends nothing real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Content,
    Coupon,
    Email,
    Social,
    Fraud,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Content => "content",
            Kind::Coupon => "coupon",
            Kind::Email => "email",
            Kind::Social => "social",
            Kind::Fraud => "fraud",
        }
    }
}

// ---------------------------------------------------------------------------------------
// The program

/// How a merchant numbers its orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderIds {
    /// A prefix and eight random characters (`NW7K2M9QXA`).
    Prefixed(&'static str),
    /// A shop counter (`104233`): counts every order of the shop, ours or not.
    Sequential,
    /// A six-character booking reference.
    Booking,
    /// A random UUID.
    Uuid,
}

#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: &'static str,
    pub name: &'static str,
    pub domain: &'static str,
    pub order_ids: OrderIds,
    /// Median order value, euros.
    pub order_eur: f64,
    /// All the shop's orders a day (for its counter).
    pub orders_per_day: f64,
    /// Where the shop's counter stood when the traffic starts (drawn per seed).
    pub counter_start: u64,
}

#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: &'static str,
    pub merchant: usize,
    pub name: &'static str,
    pub paid_search: bool,
    pub requires_impression: bool,
    /// Pays per lead (trial sign-ups): conversions are `lead` events without an amount.
    pub leads: bool,
    /// Multiplies an affiliate's conversion rate on this campaign.
    pub cr_factor: f64,
}

/// Where a social affiliate posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Instagram,
    Facebook,
    X,
    TikTok,
    Pinterest,
}

#[derive(Debug, Clone)]
pub struct Affiliate {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// The patterns it commits (empty: a legitimate affiliate).
    pub fraud: Vec<Pattern>,
    pub sites: Vec<String>,
    pub email: String,
    pub ips: Vec<String>,
    pub campaigns: Vec<usize>,
    /// Its real clicks over the 28 days at scale 1.
    pub clicks: f64,
    /// Conversion rate of its real clicks.
    pub cr: f64,
    /// Content sites: a channel it did not register (pinterest, youtube) for 10% of clicks.
    pub unregistered: Option<&'static str>,
    /// Social: where it posts, with weights.
    pub platforms: Vec<(Platform, f64)>,
}

impl Affiliate {
    /// Real traffic besides fraud: what a label's `source` says for its events.
    pub fn source(&self) -> String {
        if self.kind != Kind::Fraud && !self.fraud.is_empty() {
            format!("{}-mixed", self.kind.name())
        } else {
            self.kind.name().to_string()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Link {
    pub code: String,
    pub affiliate: usize,
    pub campaign: usize,
}

// ---------------------------------------------------------------------------------------
// Events

/// A click or an impression.
#[derive(Debug, Clone, Default)]
pub struct Visit {
    pub link: usize,
    pub ip: String,
    pub user_agent: String,
    pub referrer: String,
    pub accept_language: String,
    pub sec_fetch_dest: &'static str,
    pub sec_fetch_site: &'static str,
    pub visitor_id: Option<String>,
    pub sub1: Option<String>,
    pub query: Vec<(&'static str, String)>,
}

/// Where a conversion's order id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// The merchant's next id (resolved when the traffic is finished).
    Fresh,
    /// The id of an earlier conversion (by index), replayed.
    Reuse(usize),
    Id(String),
}

#[derive(Debug, Clone)]
pub struct Sale {
    pub merchant: usize,
    /// Index of its click (an event index).
    pub click: usize,
    pub order: Order,
    pub event: &'static str,
    pub amount_minor: i64,
    pub customer_id: Option<String>,
    pub email: String,
    pub ip: String,
    pub user_agent: String,
}

#[derive(Debug, Clone)]
pub enum Body {
    Click(Visit),
    Impression(Visit),
    Conversion(Sale),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at_us: i64,
    /// The importer's id: `k…` clicks, `i…` impressions, `v…` conversions.
    pub r#ref: String,
    /// `None`: legitimate.
    pub label: Option<Pattern>,
    /// What kind of that pattern (or of legitimate traffic) it is, for the curious.
    pub variant: &'static str,
    pub affiliate: usize,
    pub body: Body,
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Click(_) => "click",
            Body::Impression(_) => "impression",
            Body::Conversion(_) => "conversion",
        }
    }
}

/// The generated program and traffic, events in time order.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub seed: u64,
    pub scale: f64,
    pub start_us: i64,
    pub end_us: i64,
    pub merchants: Vec<Merchant>,
    pub campaigns: Vec<Campaign>,
    pub affiliates: Vec<Affiliate>,
    pub links: Vec<Link>,
    pub events: Vec<Event>,
}

// ---------------------------------------------------------------------------------------
// Randomness

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded random stream with the distributions the model uses.
#[derive(Debug, Clone)]
pub struct Rand(fastrand::Rng);

impl Rand {
    /// Stream `stream` of seed `seed`: independent streams per part of the model, so a
    /// change to one part leaves the others' draws alone.
    pub fn new(seed: u64, stream: u64) -> Rand {
        Rand(fastrand::Rng::with_seed(splitmix(
            splitmix(seed) ^ stream.wrapping_mul(0x2545_f491_4f6c_dd1d),
        )))
    }

    pub fn unit(&mut self) -> f64 {
        self.0.f64()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// An integer in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        self.0.i64(lo..=hi)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n.max(1))
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// A whole number with expectation `x` (the fraction decides by chance).
    pub fn round(&mut self, x: f64) -> u64 {
        let floor = x.max(0.0).floor();
        floor as u64 + u64::from(self.chance(x - floor))
    }

    pub fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from_digit(self.0.u32(..16), 16).unwrap())
            .collect()
    }

    pub fn alnum_upper(&mut self, n: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        (0..n)
            .map(|_| char::from(CHARS[self.below(CHARS.len())]))
            .collect()
    }

    pub fn base64url(&mut self, n: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..n)
            .map(|_| char::from(CHARS[self.below(CHARS.len())]))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Browsers, networks, people

/// Relative traffic by hour of day (UTC; a European audience: low at night, evening peak).
const DIURNAL: [f64; 24] = [
    0.35, 0.25, 0.2, 0.18, 0.2, 0.3, 0.5, 0.8, 1.0, 1.1, 1.15, 1.2, 1.25, 1.2, 1.15, 1.15, 1.2,
    1.3, 1.45, 1.6, 1.65, 1.5, 1.1, 0.65,
];

/// A browser: user agent, share of its class, whether it sends Sec-Fetch-* on a
/// navigation, whether it keeps our cookie only 7 days (Safari's bounce-tracking limit) and
/// whether it is Chromium (third-party cookies in an iframe still work there).
#[derive(Debug, Clone, Copy)]
struct Browser {
    ua: &'static str,
    weight: f64,
    sec_fetch: bool,
    safari: bool,
    chromium: bool,
}

const fn b(
    ua: &'static str,
    weight: f64,
    sec_fetch: bool,
    safari: bool,
    chromium: bool,
) -> Browser {
    Browser {
        ua,
        weight,
        sec_fetch,
        safari,
        chromium,
    }
}

const DESKTOP: [Browser; 10] = [
    b("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/132.0.0.0 Safari/537.36", 18.0, true, false, true),
    b("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 9.0, true, false, true),
    b("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/132.0.0.0 Safari/537.36", 8.0, true, false, true),
    b("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/132.0.0.0 Safari/537.36 Edg/132.0.0.0", 6.0, true, false, true),
    b("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.2 Safari/605.1.15", 6.0, true, true, false),
    b("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15", 2.0, true, true, false),
    b("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:134.0) Gecko/20100101 Firefox/134.0", 3.5, true, false, false),
    b("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", 0.8, true, false, false),
    b("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/132.0.0.0 Safari/537.36", 1.2, true, false, true),
    // Firefox before 90 sent no Sec-Fetch-*.
    b("Mozilla/5.0 (Windows NT 6.1; Win64; x64; rv:78.0) Gecko/20100101 Firefox/78.0", 0.3, false, false, false),
];

const MOBILE: [Browser; 11] = [
    b("Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1", 17.0, true, true, false),
    b("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1", 6.0, true, true, false),
    // Safari before 16.4 sent no Sec-Fetch-* (older iPhones that cannot update).
    b("Mozilla/5.0 (iPhone; CPU iPhone OS 16_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.1 Mobile/15E148 Safari/604.1", 1.0, false, true, false),
    b("Mozilla/5.0 (iPhone; CPU iPhone OS 15_8 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.6.6 Mobile/15E148 Safari/604.1", 0.8, false, true, false),
    b("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/132.0.0.0 Mobile Safari/537.36", 17.0, true, false, true),
    b("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", 5.0, true, false, true),
    b("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36", 3.0, true, false, true),
    // Chrome on iOS is WebKit: Sec-Fetch-* only from iOS 16.4, although it says Chrome.
    b("Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/132.0.6834.78 Mobile/15E148 Safari/604.1", 2.0, true, true, false),
    b("Mozilla/5.0 (iPhone; CPU iPhone OS 16_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1", 0.15, false, true, false),
    b("Mozilla/5.0 (Android 14; Mobile; rv:134.0) Gecko/134.0 Firefox/134.0", 0.5, true, false, false),
    b("Mozilla/5.0 (iPad; CPU OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1", 1.5, true, true, false),
];

/// In-app browsers of social apps (their own cookie jar: our cookie never persists).
const IN_APP: [&str; 3] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/22C152 Instagram 361.0.0.35.82 (iPhone14,5; iOS 18_2; en_US; en; scale=3.00; 1170x2532; 672535977)",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.135 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/492.0.0.53.73;]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/21G93 [FBAN/FBIOS;FBAV/492.0.0.45.107;FBBV/665418223;FBDV/iPhone13,2;FBMD/iPhone;FBSN/iOS;FBSV/17.6;FBSS/3;FBCR/;FBID/phone;FBLC/en_US;FBOP/5]",
];

/// Crawlers that follow links on content sites, and link-preview fetchers of social apps
/// and messengers (invalid clicks, never a conversion).
const CRAWLERS: [&str; 4] = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
];
const LINK_PREVIEWS: [&str; 2] = [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "WhatsApp/2.24.25.78 A",
];

/// Automated clients that say so.
const BOT_UAS: [&str; 6] = [
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
];

const LANGUAGES: [(&str, f64); 9] = [
    ("en-US,en;q=0.9", 30.0),
    ("en-GB,en;q=0.9", 18.0),
    ("de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", 15.0),
    ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", 10.0),
    ("es-ES,es;q=0.9", 7.0),
    ("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7", 5.0),
    ("it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7", 5.0),
    ("pl-PL,pl;q=0.9,en-US;q=0.8,en;q=0.7", 3.0),
    ("en-US", 7.0),
];

const MAIL_PROVIDERS: [&str; 8] = [
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "gmx.de",
    "orange.fr",
];

/// First octets of residential ISP blocks (the rest is drawn).
const RESIDENTIAL_V4: [u8; 14] = [2, 24, 31, 67, 73, 76, 79, 81, 84, 86, 90, 92, 109, 176];

/// Mobile carriers' NAT pools (the first three octets of each /24; every address used). A
/// carrier's NAT address is shared by hundreds of its subscribers at once; for this
/// program's audience that makes a handful of its visitors per address over the month,
/// now and then two on the same day with the same phone and language.
const CARRIER_POOLS: [[&str; 4]; 6] = [
    ["31.94.16", "31.94.17", "31.94.40", "31.94.41"],
    ["80.187.96", "80.187.97", "80.187.112", "80.187.113"],
    ["92.40.128", "92.40.129", "92.40.176", "92.40.177"],
    ["176.12.64", "176.12.65", "176.12.80", "176.12.81"],
    ["185.69.144", "185.69.145", "185.69.146", "185.69.147"],
    ["109.144.208", "109.144.209", "109.144.210", "109.144.211"],
];

/// iCloud Private Relay egress (shared by many users; not a data-centre list entry).
const RELAY_POOLS: [&str; 4] = ["172.226.41", "172.226.42", "172.226.108", "172.226.109"];

/// Data-centre ranges the configuration lists: hosting where bots run, and hosting where
/// commercial VPNs rent their exits.
pub const DATACENTER_RANGES: [&str; 8] = [
    "3.80.0.0/12",
    "34.64.0.0/10",
    "104.248.0.0/16",
    "138.197.0.0/16",
    "149.56.0.0/16",
    "37.120.128.0/17",
    "89.187.160.0/19",
    "185.159.156.0/22",
];
/// Where the bots of this model run (a subset of the list).
const BOT_HOSTING: [&str; 4] = ["3.84", "34.72", "104.248", "138.197"];
/// Where VPN exits are (a subset of the list).
const VPN_EXITS: [&str; 3] = ["37.120.200", "89.187.170", "185.159.157"];

/// Blocked ranges (known abusive networks).
pub const BLOCKED_RANGES: [&str; 2] = ["45.155.205.0/24", "193.42.33.0/24"];

fn residential_ip(r: &mut Rand) -> String {
    if r.chance(0.18) {
        // A household's IPv6 address.
        format!(
            "2a02:{:x}:{:x}:{:x}::{:x}",
            r.between(0x800, 0x8ff),
            r.between(1, 0xffff),
            r.between(1, 0xffff),
            r.between(1, 0xffff)
        )
    } else {
        format!(
            "{}.{}.{}.{}",
            r.pick(&RESIDENTIAL_V4),
            r.between(0, 255),
            r.between(0, 255),
            r.between(1, 254)
        )
    }
}

fn carrier_ip(r: &mut Rand, carrier: usize) -> String {
    if r.chance(0.35) {
        // IPv6 on mobile: one /64 per phone, drawn per session.
        format!(
            "2607:fb90:{:x}:{:x}::{:x}",
            r.between(0x1000, 0x1fff),
            r.between(1, 0xffff),
            r.between(1, 0xffff)
        )
    } else {
        let pool = CARRIER_POOLS[carrier % CARRIER_POOLS.len()];
        format!("{}.{}", r.pick(&pool), r.between(1, 254))
    }
}

fn hosting_ip(r: &mut Rand, prefixes: &[&str]) -> String {
    let p = r.pick(prefixes);
    let dots = p.matches('.').count();
    let mut ip = p.to_string();
    for _ in dots..3 {
        let _ = write!(ip, ".{}", r.between(1, 254));
    }
    ip
}

/// One browser of a person (a phone, a laptop): its cookie jar too.
#[derive(Debug, Clone)]
struct Device {
    browser: Browser,
    mobile: bool,
    /// Our visitor cookie and when it was set.
    cookie: Option<(String, i64)>,
}

#[derive(Debug, Clone)]
struct Person {
    id: u64,
    email: String,
    home_ip: String,
    language: &'static str,
    desktop: Option<Device>,
    phone: Option<Device>,
    carrier: usize,
    /// Uses a commercial VPN (desktop, most of the time).
    vpn: bool,
    /// iCloud Private Relay on the iPhone.
    relay: bool,
    /// An ad or tracker blocker that blocks our impression pixel.
    blocks_pixels: bool,
    /// Clears cookies (or browses privately): our cookie never comes back.
    clears_cookies: bool,
}

fn pick_browser(r: &mut Rand, list: &[Browser]) -> Browser {
    let w: Vec<f64> = list.iter().map(|b| b.weight).collect();
    list[r.weighted(&w)]
}

fn new_person(r: &mut Rand, id: u64) -> Person {
    let has_desktop = r.chance(0.7);
    let has_phone = !has_desktop || r.chance(0.8);
    let desktop = has_desktop.then(|| Device {
        browser: pick_browser(r, &DESKTOP),
        mobile: false,
        cookie: None,
    });
    let phone = has_phone.then(|| Device {
        browser: pick_browser(r, &MOBILE),
        mobile: true,
        cookie: None,
    });
    let w: Vec<f64> = LANGUAGES.iter().map(|l| l.1).collect();
    let language = LANGUAGES[r.weighted(&w)].0;
    let iphone = phone.as_ref().is_some_and(|p| p.browser.safari);
    Person {
        id,
        email: format!(
            "u{:x}@{}",
            splitmix(id) & 0xff_ffff_ffff,
            r.pick(&MAIL_PROVIDERS)
        ),
        home_ip: residential_ip(r),
        language,
        desktop,
        phone,
        carrier: r.below(CARRIER_POOLS.len()),
        vpn: r.chance(0.025),
        relay: iphone && r.chance(0.06),
        blocks_pixels: r.chance(0.08),
        clears_cookies: r.chance(0.15),
    }
}

impl Person {
    /// The device used for a click: a phone with probability `mobile` when it has one.
    fn device(&mut self, r: &mut Rand, mobile: f64) -> &mut Device {
        let want_phone = r.chance(mobile);
        match (want_phone, self.phone.is_some(), self.desktop.is_some()) {
            (true, true, _) | (false, true, false) => self.phone.as_mut().unwrap(),
            _ => self.desktop.as_mut().unwrap(),
        }
    }

    /// The address a device is seen from now.
    fn ip(&self, r: &mut Rand, mobile: bool) -> String {
        if !mobile {
            if self.vpn && r.chance(0.7) {
                return hosting_ip(r, &VPN_EXITS);
            }
            return self.home_ip.clone();
        }
        if self.relay {
            return format!("{}.{}", r.pick(&RELAY_POOLS), r.between(1, 254));
        }
        if r.chance(0.5) {
            self.home_ip.clone() // home Wi-Fi
        } else {
            carrier_ip(r, self.carrier)
        }
    }
}

/// The cookie a device sends with a click at `at` (none when it has none, it expired or
/// the person clears cookies); afterwards the device holds one (the server set it).
fn visitor_cookie(r: &mut Rand, d: &mut Device, clears: bool, at: i64) -> Option<String> {
    let lifetime = if d.browser.safari { 7 } else { 30 } * DAY_US;
    let sent = match &d.cookie {
        Some((v, set)) if !clears && at - set < lifetime && at >= *set => Some(v.clone()),
        _ => None,
    };
    let value = sent.clone().unwrap_or_else(|| r.hex(24));
    d.cookie = Some((value, at));
    sent
}

// ---------------------------------------------------------------------------------------
// The program as generated

struct Names {
    id: &'static str,
    name: &'static str,
    site: &'static str,
}

const fn n(id: &'static str, name: &'static str, site: &'static str) -> Names {
    Names { id, name, site }
}

const CONTENT: [Names; 12] = [
    n("trailtested", "Trail Tested", "trailtested.example"),
    n("gadgetpulse", "Gadget Pulse", "gadgetpulse.example"),
    n("kitchenedit", "The Kitchen Edit", "thekitchenedit.example"),
    n(
        "wanderlust-notes",
        "Wanderlust Notes",
        "wanderlust-notes.example",
    ),
    n("style-diaries", "Style Diaries", "style-diaries.example"),
    n(
        "homebrew-guides",
        "Homebrew Guides",
        "homebrew-guides.example",
    ),
    n("petcare-picks", "Petcare Picks", "petcare-picks.example"),
    n("fitfam-reviews", "Fitfam Reviews", "fitfam-reviews.example"),
    n(
        "bookworm-corner",
        "Bookworm Corner",
        "bookworm-corner.example",
    ),
    n("parenting-hub", "Parenting Hub", "parentinghub.example"),
    n("techradar-lite", "Techradar Lite", "techradar-lite.example"),
    n("glowguide", "Glow Guide", "glowguide.example"),
];
const COUPON: [Names; 8] = [
    n("savvycodes", "Savvy Codes", "savvycodes.example"),
    n("dealspotter", "Deal Spotter", "dealspotter.example"),
    n("voucherbox", "Voucher Box", "voucherbox.example"),
    n("couponbirds", "Coupon Birds", "couponbirds.example"),
    n("promoking", "Promo King", "promoking.example"),
    n("cheapcodes", "Cheap Codes", "cheapcodes.example"),
    n(
        "discountdragon",
        "Discount Dragon",
        "discountdragon.example",
    ),
    n("offerland", "Offerland", "offerland.example"),
];
const EMAIL: [Names; 6] = [
    n(
        "morning-deals",
        "Morning Deals Letter",
        "morningdeals.example",
    ),
    n("weekend-picks", "Weekend Picks", "weekendpicks.example"),
    n("tech-digest", "Tech Digest", "techdigest.example"),
    n("frugal-friday", "Frugal Friday", "frugalfriday.example"),
    n("travel-insider", "Travel Insider", "travelinsider.example"),
    n("style-drop", "Style Drop", "styledrop.example"),
];
const SOCIAL: [Names; 6] = [
    n("lena-styles", "@lena.styles", "lenastyles.example"),
    n("techwithtom", "@techwithtom", "techwithtom.example"),
    n("wanderwithmia", "@wanderwithmia", "wanderwithmia.example"),
    n("glowbyana", "@glowbyana", "glowbyana.example"),
    n("dadhacks", "@dadhacks", "dadhacks.example"),
    n("fitjules", "@fitjules", "fitjules.example"),
];

// Campaign indices.
const C_FASHION: usize = 0;
const C_DISPLAY: usize = 1;
const C_ELECTRONICS: usize = 2;
const C_TRAVEL: usize = 3;
const C_BEAUTY: usize = 4;
const C_SOFTWARE: usize = 5;
const C_GROCERY: usize = 6;

fn merchants(r: &mut Rand) -> Vec<Merchant> {
    // A shop's counter: anywhere from a new shop (1001, Shopify's first number) to an
    // old one, log-uniform.
    let mut counter = || (1001.0 * (2000.0f64).powf(r.unit())) as u64;
    vec![
        Merchant {
            id: "northwind-fashion",
            name: "Northwind Fashion",
            domain: "northwind-fashion.example",
            order_ids: OrderIds::Prefixed("NW"),
            order_eur: 65.0,
            orders_per_day: 900.0,
            counter_start: 0,
        },
        Merchant {
            id: "voltix",
            name: "Voltix Electronics",
            domain: "voltix.example",
            order_ids: OrderIds::Sequential,
            order_eur: 180.0,
            orders_per_day: 600.0,
            counter_start: counter(),
        },
        Merchant {
            id: "farewind",
            name: "Farewind Travel",
            domain: "farewind.example",
            order_ids: OrderIds::Booking,
            order_eur: 420.0,
            orders_per_day: 300.0,
            counter_start: 0,
        },
        Merchant {
            id: "lumen-beauty",
            name: "Lumen Beauty",
            domain: "lumen-beauty.example",
            order_ids: OrderIds::Sequential,
            order_eur: 45.0,
            orders_per_day: 300.0,
            counter_start: counter(),
        },
        Merchant {
            id: "cloudnote",
            name: "Cloudnote",
            domain: "cloudnote.example",
            order_ids: OrderIds::Uuid,
            order_eur: 0.0,
            orders_per_day: 2000.0,
            counter_start: 0,
        },
        Merchant {
            id: "basketful",
            name: "Basketful Grocery",
            domain: "basketful.example",
            order_ids: OrderIds::Sequential,
            order_eur: 55.0,
            orders_per_day: 1500.0,
            counter_start: counter(),
        },
    ]
}

fn campaigns() -> Vec<Campaign> {
    let c = |id, merchant, name, paid_search, requires_impression, leads, cr_factor| Campaign {
        id,
        merchant,
        name,
        paid_search,
        requires_impression,
        leads,
        cr_factor,
    };
    vec![
        c(
            "fashion",
            0,
            "Northwind: all fashion",
            true,
            false,
            false,
            1.0,
        ),
        c(
            "fashion-display",
            0,
            "Northwind: display banners",
            false,
            true,
            false,
            0.6,
        ),
        c(
            "electronics",
            1,
            "Voltix: brand protected",
            false,
            false,
            false,
            0.7,
        ),
        c("travel", 2, "Farewind: bookings", true, false, false, 0.5),
        c(
            "beauty",
            3,
            "Lumen: brand protected",
            false,
            false,
            false,
            1.1,
        ),
        c(
            "software-trial",
            4,
            "Cloudnote: free trial sign-ups",
            true,
            false,
            true,
            1.8,
        ),
        c(
            "grocery",
            5,
            "Basketful: first and repeat orders",
            true,
            false,
            false,
            1.2,
        ),
    ]
}

/// Draws `k` distinct campaigns of `from` (in the order drawn).
fn some_campaigns(r: &mut Rand, from: &[usize], k: usize) -> Vec<usize> {
    let mut pool = from.to_vec();
    let mut out = Vec::new();
    while out.len() < k && !pool.is_empty() {
        out.push(pool.swap_remove(r.below(pool.len())));
    }
    out
}

/// Weights of a heavy-tailed split (a few big affiliates, many small ones), summing to 1.
fn heavy_tail(r: &mut Rand, k: usize) -> Vec<f64> {
    let w: Vec<f64> = (0..k).map(|_| r.lognormal(1.0, 0.9)).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|x| x / total).collect()
}

/// Real clicks by kind over the 28 days at scale 1.
const CONTENT_CLICKS: f64 = 56_000.0;
const COUPON_CLICKS: f64 = 32_000.0;
const EMAIL_CLICKS: f64 = 25_000.0;
const SOCIAL_CLICKS: f64 = 20_000.0;

fn legit_affiliate(r: &mut Rand, kind: Kind, names: &Names, clicks: f64, i: usize) -> Affiliate {
    let site = names.site.to_string();
    let (cr, campaigns, sites, email) = match kind {
        Kind::Content => {
            let mut c = {
                let k = 2 + r.below(2);
                some_campaigns(
                    r,
                    &[
                        C_FASHION,
                        C_ELECTRONICS,
                        C_TRAVEL,
                        C_BEAUTY,
                        C_SOFTWARE,
                        C_GROCERY,
                    ],
                    k,
                )
            };
            if i < 3 {
                c.push(C_DISPLAY); // runs our banners
            }
            let mut sites = vec![site.clone()];
            if r.chance(0.3) {
                sites.push(format!("blog.{site}"));
            }
            (r.uniform(0.02, 0.045), c, sites, format!("editor@{site}"))
        }
        Kind::Coupon => (
            r.uniform(0.035, 0.05),
            {
                let k = 3 + r.below(3);
                some_campaigns(
                    r,
                    &[
                        C_FASHION,
                        C_ELECTRONICS,
                        C_BEAUTY,
                        C_GROCERY,
                        C_TRAVEL,
                        C_SOFTWARE,
                    ],
                    k,
                )
            },
            vec![site.clone()],
            format!("partners@{site}"),
        ),
        Kind::Email => (
            r.uniform(0.015, 0.035),
            {
                let k = 2 + r.below(2);
                some_campaigns(
                    r,
                    &[
                        C_FASHION,
                        C_ELECTRONICS,
                        C_TRAVEL,
                        C_BEAUTY,
                        C_SOFTWARE,
                        C_GROCERY,
                    ],
                    k,
                )
            },
            Vec::new(),
            format!("hello@{site}"),
        ),
        Kind::Social | Kind::Fraud => (
            r.uniform(0.01, 0.03),
            {
                let k = 2 + r.below(2);
                some_campaigns(r, &[C_FASHION, C_BEAUTY, C_TRAVEL, C_GROCERY], k)
            },
            Vec::new(),
            format!("{}@gmail.com", names.id.replace('-', ".")),
        ),
    };
    let mut a = Affiliate {
        id: names.id.to_string(),
        name: names.name.to_string(),
        kind,
        fraud: Vec::new(),
        sites,
        email,
        // The addresses the network saw the partner log in from.
        ips: vec![residential_ip(r)],
        campaigns,
        clicks,
        cr,
        unregistered: None,
        platforms: Vec::new(),
    };
    match kind {
        Kind::Content if r.chance(0.25) => {
            a.unregistered = Some(if r.chance(0.5) {
                "https://www.pinterest.com/"
            } else {
                "https://www.youtube.com/"
            });
        }
        Kind::Social => {
            use Platform::*;
            let all = [
                (Instagram, "instagram.com"),
                (Facebook, "facebook.com"),
                (X, "x.com"),
                (TikTok, "tiktok.com"),
                (Pinterest, "pinterest.com"),
            ];
            let k = 1 + r.below(3);
            for j in some_campaigns(r, &[0, 1, 2, 3, 4], k) {
                a.platforms.push((all[j].0, r.uniform(0.3, 1.0)));
                a.sites.push(all[j].1.to_string());
            }
            // One in three registered only a blog, not the platforms it posts on.
            if r.chance(0.33) {
                a.sites = vec![site.clone()];
            }
            // The network also saw this one log in from its phone (a carrier NAT address).
            if i == 0 {
                a.ips.push(carrier_ip(r, 0));
            }
        }
        _ => {}
    }
    a
}

fn fraud_affiliate(
    id: &str,
    name: &str,
    site: &str,
    fraud: Pattern,
    campaigns: Vec<usize>,
) -> Affiliate {
    Affiliate {
        id: id.to_string(),
        name: name.to_string(),
        kind: Kind::Fraud,
        fraud: vec![fraud],
        sites: vec![site.to_string()],
        email: format!("ops@{site}"),
        ips: Vec::new(),
        campaigns,
        clicks: 0.0,
        cr: 0.0,
        unregistered: None,
        platforms: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// The generator

struct Gen {
    seed: u64,
    scale: f64,
    start: i64,
    end: i64,
    merchants: Vec<Merchant>,
    campaigns: Vec<Campaign>,
    affiliates: Vec<Affiliate>,
    links: Vec<Link>,
    link_of: HashMap<(usize, usize), usize>,
    events: Vec<Event>,
    next_person: u64,
}

/// A click to generate.
struct Slot {
    at: i64,
    affiliate: usize,
    campaign: usize,
    channel: Channel,
}

#[derive(Debug, Clone, Copy)]
enum Channel {
    Site,
    Unregistered(&'static str),
    SearchAd,
    Email,
    Social(Platform),
    Crawler,
    Preview,
    /// A mixed affiliate's fraudulent click of a pattern.
    Fraud(Pattern),
}

impl Gen {
    fn rand(&self, stream: u64) -> Rand {
        Rand::new(self.seed, stream)
    }

    fn person(&mut self, r: &mut Rand) -> Person {
        self.next_person += 1;
        new_person(r, self.next_person)
    }

    /// A time in the period, by the hour-of-day profile.
    fn steady_time(&self, r: &mut Rand) -> i64 {
        let day = r.between(0, DAYS - 1);
        let hour = r.weighted(&DIURNAL) as i64;
        let t = self.start + day * DAY_US + hour * HOUR_US + r.between(0, HOUR_US - 1);
        t.min(self.end - 1)
    }

    fn count(&self, r: &mut Rand, at_scale_1: f64) -> u64 {
        r.round(at_scale_1 * self.scale).max(1)
    }

    fn link(&self, affiliate: usize, campaign: usize) -> usize {
        self.link_of[&(affiliate, campaign)]
    }

    fn push(
        &mut self,
        at: i64,
        label: Option<Pattern>,
        variant: &'static str,
        affiliate: usize,
        body: Body,
    ) -> usize {
        self.events.push(Event {
            at_us: at,
            r#ref: String::new(),
            label,
            variant,
            affiliate,
            body,
        });
        self.events.len() - 1
    }

    fn click(&mut self, at: i64, label: Option<Pattern>, variant: &'static str, v: Visit) -> usize {
        let a = self.links[v.link].affiliate;
        self.push(at, label, variant, a, Body::Click(v))
    }

    /// A conversion of click `click` at `at` (dropped when after the end or outside the
    /// cookie window); answers its index.
    #[allow(clippy::too_many_arguments)]
    fn sale(
        &mut self,
        r: &mut Rand,
        click: usize,
        at: i64,
        label: Option<Pattern>,
        variant: &'static str,
        person: &Person,
        ip: String,
        user_agent: String,
        order: Order,
    ) -> Option<usize> {
        let click_at = self.events[click].at_us;
        if at >= self.end || at < click_at || at - click_at > COOKIE_WINDOW_DAYS * DAY_US {
            return None;
        }
        let Body::Click(v) = &self.events[click].body else {
            return None;
        };
        let link = &self.links[v.link];
        let affiliate = link.affiliate;
        let camp = &self.campaigns[link.campaign];
        let merchant = camp.merchant;
        let (event, amount_minor) = if camp.leads {
            ("lead", 0)
        } else {
            let eur = r
                .lognormal(self.merchants[merchant].order_eur, 0.6)
                .max(3.0);
            ("sale", (eur * 100.0).round() as i64)
        };
        let customer_id = r.chance(0.65).then(|| {
            format!(
                "{}",
                splitmix(person.id ^ ((merchant as u64) << 48)) % 90_000_000 + 10_000_000
            )
        });
        let s = Sale {
            merchant,
            click,
            order,
            event,
            amount_minor,
            customer_id,
            email: person.email.clone(),
            ip,
            user_agent,
        };
        Some(self.push(at, label, variant, affiliate, Body::Conversion(s)))
    }

    /// A real browser's visit of a link: the person's device, address, language, cookie.
    #[allow(clippy::too_many_arguments)]
    fn browser_visit(
        &mut self,
        r: &mut Rand,
        p: &mut Person,
        mobile: f64,
        link: usize,
        at: i64,
        referrer: String,
    ) -> (Visit, String, bool) {
        let clears = p.clears_cookies;
        let d = p.device(r, mobile);
        let is_mobile = d.mobile;
        let browser = d.browser;
        let visitor_id = visitor_cookie(r, d, clears, at);
        let ip = p.ip(r, is_mobile);
        let site = if referrer.is_empty() {
            "none"
        } else {
            "cross-site"
        };
        let v = Visit {
            link,
            ip: ip.clone(),
            user_agent: browser.ua.to_string(),
            referrer,
            accept_language: p.language.to_string(),
            sec_fetch_dest: if browser.sec_fetch { "document" } else { "" },
            sec_fetch_site: if browser.sec_fetch { site } else { "" },
            visitor_id,
            sub1: None,
            query: Vec::new(),
        };
        (v, ip, is_mobile)
    }

    /// The buyer's address and user agent for a purchase `ctit` after a click.
    fn buyer(
        &self,
        r: &mut Rand,
        p: &Person,
        click_ip: &str,
        ua: &str,
        mobile: bool,
        ctit: i64,
    ) -> (String, String) {
        if ctit < 2 * HOUR_US || r.chance(0.55) {
            let ip = if ctit < 2 * HOUR_US && !(mobile && r.chance(0.2)) {
                click_ip.to_string()
            } else {
                p.ip(r, mobile)
            };
            return (ip, ua.to_string());
        }
        // Bought later on the other device.
        let other = if mobile { &p.desktop } else { &p.phone };
        match other {
            Some(d) => (p.ip(r, d.mobile), d.browser.ua.to_string()),
            None => (p.ip(r, mobile), ua.to_string()),
        }
    }
}

/// Click-to-conversion time of a real visit, by the affiliate's kind.
fn human_ctit(r: &mut Rand, kind: Kind) -> i64 {
    let s = match kind {
        // Read a review, buy in the same session; or come back within days.
        Kind::Content => {
            if r.chance(0.7) {
                r.lognormal(12.0 * 60.0, 1.0)
            } else {
                r.lognormal(1.5 * 86_400.0, 1.0)
            }
        }
        // Already at the checkout, fetching a code: tens of seconds to minutes.
        Kind::Coupon => {
            if r.chance(0.9) {
                4.0 + r.lognormal(70.0, 0.85)
            } else {
                r.lognormal(3.0 * 3600.0, 1.2)
            }
        }
        Kind::Email => {
            if r.chance(0.45) {
                r.lognormal(20.0 * 60.0, 1.0)
            } else {
                r.lognormal(14.0 * 3600.0, 1.1)
            }
        }
        Kind::Social | Kind::Fraud => {
            if r.chance(0.55) {
                r.lognormal(15.0 * 60.0, 1.0)
            } else {
                r.lognormal(1.2 * 86_400.0, 1.1)
            }
        }
    };
    (s * SECOND_US as f64) as i64
}

/// A page URL on a made-up publisher (pop-unders, redirect chains).
fn random_page(r: &mut Rand) -> String {
    const WORDS: [&str; 10] = [
        "freemovies",
        "streamhub",
        "lyricsworld",
        "quizzy",
        "newsflash",
        "gamecheats",
        "torrentz",
        "wallpaperz",
        "recipesdaily",
        "horoscope",
    ];
    format!("https://{}{}.example/", r.pick(&WORDS), r.between(1, 60))
}

fn sub_slug(r: &mut Rand) -> String {
    const SLUGS: [&str; 8] = [
        "best-of-2025",
        "review",
        "gift-guide",
        "top-10",
        "comparison",
        "how-to",
        "deal-alert",
        "weekly-roundup",
    ];
    format!("{}-{}", r.pick(&SLUGS), r.between(1, 40))
}

impl Gen {
    // --- real traffic --------------------------------------------------------------------

    /// The clicks of affiliate `a`'s real traffic, by its kind's time profile.
    fn slots_of(&self, r: &mut Rand, a: usize) -> Vec<Slot> {
        let aff = &self.affiliates[a];
        let n = r.round(aff.clicks * self.scale);
        let mut raw: Vec<(i64, usize, Channel)> = Vec::new();
        let camp_w: Vec<f64> = (0..aff.campaigns.len())
            .map(|i| 1.0 / (1.0 + i as f64))
            .collect();
        let campaign = |r: &mut Rand| aff.campaigns[r.weighted(&camp_w)];
        match aff.kind {
            Kind::Content | Kind::Coupon => {
                for _ in 0..n {
                    let t = self.steady_time(r);
                    let c = campaign(r);
                    let ch = match aff.unregistered {
                        Some(u) if r.chance(0.1) => Channel::Unregistered(u),
                        _ if aff.kind == Kind::Coupon
                            && self.campaigns[c].paid_search
                            && r.chance(0.1) =>
                        {
                            Channel::SearchAd // allowed: the campaign lets partners bid
                        }
                        _ => Channel::Site,
                    };
                    raw.push((t, c, ch));
                }
                // A content site's article goes viral once in a while.
                if aff.kind == Kind::Content && r.chance(0.3) {
                    let day = r.between(2, DAYS - 1);
                    let factor = r.uniform(3.0, 8.0);
                    let extra = r.round(n as f64 / DAYS as f64 * factor);
                    let t0 = self.start + day * DAY_US + r.between(8, 20) * HOUR_US;
                    let c = campaign(r);
                    for _ in 0..extra {
                        let t = t0 + r.exponential(4.0 * HOUR_US as f64) as i64;
                        raw.push((t, c, Channel::Site));
                    }
                }
            }
            Kind::Email => {
                // Weekly or twice-weekly sends; most clicks within hours of a send.
                let twice = r.chance(0.4);
                let first = r.between(0, 6);
                let hour = *r.pick(&[6i64, 7, 8, 16, 17]);
                let mut sends = Vec::new();
                let mut d = first;
                while d < DAYS {
                    sends.push(d);
                    if twice && d + 3 < DAYS {
                        sends.push(d + 3);
                    }
                    d += 7;
                }
                let per = n as f64 / sends.len() as f64;
                for (k, day) in sends.iter().enumerate() {
                    let t0 =
                        self.start + day * DAY_US + hour * HOUR_US + r.between(0, 30) * MINUTE_US;
                    let c = aff.campaigns[k % aff.campaigns.len()];
                    let factor = r.uniform(0.6, 1.4);
                    let m = r.round(per * factor);
                    for _ in 0..m {
                        let delay = if r.chance(0.6) {
                            r.exponential(2.0 * HOUR_US as f64)
                        } else {
                            r.exponential(18.0 * HOUR_US as f64)
                        };
                        raw.push((t0 + delay as i64, c, Channel::Email));
                    }
                }
            }
            Kind::Social => {
                // Posts two to four times a week; a link in the bio gets a trickle.
                let per_week = r.uniform(2.0, 4.0);
                let posts = r.round(per_week * 4.0).max(1);
                let weights: Vec<f64> = (0..posts).map(|_| r.lognormal(1.0, 0.8)).collect();
                let total: f64 = weights.iter().sum();
                let pw: Vec<f64> = aff.platforms.iter().map(|p| p.1).collect();
                for w in &weights {
                    let t0 = self.steady_time(r);
                    let c = campaign(r);
                    let platform = aff.platforms[r.weighted(&pw)].0;
                    let m = r.round(n as f64 * 0.8 * w / total);
                    for _ in 0..m {
                        let t = t0 + r.exponential(5.0 * HOUR_US as f64) as i64;
                        raw.push((t, c, Channel::Social(platform)));
                    }
                }
                for _ in 0..r.round(n as f64 * 0.2) {
                    let platform = aff.platforms[r.weighted(&pw)].0;
                    let t = self.steady_time(r);
                    raw.push((t, campaign(r), Channel::Social(platform)));
                }
            }
            Kind::Fraud => {}
        }
        // Crawlers follow links on sites; link previews fetch links posted on social.
        let mut invalid = Vec::new();
        for (t, c, _) in &raw {
            match aff.kind {
                Kind::Content if r.chance(0.01) => {
                    invalid.push((t + 7 * MINUTE_US, *c, Channel::Crawler))
                }
                Kind::Social if r.chance(0.006) => {
                    invalid.push((t + 11 * SECOND_US, *c, Channel::Preview))
                }
                _ => {}
            }
        }
        raw.extend(invalid);
        raw.into_iter()
            .filter(|(t, _, _)| *t >= self.start && *t < self.end)
            .map(|(at, campaign, channel)| Slot {
                at,
                affiliate: a,
                campaign,
                channel,
            })
            .collect()
    }

    /// Mixed affiliates: part of their real-looking slots are a fraud pattern.
    fn mix_in(&self, r: &mut Rand, slots: &mut [Slot]) {
        for s in slots.iter_mut() {
            let aff = &self.affiliates[s.affiliate];
            if aff.fraud.is_empty() || !matches!(s.channel, Channel::Site | Channel::Social(_)) {
                continue;
            }
            for p in &aff.fraud {
                let share = match p {
                    Pattern::BrandBidding if !self.campaigns[s.campaign].paid_search => 0.2,
                    Pattern::StuffingHidden => 0.1,
                    Pattern::DatacenterIp => 0.15,
                    Pattern::BotUserAgent => 0.03,
                    _ => 0.0,
                };
                if r.chance(share) {
                    s.channel = Channel::Fraud(*p);
                    break;
                }
            }
        }
    }

    fn referrer_for(
        &self,
        r: &mut Rand,
        a: usize,
        ch: Channel,
    ) -> (String, Vec<(&'static str, String)>, &'static str) {
        let aff = &self.affiliates[a];
        let own = || format!("https://{}/", aff.sites.first().map_or("", String::as_str));
        match ch {
            Channel::Site => {
                // Most sites send only their origin (the default referrer policy); a few
                // send nothing (no-referrer policy, privacy tools).
                let x = r.unit();
                let rf = if x < 0.05 {
                    String::new()
                } else if x < 0.2 {
                    format!("{}{}", own(), sub_slug(r))
                } else {
                    own()
                };
                (rf, Vec::new(), "site")
            }
            Channel::Unregistered(u) => (u.to_string(), Vec::new(), "unregistered-channel"),
            Channel::SearchAd => (
                "https://www.google.com/".into(),
                vec![("gclid", format!("Cj0KCQiA{}", r.base64url(60)))],
                "allowed-search-ad",
            ),
            Channel::Email => {
                let x = r.unit();
                let rf = if x < 0.75 {
                    ""
                } else if x < 0.87 {
                    "https://mail.google.com/"
                } else if x < 0.92 {
                    "android-app://com.google.android.gm/"
                } else if x < 0.97 {
                    "https://outlook.live.com/"
                } else {
                    "https://mail.yahoo.com/"
                };
                let q = vec![
                    ("utm_source", aff.id.clone()),
                    ("utm_medium", "email".to_string()),
                ];
                (rf.to_string(), q, "newsletter")
            }
            Channel::Social(p) => {
                let x = r.unit();
                let (rf, fbclid) = match p {
                    Platform::Facebook => (
                        if x < 0.6 {
                            "https://l.facebook.com/"
                        } else if x < 0.75 {
                            "https://m.facebook.com/"
                        } else {
                            ""
                        },
                        r.chance(0.9),
                    ),
                    Platform::Instagram => (
                        if x < 0.5 {
                            "https://l.instagram.com/"
                        } else {
                            ""
                        },
                        r.chance(0.85),
                    ),
                    Platform::X => (if x < 0.9 { "https://t.co/" } else { "" }, false),
                    Platform::TikTok => (
                        if x < 0.3 {
                            "https://www.tiktok.com/"
                        } else {
                            ""
                        },
                        false,
                    ),
                    Platform::Pinterest => (
                        if x < 0.8 {
                            "https://www.pinterest.com/"
                        } else {
                            ""
                        },
                        false,
                    ),
                };
                let mut q = Vec::new();
                if fbclid {
                    q.push(("fbclid", format!("IwAR{}", r.base64url(54))));
                }
                (rf.to_string(), q, "social")
            }
            Channel::Crawler | Channel::Preview | Channel::Fraud(_) => (own(), Vec::new(), "site"),
        }
    }

    /// Every affiliate's real traffic, in time order with shared people: one in eight
    /// clicks is by someone who clicked before (another site, a coupon before buying, a
    /// repeat purchase).
    fn real_traffic(&mut self) {
        let mut slots = Vec::new();
        for a in 0..self.affiliates.len() {
            let mut r = self.rand(1_000 + a as u64);
            let mut s = self.slots_of(&mut r, a);
            self.mix_in(&mut r, &mut s);
            slots.extend(s);
        }
        slots.sort_by_key(|s| (s.at, s.affiliate));
        let mut r = self.rand(2);
        let mut people: Vec<Person> = Vec::new();
        let mut recent: VecDeque<usize> = VecDeque::new();
        for s in slots {
            let pi = if !recent.is_empty() && r.chance(0.12) {
                recent[r.below(recent.len())]
            } else {
                let p = self.person(&mut r);
                people.push(p);
                people.len() - 1
            };
            recent.push_back(pi);
            if recent.len() > 5_000 {
                recent.pop_front();
            }
            let mut p = people[pi].clone();
            self.real_click(&mut r, &mut p, s);
            people[pi] = p;
        }
    }

    fn real_click(&mut self, r: &mut Rand, p: &mut Person, s: Slot) {
        let (kind, cr) = (
            self.affiliates[s.affiliate].kind,
            self.affiliates[s.affiliate].cr,
        );
        let link = self.link(s.affiliate, s.campaign);
        let (requires_impression, cr_factor) = (
            self.campaigns[s.campaign].requires_impression,
            self.campaigns[s.campaign].cr_factor,
        );
        match s.channel {
            Channel::Crawler | Channel::Preview => {
                let ua = if matches!(s.channel, Channel::Crawler) {
                    r.pick(&CRAWLERS).to_string()
                } else {
                    r.pick(&LINK_PREVIEWS).to_string()
                };
                let v = Visit {
                    link,
                    ip: format!("66.249.{}.{}", r.between(64, 79), r.between(1, 254)),
                    user_agent: ua,
                    ..Visit::default()
                };
                let variant = if matches!(s.channel, Channel::Crawler) {
                    "crawler"
                } else {
                    "link-preview"
                };
                self.click(s.at, Some(Pattern::BotUserAgent), variant, v);
                return;
            }
            Channel::Fraud(pattern) => {
                self.mixed_fraud_click(r, p, s.at, link, pattern);
                return;
            }
            _ => {}
        }
        let mobile = match (kind, s.channel) {
            (_, Channel::Social(_)) => 0.85,
            (Kind::Email, _) => 0.55,
            (Kind::Coupon, _) => 0.45,
            _ => 0.55,
        };
        let (referrer, query, variant) = self.referrer_for(r, s.affiliate, s.channel);
        let (mut v, ip, is_mobile) = self.browser_visit(r, p, mobile, link, s.at, referrer);
        v.query = query;
        v.sub1 = match s.channel {
            Channel::Site | Channel::Unregistered(_) => Some(sub_slug(r)),
            Channel::Email => Some(format!("nl-{}", (s.at - self.start) / DAY_US)),
            Channel::Social(pl) => Some(format!("{pl:?}").to_lowercase()),
            _ => None,
        };
        // Social apps open links in their own browser.
        if matches!(
            s.channel,
            Channel::Social(Platform::Instagram | Platform::Facebook)
        ) && is_mobile
            && r.chance(0.6)
        {
            v.user_agent = r.pick(&IN_APP).to_string();
            v.visitor_id = None;
            v.sec_fetch_dest = "document";
            v.sec_fetch_site = if v.referrer.is_empty() {
                "none"
            } else {
                "cross-site"
            };
        }
        if requires_impression && !p.blocks_pixels {
            let mut imp = v.clone();
            imp.sec_fetch_dest = if v.sec_fetch_dest.is_empty() {
                ""
            } else {
                "image"
            };
            imp.sec_fetch_site = if v.sec_fetch_dest.is_empty() {
                ""
            } else {
                "cross-site"
            };
            // A third-party cookie: only Chromium still sends it.
            let chromium = p
                .phone
                .iter()
                .chain(p.desktop.iter())
                .any(|d| d.browser.ua == v.user_agent && d.browser.chromium);
            if !chromium {
                imp.visitor_id = None;
            }
            let before = (r.lognormal(40.0, 1.2).clamp(1.0, 1800.0) * SECOND_US as f64) as i64;
            self.push(
                s.at - before,
                None,
                "banner",
                s.affiliate,
                Body::Impression(imp),
            );
        }
        let ua = v.user_agent.clone();
        let click = self.click(s.at, None, variant, v);
        if r.chance(cr * cr_factor) {
            let ctit = human_ctit(r, kind);
            let (bip, bua) = self.buyer(r, p, &ip, &ua, is_mobile, ctit);
            self.sale(
                r,
                click,
                s.at + ctit,
                None,
                variant,
                p,
                bip,
                bua,
                Order::Fresh,
            );
        }
    }

    /// A mixed affiliate's fraudulent click among its real ones.
    fn mixed_fraud_click(
        &mut self,
        r: &mut Rand,
        p: &mut Person,
        at: i64,
        link: usize,
        pattern: Pattern,
    ) {
        match pattern {
            Pattern::BrandBidding => {
                let idx = self.brand_click(r, p, at, link);
                self.brand_sale(r, p, idx);
            }
            Pattern::StuffingHidden => {
                let own = self.affiliates[self.links[link].affiliate].sites[0].clone();
                self.hidden_stuff(r, p, at, link, &own);
            }
            Pattern::DatacenterIp => {
                let mut v = self.bot_visit(r, link, true);
                v.ip = hosting_ip(r, &BOT_HOSTING);
                v.user_agent = pick_browser(r, &MOBILE).ua.to_string();
                self.click(at, Some(Pattern::DatacenterIp), "bought-clicks", v);
            }
            _ => {
                let mut v = self.bot_visit(r, link, false);
                v.user_agent = BOT_UAS[4].to_string();
                self.click(at, Some(Pattern::BotUserAgent), "bought-clicks", v);
            }
        }
    }

    // --- fraud ---------------------------------------------------------------------------

    /// A scripted visit with browser headers (or, `full = false`, a library's).
    fn bot_visit(&self, r: &mut Rand, link: usize, full: bool) -> Visit {
        let aff = &self.affiliates[self.links[link].affiliate];
        let w: Vec<f64> = LANGUAGES.iter().map(|l| l.1).collect();
        Visit {
            link,
            ip: residential_ip(r),
            user_agent: pick_browser(r, &DESKTOP).ua.to_string(),
            referrer: format!("https://{}/", aff.sites.first().map_or("", String::as_str)),
            accept_language: if full {
                LANGUAGES[r.weighted(&w)].0.to_string()
            } else {
                String::new()
            },
            sec_fetch_dest: if full { "document" } else { "" },
            sec_fetch_site: if full { "cross-site" } else { "" },
            visitor_id: None,
            sub1: None,
            query: Vec::new(),
        }
    }

    /// A lead by whoever is behind a scripted click (click farms fill forms too).
    fn lead(
        &mut self,
        r: &mut Rand,
        click: usize,
        after_s: f64,
        label: Pattern,
        variant: &'static str,
    ) {
        let Body::Click(v) = &self.events[click].body else {
            return;
        };
        let (ip, ua) = (v.ip.clone(), v.user_agent.clone());
        let mut p = self.person(r);
        p.email = format!(
            "{}{}@{}",
            r.alnum_upper(6).to_lowercase(),
            r.between(1, 999),
            r.pick(&[
                "mailinator.com",
                "guerrillamail.com",
                "gmail.com",
                "yopmail.com"
            ])
        );
        let at = self.events[click].at_us + (r.lognormal(after_s, 0.6) * SECOND_US as f64) as i64;
        self.sale(r, click, at, Some(label), variant, &p, ip, ua, Order::Fresh);
    }

    fn campaign_of(&self, a: usize, r: &mut Rand) -> usize {
        *r.pick(&self.affiliates[a].campaigns)
    }

    fn flood_ip(&mut self, a: usize) {
        let mut r = self.rand(10);
        for _ in 0..self.count(&mut r, 40.0) {
            let t0 = self.steady_time(&mut r);
            let ip = residential_ip(&mut r);
            let c = if r.chance(0.7) { C_SOFTWARE } else { C_GROCERY };
            let link = self.link(a, c);
            let dur = r.between(40, 120) * SECOND_US;
            for _ in 0..r.between(15, 80) {
                let mut v = self.bot_visit(&mut r, link, true);
                v.ip = ip.clone();
                let at = (t0 + r.between(0, dur)).min(self.end - 1);
                let k = self.click(at, Some(Pattern::FloodIp), "click-bot", v);
                if self.campaigns[c].leads && r.chance(0.025) {
                    self.lead(&mut r, k, 240.0, Pattern::FloodIp, "click-bot");
                }
            }
        }
    }

    fn flood_subnet(&mut self, a: usize) {
        let mut r = self.rand(11);
        let farms: Vec<String> = (0..2)
            .map(|_| format!("103.{}.{}", r.between(0, 255), r.between(0, 255)))
            .collect();
        let phones: Vec<&'static str> =
            MOBILE.iter().filter(|b| b.chromium).map(|b| b.ua).collect();
        for _ in 0..self.count(&mut r, 25.0) {
            let t0 = self.steady_time(&mut r);
            let farm = r.pick(&farms).clone();
            let c = if r.chance(0.6) { C_SOFTWARE } else { C_FASHION };
            let link = self.link(a, c);
            let dur = r.between(60, 90) * SECOND_US;
            for _ in 0..r.between(50, 150) {
                let host = r.between(2, 254);
                let mut v = self.bot_visit(&mut r, link, true);
                v.ip = format!("{farm}.{host}");
                v.user_agent = phones[host as usize % phones.len()].to_string();
                v.accept_language = "en-US,en;q=0.9".into();
                let at = (t0 + r.between(0, dur)).min(self.end - 1);
                let k = self.click(at, Some(Pattern::FloodSubnet), "phone-farm", v);
                if self.campaigns[c].leads && r.chance(0.02) {
                    self.lead(&mut r, k, 300.0, Pattern::FloodSubnet, "phone-farm");
                }
            }
        }
    }

    /// Malware re-firing links on one device (`keeps_cookie = false`: a fresh web view each
    /// time, so one device fingerprint; `true`: in the user's browser, with our cookie).
    /// The owner's own purchase later is credited to the last of them.
    fn device_flood(&mut self, a: usize, pattern: Pattern, devices: f64, keeps_cookie: bool) {
        let mut r = self.rand(if keeps_cookie { 13 } else { 12 });
        for _ in 0..self.count(&mut r, devices) {
            let mut p = self.person(&mut r);
            p.clears_cookies = !keeps_cookie;
            p.vpn = false;
            let mobile = if keeps_cookie { 0.0 } else { 0.5 };
            let mut clicks: Vec<usize> = Vec::new();
            let bursts = r.between(3, 8);
            for _ in 0..bursts {
                let t0 = self.steady_time(&mut r);
                let c = self.campaign_of(a, &mut r);
                let link = self.link(a, c);
                let (n, dur) = if keeps_cookie {
                    (r.between(6, 9), r.between(20, 50))
                } else {
                    (r.between(11, 30), r.between(20, 55))
                };
                let dev = p.device(&mut r, mobile).clone();
                let ip = p.ip(&mut r, dev.mobile);
                let mut times: Vec<i64> = (0..n)
                    .map(|_| (t0 + r.between(0, dur * SECOND_US)).min(self.end - 1))
                    .collect();
                times.sort_unstable();
                for at in times {
                    let d = p.device(&mut r, if dev.mobile { 1.0 } else { 0.0 });
                    let visitor_id = visitor_cookie(&mut r, d, !keeps_cookie, at);
                    let v = Visit {
                        link,
                        ip: ip.clone(),
                        user_agent: dev.browser.ua.to_string(),
                        referrer: String::new(),
                        accept_language: p.language.to_string(),
                        sec_fetch_dest: if dev.browser.sec_fetch {
                            "document"
                        } else {
                            ""
                        },
                        sec_fetch_site: if dev.browser.sec_fetch { "none" } else { "" },
                        visitor_id,
                        sub1: None,
                        query: Vec::new(),
                    };
                    clicks.push(self.click(
                        at,
                        Some(pattern),
                        if keeps_cookie {
                            "extension"
                        } else {
                            "webview-malware"
                        },
                        v,
                    ));
                }
            }
            if r.chance(0.35) {
                let first = clicks
                    .iter()
                    .map(|k| self.events[*k].at_us)
                    .min()
                    .unwrap_or(self.start);
                let at = r.between(first, self.end - 1);
                let last = clicks
                    .iter()
                    .copied()
                    .filter(|k| self.events[*k].at_us < at)
                    .max_by_key(|k| self.events[*k].at_us);
                if let Some(k) = last {
                    let Body::Click(v) = &self.events[k].body else {
                        continue;
                    };
                    let (ip, ua) = (v.ip.clone(), v.user_agent.clone());
                    self.sale(
                        &mut r,
                        k,
                        at,
                        Some(pattern),
                        "hijacked-organic",
                        &p,
                        ip,
                        ua,
                        Order::Fresh,
                    );
                }
            }
        }
    }

    /// A real affiliate that buys pop-under traffic for a few hours, twice.
    fn spike(&mut self, a: usize) {
        let mut r = self.rand(14);
        for _ in 0..2 {
            let t0 = self.start + r.between(4, DAYS - 2) * DAY_US + r.between(8, 20) * HOUR_US;
            let hours = r.between(3, 6);
            // A pop-under buy: a few thousand clicks, delivered within hours.
            let bought = r.uniform(1_500.0, 4_000.0);
            let n = r.round(bought * self.scale);
            for _ in 0..n {
                let at = t0 + r.between(0, hours * HOUR_US - 1);
                let c = self.campaign_of(a, &mut r);
                let link = self.link(a, c);
                let mut p = self.person(&mut r);
                let referrer = if r.chance(0.8) {
                    random_page(&mut r)
                } else {
                    String::new()
                };
                let (v, ip, mobile) = self.browser_visit(&mut r, &mut p, 0.7, link, at, referrer);
                let ua = v.user_agent.clone();
                let k = self.click(at, Some(Pattern::ClickSpike), "pop-under", v);
                if r.chance(0.004) {
                    let later = at + r.between(0, COOKIE_WINDOW_DAYS * DAY_US);
                    let (bip, bua) = self.buyer(&mut r, &p, &ip, &ua, mobile, later - at);
                    self.sale(
                        &mut r,
                        k,
                        later,
                        Some(Pattern::ClickSpike),
                        "pop-under",
                        &p,
                        bip,
                        bua,
                        Order::Fresh,
                    );
                }
            }
        }
    }

    fn bots(&mut self, a: usize, pattern: Pattern, n: f64) {
        let mut r = self.rand(20 + pattern as u64);
        for _ in 0..self.count(&mut r, n) {
            let at = self.steady_time(&mut r);
            let c = self.campaign_of(a, &mut r);
            let link = self.link(a, c);
            let (v, variant) = match pattern {
                Pattern::BotUserAgent => {
                    let mut v = self.bot_visit(&mut r, link, false);
                    v.user_agent = r.pick(&BOT_UAS).to_string();
                    if v.user_agent.contains("Headless") {
                        v = Visit {
                            user_agent: v.user_agent,
                            ..self.bot_visit(&mut r, link, true)
                        };
                    }
                    if r.chance(0.4) {
                        v.ip = hosting_ip(&mut r, &BOT_HOSTING);
                    }
                    (v, "form-bot")
                }
                Pattern::MissingHeaders => {
                    let mut v = self.bot_visit(&mut r, link, false);
                    v.user_agent = DESKTOP[0].ua.to_string();
                    if r.chance(0.5) {
                        v.referrer.clear();
                    }
                    (v, "spoofed-chrome")
                }
                Pattern::DatacenterIp => {
                    let mut v = self.bot_visit(&mut r, link, true);
                    v.ip = hosting_ip(&mut r, &BOT_HOSTING);
                    (v, "cloud-browser")
                }
                _ => {
                    let mut v = self.bot_visit(&mut r, link, true);
                    let range = r.pick(&BLOCKED_RANGES);
                    v.ip = format!(
                        "{}.{}",
                        range.rsplit_once('.').unwrap().0,
                        r.between(1, 254)
                    );
                    (v, "blocked-network")
                }
            };
            let k = self.click(at, Some(pattern), variant, v);
            if self.campaigns[c].leads && r.chance(0.02) {
                self.lead(&mut r, k, 40.0, pattern, variant);
            }
        }
    }

    /// A browser extension that fires the affiliate's link on the merchant's checkout page:
    /// the user was buying anyway.
    fn injection(&mut self, a: usize) {
        let mut r = self.rand(30);
        let purchases = self.count(&mut r, 90.0);
        let abandoned = self.count(&mut r, 60.0);
        for i in 0..purchases + abandoned {
            let mut p = self.person(&mut r);
            let buy = self.steady_time(&mut r);
            let ctit = (r.lognormal(6.0, 0.8).max(0.5) * SECOND_US as f64) as i64;
            let at = (buy - ctit).max(self.start);
            let c = self.campaign_of(a, &mut r);
            let link = self.link(a, c);
            let m = &self.merchants[self.campaigns[c].merchant];
            let referrer = format!(
                "https://{}/{}",
                m.domain,
                if r.chance(0.6) { "checkout" } else { "cart" }
            );
            let (v, ip, _) = self.browser_visit(&mut r, &mut p, 0.1, link, at, referrer);
            let ua = v.user_agent.clone();
            let k = self.click(at, Some(Pattern::ClickInjection), "checkout-extension", v);
            if i < purchases {
                self.sale(
                    &mut r,
                    k,
                    buy,
                    Some(Pattern::ClickInjection),
                    "checkout-extension",
                    &p,
                    ip,
                    ua,
                    Order::Fresh,
                );
            }
        }
    }

    /// Clicks fired for everyone a pop-under or ad SDK reaches: the few who buy anything in
    /// the next 30 days are credited, at any time.
    fn click_spamming(&mut self, a: usize) {
        let mut r = self.rand(31);
        for _ in 0..self.count(&mut r, 20_000.0) {
            let at = self.steady_time(&mut r);
            let c = self.campaign_of(a, &mut r);
            let link = self.link(a, c);
            let mut p = self.person(&mut r);
            let referrer = if r.chance(0.7) {
                random_page(&mut r)
            } else {
                String::new()
            };
            let (v, ip, mobile) = self.browser_visit(&mut r, &mut p, 0.8, link, at, referrer);
            let ua = v.user_agent.clone();
            let k = self.click(at, Some(Pattern::ClickSpamming), "ad-sdk", v);
            if r.chance(0.005) {
                let later = at + r.between(0, COOKIE_WINDOW_DAYS * DAY_US);
                let (bip, bua) = self.buyer(&mut r, &p, &ip, &ua, mobile, later - at);
                self.sale(
                    &mut r,
                    k,
                    later,
                    Some(Pattern::ClickSpamming),
                    "ad-sdk",
                    &p,
                    bip,
                    bua,
                    Order::Fresh,
                );
            }
        }
    }

    /// A hidden iframe or image on a page loads the affiliate's link: no cookie of ours is
    /// sent (SameSite=Lax) and the merchant's cookie only sticks in Chromium.
    fn hidden_stuff(&mut self, r: &mut Rand, p: &mut Person, at: i64, link: usize, site: &str) {
        let d = p.device(r, 0.5).clone();
        let ip = p.ip(r, d.mobile);
        let dest = if !d.browser.sec_fetch {
            ""
        } else if r.chance(0.6) {
            "iframe"
        } else {
            "image"
        };
        let v = Visit {
            link,
            ip: ip.clone(),
            user_agent: d.browser.ua.to_string(),
            referrer: format!("https://{site}/"),
            accept_language: p.language.to_string(),
            sec_fetch_dest: dest,
            sec_fetch_site: if dest.is_empty() { "" } else { "cross-site" },
            visitor_id: None,
            sub1: None,
            query: Vec::new(),
        };
        let k = self.click(
            at,
            Some(Pattern::StuffingHidden),
            if dest == "image" { "image" } else { "iframe" },
            v,
        );
        if d.browser.chromium && r.chance(0.008) {
            let ctit = (r.lognormal(2.0 * 86_400.0, 1.2) * SECOND_US as f64) as i64;
            let (bip, bua) = self.buyer(r, p, &ip, d.browser.ua, d.mobile, ctit);
            self.sale(
                r,
                k,
                at + ctit,
                Some(Pattern::StuffingHidden),
                "iframe",
                p,
                bip,
                bua,
                Order::Fresh,
            );
        }
    }

    fn stuffing_hidden(&mut self, a: usize) {
        let mut r = self.rand(32);
        let site = self.affiliates[a].sites[0].clone();
        let mut regulars: Vec<Person> = Vec::new();
        for _ in 0..self.count(&mut r, 8_000.0) {
            let at = self.steady_time(&mut r);
            let c = self.campaign_of(a, &mut r);
            let link = self.link(a, c);
            // A forum's audience comes back.
            let mut p = if !regulars.is_empty() && r.chance(0.5) {
                regulars[r.below(regulars.len())].clone()
            } else {
                let p = self.person(&mut r);
                regulars.push(p.clone());
                p
            };
            self.hidden_stuff(&mut r, &mut p, at, link, &site);
        }
    }

    /// Pop-unders and redirect chains from sites the affiliate never registered.
    fn stuffing_referrer(&mut self, a: usize) {
        let mut r = self.rand(33);
        for _ in 0..self.count(&mut r, 5_000.0) {
            let at = self.steady_time(&mut r);
            let c = self.campaign_of(a, &mut r);
            let link = self.link(a, c);
            let mut p = self.person(&mut r);
            let referrer = if r.chance(0.65) {
                random_page(&mut r)
            } else {
                String::new()
            };
            let (v, ip, mobile) = self.browser_visit(&mut r, &mut p, 0.6, link, at, referrer);
            let ua = v.user_agent.clone();
            let k = self.click(at, Some(Pattern::StuffingReferrer), "redirect-chain", v);
            if r.chance(0.006) {
                let ctit = (r.lognormal(2.0 * 86_400.0, 1.2) * SECOND_US as f64) as i64;
                let (bip, bua) = self.buyer(&mut r, &p, &ip, &ua, mobile, ctit);
                self.sale(
                    &mut r,
                    k,
                    at + ctit,
                    Some(Pattern::StuffingReferrer),
                    "redirect-chain",
                    &p,
                    bip,
                    bua,
                    Order::Fresh,
                );
            }
        }
    }

    /// Text links (and worse) on a display-only campaign: clicks without an impression.
    fn stuffing_no_impression(&mut self, a: usize) {
        let mut r = self.rand(34);
        let site = format!("https://{}/", self.affiliates[a].sites[0]);
        for _ in 0..self.count(&mut r, 1_500.0) {
            let at = self.steady_time(&mut r);
            let link = self.link(a, C_DISPLAY);
            let mut p = self.person(&mut r);
            let (v, ip, mobile) = self.browser_visit(&mut r, &mut p, 0.55, link, at, site.clone());
            let ua = v.user_agent.clone();
            let k = self.click(at, Some(Pattern::StuffingNoImpression), "text-link", v);
            if r.chance(0.015) {
                let ctit = human_ctit(&mut r, Kind::Content);
                let (bip, bua) = self.buyer(&mut r, &p, &ip, &ua, mobile, ctit);
                self.sale(
                    &mut r,
                    k,
                    at + ctit,
                    Some(Pattern::StuffingNoImpression),
                    "text-link",
                    &p,
                    bip,
                    bua,
                    Order::Fresh,
                );
            }
        }
    }

    /// One page view opens the links of three to five merchants within seconds.
    fn stuffing_many(&mut self, a: usize) {
        let mut r = self.rand(35);
        let site = format!("https://{}/", self.affiliates[a].sites[0]);
        for _ in 0..self.count(&mut r, 800.0) {
            let t0 = self.steady_time(&mut r);
            let mut p = self.person(&mut r);
            let k = r.between(3, 5) as usize;
            let camps = some_campaigns(&mut r, &self.affiliates[a].campaigns.clone(), k);
            let mut at = t0;
            let mut clicks = Vec::new();
            for c in camps {
                let link = self.link(a, c);
                let (v, ip, mobile) =
                    self.browser_visit(&mut r, &mut p, 0.5, link, at, site.clone());
                let ua = v.user_agent.clone();
                clicks.push((
                    self.click(at, Some(Pattern::StuffingManyMerchants), "pop-ups", v),
                    ip,
                    ua,
                    mobile,
                ));
                at += r.between(100, 1_200) * 1_000;
            }
            if r.chance(0.025) {
                let (k, ip, ua, mobile) = clicks[r.below(clicks.len())].clone();
                let ctit = (r.lognormal(86_400.0, 1.2) * SECOND_US as f64) as i64;
                let (bip, bua) = self.buyer(&mut r, &p, &ip, &ua, mobile, ctit);
                let at = self.events[k].at_us + ctit;
                self.sale(
                    &mut r,
                    k,
                    at,
                    Some(Pattern::StuffingManyMerchants),
                    "pop-ups",
                    &p,
                    bip,
                    bua,
                    Order::Fresh,
                );
            }
        }
    }

    /// The affiliate buys through its own links: with its own e-mail (now and then a
    /// variant of it), or from its own address.
    fn self_referral(&mut self, a: usize, pattern: Pattern) {
        let mut r = self.rand(40 + pattern as u64);
        let mut owner = self.person(&mut r);
        let registered = self.affiliates[a].email.clone();
        if pattern == Pattern::SelfReferralDevice {
            owner.home_ip = self.affiliates[a].ips[0].clone();
        }
        owner.vpn = false;
        owner.relay = false;
        let n = self.count(
            &mut r,
            if pattern == Pattern::SelfReferralEmail {
                22.0
            } else {
                25.0
            },
        );
        let site = format!("https://{}/", self.affiliates[a].sites[0]);
        for i in 0..n {
            let at = self.steady_time(&mut r);
            let c = self.campaign_of(a, &mut r);
            let link = self.link(a, c);
            let mobile = if pattern == Pattern::SelfReferralDevice {
                0.25
            } else {
                0.5
            };
            let referrer = if r.chance(0.5) {
                site.clone()
            } else {
                String::new()
            };
            let (v, ip, is_mobile) =
                self.browser_visit(&mut r, &mut owner, mobile, link, at, referrer);
            let ua = v.user_agent.clone();
            let variant = if pattern == Pattern::SelfReferralEmail {
                "own-email"
            } else {
                "own-address"
            };
            let k = self.click(at, Some(pattern), variant, v);
            let ctit = (r.lognormal(180.0, 1.0) * SECOND_US as f64) as i64;
            let mut buyer = owner.clone();
            let variant = match pattern {
                Pattern::SelfReferralEmail => {
                    let (local, domain) = registered.split_once('@').unwrap();
                    let x = r.unit();
                    if x < 0.7 {
                        buyer.email = registered.clone();
                        "own-email"
                    } else if x < 0.85 {
                        buyer.email = format!(" {} ", registered.to_uppercase());
                        "own-email-case"
                    } else {
                        buyer.email = if i % 2 == 0 {
                            format!("{local}+{}@{domain}", r.between(1, 99))
                        } else {
                            format!("{}@{domain}", local.replace('.', ""))
                        };
                        "own-email-alias"
                    }
                }
                _ => {
                    buyer.email = format!("family{}@{}", r.between(1, 4), r.pick(&MAIL_PROVIDERS));
                    if ip != owner.home_ip {
                        "own-phone-on-carrier"
                    } else {
                        "own-address"
                    }
                }
            };
            let bip = if is_mobile {
                ip.clone()
            } else {
                owner.home_ip.clone()
            };
            self.sale(
                &mut r,
                k,
                at + ctit,
                Some(pattern),
                variant,
                &buyer,
                bip,
                ua,
                Order::Fresh,
            );
        }
    }

    /// Fabricated conversions (a conversion pixel replayed) reusing order ids the affiliate
    /// saw converted at another merchant.
    fn duplicate_orders(&mut self, a: usize) {
        let mut r = self.rand(50);
        let originals: Vec<usize> = (0..self.events.len())
            .filter(|i| {
                let e = &self.events[*i];
                e.affiliate == a
                    && e.label.is_none()
                    && e.at_us + HOUR_US < self.end
                    && matches!(&e.body, Body::Conversion(s) if s.merchant == self.campaigns[C_GROCERY].merchant)
            })
            .collect();
        let link = self.link(a, C_BEAUTY);
        let mut replayed = 0;
        for (i, &orig) in originals.iter().enumerate() {
            // Six in ten (at least one, however small the scale).
            let last_chance = i + 1 == originals.len() && replayed == 0;
            if !r.chance(0.6) && !last_chance {
                continue;
            }
            replayed += 1;
            let Body::Conversion(s) = &self.events[orig].body else {
                continue;
            };
            let email = s.email.clone();
            let Body::Click(first) = &self.events[s.click].body else {
                continue;
            };
            let (ip, ua, lang) = (
                first.ip.clone(),
                first.user_agent.clone(),
                first.accept_language.clone(),
            );
            let orig_at = self.events[orig].at_us;
            let at = orig_at + r.between(HOUR_US, (72 * HOUR_US).min(self.end - 1 - orig_at));
            let click_at = at - (r.lognormal(300.0, 1.0) * SECOND_US as f64) as i64;
            let v = Visit {
                link,
                ip: ip.clone(),
                user_agent: ua.clone(),
                referrer: format!("https://{}/", self.affiliates[a].sites[0]),
                accept_language: lang,
                sec_fetch_dest: "document",
                sec_fetch_site: "cross-site",
                ..Visit::default()
            };
            let k = self.click(click_at, Some(Pattern::DuplicateOrder), "pixel-replay", v);
            let mut p = self.person(&mut r);
            p.email = email;
            self.sale(
                &mut r,
                k,
                at,
                Some(Pattern::DuplicateOrder),
                "pixel-replay",
                &p,
                ip,
                ua,
                Order::Reuse(orig),
            );
        }
    }

    /// Customers who split one basket into many orders, each on a fresh click (a bonus or
    /// cashback per order).
    fn repeat_customers(&mut self, a: usize) {
        let mut r = self.rand(51);
        let site = format!("https://{}/", self.affiliates[a].sites[0]);
        for _ in 0..self.count(&mut r, 8.0) {
            let mut p = self.person(&mut r);
            let c = if r.chance(0.7) { C_GROCERY } else { C_FASHION };
            let link = self.link(a, c);
            let start = self.steady_time(&mut r);
            let span = r.between(2, 10) * HOUR_US;
            let customer = format!("{}", r.between(10_000_000, 99_999_999));
            let mut times: Vec<i64> = (0..r.between(3, 6))
                .map(|_| start + r.between(0, span))
                .collect();
            times.sort_unstable();
            for buy in times {
                let at = buy - (r.lognormal(90.0, 0.7) * SECOND_US as f64) as i64;
                let (v, ip, _) = self.browser_visit(&mut r, &mut p, 0.3, link, at, site.clone());
                let ua = v.user_agent.clone();
                let k = self.click(at, Some(Pattern::RepeatCustomer), "split-orders", v);
                if let Some(i) = self.sale(
                    &mut r,
                    k,
                    buy,
                    Some(Pattern::RepeatCustomer),
                    "split-orders",
                    &p,
                    ip,
                    ua,
                    Order::Fresh,
                ) {
                    if let Body::Conversion(s) = &mut self.events[i].body {
                        s.customer_id = Some(customer.clone());
                    }
                }
            }
        }
    }

    /// A search ad on the merchant's brand, straight to the tracking link (Google or Bing
    /// auto-tagging), or laundered through the affiliate's own page (no trace).
    fn brand_click(&mut self, r: &mut Rand, p: &mut Person, at: i64, link: usize) -> usize {
        let x = r.unit();
        let site = format!(
            "https://{}/",
            self.affiliates[self.links[link].affiliate].sites[0]
        );
        let (referrer, query, variant): (String, Vec<(&'static str, String)>, &'static str) =
            if x < 0.75 {
                (
                    "https://www.google.com/".into(),
                    vec![("gclid", format!("Cj0KCQiA{}", r.base64url(60)))],
                    "google-ads",
                )
            } else if x < 0.9 {
                (
                    "https://www.bing.com/".into(),
                    vec![("msclkid", r.hex(32))],
                    "bing-ads",
                )
            } else {
                (site, Vec::new(), "laundered")
            };
        let (mut v, _, _) = self.browser_visit(r, p, 0.4, link, at, referrer);
        v.query = query;
        self.click(at, Some(Pattern::BrandBidding), variant, v)
    }

    fn brand_sale(&mut self, r: &mut Rand, p: &Person, click: usize) {
        if !r.chance(0.06) {
            return;
        }
        let ctit = if r.chance(0.85) {
            r.lognormal(240.0, 1.0)
        } else {
            r.lognormal(6.0 * 3600.0, 1.0)
        };
        let ctit = (ctit * SECOND_US as f64) as i64;
        let Body::Click(v) = &self.events[click].body else {
            return;
        };
        let (ip, ua) = (v.ip.clone(), v.user_agent.clone());
        let variant = self.events[click].variant;
        let at = self.events[click].at_us + ctit;
        self.sale(
            r,
            click,
            at,
            Some(Pattern::BrandBidding),
            variant,
            p,
            ip,
            ua,
            Order::Fresh,
        );
    }

    fn brand_bidding(&mut self, a: usize) {
        let mut r = self.rand(52);
        for _ in 0..self.count(&mut r, 1_500.0) {
            let at = self.steady_time(&mut r);
            let c = self.campaign_of(a, &mut r);
            let link = self.link(a, c);
            let mut p = self.person(&mut r);
            let k = self.brand_click(&mut r, &mut p, at, link);
            self.brand_sale(&mut r, &p, k);
        }
    }

    // --- order ids, refs -----------------------------------------------------------------

    /// Sorts the events by time, names them and gives every conversion its order id.
    fn finish(&mut self) {
        let mut order: Vec<usize> = (0..self.events.len()).collect();
        order.sort_by_key(|i| (self.events[*i].at_us, *i));
        let mut position = vec![0; order.len()];
        for (pos, i) in order.iter().enumerate() {
            position[*i] = pos;
        }
        let mut slots: Vec<Option<Event>> = std::mem::take(&mut self.events)
            .into_iter()
            .map(Some)
            .collect();
        let mut events: Vec<Event> = order.iter().map(|i| slots[*i].take().unwrap()).collect();
        let mut r = self.rand(3);
        let mut counters: Vec<u64> = vec![0; self.merchants.len()];
        let mut used: std::collections::HashSet<(usize, String)> = Default::default();
        let (mut nk, mut ni, mut nv) = (0u32, 0u32, 0u32);
        for pos in 0..events.len() {
            let reused = match &events[pos].body {
                Body::Conversion(Sale {
                    order: Order::Reuse(orig),
                    ..
                }) => match &events[position[*orig]].body {
                    Body::Conversion(Sale {
                        order: Order::Id(id),
                        ..
                    }) => Some(id.clone()),
                    _ => None,
                },
                _ => None,
            };
            let at = events[pos].at_us;
            let e = &mut events[pos];
            match &mut e.body {
                Body::Click(_) => {
                    nk += 1;
                    e.r#ref = format!("k{nk:07}");
                }
                Body::Impression(_) => {
                    ni += 1;
                    e.r#ref = format!("i{ni:07}");
                }
                Body::Conversion(s) => {
                    nv += 1;
                    e.r#ref = format!("v{nv:07}");
                    s.click = position[s.click];
                    let m = &self.merchants[s.merchant];
                    let id = match reused {
                        Some(id) => id,
                        None => loop {
                            let id = match m.order_ids {
                                OrderIds::Prefixed(p) => format!("{p}{}", r.alnum_upper(8)),
                                OrderIds::Booking => r.alnum_upper(6),
                                OrderIds::Uuid => {
                                    let h = r.hex(32);
                                    format!(
                                        "{}-{}-4{}-a{}-{}",
                                        &h[..8],
                                        &h[8..12],
                                        &h[13..16],
                                        &h[17..20],
                                        &h[20..]
                                    )
                                }
                                OrderIds::Sequential => {
                                    let c = &mut counters[s.merchant];
                                    let since = (at - self.start) as f64 / DAY_US as f64;
                                    let n = m.counter_start + (since * m.orders_per_day) as u64;
                                    *c = n.max(*c + 1);
                                    c.to_string()
                                }
                            };
                            if !used.contains(&(s.merchant, id.clone())) {
                                break id;
                            }
                        },
                    };
                    used.insert((s.merchant, id.clone()));
                    s.order = Order::Id(id);
                }
            }
        }
        self.events = events;
    }
}

/// Generates the program and its traffic: the 28 whole UTC days before the day of
/// `end_us` (so hours of the day are UTC hours, and two runs on one day generate the same
/// events at the same times), volumes times `scale`.
pub fn generate(seed: u64, scale: f64, end_us: i64) -> Traffic {
    let scale = scale.max(0.0);
    let end = end_us - end_us.rem_euclid(DAY_US);
    let mut r = Rand::new(seed, 0);
    let mut g = Gen {
        seed,
        scale,
        start: end - DAYS * DAY_US,
        end,
        merchants: merchants(&mut r),
        campaigns: campaigns(),
        affiliates: Vec::new(),
        links: Vec::new(),
        link_of: HashMap::new(),
        events: Vec::new(),
        next_person: 0,
    };
    // Thirty-two legitimate affiliates of four kinds, volumes heavy-tailed within a kind.
    for (kind, names, total) in [
        (Kind::Content, &CONTENT[..], CONTENT_CLICKS),
        (Kind::Coupon, &COUPON[..], COUPON_CLICKS),
        (Kind::Email, &EMAIL[..], EMAIL_CLICKS),
        (Kind::Social, &SOCIAL[..], SOCIAL_CLICKS),
    ] {
        let w = heavy_tail(&mut r, names.len());
        for (i, nm) in names.iter().enumerate() {
            let a = legit_affiliate(&mut r, kind, nm, total * w[i], i);
            g.affiliates.push(a);
        }
    }
    // Real affiliates that also cheat, and the affiliates that only cheat.
    let mixed = |r: &mut Rand, kind: Kind, id, name, site, clicks: f64, fraud: Vec<Pattern>| {
        let names = Names { id, name, site };
        let mut a = legit_affiliate(r, kind, &names, clicks, 99);
        a.fraud = fraud;
        a
    };
    use Pattern::*;
    let more = vec![
        mixed(
            &mut r,
            Kind::Content,
            "urban-runner",
            "Urban Runner",
            "urbanrunner.example",
            7_000.0,
            vec![ClickSpike],
        ),
        mixed(
            &mut r,
            Kind::Coupon,
            "codehunter",
            "Code Hunter",
            "codehunter.example",
            4_000.0,
            vec![BrandBidding],
        ),
        mixed(
            &mut r,
            Kind::Content,
            "dealnerd",
            "Deal Nerd",
            "dealnerd.example",
            3_000.0,
            vec![StuffingHidden],
        ),
        mixed(
            &mut r,
            Kind::Social,
            "viralvibes",
            "@viralvibes",
            "viralvibes.example",
            3_000.0,
            vec![DatacenterIp, BotUserAgent],
        ),
        mixed(
            &mut r,
            Kind::Content,
            "budgetmom",
            "Budget Mom",
            "budgetmom.example",
            1_500.0,
            vec![SelfReferralEmail],
        ),
        mixed(
            &mut r,
            Kind::Content,
            "gadgetgarage",
            "Gadget Garage",
            "gadgetgarage.example",
            1_500.0,
            vec![SelfReferralDevice],
        ),
        mixed(
            &mut r,
            Kind::Content,
            "homeandpantry",
            "Home and Pantry",
            "homeandpantry.example",
            2_500.0,
            vec![DuplicateOrder],
        ),
        mixed(
            &mut r,
            Kind::Coupon,
            "cashbackkings",
            "Cashback Kings",
            "cashbackkings.example",
            2_500.0,
            vec![RepeatCustomer],
        ),
    ];
    g.affiliates.extend(more);
    let fixups: Vec<(&str, Vec<usize>)> = vec![
        (
            "codehunter",
            vec![C_ELECTRONICS, C_BEAUTY, C_FASHION, C_GROCERY],
        ),
        ("budgetmom", vec![C_GROCERY, C_FASHION, C_BEAUTY]),
        ("gadgetgarage", vec![C_ELECTRONICS, C_SOFTWARE]),
        ("homeandpantry", vec![C_GROCERY, C_BEAUTY]),
        ("cashbackkings", vec![C_GROCERY, C_FASHION, C_BEAUTY]),
    ];
    for (id, camps) in fixups {
        if let Some(a) = g.affiliates.iter_mut().find(|a| a.id == id) {
            a.campaigns = camps;
        }
    }
    if let Some(a) = g.affiliates.iter_mut().find(|a| a.id == "budgetmom") {
        a.email = "jane.doe@gmail.com".into();
    }
    let dedicated = vec![
        fraud_affiliate(
            "quickleads",
            "Quickleads Media",
            "quickleads.example",
            FloodIp,
            vec![C_SOFTWARE, C_GROCERY],
        ),
        fraud_affiliate(
            "clickfarm-partners",
            "Bestoffers Hub",
            "bestoffers-hub.example",
            FloodSubnet,
            vec![C_SOFTWARE, C_FASHION],
        ),
        fraud_affiliate(
            "appboost",
            "AppBoost Rewards",
            "appboost.example",
            FloodFingerprint,
            vec![C_FASHION, C_BEAUTY, C_ELECTRONICS],
        ),
        fraud_affiliate(
            "shoptoolbar",
            "Shop Toolbar",
            "shoptoolbar.example",
            FloodVisitor,
            vec![C_FASHION, C_GROCERY, C_TRAVEL],
        ),
        fraud_affiliate(
            "freebies-now",
            "Freebies Now",
            "freebies-now.example",
            BotUserAgent,
            vec![C_SOFTWARE],
        ),
        fraud_affiliate(
            "leadgen-pro",
            "Leadgen Pro",
            "leadgen-pro.example",
            MissingHeaders,
            vec![C_SOFTWARE, C_GROCERY],
        ),
        fraud_affiliate(
            "quizrewards",
            "Quiz Rewards",
            "quizrewards.example",
            DatacenterIp,
            vec![C_SOFTWARE, C_FASHION],
        ),
        fraud_affiliate(
            "winprizes",
            "Win Prizes",
            "winprizes.example",
            BlockedIp,
            vec![C_SOFTWARE],
        ),
        fraud_affiliate(
            "dealfinder",
            "DealFinder Extension",
            "dealfinder.example",
            ClickInjection,
            vec![C_FASHION, C_ELECTRONICS, C_BEAUTY, C_TRAVEL, C_GROCERY],
        ),
        fraud_affiliate(
            "adxchange",
            "Mobile Ad Exchange",
            "adxchange.example",
            ClickSpamming,
            vec![C_FASHION, C_GROCERY],
        ),
        fraud_affiliate(
            "dealsforum",
            "Deals Forum",
            "dealsforum.example",
            StuffingHidden,
            vec![C_ELECTRONICS, C_FASHION],
        ),
        fraud_affiliate(
            "couponpopper",
            "Coupon Popper",
            "couponpopper.example",
            StuffingReferrer,
            vec![C_BEAUTY, C_GROCERY],
        ),
        fraud_affiliate(
            "bannerbypass",
            "Banner Bypass",
            "bannerbypass.example",
            StuffingNoImpression,
            vec![C_DISPLAY],
        ),
        fraud_affiliate(
            "megacashback",
            "Mega Cashback",
            "megacashback.example",
            StuffingManyMerchants,
            vec![C_FASHION, C_ELECTRONICS, C_BEAUTY, C_GROCERY, C_TRAVEL],
        ),
        fraud_affiliate(
            "toppromo",
            "Top Promo Codes",
            "toppromocodes.example",
            BrandBidding,
            vec![C_ELECTRONICS, C_BEAUTY],
        ),
    ];
    g.affiliates.extend(dedicated);
    for (a, aff) in g.affiliates.iter().enumerate() {
        for &c in &aff.campaigns {
            let code = format!("{}-{}", aff.id, g.campaigns[c].id);
            g.link_of.insert((a, c), g.links.len());
            g.links.push(Link {
                code,
                affiliate: a,
                campaign: c,
            });
        }
    }
    g.real_traffic();
    let by_id = |g: &Gen, id: &str| g.affiliates.iter().position(|a| a.id == id).unwrap();
    let fraud_of = |g: &Gen, p: Pattern| {
        g.affiliates
            .iter()
            .position(|a| a.kind == Kind::Fraud && a.fraud == [p])
            .unwrap()
    };
    g.flood_ip(fraud_of(&g, FloodIp));
    g.flood_subnet(fraud_of(&g, FloodSubnet));
    g.device_flood(
        fraud_of(&g, FloodFingerprint),
        FloodFingerprint,
        25.0,
        false,
    );
    g.device_flood(fraud_of(&g, FloodVisitor), FloodVisitor, 15.0, true);
    g.spike(by_id(&g, "urban-runner"));
    g.bots(fraud_of(&g, BotUserAgent), BotUserAgent, 1_500.0);
    g.bots(fraud_of(&g, MissingHeaders), MissingHeaders, 1_200.0);
    g.bots(fraud_of(&g, DatacenterIp), DatacenterIp, 1_200.0);
    g.bots(fraud_of(&g, BlockedIp), BlockedIp, 500.0);
    g.injection(fraud_of(&g, ClickInjection));
    g.click_spamming(fraud_of(&g, ClickSpamming));
    g.stuffing_hidden(fraud_of(&g, StuffingHidden));
    g.stuffing_referrer(fraud_of(&g, StuffingReferrer));
    g.stuffing_no_impression(fraud_of(&g, StuffingNoImpression));
    g.stuffing_many(fraud_of(&g, StuffingManyMerchants));
    g.self_referral(by_id(&g, "budgetmom"), SelfReferralEmail);
    g.self_referral(by_id(&g, "gadgetgarage"), SelfReferralDevice);
    g.duplicate_orders(by_id(&g, "homeandpantry"));
    g.repeat_customers(by_id(&g, "cashbackkings"));
    g.brand_bidding(fraud_of(&g, BrandBidding));
    g.finish();
    Traffic {
        seed,
        scale,
        start_us: g.start,
        end_us: g.end,
        merchants: g.merchants,
        campaigns: g.campaigns,
        affiliates: g.affiliates,
        links: g.links,
        events: g.events,
    }
}

// ---------------------------------------------------------------------------------------
// Rendering: configuration, import lines, labels

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn toml_list(xs: &[String]) -> String {
    let items: Vec<String> = xs.iter().map(|x| toml_str(x)).collect();
    format!("[{}]", items.join(", "))
}

/// A JSON object written field by field.
#[derive(Debug, Default)]
struct JsonObject(String);

impl JsonObject {
    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        push_json_str(&mut self.0, k);
        self.0.push(':');
    }

    fn text(&mut self, k: &str, v: &str) {
        self.key(k);
        push_json_str(&mut self.0, v);
    }

    fn raw(&mut self, k: &str, json: &str) {
        self.key(k);
        self.0.push_str(json);
    }

    fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `"12.34"` for 1234 minor units.
pub fn amount_text(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, (minor % 100).abs())
}

/// How many of what was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub clicks: u64,
    pub impressions: u64,
    pub conversions: u64,
    pub fraud_clicks: u64,
    pub fraud_conversions: u64,
    pub affiliates: u64,
    pub legit_affiliates: u64,
    pub mixed_affiliates: u64,
    pub fraud_affiliates: u64,
    /// Clicks and conversions per label (`legit` or a pattern).
    pub by_label: std::collections::BTreeMap<String, [u64; 2]>,
    /// Legitimate clicks and conversions per source (the affiliate's kind; `-mixed` when
    /// the affiliate also cheats).
    pub legit_by_source: std::collections::BTreeMap<String, [u64; 2]>,
}

impl Traffic {
    /// The server's configuration: the program, an admin key, the range lists.
    pub fn config_toml(&self, admin_key: &str, click_id_key: &str) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# clicktrail fraud eval: seed {}, scale {}\n[node]\nid = 1\n\n[secrets]\nclick-id-key = {}\n",
            self.seed,
            self.scale,
            toml_str(click_id_key)
        );
        let dc: Vec<String> = DATACENTER_RANGES.iter().map(|s| s.to_string()).collect();
        let blocked: Vec<String> = BLOCKED_RANGES.iter().map(|s| s.to_string()).collect();
        let _ = writeln!(
            t,
            "[fraud]\ndatacenter-ranges = {}\nblocked-ranges = {}\n",
            toml_list(&dc),
            toml_list(&blocked)
        );
        for m in &self.merchants {
            let _ = writeln!(
                t,
                "[[merchants]]\nid = {}\nname = {}\n",
                toml_str(m.id),
                toml_str(m.name)
            );
        }
        for a in &self.affiliates {
            let _ = writeln!(
                t,
                "[[affiliates]]\nid = {}\nname = {}\nsites = {}\nemail = {}\nips = {}\n",
                toml_str(&a.id),
                toml_str(&a.name),
                toml_list(&a.sites),
                toml_str(&a.email),
                toml_list(&a.ips)
            );
        }
        for c in &self.campaigns {
            let m = &self.merchants[c.merchant];
            let _ = writeln!(
                t,
                "[[campaigns]]\nid = {}\nmerchant-id = {}\nname = {}\ndestination-url = {}\npaid-search = {}\nrequires-impression = {}\n",
                toml_str(c.id),
                toml_str(m.id),
                toml_str(c.name),
                toml_str(&format!("https://{}/", m.domain)),
                c.paid_search,
                c.requires_impression
            );
        }
        for l in &self.links {
            let _ = writeln!(
                t,
                "[[links]]\ncode = {}\naffiliate-id = {}\ncampaign-id = {}\n",
                toml_str(&l.code),
                toml_str(&self.affiliates[l.affiliate].id),
                toml_str(self.campaigns[l.campaign].id)
            );
        }
        let _ = writeln!(
            t,
            "[[keys]]\nrole = \"admin\"\nowner = \"admin\"\nkey = {}",
            toml_str(admin_key)
        );
        t
    }

    /// The import line of an event. A conversion names its click by `click_ref`, or by
    /// `click_id` when the server's id for it is known (an earlier request). Written by
    /// hand: a quarter of a million lines through `serde_json::Value` took ten seconds in
    /// a debug build.
    pub fn import_line(&self, e: &Event, click_id: Option<&str>) -> String {
        let mut o = JsonObject::default();
        o.text("type", e.kind());
        o.text("ref", &e.r#ref);
        o.text("at", &crate::ledger_api::rfc3339(e.at_us));
        match &e.body {
            Body::Click(v) | Body::Impression(v) => {
                o.text("link", &self.links[v.link].code);
                o.text("ip", &v.ip);
                o.text("user_agent", &v.user_agent);
                for (k, x) in [
                    ("referrer", v.referrer.as_str()),
                    ("accept_language", &v.accept_language),
                    ("sec_fetch_dest", v.sec_fetch_dest),
                    ("sec_fetch_site", v.sec_fetch_site),
                    ("visitor_id", v.visitor_id.as_deref().unwrap_or_default()),
                    ("sub1", v.sub1.as_deref().unwrap_or_default()),
                ] {
                    if !x.is_empty() {
                        o.text(k, x);
                    }
                }
                if !v.query.is_empty() {
                    let mut q = JsonObject::default();
                    for (k, x) in &v.query {
                        q.text(k, x);
                    }
                    o.raw("query", &q.finish());
                }
            }
            Body::Conversion(s) => {
                o.text("merchant_id", self.merchants[s.merchant].id);
                if let Order::Id(id) = &s.order {
                    o.text("order_id", id);
                }
                match click_id {
                    Some(id) => o.text("click_id", id),
                    None => o.text("click_ref", &self.events[s.click].r#ref),
                }
                o.text("event", s.event);
                o.text("amount", &amount_text(s.amount_minor));
                o.text("currency", "EUR");
                if let Some(c) = &s.customer_id {
                    o.text("customer_id", c);
                }
                o.text("customer_email", &s.email);
                o.text("ip", &s.ip);
                o.text("user_agent", &s.user_agent);
            }
        }
        o.finish()
    }

    /// Every event's label: `ref,kind,label,variant,affiliate,source`.
    pub fn labels_csv(&self) -> String {
        let mut t = String::from("ref,kind,label,variant,affiliate,source\n");
        for e in &self.events {
            let a = &self.affiliates[e.affiliate];
            let _ = writeln!(
                t,
                "{},{},{},{},{},{}",
                e.r#ref,
                e.kind(),
                e.label.map_or("legit", Pattern::name),
                e.variant,
                a.id,
                a.source()
            );
        }
        t
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            affiliates: self.affiliates.len() as u64,
            ..Counts::default()
        };
        for a in &self.affiliates {
            match (a.kind, a.fraud.is_empty()) {
                (Kind::Fraud, _) => c.fraud_affiliates += 1,
                (_, true) => c.legit_affiliates += 1,
                (_, false) => c.mixed_affiliates += 1,
            }
        }
        for e in &self.events {
            let fraud = u64::from(e.label.is_some());
            let slot = match e.body {
                Body::Click(_) => Some(0),
                Body::Conversion(_) => Some(1),
                Body::Impression(_) => None,
            };
            if let Some(i) = slot {
                let label = e.label.map_or("legit", Pattern::name).to_string();
                c.by_label.entry(label).or_default()[i] += 1;
                if e.label.is_none() {
                    let source = self.affiliates[e.affiliate].source();
                    c.legit_by_source.entry(source).or_default()[i] += 1;
                }
            }
            match e.body {
                Body::Click(_) => {
                    c.clicks += 1;
                    c.fraud_clicks += fraud;
                }
                Body::Impression(_) => c.impressions += 1,
                Body::Conversion(_) => {
                    c.conversions += 1;
                    c.fraud_conversions += fraud;
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::OnceLock;

    const END: i64 = 1_767_225_600 * SECOND_US; // 2026-01-01

    /// Seed 1 at the default scale, generated once for the tests that read it.
    fn full() -> &'static Traffic {
        static T: OnceLock<Traffic> = OnceLock::new();
        T.get_or_init(|| generate(1, 1.0, END))
    }

    fn in_ranges(ip: &str, ranges: &[&str]) -> bool {
        let ranges =
            clicktrail_actors::fraud::config::parse_ranges(ranges.iter().copied()).unwrap();
        ip.parse()
            .is_ok_and(|ip| ranges.iter().any(|r| r.contains(ip)))
    }

    #[test]
    fn the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic() {
        let render = |t: &Traffic| {
            let lines: Vec<String> = t.events.iter().map(|e| t.import_line(e, None)).collect();
            (lines.join("\n"), t.labels_csv(), t.config_toml("k", "c"))
        };
        let a = generate(5, 0.1, END);
        let b = generate(5, 0.1, END);
        assert_eq!(render(&a), render(&b));
        let c = generate(6, 0.1, END);
        assert_ne!(render(&a).0, render(&c).0);
        // The end time only moves the traffic, by whole days.
        assert_eq!(render(&a), render(&generate(5, 0.1, END + 5 * HOUR_US)));
        let d = generate(5, 0.1, END + DAY_US);
        assert_eq!(a.events.len(), d.events.len());
        assert!(a
            .events
            .iter()
            .zip(&d.events)
            .all(|(x, y)| y.at_us - x.at_us == DAY_US));
    }

    #[test]
    fn every_pattern_is_there_and_converts() {
        let c = full().counts();
        for p in Pattern::ALL {
            let [clicks, conversions] = c.by_label.get(p.name()).copied().unwrap_or_default();
            assert!(clicks > 0, "{} has no clicks", p.name());
            assert!(conversions > 0, "{} has no conversions", p.name());
            assert!(
                clicktrail_actors::fraud::config::spec_of(p.rule()).is_some(),
                "{}",
                p.rule()
            );
        }
        for (rule, _) in NOT_GENERATED {
            assert!(clicktrail_actors::fraud::config::spec_of(rule).is_some());
            assert!(Pattern::ALL.iter().all(|p| p.rule() != rule));
        }
        // At a small scale every pattern still has clicks.
        let small = generate(2, 0.05, END).counts();
        for p in Pattern::ALL {
            assert!(
                small.by_label.get(p.name()).is_some_and(|x| x[0] > 0),
                "{}",
                p.name()
            );
        }
    }

    #[test]
    fn volumes_and_rates_are_as_documented() {
        let t = full();
        let c = t.counts();
        assert!((180_000..260_000).contains(&c.clicks), "{c:?}");
        assert!((4_000..7_000).contains(&c.conversions), "{c:?}");
        // 5-15% of conversions fraudulent.
        let share = c.fraud_conversions as f64 / c.conversions as f64;
        assert!((0.05..=0.15).contains(&share), "{share}");
        // 30+ legitimate affiliates of the four kinds, mixed and fraudulent ones besides.
        assert!(c.legit_affiliates >= 30 && c.mixed_affiliates >= 4 && c.fraud_affiliates >= 10);
        for kind in [Kind::Content, Kind::Coupon, Kind::Email, Kind::Social] {
            let n = t
                .affiliates
                .iter()
                .filter(|a| a.kind == kind && a.fraud.is_empty())
                .count();
            assert!(n >= 6, "{kind:?}: {n}");
            // Conversion rates of 1-5% (clicks on lead campaigns convert more).
            let [clicks, conversions] = c.legit_by_source[kind.name()];
            let cr = conversions as f64 / clicks as f64;
            assert!((0.01..=0.05).contains(&cr), "{kind:?} {cr}");
        }
        // E-mail partners register no site; the others do.
        for a in t.affiliates.iter().filter(|a| a.fraud.is_empty()) {
            assert_eq!(a.sites.is_empty(), a.kind == Kind::Email, "{}", a.id);
        }
    }

    #[test]
    fn events_are_ordered_named_and_consistent() {
        let t = full();
        let mut refs = HashSet::new();
        let mut orders = HashSet::new();
        let mut prev = i64::MIN;
        for e in &t.events {
            assert!(
                e.at_us >= prev && e.at_us >= t.start_us - HOUR_US && e.at_us < t.end_us,
                "{} {} at {} (from {} to {})",
                e.r#ref,
                e.variant,
                e.at_us,
                t.start_us,
                t.end_us
            );
            prev = e.at_us;
            assert!(refs.insert(e.r#ref.clone()), "{}", e.r#ref);
            if let Body::Conversion(s) = &e.body {
                let click = &t.events[s.click];
                let Body::Click(v) = &click.body else {
                    panic!("{} names no click", e.r#ref)
                };
                assert!(
                    click.at_us <= e.at_us && e.at_us - click.at_us <= COOKIE_WINDOW_DAYS * DAY_US
                );
                assert_eq!(t.campaigns[t.links[v.link].campaign].merchant, s.merchant);
                let Order::Id(id) = &s.order else {
                    panic!("order id")
                };
                assert!(
                    orders.insert((s.merchant, id.clone())),
                    "order {id} twice at one merchant"
                );
                // A conversion of a fraudulent click is fraudulent.
                if click.label.is_some() {
                    assert!(e.label.is_some(), "{}", e.r#ref);
                }
            }
        }
        // Replayed orders are another merchant's ids.
        let by_id: HashMap<&str, usize> = t
            .events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Conversion(Sale {
                    order: Order::Id(id),
                    merchant,
                    ..
                }) if e.label != Some(Pattern::DuplicateOrder) => Some((id.as_str(), *merchant)),
                _ => None,
            })
            .collect();
        for e in t
            .events
            .iter()
            .filter(|e| e.label == Some(Pattern::DuplicateOrder))
        {
            if let Body::Conversion(Sale {
                order: Order::Id(id),
                merchant,
                ..
            }) = &e.body
            {
                assert!(
                    by_id.get(id.as_str()).is_some_and(|m| m != merchant),
                    "{id}"
                );
            }
        }
    }

    #[test]
    fn legitimate_browsers_look_like_browsers() {
        let t = full();
        let markers = clicktrail_actors::fraud::config::BOT_MARKERS_DEFAULT;
        let (mut legit, mut vpn, mut no_lang, mut mobile) = (0u64, 0u64, 0u64, 0u64);
        let mut impressions = HashSet::new();
        for e in &t.events {
            if let Body::Impression(v) = &e.body {
                impressions.insert((v.ip.clone(), v.user_agent.clone(), v.link));
            }
            let (Body::Click(v), None) = (&e.body, e.label) else {
                continue;
            };
            legit += 1;
            let ua = v.user_agent.to_ascii_lowercase();
            assert!(!markers.iter().any(|m| ua.contains(m)), "{}", v.user_agent);
            assert!(v.user_agent.starts_with("Mozilla/5.0 ("));
            assert!(!in_ranges(&v.ip, &BLOCKED_RANGES), "{}", v.ip);
            vpn += u64::from(in_ranges(&v.ip, &DATACENTER_RANGES));
            no_lang += u64::from(v.accept_language.is_empty());
            mobile +=
                u64::from(v.user_agent.contains("Mobile") || v.user_agent.contains("Android"));
        }
        assert_eq!(no_lang, 0);
        let vpn = vpn as f64 / legit as f64;
        assert!((0.003..0.03).contains(&vpn), "VPN share {vpn}");
        let mobile = mobile as f64 / legit as f64;
        assert!((0.4..0.75).contains(&mobile), "mobile share {mobile}");
        // Legitimate banner clicks follow an impression, unless a blocker ate it.
        let banner: Vec<&Event> = t
            .events
            .iter()
            .filter(|e| e.label.is_none() && matches!(&e.body, Body::Click(v) if t.campaigns[t.links[v.link].campaign].requires_impression))
            .collect();
        let seen = banner
            .iter()
            .filter(|e| match &e.body {
                Body::Click(v) => {
                    impressions.contains(&(v.ip.clone(), v.user_agent.clone(), v.link))
                }
                _ => false,
            })
            .count() as f64
            / banner.len() as f64;
        assert!(
            (0.85..0.97).contains(&seen),
            "impressions before banner clicks: {seen}"
        );
    }

    #[test]
    fn the_configuration_loads_and_lines_carry_the_import_fields() {
        let t = generate(3, 0.02, END);
        let cfg = crate::config::Config::from_toml(
            &t.config_toml(
                "admin-key-0123456789abcdef",
                "click-id-key-0123456789abcdef0123456789",
            ),
            "test",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.fraud.datacenter_ranges.len(), DATACENTER_RANGES.len());
        let mut kinds = HashSet::new();
        for e in &t.events {
            let v: serde_json::Value = serde_json::from_str(&t.import_line(e, None)).unwrap();
            kinds.insert(v["type"].as_str().unwrap().to_string());
            assert_eq!(v["ref"], e.r#ref.as_str());
            assert!(v["at"].as_str().unwrap().ends_with('Z'));
            match &e.body {
                Body::Conversion(_) => {
                    assert!(
                        v["click_ref"].is_string()
                            && v["order_id"].is_string()
                            && v["merchant_id"].is_string()
                    );
                    assert!(v["amount"].as_str().unwrap().contains('.'));
                }
                _ => assert!(
                    v["link"].is_string() && v["ip"].is_string() && v["user_agent"].is_string()
                ),
            }
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        let e = t.events.iter().find(|e| e.kind() == "conversion").unwrap();
        let v: serde_json::Value = serde_json::from_str(&t.import_line(e, Some("abc"))).unwrap();
        assert_eq!(
            (v["click_id"].as_str(), v.get("click_ref")),
            (Some("abc"), None)
        );
        let mut j = String::new();
        push_json_str(&mut j, "a\"b\\c\nd\u{1}é");
        assert_eq!(
            serde_json::from_str::<String>(&j).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
        assert_eq!(amount_text(1234), "12.34");
        assert_eq!(amount_text(5), "0.05");
        assert!(t.labels_csv().lines().count() == t.events.len() + 1);
    }
}
