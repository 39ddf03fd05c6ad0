//! The click edge, black-box over real sockets: a real HTTP client follows the 302 to a real
//! landing server on 127.0.0.1; cookies, caching and `Location` are checked; the journal
//! holds exactly the clicks that got a 302; bad input of every kind gets a clear 4xx (or a
//! safe redirect) and records nothing; a SIGKILL mid-stream loses no acknowledged click.

mod common;

use clicktrail_storage::schema::{Click, Impression};
use clicktrail_storage::{Journal, JournalConfig, RecordExt};
use common::{agent, get, Server};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: &str = "test-admin-key-0123456789";
const PARTNER_A1: &str = "test-partner-key-a1-0123";

/// A landing page server on 127.0.0.1 that records the request target of every request.
struct Landing {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Landing {
    fn start() -> Landing {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                if let Some(target) = text.split(' ').nth(1) {
                    s.lock().unwrap().push(target.to_string());
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nlanding",
                );
            }
        });
        Landing { addr, seen }
    }
}

fn write_config(dir: &Path, landing: SocketAddr, queue_max: usize) -> PathBuf {
    let text = format!(
        r#"
[node]
demo = false
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[actors]
ingest-shards = 2
ingest-queue-max = {queue_max}
[[merchants]]
id = "m1"
name = "Merchant One"
[[affiliates]]
id = "a1"
name = "Affiliate One"
[[affiliates]]
id = "a2"
name = "Affiliate Two"
[[campaigns]]
id = "local"
merchant-id = "m1"
name = "Local"
destination-url = "http://{landing}/landing?src=ct#top"
deep-link-hosts = ["127.0.0.1", ".shop.example"]
cookie-window-days = 7
[[campaigns]]
id = "paused"
merchant-id = "m1"
name = "Paused"
destination-url = "http://{landing}/paused-dest"
status = "paused"
fallback-url = "http://{landing}/fallback"
[[links]]
code = "L1"
affiliate-id = "a1"
campaign-id = "local"
sub-ids = ["", "default2"]
[[links]]
code = "L2"
affiliate-id = "a2"
campaign-id = "local"
[[links]]
code = "P1"
affiliate-id = "a1"
campaign-id = "paused"
[[keys]]
role = "admin"
owner = "admin"
key = "{ADMIN}"
[[keys]]
role = "partner"
owner = "a1"
key = "{PARTNER_A1}"
"#
    );
    let path = dir.join("clicktrail.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A landing server, a configuration pointing at it, and clicktrail running on it.
struct Fixture {
    _dir: tempfile::TempDir,
    landing: Landing,
    config: PathBuf,
    data: PathBuf,
    server: Server,
}

fn start(queue_max: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let landing = Landing::start();
    let config = write_config(dir.path(), landing.addr, queue_max);
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    Fixture {
        _dir: dir,
        landing,
        config,
        data,
        server,
    }
}

struct Reply {
    status: u16,
    location: Option<String>,
    cookies: Vec<String>,
    cache_control: Option<String>,
    retry_after: Option<String>,
    body: String,
}

fn call(agent: &ureq::Agent, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent.get(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let mut resp = req.call().unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (location, cache_control, retry_after) =
        (h("location"), h("cache-control"), h("retry-after"));
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        location,
        cookies,
        cache_control,
        retry_after,
        body,
    }
}

/// Every click and impression in the ingest partitions (read with the server stopped).
fn journal_events(data: &Path) -> (Vec<Click>, Vec<Impression>) {
    let journal = Journal::open(data, JournalConfig::default()).unwrap();
    let (mut clicks, mut imps) = (Vec::new(), Vec::new());
    for p in journal
        .partitions()
        .iter()
        .filter(|p| p.name().starts_with("ingest-"))
    {
        let mut r = p.reader().unwrap();
        while let Some(rec) = r.next().unwrap() {
            if let Some(c) = rec.to_owned_event::<Click>() {
                clicks.push(c);
            } else if let Some(i) = rec.to_owned_event::<Impression>() {
                imps.push(i);
            }
        }
    }
    journal.close().unwrap();
    (clicks, imps)
}

fn click_id_of(location: &str) -> String {
    let q = location.split_once('?').unwrap().1;
    let q = q.split('#').next().unwrap();
    q.split('&')
        .find_map(|kv| kv.strip_prefix("click_id="))
        .unwrap()
        .to_string()
}

/// A raw request for what an HTTP client refuses to send.
fn raw(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn clicks_redirect_set_cookies_and_are_journaled_exactly() {
    let Fixture {
        _dir,
        landing,
        config: _,
        data,
        server,
    } = start(4096);
    let addr = server.addr;
    let a = agent();
    let mut acknowledged: Vec<String> = Vec::new();

    // A real client follows the redirect to the landing page.
    let follow: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(3)
        .build()
        .into();
    let mut landed = follow
        .get(format!(
            "http://{addr}/c/L1?sub1=s%201&utm_source=news&utm_medium=mail&ignored=1"
        ))
        .call()
        .unwrap();
    assert_eq!(landed.body_mut().read_to_string().unwrap(), "landing");
    let target = landing.seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        target.starts_with("/landing?src=ct&utm_source=news&utm_medium=mail&click_id="),
        "{target}"
    );
    acknowledged.push(click_id_of(&target));

    // Location, cookies and caching, without following.
    let r = call(
        &a,
        addr,
        "/c/L1?sub3=x",
        &[("user-agent", "Mozilla/5.0 test")],
    );
    assert_eq!(r.status, 302);
    let loc = r.location.clone().unwrap();
    assert!(
        loc.starts_with(&format!("http://{}/landing?src=ct&click_id=", landing.addr)),
        "{loc}"
    );
    assert!(loc.ends_with("#top"), "fragment kept: {loc}");
    assert_eq!(r.cache_control.as_deref(), Some("no-store"));
    let vid = r
        .cookies
        .iter()
        .find(|c| c.starts_with("ct_vid="))
        .expect("visitor cookie");
    for attr in [
        "Max-Age=604800",
        "Path=/",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
    ] {
        assert!(vid.contains(attr), "{vid} lacks {attr}");
    }
    let cid = r
        .cookies
        .iter()
        .find(|c| c.starts_with("ct_cid="))
        .expect("click cookie");
    assert!(cid.starts_with(&format!("ct_cid={};", click_id_of(&loc))));
    acknowledged.push(click_id_of(&loc));
    let visitor = vid.split(';').next().unwrap().to_string();

    // The returning visitor keeps its id; opt-out drops the fingerprint.
    let r = call(&a, addr, "/c/L1", &[("cookie", &visitor), ("sec-gpc", "1")]);
    assert_eq!(r.status, 302);
    assert!(r
        .cookies
        .iter()
        .any(|c| c.starts_with(&format!("{visitor};"))));
    acknowledged.push(click_id_of(r.location.as_ref().unwrap()));

    // Allowed deep link (subdomain rule), refused deep links go to the default destination.
    let r = call(
        &a,
        addr,
        "/c/L2?url=https%3A%2F%2Fwww.shop.example%2Fitem%3Fid%3D9",
        &[],
    );
    assert!(r
        .location
        .as_ref()
        .unwrap()
        .starts_with("https://www.shop.example/item?id=9&click_id="));
    acknowledged.push(click_id_of(r.location.as_ref().unwrap()));
    for bad in [
        "https%3A%2F%2Fevil.example%2F",
        "javascript%3Aalert(1)",
        "data%3Atext%2Fhtml%2C%3Cscript%3E",
        "https%3A%2F%2Fshop.example%40evil.example%2F",
        "%2F%2Fevil.example",
    ] {
        let r = call(&a, addr, &format!("/c/L1?url={bad}"), &[]);
        assert_eq!(r.status, 302, "{bad}");
        let loc = r.location.unwrap();
        assert!(
            loc.starts_with(&format!("http://{}/landing?", landing.addr)),
            "{bad} -> {loc}"
        );
        acknowledged.push(click_id_of(&loc));
    }

    // Impressions: a no-store pixel, recorded.
    let r = call(&a, addr, "/i/L2", &[]);
    assert_eq!(
        (r.status, r.cache_control.as_deref()),
        (200, Some("no-store"))
    );

    // Refusals record nothing.
    let r = call(&a, addr, "/c/P1", &[]);
    assert_eq!(
        r.location.as_deref(),
        Some(format!("http://{}/fallback", landing.addr).as_str())
    );
    assert!(r.cookies.is_empty(), "paused: nothing tracked");
    let long = format!("/c/L1?sub1={}", "x".repeat(5000));
    let big_header = "y".repeat(20_000);
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        ("/c/nope".into(), vec![], 404),
        ("/c/bad%20code".into(), vec![], 404),
        ("/c/..%2F..%2Fetc".into(), vec![], 404),
        (long, vec![], 414),
        ("/c/L1".into(), vec![("x-big", big_header.as_str())], 431),
        ("/c/L1?sub1=%zz".into(), vec![], 400),
        ("/c/L1?sub1=%C3%28".into(), vec![], 400),
        ("/c/L1?sub1=a&sub1=b".into(), vec![], 400),
        ("/c/L1?sub2=a%0D%0ASet-Cookie:%20x=1".into(), vec![], 400),
        (format!("/c/L1?sub4={}", "z".repeat(300)), vec![], 400),
        ("/i/nope".into(), vec![], 404),
        // The tracking scopes match whole segments only.
        ("/c".into(), vec![], 404),
        ("/c/".into(), vec![], 404),
        ("/cL1".into(), vec![], 404),
        ("/c/L1/extra".into(), vec![], 404),
    ];
    for (path, headers, want) in &cases {
        let r = call(&a, addr, path, headers);
        assert_eq!(r.status, *want, "{}", &path[..path.len().min(60)]);
        assert!(r.location.is_none());
        assert!(r.cookies.is_empty());
    }
    // More headers than any browser sends, invalid UTF-8 in the path: clear 4xx from the
    // HTTP layer, the server keeps serving.
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = raw(
        addr,
        format!("GET /c/L1 HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert!((400..500).contains(&status), "{status}");
    let status = raw(addr, b"GET /c/L\xff1?sub1=\xfe HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(get(addr, "/healthz").unwrap().0, 200);

    // Live counters through the API, scoped by key.
    server.wait_until("stats", |s| {
        let r = call(
            &a,
            s.addr,
            "/api/v1/stats?by=affiliate",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        );
        r.body.contains("\"clicks\":8") && r.body.contains("\"clicks\":1")
    });
    let r = call(
        &a,
        addr,
        "/api/v1/me/stats?by=sub1",
        &[("authorization", &format!("Bearer {PARTNER_A1}"))],
    );
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["rows"][0]["key"], "s 1");
    assert_eq!(v["rows"][0]["affiliate_id"], "a1");
    let r = call(
        &a,
        addr,
        "/api/v1/me/stats?by=sub2",
        &[("authorization", &format!("Bearer {PARTNER_A1}"))],
    );
    assert!(
        r.body.contains("default2"),
        "link default sub-ids apply: {}",
        r.body
    );
    let r = call(
        &a,
        addr,
        "/api/v1/me/stats?by=affiliate",
        &[("authorization", &format!("Bearer {PARTNER_A1}"))],
    );
    assert!(
        !r.body.contains("\"a2\""),
        "a partner sees only its own numbers: {}",
        r.body
    );
    assert_eq!(call(&a, addr, "/api/v1/stats", &[]).status, 401);
    assert_eq!(
        call(
            &a,
            addr,
            "/api/v1/stats",
            &[("authorization", "Bearer wrong")]
        )
        .status,
        401
    );
    assert_eq!(
        call(
            &a,
            addr,
            "/api/v1/stats",
            &[("authorization", &format!("Bearer {PARTNER_A1}"))]
        )
        .status,
        403
    );
    assert_eq!(
        call(
            &a,
            addr,
            "/api/v1/stats?by=nope",
            &[("authorization", &format!("Bearer {ADMIN}"))]
        )
        .status,
        400
    );

    let (_, metrics) = get(addr, "/metrics").unwrap();
    assert!(metrics.contains("clicktrail_clicks_total 9"), "{metrics}");
    assert!(metrics.contains("clicktrail_deep_links_refused_total 5"));
    assert!(metrics.contains("clicktrail_bad_requests_total{cause=\"repeated_param\"} 1"));
    assert!(metrics.contains("clicktrail_redirect_duration_seconds_bucket{le=\"+Inf\"}"));
    // The recent-click index reaches the clicks (its reader runs behind the edge) and says
    // how far back it reaches.
    let gauge = |m: &str, name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {m}"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, m) = get(addr, "/metrics").unwrap();
        if gauge(&m, "clicktrail_click_index_clicks") == 9.0 {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        gauge(&metrics, "clicktrail_click_index_capacity"),
        200_000.0
    );
    let span = gauge(&metrics, "clicktrail_click_index_span_seconds");
    assert!(span > 0.0 && span < 600.0, "span {span}");

    server.signal(libc::SIGTERM);
    let (code, log) = server.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{log}");

    // The journal holds exactly the clicks that got a 302, once each.
    let (clicks, imps) = journal_events(&data);
    let journaled: Vec<String> = clicks.iter().map(|c| c.click_id.clone()).collect();
    let mut want = acknowledged.clone();
    let mut got = journaled.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(imps.len(), 1);
    let first = clicks
        .iter()
        .find(|c| c.click_id == acknowledged[0])
        .unwrap();
    assert_eq!(first.sub_ids, vec!["s 1", "default2", "", "", ""]);
    assert_eq!(first.utm.len(), 2);
    assert_eq!(
        (first.affiliate_id.as_str(), first.campaign_id.as_str()),
        ("a1", "local")
    );
    assert_eq!(first.ip, "127.0.0.1");
    let tracked = clicks
        .iter()
        .find(|c| c.click_id == acknowledged[1])
        .unwrap();
    assert_eq!(tracked.user_agent, "Mozilla/5.0 test");
    assert!(tracked.fingerprint.is_some() && !tracked.opted_out);
    let opted = clicks
        .iter()
        .find(|c| c.click_id == acknowledged[2])
        .unwrap();
    assert!(opted.opted_out && opted.fingerprint.is_none());
    assert_eq!(
        opted.visitor_id.as_deref(),
        Some(&visitor["ct_vid=".len()..])
    );
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_click() {
    let Fixture {
        _dir,
        landing: _,
        config,
        data,
        server,
    } = start(4096);
    let addr = server.addr;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let a = agent();
                // Until the server dies: every 302 received is an acknowledged click.
                for _ in 0..100_000 {
                    let Ok(resp) = a.get(format!("http://{addr}/c/L1?sub1=k")).call() else {
                        break;
                    };
                    if resp.status() == 302 {
                        let loc = resp.headers()["location"].to_str().unwrap().to_string();
                        acked.lock().unwrap().push(click_id_of(&loc));
                    }
                }
            })
        })
        .collect();
    server.wait_until("some clicks", |_| acked.lock().unwrap().len() > 300);
    server.signal(libc::SIGKILL);
    let (code, _) = server.wait(Duration::from_secs(10));
    assert_eq!(code, None);
    for c in clients {
        c.join().unwrap();
    }
    // Restart on the same data: recovery keeps everything, and the server serves again.
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let a = agent();
    let r = call(&a, server.addr, "/c/L1", &[]);
    assert_eq!(r.status, 302);
    let after = click_id_of(r.location.as_ref().unwrap());
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let (clicks, _) = journal_events(&data);
    let journaled: HashSet<String> = clicks.iter().map(|c| c.click_id.clone()).collect();
    let acked = acked.lock().unwrap();
    let missing: Vec<_> = acked.iter().filter(|id| !journaled.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged clicks lost",
        missing.len(),
        acked.len()
    );
    assert!(journaled.contains(&after));
    assert_eq!(journaled.len(), clicks.len(), "no click recorded twice");
}

#[test]
fn a_full_ingest_queue_answers_503_with_retry_after_and_records_nothing() {
    let Fixture {
        _dir,
        landing: _,
        config: _,
        data,
        server,
    } = start(1);
    let addr = server.addr;
    let results: Vec<Vec<Reply>> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let a = agent();
                (0..150)
                    .map(|_| call(&a, addr, "/c/L1", &[]))
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let mut acked = Vec::new();
    let mut busy = 0;
    for r in results.into_iter().flatten() {
        match r.status {
            302 => acked.push(click_id_of(r.location.as_ref().unwrap())),
            503 => {
                busy += 1;
                assert_eq!(r.retry_after.as_deref(), Some("1"));
                assert!(r.location.is_none() && r.cookies.is_empty());
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let (_, metrics) = get(addr, "/metrics").unwrap();
    assert!(metrics.contains(&format!(
        "clicktrail_unavailable_total{{cause=\"queue_full\"}} {busy}"
    )));
    eprintln!("{} redirected, {busy} refused with 503", acked.len());
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let (clicks, _) = journal_events(&data);
    let mut got: Vec<String> = clicks.into_iter().map(|c| c.click_id).collect();
    got.sort();
    acked.sort();
    assert_eq!(got, acked, "exactly the redirected clicks are journaled");
}

/// Everything a click records, from a full browser request: header values as sent (cut to
/// 512 bytes), client hints in order, utm pairs, the visitor cookie. With the `minimal`
/// opt-out policy and partial IP truncation, an opted-out click keeps none of the
/// browser's details and a tracked one keeps a /24.
#[test]
fn a_click_records_what_the_browser_sent_and_minimal_opt_out_drops_it() {
    for minimal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let landing = Landing::start();
        let config = write_config(dir.path(), landing.addr, 4096);
        if minimal {
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str("[tracking]\nopt-out = \"minimal\"\nip-truncation = \"partial\"\n");
            std::fs::write(&config, text).unwrap();
        }
        let data = dir.path().join("data");
        let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
        let a = agent();
        let long_ua = format!("Mozilla/5.0 ({})", "x".repeat(600));
        let visitor = "ct_vid=AAAAAAAAAAAAAAAAAAAAAAAA";
        let browser = [
            ("user-agent", long_ua.as_str()),
            ("referer", "https://news.example/story?id=7"),
            ("accept-language", "de-CH,de;q=0.9"),
            ("sec-fetch-dest", "document"),
            ("sec-fetch-site", "cross-site"),
            ("sec-ch-ua", "\"Chromium\";v=\"124\""),
            ("sec-ch-ua-platform", "\"Linux\""),
            ("sec-ch-ua-mobile", "?0"),
            ("cookie", visitor),
        ];
        let path = "/c/L2?sub2=b&utm_source=mail&utm_campaign=spring%20sale&gclid=Cj0KCQ%2Dx";
        let tracked = call(&a, server.addr, path, &browser);
        let mut opted_headers = browser.to_vec();
        opted_headers.push(("sec-gpc", "1"));
        let opted = call(&a, server.addr, path, &opted_headers);
        assert_eq!((tracked.status, opted.status), (302, 302));
        server.signal(libc::SIGTERM);
        assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));

        let (clicks, _) = journal_events(&data);
        assert_eq!(clicks.len(), 2);
        let id = |r: &Reply| {
            r.location
                .as_deref()
                .unwrap()
                .split("click_id=")
                .nth(1)
                .unwrap()
                .split(['&', '#'])
                .next()
                .unwrap()
                .to_string()
        };
        let find = |r: &Reply| clicks.iter().find(|c| c.click_id == id(r)).unwrap().clone();
        let (t, o) = (find(&tracked), find(&opted));
        for c in [&t, &o] {
            assert_eq!(c.link_code, "L2");
            assert_eq!(c.affiliate_id, "a2");
            assert_eq!(c.sub_ids, vec!["", "b", "", "", ""]);
            assert_eq!(
                c.utm
                    .iter()
                    .map(|p| (p.name.as_str(), p.value.as_str()))
                    .collect::<Vec<_>>(),
                vec![
                    ("utm_source", "mail"),
                    ("utm_campaign", "spring sale"),
                    ("gclid", "Cj0KCQ-x")
                ],
                "utm pairs, then the ad click id"
            );
            assert!(
                !c.destination.contains("gclid"),
                "an ad click id is recorded, not passed on: {}",
                c.destination
            );
            assert_eq!(
                (c.sec_fetch_dest.as_str(), c.sec_fetch_site.as_str()),
                ("document", "cross-site")
            );
            assert_eq!(c.visitor_id.as_deref(), Some("AAAAAAAAAAAAAAAAAAAAAAAA"));
            assert!(c
                .destination
                .starts_with(&format!("http://{}/landing?src=ct", landing.addr)));
            assert!(
                c.destination.contains("utm_campaign=spring+sale"),
                "{}",
                c.destination
            );
        }
        assert_eq!(t.user_agent, long_ua[..512]);
        assert_eq!(t.referrer, "https://news.example/story?id=7");
        assert_eq!(t.accept_language, "de-CH,de;q=0.9");
        assert_eq!(
            t.client_hints
                .iter()
                .map(|p| (p.name.as_str(), p.value.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("sec-ch-ua", "\"Chromium\";v=\"124\""),
                ("sec-ch-ua-mobile", "?0"),
                ("sec-ch-ua-platform", "\"Linux\""),
            ]
        );
        assert!(t.fingerprint.is_some() && !t.opted_out);
        assert!(o.fingerprint.is_none() && o.opted_out);
        if minimal {
            assert_eq!(t.ip, "127.0.0.0");
            assert_eq!(
                (
                    o.ip.as_str(),
                    o.user_agent.as_str(),
                    o.referrer.as_str(),
                    o.accept_language.as_str()
                ),
                ("", "", "", "")
            );
            assert!(o.client_hints.is_empty());
        } else {
            assert_eq!(t.ip, "127.0.0.1");
            assert_eq!(
                (o.ip.as_str(), o.user_agent.as_str()),
                ("127.0.0.1", &long_ua[..512])
            );
            assert_eq!(o.client_hints.len(), 3);
        }
    }
}

/// Lowering `ingest-shards` leaves the partitions no longer written in every actor's
/// history: after a restart with fewer shards the live counters still count the clicks
/// that went to the dropped one.
#[test]
fn clicks_in_a_dropped_shard_still_count_after_lowering_ingest_shards() {
    let dir = tempfile::tempdir().unwrap();
    let landing = Landing::start();
    let config = write_config(dir.path(), landing.addr, 4096);
    let two = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        two.replace("ingest-shards = 2", "ingest-shards = 3"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let a = agent();
    let clicks_counted = |s: &Server| {
        let r = call(
            &a,
            s.addr,
            "/api/v1/stats?by=affiliate",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        );
        r.body.contains("\"clicks\":10")
    };
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    for _ in 0..10 {
        assert_eq!(call(&a, server.addr, "/c/L1", &[]).status, 302);
    }
    server.wait_until("10 clicks counted", clicks_counted);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(15)).0, Some(0));
    let journal = Journal::open(&data, JournalConfig::default()).unwrap();
    let mut r = journal.get("ingest-2").unwrap().reader().unwrap();
    assert!(
        r.next().unwrap().is_some(),
        "clicks went to the third shard too"
    );
    drop(r);
    journal.close().unwrap();
    drop(journal); // its lock

    std::fs::write(&config, two).unwrap();
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    server.wait_until("the same 10 clicks counted with 2 shards", clicks_counted);
    drop(server);
}
