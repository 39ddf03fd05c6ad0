//! The HTTP edge's limits, black-box over real sockets: every phase of a request has a
//! deadline, bodies are bounded per route, one address cannot hold every connection,
//! malformed framing gets a 400, and clients cannot choose the log volume.
//!
//! Deadlines are set short in the test configuration; the bounds the tests wait with
//! (30 s) only keep a broken server from hanging the suite.

mod common;

use common::{get, Server};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const MERCHANT: &str = "test-merchant-key-0123456789";
const ADMIN: &str = "test-admin-key-0123456789";
/// How long a test waits for what must happen much sooner.
const HANG: Duration = Duration::from_secs(30);

fn start(dir: &Path, server: &str) -> Server {
    let config = dir.join("clicktrail.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
{server}
[node]
demo = false
[secrets]
click-id-key = "test-click-id-key-0123456789abcdef0123"
[[merchants]]
id = "m1"
name = "Merchant One"
[[affiliates]]
id = "a1"
name = "Affiliate One"
[[campaigns]]
id = "c1"
merchant-id = "m1"
name = "C"
destination-url = "https://shop.example/landing"
[[keys]]
role = "merchant"
owner = "m1"
key = "{MERCHANT}"
[[keys]]
role = "admin"
owner = "admin"
key = "{ADMIN}"
"#
        ),
    )
    .unwrap();
    Server::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s
}

/// Reads until the server closes (or `HANG` passes): what it sent.
fn read_all(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// One response head and body on a keep-alive connection (bodies with Content-Length).
fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

fn status(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn metric(addr: SocketAddr, line_start: &str) -> u64 {
    let (_, body) = get(addr, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_slow_body_gets_408_and_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "body-timeout-ms = 500\nheader-timeout-ms = 1000",
    );

    // Head complete, 4 of 100 body bytes, then nothing.
    let mut s = connect(server.addr);
    write!(
        s,
        "POST /api/v1/conversions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MERCHANT}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"or"
    )
    .unwrap();
    let started = Instant::now();
    let answer = read_all(&mut s);
    assert!(started.elapsed() < HANG, "no answer: {answer:?}");
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains("body-timeout-ms"), "{answer}");

    // Trickling keeps no connection alive past the deadline either.
    let mut s = connect(server.addr);
    write!(
        s,
        "POST /api/v1/conversions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MERCHANT}\r\n\
         Content-Length: 100\r\n\r\n"
    )
    .unwrap();
    s.set_nonblocking(true).unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < HANG, "still open after {HANG:?}");
        let _ = s.write_all(b" ");
        let mut chunk = [0u8; 512];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break, // reset after the answer
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(&String::from_utf8_lossy(&answer)), 408);
    assert_eq!(
        metric(
            server.addr,
            "clicktrail_request_timeouts_total{phase=\"body\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            server.addr,
            "clicktrail_client_errors_total{status=\"408\"}"
        ),
        2
    );

    // A chunked body that a route answers without reading is not drained forever: the
    // connection closes after the answer, however slowly the client goes on sending.
    let mut s = connect(server.addr);
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n",
    )
    .unwrap();
    s.set_nonblocking(true).unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < HANG, "still open after {HANG:?}");
        let _ = s.write_all(b"1\r\nx\r\n");
        let mut chunk = [0u8; 512];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(&String::from_utf8_lossy(&answer)), 200);

    // A slow head gets the header deadline's 408.
    let mut s = connect(server.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
    let answer = read_all(&mut s);
    assert_eq!(status(&answer), 408, "{answer:?}");

    // The server still serves.
    assert_eq!(get(server.addr, "/healthz").unwrap().0, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "keep-alive-timeout-ms = 1000");
    let mut s = connect(server.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(status(&read_response(&mut s)), 200);
    let started = Instant::now();
    let rest = read_all(&mut s);
    assert!(started.elapsed() < HANG, "the idle connection stayed open");
    assert_eq!(rest, "");
}

#[test]
fn bodies_are_bounded_per_route_with_a_clear_413() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "body-timeout-ms = 2000");
    // (path, key, the route's maximum)
    let routes = [
        ("/api/v1/conversions", MERCHANT, 16 * 1024),
        ("/api/v1/conversions/cv_x/reverse", MERCHANT, 16 * 1024),
        ("/api/v1/conversions/cv_x/approve", MERCHANT, 16 * 1024),
        ("/api/v1/merchants", ADMIN, 64 * 1024),
        ("/api/v1/payouts/items/x/paid", ADMIN, 64 * 1024),
    ];
    for (path, key, max) in routes {
        // Announced too large: refused before the body is read.
        let mut s = connect(server.addr);
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            max + 1
        )
        .unwrap();
        let answer = read_all(&mut s);
        assert_eq!(status(&answer), 413, "{path}: {answer}");
        assert!(
            answer.contains(&format!("this endpoint takes at most {max} bytes")),
            "{path}: {answer}"
        );
        // Chunked, no length announced: refused once it grows past the maximum.
        let mut s = connect(server.addr);
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        let chunk = format!("{:x}\r\n{}\r\n", 1024, "x".repeat(1024));
        for _ in 0..=max / 1024 {
            if s.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
        let answer = read_all(&mut s);
        assert_eq!(status(&answer), 413, "{path} chunked: {answer}");
    }
    assert_eq!(
        metric(
            server.addr,
            "clicktrail_client_errors_total{status=\"413\"}"
        ),
        routes.len() as u64 * 2
    );
}

#[test]
fn one_address_cannot_hold_more_than_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "connections-per-ip-max = 3\nkeep-alive-timeout-ms = 60000",
    );
    let served = |s: &mut TcpStream| {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        read_response(s)
    };
    // A place is given back once the server has dropped the connection, which can come
    // just after the client saw it close: the start-up health checks may still hold one.
    let admitted = || {
        let started = Instant::now();
        loop {
            let mut s = connect(server.addr);
            if status(&served(&mut s)) == 200 {
                return s;
            }
            assert!(
                started.elapsed() < HANG,
                "a closed connection's place never came back"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut held: Vec<TcpStream> = (0..3).map(|_| admitted()).collect();
    let mut extra = connect(server.addr);
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_all(&mut extra);
    assert_eq!(status(&answer), 429, "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // The held ones are still served.
    assert_eq!(status(&served(&mut held[0])), 200);

    // Closing one gives its place back (the connection's extensions are dropped).
    drop(held.pop());
    let mut fresh = admitted();
    // Full again: the next one is refused.
    let mut extra = connect(server.addr);
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(status(&read_all(&mut extra)), 429);
    // Metrics need a place too: free one.
    drop(held.pop());
    assert_eq!(status(&served(&mut fresh)), 200);
    let started = Instant::now();
    let refused = loop {
        match get(server.addr, "/metrics") {
            Ok((200, body)) => break body,
            _ => {
                assert!(started.elapsed() < HANG);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let refused: u64 = refused
        .lines()
        .find_map(|l| l.strip_prefix("clicktrail_connections_refused_total{cause=\"per_ip\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 2, "{refused}");
}

#[test]
fn malformed_framing_gets_a_400_and_clients_cannot_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "connections-per-ip-max = 0");
    let framings = [
        "Content-Length: -1\r\n",
        "Content-Length: abc\r\n",
        "Content-Length: 3\r\nContent-Length: 4\r\n",
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    ];
    let bad_requests = 1000;
    for i in 0..bad_requests {
        let framing = framings[i % framings.len()];
        let mut s = connect(server.addr);
        write!(
            s,
            "POST /api/v1/conversions HTTP/1.1\r\nHost: x\r\n{framing}\r\n"
        )
        .unwrap();
        let answer = read_all(&mut s);
        assert_eq!(status(&answer), 400, "{framing:?}: {answer:?}");
        assert!(answer.contains("connection: close"), "{answer}");
    }
    // Bad input our handlers refuse: a bad query, an unknown key, an unparsable body.
    let bad_query = (0..bad_requests)
        .map(|_| get(server.addr, "/c/L1?sub1=%zz").unwrap().0)
        .filter(|s| *s == 400)
        .count();
    assert_eq!(bad_query, bad_requests);
    for _ in 0..100 {
        let mut s = connect(server.addr);
        write!(
            s,
            "POST /api/v1/conversions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope-not-a-key\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .unwrap();
        assert_eq!(status(&read_all(&mut s)), 401);
    }

    let m = |line: &str| metric(server.addr, line);
    assert_eq!(
        m("clicktrail_malformed_requests_total "),
        bad_requests as u64
    );
    assert_eq!(
        m("clicktrail_bad_requests_total{cause=\"bad_encoding\"} "),
        bad_requests as u64
    );
    assert_eq!(
        m("clicktrail_client_errors_total{status=\"400\"} "),
        bad_requests as u64
    );
    assert_eq!(m("clicktrail_client_errors_total{status=\"401\"} "), 100);
    assert!(m("clicktrail_log_lines_suppressed_total ") >= 2000);

    let log = server.log();
    let about_requests = log
        .lines()
        .filter(|l| l.contains("clicktrail::requests") || l.contains("actix_http"))
        .count();
    assert!(
        about_requests <= 30,
        "{about_requests} log lines about 2,100 bad requests:\n{log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
}
