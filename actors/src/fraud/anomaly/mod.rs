//! Anomaly model of the fraud engine: an isolation forest (Liu, Ting & Zhou, "Isolation
//! Forest", ICDM 2008), the same algorithm as scikit-learn's `IsolationForest`. Pure math:
//! nothing here reads the journal or the clock. The scorer turns a subject (a conversion,
//! an affiliate-day) into a row of finite features, fits a [`Forest`] on past rows, stores
//! its trees in a `FraudModelFit` record and scores new rows against them.
//!
//! # The model
//!
//! A forest is `t` trees ([`TREES_DEFAULT`] = 100), each grown on its own sub-sample of
//! `ψ = min(sample_size, n)` rows drawn without replacement ([`SAMPLE_SIZE_DEFAULT`] = 256).
//! A node of `m > 1` rows under the height limit `ceil(log2(max(ψ, 2)))` picks a feature
//! uniformly among those that are not constant over its rows and a split `s` uniformly in
//! `[min, max)` of that feature there; rows with `x[f] <= s` go left, the others right, so
//! both children are non-empty. A node of one row, at the height limit or whose features
//! are all constant is a leaf that remembers how many rows reached it. Anomalies are few
//! and different, so random cuts isolate them near the root.
//!
//! # The score
//!
//! `c(n)` is the average path length of an unsuccessful search in a binary search tree of
//! `n` keys: `c(n) = 2·H(n−1) − 2(n−1)/n` with the harmonic number `H(i) ≈ ln(i) + γ`
//! (γ = 0.5772156649...), `c(2) = 1` and `c(n) = 0` for `n ≤ 1`, exactly scikit-learn's
//! `_average_path_length` ([`average_path_length`]). A row `x` falls to one leaf per tree;
//! its path length there is `h(x) = depth + c(leaf size)` (depth in edges, the root at 0):
//! the leaf size term stands for the subtree the height limit cut off. The score is
//!
//! `s(x) = 2^(−E[h(x)] / c(ψ))`, in `(0, 1]`,
//!
//! `E` the mean over the trees; higher is more anomalous. It equals scikit-learn's
//! `-IsolationForest.score_samples(x)`. About 0.5 everywhere means no clear anomalies; a
//! row isolated at the root of every tree scores 1. With `ψ = 1` (one training row)
//! `c(ψ) = 0` and the score is 0.5 by definition, as in scikit-learn. [`Forest::threshold`]
//! turns a quantile of the training rows' scores into the flagging threshold stored with
//! the model.
//!
//! # Differences from scikit-learn
//!
//! The random numbers (splitmix64 here, so a stored seed reproduces its trees whatever the
//! dependencies do) and therefore the trees differ; the distribution of trees is the same.
//! scikit-learn reads the rows as `f32` and calls a feature constant when its range in a
//! node is at most 1e-7; here rows stay `f64` and a feature is constant when its range is 0.
//!
//! # How it is validated
//!
//! The unit tests (`tests.rs`) hold the pieces to hand-computed values: `c(n)`, the height
//! limit, the stored-tree checks, the AUC of a tiny case, constant features, determinism
//! per seed. `tests/fraud_ref.rs` (with `scripts/fraud_ref.py`) fits scikit-learn's
//! `IsolationForest(n_estimators=100, max_samples=256, random_state=0)` and this forest
//! with several seeds on seeded planted-anomaly data sets (Gaussian clusters with uniform
//! outliers; mixed scales with heavy tails) and requires, for every seed, the ROC AUC on
//! the planted labels within 0.02 of scikit-learn's, a Spearman rank correlation with its
//! scores of at least 0.9, and mean scores of outliers and of inliers each within 0.05.

pub mod forest;

pub use forest::{
    auc, average_path_length, height_limit, Forest, LEAF, MAX_SAMPLE_SIZE, MAX_TREES,
    SAMPLE_SIZE_DEFAULT, TREES_DEFAULT,
};

#[cfg(test)]
mod tests;
