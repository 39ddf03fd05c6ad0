//! The measures: what the scorer flagged against what the traffic was, for clicks and for
//! conversions, overall, per pattern and per rule. Pure (labels and verdicts in, a report
//! out); the definitions are in the parent module's documentation.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// The targets of the issue, on conversions: false-positive rate below this...
pub const FPR_MAX: f64 = 0.005;
/// ...while catching at least this share of the fraudulent ones.
pub const RECALL_MIN: f64 = 0.95;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    Click,
    Conversion,
}

/// What the generator says one click or conversion was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    pub r#ref: String,
    pub subject: Subject,
    /// The pattern; `None`: legitimate.
    pub label: Option<String>,
    /// The rule meant to catch the pattern.
    pub rule: Option<String>,
    /// Who sent it (the affiliate's kind, `-mixed` when it also cheats, or `fraud`).
    pub source: String,
}

/// A subject's latest verdict, as the API gives it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// `review` or `reject`.
    pub flagged: bool,
    /// Each hit: its rule and score (0..1).
    pub hits: Vec<(String, f64)>,
}

/// `n / of`, none when `of` is 0.
pub fn ratio(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// One pattern's subjects and how many were flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatternRow {
    pub pattern: String,
    /// The rule meant to catch it.
    pub rule: String,
    pub subjects: u64,
    pub flagged: u64,
    pub recall: Option<f64>,
    /// Of its subjects, how many its rule hit (flagged or not).
    pub rule_hits: u64,
}

/// One rule's hits: a hit is a subject whose latest verdict names the rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleRow {
    pub rule: String,
    pub hits: u64,
    pub fraud_hits: u64,
    pub legit_hits: u64,
    /// Share of its hits that are fraudulent.
    pub precision: Option<f64>,
    /// Legitimate subjects it hit, over all legitimate subjects.
    pub fpr: Option<f64>,
    /// Legitimate subjects flagged that would not be without this rule's hit (the rest of
    /// their score stays under the review threshold): the false positives it causes.
    pub legit_decisive: u64,
    /// Legitimate hits by source.
    pub legit_by_source: BTreeMap<String, u64>,
    /// Fraudulent hits by pattern.
    pub fraud_by_pattern: BTreeMap<String, u64>,
}

/// Legitimate subjects of one source and how many were flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceRow {
    pub source: String,
    pub legit: u64,
    pub flagged: u64,
    pub fpr: Option<f64>,
}

/// The measures of one kind of subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindReport {
    pub subjects: u64,
    pub legit: u64,
    pub fraud: u64,
    /// Subjects the import gave no id (refused): left out of everything below.
    pub not_imported: u64,
    /// Subjects without any verdict: normal for clicks (allowed), a fault for conversions.
    pub without_verdict: u64,
    pub flagged: u64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub true_negatives: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub fpr: Option<f64>,
    pub patterns: Vec<PatternRow>,
    pub rules: Vec<RuleRow>,
    pub sources: Vec<SourceRow>,
}

/// The targets, measured on conversions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Targets {
    pub fpr_max: f64,
    pub recall_min: f64,
    pub fpr: Option<f64>,
    pub recall: Option<f64>,
    pub fpr_pass: bool,
    pub recall_pass: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub conversions: KindReport,
    pub clicks: KindReport,
    pub targets: Targets,
}

/// Whether the rest of a subject's score, without `rule`, stays under `review`.
fn decisive(hits: &[(String, f64)], rule: &str, review: f64) -> bool {
    let keep: f64 = hits
        .iter()
        .filter(|(r, _)| r != rule)
        .map(|(_, s)| 1.0 - s.clamp(0.0, 1.0))
        .product();
    // Scores are ppm on the server; compare there, not in floating point.
    (((1.0 - keep) * 1e6).round() as i64) < (review * 1e6).round() as i64
}

fn kind_report(
    subject: Subject,
    truths: &[Truth],
    ids: &HashMap<String, String>,
    verdicts: &HashMap<String, Verdict>,
    review: f64,
) -> KindReport {
    let mut k = KindReport {
        subjects: 0,
        legit: 0,
        fraud: 0,
        not_imported: 0,
        without_verdict: 0,
        flagged: 0,
        true_positives: 0,
        false_positives: 0,
        false_negatives: 0,
        true_negatives: 0,
        precision: None,
        recall: None,
        fpr: None,
        patterns: Vec::new(),
        rules: Vec::new(),
        sources: Vec::new(),
    };
    let none = Verdict::default();
    let mut patterns: BTreeMap<String, PatternRow> = BTreeMap::new();
    let mut rules: BTreeMap<String, RuleRow> = BTreeMap::new();
    let mut sources: BTreeMap<String, SourceRow> = BTreeMap::new();
    for t in truths.iter().filter(|t| t.subject == subject) {
        let Some(id) = ids.get(&t.r#ref) else {
            k.not_imported += 1;
            continue;
        };
        k.subjects += 1;
        let v = match verdicts.get(id) {
            Some(v) => v,
            None => {
                k.without_verdict += 1;
                &none
            }
        };
        k.flagged += u64::from(v.flagged);
        match &t.label {
            Some(p) => {
                k.fraud += 1;
                if v.flagged {
                    k.true_positives += 1;
                } else {
                    k.false_negatives += 1;
                }
                let row = patterns.entry(p.clone()).or_insert_with(|| PatternRow {
                    pattern: p.clone(),
                    rule: t.rule.clone().unwrap_or_default(),
                    subjects: 0,
                    flagged: 0,
                    recall: None,
                    rule_hits: 0,
                });
                row.subjects += 1;
                row.flagged += u64::from(v.flagged);
                row.rule_hits += u64::from(v.hits.iter().any(|(r, _)| Some(r) == t.rule.as_ref()));
            }
            None => {
                k.legit += 1;
                if v.flagged {
                    k.false_positives += 1;
                } else {
                    k.true_negatives += 1;
                }
                let row = sources
                    .entry(t.source.clone())
                    .or_insert_with(|| SourceRow {
                        source: t.source.clone(),
                        legit: 0,
                        flagged: 0,
                        fpr: None,
                    });
                row.legit += 1;
                row.flagged += u64::from(v.flagged);
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for (rule, _) in &v.hits {
            if seen.contains(&rule.as_str()) {
                continue;
            }
            seen.push(rule);
            let row = rules.entry(rule.clone()).or_insert_with(|| RuleRow {
                rule: rule.clone(),
                hits: 0,
                fraud_hits: 0,
                legit_hits: 0,
                precision: None,
                fpr: None,
                legit_decisive: 0,
                legit_by_source: BTreeMap::new(),
                fraud_by_pattern: BTreeMap::new(),
            });
            row.hits += 1;
            match &t.label {
                Some(p) => {
                    row.fraud_hits += 1;
                    *row.fraud_by_pattern.entry(p.clone()).or_default() += 1;
                }
                None => {
                    row.legit_hits += 1;
                    *row.legit_by_source.entry(t.source.clone()).or_default() += 1;
                    if v.flagged && decisive(&v.hits, rule, review) {
                        row.legit_decisive += 1;
                    }
                }
            }
        }
    }
    k.precision = ratio(k.true_positives, k.true_positives + k.false_positives);
    k.recall = ratio(k.true_positives, k.fraud);
    k.fpr = ratio(k.false_positives, k.legit);
    k.patterns = patterns
        .into_values()
        .map(|mut p| {
            p.recall = ratio(p.flagged, p.subjects);
            p
        })
        .collect();
    k.rules = rules
        .into_values()
        .map(|mut r| {
            r.precision = ratio(r.fraud_hits, r.hits);
            r.fpr = ratio(r.legit_hits, k.legit);
            r
        })
        .collect();
    k.rules
        .sort_by(|a, b| b.hits.cmp(&a.hits).then(a.rule.cmp(&b.rule)));
    k.sources = sources
        .into_values()
        .map(|mut s| {
            s.fpr = ratio(s.flagged, s.legit);
            s
        })
        .collect();
    k
}

/// The report: `truths` are the labelled events, `ids` the server's id of each ref,
/// `verdicts` each subject's latest verdict by server id, `review` the score (0..1) from
/// which a subject goes to review.
pub fn compute(
    truths: &[Truth],
    ids: &HashMap<String, String>,
    verdicts: &HashMap<String, Verdict>,
    review: f64,
) -> Report {
    let conversions = kind_report(Subject::Conversion, truths, ids, verdicts, review);
    let clicks = kind_report(Subject::Click, truths, ids, verdicts, review);
    let targets = Targets {
        fpr_max: FPR_MAX,
        recall_min: RECALL_MIN,
        fpr: conversions.fpr,
        recall: conversions.recall,
        fpr_pass: conversions.fpr.is_some_and(|f| f < FPR_MAX),
        recall_pass: conversions.recall.is_some_and(|r| r >= RECALL_MIN),
    };
    Report {
        conversions,
        clicks,
        targets,
    }
}

// ---------------------------------------------------------------------------------------
// The table

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.2}%", x * 100.0))
}

fn num(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.3}"))
}

fn map_text(m: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// The report as text tables.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let (v, c) = (&self.conversions, &self.clicks);
        let _ = writeln!(t, "{:<28} {:>14} {:>14}", "", "conversions", "clicks");
        for (name, a, b) in [
            ("subjects", v.subjects.to_string(), c.subjects.to_string()),
            ("fraudulent", v.fraud.to_string(), c.fraud.to_string()),
            ("legitimate", v.legit.to_string(), c.legit.to_string()),
            (
                "flagged (review/reject)",
                v.flagged.to_string(),
                c.flagged.to_string(),
            ),
            (
                "true positives",
                v.true_positives.to_string(),
                c.true_positives.to_string(),
            ),
            (
                "false positives",
                v.false_positives.to_string(),
                c.false_positives.to_string(),
            ),
            (
                "false negatives",
                v.false_negatives.to_string(),
                c.false_negatives.to_string(),
            ),
            ("precision", num(v.precision), num(c.precision)),
            ("recall", pct(v.recall), pct(c.recall)),
            ("false-positive rate", pct(v.fpr), pct(c.fpr)),
            (
                "without a verdict",
                v.without_verdict.to_string(),
                format!("{} (allowed)", c.without_verdict),
            ),
            (
                "refused by the import",
                v.not_imported.to_string(),
                c.not_imported.to_string(),
            ),
        ] {
            let _ = writeln!(t, "{name:<28} {a:>14} {b:>14}");
        }
        let g = &self.targets;
        let _ = writeln!(
            t,
            "\ntargets (conversions): false-positive rate {} < {}: {}; recall {} >= {}: {}",
            pct(g.fpr),
            pct(Some(g.fpr_max)),
            if g.fpr_pass { "PASS" } else { "MISS" },
            pct(g.recall),
            pct(Some(g.recall_min)),
            if g.recall_pass { "PASS" } else { "MISS" },
        );
        let _ = writeln!(
            t,
            "\n{:<26} {:<24} {:>20} {:>20}",
            "recall by pattern", "its rule", "conversions", "clicks"
        );
        let mut names: Vec<&String> = v
            .patterns
            .iter()
            .chain(&c.patterns)
            .map(|p| &p.pattern)
            .collect();
        names.sort();
        names.dedup();
        let cell = |rows: &[PatternRow], n: &str| {
            rows.iter()
                .find(|p| p.pattern == n)
                .map_or("-".to_string(), |p| {
                    format!("{}/{} {}", p.flagged, p.subjects, pct(p.recall))
                })
        };
        for n in names {
            let rule = v
                .patterns
                .iter()
                .chain(&c.patterns)
                .find(|p| &p.pattern == n)
                .map_or("", |p| p.rule.as_str());
            let _ = writeln!(
                t,
                "{n:<26} {rule:<24} {:>20} {:>20}",
                cell(&v.patterns, n),
                cell(&c.patterns, n)
            );
        }
        for (what, k) in [("conversions", v), ("clicks", c)] {
            let _ = writeln!(
                t,
                "\nrules on {what}{}\n{:<24} {:>7} {:>7} {:>7} {:>9} {:>8} {:>6}  legit hits by source | fraud hits by pattern",
                if what == "clicks" {
                    " (a click has a verdict only from review up: hits of allowed clicks are not seen)"
                } else {
                    ""
                },
                "rule",
                "hits",
                "fraud",
                "legit",
                "precision",
                "FPR",
                "FP by"
            );
            for r in &k.rules {
                let _ = writeln!(
                    t,
                    "{:<24} {:>7} {:>7} {:>7} {:>9} {:>8} {:>6}  {} | {}",
                    r.rule,
                    r.hits,
                    r.fraud_hits,
                    r.legit_hits,
                    num(r.precision),
                    pct(r.fpr),
                    r.legit_decisive,
                    map_text(&r.legit_by_source),
                    map_text(&r.fraud_by_pattern)
                );
            }
        }
        let _ = writeln!(
            t,
            "(FP by: legitimate subjects flagged that would not be without that rule's hit)"
        );
        let _ = writeln!(
            t,
            "\n{:<18} {:>24} {:>24}",
            "legit by source", "conversions flagged", "clicks flagged"
        );
        let mut srcs: Vec<&String> = v
            .sources
            .iter()
            .chain(&c.sources)
            .map(|s| &s.source)
            .collect();
        srcs.sort();
        srcs.dedup();
        let cell = |rows: &[SourceRow], n: &str| {
            rows.iter()
                .find(|s| s.source == n)
                .map_or("-".to_string(), |s| {
                    format!("{}/{} {}", s.flagged, s.legit, pct(s.fpr))
                })
        };
        for s in srcs {
            let _ = writeln!(
                t,
                "{s:<18} {:>24} {:>24}",
                cell(&v.sources, s),
                cell(&c.sources, s)
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(r: &str, subject: Subject, label: Option<&str>, source: &str) -> Truth {
        Truth {
            r#ref: r.into(),
            subject,
            label: label.map(String::from),
            rule: label.map(|l| format!("{l}-rule")),
            source: source.into(),
        }
    }

    fn verdict(flagged: bool, hits: &[(&str, f64)]) -> Verdict {
        Verdict {
            flagged,
            hits: hits.iter().map(|(r, s)| (r.to_string(), *s)).collect(),
        }
    }

    /// Four conversions and four clicks by hand:
    /// - v1 fraud (p), flagged by p-rule: TP
    /// - v2 fraud (p), allowed with a weak hit of p-rule: FN
    /// - v3 legit, flagged by x (0.6) beside p-rule (0.3): FP, x decisive, p-rule not
    /// - v4 legit, allowed, no hit: TN
    /// - k1 fraud (q) flagged; k2 fraud (q) without verdict; k3 legit without verdict;
    ///   k4 not imported.
    fn example() -> Report {
        use Subject::*;
        let truths = vec![
            truth("v1", Conversion, Some("p"), "fraud"),
            truth("v2", Conversion, Some("p"), "fraud"),
            truth("v3", Conversion, None, "email"),
            truth("v4", Conversion, None, "content"),
            truth("k1", Click, Some("q"), "fraud"),
            truth("k2", Click, Some("q"), "fraud"),
            truth("k3", Click, None, "content"),
            truth("k4", Click, None, "content"),
        ];
        let ids: HashMap<String, String> = ["v1", "v2", "v3", "v4", "k1", "k2", "k3"]
            .iter()
            .map(|r| (r.to_string(), format!("id-{r}")))
            .collect();
        let verdicts: HashMap<String, Verdict> = [
            ("id-v1", verdict(true, &[("p-rule", 0.9)])),
            ("id-v2", verdict(false, &[("p-rule", 0.3)])),
            ("id-v3", verdict(true, &[("x", 0.6), ("p-rule", 0.3)])),
            ("id-v4", verdict(false, &[])),
            ("id-k1", verdict(true, &[("q-rule", 0.95)])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        compute(&truths, &ids, &verdicts, 0.5)
    }

    #[test]
    fn conversions_by_hand() {
        let r = example();
        let v = &r.conversions;
        assert_eq!((v.subjects, v.fraud, v.legit, v.flagged), (4, 2, 2, 2));
        assert_eq!(
            (
                v.true_positives,
                v.false_positives,
                v.false_negatives,
                v.true_negatives
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(
            (v.precision, v.recall, v.fpr),
            (Some(0.5), Some(0.5), Some(0.5))
        );
        assert_eq!(v.without_verdict, 0);
        assert_eq!(v.patterns.len(), 1);
        let p = &v.patterns[0];
        assert_eq!(
            (p.pattern.as_str(), p.subjects, p.flagged, p.rule_hits),
            ("p", 2, 1, 2)
        );
        assert_eq!(p.recall, Some(0.5));
        let rule = |n: &str| v.rules.iter().find(|r| r.rule == n).unwrap();
        let pr = rule("p-rule");
        assert_eq!(
            (pr.hits, pr.fraud_hits, pr.legit_hits, pr.legit_decisive),
            (3, 2, 1, 0)
        );
        assert_eq!(pr.precision, Some(2.0 / 3.0));
        assert_eq!(pr.fpr, Some(0.5));
        assert_eq!(pr.legit_by_source["email"], 1);
        assert_eq!(pr.fraud_by_pattern["p"], 2);
        let x = rule("x");
        assert_eq!((x.hits, x.legit_hits, x.legit_decisive), (1, 1, 1));
        assert_eq!(x.precision, Some(0.0));
        assert_eq!(v.rules[0].rule, "p-rule", "most hits first");
        let email = v.sources.iter().find(|s| s.source == "email").unwrap();
        assert_eq!((email.legit, email.flagged, email.fpr), (1, 1, Some(1.0)));
        assert!(!r.targets.fpr_pass && !r.targets.recall_pass);
        assert_eq!(r.targets.fpr, Some(0.5));
    }

    #[test]
    fn clicks_without_verdict_are_allowed_and_refused_ones_left_out() {
        let c = example().clicks;
        assert_eq!((c.subjects, c.not_imported, c.without_verdict), (3, 1, 2));
        assert_eq!((c.fraud, c.legit, c.flagged), (2, 1, 1));
        assert_eq!(
            (c.recall, c.precision, c.fpr),
            (Some(0.5), Some(1.0), Some(0.0))
        );
        assert_eq!(c.patterns[0].rule_hits, 1);
    }

    #[test]
    fn empty_sets_give_no_ratio_and_targets_pass_only_when_met() {
        let r = compute(&[], &HashMap::new(), &HashMap::new(), 0.5);
        assert_eq!(
            (
                r.conversions.recall,
                r.conversions.fpr,
                r.conversions.precision
            ),
            (None, None, None)
        );
        assert!(!r.targets.fpr_pass && !r.targets.recall_pass);
        // 1 legit flagged of 1000 (0.1%) and 96 of 100 fraudulent caught: both pass.
        let mut truths = Vec::new();
        let mut ids = HashMap::new();
        let mut verdicts = HashMap::new();
        for i in 0..1100 {
            let r = format!("v{i}");
            let fraud = i >= 1000;
            truths.push(truth(
                &r,
                Subject::Conversion,
                fraud.then_some("p"),
                "content",
            ));
            ids.insert(r.clone(), r.clone());
            let flagged = (fraud && i < 1096) || i == 0;
            verdicts.insert(r, verdict(flagged, &[]));
        }
        let r = compute(&truths, &ids, &verdicts, 0.5);
        assert_eq!(r.targets.fpr, Some(0.001));
        assert_eq!(r.targets.recall, Some(0.96));
        assert!(r.targets.fpr_pass && r.targets.recall_pass);
    }

    #[test]
    fn decisive_compares_the_rest_of_the_score_with_the_threshold() {
        let hits = vec![
            ("a".to_string(), 0.6),
            ("b".to_string(), 0.35),
            ("c".to_string(), 0.3),
        ];
        // Without a: 1 - 0.65 * 0.7 = 0.545 >= 0.5: a is not decisive.
        assert!(!decisive(&hits, "a", 0.5));
        // Without b: 1 - 0.4 * 0.7 = 0.72: not decisive; alone it would be.
        assert!(!decisive(&hits, "b", 0.5));
        assert!(decisive(&hits[..2], "a", 0.5));
        // Exactly at the threshold stays flagged.
        assert!(!decisive(&[("a".into(), 0.9), ("b".into(), 0.5)], "a", 0.5));
    }

    #[test]
    fn the_table_says_pass_or_miss_and_names_every_pattern_and_rule() {
        let t = example().table();
        assert!(t.contains("MISS"), "{t}");
        for needle in [
            "p-rule",
            "q-rule",
            "recall by pattern",
            "false-positive rate",
            "email",
        ] {
            assert!(t.contains(needle), "{needle} in\n{t}");
        }
    }
}
