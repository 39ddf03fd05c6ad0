//! Multi-touch attribution end to end over HTTP: three partners' clicks with one visitor
//! cookie, one conversion, and the ledger splits the commission by the campaign's model
//! exactly; the comparison report re-weighs the same journey under every model; a fit of
//! the data-driven models is a versioned event; a restart credits nothing twice.

mod common;

use common::{agent, api, Server};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const ADMIN: &str = "admin-attr-key-0123456789";
const MERCHANT: &str = "merchant-attr-key-0123456789";
const PARTNER2: &str = "partner-a2-key-0123456789";

fn config(dir: &Path, model: &str) -> PathBuf {
    let text = format!(
        r#"
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[[merchants]]
id = "m1"
name = "One"
[[affiliates]]
id = "a1"
name = "Content site"
[[affiliates]]
id = "a2"
name = "Newsletter"
[[affiliates]]
id = "a3"
name = "Coupons"
[[campaigns]]
id = "c1"
merchant-id = "m1"
name = "C1"
destination-url = "https://one.example/"
attribution-model = "{model}"
[[links]]
code = "L1"
affiliate-id = "a1"
campaign-id = "c1"
[[links]]
code = "L2"
affiliate-id = "a2"
campaign-id = "c1"
[[links]]
code = "L3"
affiliate-id = "a3"
campaign-id = "c1"
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
key = "{MERCHANT}"
[[keys]]
role = "partner"
owner = "a2"
key = "{PARTNER2}"
"#
    );
    let path = dir.join(format!("attribution-{model}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A GET with `key`: (status, JSON answer).
fn get_as(a: &ureq::Agent, addr: SocketAddr, key: &str, path: &str) -> (u16, Value) {
    api(a, addr, "GET", path, Some(key), None, "")
}

/// A JSON POST with `key`: (status, JSON answer).
fn post_as(a: &ureq::Agent, addr: SocketAddr, key: &str, path: &str, body: &str) -> (u16, Value) {
    api(
        a,
        addr,
        "POST",
        path,
        Some(key),
        Some("application/json"),
        body,
    )
}

/// Follows link `code` with the visitor cookie `cookie` (if any): (click id, the cookie
/// the server set).
fn click(a: &ureq::Agent, addr: SocketAddr, code: &str, cookie: Option<&str>) -> (String, String) {
    let mut req = a.get(format!("http://{addr}/c/{code}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.call().unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap();
    let id = loc.split("click_id=").nth(1).unwrap().to_string();
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("ct_vid="))
        .expect("the visitor cookie");
    (id, set)
}

fn balance_minor(a: &ureq::Agent, addr: SocketAddr, affiliate: &str) -> i64 {
    let (s, v) = get_as(
        a,
        addr,
        ADMIN,
        &format!("/api/v1/affiliates/{affiliate}/balance"),
    );
    assert_eq!(s, 200, "{v}");
    v["balances"]
        .as_array()
        .and_then(|b| b.first())
        .map_or(0, |b| b["pending_minor"].as_i64().unwrap())
}

/// Three touches a1, a2, a3 by one visitor, then a conversion matched to the last click.
fn journey_and_sale(a: &ureq::Agent, addr: SocketAddr, order: &str) {
    let (_, cookie) = click(a, addr, "L1", None);
    click(a, addr, "L2", Some(&cookie));
    let (last, _) = click(a, addr, "L3", Some(&cookie));
    let body = format!(
        r#"{{"order_id":"{order}","amount":"123.45","currency":"EUR","click_id":"{last}"}}"#
    );
    let (s, v) = post_as(a, addr, MERCHANT, "/api/v1/conversions", &body);
    assert!(s == 201 || s == 200, "{s} {v}");
}

#[test]
fn position_based_splits_the_commission_over_three_partners_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), "position-based");
    let a = agent();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    journey_and_sale(&a, addr, "o-1");
    // 10% of 123.45 EUR = 12.345, rounded half to even: 12.34 EUR = 1234 cents, split
    // 40/20/40 by largest remainder: 493.6, 246.8, 493.6 -> 493, 246, 493 (+2 cents: to
    // the largest remainders, a2's .8 then a1's .6, the earlier of the tie).
    server.wait_until("the commissions", |s| balance_minor(&a, s.addr, "a3") > 0);
    let got: Vec<i64> = ["a1", "a2", "a3"]
        .iter()
        .map(|x| balance_minor(&a, addr, x))
        .collect();
    assert_eq!(got, [494, 247, 493]);

    // The same journey under every model, side by side.
    let (s, v) = get_as(&a, addr, ADMIN, "/api/v1/attribution/compare?campaign_id=c1&models=last-click,first-click,linear,position-based,markov,shapley");
    assert_eq!(s, 200, "{v}");
    let m = &v["models"];
    let conv = |model: &str, p: &str| m[model]["partners"][p]["conversions"].clone();
    assert_eq!(conv("last-click", "a3"), "1.000000");
    assert_eq!(m["last-click"]["partners"].as_object().unwrap().len(), 1);
    assert_eq!(conv("first-click", "a1"), "1.000000");
    assert_eq!(conv("linear", "a1"), "0.333334");
    assert_eq!(conv("linear", "a2"), "0.333333");
    assert_eq!(conv("position-based", "a2"), "0.200000");
    assert_eq!(
        m["position-based"]["partners"]["a1"]["commission"]["EUR"],
        "4.94"
    );
    assert_eq!(m["linear"]["partners"]["a3"]["revenue"]["EUR"], "41.15");
    // Data-driven models were fitted first (one converting journey: all channels alike).
    assert_eq!(m["markov"]["version"], 1, "{v}");
    assert_eq!(m["shapley"]["version"], 1, "{v}");
    let total: f64 = ["a1", "a2", "a3"]
        .iter()
        .map(|p| conv("markov", p).as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-9);
    assert_eq!(v["journeys"]["converting"], 1);

    // A fit on demand is the next version; the list shows both.
    let (s, f) = post_as(
        &a,
        addr,
        ADMIN,
        "/api/v1/attribution/models/c1/fit",
        r#"{"model":"markov","order":2}"#,
    );
    assert_eq!(s, 201, "{f}");
    assert_eq!(f["models"][0]["version"], 2);
    assert_eq!(f["models"][0]["order"], 2);
    let (s, l) = get_as(&a, addr, ADMIN, "/api/v1/attribution/models/c1");
    assert_eq!(s, 200);
    assert_eq!(l["models"].as_array().unwrap().len(), 3, "{l}");
    // Bad requests change nothing.
    for (path, body, want) in [
        (
            "/api/v1/attribution/models/c1/fit",
            r#"{"model":"linear"}"#,
            400,
        ),
        ("/api/v1/attribution/models/c1/fit", r#"{"order":9}"#, 400),
        ("/api/v1/attribution/models/nope/fit", "", 404),
    ] {
        let (s, _) = post_as(&a, addr, ADMIN, path, body);
        assert_eq!(s, want, "{path} {body}");
    }
    let (s, _) = get_as(
        &a,
        addr,
        ADMIN,
        "/api/v1/attribution/compare?campaign_id=c1&models=magic",
    );
    assert_eq!(s, 400);
    // The partner sees its own credit under the active model.
    let (s, me) = get_as(&a, addr, PARTNER2, "/api/v1/me/attribution");
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["campaigns"][0]["conversions"], "0.200000");
    assert_eq!(me["campaigns"][0]["commission"]["EUR"], "2.47");
    assert_eq!(me["campaigns"][0]["model"], "position-based");
    let (s, _) = get_as(
        &a,
        addr,
        PARTNER2,
        "/api/v1/attribution/compare?campaign_id=c1",
    );
    assert_eq!(s, 403, "a partner cannot compare models");

    // A restart rebuilds the journeys and credits nothing again.
    server.signal(libc::SIGTERM);
    let (code, log) = server.wait(std::time::Duration::from_secs(20));
    assert_eq!(code, Some(0), "{log}");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    server.wait_until("ready", |s| {
        common::get(s.addr, "/readyz").is_ok_and(|r| r.0 == 200)
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let again: Vec<i64> = ["a1", "a2", "a3"]
        .iter()
        .map(|x| balance_minor(&a, addr, x))
        .collect();
    assert_eq!(again, [494, 247, 493]);
    let (_, v) = get_as(
        &a,
        addr,
        ADMIN,
        "/api/v1/attribution/compare?campaign_id=c1&models=last-click",
    );
    assert_eq!(v["journeys"]["converting"], 1, "{v}");
    // A second journey after the restart is credited too.
    journey_and_sale(&a, addr, "o-2");
    server.wait_until("the second commission", |s| {
        balance_minor(&a, s.addr, "a3") == 986
    });
    assert_eq!(balance_minor(&a, addr, "a1"), 988);
    assert_eq!(balance_minor(&a, addr, "a2"), 494);

    // The analyst's export, fitted offline, gives the server's numbers.
    let (s, f) = post_as(
        &a,
        addr,
        ADMIN,
        "/api/v1/attribution/models/c1/fit",
        r#"{"model":"markov","order":1}"#,
    );
    assert_eq!(s, 201, "{f}");
    let server_re = f["models"][0]["removal_effects"].clone();
    server.signal(libc::SIGTERM);
    let (code, log) = server.wait(std::time::Duration::from_secs(20));
    assert_eq!(code, Some(0), "{log}");
    let export = std::process::Command::new(common::BIN)
        .args([
            "attribution",
            "export",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(&data)
        .args(["--campaign", "c1"])
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let csv = String::from_utf8(export.stdout).unwrap();
    assert_eq!(
        csv,
        "path,total_conversions,total_null,total_conversion_value\na1 > a2 > a3,2,0,24690\n"
    );
    let file = dir.path().join("journeys.csv");
    std::fs::write(&file, &csv).unwrap();
    let fit = std::process::Command::new(common::BIN)
        .args([
            "attribution",
            "fit",
            "--model",
            "markov",
            "--json",
            "--journeys",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        fit.status.success(),
        "{}",
        String::from_utf8_lossy(&fit.stderr)
    );
    let offline: Value = serde_json::from_slice(&fit.stdout).unwrap();
    assert_eq!(offline["removal_effects"], server_re);
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = common::get(addr, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn last_click_stays_the_default_and_journeys_show_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), "last-click");
    let a = agent();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    let (_, cookie) = click(&a, addr, "L1", None);
    click(&a, addr, "L2", Some(&cookie));
    server.wait_until("two touches held", |s| {
        metric(s.addr, "clicktrail_attribution_touches") == 2.0
    });
    assert_eq!(metric(addr, "clicktrail_attribution_open_journeys"), 1.0);
    journey_and_sale(&a, addr, "o-1");
    server.wait_until("the commission", |s| balance_minor(&a, s.addr, "a3") > 0);
    assert_eq!(balance_minor(&a, addr, "a3"), 1234);
    assert_eq!(balance_minor(&a, addr, "a1"), 0);
    let v: Value = get_as(
        &a,
        addr,
        MERCHANT,
        "/api/v1/attribution/compare?campaign_id=c1&models=linear",
    )
    .1;
    // The sale's visitor has a new cookie but the same fingerprint (same address and
    // browser, no opt-out) as the first two clicks: one person, five touches. Linear:
    // a1 and a2 2/5 each, a3 1/5.
    assert_eq!(
        v["models"]["linear"]["partners"]["a2"]["conversions"], "0.400000",
        "{v}"
    );
    assert_eq!(
        v["models"]["linear"]["partners"]["a3"]["conversions"], "0.200000",
        "{v}"
    );
}

#[test]
fn a_markov_campaign_is_credited_by_its_first_fitted_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), "markov");
    let a = agent();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let addr = server.addr;
    journey_and_sale(&a, addr, "o-1");
    server.wait_until("the commissions", |s| balance_minor(&a, s.addr, "a3") > 0);
    // Fitted on its own journey first: each channel's removal kills the one path, so
    // the three weigh alike (333,334 / 333,333 / 333,333 ppm of 1234 cents).
    let got: Vec<i64> = ["a1", "a2", "a3"]
        .iter()
        .map(|x| balance_minor(&a, addr, x))
        .collect();
    assert_eq!(got, [412, 411, 411]);
    let (_, me) = get_as(&a, addr, PARTNER2, "/api/v1/me/attribution");
    assert_eq!(me["campaigns"][0]["model"], "markov", "{me}");
    let (_, l) = get_as(&a, addr, ADMIN, "/api/v1/attribution/models/c1");
    assert_eq!(l["models"][0]["version"], 1, "{l}");
    assert_eq!(l["models"][0]["requested_by"], "first-conversion");
    assert_eq!(l["models"][0]["removal_effects"]["a2"], 1.0);
}
