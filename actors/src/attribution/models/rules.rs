//! Rule-based models: per-conversion weights and their grouped-journey heuristics.

use super::{apportion_ppm, Grouped};
use std::fmt;
use std::str::FromStr;

/// Time decay's default half-life: 7 days, in µs.
pub const DEFAULT_HALF_LIFE_US: i64 = 7 * 24 * 3600 * 1_000_000;

/// A rule-based model (see the module docs for the exact definitions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    LastClick,
    FirstClick,
    Linear,
    TimeDecay { half_life_us: i64 },
    PositionBased,
    WShaped,
}

impl Rule {
    /// Every rule's name, as [`FromStr`] takes them.
    pub const NAMES: [&'static str; 6] = [
        "last-click",
        "first-click",
        "linear",
        "time-decay",
        "position-based",
        "w-shaped",
    ];
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::LastClick => "last-click",
            Rule::FirstClick => "first-click",
            Rule::Linear => "linear",
            Rule::TimeDecay { .. } => "time-decay",
            Rule::PositionBased => "position-based",
            Rule::WShaped => "w-shaped",
        })
    }
}

impl FromStr for Rule {
    type Err = String;

    /// `time-decay` gets [`DEFAULT_HALF_LIFE_US`].
    fn from_str(s: &str) -> Result<Rule, String> {
        Ok(match s {
            "last-click" => Rule::LastClick,
            "first-click" => Rule::FirstClick,
            "linear" => Rule::Linear,
            "time-decay" => Rule::TimeDecay {
                half_life_us: DEFAULT_HALF_LIFE_US,
            },
            "position-based" => Rule::PositionBased,
            "w-shaped" => Rule::WShaped,
            _ => {
                return Err(format!(
                    "unknown attribution rule {s:?}: use one of {}",
                    Rule::NAMES.join(", ")
                ))
            }
        })
    }
}

/// One weight per touch, in the order given (oldest first), summing to exactly PPM_WHOLE
/// (empty in → empty out).
/// `conversion_at_us`: for time decay (age = conversion_at_us - touch time, clamped at 0).
/// `lead`: index of the touch before the lead event (W-shaped only), None when there is no
/// lead.
pub fn rule_weights(
    rule: Rule,
    touch_at_us: &[i64],
    conversion_at_us: i64,
    lead: Option<usize>,
) -> Vec<u32> {
    apportion_ppm(&rule_shares(rule, touch_at_us, conversion_at_us, lead))
}

/// The unrounded shares behind [`rule_weights`], summing to 1 (empty in → empty out).
pub fn rule_shares(
    rule: Rule,
    touch_at_us: &[i64],
    conversion_at_us: i64,
    lead: Option<usize>,
) -> Vec<f64> {
    let l = touch_at_us.len();
    let mut s = vec![0.0; l];
    if l == 0 {
        return s;
    }
    match rule {
        Rule::LastClick => s[l - 1] = 1.0,
        Rule::FirstClick => s[0] = 1.0,
        Rule::Linear => s.fill(1.0 / l as f64),
        Rule::TimeDecay { half_life_us } => {
            let ages: Vec<i64> = touch_at_us
                .iter()
                .map(|&t| conversion_at_us.saturating_sub(t).max(0))
                .collect();
            let newest = *ages.iter().min().unwrap_or(&0);
            for (w, &a) in s.iter_mut().zip(&ages) {
                *w = if half_life_us > 0 {
                    0.5f64.powf((a - newest) as f64 / half_life_us as f64)
                } else if a == newest {
                    1.0
                } else {
                    0.0
                };
            }
            let total: f64 = s.iter().sum();
            s.iter_mut().for_each(|w| *w /= total);
        }
        Rule::PositionBased => position_based(&mut s),
        Rule::WShaped => match lead.filter(|&i| i < l) {
            None => position_based(&mut s),
            Some(_) if l <= 2 => position_based(&mut s),
            Some(lead) => {
                let mut key = vec![0, lead, l - 1];
                key.sort_unstable();
                key.dedup();
                let others = l - key.len();
                let key_share = if others > 0 { 0.9 } else { 1.0 } / key.len() as f64;
                if others > 0 {
                    s.fill(0.1 / others as f64);
                }
                for k in key {
                    s[k] = key_share;
                }
            }
        },
    }
    s
}

/// Position-based 40/20/40 (L = 1: all; L = 2: 50/50).
fn position_based(s: &mut [f64]) {
    let l = s.len();
    match l {
        0 => {}
        1 => s[0] = 1.0,
        2 => s.fill(0.5),
        _ => {
            s.fill(0.2 / (l - 2) as f64);
            s[0] = 0.4;
            s[l - 1] = 0.4;
        }
    }
}

/// Rule credit over grouped journeys, per channel index: `(conversions, value)`. Each
/// path's conversions and value are split over its touches by [`rule_shares`] (no ppm
/// rounding), repeats counting per touch like ChannelAttribution's `heuristic_models`.
/// Grouped journeys have no times and no lead: time decay sees equal ages (= linear) and
/// w-shaped is position-based.
pub fn heuristic_credit(g: &Grouped, rule: Rule) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0); g.channels.len()];
    let mut at = Vec::new();
    for p in &g.paths {
        at.clear();
        at.resize(p.touches.len(), 0i64);
        for (&ch, share) in p.touches.iter().zip(rule_shares(rule, &at, 0, None)) {
            let o = &mut out[ch as usize];
            o.0 += p.conversions * share;
            o.1 += p.value * share;
        }
    }
    out
}
