//! The supervisor: starts one actor per concern, each on its own arbiter (thread), restarts a
//! failed one with exponential backoff, gives up loudly after too many restarts in a window
//! (failing readiness), and stops them all on shutdown within a deadline, naming the late.
//!
//! A child reports failure with [`Failed`] (a journal error, or a panic caught in its
//! handler) and stops; the supervisor builds a fresh instance, which rebuilds its state from
//! the journal. Each start has a generation number so a late report from an old instance
//! cannot trigger a second restart.

use crate::dead_letter::panic_message;
use crate::health::{ActorState, Health};
use crate::worker::{self, Processor, WorkerCore};
use actix::prelude::*;
use clicktrail_storage::Journal;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Supervision settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// First restart delay; doubles per restart in the window. Default: 100 ms.
    pub restart_backoff_initial: Duration,
    /// Longest restart delay. Default: 10 s.
    pub restart_backoff_max: Duration,
    /// Restarts allowed in `restart_window` before giving up. Default: 5.
    pub restarts_max: usize,
    /// Window for counting restarts. Default: 60 s.
    pub restart_window: Duration,
    /// How often retention runs; `None` keeps every segment. Default: `None`.
    pub retention_interval: Option<Duration>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            restart_backoff_initial: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            restarts_max: 5,
            restart_window: Duration::from_secs(60),
            retention_interval: None,
        }
    }
}

/// What a child needs to know about its place under the supervisor.
#[derive(Debug, Clone)]
pub struct ChildCtx {
    pub name: String,
    pub generation: u64,
    pub journal: Journal,
    pub supervisor: Recipient<Failed>,
    /// Where the child reports that it runs.
    pub health: Health,
}

impl ChildCtx {
    /// Reports that this instance is up and working.
    pub fn running(&self) {
        self.health.set(&self.name, ActorState::Running, None);
    }

    /// Reports this instance's failure to the supervisor.
    pub fn fail(&self, reason: String) {
        log::error!(
            "actor {} (generation {}) failed: {reason}",
            self.name,
            self.generation
        );
        self.supervisor.do_send(Failed {
            name: self.name.clone(),
            generation: self.generation,
            reason,
        });
    }
}

/// A child's failure report.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Failed {
    pub name: String,
    pub generation: u64,
    pub reason: String,
}

/// Asks a child to stop at a clean position; it answers with its positions.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(String, u64)>")]
pub struct Stop;

/// The actor shell of a concern that works on its own thread (blocking I/O: postback
/// delivery, payouts). `body` opens its state, reports running through the context, and
/// works until the flag is set; an error or a panic fails the child. [`Stop`] sets the flag
/// and joins the thread.
pub struct ThreadActor {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ThreadActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadActor")
    }
}

impl ThreadActor {
    /// Starts `body` on a thread named `name`, owned by an actor on `arbiter`.
    pub fn start<F>(arbiter: &ArbiterHandle, ctx: ChildCtx, name: &str, body: F) -> Recipient<Stop>
    where
        F: FnOnce(&ChildCtx, Arc<std::sync::atomic::AtomicBool>) -> Result<(), String>
            + Send
            + 'static,
    {
        let name = name.to_string();
        ThreadActor::start_in_arbiter(arbiter, move |_| {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s = stop.clone();
            let thread = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&ctx, s))) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => ctx.fail(e),
                        Err(p) => ctx.fail(format!("{name} panicked: {}", panic_message(&*p))),
                    }
                })
                .expect("spawn an actor thread");
            ThreadActor {
                stop,
                thread: Some(thread),
            }
        })
        .recipient()
    }
}

impl Actor for ThreadActor {
    type Context = Context<Self>;
}

impl Handler<Stop> for ThreadActor {
    type Result = MessageResult<Stop>;

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) -> Self::Result {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        ctx.stop();
        MessageResult(Vec::new())
    }
}

/// Asks the supervisor to stop every child within `deadline`. Answers with the names of
/// the children that did not stop in time.
#[derive(Debug, Message)]
#[rtype(result = "Vec<String>")]
pub struct Shutdown {
    pub deadline: Duration,
}

/// Starts one instance of a child on `arbiter` and returns how to stop it.
pub type StartFn = Arc<dyn Fn(&ArbiterHandle, ChildCtx) -> Recipient<Stop> + Send + Sync>;

struct Child {
    start: StartFn,
    arbiter: Arbiter,
    generation: u64,
    stop: Option<Recipient<Stop>>,
    restarts: VecDeque<Instant>,
    gave_up: bool,
}

/// See the module docs.
pub struct Supervisor {
    journal: Journal,
    health: Health,
    config: SupervisorConfig,
    children: BTreeMap<String, Child>,
    stopping: bool,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("children", &self.children.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Supervisor {
    pub fn new(journal: Journal, health: Health, config: SupervisorConfig) -> Self {
        Supervisor {
            journal,
            health,
            config,
            children: BTreeMap::new(),
            stopping: false,
        }
    }

    /// Adds a child started by `start` (call before `start()`ing the supervisor).
    pub fn child(mut self, name: &str, start: StartFn) -> Self {
        assert!(
            !self.children.contains_key(name),
            "two children named {name}"
        );
        self.children.insert(
            name.to_string(),
            Child {
                start,
                arbiter: Arbiter::new(),
                generation: 0,
                stop: None,
                restarts: VecDeque::new(),
                gave_up: false,
            },
        );
        self.health.set(name, ActorState::Starting, None);
        self
    }

    /// Adds a journal-tailing worker whose processor `make` builds (once per start).
    pub fn worker<F>(self, make: F) -> Self
    where
        F: Fn() -> Box<dyn Processor> + Send + Sync + 'static,
    {
        let name = make().name().to_string();
        let make: MakeProcessor = Arc::new(make);
        self.child(
            &name,
            Arc::new(move |arbiter, ctx| {
                let make = make.clone();
                Worker::start_in_arbiter(arbiter, move |_| Worker {
                    make,
                    core: None,
                    ctx,
                })
                .recipient()
            }),
        )
    }

    fn start_child(&mut self, name: &str, me: Recipient<Failed>) {
        let journal = self.journal.clone();
        let child = self.children.get_mut(name).unwrap();
        child.generation += 1;
        let ctx = ChildCtx {
            name: name.to_string(),
            generation: child.generation,
            journal,
            supervisor: me,
            health: self.health.clone(),
        };
        child.stop = Some((child.start)(&child.arbiter.handle(), ctx));
        log::info!("actor {name} started (generation {})", child.generation);
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            self.start_child(&name, ctx.address().recipient());
        }
        if let Some(every) = self.config.retention_interval {
            ctx.run_interval(every, |this, _| match this.journal.retain() {
                Ok(0) => {}
                Ok(n) => log::info!("retention removed {n} segments"),
                Err(e) => log::error!("retention failed: {e}"),
            });
        }
    }
}

impl Handler<Failed> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Failed, ctx: &mut Context<Self>) {
        let config = self.config.clone();
        let Some(child) = self.children.get_mut(&msg.name) else {
            return;
        };
        if msg.generation != child.generation || self.stopping || child.gave_up {
            return; // a late report from an instance already replaced, or shutting down
        }
        child.stop = None;
        let now = Instant::now();
        while child
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > config.restart_window)
        {
            child.restarts.pop_front();
        }
        if child.restarts.len() >= config.restarts_max {
            child.gave_up = true;
            log::error!(
                "actor {} failed {} times within {:?}; giving up, readiness fails: {}",
                msg.name,
                child.restarts.len() + 1,
                config.restart_window,
                msg.reason
            );
            self.health
                .set(&msg.name, ActorState::GaveUp, Some(msg.reason));
            return;
        }
        child.restarts.push_back(now);
        let shift = (child.restarts.len() - 1).min(20) as u32;
        let delay = config
            .restart_backoff_initial
            .saturating_mul(1 << shift)
            .min(config.restart_backoff_max);
        log::warn!("actor {} restarts in {delay:?}: {}", msg.name, msg.reason);
        self.health
            .set(&msg.name, ActorState::Restarting, Some(msg.reason));
        self.health.count_restart(&msg.name);
        let name = msg.name;
        ctx.run_later(delay, move |this, ctx| {
            if !this.stopping {
                this.start_child(&name, ctx.address().recipient());
            }
        });
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<Vec<String>>;

    fn handle(&mut self, msg: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let stops: Vec<(String, Recipient<Stop>)> = self
            .children
            .iter_mut()
            .filter_map(|(n, c)| c.stop.take().map(|s| (n.clone(), s)))
            .collect();
        let health = self.health.clone();
        let arbiters: Vec<Arbiter> = std::mem::take(&mut self.children)
            .into_values()
            .map(|c| c.arbiter)
            .collect();
        Box::pin(async move {
            // All stops run at once, so the whole shutdown takes at most one deadline.
            let pending: Vec<_> = stops
                .into_iter()
                .map(|(name, stop)| {
                    let wait = tokio::time::timeout(msg.deadline, stop.send(Stop));
                    (name, actix_rt::spawn(wait))
                })
                .collect();
            let mut late = Vec::new();
            for (name, handle) in pending {
                match handle.await {
                    Ok(Ok(Ok(positions))) => {
                        log::info!("actor {name} stopped at {positions:?}");
                        health.set(&name, ActorState::Stopped, None);
                    }
                    Ok(Ok(Err(_))) => health.set(&name, ActorState::Stopped, None),
                    Ok(Err(_)) | Err(_) => {
                        log::error!("actor {name} did not stop within {:?}", msg.deadline);
                        late.push(name);
                    }
                }
            }
            for a in arbiters {
                a.stop();
            }
            late
        })
    }
}

/// After a wake-up, how long a caught-up worker lets records gather before it reads them.
/// Under load every append would otherwise wake every tailing actor (a syscall and a
/// context switch each); at 20,000 records/s this turns 20,000 wake-ups per actor per
/// second into at most 500, at the price of up to 2 ms more latency for derived records.
pub const TAIL_COALESCE: Duration = Duration::from_millis(2);

/// How long a worker whose output cannot be written for lack of disk space waits before it
/// reopens and tries again (the journal's own allocation backoff tops out at 1 s).
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(1);

/// Builds one instance of a worker's processor.
pub type MakeProcessor = Arc<dyn Fn() -> Box<dyn Processor> + Send + Sync>;

/// Message that drives a worker: process a batch, or sleep until an input grows.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Tick;

/// The actix shell around a [`WorkerCore`].
pub struct Worker {
    /// Builds the processor: at start, and again after a poison input.
    make: MakeProcessor,
    core: Option<WorkerCore>,
    ctx: ChildCtx,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.ctx.name)
            .finish()
    }
}

/// Runs `f`, turning a panic into an error message (the instance is then discarded whole,
/// so no half-updated state survives it). A poisoned input stays an error of its own.
fn guarded<T>(f: impl FnOnce() -> worker::Result<T>) -> Result<T, worker::Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(worker::Error::Process {
            processor: "worker".into(),
            why: format!("panicked: {}", panic_message(&*p)),
        }),
    }
}

impl Worker {
    fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.core = None; // drops the writer and readers before a new instance takes them
        self.ctx.fail(reason);
        ctx.stop();
    }

    /// Builds the processor afresh and restores it from the journal; answers whether it
    /// could (on failure the child is failed and stopped).
    fn open(&mut self, ctx: &mut Context<Self>) -> bool {
        self.core = None;
        let journal = self.ctx.journal.clone();
        let dead = self.ctx.health.dead_letters().clone();
        let make = self.make.clone();
        match guarded(|| WorkerCore::open_reporting(&journal, make(), dead)) {
            Ok(core) => {
                self.core = Some(core);
                true
            }
            Err(worker::Error::Journal(e)) if e.is_disk_full() => {
                self.wait_for_disk(ctx, &e);
                false
            }
            Err(e) => {
                self.fail(ctx, e.to_string());
                false
            }
        }
    }

    /// Drops the core and reopens it after [`DISK_FULL_RETRY`], counting no restart.
    fn wait_for_disk(&mut self, ctx: &mut Context<Self>, e: &clicktrail_storage::Error) {
        self.core = None;
        let reason = format!("waiting for disk space: {e}");
        self.ctx
            .health
            .set(&self.ctx.name, ActorState::Restarting, Some(reason));
        ctx.run_later(DISK_FULL_RETRY, |this, ctx| {
            if this.open(ctx) {
                this.ctx.running();
                ctx.notify(Tick);
            }
        });
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.open(ctx) {
            self.ctx.running();
            ctx.notify(Tick);
        }
    }
}

impl Handler<Tick> for Worker {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        match guarded(|| core.step(worker::BATCH_MAX)) {
            Ok(0) => {
                let wait = core.wait_any();
                ctx.spawn(
                    async move {
                        // The timeout only bounds a missed wake-up; wake-ups are not polled.
                        let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
                    }
                    .into_actor(self)
                    .map(|_, _, ctx| {
                        ctx.run_later(TAIL_COALESCE, |_, ctx| ctx.notify(Tick));
                    }),
                );
            }
            Ok(_) => ctx.notify(Tick),
            // The input is recorded as a dead letter; the state the panic may have left
            // half-updated is rebuilt from the journal, and the worker goes on after it.
            // Not a restart: one poison record must not count towards giving up.
            // A full disk is not the actor's fault, and restarting would only give up on it
            // while the disk is full (readiness fails meanwhile, naming the partition):
            // wait, then reopen from the journal (an input cut short is completed) and go
            // on, without counting a restart.
            Err(worker::Error::Journal(e)) if e.is_disk_full() => self.wait_for_disk(ctx, &e),
            Err(e @ (worker::Error::Poisoned { .. } | worker::Error::Panicked { .. })) => {
                let reason = e.to_string();
                if matches!(e, worker::Error::Panicked { .. }) {
                    log::warn!("{reason}; rebuilding its state and trying the input again");
                }
                if self.open(ctx) {
                    self.ctx
                        .health
                        .set(&self.ctx.name, ActorState::Running, Some(reason));
                    ctx.notify(Tick);
                }
            }
            Err(e) => self.fail(ctx, e.to_string()),
        }
    }
}

impl Handler<Stop> for Worker {
    type Result = MessageResult<Stop>;

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) -> Self::Result {
        // Messages are handled one at a time, so no batch is half done here.
        let positions = self
            .core
            .as_ref()
            .map(|c| c.positions())
            .unwrap_or_default();
        self.core = None;
        ctx.stop();
        MessageResult(positions)
    }
}
