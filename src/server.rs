//! Wiring and the HTTP edge: opens the journal, starts the supervised actors and the
//! actix-web server, and on SIGTERM/SIGINT shuts down in order within the deadline:
//!
//! 1. readiness fails at once (load balancers stop sending);
//! 2. the server stops accepting and drains in-flight requests;
//! 3. every actor stops at a clean position (between batches); late ones are named;
//! 4. the journal syncs and closes.

use crate::api::Api;
use crate::config::Config;
use crate::edge::Edge;
use crate::metrics::Metrics;
use actix::Actor;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use clicktrail_actors::catalog::EntityStore;
use clicktrail_actors::{system, Health, Shutdown};
use clicktrail_storage::Journal;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct AppState {
    pub journal: Journal,
    pub health: Health,
    /// Set on the shutdown signal: readiness fails from then on.
    pub shutting_down: AtomicBool,
    pub started: Instant,
    /// The edge's counters and histograms.
    pub metrics: Arc<Metrics>,
    /// The recent-click index, for its reach on `/metrics`.
    pub clicks: clicktrail_actors::clicks::SharedClicks,
    /// The attribution actor's journeys, for their size on `/metrics`.
    pub attribution: clicktrail_actors::attribution::SharedAttribution,
    /// The fraud scorer's figures, for `/metrics`.
    pub fraud: clicktrail_actors::fraud::SharedFraud,
}

/// File in the data directory holding the installation id.
pub const INSTALLATION_ID_FILE: &str = "installation-id";

/// This data directory's installation id (see `PayoutConfig::installation_id`): read from
/// [`INSTALLATION_ID_FILE`], or made on first start: 16 random hex digits for a new data
/// directory, empty for one that already recorded payout items (their keys must not
/// change under an in-flight retry). Written durably before any payout can be tried.
pub fn installation_id(data_dir: &std::path::Path, journal: &Journal) -> anyhow::Result<String> {
    let path = data_dir.join(INSTALLATION_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            anyhow::ensure!(
                id.is_empty() || (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())),
                "{} must hold 16 hex digits (or nothing), not {id:?}",
                path.display()
            );
            return Ok(id.to_string());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let paid_before = journal
        .get(clicktrail_actors::system::PAYOUTS)
        .is_some_and(|p| p.end() > 0);
    let id = if paid_before {
        String::new()
    } else {
        format!("{:016x}", fastrand::u64(..))
    };
    clicktrail_storage::segment::replace_file(&path, format!("{id}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Runs the server until SIGTERM or SIGINT.
pub fn serve(config: Config) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let data_dir = config.journal.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let journal = Journal::open(&data_dir, config.journal_config())
        .with_context(|| format!("cannot open the journal in {}", data_dir.display()))?;
    log::info!(
        "journal open in {} ({} partitions)",
        data_dir.display(),
        journal.partitions().len()
    );
    let store = Arc::new(EntityStore::open(&journal).context("cannot read the entities")?);
    for entity in config.entities() {
        let what = format!("{} {:?}", entity.kind(), entity.id());
        store
            .upsert("config", entity)
            .await
            .with_context(|| format!("cannot record configured {what}"))?;
    }
    if !store
        .snapshot()
        .keys
        .values()
        .any(|k| k.role == clicktrail_actors::catalog::Role::Admin)
    {
        log::warn!(
            "no admin key exists: every admin API call answers 401. Create one on the stopped \
             server with `clicktrail keys create --role admin --data-dir {}` (add the same \
             --config), or add a [[keys]] entry with role = \"admin\" to the configuration",
            data_dir.display()
        );
    }
    let health = Health::default();
    let mut system_config = config.system_config();
    // What a plain date in a request means (`2026-12-01`: midnight there).
    crate::http::time::set_program_zone(system_config.payouts.zone.clone());
    system_config.payouts.installation_id = installation_id(&data_dir, &journal)?;
    // One key for every e-mail hash: the conversion endpoint's and the fraud rules'.
    system_config.fraud.email_key = config.email_hash_key();
    let (supervisor, handles) = system::build(
        journal.clone(),
        health.clone(),
        store.clone(),
        &system_config,
    );
    let metrics = Arc::new(Metrics::default());
    let limits = config.server.edge_limits();
    let guard = crate::http::Guard::new(metrics.clone(), limits.body_timeout);
    let per_ip = (limits.connections_per_ip_max > 0).then(|| {
        crate::http::per_ip::PerIpLimiter::new(
            limits.connections_per_ip_max,
            config.trusted_proxies().expect("validated when loaded"),
            metrics.clone(),
        )
    });
    let edge = web::Data::new(Edge::new(
        store.clone(),
        handles.ingest.clone(),
        metrics.clone(),
        &config.secrets.click_id_key,
        config.node.id,
        config.trusted_proxies()?,
        config.tracking.clone(),
    ));
    // The import's references are read in the conversion index's pass.
    let mut import_refs = crate::import::RefIndex::default();
    let conversions = web::Data::new(
        crate::convert::Conversions::load(
            &journal,
            store.clone(),
            handles.ingest.clone(),
            handles.clicks.clone(),
            crate::convert::Settings {
                click_id_key: config.secrets.click_id_key.clone(),
                fingerprint_window: Duration::from_secs(
                    config.conversions.fingerprint_window_hours * 3600,
                ),
                email_hash_key: system_config.fraud.email_key.clone(),
                ip_truncation: config.tracking.ip_truncation,
            },
            &mut |partition, rec| import_refs.note(partition, rec),
        )
        .context("cannot read the conversions")?,
    );
    log::info!("import references known: {}", import_refs.len());
    let importer = web::Data::new(crate::import::Importer::new(
        edge.clone(),
        conversions.clone(),
        import_refs,
        (&config.import).into(),
    ));
    let import_max_bytes = crate::import::Limits::from(&config.import).max_bytes;
    let api = web::Data::new(Api {
        store,
        stats: handles.stats.clone(),
        journal: journal.clone(),
        postback_commands: handles.postback_commands.clone(),
        deliveries: Default::default(),
        ledger: handles.ledger.clone(),
        payouts: handles.payouts.clone(),
        payout_commands: handles.payout_commands.clone(),
        dead_letters: health.dead_letters().clone(),
        postback_destinations: config.postback_destinations(),
        attribution: handles.attribution.clone(),
        attribution_shapley_exact_max: config.attribution.shapley_exact_max,
        fraud: handles.fraud.clone(),
        fraud_config: system_config.fraud.clone(),
        ingest: handles.ingest.clone(),
    });
    let state = web::Data::new(AppState {
        journal: journal.clone(),
        health,
        shutting_down: AtomicBool::new(false),
        started: Instant::now(),
        metrics,
        clicks: handles.clicks.clone(),
        attribution: handles.attribution.clone(),
        fraud: handles.fraud.clone(),
    });
    let deadline = Duration::from_millis(config.server.shutdown_deadline_ms);
    let workers = match config.server.workers {
        // Two per core: a click handler can stall briefly on a page fault of the mapped
        // journal (the kernel write-protects pages it is writing back), and a second worker
        // keeps the core busy meanwhile. Measured with wrk on 2 cores: 1 worker 31.6k
        // clicks/s, 2: 33.6k, 4: 43.5k, 6: 45.7k, 8: 40.2k.
        0 => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let app_state = state.clone();
    let http = HttpServer::new(move || {
        App::new()
            // Outermost: the connection and request limits (`crate::http`).
            .wrap_fn(move |req, srv| guard.call(req, srv))
            .app_data(app_state.clone())
            .app_data(edge.clone())
            .app_data(api.clone())
            .app_data(conversions.clone())
            .app_data(importer.clone())
            // The tracking paths first, as static prefixes: actix tries services in order
            // and the API's `{param}` routes cost a regex match each per request.
            .service(web::scope("/c").default_service(web::to(crate::edge::click)))
            .service(web::scope("/i").default_service(web::to(crate::edge::impression)))
            .configure(routes)
            .configure(crate::convert::routes)
            // Before the API's scope, whose `/{kind}` would take `/import`.
            .configure(crate::import::routes(import_max_bytes))
            .configure(crate::api::routes)
            .default_service(web::to(crate::edge::default_service))
    })
    .disable_signals()
    .workers(workers)
    .max_connections(config.server.connections_max)
    .client_request_timeout(limits.header_timeout)
    .keep_alive(limits.keep_alive_timeout)
    .client_disconnect_timeout(limits.disconnect_timeout)
    .shutdown_timeout(deadline.as_secs().max(1));
    let http = match per_ip {
        Some(limiter) => http.on_connect(crate::http::per_ip::on_connect(limiter)),
        None => http,
    };
    let http = http
        .bind(config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    // Actors start once the address is ours, so a busy port fails before any work begins.
    let supervisor = supervisor.start();
    for addr in http.addrs() {
        log::info!("listening on http://{addr}");
    }
    // Serve only once the ingest shards hold their writers: before that every click would
    // be a 503.
    let started = Instant::now();
    while !ingest_running(&state.health) {
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("ingest shards did not start within 30 s");
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let server = http.run();
    let handle = server.handle();
    let serving = actix_rt::spawn(server);

    let signal = wait_for_signal().await?;
    let begun = Instant::now();
    log::info!("{signal}: shutting down (deadline {deadline:?})");
    state.shutting_down.store(true, Ordering::SeqCst);
    handle.stop(true).await;
    let _ = serving.await;
    let left = deadline
        .saturating_sub(begun.elapsed())
        .max(Duration::from_millis(100));
    let late = supervisor
        .send(Shutdown { deadline: left })
        .await
        .unwrap_or_default();
    journal.close().context("final journal sync failed")?;
    if late.is_empty() {
        log::info!("clean shutdown in {:?}", begun.elapsed());
    } else {
        log::error!(
            "shutdown deadline passed; late actors: {} (their work resumes from the journal on restart)",
            late.join(", ")
        );
    }
    Ok(())
}

fn ingest_running(health: &Health) -> bool {
    let actors = health.snapshot();
    let shards: Vec<_> = actors
        .iter()
        .filter(|(n, _)| n.starts_with("ingest-shard-"))
        .collect();
    !shards.is_empty()
        && shards
            .iter()
            .all(|(_, s)| s.state == clicktrail_actors::ActorState::Running)
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// The routes of the edge.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Liveness: the process answers HTTP.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// What keeps the journal from serving: syncs or segment allocations failing (a full
/// disk), and damage recovery kept that no operator has accepted yet (`clicktrail journal
/// accept-damage`).
fn journal_problems(journal: &clicktrail_storage::Journal) -> Vec<String> {
    let mut problems = Vec::new();
    for p in journal.partitions() {
        if p.sync_failing() {
            problems.push(format!("journal partition {} cannot sync", p.name()));
        }
        if p.write_failing() {
            problems.push(format!(
                "journal partition {} refuses appends: no segment can be allocated (disk full?)",
                p.name()
            ));
        }
        for d in p.damage().iter().filter(|d| !d.accepted) {
            problems.push(format!(
                "journal partition {} is damaged at offsets {}..{} ({} bytes, about {} \
                 record(s) lost, {} intact records after it kept): {}; check `clicktrail \
                 journal verify`, then `clicktrail journal accept-damage --partition {}`",
                d.partition, d.from, d.to, d.bytes, d.frames, d.records_after, d.why, d.partition
            ));
        }
    }
    problems
}

/// Readiness: every actor runs, the journal syncs, and we are not shutting down.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut problems = Vec::new();
    if state.shutting_down.load(Ordering::SeqCst) {
        problems.push("shutting down".to_string());
    }
    problems.extend(journal_problems(&state.journal));
    let actors = state.health.snapshot();
    for (name, s) in &actors {
        use clicktrail_actors::ActorState::*;
        match s.state {
            GaveUp => problems.push(format!(
                "actor {name} failed too often: {}",
                s.last_error.as_deref().unwrap_or("?")
            )),
            Stopped => problems.push(format!("actor {name} stopped")),
            Starting => problems.push(format!("actor {name} is starting")),
            Running | Restarting => {}
        }
    }
    // Dead letters are detail, not a failure: traffic is still served and every other
    // input still processed; an operator looks at them through the API.
    let dead = state.health.dead_letters().open_by_actor();
    let warnings: Vec<String> = dead
        .iter()
        .map(|(actor, n)| {
            format!("actor {actor} skipped {n} input(s) it could not process (GET /api/v1/dead-letters)")
        })
        .collect();
    let body = serde_json::json!({
        "ready": problems.is_empty(),
        "problems": problems,
        "warnings": warnings,
        "dead_letters": dead,
        "actors": actors.iter().map(|(n, s)| (n.clone(), serde_json::json!({
            "state": s.state.as_str(),
            "restarts_total": s.restarts_total,
            "last_error": s.last_error,
        }))).collect::<serde_json::Map<_, _>>(),
    });
    if problems.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Open dead letters (the alert: above zero means an actor skipped inputs) and the totals.
fn dead_letter_metrics(out: &mut String, health: &Health) {
    let dead = health.dead_letters();
    let open = dead.open_by_actor();
    let totals = dead.totals();
    let _ = writeln!(
        out,
        "# HELP clicktrail_dead_letters Inputs an actor could not process and skipped, not yet resolved.\n\
         # TYPE clicktrail_dead_letters gauge"
    );
    for actor in totals.keys() {
        let n = open.get(actor).copied().unwrap_or(0);
        let _ = writeln!(out, "clicktrail_dead_letters{{actor=\"{actor}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP clicktrail_dead_letter_failures_total Failed attempts recorded as dead letters.\n\
         # TYPE clicktrail_dead_letter_failures_total counter"
    );
    for (actor, (failed, _)) in &totals {
        let _ = writeln!(
            out,
            "clicktrail_dead_letter_failures_total{{actor=\"{actor}\"}} {failed}"
        );
    }
}

/// Prometheus text exposition.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::with_capacity(4096);
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    gauge(
        &mut out,
        "clicktrail_uptime_seconds",
        "Seconds since the process started.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "clicktrail_uptime_seconds {:.3}",
        state.started.elapsed().as_secs_f64()
    );
    gauge(
        &mut out,
        "clicktrail_ready",
        "1 when /readyz answers 200.",
        "gauge",
    );
    let ready = state.health.ready()
        && !state.shutting_down.load(Ordering::SeqCst)
        && journal_problems(&state.journal).is_empty();
    let _ = writeln!(out, "clicktrail_ready {}", u8::from(ready));
    dead_letter_metrics(&mut out, &state.health);
    let parts = state.journal.partitions();
    gauge(
        &mut out,
        "clicktrail_journal_end_bytes",
        "Published end offset per partition.",
        "gauge",
    );
    for p in &parts {
        let _ = writeln!(
            out,
            "clicktrail_journal_end_bytes{{partition=\"{}\"}} {}",
            p.name(),
            p.end()
        );
    }
    gauge(
        &mut out,
        "clicktrail_journal_durable_bytes",
        "Synced end offset per partition.",
        "gauge",
    );
    for p in &parts {
        let _ = writeln!(
            out,
            "clicktrail_journal_durable_bytes{{partition=\"{}\"}} {}",
            p.name(),
            p.durable()
        );
    }
    gauge(
        &mut out,
        "clicktrail_journal_write_failures_total",
        "Appends refused per partition because no segment could be allocated (disk full).",
        "counter",
    );
    for p in &parts {
        let _ = writeln!(
            out,
            "clicktrail_journal_write_failures_total{{partition=\"{}\"}} {}",
            p.name(),
            p.write_failures()
        );
    }
    gauge(
        &mut out,
        "clicktrail_journal_writes_failing",
        "1 while a partition refuses appends because no segment can be allocated.",
        "gauge",
    );
    for p in &parts {
        let _ = writeln!(
            out,
            "clicktrail_journal_writes_failing{{partition=\"{}\"}} {}",
            p.name(),
            u8::from(p.write_failing())
        );
    }
    gauge(
        &mut out,
        "clicktrail_journal_damaged_ranges",
        "Damaged ranges recovery kept and readers skip, by whether an operator accepted them.",
        "gauge",
    );
    for p in &parts {
        let damage = p.damage();
        let open = damage.iter().filter(|d| !d.accepted).count();
        let _ = writeln!(
            out,
            "clicktrail_journal_damaged_ranges{{partition=\"{0}\",state=\"open\"}} {open}\n\
             clicktrail_journal_damaged_ranges{{partition=\"{0}\",state=\"accepted\"}} {1}",
            p.name(),
            damage.len() - open
        );
    }
    let (indexed, capacity, oldest, fingerprints) = {
        let c = state
            .clicks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            c.len(),
            c.capacity(),
            c.oldest_at_us(),
            c.fingerprint_reach(),
        )
    };
    let span_s = |oldest: Option<i64>| {
        oldest.map_or(0.0, |o| {
            clicktrail_actors::catalog::now_us()
                .saturating_sub(o)
                .max(0) as f64
                / 1e6
        })
    };
    gauge(
        &mut out,
        "clicktrail_click_index_clicks",
        "Clicks kept whole in the recent-click index.",
        "gauge",
    );
    let _ = writeln!(out, "clicktrail_click_index_clicks {indexed}");
    gauge(
        &mut out,
        "clicktrail_click_index_capacity",
        "Most clicks the index keeps (conversions.click-index-max).",
        "gauge",
    );
    let _ = writeln!(out, "clicktrail_click_index_capacity {capacity}");
    gauge(
        &mut out,
        "clicktrail_click_index_span_seconds",
        "How far back the index reaches: now minus its oldest click (0 when empty).",
        "gauge",
    );
    let _ = writeln!(
        out,
        "clicktrail_click_index_span_seconds {:.3}",
        span_s(oldest)
    );
    let (remembered, most, oldest) = fingerprints;
    gauge(
        &mut out,
        "clicktrail_fingerprint_index_fingerprints",
        "Browser fingerprints remembered for fingerprint matches.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "clicktrail_fingerprint_index_fingerprints {remembered}"
    );
    gauge(
        &mut out,
        "clicktrail_fingerprint_index_capacity",
        "Most fingerprinted clicks remembered (conversions.fingerprint-index-max).",
        "gauge",
    );
    let _ = writeln!(out, "clicktrail_fingerprint_index_capacity {most}");
    gauge(
        &mut out,
        "clicktrail_fingerprint_index_span_seconds",
        "How far back fingerprint matches reach: now minus the oldest remembered click (0 when empty).",
        "gauge",
    );
    let _ = writeln!(
        out,
        "clicktrail_fingerprint_index_span_seconds {:.3}",
        span_s(oldest)
    );
    gauge(
        &mut out,
        "clicktrail_journal_segments",
        "Segment files held per partition.",
        "gauge",
    );
    for p in &parts {
        let _ = writeln!(
            out,
            "clicktrail_journal_segments{{partition=\"{}\"}} {}",
            p.name(),
            p.segment_count()
        );
    }
    state.metrics.render(&mut out);
    let actors = state.health.snapshot();
    gauge(
        &mut out,
        "clicktrail_actor_restarts_total",
        "Restarts per actor.",
        "counter",
    );
    for (n, s) in &actors {
        let _ = writeln!(
            out,
            "clicktrail_actor_restarts_total{{actor=\"{n}\"}} {}",
            s.restarts_total
        );
    }
    gauge(
        &mut out,
        "clicktrail_actor_up",
        "1 while the actor runs.",
        "gauge",
    );
    for (n, s) in &actors {
        let up = s.state == clicktrail_actors::ActorState::Running;
        let _ = writeln!(out, "clicktrail_actor_up{{actor=\"{n}\"}} {}", u8::from(up));
    }
    attribution_metrics(&mut out, &state.attribution);
    crate::fraud_api::metrics(&mut out, &state.fraud);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

/// The attribution actor's journey store and training figures.
fn attribution_metrics(out: &mut String, view: &clicktrail_actors::attribution::SharedAttribution) {
    use std::fmt::Write;
    let (open, touches, bytes, evicted, waiting, trained) = view.read(|v| {
        (
            v.open_journeys,
            v.touches,
            v.journey_bytes,
            v.evicted_journeys,
            v.waiting_conversions,
            v.training.values().map(|t| t.journeys).sum::<u64>(),
        )
    });
    for (name, kind, help, value) in [
        (
            "clicktrail_attribution_open_journeys",
            "gauge",
            "Open journeys (attribution.journeys-max bounds them).",
            open,
        ),
        (
            "clicktrail_attribution_touches",
            "gauge",
            "Touches held in open journeys.",
            touches,
        ),
        (
            "clicktrail_attribution_journey_bytes",
            "gauge",
            "Estimated memory of the journey store, in bytes.",
            bytes,
        ),
        (
            "clicktrail_attribution_evicted_journeys_total",
            "counter",
            "Journeys ended early to stay within attribution.journeys-max.",
            evicted,
        ),
        (
            "clicktrail_attribution_waiting_conversions",
            "gauge",
            "Conversions waiting for their matched click to be read.",
            waiting,
        ),
        (
            "clicktrail_attribution_trained_journeys",
            "gauge",
            "Journeys in the training sets of the data-driven models.",
            trained,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod installation_tests {
    use super::*;
    use clicktrail_storage::JournalConfig;

    #[test]
    fn installation_ids_are_made_once_and_empty_where_payouts_came_before_them() {
        // A new data directory gets 16 random hex digits, kept across restarts.
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), JournalConfig::default()).unwrap();
        let id = installation_id(dir.path(), &journal).unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(installation_id(dir.path(), &journal).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        let j2 = Journal::open(other.path(), JournalConfig::default()).unwrap();
        assert_ne!(installation_id(other.path(), &j2).unwrap(), id);

        // One that recorded payout items before ids existed keeps the bare item ids.
        let old = tempfile::tempdir().unwrap();
        let j3 = Journal::open(old.path(), JournalConfig::default()).unwrap();
        let mut w = j3
            .partition(clicktrail_actors::system::PAYOUTS)
            .unwrap()
            .writer()
            .unwrap();
        w.append(0x7000, 1, None, &[0u8; 8]).unwrap();
        drop(w);
        assert_eq!(installation_id(old.path(), &j3).unwrap(), "");
        assert_eq!(installation_id(old.path(), &j3).unwrap(), "");

        // A damaged file stops the server rather than changing the keys.
        std::fs::write(dir.path().join(INSTALLATION_ID_FILE), "xyz\n").unwrap();
        assert!(installation_id(dir.path(), &journal).is_err());
    }
}
