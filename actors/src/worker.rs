//! The shape every journal-tailing actor shares: pure [`Processor`] logic inside a thin
//! actix shell ([`Worker`]) that tails the inputs, writes the outputs and resumes exactly
//! where it left off.
//!
//! Exactly-once, without a separate checkpoint store: every output record carries the
//! [`Source`] it came from (input partition, input offset, part index, part count). On
//! start, [`WorkerCore::open`] reads the worker's own output partition, hands every record
//! to [`Processor::restore`] (state is derived), and learns per input the last input it
//! finished. Reading resumes right after it, or, when a crash cut an input's outputs short
//! (`part + 1 < parts`), re-runs that input and writes only the missing parts.
//!
//! The contract for a processor: `process` is deterministic for a given state and input
//! (re-running an input must give the same outputs), and an input that produces no output
//! may be processed again after a restart, so such inputs may only change in-memory state.
//!
//! Poison inputs: a panic in `process` does not stop the actor for good. The first panic on
//! an input answers [`Error::Panicked`]: the shell rebuilds the processor from its output
//! (the panic may have left its state half-updated) and the input is tried again. If it
//! panics again it becomes a dead letter ([`crate::dead_letter`]): recorded in the output
//! partition with the input as its source, [`Error::Poisoned`] makes the shell rebuild once
//! more, and the worker goes on with the next input. Retried dead letters write their outputs with the old
//! input as source; resuming therefore goes after the *highest* input offset seen per
//! partition, not the last one written.

use crate::dead_letter::{panic_message, DeadLetters};
use clicktrail_storage::schema::{DeadLetter, DeadLetterState};
use clicktrail_storage::{
    Consumer, DataWait, Event, Journal, Partition, Reader, Record, Source, Writer,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Most input records one [`WorkerCore::step`] handles before yielding to the mailbox.
pub const BATCH_MAX: usize = 1024;
/// Most outputs one input may produce (the part index is a u16).
pub const OUTPUTS_PER_INPUT_MAX: usize = u16::MAX as usize;

/// Errors of a worker; any of them makes the supervisor restart it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal failed (I/O, limits, corruption).
    #[error(transparent)]
    Journal(#[from] clicktrail_storage::Error),
    /// The processor refused to go on (its `process` returned an error).
    #[error("{processor}: {why}")]
    Process { processor: String, why: String },
    /// The processor panicked on an input for the first time; its state must be rebuilt
    /// from the journal, and the input is tried once more (a second panic on it makes it
    /// a dead letter).
    #[error("{processor}: panicked on input {partition}@{offset}: {why}")]
    Panicked {
        processor: String,
        partition: String,
        offset: u64,
        why: String,
    },
    /// The processor panicked on an input, which is now a dead letter; its state must be
    /// rebuilt from the journal before it goes on.
    #[error("{processor}: input {partition}@{offset} is a dead letter: {why}")]
    Poisoned {
        processor: String,
        partition: String,
        offset: u64,
        why: String,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One record a processor wants written.
#[derive(Debug)]
pub struct Output {
    pub kind: u16,
    pub version: u16,
    pub payload: rkyv::util::AlignedVec,
}

impl Output {
    /// Archives an event for writing.
    pub fn event<E: Event>(event: &E) -> Output {
        Output {
            kind: E::KIND as u16,
            version: E::VERSION,
            payload: rkyv::to_bytes::<rkyv::rancor::Error>(event)
                .expect("archiving an in-memory event into a Vec cannot fail"),
        }
    }
}

/// A concern's pure logic: no actix, no I/O, testable on its own.
pub trait Processor: Send + 'static {
    /// The concern's name; also its consumer name on every input.
    fn name(&self) -> &str;
    /// Partitions it reads.
    fn inputs(&self) -> Vec<String>;
    /// The partition it alone writes.
    fn output(&self) -> String;
    /// Whether retention must keep all of its output (its state is rebuilt from all of it).
    fn keeps_output(&self) -> bool {
        false
    }
    /// Rebuilds state from one of its own earlier outputs (called in order at start).
    fn restore(&mut self, _record: &Record<'_>) {}
    /// Whether a restart resumes after the inputs its outputs name (the default). A
    /// processor that writes nothing (its state is in memory only) answers false: it reads
    /// every input from the start again on each start, skipping only its open dead letters.
    fn resumes_from_output(&self) -> bool {
        true
    }
    /// Handles one input; pushes the records to write for it (possibly none). An error
    /// stops the actor (the supervisor restarts it, then gives up); a panic makes the input
    /// a dead letter and the actor goes on without it (see the module docs).
    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String>;
    /// Called about once a second with the wall clock: pushes records that time alone
    /// causes (a hold period ending). They carry no source; `restore` must apply them
    /// like any other output, so a tick after a restart does not repeat them.
    fn tick(&mut self, _now_us: i64, _out: &mut Vec<Output>) {}
    /// Like [`Processor::tick`], but only when a step found every input read to its end
    /// (caught up), at most about once a second: for work that must see all of history
    /// first (fitting a model). Its outputs carry no source either.
    fn idle(&mut self, _now_us: i64, _out: &mut Vec<Output>) {}
    /// Told after each step how many bytes of input are not read yet (a lag gauge).
    fn lag(&mut self, _bytes: u64) {}
}

/// How often [`Processor::tick`] runs at most.
pub const TICK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

struct Input {
    partition: Partition,
    reader: Reader,
    consumer: Consumer,
    /// Outputs of the input at the reader's position already written before a crash.
    skip_parts: usize,
}

/// Most input positions waiting for their outputs to become durable before they are
/// committed; when full, the newest entry absorbs later positions (committing later is
/// always safe).
const PENDING_COMMITS_MAX: usize = 64;

/// The actor-free engine of a worker: inputs, output writer, processor.
pub struct WorkerCore {
    processor: Box<dyn Processor>,
    inputs: Vec<Input>,
    writer: Writer,
    /// Reused output buffer.
    outputs: Vec<Output>,
    /// (output end, input positions): a consumer position may only be committed (letting
    /// retention remove the input) once every output derived before it is durable.
    pending_commits: std::collections::VecDeque<(u64, Vec<u64>)>,
    /// When the processor's tick last ran.
    last_tick: Option<std::time::Instant>,
    /// When the processor's idle work last ran.
    last_idle: Option<std::time::Instant>,
    /// Where this actor's dead letters are shown and its retries requested.
    dead: DeadLetters,
    /// (input partition id, offset) of its open dead letters, skipped when met again: only
    /// filled for a processor that reads its inputs from the start on every start.
    skip: std::collections::HashSet<(u32, u64)>,
}

impl std::fmt::Debug for WorkerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCore")
            .field("processor", &self.processor.name())
            .field("positions", &self.positions())
            .finish()
    }
}

impl WorkerCore {
    /// Restores the processor from its output and positions its readers after the last
    /// input it finished.
    pub fn open(journal: &Journal, processor: Box<dyn Processor>) -> Result<WorkerCore> {
        Self::open_reporting(journal, processor, DeadLetters::default())
    }

    /// [`WorkerCore::open`], showing the actor's dead letters in `dead`.
    pub fn open_reporting(
        journal: &Journal,
        mut processor: Box<dyn Processor>,
        dead: DeadLetters,
    ) -> Result<WorkerCore> {
        let output = journal.partition(&processor.output())?;
        if processor.keeps_output() {
            output.keep_forever();
        }
        dead.reset(processor.name());
        // Highest source seen per input partition id (a retried dead letter's outputs name
        // an older input, which must not move the resume point back).
        let mut last: HashMap<u32, Source> = HashMap::new();
        let resumes = processor.resumes_from_output();
        let mut skip = std::collections::HashSet::new();
        {
            let mut r = output.reader()?;
            while let Some(rec) = r.next()? {
                match (dead.apply_record(&rec), rec.source) {
                    (Err(()), _) => processor.restore(&rec),
                    (Ok(Some(DeadLetterState::Open)), Some(s)) => {
                        skip.insert((s.partition, s.offset));
                    }
                    (Ok(Some(DeadLetterState::Resolved)), Some(s)) => {
                        skip.remove(&(s.partition, s.offset));
                    }
                    _ => {}
                }
                match rec.source {
                    Some(s) if resumes => {
                        let e = last.entry(s.partition).or_insert(s);
                        if s.offset >= e.offset {
                            *e = s;
                        }
                    }
                    _ => {}
                }
            }
        }
        if resumes {
            skip.clear(); // resuming after them skips them already
        }
        let writer = output.writer()?;
        let mut inputs = Vec::new();
        for name in processor.inputs() {
            let partition = journal.partition(&name)?;
            let consumer = partition.consumer(processor.name());
            let (reader, skip_parts) = match last.get(&partition.id()) {
                None => (partition.reader()?, 0),
                Some(s) if s.offset >= partition.end() => {
                    // Cannot happen while inputs are read durable-only (an output is never
                    // derived from a record a power loss could take); if it does, say so
                    // and go on from what there is rather than fail forever.
                    log::error!(
                        "{}: its output names {}@{}, past that partition's end {}; resuming at the end",
                        processor.name(),
                        name,
                        s.offset,
                        partition.end()
                    );
                    (partition.reader_at(partition.end())?, 0)
                }
                Some(s) if s.part + 1 < s.parts && s.offset >= partition.start() => {
                    // Cut short by a crash: re-run this input, write the missing parts. (A
                    // reader placed inside a damaged range moves past it: then the record
                    // there is another one, and all of its parts are owed.)
                    let r = partition.reader_at(s.offset)?;
                    let skip = if r.position() == s.offset {
                        s.part as usize + 1
                    } else {
                        0
                    };
                    (r, skip)
                }
                Some(s) if s.offset < partition.start() => {
                    // Retention removed the input's segment, which it does only once every
                    // consumer committed past it: all there was fully processed, and any
                    // input after it produced no output, so it may be processed again.
                    (partition.reader()?, 0)
                }
                Some(s) => {
                    let mut r = partition.reader_at(s.offset)?;
                    // Inside a damaged range the reader starts at the first intact record
                    // after it, which is not done yet: only the named input is skipped.
                    if r.position() == s.offset {
                        r.next()?.ok_or_else(|| Error::Process {
                            processor: processor.name().to_string(),
                            why: format!(
                                "its output names input {}@{} which is gone",
                                name, s.offset
                            ),
                        })?;
                    }
                    (r, 0)
                }
            };
            inputs.push(Input {
                partition,
                reader: reader.durable_only(),
                consumer,
                skip_parts,
            });
        }
        Ok(WorkerCore {
            processor,
            inputs,
            writer,
            outputs: Vec::new(),
            pending_commits: std::collections::VecDeque::new(),
            last_tick: None,
            last_idle: None,
            dead,
            skip,
        })
    }

    pub fn name(&self) -> &str {
        self.processor.name()
    }

    /// (input partition name, next offset to read) for each input.
    pub fn positions(&self) -> Vec<(String, u64)> {
        self.inputs
            .iter()
            .map(|i| (i.partition.name().to_string(), i.reader.position()))
            .collect()
    }

    /// Processes up to `max` available input records across the inputs (round robin);
    /// returns how many it handled. Never blocks.
    pub fn step(&mut self, max: usize) -> Result<usize> {
        let mut done = self.retry_dead_letters()?;
        let per_input = (max / self.inputs.len().max(1)).max(1);
        for input in &mut self.inputs {
            let mut n = 0;
            while n < per_input {
                let Some(rec) = input.reader.next()? else {
                    break;
                };
                n += 1;
                if !self.skip.is_empty() && self.skip.contains(&(input.partition.id(), rec.offset))
                {
                    continue; // an open dead letter of a processor that reads from the start
                }
                let why = match process_caught(&mut *self.processor, &rec, &mut self.outputs) {
                    Ok(Ok(())) => None,
                    Ok(Err(why)) => {
                        return Err(Error::Process {
                            processor: self.processor.name().to_string(),
                            why,
                        })
                    }
                    Err(panic) => Some(panic_message(&*panic)),
                };
                if let Some(why) = why {
                    let name = self.processor.name();
                    if !self.dead.suspect(name, input.partition.name(), rec.offset) {
                        return Err(Error::Panicked {
                            processor: name.to_string(),
                            partition: input.partition.name().to_string(),
                            offset: rec.offset,
                            why,
                        });
                    }
                    let source = Source {
                        partition: input.partition.id(),
                        offset: rec.offset,
                        // A cut-short input that fails now completes with its dead letter.
                        part: input.skip_parts as u16,
                        parts: input.skip_parts as u16 + 1,
                    };
                    let letter = dead_letter(&*self.processor, &input.partition, &rec, 0, why);
                    return Err(poisoned(&mut self.writer, &self.dead, &source, letter));
                }
                let parts = self.outputs.len();
                assert!(
                    parts <= OUTPUTS_PER_INPUT_MAX,
                    "too many outputs for one input"
                );
                for (i, out) in self.outputs.iter().enumerate().skip(input.skip_parts) {
                    let source = Source {
                        partition: input.partition.id(),
                        offset: rec.offset,
                        part: i as u16,
                        parts: parts as u16,
                    };
                    self.writer
                        .write(out.kind, out.version, Some(&source), &out.payload)?;
                }
                input.skip_parts = 0;
            }
            done += n;
        }
        let lag = self
            .inputs
            .iter()
            .map(|i| i.partition.end().saturating_sub(i.reader.position()))
            .sum();
        self.processor.lag(lag);
        if self.last_tick.is_none_or(|t| t.elapsed() >= TICK_INTERVAL) {
            self.last_tick = Some(std::time::Instant::now());
            self.tick_now(crate::catalog::now_us())?;
        }
        if done == 0 && self.last_idle.is_none_or(|t| t.elapsed() >= TICK_INTERVAL) {
            self.last_idle = Some(std::time::Instant::now());
            self.outputs.clear();
            self.processor
                .idle(crate::catalog::now_us(), &mut self.outputs);
            for out in &self.outputs {
                self.writer
                    .write(out.kind, out.version, None, &out.payload)?;
            }
        }
        self.writer.publish();
        self.queue_commit();
        self.commit_durable();
        Ok(done)
    }

    /// Processes again the inputs of the dead letters whose retry was requested. Answers
    /// how many it handled.
    fn retry_dead_letters(&mut self) -> Result<usize> {
        let name = self.processor.name().to_string();
        let retries = self.dead.take_retries(&name);
        let mut done = 0;
        for (partition, offset) in retries {
            let Some(input) = self.inputs.iter().find(|i| i.partition.name() == partition) else {
                continue;
            };
            if !self.dead.is_open(&name, &partition, offset) {
                continue;
            }
            if offset < input.partition.start() {
                log::warn!("{name}: dead letter {partition}@{offset}: retention removed its input");
                continue;
            }
            let mut reader = input.partition.reader_at(offset)?;
            let rec = match reader.next()? {
                Some(rec) if rec.offset == offset => rec,
                _ => {
                    log::warn!("{name}: dead letter {partition}@{offset}: its input is lost to journal damage");
                    continue;
                }
            };
            let outcome = process_caught(&mut *self.processor, &rec, &mut self.outputs);
            let attempt = self.dead.attempts(&name, &partition, offset);
            let pid = input.partition.id();
            match outcome {
                Ok(Ok(())) => {
                    let parts = self.outputs.len() + 1;
                    assert!(
                        parts <= OUTPUTS_PER_INPUT_MAX,
                        "too many outputs for one input"
                    );
                    let source = |part: usize| Source {
                        partition: pid,
                        offset,
                        part: part as u16,
                        parts: parts as u16,
                    };
                    for (i, out) in self.outputs.iter().enumerate() {
                        self.writer
                            .write(out.kind, out.version, Some(&source(i)), &out.payload)?;
                    }
                    let why = format!("retried: {} outputs written", parts - 1);
                    let mut letter =
                        dead_letter(&*self.processor, &input.partition, &rec, attempt, why);
                    letter.state = DeadLetterState::Resolved;
                    let out = Output::event(&letter);
                    self.writer.write(
                        out.kind,
                        out.version,
                        Some(&source(parts - 1)),
                        &out.payload,
                    )?;
                    self.dead.apply(&letter);
                    self.skip.remove(&(pid, offset));
                    log::info!("{name}: dead letter {partition}@{offset} retried and resolved");
                    done += 1;
                }
                Ok(Err(why)) => {
                    return Err(Error::Process {
                        processor: name,
                        why,
                    })
                }
                Err(panic) => {
                    let source = Source {
                        partition: pid,
                        offset,
                        part: 0,
                        parts: 1,
                    };
                    let why = panic_message(&*panic);
                    let letter =
                        dead_letter(&*self.processor, &input.partition, &rec, attempt, why);
                    return Err(poisoned(&mut self.writer, &self.dead, &source, letter));
                }
            }
        }
        Ok(done)
    }

    /// Runs the processor's tick at `now_us` and writes what it produced (no source).
    pub fn tick_now(&mut self, now_us: i64) -> Result<()> {
        self.outputs.clear();
        self.processor.tick(now_us, &mut self.outputs);
        for out in &self.outputs {
            self.writer
                .write(out.kind, out.version, None, &out.payload)?;
        }
        Ok(())
    }

    fn queue_commit(&mut self) {
        let positions: Vec<u64> = self.inputs.iter().map(|i| i.reader.position()).collect();
        let end = self.writer.end();
        if self.pending_commits.len() >= PENDING_COMMITS_MAX {
            *self.pending_commits.back_mut().expect("full") = (end, positions);
        } else if self.pending_commits.back().map(|b| &b.1) != Some(&positions) {
            self.pending_commits.push_back((end, positions));
        }
    }

    /// Commits the input positions whose outputs are durable.
    fn commit_durable(&mut self) {
        let durable = self.writer.partition().durable();
        while let Some((end, positions)) = self.pending_commits.front() {
            if *end > durable {
                break;
            }
            for (input, pos) in self.inputs.iter().zip(positions) {
                input.consumer.commit(*pos);
            }
            self.pending_commits.pop_front();
        }
    }

    /// Resolves when any input has a record to read.
    pub fn wait_any(&self) -> WaitAny {
        WaitAny(self.inputs.iter().map(|i| i.reader.wait_async()).collect())
    }
}

/// Runs `process` on `rec` into a cleared `outputs`, catching a panic (the caller decides
/// whether it makes a dead letter).
fn process_caught(
    processor: &mut dyn Processor,
    rec: &Record<'_>,
    outputs: &mut Vec<Output>,
) -> std::thread::Result<Result<(), String>> {
    outputs.clear();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process(rec, outputs)
    }))
}

/// The dead letter of `rec`, failed at attempt `attempt` (0-based) because of `why`.
fn dead_letter(
    processor: &dyn Processor,
    partition: &Partition,
    rec: &Record<'_>,
    attempt: u32,
    why: String,
) -> DeadLetter {
    DeadLetter {
        at_us: crate::catalog::now_us(),
        processor: processor.name().to_string(),
        input_partition: partition.name().to_string(),
        input_offset: rec.offset,
        input_kind: rec.kind,
        input_version: rec.version,
        attempt,
        state: DeadLetterState::Open,
        reason: why,
    }
}

/// Writes and publishes an open dead letter, shows it, and answers the error that makes
/// the shell rebuild the processor.
fn poisoned(writer: &mut Writer, dead: &DeadLetters, source: &Source, letter: DeadLetter) -> Error {
    let out = Output::event(&letter);
    if let Err(e) = writer.write(out.kind, out.version, Some(source), &out.payload) {
        // Not recorded: the restart replays the input, which fails again, until the
        // journal can write (a full disk fails readiness meanwhile).
        return Error::Journal(e);
    }
    writer.publish();
    log::error!(
        "{}: input {}@{} ({}) is a dead letter (attempt {}): {}; skipped, the actor goes on \
         (GET /api/v1/dead-letters lists it, POST /api/v1/dead-letters/retry retries it)",
        letter.processor,
        letter.input_partition,
        letter.input_offset,
        clicktrail_storage::Kind::from_u16(letter.input_kind).map_or("?", |k| k.name()),
        letter.attempt + 1,
        letter.reason
    );
    dead.apply(&letter);
    Error::Poisoned {
        processor: letter.processor,
        partition: letter.input_partition,
        offset: letter.input_offset,
        why: letter.reason,
    }
}

/// Resolves when any of its waits does. `'static`, so the actor can spawn it.
#[derive(Debug)]
pub struct WaitAny(Vec<DataWait>);

impl Future for WaitAny {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.0.is_empty() {
            return Poll::Pending; // nothing to read ever: sleep until stopped
        }
        for w in &mut this.0 {
            if Pin::new(w).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clicktrail_storage::JournalConfig;

    /// Writes `n` outputs (kind 0x7001) per input, each payload = input payload + part index.
    struct Fanout(usize);
    impl Processor for Fanout {
        fn name(&self) -> &str {
            "fanout"
        }
        fn inputs(&self) -> Vec<String> {
            vec!["in".into()]
        }
        fn output(&self) -> String {
            "out".into()
        }
        fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
            for i in 0..self.0 {
                let mut payload = rkyv::util::AlignedVec::new();
                payload.extend_from_slice(input.payload);
                payload.push(i as u8);
                out.push(Output {
                    kind: 0x7001,
                    version: 1,
                    payload,
                });
            }
            Ok(())
        }
    }

    /// Echoes each input; panics on input `[0xff]` until `fixed` is set (a bug one record
    /// triggers, fixed by an upgrade).
    struct Picky(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Processor for Picky {
        fn name(&self) -> &str {
            "picky"
        }
        fn inputs(&self) -> Vec<String> {
            vec!["in".into()]
        }
        fn output(&self) -> String {
            "out".into()
        }
        fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
            if input.payload == [0xff] && !self.0.load(std::sync::atomic::Ordering::SeqCst) {
                panic!("cannot handle 0xff");
            }
            let mut payload = rkyv::util::AlignedVec::new();
            payload.extend_from_slice(input.payload);
            out.push(Output {
                kind: 0x7001,
                version: 1,
                payload,
            });
            Ok(())
        }
    }

    /// Steps until nothing is left, reopening after a poison input as the shell does.
    fn drain(
        j: &Journal,
        core: &mut Option<WorkerCore>,
        make: &dyn Fn() -> Box<dyn Processor>,
        dead: &DeadLetters,
    ) {
        loop {
            match core.as_mut().unwrap().step(BATCH_MAX) {
                Ok(0) => return,
                Ok(_) => {}
                Err(Error::Poisoned { .. } | Error::Panicked { .. }) => {
                    *core = None; // the writer goes before a new instance takes it
                    *core = Some(WorkerCore::open_reporting(j, make(), dead.clone()).unwrap());
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_panicking_input_is_a_dead_letter_skipped_once_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), JournalConfig::default()).unwrap();
        let input = j.partition("in").unwrap();
        let mut w = input.writer().unwrap();
        let offs: Vec<u64> = [1u8, 0xff, 2, 3]
            .iter()
            .map(|b| w.append(0x7000, 1, None, &[*b]).unwrap().offset)
            .collect();
        w.publish();
        drop(w);
        j.sync().unwrap();
        let fixed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fixed.clone();
        let make = move || Box::new(Picky(f.clone())) as Box<dyn Processor>;
        let dead = DeadLetters::default();
        let mut core = Some(WorkerCore::open_reporting(&j, make(), dead.clone()).unwrap());
        drain(&j, &mut core, &make, &dead);
        let echoed = |j: &Journal| -> Vec<(u8, u64)> {
            let mut r = j.partition("out").unwrap().reader().unwrap();
            let mut v = Vec::new();
            while let Some(rec) = r.next().unwrap() {
                if rec.kind == 0x7001 {
                    v.push((rec.payload[0], rec.source.unwrap().offset));
                }
            }
            v
        };
        assert_eq!(echoed(&j), vec![(1, offs[0]), (2, offs[2]), (3, offs[3])]);
        let open = dead.list();
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].input_offset, open[0].attempts), (offs[1], 1));
        assert!(open[0].reason.contains("cannot handle 0xff"));
        // A restart neither processes it again nor repeats later inputs.
        drop(core);
        let mut core = Some(WorkerCore::open_reporting(&j, make(), dead.clone()).unwrap());
        drain(&j, &mut core, &make, &dead);
        assert_eq!(echoed(&j).len(), 3);
        assert_eq!(dead.totals()["picky"], (1, 0));
        // Fixed, retried: its output is written with the old input as source, then resolved.
        fixed.store(true, std::sync::atomic::Ordering::SeqCst);
        dead.request_retry("picky", "in", offs[1]).unwrap();
        drain(&j, &mut core, &make, &dead);
        assert_eq!(echoed(&j)[3], (0xff, offs[1]));
        assert!(dead.list().is_empty());
        assert_eq!(dead.totals()["picky"], (1, 1));
        // The retried output names an older input; a restart still resumes after input 3.
        drop(core);
        let mut w = input.writer().unwrap();
        let last = w.append(0x7000, 1, None, &[4]).unwrap().offset;
        w.publish();
        drop(w);
        j.sync().unwrap();
        let mut core = Some(WorkerCore::open_reporting(&j, make(), dead.clone()).unwrap());
        drain(&j, &mut core, &make, &dead);
        assert_eq!(echoed(&j).len(), 5);
        assert_eq!(echoed(&j)[4], (4, last));
        assert!(dead.list().is_empty());
    }

    /// Sums its inputs in memory and writes nothing (like the live counters); panics on
    /// input `[0xff]`.
    struct Summer(std::sync::Arc<std::sync::Mutex<u64>>);
    impl Processor for Summer {
        fn name(&self) -> &str {
            "summer"
        }
        fn inputs(&self) -> Vec<String> {
            vec!["in".into()]
        }
        fn output(&self) -> String {
            "summer-out".into()
        }
        fn resumes_from_output(&self) -> bool {
            false
        }
        fn process(&mut self, input: &Record<'_>, _out: &mut Vec<Output>) -> Result<(), String> {
            assert!(input.payload != [0xff], "cannot sum 0xff");
            *self.0.lock().unwrap() += input.payload[0] as u64;
            Ok(())
        }
    }

    /// An actor that keeps its state in memory reads every input from the start on each
    /// start: its dead letter must not move where it starts, only skip that one input.
    #[test]
    fn a_dead_letter_of_an_in_memory_actor_skips_only_its_input() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), JournalConfig::default()).unwrap();
        let mut w = j.partition("in").unwrap().writer().unwrap();
        for b in [1u8, 2, 0xff, 4] {
            w.append(0x7000, 1, None, &[b]).unwrap();
        }
        w.publish();
        drop(w);
        j.sync().unwrap();
        let sum = std::sync::Arc::new(std::sync::Mutex::new(0u64));
        let s = sum.clone();
        let make = move || {
            *s.lock().unwrap() = 0; // a new instance starts from nothing, as the real ones do
            Box::new(Summer(s.clone())) as Box<dyn Processor>
        };
        let dead = DeadLetters::default();
        let mut core = Some(WorkerCore::open_reporting(&j, make(), dead.clone()).unwrap());
        drain(&j, &mut core, &make, &dead);
        assert_eq!(*sum.lock().unwrap(), 7, "1 + 2 + 4, after the rebuilds");
        assert_eq!(dead.list().len(), 1);
        // A restart reads from the start again and skips only the dead letter.
        core = None;
        let mut core2 = Some(WorkerCore::open_reporting(&j, make(), dead.clone()).unwrap());
        drain(&j, &mut core2, &make, &dead);
        assert_eq!(*sum.lock().unwrap(), 7);
        assert_eq!(dead.totals()["summer"], (1, 0));
        drop(core);
    }

    fn outputs(j: &Journal) -> Vec<(Vec<u8>, Source)> {
        let mut r = j.partition("out").unwrap().reader().unwrap();
        let mut v = Vec::new();
        while let Some(rec) = r.next().unwrap() {
            v.push((rec.payload.to_vec(), rec.source.unwrap()));
        }
        v
    }

    #[test]
    fn resumes_after_last_input_and_completes_a_cut_short_input() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), JournalConfig::default()).unwrap();
        let input = j.partition("in").unwrap();
        let mut w = input.writer().unwrap();
        let offs: Vec<u64> = (0..10u8)
            .map(|i| w.append(0x7000, 1, None, &[i]).unwrap().offset)
            .collect();
        j.sync().unwrap(); // workers read only durable input
        {
            let mut core = WorkerCore::open(&j, Box::new(Fanout(3))).unwrap();
            assert_eq!(core.step(4).unwrap(), 4);
        }
        assert_eq!(outputs(&j).len(), 12);
        // Simulate a crash after writing only part 0 of input 4's three outputs.
        {
            let out = j.partition("out").unwrap();
            let mut ow = out.writer().unwrap();
            let src = Source {
                partition: input.id(),
                offset: offs[4],
                part: 0,
                parts: 3,
            };
            ow.append(0x7001, 1, Some(&src), &[4, 0]).unwrap();
        }
        let mut core = WorkerCore::open(&j, Box::new(Fanout(3))).unwrap();
        assert_eq!(
            core.positions()[0].1,
            offs[4],
            "re-runs the cut-short input"
        );
        while core.step(3).unwrap() > 0 {}
        let got = outputs(&j);
        let expect: Vec<Vec<u8>> = (0..10u8)
            .flat_map(|i| (0..3u8).map(move |p| vec![i, p]))
            .collect();
        assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), expect);
        for (k, (_, s)) in got.iter().enumerate() {
            assert_eq!(
                (s.offset, s.part, s.parts),
                (offs[k / 3], (k % 3) as u16, 3)
            );
        }
        drop(core);
        // A restart with nothing new does nothing.
        let mut core = WorkerCore::open(&j, Box::new(Fanout(3))).unwrap();
        assert_eq!(core.step(100).unwrap(), 0);
        assert_eq!(outputs(&j).len(), 30);
        drop((core, w));
        j.close().unwrap();
    }

    #[test]
    fn resumes_when_retention_removed_the_last_sourced_input() {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig {
            segment_size: 64 * 1024,
            record_size_max: 4096,
            ..Default::default()
        };
        let j = Journal::open(dir.path(), config).unwrap();
        let input = j.partition("in").unwrap();
        let mut w = input.writer().unwrap();
        // Only input 0 produces output; the rest only pass through.
        struct FirstOnly;
        impl Processor for FirstOnly {
            fn name(&self) -> &str {
                "first-only"
            }
            fn inputs(&self) -> Vec<String> {
                vec!["in".into()]
            }
            fn output(&self) -> String {
                "out".into()
            }
            fn process(&mut self, i: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
                if i.payload[0] == 0 {
                    Fanout(1).process(i, out)?;
                }
                Ok(())
            }
        }
        for n in 0..2000u32 {
            let mut p = vec![1u8; 100];
            p[0] = (n != 0) as u8;
            w.append(0x7000, 1, None, &p).unwrap();
        }
        j.sync().unwrap(); // workers read only durable input
        let mut core = WorkerCore::open(&j, Box::new(FirstOnly)).unwrap();
        while core.step(500).unwrap() > 0 {}
        assert_eq!(
            input.retain().unwrap(),
            0,
            "nothing committed before the output is durable"
        );
        j.sync().unwrap();
        core.step(500).unwrap(); // commits now that the output is durable
        drop(core);
        assert!(
            input.retain().unwrap() >= 1,
            "the input's first segment is gone"
        );
        let mut core = WorkerCore::open(&j, Box::new(FirstOnly)).unwrap();
        while core.step(500).unwrap() > 0 {}
        assert_eq!(outputs(&j).len(), 1, "nothing repeated, nothing failed");
        drop((core, w));
        j.close().unwrap();
    }
}
