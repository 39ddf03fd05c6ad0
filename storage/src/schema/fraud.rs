//! The fraud concern's records: verdicts (v2 names every rule that fired, with its
//! evidence), a person's decisions from the review queue, and trained anomaly models.

use super::{Kind, Record, RecordExt, VerdictAction};
use rkyv::{Archive, Deserialize, Serialize};

/// One rule that fired on a subject: its name, its score and the evidence in plain words
/// ("14 clicks from 203.0.113.0/24 in 60 s").
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RuleHit {
    /// The rule's configured name (`click-flood-ip`, `bot-user-agent`, `anomaly`, ...).
    pub rule: String,
    /// The rule's own score, parts per million.
    pub score_ppm: u32,
    /// The evidence, for a person to read.
    pub reason: String,
}

/// A fraud verdict on a click or conversion, v2: v1 plus the rules that fired, whose
/// subject it is, and who decided (the scorer, or a person working the review queue).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FraudVerdictV2 {
    pub at_us: i64,
    /// Kind of the judged record (`Kind as u16`).
    pub subject_kind: u16,
    /// Its id (click id or conversion id).
    pub subject_id: String,
    /// The combined score, parts per million.
    pub score_ppm: u32,
    /// Every hit's reason, in the order of `hits` (what v1 readers see).
    pub reasons: Vec<String>,
    pub action: VerdictAction,
    pub hits: Vec<RuleHit>,
    /// When the subject happened (the click's or the conversion's own time).
    pub subject_at_us: i64,
    /// The affiliate the subject credits ("" when none).
    pub affiliate_id: String,
    pub campaign_id: String,
    /// `scorer`, or the person who decided (`admin:<key>`).
    pub decided_by: String,
    /// A person's reason for the decision ("" for the scorer).
    pub note: String,
    /// The anomaly model version that scored it (0: none).
    pub model_version: u32,
}

impl From<super::FraudVerdict> for FraudVerdictV2 {
    fn from(v: super::FraudVerdict) -> FraudVerdictV2 {
        FraudVerdictV2 {
            at_us: v.at_us,
            subject_kind: v.subject_kind,
            subject_id: v.subject_id,
            score_ppm: v.score_ppm,
            hits: v
                .reasons
                .iter()
                .map(|r| RuleHit {
                    rule: r.split(':').next().unwrap_or_default().to_string(),
                    score_ppm: v.score_ppm,
                    reason: r.clone(),
                })
                .collect(),
            reasons: v.reasons,
            action: v.action,
            subject_at_us: v.at_us,
            affiliate_id: String::new(),
            campaign_id: String::new(),
            decided_by: "scorer".into(),
            note: String::new(),
            model_version: 0,
        }
    }
}

/// A verdict record of version 1 or 2, as v2.
pub fn verdict(rec: &Record<'_>) -> Option<FraudVerdictV2> {
    if rec.kind != Kind::FraudVerdict as u16 {
        return None;
    }
    rec.to_owned_event::<FraudVerdictV2>()
        .or_else(|| rec.to_owned_event::<super::FraudVerdict>().map(Into::into))
}

/// A person's decision on a flagged subject, written by the API to an ingest partition;
/// the fraud scorer turns it into a verdict (`decided_by` the person) that the ledger
/// honours.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FraudDecision {
    pub at_us: i64,
    pub subject_kind: u16,
    pub subject_id: String,
    /// `Allow` or `Reject` (a person never sends a subject back to review).
    pub action: VerdictAction,
    pub reason: String,
    /// Who decided (`admin:<key>`).
    pub actor: String,
}

/// One node of an isolation tree, in pre-order: an inner node's left child is the next
/// node and its right child is at `right`; a leaf has `feature == u32::MAX` and `size`
/// training samples.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
pub struct IsoNode {
    pub feature: u32,
    pub right: u32,
    pub split: f64,
    pub size: u32,
}

/// One isolation tree.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct IsoTree {
    pub nodes: Vec<IsoNode>,
}

/// An isolation forest trained by the fraud scorer from the journal, v1: everything needed
/// to score with it again after a restart, and how it was trained.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct FraudModelFit {
    pub at_us: i64,
    /// What a sample is: `conversion` (one per conversion) or `affiliate-day`.
    pub subject: String,
    /// 1, 2, ... per subject.
    pub version: u32,
    pub trained_from_us: i64,
    pub trained_to_us: i64,
    pub samples: u64,
    /// Feature names, in the order the trees index them.
    pub features: Vec<String>,
    /// Sub-sample size per tree (ψ); the score's normaliser c(ψ) follows from it.
    pub sample_size: u32,
    pub seed: u64,
    pub trees: Vec<IsoTree>,
    /// Anomaly score (0..1) at or above which the model flags a sample.
    pub threshold: f64,
    /// `schedule`, or the admin who asked.
    pub requested_by: String,
}
