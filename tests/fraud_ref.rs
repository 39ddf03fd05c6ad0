//! The anomaly model's reference check: our isolation forest against scikit-learn's
//! `IsolationForest(n_estimators=100, max_samples=256, random_state=0)` on seeded
//! planted-anomaly data sets, through `scripts/fraud_ref.py`. The two forests draw
//! different random trees, so the check is statistical: for every data set and for every
//! one of several seeds of ours, the ROC AUC on the planted labels within
//! [`AUC_TOLERANCE`] of scikit-learn's, the Spearman rank correlation of the two scores
//! (computed here, cross-checked with scipy's) at least [`SPEARMAN_MIN`], and the mean
//! scores of outliers and of inliers each within [`MEAN_TOLERANCE`] of scikit-learn's.
//!
//! How tight that is: over 20 seeds (and 20 scikit-learn `random_state`s) the AUC on the
//! `mixed` set varies with a standard deviation of about 0.0075 in both implementations,
//! with the same mean within 0.003; `clusters` about 0.0006. So on `mixed` the AUC
//! tolerance is about two standard deviations of the difference of two forests: the
//! outcome is fixed for these seeds and scikit-learn 1.9.1 (pinned in `scripts/test`),
//! but another scikit-learn release drawing other trees may need another look.
//!
//! Needs the project's `.venv` (numpy, scikit-learn), which `scripts/test` creates; without
//! it the test is skipped with a message, except under `CI=true`, where a missing venv is
//! a failure.

use clicktrail_actors::fraud::anomaly::forest::{auc, Forest, SAMPLE_SIZE_DEFAULT, TREES_DEFAULT};
use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Largest |AUC ours − AUC scikit-learn| on the planted labels.
const AUC_TOLERANCE: f64 = 0.02;
/// Smallest Spearman rank correlation between our scores and scikit-learn's.
const SPEARMAN_MIN: f64 = 0.9;
/// Largest difference of the mean score of the outliers (and of the inliers).
const MEAN_TOLERANCE: f64 = 0.05;
/// Our seeds: every one must pass, so nothing is tuned to one lucky forest.
const SEEDS: [u64; 4] = [0, 1, 2, 3];
/// How close our AUC and Spearman must be to scikit-learn's / scipy's on the same scores.
const SAME_METRIC_TOLERANCE: f64 = 1e-9;

/// One planted-anomaly data set.
struct DataSet {
    name: &'static str,
    rows: Vec<Vec<f64>>,
    /// true = a planted outlier.
    labels: Vec<bool>,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let (u, v) = (1.0 - rng.f64(), rng.f64());
    (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
}

/// 5,000 inliers from three Gaussian clusters in 6 dimensions (different centres, spreads
/// and weights) and 100 outliers (2%) uniform in a box wider than all of them.
fn clusters() -> DataSet {
    let mut rng = fastrand::Rng::with_seed(61);
    let centres = [
        ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 1.0),
        ([6.0, 5.0, -1.0, 2.0, -6.0, 3.0], 0.6),
        ([-4.0, 7.0, 5.0, -5.0, 2.0, -3.0], 1.4),
    ];
    let mut rows = Vec::new();
    for i in 0..5_000 {
        let (centre, spread) = centres[[0, 0, 0, 0, 0, 1, 1, 1, 2, 2][i % 10]];
        rows.push(
            centre
                .iter()
                .map(|c| c + spread * normal(&mut rng))
                .collect(),
        );
    }
    for _ in 0..100 {
        rows.push((0..6).map(|_| -12.0 + 26.0 * rng.f64()).collect());
    }
    let labels = (0..rows.len()).map(|i| i >= 5_000).collect();
    DataSet {
        name: "clusters",
        rows,
        labels,
    }
}

/// Conversion-like rows on mixed scales with heavy tails, ties and a near-constant flag:
/// log-normal seconds from click (around an hour), clicks per IP and day (small counts),
/// a Pareto order amount, a Cauchy-tailed noise feature, a 1e-3-scale ratio, a flag that is
/// mostly 0 and the time of day in microseconds (up to 8.64e10). The 100 outliers (2%)
/// convert within seconds from IPs with hundreds of clicks, with ordinary other features.
fn mixed() -> DataSet {
    let mut rng = fastrand::Rng::with_seed(62);
    let mut rows = Vec::new();
    for i in 0..5_100 {
        let outlier = i >= 5_000;
        let seconds = if outlier {
            0.5 + 6.0 * rng.f64()
        } else {
            (3600f64.ln() + 1.2 * normal(&mut rng)).exp()
        };
        let clicks = if outlier {
            rng.u32(60..400)
        } else {
            1 + (0..6).filter(|_| rng.f64() < 0.3).count() as u32
        };
        let amount = 20.0 * (1.0 - rng.f64()).powf(-1.0 / 1.5);
        let cauchy = (std::f64::consts::PI * (rng.f64() - 0.5)).tan();
        let ratio = 1e-3 * (2.0 + normal(&mut rng));
        let flag = f64::from(u8::from(rng.f64() < 0.03));
        let time_of_day_us = 86_400e6 * rng.f64();
        rows.push(vec![
            seconds,
            f64::from(clicks),
            amount,
            cauchy,
            ratio,
            flag,
            time_of_day_us,
        ]);
    }
    let labels = (0..rows.len()).map(|i| i >= 5_000).collect();
    DataSet {
        name: "mixed",
        rows,
        labels,
    }
}

/// Fewer rows (200) than ψ = 256, so both forests grow every tree on all of them:
/// 190 inliers in a 2-d Gaussian and 10 outliers on a ring around it.
fn small() -> DataSet {
    let mut rng = fastrand::Rng::with_seed(63);
    let mut rows: Vec<Vec<f64>> = (0..190)
        .map(|_| vec![normal(&mut rng), normal(&mut rng)])
        .collect();
    for k in 0..10 {
        let angle = TAU * f64::from(k) / 10.0;
        rows.push(vec![4.5 * angle.cos(), 4.5 * angle.sin()]);
    }
    let labels = (0..rows.len()).map(|i| i >= 190).collect();
    DataSet {
        name: "small",
        rows,
        labels,
    }
}

fn write_csv(path: &Path, rows: &[Vec<f64>]) {
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:?}")).collect();
        writeln!(text, "{}", cells.join(",")).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn read_column(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| l.trim().parse().unwrap()).collect()
}

/// Mid-ranks (ties share their mean rank), 1-based.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let tied = order[start..]
            .iter()
            .take_while(|&&i| x[i] == x[order[start]])
            .count();
        let mid = (2 * start + tied + 1) as f64 / 2.0;
        for &i in &order[start..start + tied] {
            r[i] = mid;
        }
        start += tied;
    }
    r
}

/// Spearman's rank correlation: Pearson's over mid-ranks (scipy's `spearmanr`).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let mut cov = 0.0;
    let (mut va, mut vb) = (0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    cov / (va * vb).sqrt()
}

/// Mean score of the rows labelled `outliers`.
fn mean_of(scores: &[f64], labels: &[bool], outliers: bool) -> f64 {
    let picked: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l == outliers)
        .map(|(s, _)| *s)
        .collect();
    picked.iter().sum::<f64>() / picked.len() as f64
}

/// Fits our forest per seed, writes rows, labels and our scores to `dir`; returns the
/// scores, one vector per seed.
fn ours(dir: &Path, set: &DataSet) -> Vec<Vec<f64>> {
    let per_seed: Vec<Vec<f64>> = SEEDS
        .iter()
        .map(|&seed| {
            let forest = Forest::fit(&set.rows, TREES_DEFAULT, SAMPLE_SIZE_DEFAULT, seed);
            set.rows.iter().map(|r| forest.score(r)).collect()
        })
        .collect();
    write_csv(&dir.join(format!("{}.csv", set.name)), &set.rows);
    let labels: Vec<Vec<f64>> = set
        .labels
        .iter()
        .map(|&l| vec![f64::from(u8::from(l))])
        .collect();
    write_csv(&dir.join(format!("{}.labels.csv", set.name)), &labels);
    let by_row: Vec<Vec<f64>> = (0..set.rows.len())
        .map(|i| per_seed.iter().map(|s| s[i]).collect())
        .collect();
    write_csv(&dir.join(format!("{}.ours.csv", set.name)), &by_row);
    per_seed
}

/// Compares our scores with scikit-learn's for one data set; appends failures.
fn compare(dir: &Path, set: &DataSet, ours: &[Vec<f64>], failures: &mut Vec<String>) {
    let sk = read_column(&dir.join(format!("{}.sklearn.csv", set.name)));
    assert_eq!(
        sk.len(),
        set.rows.len(),
        "{}: scikit-learn scored every row",
        set.name
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{}.metrics.json", set.name))).unwrap(),
    )
    .unwrap();
    let num = |v: &serde_json::Value| v.as_f64().unwrap();
    let auc_sk = auc(&sk, &set.labels);
    let (out_sk, in_sk) = (
        mean_of(&sk, &set.labels, true),
        mean_of(&sk, &set.labels, false),
    );
    let mut same = vec![("auc sklearn", auc_sk, num(&metrics["auc_sklearn"]))];
    println!(
        "{:<9} sklearn      AUC {auc_sk:.4}  mean outlier {out_sk:.4}  inlier {in_sk:.4}",
        set.name
    );
    for (k, (seed, scores)) in SEEDS.iter().zip(ours).enumerate() {
        let a = auc(scores, &set.labels);
        let rho = spearman(scores, &sk);
        let (out, inl) = (
            mean_of(scores, &set.labels, true),
            mean_of(scores, &set.labels, false),
        );
        println!(
            "{:<9} ours seed {seed}  AUC {a:.4}  mean outlier {out:.4}  inlier {inl:.4}  \
             Spearman {rho:.4}  |dAUC| {:.4}",
            set.name,
            (a - auc_sk).abs()
        );
        same.push(("auc ours", a, num(&metrics["ours"][k]["auc"])));
        same.push(("spearman", rho, num(&metrics["ours"][k]["spearman"])));
        let what = format!("{} seed {seed}", set.name);
        if (a - auc_sk).abs() > AUC_TOLERANCE {
            failures.push(format!("{what}: AUC {a:.4} vs scikit-learn {auc_sk:.4}"));
        }
        if rho < SPEARMAN_MIN {
            failures.push(format!("{what}: Spearman {rho:.4} < {SPEARMAN_MIN}"));
        }
        if (out - out_sk).abs() > MEAN_TOLERANCE || (inl - in_sk).abs() > MEAN_TOLERANCE {
            failures.push(format!(
                "{what}: mean scores outlier {out:.4} inlier {inl:.4} vs scikit-learn \
                 {out_sk:.4} {in_sk:.4}"
            ));
        }
    }
    for (what, here, python) in same {
        if (here - python).abs() > SAME_METRIC_TOLERANCE {
            failures.push(format!(
                "{}: {what} {here} here, {python} in python",
                set.name
            ));
        }
    }
}

#[test]
fn isolation_forest_matches_scikit_learn() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        let msg = "fraud_ref: .venv is missing (scripts/test creates it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; CI=true, so this is a failure");
        }
        eprintln!("{msg}; skipping the scikit-learn reference check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sets = [clusters(), mixed(), small()];
    let scores: Vec<Vec<Vec<f64>>> = sets.iter().map(|s| ours(dir.path(), s)).collect();
    let out = Command::new(&python)
        .current_dir(root)
        .arg("scripts/fraud_ref.py")
        .arg(dir.path())
        .args(sets.iter().map(|s| s.name))
        .output()
        .expect("run .venv/bin/python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "scripts/fraud_ref.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let mut failures = Vec::new();
    for (set, ours) in sets.iter().zip(&scores) {
        compare(dir.path(), set, ours, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
