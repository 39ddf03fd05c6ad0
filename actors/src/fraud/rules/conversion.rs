//! Rules of a conversion: too fast after its click, the long flat tail of click spamming,
//! the buyer being the affiliate (e-mail, address), an order id another merchant already
//! converted, one customer converting again and again on fresh clicks. The processor
//! gathers the figures (its state); these functions judge them.

use super::{Hit, Rules};
use crate::fraud::config::{Cidr, PPM};
use std::net::IpAddr;

/// Fewest conversions of an affiliate before its click-to-conversion tail is judged.
pub const TAIL_CONVERSIONS_MIN: u64 = 20;
/// Fewest conversions of an affiliate before its share of fast ones is judged.
pub const FAST_CONVERSIONS_MIN: u64 = 10;
/// A fast conversion, for the affiliate's distribution: under a minute after its click.
pub const FAST_S: i64 = 60;
/// Share of an affiliate's conversions that may be fast before they are click injection.
pub const FAST_SHARE_MAX_PPM: u32 = 500_000;

/// An affiliate's click-to-conversion times against its campaign's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tail {
    pub conversions: u64,
    /// Of them, how many came more than the rule's window after their click.
    pub late: u64,
    /// The campaign's share of late conversions, ppm (all affiliates).
    pub campaign_late_ppm: u32,
}

impl Tail {
    pub fn late_ppm(&self) -> u32 {
        (self.late * u64::from(PPM) / self.conversions.max(1)) as u32
    }

    /// The 99% Wilson lower bound of the share, ppm: what the share is at least, allowing
    /// for small samples (7 of 10 is not yet "most").
    pub fn late_lower_ppm(&self) -> u32 {
        const Z: f64 = 2.576;
        let n = self.conversions as f64;
        if n == 0.0 {
            return 0;
        }
        let p = self.late as f64 / n;
        let z2 = Z * Z;
        let centre = p + z2 / (2.0 * n);
        let spread = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
        let lower = (centre - spread) / (1.0 + z2 / n);
        (lower.max(0.0) * f64::from(PPM)) as u32
    }
}

/// What the rules read of a conversion.
#[derive(Debug, Clone, Default)]
pub struct ConversionFacts<'a> {
    /// Seconds from the click to the conversion (`None` without a click).
    pub click_to_conversion_s: Option<i64>,
    pub email_hash: Option<&'a str>,
    pub buyer_ip: Option<IpAddr>,
    /// Keyed hashes of the affiliate's own e-mail and PayPal account.
    pub own_email_hashes: &'a [String],
    pub own_ranges: &'a [Cidr],
    /// Another merchant that converted the same order id within the window.
    pub order_elsewhere: Option<&'a str>,
    /// This customer's conversions within the window, each on its own click of the
    /// affiliate (this one included).
    pub customer_fresh_clicks: u64,
    /// The affiliate's late conversions (click spamming).
    pub tail: Tail,
    /// The affiliate's fast conversions (under [`FAST_S`]): `late` counts them.
    pub fast: Tail,
}

/// Every hit of the rules in this file.
pub fn hits(r: &Rules<'_>, c: &ConversionFacts<'_>) -> Vec<Hit> {
    let mut out = Vec::new();
    out.extend(too_fast(r, c));
    out.extend(click_spamming(r, c));
    out.extend(self_referral(r, c));
    if let Some(m) = c.order_elsewhere {
        out.extend(r.hit(
            "duplicate-order",
            PPM,
            format!("the same order id was converted for merchant {m}"),
        ));
    }
    if let Some(s) = r.on("repeat-customer") {
        if s.limit > 0 && c.customer_fresh_clicks >= s.limit {
            out.extend(r.hit(
                "repeat-customer",
                PPM,
                format!(
                    "the customer's conversion #{} within {} h, each on a fresh click",
                    c.customer_fresh_clicks,
                    s.window_s / 3600
                ),
            ));
        }
    }
    out
}

fn too_fast(r: &Rules<'_>, c: &ConversionFacts<'_>) -> Option<Hit> {
    let s = r.on("conversion-too-fast")?;
    let t = c.click_to_conversion_s?;
    if t < s.limit as i64 {
        return r.hit(
            "conversion-too-fast",
            PPM,
            format!("conversion {} s after its click", t.max(0)),
        );
    }
    fast_distribution(r, c, t)
}

/// Click injection by the affiliate's distribution: most of its conversions within a
/// minute of their click, at least twice its campaign's share.
pub fn fast_distribution(r: &Rules<'_>, c: &ConversionFacts<'_>, t: i64) -> Option<Hit> {
    let f = c.fast;
    let share = f.late_ppm();
    let lower = f.late_lower_ppm();
    let injected = t < FAST_S
        && f.conversions >= FAST_CONVERSIONS_MIN
        && lower >= FAST_SHARE_MAX_PPM
        && lower >= f.campaign_late_ppm.saturating_mul(2);
    injected.then_some(())?;
    r.hit(
        "conversion-too-fast",
        PPM,
        format!(
            "{}% of the affiliate's {} conversions came within {FAST_S} s of the click (campaign: {}%); this one {} s after",
            share / 10_000,
            f.conversions,
            f.campaign_late_ppm / 10_000,
            t.max(0)
        ),
    )
}

fn click_spamming(r: &Rules<'_>, c: &ConversionFacts<'_>) -> Option<Hit> {
    let s = r.on("click-spamming")?;
    let t = c.click_to_conversion_s?;
    let tail = c.tail;
    let late_ppm = tail.late_ppm();
    let lower = tail.late_lower_ppm();
    let share_min = (s.limit.min(100) * 10_000) as u32;
    let flat = tail.conversions >= TAIL_CONVERSIONS_MIN
        && lower >= share_min
        && lower >= tail.campaign_late_ppm.saturating_mul(2);
    (flat && t > s.window_s as i64).then_some(())?;
    r.hit(
        "click-spamming",
        PPM,
        format!(
            "{}% of the affiliate's {} conversions came over {} h after the click (campaign: {}%); this one {} h after",
            late_ppm / 10_000,
            tail.conversions,
            s.window_s / 3600,
            tail.campaign_late_ppm / 10_000,
            t / 3600
        ),
    )
}

fn self_referral(r: &Rules<'_>, c: &ConversionFacts<'_>) -> Vec<Hit> {
    let mut out = Vec::new();
    if let Some(h) = c.email_hash {
        if c.own_email_hashes.iter().any(|o| o == h) {
            out.extend(r.hit(
                "self-referral-email",
                PPM,
                "the buyer's e-mail is the affiliate's own".into(),
            ));
        }
    }
    if let Some(ip) = c.buyer_ip {
        if c.own_ranges.iter().any(|n| n.contains(ip)) {
            out.extend(r.hit(
                "self-referral-device",
                PPM,
                format!("the buyer's address {ip} is the affiliate's own"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::config::{parse_ranges, FraudConfig};

    fn rules_of(c: &ConversionFacts<'_>) -> Vec<&'static str> {
        let cfg = FraudConfig::default();
        hits(
            &Rules {
                config: &cfg,
                campaign: None,
                resolved: None,
            },
            c,
        )
        .iter()
        .map(|h| h.rule)
        .collect()
    }

    #[test]
    fn too_fast_at_and_around_the_limit() {
        let at = |s| ConversionFacts {
            click_to_conversion_s: Some(s),
            ..Default::default()
        };
        assert_eq!(rules_of(&at(3)), ["conversion-too-fast"]);
        assert_eq!(rules_of(&at(9)), ["conversion-too-fast"]);
        assert!(rules_of(&at(10)).is_empty());
        assert!(rules_of(&ConversionFacts::default()).is_empty());
        // An affiliate whose conversions mostly come within a minute: the fast ones too.
        let fast = |t, conversions, fast, campaign| ConversionFacts {
            click_to_conversion_s: Some(t),
            fast: Tail {
                conversions,
                late: fast,
                campaign_late_ppm: campaign,
            },
            ..Default::default()
        };
        assert_eq!(
            rules_of(&fast(30, 40, 36, 100_000)),
            ["conversion-too-fast"]
        );
        assert!(rules_of(&fast(30, 9, 9, 0)).is_empty(), "too few");
        assert!(
            rules_of(&fast(30, 10, 7, 0)).is_empty(),
            "7 of 10 may be chance"
        );
        assert!(
            rules_of(&fast(30, 40, 24, 0)).is_empty(),
            "60% of 40: bound under 50%"
        );
        assert!(
            rules_of(&fast(30, 40, 36, 400_000)).is_empty(),
            "not twice the campaign"
        );
        assert!(
            rules_of(&fast(60, 40, 40, 0)).is_empty(),
            "a minute is not fast"
        );
    }

    #[test]
    fn click_spamming_needs_a_flat_tail_against_the_campaign() {
        let tail = |conversions, late, campaign| ConversionFacts {
            click_to_conversion_s: Some(3 * 86_400),
            tail: Tail {
                conversions,
                late,
                campaign_late_ppm: campaign,
            },
            ..Default::default()
        };
        assert_eq!(rules_of(&tail(40, 36, 150_000)), ["click-spamming"]);
        assert!(rules_of(&tail(19, 19, 0)).is_empty(), "too few conversions");
        assert!(
            rules_of(&tail(20, 14, 0)).is_empty(),
            "70% of 20: bound under 60%"
        );
        assert!(
            rules_of(&tail(40, 36, 400_000)).is_empty(),
            "not twice the campaign"
        );
        let early = ConversionFacts {
            click_to_conversion_s: Some(3600),
            ..tail(40, 36, 150_000)
        };
        assert!(rules_of(&early).is_empty(), "only the tail's conversions");
        let t = Tail {
            conversions: 10,
            late: 7,
            campaign_late_ppm: 0,
        };
        assert!(
            (315_000..=325_000).contains(&t.late_lower_ppm()),
            "{}",
            t.late_lower_ppm()
        );
    }

    #[test]
    fn self_referrals_duplicates_and_repeats() {
        let own = vec!["aa".to_string()];
        let ranges = parse_ranges(["198.51.100.0/24"]).unwrap();
        let c = ConversionFacts {
            email_hash: Some("aa"),
            buyer_ip: "198.51.100.3".parse().ok(),
            own_email_hashes: &own,
            own_ranges: &ranges,
            order_elsewhere: Some("m2"),
            customer_fresh_clicks: 3,
            ..Default::default()
        };
        assert_eq!(
            rules_of(&c),
            [
                "self-referral-email",
                "self-referral-device",
                "duplicate-order",
                "repeat-customer"
            ]
        );
        let c = ConversionFacts {
            email_hash: Some("bb"),
            buyer_ip: "198.51.101.3".parse().ok(),
            customer_fresh_clicks: 2,
            ..c
        };
        assert_eq!(
            rules_of(&ConversionFacts {
                order_elsewhere: None,
                ..c
            }),
            Vec::<&str>::new()
        );
    }
}
