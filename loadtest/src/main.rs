//! clicktrail-load: the SREs' open-loop load generator with coordinated-omission-corrected
//! HDR latency. See `loadtest/README.md` for the method and how to read the output.

mod engine;
mod http;
mod receiver;
mod report;
mod scenario;
mod schedule;
mod verify;

use engine::{Live, Plan, Recorded};
use report::{Slo, Summary};
use scenario::{Scenario, Setup};
use schedule::{with_warmup, Schedule, Segment};
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

const USAGE: &str = "\
clicktrail-load: open-loop load generator for clicktrail (coordinated-omission corrected)

usage: clicktrail-load [options]

schedule (one of; default --rate 1000):
  --rate N            constant N requests/s (open loop)
  --ramp A:B          linear ramp from A to B requests/s over --duration
  --steps A,B,C       constant steps, --duration split evenly between them
  --max               closed loop: every connection sends as soon as it is answered

options:
  --target URL        server (default http://127.0.0.1:8080)
  --duration D        measured time, e.g. 30s, 2m (default 10s)
  --warmup D          sent but not recorded, before the measured time (default 2s)
  --connections N     keep-alive connections (default 64)
  --threads N         sending threads (default 2)
  --scenario S        built-in name (clicks, mix, conversions, wrk-clicks) or TOML path
                      (default clicks)
  --setup             create the scenario's [setup] affiliates and links first
  --seed N            random seed; the same seed sends the same requests (default 1)
  --run-id ID         part of every order/reversal id (default: start time in ms), so
                      repeated runs are new conversions, not replays; fix it to replay
  --timeout D         a request unanswered this long is an error (default 5s)
  --late-after D      a send this far behind its intended time counts as late (default 1ms)
  --json PATH         write the JSON summary
  --hgrm PATH         write the corrected latency distribution (HdrHistogram text format)
  --slo SPEC          p99=2ms, p99.9=10ms, max=50ms, errors=0, errors=0.1% (repeatable):
                      exit status 1 when one is missed
  --verify DIR        afterwards, check every acknowledged event is in DIR's journal
  --quiet             no progress line

exit status: 0 ok, 1 an SLO missed or verification failed, 2 usage error or no server

clicktrail-load receive --listen ADDR [--idle D] [--json PATH]
                      a postback sink: answers 200, counts, prints the delivery rate";

struct Args {
    target: String,
    rate: Option<f64>,
    ramp: Option<(f64, f64)>,
    steps: Option<Vec<f64>>,
    max: bool,
    duration: f64,
    warmup: f64,
    connections: usize,
    threads: usize,
    scenario: String,
    setup: bool,
    seed: u64,
    run_id: Option<String>,
    timeout: Duration,
    late_after: Duration,
    json: Option<PathBuf>,
    hgrm: Option<PathBuf>,
    slos: Vec<Slo>,
    verify: Option<PathBuf>,
    quiet: bool,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let bad = || format!("bad duration {s:?} (e.g. 500ms, 30s, 2m)");
    let (n, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = n.parse().map_err(|_| bad())?;
    (v.is_finite() && v >= 0.0)
        .then_some(v * scale)
        .ok_or_else(bad)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .replace('_', "")
        .parse()
        .map_err(|_| format!("bad rate {s:?}"))?;
    (v.is_finite() && v > 0.0)
        .then_some(v)
        .ok_or_else(|| format!("bad rate {s:?}: must be positive"))
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        target: "http://127.0.0.1:8080".into(),
        rate: None,
        ramp: None,
        steps: None,
        max: false,
        duration: 10.0,
        warmup: 2.0,
        connections: 64,
        threads: 2,
        scenario: "clicks".into(),
        setup: false,
        seed: 1,
        run_id: None,
        timeout: Duration::from_secs(5),
        late_after: Duration::from_millis(1),
        json: None,
        hgrm: None,
        slos: Vec::new(),
        verify: None,
        quiet: false,
    };
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => a.target = val()?,
            "--rate" => a.rate = Some(parse_rate(&val()?)?),
            "--ramp" => {
                let v = val()?;
                let (x, y) = v.split_once(':').ok_or("--ramp wants FROM:TO")?;
                a.ramp = Some((parse_rate(x)?, parse_rate(y)?));
            }
            "--steps" => {
                a.steps = Some(
                    val()?
                        .split(',')
                        .map(parse_rate)
                        .collect::<Result<_, _>>()?,
                )
            }
            "--max" => a.max = true,
            "--duration" => a.duration = parse_secs(&val()?)?,
            "--warmup" => a.warmup = parse_secs(&val()?)?,
            "--connections" => a.connections = val()?.parse().map_err(|_| "bad --connections")?,
            "--threads" => a.threads = val()?.parse().map_err(|_| "bad --threads")?,
            "--scenario" => a.scenario = val()?,
            "--setup" => a.setup = true,
            "--seed" => a.seed = val()?.parse().map_err(|_| "bad --seed")?,
            "--run-id" => {
                let v = val()?;
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err("--run-id: 1-20 letters or digits".into());
                }
                a.run_id = Some(v);
            }
            "--timeout" => a.timeout = Duration::from_secs_f64(parse_secs(&val()?)?),
            "--late-after" => a.late_after = Duration::from_secs_f64(parse_secs(&val()?)?),
            "--json" => a.json = Some(val()?.into()),
            "--hgrm" => a.hgrm = Some(val()?.into()),
            "--slo" => a.slos.push(Slo::parse(&val()?)?),
            "--verify" => a.verify = Some(val()?.into()),
            "--quiet" => a.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let schedules = [a.rate.is_some(), a.ramp.is_some(), a.steps.is_some(), a.max];
    if schedules.iter().filter(|x| **x).count() > 1 {
        return Err("give one of --rate, --ramp, --steps, --max".into());
    }
    if a.duration <= 0.0 {
        return Err("--duration must be positive".into());
    }
    if a.threads == 0 || a.threads > 256 || a.connections < a.threads || a.connections > 100_000 {
        return Err("need 1 <= threads <= connections <= 100000 (threads <= 256)".into());
    }
    if a.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    Ok(a)
}

/// `http://host:port[/]` -> (address, Host header).
fn parse_target(t: &str) -> Result<(SocketAddr, String), String> {
    let rest = t.strip_prefix("http://").ok_or_else(|| {
        format!("--target {t:?}: only http:// targets (TLS belongs in front of clicktrail)")
    })?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(format!("--target {t:?}: give scheme, host and port only"));
    }
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--target {t:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--target {t:?}: no address"))?;
    Ok((addr, with_port))
}

fn build_schedule(a: &Args) -> Result<Option<Schedule>, String> {
    if a.max {
        return Ok(None);
    }
    let segs = if let Some((from, to)) = a.ramp {
        with_warmup(
            a.warmup,
            from,
            vec![Segment {
                secs: a.duration,
                from,
                to,
            }],
        )
    } else if let Some(steps) = &a.steps {
        let each = a.duration / steps.len() as f64;
        with_warmup(
            a.warmup,
            steps[0],
            steps
                .iter()
                .map(|&r| Segment {
                    secs: each,
                    from: r,
                    to: r,
                })
                .collect(),
        )
    } else {
        let r = a.rate.unwrap_or(1000.0);
        with_warmup(
            a.warmup,
            r,
            vec![Segment {
                secs: a.duration,
                from: r,
                to: r,
            }],
        )
    };
    Schedule::new(segs).map(Some)
}

/// One blocking request (setup only); returns the status and body.
fn request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    key: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    match http::parse(&buf) {
        http::Parse::Done(r) => Ok((
            r.status,
            String::from_utf8_lossy(&buf[r.body.0..r.body.1]).into_owned(),
        )),
        _ => Err(format!("{path}: unreadable answer")),
    }
}

fn setup(addr: SocketAddr, host: &str, s: &Setup) -> Result<(), String> {
    for i in 0..s.affiliates {
        let a = serde_json::json!({ "id": Setup::affiliate_id(i), "name": format!("Load affiliate {i}") });
        let (status, body) = request(
            addr,
            host,
            "/api/v1/affiliates",
            &s.admin_key,
            &a.to_string(),
        )?;
        if status >= 300 {
            return Err(format!("creating affiliate {i}: {status} {body}"));
        }
        for j in 0..s.links_per_affiliate {
            let l = serde_json::json!({ "code": Setup::link_code(i, j), "affiliate-id": Setup::affiliate_id(i), "campaign-id": s.campaign, "sub-ids": [format!("a{i}"), format!("l{j}")] });
            let (status, body) =
                request(addr, host, "/api/v1/links", &s.admin_key, &l.to_string())?;
            if status >= 300 {
                return Err(format!("creating link {i}/{j}: {status} {body}"));
            }
        }
    }
    Ok(())
}

fn fail(msg: &str) -> ! {
    eprintln!("clicktrail-load: {msg}");
    std::process::exit(2)
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("receive") {
        std::process::exit(receiver::main(&raw[1..]));
    }
    let args = match parse_args(raw.into_iter()) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => fail(&format!("{e}\n\n{USAGE}")),
    };
    let (addr, host) = parse_target(&args.target).unwrap_or_else(|e| fail(&e));
    let scenario = Scenario::load(&args.scenario).unwrap_or_else(|e| fail(&e));
    let schedule = build_schedule(&args).unwrap_or_else(|e| fail(&e));
    let mut links = scenario.clicks.links.clone();
    if let Some(s) = &scenario.setup {
        if args.setup {
            setup(addr, &host, s).unwrap_or_else(|e| fail(&format!("setup: {e}")));
        }
        links.extend(s.links());
    } else if args.setup {
        fail("--setup: the scenario has no [setup] section");
    }
    let m = &scenario.mix;
    if links.is_empty() && (m.click > 0.0 || m.impression > 0.0) {
        fail("the scenario sends clicks or impressions but has no link codes (and no [setup] making any)");
    }
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        fail(&format!("nothing listens on {addr}"));
    }
    let plan = Plan {
        addr,
        host,
        schedule,
        closed_secs: args.warmup + args.duration,
        warmup: args.warmup,
        connections: args.connections,
        threads: args.threads,
        timeout: args.timeout,
        late_after: args.late_after,
        scenario,
        links,
        seed: args.seed,
        run_id: args.run_id.clone().unwrap_or_else(|| {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            ms.to_string()
        }),
        keep_acks: args.verify.is_some(),
    };
    let live = Live::default();
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let mut rec = Recorded::empty(&plan);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..plan.threads)
            .map(|i| {
                let (plan, live, done) = (&plan, &live, &done);
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn_scoped(scope, move || {
                        // Counted done even if the thread panics, so the progress loop ends
                        // and the panic surfaces at the join instead of a silent hang.
                        struct Done<'a>(&'a AtomicUsize);
                        impl Drop for Done<'_> {
                            fn drop(&mut self) {
                                self.0.fetch_add(1, Relaxed);
                            }
                        }
                        let _done = Done(done);
                        engine::run_thread(plan, i, start, live)
                    })
                    .expect("spawn")
            })
            .collect();
        progress(&plan, &live, &done, start, args.quiet);
        for h in handles {
            rec.merge(h.join().expect("load thread panicked"));
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let summary = Summary {
        plan: &plan,
        rec: &rec,
        elapsed_secs: elapsed,
        measured_secs: plan.end_secs() - plan.warmup,
    };
    print!("{}", summary.table());
    let mut failed = false;
    let verdict = args
        .verify
        .as_ref()
        .map(|dir| match verify::verify(dir, &rec.acks) {
            Ok(v) => {
                println!("{}", v.line());
                failed |= !v.ok();
                v.json()
            }
            Err(e) => {
                println!("verify: FAILED: {e}");
                failed = true;
                serde_json::json!({ "ok": false, "error": e })
            }
        });
    let slos = summary.check(&args.slos);
    for (s, ok, actual) in &slos {
        let (what, unit) = match s {
            Slo::Latency { name, limit_us, .. } => (format!("{name} <= {limit_us} µs"), " µs"),
            Slo::Errors {
                limit,
                percent: true,
            } => (format!("errors <= {limit}%"), "%"),
            Slo::Errors {
                limit,
                percent: false,
            } => (format!("errors <= {limit}"), ""),
        };
        println!(
            "slo {what}: {} (actual {actual:.1}{unit})",
            if *ok { "met" } else { "MISSED" }
        );
        failed |= !ok;
    }
    if let Some(path) = &args.json {
        let j = summary.json(&slos, verdict);
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&j).unwrap() + "\n") {
            fail(&format!("--json {}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.hgrm {
        if let Err(e) = std::fs::write(path, report::hgrm(&summary.corrected_all())) {
            fail(&format!("--hgrm {}: {e}", path.display()));
        }
    }
    if rec.completed == 0 {
        fail("no request was answered");
    }
    if failed {
        std::process::exit(1);
    }
}

/// A line a second on stderr: achieved rate, corrected p50/p99 so far, errors.
fn progress(plan: &Plan, live: &Live, done: &AtomicUsize, start: Instant, quiet: bool) {
    let mut tick = 1u64;
    let mut last = 0u64;
    while done.load(Relaxed) < plan.threads {
        let next = start + Duration::from_secs(tick);
        while Instant::now() < next && done.load(Relaxed) < plan.threads {
            std::thread::sleep(Duration::from_millis(20));
        }
        if done.load(Relaxed) >= plan.threads {
            break;
        }
        let completed = live.completed.load(Relaxed);
        if !quiet {
            let (p50, p99) = live.latency.lock().map_or((0, 0), |h| {
                (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
            });
            let (s99, smax) = live.interval.lock().map_or((0, 0), |mut h| {
                let v = (h.value_at_quantile(0.99), h.max());
                h.reset();
                v
            });
            let phase = if (tick as f64) <= plan.warmup {
                " (warm-up)"
            } else {
                ""
            };
            eprintln!(
                "[{tick:>4}s] {:>8} req/s · so far p50 {:.3} p99 {:.3} ms · this second p99 {:.3} max {:.3} ms · errors {} · late {} · dropped {}{phase}",
                completed - last,
                p50 as f64 / 1e6,
                p99 as f64 / 1e6,
                s99 as f64 / 1e6,
                smax as f64 / 1e6,
                live.errors.load(Relaxed),
                live.late.load(Relaxed),
                live.dropped.load(Relaxed),
            );
        }
        last = completed;
        tick += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn arguments() {
        let a = args("--rate 20000 --duration 30s --warmup 500ms --slo p99=2ms --slo errors=0")
            .unwrap();
        assert_eq!(
            (a.rate, a.duration, a.warmup, a.slos.len()),
            (Some(20000.0), 30.0, 0.5, 2)
        );
        let s = build_schedule(&a).unwrap().unwrap();
        assert!((s.total_requests() - 20000.0 * 30.5).abs() < 1.0);
        let a = args("--ramp 1000:50000 --duration 10").unwrap();
        assert_eq!(a.ramp, Some((1000.0, 50000.0)));
        let a = args("--steps 10000,20000,40000 --duration 30s --warmup 0").unwrap();
        assert_eq!(build_schedule(&a).unwrap().unwrap().segments().len(), 3);
        assert!(build_schedule(&args("--max").unwrap()).unwrap().is_none());
        for bad in [
            "--rate 0",
            "--rate x",
            "--rate 5 --max",
            "--ramp 5",
            "--duration 0",
            "--threads 0",
            "--connections 1 --threads 2",
            "--bogus",
            "--rate",
            "--slo p99",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("http://127.0.0.1:8080").unwrap().1,
            "127.0.0.1:8080"
        );
        assert_eq!(parse_target("http://127.0.0.1:9/").unwrap().0.port(), 9);
        assert!(parse_target("https://x:1").is_err());
        assert!(parse_target("http://127.0.0.1:1/path").is_err());
    }
}
