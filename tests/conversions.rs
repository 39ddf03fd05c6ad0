//! Server-to-server conversions over a real socket: durable, idempotent on the merchant's
//! order id, matched through verified click ids, refused clearly on bad input (with
//! nothing written), reversible, and exactly once across a SIGKILL.

mod common;

use clicktrail_storage::schema::{
    self, Click, Conversion, ConversionReversalV3, ConversionState, ConversionStatusChange,
    ConversionV2, MatchKind,
};
use clicktrail_storage::{Event, Journal, JournalConfig, Record, RecordExt};
use common::{agent, Server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const M1: &str = "merchant-one-key-0123456789";
const M2: &str = "merchant-two-key-0123456789";
const PARTNER: &str = "partner-a1-key-0123456789";
const ADMIN: &str = "admin-ops-key-0123456789";

fn config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[[merchants]]
id = "m1"
name = "One"
conversion-pixel = true
[[merchants]]
id = "m2"
name = "Two"
[[affiliates]]
id = "a1"
name = "A1"
[[campaigns]]
id = "c1"
merchant-id = "m1"
name = "C1"
destination-url = "https://one.example/"
[[campaigns]]
id = "c2"
merchant-id = "m2"
name = "C2"
destination-url = "https://two.example/"
[[links]]
code = "L1"
affiliate-id = "a1"
campaign-id = "c1"
[[keys]]
role = "merchant"
owner = "m1"
key = "{M1}"
[[keys]]
role = "merchant"
owner = "m2"
key = "{M2}"
[[keys]]
role = "partner"
owner = "a1"
key = "{PARTNER}"
[[keys]]
role = "admin"
owner = "ops"
key = "{ADMIN}"
"#
    );
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn click(a: &ureq::Agent, addr: SocketAddr) -> String {
    let r = a.get(format!("http://{addr}/c/L1")).call().unwrap();
    let loc = r.headers()["location"].to_str().unwrap();
    loc.split("click_id=").nth(1).unwrap().to_string()
}

fn post(a: &ureq::Agent, addr: SocketAddr, key: Option<&str>, body: &str) -> (u16, Value) {
    call(a, addr, "/api/v1/conversions", key, body)
}

fn get(a: &ureq::Agent, addr: SocketAddr, path: &str) -> (u16, Value) {
    common::api(a, addr, "GET", path, None, None, "")
}

/// Calls `f(partition name, record)` for every record of every ingest partition (read
/// with the server stopped).
fn each_ingest_record(data: &Path, mut f: impl FnMut(&str, &Record<'_>)) {
    let j = Journal::open(data, JournalConfig::default()).unwrap();
    for p in j
        .partitions()
        .iter()
        .filter(|p| p.name().starts_with("ingest-"))
    {
        let mut r = p.reader().unwrap();
        while let Some(rec) = r.next().unwrap() {
            f(p.name(), &rec);
        }
    }
    j.close().unwrap();
}

/// Record kinds in each ingest partition.
fn kinds_by_partition(data: &Path) -> BTreeMap<String, BTreeSet<u16>> {
    let mut out: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    each_ingest_record(data, |p, rec| {
        out.entry(p.to_string()).or_default().insert(rec.kind);
    });
    out
}

fn conversions(data: &Path) -> (Vec<ConversionV2>, Vec<ConversionReversalV3>) {
    let (mut cs, mut rs) = (Vec::new(), Vec::new());
    each_ingest_record(data, |_, rec| {
        if let Some(c) = schema::conversion(rec) {
            cs.push(c);
        } else if let Some(rv) = schema::reversal(rec) {
            rs.push(rv);
        }
    });
    (cs, rs)
}

#[test]
fn conversions_are_idempotent_matched_validated_and_reversible() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let cid = click(&a, addr);

    let body = json!({"click_id": cid, "order_id": "o-1", "amount": "49.90", "currency": "EUR",
                      "customer_id": "cust-7", "metadata": {"coupon": "W"}})
    .to_string();
    let (s, v) = post(&a, addr, Some(M1), &body);
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["match"].as_str(), v["affiliate_id"].as_str()),
        (Some("click_id"), Some("a1"))
    );
    assert_eq!(
        (v["amount"].as_str(), v["status"].as_str()),
        (Some("49.90"), Some("pending"))
    );
    let conversion_id = v["conversion_id"].as_str().unwrap().to_string();
    // The same order again: the first conversion, nothing written.
    let (s, again) = post(&a, addr, Some(M1), &body);
    assert_eq!(
        (s, again["conversion_id"].as_str()),
        (200, Some(conversion_id.as_str()))
    );
    assert_eq!(again["duplicate"], true);
    // Different data under the same order id.
    let changed = body.replace("49.90", "59.90");
    assert_eq!(post(&a, addr, Some(M1), &changed).0, 409);
    // Unattributed conversions are kept and say so; the network-style GET works too.
    let (s, v) = post(
        &a,
        addr,
        Some(M1),
        r#"{"order_id":"o-2","amount":"10","currency":"USD"}"#,
    );
    assert_eq!((s, v["match"].as_str()), (201, Some("none")));
    let (s, v) = get(
        &a,
        addr,
        &format!("/postback?order_id=o-3&amount=5.00&currency=EUR&click_id={cid}&key={M1}"),
    );
    assert_eq!((s, v["match"].as_str()), (201, Some("click_id")));
    let (s, _) = post(
        &a,
        addr,
        Some(M1),
        r#"{"order_id":"lead-1","event":"lead"}"#,
    );
    assert_eq!(s, 201, "a lead needs no amount");

    // The browser pixel: matched through the first-party click cookie, or not recorded.
    let r = a.get(format!("http://{addr}/c/L1")).call().unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("ct_cid="))
        .unwrap();
    let pixel = |query: &str, cookie: Option<&str>| {
        let mut req = a.get(format!("http://{addr}/p/conv?{query}"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.call().unwrap();
        let result = r
            .headers()
            .get("x-clicktrail-result")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), result)
    };
    let q = "merchant_id=m1&order_id=px-1&amount=5.00&currency=EUR";
    assert_eq!(pixel(q, Some(&cookie)), (200, Some("recorded".into())));
    assert_eq!(
        pixel(q, Some(&cookie)),
        (200, Some("recorded".into())),
        "idempotent"
    );
    assert_eq!(
        pixel(
            "merchant_id=m1&order_id=px-2&amount=5.00&currency=EUR",
            None
        ),
        (200, Some("no-click-cookie".into()))
    );
    assert_eq!(
        pixel(
            "merchant_id=m2&order_id=px-3&amount=5.00&currency=EUR",
            Some(&cookie)
        ),
        (200, Some("pixel-disabled".into()))
    );
    assert_eq!(
        pixel(
            "merchant_id=m1&order_id=px-4&amount=5.00&currency=EUR&click_id=x",
            Some(&cookie)
        )
        .0,
        400
    );

    // Fingerprint matching: same IP, user agent and language, inside the window; never for
    // opted-out browsers.
    let browse = |ua: &str, gpc: bool| {
        let mut req = a
            .get(format!("http://{addr}/c/L1"))
            .header("user-agent", ua)
            .header("accept-language", "de");
        if gpc {
            req = req.header("sec-gpc", "1");
        }
        assert_eq!(req.call().unwrap().status(), 302);
    };
    browse("FP-Browser/1.0", false);
    browse("Private-Browser/1.0", true);
    std::thread::sleep(Duration::from_millis(1500)); // the click index reads durable clicks
    let fp = |order: &str, ua: &str, opted_out: bool| {
        post(
            &a,
            addr,
            Some(M1),
            &json!({"order_id": order, "amount": "3.00", "currency": "EUR",
            "ip": "127.0.0.1", "user_agent": ua, "accept_language": "de", "opted_out": opted_out})
            .to_string(),
        )
    };
    let (s, v) = fp("fp-1", "FP-Browser/1.0", false);
    assert_eq!(
        (s, v["match"].as_str(), v["affiliate_id"].as_str()),
        (201, Some("fingerprint"), Some("a1")),
        "{v}"
    );
    assert_eq!(v["match_confidence"].as_f64(), Some(0.6));
    assert!(v["click_id"].as_str().is_some_and(|c| c.len() == 32));
    assert_eq!(
        fp("fp-2", "Private-Browser/1.0", false).1["match"],
        "none",
        "opted-out clicks have no fingerprint"
    );
    assert_eq!(
        fp("fp-3", "FP-Browser/1.0", true).1["match"],
        "none",
        "an opted-out buyer is not matched"
    );
    assert_eq!(fp("fp-4", "Other/2.0", false).1["match"], "none");

    // Bad input: a clear 4xx and nothing written.
    let forged = format!("{}A", &cid[..cid.len() - 1]);
    let oversized = format!(
        r#"{{"order_id":"big","amount":"1","currency":"EUR","metadata":{{"k":"{}"}}}}"#,
        "x".repeat(20_000)
    );
    let cases: Vec<(Option<&str>, String, u16)> = vec![
        (
            None,
            r#"{"order_id":"x","amount":"1","currency":"EUR"}"#.into(),
            401,
        ),
        (
            Some("wrong-key"),
            r#"{"order_id":"x","amount":"1","currency":"EUR"}"#.into(),
            401,
        ),
        (
            Some(PARTNER),
            r#"{"order_id":"x","amount":"1","currency":"EUR"}"#.into(),
            403,
        ),
        (
            Some(M2),
            json!({"click_id": cid, "order_id": "x", "amount": "1", "currency": "EUR"}).to_string(),
            403,
        ),
        (
            Some(M2),
            r#"{"order_id":"x","campaign_id":"c1","amount":"1","currency":"EUR"}"#.into(),
            403,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"-1.00","currency":"EUR"}"#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"0","currency":"EUR"}"#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"123456789012345678","currency":"EUR"}"#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"ten","currency":"EUR"}"#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"1.999","currency":"EUR"}"#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"1.5","currency":"JPY"}"#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"1.00","currency":"ABC"}"#.into(),
            400,
        ),
        (
            Some(M1),
            // A number is read from its literal text: an exponent is no plain decimal.
            r#"{"order_id":"x","amount":1e2,"currency":"EUR"}"#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"1.00","currency":"EUR""#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"","amount":"1.00","currency":"EUR"}"#.into(),
            400,
        ),
        (
            Some(M1),
            r#"{"order_id":"x","amount":"1.00","currency":"EUR","bogus":1}"#.into(),
            400,
        ),
        (
            Some(M1),
            json!({"click_id": forged, "order_id": "x", "amount": "1", "currency": "EUR"})
                .to_string(),
            422,
        ),
        (
            Some(M1),
            r#"{"click_id":"not-a-click-id","order_id":"x","amount":"1","currency":"EUR"}"#.into(),
            422,
        ),
        (Some(M1), oversized, 413),
    ];
    for (key, body, want) in &cases {
        let (s, v) = post(&a, addr, *key, body);
        assert_eq!(s, *want, "{} -> {v}", &body[..body.len().min(80)]);
    }

    // Reversals: partial, then the rest; never more than the amount.
    let reverse = |body: &str| {
        let mut r = a
            .post(format!(
                "http://{addr}/api/v1/conversions/{conversion_id}/reverse"
            ))
            .header("authorization", &format!("Bearer {M1}"))
            .send(body)
            .unwrap();
        let s = r.status().as_u16();
        (
            s,
            serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap())
                .unwrap_or(Value::Null),
        )
    };
    let first = r#"{"reason":"refund","amount":"9.90","note":"one item back","reversal_id":"r-1"}"#;
    let (s, v) = reverse(first);
    assert_eq!(
        (s, v["remaining"].as_str(), v["status"].as_str()),
        (200, Some("40.00"), Some("partially-reversed"))
    );
    // The same reversal again (a retry): answered, nothing more reversed.
    let (s, v) = reverse(first);
    assert_eq!(
        (s, v["remaining"].as_str(), v["duplicate"].as_bool()),
        (200, Some("40.00"), Some(true))
    );
    assert_eq!(
        reverse(r#"{"reason":"refund","amount":"5.00","reversal_id":"r-1"}"#).0,
        409
    );
    assert_eq!(
        reverse(r#"{"reason":"refund","reversal_id":"bad id!"}"#).0,
        400
    );
    assert_eq!(reverse(r#"{"reason":"refund","amount":"40.01"}"#).0, 422);
    assert_eq!(reverse(r#"{"reason":"gift"}"#).0, 400);
    let (s, v) = reverse(r#"{"reason":"chargeback"}"#);
    assert_eq!((s, v["status"].as_str()), (200, Some("reversed")));
    assert_eq!(reverse(r#"{"reason":"refund"}"#).0, 409);

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let (cs, rs) = conversions(&data);
    // Every durable record (conversions, reversals) is on the durable shard, one partition
    // in order; clicks are on the other shard, so group commits never carry click bytes.
    let kinds = kinds_by_partition(&data);
    let durable: BTreeSet<u16> = [Conversion::KIND as u16, ConversionReversalV3::KIND as u16]
        .into_iter()
        .collect();
    assert!(
        kinds["ingest-0"].is_superset(&durable)
            && !kinds["ingest-0"].contains(&(Click::KIND as u16)),
        "{kinds:?}"
    );
    assert_eq!(
        kinds["ingest-1"],
        [Click::KIND as u16].into_iter().collect::<BTreeSet<_>>(),
        "{kinds:?}"
    );
    let mut orders: Vec<&str> = cs.iter().map(|c| c.order_id.as_str()).collect();
    orders.sort();
    assert_eq!(
        orders,
        vec!["fp-1", "fp-2", "fp-3", "fp-4", "lead-1", "o-1", "o-2", "o-3", "px-1"],
        "exactly the accepted conversions"
    );
    let px = cs.iter().find(|c| c.order_id == "px-1").unwrap();
    assert_eq!(px.match_kind, MatchKind::Cookie);
    let o1 = cs.iter().find(|c| c.order_id == "o-1").unwrap();
    assert_eq!(
        (o1.amount.amount_minor, o1.amount.currency.as_str()),
        (4990, "EUR")
    );
    assert_eq!(o1.match_kind, MatchKind::ClickId);
    assert_eq!(o1.click_id.as_deref(), Some(cid.as_str()));
    assert_eq!(
        rs.iter().map(|r| r.amount.amount_minor).collect::<Vec<_>>(),
        vec![990, 4000]
    );

    // After a restart the index is rebuilt from the journal: replays stay idempotent.
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (s, v) = post(&agent(), server.addr, Some(M1), &body);
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(post(&agent(), server.addr, Some(M1), &changed).0, 409);
    let mut r = agent()
        .post(format!(
            "http://{}/api/v1/conversions/{conversion_id}/reverse",
            server.addr
        ))
        .header("authorization", &format!("Bearer {M1}"))
        .send(first)
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["duplicate"], true, "reversal ids survive a restart: {v}");
}

#[test]
fn sigkill_keeps_every_acknowledged_conversion_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let a = agent();
                for i in 0..100_000 {
                    let order = format!("t{t}-{i}");
                    let body =
                        format!(r#"{{"order_id":"{order}","amount":"1.00","currency":"EUR"}}"#);
                    let mut req = a.post(format!("http://{addr}/api/v1/conversions"));
                    req = req.header("authorization", &format!("Bearer {M1}"));
                    match req.send(body.as_str()) {
                        Ok(r) if r.status() == 201 => acked.lock().unwrap().push(order),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    // Every other order is sent again, as a merchant retrying would.
                    if i % 2 == 0 {
                        let again = a
                            .post(format!("http://{addr}/api/v1/conversions"))
                            .header("authorization", &format!("Bearer {M1}"))
                            .send(body.as_str());
                        if again.is_err() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    server.wait_until("some conversions", |_| acked.lock().unwrap().len() > 200);
    server.signal(libc::SIGKILL);
    assert_eq!(server.wait(Duration::from_secs(10)).0, None);
    for t in threads {
        t.join().unwrap();
    }
    let (cs, _) = conversions(&data);
    let mut journaled: Vec<String> = cs.into_iter().map(|c| c.order_id).collect();
    let total = journaled.len();
    journaled.sort();
    journaled.dedup();
    assert_eq!(journaled.len(), total, "no order recorded twice");
    let acked = acked.lock().unwrap();
    let missing: Vec<_> = acked
        .iter()
        .filter(|o| journaled.binary_search(o).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged conversions lost",
        missing.len(),
        acked.len()
    );
}

/// POST `body` to `path` with `key` (if any): (status, JSON answer).
fn call(
    a: &ureq::Agent,
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value) {
    common::api(a, addr, "POST", path, key, Some("application/json"), body)
}

fn status_of(a: &ureq::Agent, addr: SocketAddr, id: &str, key: &str) -> (u16, Value) {
    get_with_key(a, addr, &format!("/api/v1/conversions/{id}"), key)
}

#[test]
fn conversions_are_approved_or_rejected_once_with_who_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path());
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let mut ids = Vec::new();
    for order in ["rv-a", "rv-b", "rv-c"] {
        let cid = click(&a, addr);
        let body =
            json!({"click_id": cid, "order_id": order, "amount": "20.00", "currency": "EUR"});
        let (s, v) = post(&a, addr, Some(M1), &body.to_string());
        assert_eq!((s, v["status"].as_str()), (201, Some("pending")), "{v}");
        ids.push(v["conversion_id"].as_str().unwrap().to_string());
    }
    let path = |id: &str, what: &str| format!("/api/v1/conversions/{id}/{what}");

    // The merchant approves one; the same decision again changes nothing; the other is a 409.
    let (s, v) = call(
        &a,
        addr,
        &path(&ids[0], "approve"),
        Some(M1),
        r#"{"reason":"delivered"}"#,
    );
    assert_eq!(
        (s, v["status"].as_str(), v["actor"].as_str()),
        (200, Some("approved"), Some("m1")),
        "{v}"
    );
    let (s, v) = call(&a, addr, &path(&ids[0], "approve"), Some(M1), "");
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(
        call(
            &a,
            addr,
            &path(&ids[0], "reject"),
            Some(M1),
            r#"{"reason":"fraud"}"#
        )
        .0,
        409
    );

    // An admin rejects another; a rejection needs a reason; rejected is final.
    assert_eq!(
        call(&a, addr, &path(&ids[1], "reject"), Some(ADMIN), "").0,
        400
    );
    let (s, v) = call(
        &a,
        addr,
        &path(&ids[1], "reject"),
        Some(ADMIN),
        r#"{"reason":"test order"}"#,
    );
    assert_eq!((s, v["status"].as_str()), (200, Some("rejected")), "{v}");
    assert!(
        v["actor"].as_str().unwrap().starts_with("admin-key:"),
        "{v}"
    );
    assert_eq!(
        call(&a, addr, &path(&ids[1], "approve"), Some(M1), "").0,
        409
    );
    assert_eq!(
        call(
            &a,
            addr,
            &path(&ids[1], "reverse"),
            Some(M1),
            r#"{"reason":"refund"}"#
        )
        .0,
        409
    );

    // Who may not, and what is not a decision: nothing written.
    let long = format!(r#"{{"reason":"{}"}}"#, "r".repeat(501));
    let cases: Vec<(String, Option<&str>, &str, u16)> = vec![
        (path(&ids[2], "approve"), None, "", 401),
        (path(&ids[2], "approve"), Some("nope"), "", 401),
        (path(&ids[2], "approve"), Some(PARTNER), "", 403),
        (path(&ids[2], "approve"), Some(M2), "", 404),
        (path("cv_unknown", "approve"), Some(M1), "", 404),
        (path(&ids[2], "approve"), Some(M1), "{not json", 400),
        (
            path(&ids[2], "approve"),
            Some(M1),
            r#"{"reason":"x","extra":1}"#,
            400,
        ),
        (path(&ids[2], "reject"), Some(M1), &long, 400),
        (
            path(&ids[2], "reject"),
            Some(M1),
            r#"{"reason":"line\nbreak"}"#,
            400,
        ),
    ];
    for (p, key, body, want) in &cases {
        let (s, v) = call(&a, addr, p, *key, body);
        assert_eq!(s, *want, "{p} {key:?} {body} -> {v}");
    }
    assert_eq!(status_of(&a, addr, &ids[2], M1).1["status"], "pending");
    assert_eq!(
        status_of(&a, addr, &ids[0], M2).0,
        404,
        "another merchant's conversion"
    );
    assert_eq!(status_of(&a, addr, &ids[0], ADMIN).1["status"], "approved");

    // Racing decisions on fresh conversions: exactly one wins, never both.
    let mut winners = 0;
    for i in 0..12 {
        let body = json!({"order_id": format!("race-{i}"), "amount": "5.00", "currency": "EUR", "campaign_id": "c1"});
        let (s, v) = post(&a, addr, Some(M1), &body.to_string());
        assert_eq!(s, 201, "{v}");
        let id = v["conversion_id"].as_str().unwrap().to_string();
        let (pa, pr) = (path(&id, "approve"), path(&id, "reject"));
        let (ra, rr) = std::thread::scope(|sc| {
            let t1 = sc.spawn(|| call(&agent(), addr, &pa, Some(M1), ""));
            let t2 = sc.spawn(|| call(&agent(), addr, &pr, Some(ADMIN), r#"{"reason":"race"}"#));
            (t1.join().unwrap(), t2.join().unwrap())
        });
        let oks = [&ra, &rr].iter().filter(|r| r.0 == 200).count();
        assert!(oks <= 1, "both decisions succeeded: {ra:?} {rr:?}");
        assert!(
            [&ra, &rr].iter().all(|r| [200, 409, 503].contains(&r.0)),
            "{ra:?} {rr:?}"
        );
        let now = status_of(&a, addr, &id, M1).1["status"]
            .as_str()
            .unwrap()
            .to_string();
        match (ra.0, rr.0) {
            (200, _) => assert_eq!(now, "approved"),
            (_, 200) => assert_eq!(now, "rejected"),
            _ => assert_eq!(now, "pending"),
        }
        winners += oks;
    }

    // Decisions survive a restart: status, replays and the journal's who-and-why.
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    assert_eq!(status_of(&a, addr, &ids[0], M1).1["status"], "approved");
    assert_eq!(status_of(&a, addr, &ids[1], M1).1["status"], "rejected");
    assert_eq!(status_of(&a, addr, &ids[2], M1).1["status"], "pending");
    let replay = json!({"order_id": "rv-a", "amount": "20.00", "currency": "EUR"});
    let (s, v) = post(&a, addr, Some(M1), &replay.to_string());
    assert_eq!(
        s, 409,
        "a replay without the click id is different data: {v}"
    );
    assert_eq!(
        call(
            &a,
            addr,
            &path(&ids[0], "reject"),
            Some(M1),
            r#"{"reason":"late"}"#
        )
        .0,
        409
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));

    let mut changes = Vec::new();
    each_ingest_record(&data, |_, rec| {
        changes.extend(rec.to_owned_event::<ConversionStatusChange>());
    });
    changes.sort_by_key(|c| c.at_us);
    assert_eq!(
        changes.len(),
        2 + winners,
        "one event per decision: {changes:?}"
    );
    changes.retain(|c| !c.order_id.starts_with("race-"));
    assert_eq!(
        (
            changes[0].state,
            changes[0].actor.as_str(),
            changes[0].reason.as_str()
        ),
        (ConversionState::Approved, "m1", "delivered")
    );
    assert_eq!(
        (
            changes[0].order_id.as_str(),
            changes[0].affiliate_id.as_deref()
        ),
        ("rv-a", Some("a1"))
    );
    assert_eq!(
        (changes[1].state, changes[1].reason.as_str()),
        (ConversionState::Rejected, "test order")
    );
}

/// A fingerprint match reaches back past the clicks kept whole: the click index holds
/// 1,000 clicks here, the matched click is 1,100 clicks old, and a restart rebuilt both
/// indexes from the journal. And it finds the browser's latest click on the reporting
/// merchant's campaigns, though the browser clicked another merchant's offer since.
#[test]
fn a_fingerprint_match_finds_a_click_gone_from_the_click_index() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[[links]]\ncode = \"L2\"\naffiliate-id = \"a1\"\ncampaign-id = \"c2\"\n");
    text.push_str("[conversions]\nclick-index-max = 1000\n");
    std::fs::write(&cfg, text).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let browse_link = |link: &str, ua: &str| {
        let r = a
            .get(format!("http://{addr}/c/{link}?sub1=old"))
            .header("user-agent", ua)
            .header("accept-language", "fr")
            .call()
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        loc.split("click_id=").nth(1).unwrap().to_string()
    };
    let first = browse_link("L1", "Old-Browser/1.0");
    for i in 0..1100 {
        browse_link("L1", &format!("Other-Browser/{i}"));
    }
    let on_m2 = browse_link("L2", "Old-Browser/1.0");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));

    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    let gauge = |m: &str, name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    server.wait_until("the indexes rebuilt", |_| {
        let (_, m) = get_text(&a, addr, "/metrics");
        gauge(&m, "clicktrail_click_index_clicks") == Some(1000.0)
            && gauge(&m, "clicktrail_fingerprint_index_fingerprints") == Some(1102.0)
    });
    for (key, order, want) in [(M1, "fp-old-1", &first), (M2, "fp-old-2", &on_m2)] {
        let (s, v) = post(
            &a,
            addr,
            Some(key),
            &json!({"order_id": order, "amount": "3.00", "currency": "EUR",
                    "ip": "127.0.0.1", "user_agent": "Old-Browser/1.0", "accept_language": "fr"})
            .to_string(),
        );
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["match"], "fingerprint", "{v}");
        assert_eq!(v["click_id"].as_str(), Some(want.as_str()), "{order}");
        assert_eq!(v["affiliate_id"], "a1");
    }
}

fn get_text(a: &ureq::Agent, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut resp = a.get(format!("http://{addr}{path}")).call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn get_with_key(a: &ureq::Agent, addr: SocketAddr, path: &str, key: &str) -> (u16, Value) {
    common::api(a, addr, "GET", path, Some(key), None, "")
}

/// Issue 15's poison inputs are refused where they enter, with a 400 that names the bound
/// and nothing written: the amount that overflowed the ledger's monthly sum, and times of
/// year 0 and 9999. Dead letters (none here) are listed for admins only.
#[test]
fn poison_amounts_and_times_are_refused_and_dead_letters_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let cid = click(&a, addr);
    let conv = |amount: &str, at: Value| {
        json!({"click_id": cid, "order_id": "big-1", "amount": amount, "currency": "EUR",
               "occurred_at": at})
        .to_string()
    };
    let now = json!(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs());
    let (s, v) = post(&a, addr, Some(M1), &conv("9999999999999.99", now.clone()));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("one billion"), "{v}");
    for (at, why) in [
        (json!("9999-12-31T23:59:59Z"), "future"),
        (json!("0001-01-01T00:00:00Z"), "10 years"),
        (json!(0), "10 years"),
    ] {
        let (s, v) = post(&a, addr, Some(M1), &conv("10.00", at.clone()));
        assert_eq!(s, 400, "{at}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{at}: {v}");
    }
    // Nothing was written: the order id is still free, and the largest amount is taken.
    let (s, v) = post(&a, addr, Some(M1), &conv("1000000000.00", now));
    assert_eq!(
        (s, v["amount"].as_str()),
        (201, Some("1000000000.00")),
        "{v}"
    );

    let (s, v) = get_with_key(&a, addr, "/api/v1/dead-letters", ADMIN);
    assert_eq!((s, v["open"].as_u64()), (200, Some(0)), "{v}");
    assert_eq!(
        get_with_key(&a, addr, "/api/v1/dead-letters", PARTNER).0,
        403
    );
    let retry =
        r#"{"actor":"commission-ledger","input_partition":"attributions","input_offset":0}"#;
    let (s, v) = call(&a, addr, "/api/v1/dead-letters/retry", Some(ADMIN), retry);
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(&a, addr, "/api/v1/dead-letters/retry", Some(ADMIN), "{}");
    assert_eq!(s, 400, "{v}");
    server.wait_until("ready", |s| {
        common::get(s.addr, "/readyz").is_ok_and(|r| r.0 == 200)
    });
    let (s, v) = get(&a, addr, "/readyz");
    assert_eq!((s, &v["dead_letters"]), (200, &json!({})), "{v}");
    let (_, metrics) = get_text(&a, addr, "/metrics");
    assert!(
        metrics.contains("# TYPE clicktrail_dead_letters gauge"),
        "{metrics}"
    );
}

/// Issue 15: one flipped byte inside a durably acknowledged conversion loses that record
/// alone. Every conversion after it is still known (a replay is a duplicate, not a new
/// conversion), the damaged bytes are kept aside, and readiness names the damage.
#[test]
fn a_damaged_conversion_record_loses_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let cid = click(&a, addr);
    let body = |i: usize| {
        json!({"click_id": cid, "order_id": format!("o-{i}"), "amount": "10.00", "currency": "EUR"})
            .to_string()
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        let (s, v) = post(&a, addr, Some(M1), &body(i));
        assert_eq!(s, 201, "{v}");
        ids.push(v["conversion_id"].as_str().unwrap().to_string());
    }
    server.signal(libc::SIGTERM);
    let (code, log) = server.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{log}");
    let mut target = None;
    each_ingest_record(&data, |p, rec| {
        if schema::conversion(rec).is_some_and(|c| c.order_id == "o-5") {
            target = Some((p.to_string(), rec.offset));
        }
    });
    let (partition, offset) = target.expect("o-5 is in the journal");
    let dir_of = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(&format!("-{partition}"))
        })
        .unwrap();
    let (base, seg) = std::fs::read_dir(&dir_of)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".seg")?.to_string();
            Some((name.parse::<u64>().ok()?, p))
        })
        .filter(|(b, _)| *b <= offset)
        .max_by_key(|(b, _)| *b)
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[64 + (offset - base) as usize + 40] ^= 0x55;
    std::fs::write(&seg, bytes).unwrap();

    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    server.wait_until("readiness to name the damage", |s| {
        common::get(s.addr, "/readyz").is_ok_and(|(status, b)| {
            status == 503 && b.contains(&format!("{partition} is damaged"))
        })
    });
    let addr = server.addr;
    for (i, id) in ids.iter().enumerate() {
        let (s, v) = status_of(&a, addr, id, M1);
        if i == 5 {
            assert_eq!(s, 404, "the damaged record is the one lost: {v}");
            continue;
        }
        assert_eq!(s, 200, "o-{i} survives: {v}");
        let (s, v) = post(&a, addr, Some(M1), &body(i));
        assert_eq!(
            (s, v["duplicate"].as_bool()),
            (200, Some(true)),
            "o-{i}: {v}"
        );
    }
    let kept = std::fs::read_dir(&dir_of)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .any(|n| n.starts_with("damaged-"));
    assert!(kept, "the damaged bytes are kept aside");
}

/// The buyer's facts: the e-mail address is stored only as its keyed hash (the key derived
/// from the click-id key, as no `email-hash-key` is set), never answered; IP and user agent
/// are stored; a bad e-mail or IP is a 400 naming the field, and writes nothing.
#[test]
fn a_buyers_email_is_stored_only_as_its_hash_and_bad_buyer_facts_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let cid = click(&a, addr);
    let email = "Buyer.One@Example.COM";
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    let (s, v) = post(
        &a,
        addr,
        Some(M1),
        &json!({"click_id": cid, "order_id": "e-1", "amount": "10.00", "currency": "EUR",
            "customer_email": email, "ip": "203.0.113.7", "user_agent": ua})
        .to_string(),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["conversion_id"].as_str().unwrap().to_string();
    assert!(!v.to_string().to_lowercase().contains("buyer.one"), "{v}");
    let (s, v) = common::api(
        &a,
        addr,
        "GET",
        &format!("/api/v1/conversions/{id}"),
        Some(M1),
        None,
        "",
    );
    assert_eq!(s, 200, "{v}");
    assert!(!v.to_string().to_lowercase().contains("buyer.one"), "{v}");
    // The same order with the buyer seen otherwise is the same conversion.
    let (s, v) = post(
        &a,
        addr,
        Some(M1),
        &json!({"click_id": cid, "order_id": "e-1", "amount": "10.00", "currency": "EUR",
            "customer_email": "other@example.com"})
        .to_string(),
    );
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    // Bad buyer facts: 400 naming the field, nothing written.
    for (field, value) in [
        ("customer_email", json!("no-at-sign.example.com")),
        ("customer_email", json!("two@@example.com")),
        ("customer_email", json!("a@b\u{7}.example")),
        (
            "customer_email",
            json!(format!("{}@example.com", "x".repeat(250))),
        ),
        ("ip", json!("203.0.113.999")),
        ("ip", json!("not-an-ip")),
        ("user_agent", json!("x\ny")),
        ("user_agent", json!("x".repeat(513))),
    ] {
        let mut body = json!({"click_id": cid, "order_id": format!("bad-{field}"),
            "amount": "1.00", "currency": "EUR"});
        body[field] = value;
        let (s, v) = post(&a, addr, Some(M1), &body.to_string());
        assert_eq!(s, 400, "{field}: {v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{field}: {v}");
    }
    // The network-style GET takes the same fields, and refuses the same way.
    let (s, v) = get(
        &a,
        addr,
        &format!("/postback?key={M1}&click_id={cid}&order_id=bad-get&amount=1&currency=EUR&customer_email=nope"),
    );
    assert_eq!(s, 400, "{v}");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let (cs, _) = conversions(&data);
    assert_eq!(
        cs.iter().map(|c| c.order_id.as_str()).collect::<Vec<_>>(),
        ["e-1"],
        "nothing written for the refused ones"
    );
    let c = &cs[0];
    let key = clicktrail_actors::fraud::email::derive_email_key(
        b"test-click-id-key-0123456789abcdef0123",
    );
    assert_eq!(
        c.customer_email_hash,
        clicktrail_actors::fraud::email::email_hash(&key, "buyer.one@example.com")
    );
    assert_eq!((c.ip.as_str(), c.user_agent.as_str()), ("203.0.113.7", ua));
    assert!(!c.imported);
    // No byte of the address anywhere in the journal.
    each_ingest_record(&data, |_, rec| {
        let raw = String::from_utf8_lossy(rec.payload).to_lowercase();
        assert!(!raw.contains("buyer.one"), "the address is in the journal");
    });
}
