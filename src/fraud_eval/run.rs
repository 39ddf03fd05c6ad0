//! One evaluation: generate the traffic, start a fresh server on it (this executable's
//! `serve`, a new data directory, a free loopback port, the generated configuration),
//! import, wait for the scorer to settle, read every verdict, measure, print.

use super::metrics::{self, Report, Subject, Truth, Verdict};
use super::traffic::{self, Body, Event, Traffic};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lines per import request.
pub const CHUNK_LINES: usize = 20_000;
/// The scorer must have settled this long (nothing changing) before verdicts are read.
const SETTLED: Duration = Duration::from_secs(2);
/// Longest wait for the scorer without any progress.
const STALL_MAX: Duration = Duration::from_secs(120);
const ADMIN_KEY: &str = "fraud-eval-admin-key-0123456789abcdef";
const CLICK_ID_KEY: &str = "fraud-eval-click-id-key-0123456789abcdef";

/// `clicktrail fraud eval` options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub seed: u64,
    /// Multiplies the volumes (1: ~200k clicks).
    pub scale: f64,
    /// One JSON object on standard output instead of the tables.
    pub json: bool,
    /// Keep the data directory, configuration, traffic and labels here.
    pub keep: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            scale: 1.0,
            json: false,
            keep: None,
        }
    }
}

/// Runs the evaluation and prints it; the exit code (0 whatever the numbers: it is a
/// measurement; 1 when the run itself failed).
pub fn run(o: &Options) -> i32 {
    match evaluate(o) {
        Ok(out) => {
            if o.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out.json).unwrap_or_default()
                );
            } else {
                print!("{}", out.text);
            }
            0
        }
        Err(e) => {
            eprintln!("clicktrail fraud eval: {e:#}");
            1
        }
    }
}

struct Outcome {
    json: Value,
    text: String,
}

/// The working directory: removed at the end unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The server under test; killed when dropped (a run that fails part way).
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, config: &Path) -> Result<Server> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = dir.join("server.log");
        let child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", &addr.to_string(), "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting the server")?;
        Ok(Server { child, addr, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 15 s.
    fn stop(mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Admin API calls.
struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Client {
            agent,
            base: format!("http://{addr}"),
        }
    }

    fn read(resp: &mut ureq::http::Response<ureq::Body>) -> Result<(u16, Value)> {
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_string()?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// A GET's body, when 200.
    fn get_text(&self, path: &str) -> Result<String> {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .call()
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_string()?;
        if status != 200 {
            bail!("GET {path}: {status} {text}");
        }
        Ok(text)
    }

    fn get(&self, path: &str) -> Result<Value> {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .call()
            .with_context(|| format!("GET {path}"))?;
        match Self::read(&mut resp)? {
            (200, v) => Ok(v),
            (s, v) => bail!("GET {path}: {s} {v}"),
        }
    }

    fn healthy(&self) -> bool {
        self.agent
            .get(format!("{}/healthz", self.base))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }

    /// One import request; retried while the server says it is busy.
    fn import(&self, body: String) -> Result<Value> {
        let mut delay = Duration::from_millis(200);
        for _ in 0..20 {
            let mut resp = self
                .agent
                .post(format!("{}/api/v1/import", self.base))
                .header("authorization", format!("Bearer {ADMIN_KEY}"))
                .header("content-type", "application/x-ndjson")
                .send(body.as_str())
                .context("POST /api/v1/import")?;
            match Self::read(&mut resp)? {
                (s, v) if (200..300).contains(&s) => return Ok(v),
                (429 | 503, _) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                (s, v) => bail!("POST /api/v1/import: {s} {v}"),
            }
        }
        bail!("POST /api/v1/import: still busy after 20 tries")
    }
}

/// What the scorer says of its progress.
#[derive(Debug, Clone, PartialEq)]
struct Progress {
    caught_up: bool,
    clicks: u64,
    conversions: u64,
    review_queue: u64,
    model: Value,
    rule_hits: u64,
}

fn progress(c: &Client) -> Result<Progress> {
    let s = c.get("/api/v1/fraud/status")?;
    let r = c.get("/api/v1/fraud/rules")?;
    let rule_hits = r["rules"].as_array().map_or(0, |rules| {
        rules
            .iter()
            .map(|x| {
                x["hits"]["clicks"].as_u64().unwrap_or(0)
                    + x["hits"]["conversions"].as_u64().unwrap_or(0)
            })
            .sum()
    });
    Ok(Progress {
        caught_up: s["caught_up"].as_bool().unwrap_or(false),
        clicks: s["scored"]["clicks"].as_u64().unwrap_or(0),
        conversions: s["scored"]["conversions"].as_u64().unwrap_or(0),
        review_queue: s["review_queue"].as_u64().unwrap_or(0),
        model: s["model"].clone(),
        rule_hits,
    })
}

/// Waits until the scorer has scored `clicks` and `conversions` and is caught up; with
/// `settle`, until nothing has changed for [`SETTLED`] too.
fn wait_scored(c: &Client, clicks: u64, conversions: u64, settle: bool) -> Result<Progress> {
    let mut last: Option<Progress> = None;
    let mut since = Instant::now();
    loop {
        let p = progress(c)?;
        let done = p.caught_up && p.clicks >= clicks && p.conversions >= conversions;
        if last.as_ref() != Some(&p) {
            last = Some(p.clone());
            since = Instant::now();
        }
        if done && (!settle || since.elapsed() >= SETTLED) {
            return Ok(p);
        }
        if since.elapsed() > STALL_MAX {
            bail!(
                "the scorer made no progress for {} s: scored {} of {clicks} clicks, {} of {conversions} conversions, caught up: {}",
                STALL_MAX.as_secs(),
                p.clicks,
                p.conversions,
                p.caught_up
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A page of `GET /api/v1/fraud/verdicts`, as far as the harness reads it (typed: a
/// quarter of a million rows through `serde_json::Value` are slow in a debug build).
#[derive(Debug, serde::Deserialize)]
struct VerdictPage {
    verdicts: Vec<VerdictRow>,
    next: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct VerdictRow {
    subject_id: String,
    action: String,
    score: f64,
    hits: Vec<HitRow>,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct HitRow {
    rule: String,
    score: f64,
    reason: String,
}

/// Every subject's latest verdict of one kind, by subject id (and, with `raw`, the rows
/// themselves).
fn verdicts(
    c: &Client,
    kind: &str,
    into: &mut HashMap<String, Verdict>,
    mut raw: Option<&mut HashMap<String, VerdictRow>>,
) -> Result<()> {
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/fraud/verdicts?kind={kind}&limit=100000&cursor={cursor}");
        let page: VerdictPage = serde_json::from_str(&c.get_text(&path)?)
            .with_context(|| format!("GET {path}: not a page of verdicts"))?;
        let more = !page.verdicts.is_empty();
        for v in page.verdicts {
            let verdict = Verdict {
                flagged: v.action == "review" || v.action == "reject",
                hits: v.hits.iter().map(|h| (h.rule.clone(), h.score)).collect(),
            };
            into.insert(v.subject_id.clone(), verdict);
            if let Some(raw) = raw.as_deref_mut() {
                raw.insert(v.subject_id.clone(), v);
            }
        }
        match page.next {
            Some(n) if more => cursor = n,
            _ => return Ok(()),
        }
    }
}

fn truths(t: &Traffic) -> Vec<Truth> {
    t.events
        .iter()
        .filter_map(|e| {
            let subject = match e.body {
                Body::Click(_) => Subject::Click,
                Body::Conversion(_) => Subject::Conversion,
                Body::Impression(_) => return None,
            };
            Some(Truth {
                r#ref: e.r#ref.clone(),
                subject,
                label: e.label.map(|p| p.name().to_string()),
                rule: e.label.map(|p| p.rule().to_string()),
                source: t.affiliates[e.affiliate].source(),
            })
        })
        .collect()
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn evaluate(o: &Options) -> Result<Outcome> {
    let t0 = Instant::now();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let traffic = traffic::generate(o.seed, o.scale, now_us);
    let generated = t0.elapsed();
    let dir = match &o.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!("--keep {}: the directory must be new or empty", d.display());
            }
            WorkDir {
                path: d.clone(),
                keep: true,
            }
        }
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos();
            let p = std::env::temp_dir().join(format!(
                "clicktrail-fraud-eval-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&p)?;
            WorkDir {
                path: p,
                keep: false,
            }
        }
    };
    let config = dir.path.join("config.toml");
    std::fs::write(&config, traffic.config_toml(ADMIN_KEY, CLICK_ID_KEY))?;
    if dir.keep {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.path.join("traffic.ndjson"))?);
        for e in &traffic.events {
            writeln!(f, "{}", traffic.import_line(e, None))?;
        }
        f.flush()?;
        std::fs::write(dir.path.join("labels.csv"), traffic.labels_csv())?;
    }

    let t_server = Instant::now();
    let mut server = Server::start(&dir.path, &config)?;
    let client = Client::new(server.addr);
    let started = Instant::now();
    while !client.healthy() {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("the server exited ({status}):\n{}", server.log_tail());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the server did not answer /healthz within 60 s:\n{}",
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let server_up = t_server.elapsed();

    let result = import_and_measure(&traffic, &client, dir.keep.then_some(dir.path.as_path()));
    let result = match result {
        Ok(r) => r,
        Err(e) => return Err(e.context(format!("server log:\n{}", server.log_tail()))),
    };
    server.stop();
    let (report, m) = result;
    let total = t0.elapsed();

    let counts = traffic.counts();
    let timing = json!({
        "generate_s": secs(generated),
        "server_start_s": secs(server_up),
        "import_s": secs(m.import),
        "import_requests_s": secs(m.posting),
        "import_waiting_for_scorer_s": secs(m.waiting),
        "settle_s": secs(m.settle),
        "verdicts_s": secs(m.read),
        "import_and_scoring_s": secs(m.import + m.settle),
        "total_s": secs(total),
    });
    let not_generated: Vec<Value> = traffic::NOT_GENERATED
        .iter()
        .map(|(rule, why)| json!({"rule": rule, "why": why}))
        .collect();
    let json = json!({
        "seed": o.seed,
        "scale": o.scale,
        "period": {
            "from": crate::ledger_api::rfc3339(traffic.start_us),
            "to": crate::ledger_api::rfc3339(traffic.end_us),
        },
        "traffic": counts,
        "import": {"lines": m.lines, "imported": m.imported, "refused": m.refused, "refused_examples": m.refused_examples},
        "scorer": {"model": m.progress.model, "scored_clicks": m.progress.clicks, "scored_conversions": m.progress.conversions, "review_queue": m.progress.review_queue},
        "timing": timing,
        "report": report,
        "not_generated": not_generated,
        "kept": dir.keep.then(|| dir.path.display().to_string()),
    });
    if dir.keep {
        std::fs::write(
            dir.path.join("report.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "clicktrail fraud eval: seed {}, scale {}, {} days of traffic to {}",
        o.seed,
        o.scale,
        traffic::DAYS,
        crate::ledger_api::rfc3339(traffic.end_us)
    );
    let share = |n: u64, of: u64| {
        metrics::ratio(n, of).map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
    };
    let _ = writeln!(
        text,
        "traffic: {} clicks ({} fraudulent, {}), {} conversions ({} fraudulent, {}), {} impressions; {} affiliates: {} legitimate, {} real but also cheating, {} fraudulent",
        counts.clicks,
        counts.fraud_clicks,
        share(counts.fraud_clicks, counts.clicks),
        counts.conversions,
        counts.fraud_conversions,
        share(counts.fraud_conversions, counts.conversions),
        counts.impressions,
        counts.affiliates,
        counts.legit_affiliates,
        counts.mixed_affiliates,
        counts.fraud_affiliates
    );
    let _ = writeln!(
        text,
        "import: {} lines in {} requests, {} imported, {} refused{}",
        m.lines,
        m.requests,
        m.imported,
        m.refused,
        m.refused_examples
            .first()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
    let model = &m.progress.model;
    let _ = writeln!(
        text,
        "anomaly model: {}",
        if model.is_null() {
            "none trained".to_string()
        } else {
            format!(
                "v{} trained on {} conversions",
                model["version"], model["samples"]
            )
        }
    );
    let _ = writeln!(
        text,
        "time: generate {:.1} s, server start {:.1} s, import {:.1} s (requests {:.1} s, waiting for the scorer to catch up after each {:.1} s), settled {:.1} s later (import + scoring {:.1} s), verdicts read in {:.1} s; total {:.1} s\n",
        secs(generated),
        secs(server_up),
        secs(m.import),
        secs(m.posting),
        secs(m.waiting),
        secs(m.settle),
        secs(m.import + m.settle),
        secs(m.read),
        secs(total)
    );
    text.push_str(&report.table());
    for (rule, why) in traffic::NOT_GENERATED {
        let _ = writeln!(text, "\nnot generated: {rule}: {why}");
    }
    if dir.keep {
        let _ = writeln!(
            text,
            "\nkept in {}: config.toml, traffic.ndjson, labels.csv, outcomes.ndjson (each click and conversion: label, verdict), report.json, server.log, data/",
            dir.path.display()
        );
    }
    Ok(Outcome { json, text })
}

/// Figures of the import and the wait.
struct Measured {
    lines: usize,
    requests: usize,
    imported: u64,
    refused: u64,
    refused_examples: Vec<String>,
    import: Duration,
    /// Of `import`: answering the requests, and waiting for the scorer after each.
    posting: Duration,
    waiting: Duration,
    settle: Duration,
    read: Duration,
    progress: Progress,
}

/// One line per click and conversion: its label and what the scorer made of it (the
/// verdict as the API gave it; none for an allowed click).
fn write_outcomes(
    t: &Traffic,
    ids: &HashMap<String, String>,
    raw: &HashMap<String, VerdictRow>,
    path: &Path,
) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in t.events.iter().filter(|e| e.kind() != "impression") {
        let id = ids.get(&e.r#ref);
        let v = id.and_then(|id| raw.get(id));
        let line = json!({
            "ref": e.r#ref,
            "kind": e.kind(),
            "label": e.label.map_or("legit", |p| p.name()),
            "variant": e.variant,
            "affiliate": t.affiliates[e.affiliate].id,
            "source": t.affiliates[e.affiliate].source(),
            "id": id,
            "action": v.map_or("allow", |v| v.action.as_str()),
            "score": v.map_or(0.0, |v| v.score),
            "hits": v.map_or(&[][..], |v| &v.hits[..]),
        });
        writeln!(f, "{line}")?;
    }
    f.flush()?;
    Ok(())
}

fn import_and_measure(
    t: &Traffic,
    client: &Client,
    keep: Option<&Path>,
) -> Result<(Report, Measured)> {
    let t_import = Instant::now();
    let mut ids: HashMap<String, String> = HashMap::new();
    let (mut imported, mut refused, mut requests) = (0u64, 0u64, 0usize);
    let mut refused_examples = Vec::new();
    let (mut clicks, mut conversions) = (0u64, 0u64);
    let (mut posting, mut waiting) = (Duration::ZERO, Duration::ZERO);
    for chunk in t.events.chunks(CHUNK_LINES) {
        let mut body = String::with_capacity(chunk.len() * 400);
        for e in chunk {
            let click_id = match &e.body {
                Body::Conversion(s) => ids.get(&t.events[s.click].r#ref).map(String::as_str),
                _ => None,
            };
            body.push_str(&t.import_line(e, click_id));
            body.push('\n');
        }
        let tp = Instant::now();
        let answer = client.import(body)?;
        posting += tp.elapsed();
        requests += 1;
        imported += answer["imported"].as_u64().unwrap_or(0);
        if let Some(list) = answer["refused"].as_array() {
            refused += list.len() as u64;
            for r in list.iter().take(5 - refused_examples.len().min(5)) {
                let line = r["line"].as_u64().unwrap_or(0) as usize;
                let what = chunk
                    .get(line.saturating_sub(1))
                    .map_or(String::new(), |e: &Event| e.r#ref.clone());
                refused_examples.push(format!("{what}: {}", r["error"]));
            }
        }
        if let Some(map) = answer["ids"].as_object() {
            for (r, id) in map {
                if let Some(id) = id.as_str() {
                    match r.as_bytes().first() {
                        Some(b'k') => clicks += 1,
                        Some(b'v') => conversions += 1,
                        _ => {}
                    }
                    ids.insert(r.clone(), id.to_string());
                }
            }
        }
        // Let the scorer catch up before the next request: the anomaly model is trained
        // at its first idle moment with enough conversions, so this keeps when that
        // happens the same from run to run.
        let tw = Instant::now();
        wait_scored(client, clicks, conversions, false)?;
        waiting += tw.elapsed();
    }
    let import = t_import.elapsed();
    let t_settle = Instant::now();
    let progress = wait_scored(client, clicks, conversions, true)?;
    let settle = t_settle.elapsed();
    let t_read = Instant::now();
    let mut all = HashMap::new();
    let mut raw = HashMap::new();
    let mut keep_raw = keep.is_some().then_some(&mut raw);
    verdicts(client, "conversion", &mut all, keep_raw.as_deref_mut())?;
    verdicts(client, "click", &mut all, keep_raw)?;
    if let Some(dir) = keep {
        write_outcomes(t, &ids, &raw, &dir.join("outcomes.ndjson"))?;
    }
    let review = client.get("/api/v1/fraud/rules")?["review_score"]
        .as_f64()
        .unwrap_or(0.5);
    let read = t_read.elapsed();
    let report = metrics::compute(&truths(t), &ids, &all, review);
    Ok((
        report,
        Measured {
            lines: t.events.len(),
            requests,
            imported,
            refused,
            refused_examples,
            import,
            posting,
            waiting,
            settle,
            read,
            progress,
        },
    ))
}
