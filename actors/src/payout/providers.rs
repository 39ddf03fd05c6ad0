//! Payout providers, each with its documented request shape and its own idempotency:
//!
//! * **Stripe Connect**: `POST {base}/v1/transfers`, form-encoded (`amount` in minor
//!   units, lower-case `currency`, `destination` account, `transfer_group`, `metadata[..]`),
//!   `Authorization: Bearer <secret key>`, `Idempotency-Key: <item id>`.
//! * **PayPal Payouts**: `POST {base}/v1/oauth2/token` (client credentials), then
//!   `POST {base}/v1/payments/payouts` (JSON: `sender_batch_header.sender_batch_id` = the
//!   item id, one `items[]` entry with a decimal-string `amount.value`), which PayPal
//!   refuses to run twice for one `sender_batch_id`.
//! * **Wise**: `POST {base}/v3/profiles/{profile}/quotes`, `POST {base}/v1/transfers`
//!   (`customerTransactionId`, a UUID derived from the item id, is Wise's idempotency key),
//!   `POST {base}/v3/profiles/{profile}/transfers/{id}/payments` (`{"type":"BALANCE"}`).
//!
//! Every call ends in one of three ways: paid (with the provider's reference), `Retry`
//! (timeout, connection error, 409, 429, 5xx: the outcome is unknown or temporary, so the
//! money stays reserved and the same key is used again) or `Refused` (any other 4xx: the
//! provider says it did not and will not pay this request).

use clicktrail_storage::money;
use clicktrail_storage::schema::{Currency, Money};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Which provider pays a partner.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Stripe,
    Paypal,
    Wise,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Stripe => "stripe",
            ProviderKind::Paypal => "paypal",
            ProviderKind::Wise => "wise",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderKind> {
        match s {
            "stripe" => Some(ProviderKind::Stripe),
            "paypal" => Some(ProviderKind::Paypal),
            "wise" => Some(ProviderKind::Wise),
            _ => None,
        }
    }

    /// Whether `account` looks like an account of this provider.
    pub fn check_account(self, account: &str) -> Result<(), String> {
        let ok = match self {
            ProviderKind::Stripe => {
                account.starts_with("acct_")
                    && account.len() <= 64
                    && account[5..].bytes().all(|b| b.is_ascii_alphanumeric())
            }
            ProviderKind::Paypal => {
                account.len() <= 127
                    && account
                        .split_once('@')
                        .is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
                    && !account.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            ProviderKind::Wise => {
                !account.is_empty()
                    && account.len() <= 20
                    && account.bytes().all(|b| b.is_ascii_digit())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{account:?} is not a {} account ({})",
                self.name(),
                match self {
                    ProviderKind::Stripe => "acct_...",
                    ProviderKind::Paypal => "an e-mail address",
                    ProviderKind::Wise => "a numeric recipient id",
                }
            ))
        }
    }
}

/// A provider's settings: where its API is, its credentials, its fee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub base_url: String,
    /// Stripe secret key; PayPal `client_id:secret`; Wise API token.
    pub credentials: String,
    /// Wise business profile id (unused by the others).
    pub profile_id: String,
    /// Fee: `fee_bps` of the gross amount plus `fee_fixed_minor`, at most `fee_cap_minor`
    /// when that is positive.
    pub fee_bps: u32,
    pub fee_fixed_minor: i64,
    pub fee_cap_minor: i64,
    /// How long the provider remembers an idempotency key (Stripe: 24 hours; PayPal:
    /// `sender_batch_id` for 30 days; Wise: undocumented, taken as 24 hours), less a
    /// margin. Past it an unsettled item is held for an admin, never retried blindly.
    pub idempotency_window: Duration,
}

impl ProviderConfig {
    /// The defaults for `kind`: the live API and its published fee (Stripe Connect: 0.25% +
    /// 0.25 per payout; PayPal Payouts: 2% capped at 1.00 for domestic; Wise: about 0.5%).
    pub fn default_for(kind: ProviderKind) -> ProviderConfig {
        let (base_url, fee_bps, fee_fixed_minor, fee_cap_minor) = match kind {
            ProviderKind::Stripe => ("https://api.stripe.com", 25, 25, 0),
            ProviderKind::Paypal => ("https://api-m.paypal.com", 200, 0, 100),
            ProviderKind::Wise => ("https://api.wise.com", 50, 0, 0),
        };
        let window_h = match kind {
            ProviderKind::Paypal => 29 * 24,
            ProviderKind::Stripe | ProviderKind::Wise => 23,
        };
        ProviderConfig {
            base_url: base_url.into(),
            credentials: String::new(),
            profile_id: String::new(),
            fee_bps,
            fee_fixed_minor,
            fee_cap_minor,
            idempotency_window: Duration::from_secs(window_h * 3600),
        }
    }

    /// The fee for paying out `gross` (minor units), rounded half to even.
    pub fn fee(&self, gross: i64) -> i64 {
        let fee = crate::ledger::commission::percent_of(gross, self.fee_bps) + self.fee_fixed_minor;
        if self.fee_cap_minor > 0 {
            fee.min(self.fee_cap_minor)
        } else {
            fee
        }
    }
}

/// What a provider call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Paid(String),
    Retry(String),
    Refused(String),
}

/// One payment to make.
#[derive(Debug, Clone)]
pub struct Payment<'a> {
    pub item_id: &'a str,
    /// The idempotency key of every call for this item (see
    /// [`super::PayoutConfig::idempotency_key`]).
    pub key: &'a str,
    pub batch_id: &'a str,
    pub affiliate_id: &'a str,
    pub destination: &'a str,
    /// What the partner receives (gross less fee), minor units.
    pub net: Money,
}

/// The HTTP agent for provider calls: no redirects, statuses as values, no proxy from the
/// environment.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into()
}

/// RFC 4648 base64 (for HTTP Basic credentials).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `application/x-www-form-urlencoded` value encoding.
fn form(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A UUID (version 5 layout) derived from `name`: Wise's `customerTransactionId` must be a
/// UUID, and the same item must always give the same one.
pub fn uuid_for(name: &str) -> String {
    let h = Sha256::digest(format!("clicktrail-payout:{name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Decimal text of an amount (`"12.34"`, `"1234"` for JPY): PayPal and Wise take decimals.
pub fn decimal(m: &Money) -> String {
    money::format(m)
}

struct Reply {
    status: u16,
    body: Value,
}

fn send(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, String)],
    content_type: &str,
    body: String,
) -> Result<Reply, String> {
    let mut req = agent.post(url).header("Content-Type", content_type);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    reply(req.send(body))
}

/// A status lookup: GETs `url` and lets `decide` read the JSON of a 200; anything else
/// (no answer, another status) says nothing yet, so the item is tried again.
fn look_up(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, String)],
    what: &str,
    decide: impl FnOnce(&Value) -> Outcome,
) -> Outcome {
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    match reply(req.call()) {
        Err(e) => Outcome::Retry(format!("{what}: {e}")),
        Ok(r) if r.status == 200 => decide(&r.body),
        Ok(r) => Outcome::Retry(format!("{what}: {} {}", r.status, short(&r.body))),
    }
}

/// Status and JSON body (`Null` when it is not JSON) of an answer, read up to 1 MiB.
fn reply(answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, String> {
    match answer {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default();
            Ok(Reply {
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// What an unsuccessful reply means: retry for unknown or temporary outcomes, refused for
/// a definite no.
fn failure(provider: &str, status: u16, body: &Value) -> Outcome {
    let why = format!("{provider} answered {status}: {}", short(body));
    if status == 409 || status == 429 || status >= 500 {
        Outcome::Retry(why)
    } else {
        Outcome::Refused(why)
    }
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Pays `p` through `kind`.
pub fn pay(
    agent: &ureq::Agent,
    kind: ProviderKind,
    c: &ProviderConfig,
    p: &Payment<'_>,
) -> Outcome {
    let base = c.base_url.trim_end_matches('/');
    match kind {
        ProviderKind::Stripe => stripe(agent, base, c, p),
        ProviderKind::Paypal => paypal(agent, base, c, p),
        ProviderKind::Wise => wise(agent, base, c, p),
    }
}

fn stripe(agent: &ureq::Agent, base: &str, c: &ProviderConfig, p: &Payment<'_>) -> Outcome {
    let body = [
        ("amount", p.net.amount_minor.to_string()),
        ("currency", p.net.currency.as_str().to_ascii_lowercase()),
        ("destination", p.destination.to_string()),
        ("transfer_group", p.batch_id.to_string()),
        ("description", format!("clicktrail payout {}", p.item_id)),
        ("metadata[item_id]", p.item_id.to_string()),
        ("metadata[affiliate_id]", p.affiliate_id.to_string()),
    ]
    .iter()
    .map(|(k, v)| format!("{}={}", form(k), form(v)))
    .collect::<Vec<_>>()
    .join("&");
    let headers = [
        ("Authorization", format!("Bearer {}", c.credentials)),
        ("Idempotency-Key", p.key.to_string()),
    ];
    match send(
        agent,
        &format!("{base}/v1/transfers"),
        &headers,
        "application/x-www-form-urlencoded",
        body,
    ) {
        Err(e) => Outcome::Retry(format!("stripe: {e}")),
        Ok(r) if (200..300).contains(&r.status) => match r.body["id"].as_str() {
            Some(id) => Outcome::Paid(id.to_string()),
            None => Outcome::Retry(format!("stripe: no transfer id in {}", short(&r.body))),
        },
        // Same key, different parameters: our request for this item changed, which must
        // never happen; keep the money reserved and say so rather than guess.
        Ok(r) if r.body["error"]["type"] == "idempotency_error" => {
            Outcome::Retry(format!("stripe idempotency error: {}", short(&r.body)))
        }
        Ok(r) => failure("stripe", r.status, &r.body),
    }
}

fn paypal(agent: &ureq::Agent, base: &str, c: &ProviderConfig, p: &Payment<'_>) -> Outcome {
    let token = match send(
        agent,
        &format!("{base}/v1/oauth2/token"),
        &[(
            "Authorization",
            format!("Basic {}", base64(c.credentials.as_bytes())),
        )],
        "application/x-www-form-urlencoded",
        "grant_type=client_credentials".into(),
    ) {
        Err(e) => return Outcome::Retry(format!("paypal token: {e}")),
        Ok(r) if r.status == 200 => match r.body["access_token"].as_str() {
            Some(t) => t.to_string(),
            None => return Outcome::Retry("paypal token: no access_token".into()),
        },
        // Without a token nothing was paid; the item stays reserved until it can be tried.
        Ok(r) => return Outcome::Retry(format!("paypal token: {} {}", r.status, short(&r.body))),
    };
    let body = serde_json::json!({
        "sender_batch_header": {
            "sender_batch_id": p.key,
            "email_subject": "You have a payout",
            "recipient_type": "EMAIL",
        },
        "items": [{
            "recipient_type": "EMAIL",
            "amount": { "value": decimal(&p.net), "currency": p.net.currency.as_str() },
            "receiver": p.destination,
            // 36 characters however long the affiliate id (PayPal bounds this field), stable.
            "sender_item_id": uuid_for(p.key),
            "note": format!("clicktrail payout {}", p.item_id),
        }],
    });
    match send(
        agent,
        &format!("{base}/v1/payments/payouts"),
        // No `PayPal-Request-Id`: PayPal would answer a retry with the first answer (often
        // `PENDING`) for 30 days. The used `sender_batch_id` makes it answer 400 with a
        // link to the batch instead, whose status then settles the item.
        &[("Authorization", format!("Bearer {token}"))],
        "application/json",
        body.to_string(),
    ) {
        Err(e) => Outcome::Retry(format!("paypal: {e}")),
        Ok(r) if (200..300).contains(&r.status) => paypal_batch_outcome(&r.body),
        // The batch id was used: an earlier attempt of this item made a batch. Whether that
        // one pays is in its status; without its id, only a person can tell.
        Ok(r) if r.status == 400 => match duplicate_batch(&r.body) {
            None => failure("paypal", r.status, &r.body),
            Some(None) => Outcome::Refused(format!(
                "paypal: sender_batch_id used already, by a batch it does not name: {}",
                short(&r.body)
            )),
            Some(Some(batch)) => look_up(
                agent,
                &format!("{base}/v1/payments/payouts/{batch}"),
                &[("Authorization", format!("Bearer {token}"))],
                &format!("paypal batch {batch}"),
                paypal_batch_outcome,
            ),
        },
        Ok(r) => failure("paypal", r.status, &r.body),
    }
}

/// A PayPal payout batch (one item each): paid once the batch is `SUCCESS`; refused when
/// it is `DENIED` or `CANCELED`, or its item failed, was blocked, returned, refunded or
/// reversed; `PENDING` or `PROCESSING` is not settled yet: the item is tried again (with
/// its backoff), which finds the batch through its `sender_batch_id` and asks its status.
/// An item `UNCLAIMED` in a `SUCCESS` batch counts as paid; its return 30 days later, if
/// the receiver never claims it, is not followed.
fn paypal_batch_outcome(body: &Value) -> Outcome {
    let header = &body["batch_header"];
    let item = body["items"][0]["transaction_status"].as_str();
    if let Some(s @ ("FAILED" | "BLOCKED" | "RETURNED" | "REFUNDED" | "REVERSED")) = item {
        return Outcome::Refused(format!("paypal item {s}: {}", short(body)));
    }
    match (
        header["payout_batch_id"].as_str(),
        header["batch_status"].as_str(),
    ) {
        (Some(_), Some(s @ ("DENIED" | "CANCELED"))) => {
            Outcome::Refused(format!("paypal batch {s}: {}", short(body)))
        }
        (Some(id), Some("SUCCESS")) => Outcome::Paid(id.to_string()),
        (Some(id), Some(s @ ("PENDING" | "PROCESSING"))) => {
            Outcome::Retry(format!("paypal batch {id} is {s}: not settled yet"))
        }
        _ => Outcome::Retry(format!("paypal: unclear batch {}", short(body))),
    }
}

/// `Some` when PayPal says the `sender_batch_id` was used already, with the earlier batch's
/// id when its link names one (`.../payouts/<id>`, letters, digits, `-` or `_`).
fn duplicate_batch(body: &Value) -> Option<Option<String>> {
    let d = body["details"].as_array()?.iter().find(|d| {
        d["field"]
            .as_str()
            .is_some_and(|f| f.eq_ignore_ascii_case("sender_batch_id"))
    })?;
    let href = d["link"]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|l| l["href"].as_str());
    let id = href
        .map(|h| h.split(['?', '#']).next().unwrap_or(h))
        .and_then(|h| h.split('/').skip_while(|seg| *seg != "payouts").nth(1))
        .filter(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    Some(id.map(str::to_string))
}

fn wise(agent: &ureq::Agent, base: &str, c: &ProviderConfig, p: &Payment<'_>) -> Outcome {
    let auth = [("Authorization", format!("Bearer {}", c.credentials))];
    let currency = p.net.currency.as_str();
    // The amount is written as a JSON number from its exact decimal text (never a float).
    let quote_body = format!(
        r#"{{"sourceCurrency":"{currency}","targetCurrency":"{currency}","sourceAmount":{},"targetAccount":{},"payOut":"BALANCE","preferredPayIn":"BALANCE"}}"#,
        decimal(&p.net),
        p.destination
    );
    let quote = match send(
        agent,
        &format!("{base}/v3/profiles/{}/quotes", c.profile_id),
        &auth,
        "application/json",
        quote_body,
    ) {
        Err(e) => return Outcome::Retry(format!("wise quote: {e}")),
        Ok(r) if (200..300).contains(&r.status) => match r.body["id"].as_str() {
            Some(id) => id.to_string(),
            None => return Outcome::Retry("wise quote: no id".into()),
        },
        Ok(r) => return failure("wise quote", r.status, &r.body),
    };
    let transfer_body = serde_json::json!({
        "targetAccount": p.destination.parse::<u64>().unwrap_or(0),
        "quoteUuid": quote,
        "customerTransactionId": uuid_for(p.key),
        "details": { "reference": format!("payout {}", p.batch_id) },
    });
    let transfer = match send(
        agent,
        &format!("{base}/v1/transfers"),
        &auth,
        "application/json",
        transfer_body.to_string(),
    ) {
        Err(e) => return Outcome::Retry(format!("wise transfer: {e}")),
        Ok(r) if (200..300).contains(&r.status) => match r.body["id"].as_u64() {
            Some(id) => id,
            None => return Outcome::Retry("wise transfer: no id".into()),
        },
        Ok(r) => return failure("wise transfer", r.status, &r.body),
    };
    match send(
        agent,
        &format!(
            "{base}/v3/profiles/{}/transfers/{transfer}/payments",
            c.profile_id
        ),
        &auth,
        "application/json",
        r#"{"type":"BALANCE"}"#.into(),
    ) {
        Err(e) => Outcome::Retry(format!("wise funding: {e}")),
        Ok(r) if (200..300).contains(&r.status) => match r.body["status"].as_str() {
            Some("COMPLETED") => Outcome::Paid(transfer.to_string()),
            Some("REJECTED") => Outcome::Refused(format!("wise funding: {}", short(&r.body))),
            // Anything else (an unreadable body) says nothing for sure: ask again.
            _ => Outcome::Retry(format!("wise funding: {}", short(&r.body))),
        },
        // Not fundable: funded by an earlier attempt of this item, or cancelled or
        // refunded at Wise. Only the transfer's status tells which.
        Ok(r) if r.status == 422 && r.body.to_string().contains("transfer.invalid-state") => {
            wise_transfer_outcome(agent, base, &auth, transfer)
        }
        Ok(r) => failure("wise funding", r.status, &r.body),
    }
}

/// What the status of Wise transfer `transfer` says about its payment: funded and on its
/// way (paid), ended without paying (refused), or not funded yet (retried: the retry
/// funds the same transfer, which `customerTransactionId` brings back).
fn wise_transfer_outcome(
    agent: &ureq::Agent,
    base: &str,
    auth: &[(&str, String)],
    transfer: u64,
) -> Outcome {
    let what = format!("wise transfer {transfer}");
    let url = format!("{base}/v1/transfers/{transfer}");
    look_up(agent, &url, auth, &what, |body| {
        match body["status"].as_str() {
            Some("processing" | "funds_converted" | "outgoing_payment_sent") => {
                Outcome::Paid(transfer.to_string())
            }
            // Ended without paying. (`bounced_back` is on its way to one of these, and may
            // still be sent again: asked again later, like any state in between.)
            Some(s @ ("cancelled" | "funds_refunded")) => {
                Outcome::Refused(format!("{what} is {s}"))
            }
            _ => Outcome::Retry(format!("{what}: {}", short(body))),
        }
    })
}

/// Fee and net for paying `gross` through `c`.
pub fn split_fee(c: &ProviderConfig, gross: Money) -> (i64, Money) {
    let fee = c.fee(gross.amount_minor);
    (
        fee,
        Money {
            amount_minor: gross.amount_minor - fee,
            currency: Currency(gross.currency.0),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_encodings_and_ids() {
        let stripe = ProviderConfig::default_for(ProviderKind::Stripe);
        // 0.25% of 100.00 = 0.25, plus 0.25.
        assert_eq!(stripe.fee(10_000), 50);
        // 0.25% of 10.10 is 2.525 cents: above the half, so 3, plus 25.
        assert_eq!(stripe.fee(1010), 28);
        let paypal = ProviderConfig::default_for(ProviderKind::Paypal);
        assert_eq!(paypal.fee(1000), 20);
        assert_eq!(paypal.fee(1_000_000), 100, "capped");
        assert_eq!(base64(b"id:secret"), "aWQ6c2VjcmV0");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(form("a b&c=d[x]"), "a+b%26c%3Dd%5Bx%5D");
        let u = uuid_for("b000001-a-EUR");
        assert_eq!(u, uuid_for("b000001-a-EUR"));
        assert_ne!(u, uuid_for("b000001-b-EUR"));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5");
        assert!(ProviderKind::Stripe.check_account("acct_1Abc").is_ok());
        assert!(ProviderKind::Stripe.check_account("acct_1Abc&x=1").is_err());
        assert!(ProviderKind::Paypal.check_account("p@example.com").is_ok());
        assert!(ProviderKind::Paypal.check_account("nobody").is_err());
        assert!(ProviderKind::Wise.check_account("12345").is_ok());
        assert!(ProviderKind::Wise.check_account("12a").is_err());
    }

    #[test]
    fn paypal_answers_map_to_outcomes() {
        use serde_json::json;
        let dup = |href: Option<&str>| {
            let link = href.map_or(json!([]), |h| json!([{"href": h, "rel": "self"}]));
            duplicate_batch(&json!({"details": [{"field": "SENDER_BATCH_ID", "link": link}]}))
        };
        let batch = "https://api-m.paypal.com/v1/payments/payouts/PB12_x-Y";
        assert_eq!(dup(Some(batch)), Some(Some("PB12_x-Y".into())));
        assert_eq!(
            dup(Some(&format!("{batch}?fields=x"))),
            Some(Some("PB12_x-Y".into()))
        );
        assert_eq!(
            dup(Some(&format!("{batch}/"))),
            Some(Some("PB12_x-Y".into()))
        );
        // No link, no id after `payouts`, or one that is not a plain id: used, batch unknown.
        assert_eq!(dup(None), Some(None));
        assert_eq!(
            dup(Some("https://api-m.paypal.com/v1/payments/payouts/")),
            Some(None)
        );
        assert_eq!(
            dup(Some("https://x/v1/payments/payouts/a%2F..")),
            Some(None)
        );
        assert_eq!(
            duplicate_batch(&json!({"details": [{"field": "amount"}]})),
            None
        );

        let answer = |batch: &str, item: Option<&str>| {
            let mut v = json!({"batch_header": {"payout_batch_id": "PB1", "batch_status": batch}});
            if let Some(i) = item {
                v["items"] = json!([{"transaction_status": i}]);
            }
            paypal_batch_outcome(&v)
        };
        assert_eq!(answer("SUCCESS", None), Outcome::Paid("PB1".into()));
        for s in ["PENDING", "PROCESSING"] {
            assert!(matches!(answer(s, None), Outcome::Retry(_)), "{s}");
        }
        assert_eq!(
            answer("SUCCESS", Some("UNCLAIMED")),
            Outcome::Paid("PB1".into())
        );
        for s in ["DENIED", "CANCELED"] {
            assert!(matches!(answer(s, None), Outcome::Refused(_)), "{s}");
        }
        for i in ["FAILED", "BLOCKED", "RETURNED", "REFUNDED", "REVERSED"] {
            assert!(
                matches!(answer("SUCCESS", Some(i)), Outcome::Refused(_)),
                "{i}"
            );
        }
        assert!(matches!(answer("WHATEVER", None), Outcome::Retry(_)));
        assert!(matches!(
            paypal_batch_outcome(&json!({})),
            Outcome::Retry(_)
        ));
    }
}
