//! From a converting path and a model to touch weights: the one place both the live actor
//! and the comparison report turn a journey into credit.
//!
//! Rule-based models weigh touches directly ([`models::rule_weights`]). The data-driven
//! ones weigh *channels* and share a channel's weight equally over its touches:
//! * **markov**: each distinct channel of the journey weighs its removal effect in the
//!   fitted model (a channel the model has not seen weighs 0);
//! * **shapley**: each distinct channel weighs its Shapley value in the conversion-rate
//!   game restricted to the journey's channel set ([`models::ShapleyFit::shares`]).
//!
//! When every channel weighs 0 (nothing learnt about them yet) the weight is shared
//! equally over the distinct channels. Weights are integer ppm that add up to exactly
//! 1,000,000 (largest remainder, [`models::apportion_ppm`]).

use super::models::{self, Rule, ShapleyFit};
use clicktrail_storage::schema::{AttributionModelFit, JourneyTouch};

/// The version of the rule-based models' definitions (recorded with each attribution).
pub const RULES_VERSION: u32 = 1;
/// Seed of Shapley permutation sampling (journeys beyond `shapley-exact-max` channels).
pub const SHAPLEY_SEED: u64 = 0x5eed_a77f;

/// What a channel is for a campaign's data-driven models.
pub fn channel(channel_by: &str, affiliate: &str, campaign: &str, sub1: &str) -> String {
    match channel_by {
        "affiliate-campaign" => format!("{affiliate}/{campaign}"),
        "sub1" if !sub1.is_empty() => format!("{affiliate}:{sub1}"),
        _ => affiliate.to_string(),
    }
}

/// A model ready to weigh journeys.
#[derive(Debug, Clone)]
pub enum Weigher<'a> {
    Rule(Rule),
    Markov(&'a AttributionModelFit),
    Shapley(&'a AttributionModelFit, ShapleyFit, usize),
}

impl<'a> Weigher<'a> {
    /// The rule named `model` (half-life for time decay in days).
    pub fn rule(model: &str, half_life_days: u32) -> Option<Weigher<'static>> {
        let rule = match model {
            "time-decay" => Rule::TimeDecay {
                half_life_us: half_life_days as i64 * 86_400_000_000,
            },
            other => other.parse::<Rule>().ok()?,
        };
        Some(Weigher::Rule(rule))
    }

    /// A fitted model.
    pub fn fitted(fit: &'a AttributionModelFit, shapley_exact_max: usize) -> Weigher<'a> {
        if fit.model == "markov" {
            Weigher::Markov(fit)
        } else {
            Weigher::Shapley(fit, shapley_fit(fit), shapley_exact_max)
        }
    }

    /// One weight per touch of `journey` (its touches' channels in `channels`).
    pub fn weights(
        &self,
        journey: &[JourneyTouch],
        channels: &[String],
        conversion_at_us: i64,
        lead: Option<usize>,
    ) -> Vec<u32> {
        assert_eq!(journey.len(), channels.len());
        if journey.is_empty() {
            return Vec::new();
        }
        let w = match self {
            Weigher::Rule(rule) => {
                let times: Vec<i64> = journey.iter().map(|t| t.at_us).collect();
                models::rule_weights(*rule, &times, conversion_at_us, lead)
            }
            Weigher::Markov(fit) => by_channel(channels, |distinct| {
                distinct
                    .iter()
                    .map(|c| {
                        fit.channels
                            .iter()
                            .position(|m| m == *c)
                            .map_or(0.0, |i| fit.removal_effects[i].max(0.0))
                    })
                    .collect()
            }),
            Weigher::Shapley(fit, game, exact_max) => by_channel(channels, |distinct| {
                // Channels the model never saw get indices past its own: v is 0 for
                // every coalition holding them.
                let mut ids: Vec<(u32, usize)> = distinct
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let id = fit
                            .channels
                            .iter()
                            .position(|m| m == *c)
                            .unwrap_or(fit.channels.len() + i);
                        (id as u32, i)
                    })
                    .collect();
                ids.sort_unstable();
                let set: Vec<u32> = ids.iter().map(|x| x.0).collect();
                let (shares, _) = game.shares(&set, *exact_max, SHAPLEY_SEED);
                let mut out = vec![0.0; distinct.len()];
                for ((_, i), s) in ids.iter().zip(shares) {
                    out[*i] = s;
                }
                out
            }),
        };
        assert_eq!(
            w.iter().map(|x| *x as u64).sum::<u64>(),
            models::PPM_WHOLE as u64
        );
        w
    }
}

/// The Shapley game of a fitted model (its coalitions).
pub fn shapley_fit(fit: &AttributionModelFit) -> ShapleyFit {
    ShapleyFit {
        coalitions: fit
            .coalitions
            .iter()
            .map(|c| (c.channels.clone(), c.conversions, c.journeys))
            .collect(),
        conversions: Vec::new(),
        value: Vec::new(),
        sampled_journeys: 0,
        max_std_error: 0.0,
    }
}

/// Per-touch weights from per-channel shares: `shares_of(distinct channels)` gives each
/// distinct channel's share; a channel's share is split equally over its touches.
fn by_channel(channels: &[String], shares_of: impl FnOnce(&[&String]) -> Vec<f64>) -> Vec<u32> {
    let mut distinct: Vec<&String> = Vec::new();
    for c in channels {
        if !distinct.contains(&c) {
            distinct.push(c);
        }
    }
    let mut shares = shares_of(&distinct);
    if !shares.iter().any(|s| *s > 0.0 && s.is_finite()) {
        shares = vec![1.0; distinct.len()];
    }
    let per_touch: Vec<f64> = channels
        .iter()
        .map(|c| {
            let i = distinct.iter().position(|d| *d == c).expect("listed");
            let n = channels.iter().filter(|x| *x == c).count() as f64;
            let s = shares[i];
            if s.is_finite() && s > 0.0 {
                s / n
            } else {
                0.0
            }
        })
        .collect();
    models::apportion_ppm(&per_touch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clicktrail_storage::schema::Coalition;

    fn journey(affs: &[&str]) -> (Vec<JourneyTouch>, Vec<String>) {
        let j: Vec<JourneyTouch> = affs
            .iter()
            .enumerate()
            .map(|(i, a)| JourneyTouch {
                click_id: format!("k{i}"),
                affiliate_id: a.to_string(),
                sub1: String::new(),
                at_us: i as i64 * 1_000_000,
                impression: false,
            })
            .collect();
        let c = affs.iter().map(|a| a.to_string()).collect();
        (j, c)
    }

    fn fit(model: &str) -> AttributionModelFit {
        AttributionModelFit {
            at_us: 0,
            campaign_id: "c".into(),
            model: model.into(),
            version: 1,
            order: 1,
            channel_by: "affiliate".into(),
            trained_from_us: 0,
            trained_to_us: 0,
            journeys: 0,
            conversions: 0,
            channels: vec!["a".into(), "b".into()],
            p_conversion: 0.5,
            removal_effects: vec![0.75, 0.25],
            coalitions: vec![
                Coalition {
                    channels: vec![0],
                    conversions: 1.0,
                    journeys: 4.0,
                },
                Coalition {
                    channels: vec![1],
                    conversions: 1.0,
                    journeys: 4.0,
                },
                Coalition {
                    channels: vec![0, 1],
                    conversions: 3.0,
                    journeys: 4.0,
                },
            ],
            requested_by: "test".into(),
        }
    }

    #[test]
    fn markov_weighs_channels_by_removal_effect_and_shares_them_over_touches() {
        let f = fit("markov");
        let (j, c) = journey(&["a", "b", "a"]);
        let w = Weigher::fitted(&f, 15).weights(&j, &c, 10_000_000, None);
        assert_eq!(w, vec![375_000, 250_000, 375_000]);
        // A channel the model never saw weighs nothing; all unseen: equal.
        let (j, c) = journey(&["a", "z"]);
        assert_eq!(
            Weigher::fitted(&f, 15).weights(&j, &c, 0, None),
            [1_000_000, 0]
        );
        let (j, c) = journey(&["y", "z"]);
        assert_eq!(
            Weigher::fitted(&f, 15).weights(&j, &c, 0, None),
            [500_000, 500_000]
        );
    }

    #[test]
    fn shapley_uses_the_game_restricted_to_the_journey() {
        // v(a)=v(b)=0.25, v(ab)=0.75: symmetric, so 50/50.
        let f = fit("shapley");
        let (j, c) = journey(&["b", "a"]);
        assert_eq!(
            Weigher::fitted(&f, 15).weights(&j, &c, 0, None),
            [500_000, 500_000]
        );
        let (j, c) = journey(&["a"]);
        assert_eq!(
            Weigher::fitted(&f, 15).weights(&j, &c, 0, None),
            [1_000_000]
        );
    }

    #[test]
    fn rules_by_name() {
        let (j, c) = journey(&["a", "b", "c"]);
        let last = Weigher::rule("last-click", 7).unwrap();
        assert_eq!(last.weights(&j, &c, 5_000_000, None), [0, 0, 1_000_000]);
        assert!(Weigher::rule("markov", 7).is_none());
        assert_eq!(channel("sub1", "a", "c", "nl"), "a:nl");
        assert_eq!(channel("sub1", "a", "c", ""), "a");
        assert_eq!(channel("affiliate-campaign", "a", "c", ""), "a/c");
    }
}
