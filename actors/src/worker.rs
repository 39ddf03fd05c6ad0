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
    /// The processor refused an input it cannot handle.
    #[error("{processor}: {why}")]
    Process { processor: String, why: String },
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
    /// Handles one input; pushes the records to write for it (possibly none).
    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String>;
    /// Called about once a second with the wall clock: pushes records that time alone
    /// causes (a hold period ending). They carry no source; `restore` must apply them
    /// like any other output, so a tick after a restart does not repeat them.
    fn tick(&mut self, _now_us: i64, _out: &mut Vec<Output>) {}
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
    pub fn open(journal: &Journal, mut processor: Box<dyn Processor>) -> Result<WorkerCore> {
        let output = journal.partition(&processor.output())?;
        if processor.keeps_output() {
            output.keep_forever();
        }
        // Last source seen per input partition id.
        let mut last: HashMap<u32, Source> = HashMap::new();
        {
            let mut r = output.reader()?;
            while let Some(rec) = r.next()? {
                processor.restore(&rec);
                if let Some(s) = rec.source {
                    last.insert(s.partition, s);
                }
            }
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
                Some(s) if s.part + 1 < s.parts => {
                    // Cut short by a crash: re-run this input, write the missing parts.
                    (partition.reader_at(s.offset)?, s.part as usize + 1)
                }
                Some(s) if s.offset < partition.start() => {
                    // Retention removed the input's segment, which it does only once every
                    // consumer committed past it: all there was fully processed, and any
                    // input after it produced no output, so it may be processed again.
                    (partition.reader()?, 0)
                }
                Some(s) => {
                    let mut r = partition.reader_at(s.offset)?;
                    r.next()?.ok_or_else(|| Error::Process {
                        processor: processor.name().to_string(),
                        why: format!("its output names input {}@{} which is gone", name, s.offset),
                    })?;
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
        let mut done = 0;
        let per_input = (max / self.inputs.len().max(1)).max(1);
        for input in &mut self.inputs {
            let mut n = 0;
            while n < per_input {
                let Some(rec) = input.reader.next()? else {
                    break;
                };
                self.outputs.clear();
                self.processor
                    .process(&rec, &mut self.outputs)
                    .map_err(|why| Error::Process {
                        processor: self.processor.name().to_string(),
                        why,
                    })?;
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
                n += 1;
            }
            done += n;
        }
        if self.last_tick.is_none_or(|t| t.elapsed() >= TICK_INTERVAL) {
            self.last_tick = Some(std::time::Instant::now());
            self.tick_now(crate::catalog::now_us())?;
        }
        self.writer.publish();
        self.queue_commit();
        self.commit_durable();
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
