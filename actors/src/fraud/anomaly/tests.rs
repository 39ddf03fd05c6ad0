use super::forest::*;
use clicktrail_storage::schema::{IsoNode, IsoTree};

/// `n` rows of `d` standard normal features (Box–Muller), seeded.
fn gaussian_rows(n: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            (0..d)
                .map(|_| {
                    let (u, v) = (1.0 - rng.f64(), rng.f64());
                    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
                })
                .collect()
        })
        .collect()
}

/// 1,000 inliers around the origin in 3 dimensions, then 10 planted outliers far out.
fn planted() -> (Vec<Vec<f64>>, Vec<bool>) {
    let mut rows = gaussian_rows(1000, 3, 1);
    let mut labels = vec![false; rows.len()];
    for i in 0..10 {
        let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
        rows.push(vec![
            sign * (7.0 + i as f64 * 0.3),
            6.0 - i as f64,
            sign * 5.0,
        ]);
        labels.push(true);
    }
    (rows, labels)
}

fn leaf(size: u32) -> IsoNode {
    IsoNode {
        feature: LEAF,
        right: 0,
        split: 0.0,
        size,
    }
}

fn inner(feature: u32, right: u32, split: f64) -> IsoNode {
    IsoNode {
        feature,
        right,
        split,
        size: 0,
    }
}

#[test]
fn average_path_length_matches_hand_computed_values() {
    assert_eq!(average_path_length(0), 0.0);
    assert_eq!(average_path_length(1), 0.0);
    assert_eq!(average_path_length(2), 1.0);
    // 2(ln 2 + γ) − 4/3 and 2(ln 255 + γ) − 510/256, by hand.
    assert!((average_path_length(3) - 1.207_392_358).abs() < 1e-8);
    assert!((average_path_length(256) - 10.244_770_92).abs() < 1e-7);
}

#[test]
fn height_limit_is_ceil_log2_of_at_least_two() {
    let want = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (256, 8), (257, 9)];
    for (psi, limit) in want {
        assert_eq!(height_limit(psi), limit, "psi {psi}");
    }
}

#[test]
fn a_seed_gives_the_same_forest_and_another_seed_another() {
    let rows = gaussian_rows(600, 4, 2);
    let a = Forest::fit(&rows, 20, 128, 7);
    assert_eq!(a, Forest::fit(&rows, 20, 128, 7));
    assert_ne!(a, Forest::fit(&rows, 20, 128, 8));
    assert_eq!(a.trees().len(), 20);
    assert_eq!(a.sample_size(), 128);
    assert_eq!(a.features(), 4);
}

#[test]
fn planted_outliers_score_above_every_inlier() {
    let (rows, labels) = planted();
    let forest = Forest::fit(&rows, TREES_DEFAULT, SAMPLE_SIZE_DEFAULT, 3);
    let scores: Vec<f64> = rows.iter().map(|r| forest.score(r)).collect();
    assert!(scores.iter().all(|s| 0.0 < *s && *s <= 1.0));
    let inlier_max = (0..rows.len())
        .filter(|&i| !labels[i])
        .map(|i| scores[i])
        .fold(0.0, f64::max);
    let outlier_min = (0..rows.len())
        .filter(|&i| labels[i])
        .map(|i| scores[i])
        .fold(1.0, f64::min);
    assert!(outlier_min > inlier_max, "{outlier_min} <= {inlier_max}");
    assert_eq!(auc(&scores, &labels), 1.0);
    // The origin, the densest point, is as normal as it gets.
    assert!(forest.score(&[0.0, 0.0, 0.0]) < 0.5);
}

#[test]
fn the_threshold_is_a_quantile_of_the_training_scores() {
    let (rows, _) = planted();
    let forest = Forest::fit(&rows, 50, 256, 4);
    let mut scores: Vec<f64> = rows.iter().map(|r| forest.score(r)).collect();
    scores.sort_by(f64::total_cmp);
    assert_eq!(forest.threshold(&rows, 0.0), scores[0]);
    assert_eq!(forest.threshold(&rows, 1.0), scores[scores.len() - 1]);
    // 1,010 rows: the 0.99 quantile sits at 0.99 × 1009 = 998.91, between the order
    // statistics 998 and 999, so the 11 scores from 999 up are at or above it.
    let t = forest.threshold(&rows, 0.99);
    assert!((t - (scores[998] + 0.91 * (scores[999] - scores[998]))).abs() < 1e-12);
    let flagged = scores.iter().filter(|&&s| s >= t).count();
    assert_eq!(flagged, 11);
}

#[test]
fn constant_features_never_split_and_all_constant_rows_give_single_leaves() {
    let mut rows = gaussian_rows(300, 2, 5);
    for r in &mut rows {
        r.insert(1, 42.0);
    }
    let forest = Forest::fit(&rows, 30, 64, 9);
    let splits_on_constant = forest
        .trees()
        .iter()
        .flat_map(|t| &t.nodes)
        .filter(|n| n.feature == 1)
        .count();
    assert_eq!(splits_on_constant, 0);

    let same = vec![vec![1.0, -2.0, 3.5]; 100];
    let forest = Forest::fit(&same, 10, 64, 9);
    for tree in forest.trees() {
        assert_eq!(tree.nodes, [leaf(64)]);
    }
    // h = 0 + c(ψ) everywhere: the score is 2^-1 (up to the rounding of the mean).
    assert!((forest.score(&[1.0, -2.0, 3.5]) - 0.5).abs() < 1e-12);
    assert!((forest.score(&[9.0, 9.0, 9.0]) - 0.5).abs() < 1e-12);
}

#[test]
fn fewer_rows_than_the_sample_size_use_them_all_and_one_row_scores_one_half() {
    let rows = gaussian_rows(40, 2, 6);
    let forest = Forest::fit(&rows, 10, 256, 1);
    assert_eq!(forest.sample_size(), 40);
    assert!(forest.trees().iter().all(|t| t.nodes.len() < 2 * 40));

    let one = Forest::fit(&rows[..1], 10, 256, 1);
    assert_eq!(one.sample_size(), 1);
    assert_eq!(one.score(&[5.0, 5.0]), 0.5);
}

#[test]
fn stored_trees_round_trip() {
    let (rows, _) = planted();
    let forest = Forest::fit(&rows, 25, 200, 11);
    let back = Forest::from_trees(forest.sample_size(), 3, forest.trees().to_vec()).unwrap();
    assert_eq!(back, forest);
    let probe = [3.0, -1.0, 0.5];
    assert_eq!(back.score(&probe), forest.score(&probe));

    let sample = clicktrail_storage::schema::samples::fraud_model();
    let stored = Forest::from_trees(sample.sample_size, sample.features.len(), sample.trees);
    assert!(stored.is_ok(), "{stored:?}");
}

/// A change to a good tree's nodes.
type Edit = dyn Fn(&mut Vec<IsoNode>);

#[test]
fn broken_layouts_are_refused() {
    // A good tree on ψ = 4: root splits feature 0, its left child is a leaf of 1, its
    // right child splits feature 1 into leaves of 1 and 2.
    let good = vec![
        inner(0, 2, 0.5),
        leaf(1),
        inner(1, 4, 2.0),
        leaf(1),
        leaf(2),
    ];
    assert!(Forest::from_trees(
        4,
        2,
        vec![IsoTree {
            nodes: good.clone()
        }]
    )
    .is_ok());
    let broken = |edit: &Edit| {
        let mut nodes = good.clone();
        edit(&mut nodes);
        Forest::from_trees(4, 2, vec![IsoTree { nodes }])
    };
    let cases: [(&str, &Edit); 11] = [
        ("right out of range", &|n| n[2].right = 9),
        ("right onto the left child", &|n| n[0].right = 1),
        ("right back to the root", &|n| n[2].right = 0),
        ("a leaf of size 0", &|n| n[1].size = 0),
        ("a leaf with a child", &|n| n[3].right = 4),
        ("a leaf with a split", &|n| n[4].split = 1.0),
        ("a feature past the row", &|n| n[2].feature = 2),
        ("a NaN split", &|n| n[0].split = f64::NAN),
        ("a node left over", &|n| n.push(leaf(1))),
        ("sizes not summing to ψ", &|n| n[4].size = 3),
        ("no nodes", &|n| n.clear()),
    ];
    for (what, edit) in cases {
        assert!(broken(edit).is_err(), "{what} was accepted");
    }
    assert!(Forest::from_trees(4, 2, Vec::new()).is_err(), "no trees");
    assert!(Forest::from_trees(
        0,
        2,
        vec![IsoTree {
            nodes: good.clone()
        }]
    )
    .is_err());
    // ψ = 4 allows depth 2; this chain puts two leaves (of the 4 rows) at depth 3.
    let deep = vec![
        inner(0, 6, 0.5),
        inner(0, 5, 0.4),
        inner(0, 4, 0.3),
        leaf(1),
        leaf(1),
        leaf(1),
        leaf(1),
    ];
    let err = Forest::from_trees(4, 2, vec![IsoTree { nodes: deep }]).unwrap_err();
    assert!(err.contains("over the limit 2"), "{err}");
}

#[test]
fn auc_of_tiny_hand_cases() {
    // scikit-learn's roc_auc_score example: 3 of 4 positive–negative pairs ordered right.
    assert_eq!(
        auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
        0.75
    );
    // Ties count half: (0.5 + 1 + 0) + (1 + 1 + 0.5) of 6 pairs.
    let got = auc(
        &[0.5, 0.5, 0.9, 0.1, 0.9],
        &[true, false, true, false, false],
    );
    assert!((got - 4.0 / 6.0).abs() < 1e-12);
    assert_eq!(auc(&[1.0, 1.0, 1.0], &[true, false, false]), 0.5);
    assert_eq!(auc(&[0.9, 0.1], &[false, true]), 0.0);
    assert!(auc(&[0.3, 0.4], &[true, true]).is_nan());
}

#[test]
#[should_panic(expected = "row of 2 features")]
fn a_row_of_the_wrong_length_is_refused() {
    let forest = Forest::fit(&gaussian_rows(50, 3, 1), 5, 32, 1);
    forest.score(&[0.0, 1.0]);
}

#[test]
#[should_panic(expected = "non-finite")]
fn non_finite_training_values_are_refused() {
    let mut rows = gaussian_rows(50, 2, 1);
    rows[7][1] = f64::INFINITY;
    Forest::fit(&rows, 5, 32, 1);
}
