//! Payout scheduler: reads the ledger, and on schedule (or when an admin asks) creates a
//! batch with one item per partner and currency whose payable balance reaches the
//! currency's minimum; items are approved (automatically or by an admin), then paid
//! through the partner's provider. Everything it decides is a [`PayoutItem`] record in
//! `payouts`; the ledger reads the paid ones and moves the money from approved to paid.
//!
//! Exactly once: before any provider call the scheduler writes the item's `intent` and
//! waits until it is durable; every call for the item uses the item id as the provider's
//! idempotency key (Stripe `Idempotency-Key`, PayPal `sender_batch_id`, Wise
//! `customerTransactionId`). A timeout, 409, 429 or 5xx leaves the item reserved and
//! retried with backoff under the same key, forever if need be (the outcome is unknown, so
//! the money must not be offered again); only a definite refusal (other 4xx) or an admin's
//! cancel before dispatch releases it. After a crash the scheduler rebuilds its items from
//! `payouts` and retries every item whose last record is an intent or a retry.
//!
//! Payable, per partner and currency: the ledger's approved balance, less approvals newer
//! than the run's cutoff (negative movements, refunds after payout, always count), less
//! items still reserved and not yet seen paid in the ledger.
//!
//! Schedules (in the program's UTC offset): `net-15` / `net-30` pay what was approved in
//! a calendar month 15 / 30 days after it ends; `day-N` pays on day N (1-28) of every
//! month what was approved before it; `manual` only when an admin asks
//! (`POST /api/v1/payouts/run`).

pub mod providers;
pub mod tz;

use crate::catalog::EntityStore;
use crate::ledger::commission::{civil_from_days, days_from_civil};
use crate::ledger::{parse_partner_account, Bucket, Op};
use crate::supervisor::{ChildCtx, Stop, ThreadActor};
use actix::prelude::*;
use clicktrail_storage::schema::{
    ArchivedLedgerCause, ArchivedPayoutItemStatus, Currency, LedgerTxn, Money, PayoutItem,
    PayoutItemStatus,
};
use clicktrail_storage::{Journal, Reader, RecordExt, Writer};
use providers::{Outcome, Payment, ProviderConfig, ProviderKind};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Who the scheduler's own records name.
pub const ACTOR: &str = "payout-scheduler";

/// When batches are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Manual,
    /// Pay a month's approvals this many days after the month ends.
    Net(u32),
    /// Pay on this day of every month.
    DayOfMonth(u32),
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let bad = || format!("schedule {s:?}: expected manual, net-15, net-30 or day-1 .. day-28");
        match s {
            "manual" => Ok(Schedule::Manual),
            "net-15" => Ok(Schedule::Net(15)),
            "net-30" => Ok(Schedule::Net(30)),
            _ => {
                let d: u32 = s
                    .strip_prefix("day-")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if (1..=28).contains(&d) {
                    Ok(Schedule::DayOfMonth(d))
                } else {
                    Err(bad())
                }
            }
        }
    }

    /// The latest scheduled run at or before `now_us`: (run time, cutoff), in UTC
    /// microseconds, with calendar days in `zone` (midnights and month starts local,
    /// daylight saving time included).
    pub fn latest_run(self, now_us: i64, zone: &tz::Zone) -> Option<(i64, i64)> {
        const DAY_S: i64 = 86_400;
        let now_s = now_us.div_euclid(1_000_000);
        let local = now_s + zone.offset_at(now_s) as i64;
        let (y, m, d) = civil_from_days(local.div_euclid(DAY_S));
        // UTC microseconds of local midnight `day` days after the first of (y, m).
        let midnight = |y: i64, m: u32, day: i64| {
            zone.to_utc((days_from_civil(y, m, 1) + day) * DAY_S) * 1_000_000
        };
        let prev = |y: i64, m: u32| if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        match self {
            Schedule::Manual => None,
            Schedule::DayOfMonth(n) => {
                let (ry, rm) = if d >= n { (y, m) } else { prev(y, m) };
                let run = midnight(ry, rm, n as i64 - 1);
                Some((run, run))
            }
            Schedule::Net(n) => {
                // The last month whose payday (its end + n days) has come; its approvals,
                // up to its end, are due. (On 1-2 March, net-30 of January falls on 2-3
                // March: step back until the payday is not in the future.)
                let (mut py, mut pm) = (y, m);
                loop {
                    let run = midnight(py, pm, n as i64);
                    if run <= now_us {
                        return Some((run, midnight(py, pm, 0)));
                    }
                    (py, pm) = prev(py, pm);
                }
            }
        }
    }
}

pub use tz::parse_offset;

/// The scheduler's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutConfig {
    pub schedule: Schedule,
    /// The program's time zone (payout calendars).
    pub zone: tz::Zone,
    /// Items wait for an admin's approval (otherwise they are approved at once).
    pub admin_approval: bool,
    /// Smallest payout per currency (minor units); a currency not listed: 1.
    pub minimum: BTreeMap<String, i64>,
    pub providers: BTreeMap<ProviderKind, ProviderConfig>,
    pub timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// This installation's id, put before the item id in every provider idempotency key,
    /// so two installations paying through one provider account (or one whose data
    /// directory was wiped) never share a key: a shared key makes the provider return the
    /// other payment, which would count as paid with nothing paid. Empty for data
    /// directories that held payouts before installation ids existed, so their in-flight
    /// items keep the keys they were first tried with.
    pub installation_id: String,
}

impl PayoutConfig {
    /// The idempotency key of every provider call for `item_id`.
    pub fn idempotency_key(&self, item_id: &str) -> String {
        if self.installation_id.is_empty() {
            item_id.to_string()
        } else {
            format!("{}-{item_id}", self.installation_id)
        }
    }
}

impl Default for PayoutConfig {
    fn default() -> Self {
        PayoutConfig {
            schedule: Schedule::Net(30),
            zone: tz::Zone::utc(),
            admin_approval: false,
            minimum: BTreeMap::new(),
            providers: BTreeMap::new(),
            timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            installation_id: String::new(),
        }
    }
}

/// What an admin asks of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a batch now with everything payable (cutoff: now). The scheduler leaves a
    /// [`RunReport`] under `request` (0: nobody waits for one).
    Run {
        actor: String,
        request: u64,
    },
    Approve {
        batch_id: String,
        actor: String,
    },
    /// Cancel a batch's items that were not dispatched yet, or whose dispatch is unsettled
    /// (retrying, held) after the admin checked with the provider that nothing was paid.
    Cancel {
        batch_id: String,
        actor: String,
    },
    /// An unsettled item the admin found paid at the provider.
    MarkPaid {
        item_id: String,
        provider_ref: String,
        actor: String,
    },
}

/// The API's queue of commands to the scheduler. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Commands {
    queue: Arc<Mutex<VecDeque<Command>>>,
    /// What each waited-for run did, by request number (at most [`COMMANDS_MAX`]).
    reports: Arc<Mutex<BTreeMap<u64, RunReport>>>,
    next_request: Arc<std::sync::atomic::AtomicU64>,
}

/// Most commands waiting, and most run reports kept for their callers.
pub const COMMANDS_MAX: usize = 100;

impl Commands {
    /// Queues a command; false when [`COMMANDS_MAX`] are already waiting.
    pub fn send(&self, c: Command) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= COMMANDS_MAX {
            return false;
        }
        q.push_back(c);
        true
    }

    /// Queues a run whose report the caller will wait for; its request number, or `None`
    /// when the queue is full.
    pub fn send_run(&self, actor: String) -> Option<u64> {
        let request = self
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.send(Command::Run { actor, request })
            .then_some(request)
    }

    /// Takes the report of run `request`, once the scheduler has made it.
    pub fn take_report(&self, request: u64) -> Option<RunReport> {
        self.reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&request)
    }

    fn put_report(&self, request: u64, report: RunReport) {
        let mut r = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        while r.len() >= COMMANDS_MAX {
            r.pop_first(); // a caller that stopped waiting long ago
        }
        r.insert(request, report);
    }

    fn take(&self) -> Vec<Command> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }
}

/// What a payout run did: the items it created, and each partner with money it left out
/// and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunReport {
    /// The batch made, if any item was.
    pub batch_id: Option<String>,
    pub items: Vec<ReportItem>,
    pub left_out: Vec<LeftOut>,
    /// Why the run could not be made (the journal failed); nothing was created.
    pub error: Option<String>,
}

/// One item a run created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReportItem {
    pub item_id: String,
    pub affiliate_id: String,
    pub currency: String,
    pub gross_minor: i64,
    pub fee_minor: i64,
    pub provider: String,
    pub status: String,
}

/// A partner with money a run did not pay, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeftOut {
    pub affiliate_id: String,
    pub currency: String,
    pub payable_minor: i64,
    /// `below_minimum`, `on_hold`, `no_payout_account`, `provider_not_configured`,
    /// `fee_exceeds_amount`, `unknown_affiliate`.
    pub reason: &'static str,
    /// The same in words, with what to do.
    pub detail: String,
}

/// One item as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemView {
    pub batch_id: String,
    pub item_id: String,
    pub affiliate_id: String,
    pub amount: Money,
    pub fee_minor: i64,
    pub provider: String,
    pub destination: String,
    pub status: PayoutItemStatus,
    pub attempt: u32,
    pub provider_ref: Option<String>,
    pub error: Option<String>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    /// When its first provider call was made (the idempotency window counts from it).
    pub first_attempt_us: Option<i64>,
}

/// Every payout item, for the API.
pub type SharedPayouts = Arc<Mutex<BTreeMap<String, ItemView>>>;

pub fn status_name(s: PayoutItemStatus) -> &'static str {
    match s {
        PayoutItemStatus::Proposed => "proposed",
        PayoutItemStatus::Approved => "approved",
        PayoutItemStatus::Intent => "intent",
        PayoutItemStatus::Paid => "paid",
        PayoutItemStatus::Retrying => "retrying",
        PayoutItemStatus::Cancelled => "cancelled",
        PayoutItemStatus::Held => "held",
    }
}

fn status_of(a: &ArchivedPayoutItemStatus) -> PayoutItemStatus {
    match a {
        ArchivedPayoutItemStatus::Proposed => PayoutItemStatus::Proposed,
        ArchivedPayoutItemStatus::Approved => PayoutItemStatus::Approved,
        ArchivedPayoutItemStatus::Intent => PayoutItemStatus::Intent,
        ArchivedPayoutItemStatus::Paid => PayoutItemStatus::Paid,
        ArchivedPayoutItemStatus::Retrying => PayoutItemStatus::Retrying,
        ArchivedPayoutItemStatus::Cancelled => PayoutItemStatus::Cancelled,
        ArchivedPayoutItemStatus::Held => PayoutItemStatus::Held,
    }
}

/// The ledger as the scheduler needs it, per (partner, currency).
#[derive(Debug, Default)]
struct Payable {
    approved: i64,
    /// Positive movements into approved (not payouts), oldest first: (at, amount).
    approvals: Vec<(i64, i64)>,
}

struct Engine {
    store: Arc<EntityStore>,
    config: PayoutConfig,
    ledger: Reader,
    writer: Writer,
    payable: HashMap<(String, [u8; 3]), Payable>,
    /// Items the ledger shows paid.
    in_ledger: std::collections::HashSet<String>,
    items: SharedPayouts,
    batches: u64,
    /// Cutoff of the last scheduled run done (runs are created once).
    last_run: i64,
    /// When each item may be tried again.
    next_try: HashMap<String, Instant>,
    agent: ureq::Agent,
}

use crate::catalog::now_us;

impl Engine {
    fn open(
        journal: Journal,
        store: Arc<EntityStore>,
        config: PayoutConfig,
        items: SharedPayouts,
    ) -> clicktrail_storage::Result<Engine> {
        let output = journal.partition(crate::system::PAYOUTS)?;
        output.keep_forever();
        let mut map = BTreeMap::new();
        let mut batches = 0u64;
        let mut last_run = i64::MIN;
        let mut r = output.reader()?;
        while let Some(rec) = r.next()? {
            let Some(p) = rec.event::<PayoutItem>() else {
                continue;
            };
            let status = status_of(&p.status);
            let at = p.at_us.to_native();
            let e = map
                .entry(p.item_id.to_string())
                .or_insert_with(|| ItemView {
                    batch_id: p.batch_id.to_string(),
                    item_id: p.item_id.to_string(),
                    affiliate_id: p.affiliate_id.to_string(),
                    amount: Money {
                        amount_minor: p.amount.amount_minor.to_native(),
                        currency: Currency(p.amount.currency.0),
                    },
                    fee_minor: p.fee_minor.to_native(),
                    provider: p.provider.to_string(),
                    destination: p.destination.to_string(),
                    status,
                    attempt: 0,
                    provider_ref: None,
                    error: None,
                    created_at_us: at,
                    updated_at_us: at,
                    first_attempt_us: None,
                });
            if status == PayoutItemStatus::Intent && e.first_attempt_us.is_none() {
                e.first_attempt_us = Some(at);
            }
            e.status = status;
            e.attempt = p.attempt.to_native();
            e.provider_ref = p.provider_ref.as_ref().map(|s| s.to_string());
            e.error = p.error.as_ref().map(|s| s.to_string());
            e.updated_at_us = at;
            if let Some((seq, cutoff)) = parse_batch(p.batch_id.as_str()) {
                batches = batches.max(seq);
                if let Some(c) = cutoff {
                    last_run = last_run.max(c);
                }
            }
        }
        *items.lock().unwrap_or_else(PoisonError::into_inner) = map;
        let ledger = journal
            .partition(crate::system::LEDGER)?
            .reader()?
            .durable_only();
        Ok(Engine {
            writer: output.writer()?,
            store,
            agent: providers::agent(config.timeout),
            config,
            ledger,
            payable: HashMap::new(),
            in_ledger: Default::default(),
            items,
            batches,
            last_run,
            next_try: HashMap::new(),
        })
    }

    /// Reads new ledger transactions.
    fn read_ledger(&mut self) -> clicktrail_storage::Result<usize> {
        let mut n = 0;
        while let Some(rec) = self.ledger.next()? {
            n += 1;
            let Some(t) = rec.event::<LedgerTxn>() else {
                continue;
            };
            let at = t.at_us.to_native();
            let cur = t.currency.0;
            let payout = matches!(t.cause, ArchivedLedgerCause::Payout);
            if payout {
                if let Ok(Op::Payout { item_id, .. }) = serde_json::from_str(t.op_json.as_str()) {
                    self.in_ledger.insert(item_id);
                }
            }
            for p in t.postings.iter() {
                let Some((affiliate, Bucket::Approved)) = parse_partner_account(p.account.as_str())
                else {
                    continue;
                };
                let amount = p.amount_minor.to_native();
                let e = self
                    .payable
                    .entry((affiliate.to_string(), cur))
                    .or_default();
                e.approved += amount;
                if amount > 0 && !payout {
                    e.approvals.push((at, amount));
                }
            }
        }
        Ok(n)
    }

    /// What items not yet seen paid in the ledger (and not cancelled) hold back, per
    /// partner and currency.
    fn reserved(&self) -> HashMap<(String, [u8; 3]), i64> {
        let mut out: HashMap<(String, [u8; 3]), i64> = HashMap::new();
        for i in self
            .items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|i| {
                i.status != PayoutItemStatus::Cancelled && !self.in_ledger.contains(&i.item_id)
            })
        {
            *out.entry((i.affiliate_id.clone(), i.amount.currency.0))
                .or_default() += i.amount.amount_minor;
        }
        out
    }

    /// What a partner can be paid in a currency for approvals up to `cutoff`, less what
    /// `reserved` holds back.
    fn payable(&self, key: &(String, [u8; 3]), cutoff: i64, reserved: i64) -> i64 {
        let Some(p) = self.payable.get(key) else {
            return 0;
        };
        // Not in time order (event times and tick times mix): look at all of them.
        let newer: i64 = p
            .approvals
            .iter()
            .filter(|(at, _)| *at >= cutoff)
            .map(|(_, a)| a)
            .sum();
        p.approved - newer - reserved
    }

    fn record(
        &mut self,
        v: &ItemView,
        actor: &str,
        durable: bool,
    ) -> clicktrail_storage::Result<()> {
        let rec = PayoutItem {
            at_us: now_us(),
            batch_id: v.batch_id.clone(),
            item_id: v.item_id.clone(),
            affiliate_id: v.affiliate_id.clone(),
            amount: v.amount,
            fee_minor: v.fee_minor,
            provider: v.provider.clone(),
            destination: v.destination.clone(),
            status: v.status,
            attempt: v.attempt,
            provider_ref: v.provider_ref.clone(),
            error: v.error.clone(),
            actor: actor.into(),
        };
        let appended = self.writer.append_event(None, &rec)?;
        self.writer.publish();
        if durable {
            self.writer
                .partition()
                .wait_durable_blocking(appended.end, Duration::from_secs(30))?;
        }
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stored = v.clone();
        stored.updated_at_us = rec.at_us;
        if let Some(old) = items.get(&v.item_id) {
            stored.created_at_us = old.created_at_us;
            stored.first_attempt_us = stored.first_attempt_us.or(old.first_attempt_us);
        } else {
            stored.created_at_us = rec.at_us;
        }
        if stored.status == PayoutItemStatus::Intent && stored.first_attempt_us.is_none() {
            stored.first_attempt_us = Some(rec.at_us);
        }
        items.insert(v.item_id.clone(), stored);
        Ok(())
    }

    /// Creates a batch with everything payable up to `cutoff`; reports its items (no batch
    /// when nobody is payable) and who was left out.
    fn create_batch(
        &mut self,
        cutoff: i64,
        scheduled: bool,
        actor: &str,
    ) -> clicktrail_storage::Result<RunReport> {
        // Everything the ledger has posted so far, made durable now rather than at the next
        // background sync: a batch must not miss what the partner already sees approved.
        self.ledger.partition().sync()?;
        self.read_ledger()?;
        let catalog = self.store.snapshot();
        let seq = self.batches + 1;
        let batch_id = if scheduled {
            format!("b{seq:06}-s{cutoff}")
        } else {
            format!("b{seq:06}-m")
        };
        let mut keys: Vec<(String, [u8; 3])> = self.payable.keys().cloned().collect();
        keys.sort();
        let mut made = Vec::new();
        let mut report = RunReport::default();
        let reserved = self.reserved();
        for key in keys {
            let held = reserved.get(&key).copied().unwrap_or(0);
            let amount = self.payable(&key, cutoff, held);
            let currency = Currency(key.1);
            let mut leave = |reason: &'static str, detail: String| {
                log::info!("payouts: {} not paid: {detail}", key.0);
                report.left_out.push(LeftOut {
                    affiliate_id: key.0.clone(),
                    currency: currency.as_str().to_string(),
                    payable_minor: amount,
                    reason,
                    detail,
                });
            };
            if amount <= 0 {
                continue;
            }
            let minimum = self
                .config
                .minimum
                .get(currency.as_str())
                .copied()
                .unwrap_or(1)
                .max(1);
            if amount < minimum {
                leave(
                    "below_minimum",
                    format!(
                        "{amount} minor units payable, below payouts.minimum {minimum} {}",
                        currency.as_str()
                    ),
                );
                continue;
            }
            let Some(a) = catalog.affiliates.get(&key.0) else {
                leave("unknown_affiliate", "the affiliate no longer exists".into());
                continue;
            };
            if a.payout_hold {
                leave(
                    "on_hold",
                    "payout-hold is set on the affiliate; clear it to pay".into(),
                );
                continue;
            }
            let (Some(kind), Some(account)) = (a.payout_provider, a.payout_account.as_ref()) else {
                leave(
                    "no_payout_account",
                    "the affiliate has no payout-provider and payout-account; set both \
                     (POST /api/v1/affiliates)"
                        .into(),
                );
                continue;
            };
            let Some(pc) = self.config.providers.get(&kind) else {
                leave(
                    "provider_not_configured",
                    format!(
                        "paid through {}, which has no [payouts.{}] section in the configuration",
                        kind.name(),
                        kind.name()
                    ),
                );
                continue;
            };
            let gross = Money {
                amount_minor: amount,
                currency,
            };
            let (fee, net) = providers::split_fee(pc, gross);
            if net.amount_minor <= 0 {
                leave(
                    "fee_exceeds_amount",
                    format!("the {} fee {fee} takes all of {amount}", kind.name()),
                );
                continue;
            }
            made.push(ItemView {
                batch_id: batch_id.clone(),
                item_id: format!("{batch_id}-{}-{}", key.0, currency.as_str()),
                affiliate_id: key.0.clone(),
                amount: gross,
                fee_minor: fee,
                provider: kind.name().into(),
                destination: account.clone(),
                status: PayoutItemStatus::Proposed,
                attempt: 0,
                provider_ref: None,
                error: None,
                created_at_us: 0,
                updated_at_us: 0,
                first_attempt_us: None,
            });
        }
        if scheduled {
            self.last_run = self.last_run.max(cutoff);
            // Cutoffs of scheduled runs only grow (manual runs take everything): approvals
            // before this one never count as "newer" again.
            for p in self.payable.values_mut() {
                p.approvals.retain(|(at, _)| *at >= cutoff);
            }
        }
        if made.is_empty() {
            return Ok(report);
        }
        self.batches = seq;
        for v in &made {
            self.record(v, actor, false)?;
        }
        if !self.config.admin_approval {
            for v in &mut made {
                v.status = PayoutItemStatus::Approved;
                self.record(v, ACTOR, false)?;
            }
        }
        log::info!("payouts: batch {batch_id} created by {actor}");
        report.batch_id = Some(batch_id);
        report.items = made
            .into_iter()
            .map(|v| ReportItem {
                item_id: v.item_id,
                affiliate_id: v.affiliate_id,
                currency: v.amount.currency.as_str().to_string(),
                gross_minor: v.amount.amount_minor,
                fee_minor: v.fee_minor,
                provider: v.provider,
                status: status_name(v.status).to_string(),
            })
            .collect();
        Ok(report)
    }

    fn batch_items(&self, batch_id: &str, status: PayoutItemStatus) -> Vec<ItemView> {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|i| i.batch_id == batch_id && i.status == status)
            .cloned()
            .collect()
    }

    fn run_commands(&mut self, commands: &Commands) -> clicktrail_storage::Result<()> {
        for c in commands.take() {
            match c {
                Command::Run { actor, request } => {
                    let result = self.create_batch(i64::MAX, false, &actor);
                    if request != 0 {
                        // On an error the caller hears it now; the scheduler restarts.
                        let report = result.as_ref().map_or_else(
                            |e| RunReport {
                                error: Some(format!("the payout run failed: {e}")),
                                ..RunReport::default()
                            },
                            Clone::clone,
                        );
                        commands.put_report(request, report);
                    }
                    result?;
                }
                Command::Approve { batch_id, actor } => {
                    for mut v in self.batch_items(&batch_id, PayoutItemStatus::Proposed) {
                        v.status = PayoutItemStatus::Approved;
                        self.record(&v, &actor, false)?;
                    }
                }
                Command::Cancel { batch_id, actor } => {
                    for mut v in self
                        .batch_items(&batch_id, PayoutItemStatus::Proposed)
                        .into_iter()
                        .chain(self.batch_items(&batch_id, PayoutItemStatus::Approved))
                        // An admin's word that an unsettled item was not paid (checked with
                        // the provider): its money becomes payable again.
                        .chain(self.batch_items(&batch_id, PayoutItemStatus::Retrying))
                        .chain(self.batch_items(&batch_id, PayoutItemStatus::Held))
                    {
                        v.status = PayoutItemStatus::Cancelled;
                        v.error = Some(format!("cancelled by {actor}"));
                        self.record(&v, &actor, false)?;
                    }
                }
                Command::MarkPaid {
                    item_id,
                    provider_ref,
                    actor,
                } => {
                    let item = self
                        .items
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&item_id)
                        .cloned();
                    if let Some(mut v) = item.filter(|v| {
                        matches!(
                            v.status,
                            PayoutItemStatus::Held
                                | PayoutItemStatus::Retrying
                                | PayoutItemStatus::Intent
                        )
                    }) {
                        v.status = PayoutItemStatus::Paid;
                        v.provider_ref = Some(provider_ref);
                        v.error = None;
                        self.next_try.remove(&v.item_id);
                        self.record(&v, &actor, true)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates the scheduled batch if its run has come and was not done.
    fn schedule(&mut self) -> clicktrail_storage::Result<()> {
        let Some((_run, cutoff)) = self.config.schedule.latest_run(now_us(), &self.config.zone)
        else {
            return Ok(());
        };
        if cutoff > self.last_run {
            self.create_batch(cutoff, true, ACTOR)?;
        }
        Ok(())
    }

    /// Dispatches approved items and retries unsettled ones that are due.
    fn dispatch(&mut self, stop: &AtomicBool) -> clicktrail_storage::Result<()> {
        let due: Vec<ItemView> = {
            let now = Instant::now();
            self.items
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .filter(|i| {
                    matches!(
                        i.status,
                        PayoutItemStatus::Approved
                            | PayoutItemStatus::Intent
                            | PayoutItemStatus::Retrying
                    )
                })
                .filter(|i| self.next_try.get(&i.item_id).is_none_or(|t| *t <= now))
                .cloned()
                .collect()
        };
        for mut v in due {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Some(kind) = ProviderKind::parse(&v.provider) else {
                continue;
            };
            let Some(pc) = self.config.providers.get(&kind).cloned() else {
                continue;
            };
            let window = pc.idempotency_window.as_micros() as i64;
            if v.first_attempt_us.is_some_and(|t| now_us() - t > window) {
                // A retry now could reach a provider that forgot the key and pays again.
                v.status = PayoutItemStatus::Held;
                v.error = Some(format!(
                    "no answer within the provider's idempotency window ({} s): check with {}, then mark it paid or cancel it",
                    pc.idempotency_window.as_secs(),
                    kind.name()
                ));
                log::error!(
                    "payouts: {} held: {}",
                    v.item_id,
                    v.error.as_deref().unwrap_or("")
                );
                self.record(&v, ACTOR, true)?;
                continue;
            }
            // The intent, durable before the provider hears of the item.
            v.attempt += 1;
            v.status = PayoutItemStatus::Intent;
            v.error = None;
            self.record(&v, ACTOR, true)?;
            let net = Money {
                amount_minor: v.amount.amount_minor - v.fee_minor,
                currency: v.amount.currency,
            };
            let outcome = providers::pay(
                &self.agent,
                kind,
                &pc,
                &Payment {
                    item_id: &v.item_id,
                    key: &self.config.idempotency_key(&v.item_id),
                    batch_id: &v.batch_id,
                    affiliate_id: &v.affiliate_id,
                    destination: &v.destination,
                    net,
                },
            );
            match outcome {
                Outcome::Paid(r) => {
                    v.status = PayoutItemStatus::Paid;
                    v.provider_ref = Some(r);
                    self.next_try.remove(&v.item_id);
                }
                Outcome::Retry(e) => {
                    log::warn!("payouts: {} attempt {}: {e}", v.item_id, v.attempt);
                    v.status = PayoutItemStatus::Retrying;
                    v.error = Some(e);
                    let exp = (self.config.backoff_initial.as_millis() as u64)
                        .saturating_mul(1u64 << v.attempt.saturating_sub(1).min(20));
                    let wait = Duration::from_millis(exp).min(self.config.backoff_max);
                    self.next_try
                        .insert(v.item_id.clone(), Instant::now() + wait);
                }
                Outcome::Refused(e) if v.attempt > 1 => {
                    // An earlier attempt's outcome is unknown (it may have paid): a refusal
                    // now proves nothing about it, so the money stays reserved until an
                    // admin, having checked with the provider, cancels the item.
                    log::error!(
                        "payouts: {} refused after an unknown outcome, held for an admin: {e}",
                        v.item_id
                    );
                    v.status = PayoutItemStatus::Held;
                    v.error = Some(format!(
                        "{e} (after an attempt whose outcome is unknown: check with the provider, then mark it paid or cancel it)"
                    ));
                }
                Outcome::Refused(e) => {
                    log::error!("payouts: {} refused: {e}", v.item_id);
                    v.status = PayoutItemStatus::Cancelled;
                    v.error = Some(e);
                }
            }
            self.record(&v, ACTOR, true)?;
        }
        Ok(())
    }
}

/// (sequence, scheduled cutoff) of a batch id `b000001-s<cutoff>` / `b000001-m`.
fn parse_batch(id: &str) -> Option<(u64, Option<i64>)> {
    let rest = id.strip_prefix('b')?;
    let (seq, kind) = rest.split_once('-')?;
    let seq = seq.parse().ok()?;
    Some((seq, kind.strip_prefix('s').and_then(|c| c.parse().ok())))
}

fn run(mut e: Engine, stop: Arc<AtomicBool>, commands: Commands) -> clicktrail_storage::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        e.read_ledger()?;
        e.run_commands(&commands)?;
        e.schedule()?;
        e.dispatch(&stop)?;
        e.ledger.wait(Duration::from_millis(100));
    }
    Ok(())
}

/// The scheduler's actor: a [`ThreadActor`] running [`run`].
#[derive(Debug)]
pub struct Scheduler;

impl Scheduler {
    /// Starts the scheduler (its thread rebuilds its items and reports running or failure).
    pub fn start(
        arbiter: &ArbiterHandle,
        ctx: ChildCtx,
        store: Arc<EntityStore>,
        config: PayoutConfig,
        commands: Commands,
        items: SharedPayouts,
    ) -> Recipient<Stop> {
        ThreadActor::start(arbiter, ctx, "payout-scheduler", move |ctx, stop| {
            let engine = Engine::open(ctx.journal.clone(), store, config, items)
                .map_err(|e| e.to_string())?;
            ctx.running();
            run(engine, stop, commands).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;
    const DAY_US: i64 = 86_400_000_000;

    #[test]
    fn schedules_name_their_latest_run_and_cutoff() {
        let utc = tz::Zone::utc();
        let dec_20 = days_from_civil(2026, 12, 20) * DAY_US;
        let dec_1 = days_from_civil(2026, 12, 1) * DAY_US;
        let nov_1 = days_from_civil(2026, 11, 1) * DAY_US;
        let oct_1 = days_from_civil(2026, 10, 1) * DAY_US;
        // net-15 on Dec 20: November's approvals were paid on Dec 16 (Dec 1 + 15 days).
        assert_eq!(
            Schedule::Net(15).latest_run(dec_20, &utc),
            Some((dec_1 + 15 * DAY_US, dec_1))
        );
        // net-30 on Dec 20: still October's run (Nov 1 + 30 days = Dec 1).
        assert_eq!(
            Schedule::Net(30).latest_run(dec_20, &utc),
            Some((nov_1 + 30 * DAY_US, nov_1))
        );
        let _ = oct_1;
        // day-15 on Dec 20: Dec 15; on Dec 10: Nov 15.
        let dec_15 = days_from_civil(2026, 12, 15) * DAY_US;
        assert_eq!(
            Schedule::DayOfMonth(15).latest_run(dec_20, &utc),
            Some((dec_15, dec_15))
        );
        let nov_15 = days_from_civil(2026, 11, 15) * DAY_US;
        assert_eq!(
            Schedule::DayOfMonth(15).latest_run(dec_15 - 5 * DAY_US, &utc),
            Some((nov_15, nov_15))
        );
        // Net-30 on 2 March 2027: January's payday (1 February + 30 days) is 3 March, so
        // the latest run is December's, on 31 January, for approvals before 1 January.
        let mar_2 = days_from_civil(2027, 3, 2) * DAY_US;
        let (jan_1, feb_1) = (
            days_from_civil(2027, 1, 1) * DAY_US,
            days_from_civil(2027, 2, 1) * DAY_US,
        );
        assert_eq!(
            Schedule::Net(30).latest_run(mar_2, &utc),
            Some((jan_1 + 30 * DAY_US, jan_1))
        );
        assert_eq!(
            Schedule::Net(30).latest_run(mar_2 + 2 * DAY_US, &utc),
            Some((feb_1 + 30 * DAY_US, feb_1))
        );
        // In UTC+02:00 the 15th starts two hours earlier.
        let plus2 = tz::Zone::load("+02:00").unwrap();
        assert_eq!(
            Schedule::DayOfMonth(15).latest_run(dec_15 - H, &plus2),
            Some((dec_15 - 2 * H, dec_15 - 2 * H))
        );
        // In Berlin, net-30 in July: June's approvals (to 1 July 00:00 CEST, 22:00 UTC
        // the day before) were due on 31 July 00:00 CEST.
        if let Ok(berlin) = tz::Zone::load("Europe/Berlin") {
            let aug_5 = days_from_civil(2026, 8, 5) * DAY_US;
            let jul_1 = days_from_civil(2026, 7, 1) * DAY_US;
            assert_eq!(
                Schedule::Net(30).latest_run(aug_5, &berlin),
                Some((jul_1 + 30 * DAY_US - 2 * H, jul_1 - 2 * H))
            );
        }
        assert_eq!(Schedule::Manual.latest_run(dec_20, &utc), None);
        assert_eq!(Schedule::parse("net-30"), Ok(Schedule::Net(30)));
        assert_eq!(Schedule::parse("day-28"), Ok(Schedule::DayOfMonth(28)));
        assert!(Schedule::parse("day-31").is_err());
        assert_eq!(parse_offset("+02:00"), Ok(7200));
        assert_eq!(parse_offset("-05:30"), Ok(-19800));
        assert!(parse_offset("Europe/Berlin").is_err());
        assert!(tz::Zone::load("Europe/Berlin").is_ok());
        assert_eq!(
            parse_batch("b000012-s1764000000"),
            Some((12, Some(1_764_000_000)))
        );
        assert_eq!(parse_batch("b000013-m"), Some((13, None)));
    }
}
