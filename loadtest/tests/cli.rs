//! The generator end to end: against a scripted HTTP server (coordinated-omission
//! correction, outputs, SLO exit status) and against the real clicktrail binary (the mixed
//! scenario, then verification of the journal, which must also be able to fail).

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOAD: &str = env!("CARGO_BIN_EXE_clicktrail-load");

/// A keep-alive HTTP server answering every request with a 302 carrying a click id; the
/// `stall_at`-th request is held for `stall` first.
fn scripted_server(stall_at: u64, stall: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                conn.set_nodelay(true).unwrap();
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    if n == stall_at {
                        std::thread::sleep(stall);
                    }
                    let resp = format!("HTTP/1.1 302 Found\r\nLocation: https://shop.example/l?click_id=c{n}\r\nContent-Length: 0\r\n\r\n");
                    if w.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn run(args: &[&str]) -> Output {
    Command::new(LOAD)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn latency_is_measured_from_the_intended_send_time() {
    let addr = scripted_server(500, Duration::from_millis(400));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.json");
    let target = format!("http://{addr}");
    // One connection at 1000/s for 2 s: while request 500 is held for 400 ms, ~400 more
    // fall due and wait. Corrected latency charges each its wait; uncorrected does not.
    let o = run(&[
        "--target",
        &target,
        "--rate",
        "1000",
        "--duration",
        "2s",
        "--warmup",
        "0",
        "--connections",
        "1",
        "--threads",
        "1",
        "--scenario",
        "wrk-clicks",
        "--quiet",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = json(&out);
    let c = &s["latency_us"]["click"]["corrected"];
    let u = &s["latency_us"]["click"]["uncorrected"];
    assert_eq!(s["requests"]["recorded"], 2000);
    assert_eq!(s["requests"]["errors"], 0);
    assert!(
        c["p90"].as_f64().unwrap() > 100_000.0,
        "corrected p90 includes queueing: {c}"
    );
    assert!(c["max"].as_f64().unwrap() >= 390_000.0, "{c}");
    assert!(
        u["p99"].as_f64().unwrap() < 50_000.0,
        "uncorrected hides it: {u}"
    );
    assert!(u["max"].as_f64().unwrap() >= 390_000.0, "{u}");
    assert!(
        s["requests"]["late"].as_u64().unwrap() > 300,
        "{}",
        s["requests"]
    );
}

#[test]
fn outputs_and_slo_exit_status() {
    let addr = scripted_server(u64::MAX, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let (js, hg) = (dir.path().join("s.json"), dir.path().join("h.hgrm"));
    let target = format!("http://{addr}");
    let base = [
        "--target",
        &target,
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--scenario",
        "clicks",
    ];
    let o = run(&[
        &base[..],
        &[
            "--quiet",
            "--json",
            js.to_str().unwrap(),
            "--hgrm",
            hg.to_str().unwrap(),
            "--slo",
            "p99=10s",
            "--slo",
            "errors=0",
        ],
    ]
    .concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let table = String::from_utf8(o.stdout).unwrap();
    for want in [
        "p99.99",
        "corrected",
        "uncorrected",
        "slo p99 <= 10000000 µs: met",
        "slo errors <= 0: met",
    ] {
        assert!(table.contains(want), "{want} in\n{table}");
    }
    let s = json(&js);
    assert_eq!(s["mode"], "open");
    assert_eq!(s["requests"]["sent"], 2400);
    assert_eq!(s["status"]["302"], 2400);
    let rate = s["achieved_rate"].as_f64().unwrap();
    assert!((1500.0..=2100.0).contains(&rate), "{rate}");
    let hgrm = std::fs::read_to_string(&hg).unwrap();
    assert!(hgrm.contains("Percentile") && hgrm.contains("#[Max"));
    // An objective nothing can meet fails the run, and says so.
    let o = run(&[&base[..], &["--quiet", "--slo", "p50=1us"]].concat());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("MISSED"));
    // Closed loop runs too; usage errors and a dead target are exit 2.
    let o = run(&[
        "--target",
        &target,
        "--max",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--connections",
        "4",
        "--quiet",
    ]);
    assert!(o.status.success());
    assert_eq!(run(&["--rate", "0"]).status.code(), Some(2));
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(
        run(&["--target", &format!("http://{dead}"), "--duration", "1s"])
            .status
            .code(),
        Some(2)
    );
}

/// The clicktrail binary, built beside this one by the workspace's test command.
fn clicktrail_bin() -> PathBuf {
    let p = Path::new(LOAD).with_file_name("clicktrail");
    assert!(
        p.exists(),
        "{} is missing: run the workspace's tests (scripts/test) or `cargo build --bin clicktrail`",
        p.display()
    );
    p
}

fn wait_ready(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            if b.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("clicktrail did not become ready");
}

#[test]
fn the_mixed_scenario_against_clicktrail_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = Command::new(clicktrail_bin())
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(addr);
    let js = dir.path().join("s.json");
    let target = format!("http://{addr}");
    let o = run(&[
        "--target",
        &target,
        "--rate",
        "1500",
        "--duration",
        "3s",
        "--warmup",
        "500ms",
        "--scenario",
        "mix",
        "--setup",
        "--verify",
        data.to_str().unwrap(),
        "--json",
        js.to_str().unwrap(),
        "--quiet",
        "--slo",
        "errors=0",
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}");
    let s = json(&js);
    let v = &s["verify"];
    assert_eq!(v["ok"], true, "{v}");
    for (kind, min) in [("clicks", 2000), ("conversions", 50), ("reversals", 5)] {
        let acked = v[kind]["acknowledged"].as_u64().unwrap();
        assert!(acked >= min, "{kind}: {acked} acknowledged");
        assert_eq!(v[kind]["missing"], 0);
    }
    assert!(v["impressions"]["acknowledged"].as_u64().unwrap() > 200);
    for kind in ["click", "impression", "conversion", "reversal"] {
        assert!(
            s["latency_us"][kind]["corrected"]["count"]
                .as_u64()
                .unwrap()
                > 0,
            "{kind}"
        );
    }
    // Setup made the links it clicks: no 404s.
    assert!(s["status"].get("404").is_none(), "{}", s["status"]);
    // Verification against a journal that lacks the run must fail, naming what is missing.
    let other = dir.path().join("other");
    let mut empty = Command::new(clicktrail_bin())
        .args([
            "serve",
            "--data-dir",
            other.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = empty.kill();
    let _ = empty.wait();
    let o = run(&[
        "--target",
        &target,
        "--rate",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--scenario",
        "clicks",
        "--verify",
        other.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("verify: FAILED") && out.contains("200 missing"),
        "{out}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn the_postback_sink_counts_keep_alive_requests_and_stops_when_idle() {
    use std::io::{Read, Write};
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("recv.json");
    let child = std::process::Command::new(LOAD)
        .args(["receive", "--listen", &addr.to_string(), "--idle", "500ms"])
        .args(["--json", out.to_str().unwrap(), "--print"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut s = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    // Two requests on one connection (one with a body), one on another.
    write!(
        s,
        "GET /pb?a=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /pb HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    )
    .unwrap();
    let mut got = Vec::new();
    let want = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".len() * 2;
    while got.len() < want {
        let mut b = [0u8; 256];
        let n = s.read(&mut b).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    let mut s2 = std::net::TcpStream::connect(addr).unwrap();
    write!(s2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut b = [0u8; 64];
    assert!(s2.read(&mut b).unwrap() > 0);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    // --print shows each request as it arrives, the body included.
    assert!(text.contains("GET /pb?a=1 HTTP/1.1\n"), "{text}");
    assert!(text.contains("POST /pb HTTP/1.1\nhello\n"), "{text}");
    assert!(text.contains("\nreceived 3 requests"), "{text}");
    assert_eq!(json(&out)["requests"], 3);
}

#[test]
fn the_postback_sink_explains_itself() {
    let o = std::process::Command::new(LOAD)
        .args(["receive", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("usage: clicktrail-load receive --listen ADDR"),
        "{text}"
    );
    assert!(text.contains("--print"), "{text}");
}
