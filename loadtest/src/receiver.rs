//! `clicktrail-load receive`: a postback sink that answers every request `200` at once and
//! counts them, to measure how fast clicktrail delivers postbacks to a local receiver.
//! Keep-alive HTTP/1.1, one thread per connection (the dispatcher opens few).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: clicktrail-load receive --listen ADDR [--idle D] [--json PATH]

Answers every request 200 and counts them; after the first request, stops once none
came for --idle (default 3s) and prints how many arrived over how long.";

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

/// One request off a keep-alive connection; false at its end.
fn serve_one(r: &mut BufReader<TcpStream>, out: &mut TcpStream) -> std::io::Result<bool> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(false);
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(false);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    std::io::copy(&mut r.by_ref().take(len as u64), &mut std::io::sink())?;
    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    Ok(true)
}

fn connection(s: TcpStream, counts: Arc<Counts>) {
    let _ = s.set_nodelay(true);
    let Ok(mut out) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    while let Ok(true) = serve_one(&mut r, &mut out) {
        let now = Instant::now();
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.first.lock().unwrap().get_or_insert(now);
        *counts.last.lock().unwrap() = Some(now);
    }
}

/// Runs the sink; returns the process exit status.
pub fn main(args: &[String]) -> i32 {
    let mut listen = None;
    let mut idle = Duration::from_secs(3);
    let mut json = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let r: Result<(), String> = match flag.as_str() {
            "--listen" => val().map(|v| listen = Some(v)),
            "--idle" => val()
                .and_then(|v| crate::parse_secs(&v))
                .map(|s| idle = Duration::from_secs_f64(s)),
            "--json" => val().map(|v| json = Some(v)),
            _ => Err(format!("unknown option {flag:?}")),
        };
        if let Err(e) = r {
            eprintln!("clicktrail-load receive: {e}\n\n{USAGE}");
            return 2;
        }
    }
    let Some(listen) = listen else {
        eprintln!("{USAGE}");
        return 2;
    };
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("clicktrail-load receive: cannot listen on {listen}: {e}");
            return 2;
        }
    };
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || connection(s, c));
        }
    });
    eprintln!("clicktrail-load receive: listening on {listen}");
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let last = *counts.last.lock().unwrap();
        if last.is_some_and(|l| l.elapsed() >= idle) {
            break;
        }
    }
    let n = counts.requests.load(Ordering::Relaxed);
    let first = counts.first.lock().unwrap().expect("a request came");
    let last = counts.last.lock().unwrap().expect("a request came");
    let span = last.duration_since(first).as_secs_f64();
    let rate = if span > 0.0 {
        (n - 1) as f64 / span
    } else {
        0.0
    };
    println!("received {n} requests in {span:.3} s: {rate:.0}/s");
    if let Some(path) = json {
        let v = serde_json::json!({"requests": n, "span_s": span, "rate": rate});
        if let Err(e) = std::fs::write(&path, v.to_string()) {
            eprintln!("clicktrail-load receive: {path}: {e}");
            return 2;
        }
    }
    0
}
