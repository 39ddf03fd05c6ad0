//! The commission ledger through its worker on a real journal: postings balance, states
//! move pending -> approved -> paid, decisions that arrive before the attribution wait for
//! it, and a restart rebuilds exactly the same book without posting anything twice.

use clicktrail_actors::catalog::{Entity, EntityStore};
use clicktrail_actors::dead_letter::DeadLetters;
use clicktrail_actors::ledger::{Book, Ledger, LedgerConfig, SharedBook, Verification};
use clicktrail_actors::system::{ATTRIBUTIONS, LEDGER, PAYOUTS, VERDICTS};
use clicktrail_actors::WorkerCore;
use clicktrail_storage::schema::{
    AttributionV2, ConversionReversalV3, ConversionState, ConversionStatusChange, Currency,
    FraudVerdict, LedgerTxn, Money, PayoutItem, PayoutItemStatus, ReversalReason, Touchpoint,
    VerdictAction,
};
use clicktrail_storage::{Event, Journal, JournalConfig, Kind, RecordExt};
use serde_json::json;
use std::sync::Arc;

/// Far in the future, so the worker's own wall-clock ticks never mature anything here.
const T0: i64 = 4_100_000_000_000_000; // 2099-12-02
const DAY: i64 = 86_400_000_000;
const INGEST: &str = "ingest-0";

fn config() -> JournalConfig {
    JournalConfig {
        segment_size: 4 << 20,
        ..Default::default()
    }
}

fn entity(kind: &str, v: serde_json::Value) -> Entity {
    match kind {
        "merchant" => Entity::Merchant(serde_json::from_value(v).unwrap()),
        "affiliate" => Entity::Affiliate(serde_json::from_value(v).unwrap()),
        "campaign" => Entity::Campaign(serde_json::from_value(v).unwrap()),
        "plan" => Entity::Plan(serde_json::from_value(v).unwrap()),
        _ => unreachable!(),
    }
}

/// A store with merchant m, affiliates a and b, campaign c and `plan` for c.
fn store(j: &Journal, plan: serde_json::Value) -> Arc<EntityStore> {
    let s = Arc::new(EntityStore::open(j).unwrap());
    let all = [
        entity("merchant", json!({"id": "m", "name": "M"})),
        entity("affiliate", json!({"id": "a", "name": "A"})),
        entity("affiliate", json!({"id": "b", "name": "B"})),
        entity(
            "campaign",
            json!({"id": "c", "merchant-id": "m", "name": "C", "destination-url": "https://m.example/"}),
        ),
        entity("plan", plan),
    ];
    actix_rt::System::new().block_on(async {
        for e in all {
            s.upsert("test", e).await.unwrap();
        }
    });
    s
}

fn ten_percent() -> serde_json::Value {
    json!({"id": "p", "campaign-id": "c", "percent-bps": 1000})
}

fn eur(minor: i64) -> Money {
    Money {
        amount_minor: minor,
        currency: Currency(*b"EUR"),
    }
}

fn attribution(id: &str, amount: i64, at_us: i64, touchpoints: &[(&str, u32)]) -> AttributionV2 {
    AttributionV2 {
        at_us,
        conversion_id: id.into(),
        model: "test".into(),
        touchpoints: touchpoints
            .iter()
            .map(|(a, w)| Touchpoint {
                click_id: format!("click-{a}"),
                affiliate_id: a.to_string(),
                at_us: at_us - 1000,
                weight_ppm: *w,
            })
            .collect(),
        merchant_id: "m".into(),
        campaign_id: "c".into(),
        order_id: format!("order-{id}"),
        event: "sale".into(),
        amount: eur(amount),
        customer_id: None,
        occurred_at_us: at_us,
    }
}

fn reversal(id: &str, rid: &str, amount: i64, at_us: i64) -> ConversionReversalV3 {
    ConversionReversalV3 {
        at_us,
        conversion_id: id.into(),
        reason: ReversalReason::PartialRefund,
        amount: eur(amount),
        actor: "m".into(),
        note: String::new(),
        reversal_id: rid.into(),
        affiliate_id: Some("a".into()),
        order_id: format!("order-{id}"),
        click_id: None,
        campaign_id: "c".into(),
    }
}

fn decision(id: &str, approve: bool, at_us: i64) -> ConversionStatusChange {
    ConversionStatusChange {
        at_us,
        conversion_id: id.into(),
        state: if approve {
            ConversionState::Approved
        } else {
            ConversionState::Rejected
        },
        actor: "m".into(),
        reason: String::new(),
        merchant_id: "m".into(),
        campaign_id: "c".into(),
        order_id: format!("order-{id}"),
        event: "sale".into(),
        amount: eur(0),
        click_id: None,
        affiliate_id: Some("a".into()),
    }
}

fn verdict(id: &str, action: VerdictAction, at_us: i64) -> FraudVerdict {
    FraudVerdict {
        at_us,
        subject_kind: Kind::Conversion as u16,
        subject_id: id.into(),
        score_ppm: 500_000,
        reasons: vec!["test".into()],
        action,
    }
}

fn paid(item: &str, affiliate: &str, gross: i64, fee: i64) -> PayoutItem {
    PayoutItem {
        at_us: T0 + 40 * DAY,
        batch_id: "b1".into(),
        item_id: item.into(),
        affiliate_id: affiliate.into(),
        amount: eur(gross),
        fee_minor: fee,
        provider: "stripe".into(),
        destination: "acct_1".into(),
        status: PayoutItemStatus::Paid,
        attempt: 1,
        provider_ref: Some("tr_1".into()),
        error: None,
        actor: "test".into(),
    }
}

struct Rig {
    journal: Journal,
    store: Arc<EntityStore>,
    book: SharedBook,
    config: LedgerConfig,
    core: Option<WorkerCore>,
    dead: DeadLetters,
}

impl Rig {
    fn new(dir: &std::path::Path, plan: serde_json::Value, config: LedgerConfig) -> Rig {
        let journal = Journal::open(dir, config_j()).unwrap();
        let store = store(&journal, plan);
        let mut r = Rig {
            journal,
            store,
            book: SharedBook::default(),
            config,
            core: None,
            dead: DeadLetters::default(),
        };
        r.open();
        r
    }

    fn open(&mut self) {
        self.core = None;
        let inputs = vec![
            ATTRIBUTIONS.to_string(),
            VERDICTS.to_string(),
            PAYOUTS.to_string(),
            INGEST.to_string(),
        ];
        let ledger = Ledger::new(inputs, self.store.clone(), self.book.clone(), self.config);
        self.core = Some(
            WorkerCore::open_reporting(&self.journal, Box::new(ledger), self.dead.clone()).unwrap(),
        );
    }

    fn put<E: Event>(&self, partition: &str, e: &E) {
        let p = self.journal.partition(partition).unwrap();
        let mut w = p.writer().unwrap();
        w.append_event(None, e).unwrap();
        w.publish();
        drop(w);
        self.journal.sync().unwrap();
    }

    /// Processes everything available; after a poison input, rebuilds the ledger from its
    /// journal and goes on, as the supervisor's worker shell does.
    fn run(&mut self) {
        loop {
            match self.core.as_mut().unwrap().step(1024) {
                Ok(0) => return,
                Ok(_) => {}
                Err(
                    clicktrail_actors::worker::Error::Poisoned { .. }
                    | clicktrail_actors::worker::Error::Panicked { .. },
                ) => self.open(),
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn tick(&mut self, now_us: i64) {
        let core = self.core.as_mut().unwrap();
        core.tick_now(now_us).unwrap();
        core.step(1024).unwrap();
    }

    fn balance(&self, affiliate: &str) -> (i64, i64, i64, i64) {
        let book = self.book.read().unwrap();
        let b = book
            .balances_of(affiliate)
            .into_iter()
            .find(|(c, _)| c.as_str() == "EUR")
            .map(|(_, b)| b)
            .unwrap_or_default();
        (b.pending, b.approved, b.paid, b.fees)
    }

    fn txns(&self) -> Vec<LedgerTxn> {
        let mut r = self.journal.partition(LEDGER).unwrap().reader().unwrap();
        let mut v = Vec::new();
        while let Some(rec) = r.next().unwrap() {
            if rec.kind != Kind::DeadLetter as u16 {
                v.push(rec.to_owned_event::<LedgerTxn>().unwrap());
            }
        }
        v
    }

    /// Every transaction balances and every currency's accounts sum to zero.
    fn check_balanced(&self) {
        for t in self.txns() {
            let sum: i64 = t.postings.iter().map(|p| p.amount_minor).sum();
            assert_eq!(sum, 0, "{} does not balance: {:?}", t.txn_id, t.postings);
        }
        let book = self.book.read().unwrap();
        let mut per: std::collections::BTreeMap<[u8; 3], i64> = Default::default();
        for ((c, _), v) in book.trial_balance() {
            *per.entry(*c).or_default() += v;
        }
        assert!(per.values().all(|v| *v == 0), "trial balance: {per:?}");
    }

    /// Restarts the worker and checks the rebuilt book matches and nothing was re-posted.
    fn restart_same(&mut self) {
        let before_txns = self.txns().len();
        let before = snapshot(&self.book.read().unwrap());
        self.open();
        self.run();
        assert_eq!(self.txns().len(), before_txns, "a restart posted again");
        assert_eq!(snapshot(&self.book.read().unwrap()), before);
    }
}

fn config_j() -> JournalConfig {
    config()
}

fn snapshot(b: &Book) -> String {
    let mut s = format!("txns {}\n", b.txns());
    for (a, c, bal) in b.all_balances() {
        s.push_str(&format!("{a} {} {bal:?}\n", c.as_str()));
        let (_, lines) = b.statement(a, 0, i64::MAX);
        s.push_str(&format!("{lines:?}\n"));
    }
    s.push_str(&format!("{:?}", b.trial_balance()));
    s
}

fn performance(days: u32) -> LedgerConfig {
    LedgerConfig {
        hold_days: days,
        verification: Verification::Performance,
        await_fraud_verdict: false,
    }
}

fn hold(days: u32) -> LedgerConfig {
    LedgerConfig {
        hold_days: days,
        verification: Verification::Hold,
        await_fraud_verdict: false,
    }
}

fn awaiting(days: u32) -> LedgerConfig {
    LedgerConfig {
        await_fraud_verdict: true,
        ..hold(days)
    }
}

#[test]
fn a_sale_moves_pending_approved_paid_and_a_later_refund_is_netted() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), hold(30));
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 4990, T0, &[("a", 1_000_000)]),
    );
    r.run();
    assert_eq!(r.balance("a"), (499, 0, 0, 0), "10% of 49.90 pending");
    // Not yet: the hold period is 30 days.
    r.tick(T0 + 29 * DAY);
    assert_eq!(r.balance("a"), (499, 0, 0, 0));
    r.tick(T0 + 30 * DAY);
    assert_eq!(
        r.balance("a"),
        (0, 499, 0, 0),
        "approved after the hold period"
    );
    r.restart_same();
    // Paid out: 4.99 less a 0.26 fee.
    r.put(PAYOUTS, &paid("item-1", "a", 499, 26));
    r.run();
    assert_eq!(r.balance("a"), (0, 0, 473, 26));
    // The same paid item again (a provider result replayed) changes nothing.
    r.put(PAYOUTS, &paid("item-1", "a", 499, 26));
    r.run();
    assert_eq!(r.balance("a"), (0, 0, 473, 26));
    // A refund after payout: a negative approved balance for the next payout to net.
    r.put(INGEST, &reversal("cv1", "refund-1", 990, T0 + 41 * DAY));
    r.run();
    assert_eq!(r.balance("a"), (0, -99, 473, 26));
    r.check_balanced();
    r.restart_same();
    let csv_lines = r.book.read().unwrap().statement("a", 0, i64::MAX).1.len();
    assert_eq!(
        csv_lines, 6,
        "sale, approval (2 legs), payout (2 legs), reversal"
    );
}

#[test]
fn merchant_approval_shortens_the_hold_unless_performance_verified() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), hold(30));
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.put(INGEST, &decision("cv1", true, T0 + DAY));
    r.run();
    assert_eq!(r.balance("a"), (0, 1000, 0, 0));

    let dir = tempfile::tempdir().unwrap();
    let perf = performance(30);
    let mut r = Rig::new(dir.path(), ten_percent(), perf);
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.put(INGEST, &decision("cv1", true, T0 + DAY));
    r.run();
    r.tick(T0 + 2 * DAY);
    assert_eq!(r.balance("a"), (1000, 0, 0, 0), "waits for the window");
    r.restart_same();
    r.tick(T0 + 30 * DAY);
    assert_eq!(r.balance("a"), (0, 1000, 0, 0));
    r.check_balanced();
}

#[test]
fn rejection_and_fraud_review_hold_and_reject() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), hold(0));
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.put(
        ATTRIBUTIONS,
        &attribution("cv2", 20_000, T0, &[("a", 1_000_000)]),
    );
    r.put(
        ATTRIBUTIONS,
        &attribution("cv3", 30_000, T0, &[("a", 1_000_000)]),
    );
    r.put(VERDICTS, &verdict("cv2", VerdictAction::Review, T0 + 1));
    r.put(VERDICTS, &verdict("cv3", VerdictAction::Reject, T0 + 1));
    r.put(INGEST, &decision("cv1", false, T0 + 2));
    r.run();
    r.tick(T0 + DAY);
    // cv1 rejected, cv2 held (pending), cv3 rejected.
    assert_eq!(r.balance("a"), (2000, 0, 0, 0));
    r.restart_same();
    r.put(
        VERDICTS,
        &verdict("cv2", VerdictAction::Allow, T0 + 2 * DAY),
    );
    r.run();
    assert_eq!(
        r.balance("a"),
        (0, 2000, 0, 0),
        "released after its hold period: approved"
    );
    // A refund of a rejected conversion takes nothing more.
    r.put(INGEST, &reversal("cv1", "refund-1", 10_000, T0 + 3 * DAY));
    r.run();
    assert_eq!(r.balance("a"), (0, 2000, 0, 0));
    r.check_balanced();
    r.restart_same();
}

/// With `await_fraud_verdict`, a sale is held until the scorer's first verdict: neither
/// the hold period nor the merchant's approval pays it first; an allow releases it, a
/// review keeps it for a person, no verdict within the wait releases it; a restart
/// rebuilds the same book.
#[test]
fn sales_wait_for_the_fraud_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), awaiting(0));
    for (id, amount) in [
        ("cv1", 10_000),
        ("cv2", 20_000),
        ("cv3", 30_000),
        ("cv4", 40_000),
    ] {
        r.put(
            ATTRIBUTIONS,
            &attribution(id, amount, T0, &[("a", 1_000_000)]),
        );
    }
    r.put(INGEST, &decision("cv1", true, T0 + 1));
    r.run();
    // The wait runs on the wall clock (imported history is priced long after its time).
    let now = clicktrail_actors::catalog::now_us();
    r.tick(now);
    assert_eq!(
        r.balance("a"),
        (10_000, 0, 0, 0),
        "all held, even the approved one"
    );
    r.put(VERDICTS, &verdict("cv1", VerdictAction::Allow, T0 + 3));
    r.put(VERDICTS, &verdict("cv2", VerdictAction::Review, T0 + 3));
    r.put(VERDICTS, &verdict("cv3", VerdictAction::Allow, T0 + 3));
    r.run();
    r.tick(now + 1);
    assert_eq!(
        r.balance("a"),
        (6000, 4000, 0, 0),
        "cv1 and cv3 approved, cv2 kept"
    );
    r.restart_same();
    // No verdict on cv4 within the wait: released (and approved: its hold is over);
    // cv2 stays held.
    r.tick(T0 + 4);
    r.tick(T0 + 5);
    assert_eq!(r.balance("a"), (2000, 8000, 0, 0));
    // A person allows cv2.
    r.put(VERDICTS, &verdict("cv2", VerdictAction::Allow, T0 + DAY));
    r.run();
    assert_eq!(r.balance("a"), (0, 10_000, 0, 0));
    r.check_balanced();
    r.restart_same();
}

#[test]
fn decisions_that_arrive_before_the_attribution_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), hold(30));
    r.put(INGEST, &reversal("cv1", "refund-1", 2500, T0 + 5));
    r.put(INGEST, &decision("cv1", true, T0 + 6));
    r.run();
    assert_eq!(r.balance("a"), (0, 0, 0, 0));
    r.restart_same();
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.run();
    assert_eq!(
        r.balance("a"),
        (0, 750, 0, 0),
        "1000 earned, 250 refunded, approved"
    );
    r.check_balanced();
    r.restart_same();
}

#[test]
fn a_split_conversion_pays_each_touchpoint_its_weight_to_the_cent() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), hold(30));
    // 10% of 100.01 = 10.00 (half-even), split 1/3 : 2/3.
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_001, T0, &[("a", 333_333), ("b", 666_667)]),
    );
    r.run();
    let (pa, pb) = (r.balance("a").0, r.balance("b").0);
    assert_eq!(pa + pb, 1000);
    assert_eq!((pa, pb), (333, 667));
    r.put(INGEST, &reversal("cv1", "all", 10_001, T0 + DAY));
    r.run();
    assert_eq!((r.balance("a").0, r.balance("b").0), (0, 0));
    r.check_balanced();
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random interleavings of sales, partial and full refunds, decisions, verdicts and time
/// under a tiered plan: every transaction balances, a restart at any point rebuilds the
/// same book, and refunding everything returns every partner balance to zero.
#[test]
fn property_random_histories_balance_restart_identically_and_unwind_to_zero() {
    let tiered = json!({"id": "t", "campaign-id": "c", "tiers": {
        "basis": "conversions", "mode": "whole-month",
        "brackets": [{"up-to": 3, "bps": 1000}, {"up-to": 6, "bps": 1500}, {"bps": 2000}]}});
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Rig::new(dir.path(), tiered.clone(), hold(2));
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut amounts: Vec<(String, i64, i64)> = Vec::new(); // id, amount, refunded
        let mut now = T0;
        for step in 0..60 {
            now += rng.below(DAY as u64 / 2) as i64;
            match rng.below(7) {
                0..=2 => {
                    let id = format!("cv{step}");
                    let amount = 100 + rng.below(50_000) as i64;
                    let w = rng.below(1_000_001) as u32;
                    let tps: Vec<(&str, u32)> = if w % 2 == 0 {
                        vec![("a", 1_000_000)]
                    } else {
                        vec![("a", w), ("b", 1_000_000 - w)]
                    };
                    r.put(ATTRIBUTIONS, &attribution(&id, amount, now, &tps));
                    amounts.push((id, amount, 0));
                }
                3 if !amounts.is_empty() => {
                    let i = rng.below(amounts.len() as u64) as usize;
                    let part = 1 + rng.below(amounts[i].1 as u64) as i64;
                    let rid = format!("r{step}");
                    r.put(INGEST, &reversal(&amounts[i].0, &rid, part, now));
                    amounts[i].2 += part;
                }
                4 if !amounts.is_empty() => {
                    let i = rng.below(amounts.len() as u64) as usize;
                    r.put(INGEST, &decision(&amounts[i].0, true, now));
                }
                5 if !amounts.is_empty() => {
                    let i = rng.below(amounts.len() as u64) as usize;
                    let action = match rng.below(3) {
                        0 => VerdictAction::Review,
                        1 => VerdictAction::Allow,
                        _ => VerdictAction::Reject,
                    };
                    r.put(VERDICTS, &verdict(&amounts[i].0, action, now));
                }
                _ => r.tick(now),
            }
            r.run();
            if rng.below(10) == 0 {
                r.restart_same();
            }
        }
        r.check_balanced();
        r.restart_same();
        // Refund everything that is left.
        for (id, amount, refunded) in &amounts {
            let left = (amount - refunded).max(1);
            r.put(INGEST, &reversal(id, &format!("final-{id}"), left, now));
        }
        r.run();
        // Before the reviews are settled the money may sit in either bucket (a tier
        // re-pricing rides on the conversion that caused it), but it adds up to zero.
        for a in ["a", "b"] {
            let (p, ap, _, _) = r.balance(a);
            assert_eq!(
                p + ap,
                0,
                "seed {seed}: {a} keeps money after refunding all"
            );
        }
        // Once the review queue is worked through and the hold periods are over, every
        // bucket is zero.
        for (id, _, _) in &amounts {
            r.put(VERDICTS, &verdict(id, VerdictAction::Allow, now));
        }
        r.run();
        r.tick(now + 10 * DAY);
        for a in ["a", "b"] {
            let (p, ap, _, _) = r.balance(a);
            assert_eq!(
                (p, ap),
                (0, 0),
                "seed {seed}: {a} keeps money after refunding all"
            );
        }
        r.check_balanced();
        r.restart_same();
    }
}

/// The program's settings may change between restarts; what was posted under the old ones
/// replays exactly (the mode is recorded per conversion), and new conversions follow the
/// new ones.
#[test]
fn a_settings_change_between_restarts_does_not_rewrite_history() {
    let dir = tempfile::tempdir().unwrap();
    let perf = performance(30);
    let mut r = Rig::new(dir.path(), ten_percent(), perf);
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.put(INGEST, &decision("cv1", true, T0 + DAY));
    r.run();
    assert_eq!(r.balance("a"), (1000, 0, 0, 0));
    // Now hold mode: the merchant's approval of cv1 must still not count.
    r.config = hold(30);
    r.restart_same();
    r.tick(T0 + 2 * DAY);
    assert_eq!(r.balance("a"), (1000, 0, 0, 0));
    r.put(
        ATTRIBUTIONS,
        &attribution("cv2", 20_000, T0 + 3 * DAY, &[("a", 1_000_000)]),
    );
    r.put(INGEST, &decision("cv2", true, T0 + 4 * DAY));
    r.run();
    assert_eq!(
        r.balance("a"),
        (1000, 2000, 0, 0),
        "cv2 under the new setting"
    );
    r.check_balanced();
    r.restart_same();
}

/// A record the ledger cannot price (here a commission beyond `i64`, from a journal written
/// before amounts were bounded at the edge) becomes a dead letter: the ledger posts what
/// comes after it, a restart neither posts it nor counts it again, and a retry that fails
/// again is recorded as one more attempt.
#[test]
fn a_poison_attribution_is_a_dead_letter_and_the_ledger_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let plan = json!({"id": "p", "campaign-id": "c", "percent-bps": 100_000});
    let mut r = Rig::new(dir.path(), plan, hold(30));
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.put(
        ATTRIBUTIONS,
        &attribution("poison", i64::MAX, T0, &[("a", 1_000_000)]),
    );
    r.put(
        ATTRIBUTIONS,
        &attribution("cv3", 20_000, T0, &[("a", 1_000_000)]),
    );
    r.run();
    // 1000% of 100.00 and of 200.00; nothing of the poison.
    assert_eq!(r.balance("a"), (300_000, 0, 0, 0));
    assert_eq!(r.txns().len(), 2);
    r.check_balanced();
    let open = r.dead.list();
    assert_eq!(open.len(), 1, "{open:?}");
    let d = &open[0];
    assert_eq!(
        (d.actor.as_str(), d.input_partition.as_str()),
        ("commission-ledger", ATTRIBUTIONS)
    );
    assert_eq!((d.input_kind.as_str(), d.attempts), ("attribution", 1));
    assert!(d.reason.contains("outside i64"), "{}", d.reason);
    r.restart_same();
    assert_eq!(r.dead.totals()["commission-ledger"], (1, 0));
    // Retried with the same code: it fails again, as a second attempt, and is still open.
    r.dead
        .request_retry("commission-ledger", ATTRIBUTIONS, d.input_offset)
        .unwrap();
    r.run();
    assert_eq!(r.dead.list()[0].attempts, 2);
    assert_eq!(r.balance("a"), (300_000, 0, 0, 0));
    // Later inputs still post.
    r.put(
        ATTRIBUTIONS,
        &attribution("cv4", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.run();
    assert_eq!(r.balance("a"), (400_000, 0, 0, 0));
    r.restart_same();
    assert_eq!(r.dead.totals()["commission-ledger"], (2, 0));
}

/// A journal whose recorded postings the code no longer reproduces stops the ledger from
/// posting more (the supervisor then fails loudly) instead of drifting silently.
#[test]
fn a_ledger_whose_replay_disagrees_with_its_journal_refuses_to_post() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), hold(30));
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.run();
    let mut t = r.txns().remove(0);
    // The same operation, recorded with other amounts.
    for p in &mut t.postings {
        p.amount_minor *= 2;
    }
    t.op_json = t.op_json.replace("cv1", "cv-forged");
    r.core = None;
    r.put(LEDGER, &t);
    r.core = Some(
        WorkerCore::open(
            &r.journal,
            Box::new(Ledger::new(
                vec![ATTRIBUTIONS.into()],
                r.store.clone(),
                r.book.clone(),
                r.config,
            )),
        )
        .unwrap(),
    );
    r.put(
        ATTRIBUTIONS,
        &attribution("cv2", 10_000, T0, &[("a", 1_000_000)]),
    );
    let err = r.core.as_mut().unwrap().step(1024).unwrap_err().to_string();
    assert!(err.contains("disagree"), "{err}");
}

/// Anonymous resident memory (the heap; mapped journal pages are not counted).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Memory the ledger holds per conversion (a figure for the notes, not a check):
/// `cargo test --release -p clicktrail-actors --test ledger memory -- --ignored --nocapture`.
#[test]
#[ignore]
fn memory_per_conversion() {
    const N: usize = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), hold(30));
    {
        let p = r.journal.partition(ATTRIBUTIONS).unwrap();
        let mut w = p.writer().unwrap();
        for i in 0..N {
            let a = attribution(
                &format!("cv_{i:020}"),
                1000 + i as i64,
                T0 + i as i64,
                &[("a", 1_000_000)],
            );
            w.append_event(None, &a).unwrap();
        }
        w.publish();
    }
    r.journal.sync().unwrap();
    let before = rss_bytes();
    r.run();
    let after = rss_bytes();
    println!(
        "{N} conversions: anonymous RSS +{} MiB, {} bytes per conversion",
        (after - before) >> 20,
        (after - before) / N as u64
    );
}

/// A plan is written into the ledger once, by the first sale that uses it; later sales
/// name it. A plan changed in place is a new plan from then on, and each sale replays
/// under the plan it was priced with.
#[test]
fn plans_are_recorded_once_and_a_changed_plan_is_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rig::new(dir.path(), ten_percent(), hold(30));
    r.put(
        ATTRIBUTIONS,
        &attribution("cv1", 10_000, T0, &[("a", 1_000_000)]),
    );
    r.put(
        ATTRIBUTIONS,
        &attribution("cv2", 10_000, T0 + 1, &[("a", 1_000_000)]),
    );
    r.run();
    let t = r.txns();
    assert!(t[0].op_json.contains("percent-bps"), "{}", t[0].op_json);
    assert!(!t[1].op_json.contains("percent-bps"), "{}", t[1].op_json);
    assert!(
        t[1].op_json.contains("\"plan_key\":\"p#"),
        "{}",
        t[1].op_json
    );
    let store = r.store.clone();
    actix_rt::System::new().block_on(async move {
        store
            .upsert(
                "test",
                entity(
                    "plan",
                    json!({"id": "p", "campaign-id": "c", "percent-bps": 2000}),
                ),
            )
            .await
            .unwrap();
    });
    r.put(
        ATTRIBUTIONS,
        &attribution("cv3", 10_000, T0 + 2, &[("a", 1_000_000)]),
    );
    r.run();
    assert!(r.txns()[2].op_json.contains("\"percent-bps\":2000"));
    assert_eq!(r.balance("a"), (1000 + 1000 + 2000, 0, 0, 0));
    r.restart_same();
    r.check_balanced();
}
