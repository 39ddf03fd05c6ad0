//! Attribution model costs (issue #18): Markov orders 1 and 3 fitted on 1,000,000
//! generated journeys (grouped), exact Shapley shares for one 15-channel journey and the
//! rule weights of a 12-touch journey, beside a baseline measured in the same run: summing
//! the grouped counts, the cost of reading the data once.
//!
//! `cargo bench --bench attribution`. In `cargo test` mode (each benchmark run once) the
//! journey set is 10,000 so the suite stays quick. `ATTRIBUTION_BENCH_CSV=FILE` also writes
//! the grouped journeys there, to time ChannelAttribution on the same data.

use clicktrail_actors::attribution::models::{
    fit_markov, fit_shapley, rule_weights, Grouped, Rule,
};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::time::Duration;

const CHANNELS: usize = 12;

/// `n` journeys over `CHANNELS` partners: 1..=12 touches with repeats and loops, some
/// partners lifting conversion more than others; grouped.
fn journeys(n: usize) -> Grouped {
    let mut rng = fastrand::Rng::with_seed(18);
    let mut g = Grouped::default();
    let ids: Vec<u32> = (0..CHANNELS)
        .map(|i| g.channel(&format!("partner-{i:02}")))
        .collect();
    let lift: Vec<f64> = (0..CHANNELS).map(|i| (i as f64 * 0.7).sin()).collect();
    for _ in 0..n {
        let mut len = 1;
        while len < 12 && rng.f64() < 0.65 {
            len += 1;
        }
        // Entry partners are the first 6 to 12: some are seldom first.
        let entry = CHANNELS.min(6 + rng.usize(..7));
        let mut t: Vec<u32> = vec![ids[rng.usize(..entry)]];
        while t.len() < len {
            let r = rng.f64();
            let next = if r < 0.25 {
                t[t.len() - 1]
            } else if r < 0.4 && t.len() >= 2 {
                t[t.len() - 2]
            } else {
                ids[rng.usize(..CHANNELS)]
            };
            t.push(next);
        }
        let mut distinct = t.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let score = -3.0 + distinct.iter().map(|&c| lift[c as usize]).sum::<f64>();
        let converted = rng.f64() < 1.0 / (1.0 + (-score).exp());
        let value = if converted {
            rng.u32(500..20_000) as f64 / 100.0
        } else {
            0.0
        };
        g.add(
            t,
            f64::from(u8::from(converted)),
            f64::from(u8::from(!converted)),
            value,
        );
    }
    g
}

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 1_000_000 } else { 10_000 };
    let g = journeys(n);
    if let Ok(path) = std::env::var("ATTRIBUTION_BENCH_CSV") {
        std::fs::write(&path, g.to_csv()).unwrap();
        eprintln!("wrote {n} journeys ({} paths) to {path}", g.paths.len());
    }
    eprintln!("{n} journeys, {} distinct paths", g.paths.len());

    let mut group = c.benchmark_group(format!("fit_{n}_journeys"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("baseline_sum_counts", |b| {
        b.iter(|| {
            let mut t = (0.0, 0.0, 0.0);
            for p in &black_box(&g).paths {
                t.0 += p.conversions;
                t.1 += p.nulls;
                t.2 += p.value;
            }
            t
        })
    });
    group.bench_function("markov_order_1", |b| {
        b.iter(|| fit_markov(black_box(&g), 1).unwrap())
    });
    group.bench_function("markov_order_3", |b| {
        b.iter(|| fit_markov(black_box(&g), 3).unwrap())
    });
    group.finish();

    // Shapley: coalitions over 15 channels (short journeys plus the full set), then the
    // exact shares of the 15-channel journey.
    let mut sg = Grouped::default();
    let ids: Vec<u32> = (0..15).map(|i| sg.channel(&format!("c{i}"))).collect();
    let mut rng = fastrand::Rng::with_seed(15);
    for _ in 0..20_000 {
        let len = rng.usize(1..=5);
        let t: Vec<u32> = (0..len).map(|_| ids[rng.usize(..15)]).collect();
        let conv = rng.f64() < 0.1 * len as f64;
        sg.add(
            t,
            f64::from(u8::from(conv)),
            f64::from(u8::from(!conv)),
            0.0,
        );
    }
    sg.add(ids.clone(), 3.0, 1.0, 0.0);
    let fit = fit_shapley(&sg, 15, 1);
    c.bench_function("shapley_exact_shares_15_channels", |b| {
        b.iter(|| fit.shares(black_box(&ids), 15, 1))
    });

    let day = 86_400_000_000i64;
    let at: Vec<i64> = (0..12).map(|i| i * day / 3).collect();
    for rule in [
        Rule::Linear,
        Rule::PositionBased,
        Rule::WShaped,
        Rule::TimeDecay {
            half_life_us: 7 * day,
        },
    ] {
        c.bench_function(&format!("rule_weights_12_touches_{rule}"), |b| {
            b.iter(|| rule_weights(rule, black_box(&at), 4 * day, Some(6)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
