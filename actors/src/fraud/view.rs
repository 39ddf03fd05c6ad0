//! The fraud engine's read model, which the HTTP layer only queries: every verdict (the
//! latest per subject first-class), the review queue, rule hit counts, the clusters, the
//! anomaly model's figures and the scorer's progress.

use super::graph::Cluster;
use clicktrail_storage::schema::{FraudVerdictV2, Kind, RuleHit, VerdictAction};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};

/// One verdict as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRow {
    /// Position in the log (the API's cursor).
    pub seq: u64,
    pub at_us: i64,
    pub kind: Kind,
    pub subject_id: Arc<str>,
    pub subject_at_us: i64,
    pub score_ppm: u32,
    pub action: VerdictAction,
    pub hits: Vec<RuleHit>,
    pub affiliate_id: String,
    pub campaign_id: String,
    pub decided_by: String,
    pub note: String,
    pub model_version: u32,
}

/// The anomaly model in use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelFigures {
    pub version: u32,
    pub at_us: i64,
    pub samples: u64,
    pub features: Vec<String>,
    pub threshold: f64,
    pub trained_from_us: i64,
    pub trained_to_us: i64,
    pub requested_by: String,
}

/// Sizes of the scorer's memory, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub recent_clicks: u64,
    pub flagged_clicks: u64,
    pub window_keys: u64,
    pub evicted: u64,
    pub waiting_conversions: u64,
    pub judged_subjects: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct FraudView {
    log: VecDeque<Arc<VerdictRow>>,
    next_seq: u64,
    latest: HashMap<Arc<str>, Arc<VerdictRow>>,
    /// Conversions whose latest verdict is `review`: (when flagged, id).
    review: BTreeSet<(i64, Arc<str>)>,
    verdicts_max: usize,
    /// rule → hits on (clicks, conversions), counted once per subject and rule (the
    /// scorer adds the clicks').
    pub rule_hits: BTreeMap<String, (u64, u64)>,
    /// Subjects scored: (clicks, conversions).
    pub scored: (u64, u64),
    pub clusters: Vec<Cluster>,
    pub model: Option<ModelFigures>,
    /// Conversions in the anomaly model's training reservoir.
    pub model_samples: u64,
    /// Every input was read to its end at the last look.
    pub caught_up: bool,
    /// Bytes of input not read yet.
    pub lag_bytes: u64,
    pub gauges: Gauges,
    /// An admin asked for a model fit.
    pub fit_requested: Option<String>,
}

impl FraudView {
    /// Adds a verdict (the scorer's or a person's).
    pub fn push(&mut self, v: &FraudVerdictV2) {
        let kind = if v.subject_kind == Kind::Click as u16 {
            Kind::Click
        } else {
            Kind::Conversion
        };
        let subject: Arc<str> = Arc::from(v.subject_id.as_str());
        let previous = self.latest.get(&subject).cloned();
        // Conversions count here, once per subject and rule; clicks are counted by the
        // scorer as it flags them (most flagged clicks never get a verdict written).
        if kind == Kind::Conversion {
            for h in &v.hits {
                let new = previous
                    .as_ref()
                    .is_none_or(|p| !p.hits.iter().any(|x| x.rule == h.rule));
                if new {
                    self.rule_hits.entry(h.rule.clone()).or_default().1 += 1;
                }
            }
        }
        let row = Arc::new(VerdictRow {
            seq: self.next_seq,
            at_us: v.at_us,
            kind,
            subject_id: subject.clone(),
            subject_at_us: v.subject_at_us,
            score_ppm: v.score_ppm,
            action: v.action,
            hits: v.hits.clone(),
            affiliate_id: v.affiliate_id.clone(),
            campaign_id: v.campaign_id.clone(),
            decided_by: v.decided_by.clone(),
            note: v.note.clone(),
            model_version: v.model_version,
        });
        self.next_seq += 1;
        if let Some(p) = &previous {
            self.review.remove(&(p.at_us, subject.clone()));
        }
        if kind == Kind::Conversion && v.action == VerdictAction::Review {
            self.review.insert((row.at_us, subject.clone()));
        }
        self.latest.insert(subject, row.clone());
        self.log.push_back(row);
        self.bound();
    }

    fn bound(&mut self) {
        let max = self.verdicts_max.max(1);
        while self.log.len() > max {
            let Some(old) = self.log.pop_front() else {
                break;
            };
            if self
                .latest
                .get(&old.subject_id)
                .is_some_and(|l| l.seq == old.seq)
            {
                self.latest.remove(&old.subject_id);
                self.review.remove(&(old.at_us, old.subject_id.clone()));
            }
        }
    }

    pub fn set_verdicts_max(&mut self, max: usize) {
        self.verdicts_max = max;
    }

    /// The latest verdict on a subject.
    pub fn latest(&self, subject: &str) -> Option<&Arc<VerdictRow>> {
        self.latest.get(subject)
    }

    /// Verdicts from position `cursor` on that `keep` accepts, at most `limit`; with
    /// `history` every verdict, else only each subject's latest. Answers the rows and the
    /// cursor of the next page.
    pub fn page(
        &self,
        cursor: u64,
        limit: usize,
        history: bool,
        keep: impl Fn(&VerdictRow) -> bool,
    ) -> (Vec<Arc<VerdictRow>>, Option<u64>) {
        let first = self.log.front().map_or(0, |r| r.seq);
        let start = cursor.saturating_sub(first) as usize;
        let mut rows = Vec::new();
        for r in self.log.iter().skip(start) {
            let current = history
                || self
                    .latest
                    .get(&r.subject_id)
                    .is_some_and(|l| l.seq == r.seq);
            if !current || !keep(r) {
                continue;
            }
            if rows.len() == limit {
                return (rows, Some(r.seq));
            }
            rows.push(r.clone());
        }
        (rows, None)
    }

    /// The review queue, oldest first: rows after position `after` (in queue order).
    pub fn review_queue(&self, skip: usize, limit: usize) -> (Vec<Arc<VerdictRow>>, usize) {
        let rows = self
            .review
            .iter()
            .skip(skip)
            .take(limit)
            .filter_map(|(_, id)| self.latest.get(id).cloned())
            .collect();
        (rows, self.review.len())
    }
}

/// The view shared between the scorer and the API.
#[derive(Debug, Clone, Default)]
pub struct SharedFraud(Arc<RwLock<FraudView>>);

impl SharedFraud {
    pub fn read<R>(&self, f: impl FnOnce(&FraudView) -> R) -> R {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn write<R>(&self, f: impl FnOnce(&mut FraudView) -> R) -> R {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(
        id: &str,
        kind: Kind,
        action: VerdictAction,
        at: i64,
        rules: &[&str],
    ) -> FraudVerdictV2 {
        FraudVerdictV2 {
            at_us: at,
            subject_kind: kind as u16,
            subject_id: id.into(),
            score_ppm: 600_000,
            reasons: vec![],
            action,
            hits: rules
                .iter()
                .map(|r| RuleHit {
                    rule: r.to_string(),
                    score_ppm: 1,
                    reason: String::new(),
                })
                .collect(),
            subject_at_us: at,
            affiliate_id: "a".into(),
            campaign_id: "c".into(),
            decided_by: "scorer".into(),
            note: String::new(),
            model_version: 0,
        }
    }

    #[test]
    fn latest_verdicts_review_queue_counts_and_paging() {
        let mut v = FraudView::default();
        v.set_verdicts_max(10);
        v.push(&verdict(
            "k1",
            Kind::Click,
            VerdictAction::Review,
            1,
            &["click-flood-ip"],
        ));
        v.push(&verdict(
            "v1",
            Kind::Conversion,
            VerdictAction::Allow,
            2,
            &[],
        ));
        v.push(&verdict(
            "v2",
            Kind::Conversion,
            VerdictAction::Review,
            3,
            &["conversion-too-fast"],
        ));
        v.push(&verdict(
            "v1",
            Kind::Conversion,
            VerdictAction::Review,
            4,
            &["click-spamming"],
        ));
        v.push(&verdict(
            "v2",
            Kind::Conversion,
            VerdictAction::Review,
            5,
            &["conversion-too-fast", "anomaly"],
        ));
        assert_eq!(
            v.rule_hits["conversion-too-fast"],
            (0, 1),
            "once per subject"
        );
        assert!(
            !v.rule_hits.contains_key("click-flood-ip"),
            "the scorer counts clicks"
        );
        let (q, n) = v.review_queue(0, 10);
        assert_eq!(n, 2);
        assert_eq!(
            q.iter().map(|r| &*r.subject_id).collect::<Vec<_>>(),
            ["v1", "v2"]
        );
        let (rows, next) = v.page(0, 2, false, |_| true);
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 3]);
        let (rows, next) = v.page(next.unwrap(), 2, false, |_| true);
        assert_eq!((rows.len(), next), (1, None));
        assert_eq!(v.page(0, 100, true, |_| true).0.len(), 5);
        assert_eq!(v.page(0, 100, false, |r| r.kind == Kind::Click).0.len(), 1);
        // A person's allow takes it out of the queue.
        v.push(&verdict(
            "v1",
            Kind::Conversion,
            VerdictAction::Allow,
            6,
            &["click-spamming"],
        ));
        assert_eq!(v.review_queue(0, 10).1, 1);
        for n in 0..20 {
            v.push(&verdict(
                &format!("x{n}"),
                Kind::Click,
                VerdictAction::Review,
                10 + n,
                &[],
            ));
        }
        assert_eq!(v.page(0, 100, true, |_| true).0.len(), 10, "bounded");
        assert!(v.latest("v2").is_none() && v.review_queue(0, 10).1 == 0);
    }
}
