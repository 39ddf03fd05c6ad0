//! The `clicktrail` binary, black-box over a real socket: it starts on the demo default,
//! answers /healthz, /readyz and /metrics, runs its actors over the journal, shuts down
//! cleanly on SIGTERM, survives SIGKILL without duplicating or losing actor output, refuses
//! bad configuration, and `journal verify|inspect` report what is on disk.

use clicktrail_storage::schema::{self, samples};
use clicktrail_storage::{Journal, JournalConfig};
mod common;

use common::{get, Server, BIN};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn journal_cmd(data: &Path, action: &str) -> Output {
    Command::new(BIN)
        .args(["journal", action, "--data-dir"])
        .arg(data)
        .output()
        .unwrap()
}

/// Writes `n` clicks (every third from a bot) into ingest-0 while no server runs.
fn write_clicks(data: &Path, n: usize) {
    let journal = Journal::open(data, JournalConfig::default()).unwrap();
    let mut w = journal.partition("ingest-0").unwrap().writer().unwrap();
    for i in 0..n {
        let mut c = samples::click();
        c.click_id = format!("click-{i}");
        // One visitor each, from addresses of their own (the same click a thousand times
        // from one address would be a flood).
        c.ip = format!("10.{}.{}.7", i / 250, i % 250);
        c.visitor_id = Some(format!("v-{i}"));
        c.fingerprint = Some(i as u64);
        if i % 3 == 0 {
            c.user_agent = "python-requests/2.31".into();
        }
        w.append_event(None, &c).unwrap();
    }
    drop(w);
    journal.close().unwrap();
}

/// Reads the fraud verdicts on clicks: (subject id, flagged) in order.
fn verdicts(data: &Path) -> Vec<(String, bool)> {
    let journal = Journal::open(data, JournalConfig::default()).unwrap();
    let mut r = journal
        .partition("fraud-verdicts")
        .unwrap()
        .reader()
        .unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        let v = schema::verdict(&rec).expect("a verdict");
        if v.subject_kind == clicktrail_storage::Kind::Click as u16 {
            out.push((v.subject_id, v.score_ppm > 0));
        }
    }
    journal.close().unwrap();
    out
}

/// Only flagged clicks get a verdict: the bot clicks (every third).
fn expected_verdicts(n: usize) -> Vec<(String, bool)> {
    (0..n)
        .filter(|i| i % 3 == 0)
        .map(|i| (format!("click-{i}"), true))
        .collect()
}

/// Sizes of the segment files of partition `name`, in base order.
fn segment_sizes(data: &Path, name: &str) -> Vec<u64> {
    let dir = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let file = p.file_name().unwrap().to_str().unwrap();
            file.split_once('-').is_some_and(|(_, n)| n == name)
        })
        .unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect()
}

#[test]
fn serves_health_runs_actors_and_shuts_down_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_clicks(&data, 1000);
    let server = Server::start(&data, &[]);
    server.wait_until("ready", |s| {
        get(s.addr, "/readyz").is_ok_and(|r| r.0 == 200)
    });
    let (status, body) = get(server.addr, "/readyz").unwrap();
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    for actor in [
        "ingest-shard-0",
        "ingest-shard-1",
        "fraud-scorer",
        "attribution-aggregator",
        "commission-ledger",
        "payout-scheduler",
        "postback-dispatcher",
    ] {
        assert_eq!(ready["actors"][actor]["state"], "running", "{body}");
    }
    // The ingest partitions the server created start at 4 MiB; quiet ones (here the fraud
    // scorer's output) at what the largest record needs (1 MiB and a page), so a fresh
    // server fits on a small disk.
    assert_eq!(segment_sizes(&data, "ingest-1"), [4 << 20]);
    assert_eq!(segment_sizes(&data, "fraud-verdicts"), [(1 << 20) + 4096]);
    // The fraud scorer tails ingest-0: the bot clicks get verdicts.
    server.wait_until("verdicts", |s| {
        get(s.addr, "/metrics").is_ok_and(|(_, m)| {
            m.lines().any(|l| {
                l.starts_with("clicktrail_journal_end_bytes{partition=\"fraud-verdicts\"}")
                    && !l.ends_with(" 0")
            })
        })
    });
    let (status, metrics) = get(server.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("clicktrail_actor_up{actor=\"fraud-scorer\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("clicktrail_ready 1"));
    assert_eq!(get(server.addr, "/nope").unwrap().0, 404);

    // The demo campaign pays 10%: its plan is a journal-backed entity, and a plan that
    // names no pricing is refused.
    let a = common::agent();
    let plans = format!("http://{}/api/v1/plans", server.addr);
    let mut r = a
        .get(&plans)
        .header("authorization", "Bearer demo-admin-key")
        .call()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["items"][0]["id"], "demo-10-percent", "{v}");
    assert_eq!(v["items"][0]["percent_bps"], 1000, "{v}");
    let r = a
        .post(&plans)
        .header("authorization", "Bearer demo-admin-key")
        .send(r#"{"id":"x","campaign-id":"demo-campaign"}"#)
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = a
        .post(&plans)
        .header("authorization", "Bearer demo-partner-key")
        .send(r#"{"id":"x","campaign-id":"demo-campaign","percent-bps":9000}"#)
        .unwrap();
    assert_eq!(r.status(), 403, "partners do not set their own rates");

    // A demo sale earns the demo partner 10%, pending its hold period, in its balance.
    let r = a
        .get(format!("http://{}/c/demo", server.addr))
        .call()
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let cid = loc.split("click_id=").nth(1).unwrap();
    let r = a
        .post(format!("http://{}/api/v1/conversions", server.addr))
        .header("authorization", "Bearer demo-merchant-key")
        .header("content-type", "application/json")
        .send(format!(
            r#"{{"click_id":"{cid}","order_id":"demo-1","amount":"49.90","currency":"EUR"}}"#
        ))
        .unwrap();
    assert_eq!(r.status(), 201);
    server.wait_until("the demo commission", |s| {
        let mut r = a
            .get(format!("http://{}/api/v1/me/balance", s.addr))
            .header("authorization", "Bearer demo-partner-key")
            .call()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        v["balances"][0]["pending"] == "4.99" && v["balances"][0]["approved"] == "0.00"
    });

    // Its fraud verdict (every conversion gets one, once the clicks around it are read).
    server.wait_until("the demo sale's verdict", |s| {
        get(s.addr, "/metrics").is_ok_and(|(_, m)| {
            m.contains("clicktrail_fraud_scored_total{kind=\"conversion\"} 1\n")
        })
    });
    server.signal(libc::SIGTERM);
    let (code, log) = server.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("clean shutdown"), "{log}");
    assert_eq!(verdicts(&data), expected_verdicts(1000));

    let inspect = journal_cmd(&data, "inspect");
    assert!(inspect.status.success());
    let text = String::from_utf8(inspect.stdout).unwrap();
    assert!(
        // The 1,000 written before the start, and the demo sale's click on either shard.
        text.contains("ingest-0")
            && (text.contains("click=1000") || text.contains("click=1001"))
            && text.contains("conversion=1"),
        "{text}"
    );
    assert!(
        // The bot clicks' and the demo sale's (every conversion gets one).
        text.contains("fraud-verdicts") && text.contains("fraud-verdict=335"),
        "{text}"
    );
    let verify = journal_cmd(&data, "verify");
    let text = String::from_utf8(verify.stdout).unwrap();
    assert!(verify.status.success(), "{text}");
    assert!(text.starts_with("OK:"), "{text}");
}

#[test]
fn sigkill_mid_stream_then_restart_gives_every_verdict_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    const N: usize = 60_000;
    write_clicks(&data, N);
    for round in 0..3 {
        let server = Server::start(&data, &[]);
        std::thread::sleep(Duration::from_millis(60 + 70 * round));
        server.signal(libc::SIGKILL);
        let (code, _) = server.wait(Duration::from_secs(10));
        assert_eq!(code, None, "killed by the signal");
        let got = verdicts(&data);
        assert_eq!(
            got[..],
            expected_verdicts(N)[..got.len()],
            "a prefix, no repeats"
        );
    }
    let server = Server::start(&data, &[]);
    server.wait_until("all verdicts", |s| {
        let m = m_of(s);
        m.contains("clicktrail_ready 1")
            && m.contains(&format!(
                "clicktrail_fraud_scored_total{{kind=\"click\"}} {N}\n"
            ))
            && verdict_bytes_stable(s)
    });
    server.signal(libc::SIGTERM);
    let (code, log) = server.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(verdicts(&data), expected_verdicts(N));
    assert!(journal_cmd(&data, "verify").status.success());
}

fn m_of(s: &Server) -> String {
    get(s.addr, "/metrics").map(|r| r.1).unwrap_or_default()
}

fn journal_end(metrics: &str, partition: &str) -> u64 {
    let prefix = format!("clicktrail_journal_end_bytes{{partition=\"{partition}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// True once the verdict partition stopped growing for 300 ms.
fn verdict_bytes_stable(s: &Server) -> bool {
    let a = journal_end(&m_of(s), "fraud-verdicts");
    std::thread::sleep(Duration::from_millis(300));
    a > 0 && a == journal_end(&m_of(s), "fraud-verdicts")
}

#[test]
fn verify_exits_non_zero_on_a_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_clicks(&data, 10);
    assert!(journal_cmd(&data, "verify").status.success());
    let seg = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap()
        .join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[64 + 100] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let out = journal_cmd(&data, "verify");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    // Damage, not a torn tail: the first click is lost, the nine after it are intact.
    assert!(
        text.contains("DAMAGED ingest-0 offsets 0..")
            && text.contains("9 intact records after it kept")
            && text.contains("FAILED")
            && text.contains("accept-damage --partition ingest-0"),
        "{text}"
    );
    // The server starts, keeps the nine, and is not ready until the damage is accepted.
    let server = Server::start(&data, &[]);
    server.wait_until("readiness to name the damage", |s| {
        get(s.addr, "/readyz")
            .is_ok_and(|(status, body)| status == 503 && body.contains("ingest-0 is damaged"))
    });
    assert!(
        server.log().contains("damaged offsets 0.."),
        "{}",
        server.log()
    );
    server.signal(libc::SIGTERM);
    let (code, log) = server.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{log}");
    let out = Command::new(BIN)
        .args([
            "journal",
            "accept-damage",
            "--partition",
            "ingest-0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && text.contains("ACCEPTED ingest-0"),
        "{text}"
    );
    let out = journal_cmd(&data, "verify");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && text.contains("ACCEPTED ingest-0"),
        "{text}"
    );
    let server = Server::start(&data, &[]);
    server.wait_until("ready", |s| {
        get(s.addr, "/readyz").is_ok_and(|r| r.0 == 200)
    });
}

#[test]
fn bad_configuration_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[actors]\nrestart-backoff-initial-ms = 900\nrestart-backoff-max-ms = 10\n",
            "restart-backoff-max-ms",
        ),
        (
            "[secrets]\nclick-id-key = \"demo-click-id-key-change-me-000000\"\n",
            "demo key",
        ),
        ("[server]\nlisten = 8080\n", "listen"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let data = dir.path().join(format!("d{i}"));
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(needle), "{text:?} -> {err}");
        assert!(
            !data.exists(),
            "nothing was created for a refused configuration"
        );
    }
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
