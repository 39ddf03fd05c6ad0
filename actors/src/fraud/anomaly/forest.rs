//! The isolation forest: fit, score, threshold and the check of stored trees. The
//! definitions are in the docs of [`super`].

use clicktrail_storage::schema::{IsoNode, IsoTree};

/// Trees per forest unless the caller says otherwise (Liu et al.'s and scikit-learn's).
pub const TREES_DEFAULT: usize = 100;
/// Rows sub-sampled per tree (ψ) unless the caller says otherwise: path lengths converge
/// well before 256 (Liu et al.), and a small ψ keeps normal clusters from masking anomalies.
pub const SAMPLE_SIZE_DEFAULT: usize = 256;
/// Most trees in one forest, fitted or stored: 100 × the default. Bounds the cost of a
/// score and what a stored record may ask for.
pub const MAX_TREES: usize = 10_000;
/// Largest sub-sample per tree, in rows (2^20): 4096 × the default. Keeps the height limit
/// at most 20 and every leaf size in a `u32`.
pub const MAX_SAMPLE_SIZE: usize = 1 << 20;
/// `IsoNode::feature` of a leaf.
pub const LEAF: u32 = u32::MAX;
/// γ, the Euler–Mascheroni constant (numpy's `euler_gamma`).
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
/// The score when the normaliser `c(ψ)` is 0 (ψ = 1): no information, as in scikit-learn.
const SCORE_NO_INFORMATION: f64 = 0.5;

/// A fitted isolation forest. See the module docs of [`super`].
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    /// ψ actually used: `min(sample_size, rows)`; the normaliser is `c(ψ)`.
    sample_size: u32,
    /// Length of every row the forest fits and scores.
    features: usize,
    trees: Vec<IsoTree>,
}

/// `c(n)`, the average path length of an unsuccessful search in a binary search tree of
/// `n` keys, exactly scikit-learn's `_average_path_length`: 0 for `n ≤ 1`, 1 for `n = 2`,
/// else `2(ln(n−1) + γ) − 2(n−1)/n`.
pub fn average_path_length(n: u32) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = f64::from(n);
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Height limit of a tree grown on `psi` rows: `ceil(log2(max(psi, 2)))`, in edges.
pub fn height_limit(psi: u32) -> u32 {
    if psi <= 2 {
        1
    } else {
        u32::BITS - (psi - 1).leading_zeros()
    }
}

impl Forest {
    /// Fits `trees` trees on sub-samples of `min(sample_size, rows.len())` rows. The same
    /// rows, sizes and seed give the same forest on every machine and version (splitmix64).
    ///
    /// Panics when `rows` is empty, when rows differ in length or hold a non-finite value,
    /// or when `trees` or `sample_size` is 0 or above [`MAX_TREES`] / [`MAX_SAMPLE_SIZE`]:
    /// the caller builds the rows and chooses the sizes.
    pub fn fit(rows: &[Vec<f64>], trees: usize, sample_size: usize, seed: u64) -> Forest {
        assert!(!rows.is_empty(), "isolation forest: no rows to fit");
        assert!(
            (1..=MAX_TREES).contains(&trees),
            "isolation forest: {trees} trees (1..={MAX_TREES})"
        );
        assert!(
            (1..=MAX_SAMPLE_SIZE).contains(&sample_size),
            "isolation forest: sample size {sample_size} (1..={MAX_SAMPLE_SIZE})"
        );
        let features = rows[0].len();
        assert!(
            rows.iter().all(|r| r.len() == features),
            "isolation forest: rows of different lengths"
        );
        assert!(
            rows.iter().flatten().all(|v| v.is_finite()),
            "isolation forest: a row holds a non-finite value"
        );
        let psi = sample_size.min(rows.len());
        let mut rng = SplitMix64(seed);
        let mut pool: Vec<usize> = (0..rows.len()).collect();
        let grown = (0..trees)
            .map(|_| {
                let mut sample = draw_sample(&mut pool, psi, &mut rng);
                Grower::new(rows, features, psi, &mut rng).grow(&mut sample)
            })
            .collect();
        let sample_size = u32::try_from(psi).expect("psi <= MAX_SAMPLE_SIZE fits a u32");
        Forest {
            sample_size,
            features,
            trees: grown,
        }
    }

    /// The anomaly score of `x`: `2^(−E[h(x)] / c(ψ))` in `(0, 1]`, higher is more
    /// anomalous; scikit-learn's `-score_samples`. A NaN feature goes right at every split.
    /// Panics when `x` does not have the forest's number of features.
    pub fn score(&self, x: &[f64]) -> f64 {
        assert_eq!(
            x.len(),
            self.features,
            "isolation forest: row of {} features, the model has {}",
            x.len(),
            self.features
        );
        let norm = average_path_length(self.sample_size);
        if norm == 0.0 {
            return SCORE_NO_INFORMATION;
        }
        let total: f64 = self.trees.iter().map(|t| path_length(t, x)).sum();
        let mean = total / self.trees.len() as f64;
        (-mean / norm).exp2()
    }

    /// The score at `quantile` (0..=1) of `rows`' scores, linearly interpolated between
    /// order statistics (numpy's default): 0.99 puts about the top 1% at or above it.
    /// Panics when `rows` is empty or `quantile` is outside 0..=1.
    pub fn threshold(&self, rows: &[Vec<f64>], quantile: f64) -> f64 {
        assert!(
            !rows.is_empty(),
            "isolation forest: no rows for a threshold"
        );
        assert!(
            (0.0..=1.0).contains(&quantile),
            "isolation forest: quantile {quantile} outside 0..=1"
        );
        let mut scores: Vec<f64> = rows.iter().map(|r| self.score(r)).collect();
        scores.sort_by(f64::total_cmp);
        let at = quantile * (scores.len() - 1) as f64;
        let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
        scores[lo] + (scores[hi] - scores[lo]) * (at - lo as f64)
    }

    /// ψ, the rows each tree was grown on.
    pub fn sample_size(&self) -> u32 {
        self.sample_size
    }

    /// Length of the rows the forest scores.
    pub fn features(&self) -> usize {
        self.features
    }

    /// The trees, in the layout `FraudModelFit` stores.
    pub fn trees(&self) -> &[IsoTree] {
        &self.trees
    }

    /// Rebuilds a forest from stored trees after checking them: 1..=[`MAX_SAMPLE_SIZE`]
    /// rows and 1..=[`MAX_TREES`] trees; in every tree an exact pre-order layout (each
    /// node reached once, the right child right after the left subtree, none left over),
    /// inner nodes with a feature below `features`, a finite split and size 0, leaves with
    /// `right == 0`, `split == 0.0` and size ≥ 1, leaf sizes summing to `sample_size`, and
    /// no leaf deeper than the height limit.
    pub fn from_trees(
        sample_size: u32,
        features: usize,
        trees: Vec<IsoTree>,
    ) -> Result<Forest, String> {
        if sample_size == 0 || sample_size as usize > MAX_SAMPLE_SIZE {
            return Err(format!("sample size {sample_size} (1..={MAX_SAMPLE_SIZE})"));
        }
        if trees.is_empty() || trees.len() > MAX_TREES {
            return Err(format!("{} trees (1..={MAX_TREES})", trees.len()));
        }
        for (i, tree) in trees.iter().enumerate() {
            check_tree(tree, sample_size, features).map_err(|e| format!("tree {i}: {e}"))?;
        }
        Ok(Forest {
            sample_size,
            features,
            trees,
        })
    }
}

/// Area under the ROC curve of `scores` against `labels` (true = positive): the chance
/// that a random positive scores above a random negative, ties counted half (the
/// Mann–Whitney U over mid-ranks). NaN when either class is empty. Panics when the lengths
/// differ or a score is NaN.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(
        scores.len(),
        labels.len(),
        "auc: scores and labels differ in length"
    );
    assert!(scores.iter().all(|s| !s.is_nan()), "auc: a score is NaN");
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let tied = order[start..]
            .iter()
            .take_while(|&&i| scores[i] == scores[order[start]])
            .count();
        let end = start + tied;
        // Ranks start+1..=end share their mean.
        let mid_rank = (start + 1 + end) as f64 / 2.0;
        let hits = order[start..end].iter().filter(|&&i| labels[i]).count();
        rank_sum += mid_rank * hits as f64;
        start = end;
    }
    let (p, n) = (positives as f64, negatives as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// `h(x)` in one tree: edges walked to the leaf plus `c(leaf size)`.
fn path_length(tree: &IsoTree, x: &[f64]) -> f64 {
    let mut at = 0;
    let mut depth = 0u32;
    loop {
        let node = &tree.nodes[at];
        if node.feature == LEAF {
            return f64::from(depth) + average_path_length(node.size);
        }
        at = if x[node.feature as usize] <= node.split {
            at + 1
        } else {
            node.right as usize
        };
        depth += 1;
    }
}

/// Walks a stored tree in pre-order with an explicit stack (no recursion on outside data)
/// and checks everything [`Forest::from_trees`] promises.
fn check_tree(tree: &IsoTree, sample_size: u32, features: usize) -> Result<(), String> {
    let nodes = &tree.nodes;
    let limit = height_limit(sample_size);
    // (index the layout says comes next, its depth); pre-order means popped == cursor.
    let mut pending: Vec<(usize, u32)> = vec![(0, 0)];
    let mut cursor = 0;
    let mut leaf_rows = 0u64;
    while let Some((at, depth)) = pending.pop() {
        if at != cursor {
            return Err(format!("node {cursor}: the layout points to {at} instead"));
        }
        let node = nodes.get(at).ok_or(format!("node {at} is missing"))?;
        cursor += 1;
        if depth > limit {
            return Err(format!("node {at}: depth {depth} over the limit {limit}"));
        }
        if node.feature == LEAF {
            if node.right != 0 || node.split != 0.0 || node.size == 0 {
                return Err(format!("node {at}: malformed leaf {node:?}"));
            }
            leaf_rows += u64::from(node.size);
            continue;
        }
        if node.feature as usize >= features || !node.split.is_finite() || node.size != 0 {
            return Err(format!("node {at}: malformed inner node {node:?}"));
        }
        pending.push((node.right as usize, depth + 1));
        pending.push((at + 1, depth + 1));
    }
    if cursor != nodes.len() {
        return Err(format!("{} nodes, {cursor} reachable", nodes.len()));
    }
    if leaf_rows != u64::from(sample_size) {
        return Err(format!("leaves hold {leaf_rows} rows, not {sample_size}"));
    }
    Ok(())
}

/// splitmix64 (Steele, Lea & Flood 2014): tiny, seedable, stable across versions.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) from the top 53 bits.
    fn unit(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }

    /// Uniform in 0..n (n ≥ 1) by multiply-shift; the bias is below n / 2^64.
    fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// `psi` distinct row indices, uniformly: a partial Fisher–Yates shuffle of `pool`, which
/// carries its order from tree to tree (any order is as good a start as the identity).
fn draw_sample(pool: &mut [usize], psi: usize, rng: &mut SplitMix64) -> Vec<usize> {
    for i in 0..psi {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    pool[..psi].to_vec()
}

/// Grows one tree in pre-order.
struct Grower<'a> {
    rows: &'a [Vec<f64>],
    features: usize,
    limit: u32,
    rng: &'a mut SplitMix64,
    nodes: Vec<IsoNode>,
}

impl<'a> Grower<'a> {
    fn new(rows: &'a [Vec<f64>], features: usize, psi: usize, rng: &'a mut SplitMix64) -> Self {
        let psi = u32::try_from(psi).expect("psi <= MAX_SAMPLE_SIZE fits a u32");
        Grower {
            rows,
            features,
            limit: height_limit(psi),
            rng,
            nodes: Vec::with_capacity(2 * psi as usize),
        }
    }

    fn grow(mut self, sample: &mut [usize]) -> IsoTree {
        self.node(sample, 0);
        IsoTree { nodes: self.nodes }
    }

    /// Appends the subtree of the rows `idx` (reordered in place) at `depth`.
    fn node(&mut self, idx: &mut [usize], depth: u32) {
        let split = if depth < self.limit && idx.len() > 1 {
            self.choose_split(idx)
        } else {
            None
        };
        let Some((feature, value)) = split else {
            let size = u32::try_from(idx.len()).expect("a leaf holds at most psi rows");
            self.nodes.push(IsoNode {
                feature: LEAF,
                right: 0,
                split: 0.0,
                size,
            });
            return;
        };
        let at = self.nodes.len();
        self.nodes.push(IsoNode {
            feature: u32::try_from(feature).expect("feature index fits a u32"),
            right: 0,
            split: value,
            size: 0,
        });
        let rows = self.rows;
        let mid = partition(idx, |r| rows[r][feature] <= value);
        assert!(
            0 < mid && mid < idx.len(),
            "a split leaves both sides non-empty"
        );
        let (left, right) = idx.split_at_mut(mid);
        self.node(left, depth + 1);
        self.nodes[at].right = u32::try_from(self.nodes.len()).expect("under 2 psi nodes");
        self.node(right, depth + 1);
    }

    /// A feature drawn uniformly among those not constant over `idx` and a split uniform
    /// in `[min, max)` of it; `None` when every feature is constant.
    fn choose_split(&mut self, idx: &[usize]) -> Option<(usize, f64)> {
        if self.features == 0 {
            return None;
        }
        let first = self.rng.below(self.features);
        let (lo, hi) = self.range(idx, first);
        let (feature, lo, hi) = if hi > lo {
            (first, lo, hi)
        } else {
            // The first draw was constant: draw again among the others that are not,
            // which keeps the choice uniform over the non-constant features.
            let open: Vec<(usize, f64, f64)> = (0..self.features)
                .map(|f| (f, self.range(idx, f)))
                .filter(|&(_, (lo, hi))| hi > lo)
                .map(|(f, (lo, hi))| (f, lo, hi))
                .collect();
            if open.is_empty() {
                return None;
            }
            open[self.rng.below(open.len())]
        };
        let split = lo + self.rng.unit() * (hi - lo);
        // Rounding (or a range too wide for f64) may land on `hi`: then cut at `lo`, as
        // scikit-learn does, so both sides stay non-empty.
        Some((feature, if lo <= split && split < hi { split } else { lo }))
    }

    /// (min, max) of feature `f` over the rows `idx`.
    fn range(&self, idx: &[usize], f: usize) -> (f64, f64) {
        idx.iter()
            .map(|&r| self.rows[r][f])
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }
}

/// Moves the indices for which `left` holds to the front; returns how many there are.
fn partition(idx: &mut [usize], left: impl Fn(usize) -> bool) -> usize {
    let mut mid = 0;
    for i in 0..idx.len() {
        if left(idx[i]) {
            idx.swap(mid, i);
            mid += 1;
        }
    }
    mid
}
