//! The fraud scorer's throughput (issue #19: it must keep up with 20,000 clicks/s): clicks
//! of a realistic mix (many visitors, a few flooding addresses, some bots) and 2% of them
//! converting, read from a real journal and scored by the worker, beside a baseline
//! measured in the same run: a processor that only reads and decodes the same records.
//!
//! `cargo bench --bench fraud_scorer`; the figure to read is records per second
//! (criterion's throughput). In `cargo test` mode the batch is small.

use clicktrail_actors::catalog::{Entity, EntityStore};
use clicktrail_actors::fraud::{FraudConfig, FraudScorer, SharedFraud};
use clicktrail_actors::worker::{Output, Processor};
use clicktrail_actors::WorkerCore;
use clicktrail_storage::schema::{Click, ConversionV2, Currency, MatchKind, Money, Pair};
use clicktrail_storage::{Journal, JournalConfig, Record, RecordExt};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn clicks() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        2_000
    }
}

fn setup(dir: &std::path::Path, n: usize) -> (Journal, Arc<EntityStore>) {
    let j = Journal::open(
        dir,
        JournalConfig {
            segment_size: 64 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let store = Arc::new(EntityStore::open(&j).unwrap());
    let mut all = vec![Entity::Merchant(
        serde_json::from_value(serde_json::json!({"id": "m", "name": "M"})).unwrap(),
    )];
    for a in 0..20 {
        all.push(Entity::Affiliate(
            serde_json::from_value(
                serde_json::json!({"id": format!("a{a}"), "name": "A", "sites": ["news.example"]}),
            )
            .unwrap(),
        ));
    }
    all.push(Entity::Campaign(serde_json::from_value(serde_json::json!({"id": "c", "merchant-id": "m", "name": "C", "destination-url": "https://m.example/", "paid-search": false})).unwrap()));
    actix_rt::System::new().block_on(async {
        for e in all {
            store.upsert("bench", e).await.unwrap();
        }
    });
    let mut rng = fastrand::Rng::with_seed(19);
    let mut clicks = j.partition("ingest-1").unwrap().writer().unwrap();
    let mut convs = j.partition("ingest-0").unwrap().writer().unwrap();
    let t0 = 1_780_000_000_000_000i64;
    for i in 0..n {
        let at = t0 + i as i64 * 50; // 20,000 clicks/s
        let flood = rng.u32(..100) < 3;
        let ip = if flood {
            format!("203.0.113.{}", rng.u8(..4))
        } else {
            format!(
                "{}.{}.{}.{}",
                rng.u8(1..224),
                rng.u8(..),
                rng.u8(..),
                rng.u8(1..255)
            )
        };
        let id = format!("k{i}");
        let c = Click {
            at_us: at,
            click_id: id.clone(),
            link_code: "l".into(),
            affiliate_id: format!("a{}", rng.u8(..20)),
            campaign_id: "c".into(),
            sub_ids: vec![],
            ip,
            user_agent: if rng.u32(..100) < 2 {
                "python-requests/2.31".into()
            } else {
                CHROME.into()
            },
            referrer: "https://news.example/article".into(),
            accept_language: "en-GB,en;q=0.9".into(),
            sec_fetch_dest: "document".into(),
            sec_fetch_site: "cross-site".into(),
            client_hints: vec![Pair {
                name: "sec-ch-ua-platform".into(),
                value: "\"Windows\"".into(),
            }],
            visitor_id: Some(format!("v{}", rng.u32(..))),
            fingerprint: Some(rng.u64(..)),
            opted_out: false,
            destination: "https://m.example/".into(),
            utm: vec![],
        };
        clicks.append_event(None, &c).unwrap();
        if rng.u32(..100) < 2 {
            let conv = ConversionV2 {
                at_us: at + 600_000_000,
                conversion_id: format!("v{i}"),
                merchant_id: "m".into(),
                campaign_id: "c".into(),
                order_id: format!("o{i}"),
                event: "sale".into(),
                amount: Money {
                    amount_minor: 4990,
                    currency: Currency(*b"EUR"),
                },
                customer_id: Some(format!("cust{}", rng.u32(..1000))),
                occurred_at_us: at + 600_000_000,
                click_id: Some(id),
                affiliate_id: Some(c.affiliate_id.clone()),
                match_kind: MatchKind::ClickId,
                match_confidence_ppm: 1_000_000,
                metadata: vec![],
                ip: String::new(),
                user_agent: String::new(),
                customer_email_hash: None,
                imported: false,
            };
            convs.append_event(None, &conv).unwrap();
        }
    }
    clicks.publish();
    convs.publish();
    drop((clicks, convs));
    j.sync().unwrap();
    (j, store)
}

/// Reads and decodes what the scorer reads, nothing more.
#[derive(Debug)]
struct ReadOnly(u64);

impl Processor for ReadOnly {
    fn name(&self) -> &str {
        "read-only"
    }
    fn inputs(&self) -> Vec<String> {
        vec!["ingest-0".into(), "ingest-1".into()]
    }
    fn output(&self) -> String {
        "read-only-out".into()
    }
    fn resumes_from_output(&self) -> bool {
        false
    }
    fn process(&mut self, input: &Record<'_>, _out: &mut Vec<Output>) -> Result<(), String> {
        if let Some(c) = input.event::<Click>() {
            self.0 += c.ip.len() as u64;
        } else if let Some(c) = clicktrail_storage::schema::conversion(input) {
            self.0 += c.amount.amount_minor as u64;
        }
        Ok(())
    }
}

fn drain(core: &mut WorkerCore) {
    while core.step(1024).unwrap() > 0 {}
}

fn bench(c: &mut Criterion) {
    let n = clicks();
    let dir = tempfile::tempdir().unwrap();
    let (journal, store) = setup(dir.path(), n);
    let mut g = c.benchmark_group("fraud_scorer");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("baseline: read and decode", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut core = WorkerCore::open(&journal, Box::new(ReadOnly(0))).unwrap();
                let t = Instant::now();
                drain(&mut core);
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function("score every record", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                // A fresh output partition per run: the scorer writes its verdicts there.
                let scorer = Scorer(
                    FraudScorer::new(
                        vec!["ingest-0".into(), "ingest-1".into()],
                        store.clone(),
                        FraudConfig::default(),
                        SharedFraud::default(),
                    ),
                    format!("verdicts-{i}-{}", fastrand::u64(..)),
                );
                let mut core = WorkerCore::open(&journal, Box::new(scorer)).unwrap();
                let t = Instant::now();
                drain(&mut core);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// The scorer writing to its own partition (each run starts from nothing).
struct Scorer(FraudScorer, String);

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl Processor for Scorer {
    fn name(&self) -> &str {
        &self.1
    }
    fn inputs(&self) -> Vec<String> {
        self.0.inputs()
    }
    fn output(&self) -> String {
        self.1.clone()
    }
    fn resumes_from_output(&self) -> bool {
        false
    }
    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
        self.0.process(input, out)
    }
    fn tick(&mut self, now_us: i64, out: &mut Vec<Output>) {
        self.0.tick(now_us, out)
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
