//! Postbacks over real sockets: a receiver on 127.0.0.1 checks every signature on its own;
//! a receiver that fails first gets exactly one successful delivery, every attempt carries
//! the same delivery id and is a journal event; a server killed mid-delivery delivers after
//! restart with the same delivery id.

mod common;

use clicktrail_storage::schema::{DeliveryOutcome, PostbackAttempt};
use clicktrail_storage::{Journal, JournalConfig, RecordExt};
use common::{agent, Server};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const M1: &str = "merchant-one-key-0123456789";
const PARTNER: &str = "partner-a1-key-0123456789";
const PARTNER2: &str = "partner-a2-key-0123456789";
const ADMIN: &str = "admin-key-0123456789abcdef";

/// What the receiver saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    delivery: String,
    signature_ok: bool,
    status: u16,
}

/// A postback receiver: answers 500 to the first `fail_first` requests, optionally holds
/// the first request for `hold`, then 200. Checks signatures with `secrets` (set later).
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    secrets: Arc<Mutex<Vec<String>>>,
}

fn verify(secrets: &[String], header: &str, payload: &str) -> bool {
    let Some((t, v1)) = header.split_once(",v1=") else {
        return false;
    };
    let Some(t) = t.strip_prefix("t=") else {
        return false;
    };
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - t.parse::<i64>().unwrap_or(0);
    if !(-60..=300).contains(&age) {
        return false; // replay window
    }
    secrets.iter().any(|s| {
        let mut mac = Hmac::<Sha256>::new_from_slice(s.as_bytes()).unwrap();
        mac.update(format!("{t}.{payload}").as_bytes());
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        want == v1
    })
}

impl Receiver {
    fn start(fail_first: usize, hold: Option<Duration>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let secrets = Arc::new(Mutex::new(Vec::new()));
        let (s2, k2) = (seen.clone(), secrets.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                n += 1;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let len: usize = header("content-length").parse().unwrap_or(0);
                while buf.len() < head_end + len {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                let mut parts = head.split(' ');
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("").to_string();
                let payload = if method == "POST" {
                    body
                } else {
                    target.clone()
                };
                let signature_ok = verify(
                    &k2.lock().unwrap(),
                    &header("x-clicktrail-signature"),
                    &payload,
                );
                if n == 1 {
                    if let Some(h) = hold {
                        std::thread::sleep(h);
                    }
                }
                let status = if n <= fail_first { 500 } else { 200 };
                s2.lock().unwrap().push(Seen {
                    target,
                    delivery: header("x-clicktrail-delivery"),
                    signature_ok,
                    status,
                });
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            addr,
            seen,
            secrets,
        }
    }
}

fn config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[postbacks]
allow-private-destinations = true
backoff-initial-ms = 50
backoff-max-ms = 200
timeout-ms = 2000
[[merchants]]
id = "m1"
name = "One"
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
destination-url = "https://one.example/"
[[links]]
code = "L1"
affiliate-id = "a1"
campaign-id = "c1"
[[plans]]
id = "ten"
campaign-id = "c1"
percent-bps = 1000
[[keys]]
role = "merchant"
owner = "m1"
key = "{M1}"
[[keys]]
role = "partner"
owner = "a1"
key = "{PARTNER}"
[[keys]]
role = "partner"
owner = "a2"
key = "{PARTNER2}"
[[keys]]
role = "admin"
owner = "admin"
key = "{ADMIN}"
"#
    );
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Subscribes the partner to a postback at `rx` (`target`: path and query template) for
/// `triggers`; the receiver checks signatures with the secret it is given.
fn partner_postback(
    a: &ureq::Agent,
    addr: SocketAddr,
    rx: &Receiver,
    target: &str,
    triggers: &[&str],
) {
    let (s, pb) = post_json(
        a,
        format!("http://{addr}/api/v1/me/postbacks"),
        PARTNER,
        json!({"url": format!("http://{}{target}", rx.addr), "triggers": triggers}),
    );
    assert_eq!(s, 201, "{pb}");
    rx.secrets
        .lock()
        .unwrap()
        .push(pb["secret"].as_str().unwrap().to_string());
}

fn post_json(a: &ureq::Agent, url: String, key: &str, body: Value) -> (u16, Value) {
    let mut r = a
        .post(url)
        .header("authorization", &format!("Bearer {key}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let s = r.status().as_u16();
    (
        s,
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null),
    )
}

/// A PATCH (with `body`) or DELETE (without): status and JSON answer.
fn send(
    a: &ureq::Agent,
    method: &str,
    url: String,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let mut r = match (method, body) {
        ("PATCH", Some(b)) => a
            .patch(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(b.to_string()),
        ("DELETE", None) => a.delete(url).header("authorization", &auth).call(),
        other => panic!("unsupported {other:?}"),
    }
    .unwrap();
    let s = r.status().as_u16();
    (
        s,
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null),
    )
}

fn get_json(a: &ureq::Agent, url: String, key: &str) -> Value {
    let mut r = a
        .get(url)
        .header("authorization", &format!("Bearer {key}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

/// A conversion of a click on `L1` with this order id.
fn convert(a: &ureq::Agent, addr: SocketAddr, order: &str) -> String {
    let cid = click(a, addr);
    let (s, conv) = post_json(
        a,
        format!("http://{addr}/api/v1/conversions"),
        M1,
        json!({"click_id": cid, "order_id": order, "amount": "3.00", "currency": "EUR"}),
    );
    assert_eq!(s, 201, "{conv}");
    conv["conversion_id"].as_str().unwrap().to_string()
}

fn click(a: &ureq::Agent, addr: SocketAddr) -> String {
    click_with(a, addr, "")
}

/// A click on `L1` with this query (`?sub1=..`, or empty): its click id.
fn click_with(a: &ureq::Agent, addr: SocketAddr, query: &str) -> String {
    let r = a.get(format!("http://{addr}/c/L1{query}")).call().unwrap();
    r.headers()["location"]
        .to_str()
        .unwrap()
        .split("click_id=")
        .nth(1)
        .unwrap()
        .to_string()
}

fn attempts(data: &Path) -> Vec<PostbackAttempt> {
    let j = Journal::open(data, JournalConfig::default()).unwrap();
    let mut out = Vec::new();
    if let Some(p) = j.get("postback-attempts") {
        let mut r = p.reader().unwrap();
        while let Some(rec) = r.next().unwrap() {
            out.extend(rec.to_owned_event::<PostbackAttempt>());
        }
    }
    j.close().unwrap();
    out
}

fn wait_for(what: &str, server: &Server, ok: impl Fn() -> bool) {
    server.wait_until(what, |_| ok());
}

#[test]
fn signed_postbacks_retry_until_delivered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let rx = Receiver::start(2, None);

    // The partner sets its own GET postback; the admin a global POST one.
    let (s, pb) = post_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks"),
        PARTNER,
        json!({"url": format!("http://{}/pb?cid={{click_id}}&oid={{order_id}}&amt={{amount}}&cur={{currency}}", rx.addr),
               "triggers": ["conversion.created"]}),
    );
    assert_eq!(s, 201, "{pb}");
    let secret = pb["secret"].as_str().unwrap().to_string();
    rx.secrets.lock().unwrap().push(secret);
    let (s, global) = post_json(
        &a,
        format!("http://{addr}/api/v1/postbacks"),
        ADMIN,
        json!({"id": "network", "url": format!("http://{}/global", rx.addr), "method": "post",
               "triggers": ["conversion.created", "conversion.reversed"]}),
    );
    assert_eq!(s, 201, "{global}");
    rx.secrets
        .lock()
        .unwrap()
        .push(global["secret"].as_str().unwrap().to_string());
    // Limits and ownership are enforced.
    let (s, _) = post_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks"),
        PARTNER,
        json!({"url": "javascript:alert(1)", "triggers": ["conversion.created"]}),
    );
    assert_eq!(s, 400);
    let (s, _) = post_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks"),
        PARTNER,
        json!({"id": "network", "url": "http://x.example/", "triggers": ["conversion.created"]}),
    );
    assert_eq!(s, 404, "a partner cannot take over a global postback");

    let cid = click(&a, addr);
    let (s, conv) = post_json(
        &a,
        format!("http://{addr}/api/v1/conversions"),
        M1,
        json!({"click_id": cid, "order_id": "o&1", "amount": "49.90", "currency": "EUR"}),
    );
    assert_eq!(s, 201, "{conv}");

    wait_for("both postbacks delivered", &server, || {
        rx.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == 200)
            .count()
            >= 2
    });
    std::thread::sleep(Duration::from_millis(500)); // a wrongly repeated delivery would show
    let seen = rx.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.signature_ok), "{seen:?}");
    let ok: Vec<&Seen> = seen.iter().filter(|s| s.status == 200).collect();
    assert_eq!(
        ok.len(),
        2,
        "exactly one successful delivery per postback: {seen:?}"
    );
    let get = seen.iter().find(|s| s.target.starts_with("/pb?")).unwrap();
    assert_eq!(
        get.target,
        format!("/pb?cid={cid}&oid=o%261&amt=4990&cur=EUR")
    );
    // The failed attempts were retries of the same deliveries: same ids as the successes.
    let delivered: std::collections::HashSet<&str> =
        ok.iter().map(|s| s.delivery.as_str()).collect();
    assert_eq!(delivered.len(), 2, "two distinct deliveries");
    for failed in seen.iter().filter(|s| s.status == 500) {
        assert!(
            delivered.contains(failed.delivery.as_str()),
            "{failed:?} retried under another id"
        );
    }
    assert_eq!(
        seen.len(),
        4,
        "two failures, then one success each: {seen:?}"
    );

    // The delivery log, scoped by key; a test postback; a redelivery with the same id.
    let list = |path: &str, key: &str| {
        let mut r = a
            .get(format!("http://{addr}{path}"))
            .header("authorization", &format!("Bearer {key}"))
            .call()
            .unwrap();
        serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap()
    };
    let mine = list("/api/v1/me/postbacks/deliveries", PARTNER);
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{mine}");
    assert_eq!(items[0]["outcome"], "delivered", "{mine}");
    assert!(items[0]["attempts"].as_u64().unwrap() >= 1);
    let all = list("/api/v1/postbacks/deliveries", ADMIN);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let my_delivery = items[0]["delivery_id"].as_str().unwrap().to_string();
    let pb_id = pb["id"].as_str().unwrap();
    let (s, _) = post_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks/{pb_id}/test"),
        PARTNER,
        json!({}),
    );
    assert_eq!(s, 202);
    let (s, _) = post_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks/network/test"),
        PARTNER,
        json!({}),
    );
    assert_eq!(s, 404, "not the partner's postback");
    let (s, _) = post_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks/deliveries/{my_delivery}/redeliver"),
        PARTNER,
        json!({}),
    );
    assert_eq!(s, 202);
    wait_for("test and redelivery", &server, || {
        rx.seen.lock().unwrap().len() >= 6
    });
    let seen = rx.seen.lock().unwrap().clone();
    let test = seen
        .iter()
        .find(|s| s.delivery.starts_with("dl_test_"))
        .expect("test delivery");
    assert!(
        test.target.contains("oid=test-order") && test.signature_ok,
        "{test:?}"
    );
    let delivered_mine = seen
        .iter()
        .filter(|s| s.delivery == my_delivery && s.status == 200)
        .count();
    assert_eq!(
        delivered_mine, 2,
        "redelivered once more, with the same id: {seen:?}"
    );

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(20)).0, Some(0));
    let log: Vec<_> = attempts(&data)
        .into_iter()
        .filter(|a| !a.delivery_id.starts_with("dl_test_"))
        .collect();
    assert_eq!(log.len(), 5, "every attempt is a journal event: {log:?}");
    assert_eq!(
        log.iter()
            .filter(|a| a.outcome == DeliveryOutcome::Delivered)
            .count(),
        3,
        "two first deliveries and the redelivery"
    );
    assert_eq!(
        log.iter()
            .filter(|a| a.outcome == DeliveryOutcome::Retrying)
            .count(),
        2
    );
    assert!(log
        .iter()
        .filter(|a| a.outcome == DeliveryOutcome::Retrying)
        .all(|a| a.status_code == 500));

    // After a restart nothing is delivered again.
    let before = rx.seen.lock().unwrap().len();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.seen.lock().unwrap().len(), before);
    drop(server);
}

#[test]
fn a_server_killed_mid_delivery_delivers_after_restart_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let rx = Receiver::start(0, Some(Duration::from_secs(2)));
    partner_postback(&a, addr, &rx, "/pb?oid={order_id}", &["conversion.created"]);
    let cid = click(&a, addr);
    let (s, _) = post_json(
        &a,
        format!("http://{addr}/api/v1/conversions"),
        M1,
        json!({"click_id": cid, "order_id": "k1", "amount": "1.00", "currency": "EUR"}),
    );
    assert_eq!(s, 201);
    // The receiver holds the first request; kill the server while it is in flight.
    std::thread::sleep(Duration::from_millis(1200));
    server.signal(libc::SIGKILL);
    assert_eq!(server.wait(Duration::from_secs(10)).0, None);
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    wait_for("delivery after restart", &server, || {
        rx.seen.lock().unwrap().len() >= 2
    });
    let seen = rx.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].delivery, seen[1].delivery,
        "the same delivery id after the restart"
    );
    assert!(seen.iter().all(|s| s.signature_ok));
    drop(server);
}

#[test]
fn approvals_and_reversals_reach_the_affiliates_own_postback() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let rx = Receiver::start(0, None);
    partner_postback(
        &a,
        addr,
        &rx,
        "/life?e={status}&ev={event}&oid={order_id}&aff={affiliate_id}&amt={amount}&s1={sub1}",
        &["conversion.approved", "conversion.reversed"],
    );

    let cid = click_with(&a, addr, "?sub1=spring");
    let mut ids = Vec::new();
    for order in ["life-1", "life-2"] {
        let (s, conv) = post_json(
            &a,
            format!("http://{addr}/api/v1/conversions"),
            M1,
            json!({"click_id": cid, "order_id": order, "amount": "12.50", "currency": "EUR",
                   "event": "upgrade"}),
        );
        assert_eq!(s, 201, "{conv}");
        ids.push(conv["conversion_id"].as_str().unwrap().to_string());
    }
    // The click reaches the recent-click index (for {sub1}) with the next background sync.
    std::thread::sleep(Duration::from_millis(1500));
    let review = |id: &str, what: &str, body: Value| {
        post_json(
            &a,
            format!("http://{addr}/api/v1/conversions/{id}/{what}"),
            M1,
            body,
        )
        .0
    };
    assert_eq!(
        review(&ids[0], "approve", json!({"reason": "shipped"})),
        200
    );
    assert_eq!(
        review(
            &ids[0],
            "reverse",
            json!({"reason": "refund", "reversal_id": "rf-1"})
        ),
        200
    );
    assert_eq!(
        review(&ids[1], "reject", json!({"reason": "test order"})),
        200
    );

    wait_for("approval and reversal delivered", &server, || {
        rx.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == 200)
            .count()
            >= 2
    });
    std::thread::sleep(Duration::from_millis(500)); // a stray delivery would show
    let seen = rx.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.signature_ok), "{seen:?}");
    // Deliveries run concurrently: compare as a set.
    let mut targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            "/life?e=approved&ev=upgrade&oid=life-1&aff=a1&amt=1250&s1=spring",
            "/life?e=reversed&ev=upgrade&oid=life-1&aff=a1&amt=1250&s1=spring",
        ],
        "created and rejected are not subscribed; no repeats"
    );
    drop(server);
}

#[test]
fn a_commission_reaches_the_affiliates_own_postback_with_its_amount() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let rx = Receiver::start(0, None);
    partner_postback(&a, addr, &rx, "/comm?cv={conversion_id}&pay={payout}&amt={amount}&cur={currency}&aff={affiliate_id}&st={status}&oid={order_id}&cid={click_id}&s2={sub2}", &["commission.created"]);
    let cid = click_with(&a, addr, "?sub2=autumn");
    let (s, conv) = post_json(
        &a,
        format!("http://{addr}/api/v1/conversions"),
        M1,
        json!({"click_id": cid, "order_id": "comm-1", "amount": "12.50", "currency": "EUR"}),
    );
    assert_eq!(s, 201, "{conv}");
    let id = conv["conversion_id"].as_str().unwrap().to_string();
    wait_for("commission delivered", &server, || {
        rx.seen.lock().unwrap().iter().any(|s| s.status == 200)
    });
    std::thread::sleep(Duration::from_millis(500)); // a repeat would show
    let seen = rx.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].signature_ok);
    assert_eq!(
        seen[0].target,
        format!("/comm?cv={id}&pay=125&amt=1250&cur=EUR&aff=a1&st=pending&oid=comm-1&cid={cid}&s2=autumn")
    );
}

/// `{sub1}` comes from the click, however long ago it was: a click that has left the
/// in-memory index (1,000 clicks here) and a restart is read back from the journal.
#[test]
fn postbacks_carry_the_sub_ids_of_clicks_gone_from_the_recent_index() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[conversions]\nclick-index-max = 1000\n");
    std::fs::write(&cfg, text).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let first = click_with(&a, addr, "?sub1=early-bird&sub3=third");
    for _ in 0..1100 {
        click(&a, addr);
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));

    // After the restart the index holds the newest 1,000 clicks, not the first.
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    let indexed = |m: &str| {
        m.lines().find_map(|l| {
            l.strip_prefix("clicktrail_click_index_clicks ")?
                .parse::<u64>()
                .ok()
        })
    };
    wait_for("the index rebuilt", &server, || {
        let m = a
            .get(format!("http://{addr}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        indexed(&m) == Some(1000)
    });
    let rx = Receiver::start(0, None);
    partner_postback(
        &a,
        addr,
        &rx,
        "/old?s1={sub1}&s3={sub3}&oid={order_id}",
        &["conversion.created"],
    );
    let (s, conv) = post_json(
        &a,
        format!("http://{addr}/api/v1/conversions"),
        M1,
        json!({"click_id": first, "order_id": "old-1", "amount": "5.00", "currency": "EUR"}),
    );
    assert_eq!(s, 201, "{conv}");
    wait_for("postback delivered", &server, || {
        rx.seen.lock().unwrap().iter().any(|s| s.status == 200)
    });
    let seen = rx.seen.lock().unwrap().clone();
    assert_eq!(seen[0].target, "/old?s1=early-bird&s3=third&oid=old-1");
    assert!(seen[0].signature_ok);
    drop(server);
}

/// What the receiver got for `order` (targets end with `oid=<order>`).
fn seen_for(rx: &Receiver, order: &str) -> Vec<Seen> {
    let tail = format!("oid={order}");
    rx.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.target.ends_with(&tail))
        .cloned()
        .collect()
}

/// Waits until the global postback (at `sync`) got `order`: the dispatcher has read the
/// conversion, so the partner's postback would have been queued too; a moment more lets a
/// wrong delivery show.
fn processed(server: &Server, sync: &Receiver, order: &str) {
    wait_for(order, server, || !seen_for(sync, order).is_empty());
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn postbacks_are_disabled_edited_and_deleted_by_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let (rx, sync) = (Receiver::start(0, None), Receiver::start(0, None));
    let (s, pb) = post_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks"),
        PARTNER,
        json!({"id": "mine", "url": format!("http://{}/v1?oid={{order_id}}", rx.addr),
               "triggers": ["conversion.created"]}),
    );
    assert_eq!(s, 201, "{pb}");
    assert_eq!(pb["enabled"], true);
    let (s, global) = post_json(
        &a,
        format!("http://{addr}/api/v1/postbacks"),
        ADMIN,
        json!({"id": "network", "url": format!("http://{}/sync?oid={{order_id}}", sync.addr),
               "triggers": ["conversion.created"]}),
    );
    assert_eq!(s, 201, "{global}");
    let mine = |addr: SocketAddr| format!("http://{addr}/api/v1/me/postbacks/mine");

    // Disabled: no delivery; the list says so.
    let (s, p) = send(
        &a,
        "PATCH",
        mine(addr),
        PARTNER,
        Some(json!({"enabled": false})),
    );
    assert_eq!((s, &p["enabled"]), (200, &json!(false)), "{p}");
    assert!(
        p.get("secret").is_none(),
        "the secret is shown only when rotated"
    );
    let list = get_json(&a, format!("http://{addr}/api/v1/me/postbacks"), PARTNER);
    assert_eq!(list["items"][0]["enabled"], false, "{list}");
    convert(&a, addr, "while-off");
    processed(&server, &sync, "while-off");
    assert!(
        seen_for(&rx, "while-off").is_empty(),
        "disabled: no delivery"
    );

    // Enabled again: delivered; what happened while disabled is not.
    let (s, p) = send(
        &a,
        "PATCH",
        mine(addr),
        PARTNER,
        Some(json!({"enabled": true})),
    );
    assert_eq!((s, &p["enabled"]), (200, &json!(true)), "{p}");
    convert(&a, addr, "back-on");
    processed(&server, &sync, "back-on");
    let got = seen_for(&rx, "back-on");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].target.starts_with("/v1?"), "{got:?}");

    // A new URL: the next delivery goes there (through the same checks as on creation).
    let (s, p) = send(
        &a,
        "PATCH",
        mine(addr),
        PARTNER,
        Some(json!({"url": format!("http://{}/v2?oid={{order_id}}", rx.addr)})),
    );
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        p["triggers"],
        json!(["conversion.created"]),
        "untouched fields stay"
    );
    convert(&a, addr, "moved");
    processed(&server, &sync, "moved");
    let got = seen_for(&rx, "moved");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].target.starts_with("/v2?"), "{got:?}");

    // Another partner, and a partner on a global postback: 404, nothing changed.
    for (url, key) in [
        (mine(addr), PARTNER2),
        (
            format!("http://{addr}/api/v1/me/postbacks/network"),
            PARTNER,
        ),
        (
            format!("http://{addr}/api/v1/affiliates/a2/postbacks/mine"),
            ADMIN,
        ),
    ] {
        let (s, _) = send(
            &a,
            "PATCH",
            url.clone(),
            key,
            Some(json!({"enabled": false})),
        );
        assert_eq!(s, 404, "PATCH {url}");
        let (s, _) = send(&a, "DELETE", url.clone(), key, None);
        assert_eq!(s, 404, "DELETE {url}");
    }
    let all = get_json(&a, format!("http://{addr}/api/v1/postbacks"), ADMIN);
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    assert!(all["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["enabled"] == true));

    // After a restart, what happened while it was disabled is still not delivered.
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(20)).0, Some(0));
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    convert(&a, addr, "after-restart");
    processed(&server, &sync, "after-restart");
    assert_eq!(seen_for(&rx, "after-restart").len(), 1);
    assert!(
        seen_for(&rx, "while-off").is_empty(),
        "no history after a restart"
    );
    assert_eq!(seen_for(&rx, "back-on").len(), 1, "nothing delivered twice");

    // The admin, through the affiliate's path; then the partner deletes it.
    let (s, p) = send(
        &a,
        "PATCH",
        format!("http://{addr}/api/v1/affiliates/a1/postbacks/mine"),
        ADMIN,
        Some(json!({"method": "post", "rotate_secret": true})),
    );
    assert_eq!((s, &p["method"]), (200, &json!("post")), "{p}");
    assert!(p["secret"].as_str().unwrap().starts_with("whsec_"), "{p}");
    let (s, _) = send(&a, "DELETE", mine(addr), PARTNER, None);
    assert_eq!(s, 204);
    let list = get_json(&a, format!("http://{addr}/api/v1/me/postbacks"), PARTNER);
    assert_eq!(list["items"], json!([]), "{list}");
    let (s, _) = send(&a, "DELETE", mine(addr), PARTNER, None);
    assert_eq!(s, 404, "deleted already");
    let (s, _) = send(
        &a,
        "PATCH",
        mine(addr),
        PARTNER,
        Some(json!({"enabled": true})),
    );
    assert_eq!(s, 404);
    convert(&a, addr, "deleted");
    processed(&server, &sync, "deleted");
    assert!(seen_for(&rx, "deleted").is_empty(), "deleted: no delivery");
    // Its delivery log stays readable by its owner.
    let log = get_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks/deliveries"),
        PARTNER,
    );
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{log}");
    assert!(items.iter().all(|i| i["postback_id"] == "mine"), "{log}");
    // Its id stays with its owner.
    let (s, _) = post_json(
        &a,
        format!("http://{addr}/api/v1/me/postbacks"),
        PARTNER2,
        json!({"id": "mine", "url": "http://x.example/", "triggers": ["conversion.created"]}),
    );
    assert_eq!(
        s, 400,
        "another partner cannot take a deleted postback's id"
    );
    // An admin deletes a global postback.
    let (s, _) = send(
        &a,
        "DELETE",
        format!("http://{addr}/api/v1/postbacks/network"),
        ADMIN,
        None,
    );
    assert_eq!(s, 204);
    drop(server);
}

#[test]
fn templates_with_unknown_macros_are_refused_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    let create = |url: &str| {
        post_json(
            &a,
            format!("http://{addr}/api/v1/me/postbacks"),
            PARTNER,
            json!({"id": "t", "url": url, "triggers": ["conversion.created"]}),
        )
    };
    let (s, e) = create("http://r.example/pb?c={clickid}");
    assert_eq!(s, 422, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.starts_with("unknown macro {clickid}; known macros: {click_id}, {conversion_id}"),
        "{msg}"
    );
    for m in ["{order_id}", "{payout}", "{timestamp}", "{sub1}", "{sub5}"] {
        assert!(msg.contains(m), "{m} listed: {msg}");
    }
    let (s, e) = create("http://r.example/pb?c={click_id");
    assert_eq!(s, 422, "unbalanced: {e}");
    let (s, p) = create("http://r.example/pb?c={click_id}&t={timestamp}");
    assert_eq!(s, 201, "{p}");
    let url = format!("http://{addr}/api/v1/me/postbacks/t");
    let (s, e) = send(
        &a,
        "PATCH",
        url.clone(),
        PARTNER,
        Some(json!({"url": "http://r.example/?x={amt}"})),
    );
    assert_eq!(s, 422, "{e}");
    assert!(e["error"]
        .as_str()
        .unwrap()
        .contains("unknown macro {amt}; known macros: {click_id}"));
    let (s, e) = send(&a, "PATCH", url, PARTNER, Some(json!({"id": "other"})));
    assert_eq!(
        s, 400,
        "only url, method, triggers, enabled, rotate_secret: {e}"
    );
    let list = get_json(&a, format!("http://{addr}/api/v1/me/postbacks"), PARTNER);
    assert_eq!(
        list["items"][0]["url"], "http://r.example/pb?c={click_id}&t={timestamp}",
        "a refused change changes nothing"
    );
    drop(server);
}
