use super::*;

/// The worked example of the design doc (issue #18).
fn example() -> Grouped {
    let mut g = Grouped::default();
    for (path, c, n) in [
        ("A > B", 2.0, 1.0),
        ("A > C", 1.0, 2.0),
        ("B", 1.0, 3.0),
        ("C > A > B", 1.0, 0.0),
        ("B > A > B", 0.0, 2.0),
        ("A > A > C", 1.0, 1.0),
    ] {
        let t = path.split(" > ").map(|c| g.channel(c)).collect();
        g.add(t, c, n, c * 10.0);
    }
    g
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn worked_example_markov_order_1() {
    let g = example();
    assert_eq!(g.channels, ["A", "B", "C"]);
    let m = fit_markov(&g, 1).unwrap();
    assert!(close(m.p_conversion, 0.4), "{}", m.p_conversion);
    let want = [11.0 / 18.0, 44.0 / 61.0, 11.0 / 30.0];
    for (got, want) in m.removal_effects.iter().zip(want) {
        assert!(close(*got, want), "{got} vs {want}");
    }
    let sum: f64 = want.iter().sum();
    for (c, re) in want.iter().enumerate() {
        assert!(close(m.conversions[c], 6.0 * re / sum));
        assert!(close(m.value[c], 60.0 * re / sum));
    }
}

#[test]
fn worked_example_shapley() {
    let s = fit_shapley(&example(), SHAPLEY_EXACT_MAX, 1);
    for (got, want) in s.conversions.iter().zip([1.8, 2.975, 1.225]) {
        assert!(close(*got, want), "{got} vs {want}");
    }
    for (got, want) in s.value.iter().zip([18.0, 29.75, 12.25]) {
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
    assert_eq!((s.sampled_journeys, s.max_std_error), (0, 0.0));
    // {A,B} is observed twice (A > B and B > A > B): 2 conversions of 5 journeys.
    assert!(s.coalitions.contains(&(vec![0, 1], 2.0, 5.0)));
    let (sh, se) = s.shares(&[0, 1], 15, 1);
    assert!(close(sh[0], 0.1875) && close(sh[1], 0.8125) && se == 0.0);
}

#[test]
fn shapley_sampling_is_deterministic_and_close_to_exact() {
    let g = example();
    let s = fit_shapley(&g, SHAPLEY_EXACT_MAX, 7);
    let (exact, _) = s.shares(&[0, 1, 2], 15, 7);
    let (a, se_a) = s.shares(&[0, 1, 2], 2, 7);
    let (b, se_b) = s.shares(&[0, 1, 2], 2, 7);
    assert_eq!((&a, se_a), (&b, se_b));
    assert!(se_a > 0.0 && se_a < 0.01);
    for (x, y) in exact.iter().zip(&a) {
        assert!((x - y).abs() < 5.0 * se_a + 1e-12, "{exact:?} vs {a:?}");
    }
    let sampled = fit_shapley(&g, 2, 7);
    assert_eq!(sampled.sampled_journeys, 1);
    assert!(sampled.max_std_error > 0.0);
}

#[test]
fn worked_example_markov_order_2_matches_channel_attribution_encoding() {
    // ChannelAttribution's order-2 matrix for this data: start -> AB 3/15, AC 3/15, B 4/15,
    // CA 1/15, BA 2/15, AA 2/15; AA -> AC; CA -> AB; BA -> AB; AB converts 1/2, AC 2/5,
    // B 1/4. So P = 3/15·1/2 + 3/15·2/5 + 4/15·1/4 + 1/15·1/2 + 2/15·1/2 + 2/15·2/5.
    let m = fit_markov(&example(), 2).unwrap();
    let p = 0.2 * 0.5 + 0.2 * 0.4 + 4.0 / 15.0 * 0.25 + 3.0 / 15.0 * 0.5 + 2.0 / 15.0 * 0.4;
    assert!(close(m.p_conversion, p), "{} vs {p}", m.p_conversion);
    // Without A only B converts (4/15 · 1/4).
    assert!(close(m.removal_effects[0], 1.0 - (1.0 / 15.0) / p));
    assert!(fit_markov(&example(), 0).is_err() && fit_markov(&example(), 5).is_err());
}

#[test]
fn markov_large_component_uses_gauss_seidel_and_agrees_with_lu() {
    // A ring of 300 channels with exits: one strongly connected component above DENSE_MAX.
    let mut g = Grouped::default();
    let ch: Vec<u32> = (0..300).map(|i| g.channel(&format!("c{i}"))).collect();
    for i in 0..300usize {
        let t = vec![ch[i], ch[(i + 1) % 300], ch[(i + 7) % 300]];
        g.add(t, (i % 3) as f64, 1.0 + (i % 5) as f64, 1.0);
    }
    let m = fit_markov(&g, 1).unwrap();
    let lu = markov::fit_markov_with(&g, 1, 1000).unwrap();
    let gs = markov::fit_markov_with(&g, 1, 0).unwrap();
    assert!(m.p_conversion > 0.0 && m.p_conversion < 1.0);
    assert!((m.p_conversion - lu.p_conversion).abs() < 1e-13);
    for ((a, b), c) in m
        .removal_effects
        .iter()
        .zip(&lu.removal_effects)
        .zip(&gs.removal_effects)
    {
        assert!(
            (a - b).abs() < 1e-12 && (a - c).abs() < 1e-12,
            "{a} {b} {c}"
        );
    }
    // The worked example through Gauss–Seidel alone.
    let gs = markov::fit_markov_with(&example(), 1, 0).unwrap();
    assert!(close(gs.removal_effects[1], 44.0 / 61.0));
    let s: f64 = m.conversions.iter().sum();
    assert!((s - g.totals().0).abs() < 1e-9);
    assert!(m.removal_effects.iter().all(|&r| (0.0..=1.0).contains(&r)));
}

#[test]
fn markov_without_conversions_is_all_zero() {
    let mut g = Grouped::default();
    let a = g.channel("A");
    g.add(vec![a, a], 0.0, 3.0, 0.0);
    let m = fit_markov(&g, 1).unwrap();
    assert_eq!(m.p_conversion, 0.0);
    assert_eq!(m.removal_effects, [0.0]);
    assert_eq!(m.conversions, [0.0]);
}

#[test]
fn heuristics_count_repeats_like_channel_attribution() {
    let g = example();
    let lin = heuristic_credit(&g, Rule::Linear);
    for (got, want) in lin.iter().zip([2.5, 2.0 + 1.0 / 3.0, 1.0 + 1.0 / 6.0]) {
        assert!(close(got.0, want), "{got:?} vs {want}");
        assert!(close(got.1, want * 10.0));
    }
    let first: Vec<f64> = heuristic_credit(&g, Rule::FirstClick)
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(first, [4.0, 1.0, 1.0]);
    let last: Vec<f64> = heuristic_credit(&g, Rule::LastClick)
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(last, [0.0, 4.0, 2.0]);
    let pos: Vec<f64> = heuristic_credit(&g, Rule::PositionBased)
        .iter()
        .map(|c| c.0)
        .collect();
    // A > B: 1/1; A > C: .5/.5; B: 1; C > A > B: .4 .2 .4; A > A > C: .4+.2 / .4
    assert!(close(pos[0], 1.0 + 0.5 + 0.2 + 0.6) && close(pos[1], 1.0 + 1.0 + 0.4));
}

#[test]
fn apportion_edge_cases() {
    assert_eq!(apportion_ppm(&[]), Vec::<u32>::new());
    assert_eq!(apportion_ppm(&[0.0]), [PPM_WHOLE]);
    assert_eq!(apportion_ppm(&[0.0, 0.0, 0.0]), [333_334, 333_333, 333_333]);
    assert_eq!(apportion_ppm(&[1.0, 1.0, 1.0]), [333_334, 333_333, 333_333]);
    assert_eq!(apportion_ppm(&[2.0, 1.0]), [666_667, 333_333]);
    assert_eq!(apportion_ppm(&[1.0, 2.0]), [333_333, 666_667]);
    assert_eq!(apportion_ppm(&[5.0, 0.0]), [PPM_WHOLE, 0]);
    assert_eq!(apportion_ppm(&[f64::NAN, -1.0, 1.0]), [0, 0, PPM_WHOLE]);
    assert_eq!(
        apportion_ppm(&[f64::INFINITY, f64::NAN]),
        [500_000, 500_000]
    );
    assert_eq!(apportion_ppm(&[1e-300, 1e-300]), [500_000, 500_000]);
    // 7 equal: 142857 each, 1 left over to the first.
    let w = apportion_ppm(&[1.0; 7]);
    assert_eq!(w[0], 142_858);
    assert!(w[1..].iter().all(|&x| x == 142_857));
}

fn rw(rule: Rule, n: usize, lead: Option<usize>) -> Vec<u32> {
    rule_weights(rule, &vec![0; n], 0, lead)
}

#[test]
fn rule_models_by_hand() {
    use Rule::*;
    for r in [LastClick, FirstClick, Linear, PositionBased, WShaped] {
        assert!(rw(r, 0, None).is_empty());
        assert_eq!(rw(r, 1, Some(0)), [PPM_WHOLE]);
    }
    assert_eq!(rw(LastClick, 3, None), [0, 0, PPM_WHOLE]);
    assert_eq!(rw(FirstClick, 3, None), [PPM_WHOLE, 0, 0]);
    assert_eq!(rw(Linear, 4, None), [250_000; 4]);
    assert_eq!(rw(PositionBased, 2, None), [500_000, 500_000]);
    assert_eq!(rw(PositionBased, 3, None), [400_000, 200_000, 400_000]);
    assert_eq!(
        rw(PositionBased, 5, None),
        [400_000, 66_667, 66_667, 66_666, 400_000]
    );
    // W-shaped: no lead = position-based; two touches 50/50 whatever the lead.
    assert_eq!(rw(WShaped, 5, None), rw(PositionBased, 5, None));
    assert_eq!(rw(WShaped, 2, Some(0)), [500_000, 500_000]);
    assert_eq!(rw(WShaped, 5, Some(9)), rw(PositionBased, 5, None));
    // Lead in the middle with no other touches: thirds.
    assert_eq!(rw(WShaped, 3, Some(1)), [333_334, 333_333, 333_333]);
    // Lead in the middle with others: 30% each, 10% shared by the two others.
    assert_eq!(
        rw(WShaped, 5, Some(2)),
        [300_000, 50_000, 300_000, 50_000, 300_000]
    );
    // Lead equal to the first or the last: two key touches, 45% each.
    assert_eq!(rw(WShaped, 4, Some(0)), [450_000, 50_000, 50_000, 450_000]);
    assert_eq!(rw(WShaped, 4, Some(3)), [450_000, 50_000, 50_000, 450_000]);
    assert_eq!(rw(WShaped, 3, Some(0)), [450_000, 100_000, 450_000]);
}

#[test]
fn time_decay_by_hand() {
    let day = 24 * 3600 * 1_000_000i64;
    let td = Rule::TimeDecay { half_life_us: day };
    // Ages 2 days, 1 day, 0: shares 1/4, 1/2, 1 over 7/4.
    let w = rule_weights(td, &[0, day, 2 * day], 2 * day, None);
    assert_eq!(w, [142_857, 285_714, 571_429]);
    // Repeats at the same time count twice; touches after the conversion are age 0.
    let w = rule_weights(td, &[day, day, 3 * day], 2 * day, None);
    assert_eq!(w, [250_000, 250_000, 500_000]);
    // Very old journeys do not underflow to an equal split.
    let w = rule_weights(td, &[0, 2000 * day], 2001 * day, None);
    assert_eq!(w, [0, PPM_WHOLE]);
    // No half-life: the newest touches only.
    let w = rule_weights(Rule::TimeDecay { half_life_us: 0 }, &[0, 5, 5], 9, None);
    assert_eq!(w, [0, 500_000, 500_000]);
}

#[test]
fn rule_names_round_trip() {
    for name in Rule::NAMES {
        let r: Rule = name.parse().unwrap();
        assert_eq!(r.to_string(), name);
    }
    assert_eq!(
        "time-decay".parse::<Rule>().unwrap(),
        Rule::TimeDecay {
            half_life_us: 7 * 86_400_000_000
        }
    );
    assert!("markov".parse::<Rule>().unwrap_err().contains("last-click"));
}

#[test]
fn weights_always_sum_to_whole() {
    let mut rng = fastrand::Rng::with_seed(18);
    let rules = [
        Rule::LastClick,
        Rule::FirstClick,
        Rule::Linear,
        Rule::TimeDecay {
            half_life_us: 3_600_000_000,
        },
        Rule::TimeDecay { half_life_us: 1 },
        Rule::PositionBased,
        Rule::WShaped,
    ];
    for _ in 0..5_000 {
        let n = rng.usize(1..40);
        let at: Vec<i64> = (0..n).map(|_| rng.i64(0..1_000_000_000_000)).collect();
        let lead = rng.bool().then(|| rng.usize(0..n + 2));
        for r in rules {
            let w = rule_weights(r, &at, rng.i64(0..1_100_000_000_000), lead);
            assert_eq!(w.len(), n);
            assert_eq!(w.iter().map(|&x| u64::from(x)).sum::<u64>(), 1_000_000);
        }
        let shares: Vec<f64> = (0..n)
            .map(|_| rng.f64() * 1e6f64.powi(rng.i32(-3..3)))
            .collect();
        assert_eq!(apportion_ppm(&shares).iter().sum::<u32>(), PPM_WHOLE);
    }
}

#[test]
fn csv_round_trip_and_merging() {
    let text = "path,total_conversions,total_null,total_conversion_value\r\n\
                A > B,2,1,20.5\n\
                \"A>B\",1,0,3\n\
                \"x, \"\"y\"\" > B\" , 0 ,1, 0\n\
                \n\
                B,1,3,1e1\n";
    let g = Grouped::parse_csv(text).unwrap();
    assert_eq!(g.channels, ["A", "B", "x, \"y\""]);
    assert_eq!(g.paths.len(), 3);
    assert_eq!(
        (g.paths[0].conversions, g.paths[0].nulls, g.paths[0].value),
        (3.0, 1.0, 23.5)
    );
    let csv = g.to_csv();
    assert!(csv.contains("\"x, \"\"y\"\" > B\",0,1,0\n"), "{csv}");
    let again = Grouped::parse_csv(&csv).unwrap();
    assert_eq!(again.channels, g.channels);
    assert_eq!(again.to_csv(), csv);
    // Without the value column: value 0.
    let g = Grouped::parse_csv("path,total_conversions,total_null\nA,1,2\n").unwrap();
    assert_eq!(g.paths[0].value, 0.0);
}

#[test]
fn csv_errors_name_the_line() {
    let h = "path,total_conversions,total_null\n";
    let err = |body: &str| Grouped::parse_csv(&format!("{h}A,1,1\n{body}")).unwrap_err();
    assert!(Grouped::parse_csv("").unwrap_err().contains("header"));
    assert!(Grouped::parse_csv("a,b,c\n")
        .unwrap_err()
        .contains("line 1"));
    assert!(err("A,-1,0").contains("line 3") && err("A,-1,0").contains("total_conversions"));
    assert!(err("A,1,NaN").contains("total_null"));
    assert!(err("A,1,inf").contains("line 3"));
    assert!(err("A,x,1").contains("line 3"));
    assert!(err(",1,1").contains("empty channel"));
    assert!(err("A >  > B,1,1").contains("empty channel"));
    assert!(err("A,1").contains("2 fields"));
    assert!(err("\"A,1,1").contains("unterminated"));
    assert!(err("A\"B,1,1").contains("quote"));
    assert!(err("\"A\"x,1,1").contains("after a quoted field"));
}

#[test]
fn grouped_reindexes_after_direct_edits() {
    let mut g = example();
    let before = g.paths.len();
    g.paths.pop();
    let a = g.channel("A");
    g.add(vec![a, a, 2], 1.0, 0.0, 0.0);
    assert_eq!(g.paths.len(), before);
    g.add(vec![0, 1], 1.0, 0.0, 0.0);
    assert_eq!(g.paths[0].conversions, 3.0);
}
