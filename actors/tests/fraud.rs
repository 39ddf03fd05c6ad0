//! The fraud scorer through its worker on a real journal: a flood flags its first clicks
//! once it is seen and the conversion of one of them goes to review with the evidence in
//! words; a conversion seconds after its click is held; a clean one is allowed; a buyer
//! with the affiliate's e-mail is a self-referral; a person's decision is a verdict of its
//! own; a restart writes nothing twice.

use clicktrail_actors::catalog::{Entity, EntityStore};
use clicktrail_actors::fraud::email::email_hash;
use clicktrail_actors::fraud::{FraudConfig, FraudScorer, SharedFraud};
use clicktrail_actors::system::VERDICTS;
use clicktrail_actors::WorkerCore;
use clicktrail_storage::schema::{
    self, Click, ConversionV2, Currency, FraudDecision, FraudVerdictV2, MatchKind, Money, Pair,
    VerdictAction,
};
use clicktrail_storage::{Event, Journal, JournalConfig, Kind};
use serde_json::json;
use std::sync::Arc;

const T0: i64 = 1_780_000_000_000_000;
const S: i64 = 1_000_000;
const CLICKS: &str = "ingest-1";
const CONVERSIONS: &str = "ingest-0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn entity(kind: &str, v: serde_json::Value) -> Entity {
    match kind {
        "merchant" => Entity::Merchant(serde_json::from_value(v).unwrap()),
        "affiliate" => Entity::Affiliate(serde_json::from_value(v).unwrap()),
        "campaign" => Entity::Campaign(serde_json::from_value(v).unwrap()),
        _ => unreachable!(),
    }
}

struct Rig {
    journal: Journal,
    store: Arc<EntityStore>,
    view: SharedFraud,
    config: FraudConfig,
    core: Option<WorkerCore>,
}

impl Rig {
    fn new(dir: &std::path::Path) -> Rig {
        let journal = Journal::open(
            dir,
            JournalConfig {
                segment_size: 4 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        let store = Arc::new(EntityStore::open(&journal).unwrap());
        let all = [
            entity("merchant", json!({"id": "m", "name": "M"})),
            entity(
                "affiliate",
                json!({"id": "a", "name": "A", "email": "Owner@Example.com"}),
            ),
            entity("affiliate", json!({"id": "b", "name": "B"})),
            entity(
                "campaign",
                json!({"id": "c", "merchant-id": "m", "name": "C", "destination-url": "https://m.example/"}),
            ),
        ];
        actix_rt::System::new().block_on(async {
            for e in all {
                store.upsert("test", e).await.unwrap();
            }
        });
        let mut r = Rig {
            journal,
            store,
            view: SharedFraud::default(),
            config: FraudConfig {
                email_key: b"test key".to_vec(),
                ..FraudConfig::default()
            },
            core: None,
        };
        r.open();
        r
    }

    fn open(&mut self) {
        self.core = None;
        let scorer = FraudScorer::new(
            vec![CONVERSIONS.into(), CLICKS.into()],
            self.store.clone(),
            self.config.clone(),
            self.view.clone(),
        );
        self.core = Some(WorkerCore::open(&self.journal, Box::new(scorer)).unwrap());
    }

    fn put<E: Event>(&self, partition: &str, e: &E) {
        let p = self.journal.partition(partition).unwrap();
        let mut w = p.writer().unwrap();
        w.append_event(None, e).unwrap();
        w.publish();
        drop(w);
        self.journal.sync().unwrap();
    }

    fn run(&mut self) {
        while self.core.as_mut().unwrap().step(1024).unwrap() > 0 {}
    }

    fn verdicts(&self) -> Vec<FraudVerdictV2> {
        let p = self.journal.partition(VERDICTS).unwrap();
        let mut r = p.reader().unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next().unwrap() {
            if let Some(v) = schema::verdict(&rec) {
                out.push(v);
            }
        }
        out
    }

    fn latest(&self, id: &str) -> FraudVerdictV2 {
        self.verdicts()
            .into_iter()
            .rev()
            .find(|v| v.subject_id == id)
            .unwrap_or_else(|| panic!("no verdict on {id}"))
    }
}

fn click(id: &str, at: i64, ip: &str) -> Click {
    Click {
        at_us: at,
        click_id: id.into(),
        link_code: "l".into(),
        affiliate_id: "a".into(),
        campaign_id: "c".into(),
        sub_ids: vec![],
        ip: ip.into(),
        user_agent: CHROME.into(),
        referrer: "https://news.example/".into(),
        accept_language: "en".into(),
        sec_fetch_dest: "document".into(),
        sec_fetch_site: "cross-site".into(),
        client_hints: vec![Pair {
            name: "sec-ch-ua-platform".into(),
            value: "\"Windows\"".into(),
        }],
        visitor_id: Some(format!("v-{id}")),
        fingerprint: None,
        opted_out: false,
        destination: "https://m.example/".into(),
        utm: vec![],
    }
}

fn conversion(id: &str, click: &str, at: i64) -> ConversionV2 {
    ConversionV2 {
        at_us: at,
        conversion_id: id.into(),
        merchant_id: "m".into(),
        campaign_id: "c".into(),
        order_id: format!("o-{id}"),
        event: "sale".into(),
        amount: Money {
            amount_minor: 4990,
            currency: Currency(*b"EUR"),
        },
        customer_id: None,
        occurred_at_us: at,
        click_id: Some(click.into()),
        affiliate_id: Some("a".into()),
        match_kind: MatchKind::ClickId,
        match_confidence_ppm: 1_000_000,
        metadata: vec![],
        ip: String::new(),
        user_agent: String::new(),
        customer_email_hash: None,
        imported: false,
    }
}

#[test]
fn a_flood_flags_its_first_clicks_and_their_conversion_with_the_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::new(dir.path());
    rig.put(CLICKS, &click("k0", T0, "203.0.113.5"));
    rig.put(CONVERSIONS, &conversion("v0", "k0", T0 + 600 * S));
    rig.run();
    assert_eq!(rig.latest("v0").action, VerdictAction::Allow);
    // Ten more clicks from the same address within the minute: eleven is over the limit.
    for n in 1..=10 {
        rig.put(CLICKS, &click(&format!("k{n}"), T0 + n * S, "203.0.113.5"));
    }
    rig.run();
    let k0 = rig.latest("k0");
    assert_eq!(k0.action, VerdictAction::Review);
    assert_eq!(k0.hits[0].rule, "click-flood-ip");
    assert_eq!(k0.hits[0].reason, "11 clicks from IP 203.0.113.5 in 60 s");
    let v0 = rig.latest("v0");
    assert_eq!(v0.action, VerdictAction::Review, "the conversion is held");
    assert_eq!(
        v0.hits[0].reason,
        "its click: 11 clicks from IP 203.0.113.5 in 60 s"
    );
    // Each subject once per verdict level: k0..k10 review, v0 allow then review.
    let n = rig.verdicts().len();
    assert_eq!(n, 11 + 2);
    // A restart reads everything again and writes nothing new.
    rig.open();
    rig.run();
    assert_eq!(rig.verdicts().len(), n);
    assert_eq!(rig.view.read(|v| v.scored), (11, 1));
    assert_eq!(rig.view.read(|v| v.rule_hits["click-flood-ip"].0), 11);
}

#[test]
fn too_fast_self_referral_and_clean_conversions() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::new(dir.path());
    rig.put(CLICKS, &click("k1", T0, "192.0.2.1"));
    rig.put(CLICKS, &click("k2", T0, "192.0.2.2"));
    rig.put(CLICKS, &click("k3", T0, "192.0.2.3"));
    rig.put(CONVERSIONS, &conversion("fast", "k1", T0 + 3 * S));
    rig.put(CONVERSIONS, &conversion("clean", "k2", T0 + 1800 * S));
    let own = ConversionV2 {
        customer_email_hash: email_hash(b"test key", "owner@example.com"),
        ..conversion("own", "k3", T0 + 1800 * S)
    };
    rig.put(CONVERSIONS, &own);
    rig.run();
    let fast = rig.latest("fast");
    assert_eq!(fast.action, VerdictAction::Review);
    assert_eq!(fast.reasons, ["conversion 3 s after its click"]);
    let clean = rig.latest("clean");
    assert_eq!((clean.action, clean.hits.len()), (VerdictAction::Allow, 0));
    let own = rig.latest("own");
    assert_eq!(own.action, VerdictAction::Review);
    assert_eq!(own.hits[0].rule, "self-referral-email");
    assert!(rig
        .verdicts()
        .iter()
        .all(|v| v.subject_kind == Kind::Conversion as u16));
    let (queue, n) = rig.view.read(|v| v.review_queue(0, 10));
    assert_eq!(n, 2);
    assert_eq!(&*queue[0].subject_id, "fast");
}

#[test]
fn a_persons_decision_is_a_verdict_once_and_the_scorer_never_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::new(dir.path());
    rig.put(CLICKS, &click("k1", T0, "192.0.2.1"));
    rig.put(CONVERSIONS, &conversion("fast", "k1", T0 + 2 * S));
    rig.run();
    rig.put(
        CONVERSIONS,
        &FraudDecision {
            at_us: T0 + 3600 * S,
            subject_kind: Kind::Conversion as u16,
            subject_id: "fast".into(),
            action: VerdictAction::Allow,
            reason: "a returning customer, checked".into(),
            actor: "admin:ops".into(),
        },
    );
    rig.run();
    let v = rig.latest("fast");
    assert_eq!(
        (v.action, v.decided_by.as_str()),
        (VerdictAction::Allow, "admin:ops")
    );
    assert_eq!(v.note, "a returning customer, checked");
    assert_eq!(v.hits[0].rule, "conversion-too-fast", "the evidence stays");
    assert_eq!(rig.view.read(|v| v.review_queue(0, 10).1), 0);
    // A flood found later does not override the person.
    for n in 2..=12 {
        rig.put(CLICKS, &click(&format!("k{n}"), T0 + n * S, "192.0.2.1"));
    }
    rig.run();
    assert_eq!(rig.latest("fast").decided_by, "admin:ops");
    let n = rig.verdicts().len();
    rig.open();
    rig.run();
    assert_eq!(rig.verdicts().len(), n, "the decision is applied once");
    assert_eq!(
        rig.view
            .read(|v| v.latest("fast").unwrap().decided_by.clone()),
        "admin:ops"
    );
}
