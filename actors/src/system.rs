//! Wiring: the partitions each concern reads and writes, and the supervisor with every
//! concern added. The binary calls [`build`]; tests build smaller trees by hand.

use crate::catalog::EntityStore;
use crate::clicks::{ClickIndexer, RecentClicks, SharedClicks, CLICKS_MAX, FINGERPRINTS_MAX};
use crate::ingest::{IngestShard, IngestShards};
use crate::stats::{SharedStats, StatsCounter};
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::{attribution, fraud, ledger, payout, postback, Health};
use clicktrail_storage::Journal;
use std::sync::Arc;

/// Output partition of the fraud scorer.
pub const VERDICTS: &str = "fraud-verdicts";
/// Output partition of the attribution aggregator.
pub const ATTRIBUTIONS: &str = "attributions";
/// Output partition of the commission ledger.
pub const LEDGER: &str = "ledger";
/// Output partition of the payout scheduler.
pub const PAYOUTS: &str = "payouts";
/// Output partition of the postback dispatcher.
pub const POSTBACK_ATTEMPTS: &str = "postback-attempts";

/// Output partition of the live counters (dead letters only: the counts are in memory).
pub const LIVE_STATS: &str = "live-stats";
/// Output partition of the click indexer (dead letters only: the index is in memory).
pub const CLICK_INDEX: &str = "click-index";

/// The partitions an actor derives again from its inputs: damage in them is cut off at
/// recovery and derived anew (see `JournalConfig::rederived_partitions`). Not listed, as
/// they hold what clients were told was recorded or what a provider did: the ingest
/// partitions, `entities` and `payouts`.
pub fn rederived_partitions() -> Vec<String> {
    [
        VERDICTS,
        ATTRIBUTIONS,
        LEDGER,
        POSTBACK_ATTEMPTS,
        LIVE_STATS,
        CLICK_INDEX,
    ]
    .map(String::from)
    .to_vec()
}

/// Most ingest shards (partitions written by the edge).
pub const INGEST_SHARDS_MAX: usize = 64;

/// Name of ingest partition `n`.
pub fn ingest_partition(n: usize) -> String {
    format!("ingest-{n}")
}

/// The shard number of an ingest partition's name (the inverse of [`ingest_partition`]).
pub fn ingest_shard(name: &str) -> Option<usize> {
    name.strip_prefix("ingest-")?.parse().ok()
}

/// Names of all ingest partitions for `shards` shards.
pub fn ingest_partitions(shards: usize) -> Vec<String> {
    (0..shards).map(ingest_partition).collect()
}

/// Settings of the actor system as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemConfig {
    /// Ingest shards (one partition each). Default: 2. Bounds: 1 ..= 64.
    pub ingest_shards: usize,
    /// Most records handed to one shard and not yet acknowledged; beyond it the edge answers
    /// 503. Default: 4096.
    pub ingest_queue_max: usize,
    /// Most clicks the recent-click index keeps whole (oldest first out). Default:
    /// [`CLICKS_MAX`].
    pub click_index_max: usize,
    /// Most fingerprinted clicks remembered for fingerprint matches (oldest first out).
    /// Default: [`FINGERPRINTS_MAX`].
    pub fingerprint_index_max: usize,
    pub supervisor: SupervisorConfig,
    pub postbacks: postback::DispatcherConfig,
    pub ledger: ledger::LedgerConfig,
    pub payouts: payout::PayoutConfig,
    pub attribution: attribution::AttributionConfig,
    /// Key of the buyers' e-mail hashes (`secrets.email-hash-key`, or derived from the
    /// click-id key with [`fraud::email::derive_email_key`]): the conversion endpoint hashes
    /// with it, and the fraud rules compare hashes made with it. Default: empty (the
    /// server sets it).
    pub email_hash_key: Vec<u8>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            ingest_shards: 2,
            ingest_queue_max: 4096,
            click_index_max: CLICKS_MAX,
            fingerprint_index_max: FINGERPRINTS_MAX,
            supervisor: SupervisorConfig::default(),
            postbacks: postback::DispatcherConfig::default(),
            ledger: ledger::LedgerConfig::default(),
            payouts: payout::PayoutConfig::default(),
            attribution: attribution::AttributionConfig::default(),
            email_hash_key: Vec::new(),
        }
    }
}

/// What the HTTP edge holds on to from the actor system.
#[derive(Debug, Clone)]
pub struct Handles {
    /// Where the edge hands clicks and impressions (shards 1..) and conversions (shard 0).
    pub ingest: IngestShards,
    /// Live counters for the stats API.
    pub stats: SharedStats,
    /// Test and redelivery requests for the postback dispatcher.
    pub postback_commands: postback::Commands,
    /// Recent clicks, for fingerprint matching and postback sub-ids.
    pub clicks: SharedClicks,
    /// The commission ledger's balances and statements.
    pub ledger: ledger::SharedBook,
    /// Payout items, and the admin's requests to the scheduler.
    pub payouts: payout::SharedPayouts,
    pub payout_commands: payout::Commands,
    /// Fitted attribution models and journey figures; fits asked for over the API.
    pub attribution: attribution::SharedAttribution,
}

/// Builds the supervisor with one actor per concern. Returns it (not yet started) and the
/// handles the edge uses.
pub fn build(
    journal: Journal,
    health: Health,
    store: Arc<EntityStore>,
    config: &SystemConfig,
) -> (Supervisor, Handles) {
    assert!((1..=INGEST_SHARDS_MAX).contains(&config.ingest_shards));
    let shards = IngestShards::new(config.ingest_shards, config.ingest_queue_max);
    for n in 0..config.ingest_shards {
        // Created here, before any actor can open them with a small first segment: the
        // ingest partitions take every click and start larger (4 MiB, growing to the full
        // segment size). A failure here (a full disk) leaves nothing behind and is the
        // shard actor's to report when it opens the partition itself.
        if let Err(e) = journal.busy_partition(&ingest_partition(n)) {
            log::warn!("journal: {}: {e}", ingest_partition(n));
        }
    }
    let mut sup = Supervisor::new(journal.clone(), health, config.supervisor.clone());
    for n in 0..config.ingest_shards {
        let shards = shards.clone();
        sup = sup.child(
            &format!("ingest-shard-{n}"),
            Arc::new(move |arbiter, ctx| IngestShard::start(arbiter, ctx, &shards, n)),
        );
    }
    // The ingest partitions on disk beyond the configured shards too: after
    // `ingest-shards` is lowered, the partitions no longer written keep their clicks and
    // conversions in every actor's history (the conversion index reads them all as well).
    let mut inputs = ingest_partitions(config.ingest_shards);
    let mut dropped: Vec<usize> = journal
        .partitions()
        .iter()
        .filter_map(|p| ingest_shard(p.name()))
        .filter(|n| *n >= config.ingest_shards)
        .collect();
    dropped.sort_unstable();
    inputs.extend(dropped.into_iter().map(ingest_partition));
    let i = inputs.clone();
    sup = sup.worker(move || Box::new(fraud::FraudScorer::new(i.clone())));
    let i = inputs.clone();
    let attribution = attribution::SharedAttribution::default();
    let (a, s, ac) = (
        attribution.clone(),
        store.clone(),
        config.attribution.clone(),
    );
    sup = sup.worker(move || {
        Box::new(attribution::AttributionProcessor::new(
            i.clone(),
            s.clone(),
            ac.clone(),
            a.clone(),
        ))
    });
    // Money records are never removed by retention, even before their owners open them.
    for name in [LEDGER, PAYOUTS] {
        match journal.partition(name) {
            Ok(p) => p.keep_forever(),
            Err(e) => log::error!("cannot open {name} to keep it: {e}"),
        }
    }
    let book = ledger::SharedBook::default();
    let (mut i, b, s, lc) = (
        ledger::Ledger::own_inputs().map(String::from).to_vec(),
        book.clone(),
        store.clone(),
        config.ledger,
    );
    i.extend(inputs.iter().cloned());
    sup = sup.worker(move || Box::new(ledger::Ledger::new(i.clone(), s.clone(), b.clone(), lc)));
    let payouts = payout::SharedPayouts::default();
    let payout_commands = payout::Commands::default();
    let (s, pc, cmds, items) = (
        store.clone(),
        config.payouts.clone(),
        payout_commands.clone(),
        payouts.clone(),
    );
    sup = sup.child(
        "payout-scheduler",
        Arc::new(move |arbiter, ctx| {
            payout::Scheduler::start(
                arbiter,
                ctx,
                s.clone(),
                pc.clone(),
                cmds.clone(),
                items.clone(),
            )
        }),
    );
    let clicks: SharedClicks = Arc::new(std::sync::Mutex::new(RecentClicks::with_fingerprints(
        config.click_index_max,
        config.fingerprint_index_max,
    )));
    let (i, c, j, s) = (
        inputs.clone(),
        clicks.clone(),
        journal.clone(),
        store.clone(),
    );
    sup = sup.worker(move || {
        Box::new(ClickIndexer::new(i.clone(), c.clone(), s.clone()).pruning(j.clone()))
    });
    // The ledger too, for `commission.created`.
    let (i, pb) = (
        inputs
            .iter()
            .cloned()
            .chain([LEDGER.to_string()])
            .collect::<Vec<_>>(),
        config.postbacks.clone(),
    );
    let postback_commands = postback::Commands::default();
    let (cmds, c) = (postback_commands.clone(), clicks.clone());
    sup = sup.child(
        "postback-dispatcher",
        Arc::new(move |arbiter, ctx| {
            let (store, pb, i, cmds) = (store.clone(), pb.clone(), i.clone(), cmds.clone());
            postback::Dispatcher::start(arbiter, ctx, store, pb, i, cmds, c.clone())
        }),
    );
    let stats = SharedStats::default();
    let s = stats.clone();
    sup = sup.worker(move || Box::new(StatsCounter::new(inputs.clone(), s.clone())));
    (
        sup,
        Handles {
            ingest: shards,
            stats,
            postback_commands,
            clicks,
            ledger: book,
            payouts,
            payout_commands,
            attribution,
        },
    )
}
