//! The supervisor over real actors and a real journal: a worker that panics once mid-stream
//! is rebuilt and its output holds every input exactly once; an input it keeps panicking on
//! becomes a dead letter and the worker goes on; a worker that keeps refusing to go on is
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
/// `panics_left` > 0; refuses to go on (an error) at input `refuse_at`; sleeps `sleep` per
/// input.
struct Echo {
    panic_at: u64,
    panics_left: Arc<AtomicUsize>,
    refuse_at: u64,
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
        if n == self.refuse_at {
            return Err(format!("refusing input {n}"));
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
    refusing_supervisor(journal, health, panic_at, panics, u64::MAX, sleep)
}

fn refusing_supervisor(
    journal: &Journal,
    health: &Health,
    panic_at: u64,
    panics: usize,
    refuse_at: u64,
    sleep: Duration,
) -> Supervisor {
    let panics_left = Arc::new(AtomicUsize::new(panics));
    Supervisor::new(journal.clone(), health.clone(), fast_restarts()).worker(move || {
        Box::new(Echo {
            panic_at,
            panics_left: panics_left.clone(),
            refuse_at,
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
    // Rebuilt in place and the input tried again: not a restart towards giving up.
    assert_eq!(status.restarts_total, 0, "{status:?}");
    assert_eq!(status.state, ActorState::Running);
    assert!(status
        .last_error
        .unwrap()
        .contains("injected failure at input 3217"));
    assert!(health.ready());
    assert!(
        health.dead_letters().list().is_empty(),
        "a passing failure is no dead letter"
    );
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
    let _sup = actix::Actor::start(refusing_supervisor(
        &journal,
        &health,
        u64::MAX,
        0,
        5,
        Duration::ZERO,
    ));
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
    // Inputs before the refused one were processed exactly once despite the restarts.
    assert_eq!(outputs(&journal), (0..5).collect::<Vec<_>>());
    drop(w);
    journal.close().unwrap();
}

/// The poison record of issue 15: an input the processor panics on every time. It used to
/// restart the actor until the supervisor gave up (and replayed it after every process
/// restart); now it is a dead letter, the actor goes on and stays ready, and a restart of
/// the whole tree does not try it again.
#[actix_rt::test]
async fn an_input_that_always_panics_is_a_dead_letter_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalConfig::default()).unwrap();
    let health = Health::default();
    let mut w = journal.partition("in").unwrap().writer().unwrap();
    for n in 0..10u64 {
        w.append(INPUT_KIND, 1, None, &n.to_le_bytes()).unwrap();
    }
    w.publish();
    journal.sync().unwrap();
    let sup = actix::Actor::start(echo_supervisor(&journal, &health, 5, 1000, Duration::ZERO));
    wait_for(
        "the inputs after the poison",
        Duration::from_secs(10),
        || outputs_skipping_dead(&journal).len() == 9,
    )
    .await;
    assert_eq!(outputs_skipping_dead(&journal), [0, 1, 2, 3, 4, 6, 7, 8, 9]);
    let status = health.snapshot()["echo"].clone();
    assert_eq!(
        (status.state, status.restarts_total),
        (ActorState::Running, 0)
    );
    assert!(health.ready());
    let dead = health.dead_letters().list();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].input_partition.as_str(), dead[0].attempts),
        ("in", 1)
    );
    assert!(dead[0].reason.contains("injected failure at input 5"));
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    // A new tree over the same journal: the dead letter is known, nothing is redone.
    let health = Health::default();
    let sup = actix::Actor::start(echo_supervisor(&journal, &health, 5, 1000, Duration::ZERO));
    wait_for("running", Duration::from_secs(5), || {
        health.dead_letters().list().len() == 1
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(outputs_skipping_dead(&journal).len(), 9);
    assert_eq!(health.dead_letters().totals()["echo"], (1, 0));
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    drop(w);
    journal.close().unwrap();
}

fn outputs_skipping_dead(journal: &Journal) -> Vec<u64> {
    let mut r = journal.partition("out").unwrap().reader().unwrap();
    let mut v = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        if rec.kind == OUTPUT_KIND {
            v.push(u64::from_le_bytes(rec.payload[..8].try_into().unwrap()));
        }
    }
    v
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
