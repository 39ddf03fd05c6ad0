//! `clicktrail-load receive`: a postback sink that answers every request `200` at once and
//! counts them, to measure how fast clicktrail delivers postbacks to a local receiver.
//! Keep-alive HTTP/1.1, one thread per connection (the dispatcher opens few).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: clicktrail-load receive --listen ADDR [--idle D] [--json PATH] [--print]

Answers every request 200 and counts them; after the first request, stops once none
came for --idle (default 3s) and prints how many arrived over how long.

  --listen ADDR   where to listen, e.g. 127.0.0.1:9000
  --idle D        stop after no request came for D (default 3s; 0 = never)
  --json PATH     also write {requests, span_s, rate} as JSON
  --print         print each request (request line, signature headers, body) as it
                  arrives: watch postbacks while trying clicktrail out";

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

/// Most body bytes `--print` shows of one request.
const PRINT_BODY_MAX: u64 = 4096;

/// One request off a keep-alive connection; false at its end. With `print`, writes the
/// request line, the `X-Clicktrail-*` headers and the body to stdout.
fn serve_one(
    r: &mut BufReader<TcpStream>,
    out: &mut TcpStream,
    print: bool,
) -> std::io::Result<bool> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(false);
    }
    let mut shown = vec![line.trim_end().to_string()];
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
            if print && k.to_ascii_lowercase().starts_with("x-clicktrail") {
                shown.push(h.to_string());
            }
        }
    }
    let mut body = Vec::new();
    r.by_ref()
        .take((len as u64).min(PRINT_BODY_MAX))
        .read_to_end(&mut body)?;
    std::io::copy(
        &mut r.by_ref().take((len as u64).saturating_sub(PRINT_BODY_MAX)),
        &mut std::io::sink(),
    )?;
    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    if print {
        if !body.is_empty() {
            shown.push(String::from_utf8_lossy(&body).into_owned());
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}\n", shown.join("\n"))?;
        stdout.flush()?;
    }
    Ok(true)
}

fn connection(s: TcpStream, counts: Arc<Counts>, print: bool) {
    let _ = s.set_nodelay(true);
    let Ok(mut out) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    while let Ok(true) = serve_one(&mut r, &mut out, print) {
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
    let mut print = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let r: Result<(), String> = match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            "--print" => {
                print = true;
                Ok(())
            }
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
            std::thread::spawn(move || connection(s, c, print));
        }
    });
    eprintln!("clicktrail-load receive: listening on {listen}");
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let last = *counts.last.lock().unwrap();
        if !idle.is_zero() && last.is_some_and(|l| l.elapsed() >= idle) {
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
