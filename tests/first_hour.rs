//! Issue 16, the first hour of a merchant, an affiliate and an SRE, over a real socket on
//! the demo configuration: what sits just beside the documented path answers clearly.

mod common;

use common::{agent, Server};
use serde_json::{json, Value};
use std::net::SocketAddr;

const ADMIN: &str = "demo-admin-key";
const MERCHANT: &str = "demo-merchant-key";
const PARTNER: &str = "demo-partner-key";

fn call(
    a: &ureq::Agent,
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    common::api(a, addr, method, path, Some(key), content_type, body)
}

fn post(a: &ureq::Agent, addr: SocketAddr, path: &str, key: &str, body: &Value) -> (u16, Value) {
    call(
        a,
        addr,
        "POST",
        path,
        key,
        Some("application/json"),
        &body.to_string(),
    )
}

fn get(a: &ureq::Agent, addr: SocketAddr, path: &str, key: &str) -> (u16, Value) {
    call(a, addr, "GET", path, key, None, "")
}

fn click(a: &ureq::Agent, addr: SocketAddr, link: &str) -> String {
    let r = a.get(format!("http://{addr}/c/{link}")).call().unwrap();
    assert_eq!(r.status().as_u16(), 302, "/c/{link}");
    let loc = r.headers()["location"].to_str().unwrap();
    loc.split("click_id=").nth(1).unwrap().to_string()
}

fn demo() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.wait_until("ready", |s| {
        common::get(s.addr, "/readyz").is_ok_and(|r| r.0 == 200)
    });
    (dir, server)
}

/// Item 3: amounts, ids and metadata sent as JSON numbers are read from their literal
/// text; an exponent or too many decimals is a 400 that names the field.
#[test]
fn numbers_where_users_send_numbers() {
    let (_dir, server) = demo();
    let (a, addr) = (agent(), server.addr);
    let cid = click(&a, addr, "demo");
    let body = json!({"click_id": cid, "order_id": 12345, "amount": 49.9, "currency": "EUR",
                      "metadata": {"items": 3, "gift": true}});
    let (s, v) = post(&a, addr, "/api/v1/conversions", MERCHANT, &body);
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["order_id"].as_str(), v["amount"].as_str()),
        (Some("12345"), Some("49.90"))
    );
    // The same order as a string is the same order.
    let again = json!({"click_id": cid, "order_id": "12345", "amount": "49.90", "currency": "EUR",
                       "metadata": {"items": "3", "gift": "true"}});
    let (s, v) = post(&a, addr, "/api/v1/conversions", MERCHANT, &again);
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    for (amount, order) in [(json!(1e2), "o-exp"), (json!(49.999), "o-dec")] {
        let raw = format!(
            r#"{{"order_id":"{order}","amount":{},"currency":"EUR"}}"#,
            if order == "o-exp" {
                "1e2".to_string()
            } else {
                amount.to_string()
            }
        );
        let (s, v) = call(
            &a,
            addr,
            "POST",
            "/api/v1/conversions",
            MERCHANT,
            None,
            &raw,
        );
        assert_eq!(s, 400, "{raw}: {v}");
        assert!(v["error"].as_str().unwrap().contains("amount"), "{v}");
    }
    let (s, v) = post(
        &a,
        addr,
        "/api/v1/conversions",
        MERCHANT,
        &json!({"order_id": 1.5, "amount": "1", "currency": "EUR"}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("order_id"), "{v}");
}

/// Item 6: entity bodies take snake_case (documented) and kebab-case (the configuration's
/// names); answers are snake_case.
#[test]
fn one_naming_convention_in_json() {
    let (_dir, server) = demo();
    let (a, addr) = (agent(), server.addr);
    let snake = json!({"id": "camp-s", "merchant_id": "demo-merchant", "name": "S",
                       "destination_url": "https://shop.example/s", "cookie_window_days": 7});
    let (s, v) = post(&a, addr, "/api/v1/campaigns", ADMIN, &snake);
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["merchant_id"], "demo-merchant", "{v}");
    assert_eq!(v["cookie_window_days"], 7, "{v}");
    assert!(v.get("merchant-id").is_none(), "{v}");
    let kebab = json!({"id": "camp-k", "merchant-id": "demo-merchant", "name": "K",
                       "destination-url": "https://shop.example/k"});
    let (s, v) = post(&a, addr, "/api/v1/campaigns", ADMIN, &kebab);
    assert_eq!(
        (s, &v["destination_url"]),
        (201, &json!("https://shop.example/k")),
        "{v}"
    );
    let (s, v) = get(&a, addr, "/api/v1/campaigns/camp-s", ADMIN);
    assert_eq!(
        (s, &v["destination_url"]),
        (200, &json!("https://shop.example/s")),
        "{v}"
    );
    // Conversions take kebab-case keys too.
    let (s, v) = post(
        &a,
        addr,
        "/api/v1/conversions",
        MERCHANT,
        &json!({"order-id": "k-1", "amount": "5", "currency": "EUR"}),
    );
    assert_eq!(s, 201, "{v}");
}

/// Item 7: errors that say how to fix them.
#[test]
fn errors_say_how_to_fix_them() {
    let (_dir, server) = demo();
    let (a, addr) = (agent(), server.addr);
    // A form-encoded body.
    let (s, v) = call(
        &a,
        addr,
        "POST",
        "/api/v1/conversions",
        MERCHANT,
        Some("application/x-www-form-urlencoded"),
        "order_id=1&amount=2&currency=EUR",
    );
    assert_eq!(s, 415, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("expected a JSON body (Content-Type: application/json)"),
        "{v}"
    );
    // JSON sent the way `curl -d` sends it (form content type) is read.
    let (s, v) = call(
        &a,
        addr,
        "POST",
        "/api/v1/conversions",
        MERCHANT,
        Some("application/x-www-form-urlencoded"),
        r#"{"order_id":"curl-1","amount":"2","currency":"EUR"}"#,
    );
    assert_eq!(s, 201, "{v}");
    // "an admin key".
    let (s, v) = get(&a, addr, "/api/v1/affiliates", PARTNER);
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("this needs an admin key"))
    );
    // A postback's method in any case.
    let pb = json!({"url": "https://hooks.example/pb?c={conversion_id}", "method": "POST",
                    "triggers": ["conversion.created"]});
    let (s, v) = post(&a, addr, "/api/v1/me/postbacks", PARTNER, &pb);
    assert_eq!((s, v["method"].as_str()), (201, Some("post")), "{v}");
    // A trailing slash redirects (308 keeps the method) to the same endpoint.
    let r = a
        .get(format!("http://{addr}/api/v1/me/balance/"))
        .header("authorization", &format!("Bearer {PARTNER}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers()["location"], "/api/v1/me/balance");
    // An unknown API path answers JSON naming it.
    let (s, v) = get(&a, addr, "/api/v1/me/nothing/here", PARTNER);
    assert_eq!(s, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("/api/v1/me/nothing/here"),
        "{v}"
    );
}

/// Item 9: by campaign means one row per campaign, over every affiliate.
#[test]
fn stats_by_campaign_group_by_campaign() {
    let (_dir, server) = demo();
    let (a, addr) = (agent(), server.addr);
    let (s, v) = post(
        &a,
        addr,
        "/api/v1/affiliates",
        ADMIN,
        &json!({"id": "second", "name": "Second"}),
    );
    assert_eq!(s, 201, "{v}");
    let (_, links) = get(&a, addr, "/api/v1/links", ADMIN);
    let second = links["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["affiliate_id"] == "second" && l["campaign_id"] == "demo-campaign")
        .unwrap_or_else(|| panic!("{links}"))["code"]
        .as_str()
        .unwrap()
        .to_string();
    click(&a, addr, "demo");
    click(&a, addr, "demo");
    click(&a, addr, &second);
    server.wait_until("counted", |s| {
        let (_, v) = get(&agent(), s.addr, "/api/v1/stats?by=affiliate", ADMIN);
        v["rows"].as_array().is_some_and(|r| r.len() == 2)
    });
    let (s, v) = get(&a, addr, "/api/v1/stats?by=campaign", ADMIN);
    assert_eq!(s, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(
        (rows[0]["key"].as_str(), rows[0]["clicks"].as_u64()),
        (Some("demo-campaign"), Some(3))
    );
    let (_, v) = get(
        &a,
        addr,
        "/api/v1/stats?by=campaign&affiliate_id=second",
        ADMIN,
    );
    assert_eq!(v["rows"][0]["clicks"], 1, "{v}");
    assert_eq!(v["rows"][0]["affiliate_id"], "second", "{v}");
}

/// Item 4: plain dates, offsets (also with the `+` turned into a space by a query
/// string), Unix seconds; errors show each accepted form.
#[test]
fn plain_dates_and_offsets() {
    let (_dir, server) = demo();
    let (a, addr) = (agent(), server.addr);
    let yesterday = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 86_400) as i64;
    let (y, m, d) = clicktrail_actors::ledger::commission::civil_from_days(yesterday / 86_400);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let conv = |order: &str, at: &str| {
        let body = json!({"order_id": order, "amount": "5", "currency": "EUR", "occurred_at": at});
        post(&a, addr, "/api/v1/conversions", MERCHANT, &body)
    };
    // The demo program's time zone is UTC: a date is its midnight UTC.
    let (s, v) = conv("d-1", &date);
    assert_eq!(
        (s, v["occurred_at"].as_str()),
        (201, Some(format!("{date}T00:00:00.000000Z").as_str())),
        "{v}"
    );
    let (s, v) = conv("d-2", &format!("{date}T11:00:00 01:00"));
    assert_eq!(
        (s, v["occurred_at"].as_str()),
        (201, Some(format!("{date}T10:00:00.000000Z").as_str())),
        "{v}"
    );
    let (s, v) = get(
        &a,
        addr,
        &format!(
            "/postback?order_id=d-3&amount=5&currency=EUR&occurred_at={date}T11:00:00+01:00&key={MERCHANT}"
        ),
        MERCHANT,
    );
    assert_eq!(
        (s, v["occurred_at"].as_str()),
        (201, Some(format!("{date}T10:00:00.000000Z").as_str())),
        "{v}"
    );
    let (s, v) = conv("d-4", &yesterday.to_string());
    assert_eq!(s, 201, "{v}");
    let (s, v) = conv("d-5", "yesterday");
    assert_eq!(s, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    for example in ["1764547200", "2026-12-01", "2026-12-01T11:00:00+01:00"] {
        assert!(e.contains(example), "{e}");
    }
}

/// A receiver on 127.0.0.1 that records the request line of each request it gets.
fn receiver() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_ok() {
                let mut h = String::new();
                while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let _ = (&s).write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = tx.send(line.trim_end().to_string());
            }
        }
    });
    (addr, rx)
}

fn non_demo_config(dir: &std::path::Path) -> std::path::PathBuf {
    let text = r#"
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[[affiliates]]
id = "a1"
name = "A1"
[[keys]]
role = "partner"
owner = "a1"
key = "partner-a1-key-0123456789"
"#;
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Item 1: on the demo a postback to 127.0.0.1 is delivered; outside demo mode saving one
/// is a 422 naming `postbacks.allow-private-destinations`, and the `serve` flag allows it.
#[test]
fn local_postbacks_work_on_the_demo_and_are_refused_clearly_elsewhere() {
    let (_dir, server) = demo();
    let (a, addr) = (agent(), server.addr);
    let (recv, arrived) = receiver();
    let pb = json!({"url": format!("http://{recv}/pb?c={{conversion_id}}&o={{order_id}}"),
                    "triggers": ["conversion.created"]});
    let (s, v) = post(&a, addr, "/api/v1/me/postbacks", PARTNER, &pb);
    assert_eq!(s, 201, "{v}");
    let cid = click(&a, addr, "demo");
    let body = json!({"click_id": cid, "order_id": "pb-1", "amount": "10", "currency": "EUR"});
    assert_eq!(
        post(&a, addr, "/api/v1/conversions", MERCHANT, &body).0,
        201
    );
    let line = arrived
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the postback arrives at the local receiver");
    assert!(
        line.starts_with("GET /pb?c=cv_") && line.contains("&o=pb-1"),
        "{line}"
    );
    // Private ranges other than loopback still need the setting, on the demo too.
    let pb10 = json!({"url": "http://10.1.2.3/pb", "triggers": ["conversion.created"]});
    let (s, v) = post(&a, addr, "/api/v1/me/postbacks", PARTNER, &pb10);
    assert_eq!(s, 422, "{v}");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let cfg = non_demo_config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let server = Server::start(&dir.path().join("d1"), &["--config", cfg]);
    let key = "partner-a1-key-0123456789";
    let (s, v) = post(&a, server.addr, "/api/v1/me/postbacks", key, &pb);
    assert_eq!(s, 422, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("postbacks.allow-private-destinations") && e.contains("127.0.0.1"),
        "{e}"
    );
    // A host that resolves nowhere now is left to the delivery.
    let later = json!({"url": "https://hooks.invalid/pb", "triggers": ["conversion.created"]});
    assert_eq!(
        post(&a, server.addr, "/api/v1/me/postbacks", key, &later).0,
        201
    );
    drop(server);
    let server = Server::start(
        &dir.path().join("d2"),
        &["--config", cfg, "--allow-private-postbacks"],
    );
    let (s, v) = post(&a, server.addr, "/api/v1/me/postbacks", key, &pb);
    assert_eq!(s, 201, "{v}");
}

/// Item 7: `clicktrail serve --help` describes serve and its flags.
#[test]
fn serve_help_describes_serve() {
    let o = std::process::Command::new(common::BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    for flag in [
        "--config",
        "--data-dir",
        "--listen",
        "--allow-private-postbacks",
        "demo-admin-key",
    ] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
}

/// Item 8: a payout run answers what it did and why each partner with money was left
/// out; a configuration without an admin key says at start how to make one, and
/// `clicktrail keys create` makes it.
#[test]
fn answers_that_tell_the_truth() {
    let (_dir, server) = demo();
    let (a, addr) = (agent(), server.addr);
    let cid = click(&a, addr, "demo");
    let body = json!({"click_id": cid, "order_id": "pay-1", "amount": "100", "currency": "EUR"});
    let (s, v) = post(&a, addr, "/api/v1/conversions", MERCHANT, &body);
    assert_eq!(s, 201, "{v}");
    let id = v["conversion_id"].as_str().unwrap().to_string();
    let (s, v) = post(
        &a,
        addr,
        &format!("/api/v1/conversions/{id}/approve"),
        MERCHANT,
        &json!({}),
    );
    assert_eq!(s, 200, "{v}");
    // A sale a second after its click is held by the fraud engine: an admin allows it.
    server.wait_until("the fraud review", |s| {
        let (_, v) = get(&agent(), s.addr, "/api/v1/fraud/review", ADMIN);
        v.to_string().contains(&id)
    });
    let (s, v) = post(
        &a,
        addr,
        &format!("/api/v1/fraud/review/{id}/allow"),
        ADMIN,
        &json!({"reason": "a test sale"}),
    );
    assert_eq!(s, 202, "{v}");
    server.wait_until("approved commission", |s| {
        let (_, v) = get(&agent(), s.addr, "/api/v1/me/balance", PARTNER);
        v.to_string().contains("\"approved\":\"10.00\"")
    });
    let (s, v) = post(&a, addr, "/api/v1/payouts/run", ADMIN, &json!({}));
    assert_eq!((s, v["items_created"].as_u64()), (200, Some(0)), "{v}");
    let left = &v["left_out"][0];
    assert_eq!(
        (
            left["affiliate_id"].as_str(),
            left["reason"].as_str(),
            left["payable"].as_str()
        ),
        (
            Some("demo-affiliate"),
            Some("no_payout_account"),
            Some("10.00")
        ),
        "{v}"
    );
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let cfg = non_demo_config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    server.wait_until("the warning", |s| s.log().contains("no admin key exists"));
    assert!(
        server.log().contains("clicktrail keys create --role admin"),
        "{}",
        server.log()
    );
    drop(server);
    let o = std::process::Command::new(common::BIN)
        .args(["keys", "create", "--role", "admin", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("ct_") && key.len() > 30, "{key}");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (s, v) = get(&a, server.addr, "/api/v1/affiliates", &key);
    assert_eq!(s, 200, "{v}");
    assert!(!server.log().contains("no admin key exists"));
}
