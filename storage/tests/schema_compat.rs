//! Old records still read: a journal written by schema v1 is kept in `tests/fixtures/v1`
//! and every later build must read each record in it to the same values.
//!
//! The fixture was made once with `CLICKTRAIL_WRITE_FIXTURES=1 cargo test -p
//! clicktrail-storage --test schema_compat`; never regenerate it for an existing version
//! (that would hide exactly the incompatibility this test exists to catch). A new schema
//! version adds a new fixture directory beside it.

use clicktrail_storage::schema::{self, samples};
use clicktrail_storage::{Journal, JournalConfig, Kind, RecordExt};
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn config() -> JournalConfig {
    JournalConfig {
        segment_size: 64 * 1024,
        record_size_max: 8192,
        ..Default::default()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else if e.path().extension().is_some_and(|x| x == "seg") {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn v1_records_still_read() {
    if std::env::var_os("CLICKTRAIL_WRITE_FIXTURES").is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(tmp.path(), config()).unwrap();
        let mut w = j.partition("events").unwrap().writer().unwrap();
        w.append_event(None, &samples::click()).unwrap();
        w.append_event(None, &samples::impression()).unwrap();
        w.append_event(None, &samples::conversion()).unwrap();
        w.append_event(None, &samples::reversal()).unwrap();
        let src = clicktrail_storage::Source {
            partition: 1,
            offset: 0,
            part: 0,
            parts: 1,
        };
        w.append_event(Some(&src), &samples::verdict()).unwrap();
        w.append_event(None, &samples::attribution()).unwrap();
        w.append_event(None, &samples::ledger_entry()).unwrap();
        w.append_event(None, &samples::payout()).unwrap();
        w.append_event(None, &samples::postback_attempt()).unwrap();
        w.append_event(None, &samples::entity_change()).unwrap();
        drop(w);
        j.close().unwrap();
        let _ = std::fs::remove_dir_all(fixture_dir());
        copy_tree(tmp.path(), &fixture_dir());
    }
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture_dir(), tmp.path());
    let j = Journal::open(tmp.path(), config()).unwrap();
    let p = j.get("events").expect("fixture partition");
    let mut r = p.reader().unwrap();
    let mut kinds = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        let kind = rec.kind_enum().expect("known kind");
        assert_eq!(
            schema::validate(rec.kind, rec.version, rec.payload),
            Some(Ok(()))
        );
        match kind {
            Kind::Click => assert_eq!(rec.to_owned_event(), Some(samples::click())),
            Kind::Impression => assert_eq!(rec.to_owned_event(), Some(samples::impression())),
            Kind::Conversion => {
                assert_eq!(rec.to_owned_event(), Some(samples::conversion()));
                assert_eq!(
                    schema::conversion(&rec),
                    Some(samples::conversion().into()),
                    "v1 conversions read as v2"
                );
            }
            Kind::ConversionReversal => {
                assert_eq!(rec.to_owned_event(), Some(samples::reversal()))
            }
            Kind::FraudVerdict => {
                assert_eq!(rec.to_owned_event(), Some(samples::verdict()));
                let v2 = schema::verdict(&rec).expect("v1 verdicts read as v2");
                assert_eq!((v2.reasons.len(), v2.hits.len()), (1, 1));
                assert_eq!(v2.decided_by, "scorer");
                assert_eq!(rec.source.unwrap().partition, 1);
            }
            Kind::Attribution => assert_eq!(rec.to_owned_event(), Some(samples::attribution())),
            Kind::LedgerEntry => assert_eq!(rec.to_owned_event(), Some(samples::ledger_entry())),
            Kind::Payout => assert_eq!(rec.to_owned_event(), Some(samples::payout())),
            Kind::PostbackAttempt => {
                assert_eq!(rec.to_owned_event(), Some(samples::postback_attempt()))
            }
            Kind::EntityChange => {
                assert_eq!(rec.to_owned_event(), Some(samples::entity_change()))
            }
            Kind::ConversionStatus => panic!("v1 had no conversion-status records"),
            Kind::DeadLetter => panic!("v1 had no dead-letter records"),
            Kind::AttributionModel | Kind::FraudDecision | Kind::FraudModel | Kind::ImportRef => {
                panic!("v1 had no {} records", kind.name())
            }
        }
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        Kind::ALL[..10].to_vec(),
        "one record of every kind v1 had, in order"
    );
    // Zero-copy access reads the same fields in place.
    let mut r = p.reader().unwrap();
    let rec = r.next().unwrap().unwrap();
    let click = rec.event::<schema::Click>().unwrap();
    assert_eq!(click.link_code.as_str(), "demo");
    assert_eq!(click.sub_ids.len(), 5);
    assert!(
        rec.event::<schema::Conversion>().is_none(),
        "kind is checked"
    );
    j.close().unwrap();
}

/// Schema v2 records (ConversionReversal v2 adds `reversal_id`) in `tests/fixtures/v2`,
/// written once with `CLICKTRAIL_WRITE_FIXTURES_V2=1`; v1 reversals read as v2 with an
/// empty id.
#[test]
fn v2_records_still_read_and_v1_reversals_upgrade() {
    let (_tmp, j) = fixture("v2", |w| {
        w.append_event(None, &samples::reversal_v2()).unwrap();
    });
    let mut r = j.get("events").unwrap().reader().unwrap();
    let rec = r.next().unwrap().unwrap();
    assert_eq!(
        (rec.kind, rec.version),
        (Kind::ConversionReversal as u16, 2)
    );
    assert_eq!(schema::reversal(&rec), Some(samples::reversal_v2().into()));
    j.close().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture_dir(), tmp.path());
    let j = Journal::open(tmp.path(), config()).unwrap();
    let mut r = j.get("events").unwrap().reader().unwrap();
    let mut upgraded = None;
    while let Some(rec) = r.next().unwrap() {
        upgraded = upgraded.or(schema::reversal(&rec));
    }
    let v1 = upgraded.expect("the v1 fixture has a reversal");
    assert_eq!(v1.affiliate_id, None);
    assert_eq!(v1.reversal_id, "");
    assert_eq!(v1.amount, samples::reversal().amount);
    j.close().unwrap();
}

/// A copy of fixture journal `tests/fixtures/<version>`, opened. With
/// `CLICKTRAIL_WRITE_FIXTURES_<VERSION>` set, `write` first makes the fixture anew (its
/// records appended to partition `events`): done once, when a version is added.
fn fixture(
    version: &str,
    write: impl FnOnce(&mut clicktrail_storage::Writer),
) -> (tempfile::TempDir, Journal) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version);
    let var = format!("CLICKTRAIL_WRITE_FIXTURES_{}", version.to_uppercase());
    if std::env::var_os(var).is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(tmp.path(), config()).unwrap();
        let mut w = j.partition("events").unwrap().writer().unwrap();
        write(&mut w);
        drop(w);
        j.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(tmp.path(), &dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&dir, tmp.path());
    let j = Journal::open(tmp.path(), config()).unwrap();
    (tmp, j)
}

/// Schema v3 records (ConversionReversal v3 adds the conversion's affiliate; the new
/// conversion-status kind) in `tests/fixtures/v3`, written once with
/// `CLICKTRAIL_WRITE_FIXTURES_V3=1`; v2 reversals read as v3 without an affiliate.
#[test]
fn v3_records_still_read_and_v2_reversals_upgrade() {
    let (_tmp, j) = fixture("v3", |w| {
        w.append_event(None, &samples::reversal_v3()).unwrap();
        w.append_event(None, &samples::status_change()).unwrap();
    });
    let mut r = j.get("events").unwrap().reader().unwrap();
    let rec = r.next().unwrap().unwrap();
    assert_eq!(
        (rec.kind, rec.version),
        (Kind::ConversionReversal as u16, 3)
    );
    assert_eq!(
        schema::validate(rec.kind, rec.version, rec.payload),
        Some(Ok(()))
    );
    assert_eq!(schema::reversal(&rec), Some(samples::reversal_v3()));
    let rec = r.next().unwrap().unwrap();
    assert_eq!((rec.kind, rec.version), (Kind::ConversionStatus as u16, 1));
    assert_eq!(
        schema::validate(rec.kind, rec.version, rec.payload),
        Some(Ok(()))
    );
    assert_eq!(rec.to_owned_event(), Some(samples::status_change()));
    assert!(r.next().unwrap().is_none());
    j.close().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2"),
        tmp.path(),
    );
    let j = Journal::open(tmp.path(), config()).unwrap();
    let mut r = j.get("events").unwrap().reader().unwrap();
    let v2 = schema::reversal(&r.next().unwrap().unwrap()).unwrap();
    assert_eq!(v2.reversal_id, samples::reversal_v2().reversal_id);
    assert_eq!(v2.affiliate_id, None);
    j.close().unwrap();
}

/// The records of fixture v4, in order.
fn write_v4(w: &mut clicktrail_storage::Writer) {
    w.append_event(None, &samples::attribution_v2()).unwrap();
    w.append_event(None, &samples::ledger_txn()).unwrap();
    w.append_event(None, &samples::payout_item()).unwrap();
}

/// Schema v4 records (attribution v2 with the conversion's facts, ledger transactions,
/// payout items) in `tests/fixtures/v4`, written once with `CLICKTRAIL_WRITE_FIXTURES_V4=1`.
#[test]
fn v4_records_still_read() {
    let (_tmp, j) = fixture("v4", write_v4);
    let mut r = j.get("events").unwrap().reader().unwrap();
    let expect = [
        (Kind::Attribution, 2),
        (Kind::LedgerEntry, 2),
        (Kind::Payout, 2),
    ];
    let mut recs = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        assert_eq!(
            schema::validate(rec.kind, rec.version, rec.payload),
            Some(Ok(()))
        );
        recs.push((rec.kind, rec.version));
        match recs.len() {
            1 => assert_eq!(rec.to_owned_event(), Some(samples::attribution_v2())),
            2 => assert_eq!(rec.to_owned_event(), Some(samples::ledger_txn())),
            3 => assert_eq!(rec.to_owned_event(), Some(samples::payout_item())),
            _ => panic!("more records than written"),
        }
    }
    let want: Vec<(u16, u16)> = expect.iter().map(|(k, v)| (*k as u16, *v)).collect();
    assert_eq!(recs, want);
    j.close().unwrap();
}

/// Schema v5 records (dead letters) in `tests/fixtures/v5`, written once with
/// `CLICKTRAIL_WRITE_FIXTURES_V5=1`.
#[test]
fn v5_records_still_read() {
    let (_tmp, j) = fixture("v5", |w| {
        let src = clicktrail_storage::Source {
            partition: 7,
            offset: 4096,
            part: 0,
            parts: 1,
        };
        w.append_event(Some(&src), &samples::dead_letter()).unwrap();
    });
    let mut r = j.get("events").unwrap().reader().unwrap();
    let rec = r.next().unwrap().expect("one record");
    assert_eq!((rec.kind, rec.version), (Kind::DeadLetter as u16, 1));
    assert_eq!(
        schema::validate(rec.kind, rec.version, rec.payload),
        Some(Ok(()))
    );
    assert_eq!(rec.to_owned_event(), Some(samples::dead_letter()));
    assert_eq!(rec.source.map(|s| (s.partition, s.offset)), Some((7, 4096)));
    assert!(r.next().unwrap().is_none());
    j.close().unwrap();
}

/// Schema v6 records (attribution v3 with the journey, fitted attribution models) in
/// `tests/fixtures/v6`, written once with `CLICKTRAIL_WRITE_FIXTURES_V6=1`.
#[test]
fn v6_records_still_read() {
    let (_tmp, j) = fixture("v6", |w| {
        w.append_event(None, &samples::attribution_v3()).unwrap();
        w.append_event(None, &samples::attribution_model()).unwrap();
    });
    let mut r = j.get("events").unwrap().reader().unwrap();
    let rec = r.next().unwrap().expect("the attribution");
    assert_eq!((rec.kind, rec.version), (Kind::Attribution as u16, 3));
    assert_eq!(
        schema::validate(rec.kind, rec.version, rec.payload),
        Some(Ok(()))
    );
    assert_eq!(schema::attribution(&rec), Some(samples::attribution_v3()));
    let rec = r.next().unwrap().expect("the model");
    assert_eq!((rec.kind, rec.version), (Kind::AttributionModel as u16, 1));
    assert_eq!(
        schema::validate(rec.kind, rec.version, rec.payload),
        Some(Ok(()))
    );
    assert_eq!(rec.to_owned_event(), Some(samples::attribution_model()));
    assert!(r.next().unwrap().is_none());
    j.close().unwrap();
}

/// Schema v7 records (fraud verdict v2 with its rule hits, a person's fraud decision, an
/// isolation-forest model, conversion v2 with the buyer's facts, an import reference) in
/// `tests/fixtures/v7`, written once with `CLICKTRAIL_WRITE_FIXTURES_V7=1`.
#[test]
fn v7_records_still_read() {
    let (_tmp, j) = fixture("v7", |w| {
        w.append_event(None, &samples::verdict_v2()).unwrap();
        w.append_event(None, &samples::fraud_decision()).unwrap();
        w.append_event(None, &samples::fraud_model()).unwrap();
        w.append_event(None, &samples::conversion_v2()).unwrap();
        w.append_event(None, &samples::import_ref()).unwrap();
    });
    let mut r = j.get("events").unwrap().reader().unwrap();
    let check = |rec: &clicktrail_storage::Record<'_>, kind: Kind, version: u16| {
        assert_eq!((rec.kind, rec.version), (kind as u16, version));
        assert_eq!(
            schema::validate(rec.kind, rec.version, rec.payload),
            Some(Ok(()))
        );
    };
    let rec = r.next().unwrap().expect("the verdict");
    check(&rec, Kind::FraudVerdict, 2);
    assert_eq!(schema::verdict(&rec), Some(samples::verdict_v2()));
    let rec = r.next().unwrap().expect("the decision");
    check(&rec, Kind::FraudDecision, 1);
    assert_eq!(rec.to_owned_event(), Some(samples::fraud_decision()));
    let rec = r.next().unwrap().expect("the model");
    check(&rec, Kind::FraudModel, 1);
    assert_eq!(rec.to_owned_event(), Some(samples::fraud_model()));
    let rec = r.next().unwrap().expect("the conversion");
    check(&rec, Kind::Conversion, 2);
    assert_eq!(schema::conversion(&rec), Some(samples::conversion_v2()));
    let rec = r.next().unwrap().expect("the import reference");
    check(&rec, Kind::ImportRef, 1);
    assert_eq!(rec.to_owned_event(), Some(samples::import_ref()));
    assert!(r.next().unwrap().is_none());
    j.close().unwrap();
}

/// A v2 attribution reads as v3 with its touchpoints as the journey.
#[test]
fn attribution_v2_reads_as_v3() {
    let (_tmp, j) = fixture("v4", write_v4);
    let mut r = j.get("events").unwrap().reader().unwrap();
    let mut seen = false;
    while let Some(rec) = r.next().unwrap() {
        if rec.kind == Kind::Attribution as u16 && rec.version == 2 {
            let v3 = schema::attribution(&rec).expect("v2 reads as v3");
            assert_eq!(v3, samples::attribution_v2().into());
            assert_eq!(v3.journey.len(), v3.touchpoints.len());
            seen = true;
        }
    }
    assert!(seen, "the v4 fixture has a v2 attribution");
    j.close().unwrap();
}
