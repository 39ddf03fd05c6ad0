//! Attribution models: the pure math behind multi-touch attribution (issue #18). Nothing
//! here reads the journal or the clock; the live actor, the API and the
//! `clicktrail attribution fit` command call these functions. This doc is the design doc:
//! every model is defined here exactly, and the tests hold the code to it.
//!
//! # Units and rounding
//!
//! A conversion's credit is split into integer parts per million ([`PPM_WHOLE`]). Every
//! model first computes real-valued shares, one per touch, and [`apportion_ppm`] turns them
//! into integers that sum to exactly `PPM_WHOLE`: each share is scaled to
//! `share / Σshares × PPM_WHOLE`, floored, and the units still missing go one each to the
//! touches with the largest fractional remainders (ties to the earlier touch, i.e. the
//! older one). All-zero shares split equally by the same rule. So a 3-touch linear
//! journey is `[333_334, 333_333, 333_333]`.
//!
//! # Rule models ([`rule_weights`], per conversion)
//!
//! A journey is the conversion's touches, oldest first, `L` of them. Touches are counted
//! per touch: a partner clicked twice is two touches and gets two weights (sum them per
//! partner if you want per-partner credit). `L = 0` gives no weights.
//!
//! * **last-click**: the last touch gets everything. **first-click**: the first does.
//! * **linear**: `1/L` each.
//! * **time-decay** (half-life `h` µs, default 7 days): touch `i` has age
//!   `a_i = max(0, conversion_at − touch_at_i)` and share `0.5^(a_i / h)`, normalised. (It
//!   is computed as `0.5^((a_i − min a) / h)`, which is the same after normalising but
//!   cannot underflow to all-zero for old journeys.) A non-positive half-life counts as
//!   "no decay information": every touch but the newest gets 0 (`h → 0⁺`), ties between
//!   equally new touches split equally.
//! * **position-based** (40/20/40): `L = 1`: all to the touch; `L = 2`: 50/50; `L ≥ 3`:
//!   40% to the first, 40% to the last, 20% split equally over the `L − 2` middle touches.
//! * **w-shaped**: `lead` is the index of the touch just before the lead event (sign-up,
//!   add-to-cart...). Without a lead (or with an index out of range) it is exactly
//!   position-based. `L = 1`: all; `L = 2`: 50/50. Otherwise the key touches are
//!   `K = distinct {0, lead, L − 1}` (2 or 3 of them): when there are touches outside `K`,
//!   each key touch gets `90% / |K|` and the others share 10% equally; when there are none
//!   (`L = 3` with the lead in the middle), each key touch gets `100% / |K|`.
//!
//! [`rule_shares`] gives the same shares unrounded (summing to 1).
//!
//! # Grouped journeys ([`Grouped`])
//!
//! ChannelAttribution's grouped format: one row per distinct path (channels oldest first),
//! with the number of journeys on it that converted (`total_conversions`), that did not
//! (`total_null`), and the conversions' total value. CSV: header
//! `path,total_conversions,total_null[,total_conversion_value]`, channels separated by `>`
//! (spaces around names trimmed, so `A > B` and `A>B` are the same), RFC 4180 quoting
//! within one line. A missing value column means value 0.
//!
//! # Heuristics over grouped journeys ([`heuristic_credit`])
//!
//! Each path's conversions and value are split over its touches by the rule's real-valued
//! shares (no ppm rounding) and summed per channel. Repeats count per touch, exactly like
//! ChannelAttribution's `heuristic_models`: its linear model gives `A > A > C` two thirds
//! to A and one third to C (checked against it by `scripts/attribution_ref.py`); its first
//! touch is the path's first channel, its last touch the last. Grouped journeys carry no
//! times and no lead: time-decay therefore sees every touch at the same age (= linear) and
//! w-shaped is position-based.
//!
//! # Markov chains ([`fit_markov`]), ChannelAttribution's encoding
//!
//! Order `k ∈ 1..=4`. A path of `L ≤ k` touches is one state (the whole path, e.g. `B` at
//! order 2); a longer path is its `L − k + 1` sliding windows of `k` touches, taken over the
//! path as written (repeated channels are NOT collapsed first: at order 2, `A > A > C` is
//! `AA → AC`). Consecutive equal states are merged, i.e. self loops are dropped, exactly as
//! ChannelAttribution 2.2.5 does (`if(ichannel!=ichannel_old)` in its encoder; that is why
//! its order-1 matrix for `A > A > C` has no `A → A`). Dropping a self loop and
//! renormalising the row does not change any absorption probability, so this is a
//! presentation choice, not a modelling one. Each path adds its weight
//! `conversions + nulls` to `start → s₁` and to every `sᵢ → sᵢ₊₁`, `conversions` to
//! `s_m → (conversion)` and `nulls` to `s_m → (null)`; rows are normalised.
//! Paths with zero weight add nothing.
//!
//! `P` is the probability of absorbing in `(conversion)` from `(start)`, solved exactly (no
//! simulation): `x = b + Q x` over the transient states, taken one strongly connected
//! component at a time in reverse topological order (Tarjan), each component solved by
//! LU with partial pivoting when it has at most [`DENSE_MAX`] states and by Gauss–Seidel
//! otherwise, iterated until the estimated remaining error (`Δ·ρ/(1−ρ)`, with `ρ` the
//! observed contraction per sweep) is below 1e-14. Removing channel `c` sends every
//! transition into a state containing `c` to `(null)`; its removal effect is
//! `RE(c) = 1 − P₋c / P` (clamped at 0 against rounding; all 0 when `P = 0`). This is the
//! quantity ChannelAttribution estimates by simulation (the share of simulated converting
//! paths that visit `c`), without its noise and without its `max_step` cut (by default it
//! stops simulated paths after the longest observed path length and counts them as
//! non-converting, which biases its removal effects low when the chain has loops).
//! Credit: `conversions(c) = Σconversions × RE(c) / ΣRE`, `value(c) = Σvalue × RE(c) / ΣRE`
//! (ChannelAttribution's value split instead uses value-weighted removal effects from its
//! simulation; ours uses the conversion removal effects for both).
//!
//! # Shapley values ([`fit_shapley`]), the conversion-rate game
//!
//! Dalessandro et al. (2012): `v(S)` is the conversion rate
//! `conversions / (conversions + nulls)` of the journeys whose DISTINCT channel set is
//! exactly `S`; 0 when no journey has that set; `v(∅) = 0`. A journey with set `T` gets
//! the Shapley values of `v` restricted to the subsets of `T`,
//! `φᵢ = Σ_{S ⊆ T∖{i}} |S|!(|T|−|S|−1)!/|T|! · (v(S∪{i}) − v(S))`, divided by their sum
//! (`= v(T)`; when that is 0, equal shares over `T`). Per-channel credit is
//! `Σ_journeys conversions × share` (same with value). Sets of up to `exact_max` channels
//! (default [`SHAPLEY_EXACT_MAX`] = 15, capped at [`SHAPLEY_EXACT_CAP`] = 20 since the
//! work is `|T|·2^|T|`) are exact; larger ones use [`SHAPLEY_PERMUTATIONS`] random
//! permutations (seeded by `seed` and the set, so deterministic), and report the largest
//! standard error of a normalised share.

mod journeys;
mod markov;
mod rules;
mod shapley;

pub use journeys::{Grouped, GroupedPath};
pub use markov::{fit_markov, MarkovFit, DENSE_MAX};
pub use rules::{heuristic_credit, rule_shares, rule_weights, Rule, DEFAULT_HALF_LIFE_US};
pub use shapley::{
    fit_shapley, ShapleyFit, SHAPLEY_EXACT_CAP, SHAPLEY_EXACT_MAX, SHAPLEY_PERMUTATIONS,
};

/// A whole conversion, in parts per million.
pub const PPM_WHOLE: u32 = 1_000_000;

/// Splits exactly [`PPM_WHOLE`] in proportion to `shares` by largest remainder (see the
/// module docs). Negative or non-finite shares count as 0; all-zero shares split equally;
/// empty in, empty out.
pub fn apportion_ppm(shares: &[f64]) -> Vec<u32> {
    if shares.is_empty() {
        return Vec::new();
    }
    let clean = |s: f64| if s.is_finite() && s > 0.0 { s } else { 0.0 };
    let total: f64 = shares.iter().map(|&s| clean(s)).sum();
    let whole = f64::from(PPM_WHOLE);
    let scaled: Vec<f64> = if total > 0.0 && total.is_finite() {
        shares.iter().map(|&s| clean(s) / total * whole).collect()
    } else {
        vec![whole / shares.len() as f64; shares.len()]
    };
    let mut out: Vec<u32> = scaled
        .iter()
        .map(|&q| (q.floor() as u32).min(PPM_WHOLE))
        .collect();
    let given: u64 = out.iter().map(|&w| u64::from(w)).sum();
    let mut left = u64::from(PPM_WHOLE).saturating_sub(given);
    if left > 0 {
        let mut order: Vec<usize> = (0..out.len()).collect();
        // Largest remainder first; the stable sort keeps ties in index order.
        order.sort_by(|&a, &b| {
            let (ra, rb) = (scaled[a] - scaled[a].floor(), scaled[b] - scaled[b].floor());
            rb.total_cmp(&ra)
        });
        // One pass hands out at most one unit each; rounding can in theory leave more.
        while left > 0 {
            for &i in &order {
                if left == 0 {
                    break;
                }
                out[i] += 1;
                left -= 1;
            }
        }
    } else if given > u64::from(PPM_WHOLE) {
        // Only reachable through floating-point overshoot: take back from the smallest
        // remainders, last index first.
        let mut extra = given - u64::from(PPM_WHOLE);
        for i in (0..out.len()).rev() {
            while extra > 0 && out[i] > 0 {
                out[i] -= 1;
                extra -= 1;
            }
        }
    }
    assert_eq!(
        out.iter().map(|&w| u64::from(w)).sum::<u64>(),
        u64::from(PPM_WHOLE),
        "apportion_ppm must hand out exactly PPM_WHOLE"
    );
    out
}

#[cfg(test)]
mod tests;
