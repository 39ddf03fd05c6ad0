//! Commission ledger: turns attributed conversions, their reversals, the merchant's and the
//! fraud review's decisions, the hold period and paid payout items into double-entry
//! transactions in `ledger` (one [`LedgerTxn`] per input, so an input is posted whole or
//! not at all).
//!
//! Accounts, per currency (a posting is credit-positive; every transaction sums to zero):
//!
//! | account | holds |
//! |---|---|
//! | `merchant:<id>` | what the merchant owes in commissions (negative: a liability) |
//! | `partner:<id>:pending` | earned, still in the hold period or under review |
//! | `partner:<id>:approved` | payable; negative after a reversal of paid money, netted by the next payout |
//! | `partner:<id>:paid` | paid out (net of the provider's fee) |
//! | `fees:<provider>` | payout fees (deducted from the partner's payout) |
//!
//! Lifecycle of a conversion's commissions: posted **pending** when the attribution
//! arrives; **approved** once the hold period (`hold-days` after the conversion was
//! received) is over, or at once when the merchant approves it (`verification = "hold"`);
//! under `verification = "performance"` only the retention window approves, the merchant's
//! approval cannot shorten it. A fraud review verdict holds a pending conversion until a
//! later verdict allows it; a reject verdict or the merchant's rejection reverses it whole
//! (**rejected**). Refunds and chargebacks take back the same share of the commission
//! (**reversed**) from wherever it is: pending, or approved (a reversal after payout leaves
//! a negative approved balance that the next payout nets). A paid payout item moves the
//! gross amount from approved to paid and fees.
//!
//! Exactly once and restart: every transaction carries the operation that made it
//! (`op_json`); on start the ledger replays those operations through the same code in the
//! same order, so the commission engine's state (tiers, first customers, bonuses) and the
//! balances are exactly what they were, and the worker resumes after the last input it
//! posted. Decisions about a conversion the ledger has not priced yet (the attribution is
//! still on its way) are kept as `deferred` transactions and applied when it is.
//!
//! Poison inputs: money arithmetic never wraps or clamps. Monthly and bonus sums are `i128`;
//! narrowing a commission to `i64` and adding to a balance are checked and panic when they
//! would not fit (amounts are bounded at the edge, so that takes about a million of the
//! largest commissions on one account). The panic happens before the transaction is
//! written, so the worker makes the input a dead letter (`crate::dead_letter`) and goes on.
//! What a dead letter means here: that input posted nothing. A skipped attribution leaves
//! its conversion without commission (no balance, statement line or payout includes it);
//! later reversals and decisions for it wait as `deferred`, as for any attribution not yet
//! seen, and apply if a retry (`POST /api/v1/dead-letters/retry`, after the cause is fixed)
//! prices it. Every other balance stays exact.

pub mod commission;

use crate::catalog::{CommissionPlan, EntityStore};
use crate::worker::{Output, Processor};
use clicktrail_storage::schema::{
    self, ConversionStatusChange, Currency, LedgerCause, LedgerTxn, PayoutItem, Posting,
};
use clicktrail_storage::{Kind, Record, RecordExt};
use commission::{Commissions, Credit, CreditKind, Plan, Sale};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

/// Default hold period before pending commissions are approved.
pub const HOLD_DAYS_DEFAULT: u32 = 30;
/// Longest hold period accepted.
pub const HOLD_DAYS_MAX: u32 = 365;
const DAY_US: i64 = 86_400_000_000;

/// What approves a pending commission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Verification {
    /// The hold period, or the merchant's approval, whichever comes first.
    #[default]
    Hold,
    /// Performance-verified: only a retention window without a full reversal.
    Performance,
}

/// The program's ledger settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    pub hold_days: u32,
    pub verification: Verification,
    /// A new sale is held until the fraud scorer's verdict on its conversion (an allow
    /// releases it, a review keeps it for a person), at most [`FRAUD_VERDICT_WAIT_US`].
    /// The server turns it on (`program.await-fraud-verdict`); off by default here.
    pub await_fraud_verdict: bool,
}

/// Longest a sale waits for the fraud scorer's verdict before it is released without one
/// (the scorer answers in about a second; an hour means it is down).
pub const FRAUD_VERDICT_WAIT_US: i64 = 3_600_000_000;

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            hold_days: HOLD_DAYS_DEFAULT,
            verification: Verification::Hold,
            await_fraud_verdict: false,
        }
    }
}

/// Where a partner's money is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    Pending,
    Approved,
    Paid,
}

impl Bucket {
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Pending => "pending",
            Bucket::Approved => "approved",
            Bucket::Paid => "paid",
        }
    }
}

fn partner_account(affiliate: &str, b: Bucket) -> String {
    format!("partner:{affiliate}:{}", b.name())
}

/// The partner and bucket of a `partner:<id>:<bucket>` account.
pub fn parse_partner_account(account: &str) -> Option<(&str, Bucket)> {
    let rest = account.strip_prefix("partner:")?;
    let (id, bucket) = rest.rsplit_once(':')?;
    let b = match bucket {
        "pending" => Bucket::Pending,
        "approved" => Bucket::Approved,
        "paid" => Bucket::Paid,
        _ => return None,
    };
    Some((id, b))
}

/// A partner's balances in one currency (minor units).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub pending: i64,
    pub approved: i64,
    /// Paid out, net of fees.
    pub paid: i64,
    /// Payout fees deducted.
    pub fees: i64,
}

/// One line of a partner's statement: one posting on one of its accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at_us: i64,
    pub txn_id: Arc<str>,
    pub cause: LedgerCause,
    pub conversion_id: Arc<str>,
    pub currency: Currency,
    pub detail: Arc<str>,
    pub bucket: Bucket,
    pub amount_minor: i64,
}

pub fn cause_name(c: LedgerCause) -> &'static str {
    match c {
        LedgerCause::Sale => "sale",
        LedgerCause::Reversal => "reversal",
        LedgerCause::Approval => "approval",
        LedgerCause::Rejection => "rejection",
        LedgerCause::Hold => "hold",
        LedgerCause::Release => "release",
        LedgerCause::Deferred => "deferred",
        LedgerCause::Payout => "payout",
    }
}

/// What the ledger replays: one operation per transaction. (Sales dominate, so the size
/// difference between variants costs nothing worth a box.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    Sale {
        conversion_id: String,
        merchant_id: String,
        campaign_id: String,
        event: String,
        amount_minor: i64,
        currency: String,
        occurred_at_us: i64,
        customer_id: Option<String>,
        /// (affiliate, weight in ppm) of each touchpoint.
        touchpoints: Vec<(String, u64)>,
        /// The merchant's order id, for `commission.created` postbacks (`{order_id}`).
        /// Empty in sales recorded before it; replay does not read it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        order_id: String,
        /// (affiliate, click id) of each touchpoint, in the order of `touchpoints`, for
        /// `commission.created` postbacks (`{click_id}`, `{sub1}`..). Empty in sales recorded
        /// before it; replay does not read it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        clicks: Vec<(String, String)>,
        /// The plan, written in full the first time the ledger uses it; later sales name
        /// it by `plan_key` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<CommissionPlan>,
        /// `<plan id>#<digest of its content>`.
        #[serde(default)]
        plan_key: String,
        mature_at_us: i64,
        /// Performance-verified when it was priced (the program setting then, not now).
        #[serde(default)]
        performance: bool,
        /// Held until the fraud scorer's verdict, or until this time (the wall clock when
        /// it was priced, plus [`FRAUD_VERDICT_WAIT_US`]); 0: not held (sales recorded
        /// before it, or `await_fraud_verdict` off).
        #[serde(default, skip_serializing_if = "is_zero")]
        await_verdict_until_us: i64,
    },
    Reverse {
        conversion_id: String,
        reversal_id: String,
        amount_minor: i64,
    },
    Decide {
        conversion_id: String,
        approve: bool,
        actor: String,
    },
    Review {
        conversion_id: String,
        /// allow, review or reject; `timeout` when no verdict came in time.
        action: String,
    },
    Mature {
        conversion_id: String,
    },
    Payout {
        item_id: String,
        affiliate_id: String,
        currency: String,
        amount_minor: i64,
        fee_minor: i64,
        provider: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvState {
    Pending,
    Approved,
    Rejected,
}

/// What one affiliate holds of one conversion, by credit kind.
#[derive(Debug, Clone)]
struct Part {
    affiliate: String,
    kind: CreditKind,
    pending: i64,
    approved: i64,
}

#[derive(Debug, Clone)]
struct Conv {
    merchant: String,
    currency: Currency,
    amount_minor: i64,
    plan: Arc<Plan>,
    parts: Vec<Part>,
    state: ConvState,
    held: bool,
    merchant_approved: bool,
    mature_at_us: i64,
    performance: bool,
    /// Held for the fraud scorer's first verdict (see `LedgerConfig::await_fraud_verdict`).
    awaiting: bool,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Lifts a fraud hold: approves at once what is due (the hold period over, or the
/// merchant's approval), else only records the release.
fn release(conv: &mut Conv, conversion_id: &str, at_us: i64, memo: &str) -> Txn {
    conv.held = false;
    let due = conv.mature_at_us <= at_us || (conv.merchant_approved && !conv.performance);
    let postings = if due && conv.due() {
        approve_all(conv)
    } else {
        Vec::new()
    };
    Txn {
        cause: if postings.is_empty() {
            LedgerCause::Release
        } else {
            LedgerCause::Approval
        },
        conversion_id: conversion_id.to_string(),
        currency: conv.currency,
        postings,
        memo: memo.into(),
    }
}

impl Conv {
    /// Whether it has pending money to approve and is not held. A rejected conversion can
    /// still hold some: a tier re-pricing booked on it belongs to the month's other sales.
    fn due(&self) -> bool {
        !self.held && self.parts.iter().any(|p| p.pending != 0)
    }
}

/// A transaction before it is archived.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Txn {
    cause: LedgerCause,
    conversion_id: String,
    currency: Currency,
    postings: Vec<Posting>,
    memo: String,
}

fn credit_detail(k: CreditKind) -> &'static str {
    match k {
        CreditKind::Commission => "commission",
        CreditKind::Recurring => "recurring",
        CreditKind::Bonus => "bonus",
    }
}

/// The ledger's whole state: the commission engine, every conversion's standing, balances
/// and statements. Shared with the API (read) behind a lock.
#[derive(Debug, Default)]
pub struct Book {
    config: LedgerConfig,
    engine: Commissions,
    convs: HashMap<String, Conv>,
    deferred: HashMap<String, Vec<(i64, Op)>>,
    maturity: BTreeSet<(i64, String)>,
    /// Sales held for the scorer's first verdict, by when they stop waiting.
    verdict_due: BTreeSet<(i64, String)>,
    /// Plans by key (see [`plan_key`]), as recorded by the first sale that used each.
    plans: HashMap<String, Arc<Plan>>,
    balances: BTreeMap<(String, [u8; 3]), Balance>,
    statements: HashMap<String, Vec<Line>>,
    paid_items: HashSet<String>,
    /// Why replaying the journal did not give what it recorded, if it did not.
    diverged: Option<String>,
    /// Sum of every posting per currency and account (the trial balance).
    accounts: BTreeMap<([u8; 3], String), i64>,
    txns: u64,
}

/// The book, shared between the ledger worker (writes) and the API (reads).
pub type SharedBook = Arc<RwLock<Book>>;

impl Book {
    pub fn new(config: LedgerConfig) -> Book {
        Book {
            config,
            ..Book::default()
        }
    }

    /// Transactions posted (replayed or new).
    pub fn txns(&self) -> u64 {
        self.txns
    }

    /// Balances of `affiliate`, by currency.
    pub fn balances_of(&self, affiliate: &str) -> Vec<(Currency, Balance)> {
        self.balances
            .range((affiliate.to_string(), [0; 3])..=(affiliate.to_string(), [255; 3]))
            .map(|((_, c), b)| (Currency(*c), *b))
            .collect()
    }

    /// Every partner's balance in every currency.
    pub fn all_balances(&self) -> impl Iterator<Item = (&str, Currency, Balance)> + '_ {
        self.balances
            .iter()
            .map(|((a, c), b)| (a.as_str(), Currency(*c), *b))
    }

    /// The lines of `affiliate`'s statement with `from_us <= at < to_us`, oldest first,
    /// and the balances before them per currency.
    pub fn statement(
        &self,
        affiliate: &str,
        from_us: i64,
        to_us: i64,
    ) -> (BTreeMap<[u8; 3], Balance>, Vec<Line>) {
        let mut opening: BTreeMap<[u8; 3], Balance> = BTreeMap::new();
        let mut lines = Vec::new();
        for l in self.statements.get(affiliate).into_iter().flatten() {
            if l.at_us < from_us {
                opening.entry(l.currency.0).or_default().add(l);
            } else if l.at_us < to_us {
                lines.push(l.clone());
            }
        }
        (opening, lines)
    }

    /// Sum of every account per currency: each currency's accounts add up to zero.
    pub fn trial_balance(&self) -> &BTreeMap<([u8; 3], String), i64> {
        &self.accounts
    }

    /// Whether a sale under `key` may name its plan without writing it again.
    pub fn knows_plan(&self, key: &str) -> bool {
        self.plans.contains_key(key)
    }

    /// Runs one operation: the single path for new inputs and for replay. `None` when the
    /// operation changes nothing (it is then not recorded).
    fn execute(&mut self, at_us: i64, op: &Op) -> Option<Txn> {
        let tx = self.execute_op(at_us, op);
        // Whatever is left pending (a tier re-pricing on a rejected or released
        // conversion) matures at the next tick once its hold period is over.
        let id = match op {
            Op::Sale { conversion_id, .. }
            | Op::Reverse { conversion_id, .. }
            | Op::Decide { conversion_id, .. }
            | Op::Review { conversion_id, .. } => Some(conversion_id),
            Op::Mature { .. } | Op::Payout { .. } => None,
        };
        if let Some(c) = id.and_then(|id| self.convs.get(id).map(|c| (id, c))) {
            if c.1.due() {
                self.maturity.insert((c.1.mature_at_us, c.0.clone()));
            }
        }
        tx
    }

    fn execute_op(&mut self, at_us: i64, op: &Op) -> Option<Txn> {
        match op {
            Op::Sale {
                conversion_id,
                merchant_id,
                campaign_id,
                event,
                amount_minor,
                currency,
                occurred_at_us,
                customer_id,
                touchpoints,
                plan,
                plan_key,
                mature_at_us,
                performance,
                await_verdict_until_us,
                ..
            } => {
                if self.convs.contains_key(conversion_id) {
                    return None;
                }
                let currency = Currency::parse(currency)?;
                // Older records carry the plan in every sale and no key.
                let key = match (plan, plan_key.is_empty()) {
                    (Some(p), true) => plan_key_of(p),
                    _ => plan_key.clone(),
                };
                let plan = match (plan, self.plans.get(&key)) {
                    (_, Some(known)) => known.clone(),
                    (Some(p), None) => match p.to_plan() {
                        Ok(priced) => {
                            let priced = Arc::new(priced);
                            self.plans.insert(key.clone(), priced.clone());
                            priced
                        }
                        Err(why) => {
                            log::error!("ledger: plan {key} cannot price {conversion_id}: {why}");
                            return None;
                        }
                    },
                    (None, None) => {
                        log::error!("ledger: {conversion_id} names plan {key}, never recorded");
                        return None;
                    }
                };
                let credits = self.engine.on_sale(
                    &plan,
                    &Sale {
                        conversion_id,
                        campaign_id,
                        merchant_id,
                        event,
                        amount_minor: *amount_minor,
                        occurred_at_us: *occurred_at_us,
                        customer_id: customer_id.as_deref(),
                        touchpoints: touchpoints.iter().map(|(a, w)| (a.as_str(), *w)).collect(),
                    },
                );
                let mut conv = Conv {
                    merchant: merchant_id.clone(),
                    currency,
                    amount_minor: *amount_minor,
                    plan,
                    parts: Vec::new(),
                    state: ConvState::Pending,
                    held: *await_verdict_until_us > 0,
                    merchant_approved: false,
                    mature_at_us: *mature_at_us,
                    performance: *performance,
                    awaiting: *await_verdict_until_us > 0,
                };
                if *await_verdict_until_us > 0 {
                    self.verdict_due
                        .insert((*await_verdict_until_us, conversion_id.clone()));
                }
                let mut postings = Vec::new();
                book_credits(&mut conv, &credits, &mut postings);
                self.maturity.insert((*mature_at_us, conversion_id.clone()));
                self.convs.insert(conversion_id.clone(), conv);
                let mut memo = format!("plan {}", key.split('#').next().unwrap_or(&key));
                for (t, later) in self.deferred.remove(conversion_id).unwrap_or_default() {
                    if let Some(tx) = self.execute(t, &later) {
                        postings.extend(tx.postings);
                        memo.push_str("; then ");
                        memo.push_str(&tx.memo);
                    }
                }
                Some(Txn {
                    cause: LedgerCause::Sale,
                    conversion_id: conversion_id.clone(),
                    currency,
                    postings,
                    memo,
                })
            }
            Op::Reverse {
                conversion_id,
                reversal_id,
                amount_minor,
            } => {
                let Some(conv) = self.convs.get_mut(conversion_id) else {
                    return self.defer(at_us, conversion_id, op);
                };
                if conv.state == ConvState::Rejected {
                    return None;
                }
                let credits =
                    self.engine
                        .on_reversal(&conv.plan.clone(), conversion_id, *amount_minor);
                let mut postings = Vec::new();
                book_credits(conv, &credits, &mut postings);
                Some(Txn {
                    cause: LedgerCause::Reversal,
                    conversion_id: conversion_id.clone(),
                    currency: conv.currency,
                    postings,
                    memo: format!("reversal {reversal_id}"),
                })
            }
            Op::Decide {
                conversion_id,
                approve,
                actor,
            } => {
                let Some(conv) = self.convs.get_mut(conversion_id) else {
                    return self.defer(at_us, conversion_id, op);
                };
                if *approve {
                    if conv.state != ConvState::Pending || conv.merchant_approved {
                        return None;
                    }
                    conv.merchant_approved = true;
                    if !conv.performance && !conv.held {
                        let postings = approve_all(conv);
                        return Some(Txn {
                            cause: LedgerCause::Approval,
                            conversion_id: conversion_id.clone(),
                            currency: conv.currency,
                            postings,
                            memo: format!("approved by {actor}"),
                        });
                    }
                    // Recorded (no postings) so a restart remembers the approval.
                    Some(Txn {
                        cause: LedgerCause::Hold,
                        conversion_id: conversion_id.clone(),
                        currency: conv.currency,
                        postings: Vec::new(),
                        memo: format!("approved by {actor}; waits for the retention window"),
                    })
                } else {
                    self.reject(conversion_id, &format!("rejected by {actor}"))
                }
            }
            Op::Review {
                conversion_id,
                action,
            } => {
                let Some(conv) = self.convs.get_mut(conversion_id) else {
                    return self.defer(at_us, conversion_id, op);
                };
                let first = conv.awaiting;
                if first {
                    conv.awaiting = false;
                    let key = self
                        .verdict_due
                        .iter()
                        .find(|(_, id)| id == conversion_id)
                        .cloned();
                    if let Some(k) = key {
                        self.verdict_due.remove(&k);
                    }
                }
                let conv = self.convs.get_mut(conversion_id).expect("looked up above");
                match action.as_str() {
                    "review" if conv.state == ConvState::Pending && (!conv.held || first) => {
                        conv.held = true;
                        Some(Txn {
                            cause: LedgerCause::Hold,
                            conversion_id: conversion_id.clone(),
                            currency: conv.currency,
                            postings: Vec::new(),
                            memo: "held by the fraud review".into(),
                        })
                    }
                    "allow" if conv.held => {
                        let memo = if first {
                            "cleared by the fraud review"
                        } else {
                            "released by the fraud review"
                        };
                        Some(release(conv, conversion_id, at_us, memo))
                    }
                    "timeout" if first && conv.held => Some(release(
                        conv,
                        conversion_id,
                        at_us,
                        "no fraud verdict within the wait: released",
                    )),
                    "reject" => self.reject(conversion_id, "rejected by the fraud review"),
                    _ => None,
                }
            }
            Op::Mature { conversion_id } => {
                let conv = self.convs.get_mut(conversion_id)?;
                self.maturity
                    .remove(&(conv.mature_at_us, conversion_id.clone()));
                if !conv.due() {
                    return None;
                }
                let postings = approve_all(conv);
                Some(Txn {
                    cause: LedgerCause::Approval,
                    conversion_id: conversion_id.clone(),
                    currency: conv.currency,
                    postings,
                    memo: "hold period over".into(),
                })
            }
            Op::Payout {
                item_id,
                affiliate_id,
                currency,
                amount_minor,
                fee_minor,
                provider,
            } => {
                let currency = Currency::parse(currency)?;
                if !self.paid_items.insert(item_id.clone()) {
                    return None;
                }
                let mut postings = vec![
                    Posting {
                        account: partner_account(affiliate_id, Bucket::Approved),
                        detail: "payout".into(),
                        amount_minor: -amount_minor,
                    },
                    Posting {
                        account: partner_account(affiliate_id, Bucket::Paid),
                        detail: "payout".into(),
                        amount_minor: amount_minor - fee_minor,
                    },
                ];
                if *fee_minor != 0 {
                    postings.push(Posting {
                        account: format!("fees:{provider}"),
                        detail: "fee".into(),
                        amount_minor: *fee_minor,
                    });
                }
                Some(Txn {
                    cause: LedgerCause::Payout,
                    conversion_id: String::new(),
                    currency,
                    postings,
                    memo: format!("payout {item_id} via {provider}"),
                })
            }
        }
    }

    fn defer(&mut self, at_us: i64, conversion_id: &str, op: &Op) -> Option<Txn> {
        self.deferred
            .entry(conversion_id.to_string())
            .or_default()
            .push((at_us, op.clone()));
        Some(Txn {
            cause: LedgerCause::Deferred,
            conversion_id: conversion_id.to_string(),
            currency: Currency(*b"XXX"),
            postings: Vec::new(),
            memo: "kept until the conversion is priced".into(),
        })
    }

    fn reject(&mut self, conversion_id: &str, memo: &str) -> Option<Txn> {
        let conv = self.convs.get_mut(conversion_id)?;
        if conv.state == ConvState::Rejected {
            return None;
        }
        let credits =
            self.engine
                .on_reversal(&conv.plan.clone(), conversion_id, conv.amount_minor.max(1));
        let mut postings = Vec::new();
        book_credits(conv, &credits, &mut postings);
        conv.state = ConvState::Rejected;
        Some(Txn {
            cause: LedgerCause::Rejection,
            conversion_id: conversion_id.to_string(),
            currency: conv.currency,
            postings,
            memo: memo.into(),
        })
    }

    /// Applies a transaction's postings to balances, statements and the trial balance.
    fn post(&mut self, at_us: i64, tx: &Txn, txn_id: &str) {
        self.txns += 1;
        let txn_id: Arc<str> = txn_id.into();
        let conversion_id: Arc<str> = tx.conversion_id.as_str().into();
        for p in &tx.postings {
            add_minor(
                self.accounts
                    .entry((tx.currency.0, p.account.clone()))
                    .or_default(),
                p.amount_minor,
                &p.account,
            );
            let Some((affiliate, bucket)) = parse_partner_account(&p.account) else {
                continue;
            };
            let b = self
                .balances
                .entry((affiliate.to_string(), tx.currency.0))
                .or_default();
            let line = Line {
                at_us,
                txn_id: txn_id.clone(),
                cause: tx.cause,
                conversion_id: conversion_id.clone(),
                currency: tx.currency,
                detail: p.detail.as_str().into(),
                bucket,
                amount_minor: p.amount_minor,
            };
            b.add(&line);
            if tx.cause == LedgerCause::Payout && bucket == Bucket::Approved {
                // The fee is the part of the gross amount that did not reach `paid`.
                let fee: i64 = tx
                    .postings
                    .iter()
                    .filter(|q| q.account.starts_with("fees:"))
                    .map(|q| q.amount_minor)
                    .sum();
                add_minor(&mut b.fees, fee, "fees");
            }
            self.statements
                .entry(affiliate.to_string())
                .or_default()
                .push(line);
        }
    }
}

impl Balance {
    /// Adds a statement line's posting to the bucket it is in.
    pub fn add(&mut self, l: &Line) {
        let (sum, what) = match l.bucket {
            Bucket::Pending => (&mut self.pending, "pending balance"),
            Bucket::Approved => (&mut self.approved, "approved balance"),
            Bucket::Paid => (&mut self.paid, "paid balance"),
        };
        add_minor(sum, l.amount_minor, what);
    }
}

/// Adds to a balance, checked: a balance that would leave `i64` (about 10^6 of the largest
/// commissions on one account; amounts are bounded at the edge) must never wrap. The panic
/// happens before the transaction is written, so the input that caused it becomes a dead
/// letter and the ledger, rebuilt from its journal, goes on with the next one.
fn add_minor(sum: &mut i64, amount_minor: i64, what: &str) {
    *sum = sum
        .checked_add(amount_minor)
        .unwrap_or_else(|| panic!("{what}: {sum} + {amount_minor} overflows i64 minor units"));
}

/// `<plan id>#<first 12 hex digits of the SHA-256 of its JSON>`: a plan changed in place
/// gets a new key, so each sale replays under the plan it was priced with.
pub fn plan_key_of(p: &CommissionPlan) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_string(p).expect("plans serialise");
    let digest = Sha256::digest(json.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}#{hex}", p.id)
}

/// Books credits (positive or negative) against the conversion's merchant and the partners'
/// accounts in the bucket the conversion's money is in.
fn book_credits(conv: &mut Conv, credits: &[Credit], postings: &mut Vec<Posting>) {
    let bucket = if conv.state == ConvState::Approved {
        Bucket::Approved
    } else {
        Bucket::Pending
    };
    for c in credits {
        let detail = credit_detail(c.kind);
        postings.push(Posting {
            account: format!("merchant:{}", conv.merchant),
            detail: detail.into(),
            amount_minor: -c.amount_minor,
        });
        postings.push(Posting {
            account: partner_account(&c.affiliate_id, bucket),
            detail: detail.into(),
            amount_minor: c.amount_minor,
        });
        let part = match conv
            .parts
            .iter_mut()
            .find(|p| p.affiliate == c.affiliate_id && p.kind == c.kind)
        {
            Some(p) => p,
            None => {
                conv.parts.push(Part {
                    affiliate: c.affiliate_id.clone(),
                    kind: c.kind,
                    pending: 0,
                    approved: 0,
                });
                conv.parts.last_mut().expect("just pushed")
            }
        };
        match bucket {
            Bucket::Approved => part.approved += c.amount_minor,
            _ => part.pending += c.amount_minor,
        }
    }
}

/// Moves everything the conversion holds from pending to approved (a rejected one stays
/// rejected).
fn approve_all(conv: &mut Conv) -> Vec<Posting> {
    let mut postings = Vec::new();
    for p in &mut conv.parts {
        if p.pending != 0 {
            let detail = credit_detail(p.kind);
            postings.push(Posting {
                account: partner_account(&p.affiliate, Bucket::Pending),
                detail: detail.into(),
                amount_minor: -p.pending,
            });
            postings.push(Posting {
                account: partner_account(&p.affiliate, Bucket::Approved),
                detail: detail.into(),
                amount_minor: p.pending,
            });
            p.approved += p.pending;
            p.pending = 0;
        }
    }
    if conv.state == ConvState::Pending {
        conv.state = ConvState::Approved;
    }
    postings
}

/// The ledger worker's processor. See the module docs.
#[derive(Debug)]
pub struct Ledger {
    inputs: Vec<String>,
    store: Arc<EntityStore>,
    book: SharedBook,
    /// The key of each plan id's current content (hashing it per sale cost 10%).
    plan_keys: HashMap<String, (CommissionPlan, String)>,
}

impl Ledger {
    /// A fresh ledger; `book` is reset (the worker rebuilds it from its output).
    pub fn new(
        inputs: Vec<String>,
        store: Arc<EntityStore>,
        book: SharedBook,
        config: LedgerConfig,
    ) -> Ledger {
        // A new instance starts from nothing (also after a panic left the lock poisoned).
        *book.write().unwrap_or_else(PoisonError::into_inner) = Book::new(config);
        book.clear_poison();
        Ledger {
            inputs,
            store,
            book,
            plan_keys: HashMap::new(),
        }
    }

    /// The inputs the ledger reads besides the ingest partitions.
    pub fn own_inputs() -> [&'static str; 3] {
        [
            crate::system::ATTRIBUTIONS,
            crate::system::VERDICTS,
            crate::system::PAYOUTS,
        ]
    }

    /// The operation an input record asks for, if any.
    fn op_of(&mut self, input: &Record<'_>) -> Option<(i64, Op)> {
        match input.kind_enum()? {
            Kind::Attribution => {
                // v2 or v3 (v3 adds the journey, which pricing does not need).
                let a = schema::attribution(input)?;
                let touchpoints: Vec<(String, u64)> = a
                    .touchpoints
                    .iter()
                    .filter(|t| t.weight_ppm > 0)
                    .map(|t| (t.affiliate_id.clone(), t.weight_ppm as u64))
                    .collect();
                let primary = touchpoints
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1 .1.cmp(&y.1 .1).then(y.0.cmp(&x.0)))
                    .map(|(_, t)| t.0.clone())?;
                let occurred = a.occurred_at_us;
                let plan = self.store.with(|c| {
                    c.plan_for(
                        a.campaign_id.as_str(),
                        &primary,
                        occurred.div_euclid(1_000_000),
                    )
                    .cloned()
                })?;
                let at_us = a.at_us;
                let plan_key = match self.plan_keys.get(&plan.id) {
                    Some((p, k)) if *p == plan => k.clone(),
                    _ => {
                        let k = plan_key_of(&plan);
                        self.plan_keys
                            .insert(plan.id.clone(), (plan.clone(), k.clone()));
                        k
                    }
                };
                let (hold, verification, known, await_verdict) = {
                    let book = self.book.read().unwrap_or_else(PoisonError::into_inner);
                    (
                        book.config.hold_days,
                        book.config.verification,
                        book.knows_plan(&plan_key),
                        book.config.await_fraud_verdict,
                    )
                };
                Some((
                    at_us,
                    Op::Sale {
                        conversion_id: a.conversion_id.to_string(),
                        merchant_id: a.merchant_id.to_string(),
                        campaign_id: a.campaign_id.to_string(),
                        event: a.event.to_string(),
                        amount_minor: a.amount.amount_minor,
                        currency: a.amount.currency.as_str().to_string(),
                        occurred_at_us: occurred,
                        customer_id: a.customer_id.clone(),
                        touchpoints,
                        order_id: a.order_id.to_string(),
                        clicks: a
                            .touchpoints
                            .iter()
                            .filter(|t| t.weight_ppm > 0)
                            .map(|t| (t.affiliate_id.clone(), t.click_id.clone()))
                            .collect(),
                        plan: (!known).then_some(plan),
                        plan_key,
                        mature_at_us: at_us.max(occurred) + hold as i64 * DAY_US,
                        performance: verification == Verification::Performance,
                        // The wall clock: imported history is priced now, its time is old.
                        await_verdict_until_us: if await_verdict {
                            crate::catalog::now_us() + FRAUD_VERDICT_WAIT_US
                        } else {
                            0
                        },
                    },
                ))
            }
            Kind::ConversionReversal => {
                let r = schema::reversal(input)?;
                // Reversals before v3 do not name the affiliate: they count when the
                // conversion is priced already (they cannot be told from unattributed ones).
                if r.affiliate_id.is_none()
                    && !self
                        .book
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .convs
                        .contains_key(&r.conversion_id)
                {
                    return None;
                }
                Some((
                    r.at_us,
                    Op::Reverse {
                        conversion_id: r.conversion_id,
                        reversal_id: r.reversal_id,
                        amount_minor: r.amount.amount_minor,
                    },
                ))
            }
            Kind::ConversionStatus => {
                let s = input.event::<ConversionStatusChange>()?;
                s.affiliate_id.as_ref()?;
                Some((
                    s.at_us.to_native(),
                    Op::Decide {
                        conversion_id: s.conversion_id.to_string(),
                        approve: matches!(s.state, schema::ArchivedConversionState::Approved),
                        actor: s.actor.to_string(),
                    },
                ))
            }
            Kind::FraudVerdict => {
                // v1 (the scorer's) or v2 (the scorer's, or a person's decision).
                let v = schema::verdict(input)?;
                if v.subject_kind != Kind::Conversion as u16 {
                    return None;
                }
                let action = match v.action {
                    schema::VerdictAction::Allow => "allow",
                    schema::VerdictAction::Review => "review",
                    schema::VerdictAction::Reject => "reject",
                };
                Some((
                    v.at_us,
                    Op::Review {
                        conversion_id: v.subject_id,
                        action: action.into(),
                    },
                ))
            }
            Kind::Payout => {
                let p = input.event::<PayoutItem>()?;
                if !matches!(p.status, schema::ArchivedPayoutItemStatus::Paid) {
                    return None;
                }
                Some((
                    p.at_us.to_native(),
                    Op::Payout {
                        item_id: p.item_id.to_string(),
                        affiliate_id: p.affiliate_id.to_string(),
                        currency: Currency(p.amount.currency.0).as_str().to_string(),
                        amount_minor: p.amount.amount_minor.to_native(),
                        fee_minor: p.fee_minor.to_native(),
                        provider: p.provider.to_string(),
                    },
                ))
            }
            _ => None,
        }
    }

    fn run(&mut self, at_us: i64, op: Op, out: &mut Vec<Output>) {
        let mut book = self.book.write().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = book.execute(at_us, &op) else {
            return;
        };
        let txn_id = format!("{}-{}", cause_name(tx.cause), book.txns + 1);
        book.post(at_us, &tx, &txn_id);
        drop(book);
        out.push(Output::event(&LedgerTxn {
            at_us,
            txn_id,
            cause: tx.cause,
            conversion_id: tx.conversion_id,
            currency: tx.currency,
            postings: tx.postings,
            memo: tx.memo,
            op_json: serde_json::to_string(&op).expect("operations serialise"),
        }));
    }
}

impl Processor for Ledger {
    fn name(&self) -> &str {
        "commission-ledger"
    }

    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output(&self) -> String {
        crate::system::LEDGER.into()
    }

    fn keeps_output(&self) -> bool {
        true
    }

    fn restore(&mut self, record: &Record<'_>) {
        let Some(t) = record.event::<LedgerTxn>() else {
            return;
        };
        let mut book = self.book.write().unwrap_or_else(PoisonError::into_inner);
        let op: Op = match serde_json::from_str(t.op_json.as_str()) {
            Ok(op) => op,
            Err(e) => {
                book.txns += 1;
                book.diverged.get_or_insert(format!(
                    "transaction {} has an unreadable operation: {e}",
                    t.txn_id
                ));
                return;
            }
        };
        let at_us = t.at_us.to_native();
        let recorded: Vec<Posting> = t
            .postings
            .iter()
            .map(|p| Posting {
                account: p.account.to_string(),
                detail: p.detail.to_string(),
                amount_minor: p.amount_minor.to_native(),
            })
            .collect();
        match book.execute(at_us, &op) {
            Some(tx) => {
                if tx.postings != recorded {
                    book.diverged.get_or_insert(format!(
                        "replaying {} gives other postings than it recorded",
                        t.txn_id
                    ));
                }
                // The journal is the truth: what it recorded is what the balances show.
                let tx = Txn {
                    postings: recorded,
                    ..tx
                };
                book.post(at_us, &tx, t.txn_id.as_str());
            }
            None => {
                book.txns += 1;
                book.diverged
                    .get_or_insert(format!("replaying {} changed nothing", t.txn_id));
            }
        }
    }

    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
        // A ledger whose replay disagrees with its journal must not post more on top: fail
        // (the supervisor gives up loudly after its retries) until someone looks.
        if let Some(why) = &self
            .book
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .diverged
        {
            return Err(format!(
                "the ledger's code and its journal disagree ({why}); refusing to post"
            ));
        }
        if let Some((at_us, op)) = self.op_of(input) {
            self.run(at_us, op, out);
        }
        Ok(())
    }

    fn tick(&mut self, now_us: i64, out: &mut Vec<Output>) {
        let due: Vec<String> = {
            let book = self.book.read().unwrap_or_else(PoisonError::into_inner);
            book.maturity
                .range(..(now_us + 1, String::new()))
                .filter(|(_, id)| book.convs.get(id).is_some_and(Conv::due))
                .map(|(_, id)| id.clone())
                .collect()
        };
        for id in due {
            self.run(now_us, Op::Mature { conversion_id: id }, out);
        }
        let unjudged: Vec<String> = {
            let book = self.book.read().unwrap_or_else(PoisonError::into_inner);
            book.verdict_due
                .range(..(now_us + 1, String::new()))
                .map(|(_, id)| id.clone())
                .collect()
        };
        for id in unjudged {
            log::warn!("ledger: no fraud verdict on {id} within the wait: released without one");
            let op = Op::Review {
                conversion_id: id,
                action: "timeout".into(),
            };
            self.run(now_us, op, out);
        }
        // Entries of conversions that are no longer pending, or are held (a release
        // approves them), are dropped; `Mature` removes its own.
        let mut book = self.book.write().unwrap_or_else(PoisonError::into_inner);
        let stale: Vec<(i64, String)> = book
            .maturity
            .range(..(now_us + 1, String::new()))
            .cloned()
            .collect();
        for k in stale {
            book.maturity.remove(&k);
        }
    }
}
