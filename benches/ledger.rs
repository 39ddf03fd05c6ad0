//! Ledger throughput through the actor's engine: attributed conversions in, balanced
//! ledger transactions out (journal writes included), beside a baseline measured in the
//! same run: a pass-through worker that copies each input record to its output, the least
//! any journal-tailing actor does per record. Only the ratio travels; the absolute figure
//! is compared with the conversion rate the edge accepts (about 10,000/s on this machine).
//!
//! `cargo bench --bench ledger`; figures are per conversion (`Throughput::Elements`).

use clicktrail_actors::catalog::{Entity, EntityStore};
use clicktrail_actors::ledger::{Ledger, LedgerConfig, SharedBook};
use clicktrail_actors::system::{ATTRIBUTIONS, LEDGER};
use clicktrail_actors::{Output, Processor, WorkerCore};
use clicktrail_storage::schema::{AttributionV2, Currency, Money, Touchpoint};
use clicktrail_storage::{Journal, JournalConfig, Record};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use std::sync::Arc;

const CONVERSIONS: u64 = 20_000;
const AFFILIATES: u64 = 100;
/// Far in the future: the wall-clock tick approves nothing during the run.
const T0: i64 = 4_100_000_000_000_000;

fn entity(kind: &str, v: serde_json::Value) -> Entity {
    match kind {
        "merchant" => Entity::Merchant(serde_json::from_value(v).unwrap()),
        "affiliate" => Entity::Affiliate(serde_json::from_value(v).unwrap()),
        "campaign" => Entity::Campaign(serde_json::from_value(v).unwrap()),
        _ => Entity::Plan(serde_json::from_value(v).unwrap()),
    }
}

/// A journal with the entities and `CONVERSIONS` attributions waiting.
fn prepared(tiered: bool) -> (tempfile::TempDir, Journal, Arc<EntityStore>) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let store = Arc::new(EntityStore::open(&j).unwrap());
    let mut all = vec![
        entity("merchant", json!({"id": "m", "name": "M"})),
        entity(
            "campaign",
            json!({"id": "c", "merchant-id": "m", "name": "C", "destination-url": "https://m.example/"}),
        ),
        entity(
            "plan",
            if tiered {
                json!({"id": "p", "campaign-id": "c", "tiers": {"basis": "conversions", "mode": "bracket",
                    "brackets": [{"up-to": 50, "bps": 1000}, {"up-to": 200, "bps": 1500}, {"bps": 2000}]}})
            } else {
                json!({"id": "p", "campaign-id": "c", "percent-bps": 1000})
            },
        ),
    ];
    for a in 0..AFFILIATES {
        all.push(entity(
            "affiliate",
            json!({"id": format!("a{a}"), "name": "A"}),
        ));
    }
    actix_rt::System::new().block_on(async {
        for e in all {
            store.upsert("bench", e).await.unwrap();
        }
    });
    let mut w = j.partition(ATTRIBUTIONS).unwrap().writer().unwrap();
    for i in 0..CONVERSIONS {
        let at = T0 + i as i64 * 1000;
        w.append_event(
            None,
            &AttributionV2 {
                at_us: at,
                conversion_id: format!("cv_{i:012}"),
                model: "last-click".into(),
                touchpoints: vec![Touchpoint {
                    click_id: format!("click-{i}"),
                    affiliate_id: format!("a{}", i % AFFILIATES),
                    at_us: at - 1000,
                    weight_ppm: 1_000_000,
                }],
                merchant_id: "m".into(),
                campaign_id: "c".into(),
                order_id: format!("o-{i}"),
                event: "sale".into(),
                amount: Money {
                    amount_minor: 1000 + (i as i64 * 37) % 90_000,
                    currency: Currency(*b"EUR"),
                },
                customer_id: None,
                occurred_at_us: at,
            },
        )
        .unwrap();
    }
    w.publish();
    drop(w);
    j.sync().unwrap();
    (dir, j, store)
}

/// Copies each input record to its output: the floor of a tailing actor.
struct PassThrough;
impl Processor for PassThrough {
    fn name(&self) -> &str {
        "pass-through"
    }
    fn inputs(&self) -> Vec<String> {
        vec![ATTRIBUTIONS.into()]
    }
    fn output(&self) -> String {
        LEDGER.into()
    }
    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
        let mut payload = rkyv::util::AlignedVec::new();
        payload.extend_from_slice(input.payload);
        out.push(Output {
            kind: 0x7002,
            version: 1,
            payload,
        });
        Ok(())
    }
}

fn drain(j: &Journal, p: Box<dyn Processor>) -> usize {
    let mut core = WorkerCore::open(j, p).unwrap();
    let mut n = 0;
    loop {
        let done = core.step(1024).unwrap();
        if done == 0 {
            break;
        }
        n += done;
    }
    assert_eq!(n as u64, CONVERSIONS);
    n
}

fn ledger(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger_conversions");
    g.throughput(Throughput::Elements(CONVERSIONS));
    g.sample_size(10);
    g.bench_function("baseline_pass_through_worker", |b| {
        b.iter_batched(
            || prepared(false),
            |(d, j, s)| (drain(&j, Box::new(PassThrough)), d, j, s),
            BatchSize::PerIteration,
        )
    });
    for (name, tiered) in [("ledger_percent_plan", false), ("ledger_tiered_plan", true)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || prepared(tiered),
                |(d, j, s)| {
                    let ledger = Ledger::new(
                        vec![ATTRIBUTIONS.into()],
                        s.clone(),
                        SharedBook::default(),
                        LedgerConfig::default(),
                    );
                    // Returned, so the clean-up is not timed.
                    (drain(&j, Box::new(ledger)), d, j, s)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, ledger);
criterion_main!(benches);
