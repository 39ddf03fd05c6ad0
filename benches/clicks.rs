//! Finding a click by its id: from the in-memory click index (the baseline, measured in
//! the same run) and, for a click that has left it, from the journal through the sampled
//! positions: what a postback pays for the `{sub1}`..`{sub5}` of an old click, and a
//! fingerprint match for its click.
//!
//! `cargo bench --bench clicks`; figures are per lookup. The journal holds 1,000,000
//! clicks of ~400 bytes over two partitions, with an impression after every fourth click;
//! the index keeps 10,000 of them.

use clicktrail::edge::click_id::{ClickIdCodec, ClickIdParts};
use clicktrail_actors::catalog::EntityStore;
use clicktrail_actors::clicks::{ClickIndexer, ClickLookup, RecentClicks, SharedClicks};
use clicktrail_actors::Processor;
use clicktrail_storage::schema::{Click, Impression, Pair};
use clicktrail_storage::{Journal, JournalConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::{Arc, Mutex};

const CLICKS: u32 = 1_000_000;
const INDEXED: usize = 10_000;
const T0: u32 = 1_764_000_000;

fn click(id: &str, at_us: i64, n: u32) -> Click {
    Click {
        at_us,
        click_id: id.into(),
        link_code: "demo".into(),
        affiliate_id: "demo-affiliate".into(),
        campaign_id: "demo-campaign".into(),
        sub_ids: vec![format!("s{n}"), String::new(), String::new(), String::new(), String::new()],
        ip: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36".into(),
        referrer: "https://news.example/story".into(),
        accept_language: "en-GB,en;q=0.9".into(),
        sec_fetch_dest: "document".into(),
        sec_fetch_site: "cross-site".into(),
        client_hints: vec![Pair { name: "sec-ch-ua".into(), value: "\"Chromium\";v=\"124\"".into() }],
        visitor_id: Some("AAAAAAAAAAAAAAAAAAAAAAAA".into()),
        fingerprint: Some(u64::from(n)),
        opted_out: false,
        destination: format!("https://shop.example/landing?click_id={id}"),
        utm: vec![],
    }
}

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let codec = ClickIdCodec::new(b"bench-click-id-key-0123456789abcdef");
    let mut writers: Vec<_> = (1..=2)
        .map(|s| {
            journal
                .partition(&format!("ingest-{s}"))
                .unwrap()
                .writer()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::with_capacity(CLICKS as usize);
    for n in 0..CLICKS {
        // 20,000 clicks a second, sequences handed out in order, alternate shards.
        let at_us = i64::from(T0) * 1_000_000 + i64::from(n) * 50;
        let shard = 1 + (n % 2) as u8;
        let id = codec.encode(&ClickIdParts {
            node: 1,
            shard,
            time_s: (at_us / 1_000_000) as u32,
            seq: n,
            link: 0,
        });
        let w = &mut writers[usize::from(shard) - 1];
        w.append_event(None, &click(&id, at_us, n)).unwrap();
        if n % 4 == 0 {
            let imp = Impression {
                at_us,
                impression_id: id.clone(),
                link_code: "demo".into(),
                affiliate_id: "demo-affiliate".into(),
                campaign_id: "demo-campaign".into(),
                ip: String::new(),
                user_agent: String::new(),
                referrer: String::new(),
                visitor_id: None,
            };
            w.append_event(None, &imp).unwrap();
        }
        ids.push(id);
    }
    drop(writers);
    let shared: SharedClicks = Arc::new(Mutex::new(RecentClicks::new(INDEXED)));
    let store = Arc::new(EntityStore::open(&journal).unwrap());
    let mut indexer = ClickIndexer::new(vec![], shared.clone(), store);
    for s in 1..=2 {
        let mut r = journal
            .partition(&format!("ingest-{s}"))
            .unwrap()
            .reader()
            .unwrap();
        while let Some(rec) = r.next().unwrap() {
            indexer.process(&rec, &mut Vec::new()).unwrap();
        }
    }
    // The indexer read one partition, then the other: the index holds the newest
    // clicks of the second.
    let (recent, old): (Vec<String>, Vec<String>) = {
        let c = shared.lock().unwrap();
        ids.into_iter().partition(|id| c.get(id).is_some())
    };
    assert_eq!(recent.len(), INDEXED);
    let lookup = ClickLookup {
        clicks: shared,
        journal: journal.clone(),
    };
    let mut rng = fastrand::Rng::with_seed(7);
    assert!(lookup.info(&recent[0]).is_some() && lookup.info(&old[12_345]).is_some());

    let mut g = c.benchmark_group("click_lookup");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline: in the click index", |b| {
        b.iter(|| lookup.info(&recent[rng.usize(..recent.len())]).unwrap())
    });
    g.bench_function("evicted: read back from the journal", |b| {
        b.iter(|| lookup.info(&old[rng.usize(..old.len())]).unwrap())
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
