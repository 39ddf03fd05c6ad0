//! Anomaly model costs: fitting an isolation forest of 100 trees on sub-samples of 256 rows
//! from 100,000 rows of 8 features, and scoring one row against it, beside baselines
//! measured in the same run: reading the rows once (for the fit) and scoring against a
//! forest of one tree (for the score), so the ratios hold across machines.
//!
//! `cargo bench --bench fraud_anomaly`. In `cargo test` mode (each benchmark run once) the
//! rows are 10,000 so the suite stays quick.

use clicktrail_actors::fraud::anomaly::forest::{Forest, SAMPLE_SIZE_DEFAULT, TREES_DEFAULT};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::time::Duration;

const FEATURES: usize = 8;

/// `n` rows: two Gaussian clusters with 1% uniform outliers in a wider box.
fn rows(n: usize) -> Vec<Vec<f64>> {
    let mut rng = fastrand::Rng::with_seed(8);
    let mut normal = move || {
        let (u, v) = (1.0 - rng.f64(), rng.f64());
        (
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos(),
            rng.f64(),
        )
    };
    (0..n)
        .map(|i| {
            (0..FEATURES)
                .map(|f| {
                    let (z, u) = normal();
                    match i % 100 {
                        0 => -10.0 + 20.0 * u,
                        k if k % 3 == 0 => 4.0 + 0.5 * z + f as f64,
                        _ => z,
                    }
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100_000 } else { 10_000 };
    let data = rows(n);

    let mut group = c.benchmark_group(format!("fit_{n}x{FEATURES}"));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("baseline_read_rows", |b| {
        b.iter(|| black_box(&data).iter().flatten().sum::<f64>())
    });
    group.bench_function("1_tree_psi_256", |b| {
        b.iter(|| Forest::fit(black_box(&data), 1, SAMPLE_SIZE_DEFAULT, 1))
    });
    group.bench_function("100_trees_psi_256", |b| {
        b.iter(|| Forest::fit(black_box(&data), TREES_DEFAULT, SAMPLE_SIZE_DEFAULT, 1))
    });
    group.finish();

    let one = Forest::fit(&data, 1, SAMPLE_SIZE_DEFAULT, 1);
    let forest = Forest::fit(&data, TREES_DEFAULT, SAMPLE_SIZE_DEFAULT, 1);
    // An inlier and an outlier: the outlier's paths are short, the inlier's long.
    let probes = [("inlier", &data[1]), ("outlier", &data[0])];
    let mut group = c.benchmark_group("score_one_row");
    for (what, row) in probes {
        group.bench_function(format!("baseline_1_tree_{what}"), |b| {
            b.iter(|| one.score(black_box(row)))
        });
        group.bench_function(format!("100_trees_{what}"), |b| {
            b.iter(|| forest.score(black_box(row)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
