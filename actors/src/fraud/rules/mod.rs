//! The rules: each looks at one subject (a click or a conversion) with the settings its
//! campaign gives it, and answers hits: its name, its score and the evidence in plain
//! words. `click` holds the rules a click alone decides, `conversion` those of a
//! conversion; the sliding-window rules live in `crate::fraud::windows` and the processor.
//!
//! Combining: scores are read as independent evidence, `1 − Π(1 − score)`. A subject at or
//! above `review-ppm` goes to review; it is rejected only when a hit of a rule configured
//! with `may-reject = true` scores `reject-ppm` or more on its own.

pub mod click;
pub mod conversion;

use super::config::{FraudConfig, RuleOverride, RuleSettings, PPM};
use clicktrail_storage::schema::{RuleHit, VerdictAction};
use std::collections::BTreeMap;

/// A hit at its rule's full configured score.
pub const PPM_FULL: u32 = PPM;

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: &'static str,
    pub score_ppm: u32,
    pub may_reject: bool,
    pub reason: String,
}

impl Hit {
    pub fn to_record(&self) -> RuleHit {
        RuleHit {
            rule: self.rule.into(),
            score_ppm: self.score_ppm,
            reason: self.reason.clone(),
        }
    }
}

/// The settings in force for one subject: the program's, with its campaign's overrides.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub config: &'a FraudConfig,
    pub campaign: Option<&'a BTreeMap<String, RuleOverride>>,
    /// Every rule's settings resolved already, in the order of `config::RULES` (the scorer
    /// keeps them per campaign: resolving them per click cost more than the rules).
    pub resolved: Option<&'a [RuleSettings]>,
}

/// A rule's position in `config::RULES`.
pub fn index(rule: &str) -> Option<usize> {
    static INDEX: std::sync::LazyLock<std::collections::HashMap<&'static str, usize>> =
        std::sync::LazyLock::new(|| {
            super::config::RULES
                .iter()
                .enumerate()
                .map(|(i, r)| (r.name, i))
                .collect()
        });
    INDEX.get(rule).copied()
}

/// Every rule's settings for a campaign, in the order of `config::RULES`.
pub fn resolve(
    config: &FraudConfig,
    campaign: Option<&BTreeMap<String, RuleOverride>>,
) -> Vec<RuleSettings> {
    super::config::RULES
        .iter()
        .map(|r| config.settings(r.name, campaign))
        .collect()
}

impl<'a> Rules<'a> {
    /// A rule's settings when it is switched on.
    pub fn on(&self, rule: &str) -> Option<RuleSettings> {
        let s = match (self.resolved, index(rule)) {
            (Some(all), Some(i)) => all[i],
            _ => self.config.settings(rule, self.campaign),
        };
        Some(s).filter(|s| s.enabled)
    }

    /// A hit of `rule` at its configured score (scaled by `share` ppm of it).
    pub fn hit(&self, rule: &'static str, share_ppm: u32, reason: String) -> Option<Hit> {
        let s = self.on(rule)?;
        let score = (u64::from(s.score_ppm) * u64::from(share_ppm) / u64::from(PPM)) as u32;
        (score > 0).then_some(Hit {
            rule,
            score_ppm: score,
            may_reject: s.may_reject,
            reason,
        })
    }
}

/// The combined score of hits, ppm: `1 − Π(1 − score)`.
pub fn combine(hits: &[Hit]) -> u32 {
    let keep: f64 = hits
        .iter()
        .map(|h| 1.0 - f64::from(h.score_ppm.min(PPM)) / f64::from(PPM))
        .product();
    let score = ((1.0 - keep) * f64::from(PPM)).round() as u32;
    debug_assert!(score <= PPM);
    score.min(PPM)
}

/// The action for a combined score and its hits.
pub fn action(config: &FraudConfig, score_ppm: u32, hits: &[Hit]) -> VerdictAction {
    if hits
        .iter()
        .any(|h| h.may_reject && h.score_ppm >= config.reject_ppm)
    {
        VerdictAction::Reject
    } else if score_ppm >= config.review_ppm {
        VerdictAction::Review
    } else {
        VerdictAction::Allow
    }
}

/// How strict an action is (allow < review < reject).
pub fn strictness(a: VerdictAction) -> u8 {
    match a {
        VerdictAction::Allow => 0,
        VerdictAction::Review => 1,
        VerdictAction::Reject => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(rule: &'static str, score: u32, may_reject: bool) -> Hit {
        Hit {
            rule,
            score_ppm: score,
            may_reject,
            reason: String::new(),
        }
    }

    #[test]
    fn scores_combine_as_independent_evidence_and_map_to_actions() {
        let c = FraudConfig::default();
        assert_eq!(combine(&[]), 0);
        assert_eq!(
            combine(&[hit("a", 500_000, false), hit("b", 500_000, false)]),
            750_000
        );
        assert_eq!(
            combine(&[hit("a", 1_000_000, false), hit("b", 10, false)]),
            1_000_000
        );
        // Two weak signals stay under review; a third crosses it.
        let weak = [hit("a", 350_000, false), hit("b", 200_000, false)];
        assert_eq!(action(&c, combine(&weak), &weak), VerdictAction::Allow);
        let three = [weak[0].clone(), weak[1].clone(), hit("c", 300_000, false)];
        assert_eq!(action(&c, combine(&three), &three), VerdictAction::Review);
        // At the threshold exactly: review; one below: allow.
        assert_eq!(action(&c, 500_000, &[]), VerdictAction::Review);
        assert_eq!(action(&c, 499_999, &[]), VerdictAction::Allow);
        // Rejection needs a rule allowed to reject, at reject-ppm on its own.
        let strong = [hit("a", 950_000, false)];
        assert_eq!(action(&c, 950_000, &strong), VerdictAction::Review);
        let allowed = [hit("a", 900_000, true)];
        assert_eq!(action(&c, 900_000, &allowed), VerdictAction::Reject);
        let below = [hit("a", 899_999, true), hit("b", 900_000, false)];
        assert_eq!(action(&c, combine(&below), &below), VerdictAction::Review);
    }

    #[test]
    fn a_switched_off_rule_does_not_hit_and_shares_scale() {
        let mut c = FraudConfig::default();
        let r = Rules {
            config: &c,
            campaign: None,
            resolved: None,
        };
        assert_eq!(
            r.hit("hidden-click", 1_000_000, "x".into())
                .unwrap()
                .score_ppm,
            900_000
        );
        assert_eq!(
            r.hit("brand-bidding", 333_333, "x".into())
                .unwrap()
                .score_ppm,
            283_333
        );
        c.rules.insert(
            "hidden-click".into(),
            RuleOverride {
                enabled: Some(false),
                ..Default::default()
            },
        );
        let r = Rules {
            config: &c,
            campaign: None,
            resolved: None,
        };
        assert!(r.hit("hidden-click", 1_000_000, "x".into()).is_none());
    }
}
