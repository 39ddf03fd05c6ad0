//! Commissions to payouts through the real binary: a conversion earns 10% in the ledger,
//! the partner reads its balance and statement, and a payout batch pays it through Stripe
//! Connect, PayPal or Wise, each a real HTTP server on 127.0.0.1 that speaks the provider's
//! documented request shape, records every request, honours idempotency like the provider
//! does, and can stall or fail. A timeout then retry pays once; a SIGKILL between the intent
//! and the provider's answer pays once after restart.

mod common;

use common::{agent, Server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MERCHANT: &str = "merchant-one-key-0123456789";
const ADMIN: &str = "admin-ops-key-0123456789";
const P_STRIPE: &str = "partner-stripe-key-0123456789";
const P_PAYPAL: &str = "partner-paypal-key-0123456789";
const P_WISE: &str = "partner-wise-key-0123456789";

/// One request the fake provider received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

#[derive(Debug, Default)]
struct ProviderState {
    seen: Vec<Seen>,
    /// Payments actually made, by idempotency key (Stripe key, PayPal batch id, Wise
    /// customerTransactionId): what a real provider would have paid out.
    made: BTreeMap<String, (String, Value)>,
    /// Funded Wise transfers.
    funded: Vec<u64>,
    /// Wise: every transfer is cancelled (at Wise) as soon as it is created, so funding
    /// it answers 422 `transfer.invalid-state`, as it does for one funded already.
    cancel_transfers: bool,
    /// Wise: stall the answer to the first funding request this long (after funding).
    stall_first_funding: Option<Duration>,
    /// PayPal: the status of every batch (otherwise `PENDING` when made and `SUCCESS` when
    /// looked up, as PayPal settles it meanwhile).
    batch_status: Option<&'static str>,
    /// Stall the first payment request this long (after making the payment).
    stall_first: Option<Duration>,
    /// Answer the first payment request with this status (without paying).
    fail_first: Option<u16>,
    /// Answer every payment request after the first with this status (without paying).
    refuse_later: Option<u16>,
    payment_requests: usize,
}

#[derive(Clone)]
struct Provider {
    addr: SocketAddr,
    state: Arc<Mutex<ProviderState>>,
}

fn read_request(s: &mut TcpStream) -> Option<(String, String, HashMap<String, String>, String)> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((method, path, headers, String::from_utf8_lossy(&body).into()))
}

fn respond(s: &mut TcpStream, status: u16, body: &Value) {
    let text = body.to_string();
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn form_fields(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let dec = |s: &str| {
                let s = s.replace('+', " ");
                let mut out = Vec::new();
                let b = s.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'%' && i + 2 < b.len() + 1 {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            (dec(k), dec(v))
        })
        .collect()
}

impl Provider {
    fn start() -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Provider {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
        };
        let me = p.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let me = me.clone();
                std::thread::spawn(move || me.handle(&mut s));
            }
        });
        p
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn handle(&self, s: &mut TcpStream) {
        let Some((method, path, headers, body)) = read_request(s) else {
            return;
        };
        if method == "GET" {
            return self.status_lookup(s, &path);
        }
        assert_eq!(method, "POST");
        let seen = Seen {
            path: path.clone(),
            headers: headers.clone(),
            body: body.clone(),
        };
        let mut st = self.state.lock().unwrap();
        st.seen.push(seen);
        let payment = path == "/v1/transfers" || path == "/v1/payments/payouts";
        let mut stall = None;
        if payment {
            st.payment_requests += 1;
            if st.payment_requests == 1 {
                if let Some(code) = st.fail_first {
                    drop(st);
                    return respond(s, code, &json!({"error": {"type": "api_error"}}));
                }
                stall = st.stall_first;
            } else if let Some(code) = st.refuse_later {
                drop(st);
                return respond(
                    s,
                    code,
                    &json!({"error": {"type": "invalid_request_error", "message": "refused"}}),
                );
            }
        }
        let (status, reply) = match path.as_str() {
            // Stripe: the first request with a key makes the transfer; later ones replay it.
            "/v1/transfers" if headers.contains_key("idempotency-key") => {
                let key = headers["idempotency-key"].clone();
                let n = st.made.len();
                let (id, _) = st
                    .made
                    .entry(key)
                    .or_insert_with(|| (format!("tr_{n}"), json!(form_fields(&body))))
                    .clone();
                (200, json!({"id": id, "object": "transfer"}))
            }
            "/v1/oauth2/token" => (
                200,
                json!({"access_token": "A21AA-token", "token_type": "Bearer", "expires_in": 32400}),
            ),
            "/v1/payments/payouts" => {
                let v: Value = serde_json::from_str(&body).unwrap();
                let id = v["sender_batch_header"]["sender_batch_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                if st.made.contains_key(&id) {
                    let batch = st.made[&id].0.clone();
                    (
                        400,
                        json!({"name": "USER_BUSINESS_ERROR", "message": "User business error.",
                           "details": [{"field": "SENDER_BATCH_ID",
                                        "issue": "Batch with given sender_batch_id already exists",
                                        "link": [{"href": format!("https://api-m.paypal.com/v1/payments/payouts/{batch}"),
                                                  "rel": "self", "method": "GET"}]}]}),
                    )
                } else {
                    let batch = format!("PB{}", st.made.len());
                    st.made.insert(id, (batch.clone(), v));
                    let status = st.batch_status.unwrap_or("PENDING");
                    (
                        201,
                        json!({"batch_header": {"payout_batch_id": batch, "batch_status": status}}),
                    )
                }
            }
            p if p.ends_with("/quotes") => (200, json!({"id": "q-11111111-2222", "rate": 1})),
            "/v1/transfers" => {
                // Wise: customerTransactionId makes creating a transfer idempotent.
                let v: Value = serde_json::from_str(&body).unwrap();
                let key = v["customerTransactionId"].as_str().unwrap().to_string();
                let n = st.made.len() as u64;
                let id = st
                    .made
                    .entry(key)
                    .or_insert_with(|| ((1000 + n).to_string(), v))
                    .0
                    .clone();
                (
                    200,
                    json!({"id": id.parse::<u64>().unwrap(), "status": "incoming_payment_waiting"}),
                )
            }
            p if p.ends_with("/payments") => {
                let id: u64 = p.split('/').nth(5).unwrap().parse().unwrap();
                if st.funded.contains(&id) || st.cancel_transfers {
                    (422, json!({"errors": [{"code": "transfer.invalid-state"}]}))
                } else {
                    st.funded.push(id);
                    if st.funded.len() == 1 {
                        stall = st.stall_first_funding.take();
                    }
                    (
                        201,
                        json!({"type": "BALANCE", "status": "COMPLETED", "errorCode": null}),
                    )
                }
            }
            _ => (404, json!({"error": "unknown path"})),
        };
        drop(st);
        if let Some(d) = stall {
            std::thread::sleep(d);
        }
        respond(s, status, &reply);
    }

    /// `GET /v1/transfers/{id}` (Wise) and `GET /v1/payments/payouts/{batch}` (PayPal).
    fn status_lookup(&self, s: &mut TcpStream, path: &str) {
        let mut st = self.state.lock().unwrap();
        st.seen.push(Seen {
            path: path.to_string(),
            headers: HashMap::new(),
            body: String::new(),
        });
        let (status, reply) = if let Some(id) = path.strip_prefix("/v1/transfers/") {
            let id: u64 = id.parse().unwrap();
            let known = st.made.values().any(|(t, _)| t.parse() == Ok(id));
            let state = if st.funded.contains(&id) {
                "outgoing_payment_sent"
            } else if st.cancel_transfers {
                "cancelled"
            } else {
                "incoming_payment_waiting"
            };
            if known {
                (200, json!({"id": id, "status": state}))
            } else {
                (404, json!({"errors": [{"code": "transfer.not-found"}]}))
            }
        } else if let Some(batch) = path.strip_prefix("/v1/payments/payouts/") {
            let status = st.batch_status.unwrap_or("SUCCESS");
            if st.made.values().any(|(b, _)| b == batch) {
                (
                    200,
                    json!({"batch_header": {"payout_batch_id": batch, "batch_status": status}}),
                )
            } else {
                (404, json!({"name": "RESOURCE_NOT_FOUND"}))
            }
        } else {
            (404, json!({"error": "unknown path"}))
        };
        drop(st);
        respond(s, status, &reply);
    }

    fn made(&self) -> BTreeMap<String, (String, Value)> {
        self.state.lock().unwrap().made.clone()
    }

    fn seen(&self, path_end: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.path.ends_with(path_end))
            .cloned()
            .collect()
    }
}

fn config(
    dir: &Path,
    stripe: &Provider,
    paypal: &Provider,
    wise: &Provider,
    // (text, replacement) edits of the base configuration; each must apply.
    edits: &[(&str, &str)],
) -> PathBuf {
    let text = format!(
        r#"
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[program]
hold-days = 0
# These tests pay test sales made a second after their clicks, all from 127.0.0.1: a real
# program's fraud rules would hold every one of them.
[fraud]
enabled = false
[payouts]
schedule = "manual"
timeout-ms = 700
backoff-initial-ms = 200
backoff-max-ms = 1000
minimum = {{ EUR = 500 }}
[payouts.stripe]
base-url = "{}"
secret-key = "sk_test_123"
[payouts.paypal]
base-url = "{}"
client-id = "pp-client"
client-secret = "pp-secret"
[payouts.wise]
base-url = "{}"
api-token = "wise-token"
profile-id = "4242"
[[merchants]]
id = "m1"
name = "One"
[[affiliates]]
id = "a-stripe"
name = "Stripe Partner"
payout-provider = "stripe"
payout-account = "acct_1Partner"
[[affiliates]]
id = "a-paypal"
name = "PayPal Partner"
payout-provider = "paypal"
payout-account = "partner@example.com"
[[affiliates]]
id = "a-wise"
name = "Wise Partner"
payout-provider = "wise"
payout-account = "777001"
[[affiliates]]
id = "a-small"
name = "Below the minimum"
payout-provider = "stripe"
payout-account = "acct_1Small"
[[campaigns]]
id = "c1"
merchant-id = "m1"
name = "C1"
destination-url = "https://one.example/"
[[links]]
code = "LS"
affiliate-id = "a-stripe"
campaign-id = "c1"
[[links]]
code = "LP"
affiliate-id = "a-paypal"
campaign-id = "c1"
[[links]]
code = "LW"
affiliate-id = "a-wise"
campaign-id = "c1"
[[links]]
code = "LX"
affiliate-id = "a-small"
campaign-id = "c1"
[[plans]]
id = "ten"
campaign-id = "c1"
percent-bps = 1000
[[keys]]
role = "merchant"
owner = "m1"
key = "{MERCHANT}"
[[keys]]
role = "admin"
owner = "ops"
key = "{ADMIN}"
[[keys]]
role = "partner"
owner = "a-stripe"
key = "{P_STRIPE}"
[[keys]]
role = "partner"
owner = "a-paypal"
key = "{P_PAYPAL}"
[[keys]]
role = "partner"
owner = "a-wise"
key = "{P_WISE}"
"#,
        stripe.url(),
        paypal.url(),
        wise.url()
    );
    let mut text = text;
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "{from:?} is not in the base configuration"
        );
        text = text.replacen(from, to, 1);
    }
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn call(
    a: &ureq::Agent,
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> (u16, Value, String) {
    let url = format!("http://{addr}{path}");
    let auth = format!("Bearer {key}");
    let mut resp = if method == "GET" {
        a.get(&url).header("authorization", &auth).call().unwrap()
    } else {
        a.post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body)
            .unwrap()
    };
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (
        status,
        v,
        if ct.starts_with("text/csv") { text } else { ct },
    )
}

/// A click through `link` and a conversion of `amount` EUR for it.
fn sale(a: &ureq::Agent, addr: SocketAddr, link: &str, order: &str, amount: &str) -> String {
    let r = a.get(format!("http://{addr}/c/{link}")).call().unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let cid = loc.split("click_id=").nth(1).unwrap();
    let body = json!({"click_id": cid, "order_id": order, "amount": amount, "currency": "EUR"});
    let (s, v, _) = call(
        a,
        addr,
        "POST",
        "/api/v1/conversions",
        MERCHANT,
        &body.to_string(),
    );
    assert_eq!(s, 201, "{v}");
    v["conversion_id"].as_str().unwrap().to_string()
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn balance(a: &ureq::Agent, addr: SocketAddr, key: &str) -> Value {
    let (s, v, _) = call(a, addr, "GET", "/api/v1/me/balance", key, "");
    assert_eq!(s, 200, "{v}");
    v["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["currency"] == "EUR")
        .cloned()
        .unwrap_or(Value::Null)
}

fn items(a: &ureq::Agent, addr: SocketAddr) -> Vec<Value> {
    let (s, v, _) = call(a, addr, "GET", "/api/v1/payouts", ADMIN, "");
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

#[test]
fn commissions_are_paid_once_through_each_provider_despite_timeouts_and_failures() {
    let (stripe, paypal, wise) = (Provider::start(), Provider::start(), Provider::start());
    // Stripe's first transfer request is made but answered only after our 700 ms timeout;
    // PayPal's first payout request fails with a 503.
    stripe.state.lock().unwrap().stall_first = Some(Duration::from_millis(1500));
    paypal.state.lock().unwrap().fail_first = Some(503);
    // Wise funds the transfer but its answer comes after our timeout.
    wise.state.lock().unwrap().stall_first_funding = Some(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &stripe, &paypal, &wise, &[]);
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);

    sale(&a, addr, "LS", "o-1", "100.00");
    sale(&a, addr, "LS", "o-2", "49.90");
    sale(&a, addr, "LP", "o-3", "80.00");
    sale(&a, addr, "LW", "o-4", "120.00");
    sale(&a, addr, "LX", "o-5", "3.00"); // 0.30 earned: under the 5.00 minimum

    // Hold period 0: approved on the ledger's next tick.
    wait_for("approved balances", 20, || {
        balance(&a, addr, P_STRIPE)["approved_minor"] == 1499
            && balance(&a, addr, P_WISE)["approved_minor"] == 1200
    });
    let b = balance(&a, addr, P_STRIPE);
    assert_eq!(
        (b["approved"].as_str(), b["pending_minor"].as_i64()),
        (Some("14.99"), Some(0))
    );

    // The statement: JSON with balances, CSV on request; bad periods are a 400.
    let (s, st, _) = call(&a, addr, "GET", "/api/v1/me/statement", P_STRIPE, "");
    assert_eq!(s, 200);
    assert_eq!(st["closing"][0]["approved_minor"], 1499, "{st}");
    let lines = st["lines"].as_array().unwrap();
    assert_eq!(
        lines.len(),
        6,
        "2 sales pending, 2 approvals of 2 legs: {st}"
    );
    let (s, _, csv) = call(
        &a,
        addr,
        "GET",
        "/api/v1/me/statement?format=csv&from=0",
        P_STRIPE,
        "",
    );
    assert_eq!(s, 200);
    assert!(
        csv.starts_with(
            "at,txn_id,cause,conversion_id,currency,detail,bucket,amount,amount_minor\n"
        ),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(
        csv.contains(",sale,") && csv.contains(",EUR,commission,pending,10.00,1000"),
        "{csv}"
    );
    let (s, e, _) = call(
        &a,
        addr,
        "GET",
        "/api/v1/me/statement?from=yesterday",
        P_STRIPE,
        "",
    );
    assert_eq!(s, 400, "{e}");
    let (s, e, _) = call(
        &a,
        addr,
        "GET",
        "/api/v1/me/statement?from=20&to=10",
        P_STRIPE,
        "",
    );
    assert_eq!(s, 400, "{e}");
    // A partner key reads only its own; the admin reads anyone's and the trial balance.
    let (s, _, _) = call(
        &a,
        addr,
        "GET",
        "/api/v1/affiliates/a-paypal/balance",
        P_STRIPE,
        "",
    );
    assert_eq!(s, 403);
    let (s, tb, _) = call(&a, addr, "GET", "/api/v1/ledger/trial-balance", ADMIN, "");
    assert_eq!(
        (s, tb["currencies"][0]["total_minor"].as_i64()),
        (200, Some(0)),
        "{tb}"
    );

    // Run a batch.
    let (s, v, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!(s, 201, "{v}");
    // The run says what it did: three items, and who was left out and why.
    assert_eq!(v["items_created"], 3, "{v}");
    let small = v["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["affiliate_id"] == "a-small")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(small["reason"], "below_minimum", "{v}");
    assert!(
        small["detail"]
            .as_str()
            .unwrap()
            .contains("payouts.minimum"),
        "{v}"
    );
    wait_for("three paid items", 30, || {
        let it = items(&a, addr);
        it.len() == 3 && it.iter().all(|i| i["status"] == "paid")
    });
    let it = items(&a, addr);
    assert!(
        !it.iter().any(|i| i["affiliate_id"] == "a-small"),
        "under the minimum: not paid"
    );

    // Stripe: one transfer, of 14.99 less 0.25% (0.04) + 0.25 = 14.70, every attempt with
    // the item id as Idempotency-Key and the documented form fields.
    let made = stripe.made();
    assert_eq!(made.len(), 1, "{made:?}");
    let attempts = stripe.seen("/v1/transfers");
    assert!(attempts.len() >= 2, "the stalled request was retried");
    let keys: std::collections::BTreeSet<_> = attempts
        .iter()
        .map(|s| s.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 1, "one key for every attempt: {keys:?}");
    let first = &attempts[0];
    assert_eq!(first.headers["authorization"], "Bearer sk_test_123");
    assert_eq!(
        first.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let f = form_fields(&first.body);
    assert_eq!(f["amount"], "1470");
    assert_eq!(f["currency"], "eur");
    assert_eq!(f["destination"], "acct_1Partner");
    // The key is this installation's id, then the item id.
    let key = keys.iter().next().unwrap();
    let installation = std::fs::read_to_string(data.join("installation-id")).unwrap();
    assert_eq!(
        *key,
        format!("{}-{}", installation.trim(), f["metadata[item_id]"])
    );
    let si = it.iter().find(|i| i["provider"] == "stripe").unwrap();
    assert_eq!(
        (si["gross"].as_str(), si["fee"].as_str(), si["net"].as_str()),
        (Some("14.99"), Some("0.29"), Some("14.70"))
    );

    // PayPal: an OAuth token with the client credentials, then the payout; the 503 was
    // retried with the same sender_batch_id; one payout made: 8.00 less 2% = 7.84.
    let token = paypal.seen("/v1/oauth2/token");
    assert_eq!(
        token[0].headers["authorization"],
        "Basic cHAtY2xpZW50OnBwLXNlY3JldA=="
    );
    assert_eq!(token[0].body, "grant_type=client_credentials");
    // 503; then PENDING (not settled: asked again); then the used sender_batch_id, whose
    // batch is looked up and found SUCCESS.
    let payouts = paypal.seen("/v1/payments/payouts");
    assert!(payouts.len() >= 3, "{}", payouts.len());
    assert_eq!(paypal.seen("/v1/payments/payouts/PB0").len(), 1);
    let made = paypal.made();
    assert_eq!(made.len(), 1);
    let (_, body) = made.values().next().unwrap();
    assert_eq!(
        body["items"][0]["amount"],
        json!({"value": "7.84", "currency": "EUR"})
    );
    assert_eq!(body["items"][0]["receiver"], "partner@example.com");
    assert_eq!(body["items"][0]["recipient_type"], "EMAIL");
    assert_eq!(payouts[0].headers["authorization"], "Bearer A21AA-token");

    // Wise: quote, transfer with a UUID customerTransactionId, funding from the balance.
    let quote: Value = serde_json::from_str(&wise.seen("/quotes")[0].body).unwrap();
    assert_eq!(wise.seen("/quotes")[0].path, "/v3/profiles/4242/quotes");
    assert_eq!(
        quote["sourceAmount"],
        json!(11.94),
        "12.00 less 0.5% = 11.94: {quote}"
    );
    assert_eq!(quote["targetAccount"], json!(777001));
    let made = wise.made();
    assert_eq!(made.len(), 1);
    let (key, (_, t)) = made.iter().next().unwrap();
    assert_eq!(key.len(), 36);
    assert_eq!(t["quoteUuid"], "q-11111111-2222");
    let fund = wise.seen("/payments");
    assert_eq!(fund[0].path, "/v3/profiles/4242/transfers/1000/payments");
    assert_eq!(fund[0].body, r#"{"type":"BALANCE"}"#);
    // The funding answer came too late; the retry was told the transfer cannot be funded
    // (422), asked for its status and found it funded: paid once.
    assert_eq!(wise.seen("/payments").len(), 2);
    assert_eq!(wise.state.lock().unwrap().funded, [1000]);
    assert_eq!(wise.seen("/v1/transfers/1000").len(), 1);

    // The ledger: approved -> paid (net) and fees, nothing approved left.
    wait_for("paid in the ledger", 10, || {
        balance(&a, addr, P_STRIPE)["paid_minor"] == 1470
    });
    let b = balance(&a, addr, P_STRIPE);
    assert_eq!(
        (b["approved_minor"].as_i64(), b["fees_minor"].as_i64()),
        (Some(0), Some(29))
    );
    let (_, mine, _) = call(&a, addr, "GET", "/api/v1/me/payouts", P_STRIPE, "");
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["items"][0]["fee"], "0.29");

    // A full refund of o-1 after the payout: a negative approved balance (-10.00) that the
    // next run nets against a new sale's 20.00.
    let paid_cv = {
        let (_, v, _) = call(&a, addr, "GET", "/api/v1/me/statement", P_STRIPE, "");
        v["lines"][0]["conversion_id"].as_str().unwrap().to_string()
    };
    let (s, v, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/conversions/{paid_cv}/reverse"),
        MERCHANT,
        r#"{"reason":"refund"}"#,
    );
    assert!(s == 200 || s == 201, "{s} {v}");
    wait_for("the refund in the ledger", 20, || {
        balance(&a, addr, P_STRIPE)["approved_minor"] == -1000
    });
    sale(&a, addr, "LS", "o-6", "200.00");
    wait_for("new sale approved", 20, || {
        balance(&a, addr, P_STRIPE)["approved_minor"] == 1000
    });
    // A second run pays only what is new; nothing is paid twice.
    let (s, _, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!(s, 201);
    wait_for("second stripe payout", 30, || {
        items(&a, addr)
            .iter()
            .filter(|i| i["provider"] == "stripe" && i["status"] == "paid")
            .count()
            == 2
    });
    assert_eq!(
        stripe
            .made()
            .values()
            .map(|(_, f)| f["amount"].clone())
            .collect::<Vec<_>>(),
        vec![json!("1470"), json!("973")],
        "10.00 net of the refund, less 0.25% (2.5 cents, half to even: 2) + 0.25"
    );
    let total_paid: i64 = stripe
        .made()
        .values()
        .map(|(_, f)| f["amount"].as_str().unwrap().parse::<i64>().unwrap())
        .sum();
    let b = balance(&a, addr, P_STRIPE);
    wait_for("second payout in the ledger", 10, || {
        balance(&a, addr, P_STRIPE)["approved_minor"] == 0
    });
    let b2 = balance(&a, addr, P_STRIPE);
    assert_eq!(b2["paid_minor"].as_i64(), Some(total_paid), "{b} {b2}");
    let (_, tb, _) = call(&a, addr, "GET", "/api/v1/ledger/trial-balance", ADMIN, "");
    assert_eq!(tb["currencies"][0]["total_minor"].as_i64(), Some(0), "{tb}");
}

#[test]
fn a_sigkill_between_intent_and_confirmation_pays_once_after_restart() {
    let (stripe, paypal, wise) = (Provider::start(), Provider::start(), Provider::start());
    // The first transfer is made at once but its answer never arrives in time: the server
    // is killed while waiting for it.
    stripe.state.lock().unwrap().stall_first = Some(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    // Long timeout so the request is in flight when the kill comes.
    let cfg = config(
        dir.path(),
        &stripe,
        &paypal,
        &wise,
        &[("timeout-ms = 700", "timeout-ms = 10000")],
    );
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    sale(&a, addr, "LS", "o-1", "100.00");
    wait_for("approved", 20, || {
        balance(&a, addr, P_STRIPE)["approved_minor"] == 1000
    });
    let (s, _, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!(s, 201);
    wait_for("the transfer request", 20, || {
        !stripe.seen("/v1/transfers").is_empty()
    });
    assert_eq!(stripe.made().len(), 1, "the provider made the transfer");
    server.signal(9);
    let (code, _) = server.wait(Duration::from_secs(10));
    assert_eq!(code, None, "killed by a signal");

    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    wait_for("paid after restart", 30, || {
        let it = items(&a, addr);
        it.len() == 1 && it[0]["status"] == "paid"
    });
    assert_eq!(stripe.made().len(), 1, "paid once");
    let keys: std::collections::BTreeSet<_> = stripe
        .seen("/v1/transfers")
        .iter()
        .map(|s| s.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 1, "the retry after restart used the same key");
    assert!(stripe.seen("/v1/transfers").len() >= 2);
    wait_for("paid in the ledger", 10, || {
        balance(&a, addr, P_STRIPE)["paid_minor"] == 973
    });
    // Another run has nothing to pay, and says so.
    let (s, v, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!((s, v["items_created"].as_u64()), (200, Some(0)), "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(items(&a, addr).len(), 1);
    assert_eq!(stripe.made().len(), 1);
}

#[test]
fn admin_approval_cancel_and_payout_hold() {
    let (stripe, paypal, wise) = (Provider::start(), Provider::start(), Provider::start());
    let dir = tempfile::tempdir().unwrap();
    // Batches wait for an admin; the PayPal partner's payouts are on hold.
    let cfg = config(
        dir.path(),
        &stripe,
        &paypal,
        &wise,
        &[
            (
                "schedule = \"manual\"",
                "schedule = \"manual\"\napproval = \"admin\"",
            ),
            (
                "payout-account = \"partner@example.com\"",
                "payout-account = \"partner@example.com\"\npayout-hold = true",
            ),
        ],
    );
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    sale(&a, addr, "LS", "o-1", "100.00");
    sale(&a, addr, "LP", "o-2", "100.00");
    wait_for("approved", 20, || {
        balance(&a, addr, P_STRIPE)["approved_minor"] == 1000
            && balance(&a, addr, P_PAYPAL)["approved_minor"] == 1000
    });
    // Only admins run, approve and cancel; unknown batches and actions are refused.
    let (s, _, _) = call(&a, addr, "POST", "/api/v1/payouts/run", P_STRIPE, "");
    assert_eq!(s, 403);
    let (s, _, _) = call(
        &a,
        addr,
        "POST",
        "/api/v1/payouts/batches/nope/approve",
        ADMIN,
        "",
    );
    assert_eq!(s, 404);

    let (s, _, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!(s, 201);
    wait_for("a proposed item", 20, || items(&a, addr).len() == 1);
    let it = items(&a, addr);
    assert_eq!(it[0]["status"], "proposed");
    assert_eq!(
        it[0]["affiliate_id"], "a-stripe",
        "the held partner is not in the batch"
    );
    let batch = it[0]["batch_id"].as_str().unwrap().to_string();
    let (s, _, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/payouts/batches/{batch}/frobnicate"),
        ADMIN,
        "",
    );
    assert_eq!(s, 404);
    // Cancelled: the money is payable again, nothing reached the provider.
    let (s, _, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/payouts/batches/{batch}/cancel"),
        ADMIN,
        "",
    );
    assert_eq!(s, 202);
    wait_for("cancelled", 20, || {
        items(&a, addr)[0]["status"] == "cancelled"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(stripe.seen("/v1/transfers").is_empty());

    let (s, _, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!(s, 201);
    wait_for("a second batch", 20, || items(&a, addr).len() == 2);
    let second = items(&a, addr)
        .into_iter()
        .find(|i| i["status"] == "proposed")
        .unwrap();
    assert_eq!(second["gross_minor"], 1000);
    let batch = second["batch_id"].as_str().unwrap().to_string();
    let (s, _, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/payouts/batches/{batch}/approve"),
        ADMIN,
        "",
    );
    assert_eq!(s, 202);
    wait_for("paid", 20, || {
        items(&a, addr).iter().any(|i| i["status"] == "paid")
    });
    assert_eq!(stripe.made().len(), 1);
    assert!(
        paypal.seen("/v1/payments/payouts").is_empty(),
        "held partner not paid"
    );
    wait_for("ledger", 10, || {
        balance(&a, addr, P_STRIPE)["paid_minor"] == 973
    });
    assert_eq!(balance(&a, addr, P_PAYPAL)["approved_minor"], 1000);
}

#[test]
fn unsettled_payouts_are_held_for_an_admin_never_retried_blindly() {
    let (stripe, paypal, wise) = (Provider::start(), Provider::start(), Provider::start());
    {
        // The first request pays but its answer comes too late; every later one is refused.
        let mut st = stripe.state.lock().unwrap();
        st.stall_first = Some(Duration::from_millis(1500));
        st.refuse_later = Some(400);
    }
    // Wise never answers in time, and its idempotency window here is one second.
    wise.state.lock().unwrap().stall_first = Some(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &stripe,
        &paypal,
        &wise,
        &[
            (
                "profile-id = \"4242\"",
                "profile-id = \"4242\"\nidempotency-window-s = 1",
            ),
            ("backoff-initial-ms = 200", "backoff-initial-ms = 1500"),
            ("backoff-max-ms = 1000", "backoff-max-ms = 2000"),
        ],
    );
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    sale(&a, addr, "LS", "o-1", "100.00");
    sale(&a, addr, "LW", "o-2", "100.00");
    wait_for("approved", 20, || {
        balance(&a, addr, P_STRIPE)["approved_minor"] == 1000
            && balance(&a, addr, P_WISE)["approved_minor"] == 1000
    });
    let (s, _, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!(s, 201);
    let held = |provider: &str| {
        items(&a, addr)
            .into_iter()
            .find(|i| i["provider"] == provider && i["status"] == "held")
    };
    let t = Instant::now();
    while !(held("stripe").is_some() && held("wise").is_some()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{:#?}\n{}",
            items(&a, addr),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let si = held("stripe").unwrap();
    assert!(
        si["error"].as_str().unwrap().contains("outcome is unknown"),
        "{si}"
    );
    let wi = held("wise").unwrap();
    assert!(
        wi["error"].as_str().unwrap().contains("idempotency window"),
        "{wi}"
    );
    assert_eq!(
        wise.seen("/v1/transfers").len(),
        1,
        "not retried past the window"
    );
    // Held items are not retried and keep their money reserved.
    let stripe_calls = stripe.seen("/v1/transfers").len();
    let (s, v, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!((s, v["items_created"].as_u64()), (200, Some(0)), "{v}");
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(items(&a, addr).len(), 2);
    assert_eq!(stripe.seen("/v1/transfers").len(), stripe_calls);
    // The admin found the Stripe transfer made: marks it paid; the ledger follows.
    let item = si["item_id"].as_str().unwrap();
    let (s, e, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/payouts/items/{item}/paid"),
        ADMIN,
        "{}",
    );
    assert_eq!(s, 400, "{e}");
    let (s, _, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/payouts/items/{item}/paid"),
        P_STRIPE,
        r#"{"provider_ref":"tr_0"}"#,
    );
    assert_eq!(s, 403);
    let (s, _, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/payouts/items/{item}/paid"),
        ADMIN,
        r#"{"provider_ref":"tr_0"}"#,
    );
    assert_eq!(s, 202);
    wait_for("paid in the ledger", 20, || {
        balance(&a, addr, P_STRIPE)["paid_minor"] == 973
    });
    let (s, _, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/payouts/items/{item}/paid"),
        ADMIN,
        r#"{"provider_ref":"tr_0"}"#,
    );
    assert_eq!(s, 409, "a paid item cannot be marked again");
    // The Wise one was not paid after all: the admin cancels it and it is payable again.
    let batch = wi["batch_id"].as_str().unwrap().to_string();
    let (s, _, _) = call(
        &a,
        addr,
        "POST",
        &format!("/api/v1/payouts/batches/{batch}/cancel"),
        ADMIN,
        "",
    );
    assert_eq!(s, 202);
    wait_for("cancelled", 20, || {
        items(&a, addr)
            .iter()
            .any(|i| i["provider"] == "wise" && i["status"] == "cancelled")
    });
    assert_eq!(stripe.made().len(), 1, "only the first request ever paid");
    assert_eq!(balance(&a, addr, P_WISE)["approved_minor"], 1000);
}

#[test]
fn a_cancelled_wise_transfer_or_a_denied_paypal_batch_is_not_taken_as_paid() {
    let (stripe, paypal, wise) = (Provider::start(), Provider::start(), Provider::start());
    // Wise answers funding with 422 `transfer.invalid-state`, which it also says for a
    // transfer funded already: here the transfer was cancelled, and only its status says
    // so. PayPal makes the batch, denies it, and answers after our timeout: the retry is
    // told the batch id was used, and looks the batch up.
    wise.state.lock().unwrap().cancel_transfers = true;
    {
        let mut st = paypal.state.lock().unwrap();
        st.batch_status = Some("DENIED");
        st.stall_first = Some(Duration::from_millis(1500));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &stripe, &paypal, &wise, &[]);
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (a, addr) = (agent(), server.addr);
    sale(&a, addr, "LW", "o-1", "120.00");
    sale(&a, addr, "LP", "o-2", "80.00");
    wait_for("approved", 20, || {
        balance(&a, addr, P_WISE)["approved_minor"] == 1200
            && balance(&a, addr, P_PAYPAL)["approved_minor"] == 800
    });
    let (s, _, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
    assert_eq!(s, 201);
    // A refusal on the first attempt releases the money; after an attempt whose outcome
    // was unknown, the item is held for an admin.
    wait_for("both items settled", 20, || {
        let it = items(&a, addr);
        let status = |p: &str| {
            it.iter()
                .find(|i| i["provider"] == p)
                .map(|i| i["status"].clone())
        };
        status("wise") == Some(json!("cancelled")) && status("paypal") == Some(json!("held"))
    });
    let it = items(&a, addr);
    let error = |p: &str| {
        it.iter().find(|i| i["provider"] == p).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(error("wise").contains("is cancelled"), "{it:?}");
    assert!(error("paypal").contains("DENIED"), "{it:?}");
    assert_eq!(paypal.seen("/v1/payments/payouts").len(), 2);
    assert_eq!(
        paypal.seen("/v1/payments/payouts/PB0").len(),
        1,
        "batch looked up"
    );
    // The transfer's status was asked for; nothing is paid, the money is payable again.
    let lookups: Vec<String> = wise
        .state
        .lock()
        .unwrap()
        .seen
        .iter()
        .map(|s| s.path.clone())
        .filter(|p| p.starts_with("/v1/transfers/"))
        .collect();
    assert_eq!(lookups, ["/v1/transfers/1000"], "one status lookup");
    wait_for("the ledger releases the Wise reservation", 10, || {
        let w = balance(&a, addr, P_WISE);
        w["paid_minor"] == 0 && w["approved_minor"] == 1200
    });
    assert_eq!(balance(&a, addr, P_PAYPAL)["paid_minor"], 0);
}

#[test]
fn two_installations_paying_through_one_account_never_share_idempotency_keys() {
    let (stripe, paypal, wise) = (Provider::start(), Provider::start(), Provider::start());
    // Two data directories with the same configuration, so the same item ids: a wiped
    // and restarted server, or a second program paying through the same accounts. A
    // shared key would make each provider hand back the first payment, and the second
    // installation would count it as paid with nothing paid.
    let mut keys = Vec::new();
    for install in ["one", "two"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &stripe, &paypal, &wise, &[]);
        let data = dir.path().join(install);
        let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
        let (a, addr) = (agent(), server.addr);
        sale(&a, addr, "LS", "o-1", "100.00");
        sale(&a, addr, "LP", "o-2", "80.00");
        sale(&a, addr, "LW", "o-3", "120.00");
        wait_for("approved", 20, || {
            balance(&a, addr, P_WISE)["approved_minor"] == 1200
        });
        let (s, _, _) = call(&a, addr, "POST", "/api/v1/payouts/run", ADMIN, "");
        assert_eq!(s, 201);
        wait_for("paid", 20, || {
            let it = items(&a, addr);
            it.len() == 3 && it.iter().all(|i| i["status"] == "paid")
        });
        let id = std::fs::read_to_string(data.join("installation-id")).unwrap();
        assert_eq!(id.trim().len(), 16, "{id:?}");
        keys.push(id);
    }
    assert_ne!(keys[0], keys[1]);
    for (name, p) in [("stripe", &stripe), ("paypal", &paypal), ("wise", &wise)] {
        assert_eq!(p.made().len(), 2, "{name}: one payment per installation");
    }
    assert_eq!(wise.state.lock().unwrap().funded.len(), 2);
    let stripe_keys: std::collections::BTreeSet<_> = stripe
        .seen("/v1/transfers")
        .iter()
        .map(|s| s.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(stripe_keys.len(), 2);
    assert!(stripe_keys
        .iter()
        .all(|k| keys.iter().any(|i| k.starts_with(i.trim()))));
}
