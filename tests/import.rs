//! `POST /api/v1/import` over HTTP with the real binary: history from another tracker is
//! recorded with its original times and goes through every actor (the ledger prices it for
//! the day it happened, stats count it, attribution sees its whole journey), bad lines are
//! refused by number with nothing of them written, a re-sent import writes nothing twice
//! (also after a restart), and postbacks never fire for imported conversions while a live
//! one in the same run does.

mod common;

use clicktrail::ledger_api::rfc3339;
use clicktrail_storage::schema::{self, Click, ImportRef, Impression, PostbackAttempt};
use clicktrail_storage::{Journal, JournalConfig, Kind, RecordExt};
use common::{agent, api, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: &str = "admin-import-key-0123456789";
const M1: &str = "merchant-one-key-0123456789";
const PARTNER: &str = "partner-a1-key-0123456789";
const NDJSON: &str = "application/x-ndjson";
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const DAY_S: i64 = 86_400;

fn config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[postbacks]
allow-private-destinations = true
backoff-initial-ms = 50
backoff-max-ms = 200
{extra}
[[merchants]]
id = "m1"
name = "One"
[[merchants]]
id = "m2"
name = "Two"
[[affiliates]]
id = "a1"
name = "A1"
[[affiliates]]
id = "a2"
name = "A2"
[[campaigns]]
id = "c1"
merchant-id = "m1"
name = "C1"
destination-url = "https://one.example/landing"
[[campaigns]]
id = "c2"
merchant-id = "m2"
name = "C2"
destination-url = "https://two.example/"
[[links]]
code = "L1"
affiliate-id = "a1"
campaign-id = "c1"
sub-ids = ["from-link"]
[[plans]]
id = "ten"
campaign-id = "c1"
percent-bps = 1000
[[keys]]
role = "admin"
owner = "admin"
key = "{ADMIN}"
[[keys]]
role = "merchant"
owner = "m1"
key = "{M1}"
[[keys]]
role = "partner"
owner = "a1"
key = "{PARTNER}"
"#
    );
    let p = dir.join("import.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// RFC 3339 for Unix seconds `s`.
fn at(s: i64) -> String {
    rfc3339(s * 1_000_000)
}

/// Midnight (UTC) of the day `days` before today, in Unix seconds.
fn day_start(days: i64) -> i64 {
    (now_s() / DAY_S - days) * DAY_S
}

fn import(a: &ureq::Agent, addr: SocketAddr, key: &str, body: &str) -> (u16, Value) {
    api(
        a,
        addr,
        "POST",
        "/api/v1/import",
        Some(key),
        Some(NDJSON),
        body,
    )
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn get(a: &ureq::Agent, addr: SocketAddr, key: &str, path: &str) -> Value {
    let (s, v) = api(a, addr, "GET", path, Some(key), None, "");
    assert_eq!(s, 200, "{path}: {v}");
    v
}

/// The affiliate's balance in minor units: (pending, approved).
fn balance(a: &ureq::Agent, addr: SocketAddr, affiliate: &str) -> (i64, i64) {
    let v = get(
        a,
        addr,
        ADMIN,
        &format!("/api/v1/affiliates/{affiliate}/balance"),
    );
    v["balances"]
        .as_array()
        .and_then(|b| b.first())
        .map_or((0, 0), |b| {
            (
                b["pending_minor"].as_i64().unwrap(),
                b["approved_minor"].as_i64().unwrap(),
            )
        })
}

/// Every record of every ingest partition, in order: (partition, kind, the event's id).
fn ingest_records(data: &Path) -> Vec<(String, Kind, String)> {
    let j = Journal::open(data, JournalConfig::default()).unwrap();
    let mut out = Vec::new();
    for p in j
        .partitions()
        .iter()
        .filter(|p| p.name().starts_with("ingest-"))
    {
        let mut r = p.reader().unwrap();
        while let Some(rec) = r.next().unwrap() {
            let kind = rec.kind_enum().unwrap();
            let id = if let Some(c) = rec.to_owned_event::<Click>() {
                c.click_id
            } else if let Some(i) = rec.to_owned_event::<Impression>() {
                i.impression_id
            } else if let Some(c) = schema::conversion(&rec) {
                c.conversion_id
            } else if let Some(r) = rec.to_owned_event::<ImportRef>() {
                format!("{}={}", r.import_ref, r.subject_id)
            } else {
                String::new()
            };
            out.push((p.name().to_string(), kind, id));
        }
    }
    j.close().unwrap();
    out
}

fn clicks(data: &Path) -> Vec<Click> {
    let j = Journal::open(data, JournalConfig::default()).unwrap();
    let mut out = Vec::new();
    for p in j.partitions().iter() {
        let mut r = p.reader().unwrap();
        while let Some(rec) = r.next().unwrap() {
            out.extend(rec.to_owned_event::<Click>());
        }
    }
    j.close().unwrap();
    out
}

fn attributions(data: &Path) -> Vec<schema::AttributionV3> {
    let j = Journal::open(data, JournalConfig::default()).unwrap();
    let mut out = Vec::new();
    if let Some(p) = j.get("attributions") {
        let mut r = p.reader().unwrap();
        while let Some(rec) = r.next().unwrap() {
            out.extend(schema::attribution(&rec));
        }
    }
    j.close().unwrap();
    out
}

/// A live click on `L1` with this visitor cookie: its click id.
fn live_click(a: &ureq::Agent, addr: SocketAddr) -> String {
    let r = a
        .get(format!("http://{addr}/c/L1"))
        .header("user-agent", UA)
        .call()
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap();
    loc.split("click_id=").nth(1).unwrap().to_string()
}

/// History of ten days ago: an impression and two clicks of one visitor (a1, then a2),
/// and a sale matched to the second click.
fn history(day: i64) -> Vec<Value> {
    vec![
        json!({"type":"impression","ref":"imp-1","at":at(day + 9 * 3600),"link":"L1",
            "visitor_id":"v-old","ip":"198.51.100.4","user_agent":UA}),
        json!({"type":"click","ref":"click-1","at":at(day + 10 * 3600),"link":"L1",
            "ip":"198.51.100.4","user_agent":UA,"accept_language":"de","visitor_id":"v-old",
            "referrer":"https://news.example/","sec_fetch_dest":"document",
            "sec_fetch_site":"cross-site",
            "query":{"utm_source":"old-tracker","gclid":"Cj0KCQ","other":"dropped"}}),
        json!({"type":"click","ref":"click-2","at":at(day + 11 * 3600),"affiliate_id":"a2",
            "campaign_id":"c1","visitor_id":"v-old","sub2":"s2","ip":"198.51.100.4",
            "user_agent":UA,"accept_language":"de"}),
        json!({"type":"conversion","ref":"sale-1","at":at(day + 12 * 3600),"merchant_id":"m1",
            "order_id":"old-1","click_ref":"click-2","amount":"49.90","currency":"EUR",
            "customer_email":"Old.Buyer@example.com","ip":"198.51.100.4","user_agent":UA}),
    ]
}

#[test]
fn an_import_goes_through_every_actor_with_its_original_times() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    // Live traffic first: the history arrives after newer clicks, and is older than the
    // campaign's 30-day window.
    live_click(&a, addr);
    let day = day_start(40);
    let mut body = ndjson(&history(day));
    body.insert_str(body.find('\n').unwrap() + 1, "\n   \n"); // blank lines are skipped
    let (s, v) = import(&a, addr, ADMIN, &body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["imported"].as_u64(), v["existing"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(v["refused"], json!([]));
    let ids = v["ids"].as_object().unwrap().clone();
    assert_eq!(ids.len(), 4);
    for r in ["imp-1", "click-1", "click-2"] {
        assert_eq!(ids[r].as_str().unwrap().len(), 32, "{r}: a click id");
    }
    let sale = ids["sale-1"].as_str().unwrap().to_string();
    assert!(sale.starts_with("cvi_"), "{sale}");
    assert!(!v.to_string().contains("Old.Buyer"), "{v}");

    // The ledger prices it (10% of 49.90, to a2's click: last click); the 30-day hold ran
    // from the day it happened, so it is approved at once.
    server.wait_until("the commission", |s| balance(&a, s.addr, "a2") == (0, 499));
    // A sale of its own day in the statement, not of today's.
    let sales = |from: i64, to: i64| {
        get(
            &a,
            addr,
            ADMIN,
            &format!("/api/v1/affiliates/a2/statement?from={from}&to={to}"),
        )["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["cause"] == "sale")
            .count()
    };
    // (One posting, or three when the fraud scorer's verdict came before the pricing: its
    // clearance and the approval are then posted with the sale.)
    assert!([1, 3].contains(&sales(day, day + DAY_S)));
    assert_eq!(sales(day_start(0), day_start(0) + DAY_S), 0);
    // The conversion is known to the conversion API, imported and matched to the click.
    let (s, c) = api(
        &a,
        addr,
        "GET",
        &format!("/api/v1/conversions/{sale}"),
        Some(M1),
        None,
        "",
    );
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["click_id"], ids["click-2"]);
    assert_eq!(
        (c["affiliate_id"].as_str(), c["match"].as_str()),
        (Some("a2"), Some("click_id"))
    );
    assert_eq!(c["occurred_at"], rfc3339((day + 12 * 3600) * 1_000_000));
    // Stats count the imported clicks and impression beside the live click.
    server.wait_until("the counters", |s| {
        let v = get(&a, s.addr, ADMIN, "/api/v1/stats?by=affiliate");
        v["rows"].as_array().unwrap().len() == 2
    });
    let rows = get(&a, addr, ADMIN, "/api/v1/stats?by=affiliate")["rows"].clone();
    let row = |aff: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == aff)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            row("a1")["clicks"].as_u64(),
            row("a1")["impressions"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(row("a2")["clicks"].as_u64(), Some(1));

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    // Each event right after its reference, in the same partition.
    let records = ingest_records(&data);
    for (r, id) in &ids {
        let id = id.as_str().unwrap();
        let i = records
            .iter()
            .position(|(_, k, x)| *k == Kind::ImportRef && *x == format!("{r}={id}"))
            .unwrap_or_else(|| panic!("no reference for {r}"));
        assert_eq!(
            (&records[i + 1].0, &records[i + 1].2),
            (&records[i].0, &id.to_string())
        );
    }
    // The click as the edge would have recorded it, at its original time.
    let c1 = clicks(&data)
        .into_iter()
        .find(|c| c.click_id == ids["click-1"].as_str().unwrap())
        .unwrap();
    assert_eq!(c1.at_us, (day + 10 * 3600) * 1_000_000);
    assert_eq!(c1.destination, "https://one.example/landing");
    assert_eq!(c1.sub_ids, ["from-link", "", "", "", ""]);
    assert!(c1.fingerprint.is_some() && !c1.opted_out);
    assert_eq!(
        c1.utm
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect::<Vec<_>>(),
        [("utm_source", "old-tracker"), ("gclid", "Cj0KCQ")]
    );
    // Attribution saw the whole old journey, though newer clicks came before it.
    let att = attributions(&data);
    let journey: Vec<&str> = att
        .iter()
        .find(|x| x.conversion_id == sale)
        .unwrap()
        .journey
        .iter()
        .map(|t| t.click_id.as_str())
        .collect();
    assert_eq!(
        journey,
        [
            ids["click-1"].as_str().unwrap(),
            ids["click-2"].as_str().unwrap()
        ]
    );
}

#[test]
fn bad_lines_are_refused_by_number_and_nothing_of_them_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[import]\nmax-age-days = 30\n");
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let t = now_s() - 3600;
    let click = |r: &str| json!({"type":"click","ref":r,"at":at(t),"link":"L1"});
    let conv = |r: &str, extra: Value| {
        let mut c = json!({"type":"conversion","ref":r,"at":at(t + 60),"merchant_id":"m1",
            "order_id":format!("o-{r}"),"click_ref":"good-click","amount":"10.00","currency":"EUR"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let lines: Vec<String> = vec![
        click("good-click").to_string(),                                         // 1
        "this is not json".into(),                                               // 2
        json!({"type":"visit","ref":"v"}).to_string(),                           // 3
        json!({"type":"click","ref":"no-at","link":"L1"}).to_string(),           // 4
        json!({"type":"click","ref":"bad-link","at":at(t),"link":"nope"}).to_string(), // 5
        json!({"type":"click","ref":"ahead","at":at(now_s() + 600),"link":"L1"}).to_string(), // 6
        json!({"type":"click","ref":"too-old","at":at(now_s() - 40 * DAY_S),"link":"L1"})
            .to_string(), // 7
        conv("bad-merchant", json!({"merchant_id":"nobody"})).to_string(),       // 8
        conv("other-merchant", json!({"merchant_id":"m2"})).to_string(),         // 9
        conv("unknown-ref", json!({"click_ref":"never-seen"})).to_string(),      // 10
        conv("bad-ip", json!({"ip":"300.1.2.3"})).to_string(),                   // 11
        conv("bad-email", json!({"customer_email":"not-an-address"})).to_string(), // 12
        click("good-click").to_string(),                                         // 13
        json!({"type":"click","ref":"bad-aff","at":at(t),"affiliate_id":"ghost","campaign_id":"c1"})
            .to_string(), // 14
        conv("refused-click", json!({"click_ref":"bad-link"})).to_string(),      // 15
        conv("bad-amount", json!({"amount":"12.345"})).to_string(),              // 16
        json!({"type":"click","ref":"extra","at":at(t),"link":"L1","colour":"red"}).to_string(), // 17
        conv("good-sale", json!({})).to_string(),                                // 18
    ];
    let (s, v) = import(&a, addr, ADMIN, &(lines.join("\n") + "\n"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["imported"], 2, "{v}");
    let refused: Vec<(u64, String)> = v["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: &[(u64, &str)] = &[
        (2, "not JSON"),
        (3, "unknown type \"visit\""),
        (4, "missing field `at`"),
        (5, "unknown link \"nope\""),
        (6, "more than 5 minutes ahead"),
        (7, "more than 30 days ago"),
        (13, "repeats line 1"),
        (14, "unknown affiliate_id \"ghost\""),
        (17, "unknown field `colour`"),
        (8, "unknown merchant_id \"nobody\""),
        (9, "is not of merchant \"m2\""),
        (
            10,
            "click_ref \"never-seen\" is not a click of this import or an earlier one",
        ),
        (11, "ip must be an IPv4 or IPv6 address"),
        (12, "customer_email must be an e-mail address"),
        (15, "names line 5, which was refused"),
        (16, "12.345"),
    ];
    assert_eq!(refused.len(), want.len(), "{refused:#?}");
    for ((line, error), (want_line, needle)) in refused.iter().zip(want) {
        assert_eq!(line, want_line, "{error}");
        assert!(
            error.contains(needle),
            "line {line}: {error:?} lacks {needle:?}"
        );
    }
    let ids = v["ids"].as_object().unwrap();
    assert_eq!(
        ids.keys().map(String::as_str).collect::<Vec<_>>(),
        ["good-click", "good-sale"]
    );
    // The API knows nothing of the refused ones: their orders are free.
    let (s, _) = api(
        &a,
        addr,
        "POST",
        "/api/v1/conversions",
        Some(M1),
        Some("application/json"),
        &json!({"order_id":"o-bad-ip","amount":"1.00","currency":"EUR"}).to_string(),
    );
    assert_eq!(s, 201, "an order of a refused line was never recorded");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let records = ingest_records(&data);
    let mut refs: Vec<&str> = records
        .iter()
        .filter(|r| r.1 == Kind::ImportRef)
        .map(|r| r.2.split('=').next().unwrap())
        .collect();
    refs.sort_unstable();
    assert_eq!(
        refs,
        ["good-click", "good-sale"],
        "nothing of a refused line"
    );
    let count = |k: Kind| records.iter().filter(|r| r.1 == k).count();
    assert_eq!((count(Kind::Click), count(Kind::Conversion)), (1, 2));
}

#[test]
fn a_resent_import_writes_nothing_twice_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let body = ndjson(&history(day_start(5)));
    let (s, first) = import(&a, addr, ADMIN, &body);
    assert_eq!((s, first["imported"].as_u64()), (200, Some(4)), "{first}");
    server.wait_until("the commission", |s| balance(&a, s.addr, "a2").0 > 0);
    let balances = balance(&a, addr, "a2");
    let check_again = |addr: SocketAddr| {
        let (s, again) = import(&a, addr, ADMIN, &body);
        assert_eq!(s, 200, "{again}");
        assert_eq!(
            (again["imported"].as_u64(), again["existing"].as_u64()),
            (Some(0), Some(4))
        );
        assert_eq!(again["ids"], first["ids"], "the same ids");
        assert_eq!(again["refused"], json!([]));
    };
    check_again(addr);
    // A new ref for an order already imported is that conversion (the order is the
    // conversion's idempotency key); other data under it is refused.
    let same_order = |amount: &str| {
        let mut c = history(day_start(5))[3].clone();
        c["ref"] = json!(format!("sale-again-{amount}"));
        c["amount"] = json!(amount);
        import(&a, addr, ADMIN, &ndjson(&[c]))
    };
    let (_, v) = same_order("49.90");
    assert_eq!(
        (v["existing"].as_u64(), &v["ids"]["sale-again-49.90"]),
        (Some(1), &first["ids"]["sale-1"])
    );
    let (_, v) = same_order("59.90");
    assert!(
        v["refused"][0]["error"]
            .as_str()
            .unwrap()
            .contains("different data"),
        "{v}"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let before = ingest_records(&data);
    // After a restart the references are read back from the journal.
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    check_again(addr);
    // A conversion may name a click of an earlier import.
    let later = json!({"type":"conversion","ref":"sale-2","at":at(day_start(5) + 13 * 3600),
        "merchant_id":"m1","order_id":"old-2","click_ref":"click-1","amount":"10.00",
        "currency":"EUR"});
    let (s, v) = import(&a, addr, ADMIN, &ndjson(&[later]));
    assert_eq!((s, v["imported"].as_u64()), (200, Some(1)), "{v}");
    server.wait_until("the second commission", |s| balance(&a, s.addr, "a1").0 > 0);
    assert_eq!(
        balance(&a, addr, "a2"),
        balances,
        "balances unchanged by the re-sends"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let after = ingest_records(&data);
    assert_eq!(
        after.len(),
        before.len() + 2,
        "only the new conversion and its reference"
    );
    let of = |records: &[(String, Kind, String)], p: &str| -> Vec<(Kind, String)> {
        records
            .iter()
            .filter(|r| r.0 == p)
            .map(|r| (r.1, r.2.clone()))
            .collect()
    };
    for p in ["ingest-0", "ingest-1"] {
        let (b, a) = (of(&before, p), of(&after, p));
        assert_eq!(a[..b.len()], b[..], "{p}: what was there is unchanged");
    }
}

#[test]
fn the_endpoint_takes_only_admins_ndjson_within_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[import]\nmax-lines = 3\nmax-bytes = \"2KiB\"\n",
    );
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let line = json!({"type":"click","ref":"r","at":at(now_s()),"link":"L1"}).to_string();
    let (s, v) = api(
        &a,
        addr,
        "POST",
        "/api/v1/import",
        Some(ADMIN),
        Some("application/json"),
        &line,
    );
    assert_eq!(s, 415, "{v}");
    assert!(v["error"].as_str().unwrap().contains(NDJSON), "{v}");
    assert_eq!(
        api(&a, addr, "POST", "/api/v1/import", Some(ADMIN), None, &line).0,
        415
    );
    assert_eq!(import(&a, addr, M1, &line).0, 403);
    assert_eq!(import(&a, addr, PARTNER, &line).0, 403);
    assert_eq!(
        api(
            &a,
            addr,
            "POST",
            "/api/v1/import",
            None,
            Some(NDJSON),
            &line
        )
        .0,
        401
    );
    let (s, v) = import(&a, addr, ADMIN, &format!("{line}\n\n\n{line}\n"));
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("import.max-lines"),
        "{v}"
    );
    let (s, v) = import(&a, addr, ADMIN, &format!("{line}\n{}\n", " ".repeat(3000)));
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("import.max-bytes"),
        "{v}"
    );
    let (s, v) = import(&a, addr, ADMIN, &format!("{line}\r\n"));
    assert_eq!((s, v["imported"].as_u64()), (200, Some(1)), "{v}");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let refs = ingest_records(&data)
        .iter()
        .filter(|r| r.1 == Kind::ImportRef)
        .count();
    assert_eq!(refs, 1, "nothing written for the refused requests");
}

/// A bare receiver: the request targets it saw.
fn receiver() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let target = head.split(' ').nth(1).unwrap_or("").to_string();
            s2.lock().unwrap().push(target);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (addr, seen)
}

#[test]
fn postbacks_never_fire_for_imported_conversions_but_do_for_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    // The imported click carries no user agent, which the fraud rules would hold: this
    // test is about postbacks, so they are off.
    let cfg = config(dir.path(), "[fraud]\nenabled = false\n");
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let (rx, seen) = receiver();
    let triggers = json!([
        "conversion.created",
        "conversion.approved",
        "commission.created"
    ]);
    let pb = |path: &str, key: &str| {
        let (s, v) = api(
            &a,
            addr,
            "POST",
            path,
            Some(key),
            Some("application/json"),
            &json!({"url": format!("http://{rx}/pb?o={{order_id}}&t={{status}}"), "triggers": triggers})
                .to_string(),
        );
        assert_eq!(s, 201, "{v}");
    };
    pb("/api/v1/me/postbacks", PARTNER);
    pb("/api/v1/postbacks", ADMIN);
    // Imported events a little ahead of now, so that they are not history to the
    // postbacks just made (which never get history anyway): only their being imported
    // keeps them quiet.
    let t = now_s() + 60;
    let body = ndjson(&[
        json!({"type":"click","ref":"pc","at":at(t),"link":"L1"}),
        json!({"type":"conversion","ref":"ps","at":at(t + 30),"merchant_id":"m1",
            "order_id":"imported-order","click_ref":"pc","amount":"20.00","currency":"EUR"}),
    ]);
    let (s, v) = import(&a, addr, ADMIN, &body);
    assert_eq!((s, v["imported"].as_u64()), (200, Some(2)), "{v}");
    let imported = v["ids"]["ps"].as_str().unwrap().to_string();
    // Its merchant approves it: no conversion.approved either.
    let (s, r) = api(
        &a,
        addr,
        "POST",
        &format!("/api/v1/conversions/{imported}/approve"),
        Some(M1),
        Some("application/json"),
        "{}",
    );
    assert_eq!(s, 200, "{r}");
    // A live sale, after all that.
    let cid = live_click(&a, addr);
    let (s, r) = api(
        &a,
        addr,
        "POST",
        "/api/v1/conversions",
        Some(M1),
        Some("application/json"),
        &json!({"click_id": cid, "order_id": "live-order", "amount": "10.00", "currency": "EUR"})
            .to_string(),
    );
    assert_eq!(s, 201, "{r}");
    // Both postbacks, created and commission: four deliveries of the live sale.
    server.wait_until("the live sale's postbacks", |_| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|t| t.contains("live-order"))
            .count()
            >= 4
    });
    server.wait_until("the imported commission", |s| {
        balance(&a, s.addr, "a1").1 > 0
    });
    std::thread::sleep(Duration::from_millis(1500)); // anything still due would come now
    let targets = seen.lock().unwrap().clone();
    assert!(
        targets.iter().all(|t| !t.contains("imported-order")),
        "{targets:?}"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let j = Journal::open(&data, JournalConfig::default()).unwrap();
    let mut r = j.get("postback-attempts").unwrap().reader().unwrap();
    while let Some(rec) = r.next().unwrap() {
        let attempt = rec.to_owned_event::<PostbackAttempt>().unwrap();
        assert!(!attempt.url.contains("imported-order"), "{}", attempt.url);
    }
    j.close().unwrap();
}

/// 100,000 lines through a small ingest queue: the import waits for room instead of
/// answering 503, and live clicks meanwhile are still served.
#[test]
fn a_hundred_thousand_lines_import_through_a_small_queue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[actors]\ningest-queue-max = 64\n");
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let t = now_s() - 20 * DAY_S;
    let mut body = String::new();
    for i in 0..90_000 {
        let line = json!({"type":"click","ref":format!("c{i}"),"at":at(t + i),"link":"L1",
            "ip":"203.0.113.9","user_agent":UA,"visitor_id":format!("v{}", i % 5000)});
        body.push_str(&format!("{line}\n"));
    }
    for i in 0..10_000 {
        let line = json!({"type":"conversion","ref":format!("s{i}"),"at":at(t + 9 * i + 100),
            "merchant_id":"m1","order_id":format!("bulk-{i}"),"click_ref":format!("c{}", 9 * i),
            "amount":"1.00","currency":"EUR"});
        body.push_str(&format!("{line}\n"));
    }
    let live = std::thread::spawn(move || {
        let a = agent();
        let ids: Vec<String> = (0..50).map(|_| live_click(&a, addr)).collect();
        ids.len()
    });
    let started = std::time::Instant::now();
    let (s, v) = import(&a, addr, ADMIN, &body);
    assert_eq!(s, 200, "{}", &v.to_string()[..v.to_string().len().min(500)]);
    assert_eq!(
        v["imported"].as_u64(),
        Some(100_000),
        "{:?}",
        v["refused"].get(0)
    );
    assert_eq!(v["ids"].as_object().unwrap().len(), 100_000);
    eprintln!("100,000 lines imported in {:?}", started.elapsed());
    assert_eq!(live.join().unwrap(), 50);
    server.wait_until("the commissions", |s| {
        let (p, ap) = balance(&a, s.addr, "a1");
        p + ap == 10_000 * 10
    });
}
