//! The fraud engine end to end over HTTP, with history imported through `POST
//! /api/v1/import`: a bot flood's sale and a self-referral are held (pending, not payable)
//! with the evidence in words while legitimate sales in the same run are paid; the review
//! queue lists the held ones oldest first; a person's reject reverses one and a person's
//! allow pays the other; the rules, clusters, status and metrics say what happened.

mod common;

use common::{agent, api, Server};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const ADMIN: &str = "admin-fraud-key-0123456789";
const NDJSON: &str = "application/x-ndjson";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[program]
hold-days = 0
[[merchants]]
id = "m1"
name = "One"
[[affiliates]]
id = "good"
name = "A content site"
sites = ["blog.example"]
[[affiliates]]
id = "flood"
name = "A click farm"
[[affiliates]]
id = "self"
name = "Buys through its own link"
payout-provider = "paypal"
payout-account = "owner@self.example"
[[campaigns]]
id = "c1"
merchant-id = "m1"
name = "C1"
destination-url = "https://one.example/"
[[links]]
code = "G"
affiliate-id = "good"
campaign-id = "c1"
[[links]]
code = "F"
affiliate-id = "flood"
campaign-id = "c1"
[[links]]
code = "S"
affiliate-id = "self"
campaign-id = "c1"
[[plans]]
id = "ten"
campaign-id = "c1"
percent-bps = 1000
[[keys]]
role = "admin"
owner = "admin"
key = "{ADMIN}"
"#
    );
    let path = dir.join("clicktrail.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn at(s: i64) -> String {
    clicktrail::ledger_api::rfc3339(s * 1_000_000)
}

fn click(r: &str, t: i64, link: &str, ip: &str, ua: &str, referrer: &str) -> Value {
    json!({"type": "click", "ref": r, "at": at(t), "link": link, "ip": ip, "user_agent": ua,
        "referrer": referrer, "accept_language": "en-GB,en;q=0.9", "sec_fetch_dest": "document",
        "sec_fetch_site": "cross-site", "visitor_id": format!("v-{r}")})
}

fn sale(r: &str, t: i64, click: &str, amount: &str, email: Option<&str>) -> Value {
    let mut v = json!({"type": "conversion", "ref": r, "at": at(t), "merchant_id": "m1",
        "order_id": format!("order-{r}"), "click_ref": click, "amount": amount, "currency": "EUR"});
    if let Some(e) = email {
        v["customer_email"] = json!(e);
    }
    v
}

fn get(a: &ureq::Agent, addr: SocketAddr, path: &str) -> Value {
    let (s, v) = api(a, addr, "GET", path, Some(ADMIN), None, "");
    assert_eq!(s, 200, "{path}: {v}");
    v
}

/// (pending, approved) of an affiliate, in minor units.
fn balance(a: &ureq::Agent, addr: SocketAddr, affiliate: &str) -> (i64, i64) {
    let v = get(a, addr, &format!("/api/v1/affiliates/{affiliate}/balance"));
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

fn verdict_of(a: &ureq::Agent, addr: SocketAddr, id: &str) -> Value {
    let v = get(a, addr, "/api/v1/fraud/verdicts?kind=conversion&limit=100");
    v["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject_id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_bot_flood_and_a_self_referral_are_held_while_legitimate_sales_are_paid() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let (a, addr) = (agent(), server.addr);
    let t = now_s() - 3 * 3600;
    let mut lines = Vec::new();
    // A content site: five visitors from five networks, two buy 40 minutes later.
    for n in 0..5 {
        let ip = format!("198.51.{}.20", 10 + n);
        lines.push(click(
            &format!("g{n}"),
            t + n * 300,
            "G",
            &ip,
            CHROME,
            "https://blog.example/review",
        ));
    }
    lines.push(sale("gs0", t + 2400, "g0", "100.00", None));
    lines.push(sale("gs1", t + 300 + 2400, "g1", "50.00", None));
    // A click farm: 30 clicks from one address in 30 s, one "sale" on its first click.
    for n in 0..30 {
        lines.push(click(
            &format!("f{n}"),
            t + 3600 + n,
            "F",
            "203.0.113.9",
            CHROME,
            "",
        ));
    }
    lines.push(sale("fs0", t + 3600 + 600, "f0", "80.00", None));
    // A partner buying through its own link with its PayPal address.
    lines.push(click(
        "s0",
        t + 5000,
        "S",
        "192.0.2.77",
        CHROME,
        "https://mail.example/",
    ));
    lines.push(sale(
        "ss0",
        t + 5000 + 1200,
        "s0",
        "60.00",
        Some("Owner@Self.example"),
    ));
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (s, v) = api(
        &a,
        addr,
        "POST",
        "/api/v1/import",
        Some(ADMIN),
        Some(NDJSON),
        &body,
    );
    assert_eq!(
        (s, v["refused"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    let id = |r: &str| v["ids"][r].as_str().unwrap().to_string();
    let (good0, good1, flood, own) = (id("gs0"), id("gs1"), id("fs0"), id("ss0"));

    server.wait_until("every conversion judged", |s| {
        get(&a, s.addr, "/api/v1/fraud/status")["scored"]["conversions"] == 4
    });
    // The flood's first click is flagged once the flood is seen; the sale inherits it.
    server.wait_until("the flood's sale held", |s| {
        verdict_of(&a, s.addr, &flood)["action"] == "review"
    });
    let f = verdict_of(&a, addr, &flood);
    assert!(
        f["rules"]
            .as_array()
            .unwrap()
            .contains(&json!("click-flood-ip")),
        "{f}"
    );
    assert!(
        f["reasons"]
            .to_string()
            .contains("clicks from IP 203.0.113.9 in 60 s"),
        "{f}"
    );
    let o = verdict_of(&a, addr, &own);
    assert_eq!(o["action"], "review", "{o}");
    assert_eq!(o["rules"], json!(["self-referral-email"]), "{o}");
    for g in [&good0, &good1] {
        let v = verdict_of(&a, addr, g);
        assert_eq!(
            (v["action"].as_str(), v["rules"].as_array().map(Vec::len)),
            (Some("allow"), Some(0)),
            "{v}"
        );
    }
    // Legitimate sales are payable (hold-days = 0); the held ones are not.
    server.wait_until("the good partner paid", |s| {
        balance(&a, s.addr, "good") == (0, 1500)
    });
    assert_eq!(balance(&a, addr, "flood"), (800, 0));
    assert_eq!(balance(&a, addr, "self"), (600, 0));

    // The review queue, oldest first.
    let q = get(&a, addr, "/api/v1/fraud/review");
    let ids: Vec<&str> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["subject_id"].as_str().unwrap())
        .collect();
    assert_eq!((q["total"].as_u64(), ids.len()), (Some(2), 2), "{q}");
    assert!(
        ids.contains(&flood.as_str()) && ids.contains(&own.as_str()),
        "{q}"
    );

    // People decide: the flood is rejected (reversed), the self-referral allowed.
    let decide = |id: &str, what: &str| {
        let path = format!("/api/v1/fraud/review/{id}/{what}");
        api(
            &a,
            addr,
            "POST",
            &path,
            Some(ADMIN),
            Some("application/json"),
            r#"{"reason":"checked by hand"}"#,
        )
    };
    let (s, r) = decide(&flood, "reject");
    assert_eq!((s, r["action"].as_str()), (202, Some("reject")), "{r}");
    assert_eq!(decide(&own, "allow").0, 202);
    assert_eq!(decide("nope", "allow").0, 404, "no verdict on it");
    assert_eq!(decide(&own, "maybe").0, 404);
    let (s, r) = api(
        &a,
        addr,
        "POST",
        &format!("/api/v1/fraud/review/{own}/allow"),
        Some(ADMIN),
        Some("application/json"),
        "{}",
    );
    assert_eq!(s, 400, "a reason is required: {r}");
    server.wait_until("the decisions in the ledger", |s| {
        balance(&a, s.addr, "flood") == (0, 0) && balance(&a, s.addr, "self") == (0, 600)
    });
    let f = verdict_of(&a, addr, &flood);
    assert_eq!(
        (f["action"].as_str(), f["decided_by"].as_str()),
        (Some("reject"), Some("admin:admin")),
        "{f}"
    );
    assert_eq!(get(&a, addr, "/api/v1/fraud/review")["total"], 0);

    // What the rules, the clusters, the status and the metrics say.
    let rules = get(&a, addr, "/api/v1/fraud/rules");
    let flood_rule = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "click-flood-ip")
        .unwrap();
    assert_eq!(flood_rule["hits"]["conversions"], 1, "{flood_rule}");
    assert!(
        flood_rule["hits"]["clicks"].as_u64().unwrap() >= 20,
        "{flood_rule}"
    );
    assert!(get(&a, addr, "/api/v1/fraud/clusters")["clusters"].is_array());
    let (_, metrics) = common::get(addr, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "clicktrail_fraud_rule_hits_total{rule=\"self-referral-email\",kind=\"conversion\"} 1"
        ),
        "{metrics}"
    );
    // Clicks without a verdict were allowed: the good partner's have none.
    let clicks = get(&a, addr, "/api/v1/fraud/verdicts?kind=click&limit=100");
    assert!(
        clicks["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["affiliate_id"] == "flood"),
        "{clicks}"
    );
    let (s, _) = api(
        &a,
        addr,
        "GET",
        "/api/v1/fraud/verdicts?limit=0",
        Some(ADMIN),
        None,
        "",
    );
    assert_eq!(s, 400);
}
