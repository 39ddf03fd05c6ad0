//! Shapley values of the conversion-rate game (see the module docs).

use super::Grouped;
use std::collections::BTreeMap;

/// Default: sets of up to this many channels get exact Shapley values.
pub const SHAPLEY_EXACT_MAX: usize = 15;
/// `exact_max` is capped here: exact work and memory grow as `2^|T|`.
pub const SHAPLEY_EXACT_CAP: usize = 20;
/// Permutations sampled for a set above `exact_max`.
pub const SHAPLEY_PERMUTATIONS: usize = 20_000;

/// A fitted Shapley model.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapleyFit {
    /// Every observed distinct channel set (sorted), with its conversions and journeys
    /// (`conversions + nulls`); sorted by set, so lookups are binary searches.
    pub coalitions: Vec<(Vec<u32>, f64, f64)>,
    /// Credit per channel index.
    pub conversions: Vec<f64>,
    pub value: Vec<f64>,
    /// Converting grouped paths whose channel set was sampled rather than enumerated.
    pub sampled_journeys: usize,
    /// The largest standard error of a sampled normalised share (0 when all exact).
    pub max_std_error: f64,
}

/// Fits the Shapley model: `exact_max` channels per set are enumerated exactly (capped at
/// [`SHAPLEY_EXACT_CAP`]), larger sets sampled with `seed`.
pub fn fit_shapley(g: &Grouped, exact_max: usize, seed: u64) -> ShapleyFit {
    // set -> (conversions, journeys, value, converting grouped paths)
    let mut sets: BTreeMap<Vec<u32>, (f64, f64, f64, usize)> = BTreeMap::new();
    for p in &g.paths {
        let mut set = p.touches.clone();
        set.sort_unstable();
        set.dedup();
        let e = sets.entry(set).or_default();
        e.0 += p.conversions;
        e.1 += p.conversions + p.nulls;
        e.2 += p.value;
        e.3 += usize::from(p.conversions > 0.0);
    }
    let mut fit = ShapleyFit {
        coalitions: sets
            .iter()
            .map(|(s, &(c, j, _, _))| (s.clone(), c, j))
            .collect(),
        conversions: vec![0.0; g.channels.len()],
        value: vec![0.0; g.channels.len()],
        sampled_journeys: 0,
        max_std_error: 0.0,
    };
    for (set, &(conv, _, value, paths)) in &sets {
        if conv <= 0.0 && value <= 0.0 {
            continue;
        }
        let (shares, se) = fit.shares(set, exact_max, seed);
        if set.len() > exact_max.min(SHAPLEY_EXACT_CAP) {
            fit.sampled_journeys += paths;
            fit.max_std_error = fit.max_std_error.max(se);
        }
        for (&c, s) in set.iter().zip(shares) {
            fit.conversions[c as usize] += conv * s;
            fit.value[c as usize] += value * s;
        }
    }
    fit
}

impl ShapleyFit {
    /// `v(S)`: the conversion rate of journeys whose distinct set is exactly `set`.
    fn v(&self, set: &[u32]) -> f64 {
        match self
            .coalitions
            .binary_search_by(|c| c.0.as_slice().cmp(set))
        {
            Ok(i) if self.coalitions[i].2 > 0.0 => self.coalitions[i].1 / self.coalitions[i].2,
            _ => 0.0,
        }
    }

    /// Normalised Shapley shares for one journey's distinct channel set (sorted), summing
    /// to 1, and the standard error (0 when exact).
    pub fn shares(&self, set: &[u32], exact_max: usize, seed: u64) -> (Vec<f64>, f64) {
        let n = set.len();
        if n == 0 {
            return (Vec::new(), 0.0);
        }
        if n == 1 {
            return (vec![1.0], 0.0);
        }
        let (phi, se) = if n <= exact_max.min(SHAPLEY_EXACT_CAP) {
            (self.exact(set), vec![0.0; n])
        } else {
            self.sampled(set, seed)
        };
        let total: f64 = phi.iter().sum();
        if total > 0.0 {
            let se = se.iter().fold(0.0f64, |m, &s| m.max(s / total));
            (phi.iter().map(|p| p / total).collect(), se)
        } else {
            (vec![1.0 / n as f64; n], 0.0)
        }
    }

    /// Exact Shapley values over the subsets of `set` (bitmasks over its positions).
    fn exact(&self, set: &[u32]) -> Vec<f64> {
        let n = set.len();
        let full = 1usize << n;
        let mut v = vec![0.0f64; full];
        let mut buf = Vec::with_capacity(n);
        for (mask, vm) in v.iter_mut().enumerate().skip(1) {
            buf.clear();
            buf.extend((0..n).filter(|i| mask >> i & 1 == 1).map(|i| set[i]));
            *vm = self.v(&buf);
        }
        // weight[s] = s!(n−s−1)!/n! = 1 / (n · C(n−1, s))
        let mut weight = vec![0.0f64; n];
        let mut binom = 1.0f64;
        for (s, w) in weight.iter_mut().enumerate() {
            *w = 1.0 / (n as f64 * binom);
            binom = binom * (n - 1 - s) as f64 / (s + 1) as f64;
        }
        let mut phi = vec![0.0f64; n];
        for (mask, &vm) in v.iter().enumerate() {
            let size = mask.count_ones() as usize;
            for (i, p) in phi.iter_mut().enumerate() {
                if mask >> i & 1 == 0 {
                    *p += weight[size] * (v[mask | 1 << i] - vm);
                }
            }
        }
        phi
    }

    /// Permutation sampling: mean marginal contributions and their standard errors.
    fn sampled(&self, set: &[u32], seed: u64) -> (Vec<f64>, Vec<f64>) {
        let n = set.len();
        let mix = set.iter().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, &c| {
            (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut rng = fastrand::Rng::with_seed(mix);
        let (mut sum, mut sq) = (vec![0.0f64; n], vec![0.0f64; n]);
        let mut perm: Vec<usize> = (0..n).collect();
        let mut buf: Vec<u32> = Vec::with_capacity(n);
        for _ in 0..SHAPLEY_PERMUTATIONS {
            rng.shuffle(&mut perm);
            buf.clear();
            let mut prev = 0.0;
            for &i in &perm {
                let pos = buf.partition_point(|&c| c < set[i]);
                buf.insert(pos, set[i]);
                let now = self.v(&buf);
                let d = now - prev;
                sum[i] += d;
                sq[i] += d * d;
                prev = now;
            }
        }
        let m = SHAPLEY_PERMUTATIONS as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / m).collect();
        let se = (0..n)
            .map(|i| {
                let var = (sq[i] / m - mean[i] * mean[i]).max(0.0) * m / (m - 1.0);
                (var / m).sqrt()
            })
            .collect();
        (mean, se)
    }
}
