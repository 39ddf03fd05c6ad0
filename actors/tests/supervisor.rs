//! The supervisor over real actors and a real journal: a worker that panics mid-stream is
//! restarted and its output holds every input exactly once; a worker that keeps failing is
//! given up on and readiness fails; shutdown names a worker that does not stop in time.

use clicktrail_actors::supervisor::{Shutdown, Supervisor, SupervisorConfig};
use clicktrail_actors::{ActorState, Health, Output, Processor};
use clicktrail_storage::{Journal, JournalConfig, Record};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INPUT_KIND: u16 = 0x7000;
const OUTPUT_KIND: u16 = 0x7001;

/// Copies each input to the output; panics when it meets input number `panic_at` while
/// `panics_left` > 0; sleeps `sleep` per input.
struct Echo {
    panic_at: u64,
    panics_left: Arc<AtomicUsize>,
    sleep: Duration,
}

impl Processor for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn inputs(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn output(&self) -> String {
        "out".into()
    }
    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
        let n = u64::from_le_bytes(input.payload[..8].try_into().unwrap());
        if n == self.panic_at
            && self
                .panics_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| p.checked_sub(1))
                .is_ok()
        {
            panic!("injected failure at input {n}");
        }
        std::thread::sleep(self.sleep);
        let mut payload = rkyv::util::AlignedVec::new();
        payload.extend_from_slice(input.payload);
        out.push(Output {
            kind: OUTPUT_KIND,
            version: 1,
            payload,
        });
        Ok(())
    }
}

fn fast_restarts() -> SupervisorConfig {
    SupervisorConfig {
        restart_backoff_initial: Duration::from_millis(10),
        restart_backoff_max: Duration::from_millis(50),
        restarts_max: 3,
        restart_window: Duration::from_secs(60),
        retention_interval: None,
    }
}

fn outputs(journal: &Journal) -> Vec<u64> {
    let mut r = journal.partition("out").unwrap().reader().unwrap();
    let mut v = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        assert_eq!(rec.kind, OUTPUT_KIND);
        v.push(u64::from_le_bytes(rec.payload[..8].try_into().unwrap()));
    }
    v
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

fn echo_supervisor(
    journal: &Journal,
    health: &Health,
    panic_at: u64,
    panics: usize,
    sleep: Duration,
) -> Supervisor {
    let panics_left = Arc::new(AtomicUsize::new(panics));
    Supervisor::new(journal.clone(), health.clone(), fast_restarts()).worker(move || {
        Box::new(Echo {
            panic_at,
            panics_left: panics_left.clone(),
            sleep,
        })
    })
}

#[actix_rt::test]
async fn a_worker_that_panics_mid_stream_resumes_with_every_input_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let health = Health::default();
    let input = journal.partition("in").unwrap();
    let mut w = input.writer().unwrap();
    const N: u64 = 5000;
    // Half before the actor starts, half while it runs (it tails).
    for n in 0..N / 2 {
        w.append(INPUT_KIND, 1, None, &n.to_le_bytes()).unwrap();
    }
    let sup = actix::Actor::start(echo_supervisor(&journal, &health, 3217, 1, Duration::ZERO));
    for n in N / 2..N {
        w.append(INPUT_KIND, 1, None, &n.to_le_bytes()).unwrap();
        if n % 500 == 0 {
            journal.sync().unwrap(); // workers read only durable input
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
    journal.sync().unwrap();
    wait_for("all outputs", Duration::from_secs(20), || {
        outputs(&journal).len() as u64 >= N
    })
    .await;
    // Give a wrongly repeating worker the chance to show itself.
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        outputs(&journal),
        (0..N).collect::<Vec<_>>(),
        "every input exactly once"
    );
    let status = health.snapshot()["echo"].clone();
    assert_eq!(status.restarts_total, 1, "{status:?}");
    assert_eq!(status.state, ActorState::Running);
    assert!(status
        .last_error
        .unwrap()
        .contains("injected failure at input 3217"));
    assert!(health.ready());
    let late = sup
        .send(Shutdown {
            deadline: Duration::from_secs(5),
        })
        .await
        .unwrap();
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(health.snapshot()["echo"].state, ActorState::Stopped);
    drop(w);
    journal.close().unwrap();
}

#[actix_rt::test]
async fn too_many_restarts_give_up_and_fail_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let health = Health::default();
    let mut w = journal.partition("in").unwrap().writer().unwrap();
    for n in 0..10u64 {
        w.append(INPUT_KIND, 1, None, &n.to_le_bytes()).unwrap();
    }
    journal.sync().unwrap();
    let _sup = actix::Actor::start(echo_supervisor(&journal, &health, 5, 1000, Duration::ZERO));
    wait_for("give up", Duration::from_secs(10), || {
        health
            .snapshot()
            .get("echo")
            .is_some_and(|s| s.state == ActorState::GaveUp)
    })
    .await;
    assert!(!health.ready());
    let status = health.snapshot()["echo"].clone();
    assert_eq!(status.state, ActorState::GaveUp);
    assert_eq!(
        status.restarts_total, 3,
        "restarts-max restarts, then give up"
    );
    // Inputs before the poisoned one were processed exactly once despite the restarts.
    assert_eq!(outputs(&journal), (0..5).collect::<Vec<_>>());
    drop(w);
    journal.close().unwrap();
}

#[actix_rt::test]
async fn shutdown_names_a_worker_that_is_late() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let health = Health::default();
    let mut w = journal.partition("in").unwrap().writer().unwrap();
    for n in 0..3u64 {
        w.append(INPUT_KIND, 1, None, &n.to_le_bytes()).unwrap();
    }
    journal.sync().unwrap();
    // Each input takes 2 s, so the worker is inside a batch when shutdown comes.
    let sup = actix::Actor::start(echo_supervisor(
        &journal,
        &health,
        u64::MAX,
        0,
        Duration::from_secs(2),
    ));
    wait_for("running", Duration::from_secs(5), || {
        health
            .snapshot()
            .get("echo")
            .is_some_and(|s| s.state == ActorState::Running)
    })
    .await;
    let started = Instant::now();
    let late = sup
        .send(Shutdown {
            deadline: Duration::from_millis(300),
        })
        .await
        .unwrap();
    assert_eq!(late, vec!["echo".to_string()]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown keeps its deadline"
    );
    drop(w);
    journal.close().unwrap();
}
